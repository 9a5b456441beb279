//! Which files go into the artifact: `include` globs and paths under the package root,
//! minus `exclude`. Symlinks are kept as links and never followed; a link that would
//! point out of the package root, a special file, or a name shipit reserves is refused.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use super::error::ArtifactError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { size: u64 },
    Symlink { target: String },
}

/// One entry of the package, by its path relative to the root (`/`-separated, UTF-8).
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub source: PathBuf,
    pub mode: u32,
    pub kind: Kind,
}

/// Names at the top of a release that shipit itself writes.
const RESERVED: &[&str] = &[".shipit", ".env"];

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

fn glob(pattern: &str) -> Result<Glob, ArtifactError> {
    GlobBuilder::new(pattern.trim_end_matches('/'))
        .literal_separator(true)
        .build()
        .map_err(|e| {
            ArtifactError::Invalid(format!("`{pattern}` is not a valid glob: {}", e.kind()))
        })
}

pub fn select(
    root: &Path,
    include: &[String],
    exclude: &[String],
) -> Result<Vec<Entry>, ArtifactError> {
    let meta = fs::metadata(root).map_err(|e| {
        ArtifactError::Invalid(format!(
            "the package root `{}` cannot be read: {e}",
            root.display()
        ))
    })?;
    if !meta.is_dir() {
        return Err(ArtifactError::Invalid(format!(
            "the package root `{}` is not a directory",
            root.display()
        )));
    }
    if include.is_empty() {
        return Err(ArtifactError::Invalid(
            "`package.include` is empty: list the paths to ship, e.g. \
             `include: [target/release/hello, static/]`"
                .into(),
        ));
    }
    let mut excludes = GlobSetBuilder::new();
    for e in exclude {
        excludes.add(glob(e)?);
    }
    let excludes = excludes
        .build()
        .map_err(|e| ArtifactError::Invalid(e.to_string()))?;

    let mut found = std::collections::BTreeMap::<String, Entry>::new();
    for pattern in include {
        let before = found.len();
        let matched = collect_pattern(root, pattern, &excludes, &mut found)?;
        if !matched {
            return Err(ArtifactError::Invalid(format!(
                "`package.include` entry `{pattern}` matched nothing under `{}`",
                root.display()
            )));
        }
        let _ = before;
    }
    // Parent directories of everything included, so modes survive the unpack.
    let paths: Vec<String> = found.keys().cloned().collect();
    for path in paths {
        let mut parent = Path::new(&path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            let key = to_str(p)?;
            if let std::collections::btree_map::Entry::Vacant(slot) = found.entry(key) {
                let entry = entry_for(root, &root.join(p), slot.key().clone())?;
                slot.insert(entry);
            }
            parent = p.parent();
        }
    }
    let links = found
        .iter()
        .filter_map(|(path, e)| match &e.kind {
            Kind::Symlink { target } => Some((path.clone(), target.clone())),
            _ => None,
        })
        .collect();
    check_link_chains(&links)?;
    for path in found.keys() {
        let top = path.split('/').next().unwrap_or_default();
        if RESERVED.contains(&top) {
            return Err(ArtifactError::Invalid(format!(
                "`{path}` is in the package, but `{top}` at the top of a release is reserved for \
                 shipit: exclude it or move it"
            )));
        }
    }
    Ok(found.into_values().collect())
}

fn to_str(p: &Path) -> Result<String, ArtifactError> {
    p.to_str().map(|s| s.to_owned()).ok_or_else(|| {
        ArtifactError::Invalid(format!("`{}` is not a UTF-8 file name", p.display()))
    })
}

