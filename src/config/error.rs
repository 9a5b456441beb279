//! Configuration errors: each problem names file:line:column, says what is wrong, and
//! where it can, what to write instead.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; 0 when the problem has no place in the file (e.g. a missing key).
    pub line: u64,
    pub column: u64,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.line == 0 {
                write!(f, "{file}: {}", p.message)?;
            } else {
                write!(f, "{file}:{}:{}: {}", p.line, p.column, p.message)?;
            }
            if let Some(hint) = &p.hint {
                write!(f, "\nhint: {hint}")?;
            }
        }
        Ok(())
    }
}

/// The closest of `candidates` to `word`, if any is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_typos_and_ignores_strangers() {
        let keys = ["keep_releases", "deploy_to", "delta"];
        assert_eq!(closest("keep_release", keys), Some("keep_releases"));
        assert_eq!(closest("deploy-to", keys), Some("deploy_to"));
        assert_eq!(closest("detla", keys), Some("delta"));
        assert_eq!(closest("frobnicate", keys), None);
    }
}
