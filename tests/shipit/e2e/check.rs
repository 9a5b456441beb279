//! `shipit check` against real hosts: every way of authenticating, every host-key
//! policy, a jump host, a dead link, and hosts that are not ready.

use std::time::{Duration, Instant};

use crate::e2e::Testbed;
use crate::ssh::sshd::{self, Agent};
use crate::support::Project;

/// A project whose deploy.yaml checks `hosts` (IPs) of `tb`, with `extra` YAML appended.
fn project(tb: &Testbed, hosts: &[usize], known_hosts: &std::path::Path, extra: &str) -> Project {
    let p = Project::new();
    let hosts: Vec<String> = hosts.iter().map(|&i| tb.host(i).ip.clone()).collect();
    p.file(
        "deploy.yaml",
        &format!(
            "app: hello\n{}env:\n  DB_PASSWORD: ${{SHIPIT_E2E_CANARY}}\nservice:\n  manager: systemd\n  unit_file: hello.service\n  sudo: true\nhosts: [{}]\n{extra}",
            tb.ssh_yaml(known_hosts),
            hosts.join(", ")
        ),
    );
    p.file("hello.service", "[Service]\nExecStart=/bin/true\n");
    p
}

fn report(out: &crate::support::Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout, out.stderr))
}

fn statuses(host: &serde_json::Value) -> Vec<(String, String)> {
    host["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn all_pass(host: &serde_json::Value) {
    assert_eq!(host["reachable"], true, "{host:#}");
    assert_eq!(host["error"], serde_json::Value::Null, "{host:#}");
    for (name, status) in statuses(host) {
        assert_eq!(status, "ok", "{name}: {host:#}");
    }
}

/// sshd's log on host `i`: who logged in from where.
fn accepted_logins(tb: &Testbed, i: usize) -> Vec<String> {
    tb.root(
        i,
        "journalctl -u ssh --no-pager -o cat | grep 'Accepted publickey' || true",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

#[test]
fn key_file_agent_and_encrypted_key_all_authenticate() {
    let Some(tb) = Testbed::up("e2e-check-auth", 2) else {
        return;
    };
    // Key file.
    let p = project(&tb, &[0, 1], &tb.state.known_hosts, "");
    let out = tb.shipit(&p, &["check", "--json"]);
    out.code(0);
    let r = report(&out);
    assert_eq!(r["ok"], true);
    let hosts = r["hosts"].as_array().unwrap();
    for host in hosts {
        all_pass(host);
        // The test servers run on this machine: its architecture.
        let uname = std::process::Command::new("uname")
            .arg("-m")
            .output()
            .unwrap();
        let uname = String::from_utf8(uname.stdout).unwrap();
        assert_eq!(host["arch"], uname.trim(), "{host:#}");
        assert!(host["os"].as_str().unwrap().contains("Debian"), "{host:#}");
    }
    // The human table says the same.
    let out = tb.shipit(&p, &["check"]);
    out.code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "HOST",
            "ARCH",
            "CONNECT",
            "DEPLOY_TO",
            "DISK",
            "TOOLS",
            "SYSTEMCTL",
            "UNIT",
            "SUDO",
            "OS"
        ]
    );
    for (i, line) in lines[1..].iter().enumerate() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        let os = hosts[i]["os"].as_str().unwrap();
        assert!(line.ends_with(&format!("  {os}")), "{line}");
        assert_eq!(
            cells[..9],
            [
                tb.host(i).ip.as_str(),
                hosts[i]["arch"].as_str().unwrap(),
                "ok",
                "ok",
                "ok",
                "ok",
                "ok",
                "ok",
                "ok"
            ]
        );
    }
    assert!(
        out.stderr
            .contains("2 host(s): 2 ready, 0 failing, 0 unreachable"),
        "{}",
        out.stderr
    );

    // The agent, with no key file configured and no ~/.ssh keys.
    let keys = tempfile::tempdir().unwrap();
    let agent = Agent::start(keys.path(), &[(&tb.state.client_key, "")]);
    let mut p = project(&tb, &[0, 1], &tb.state.known_hosts, "");
    p.file(
        "deploy.yaml",
        &p.read("deploy.yaml").replace(
            &format!("  identity_files: [{}]\n", tb.state.client_key.display()),
            "",
        ),
    );
    let without_agent = tb.shipit(&p, &["check"]);
    without_agent.code(4);
    assert!(
        without_agent.stdout.contains("authentication failed")
            || without_agent.stdout.contains("auth"),
        "{}",
        without_agent.stdout
    );
    p.env("SSH_AUTH_SOCK", agent.socket.to_str().unwrap());
    tb.shipit(&p, &["check"]).code(0);
    drop(agent);

    // An encrypted key, authorized on the hosts, held by the agent.
    let encrypted = sshd::keygen(keys.path(), "enc", "ed25519", "correct horse");
    let public = sshd::public_key(&encrypted);
    for i in 0..2 {
        tb.root(
            i,
            &format!("echo '{public}' >> /home/deploy/.ssh/authorized_keys"),
        );
    }
    let mut p = project(&tb, &[0, 1], &tb.state.known_hosts, "");
    p.file(
        "deploy.yaml",
        &p.read("deploy.yaml").replace(
            tb.state.client_key.to_str().unwrap(),
            encrypted.to_str().unwrap(),
        ),
    );
    // Without the agent and without a TTY: a clear error naming the key.
    let out = tb.shipit(&p, &["check"]);
    out.code(4);
    assert!(
        out.stdout.contains(encrypted.to_str().unwrap()) && out.stdout.contains("passphrase"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("ssh-agent") || out.stdout.contains("ssh-add"),
        "suggests the agent: {}",
        out.stdout
    );
    let agent = Agent::start(keys.path(), &[(&encrypted, "correct horse")]);
    p.env("SSH_AUTH_SOCK", agent.socket.to_str().unwrap());
    tb.shipit(&p, &["check"]).code(0);
}

#[test]
fn strict_refuses_an_unknown_host_and_accept_new_records_it() {
    let Some(tb) = Testbed::up("e2e-check-keys", 1) else {
        return;
    };
    let before = accepted_logins(&tb, 0).len();
    let p = Project::new();
    let known = p.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let p = project(&tb, &[0], &known, "");
    let out = tb.shipit(&p, &["check"]);
    out.code(4);
    let fingerprint = {
        let key_line = format!("x {}", tb.host(0).host_key);
        let tmp = p.path().join("host.pub");
        std::fs::write(&tmp, key_line.split_once(' ').unwrap().1).unwrap();
        let out = std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&tmp)
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert!(
        out.stdout.contains(&fingerprint),
        "the fingerprint is shown: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains("accept-new") || out.stdout.contains("ssh-keyscan"),
        "how to trust it: {}",
        out.stdout
    );
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        "",
        "strict writes nothing"
    );
    assert_eq!(
        accepted_logins(&tb, 0).len(),
        before,
        "nothing was done on the host: no login"
    );

    // accept-new records the key and goes on.
    p.file(
        "deploy.yaml",
        &p.read("deploy.yaml").replace(
            "  connect_timeout: 5s\n",
            "  connect_timeout: 5s\n  known_hosts: accept-new\n",
        ),
    );
    tb.shipit(&p, &["check"]).code(0);
    let recorded = std::fs::read_to_string(&known).unwrap();
    assert!(recorded.contains(&tb.host(0).host_key), "{recorded}");
    assert_eq!(accepted_logins(&tb, 0).len(), before + 1);
    // Now strict accepts it too.
    p.file(
        "deploy.yaml",
        &p.read("deploy.yaml")
            .replace("  known_hosts: accept-new\n", ""),
    );
    tb.shipit(&p, &["check"]).code(0);
}

