//! What kind of project `shipit init` runs in, from the files at its root: the build
//! steps and the package that deploy.yaml starts with.

use std::path::Path;

/// The build and package `init` writes for a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// What was recognized, for the message: `a Cargo project (binary hello)`.
    pub found: String,
    /// deploy.yaml's `build:` block, indented list lines or a commented placeholder.
    pub build: String,
    /// `package.include`'s flow list.
    pub include: String,
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// `name = "value"` in TOML section `section` (`[[bin]]`'s first, `[package]`...).
fn toml_name(text: &str, section: &str) -> Option<String> {
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            if inside {
                return None;
            }
            inside = line == section;
            continue;
        }
        let Some(rest) = line.strip_prefix("name") else {
            continue;
        };
        let Some(value) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        if inside {
            let v = value.trim().trim_matches(|c| c == '"' || c == '\'');
            return (!v.is_empty()).then(|| v.to_owned());
        }
    }
    None
}

/// The module's last path element, skipping a `/vN` major version suffix.
fn go_binary(go_mod: &str) -> Option<String> {
    let module = go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("module "))?
        .trim()
        .trim_matches('"');
    let mut parts = module.rsplit('/');
    let last = parts.next()?;
    let is_major =
        last.len() > 1 && last.starts_with('v') && last[1..].chars().all(|c| c.is_ascii_digit());
    let name = if is_major { parts.next()? } else { last };
    (!name.is_empty()).then(|| name.to_owned())
}

pub fn detect(dir: &Path, app: &str) -> Recipe {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    if let Some(cargo) = read("Cargo.toml") {
        let bin = toml_name(&cargo, "[[bin]]")
            .or_else(|| toml_name(&cargo, "[package]"))
            .unwrap_or_else(|| app.to_owned());
        return Recipe {
            found: format!("a Cargo project (binary {bin})"),
            build: "  - cargo build --release\n".into(),
            include: format!("[{}]", quoted(&format!("target/release/{bin}"))),
        };
    }
    if let Some(go_mod) = read("go.mod") {
        let bin = go_binary(&go_mod).unwrap_or_else(|| app.to_owned());
        let out = format!("bin/{bin}");
        return Recipe {
            found: format!("a Go module (binary {bin})"),
            build: format!(
                "  - CGO_ENABLED=0 GOOS=linux go build -o {} .\n",
                quoted(&out)
            ),
            include: format!("[{}]", quoted(&out)),
        };
    }
    if let Some(package) = read("package.json") {
        let json: serde_json::Value = serde_json::from_str(&package).unwrap_or_default();
        let builds = json["scripts"]["build"].is_string();
        let build = if builds {
            "  - npm ci\n  - npm run build\n"
        } else {
            "  - npm ci --omit=dev\n"
        };
        return Recipe {
            found: format!(
                "a Node.js project ({})",
                if builds {
                    "with a build script"
                } else {
                    "no build script"
                }
            ),
            build: build.into(),
            include: "[\"package.json\", \"package-lock.json\", \"node_modules\", \"dist\", \
                      \"src\"]"
                .into(),
        };
    }
    if read("pyproject.toml").is_some() {
        return Recipe {
            found: "a Python project (pyproject.toml)".into(),
            build: "  # The hosts need the same Python; the venv is built here, for this \
                    machine's\n  # architecture: build on a Linux machine like the hosts.\n  \
                    - python3 -m venv --clear .venv\n  - .venv/bin/pip install .\n"
                .into(),
            include: "[\"pyproject.toml\", \"src\", \".venv\"]".into(),
        };
    }
    if dir.join("Makefile").is_file() || dir.join("makefile").is_file() {
        return Recipe {
            found: "a Makefile".into(),
            build: "  - make\n".into(),
            include: format!("[{}]", quoted(&format!("bin/{app}"))),
        };
    }
    Recipe {
        found: "no known project file (Cargo.toml, go.mod, package.json, pyproject.toml, \
                Makefile)"
            .into(),
        build: "  []\n  # - make            (your build command: it must leave the files \
                below in place)\n"
            .into(),
        include: format!("[{}]", quoted(&format!("bin/{app}"))),
    }
}

/// A hint when this machine's binaries may not run on the hosts (Linux servers, most
/// often x86_64): None on x86_64 Linux.
pub fn platform_hint() -> Option<String> {
    let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
    if os == "linux" && arch == "x86_64" {
        return None;
    }
    Some(format!(
        "this machine is {os}/{arch}: what it builds runs on hosts of the same OS and \
         architecture only; build for the hosts' (check `shipit check`'s arch column), e.g. \
         `cargo build --release --target x86_64-unknown-linux-musl`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_cargo_and_go() {
        let cargo = "[package]\nname = \"shop\"\n\n[[bin]]\nname = \"shopd\"\npath = \"x\"\n";
        assert_eq!(toml_name(cargo, "[[bin]]").as_deref(), Some("shopd"));
        assert_eq!(toml_name(cargo, "[package]").as_deref(), Some("shop"));
        assert_eq!(
            toml_name("[dependencies]\nname = \"x\"\n", "[package]"),
            None
        );
        assert_eq!(
            go_binary("module example.com/acme/api/v2\n\ngo 1.22\n").as_deref(),
            Some("api")
        );
        assert_eq!(go_binary("module hello\n").as_deref(), Some("hello"));
    }
}
