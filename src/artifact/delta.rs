//! Delta deploys: a host already has the files of its live release, listed with their
//! sha256 in that release's manifest. A delta holds only what that host lacks: the new
//! and changed files (plus every directory and symlink, which cost nothing), copied out
//! of the artifact entry by entry: headers as they are, file data decompressed and
//! compressed once into the smaller archive. Unchanged data is never compressed again.
//!
//! Two shapes, one per `delta` mode:
//!
//! - `copy`: with the archive travels the list of files to copy from the live release,
//!   and two digests: of the tree a full unpack gives (names, types, modes, file sizes,
//!   link targets; see [`tree_find`]) and of every file's content as POSIX `cksum` prints
//!   it (CRC-32 and size). The host
//!   copies, unpacks, computes both with `find`, `sort`, `cksum` and `sha256sum`, and
//!   turns the release down unless both match, before anything else.
//! - `hardlink`: the archive itself holds a hard-link entry for every unchanged file
//!   (`N/<path>` -> `B/<path>`, which the host's `tar --transform` maps to the new and
//!   the live release), so one `tar` makes the whole release. A linked file *is* the live
//!   release's inode, whose content was verified when that release was made; the host
//!   checks it is still that file, unmodified (inode, size and mtime as recorded in the
//!   live release's `.shipit/verified`), instead of reading it again. Only the files in
//!   the archive are checked by content, so the content digest covers only them.
//!
//! Why `cksum` rather than each file's sha256 from the manifest: the check is there to
//! catch a live release edited in place or a damaged disk, not an attacker (who could
//! write to the release directory could change the running app anyway). `sha256sum`
//! hashes ~370 MB/s on the test machines, so checking a 100 MB release cost 0.27 s of CPU
//! per host, more than the rest of a hard-linked delta; `cksum` (carry-less multiply
//! CRC in coreutils 9) costs next to nothing. The bytes on the wire are covered by SSH's
//! MAC and the archive's by gzip's CRC.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};

use sha2::{Digest, Sha256};

use super::cksum::Cksum;
use super::gzip::ParallelGz;
use super::manifest::{EntryType, Manifest, ManifestEntry};

/// What one host is sent instead of the artifact, and what it says of itself.
#[derive(Debug, Clone)]
pub struct Delta {
    /// `copy`: the paths of the files to take from the live release, NUL-separated,
    /// gzipped. Empty for `hardlink` (the archive links them).
    pub reuse_gz: Vec<u8>,
    /// The new and changed files, every directory and symlink (for `hardlink` also a
    /// link entry per unchanged file, every name under `N/`): a tar.gz.
    pub archive: Vec<u8>,
    /// sha256 of the sorted tree listing a full unpack gives (see [`tree_find`]).
    pub tree_sha256: String,
    /// `copy`: sha256 of `<crc> <size> <path>\n` for every file, sorted by path: what
    /// `xargs -0 cksum --` prints for them sorted with `LC_ALL=C sort -z`. Empty for
    /// `hardlink`, which reads no file back (see the module's doc).
    pub content_sha256: String,
    /// Made for `delta: hardlink`.
    pub link: bool,
    /// Files taken from the live release.
    pub reused: usize,
    /// Files in the archive.
    pub sent: usize,
}

