//! Issue 11, item 1: a delete crossed by an edit keeps the whole record. Laptop A deletes
//! visits/v1 (a, b, c) while laptop B, not having seen the delete, sets c = 9: afterwards
//! every laptop shows a and b as they stood when the delete was made, plus c = 9, and lists
//! the pair as a `(record)` conflict. The values the delete removed (ghosts) are kept with
//! the record until `ferry purge`, travel in the admin's snapshots (bundle format version
//! 3), survive `ferry compact`, and are what `ferry restore` brings back.

use crate::util::{Laptop, conflicts, exchange, files, s, three};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The bundle format version of a snapshot that holds ghosts here: 3 and later carry them
/// (bundles/SPEC.md §13); every laptop of these tests reads version 11, so it is that
/// (§17.2).
const GHOSTS_VERSION: u8 = 11;

/// One `ferry sync DIR`; returns its output.
fn sync(l: &Laptop, dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    l.ok(&["sync", s(dir)])
}

/// `ferry get visits ID --json`, parsed.
fn record(l: &Laptop, id: &str) -> Value {
    serde_json::from_str(&l.ok(&["get", "visits", id, "--json"])).unwrap()
}

/// The ids `ferry list visits --json` shows.
fn listed(l: &Laptop) -> Vec<String> {
    let all: Value = serde_json::from_str(&l.list("visits")).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// The record A deleted and B edited, as every laptop must show it.
fn whole() -> Value {
    json!({"a": 1, "b": 2, "c": 9})
}

/// Asserts `l` shows no record `visits/ID` (get fails, list does not show it).
fn assert_gone(l: &Laptop, id: &str, what: &str) {
    let (_, err) = l.fails(&["get", "visits", id]);
    assert!(
        err.contains(&format!("no record \"{id}\"")),
        "{what}, {}: {err}",
        l.home.display()
    );
    assert!(
        !listed(l).contains(&id.to_string()),
        "{what}, {}: listed",
        l.home.display()
    );
}

/// Asserts the only conflict `l` lists is visits/v1 `(record)`: deleted by `deleter`, kept
/// by `keeper`'s edit, shown kept.
fn assert_record_conflict(l: &Laptop, id: &str, deleter: &str, keeper: &str, what: &str) {
    let c = conflicts(l);
    let who = l.home.display();
    let list = c.as_array().unwrap();
    assert_eq!(list.len(), 1, "{what}, {who}: {c}");
    assert_eq!(list[0]["collection"], "visits", "{what}, {who}: {c}");
    assert_eq!(list[0]["id"], id, "{what}, {who}: {c}");
    assert_eq!(list[0]["field"], "(record)", "{what}, {who}: {c}");
    assert_eq!(list[0]["winner"], "kept", "{what}, {who}: {c}");
    let mut values: Vec<(String, String)> = list[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap().to_string(),
                v["author"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    values.sort();
    assert_eq!(
        values,
        vec![
            ("deleted".to_string(), deleter.to_string()),
            ("kept".to_string(), keeper.to_string())
        ],
        "{what}, {who}: {c}"
    );
}

/// Asserts `l` shows the whole revived record and lists the `(record)` conflict.
fn assert_revived(l: &Laptop, what: &str) {
    assert_eq!(record(l, "v1"), whole(), "{what}, {}", l.home.display());
    assert!(listed(l).contains(&"v1".to_string()), "{what}");
    assert_record_conflict(l, "v1", "clinic-a", "clinic-b", what);
}

/// Three laptops holding visits/v1 {a: 1, b: 2, c: 3} (written by HQ) and visits/v2 (so the
/// collection stays when v1 is purged), everyone having seen both; then, offline, A deletes
/// v1 and B sets c = 9 on it. Nothing has travelled since.
fn crossed(base: &Path) -> (Laptop, Laptop, Laptop) {
    let (hq, a, b) = three(base);
    hq.ok(&["put", "visits", "v1", "a=1", "b=2", "c=3"]);
    hq.ok(&["put", "visits", "v2", "village=Obunga"]);
    exchange(&[&hq, &a, &b], &base.join("first"));
    for l in [&hq, &a, &b] {
        assert_eq!(record(l, "v1"), json!({"a": 1, "b": 2, "c": 3}));
    }
    a.ok(&["delete", "visits", "v1"]);
    b.ok(&["put", "visits", "v1", "c=9"]);
    assert_gone(&a, "v1", "A deleted it");
    assert_eq!(record(&b, "v1"), json!({"a": 1, "b": 2, "c": 9}));
    assert_eq!(conflicts(&b), json!([]), "B's edit alone is no conflict");
    (hq, a, b)
}

/// The scenario in four delivery orders; every laptop ends with the whole record
/// (a and b as they stood when deleted, c = 9 from the edit: the old c = 3 was seen by the
/// edit and is gone) and a `(record)` conflict, and each laptop that has received the delete
/// and the edit, in whichever order, already shows it so.
#[test]
fn a_delete_crossed_by_an_edit_shows_the_whole_record_in_every_delivery_order() {
    for order in [
        "A, B, HQ on one stick",
        "B, A, HQ on one stick",
        "HQ gets the edit before the delete",
        "HQ gets the delete before the edit",
    ] {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let (hq, a, b) = crossed(base);
        let stick = base.join("stick");
        match order {
            "A, B, HQ on one stick" => {
                sync(&a, &stick);
                // B gets the delete after its own edit.
                sync(&b, &stick);
                assert_revived(&b, order);
                sync(&hq, &stick);
                assert_revived(&hq, order);
                // A gets the edit after its own delete.
                sync(&a, &stick);
                assert_revived(&a, order);
            }
            "B, A, HQ on one stick" => {
                sync(&b, &stick);
                sync(&a, &stick);
                assert_revived(&a, order);
                sync(&hq, &stick);
                assert_revived(&hq, order);
                sync(&b, &stick);
                assert_revived(&b, order);
            }
            "HQ gets the edit before the delete" => {
                let (s1, s2) = (base.join("s1"), base.join("s2"));
                sync(&b, &s1);
                sync(&hq, &s1);
                assert_eq!(record(&hq, "v1"), whole(), "{order}: the edit alone");
                assert_eq!(conflicts(&hq), json!([]), "{order}: the edit alone");
                sync(&a, &s2);
                sync(&hq, &s2);
                assert_revived(&hq, order);
                // A gets the edit from HQ's bundle, B the delete.
                assert_gone(&a, "v1", order);
                sync(&a, &s2);
                assert_revived(&a, order);
                sync(&b, &s2);
                assert_revived(&b, order);
            }
            "HQ gets the delete before the edit" => {
                let (s1, s2) = (base.join("s1"), base.join("s2"));
                sync(&a, &s1);
                sync(&hq, &s1);
                assert_gone(&hq, "v1", order);
                sync(&b, &s2);
                sync(&hq, &s2);
                assert_revived(&hq, order);
                // B gets the delete from HQ's bundle, A the edit.
                assert_eq!(conflicts(&b), json!([]), "{order}");
                sync(&b, &s2);
                assert_revived(&b, order);
                sync(&a, &s2);
                assert_revived(&a, order);
            }
            _ => unreachable!(),
        }
        exchange(&[&hq, &a, &b], &stick);
        let all = hq.list("visits");
        for l in [&hq, &a, &b] {
            assert_revived(l, order);
            assert_eq!(l.list("visits"), all, "{order}");
            assert_eq!(record(l, "v2"), json!({"village": "Obunga"}), "{order}");
        }
    }
}

/// HQ's visits/v1 with a counter (5 from HQ, 2 from A) and a set ({hiv, tb}), seen by
/// everyone; then A deletes it while B, not having seen that, increments the counter by 1
/// and changes the set with `b_set` (`add`/`remove`, element); everything is exchanged.
fn crossed_counter_and_set(base: &Path, b_set: [&str; 2]) -> (Laptop, Laptop, Laptop, PathBuf) {
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    hq.ok(&["rule", "set", "visits", "nets", "counter"]);
    hq.ok(&["rule", "set", "visits", "tags", "set"]);
    hq.ok(&["put", "visits", "v1", "a=1"]);
    hq.ok(&["incr", "visits", "v1", "nets", "5"]);
    hq.ok(&["add", "visits", "v1", "tags", "tb", "hiv"]);
    exchange(&[&hq, &a, &b], &stick);
    a.ok(&["incr", "visits", "v1", "nets", "2"]);
    exchange(&[&a, &b, &hq], &stick);
    assert_eq!(
        record(&b, "v1"),
        json!({"a": 1, "nets": 7, "tags": ["hiv", "tb"]})
    );
    a.ok(&["delete", "visits", "v1"]);
    b.ok(&["incr", "visits", "v1", "nets", "1"]);
    b.ok(&[b_set[0], "visits", "v1", "tags", b_set[1]]);
    exchange(&[&a, &b, &hq], &stick);
    (hq, a, b, stick)
}

/// Counters and sets come back too: a counter incremented on two laptops and a set's
/// elements, removed by A's delete, show again (the sum and the elements as they stood,
/// with B's crossing increment and removal) on every laptop; deleting again removes it all.
#[test]
fn counters_and_sets_a_delete_removed_show_again_when_an_edit_crosses_it() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b, stick) = crossed_counter_and_set(base, ["remove", "hiv"]);
    for l in [&hq, &a, &b] {
        assert_eq!(
            record(l, "v1"),
            json!({"a": 1, "nets": 8, "tags": ["tb"]}),
            "{}",
            l.home.display()
        );
        assert_record_conflict(l, "v1", "clinic-a", "clinic-b", "counter and set");
    }
    b.ok(&["delete", "visits", "v1"]);
    exchange(&[&b, &a, &hq], &stick);
    for l in [&hq, &a, &b] {
        assert_gone(l, "v1", "deleted again");
        assert_eq!(conflicts(l), json!([]));
    }
}

/// A write that saw the delete and the edit keeps the whole record also when the crossing
/// edit wrote to a counter or a set: HQ's `put visits v1 d=4` must keep the counter's sum
/// (5 + 2 from before the delete, + 1 from B) and every element ({hiv, tb} from before,
/// malaria from B).
#[test]
fn a_settling_write_keeps_counters_and_sets_the_crossing_edit_also_wrote_to() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b, stick) = crossed_counter_and_set(base, ["add", "malaria"]);
    let revived = json!({"a": 1, "nets": 8, "tags": ["hiv", "malaria", "tb"]});
    for l in [&hq, &a, &b] {
        assert_eq!(record(l, "v1"), revived, "{}", l.home.display());
    }
    hq.ok(&["put", "visits", "v1", "d=4"]);
    let settled = json!({"a": 1, "d": 4, "nets": 8, "tags": ["hiv", "malaria", "tb"]});
    assert_eq!(record(&hq, "v1"), settled, "on HQ, at once");
    exchange(&[&hq, &a, &b], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(record(l, "v1"), settled, "{}", l.home.display());
        assert_eq!(conflicts(l), json!([]), "{}", l.home.display());
    }
}

