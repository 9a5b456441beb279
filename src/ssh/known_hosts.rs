//! The `known_hosts` reader: parses OpenSSH known_hosts text and answers "is this the key
//! we know for this host?". Parsing and lookup are pure (text in, answer out); `load` only
//! reads the files. Writing new entries (accept-new) lives in `host_key.rs`.
//!
//! Supported: plain host entries, `[host]:port` entries, comma-separated pattern lists
//! with `*`/`?`/`!`, hashed `|1|salt|hash` entries (HMAC-SHA1 of the host spec), comments
//! and blank lines, several files. `@revoked` keys are refused for the hosts they name;
//! `@cert-authority` lines name the CAs whose host certificates are trusted for the hosts
//! they name (the certificate itself is checked in `host_key.rs`).

use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::{Algorithm, PublicKey};
use sha1::Sha1;

use super::pattern::match_pattern_list;

/// The answer to "is `key` the right key for this host?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A non-revoked entry for this host holds exactly this key.
    Match,
    /// The host is known, with a different key: the first such entry, preferring one of
    /// the same key type.
    Mismatch { file: PathBuf, line: usize },
    /// An `@revoked` entry that applies to this host names this key.
    Revoked { file: PathBuf, line: usize },
    /// No entry names this host.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug, Clone)]
