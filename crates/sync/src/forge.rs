//! Hostile bundles, made on purpose: what an outsider who knows only the dataset id, or a
//! member gone rogue, can write. The seeded simulation delivers them to honest replicas
//! and checks that none has any effect (bundles/SPEC.md §10); tests use them too.
//!
//! Every function here writes real bundle bytes with the real writer; nothing is mocked.

use crate::sim::{SimNode, SplitMix};
use crate::storage::Storage;
use ferry_bundle::{BundleWriter, DatasetKey, Header, Item, RunProof, WriteOptions};
use ferry_model::commit::{ChainContext, chain_root};
use ferry_model::crypto::{InviteCert, JoinProof, SecretKey, Signature, head_message};
use ferry_model::{
    Change, Commit, DatasetId, Dot, Hash, Hlc, MemberId, Op, RecordState, Stamp, Value,
    VersionVector,
};

/// Who signs a forged bundle, and over what.
pub enum Signer<'a> {
    /// An all-zero signature (an outsider with no key).
    Zero,
    /// A key's signature over the sender's head at `head` with chain hash `hash`, as an
    /// honest writer signs (valid when the key is the sender's and the hash is right).
    Key {
        /// The signing key.
        key: &'a SecretKey,
        /// The head the receipt claims.
        head: u64,
        /// The chain hash at that head.
        hash: Hash,
    },
}

/// Writes a bundle of `items` with the given header fields, sealed under `key` (or
/// plaintext when `None`), signed by `signer`.
pub fn bundle(
    dataset: DatasetId,
    sender: MemberId,
    salt: [u8; 16],
    key: Option<&DatasetKey>,
    items: &[Item],
    signer: Signer<'_>,
) -> Vec<u8> {
    let header = Header::new(dataset, sender, salt);
    let options = WriteOptions {
        level: 1,
        plaintext: key.is_none(),
        ..WriteOptions::default()
    };
    let any_key = DatasetKey([0; 32]);
    let mut w = BundleWriter::new(Vec::new(), &header, key.unwrap_or(&any_key), options)
        .expect("writes to memory");
    for item in items {
        w.push(item).expect("writes to memory");
    }
    w.finish(|digest| match &signer {
        Signer::Zero => Signature([0; 64]),
        Signer::Key { key, head, hash } => {
            key.sign(&head_message(dataset, sender, *head, hash, Some(digest)))
        }
    })
    .expect("writes to memory")
    .0
}

/// A record state that shows `field` = `value`, written (it claims) by `author`'s commit
/// `seq`.
pub fn record_state(author: MemberId, seq: u64, field: &str, value: Value) -> Vec<u8> {
    let mut r = RecordState::default();
    r.apply(
        Stamp::new(Dot::new(author, seq), Hlc::from_parts(4_000_000_000_000, 0)),
        &VersionVector::new(),
        &Op::Set(field.into(), value),
    );
    postcard::to_allocvec(&r).expect("encodes")
}

/// Snapshot items that claim `author` is at commit `seq` and rewrite `collection/id`'s
/// `field` to `value`, attributed to `author`.
pub fn snapshot_items(
    author: MemberId,
    seq: u64,
    collection: &str,
    id: &str,
    field: &str,
    value: Value,
) -> Vec<Item> {
    let state: VersionVector = [(author, seq)].into_iter().collect();
    vec![
        Item::Snapshot {
            state: state.clone(),
            compacted: [(author, seq.saturating_sub(1))].into_iter().collect(),
        },
        Item::SnapshotChain {
            author,
            seq,
            hash: Hash([0x5a; 32]),
            hlc: Hlc::from_parts(4_000_000_000_000, 0),
            deps: VersionVector::new(),
            names: vec![collection.into(), field.into()],
            first: vec![0, 0, 0, 0, 0, 0],
        },
        Item::SnapshotRecord {
            collection: collection.into(),
            id: id.into(),
            state: record_state(author, seq, field, value),
        },
    ]
}

