//! A deploy of an artifact built for another architecture: refused before any upload,
//! naming the file (against a local sshd: a host of this machine's architecture).

use std::os::unix::fs::PermissionsExt;

use crate::ssh::sshd::{self, Sshd};
use crate::support::Project;

/// A 64-byte ELF header (64-bit, little-endian, an executable) for machine `e_machine`.
fn elf_header(e_machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    (h[4], h[5], h[6], h[16]) = (2, 1, 1, 2);
    h[18..20].copy_from_slice(&e_machine.to_le_bytes());
    h
}

#[test]
fn a_foreign_elf_executable_is_refused_before_any_upload() {
    if sshd::prerequisites().is_none() {
        return;
    }
    let server = Sshd::start();
    let uname = std::process::Command::new("uname")
        .arg("-m")
        .output()
        .unwrap();
    let here = String::from_utf8(uname.stdout).unwrap().trim().to_owned();
    // An executable for the other of the two common architectures.
    let (machine, theirs) = if here == "aarch64" {
        (62, "x86_64")
    } else {
        (183, "aarch64")
    };
    let deploy_to = tempfile::tempdir().unwrap();
    let p = Project::new();
    std::fs::create_dir_all(p.path().join("pkg/bin")).unwrap();
    let bin = p.path().join("pkg/bin/hello");
    std::fs::write(&bin, elf_header(machine)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.file("pkg/bin/run.sh", "#!/bin/sh\nexec ./hello\n");
    p.file("pkg/data.bin", "\x7fELF not executable");
    p.file(
        "known_hosts",
        &format!("[127.0.0.1]:{} {}\n", server.port, server.host_key),
    );
    p.file(
        "deploy.yaml",
        &format!(
            "app: hello
deploy_to: {deploy_to}
package: {{root: pkg, include: [bin, data.bin]}}
ssh:
  user: root
  identity_files: [{key}]
  known_hosts_file: {known_hosts}
service: {{manager: none}}
hosts:
  - {{host: 127.0.0.1, port: {port}, name: app1}}
",
            deploy_to = deploy_to.path().display(),
            key = server.client_key.display(),
            known_hosts = p.path().join("known_hosts").display(),
            port = server.port,
        ),
    );
    let out = p.run(&["deploy", "--app-version", "1"]);
    out.code(1);
    let both = format!("{}{}", out.stdout, out.stderr);
    let said = format!("`bin/hello` is a {theirs} ELF executable; this host is {here}");
    assert!(both.contains(&said), "{both}");
    assert!(both.contains("architecture"), "{both}");
    // Nothing uploaded, nothing staged, no lock left.
    let mut left = Vec::new();
    for entry in walkdir(deploy_to.path()) {
        left.push(entry);
    }
    assert!(
        left.iter()
            .all(|p| !p.ends_with(".tar.gz") && !p.contains("releases/") && !p.contains("lock")),
        "{left:?}"
    );
}

fn walkdir(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        out.push(path.display().to_string());
        if path.is_dir() {
            out.extend(walkdir(&path));
        }
    }
    out
}
