//! A backup sealed with a passphrase (`--passphrase-file`): the compressed
//! archive cut into 64 KiB chunks, each sealed with ChaCha20-Poly1305
//! (ring) under a key derived from the passphrase with PBKDF2-HMAC-SHA256.
//! Each chunk's nonce is its number and whether it is the last, so chunks
//! cannot be dropped, reordered or cut off at the end unnoticed.
//!
//! Layout: `MAGIC`, a 16-byte salt, the iteration count (u32, big endian),
//! then chunks, each a u32 big-endian length (its top bit marks the last
//! chunk) and the sealed bytes.

use std::io::{self, Read, Write};
use std::num::NonZeroU32;

use ring::aead::{CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};

/// The first bytes of a sealed backup (a plain one starts with zstd's).
pub const MAGIC: &[u8; 8] = b"TTHBAK\x01\x00";
const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const LAST: u32 = 1 << 31;
/// OWASP's figure for PBKDF2-HMAC-SHA256.
const ITERATIONS: u32 = 600_000;
/// A file asking for more is not ours (and would stall the restore).
const MAX_ITERATIONS: u32 = 10_000_000;

/// Why a sealed backup could not be opened; carried inside an
/// `io::Error` through zstd and tar, and told apart again by the caller.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the passphrase does not open this backup (or its first bytes are damaged)")]
    WrongPassphrase,
    #[error("the sealed backup is damaged or cut short: {0}")]
    Damaged(&'static str),
}

fn key(passphrase: &[u8], salt: &[u8], iterations: u32) -> LessSafeKey {
    let mut bytes = [0u8; 32];
    let rounds = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        rounds,
        salt,
        passphrase,
        &mut bytes,
    );
    // 32 bytes is ChaCha20-Poly1305's key length, so this cannot fail.
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("a 32-byte key"))
}

fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

/// Seals what is written into `inner`; [`SealWriter::finish`] writes the
/// last chunk.
pub struct SealWriter<W: Write> {
    inner: W,
    key: LessSafeKey,
    buf: Vec<u8>,
    counter: u64,
}

impl<W: Write> SealWriter<W> {
    pub fn new(mut inner: W, passphrase: &[u8]) -> io::Result<SealWriter<W>> {
        let mut salt = [0u8; 16];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| io::Error::other("no randomness for the salt"))?;
        inner.write_all(MAGIC)?;
        inner.write_all(&salt)?;
        inner.write_all(&ITERATIONS.to_be_bytes())?;
        Ok(SealWriter {
            inner,
            key: key(passphrase, &salt, ITERATIONS),
            buf: Vec::with_capacity(CHUNK + TAG),
            counter: 0,
        })
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        let mut chunk = std::mem::take(&mut self.buf);
        self.key
            .seal_in_place_append_tag(
                nonce(self.counter, last),
                ring::aead::Aad::empty(),
                &mut chunk,
            )
            .map_err(|_| io::Error::other("sealing failed"))?;
        self.counter += 1;
        // At most CHUNK + TAG bytes, far below the flag bit.
        let len = chunk.len() as u32 | if last { LAST } else { 0 };
        self.inner.write_all(&len.to_be_bytes())?;
        self.inner.write_all(&chunk)?;
        chunk.clear();
        self.buf = chunk;
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.seal(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.seal(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Opens what [`SealWriter`] wrote; `inner` is positioned after `MAGIC`.
pub struct OpenReader<R: Read> {
    inner: R,
    key: LessSafeKey,
    plain: Vec<u8>,
    at: usize,
    counter: u64,
    done: bool,
}

fn damaged(what: &'static str) -> io::Error {
    io::Error::other(SealError::Damaged(what))
}

impl<R: Read> OpenReader<R> {
    pub fn new(mut inner: R, passphrase: &[u8]) -> io::Result<OpenReader<R>> {
        let mut head = [0u8; 20];
        inner
            .read_exact(&mut head)
            .map_err(|_| damaged("its header is cut short"))?;
        let iterations = u32::from_be_bytes([head[16], head[17], head[18], head[19]]);
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(damaged("its key derivation count is out of range"));
        }
        Ok(OpenReader {
            key: key(passphrase, &head[..16], iterations),
            inner,
            plain: Vec::new(),
            at: 0,
            counter: 0,
            done: false,
        })
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        let mut len = [0u8; 4];
        self.inner
            .read_exact(&mut len)
            .map_err(|_| damaged("it ends before its last chunk"))?;
        let len = u32::from_be_bytes(len);
        let last = len & LAST != 0;
        let len = (len & !LAST) as usize;
        if !(TAG..=CHUNK + TAG).contains(&len) {
            return Err(damaged("a chunk has an impossible length"));
        }
        let mut chunk = vec![0u8; len];
        self.inner
            .read_exact(&mut chunk)
            .map_err(|_| damaged("a chunk is cut short"))?;
        let opened = self
            .key
            .open_in_place(
                nonce(self.counter, last),
                ring::aead::Aad::empty(),
                &mut chunk,
            )
            .map_err(|_| {
                if self.counter == 0 {
                    io::Error::other(SealError::WrongPassphrase)
                } else {
                    damaged("a chunk does not open (altered, reordered or cut)")
                }
            })?
            .len();
        chunk.truncate(opened);
        self.counter += 1;
        self.done = last;
        self.plain = chunk;
        self.at = 0;
        Ok(())
    }
}

impl<R: Read> Read for OpenReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.plain.len() - self.at);
        out[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The [`SealError`] inside an `io::Error`, if that is what it carries.
pub fn seal_error(e: &io::Error) -> Option<&SealError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<SealError>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(data: &[u8], pass: &[u8]) -> Vec<u8> {
        let mut w = SealWriter::new(Vec::new(), pass).expect("writer");
        w.write_all(data).expect("write");
        w.finish().expect("finish")
    }

    fn open(bytes: &[u8], pass: &[u8]) -> io::Result<Vec<u8>> {
        assert_eq!(&bytes[..8], MAGIC);
        let mut r = OpenReader::new(&bytes[8..], pass)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trip_and_refusals() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let bytes = sealed(&data, b"correct horse");
        assert_eq!(open(&bytes, b"correct horse").expect("opens"), data);

        let e = open(&bytes, b"wrong").expect_err("wrong passphrase");
        assert!(matches!(seal_error(&e), Some(SealError::WrongPassphrase)));

        // Cut at a chunk boundary: the last chunk is missing.
        let first = 8 + 20 + 4 + CHUNK + TAG;
        let e = open(&bytes[..first], b"correct horse").expect_err("cut");
        assert!(matches!(seal_error(&e), Some(SealError::Damaged(_))), "{e}");

        // One flipped bit in the second chunk.
        let mut bad = bytes.clone();
        bad[first + 10] ^= 1;
        let e = open(&bad, b"correct horse").expect_err("altered");
        assert!(matches!(seal_error(&e), Some(SealError::Damaged(_))), "{e}");

        // An empty archive still has its (empty) last chunk.
        assert_eq!(open(&sealed(b"", b"p"), b"p").expect("empty"), b"");
    }
}
