//! The test servers' Debian mirror comes from this machine's apt sources
//! (`tests/testbed/lib.sh`'s `tb_apt_mirror`), and no file of the project names one.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `tb_apt_mirror` on these files.
fn apt_mirror(files: &[&Path]) -> (bool, String) {
    let lib = Path::new(ROOT).join("tests/testbed/lib.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"source "$0" && tb_apt_mirror "$@""#)
        .arg(lib)
        .args(files)
        .output()
        .expect("run bash");
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn the_mirror_is_the_first_debian_archive_entry_of_apt_sources() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = |name: &str, text: &str| {
        std::fs::write(d.join(name), text).unwrap();
        d.join(name)
    };
    let one_line = file(
        "a.list",
        "# deb http://commented.example/debian bookworm main\n\
         deb-src http://src.example/debian bookworm main\n\
         deb [arch=amd64 signed-by=/k.gpg] http://sec.example/debian-security/ bookworm-security main\n\
         deb https://vendor.example/apt cloud-sdk-bookworm main\n\
         deb http://upd.example/debian bookworm-updates main\n\
         deb [ arch=amd64 ] http://one.example/debian/ bookworm main contrib\n",
    );
    let deb822 = file(
        "b.sources",
        "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n\
         Components: main\n\n\
         Types: deb\nURIs: https://vendor.example/node\nSuites: nodistro\nComponents: main\n\n\
         Types: deb deb-src\n# a comment inside\nURIs: http://two.example/debian\n\
         Suites: trixie trixie-updates\nComponents: main\n",
    );
    let disabled = file(
        "c.sources",
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n",
    );
    let none = file(
        "d.list",
        "deb https://vendor.example/apt stable-vendor main\n",
    );
    assert_eq!(
        apt_mirror(&[&one_line]),
        (true, "http://one.example/debian\n".into())
    );
    assert_eq!(
        apt_mirror(&[&deb822]),
        (true, "http://two.example/debian\n".into())
    );
    assert_eq!(
        apt_mirror(&[&disabled, &none, &deb822, &one_line]),
        (true, "http://two.example/debian\n".into())
    );
    assert_eq!(apt_mirror(&[&disabled, &none]), (false, String::new()));
    assert_eq!(
        apt_mirror(&[&d.join("missing.list")]),
        (false, String::new())
    );
}

#[test]
fn no_tracked_file_names_a_debian_mirror() {
    let listed = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(ROOT)
        .output()
        .expect("git ls-files");
    if !listed.status.success() {
        return; // Not a git checkout (a packaged source): nothing tracked to check.
    }
    // Spelled in pieces, so this file does not name them either.
    let hosts: Vec<String> = [
        ["deb", "debian.org"],
        ["ftp", "debian.org"],
        ["httpredir", "debian.org"],
        ["http", "debian.net"],
        ["cdn", "debian.net"],
        ["cloudfront", "debian.net"],
        ["security", "debian.org"],
        ["snapshot", "debian.org"],
        ["archive", "ubuntu.com"],
    ]
    .iter()
    .map(|[a, b]| format!("{a}.{b}"))
    .collect();
    let country = format!(".{}", "debian.org"); // ftp.<cc>.debian.org
    let mut found = Vec::new();
    for path in listed.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let path = String::from_utf8_lossy(path).into_owned();
        let Ok(bytes) = std::fs::read(Path::new(ROOT).join(&path)) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        for host in &hosts {
            if text.contains(host.as_str()) {
                found.push(format!("{path}: {host}"));
            }
        }
        let ftp_cc = text.match_indices(&country).any(|(at, _)| {
            let before = &text.as_bytes()[..at];
            before.len() >= 6 && before[before.len() - 6..].starts_with(b"ftp.")
        });
        if ftp_cc {
            found.push(format!("{path}: ftp.<country>{country}"));
        }
    }
    assert!(
        found.is_empty(),
        "tracked files name a Debian mirror (the testbed reads it from apt's sources; \
         TESTBED_MIRROR overrides):\n{}",
        found.join("\n")
    );
}
