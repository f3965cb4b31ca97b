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
/// Version 7: version 5's header (the key epoch, which may be 0 here, and a grant) for a
/// dataset with more than one admin, whose readers apply the rules of bundles/SPEC.md §15
/// (admin actions judged in their causal context, member-number ranges). Written for every
/// bundle once the writer knows of a promotion. (Version 6 is never used: vector
/// `unknown-version-6`.)
pub const VERSION_ADMINS: u8 = 7;
/// Version 11: version 9 whose runs may carry commits in the columnar form (item kind 7,
/// bundles/SPEC.md §17), and whose header names its grant's own format. Written for a
/// bundle that carries a columnar commit. (Version 10 is never used: vector
/// `unknown-version-10`.)
pub const VERSION_COLUMNS: u8 = 11;
/// Version 13: version 11 whose payload may be compressed with one of the dataset's zstd
/// dictionaries (flag 2, bundles/SPEC.md §18). Written for a bundle that uses one. (Version
/// 12 is never used: vector `unknown-version-12`.)
pub const VERSION_DICTS: u8 = 13;

/// The versions this crate reads.
pub const READ_VERSIONS: [u8; 7] = [
    VERSION,
    VERSION_GHOSTS,
    crate::VERSION_EPOCHS,
    VERSION_ADMINS,
    crate::VERSION_KEYS,
    VERSION_COLUMNS,
    VERSION_DICTS,
];

/// The highest version this crate reads, which a laptop announces in its `_members/N`
/// field `reads` (bundles/SPEC.md §17.2).
pub const READS: u8 = VERSION_DICTS;

/// Whether a header of format `version` is laid out as version 11's (versions 11 and 13).
fn v11_layout(version: u8) -> bool {
    matches!(version, VERSION_COLUMNS | VERSION_DICTS)
}

/// Whether a snapshot record state of format `version` carries ghosts (versions 3 and up).
pub fn carries_ghosts(version: u8) -> bool {
    matches!(
        version,
        VERSION_GHOSTS
            | crate::VERSION_EPOCHS
            | VERSION_ADMINS
            | crate::VERSION_KEYS
            | VERSION_COLUMNS
            | VERSION_DICTS
    )
}

/// Whether a header of format `version` holds the key epoch and a grant (versions 5 and up).
fn has_epoch(version: u8) -> bool {
    matches!(
        version,
        crate::VERSION_EPOCHS
            | VERSION_ADMINS
            | crate::VERSION_KEYS
            | VERSION_COLUMNS
            | VERSION_DICTS
    )
}

/// Whether a header of format `version` names the signer of its epoch (versions 9, 11 and
/// 13).
fn has_signer(version: u8) -> bool {
    version == crate::VERSION_KEYS || v11_layout(version)
}

/// How many salt bytes a header of format `version` holds: 16, and 12 from version 11
/// (2⁴⁸ bundles before two are likely to share one; bundles/SPEC.md §17). The bytes a
/// shorter salt leaves out are zero in [`Header::salt`] once read.
pub fn salt_len(version: u8) -> usize {
    if version >= VERSION_COLUMNS { 12 } else { 16 }
}

/// The plaintext start of a bundle: what a reader needs before it can decrypt (24–31 bytes,
/// and a grant).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The dataset the bundle belongs to.
    pub dataset: DatasetId,
    /// The member that made (and signed) the bundle.
    pub sender: MemberId,
    /// 16 fresh random bytes; the bundle key is derived from them, so no two bundles share
    /// a key even if a node's state is restored from a backup or its disk is cloned.
    pub salt: [u8; 16],
    /// The key epoch that sealed it (0: the dataset key; version 5 only for 1 and more).
    pub epoch: u32,
    /// The admin that began that epoch: member 1 but in version 9 (bundles/SPEC.md §16).
    pub signer: MemberId,
    /// An epoch grant (bundles/SPEC.md §14), or empty; only in versions 5 and up.
    pub grant: Vec<u8>,
    /// The format of `grant`: [`crate::VERSION_EPOCHS`] (a version 5 grant, in headers of
    /// versions 5 and 7) or [`crate::VERSION_KEYS`] (version 9); a version 11 header names
    /// it (bundles/SPEC.md §17).
    pub grant_format: u8,
}

