//! What russh calls back into during a connection ([`ClientHandler`]) and the handle a
//! connection is driven through ([`ClientHandle`]).

use russh::client::{self, Handle};
use russh::keys::PublicKeyOrCertificate;

use super::error::Error;
use super::host_key::HostKeyCheck;
use super::target::Target;

/// The russh event handler: only host-key checking is ours.
pub(crate) struct ClientHandler {
    check: HostKeyCheck,
}

impl ClientHandler {
    pub(crate) fn new(check: HostKeyCheck) -> Self {
        ClientHandler { check }
    }
}

/// Errors that cross russh's handler boundary.
#[derive(Debug)]
pub(crate) enum HandlerError {
    Russh(russh::Error),
    HostKey(Box<Error>),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        HandlerError::Russh(e)
    }
}

impl HandlerError {
    pub(crate) fn into_error(self, target: &Target) -> Error {
        match self {
            HandlerError::HostKey(e) => *e,
            HandlerError::Russh(source) => Error::Handshake {
                host: target.name.clone(),
                source,
            },
        }
    }
}

impl client::Handler for ClientHandler {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let check = self.check.clone();
        // Owned, for the blocking task: both checks read files, and verify() may wait on
        // the known_hosts lock.
        let offered = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                PublicKeyOrCertificate::from(key.clone())
            }
            PublicKeyOrCertificate::Certificate(cert) => {
                PublicKeyOrCertificate::Certificate(cert.clone())
            }
        };
        let verdict = tokio::task::spawn_blocking(move || match &offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => check.verify(key),
            PublicKeyOrCertificate::Certificate(cert) => check.verify_certificate(cert),
        })
        .await
        .map_err(|e| HandlerError::Russh(russh::Error::from(std::io::Error::other(e))))?;
        verdict.map(|()| true).map_err(HandlerError::HostKey)
    }
}

pub(crate) type ClientHandle = Handle<ClientHandler>;
