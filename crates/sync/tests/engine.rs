//! The sync engine end to end, in memory: three laptops, bundles in any order, twice, via a
//! third laptop, damaged or forged.

use ferry_bundle::{BundleReader, DatasetKey, Item, RunProof};
use ferry_model::crypto::SecretKey;
use ferry_model::{Change, MemberId, Op, Value};
use ferry_sync::plan::Coverage;
use ferry_sync::sim::{SimNode, SplitMix, applied};
use ferry_sync::{IngestError, Invitation, Missing, Received, Storage};

const T0: u64 = 1_763_000_000_000;

fn set(f: &str, v: Value) -> Op {
    Op::Set(f.into(), v)
}

/// HQ plus two clinics that have exchanged their joins, so every node knows every member.
fn three() -> (SimNode, SimNode, SimNode) {
    let mut hq = SimNode::create("clinics", "hq", 1, T0);
    let inv_a = hq.invite(MemberId(2), "clinic-a", T0 + 1);
    let inv_b = hq.invite(MemberId(3), "clinic-b", T0 + 2);
    let mut a = SimNode::join(&inv_a, 2, T0 + 10);
    let mut b = SimNode::join(&inv_b, 3, T0 + 20);
    // Each clinic's first bundle (its join) reaches HQ; HQ's reaches both clinics.
    let from_a = a.bundle_with(&[Coverage {
        author: MemberId(2),
        first: 1,
        last: 1,
    }]);
    let from_b = b.bundle_with(&[Coverage {
        author: MemberId(3),
        first: 1,
        last: 1,
    }]);
    hq.ingest(&from_a).unwrap();
    hq.ingest(&from_b).unwrap();
    let from_hq = hq.bundle(&[]);
    a.ingest(&from_hq).unwrap();
    b.ingest(&from_hq).unwrap();
    (hq, a, b)
}

#[test]
fn three_laptops_converge_whatever_the_order_duplicates_and_relays() {
    let (mut hq, mut a, mut b) = three();
    assert_eq!(a.known_peers(), vec![MemberId(1), MemberId(3)]);
    hq.write(
        "visits",
        "v-1",
        vec![set("village", Value::Str("Kisumu".into()))],
        T0 + 100,
    );
    a.write(
        "visits",
        "v-2",
        vec![set("weight_kg", Value::Float(61.5))],
        T0 + 110,
    );
    b.write(
        "visits",
        "v-3",
        vec![set("temp_c", Value::Float(37.8))],
        T0 + 120,
    );
    // A concurrent edit: both clinics correct HQ's record without seeing each other.
    let hq1 = hq.bundle(&[]);
    a.ingest(&hq1).unwrap();
    b.ingest(&hq1).unwrap();
    a.write(
        "visits",
        "v-1",
        vec![set("village", Value::Str("Kisumu Ndogo".into()))],
        T0 + 200,
    );
    b.write(
        "visits",
        "v-1",
        vec![set("village", Value::Str("Kisumu Ndogo B".into()))],
        T0 + 201,
    );

    let bundles = [hq.bundle(&[]), a.bundle(&[]), b.bundle(&[])];
    // B's bundle reaches HQ only through A (A relays B's commits without re-signing).
    a.ingest(&bundles[2]).unwrap();
    let relay = a.bundle(&[]);
    let mut rng = SplitMix(7);
    let mut deliveries: Vec<(usize, Vec<u8>)> = vec![
        (0, relay.clone()),
        (0, bundles[1].clone()),
        (1, bundles[0].clone()),
        (2, bundles[0].clone()),
        (2, bundles[1].clone()),
        (0, relay.clone()), // late duplicate
        (2, relay),
    ];
    // Shuffle.
    for i in (1..deliveries.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        deliveries.swap(i, j);
    }
    let mut nodes = [hq, a, b];
    for (to, bytes) in &deliveries {
        nodes[*to].ingest(bytes).unwrap();
    }
    let [hq, a, b] = nodes;
    assert_eq!(hq.listing(), a.listing());
    assert_eq!(a.listing(), b.listing());
    assert_eq!(hq.listing().len(), 3);
    for n in [&hq, &a, &b] {
        assert_eq!(
            n.conflicts(),
            vec![("visits".into(), "v-1".into(), "village".into())],
            "{} sees the concurrent edit",
            n.label
        );
    }
    // B's later clock wins on every node; both values are kept.
    let shown = &hq.listing()[&("visits".to_string(), "v-1".to_string())]["village"];
    assert_eq!(shown, &Value::Str("Kisumu Ndogo B".into()));
}

#[test]
fn the_same_bundle_twice_is_counted_as_duplicates_and_changes_nothing() {
    let (mut hq, mut a, _) = three();
    hq.write(
        "visits",
        "v-1",
        vec![set("age_years", Value::Int(34))],
        T0 + 100,
    );
    let bundle = hq.bundle(&[]);
    let first = applied(a.ingest(&bundle).unwrap());
    let listing = a.listing();
    let again = applied(a.ingest(&bundle).unwrap());
    assert_eq!(first.new, 1);
    assert_eq!(
        (again.new, again.duplicates),
        (0, first.new + first.duplicates)
    );
    assert_eq!(a.listing(), listing);
}

#[test]
fn a_commit_whose_dependencies_are_missing_waits_then_applies() {
    let (mut hq, mut a, mut b) = three();
    hq.write("visits", "v-1", vec![set("n", Value::Int(1))], T0 + 100);
    let hq_bundle = hq.bundle(&[]);
    a.ingest(&hq_bundle).unwrap();
    // A edits HQ's record: A's commit depends on HQ's.
    a.write("visits", "v-1", vec![set("n", Value::Int(2))], T0 + 200);
    let only_a = a.bundle_with(&[Coverage {
        author: MemberId(2),
        first: 2,
        last: 2,
    }]);
    let report = applied(b.ingest(&only_a).unwrap());
    assert_eq!(
        (report.new, report.applied),
        (1, 0),
        "pending on HQ's commit"
    );
    assert!(b.listing().is_empty());
    b.ingest(&hq_bundle).unwrap();
    let rec = &b.listing()[&("visits".to_string(), "v-1".to_string())];
    assert_eq!(rec["n"], Value::Int(2));
    assert!(b.conflicts().is_empty(), "A's edit saw HQ's: no conflict");
}

