//! Key epochs (bundles/SPEC.md §14): after the admin removes a member (or rekeys), bundles
//! are sealed under a new epoch key that reaches every remaining member sealed to that
//! member alone, in an *epoch grant* the admin signs and any bundle of the epoch may carry
//! in its header.
//!
//! The grant seals the epoch key to each member with X25519 (the member's Ed25519 key in
//! Montgomery form) and one ephemeral key, and carries every earlier epoch key sealed under
//! the new one, so a member that holds the newest key reads every older bundle too. A
//! [`Keyring`] is what one node holds: its epoch keys and the newest grant, to relay.

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

/// Largest epoch grant a header may carry (≈ 5,000 members).
pub const MAX_GRANT: usize = 256 * 1024;

/// Most epochs a dataset may go through (each one adds 32 bytes to every grant).
pub const MAX_EPOCH: u32 = 4096;

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantBody {
    /// The epoch (1 or more; epoch 0's key is the dataset key of the invitations).
    pub epoch: u32,
    /// The admin's commit that records the change (its head when it granted): a reader
    /// that holds it holds the epoch.
    pub admin_seq: u64,
    /// When, by the admin's clock (ms since the Unix epoch).
    pub at_ms: u64,
    /// The members the change removes, ascending (empty for a rekey).
    pub removed: Vec<Removal>,
    /// The ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// The epoch key sealed to each member it is for, ascending by member.
    pub wraps: Vec<Wrap>,
    /// The keys of epochs 0 … epoch − 1, in order, sealed under the epoch key.
    #[serde(with = "serde_bytes")]
    pub history: Vec<u8>,
}

/// An epoch grant: the body and the admin's signature over it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochGrant {
    /// What is granted.
    pub body: GrantBody,
    /// The admin's signature over [`grant_message`].
    pub signature: Signature,
}

/// The message the admin signs: context, dataset, the body's bytes.
pub fn grant_message(dataset: DatasetId, body: &GrantBody) -> Vec<u8> {
    let mut m = b"ferry v5 epoch grant\0".to_vec();
    m.extend_from_slice(&dataset.0);
    postcard::to_extend(body, m).expect("a grant body encodes")
}

/// The key that seals the epoch key to `member`.
fn wrap_key(
    shared: &[u8; 32],
    ephemeral: &[u8; 32],
    theirs: &[u8; 32],
    dataset: DatasetId,
    epoch: u32,
    member: MemberId,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("ferry v5 epoch key wrap");
    h.update(shared);
    h.update(ephemeral);
    h.update(theirs);
    h.update(&dataset.0);
    h.update(&epoch.to_le_bytes());
    h.update(&member.0.to_le_bytes());
    *h.finalize().as_bytes()
}

/// The key that seals the earlier epochs' keys under the epoch key.
fn history_key(key: &DatasetKey, dataset: DatasetId, epoch: u32) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("ferry v5 epoch history");
    h.update(&key.0);
    h.update(&dataset.0);
    h.update(&epoch.to_le_bytes());
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
    /// The admin did not sign it.
    #[error("the key epoch grant in the bundle's header is not signed by the admin")]
    BadSignature,
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
        epoch: u32,
    },
}

