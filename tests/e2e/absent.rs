//! Issue 12, item 2: a member that stays away costs nothing. The dataset's history was
//! compacted before laptop M joined; M said hello once and went away for weeks. Every later
//! sync on HQ and on the clinics must write only what is new: M's snapshot goes on the
//! stick once (from the admin; nobody else's snapshot is ever installed), the changes on
//! top of it are not written again, and a sync where nothing changed writes nothing. When M
//! comes back, the one stick brings it everything.

use crate::util::*;
use std::path::Path;

const RECORDS: usize = 3_000;

/// How many lines of `out` announce a snapshot, and how many changes the other `wrote`
/// lines carry.
fn written(out: &str) -> (usize, u64) {
    let snapshots = out
        .lines()
        .filter(|l| l.starts_with("wrote") && l.contains("a snapshot"))
        .count();
    let changes = out
        .lines()
        .filter(|l| l.starts_with("wrote") && !l.contains("a snapshot"))
        .filter_map(|l| {
            let inner = l.rsplit_once(", ")?.1;
            match inner.split_whitespace().next()? {
                "1" => Some(1),
                n => n.parse().ok(),
            }
        })
        .sum();
    (snapshots, changes)
}

fn stick_bytes(stick: &Path) -> u64 {
    files(stick)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn a_member_away_for_weeks_costs_one_snapshot_and_then_only_what_is_new() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    let mut jsonl = String::new();
    for i in 0..RECORDS {
        jsonl.push_str(&format!(
            "{{\"id\":\"r{i:06}\",\"village\":\"village {}\",\"age\":{}}}\n",
            i % 97,
            i % 90
        ));
    }
    let input = base.join("visits.jsonl");
    std::fs::write(&input, jsonl).unwrap();
    hq.ok(&["load", "visits", s(&input)]);
    // Everyone gets everything, twice round, and the history is compacted everywhere (a
    // sync keeps the last month of it; `compact` drops it now, as a month later).
    for _ in 0..2 {
        for l in [&hq, &a, &b] {
            l.ok(&["sync", s(&stick)]);
        }
    }
    for l in [&hq, &a, &b] {
        l.ok(&["compact"]);
    }
    // M joins now, says hello on the stick once, and goes away.
    let code = hq.invite(&base.join("m.invite"), "clinic-m");
    let m = Laptop::new(base, "m");
    m.join("clinic-m", &base.join("m.invite"), code.as_deref());
    m.ok(&["sync", s(&stick)]);

    let mut snapshots = 0;
    let mut sizes = Vec::new();
    for round in 1..=4 {
        hq.ok(&[
            "put",
            "visits",
            &format!("new{round}"),
            &format!("age={round}"),
        ]);
        for (who, l) in [("hq", &hq), ("a", &a), ("b", &b)] {
            let out = l.ok(&["sync", s(&stick)]);
            let (snap, changes) = written(&out);
            snapshots += snap;
            if who != "hq" {
                assert_eq!(snap, 0, "only the admin writes snapshots:\n{out}");
            }
            // Only this round's one new record travels, plus receipts (0 changes); in the
            // first round HQ also sends its invitation of M and, having applied M's joining,
            // the record of which device it accepted as M (`_members`). (A bundle may also carry other
            // members' joinings for laptops invited later; they are not counted as its
            // changes, and the stick's growth below bounds them.)
            let new = if round == 1 && who == "hq" { 3 } else { 1 };
            assert!(
                changes <= new,
                "round {round}, {who} wrote {changes} changes again:\n{out}"
            );
        }
        sizes.push(stick_bytes(&stick));
    }
    assert_eq!(snapshots, 1, "M's snapshot is on the stick once");
    // After the first round the stick grows by receipts and one record a round, not by a
    // snapshot or the history again.
    for w in sizes.windows(2) {
        assert!(
            w[1] < w[0] + 4_096,
            "the stick grew from {} to {} bytes in one round",
            w[0],
            w[1]
        );
    }
    // Nothing changed: a sync writes nothing.
    for l in [&hq, &a, &b] {
        l.ok(&["sync", s(&stick)]);
    }
    let before = files(&stick);
    for l in [&hq, &a, &b] {
        let out = l.ok(&["sync", s(&stick)]);
        assert!(!out.contains("wrote"), "{out}");
    }
    assert_eq!(files(&stick), before);

    // M comes back: the stick brings it everything.
    m.ok(&["sync", s(&stick)]);
    let listed: serde_json::Value = serde_json::from_str(&m.list("visits")).unwrap();
    let count = listed.as_array().map(Vec::len);
    assert_eq!(count, Some(RECORDS + 4), "M holds {count:?} visits");
    assert!(m.ok(&["get", "visits", "new4"]).contains('4'));
    assert!(m.ok(&["get", "visits", "r002999"]).contains("village"));
}

