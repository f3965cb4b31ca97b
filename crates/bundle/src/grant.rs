//! Key epochs (bundles/SPEC.md §14, §16): after an admin removes a member (or rekeys),
//! bundles are sealed under a new epoch key that reaches every remaining member sealed to
//! that member alone, in an *epoch grant* the admin signs and any bundle of the epoch may
//! carry in its header.
//!
//! The grant seals the epoch key to each member with X25519 (the member's Ed25519 key in
//! Montgomery form) and one ephemeral key, and carries every earlier epoch key sealed under
//! the new one, so a member that holds the newest key reads every older bundle too. A
//! [`Keyring`] is what one node holds: its epoch keys, the grants it can carry, and which
//! epoch it seals with.
//!
//! Version 5 grants are the founding admin's (member 1), and epochs are numbered 0, 1, 2….
//! Version 9 grants name their signer, any admin: two admins may begin an epoch of one
//! number at once, so an epoch is an [`EpochId`], its number and its signer.

use crate::header::DatasetKey;
use crate::stream::{TAG, decrypt_chunk, encrypt_chunk};
use ferry_model::crypto::{PublicKey, SecretKey, Signature, x25519, x25519_public};
use ferry_model::{DatasetId, MemberId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

// wire-format: begin
/// Version 5: version 3 (snapshots carry ghosts) whose header names the key epoch that
/// sealed it and may carry an epoch grant (bundles/SPEC.md §14). Written for every sealed
/// bundle once the dataset has moved past epoch 0.
pub const VERSION_EPOCHS: u8 = 5;

/// Version 9: version 7 whose header names the epoch's signer too, and whose grants are
/// signed by any admin and list earlier epochs by number and signer (bundles/SPEC.md §16).
/// Written for a sealed bundle whose epoch another admin than member 1 began, or whose
/// grant is of this kind.
pub const VERSION_KEYS: u8 = 9;

/// Largest epoch grant a header may carry (≈ 5,000 members).
pub const MAX_GRANT: usize = 256 * 1024;

/// Most epochs a dataset may go through (each one adds 32 bytes to every grant).
pub const MAX_EPOCH: u32 = 4096;

/// A key epoch: its number and the admin that began it (member 1 for every epoch of
/// versions 5 and 7, and for epoch 0, whose key is the dataset key of the invitations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EpochId {
    /// The number: one more than the highest its signer held when it began it.
    pub number: u32,
    /// The admin that signed its grant.
    pub signer: MemberId,
}

impl EpochId {
    /// Epoch 0: the dataset key.
    pub const ZERO: EpochId = EpochId {
        number: 0,
        signer: MemberId(1),
    };

    /// Epoch `number` begun by the founding admin (versions 5 and 7).
    pub fn founder(number: u32) -> EpochId {
        EpochId {
            number,
            signer: MemberId(1),
        }
    }
}

impl std::fmt::Display for EpochId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.signer == MemberId(1) {
            write!(f, "{}", self.number)
        } else {
            write!(f, "{} (of admin #{})", self.number, self.signer.0)
        }
    }
}

/// A member removed by the epoch change a grant announces, and its cutoff: its last commit
/// that still counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// The removed member.
    pub member: MemberId,
    /// Its last commit that still counts (what the admin had applied of it).
    pub cutoff: u64,
}

/// The epoch key sealed to one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wrap {
    /// The member.
    pub member: MemberId,
    /// ChaCha20-Poly1305 of the epoch key under the member's wrap key.
    pub key: [u8; 32],
    /// Its tag.
    pub tag: [u8; 16],
}

/// What the admin signs in a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantBody {
    /// The grant's format: [`VERSION_EPOCHS`] (member 1's, epochs numbered densely) or
    /// [`VERSION_KEYS`] (any admin's, earlier epochs listed by number and signer).
    pub version: u8,
    /// The epoch (1 or more; epoch 0's key is the dataset key of the invitations).
    pub epoch: u32,
    /// The admin that signs it (member 1 in version 5).
    pub signer: MemberId,
    /// The signer's commit that records the change (its head when it granted): a reader
    /// that holds it holds the epoch.
    pub admin_seq: u64,
    /// When, by the signer's clock (ms since the Unix epoch).
    pub at_ms: u64,
    /// The members the change removes, ascending (empty for a rekey).
    pub removed: Vec<Removal>,
    /// The ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// The epoch key sealed to each member it is for, ascending by member.
    pub wraps: Vec<Wrap>,
    /// The keys of earlier epochs, sealed under the epoch key: in version 5 those of epochs
    /// 0 … epoch − 1 in order, in version 9 `postcard(Vec<(number, signer, key)>)`.
    pub history: Vec<u8>,
}

impl GrantBody {
    /// The epoch it grants.
    pub fn id(&self) -> EpochId {
        EpochId {
            number: self.epoch,
            signer: self.signer,
        }
    }
}

/// What follows the epoch (version 5) or the epoch and the signer (version 9) in a grant's
/// body on the wire: `postcard` of `(epoch, Rest)` or `(epoch, signer, Rest)`.
#[derive(Serialize, Deserialize)]
struct Rest {
    admin_seq: u64,
    at_ms: u64,
    removed: Vec<Removal>,
    ephemeral: [u8; 32],
    wraps: Vec<Wrap>,
    #[serde(with = "serde_bytes")]
    history: Vec<u8>,
}

impl GrantBody {
    fn wire(&self) -> Vec<u8> {
        let b = self.clone();
        let rest = Rest {
            admin_seq: b.admin_seq,
            at_ms: b.at_ms,
            removed: b.removed,
            ephemeral: b.ephemeral,
            wraps: b.wraps,
            history: b.history,
        };
        if b.version == VERSION_KEYS {
            postcard::to_allocvec(&(b.epoch, b.signer, rest))
        } else {
            postcard::to_allocvec(&(b.epoch, rest))
        }
        .expect("a grant body encodes")
    }

