//! Invitation files sealed with a one-time code: the code, the file format, sealing and
//! opening. Pure: the code's randomness and the salt come in as arguments; no files, no
//! clock, no OS randomness (the node draws them and writes the file).
//!
//! An invitation holds the dataset key and the invitation secret, and it travels on a USB
//! stick, where deleting a file does not erase its bytes. So the file is encrypted with a
//! key derived from a short code that `ferry invite` prints and that travels another way
//! (read out, or written on paper): the file alone, recovered from an image of the stick,
//! is useless.
//!
//! # The code
//!
//! 12 symbols of Crockford's base32 (`0-9A-Z` without `I L O U`), 60 bits from the OS
//! random generator, shown as `XXXX-XXXX-XXXX`. Input is case-insensitive, spaces and dashes
//! are ignored, `I` and `L` read as `1` and `O` as `0`; the normalized form (12 upper-case
//! ASCII symbols) is what the key derivation takes.
//!
//! # The file (`ferryin2`)
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `ferryin2` |
//! | 16 | salt, random per file |
//! | 4 | Argon2id memory in KiB, u32 little-endian |
//! | 4 | Argon2id passes, u32 little-endian |
//! | 4 | Argon2id lanes, u32 little-endian |
//! | n + 16 | ChaCha20-Poly1305 (RFC 8439) of `postcard(Invitation)` with its tag |
//! | 32 | BLAKE3 of every byte before it |
//!
//! The key is Argon2id v1.3 (RFC 9106) of the normalized code with the salt, 32 bytes. The
//! nonce is 12 zero bytes: the salt is fresh for every file, so every key seals exactly one
//! message. The associated data is the 36 header bytes. The closing BLAKE3 sum holds no
//! secret (it is a hash of bytes that are already in the file); it tells a damaged or
//! truncated file from a wrong code, without running the key derivation on a damaged file.
//! Opening refuses key-derivation settings above [`KdfParams::MAX_M_KIB`] and
//! [`KdfParams::MAX_T`], so an altered file cannot make the joining laptop spend more than
//! 64 MiB or a few seconds.
//!
//! Earlier ferry wrote invitations in clear: magic `ferryinv`, then `postcard(Invitation)`.
//! [`parse`] still reads them, as [`Parsed::Clear`].

use argon2::{Algorithm, Argon2, Block, Version};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ferry_sync::Invitation;

/// Bytes that open an invitation sealed with a code.
pub const SEALED_MAGIC: &[u8; 8] = b"ferryin2";
/// Bytes that open an invitation in clear (earlier ferry).
pub const CLEAR_MAGIC: &[u8; 8] = b"ferryinv";
/// Largest invitation file read: a real one is a few hundred bytes.
pub const MAX_FILE: usize = 64 * 1024;

/// Crockford's base32 alphabet.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Symbols in a code.
const CODE_LEN: usize = 12;
/// magic, salt, three u32 settings.
const HEADER_LEN: usize = 8 + 16 + 12;
const TAG_LEN: usize = 16;
const SUM_LEN: usize = 32;

/// A one-time invitation code: 12 symbols of Crockford's base32 (60 bits).
#[derive(Clone, PartialEq, Eq)]
pub struct InviteCode([u8; CODE_LEN]);

impl std::fmt::Debug for InviteCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A code is a secret: keep it out of logs and panic messages.
        f.write_str("InviteCode(..)")
    }
}

impl std::fmt::Display for InviteCode {
    /// `XXXX-XXXX-XXXX`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, group) in self.0.chunks(4).enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(std::str::from_utf8(group).expect("the alphabet is ASCII"))?;
        }
        Ok(())
    }
}

/// Why a typed code is not a code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodeError {
    /// A character that is neither a symbol of the code, a space nor a dash.
    #[error("it holds a character that no code has")]
    Character,
    /// Not 12 symbols.
    #[error("a code has 12 letters and digits")]
    Length,
}

impl InviteCode {
    /// The code made from 8 random bytes (60 of their bits are used).
    pub fn from_random(random: [u8; 8]) -> InviteCode {
        let bits = u64::from_le_bytes(random);
        let mut code = [0u8; CODE_LEN];
        for (i, c) in code.iter_mut().enumerate() {
            *c = ALPHABET[((bits >> (5 * i)) & 31) as usize];
        }
        InviteCode(code)
    }

