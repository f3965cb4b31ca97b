//! Keys and signatures: who may write, and how anyone can check it offline.
//!
//! Every signature in ferry is Ed25519 (RFC 8032), checked with `verify_strict`, over a
//! message that starts with a distinct, NUL-terminated context string so that a signature
//! made for one purpose can never be replayed for another (bundles/SPEC.md §7).

use crate::{DatasetId, Hash, MemberId, limits};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

// wire-format: begin
/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &crate::id::hex(&self.0)[..16])
    }
}

impl PublicKey {
    /// Whether `sig` is a valid strict Ed25519 signature of `msg` by this key.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        let ok = memo::remembered(&[b"verify", &self.0, &sig.0, msg], || {
            let Ok(key) = VerifyingKey::from_bytes(&self.0) else {
                return [0; 64];
            };
            let ok = key
                .verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig.0))
                .is_ok();
            [u8::from(ok); 64]
        });
        ok[0] == 1
    }
    // wire-format: end

    /// This member key as an X25519 public key (the birational map from Edwards to
    /// Montgomery form, RFC 7748 §4.1), to seal a key epoch to the member
    /// (bundles/SPEC.md §14). `None` for bytes that are not a curve point.
    pub fn to_x25519(&self) -> Option<[u8; 32]> {
        let key = VerifyingKey::from_bytes(&self.0).ok()?;
        Some(key.to_montgomery().to_bytes())
    }

    /// A short fingerprint for people to compare: the first 8 bytes of the key, in hex.
    pub fn fingerprint(&self) -> String {
        crate::id::hex(&self.0[..8])
    }
}

// wire-format: begin
/// An Ed25519 signature (64 bytes, encoded without a length prefix).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", &crate::id::hex(&self.0)[..16])
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(64)?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Signature, A::Error> {
                let mut out = [0u8; 64];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(out))
            }
        }
        d.deserialize_tuple(64, V)
    }
}

// wire-format: end

/// An Ed25519 signing key. The secret never leaves the node's home folder, except inside an
/// invitation (which carries a one-time invitation key, not a member key).
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {:?})", self.public())
    }
}

impl SecretKey {
    /// A key from 32 bytes of secret randomness (the caller draws them).
    pub fn from_bytes(bytes: [u8; 32]) -> SecretKey {
        SecretKey(memo::key(bytes, || SigningKey::from_bytes(&bytes)))
    }

    /// The 32 secret bytes, for storing.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// The X25519 shared secret of this key (as an X25519 secret: the clamped Ed25519
    /// secret scalar, RFC 8032 §5.1.5) and `their` X25519 public key; `None` when it is all
    /// zeros (`their` is of small order), bundles/SPEC.md §14.
    pub fn x25519(&self, their: &[u8; 32]) -> Option<[u8; 32]> {
        x25519(self.0.to_scalar_bytes(), their)
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(memo::remembered(&[b"sign", self.0.as_bytes(), msg], || {
            self.0.sign(msg).to_bytes()
        }))
    }
}

// wire-format: begin
/// The X25519 public key of the secret `scalar` (clamped as RFC 7748 §5 says).
pub fn x25519_public(scalar: [u8; 32]) -> [u8; 32] {
    curve25519_dalek::MontgomeryPoint::mul_base_clamped(scalar).to_bytes()
}

/// The X25519 shared secret of the secret `scalar` (clamped) and `their` public key;
/// `None` when it is all zeros (`their` is of small order).
pub fn x25519(scalar: [u8; 32], their: &[u8; 32]) -> Option<[u8; 32]> {
    let shared = curve25519_dalek::MontgomeryPoint(*their)
        .mul_clamped(scalar)
        .to_bytes();
    (shared != [0; 32]).then_some(shared)
}
// wire-format: end

