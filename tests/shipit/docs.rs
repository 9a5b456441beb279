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

#[test]
fn every_field_of_config_json_is_documented() {
    let mut p = Project::new();
    std::fs::copy(repo("deploy.example.yaml"), p.path().join("deploy.yaml")).unwrap();
    std::fs::create_dir_all(p.path().join("deploy")).unwrap();
    std::fs::write(p.path().join("deploy/hello.service"), "[Service]\n").unwrap();
    p.env("DATABASE_URL", "postgres://u:p@db/hello");
    let out = p.run(&["-e", "production", "config", "--json"]);
    out.code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let json_md = std::fs::read_to_string(repo("docs/json.md")).unwrap();
    // A key is deploy.yaml's (docs/configuration.md, kept complete by the test above), or
    // one docs/json.md names.
    fn walk(v: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    let full = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.push((full.clone(), k.clone()));
                    // `env` is the app's own names.
                    if full != "env" {
                        walk(child, &full, out);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, path, out)),
            _ => {}
        }
    }
    let mut keys = Vec::new();
    walk(&v, "", &mut keys);
    let yaml_key = |path: &str| {
        shipit::config::raw::ALL_KEYS
            .iter()
            .any(|k| *k == path || k.starts_with(&format!("{path}.")))
    };
    let missing: Vec<&String> = keys
        .iter()
        .filter(|(path, key)| !yaml_key(path) && !json_md.contains(&format!("`{key}`")))
        .map(|(path, _)| path)
        .collect();
    assert!(
        missing.is_empty(),
        "undocumented in config --json: {missing:?}"
    );
    assert!(out.stdout.starts_with("{\n  \"schema_version\": 1,\n"));
}

#[test]
fn the_json_reference_is_linked() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let ops = std::fs::read_to_string(repo("docs/operations.md")).unwrap();
    assert!(
        readme.contains("(docs/json.md)"),
        "README links docs/json.md"
    );
    assert!(
        ops.contains("(json.md)"),
        "docs/operations.md links json.md"
    );
}

/// The repository stands alone: nothing a user reads points outside it (a path that
/// climbs out of the checkout, such as the planning notes the project started from).
#[test]
fn no_doc_points_outside_the_repository() {
    let mut docs = vec![
        "README.md",
        "RELIABILITY.md",
        "SECURITY.md",
        "BENCHMARKS.md",
        "deploy.example.yaml",
    ]
    .into_iter()
    .map(repo)
    .collect::<Vec<_>>();
    for entry in std::fs::read_dir(repo("docs")).unwrap() {
        docs.push(entry.unwrap().path());
    }
    let mut outside = Vec::new();
    for doc in docs {
        let text = std::fs::read_to_string(&doc).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if line.contains("../shared") || line.contains("SPEC.md") {
                outside.push(format!("{}:{}: {line}", doc.display(), n + 1));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "docs pointing outside the repository:\n{}",
        outside.join("\n")
    );
}

#[test]
fn the_reference_is_linked_from_the_readme_and_the_guide() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let ops = std::fs::read_to_string(repo("docs/operations.md")).unwrap();
    assert!(readme.contains("docs/reference.md"));
    assert!(ops.contains("(reference.md)"));
    assert!(ops.contains("### When the deployer vanishes: the guard"));
}
