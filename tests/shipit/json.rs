//! The JSON contract (docs/json.md) as the binary keeps it: the document a failed run
//! still prints, the one shape of a `--log-format json` line, and color only at a
//! terminal.

use crate::support::{Output, Project};

fn document(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON document ({e}):\n{}", out.stdout))
}

/// Every stderr line is a JSON object with `level`, `time` and `message`.
fn log_lines(out: &Output) -> Vec<serde_json::Value> {
    out.stderr
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            for key in ["level", "time", "message"] {
                assert!(v[key].is_string(), "`{key}` in {l}");
            }
            let time = v["time"].as_str().unwrap();
            assert!(
                time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
                "{time}"
            );
            v
        })
        .collect()
}

#[test]
fn a_run_that_fails_before_its_summary_still_prints_a_document() {
    let p = Project::new();
    // No deploy.yaml at all.
    for cmd in ["deploy", "rollback", "status", "check", "config"] {
        let out = p.run(&[cmd, "--json"]);
        out.code(2);
        assert!(
            out.stdout.starts_with("{\n  \"schema_version\": 1,\n"),
            "{cmd}: schema_version first:\n{}",
            out.stdout
        );
        let v = document(&out);
        assert_eq!(v["ok"], false);
        assert_eq!(v["exit_code"], 2);
        assert_eq!(v["action"], cmd);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("deploy.yaml: no such file"),
            "{v:#}"
        );
        assert!(out.stderr.contains("error: deploy.yaml: no such file"));
    }
    // Without --json, stdout stays empty.
    let out = p.run(&["deploy"]);
    out.code(2);
    assert_eq!(out.stdout, "");

    // An invalid file: every problem, with its place.
    p.file(
        "deploy.yaml",
        "app: hello\nhosts: [a.example.com]\nkeep_release: 3\n",
    );
    let out = p.run(&["config", "--json"]);
    out.code(2);
    let v = document(&out);
    let problem = &v["error"]["problems"][0];
    assert_eq!(problem["file"], "deploy.yaml");
    assert_eq!(problem["line"], 3);
    assert_eq!(problem["column"], 1);
    assert_eq!(problem["hint"], "did you mean `keep_releases`?");

    // An unknown host: the hint is its own field.
    p.file("deploy.yaml", "app: hello\nhosts: [a.example.com]\n");
    let out = p.run(&["deploy", "--json", "--no-build", "--hosts", "zz"]);
    out.code(2);
    let v = document(&out);
    assert_eq!(v["error"]["message"], "unknown host(s) in --hosts: zz");
    assert_eq!(v["error"]["hint"], "hosts here: a.example.com");
    assert_eq!(v["error"]["problems"], serde_json::Value::Null);

    // A usage error prints no document: the command line did not parse.
    let out = p.run(&["deploy", "--json", "--parallel", "0"]);
    out.code(2);
    assert_eq!(out.stdout, "");
    // A dry run prints its plan as text, never a document; neither does it when it fails.
    let out = p.run(&["deploy", "--json", "--dry-run", "--hosts", "zz"]);
    out.code(2);
    assert_eq!(out.stdout, "");
}

#[test]
fn the_error_document_and_its_log_lines_are_scrubbed() {
    let mut p = Project::new();
    p.file(
        "deploy.yaml",
        "app: hello\nhosts: [127.0.0.1]\nenv: {TOKEN: \"${TOKEN}\"}\n",
    );
    p.env("TOKEN", "tok\"en-9d8c7b");
    // The artifact's path carries the secret into the error message.
    let out = p.run(&[
        "--log-format",
        "json",
        "deploy",
        "--json",
        "--artifact",
        "dist/tok\"en-9d8c7b.tar.gz",
    ]);
    out.code(2);
    assert!(!out.stdout.contains("9d8c7b"), "{}", out.stdout);
    assert!(!out.stderr.contains("9d8c7b"), "{}", out.stderr);
    let v = document(&out);
    assert_eq!(
        v["error"]["message"].as_str().unwrap(),
        "refusing `dist/[redacted].tar.gz`: cannot read `dist/[redacted].tar.gz`: \
         No such file or directory (os error 2)"
    );
    let lines = log_lines(&out);
    let error = lines.iter().find(|l| l["level"] == "error").unwrap();
    assert_eq!(error["message"], v["error"]["message"]);
    assert_eq!(error["hint"], v["error"]["hint"]);
}

#[test]
fn every_json_log_line_has_one_shape_debug_lines_included() {
    let p = Project::new();
    p.file("deploy.yaml", "app: hello\nhosts: [a.example.com]\n");
    // Without -v: no debug line.
    let out = p.run(&["--log-format", "json", "config"]);
    out.code(0);
    assert!(log_lines(&out).iter().all(|l| l["level"] != "debug"));
    // -v: shipit's own, with where it comes from and its fields.
    let out = p.run(&["-v", "--log-format", "json", "config"]);
    out.code(0);
    let lines = log_lines(&out);
    let debug = lines
        .iter()
        .find(|l| l["level"] == "debug")
        .unwrap_or_else(|| panic!("a debug line in:\n{}", out.stderr));
    assert_eq!(debug["target"], "shipit::settings");
    assert_eq!(debug["message"], "reading the configuration");
    assert_eq!(debug["fields"]["file"], "deploy.yaml");
    // -q: nothing but errors.
    let out = p.run(&["-q", "--log-format", "json", "deploy", "--hosts", "x"]);
    out.code(2);
    let lines = log_lines(&out);
    assert!(!lines.is_empty() && lines.iter().all(|l| l["level"] == "error"));
    // A bad SHIPIT_LOG is said, and -v's filter used.
    let mut p = p;
    p.env("SHIPIT_LOG", "shipit=loud");
    let out = p.run(&["-v", "--log-format", "json", "config"]);
    out.code(0);
    let lines = log_lines(&out);
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "warn" && l["message"].as_str().unwrap().contains("SHIPIT_LOG")),
        "{}",
        out.stderr
    );
    assert!(lines.iter().any(|l| l["level"] == "debug"));
}

/// Runs shipit with stderr on a new pseudo-terminal; returns what it wrote there.
fn on_a_terminal(p: &Project, args: &[&str]) -> String {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two fds we then own; no name, termios or size is passed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both fds are fresh and owned by nothing else.
    let (mut master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    };
    let mut cmd = p.command(args);
    cmd.stdout(std::process::Stdio::null()).stderr(slave);
    let status = cmd.status().unwrap();
    // The child is gone and the command dropped with its copy: reads end with EIO.
    drop(cmd);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert!(status.success(), "{}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn colors_only_at_a_terminal_and_never_with_no_color() {
    let mut p = Project::new();
    p.file("deploy.yaml", "app: hello\nhosts: [a.example.com]\n");
    let out = p.run(&["-v", "config"]);
    out.code(0);
    assert!(
        out.stderr.contains("reading the configuration"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains('\x1b'),
        "no terminal: {:?}",
        out.stderr
    );
    let tty = on_a_terminal(&p, &["-v", "config"]);
    assert!(tty.contains("reading the configuration"), "{tty:?}");
    assert!(tty.contains('\x1b'), "a terminal: colors: {tty:?}");
    p.env("NO_COLOR", "1");
    let tty = on_a_terminal(&p, &["-v", "config"]);
    assert!(tty.contains("reading the configuration"), "{tty:?}");
    assert!(!tty.contains('\x1b'), "NO_COLOR: {tty:?}");
    // An empty NO_COLOR is as good as none.
    p.env("NO_COLOR", "");
    assert!(on_a_terminal(&p, &["-v", "config"]).contains('\x1b'));
}