impl Header {
    /// A header for epoch 0, without a grant.
    pub fn new(dataset: DatasetId, sender: MemberId, salt: [u8; 16]) -> Header {
        Header {
            dataset,
            sender,
            salt,
            epoch: 0,
            signer: MemberId(1),
            grant: Vec::new(),
            grant_format: crate::VERSION_EPOCHS,
        }
    }

    /// The key epoch that sealed the bundle.
    pub fn epoch_id(&self) -> crate::EpochId {
        crate::EpochId {
            number: self.epoch,
            signer: self.signer,
        }
    }

    /// The version a bundle with this header is written in, for a payload of
    /// `payload_version` (1, or 3 for a snapshot with ghosts, or 7 in a dataset with more
    /// than one admin): otherwise a sealed bundle of an epoch after 0 is version 5.
    pub fn version_for(&self, plaintext: bool, payload_version: u8) -> u8 {
        if v11_layout(payload_version) {
            payload_version
        } else if payload_version == crate::VERSION_KEYS && !plaintext {
            crate::VERSION_KEYS
        } else if payload_version >= VERSION_ADMINS {
            VERSION_ADMINS
        } else if !plaintext && self.epoch > 0 {
            crate::VERSION_EPOCHS
        } else {
            payload_version
        }
    }

    /// The header's bytes: magic, version, dataset id, sender (LEB128), salt.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_as(false)
    }

    /// The header's bytes for a sealed bundle, or (`plaintext`) a plaintext one.
    pub fn encode_as(&self, plaintext: bool) -> Vec<u8> {
        self.encode_version(plaintext, VERSION)
    }

    /// The header's bytes for a bundle of format `version` (versions 5 and 7 add the epoch
    /// and the grant).
    pub fn encode_version(&self, plaintext: bool, version: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(31 + self.grant.len());
        out.push(if plaintext { MAGIC_PLAIN } else { MAGIC });
        out.push(version);
        out.extend_from_slice(&self.dataset.0);
        varint(&mut out, self.sender.0 as u64);
        out.extend_from_slice(&self.salt[..salt_len(version)]);
        if has_epoch(version) {
            varint(&mut out, self.epoch as u64);
            // Version 11 says nothing more of epoch 0: member 1's, without a grant.
            if v11_layout(version) && self.epoch == 0 {
                return out;
            }
            if has_signer(version) {
                varint(&mut out, self.signer.0 as u64);
            }
            if v11_layout(version) && !self.grant.is_empty() {
                varint(&mut out, self.grant.len() as u64 + 1);
                out.push(self.grant_format);
            } else {
                varint(&mut out, self.grant.len() as u64);
            }
            out.extend_from_slice(&self.grant);
        }
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
        let varint32 = |byte: &mut dyn FnMut() -> Result<u8, BundleError>| {
            let mut n: u64 = 0;
            for i in 0..5 {
                let b = byte()?;
                n |= ((b & 0x7f) as u64) << (7 * i);
                if b & 0x80 == 0 {
                    if (i > 0 && b == 0) || n > u32::MAX as u64 {
                        return Err(BundleError::BadHeader);
                    }
                    return Ok(n as u32);
                }
            }
            Err(BundleError::BadHeader)
        };
        let sender = varint32(&mut byte)?;
        let mut salt = [0u8; 16];
        for b in &mut salt[..salt_len(v)] {
            *b = byte()?;
        }
        let (mut epoch, mut signer, mut len) = (0, 1, 0);
        if has_epoch(v) {
            epoch = varint32(&mut byte)?;
        }
        if has_epoch(v) && !(v11_layout(v) && epoch == 0) {
            if has_signer(v) {
                signer = varint32(&mut byte)?;
            }
            len = varint32(&mut byte)? as usize;
            // Version 5 is only for epochs after 0; versions 7 and 8 may name epoch 0 (the
            // dataset key, member 1's), without a grant.
            let zero = epoch == 0 && (v == crate::VERSION_EPOCHS || len > 0 || signer != 1);
            let max = crate::MAX_GRANT + usize::from(v11_layout(v));
            if zero || signer == 0 || epoch > crate::MAX_EPOCH || len > max {
                return Err(BundleError::BadHeader);
            }
        }
        let mut grant = vec![0u8; len];
        r.read_exact(&mut grant).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => BundleError::BadHeader,
            _ => BundleError::Io(e),
        })?;
        raw.extend_from_slice(&grant);
        // Version 11 names the grant's own format in its first byte (SPEC §17).
        let grant_format = match v {
            crate::VERSION_KEYS => crate::VERSION_KEYS,
            VERSION_COLUMNS | VERSION_DICTS if !grant.is_empty() => {
                let f = grant.remove(0);
                if f != crate::VERSION_EPOCHS && f != crate::VERSION_KEYS {
                    return Err(BundleError::BadHeader);
                }
                f
            }
            _ => crate::VERSION_EPOCHS,
        };
        Ok((
            Header {
                dataset: DatasetId(dataset),
                sender: MemberId(sender),
                salt,
                epoch,
                signer: MemberId(signer),
                grant,
                grant_format,
            },
            raw,
        ))
    }
}