    /// Reads a body of format `version` from the start of `bytes`.
    fn take(version: u8, bytes: &[u8]) -> Option<(GrantBody, &[u8])> {
        let (version, epoch, signer, r, left) = if version == VERSION_KEYS {
            let ((epoch, signer, r), left): ((u32, MemberId, Rest), _) =
                postcard::take_from_bytes(bytes).ok()?;
            (VERSION_KEYS, epoch, signer, r, left)
        } else {
            let ((epoch, r), left): ((u32, Rest), _) = postcard::take_from_bytes(bytes).ok()?;
            (VERSION_EPOCHS, epoch, MemberId(1), r, left)
        };
        let body = GrantBody {
            version,
            epoch,
            signer,
            admin_seq: r.admin_seq,
            at_ms: r.at_ms,
            removed: r.removed,
            ephemeral: r.ephemeral,
            wraps: r.wraps,
            history: r.history,
        };
        Some((body, left))
    }
}

/// An epoch grant: the body and the signer's signature over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochGrant {
    /// What is granted.
    pub body: GrantBody,
    /// The signer's signature over [`grant_message`].
    pub signature: Signature,
}

/// The message the signer signs: context, dataset, the body's bytes.
pub fn grant_message(dataset: DatasetId, body: &GrantBody) -> Vec<u8> {
    let mut m = if body.version == VERSION_KEYS {
        b"ferry v9 epoch grant\0".to_vec()
    } else {
        b"ferry v5 epoch grant\0".to_vec()
    };
    m.extend_from_slice(&dataset.0);
    m.extend_from_slice(&body.wire());
    m
}

/// The key that seals the epoch key to `member`.
fn wrap_key(
    shared: &[u8; 32],
    ephemeral: &[u8; 32],
    theirs: &[u8; 32],
    dataset: DatasetId,
    body: &GrantBody,
    member: MemberId,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(if body.version == VERSION_KEYS {
        "ferry v9 epoch key wrap"
    } else {
        "ferry v5 epoch key wrap"
    });
    h.update(shared);
    h.update(ephemeral);
    h.update(theirs);
    h.update(&dataset.0);
    h.update(&body.epoch.to_le_bytes());
    if body.version == VERSION_KEYS {
        h.update(&body.signer.0.to_le_bytes());
    }
    h.update(&member.0.to_le_bytes());
    *h.finalize().as_bytes()
}

/// The key that seals the earlier epochs' keys under the epoch key.
fn history_key(key: &DatasetKey, dataset: DatasetId, body: &GrantBody) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(if body.version == VERSION_KEYS {
        "ferry v9 epoch history"
    } else {
        "ferry v5 epoch history"
    });
    h.update(&key.0);
    h.update(&dataset.0);
    h.update(&body.epoch.to_le_bytes());
    if body.version == VERSION_KEYS {
        h.update(&body.signer.0.to_le_bytes());
    }
    *h.finalize().as_bytes()
}
// wire-format: end

/// Why a grant gives this node no key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// The bytes are not a grant, or it contradicts itself.
    #[error("the key epoch grant in the bundle's header is malformed")]
    Malformed,
    /// The admin it names did not sign it.
    #[error("the key epoch grant in the bundle's header is not signed by the admin it names")]
    BadSignature,
    /// It names a signer this node does not know yet (its join has not arrived).
    #[error(
        "the key epoch grant in the bundle's header is signed by member #{}, whose first bundle has not reached this laptop yet",
        signer.0
    )]
    UnknownSigner {
        /// The member it names.
        signer: MemberId,
    },
    /// The grant removes this node.
    #[error("this laptop was removed from the dataset by the admin")]
    Removed {
        /// Its last commit that still counts.
        cutoff: u64,
        /// When, by the admin's clock.
        at_ms: u64,
    },
    /// The grant is not for this node (it joined later, or the admin has not given it the
    /// key yet).
    #[error("the admin has not given this laptop the key of epoch {epoch}")]
    NotGranted {
        /// The epoch.
        epoch: EpochId,
    },
}

/// What a version 9 grant's history holds once opened: (number, signer, key), ascending.
type History8 = Vec<(u32, MemberId, [u8; 32])>;

impl EpochGrant {
    /// Makes and signs member 1's version 5 grant of `key` as epoch `history.len()` (where
    /// `history` holds the keys of epochs 0 … epoch − 1) for `members` (member, key),
    /// announcing `removed`.
    #[allow(clippy::too_many_arguments)]
    pub fn issue(
        admin: &SecretKey,
        dataset: DatasetId,
        key: &DatasetKey,
        history: &[DatasetKey],
        admin_seq: u64,
        at_ms: u64,
        removed: Vec<Removal>,
        members: &[(MemberId, PublicKey)],
        ephemeral_secret: [u8; 32],
    ) -> EpochGrant {
        let epoch = u32::try_from(history.len()).expect("few epochs");
        assert!(epoch >= 1, "epoch 0 needs no grant");
        let sealed: Vec<u8> = history.iter().flat_map(|k| k.0).collect();
        Self::make(
            admin,
            dataset,
            key,
            GrantBody {
                version: VERSION_EPOCHS,
                epoch,
                signer: MemberId(1),
                admin_seq,
                at_ms,
                removed,
                ephemeral: [0; 32],
                wraps: Vec::new(),
                history: sealed,
            },
            members,
            ephemeral_secret,
        )
    }

    /// Makes and signs a version 9 grant: `signer`'s epoch `epoch` with `key`, carrying
    /// the keys of `history` (every other epoch the signer holds), for `members`,
    /// announcing `removed`. `body`'s `version`, `epoch`, `signer`, `admin_seq`, `at_ms`
    /// and `removed` are used; the rest is made here.
    pub fn issue_v8(
        secret: &SecretKey,
        dataset: DatasetId,
        key: &DatasetKey,
        history: &[(EpochId, DatasetKey)],
        body: GrantBody,
        members: &[(MemberId, PublicKey)],
        ephemeral_secret: [u8; 32],
    ) -> EpochGrant {
        assert!(body.epoch >= 1, "epoch 0 needs no grant");
        let mut h: History8 = history
            .iter()
            .filter(|(id, _)| *id != body.id())
            .map(|(id, k)| (id.number, id.signer, k.0))
            .collect();
        h.sort_by_key(|&(n, s, _)| (n, s));
        h.dedup_by_key(|&mut (n, s, _)| (n, s));
        let body = GrantBody {
            version: VERSION_KEYS,
            history: postcard::to_allocvec(&h).expect("a history encodes"),
            ..body
        };
        Self::make(secret, dataset, key, body, members, ephemeral_secret)
    }

