//! Architecture tests: they read `src/**/*.rs` as text and keep the structure honest.
//!
//! Each test lists every offender in its failure message, so one run shows the whole job.
//! The cycle test's failure message shows each cycle edge by edge, with the line of
//! each first reference.
//!
//! # How the source is read
//!
//! The scanner is deliberately small, not a Rust parser:
//!
//! 1. [`code_only`] blanks comments (line, block, doc), string literals (plain, byte, raw)
//!    and char literals with spaces, keeping every newline, so that `"crate::x"` in a
//!    message or `println!` in a doc comment is not mistaken for code.
//! 2. [`without_test_modules`] blanks each `#[cfg(test)]` line that is directly followed by
//!    an inline `mod NAME {`, through the brace that closes that module (braces are counted
//!    on the blanked text, where only code braces are left). Unit tests may import whatever
//!    they need; the dependency graph and the layer rule are about the shipped code.
//! 3. [`tokens`] splits what is left into identifiers, `::` and single punctuation marks.
//! 4. [`references`] finds the module paths a file names:
//!    - every `use` declaration (any visibility, so `pub use` re-exports count), with its
//!      `{...}` groups (nested, over several lines), `self`, `*` and `as` expanded;
//!    - every path in code that starts with `crate::`, `self::`, `super::`, with the name of
//!      a child module the file declares (`mod x;`, then `x::y`), or with a name the file
//!      brought in with a `use` of the crate (`use crate::ssh;`, then `ssh::quote::q`).
//!
//!    Paths are made absolute (`super` from `src/ssh/auth.rs` is `crate::ssh`); paths into
//!    other crates (`std::`, `russh::`) are dropped. `$crate` (macros) is not followed.
//! 5. [`resolve`] maps an absolute path to the file of its longest prefix that is a module:
//!    `crate::a::b::C` is `src/a/b.rs` or `src/a/b/mod.rs`, else `src/a.rs` or
//!    `src/a/mod.rs`, else `src/lib.rs` (the crate root).
//!
//! A `mod x;` declaration alone is not a reference, but a re-export is: `pub use x::T;` in
//! `src/a/mod.rs` is an edge to `src/a/x.rs`, so a child that names its siblings' items
//! through the parent (`super::T`) closes a cycle; children name each other by their own
//! paths (`super::x::T`). `src/main.rs` is the binary crate: the library cannot name it,
//! so it is left out of the graph (it only calls `shipit::main`).
//! Known blind spots: a name brought in by a glob (`use super::*;`) is not followed further
//! than the glob's module, and inline `mod x { ... }` blocks other than `#[cfg(test)]` ones
//! are read as part of their file (`super::` inside them resolves as if they were not
//! there); neither occurs in `src/` today.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Longest line allowed anywhere under `src/`: rustfmt's default `max_width`.
const MAX_WIDTH: usize = 100;

/// Longest file allowed under `src/`, in lines.
const MAX_LINES: usize = 800;

/// One file of `src/`: its path from the crate root (`src/ssh/auth.rs`) and its text.
struct Source {
    path: String,
    text: String,
}

/// Every `src/**/*.rs`, sorted by path.
fn sources() -> Vec<Source> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<Source>) {
        for entry in std::fs::read_dir(dir).expect("read src/") {
            let path = entry.expect("read src/").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).expect("under the crate root");
                out.push(Source {
                    path: rel.to_string_lossy().replace('\\', "/"),
                    text: std::fs::read_to_string(&path).expect("read a source file"),
                });
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    walk(&root.join("src"), root, &mut out);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    assert!(out.len() > 10, "found only {} files under src/", out.len());
    out
}

