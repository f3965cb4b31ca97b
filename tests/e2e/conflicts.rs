//! Conflicts people can see and resolve, merge rules, deletes — through the real CLI and
//! folders.

use crate::util::{Laptop, conflicts, exchange, files, s, three};

/// Everyone exports into `dir` and imports from it, twice, so all changes reach everyone.
#[test]
fn a_concurrent_edit_is_listed_everywhere_resolved_on_one_laptop_and_gone_everywhere() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    hq.ok(&["put", "visits", "v-1", "weight_kg=61.5"]);
    exchange(&[&hq, &a, &b], &stick);
    // Offline, both clinics correct the weight.
    a.ok(&["put", "visits", "v-1", "weight_kg=62.0"]);
    b.ok(&["put", "visits", "v-1", "weight_kg=61.0"]);
    exchange(&[&a, &b, &hq], &stick);
    for l in [&hq, &a, &b] {
        let c = conflicts(l);
        assert_eq!(c.as_array().unwrap().len(), 1, "{c}");
        assert_eq!(c[0]["field"], "weight_kg");
        let detail = l.ok(&["get", "visits", "v-1", "--conflicts"]);
        assert!(
            detail.contains("62.0") && detail.contains("61.0"),
            "{detail}"
        );
    }
    let out = hq.ok(&["resolve", "visits", "v-1", "weight_kg", "61.8"]);
    assert!(out.contains("Resolved"), "{out}");
    assert_eq!(conflicts(&hq), serde_json::json!([]));
    let (_, err) = hq.fails(&["resolve", "visits", "v-1", "weight_kg", "1"]);
    assert!(err.contains("no conflict"), "{err}");
    exchange(&[&hq, &a, &b], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(conflicts(l), serde_json::json!([]), "{}", l.home.display());
        assert_eq!(
            l.ok(&["get", "visits", "v-1", "--json"]).trim(),
            r#"{"weight_kg":61.8}"#
        );
    }
    // A later concurrent write after the resolution is a new conflict, not a lost one.
    a.ok(&["put", "visits", "v-1", "weight_kg=63.0"]);
    b.ok(&["put", "visits", "v-1", "weight_kg=60.0"]);
    exchange(&[&a, &b, &hq], &stick);
    assert_eq!(conflicts(&hq).as_array().unwrap().len(), 1);
}

#[test]
fn a_counter_incremented_on_three_offline_laptops_sums_correctly() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    hq.ok(&["rule", "set", "stock", "nets", "counter"]);
    hq.ok(&["put", "stock", "kisumu", "nets=100"]);
    exchange(&[&hq, &a, &b], &stick);
    hq.ok(&["incr", "stock", "kisumu", "nets", "-30"]);
    a.ok(&["incr", "stock", "kisumu", "nets", "5"]);
    a.ok(&["incr", "stock", "kisumu", "nets", "5"]);
    b.ok(&["incr", "stock", "kisumu", "nets", "-12"]);
    exchange(&[&hq, &a, &b], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(
            l.ok(&["get", "stock", "kisumu", "--json"]).trim(),
            r#"{"nets":68}"#
        );
        assert_eq!(conflicts(l), serde_json::json!([]));
    }
    let rules = hq.ok(&["rule", "list"]);
    assert!(rules.contains("stock.nets  counter"), "{rules}");
    let (_, err) = a.fails(&["rule", "set", "stock", "nets", "lww"]);
    assert!(err.contains("only the dataset's admin"), "{err}");
    let err = hq.misuse(&["rule", "set", "stock", "nets", "largest"]);
    assert!(err.contains("unknown rule") && err.contains("max"), "{err}");
}

