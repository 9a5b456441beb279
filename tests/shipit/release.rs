//! The GitHub workflows (CI and release) and the packaging around them. GitHub runs the
//! workflows, not this suite: here they must parse, run on the right events, build what a
//! release promises, and name only scripts that exist. What of a release can run on one
//! machine, scripts/check-release.sh does (`.ci/run` runs it). actionlint, when it is on
//! PATH, checks the workflows further; the suite never downloads it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Value {
    serde_saphyr::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

/// Every workflow file: the repository's own and the example users copy.
fn workflow_files() -> Vec<String> {
    let mut files = Vec::new();
    for dir in [".github/workflows", "examples/github-actions"] {
        for entry in std::fs::read_dir(repo(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".yml") || name.ends_with(".yaml") {
                files.push(format!("{dir}/{name}"));
            }
        }
    }
    files.sort();
    assert!(
        files.len() >= 3,
        "ci.yml, release.yml, the example: {files:?}"
    );
    files
}

/// The steps of every job, in file order.
fn steps(workflow: &Value) -> Vec<&Value> {
    let jobs = workflow["jobs"].as_object().expect("jobs");
    jobs.values()
        .flat_map(|job| job["steps"].as_array().expect("every job has steps"))
        .collect()
}

fn job_steps<'a>(workflow: &'a Value, job: &str) -> &'a [Value] {
    workflow["jobs"][job]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("jobs.{job}.steps"))
}

/// The `run:` scripts of a job, joined.
fn job_runs(workflow: &Value, job: &str) -> String {
    job_steps(workflow, job)
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn job_uses<'a>(workflow: &'a Value, job: &str) -> Vec<&'a str> {
    job_steps(workflow, job)
        .iter()
        .filter_map(|s| s["uses"].as_str())
        .collect()
}

#[test]
fn the_release_workflow_runs_on_version_tags_only() {
    let wf = yaml(".github/workflows/release.yml");
    let on = wf["on"].as_object().expect("on:");
    assert_eq!(
        on.keys().collect::<Vec<_>>(),
        ["push"],
        "only a push starts it"
    );
    let push = on["push"].as_object().unwrap();
    assert_eq!(
        push.keys().collect::<Vec<_>>(),
        ["tags"],
        "a tag push, no branch"
    );
    assert_eq!(push["tags"], serde_json::json!(["v*"]));
    assert_eq!(
        wf["permissions"],
        serde_json::json!({"contents": "read"}),
        "read-only unless a job asks for more"
    );
    // The tag must name Cargo.toml's version before anything is built.
    assert!(job_runs(&wf, "version").contains("cargo pkgid"));
    assert_eq!(wf["jobs"]["build"]["needs"], "version");
}

#[test]
fn the_release_builds_static_linux_and_macos_binaries() {
    let wf = yaml(".github/workflows/release.yml");
    let include = wf["jobs"]["build"]["strategy"]["matrix"]["include"]
        .as_array()
        .expect("jobs.build.strategy.matrix.include");
    let mut targets: Vec<&str> = include
        .iter()
        .map(|m| m["target"].as_str().expect("target"))
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            "aarch64-apple-darwin",
            "aarch64-unknown-linux-musl",
            "x86_64-apple-darwin",
            "x86_64-unknown-linux-musl",
        ]
    );
    for m in include {
        assert!(m["os"].is_string(), "every target names its runner: {m}");
    }
    let runs = job_runs(&wf, "build");
    assert!(runs.contains("cargo build --locked --release --target \"$TARGET\""));
    assert!(
        runs.contains("statically linked"),
        "the Linux binaries are checked to be static"
    );
    assert!(
        job_uses(&wf, "build").contains(&"actions/upload-artifact@v6"),
        "the binaries go to the package job"
    );
}

#[test]
fn the_release_publishes_tarballs_debs_sboms_checksums_and_attestations() {
    let wf = yaml(".github/workflows/release.yml");
    let package = &wf["jobs"]["package"];
    assert_eq!(package["needs"], serde_json::json!(["version", "build"]));
    assert_eq!(package["permissions"]["contents"], "write");
    assert_eq!(package["permissions"]["id-token"], "write");
    assert_eq!(package["permissions"]["attestations"], "write");
    let runs = job_runs(&wf, "package");
    for needed in [
        "scripts/dist-assets.sh dist/assets",
        "scripts/dist-tarball.sh \"$VERSION\" \"$target\"",
        "cargo deb --no-build",
        "cargo cyclonedx --format json",
        "sha256sum -- *.tar.gz *.deb *.cdx.json >SHA256SUMS",
        "gh release create \"$GITHUB_REF_NAME\" --verify-tag",
        "dist/SHA256SUMS",
    ] {
        assert!(
            runs.contains(needed),
            "the package job does not run `{needed}`"
        );
    }
    let attest = job_steps(&wf, "package")
        .iter()
        .find(|s| s["uses"] == "actions/attest-build-provenance@v3")
        .expect("an attest-build-provenance step");
    let subjects = attest["with"]["subject-path"].as_str().unwrap();
    for s in ["dist/*.tar.gz", "dist/*.deb", "dist/SHA256SUMS"] {
        assert!(
            subjects.lines().any(|l| l.trim() == s),
            "{s} is not attested"
        );
    }
}

