//! Hostile input without servers: many generated values through the loader, the quoting
//! and the `.env` writer, read back by a real `sh`; odd env keys refused; and the inputs
//! the fuzz targets (fuzz/) once found, kept as regression tests. The e2e tier repeats the
//! byte-for-byte checks on a real host (e2e/hostile.rs).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use proptest::prelude::*;
use shipit::config::{self, interpolate::valid_name};
use shipit::remote::stage::env_file;
use shipit::ssh::quote::sh_quote;

/// Strings built from the pieces that break naive quoting, plus any other characters.
fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("'"),
        Just("\""),
        Just("\\"),
        Just("$("),
        Just(")"),
        Just("${"),
        Just("}"),
        Just("$$"),
        Just("$"),
        Just("`"),
        Just(";"),
        Just("&&"),
        Just("|"),
        Just("\n"),
        Just("\r"),
        Just("\t"),
        Just(" "),
        Just("*"),
        Just("?"),
        Just("[a]"),
        Just("~"),
        Just("-"),
        Just("#"),
        Just("%s"),
        Just("="),
        Just("ü☃"),
        Just("touch /tmp/shipit-pwned"),
    ]
    .prop_map(str::to_owned);
    let piece = prop_oneof![4 => piece, 1 => "[^\u{0}]{1,3}"];
    prop::collection::vec(piece, 0..16).prop_map(|p| p.concat())
}

/// A YAML double-quoted scalar holding `s` literally, with `$` doubled so the loader's
/// `${VAR}` interpolation leaves it alone.
pub(crate) fn yaml_literal(s: &str) -> String {
    yaml_quoted(&s.replace('$', "$$"))
}

/// A YAML double-quoted scalar: everything outside YAML's printable set escaped.
pub(crate) fn yaml_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t'
            | ' '..='~'
            | '\u{a0}'..='\u{d7ff}'
            | '\u{e000}'..='\u{fefe}'
            | '\u{ff00}'..='\u{fffd}' => out.push(c),
            c if (c as u32) > 0xffff => out.push(c),
            c => out.push_str(&format!("\\u{:04x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn load(yaml: &str, env: &BTreeMap<String, String>) -> Result<config::Config, String> {
    config::load_str(yaml, Path::new("/nonexistent/deploy.yaml"), None, env)
        .map_err(|e| e.to_string())
}

/// Runs `script` in `dir` with `sh -c` and returns its stdout bytes.
fn sh(dir: &Path, script: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
    out.stdout
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A value written literally and the same value pulled from the environment both
    /// reach the resolved config unchanged, and `.env` gives them back to `sh` unchanged.
    #[test]
    fn env_values_survive_the_loader_and_the_env_file(v in hostile(), w in hostile()) {
        let env: BTreeMap<String, String> = [("HOSTILE".to_owned(), w.clone())].into();
        let yaml = format!(
            "app: x\ndeploy_to: {}\nenv:\n  LITERAL: {}\n  FROM_ENV: ${{HOSTILE}}\nshared: {{dirs: [{}]}}\n",
            yaml_literal(&format!("/opt/{}", v.replace("..", "._").replace('\n', "_"))),
            yaml_literal(&v),
            yaml_literal(&format!("d {}", v.replace("..", "._").replace(['/', '*', '?', '[', '{', '\n'], "_"))),
        );
        let c = load(&yaml, &env).map_err(TestCaseError::fail)?;
        prop_assert_eq!(c.env["LITERAL"].expose(), v.as_str());
        prop_assert_eq!(c.env["FROM_ENV"].expose(), w.as_str());
        prop_assert!(c.env["FROM_ENV"].is_secret());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), env_file(&c.env, false)).unwrap();
        for (k, want) in [("LITERAL", &v), ("FROM_ENV", &w)] {
            let got = sh(dir.path(), &format!("set -a; . ./.env; printf '%s' \"${k}\""));
            prop_assert_eq!(&got, want.as_bytes());
        }
        // Paths that reach the server come back from one shell word each.
        for p in [c.deploy_to.expose(), c.shared.dirs[0].expose()] {
            let got = sh(dir.path(), &format!("printf '%s' {}", sh_quote(p).unwrap()));
            prop_assert_eq!(got, p.as_bytes());
        }
        prop_assert!(!dir.path().join("shipit-pwned").exists());
    }

    /// Env keys that are not `[A-Za-z_][A-Za-z0-9_]*` are refused by name, never written.
    #[test]
    fn odd_env_keys_are_refused(key in hostile()) {
        let yaml = format!("app: x\nenv:\n  {}: v\n", yaml_quoted(&key));
        match load(&yaml, &BTreeMap::new()) {
            Ok(c) => {
                prop_assert!(valid_name(&key), "accepted {:?}", key);
                prop_assert!(c.env.contains_key(&key));
            }
            Err(e) => {
                prop_assert!(!valid_name(&key), "refused {:?}: {}", key, e);
                prop_assert!(e.contains("is not a valid environment variable name"), "{}", e);
            }
        }
    }

    /// Hostile unit names are refused with a clear error, never passed to systemctl.
    #[test]
    fn hostile_unit_names_are_refused(name in hostile()) {
        let yaml = format!("app: x\nservice: {{name: {}}}\n", yaml_literal(&name));
        if let Ok(c) = load(&yaml, &BTreeMap::new()) {
            prop_assert!(
                !c.service.name.starts_with('-')
                    && c.service.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ":_.@-".contains(ch)),
                "{:?}", c.service.name
            );
        }
    }
}

#[test]
fn a_dollar_brace_in_a_value_from_the_environment_is_not_interpolated_again() {
    let env: BTreeMap<String, String> = [
        ("A".to_owned(), "${B}$(touch /tmp/shipit-pwned)".to_owned()),
        ("B".to_owned(), "no".to_owned()),
    ]
    .into();
    let c = load("app: x\nenv:\n  K: ${A}\n", &env).unwrap();
    assert_eq!(c.env["K"].expose(), "${B}$(touch /tmp/shipit-pwned)");
}

/// Inputs the fuzz targets (fuzz/) found, checked with the targets' own properties.
#[test]
fn fuzz_regressions_host_parse() {
    use shipit::config::host;
    for text in [
        // Parsed as host `fe80:21%eth0`, printed bare, read back as host `fe80`, port `21%eth0`.
        "[fe80:21%eth0]",
        "a:b@[c:d]:22",
    ] {
        if let Ok(spec) = host::parse(text) {
            assert_eq!(host::parse(&spec.to_string()), Ok(spec), "{text:?}");
        }
    }
}