#[test]
fn a_bundle_from_a_member_whose_join_has_not_arrived_waits_unused_until_it_does() {
    let mut hq = SimNode::create("clinics", "hq", 1, T0);
    let inv = hq.invite(MemberId(2), "clinic-a", T0 + 1);
    let mut a = SimNode::join(&inv, 2, T0 + 10);
    a.write("visits", "v-9", vec![set("x", Value::Int(9))], T0 + 20);
    // A bundle with only A's second commit: HQ has never seen A.
    let late = a.bundle_with(&[Coverage {
        author: MemberId(2),
        first: 2,
        last: 2,
    }]);
    // Its signature cannot be checked: nothing of it is kept, not even stashed.
    let before = hq.store.clone();
    assert_eq!(
        hq.ingest(&late).unwrap(),
        Received::NotYet {
            sender: MemberId(2),
            missing: Missing::Membership(MemberId(2))
        }
    );
    assert!(hq.listing().is_empty());
    assert!(hq.store.stashed().unwrap().is_empty());
    assert_eq!(hq.store.stored().unwrap(), before.stored().unwrap());
    assert_eq!(hq.waiting.len(), 1, "the bytes wait to be tried again");
    // A's whole history (its join and the commit) arrives by another way.
    let join = a.bundle_with(&[Coverage {
        author: MemberId(2),
        first: 1,
        last: 2,
    }]);
    hq.ingest(&join).unwrap();
    assert_eq!(
        hq.listing().len(),
        1,
        "the waiting bundle applied after the join"
    );
    assert!(hq.store.stashed().unwrap().is_empty());
    assert!(hq.waiting.is_empty());
}

#[test]
fn bundles_of_another_dataset_or_non_members_are_refused_without_changes() {
    let (mut hq, mut a, _) = three();
    let other = SimNode::create("other", "x", 99, T0).bundle_with(&[]);
    let before = a.listing();
    assert!(matches!(
        a.ingest(&other),
        Err(IngestError::WrongDataset { .. })
    ));

    // Someone who has the dataset key (say, found on a lost laptop) but no admin-signed
    // invitation makes up its own.
    let fake_admin = SecretKey::from_bytes([42; 32]);
    let forged = Invitation::issue(
        &fake_admin,
        "fake",
        hq.engine.dataset,
        "clinics",
        hq.key.current().1.0,
        MemberId(7),
        "intruder",
        [43; 32],
    );
    let mut intruder = SimNode::join(&forged, 44, T0);
    intruder.engine.admin_key = hq.engine.admin_key;
    intruder.write("visits", "v-1", vec![set("x", Value::Int(666))], T0 + 1);
    let bundle = intruder.bundle_with(&[Coverage {
        author: MemberId(7),
        first: 1,
        last: 2,
    }]);
    assert!(matches!(
        a.ingest(&bundle),
        Err(IngestError::NotMember {
            member: MemberId(7),
            ..
        })
    ));
    assert_eq!(a.listing(), before);

    // A second device using clinic A's member number with its own key.
    let mut impostor = a.clone();
    impostor.secret = SecretKey::from_bytes([45; 32]);
    impostor.write("visits", "v-1", vec![set("x", Value::Int(1))], T0 + 500);
    let forged = impostor.bundle(&[]);
    assert!(matches!(
        hq.ingest(&forged),
        Err(IngestError::BadSignature {
            member: MemberId(2)
        })
    ));
}

#[test]
fn a_relayed_run_with_a_forged_proof_is_left_out_and_the_rest_applies() {
    let (mut hq, mut a, mut b) = three();
    a.write("visits", "v-1", vec![set("x", Value::Int(1))], T0 + 100);
    hq.ingest(&a.bundle(&[])).unwrap();
    // HQ relays A's commit to B, but tampers with the forwarded proof.
    let honest = hq.bundle_with(&[Coverage {
        author: MemberId(2),
        first: 2,
        last: 2,
    }]);
    let mut reader = BundleReader::open(&honest[..])
        .unwrap()
        .decrypt(hq.key.current().1)
        .unwrap();
    let mut items = Vec::new();
    while let Some(item) = reader.next_item().unwrap() {
        items.push(item);
    }
    let run_proof = items.iter().find_map(|i| match i {
        Item::Run { proof, .. } => Some(proof.clone()),
        _ => None,
    });
    assert!(matches!(run_proof, Some(RunProof::Bundle { .. })));
    // Rewrite the bundle with a bit flipped in the forwarded signature.
    let mut tampered_items = items.clone();
    for item in &mut tampered_items {
        if let Item::Run {
            proof: RunProof::Bundle { sig, .. },
            ..
        } = item
        {
            sig.0[0] ^= 1;
        }
    }
    let header = ferry_bundle::Header::new(hq.engine.dataset, MemberId(1), [1; 16]);
    let mut w = ferry_bundle::BundleWriter::new(
        Vec::new(),
        &header,
        hq.key.current().1,
        ferry_bundle::WriteOptions::default(),
    )
    .unwrap();
    for item in &tampered_items {
        w.push(item).unwrap();
    }
    let hash = hq
        .store
        .commit_hash(MemberId(1), hq.store.stored().unwrap().get(MemberId(1)))
        .unwrap()
        .unwrap();
    let head = hq.store.stored().unwrap().get(MemberId(1));
    let (tampered, _) = w
        .finish(|d| {
            hq.secret.sign(&ferry_model::crypto::head_message(
                hq.engine.dataset,
                MemberId(1),
                head,
                &hash,
                Some(d),
            ))
        })
        .unwrap();
    // HQ's own signature is good, A's forwarded one is not: A's commit is left out (a relay
    // cannot vouch for another member's commits), and nothing of it is stored.
    let before = b.store.stored().unwrap().get(MemberId(2));
    let r = applied(b.ingest(&tampered).unwrap());
    assert_eq!(r.skipped_runs.len(), 1, "{r:?}");
    assert_eq!(r.skipped_runs[0].0.author, MemberId(2));
    assert_eq!(b.store.stored().unwrap().get(MemberId(2)), before);
    assert!(
        !b.listing()
            .contains_key(&("visits".to_string(), "v-1".to_string()))
    );
    // The honest relay of the same commit applies.
    applied(b.ingest(&honest).unwrap());
    assert!(
        b.listing()
            .contains_key(&("visits".to_string(), "v-1".to_string()))
    );
}

