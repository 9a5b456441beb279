//! `shipit package`: a reproducible artifact, its checksum and manifest, and the refusals.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::process::Command;

use crate::support::{Project, sha256_hex};

const CONFIG: &str = "\
app: hello
build: ['mkdir -p out && echo built > out/hello && chmod 755 out/hello']
package:
  root: .
  include: [out/hello, static/**, config/, link]
  exclude: ['**/*.map']
";

fn project() -> Project {
    let p = Project::new();
    p.file("deploy.yaml", CONFIG)
        .file("static/app.js", "console.log('hi')\n")
        .file("static/app.js.map", "{}\n")
        .file("static/css/site.css", "body{}\n")
        .file("config/app.toml", "x = 1\n")
        .file("src/main.rs", "fn main(){}\n");
    symlink("static/app.js", p.path().join("link")).unwrap();
    p
}

fn untar_list(artifact: &std::path::Path) -> Vec<String> {
    let out = Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(artifact)
        .output()
        .unwrap();
    assert!(out.status.success(), "GNU tar reads it");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn extract(artifact: &std::path::Path, into: &std::path::Path) {
    std::fs::create_dir_all(into).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(artifact)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn builds_then_writes_the_artifact_its_checksum_and_prints_the_path() {
    let p = project();
    let out = p.run(&["package", "--app-version", "1.0.0"]);
    out.code(0);
    assert_eq!(out.stdout, "dist/hello-1.0.0.tar.gz\n");
    let bytes = std::fs::read(p.path().join("dist/hello-1.0.0.tar.gz")).unwrap();
    assert_eq!(
        p.read("dist/hello-1.0.0.tar.gz.sha256"),
        format!("{}  hello-1.0.0.tar.gz\n", sha256_hex(&bytes))
    );
    // `sha256sum -c` agrees, as it would on a server.
    let check = Command::new("sha256sum")
        .args(["-c", "hello-1.0.0.tar.gz.sha256"])
        .current_dir(p.path().join("dist"))
        .output()
        .unwrap();
    assert!(check.status.success());
}

#[test]
fn entries_are_sorted_owned_by_root_dated_from_source_date_epoch_and_filtered() {
    let p = project();
    p.run(&["package", "--app-version", "1"]).code(0);
    let listing = untar_list(&p.path().join("dist/hello-1.tar.gz"));
    let names: Vec<&str> = listing
        .iter()
        .map(|l| l.split_whitespace().nth(5).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            ".shipit/",
            ".shipit/manifest.json",
            "config/",
            "config/app.toml",
            "link",
            "out/",
            "out/hello",
            "static/",
            "static/app.js",
            "static/css/",
            "static/css/site.css"
        ]
    );
    for line in &listing {
        assert!(line.contains(" 0/0 "), "owner 0/0: {line}");
        assert!(
            line.contains("2023-11-14 22:13"),
            "SOURCE_DATE_EPOCH=1700000000: {line}"
        );
    }
    assert!(
        listing
            .iter()
            .any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with("link -> static/app.js")),
        "symlink kept: {listing:?}"
    );
    assert!(
        listing
            .iter()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("out/hello")),
        "mode kept"
    );
}

