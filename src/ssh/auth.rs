//! Public-key authentication, in this order: the target's identity files, then the keys
//! in ssh-agent, then the default `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`. Every attempt
//! is recorded so a failure can list what was tried.
//!
//! An identity file whose public key the agent holds is signed by the agent (so an
//! encrypted key loaded with `ssh-add` needs no passphrase). Otherwise an encrypted key's
//! passphrase is asked for on the terminal when the connector is interactive; prompts are
//! serialised across hosts and a decrypted key is kept in memory for the rest of the run,
//! so ten hosts ask once. Without a terminal the key is skipped, and if nothing else
//! works the error names it and suggests ssh-agent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use russh::client::AuthResult;
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::ssh_key::{Algorithm, Certificate, HashAlg, PrivateKey, PublicKey};
use russh::keys::{PrivateKeyWithHashAlg, decode_secret_key};

use super::deadline::Deadline;
use super::error::{Error, Phase};
use super::handler::ClientHandle;
use super::target::Target;

/// Where to find ssh-agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AgentSource {
    /// `$SSH_AUTH_SOCK`, read when connecting.
    Env,
    Path(PathBuf),
    Disabled,
}

/// What may be tried after the target's own identity files: the agent, the default keys,
/// and whether a passphrase may be asked for. Set through the [`Connector`]'s builders.
///
/// [`Connector`]: super::connect::Connector
#[derive(Debug, Clone)]
pub(crate) struct Methods {
    pub(crate) agent: AgentSource,
    pub(crate) default_identity_files: Vec<PathBuf>,
    pub(crate) interactive: bool,
}

const PASSPHRASE_ATTEMPTS: usize = 3;

type Agent = AgentClient<Box<dyn russh::keys::agent::client::AgentStream + Send + Unpin + 'static>>;

struct Attempts<'a> {
    handle: &'a mut ClientHandle,
    target: &'a Target,
    deadline: &'a mut Deadline,
    tried: Vec<String>,
    /// Public keys already offered, so no key is tried twice.
    offered: Vec<PublicKey>,
    /// Encrypted keys skipped because there is no terminal to ask on.
    locked: Vec<PathBuf>,
    /// Resolved lazily: `best_supported_rsa_hash` may wait up to a second for the server.
    rsa_hash: Option<Option<HashAlg>>,
}

pub(crate) async fn authenticate(
    handle: &mut ClientHandle,
    target: &Target,
    methods: &Methods,
    deadline: &mut Deadline,
) -> Result<(), Error> {
    let mut tried = Vec::new();
    // `IdentityAgent` in ssh_config picks this host's agent.
    let source = match &target.identity_agent {
        Some(super::target::IdentityAgent::Socket(path)) => AgentSource::Path(path.clone()),
        Some(super::target::IdentityAgent::None) => AgentSource::Disabled,
        None => methods.agent.clone(),
    };
    let (mut agent, agent_keys, agent_certs) = match open_agent(handle, &source, deadline).await {
        Ok(Some((agent, keys, certs))) => (Some(agent), keys, certs),
        Ok(None) => (None, Vec::new(), Vec::new()),
        Err(note) => {
            tried.push(note);
            (None, Vec::new(), Vec::new())
        }
    };
    let mut a = Attempts {
        handle,
        target,
        deadline,
        tried,
        offered: Vec::new(),
        locked: Vec::new(),
        rsa_hash: None,
    };

    for file in &target.identity_files {
        if a.try_file(file, true, &mut agent, &agent_keys, methods.interactive)
            .await?
        {
            return Ok(());
        }
    }
    if let Some(agent) = agent.as_mut() {
        // Certificates the agent holds first (as OpenSSH offers them), then its keys.
        for cert in &agent_certs {
            if a.try_agent_cert(agent, cert).await? {
                return Ok(());
            }
        }
        for key in &agent_keys {
            if a.try_agent_key(agent, key).await? {
                return Ok(());
            }
        }
    }
    for file in &methods.default_identity_files {
        if a.try_file(file, false, &mut agent, &agent_keys, methods.interactive)
            .await?
        {
            return Ok(());
        }
    }

    let user = target.user.clone();
    let host = target.name.clone();
    match a.locked.first() {
        Some(key) => Err(Error::KeyNeedsPassphrase {
            host,
            user,
            key: key.clone(),
            tried: a.tried,
        }),
        None => Err(Error::Auth {
            host,
            user,
            tried: a.tried,
        }),
    }
}