// ---------------------------------------------------------------------------------------
// The scanner.
// ---------------------------------------------------------------------------------------

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The length of the raw string literal (`r"…"`, `r#"…"#`, `br"…"`) that starts `s`.
fn raw_string_len(s: &[char]) -> Option<usize> {
    let mut i = match s {
        ['r', ..] => 1,
        ['b', 'r', ..] => 2,
        _ => return None,
    };
    let hashes = s[i..].iter().take_while(|&&c| c == '#').count();
    i += hashes;
    if s.get(i) != Some(&'"') {
        return None;
    }
    i += 1;
    while i < s.len() {
        if s[i] == '"'
            && s[i + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes
        {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    Some(s.len())
}

/// The length of the char literal that starts `s` (`'x'`, `'\n'`, `'\u{7f}'`), or `None`
/// for a lifetime or a label (`'a`).
fn char_literal_len(s: &[char]) -> Option<usize> {
    match s {
        ['\'', '\\', ..] => (3..s.len().min(14)).find(|&i| s[i] == '\'').map(|i| i + 1),
        ['\'', c, '\'', ..] if *c != '\'' => Some(3),
        _ => None,
    }
}

/// `text` with comments, string literals and char literals replaced by spaces. Newlines
/// are kept, so line numbers stay the same.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, chars: &[char]| {
        out.extend(chars.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }))
    };
    let mut i = 0;
    while i < c.len() {
        let starts_token = i == 0 || !is_ident(c[i - 1]);
        let rest = &c[i..];
        let len = match rest {
            ['/', '/', ..] => rest.iter().position(|&ch| ch == '\n').unwrap_or(rest.len()),
            ['/', '*', ..] => {
                let (mut j, mut depth) = (0, 0);
                while j < rest.len() {
                    match &rest[j..] {
                        ['/', '*', ..] => (depth, j) = (depth + 1, j + 2),
                        ['*', '/', ..] => (depth, j) = (depth - 1, j + 2),
                        _ => j += 1,
                    }
                    if depth == 0 {
                        break;
                    }
                }
                j
            }
            ['"', ..] => {
                let mut j = 1;
                while j < rest.len() && rest[j] != '"' {
                    j += if rest[j] == '\\' { 2 } else { 1 };
                }
                (j + 1).min(rest.len())
            }
            ['\'', ..] => char_literal_len(rest).unwrap_or(0),
            ['r' | 'b', ..] if starts_token => raw_string_len(rest).unwrap_or(0),
            _ => 0,
        };
        if len == 0 {
            out.push(c[i]);
            i += 1;
        } else {
            blank(&mut out, &rest[..len]);
            i += len;
        }
    }
    out
}

/// `code` (already through [`code_only`]) with every `#[cfg(test)] mod NAME { ... }` blanked.
fn without_test_modules(code: &str) -> String {
    let mut out: Vec<char> = code.chars().collect();
    let lines: Vec<&str> = code.lines().collect();
    // Char offset of the start of each line.
    let mut starts = Vec::with_capacity(lines.len());
    let mut offset = 0;
    for line in &lines {
        starts.push(offset);
        offset += line.chars().count() + 1;
    }
    for (n, line) in lines.iter().enumerate() {
        if line.trim() != "#[cfg(test)]" {
            continue;
        }
        let Some(next) = lines[n + 1..].iter().position(|l| !l.trim().is_empty()) else {
            continue;
        };
        let decl = lines[n + 1 + next].trim();
        let decl = ["pub(crate) ", "pub(super) ", "pub "]
            .iter()
            .find_map(|p| decl.strip_prefix(p))
            .unwrap_or(decl);
        if !(decl.starts_with("mod ") && decl.ends_with('{')) {
            continue;
        }
        let (from, mut depth) = (starts[n], 0);
        let mut j = starts[n + 1 + next];
        while j < out.len() {
            match out[j] {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        let to = (j + 1).min(out.len());
        for ch in &mut out[from..to] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
    }
    out.into_iter().collect()
}

/// A token of blanked code: an identifier (or number), `::`, or one punctuation mark.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    text: String,
    /// 1-based line number.
    line: usize,
}

fn tokens(code: &str) -> Vec<Token> {
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let c: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < c.len() {
            let len = if is_ident(c[i]) {
                c[i..].iter().take_while(|&&ch| is_ident(ch)).count()
            } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
                2
            } else {
                1
            };
            if !c[i].is_whitespace() {
                out.push(Token {
                    text: c[i..i + len].iter().collect(),
                    line: n + 1,
                });
            }
            i += len;
        }
    }
    out
}

/// One path of a `use` tree: its segments and the name it brings into scope, if any (none
/// for a glob or `as _`).
#[derive(Debug, PartialEq, Eq)]
struct UsePath {
    segments: Vec<String>,
    binds: Option<String>,
}