/// A field in conflict before the delete (age 31 from A, 32 from B) is still in conflict
/// in the revived record. A write that ends the delete/edit conflict (HQ's `put visits v1
/// d=4`) keeps the record as HQ saw it, so the age comes back with the value it showed, as
/// `ferry restore` brings a conflicted field back (README, "Deletes"): one version 1 commit
/// cannot write two concurrent values again. Both stay in `ferry log`.
#[test]
fn a_write_ending_a_revival_keeps_a_field_that_was_in_conflict_with_the_value_it_showed() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    hq.ok(&["put", "visits", "v1", "a=1", "age=30"]);
    exchange(&[&hq, &a, &b], &stick);
    a.ok(&["put", "visits", "v1", "age=31"]);
    b.ok(&["put", "visits", "v1", "age=32"]);
    exchange(&[&a, &b, &hq], &stick);
    a.ok(&["delete", "visits", "v1"]);
    b.ok(&["put", "visits", "v1", "c=9"]);
    exchange(&[&a, &b, &hq], &stick);
    let fields = |l: &Laptop| -> Vec<String> {
        let mut f: Vec<String> = conflicts(l)
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap().to_string())
            .collect();
        f.sort();
        f
    };
    for l in [&hq, &a, &b] {
        assert_eq!(record(l, "v1"), json!({"a": 1, "age": 32, "c": 9}));
        assert_eq!(fields(l), ["(record)", "age"], "{}", l.home.display());
    }
    hq.ok(&["put", "visits", "v1", "d=4"]);
    exchange(&[&hq, &a, &b], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(record(l, "v1"), json!({"a": 1, "age": 32, "c": 9, "d": 4}));
        assert!(fields(l).is_empty(), "{}", l.home.display());
        let log = l.ok(&["log", "visits", "v1"]);
        assert!(
            log.contains("age: 30 → 31") && log.contains("age: 30 → 32"),
            "both values stay in the history: {log}"
        );
    }
}

