//! Delta deploys on real hosts: only changed files travel, the release a host assembles is
//! byte-identical to a full unpack, a tampered live release is caught and the host gets
//! the whole artifact, `delta: off` sends everything, a new host gets everything, and
//! `delta: hardlink` shares unchanged files with the previous release (once the live
//! release has its record of verified files) and turns down a live release edited since.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::Testbed;
use super::deploy::{App, host_result};

const ASSETS: usize = 300;

/// `ASSETS` files of text that does not compress away, under pkg/bin/assets.
fn write_assets(app: &App) {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..ASSETS {
        let mut text = String::new();
        for _ in 0..128 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.push_str(&format!("{x:016x}"));
        }
        app.p.file(&format!("pkg/bin/assets/a-{i:03}.txt"), &text);
    }
}

/// Every entry (type, mode, path, link target) and every file's sha256 of a release, but
/// what staging adds (`.env`, release.json, the unit's copy, the shared `log` link).
const FINGERPRINT: &str = "find . -mindepth 1 ! -path ./.env ! -path ./.shipit/release.json \
     ! -path ./.shipit/verified ! -path ./.shipit/unit ! -path ./log -printf '%y %m %P -> %l\\n' \
     | LC_ALL=C sort; find . -type f ! -path ./.env ! -path ./.shipit/release.json \
     ! -path ./.shipit/verified ! -path ./.shipit/unit -print0 | LC_ALL=C sort -z \
     | xargs -0 sha256sum";

fn on_host(tb: &Testbed, i: usize, release: &str) -> String {
    tb.root(
        i,
        &format!("cd /opt/hello/releases/{release} && {FINGERPRINT}"),
    )
}

