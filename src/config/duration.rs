//! Durations as operators write them: `500ms`, `10s`, `2m`, `1h`. A bare number is refused
//! rather than guessed at, because `timeout: 30` could mean seconds or milliseconds.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
            format!("`{text}` has no unit: write `{text}s`, `{text}ms` or `{text}m`")
        })?;
        let (number, unit) = text.split_at(split);
        if number.is_empty() {
            return Err(format!(
                "`{text}` is not a duration: write e.g. `500ms`, `10s`, `2m`"
            ));
        }
        let n: u64 = number
            .parse()
            .map_err(|_| format!("`{text}` is too large to be a duration"))?;
        let millis = match unit {
            "ms" => Some(n),
            "s" => n.checked_mul(1_000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            _ => {
                return Err(format!(
                    "`{text}` has an unknown unit `{unit}`: use ms, s, m or h (e.g. `10s`)"
                ));
            }
        }
        .ok_or_else(|| format!("`{text}` is too large to be a duration"))?;
        Ok(Duration(std::time::Duration::from_millis(millis)))
    }

    pub fn millis(self) -> u128 {
        self.0.as_millis()
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            0 => f.write_str("0s"),
            ms if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            ms if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
            ms if ms % 1_000 == 0 => write!(f, "{}s", ms / 1_000),
            ms => write!(f, "{ms}ms"),
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as `500ms`, `10s` or `2m`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "`{v}` has no unit: write `{v}s`, `{v}ms` or `{v}m`"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "`{v}` is not a duration: write e.g. `10s`"
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(Duration::parse("500ms").unwrap().millis(), 500);
        assert_eq!(Duration::parse("10s").unwrap().millis(), 10_000);
        assert_eq!(Duration::parse("2m").unwrap().millis(), 120_000);
        assert_eq!(Duration::parse("1h").unwrap().millis(), 3_600_000);
        assert_eq!(Duration::parse("0s").unwrap().millis(), 0);
    }

    #[test]
    fn refuses_what_it_would_have_to_guess() {
        assert_eq!(
            Duration::parse("30").unwrap_err(),
            "`30` has no unit: write `30s`, `30ms` or `30m`"
        );
        assert!(
            Duration::parse("10 seconds")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(Duration::parse("s").unwrap_err().contains("not a duration"));
        assert!(
            Duration::parse("1.5s")
                .unwrap_err()
                .contains("unknown unit `.5s`")
        );
        assert!(
            Duration::parse("99999999999999999999h")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        for text in ["500ms", "10s", "2m", "1h", "1500ms", "90s"] {
            assert_eq!(Duration::parse(text).unwrap().to_string(), text);
        }
    }
}
