//! `${VAR}` interpolation: never panics or hangs; text without `$` comes back unchanged;
//! a value is marked secret whenever a variable's value went into it.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use shipit::config::interpolate::{Error, interpolate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The input is `template` or `template\0NAME=value\0NAME=value...`.
    let mut parts = text.split('\0');
    let template = parts.next().unwrap_or_default();
    let env: BTreeMap<String, String> = parts
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    match interpolate(template, &env) {
        Ok(i) => {
            if !template.contains('$') {
                assert_eq!(i.value, template);
                assert!(!i.secret);
            }
            // Every non-empty value that was substituted makes the result secret (with no
            // `$$` escapes or `:-` defaults, `${K}` in the template is a substitution).
            let plain = !template.contains("$$") && !template.contains(":-");
            for (k, v) in &env {
                if plain && !v.is_empty() && template.contains(&format!("${{{k}}}")) {
                    assert!(i.secret, "{template:?} uses {k}");
                }
            }
        }
        Err(Error::Unset(name)) => assert!(!env.contains_key(&name)),
        Err(_) => {}
    }
});
