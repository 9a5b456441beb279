//! Typed errors of the SSH transport. Each one names the host (its display name) and what
//! failed, and where the user can do something about it, ends with a `hint:` line.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::known_hosts::host_spec;

/// The step of connecting that ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Dns,
    TcpConnect,
    JumpChannel,
    Handshake,
    Authentication,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Dns => "DNS lookup",
            Phase::TcpConnect => "TCP connect",
            Phase::JumpChannel => "opening the channel through the jump host",
            Phase::Handshake => "SSH handshake",
            Phase::Authentication => "authentication",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("host `{host}`: cannot resolve `{hostname}`: {source}")]
    Dns {
        host: String,
        hostname: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "host `{host}`: connection refused by {addr}\n\
         hint: is sshd running and listening on port {}?",
        addr.port()
    )]
    Refused { host: String, addr: SocketAddr },

    #[error("host `{host}`: timed out after {} during {phase}", humantime(*after))]
    Timeout {
        host: String,
        phase: Phase,
        after: Duration,
    },

    #[error("host `{host}`: cannot connect to {addr}: {source}")]
    Connect {
        host: String,
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error("host `{host}`: SSH handshake failed: {source}")]
    Handshake {
        host: String,
        #[source]
        source: russh::Error,
    },

    #[error(
        "host `{host}`: host key is not known: {algorithm} key {fingerprint} for {}\n\
         hint: check the fingerprint with the server's owner, then trust it with \
         `ssh-keyscan -p {port} {hostname} >> {}`, or set `known_hosts: accept-new`",
        host_spec(hostname, *port),
        known_hosts_file.display()
    )]
    HostKeyUnknown {
        host: String,
        hostname: String,
        port: u16,
        algorithm: String,
        /// OpenSSH format: `SHA256:` + unpadded base64.
        fingerprint: String,
        known_hosts_file: PathBuf,
    },

    #[error(
        "host `{host}`: HOST KEY CHANGED for {spec}: the server offered {algorithm} key \
         {fingerprint}, but {}:{line} records a different key; someone may be intercepting the \
         connection\n\
         hint: if the server was really reinstalled, remove the old key with \
         `ssh-keygen -R '{spec}' -f {}` and connect again",
        file.display(), file.display()
    )]
    HostKeyChanged {
        host: String,
        spec: String,
        algorithm: String,
        fingerprint: String,
        file: PathBuf,
        line: usize,
    },

    #[error(
        "host `{host}`: host key {fingerprint} for {spec} is revoked ({}:{line})",
        file.display()
    )]
    HostKeyRevoked {
        host: String,
        spec: String,
        fingerprint: String,
        file: PathBuf,
        line: usize,
    },

    #[error(
        "host `{host}`: the host certificate for {spec} is refused: {reason}\n\
         hint: the host's certificate must be signed by a CA that an `@cert-authority` line \
         in known_hosts trusts for this host, be valid now, and name `{hostname}` among its \
         principals (`ssh-keygen -L -f` on the host's *-cert.pub shows them)"
    )]
    HostCertificate {
        host: String,
        spec: String,
        hostname: String,
        reason: String,
    },

    #[error("host `{host}`: cannot read or update known_hosts file {}: {source}", file.display())]
    KnownHostsFile {
        host: String,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "host `{host}`: authentication as `{user}` failed; tried: {}\n\
         hint: add the key to the server's ~/.ssh/authorized_keys, or load it with `ssh-add`",
        list(tried)
    )]
    Auth {
        host: String,
        user: String,
        tried: Vec<String>,
    },

    #[error(
        "host `{host}`: authentication as `{user}` failed: key {} is encrypted and there is no \
         terminal to ask for its passphrase{}\n\
         hint: load the key into ssh-agent with `ssh-add {}` and run again with SSH_AUTH_SOCK set",
        key.display(), also_tried(tried), key.display()
    )]
    KeyNeedsPassphrase {
        host: String,
        user: String,
        key: PathBuf,
        /// The other methods tried (not the encrypted key itself).
        tried: Vec<String>,
    },

    #[error(
        "host `{host}`: its ProxyCommand `{command}` {what}{}\n\
         hint: run the command by hand to see it connect; it must carry the SSH stream on \
         its stdin and stdout (e.g. `ssh -W %h:%p bastion`)",
        if stderr.is_empty() { String::new() } else { format!("; it said: {stderr}") }
    )]
    ProxyCommand {
        host: String,
        command: String,
        what: String,
        stderr: String,
    },

    /// A jump host that failed for another target a moment ago, not tried again.
    #[error("{message} (it failed so for another host just now)")]
    Repeated { host: String, message: String },

    #[error("host `{host}`: cannot reach it through jump host `{via}`: {source}")]
    Jump {
        host: String,
        via: String,
        #[source]
        source: Box<Error>,
    },

    #[error(
        "host `{host}`: jump host `{via}` could not open a connection to \
         {hostname}:{port}: {reason}"
    )]
    JumpChannel {
        host: String,
        via: String,
        hostname: String,
        port: u16,
        reason: String,
    },

    #[error("host `{host}`: could not open a tunnel to {to} on the host: {reason}")]
    Tunnel {
        host: String,
        to: String,
        reason: String,
    },

    #[error("host `{host}`: {what} failed: {source}")]
    Channel {
        host: String,
        what: String,
        #[source]
        source: russh::Error,
    },

    #[error("host `{host}`: {what} failed: {source}")]
    Io {
        host: String,
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("host `{host}`: the connection was lost during {what}")]
    ConnectionLost { host: String, what: String },
}

impl Error {
    /// The display name of the host the error is about.
    pub fn host(&self) -> &str {
        match self {
            Error::Dns { host, .. }
            | Error::Refused { host, .. }
            | Error::Timeout { host, .. }
            | Error::Connect { host, .. }
            | Error::Handshake { host, .. }
            | Error::HostKeyUnknown { host, .. }
            | Error::HostKeyChanged { host, .. }
            | Error::HostKeyRevoked { host, .. }
            | Error::HostCertificate { host, .. }
            | Error::KnownHostsFile { host, .. }
            | Error::Auth { host, .. }
            | Error::KeyNeedsPassphrase { host, .. }
            | Error::Jump { host, .. }
            | Error::ProxyCommand { host, .. }
            | Error::Repeated { host, .. }
            | Error::JumpChannel { host, .. }
            | Error::Tunnel { host, .. }
            | Error::Channel { host, .. }
            | Error::Io { host, .. }
            | Error::ConnectionLost { host, .. } => host,
        }
    }

    /// True when the host could not be reached, authenticated, or its key did not verify
    /// (exit code 4, docs/operations.md), as opposed to a failure on an established connection.
    pub fn is_unreachable(&self) -> bool {
        !matches!(
            self,
            Error::Tunnel { .. }
                | Error::Channel { .. }
                | Error::Io { .. }
                | Error::ConnectionLost { .. }
        )
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "no usable key (no identity file, no ssh-agent, no ~/.ssh/id_* key)".to_owned()
    } else {
        items.join(", ")
    }
}

fn also_tried(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!("; also tried: {}", items.join(", "))
    }
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
