//! Artifacts: the gzip'd tar that a deploy ships.
//!
//! `pack` turns a package root plus include/exclude rules into
//! `dist/<app>-<version>.tar.gz` and its `.sha256`, byte-identical for identical inputs:
//! entries sorted, owners 0, one mtime for everything, no host- or time-dependent bytes
//! in the tar or gzip headers. `inspect` reads an artifact back and applies the safe
//! unpack rules (no absolute paths, no `..`, no links out of the tree, every file matching
//! the manifest), so a bad artifact is refused before anything is uploaded.

pub mod cksum;
pub mod delta;
mod error;
pub mod gzip;
pub mod manifest;
pub mod native;
pub mod select;

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

pub use error::ArtifactError;
pub use manifest::{EntryType, Manifest, ManifestEntry};
pub use native::Native;
use select::{Entry, Kind};

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ArtifactError {
    let path = path.to_owned();
    move |source| ArtifactError::Io { what, path, source }
}

/// A packaged artifact on the local disk.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// What `cksum` prints for the file (`<crc> <size>`): how a host checks its copy.
    /// Computed while the file is written or inspected, never by a second read.
    pub cksum: String,
    pub manifest: Manifest,
    /// The artifact's bytes, kept by `pack` as it wrote them or by `inspect` as it read
    /// them, when it is at most [`HELD_MAX`]: a deploy sends exactly these to every host
    /// (one read of the file, never a file replaced since it was checked).
    pub bytes: Option<Held>,
    /// Its tar stream (the bytes gunzipped), kept by [`inspect_keeping_tar`] when it is at
    /// most [`HELD_MAX`]: deltas are cut from it without inflating the artifact again.
    pub tar: Option<HeldTar>,
    /// Its executable regular files built for a machine ([`native`]), sorted by path.
    pub natives: Vec<Native>,
}

/// Artifacts up to this size are held in memory once they are packed or inspected.
pub const HELD_MAX: u64 = 512 << 20;

/// An artifact's tar stream in memory, shared: the chunks the inflater made, in order.
#[derive(Clone)]
pub struct HeldTar(std::sync::Arc<Vec<Vec<u8>>>);

impl HeldTar {
    /// The whole stream, from its start.
    pub fn reader(&self) -> impl Read + '_ {
        ChunksReader {
            chunks: &self.0,
            next: 0,
            pos: 0,
        }
    }
}

impl std::fmt::Debug for HeldTar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len: usize = self.0.iter().map(Vec::len).sum();
        write!(f, "HeldTar({len} bytes)")
    }
}

struct ChunksReader<'a> {
    chunks: &'a [Vec<u8>],
    next: usize,
    pos: usize,
}

impl Read for ChunksReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(chunk) = self.chunks.get(self.next) {
            if self.pos < chunk.len() {
                let n = buf.len().min(chunk.len() - self.pos);
                buf[..n].copy_from_slice(&chunk[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            self.next += 1;
            self.pos = 0;
        }
        Ok(0)
    }
}

/// An artifact's bytes in memory, shared.
#[derive(Clone)]
pub struct Held(std::sync::Arc<Vec<u8>>);

#[cfg(test)]
impl Held {
    /// Bytes held as if `pack` had written them (tests of the phases and the rollout).
    pub fn for_tests(bytes: Vec<u8>) -> Held {
        Held(std::sync::Arc::new(bytes))
    }
}

impl std::ops::Deref for Held {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Held({} bytes)", self.0.len())
    }
}

pub struct PackRequest<'a> {
    pub root: &'a Path,
    pub include: &'a [String],
    pub exclude: &'a [String],
    pub app: &'a str,
    pub version: &'a str,
    pub commit: Option<&'a str>,
    /// Seconds since the epoch, stamped on every entry.
    pub mtime: u64,
    pub out_dir: &'a Path,
    /// Called with the number of input bytes packed so far, and once with the total first.
    pub progress: &'a (dyn Fn(Progress) + Sync),
}

#[derive(Debug, Clone, Copy)]
pub enum Progress {
    Total(u64),
    Done(u64),
}

pub fn file_name(app: &str, version: &str) -> String {
    format!("{app}-{version}.tar.gz")
}

