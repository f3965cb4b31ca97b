//! The chunked AEAD stream (bundles/SPEC.md §3), after age's STREAM construction.
//!
//! The plaintext is cut into chunks of [`CHUNK`] bytes; the last chunk holds the rest (1 to
//! `CHUNK` bytes). Chunk `i` is sealed with ChaCha20-Poly1305 under the bundle key and the
//! nonce `i` (11 bytes, big-endian) ‖ `last` (one byte, 1 for the final chunk, else 0).
//! Because the final chunk is marked inside its nonce, cutting a stream at any point —
//! including exactly between two chunks — makes authentication fail: truncation is always
//! detected. Memory use is one chunk, whatever the bundle's size.

use crate::BundleError;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use std::io::{self, Read, Write};

/// Plaintext bytes per chunk (64 KiB).
pub const CHUNK: usize = 64 * 1024;
/// Bytes a chunk grows by (the Poly1305 tag).
pub const TAG: usize = 16;

fn nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = last as u8;
    Nonce::from(n)
}

/// Seals one chunk in place, appending its tag.
pub fn encrypt_chunk(key: &[u8; 32], counter: u64, last: bool, buf: &mut Vec<u8>) {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let tag = cipher
        .encrypt_in_place_detached(&nonce(counter, last), b"", buf)
        .expect("chunk is far below the ChaCha20 length limit");
    buf.extend_from_slice(&tag);
}

/// Opens one sealed chunk in place (removing its tag); `false` if it does not authenticate.
pub fn decrypt_chunk(key: &[u8; 32], counter: u64, last: bool, buf: &mut Vec<u8>) -> bool {
    if buf.len() < TAG {
        return false;
    }
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let tag_at = buf.len() - TAG;
    let tag = Tag::clone_from_slice(&buf[tag_at..]);
    buf.truncate(tag_at);
    cipher
        .decrypt_in_place_detached(&nonce(counter, last), b"", buf, &tag)
        .is_ok()
}

/// Encrypts everything written to it; [`EncryptWriter::finish`] seals the final chunk.
pub struct EncryptWriter<W: Write> {
    out: W,
    key: [u8; 32],
    counter: u64,
    buf: Vec<u8>,
}

impl<W: Write> EncryptWriter<W> {
    /// A stream writing sealed chunks to `out`.
    pub fn new(out: W, key: [u8; 32]) -> Self {
        EncryptWriter {
            out,
            key,
            counter: 0,
            buf: Vec::with_capacity(CHUNK + TAG),
        }
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        encrypt_chunk(&self.key, self.counter, last, &mut self.buf);
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.counter += 1;
        Ok(())
    }

    /// Seals the final chunk and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // A full chunk is sealed only once more data arrives, since the final chunk may be
        // full.
        if self.buf.len() == CHUNK && !data.is_empty() {
            self.seal(false)?;
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Decrypts a stream written by [`EncryptWriter`]; a damaged or truncated stream yields an
/// `InvalidData` error wrapping [`BundleError::Decrypt`].
pub struct DecryptReader<R: Read> {
    inner: R,
    key: [u8; 32],
    counter: u64,
    plain: Vec<u8>,
    pos: usize,
    /// One byte read ahead to learn whether the chunk just read is the last.
    peek: Option<u8>,
    done: bool,
}

impl<R: Read> DecryptReader<R> {
    /// A stream reading sealed chunks from `inner`.
    pub fn new(inner: R, key: [u8; 32]) -> Self {
        DecryptReader {
            inner,
            key,
            counter: 0,
            plain: Vec::with_capacity(CHUNK + TAG),
            pos: 0,
            peek: None,
            done: false,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        self.plain.clear();
        self.pos = 0;
        if let Some(b) = self.peek.take() {
            self.plain.push(b);
        }
        // Read up to a full sealed chunk.
        while self.plain.len() < CHUNK + TAG {
            let have = self.plain.len();
            self.plain.resize(CHUNK + TAG, 0);
            let n = read_retrying(&mut self.inner, &mut self.plain[have..])?;
            self.plain.truncate(have + n);
            if n == 0 {
                break;
            }
        }
        let last = if self.plain.len() < CHUNK + TAG {
            true
        } else {
            let mut b = [0u8];
            let n = read_retrying(&mut self.inner, &mut b)?;
            if n == 1 {
                self.peek = Some(b[0]);
            }
            n == 0
        };
        if !decrypt_chunk(&self.key, self.counter, last, &mut self.plain) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                BundleError::Decrypt {
                    chunk: self.counter,
                },
            ));
        }
        self.counter += 1;
        self.done = last;
        Ok(())
    }
}

fn read_retrying<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seal(data: &[u8]) -> Vec<u8> {
        let mut w = EncryptWriter::new(Vec::new(), [1; 32]);
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn open(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        DecryptReader::new(data, [1; 32]).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_chunk_boundaries() {
        for len in [1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let sealed = seal(&data);
            assert_eq!(sealed.len(), len + len.div_ceil(CHUNK) * TAG);
            assert_eq!(open(&sealed).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn truncation_between_chunks_is_detected() {
        let data = vec![5u8; 2 * CHUNK + 10];
        let sealed = seal(&data);
        for cut in [CHUNK + TAG, 2 * (CHUNK + TAG), sealed.len() - 1, 3] {
            let err = open(&sealed[..cut]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_or_a_wrong_key_fails() {
        let sealed = seal(b"patient visits");
        let mut flipped = sealed.clone();
        flipped[3] ^= 0x10;
        assert!(open(&flipped).is_err());
        let mut out = Vec::new();
        assert!(
            DecryptReader::new(&sealed[..], [2; 32])
                .read_to_end(&mut out)
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn any_data_round_trips(data in proptest::collection::vec(any::<u8>(), 0..200_000)) {
            prop_assume!(!data.is_empty());
            prop_assert_eq!(open(&seal(&data)).unwrap(), data);
        }
    }
}
