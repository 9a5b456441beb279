//! The floor for connection setup with the SSH library shipit is built on, for
//! bench/fleet.py: per host, a bare russh connection (TCP, handshake with the host key
//! checked against a known_hosts file, public-key authentication with one key file),
//! `true` run on one channel, its exit status read, a disconnect. Every host at once, at
//! most `STARTS` handshakes in flight (shipit's `ssh.max_concurrent_starts`, default 10).
//! Nothing else: no config, no retries, no DNS, no scripts.
//!
//!   russh-floor KEY KNOWN_HOSTS USER STARTS HOSTS_FILE
//!
//! HOSTS_FILE has one `IP PORT` per line. Exit status 0 when every host ran `true`;
//! otherwise 1, with one `floor-failed HOST:PORT: WHY` line on stderr per failed host.

use std::path::PathBuf;
use std::sync::Arc;

use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, load_secret_key};
use tokio::sync::Semaphore;

struct Checked {
    host: String,
    port: u16,
    known_hosts: PathBuf,
}

impl client::Handler for Checked {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts)
            .map_err(|_| russh::Error::UnknownKey)
    }
}

struct Floor {
    key: Arc<russh::keys::PrivateKey>,
    known_hosts: PathBuf,
    user: String,
    config: Arc<client::Config>,
    starts: Semaphore,
}

impl Floor {
    async fn one(&self, host: String, port: u16) -> Result<(), String> {
        let handler = Checked {
            host: host.clone(),
            port,
            known_hosts: self.known_hosts.clone(),
        };
        let handle = {
            let _start = self.starts.acquire().await.map_err(|e| e.to_string())?;
            let mut handle =
                client::connect(Arc::clone(&self.config), (host.as_str(), port), handler)
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
            let key = PrivateKeyWithHashAlg::new(Arc::clone(&self.key), None);
            let auth = handle
                .authenticate_publickey(self.user.clone(), key)
                .await
                .map_err(|e| format!("authentication: {e}"))?;
            if !auth.success() {
                return Err("the key was refused".into());
            }
            handle
        };
        let mut channel = handle
            .channel_open_session()
            .await
            .map_err(|e| format!("channel: {e}"))?;
        channel
            .exec(true, "true")
            .await
            .map_err(|e| format!("exec: {e}"))?;
        let mut status = None;
        while let Some(msg) = channel.wait().await {
            if let russh::ChannelMsg::ExitStatus { exit_status } = msg {
                status = Some(exit_status);
            }
        }
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        match status {
            Some(0) => Ok(()),
            other => Err(format!("`true` ended with {other:?}")),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [key, known_hosts, user, starts, hosts_file] = args.as_slice() else {
        eprintln!("usage: russh-floor KEY KNOWN_HOSTS USER STARTS HOSTS_FILE");
        std::process::exit(2);
    };
    let mut hosts = Vec::new();
    for line in std::fs::read_to_string(hosts_file)?.lines() {
        let mut words = line.split_whitespace();
        if let (Some(ip), Some(port)) = (words.next(), words.next()) {
            hosts.push((ip.to_owned(), port.parse::<u16>()?));
        }
    }
    let floor = Arc::new(Floor {
        key: Arc::new(load_secret_key(key, None)?),
        known_hosts: PathBuf::from(known_hosts),
        user: user.clone(),
        config: Arc::new(client::Config {
            nodelay: true,
            ..client::Config::default()
        }),
        starts: Semaphore::new(starts.parse::<usize>()?.max(1)),
    });
    let runtime = tokio::runtime::Runtime::new()?;
    let failed = runtime.block_on(async {
        let tasks: Vec<_> = hosts
            .into_iter()
            .map(|(host, port)| {
                let floor = Arc::clone(&floor);
                tokio::spawn(async move {
                    let name = format!("{host}:{port}");
                    floor.one(host, port).await.map_err(|why| (name, why))
                })
            })
            .collect();
        let mut failed = 0;
        for task in tasks {
            if let Err((name, why)) = task.await.expect("a host's task") {
                eprintln!("floor-failed {name}: {why}");
                failed += 1;
            }
        }
        failed
    });
    std::process::exit(i32::from(failed > 0));
}