    /// Seals `key` to each member and the history under `key`, then signs.
    fn make(
        secret: &SecretKey,
        dataset: DatasetId,
        key: &DatasetKey,
        mut body: GrantBody,
        members: &[(MemberId, PublicKey)],
        ephemeral_secret: [u8; 32],
    ) -> EpochGrant {
        body.ephemeral = x25519_public(ephemeral_secret);
        let mut members = members.to_vec();
        members.sort_by_key(|&(m, _)| m);
        members.dedup_by_key(|&mut (m, _)| m);
        body.wraps = members
            .iter()
            .filter_map(|&(member, pk)| {
                let theirs = pk.to_x25519()?;
                let shared = x25519(ephemeral_secret, &theirs)?;
                let wk = wrap_key(&shared, &body.ephemeral, &theirs, dataset, &body, member);
                let mut buf = key.0.to_vec();
                encrypt_chunk(&wk, 0, true, &mut buf);
                Some(Wrap {
                    member,
                    key: buf[..32].try_into().expect("32 bytes"),
                    tag: buf[32..].try_into().expect("16 bytes"),
                })
            })
            .collect();
        let mut sealed = std::mem::take(&mut body.history);
        encrypt_chunk(&history_key(key, dataset, &body), 0, true, &mut sealed);
        body.history = sealed;
        body.removed.sort_by_key(|r| r.member);
        let signature = secret.sign(&grant_message(dataset, &body));
        EpochGrant { body, signature }
    }

    /// The grant's bytes, as a header carries them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body.wire();
        out.extend_from_slice(&self.signature.0);
        out
    }

    /// Reads a grant of format `version` (that of the header that carries it: 8, or 5 for
    /// headers of versions 5 and 7) and checks it: well formed, signed by the member it
    /// names, whose key `key_of` gives (member 1's is the admin key).
    pub fn from_bytes(
        bytes: &[u8],
        dataset: DatasetId,
        version: u8,
        key_of: impl Fn(MemberId) -> Option<PublicKey>,
    ) -> Result<EpochGrant, GrantError> {
        if bytes.len() > MAX_GRANT {
            return Err(GrantError::Malformed);
        }
        let version = if version == VERSION_KEYS {
            VERSION_KEYS
        } else {
            VERSION_EPOCHS
        };
        let (body, rest) = GrantBody::take(version, bytes).ok_or(GrantError::Malformed)?;
        let Ok(sig) = <[u8; 64]>::try_from(rest) else {
            return Err(GrantError::Malformed);
        };
        let b = &body;
        let ascending = |v: &[MemberId]| v.windows(2).all(|w| w[0] < w[1]);
        let wraps: Vec<_> = b.wraps.iter().map(|w| w.member).collect();
        let removed: Vec<_> = b.removed.iter().map(|r| r.member).collect();
        let history_ok = if version == VERSION_KEYS {
            b.history.len() >= TAG && b.signer.0 != 0
        } else {
            b.history.len() == 32 * b.epoch as usize + TAG
        };
        if b.epoch == 0
            || b.epoch > MAX_EPOCH
            || !history_ok
            || !ascending(&wraps)
            || !ascending(&removed)
            || removed.iter().any(|m| wraps.contains(m))
        {
            return Err(GrantError::Malformed);
        }
        let signer = key_of(b.signer).ok_or(GrantError::UnknownSigner { signer: b.signer })?;
        let signature = Signature(sig);
        if !signer.verify(&grant_message(dataset, b), &signature) {
            return Err(GrantError::BadSignature);
        }
        Ok(EpochGrant { body, signature })
    }

    /// Reads the grant a header of format `version` naming epoch `epoch` carries, checking
    /// in the order of bundles/SPEC.md §16 3.: its structure, that it is that epoch's grant
    /// ([`GrantError::Malformed`] otherwise), that its signer's key is known, then the
    /// signature.
    pub fn read_for_header(
        bytes: &[u8],
        dataset: DatasetId,
        version: u8,
        epoch: EpochId,
        key_of: impl Fn(MemberId) -> Option<PublicKey>,
    ) -> Result<EpochGrant, GrantError> {
        match EpochGrant::from_bytes(bytes, dataset, version, key_of) {
            Ok(g) if g.body.id() != epoch => Err(GrantError::Malformed),
            Err(GrantError::UnknownSigner { .. } | GrantError::BadSignature)
                if Self::peek_id(bytes, version).is_some_and(|id| id != epoch) =>
            {
                Err(GrantError::Malformed)
            }
            r => r,
        }
    }

    /// The epoch a grant's bytes name, if its body decodes.
    fn peek_id(bytes: &[u8], version: u8) -> Option<EpochId> {
        let version = if version == VERSION_KEYS {
            VERSION_KEYS
        } else {
            VERSION_EPOCHS
        };
        GrantBody::take(version, bytes).map(|(b, _)| b.id())
    }

    /// Opens the grant with this node's key: the epoch's key and the keys of the earlier
    /// epochs it carries, by epoch.
    pub fn open(
        &self,
        dataset: DatasetId,
        me: MemberId,
        secret: &SecretKey,
    ) -> Result<Vec<(EpochId, DatasetKey)>, GrantError> {
        let b = &self.body;
        let Some(w) = b.wraps.iter().find(|w| w.member == me) else {
            return Err(match b.removed.iter().find(|r| r.member == me) {
                Some(r) => GrantError::Removed {
                    cutoff: r.cutoff,
                    at_ms: b.at_ms,
                },
                None => GrantError::NotGranted { epoch: b.id() },
            });
        };
        let theirs = secret.public().to_x25519().ok_or(GrantError::Malformed)?;
        let shared = secret.x25519(&b.ephemeral).ok_or(GrantError::Malformed)?;
        let wk = wrap_key(&shared, &b.ephemeral, &theirs, dataset, b, me);
        let mut buf = w.key.to_vec();
        buf.extend_from_slice(&w.tag);
        if !decrypt_chunk(&wk, 0, true, &mut buf) {
            // Sealed to another key: the admin's record of this member is not this device.
            return Err(GrantError::NotGranted { epoch: b.id() });
        }
        let key = DatasetKey(buf.try_into().expect("32 bytes"));
        let mut history = b.history.clone();
        if !decrypt_chunk(&history_key(&key, dataset, b), 0, true, &mut history) {
            return Err(GrantError::Malformed);
        }
        let mut keys: Vec<(EpochId, DatasetKey)> = if b.version == VERSION_KEYS {
            let h: History8 = match postcard::take_from_bytes(&history) {
                Ok((h, [])) => h,
                _ => return Err(GrantError::Malformed),
            };
            let ordered = h.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1));
            let earlier = h.iter().all(|&(n, s, _)| n < b.epoch && s.0 != 0);
            let zero = h
                .first()
                .is_some_and(|&(n, s, _)| (n, s) == (0, MemberId(1)));
            if !ordered || !earlier || !zero {
                return Err(GrantError::Malformed);
            }
            h.into_iter()
                .map(|(number, signer, k)| (EpochId { number, signer }, DatasetKey(k)))
                .collect()
        } else {
            history
                .chunks_exact(32)
                .enumerate()
                .map(|(e, c)| {
                    (
                        EpochId::founder(e as u32),
                        DatasetKey(c.try_into().expect("32 bytes")),
                    )
                })
                .collect()
        };
        keys.push((b.id(), key));
        Ok(keys)
    }
}