    /// Reads a code as a person typed it: any case, spaces and dashes ignored, `I`/`L` as
    /// `1` and `O` as `0`.
    pub fn parse(typed: &str) -> Result<InviteCode, CodeError> {
        let mut code = [0u8; CODE_LEN];
        let mut n = 0;
        for ch in typed.chars() {
            if ch == '-' || ch.is_whitespace() {
                continue;
            }
            let c = match ch.to_ascii_uppercase() {
                'I' | 'L' => b'1',
                'O' => b'0',
                c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c as u8,
                _ => return Err(CodeError::Character),
            };
            *code.get_mut(n).ok_or(CodeError::Length)? = c;
            n += 1;
        }
        if n != CODE_LEN {
            return Err(CodeError::Length);
        }
        Ok(InviteCode(code))
    }

    /// The normalized code: 12 upper-case ASCII symbols, what the key derivation takes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Argon2id settings, stored in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// What `ferry invite` uses: 19 MiB, 2 passes, 1 lane (RFC 9106's and OWASP's smallest
    /// recommended Argon2id setting; with a 60-bit code, guessing is out of reach anyway).
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };
    /// The most memory an invitation file may ask for when it is opened.
    pub const MAX_M_KIB: u32 = 64 * 1024;
    /// The most passes an invitation file may ask for when it is opened.
    pub const MAX_T: u32 = 10;
    /// The most lanes an invitation file may ask for when it is opened.
    pub const MAX_P: u32 = 4;

    pub(crate) fn within_limits(self) -> bool {
        (1..=Self::MAX_P).contains(&self.p)
            && (8 * self.p..=Self::MAX_M_KIB).contains(&self.m_kib)
            && (1..=Self::MAX_T).contains(&self.t)
    }
}

/// Why an invitation file cannot be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// The file does not start with either magic.
    #[error("it does not start like an invitation file")]
    NotAnInvitation,
    /// Truncated, altered, or a checksum mismatch.
    #[error("the file is damaged or truncated")]
    Damaged,
    /// The file is intact but the code does not open it.
    #[error("the code does not open this invitation")]
    WrongCode,
}

/// The key that seals an invitation: Argon2id of the normalized code with the salt.
/// `None` when the settings are outside what Argon2 (or [`KdfParams::within_limits`])
/// accepts.
fn derive_key(code: &InviteCode, salt: &[u8; 16], kdf: KdfParams) -> Option<[u8; 32]> {
    argon2id(code.as_bytes(), salt, kdf)
}

/// Argon2id (RFC 9106, version 0x13) of `secret` and `salt` under `kdf`, 32 bytes; `None`
/// when `kdf` is outside [`KdfParams`]' limits.
pub(crate) fn argon2id(secret: &[u8], salt: &[u8; 16], kdf: KdfParams) -> Option<[u8; 32]> {
    if !kdf.within_limits() {
        return None;
    }
    let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32)).ok()?;
    let mut memory = vec![Block::default(); params.block_count()];
    let mut key = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into_with_memory(secret, salt, &mut key, &mut memory)
        .ok()?;
    Some(key)
}

fn header(salt: &[u8; 16], kdf: KdfParams) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(SEALED_MAGIC);
    h.extend_from_slice(salt);
    for n in [kdf.m_kib, kdf.t, kdf.p] {
        h.extend_from_slice(&n.to_le_bytes());
    }
    h
}

/// What a sealed invitation may carry after the invitation itself: `postcard(InviteExtras)`
/// follows `postcard(Invitation)` inside the encryption only when it says something, so a
/// file without it is byte for byte what earlier ferry wrote (and earlier ferry refuses a
/// file that carries it as damaged, rather than ignoring its limit).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InviteExtras {
    /// When the invitation expires (ms since the Unix epoch, by the admin's clock): the
    /// joining laptop refuses it after that by its own clock, and the admin refuses a join
    /// whose first bundle reaches it later.
    pub expires_ms: Option<u64>,
    /// The keys of key epochs 1, 2, … (bundles/SPEC.md §14) when the dataset moved past
    /// epoch 0 before the invitation was made (the invitation's dataset key is epoch 0).
    pub epoch_keys: Vec<[u8; 32]>,
    /// When an admin other than the founder made the invitation (bundles/SPEC.md §15): the
    /// founding admin's key and label. The invitation's own admin key and label are then
    /// the inviting admin's.
    pub founder: Option<Founder>,
    /// The keys of key epochs begun by other admins than the founder, or not numbered
    /// densely (bundles/SPEC.md §16): (number, signer, key). Written after the fields above
    /// only when there are any, so a file without them is what earlier ferry wrote.
    #[serde(skip)]
    pub other_epochs: Vec<(u32, u32, [u8; 32])>,
}

