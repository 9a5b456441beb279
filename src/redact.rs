//! Secrets: values that came from the deployer's environment through `${VAR}`.
//!
//! Two layers keep them out of every output. Structurally, a `Text` remembers whether any
//! part of it came from the environment, and its `Display` and `Serialize` print
//! `[redacted]` instead. As a safety net, every secret value is also registered here, and
//! the printer and the log writer scrub registered values out of any line they emit, so
//! that a secret that leaks into a free-form message (a hook's output, an error string) is
//! still masked.

use std::borrow::Cow;
use std::fmt;
use std::sync::{OnceLock, RwLock};

use serde::{Serialize, Serializer};

pub const REDACTED: &str = "[redacted]";

/// Values shorter than this are not scrubbed out of free text: masking every `1` or `on`
/// would garble output without protecting anything. They are still redacted wherever
/// the value itself is printed.
const MIN_SCRUB_LEN: usize = 4;

fn registry() -> &'static RwLock<Vec<String>> {
    static REGISTRY: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(Vec::new()))
}

/// Remember `value` as a secret, so that `scrub` masks it from now on.
pub fn register(value: &str) {
    if value.len() < MIN_SCRUB_LEN {
        return;
    }
    let mut secrets = registry().write().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_owned());
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `text` with every registered secret replaced by `[redacted]`.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let secrets = registry().read().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_owned();
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    Cow::Owned(out)
}

/// A configuration string after interpolation.
#[derive(Clone, PartialEq, Eq)]
pub struct Text {
    value: String,
    secret: bool,
}

impl Text {
    pub fn plain(value: impl Into<String>) -> Self {
        Text {
            value: value.into(),
            secret: false,
        }
    }

    pub fn secret(value: impl Into<String>) -> Self {
        let value = value.into();
        register(&value);
        Text {
            value,
            secret: true,
        }
    }

    pub fn new(value: String, secret: bool) -> Self {
        if secret {
            Text::secret(value)
        } else {
            Text::plain(value)
        }
    }

    /// The real value, for use (never for display).
    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn is_secret(&self) -> bool {
        self.secret
    }

    /// What may be shown to a human: the value, or `[redacted]`.
    pub fn shown(&self) -> &str {
        if self.secret { REDACTED } else { &self.value }
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.shown(), f)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_text_never_displays_its_value() {
        let t = Text::secret("hunter2-very-secret");
        assert_eq!(t.to_string(), REDACTED);
        assert_eq!(format!("{t:?}"), format!("{REDACTED:?}"));
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            format!("\"{REDACTED}\"")
        );
        assert_eq!(t.expose(), "hunter2-very-secret");
    }

    #[test]
    fn scrub_masks_registered_values_in_free_text() {
        Text::secret("s3cr3t-token-abc");
        Text::secret("s3cr3t-token-abc-longer");
        assert_eq!(
            scrub("auth=s3cr3t-token-abc-longer and s3cr3t-token-abc"),
            format!("auth={REDACTED} and {REDACTED}")
        );
        assert!(matches!(scrub("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn very_short_values_are_not_scrubbed_from_free_text() {
        let t = Text::secret("on");
        assert_eq!(t.to_string(), REDACTED);
        assert_eq!(scrub("turned on"), "turned on");
    }
}
