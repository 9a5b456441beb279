//! deploy.yaml text -> `config::load_str`: never panics, never hangs, and whatever it
//! accepts holds the loader's promises (paths that reach a server are absolute or relative
//! without `..`, no NUL, names free of shell syntax).
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use shipit::config;
use shipit::ssh::quote::sh_quote;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env: BTreeMap<String, String> = [
        ("DB_PASSWORD", "s3cr$t'\"`;\n"),
        ("EMPTY", ""),
        ("PORT", "8080"),
        ("HOST", "app1.example.com"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    // A directory that does not exist: `service.unit_file` checks find nothing.
    let file = Path::new("/nonexistent-shipit-fuzz/deploy.yaml");
    for chosen in [None, Some("production")] {
        let Ok(c) = config::load_str(text, file, chosen, &env) else {
            continue;
        };
        let deploy_to = c.deploy_to.expose();
        assert!(
            deploy_to.starts_with('/') && deploy_to != "/",
            "{deploy_to:?}"
        );
        assert!(sh_quote(deploy_to).is_ok());
        for p in c.shared.dirs.iter().chain(&c.shared.files) {
            let p = p.expose();
            assert!(
                !p.is_empty() && !p.starts_with('/') && !p.contains('\0'),
                "{p:?}"
            );
            assert!(
                !Path::new(p)
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            );
        }
        for (k, v) in &c.env {
            assert!(config::interpolate::valid_name(k), "{k:?}");
            assert!(sh_quote(v.expose()).is_ok());
        }
        assert!(config::valid_name(&c.app));
        assert!(!c.service.name.is_empty() && !c.service.name.starts_with('-'));
        assert!(
            c.service
                .name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ":_.@-".contains(ch)),
            "{:?}",
            c.service.name
        );
        for h in &c.hosts {
            assert!(config::host::valid_host(&h.host), "{:?}", h.host);
            assert!(h.user.as_deref().is_none_or(config::host::valid_user));
        }
    }
});