/// Deleting the revived record again, having seen the edit, removes it everywhere (and a
/// laptop that receives that delete together with the first one and the edit agrees).
#[test]
fn deleting_the_revived_record_again_removes_it_everywhere() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = crossed(base);
    let stick = base.join("stick");
    // A and B exchange; HQ stays away.
    let pair = base.join("pair");
    exchange(&[&a, &b], &pair);
    assert_revived(&a, "A and B");
    assert_revived(&b, "A and B");
    a.ok(&["delete", "visits", "v1"]);
    assert_gone(&a, "v1", "deleted again");
    assert_eq!(
        conflicts(&a),
        json!([]),
        "nothing crosses the second delete"
    );
    // HQ receives the first delete, the edit and the second delete at once.
    exchange(&[&a, &b], &pair);
    sync(&hq, &pair);
    exchange(&[&hq, &a, &b], &stick);
    for l in [&hq, &a, &b] {
        assert_gone(l, "v1", "deleted again");
        assert_eq!(conflicts(l), json!([]), "{}", l.home.display());
        assert_eq!(record(l, "v2"), json!({"village": "Obunga"}));
    }
}

/// A write by someone who has seen both the delete and the edit ends the conflict and keeps
/// the whole record: HQ's `put visits v1 d=4` writes a and b again, so afterwards no laptop
/// lists a `(record)` conflict and all show a, b, c = 9, d = 4. The fields are real writes
/// then: a later delete removes the record with nothing crossing it, and a record created
/// again after that starts without them.
#[test]
fn a_write_that_saw_the_delete_and_the_edit_ends_the_conflict_and_keeps_every_field() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = crossed(base);
    let stick = base.join("stick");
    exchange(&[&a, &b, &hq], &stick);
    for l in [&hq, &a, &b] {
        assert_revived(l, "before HQ's write");
    }
    let out = hq.ok(&["put", "visits", "v1", "d=4"]);
    assert!(!out.starts_with("unchanged"), "{out}");
    let full = json!({"a": 1, "b": 2, "c": 9, "d": 4});
    assert_eq!(record(&hq, "v1"), full);
    assert_eq!(conflicts(&hq), json!([]), "HQ's write settled it here");
    // Before HQ's write arrives the others still show the revived record with its conflict.
    assert_revived(&a, "before HQ's write arrives");
    exchange(&[&hq, &a, &b], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(record(l, "v1"), full, "{}", l.home.display());
        assert_eq!(conflicts(l), json!([]), "{}", l.home.display());
    }
    // The fields are real writes now: a delete by anyone removes the record, nothing
    // crosses it, and a later edit that saw that delete does not bring a, b or c back.
    b.ok(&["delete", "visits", "v1"]);
    exchange(&[&b, &a, &hq], &stick);
    for l in [&hq, &a, &b] {
        assert_gone(l, "v1", "deleted after the conflict was settled");
        assert_eq!(conflicts(l), json!([]));
    }
    a.ok(&["put", "visits", "v1", "e=5"]);
    exchange(&[&a, &b, &hq], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(record(l, "v1"), json!({"e": 5}), "{}", l.home.display());
        assert_eq!(conflicts(l), json!([]));
    }
}

