//! Writing a bundle.

use crate::header::{DatasetKey, Header};
use crate::stream::EncryptWriter;
use crate::{BundleError, Item};
use ferry_model::crypto::Signature;
use std::io::Write;

// wire-format: begin
/// Payload compression flag: the items follow uncompressed.
pub(crate) const FLAG_STORED: u8 = 0;
/// Payload compression flag: the items are one zstd frame.
pub(crate) const FLAG_ZSTD: u8 = 1;
/// Payload compression flag (version 13): the dictionary's number, then the items as one
/// zstd frame compressed with that dictionary (bundles/SPEC.md §18).
pub(crate) const FLAG_DICT: u8 = 2;
// wire-format: end

/// Payloads up to this size are compressed in memory and stored uncompressed when that is
/// smaller; larger ones stream through zstd.
const SMALL: usize = 16 * 1024;

/// The largest zstd window (and match table) a streaming writer uses: 2^22 = 4 MiB.
const STREAM_WINDOW_LOG: u32 = 22;

/// The input each zstd worker compresses at a time, when there are workers.
const STREAM_JOB: u32 = 2 << 20;

// wire-format: begin
/// The postcard variant index of `Item::Commit` (bundles/SPEC.md §4), for writing a large
/// commit without copying it; a test checks it against postcard's own encoding.
const COMMIT_TAG: u8 = 3;
/// The same for `Item::ColumnarCommit` (bundles/SPEC.md §17).
const COLUMNAR_COMMIT_TAG: u8 = 7;
// wire-format: end

/// How to write a bundle.
#[derive(Clone, Copy, Debug)]
pub struct WriteOptions {
    /// zstd level, 1–19 (higher is smaller and slower); 0 stores the payload uncompressed.
    /// Levels above 19 would need a window larger than readers accept, so they are treated
    /// as 19.
    pub level: i32,
    /// Write a plaintext bundle (bundles/SPEC.md §3.3): signed, not encrypted. Anyone who
    /// sees it can read it; only for links where encryption is not allowed.
    pub plaintext: bool,
    /// The format version written in the header: [`crate::VERSION`], or
    /// [`crate::VERSION_GHOSTS`] for a snapshot whose record states carry ghosts, or
    /// [`crate::VERSION_ADMINS`] in a dataset with more than one admin. (Otherwise a sealed
    /// bundle of a key epoch after 0 is written as version 5 whatever this says.)
    pub version: u8,
    /// Carry the current epoch's grant in the header (bundles/SPEC.md §14) when the
    /// writer's keyring has one. Writers leave it out for a recipient known to hold the
    /// epoch already (SMS, radio), to save its bytes.
    pub grant: bool,
    /// zstd worker threads for a payload that streams (over 16 KiB); 0 compresses on the
    /// calling thread.
    pub workers: u32,
    /// The one member the bundle is for, when the writer knows (an SMS to its number):
    /// the writer may then use what that member is known to hold (a dictionary, §18)
    /// rather than what every member holds. Not written anywhere.
    pub recipient: Option<ferry_model::MemberId>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            level: 17,
            plaintext: false,
            version: crate::VERSION,
            grant: true,
            workers: 0,
            recipient: None,
        }
    }
}

/// Where the plaintext stream goes: sealed in chunks, or as it is.
pub(crate) enum Seal<W: Write> {
    Sealed(EncryptWriter<W>),
    Plain(W),
}

impl<W: Write> Seal<W> {
    fn finish(self) -> std::io::Result<W> {
        match self {
            Seal::Sealed(e) => e.finish(),
            Seal::Plain(mut w) => {
                w.flush()?;
                Ok(w)
            }
        }
    }
}

impl<W: Write> Write for Seal<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Seal::Sealed(e) => e.write(data),
            Seal::Plain(w) => w.write(data),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Seal::Sealed(e) => e.flush(),
            Seal::Plain(w) => w.flush(),
        }
    }
}

