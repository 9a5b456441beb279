//! Parallel, deterministic gzip.
//!
//! The tar stream is cut into fixed-size blocks, each compressed on its own as a complete
//! gzip member, and the members are written in order. Concatenated members are one valid
//! gzip file (RFC 1952 section 2.2; GNU gzip and tar read them whole), so the host needs
//! nothing special. Block boundaries depend only on the input, so the output is
//! byte-identical for the same input whatever the number of threads.
//!
//! A block that does not compress (already-compressed media, binaries with packed
//! sections) is detected from a cheap level-1 trial on a sample and stored, which keeps
//! the time spent on it near zero and its size what gzip -6 would give anyway.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::thread;

use flate2::{Compression, GzBuilder};

pub const BLOCK: usize = 1 << 20;
const LEVEL: u32 = 6;
const SAMPLE: usize = 64 << 10;

/// Compress one block as a complete gzip member.
pub fn member(block: &[u8]) -> Vec<u8> {
    let level = if incompressible(block) { 0 } else { LEVEL };
    let mut out = Vec::with_capacity(block.len() / 2 + 64);
    let mut enc = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(&mut out, Compression::new(level));
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(block);
    let _ = enc.finish();
    out
}

fn incompressible(block: &[u8]) -> bool {
    if block.len() < 4096 {
        return false;
    }
    let sample = &block[..block.len().min(SAMPLE)];
    let mut enc =
        flate2::write::DeflateEncoder::new(Vec::with_capacity(sample.len()), Compression::new(1));
    let _ = enc.write_all(sample);
    enc.finish()
        .map(|c| c.len() * 100 >= sample.len() * 98)
        .unwrap_or(false)
}

/// A writer that gzips what it is given on `threads` threads and writes the members, in
/// order, to `out`.
pub struct ParallelGz<W: Write + Send> {
    buf: Vec<u8>,
    next: u64,
    to_workers: Option<mpsc::SyncSender<(u64, Vec<u8>)>>,
    workers: Vec<thread::JoinHandle<()>>,
    writer: Option<thread::JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ParallelGz<W> {
    pub fn new(out: W, threads: usize) -> Self {
        let threads = threads.max(1);
        let (to_workers, from_main) = mpsc::sync_channel::<(u64, Vec<u8>)>(threads * 2);
        let from_main = std::sync::Arc::new(std::sync::Mutex::new(from_main));
        let (to_writer, from_workers) = mpsc::sync_channel::<(u64, Vec<u8>)>(threads * 2);
        let workers = (0..threads)
            .map(|_| {
                let rx = from_main.clone();
                let tx = to_writer.clone();
                thread::spawn(move || {
                    loop {
                        let job = rx.lock().map(|r| r.recv());
                        let Ok(Ok((i, block))) = job else { return };
                        if tx.send((i, member(&block))).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        drop(to_writer);
        let writer = thread::spawn(move || {
            let mut out = out;
            let mut pending = BTreeMap::new();
            let mut next = 0u64;
            for (i, data) in from_workers {
                pending.insert(i, data);
                while let Some(data) = pending.remove(&next) {
                    out.write_all(&data)?;
                    next += 1;
                }
            }
            if !pending.is_empty() {
                return Err(io::Error::other("a compression thread stopped early"));
            }
            Ok(out)
        });
        ParallelGz {
            buf: Vec::with_capacity(BLOCK),
            next: 0,
            to_workers: Some(to_workers),
            workers,
            writer: Some(writer),
        }
    }

    fn send(&mut self, block: Vec<u8>) -> io::Result<()> {
        let tx = self
            .to_workers
            .as_ref()
            .ok_or_else(|| io::Error::other("already finished"))?;
        tx.send((self.next, block))
            .map_err(|_| io::Error::other("the output could not be written"))?;
        self.next += 1;
        Ok(())
    }

    /// Flush the last block, wait for every thread, and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() || self.next == 0 {
            let block = std::mem::take(&mut self.buf);
            self.send(block)?;
        }
        self.to_workers = None;
        for w in self.workers.drain(..) {
            w.join()
                .map_err(|_| io::Error::other("a compression thread panicked"))?;
        }
        let writer = self
            .writer
            .take()
            .ok_or_else(|| io::Error::other("already finished"))?;
        writer
            .join()
            .map_err(|_| io::Error::other("the writer thread panicked"))?
    }
}

impl<W: Write + Send + 'static> Write for ParallelGz<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK {
            let block = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
            self.send(block)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn gz(data: &[u8], threads: usize) -> Vec<u8> {
        let mut w = ParallelGz::new(Vec::new(), threads);
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        // Half text-like, half noise, so both block kinds occur.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        (0..len)
            .map(|i| {
                if (i / BLOCK).is_multiple_of(2) {
                    b"hello shipit "[i % 13]
                } else {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                }
            })
            .collect()
    }

    #[test]
    fn round_trips_and_is_identical_whatever_the_thread_count() {
        let data = sample(3 * BLOCK + 12345);
        let one = gz(&data, 1);
        assert_eq!(gunzip(&one), data);
        assert_eq!(gz(&data, 4), one);
    }

    #[test]
    fn empty_input_is_a_valid_gzip() {
        let out = gz(b"", 2);
        assert_eq!(gunzip(&out), b"");
        let mut cmd = std::process::Command::new("gzip")
            .args(["-dc"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        cmd.stdin.take().unwrap().write_all(&out).unwrap();
        assert!(cmd.wait_with_output().unwrap().status.success());
    }

    #[test]
    fn gnu_gzip_reads_every_member() {
        let data = sample(2 * BLOCK + 7);
        let out = gz(&data, 2);
        let mut cmd = std::process::Command::new("gzip")
            .args(["-dc"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = cmd.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&out));
        let output = cmd.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(output.status.success());
        assert_eq!(output.stdout, data);
    }

    #[test]
    fn noise_is_stored_not_squeezed() {
        let data = sample(2 * BLOCK);
        let noise = &data[BLOCK..];
        assert!(incompressible(noise));
        assert!(!incompressible(&data[..BLOCK]));
        // Stored costs a few bytes per 64 KiB, no more.
        assert!(member(noise).len() < noise.len() + noise.len() / 1000);
    }
}