enum Hosts {
    /// Comma-separated patterns, as written.
    Patterns(Vec<String>),
    /// `|1|salt|hash`: HMAC-SHA1 keyed by salt over the host spec.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

#[derive(Debug, Clone)]
struct Entry {
    file: PathBuf,
    line: usize,
    marker: Marker,
    hosts: Hosts,
    key: PublicKey,
}

/// The entries of one or more known_hosts files, in file order.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

/// The name OpenSSH looks up and writes for a host: `host` on port 22, `[host]:port`
/// otherwise (IPv6 addresses are written without their own brackets inside).
pub fn host_spec(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// One known_hosts line (without newline) that records `key` for the host.
pub fn entry_line(host: &str, port: u16, key: &PublicKey) -> String {
    let mut key = key.clone();
    key.set_comment("");
    // `to_openssh` only fails for key types it cannot encode; we got this key off the wire.
    let encoded = key.to_openssh().unwrap_or_else(|_| {
        format!(
            "{} {}",
            key.algorithm(),
            BASE64.encode(&key.to_bytes().unwrap_or_default())
        )
    });
    format!("{} {}", host_spec(host, port), encoded.trim_end())
}

impl KnownHosts {
    /// Parses known_hosts text; `file` is only recorded for error messages. Lines that do
    /// not parse (unknown key types, garbage) are skipped, as OpenSSH does.
    pub fn parse(text: &str, file: &Path) -> KnownHosts {
        let entries = text
            .lines()
            .enumerate()
            .filter_map(|(i, line)| parse_line(line, file, i + 1))
            .collect();
        KnownHosts { entries }
    }

    /// Reads every file that exists, in order; missing files count as empty. An error
    /// names the file that could not be read.
    pub fn load(files: &[PathBuf]) -> Result<KnownHosts, (PathBuf, std::io::Error)> {
        let mut all = KnownHosts::default();
        for file in files {
            match std::fs::read(file) {
                Ok(bytes) => all.extend(KnownHosts::parse(&String::from_utf8_lossy(&bytes), file)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err((file.clone(), e)),
            }
        }
        Ok(all)
    }

    /// Appends the entries of `other` after ours.
    pub fn extend(&mut self, other: KnownHosts) {
        self.entries.extend(other.entries);
    }

    /// Checks `key` for `host` on `port`.
    pub fn lookup(&self, host: &str, port: u16, key: &PublicKey) -> Lookup {
        let spec = host_spec(host, port);
        let applicable = || self.entries.iter().filter(|e| e.hosts.matches(&spec));
        if let Some(e) = applicable().find(|e| e.marker == Marker::Revoked && same_key(&e.key, key))
        {
            return Lookup::Revoked {
                file: e.file.clone(),
                line: e.line,
            };
        }
        let plain = || applicable().filter(|e| e.marker == Marker::None);
        if plain().any(|e| same_key(&e.key, key)) {
            return Lookup::Match;
        }
        let family = algorithm_family(&key.algorithm());
        let mismatch = plain()
            .find(|e| algorithm_family(&e.key.algorithm()) == family)
            .or_else(|| plain().next());
        match mismatch {
            Some(e) => Lookup::Mismatch {
                file: e.file.clone(),
                line: e.line,
            },
            None => Lookup::Unknown,
        }
    }

    /// The CA keys an `@cert-authority` line trusts for this host, each with its place.
    pub fn authorities(&self, host: &str, port: u16) -> Vec<(PublicKey, PathBuf, usize)> {
        let spec = host_spec(host, port);
        self.entries
            .iter()
            .filter(|e| e.marker == Marker::CertAuthority && e.hosts.matches(&spec))
            .map(|e| (e.key.clone(), e.file.clone(), e.line))
            .collect()
    }

    /// The `@revoked` line that names `key` for this host, if one does.
    pub fn revoked(&self, host: &str, port: u16, key: &PublicKey) -> Option<(PathBuf, usize)> {
        let spec = host_spec(host, port);
        self.entries
            .iter()
            .find(|e| {
                e.marker == Marker::Revoked && e.hosts.matches(&spec) && same_key(&e.key, key)
            })
            .map(|e| (e.file.clone(), e.line))
    }

    /// The key algorithms recorded for this host, first seen first, so the connection can
    /// ask the server for a key type we can actually verify.
    pub fn known_algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let spec = host_spec(host, port);
        let mut out: Vec<Algorithm> = Vec::new();
        for e in self
            .entries
            .iter()
            .filter(|e| e.marker == Marker::None && e.hosts.matches(&spec))
        {
            let alg = e.key.algorithm();
            if !out.contains(&alg) {
                out.push(alg);
            }
        }
        out
    }
}

impl Hosts {
    fn matches(&self, spec: &str) -> bool {
        match self {
            Hosts::Patterns(patterns) => {
                match_pattern_list(patterns.iter().map(String::as_str), spec)
            }
            Hosts::Hashed { salt, hash } => {
                let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(spec.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
        }
    }
}

fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

/// RSA keys are one family whatever signature hash is negotiated.
fn algorithm_family(alg: &Algorithm) -> String {
    match alg {
        Algorithm::Rsa { .. } => "ssh-rsa".to_owned(),
        other => other.as_str().to_owned(),
    }
}

fn parse_line(line: &str, file: &Path, number: usize) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let marker = match first {
        "@revoked" => {
            first = fields.next()?;
            Marker::Revoked
        }
        "@cert-authority" => {
            first = fields.next()?;
            Marker::CertAuthority
        }
        m if m.starts_with('@') => return None,
        _ => Marker::None,
    };
    let hosts = parse_hosts(first)?;
    let key_type = fields.next()?;
    let key_b64 = fields.next()?;
    let key = PublicKey::from_openssh(&format!("{key_type} {key_b64}")).ok()?;
    Some(Entry {
        file: file.to_owned(),
        line: number,
        marker,
        hosts,
        key,
    })
}

fn parse_hosts(field: &str) -> Option<Hosts> {
    if let Some(rest) = field.strip_prefix("|1|") {
        let (salt, hash) = rest.split_once('|')?;
        let salt = BASE64.decode(salt.as_bytes()).ok()?;
        let hash = BASE64.decode(hash.as_bytes()).ok()?;
        return Some(Hosts::Hashed { salt, hash });
    }
    if field.starts_with('|') {
        return None;
    }
    Some(Hosts::Patterns(
        field
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two real ed25519 public keys and one ECDSA key, generated with ssh-keygen for these tests.
    const ED_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH3ZQ3isYFRnOMk3vxkwAJSoVM1LFWq149xnJ1xVk7/w";
    const ED_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFX13l0cbB8mN/miJdA29FbjZFsAvhwJ8y/OEICjddSa";
    const ECDSA: &str = "ecdsa-sha2-nistp256 \
        AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIE3RF4ZS2yqgxFSTz3vyIE3WtRlV87TKp0/\
        zP4Al0rdJcZQMHCP9/6TxW4OaYwyNOoiLt/8qYure+Qgb/xtfII=";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).expect("test key parses")
    }

    fn kh(text: &str) -> KnownHosts {
        KnownHosts::parse(text, Path::new("/kh"))
    }

    fn mismatch(line: usize) -> Lookup {
        Lookup::Mismatch {
            file: PathBuf::from("/kh"),
            line,
        }
    }

    #[test]
    fn plain_entry_matches_port_22_only() {
        let k = kh(&format!("app1.example.com {ED_A}\n"));
        assert_eq!(k.lookup("app1.example.com", 22, &key(ED_A)), Lookup::Match);
        assert_eq!(k.lookup("APP1.example.com", 22, &key(ED_A)), Lookup::Match);
        assert_eq!(
            k.lookup("app1.example.com", 2222, &key(ED_A)),
            Lookup::Unknown
        );
        assert_eq!(
            k.lookup("app2.example.com", 22, &key(ED_A)),
            Lookup::Unknown
        );
    }

    #[test]
    fn bracketed_entry_matches_its_port() {
        let k = kh(&format!("[db]:2222 {ED_A}\n[::1]:2200 {ED_B}\n"));
        assert_eq!(k.lookup("db", 2222, &key(ED_A)), Lookup::Match);
        assert_eq!(k.lookup("db", 22, &key(ED_A)), Lookup::Unknown);
        assert_eq!(k.lookup("::1", 2200, &key(ED_B)), Lookup::Match);
    }

    #[test]
    fn different_key_is_a_mismatch_naming_the_line() {
        let k = kh(&format!("# comment\n\nother {ED_B}\napp1 {ED_A}\n"));
        assert_eq!(k.lookup("app1", 22, &key(ED_B)), mismatch(4));
    }

    #[test]
    fn mismatch_prefers_an_entry_of_the_same_key_type() {
        let k = kh(&format!("app1 {ECDSA}\napp1 {ED_A}\n"));
        assert_eq!(k.lookup("app1", 22, &key(ED_B)), mismatch(2));
        assert_eq!(k.lookup("app1", 22, &key(ECDSA)), Lookup::Match);
        assert_eq!(
            k.known_algorithms("app1", 22),
            vec![key(ECDSA).algorithm(), Algorithm::Ed25519]
        );
    }

    #[test]
    fn comma_lists_and_wildcards() {
        let k = kh(&format!(
            "app1,10.0.0.7 {ED_A}\n*.internal,!bad.internal {ED_B}\n"
        ));
        assert_eq!(k.lookup("10.0.0.7", 22, &key(ED_A)), Lookup::Match);
        assert_eq!(k.lookup("app1", 22, &key(ED_A)), Lookup::Match);
        assert_eq!(k.lookup("x.internal", 22, &key(ED_B)), Lookup::Match);
        assert_eq!(k.lookup("bad.internal", 22, &key(ED_B)), Lookup::Unknown);
    }

    #[test]
    fn hashed_entries() {
        let salt = BASE64.encode(b"0123456789abcdefghij");
        let hashed = |spec: &str| {
            let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(b"0123456789abcdefghij").unwrap();
            mac.update(spec.as_bytes());
            format!("|1|{salt}|{}", BASE64.encode(&mac.finalize().into_bytes()))
        };
        let k = kh(&format!(
            "{} {ED_A}\n{} {ED_B}\n",
            hashed("app1"),
            hashed("[app1]:2222")
        ));
        assert_eq!(k.lookup("app1", 22, &key(ED_A)), Lookup::Match);
        assert_eq!(k.lookup("app1", 2222, &key(ED_B)), Lookup::Match);
        assert_eq!(k.lookup("app1", 2222, &key(ED_A)), mismatch(2));
        assert_eq!(k.lookup("app2", 22, &key(ED_A)), Lookup::Unknown);
    }

    #[test]
    fn hashed_entry_written_by_ssh_keygen() {
        // `ssh-keygen -H` output for host "example.org" (fixed salt from a real run).
        let line = format!("|1|Zvcfv4Ug6GvZMv/euKSq17clDw0=|57/Clbgru/h5eXL/FbV9EB3beAg= {ED_A}");
        let k = kh(&line);
        assert_eq!(k.lookup("example.org", 22, &key(ED_A)), Lookup::Match);
    }

    #[test]
    fn revoked_key_is_refused_even_with_a_matching_entry() {
        let k = kh(&format!("app1 {ED_A}\n@revoked * {ED_A}\n"));
        assert_eq!(
            k.lookup("app1", 22, &key(ED_A)),
            Lookup::Revoked {
                file: PathBuf::from("/kh"),
                line: 2
            }
        );
        assert_eq!(k.lookup("app1", 22, &key(ED_B)), mismatch(1));
    }

    #[test]
    fn cert_authority_and_garbage_lines_are_ignored() {
        let k = kh(&format!(
            "@cert-authority *.example.com {ED_A}\nnot a key line\n|1|bad\n\
             app1 ssh-ed25519 !!!!\n@weird app1 {ED_A}\n"
        ));
        assert_eq!(k.lookup("x.example.com", 22, &key(ED_A)), Lookup::Unknown);
        assert_eq!(k.lookup("app1", 22, &key(ED_A)), Lookup::Unknown);
    }

    #[test]
    fn several_files_keep_their_own_names_and_lines() {
        let mut k = KnownHosts::parse(&format!("a {ED_A}\n"), Path::new("/one"));
        k.extend(KnownHosts::parse(
            &format!("\nb {ED_A}\n"),
            Path::new("/two"),
        ));
        assert_eq!(
            k.lookup("b", 22, &key(ED_B)),
            Lookup::Mismatch {
                file: PathBuf::from("/two"),
                line: 2
            }
        );
    }

    #[test]
    fn load_skips_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("kh");
        std::fs::write(&present, format!("a {ED_A}\n")).unwrap();
        let k = KnownHosts::load(&[dir.path().join("missing"), present]).unwrap();
        assert_eq!(k.lookup("a", 22, &key(ED_A)), Lookup::Match);
    }

    #[test]
    fn entry_line_round_trips() {
        let line = entry_line("::1", 2222, &key(&format!("{ED_A} some comment")));
        assert_eq!(line, format!("[::1]:2222 {ED_A}"));
        assert_eq!(entry_line("app1", 22, &key(ED_A)), format!("app1 {ED_A}"));
        assert_eq!(kh(&line).lookup("::1", 2222, &key(ED_A)), Lookup::Match);
    }

    #[test]
    fn cert_authority_lines_name_cas_for_their_hosts_and_are_no_plain_key() {
        let k = kh(&format!(
            "@cert-authority *.prod,10.0.0.* {ED_A}\n@revoked app1.prod {ED_B}\n"
        ));
        let cas = k.authorities("app1.prod", 22);
        assert_eq!(cas.len(), 1);
        assert_eq!(cas[0].0.key_data(), key(ED_A).key_data());
        assert_eq!((cas[0].1.as_path(), cas[0].2), (Path::new("/kh"), 1));
        assert_eq!(k.authorities("10.0.0.7", 22).len(), 1);
        assert!(k.authorities("db.staging", 22).is_empty());
        // A CA line is not a record of the CA's key as the host's own key.
        assert_eq!(k.lookup("app1.prod", 22, &key(ED_A)), Lookup::Unknown);
        assert!(k.known_algorithms("app1.prod", 22).is_empty());
        assert_eq!(
            k.revoked("app1.prod", 22, &key(ED_B)),
            Some((PathBuf::from("/kh"), 2))
        );
        assert_eq!(k.revoked("app2.prod", 22, &key(ED_B)), None);
    }
}