#[test]
fn a_changed_host_key_is_refused_in_every_mode() {
    let Some(tb) = Testbed::up("e2e-check-changed", 1) else {
        return;
    };
    let p = Project::new();
    let known = p.path().join("known_hosts");
    std::fs::copy(&tb.state.known_hosts, &known).unwrap();
    let p = project(&tb, &[0], &known, "");
    tb.shipit(&p, &["check"]).code(0);
    tb.fault(&["regen-hostkey", "host1"]);
    let before = accepted_logins(&tb, 0).len();
    let base = p.read("deploy.yaml");
    for mode in ["strict", "accept-new"] {
        p.file(
            "deploy.yaml",
            &base.replace(
                "  connect_timeout: 5s\n",
                &format!("  connect_timeout: 5s\n  known_hosts: {mode}\n"),
            ),
        );
        let out = tb.shipit(&p, &["check"]);
        out.code(4);
        assert!(
            out.stdout.contains("changed") || out.stdout.contains("CHANGED"),
            "{mode}: {}",
            out.stdout
        );
        assert!(
            out.stdout.contains(&format!("{}:1", known.display())),
            "{mode}: names the file and line: {}",
            out.stdout
        );
    }
    assert_eq!(
        accepted_logins(&tb, 0).len(),
        before,
        "no login with a changed key"
    );
    let copy = std::fs::read_to_string(&tb.state.known_hosts).unwrap();
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        copy,
        "known_hosts untouched"
    );
}

