//! Establishing a connection: DNS, TCP (or a direct-tcpip channel through a jump host),
//! the SSH handshake with host-key verification, then authentication, all inside the
//! target's `connect_timeout`; and the [`Connector`] that bounds how many connections are
//! being started at once.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use russh::client;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::auth::{self, AgentSource};
use super::deadline::Deadline;
use super::error::{Error, Phase};
use super::handler::ClientHandler;
use super::host_key::HostKeyCheck;
use super::session::{self, Session};
use super::target::Target;

/// Connection starts allowed at once by default, across every host of a run.
pub const DEFAULT_CONNECT_LIMIT: usize = 10;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_MAX: usize = 3;
/// Jump chains longer than this are refused (they are a config loop in practice).
const MAX_JUMPS: usize = 8;

/// How connections are made: the shared limit on concurrent connection starts, where the
/// agent is, which default keys to try, and whether passphrases may be asked for.
///
/// Clones share the same limit. [`Connector::default`] uses one process-wide limit of
/// [`DEFAULT_CONNECT_LIMIT`], so every default connector in a run shares it.
#[derive(Debug, Clone)]
pub struct Connector {
    limit: Arc<Semaphore>,
    methods: auth::Methods,
    /// Jump hosts already connected, shared by every target behind them (one login per
    /// bastion, a channel per target). Clones share them.
    bastions: Bastions,
}

/// Per jump host (its resolved target, as text), the connection while anyone uses it.
/// The inner lock makes the second target wait for the first one's login, not start its own.
type Bastions = Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Jump>>>>>;

/// A jump host's connection, or why it just failed.
#[derive(Debug, Default)]
enum Jump {
    #[default]
    None,
    Open(Weak<Session>),
    /// The last attempt failed (when, and why): targets behind it that were waiting do
    /// not each try again, one after another, for a connect timeout apiece.
    Failed(Instant, String),
}

/// How long a jump host's failure answers for every target behind it.
const JUMP_FAILURE_HOLDS: Duration = Duration::from_secs(5);

/// The process-wide limit of connection starts ([`Connector::default`]), until first used.
static GLOBAL_LIMIT: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(DEFAULT_CONNECT_LIMIT);

/// Sets how many connection starts every default connector of this process allows at
/// once (`ssh.max_concurrent_starts`); call it before the first connection.
pub fn set_connect_limit(n: usize) {
    GLOBAL_LIMIT.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
}

impl Default for Connector {
    fn default() -> Self {
        static GLOBAL: OnceLock<Arc<Semaphore>> = OnceLock::new();
        let limit = GLOBAL.get_or_init(|| {
            let n = GLOBAL_LIMIT.load(std::sync::atomic::Ordering::Relaxed);
            Arc::new(Semaphore::new(n))
        });
        Connector {
            limit: Arc::clone(limit),
            methods: auth::Methods {
                agent: AgentSource::Env,
                default_identity_files: default_identity_files(),
                interactive: std::io::stdin().is_terminal(),
            },
            bastions: Arc::default(),
        }
    }
}

impl Connector {
    /// A connector with its own limit of `max_concurrent_starts` (at least 1).
    pub fn new(max_concurrent_starts: usize) -> Self {
        Connector {
            limit: Arc::new(Semaphore::new(max_concurrent_starts.max(1))),
            ..Connector::default()
        }
    }

    /// Shares `limit` (e.g. with connectors built elsewhere in the run).
    pub fn with_limit(mut self, limit: Arc<Semaphore>) -> Self {
        self.limit = limit;
        self
    }

    /// The semaphore bounding connection starts; a permit is held from DNS until
    /// authentication is done (for a whole jump chain, one permit).
    pub fn limit(&self) -> Arc<Semaphore> {
        Arc::clone(&self.limit)
    }

    /// Agent socket to use: `None` disables the agent. Default: `$SSH_AUTH_SOCK` at
    /// connect time.
    pub fn agent_socket(mut self, socket: Option<PathBuf>) -> Self {
        self.methods.agent = match socket {
            Some(path) => AgentSource::Path(path),
            None => AgentSource::Disabled,
        };
        self
    }

    /// Keys tried after the agent. Default: `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`.
    pub fn default_identity_files(mut self, files: Vec<PathBuf>) -> Self {
        self.methods.default_identity_files = files;
        self
    }

    /// Whether a passphrase may be asked for on the terminal. Default: stdin is a TTY.
    pub fn interactive(mut self, interactive: bool) -> Self {
        self.methods.interactive = interactive;
        self
    }

