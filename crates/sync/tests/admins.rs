//! More than one admin (bundles/SPEC.md §15), in memory, against members that craft their
//! own commits: who counts as an admin is decided by each commit's causal context, the same
//! way on every laptop whatever the order bundles arrive in.

use ferry_model::{Change, MemberId, Op, Value};
use ferry_sync::Storage;
use ferry_sync::plan::Coverage;
use ferry_sync::roles::{self, MEMBER_ADMIN_FIELD};
use ferry_sync::sim::SimNode;

const T0: u64 = 1_763_000_000_000;

/// HQ plus two clinics that have exchanged their joins, so every node knows every member.
fn three() -> (SimNode, SimNode, SimNode) {
    let mut hq = SimNode::create("clinics", "hq", 1, T0);
    let inv_a = hq.invite(MemberId(2), "clinic-a", T0 + 1);
    let inv_b = hq.invite(MemberId(3), "clinic-b", T0 + 2);
    let mut a = SimNode::join(&inv_a, 2, T0 + 10);
    let mut b = SimNode::join(&inv_b, 3, T0 + 20);
    let joins = |n: &mut SimNode, m: u32| {
        n.bundle_with(&[Coverage {
            author: MemberId(m),
            first: 1,
            last: 1,
        }])
    };
    let (from_a, from_b) = (joins(&mut a, 2), joins(&mut b, 3));
    hq.ingest(&from_a).unwrap();
    hq.ingest(&from_b).unwrap();
    let from_hq = hq.bundle(&[]);
    a.ingest(&from_hq).unwrap();
    b.ingest(&from_hq).unwrap();
    (hq, a, b)
}

fn record(collection: &str, id: &str, field: &str, v: Value) -> Change {
    Change::Record {
        collection: collection.into(),
        id: id.into(),
        ops: vec![Op::Set(field.into(), v)],
    }
}

fn commit(n: &mut SimNode, changes: Vec<Change>, at: u64) {
    n.engine.commit_local(&mut n.store, changes, at).unwrap();
}

/// `by` promotes member `m`.
fn promote(by: &mut SimNode, m: u32, at: u64) {
    let f = MEMBER_ADMIN_FIELD;
    commit(
        by,
        vec![record("_members", &m.to_string(), f, Value::Bool(true))],
        at,
    );
}

/// `by` demotes member `m`, knowing of no number of its range in use.
fn demote(by: &mut SimNode, m: u32, at: u64) {
    let ops = vec![
        Op::Set(MEMBER_ADMIN_FIELD.into(), Value::Bool(false)),
        Op::Set(roles::MEMBER_INVITES_UPTO_FIELD.into(), Value::Int(0)),
    ];
    let change = Change::Record {
        collection: "_members".into(),
        id: m.to_string(),
        ops,
    };
    commit(by, vec![change], at);
}

fn admins(n: &SimNode) -> Vec<u32> {
    roles::admins(&n.store)
        .unwrap()
        .into_iter()
        .map(|m| m.0)
        .collect()
}

/// The merge rule a node holds for `visits.field`, if any.
fn rule(n: &SimNode, field: &str) -> Option<Value> {
    n.store
        .records
        .get(&("_rules".to_string(), "visits".to_string()))
        .and_then(|r| r.winner(field).cloned())
}

#[test]
fn a_member_cannot_make_itself_an_admin_nor_write_the_role_record() {
    let (mut hq, mut a, mut b) = three();
    // Clinic B promotes itself, writes a role event straight into `_roles`, sets a rule and
    // removes clinic A: every one of these is skipped on every node.
    commit(
        &mut b,
        vec![
            record("_members", "3", MEMBER_ADMIN_FIELD, Value::Bool(true)),
            record(
                "_roles",
                "3",
                roles::ROLE_FIELD,
                Value::Bytes(vec![1, 0, 0]),
            ),
            record("_rules", "visits", "village", Value::Str("lww".into())),
            record("_members", "2", "removed", Value::Str("mine".into())),
        ],
        T0 + 100,
    );
    // And then, as if it were one, its own removal field and a key for itself.
    commit(
        &mut b,
        vec![record(
            "_members",
            "3",
            "cancelled",
            Value::Str("self".into()),
        )],
        T0 + 200,
    );
    let from_b = b.bundle(&[]);
    hq.ingest(&from_b).unwrap();
    a.ingest(&from_b).unwrap();
    for n in [&hq, &a, &b] {
        assert_eq!(admins(n), vec![1], "only the founder is an admin");
        assert!(rule(n, "village").is_none(), "the rule was skipped");
        assert!(
            !n.store
                .records
                .contains_key(&("_roles".to_string(), "3".to_string())),
            "nobody writes _roles"
        );
        let two = n
            .store
            .records
            .get(&("_members".to_string(), "2".to_string()));
        assert!(ferry_sync::removal(two).is_none());
        let three = n
            .store
            .records
            .get(&("_members".to_string(), "3".to_string()));
        assert!(ferry_sync::cancellation(three).is_none());
    }
    // Only the founder's promotion counts; after it, clinic B's rule does.
    promote(&mut hq, 3, T0 + 300);
    b.ingest(&hq.bundle(&[])).unwrap();
    commit(
        &mut b,
        vec![record(
            "_rules",
            "visits",
            "village",
            Value::Str("lww".into()),
        )],
        T0 + 400,
    );
    let from_b = b.bundle(&[]);
    hq.ingest(&from_b).unwrap();
    a.ingest(&from_b).unwrap();
    for n in [&hq, &a, &b] {
        assert_eq!(admins(n), vec![1, 3]);
        assert_eq!(rule(n, "village"), Some(Value::Str("lww".into())));
    }
}

