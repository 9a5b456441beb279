//! The docs and examples are part of the product: they must parse, validate, and cover
//! every key.

use std::path::Path;

use crate::support::Project;

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn deploy_example_yaml_validates_in_every_environment() {
    let p = Project::new();
    std::fs::copy(repo("deploy.example.yaml"), p.path().join("deploy.yaml")).unwrap();
    std::fs::create_dir_all(p.path().join("deploy")).unwrap();
    std::fs::write(p.path().join("deploy/hello.service"), "[Service]\n").unwrap();
    let mut p = p;
    p.env("DATABASE_URL", "postgres://u:p@db/hello");
    for env in ["staging", "production"] {
        let out = p.run(&["-e", env, "config", "--json"]);
        out.code(0);
    }
}

#[test]
fn the_configuration_reference_covers_every_key() {
    let doc = std::fs::read_to_string(repo("docs/configuration.md")).unwrap();
    let missing: Vec<&str> = shipit::config::raw::ALL_KEYS
        .iter()
        .copied()
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not document: {missing:?}"
    );
}

#[test]
fn the_readme_test_command_is_the_one_ci_runs() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let ci = std::fs::read_to_string(repo(".ci/run")).unwrap();
    assert!(
        readme.contains("cargo test --locked"),
        "README names the test command"
    );
    assert!(ci.contains("cargo test --locked"), ".ci/run runs it");
}

#[test]
fn the_example_apps_config_validates() {
    let p = Project::new();
    let out = p.run(&[
        "-c",
        repo("examples/hello/deploy.yaml").to_str().unwrap(),
        "config",
        "--json",
    ]);
    out.code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["app"], "hello");
    assert_eq!(v["health"]["http"]["url"], "http://127.0.0.1:8080/healthz");
    assert!(
        v["shared"]["dirs"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
    );
    assert!(
        v["hooks"]["before_switch"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
    );
}

#[test]
fn the_operations_guide_explains_every_exit_code() {
    let doc = std::fs::read_to_string(repo("docs/operations.md")).unwrap();
    for code in 0..=6 {
        assert!(
            doc.contains(&format!("| {code} |")),
            "docs/operations.md has no row for exit code {code}"
        );
    }
    for command in [
        "shipit deploy",
        "shipit rollback",
        "shipit status",
        "shipit unlock",
        "shipit check",
    ] {
        assert!(
            doc.contains(command),
            "docs/operations.md does not mention `{command}`"
        );
    }
}

#[test]
fn the_github_actions_example_is_valid_and_calls_flags_that_exist() {
    use clap::Parser;
    let text = std::fs::read_to_string(repo("examples/github-actions/deploy.yml")).unwrap();
    let workflow: serde_json::Value = serde_saphyr::from_str(&text).expect("valid YAML");
    assert!(
        workflow["on"]["push"]["branches"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b == "main")
    );
    let steps = workflow["jobs"]["deploy"]["steps"]
        .as_array()
        .expect("jobs.deploy.steps");
    let mut calls = 0;
    for run in steps.iter().filter_map(|s| s["run"].as_str()) {
        for line in run
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("shipit "))
        {
            let words: Vec<&str> = line
                .split_whitespace()
                .take_while(|w| !w.starts_with('>'))
                .collect();
            if let Err(e) = shipit::cli::Cli::try_parse_from(&words) {
                panic!("`{line}` is not a valid shipit command line: {e}");
            }
            calls += 1;
        }
    }
    assert!(calls >= 2, "the workflow runs shipit check and deploy");
    // shipit itself: a pinned release binary, its checksum checked, not a source build.
    let pinned = workflow["env"]["SHIPIT_VERSION"]
        .as_str()
        .expect("env.SHIPIT_VERSION at the top");
    assert!(
        pinned.split('.').count() == 3 && pinned.split('.').all(|n| n.parse::<u32>().is_ok()),
        "SHIPIT_VERSION is a version: {pinned}"
    );
    let install = steps
        .iter()
        .find(|s| s["name"] == "Install shipit")
        .and_then(|s| s["run"].as_str())
        .expect("an Install shipit step");
    for needed in [
        "x86_64-unknown-linux-musl",
        "SHA256SUMS",
        "sha256sum -c --ignore-missing",
    ] {
        assert!(install.contains(needed), "Install shipit lacks {needed}");
    }
    assert!(!install.contains("cargo install"), "no build from source");
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    assert!(
        readme.contains("examples/github-actions/deploy.yml"),
        "the README links the workflow"
    );
}