    /// Connects and authenticates to `target` (through its jump hosts, if any).
    pub async fn connect(&self, target: &Target) -> Result<Session, Error> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| Error::ConnectionLost {
                host: target.name.clone(),
                what: "waiting to connect".into(),
            })?;
        let started = std::time::Instant::now();
        let (host, address, port) = (&target.name, &target.host, target.port);
        tracing::debug!(host = %host, address = %address, port, user = %target.user, "connecting");
        let session = self.connect_chain(target, 0).await;
        let ms = started.elapsed().as_millis() as u64;
        match &session {
            Ok(_) => tracing::debug!(host = %target.name, ms, "connected and authenticated"),
            Err(e) => tracing::debug!(host = %target.name, ms, "not connected: {e}"),
        }
        session
    }

    async fn connect_chain(&self, target: &Target, depth: usize) -> Result<Session, Error> {
        let mut deadline = Deadline::new(&target.name, target.connect_timeout);
        let check = HostKeyCheck::new(target);
        let config = Arc::new(client_config(&check));

        let (handle, jump) = match (&target.proxy_jump, &target.proxy_command) {
            (Some(hop), _) => {
                if depth >= MAX_JUMPS {
                    return Err(Error::Jump {
                        host: target.name.clone(),
                        via: hop.name.clone(),
                        source: Box::new(Error::ConnectionLost {
                            host: hop.name.clone(),
                            what: format!("a jump chain longer than {MAX_JUMPS} hops"),
                        }),
                    });
                }
                let bastion = self
                    .bastion(hop, depth + 1)
                    .await
                    .map_err(|e| Error::Jump {
                        host: target.name.clone(),
                        via: hop.name.clone(),
                        source: Box::new(e),
                    })?;
                // The bastion had its own connect_timeout; ours starts now.
                deadline = Deadline::new(&target.name, target.connect_timeout);
                let channel = deadline
                    .run(
                        Phase::JumpChannel,
                        bastion.handle().channel_open_direct_tcpip(
                            target.host.clone(),
                            u32::from(target.port),
                            "127.0.0.1",
                            0,
                        ),
                    )
                    .await?
                    .map_err(|e| Error::JumpChannel {
                        host: target.name.clone(),
                        via: hop.name.clone(),
                        hostname: target.host.clone(),
                        port: target.port,
                        reason: session::open_failure(&e),
                    })?;
                bastion.tunnel_opened();
                let handler = ClientHandler::new(check);
                let handshake = client::connect_stream(config, channel.into_stream(), handler);
                let handle = deadline
                    .run(Phase::Handshake, handshake)
                    .await?
                    .map_err(|e| e.into_error(target))?;
                (handle, Some(bastion))
            }
            (None, Some(command)) => {
                let handle = through_command(target, command, &config, check, &deadline).await?;
                (handle, None)
            }
            (None, None) => (direct(target, &config, &check, &deadline).await?, None),
        };

        self.finish(handle, target, jump, deadline).await
    }

    /// The connection to jump host `hop`: the one already open for another target if
    /// there is one, else a new one that later targets behind `hop` will share.
    async fn bastion(&self, hop: &Target, depth: usize) -> Result<Arc<Session>, Error> {
        let slot = {
            let mut map = self.bastions.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(format!("{hop:?}")).or_default())
        };
        let mut jump = slot.lock().await;
        match &*jump {
            Jump::Open(weak) => {
                if let Some(session) = weak.upgrade()
                    && !session.is_closed()
                {
                    tracing::debug!(host = %hop.name, "sharing the jump host's connection");
                    return Ok(session);
                }
            }
            Jump::Failed(at, why) if at.elapsed() < JUMP_FAILURE_HOLDS => {
                return Err(Error::Repeated {
                    host: hop.name.clone(),
                    message: why.clone(),
                });
            }
            _ => {}
        }
        match Box::pin(self.connect_chain(hop, depth)).await {
            Ok(session) => {
                let session = Arc::new(session);
                *jump = Jump::Open(Arc::downgrade(&session));
                Ok(session)
            }
            Err(e) => {
                *jump = Jump::Failed(Instant::now(), e.to_string());
                Err(e)
            }
        }
    }

    /// Authenticates on a connection whose handshake is done.
    async fn finish(
        &self,
        mut handle: client::Handle<ClientHandler>,
        target: &Target,
        jump: Option<Arc<Session>>,
        mut deadline: Deadline,
    ) -> Result<Session, Error> {
        auth::authenticate(&mut handle, target, &self.methods, &mut deadline).await?;
        Ok(Session::new(target.name.clone(), handle, jump))
    }
}

