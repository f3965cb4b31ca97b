//! A large bundle applied in steps (`Storage::step`): the result equals one transaction's,
//! a crash after any step leaves a state a smaller bundle could have left and that a second
//! import finishes, and a file swapped between the two passes never gets past what the
//! signature covered.

use ferry_bundle::BundleReader;
use ferry_model::{MemberId, Op, Value};
use ferry_sync::mem::MemStorage;
use ferry_sync::plan::Coverage;
use ferry_sync::sim::{SimNode, applied};
use ferry_sync::{IngestError, Storage, Verdict, sendable};

const T0: u64 = 1_763_000_000_000;
const COMMITS: u64 = 40;
const PER_COMMIT: u64 = 25;
/// Small enough for several steps in `COMMITS` commits.
const STEP: u64 = 2_000;

/// HQ with `COMMITS` commits of `PER_COMMIT` visits each (after its genesis and one
/// invitation), and the invitation of clinic-a (member 2).
fn hq() -> (SimNode, ferry_sync::Invitation) {
    let mut hq = SimNode::create("clinics", "hq", 1, T0);
    let inv = hq.invite(MemberId(2), "clinic-a", T0 + 1);
    for c in 0..COMMITS {
        write_visits(&mut hq, c, "first");
    }
    (hq, inv)
}

fn write_visits(node: &mut SimNode, c: u64, note: &str) {
    let records = (0..PER_COMMIT)
        .map(|i| {
            let n = c * PER_COMMIT + i;
            (
                format!("v-{n:05}"),
                vec![
                    Op::Set(
                        "patient".into(),
                        Value::Str(format!("p-{:04}", n * 7 % 9973)),
                    ),
                    Op::Set("weight_kg".into(), Value::Int(40 + (n % 40) as i64)),
                    Op::Set("note".into(), Value::Str(format!("{note} {n}"))),
                ],
            )
        })
        .collect();
    node.write_many("visits", records, T0 + 100 + c);
}

/// A fresh clinic-a whose store takes a step every `step` bytes of new commits.
fn clinic(inv: &ferry_sync::Invitation, step: Option<u64>) -> SimNode {
    let mut a = SimNode::join(inv, 2, T0 + 10);
    a.store.step_bytes = step;
    a
}

fn all_of_hq(hq: &mut SimNode) -> Vec<u8> {
    let last = hq.store.stored().unwrap().get(MemberId::ADMIN);
    hq.bundle_with(&[Coverage {
        author: MemberId::ADMIN,
        first: 1,
        last,
    }])
}

#[test]
fn a_bundle_applied_in_steps_ends_as_one_transaction_would_and_a_crash_leaves_a_prefix_a_reimport_finishes()
 {
    let (mut hq, inv) = hq();
    let bundle = all_of_hq(&mut hq);
    let head = hq.store.stored().unwrap().get(MemberId::ADMIN);

    let mut whole = clinic(&inv, None);
    applied(whole.ingest_or_fail(&bundle).unwrap());
    assert_eq!(whole.store.steps, 0);
    assert_eq!(whole.listing().len() as u64, COMMITS * PER_COMMIT);

    let mut stepped = clinic(&inv, Some(STEP));
    applied(stepped.ingest_or_fail(&bundle).unwrap());
    assert!(
        stepped.store.steps >= 3,
        "{} steps: the test wants several",
        stepped.store.steps
    );
    assert_eq!(stepped.listing(), whole.listing());
    assert_eq!(
        stepped.store.stored().unwrap(),
        whole.store.stored().unwrap()
    );
    assert_eq!(
        stepped.store.applied().unwrap(),
        whole.store.applied().unwrap()
    );
    assert_eq!(
        sendable(&stepped.store, MemberId(2)).unwrap(),
        stepped.store.stored().unwrap()
    );

    // A crash right after the last step: the store as that step left it.
    let mut crashed = clinic(&inv, Some(STEP));
    crashed.store = *stepped.store.last_step.clone().expect("a step was taken");
    let stored = crashed.store.stored().unwrap().get(MemberId::ADMIN);
    let done = crashed.store.applied().unwrap().get(MemberId::ADMIN);
    assert!(
        0 < done && done == stored && stored < head,
        "a prefix of whole commits: applied {done}, stored {stored} of {head}"
    );
    // Every record is as the commits up to `done` left it, none from a later commit.
    let visits = crashed
        .listing()
        .keys()
        .filter(|(c, _)| c == "visits")
        .count() as u64;
    assert_eq!(visits, (done - (head - COMMITS)) * PER_COMMIT);
    for ((c, id), fields) in crashed.listing() {
        assert_eq!(
            Some(&fields),
            whole.listing().get(&(c.clone(), id.clone())),
            "{c}/{id} differs from the complete import"
        );
    }
    // HQ's signature covers its head, not this prefix: nothing of HQ's is passed on until
    // the rest arrives, and a bundle for another member can still be written.
    assert_eq!(
        sendable(&crashed.store, MemberId(2))
            .unwrap()
            .get(MemberId::ADMIN),
        0
    );
    let onward = crashed.bundle(&[]);
    let report = applied(hq.ingest_or_fail(&onward).unwrap());
    assert_eq!(report.sender, MemberId(2));
    assert!(report.runs.iter().all(|r| r.author != MemberId::ADMIN));

    // Importing the bundle again finishes the job.
    let report = applied(crashed.ingest_or_fail(&bundle).unwrap());
    assert_eq!(report.duplicates, done);
    assert_eq!(crashed.listing(), whole.listing());
    assert_eq!(
        crashed.store.stored().unwrap(),
        whole.store.stored().unwrap()
    );
    assert_eq!(
        sendable(&crashed.store, MemberId(2))
            .unwrap()
            .get(MemberId::ADMIN),
        head
    );
}