/// Appends `n` as a minimal LEB128 varint.
fn varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
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
            let h = Header::new(DatasetId([0xab; 8]), MemberId(member), [7; 16]);
            let bytes = h.encode();
            assert_eq!(bytes.len(), len, "member {member}");
            let (back, raw) = Header::read(&mut &bytes[..]).unwrap();
            assert_eq!((back, raw), (h, bytes));
        }
    }

    /// Version 11 names its grant's own format, so a bundle that must carry columnar
    /// commits can carry member 1's version 5 grant as well as a version 9 one; versions
    /// 5, 7 and 9 keep theirs implied.
    #[test]
    fn a_version_11_header_names_its_grants_format() {
        // (Version 11 keeps 12 salt bytes.)
        let mut salt = [7u8; 16];
        salt[12..].fill(0);
        for format in [crate::VERSION_EPOCHS, crate::VERSION_KEYS] {
            let h = Header {
                epoch: 2,
                signer: MemberId(if format == crate::VERSION_KEYS { 3 } else { 1 }),
                grant: vec![0x5a; 40],
                grant_format: format,
                ..Header::new(DatasetId([1; 8]), MemberId(4), salt)
            };
            let bytes = h.encode_version(false, VERSION_COLUMNS);
            let (back, raw) = Header::read(&mut &bytes[..]).unwrap();
            assert_eq!((back, raw), (h.clone(), bytes.clone()));
            // The format byte sits first in the grant field; any other value is refused.
            let at = bytes.len() - h.grant.len() - 1;
            assert_eq!(bytes[at], format);
            for other in [0u8, 1, 7, 11, 255] {
                let mut bad = bytes.clone();
                bad[at] = other;
                assert!(matches!(
                    Header::read(&mut &bad[..]),
                    Err(BundleError::BadHeader)
                ));
            }
        }
        // Epoch 0 is one byte: no signer, no grant, no format.
        let h = Header::new(DatasetId([1; 8]), MemberId(4), salt);
        let bytes = h.encode_version(true, VERSION_COLUMNS);
        assert_eq!(bytes.len(), 2 + 8 + 1 + 12 + 1);
        assert_eq!(h.encode_version(true, VERSION).len(), 27);
        assert_eq!(Header::read(&mut &bytes[..]).unwrap().0, h);
        // A 16-byte salt is written as its first 12 bytes.
        let long = Header::new(DatasetId([1; 8]), MemberId(4), [7; 16]);
        assert_eq!(long.encode_version(true, VERSION_COLUMNS), bytes);
        // Epoch 1 of member 1 without a grant names its signer and an empty grant.
        let e1 = Header {
            epoch: 1,
            ..h.clone()
        };
        let b1 = e1.encode_version(false, VERSION_COLUMNS);
        assert_eq!(b1.len(), 24 + 2);
        assert_eq!(Header::read(&mut &b1[..]).unwrap().0, e1);
        // A version 9 header's grant is a version 9 grant, read as such.
        let h9 = Header {
            epoch: 1,
            signer: MemberId(2),
            grant: vec![1; 10],
            grant_format: crate::VERSION_KEYS,
            ..Header::new(DatasetId([1; 8]), MemberId(4), [7; 16])
        };
        let b9 = h9.encode_version(false, crate::VERSION_KEYS);
        assert_eq!(Header::read(&mut &b9[..]).unwrap().0, h9);
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
