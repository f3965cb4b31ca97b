//! The authentication gate (issue 10), attacked: findings of the review of the gate, each
//! pinned by a test named after the protection it checks (each failed before its fix). What
//! an admin may do is trusted for data, but must not crash a reader or cost it unbounded
//! memory; what a member may do is bounded by quotas and cannot freeze another member
//! without that member's own two signatures.

use ferry_bundle::{Item, RunProof};
use ferry_model::commit::{chain_next, chain_root};
use ferry_model::crypto::{Signature, head_message};
use ferry_model::{Change, Hash, MemberId, Op, Value};
use ferry_sync::forge::{self, Signer};
use ferry_sync::fork::{Branch, ForkEvidence, Other};
use ferry_sync::plan::Coverage;
use ferry_sync::sim::{SimNode, applied};
use ferry_sync::{FORK_FIELD, FORKS, IngestError, Storage};
use serde_bytes::ByteBuf;
use std::panic::{AssertUnwindSafe, catch_unwind};

const T0: u64 = 1_763_000_000_000;
const ADMIN: MemberId = MemberId::ADMIN;
const A: MemberId = MemberId(2);
const B: MemberId = MemberId(3);
const MB: u64 = 1024 * 1024;

fn set(f: &str, v: Value) -> Op {
    Op::Set(f.into(), v)
}

fn key(s: &str) -> (String, String) {
    (
        s.split('/').next().unwrap().into(),
        s.split('/').nth(1).unwrap().into(),
    )
}

/// HQ plus `n` members (2, 3, …) that have exchanged their joins through HQ.
fn group(n: u32) -> (SimNode, Vec<SimNode>) {
    let mut hq = SimNode::create("clinics", "hq", 1, T0);
    let invs: Vec<_> = (0..n)
        .map(|i| hq.invite(MemberId(2 + i), &format!("m{}", 2 + i), T0 + 1 + i as u64))
        .collect();
    let mut nodes: Vec<SimNode> = invs
        .iter()
        .enumerate()
        .map(|(i, inv)| SimNode::join(inv, 2 + i as u64, T0 + 10 + i as u64))
        .collect();
    for node in &mut nodes {
        let me = node.me();
        let join = node.bundle_with(&[Coverage {
            author: me,
            first: 1,
            last: 1,
        }]);
        hq.ingest(&join).unwrap();
    }
    let from_hq = hq.bundle(&[]);
    for node in &mut nodes {
        applied(node.ingest(&from_hq).unwrap());
    }
    (hq, nodes)
}

fn three() -> (SimNode, SimNode, SimNode) {
    let (hq, mut v) = group(2);
    let b = v.pop().unwrap();
    let a = v.pop().unwrap();
    (hq, a, b)
}

fn head_of(node: &SimNode, m: MemberId) -> u64 {
    node.store.stored().unwrap().get(m)
}

fn hash_of(node: &SimNode, m: MemberId, seq: u64) -> Hash {
    if seq == 0 {
        return chain_root(node.engine.dataset, m);
    }
    node.store.commit_hash(m, seq).unwrap().unwrap()
}

/// A bundle of `items` from `node`, sealed with the dataset key and validly signed by it
/// (over its real head), as a member can write one.
fn signed_by(node: &SimNode, salt: u8, items: &[Item]) -> Vec<u8> {
    let me = node.me();
    let head = head_of(node, me);
    forge::bundle(
        node.engine.dataset,
        me,
        [salt; 16],
        Some(node.key.current().1),
        items,
        Signer::Key {
            key: &node.secret,
            head,
            hash: hash_of(node, me, head),
        },
    )
}

/// Fork evidence about `node`'s own member, which it can always sign: two one-commit
/// "branches" after commit `base`, from a made-up chain hash.
fn self_evidence(node: &SimNode, base: u64) -> ForkEvidence {
    let me = node.me();
    let ds = node.engine.dataset;
    let base_hash = Hash([0x11; 32]);
    let branch = |c: &[u8]| {
        let h = chain_next(&base_hash, base + 1, c);
        Branch {
            commits: vec![ByteBuf::from(c.to_vec())],
            digest: None,
            sig: node.secret.sign(&head_message(ds, me, base + 1, &h, None)),
            columnar: Vec::new(),
        }
    };
    ForkEvidence {
        author: me,
        base,
        base_hash,
        a: branch(b"one"),
        b: Other::Branch(branch(b"two")),
    }
}