impl EpochGrant {
    /// Makes and signs the grant of `key` as epoch `history.len()` (where `history` holds
    /// the keys of epochs 0 … epoch − 1) for `members` (member, key), announcing `removed`.
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
        let ephemeral = x25519_public(ephemeral_secret);
        let mut members = members.to_vec();
        members.sort_by_key(|&(m, _)| m);
        members.dedup_by_key(|&mut (m, _)| m);
        let wraps = members
            .iter()
            .filter_map(|&(member, pk)| {
                let theirs = pk.to_x25519()?;
                let shared = x25519(ephemeral_secret, &theirs)?;
                let wk = wrap_key(&shared, &ephemeral, &theirs, dataset, epoch, member);
                let mut buf = key.0.to_vec();
                encrypt_chunk(&wk, 0, true, &mut buf);
                Some(Wrap {
                    member,
                    key: buf[..32].try_into().expect("32 bytes"),
                    tag: buf[32..].try_into().expect("16 bytes"),
                })
            })
            .collect();
        let mut sealed: Vec<u8> = history.iter().flat_map(|k| k.0).collect();
        encrypt_chunk(&history_key(key, dataset, epoch), 0, true, &mut sealed);
        let mut removed = removed;
        removed.sort_by_key(|r| r.member);
        let body = GrantBody {
            epoch,
            admin_seq,
            at_ms,
            removed,
            ephemeral,
            wraps,
            history: sealed,
        };
        let signature = admin.sign(&grant_message(dataset, &body));
        EpochGrant { body, signature }
    }

    /// The grant's bytes, as a header carries them.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a grant encodes")
    }

    /// Reads a grant and checks it: well formed, signed by `admin`.
    pub fn from_bytes(
        bytes: &[u8],
        dataset: DatasetId,
        admin: &PublicKey,
    ) -> Result<EpochGrant, GrantError> {
        if bytes.len() > MAX_GRANT {
            return Err(GrantError::Malformed);
        }
        let (g, rest): (EpochGrant, _) =
            postcard::take_from_bytes(bytes).map_err(|_| GrantError::Malformed)?;
        let b = &g.body;
        let ascending = |v: &[MemberId]| v.windows(2).all(|w| w[0] < w[1]);
        let wraps: Vec<_> = b.wraps.iter().map(|w| w.member).collect();
        let removed: Vec<_> = b.removed.iter().map(|r| r.member).collect();
        if !rest.is_empty()
            || b.epoch == 0
            || b.epoch > MAX_EPOCH
            || b.history.len() != 32 * b.epoch as usize + TAG
            || !ascending(&wraps)
            || !ascending(&removed)
            || removed.iter().any(|m| wraps.contains(m))
        {
            return Err(GrantError::Malformed);
        }
        if !admin.verify(&grant_message(dataset, b), &g.signature) {
            return Err(GrantError::BadSignature);
        }
        Ok(g)
    }

    /// Opens the grant with this node's key: the epoch key and the keys of every earlier
    /// epoch (index = epoch).
    pub fn open(
        &self,
        dataset: DatasetId,
        me: MemberId,
        secret: &SecretKey,
    ) -> Result<Vec<DatasetKey>, GrantError> {
        let b = &self.body;
        let Some(w) = b.wraps.iter().find(|w| w.member == me) else {
            return Err(match b.removed.iter().find(|r| r.member == me) {
                Some(r) => GrantError::Removed {
                    cutoff: r.cutoff,
                    at_ms: b.at_ms,
                },
                None => GrantError::NotGranted { epoch: b.epoch },
            });
        };
        let theirs = secret.public().to_x25519().ok_or(GrantError::Malformed)?;
        let shared = secret.x25519(&b.ephemeral).ok_or(GrantError::Malformed)?;
        let wk = wrap_key(&shared, &b.ephemeral, &theirs, dataset, b.epoch, me);
        let mut buf = w.key.to_vec();
        buf.extend_from_slice(&w.tag);
        if !decrypt_chunk(&wk, 0, true, &mut buf) {
            // Sealed to another key: the admin's record of this member is not this device.
            return Err(GrantError::NotGranted { epoch: b.epoch });
        }
        let key = DatasetKey(buf.try_into().expect("32 bytes"));
        let mut history = b.history.clone();
        if !decrypt_chunk(&history_key(&key, dataset, b.epoch), 0, true, &mut history) {
            return Err(GrantError::Malformed);
        }
        let mut keys: Vec<DatasetKey> = history
            .chunks_exact(32)
            .map(|c| DatasetKey(c.try_into().expect("32 bytes")))
            .collect();
        keys.push(key);
        Ok(keys)
    }
}

/// The epoch keys one node holds, and the newest grant it has (to carry to others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    keys: BTreeMap<u32, DatasetKey>,
    /// The grant of the newest epoch (the one with the highest `admin_seq` seen), if any.
    grant: Option<(u32, u64, Vec<u8>)>,
    /// The removals every valid grant seen announced (member, cutoff, when), whether or not
    /// it opened here.
    removed: BTreeMap<MemberId, (u64, u64)>,
}

/// What a node keeps of its keyring.
#[derive(Serialize, Deserialize)]
struct StoredKeyring {
    keys: Vec<(u32, [u8; 32])>,
    grant: Option<(u32, u64, Vec<u8>)>,
    removed: Vec<(MemberId, u64, u64)>,
}

/// What [`Keyring::learn`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    /// Epochs whose key is new here.
    pub epochs: Vec<u32>,
    /// Whether the grant to carry changed.
    pub grant: bool,
}

impl Keyring {
    /// A keyring holding only epoch 0: the dataset key of the invitation.
    pub fn new(dataset_key: DatasetKey) -> Keyring {
        Keyring {
            keys: BTreeMap::from([(0, dataset_key)]),
            grant: None,
            removed: BTreeMap::new(),
        }
    }