/// Connects to `target` with [`Connector::default`].
pub async fn connect(target: &Target) -> Result<Session, Error> {
    Connector::default().connect(target).await
}

fn default_identity_files() -> Vec<PathBuf> {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => ["id_ed25519", "id_ecdsa", "id_rsa"]
            .iter()
            .map(|name| PathBuf::from(&home).join(".ssh").join(name))
            .collect(),
        _ => Vec::new(),
    }
}

fn client_config(check: &HostKeyCheck) -> client::Config {
    let (key, certificates) = check.algorithms();
    client::Config {
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        nodelay: true,
        preferred: russh::Preferred {
            key: key.into(),
            host_key_certificates: certificates.into(),
            cipher: cipher_order().into(),
            ..russh::Preferred::default()
        },
        ..client::Config::default()
    }
}

/// russh's own order (chacha20-poly1305 first, as OpenSSH's), except that AES-GCM comes
/// first where the CPU has AES and carry-less multiply instructions: there it costs a
/// fraction of chacha20's CPU on both ends (ring's AES-NI code here, OpenSSL's in sshd),
/// and a deploy streams the whole artifact through the cipher. Same security level; both
/// are AEAD ciphers every OpenSSH server offers.
fn cipher_order() -> Vec<russh::cipher::Name> {
    use russh::cipher;
    let fast_aes = {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("aes")
                && std::arch::is_x86_feature_detected!("pclmulqdq")
        }
        #[cfg(target_arch = "aarch64")]
        {
            std::arch::is_aarch64_feature_detected!("aes")
                && std::arch::is_aarch64_feature_detected!("pmull")
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            false
        }
    };
    let mut order = russh::Preferred::default().cipher.to_vec();
    if fast_aes {
        order.retain(|c| *c != cipher::AES_256_GCM);
        order.insert(0, cipher::AES_256_GCM);
    }
    order
}

/// How many times a connection start that the server dropped (or refused) is tried again.
const START_RETRIES: u32 = 30;
const REFUSED_RETRIES: u32 = 2;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(800);