/// HQ promotes clinic A, then demotes it. Clinic A sets one rule before it learns of the
/// demotion (concurrent with it: it counts) and one after (it does not). Clinic B receives
/// the bundles in one order, HQ in the other; both end the same.
#[test]
fn an_admin_action_counts_by_its_causal_context_in_any_arrival_order() {
    let (mut hq, mut a, mut b) = three();
    promote(&mut hq, 2, T0 + 100);
    let promotion = hq.bundle(&[]);
    a.ingest(&promotion).unwrap();
    // Concurrently: HQ demotes A; A (not knowing) sets a rule.
    demote(&mut hq, 2, T0 + 200);
    commit(
        &mut a,
        vec![record(
            "_rules",
            "visits",
            "before",
            Value::Str("lww".into()),
        )],
        T0 + 210,
    );
    let a_before = a.bundle(&[]);
    let demotion = hq.bundle(&[]);
    // A learns of the demotion, then sets another rule: it no longer counts.
    a.ingest(&demotion).unwrap();
    commit(
        &mut a,
        vec![record(
            "_rules",
            "visits",
            "after",
            Value::Str("lww".into()),
        )],
        T0 + 300,
    );
    let a_after = a.bundle(&[]);
    // B: A's first bundle, then the demotion, then A's second. HQ: A's second bundle
    // (holding both of A's changes) with the demotion already applied.
    b.ingest(&a_before).unwrap();
    assert_eq!(rule(&b, "before"), Some(Value::Str("lww".into())));
    b.ingest(&demotion).unwrap();
    b.ingest(&a_after).unwrap();
    hq.ingest(&a_after).unwrap();
    for n in [&hq, &a, &b] {
        assert_eq!(admins(n), vec![1]);
        assert_eq!(
            rule(n, "before"),
            Some(Value::Str("lww".into())),
            "made with the promotion and not the demotion in its context"
        );
        assert_eq!(rule(n, "after"), None, "made after the demotion");
    }
}

#[test]
fn ranges_give_every_admin_its_own_member_numbers() {
    let mut seen = std::collections::BTreeSet::new();
    for m in [1u32, 2, 3, 17, 65_535] {
        let (lo, hi) = roles::range(MemberId(m)).unwrap();
        for n in [lo, lo + 1, hi] {
            assert!(seen.insert(n), "number {n} given twice");
            assert_eq!(roles::inviter(MemberId(n)), MemberId(m));
        }
    }
    assert!(roles::range(MemberId(65_536)).is_none());
}

/// A join counts only when the admin whose range holds its number signed the invitation: a
/// promoted admin's own invitation is taken; the founder's forged one for a number of that
/// range is refused; a member that is no admin signing for "its" range is never admitted
/// (it waits for a promotion that never comes).
#[test]
fn a_join_counts_only_when_the_owner_of_its_number_signed_it() {
    use ferry_sync::{IngestError, Missing, Received};
    let (mut hq, mut a, mut b) = three();
    promote(&mut hq, 2, T0 + 100);
    a.ingest(&hq.bundle(&[])).unwrap();
    let first = |n: &mut SimNode, m: u32| {
        n.bundle_with(&[Coverage {
            author: MemberId(m),
            first: 1,
            last: 1,
        }])
    };
    // clinic-a invites #131072 (its own range): taken.
    let own = a.invite(MemberId(131_072), "clinic-d", T0 + 200);
    let mut d = SimNode::join(&own, 40, T0 + 210);
    let from_d = first(&mut d, 131_072);
    assert!(matches!(hq.ingest(&from_d), Ok(Received::Applied(..))));
    assert!(
        hq.store
            .members()
            .unwrap()
            .iter()
            .any(|m| m.member.0 == 131_072)
    );
    // The founder signs an invitation numbered in clinic-a's range: refused.
    let forged = hq.invite(MemberId(131_073), "clinic-x", T0 + 300);
    let mut x = SimNode::join(&forged, 41, T0 + 310);
    let from_x = first(&mut x, 131_073);
    for n in [&mut hq, &mut a] {
        match n.ingest(&from_x) {
            Err(IngestError::NotMember { member, .. }) => assert_eq!(member.0, 131_073),
            other => panic!("expected a refusal: {other:?}"),
        }
    }
    // clinic-b, no admin, invites #196608 (what would be its range): never admitted.
    let rogue = b.invite(MemberId(196_608), "clinic-y", T0 + 400);
    let mut y = SimNode::join(&rogue, 42, T0 + 410);
    let from_y = first(&mut y, 196_608);
    match hq.ingest(&from_y) {
        Ok(Received::NotYet {
            missing: Missing::Inviter { inviter, .. },
            ..
        }) => assert_eq!(inviter, MemberId(3)),
        other => panic!("expected a wait for #3's promotion: {other:?}"),
    }
    for n in [&hq, &a] {
        assert!(
            !n.store
                .members()
                .unwrap()
                .iter()
                .any(|m| m.member.0 == 196_608 || m.member.0 == 131_073)
        );
    }
}