/// The founding admin, as an invitation by another admin names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Founder {
    /// Its public key (the dataset's admin key of §6).
    pub key: [u8; 32],
    /// Its label.
    pub label: String,
}

/// Extras as ferry wrote them before more than one admin (an expiry and epoch keys).
#[derive(serde::Deserialize)]
struct ExtrasEpochs {
    expires_ms: Option<u64>,
    epoch_keys: Vec<[u8; 32]>,
}

/// Extras as the first ferry that wrote them did (an expiry only).
#[derive(serde::Deserialize)]
struct ExtrasExpiry {
    expires_ms: Option<u64>,
}

/// The invitation file for `inv`, sealed under `code` with a fresh random `salt`.
///
/// # Panics
/// If `kdf` is outside [`KdfParams`]' limits (a bug: callers pass constants).
pub fn seal(inv: &Invitation, code: &InviteCode, salt: [u8; 16], kdf: KdfParams) -> Vec<u8> {
    seal_with(inv, InviteExtras::default(), code, salt, kdf)
}

/// [`seal`], with `extras` after the invitation when they say anything.
///
/// # Panics
/// If `kdf` is outside [`KdfParams`]' limits (a bug: callers pass constants).
pub fn seal_with(
    inv: &Invitation,
    extras: InviteExtras,
    code: &InviteCode,
    salt: [u8; 16],
    kdf: KdfParams,
) -> Vec<u8> {
    let key = derive_key(code, &salt, kdf).expect("invitation KDF settings within limits");
    let mut out = header(&salt, kdf);
    let mut body = postcard::to_allocvec(inv).expect("an invitation encodes");
    if extras != InviteExtras::default() {
        body.extend(postcard::to_allocvec(&extras).expect("extras encode"));
        if !extras.other_epochs.is_empty() {
            body.extend(postcard::to_allocvec(&extras.other_epochs).expect("keys encode"));
        }
    }
    ChaCha20Poly1305::new(Key::from_slice(&key))
        .encrypt_in_place(&Nonce::default(), &out, &mut body)
        .expect("an invitation is far below the AEAD's size limit");
    out.extend_from_slice(&body);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// An invitation file, checked for damage but not opened.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// Sealed with a code (`ferryin2`).
    Sealed(Sealed<'a>),
    /// In clear, from an earlier ferry (`ferryinv`): not protected by a code.
    Clear(Box<Invitation>),
}

/// A sealed invitation whose checksum holds.
#[derive(Debug)]
pub struct Sealed<'a> {
    header: &'a [u8],
    salt: [u8; 16],
    kdf: KdfParams,
    ciphertext: &'a [u8],
}

/// Reads an invitation file's bytes: which kind it is, and whether it is intact.
pub fn parse(bytes: &[u8]) -> Result<Parsed<'_>, OpenError> {
    if let Some(body) = bytes.strip_prefix(CLEAR_MAGIC) {
        let (inv, rest) = postcard::take_from_bytes(body).map_err(|_| OpenError::Damaged)?;
        if !rest.is_empty() {
            return Err(OpenError::Damaged);
        }
        return Ok(Parsed::Clear(Box::new(inv)));
    }
    if !bytes.starts_with(SEALED_MAGIC) {
        return Err(OpenError::NotAnInvitation);
    }
    if bytes.len() < HEADER_LEN + TAG_LEN + SUM_LEN {
        return Err(OpenError::Damaged);
    }
    let (sealed, sum) = bytes.split_at(bytes.len() - SUM_LEN);
    if blake3::hash(sealed).as_bytes() != sum {
        return Err(OpenError::Damaged);
    }
    let (header, ciphertext) = sealed.split_at(HEADER_LEN);
    let u32_at = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    let kdf = KdfParams {
        m_kib: u32_at(24),
        t: u32_at(28),
        p: u32_at(32),
    };
    if !kdf.within_limits() {
        return Err(OpenError::Damaged);
    }
    Ok(Parsed::Sealed(Sealed {
        header,
        salt: header[8..24].try_into().expect("16 bytes"),
        kdf,
        ciphertext,
    }))
}

