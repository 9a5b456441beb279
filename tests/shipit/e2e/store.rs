//! Hosts fetch the artifact from a real S3-compatible store (s3s-fs, which checks SigV4
//! signatures and presigned URLs' expiry) on their LAN: the deployer sends each byte
//! once; a host that cannot reach the store, an expired URL and a tampered object all
//! end with the artifact pushed over SSH, and nothing unverified is ever unpacked.

use std::time::{Duration, Instant};

use crate::e2e::deploy::{App, hello_binary};
use crate::e2e::{CANARY, Testbed};
use crate::support::Project;

struct Setup<'a> {
    app: App<'a>,
    store: serde_json::Value,
}

/// The example app on every host of `tb`, with its artifacts in the testbed's store. The
/// store's secret key is the tier's canary: it must never reach an output or a host.
fn setup<'a>(tb: &'a Testbed, url_ttl: &str) -> Setup<'a> {
    let line = tb.store(&["up"], &[("STORE_SECRET", CANARY)]);
    let store: serde_json::Value = serde_json::from_str(line.trim()).expect("store.sh up JSON");
    let p = Project::new();
    std::fs::create_dir_all(p.path().join("pkg/bin")).unwrap();
    std::fs::copy(hello_binary(), p.path().join("pkg/bin/hello")).unwrap();
    p.file("pkg/VERSION", "1\n");
    p.file(
        "deploy/hello.service",
        include_str!("../../../examples/hello/deploy/hello.service"),
    );
    let ips: Vec<String> = tb.state.hosts.iter().map(|h| h.ip.clone()).collect();
    p.file(
        "deploy.yaml",
        &format!(
            "app: hello
package: {{root: pkg, include: [bin, VERSION]}}
{ssh}env:
  PORT: '8080'
  DB_PASSWORD: ${{SHIPIT_E2E_CANARY}}
service: {{name: hello, unit_file: deploy/hello.service, sudo: true}}
health:
  http: {{url: 'http://127.0.0.1:8080/healthz'}}
  timeout: 8s
  interval: 200ms
delta: copy
artifacts:
  store: s3://{bucket}/shipit/
  endpoint: {endpoint}
  region: us-east-1
  url_ttl: {url_ttl}
rollout: {{parallel: 10, canary: 0}}
hosts: [{hosts}]
",
            ssh = tb.ssh_yaml(&tb.state.known_hosts),
            bucket = store["bucket"].as_str().unwrap(),
            endpoint = store["endpoint"].as_str().unwrap(),
            hosts = ips.join(", ")
        ),
    );
    Setup {
        app: App { tb, p },
        store,
    }
}