/// Adds what `pattern` selects; returns whether it selected anything (before excludes).
fn collect_pattern(
    root: &Path,
    pattern: &str,
    excludes: &GlobSet,
    found: &mut std::collections::BTreeMap<String, Entry>,
) -> Result<bool, ArtifactError> {
    let mut trimmed = pattern.trim_end_matches('/');
    while let Some(rest) = trimmed.strip_prefix("./") {
        trimmed = rest;
    }
    if !has_glob(trimmed) {
        let start = if trimmed == "." || trimmed.is_empty() {
            root.to_owned()
        } else {
            root.join(trimmed)
        };
        if fs::symlink_metadata(&start).is_err() {
            return Ok(false);
        }
        add_tree(root, &start, excludes, found)?;
        return Ok(true);
    }
    // Walk only below the literal prefix of the glob.
    let prefix: PathBuf = Path::new(trimmed)
        .components()
        .take_while(|c| !has_glob(&c.as_os_str().to_string_lossy()))
        .collect();
    let start = root.join(&prefix);
    if !start.is_dir()
        || fs::symlink_metadata(&start)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(true)
    {
        return Ok(false);
    }
    let matcher = glob(trimmed)?.compile_matcher();
    let mut matched = false;
    let mut walk = walkdir::WalkDir::new(&start)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    while let Some(item) = walk.next() {
        let item = item.map_err(|e| {
            ArtifactError::Invalid(format!("cannot read below `{}`: {e}", start.display()))
        })?;
        let rel = relative(root, item.path())?;
        if rel.is_empty() {
            continue;
        }
        if matcher.is_match(&rel) {
            matched = true;
            add_tree(root, item.path(), excludes, found)?;
            if item.file_type().is_dir() {
                walk.skip_current_dir();
            }
        }
    }
    Ok(matched)
}

fn relative(root: &Path, path: &Path) -> Result<String, ArtifactError> {
    let rel = path.strip_prefix(root).map_err(|_| {
        ArtifactError::Invalid(format!("`{}` is outside the package root", path.display()))
    })?;
    to_str(rel)
}

/// `path` and, when it is a real directory, everything below it.
fn add_tree(
    root: &Path,
    path: &Path,
    excludes: &GlobSet,
    found: &mut std::collections::BTreeMap<String, Entry>,
) -> Result<(), ArtifactError> {
    let mut walk = walkdir::WalkDir::new(path).follow_links(false).into_iter();
    while let Some(item) = walk.next() {
        let item = item.map_err(|e| {
            ArtifactError::Invalid(format!("cannot read `{}`: {e}", path.display()))
        })?;
        let rel = relative(root, item.path())?;
        if rel.is_empty() {
            continue;
        }
        if excludes.is_match(&rel) {
            if item.file_type().is_dir() {
                walk.skip_current_dir();
            }
            continue;
        }
        if let std::collections::btree_map::Entry::Vacant(slot) = found.entry(rel) {
            let entry = entry_for(root, item.path(), slot.key().clone())?;
            slot.insert(entry);
        }
    }
    Ok(())
}

fn entry_for(root: &Path, source: &Path, path: String) -> Result<Entry, ArtifactError> {
    let meta = fs::symlink_metadata(source)
        .map_err(|e| ArtifactError::Invalid(format!("cannot read `{}`: {e}", source.display())))?;
    let ft = meta.file_type();
    let mode = meta.permissions().mode() & 0o777;
    let kind = if ft.is_symlink() {
        let target = fs::read_link(source)
            .map_err(|e| ArtifactError::Invalid(format!("cannot read the link `{path}`: {e}")))?;
        let target = to_str(&target)?;
        check_link(&path, &target)?;
        Kind::Symlink { target }
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File { size: meta.len() }
    } else {
        let what = if ft.is_fifo() {
            "a named pipe"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device file"
        };
        return Err(ArtifactError::Invalid(format!(
            "`{path}` is {what}; only files, directories and symlinks can be packaged"
        )));
    };
    let _ = root;
    Ok(Entry {
        path,
        source: source.to_owned(),
        mode,
        kind,
    })
}

