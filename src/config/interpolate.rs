//! `${VAR}`, `${VAR:-default}` and `$$` in configuration strings.
//!
//! Rules (docs/configuration.md repeats them for users):
//! - `${VAR}`: the variable's value; unset is an error naming the key that needs it.
//!   Set but empty is the empty string.
//! - `${VAR:-default}`: the default when VAR is unset or empty (as in sh). The default is
//!   literal text up to the closing `}`; it is not interpolated again.
//! - `$$` is a literal `$`. A `$` followed by anything else is kept as it is, so that a
//!   password with a `$` in it needs no escaping unless a `{` follows.
//! - Any value that took something from the environment is secret.

/// What interpolation produced: the text, and whether any of it came from the environment.
#[derive(Debug, PartialEq, Eq)]
pub struct Interpolated {
    pub value: String,
    pub secret: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// `${NAME}` with NAME not set in the environment.
    Unset(String),
    /// A `${` without its `}`.
    Unterminated,
    /// `${...}` whose name is not `[A-Za-z_][A-Za-z0-9_]*`.
    BadName(String),
    /// The variable is set, but not to valid UTF-8.
    NotUnicode(String),
}

/// Where variables come from: the process environment in production, a map in tests.
pub trait Lookup {
    fn var(&self, name: &str) -> Result<Option<String>, Error>;
}

pub struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn var(&self, name: &str) -> Result<Option<String>, Error> {
        match std::env::var(name) {
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::NotUnicode(name.to_owned())),
        }
    }
}

impl Lookup for std::collections::BTreeMap<String, String> {
    fn var(&self, name: &str) -> Result<Option<String>, Error> {
        Ok(self.get(name).cloned())
    }
}

/// A variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

pub fn interpolate(input: &str, env: &dyn Lookup) -> Result<Interpolated, Error> {
    let mut value = String::with_capacity(input.len());
    let mut secret = false;
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        value.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            value.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let close = body.find('}').ok_or(Error::Unterminated)?;
            let expr = &body[..close];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            if !valid_name(name) {
                return Err(Error::BadName(expr.to_owned()));
            }
            match (env.var(name)?, default) {
                (Some(v), Some(default)) if v.is_empty() => value.push_str(default),
                (Some(v), _) => {
                    secret = true;
                    value.push_str(&v);
                }
                (None, Some(default)) => value.push_str(default),
                (None, None) => return Err(Error::Unset(name.to_owned())),
            }
            rest = &body[close + 1..];
        } else {
            value.push('$');
            rest = after;
        }
    }
    value.push_str(rest);
    Ok(Interpolated { value, secret })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env() -> BTreeMap<String, String> {
        [
            ("DB", "postgres://u:pw@db/app"),
            ("EMPTY", ""),
            ("PORT", "9000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn run(input: &str) -> Result<Interpolated, Error> {
        interpolate(input, &env())
    }

    fn ok(value: &str, secret: bool) -> Result<Interpolated, Error> {
        Ok(Interpolated {
            value: value.to_owned(),
            secret,
        })
    }

    #[test]
    fn plain_text_is_untouched_and_not_secret() {
        assert_eq!(run("hello world"), ok("hello world", false));
        assert_eq!(run(""), ok("", false));
    }

    #[test]
    fn variables_are_substituted_and_mark_the_value_secret() {
        assert_eq!(run("${DB}"), ok("postgres://u:pw@db/app", true));
        assert_eq!(run("url=${DB}/x"), ok("url=postgres://u:pw@db/app/x", true));
        assert_eq!(run("${PORT}${PORT}"), ok("90009000", true));
    }

    #[test]
    fn defaults_apply_when_unset_or_empty_and_are_not_secret() {
        assert_eq!(run("${NOPE:-8080}"), ok("8080", false));
        assert_eq!(run("${EMPTY:-x}"), ok("x", false));
        assert_eq!(run("${PORT:-8080}"), ok("9000", true));
        assert_eq!(run("${NOPE:-}"), ok("", false));
        assert_eq!(run("${NOPE:-a:-b}"), ok("a:-b", false));
    }

    #[test]
    fn set_but_empty_is_empty() {
        assert_eq!(run("[${EMPTY}]"), ok("[]", true));
    }

    #[test]
    fn dollars() {
        assert_eq!(run("$$"), ok("$", false));
        assert_eq!(run("$${DB}"), ok("${DB}", false));
        assert_eq!(run("pa$word"), ok("pa$word", false));
        assert_eq!(run("end$"), ok("end$", false));
        assert_eq!(run("$$$$"), ok("$$", false));
    }

    #[test]
    fn errors() {
        assert_eq!(run("${NOPE}"), Err(Error::Unset("NOPE".into())));
        assert_eq!(run("${DB"), Err(Error::Unterminated));
        assert_eq!(run("${1X}"), Err(Error::BadName("1X".into())));
        assert_eq!(run("${}"), Err(Error::BadName("".into())));
        assert_eq!(run("${A B}"), Err(Error::BadName("A B".into())));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(input in ".*") {
            let _ = run(&input);
        }

        #[test]
        fn text_without_dollars_is_unchanged(input in "[^$]*") {
            proptest::prop_assert_eq!(run(&input), ok(&input, false));
        }
    }
}
