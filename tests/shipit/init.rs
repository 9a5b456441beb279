//! `shipit init`: writes files that pass validation, never overwrites.

use crate::support::Project;

#[test]
fn writes_a_config_and_a_unit_that_validate() {
    let p = Project::new();
    let out = p.run(&["init", "--app", "hello"]);
    out.code(0);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .contains("wrote `deploy.yaml` and `deploy/hello.service`"),
        "{}",
        out.stderr
    );
    let yaml = p.read("deploy.yaml");
    assert!(
        yaml.starts_with("# deploy.yaml for hello"),
        "commented: {yaml}"
    );
    assert!(yaml.contains("\napp: hello "));
    let unit = p.read("deploy/hello.service");
    assert!(unit.contains("[Service]") && unit.contains("EnvironmentFile=/opt/hello/current/.env"));
    let out = p.run(&["config", "--json"]);
    out.code(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["app"], "hello");
    assert_eq!(v["service"]["unit_file"], "deploy/hello.service");
    assert_eq!(p.run(&["-e", "production", "config"]).code, 0);
}

#[test]
fn the_app_name_defaults_to_the_directory() {
    let p = Project::new();
    std::fs::create_dir(p.path().join("My Shop")).unwrap();
    let out = p
        .command(&["init"])
        .current_dir(p.path().join("My Shop"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let yaml = std::fs::read_to_string(p.path().join("My Shop/deploy.yaml")).unwrap();
    assert!(yaml.contains("\napp: my-shop "), "{yaml}");
}

#[test]
fn never_overwrites() {
    let p = Project::new();
    p.file("deploy.yaml", "mine\n");
    let out = p.run(&["init", "--app", "hello"]);
    out.code(1);
    insta::assert_snapshot!(out.stderr, @r"
    error: `deploy.yaml` already exists; `shipit init` never overwrites
    hint: move it aside or edit it; `shipit config` checks a deploy.yaml
    ");
    assert_eq!(p.read("deploy.yaml"), "mine\n");
    assert!(!p.exists("deploy"), "nothing else written");
}

#[test]
fn an_existing_unit_file_stops_it_before_anything_is_written() {
    let p = Project::new();
    p.file("deploy/hello.service", "mine\n");
    p.run(&["init", "--app", "hello"]).code(1);
    assert!(!p.exists("deploy.yaml"));
    assert_eq!(p.read("deploy/hello.service"), "mine\n");
}

#[test]
fn refuses_a_bad_app_name() {
    let p = Project::new();
    let out = p.run(&["init", "--app", "Bad Name"]);
    out.code(2);
    assert!(out.stderr.contains("`Bad Name` is not a valid app name"));
    assert!(!p.exists("deploy.yaml"));
}

/// `shipit init` in a project made of `files`: its deploy.yaml, checked by `shipit config`.
fn init_in(files: &[(&str, &str)]) -> (String, String) {
    let p = Project::new();
    for (name, text) in files {
        p.file(name, text);
    }
    let out = p.run(&["init", "--app", "hello"]);
    out.code(0);
    let yaml = p.read("deploy.yaml");
    let config = p.run(&["config", "--json"]);
    config.code(0);
    let v: serde_json::Value = serde_json::from_str(&config.stdout).unwrap();
    assert_eq!(v["app"], "hello", "{yaml}");
    (yaml, out.stderr)
}

#[test]
fn each_kind_of_project_gets_its_build() {
    let cargo = "[package]\nname = \"shop\"\n\n[[bin]]\nname = \"shopd\"\n";
    let (yaml, said) = init_in(&[("Cargo.toml", cargo)]);
    assert!(yaml.contains("\n  - cargo build --release\n"), "{yaml}");
    assert!(
        yaml.contains("include: [\"target/release/shopd\"]"),
        "{yaml}"
    );
    assert!(said.contains("a Cargo project (binary shopd)"), "{said}");
    let (yaml, _) = init_in(&[("Cargo.toml", "[package]\nname = \"shop\"\n")]);
    assert!(
        yaml.contains("include: [\"target/release/shop\"]"),
        "{yaml}"
    );

    let (yaml, _) = init_in(&[("go.mod", "module example.com/acme/api/v2\n\ngo 1.22\n")]);
    assert!(
        yaml.contains("  - CGO_ENABLED=0 GOOS=linux go build -o \"bin/api\" .\n"),
        "{yaml}"
    );
    assert!(yaml.contains("include: [\"bin/api\"]"), "{yaml}");

    let scripts = r#"{"name": "web", "scripts": {"build": "vite build"}}"#;
    let (yaml, _) = init_in(&[("package.json", scripts)]);
    assert!(yaml.contains("  - npm ci\n  - npm run build\n"), "{yaml}");
    assert!(yaml.contains("\"package.json\""), "{yaml}");
    let (yaml, _) = init_in(&[("package.json", r#"{"name": "web"}"#)]);
    assert!(!yaml.contains("npm run build"), "{yaml}");

    let (yaml, _) = init_in(&[("pyproject.toml", "[project]\nname = \"svc\"\n")]);
    assert!(yaml.contains("python3 -m venv"), "{yaml}");

    let (yaml, _) = init_in(&[("Makefile", "all:\n\ttrue\n")]);
    assert!(yaml.contains("\n  - make\n"), "{yaml}");

    let (yaml, said) = init_in(&[]);
    assert!(
        yaml.contains("build:") && yaml.contains("# - make"),
        "{yaml}"
    );
    assert!(!yaml.contains("cargo build"), "{yaml}");
    assert!(said.contains("no known project file"), "{said}");
}