enum Sink<W: Write> {
    /// Items buffered in memory while the payload is small.
    Small(Vec<u8>),
    /// A zstd stream into the digest and the encryption.
    Zstd(Box<zstd::stream::write::Encoder<'static, Digesting<W>>>),
    /// Items straight into the digest and the encryption (level 0).
    Stored,
}

/// Hashes everything written through it (the signed digest covers the plaintext).
pub(crate) struct Digesting<W: Write> {
    inner: Seal<W>,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Digesting<W> {
    // wire-format: begin
    /// Writes flag 2 and the dictionary's number, and takes the dictionary's hash into the
    /// digest (not into the bundle): the signature covers which dictionary decodes it.
    fn dictionary_flag(&mut self, d: &crate::Dictionary) -> std::io::Result<()> {
        let mut head = vec![FLAG_DICT];
        let mut n = d.number;
        while n >= 0x80 {
            head.push((n as u8) | 0x80);
            n >>= 7;
        }
        head.push(n as u8);
        self.write_all(&head)?;
        self.hasher.update(&crate::dictionary_hash(&d.bytes));
        Ok(())
    }
    // wire-format: end
}

// wire-format: begin
/// The digest hasher: BLAKE3 in key-derivation mode, seeded with the header bytes.
pub(crate) fn digest_hasher(header: &[u8]) -> blake3::Hasher {
    let mut h = blake3::Hasher::new_derive_key("ferry v1 bundle digest");
    h.update(header);
    h
}
// wire-format: end

/// Writes one bundle, streaming: memory use does not grow with the bundle.
pub struct BundleWriter<W: Write> {
    sink: Option<Sink<W>>,
    digesting: Option<Digesting<W>>,
    options: WriteOptions,
    scratch: Vec<u8>,
    dictionary: Option<crate::Dictionary>,
}

impl<W: Write> BundleWriter<W> {
    /// As [`BundleWriter::new`], compressing the payload with one of the dataset's
    /// dictionaries (bundles/SPEC.md §18): the bundle is then version 13, which only a
    /// reader that holds the dictionary reads. Only for a reader known to hold it.
    pub fn with_dictionary(
        out: W,
        header: &Header,
        key: &DatasetKey,
        mut options: WriteOptions,
        dictionary: crate::Dictionary,
    ) -> Result<Self, BundleError> {
        options.version = crate::VERSION_DICTS;
        options.level = options.level.max(1);
        let mut w = Self::new(out, header, key, options)?;
        w.dictionary = Some(dictionary);
        Ok(w)
    }

    /// Writes the header to `out` and prepares the encrypted stream (or, for a plaintext
    /// bundle, the plain one; `key` is then not used).
    pub fn new(
        mut out: W,
        header: &Header,
        key: &DatasetKey,
        options: WriteOptions,
    ) -> Result<Self, BundleError> {
        let version = header.version_for(options.plaintext, options.version);
        let raw = header.encode_version(options.plaintext, version);
        out.write_all(&raw)?;
        let inner = if options.plaintext {
            Seal::Plain(out)
        } else {
            Seal::Sealed(EncryptWriter::new(out, key.bundle_key(&raw)))
        };
        let mut digesting = Digesting {
            inner,
            hasher: digest_hasher(&raw),
        };
        let sink = if options.level <= 0 {
            digesting.write_all(&[FLAG_STORED])?;
            Sink::Stored
        } else {
            Sink::Small(Vec::new())
        };
        Ok(BundleWriter {
            sink: Some(sink),
            digesting: Some(digesting),
            options,
            scratch: Vec::new(),
            dictionary: None,
        })
    }

    fn level(&self) -> i32 {
        self.options.level.clamp(1, 19)
    }

    /// Appends one item. The caller keeps the item order of bundles/SPEC.md §4.
    pub fn push(&mut self, item: &Item) -> Result<(), BundleError> {
        // A large commit goes straight into the stream, without a copy of its bytes: a
        // 16 MiB value costs its own size in memory once, not three times.
        // wire-format: begin
        if let (Item::Commit(body), tag) | (Item::ColumnarCommit(body), tag) = (
            item,
            match item {
                Item::ColumnarCommit(_) => COLUMNAR_COMMIT_TAG,
                _ => COMMIT_TAG,
            },
        ) {
            if body.len() > SMALL {
                let mut head = vec![tag];
                let mut n = body.len();
                while n >= 0x80 {
                    head.push((n as u8) | 0x80);
                    n >>= 7;
                }
                head.push(n as u8);
                self.stream()?;
                self.write_payload(&head)?;
                return self.write_payload(body);
            }
        }
        // wire-format: end
        self.scratch.clear();
        let bytes = postcard::to_extend(item, std::mem::take(&mut self.scratch))?;
        if let Some(Sink::Small(buf)) = self.sink.as_mut() {
            if buf.len() + bytes.len() <= SMALL {
                buf.extend_from_slice(&bytes);
                self.scratch = bytes;
                return Ok(());
            }
            self.stream()?;
        }
        self.write_payload(&bytes)?;
        self.scratch = bytes;
        Ok(())
    }

