//! Reading a bundle, streaming, with bounded memory.

use crate::header::{DatasetKey, Header, MAGIC_PLAIN};
use crate::stream::DecryptReader;
use crate::writer::{FLAG_DICT, FLAG_STORED, FLAG_ZSTD, digest_hasher};
use crate::{
    BundleError, EXPANSION_FLOOR, EXPANSION_RATIO, Item, MAX_ITEM, MAX_PEER_RECEIPTS, MAX_RUNS,
    MAX_SEQ, SIGNATURE_LEN,
};
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

    /// The format version the header names (one this crate reads).
    pub fn version(&self) -> u8 {
        self.raw[1]
    }

    /// Whether the bundle is a plaintext one (signed, not encrypted; bundles/SPEC.md §3.3).
    pub fn is_plaintext(&self) -> bool {
        self.raw.first() == Some(&MAGIC_PLAIN)
    }

    /// Starts decrypting with the dataset key. A wrong key fails here. A plaintext bundle
    /// needs no key: its signature, checked at the end, is what authenticates it. A payload
    /// compressed with a dictionary fails with [`BundleError::NoDictionary`]: see
    /// [`Opener::decrypt_with`].
    pub fn decrypt(self, key: &DatasetKey) -> Result<BundleReader<R>, BundleError> {
        self.decrypt_with(key, |_| None)
    }

    /// [`Opener::decrypt`], with `dictionary` giving the dataset's dictionary `K` (the bytes
    /// of `_dicts/K`, bundles/SPEC.md §18) when the payload names one; `None` when this
    /// reader does not hold it ([`BundleError::NoDictionary`]).
    pub fn decrypt_with(
        self,
        key: &DatasetKey,
        dictionary: impl FnOnce(u32) -> Option<Vec<u8>>,
    ) -> Result<BundleReader<R>, BundleError> {
        let stream = if self.is_plaintext() {
            Source::Plain(self.inner)
        } else {
            Source::Sealed(DecryptReader::new(self.inner, key.bundle_key(&self.raw)))
        };
        let consumed = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let mut hold = Holdback {
            inner: stream,
            buf: Vec::with_capacity(2 * crate::stream::CHUNK),
            start: 0,
            eof: false,
            hasher: digest_hasher(&self.raw),
            consumed: consumed.clone(),
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
            // wire-format: begin
            FLAG_DICT if self.raw[1] >= crate::VERSION_DICTS => {
                let mut number: u64 = 0;
                for i in 0..5 {
                    let mut b = [0u8];
                    if hold.read(&mut b).map_err(unwrap_io)? == 0 {
                        return Err(BundleError::NoSignature);
                    }
                    number |= u64::from(b[0] & 0x7f) << (7 * i);
                    if b[0] & 0x80 == 0 {
                        if (i > 0 && b[0] == 0) || number == 0 || number > u64::from(u32::MAX) {
                            return Err(BundleError::Malformed(
                                "a dictionary number that is 0, too large or not minimal".into(),
                            ));
                        }
                        break;
                    }
                    if i == 4 {
                        return Err(BundleError::Malformed(
                            "a dictionary number that is too large".into(),
                        ));
                    }
                }
                let number = number as u32;
                let bytes = dictionary(number)
                    .filter(|b| !b.is_empty() && b.len() <= crate::MAX_DICTIONARY)
                    .ok_or(BundleError::NoDictionary(number))?;
                hold.hasher.update(&crate::dictionary_hash(&bytes));
                let mut d =
                    zstd::stream::read::Decoder::with_dictionary(BufReader::new(hold), &bytes)
                        .map_err(BundleError::Decompress)?
                        .single_frame();
                d.window_log_max(MAX_WINDOW_LOG)?;
                Body::Zstd(d)
            }
            // wire-format: end
            other => {
                return Err(BundleError::Malformed(format!(
                    "unknown compression flag {other}"
                )));
            }
        };
        Ok(BundleReader {
            version: self.raw[1],
            header: self.header,
            body,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            state: State::Start,
            run_authors: Default::default(),
            peer_receipts: 0,
            consumed,
            inflated: 0,
        })
    }
}

/// The plaintext stream: decrypted, or read as it is.
enum Source<R: Read> {
    Sealed(DecryptReader<R>),
    Plain(R),
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Sealed(d) => d.read(out),
            Source::Plain(r) => r.read(out),
        }
    }
}

/// Withholds the last 64 plaintext bytes (the signature) and hashes everything it passes on.
struct Holdback<R: Read> {
    inner: Source<R>,
    buf: Vec<u8>,
    start: usize,
    eof: bool,
    hasher: blake3::Hasher,
    /// Payload bytes passed on so far (what a decompressor has read).
    consumed: std::rc::Rc<std::cell::Cell<u64>>,
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
        self.consumed.set(self.consumed.get() + n as u64);
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
    SnapshotChains,
    SnapshotRecords,
    InRun(u64),
}