    /// The newest epoch held and its key: what this node seals with.
    pub fn current(&self) -> (u32, &DatasetKey) {
        let (e, k) = self.keys.last_key_value().expect("epoch 0 is always held");
        (*e, k)
    }

    /// The key of `epoch`, if held.
    pub fn key(&self, epoch: u32) -> Option<&DatasetKey> {
        self.keys.get(&epoch)
    }

    /// Every key held, by epoch.
    pub fn keys(&self) -> impl Iterator<Item = (u32, &DatasetKey)> {
        self.keys.iter().map(|(e, k)| (*e, k))
    }

    /// The grant of the current epoch, to carry in bundles' headers, and the admin's commit
    /// it belongs to; `None` in epoch 0.
    pub fn grant(&self) -> Option<(u64, &[u8])> {
        let (e, _) = self.current();
        match &self.grant {
            Some((ge, seq, bytes)) if *ge == e => Some((*seq, bytes)),
            _ => None,
        }
    }

    /// The grant of the current epoch, decoded (its own signature was checked when it was
    /// learned or issued).
    pub fn current_grant(&self) -> Option<EpochGrant> {
        let (_, bytes) = self.grant()?;
        postcard::from_bytes(bytes).ok()
    }

    /// Notes the removals a checked grant announces (the highest cutoff of a member counts,
    /// as for concurrent removals); returns whether anything is new.
    pub fn note_removals(&mut self, grant: &EpochGrant) -> bool {
        let mut new = false;
        for r in &grant.body.removed {
            let e = self.removed.entry(r.member).or_insert((0, 0));
            if r.cutoff > e.0 || e.1 == 0 {
                *e = (r.cutoff.max(e.0), grant.body.at_ms);
                new = true;
            }
        }
        new
    }

    /// A removal some grant announced: the member's cutoff and when (admin's clock, ms).
    pub fn removal(&self, member: MemberId) -> Option<(u64, u64)> {
        self.removed.get(&member).copied()
    }

    /// The keys of epochs 0 … up to the current one, in order (for a grant or an
    /// invitation); `None` if one is missing.
    pub fn history(&self) -> Option<Vec<DatasetKey>> {
        let (e, _) = self.current();
        (0..=e).map(|i| self.keys.get(&i).cloned()).collect()
    }

    /// Adds keys this node made or was given (an invitation's, or the admin's own new
    /// epoch) and, if given, the grant of the newest.
    pub fn install(&mut self, keys: &[DatasetKey], grant: Option<&EpochGrant>) {
        for (e, k) in keys.iter().enumerate() {
            self.keys.insert(e as u32, k.clone());
        }
        if let Some(g) = grant {
            self.grant = Some((g.body.epoch, g.body.admin_seq, g.to_bytes()));
            self.note_removals(g);
        }
    }

    /// Learns from a grant a bundle's header carries: the keys it seals to `me`, and the
    /// grant itself when it is newer than the one held (a grant of the same epoch made
    /// later, for more members). A grant this node cannot open is an error only when it
    /// lacks the epoch's key.
    pub fn learn(
        &mut self,
        bytes: &[u8],
        dataset: DatasetId,
        admin: &PublicKey,
        me: MemberId,
        secret: &SecretKey,
    ) -> Result<Learned, GrantError> {
        let mut learned = Learned::default();
        if self.grant.as_ref().is_some_and(|(_, _, g)| g == bytes) {
            return Ok(learned);
        }
        let g = EpochGrant::from_bytes(bytes, dataset, admin)?;
        learned.grant |= self.note_removals(&g);
        let epoch = g.body.epoch;
        if !self.keys.contains_key(&epoch) {
            let keys = g.open(dataset, me, secret)?;
            for (e, k) in keys.into_iter().enumerate() {
                let e = e as u32;
                if let std::collections::btree_map::Entry::Vacant(slot) = self.keys.entry(e) {
                    slot.insert(k);
                    learned.epochs.push(e);
                }
            }
        }
        let newer = match &self.grant {
            None => true,
            Some((ge, seq, _)) => (epoch, g.body.admin_seq) > (*ge, *seq),
        };
        if newer && g.open(dataset, me, secret).is_ok() {
            self.grant = Some((epoch, g.body.admin_seq, bytes.to_vec()));
            learned.grant = true;
        }
        Ok(learned)
    }

