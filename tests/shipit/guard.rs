//! The guard without SSH: the real scripts a host runs (`remote::guard`), run by the local
//! `sh` in a scratch `deploy_to`, with a watcher that really detaches and a timeout of a
//! couple of seconds. The e2e tier checks the same on real hosts with systemd.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use shipit::config::ServiceManager;
use shipit::remote::guard::{self, Confirmed, Guard};

const OLD: &str = "20260101T000000Z-0000000a";
const NEW: &str = "20260102T000000Z-0000000b";
const TOKEN: &str = "tok-guard-test";

fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A deploy_to on OLD, with this run's lock, and NEW staged.
fn deploy_to() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (id, state) in [(OLD, "live"), (NEW, "staged")] {
        let dir = d.path().join("releases").join(id).join(".shipit");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("release.json"),
            format!("{{\"id\":\"{id}\",\"state\":\"{state}\",\"config_sha256\":null}}\n"),
        )
        .unwrap();
    }
    std::fs::create_dir_all(d.path().join(".shipit/lock")).unwrap();
    std::fs::write(
        d.path().join(".shipit/lock/owner.json"),
        format!("{{\"token\":\"{TOKEN}\",\"pid\":1}}\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink(format!("releases/{OLD}"), d.path().join("current")).unwrap();
    d
}

fn the_guard(timeout: u64) -> Guard<'static> {
    Guard {
        token: TOKEN,
        target: NEW,
        mark_failed: true,
        timeout,
        every: 1,
        manager: ServiceManager::None,
        sudo: false,
        service: "hello",
        action: "deploy",
        slots: None,
    }
}

/// Arm, then switch as the activate script does.
fn arm_and_switch(d: &Path, timeout: u64) {
    let out = sh(d, &guard::arm(&the_guard(timeout)).unwrap());
    assert!(out.contains("@@guard armed"), "{out}");
    sh(d, &format!("ln -sfn releases/{NEW} current"));
}

fn current(d: &Path) -> String {
    std::fs::read_link(d.join("current"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("not within {within:?}: {what}");
    false
}

fn history(d: &Path) -> String {
    std::fs::read_to_string(d.join(".shipit/history.jsonl")).unwrap_or_default()
}

#[test]
fn an_unconfirmed_guard_puts_the_old_release_back_once_and_frees_the_lock() {
    let d = deploy_to();
    arm_and_switch(d.path(), 2);
    assert_eq!(current(d.path()), format!("releases/{NEW}"));
    assert!(wait_for("the guard fires", Duration::from_secs(15), || {
        current(d.path()) == format!("releases/{OLD}") && !d.path().join(".shipit/lock").exists()
    }));
    // It fired once, said why, marked the new release failed, and left nothing behind.
    assert!(wait_for("the history line", Duration::from_secs(5), || {
        history(d.path()).contains("reverted-by-guard")
    }));
    let json = std::fs::read_to_string(
        d.path()
            .join(format!("releases/{NEW}/.shipit/release.json")),
    );
    assert!(json.unwrap().contains("\"state\":\"failed\""));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        history(d.path()).matches("reverted-by-guard").count(),
        1,
        "fired twice"
    );
    let leftovers: Vec<_> = std::fs::read_dir(d.path().join(".shipit"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("guard"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A confirm that comes too late learns that the host went back.
    let out = sh(d.path(), &guard::confirm(TOKEN).unwrap());
    assert_eq!(guard::confirmed(&out), Confirmed::Fired, "{out}");
}

#[test]
fn a_confirmed_guard_never_fires() {
    let d = deploy_to();
    arm_and_switch(d.path(), 2);
    let out = sh(d.path(), &guard::confirm(TOKEN).unwrap());
    assert_eq!(guard::confirmed(&out), Confirmed::Yes, "{out}");
    // Past the deadline and the watcher's next look: still on the new release.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(current(d.path()), format!("releases/{NEW}"));
    assert!(!history(d.path()).contains("reverted-by-guard"));
    let again = sh(d.path(), &guard::confirm(TOKEN).unwrap());
    assert_eq!(guard::confirmed(&again), Confirmed::NoGuard, "{again}");
}

#[test]
fn renewals_hold_the_guard_off_until_they_stop() {
    let d = deploy_to();
    arm_and_switch(d.path(), 2);
    let renew = guard::renew(TOKEN).unwrap();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        sh(d.path(), &renew);
    }
    assert_eq!(
        current(d.path()),
        format!("releases/{NEW}"),
        "fired while renewed"
    );
    let report = sh(d.path(), &guard::report());
    let armed = guard::armed(&report).expect("armed");
    assert_eq!(armed.previous.as_deref(), Some(OLD));
    assert_eq!(armed.target, NEW);
    assert!((0..=2).contains(&armed.fires_in), "{armed:?}");
    assert!(wait_for("the guard fires", Duration::from_secs(15), || {
        current(d.path()) == format!("releases/{OLD}")
    }));
}

#[test]
fn another_runs_guard_is_left_alone() {
    let d = deploy_to();
    arm_and_switch(d.path(), 60);
    let out = sh(d.path(), &guard::confirm("someone-else").unwrap());
    assert_eq!(guard::confirmed(&out), Confirmed::NoGuard);
    assert!(d.path().join(".shipit/guard").exists());
    // `unlock` removes it whoever armed it; its watcher then exits.
    assert!(sh(d.path(), &guard::force_disarm()).contains("@@guard removed"));
    assert!(!d.path().join(".shipit/guard").exists());
}

#[test]
fn a_host_without_a_previous_release_loses_current_when_it_fires() {
    let d = deploy_to();
    std::fs::remove_file(d.path().join("current")).unwrap();
    arm_and_switch(d.path(), 1);
    assert!(wait_for("the guard fires", Duration::from_secs(15), || {
        !d.path().join("current").exists() && history(d.path()).contains("reverted-by-guard")
    }));
}