#[test]
fn the_manifest_lists_every_file_with_its_sha256() {
    let p = project();
    p.git_commit("first");
    p.run(&["package", "--app-version", "1"]).code(0);
    let x = p.path().join("x");
    extract(&p.path().join("dist/hello-1.tar.gz"), &x);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(x.join(".shipit/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["app"], "hello");
    assert_eq!(manifest["version"], "1");
    let commit = String::from_utf8(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(p.path())
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(manifest["commit"], commit.trim());
    let entries = manifest["entries"].as_array().unwrap();
    let files: Vec<&serde_json::Value> = entries.iter().filter(|e| e["type"] == "file").collect();
    assert_eq!(files.len(), 4);
    for f in files {
        let path = f["path"].as_str().unwrap();
        let bytes = std::fs::read(x.join(path)).unwrap();
        assert_eq!(f["sha256"], sha256_hex(&bytes), "{path}");
        assert_eq!(f["size"], bytes.len());
        let mode = std::fs::metadata(x.join(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(f["mode"], format!("{mode:04o}"), "{path}");
    }
    let link = entries.iter().find(|e| e["path"] == "link").unwrap();
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["target"], "static/app.js");
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let p = project();
    p.run(&["package", "--app-version", "1"]).code(0);
    let first = std::fs::read(p.path().join("dist/hello-1.tar.gz")).unwrap();
    // Touch everything: mtimes differ, content does not.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for f in ["static/app.js", "config/app.toml"] {
        let text = p.read(f);
        p.file(f, &text);
    }
    p.run(&["package", "--app-version", "1"]).code(0);
    assert_eq!(
        std::fs::read(p.path().join("dist/hello-1.tar.gz")).unwrap(),
        first,
        "rebuild is byte-identical"
    );
    // Another checkout of the same tree, elsewhere.
    let q = project();
    q.run(&["package", "--app-version", "1"]).code(0);
    assert_eq!(
        std::fs::read(q.path().join("dist/hello-1.tar.gz")).unwrap(),
        first,
        "another directory gives the same bytes"
    );
    // A content change gives another artifact.
    q.file("static/app.js", "console.log('changed')\n");
    q.run(&["package", "--app-version", "1", "--no-build"])
        .code(0);
    assert_ne!(
        std::fs::read(q.path().join("dist/hello-1.tar.gz")).unwrap(),
        first
    );
}

#[test]
fn mtimes_come_from_the_commit_without_source_date_epoch() {
    let p = project();
    p.git_commit("first");
    let out = p
        .command(&["package"])
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap();
    // No tag: `git describe --always` gives the short commit. Untracked build output
    // does not make the tree dirty.
    let short = String::from_utf8(
        Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(p.path())
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(path.trim(), format!("dist/hello-{}.tar.gz", short.trim()));
    let listing = untar_list(&p.path().join(path.trim()));
    assert!(
        listing.iter().all(|l| l.contains("2026-01-02 03:04")),
        "{listing:?}"
    );
}

#[test]
fn no_build_skips_the_build() {
    let p = project();
    p.file("out/hello", "prebuilt\n");
    p.run(&["package", "--no-build", "--app-version", "1"])
        .code(0);
    let x = p.path().join("x");
    extract(&p.path().join("dist/hello-1.tar.gz"), &x);
    assert_eq!(
        std::fs::read_to_string(x.join("out/hello")).unwrap(),
        "prebuilt\n"
    );
}

#[test]
fn large_trees_round_trip_through_gnu_tar() {
    let p = Project::new();
    p.file("deploy.yaml", "app: big\npackage:\n  include: [data]\n");
    // Several compression blocks, text and noise, and a long path name.
    let mut noise = Vec::with_capacity(3 << 20);
    let mut x: u32 = 1;
    for _ in 0..(3 << 20) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    std::fs::create_dir_all(p.path().join("data")).unwrap();
    std::fs::write(p.path().join("data/noise.bin"), &noise).unwrap();
    p.file("data/text.txt", &"shipit deploys things\n".repeat(200_000));
    let long = format!("data/{}/f.txt", "d".repeat(150));
    p.file(&long, "deep\n");
    p.run(&["package", "--no-build", "--app-version", "1"])
        .code(0);
    let x = p.path().join("x");
    extract(&p.path().join("dist/big-1.tar.gz"), &x);
    assert_eq!(std::fs::read(x.join("data/noise.bin")).unwrap(), noise);
    assert_eq!(std::fs::read_to_string(x.join(&long)).unwrap(), "deep\n");
    assert!(
        std::fs::metadata(p.path().join("dist/big-1.tar.gz"))
            .unwrap()
            .len()
            < (3 << 20) + (1 << 20)
    );
}

fn refused(p: &Project, expected_code: i32) -> String {
    let out = p.run(&["package", "--no-build", "--app-version", "1"]);
    out.code(expected_code);
    assert_eq!(out.stdout, "");
    let leftovers: Vec<_> = std::fs::read_dir(p.path().join("dist"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "nothing written to dist/: {leftovers:?}"
    );
    out.stderr
}

#[test]
fn symlinks_that_escape_the_root_are_refused() {
    let p = Project::new();
    p.file(
        "deploy.yaml",
        "app: hello\npackage:\n  root: pkg\n  include: [.]\n",
    );
    p.file("pkg/ok.txt", "ok\n");
    symlink("../../etc/passwd", p.path().join("pkg/escape")).unwrap();
    insta::assert_snapshot!(refused(&p, 1), @"error: `escape` is a symlink to `../../etc/passwd`, which points outside the package root");
    std::fs::remove_file(p.path().join("pkg/escape")).unwrap();
    symlink("/etc/passwd", p.path().join("pkg/abs")).unwrap();
    insta::assert_snapshot!(refused(&p, 1), @"error: `abs` is a symlink to the absolute path `/etc/passwd`; links in a package must be relative and stay inside it");
}

#[test]
fn a_symlinked_directory_is_kept_as_a_link_never_followed() {
    let p = Project::new();
    p.file(
        "deploy.yaml",
        "app: hello\npackage:\n  root: pkg\n  include: [.]\n",
    );
    p.file("pkg/real/a.txt", "a\n");
    symlink("real", p.path().join("pkg/alias")).unwrap();
    p.run(&["package", "--no-build", "--app-version", "1"])
        .code(0);
    let listing = untar_list(&p.path().join("dist/hello-1.tar.gz"));
    assert!(listing.iter().any(|l| l.ends_with("alias -> real")));
    assert!(
        !listing.iter().any(|l| l.contains("alias/a.txt")),
        "{listing:?}"
    );
}

#[test]
fn include_that_matches_nothing_and_missing_root_are_errors() {
    let p = Project::new();
    p.file(
        "deploy.yaml",
        "app: hello\npackage:\n  include: [target/release/hello]\n",
    );
    let err = refused(&p, 1);
    assert!(
        err.starts_with(
            "error: `package.include` entry `target/release/hello` matched nothing under `"
        ),
        "{err}"
    );
    p.file(
        "deploy.yaml",
        "app: hello\npackage:\n  include: ['static/**']\n",
    );
    assert!(refused(&p, 1).contains("entry `static/**` matched nothing"));
    p.file(
        "deploy.yaml",
        "app: hello\npackage:\n  root: nope\n  include: [x]\n",
    );
    assert!(refused(&p, 1).contains("the package root `./nope` cannot be read"));
    p.file("deploy.yaml", "app: hello\n");
    assert!(refused(&p, 1).starts_with("error: `package.include` is empty"));
}

#[test]
fn escaping_include_patterns_are_config_errors() {
    let p = Project::new();
    p.file(
        "deploy.yaml",
        "app: hello\npackage:\n  include: [../secrets, /etc]\n",
    );
    let out = p.run(&["package", "--no-build", "--app-version", "1"]);
    out.code(2);
    insta::assert_snapshot!(out.stderr, @r"
    error: deploy.yaml:3:13: `package.include` entries must be relative paths without `..`; got `../secrets`
    deploy.yaml:3:25: `package.include` entries must be relative paths without `..`; got `/etc`
    ");
}

#[test]
fn names_shipit_reserves_are_refused() {
    let p = Project::new();
    p.file("deploy.yaml", "app: hello\npackage:\n  include: [.]\n");
    p.file(".env", "SECRET=1\n");
    assert!(refused(&p, 1).contains(
        "`.env` is in the package, but `.env` at the top of a release is reserved for shipit"
    ));
}

#[test]
fn an_invalid_config_builds_and_writes_nothing() {
    let p = project();
    p.file(
        "deploy.yaml",
        &CONFIG.replace("app: hello", "app: hello\nkeep_releases: 0"),
    );
    p.run(&["package", "--app-version", "1"]).code(2);
    assert!(!p.exists("out"), "the build did not run");
    assert!(!p.exists("dist"));
}
