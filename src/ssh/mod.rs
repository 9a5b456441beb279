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
//!
//! The files depend on each other in one direction only (the architecture test checks
//! it): the leaves [`Target`] (`target`), [`Error`] (`error`), the connect budget
//! (`deadline`) and the russh handler (`handler`) come first; `auth`, `session` and
//! `connect` build on them; this file only re-exports, and the files below it name each
//! other by their own paths (`super::error::Error`), never through it.

pub mod agent_hint;
mod auth;
mod connect;
mod deadline;
mod dns;
mod error;
mod handler;
mod host_key;
pub mod known_hosts;
mod pattern;
pub mod quote;
mod session;
pub mod ssh_config;
mod target;

pub use connect::{Connector, DEFAULT_CONNECT_LIMIT, connect, set_connect_limit};
pub use error::{Error, Phase};
pub use session::{BOOTSTRAP, DataOutput, ExecOutput, Session, Stream, Tunnel, frame};
pub use target::{KnownHostsPolicy, Target};
