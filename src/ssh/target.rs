//! [`Target`]: one host, fully resolved, as the transport needs it.

use std::path::PathBuf;
use std::time::Duration;

/// One host, fully resolved: everything needed to reach and authenticate to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Display name used in every message about this host.
    pub name: String,
    /// Hostname or IP address to connect to (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Private keys tried first, in order, before the agent and the default keys.
    pub identity_files: Vec<PathBuf>,
    pub known_hosts: KnownHostsPolicy,
    /// Files searched for the host key, in order; accept-new writes to the first one.
    pub known_hosts_files: Vec<PathBuf>,
    /// Reach this host through another one (`ProxyJump`); hops nest.
    pub proxy_jump: Option<Box<Target>>,
    /// Reach this host through a command's stdin and stdout (`ProxyCommand`, its `%`
    /// tokens expanded), run with `sh -c`. Never set together with `proxy_jump`.
    pub proxy_command: Option<String>,
    /// Which agent to use for this host (`IdentityAgent`); `None`: the run's default
    /// (`$SSH_AUTH_SOCK`).
    pub identity_agent: Option<IdentityAgent>,
    /// Bound on TCP connect + SSH handshake + authentication (time spent waiting for the
    /// user to type a key passphrase does not count).
    pub connect_timeout: Duration,
}

/// What to do with a host key that is not in `known_hosts`. A key that differs from the
/// recorded one is refused under every policy; there is no mode that accepts any key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KnownHostsPolicy {
    /// Refuse hosts whose key is not recorded.
    #[default]
    Strict,
    /// Record the key of a host seen for the first time, then connect.
    AcceptNew,
}

/// `IdentityAgent`: a socket of its own, or no agent at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityAgent {
    Socket(PathBuf),
    None,
}
