//! The safe unpack rules, applied by `artifact::inspect` to archives built by hand:
//! what `deploy --artifact` will refuse before anything is uploaded.

use std::io::Write;

use shipit::artifact::{self, ArtifactError};

/// A gzip'd tar with raw entries: (name, type, body or link target).
pub(crate) fn archive(entries: &[(&str, tar::EntryType, &str)]) -> tempfile::NamedTempFile {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, kind, body) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        // Write the raw name so `..` and `/` survive (the tar crate refuses them on append).
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        if *kind == tar::EntryType::Symlink {
            h.set_link_name(body).unwrap();
            h.set_size(0);
            h.set_cksum();
            tar.append(&h, std::io::empty()).unwrap();
        } else {
            h.set_size(body.len() as u64);
            h.set_cksum();
            tar.append(&h, body.as_bytes()).unwrap();
        }
    }
    let data = tar.into_inner().unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let mut gz = flate2::write::GzEncoder::new(&mut file, flate2::Compression::fast());
    gz.write_all(&data).unwrap();
    gz.finish().unwrap();
    file
}

pub(crate) fn manifest_for(files: &[(&str, &str)]) -> String {
    let entries: Vec<serde_json::Value> = files
        .iter()
        .map(|(p, body)| {
            serde_json::json!({"path": p, "type": "file", "mode": "0644", "size": body.len(), "sha256": crate::support::sha256_hex(body.as_bytes())})
        })
        .collect();
    serde_json::json!({"format": 1, "app": "x", "version": "1", "commit": null, "entries": entries})
        .to_string()
}

#[test]
fn a_well_formed_archive_passes() {
    let m = manifest_for(&[("a.txt", "hello")]);
    let f = archive(&[
        (".shipit/manifest.json", tar::EntryType::Regular, &m),
        ("a.txt", tar::EntryType::Regular, "hello"),
    ]);
    let a = artifact::inspect(f.path()).unwrap();
    assert_eq!(a.manifest.app, "x");
    let on_disk = std::fs::read(f.path()).unwrap();
    assert_eq!(a.sha256, crate::support::sha256_hex(&on_disk));
    // What a deploy sends: exactly the bytes inspect read and checked.
    assert_eq!(a.bytes.as_deref(), Some(&on_disk[..]));
}

#[test]
fn dot_dot_is_refused() {
    let f = archive(&[("../evil", tar::EntryType::Regular, "x")]);
    let err = artifact::inspect(f.path()).unwrap_err();
    assert!(matches!(err, ArtifactError::Escape(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "the archive holds `../evil`, which climbs out with `..`"
    );
    let f = archive(&[("a/../../evil", tar::EntryType::Regular, "x")]);
    assert!(matches!(
        artifact::inspect(f.path()),
        Err(ArtifactError::Escape(_))
    ));
}

#[test]
fn absolute_paths_are_refused() {
    let f = archive(&[("/etc/cron.d/evil", tar::EntryType::Regular, "x")]);
    let err = artifact::inspect(f.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the archive holds the absolute path `/etc/cron.d/evil`"
    );
}

#[test]
fn escaping_symlinks_are_refused() {
    for target in ["../../etc", "/etc/passwd"] {
        let f = archive(&[("link", tar::EntryType::Symlink, target)]);
        assert!(
            matches!(artifact::inspect(f.path()), Err(ArtifactError::Escape(_))),
            "{target}"
        );
    }
}

#[test]
fn hard_links_and_devices_are_refused() {
    for kind in [
        tar::EntryType::Link,
        tar::EntryType::Char,
        tar::EntryType::Block,
        tar::EntryType::Fifo,
    ] {
        let f = archive(&[("x", kind, "")]);
        assert!(
            matches!(artifact::inspect(f.path()), Err(ArtifactError::Escape(_))),
            "{kind:?}"
        );
    }
}

#[test]
fn contents_must_match_the_manifest() {
    let m = manifest_for(&[("a.txt", "hello")]);
    let f = archive(&[
        (".shipit/manifest.json", tar::EntryType::Regular, &m),
        ("a.txt", tar::EntryType::Regular, "HELLO"),
    ]);
    let err = artifact::inspect(f.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("do not match its manifest (first difference: `a.txt`)"),
        "{err}"
    );
    let f = archive(&[("a.txt", tar::EntryType::Regular, "hello")]);
    assert!(
        artifact::inspect(f.path())
            .unwrap_err()
            .to_string()
            .contains("it has no `.shipit/manifest.json`")
    );
}

#[test]
fn garbage_is_not_an_artifact() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"this is not gzip").unwrap();
    assert!(matches!(
        artifact::inspect(f.path()),
        Err(ArtifactError::Corrupt(_))
    ));
}

