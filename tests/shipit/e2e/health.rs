//! The health-check engine (`shipit::health`) against real systemd units on one booted
//! nspawn host: a healthy app, one that crashes at once, one that answers 500, one that
//! answers and then dies inside the settle window, `health.command`, systemd-user units,
//! and the journal tail shown under a failure.
//!
//! The tests share one testbed (`e2e-health`): the first test to need it boots it, the
//! last one to finish tears it down. Each test owns its units (`hc-*`) and ports.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use shipit::config::{HttpCheck, ServiceManager};
use shipit::health::{self, Attempt, Baseline, Outcome, Spec};
use shipit::redact::Text;
use shipit::ssh::Session;

use crate::e2e::Testbed;

static SHARED: Mutex<Weak<Testbed>> = Mutex::new(Weak::new());

/// A handle on the shared testbed; teardown happens (under the lock) when the last
/// handle is dropped, so a test starting later boots a fresh one without racing it.
struct Bed(Option<Arc<Testbed>>);

impl Bed {
    fn get() -> Option<Bed> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tb) = shared.upgrade() {
            return Some(Bed(Some(tb)));
        }
        let tb = Arc::new(Testbed::up("e2e-health", 1)?);
        *shared = Arc::downgrade(&tb);
        Some(Bed(Some(tb)))
    }
}

impl std::ops::Deref for Bed {
    type Target = Testbed;
    fn deref(&self) -> &Testbed {
        self.0.as_ref().unwrap()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        self.0.take();
    }
}

fn target(tb: &Testbed, user: &str) -> shipit::ssh::Target {
    let host = tb.host(0);
    shipit::ssh::Target {
        name: host.name.clone(),
        host: host.ip.clone(),
        port: host.port,
        user: user.into(),
        identity_files: vec![tb.state.client_key.clone()],
        known_hosts: shipit::ssh::KnownHostsPolicy::Strict,
        known_hosts_files: vec![tb.state.known_hosts.clone()],
        proxy_jump: None,
        proxy_command: None,
        identity_agent: None,
        connect_timeout: Duration::from_secs(5),
    }
}

/// Runs `f` with a session to the host as `user`, from the client namespace.
fn on_host<T: Send>(tb: &Testbed, user: &str, f: impl AsyncFnOnce(&Session) -> T + Send) -> T {
    let target = target(tb, user);
    tb.in_client_netns(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let session = shipit::ssh::Connector::new(1)
                .agent_socket(None)
                .interactive(false)
                .connect(&target)
                .await
                .unwrap();
            let out = f(&session).await;
            let _ = session.close().await;
            out
        })
    })
}

/// Installs a system unit `name` (and `files`: path, content) as root.
fn install(tb: &Testbed, name: &str, service: &str, files: &[(&str, &str)]) {
    let mut script = String::from("set -e\n");
    for (path, content) in files {
        script.push_str(&format!(
            "mkdir -p \"$(dirname {path})\"\ncat > {path} <<'SHIPIT_EOF'\n{content}\nSHIPIT_EOF\n"
        ));
    }
    script.push_str(&format!(
        "cat > /etc/systemd/system/{name}.service <<'SHIPIT_EOF'\n[Service]\n{service}\nSHIPIT_EOF\nsystemctl daemon-reload\n"
    ));
    tb.root(0, &script);
}

/// What the deploy pipeline does: restart, then read the baseline at once.
async fn restart(session: &Session, manager: ServiceManager, unit: &str) -> Baseline {
    let ctl = match manager {
        ServiceManager::SystemdUser => "systemctl --user",
        _ if session_user_is_root(session).await => "systemctl",
        _ => "sudo -n systemctl",
    };
    let out = session
        .exec(&format!("{ctl} restart {unit}"), |_, _| {})
        .await
        .unwrap();
    assert!(out.success(), "restart {unit}: {}", out.stderr_tail);
    health::baseline(session, manager, unit).await.unwrap()
}

