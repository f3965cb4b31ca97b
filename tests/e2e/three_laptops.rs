//! Three laptops, edits on all three, bundles through folders in shuffled order, twice,
//! and one only via a third laptop.

use crate::util::{Laptop, files, s, three};
use std::path::{Path, PathBuf};

/// Exports `from` into a fresh folder and returns the bundle files written.
fn export_to(from: &Laptop, dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    from.ok(&["export", s(dir)]);
    files(dir)
}

#[test]
fn shuffled_duplicated_and_relayed_bundles_converge_and_the_conflict_shows_everywhere() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    // Round 0: joins reach HQ; HQ's state reaches both clinics.
    let join_a = export_to(&a, &base.join("r0-a"));
    let join_b = export_to(&b, &base.join("r0-b"));
    hq.ok(&["import", s(&join_a[0]), s(&join_b[0])]);
    let hq0 = export_to(&hq, &base.join("r0-hq"));
    a.ok(&["import", s(&base.join("r0-hq"))]);
    b.ok(&["import", s(&base.join("r0-hq"))]);

    // Edits on all three, then a concurrent edit of one field.
    hq.ok(&["put", "visits", "v-1", "village=Kisumu", "age_years=34"]);
    a.ok(&["put", "visits", "v-2", "weight_kg=61.5", "followup=true"]);
    b.ok(&["put", "visits", "v-3", "temp_c=37.8", "note=null"]);
    let hq1 = export_to(&hq, &base.join("r1-hq"));
    a.ok(&["import", s(&hq1[0])]);
    b.ok(&["import", s(&hq1[0])]);
    a.ok(&["put", "visits", "v-1", "village=Kisumu Ndogo"]);
    b.ok(&["put", "visits", "v-1", "village=Kisumu Ndogo B"]);

    let from_a = export_to(&a, &base.join("r2-a"));
    let from_b = export_to(&b, &base.join("r2-b"));
    // B's bundle reaches HQ only through A: A imports it and exports again.
    a.ok(&["import", s(&from_b[0])]);
    let relay = export_to(&a, &base.join("r2-a-relay"));
    assert_eq!(relay.len(), 1);

    // Deliver in a scrambled order, with late duplicates of old bundles.
    let deliveries: Vec<(&Laptop, &PathBuf)> = vec![
        (&hq, &relay[0]),
        (&b, &hq0[0]),
        (&hq, &from_a[0]),
        (&b, &relay[0]),
        (&b, &from_a[0]),
        (&hq, &relay[0]),
        (&a, &hq1[0]),
        (&hq, &join_a[0]),
    ];
    for (to, file) in deliveries {
        let out = to.ok(&["import", s(file)]);
        assert!(!out.contains("REFUSED"), "{out}");
    }
    // HQ never saw B's bundle file: B's commits came only via A.
    let hq_list = hq.list("visits");
    assert_eq!(hq_list, a.list("visits"), "HQ and clinic A differ");
    assert_eq!(hq_list, b.list("visits"), "HQ and clinic B differ");
    let records: serde_json::Value = serde_json::from_str(&hq_list).unwrap();
    assert_eq!(records.as_array().unwrap().len(), 3);
    for laptop in [&hq, &a, &b] {
        let c: serde_json::Value =
            serde_json::from_str(&laptop.ok(&["conflicts", "--json"])).unwrap();
        let c = c.as_array().unwrap();
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0]["collection"], "visits");
        assert_eq!(c[0]["id"], "v-1");
        assert_eq!(c[0]["field"], "village");
        let mut values: Vec<&str> = c[0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["value"].as_str().unwrap())
            .collect();
        values.sort();
        assert_eq!(values, vec!["Kisumu Ndogo", "Kisumu Ndogo B"]);
        let authors: Vec<&str> = c[0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["author"].as_str().unwrap())
            .collect();
        assert!(
            authors.contains(&"clinic-a") && authors.contains(&"clinic-b"),
            "{authors:?}"
        );
        assert_eq!(c[0]["winner"], c[0]["values"][0]["value"]);
        let st = laptop.status();
        assert_eq!(st["pending"], 0);
        assert_eq!(st["waiting_for_prerequisites"], 0);
    }
    // A late duplicate is counted as such and changes nothing.
    let again = hq.ok(&["import", s(&from_a[0])]);
    assert!(again.contains("already applied"), "{again}");
}