/// A grant a node holds for one epoch: the signer's commit it belongs to, its format and
/// its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct HeldGrant {
    admin_seq: u64,
    version: u8,
    bytes: Vec<u8>,
}

impl HeldGrant {
    fn of(g: &EpochGrant) -> HeldGrant {
        HeldGrant {
            admin_seq: g.body.admin_seq,
            version: g.body.version,
            bytes: g.to_bytes(),
        }
    }

    fn decode(&self) -> Option<EpochGrant> {
        let (body, rest) = GrantBody::take(self.version, &self.bytes)?;
        Some(EpochGrant {
            body,
            signature: Signature(rest.try_into().ok()?),
        })
    }
}

/// The epoch keys one node holds, the grants it can carry, and the epoch it seals with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    keys: BTreeMap<EpochId, DatasetKey>,
    /// For each epoch whose grant opens here (or this node signed), the widest grant seen
    /// (the one with the highest `admin_seq`).
    grants: BTreeMap<EpochId, HeldGrant>,
    /// The removals grants announced (member → cutoff, when), as the node chose to note.
    removed: BTreeMap<MemberId, (u64, u64)>,
    /// For each, the grant that announced it last: its signer and commit (a node lifts a
    /// freeze whose grant turns out not to count).
    removed_by: BTreeMap<MemberId, (MemberId, u64)>,
    /// The epoch this node seals with ([`Keyring::choose`]).
    seal: EpochId,
    /// Epochs whose key came from their own signer's grant (or this node made): never
    /// replaced; a key learned from another grant's history is, by its signer's word.
    direct: std::collections::BTreeSet<EpochId>,
}

/// What a node kept of its keyring before version 9 (every epoch member 1's).
#[derive(Serialize, Deserialize)]
struct StoredKeyringV5 {
    keys: Vec<(u32, [u8; 32])>,
    grant: Option<(u32, u64, Vec<u8>)>,
    removed: Vec<(MemberId, u64, u64)>,
}

/// What a node keeps of its keyring, after [`STORED_V9`].
#[derive(Serialize, Deserialize)]
struct StoredKeyring {
    keys: Vec<(EpochId, [u8; 32])>,
    grants: Vec<(EpochId, HeldGrant)>,
    removed: Vec<(MemberId, u64, u64)>,
    seal: EpochId,
    direct: Vec<EpochId>,
    removed_by: Vec<(MemberId, MemberId, u64)>,
}

/// The first bytes of a keyring stored since epochs have signers.
const STORED_V9: &[u8] = b"ferry keyring 9\0";

/// What [`Keyring::learn`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    /// Epochs whose key is new here.
    pub epochs: Vec<EpochId>,
    /// Whether a grant to carry changed.
    pub grant: bool,
}

/// How a node judges an epoch when it chooses the one it seals with
/// ([`Keyring::choose`]): epochs compare by `safe`, `clean` and `trusted`, in this order,
/// then by number (highest first) and signer (lowest first).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// Sealing with it is safe: clean, and its signer is an admin now whose grant this
    /// node holds (epoch 0: nobody was removed and no later trusted epoch is held).
    pub safe: bool,
    /// Trusted, and no member removed since holds its key as far as this node can tell
    /// (its grant seals it to none; without a grant, nobody was removed).
    pub clean: bool,
    /// Vouched for by an admin — its grant signed by one that was an admin when it signed,
    /// or its key handed on by an invitation or a vouched grant's history — whose laptop
    /// was not removed since (epoch 0 always).
    pub trusted: bool,
    /// Trusted, its grant held and its signer an admin now: new epochs are numbered past
    /// it.
    pub counts: bool,
}

impl Keyring {
    /// A keyring holding only epoch 0: the dataset key of the invitation.
    pub fn new(dataset_key: DatasetKey) -> Keyring {
        Keyring {
            keys: BTreeMap::from([(EpochId::ZERO, dataset_key)]),
            grants: BTreeMap::new(),
            removed: BTreeMap::new(),
            removed_by: BTreeMap::new(),
            seal: EpochId::ZERO,
            direct: std::collections::BTreeSet::from([EpochId::ZERO]),
        }
    }

    /// The epoch this node seals with and its key.
    pub fn current(&self) -> (EpochId, &DatasetKey) {
        match self.keys.get(&self.seal) {
            Some(k) => (self.seal, k),
            None => (EpochId::ZERO, &self.keys[&EpochId::ZERO]),
        }
    }