    /// The bytes a node keeps.
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(&StoredKeyring {
            keys: self.keys.iter().map(|(e, k)| (*e, k.0)).collect(),
            grant: self.grant.clone(),
            removed: self
                .removed
                .iter()
                .map(|(m, (c, t))| (*m, *c, *t))
                .collect(),
        })
        .expect("a keyring encodes")
    }

    /// Reads what [`Keyring::to_bytes`] wrote, over the dataset key (epoch 0).
    pub fn from_bytes(dataset_key: DatasetKey, b: &[u8]) -> Result<Keyring, postcard::Error> {
        let s: StoredKeyring = postcard::from_bytes(b)?;
        let mut ring = Keyring::new(dataset_key);
        for (e, k) in s.keys {
            ring.keys.insert(e, DatasetKey(k));
        }
        ring.grant = s.grant;
        ring.removed = s.removed.into_iter().map(|(m, c, t)| (m, (c, t))).collect();
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
        let admin = member(1).public();
        let read = EpochGrant::from_bytes(&bytes, DS, &admin).unwrap();
        assert_eq!(read, g);
        for n in [1u8, 2, 4] {
            assert_eq!(read.open(DS, MemberId(n as u32), &member(n)).unwrap(), keys);
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
        assert_eq!(
            read.open(DS, MemberId(5), &member(5)),
            Err(GrantError::NotGranted { epoch: 2 })
        );
        // Another device claiming member 2's number cannot open member 2's wrap.
        assert_eq!(
            read.open(DS, MemberId(2), &member(9)),
            Err(GrantError::NotGranted { epoch: 2 })
        );
    }

    #[test]
    fn a_grant_not_signed_by_the_admin_or_changed_is_refused() {
        let keys = [DatasetKey([0; 32]), DatasetKey([1; 32])];
        let bytes = grant(&keys, &[1, 2], vec![]).to_bytes();
        let admin = member(1).public();
        // Signed by a member, not the admin.
        assert_eq!(
            EpochGrant::from_bytes(&bytes, DS, &member(2).public()),
            Err(GrantError::BadSignature)
        );
        // Another dataset.
        assert_eq!(
            EpochGrant::from_bytes(&bytes, DatasetId([8; 8]), &admin),
            Err(GrantError::BadSignature)
        );
        // Every single byte changed: refused (malformed or not signed), never a panic.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(EpochGrant::from_bytes(&b, DS, &admin).is_err(), "byte {i}");
        }
        // Cut anywhere.
        for n in 0..bytes.len() {
            assert!(EpochGrant::from_bytes(&bytes[..n], DS, &admin).is_err());
        }
    }

    #[test]
    fn an_outsider_cannot_make_a_grant_that_hands_members_its_own_key() {
        // The outsider knows the dataset id and the members' public keys, and signs with
        // its own key: every member refuses it, so nobody seals with the outsider's key.
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
        let mut ring = Keyring::new(DatasetKey([0; 32]));
        let r = ring.learn(
            &g.to_bytes(),
            DS,
            &member(1).public(),
            MemberId(2),
            &member(2),
        );
        assert_eq!(r, Err(GrantError::BadSignature));
        assert_eq!(ring.current().0, 0);
    }

    #[test]
    fn a_keyring_learns_every_missed_epoch_from_the_newest_grant_and_keeps_the_wider_grant() {
        let keys = [
            DatasetKey([0; 32]),
            DatasetKey([1; 32]),
            DatasetKey([2; 32]),
        ];
        let admin = member(1).public();
        let mut ring = Keyring::new(keys[0].clone());
        let narrow = grant(&keys, &[1, 2], vec![]);
        let learned = ring
            .learn(&narrow.to_bytes(), DS, &admin, MemberId(2), &member(2))
            .unwrap();
        assert_eq!(learned.epochs, vec![1, 2]);
        assert_eq!(ring.current(), (2, &keys[2]));
        assert_eq!(ring.key(1), Some(&keys[1]));
        // The same grant again changes nothing.
        let again = ring
            .learn(&narrow.to_bytes(), DS, &admin, MemberId(2), &member(2))
            .unwrap();
        assert_eq!(again, Learned::default());
        // A later grant of the same epoch for more members replaces the one carried.
        let mut wider = grant(&keys, &[1, 2, 5], vec![]);
        wider.body.admin_seq = 10;
        wider.signature = member(1).sign(&grant_message(DS, &wider.body));
        let learned = ring
            .learn(&wider.to_bytes(), DS, &admin, MemberId(2), &member(2))
            .unwrap();
        assert!(learned.grant && learned.epochs.is_empty());
        assert_eq!(ring.grant().unwrap().0, 10);
        // It survives being stored.
        let back = Keyring::from_bytes(keys[0].clone(), &ring.to_bytes()).unwrap();
        assert_eq!(back, ring);
    }
}
