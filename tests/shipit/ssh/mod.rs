//! End-to-end tests of `shipit::ssh` against a real OpenSSH server started by the test
//! (see `sshd.rs`): authentication paths, host-key policy, exec, upload, tunnel, jump
//! host and connection failures.

mod goodbye;
pub mod sshd;
mod storm;
mod verbose;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use shipit::ssh::{Connector, Error, KnownHostsPolicy, Phase, Stream, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use sshd::{Agent, Sshd};

/// A connector that uses only what the test gives it: no agent, no ~/.ssh keys, no prompt.
fn isolated() -> Connector {
    Connector::new(10)
        .agent_socket(None)
        .default_identity_files(Vec::new())
        .interactive(false)
}

/// A target on this machine's loopback with nothing to authenticate with.
fn loopback(name: &str, port: u16, timeout: Duration) -> Target {
    Target {
        name: name.into(),
        host: "127.0.0.1".into(),
        port,
        user: "root".into(),
        identity_files: vec![],
        known_hosts: KnownHostsPolicy::Strict,
        known_hosts_files: vec![],
        proxy_jump: None,
        proxy_command: None,
        identity_agent: None,
        connect_timeout: timeout,
    }
}

macro_rules! e2e {
    () => {
        match sshd::prerequisites() {
            Some(()) => Sshd::start(),
            None => return,
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_returns_stdout_status_and_streams_stderr() {
    let sshd = e2e!();
    let session = isolated()
        .connect(&sshd.target("app1"))
        .await
        .expect("connect with key file");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&lines);
    let out = session
        .exec(
            "echo out1\necho err1 >&2\necho err2 >&2\nprintf 'last-no-newline'\nexit 7",
            move |stream, line| seen.lock().unwrap().push((stream, line.to_owned())),
        )
        .await
        .expect("exec");
    assert_eq!(out.status, Some(7));
    assert!(!out.success());
    assert_eq!(out.signal, None);
    assert_eq!(out.stdout, "out1\nlast-no-newline");
    assert_eq!(out.stderr_tail, "err1\nerr2\n");
    let lines = lines.lock().unwrap().clone();
    let stderr: Vec<_> = lines
        .iter()
        .filter(|(s, _)| *s == Stream::Stderr)
        .map(|(_, l)| l.as_str())
        .collect();
    let stdout: Vec<_> = lines
        .iter()
        .filter(|(s, _)| *s == Stream::Stdout)
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(stderr, ["err1", "err2"]);
    assert_eq!(stdout, ["out1", "last-no-newline"]);
    session.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sends_long_scripts_on_stdin_and_keeps_stdin_away_from_commands() {
    let sshd = e2e!();
    let session = isolated()
        .connect(&sshd.target("app1"))
        .await
        .expect("connect");
    // 1 MB of script: 8 times what Linux allows in one argument (MAX_ARG_STRLEN, 128 KiB).
    let mut script = String::from("n=0\n");
    for _ in 0..50_000 {
        script.push_str("n=$((n+1))          \n");
    }
    script.push_str("cat\necho \"after cat: $n\"\n");
    assert!(script.len() > 1_000_000);
    let out = session
        .exec(&script, |_, _| {})
        .await
        .expect("exec long script");
    assert!(out.success(), "{out:?}");
    assert_eq!(
        out.stdout, "after cat: 50000\n",
        "`cat` must read /dev/null, not the script"
    );

    // A syntax error anywhere means nothing runs.
    let out = session
        .exec("echo should-not-run\nif then fi (", |_, _| {})
        .await
        .expect("exec");
    assert!(!out.success());
    assert_eq!(out.stdout, "");

    // Killed by a signal.
    let out = session
        .exec("kill -TERM $$", |_, _| {})
        .await
        .expect("exec");
    assert_eq!(out.signal.as_deref(), Some("TERM"), "{out:?}");
    assert_eq!(out.status, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_run_concurrently_on_one_session() {
    let sshd = e2e!();
    let session = isolated()
        .connect(&sshd.target("app1"))
        .await
        .expect("connect");
    let (a, b, c) = tokio::join!(
        session.exec("sleep 0.3; echo a", |_, _| {}),
        session.exec("sleep 0.3; echo b", |_, _| {}),
        session.exec("sleep 0.3; echo c", |_, _| {}),
    );
    assert_eq!(a.unwrap().stdout, "a\n");
    assert_eq!(b.unwrap().stdout, "b\n");
    assert_eq!(c.unwrap().stdout, "c\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_key_authenticates_with_sha2_signatures() {
    let sshd = e2e!();
    let target = Target {
        identity_files: vec![sshd.rsa_key.clone()],
        ..sshd.target("rsa")
    };
    let session = isolated().connect(&target).await.expect("RSA key auth");
    assert!(session.exec("true", |_, _| {}).await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_auth_including_an_encrypted_key() {
    let sshd = e2e!();
    let agent = Agent::start(
        sshd.dir.path(),
        &[(&sshd.agent_key, ""), (&sshd.encrypted_key, "pass")],
    );
    let connector = isolated().agent_socket(Some(agent.socket.clone()));

    // No identity files at all: the agent's keys are used.
    let target = Target {
        identity_files: vec![],
        ..sshd.target("agent")
    };
    let session = connector.connect(&target).await.expect("agent auth");
    assert!(session.exec("true", |_, _| {}).await.unwrap().success());

    // An encrypted identity file whose key the agent holds: signed by the agent, no prompt.
    let target = Target {
        identity_files: vec![sshd.encrypted_key.clone()],
        ..sshd.target("agent-enc")
    };
    let session = connector
        .connect(&target)
        .await
        .expect("encrypted key via agent");
    assert!(session.exec("true", |_, _| {}).await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_key_without_agent_or_tty_is_a_clear_error() {
    let sshd = e2e!();
    let target = Target {
        identity_files: vec![sshd.encrypted_key.clone()],
        ..sshd.target("locked")
    };
    let err = isolated()
        .connect(&target)
        .await
        .expect_err("cannot unlock the key");
    let text = err.to_string();
    assert!(
        matches!(&err, Error::KeyNeedsPassphrase { key, .. } if *key == sshd.encrypted_key),
        "{err:?}"
    );
    assert!(
        text.contains(&sshd.encrypted_key.display().to_string()),
        "{text}"
    );
    assert!(text.contains("ssh-add"), "{text}");
    assert!(err.is_unreachable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_keys_are_listed_in_the_auth_error() {
    let sshd = e2e!();
    let target = Target {
        identity_files: vec![sshd.stranger_key.clone(), sshd.path("no_such_key")],
        ..sshd.target("stranger")
    };
    let err = isolated().connect(&target).await.expect_err("unknown key");
    let Error::Auth { host, user, tried } = &err else {
        panic!("expected Auth, got {err:?}")
    };
    assert_eq!((host.as_str(), user.as_str()), ("stranger", "root"));
    assert_eq!(tried.len(), 2, "{tried:?}");
    assert!(
        tried[0].contains("stranger_ed25519") && tried[0].contains("rejected"),
        "{tried:?}"
    );
    assert!(
        tried[1].contains("no_such_key") && tried[1].contains("not found"),
        "{tried:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refuses_an_unknown_host_and_shows_its_fingerprint() {
    let sshd = e2e!();
    let empty = sshd.path("known_hosts.empty");
    std::fs::write(&empty, "").unwrap();
    let target = Target {
        known_hosts_files: vec![empty.clone()],
        ..sshd.target("unknown")
    };
    let err = isolated()
        .connect(&target)
        .await
        .expect_err("strict refuses");
    let fingerprint = sshd.host_fingerprint();
    assert!(fingerprint.starts_with("SHA256:"));
    match &err {
        Error::HostKeyUnknown {
            host,
            fingerprint: fp,
            ..
        } => {
            assert_eq!(host, "unknown");
            assert_eq!(fp, &fingerprint, "same text as `ssh-keygen -l`");
        }
        other => panic!("expected HostKeyUnknown, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "ssh-keyscan -p {} 127.0.0.1 >> {}",
            sshd.port,
            empty.display()
        )),
        "{text}"
    );
    assert!(text.contains("accept-new"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&empty).unwrap(),
        "",
        "strict never writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused_naming_file_and_line() {
    let sshd = e2e!();
    let other = sshd::public_key(&sshd.stranger_key);
    let file = sshd.path("known_hosts.rotated");
    std::fs::write(
        &file,
        format!("# first\n\n[127.0.0.1]:{} {other}\n", sshd.port),
    )
    .unwrap();
    for policy in [KnownHostsPolicy::Strict, KnownHostsPolicy::AcceptNew] {
        let target = Target {
            known_hosts: policy,
            known_hosts_files: vec![file.clone()],
            ..sshd.target("changed")
        };
        let err = isolated()
            .connect(&target)
            .await
            .expect_err("changed key refused");
        assert!(
            matches!(&err, Error::HostKeyChanged { line: 3, file: f, .. } if *f == file),
            "{policy:?}: {err:?}"
        );
        assert!(
            err.to_string().contains(&format!("{}:3", file.display())),
            "{err}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().lines().count(),
        3,
        "nothing appended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_new_records_the_key_then_strict_connects() {
    let sshd = e2e!();
    let file = sshd.path("fresh/dir/known_hosts");
    let target = Target {
        known_hosts: KnownHostsPolicy::AcceptNew,
        known_hosts_files: vec![file.clone()],
        ..sshd.target("fresh")
    };
    isolated()
        .connect(&target)
        .await
        .expect("accept-new connects")
        .close()
        .await
        .unwrap();
    let recorded = std::fs::read_to_string(&file).expect("known_hosts written");
    assert_eq!(
        recorded,
        format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_key)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(file.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    let strict = Target {
        known_hosts: KnownHostsPolicy::Strict,
        ..target
    };
    let session = isolated()
        .connect(&strict)
        .await
        .expect("strict connects with the recorded key");
    assert!(session.exec("true", |_, _| {}).await.unwrap().success());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        recorded,
        "recorded once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_100_mb_into_sha256sum() {
    let sshd = e2e!();
    let session = isolated()
        .connect(&sshd.target("upload"))
        .await
        .expect("connect");
    const SIZE: usize = 100 * 1024 * 1024;
    let mut data = vec![0u8; SIZE];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let expected: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let mut last = 0u64;
    let mut calls = 0usize;
    let started = Instant::now();
    let out = session
        .exec_with_data(
            "sha256sum",
            &data[..],
            |sent| {
                assert!(sent > last, "progress is monotonic");
                last = sent;
                calls += 1;
            },
            |_, _| {},
        )
        .await
        .expect("upload");
    assert!(out.complete);
    let (bytes, out) = (out.bytes, out.exec);
    let secs = started.elapsed().as_secs_f64();
    eprintln!("upload: 100 MiB in {secs:.2}s = {:.1} MiB/s", 100.0 / secs);
    assert!(out.success(), "{out:?}");
    assert_eq!(bytes, SIZE as u64);
    assert_eq!(last, SIZE as u64);
    assert!(
        calls >= SIZE / (256 * 1024),
        "one progress call per chunk, got {calls}"
    );
    assert_eq!(
        out.stdout.split_whitespace().next(),
        Some(expected.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_data_runs_the_script_and_leaves_the_data_on_stdin() {
    let sshd = e2e!();
    let session = isolated()
        .connect(&sshd.target("data"))
        .await
        .expect("connect");
    // Data that starts like a script: it must be read as data, never run.
    let mut data = b"echo RAN-THE-DATA\n".to_vec();
    data.extend((0..3_000_000u32).map(|i| (i % 251) as u8));
    let mut lines = Vec::new();
    let script = "printf 'first %s\\n' \"$(head -c 5 | od -An -c | tr -d ' ')\"\nsha256sum | cut -c1-64\necho 'it'\\''s done'";
    let out = session
        .exec_with_data(script, &data[5..], |_| {}, |_, l| lines.push(l.to_owned()))
        .await
        .expect("exec_with_data");
    assert!(out.exec.success(), "{out:?}");
    assert!(out.complete);
    assert_eq!(out.bytes, data.len() as u64 - 5);
    let rest: String = Sha256::digest(&data[10..])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        lines,
        vec!["first RAN-T".to_owned(), rest, "it's done".to_owned()]
    );

    // A syntax error anywhere: nothing runs.
    let out = session
        .exec_with_data(
            "echo SHOULD-NOT-RUN\nif then fi (",
            &b"x"[..],
            |_| {},
            |_, _| {},
        )
        .await
        .expect("exec_with_data");
    assert!(!out.exec.success());
    assert!(!out.exec.stdout.contains("SHOULD-NOT-RUN"), "{out:?}");

    // A script that stops reading: its status and stderr, and `complete` is false.
    let big = vec![1u8; 32 * 1024 * 1024];
    let out = session
        .exec_with_data(
            "head -c 10 >/dev/null; echo stopped >&2; exit 3",
            &big[..],
            |_| {},
            |_, _| {},
        )
        .await
        .expect("exec_with_data");
    assert_eq!(out.exec.status, Some(3));
    assert!(out.exec.stderr_tail.contains("stopped"));
    assert!(!out.complete);
    assert!(out.bytes < big.len() as u64);

    // The session is still usable, and a script that reads everything but fails reports
    // its status.
    let out = session
        .exec_with_data(
            "cat >/dev/null; echo nope >&2; exit 4",
            &b"abc"[..],
            |_| {},
            |_, _| {},
        )
        .await
        .expect("exec_with_data");
    assert_eq!(
        (
            out.exec.status,
            out.bytes,
            out.complete,
            out.exec.stderr_tail.as_str()
        ),
        (Some(4), 3, true, "nope\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_reaches_a_port_on_the_host() {
    let sshd = e2e!();
    // A tiny HTTP server on the "server's" loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            let n = sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "request ended early");
            request.extend_from_slice(&buf[..n]);
        }
        let body = "ok";
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        sock.write_all(reply.as_bytes()).await.unwrap();
        String::from_utf8(request).unwrap()
    });

    let session = isolated()
        .connect(&sshd.target("tunnel"))
        .await
        .expect("connect");
    let mut tunnel = session
        .tunnel("127.0.0.1", port)
        .await
        .expect("open tunnel");
    tunnel
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    tunnel.flush().await.unwrap();
    let mut response = String::new();
    tunnel.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response:?}");
    assert!(response.ends_with("\r\n\r\nok"), "{response:?}");
    assert!(
        server
            .await
            .unwrap()
            .starts_with("GET /healthz HTTP/1.1\r\n")
    );

    let closed = sshd::free_port();
    let err = session
        .tunnel("127.0.0.1", closed)
        .await
        .expect_err("nothing listens there");
    assert!(matches!(&err, Error::Tunnel { .. }), "{err:?}");
    assert!(!err.is_unreachable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_jump_through_the_same_sshd_checks_both_keys() {
    let sshd = e2e!();
    let bastion = sshd.target("bastion");
    let target = Target {
        proxy_jump: Some(Box::new(bastion.clone())),
        ..sshd.target("behind")
    };
    let session = isolated()
        .connect(&target)
        .await
        .expect("connect through the jump host");
    let out = session
        .exec("echo \"$SSH_CONNECTION\"", |_, _| {})
        .await
        .unwrap();
    // Through the jump, the server sees the connection coming from itself via the
    // bastion's forwarding, still on 127.0.0.1 to our port.
    assert!(
        out.stdout
            .trim_end()
            .ends_with(&format!("127.0.0.1 {}", sshd.port)),
        "{out:?}"
    );
    session.close().await.unwrap();

    // The target's key is checked on its own (unknown to the target's known_hosts).
    let empty = sshd.path("known_hosts.none");
    std::fs::write(&empty, "").unwrap();
    let unknown_target = Target {
        known_hosts_files: vec![empty.clone()],
        ..target.clone()
    };
    let err = isolated()
        .connect(&unknown_target)
        .await
        .expect_err("target key unknown");
    assert!(
        matches!(&err, Error::HostKeyUnknown { host, .. } if host == "behind"),
        "{err:?}"
    );

    // The bastion's key is checked too, and its failure is reported as the jump's.
    let unknown_bastion = Target {
        proxy_jump: Some(Box::new(Target {
            known_hosts_files: vec![empty],
            ..bastion
        })),
        ..target
    };
    let err = isolated()
        .connect(&unknown_bastion)
        .await
        .expect_err("bastion key unknown");
    match &err {
        Error::Jump { host, via, source } => {
            assert_eq!((host.as_str(), via.as_str()), ("behind", "bastion"));
            assert!(
                matches!(**source, Error::HostKeyUnknown { .. }),
                "{source:?}"
            );
        }
        other => panic!("expected Jump, got {other:?}"),
    }
    assert!(err.is_unreachable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_refused() {
    let port = sshd::free_port();
    let target = loopback("closed", port, Duration::from_secs(5));
    let err = isolated().connect(&target).await.expect_err("refused");
    assert!(
        matches!(&err, Error::Refused { host, addr } if host == "closed" && addr.port() == port),
        "{err:?}"
    );
    assert!(err.is_unreachable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_host_is_a_dns_error() {
    let target = Target {
        name: "nowhere".into(),
        host: "no-such-host.invalid".into(),
        port: 22,
        user: "root".into(),
        identity_files: vec![],
        known_hosts: KnownHostsPolicy::Strict,
        known_hosts_files: vec![],
        proxy_jump: None,
        proxy_command: None,
        identity_agent: None,
        connect_timeout: Duration::from_secs(5),
    };
    let err = isolated().connect(&target).await.expect_err("no such host");
    assert!(
        matches!(
            &err,
            Error::Dns { .. }
                | Error::Timeout {
                    phase: Phase::Dns,
                    ..
                }
        ),
        "{err:?}"
    );
}

/// Unanswered connections. This workplace forbids traffic to unroutable/private
/// addresses (the usual 10.255.255.1 trick), so both cases are made on loopback: a
/// listener whose accept queue is full (the kernel drops further SYNs, so TCP connect
/// hangs) and a listener that accepts but never speaks SSH (the handshake hangs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_connections_time_out_within_connect_timeout() {
    let timeout = Duration::from_secs(1);
    let target = |name: &str, port| loopback(name, port, timeout);

    // Silent server: TCP works, the SSH banner never comes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let (sock, _) = silent.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(sock);
    });
    let started = Instant::now();
    let err = isolated()
        .connect(&target("silent", port))
        .await
        .expect_err("times out");
    let took = started.elapsed();
    assert!(
        matches!(&err, Error::Timeout { phase: Phase::Handshake, after, .. } if *after == timeout),
        "{err:?}"
    );
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(1),
        "took {took:?}"
    );
    assert!(
        err.to_string()
            .contains("timed out after 1s during SSH handshake"),
        "{err}"
    );
    holder.abort();

    // Full accept queue: SYNs are dropped, TCP connect never completes.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let _full = socket.listen(0).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let conn = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await;
        match conn {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break, // the queue is full
        }
    }
    let started = Instant::now();
    let err = isolated()
        .connect(&target("blackhole", port))
        .await
        .expect_err("times out");
    let took = started.elapsed();
    assert!(
        matches!(
            &err,
            Error::Timeout {
                phase: Phase::TcpConnect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(1),
        "took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_limit_is_shared_and_released() {
    let sshd = e2e!();
    let connector = isolated().with_limit(Arc::new(tokio::sync::Semaphore::new(1)));
    let other = isolated().with_limit(connector.limit());
    let (one, two) = (sshd.target("one"), sshd.target("two"));
    let (a, b) = tokio::join!(connector.connect(&one), other.connect(&two));
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(
        connector.limit().available_permits(),
        1,
        "permits come back after connecting"
    );
}

/// A deploy connects while it checks its artifact (`rollout::connect_early`): every
/// target's outcome comes back in the targets' order, a host that cannot be reached as the
/// same error a plain connect gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_early_keeps_each_outcome_with_its_host() {
    let sshd = e2e!();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dead = Target {
        port,
        connect_timeout: Duration::from_secs(2),
        ..sshd.target("dead")
    };
    let targets = vec![sshd.target("app1"), dead, sshd.target("app2")];
    let outcomes = shipit::rollout::connect_early(&tokio::runtime::Handle::current(), &targets)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 3);
    let names: Vec<&str> = outcomes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["app1", "dead", "app2"]);
    assert!(outcomes[0].1.is_ok(), "{:?}", outcomes[0].1.as_ref().err());
    let Err(err) = &outcomes[1].1 else {
        panic!("nothing listens there")
    };
    assert!(err.is_unreachable(), "{err}");
    assert_eq!(err.host(), "dead");
    assert!(outcomes[2].1.is_ok(), "{:?}", outcomes[2].1.as_ref().err());
}

/// sshd drops what is beyond its `MaxStartups` before the handshake; those starts are
/// retried with backoff, so 30 connections at once to a server that takes 2 all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_dropped_by_max_startups_are_retried() {
    if sshd::prerequisites().is_none() {
        return;
    }
    let sshd = Sshd::start_with_max_startups(2);
    let connector = Connector::new(30)
        .agent_socket(None)
        .default_identity_files(Vec::new())
        .interactive(false);
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (connector, target) = (connector.clone(), sshd.target(&format!("app{i}")));
        tasks.push(tokio::spawn(async move {
            let session = connector.connect(&target).await?;
            session.exec("true", |_, _| {}).await.map(|o| o.success())
        }));
    }
    let mut failed = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(true) => {}
            other => failed.push(format!("{other:?}")),
        }
    }
    assert!(failed.is_empty(), "{} failed: {failed:#?}", failed.len());
}

/// A jump host that does not answer fails every target behind it once, not once per
/// target in turn: the first failure answers for the targets that were waiting on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_jump_host_fails_every_target_behind_it_at_once() {
    let timeout = Duration::from_secs(1);
    let target = |name: &str, port, jump: Option<Box<Target>>| Target {
        proxy_jump: jump,
        ..loopback(name, port, timeout)
    };
    // Silent bastion: TCP works (the kernel's backlog), the SSH banner never comes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let bastion = Box::new(target("bastion", port, None));
    let connector = isolated();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (connector, t) = (
            connector.clone(),
            target(&format!("app{i}"), 22, Some(bastion.clone())),
        );
        tasks.push(tokio::spawn(async move { connector.connect(&t).await }));
    }
    for t in tasks {
        let err = t.await.unwrap().expect_err("the bastion is silent");
        assert!(matches!(err, Error::Jump { .. }), "{err:?}");
        assert!(err.is_unreachable());
    }
    // A bound, not a benchmark: one timeout, not six in a row.
    let took = started.elapsed();
    assert!(took < timeout * 3, "took {took:?}");
    drop(silent);
}

/// Before a fan-out to 10 hosts or more, an agent that signs on a device (here: a real
/// ssh-agent whose socket is named as gpg-agent's) is named in a hint; a plain agent
/// holding an ordinary key is not (shipit asked it for its keys: none is a FIDO key).
#[test]
fn an_agent_that_may_prompt_for_every_signature_is_named_before_a_large_fan_out() {
    if sshd::prerequisites().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = sshd::keygen(dir.path(), "id_plain", "ed25519", "");
    let gnupg = dir.path().join("gnupg");
    std::fs::create_dir(&gnupg).unwrap();
    let gpg = Agent::start_at(gnupg.join("S.gpg-agent.ssh"), &[(&key, "")]);
    let plain = Agent::start(dir.path(), &[(&key, "")]);
    let p = crate::support::Project::new();
    let hosts: Vec<String> = (0..10)
        .map(|_| format!("127.0.0.1:{}", sshd::free_port()))
        .collect();
    p.file(
        "deploy.yaml",
        &format!(
            "app: hello\nssh: {{connect_timeout: 1s}}\nservice: {{manager: none}}\n\
             hosts: [{}]\n",
            hosts.join(", ")
        ),
    );
    let status = |agent: &std::path::Path| {
        let out = p
            .command(&["status"])
            .env("SSH_AUTH_SOCK", agent)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let said = status(&gpg.socket);
    assert!(said.contains("is gpg-agent"), "{said}");
    assert!(said.contains("for each of 10 host(s)"), "{said}");
    let said = status(&plain.socket);
    assert!(!said.contains("the SSH agent at"), "{said}");
}
