//! POSIX shell quoting: turns any string into one shell word that `sh` reads back
//! byte for byte. Every remote command shipit builds goes through here.
//!
//! NUL is rejected, not handled: a POSIX shell cannot carry a NUL byte in a word or an
//! argument (argv entries are C strings), so there is no quoting that would give it back.
//! Dropping or replacing it would silently change a path or a secret, so the caller gets
//! an error instead and can report the bad value.

use std::fmt;

/// A string that cannot be made into a shell word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteError {
    /// Byte offset of the first NUL in the input.
    pub position: usize,
}

impl fmt::Display for QuoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a NUL byte (at offset {}) cannot be passed through a shell command",
            self.position
        )
    }
}

impl std::error::Error for QuoteError {}

/// Quotes `s` as a single POSIX shell word.
///
/// Strings made only of characters that are never special to `sh`
/// (`A-Z a-z 0-9 _ @ % + : , . / -`) are returned as they are, so commands shown by
/// `--dry-run` stay readable; everything else is wrapped in single quotes, with each `'`
/// written as `'\''`. The empty string becomes `''`.
pub fn sh_quote(s: &str) -> Result<String, QuoteError> {
    if let Some(position) = s.find('\0') {
        return Err(QuoteError { position });
    }
    if !s.is_empty() && s.bytes().all(is_plain) {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Ok(out)
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'_' | b'@' | b'%' | b'+' | b':' | b',' | b'.' | b'/' | b'-'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::process::Command;

    /// Runs `printf %s <quoted>` through the local `sh` and returns the bytes it printed.
    fn roundtrip(s: &str) -> Vec<u8> {
        let quoted = sh_quote(s).expect("no NUL in input");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {quoted}"))
            .output()
            .expect("run sh");
        assert!(out.status.success(), "sh failed for {quoted:?}: {out:?}");
        out.stdout
    }

    #[test]
    fn plain_words_stay_readable() {
        assert_eq!(
            sh_quote("/opt/hello/releases").unwrap(),
            "/opt/hello/releases"
        );
        assert_eq!(sh_quote("a-b_c.d:e,f@g%h+i").unwrap(), "a-b_c.d:e,f@g%h+i");
    }

    #[test]
    fn special_strings_are_single_quoted() {
        assert_eq!(sh_quote("").unwrap(), "''");
        assert_eq!(sh_quote("a b").unwrap(), "'a b'");
        assert_eq!(sh_quote("it's").unwrap(), "'it'\\''s'");
        assert_eq!(sh_quote("~").unwrap(), "'~'");
        assert_eq!(sh_quote("A=b").unwrap(), "'A=b'");
    }

    #[test]
    fn nul_is_rejected_with_its_position() {
        assert_eq!(sh_quote("ab\0c"), Err(QuoteError { position: 2 }));
    }

    #[test]
    fn hostile_examples_round_trip() {
        for s in [
            "",
            "'",
            "''",
            "\\",
            "$(touch /tmp/shipit-pwned)",
            "`id`",
            "a\nb\n",
            "\n",
            "$HOME ${HOME} $$ $1 $@",
            "-n",
            "--",
            "*?[a]",
            "; rm -rf / #",
            "\"double\" 'single'",
            "tab\there",
            "\u{1b}[31mred",
            "ünïcödé ☃",
        ] {
            assert_eq!(roundtrip(s), s.as_bytes(), "input {s:?}");
        }
    }

    fn hostile_string() -> impl Strategy<Value = String> {
        let hostile = prop_oneof![
            Just("'".to_owned()),
            Just("\\".to_owned()),
            Just("\"".to_owned()),
            Just("$(".to_owned()),
            Just(")".to_owned()),
            Just("`".to_owned()),
            Just("\n".to_owned()),
            Just("$".to_owned()),
            Just("%".to_owned()),
            Just("-".to_owned()),
            Just(" ".to_owned()),
            Just("*".to_owned()),
            Just("!".to_owned()),
            Just("~".to_owned()),
            Just("#".to_owned()),
            "[^\u{0}]{0,3}",
        ];
        prop::collection::vec(hostile, 0..24).prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn any_string_without_nul_round_trips_through_sh(s in hostile_string()) {
            prop_assert_eq!(roundtrip(&s), s.as_bytes());
        }

        #[test]
        fn any_string_with_nul_is_rejected(a in "[^\u{0}]{0,8}", b in ".{0,8}") {
            let s = format!("{a}\0{b}");
            prop_assert_eq!(sh_quote(&s), Err(QuoteError { position: a.len() }));
        }
    }
}
