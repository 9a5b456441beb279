//! Roles on real hosts: a web role and a worker role from one config, each its own unit,
//! health check, env and directory (`/opt/hello/<role>`); one release id; the migration
//! (`once: true`, `roles: [web]`) on exactly one host before any switch; a failing worker
//! puts the web hosts back; a host in both roles runs both; `--roles` picks.

use crate::e2e::Testbed;
use crate::e2e::deploy::{App, hello_binary};
use crate::support::Project;

/// The example app as a web role on `web` and a worker role on `worker` (indexes).
fn roles_app<'a>(tb: &'a Testbed, web: &[usize], worker: &[usize]) -> App<'a> {
    let p = Project::new();
    std::fs::create_dir_all(p.path().join("pkg/bin")).unwrap();
    std::fs::copy(hello_binary(), p.path().join("pkg/bin/hello")).unwrap();
    p.file("pkg/VERSION", "1\n");
    let unit = include_str!("../../../examples/hello/deploy/hello.service");
    for role in ["web", "worker"] {
        p.file(
            &format!("deploy/hello-{role}.service"),
            &unit.replace("/opt/hello/current", &format!("/opt/hello/{role}/current")),
        );
    }
    let ips = |hosts: &[usize]| -> String {
        let ips: Vec<String> = hosts.iter().map(|&i| tb.host(i).ip.clone()).collect();
        ips.join(", ")
    };
    p.file(
        "deploy.yaml",
        &format!(
            "app: hello
package: {{root: pkg, include: [bin, VERSION]}}
{ssh}env:
  PORT: '8080'
  MESSAGE: web
  HELLO_MODE: ok
  FAIL_ONCE: ${{FAIL_ONCE:-no}}
  DB_PASSWORD: ${{SHIPIT_E2E_CANARY}}
service: {{sudo: true}}
health: {{timeout: 8s, interval: 200ms, settle: 1s}}
rollout: {{canary: 1, parallel: 10}}
hooks:
  before_switch:
    - 'echo \"$SHIPIT_HOST $SHIPIT_ROLE\" > role-seen'
    - run: 'date +%s.%N > /tmp/once-at && echo \"$SHIPIT_HOST $SHIPIT_ROLE\" >> /tmp/once-ran
        && test \"$FAIL_ONCE\" = no'
      once: true
      roles: [web]
roles:
  web:
    hosts: [{web}]
    service: {{name: hello-web, unit_file: deploy/hello-web.service}}
    health: {{http: {{url: 'http://127.0.0.1:8080/healthz', contains: ok}}}}
  worker:
    hosts: [{worker}]
    service: {{name: hello-worker, unit_file: deploy/hello-worker.service}}
    env: {{PORT: '8081', MESSAGE: worker, HELLO_MODE: '${{WORKER_MODE:-ok}}'}}
    health: {{command: bin/hello probe}}
",
            ssh = tb.ssh_yaml(&tb.state.known_hosts),
            web = ips(web),
            worker = ips(worker),
        ),
    );
    App { tb, p }
}

fn current(tb: &Testbed, i: usize, role: &str) -> String {
    tb.root(i, &format!("readlink /opt/hello/{role}/current || true"))
        .trim()
        .trim_start_matches("releases/")
        .to_owned()
}

fn active(tb: &Testbed, i: usize, role: &str) -> String {
    tb.root(i, &format!("systemctl is-active hello-{role} || true"))
        .trim()
        .to_owned()
}

fn answer(tb: &Testbed, i: usize, port: u16) -> String {
    tb.root(
        i,
        &format!("curl -s --max-time 2 http://127.0.0.1:{port}/ || true"),
    )
    .trim()
    .to_owned()
}