#[test]
fn proxy_jump_goes_through_one_host_to_another() {
    let Some(tb) = Testbed::up("e2e-check-jump", 2) else {
        return;
    };
    let bastion = tb.host(0).ip.clone();
    let p = project(&tb, &[1], &tb.state.known_hosts, "");
    p.file(
        "deploy.yaml",
        &p.read("deploy.yaml").replace(
            "  connect_timeout: 5s\n",
            &format!("  connect_timeout: 5s\n  proxy_jump: deploy@{bastion}\n"),
        ),
    );
    let out = tb.shipit(&p, &["check", "--json"]);
    out.code(0);
    all_pass(&report(&out)["hosts"][0]);
    // The target saw the login come from the bastion, the bastion from the client.
    let target_logins = accepted_logins(&tb, 1);
    assert!(
        target_logins
            .iter()
            .any(|l| l.contains(&format!("for deploy from {bastion} "))),
        "{target_logins:?}"
    );
    let bastion_logins = accepted_logins(&tb, 0);
    assert!(
        bastion_logins
            .iter()
            .any(|l| l.contains(&format!("for deploy from {} ", tb.state.client_ip))),
        "{bastion_logins:?}"
    );
}

#[test]
fn a_dead_link_is_reported_within_connect_timeout_and_the_others_are_still_checked() {
    let Some(tb) = Testbed::up("e2e-check-link", 3) else {
        return;
    };
    tb.fault(&["link-down", "host2"]);
    let p = project(&tb, &[0, 1, 2], &tb.state.known_hosts, "");
    p.file(
        "deploy.yaml",
        &p.read("deploy.yaml")
            .replace("connect_timeout: 5s", "connect_timeout: 2s"),
    );
    let started = Instant::now();
    let out = tb.shipit(&p, &["check", "--json"]);
    let elapsed = started.elapsed();
    out.code(4);
    // A bound, not a benchmark: the dead host must not hold the run much past its timeout.
    assert!(elapsed < Duration::from_secs(2 + 6), "took {elapsed:?}");
    let r = report(&out);
    let hosts = r["hosts"].as_array().unwrap();
    all_pass(&hosts[0]);
    all_pass(&hosts[2]);
    assert_eq!(hosts[1]["reachable"], false);
    let error = hosts[1]["error"].as_str().unwrap();
    assert!(
        error.contains(&tb.host(1).ip) && error.contains("timed out"),
        "{error}"
    );
    tb.fault(&["link-up", "host2"]);
    tb.shipit(&p, &["check"]).code(0);
}

#[test]
fn a_missing_unit_and_missing_sudo_rights_fail_the_check() {
    let Some(tb) = Testbed::up("e2e-check-unready", 2) else {
        return;
    };
    tb.root(1, "rm /etc/sudoers.d/deploy");
    let p = project(&tb, &[0, 1], &tb.state.known_hosts, "");
    p.file(
        "deploy.yaml",
        &p.read("deploy.yaml")
            .replace("  unit_file: hello.service\n", ""),
    );
    let out = tb.shipit(&p, &["check"]);
    out.code(1);
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .skip(1)
        .take(2)
        .map(|l| l.split_whitespace().take(9).collect())
        .collect();
    // HOST, ARCH, the six checks (the OS follows, in several words).
    let arch = std::env::consts::ARCH;
    assert_eq!(
        rows[0],
        [
            tb.host(0).ip.as_str(),
            arch,
            "ok",
            "ok",
            "ok",
            "ok",
            "ok",
            "FAIL",
            "ok"
        ]
    );
    assert_eq!(
        rows[1],
        [
            tb.host(1).ip.as_str(),
            arch,
            "ok",
            "ok",
            "ok",
            "ok",
            "ok",
            "FAIL",
            "FAIL"
        ]
    );
    let problems: Vec<&str> = out.stdout.lines().skip(4).collect();
    assert_eq!(
        problems,
        [
            format!(
                "{}: unit: hello is not known to systemd and no service.unit_file is configured",
                tb.host(0).ip
            )
            .as_str(),
            format!(
                "{}: unit: hello is not known to systemd and no service.unit_file is configured",
                tb.host(1).ip
            )
            .as_str(),
            format!(
                "{}: sudo: sudo -n true fails for deploy (needs a password, or not allowed)",
                tb.host(1).ip
            )
            .as_str(),
        ]
    );
    // An installed unit is known.
    tb.root(0, "printf '[Service]\\nExecStart=/bin/sleep infinity\\n' > /etc/systemd/system/hello.service && systemctl daemon-reload");
    let r = report(&tb.shipit(&p, &["check", "--json"]));
    let unit = &r["hosts"][0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "unit")
        .unwrap()
        .clone();
    assert_eq!(unit["status"], "ok");
    assert_eq!(unit["detail"], "hello is loaded");
}