/// TCP connect and SSH handshake, straight to the host. A start the server drops before
/// the handshake is done (sshd's `MaxStartups` on a busy host or bastion: a reset or a
/// close) is tried again after a backoff with jitter (50 ms, doubling up to 0.8 s), up to
/// [`START_RETRIES`] times; a refused connection up to [`REFUSED_RETRIES`] times (an sshd
/// restarting); all within the connect timeout. Host-key and other errors are final.
async fn direct(
    target: &Target,
    config: &Arc<client::Config>,
    check: &HostKeyCheck,
    deadline: &Deadline,
) -> Result<client::Handle<ClientHandler>, Error> {
    let mut attempt = 0;
    loop {
        let started = async {
            let stream = tcp_connect(target, deadline).await?;
            let handler = ClientHandler::new(check.clone());
            let handshake = client::connect_stream(Arc::clone(config), stream, handler);
            deadline
                .run(Phase::Handshake, handshake)
                .await?
                .map_err(|e| e.into_error(target))
        }
        .await;
        let e = match started {
            Ok(handle) => return Ok(handle),
            Err(e) => e,
        };
        let limit = match &e {
            Error::Refused { .. } => REFUSED_RETRIES,
            e if dropped_start(e) => START_RETRIES,
            _ => 0,
        };
        let backoff = (FIRST_BACKOFF * 2u32.pow(attempt.min(10))).min(MAX_BACKOFF);
        // Jitter: up to half the backoff again, so dropped starts do not come back in step.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let wait = backoff + backoff.mul_f64(f64::from(nanos % 1000) / 2000.0);
        if attempt >= limit || wait >= deadline.left() {
            return Err(e);
        }
        tracing::debug!(host = %target.name, attempt, "start dropped ({e}); again in {wait:?}");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// The server closed or reset the connection before the handshake was done.
fn dropped_start(e: &Error) -> bool {
    let Error::Handshake { source, .. } = e else {
        return false;
    };
    match source {
        russh::Error::Disconnect | russh::Error::HUP => true,
        russh::Error::IO(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionAborted
        ),
        _ => false,
    }
}

/// The SSH handshake over a `ProxyCommand`'s stdin and stdout. A failure that is not
/// about the host's key is the command's: the error names it, with what it said.
async fn through_command(
    target: &Target,
    command: &str,
    config: &Arc<client::Config>,
    check: HostKeyCheck,
    deadline: &Deadline,
) -> Result<client::Handle<ClientHandler>, Error> {
    let failed = |what: String, stderr: String| Error::ProxyCommand {
        host: target.name.clone(),
        command: command.to_owned(),
        what,
        stderr,
    };
    let (stream, said) = spawn_proxy_command(target, command)
        .map_err(|e| failed(format!("could not be started ({e})"), String::new()))?;
    let handshake = client::connect_stream(Arc::clone(config), stream, ClientHandler::new(check));
    let what = match deadline.run(Phase::Handshake, handshake).await {
        Ok(Ok(handle)) => return Ok(handle),
        Err(timeout) => timeout.to_string(),
        Ok(Err(e)) => match e.into_error(target) {
            // Its key did not verify: that is the error, not the command.
            e @ (Error::HostKeyChanged { .. }
            | Error::HostKeyUnknown { .. }
            | Error::HostKeyRevoked { .. }
            | Error::HostCertificate { .. }
            | Error::KnownHostsFile { .. }) => return Err(e),
            e => format!("did not carry an SSH connection ({e})"),
        },
    };
    // Give the command's last words a moment to arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stderr = said.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Err(failed(what, stderr))
}

/// What a ProxyCommand has written on its stderr (the last few KiB).
type Said = Arc<std::sync::Mutex<String>>;

/// Starts `sh -c command` (`ProxyCommand`, tokens expanded): its stdout and stdin carry
/// the SSH stream. Its stderr is kept (to explain a failure) and logged at debug level.
/// The command ends when the connection is dropped (its stdin closes).
fn spawn_proxy_command(
    target: &Target,
    command: &str,
) -> std::io::Result<(
    impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    Said,
)> {
    use std::process::Stdio;
    use tokio::io::AsyncBufReadExt;
    tracing::debug!(host = %target.name, command, "starting ProxyCommand");
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        unreachable!("all three are piped");
    };
    let said: Said = Arc::default();
    let (keep, host) = (said.clone(), target.name.clone());
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(host = %host, "ProxyCommand: {line}");
            let mut kept = keep.lock().unwrap_or_else(|p| p.into_inner());
            if kept.len() < 4096 {
                if !kept.is_empty() {
                    kept.push_str(" / ");
                }
                kept.push_str(line.trim());
            }
        }
        // Reaped here, so no zombie is left when the connection ends.
        let _ = child.wait().await;
    });
    Ok((tokio::io::join(stdout, stdin), said))
}

async fn tcp_connect(target: &Target, deadline: &Deadline) -> Result<TcpStream, Error> {
    // Once per name for the whole run, retried (see `dns`).
    let lookup = super::dns::resolve(&target.host, target.port);
    let addrs: Vec<_> = deadline
        .run(Phase::Dns, lookup)
        .await?
        .map_err(|source| Error::Dns {
            host: target.name.clone(),
            hostname: target.host.clone(),
            source,
        })?;
    if addrs.is_empty() {
        return Err(Error::Dns {
            host: target.name.clone(),
            hostname: target.host.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
        });
    }
    let mut last = None;
    for addr in addrs {
        match deadline
            .run(Phase::TcpConnect, TcpStream::connect(addr))
            .await?
        {
            Ok(stream) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("set_nodelay failed: {e}");
                }
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Some(Error::Refused {
                    host: target.name.clone(),
                    addr,
                });
            }
            Err(source) => {
                last = Some(Error::Connect {
                    host: target.name.clone(),
                    addr: addr.to_string(),
                    source,
                });
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::ConnectionLost {
        host: target.name.clone(),
        what: "TCP connect".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_order_keeps_russh_ciphers_and_only_moves_aes_gcm() {
        let ours = cipher_order();
        let defaults = russh::Preferred::default().cipher.to_vec();
        let mut a: Vec<_> = ours.iter().map(|c| c.as_ref().to_owned()).collect();
        let mut b: Vec<_> = defaults.iter().map(|c| c.as_ref().to_owned()).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "no cipher added or dropped");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
        {
            assert_eq!(ours[0], russh::cipher::AES_256_GCM);
        } else {
            assert_eq!(ours, defaults);
        }
    }
}