/// The whole gzip stream is checked, to its last byte, as the host's `gzip -dc` would:
/// a cut, a wrong CRC in the trailer (which the tar walk alone never reads: it stops at
/// the end marker) and bytes after the stream are all refused before anything is sent.
#[test]
fn a_cut_corrupt_or_padded_gzip_stream_is_refused() {
    let m = manifest_for(&[("a.txt", "hello")]);
    let f = archive(&[
        (".shipit/manifest.json", tar::EntryType::Regular, &m),
        ("a.txt", tar::EntryType::Regular, "hello"),
    ]);
    let good = std::fs::read(f.path()).unwrap();
    assert!(artifact::inspect(f.path()).is_ok());
    let n = good.len();
    let mut bad_crc = good.clone();
    bad_crc[n - 8] ^= 0xff;
    let mut padded = good.clone();
    padded.extend_from_slice(b"trailing bytes");
    for (what, bytes) in [
        ("cut short", good[..n - 20].to_vec()),
        ("trailer CRC wrong", bad_crc),
        ("bytes after the stream", padded),
    ] {
        std::fs::write(f.path(), &bytes).unwrap();
        let err = artifact::inspect(f.path()).unwrap_err();
        assert!(matches!(err, ArtifactError::Corrupt(_)), "{what}: {err:?}");
        assert!(
            err.to_string().contains("is not a valid artifact"),
            "{what}: {err}"
        );
    }
}

/// Regression: each link stayed inside on its own (`d/l -> ..`, `e -> d/l/..`), so the
/// pair passed, and `e` pointed at the directory holding the releases.
#[test]
fn link_chains_that_escape_are_refused() {
    for (links, bad) in [
        (&[("d/l", ".."), ("e", "d/l/..")][..], "e"),
        (&[("e", "d/l/.."), ("d/l", "..")], "e"),
        (&[("d/l", ".."), ("d/l/e", "..")], "d/l/e"),
    ] {
        let mut entries = vec![("d", tar::EntryType::Directory, "")];
        entries.extend(links.iter().map(|(p, t)| (*p, tar::EntryType::Symlink, *t)));
        let f = archive(&entries);
        let err = artifact::inspect(f.path()).unwrap_err();
        assert!(matches!(err, ArtifactError::Escape(_)), "{links:?}: {err}");
        assert_eq!(
            err.to_string(),
            format!(
                "`{bad}` is a symlink to `{}`, which points outside the package root through other links in it",
                links.iter().find(|(p, _)| *p == bad).unwrap().1
            )
        );
    }
}

/// Regression: `.env` and `.shipit/...` in an archive were unpacked, and shipit then wrote
/// the release's `.env` and `release.json` through whatever they were (a link, say).
#[test]
fn names_shipit_writes_are_refused_in_an_archive() {
    for name in [".env", ".shipit/release.json", ".shipit/x/y"] {
        let f = archive(&[(name, tar::EntryType::Regular, "x")]);
        let err = artifact::inspect(f.path()).unwrap_err();
        assert!(
            err.to_string().contains("reserved for shipit"),
            "{name}: {err}"
        );
    }
    let f = archive(&[(".env", tar::EntryType::Symlink, "bin/app")]);
    assert!(
        artifact::inspect(f.path())
            .unwrap_err()
            .to_string()
            .contains("reserved for shipit")
    );
}