#[test]
fn a_delete_racing_an_update_is_listed_and_can_be_settled_either_way() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    hq.ok(&["put", "visits", "v-dup", "village=Obunga"]);
    hq.ok(&["put", "visits", "v-2", "village=Manyatta"]);
    exchange(&[&hq, &a, &b], &stick);
    a.ok(&["delete", "visits", "v-dup"]);
    b.ok(&["put", "visits", "v-dup", "village=Nyalenda"]);
    exchange(&[&a, &b, &hq], &stick);
    for l in [&hq, &a, &b] {
        let c = conflicts(l);
        assert_eq!(c.as_array().unwrap().len(), 1, "{c}");
        assert_eq!(c[0]["field"], "(record)");
        assert_eq!(c[0]["winner"], "kept");
        let values: Vec<&str> = c[0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["value"].as_str().unwrap())
            .collect();
        assert!(
            values.contains(&"deleted") && values.contains(&"kept"),
            "{values:?}"
        );
        // The edit is not lost: the record is still listed, with the new village.
        assert_eq!(
            l.ok(&["get", "visits", "v-dup", "--json"]).trim(),
            r#"{"village":"Nyalenda"}"#
        );
    }
    // Deleting again, having seen the edit, deletes it for everyone.
    hq.ok(&["delete", "visits", "v-dup"]);
    exchange(&[&hq, &a, &b], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(conflicts(l), serde_json::json!([]));
        l.fails(&["get", "visits", "v-dup"]);
    }
    // Re-creating a deleted id works.
    a.ok(&["put", "visits", "v-dup", "village=Kondele"]);
    exchange(&[&a, &hq, &b], &stick);
    assert_eq!(
        b.ok(&["get", "visits", "v-dup", "--json"]).trim(),
        r#"{"village":"Kondele"}"#
    );
    assert!(files(&stick).len() <= 6);
}

#[test]
fn sets_max_and_first_rules_merge_as_documented() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    hq.ok(&["rule", "set", "patients", "tags", "set"]);
    hq.ok(&["rule", "set", "patients", "temp_max", "max"]);
    hq.ok(&["rule", "set", "patients", "reg_no", "first"]);
    hq.ok(&["put", "patients", "p-1", "reg_no=R-001"]);
    hq.ok(&["add", "patients", "p-1", "tags", "tb", "hiv"]);
    exchange(&[&hq, &a, &b], &stick);
    a.ok(&["remove", "patients", "p-1", "tags", "hiv"]);
    b.ok(&["add", "patients", "p-1", "tags", "hiv", "malaria"]);
    a.ok(&["put", "patients", "p-1", "temp_max=38.5", "reg_no=R-002"]);
    b.ok(&["put", "patients", "p-1", "temp_max=39.1"]);
    exchange(&[&a, &b, &hq], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(
            l.ok(&["get", "patients", "p-1", "--json"]).trim(),
            r#"{"reg_no":"R-001","tags":["hiv","malaria","tb"],"temp_max":39.1}"#
        );
        assert_eq!(
            conflicts(l),
            serde_json::json!([]),
            "rules other than conflict are not listed"
        );
    }
    // dump writes sets as arrays, and load reads them back.
    let dump = hq.ok(&["dump", "patients"]);
    assert!(dump.contains(r#""tags":["hiv","malaria","tb"]"#), "{dump}");
}

#[test]
fn compaction_shrinks_the_store_and_a_member_invited_later_still_gets_everything() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    // Many small edits, as a clinic makes over weeks.
    for i in 0..300 {
        a.ok(&[
            "put",
            "visits",
            &format!("v-{:03}", i % 60),
            &format!("n={i}"),
            "village=Obunga",
        ]);
    }
    hq.ok(&["put", "visits", "v-del", "village=x"]);
    exchange(&[&hq, &a, &b], &stick);
    a.ok(&["delete", "visits", "v-del"]);
    exchange(&[&a, &hq, &b], &stick);
    exchange(&[&a, &hq, &b], &stick);
    let out = a.ok(&["compact"]);
    assert!(out.contains("Compacted"), "{out}");
    // `sync` compacts automatically only history older than a month; `compact` drops what
    // every member holds now and reports the total.
    let total: u64 = out
        .split('(')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(total >= 290, "{out}");
    let out = a.ok(&["purge"]);
    assert!(out.contains("Purged 1 deleted records"), "{out}");
    // A clinic invited now, after history was compacted everywhere it could be.
    for l in [&hq, &b] {
        l.ok(&["compact"]);
    }
    let inv = base.join("c.invite");
    let code = hq.invite(&inv, "clinic-c");
    let c = Laptop::new(base, "c");
    c.join("clinic-c", &inv, code.as_deref());
    exchange(&[&hq, &c, &a, &b, &c], &stick);
    let all = hq.list("visits");
    assert_eq!(c.list("visits"), all);
    assert_eq!(a.list("visits"), all);
    let records: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(records.as_array().unwrap().len(), 60);
    // The newcomer can write and everyone gets it.
    c.ok(&["put", "visits", "v-c", "village=Nyalenda"]);
    exchange(&[&c, &hq, &a, &b], &stick);
    assert_eq!(b.list("visits"), c.list("visits"));
    let st = c.status();
    assert_eq!(st["pending"], 0);
    assert_eq!(st["waiting_for_prerequisites"], 0);
}