#[test]
fn a_bundle_under_the_wrong_key_or_damaged_is_refused() {
    let (mut hq, mut a, _) = three();
    hq.write("visits", "v-1", vec![set("x", Value::Int(1))], T0 + 100);
    let bundle = hq.bundle(&[]);
    let mut damaged = bundle.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x01;
    assert!(matches!(a.ingest(&damaged), Err(IngestError::Bundle(_))));
    assert!(matches!(
        a.ingest(&bundle[..bundle.len() - 3]),
        Err(IngestError::Bundle(_))
    ));
    let mut wrong = a.clone();
    wrong.key = ferry_bundle::Keyring::new(DatasetKey([0; 32]));
    assert!(matches!(wrong.ingest(&bundle), Err(IngestError::Bundle(_))));
    assert!(a.ingest(&bundle).is_ok());
}

#[test]
fn a_device_restored_from_an_old_backup_that_writes_again_is_detected_as_a_fork() {
    let (mut hq, mut a, _) = three();
    let backup = a.clone();
    a.write("visits", "v-1", vec![set("x", Value::Int(1))], T0 + 100);
    hq.ingest(&a.bundle(&[])).unwrap();
    let mut restored = backup;
    restored.write("visits", "v-1", vec![set("x", Value::Int(2))], T0 + 200);
    let err = hq.ingest(&restored.bundle(&[])).unwrap_err();
    assert!(
        matches!(
            &err,
            IngestError::Fork {
                author: MemberId(2),
                seq: 2,
                evidence: Some(_),
            }
        ),
        "{err}"
    );
    // HQ recorded the evidence: A is frozen, and nothing more of it is accepted.
    assert_eq!(hq.store.frozen(MemberId(2)).unwrap(), Some(2));
    a.write("visits", "v-2", vec![set("x", Value::Int(3))], T0 + 300);
    assert!(matches!(
        hq.ingest(&a.bundle(&[])),
        Err(IngestError::Frozen {
            member: MemberId(2),
            seq: 2
        })
    ));
}

#[test]
fn local_commits_refuse_nothing_and_members_may_not_write_others_metadata() {
    let (mut hq, mut a, _) = three();
    // Clinic A tries to relabel clinic B and set a dataset rule: skipped everywhere.
    a.engine
        .commit_local(
            &mut a.store,
            vec![
                Change::Record {
                    collection: "_members".into(),
                    id: "3".into(),
                    ops: vec![set("label", Value::Str("mine".into()))],
                },
                Change::Record {
                    collection: "_members".into(),
                    id: "2".into(),
                    ops: vec![set("email", Value::Str("a@example.test".into()))],
                },
            ],
            T0 + 100,
        )
        .unwrap();
    hq.ingest(&a.bundle(&[])).unwrap();
    let label = hq.store.records[&("_members".to_string(), "3".to_string())]
        .winner("label")
        .cloned();
    assert_eq!(label, Some(Value::Str("clinic-b".into())));
    let email = hq.store.records[&("_members".to_string(), "2".to_string())]
        .winner("email")
        .cloned();
    assert_eq!(email, Some(Value::Str("a@example.test".into())));
}

// Regression tests for problems found in review (named after the problem they pin).

#[test]
fn a_commit_stamped_at_the_end_of_time_does_not_stop_other_nodes_from_writing() {
    let (mut hq, mut a, _) = three();
    // A's wall clock is absurd: its commit carries the largest time there is.
    a.write("visits", "v-1", vec![set("x", Value::Int(1))], u64::MAX);
    hq.now_ms = T0 + 1_000;
    hq.ingest(&a.bundle(&[])).unwrap();
    let clock = hq.store.clock().unwrap();
    assert!(
        clock.ms() <= T0 + 1_000 + ferry_model::clock::MAX_DRIFT_MS,
        "{clock}"
    );
    for i in 0..100 {
        hq.write("visits", "v-2", vec![set("n", Value::Int(i))], T0 + 2_000);
    }
    assert_eq!(
        hq.listing()[&("visits".to_string(), "v-2".to_string())]["n"],
        Value::Int(99)
    );
}

#[test]
fn gossip_and_absurd_receipts_cannot_stop_exports_to_honest_peers() {
    let (mut hq, a, b) = three();
    hq.write("visits", "v-1", vec![set("x", Value::Int(1))], T0 + 100);
    // A claims (in its receipt and as gossip about B) to hold more than exists.
    let absurd: ferry_model::VersionVector = [
        (MemberId(1), ferry_bundle::MAX_SEQ),
        (MemberId(2), 1),
        (MemberId(3), ferry_bundle::MAX_SEQ),
    ]
    .into_iter()
    .collect();
    let header = ferry_bundle::Header::new(a.engine.dataset, MemberId(2), [3; 16]);
    let mut w = ferry_bundle::BundleWriter::new(
        Vec::new(),
        &header,
        a.key.current().1,
        ferry_bundle::WriteOptions::default(),
    )
    .unwrap();
    let mut receipt = absurd.clone();
    receipt.set(MemberId(2), a.store.stored().unwrap().get(MemberId(2)));
    w.push(&Item::Receipt(receipt.clone())).unwrap();
    w.push(&Item::PeerReceipt(MemberId(3), absurd)).unwrap();
    let head = receipt.get(MemberId(2));
    let hash = a.store.commit_hash(MemberId(2), head).unwrap().unwrap();
    let (bytes, _) = w
        .finish(|d| {
            a.secret.sign(&ferry_model::crypto::head_message(
                a.engine.dataset,
                MemberId(2),
                head,
                &hash,
                Some(d),
            ))
        })
        .unwrap();
    hq.ingest(&bytes).unwrap();
    // HQ still sends B what B lacks, and does not panic planning for A.
    let out = hq.bundle(&[]);
    let mut b = b;
    let r = applied(b.ingest(&out).unwrap());
    assert!(r.new > 0, "B still receives HQ's commits");
    assert!(
        b.listing()
            .contains_key(&("visits".to_string(), "v-1".to_string()))
    );
}