/// Expands the use tree in `t` (the tokens between `use` and `;`) under `prefix`.
fn expand_use_tree(t: &[Token], i: &mut usize, prefix: &[String], out: &mut Vec<UsePath>) {
    let mut path = prefix.to_vec();
    if t.get(*i).is_some_and(|t| t.text == "::") {
        *i += 1; // `use ::std::x`
    }
    loop {
        match t.get(*i).map(|t| t.text.as_str()) {
            Some("{") => {
                *i += 1;
                while t.get(*i).is_some_and(|t| t.text != "}") {
                    expand_use_tree(t, i, &path, out);
                    if t.get(*i).is_some_and(|t| t.text == ",") {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            Some("*") => {
                *i += 1;
                out.push(UsePath {
                    segments: path,
                    binds: None,
                });
                return;
            }
            Some(name) if name.chars().all(is_ident) => {
                *i += 1;
                if name != "self" || path.is_empty() {
                    path.push(name.to_owned());
                }
                if t.get(*i).is_some_and(|t| t.text == "::") {
                    *i += 1;
                    continue;
                }
                let mut binds = path.last().cloned();
                if t.get(*i).is_some_and(|t| t.text == "as") {
                    binds = t.get(*i + 1).map(|t| t.text.clone()).filter(|n| n != "_");
                    *i += 2;
                }
                out.push(UsePath {
                    segments: path,
                    binds,
                });
                return;
            }
            _ => {
                // Unexpected token: skip it rather than loop forever.
                *i += 1;
                return;
            }
        }
    }
}

/// How a file names modules: where it sits, its child modules, the crate names it imports.
struct Scope {
    /// The file's module path (`["ssh", "auth"]`; `[]` for `src/lib.rs`).
    module: Vec<String>,
    /// Modules declared with `mod x;` in the file.
    children: BTreeSet<String>,
    /// Names brought in by a `use` of this crate, with the absolute path they stand for.
    imported: BTreeMap<String, Vec<String>>,
}

impl Scope {
    /// `segments` as an absolute module path (without `crate`), or `None` when it leads
    /// out of the crate (`std::...`) or above the root.
    fn absolute(&self, segments: &[String]) -> Option<Vec<String>> {
        let first = segments.first()?.as_str();
        let (mut base, skip) = match first {
            "crate" => (Vec::new(), 1),
            "self" => (self.module.clone(), 1),
            "super" => {
                let mut base = self.module.clone();
                let supers = segments.iter().take_while(|s| *s == "super").count();
                for _ in 0..supers {
                    base.pop()?;
                }
                (base, supers)
            }
            _ if self.children.contains(first) => {
                let mut base = self.module.clone();
                base.push(first.to_owned());
                (base, 1)
            }
            _ => (self.imported.get(first)?.clone(), 1),
        };
        base.extend(segments[skip..].iter().cloned());
        Some(base)
    }

    fn is_root(&self, name: &str) -> bool {
        matches!(name, "crate" | "self" | "super")
            || self.children.contains(name)
            || self.imported.contains_key(name)
    }
}

/// A module path a file refers to, and the line it does so on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Reference {
    path: Vec<String>,
    line: usize,
}

/// The module path of a file: `src/ssh/auth.rs` is `["ssh", "auth"]`, `src/ssh/mod.rs` is
/// `["ssh"]`, `src/lib.rs` is `[]`.
fn module_path(file: &str) -> Vec<String> {
    let rel = file.strip_prefix("src/").unwrap_or(file);
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = rel.split('/').map(str::to_owned).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// Every absolute module path the file at `file` (with text `text`) refers to, outside its
/// `#[cfg(test)]` modules.
fn references(file: &str, text: &str) -> Vec<Reference> {
    let code = without_test_modules(&code_only(text));
    let t = tokens(&code);
    let mut scope = Scope {
        module: module_path(file),
        children: BTreeSet::new(),
        imported: BTreeMap::new(),
    };
    // `mod x;` declarations (not `mod x { ... }`).
    for w in t.windows(3) {
        if w[0].text == "mod" && w[2].text == ";" {
            scope.children.insert(w[1].text.clone());
        }
    }
    let mut out = Vec::new();
    // First the `use` declarations, which also fill `scope.imported`; `in_use` marks their
    // tokens so the path scan below skips them.
    let mut in_use = vec![false; t.len()];
    let mut i = 0;
    while i < t.len() {
        if t[i].text != "use" {
            i += 1;
            continue;
        }
        let start = i;
        let end = t[i..]
            .iter()
            .position(|t| t.text == ";")
            .map_or(t.len(), |p| i + p);
        let mut paths = Vec::new();
        let mut j = 0;
        expand_use_tree(&t[i + 1..end], &mut j, &[], &mut paths);
        for p in paths {
            let Some(path) = scope.absolute(&p.segments) else {
                continue;
            };
            if let Some(name) = p.binds {
                scope.imported.insert(name, path.clone());
            }
            out.push(Reference {
                path,
                line: t[start].line,
            });
        }
        in_use[start..end].iter_mut().for_each(|u| *u = true);
        i = end;
    }
    // Then paths in code: `root::a::b` where `root` is one of `scope.is_root`, not itself
    // in the middle of a longer path (`x::crate`), not `$crate`, not a field (`x.ssh`),
    // not a visibility (`pub(in crate::a)`).
    let mut i = 0;
    while i < t.len() {
        let before = |k: usize| i.checked_sub(k).map_or("", |j| t[j].text.as_str());
        let starts_path = !in_use[i]
            && scope.is_root(&t[i].text)
            && t.get(i + 1).is_some_and(|n| n.text == "::")
            && !matches!(before(1), "::" | "$" | ".")
            && !(before(1) == "in" && before(2) == "(" && before(3) == "pub");
        if !starts_path {
            i += 1;
            continue;
        }
        let mut segments = vec![t[i].text.clone()];
        let line = t[i].line;
        i += 1;
        while t.get(i).is_some_and(|t| t.text == "::")
            && t.get(i + 1).is_some_and(|t| t.text.chars().all(is_ident))
        {
            segments.push(t[i + 1].text.clone());
            i += 2;
        }
        if let Some(path) = scope.absolute(&segments) {
            out.push(Reference { path, line });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The file that defines `path`: the file of its longest prefix that is a module.
fn resolve<'a>(path: &[String], modules: &'a BTreeMap<Vec<String>, String>) -> &'a str {
    (0..=path.len())
        .rev()
        .find_map(|n| modules.get(&path[..n]))
        .expect("the crate root is a module")
}

/// The file-level dependency graph of the library: file -> files it refers to (no self
/// edges), each edge with the first line that makes it.
fn dependency_graph(files: &[Source]) -> BTreeMap<String, BTreeMap<String, usize>> {
    let library: Vec<&Source> = files.iter().filter(|f| f.path != "src/main.rs").collect();
    let modules: BTreeMap<Vec<String>, String> = library
        .iter()
        .map(|f| (module_path(&f.path), f.path.clone()))
        .collect();
    let mut graph = BTreeMap::new();
    for f in library {
        let edges: &mut BTreeMap<String, usize> = graph.entry(f.path.clone()).or_default();
        for r in references(&f.path, &f.text) {
            let to = resolve(&r.path, &modules);
            if to != f.path {
                let line = edges.entry(to.to_owned()).or_insert(r.line);
                *line = (*line).min(r.line);
            }
        }
    }
    graph
}

/// Every elementary cycle of `graph`, each as a chain of nodes starting at its smallest
/// node, sorted. Stops after `limit` cycles (the second value says whether it did).
fn cycles(
    graph: &BTreeMap<String, BTreeMap<String, usize>>,
    limit: usize,
) -> (Vec<Vec<String>>, bool) {
    fn walk(
        graph: &BTreeMap<String, BTreeMap<String, usize>>,
        start: &str,
        path: &mut Vec<String>,
        out: &mut Vec<Vec<String>>,
        limit: usize,
    ) {
        let last = path.last().expect("non-empty").clone();
        for next in graph.get(&last).into_iter().flat_map(|e| e.keys()) {
            if out.len() >= limit {
                return;
            }
            if next == start {
                out.push(path.clone());
            } else if next.as_str() > start && !path.contains(next) {
                path.push(next.clone());
                walk(graph, start, path, out, limit);
                path.pop();
            }
        }
    }
    let mut out = Vec::new();
    for start in graph.keys() {
        walk(graph, start, &mut vec![start.clone()], &mut out, limit);
    }
    let capped = out.len() >= limit;
    out.sort();
    (out, capped)
}

// ---------------------------------------------------------------------------------------
// The rules.
// ---------------------------------------------------------------------------------------

/// No file of the library depends on itself through other files: a cycle means two files
/// cannot be understood, tested or moved apart, and such tangles only grow. Each cycle is
/// shown as a chain `a -> b -> a`, each arrow with the line of the first reference.
#[test]
fn no_import_cycles() {
    let graph = dependency_graph(&sources());
    let (found, capped) = cycles(&graph, 500);
    let shown: Vec<String> = found
        .iter()
        .map(|cycle| {
            let mut chain = cycle[0].clone();
            for (k, from) in cycle.iter().enumerate() {
                let to = &cycle[(k + 1) % cycle.len()];
                chain += &format!(" -(:{})-> {to}", graph[from][to]);
            }
            chain
        })
        .collect();
    assert!(
        shown.is_empty(),
        "{}{} import cycle(s) among src/ files (`-(:N)->`: line N of the file before the \
         arrow is its first reference to the file after it):\n  {}",
        if capped { "at least " } else { "" },
        found.len(),
        shown.join("\n  ")
    );
}

/// Lower layers know nothing of the ones above them. Transport, remote scripts, health
/// checks, artifacts and configuration are used by the orchestration (`commands`,
/// `rollout`, `pipeline`, `host`, `plan`), the output (`printer`) and the command line
/// (`cli`), never the other way round. And only the entry points (`lib.rs`, `main.rs`,
/// `settings.rs`, which turns the command line into settings, and `commands/`) know the
/// command line and the commands.
#[test]
fn layers_point_down() {
    const LOWER: &[&str] = &[
        "src/remote/",
        "src/ssh/",
        "src/health/",
        "src/health.rs",
        "src/artifact/",
        "src/config/",
    ];
    const ABOVE_THEM: &[&str] = &[
        "commands", "rollout", "pipeline", "host", "plan", "printer", "cli",
    ];
    const ENTRY: &[&str] = &[
        "src/cli.rs",
        "src/settings.rs",
        "src/lib.rs",
        "src/main.rs",
        "src/commands/",
    ];
    let mut offenders = Vec::new();
    for f in sources() {
        let lower = LOWER.iter().any(|p| f.path.starts_with(p));
        let entry = ENTRY.iter().any(|p| f.path.starts_with(p));
        for r in references(&f.path, &f.text) {
            let Some(top) = r.path.first().map(String::as_str) else {
                continue;
            };
            let (rule, broken) = if lower && ABOVE_THEM.contains(&top) {
                ("a lower layer uses", true)
            } else if !entry && matches!(top, "cli" | "commands") {
                ("only the entry points may use", true)
            } else {
                ("", false)
            };
            if broken {
                offenders.push(format!(
                    "{}:{}: {rule} crate::{}",
                    f.path,
                    r.line,
                    r.path.join("::")
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "{} reference(s) point up the layers:\n  {}",
        offenders.len(),
        offenders.join("\n  ")
    );
}

/// Files stay small enough to read in one sitting; a file past 800 lines is two modules.
#[test]
fn no_file_over_800_lines() {
    let offenders: Vec<String> = sources()
        .iter()
        .map(|f| (f.path.as_str(), f.text.lines().count()))
        .filter(|&(_, n)| n > MAX_LINES)
        .map(|(path, n)| format!("{path}: {n} lines"))
        .collect();
    assert!(
        offenders.is_empty(),
        "{} file(s) over {MAX_LINES} lines:\n  {}",
        offenders.len(),
        offenders.join("\n  ")
    );
}

/// Every byte shipit shows goes through the printer (`src/printer.rs`, `src/printer/`),
/// which owns the choice of stream, the format (human or JSON), colour and redaction; the
/// log subscriber (`src/logging.rs`) and the live view (`src/view.rs`, to move into
/// `src/printer/`) are the only other writers. The crate denies clippy's `print_stdout`
/// and `print_stderr`, but those lints only see the print macros: they miss
/// `writeln!(std::io::stderr(), ...)` and a handle kept from `io::stdout()`, and they do
/// not cover `dbg!`. This test looks for all of them in code, unit tests included (not in
/// comments or strings).
#[test]
fn output_goes_through_the_printer() {
    let allowed = |path: &str| {
        matches!(path, "src/printer.rs" | "src/logging.rs" | "src/view.rs")
            || path.starts_with("src/printer/")
    };
    let mut offenders = Vec::new();
    for f in sources().iter().filter(|f| !allowed(&f.path)) {
        let t = tokens(&code_only(&f.text));
        for (i, tok) in t.iter().enumerate() {
            let next = |k: usize| t.get(i + k).map_or("", |t| t.text.as_str());
            let found = match tok.text.as_str() {
                "println" | "eprintln" | "print" | "eprint" | "dbg" if next(1) == "!" => {
                    format!("{}!", tok.text)
                }
                "io" if next(1) == "::"
                    && matches!(next(2), "stdout" | "stderr")
                    && next(3) == "(" =>
                {
                    format!("io::{}()", next(2))
                }
                _ => continue,
            };
            offenders.push(format!("{}:{}: {found}", f.path, tok.line));
        }
    }
    assert!(
        offenders.is_empty(),
        "{} place(s) write to stdout/stderr around the printer:\n  {}",
        offenders.len(),
        offenders.join("\n  ")
    );
}

/// No line is longer than rustfmt's `max_width` (100). When a statement holds a string
/// literal that cannot fit in the width, rustfmt does not fail or warn: it silently leaves
/// the whole statement as written, so `cargo fmt --check` passes on code nobody formats.
/// A 221-character string made it skip lines 34-100 of `src/commands/rollback.rs` that way.
/// Long strings are split with `concat!` or a `\` line continuation instead.
#[test]
fn no_line_rustfmt_gives_up_on() {
    let mut offenders = Vec::new();
    for f in sources() {
        for (n, line) in f.text.lines().enumerate() {
            let width = line.chars().count();
            if width > MAX_WIDTH {
                offenders.push(format!("{}:{}: {width} characters", f.path, n + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "{} line(s) over {MAX_WIDTH} characters:\n  {}",
        offenders.len(),
        offenders.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// The scanner's own tests.
// ---------------------------------------------------------------------------------------

/// `line:path` for each reference, sorted as strings.
fn paths(file: &str, text: &str) -> Vec<String> {
    let mut out: Vec<String> = references(file, text)
        .into_iter()
        .map(|r| format!("{}:{}", r.line, r.path.join("::")))
        .collect();
    out.sort();
    out
}

#[test]
fn scanner_blanks_comments_strings_and_chars() {
    let text = "let a = \"crate::x // y\"; // crate::z\nlet b = '\"'; /* crate::w\n */ \
                let c = r#\"a \"crate::v\" b\"#; let d: &'static str = b\"q\";";
    let code = code_only(text);
    assert_eq!(code.lines().count(), 3);
    assert!(!code.contains("crate"), "{code}");
    assert!(code.contains("let d: &'static str = b"), "{code}");
    assert_eq!(code.chars().count(), text.chars().count());
}

#[test]
fn scanner_reads_use_groups_and_inline_paths() {
    let text = "\
mod child;
use std::fmt;
pub use child::{Thing, other::Deep as D};
use crate::ssh::{
    self,
    connect::{Connector, connect},
};
use super::*;
fn f() {
    crate::remote::q(\"crate::not::this\");
    ssh::quote::sh_quote(x);
    super::super::top::X;
    self::child::y();
}
";
    assert_eq!(
        paths("src/a/b.rs", text),
        [
            "10:remote::q",
            "11:ssh::quote::sh_quote",
            "12:top::X",
            "13:a::b::child::y",
            "3:a::b::child::Thing",
            "3:a::b::child::other::Deep",
            "4:ssh",
            "4:ssh::connect::Connector",
            "4:ssh::connect::connect",
            "8:a",
        ]
    );
}

#[test]
fn scanner_skips_test_modules_and_mod_declarations() {
    let text = "\
mod child;
use crate::x::Y;

#[cfg(test)]
mod tests {
    use crate::cli::Cli;
    fn g() { if true { crate::commands::run(); } }
}

fn h() -> crate::z::W { todo!() }
pub(in crate::v) fn i() {}
";
    assert_eq!(paths("src/lib.rs", text), ["10:z::W", "2:x::Y"]);
}

#[test]
fn paths_resolve_to_the_longest_module_prefix() {
    let modules: BTreeMap<Vec<String>, String> =
        ["src/lib.rs", "src/remote/mod.rs", "src/ssh/auth.rs"]
            .iter()
            .map(|f| (module_path(f), f.to_string()))
            .collect();
    let at = |p: &str| {
        resolve(
            &p.split("::").map(str::to_owned).collect::<Vec<_>>(),
            &modules,
        )
    };
    assert_eq!(at("remote::q"), "src/remote/mod.rs");
    assert_eq!(at("ssh::auth::AgentSource"), "src/ssh/auth.rs");
    assert_eq!(at("ssh::Target"), "src/lib.rs");
    assert_eq!(at("main"), "src/lib.rs");
}

#[test]
fn cycles_are_listed_once_each() {
    let graph: BTreeMap<String, BTreeMap<String, usize>> = [
        ("a", vec!["b"]),
        ("b", vec!["a", "c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| {
        (
            k.to_owned(),
            v.into_iter().map(|t| (t.to_owned(), 1)).collect(),
        )
    })
    .collect();
    let (found, capped) = cycles(&graph, 100);
    assert!(!capped);
    assert_eq!(found, [vec!["a", "b"], vec!["a", "b", "c"]]);
}
