//! A bundle is applied in one transaction (a large one in steps of whole changes): killing
//! `ferry import` at any moment leaves none or all of it (of each step), and importing it
//! again completes the job.

use crate::util::{files, s, three};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

#[test]
fn killing_an_import_at_any_moment_leaves_all_or_nothing_and_a_reimport_completes() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, _) = three(base);
    let n = 20_000u64;
    let jsonl = base.join("visits.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&jsonl).unwrap());
    for i in 0..n {
        writeln!(
            f,
            r#"{{"id":"v-{i:06}","patient_id":"p-{:06}","village":"village-{}","weight_kg":{}.5,"followup":{}}}"#,
            i * 7,
            i % 200,
            40 + i % 40,
            i % 3 == 0
        )
        .unwrap();
    }
    drop(f);
    hq.ok(&["load", "visits", s(&jsonl)]);
    let dir = base.join("stick");
    std::fs::create_dir(&dir).unwrap();
    hq.ok(&["export", s(&dir)]);
    let bundle = files(&dir).pop().unwrap();

    let mut interrupted = 0;
    for delay_ms in [1, 5, 20, 50, 100, 200, 300, 500, 800, 1200] {
        let mut child = a.cmd(&["import", s(&bundle)]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.signal() == Some(9) {
            interrupted += 1;
        }
        let records = a.status()["records"].as_u64().unwrap();
        assert!(
            records == 0 || records == n,
            "after a kill at {delay_ms} ms, {records} of {n} records are visible"
        );
        if records == n {
            break;
        }
    }
    assert!(
        interrupted > 0,
        "no kill landed while the import was running"
    );
    a.ok(&["import", s(&bundle)]);
    assert_eq!(a.status()["records"].as_u64(), Some(n));
    assert_eq!(a.list("visits"), hq.list("visits"));
}

/// A bundle larger than a step (about 1 MB of changes) is applied in steps of whole
/// changes: a kill leaves a state a smaller bundle could have left — whole commits of
/// 1,000 records, a store that still syncs — and importing it again finishes the job.
#[test]
fn killing_a_large_import_leaves_whole_changes_that_sync_and_a_reimport_completes() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let n = 30_000u64;
    let jsonl = base.join("visits.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&jsonl).unwrap());
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..n {
        // A note of 24 random words: about 200 bytes that do not compress away.
        let note: Vec<String> = (0..24)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{:x}", x % 0x00ff_ffff)
            })
            .collect();
        writeln!(
            f,
            r#"{{"id":"v-{i:06}","patient_id":"p-{:06}","village":"village-{}","note":"{}"}}"#,
            i * 7,
            i % 200,
            note.join(" ")
        )
        .unwrap();
    }
    drop(f);
    hq.ok(&["load", "visits", s(&jsonl)]);
    let dir = base.join("stick");
    std::fs::create_dir(&dir).unwrap();
    hq.ok(&["export", s(&dir)]);
    let bundle = files(&dir).pop().unwrap();
    assert!(std::fs::metadata(&bundle).unwrap().len() > 1 << 20);

    let mut partial = 0;
    let mut delay_ms = 20;
    loop {
        let mut child = a.cmd(&["import", s(&bundle)]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        let records = a.status()["records"].as_u64().unwrap();
        assert_eq!(
            records % 1000,
            0,
            "after a kill at {delay_ms} ms, {records} records: not whole commits of 1,000"
        );
        if records == n {
            break;
        }
        if records > 0 {
            partial += 1;
            // `status` says why HQ's changes are not passed on yet.
            let unfinished = a.status()["unfinished"].clone();
            assert_eq!(unfinished[0][0], "hq", "{unfinished}");
            assert!(unfinished[0][1].as_u64().unwrap() > 0, "{unfinished}");
            assert!(a.ok(&["status"]).contains("import stopped halfway"));
            // What it holds is usable: it writes a bundle for the others, and clinic-b
            // takes it (HQ's changes travel once HQ's signature covers them).
            let out = base.join(format!("out-{partial}"));
            std::fs::create_dir(&out).unwrap();
            a.ok(&["export", s(&out)]);
            b.ok(&["import", s(&out)]);
        }
        delay_ms += 40;
        assert!(delay_ms < 60_000, "the import never finished");
    }
    assert!(partial > 0, "no kill landed between two steps");
    a.ok(&["import", s(&bundle)]);
    assert_eq!(a.status()["records"].as_u64(), Some(n));
    assert_eq!(a.status()["unfinished"], serde_json::json!([]));
    assert_eq!(a.list("visits"), hq.list("visits"));
    let out = base.join("out-last");
    std::fs::create_dir(&out).unwrap();
    a.ok(&["export", s(&out)]);
    b.ok(&["import", s(&out)]);
    assert_eq!(b.list("visits"), hq.list("visits"));
}