/// Issue 12, item 6: a laptop that joins after a stick was written can apply it. HQ learned
/// of clinic M, loaded 20,000 visits and exported; X, invited afterwards, imports that
/// stick. The stick's changes depend on M's joining, which every member HQ knew already
/// had: the bundle carries it anyway (it is a few hundred bytes), so X holds every visit
/// at once and nothing waits.
#[test]
fn a_laptop_invited_after_the_stick_was_written_applies_it_at_once() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = Laptop::new(base, "hq");
    hq.ok(&["init", "--name", "hq", "--create", "clinic visits"]);
    let code = hq.invite(&base.join("m.invite"), "clinic-m");
    let m = Laptop::new(base, "m");
    m.join("clinic-m", &base.join("m.invite"), code.as_deref());
    let first = base.join("first");
    std::fs::create_dir_all(&first).unwrap();
    m.ok(&["sync", s(&first)]);
    hq.ok(&["sync", s(&first)]);
    let mut jsonl = String::new();
    for i in 0..20_000 {
        jsonl.push_str(&format!("{{\"id\":\"v{i:05}\",\"age\":{}}}\n", i % 90));
    }
    let input = base.join("visits.jsonl");
    std::fs::write(&input, jsonl).unwrap();
    hq.ok(&["load", "visits", s(&input)]);
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    hq.ok(&["export", s(&stick)]);

    let code = hq.invite(&base.join("x.invite"), "clinic-x");
    let x = Laptop::new(base, "x");
    x.join("clinic-x", &base.join("x.invite"), code.as_deref());
    let out = x.ok(&["import", s(&stick)]);
    assert!(!out.contains("waiting"), "{out}");
    let collections = x.ok(&["collections"]);
    assert!(collections.contains("20000"), "{collections}");
    assert_eq!(x.status()["waiting"], serde_json::json!([]));
    // It applied M's joining too: X knows M by name.
    let status = x.ok(&["status"]);
    assert!(status.contains("clinic-m"), "{status}");
}

/// Issue 12, item 6: what a bundle cannot carry cheaply (here clinic M's 300 visits, which
/// HQ's changes depend on) a laptop invited later waits for, and it says for whose changes
/// and where they come from, after `import` and in `status`; a stick HQ writes afterwards
/// brings them.
#[test]
fn a_laptop_that_waits_says_for_whose_changes_and_where_they_come_from() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = Laptop::new(base, "hq");
    hq.ok(&["init", "--name", "hq", "--create", "clinic visits"]);
    let code = hq.invite(&base.join("m.invite"), "clinic-m");
    let m = Laptop::new(base, "m");
    m.join("clinic-m", &base.join("m.invite"), code.as_deref());
    let mut jsonl = String::new();
    for i in 0..300 {
        jsonl.push_str(&format!(
            "{{\"id\":\"m{i:03}\",\"note\":\"seen at the clinic, {i}\"}}\n"
        ));
    }
    let input = base.join("m.jsonl");
    std::fs::write(&input, jsonl).unwrap();
    m.ok(&["load", "visits", s(&input)]);
    let first = base.join("first");
    std::fs::create_dir_all(&first).unwrap();
    m.ok(&["sync", s(&first)]);
    hq.ok(&["sync", s(&first)]);
    for i in 0..20 {
        hq.ok(&["put", "visits", &format!("v{i}"), "age=30"]);
    }
    let old = base.join("old");
    std::fs::create_dir_all(&old).unwrap();
    hq.ok(&["export", s(&old)]);

    // X is invited afterwards and finds the old stick.
    let code = hq.invite(&base.join("x.invite"), "clinic-x");
    let x = Laptop::new(base, "x");
    x.join("clinic-x", &base.join("x.invite"), code.as_deref());
    let out = x.ok(&["import", s(&old)]);
    let line = out
        .lines()
        .find(|l| l.starts_with("waiting") && l.contains("from hq"))
        .unwrap_or_else(|| panic!("no line says what waits:\n{out}"));
    assert!(
        line.contains("clinic-m's") && line.contains("sync a stick"),
        "{line}"
    );
    let status = x.ok(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("waiting") && l.contains("clinic-m")),
        "{status}"
    );
    let json = x.status();
    let waiting = &json["waiting"][0];
    assert_eq!(waiting["author"], "hq", "{json}");
    assert_eq!(waiting["needs"][0]["member"], "clinic-m", "{json}");

    // A stick HQ writes now carries what X lacks.
    let fresh = base.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    hq.ok(&["sync", s(&fresh)]);
    let out = x.ok(&["sync", s(&fresh)]);
    assert!(!out.contains("waiting"), "{out}");
    assert!(x.ok(&["get", "visits", "v19"]).contains("30"));
    assert!(x.ok(&["get", "visits", "m299"]).contains("clinic"));
    let json = x.status();
    assert_eq!(json["waiting"], serde_json::json!([]), "{json}");
}

/// Issue 13, item 1: `ferry status` and `ferry purge` name the member that holds back
/// compaction and purge — the one away — and not the one that is up to date.
#[test]
fn status_and_purge_name_the_member_that_holds_them_back() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    hq.ok(&["put", "visits", "v1", "age=30"]);
    exchange(&[&hq, &a, &b], &stick);
    // clinic-b goes away; hq deletes, clinic-a receives the delete.
    hq.ok(&["delete", "visits", "v1"]);
    for l in [&hq, &a, &hq] {
        l.ok(&["sync", s(&stick)]);
    }
    let held: Vec<u64> = hq.status()["held_back_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["member"].as_u64().unwrap())
        .collect();
    assert_eq!(held, vec![3], "only clinic-b is away");
    let status = hq.ok(&["status"]);
    let line = status
        .lines()
        .find(|l| l.starts_with("held back:"))
        .unwrap_or_else(|| panic!("no held back line: {status}"));
    assert!(
        line.contains("clinic-b (#3: lacks") && !line.contains("clinic-a"),
        "{line}"
    );
    let out = hq.ok(&["purge"]);
    assert!(
        out.contains("1 deleted records stay") && out.contains("waiting for clinic-b (#3"),
        "{out}"
    );
    assert!(!out.contains("clinic-a"), "{out}");
    // Once clinic-b is back and hq hears that it holds everything, nothing waits.
    exchange(&[&b, &hq, &a, &b, &hq], &stick);
    assert_eq!(hq.status()["held_back_by"], serde_json::json!([]));
    let out = hq.ok(&["purge"]);
    assert!(out.starts_with("Purged 1 deleted records"), "{out}");
    assert!(!hq.ok(&["status"]).contains("held back:"));
}