/// The settling write and a second delete cross: A deletes the revived record again (having
/// seen the edit, not HQ's write) while HQ writes d = 4. HQ's write did not see that delete,
/// so it keeps the record, and the record shows what the delete removed (c = 9) with HQ's
/// values: a, b, c = 9, d = 4 everywhere, in both delivery orders, listed as a `(record)`
/// conflict between clinic-a's delete and HQ's write.
#[test]
fn a_second_delete_crossing_the_settling_write_still_keeps_the_whole_record() {
    for first in ["B gets the delete first", "B gets the write first"] {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let (hq, a, b) = crossed(base);
        let stick = base.join("stick");
        exchange(&[&a, &b, &hq], &stick);
        hq.ok(&["put", "visits", "v1", "d=4"]);
        a.ok(&["delete", "visits", "v1"]);
        let (s1, s2) = (base.join("s1"), base.join("s2"));
        if first == "B gets the delete first" {
            sync(&a, &s1);
            sync(&b, &s1);
            sync(&b, &s2);
            sync(&hq, &s2);
        } else {
            sync(&hq, &s1);
            sync(&b, &s1);
            sync(&b, &s2);
            sync(&a, &s2);
        }
        exchange(&[&hq, &a, &b], &stick);
        for l in [&hq, &a, &b] {
            assert_eq!(
                record(l, "v1"),
                json!({"a": 1, "b": 2, "c": 9, "d": 4}),
                "{first}, {}",
                l.home.display()
            );
            assert_record_conflict(l, "v1", "clinic-a", "hq", first);
        }
    }
}

