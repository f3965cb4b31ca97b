//! The plaintext header and the per-bundle key.

use crate::BundleError;
use ferry_model::{DatasetId, MemberId};
use std::io::Read;

/// First byte of every sealed (encrypted) bundle (`F`).
pub const MAGIC: u8 = b'F';
/// First byte of a plaintext bundle (`P`): signed but not encrypted, for links where
/// encryption is not allowed (amateur radio); bundles/SPEC.md §3.3.
pub const MAGIC_PLAIN: u8 = b'P';
/// The format version this crate writes unless a bundle needs more.
pub const VERSION: u8 = 1;
/// Version 3: version 1 whose snapshot record states also carry the values deletes removed
/// (ghosts, bundles/SPEC.md §13). Written only for a snapshot that holds any. (Version 2 is
/// never used: it is the published example of a version readers do not know, vector
/// `unknown-version`.)
pub const VERSION_GHOSTS: u8 = 3;
/// The versions this crate reads.
pub const READ_VERSIONS: [u8; 2] = [VERSION, VERSION_GHOSTS];

/// The plaintext start of a bundle: what a reader needs before it can decrypt (27–31 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The dataset the bundle belongs to.
    pub dataset: DatasetId,
    /// The member that made (and signed) the bundle.
    pub sender: MemberId,
    /// 16 fresh random bytes; the bundle key is derived from them, so no two bundles share
    /// a key even if a node's state is restored from a backup or its disk is cloned.
    pub salt: [u8; 16],
}

impl Header {
    /// The header's bytes: magic, version, dataset id, sender (LEB128), salt.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_as(false)
    }

    /// The header's bytes for a sealed bundle, or (`plaintext`) a plaintext one.
    pub fn encode_as(&self, plaintext: bool) -> Vec<u8> {
        self.encode_version(plaintext, VERSION)
    }

    /// The header's bytes for a bundle of format `version`.
    pub fn encode_version(&self, plaintext: bool, version: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(31);
        out.push(if plaintext { MAGIC_PLAIN } else { MAGIC });
        out.push(version);
        out.extend_from_slice(&self.dataset.0);
        let mut n = self.sender.0;
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(&self.salt);
        out
    }

    /// Reads a header (of a sealed or a plaintext bundle), returning it and its exact bytes;
    /// the first byte says which.
    pub fn read<R: Read>(r: &mut R) -> Result<(Header, Vec<u8>), BundleError> {
        let mut raw = Vec::with_capacity(31);
        let mut byte = || -> Result<u8, BundleError> {
            let mut b = [0u8];
            r.read_exact(&mut b).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => BundleError::BadHeader,
                _ => BundleError::Io(e),
            })?;
            raw.push(b[0]);
            Ok(b[0])
        };
        if !matches!(byte()?, MAGIC | MAGIC_PLAIN) {
            return Err(BundleError::NotABundle);
        }
        let v = byte()?;
        // Versions are small numbers; a text character here means a file that merely starts
        // with the letter (a ZIP's "PK", a text file), not a bundle from the future.
        if v >= 0x20 {
            return Err(BundleError::NotABundle);
        }
        if !READ_VERSIONS.contains(&v) {
            return Err(BundleError::UnsupportedVersion(v));
        }
        let mut dataset = [0u8; 8];
        for b in &mut dataset {
            *b = byte()?;
        }
        let mut sender: u64 = 0;
        for i in 0..5 {
            let b = byte()?;
            sender |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                if (i > 0 && b == 0) || sender > u32::MAX as u64 {
                    return Err(BundleError::BadHeader);
                }
                break;
            }
            if i == 4 {
                return Err(BundleError::BadHeader);
            }
        }
        let mut salt = [0u8; 16];
        for b in &mut salt {
            *b = byte()?;
        }
        Ok((
            Header {
                dataset: DatasetId(dataset),
                sender: MemberId(sender as u32),
                salt,
            },
            raw,
        ))
    }
}

/// The dataset's shared 32-byte secret. Every member holds it; nobody else can read or make
/// bundles of the dataset.
#[derive(Clone, PartialEq, Eq)]
pub struct DatasetKey(pub [u8; 32]);

impl std::fmt::Debug for DatasetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatasetKey(…)")
    }
}

impl DatasetKey {
    /// The key of one bundle: BLAKE3 in key-derivation mode over the dataset key and the
    /// whole header (so every header byte is authenticated by the stream).
    pub fn bundle_key(&self, header_bytes: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("ferry v1 bundle key");
        h.update(&self.0);
        h.update(header_bytes);
        *h.finalize().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_with_short_member_numbers() {
        for (member, len) in [(1u32, 27usize), (127, 27), (128, 28), (u32::MAX, 31)] {
            let h = Header {
                dataset: DatasetId([0xab; 8]),
                sender: MemberId(member),
                salt: [7; 16],
            };
            let bytes = h.encode();
            assert_eq!(bytes.len(), len, "member {member}");
            let (back, raw) = Header::read(&mut &bytes[..]).unwrap();
            assert_eq!((back, raw), (h, bytes));
        }
    }

    #[test]
    fn header_errors_name_the_problem() {
        assert!(matches!(
            Header::read(&mut &b"PK\x03\x04"[..]),
            Err(BundleError::NotABundle)
        ));
        assert!(matches!(
            Header::read(&mut &b"Plain text"[..]),
            Err(BundleError::NotABundle)
        ));
        assert!(matches!(
            Header::read(&mut &[MAGIC, 2][..]),
            Err(BundleError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            Header::read(&mut &[MAGIC, 4][..]),
            Err(BundleError::UnsupportedVersion(4))
        ));
        assert!(matches!(
            Header::read(&mut &[MAGIC_PLAIN, 0][..]),
            Err(BundleError::UnsupportedVersion(0))
        ));
        // Version 3 is read (it ends early here, after its version byte).
        assert!(matches!(
            Header::read(&mut &[MAGIC, VERSION_GHOSTS, 0][..]),
            Err(BundleError::BadHeader)
        ));
        assert!(matches!(
            Header::read(&mut &[MAGIC, 1, 0, 0][..]),
            Err(BundleError::BadHeader)
        ));
        // A non-minimal varint for the sender.
        let mut bad = vec![MAGIC, 1];
        bad.extend_from_slice(&[0; 8]);
        bad.extend_from_slice(&[0x81, 0x00]);
        bad.extend_from_slice(&[0; 16]);
        assert!(matches!(
            Header::read(&mut &bad[..]),
            Err(BundleError::BadHeader)
        ));
    }
}
