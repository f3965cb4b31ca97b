//! A bundle is applied in one transaction: killing `ferry import` at any moment leaves none
//! or all of it, and importing it again completes the job.

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