/// `ferry compact` keeps the revival: A and HQ compact history (HQ's writing of v1) while
/// B's edit is still off the stick; when the edit arrives they show the whole record; after
/// everyone compacts (and purges: the revived record is live) it still shows whole, and a
/// write by HQ then settles it with every field kept.
#[test]
fn compaction_keeps_what_the_delete_removed() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = crossed(base);
    let stick = base.join("stick");
    // A's delete reaches HQ; B stays away with its edit.
    exchange(&[&a, &hq], &stick);
    for l in [&hq, &a] {
        let out = l.ok(&["compact"]);
        assert!(
            out.starts_with("Compacted") && !out.starts_with("Compacted 0 "),
            "{}: {out}",
            l.home.display()
        );
        assert_gone(l, "v1", "before the edit arrives");
        let log = l.ok(&["log", "visits", "v1"]);
        assert!(log.contains("compacted away"), "{log}");
    }
    // B comes back: HQ and A get the edit only now, after their history was compacted.
    sync(&b, &stick);
    assert_revived(&b, "B got the delete");
    sync(&hq, &stick);
    assert_revived(&hq, "HQ got the edit after compacting");
    sync(&a, &stick);
    assert_revived(&a, "A got the edit after compacting");
    exchange(&[&hq, &a, &b], &stick);
    for l in [&hq, &a, &b] {
        l.ok(&["compact"]);
        assert_revived(l, "after everyone compacted");
    }
    for l in [&hq, &a, &b] {
        let out = l.ok(&["purge"]);
        assert!(out.starts_with("Purged 0 deleted records"), "{out}");
        assert_revived(l, "after purge (the record is live)");
    }
    hq.ok(&["put", "visits", "v1", "d=4"]);
    exchange(&[&hq, &a, &b], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(
            record(l, "v1"),
            json!({"a": 1, "b": 2, "c": 9, "d": 4}),
            "{}",
            l.home.display()
        );
        assert_eq!(conflicts(l), json!([]), "{}", l.home.display());
    }
}

/// The path of the snapshot a `sync`'s output says it wrote, if any.
fn snapshot_written(out: &str) -> Option<PathBuf> {
    out.lines()
        .filter(|l| l.starts_with("wrote") && l.contains("a snapshot"))
        .map(|l| {
            let rest = l.strip_prefix("wrote").unwrap().trim_start();
            PathBuf::from(rest.rsplit_once(" (").unwrap().0)
        })
        .next()
}

/// The first two bytes of a file: `F` (a sealed bundle) and the bundle format version.
fn magic(p: &Path) -> [u8; 2] {
    let bytes = std::fs::read(p).unwrap();
    assert!(bytes.len() >= 2, "{}", p.display());
    [bytes[0], bytes[1]]
}

/// The first two bytes of every `.ferry` file under `dir` but `except`.
fn magics_but(dir: &Path, except: Option<&Path>) -> Vec<[u8; 2]> {
    files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ferry") && Some(p.as_path()) != except)
        .map(|p| magic(&p))
        .collect()
}

/// A laptop that joined from the admin's snapshot.
struct Joined {
    x: Laptop,
    /// The snapshot's first two bytes, read as soon as HQ wrote it.
    head: [u8; 2],
    /// The first two bytes of every other bundle in X's folder then.
    others: Vec<[u8; 2]>,
}

/// Invites clinic-x (HQ's history must be compacted everywhere already, so it needs a
/// snapshot) and brings it up to date through a folder of its own, `x-stick` (the shared
/// stick may still hold bundles carrying the whole history, which X would apply instead):
/// X says hello there, HQ writes its snapshot there, X installs it.
fn join_from_snapshot(base: &Path, hq: &Laptop) -> Joined {
    let inv = base.join("x.invite");
    let code = hq.invite(&inv, "clinic-x");
    let x = Laptop::new(base, "x");
    x.join("clinic-x", &inv, code.as_deref());
    let folder = base.join("x-stick");
    sync(&x, &folder);
    let out = sync(hq, &folder);
    let snapshot = snapshot_written(&out).unwrap_or_else(|| panic!("HQ wrote no snapshot:\n{out}"));
    let head = magic(&snapshot);
    let others = magics_but(&folder, Some(&snapshot));
    let installed = sync(&x, &folder);
    assert!(
        installed.contains("installed a snapshot"),
        "X installed no snapshot:\n{installed}"
    );
    Joined { x, head, others }
}