fn write_evidence(node: &mut SimNode, id: &str, field: &str, bytes: Vec<u8>, at: u64) {
    node.engine
        .commit_local(
            &mut node.store,
            vec![Change::Record {
                collection: FORKS.into(),
                id: id.into(),
                ops: vec![set(field, Value::Bytes(bytes))],
            }],
            at,
        )
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Finding 1: a malicious admin crashes every reader (unreachable! in ingest_run).
// ---------------------------------------------------------------------------------------

/// The admin sends a snapshot whose chain for itself sits at the reader's next commit with a
/// made-up hash, followed by its own run over that commit (proof `Sender`). Pass 1 checks the
/// run against the store before the snapshot and finds it good; pass 2 installs the snapshot
/// first, then meets a "held" commit that differs and takes the relayed-fork path, which
/// assumes a relayed proof: `unreachable!("a relayed run carries its author's proof")`.
#[test]
fn an_admin_snapshot_contradicted_by_its_own_run_is_refused_not_a_panic() {
    let (mut hq, mut a, _b) = three();
    let h0 = head_of(&a, ADMIN);
    assert_eq!(h0, head_of(&hq, ADMIN));
    hq.write("visits", "v-1", vec![set("x", Value::Int(1))], T0 + 100);
    hq.write("visits", "v-2", vec![set("x", Value::Int(2))], T0 + 101);
    let c = |seq| hq.store.commit(ADMIN, seq).unwrap().unwrap();
    let (c1, c2) = (c(h0 + 1), c(h0 + 2));
    let names = hq.store.chain(ADMIN).unwrap().unwrap().names[..c1.names as usize].to_vec();
    let mut state = a.store.applied().unwrap();
    state.set(ADMIN, h0 + 1);
    let items = vec![
        Item::Receipt(hq.store.stored().unwrap()),
        Item::Snapshot {
            state,
            compacted: [(ADMIN, h0 + 1)].into_iter().collect(),
        },
        Item::SnapshotChain {
            author: ADMIN,
            seq: h0 + 1,
            hash: Hash([0xAB; 32]),
            hlc: c1.hlc,
            deps: c1.deps.clone(),
            names,
            first: c(1).bytes,
        },
        Item::Run {
            author: ADMIN,
            first: h0 + 1,
            count: 2,
            proof: RunProof::Sender,
        },
        Item::Commit(c1.bytes.clone()),
        Item::Commit(c2.bytes.clone()),
    ];
    let bundle = signed_by(&hq, 7, &items);
    let r = catch_unwind(AssertUnwindSafe(|| a.ingest(&bundle)));
    assert!(
        r.is_ok(),
        "an admin's bundle (snapshot + own run) crashed the reader: pass 2 saw the snapshot's \
         chain, pass 1 did not, and ingest_run hit unreachable!"
    );
}

// ---------------------------------------------------------------------------------------
// Finding 2: a member's run that freezes its own author is applied past the fork point
// (ingest_run reads `frozen_at` once per run); replicas diverge for ever.
// ---------------------------------------------------------------------------------------

#[test]
fn evidence_inside_the_authors_own_run_stops_it_at_its_fork_point() {
    let (mut hq, mut a, mut b) = three();
    // Member 2 writes (valid) evidence about itself into its commit 2: frozen from 3.
    let ev = self_evidence(&a, 2);
    assert_eq!(ev.verify(a.engine.dataset, &a.secret.public()), Ok(3));
    write_evidence(&mut a, "2", FORK_FIELD, ev.to_bytes(), T0 + 100);
    let part = a.bundle(&[]); // commit 2 only, signed at head 2
    a.write("visits", "v-late", vec![set("x", Value::Int(1))], T0 + 200); // commit 3
    let whole = a.bundle_with(&[Coverage {
        author: A,
        first: 2,
        last: 3,
    }]);
    // B gets commit 2 alone: member 2 is frozen from 3, and commit 3 is never applied.
    applied(b.ingest(&part).unwrap());
    assert_eq!(b.store.frozen(A).unwrap(), Some(3));
    // HQ gets 2 and 3 in one run.
    let r = catch_unwind(AssertUnwindSafe(|| hq.ingest(&whole)));
    assert!(
        r.is_ok(),
        "ingest applied commit 3 of member 2 although commit 2 of the same run froze it from 3 \
         (MemStorage's invariant check panicked; SQLite applies it silently)"
    );
    assert_eq!(
        hq.store.applied().unwrap().get(A),
        b.store.applied().unwrap().get(A),
        "HQ and B disagree on member 2's applied commits for ever"
    );
}

// ---------------------------------------------------------------------------------------
// Finding 3: fork evidence of the `Head` form lets a third member move the fork point of a
// forked member down to commit 1; honest commits before the fork are then never applied on
// readers that had not applied them yet.
// ---------------------------------------------------------------------------------------

#[test]
fn head_form_evidence_cannot_move_the_fork_point_before_the_signed_head() {
    let (mut hq, mut v) = group(3);
    let mut d = v.pop().unwrap(); // member 4
    let mut b = v.pop().unwrap(); // member 3 (the rogue)
    let mut a = v.pop().unwrap(); // member 2 (its laptop will be restored from a backup)
    // Commit 2 of member 2, before any fork: honest work everybody should apply.
    a.write("visits", "v-a2", vec![set("w", Value::Int(2))], T0 + 100);
    let backup = a.clone();
    a.write("visits", "v-x", vec![set("w", Value::Int(31))], T0 + 110); // 3, version 1
    applied(hq.ingest(&a.bundle(&[])).unwrap());
    let mut restored = backup;
    restored.write("visits", "v-x", vec![set("w", Value::Int(32))], T0 + 120); // 3, version 2
    applied(b.ingest(&restored.bundle(&[])).unwrap());
    // The rogue B assembles evidence from base 0: version 1's commits 1..3 with member 2's
    // signature at 3 (as HQ relays them), and member 2's signature over version 2 at 3.
    let p1 = hq.store.proof(A, 3).unwrap().unwrap();
    let p2 = b.store.proof(A, 3).unwrap().unwrap();
    let ev = ForkEvidence {
        author: A,
        base: 0,
        base_hash: chain_root(hq.engine.dataset, A),
        a: Branch::new(
            (1..=3)
                .map(|s| hq.store.commit(A, s).unwrap().unwrap().body())
                .collect(),
            p1.digest,
            p1.sig,
        ),
        b: Other::Head {
            seq: 3,
            hash: hash_of(&b, A, 3),
            digest: p2.digest,
            sig: p2.sig,
        },
    };
    let member2 = a.secret.public();
    // The evidence is real, but its base is only B's word: it freezes from the signed head's
    // commit (3), where the versions are shown to differ, not from base + 1.
    assert_eq!(ev.verify(hq.engine.dataset, &member2), Ok(3));
    write_evidence(&mut b, "2", FORK_FIELD, ev.to_bytes(), T0 + 300);
    let last_b = head_of(&b, B);
    // D has member 2's join only; it gets B's commit with the evidence, then HQ's relay.
    applied(
        d.ingest(&b.bundle_with(&[Coverage {
            author: B,
            first: 2,
            last: last_b,
        }]))
        .unwrap(),
    );
    applied(d.ingest(&hq.bundle(&[])).unwrap());
    assert_eq!(
        d.listing().get(&key("visits/v-a2")),
        hq.listing().get(&key("visits/v-a2")),
        "member 2's honest commit 2 (before the fork) is never applied on D, which froze \
         member 2 from {:?} on the third member's evidence (the fork is at 3)",
        d.store.frozen(A).unwrap()
    );
    assert_eq!(
        d.store.frozen(A).unwrap(),
        Some(3),
        "member 2 forked at 3, but D froze it from 1 on a third member's say-so"
    );
}

// ---------------------------------------------------------------------------------------
// Finding 4: evidence whose base lies beyond the largest commit number verifies; a member
// that "freezes" itself there first can no longer be frozen at its real fork point
// (record_fork and honour_fork_record return early once a member is frozen at all).
// ---------------------------------------------------------------------------------------

#[test]
fn evidence_beyond_the_largest_commit_number_is_refused() {
    let (_hq, a, _b) = three();
    for base in [
        ferry_bundle::MAX_SEQ,
        ferry_bundle::MAX_SEQ - 1 + 1,
        u64::MAX - 1,
    ] {
        let ev = self_evidence(&a, base);
        assert!(
            ev.verify(a.engine.dataset, &a.secret.public()).is_err(),
            "evidence after commit {base} (past the largest commit number {}) verifies: the \
             freeze point {} reaches the store (SQLite keeps it as a negative i64, and \
             min(seq, excluded.seq) then replaces an earlier real fork point: the member is \
             unfrozen)",
            ferry_bundle::MAX_SEQ,
            base.wrapping_add(1)
        );
    }
}

#[test]
fn a_member_frozen_at_an_absurd_point_is_frozen_again_at_its_real_fork() {
    let (mut hq, mut a, mut b) = three();
    let ev = self_evidence(&a, 1 << 40);
    write_evidence(&mut a, "2", FORK_FIELD, ev.to_bytes(), T0 + 100); // commit 2
    let backup = a.clone();
    a.write("visits", "v-x", vec![set("w", Value::Int(31))], T0 + 110); // 3, version 1
    applied(hq.ingest(&a.bundle(&[])).unwrap());
    let mut restored = backup;
    restored.write("visits", "v-x", vec![set("w", Value::Int(32))], T0 + 120); // 3, version 2
    applied(b.ingest(&restored.bundle(&[])).unwrap());
    // HQ relays version 1 to B: B finds a fork at 3, validly signed by member 2.
    let r = applied(b.ingest(&hq.bundle(&[])).unwrap());
    assert_eq!(r.forks, vec![(A, 3)]);
    assert_eq!(
        b.store.frozen(A).unwrap(),
        Some(3),
        "the real fork at 3 was found, but record_fork returned early (already frozen at \
         2^40 + 1): member 2's commits up to 2^40 keep being applied and no evidence travels"
    );
}

// ---------------------------------------------------------------------------------------
// Finding 5: stash quota counts commit bytes only; empty commits are stashed for free.
// ---------------------------------------------------------------------------------------

#[test]
fn empty_commits_count_against_the_stash_quota() {
    let (mut hq, _a, b) = three();
    let n: u64 = 300_000;
    let mut total = 0;
    for (i, author) in [MemberId(77), MemberId(78)].into_iter().enumerate() {
        let mut items = vec![
            Item::Receipt(b.store.stored().unwrap()),
            Item::Run {
                author,
                first: 2,
                count: n,
                proof: RunProof::Head(Signature([1; 64])),
            },
        ];
        items.extend((0..n).map(|_| Item::Commit(Vec::new())));
        let bundle = signed_by(&b, 20 + i as u8, &items);
        let r = applied(hq.ingest(&bundle).unwrap());
        total += r.stashed;
    }
    let rows: u64 = hq.store.stashed().unwrap().iter().map(|(_, n)| n).sum();
    assert_eq!(total, rows);
    assert_eq!(hq.store.stash_bytes(Some(B)).unwrap(), 0);
    assert!(
        rows <= 65_536,
        "{rows} stashed commits from member 3 count as 0 bytes against its 32 MiB quota (a \
         SQLite row each; one 1 MB zstd bundle inflates to ~160 million of them)"
    );
}

// ---------------------------------------------------------------------------------------
// Findings 6 and 7: memory (SPEC §8, README: "at most about 100 MB whatever it claims").
// ---------------------------------------------------------------------------------------

/// 16 000 000 empty commits in a `Branch`: postcard of the start of a `ForkEvidence`.
fn evidence_bomb() -> Vec<u8> {
    let n: u32 = 16_000_000;
    let mut v = vec![2u8, 0]; // author 2, base 0
    v.extend([0u8; 32]); // base_hash
    let mut x = n;
    while x >= 0x80 {
        v.push((x as u8) | 0x80);
        x >>= 7;
    }
    v.push(x as u8);
    v.resize(v.len() + n as usize, 0); // n commits of length 0
    v
}

#[test]
fn fork_evidence_with_millions_of_commits_is_refused_before_it_is_decoded() {
    let (mut hq, _a, mut b) = three();
    let bomb = evidence_bomb();
    // Refused by its size and its commit count, before a single commit is allocated.
    assert!(ForkEvidence::from_bytes(&bomb).is_none());
    // The same bytes written into `_forks` by a member: stored as junk, nothing frozen.
    write_evidence(&mut b, "x", "junk", bomb.clone(), T0 + 200);
    write_evidence(&mut b, "2", FORK_FIELD, bomb, T0 + 210);
    let head = head_of(&b, B);
    let attack = b.bundle_with(&[Coverage {
        author: B,
        first: 2,
        last: head,
    }]);
    applied(hq.ingest(&attack).unwrap());
    assert_eq!(hq.store.frozen(A).unwrap(), None);
    // A count within the byte limit but over the commit limit is refused by the count.
    let mut many = vec![2u8, 0];
    many.extend([0u8; 32]);
    let n = ferry_sync::fork::MAX_EVIDENCE_COMMITS as u32 + 1;
    let mut x = n;
    while x >= 0x80 {
        many.push((x as u8) | 0x80);
        x >>= 7;
    }
    many.push(x as u8);
    many.resize(many.len() + n as usize, 0);
    assert!(ForkEvidence::from_bytes(&many).is_none());
}

/// A `RecordState` of one field with ~2.8 million 6-byte siblings.
fn record_bomb(author: MemberId) -> Vec<u8> {
    let mut v = vec![1u8, 1, b'f']; // one field, named "f"
    let n: u32 = ((16 * MB - 64) / 6) as u32;
    let mut x = n;
    while x >= 0x80 {
        v.push((x as u8) | 0x80);
        x >>= 7;
    }
    v.push(x as u8);
    for _ in 0..n {
        // stamp (author, seq 1, hlc 0, rank 0), entry Elem("")
        v.extend([author.0 as u8, 1, 0, 0, 2, 0]);
    }
    v.extend([0, 0]); // no tombstones, no firsts
    v
}

#[test]
fn a_snapshot_record_with_millions_of_siblings_is_refused_at_a_named_limit() {
    let (mut hq, mut a, _b) = three();
    let h0 = head_of(&a, ADMIN);
    hq.write("visits", "v-1", vec![set("x", Value::Int(1))], T0 + 100);
    let c1 = hq.store.commit(ADMIN, h0 + 1).unwrap().unwrap();
    let names = hq.store.chain(ADMIN).unwrap().unwrap().names[..c1.names as usize].to_vec();
    let mut state = a.store.applied().unwrap();
    state.set(ADMIN, h0 + 1);
    let items = vec![
        Item::Receipt(hq.store.stored().unwrap()),
        Item::Snapshot {
            state,
            compacted: [(ADMIN, h0 + 1)].into_iter().collect(),
        },
        Item::SnapshotChain {
            author: ADMIN,
            seq: h0 + 1,
            hash: c1.hash,
            hlc: c1.hlc,
            deps: c1.deps.clone(),
            names,
            first: hq.store.commit(ADMIN, 1).unwrap().unwrap().bytes,
        },
        Item::SnapshotRecord {
            collection: "visits".into(),
            id: "r".into(),
            state: record_bomb(ADMIN),
        },
    ];
    let bundle = signed_by(&hq, 9, &items);
    let before = a.store.records.clone();
    match a.ingest(&bundle) {
        Err(IngestError::Bundle(ferry_bundle::BundleError::Limit(why))) => {
            assert!(why.contains("262144"), "{why}");
        }
        other => panic!("expected a limit failure, got {other:?}"),
    }
    assert_eq!(a.store.records, before, "nothing of it was kept");
}

// ---------------------------------------------------------------------------------------
// Finding 8: an admin snapshot installs another author's name table unchecked (length,
// emptiness, duplicates — and it is not covered by any hash); that author's later honest
// commits are decoded against it, each op cloning its name.
// ---------------------------------------------------------------------------------------

#[test]
fn a_snapshot_name_table_breaking_the_name_rules_is_refused() {
    let (mut hq, mut a, mut b) = three();
    // Member 2's commit 2 introduces its names: "visits", f0..f9.
    let fields: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    let ops = |v: i64| {
        fields
            .iter()
            .map(|f| set(f, Value::Int(v)))
            .collect::<Vec<_>>()
    };
    a.write("visits", "v-0", ops(0), T0 + 100);
    applied(hq.ingest(&a.bundle(&[])).unwrap());
    let c2 = hq.store.commit(A, 2).unwrap().unwrap();
    assert_eq!(c2.names, 11);
    // The admin's snapshot for B: member 2 at commit 2 (its real hash), but each field name
    // 512 KiB long (the item limit allows 16 MiB of names).
    let mut names = vec!["visits".to_string()];
    names.extend((0..10).map(|i| format!("f{i}").repeat(512 * 1024 / 2)));
    let mut state = b.store.applied().unwrap();
    state.set(A, 2);
    let hq_items = vec![
        Item::Receipt(hq.store.stored().unwrap()),
        Item::Snapshot {
            state,
            compacted: [(A, 2)].into_iter().collect(),
        },
        Item::SnapshotChain {
            author: A,
            seq: 2,
            hash: c2.hash,
            hlc: c2.hlc,
            deps: c2.deps.clone(),
            names,
            first: hq.store.commit(A, 1).unwrap().unwrap().bytes,
        },
    ];
    let snap = signed_by(&hq, 11, &hq_items);
    let before = b.store.records.clone();
    assert!(
        matches!(b.ingest(&snap), Err(IngestError::BadSnapshot(_))),
        "names of 512 KiB (the limit is 256 bytes) are refused"
    );
    assert_eq!(b.store.records, before);
    // Member 2's honest bulk load still applies normally on B.
    let changes = (1..=300)
        .map(|i| Change::Record {
            collection: "visits".into(),
            id: format!("v-{i}"),
            ops: ops(i),
        })
        .collect();
    a.engine
        .commit_local(&mut a.store, changes, T0 + 200)
        .unwrap();
    applied(b.ingest(&a.bundle(&[])).unwrap());
    assert!(b.listing().contains_key(&key("visits/v-300")));
}

// ---------------------------------------------------------------------------------------
// Finding 9: the frozen set travels only as the `_forks/N` record, which any member may
// delete; a member that joins later through a snapshot then never freezes the forked member
// and applies what it sends.
// ---------------------------------------------------------------------------------------

/// Member 2 forks at 3; B finds it and writes `_forks/2`; HQ and C freeze member 2 too.
/// Then (if `delete`) C deletes `_forks/2`; HQ compacts and member 5 joins by snapshot.
/// Returns member 5 and member 2's original laptop.
fn fork_then_late_joiner(delete: bool) -> (SimNode, SimNode) {
    let (mut hq, mut v) = group(3);
    let mut c = v.pop().unwrap(); // member 4, the rogue
    let mut b = v.pop().unwrap(); // member 3
    let mut a = v.pop().unwrap(); // member 2, forks
    a.write("visits", "v-a2", vec![set("w", Value::Int(2))], T0 + 100);
    let backup = a.clone();
    a.write("visits", "v-x", vec![set("w", Value::Int(31))], T0 + 110);
    applied(hq.ingest(&a.bundle(&[])).unwrap());
    let mut restored = backup;
    restored.write("visits", "v-x", vec![set("w", Value::Int(32))], T0 + 120);
    applied(b.ingest(&restored.bundle(&[])).unwrap());
    applied(b.ingest(&hq.bundle(&[])).unwrap()); // B finds the fork, writes _forks/2
    assert_eq!(b.store.frozen(A).unwrap(), Some(3));
    applied(hq.ingest(&b.bundle(&[])).unwrap());
    assert_eq!(hq.store.frozen(A).unwrap(), Some(3));
    applied(c.ingest(&hq.bundle(&[])).unwrap());
    assert_eq!(c.store.frozen(A).unwrap(), Some(3));
    // The rogue deletes the evidence record (having seen it, its delete removes it).
    let op = if delete {
        Op::Delete
    } else {
        set("note", Value::Str("seen".into()))
    };
    c.engine
        .commit_local(
            &mut c.store,
            vec![Change::Record {
                collection: FORKS.into(),
                id: "2".into(),
                ops: vec![op],
            }],
            T0 + 400,
        )
        .unwrap();
    applied(hq.ingest(&c.bundle(&[])).unwrap());
    applied(b.ingest(&hq.bundle(&[])).unwrap());
    applied(hq.ingest(&b.bundle(&[])).unwrap());
    // HQ compacts what everybody holds, then invites member 5, who gets a snapshot.
    assert!(hq.compact() > 0);
    let inv = hq.invite(MemberId(5), "late", T0 + 500);
    let mut late = SimNode::join(&inv, 5, T0 + 510);
    applied(
        hq.ingest(&late.bundle_with(&[Coverage {
            author: MemberId(5),
            first: 1,
            last: 1,
        }]))
        .unwrap(),
    );
    let snap = hq.snapshot_if_needed().expect("member 5 needs a snapshot");
    assert!(applied(late.ingest(&snap).unwrap()).snapshot);
    // Member 2's original laptop writes on after its fork point and sends to member 5.
    a.write(
        "visits",
        "after-the-fork",
        vec![set("w", Value::Int(99))],
        T0 + 600,
    );
    (late, a)
}

#[test]
fn a_forks_record_in_a_snapshot_freezes_the_late_joiner() {
    let (mut late, mut a) = fork_then_late_joiner(false);
    assert_eq!(late.store.frozen(A).unwrap(), Some(3));
    let to_late = a.bundle_for(&[MemberId(5)], &[]);
    assert!(matches!(
        late.ingest(&to_late),
        Err(ferry_sync::IngestError::Frozen { .. })
    ));
}

#[test]
fn deleting_a_forks_record_does_not_unfreeze_the_member_for_snapshot_joiners() {
    let (mut late, mut a) = fork_then_late_joiner(true);
    let to_late = a.bundle_for(&[MemberId(5)], &[]);
    let r = late.ingest(&to_late);
    assert!(
        matches!(r, Err(ferry_sync::IngestError::Frozen { .. })),
        "member 5 (joined by snapshot) accepted member 2's bundle after its fork point \
         ({:?}; frozen(2) = {:?}, shows after-the-fork: {}): member 4 deleted _forks/2, the \
         only trace of the freeze a snapshot carries",
        r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        late.store.frozen(A).unwrap(),
        late.listing().contains_key(&key("visits/after-the-fork"))
    );
}

/// A malicious member crafts a commit that writes, deletes and writes one counter again in
/// one commit, then deletes again, and deletes many times more: the admin's snapshot (format
/// version 3, carrying what the deletes removed) must stay canonical and bounded, so a laptop
/// invited later still installs it and shows what the others show.
#[test]
fn crafted_deletes_cannot_make_the_admins_snapshot_unreadable() {
    let (mut hq, mut a, mut b) = three();
    hq.write("visits", "v1", vec![set("w", Value::Int(1))], T0 + 50);
    applied(a.ingest(&hq.bundle(&[])).unwrap());
    let crafted = vec![
        Op::Incr("n".into(), 1),
        Op::Delete,
        Op::Incr("n".into(), 2),
        Op::Delete,
    ];
    a.engine
        .commit_local(
            &mut a.store,
            vec![Change::Record {
                collection: "visits".into(),
                id: "v1".into(),
                ops: crafted,
            }],
            T0 + 100,
        )
        .unwrap();
    for k in 0..300 {
        a.engine
            .commit_local(
                &mut a.store,
                vec![Change::Record {
                    collection: "visits".into(),
                    id: "v1".into(),
                    ops: vec![Op::Delete],
                }],
                T0 + 200 + k,
            )
            .unwrap();
    }
    applied(hq.ingest(&a.bundle(&[])).unwrap());
    let rec = hq.store.records[&key("visits/v1")].clone();
    assert!(!rec.is_live());
    assert!(
        ferry_model::record::Ghost::canonical(&rec.ghosts),
        "{rec:?}"
    );
    assert!(
        rec.ghosts.iter().all(|g| g.under.len() <= 4),
        "a ghost's deletes stay bounded: {rec:?}"
    );
    // Everybody holds everything, so HQ compacts it all away.
    applied(b.ingest(&hq.bundle(&[])).unwrap());
    applied(hq.ingest(&b.bundle(&[])).unwrap());
    applied(a.ingest(&hq.bundle(&[])).unwrap());
    applied(hq.ingest(&a.bundle(&[])).unwrap());
    assert!(hq.compact() > 0);
    let inv = hq.invite(MemberId(4), "late", T0 + 900);
    let mut late = SimNode::join(&inv, 4, T0 + 910);
    applied(
        hq.ingest(&late.bundle_with(&[Coverage {
            author: MemberId(4),
            first: 1,
            last: 1,
        }]))
        .unwrap(),
    );
    let snap = hq.snapshot_if_needed().expect("member 4 needs a snapshot");
    assert_eq!(snap[1], ferry_bundle::VERSION_GHOSTS, "it carries ghosts");
    assert!(applied(late.ingest(&snap).unwrap()).snapshot);
    assert_eq!(late.store.records[&key("visits/v1")], rec);
}

/// Issue 13: only the admin cancels invitations. A member that writes a cancellation into
/// its own `_members` record (the one record of `_members` it may write) or into another
/// member's (which it may not write) cancels nobody: both members' changes still count
/// everywhere. The admin's cancellation does count: from then on, nothing the cancelled
/// member sends is accepted and nothing it wrote is applied.
#[test]
fn only_the_admins_cancellation_of_an_invitation_counts() {
    let (mut hq, mut a, mut b) = three();
    for (target, who) in [(A, "own"), (B, "other")] {
        a.write(
            ferry_sync::MEMBERS,
            &target.0.to_string(),
            vec![set(
                ferry_sync::MEMBER_CANCELLED_FIELD,
                Value::Str(format!("{who} record")),
            )],
            T0 + 2_000,
        );
    }
    b.write("visits", "b1", vec![set("age", Value::Int(7))], T0 + 2_100);
    let from_a = a.bundle(&[]);
    let from_b = b.bundle(&[]);
    for node in [&mut hq, &mut b] {
        applied(node.ingest(&from_a).unwrap());
    }
    applied(hq.ingest(&from_b).unwrap());
    applied(a.ingest(&from_b).unwrap());
    for node in [&hq, &a, &b] {
        for m in [A, B] {
            let rec = node
                .store
                .records
                .get(&(ferry_sync::MEMBERS.to_string(), m.0.to_string()));
            assert_eq!(
                ferry_sync::cancellation(rec),
                None,
                "member {m} at {}",
                node.me()
            );
            assert_eq!(node.store.frozen(m).unwrap(), None);
        }
    }
    assert!(a.listing().contains_key(&key("visits/b1")));

    // The admin cancels B: A, which has it, refuses B's next bundle and applies nothing
    // more of B.
    hq.write(
        ferry_sync::MEMBERS,
        &B.0.to_string(),
        vec![set(
            ferry_sync::MEMBER_CANCELLED_FIELD,
            Value::Str("the laptop was stolen".into()),
        )],
        T0 + 3_000,
    );
    applied(a.ingest(&hq.bundle(&[])).unwrap());
    assert_eq!(a.store.frozen(B).unwrap(), Some(1));
    b.write("visits", "b2", vec![set("age", Value::Int(8))], T0 + 3_100);
    let err = a.ingest(&b.bundle(&[])).unwrap_err();
    assert!(
        matches!(&err, IngestError::Cancelled { member, reason, .. } if *member == B && reason == "the laptop was stolen"),
        "{err}"
    );
    assert!(!a.listing().contains_key(&key("visits/b2")));
    // What A applied before it learned stays (nothing applied is retracted).
    assert!(a.listing().contains_key(&key("visits/b1")));
}