/// Issue 11, item 2: the same value typed on two laptops at the same time is not a conflict
/// (it shows once and is not listed), in every delivery order; the same drug list loaded on
/// two clinics gives no conflict either; a different value still does.
#[test]
fn the_same_value_typed_on_two_laptops_is_not_a_conflict() {
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let (hq, a, b) = three(base);
        let laptops = [&hq, &a, &b];
        let stick = base.join("stick");
        hq.ok(&["put", "visits", "v1", "test=pending", "age=30"]);
        exchange(&laptops, &stick);
        // Offline, all three record the same result; A and B also disagree on the age.
        for l in laptops {
            l.ok(&["put", "visits", "v1", "test=hiv"]);
        }
        a.ok(&["put", "visits", "v1", "age=31"]);
        b.ok(&["put", "visits", "v1", "age=32"]);
        let list = base.join("drugs.jsonl");
        std::fs::write(
            &list,
            "{\"id\":\"d1\",\"name\":\"amoxicillin\"}\n{\"id\":\"d2\",\"name\":\"artemether\"}\n{\"id\":\"d3\",\"name\":\"ORS\"}\n",
        )
        .unwrap();
        a.ok(&["load", "drugs", s(&list)]);
        b.ok(&["load", "drugs", s(&list)]);
        let ordered: Vec<&Laptop> = order.iter().map(|&i| laptops[i]).collect();
        exchange(&ordered, &stick);
        for l in laptops {
            let c = conflicts(l);
            let fields: Vec<_> = c
                .as_array()
                .unwrap()
                .iter()
                .map(|x| format!("{}/{} {}", x["collection"], x["id"], x["field"]))
                .collect();
            assert_eq!(
                fields,
                vec!["\"visits\"/\"v1\" \"age\"".to_string()],
                "order {order:?}: only the differing ages are a conflict"
            );
            let v1: serde_json::Value =
                serde_json::from_str(&l.ok(&["get", "visits", "v1", "--json"])).unwrap();
            assert_eq!(v1["test"], "hiv");
            let detail = l.ok(&["get", "visits", "v1", "--conflicts"]);
            assert_eq!(
                detail.matches("hiv").count(),
                1,
                "the same value shows once: {detail}"
            );
            let drugs = l.ok(&["list", "drugs"]);
            assert_eq!(drugs.lines().count(), 3, "{drugs}");
        }
    }
}

/// Issue 11, item 3: a write that changes nothing makes no change: `put` of the value shown
/// says so and writes nothing; re-loading an unchanged file reports every record unchanged
/// and leaves nothing new to export; a file with one edit writes only that one.
#[test]
fn writes_that_change_nothing_make_no_change_and_nothing_travels() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, _a, _b) = three(base);
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    let mut jsonl = String::new();
    for i in 0..500 {
        jsonl.push_str(&format!(
            "{{\"id\":\"v{i:03}\",\"village\":\"Kisumu Ndogo\",\"age\":{}}}\n",
            i % 90
        ));
    }
    let file = base.join("visits.jsonl");
    std::fs::write(&file, &jsonl).unwrap();
    assert_eq!(
        hq.ok(&["load", "visits", s(&file)]).trim(),
        "Loaded 500 records into \"visits\""
    );
    let wrote = hq.ok(&["export", s(&stick)]);
    assert!(wrote.contains("wrote"), "{wrote}");
    let before = files(&stick);

    let out = hq.ok(&["load", "visits", s(&file)]);
    assert!(out.contains(": 0 changed, 500 unchanged"), "{out}");
    let out = hq.ok(&["put", "visits", "v007", "age=7"]);
    assert!(out.starts_with("unchanged: visits/v007"), "{out}");
    let out = hq.ok(&["export", s(&stick)]);
    assert!(out.starts_with("nothing new to write"), "{out}");
    assert_eq!(files(&stick), before, "nothing was written to the stick");

    // One edited line: one record written, one change on the stick.
    std::fs::write(
        &file,
        jsonl.replace(
            "\"id\":\"v042\",\"village\":\"Kisumu Ndogo\"",
            "\"id\":\"v042\",\"village\":\"Kondele\"",
        ),
    )
    .unwrap();
    let out = hq.ok(&["load", "visits", s(&file)]);
    assert!(out.contains(": 1 changed, 499 unchanged"), "{out}");
    let out = hq.ok(&["export", s(&stick)]);
    assert!(out.contains("1 change)"), "{out}");
    // A value that is the same on the screen but in conflict is written: it settles it.
    let out = hq.ok(&["put", "visits", "v042", "village=Kondele", "age=43"]);
    assert!(out.is_empty(), "the age changed: {out}");
}