/// An agent, its plain public keys and its certificates.
type Opened = (Agent, Vec<PublicKey>, Vec<Certificate>);

/// Connects to the agent and lists its plain public keys and its certificates.
/// `Ok(None)`: no agent configured; `Err(note)`: configured but unusable (recorded as a
/// tried method).
async fn open_agent(
    handle: &ClientHandle,
    source: &AgentSource,
    deadline: &Deadline,
) -> Result<Option<Opened>, String> {
    let path = match source {
        AgentSource::Disabled => return Ok(None),
        AgentSource::Path(p) => p.clone(),
        AgentSource::Env => match std::env::var_os("SSH_AUTH_SOCK") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => return Ok(None),
        },
    };
    let unusable = |e: String| format!("ssh-agent at {} (unusable: {e})", path.display());
    let agent = deadline
        .run(Phase::Authentication, AgentClient::connect_uds(&path))
        .await
        .map_err(|e| unusable(e.to_string()))?
        .map_err(|e| unusable(e.to_string()))?;
    let mut agent = agent.dynamic();
    if let Some(binding) = handle.agent_session_binding() {
        // OpenSSH agents want this before using destination-constrained keys; older
        // agents refuse the extension, which is harmless.
        let _ = deadline
            .run(Phase::Authentication, agent.bind_session(binding, false))
            .await;
    }
    let identities = deadline
        .run(Phase::Authentication, agent.request_identities())
        .await
        .map_err(|e| unusable(e.to_string()))?
        .map_err(|e| unusable(e.to_string()))?;
    let (mut keys, mut certs) = (Vec::new(), Vec::new());
    for id in identities {
        match id {
            AgentIdentity::PublicKey { key, .. } => keys.push(key),
            AgentIdentity::Certificate { certificate, .. } => certs.push(certificate),
        }
    }
    Ok(Some((agent, keys, certs)))
}

