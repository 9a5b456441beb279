//! `shipit build`: steps run with `sh -c` in the config's directory, in order, streaming.

use crate::support::Project;

#[test]
fn steps_run_in_order_in_the_config_dir_with_app_and_version() {
    let p = Project::new();
    p.file(
        "app/deploy.yaml",
        "app: hello\nbuild:\n  - echo \"$SHIPIT_APP $SHIPIT_VERSION $(pwd)\" > built.txt\n  - echo step-two-out; echo step-two-err >&2\n",
    );
    let out = p.run(&["-c", "app/deploy.yaml", "build", "--app-version", "1.2.3"]);
    out.code(0);
    let dir = std::fs::canonicalize(p.path().join("app")).unwrap();
    assert_eq!(
        p.read("app/built.txt"),
        format!("hello 1.2.3 {}\n", dir.display())
    );
    // Build output is a log: stderr. stdout stays clean for data.
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.contains("step-two-out\n") && out.stderr.contains("step-two-err\n"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("build step 2/2: `echo step-two-out; echo step-two-err >&2`")
    );
}

#[test]
fn the_version_comes_from_git_describe() {
    let p = Project::new();
    p.file(
        "deploy.yaml",
        "app: hello\nbuild: ['echo $SHIPIT_VERSION > v.txt']\n",
    );
    p.file(".gitignore", "v.txt\n");
    p.git_commit("first");
    p.git(&["tag", "v1.4.0"]);
    p.run(&["build"]).code(0);
    assert_eq!(p.read("v.txt"), "v1.4.0\n");
}

#[test]
fn a_failing_step_stops_the_build_and_names_itself() {
    let p = Project::new();
    p.file(
        "deploy.yaml",
        "app: hello\nbuild:\n  - 'true'\n  - exit 3\n  - touch never.txt\n",
    );
    let out = p.run(&["build", "--app-version", "1"]);
    out.code(1);
    assert!(!p.exists("never.txt"));
    insta::with_settings!({filters => vec![(r"done in \d+\.\ds", "done in [time]")]}, {
    insta::assert_snapshot!(out.stderr, @r"
    build step 1/3: `true`
    build step 1/3 done in [time]
    build step 2/3: `exit 3`
    error: build step 2/3 (`exit 3`) failed with exit status 3
    hint: fix the build and run it again; nothing was packaged or deployed
    ");
    });
}

#[test]
fn no_version_outside_git_says_what_to_do() {
    let p = Project::new();
    p.file("deploy.yaml", "app: hello\nbuild: ['touch ran']\n");
    let out = p.run(&["build"]);
    out.code(2);
    assert!(!p.exists("ran"));
    assert!(
        out.stderr
            .contains("is not in a git repository with a commit"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint: pass `--app-version VERSION`"));
}

#[test]
fn an_invalid_config_runs_nothing() {
    let p = Project::new();
    p.file(
        "deploy.yaml",
        "app: hello\nbuild: ['touch ran']\nkeep_releases: 1\n",
    );
    p.run(&["build", "--app-version", "1"]).code(2);
    assert!(!p.exists("ran"));
}

#[test]
fn quiet_silences_build_output_but_not_errors() {
    let p = Project::new();
    p.file(
        "deploy.yaml",
        "app: hello\nbuild: ['echo chatty', 'exit 1']\n",
    );
    let out = p.run(&["-q", "build", "--app-version", "1"]);
    out.code(1);
    assert!(!out.stderr.contains("chatty"));
    assert!(out.stderr.contains("error: build step 2/2"));
}

#[test]
fn json_log_format_gives_one_object_per_line() {
    let p = Project::new();
    p.file("deploy.yaml", "app: hello\nbuild: ['echo out-line']\n");
    let out = p.run(&["--log-format", "json", "build", "--app-version", "1"]);
    out.code(0);
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "out-line" && l["source"] == "build"),
        "{}",
        out.stderr
    );
    assert!(lines.iter().all(|l| l["level"] == "info"));
}
