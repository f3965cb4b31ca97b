//! Issue 12, item 4: progress that does not mislead. Without a terminal (a log, a script,
//! a GUI reading stderr) a long export prints a plain line every few seconds
//! (`FERRY_PROGRESS_EVERY_MS` sets how often), counted in what it has written, while it
//! compresses — not nothing for half a minute.

use crate::util::*;

#[test]
fn a_long_export_without_a_terminal_says_every_few_seconds_how_far_it_is() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, _a, _b) = three(base);
    let mut jsonl = String::with_capacity(300_000 * 180);
    for i in 0..300_000u64 {
        // Varied values, and a hash per record no compression shrinks, so the export takes
        // a while even at the fast level columnar bundles use.
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut photo = String::with_capacity(128);
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            photo.push_str(&format!("{x:016x}"));
        }
        jsonl.push_str(&format!(
            "{{\"id\":\"r{i:06}\",\"name\":\"{:x}\",\"n\":{},\"photo\":\"{photo}\"}}\n",
            x >> 16,
            x % 1000
        ));
    }
    let input = base.join("records.jsonl");
    std::fs::write(&input, jsonl).unwrap();
    hq.ok(&["load", "visits", s(&input)]);
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    // Lines every 3 s by default; every 30 ms here, so this export of some 0.3 s (24 MB)
    // shows several.
    let out = hq
        .cmd(&["export", s(&stick)])
        .env("FERRY_PROGRESS_EVERY_MS", "30")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("ferry: exporting"))
        .collect();
    assert!(lines.len() >= 3, "stderr:\n{stderr}");
    // Amounts grow, and the last line says it is done.
    let amounts: Vec<f64> = lines
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once("changes: ")?;
            let rest = rest.strip_prefix("done, ").unwrap_or(rest);
            let mut words = rest.split_whitespace();
            let n: f64 = words.next()?.parse().ok()?;
            let unit = match words.next()? {
                "B" => 1.0,
                "kB" => 1e3,
                "MB" => 1e6,
                "GB" => 1e9,
                _ => return None,
            };
            Some(n * unit)
        })
        .collect();
    assert_eq!(amounts.len(), lines.len(), "{stderr}");
    assert!(amounts.windows(2).all(|w| w[0] <= w[1]), "{stderr}");
    assert!(amounts[0] > 0.0, "{stderr}");
    assert!(lines.last().unwrap().contains("done"), "{stderr}");
    // Progress goes to stderr only; stdout keeps the one summary line.
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("wrote"));
}

/// Issue 12, item 4: summaries count records, not commits. HQ loads 1 000 visits (a single
/// change carries them) and edits two of them; the clinic's import says how many records
/// changed, and `load` says how many records it loaded — not "1 commits" / "2 new".
#[test]
fn summaries_count_records_not_commits() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, _b) = three(base);
    let mut jsonl = String::new();
    for i in 0..1000 {
        jsonl.push_str(&format!("{{\"id\":\"v{i:04}\",\"age\":{}}}\n", i % 90));
    }
    let input = base.join("visits.jsonl");
    std::fs::write(&input, jsonl).unwrap();
    let out = hq.ok(&["load", "visits", s(&input)]);
    assert_eq!(out.trim(), "Loaded 1000 records into \"visits\"");
    hq.ok(&["put", "visits", "v0001", "age=40"]);
    hq.ok(&["put", "visits", "v0002", "age=41"]);
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    hq.ok(&["export", s(&stick)]);
    let out = a.ok(&["import", s(&stick)]);
    let line = out
        .lines()
        .find(|l| l.starts_with("applied") && l.contains("from hq"))
        .unwrap_or_else(|| panic!("{out}"));
    // 1 000 loaded + 2 edited record changes, carried by 1 load change + 2 edits + HQ's
    // invitations and other dataset changes.
    assert!(line.contains("1002 records changed"), "{line}");
    assert!(line.contains("new changes"), "{line}");
}