// wire-format: begin
/// The message a member signs to vouch for its own hash chain up to `seq`: "every commit of
/// mine up to `seq` is the one whose chain hash is `chain`". When the signature is a bundle
/// signature, `digest` is the BLAKE3 digest of the bundle's header and payload, so the same
/// signature also authenticates the bundle (bundles/SPEC.md §7.1).
pub fn head_message(
    dataset: DatasetId,
    member: MemberId,
    seq: u64,
    chain: &Hash,
    digest: Option<&[u8; 32]>,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(100);
    m.extend_from_slice(b"ferry v1 head\0");
    m.extend_from_slice(&dataset.0);
    m.extend_from_slice(&member.0.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&chain.0);
    match digest {
        Some(d) => {
            m.push(1);
            m.extend_from_slice(d);
        }
        None => m.push(0),
    }
    m
}

/// The message the admin signs when it invites member `member`: the invitation key that may
/// introduce that member, and the label the admin gave it.
pub fn invite_message(
    dataset: DatasetId,
    member: MemberId,
    invite_key: &PublicKey,
    label: &str,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(80 + label.len());
    m.extend_from_slice(b"ferry v1 invite\0");
    m.extend_from_slice(&dataset.0);
    m.extend_from_slice(&member.0.to_le_bytes());
    m.extend_from_slice(&invite_key.0);
    m.extend_from_slice(label.as_bytes());
    m
}

/// The message an invitation key signs to bind the joining device's own key to the member
/// number.
pub fn join_message(dataset: DatasetId, member: MemberId, member_key: &PublicKey) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(b"ferry v1 join\0");
    m.extend_from_slice(&dataset.0);
    m.extend_from_slice(&member.0.to_le_bytes());
    m.extend_from_slice(&member_key.0);
    m
}

/// The admin's signed permission for one new member (carried inside an invitation file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteCert {
    /// The member number the admin reserved.
    pub member: MemberId,
    /// The label the admin chose (e.g. "clinic-b").
    pub label: String,
    /// The one-time invitation public key.
    pub invite_key: PublicKey,
    /// The admin's signature over [`invite_message`].
    pub cert: Signature,
}

/// The first change of every non-admin member's first commit: proof that the admin invited
/// it. Any member holding the admin's public key can check it, offline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinProof {
    /// The admin's invitation for this member number.
    pub invite: InviteCert,
    /// The joining device's own, newly generated public key.
    pub member_key: PublicKey,
    /// The invitation key's signature over [`join_message`].
    pub join_sig: Signature,
}
// wire-format: end

/// Why a join proof was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinError {
    /// The proof names a different member number than the commit's author.
    #[error("the invitation is for member {invited}, but the commit is by member {author}")]
    WrongMember {
        /// Member number in the invitation.
        invited: MemberId,
        /// Author of the commit carrying it.
        author: MemberId,
    },
    /// The admin's signature does not verify: the invitation was not issued by this
    /// dataset's admin.
    #[error("the invitation was not signed by this dataset's admin")]
    BadCert,
    /// The invitation key did not sign the member key.
    #[error("the join was not signed with the invitation key")]
    BadJoinSig,
    /// The label is longer than the limit.
    #[error("the member label is too long")]
    LabelTooLong,
}

impl JoinProof {
    /// Checks the proof for `author` in `dataset` against the admin's key.
    pub fn verify(
        &self,
        dataset: DatasetId,
        author: MemberId,
        admin: &PublicKey,
    ) -> Result<(), JoinError> {
        if self.invite.member != author {
            return Err(JoinError::WrongMember {
                invited: self.invite.member,
                author,
            });
        }
        if self.invite.label.len() > limits::MAX_LABEL {
            return Err(JoinError::LabelTooLong);
        }
        let msg = invite_message(
            dataset,
            self.invite.member,
            &self.invite.invite_key,
            &self.invite.label,
        );
        if !admin.verify(&msg, &self.invite.cert) {
            return Err(JoinError::BadCert);
        }
        let msg = join_message(dataset, author, &self.member_key);
        if !self.invite.invite_key.verify(&msg, &self.join_sig) {
            return Err(JoinError::BadJoinSig);
        }
        Ok(())
    }
}

/// A memo of signatures made and checked, off unless a thread turns it on with
/// [`with_verify_memo`].
///
/// Ed25519 signing (RFC 8032, deterministic) and verification are pure functions of their
/// inputs, so remembering their answers changes no outcome. The seeded simulation turns it
/// on: it signs and delivers the same commits to many replicas, three runs per seed, and
/// spends most of its time otherwise in redoing the same curve arithmetic. A node never
/// turns it on.
mod memo {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use ed25519_dalek::SigningKey;

