//! Backup and restore without forking (issue 13, item 2): a laptop restored from an old
//! backup joins again under a new member number, keeps what it had written, receives what
//! its old self wrote after the backup, and nobody sees two versions of any history.

use crate::util::{Laptop, exchange, invite_code, s};
use std::path::Path;

/// The code `ferry backup` prints (a line `code: CODE`).
fn backup(l: &Laptop, file: &Path) -> String {
    let out = l.ok(&["backup", s(file)]);
    invite_code(&out).unwrap_or_else(|| panic!("no code in {out}"))
}

fn ids(l: &Laptop) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&l.list("visits")).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_laptop_restored_from_an_old_backup_rejoins_without_forking_and_loses_nothing() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let stick = base.join("stick");
    let (hq, a, b) = crate::util::three(base);
    hq.ok(&["put", "visits", "h0", "village=Kisumu"]);
    a.ok(&["put", "visits", "a0", "village=Obunga"]);
    exchange(&[&hq, &a, &b], &stick);

    // clinic-a backs up, then writes more, which reaches the others; then its disk dies.
    let file = base.join("a.backup");
    let code = backup(&a, &file);
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        !bytes.windows(6).any(|w| w == b"Obunga"),
        "sealed: no value in clear"
    );
    a.ok(&["put", "visits", "a1", "village=Nyalenda"]);
    a.ok(&["sync", s(&stick)]);
    hq.ok(&["sync", s(&stick)]);
    b.ok(&["sync", s(&stick)]);
    std::fs::remove_dir_all(&a.home).unwrap();

    // A wrong code, or no new invitation, is one line and makes no home.
    let inv = base.join("a2.invite");
    let inv_code = hq.invite(&inv, "clinic-a-2").unwrap();
    let a2 = Laptop::new(base, "a2");
    let wrong = a2.fails(&[
        "init",
        "--join",
        s(&inv),
        "--code",
        &inv_code,
        "--restore",
        s(&file),
        "--backup-code",
        "AAAA-AAAA-AAAA",
    ]);
    assert!(wrong.1.contains("does not open this backup"), "{}", wrong.1);
    assert!(!a2.home.join("ferry.db").exists());
    let usage = a2.misuse(&[
        "init",
        "--name",
        "x",
        "--create",
        "y",
        "--restore",
        s(&file),
    ]);
    assert!(usage.contains("--restore needs --join"), "{usage}");

    // Restored with a new invitation: member #4, what it had written kept.
    let out = a2.ok(&[
        "init",
        "--join",
        s(&inv),
        "--code",
        &inv_code,
        "--restore",
        s(&file),
        "--backup-code",
        &code,
    ]);
    assert!(out.contains("joined again as member #4"), "{out}");
    assert!(out.contains("the backup was of member #2"), "{out}");
    assert_eq!(a2.status()["member"], 4);
    assert!(ids(&a2).contains(&"a0".to_string()));
    a2.ok(&["put", "visits", "a2", "village=Manyatta"]);
    exchange(&[&a2, &hq, &b], &stick);
    // Everyone converges: a1 (the old member's change after the backup) reaches the
    // restored laptop, and nobody refused anything or saw a fork.
    let all = ids(&hq);
    for id in ["a0", "a1", "a2", "h0"] {
        assert!(all.contains(&id.to_string()), "{id}: {all:?}");
    }
    assert_eq!(ids(&a2), all);
    assert_eq!(ids(&b), all);
    for l in [&hq, &b, &a2] {
        let st = l.status();
        assert_eq!(st["quarantined"], 0, "{st}");
        assert!(
            st["members"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["frozen_from"].is_null()),
            "no fork: {st}"
        );
    }
}
