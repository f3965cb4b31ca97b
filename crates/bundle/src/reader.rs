//! Reading a bundle, streaming, with bounded memory.

use crate::header::{DatasetKey, Header};
use crate::stream::DecryptReader;
use crate::writer::{FLAG_STORED, FLAG_ZSTD, digest_hasher};
use crate::{BundleError, Item, MAX_ITEM, SIGNATURE_LEN};
use ferry_model::crypto::Signature;
use std::io::{self, BufReader, Read};

// wire-format: begin
/// Largest zstd window a reader accepts (2^24 = 16 MiB), which bounds decompression memory.
pub const MAX_WINDOW_LOG: u32 = 24;
// wire-format: end

/// What the end of a bundle carries: the signature and the digest it must be checked against
/// (with `ferry_model::crypto::head_message`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// BLAKE3 digest of the header and the plaintext payload before the signature.
    pub digest: [u8; 32],
    /// The sender's signature.
    pub signature: Signature,
}

/// A bundle whose header has been read but which is not yet decrypted. Use it to find the
/// dataset and sender, then [`Opener::decrypt`].
pub struct Opener<R: Read> {
    inner: R,
    header: Header,
    raw: Vec<u8>,
}

impl<R: Read> Opener<R> {
    /// The plaintext header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Starts decrypting with the dataset key. A wrong key fails here.
    pub fn decrypt(self, key: &DatasetKey) -> Result<BundleReader<R>, BundleError> {
        let stream = DecryptReader::new(self.inner, key.bundle_key(&self.raw));
        let mut hold = Holdback {
            inner: stream,
            buf: Vec::with_capacity(2 * crate::stream::CHUNK),
            start: 0,
            eof: false,
            hasher: digest_hasher(&self.raw),
        };
        let mut flag = [0u8];
        if hold.read(&mut flag).map_err(unwrap_io)? == 0 {
            return Err(BundleError::NoSignature);
        }
        let body = match flag[0] {
            FLAG_STORED => Body::Stored(hold),
            FLAG_ZSTD => {
                let mut d = zstd::stream::read::Decoder::new(hold)?.single_frame();
                d.window_log_max(MAX_WINDOW_LOG)?;
                Body::Zstd(d)
            }
            other => {
                return Err(BundleError::Malformed(format!(
                    "unknown compression flag {other}"
                )));
            }
        };
        Ok(BundleReader {
            header: self.header,
            body,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            state: State::Start,
        })
    }
}

/// Withholds the last 64 plaintext bytes (the signature) and hashes everything it passes on.
struct Holdback<R: Read> {
    inner: DecryptReader<R>,
    buf: Vec<u8>,
    start: usize,
    eof: bool,
    hasher: blake3::Hasher,
}

impl<R: Read> Holdback<R> {
    fn available(&self) -> usize {
        (self.buf.len() - self.start).saturating_sub(SIGNATURE_LEN)
    }

    fn finish(mut self) -> Result<Trailer, BundleError> {
        let mut rest = Vec::new();
        self.read_to_end(&mut rest).map_err(unwrap_io)?;
        if !rest.is_empty() {
            return Err(BundleError::Malformed(
                "data after the end of the compressed payload".into(),
            ));
        }
        let tail = &self.buf[self.start..];
        let signature: [u8; 64] = tail.try_into().map_err(|_| BundleError::NoSignature)?;
        Ok(Trailer {
            digest: *self.hasher.finalize().as_bytes(),
            signature: Signature(signature),
        })
    }
}

impl<R: Read> Read for Holdback<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.available() == 0 && !self.eof {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let have = self.buf.len();
            self.buf.resize(have + crate::stream::CHUNK, 0);
            let n = self.inner.read(&mut self.buf[have..])?;
            self.buf.truncate(have + n);
            self.eof = n == 0;
        }
        let n = out.len().min(self.available());
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.hasher.update(&out[..n]);
        self.start += n;
        Ok(n)
    }
}

enum Body<R: Read> {
    Stored(Holdback<R>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<Holdback<R>>>),
}

impl<R: Read> Read for Body<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Stored(h) => h.read(out),
            Body::Zstd(d) => d.read(out),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Start,
    Receipts,
    InRun(u64),
}

/// Reads one bundle's items in order, checking their structure.
pub struct BundleReader<R: Read> {
    header: Header,
    body: Body<R>,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    state: State,
}