/// Every repository path a `run:` step names (`scripts/x.sh`, `.ci/run`, ...) exists, and
/// a script run by its path is executable.
#[test]
fn every_script_a_workflow_runs_exists() {
    const DIRS: [&str; 6] = ["scripts/", ".ci/", "bench/", "fuzz/", "tests/", "examples/"];
    let mut named = 0;
    for file in workflow_files() {
        let wf = yaml(&file);
        for run in steps(&wf).iter().filter_map(|s| s["run"].as_str()) {
            for line in run.lines() {
                let words: Vec<&str> = line
                    .split(|c: char| c.is_whitespace() || "\"';|&()<>".contains(c))
                    .filter(|w| !w.is_empty())
                    .collect();
                for (i, word) in words.iter().enumerate() {
                    if !DIRS.iter().any(|d| word.starts_with(d)) {
                        continue;
                    }
                    named += 1;
                    let path = repo(word);
                    assert!(
                        path.is_file(),
                        "{file}: `{line}` names {word}, which is not a file"
                    );
                    let by_interpreter = i > 0 && matches!(words[i - 1], "bash" | "sh" | "python3");
                    if !by_interpreter {
                        use std::os::unix::fs::PermissionsExt;
                        let mode = path.metadata().unwrap().permissions().mode();
                        assert!(
                            mode & 0o111 != 0,
                            "{file} runs {word}, which is not executable"
                        );
                    }
                }
            }
        }
    }
    assert!(named >= 2, "the release workflow runs the dist scripts");
}

#[test]
fn actions_are_pinned_to_a_major_version() {
    for file in workflow_files() {
        let wf = yaml(&file);
        for uses in steps(&wf).iter().filter_map(|s| s["uses"].as_str()) {
            let (action, version) = uses.split_once('@').expect("owner/repo@version");
            let major = version
                .strip_prefix('v')
                .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()));
            // rust-toolchain's refs are toolchains: `stable`, or the MSRV `1.89`.
            let toolchain = action == "dtolnay/rust-toolchain"
                && (version == "stable" || version.split('.').all(|p| p.parse::<u32>().is_ok()));
            assert!(
                major || toolchain,
                "{file}: `{uses}` is not pinned to a major version"
            );
        }
    }
}

#[test]
fn ci_runs_the_suite_as_root_and_the_supply_chain_checks() {
    let ci = yaml(".github/workflows/ci.yml");
    let test = job_runs(&ci, "test");
    let line = test
        .lines()
        .find(|l| l.contains("cargo test --locked"))
        .expect("the test job runs cargo test --locked");
    assert!(
        line.trim_start().starts_with("sudo -E env \"PATH=$PATH\""),
        "the e2e tier needs root: {line}"
    );
    // The packages the e2e tier needs are those .ci/run installs.
    let ci_run = read(".ci/run");
    for pkg in ["systemd-container", "debootstrap", "openssh-server", "zstd"] {
        assert!(test.contains(pkg) && ci_run.contains(pkg), "{pkg}");
    }
    let chain = job_runs(&ci, "supply-chain");
    assert!(
        chain.lines().any(|l| l.trim() == "cargo deny check"),
        "every check, advisories included"
    );
    assert!(ci_run.contains("cargo deny check bans licenses sources"));
    assert!(ci_run.contains("scripts/check-release.sh"));
    // Cargo.toml's rust-version is the toolchain the msrv job builds with.
    let manifest = read("Cargo.toml");
    let msrv = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version")
        .trim_matches('"');
    assert!(
        job_uses(&ci, "msrv").contains(&format!("dtolnay/rust-toolchain@{msrv}").as_str()),
        "the msrv job builds with {msrv}"
    );
}

#[test]
fn the_deny_config_covers_bans_sources_and_explains_each_ignored_advisory() {
    let deny = read("deny.toml");
    for needed in [
        "[bans]",
        "multiple-versions = \"warn\"",
        "[sources]",
        "unknown-registry = \"deny\"",
        "unknown-git = \"deny\"",
        "[licenses]",
        "\"MIT\"",
        "\"Apache-2.0\"",
    ] {
        assert!(deny.contains(needed), "deny.toml lacks {needed}");
    }
    let security = read("SECURITY.md");
    for line in deny.lines().filter(|l| l.contains("id = \"RUSTSEC-")) {
        assert!(
            line.contains("reason = "),
            "an ignore without a reason: {line}"
        );
        let id = line.split('"').nth(1).unwrap();
        assert!(security.contains(id), "SECURITY.md does not explain {id}");
    }
}

#[test]
fn the_crate_is_licensed_and_installable_under_its_own_name() {
    let manifest = read("Cargo.toml");
    assert!(manifest.contains("\nname = \"shipit-deploy\"\n"));
    assert!(manifest.contains("\nlicense = \"MIT OR Apache-2.0\"\n"));
    for file in ["LICENSE-MIT", "LICENSE-APACHE"] {
        assert!(read(file).len() > 1000, "{file}");
        assert!(
            manifest.contains(&format!("\"/{file}\"")),
            "{file} is in the package"
        );
    }
    assert!(read("LICENSE-MIT").contains("Copyright (c) the shipit authors"));
    let readme = read("README.md");
    assert!(readme.contains("cargo install --locked shipit-deploy"));
    assert!(readme.contains("sha256sum -c --ignore-missing SHA256SUMS"));
}

#[test]
fn the_workflows_pass_actionlint_when_it_is_installed() {
    let Ok(version) = Command::new("actionlint").arg("-version").output() else {
        eprintln!("actionlint is not on PATH: the workflows were only parsed");
        return;
    };
    eprintln!(
        "actionlint {}",
        String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("")
    );
    let out = Command::new("actionlint")
        .arg("-no-color")
        .args(workflow_files())
        .current_dir(repo("."))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "actionlint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