impl Sealed<'_> {
    /// The invitation, if `code` opens it.
    pub fn open(&self, code: &InviteCode) -> Result<Invitation, OpenError> {
        self.open_with_extras(code).map(|(inv, _)| inv)
    }

    /// The invitation and what follows it ([`InviteExtras`]), if `code` opens it.
    pub fn open_with_extras(
        &self,
        code: &InviteCode,
    ) -> Result<(Invitation, InviteExtras), OpenError> {
        let key = derive_key(code, &self.salt, self.kdf).ok_or(OpenError::Damaged)?;
        let mut body = self.ciphertext.to_vec();
        ChaCha20Poly1305::new(Key::from_slice(&key))
            .decrypt_in_place(&Nonce::default(), self.header, &mut body)
            .map_err(|_| OpenError::WrongCode)?;
        let (inv, rest) = postcard::take_from_bytes(&body).map_err(|_| OpenError::Damaged)?;
        if rest.is_empty() {
            return Ok((inv, InviteExtras::default()));
        }
        // Extras are written only when they say something, and nothing follows them. (A
        // file from the ferry that wrote only an expiry holds just that.)
        let extras = match postcard::take_from_bytes::<InviteExtras>(rest) {
            Ok((extras, [])) => extras,
            Ok((extras, more)) => match postcard::from_bytes::<Vec<(u32, u32, [u8; 32])>>(more) {
                Ok(other_epochs) if !other_epochs.is_empty() => InviteExtras {
                    other_epochs,
                    ..extras
                },
                _ => return Err(OpenError::Damaged),
            },
            _ => match postcard::take_from_bytes::<ExtrasEpochs>(rest) {
                Ok((old, [])) => InviteExtras {
                    expires_ms: old.expires_ms,
                    epoch_keys: old.epoch_keys,
                    founder: None,
                    other_epochs: Vec::new(),
                },
                _ => match postcard::take_from_bytes::<ExtrasExpiry>(rest) {
                    Ok((old, [])) => InviteExtras {
                        expires_ms: old.expires_ms,
                        epoch_keys: Vec::new(),
                        founder: None,
                        other_epochs: Vec::new(),
                    },
                    _ => return Err(OpenError::Damaged),
                },
            },
        };
        if extras == InviteExtras::default() {
            return Err(OpenError::Damaged);
        }
        Ok((inv, extras))
    }
}