#[test]
fn a_bogus_stashed_copy_cannot_hide_the_genuine_commits() {
    let (mut hq, mut a, _) = three();
    let have = a.store.stored().unwrap().get(MemberId(1));
    // HQ writes twice and exports, then four more times and exports again (the second
    // bundle carries only what the first does not: both end up on the same stick).
    let write = |hq: &mut SimNode, i: i64| {
        hq.write(
            "visits",
            &format!("v-{i}"),
            vec![set("n", Value::Int(i))],
            T0 + 100 + i as u64,
        )
    };
    for i in 0..2 {
        write(&mut hq, i);
    }
    let earlier = hq.bundle_with(&[Coverage {
        author: MemberId(1),
        first: have + 1,
        last: have + 2,
    }]);
    for i in 2..6 {
        write(&mut hq, i);
    }
    let head = hq.store.stored().unwrap().get(MemberId(1));
    assert!(head >= have + 4);
    // Someone with the dataset key makes a bundle claiming HQ's later commits, with garbage.
    let header = ferry_bundle::Header::new(hq.engine.dataset, MemberId(9), [4; 16]);
    let mut w = ferry_bundle::BundleWriter::new(
        Vec::new(),
        &header,
        hq.key.current().1,
        ferry_bundle::WriteOptions::default(),
    )
    .unwrap();
    w.push(&Item::Receipt(Default::default())).unwrap();
    w.push(&Item::Run {
        author: MemberId(1),
        first: have + 3,
        count: 1,
        proof: RunProof::Head(ferry_model::crypto::Signature([7; 64])),
    })
    .unwrap();
    w.push(&Item::Commit(vec![1, 2, 3])).unwrap();
    let (bogus, _) = w
        .finish(|_| ferry_model::crypto::Signature([0; 64]))
        .unwrap();
    // Member 9 is unknown: the bundle cannot be checked, so nothing of it is kept.
    assert!(matches!(a.ingest(&bogus).unwrap(), Received::NotYet { .. }));
    assert!(a.store.stashed().unwrap().is_empty());
    // The genuine commits arrive later, the later part first: it waits, unused, until the
    // earlier part makes it checkable.
    let later = hq.bundle_with(&[Coverage {
        author: MemberId(1),
        first: have + 3,
        last: head,
    }]);
    assert!(matches!(
        a.ingest(&later).unwrap(),
        Received::NotYet {
            missing: Missing::Commits { .. },
            ..
        }
    ));
    a.ingest(&earlier).unwrap();
    assert_eq!(a.store.stored().unwrap().get(MemberId(1)), head);
    assert!(
        a.store.stashed().unwrap().is_empty(),
        "the bogus run is dropped"
    );
    assert_eq!(a.listing().len(), 6);
}

#[test]
fn a_relayed_fork_skips_only_that_members_run() {
    let (mut hq, mut a, mut b) = three();
    let backup = a.clone();
    a.write("visits", "v-1", vec![set("x", Value::Int(1))], T0 + 100);
    hq.ingest(&a.bundle(&[])).unwrap();
    // A restored copy of A writes a different commit 2, which reaches B.
    let mut restored = backup;
    restored.write("visits", "v-1", vec![set("x", Value::Int(2))], T0 + 200);
    b.ingest(&restored.bundle(&[])).unwrap();
    // HQ relays A's genuine commit 2 together with its own new work.
    hq.write("visits", "v-9", vec![set("y", Value::Int(9))], T0 + 300);
    let relay = hq.bundle(&[]);
    let r = applied(b.ingest(&relay).unwrap());
    assert_eq!(r.forks, vec![(MemberId(2), 2)]);
    assert!(
        b.listing()
            .contains_key(&("visits".to_string(), "v-9".to_string()))
    );
    // Both versions were signed by A: B froze A and wrote the evidence, which travels.
    assert_eq!(b.store.frozen(MemberId(2)).unwrap(), Some(2));
    assert!(
        b.store
            .records
            .contains_key(&("_forks".to_string(), "2".to_string()))
    );
    hq.ingest(&b.bundle(&[])).unwrap();
    assert_eq!(
        hq.store.frozen(MemberId(2)).unwrap(),
        Some(2),
        "HQ checked the evidence B sent and froze A too"
    );
}

#[test]
fn a_laptop_whose_date_is_two_years_ahead_is_accepted_but_does_not_win_every_later_conflict() {
    const DAY: u64 = 86_400_000;
    let (mut hq, mut a, mut b) = three();
    hq.write("visits", "v-1", vec![set("w", Value::Int(1))], T0 + 100);
    let from_hq = hq.bundle(&[]);
    a.ingest(&from_hq).unwrap();
    b.ingest(&from_hq).unwrap();
    // Clinic A's date is two years ahead: its write is accepted everywhere.
    let skewed = T0 + 2 * 365 * DAY;
    a.write("visits", "v-1", vec![set("w", Value::Int(2))], skewed);
    // Clinic B, honest, edits the same field 40 days later without having seen A's edit.
    b.write(
        "visits",
        "v-1",
        vec![set("w", Value::Int(3))],
        T0 + 40 * DAY,
    );
    let (from_a, from_b) = (a.bundle(&[]), b.bundle(&[]));
    for n in [&mut hq, &mut a, &mut b] {
        n.now_ms = T0 + 41 * DAY;
        n.ingest(&from_a).unwrap();
        n.ingest(&from_b).unwrap();
        assert_eq!(
            n.listing()[&("visits".to_string(), "v-1".to_string())]["w"],
            Value::Int(3),
            "{}: the honest later edit is shown",
            n.label
        );
        assert_eq!(n.conflicts().len(), 1, "both values are kept and listed");
    }
    // Nobody's clock was dragged two years ahead by A.
    let clock = hq.store.clock().unwrap();
    assert!(clock.ms() < T0 + 42 * DAY, "{clock}");
}