    /// Leaves the small, in-memory payload for a zstd stream (once the payload is not small).
    fn stream(&mut self) -> Result<(), BundleError> {
        if let Some(Sink::Small(buf)) = self.sink.as_mut() {
            let buf = std::mem::take(buf);
            let mut digesting = self.digesting.take().expect("not yet streaming");
            let level = self.level();
            let mut enc = match &self.dictionary {
                Some(d) => {
                    digesting.dictionary_flag(d)?;
                    let mut enc =
                        zstd::stream::write::Encoder::with_dictionary(digesting, level, &d.bytes)?;
                    enc.include_dictid(false)?;
                    enc
                }
                None => {
                    digesting.write_all(&[FLAG_ZSTD])?;
                    zstd::stream::write::Encoder::new(digesting, level)?
                }
            };
            enc.include_checksum(false)?;
            if self.options.workers > 0 {
                enc.multithread(self.options.workers)?;
                // Jobs of 2 MiB: the workers hold a few jobs each, not the 8 MiB jobs zstd
                // picks at level 3, so a writer stays well under 64 MB.
                enc.set_parameter(zstd::stream::raw::CParameter::JobSize(STREAM_JOB))?;
            }
            // Levels 17 and up search a 8 MiB window through a 32 MiB match table; a 4 MiB
            // window and 16 MiB table keep a writer's memory under 100 MB even next to a
            // 16 MiB value (bundles/SPEC.md §1), at a small cost in size.
            if self.level() >= 17 {
                enc.window_log(STREAM_WINDOW_LOG)?;
                enc.set_parameter(zstd::stream::raw::CParameter::ChainLog(STREAM_WINDOW_LOG))?;
            }
            enc.write_all(&buf)?;
            self.sink = Some(Sink::Zstd(Box::new(enc)));
        }
        Ok(())
    }

    /// Writes payload bytes to a streaming sink.
    fn write_payload(&mut self, bytes: &[u8]) -> Result<(), BundleError> {
        match self.sink.as_mut().expect("sink present until finish") {
            Sink::Small(_) => unreachable!("streaming"),
            Sink::Zstd(enc) => enc.write_all(bytes)?,
            Sink::Stored => self
                .digesting
                .as_mut()
                .expect("stored payloads keep the writer")
                .write_all(bytes)?,
        }
        Ok(())
    }