/// What an outsider who knows only the dataset id can write: one of several kinds, chosen
/// by `rng`. None of them carries a valid signature by a member.
pub fn outsider(dataset: DatasetId, rng: &mut SplitMix) -> Vec<u8> {
    let salt = rng.bytes();
    let big = 1_000_000 + rng.below(1_000_000);
    match rng.below(5) {
        // The keyless snapshot of the CRITICAL finding: plaintext, "from the admin", a huge
        // head, records rewritten, zero signature.
        0 => {
            let mut items = vec![Item::Receipt(
                [(MemberId::ADMIN, big)].into_iter().collect(),
            )];
            items.extend(snapshot_items(
                MemberId::ADMIN,
                big,
                "c",
                &format!("r{}", rng.below(4)),
                "f0",
                Value::Str("FORGED-BY-OUTSIDER".into()),
            ));
            bundle(dataset, MemberId::ADMIN, salt, None, &items, Signer::Zero)
        }
        // Runs of junk from an unknown member at absurd commit numbers (the disk filler).
        1 => {
            let sender = MemberId(90 + rng.below(10) as u32);
            let mut items = vec![Item::Receipt(Default::default())];
            for a in 0..3u32 {
                items.push(Item::Run {
                    author: MemberId(100 + a),
                    first: 1_000_000_000_000,
                    count: 1,
                    proof: RunProof::Head(Signature([1; 64])),
                });
                items.push(Item::Commit(rng.bytes::<64>().to_vec()));
            }
            bundle(dataset, sender, salt, None, &items, Signer::Zero)
        }
        // A made-up member with a join signed by a made-up admin, itself validly signed.
        2 => {
            let member = MemberId(50 + rng.below(10) as u32);
            let fake_admin = SecretKey::from_bytes(rng.bytes());
            let device = SecretKey::from_bytes(rng.bytes());
            let invite = SecretKey::from_bytes(rng.bytes());
            let label = "intruder".to_string();
            let cert = fake_admin.sign(&ferry_model::crypto::invite_message(
                dataset,
                member,
                &invite.public(),
                &label,
            ));
            let join = JoinProof {
                invite: InviteCert {
                    member,
                    label,
                    invite_key: invite.public(),
                    cert,
                },
                member_key: device.public(),
                join_sig: invite.sign(&ferry_model::crypto::join_message(
                    dataset,
                    member,
                    &device.public(),
                )),
            };
            let mut ctx = ChainContext::new(dataset, member);
            let commit = Commit {
                author: member,
                seq: 1,
                hlc: Hlc::from_parts(1_763_000_000_000, 0),
                deps: VersionVector::new(),
                seen: None,
                changes: vec![Change::Join(join)],
            };
            let bytes = ctx.encode(&commit).expect("a well-formed commit");
            let items = [
                Item::Receipt([(member, 1)].into_iter().collect()),
                Item::Run {
                    author: member,
                    first: 1,
                    count: 1,
                    proof: RunProof::Sender,
                },
                Item::Commit(bytes),
            ];
            let signer = Signer::Key {
                key: &device,
                head: 1,
                hash: ctx.hash,
            };
            bundle(dataset, member, salt, None, &items, signer)
        }
        // A sealed bundle under a key the outsider made up.
        3 => {
            let key = DatasetKey(rng.bytes());
            let items = [Item::Receipt(Default::default())];
            bundle(
                dataset,
                MemberId::ADMIN,
                salt,
                Some(&key),
                &items,
                Signer::Zero,
            )
        }
        // Peer receipts without end (the CPU bomb), plaintext.
        _ => {
            let vv: VersionVector = (1..200u32).map(|m| (MemberId(m), big)).collect();
            let mut items = vec![Item::Receipt(Default::default())];
            for m in 0..(ferry_bundle::MAX_PEER_RECEIPTS as u32 + 1) {
                items.push(Item::PeerReceipt(MemberId(m + 2), vv.clone()));
            }
            bundle(dataset, MemberId(2), salt, None, &items, Signer::Zero)
        }
    }
}