/// Issue 12, item 7: the admin records in `_members/N` the key of the device whose join it
/// accepted, and only its own record counts. A member cannot write another member's key
/// (skipped everywhere), and one that overwrites its own makes the admin record the accepted
/// key again: no member can make another laptop believe the admin took someone else.
#[test]
fn only_the_admin_records_which_device_it_accepted_as_a_member() {
    let (mut hq, mut a, mut b) = three();
    let keys = |n: &SimNode, m: &str| {
        ferry_sync::accepted_keys(
            n.store
                .records
                .get(&("_members".to_string(), m.to_string())),
        )
    };
    let (a_key, b_key) = (a.secret.public(), b.secret.public());
    // The admin recorded both joins; the members received the records.
    for n in [&hq, &a, &b] {
        assert_eq!(keys(n, "2"), vec![a_key]);
        assert_eq!(keys(n, "3"), vec![b_key]);
    }
    // Clinic A writes B's key and its own, and deletes its own record: all skipped
    // everywhere (only the admin says which device is a member).
    let fake = Value::Bytes(vec![7; 32]);
    a.engine
        .commit_local(
            &mut a.store,
            vec![
                Change::Record {
                    collection: "_members".into(),
                    id: "3".into(),
                    ops: vec![set("key", fake.clone())],
                },
                Change::Record {
                    collection: "_members".into(),
                    id: "2".into(),
                    ops: vec![set("key", fake), Op::Delete],
                },
            ],
            T0 + 100,
        )
        .unwrap();
    let from_a = a.bundle(&[]);
    hq.ingest(&from_a).unwrap();
    b.ingest(&from_a).unwrap();
    assert_eq!(keys(&hq, "3"), vec![b_key]);
    assert_eq!(keys(&b, "3"), vec![b_key], "B is not told it was refused");
    // A's own record still holds the admin's key, and its label, everywhere.
    for n in [&hq, &b] {
        assert_eq!(keys(n, "2"), vec![a_key]);
        let rec = &n.store.records[&("_members".to_string(), "2".to_string())];
        assert!(rec.winner("label").is_some(), "the label stays");
    }
    // Nothing for the admin to write again: its next bundle carries no new change.
    let before = hq.store.stored().unwrap();
    let from_hq = hq.bundle(&[]);
    a.ingest(&from_hq).unwrap();
    assert_eq!(hq.store.stored().unwrap(), before);
    assert_eq!(keys(&a, "2"), vec![a_key]);
}

/// The version byte of a bundle (SPEC §3).
fn version(bytes: &[u8]) -> u8 {
    bytes[1]
}

#[test]
fn a_removed_member_is_refused_after_its_cutoff_and_cannot_read_the_new_key_epoch() {
    let (mut hq, mut a, mut b) = three();
    b.write(
        "visits",
        "v-b1",
        vec![set("by", Value::Str("b".into()))],
        T0 + 100,
    );
    let b1 = b.bundle(&[]);
    applied(hq.ingest(&b1).unwrap());
    // b writes again; that bundle has not reached hq when hq removes b.
    b.write(
        "visits",
        "v-b2",
        vec![set("by", Value::Str("b later".into()))],
        T0 + 200,
    );
    let b2 = b.bundle(&[]);
    let cutoff = hq.remove(MemberId(3), "stolen", T0 + 300);
    assert_eq!(cutoff, 2, "b's join and its first visit");
    hq.write(
        "visits",
        "v-hq",
        vec![set("by", Value::Str("hq".into()))],
        T0 + 400,
    );
    let h = hq.bundle(&[]);
    assert_eq!(version(&h), ferry_bundle::VERSION_EPOCHS);

    // a learns the new key from the grant in h's header, and the removal from h's commits.
    applied(a.ingest(&h).unwrap());
    assert_eq!(a.key.current().0.number, 1);
    assert_eq!(a.key.current().1, hq.key.current().1);
    // b's bundle made after its cutoff is refused everywhere, with who and why.
    for node in [&mut hq, &mut a] {
        let before = node.listing();
        match node.ingest(&b2) {
            Err(IngestError::Removed {
                member,
                cutoff,
                reason,
                ..
            }) => assert_eq!(
                (member, cutoff, reason.as_str()),
                (MemberId(3), 2, "stolen")
            ),
            other => panic!("expected a removal refusal: {other:?}"),
        }
        assert_eq!(node.listing(), before, "nothing changed");
    }
    // Its bundle made before the cutoff is taken like any other.
    applied(a.ingest(&b1).unwrap());
    assert_eq!(a.listing(), hq.listing());
    assert!(a.listing().contains_key(&("visits".into(), "v-b1".into())));
    assert!(!a.listing().contains_key(&("visits".into(), "v-b2".into())));

    // b cannot read the new epoch: the grant has no key for it, and says it was removed.
    let b_before = b.listing();
    match b.ingest(&h) {
        Err(IngestError::RemovedHere { cutoff, .. }) => assert_eq!(cutoff, 2),
        other => panic!("expected the removed laptop to be told: {other:?}"),
    }
    assert_eq!(b.key.current().0.number, 0);
    assert_eq!(b.listing(), b_before);
    // Nor with the key of epoch 0 it holds: the bundle's stream does not open under it.
    let opener = BundleReader::open(&h[..]).unwrap();
    assert_eq!(opener.header().epoch, 1);
    assert!(
        opener
            .decrypt(b.key.key(ferry_bundle::EpochId::ZERO).unwrap())
            .is_err()
    );

    // a writes in the new epoch, without the grant once hq's receipt shows it holds it.
    a.write(
        "visits",
        "v-a",
        vec![set("by", Value::Str("a".into()))],
        T0 + 500,
    );
    let from_a = a.bundle(&[]);
    assert_eq!(version(&from_a), ferry_bundle::VERSION_EPOCHS);
    applied(hq.ingest(&from_a).unwrap());
    assert_eq!(a.listing(), hq.listing());
    assert!(matches!(
        b.ingest(&from_a),
        Err(IngestError::RemovedHere { .. }
            | IngestError::NoEpochKey {
                epoch: ferry_bundle::EpochId {
                    number: 1,
                    signer: MemberId(1)
                }
            })
    ));
}

