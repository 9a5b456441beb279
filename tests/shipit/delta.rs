//! Delta deploys without SSH: the real stage script (the one a host runs) run by the local
//! `sh` through the same bootstrap framing, fed a real delta built from two real
//! artifacts. The e2e tier does the same on real hosts; this covers more shapes fast.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use shipit::artifact::{self, Artifact, PackRequest, delta};
use shipit::remote::stage::{self, DeltaSource, Source, Stage};
use shipit::remote::survey;

/// A package root, and where its artifacts go.
struct Tree {
    dir: tempfile::TempDir,
    out: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let t = Tree {
            dir: tempfile::tempdir().unwrap(),
            out: tempfile::tempdir().unwrap(),
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
        // Names and link targets that look like a hard-linked delta's own prefixes (`N/`,
        // `B/`) or mean something to its `tar --transform` (`,`, `&`, `\\1`).
        t.write("B/x,y&z.txt", "b\n");
        t.write("N/odd \\1.txt", "n\n");
        symlink("B/x,y&z.txt", t.path("to-b")).unwrap();
        symlink("N/odd \\1.txt", t.path("to-n")).unwrap();
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

    fn pack(&self, version: &str) -> Artifact {
        artifact::pack(&PackRequest {
            root: self.dir.path(),
            include: &["**".to_owned()],
            exclude: &[],
            app: "app",
            version,
            commit: None,
            mtime: 1_700_000_000,
            out_dir: self.out.path(),
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
    /// A hard-linked delta's release gets its record (`.shipit/verified`), as it would
    /// with `delta: hardlink`.
    fn stage(&self, id: &str, a: &Artifact, source: Source, data: &[u8]) -> String {
        let record = matches!(source, Source::Delta(d) if d.link);
        let out = self.try_stage(id, a, source, data, record);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "stage failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Stage the whole artifact, and check the release is exactly its full unpack. With
    /// `record`, as `delta: hardlink` does: the release's `.shipit/verified` too.
    fn stage_full(&self, id: &str, a: &Artifact, record: bool) {
        let out = self.try_stage(
            id,
            a,
            Source::Full { cksum: &cksum(a) },
            &std::fs::read(&a.path).unwrap(),
            record,
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.contains("@@staged"), "{stdout}");
        assert_eq!(
            fingerprint(&self.release(id)),
            fingerprint(full_unpack(a).path())
        );
    }

    fn try_stage(
        &self,
        id: &str,
        a: &Artifact,
        source: Source,
        data: &[u8],
        record: bool,
    ) -> Output {
        self.run(
            &stage::stage(&Stage {
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
                record,
                unit: None,
            })
            .unwrap(),
            data,
        )
    }

    /// `script` run in the deploy_to, as a host runs it, with `data` after it on stdin.
    fn run(&self, script: &str, data: &[u8]) -> Output {
        let script = format!(
            "{}{script}",
            shipit::remote::enter(self.root().to_str().unwrap(), true).unwrap(),
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

    /// What a deploy's survey of `a` (asking for the live release's manifest) prints here.
    fn survey(&self, a: &Artifact, cksum: &str, unchanged: Option<(&str, &str)>) -> String {
        let script = survey::survey(Some(&survey::Wanted {
            sha256: &a.sha256,
            cksum,
            manifest: true,
            unchanged,
        }))
        .unwrap();
        let o = self.run(&script, b"");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
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
/// same release" means. Leaves out what staging adds (.env, release.json, the record).
fn fingerprint(dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "find . -mindepth 1 ! -path ./.env ! -path ./.shipit/release.json ! -path ./.shipit/verified -printf '%y %m %P -> %l\\n' | LC_ALL=C sort; \
             find . -type f ! -path ./.env ! -path ./.shipit/release.json ! -path ./.shipit/verified -print0 | LC_ALL=C sort -z | xargs -0 sha256sum",
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

fn delta_source<'a>(base: &'a str, d: &'a delta::Delta) -> Source<'a> {
    Source::Delta(DeltaSource {
        base,
        link: d.link,
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
    let a = tree.pack("1");
    // A delta against an empty release sends everything; its tree digest must equal the
    // host's `find | sort | sha256sum` of a full unpack, or every delta would be refused.
    let empty = artifact::Manifest {
        entries: Vec::new(),
        ..a.manifest.clone()
    };
    let d = delta::build(&a, &empty, &[], false).unwrap();
    assert_eq!(d.reused, 0);
    let unpacked = full_unpack(&a);
    let listing = Command::new("sh")
        .arg("-c")
        .arg(delta::tree_digest_command(&format!(
            ". -mindepth 1 {}",
            delta::tree_find(None)
        )))
        .current_dir(unpacked.path())
        .output()
        .unwrap();
    let host = String::from_utf8(listing.stdout).unwrap();
    assert_eq!(host.split_whitespace().next(), Some(d.tree_sha256.as_str()));

    // `find`'s exit status is part of the digest: a listing cut short by an error (here:
    // a start point that is not there) never matches.
    let digest = |dir: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(delta::tree_digest_command(&format!(
                "{dir} -mindepth 1 {}",
                delta::tree_find(None)
            )))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let empty = tempfile::tempdir().unwrap();
    let gone = empty.path().join("gone");
    assert_ne!(
        digest(empty.path().to_str().unwrap()),
        digest(gone.to_str().unwrap()),
        "an empty tree and a failed find look the same"
    );
}

/// `<inode> <size> <mtime> <path>` of every file of `dir` but the record itself, sorted:
/// what its `.shipit/verified` must say.
fn identities(dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg("find . -type f ! -path ./.shipit/verified ! -path ./.env ! -path ./.shipit/release.json -printf '%i %s %T@ %P\\n' | LC_ALL=C sort")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_delta_release_is_identical_to_a_full_unpack_and_moves_only_what_changed() {
    let tree = Tree::new();
    let v1 = tree.pack("1");
    let host = Host::new();
    let id1 = "20260101T000000Z-aaaaaaaa";
    host.stage_full(id1, &v1, true);
    assert!(
        host.root()
            .join(format!(".shipit/artifacts/{}.tar.gz", v1.sha256))
            .exists(),
        "a full upload is cached"
    );
    let record =
        |id: &str| std::fs::read_to_string(host.release(id).join(".shipit/verified")).unwrap();
    assert_eq!(record(id1), identities(&host.release(id1)));

    // v2: one file changed, one added, one removed, a mode changed, a link retargeted.
    tree.write("static/a/file-007.txt", "changed\n");
    tree.write("static/new.txt", "new\n");
    std::fs::remove_file(tree.path("gone-later.txt")).unwrap();
    tree.chmod("conf/with space.toml", 0o600);
    std::fs::remove_file(tree.path("link")).unwrap();
    symlink("static/a/file-002.txt", tree.path("link")).unwrap();
    let v2 = tree.pack("2");

    for (i, link) in [false, true].into_iter().enumerate() {
        let d = delta::build(&v2, &v1.manifest, &[], link).unwrap();
        // 200 assets, bin/app, conf/-leading-dash, B/x,y&z.txt and N/odd \1.txt reused;
        // 007 changed, the mode change and the new file sent (the manifest too).
        assert_eq!(d.reused, 203, "reused");
        assert_eq!(d.sent, 4, "sent");
        assert!(d.len() * 5 < v2.size, "{} of {}", d.len(), v2.size);
        assert_eq!(d.reuse_gz.is_empty(), link, "hardlink: the archive links");

        let id2 = format!("20260101T00000{}Z-bbbbbbbb", i + 1);
        let stdout = host.stage(&id2, &v2, delta_source(id1, &d), &delta_bytes(&d));
        assert!(stdout.contains("@@staged"), "{stdout}");
        assert!(!stdout.contains("@@delta-mismatch"), "{stdout}");
        assert_eq!(
            fingerprint(&host.release(&id2)),
            fingerprint(full_unpack(&v2).path())
        );
        let inode = |id: &str, file: &str| {
            std::fs::metadata(host.release(id).join(file))
                .unwrap()
                .ino()
        };
        for file in ["static/a/file-100.txt", "B/x,y&z.txt", "N/odd \\1.txt"] {
            assert_eq!(
                inode(&id2, file) == inode(id1, file),
                link,
                "{file}, hardlink: {link}"
            );
        }
        assert_ne!(
            inode(&id2, "static/a/file-007.txt"),
            inode(id1, "static/a/file-007.txt")
        );
        if link {
            // The new release's record lists its files as they are: the next delta's base.
            assert_eq!(record(&id2), identities(&host.release(&id2)));
        } else {
            assert!(!host.release(&id2).join(".shipit/verified").exists());
        }
        // The live release is as it was: linking never changes its files.
        assert_eq!(record(id1), identities(&host.release(id1)));
        assert_eq!(
            fingerprint(&host.release(id1)),
            fingerprint(full_unpack(&v1).path())
        );
        assert!(host.leftovers().is_empty(), "{:?}", host.leftovers());
    }
}

/// What a delta against a changed live release says: `@@delta-mismatch`, with no
/// release and nothing half-made left behind.
fn turned_down(host: &Host, id: &str, v: &Artifact, base: &str, d: &delta::Delta, why: &str) {
    let stdout = host.stage(id, v, delta_source(base, d), &delta_bytes(d));
    assert!(
        stdout.contains("@@delta-mismatch") && stdout.contains(why),
        "expected a mismatch saying {why:?}: {stdout}"
    );
    assert!(!stdout.contains("@@staged"));
    assert!(!host.release(id).exists());
    assert!(host.leftovers().is_empty(), "{:?}", host.leftovers());
}

#[test]
fn a_tampered_base_release_is_caught_and_nothing_is_left_behind() {
    let tree = Tree::new();
    let v1 = tree.pack("1");
    tree.write("static/new.txt", "new\n");
    let v2 = tree.pack("2");
    let id1 = "20260101T000000Z-aaaaaaaa";
    let id2 = "20260101T000001Z-bbbbbbbb";

    for link in [false, true] {
        let d = delta::build(&v2, &v1.manifest, &[], link).unwrap();
        // Each case on a host whose live release is v1, staged whole, then tampered with.
        let case = |tamper: &dyn Fn(&Host, &Path), why: &str| {
            let host = Host::new();
            host.stage_full(id1, &v1, link);
            tamper(&host, &host.release(id1).join("static/a/file-050.txt"));
            turned_down(&host, id2, &v2, id1, &d, why);
            // The full artifact then stages fine.
            host.stage_full(id2, &v2, link);
        };
        let changed = if link {
            "changed since it was made"
        } else {
            "file contents differ"
        };

        // A file edited in place, same size: its content (copy) or its mtime (hardlink)
        // gives it away.
        case(
            &|_, victim| {
                let text = std::fs::read_to_string(victim).unwrap();
                std::fs::write(victim, text.replacen("file", "FILE", 1)).unwrap();
                assert_eq!(std::fs::read_to_string(victim).unwrap().len(), text.len());
            },
            changed,
        );

        // A mode changed in place: the tree check catches it.
        case(
            &|_, victim| {
                std::fs::set_permissions(victim, std::fs::Permissions::from_mode(0o666)).unwrap()
            },
            "file tree",
        );

        // A reused file deleted: caught while linking or copying.
        case(
            &|_, victim| std::fs::remove_file(victim).unwrap(),
            if link {
                "making the release from release"
            } else {
                "taking the unchanged files"
            },
        );

        if link {
            // Put back byte for byte as a new file, its mtime set back: for a hard link,
            // not the file that was verified (another inode: the old one is kept alive
            // by a link elsewhere, so its number cannot come back).
            case(
                &|host, victim| {
                    let text = std::fs::read(victim).unwrap();
                    let mtime = std::fs::metadata(victim).unwrap().modified().unwrap();
                    std::fs::hard_link(victim, host.root().join("old-inode")).unwrap();
                    std::fs::remove_file(victim).unwrap();
                    std::fs::write(victim, &text).unwrap();
                    std::fs::File::options()
                        .write(true)
                        .open(victim)
                        .unwrap()
                        .set_modified(mtime)
                        .unwrap();
                },
                "changed since it was made",
            );

            // The live release's manifest (which chose the files to link) edited.
            case(
                &|host, _| {
                    let manifest = host.release(id1).join(".shipit/manifest.json");
                    let m = std::fs::read_to_string(&manifest).unwrap();
                    std::fs::write(
                        &manifest,
                        m.replace("\"version\":\"1\"", "\"version\":\"9\""),
                    )
                    .unwrap();
                },
                ".shipit/manifest.json",
            );

            // No record at all (made with `delta: copy` or `off`).
            case(
                &|host, _| {
                    std::fs::remove_file(host.release(id1).join(".shipit/verified")).unwrap()
                },
                "has no record of its files",
            );
        }
    }
}

#[test]
fn a_truncated_full_upload_leaves_no_release_and_no_cached_artifact() {
    let tree = Tree::new();
    let v1 = tree.pack("1");
    let host = Host::new();
    let mut bytes = std::fs::read(&v1.path).unwrap();
    bytes.truncate(bytes.len() - 10);
    let out = host.try_stage(
        "20260101T000000Z-aaaaaaaa",
        &v1,
        Source::Full { cksum: &cksum(&v1) },
        &bytes,
        true,
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
    let a = tree.pack("1");
    let host = Host::new();
    host.stage_full("r1", &a, false);
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
    let survey = |unchanged: Option<(&str, &str)>| host.survey(&a, &cksum, unchanged);
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
    let v1 = tree.pack("1");
    tree.write("static/a/file-007.txt", "changed\n");
    let v2 = tree.pack("2");
    let on_disk = std::fs::read(&v2.path).unwrap();
    assert_eq!(
        v2.bytes.as_deref(),
        Some(&on_disk[..]),
        "pack keeps what it wrote"
    );
    let good = delta::build(&v2, &v1.manifest, &[], false).unwrap();
    assert_eq!(good.sent, 2, "the changed file and the new manifest");

    // `inspect` for a deploy keeps the tar stream it inflated (the file gunzipped), and a
    // delta cut from it is the same delta, in either mode.
    assert!(artifact::inspect(&v2.path).unwrap().tar.is_none());
    let inspected = artifact::inspect_keeping_tar(&v2.path, true).unwrap();
    let tar = inspected.tar.as_ref().expect("the tar stream is kept");
    let mut gunzipped = Vec::new();
    flate2::read::MultiGzDecoder::new(&on_disk[..])
        .read_to_end(&mut gunzipped)
        .unwrap();
    let mut kept = Vec::new();
    tar.reader().read_to_end(&mut kept).unwrap();
    assert!(kept == gunzipped, "the kept stream is the file gunzipped");
    for link in [false, true] {
        let from_file = delta::build(&v2, &v1.manifest, &[], link).unwrap();
        let from_tar = delta::build(&inspected, &v1.manifest, &[], link).unwrap();
        assert_eq!(from_tar.archive, from_file.archive);
        assert_eq!(from_tar.tree_sha256, from_file.tree_sha256);
        assert_eq!(from_tar.content_sha256, from_file.content_sha256);
    }

    // The file is replaced (same size, one byte flipped in the middle) after the check.
    let mut swapped = on_disk.clone();
    let mid = swapped.len() / 2;
    swapped[mid] ^= 0x55;
    std::fs::write(&v2.path, &swapped).unwrap();
    let held = delta::build(&v2, &v1.manifest, &[], false).unwrap();
    assert_eq!(held.archive, good.archive, "built from the held bytes");
    assert_eq!(held.content_sha256, good.content_sha256);
    let streamed = artifact::Artifact {
        bytes: None,
        ..v2.clone()
    };
    let err = delta::build(&streamed, &v1.manifest, &[], false).unwrap_err();
    assert!(
        err.to_string().contains("changed since it was checked"),
        "{err}"
    );
    std::fs::write(&v2.path, &on_disk).unwrap();
    assert!(delta::build(&streamed, &v1.manifest, &[], false).is_ok());
}

/// With `delta: hardlink` every release gets its record, however it was made (a whole
/// upload, the cached artifact, a delta), and the survey says when the live release has
/// one: without it, a hard-linked delta has nothing to check its links against.
#[test]
fn hardlink_releases_record_their_files_and_the_survey_says_so() {
    let tree = Tree::new();
    let a = tree.pack("1");
    let host = Host::new();
    let record = |id: &str| std::fs::read_to_string(host.release(id).join(".shipit/verified"));
    host.stage_full("r1", &a, false);
    assert!(record("r1").is_err(), "no record without delta: hardlink");
    host.stage_full("r2", &a, true);
    assert_eq!(record("r2").unwrap(), identities(&host.release("r2")));
    let stdout =
        String::from_utf8(host.try_stage("r3", &a, Source::Cached, b"", true).stdout).unwrap();
    assert!(stdout.contains("@@staged"), "{stdout}");
    assert_eq!(record("r3").unwrap(), identities(&host.release("r3")));
    assert_eq!(
        record("r3").unwrap().lines().count(),
        a.manifest.files().count() + 1
    );

    let other = tree.pack("2");
    let cksum = cksum(&other);
    let survey = |live: &str| {
        let _ = std::fs::remove_file(host.root().join("current"));
        symlink(format!("releases/{live}"), host.root().join("current")).unwrap();
        survey::parse_survey(&host.survey(&other, &cksum, None))
    };
    let s = survey("r1");
    assert!(s.base_manifest.is_some() && !s.base_verified);
    let s = survey("r3");
    assert!(s.base_manifest.is_some() && s.base_verified);
}
