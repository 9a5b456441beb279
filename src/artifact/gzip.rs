//! Parallel, deterministic gzip.
//!
//! The tar stream is cut into fixed-size blocks that are deflated on all cores at once, as
//! pigz does: each block is primed with the last 32 KiB of the block before it as a preset
//! dictionary and ends with a sync flush, so the raw deflate streams concatenate into one
//! gzip member that compresses as well as a serial run. The CRC is computed over the input
//! as it arrives. Block boundaries depend only on the input, so the output is
//! byte-identical for the same input whatever the number of threads.
//!
//! A block that does not compress (already-compressed media, packed binaries) is told
//! apart by a cheap level-1 trial on a sample and stored, which costs next to nothing and
//! is as small as gzip would make it anyway.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::thread;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

pub const BLOCK: usize = 1 << 20;
pub const LEVEL: u32 = 6;
const WINDOW: usize = 32 << 10;
const SAMPLE: usize = 64 << 10;
/// The gzip header: deflate, no flags, mtime 0, no extra flags, OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

struct Job {
    index: u64,
    block: Vec<u8>,
    dict: Vec<u8>,
    /// The gzip trailer (CRC32, ISIZE) for the last block; `None` for the others.
    trailer: Option<[u8; 8]>,
}

/// Raw deflate of one block: sync-flushed, or finished when it is the last.
fn deflate(block: &[u8], dict: &[u8], last: bool, level: u32) -> Vec<u8> {
    let level = if incompressible(block) { 0 } else { level };
    let mut c = Compress::new(Compression::new(level), false);
    if !dict.is_empty() {
        // Cannot fail on a fresh raw stream.
        let _ = c.set_dictionary(dict);
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(block.len() + block.len() / 64 + 128);
    loop {
        if out.len() == out.capacity() {
            out.reserve(64 << 10);
        }
        let consumed = c.total_in() as usize;
        let status = c.compress_vec(&block[consumed..], &mut out, flush);
        let all_in = c.total_in() as usize == block.len();
        match status {
            Ok(Status::StreamEnd) => break,
            Ok(_) if !last && all_in && out.len() < out.capacity() => break,
            Ok(_) => {}
            // Only reachable through misuse of the stream; stop rather than spin.
            Err(_) => break,
        }
    }
    out
}

fn incompressible(block: &[u8]) -> bool {
    if block.len() < 4096 {
        return false;
    }
    let sample = &block[..block.len().min(SAMPLE)];
    let mut c = Compress::new(Compression::new(1), false);
    let mut out = Vec::with_capacity(sample.len() + 1024);
    match c.compress_vec(sample, &mut out, FlushCompress::Finish) {
        Ok(Status::StreamEnd) => out.len() * 100 >= sample.len() * 98,
        _ => true,
    }
}

/// A writer that gzips what it is given on `threads` threads into `out`.
pub struct ParallelGz<W: Write + Send> {
    buf: Vec<u8>,
    dict: Vec<u8>,
    crc: Crc,
    next: u64,
    to_workers: Option<mpsc::SyncSender<Job>>,
    workers: Vec<thread::JoinHandle<()>>,
    writer: Option<thread::JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> ParallelGz<W> {
    pub fn new(out: W, threads: usize) -> Self {
        Self::with_level(out, threads, LEVEL)
    }

    pub fn with_level(out: W, threads: usize, level: u32) -> Self {
        let threads = threads.max(1);
        let (to_workers, from_main) = mpsc::sync_channel::<Job>(threads * 2);
        let from_main = std::sync::Arc::new(std::sync::Mutex::new(from_main));
        let (to_writer, from_workers) = mpsc::sync_channel::<(u64, Vec<u8>)>(threads * 2);
        let workers = (0..threads)
            .map(|_| {
                let rx = from_main.clone();
                let tx = to_writer.clone();
                thread::spawn(move || {
                    loop {
                        let job = rx.lock().map(|r| r.recv());
                        let Ok(Ok(job)) = job else { return };
                        let mut data = deflate(&job.block, &job.dict, job.trailer.is_some(), level);
                        if let Some(trailer) = job.trailer {
                            data.extend_from_slice(&trailer);
                        }
                        if tx.send((job.index, data)).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        drop(to_writer);
        let writer = thread::spawn(move || {
            let mut out = out;
            out.write_all(&HEADER)?;
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
            dict: Vec::new(),
            crc: Crc::new(),
            next: 0,
            to_workers: Some(to_workers),
            workers,
            writer: Some(writer),
        }
    }

    fn send(&mut self, block: Vec<u8>, trailer: Option<[u8; 8]>) -> io::Result<()> {
        let dict = std::mem::replace(
            &mut self.dict,
            block[block.len().saturating_sub(WINDOW)..].to_vec(),
        );
        let tx = self
            .to_workers
            .as_ref()
            .ok_or_else(|| io::Error::other("already finished"))?;
        tx.send(Job {
            index: self.next,
            block,
            dict,
            trailer,
        })
        .map_err(|_| io::Error::other("the output could not be written"))?;
        self.next += 1;
        Ok(())
    }

    /// Flush the last block with the trailer, wait for every thread, return the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        let block = std::mem::take(&mut self.buf);
        self.send(block, Some(trailer))?;
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
        self.crc.update(&data[..n]);
        if self.buf.len() == BLOCK {
            let block = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
            self.send(block, None)?;
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
        // Odd write sizes, so blocks fill across writes.
        for chunk in data.chunks(777_777) {
            w.write_all(chunk).unwrap();
        }
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

    /// What GNU gzip, as on a server, makes of `data`.
    fn gnu_gunzip(data: Vec<u8>) -> std::process::Output {
        let mut cmd = std::process::Command::new("gzip")
            .args(["-dc"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = cmd.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let output = cmd.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        output
    }

    #[test]
    fn empty_input_is_a_valid_gzip() {
        let out = gz(b"", 2);
        assert_eq!(gunzip(&out), b"");
        assert!(gnu_gunzip(out).status.success());
    }

    #[test]
    fn gnu_gzip_reads_the_whole_stream() {
        let data = sample(2 * BLOCK + 7);
        let output = gnu_gunzip(gz(&data, 2));
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
        assert!(deflate(noise, &[], true, LEVEL).len() < noise.len() + noise.len() / 1000);
    }
}