#[test]
fn a_member_that_missed_two_key_changes_reads_both_epochs_from_the_newest_grant() {
    let (mut hq, mut a, _b) = three();
    hq.write("visits", "v1", vec![set("n", Value::Int(1))], T0 + 100);
    hq.rekey(T0 + 110);
    let epoch1 = hq.bundle(&[]);
    hq.write("visits", "v2", vec![set("n", Value::Int(2))], T0 + 200);
    hq.rekey(T0 + 210);
    hq.write("visits", "v3", vec![set("n", Value::Int(3))], T0 + 300);
    let epoch2 = hq.bundle(&[]);
    assert_eq!(hq.key.current().0.number, 2);
    // a gets the newest bundle first: its grant gives epoch 2 and, from its history, 1 and
    // 0; then the older bundle of epoch 1 reads too.
    applied(a.ingest(&epoch2).unwrap());
    assert_eq!(
        a.key.key(ferry_bundle::EpochId::founder(1)),
        hq.key.key(ferry_bundle::EpochId::founder(1))
    );
    assert!(matches!(a.ingest(&epoch1), Ok(Received::Applied(..))));
    assert_eq!(a.listing(), hq.listing());
    // A member that has not heard of the change yet still writes under epoch 0: accepted.
    let (mut hq2, _a2, mut b2) = three();
    hq2.rekey(T0 + 50);
    b2.write("visits", "late", vec![set("n", Value::Int(9))], T0 + 60);
    let old = b2.bundle(&[]);
    assert_eq!(version(&old), 1);
    applied(hq2.ingest(&old).unwrap());
}

#[test]
fn a_grant_made_by_a_member_or_an_outsider_gives_nobody_a_key() {
    let (mut hq, mut a, mut b) = three();
    hq.rekey(T0 + 10);
    // b makes a grant of epoch 2 for a with a key b chose, signed by b, and a bundle sealed
    // under that key that carries it.
    let key = DatasetKey([0x66; 32]);
    let history = hq.key.founder_history().unwrap(); // as if b knew every earlier key
    let grant = ferry_bundle::EpochGrant::issue(
        &b.secret,
        b.engine.dataset,
        &key,
        &history,
        1,
        T0,
        vec![],
        &[(MemberId(2), a.secret.public())],
        [4; 32],
    );
    let ids: Vec<_> = (history.iter().cloned().chain([key]).enumerate())
        .map(|(e, k)| (ferry_bundle::EpochId::founder(e as u32), k))
        .collect();
    b.key.install(&ids, Some(&grant));
    b.write("visits", "x", vec![set("n", Value::Int(1))], T0 + 20);
    let forged = b.bundle(&[]);
    assert_eq!(BundleReader::open(&forged[..]).unwrap().header().epoch, 2);
    let before = a.listing();
    assert!(matches!(
        a.ingest(&forged),
        Err(IngestError::NoEpochKey {
            epoch: ferry_bundle::EpochId {
                number: 2,
                signer: MemberId(1)
            }
        })
    ));
    assert_eq!(
        a.key.current().0.number,
        0,
        "a learned no key from b's grant"
    );
    assert_eq!(a.listing(), before);
}

/// `n` visits for one commit.
fn visits(from: usize, n: usize) -> Vec<(String, Vec<Op>)> {
    (from..from + n)
        .map(|i| {
            (
                format!("v-{i:05}"),
                vec![
                    set("village", Value::Str(["Obunga", "Nyalenda"][i % 2].into())),
                    set("age_years", Value::Int(20 + i as i64 % 50)),
                    set(
                        "visit_date",
                        Value::Str(format!("2026-11-{:02}", 1 + i % 28)),
                    ),
                ],
            )
        })
        .collect()
}

/// The version byte of a bundle and the item kinds of its commits (true: columnar).
fn version_and_forms(bytes: &[u8], key: &DatasetKey) -> (u8, Vec<bool>) {
    let mut r = BundleReader::open(bytes).unwrap().decrypt(key).unwrap();
    let mut forms = Vec::new();
    while let Some(item) = r.next_item().unwrap() {
        match item {
            Item::Commit(_) => forms.push(false),
            Item::ColumnarCommit(_) => forms.push(true),
            _ => {}
        }
    }
    (r.version(), forms)
}