impl Delta {
    /// Bytes on the wire: the list and the archive.
    pub fn len(&self) -> u64 {
        (self.reuse_gz.len() + self.archive.len()) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why this artifact always travels whole, if it must. Names with a newline or a
/// backslash do not fit the host's line-based lists; a directory its owner cannot write
/// could not receive the files copied into it.
pub fn unsupported(new: &Manifest) -> Option<String> {
    new.entries.iter().find_map(|e| {
        if e.path.contains(['\n', '\\']) {
            Some(format!(
                "`{}` has a newline or a backslash in its name",
                e.path.escape_debug()
            ))
        } else if e.kind == EntryType::Dir && mode_of(e) & 0o200 == 0 {
            Some(format!(
                "the directory `{}` is not writable by its owner",
                e.path
            ))
        } else {
            None
        }
    })
}

fn mode_of(e: &ManifestEntry) -> u32 {
    u32::from_str_radix(&e.mode, 8).unwrap_or(0)
}

fn under(path: &str, shared: &[String]) -> bool {
    shared.iter().any(|s| {
        let s = s.trim_matches('/');
        path == s || path.strip_prefix(s).is_some_and(|r| r.starts_with('/'))
    })
}

/// The files of `new` the host can take from the release `old` describes: regular files
/// in both with the same path, sha256 and mode, not under a shared path (those become
/// links to `shared/` on the host, so the live release holds no copy of them).
pub fn reusable<'a>(old: &Manifest, new: &'a Manifest, shared: &[String]) -> Vec<&'a str> {
    let had: HashSet<(&str, &str, &str)> = old
        .files()
        .filter_map(|e| Some((e.path.as_str(), e.sha256.as_deref()?, e.mode.as_str())))
        .collect();
    new.files()
        .filter(|e| !under(&e.path, shared))
        .filter(|e| {
            e.sha256
                .as_deref()
                .is_some_and(|sha| had.contains(&(e.path.as_str(), sha, e.mode.as_str())))
        })
        .map(|e| e.path.as_str())
        .collect()
}

/// A line of a release's `.shipit/verified`, as `find -printf` writes it: inode, size,
/// mtime (to the nanosecond, where the filesystem has it), path.
pub const VERIFIED_LINE: &str = "%i %s %T@ %P\\n";

/// What of a release's tree the host lists, as `find <dir> -mindepth 1` arguments: per
/// entry a line (see [`file_line`]), files with their size, and told apart by their link
/// count: `f` for a file of one link (unpacked or copied), `h` for one with more (a hard
/// link into the live release). With `linked`, the lines of `.shipit/verified` for the
/// `h` files also go to that file.
pub fn tree_find(linked: Option<&str>) -> String {
    let also = linked
        .map(|path| format!(" -fprintf {path} '{VERIFIED_LINE}'"))
        .unwrap_or_default();
    format!(
        "\\( -type f \\( -links 1 -printf 'f %m %s %P\\n' -o -printf 'h %m %s %P\\n'{also} \\) -o \
         -printf '%y %m %P -> %l\\n' \\)"
    )
}

/// The host's command for the digest of a tree: `find` (its arguments built with
/// [`tree_find`]), then `find:<its exit status>`, sorted, through `sha256sum`. A `find`
/// that fails (an unreadable directory, an output it cannot write) changes the digest.
pub fn tree_digest_command(find_args: &str) -> String {
    format!("{{ find {find_args}; echo \"find:$?\"; }} | LC_ALL=C sort | sha256sum")
}

/// The line [`tree_digest_command`] adds for a `find` that succeeded.
const FIND_OK: &str = "find:0\n";

/// A file's line of the tree listing, as [`tree_find`] prints it: `f` (or `h` when
/// `linked`), permission bits in octal, size, path.
pub fn file_line(mode: u32, size: u64, path: &str, linked: bool) -> String {
    let y = if linked { 'h' } else { 'f' };
    format!("{y} {:o} {size} {path}\n", mode & 0o7777)
}

/// A directory's line of the tree listing: `d`, permission bits in octal, path.
pub fn dir_line(mode: u32, path: &str) -> String {
    format!("d {:o} {path} -> \n", mode & 0o7777)
}

/// A symlink's line of the tree listing: `l`, always 777, path, target.
pub fn symlink_line(path: &str, target: &str) -> String {
    format!("l 777 {path} -> {target}\n")
}

/// The sha256 of lines sorted bytewise (`LC_ALL=C sort`), as hex.
pub fn sorted_digest(mut lines: Vec<String>) -> String {
    lines.sort();
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
    }
    hex::encode(h.finalize())
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data)?;
    gz.finish()
}

/// The prefix of every name in a `hardlink` delta: the host maps it to the new release.
pub const NEW_PREFIX: &str = "N/";
/// The prefix of the hard-link targets: the host maps it to the live release.
pub const BASE_PREFIX: &str = "B/";