pub fn pack(req: &PackRequest) -> Result<Artifact, ArtifactError> {
    let entries = select::select(req.root, req.include, req.exclude)?;
    let hashes = hash_files(&entries)?;
    let manifest = Manifest {
        format: manifest::FORMAT,
        app: req.app.to_owned(),
        version: req.version.to_owned(),
        commit: req.commit.map(str::to_owned),
        entries: entries
            .iter()
            .zip(&hashes)
            .map(|(e, h)| ManifestEntry {
                path: e.path.clone(),
                kind: match e.kind {
                    Kind::Dir => EntryType::Dir,
                    Kind::File { .. } => EntryType::File,
                    Kind::Symlink { .. } => EntryType::Symlink,
                },
                mode: manifest::mode_string(e.mode),
                size: match e.kind {
                    Kind::File { size } => Some(size),
                    _ => None,
                },
                sha256: h.clone(),
                target: match &e.kind {
                    Kind::Symlink { target } => Some(target.clone()),
                    _ => None,
                },
            })
            .collect(),
    };
    let total: u64 = entries
        .iter()
        .map(|e| {
            if let Kind::File { size } = e.kind {
                size
            } else {
                0
            }
        })
        .sum();
    (req.progress)(Progress::Total(total));

    std::fs::create_dir_all(req.out_dir).map_err(io_err("cannot create", req.out_dir))?;
    let name = file_name(req.app, req.version);
    let final_path = req.out_dir.join(&name);
    let tmp_path = req
        .out_dir
        .join(format!(".{name}.{}.tmp", std::process::id()));
    let mut natives = Vec::new();
    let result = write_archive(&tmp_path, &entries, &hashes, &manifest, req, &mut natives);
    let (sha256, size, cksum, bytes) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(e);
        }
    };
    std::fs::rename(&tmp_path, &final_path).map_err(io_err("cannot write", &final_path))?;
    let sum_path = req.out_dir.join(format!("{name}.sha256"));
    std::fs::write(&sum_path, format!("{sha256}  {name}\n"))
        .map_err(io_err("cannot write", &sum_path))?;
    Ok(Artifact {
        path: final_path,
        sha256,
        size,
        cksum,
        manifest,
        bytes,
        tar: None,
        natives,
    })
}

/// sha256 of every regular file, on all cores.
fn hash_files(entries: &[Entry]) -> Result<Vec<Option<String>>, ArtifactError> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let chunk = entries.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = entries
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|e| match e.kind {
                            Kind::File { .. } => hash_file(&e.source).map(Some),
                            _ => Ok(None),
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(entries.len());
        for h in handles {
            let part = h
                .join()
                .map_err(|_| ArtifactError::Invalid("a hashing thread panicked".into()))??;
            all.extend(part);
        }
        Ok(all)
    })
}

