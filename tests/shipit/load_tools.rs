//! The e2e tier's load tools (e2e/load.rs) against the example app run right here on
//! 127.0.0.1: a healthy app must give them no failure, and one killed mid-run must give
//! each of them failures, or the zero-downtime tests could not fail.
//!
//! The HTTP load is Debian's hey: without it these tests fail (apt-get install hey).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::e2e::load::{EchoLoad, HttpLoad, HttpReport, Streams};

/// The example app's binary (built here if `cargo test` has not built it).
fn hello() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|p| p.parent()).unwrap();
    let path = dir.join("examples/hello");
    if !path.exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "--example", "hello"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "cargo build --example hello");
    }
    path
}

/// A running example app on a free port of 127.0.0.1, killed when dropped.
struct App {
    child: Child,
    addr: SocketAddr,
}

impl App {
    fn start(env: &[(&str, &str)]) -> App {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(hello())
            .env("PORT", port.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "hello did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        App { child, addr }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn a_healthy_app_gives_no_failure() {
    let http = App::start(&[]);
    let echo = App::start(&[("HELLO_PROTOCOL", "echo")]);
    let load = HttpLoad::steady(None, &http.url());
    let streams = Streams::start(None, http.addr, 3, 1);
    let echoes = EchoLoad::start(None, echo.addr, 40, 2);
    std::thread::sleep(Duration::from_millis(2500));
    let r = load.stop();
    let s = streams.stop();
    let e = echoes.stop();
    // 200 requests a second for 2.5 s, give or take a slow start.
    assert!(r.total >= 300, "{r:?}");
    assert_eq!(
        (r.failed(), r.by_status.get(&200)),
        (0, Some(&r.total)),
        "{r:?}"
    );
    assert!(r.p50_ms <= r.p99_ms && r.p99_ms < 1000.0, "{r:?}");
    // 3 streams of 1 s for 2.5 s (stop waits for those in progress): at least 6.
    assert!(s.cut.is_empty() && s.completed >= 6, "{s:?}");
    assert!(e.failed() == 0 && e.ok >= 50, "{e:?}");
}

#[test]
fn errors5_is_one_request_in_20_and_hey_counts_each() {
    let app = App::start(&[("HELLO_MODE", "errors5")]);
    let load = HttpLoad::start(None, &app.url(), 4, 50);
    std::thread::sleep(Duration::from_millis(1500));
    let r = load.stop();
    let five_hundred = r.by_status.get(&500).copied().unwrap_or(0);
    assert_eq!(five_hundred, r.total / 20, "{r:?}");
    assert_eq!(r.failed(), five_hundred, "{r:?}");
    assert!(r.errors.is_empty(), "{r:?}");
}

#[test]
fn a_killed_app_fails_every_tool() {
    let mut http = App::start(&[]);
    let mut echo = App::start(&[("HELLO_PROTOCOL", "echo")]);
    let load = HttpLoad::steady(None, &http.url());
    let streams = Streams::start(None, http.addr, 3, 2);
    let echoes = EchoLoad::start(None, echo.addr, 40, 2);
    std::thread::sleep(Duration::from_millis(1000));
    http.kill();
    echo.kill();
    std::thread::sleep(Duration::from_millis(1000));
    let r: HttpReport = load.stop();
    let s = streams.stop();
    let e = echoes.stop();
    eprintln!("{r:?}\n{s:?}\n{e:?}");
    assert!(r.by_status.get(&200).is_some_and(|n| *n > 0), "{r:?}");
    assert!(!r.errors.is_empty() && r.failed() > 0, "{r:?}");
    assert_eq!(
        r.failed(),
        r.errors.iter().map(|(_, n)| n).sum::<u64>(),
        "{r:?}"
    );
    // The streams open when the app died were cut short, later ones refused.
    assert!(s.cut.iter().any(|c| c.contains("closed early")), "{s:?}");
    assert!(s.cut.iter().any(|c| c.contains("connect to")), "{s:?}");
    assert!(e.ok > 0 && e.refused > 0, "{e:?}");
    // The long-lived echo connections saw the app go.
    assert!(e.reset + e.other.len() as u64 >= 2, "{e:?}");
}
