//! Deploy, rollback, status and unlock against real hosts, checking the hosts' real
//! state: `readlink current`, `systemctl is-active`, the app's HTTP answer, the files.
//!
//! Every run's output is checked for the canary secret that the config pulls from the
//! environment: it must never appear (Testbed checks it again, and the hosts, on drop).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::e2e::Testbed;
use crate::support::{Output, Project};

use crate::e2e::CANARY as SECRET;

/// The example app's binary, built by `cargo test` with the other targets.
pub(super) fn hello_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(|p| p.parent()).unwrap().to_owned();
    let path = debug.join("examples/hello");
    if !path.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--example", "hello"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "building the example app");
    }
    path
}

pub(super) struct App<'a> {
    pub tb: &'a Testbed,
    pub p: Project,
}

impl App<'_> {
    /// The example app, deployable to `hosts` of `tb` (indexes), with `extra` YAML.
    pub(super) fn new<'a>(tb: &'a Testbed, hosts: &[usize], extra: &str) -> App<'a> {
        let p = Project::new();
        std::fs::create_dir_all(p.path().join("pkg/bin")).unwrap();
        std::fs::copy(hello_binary(), p.path().join("pkg/bin/hello")).unwrap();
        p.file("pkg/VERSION", "1\n");
        p.file(
            "deploy/hello.service",
            include_str!("../../../examples/hello/deploy/hello.service"),
        );
        let ips: Vec<String> = hosts.iter().map(|&i| tb.host(i).ip.clone()).collect();
        p.file(
            "deploy.yaml",
            &format!(
                "app: hello
package: {{root: pkg, include: [bin, VERSION]}}
{ssh}shared: {{dirs: [log]}}
env:
  PORT: '8080'
  MESSAGE: ${{MESSAGE:-hello v1}}
  HELLO_MODE: ${{HELLO_MODE:-ok}}
  DB_PASSWORD: ${{SHIPIT_E2E_CANARY}}
service: {{name: hello, unit_file: deploy/hello.service, sudo: true}}
health:
  http: {{url: 'http://127.0.0.1:8080/healthz', contains: ok}}
  command: 'test -x bin/hello && test ! -e /etc/shipit-unhealthy-$(cat VERSION)'
  timeout: 8s
  interval: 200ms
  settle: 1s
hooks:
  before_switch: ['test -x bin/hello']
hosts: [{hosts}]
{extra}",
                ssh = tb.ssh_yaml(&tb.state.known_hosts),
                hosts = ips.join(", ")
            ),
        );
        App { tb, p }
    }

    pub(super) fn set_version(&self, v: &str) {
        self.p.file("pkg/VERSION", &format!("{v}\n"));
    }

    /// Run shipit; its output must never hold the secret.
    pub(super) fn shipit(&self, args: &[&str]) -> Output {
        let out = self.tb.shipit(&self.p, args);
        assert!(
            !out.stdout.contains(SECRET) && !out.stderr.contains(SECRET),
            "the secret leaked in {args:?}:\n{}\n{}",
            out.stdout,
            out.stderr
        );
        out
    }

    /// `shipit deploy --json` with extra environment; returns the output and the summary.
    pub(super) fn deploy(
        &self,
        version: &str,
        env: &[(&str, &str)],
        extra_args: &[&str],
    ) -> (Output, serde_json::Value) {
        let mut args = vec!["deploy", "--app-version", version, "--json"];
        args.extend_from_slice(extra_args);
        let out = self.run_with(&args, env);
        let summary = serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out, summary)
    }

    pub(super) fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = self.tb.shipit_command(&self.p, args);
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        let out = Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            !out.stdout.contains(SECRET) && !out.stderr.contains(SECRET),
            "the secret leaked in {args:?}:\n{}\n{}",
            out.stdout,
            out.stderr
        );
        out
    }

    pub(super) fn current(&self, i: usize) -> String {
        self.tb
            .root(i, "readlink /opt/hello/current || true")
            .trim()
            .trim_start_matches("releases/")
            .to_owned()
    }

    pub(super) fn active(&self, i: usize) -> String {
        self.tb
            .root(i, "systemctl is-active hello || true")
            .trim()
            .to_owned()
    }

    pub(super) fn http(&self, i: usize) -> String {
        self.tb
            .root(i, "curl -s --max-time 2 http://127.0.0.1:8080/ || true")
            .trim()
            .to_owned()
    }

    pub(super) fn release_state(&self, i: usize, id: &str) -> String {
        let json = self.tb.root(
            i,
            &format!("cat /opt/hello/releases/{id}/.shipit/release.json"),
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["state"].as_str().unwrap().to_owned()
    }

    pub(super) fn releases(&self, i: usize) -> Vec<String> {
        self.tb
            .root(i, "ls /opt/hello/releases")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub(super) fn history(&self, i: usize) -> Vec<serde_json::Value> {
        self.tb
            .root(
                i,
                "cat /opt/hello/.shipit/history.jsonl 2>/dev/null || true",
            )
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

pub(super) fn host_result(summary: &serde_json::Value, i: usize) -> &serde_json::Value {
    &summary["hosts"][i]
}

#[test]
fn first_deploy_second_deploy_and_a_no_op_redeploy() {
    let Some(tb) = Testbed::up("e2e-deploy-basic", 3) else {
        return;
    };
    let app = App::new(&tb, &[0, 1, 2], "");
    let (out, summary) = app.deploy("1.0", &[], &[]);
    out.code(0);
    // What shipit's own scripts print to it is not the host's output.
    assert!(
        !out.stderr.contains("NRestarts=") && !out.stderr.contains("@@"),
        "{}",
        out.stderr
    );
    let first = summary["release"].as_str().unwrap().to_owned();
    for i in 0..3 {
        assert_eq!(host_result(&summary, i)["result"], "done", "{summary:#}");
        assert_eq!(app.current(i), first);
        assert_eq!(app.active(i), "active");
        assert_eq!(app.http(i), "hello v1");
        assert_eq!(app.release_state(i, &first), "live");
        let history = app.history(i);
        assert_eq!(history.len(), 1);
        assert_eq!(history[0]["action"], "deploy");
        assert_eq!(history[0]["result"], "ok");
        assert_eq!(history[0]["release"], first.as_str());
        assert_eq!(history[0]["version"], "1.0");
        // The release's .env is private to the deploy user and holds the real secret.
        assert_eq!(
            tb.root(
                i,
                &format!("stat -c '%a %U' /opt/hello/releases/{first}/.env")
            )
            .trim(),
            "600 deploy"
        );
        assert!(
            tb.root(i, &format!("cat /opt/hello/releases/{first}/.env"))
                .contains(SECRET)
        );
        assert_eq!(
            tb.root(i, &format!("readlink /opt/hello/releases/{first}/log"))
                .trim(),
            "/opt/hello/shared/log"
        );
    }

    // A second deploy of a new artifact.
    app.set_version("2");
    std::thread::sleep(Duration::from_millis(1100)); // release ids have one-second resolution
    let (out, summary) = app.deploy("2.0", &[("MESSAGE", "hello v2")], &[]);
    out.code(0);
    let second = summary["release"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    for i in 0..3 {
        assert_eq!(app.current(i), second);
        assert_eq!(app.http(i), "hello v2");
        assert_eq!(host_result(&summary, i)["previous"], first.as_str());
    }

    // The same artifact and config again: nothing to do, nothing uploaded.
    let (out, summary) = app.deploy("2.0", &[("MESSAGE", "hello v2")], &[]);
    out.code(0);
    for i in 0..3 {
        assert_eq!(host_result(&summary, i)["result"], "skipped", "{summary:#}");
        assert_eq!(host_result(&summary, i)["uploaded_bytes"], 0);
        assert_eq!(app.current(i), second);
        assert_eq!(app.history(i).len(), 2, "a no-op writes no history");
    }
    assert!(
        !tb.root(0, "ls -A /opt/hello/.shipit").contains("lock"),
        "lock released"
    );

    // Nothing in the history holds the secret either.
    for i in 0..3 {
        assert!(
            !tb.root(i, "cat /opt/hello/.shipit/history.jsonl")
                .contains(SECRET)
        );
    }

    // --dry-run: reads, prints every step and script with secrets redacted, changes nothing.
    app.set_version("3");
    let out = app.run_with(
        &["deploy", "--app-version", "3.0", "--dry-run"],
        &[("MESSAGE", "hello v3")],
    );
    out.code(0);
    for text in [
        "-- 1. lock",
        "-- 2. upload and stage: send a delta",
        "-- 3. switch and restart",
        "mv -T -- .current.tmp",
        "DB_PASSWORD=",
        "[redacted]",
        &format!("current release: {second}"),
    ] {
        assert!(
            out.stdout.contains(text),
            "dry run shows {text:?}:\n{}",
            out.stdout
        );
    }
    for i in 0..3 {
        assert_eq!(app.current(i), second);
        assert_eq!(app.releases(i).len(), 2, "no release made");
        assert!(
            !tb.root(i, "ls -A /opt/hello/.shipit").contains("lock"),
            "no lock taken"
        );
    }

    // --artifact: a prebuilt artifact deploys as is; a hostile one is refused before upload.
    let artifact = app.p.path().join("dist/hello-2.0.tar.gz");
    let out = app.run_with(
        &[
            "deploy",
            "--artifact",
            artifact.to_str().unwrap(),
            "--hosts",
            &tb.host(0).ip,
        ],
        &[("MESSAGE", "hello v2")],
    );
    out.code(0);
    assert!(
        out.stdout.contains("unchanged"),
        "same artifact and config: {}",
        out.stdout
    );
    let evil = app.p.path().join("evil.tar.gz");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("cd {} && mkdir -p e && echo x > e/f && tar czf {} --absolute-names /etc/hostname -C e f", app.p.path().display(), evil.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let out = app.run_with(&["deploy", "--artifact", evil.to_str().unwrap()], &[]);
    out.code(2);
    assert!(
        out.stderr.contains("refusing") && out.stderr.contains("absolute path `/etc/hostname`"),
        "{}",
        out.stderr
    );
    assert!(
        !tb.root(0, "ls /opt/hello/.shipit/artifacts")
            .contains(&crate::support::sha256_hex(&std::fs::read(&evil).unwrap()))
    );

    // status --json tells the same story.
    let out = app.shipit(&["status", "--json"]);
    out.code(0);
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["mixed"], false);
    for i in 0..3 {
        let h = &status["hosts"][i];
        assert_eq!(h["reachable"], true);
        assert_eq!(h["current"], second.as_str());
        assert_eq!(h["version"], "2.0");
        assert_eq!(h["healthy"], true, "{h:#}");
        assert_eq!(h["release_count"], 2);
        assert_eq!(h["lock"], serde_json::Value::Null);
        assert!(h["service"].as_str().unwrap().starts_with("active"));
    }

    // --force of the same artifact in the same UTC second as a release of it: the release
    // id (second + sha8) is taken, so the deploy takes the next free second. Fake releases
    // for the next seconds on host 0 make the collision certain.
    let sha8 = crate::support::sha256_hex(&std::fs::read(&artifact).unwrap())[..8].to_owned();
    let fakes = tb.root(
        0,
        &format!(
            "now=$(date -u +%s); for k in 0 1 2 3 4 5 6 7; do d=/opt/hello/releases/$(date -u -d @$((now+k)) +%Y%m%dT%H%M%SZ)-{sha8}; mkdir -p $d; chown deploy $d; echo ${{d##*/}}; done"
        ),
    );
    let fakes: Vec<&str> = fakes.lines().collect();
    let out = app.run_with(
        &[
            "deploy",
            "--force",
            "--artifact",
            artifact.to_str().unwrap(),
            "--hosts",
            &tb.host(0).ip,
        ],
        &[("MESSAGE", "hello v2")],
    );
    out.code(0);
    assert!(
        out.stderr.contains("already exists on a host"),
        "{}",
        out.stderr
    );
    let now_on = app.current(0);
    assert!(
        !fakes.contains(&now_on.as_str()) && now_on != second,
        "{now_on} is a new release"
    );
    assert_eq!(app.http(0), "hello v2");
}

#[test]
fn unhealthy_releases_are_rolled_back_and_marked_failed() {
    let Some(tb) = Testbed::up("e2e-deploy-unhealthy", 2) else {
        return;
    };
    let app = App::new(&tb, &[0, 1], "");
    let (out, summary) = app.deploy("1.0", &[], &[]);
    out.code(0);
    let good = summary["release"].as_str().unwrap().to_owned();
    for (mode, expect) in [("crash", "hello"), ("unhealthy", "500")] {
        std::thread::sleep(Duration::from_millis(1100));
        let (out, summary) = app.deploy("1.0", &[("HELLO_MODE", mode)], &[]);
        out.code(5);
        let bad = summary["release"].as_str().unwrap().to_owned();
        // The first host is the canary (rollout.canary defaults to 1): once it fails, the
        // second is never switched.
        for (i, expected) in [(0, "rolled-back"), (1, "not-switched")] {
            let h = host_result(&summary, i);
            assert_eq!(h["result"], expected, "{mode}: {summary:#}");
            assert_eq!(app.current(i), good, "{mode}: current unchanged");
            assert_eq!(app.http(i), "hello v1", "{mode}: the old release answers");
            assert_eq!(app.active(i), "active");
            assert_eq!(app.release_state(i, &bad), "failed");
            let last = app.history(i).pop().unwrap();
            assert_eq!(
                last["result"],
                if i == 0 {
                    "rolled-back"
                } else {
                    "not-switched"
                }
            );
            assert_eq!(last["release"], bad.as_str());
        }
        let reason = host_result(&summary, 0)["reason"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            reason.contains(expect),
            "{mode}: the reason says why: {reason}"
        );
        // The human summary names the failure and shows the journal.
    }
    let (out, _) = app.deploy("1.0", &[("HELLO_MODE", "crash")], &["--parallel", "1"]);
    out.code(5);
    let out = app.run_with(
        &["deploy", "--app-version", "1.0"],
        &[("HELLO_MODE", "crash")],
    );
    out.code(5);
    assert!(out.stdout.contains("rolled back"), "{}", out.stdout);
    assert!(
        out.stdout.contains("last lines of the service's journal"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_failing_before_switch_hook_switches_nothing() {
    let Some(tb) = Testbed::up("e2e-deploy-hook", 2) else {
        return;
    };
    let app = App::new(&tb, &[0, 1], "");
    let (out, summary) = app.deploy("1.0", &[], &[]);
    out.code(0);
    let good = summary["release"].as_str().unwrap().to_owned();
    // The hook fails on the second host only: the first must not switch either.
    let yaml = app.p.read("deploy.yaml").replace(
        "before_switch: ['test -x bin/hello']",
        "before_switch: ['test -x bin/hello', 'echo migrating; test \"$(hostname)\" != host2']",
    );
    app.p.file("deploy.yaml", &yaml);
    std::thread::sleep(Duration::from_millis(1100));
    app.set_version("2");
    let (out, summary) = app.deploy("2.0", &[], &[]);
    out.code(1);
    let bad = summary["release"].as_str().unwrap().to_owned();
    for i in 0..2 {
        assert_eq!(app.current(i), good, "nothing switched");
        assert_eq!(app.http(i), "hello v1");
        assert_eq!(app.release_state(i, &bad), "failed");
    }
    let h2 = host_result(&summary, 1);
    assert_eq!(h2["result"], "failed");
    assert_eq!(h2["step"], "before_switch:2");
    assert!(
        h2["reason"]
            .as_str()
            .unwrap()
            .contains("before_switch hook 2 failed"),
        "{h2:#}"
    );
    assert!(
        out.stderr.contains("migrating"),
        "hook output is shown: {}",
        out.stderr
    );
    assert!(!tb.root(0, "ls -A /opt/hello/.shipit").contains("lock"));
}

#[test]
fn rollback_to_the_previous_release_and_to_a_chosen_one() {
    let Some(tb) = Testbed::up("e2e-rollback", 2) else {
        return;
    };
    let app = App::new(&tb, &[0, 1], "");
    let mut ids = Vec::new();
    for v in 1..=3 {
        app.set_version(&v.to_string());
        let (out, summary) = app.deploy(
            &format!("{v}.0"),
            &[("MESSAGE", &format!("hello v{v}"))],
            &[],
        );
        out.code(0);
        ids.push(summary["release"].as_str().unwrap().to_owned());
        std::thread::sleep(Duration::from_millis(1100));
    }
    let out = app.shipit(&["rollback", "--json"]);
    out.code(0);
    for i in 0..2 {
        assert_eq!(app.current(i), ids[1]);
        assert_eq!(app.http(i), "hello v2");
        assert_eq!(app.release_state(i, &ids[2]), "rolled-back");
        let last = app.history(i).pop().unwrap();
        assert_eq!(last["action"], "rollback");
        assert_eq!(last["release"], ids[1].as_str());
    }
    // Again: one further back, not back and forth.
    app.shipit(&["rollback"]).code(0);
    assert_eq!(app.current(0), ids[0]);
    assert_eq!(app.http(0), "hello v1");
    // Nothing older: an error naming the host, nothing changed.
    let out = app.shipit(&["rollback"]);
    out.code(1);
    assert!(
        out.stdout.contains("nothing to roll back to"),
        "{}",
        out.stdout
    );
    assert_eq!(app.current(0), ids[0]);
    // --to a chosen release.
    let out = app.shipit(&["rollback", "--to", &ids[1]]);
    out.code(0);
    assert_eq!(app.current(1), ids[1]);
    assert_eq!(app.http(1), "hello v2");
    let out = app.shipit(&["rollback", "--to", "20000101T000000Z-deadbeef"]);
    out.code(1);
    assert!(out.stdout.contains("is not on this host"), "{}", out.stdout);
}

#[test]
fn keep_releases_removes_failed_first_and_keeps_the_rollback_target() {
    let Some(tb) = Testbed::up("e2e-keep", 1) else {
        return;
    };
    // delta: off, so that every release has its cached artifact to clean up.
    let app = App::new(&tb, &[0], "keep_releases: 2\ndelta: off\n");
    let deployed = |v: &str, env: &[(&str, &str)], code: i32| {
        app.set_version(v);
        let (out, summary) = app.deploy(v, env, &[]);
        out.code(code);
        std::thread::sleep(Duration::from_millis(1100));
        summary["release"].as_str().unwrap().to_owned()
    };
    let v1 = deployed("1", &[], 0);
    let v2 = deployed("2", &[], 0);
    let v3 = deployed("3", &[("HELLO_MODE", "crash")], 5);
    let v4 = deployed("4", &[("HELLO_MODE", "crash")], 5);
    assert_eq!(app.current(0), v2);
    let v5 = deployed("5", &[], 0);
    let left = app.releases(0);
    assert_eq!(
        left,
        [v2.clone(), v5.clone()],
        "failed ones ({v3}, {v4}) and the oldest ({v1}) removed"
    );
    let artifacts = tb
        .root(0, "ls /opt/hello/.shipit/artifacts")
        .lines()
        .count();
    assert_eq!(
        artifacts, 2,
        "cached artifacts of removed releases are removed"
    );
    app.shipit(&["rollback"]).code(0);
    assert_eq!(app.current(0), v2);
}

#[test]
fn a_lock_held_elsewhere_stops_the_deploy_until_it_is_released() {
    let Some(tb) = Testbed::up("e2e-lock", 2) else {
        return;
    };
    let app = App::new(&tb, &[0, 1], "");
    app.deploy("1.0", &[], &[]).0.code(0);
    let owner = r#"{"token":"t0ken","user":"alice","machine":"laptop-of-alice","pid":4242,"started_at":1700000000,"command":"shipit deploy","version":"9.9"}"#;
    tb.root(1, &format!("mkdir /opt/hello/.shipit/lock && printf '%s' '{owner}' > /opt/hello/.shipit/lock/owner.json && chown -R deploy: /opt/hello/.shipit/lock"));
    app.set_version("2");
    let out = app.run_with(&["deploy", "--app-version", "2.0"], &[]);
    out.code(3);
    assert!(
        out.stdout
            .contains("locked by alice@laptop-of-alice (pid 4242) running `shipit deploy` of 9.9"),
        "{}",
        out.stdout
    );
    assert!(
        !tb.root(0, "ls -A /opt/hello/.shipit").contains("lock"),
        "the lock taken on the other host was given back"
    );
    let before = app.current(0);

    // status reports it.
    let status: serde_json::Value =
        serde_json::from_str(&app.shipit(&["status", "--json"]).stdout).unwrap();
    assert!(
        status["hosts"][1]["lock"]
            .as_str()
            .unwrap()
            .contains("alice@laptop-of-alice")
    );
    assert!(status["hosts"][1]["lock_age_secs"].as_u64().unwrap() > 1000);

    // --wait-lock: the holder finishes while we wait.
    let mut waiter = {
        let mut cmd = tb.shipit_command(
            &app.p,
            &["deploy", "--app-version", "2.0", "--wait-lock", "30s"],
        );
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let stderr = waiter.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("waiting for the lock held by alice@laptop-of-alice") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("shipit says it is waiting for the lock");
    tb.root(1, "rm -rf /opt/hello/.shipit/lock");
    let status = waiter.wait().unwrap();
    let stderr = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_ne!(app.current(0), before);

    // unlock says who held it.
    tb.root(0, &format!("mkdir /opt/hello/.shipit/lock && printf '%s' '{owner}' > /opt/hello/.shipit/lock/owner.json && chown -R deploy: /opt/hello/.shipit/lock"));
    let out = app.shipit(&["unlock"]);
    out.code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "{}: removed the lock of alice@laptop-of-alice (pid 4242)",
            tb.host(0).ip
        )),
        "{}",
        out.stdout
    );
    assert_eq!(lines[1], format!("{}: no lock", tb.host(1).ip));
    assert!(!tb.root(0, "ls -A /opt/hello/.shipit").contains("lock"));
}

/// Start a deploy, wait until `marker` (a shell test on host 0) holds, then signal it.
fn signal_during(app: &App, version: &str, marker: &str, signal: i32) -> std::process::Output {
    let mut cmd = app
        .tb
        .shipit_command(&app.p, &["deploy", "--app-version", version]);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never reached: {marker}"
        );
        if app
            .tb
            .root(0, &format!("if {marker}; then echo yes; fi"))
            .contains("yes")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, signal) };
    child.wait_with_output().unwrap()
}

#[test]
fn sigterm_and_sigkill_never_leave_a_half_made_current() {
    let Some(tb) = Testbed::up("e2e-signals", 1) else {
        return;
    };
    let app = App::new(&tb, &[0], "");
    app.p.file(
        "deploy.yaml",
        &app.p.read("deploy.yaml").replace(
            "before_switch: ['test -x bin/hello']",
            "before_switch: ['test -x bin/hello', 'touch /tmp/in-hook; sleep 3']",
        ),
    );
    let (out, summary) = app.deploy("1.0", &[], &[]);
    out.code(0);
    let good = summary["release"].as_str().unwrap().to_owned();
    // A big artifact, so the upload takes a while.
    let mut noise = vec![0u8; 160 << 20];
    let mut x: u64 = 7;
    for c in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    std::fs::write(app.p.path().join("pkg/bin/blob"), &noise).unwrap();
    let upload_running = "ls /opt/hello/.shipit/artifacts/ | grep -q part";
    let check = |what: &str| {
        assert_eq!(
            app.current(0),
            good,
            "{what}: current still points at the complete old release"
        );
        assert_eq!(app.http(0), "hello v1", "{what}: the app answers");
    };

    // SIGTERM during the upload: stops, releases the lock.
    let out = signal_during(&app, "2.0", upload_running, libc::SIGTERM);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check("SIGTERM in upload");
    assert!(
        !tb.root(0, "ls -A /opt/hello/.shipit").contains("lock"),
        "lock released"
    );

    // SIGTERM while before_switch runs: the stage finishes, nothing is switched.
    tb.root(0, "rm -f /tmp/in-hook");
    let out = signal_during(&app, "3.0", "[ -e /tmp/in-hook ]", libc::SIGTERM);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check("SIGTERM before the switch");
    assert!(!tb.root(0, "ls -A /opt/hello/.shipit").contains("lock"));

    // SIGKILL during the upload: the lock stays and status says so.
    let _ = signal_during(&app, "4.0", upload_running, libc::SIGKILL);
    check("SIGKILL in upload");
    let status: serde_json::Value =
        serde_json::from_str(&app.shipit(&["status", "--json"]).stdout).unwrap();
    assert!(
        status["hosts"][0]["lock"]
            .as_str()
            .unwrap_or("")
            .contains("running `shipit deploy` of 4.0"),
        "{status:#}"
    );

    // SIGKILL right before the switch.
    tb.root(0, "rm -f /tmp/in-hook");
    let _ = signal_during(&app, "5.0", "[ -e /tmp/in-hook ]", libc::SIGKILL);
    check("SIGKILL before the switch");

    // The next deploy breaks the dead process's lock and works; half-made releases are
    // never rollback targets and get cleaned.
    std::fs::remove_file(app.p.path().join("pkg/bin/blob")).unwrap();
    app.set_version("6");
    let (out, summary) = app.deploy("6.0", &[], &[]);
    out.code(0);
    assert!(
        out.stderr.contains("breaking a stale lock"),
        "{}",
        out.stderr
    );
    let newest = summary["release"].as_str().unwrap().to_owned();
    assert_eq!(app.current(0), newest);
    assert!(
        !tb.root(0, "ls -A /opt/hello/releases").contains(".tmp-"),
        "half-made releases cleaned"
    );
    app.shipit(&["rollback"]).code(0);
    assert_eq!(
        app.current(0),
        good,
        "the rollback target is the last good release, not a half-made one"
    );
}

#[test]
fn a_full_disk_on_one_host_switches_nothing() {
    let Some(tb) = Testbed::up_with("e2e-disk", 2, &["--small-opt", "host2:40M"]) else {
        return;
    };
    let app = App::new(&tb, &[0, 1], "");
    let (out, summary) = app.deploy("1.0", &[], &[]);
    out.code(0);
    let good = summary["release"].as_str().unwrap().to_owned();
    tb.fault(&["fill-opt", "host2"]);
    app.set_version("2");
    let (out, summary) = app.deploy("2.0", &[], &[]);
    out.code(1);
    for i in 0..2 {
        assert_eq!(app.current(i), good);
        assert_eq!(app.http(i), "hello v1");
    }
    let h2 = host_result(&summary, 1);
    assert_eq!(h2["result"], "failed", "{summary:#}");
    assert!(
        h2["reason"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{h2:#}"
    );
    assert_eq!(host_result(&summary, 0)["result"], "failed");
    assert!(
        host_result(&summary, 0)["reason"]
            .as_str()
            .unwrap()
            .contains("not switched")
    );
    tb.fault(&["unfill-opt", "host2"]);
}

#[test]
fn a_cleanup_that_hits_a_root_owned_file_is_a_warning() {
    let Some(tb) = Testbed::up("e2e-cleanup", 1) else {
        return;
    };
    // delta: off, so that every release has its cached artifact to clean up.
    let app = App::new(&tb, &[0], "keep_releases: 2\ndelta: off\n");
    let (_, s1) = app.deploy("1", &[], &[]);
    let first = s1["release"].as_str().unwrap().to_owned();
    tb.root(0, &format!("mkdir /opt/hello/releases/{first}/rootdir && touch /opt/hello/releases/{first}/rootdir/f"));
    for v in ["2", "3"] {
        std::thread::sleep(Duration::from_millis(1100));
        app.set_version(v);
        let (out, _) = app.deploy(v, &[], &[]);
        out.code(0);
        if v == "3" {
            assert!(
                out.stderr.contains("warning:") && out.stderr.contains("could not remove"),
                "{}",
                out.stderr
            );
        }
    }
    assert_eq!(app.http(0), "hello v1");
    assert!(app.current(0).len() > 10);
}

/// Make version `v` fail its health check on host `i` (the health command looks for this
/// file, named after the release's VERSION, so older releases stay healthy).
fn make_unhealthy(tb: &Testbed, i: usize, v: &str) {
    tb.root(i, &format!("touch /etc/shipit-unhealthy-{v}"));
}

fn results(summary: &serde_json::Value) -> Vec<String> {
    summary["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["result"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_failing_host_after_the_canary_puts_every_host_back_or_halts() {
    let Some(tb) = Testbed::up("e2e-rollout-5", 5) else {
        return;
    };
    let app = App::new(&tb, &[0, 1, 2, 3, 4], "rollout: {canary: 1, parallel: 2}\n");
    let (out, summary) = app.deploy("1", &[], &[]);
    out.code(0);
    let good = summary["release"].as_str().unwrap().to_owned();
    for v in ["2", "3", "4"] {
        make_unhealthy(&tb, 2, v);
    }

    // on_failure: rollback (the default). Batches: [host1] [host2 host3] [host4 host5].
    app.set_version("2");
    let (out, summary) = app.deploy("2", &[], &[]);
    out.code(5);
    assert_eq!(
        results(&summary),
        [
            "rolled-back",
            "rolled-back",
            "rolled-back",
            "not-switched",
            "not-switched"
        ],
        "{summary:#}"
    );
    for i in 0..5 {
        assert_eq!(
            app.current(i),
            good,
            "host{} is back on the old release",
            i + 1
        );
        assert_eq!(app.http(i), "hello v1");
    }
    let failed = host_result(&summary, 2);
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("health command exited"),
        "{failed:#}"
    );
    assert!(
        host_result(&summary, 0)["reason"]
            .as_str()
            .unwrap()
            .contains("the rollout stopped")
    );
    let human = app.run_with(&["deploy", "--app-version", "2"], &[]);
    human.code(5);
    let total = human
        .stdout
        .lines()
        .find(|l| l.starts_with("TOTAL"))
        .unwrap_or_else(|| panic!("a TOTAL row: {}", human.stdout));
    assert!(
        total.contains("5 host(s)") && total.contains("3 rolled back, 2 not switched"),
        "{total}"
    );
    let named = human.stdout.lines().any(|l| {
        l.starts_with(&format!("{}: ", tb.host(2).ip))
            && l.contains("health command exited with status 1")
    });
    assert!(
        named,
        "the summary names the failed host and why: {}",
        human.stdout
    );

    // on_failure: halt leaves the healthy hosts on the new release and says so.
    app.p.file(
        "deploy.yaml",
        &app.p.read("deploy.yaml").replace(
            "rollout: {canary: 1, parallel: 2}",
            "rollout: {canary: 1, parallel: 2, on_failure: halt}",
        ),
    );
    std::thread::sleep(Duration::from_millis(1100));
    app.set_version("3");
    let (out, summary) = app.deploy("3", &[], &[]);
    out.code(6);
    let new = summary["release"].as_str().unwrap().to_owned();
    assert_eq!(
        results(&summary),
        [
            "done",
            "done",
            "rolled-back",
            "not-switched",
            "not-switched"
        ],
        "{summary:#}"
    );
    let on: Vec<String> = (0..5).map(|i| app.current(i)).collect();
    assert_eq!(
        on,
        [
            new.clone(),
            new.clone(),
            good.clone(),
            good.clone(),
            good.clone()
        ]
    );
    for (i, release) in on.iter().enumerate() {
        assert_eq!(
            host_result(&summary, i)["release"],
            release.as_str(),
            "the summary says exactly which host is on which release"
        );
    }
    let status: serde_json::Value =
        serde_json::from_str(&app.shipit(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["mixed"], true);

    // max_failures: 1 tolerates the one failing host; the rest finish; exit 1 names it.
    app.p.file(
        "deploy.yaml",
        &app.p.read("deploy.yaml").replace(
            "on_failure: halt}",
            "on_failure: rollback, max_failures: 1}",
        ),
    );
    std::thread::sleep(Duration::from_millis(1100));
    app.set_version("4");
    let (out, summary) = app.deploy("4", &[], &[]);
    out.code(1);
    let v4 = summary["release"].as_str().unwrap().to_owned();
    assert_eq!(
        results(&summary),
        ["done", "done", "rolled-back", "done", "done"],
        "{summary:#}"
    );
    assert_eq!(app.current(3), v4);
    assert_eq!(app.current(2), good);
    assert!(
        out.stderr.contains(&format!(
            "failed within max_failures and were put back: {}",
            tb.host(2).ip
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn a_failing_canary_stops_everything_before_any_other_host_switches() {
    let Some(tb) = Testbed::up("e2e-rollout-canary", 3) else {
        return;
    };
    let app = App::new(&tb, &[0, 1, 2], "rollout: {canary: 1, parallel: 5}\n");
    let (out, summary) = app.deploy("1", &[], &[]);
    out.code(0);
    let good = summary["release"].as_str().unwrap().to_owned();
    make_unhealthy(&tb, 0, "2");
    app.set_version("2");
    let (out, summary) = app.deploy("2", &[], &[]);
    out.code(5);
    assert_eq!(
        results(&summary),
        ["rolled-back", "not-switched", "not-switched"],
        "{summary:#}"
    );
    for i in 0..3 {
        assert_eq!(app.current(i), good);
    }
    // The other hosts' history shows the attempt, and no switch.
    for i in 1..3 {
        let history = app.history(i);
        assert_eq!(history.len(), 2, "host{}: {history:?}", i + 1);
        assert_eq!(history[1]["result"], "not-switched");
    }
}

#[test]
fn ten_hosts_switch_at_most_parallel_at_once_and_the_event_streams_parse() {
    let Some(tb) = Testbed::up("e2e-rollout-10", 10) else {
        return;
    };
    let hosts: Vec<usize> = (0..10).collect();
    let app = App::new(&tb, &hosts, "rollout: {canary: 1, parallel: 3}\n");
    let out = app.run_with(
        &["--log-format", "json", "deploy", "--app-version", "1"],
        &[],
    );
    out.code(0);
    // Every stderr line is a JSON object of the one shape of docs/json.md (`level`,
    // `time`, `message`); host events carry the host and the time since the run began.
    let events: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for e in &events {
        for key in ["level", "time", "message"] {
            assert!(e[key].is_string(), "`{key}` in {e}");
        }
        // A host's step says when; a debug line about a host (with -v) need not.
        assert!(
            e["level"] == "debug" || e.get("host").is_none() || e["elapsed_ms"].is_u64(),
            "{e}"
        );
    }
    let mut spans: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for e in events.iter().filter(|e| e.get("host").is_some()) {
        let host = e["host"].as_str().unwrap().to_owned();
        let t = e["elapsed_ms"].as_u64().unwrap();
        let msg = e["message"].as_str().unwrap();
        if msg.starts_with("switching to ") {
            spans.entry(host.clone()).or_insert((t, u64::MAX)).0 = t;
        }
        if msg.starts_with("healthy after") {
            spans.entry(host).or_insert((0, t)).1 = t;
        }
    }
    assert_eq!(spans.len(), 10, "every host switched: {spans:?}");
    let most = spans
        .values()
        .map(|&(start, _)| {
            spans
                .values()
                .filter(|&&(s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most <= 3,
        "at most 3 hosts were switching at once, saw {most}: {spans:?}"
    );
    assert!(most >= 2, "batches did run in parallel: {spans:?}");
    let canary = spans.values().map(|s| s.0).min().unwrap();
    let first_done = spans.values().find(|s| s.0 == canary).unwrap().1;
    assert_eq!(
        spans.values().filter(|s| s.0 < first_done).count(),
        1,
        "the canary went alone: {spans:?}"
    );

    // The plain stream: one line per event with the elapsed time and the host.
    std::thread::sleep(Duration::from_millis(1100));
    app.set_version("2");
    let out = app.run_with(&["deploy", "--app-version", "2"], &[]);
    out.code(0);
    let prefix = format!("{}: ", tb.host(0).ip);
    let events: Vec<(f64, &str)> = out
        .stderr
        .lines()
        .filter_map(|l| {
            l.trim_start()
                .split_once("s ")
                .and_then(|(t, rest)| Some((t.parse::<f64>().ok()?, rest.strip_prefix(&prefix)?)))
        })
        .collect();
    let messages: Vec<&str> = events
        .iter()
        .map(|(_, m)| m.split(' ').next().unwrap_or(""))
        .collect();
    for word in ["staged", "switching", "healthy"] {
        assert!(
            messages.contains(&word),
            "a `{word}` event for host1 in:\n{}",
            out.stderr
        );
    }
    assert!(
        events.windows(2).all(|w| w[0].0 <= w[1].0),
        "times only go forward: {events:?}"
    );
}

#[test]
fn a_host_whose_link_goes_down_during_activation_counts_as_failed() {
    let Some(tb) = Testbed::up("e2e-rollout-link", 3) else {
        return;
    };
    let app = App::new(&tb, &[0, 1, 2], "rollout: {canary: 0, parallel: 3}\n");
    app.p.file(
        "deploy.yaml",
        &app.p
            .read("deploy.yaml")
            .replace("  settle: 1s", "  settle: 4s"),
    );
    let (out, summary) = app.deploy("1", &[], &[]);
    out.code(0);
    let good = summary["release"].as_str().unwrap().to_owned();
    app.set_version("2");
    let child = tb
        .shipit_command(&app.p, &["deploy", "--app-version", "2", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // As soon as host2 has switched (its health check is under way), cut its link.
    let started = Instant::now();
    while app.current(1) == good {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "host2 never switched"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    tb.fault(&["link-down", "host2"]);
    let out = child.wait_with_output().unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "a host that could not be put back: a human must look\n{summary:#}"
    );
    assert_eq!(
        results(&summary),
        ["rolled-back", "broken", "rolled-back"],
        "{summary:#}"
    );
    assert_eq!(app.current(0), good);
    assert_eq!(app.current(2), good);
    let reason = host_result(&summary, 1)["reason"].as_str().unwrap();
    assert!(
        reason.contains("putting it back failed"),
        "the summary says what is known: {reason}"
    );
    // Once the link is back, one command repairs it.
    tb.fault(&["link-up", "host2"]);
    let out = app.shipit(&["rollback", "--hosts", &tb.host(1).ip]);
    out.code(0);
    assert_eq!(app.current(1), good);
    assert_eq!(app.http(1), "hello v1");
}

/// `systemctl restart` itself fails (the unit cannot start at all): the summary carries
/// the journal lines that say why, not only systemd's "see journalctl".
#[test]
fn a_unit_that_cannot_start_shows_its_journal_in_the_summary() {
    let Some(tb) = Testbed::up("e2e-start-fails", 1) else {
        return;
    };
    let app = App::new(&tb, &[0], "");
    assert_eq!(app.deploy("1", &[], &[]).0.code, 0);
    let good = app.current(0);
    // Type=exec: the restart waits for the exec, and fails with it.
    let unit = include_str!("../../../examples/hello/deploy/hello.service")
        .replace("Type=simple", "Type=exec")
        .replace(
            "ExecStart=/opt/hello/current/bin/hello",
            "ExecStart=/opt/hello/current/bin/nope",
        );
    app.p.file("deploy/hello.service", &unit);
    app.set_version("2");
    let (out, summary) = app.deploy("2", &[], &[]);
    assert_eq!(out.code, 5, "{}\n{}", out.stdout, out.stderr);
    let host = &summary["hosts"][0];
    assert!(
        host["reason"].as_str().unwrap_or("").contains("restart"),
        "{summary:#}"
    );
    let journal = host["journal"].as_str().unwrap_or("");
    assert!(
        journal.contains("bin/nope"),
        "the journal does not say why:\n{summary:#}"
    );
    assert_eq!(app.current(0), good);
}

/// `shipit lock --message` holds deploys, says why everywhere, and `unlock` lifts it.
#[test]
fn a_lock_by_hand_holds_deploys_with_its_message_until_unlock() {
    let Some(tb) = Testbed::up("e2e-lock-message", 1) else {
        return;
    };
    let app = App::new(&tb, &[0], "");
    assert_eq!(app.deploy("1", &[], &[]).0.code, 0);
    let why = "db maintenance until 14:00";
    let out = app.shipit(&["lock", "--message", why]);
    out.code(0);
    assert!(
        out.stdout.contains("locked: \"db maintenance"),
        "{}",
        out.stdout
    );
    // A deploy stops at the lock, naming it; nothing changes.
    let before = app.current(0);
    app.set_version("2");
    let (out, summary) = app.deploy("2", &[], &[]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert!(summary.to_string().contains(why), "{summary:#}");
    assert_eq!(app.current(0), before);
    // `status` shows it, and it is never taken for a dead deploy's lock.
    let st: serde_json::Value =
        serde_json::from_str(&app.shipit(&["status", "--json"]).stdout).unwrap();
    assert!(
        st["hosts"][0]["lock"].as_str().unwrap().contains(why),
        "{st:#}"
    );
    assert_eq!(st["hosts"][0]["lock_stale"], false, "{st:#}");
    // A second lock is refused, naming the first.
    let out = app.shipit(&["lock", "-m", "another reason"]);
    out.code(3);
    assert!(out.stdout.contains(why), "{}", out.stdout);
    // `unlock` lifts it; the deploy goes through.
    let out = app.shipit(&["unlock"]);
    out.code(0);
    assert!(out.stdout.contains(why), "{}", out.stdout);
    assert_eq!(app.deploy("2", &[], &[]).0.code, 0);
}

/// `shipit exec` runs in the live release with its env, prefixes each host's output,
/// and fails when the command fails anywhere, naming where.
#[test]
fn exec_runs_in_the_live_release_and_reports_where_it_failed() {
    let Some(tb) = Testbed::up("e2e-exec", 2) else {
        return;
    };
    let app = App::new(&tb, &[0, 1], "");
    assert_eq!(app.deploy("1", &[], &[]).0.code, 0);
    let out = app.shipit(&[
        "exec",
        "--",
        "echo \"$MESSAGE from $(cat VERSION) in $PWD\"",
    ]);
    out.code(0);
    for i in 0..2 {
        let ip = &tb.host(i).ip;
        let release = app.current(0);
        let want = format!("{ip}: hello v1 from 1 in /opt/hello/releases/{release}");
        assert!(
            out.stdout.lines().any(|l| l == want),
            "{want}\n{}",
            out.stdout
        );
    }
    // A glob picks hosts by name: `*.<last octet of host 2>` is host 2 alone.
    let octet = tb.host(1).ip.rsplit('.').next().unwrap().to_owned();
    let out = app.shipit(&[
        "exec",
        "--hosts",
        &format!("*.{octet}"),
        "--",
        "echo picked",
    ]);
    out.code(0);
    assert_eq!(out.stdout.trim(), format!("{}: picked", tb.host(1).ip));
    tb.root(1, "touch /etc/exec-fails-here");
    let out = app.shipit(&[
        "exec",
        "--hosts",
        &tb.host(1).ip,
        "--",
        "test ! -e /etc/exec-fails-here",
    ]);
    out.code(1);
    assert!(
        out.stderr
            .contains(&format!("failed on {}: exit status 1", tb.host(1).ip)),
        "{}",
        out.stderr
    );
    let out = app.shipit(&["exec", "--", "test ! -e /etc/exec-fails-here"]);
    out.code(1);
    assert!(out.stderr.contains("succeeded on 1 of 2"), "{}", out.stderr);
}

/// `shipit logs` shows the app's journal per host; `-f` shows a line the app writes
/// after it started following.
#[test]
fn logs_shows_the_journal_and_follows_new_lines() {
    let Some(tb) = Testbed::up("e2e-logs", 2) else {
        return;
    };
    let app = App::new(&tb, &[0, 1], "");
    assert_eq!(app.deploy("1", &[], &[]).0.code, 0);
    let out = app.shipit(&["logs", "-n", "20"]);
    out.code(0);
    for i in 0..2 {
        let ip = &tb.host(i).ip;
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{ip}: ")) && l.contains("listening")),
            "{}",
            out.stdout
        );
    }
    // Follow from now on: no old line, then the app's own line after a restart.
    let mut child = app
        .tb
        .shipit_command(
            &app.p,
            &["logs", "-f", "-n", "0", "--hosts", &tb.host(0).ip],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let keep = seen.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            keep.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        tb.root(0, "systemctl restart hello");
        std::thread::sleep(Duration::from_millis(700));
        let lines = seen.lock().unwrap().clone();
        if lines.iter().any(|l| l.contains("listening")) {
            break lines;
        }
        assert!(Instant::now() < deadline, "nothing followed: {lines:?}");
    };
    let _ = child.kill();
    let _ = child.wait();
    let ip = &tb.host(0).ip;
    assert!(
        found.iter().all(|l| l.starts_with(&format!("{ip}: "))),
        "{found:?}"
    );
}

/// Hooks find the run's context in their environment: remote hooks the host, the
/// releases, the command; local hooks the hosts, the result and the JSON summary.
#[test]
fn hooks_get_the_runs_context_in_their_environment() {
    let Some(tb) = Testbed::up("e2e-hook-env", 1) else {
        return;
    };
    let app = App::new(&tb, &[0], "");
    assert_eq!(app.deploy("1", &[], &[]).0.code, 0);
    let first = app.current(0);
    let text = app.p.read("deploy.yaml").replace(
        "hooks:\n  before_switch: ['test -x bin/hello']\n",
        "hooks:\n  before_switch: ['env | grep ^SHIPIT_ | sort > /tmp/before.env']\n  \
         after_switch: ['env | grep ^SHIPIT_ | sort > /tmp/after.env']\n  \
         local_after: ['env | grep ^SHIPIT_ | sort > local.env; cp \"$SHIPIT_SUMMARY\" summary.json']\n",
    );
    assert!(text.contains("local_after"), "{text}");
    app.p.file("deploy.yaml", &text);
    app.set_version("2");
    let (out, _) = app.deploy("2", &[], &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let release = app.current(0);
    let ip = &tb.host(0).ip;
    for file in ["/tmp/before.env", "/tmp/after.env"] {
        let env = tb.root(0, &format!("cat {file}"));
        for want in [
            "SHIPIT_APP=hello".to_owned(),
            "SHIPIT_VERSION=2".to_owned(),
            format!("SHIPIT_RELEASE={release}"),
            format!("SHIPIT_PREVIOUS_RELEASE={first}"),
            format!("SHIPIT_HOST={ip}"),
            "SHIPIT_COMMAND=deploy".to_owned(),
        ] {
            assert!(
                env.lines().any(|l| l == want),
                "{file}: {want} not in\n{env}"
            );
        }
        assert!(env.contains("SHIPIT_PERFORMER="), "{env}");
    }
    let local = app.p.read("local.env");
    for want in [
        format!("SHIPIT_HOSTS={ip}"),
        "SHIPIT_RESULT=ok".to_owned(),
        format!("SHIPIT_RELEASE={release}"),
    ] {
        assert!(local.lines().any(|l| l == want), "{want} not in\n{local}");
    }
    let summary: serde_json::Value = serde_json::from_str(&app.p.read("summary.json")).unwrap();
    assert_eq!(summary["hosts"][0]["result"], "done", "{summary:#}");
}

/// `once: true`: the migration runs on exactly one host (the first), after every host
/// staged and before any host switched; the history says where. A failing one leaves
/// every host on its old release.
#[test]
fn a_once_only_hook_runs_on_one_host_before_any_switch_and_its_failure_switches_none() {
    let Some(tb) = Testbed::up("e2e-once", 3) else {
        return;
    };
    let app = App::new(&tb, &[0, 1, 2], "rollout: {canary: 1, parallel: 1}\n");
    assert_eq!(app.deploy("1", &[], &[]).0.code, 0);
    let first = app.current(0);
    let text = app.p.read("deploy.yaml").replace(
        "hooks:\n  before_switch: ['test -x bin/hello']\n",
        "hooks:\n  before_switch:\n    - 'test -x bin/hello'\n    - run: \
         'date +%s.%N > /tmp/once-at && echo \"$SHIPIT_HOST $SHIPIT_RELEASE\" > /tmp/once-ran \
         && test \"${FAIL_ONCE:-no}\" = no'\n      once: true\n",
    );
    let text = text.replace("env:\n", "env:\n  FAIL_ONCE: ${FAIL_ONCE:-no}\n");
    assert!(
        text.contains("once: true") && text.contains("FAIL_ONCE:"),
        "{text}"
    );
    app.p.file("deploy.yaml", &text);

    app.set_version("2");
    let (out, _) = app.deploy("2", &[], &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let release = app.current(0);
    assert_ne!(release, first);
    let ip0 = &tb.host(0).ip;
    assert_eq!(
        tb.root(0, "cat /tmp/once-ran").trim(),
        format!("{ip0} {release}")
    );
    let ran_at: f64 = tb.root(0, "cat /tmp/once-at").trim().parse().unwrap();
    for i in 0..3 {
        assert_eq!(app.current(i), release, "host {i}");
        if i > 0 {
            assert_eq!(tb.root(i, "cat /tmp/once-ran 2>/dev/null || true"), "");
        }
        // `current` was replaced after the hook ran: the link's own mtime is its switch.
        let switched: f64 = tb
            .root(i, "stat -c %.9Y /opt/hello/current")
            .trim()
            .parse()
            .unwrap();
        assert!(
            ran_at < switched,
            "host {i}: hook at {ran_at}, switch at {switched}"
        );
        let history = tb.root(i, "tail -n 1 /opt/hello/.shipit/history.jsonl");
        let line: serde_json::Value = serde_json::from_str(history.trim()).unwrap();
        assert_eq!(line["once_on"], ip0.as_str(), "host {i}: {line}");
    }

    app.set_version("3");
    let (out, summary) = app.deploy("3", &[("FAIL_ONCE", "yes")], &[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    for i in 0..3 {
        assert_eq!(app.current(i), release, "host {i} switched");
        assert_eq!(app.active(i), "active", "host {i}");
    }
    assert_eq!(summary["hosts"][0]["step"], "once:1", "{summary:#}");
    assert!(
        summary["hosts"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("failed at once:1"),
        "{summary:#}"
    );
}