/// Issue 11, item 4: `incr` on a field that is not a counter and `add`/`remove` on one that
/// is not a set are refused (exit status 2) with one line naming the field's rule and the
/// command that would allow it; nothing changes. Once the admin sets the rule, they work.
#[test]
fn edits_are_checked_against_the_fields_rule() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    hq.ok(&["put", "visits", "v1", "village=Kisumu Ndogo", "nets=3"]);
    exchange(&[&hq, &a, &b], &stick);
    let err = a.misuse(&["incr", "visits", "v1", "village", "1"]);
    assert!(
        err.contains("visits.village is a conflict field")
            && err.contains("`ferry rule set visits village counter`"),
        "{err}"
    );
    let err = a.misuse(&["add", "visits", "v1", "village", "x"]);
    assert!(err.contains("`ferry rule set visits village set`"), "{err}");
    let err = a.misuse(&["remove", "visits", "v1", "village", "Kisumu Ndogo"]);
    assert!(err.contains("works only on set fields"), "{err}");
    let v1: serde_json::Value =
        serde_json::from_str(&a.ok(&["get", "visits", "v1", "--json"])).unwrap();
    assert_eq!(v1["village"], "Kisumu Ndogo", "nothing changed");
    // A laptop that has not received the rule yet is still refused; after a sync it works.
    hq.ok(&["rule", "set", "visits", "nets", "counter"]);
    a.misuse(&["incr", "visits", "v1", "nets", "2"]);
    hq.ok(&["incr", "visits", "v1", "nets", "2"]);
    exchange(&[&hq, &a, &b], &stick);
    a.ok(&["incr", "visits", "v1", "nets", "-1"]);
    exchange(&[&a, &b, &hq], &stick);
    for l in [&hq, &a, &b] {
        let v1: serde_json::Value =
            serde_json::from_str(&l.ok(&["get", "visits", "v1", "--json"])).unwrap();
        assert_eq!(v1["nets"], 4);
    }
}

/// Issue 11, item 6: many conflicts at once. `resolve --all --dry-run` says what it would
/// keep and changes nothing; `--prefer max` on one field settles those conflicts in one
/// change that every laptop applies, in any order; `--prefer author=LABEL` keeps that
/// member's values; a record deleted on one laptop and edited on another is left, named.
#[test]
fn many_conflicts_are_resolved_at_once_by_a_stated_preference() {
    for order in [[0, 1, 2], [2, 0, 1]] {
        let base = tempfile::tempdir().unwrap();
        let base = base.path();
        let (hq, a, b) = three(base);
        let laptops = [&hq, &a, &b];
        let stick = base.join("stick");
        for i in 0..5 {
            hq.ok(&[
                "put",
                "visits",
                &format!("v{i}"),
                "age=30",
                "village=Kisumu",
            ]);
        }
        hq.ok(&["put", "visits", "gone", "age=1"]);
        exchange(&laptops, &stick);
        for i in 0..5 {
            let id = format!("v{i}");
            a.ok(&[
                "put",
                "visits",
                &id,
                &format!("age={}", 40 + i),
                "village=Kondele",
            ]);
            b.ok(&[
                "put",
                "visits",
                &id,
                &format!("age={}", 50 - i),
                "village=Nyalenda",
            ]);
        }
        a.ok(&["delete", "visits", "gone"]);
        b.ok(&["put", "visits", "gone", "age=2"]);
        exchange(&[&a, &b, &hq], &stick);
        assert_eq!(conflicts(&hq).as_array().unwrap().len(), 11);

        let before = files(&stick);
        let dry = hq.ok(&["resolve", "--all", "--prefer", "latest", "--dry-run"]);
        assert_eq!(
            dry.lines().filter(|l| l.starts_with("would keep")).count(),
            10,
            "{dry}"
        );
        assert!(
            dry.lines()
                .any(|l| l.starts_with("left") && l.contains("visits/gone (record)")),
            "{dry}"
        );
        assert!(dry.contains("would resolve 10 conflicts"), "{dry}");
        assert_eq!(
            conflicts(&hq).as_array().unwrap().len(),
            11,
            "nothing changed"
        );
        hq.ok(&["sync", s(&stick)]);
        assert_eq!(files(&stick), before, "nothing to send after a dry run");

        let out = hq.ok(&["resolve", "--all", "--field", "age", "--prefer", "max"]);
        assert!(out.contains("resolved 5 conflicts in one change"), "{out}");
        let out = a.ok(&[
            "resolve",
            "--all",
            "--prefer",
            "author=clinic-b",
            "--collection",
            "visits",
        ]);
        // A has not seen HQ's change: it settles the ages too. Both keep 50 − i there, so
        // the two resolutions (concurrent, with the same values) are no new conflict.
        assert!(out.contains("resolved 10 conflicts"), "{out}");
        let ordered: Vec<&Laptop> = order.iter().map(|&i| laptops[i]).collect();
        exchange(&ordered, &stick);
        for l in laptops {
            let c = conflicts(l);
            let left: Vec<_> = c
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["id"].clone())
                .collect();
            assert_eq!(
                left,
                vec![serde_json::json!("gone")],
                "order {order:?}: {c}"
            );
            for i in 0..5 {
                let v: serde_json::Value =
                    serde_json::from_str(&l.ok(&["get", "visits", &format!("v{i}"), "--json"]))
                        .unwrap();
                assert_eq!(v["age"], 50 - i, "max of 40+i and 50-i");
                assert_eq!(v["village"], "Nyalenda", "clinic-b's value");
            }
        }
    }
}

