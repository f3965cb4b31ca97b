//! A home folder's passphrase (issue 13, encryption at rest).
//!
//! With a passphrase, the store (`ferry.db`: identity, dataset keys, records, history) is
//! encrypted with SQLCipher under a random 256-bit *store key*. The store key is kept in
//! `HOME/store.key`, sealed under a key derived from the passphrase:
//!
//! ```text
//! store.key = "ferrylk1" ‖ salt(16) ‖ m_kib u32le ‖ t u32le ‖ p u32le      (header, 36 bytes)
//!             ‖ ChaCha20-Poly1305(Argon2id(passphrase, salt; m_kib, t, p), nonce 0,
//!                                 associated data = header, store key)    (48 bytes)
//!             ‖ BLAKE3(everything before)                                  (32 bytes)
//! ```
//!
//! Changing the passphrase draws a new store key too (crate::passphrase); a wrong
//! passphrase fails the AEAD before the store is touched. The checksum tells damage from a
//! wrong passphrase.

use crate::invite::{KdfParams, argon2id};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const MAGIC: &[u8; 8] = b"ferrylk1";
const HEADER_LEN: usize = 8 + 16 + 12;
const SEALED_LEN: usize = 32 + 16;
const FILE_LEN: usize = HEADER_LEN + SEALED_LEN + 32;

/// The key derivation for passphrases: 64 MiB, 3 passes, 1 lane (RFC 9106's second
/// recommended setting). About a quarter of a second once per command on a laptop; a
/// passphrase is chosen by a person, so guessing must cost.
pub const PASSPHRASE_KDF: KdfParams = KdfParams {
    m_kib: 64 * 1024,
    t: 3,
    p: 1,
};

/// Why `store.key` does not give the store key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LockError {
    /// The file is damaged (its checksum or layout).
    Damaged,
    /// The passphrase is not the one it was sealed with.
    WrongPassphrase,
}

/// `store.key`'s bytes: `store_key` sealed under `passphrase` with a fresh `salt`.
pub(crate) fn seal(
    store_key: &[u8; 32],
    passphrase: &str,
    salt: [u8; 16],
    kdf: KdfParams,
) -> Vec<u8> {
    let mut out = seal_key(MAGIC, store_key, passphrase.as_bytes(), salt, kdf);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// The store key `bytes` (a `store.key` file) seal under `passphrase`.
pub(crate) fn open(bytes: &[u8], passphrase: &str) -> Result<[u8; 32], LockError> {
    if bytes.len() != FILE_LEN {
        return Err(LockError::Damaged);
    }
    let (body, sum) = bytes.split_at(FILE_LEN - 32);
    if blake3::hash(body).as_bytes() != sum {
        return Err(LockError::Damaged);
    }
    open_key(MAGIC, body, passphrase.as_bytes())
}

/// Bytes that start a file sealed by a secret a person holds (a passphrase here, a
/// one-time code for a backup): `magic` ‖ salt ‖ the Argon2id settings, then `key` sealed
/// under Argon2id of `secret` with that header as associated data (`SEALED_KEY_LEN` bytes).
pub(crate) fn seal_key(
    magic: &[u8; 8],
    key: &[u8; 32],
    secret: &[u8],
    salt: [u8; 16],
    kdf: KdfParams,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(FILE_LEN);
    out.extend_from_slice(magic);
    out.extend_from_slice(&salt);
    for n in [kdf.m_kib, kdf.t, kdf.p] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    let kek = argon2id(secret, &salt, kdf).expect("settings within limits");
    let sealed = ChaCha20Poly1305::new(Key::from_slice(&kek))
        .encrypt(
            &Nonce::default(),
            Payload {
                msg: key,
                aad: &out,
            },
        )
        .expect("32 bytes seal");
    out.extend_from_slice(&sealed);
    out
}

/// How many bytes [`seal_key`] writes.
pub(crate) const SEALED_KEY_LEN: usize = HEADER_LEN + SEALED_LEN;

/// The key [`seal_key`] sealed at the start of `bytes` (checked for damage by the caller),
/// opened with `secret`.
pub(crate) fn open_key(
    magic: &[u8; 8],
    bytes: &[u8],
    secret: &[u8],
) -> Result<[u8; 32], LockError> {
    if bytes.len() < SEALED_KEY_LEN || !bytes.starts_with(magic) {
        return Err(LockError::Damaged);
    }
    let (header, rest) = bytes.split_at(HEADER_LEN);
    let u32_at = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    let kdf = KdfParams {
        m_kib: u32_at(24),
        t: u32_at(28),
        p: u32_at(32),
    };
    let salt: [u8; 16] = header[8..24].try_into().expect("16 bytes");
    let kek = argon2id(secret, &salt, kdf).ok_or(LockError::Damaged)?;
    let key = ChaCha20Poly1305::new(Key::from_slice(&kek))
        .decrypt(
            &Nonce::default(),
            Payload {
                msg: &rest[..SEALED_LEN],
                aad: header,
            },
        )
        .map_err(|_| LockError::WrongPassphrase)?;
    key.try_into().map_err(|_| LockError::Damaged)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    #[test]
    fn the_store_key_opens_with_its_passphrase_only_and_damage_is_told_apart() {
        let file = seal(&[9; 32], "mango tree by the well", [3; 16], CHEAP);
        assert_eq!(open(&file, "mango tree by the well"), Ok([9; 32]));
        assert_eq!(
            open(&file, "mango tree by the wall"),
            Err(LockError::WrongPassphrase)
        );
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 1;
            assert_eq!(
                open(&bad, "mango tree by the well"),
                Err(LockError::Damaged),
                "{i}"
            );
        }
        assert_eq!(open(&file[..file.len() - 1], "x"), Err(LockError::Damaged));
        // The store key is not in the file.
        assert!(!file.windows(32).any(|w| w == [9; 32]));
    }
}
