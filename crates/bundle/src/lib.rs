//! The ferry bundle format, version 1 (normative text: `bundles/SPEC.md`).
//!
//! A bundle is what travels: a small plaintext [`Header`], then a ChaCha20-Poly1305 stream
//! in 64 KiB chunks under a key derived from the dataset key and the header's fresh salt.
//! Inside the stream: one compression flag byte, the (optionally zstd-compressed) sequence
//! of postcard-encoded [`Item`]s, and the sender's 64-byte Ed25519 signature. A *plaintext*
//! bundle ([`WriteOptions::plaintext`], magic `P`) carries the same bytes without the
//! encryption, for links where encryption is not allowed; the signature still authenticates
//! all of it.
//!
//! This crate is pure: it reads from any `Read` and writes to any `Write`, takes the salt as
//! an argument and leaves signing and signature checking to the caller through the
//! [`Trailer`] digest, because the signed message includes the sender's commit-chain hash,
//! which only the caller's store knows.
//!
//! ```
//! use ferry_bundle::{BundleReader, BundleWriter, DatasetKey, Header, Item, WriteOptions};
//! use ferry_model::{crypto::SecretKey, DatasetId, MemberId, VersionVector};
//!
//! let key = DatasetKey([9; 32]);
//! let header = Header::new(DatasetId([1; 8]), MemberId(2), [5; 16]);
//! let signer = SecretKey::from_bytes([3; 32]);
//! let mut w = BundleWriter::new(Vec::new(), &header, &key, WriteOptions::default()).unwrap();
//! w.push(&Item::Receipt(VersionVector::new())).unwrap();
//! let (bytes, digest) = w.finish(|digest| signer.sign(digest)).unwrap();
//!
//! let mut r = BundleReader::open(&bytes[..]).unwrap().decrypt(&key).unwrap();
//! assert_eq!(r.header().sender, MemberId(2));
//! assert_eq!(r.next_item().unwrap(), Some(Item::Receipt(VersionVector::new())));
//! assert_eq!(r.next_item().unwrap(), None);
//! let trailer = r.finish().unwrap();
//! assert_eq!(trailer.digest, digest);
//! assert!(signer.public().verify(&trailer.digest, &trailer.signature));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod grant;
mod header;
mod item;
mod reader;
pub mod stream;
mod writer;

pub use grant::{
    EpochGrant, EpochId, GrantBody, GrantError, Keyring, Learned, MAX_EPOCH, MAX_GRANT, Removal,
    Standing, VERSION_EPOCHS, VERSION_KEYS, Wrap, grant_message,
};
pub use header::{
    DatasetKey, Header, MAGIC, MAGIC_PLAIN, READ_VERSIONS, READS, VERSION, VERSION_ADMINS,
    VERSION_COLUMNS, VERSION_DICTS, VERSION_GHOSTS, carries_ghosts, salt_len,
};
pub use item::{Item, RunProof};
pub use reader::{BundleReader, Opener, Trailer};
pub use writer::{BundleWriter, WriteOptions};

// wire-format: begin
/// Size of the signature at the end of the plaintext stream.
pub const SIGNATURE_LEN: usize = 64;

/// Largest encoded item a reader accepts (a commit at its limit plus framing).
pub const MAX_ITEM: usize = ferry_model::limits::MAX_COMMIT + 64;

/// Most runs one bundle may carry (an honest bundle has at most one per member).
pub const MAX_RUNS: usize = 65_536;

/// Largest commit number (commit numbers fit a signed 64-bit integer in every store).
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// Most `PeerReceipt` items one bundle may carry (version 1 writers send none; readers
/// ignore them).
pub const MAX_PEER_RECEIPTS: usize = 64;

/// A compressed payload may inflate to at most this many bytes whatever its size…
pub const EXPANSION_FLOOR: u64 = 64 * 1024 * 1024;

/// …plus this many times the compressed bytes read so far. Real ferry payloads compress
/// about 5 to 20 times; a payload built to inflate without end is refused early.
pub const EXPANSION_RATIO: u64 = 256;
// wire-format: end

/// Why a bundle could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Reading or writing the underlying bytes failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes do not start like a ferry bundle.
    #[error("not a ferry bundle (wrong magic byte)")]
    NotABundle,
    /// The bundle uses a format version this build does not know.
    #[error(
        "bundle format version {0} is not supported by this ferry (it reads versions 1, 3, 5, 7, 9, 11 and 13): it was made by a newer ferry; update ferry on this laptop"
    )]
    UnsupportedVersion(u8),
    /// The header ended early or is malformed.
    #[error("bundle header is truncated or malformed")]
    BadHeader,
    /// A chunk did not authenticate: the bundle was truncated, corrupted, or encrypted under
    /// another key.
    #[error(
        "bundle is damaged or truncated, or was made with a different dataset key (chunk {chunk} failed authentication)"
    )]
    Decrypt {
        /// Index of the failing chunk.
        chunk: u64,
    },
    /// The compressed payload is corrupt.
    #[error("bundle payload does not decompress: {0}")]
    Decompress(std::io::Error),
    /// The payload's items are malformed or out of order.
    #[error("bundle payload is malformed: {0}")]
    Malformed(String),
    /// The payload is too short to hold a signature.
    #[error("bundle is too short to carry a signature")]
    NoSignature,
    /// The bundle holds more of something than the format allows (bundles/SPEC.md §8);
    /// refused before the work.
    #[error("bundle exceeds a limit of the format: {0}")]
    Limit(String),
    /// The payload is compressed with a dataset dictionary (bundles/SPEC.md §18) the reader
    /// did not supply.
    #[error(
        "the bundle is compressed with the dataset's dictionary number {0}, which this laptop has not received yet; it reads once a bundle from an admin brings it"
    )]
    NoDictionary(u32),
}

/// One of the dataset's zstd dictionaries (bundles/SPEC.md §18): its number and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dictionary {
    /// Its number `K` (the record `_dicts/K`), 1 or more.
    pub number: u32,
    /// The dictionary, as zstd takes it.
    pub bytes: Vec<u8>,
}

// wire-format: begin
/// The largest dictionary a reader uses (bundles/SPEC.md §18).
pub const MAX_DICTIONARY: usize = 64 * 1024;

/// What a bundle's digest takes in for its dictionary, after the dictionary's number.
pub fn dictionary_hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::Hasher::new_derive_key("ferry v13 dictionary")
        .update(bytes)
        .finalize()
        .as_bytes()
}
// wire-format: end

impl From<postcard::Error> for BundleError {
    fn from(e: postcard::Error) -> Self {
        match ferry_model::bounded::take_exceeded() {
            Some(limit) => BundleError::Limit(limit.to_string()),
            None => BundleError::Malformed(e.to_string()),
        }
    }
}