impl Setup<'_> {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "AWS_ACCESS_KEY_ID",
                self.store["access_key"].as_str().unwrap().to_owned(),
            ),
            ("AWS_SECRET_ACCESS_KEY", CANARY.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }

    /// `delta:` in deploy.yaml.
    fn delta(&self, mode: &str) {
        let text = self.app.p.read("deploy.yaml");
        let line = text
            .lines()
            .find(|l| l.starts_with("delta: "))
            .unwrap()
            .to_owned();
        self.app.p.file(
            "deploy.yaml",
            &text.replace(&line, &format!("delta: {mode}")),
        );
    }

    /// Deploy `version` (with `extra` environment; `DELTA` sets `delta:`); the exit
    /// code and the summary.
    fn deploy(&self, version: &str, extra: &[(&str, &str)]) -> (i32, serde_json::Value) {
        self.app.set_version(version);
        if let Some((_, mode)) = extra.iter().find(|(k, _)| *k == "DELTA") {
            self.delta(mode);
        }
        let env = self.env();
        let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.extend_from_slice(extra);
        let (out, summary) = self.app.deploy(version, &all, &[]);
        (out.code, summary)
    }

    /// Bytes the deployer's network namespace has sent so far (its bridge's counter:
    /// traffic between the store and the hosts is bridged and not counted).
    fn sent(&self) -> u64 {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.app.tb.state.client_netns])
            .args(["cat", "/sys/class/net/br0/statistics/tx_bytes"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// The artifact's file in the store's data directory.
    fn object(&self, sha: &str) -> std::path::PathBuf {
        std::path::Path::new(self.store["data_dir"].as_str().unwrap())
            .join(self.store["bucket"].as_str().unwrap())
            .join(format!("shipit/hello/{sha}.tar.gz"))
    }
}

fn transfers(summary: &serde_json::Value) -> Vec<String> {
    summary["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["transfer"].as_str().unwrap_or("-").to_owned())
        .collect()
}

fn warnings(summary: &serde_json::Value) -> String {
    summary["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["warnings"].to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn ten_hosts_fetch_from_the_store_and_the_deployer_sends_each_byte_once() {
    let Some(tb) = Testbed::up("e2e-store", 10) else {
        return;
    };
    let s = setup(&tb, "5m");
    let before = s.sent();
    let (code, summary) = s.deploy("1", &[]);
    let sent = s.sent() - before;
    assert_eq!(code, 0, "{summary:#}");
    assert_eq!(transfers(&summary), vec!["store"; 10], "{summary:#}");
    let sha = summary["artifact_sha256"].as_str().unwrap().to_owned();
    let size = std::fs::metadata(s.object(&sha)).unwrap().len();
    eprintln!("artifact {size} bytes; the deployer sent {sent} bytes for 10 hosts");
    assert!(
        (sent as f64) <= 1.1 * size as f64,
        "the deployer sent {sent} bytes for a {size}-byte artifact"
    );
    for i in 0..10 {
        let current = tb.root(i, "readlink /opt/hello/current").trim().to_owned();
        assert!(current.ends_with(&sha[..8]), "host {i}: {current}");
        // The host verified and cached the download; nothing partial is left.
        let left = tb.root(i, "ls /opt/hello/.shipit/artifacts | grep -c fetch || true");
        assert_eq!(left.trim(), "0");
    }

    // `status` says how the last deploy's artifact arrived.
    let env = s.env();
    let mut cmd = tb.shipit_command(&s.app.p, &["status", "--json"]);
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = cmd.output().unwrap();
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let last = st["hosts"][0]["last_transfer"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(last.starts_with("store in "), "{st:#}");

    // A delta deploy: hosts take the delta over SSH; the store gets nothing.
    let (code, summary) = s.deploy("2", &[]);
    assert_eq!(code, 0, "{summary:#}");
    assert_eq!(transfers(&summary), vec!["delta"; 10], "{summary:#}");
    let sha2 = summary["artifact_sha256"].as_str().unwrap();
    assert!(
        !s.object(sha2).exists(),
        "a delta deploy uploaded to the store"
    );

    // A host that cannot reach the store gets the artifact pushed; the others fetch.
    tb.store(&["block", &tb.host(9).name], &[]);
    let (code, summary) = s.deploy("3", &[("DELTA", "off")]);
    assert_eq!(code, 0, "{summary:#}");
    let t = transfers(&summary);
    assert_eq!(&t[..9], vec!["store"; 9].as_slice(), "{summary:#}");
    assert_eq!(t[9], "full", "{summary:#}");
    assert!(
        warnings(&summary).contains("could not fetch"),
        "{summary:#}"
    );
    tb.store(&["unblock", &tb.host(9).name], &[]);

    // The dry run shows the fetch with the URL redacted.
    s.app.set_version("4");
    let env = s.env();
    let mut cmd = tb.shipit_command(&s.app.p, &["deploy", "--dry-run", "--app-version", "4"]);
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fetch the artifact from s3://"), "{text}");
    assert!(
        text.contains("U='[redacted]'") && !text.contains("X-Amz-Signature"),
        "{text}"
    );

    // `shipit check` says how hosts download.
    let env = s.env();
    let mut cmd = tb.shipit_command(&s.app.p, &["check"]);
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FETCH"), "{text}");
}

/// Stop the deployer at `fetch` (after the URL is signed), do `meanwhile`, resume, and
/// return the summary.
fn stopped_at_fetch(s: &Setup, version: &str, meanwhile: impl FnOnce(&str)) -> serde_json::Value {
    s.app.set_version(version);
    s.delta("off");
    let env = s.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = ["deploy", "--app-version", version, "--json"];
    let (child, pid) = s.app.tb.stopped_at(&s.app.p, &args, &env, "fetch");
    // The artifact is in the store by now: the first fetch comes after the upload.
    let sha = {
        let dir = std::path::Path::new(s.store["data_dir"].as_str().unwrap())
            .join(s.store["bucket"].as_str().unwrap())
            .join("shipit/hello");
        let newest = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .unwrap();
        newest.path().display().to_string()
    };
    meanwhile(&sha);
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    let deadline = Instant::now() + Duration::from_secs(120);
    let out = child.wait_with_output().unwrap();
    assert!(Instant::now() < deadline);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(CANARY));
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

#[test]
fn an_expired_url_and_a_tampered_object_are_refused_before_anything_is_unpacked() {
    let Some(tb) = Testbed::up("e2e-store-bad", 2) else {
        return;
    };
    let s = setup(&tb, "1s");
    assert_eq!(s.deploy("1", &[("DELTA", "off")]).0, 0);

    // Expired: the first host's URL (1 s) is 3 s old when it is used.
    let summary = stopped_at_fetch(&s, "2", |_| std::thread::sleep(Duration::from_secs(3)));
    assert_eq!(summary["exit_code"], 0, "{summary:#}");
    let t = transfers(&summary);
    assert!(t.contains(&"full".to_owned()), "{summary:#}");
    assert!(warnings(&summary).contains("exited 22"), "{summary:#}");

    // Tampered: the object changes (same size) after the upload; every host refuses it
    // and gets the artifact pushed; each release is the real artifact.
    let summary = stopped_at_fetch(&s, "3", |object| {
        let mut bytes = std::fs::read(object).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        std::fs::write(object, bytes).unwrap();
    });
    assert_eq!(summary["exit_code"], 0, "{summary:#}");
    assert_eq!(transfers(&summary), vec!["full"; 2], "{summary:#}");
    assert!(warnings(&summary).contains("not used"), "{summary:#}");
    // The store's copy was put right (uploaded again): the next host gets good bytes.
    let sha = summary["artifact_sha256"].as_str().unwrap();
    let object = std::fs::read(s.object(sha)).unwrap();
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&object)), sha);
    for i in 0..2 {
        let v = tb.root(i, "cat /opt/hello/current/VERSION");
        assert_eq!(v.trim(), "3");
        let left = tb.root(i, "ls /opt/hello/.shipit/artifacts | grep -c fetch || true");
        assert_eq!(left.trim(), "0");
    }
}
