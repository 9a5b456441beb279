//! known_hosts text: parsing and lookups never panic; a line written by `entry_line` for
//! a valid host always matches its own key, whatever garbage surrounds it.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use russh::keys::ssh_key::PublicKey;
use shipit::config::host::valid_host;
use shipit::ssh::known_hosts::{KnownHosts, Lookup, entry_line};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH3ZQ3isYFRnOMk3vxkwAJSoVM1LFWq149xnJ1xVk7/w";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let key = PublicKey::from_openssh(KEY).expect("fixed key");
    let kh = KnownHosts::parse(&text, Path::new("/fuzz/known_hosts"));
    // Hosts taken from the input itself, so patterns get exercised against real names.
    let mut hosts: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|h| !h.is_empty() && h.len() < 64)
        .take(8)
        .collect();
    hosts.extend(["app1.example.com", "10.0.0.7", "::1"]);
    for host in hosts {
        for port in [22, 2222] {
            let _ = kh.lookup(host, port, &key);
            let _ = kh.known_algorithms(host, port);
            if valid_host(host) {
                // Our own line for this host, after the garbage, must match unless the
                // garbage revokes the key.
                let mut with_mine = kh.clone();
                with_mine.extend(KnownHosts::parse(
                    &entry_line(host, port, &key),
                    Path::new("/fuzz/mine"),
                ));
                let got = with_mine.lookup(host, port, &key);
                assert!(
                    matches!(got, Lookup::Match | Lookup::Revoked { .. }),
                    "{host:?}:{port} -> {got:?}"
                );
            }
        }
    }
});