pub fn hash_file(path: &Path) -> Result<String, ArtifactError> {
    let mut file = File::open(path).map_err(io_err("cannot read", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = file.read(&mut buf).map_err(io_err("cannot read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A `Write` that only hashes (and keeps the first bytes, for [`native`]).
struct HashSink(Sha256, native::Head);

impl Write for HashSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.update(data);
        self.1.see(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts and hashes what passes through to the file, and keeps it while it is small
/// enough to hold ([`HELD_MAX`]).
struct HashingFile {
    file: io::BufWriter<File>,
    hasher: Sha256,
    cksum: cksum::CksumDigest,
    len: u64,
    kept: Option<Vec<u8>>,
}

impl Write for HashingFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.file.write(data)?;
        self.hasher.update(&data[..n]);
        self.cksum.update(&data[..n]);
        self.len += n as u64;
        if self.len > HELD_MAX {
            self.kept = None;
        } else if let Some(k) = &mut self.kept {
            k.extend_from_slice(&data[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Hashes what is read, to check a file did not change between hashing and packing.
struct HashingReader<'a, R> {
    inner: R,
    hasher: Sha256,
    head: native::Head,
    read: u64,
    progress: &'a (dyn Fn(Progress) + Sync),
    done: &'a mut u64,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.head.see(&buf[..n]);
        self.read += n as u64;
        *self.done += n as u64;
        if self.read % (4 << 20) < n as u64 || n == 0 {
            (self.progress)(Progress::Done(*self.done));
        }
        Ok(n)
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn write_archive(
    tmp: &Path,
    entries: &[Entry],
    hashes: &[Option<String>],
    manifest: &Manifest,
    req: &PackRequest,
    natives: &mut Vec<Native>,
) -> Result<(String, u64, String, Option<Held>), ArtifactError> {
    let file = File::create(tmp).map_err(io_err("cannot create", tmp))?;
    let sink = HashingFile {
        file: io::BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        cksum: cksum::CksumDigest::default(),
        len: 0,
        kept: Some(Vec::new()),
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut tar = tar::Builder::new(gzip::ParallelGz::new(sink, threads));
    let werr = io_err("cannot write", tmp);

    let manifest_bytes = manifest.to_bytes();
    // The manifest's own entries take their place in the sorted order.
    enum Item<'a> {
        Disk(&'a Entry, &'a Option<String>),
        ShipitDir,
        Manifest,
    }
    let mut items: Vec<(&str, Item)> = entries
        .iter()
        .zip(hashes)
        .map(|(e, h)| (e.path.as_str(), Item::Disk(e, h)))
        .collect();
    items.push((".shipit", Item::ShipitDir));
    items.push((manifest::PATH, Item::Manifest));
    items.sort_by(|a, b| a.0.cmp(b.0));

    let mut done = 0u64;
    for (path, item) in items {
        let result = match item {
            Item::ShipitDir => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0, req.mtime);
                tar.append_data(&mut h, format!("{path}/"), io::empty())
            }
            Item::Manifest => {
                let mut h = header(
                    tar::EntryType::Regular,
                    0o644,
                    manifest_bytes.len() as u64,
                    req.mtime,
                );
                tar.append_data(&mut h, path, manifest_bytes.as_slice())
            }
            Item::Disk(e, hash) => match &e.kind {
                Kind::Dir => {
                    let mut h = header(tar::EntryType::Directory, e.mode, 0, req.mtime);
                    tar.append_data(&mut h, format!("{path}/"), io::empty())
                }
                Kind::Symlink { target } => {
                    let mut h = header(tar::EntryType::Symlink, e.mode, 0, req.mtime);
                    tar.append_link(&mut h, path, target)
                }
                Kind::File { size } => {
                    let f = File::open(&e.source).map_err(io_err("cannot read", &e.source))?;
                    let mut reader = HashingReader {
                        inner: BufReader::with_capacity(256 << 10, f).take(*size),
                        hasher: Sha256::new(),
                        head: native::Head::default(),
                        read: 0,
                        progress: req.progress,
                        done: &mut done,
                    };
                    let mut h = header(tar::EntryType::Regular, e.mode, *size, req.mtime);
                    tar.append_data(&mut h, path, &mut reader)
                        .map_err(io_err("cannot write", tmp))?;
                    let seen = hex::encode(std::mem::take(&mut reader.hasher).finalize());
                    natives.extend(reader.head.native(path, e.mode));
                    if reader.read != *size || hash.as_deref() != Some(seen.as_str()) {
                        return Err(ArtifactError::Invalid(format!(
                            "`{path}` changed while it was being packaged; run the command again \
                             once the build is finished"
                        )));
                    }
                    Ok(())
                }
            },
        };
        result.map_err(io_err("cannot write", tmp))?;
    }
    let gz = tar.into_inner().map_err(io_err("cannot write", tmp))?;
    let mut sink = gz.finish().map_err(werr)?;
    sink.flush().map_err(io_err("cannot write", tmp))?;
    sink.file
        .get_ref()
        .sync_all()
        .map_err(io_err("cannot write", tmp))?;
    Ok((
        hex::encode(sink.hasher.finalize()),
        sink.len,
        sink.cksum.text(),
        sink.kept.map(|k| Held(std::sync::Arc::new(k))),
    ))
}

/// Check that an entry name can be unpacked below a release directory.
pub fn check_entry_path(path: &str) -> Result<(), ArtifactError> {
    if path.starts_with('/') {
        return Err(ArtifactError::Escape(format!(
            "the archive holds the absolute path `{path}`"
        )));
    }
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(ArtifactError::Escape(format!(
                    "the archive holds `{path}`, which climbs out with `..`"
                )));
            }
        }
    }
    Ok(())
}

/// Read an artifact back, check it against the safe unpack rules and its own manifest,
/// and return what it is. Nothing is written anywhere.
///
/// Three stages on three threads, chained by bounded channels: one reads the file and
/// hashes (sha256, cksum) its bytes; one inflates them to the end of the gzip stream (so
/// its CRC is checked and trailing garbage refused, as the host's `gzip -dc` would); the
/// caller's thread walks the tar and hashes every entry. The inflate is the longest
/// stage, so inspecting costs about one inflate of the artifact (0.28 s -> 0.13 s for the
/// benchmark's 75 MB): the wait before a `deploy --artifact` connects.
pub fn inspect(path: &Path) -> Result<Artifact, ArtifactError> {
    inspect_keeping_tar(path, false)
}

/// [`inspect`], keeping the tar stream it inflates ([`Artifact::tar`]) when `keep_tar`:
/// for a deploy that may cut deltas from it. The chunks the inflater made are kept as
/// they are, not copied.
pub fn inspect_keeping_tar(path: &Path, keep_tar: bool) -> Result<Artifact, ArtifactError> {
    let file = File::open(path).map_err(io_err("cannot read", path))?;
    let size = file.metadata().map_err(io_err("cannot read", path))?.len();
    let corrupt = |what: String| {
        ArtifactError::Corrupt(format!(
            "`{}` is not a valid artifact: {what}",
            path.display()
        ))
    };
    let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
    let (tar_tx, tar_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
    std::thread::scope(|scope| {
        let keep = (size <= HELD_MAX).then_some(size as usize);
        let reader = scope.spawn(move || read_and_hash(file, keep, raw_tx));
        let inflater = scope.spawn(move || inflate(ChannelReader::new(raw_rx), tar_tx));
        // Each stage stops when the next one hangs up, so an early error anywhere ends
        // them all.
        let mut stream = ChannelReader::new(tar_rx);
        stream.kept = keep_tar.then(|| (Vec::new(), 0));
        let walked = walk(&mut stream, &corrupt);
        let tar = stream.into_kept();
        let panicked = |_| ArtifactError::Invalid("an inspecting thread panicked".into());
        let inflated = inflater.join().map_err(panicked)?;
        let hashed = reader.join().map_err(panicked)?;
        // Report the cause: a read error cuts the gzip stream, which cuts the tar.
        let (sha256, cksum, bytes) = hashed.map_err(io_err("cannot read", path))?;
        inflated.map_err(|e| corrupt(e.to_string()))?;
        let (seen, manifest, natives) = walked?;
        let manifest =
            manifest.ok_or_else(|| corrupt(format!("it has no `{}`", manifest::PATH)))?;
        if seen != manifest.entries {
            let mismatch = seen
                .iter()
                .zip(&manifest.entries)
                .find(|(a, b)| a != b)
                .map(|(a, _)| a.path.clone())
                .unwrap_or_else(|| "the entry list".into());
            return Err(corrupt(format!(
                "its contents do not match its manifest (first difference: `{mismatch}`)"
            )));
        }
        Ok(Artifact {
            path: path.to_owned(),
            sha256,
            cksum,
            size,
            manifest,
            bytes,
            tar,
            natives,
        })
    })
}

/// The first stage of [`inspect`]: the sha256 and cksum of the file's bytes, and the
/// bytes themselves when `keep` says how many to expect (empty if the next stage hung up
/// first: its error is the one to report).
fn read_and_hash(
    mut file: File,
    keep: Option<usize>,
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
) -> io::Result<(String, String, Option<Held>)> {
    let mut hasher = Sha256::new();
    let mut cksum = cksum::CksumDigest::default();
    let mut kept = keep.map(Vec::with_capacity);
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0;
        while n < buf.len() {
            match file.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        buf.truncate(n);
        hasher.update(&buf);
        cksum.update(&buf);
        if let Some(k) = &mut kept {
            k.extend_from_slice(&buf);
            // A file that grew past what its size said is not held.
            if k.len() as u64 > HELD_MAX {
                kept = None;
            }
        }
        if tx.send(buf).is_err() {
            return Ok((String::new(), String::new(), None));
        }
    }
    Ok((
        hex::encode(hasher.finalize()),
        cksum.text(),
        kept.map(|k| Held(std::sync::Arc::new(k))),
    ))
}

/// The second stage of [`inspect`]: gunzip to the end of the stream.
fn inflate(raw: ChannelReader, tx: std::sync::mpsc::SyncSender<Vec<u8>>) -> io::Result<()> {
    let mut gz = flate2::read::MultiGzDecoder::new(raw);
    loop {
        let mut buf = vec![0u8; 256 << 10];
        let n = gz.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        buf.truncate(n);
        if tx.send(buf).is_err() {
            return Ok(());
        }
    }
}

/// A `Read` over the chunks a stage of [`inspect`] sends; with `kept`, it keeps them
/// (and their total) until they pass [`HELD_MAX`].
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
    kept: Option<(Vec<Vec<u8>>, u64)>,
}

impl ChannelReader {
    fn new(rx: std::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
            kept: None,
        }
    }

    fn keep(&mut self, chunk: Vec<u8>) {
        if let Some((chunks, total)) = &mut self.kept {
            *total += chunk.len() as u64;
            if *total > HELD_MAX {
                self.kept = None;
            } else if !chunk.is_empty() {
                chunks.push(chunk);
            }
        }
    }

    /// Everything read, when it was kept whole.
    fn into_kept(mut self) -> Option<HeldTar> {
        let last = std::mem::take(&mut self.chunk);
        self.keep(last);
        self.kept
            .map(|(chunks, _)| HeldTar(std::sync::Arc::new(chunks)))
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    let done = std::mem::replace(&mut self.chunk, chunk);
                    self.keep(done);
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What [`walk`] found: the entries, the manifest, the native executables.
type Walked = (Vec<ManifestEntry>, Option<Manifest>, Vec<Native>);

/// The third stage of [`inspect`]: every entry checked and hashed, sorted by path, and
/// the manifest found in the archive. Reads the stream to its end, so the inflater is
/// never left blocked.
fn walk(
    stream: &mut ChannelReader,
    corrupt: &dyn Fn(String) -> ArtifactError,
) -> Result<Walked, ArtifactError> {
    let mut seen: Vec<ManifestEntry> = Vec::new();
    let mut natives = Vec::new();
    let mut manifest: Option<Manifest> = None;
    {
        let mut archive = tar::Archive::new(&mut *stream);
        let entries = archive.entries().map_err(|e| corrupt(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| corrupt(e.to_string()))?;
            let raw_path = entry.path_bytes().into_owned();
            let name = String::from_utf8(raw_path)
                .map_err(|_| corrupt("an entry name is not UTF-8".into()))?;
            check_entry_path(&name)?;
            let name = name
                .trim_end_matches('/')
                .trim_start_matches("./")
                .to_owned();
            let mode = entry.header().mode().map_err(|e| corrupt(e.to_string()))?;
            let kind = entry.header().entry_type();
            if name == manifest::PATH {
                let mut bytes = Vec::new();
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| corrupt(e.to_string()))?;
                manifest = Some(
                    serde_json::from_slice(&bytes)
                        .map_err(|e| corrupt(format!("bad manifest: {e}")))?,
                );
                continue;
            }
            if name == ".shipit" && kind.is_dir() {
                continue;
            }
            // What `shipit package` never ships: the release's own `.env` and `.shipit/`
            // are written by shipit after the unpack, and a link there would redirect it.
            let top = name.split('/').next().unwrap_or_default();
            if top == ".env" || top == ".shipit" {
                return Err(ArtifactError::Escape(format!(
                    "the archive holds `{name}`, but `{top}` at the top of a release is reserved \
                     for shipit"
                )));
            }
            let mut me = ManifestEntry {
                path: name.clone(),
                kind: EntryType::Dir,
                mode: manifest::mode_string(mode),
                size: None,
                sha256: None,
                target: None,
            };
            match kind {
                tar::EntryType::Directory => {}
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut hasher = HashSink(Sha256::new(), native::Head::default());
                    let n =
                        io::copy(&mut entry, &mut hasher).map_err(|e| corrupt(e.to_string()))?;
                    me.kind = EntryType::File;
                    me.size = Some(n);
                    me.sha256 = Some(hex::encode(hasher.0.finalize()));
                    natives.extend(hasher.1.native(&name, mode));
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(|e| corrupt(e.to_string()))?
                        .and_then(|t| t.to_str().map(str::to_owned))
                        .ok_or_else(|| corrupt(format!("the link `{name}` has no UTF-8 target")))?;
                    select::check_link(&name, &target)?;
                    me.kind = EntryType::Symlink;
                    me.target = Some(target);
                }
                other => {
                    return Err(ArtifactError::Escape(format!(
                        "`{name}` is a {other:?} entry; artifacts may hold only files, directories \
                         and relative symlinks"
                    )));
                }
            }
            seen.push(me);
        }
    }
    let links = seen
        .iter()
        .filter_map(|e| Some((e.path.clone(), e.target.clone()?)))
        .collect();
    select::check_link_chains(&links)?;
    // The tar's end marker is followed by padding; read it all, so the inflater finishes.
    io::copy(stream, &mut io::sink()).map_err(|e| corrupt(e.to_string()))?;
    seen.sort_by(|a, b| a.path.cmp(&b.path));
    natives.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((seen, manifest, natives))
}