/// Mixed fleets (SPEC §17.2): HQ writes a commit of many records in the row form while a
/// member has not said it reads version 11, and in the columnar form once every member
/// has; a bundle carries columnar commits only as version 11; a relay passes them on in
/// their form, and every laptop ends with the same records.
#[test]
fn columnar_commits_wait_for_every_member_and_travel_unchanged_through_relays() {
    let (mut hq, mut a, mut b) = three();
    let key = hq.key.current().1.clone();
    // Only HQ and clinic-a say they read version 11: HQ's bulk commit stays a row commit.
    hq.announce_reads(T0 + 100);
    a.announce_reads(T0 + 101);
    hq.ingest(&a.bundle(&[])).unwrap();
    hq.write_many("visits", visits(0, 40), T0 + 200);
    let row = hq.bundle(&[]);
    let (version, forms) = version_and_forms(&row, &key);
    assert!(version < ferry_bundle::VERSION_COLUMNS, "version {version}");
    assert!(forms.iter().all(|c| !c), "{forms:?}");
    // Clinic-b says so too; once HQ has applied that, its next bulk commit is columnar.
    b.announce_reads(T0 + 300);
    hq.ingest(&b.bundle(&[])).unwrap();
    let before = hq.store.stored().unwrap().get(MemberId::ADMIN);
    hq.write_many("visits", visits(40, 40), T0 + 400);
    // A one-record commit stays a row commit.
    hq.write(
        "visits",
        "v-00001",
        vec![set("age_years", Value::Int(7))],
        T0 + 500,
    );
    let forms_at =
        |n: &SimNode, m: MemberId, seq: u64| n.store.commit(m, seq).unwrap().unwrap().form;
    use ferry_model::commit::Form;
    assert_eq!(forms_at(&hq, MemberId::ADMIN, before + 1), Form::Columnar);
    assert_eq!(forms_at(&hq, MemberId::ADMIN, before + 2), Form::Row);
    let bulk = hq.bundle(&[]);
    let (version, forms) = version_and_forms(&bulk, &key);
    assert_eq!(version, ferry_bundle::VERSION_COLUMNS);
    assert_eq!(forms.iter().filter(|c| **c).count(), 1, "{forms:?}");
    // Clinic-a gets it from HQ and relays HQ's commits to clinic-b, which has nothing of
    // HQ's since the joins: the relayed run keeps the columnar commit as HQ wrote it.
    a.ingest(&bulk).unwrap();
    assert_eq!(forms_at(&a, MemberId::ADMIN, before + 1), Form::Columnar);
    let head = hq.store.stored().unwrap().get(MemberId::ADMIN);
    let relayed = a.bundle_with(&[
        Coverage {
            author: MemberId::ADMIN,
            first: b.store.stored().unwrap().get(MemberId::ADMIN) + 1,
            last: head,
        },
        Coverage {
            author: a.me(),
            first: b.store.stored().unwrap().get(a.me()) + 1,
            last: a.store.stored().unwrap().get(a.me()),
        },
    ]);
    assert_eq!(
        version_and_forms(&relayed, &key).0,
        ferry_bundle::VERSION_COLUMNS
    );
    b.ingest(&relayed).unwrap();
    assert_eq!(forms_at(&b, MemberId::ADMIN, before + 1), Form::Columnar);
    assert_eq!(
        b.store
            .commit(MemberId::ADMIN, before + 1)
            .unwrap()
            .unwrap()
            .bytes,
        hq.store
            .commit(MemberId::ADMIN, before + 1)
            .unwrap()
            .unwrap()
            .bytes
    );
    assert_eq!(a.listing(), hq.listing());
    assert_eq!(b.listing(), hq.listing());
    assert_eq!(b.listing().len(), 80);
}

/// A relay (or anyone on the way) that re-encodes a columnar commit in the row form, or
/// passes its bytes off as a row commit, breaks the author's signature: the bundle is
/// refused, and the honest copy still applies afterwards.
#[test]
fn a_columnar_commit_passed_off_in_the_other_form_is_refused() {
    let (mut hq, mut a, mut b) = three();
    for n in [&mut hq, &mut a, &mut b] {
        n.announce_reads(T0 + 100);
    }
    hq.ingest(&a.bundle(&[])).unwrap();
    hq.ingest(&b.bundle(&[])).unwrap();
    hq.write_many("visits", visits(0, 20), T0 + 200);
    let honest = hq.bundle(&[]);
    let key = hq.key.current().1.clone();
    // Clinic-a relays to clinic-b, but rewrites the columnar item as a row item of the same
    // bytes, and (as a member) signs its own bundle validly.
    a.ingest(&honest).unwrap();
    let head = hq.store.stored().unwrap().get(MemberId::ADMIN);
    let have = b.store.stored().unwrap().get(MemberId::ADMIN);
    let relayed = a.bundle_with(&[
        Coverage {
            author: MemberId::ADMIN,
            first: have + 1,
            last: head,
        },
        Coverage {
            author: a.me(),
            first: b.store.stored().unwrap().get(a.me()) + 1,
            last: a.store.stored().unwrap().get(a.me()),
        },
    ]);
    // Untouched, the relay is taken (so what follows is refused for the rewrite alone).
    let mut check = b.clone();
    check.ingest(&relayed).unwrap();
    assert_eq!(check.store.stored().unwrap().get(MemberId::ADMIN), head);
    let mut r = BundleReader::open(&relayed[..])
        .unwrap()
        .decrypt(&key)
        .unwrap();
    let mut items = Vec::new();
    while let Some(i) = r.next_item().unwrap() {
        items.push(match i {
            Item::ColumnarCommit(b) => Item::Commit(b),
            other => other,
        });
    }
    // Sealed and signed by clinic-a over its own head: only HQ's proof can catch it.
    let header = ferry_bundle::Header::new(hq.engine.dataset, a.me(), [7; 16]);
    let options = ferry_bundle::WriteOptions {
        version: r.version(),
        ..Default::default()
    };
    let mut w = ferry_bundle::BundleWriter::new(Vec::new(), &header, &key, options).unwrap();
    for i in &items {
        w.push(i).unwrap();
    }
    let own = a.store.stored().unwrap().get(a.me());
    let hash = a.store.commit_hash(a.me(), own).unwrap().unwrap();
    let (forged, _) = w
        .finish(|d| {
            a.secret.sign(&ferry_model::crypto::head_message(
                hq.engine.dataset,
                a.me(),
                own,
                &hash,
                Some(d),
            ))
        })
        .unwrap();
    let before = b.listing();
    let report = applied(b.ingest_or_fail(&forged).unwrap());
    assert!(
        report
            .skipped_runs
            .iter()
            .any(|(c, _)| c.author == MemberId::ADMIN),
        "{report:?}"
    );
    assert_eq!(b.listing(), before, "nothing of the rewritten run applies");
    assert_eq!(b.store.stored().unwrap().get(MemberId::ADMIN), have);
    // The honest bundle still applies.
    b.ingest(&honest).unwrap();
    assert_eq!(b.listing(), hq.listing());
    assert_eq!(b.listing().len(), 20);
    let _ = RunProof::Sender;
}