/// Turns an i/o error that wraps a [`BundleError`] (from the decrypting stream) back into it.
fn unwrap_io(e: io::Error) -> BundleError {
    if e.get_ref().is_some_and(|i| i.is::<BundleError>()) {
        let inner = e.into_inner().expect("checked above");
        return *inner.downcast::<BundleError>().expect("checked above");
    }
    BundleError::Io(e)
}

impl BundleReader<std::io::Empty> {
    /// Reads the header of a bundle from `r`.
    pub fn open<R: Read>(mut r: R) -> Result<Opener<R>, BundleError> {
        let (header, raw) = Header::read(&mut r)?;
        Ok(Opener {
            inner: r,
            header,
            raw,
        })
    }
}

impl<R: Read> BundleReader<R> {
    /// The plaintext header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    fn refill(&mut self) -> Result<(), BundleError> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.len() >= MAX_ITEM {
            return Err(BundleError::Malformed(
                "an item exceeds the size limit".into(),
            ));
        }
        let want = self.buf.len().clamp(64 * 1024, MAX_ITEM - self.buf.len());
        let have = self.buf.len();
        self.buf.resize(have + want, 0);
        let n = loop {
            match self.body.read(&mut self.buf[have..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let zstd = matches!(self.body, Body::Zstd(_));
                    let err = unwrap_io(e);
                    return Err(match err {
                        BundleError::Io(e) if zstd => BundleError::Decompress(e),
                        other => other,
                    });
                }
                Ok(n) => break n,
            }
        };
        self.buf.truncate(have + n);
        self.eof = n == 0;
        Ok(())
    }

    /// The next item, or `None` at the end of the payload.
    pub fn next_item(&mut self) -> Result<Option<Item>, BundleError> {
        loop {
            if self.pos < self.buf.len() {
                match postcard::take_from_bytes::<Item>(&self.buf[self.pos..]) {
                    Ok((item, rest)) => {
                        self.pos = self.buf.len() - rest.len();
                        self.check_order(&item)?;
                        return Ok(Some(item));
                    }
                    Err(postcard::Error::DeserializeUnexpectedEnd) if !self.eof => {}
                    Err(postcard::Error::DeserializeUnexpectedEnd) => {
                        return Err(BundleError::Malformed("payload ends inside an item".into()));
                    }
                    Err(e) => return Err(e.into()),
                }
            } else if self.eof {
                return match self.state {
                    State::Start => Err(BundleError::Malformed("no receipt".into())),
                    State::InRun(n) if n > 0 => Err(BundleError::Malformed(format!(
                        "payload ends {n} commits before the end of a run"
                    ))),
                    _ => Ok(None),
                };
            }
            self.refill()?;
        }
    }

    fn check_order(&mut self, item: &Item) -> Result<(), BundleError> {
        let bad = |what: &str| Err(BundleError::Malformed(what.to_string()));
        self.state = match (self.state, item) {
            (State::Start, Item::Receipt(_)) => State::Receipts,
            (State::Start, _) => return bad("the payload must start with the sender's receipt"),
            (_, Item::Receipt(_)) => return bad("a second receipt"),
            (State::Receipts, Item::PeerReceipt(..)) => State::Receipts,
            (_, Item::PeerReceipt(..)) => return bad("a peer receipt after the first run"),
            (State::InRun(n), Item::Run { .. }) if n > 0 => {
                return bad("a run starts before the previous one ends");
            }
            (_, Item::Run { count: 0, .. }) => return bad("an empty run"),
            (_, Item::Run { first: 0, .. }) => return bad("commit numbers start at 1"),
            (_, Item::Run { first, count, .. }) if first.checked_add(*count).is_none() => {
                return bad("a run past the largest commit number");
            }
            (_, Item::Run { count, .. }) => State::InRun(*count),
            (State::InRun(n), Item::Commit(_)) if n > 0 => State::InRun(n - 1),
            (_, Item::Commit(_)) => return bad("a commit outside a run"),
        };
        Ok(())
    }

    /// After the last item: checks nothing follows the payload and returns the trailer.
    pub fn finish(self) -> Result<Trailer, BundleError> {
        if !self.eof || self.pos < self.buf.len() {
            return Err(BundleError::Malformed(
                "finish called before the end of the payload".into(),
            ));
        }
        match self.body {
            Body::Stored(h) => h.finish(),
            Body::Zstd(d) => {
                let buffered = d.finish();
                if !buffered.buffer().is_empty() {
                    return Err(BundleError::Malformed(
                        "data after the end of the compressed payload".into(),
                    ));
                }
                buffered.into_inner().finish()
            }
        }
    }
}
