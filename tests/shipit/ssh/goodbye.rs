//! How a command holds its hosts: one connection per host (whatever its roles), and every
//! connection ends with an SSH disconnect, so a server logs "Received disconnect", not a
//! connection closed or reset under it.

use std::time::{Duration, Instant};

use super::sshd::{self, Sshd};
use crate::support::Project;

/// The server's log from line `from` on.
fn log_from(sshd: &Sshd, from: usize) -> Vec<String> {
    let log = sshd.log.lock().unwrap_or_else(|p| p.into_inner());
    log.get(from..).unwrap_or_default().to_vec()
}

/// The client ports of the connections logged in `lines`, in the order they logged in.
fn logins(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("Accepted publickey for root from 127.0.0.1 port "))
        .filter_map(|rest| rest.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Runs shipit with `args` (exit status `code`), then waits (bounded) until every target
/// connection the command opened, all but the bastion's, has logged its disconnect; the
/// bastion's connection ends with one too, or (the race written down at
/// `ssh::Session::close`) with sshd's write failing on the connection shipit has closed.
/// No connection logs a close or reset.
fn run_and_check_goodbyes(p: &Project, sshd: &Sshd, args: &[&str], code: i32, hosts: usize) {
    let from = sshd.log.lock().unwrap_or_else(|p| p.into_inner()).len();
    let out = p.run(args);
    assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = log_from(sshd, from);
        let ports = logins(&lines);
        let said =
            |port: &str, what: &str| lines.iter().any(|l| l.contains(port) && l.contains(what));
        let goodbye = |port: &str| said(&format!("port {port}:"), "Received disconnect from");
        let targets = ports.iter().skip(1);
        let bastion_done = ports
            .first()
            .is_some_and(|b| goodbye(b) || said(&format!("port {b}: "), "Broken pipe"));
        if ports.len() == hosts + 1 && bastion_done && targets.clone().all(|t| goodbye(t)) {
            for abrupt in ["Connection closed by", "Connection reset by"] {
                assert!(
                    !lines.iter().any(|l| l.contains(abrupt)),
                    "{args:?}: {lines:#?}"
                );
            }
            return;
        }
        assert!(
            Instant::now() < until,
            "{args:?}: not every connection said goodbye: {lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `status`, `exec` and `deploy` on hosts behind a bastion (all the same real sshd): every
/// connection to a host ends with a disconnect, although its goodbye goes through the
/// bastion's connection, which is closed right after.
#[test]
fn every_connection_ends_with_a_disconnect_also_behind_a_bastion() {
    if sshd::prerequisites().is_none() {
        return;
    }
    let sshd = Sshd::start();
    let deploy_to = tempfile::tempdir().unwrap();
    let p = sshd.project(
        &["127.0.0.1".into()],
        "goodbye",
        deploy_to.path(),
        &format!("  proxy_jump: root@127.0.0.1:{}\n", sshd.port),
        &format!(
            "package: {{root: pkg, include: [VERSION]}}\nservice: {{manager: none}}\nhosts:\n\
             - {{host: 127.0.0.1, port: {port}, name: a}}\n\
             - {{host: 127.0.0.1, port: {port}, name: b}}\n",
            port = sshd.port
        ),
    );
    run_and_check_goodbyes(&p, &sshd, &["status"], 0, 2);
    // Never deployed: exec fails on both hosts, after connecting to them.
    run_and_check_goodbyes(&p, &sshd, &["exec", "--", "true"], 1, 2);
    // One host (both share this machine's `deploy_to`).
    p.file("pkg/VERSION", "1\n");
    let deploy = ["deploy", "--app-version", "1", "--hosts", "a"];
    run_and_check_goodbyes(&p, &sshd, &deploy, 0, 1);
}

/// `check` with a host in two roles checks each role (its own directory) over one
/// connection: the server sees one login, and the connection ends with a disconnect. A
/// second name for the same address (`b`, checked at the same time as `a`) shares it too.
#[test]
fn check_opens_one_connection_per_host_whatever_its_roles() {
    if sshd::prerequisites().is_none() {
        return;
    }
    let sshd = Sshd::start();
    let deploy_to = tempfile::tempdir().unwrap();
    let host = |name| format!("{{host: 127.0.0.1, port: {}, name: {name}}}", sshd.port);
    let (a, b) = (host("a"), host("b"));
    let p = sshd.project(
        &["127.0.0.1".into()],
        "roles",
        deploy_to.path(),
        "",
        &format!(
            "service: {{manager: none}}\nroles:\n  web: {{hosts: [{a}, {b}]}}\n  \
             worker: {{hosts: [{a}]}}\n"
        ),
    );
    let out = p.run(&["check", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout, out.stderr));
    let names: Vec<&str> = report["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a/web", "b/web", "a/worker"], "{}", out.stdout);
    for host in report["hosts"].as_array().unwrap() {
        assert_eq!(host["reachable"], true, "{host}");
        assert!(host["error"].is_null(), "{host}");
    }
    let until = Instant::now() + Duration::from_secs(10);
    while !log_from(&sshd, 0)
        .iter()
        .any(|l| l.contains("Received disconnect"))
    {
        assert!(Instant::now() < until, "{:#?}", log_from(&sshd, 0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = log_from(&sshd, 0);
    assert_eq!(logins(&lines).len(), 1, "{lines:#?}");
}