/// What a member gone rogue can write with the dataset key and its own signing key,
/// besides its honest work: one of several kinds, chosen by `rng`. Every one is invalid in
/// some way (or, signed validly, carries nothing a member may do), so none may have any
/// effect on an honest replica's data.
///
/// The validly signed kinds carry `known` as the rogue's receipt: what the recipient already
/// knows the rogue holds (its own entry at most what the recipient holds of it). A receipt is
/// valid news, not a forgery, and news arriving early may shift when honest replicas do
/// things; with `known`, the bundles tell the recipient nothing it did not know, so any effect
/// they have comes from what is invalid in them.
pub fn rogue(node: &SimNode, known: &VersionVector, rng: &mut SplitMix) -> Vec<u8> {
    let me = node.me();
    let dataset = node.engine.dataset;
    let salt = rng.bytes();
    let stored = known.clone();
    let head = stored.get(me);
    let hash = match head {
        0 => chain_root(dataset, me),
        n => node
            .store
            .commit_hash(me, n)
            .expect("mem")
            .unwrap_or_else(|| chain_root(dataset, me)),
    };
    let valid = Signer::Key {
        key: &node.secret,
        head,
        hash,
    };
    let key = Some(node.key.current().1);
    let target = format!("r{}", rng.below(4));
    match rng.below(7) {
        // A snapshot from a member, validly signed: only the admin's are installed.
        0 => {
            let mut items = vec![Item::Receipt(stored.clone())];
            items.extend(snapshot_items(
                MemberId::ADMIN,
                stored.get(MemberId::ADMIN).max(1),
                "c",
                &target,
                "f0",
                Value::Str("FORGED-BY-MEMBER".into()),
            ));
            bundle(dataset, me, salt, key, &items, valid)
        }
        // The same, claiming to be the admin, signed with the rogue's own key.
        1 => {
            let admin_head = stored.get(MemberId::ADMIN);
            let admin_hash = node
                .store
                .commit_hash(MemberId::ADMIN, admin_head)
                .expect("mem")
                .unwrap_or_else(|| chain_root(dataset, MemberId::ADMIN));
            let mut receipt = stored.clone();
            receipt.set(MemberId::ADMIN, admin_head);
            let mut items = vec![Item::Receipt(receipt)];
            items.extend(snapshot_items(
                MemberId::ADMIN,
                admin_head.max(1),
                "c",
                &target,
                "f1",
                Value::Str("FORGED-AS-ADMIN".into()),
            ));
            let signer = Signer::Key {
                key: &node.secret,
                head: admin_head,
                hash: admin_hash,
            };
            bundle(dataset, MemberId::ADMIN, salt, key, &items, signer)
        }
        // Another member's commit, altered, relayed with a made-up proof.
        2 => {
            let others: Vec<(MemberId, u64)> =
                stored.iter().filter(|&(a, n)| a != me && n >= 2).collect();
            let mut items = vec![Item::Receipt(stored.clone())];
            if let Some(&(author, n)) = others.get(rng.below(others.len().max(1) as u64) as usize) {
                let seq = 2 + rng.below(n - 1);
                let mut bytes = node
                    .store
                    .commit(author, seq)
                    .expect("mem")
                    .map(|c| c.bytes)
                    .filter(|b| !b.is_empty())
                    .unwrap_or_else(|| vec![0; 8]);
                let i = rng.below(bytes.len() as u64) as usize;
                bytes[i] ^= 0x20;
                items.push(Item::Run {
                    author,
                    first: seq,
                    count: 1,
                    proof: RunProof::Head(node.secret.sign(b"not the author's")),
                });
                items.push(Item::Commit(bytes));
            }
            bundle(dataset, me, salt, key, &items, valid)
        }
        // More peer receipts than the format allows, validly signed.
        3 => {
            let mut items = vec![Item::Receipt(stored.clone())];
            for m in 0..(ferry_bundle::MAX_PEER_RECEIPTS as u32 + 1) {
                items.push(Item::PeerReceipt(MemberId(m + 1), stored.clone()));
            }
            bundle(dataset, me, salt, key, &items, valid)
        }
        // A receipt claiming another member's head, signed with the rogue's key (a forged
        // receipt for someone else).
        4 => {
            let victim = stored
                .iter()
                .map(|(a, _)| a)
                .find(|&a| a != me)
                .unwrap_or(MemberId::ADMIN);
            let vhead = stored.get(victim);
            let vhash = node
                .store
                .commit_hash(victim, vhead)
                .expect("mem")
                .unwrap_or_else(|| chain_root(dataset, victim));
            let mut receipt = stored.clone();
            receipt.set(victim, vhead);
            let signer = Signer::Key {
                key: &node.secret,
                head: vhead,
                hash: vhash,
            };
            bundle(
                dataset,
                victim,
                salt,
                key,
                &[Item::Receipt(receipt)],
                signer,
            )
        }
        // Junk runs at absurd numbers of a member that does not exist, in a validly signed
        // bundle (they wait, stashed within the rogue's quota, and never check out).
        5 => {
            let mut items = vec![Item::Receipt(stored.clone())];
            items.push(Item::Run {
                author: MemberId(200 + rng.below(5) as u32),
                first: 1_000_000 + rng.below(1000),
                count: 2,
                proof: RunProof::Head(Signature(rng.bytes())),
            });
            items.push(Item::Commit(rng.bytes::<48>().to_vec()));
            items.push(Item::Commit(rng.bytes::<48>().to_vec()));
            bundle(dataset, me, salt, key, &items, valid)
        }
        // A head far beyond the rogue's real one, with no commits: never checkable.
        _ => {
            let mut receipt = stored.clone();
            receipt.set(me, head + 5);
            let signer = Signer::Key {
                key: &node.secret,
                head: head + 5,
                hash: Hash(rng.bytes()),
            };
            bundle(dataset, me, salt, key, &[Item::Receipt(receipt)], signer)
        }
    }
}