/// Build the delta of `artifact` (described by `new`) for a host whose live release
/// `old` describes, for `delta: hardlink` when `link`. Reads the artifact once; nothing is
/// written to disk.
pub fn build(
    artifact: &super::Artifact,
    old: &Manifest,
    shared: &[String],
    link: bool,
) -> io::Result<Delta> {
    // A delta is only ever made of the bytes `inspect` or `pack` vouched for: the tar
    // stream `inspect` kept, the artifact's bytes held in memory, or the file hashed as
    // it is read, never a file replaced since.
    if let Some(tar) = &artifact.tar {
        return cut(tar.reader(), artifact, old, shared, link).map(|(delta, _)| delta);
    }
    let source: Box<dyn Read> = match &artifact.bytes {
        Some(bytes) => Box::new(&bytes[..]),
        None => Box::new(BufReader::with_capacity(
            1 << 20,
            File::open(&artifact.path)?,
        )),
    };
    let stream = flate2::read::MultiGzDecoder::new(Sha256Reader {
        inner: source,
        hasher: artifact.bytes.is_none().then(Sha256::new),
    });
    let (delta, stream) = cut(stream, artifact, old, shared, link)?;
    let mut rest = stream.into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    if let Some(hasher) = rest.hasher
        && hex::encode(hasher.finalize()) != artifact.sha256
    {
        return Err(io::Error::other(format!(
            "`{}` changed since it was checked; run the deploy again",
            artifact.path.display()
        )));
    }
    Ok(delta)
}

/// The delta, cut from the artifact's tar `stream`; the stream is handed back after the
/// archive's end marker.
fn cut<R: Read>(
    stream: R,
    artifact: &super::Artifact,
    old: &Manifest,
    shared: &[String],
    link: bool,
) -> io::Result<(Delta, R)> {
    let new = &artifact.manifest;
    let reuse: HashSet<&str> = reusable(old, new, shared).into_iter().collect();
    let mut archive = tar::Archive::new(stream);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut out = tar::Builder::new(ParallelGz::new(Vec::new(), threads));
    let mut tree = Vec::new();
    let mut sums = Vec::new();
    let mut reuse_list = Vec::new();
    let mut sent = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| io::Error::other("an entry name is not UTF-8"))?;
        super::check_entry_path(&raw).map_err(|e| io::Error::other(e.to_string()))?;
        let path = raw
            .trim_end_matches('/')
            .trim_start_matches("./")
            .to_owned();
        // The root entry (`./`, if any) is not in the host's listing (`-mindepth 1`). A
        // `hardlink` delta is unpacked in `releases/`, its names mapped from `N/` to the new
        // release: the root would be `N/.`, so it is left out (the host makes the dir).
        let root = path.is_empty() || path == ".";
        if root && link {
            continue;
        }
        let name = if link {
            format!("{NEW_PREFIX}{raw}")
        } else {
            raw.clone()
        };
        let mut header = entry.header().clone();
        let mode = header.mode()?;
        match header.entry_type() {
            tar::EntryType::Directory => {
                if !root {
                    tree.push(dir_line(mode, &path));
                }
                out.append_data(&mut header, &name, io::empty())?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()?
                    .and_then(|t| t.to_str().map(str::to_owned))
                    .ok_or_else(|| io::Error::other(format!("`{path}` has no UTF-8 target")))?;
                tree.push(symlink_line(&path, &target));
                out.append_link(&mut header, &name, &target)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let reused = reuse.contains(path.as_str());
                let size = header.size()?;
                tree.push(file_line(mode, size, &path, link && reused));
                if link && reused {
                    // Its data is skipped, unread: the host links the live release's copy.
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    out.append_link(&mut header, &name, format!("{BASE_PREFIX}{path}"))?;
                    continue;
                }
                let mut reader = Cksum::new(&mut entry);
                if reused {
                    io::copy(&mut reader, &mut io::sink())?;
                    reuse_list.extend_from_slice(path.as_bytes());
                    reuse_list.push(0);
                } else {
                    out.append_data(&mut header, &name, &mut reader)?;
                    sent += 1;
                }
                if !link {
                    sums.push((path, reader.finish()));
                }
            }
            other => {
                return Err(io::Error::other(format!(
                    "`{path}` is a {other:?} entry; artifacts hold only files, directories and \
                     symlinks"
                )));
            }
        }
    }
    let rest = archive.into_inner();
    let archive = out.into_inner()?.finish()?;
    // Sorted by path, not by line: `sort -z` sorts the paths before sha256sum sees them.
    sums.sort();
    let content_sha256 = if link {
        String::new()
    } else {
        let mut content = Sha256::new();
        for (path, (crc, size)) in &sums {
            content.update(format!("{crc} {size} {path}\n").as_bytes());
        }
        hex::encode(content.finalize())
    };
    tree.push(FIND_OK.to_owned());
    let delta = Delta {
        reused: reuse.len(),
        sent,
        reuse_gz: if link { Vec::new() } else { gzip(&reuse_list)? },
        link,
        archive,
        tree_sha256: sorted_digest(tree),
        content_sha256,
    };
    Ok((delta, rest))
}