    /// The newest epoch held (highest number, then lowest signer), whatever its standing.
    pub fn newest(&self) -> EpochId {
        *self
            .keys
            .keys()
            .max_by_key(|id| (id.number, std::cmp::Reverse(id.signer)))
            .expect("epoch 0 is always held")
    }

    /// The key of `epoch`, if held.
    pub fn key(&self, epoch: EpochId) -> Option<&DatasetKey> {
        self.keys.get(&epoch)
    }

    /// Every key held, by epoch.
    pub fn keys(&self) -> impl Iterator<Item = (EpochId, &DatasetKey)> {
        self.keys.iter().map(|(e, k)| (*e, k))
    }

    /// The grant of the epoch this node seals with, to carry in bundles' headers: its
    /// signer's commit, its format and its bytes; `None` in epoch 0.
    pub fn grant(&self) -> Option<(u64, u8, &[u8])> {
        let (e, _) = self.current();
        self.grants
            .get(&e)
            .map(|g| (g.admin_seq, g.version, &g.bytes[..]))
    }

    /// The grant of the epoch this node seals with, decoded (its signature was checked
    /// when it was learned or issued).
    pub fn current_grant(&self) -> Option<EpochGrant> {
        self.grant_of(self.current().0)
    }

    /// The grant held for `epoch`, decoded.
    pub fn grant_of(&self, epoch: EpochId) -> Option<EpochGrant> {
        self.grants.get(&epoch)?.decode()
    }

    /// Whether any epoch held was begun by another member than the founding admin (then
    /// new grants are version 9, whose history can name it).
    pub fn has_other_signers(&self) -> bool {
        self.keys.keys().any(|id| id.signer != MemberId(1))
    }

    /// Chooses the epoch to seal with: among the epochs held, the safe ones first, then the
    /// clean, then the trusted, then the highest number, then the lowest signer (so that every node that
    /// holds two epochs two admins began at once picks the same). `judge` gets each epoch
    /// and its grant (none for epoch 0, or for an epoch known only from a later grant's
    /// history). Returns whether the choice changed.
    pub fn choose(&mut self, judge: impl Fn(EpochId, Option<&EpochGrant>) -> Standing) -> bool {
        let rank = |id: &EpochId| {
            let g = self.grant_of(*id);
            let st = judge(*id, g.as_ref());
            let signer = std::cmp::Reverse(id.signer);
            (st.safe, st.clean, st.trusted, id.number, signer)
        };
        let best = self.keys.keys().map(|id| (rank(id), *id)).max();
        let (_, id) = best.expect("epoch 0 is always held");
        let changed = id != self.seal;
        self.seal = id;
        changed
    }

    /// Notes the removals a checked grant announces (the highest cutoff of a member counts,
    /// as for concurrent removals); returns whether anything is new.
    pub fn note_removals(&mut self, grant: &EpochGrant) -> bool {
        let mut new = false;
        for r in &grant.body.removed {
            let e = self.removed.entry(r.member).or_insert((0, 0));
            if r.cutoff > e.0 || e.1 == 0 {
                *e = (r.cutoff.max(e.0), grant.body.at_ms);
                self.removed_by
                    .insert(r.member, (grant.body.signer, grant.body.admin_seq));
                new = true;
            }
        }
        new
    }

    /// The grant that announced `member`'s removal last: its signer and commit.
    pub fn removal_by(&self, member: MemberId) -> Option<(MemberId, u64)> {
        self.removed_by.get(&member).copied()
    }

    /// Forgets a removal a grant announced (it turned out not to count).
    pub fn forget_removal(&mut self, member: MemberId) {
        self.removed.remove(&member);
        self.removed_by.remove(&member);
    }

    /// A removal some grant announced: the member's cutoff and when (admin's clock, ms).
    pub fn removal(&self, member: MemberId) -> Option<(u64, u64)> {
        self.removed.get(&member).copied()
    }

    /// The members grants announced removed (as the node chose to note).
    pub fn removals(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.removed.keys().copied()
    }

    /// The keys of every epoch held (for a grant or an invitation).
    pub fn history(&self) -> Vec<(EpochId, DatasetKey)> {
        self.keys.iter().map(|(e, k)| (*e, k.clone())).collect()
    }

    /// The keys of epochs 0 … the current one, in order, when every one is member 1's (what
    /// a version 5 grant or an older invitation carries); `None` otherwise.
    pub fn founder_history(&self) -> Option<Vec<DatasetKey>> {
        if self.has_other_signers() {
            return None;
        }
        let (e, _) = self.current();
        (0..=e.number)
            .map(|i| self.keys.get(&EpochId::founder(i)).cloned())
            .collect()
    }

    /// The keys of member 1's epochs 0 … `n` − 1, in order (what a version 5 grant of
    /// epoch `n` carries); `None` if one is missing.
    pub fn founder_keys_below(&self, n: u32) -> Option<Vec<DatasetKey>> {
        (0..n)
            .map(|i| self.keys.get(&EpochId::founder(i)).cloned())
            .collect()
    }

    /// Adds keys this node made or was given (an invitation's, or its own new epoch) and,
    /// if given, the grant of one of them, which it then seals with.
    pub fn install(&mut self, keys: &[(EpochId, DatasetKey)], grant: Option<&EpochGrant>) {
        for (e, k) in keys {
            self.keys.insert(*e, k.clone());
            self.direct.insert(*e);
        }
        if let Some(g) = grant {
            self.grants.insert(g.body.id(), HeldGrant::of(g));
            self.note_removals(g);
            self.seal = g.body.id();
        } else if let Some(newest) = keys
            .iter()
            .map(|(e, _)| *e)
            .max_by_key(|e| (e.number, std::cmp::Reverse(e.signer)))
        {
            if newest.number > self.seal.number {
                self.seal = newest;
            }
        }
    }