/// A laptop invited later joins from the admin's snapshot, which holds v1 deleted
/// by A with what the delete removed (so it is written as format version 3 or later: here
/// 11, which every laptop reads); B's crossing edit reaches the newcomer only after it
/// installed the snapshot, and it shows the whole record like the others. (No
/// other record carries fields a, b or c: installing failed with "no local name for a"
/// before the store named ghosts' and first values' fields too.)
#[test]
fn a_laptop_that_joins_from_a_snapshot_with_ghosts_shows_the_whole_record() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = crossed(base);
    let stick = base.join("stick");
    // A's delete reaches HQ; B stays away with its edit. History is compacted at HQ and A
    // (B holds HQ's writing of v1 and v2: they are compacted too).
    exchange(&[&a, &hq], &stick);
    for l in [&hq, &a] {
        let out = l.ok(&["compact"]);
        assert!(!out.starts_with("Compacted 0 "), "{out}");
    }
    let Joined { x, head, others } = join_from_snapshot(base, &hq);
    assert_eq!(
        head,
        [b'F', GHOSTS_VERSION],
        "a snapshot holding ghosts is format version 3 or later"
    );
    assert!(!others.is_empty());
    for m in others.iter().chain(&magics_but(&stick, None)) {
        // Version 1, or 11 from a laptop that knows every member reads it (a laptop just
        // joined does not know yet).
        assert!(
            *m == [b'F', 1] || *m == [b'F', 11],
            "ordinary bundles are version 1 or 11: {m:?}"
        );
    }
    assert_gone(&x, "v1", "X holds the delete from the snapshot");
    assert_eq!(record(&x, "v2"), json!({"village": "Obunga"}));
    // B comes back; the edit reaches X only now, after the snapshot.
    sync(&b, &stick);
    let out = sync(&x, &stick);
    assert!(!out.contains("waiting"), "{out}");
    assert_revived(&x, "X got the edit after installing the snapshot");
    exchange(&[&hq, &a, &b, &x], &stick);
    let all = hq.list("visits");
    for l in [&hq, &a, &b, &x] {
        assert_revived(l, "after everyone exchanged");
        assert_eq!(l.list("visits"), all);
    }
    // X settles it with a write; everyone keeps every field.
    x.ok(&["put", "visits", "v1", "d=4"]);
    exchange(&[&x, &hq, &a, &b], &stick);
    for l in [&hq, &a, &b, &x] {
        assert_eq!(
            record(l, "v1"),
            json!({"a": 1, "b": 2, "c": 9, "d": 4}),
            "{}",
            l.home.display()
        );
        assert_eq!(conflicts(l), json!([]), "{}", l.home.display());
    }
}

/// The admin's snapshot taken when the revival is already in place carries it whole: the
/// newcomer shows a, b, c = 9 and the `(record)` conflict at once, and `restore` there
/// (after a delete everyone saw, and compaction) brings the whole record back from the
/// snapshot's ghosts.
#[test]
fn a_snapshot_taken_after_the_revival_carries_the_whole_record() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = crossed(base);
    let stick = base.join("stick");
    exchange(&[&a, &b, &hq], &stick);
    for l in [&hq, &a, &b] {
        l.ok(&["compact"]);
    }
    let Joined { x, head, .. } = join_from_snapshot(base, &hq);
    assert_eq!(head, [b'F', GHOSTS_VERSION], "the snapshot holds ghosts");
    assert_revived(&x, "X installed the snapshot");
    // Deleted again by A, seen by everyone (X too); X restores it from what it holds.
    exchange(&[&hq, &a, &b, &x], &stick);
    a.ok(&["delete", "visits", "v1"]);
    exchange(&[&a, &hq, &b, &x], &stick);
    assert_gone(&x, "v1", "deleted again");
    x.ok(&["compact"]);
    let out = x.ok(&["restore", "visits", "v1"]);
    assert!(out.contains("before clinic-a deleted it"), "{out}");
    exchange(&[&x, &hq, &a, &b], &stick);
    for l in [&hq, &a, &b, &x] {
        assert_eq!(record(l, "v1"), whole(), "{}", l.home.display());
        assert_eq!(conflicts(l), json!([]), "{}", l.home.display());
    }
}

