//! What POSIX `cksum` prints for some bytes (CRC-32 and size): how a host checks the
//! artifact it was sent and the files a delta makes it copy (see [`super::delta`]).

use std::io::{self, Read};

/// POSIX `cksum`: CRC-32 (polynomial 0x04C11DB7, unreflected) over the data and then its
/// length in as few little-endian bytes as it takes, complemented.
const CKSUM: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_CKSUM);

/// What `cksum` prints for the bytes fed to it.
pub struct CksumDigest {
    digest: crc::Digest<'static, u32, crc::Table<16>>,
    len: u64,
}

impl Default for CksumDigest {
    fn default() -> Self {
        CksumDigest {
            digest: CKSUM.digest(),
            len: 0,
        }
    }
}

impl CksumDigest {
    pub fn update(&mut self, data: &[u8]) {
        self.digest.update(data);
        self.len += data.len() as u64;
    }

    /// The CRC and the size.
    pub fn finish(mut self) -> (u32, u64) {
        let mut n = self.len;
        while n > 0 {
            self.digest.update(&[(n & 0xff) as u8]);
            n >>= 8;
        }
        (self.digest.finalize(), self.len)
    }

    /// `<crc> <size>`, as `cksum FILE` prints them before the name.
    pub fn text(self) -> String {
        let (crc, size) = self.finish();
        format!("{crc} {size}")
    }
}

/// A reader that computes what `cksum` prints for the bytes read through it.
pub struct Cksum<R> {
    inner: R,
    digest: CksumDigest,
}

impl<R: Read> Cksum<R> {
    pub fn new(inner: R) -> Self {
        Cksum {
            inner,
            digest: CksumDigest::default(),
        }
    }

    /// The CRC and the size.
    pub fn finish(self) -> (u32, u64) {
        self.digest.finish()
    }
}

impl<R: Read> Read for Cksum<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
}