    /// Learns from a checked grant a bundle's header carries: the keys it seals to `me`
    /// (its own epoch's key from its signer's word; earlier ones, with `history` — when an
    /// admin vouches for the grant — only where none is held),
    /// and the grant itself when it opens here and is wider than the one held of its epoch.
    /// A grant this node cannot open is an error only when it lacks the epoch's key. It
    /// does not change the epoch this node seals with: [`Keyring::choose`] does.
    pub fn learn(
        &mut self,
        g: &EpochGrant,
        dataset: DatasetId,
        me: MemberId,
        secret: &SecretKey,
        history: bool,
    ) -> Result<Learned, GrantError> {
        let mut learned = Learned::default();
        let id = g.body.id();
        let held = self.grants.get(&id);
        if held.is_some_and(|h| h.admin_seq >= g.body.admin_seq) {
            return Ok(learned);
        }
        let opened = g.open(dataset, me, secret);
        let keys = match opened {
            Ok(keys) => keys,
            Err(e) if !self.keys.contains_key(&id) => return Err(e),
            Err(_) => return Ok(learned),
        };
        // The epoch's own key is its signer's word, which no other grant's history
        // replaces; a second grant of the same epoch with another key is ignored whole.
        if let Some((_, k)) = keys.iter().find(|(e, _)| *e == id) {
            if self.direct.contains(&id) && self.keys.get(&id) != Some(k) {
                return Ok(learned);
            }
        }
        for (e, k) in keys {
            if e == id {
                if self.keys.get(&e) != Some(&k) {
                    self.keys.insert(e, k);
                    learned.epochs.push(e);
                }
                self.direct.insert(e);
            } else if let (true, std::collections::btree_map::Entry::Vacant(slot)) =
                (history, self.keys.entry(e))
            {
                slot.insert(k);
                learned.epochs.push(e);
            }
        }
        self.grants.insert(id, HeldGrant::of(g));
        learned.grant = true;
        Ok(learned)
    }

    /// The bytes a node keeps.
    pub fn to_bytes(&self) -> Vec<u8> {
        let out = STORED_V9.to_vec();
        postcard::to_extend(
            &StoredKeyring {
                keys: self.keys.iter().map(|(e, k)| (*e, k.0)).collect(),
                grants: self.grants.iter().map(|(e, g)| (*e, g.clone())).collect(),
                removed: self
                    .removed
                    .iter()
                    .map(|(m, (c, t))| (*m, *c, *t))
                    .collect(),
                seal: self.seal,
                direct: self.direct.iter().copied().collect(),
                removed_by: self
                    .removed_by
                    .iter()
                    .map(|(m, (s, q))| (*m, *s, *q))
                    .collect(),
            },
            out,
        )
        .expect("a keyring encodes")
    }