/// Reads one bundle's items in order, checking their structure.
pub struct BundleReader<R: Read> {
    header: Header,
    /// The format version its header names.
    version: u8,
    body: Body<R>,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    state: State,
    /// Authors that had a run so far (one run per author).
    run_authors: std::collections::HashSet<u32>,
    /// Peer receipts so far.
    peer_receipts: usize,
    /// Payload bytes read from the bundle so far (compressed, when it is).
    consumed: std::rc::Rc<std::cell::Cell<u64>>,
    /// Payload bytes after decompression so far.
    inflated: u64,
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

    /// The format version the header names ([`crate::VERSION`] or a later one this crate
    /// reads).
    pub fn version(&self) -> u8 {
        self.version
    }

    fn refill(&mut self) -> Result<(), BundleError> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        // Grow geometrically so a large item is re-parsed only a few times.
        let want = self.buf.len().max(64 * 1024).min(MAX_ITEM - self.buf.len());
        if want == 0 {
            return Err(BundleError::Malformed(
                "an item exceeds the size limit".into(),
            ));
        }
        let zstd = matches!(self.body, Body::Zstd(_));
        let n = (&mut self.body)
            .take(want as u64)
            .read_to_end(&mut self.buf)
            .map_err(|e| match unwrap_io(e) {
                BundleError::Io(e) if zstd => BundleError::Decompress(e),
                other => other,
            })?;
        self.eof = n < want;
        if zstd {
            self.inflated += n as u64;
            let allowed =
                EXPANSION_FLOOR.saturating_add(self.consumed.get().saturating_mul(EXPANSION_RATIO));
            if self.inflated > allowed {
                return Err(BundleError::Limit(format!(
                    "its compressed payload inflates to more than {EXPANSION_RATIO} times its size (and more than {} MiB)",
                    EXPANSION_FLOOR >> 20
                )));
            }
        }
        Ok(())
    }

    /// The next item, or `None` at the end of the payload.
    pub fn next_item(&mut self) -> Result<Option<Item>, BundleError> {
        loop {
            if self.pos < self.buf.len() {
                ferry_model::bounded::clear_exceeded();
                match postcard::take_from_bytes::<Item>(&self.buf[self.pos..]) {
                    Ok((item, rest)) => {
                        self.pos = self.buf.len() - rest.len();
                        if self.pos == self.buf.len() && self.buf.capacity() > 4 * 1024 * 1024 {
                            // A large item was read whole and nothing follows in the buffer:
                            // give its memory back now, not at the next refill.
                            self.buf = Vec::new();
                            self.pos = 0;
                        }
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
        if let Item::Run { author, .. } = item {
            if self.run_authors.len() == MAX_RUNS {
                return bad("more runs than the format allows");
            }
            if !self.run_authors.insert(author.0) {
                return bad("two runs of the same author");
            }
        }
        self.state = match (self.state, item) {
            (State::Start, Item::Receipt(_)) => State::Receipts,
            (State::Start, _) => return bad("the payload must start with the sender's receipt"),
            (_, Item::Receipt(_)) => return bad("a second receipt"),
            (State::Receipts, Item::PeerReceipt(..)) => {
                self.peer_receipts += 1;
                if self.peer_receipts > MAX_PEER_RECEIPTS {
                    return Err(BundleError::Limit(format!(
                        "more than {MAX_PEER_RECEIPTS} peer receipts (the limit)"
                    )));
                }
                State::Receipts
            }
            (_, Item::PeerReceipt(..)) => return bad("a peer receipt after the first run"),
            (State::Receipts, Item::Snapshot { .. }) => State::SnapshotChains,
            (_, Item::Snapshot { .. }) => return bad("a snapshot out of place"),
            (State::SnapshotChains, Item::SnapshotChain { seq, .. }) if *seq > MAX_SEQ => {
                return bad("a snapshot chain past the largest commit number");
            }
            (State::SnapshotChains, Item::SnapshotChain { .. }) => State::SnapshotChains,
            (_, Item::SnapshotChain { .. }) => return bad("a snapshot chain out of place"),
            (State::SnapshotChains | State::SnapshotRecords, Item::SnapshotRecord { .. }) => {
                State::SnapshotRecords
            }
            (_, Item::SnapshotRecord { .. }) => return bad("a snapshot record out of place"),
            (State::InRun(n), Item::Run { .. }) if n > 0 => {
                return bad("a run starts before the previous one ends");
            }
            (_, Item::Run { count: 0, .. }) => return bad("an empty run"),
            (_, Item::Run { first: 0, .. }) => return bad("commit numbers start at 1"),
            (_, Item::Run { first, count, .. })
                if first
                    .checked_add(*count)
                    .is_none_or(|end| end - 1 > MAX_SEQ) =>
            {
                return bad("a run past the largest commit number");
            }
            (_, Item::Run { count, .. }) => State::InRun(*count),
            (_, Item::ColumnarCommit(_)) if self.version < crate::VERSION_COLUMNS => {
                return bad("item kind 7 (a columnar commit) before version 11");
            }
            (State::InRun(n), Item::Commit(_) | Item::ColumnarCommit(_)) if n > 0 => {
                State::InRun(n - 1)
            }
            (_, Item::Commit(_) | Item::ColumnarCommit(_)) => {
                return bad("a commit outside a run");
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BundleWriter, DatasetKey, Header, WriteOptions};
    use ferry_model::{DatasetId, MemberId};

    fn bundle_with_commit(len: usize) -> Vec<u8> {
        let key = DatasetKey([1; 32]);
        let header = Header::new(DatasetId([2; 8]), MemberId(1), [3; 16]);
        let mut w = BundleWriter::new(
            Vec::new(),
            &header,
            &key,
            WriteOptions {
                level: 1,
                ..Default::default()
            },
        )
        .unwrap();
        w.push(&Item::Receipt(Default::default())).unwrap();
        w.push(&Item::Run {
            author: MemberId(1),
            first: 1,
            count: 1,
            proof: crate::RunProof::Sender,
        })
        .unwrap();
        // Incompressible, so the stored size is the real size.
        let mut x = 0x9e37_79b9u32;
        let body: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        w.push(&Item::Commit(body)).unwrap();
        w.finish(|_| ferry_model::crypto::Signature([0; 64]))
            .unwrap()
            .0
    }

    fn read_all(bytes: &[u8]) -> Result<usize, BundleError> {
        let mut r = BundleReader::open(bytes)?.decrypt(&DatasetKey([1; 32]))?;
        let mut n = 0;
        while r.next_item()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    #[test]
    fn an_item_above_the_limit_is_refused_not_a_panic() {
        let big = bundle_with_commit(MAX_ITEM + 10);
        assert!(matches!(read_all(&big), Err(BundleError::Malformed(_))));
        let ok = bundle_with_commit(ferry_model::limits::MAX_COMMIT);
        assert_eq!(read_all(&ok).unwrap(), 3);
    }

    /// A small bundle with one receipt, sealed or plain, signed by `signer`.
    fn receipt_bundle(plaintext: bool, signer: &ferry_model::crypto::SecretKey) -> Vec<u8> {
        let header = Header::new(DatasetId([2; 8]), MemberId(1), [3; 16]);
        let mut vv = ferry_model::VersionVector::new();
        vv.set(MemberId(1), 7);
        let options = WriteOptions {
            plaintext,
            ..Default::default()
        };
        let mut w = BundleWriter::new(Vec::new(), &header, &DatasetKey([1; 32]), options).unwrap();
        w.push(&Item::Receipt(vv)).unwrap();
        w.finish(|d| signer.sign(d)).unwrap().0
    }

    #[test]
    fn a_plaintext_bundle_reads_without_the_key_and_its_signature_covers_every_byte() {
        let signer = ferry_model::crypto::SecretKey::from_bytes([9; 32]);
        let plain = receipt_bundle(true, &signer);
        let sealed = receipt_bundle(false, &signer);
        assert_eq!(plain[0], MAGIC_PLAIN);
        // Same header and payload, without the 16-byte tag.
        assert_eq!(plain.len() + crate::stream::TAG, sealed.len());
        let opener = BundleReader::open(&plain[..]).unwrap();
        assert!(opener.is_plaintext());
        // Any key (or none) reads it: it is not encrypted.
        let mut r = opener.decrypt(&DatasetKey([0xEE; 32])).unwrap();
        let item = r.next_item().unwrap().unwrap();
        assert!(matches!(item, Item::Receipt(ref vv) if vv.get(MemberId(1)) == 7));
        assert!(r.next_item().unwrap().is_none());
        let trailer = r.finish().unwrap();
        assert!(signer.public().verify(&trailer.digest, &trailer.signature));
        // The digest binds the magic: the sealed bundle's signed digest differs.
        let mut s = BundleReader::open(&sealed[..])
            .unwrap()
            .decrypt(&DatasetKey([1; 32]))
            .unwrap();
        while s.next_item().unwrap().is_some() {}
        assert_ne!(s.finish().unwrap().digest, trailer.digest);
        // Changing any byte breaks the signature, or the structure.
        for i in 0..plain.len() {
            let mut bad = plain.clone();
            bad[i] ^= 0x40;
            let verified = (|| -> Result<bool, BundleError> {
                let mut r = BundleReader::open(&bad[..])?.decrypt(&DatasetKey([1; 32]))?;
                while r.next_item()?.is_some() {}
                let t = r.finish()?;
                Ok(signer.public().verify(&t.digest, &t.signature))
            })();
            assert!(!matches!(verified, Ok(true)), "byte {i} changed unnoticed");
        }
    }
}