    #[derive(Default)]
    struct Memo {
        /// Signatures and verdicts, by a hash of the operation and its inputs.
        answers: HashMap<[u8; 32], [u8; 64]>,
        /// Keys with their public half computed, by their secret bytes.
        keys: HashMap<[u8; 32], SigningKey>,
    }

    thread_local! {
        static MEMO: RefCell<Option<Memo>> = const { RefCell::new(None) };
    }

    /// Most answers one thread keeps before it starts over.
    const MAX: usize = 1 << 16;

    /// `compute()`'s answer for the inputs `parts` (which must name the operation too),
    /// from the memo when it is on and holds it.
    pub(super) fn remembered(parts: &[&[u8]], compute: impl FnOnce() -> [u8; 64]) -> [u8; 64] {
        if MEMO.with(|m| m.borrow().is_none()) {
            return compute();
        }
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        let id: [u8; 32] = h.finalize().into();
        let known = MEMO.with(|m| {
            m.borrow()
                .as_ref()
                .and_then(|m| m.answers.get(&id).copied())
        });
        if let Some(known) = known {
            return known;
        }
        let answer = compute();
        MEMO.with(|m| {
            if let Some(m) = m.borrow_mut().as_mut() {
                if m.answers.len() >= MAX {
                    m.answers.clear();
                }
                m.answers.insert(id, answer);
            }
        });
        answer
    }

    /// The key for `secret`, from the memo when it is on and holds it.
    pub(super) fn key(secret: [u8; 32], compute: impl FnOnce() -> SigningKey) -> SigningKey {
        let known = MEMO.with(|m| m.borrow().as_ref().map(|m| m.keys.get(&secret).cloned()));
        match known {
            None => compute(),
            Some(Some(key)) => key,
            Some(None) => {
                let key = compute();
                MEMO.with(|m| {
                    if let Some(m) = m.borrow_mut().as_mut() {
                        if m.keys.len() >= MAX {
                            m.keys.clear();
                        }
                        m.keys.insert(secret, key.clone());
                    }
                });
                key
            }
        }
    }

    /// Turns the memo on (keeping what it holds) or off (dropping it); says whether it was on.
    pub(super) fn set(on: bool) -> bool {
        MEMO.with(|m| {
            let mut m = m.borrow_mut();
            let was = m.is_some();
            match (on, was) {
                (true, false) => *m = Some(Memo::default()),
                (false, _) => *m = None,
                (true, true) => {}
            }
            was
        })
    }
}