/// Control: a snapshot whose records hold no ghosts (nothing was ever deleted) is written
/// in the version every laptop here reads (11; version 1 where one does not), as HQ's
/// other bundles are.
#[test]
fn a_snapshot_without_ghosts_has_the_version_of_every_other_bundle() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    hq.ok(&["put", "visits", "v1", "a=1", "b=2", "c=3"]);
    exchange(&[&hq, &a, &b], &stick);
    a.ok(&["put", "visits", "v1", "c=4"]);
    exchange(&[&a, &b, &hq], &stick);
    for l in [&hq, &a, &b] {
        l.ok(&["compact"]);
    }
    let Joined { x, head, others } = join_from_snapshot(base, &hq);
    assert_eq!(
        head,
        [b'F', 11],
        "no ghosts: the version every laptop reads"
    );
    for m in &others {
        assert!(*m == [b'F', 1] || *m == [b'F', 11], "{m:?}");
    }
    assert_eq!(record(&x, "v1"), json!({"a": 1, "b": 2, "c": 4}));
}

/// A record deleted, created again and then purged (the old values' ghosts forgotten)
/// keeps, in its state, the first value its old field ever had (for the `first` rule); the
/// admin's snapshot carries that, and a laptop invited later must still be able to install
/// it and see only the new record.
#[test]
fn a_laptop_joining_after_a_recreated_record_was_purged_installs_the_snapshot() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    hq.ok(&["put", "visits", "v1", "a=1"]);
    hq.ok(&["put", "visits", "v2", "village=Obunga"]);
    exchange(&[&hq, &a, &b], &stick);
    a.ok(&["delete", "visits", "v1"]);
    exchange(&[&a, &b, &hq], &stick);
    hq.ok(&["put", "visits", "v1", "x=5"]);
    exchange(&[&hq, &a, &b], &stick);
    for l in [&hq, &a, &b] {
        l.ok(&["purge"]);
        assert_eq!(record(l, "v1"), json!({"x": 5}));
    }
    let Joined { x, .. } = join_from_snapshot(base, &hq);
    assert_eq!(record(&x, "v1"), json!({"x": 5}));
    assert_eq!(record(&x, "v2"), json!({"village": "Obunga"}));
}

/// A record created again by someone who saw its delete does not bring back the old
/// fields — not when it is created, and not when the new record is then deleted on one
/// laptop while edited on another (only the new fields and the edit show), nor when it is
/// restored after that: what comes back is the new record.
#[test]
fn a_record_created_again_after_its_delete_never_shows_the_old_fields() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    hq.ok(&["put", "visits", "v1", "a=1", "b=2", "c=3"]);
    hq.ok(&["put", "visits", "v2", "village=Obunga"]);
    exchange(&[&hq, &a, &b], &stick);
    a.ok(&["delete", "visits", "v1"]);
    exchange(&[&a, &b, &hq], &stick);
    for l in [&hq, &a, &b] {
        assert_gone(l, "v1", "deleted");
    }
    b.ok(&["put", "visits", "v1", "x=5"]);
    assert_eq!(record(&b, "v1"), json!({"x": 5}));
    exchange(&[&b, &a, &hq], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(record(l, "v1"), json!({"x": 5}), "{}", l.home.display());
        assert_eq!(conflicts(l), json!([]));
    }
    // The new record: A deletes it while HQ (having seen it) edits it.
    a.ok(&["delete", "visits", "v1"]);
    hq.ok(&["put", "visits", "v1", "y=6"]);
    exchange(&[&a, &b, &hq], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(
            record(l, "v1"),
            json!({"x": 5, "y": 6}),
            "{}",
            l.home.display()
        );
        assert_record_conflict(l, "v1", "clinic-a", "hq", "re-created, deleted and edited");
    }
    for l in [&hq, &a, &b] {
        l.ok(&["compact"]);
        assert_eq!(record(l, "v1"), json!({"x": 5, "y": 6}), "after compact");
    }
    // Deleted again (seen by all), then restored: the new record comes back, not a, b, c.
    b.ok(&["delete", "visits", "v1"]);
    exchange(&[&b, &a, &hq], &stick);
    hq.ok(&["compact"]);
    let out = hq.ok(&["restore", "visits", "v1"]);
    assert!(out.contains("before clinic-b deleted it"), "{out}");
    exchange(&[&hq, &a, &b], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(
            record(l, "v1"),
            json!({"x": 5, "y": 6}),
            "{}",
            l.home.display()
        );
        assert_eq!(conflicts(l), json!([]));
    }
}

