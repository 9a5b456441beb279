//! Zero-downtime deploys behind a real HAProxy on real hosts, under real load: every
//! request of a steady keep-alive load (Debian's `hey`) and every long-lived stream is
//! counted across many deploys and rollbacks; none may fail.

use std::net::SocketAddr;

use crate::e2e::Testbed;
use crate::e2e::deploy::{App, hello_binary};
use crate::e2e::load::{EchoLoad, HttpLoad, Streams};
use crate::support::Project;

/// The example app behind the proxy on `hosts`, with `extra` YAML (a `proxy:` section
/// unless `extra` brings its own).
fn app<'a>(tb: &'a Testbed, hosts: &[usize], extra: &str) -> App<'a> {
    let p = Project::new();
    std::fs::create_dir_all(p.path().join("pkg/bin")).unwrap();
    std::fs::copy(hello_binary(), p.path().join("pkg/bin/hello")).unwrap();
    p.file("pkg/VERSION", "1\n");
    p.file(
        "deploy/hello@.service",
        include_str!("../../../examples/hello/deploy/hello@.service"),
    );
    let ips: Vec<String> = hosts.iter().map(|&i| tb.host(i).ip.clone()).collect();
    p.file(
        "deploy.yaml",
        &format!(
            "app: hello
package: {{root: pkg, include: [bin, VERSION]}}
{ssh}env:
  MESSAGE: ${{MESSAGE:-hello v1}}
  HELLO_MODE: ${{HELLO_MODE:-ok}}
  HELLO_PROTOCOL: ${{HELLO_PROTOCOL:-http}}
  DB_PASSWORD: ${{SHIPIT_E2E_CANARY}}
service: {{name: hello, unit_file: deploy/hello@.service, sudo: true}}
health:
  timeout: 8s
  interval: 200ms
  settle: 500ms
{extra}
hosts: [{hosts}]
",
            ssh = tb.ssh_yaml(&tb.state.known_hosts),
            hosts = ips.join(", ")
        ),
    );
    App { tb, p }
}

const HTTP_HEALTH: &str = "  http: {url: 'http://127.0.0.1:8080/healthz', contains: ok}\n";

const PROXY: &str = "proxy:
  listen: 80
  slots: [9001, 9002]
  drain_timeout: 10s
  watch: 1s
  steps: [10, 50, 100]
  analysis: {interval: 1s, max_error_rate: 1%, max_response_time: 200ms}
";

fn http_app<'a>(tb: &'a Testbed, hosts: &[usize]) -> App<'a> {
    // `health:` is open at the end of the template: the check goes in first.
    app(tb, hosts, PROXY).with_health(HTTP_HEALTH)
}

trait WithHealth {
    fn with_health(self, yaml: &str) -> Self;
}

impl WithHealth for App<'_> {
    /// Add lines under `health:`.
    fn with_health(self, yaml: &str) -> Self {
        let text = self.p.read("deploy.yaml");
        self.p.file(
            "deploy.yaml",
            &text.replacen("health:\n", &format!("health:\n{yaml}"), 1),
        );
        self
    }
}

/// Deploy `version` with `env`; returns the exit code and the JSON summary.
fn deploy(a: &App, version: &str, env: &[(&str, &str)]) -> (i32, serde_json::Value) {
    a.set_version(version);
    let (out, summary) = a.deploy(version, env, &[]);
    (out.code, summary)
}

fn sh(tb: &Testbed, i: usize, script: &str) -> String {
    tb.root(i, script).trim().to_owned()
}