/// Opens an invitation file's bytes with `code` (sealed files) or as they are (clear ones).
pub fn open(bytes: &[u8], code: &InviteCode) -> Result<Invitation, OpenError> {
    match parse(bytes)? {
        Parsed::Sealed(s) => s.open(code),
        Parsed::Clear(inv) => Ok(*inv),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_model::crypto::SecretKey;
    use ferry_model::{DatasetId, MemberId};

    /// Small settings, so that tests that open many files stay fast.
    const FAST: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    fn invitation() -> Invitation {
        Invitation::issue(
            &SecretKey::from_bytes([7; 32]),
            "hq",
            DatasetId([3; 8]),
            "Kisumu health visits",
            [0xD5; 32],
            MemberId(5),
            "clinic-e",
            [0xE9; 32],
        )
    }

    fn code() -> InviteCode {
        InviteCode::from_random([0x5A, 0x13, 0xC7, 0x88, 0x01, 0xFE, 0x42, 0x9B])
    }

    #[test]
    fn a_sealed_invitation_opens_with_its_code() {
        let inv = invitation();
        let file = seal(&inv, &code(), [1; 16], KdfParams::DEFAULT);
        assert!(file.starts_with(SEALED_MAGIC));
        assert_eq!(open(&file, &code()), Ok(inv.clone()));
        // The code as a person might type it.
        let typed = code().to_string().to_lowercase().replace('-', " ");
        assert_eq!(open(&file, &InviteCode::parse(&typed).unwrap()), Ok(inv));
    }

    #[test]
    fn a_wrong_code_does_not_open_it() {
        let file = seal(&invitation(), &code(), [1; 16], FAST);
        let wrong = InviteCode::from_random([0x5B, 0x13, 0xC7, 0x88, 0x01, 0xFE, 0x42, 0x9B]);
        assert_ne!(wrong, code());
        assert_eq!(open(&file, &wrong).unwrap_err(), OpenError::WrongCode);
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let inv = invitation();
        let file = seal(&inv, &code(), [1; 16], FAST);
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            let err = open(&bad, &code()).unwrap_err();
            let expected = if i < 8 {
                OpenError::NotAnInvitation
            } else {
                OpenError::Damaged
            };
            assert_eq!(err, expected, "byte {i}");
        }
        // Also when the checksum is made to match (an altered file, not a damaged one):
        // the AEAD refuses a change to the salt, the settings or the ciphertext.
        for i in 8..file.len() - SUM_LEN {
            let mut bad = file[..file.len() - SUM_LEN].to_vec();
            bad[i] ^= 0x01;
            let sum = blake3::hash(&bad);
            bad.extend_from_slice(sum.as_bytes());
            let err = open(&bad, &code()).unwrap_err();
            assert!(
                matches!(err, OpenError::WrongCode | OpenError::Damaged),
                "byte {i}: {err:?}"
            );
        }
        // And every truncation.
        for n in 0..file.len() {
            assert!(open(&file[..n], &code()).is_err(), "{n} bytes");
        }
        assert_eq!(open(&file, &code()), Ok(inv));
    }

    #[test]
    fn the_sealed_file_holds_no_secret_in_clear() {
        let inv = invitation();
        let file = seal(&inv, &code(), [1; 16], FAST);
        let holds = |needle: &[u8]| file.windows(needle.len()).any(|w| w == needle);
        assert!(!holds(&inv.dataset_key), "the dataset key");
        assert!(!holds(&inv.invite_secret), "the invitation secret");
        assert!(!holds(code().as_bytes()), "the code");
        assert!(!holds(b"Kisumu health visits"), "the dataset name");
        assert!(!holds(b"clinic-e"), "the label");
        // Not even 8 bytes in a row of the clear invitation.
        let clear = postcard::to_allocvec(&inv).unwrap();
        for w in clear.windows(8) {
            assert!(!holds(w), "clear bytes {w:?}");
        }
    }

    #[test]
    fn an_altered_file_cannot_ask_for_unbounded_memory_or_time() {
        let file = seal(&invitation(), &code(), [1; 16], FAST);
        for (at, value) in [
            (24, KdfParams::MAX_M_KIB + 1),
            (28, KdfParams::MAX_T + 1),
            (32, KdfParams::MAX_P + 1),
            (32, 0),
        ] {
            let mut bad = file[..file.len() - SUM_LEN].to_vec();
            bad[at..at + 4].copy_from_slice(&value.to_le_bytes());
            let sum = blake3::hash(&bad);
            bad.extend_from_slice(sum.as_bytes());
            assert_eq!(open(&bad, &code()).unwrap_err(), OpenError::Damaged);
        }
    }

    /// An invitation file sealed as `seal_with` does, with `tail` after the invitation in
    /// place of the extras it would write.
    fn sealed_with_tail(inv: &Invitation, tail: &[u8]) -> Vec<u8> {
        let key = derive_key(&code(), &[1; 16], FAST).unwrap();
        let mut out = header(&[1; 16], FAST);
        let mut body = postcard::to_allocvec(inv).unwrap();
        body.extend_from_slice(tail);
        ChaCha20Poly1305::new(Key::from_slice(&key))
            .encrypt_in_place(&Nonce::default(), &out, &mut body)
            .unwrap();
        out.extend_from_slice(&body);
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    #[test]
    fn an_expiry_travels_inside_the_seal_and_a_file_without_one_is_as_before() {
        let inv = invitation();
        let extras = InviteExtras {
            expires_ms: Some(1_780_000_000_000),
            epoch_keys: vec![[4; 32]],
            founder: Some(Founder {
                key: [6; 32],
                label: "hq".into(),
            }),
            other_epochs: Vec::new(),
        };
        let with = seal_with(&inv, extras.clone(), &code(), [1; 16], FAST);
        // Keys of epochs other admins began travel after the rest, only when there are any.
        let others = InviteExtras {
            other_epochs: vec![(1, 2, [7; 32]), (2, 1, [8; 32])],
            ..extras.clone()
        };
        let file = seal_with(&inv, others.clone(), &code(), [1; 16], FAST);
        assert_eq!(file.len(), with.len() + 1 + 2 * 34);
        let Parsed::Sealed(s) = parse(&file).unwrap() else {
            panic!("sealed")
        };
        assert_eq!(s.open_with_extras(&code()).unwrap(), (inv.clone(), others));
        let without = seal(&inv, &code(), [1; 16], FAST);
        assert_eq!(
            seal_with(&inv, InviteExtras::default(), &code(), [1; 16], FAST),
            without,
            "no extras: the bytes earlier ferry wrote"
        );
        let Parsed::Sealed(s) = parse(&with).unwrap() else {
            panic!("sealed")
        };
        assert_eq!(s.open_with_extras(&code()).unwrap(), (inv.clone(), extras));
        let Parsed::Sealed(s) = parse(&without).unwrap() else {
            panic!("sealed")
        };
        assert_eq!(
            s.open_with_extras(&code()).unwrap(),
            (inv.clone(), InviteExtras::default())
        );
        // Extras that say nothing, or bytes after them, are not what ferry writes.
        for tail in [vec![0u8], vec![1, 5, 0, 0, 0], vec![1, 5, 1], vec![0, 0]] {
            let out = sealed_with_tail(&inv, &tail);
            let Parsed::Sealed(s) = parse(&out).unwrap() else {
                panic!("sealed")
            };
            assert_eq!(
                s.open_with_extras(&code()).unwrap_err(),
                OpenError::Damaged,
                "{tail:?}"
            );
        }
        // Files from the ferry whose extras held only an expiry, or an expiry and epoch
        // keys (before more than one admin), still open.
        let mut with_epochs = vec![1, 5, 1];
        with_epochs.extend([4u8; 32]);
        for (extras, epoch_keys) in [(vec![1u8, 5], vec![]), (with_epochs, vec![[4u8; 32]])] {
            let out = sealed_with_tail(&inv, &extras);
            let Parsed::Sealed(s) = parse(&out).unwrap() else {
                panic!("sealed")
            };
            assert_eq!(
                s.open_with_extras(&code()).unwrap().1,
                InviteExtras {
                    expires_ms: Some(5),
                    epoch_keys,
                    founder: None,
                    other_epochs: Vec::new(),
                }
            );
        }
    }

    #[test]
    fn clear_invitations_of_earlier_ferry_still_open() {
        let inv = invitation();
        let mut file = CLEAR_MAGIC.to_vec();
        file.extend(postcard::to_allocvec(&inv).unwrap());
        assert!(matches!(parse(&file), Ok(Parsed::Clear(_))));
        assert_eq!(open(&file, &code()), Ok(inv));
        file.pop();
        assert_eq!(open(&file, &code()).unwrap_err(), OpenError::Damaged);
        assert_eq!(
            open(b"not an invitation", &code()).unwrap_err(),
            OpenError::NotAnInvitation
        );
    }

    #[test]
    fn codes_are_read_as_crockford_reads_them() {
        let c = InviteCode::parse("7KQ2-M9XD-4HRT").unwrap();
        assert_eq!(c.to_string(), "7KQ2-M9XD-4HRT");
        for typed in [
            "7kq2-m9xd-4hrt",
            "7KQ2M9XD4HRT",
            " 7KQ2 M9XD 4HRT\n",
            "7-K-Q-2-M-9-X-D-4-H-R-T",
        ] {
            assert_eq!(InviteCode::parse(typed), Ok(c.clone()), "{typed:?}");
        }
        // I and L read as 1, O as 0.
        assert_eq!(
            InviteCode::parse("IL0O-1111-0000"),
            InviteCode::parse("1100-1111-0000")
        );
        assert_eq!(
            InviteCode::parse("il0o-1111-0000").unwrap().to_string(),
            "1100-1111-0000"
        );
        for (typed, err) in [
            ("7KQ2-M9XD-4HRU", CodeError::Character), // U is not in the alphabet
            ("7KQ2-M9XD-4HR!", CodeError::Character),
            ("7KQ2-M9XD-4HRÉ", CodeError::Character),
            ("7KQ2-M9XD-4HR", CodeError::Length),
            ("7KQ2-M9XD-4HRTT", CodeError::Length),
            ("", CodeError::Length),
        ] {
            assert_eq!(InviteCode::parse(typed), Err(err), "{typed:?}");
        }
    }

    #[test]
    fn codes_use_60_random_bits_and_the_whole_alphabet() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0u64..64 {
            let r = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes();
            let c = InviteCode::from_random(r);
            let shown = c.to_string();
            assert_eq!(shown.len(), 14);
            assert_eq!(InviteCode::parse(&shown), Ok(c.clone()));
            seen.extend(c.as_bytes().iter().copied());
        }
        assert_eq!(seen.len(), 32, "every symbol appears");
        // Bits above the 60th are not used; every one below changes the code.
        let zero = InviteCode::from_random([0; 8]);
        assert_eq!(zero.to_string(), "0000-0000-0000");
        assert_eq!(
            InviteCode::from_random(0xF000_0000_0000_0000u64.to_le_bytes()),
            zero
        );
        for bit in 0..60 {
            assert_ne!(InviteCode::from_random((1u64 << bit).to_le_bytes()), zero);
        }
        assert!(
            !format!("{zero:?}").contains("0000"),
            "Debug hides the code"
        );
    }
}
