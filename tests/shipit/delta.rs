//! Delta deploys without SSH: the real stage script (the one a host runs) run by the local
//! `sh` through the same bootstrap framing, fed a real delta built from two real
//! artifacts. The e2e tier does the same on real hosts; this covers more shapes fast.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use shipit::artifact::{self, Artifact, PackRequest, delta};
use shipit::remote::release::{self, DeltaSource, Source, Stage};

struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let t = Tree {
            dir: tempfile::tempdir().unwrap(),
        };
        // Text that does not compress away, as real assets don't.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..200 {
            let mut text = format!("file {i}\n");
            for _ in 0..256 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push_str(&format!("{x:016x}"));
            }
            t.write(&format!("static/a/file-{i:03}.txt"), &text);
        }
        t.write("bin/app", "#!/bin/sh\necho v1\n");
        t.chmod("bin/app", 0o755);
        t.write("conf/with space.toml", "x = 1\n");
        t.write("conf/-leading-dash", "y\n");
        t.write("gone-later.txt", "bye\n");
        std::fs::create_dir_all(t.path("empty/dir")).unwrap();
        symlink("static/a/file-001.txt", t.path("link")).unwrap();
        t
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn chmod(&self, rel: &str, mode: u32) {
        std::fs::set_permissions(self.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn pack(&self, version: &str, out: &Path) -> Artifact {
        artifact::pack(&PackRequest {
            root: self.dir.path(),
            include: &["**".to_owned()],
            exclude: &[],
            app: "app",
            version,
            commit: None,
            mtime: 1_700_000_000,
            out_dir: out,
            progress: &|_| {},
        })
        .unwrap()
    }
}

/// A deploy_to on the local disk, and the stage script run in it like on a host.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        Host {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Stage `a` as release `id` from `source`, with `data` on stdin; returns stdout.
    fn stage(&self, id: &str, a: &Artifact, source: Source, data: &[u8]) -> String {
        let out = self.try_stage(id, a, source, data);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "stage failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Stage the whole artifact, and check the release is exactly its full unpack.
    fn stage_full(&self, id: &str, a: &Artifact) {
        let stdout = self.stage(
            id,
            a,
            Source::Full { cksum: &cksum(a) },
            &std::fs::read(&a.path).unwrap(),
        );
        assert!(stdout.contains("@@staged"), "{stdout}");
        assert_eq!(
            fingerprint(&self.release(id)),
            fingerprint(full_unpack(a).path())
        );
    }

    fn try_stage(&self, id: &str, a: &Artifact, source: Source, data: &[u8]) -> Output {
        self.run(
            &release::stage(&Stage {
                id,
                sha256: &a.sha256,
                source,
                shared_dirs: &[],
                shared_files: &[],
                env: "PORT='1'\n",
                staged_json: "{\"state\":\"staged\"}",
                failed_json: "{\"state\":\"failed\"}",
                before_switch: &[],
                redact: false,
            })
            .unwrap(),
            data,
        )
    }

    /// `script` run in the deploy_to, as a host runs it, with `data` after it on stdin.
    fn run(&self, script: &str, data: &[u8]) -> Output {
        let script = format!(
            "{}{script}",
            release::enter(self.root().to_str().unwrap(), true).unwrap(),
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(shipit::ssh::BOOTSTRAP)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut input = shipit::ssh::frame(&script);
        input.extend_from_slice(data);
        // The script may stop reading early (a delta it turns down): that is fine.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    }

    fn release(&self, id: &str) -> PathBuf {
        self.root().join("releases").join(id)
    }

    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.root().join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect()
    }
}

/// Every entry's type, mode, path and link target, and every file's sha256: what "the
/// same release" means. Leaves out what staging adds (.env, release.json).
fn fingerprint(dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "find . -mindepth 1 ! -path ./.env ! -path ./.shipit/release.json -printf '%y %m %P -> %l\\n' | LC_ALL=C sort; \
             find . -type f ! -path ./.env ! -path ./.shipit/release.json -print0 | LC_ALL=C sort -z | xargs -0 sha256sum",
        )
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn full_unpack(a: &Artifact) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .args(["-xzpf"])
        .arg(&a.path)
        .arg("-C")
        .arg(d.path())
        .status()
        .unwrap();
    assert!(status.success());
    d
}

fn delta_source<'a>(base: &'a str, d: &'a delta::Delta, link: bool) -> Source<'a> {
    Source::Delta(DeltaSource {
        base,
        link,
        reuse_len: d.reuse_gz.len() as u64,
        tree_sha256: &d.tree_sha256,
        content_sha256: &d.content_sha256,
    })
}

fn cksum(a: &Artifact) -> String {
    a.cksum.clone()
}

fn delta_bytes(d: &delta::Delta) -> Vec<u8> {
    [&d.reuse_gz[..], &d.archive[..]].concat()
}

#[test]
fn the_tree_digest_is_what_find_prints_for_a_full_unpack() {
    let tree = Tree::new();
    let out = tempfile::tempdir().unwrap();
    let a = tree.pack("1", out.path());
    // A delta against an empty release sends everything; its tree digest must equal the
    // host's `find | sort | sha256sum` of a full unpack, or every delta would be refused.
    let empty = artifact::Manifest {
        entries: Vec::new(),
        ..a.manifest.clone()
    };
    let d = delta::build(&a, &empty, &[]).unwrap();
    assert_eq!(d.reused, 0);
    let unpacked = full_unpack(&a);
    let listing = Command::new("sh")
        .arg("-c")
        .arg("find . -mindepth 1 -printf '%y %m %P -> %l\\n' | LC_ALL=C sort | sha256sum")
        .current_dir(unpacked.path())
        .output()
        .unwrap();
    let host = String::from_utf8(listing.stdout).unwrap();
    assert_eq!(host.split_whitespace().next(), Some(d.tree_sha256.as_str()));
}

#[test]
fn a_delta_release_is_identical_to_a_full_unpack_and_moves_only_what_changed() {
    let tree = Tree::new();
    let out1 = tempfile::tempdir().unwrap();
    let v1 = tree.pack("1", out1.path());
    let host = Host::new();
    let id1 = "20260101T000000Z-aaaaaaaa";
    host.stage_full(id1, &v1);
    assert!(
        host.root()
            .join(format!(".shipit/artifacts/{}.tar.gz", v1.sha256))
            .exists(),
        "a full upload is cached"
    );

    // v2: one file changed, one added, one removed, a mode changed, a link retargeted.
    tree.write("static/a/file-007.txt", "changed\n");
    tree.write("static/new.txt", "new\n");
    std::fs::remove_file(tree.path("gone-later.txt")).unwrap();
    tree.chmod("conf/with space.toml", 0o600);
    std::fs::remove_file(tree.path("link")).unwrap();
    symlink("static/a/file-002.txt", tree.path("link")).unwrap();
    let out2 = tempfile::tempdir().unwrap();
    let v2 = tree.pack("2", out2.path());

    for (i, link) in [false, true].into_iter().enumerate() {
        let d = delta::build(&v2, &v1.manifest, &[]).unwrap();
        // 200 assets + bin/app + conf/-leading-dash reused; 007 changed, the mode change
        // and the new file sent (the manifest too).
        assert_eq!(d.reused, 201, "reused");
        assert_eq!(d.sent, 4, "sent");
        assert!(d.len() * 5 < v2.size, "{} of {}", d.len(), v2.size);

        let id2 = format!("20260101T00000{i}Z-bbbbbbbb");
        let stdout = host.stage(&id2, &v2, delta_source(id1, &d, link), &delta_bytes(&d));
        assert!(stdout.contains("@@staged"), "{stdout}");
        assert!(!stdout.contains("@@delta-mismatch"), "{stdout}");
        assert_eq!(
            fingerprint(&host.release(&id2)),
            fingerprint(full_unpack(&v2).path())
        );
        let inode = |id: &str| {
            std::fs::metadata(host.release(id).join("static/a/file-100.txt"))
                .unwrap()
                .ino()
        };
        assert_eq!(inode(&id2) == inode(id1), link, "hardlink: {link}");
        assert!(host.leftovers().is_empty(), "{:?}", host.leftovers());
    }
}

#[test]
fn a_tampered_base_release_is_caught_and_nothing_is_left_behind() {
    let tree = Tree::new();
    let out1 = tempfile::tempdir().unwrap();
    let v1 = tree.pack("1", out1.path());
    let host = Host::new();
    let id1 = "20260101T000000Z-aaaaaaaa";
    host.stage_full(id1, &v1);
    tree.write("static/new.txt", "new\n");
    let out2 = tempfile::tempdir().unwrap();
    let v2 = tree.pack("2", out2.path());
    let d = delta::build(&v2, &v1.manifest, &[]).unwrap();
    let id2 = "20260101T000001Z-bbbbbbbb";

    // A file edited in place, same size: only its content gives it away.
    let victim = host.release(id1).join("static/a/file-050.txt");
    let text = std::fs::read_to_string(&victim).unwrap();
    std::fs::write(&victim, text.replacen("file", "FILE", 1)).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap().len(), text.len());
    let stdout = host.stage(id2, &v2, delta_source(id1, &d, false), &delta_bytes(&d));
    assert!(
        stdout.contains("@@delta-mismatch") && stdout.contains("file contents differ"),
        "{stdout}"
    );
    assert!(!stdout.contains("@@staged"));
    assert!(!host.release(id2).exists());
    assert!(host.leftovers().is_empty(), "{:?}", host.leftovers());

    // A mode changed in place: the tree check catches it.
    std::fs::write(&victim, text).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o666)).unwrap();
    let stdout = host.stage(id2, &v2, delta_source(id1, &d, false), &delta_bytes(&d));
    assert!(
        stdout.contains("@@delta-mismatch") && stdout.contains("file tree"),
        "{stdout}"
    );

    // A reused file deleted: caught while copying.
    std::fs::remove_file(&victim).unwrap();
    let stdout = host.stage(id2, &v2, delta_source(id1, &d, false), &delta_bytes(&d));
    assert!(stdout.contains("@@delta-mismatch"), "{stdout}");
    assert!(!host.release(id2).exists());
    assert!(host.leftovers().is_empty(), "{:?}", host.leftovers());

    // The full artifact then stages fine.
    host.stage_full(id2, &v2);
}