async fn session_user_is_root(session: &Session) -> bool {
    let out = session.exec("id -u", |_, _| {}).await.unwrap();
    out.stdout.trim() == "0"
}

fn http(port: u16, path: &str, contains: Option<&str>) -> HttpCheck {
    HttpCheck {
        url: Text::plain(format!("http://127.0.0.1:{port}{path}")),
        host: "127.0.0.1".into(),
        port,
        path: path.into(),
        status: 200,
        contains: contains.map(Text::plain),
    }
}

fn spec<'a>(
    manager: ServiceManager,
    service: &'a str,
    http: Option<&'a HttpCheck>,
    timeout_ms: u64,
    interval_ms: u64,
    settle_ms: u64,
) -> Spec<'a> {
    Spec {
        http,
        command: None,
        release_dir: "/",
        manager,
        service,
        timeout: Duration::from_millis(timeout_ms),
        interval: Duration::from_millis(interval_ms),
        settle: Duration::from_millis(settle_ms),
    }
}

/// Runs the check and returns the outcome with every attempt seen.
async fn check(session: &Session, spec: &Spec<'_>, baseline: &Baseline) -> (Outcome, Vec<Attempt>) {
    let mut seen = Vec::new();
    let outcome = health::wait_healthy(session, spec, baseline, |a| seen.push(a.clone())).await;
    (outcome, seen)
}

fn unhealthy(outcome: &Outcome, seen: &[Attempt]) -> (String, Duration) {
    match outcome {
        Outcome::Unhealthy {
            reason, elapsed, ..
        } => (reason.clone(), *elapsed),
        other => panic!("expected unhealthy, got {other:?}\nattempts: {seen:#?}"),
    }
}

/// A python3 HTTP server on `port` that answers `status` with `body` to every GET, and
/// runs `after` (Python) in the main thread once serving.
fn py_server(port: u16, status: u16, body: &str, after: &str) -> String {
    format!(
        r#"import http.server, os, sys, threading, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = {body:?}.encode()
        self.send_response({status})
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", {port}), H)
threading.Thread(target=s.serve_forever, daemon=True).start()
print("serving on {port}", flush=True)
{after}
"#
    )
}

#[test]
fn healthy_app_passes_after_the_settle_window() {
    let Some(tb) = Bed::get() else { return };
    install(
        &tb,
        "hc-ok",
        "ExecStart=/usr/bin/python3 -m http.server 8101 --bind 127.0.0.1 --directory /srv/hc-ok",
        &[("/srv/hc-ok/healthz", "ok")],
    );
    tb.root(
        0,
        "mkdir -p /opt/hc-ok/r1 && touch /opt/hc-ok/r1/marker && chown -R deploy: /opt/hc-ok",
    );
    on_host(&tb, "deploy", async |session| {
        let check_ok = http(8101, "/healthz", Some("ok"));
        let baseline = restart(session, ServiceManager::Systemd, "hc-ok").await;
        assert_eq!(baseline.n_restarts, 0);
        assert!(baseline.main_start.is_some());
        let mut s = spec(
            ServiceManager::Systemd,
            "hc-ok",
            Some(&check_ok),
            20_000,
            200,
            1000,
        );
        s.command = Some("test -f ./marker");
        s.release_dir = "/opt/hc-ok/r1";
        let started = std::time::Instant::now();
        let (outcome, seen) = check(session, &s, &baseline).await;
        let took = started.elapsed();
        let Outcome::Healthy { attempts, elapsed } = outcome else {
            panic!("{outcome:?}\n{seen:#?}");
        };
        assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
        assert!(took < Duration::from_secs(15), "{took:?}");
        assert_eq!(attempts as usize, seen.len());
        let last = seen.last().unwrap();
        assert_eq!(last.failure, None);
        assert!(last.passing_for >= Duration::from_secs(1));
        // Every failure before the first pass is the app still starting.
        for a in seen.iter().filter(|a| a.failure.is_some()) {
            let f = a.failure.as_deref().unwrap();
            assert!(
                f.contains("127.0.0.1:8101") || f.contains("activating"),
                "{f}"
            );
        }

        // The same app, but the body must contain something it does not.
        let check_ready = http(8101, "/healthz", Some("ready"));
        let s = spec(
            ServiceManager::None,
            "hc-ok",
            Some(&check_ready),
            1000,
            200,
            0,
        );
        let (outcome, seen) = check(session, &s, &Baseline::default()).await;
        let (reason, _) = unhealthy(&outcome, &seen);
        assert_eq!(
            reason,
            "timed out after 1s: GET http://127.0.0.1:8101/healthz: 200 OK, but the body does not contain `ready`; it starts with \"ok\\n\""
        );
        // A path that is not there.
        let check_404 = http(8101, "/nope", None);
        let s = spec(ServiceManager::None, "hc-ok", Some(&check_404), 500, 200, 0);
        let (outcome, seen) = check(session, &s, &Baseline::default()).await;
        let (reason, _) = unhealthy(&outcome, &seen);
        assert!(
            reason.starts_with("timed out after 500ms: GET http://127.0.0.1:8101/nope: 404 File not found (expected 200)"),
            "{reason}"
        );
    });
}