/// Issue 11, item 5: a record's history, and a deleted record brought back. After several
/// syncs (history every laptop holds is kept for a month), `ferry log` on any laptop lists
/// each change with its author and the values before and after; a delete made on one laptop
/// is undone on another with `ferry restore`, as a new change everyone applies, also once
/// the history is compacted away (`ferry compact`).
#[test]
fn the_history_of_a_record_and_restoring_a_deleted_one() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    hq.ok(&["put", "visits", "v1", "village=Kisumu", "age=30"]);
    exchange(&[&hq, &a, &b], &stick);
    a.ok(&["put", "visits", "v1", "age=31"]);
    b.ok(&["put", "visits", "v1", "age=32"]);
    exchange(&[&a, &b, &hq], &stick);
    hq.ok(&["resolve", "visits", "v1", "age", "31"]);
    exchange(&[&hq, &a, &b], &stick);
    for l in [&hq, &a, &b] {
        let log = l.ok(&["log", "visits", "v1"]);
        let lines: Vec<&str> = log.lines().collect();
        assert!(lines[0].starts_with("visits/v1: 4 changes held"), "{log}");
        assert!(
            lines[1].contains("hq #") && lines[1].contains("village: — → Kisumu"),
            "{log}"
        );
        assert!(
            log.lines()
                .any(|l| l.contains("clinic-a #") && l.contains("age: 30 → ")),
            "{log}"
        );
        assert!(
            log.contains("(+1 concurrent)"),
            "the crossed edits are marked: {log}"
        );
        assert!(
            lines[4].contains("hq #") && lines[4].contains("→ 31"),
            "{log}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&l.ok(&["log", "visits", "v1", "--json"])).unwrap();
        assert_eq!(json["entries"].as_array().unwrap().len(), 4);
        assert_eq!(json["entries"][0]["fields"][0]["after"], "Kisumu");
    }

    b.ok(&["delete", "visits", "v1"]);
    exchange(&[&b, &a, &hq], &stick);
    let log = a.ok(&["log", "visits", "v1"]);
    assert!(
        log.lines().last().unwrap().contains("clinic-b #") && log.ends_with("deleted\n"),
        "{log}"
    );
    let out = a.ok(&["restore", "visits", "v1"]);
    assert!(out.contains("before clinic-b deleted it"), "{out}");
    let err = a.fails(&["restore", "visits", "v1"]).1;
    assert!(err.contains("is not deleted"), "{err}");
    exchange(&[&a, &b, &hq], &stick);
    for l in [&hq, &a, &b] {
        let v: serde_json::Value =
            serde_json::from_str(&l.ok(&["get", "visits", "v1", "--json"])).unwrap();
        assert_eq!(v, serde_json::json!({"village": "Kisumu", "age": 31}));
    }

    // With its history compacted away, a deleted record still comes back whole: what a
    // delete removed is kept with the record until `ferry purge`.
    hq.ok(&["put", "visits", "v2", "age=5", "village=Obunga"]);
    exchange(&[&hq, &a, &b], &stick);
    hq.ok(&["delete", "visits", "v2"]);
    exchange(&[&hq, &a, &b], &stick);
    b.ok(&["compact"]);
    let log = b.ok(&["log", "visits", "v2"]);
    assert!(log.contains("compacted away"), "{log}");
    let out = b.ok(&["restore", "visits", "v2"]);
    assert!(out.contains("before hq deleted it"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&b.ok(&["get", "visits", "v2", "--json"])).unwrap();
    assert_eq!(v, serde_json::json!({"village": "Obunga", "age": 5}));
    let err = b.fails(&["log", "visits", "nope"]).1;
    assert!(err.contains("no record \"nope\""), "{err}");
}

/// Issue 11, items 3 and 5 (review): reloading a dump keeps a conflict for a person (it
/// writes nothing, where `put` of one of the values settles it), a set field reloaded as it
/// is writes nothing, and `restore` refuses when part of the record's history before the
/// delete was compacted away, rather than bring back part of it.
#[test]
fn a_reloaded_dump_keeps_conflicts_and_a_record_whose_history_was_compacted_is_restored_whole() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    hq.ok(&["rule", "set", "patients", "tags", "set"]);
    hq.ok(&["put", "patients", "p1", "age=30"]);
    hq.ok(&["add", "patients", "p1", "tags", "tb", "hiv"]);
    exchange(&[&hq, &a, &b], &stick);
    a.ok(&["put", "patients", "p1", "age=31"]);
    b.ok(&["put", "patients", "p1", "age=32"]);
    exchange(&[&a, &b, &hq], &stick);
    assert_eq!(conflicts(&hq).as_array().unwrap().len(), 1);
    let dump = base.join("patients.jsonl");
    std::fs::write(&dump, hq.ok(&["dump", "patients"])).unwrap();
    let out = hq.ok(&["load", "patients", s(&dump)]);
    assert!(out.contains(": 0 changed, 1 unchanged"), "{out}");
    assert_eq!(
        conflicts(&hq).as_array().unwrap().len(),
        1,
        "still for a person"
    );

    // Fields written, history compacted, one field edited, the record deleted: the history
    // no longer holds its age, but the record kept what the delete removed, so it comes
    // back whole, not in part.
    hq.ok(&["put", "visits", "v1", "village=Kisumu", "age=4"]);
    exchange(&[&hq, &a, &b], &stick);
    hq.ok(&["compact"]);
    hq.ok(&["put", "visits", "v1", "village=Kondele"]);
    hq.ok(&["delete", "visits", "v1"]);
    let log = hq.ok(&["log", "visits", "v1"]);
    assert!(
        log.contains("compacted away") && log.contains("village: ? → Kondele"),
        "{log}"
    );
    hq.ok(&["restore", "visits", "v1"]);
    let v: serde_json::Value =
        serde_json::from_str(&hq.ok(&["get", "visits", "v1", "--json"])).unwrap();
    assert_eq!(v, serde_json::json!({"village": "Kondele", "age": 4}));
}