/// The version byte of a bundle and whether its payload names a dictionary (flag 2).
fn version_and_dictionary(bytes: &[u8], node: &SimNode) -> (u8, Option<u32>) {
    let key = node.key.current().1.clone();
    let opener = BundleReader::open(bytes).unwrap();
    let version = opener.version();
    let mut named = None;
    let mut r = opener
        .decrypt_with(&key, |k| {
            named = Some(k);
            ferry_sync::dicts::dictionary(&node.store, k)
                .unwrap()
                .map(|(b, _)| b)
        })
        .unwrap();
    while r.next_item().unwrap().is_some() {}
    (version, named)
}

/// SPEC §18: the admin trains a dictionary once it holds 1,000 records; small bundles use
/// it only once every member (or the one member a bundle is for) is known to hold it; a
/// member that lacks it keeps the bundle waiting and reads it once the dictionary came.
#[test]
fn small_bundles_use_the_dataset_dictionary_once_their_readers_hold_it() {
    let (mut hq, mut a, mut b) = three();
    for n in [&mut hq, &mut a, &mut b] {
        n.announce_reads(T0 + 100);
    }
    hq.ingest(&a.bundle(&[])).unwrap();
    hq.ingest(&b.bundle(&[])).unwrap();
    hq.write_many("visits", visits(0, 600), T0 + 150);
    assert!(!hq.train_dictionary(T0 + 160), "600 records: not due yet");
    hq.write_many("visits", visits(600, 600), T0 + 200);
    assert!(hq.train_dictionary(T0 + 300));
    assert!(
        !hq.train_dictionary(T0 + 301),
        "due again only at 8 times the records"
    );
    // A member cannot train one: only admins write `_dicts`.
    assert!(!a.train_dictionary(T0 + 302));
    let (dict, _) = ferry_sync::dicts::dictionary(&hq.store, 1)
        .unwrap()
        .unwrap();
    assert!(!dict.is_empty() && dict.len() <= ferry_sync::dicts::DICT_SIZE);
    // Nobody else holds it: HQ's bundle brings it, compressed without it.
    let first = hq.bundle(&[]);
    assert_eq!(version_and_dictionary(&first, &hq).1, None);
    a.ingest(&first).unwrap();
    hq.ingest(&a.bundle(&[])).unwrap();
    // Clinic-a holds it, clinic-b does not: a bundle for everyone does without…
    let one = |n: &mut SimNode, id: &str, t: u64| {
        n.write(
            "visits",
            id,
            vec![set("village", Value::Str("Obunga".into()))],
            t,
        )
    };
    one(&mut hq, "v-new-1", T0 + 400);
    let for_all = hq.bundle(&[]);
    assert_eq!(
        version_and_dictionary(&for_all, &hq),
        (ferry_bundle::VERSION_COLUMNS, None)
    );
    // …and one for clinic-a alone (an SMS to its number) uses it.
    one(&mut hq, "v-new-2", T0 + 500);
    hq.options.recipient = Some(MemberId(2));
    let for_a = hq.bundle_for(&[MemberId(2)], &[]);
    hq.options.recipient = None;
    assert_eq!(
        version_and_dictionary(&for_a, &hq),
        (ferry_bundle::VERSION_DICTS, Some(1))
    );
    a.ingest(&for_all).unwrap();
    a.ingest(&for_a).unwrap();
    // Clinic-b, handed that SMS bundle by mistake, cannot read it yet: it waits, nothing
    // is kept…
    let before = b.listing();
    match b.ingest(&for_a) {
        Err(IngestError::Bundle(ferry_bundle::BundleError::NoDictionary(1))) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(b.listing(), before);
    // …and reads it once HQ's bundle brought the dictionary.
    b.ingest(&first).unwrap();
    b.ingest(&for_all).unwrap();
    b.ingest(&for_a).unwrap();
    hq.ingest(&b.bundle(&[])).unwrap();
    // Now every member holds it: HQ's small bundles use it, and everyone converges.
    one(&mut hq, "v-new-3", T0 + 600);
    let small = hq.bundle(&[]);
    assert_eq!(
        version_and_dictionary(&small, &hq),
        (ferry_bundle::VERSION_DICTS, Some(1))
    );
    a.ingest(&small).unwrap();
    b.ingest(&small).unwrap();
    assert_eq!(a.listing(), hq.listing());
    assert_eq!(b.listing(), hq.listing());
    assert_eq!(hq.listing().len(), 1203);
}

/// An adversary among the members publishes a dictionary of its own (`_dicts/1`): its
/// write is skipped everywhere (only admins write reserved collections), so no reader
/// ever uses it, and the admin's own dictionary 1 is the one everyone holds.
#[test]
fn a_member_cannot_publish_a_dictionary() {
    let (mut hq, mut a, mut b) = three();
    for n in [&mut hq, &mut a, &mut b] {
        n.announce_reads(T0 + 100);
    }
    a.write(
        "_dicts",
        "1",
        vec![set("zstd", Value::Bytes(vec![0x5a; 512]))],
        T0 + 150,
    );
    assert!(
        ferry_sync::dicts::dictionary(&a.store, 1)
            .unwrap()
            .is_none()
    );
    let from_a = a.bundle(&[]);
    hq.ingest(&from_a).unwrap();
    b.ingest(&from_a).unwrap();
    hq.ingest(&b.bundle(&[])).unwrap();
    for n in [&hq, &b] {
        assert!(
            ferry_sync::dicts::dictionary(&n.store, 1)
                .unwrap()
                .is_none()
        );
        assert_eq!(n.engine.shared_dictionary(&n.store, None).unwrap(), None);
    }
    hq.write_many("visits", visits(0, 1100), T0 + 200);
    assert!(hq.train_dictionary(T0 + 300));
    let first = hq.bundle(&[]);
    a.ingest(&first).unwrap();
    b.ingest(&first).unwrap();
    let (admin_dict, dot) = ferry_sync::dicts::dictionary(&hq.store, 1)
        .unwrap()
        .unwrap();
    assert_eq!(dot.author, MemberId::ADMIN);
    for n in [&a, &b] {
        assert_eq!(
            ferry_sync::dicts::dictionary(&n.store, 1)
                .unwrap()
                .unwrap()
                .0,
            admin_dict
        );
    }
}