/// The same fingerprint of the artifact unpacked here in full.
fn full_unpack(artifact: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("-xzpf")
        .arg(artifact)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let out = Command::new("sh")
        .arg("-c")
        .arg(FINGERPRINT)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn artifact(app: &App, version: &str) -> std::path::PathBuf {
    app.p.path().join(format!("dist/hello-{version}.tar.gz"))
}

/// Change asset `n` and the version, then wait out the one-second resolution of release ids.
fn next_version(app: &App, v: u32, n: usize) {
    app.p.file(
        &format!("pkg/bin/assets/a-{n:03}.txt"),
        &format!("changed in v{v}\n"),
    );
    app.set_version(&v.to_string());
    std::thread::sleep(Duration::from_millis(1100));
}

fn sent(summary: &serde_json::Value, i: usize) -> (String, u64, u64) {
    let h = host_result(summary, i);
    assert_eq!(h["result"], "done", "{summary:#}");
    (
        h["transfer"].as_str().unwrap_or("").to_owned(),
        h["uploaded_bytes"].as_u64().unwrap(),
        h["reused_files"].as_u64().unwrap(),
    )
}

/// Append a byte to an asset of host 2's live release `live`, then deploy version `v`:
/// host 1 still gets a delta; host 2's is turned down (saying `why`) and the whole
/// artifact follows. Every one of the first `hosts` hosts lands the same release, with
/// nothing half-made left.
fn tamper_then_deploy(tb: &Testbed, app: &App, live: &str, v: u32, hosts: usize, why: &str) {
    tb.root(
        1,
        &format!(
            "printf x >> /opt/hello/releases/{live}/bin/assets/a-{:03}.txt",
            100 + v
        ),
    );
    next_version(app, v, v as usize + 5);
    let version = format!("{v}.0");
    let (out, summary) = app.deploy(&version, &[], &[]);
    out.code(0);
    let release = summary["release"].as_str().unwrap().to_owned();
    let size = std::fs::metadata(artifact(app, &version)).unwrap().len();
    let expected = full_unpack(&artifact(app, &version));
    assert_eq!(sent(&summary, 0).0, "delta");
    assert_eq!(sent(&summary, 1).0, "full");
    assert!(
        sent(&summary, 1).1 > size,
        "the delta, then the whole artifact"
    );
    assert!(
        out.stderr.contains("the delta did not verify") && out.stderr.contains(why),
        "{}",
        out.stderr
    );
    for i in 0..hosts {
        assert_eq!(on_host(tb, i, &release), expected, "host {i}");
        assert_eq!(app.current(i), release);
        assert!(
            !tb.root(i, "ls -a /opt/hello/releases").contains(".tmp-"),
            "nothing half-made left"
        );
    }
}

#[test]
fn delta_deploys_send_what_changed_and_land_the_same_release() {
    let Some(tb) = Testbed::up("e2e-delta", 3) else {
        return;
    };
    let app = App::new(&tb, &[0, 1], "");
    write_assets(&app);

    // v1: no live release anywhere, so the whole artifact.
    app.set_version("1");
    let (out, summary) = app.deploy("1.0", &[], &[]);
    out.code(0);
    let size = std::fs::metadata(artifact(&app, "1.0")).unwrap().len();
    for i in 0..2 {
        assert_eq!(sent(&summary, i), ("full".into(), size, 0));
    }

    // v2: one asset and VERSION changed; every other file comes from the live release.
    next_version(&app, 2, 7);
    let (out, summary) = app.deploy("2.0", &[], &[]);
    out.code(0);
    let v2 = summary["release"].as_str().unwrap().to_owned();
    let size = std::fs::metadata(artifact(&app, "2.0")).unwrap().len();
    let expected = full_unpack(&artifact(&app, "2.0"));
    for i in 0..2 {
        let (how, bytes, reused) = sent(&summary, i);
        assert_eq!(how, "delta");
        // bin/hello and 299 of the assets.
        assert_eq!(reused, ASSETS as u64);
        assert!(bytes * 10 < size, "sent {bytes} of {size}");
        assert_eq!(on_host(&tb, i, &v2), expected, "host {i}");
        assert_eq!(app.current(i), v2);
        assert_eq!(app.http(i), "hello v1");
    }
    // The live table says so too.
    let out = app.shipit(&["deploy", "--app-version", "2.0"]);
    out.code(0);
    assert!(out.stdout.contains("SENT"), "{}", out.stdout);

    // Host 2's live release is edited in place: its delta does not verify, the release is
    // discarded and the whole artifact follows; host 1 still gets a delta.
    tamper_then_deploy(&tb, &app, &v2, 3, 2, "file contents differ");

    // delta: off sends everything.
    let yaml = app.p.read("deploy.yaml");
    app.p.file("deploy.yaml", &format!("{yaml}delta: off\n"));
    next_version(&app, 4, 9);
    let (out, summary) = app.deploy("4.0", &[], &[]);
    out.code(0);
    let v4 = summary["release"].as_str().unwrap().to_owned();
    let size = std::fs::metadata(artifact(&app, "4.0")).unwrap().len();
    for i in 0..2 {
        assert_eq!(sent(&summary, i), ("full".into(), size, 0));
        assert_eq!(app.current(i), v4);
    }

    // delta: hardlink, and a new host in the environment. The live releases were not made
    // with `hardlink`, so they have no record of their files to link from: every host
    // gets the whole artifact, once, and says why.
    let (a, b, c) = (&tb.host(0).ip, &tb.host(1).ip, &tb.host(2).ip);
    let hosts = yaml.replace(
        &format!("hosts: [{a}, {b}]"),
        &format!("hosts: [{a}, {b}, {c}]"),
    );
    app.p
        .file("deploy.yaml", &format!("{hosts}delta: hardlink\n"));
    next_version(&app, 5, 10);
    let (out, summary) = app.deploy("5.0", &[], &[]);
    out.code(0);
    let v5 = summary["release"].as_str().unwrap().to_owned();
    for i in 0..3 {
        assert_eq!(sent(&summary, i).0, "full", "host {i}");
    }
    assert!(
        out.stderr.contains("has no record of its files"),
        "{}",
        out.stderr
    );

    // From then on, hard-linked deltas on all three.
    next_version(&app, 6, 11);
    let (out, summary) = app.deploy("6.0", &[], &[]);
    out.code(0);
    let v6 = summary["release"].as_str().unwrap().to_owned();
    let expected = full_unpack(&artifact(&app, "6.0"));
    let inode = |i: usize, release: &str| {
        tb.root(
            i,
            &format!("stat -c %i /opt/hello/releases/{release}/bin/hello"),
        )
    };
    for i in 0..3 {
        assert_eq!(sent(&summary, i).0, "delta", "host {i}");
        assert_eq!(inode(i, &v6), inode(i, &v5), "hard-linked on host {i}");
        assert_eq!(on_host(&tb, i, &v6), expected);
    }
    assert_eq!(app.http(2), "hello v1");

    // Host 2's live release is edited in place: what it would link is not the file that
    // was verified, so its delta is turned down and the whole artifact follows.
    tamper_then_deploy(&tb, &app, &v6, 7, 3, "changed since it was made");

    // Rollback is unaffected: the previous release is complete on its own.
    let out = app.shipit(&["rollback", "--hosts", &format!("{a},{b}")]);
    out.code(0);
    for i in 0..2 {
        assert_eq!(app.current(i), v6);
        assert_eq!(app.active(i), "active");
    }
}