#[test]
fn one_stick_carries_a_to_c_through_b_and_is_tidied_once_everyone_has_everything() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    std::fs::create_dir(&stick).unwrap();
    // First trip: clinic A → HQ → clinic B → HQ → clinic A → clinic B.
    a.ok(&["put", "visits", "v-a", "village=Obunga"]);
    for l in [&a, &hq, &b, &hq, &a, &b] {
        l.ok(&["sync", s(&stick)]);
    }
    // A's record reached B through the stick alone.
    let rec = b.ok(&["get", "visits", "v-a", "--json"]);
    assert_eq!(rec.trim(), r#"{"village":"Obunga"}"#);
    // New edits by A travel to HQ via the stick.
    a.ok(&["put", "visits", "v-a", "village=Nyalenda"]);
    a.ok(&["sync", s(&stick)]);
    let before_hq = files(&stick).len();
    assert!(before_hq >= 1);
    // Nothing is removed until every member has acknowledged it.
    let st = a.status();
    let lacking: Vec<_> = st["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["lacks_from_us"].as_u64().unwrap() > 0)
        .collect();
    assert_eq!(lacking.len(), 2, "HQ and B lack A's new edit: {st}");
    for l in [&hq, &b, &a, &hq, &b, &a] {
        l.ok(&["sync", s(&stick)]);
    }
    for l in [&hq, &a, &b] {
        assert_eq!(
            l.ok(&["get", "visits", "v-a", "--json"]).trim(),
            r#"{"village":"Nyalenda"}"#
        );
    }
    // Once everyone has everything, at most one receipt per laptop remains on the stick.
    let left = files(&stick);
    assert!(left.len() <= 3, "{left:?}");
    // And those left carry no commits anybody lacks.
    for l in [&hq, &a, &b] {
        let st = l.status();
        for m in st["members"].as_array().unwrap() {
            assert_eq!(m["lacks_from_us"], 0, "{st}");
        }
    }
}

#[test]
fn a_bundle_that_arrives_before_the_one_it_builds_on_waits_unused_then_applies() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, _b) = three(base);
    let r0 = base.join("r0");
    std::fs::create_dir(&r0).unwrap();
    hq.ok(&["export", s(&r0)]);
    a.ok(&["import", s(&r0)]);
    // Two bundles on one stick: the second carries only what the first does not.
    let stick = base.join("stick");
    std::fs::create_dir(&stick).unwrap();
    hq.ok(&["put", "visits", "v-1", "n=1"]);
    hq.ok(&["export", s(&stick)]);
    let first = files(&stick);
    hq.ok(&["put", "visits", "v-1", "n=2"]);
    hq.ok(&["export", s(&stick)]);
    let second: Vec<_> = files(&stick)
        .into_iter()
        .filter(|f| !first.contains(f))
        .collect();
    assert_eq!((first.len(), second.len()), (1, 1));
    // The later bundle alone: its signature covers HQ's change A lacks, so it cannot be
    // checked, and nothing of it is used or kept.
    let out = a.ok(&["import", s(&second[0])]);
    assert!(out.starts_with("waiting"), "{out}");
    assert!(out.contains("cannot be checked yet"), "{out}");
    assert_eq!(a.status()["waiting_for_prerequisites"], 0);
    assert_eq!(a.status()["pending"], 0);
    let v = a.ok(&["verify", s(&second[0])]);
    assert!(v.contains("cannot be checked yet"), "{v}");
    assert!(!v.contains("intact"), "{v}");
    let v = a.ok(&["verify", s(&first[0])]);
    assert!(v.contains("signature valid"), "{v}");
    // The whole stick, in a later process: whatever order the files are read in, the later
    // bundle is tried again once the earlier one applied.
    a.ok(&["import", s(&stick)]);
    assert_eq!(
        a.ok(&["get", "visits", "v-1", "--json"]).trim(),
        r#"{"n":2}"#
    );
    let st = a.status();
    assert_eq!(
        (
            st["pending"].as_u64(),
            st["waiting_for_prerequisites"].as_u64()
        ),
        (Some(0), Some(0))
    );
}