/// 2 web hosts and 1 worker: each role its unit and check; the migration on the first web
/// host only, before any switch; a failing once-hook and a failing worker both leave
/// every host of every role on the release it had.
#[test]
fn web_and_worker_deploy_together_and_fail_together() {
    let Some(tb) = Testbed::up("e2e-roles", 3) else {
        return;
    };
    let app = roles_app(&tb, &[0, 1], &[2]);
    let (out, summary) = app.deploy("1", &[], &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let release = summary["release"].as_str().unwrap().to_owned();
    let names: Vec<&str> = summary["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    let ip = |i: usize| tb.host(i).ip.clone();
    assert_eq!(
        names,
        [
            format!("{}/web", ip(0)),
            format!("{}/web", ip(1)),
            format!("{}/worker", ip(2))
        ]
    );
    for (i, role) in [(0, "web"), (1, "web"), (2, "worker")] {
        assert_eq!(current(&tb, i, role), release, "host {i}");
        assert_eq!(active(&tb, i, role), "active", "host {i}");
        let seen = tb.root(i, &format!("cat /opt/hello/{role}/current/role-seen"));
        assert_eq!(seen.trim(), format!("{} {role}", ip(i)), "host {i}");
    }
    assert_eq!(answer(&tb, 0, 8080), "web");
    assert_eq!(answer(&tb, 2, 8081), "worker", "the worker's own env");
    assert_eq!(
        active(&tb, 2, "web"),
        "inactive",
        "no web unit on the worker"
    );
    // The migration ran once, on the first web host, before any host switched.
    assert_eq!(
        tb.root(0, "cat /tmp/once-ran").trim(),
        format!("{} web", ip(0))
    );
    for i in 1..3 {
        assert_eq!(tb.root(i, "cat /tmp/once-ran 2>/dev/null || true"), "");
    }
    let ran_at: f64 = tb.root(0, "cat /tmp/once-at").trim().parse().unwrap();
    for (i, role) in [(0, "web"), (1, "web"), (2, "worker")] {
        let switched: f64 = tb
            .root(i, &format!("stat -c %.9Y /opt/hello/{role}/current"))
            .trim()
            .parse()
            .unwrap();
        assert!(
            ran_at < switched,
            "host {i}: hook {ran_at}, switch {switched}"
        );
    }

    // `--roles` (with a glob in `--hosts`) on status and exec.
    let out = app.shipit(&["status", "--json", "--roles", "worker"]);
    out.code(0);
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["hosts"].as_array().unwrap().len(), 1, "{status:#}");
    assert_eq!(status["hosts"][0]["name"], format!("{}/worker", ip(2)));
    let glob = format!("{}*", &ip(1)[..ip(1).len() - 1]);
    let out = app.shipit(&[
        "exec",
        "--roles",
        "web",
        "--hosts",
        &glob,
        "--",
        "echo $PORT",
    ]);
    out.code(0);
    assert!(
        out.stdout.contains(&format!("{}/web: 8080", ip(1))),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("/worker"), "{}", out.stdout);
    let out = app.shipit(&["status", "--roles", "db"]);
    out.code(2);
    assert!(
        out.stderr.contains("unknown role(s) in --roles: db"),
        "{}",
        out.stderr
    );

    // A failing once-hook: nothing switched anywhere.
    app.set_version("2");
    let (out, _) = app.deploy("2", &[("FAIL_ONCE", "yes")], &[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    for (i, role) in [(0, "web"), (1, "web"), (2, "worker")] {
        assert_eq!(current(&tb, i, role), release, "host {i} switched");
        assert_eq!(active(&tb, i, role), "active", "host {i}");
    }

    // A worker that cannot start: the web hosts go back too.
    app.set_version("3");
    let (out, summary) = app.deploy("3", &[("WORKER_MODE", "crash")], &[]);
    assert_eq!(out.code, 5, "{}\n{}", out.stdout, out.stderr);
    for (i, role) in [(0, "web"), (1, "web"), (2, "worker")] {
        assert_eq!(current(&tb, i, role), release, "host {i}: {summary:#}");
        assert_eq!(active(&tb, i, role), "active", "host {i}");
    }
    assert_eq!(answer(&tb, 0, 8080), "web");
    let worker = &summary["hosts"][2];
    assert_eq!(worker["result"], "rolled-back", "{summary:#}");
}

/// One host in both roles: both units run, each from its own directory, on one SSH
/// connection; a rollback takes both back.
#[test]
fn a_host_in_both_roles_runs_both() {
    let Some(tb) = Testbed::up("e2e-roles-both", 2) else {
        return;
    };
    let app = roles_app(&tb, &[0, 1], &[1]);
    let (out, summary) = app.deploy("1", &[], &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let first = summary["release"].as_str().unwrap().to_owned();
    app.set_version("2");
    let (out, summary) = app.deploy("2", &[], &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let second = summary["release"].as_str().unwrap().to_owned();
    for role in ["web", "worker"] {
        assert_eq!(current(&tb, 1, role), second, "{role}");
        assert_eq!(active(&tb, 1, role), "active", "{role}");
    }
    assert_eq!(answer(&tb, 1, 8080), "web");
    assert_eq!(answer(&tb, 1, 8081), "worker");
    let out = app.shipit(&["rollback", "--json"]);
    out.code(0);
    for role in ["web", "worker"] {
        assert_eq!(current(&tb, 1, role), first, "{role}");
        assert_eq!(active(&tb, 1, role), "active", "{role}");
    }
    assert_eq!(current(&tb, 0, "web"), first);
    let out = app.shipit(&["rollback", "--roles", "worker", "--to", &second]);
    out.code(0);
    assert_eq!(current(&tb, 1, "worker"), second);
    assert_eq!(
        current(&tb, 1, "web"),
        first,
        "--roles worker left the web role alone"
    );
}