/// `ferry restore` after `ferry compact` brings the revived-then-deleted record back whole
/// (a, b as they were, c = 9), as a change everyone applies; `ferry purge`, once every
/// member has seen a delete, drops the record for good: `restore` then says there is no
/// such record, and a new record of that id starts empty. A delete not every member has
/// seen is not purged.
#[test]
fn restore_after_compaction_brings_the_whole_record_back_and_purge_drops_it_for_good() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = crossed(base);
    let stick = base.join("stick");
    exchange(&[&a, &b, &hq], &stick);
    a.ok(&["delete", "visits", "v1"]);
    exchange(&[&a, &b, &hq], &stick);
    for l in [&hq, &a, &b] {
        assert_gone(l, "v1", "deleted again");
        let out = l.ok(&["compact"]);
        assert!(out.starts_with("Compacted"), "{out}");
        let log = l.ok(&["log", "visits", "v1"]);
        assert!(log.contains("compacted away"), "{log}");
    }
    let out = b.ok(&["restore", "visits", "v1"]);
    assert!(
        out.contains("Restored visits/v1") && out.contains("before clinic-a deleted it"),
        "{out}"
    );
    assert_eq!(record(&b, "v1"), whole());
    let (_, err) = b.fails(&["restore", "visits", "v1"]);
    assert!(err.contains("is not deleted"), "{err}");
    exchange(&[&b, &a, &hq], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(record(l, "v1"), whole(), "{}", l.home.display());
        assert_eq!(
            conflicts(l),
            json!([]),
            "restored by one who saw everything"
        );
    }

    // A delete only A and HQ have seen is not purged; restore still works from it.
    hq.ok(&["put", "visits", "v3", "n=1"]);
    exchange(&[&hq, &a, &b], &stick);
    a.ok(&["delete", "visits", "v3"]);
    let pair = base.join("pair");
    exchange(&[&a, &hq], &pair);
    let out = hq.ok(&["purge"]);
    assert!(
        out.starts_with("Purged 0 deleted records") && out.contains("1 deleted records stay"),
        "{out}"
    );

    // Deleted once more; once every member has seen it, purge drops it.
    hq.ok(&["delete", "visits", "v1"]);
    exchange(&[&hq, &a, &b], &stick);
    exchange(&[&hq, &a, &b], &pair);
    for l in [&hq, &a, &b] {
        let out = l.ok(&["purge"]);
        assert!(
            out.starts_with("Purged 2 deleted records"),
            "{}: {out}",
            l.home.display()
        );
        assert_gone(l, "v1", "purged");
        let (_, err) = l.fails(&["restore", "visits", "v1"]);
        assert!(
            err.contains("no record \"v1\" in collection \"visits\""),
            "{}: {err}",
            l.home.display()
        );
        assert_eq!(record(l, "v2"), json!({"village": "Obunga"}));
    }
    a.ok(&["put", "visits", "v1", "z=1"]);
    exchange(&[&a, &b, &hq], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(record(l, "v1"), json!({"z": 1}), "{}", l.home.display());
        assert_eq!(conflicts(l), json!([]));
    }
}

/// Issue 11 item 3 on a revived record: reloading a dump of it changes nothing and keeps
/// the delete/edit conflict for a person; a reload that changes one field keeps the whole
/// record (and ends the conflict, as any real edit does).
#[test]
fn reloading_a_dump_of_a_revived_record_writes_nothing_and_keeps_the_conflict() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = crossed(base);
    let stick = base.join("stick");
    exchange(&[&a, &b, &hq], &stick);
    let dump = base.join("visits.jsonl");
    std::fs::write(&dump, hq.ok(&["dump", "visits"])).unwrap();
    let out = hq.ok(&["load", "visits", s(&dump)]);
    assert!(out.contains("0 changed, 2 unchanged"), "{out}");
    assert_eq!(
        conflicts(&hq).as_array().unwrap().len(),
        1,
        "still for a person"
    );
    let edited = std::fs::read_to_string(&dump)
        .unwrap()
        .replace("\"c\":9", "\"c\":10");
    assert!(edited.contains("\"c\":10"), "{edited}");
    std::fs::write(&dump, edited).unwrap();
    let out = hq.ok(&["load", "visits", s(&dump)]);
    assert!(out.contains("1 changed, 1 unchanged"), "{out}");
    exchange(&[&hq, &a, &b], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(record(l, "v1"), json!({"a": 1, "b": 2, "c": 10}));
        assert_eq!(conflicts(l), json!([]), "{}", l.home.display());
    }
}