/// What the host's HAProxy says about slot `port` (`show stat` through its admin socket,
/// read with the host's python3): `(weight, requests answered)`.
fn slot_stat(tb: &Testbed, i: usize, port: u16) -> (u64, u64) {
    let py = format!(
        "import socket\ns=socket.socket(socket.AF_UNIX)\n\
         s.connect('/opt/hello/.shipit/proxy/admin.sock')\ns.sendall(b'show stat\\n')\n\
         d=b''\nwhile True:\n  b=s.recv(65536)\n  if not b: break\n  d+=b\n\
         lines=d.decode().splitlines()\nh=lines[0].lstrip('# ').split(',')\n\
         for l in lines[1:]:\n  f=l.split(',')\n  if len(f)>1 and f[1]=='slot{port}':\n\
         \x20   r=sum(int(f[h.index(k)] or 0) for k in ['hrsp_1xx','hrsp_2xx','hrsp_3xx',\
         'hrsp_4xx','hrsp_5xx','hrsp_other'])\n    print(f[h.index('weight')], r)\n"
    );
    let out = sh(tb, i, &format!("python3 - <<'EOF'\n{py}EOF\n"));
    let mut w = out
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    (w.next().unwrap_or(0), w.next().unwrap_or(0))
}

#[test]
fn every_request_survives_deploys_and_rollbacks_under_load() {
    let Some(tb) = Testbed::up("e2e-proxy-load", 1) else {
        return;
    };
    let a = http_app(&tb, &[0]);
    let ip = tb.host(0).ip.clone();
    // The first deploy sets the proxy up: slot 9001 live, HAProxy's unit enabled.
    let (code, summary) = deploy(&a, "1", &[]);
    assert_eq!(code, 0, "{summary:#}");
    assert_eq!(
        sh(
            &tb,
            0,
            "systemctl is-active hello-proxy hello@9001 hello@9002 || true"
        ),
        "active\nactive\ninactive"
    );
    assert_eq!(sh(&tb, 0, "cat /opt/hello/.shipit/proxy/live"), "9001");
    // `status` reads the slots and HAProxy's own figures; `--dry-run` shows the steps and
    // the configuration it would use.
    let out = a.shipit(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let proxy = &st["hosts"][0]["proxy"];
    assert_eq!(proxy["live"], 9001, "{st:#}");
    assert_eq!(proxy["unit"], "active", "{st:#}");
    assert_eq!(proxy["slots"][0]["weight"], 100, "{st:#}");
    assert_eq!(proxy["slots"][1]["running"], false, "{st:#}");
    assert_eq!(st["hosts"][0]["healthy"], true, "{st:#}");
    a.set_version("dry");
    let out = a.shipit(&["deploy", "--dry-run", "--app-version", "dry"]);
    assert!(
        out.stdout
            .contains("move new requests to slot 9002 in steps of 10%, 50%, 100%")
            && out
                .stdout
                .contains("server slot9002 127.0.0.1:9002 weight @W9002@"),
        "{}",
        out.stdout
    );
    let url = format!("http://{ip}:80/");
    let load = HttpLoad::steady(Some(&tb.state.client_netns), &url);
    let addr: SocketAddr = format!("{ip}:80").parse().unwrap();
    let streams = Streams::start(Some(&tb.state.client_netns), addr, 20, 3);

    let deploys: usize = std::env::var("SHIPIT_ZD_DEPLOYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (mut ok, mut rolled_back, mut automatic) = (0, 0, 0);
    for n in 0..deploys {
        let v = format!("{}", n + 2);
        let message = format!("hello v{v}");
        let (code, summary) = deploy(&a, &v, &[("MESSAGE", &message)]);
        assert_eq!(code, 0, "deploy {v}: {summary:#}");
        ok += 1;
        let live = sh(&tb, 0, "cat /opt/hello/.shipit/proxy/live");
        let current = sh(&tb, 0, "readlink /opt/hello/current");
        let slot = sh(&tb, 0, &format!("readlink /opt/hello/slots/{live}"));
        assert!(
            slot.ends_with(current.trim_start_matches("releases/")),
            "{slot} {current}"
        );
        // Only the live slot runs once the old one drained.
        let other = if live == "9001" { 9002 } else { 9001 };
        assert_eq!(
            sh(
                &tb,
                0,
                &format!("systemctl is-active hello@{other} || true")
            ),
            "inactive"
        );
        assert_eq!(
            sh(
                &tb,
                0,
                &format!("systemctl is-enabled hello@{live} hello-proxy")
            ),
            "enabled\nenabled",
            "a reboot brings back the proxy and the live slot"
        );
        if n % 7 == 3 && rolled_back < 3 {
            let out = a.shipit(&["rollback", "--json"]);
            assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
            rolled_back += 1;
        }
        if n % 10 == 6 && automatic < 2 {
            // A release slower than max_response_time: caught at the first step, all
            // traffic back on the old slot at once.
            let before = sh(&tb, 0, "readlink /opt/hello/current");
            let (code, summary) = deploy(&a, &format!("{v}-slow"), &[("HELLO_MODE", "slow")]);
            assert_eq!(code, 5, "{summary:#}");
            let text = summary.to_string();
            assert!(text.contains("max_response_time"), "{summary:#}");
            assert_eq!(sh(&tb, 0, "readlink /opt/hello/current"), before);
            automatic += 1;
        }
    }
    let streams = streams.stop();
    let report = load.stop();
    eprintln!(
        "{ok} deploys, {rolled_back} rollbacks, {automatic} automatic: {} requests ({:?}), \
         p50 {:.1} ms, p99 {:.1} ms; {} streams completed",
        report.total, report.by_status, report.p50_ms, report.p99_ms, streams.completed
    );
    assert_eq!(report.failed(), 0, "{report:#?}");
    assert!(report.total > 1000, "{report:#?}");
    assert!(streams.cut.is_empty(), "{:#?}", streams.cut);
    assert!(streams.completed >= 20, "{}", streams.completed);
    let planned =
        |m: usize, at: usize, cap: usize| (0..deploys).filter(|n| n % m == at).count().min(cap);
    assert_eq!(
        (rolled_back, automatic),
        (planned(7, 3, 3), planned(10, 6, 2))
    );
}

#[test]
fn a_failing_release_is_caught_at_the_first_step_and_an_unhealthy_one_never_gets_traffic() {
    let Some(tb) = Testbed::up("e2e-proxy-bad", 1) else {
        return;
    };
    let a = http_app(&tb, &[0]);
    let ip = tb.host(0).ip.clone();
    assert_eq!(deploy(&a, "1", &[]).0, 0);
    let good = sh(&tb, 0, "readlink /opt/hello/current");
    // HAProxy's master runs as root (it binds port 80 and re-executes on reload); the
    // worker that handles traffic and the admin socket runs as the distribution's user.
    assert_eq!(
        sh(&tb, 0, "ps -o user= -C haproxy | sort -u"),
        "haproxy\nroot"
    );

    // Unhealthy: its slot never gets a single request.
    let load = HttpLoad::steady(Some(&tb.state.client_netns), &format!("http://{ip}:80/"));
    let (code, summary) = deploy(&a, "2", &[("HELLO_MODE", "unhealthy")]);
    let report = load.stop();
    assert_eq!(code, 5, "{summary:#}");
    assert!(
        summary.to_string().contains("never given traffic"),
        "{summary:#}"
    );
    assert_eq!(report.failed(), 0, "{report:#?}");
    assert_eq!(
        slot_stat(&tb, 0, 9002),
        (0, 0),
        "the unhealthy slot got requests"
    );
    assert_eq!(sh(&tb, 0, "readlink /opt/hello/current"), good);
    assert_eq!(
        sh(&tb, 0, "systemctl is-active hello@9002 || true"),
        "inactive"
    );

    // 5% of answers are 500s: caught at the first step (10%), the fleet stays on the old
    // release, and the bad release answered about a tenth of one interval's requests.
    let load = HttpLoad::steady(Some(&tb.state.client_netns), &format!("http://{ip}:80/"));
    let (code, summary) = deploy(&a, "3", &[("HELLO_MODE", "errors5")]);
    let report = load.stop();
    assert_eq!(code, 5, "{summary:#}");
    let text = summary.to_string();
    assert!(
        text.contains("step 10%") && text.contains("max_error_rate"),
        "{summary:#}"
    );
    assert_eq!(sh(&tb, 0, "readlink /opt/hello/current"), good);
    assert_eq!(sh(&tb, 0, "cat /opt/hello/.shipit/proxy/live"), "9001");
    let (weight, answered) = slot_stat(&tb, 0, 9002);
    assert_eq!(weight, 0);
    // 200 requests/s, 10% for a 1 s step: about 20; never more than a fifth of the load
    // of that window.
    assert!(
        answered > 0 && answered <= 60,
        "the bad slot answered {answered}"
    );
    let failed = report.by_status.get(&500).copied().unwrap_or(0);
    assert!(failed <= answered, "{failed} 500s, {answered} answered");
    assert_eq!(report.errors.len(), 0, "{report:#?}");

    // An sshd that forwards nothing: `check` says the admin socket cannot be reached, and
    // a deploy that cannot move traffic puts everything back (through a proxy reload).
    a.shipit(&["check"]).code(0);
    tb.root(
        0,
        "echo 'DisableForwarding yes' > /etc/ssh/sshd_config.d/00-noforward.conf && \
         systemctl reload ssh",
    );
    let out = a.shipit(&["check"]);
    out.code(1);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("does not answer over SSH"), "{all}");
    let (code, summary) = deploy(&a, "4", &[]);
    assert_eq!(code, 5, "{summary:#}");
    assert_eq!(sh(&tb, 0, "readlink /opt/hello/current"), good);
    assert_eq!(sh(&tb, 0, "cat /opt/hello/.shipit/proxy/live"), "9001");
    assert_eq!(slot_stat(&tb, 0, 9001).0, 100);
    assert_eq!(
        sh(&tb, 0, "systemctl is-active hello@9002 || true"),
        "inactive"
    );
}

#[test]
fn tcp_mode_config_changes_and_reloads_refuse_nothing() {
    let Some(tb) = Testbed::up("e2e-proxy-tcp", 1) else {
        return;
    };
    let tcp = PROXY
        .replace("  listen: 80\n", "  listen: 7000\n  mode: tcp\n")
        .replace(", max_response_time: 200ms", "");
    let a = app(&tb, &[0], &tcp).with_health("  command: ./bin/hello probe\n");
    let echo = [("HELLO_PROTOCOL", "echo")];
    assert_eq!(deploy(&a, "1", &echo).0, 0);
    let addr: SocketAddr = format!("{}:7000", tb.host(0).ip).parse().unwrap();
    let load = EchoLoad::start(Some(&tb.state.client_netns), addr, 50, 0);
    for v in ["2", "3", "4"] {
        let (code, summary) = deploy(&a, v, &echo);
        assert_eq!(code, 0, "{summary:#}");
    }
    let out = a.shipit(&["rollback"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    // A change of the proxy's own configuration reloads it, seamlessly; and so does a
    // reload by hand.
    let text =
        a.p.read("deploy.yaml")
            .replace("drain_timeout: 10s", "drain_timeout: 12s");
    a.p.file("deploy.yaml", &text);
    let (code, summary) = deploy(&a, "5", &echo);
    assert_eq!(code, 0, "{summary:#}");
    tb.root(0, "systemctl reload hello-proxy");
    let report = load.stop();
    assert_eq!(report.failed(), 0, "{report:#?}");
    assert!(report.ok > 100, "{report:#?}");
}

#[test]
fn a_host_without_haproxy_or_with_a_taken_port_is_refused_before_anything_changes() {
    let Some(tb) = Testbed::up("e2e-proxy-refuse", 2) else {
        return;
    };
    let a = http_app(&tb, &[0, 1]);
    tb.root(0, "mv /usr/sbin/haproxy /usr/sbin/haproxy.away");
    // Another process holds slot port 9002 on host 2.
    tb.root(
        1,
        "systemd-run --unit squatter python3 -m http.server 9002 --bind 127.0.0.1 && \
         for i in $(seq 50); do grep -q ':2332 ' /proc/net/tcp && break; sleep 0.1; done",
    );
    let (code, summary) = deploy(&a, "1", &[]);
    assert_eq!(code, 1, "{summary:#}");
    let text = summary.to_string();
    assert!(text.contains("HAProxy is not installed"), "{summary:#}");
    assert!(text.contains("slot port 9002"), "{summary:#}");
    for i in 0..2 {
        assert_eq!(
            sh(&tb, i, "ls /opt/hello/releases 2>/dev/null | wc -l"),
            "0"
        );
        assert_eq!(
            sh(&tb, i, "systemctl is-active hello-proxy || true"),
            "inactive"
        );
    }
    let out = a.shipit(&["check"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("HAProxy is not installed"), "{all}");
    assert!(all.contains("slot port 9002"), "{all}");
}

/// The load and the slots' state of host `i`: the live slot and the release it runs.
fn live(tb: &Testbed, i: usize) -> (String, String) {
    let port = sh(tb, i, "cat /opt/hello/.shipit/proxy/live");
    let release = sh(tb, i, &format!("readlink /opt/hello/slots/{port}"));
    (port, release.rsplit('/').next().unwrap_or("").to_owned())
}

#[test]
fn a_later_host_failing_flips_the_canary_back_to_its_old_slot_under_load() {
    let Some(tb) = Testbed::up("e2e-proxy-fleet", 2) else {
        return;
    };
    let a = app(
        &tb,
        &[0, 1],
        &format!("{PROXY}rollout: {{canary: 1, parallel: 1}}"),
    )
    .with_health(&format!(
        "{HTTP_HEALTH}  command: 'test ! -e /etc/shipit-unhealthy'\n"
    ));
    assert_eq!(deploy(&a, "1", &[]).0, 0);
    let before = [live(&tb, 0), live(&tb, 1)];
    // Host 2's new release will fail its health check: host 1 (the canary) has moved all
    // its traffic by then, and must flip back at once.
    tb.root(1, "touch /etc/shipit-unhealthy");
    let ip = tb.host(0).ip.clone();
    let load = HttpLoad::steady(Some(&tb.state.client_netns), &format!("http://{ip}:80/"));
    let (code, summary) = deploy(&a, "2", &[]);
    let report = load.stop();
    assert_eq!(code, 5, "{summary:#}");
    assert_eq!([live(&tb, 0), live(&tb, 1)], before, "{summary:#}");
    assert_eq!(report.failed(), 0, "{report:#?}");
    for (i, (port, release)) in before.iter().enumerate() {
        assert!(sh(&tb, i, "readlink /opt/hello/current").ends_with(release.as_str()));
        assert_eq!(slot_stat(&tb, i, port.parse().unwrap()).0, 100, "host {i}");
        let other = if port == "9001" { 9002 } else { 9001 };
        assert_eq!(
            sh(
                &tb,
                i,
                &format!("systemctl is-active hello@{other} || true")
            ),
            "inactive"
        );
    }
}

#[test]
fn a_vanished_deployer_mid_steps_is_undone_by_the_hosts_guard() {
    let Some(tb) = Testbed::up("e2e-proxy-guard", 1) else {
        return;
    };
    let a = http_app(&tb, &[0]);
    let text = a.p.read("deploy.yaml");
    a.p.file(
        "deploy.yaml",
        &text.replace("hosts: [", "rollout: {confirm_timeout: 3s}\nhosts: ["),
    );
    assert_eq!(deploy(&a, "1", &[]).0, 0);
    let (port, release) = live(&tb, 0);
    a.set_version("2");
    // Stopped with 10% of new requests going to the new slot, then killed: no word from
    // the deployer again. The guard puts everything back within confirm_timeout.
    let (mut child, pid) = tb.stopped_at(
        &a.p,
        &["deploy", "--app-version", "2"],
        &[],
        &format!("traffic@{}", tb.host(0).ip),
    );
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status();
    let _ = child.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let history = loop {
        let h = sh(&tb, 0, "tail -n 1 /opt/hello/.shipit/history.jsonl");
        if h.contains("reverted-by-guard") {
            break h;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the guard never fired: {h}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert_eq!(live(&tb, 0), (port.clone(), release.clone()), "{history}");
    assert!(sh(&tb, 0, "readlink /opt/hello/current").ends_with(&release));
    let other = if port == "9001" { 9002 } else { 9001 };
    let idle = sh(
        &tb,
        0,
        &format!("systemctl is-active hello@{other} || true"),
    );
    assert_eq!(idle, "inactive");
    assert_eq!(slot_stat(&tb, 0, port.parse().unwrap()).0, 100);
    // The next deploy needs no unlock.
    assert_eq!(deploy(&a, "3", &[]).0, 0);
}