/// Issue 11, item 6 (review), and issue 13: `--prefer author=LABEL` picks by member. A
/// label names one member (the admin refuses to give it twice), and `author=#N` names a
/// member by number.
#[test]
fn resolving_by_author_picks_one_member_by_label_or_number() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    let inv = base.join("c.invite");
    let err = hq.misuse(&["invite", "--out", s(&inv), "--label", "clinic-a"]);
    assert!(err.contains("already the label of member #2"), "{err}");
    let code = hq.invite(&inv, "clinic-c");
    let c = Laptop::new(base, "c");
    c.join("clinic-c", &inv, code.as_deref());
    hq.ok(&["put", "visits", "v1", "age=30"]);
    exchange(&[&hq, &a, &b, &c], &stick);
    a.ok(&["put", "visits", "v1", "age=31"]);
    c.ok(&["put", "visits", "v1", "age=33"]);
    exchange(&[&a, &c, &b, &hq], &stick);
    let err = hq.misuse(&["resolve", "--all", "--prefer", "author=#9"]);
    assert!(err.contains("no member is labelled \"#9\""), "{err}");
    assert_eq!(
        conflicts(&hq).as_array().unwrap().len(),
        1,
        "nothing changed"
    );
    let c = conflicts(&hq);
    let members: Vec<_> = c[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["member"].as_u64().unwrap())
        .collect();
    assert_eq!(members.len(), 2, "{c}");
    assert!(members.iter().all(|&m| m == 2 || m == 4), "{c}");
    hq.ok(&["resolve", "--all", "--prefer", "author=#4"]);
    assert!(conflicts(&hq).as_array().unwrap().is_empty());
    assert_eq!(
        hq.ok(&["get", "visits", "v1", "--json"]).trim(),
        r#"{"age":33}"#
    );
}