    /// Reads what [`Keyring::to_bytes`] wrote (or an older node kept), over the dataset key
    /// (epoch 0).
    pub fn from_bytes(dataset_key: DatasetKey, b: &[u8]) -> Result<Keyring, postcard::Error> {
        let mut ring = Keyring::new(dataset_key);
        if let Some(rest) = b.strip_prefix(STORED_V9) {
            let s: StoredKeyring = postcard::from_bytes(rest)?;
            for (e, k) in s.keys {
                ring.keys.insert(e, DatasetKey(k));
            }
            ring.grants = s.grants.into_iter().collect();
            ring.removed = s.removed.into_iter().map(|(m, c, t)| (m, (c, t))).collect();
            ring.seal = s.seal;
            ring.direct.extend(s.direct);
            ring.removed_by = s
                .removed_by
                .into_iter()
                .map(|(m, g, q)| (m, (g, q)))
                .collect();
            return Ok(ring);
        }
        let s: StoredKeyringV5 = postcard::from_bytes(b)?;
        for (e, k) in s.keys {
            ring.keys.insert(EpochId::founder(e), DatasetKey(k));
            ring.direct.insert(EpochId::founder(e));
        }
        if let Some((e, admin_seq, bytes)) = s.grant {
            ring.grants.insert(
                EpochId::founder(e),
                HeldGrant {
                    admin_seq,
                    version: VERSION_EPOCHS,
                    bytes,
                },
            );
        }
        ring.removed = s.removed.into_iter().map(|(m, c, t)| (m, (c, t))).collect();
        ring.seal = ring.newest();
        Ok(ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: u8) -> SecretKey {
        SecretKey::from_bytes([n; 32])
    }

    const DS: DatasetId = DatasetId([7; 8]);

    /// Member `n`'s key, for members 1 to 9.
    fn key_of(m: MemberId) -> Option<PublicKey> {
        (1..10).contains(&m.0).then(|| member(m.0 as u8).public())
    }

    fn grant(epoch_keys: &[DatasetKey], to: &[u8], removed: Vec<Removal>) -> EpochGrant {
        let (key, history) = epoch_keys.split_last().unwrap();
        let members: Vec<_> = to
            .iter()
            .map(|&n| (MemberId(n as u32), member(n).public()))
            .collect();
        EpochGrant::issue(
            &member(1),
            DS,
            key,
            history,
            9,
            1_700_000_000_000,
            removed,
            &members,
            [5; 32],
        )
    }

    fn founder_ids(keys: &[DatasetKey]) -> Vec<(EpochId, DatasetKey)> {
        keys.iter()
            .enumerate()
            .map(|(e, k)| (EpochId::founder(e as u32), k.clone()))
            .collect()
    }

    /// Admin `signer`'s version 9 grant of epoch `number` with `key`.
    fn grant8(
        signer: u8,
        number: u32,
        key: &DatasetKey,
        history: &[(EpochId, DatasetKey)],
        to: &[u8],
        removed: Vec<Removal>,
    ) -> EpochGrant {
        let members: Vec<_> = to
            .iter()
            .map(|&n| (MemberId(n as u32), member(n).public()))
            .collect();
        EpochGrant::issue_v8(
            &member(signer),
            DS,
            key,
            history,
            GrantBody {
                version: VERSION_KEYS,
                epoch: number,
                signer: MemberId(signer as u32),
                admin_seq: 4,
                at_ms: 1_700_000_000_000,
                removed,
                ephemeral: [0; 32],
                wraps: vec![],
                history: vec![],
            },
            &members,
            [6; 32],
        )
    }

    #[test]
    fn a_grant_opens_for_each_member_it_names_and_for_nobody_else() {
        let keys = [
            DatasetKey([0; 32]),
            DatasetKey([1; 32]),
            DatasetKey([2; 32]),
        ];
        let g = grant(
            &keys,
            &[1, 2, 4],
            vec![Removal {
                member: MemberId(3),
                cutoff: 12,
            }],
        );
        let bytes = g.to_bytes();
        let read = EpochGrant::from_bytes(&bytes, DS, VERSION_EPOCHS, key_of).unwrap();
        assert_eq!(read, g);
        for n in [1u8, 2, 4] {
            assert_eq!(
                read.open(DS, MemberId(n as u32), &member(n)).unwrap(),
                founder_ids(&keys)
            );
        }
        // The removed member learns that it was removed, and nothing else.
        assert_eq!(
            read.open(DS, MemberId(3), &member(3)),
            Err(GrantError::Removed {
                cutoff: 12,
                at_ms: 1_700_000_000_000
            })
        );
        // A member not named (joined later) is told the key was not given to it.
        let two = EpochId::founder(2);
        assert_eq!(
            read.open(DS, MemberId(5), &member(5)),
            Err(GrantError::NotGranted { epoch: two })
        );
        // Another device claiming member 2's number cannot open member 2's wrap.
        assert_eq!(
            read.open(DS, MemberId(2), &member(9)),
            Err(GrantError::NotGranted { epoch: two })
        );
    }

    #[test]
    fn a_grant_not_signed_by_the_admin_or_changed_is_refused() {
        let keys = [DatasetKey([0; 32]), DatasetKey([1; 32])];
        for bytes in [
            grant(&keys, &[1, 2], vec![]).to_bytes(),
            grant8(2, 1, &keys[1], &founder_ids(&keys[..1]), &[1, 2], vec![]).to_bytes(),
        ] {
            let v8 = bytes != grant(&keys, &[1, 2], vec![]).to_bytes();
            let version = if v8 { VERSION_KEYS } else { VERSION_EPOCHS };
            assert!(EpochGrant::from_bytes(&bytes, DS, version, key_of).is_ok());
            // Checked against another member's key than its signer's.
            let wrong = |_| Some(member(3).public());
            assert_eq!(
                EpochGrant::from_bytes(&bytes, DS, version, wrong),
                Err(GrantError::BadSignature)
            );
            // Another dataset.
            assert_eq!(
                EpochGrant::from_bytes(&bytes, DatasetId([8; 8]), version, key_of),
                Err(GrantError::BadSignature)
            );
            // Every single byte changed: refused (malformed, unknown signer or not
            // signed), never a panic.
            for i in 0..bytes.len() {
                let mut b = bytes.clone();
                b[i] ^= 0x40;
                assert!(
                    EpochGrant::from_bytes(&b, DS, version, key_of).is_err(),
                    "byte {i}"
                );
            }
            // Cut anywhere, or read as the other format.
            for n in 0..bytes.len() {
                assert!(EpochGrant::from_bytes(&bytes[..n], DS, version, key_of).is_err());
            }
            let other = if v8 { VERSION_EPOCHS } else { VERSION_KEYS };
            assert!(EpochGrant::from_bytes(&bytes, DS, other, key_of).is_err());
        }
    }

    #[test]
    fn a_grant_by_a_member_whose_key_is_unknown_waits() {
        let g = grant8(
            2,
            1,
            &DatasetKey([1; 32]),
            &[(EpochId::ZERO, DatasetKey([0; 32]))],
            &[1, 2],
            vec![],
        );
        assert_eq!(
            EpochGrant::from_bytes(&g.to_bytes(), DS, VERSION_KEYS, |m| (m.0 == 1)
                .then(|| member(1).public())),
            Err(GrantError::UnknownSigner {
                signer: MemberId(2)
            })
        );
    }

    #[test]
    fn an_outsider_cannot_make_a_grant_that_hands_members_its_own_key() {
        // The outsider knows the dataset id and the members' public keys, and signs with
        // its own key as if it were member 1 or 2: every member refuses it, so nobody seals
        // with the outsider's key.
        let outsider = member(66);
        let members = [(MemberId(2), member(2).public())];
        let g = EpochGrant::issue(
            &outsider,
            DS,
            &DatasetKey([6; 32]),
            &[DatasetKey([0; 32])],
            1,
            0,
            vec![],
            &members,
            [3; 32],
        );
        let r = EpochGrant::from_bytes(&g.to_bytes(), DS, VERSION_EPOCHS, key_of);
        assert_eq!(r, Err(GrantError::BadSignature));
        let mut g8 = grant8(2, 1, &DatasetKey([6; 32]), &[], &[2], vec![]);
        g8.signature = outsider.sign(&grant_message(DS, &g8.body));
        let r = EpochGrant::from_bytes(&g8.to_bytes(), DS, VERSION_KEYS, key_of);
        assert_eq!(r, Err(GrantError::BadSignature));
    }

    #[test]
    fn a_keyring_learns_every_missed_epoch_from_the_newest_grant_and_keeps_the_wider_grant() {
        let keys = [
            DatasetKey([0; 32]),
            DatasetKey([1; 32]),
            DatasetKey([2; 32]),
        ];
        let mut ring = Keyring::new(keys[0].clone());
        let narrow = grant(&keys, &[1, 2], vec![]);
        let learned = ring
            .learn(&narrow, DS, MemberId(2), &member(2), true)
            .unwrap();
        assert_eq!(
            learned.epochs,
            vec![EpochId::founder(1), EpochId::founder(2)]
        );
        ring.choose(|_, _| Standing::default());
        assert_eq!(ring.current(), (EpochId::founder(2), &keys[2]));
        assert_eq!(ring.key(EpochId::founder(1)), Some(&keys[1]));
        // The same grant again changes nothing.
        let again = ring
            .learn(&narrow, DS, MemberId(2), &member(2), true)
            .unwrap();
        assert_eq!(again, Learned::default());
        // A later grant of the same epoch for more members replaces the one carried.
        let mut wider = grant(&keys, &[1, 2, 5], vec![]);
        wider.body.admin_seq = 10;
        wider.signature = member(1).sign(&grant_message(DS, &wider.body));
        let learned = ring
            .learn(&wider, DS, MemberId(2), &member(2), true)
            .unwrap();
        assert!(learned.grant && learned.epochs.is_empty());
        assert_eq!(ring.grant().unwrap().0, 10);
        // It survives being stored.
        let back = Keyring::from_bytes(keys[0].clone(), &ring.to_bytes()).unwrap();
        assert_eq!(back, ring);
    }

    #[test]
    fn two_admins_epochs_of_one_number_are_told_apart_and_the_lower_signer_seals() {
        let k0 = DatasetKey([0; 32]);
        let (ka, kb) = (DatasetKey([0xa; 32]), DatasetKey([0xb; 32]));
        let zero = [(EpochId::ZERO, k0.clone())];
        // Admins 2 and 3 each begin epoch 1 at once.
        let by2 = grant8(2, 1, &ka, &zero, &[1, 2, 3, 4], vec![]);
        let by3 = grant8(3, 1, &kb, &zero, &[1, 2, 3, 4], vec![]);
        let mut ring = Keyring::new(k0.clone());
        for g in [&by3, &by2] {
            let g = EpochGrant::from_bytes(&g.to_bytes(), DS, VERSION_KEYS, key_of).unwrap();
            ring.learn(&g, DS, MemberId(4), &member(4), true).unwrap();
        }
        let e2 = EpochId {
            number: 1,
            signer: MemberId(2),
        };
        let e3 = EpochId {
            number: 1,
            signer: MemberId(3),
        };
        assert_eq!((ring.key(e2), ring.key(e3)), (Some(&ka), Some(&kb)));
        let ok = Standing {
            safe: true,
            clean: true,
            trusted: true,
            counts: true,
        };
        ring.choose(|_, _| ok);
        assert_eq!(ring.current(), (e2, &ka));
        // Admin 2 turns out to be a thief's: its epoch is not trusted, admin 3's seals.
        ring.choose(|id, _| {
            if id.signer.0 == 2 {
                Standing::default()
            } else {
                ok
            }
        });
        assert_eq!(ring.current(), (e3, &kb));
        // A later epoch by member 1 names both in its history (version 9, since they are
        // not all member 1's), and a member that held neither learns both from it.
        let hist = [
            (EpochId::ZERO, k0.clone()),
            (e2, ka.clone()),
            (e3, kb.clone()),
        ];
        let by1 = grant8(1, 2, &DatasetKey([0xc; 32]), &hist, &[1, 4, 5], vec![]);
        let mut fresh = Keyring::new(k0.clone());
        let g = EpochGrant::from_bytes(&by1.to_bytes(), DS, VERSION_KEYS, key_of).unwrap();
        let learned = fresh.learn(&g, DS, MemberId(5), &member(5), true).unwrap();
        assert_eq!(learned.epochs.len(), 3);
        assert_eq!(fresh.key(e3), Some(&kb));
        // A member's grant cannot replace a key of another signer's epoch that this node
        // holds: its history fills only what is missing.
        let liar = grant8(
            4,
            2,
            &DatasetKey([0xd; 32]),
            &[(EpochId::ZERO, k0.clone()), (e2, DatasetKey([0xee; 32]))],
            &[4, 5],
            vec![],
        );
        fresh
            .learn(&liar, DS, MemberId(5), &member(5), true)
            .unwrap();
        assert_eq!(fresh.key(e2), Some(&ka));
        let back = Keyring::from_bytes(k0, &fresh.to_bytes()).unwrap();
        assert_eq!(back, fresh);
    }

    #[test]
    fn a_history_out_of_order_or_naming_a_later_epoch_is_malformed() {
        let k0 = DatasetKey([0; 32]);
        let later = EpochId {
            number: 3,
            signer: MemberId(3),
        };
        let g = grant8(
            2,
            2,
            &DatasetKey([2; 32]),
            &[(EpochId::ZERO, k0), (later, DatasetKey([3; 32]))],
            &[2],
            vec![],
        );
        assert_eq!(
            g.open(DS, MemberId(2), &member(2)),
            Err(GrantError::Malformed)
        );
    }

    #[test]
    fn a_keyring_an_older_node_stored_is_read() {
        let keys = [DatasetKey([0; 32]), DatasetKey([1; 32])];
        let g = grant(
            &keys,
            &[1, 2],
            vec![Removal {
                member: MemberId(3),
                cutoff: 4,
            }],
        );
        let old = postcard::to_allocvec(&StoredKeyringV5 {
            keys: vec![(0, keys[0].0), (1, keys[1].0)],
            grant: Some((1, 9, g.to_bytes())),
            removed: vec![(MemberId(3), 4, 1_700_000_000_000)],
        })
        .unwrap();
        let ring = Keyring::from_bytes(keys[0].clone(), &old).unwrap();
        assert_eq!(ring.current(), (EpochId::founder(1), &keys[1]));
        assert_eq!(ring.current_grant(), Some(g));
        assert_eq!(ring.removal(MemberId(3)), Some((4, 1_700_000_000_000)));
    }

    #[test]
    fn a_second_grant_of_an_epoch_with_another_key_changes_nothing() {
        let k0 = DatasetKey([0; 32]);
        let zero = [(EpochId::ZERO, k0.clone())];
        let real = grant8(2, 1, &DatasetKey([0xa; 32]), &zero, &[2, 4], vec![]);
        let mut ring = Keyring::new(k0);
        ring.learn(&real, DS, MemberId(4), &member(4), true)
            .unwrap();
        // The same signer (stolen since, say) grants "its" epoch 1 again, wider on paper
        // (a later commit), with a key of its choosing.
        let mut junk = grant8(2, 1, &DatasetKey([0xee; 32]), &zero, &[2, 4], vec![]);
        junk.body.admin_seq = u64::MAX;
        junk.signature = member(2).sign(&grant_message(DS, &junk.body));
        let learned = ring
            .learn(&junk, DS, MemberId(4), &member(4), true)
            .unwrap();
        assert_eq!(learned, Learned::default());
        let e = EpochId {
            number: 1,
            signer: MemberId(2),
        };
        assert_eq!(ring.key(e), Some(&DatasetKey([0xa; 32])));
        assert_eq!(ring.grant_of(e), Some(real));
    }
}
