//! What git says about the source tree: the app version, the commit, the commit time.

use std::path::Path;
use std::process::Command;

use crate::exit::{Exit, Failure};

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

pub fn commit(dir: &Path) -> Option<String> {
    git(dir, &["rev-parse", "HEAD"])
}

pub fn commit_time(dir: &Path) -> Option<u64> {
    git(dir, &["log", "-1", "--format=%ct"])?.parse().ok()
}

/// A version is used in file names: letters, digits and `._+-`, at most 128.
pub fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
}

/// `--app-version`, else `git describe --tags --always --dirty`.
pub fn app_version(dir: &Path, explicit: Option<&str>) -> Result<String, Failure> {
    let version = match explicit {
        Some(v) => v.to_owned(),
        None => git(dir, &["describe", "--tags", "--always", "--dirty"]).ok_or_else(|| {
            Failure::new(
                Exit::Invalid,
                format!(
                    "cannot tell the app's version: `{}` is not in a git repository with a commit",
                    dir.display()
                ),
            )
            .hint("pass `--app-version VERSION`")
        })?,
    };
    if !valid_version(&version) {
        return Err(Failure::new(
            Exit::Invalid,
            format!("`{version}` is not a usable version"),
        )
        .hint("use letters, digits and `._+-`, starting with a letter or digit"));
    }
    Ok(version)
}

/// The mtime stamped on every artifact entry: SOURCE_DATE_EPOCH, else the commit's time.
pub fn source_date(dir: &Path) -> Result<u64, Failure> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().map_err(|_| {
            Failure::new(
                Exit::Invalid,
                format!("SOURCE_DATE_EPOCH is `{v}`, not a number of seconds"),
            )
        }),
        Err(_) => Ok(commit_time(dir).unwrap_or(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(valid_version("v1.2.3-4-gabcdef0-dirty"));
        assert!(valid_version("1.0+build.5"));
        assert!(!valid_version(""));
        assert!(!valid_version("-x"));
        assert!(!valid_version("1/2"));
        assert!(!valid_version("a b"));
        assert!(!valid_version("$(id)"));
    }
}