#[test]
fn a_hundred_megabytes_arrive_intact() {
    use sha2::Digest;
    let Some(tb) = Testbed::up("e2e-upload", 1) else {
        return;
    };
    let host = tb.host(0).clone();
    let target = shipit::ssh::Target {
        name: host.name.clone(),
        host: host.ip.clone(),
        port: host.port,
        user: "deploy".into(),
        identity_files: vec![tb.state.client_key.clone()],
        known_hosts: shipit::ssh::KnownHostsPolicy::Strict,
        known_hosts_files: vec![tb.state.known_hosts.clone()],
        proxy_jump: None,
        proxy_command: None,
        identity_agent: None,
        connect_timeout: Duration::from_secs(5),
    };
    // Incompressible, so nothing in the path can shortcut it.
    let mut data = vec![0u8; 100 << 20];
    let mut x: u64 = 0x2545f4914f6cdd1d;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let local = hex::encode(sha2::Sha256::digest(&data));
    let (remote, sent) = tb.in_client_netns(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let session = shipit::ssh::Connector::new(1)
                .agent_socket(None)
                .interactive(false)
                .connect(&target)
                .await
                .unwrap();
            let mut last = 0;
            let out = session
                .exec_with_data(
                    "cat > /opt/upload.bin && sha256sum /opt/upload.bin",
                    &data[..],
                    |n| last = n,
                    |_, _| {},
                )
                .await
                .unwrap();
            assert!(out.exec.success(), "{}", out.exec.stderr_tail);
            (out.exec.stdout, last)
        })
    });
    assert_eq!(sent, 100 << 20, "progress reached the total");
    assert_eq!(remote.split_whitespace().next(), Some(local.as_str()));
    // And the file on the host's disk is the same.
    let on_disk = tb.root(0, "sha256sum /opt/upload.bin");
    assert_eq!(on_disk.split_whitespace().next(), Some(local.as_str()));
}

#[test]
fn ssh_config_aliases_include_and_proxy_jump_are_honoured() {
    let Some(tb) = Testbed::up("e2e-check-sshcfg", 2) else {
        return;
    };
    let p = Project::new();
    // HOME is the project dir (see support.rs), so this is the user's ~/.ssh/config.
    let key = tb.state.client_key.display();
    let known = tb.state.known_hosts.display();
    p.file(".ssh/config", &format!("Include ~/.ssh/conf.d/*.conf\n\nHost web*\n    User deploy\n    IdentityFile {key}\n    UserKnownHostsFile {known}\n"));
    p.file(
        ".ssh/conf.d/web.conf",
        &format!(
            "Host web1\n    HostName {}\nHost web2\n    HostName {}\n    ProxyJump web1\n",
            tb.host(0).ip,
            tb.host(1).ip
        ),
    );
    p.file(
        "deploy.yaml",
        "app: hello\nenv:\n  DB_PASSWORD: ${SHIPIT_E2E_CANARY}\nservice:\n  manager: none\nhosts: [web1, web2]\n",
    );
    let out = tb.shipit(&p, &["check", "--json"]);
    out.code(0);
    let r = report(&out);
    assert_eq!(r["hosts"][0]["name"], "web1");
    assert_eq!(r["hosts"][0]["address"], format!("{}:22", tb.host(0).ip));
    assert_eq!(r["hosts"][1]["user"], "deploy");
    let via_bastion = accepted_logins(&tb, 1);
    assert!(
        via_bastion
            .iter()
            .any(|l| l.contains(&format!("from {} ", tb.host(0).ip))),
        "web2 was reached through web1: {via_bastion:?}"
    );
    // deploy.yaml wins over ~/.ssh/config where it sets a value.
    p.file(
        "deploy.yaml",
        "app: hello\nssh:\n  user: root\nservice:\n  manager: none\nhosts: [web1]\n",
    );
    let r = report(&tb.shipit(&p, &["check", "--json"]));
    assert_eq!(r["hosts"][0]["user"], "root");
    assert_eq!(r["ok"], true, "{r:#}");
}

