//! A fleet's fan-out against one sshd's limit on connection starts: 50 hosts, all served
//! by one real sshd that takes 2 unauthenticated connections at once (`MaxStartups 2`),
//! each address with a directory of its own at the app's `deploy_to`.

use super::sshd::{self, Sshd};
use crate::support::Project;

const HOSTS: u8 = 50;

/// Every host's `current` and the version it serves.
fn versions(sshd: &Sshd) -> Vec<(String, String)> {
    let own = sshd
        .own
        .as_ref()
        .expect("a server with directories of its own");
    (1..=HOSTS)
        .map(|n| {
            let dir = own.join(format!("127.0.0.{n}"));
            let current = std::fs::read_link(dir.join("current"))
                .map(|p| p.display().to_string())
                .unwrap_or_else(|e| format!("no current: {e}"));
            let version = std::fs::read_to_string(dir.join("current/VERSION"))
                .unwrap_or_else(|e| format!("no VERSION: {e}"));
            (current, version.trim().to_owned())
        })
        .collect()
}

fn deploy(p: &Project, sshd: &Sshd, version: &str) {
    p.file("pkg/VERSION", &format!("{version}\n"));
    let out = sshd
        .enter(&p.command(&["deploy", "--app-version", version]))
        .output()
        .expect("run shipit in the server's network namespace");
    assert!(
        out.status.success(),
        "deploy {version} exited {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `rollout.parallel: 50` to 50 hosts whose sshd drops every start past the second: the
/// starts sshd drops are tried again, every host gets the release, and the sshd log shows
/// it did drop starts (so the limit was met, not dodged). The second deploy raises
/// `ssh.max_concurrent_starts` to 50, so all 50 handshakes start at once.
#[test]
fn a_deploy_with_parallel_50_reaches_every_host_of_an_sshd_that_takes_2_starts_at_once() {
    let tools = [
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("ip", "iproute2"),
    ];
    if sshd::prerequisites_with(&tools).is_none() {
        return;
    }
    let deploy_to = tempfile::tempdir().unwrap();
    let sshd = Sshd::start_per_address(deploy_to.path(), HOSTS, "2");
    let addresses: Vec<String> = (1..=HOSTS).map(|n| format!("127.0.0.{n}")).collect();
    let hosts: String = (1..=HOSTS)
        .map(|n| {
            format!(
                "  - {{host: 127.0.0.{n}, port: {}, name: h{n}}}\n",
                sshd.port
            )
        })
        .collect();
    let rest = format!(
        "package: {{root: pkg, include: [VERSION]}}\nservice: {{manager: none}}\n\
         rollout: {{canary: 0, parallel: 50}}\nhosts:\n{hosts}"
    );
    let p = sshd.project(&addresses, "storm", deploy_to.path(), "", &rest);
    deploy(&p, &sshd, "1");
    let first = versions(&sshd);
    for (n, (current, version)) in first.iter().enumerate() {
        assert!(current.starts_with("releases/"), "h{}: {current}", n + 1);
        assert_eq!(version, "1", "h{}", n + 1);
    }
    let dropped = sshd.dropped_starts();
    assert!(
        dropped > 0,
        "sshd dropped no start: the limit was never met"
    );

    // The ssh block ends right before `package:`.
    let config = p.read("deploy.yaml");
    let more = config.replace("package:", "  max_concurrent_starts: 50\npackage:");
    p.file("deploy.yaml", &more);
    deploy(&p, &sshd, "2");
    for (n, ((before, _), (current, version))) in first.iter().zip(versions(&sshd)).enumerate() {
        assert_ne!(&current, before, "h{}: `current` did not move", n + 1);
        assert_eq!(version, "2", "h{}", n + 1);
    }
    assert!(
        sshd.dropped_starts() > dropped,
        "50 starts at once, none dropped"
    );
    // Nothing was written outside the hosts' own directories.
    let outside: Vec<_> = std::fs::read_dir(deploy_to.path()).unwrap().collect();
    assert!(outside.is_empty(), "{outside:?}");
}