/// Two bundles with the same header and HQ's history up to `common`, then different
/// commits: `honest` signed by HQ, `swapped` from a copy of HQ that wrote other commits
/// (as a member with the dataset key can make, or a stick's bytes changed between reads).
fn twins(common: u64) -> (Vec<u8>, Vec<u8>, SimNode, SimNode, ferry_sync::Invitation) {
    let mut hq = SimNode::create("clinics", "hq", 1, T0);
    let inv = hq.invite(MemberId(2), "clinic-a", T0 + 1);
    for c in 0..common {
        write_visits(&mut hq, c, "first");
    }
    let mut other = hq.clone();
    for c in common..COMMITS {
        write_visits(&mut hq, c, "first");
        write_visits(&mut other, c, "SWAPPED");
    }
    let last = hq.store.stored().unwrap().get(MemberId::ADMIN);
    let runs = [Coverage {
        author: MemberId::ADMIN,
        first: 1,
        last,
    }];
    let salt = [7u8; 16];
    let export = |n: &SimNode| {
        n.engine
            .export(
                &n.store,
                &runs,
                &[],
                Vec::new(),
                salt,
                &n.key,
                &n.secret,
                n.options,
            )
            .unwrap()
            .0
    };
    let honest = export(&hq);
    let swapped = export(&other);
    (honest, swapped, hq, other, inv)
}

/// Pass 1 reads `honest`, pass 2 reads `swapped`.
fn swap(
    a: &mut SimNode,
    honest: &[u8],
    swapped: &[u8],
) -> Result<ferry_sync::IngestReport, IngestError<ferry_sync::mem::MemError>> {
    let Verdict::Authentic(auth) = a
        .engine
        .authenticate(
            &a.store,
            BundleReader::open(honest).unwrap(),
            &a.key,
            a.accept,
        )
        .unwrap()
    else {
        panic!("the honest bundle authenticates");
    };
    a.engine.ingest(
        &mut a.store,
        BundleReader::open(swapped).unwrap(),
        &a.key,
        &auth,
        T0 + 1_000,
    )
}

#[test]
fn a_bundle_swapped_between_the_passes_never_makes_durable_what_the_signature_did_not_cover() {
    // The copies part after 30 commits: steps before that are HQ's own commits.
    let (honest, swapped, hq, other, inv) = twins(30);
    let mut a = clinic(&inv, Some(STEP));
    let err = swap(&mut a, &honest, &swapped).unwrap_err();
    assert!(matches!(err, IngestError::Changed), "{err}");
    let durable: MemStorage = *a
        .store
        .last_step
        .clone()
        .expect("steps inside the common part");
    let stored = durable.stored().unwrap().get(MemberId::ADMIN);
    assert!(stored > 0);
    for seq in 1..=stored {
        let held = durable.commit_hash(MemberId::ADMIN, seq).unwrap();
        assert_eq!(held, hq.store.commit_hash(MemberId::ADMIN, seq).unwrap());
    }
    let first_swapped = (1..=other.store.stored().unwrap().get(MemberId::ADMIN))
        .find(|&s| {
            other.store.commit_hash(MemberId::ADMIN, s).unwrap()
                != hq.store.commit_hash(MemberId::ADMIN, s).unwrap()
        })
        .unwrap();
    assert!(
        stored < first_swapped,
        "a step at commit {stored} took a commit from {first_swapped} on that no signature covers"
    );
    let mut records = durable.records.values();
    assert!(records.all(|r| !format!("{r:?}").contains("SWAPPED")));

    // Parting at once: no step at all.
    let (honest, swapped, _, _, inv) = twins(0);
    let mut a = clinic(&inv, Some(STEP));
    let err = swap(&mut a, &honest, &swapped).unwrap_err();
    assert!(matches!(err, IngestError::Changed), "{err}");
    assert!(
        a.store.last_step.is_none(),
        "a step was taken on swapped commits"
    );
}