#[test]
fn app_that_exits_at_once_is_unhealthy_quickly() {
    let Some(tb) = Bed::get() else { return };
    install(
        &tb,
        "hc-crash",
        "ExecStart=/bin/sh -c 'echo \"hc-crash: boom\"; exit 3'\nRestart=on-failure\nRestartSec=200ms",
        &[],
    );
    // Up for a second, then the same.
    install(
        &tb,
        "hc-crash-late",
        "ExecStart=/bin/sh -c 'sleep 1; exit 3'\nRestart=on-failure\nRestartSec=200ms",
        &[],
    );
    on_host(&tb, "root", async |session| {
        let baseline = restart(session, ServiceManager::Systemd, "hc-crash").await;
        // Only the unit's state is checked, and a long settle window: the unit reads
        // `active` now and then, but it must never count as healthy.
        let s = spec(ServiceManager::Systemd, "hc-crash", None, 30_000, 100, 2000);
        let (outcome, seen) = check(session, &s, &baseline).await;
        let (reason, elapsed) = unhealthy(&outcome, &seen);
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?} {seen:#?}");
        assert!(reason.starts_with("hc-crash.service "), "{reason}");
        assert!(
            reason.contains("restarted")
                || reason.contains("is failed")
                || reason.contains("systemd is restarting it"),
            "{reason}"
        );
        assert!(reason.contains("exited with status 3"), "{reason}");

        // Once systemd gave up, a check says so at its first attempt.
        let mut state = String::new();
        for _ in 0..100 {
            state = session
                .exec("systemctl is-active hc-crash || true", |_, _| {})
                .await
                .unwrap()
                .stdout;
            if state.trim() == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(state.trim(), "failed");
        let (outcome, seen) = check(session, &s, &baseline).await;
        let (reason, _) = unhealthy(&outcome, &seen);
        assert_eq!(seen.len(), 1);
        assert!(
            reason.starts_with("hc-crash.service is failed (exit-code: main process exited with status 3) after it restarted "),
            "{reason}"
        );

        // `active (running)` for a second: it passes, then the settle window catches it.
        let baseline = restart(session, ServiceManager::Systemd, "hc-crash-late").await;
        let s = spec(
            ServiceManager::Systemd,
            "hc-crash-late",
            None,
            30_000,
            100,
            2000,
        );
        let (outcome, seen) = check(session, &s, &baseline).await;
        let (reason, elapsed) = unhealthy(&outcome, &seen);
        assert_eq!(seen[0].failure, None, "it read active at first: {seen:#?}");
        assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
        assert!(reason.starts_with("hc-crash-late.service "), "{reason}");
        assert!(reason.contains("exited with status 3"), "{reason}");

        // A unit systemd does not know.
        let baseline = health::baseline(session, ServiceManager::Systemd, "hc-missing")
            .await
            .unwrap();
        let s = spec(
            ServiceManager::Systemd,
            "hc-missing",
            None,
            30_000,
            100,
            2000,
        );
        let (outcome, seen) = check(session, &s, &baseline).await;
        let (reason, _) = unhealthy(&outcome, &seen);
        assert_eq!(
            reason,
            "hc-missing.service is not loaded (not-found): systemd does not know this unit"
        );
    });
}

#[test]
fn app_answering_500_times_out_with_the_status() {
    let Some(tb) = Bed::get() else { return };
    install(
        &tb,
        "hc-500",
        "ExecStart=/usr/bin/python3 /srv/hc-500.py",
        &[(
            "/srv/hc-500.py",
            &py_server(8103, 500, "boom", "threading.Event().wait()"),
        )],
    );
    on_host(&tb, "root", async |session| {
        let baseline = restart(session, ServiceManager::Systemd, "hc-500").await;
        let c = http(8103, "/healthz", Some("ok"));
        let s = spec(ServiceManager::Systemd, "hc-500", Some(&c), 3000, 250, 500);
        let (outcome, seen) = check(session, &s, &baseline).await;
        let (reason, elapsed) = unhealthy(&outcome, &seen);
        assert_eq!(
            reason,
            "timed out after 3s: GET http://127.0.0.1:8103/healthz: 500 Internal Server Error (expected 200)"
        );
        assert!(
            elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(5),
            "{elapsed:?}"
        );
        assert!(seen.len() >= 4, "{}", seen.len());
        assert!(seen.iter().all(|a| a.failure.is_some()));
    });
}

#[test]
fn app_that_dies_inside_the_settle_window_is_caught() {
    let Some(tb) = Bed::get() else { return };
    // Serves for one second, then exits 1; systemd restarts it after a second.
    install(
        &tb,
        "hc-flaky",
        "ExecStart=/usr/bin/python3 /srv/hc-flaky.py\nRestart=on-failure\nRestartSec=1s",
        &[(
            "/srv/hc-flaky.py",
            &py_server(8104, 200, "ok", "time.sleep(1)\nos._exit(1)"),
        )],
    );
    on_host(&tb, "root", async |session| {
        let c = http(8104, "/healthz", Some("ok"));
        // With the unit's state: caught the moment it goes down.
        let baseline = restart(session, ServiceManager::Systemd, "hc-flaky").await;
        let s = spec(
            ServiceManager::Systemd,
            "hc-flaky",
            Some(&c),
            20_000,
            200,
            3000,
        );
        let (outcome, seen) = check(session, &s, &baseline).await;
        let (reason, elapsed) = unhealthy(&outcome, &seen);
        assert!(
            seen.iter().any(|a| a.failure.is_none()),
            "it answered once: {seen:#?}"
        );
        // Caught when it died, not at the timeout.
        assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
        assert!(reason.starts_with("hc-flaky.service "), "{reason}");
        assert!(reason.contains("exited with status 1"), "{reason}");

        // HTTP alone (manager none): each death restarts the settle window, so it never
        // completes before the timeout.
        let baseline = restart(session, ServiceManager::Systemd, "hc-flaky").await;
        let s = spec(ServiceManager::None, "hc-flaky", Some(&c), 4000, 200, 3000);
        let (outcome, seen) = check(session, &s, &baseline).await;
        let (reason, elapsed) = unhealthy(&outcome, &seen);
        assert!(elapsed >= Duration::from_secs(4), "{elapsed:?}");
        let first_pass = seen
            .iter()
            .position(|a| a.failure.is_none())
            .expect("a pass");
        let broken = seen[first_pass..]
            .iter()
            .find(|a| a.failure.is_some())
            .expect("a failure after the first pass");
        let f = broken.failure.as_deref().unwrap();
        // Down between two probes (refused), or in the middle of one (the app exits
        // with a request accepted and unanswered): both are how a dying app looks.
        let f = f
            .strip_prefix("GET http://127.0.0.1:8104/healthz: ")
            .unwrap_or(f);
        assert!(
            f.starts_with("cannot connect to 127.0.0.1:8104 on the host")
                || f == "the connection closed without a response",
            "{f}"
        );
        assert!(reason.starts_with("timed out after 4s: "), "{reason}");
    });
}

#[test]
fn command_check_runs_in_the_release_with_its_env() {
    let Some(tb) = Bed::get() else { return };
    tb.root(
        0,
        "mkdir -p /opt/hc-cmd/r1 && printf \"GREETING='hello world'\\n\" > /opt/hc-cmd/r1/.env && chmod 600 /opt/hc-cmd/r1/.env && chown -R deploy: /opt/hc-cmd",
    );
    on_host(&tb, "deploy", async |session| {
        let mut s = spec(ServiceManager::None, "hc-cmd", None, 5000, 200, 0);
        s.release_dir = "/opt/hc-cmd/r1";
        s.command = Some(r#"test "$GREETING" = "hello world" && test "$(pwd)" = /opt/hc-cmd/r1"#);
        let (outcome, seen) = check(session, &s, &Baseline::default()).await;
        assert!(
            matches!(outcome, Outcome::Healthy { attempts: 1, .. }),
            "{outcome:?} {seen:#?}"
        );

        s.command = Some("echo checking; echo \"db unreachable: $GREETING\" >&2; exit 2");
        s.timeout = Duration::from_millis(1000);
        let (outcome, seen) = check(session, &s, &Baseline::default()).await;
        let (reason, _) = unhealthy(&outcome, &seen);
        assert_eq!(
            reason,
            "timed out after 1s: health command exited with status 2: db unreachable: hello world"
        );

        // A command that hangs is stopped at the overall timeout, on the host too.
        s.command = Some("sleep 60 # hc-cmd-hang");
        s.timeout = Duration::from_millis(1500);
        let started = std::time::Instant::now();
        let (outcome, seen) = check(session, &s, &Baseline::default()).await;
        let (reason, _) = unhealthy(&outcome, &seen);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(
            reason == "timed out after 1.5s: health command did not finish within 1.5s",
            "{reason}"
        );
        let left = session
            .exec("sleep 1; pgrep -f hc-cmd-hang || true", |_, _| {})
            .await
            .unwrap();
        assert_eq!(left.stdout.trim(), "", "the command was left running");

        // No check configured: healthy at once.
        let s = spec(ServiceManager::None, "hc-cmd", None, 5000, 200, 2000);
        let (outcome, _) = check(session, &s, &Baseline::default()).await;
        assert_eq!(
            outcome,
            Outcome::Healthy {
                attempts: 0,
                elapsed: Duration::ZERO
            }
        );
    });
}

#[test]
fn journal_tail_shows_the_units_last_lines() {
    let Some(tb) = Bed::get() else { return };
    install(
        &tb,
        "hc-log",
        "ExecStart=/bin/sh -c 'for i in 1 2 3; do echo \"hc-log line $i\"; done; exec sleep infinity'",
        &[],
    );
    tb.root(0, "systemctl restart hc-log");
    // Bounded wait for journald to have the lines.
    let mut journal = String::new();
    for _ in 0..50 {
        journal = tb.root(0, "journalctl -u hc-log --no-pager -o cat");
        if journal.contains("hc-log line 3") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(journal.contains("hc-log line 3"), "{journal}");
    on_host(&tb, "root", async |session| {
        let tail =
            health::journal_tail(session, ServiceManager::Systemd, "hc-log", false, 50).await;
        for i in 1..=3 {
            assert!(tail.contains(&format!("hc-log line {i}")), "{tail}");
        }
        let one = health::journal_tail(session, ServiceManager::Systemd, "hc-log", false, 1).await;
        assert_eq!(one.lines().count(), 1, "{one}");
        let none = health::journal_tail(session, ServiceManager::None, "hc-log", false, 10).await;
        assert_eq!(
            none,
            "(no journal: service.manager is none, hc-log.service is not run by systemd)"
        );
    });
    on_host(&tb, "deploy", async |session| {
        let tail = health::journal_tail(session, ServiceManager::Systemd, "hc-log", true, 50).await;
        assert!(tail.contains("hc-log line 3"), "{tail}");
        // Without sudo, deploy may not read the system journal: said, not failed.
        let tail =
            health::journal_tail(session, ServiceManager::Systemd, "hc-log", false, 50).await;
        assert!(!tail.contains("hc-log line"), "{tail}");
        assert!(
            tail.starts_with(
                "(cannot read the journal of hc-log.service: journalctl exited with status 1)"
            ),
            "{tail}"
        );
        assert!(tail.contains("insufficient permissions"), "{tail}");
    });
}

#[test]
fn systemd_user_units_are_checked_with_systemctl_user() {
    let Some(tb) = Bed::get() else { return };
    let dir = "/home/deploy/.config/systemd/user";
    tb.root(
        0,
        &format!(
            "set -e\nloginctl enable-linger deploy\nmkdir -p {dir} /home/deploy/hc-user\n\
             echo ok > /home/deploy/hc-user/healthz\n\
             printf '[Service]\\nExecStart=/usr/bin/python3 -m http.server 8107 --bind 127.0.0.1 --directory /home/deploy/hc-user\\n' > {dir}/hc-user.service\n\
             printf '[Service]\\nExecStart=/bin/sh -c \"echo hc-user-crash: boom; exit 4\"\\nRestart=on-failure\\nRestartSec=200ms\\n' > {dir}/hc-user-crash.service\n\
             chown -R deploy: /home/deploy/.config /home/deploy/hc-user\n\
             for i in $(seq 50); do systemctl is-active -q user@$(id -u deploy).service && break; sleep 0.1; done\n\
             systemctl is-active user@$(id -u deploy).service"
        ),
    );
    on_host(&tb, "deploy", async |session| {
        let out = session
            .exec("systemctl --user daemon-reload", |_, _| {})
            .await
            .unwrap();
        assert!(out.success(), "{}", out.stderr_tail);
        let c = http(8107, "/healthz", Some("ok"));
        let baseline = restart(session, ServiceManager::SystemdUser, "hc-user").await;
        let s = spec(
            ServiceManager::SystemdUser,
            "hc-user",
            Some(&c),
            20_000,
            200,
            500,
        );
        let (outcome, seen) = check(session, &s, &baseline).await;
        assert!(outcome.is_healthy(), "{outcome:?} {seen:#?}");

        let baseline = restart(session, ServiceManager::SystemdUser, "hc-user-crash").await;
        let s = spec(
            ServiceManager::SystemdUser,
            "hc-user-crash",
            None,
            20_000,
            100,
            2000,
        );
        let (outcome, seen) = check(session, &s, &baseline).await;
        let (reason, elapsed) = unhealthy(&outcome, &seen);
        assert!(reason.starts_with("hc-user-crash.service "), "{reason}");
        assert!(reason.contains("exited with status 4"), "{reason}");
        assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");

        // journald here keeps no per-user files (Storage=volatile): with sudo, the user
        // unit's lines come from the system journal; without, the reason is explained.
        let mut tail = String::new();
        for _ in 0..30 {
            tail = health::journal_tail(
                session,
                ServiceManager::SystemdUser,
                "hc-user-crash",
                true,
                20,
            )
            .await;
            if tail.contains("hc-user-crash: boom") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(tail.contains("hc-user-crash: boom"), "{tail}");
        let tail = health::journal_tail(
            session,
            ServiceManager::SystemdUser,
            "hc-user-crash",
            false,
            20,
        )
        .await;
        assert!(
            tail.contains("hc-user-crash: boom") || tail.contains("service.sudo: true"),
            "{tail}"
        );
    });
}