/// `ssh.config_file` (kept with the project, as a CI job would) with a `ProxyCommand`:
/// OpenSSH's `ssh -W` through one host carries the connection to the other; a command
/// that fails is named with what it said; an unevaluated `Match` is a warning.
#[test]
fn proxy_command_from_a_config_file_reaches_a_host_through_another() {
    let Some(tb) = Testbed::up("e2e-check-proxycmd", 2) else {
        return;
    };
    let p = Project::new();
    let key = tb.state.client_key.display();
    let known = tb.state.known_hosts.display();
    let (bastion, target) = (&tb.host(0).ip, &tb.host(1).ip);
    let config = format!(
        "Host app\n    HostName {target}\n    ProxyCommand ssh -i {key} -o BatchMode=yes \
         -o StrictHostKeyChecking=yes -o UserKnownHostsFile={known} -W %h:%p deploy@{bastion}\n\
         Host broken\n    HostName {target}\n    ProxyCommand sh -c 'echo no route to %n >&2; exit 3'\n\
         Match exec \"true\"\n    User nobody\n\
         Host *\n    User deploy\n    IdentityFile {key}\n    UserKnownHostsFile {known}\n"
    );
    p.file("ci/ssh_config", &config);
    // The user's own config would send everything elsewhere: it is not read.
    p.file(".ssh/config", "Host *\n    User root\n    Port 1\n");
    p.file(
        "deploy.yaml",
        "app: hello\nenv:\n  DB_PASSWORD: ${SHIPIT_E2E_CANARY}\nservice:\n  manager: none\n\
         ssh:\n  config_file: ci/ssh_config\nhosts: [app]\n",
    );
    let out = tb.shipit(&p, &["check", "--json"]);
    out.code(0);
    let r = report(&out);
    assert_eq!(r["hosts"][0]["user"], "deploy", "{r:#}");
    assert!(
        out.stderr
            .contains("ci/ssh_config:7: `Match exec true` is not evaluated"),
        "{}",
        out.stderr
    );
    let via_bastion = accepted_logins(&tb, 1);
    assert!(
        via_bastion
            .iter()
            .any(|l| l.contains(&format!("for deploy from {bastion} "))),
        "the target was reached through the bastion: {via_bastion:?}"
    );

    p.file(
        "deploy.yaml",
        &p.read("deploy.yaml")
            .replace("hosts: [app]", "hosts: [broken]"),
    );
    let out = tb.shipit(&p, &["check"]);
    out.code(4);
    assert!(
        out.stdout.contains("ProxyCommand") && out.stdout.contains("no route to broken"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
}

/// `IdentityAgent` names the agent to use: a second agent holding the key gets the host
/// in, `IdentityAgent none` keeps it out.
#[test]
fn identity_agent_picks_a_second_agent() {
    let Some(tb) = Testbed::up("e2e-check-agent", 1) else {
        return;
    };
    let p = Project::new();
    let agent = Agent::start(p.path(), &[(&tb.state.client_key, "")]);
    let sock = agent.socket.clone();
    let known = tb.state.known_hosts.display();
    let config = |agent: &str| {
        format!(
            "Host *\n    User deploy\n    IdentityAgent {agent}\n    UserKnownHostsFile {known}\n"
        )
    };
    p.file("ssh_config", &config(&sock.display().to_string()));
    p.file(
        "deploy.yaml",
        &format!(
            "app: hello\nenv:\n  DB_PASSWORD: ${{SHIPIT_E2E_CANARY}}\nservice:\n  manager: none\n\
             ssh:\n  config_file: ssh_config\nhosts: [{}]\n",
            tb.host(0).ip
        ),
    );
    let out = tb.shipit(&p, &["check", "--json"]);
    out.code(0);
    p.file("ssh_config", &config("none"));
    let out = tb.shipit(&p, &["check"]);
    out.code(4);
    assert!(out.stdout.contains("authentication"), "{}", out.stdout);
}

/// A host key named on an `@revoked` line is refused (exit 4), even next to a line that
/// trusts it.
#[test]
fn a_revoked_host_key_is_refused() {
    let Some(tb) = Testbed::up("e2e-check-revoked", 1) else {
        return;
    };
    let ip = &tb.host(0).ip;
    let known = std::fs::read_to_string(&tb.state.known_hosts).unwrap();
    let revoked: String = known
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(ip.as_str()))
        .map(|l| format!("@revoked {l}\n"))
        .collect();
    assert!(!revoked.is_empty(), "{ip} is not in\n{known}");
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("known_hosts");
    std::fs::write(&file, format!("{known}{revoked}")).unwrap();
    let p = project(&tb, &[0], &file, "");
    let out = tb.shipit(&p, &["check"]);
    out.code(4);
    assert!(
        out.stdout.contains("is revoked"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
}

/// `ssh-keygen ARGS` in `dir`; it must succeed.
fn ssh_keygen(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("ssh-keygen")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen {args:?}: {out:?}");
}

/// `shipit check` every 100 ms until `done` holds of its output (a bounded poll, up to
/// 10 s: sshd takes a moment to reload); `never` says what did not happen.
fn check_until(
    tb: &Testbed,
    p: &Project,
    never: &str,
    done: impl Fn(&crate::support::Output) -> bool,
) -> crate::support::Output {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = tb.shipit(p, &["check"]);
        if done(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{never}: {}\n{}",
            out.stdout,
            out.stderr
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A host that takes only user certificates (`TrustedUserCAKeys`, no authorized_keys):
/// reached with a certificate beside the identity file, and with one held by the agent.
#[test]
fn a_host_that_takes_only_certificates_is_reached_with_one_from_a_file_and_from_the_agent() {
    let Some(tb) = Testbed::up("e2e-check-usercert", 1) else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let keygen = |args: &[&str]| ssh_keygen(keys.path(), args);
    keygen(&["-q", "-t", "ed25519", "-N", "", "-C", "ca", "-f", "ca"]);
    keygen(&["-q", "-t", "ed25519", "-N", "", "-C", "user", "-f", "user"]);
    keygen(&[
        "-q",
        "-s",
        "ca",
        "-I",
        "shipit-e2e",
        "-n",
        "deploy",
        "-V",
        "-5m:+1h",
        "user.pub",
    ]);
    let ca = std::fs::read_to_string(keys.path().join("ca.pub")).unwrap();
    tb.root(
        0,
        &format!(
            "printf '%s\\n' '{}' > /etc/ssh/user_ca.pub && printf 'TrustedUserCAKeys \
             /etc/ssh/user_ca.pub\\nAuthorizedKeysFile none\\n' > \
             /etc/ssh/sshd_config.d/20-certs-only.conf && systemctl reload ssh",
            ca.trim()
        ),
    );
    let p = Project::new();
    let known = tb.state.known_hosts.display();
    let user_key = keys.path().join("user");
    let yaml = |identity: &str| {
        format!(
            "app: hello\nenv:\n  DB_PASSWORD: ${{SHIPIT_E2E_CANARY}}\nservice:\n  manager: none\n\
             ssh:\n  user: deploy\n  known_hosts_file: {known}\n  identity_files: [{identity}]\n\
             hosts: [{}]\n",
            tb.host(0).ip
        )
    };
    // The plain key alone is refused now (a bounded poll: the reload takes a moment).
    let plain = keys.path().join("plain");
    std::fs::copy(&user_key, &plain).unwrap();
    std::fs::set_permissions(&plain, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    p.file("deploy.yaml", &yaml(&plain.display().to_string()));
    let out = check_until(&tb, &p, "sshd still takes the plain key", |o| o.code == 4);
    assert!(out.stdout.contains("authentication"), "{}", out.stdout);
    // From the file: `user-cert.pub` beside `user`.
    p.file("deploy.yaml", &yaml(&user_key.display().to_string()));
    let out = tb.shipit(&p, &["check", "--json"]);
    out.code(0);
    // From the agent: the key and its certificate added with ssh-add, no identity file.
    let agent = Agent::start(keys.path(), &[(&user_key, "")]);
    let nowhere = keys.path().join("none");
    p.file("deploy.yaml", &yaml(&nowhere.display().to_string()));
    let out = tb
        .shipit_command(&p, &["check", "--json"])
        .env("SSH_AUTH_SOCK", &agent.socket)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A host whose only trust is an `@cert-authority` line: its host certificate from that
/// CA is accepted; one from another CA is refused (exit 4), as is a revoked host key.
#[test]
fn a_host_certificate_from_a_trusted_ca_is_accepted_and_others_refused() {
    let Some(tb) = Testbed::up("e2e-check-hostcert", 1) else {
        return;
    };
    let ip = tb.host(0).ip.clone();
    let keys = tempfile::tempdir().unwrap();
    let keygen = |args: &[&str]| ssh_keygen(keys.path(), args);
    let read = |name: &str| {
        std::fs::read_to_string(keys.path().join(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    keygen(&["-q", "-t", "ed25519", "-N", "", "-C", "ca", "-f", "ca"]);
    keygen(&[
        "-q", "-t", "ed25519", "-N", "", "-C", "other", "-f", "other",
    ]);
    let host_pub = tb.root(0, "cat /etc/ssh/ssh_host_ed25519_key.pub");
    std::fs::write(keys.path().join("host.pub"), host_pub.trim()).unwrap();
    let install = |ca: &str| {
        keygen(&[
            "-q", "-s", ca, "-h", "-I", "e2e-host", "-n", &ip, "-V", "-5m:+1h", "host.pub",
        ]);
        tb.root(
            0,
            &format!(
                "printf '%s\\n' '{}' > /etc/ssh/ssh_host_ed25519_key-cert.pub && printf \
                 'HostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub\\n' > \
                 /etc/ssh/sshd_config.d/20-hostcert.conf && systemctl reload ssh",
                read("host-cert.pub")
            ),
        );
    };
    install("ca");
    let known = keys.path().join("known_hosts");
    std::fs::write(&known, format!("@cert-authority * {}\n", read("ca.pub"))).unwrap();
    let p = project(&tb, &[0], &known, "");
    // A bounded poll: the reload takes a moment to present the certificate.
    check_until(&tb, &p, "never accepted", |o| o.code == 0);
    // Nothing was written to known_hosts: the CA line is the whole trust.
    assert_eq!(std::fs::read_to_string(&known).unwrap().lines().count(), 1);

    // Signed by a CA nobody trusts for this host.
    install("other");
    let out = check_until(&tb, &p, "still accepted", |o| {
        o.code == 4 && o.stdout.contains("host certificate")
    });
    assert!(
        out.stdout.contains("no `@cert-authority` line trusts"),
        "{}",
        out.stdout
    );

    // The right CA again, but the host's key is revoked.
    install("ca");
    std::fs::write(
        &known,
        format!(
            "@cert-authority * {}\n@revoked * {}\n",
            read("ca.pub"),
            read("host.pub")
        ),
    )
    .unwrap();
    check_until(&tb, &p, "not refused", |o| {
        o.code == 4 && o.stdout.contains("is revoked")
    });
}

/// Every host behind one bastion shares one login to it: a channel per target.
#[test]
fn hosts_behind_one_bastion_share_one_login_to_it() {
    let Some(tb) = Testbed::up("e2e-check-onejump", 3) else {
        return;
    };
    let bastion = tb.host(0).ip.clone();
    let from_client = |tb: &Testbed| {
        accepted_logins(tb, 0)
            .iter()
            .filter(|l| l.contains(&format!("from {} ", tb.state.client_ip)))
            .count()
    };
    let before = from_client(&tb);
    let p = project(&tb, &[1, 2], &tb.state.known_hosts, "");
    p.file(
        "deploy.yaml",
        &p.read("deploy.yaml").replace(
            "  connect_timeout: 5s\n",
            &format!("  connect_timeout: 5s\n  proxy_jump: deploy@{bastion}\n"),
        ),
    );
    let out = tb.shipit(&p, &["check", "--json"]);
    out.code(0);
    let r = report(&out);
    assert_eq!(r["hosts"].as_array().unwrap().len(), 2);
    for i in [1, 2] {
        assert!(
            accepted_logins(&tb, i)
                .iter()
                .any(|l| l.contains(&format!("for deploy from {bastion} "))),
            "host {i} was reached through the bastion"
        );
    }
    assert_eq!(
        from_client(&tb) - before,
        1,
        "{:?}",
        accepted_logins(&tb, 0)
    );
}
