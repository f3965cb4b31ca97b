//! Issue 12, item 5: `ferry sync DIR --dry-run` says what a sync would move and changes
//! nothing: not the stick, not the store, not the outbox.

use crate::util::*;
use std::path::{Path, PathBuf};

/// Every file below `dir` with its bytes.
fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Asserts that a folder holds the same files with the same bytes as before, naming them
/// (not dumping their bytes) when it does not.
fn unchanged(before: &[(PathBuf, Vec<u8>)], dir: &Path, what: &str) {
    let after = contents(dir);
    let names = |c: &[(PathBuf, Vec<u8>)]| {
        c.iter()
            .map(|(p, b)| format!("{} ({} B)", p.display(), b.len()))
            .collect::<Vec<_>>()
    };
    assert!(
        after == before,
        "{what} changed: before {:?}, after {:?}",
        names(before),
        names(&after)
    );
}

/// The changes and bytes in the dry run's `would write 1 bundle, N changes (B B)` line.
fn would_write(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("would write 1 bundle, "))
        .unwrap_or_else(|| panic!("no `would write` line in {out:?}"));
    let rest = line.strip_prefix("would write 1 bundle, ").unwrap();
    let (changes, bytes) = rest.split_once(" (").unwrap();
    let changes = changes.split_whitespace().next().unwrap().parse().unwrap();
    let bytes = bytes.strip_suffix(" B)").unwrap().parse().unwrap();
    (changes, bytes)
}

/// The changes and bytes in a real sync's `wrote PATH (B B, N changes)` line.
fn wrote(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("wrote") && !l.contains("snapshot"))
        .unwrap_or_else(|| panic!("no `wrote` line in {out:?}"));
    let inner = line.rsplit_once(" (").unwrap().1.strip_suffix(')').unwrap();
    let (bytes, changes) = inner.split_once(", ").unwrap();
    let bytes = bytes.strip_suffix(" B").unwrap().parse().unwrap();
    let changes = changes.split_whitespace().next().unwrap().parse().unwrap();
    (changes, bytes)
}

#[test]
fn sync_dry_run_lists_what_the_real_sync_then_does_and_changes_nothing() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    // Twice round: everyone holds everything, and HQ knows it.
    for l in [&hq, &a, &b, &hq, &a, &b, &hq] {
        l.ok(&["sync", s(&stick)]);
    }
    for i in 0..3 {
        hq.ok(&["put", "visits", &format!("v{i}"), &format!("age={i}")]);
    }
    let stick_before = contents(&stick);
    let home_before = contents(&hq.home.join("outbox"));
    let status_before = hq.ok(&["status", "--json"]);

    let dry = hq.ok(&["sync", s(&stick), "--dry-run"]);

    unchanged(&stick_before, &stick, "the stick");
    unchanged(&home_before, &hq.home.join("outbox"), "the outbox");
    assert_eq!(
        hq.ok(&["status", "--json"]),
        status_before,
        "the store changed"
    );
    assert!(
        !dry.contains("would import"),
        "nothing new to import: {dry}"
    );
    let (changes, bytes) = would_write(&dry);
    assert_eq!(changes, 3, "{dry}");
    for member in ["clinic-a", "clinic-b"] {
        assert!(
            dry.lines()
                .any(|l| l.starts_with(member)
                    && l.contains("lacks 3 changes; this sync would carry 3")),
            "{member} in {dry}"
        );
    }
    // The JSON says the same.
    let json: serde_json::Value =
        serde_json::from_str(&hq.ok(&["sync", s(&stick), "--dry-run", "--json"])).unwrap();
    assert_eq!(json["write"]["changes"], 3);
    assert_eq!(json["write"]["bytes"], bytes);
    unchanged(&stick_before, &stick, "the stick");

    // The real sync does what the dry run said, to the byte.
    let real = hq.ok(&["sync", s(&stick)]);
    assert_eq!(
        wrote(&real),
        (changes, bytes),
        "dry run:\n{dry}\nreal:\n{real}"
    );
    assert!(
        contents(&stick) != stick_before,
        "the real sync wrote nothing"
    );
    // Now the stick carries everything: the dry run says there is nothing to write.
    let again = hq.ok(&["export", s(&stick), "--dry-run"]);
    assert!(again.contains("would write nothing"), "{again}");
}

#[test]
fn sync_dry_run_names_a_bundle_it_would_import_and_applies_nothing() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, _b) = three(base);
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    for l in [&hq, &a, &hq] {
        l.ok(&["sync", s(&stick)]);
    }
    a.ok(&["put", "visits", "from-a", "age=41"]);
    a.ok(&["sync", s(&stick)]);
    let stick_before = contents(&stick);

    let dry = hq.ok(&["sync", s(&stick), "--dry-run"]);

    assert!(
        dry.lines()
            .any(|l| l.starts_with("would import 1 bundle (") && l.ends_with(") from clinic-a")),
        "{dry}"
    );
    unchanged(&stick_before, &stick, "the stick");
    assert!(
        !hq.run(&["get", "visits", "from-a"]).status.success(),
        "the dry run applied the record"
    );
    let json: serde_json::Value =
        serde_json::from_str(&hq.ok(&["sync", s(&stick), "--dry-run", "--json"])).unwrap();
    assert_eq!(json["import"].as_array().unwrap().len(), 1);
    assert_eq!(json["import"][0]["sender"], "clinic-a");

    let real = hq.ok(&["sync", s(&stick)]);
    assert!(hq.ok(&["get", "visits", "from-a"]).contains("41"), "{real}");
    // Applied now: a second dry run has nothing to import.
    assert!(
        !hq.ok(&["sync", s(&stick), "--dry-run"])
            .contains("would import")
    );
}

/// An outsider's forged bundle on the stick (issue 10's keyless snapshot, claiming to come
/// from HQ): the dry run names only what its header claims and says it is unchecked,
/// changes nothing, and the real sync refuses it.
#[test]
fn a_forged_bundle_is_named_as_its_header_claims_and_never_applied() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, _b) = three(base);
    hq.ok(&["put", "visits", "v1", "a=real"]);
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    hq.ok(&["sync", s(&stick)]);
    a.ok(&["sync", s(&stick)]);
    let folder = stick
        .join("ferry")
        .join(crate::forge::dataset_id(&a).to_hex());
    std::fs::write(
        folder.join("forged.ferry"),
        crate::forge::keyless_snapshot(&a),
    )
    .unwrap();
    let before = contents(&stick);
    let status = a.status();
    let dry = a.ok(&["sync", s(&stick), "--dry-run"]);
    assert!(
        dry.contains("would import 1 bundle") && dry.contains("checks each signature"),
        "{dry}"
    );
    unchanged(&before, &stick, "the stick");
    assert_eq!(a.status(), status);
    let out = a.run(&["sync", s(&stick)]);
    assert!(!out.status.success(), "the forgery is refused");
    assert!(a.ok(&["get", "visits", "v1"]).contains("real"));
}