impl Attempts<'_> {
    async fn rsa_hash(&mut self) -> Result<Option<HashAlg>, Error> {
        if let Some(h) = self.rsa_hash {
            return Ok(h);
        }
        let best = self
            .deadline
            .run(Phase::Authentication, self.handle.best_supported_rsa_hash())
            .await?
            .map_err(|source| Error::Channel {
                host: self.target.name.clone(),
                what: "asking the server for RSA signature algorithms".into(),
                source,
            })?
            .flatten();
        self.rsa_hash = Some(best);
        Ok(best)
    }

    /// The signature hash for a key of `algorithm`: the server's best for RSA, none else.
    async fn hash_for(&mut self, algorithm: Algorithm) -> Result<Option<HashAlg>, Error> {
        if algorithm.is_rsa() {
            self.rsa_hash().await
        } else {
            Ok(None)
        }
    }

    /// What an attempt the agent signs came to: a refusal, or the agent not signing, is
    /// recorded as tried under `label`.
    fn agent_verdict(
        &mut self,
        label: &str,
        result: Result<AuthResult, impl std::fmt::Display>,
    ) -> bool {
        match result {
            Ok(AuthResult::Success) => true,
            Ok(AuthResult::Failure { .. }) => {
                self.tried.push(format!("{label} (rejected)"));
                false
            }
            Err(e) => {
                self.tried
                    .push(format!("{label} (agent could not sign: {e})"));
                false
            }
        }
    }

    async fn try_agent_key(&mut self, agent: &mut Agent, key: &PublicKey) -> Result<bool, Error> {
        if self.offered.iter().any(|k| k.key_data() == key.key_data()) {
            return Ok(false);
        }
        self.offered.push(key.clone());
        let hash = self.hash_for(key.algorithm()).await?;
        let label = format!(
            "ssh-agent key {} {}",
            key.algorithm(),
            key.fingerprint(HashAlg::Sha256)
        );
        let user = self.target.user.clone();
        let result = self
            .deadline
            .run(
                Phase::Authentication,
                self.handle
                    .authenticate_publickey_with(user, key.clone(), hash, agent),
            )
            .await?;
        Ok(self.agent_verdict(&label, result))
    }

    /// A certificate the agent holds, signed by the agent.
    async fn try_agent_cert(
        &mut self,
        agent: &mut Agent,
        cert: &Certificate,
    ) -> Result<bool, Error> {
        let hash = self.hash_for(cert.algorithm()).await?;
        let label = format!(
            "ssh-agent certificate {} (key {})",
            cert.key_id(),
            cert.public_key().fingerprint(HashAlg::Sha256)
        );
        let user = self.target.user.clone();
        let result = self
            .deadline
            .run(
                Phase::Authentication,
                self.handle
                    .authenticate_certificate_with(user, cert.clone(), hash, agent),
            )
            .await?;
        Ok(self.agent_verdict(&label, result))
    }

    /// The certificate beside identity file `path` (`<path>-cert.pub`, as OpenSSH looks
    /// for it), with `key`. `Ok(false)` when there is none or the server refused it.
    async fn try_file_cert(
        &mut self,
        path: &Path,
        key: &Arc<PrivateKey>,
        label: &str,
    ) -> Result<bool, Error> {
        let mut cert_path = path.as_os_str().to_owned();
        cert_path.push("-cert.pub");
        let Ok(text) = tokio::fs::read_to_string(&cert_path).await else {
            return Ok(false);
        };
        let cert = match Certificate::from_openssh(text.trim()) {
            Ok(c) => c,
            Err(e) => {
                self.tried.push(format!(
                    "certificate {} (cannot be read: {e})",
                    Path::new(&cert_path).display()
                ));
                return Ok(false);
            }
        };
        if cert.public_key() != key.public_key().key_data() {
            self.tried.push(format!(
                "certificate {} (it certifies another key than {label})",
                Path::new(&cert_path).display()
            ));
            return Ok(false);
        }
        let user = self.target.user.clone();
        let result = self
            .deadline
            .run(
                Phase::Authentication,
                self.handle
                    .authenticate_openssh_cert(user, Arc::clone(key), cert),
            )
            .await?
            .map_err(|source| Error::Channel {
                host: self.target.name.clone(),
                what: "certificate authentication".into(),
                source,
            })?;
        if result.success() {
            return Ok(true);
        }
        self.tried.push(format!(
            "certificate {} (rejected)",
            Path::new(&cert_path).display()
        ));
        Ok(false)
    }

    /// A private key from `path`: its certificate first when one lies beside it, then the
    /// key itself.
    async fn try_key_from(
        &mut self,
        path: &Path,
        key: Arc<PrivateKey>,
        label: String,
    ) -> Result<bool, Error> {
        if self.try_file_cert(path, &key, &label).await? {
            return Ok(true);
        }
        self.try_private_key(key, label).await
    }

    async fn try_private_key(
        &mut self,
        key: Arc<PrivateKey>,
        label: String,
    ) -> Result<bool, Error> {
        let public = key.public_key().clone();
        if self
            .offered
            .iter()
            .any(|k| k.key_data() == public.key_data())
        {
            return Ok(false);
        }
        self.offered.push(public);
        let hash = self.hash_for(key.algorithm()).await?;
        let user = self.target.user.clone();
        let result = self
            .deadline
            .run(
                Phase::Authentication,
                self.handle
                    .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash)),
            )
            .await?
            .map_err(|source| Error::Channel {
                host: self.target.name.clone(),
                what: "public-key authentication".into(),
                source,
            })?;
        if result.success() {
            return Ok(true);
        }
        self.tried.push(format!("{label} (rejected)"));
        Ok(false)
    }

    /// One identity file. `explicit`: configured for this target, so a missing file is
    /// worth reporting; default files that don't exist are skipped silently.
    async fn try_file(
        &mut self,
        path: &Path,
        explicit: bool,
        agent: &mut Option<Agent>,
        agent_keys: &[PublicKey],
        interactive: bool,
    ) -> Result<bool, Error> {
        let label = format!("key {}", path.display());
        let text = match tokio::fs::read_to_string(path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if explicit {
                    self.tried.push(format!("{label} (file not found)"));
                }
                return Ok(false);
            }
            Err(e) => {
                self.tried.push(format!("{label} (unreadable: {e})"));
                return Ok(false);
            }
        };
        if let Some(key) = cached_key(path) {
            return self.try_key_from(path, key, label).await;
        }
        match decode_secret_key(&text, None) {
            Ok(key) => self.try_key_from(path, Arc::new(key), label).await,
            Err(russh::keys::Error::KeyIsEncrypted) => {
                // The public half of an OpenSSH key is stored in clear: if the agent holds
                // it, let the agent sign and ask for nothing.
                let public = PrivateKey::from_openssh(&text)
                    .ok()
                    .map(|k| k.public_key().clone());
                if let (Some(public), Some(agent)) = (public.as_ref(), agent.as_mut())
                    && agent_keys.iter().any(|k| k.key_data() == public.key_data())
                {
                    return self.try_agent_key(agent, public).await;
                }
                if !interactive {
                    // Reported by the error itself, not as one more "tried" entry.
                    self.locked.push(path.to_owned());
                    return Ok(false);
                }
                match self.unlock(path, &text).await {
                    Some(key) => self.try_key_from(path, key, label).await,
                    None => {
                        self.tried.push(format!("{label} (wrong passphrase)"));
                        Ok(false)
                    }
                }
            }
            Err(e) => {
                self.tried
                    .push(format!("{label} (cannot be read as a private key: {e})"));
                Ok(false)
            }
        }
    }

    /// Asks for the passphrase on the terminal (up to three times); the time spent waiting
    /// for the person does not count against the connect timeout.
    async fn unlock(&mut self, path: &Path, text: &str) -> Option<Arc<PrivateKey>> {
        static PROMPT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let started = Instant::now();
        let _guard = PROMPT.lock().await;
        // Another host may have unlocked the same key while we waited for the prompt.
        let result = match cached_key(path) {
            Some(key) => Some(key),
            None => {
                let mut found = None;
                for _ in 0..PASSPHRASE_ATTEMPTS {
                    let prompt = format!("Enter passphrase for key '{}': ", path.display());
                    let answer =
                        tokio::task::spawn_blocking(move || rpassword::prompt_password(prompt))
                            .await;
                    let Ok(Ok(passphrase)) = answer else { break };
                    if let Ok(key) = decode_secret_key(text, Some(&passphrase)) {
                        let key = Arc::new(key);
                        remember_key(path, Arc::clone(&key));
                        found = Some(key);
                        break;
                    }
                }
                found
            }
        };
        self.deadline.extend(started.elapsed());
        result
    }
}

fn key_cache() -> &'static Mutex<HashMap<PathBuf, Arc<PrivateKey>>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<PrivateKey>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn cached_key(path: &Path) -> Option<Arc<PrivateKey>> {
    key_cache().lock().ok()?.get(path).cloned()
}

fn remember_key(path: &Path, key: Arc<PrivateKey>) {
    if let Ok(mut cache) = key_cache().lock() {
        cache.insert(path.to_owned(), key);
    }
}
