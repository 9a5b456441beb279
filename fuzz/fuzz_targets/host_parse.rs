//! `[user@]host[:port]` strings: never panics; what is accepted carries no shell or ssh
//! option syntax, and prints back to a string that parses to the same thing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipit::config::host;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = host::parse(text) else {
        return;
    };
    assert!(host::valid_host(&spec.host), "{spec:?}");
    assert!(
        spec.user.as_deref().is_none_or(host::valid_user),
        "{spec:?}"
    );
    assert_ne!(spec.port, Some(0));
    let shown = spec.to_string();
    assert_eq!(
        host::parse(&shown).as_ref(),
        Ok(&spec),
        "{text:?} shows as {shown:?}"
    );
});