/// A laptop that admitted a join before the inviting admin's demotion reached it relays
/// that member's changes to one that refuses the join: the relayed run is left out and the
/// member frozen there, and the rest of the bundle (the relaying laptop's own changes)
/// applies — one refused join does not block everything else.
#[test]
fn a_relayed_join_refused_after_a_demotion_does_not_block_the_bundle() {
    let (mut hq, mut a, mut b) = three();
    promote(&mut hq, 2, T0 + 100);
    let promotion = hq.bundle(&[]);
    a.ingest(&promotion).unwrap();
    b.ingest(&promotion).unwrap();
    // clinic-a invites #131072, which joins and writes; clinic-b admits it.
    let inv = a.invite(MemberId(131_072), "clinic-d", T0 + 200);
    let mut d = SimNode::join(&inv, 43, T0 + 210);
    d.write(
        "visits",
        "d0",
        vec![Op::Set("v".into(), Value::Int(1))],
        T0 + 220,
    );
    b.ingest(&a.bundle(&[])).unwrap();
    b.ingest(&d.bundle(&[])).unwrap();
    assert!(b.store.stored().unwrap().get(MemberId(131_072)) >= 2);
    // Meanwhile HQ demotes clinic-a knowing of no number of its range.
    demote(&mut hq, 2, T0 + 300);
    hq.ingest(&a.bundle(&[])).unwrap();
    // clinic-b writes and sends everything it holds, #131072's run included.
    b.write(
        "visits",
        "b1",
        vec![Op::Set("v".into(), Value::Int(2))],
        T0 + 400,
    );
    let from_b = b.bundle(&[]);
    match hq.ingest(&from_b) {
        Ok(ferry_sync::Received::Applied(report, _)) => {
            assert!(!report.skipped_runs.is_empty(), "{report:?}")
        }
        other => panic!("the bundle applies: {other:?}"),
    }
    assert!(
        hq.store
            .records
            .contains_key(&("visits".to_string(), "b1".to_string()))
    );
    assert!(
        !hq.store
            .records
            .contains_key(&("visits".to_string(), "d0".to_string()))
    );
    assert_eq!(hq.store.frozen(MemberId(131_072)).unwrap(), Some(1));
}

/// A laptop that joins after the history was compacted installs the founder's snapshot,
/// which holds a member invited by another admin: its `_roles` records come after the
/// chains, and the snapshot's word stands for the inviter's role.
#[test]
fn a_snapshot_holding_a_member_invited_by_another_admin_installs() {
    let (mut hq, mut a, mut b) = three();
    promote(&mut hq, 2, T0 + 100);
    let inv = a.invite(MemberId(131_072), "clinic-d", T0 + 200);
    let promotion = hq.bundle(&[]);
    a.ingest(&promotion).unwrap();
    let mut d = SimNode::join(&inv, 44, T0 + 210);
    d.write(
        "visits",
        "d0",
        vec![Op::Set("v".into(), Value::Int(1))],
        T0 + 220,
    );
    // Everyone sends everyone everything, until each holds it all and knows the others do.
    for _ in 0..3 {
        let bundles: Vec<Vec<u8>> = [&mut hq, &mut a, &mut b, &mut d]
            .into_iter()
            .map(|n| n.bundle(&[]))
            .collect();
        for (i, bytes) in bundles.iter().enumerate() {
            for (j, n) in [&mut hq, &mut a, &mut b, &mut d].into_iter().enumerate() {
                if i != j {
                    let _ = n.ingest(bytes);
                }
            }
        }
    }
    assert!(hq.compact() > 0, "the founder compacted its history");
    // A laptop invited now joins from the snapshot.
    let inv = hq.invite(MemberId(5), "clinic-e", T0 + 500);
    let mut e = SimNode::join(&inv, 45, T0 + 510);
    let from_e = e.bundle(&[]);
    hq.ingest(&from_e).unwrap();
    let snapshot = hq.snapshot_if_needed().expect("a snapshot is needed");
    match e.ingest(&snapshot) {
        Ok(ferry_sync::Received::Applied(..)) => {}
        other => panic!("the snapshot installs: {other:?}"),
    }
    assert!(
        e.store
            .records
            .contains_key(&("visits".to_string(), "d0".to_string()))
    );
    assert_eq!(admins(&e), vec![1, 2]);
}