    /// Ends the payload, asks `sign` to sign the digest, appends the signature and seals the
    /// stream. Returns the inner writer and the digest that was signed.
    pub fn finish(
        mut self,
        sign: impl FnOnce(&[u8; 32]) -> Signature,
    ) -> Result<(W, [u8; 32]), BundleError> {
        let mut digesting = match self.sink.take().expect("sink present") {
            Sink::Small(buf) => {
                let mut d = self
                    .digesting
                    .take()
                    .expect("small payloads are not streaming");
                let dictionary = self.dictionary.as_ref();
                let packed = match dictionary {
                    Some(dict) => zstd::bulk::Compressor::with_dictionary(19, &dict.bytes),
                    None => zstd::bulk::Compressor::new(19),
                }
                .and_then(|mut c| {
                    c.include_checksum(false)?;
                    c.include_contentsize(false)?;
                    c.include_dictid(false)?;
                    c.compress(&buf)
                })?;
                if packed.len() < buf.len() {
                    match dictionary {
                        Some(dict) => d.dictionary_flag(dict)?,
                        None => d.write_all(&[FLAG_ZSTD])?,
                    }
                    d.write_all(&packed)?;
                } else {
                    d.write_all(&[FLAG_STORED])?;
                    d.write_all(&buf)?;
                }
                d
            }
            Sink::Zstd(enc) => enc.finish()?,
            Sink::Stored => self
                .digesting
                .take()
                .expect("stored payloads keep the writer"),
        };
        let digest = *digesting.hasher.finalize().as_bytes();
        let sig = sign(&digest);
        digesting.inner.write_all(&sig.0)?;
        let out = digesting.inner.finish()?;
        Ok((out, digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BundleReader, RunProof};
    use ferry_model::{DatasetId, MemberId};

    /// A large commit written straight into the stream reads back exactly as postcard would
    /// have encoded it, and its bundle is byte for byte the one the general path writes.
    /// A flag-2 payload whose dictionary number is 0 or not minimal is refused with a reason
    /// that names the dictionary number, before any dictionary is asked for.
    #[test]
    fn a_bad_dictionary_number_is_refused_by_name() {
        let header = Header::new(DatasetId([2; 8]), MemberId(3), [6; 16])
            .encode_version(true, crate::VERSION_DICTS);
        for number in [vec![0u8], vec![0x81, 0x00]] {
            let mut bytes = header.clone();
            bytes.push(FLAG_DICT);
            bytes.extend(&number);
            bytes.extend([0u8; 80]);
            let got = BundleReader::open(&bytes[..])
                .unwrap()
                .decrypt_with(&DatasetKey([4; 32]), |_| panic!("no dictionary is needed"));
            match got {
                Err(BundleError::Malformed(m)) => assert!(m.contains("dictionary number"), "{m}"),
                Err(e) => panic!("{number:?}: {e}"),
                Ok(_) => panic!("{number:?}: accepted"),
            }
        }
    }

    /// A payload compressed with a dictionary (version 13, SPEC §18) reads back only with
    /// the same dictionary: without one it waits (`NoDictionary`), and with other bytes
    /// under the same number the digest differs, so the signature cannot verify.
    #[test]
    fn a_dictionary_payload_reads_back_only_with_that_dictionary() {
        use crate::Dictionary;
        let key = DatasetKey([4; 32]);
        let header = Header::new(DatasetId([2; 8]), MemberId(3), [6; 16]);
        let dict: Vec<u8> = b"village=Obunga diagnosis=malaria village=Nyalenda ".repeat(20);
        let mut items = vec![
            Item::Receipt([(MemberId(3), 10)].into_iter().collect()),
            Item::Run {
                author: MemberId(3),
                first: 1,
                count: 10,
                proof: RunProof::Sender,
            },
        ];
        items.extend(
            (0..10).map(|i| {
                Item::Commit(format!("village=Obunga diagnosis=malaria {i}").into_bytes())
            }),
        );
        let write = |d: Option<Dictionary>| {
            let mut w = match d {
                Some(d) => BundleWriter::with_dictionary(
                    Vec::new(),
                    &header,
                    &key,
                    WriteOptions::default(),
                    d,
                )
                .unwrap(),
                None => {
                    BundleWriter::new(Vec::new(), &header, &key, WriteOptions::default()).unwrap()
                }
            };
            for i in &items {
                w.push(i).unwrap();
            }
            w.finish(|_| ferry_model::crypto::Signature([0; 64]))
                .unwrap()
        };
        let d = Dictionary {
            number: 300,
            bytes: dict.clone(),
        };
        let (with, digest) = write(Some(d));
        let (without, _) = write(None);
        assert_eq!(with[1], crate::VERSION_DICTS);
        assert!(
            with.len() < without.len(),
            "{} vs {}",
            with.len(),
            without.len()
        );
        let read = |lookup: Option<Vec<u8>>| -> Result<(Vec<Item>, [u8; 32]), BundleError> {
            let mut r = BundleReader::open(&with[..])?.decrypt_with(&key, |k| {
                assert_eq!(k, 300);
                lookup
            })?;
            let mut got = Vec::new();
            while let Some(i) = r.next_item()? {
                got.push(i);
            }
            Ok((got, r.finish()?.digest))
        };
        let (got, read_digest) = read(Some(dict.clone())).unwrap();
        assert_eq!(got, items);
        assert_eq!(read_digest, digest);
        assert!(matches!(read(None), Err(BundleError::NoDictionary(300))));
        let mut other = dict.clone();
        other[0] ^= 1;
        if let Ok((_, d)) = read(Some(other)) {
            assert_ne!(d, digest, "another dictionary must give another digest");
        }
    }

    #[test]
    fn a_large_commit_streams_with_the_same_bytes_as_the_general_encoding() {
        type Make = fn(Vec<u8>) -> Item;
        let kinds: [(u8, Make, u8); 2] = [
            (COMMIT_TAG, Item::Commit, crate::VERSION),
            (
                COLUMNAR_COMMIT_TAG,
                Item::ColumnarCommit,
                crate::VERSION_COLUMNS,
            ),
        ];
        for (tag, make, version) in kinds {
            for len in [SMALL + 1, 300_000] {
                let body: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                let mut manual = vec![tag];
                let mut n = len;
                while n >= 0x80 {
                    manual.push((n as u8) | 0x80);
                    n >>= 7;
                }
                manual.push(n as u8);
                manual.extend_from_slice(&body);
                assert_eq!(manual, postcard::to_allocvec(&make(body.clone())).unwrap());
                let header = Header::new(DatasetId([1; 8]), MemberId(1), [2; 16]);
                let key = DatasetKey([3; 32]);
                let options = WriteOptions {
                    version,
                    ..WriteOptions::default()
                };
                let mut w = BundleWriter::new(Vec::new(), &header, &key, options).unwrap();
                w.push(&Item::Receipt(Default::default())).unwrap();
                w.push(&Item::Run {
                    author: MemberId(1),
                    first: 1,
                    count: 1,
                    proof: RunProof::Sender,
                })
                .unwrap();
                w.push(&make(body.clone())).unwrap();
                let (bytes, _) = w
                    .finish(|_| ferry_model::crypto::Signature([0; 64]))
                    .unwrap();
                let mut r = BundleReader::open(&bytes[..])
                    .unwrap()
                    .decrypt(&key)
                    .unwrap();
                assert_eq!(r.version(), version);
                let mut items = Vec::new();
                while let Some(i) = r.next_item().unwrap() {
                    items.push(i);
                }
                assert_eq!(items.last(), Some(&make(body)));
            }
        }
    }
}