/// A symlink stays inside the package: relative, and never climbing above the root.
pub fn check_link(path: &str, target: &str) -> Result<(), ArtifactError> {
    if target.starts_with('/') {
        return Err(ArtifactError::Escape(format!(
            "`{path}` is a symlink to the absolute path `{target}`; links in a package must be \
             relative and stay inside it"
        )));
    }
    let mut depth: i64 = Path::new(path).components().count() as i64 - 1;
    for c in Path::new(target).components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(ArtifactError::Escape(format!(
                "`{path}` is a symlink to `{target}`, which points outside the package root"
            )));
        }
    }
    Ok(())
}

/// Every link of a package, followed through the package's other links the way the host
/// will follow them. `check_link` alone looks at one link: `d/l -> ..` and `e -> d/l/..`
/// each stay inside on their own, but `e` resolves to the directory above the root. A
/// link whose path or target leaves the root through other links is refused; a chain
/// longer than the kernel follows (40 links) resolves nowhere and is left alone.
pub fn check_link_chains(
    links: &std::collections::BTreeMap<String, String>,
) -> Result<(), ArtifactError> {
    for (path, target) in links {
        let escape = || {
            ArtifactError::Escape(format!(
                "`{path}` is a symlink to `{target}`, which points outside the package root \
                 through other links in it"
            ))
        };
        let mut dir: Vec<&str> = Vec::new();
        // The link's own directory is resolved too: it may lie below another link.
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        let mut todo: std::collections::VecDeque<&str> =
            parent.split('/').chain(target.split('/')).collect();
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            match c {
                "" | "." => {}
                ".." => {
                    dir.pop().ok_or_else(escape)?;
                }
                name => {
                    dir.push(name);
                    if let Some(next) = links.get(&dir.join("/")) {
                        hops += 1;
                        if hops > 40 {
                            break;
                        }
                        if next.starts_with('/') {
                            return Err(escape());
                        }
                        dir.pop();
                        for part in next.split('/').rev() {
                            todo.push_front(part);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chains(links: &[(&str, &str)]) -> Result<(), ArtifactError> {
        check_link_chains(
            &links
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
        )
    }

    #[test]
    fn link_chains_inside_are_fine() {
        assert!(chains(&[("d/l", ".."), ("e", "d/l/x"), ("a", "b"), ("b", "c/d")]).is_ok());
        assert!(chains(&[("a/b", "../c"), ("c", "d"), ("x", "a/b/../e")]).is_ok());
        // A loop resolves nowhere, on the host too.
        assert!(chains(&[("a", "b"), ("b", "a")]).is_ok());
    }

    /// Regression: each link passed `check_link`, but together they reach outside.
    #[test]
    fn link_chains_that_escape_are_refused() {
        for links in [
            &[("d/l", ".."), ("e", "d/l/..")][..],
            &[("d/l", ".."), ("d/l/e", "..")],
            &[("a", "b/c"), ("b/c", ".."), ("x", "a/../y")],
            &[("up", "."), ("s/t", "../up/../x")],
            // `a/b` is `c`, then `d`: `a/b/../..` is above the root, not the root.
            &[("a/b", "../c"), ("c", "d"), ("x", "a/b/../../c")],
        ] {
            let err = chains(links).unwrap_err();
            assert!(
                matches!(&err, ArtifactError::Escape(m) if m.contains("through other links")),
                "{links:?}: {err}"
            );
        }
    }

    #[test]
    fn links_inside_are_fine() {
        assert!(check_link("a", "b").is_ok());
        assert!(check_link("a/b/c", "../d").is_ok());
        assert!(check_link("a/b/c", "../../d").is_ok());
        assert!(check_link("a/b", "./c/../d").is_ok());
    }

    #[test]
    fn links_that_escape_are_refused() {
        assert!(matches!(
            check_link("a", "../x"),
            Err(ArtifactError::Escape(_))
        ));
        assert!(matches!(
            check_link("a/b", "../../x"),
            Err(ArtifactError::Escape(_))
        ));
        assert!(matches!(
            check_link("a", "/etc/passwd"),
            Err(ArtifactError::Escape(_))
        ));
        assert!(matches!(
            check_link("a/b", "c/../../../x"),
            Err(ArtifactError::Escape(_))
        ));
    }
}