struct Sha256Reader<R> {
    inner: R,
    hasher: Option<Sha256>,
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryType, mode: &str, sha: Option<&str>) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            kind,
            mode: mode.into(),
            size: sha.map(|_| 1),
            sha256: sha.map(str::to_owned),
            target: None,
        }
    }

    fn manifest(entries: Vec<ManifestEntry>) -> Manifest {
        Manifest {
            format: 1,
            app: "a".into(),
            version: "1".into(),
            commit: None,
            entries,
        }
    }

    #[test]
    fn reusable_needs_same_path_sha_and_mode_and_skips_shared_paths() {
        let old = manifest(vec![
            entry("bin", EntryType::Dir, "0755", None),
            entry("bin/app", EntryType::File, "0755", Some("aa")),
            entry("conf", EntryType::File, "0644", Some("bb")),
            entry("mode", EntryType::File, "0644", Some("cc")),
            entry("log/x", EntryType::File, "0644", Some("dd")),
            entry("logs", EntryType::File, "0644", Some("ee")),
        ]);
        let new = manifest(vec![
            entry("bin", EntryType::Dir, "0755", None),
            entry("bin/app", EntryType::File, "0755", Some("aa")),
            entry("conf", EntryType::File, "0644", Some("b2")),
            entry("mode", EntryType::File, "0600", Some("cc")),
            entry("log/x", EntryType::File, "0644", Some("dd")),
            entry("logs", EntryType::File, "0644", Some("ee")),
            entry("new", EntryType::File, "0644", Some("ff")),
        ]);
        assert_eq!(
            reusable(&old, &new, &["log".into()]),
            vec!["bin/app", "logs"]
        );
    }

    #[test]
    fn unsupported_names_and_read_only_directories() {
        let ok = manifest(vec![entry("a b/c", EntryType::File, "0644", Some("aa"))]);
        assert_eq!(unsupported(&ok), None);
        let nl = manifest(vec![entry("a\nb", EntryType::File, "0644", Some("aa"))]);
        assert!(unsupported(&nl).unwrap().contains("newline"));
        let ro = manifest(vec![entry("ro", EntryType::Dir, "0555", None)]);
        assert!(unsupported(&ro).unwrap().contains("not writable"));
    }

    #[test]
    fn cksum_matches_posix_cksum() {
        let sum = |data: &[u8]| {
            let mut r = Cksum::new(data);
            io::copy(&mut r, &mut io::sink()).unwrap();
            r.finish()
        };
        // Values printed by GNU cksum 9.1.
        assert_eq!(sum(b""), (4294967295, 0));
        assert_eq!(sum(b"hello\n"), (3015617425, 6));
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("cksum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&big)?;
                c.wait_with_output()
            })
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (crc, size) = sum(&big);
        assert_eq!(text.trim(), format!("{crc} {size}"));
    }

    #[test]
    fn tree_lines_match_find_printf() {
        assert_eq!(file_line(0o100644, 12, "a/b c", false), "f 644 12 a/b c\n");
        assert_eq!(file_line(0o100755, 0, "x", true), "h 755 0 x\n");
        assert_eq!(dir_line(0o4755, "d"), "d 4755 d -> \n");
        assert_eq!(symlink_line("l", "../x"), "l 777 l -> ../x\n");
    }
}
