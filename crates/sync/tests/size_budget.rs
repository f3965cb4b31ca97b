//! The size budget of bundle format v1 (issue: fixed overhead ≤ 120 B; one new reference
//! record from a known member, with names already seen, ≤ 260 B in total).
#![allow(clippy::print_stdout)] // The measured sizes are part of the report.

use ferry_model::MemberId;
use ferry_sync::Storage;
use ferry_sync::plan::Coverage;
use ferry_sync::sim::{SimNode, reference_record as reference};

const T0: u64 = 1_763_000_000_000;

/// Header 27 B (magic, version, dataset id, one-byte member number, salt) + compression
/// flag 1 B + one Poly1305 tag 16 B + signature 64 B.
const FIXED: usize = 27 + 1 + 16 + 64;

#[test]
fn fixed_overhead_and_one_incremental_reference_record_fit_the_budget() {
    let mut hq = SimNode::create("clinics", "hq", 1, T0);
    let inv = hq.invite(MemberId(2), "clinic-a", T0 + 1);
    let _ = hq.invite(MemberId(3), "clinic-b", T0 + 2);
    let mut a = SimNode::join(&inv, 2, T0 + 10);
    hq.ingest(&a.bundle(&[])).unwrap();
    a.ingest(&hq.bundle(&[])).unwrap();
    // A has written visits before, so HQ knows A and A's names.
    a.write(
        "visits",
        "v-2026-000122",
        reference("p-004511"),
        T0 + 60_000,
    );
    hq.ingest(&a.bundle(&[])).unwrap();
    a.ingest(&hq.bundle(&[])).unwrap();
    // One new visit, 14 minutes later.
    a.write(
        "visits",
        "v-2026-000123",
        reference("p-004512"),
        T0 + 900_000,
    );
    let head = a.store.stored().unwrap().get(MemberId(2));
    let empty = a.bundle_with(&[]);
    // The bundle HQ needs (a broadcast bundle also carries what clinic B, never heard
    // from, lacks: every commit of A).
    let one = a.bundle_for(&[MemberId::ADMIN], &[]);
    println!("empty bundle (receipt only): {} B", empty.len());
    println!(
        "one reference record: {} B (fixed overhead {FIXED} B)",
        one.len()
    );
    const { assert!(FIXED <= 120) };
    assert_eq!(
        ferry_bundle::Header::new(a.engine.dataset, MemberId(2), [0; 16])
            .encode()
            .len()
            + 1
            + 16
            + 64,
        FIXED
    );
    assert!(
        one.len() <= 260,
        "one reference record took {} B",
        one.len()
    );
    // And it really is what HQ needs.
    let report = ferry_sync::sim::applied(hq.ingest(&one).unwrap());
    assert_eq!(
        report.runs,
        vec![Coverage {
            author: MemberId(2),
            first: head,
            last: head
        }]
    );
    assert_eq!(report.new, 1);
}
