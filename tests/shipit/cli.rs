//! The command line itself: help, version, completions, man page, usage errors.

use crate::support::Project;

#[test]
fn every_command_has_help_worth_reading() {
    let p = Project::new();
    for cmd in [
        "init",
        "config",
        "check",
        "build",
        "package",
        "deploy",
        "rollback",
        "status",
        "unlock",
        "completions",
        "man",
    ] {
        let out = p.run(&[cmd, "--help"]);
        out.code(0);
        assert!(
            out.stdout.lines().count() >= 8,
            "{cmd} --help is too thin:\n{}",
            out.stdout
        );
        assert!(
            out.stdout.contains("--config <FILE>"),
            "global flags shown for {cmd}"
        );
    }
    let out = p.run(&["--help"]);
    out.code(0);
    for text in [
        "init",
        "config",
        "build",
        "package",
        "completions",
        "--env <ENV>",
        "--log-format",
        "--no-progress",
        "Exit codes",
    ] {
        assert!(out.stdout.contains(text), "missing {text}:\n{}", out.stdout);
    }
}

#[test]
fn version_includes_the_commit() {
    let out = Project::new().run(&["--version"]);
    out.code(0);
    let v = out.stdout.trim();
    let re_ok =
        v.starts_with(&format!("shipit {} (", env!("CARGO_PKG_VERSION"))) && v.ends_with(')');
    assert!(re_ok, "{v}");
    let commit = &v[v.find('(').unwrap() + 1..v.len() - 1];
    assert!(
        commit == "unknown commit"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{v}"
    );
}

#[test]
fn completions_and_man_page() {
    let p = Project::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = p.run(&["completions", shell]);
        out.code(0);
        assert!(
            out.stdout.contains("shipit") && out.stdout.contains("package"),
            "{shell}"
        );
    }
    let out = p.run(&["man"]);
    out.code(0);
    assert!(
        out.stdout.starts_with(".ie \\n(.g .ds Aq") || out.stdout.contains(".TH shipit 1"),
        "{}",
        &out.stdout[..200.min(out.stdout.len())]
    );
    assert!(out.stdout.contains(".TH shipit 1"));
}

#[test]
fn usage_errors_exit_2() {
    let p = Project::new();
    assert_eq!(p.run(&["frobnicate"]).code, 2);
    assert_eq!(p.run(&["config", "--bogus"]).code, 2);
    assert_eq!(p.run(&["-q", "-v", "config"]).code, 2);
    assert_eq!(p.run(&["--log-format", "xml", "config"]).code, 2);
    assert_eq!(p.run(&[]).code, 2);
}

#[test]
fn host_lists_parse() {
    // `--hosts a,b` reaches config resolution (which then names the unknown host).
    let p = Project::new();
    p.file("deploy.yaml", "app: hello\nhosts: [a.example.com]\n");
    for cmd in [
        &["deploy", "--hosts", "x,y", "--no-build"][..],
        &["rollback", "--hosts", "x"],
        &["unlock", "--hosts", "x,y"],
    ] {
        let out = p.run(cmd);
        out.code(2);
        assert!(
            out.stderr.contains("unknown host(s) in --hosts: x"),
            "{cmd:?}: {}",
            out.stderr
        );
    }
}
