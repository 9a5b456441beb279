//! Host-key policy: checks the key a server presents against known_hosts, and under
//! accept-new records the key of a host seen for the first time. A key that differs from
//! a recorded one is always refused, whatever the policy.
//!
//! Recording takes an exclusive `flock` on the known_hosts file (std's `File::lock`), then
//! looks the host up again under the lock, so concurrent shipit runs (or parallel hosts in
//! one run) neither write duplicate lines nor let a second writer slip in a different key.
//! A missing file is created 0600 and a missing directory 0700. Entries are written in
//! plain form (`host key` or `[host]:port key`), not hashed.

use std::fs::{DirBuilder, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use russh::keys::HashAlg;
use russh::keys::ssh_key::{Algorithm, Certificate, PublicKey, certificate::CertType};

use super::error::Error;
use super::known_hosts::{KnownHosts, Lookup, entry_line, host_spec};
use super::target::{KnownHostsPolicy, Target};

/// Everything needed to judge one host's key; cheap to clone into the russh handler.
#[derive(Debug, Clone)]
pub(crate) struct HostKeyCheck {
    name: String,
    host: String,
    port: u16,
    policy: KnownHostsPolicy,
    files: Vec<PathBuf>,
}

impl HostKeyCheck {
    pub(crate) fn new(target: &Target) -> Self {
        HostKeyCheck {
            name: target.name.clone(),
            host: target.host.clone(),
            port: target.port,
            policy: target.known_hosts,
            files: target.known_hosts_files.clone(),
        }
    }

    /// Host-key algorithms to offer, the ones already recorded for this host first, so
    /// the server shows us a key we can check rather than another type we don't know.
    /// With [`Self::certificate_algorithms`], from one read of the known_hosts files.
    pub(crate) fn algorithms(&self) -> (Vec<Algorithm>, Vec<Algorithm>) {
        let known = KnownHosts::load(&self.files).unwrap_or_default();
        (
            self.preferred_algorithms(&known),
            self.certificate_algorithms(&known),
        )
    }

    fn preferred_algorithms(&self, known: &KnownHosts) -> Vec<Algorithm> {
        let defaults = russh::Preferred::DEFAULT.key.to_vec();
        let known = known.known_algorithms(&self.host, self.port);
        let mut out: Vec<Algorithm> = Vec::new();
        for alg in &known {
            for d in &defaults {
                let same = match (alg, d) {
                    (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
                    (a, b) => a == b,
                };
                if same && !out.contains(d) {
                    out.push(d.clone());
                }
            }
        }
        for d in defaults {
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out
    }

    /// Host-certificate algorithms to offer: all of them when an `@cert-authority` line
    /// applies to this host (the server then proves itself with its certificate), none
    /// otherwise.
    fn certificate_algorithms(&self, known: &KnownHosts) -> Vec<Algorithm> {
        if !known.authorities(&self.host, self.port).is_empty() {
            russh::Preferred::DEFAULT.key.to_vec()
        } else {
            Vec::new()
        }
    }

    /// Decides on a host certificate, as OpenSSH does: neither its key nor its CA is
    /// `@revoked` for this host, its CA is trusted for this host by an `@cert-authority`
    /// line, its signature verifies, it is a host certificate valid now, it names this
    /// host among its principals, and it has no critical option. A certificate whose host
    /// has no CA line is judged by its key alone, as a plain key. Blocking (reads files).
    pub(crate) fn verify_certificate(&self, cert: &Certificate) -> Result<(), Box<Error>> {
        let known = KnownHosts::load(&self.files)
            .map_err(|(file, source)| self.file_error(file, source))?;
        let key = PublicKey::new(cert.public_key().clone(), "");
        let ca = PublicKey::new(cert.signature_key().clone(), "");
        let spec = host_spec(&self.host, self.port);
        for k in [&key, &ca] {
            if let Some((file, line)) = known.revoked(&self.host, self.port, k) {
                return Err(Box::new(Error::HostKeyRevoked {
                    host: self.name.clone(),
                    spec,
                    fingerprint: k.fingerprint(HashAlg::Sha256).to_string(),
                    file,
                    line,
                }));
            }
        }
        let authorities = known.authorities(&self.host, self.port);
        if authorities.is_empty() {
            return self.verify(&key);
        }
        let refuse = |reason: String| {
            Err(Box::new(Error::HostCertificate {
                host: self.name.clone(),
                spec: spec.clone(),
                hostname: self.host.clone(),
                reason,
            }))
        };
        let ca_fingerprint = ca.fingerprint(HashAlg::Sha256);
        if !authorities
            .iter()
            .any(|(k, _, _)| k.key_data() == ca.key_data())
        {
            return refuse(format!(
                "it is signed by CA {ca_fingerprint}, which no `@cert-authority` line trusts \
                 for this host"
            ));
        }
        if cert.cert_type() != CertType::Host {
            return refuse("it is a user certificate, not a host certificate".into());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if cert.validate_at(now, [&ca_fingerprint]).is_err() {
            return refuse(format!(
                "its signature does not verify, or it is not valid now (valid from {} to {})",
                cert.valid_after(),
                cert.valid_before()
            ));
        }
        if !cert.valid_principals().iter().any(|p| p == &self.host) {
            return refuse(format!(
                "it names {:?}, not `{}`",
                cert.valid_principals(),
                self.host
            ));
        }
        if !cert.critical_options().is_empty() {
            return refuse("it carries critical options".into());
        }
        Ok(())
    }

    /// Decides on `key`; blocking (reads files, may wait for the file lock).
    pub(crate) fn verify(&self, key: &PublicKey) -> Result<(), Box<Error>> {
        let known = KnownHosts::load(&self.files)
            .map_err(|(file, source)| self.file_error(file, source))?;
        match known.lookup(&self.host, self.port, key) {
            Lookup::Unknown if self.policy == KnownHostsPolicy::AcceptNew => self.record(key),
            other => self.judge(other, key),
        }
    }

    fn judge(&self, lookup: Lookup, key: &PublicKey) -> Result<(), Box<Error>> {
        let spec = host_spec(&self.host, self.port);
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let error = match lookup {
            Lookup::Match => return Ok(()),
            Lookup::Mismatch { file, line } => Error::HostKeyChanged {
                host: self.name.clone(),
                spec,
                algorithm: key.algorithm().to_string(),
                fingerprint,
                file,
                line,
            },
            Lookup::Revoked { file, line } => Error::HostKeyRevoked {
                host: self.name.clone(),
                spec,
                fingerprint,
                file,
                line,
            },
            Lookup::Unknown => Error::HostKeyUnknown {
                host: self.name.clone(),
                hostname: self.host.clone(),
                port: self.port,

                algorithm: key.algorithm().to_string(),
                fingerprint,
                known_hosts_file: self
                    .files
                    .first()
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from("~/.ssh/known_hosts")),
            },
        };
        Err(Box::new(error))
    }

    /// accept-new: append the key to the first known_hosts file under an exclusive lock,
    /// after checking again (under the lock) that nobody recorded another key meanwhile.
    fn record(&self, key: &PublicKey) -> Result<(), Box<Error>> {
        let Some(file) = self.files.first() else {
            return Err(self.file_error(
                PathBuf::from("(none)"),
                std::io::Error::other("no known_hosts file is configured to record the key in"),
            ));
        };
        let io = |e| self.file_error(file.clone(), e);
        if let Some(dir) = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let mut handle = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(file)
            .map_err(io)?;
        handle.lock().map_err(io)?;
        let known = KnownHosts::load(&self.files)
            .map_err(|(file, source)| self.file_error(file, source))?;
        match known.lookup(&self.host, self.port, key) {
            Lookup::Unknown => {}
            decided => return self.judge(decided, key),
        }
        let mut existing = Vec::new();
        handle.read_to_end(&mut existing).map_err(io)?;
        let mut text = String::new();
        if existing.last().is_some_and(|&b| b != b'\n') {
            text.push('\n');
        }
        text.push_str(&entry_line(&self.host, self.port, key));
        text.push('\n');
        handle.write_all(text.as_bytes()).map_err(io)?;
        handle.sync_data().map_err(io)?;
        tracing::info!(
            host = %self.name,
            file = %file.display(),
            "recorded new host key {}",
            key.fingerprint(HashAlg::Sha256)
        );
        Ok(())
    }

    fn file_error(&self, file: PathBuf, source: std::io::Error) -> Box<Error> {
        Box::new(Error::KnownHostsFile {
            host: self.name.clone(),
            file,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    const ED_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH3ZQ3isYFRnOMk3vxkwAJSoVM1LFWq149xnJ1xVk7/w";
    const ED_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFX13l0cbB8mN/miJdA29FbjZFsAvhwJ8y/OEICjddSa";
    const ECDSA: &str = "ecdsa-sha2-nistp256 \
        AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIE3RF4ZS2yqgxFSTz3vyIE3WtRlV87TKp0/\
        zP4Al0rdJcZQMHCP9/6TxW4OaYwyNOoiLt/8qYure+Qgb/xtfII=";

    fn check(files: Vec<PathBuf>, policy: KnownHostsPolicy, port: u16) -> HostKeyCheck {
        HostKeyCheck::new(&Target {
            name: "app1".into(),
            host: "10.1.2.3".into(),
            port,
            user: "deploy".into(),
            identity_files: vec![],
            known_hosts: policy,
            known_hosts_files: files,
            proxy_jump: None,
            proxy_command: None,
            identity_agent: None,
            connect_timeout: Duration::from_secs(1),
        })
    }

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn strict_refuses_unknown_with_fingerprint_and_hint() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        let err = check(vec![kh.clone()], KnownHostsPolicy::Strict, 2222)
            .verify(&key(ED_A))
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(*err, Error::HostKeyUnknown { .. }), "{err:?}");
        assert!(
            text.contains(&key(ED_A).fingerprint(HashAlg::Sha256).to_string()),
            "{text}"
        );
        assert!(text.contains("SHA256:"), "{text}");
        assert!(
            text.contains(&format!("ssh-keyscan -p 2222 10.1.2.3 >> {}", kh.display())),
            "{text}"
        );
        assert!(!kh.exists(), "strict never writes");
    }

    #[test]
    fn accept_new_creates_dir_0700_and_file_0600_then_matches() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("new/dir/known_hosts");
        let c = check(vec![kh.clone()], KnownHostsPolicy::AcceptNew, 22);
        c.verify(&key(ED_A)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&kh).unwrap(),
            format!("10.1.2.3 {ED_A}\n")
        );
        assert_eq!(mode_of(&kh), 0o600);
        assert_eq!(mode_of(kh.parent().unwrap()), 0o700);
        // Second time: already known, nothing appended.
        c.verify(&key(ED_A)).unwrap();
        assert_eq!(std::fs::read_to_string(&kh).unwrap().lines().count(), 1);
        // A different key is still refused, naming the line.
        let err = c.verify(&key(ED_B)).unwrap_err();
        assert!(
            matches!(*err, Error::HostKeyChanged { line: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn accept_new_appends_after_a_file_without_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, format!("other {ED_B}")).unwrap();
        check(vec![kh.clone()], KnownHostsPolicy::AcceptNew, 2200)
            .verify(&key(ED_A))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&kh).unwrap(),
            format!("other {ED_B}\n[10.1.2.3]:2200 {ED_A}\n")
        );
    }

    #[test]
    fn accept_new_from_many_threads_writes_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        let c = check(vec![kh.clone()], KnownHostsPolicy::AcceptNew, 2200);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| c.verify(&key(ED_A)).unwrap());
            }
        });
        assert_eq!(std::fs::read_to_string(&kh).unwrap().lines().count(), 1);
    }

    #[test]
    fn changed_key_is_fatal_under_accept_new_too() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, format!("# hosts\n[10.1.2.3]:2200 {ED_B}\n")).unwrap();
        let err = check(vec![kh.clone()], KnownHostsPolicy::AcceptNew, 2200)
            .verify(&key(ED_A))
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("{}:2", kh.display())), "{text}");
        assert!(text.contains("CHANGED"), "{text}");
    }

    #[test]
    fn preferred_algorithms_put_known_types_first() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, format!("10.1.2.3 {ECDSA}\n")).unwrap();
        let prefs = check(vec![kh], KnownHostsPolicy::Strict, 22).algorithms().0;
        assert_eq!(prefs.first(), Some(&key(ECDSA).algorithm()));
        assert_eq!(prefs.len(), russh::Preferred::DEFAULT.key.len());
        let unknown = check(vec![], KnownHostsPolicy::Strict, 22).algorithms().0;
        assert_eq!(unknown, russh::Preferred::DEFAULT.key.to_vec());
    }
}