#[test]
fn a_truncated_full_upload_leaves_no_release_and_no_cached_artifact() {
    let tree = Tree::new();
    let out1 = tempfile::tempdir().unwrap();
    let v1 = tree.pack("1", out1.path());
    let host = Host::new();
    let mut bytes = std::fs::read(&v1.path).unwrap();
    bytes.truncate(bytes.len() - 10);
    let out = host.try_stage(
        "20260101T000000Z-aaaaaaaa",
        &v1,
        Source::Full { cksum: &cksum(&v1) },
        &bytes,
    );
    assert!(!out.status.success());
    assert!(!host.release("20260101T000000Z-aaaaaaaa").exists());
    assert!(host.leftovers().is_empty());
    let cached: Vec<_> = std::fs::read_dir(host.root().join(".shipit/artifacts"))
        .unwrap()
        .collect();
    assert!(cached.is_empty(), "no partial artifact kept: {cached:?}");
}

/// The survey of a deploy that is not forced, on a host whose live release already is this
/// artifact and config: `@@unchanged`, and nothing else is done, not even the cached
/// artifact's cksum (a 75 MB read per host, which made the 20-host no-op 0.2 s slower);
/// a forced deploy of the same artifact still finds it cached.
#[test]
fn a_no_op_survey_answers_unchanged_without_reading_the_cached_artifact() {
    let tree = Tree::new();
    let out = tempfile::tempdir().unwrap();
    let a = tree.pack("1", out.path());
    let host = Host::new();
    host.stage_full("r1", &a);
    std::fs::write(
        host.release("r1").join(".shipit/release.json"),
        format!(
            "{{\"artifact_sha256\":\"{}\",\"state\":\"live\",\"config_sha256\":\"cfg\"}}\n",
            a.sha256
        ),
    )
    .unwrap();
    symlink("releases/r1", host.root().join("current")).unwrap();
    let cksum = cksum(&a);
    let survey = |unchanged: Option<(&str, &str)>| {
        let script = release::survey(Some(&release::Wanted {
            sha256: &a.sha256,
            cksum: &cksum,
            manifest: true,
            unchanged,
        }))
        .unwrap();
        let o = host.run(&script, b"");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let noop = survey(Some(("cfg", "token")));
    assert!(noop.lines().any(|l| l == "@@unchanged"), "{noop}");
    assert!(noop.lines().any(|l| l == "@@cached no"), "{noop}");
    assert!(!noop.contains("@@manifest"), "{noop}");
    let other_config = survey(Some(("other", "token")));
    assert!(!other_config.contains("@@unchanged"), "{other_config}");
    assert!(
        other_config.lines().any(|l| l == "@@cached yes"),
        "{other_config}"
    );
    let forced = survey(None);
    assert!(forced.lines().any(|l| l == "@@cached yes"), "{forced}");
    assert!(!forced.contains("@@unchanged"), "{forced}");
}

/// A delta is made of the bytes `pack` (or `inspect`) vouched for: the ones it holds, or,
/// for an artifact too big to hold, the file checked against its sha256 as it is read.
/// A file replaced after the check never becomes a delta.
#[test]
fn a_delta_is_made_only_of_the_checked_bytes() {
    let tree = Tree::new();
    let out = tempfile::tempdir().unwrap();
    let v1 = tree.pack("1", out.path());
    tree.write("static/a/file-007.txt", "changed\n");
    let v2 = tree.pack("2", out.path());
    let on_disk = std::fs::read(&v2.path).unwrap();
    assert_eq!(
        v2.bytes.as_deref(),
        Some(&on_disk[..]),
        "pack keeps what it wrote"
    );
    let good = delta::build(&v2, &v1.manifest, &[]).unwrap();
    assert_eq!(good.sent, 2, "the changed file and the new manifest");

    // The file is replaced (same size, one byte flipped in the middle) after the check.
    let mut swapped = on_disk.clone();
    let mid = swapped.len() / 2;
    swapped[mid] ^= 0x55;
    std::fs::write(&v2.path, &swapped).unwrap();
    let held = delta::build(&v2, &v1.manifest, &[]).unwrap();
    assert_eq!(held.archive, good.archive, "built from the held bytes");
    assert_eq!(held.content_sha256, good.content_sha256);
    let streamed = artifact::Artifact {
        bytes: None,
        ..v2.clone()
    };
    let err = delta::build(&streamed, &v1.manifest, &[]).unwrap_err();
    assert!(
        err.to_string().contains("changed since it was checked"),
        "{err}"
    );
    std::fs::write(&v2.path, &on_disk).unwrap();
    assert!(delta::build(&streamed, &v1.manifest, &[]).is_ok());
}
