//! Before a large fan-out: an agent that asks a human for every signature (a FIDO key
//! that wants a touch, a smartcard behind gpg-agent, an agent that asks for approval)
//! turns a deploy to many hosts into many prompts, or into connections timing out while
//! the prompt waits. shipit cannot tell from the agent protocol whether a key was added
//! with confirmation (`ssh-add -c`), but it can see the agents and key types that do
//! this, and say so once, before connecting anywhere.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::target::{IdentityAgent, Target};

/// Fewer hosts than this get no hint: a few prompts are expected.
pub const LARGE: usize = 10;

/// The hints for `targets` (one per agent that needs one), when there are [`LARGE`] or
/// more of them; `default_agent`: `$SSH_AUTH_SOCK`.
pub fn hints(targets: &[Target], default_agent: Option<&Path>) -> Vec<String> {
    if targets.len() < LARGE {
        return Vec::new();
    }
    let mut agents: Vec<(PathBuf, usize)> = Vec::new();
    for t in targets {
        let path = match &t.identity_agent {
            Some(IdentityAgent::Socket(p)) => p.clone(),
            Some(IdentityAgent::None) => continue,
            None => match default_agent {
                Some(p) => p.to_owned(),
                None => continue,
            },
        };
        match agents.iter_mut().find(|(p, _)| *p == path) {
            Some((_, n)) => *n += 1,
            None => agents.push((path, 1)),
        }
    }
    agents
        .into_iter()
        .filter_map(|(path, hosts)| {
            let what = by_path(&path).map(str::to_owned).or_else(|| {
                let n = security_keys(&path).ok().filter(|&n| n > 0)?;
                Some(format!(
                    "holding {n} FIDO security key(s) (sk-*), which may want a touch for \
                     every signature"
                ))
            })?;
            Some(format!(
                "the SSH agent at {} is {what}: this run needs a signature from it for each \
                 of {hosts} host(s) (at most ssh.max_concurrent_starts at a time). If it asks \
                 for a touch or an approval each time, answer them as they come, or use a \
                 deploy key in a file (`ssh.identity_files`) for large fleets",
                path.display()
            ))
        })
        .collect()
}

/// Agents known by their socket's name that ask a human, or sign one at a time on a
/// device.
fn by_path(path: &Path) -> Option<&'static str> {
    let text = path.to_string_lossy().to_lowercase();
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase());
    if text.contains("1password") {
        Some("1Password's agent, which may ask you to approve its use")
    } else if text.contains("secretive") {
        Some("Secretive, which may ask for Touch ID for every signature")
    } else if text.contains("yubikey-agent") {
        Some(
            "yubikey-agent: every signature is made on the YubiKey, one at a time, and may \
             want a touch",
        )
    } else if name.as_deref() == Some("s.gpg-agent.ssh") {
        Some(
            "gpg-agent: with a smartcard or YubiKey every signature is made on the card, one \
             at a time, and may want a PIN or a touch",
        )
    } else {
        None
    }
}

/// How many of the agent's keys are FIDO security keys (`sk-...@openssh.com`): asks the
/// agent for its identities over its socket (SSH agent protocol, one request).
fn security_keys(path: &Path) -> std::io::Result<usize> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.set_write_timeout(Some(Duration::from_secs(1)))?;
    // SSH_AGENTC_REQUEST_IDENTITIES.
    s.write_all(&[0, 0, 0, 1, 11])?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 1 << 20 {
        return Err(std::io::Error::other("agent answer too long"));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(sk_keys_in(&body).unwrap_or(0))
}

/// The number of `sk-` keys in an SSH_AGENT_IDENTITIES_ANSWER (type 12).
fn sk_keys_in(body: &[u8]) -> Option<usize> {
    let (&kind, mut rest) = body.split_first()?;
    if kind != 12 {
        return None;
    }
    let n = take_u32(&mut rest)?;
    let mut sk = 0;
    for _ in 0..n {
        let blob = take_string(&mut rest)?;
        let _comment = take_string(&mut rest)?;
        let mut blob = blob;
        if take_string(&mut blob)?.starts_with(b"sk-") {
            sk += 1;
        }
    }
    Some(sk)
}

fn take_u32(b: &mut &[u8]) -> Option<u32> {
    let (head, rest) = b.split_at_checked(4)?;
    *b = rest;
    Some(u32::from_be_bytes(head.try_into().ok()?))
}

fn take_string<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = take_u32(b)? as usize;
    let (s, rest) = b.split_at_checked(n)?;
    *b = rest;
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &[u8]) -> Vec<u8> {
        let mut v = (s.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(s);
        v
    }

    fn key(alg: &str) -> Vec<u8> {
        let mut blob = string(alg.as_bytes());
        blob.extend(string(b"key bytes"));
        let mut v = string(&blob);
        v.extend(string(b"a comment"));
        v
    }

    #[test]
    fn security_keys_are_counted_in_an_identities_answer() {
        let mut body = vec![12, 0, 0, 0, 3];
        body.extend(key("ssh-ed25519"));
        body.extend(key("sk-ssh-ed25519@openssh.com"));
        body.extend(key("sk-ecdsa-sha2-nistp256@openssh.com"));
        assert_eq!(sk_keys_in(&body), Some(2));
        assert_eq!(sk_keys_in(&body[..body.len() - 3]), None, "truncated");
        assert_eq!(sk_keys_in(&[5]), None, "a failure answer");
    }

    #[test]
    fn agents_known_by_their_socket() {
        let one = Path::new("/home/me/.1password/agent.sock");
        assert!(by_path(one).unwrap().starts_with("1Password"));
        let gpg = Path::new("/run/user/1000/gnupg/S.gpg-agent.ssh");
        assert!(by_path(gpg).unwrap().starts_with("gpg-agent"));
        assert!(by_path(Path::new("/tmp/ssh-XXXX/agent.123")).is_none());
    }

    #[test]
    fn few_hosts_or_a_plain_agent_get_no_hint() {
        let target = |name: &str| Target {
            identity_agent: None,
            ..crate::host::fake::target(name)
        };
        let gpg = Path::new("/run/user/1000/gnupg/S.gpg-agent.ssh");
        let few: Vec<Target> = (0..LARGE - 1).map(|i| target(&format!("h{i}"))).collect();
        assert!(hints(&few, Some(gpg)).is_empty());
        let many: Vec<Target> = (0..LARGE).map(|i| target(&format!("h{i}"))).collect();
        let said = hints(&many, Some(gpg));
        assert_eq!(said.len(), 1);
        assert!(said[0].contains("for each of 10 host(s)"), "{}", said[0]);
        // A socket nobody listens on, with a plain name: no hint, no error.
        assert!(hints(&many, Some(Path::new("/nonexistent/agent.sock"))).is_empty());
    }
}