/// Runs `f` with signatures made and checked on this thread remembered (see the `memo`
/// module): for seeded simulations that make and check the same signatures thousands of
/// times. Nested calls keep
/// the memo on; it is dropped when the outermost call returns, or unwinds.
pub fn with_verify_memo<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            if !self.0 {
                memo::set(false);
            }
        }
    }
    let was = memo::set(true);
    let _restore = Restore(was);
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_bytes([n; 32])
    }

    #[test]
    fn a_member_key_agrees_on_an_x25519_secret_with_an_ephemeral_key() {
        let member = key(7);
        let eph = [42u8; 32];
        let theirs = member
            .public()
            .to_x25519()
            .expect("a member key is a point");
        let sender = x25519(eph, &theirs).expect("not small order");
        let receiver = member.x25519(&x25519_public(eph)).expect("not small order");
        assert_eq!(sender, receiver);
        // Another member computes another secret.
        assert_ne!(key(8).x25519(&x25519_public(eph)), Some(sender));
        // A small-order point gives no secret (all zeros), so nothing is sealed to it.
        assert_eq!(member.x25519(&[0; 32]), None);
        // Bytes that are no Edwards point have no X25519 form.
        let not_a_point = (0u8..=255)
            .map(|b| PublicKey([b; 32]))
            .find(|k| VerifyingKey::from_bytes(&k.0).is_err())
            .expect("some byte pattern is no point");
        assert_eq!(not_a_point.to_x25519(), None);
    }

    #[test]
    fn the_verification_memo_gives_the_answers_of_the_curve_and_ends_with_its_scope() {
        let k = key(3);
        let msg = b"visit v1";
        let sig = k.sign(msg);
        let mut bad = sig;
        bad.0[5] ^= 1;
        let other = key(4).public();
        let plain = (
            k.public().verify(msg, &sig),
            k.public().verify(msg, &bad),
            other.verify(msg, &sig),
            k.public().verify(b"visit v2", &sig),
        );
        assert_eq!(plain, (true, false, false, false));
        let memoised = with_verify_memo(|| {
            // Asked twice each, and nested: the second answers come from the memo.
            let first = [
                k.public().verify(msg, &sig),
                k.public().verify(msg, &bad),
                other.verify(msg, &sig),
                k.public().verify(b"visit v2", &sig),
            ];
            let again = with_verify_memo(|| {
                [
                    k.public().verify(msg, &sig),
                    k.public().verify(msg, &bad),
                    other.verify(msg, &sig),
                    k.public().verify(b"visit v2", &sig),
                ]
            });
            // Still on after the nested scope ended.
            assert!(memo_on());
            assert_eq!(key(3).sign(msg), sig);
            assert_eq!(key(3).public(), k.public());
            (first, again)
        });
        assert_eq!(memoised.0, [true, false, false, false]);
        assert_eq!(memoised.1, memoised.0);
        assert!(!memo_on());
        // A panic inside the scope turns it off too.
        let _ = std::panic::catch_unwind(|| with_verify_memo(|| panic!("inside")));
        assert!(!memo_on());
    }

    fn memo_on() -> bool {
        let was = memo::set(true);
        if !was {
            memo::set(false);
        }
        was
    }

    #[test]
    fn a_join_proof_verifies_only_for_its_member_dataset_and_admin() {
        let ds = DatasetId([7; 8]);
        let admin = key(1);
        let invite = key(2);
        let device = key(3);
        let member = MemberId(4);
        let cert = admin.sign(&invite_message(ds, member, &invite.public(), "clinic-b"));
        let proof = JoinProof {
            invite: InviteCert {
                member,
                label: "clinic-b".into(),
                invite_key: invite.public(),
                cert,
            },
            member_key: device.public(),
            join_sig: invite.sign(&join_message(ds, member, &device.public())),
        };
        assert_eq!(proof.verify(ds, member, &admin.public()), Ok(()));
        assert_eq!(
            proof.verify(ds, MemberId(5), &admin.public()),
            Err(JoinError::WrongMember {
                invited: member,
                author: MemberId(5)
            })
        );
        assert_eq!(
            proof.verify(DatasetId([8; 8]), member, &admin.public()),
            Err(JoinError::BadCert)
        );
        assert_eq!(
            proof.verify(ds, member, &key(9).public()),
            Err(JoinError::BadCert)
        );
        let mut forged = proof.clone();
        forged.member_key = key(10).public();
        assert_eq!(
            forged.verify(ds, member, &admin.public()),
            Err(JoinError::BadJoinSig)
        );
    }

    #[test]
    fn signatures_encode_as_64_raw_bytes() {
        let sig = key(1).sign(b"x");
        let bytes = postcard::to_allocvec(&sig).unwrap();
        assert_eq!(bytes.len(), 64);
        assert_eq!(postcard::from_bytes::<Signature>(&bytes).unwrap(), sig);
        assert!(postcard::from_bytes::<Signature>(&bytes[..63]).is_err());
    }

    #[test]
    fn head_signatures_are_bound_to_every_field() {
        let k = key(1);
        let ds = DatasetId([1; 8]);
        let h = Hash([5; 32]);
        let msg = head_message(ds, MemberId(1), 3, &h, None);
        let sig = k.sign(&msg);
        assert!(k.public().verify(&msg, &sig));
        for other in [
            head_message(ds, MemberId(2), 3, &h, None),
            head_message(ds, MemberId(1), 4, &h, None),
            head_message(ds, MemberId(1), 3, &Hash([6; 32]), None),
            head_message(ds, MemberId(1), 3, &h, Some(&[0; 32])),
            head_message(DatasetId([2; 8]), MemberId(1), 3, &h, None),
        ] {
            assert!(!k.public().verify(&other, &sig));
        }
    }
}
