//! The SSH transport: one russh connection per host, many channels on it.
//!
//! This module owns everything between "here is a resolved host" ([`Target`]) and "here
//! is a connected, authenticated [`Session`]": DNS, TCP, the handshake, host-key
//! verification against `known_hosts` (strict or accept-new, never "accept anything"),
//! authentication (identity files, ssh-agent, default keys, passphrase prompts), jump
//! hosts and the connect timeout. A [`Session`] then runs shell scripts
//! ([`Session::exec`]), streams bytes into a remote command ([`Session::upload`]) and opens
//! TCP tunnels to the host's own ports ([`Session::tunnel`]).
//!
//! It knows nothing about deploy.yaml: [`ssh_config::resolve`] turns an alias plus
//! explicit settings (and `~/.ssh/config`) into a [`Target`]. Shell text that goes to a
//! server is quoted with [`quote::sh_quote`].

mod auth;
mod connect;
mod error;
mod host_key;
pub mod known_hosts;
mod pattern;
pub mod quote;
mod session;
pub mod ssh_config;

use std::path::PathBuf;
use std::time::Duration;

pub use connect::{Connector, DEFAULT_CONNECT_LIMIT, connect};
pub use error::{Error, Phase};
pub use session::{BOOTSTRAP, DataOutput, ExecOutput, Session, Stream, Tunnel, frame};

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
