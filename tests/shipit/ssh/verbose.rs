//! `-v` and `-vv` against a real sshd: shipit's own debug lines (each connection, each
//! script sent, with what for, how long and its exit status), then the SSH library's,
//! all in the one JSON line shape of docs/json.md.

use super::sshd::{self, Sshd};
use crate::support::{Output, Project};

fn project(sshd: &Sshd) -> Project {
    let p = Project::new();
    let known_hosts = sshd.known_hosts_with_key("known_hosts.verbose");
    p.file(
        "deploy.yaml",
        &format!(
            "app: hello\n\
             deploy_to: {deploy_to}\n\
             service: {{manager: none}}\n\
             ssh:\n  user: root\n  port: {port}\n  identity_files: [{key}]\n  known_hosts_file: {known_hosts}\n\
             hosts: [127.0.0.1]\n",
            deploy_to = p.path().join("opt/hello").display(),
            port = sshd.port,
            key = sshd.client_key.display(),
            known_hosts = known_hosts.display(),
        ),
    );
    p
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    out.stderr
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            for key in ["level", "time", "message"] {
                assert!(v[key].is_string(), "`{key}` in {l}");
            }
            v
        })
        .collect()
}

fn from(lines: &[serde_json::Value], prefix: &str) -> usize {
    lines
        .iter()
        .filter(|l| l["target"].as_str().is_some_and(|t| t.starts_with(prefix)))
        .count()
}

#[test]
fn v_shows_what_each_host_is_sent_and_vv_adds_the_ssh_library() {
    if sshd::prerequisites().is_none() {
        return;
    }
    let sshd = Sshd::start();
    let p = project(&sshd);

    let out = p.run(&["--log-format", "json", "status"]);
    out.code(0);
    assert!(
        lines(&out).iter().all(|l| l["level"] != "debug"),
        "no debug line without -v:\n{}",
        out.stderr
    );

    let out = p.run(&["-v", "--log-format", "json", "status"]);
    out.code(0);
    let v = lines(&out);
    let find = |target: &str, message: &str| {
        v.iter()
            .find(|l| l["target"] == target && l["message"] == message)
            .unwrap_or_else(|| panic!("`{message}` from {target} in:\n{}", out.stderr))
    };
    let connected = find("shipit::ssh::connect", "connected and authenticated");
    assert_eq!(connected["host"], "127.0.0.1");
    assert!(connected["fields"]["ms"].is_u64());
    let sending = find("shipit::host::remote", "sending");
    assert_eq!(sending["level"], "debug");
    assert_eq!(sending["host"], "127.0.0.1");
    assert_eq!(sending["fields"]["op"], "Other");
    assert!(sending["fields"]["script_bytes"].as_u64().unwrap() > 0);
    let done = find("shipit::host::remote", "done");
    assert_eq!(done["fields"]["status"], 0);
    assert!(done["fields"]["ms"].is_u64());
    assert_eq!(from(&v, "russh"), 0, "-v leaves the SSH library out");

    let out = p.run(&["-vv", "--log-format", "json", "status"]);
    out.code(0);
    let vv = lines(&out);
    assert!(from(&vv, "shipit::") > 0);
    assert!(
        from(&vv, "russh") > 0,
        "-vv shows the SSH library's debug lines:\n{}",
        out.stderr
    );

    // `check` sends its one script the same way.
    let out = p.run(&["-v", "--log-format", "json", "check"]);
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    let check = lines(&out);
    assert!(
        check.iter().any(|l| l["message"] == "done"
            && l["fields"]["op"] == "check"
            && l["fields"]["ms"].is_u64()),
        "{}",
        out.stderr
    );

    // SHIPIT_LOG replaces the filter: the SSH library alone.
    let mut p = p;
    p.env("SHIPIT_LOG", "russh=debug");
    let out = p.run(&["--log-format", "json", "status"]);
    out.code(0);
    let only = lines(&out);
    assert!(from(&only, "russh") > 0, "{}", out.stderr);
    assert_eq!(from(&only, "shipit::"), 0, "{}", out.stderr);
}