/// `--progress json`: every line on stderr is one JSON event a GUI can read (begin, progress
/// with growing `done`, end); `--progress none` prints nothing.
#[test]
fn progress_json_gives_events_a_program_can_read_and_none_gives_nothing() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, _a, _b) = three(base);
    let mut jsonl = String::new();
    for i in 0..50_000u64 {
        let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        jsonl.push_str(&format!(
            "{{\"id\":\"r{i:06}\",\"name\":\"{:x}\"}}\n",
            x >> 8
        ));
    }
    let input = base.join("records.jsonl");
    std::fs::write(&input, jsonl).unwrap();
    let out = hq
        .cmd(&["--progress", "json", "load", "visits", s(&input)])
        .env("FERRY_PROGRESS_EVERY_MS", "0")
        .output()
        .unwrap();
    assert!(out.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(events.len() >= 3, "{events:?}");
    assert_eq!(events[0]["event"], "begin");
    assert_eq!(events[0]["unit"], "bytes");
    assert_eq!(events.last().unwrap()["event"], "end");
    let done: Vec<u64> = events.iter().map(|e| e["done"].as_u64().unwrap()).collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    let total = events[0]["total"].as_u64().unwrap();
    assert_eq!(
        *done.last().unwrap(),
        total,
        "the end event counts every byte"
    );

    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    let out = hq
        .cmd(&["--progress", "none", "export", s(&stick)])
        .env("FERRY_PROGRESS_EVERY_MS", "0")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// Issue 12, item 4: `compact` and `purge` show progress through the whole job: the
/// changes compacted (the end event counts what the summary line says was dropped), the
/// deleted records purged, and the step that gives the space back to the disk.
#[test]
fn compact_and_purge_count_their_work_in_changes_and_records() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    for i in 0..30 {
        hq.ok(&["put", "visits", &format!("v{i}"), "age=3"]);
    }
    for i in 0..10 {
        hq.ok(&["delete", "visits", &format!("v{i}")]);
    }
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    // Everyone gets everything, and HQ hears that they did (no automatic compaction has
    // happened on HQ for the last round's acknowledgements yet when it compacts by hand).
    for l in [&hq, &a, &b, &hq, &a, &b] {
        l.ok(&["sync", s(&stick)]);
    }
    let events = |args: &[&str]| -> (Vec<serde_json::Value>, String) {
        let mut all = vec!["--progress", "json"];
        all.extend_from_slice(args);
        let out = hq
            .cmd(&all)
            .env("FERRY_PROGRESS_EVERY_MS", "0")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let events = String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        (events, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let end_of = |events: &[serde_json::Value], step: &str| -> serde_json::Value {
        events
            .iter()
            .find(|e| e["event"] == "end" && e["step"] == step)
            .cloned()
            .unwrap_or_else(|| panic!("no end of {step:?} in {events:?}"))
    };
    let (ev, out) = events(&["purge"]);
    let purged = end_of(&ev, "purging deleted records");
    assert_eq!(purged["unit"], "records");
    assert_eq!(purged["done"], purged["total"]);
    assert_eq!(purged["total"], 10, "{ev:?}");
    assert!(out.starts_with("Purged 10 deleted records"), "{out}");
    let compacted = end_of(&ev, "compacting history");
    assert_eq!(compacted["unit"], "changes");
    assert_eq!(compacted["done"], compacted["total"]);
    end_of(&ev, "giving the freed space back to the disk");

    // A compaction with something to drop counts exactly what it dropped.
    hq.ok(&["put", "visits", "late", "age=1"]);
    for l in [&hq, &a, &b] {
        l.ok(&["sync", s(&stick)]);
    }
    hq.ok(&["import", s(&stick)]);
    let (ev, out) = events(&["compact"]);
    let compacted = end_of(&ev, "compacting history");
    let dropped: u64 = out
        .strip_prefix("Compacted ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(dropped > 0, "{out}");
    assert_eq!(compacted["total"], dropped, "{ev:?}\n{out}");
    assert_eq!(compacted["done"], dropped);
}
