//! Bad bundles are refused with a clear error, quarantined, and change nothing; good
//! bundles in the same import still apply.

use crate::util::{Laptop, files, s, three, three_with_codes};

#[test]
fn damaged_foreign_and_non_member_bundles_are_refused_and_quarantined_while_good_ones_apply() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b, [_, code_b]) = three_with_codes(base);
    let r0 = base.join("r0");
    std::fs::create_dir(&r0).unwrap();
    hq.ok(&["export", s(&r0)]);
    a.ok(&["import", s(&r0)]);
    b.ok(&["import", s(&r0)]);

    // A good bundle from clinic A.
    a.ok(&["put", "visits", "v-a", "village=Obunga"]);
    let good = base.join("good");
    std::fs::create_dir(&good).unwrap();
    a.ok(&["export", s(&good)]);
    let good_file = files(&good).pop().unwrap();

    // A damaged copy of another bundle (one flipped bit in the middle).
    b.ok(&["put", "visits", "v-b", "village=Manyatta"]);
    let from_b = base.join("from-b");
    std::fs::create_dir(&from_b).unwrap();
    b.ok(&["export", s(&from_b)]);
    let mut bytes = std::fs::read(files(&from_b).pop().unwrap()).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x04;
    let incoming = base.join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    std::fs::write(incoming.join("damaged.ferry"), &bytes).unwrap();

    // A bundle of another dataset.
    let other = Laptop::new(base, "other");
    other.ok(&["init", "--name", "x", "--create", "another NGO"]);
    other.ok(&["put", "visits", "v-x", "village=Elsewhere"]);
    let other_dir = base.join("other-stick");
    std::fs::create_dir(&other_dir).unwrap();
    other.ok(&["export", s(&other_dir)]);
    std::fs::copy(
        files(&other_dir).pop().unwrap(),
        incoming.join("foreign.ferry"),
    )
    .unwrap();

    // A second device that reuses clinic B's invitation: not the member HQ knows as B.
    let impostor = Laptop::new(base, "impostor");
    impostor.join("clinic-b", &base.join("b.invite"), code_b.as_deref());
    impostor.ok(&["put", "visits", "v-1", "village=Forged"]);
    let imp_dir = base.join("imp");
    std::fs::create_dir(&imp_dir).unwrap();
    impostor.ok(&["export", s(&imp_dir)]);
    std::fs::copy(
        files(&imp_dir).pop().unwrap(),
        incoming.join("impostor.ferry"),
    )
    .unwrap();
    // HQ must know the real B first.
    hq.ok(&["import", s(&files(&from_b).pop().unwrap())]);

    std::fs::copy(&good_file, incoming.join("good.ferry")).unwrap();
    let before = hq.list("visits");
    let (stdout, stderr) = hq.fails(&["import", s(&incoming)]);
    assert!(stderr.contains("3 of 4 files were refused"), "{stderr}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name} in {stdout}"))
            .to_string()
    };
    assert!(line("damaged.ferry").contains("REFUSED"));
    assert!(line("damaged.ferry").contains("damaged or truncated"));
    assert!(line("foreign.ferry").contains("another dataset"));
    assert!(line("impostor.ferry").contains("already joined from another device"));
    assert!(line("good.ferry").starts_with("applied"));
    // The good bundle applied; nothing from the bad ones did.
    let after = hq.list("visits");
    assert_ne!(after, before);
    let records: serde_json::Value = serde_json::from_str(&after).unwrap();
    let ids: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["v-a", "v-b"]);
    // Each refused file is kept in quarantine, with its reason beside it.
    let q = files(&hq.home.join("quarantine"));
    assert_eq!(q.len(), 6, "{q:?}");
    let reasons: Vec<String> = q
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".reason.txt"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(reasons.len(), 3);
    assert_eq!(hq.status()["quarantined"], 3);
    // The originals are never deleted.
    assert_eq!(files(&incoming).len(), 4);
    // Importing the same folder again skips the files refused before, without counting them
    // as new errors or quarantining anything twice.
    let again = hq.ok(&["import", s(&incoming)]);
    assert_eq!(again.matches("refused before").count(), 3, "{again}");
    assert_eq!(files(&hq.home.join("quarantine")).len(), 6);
}

#[test]
fn a_truncated_bundle_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, _) = three(base);
    hq.ok(&["put", "visits", "v-1", "village=Obunga"]);
    let dir = base.join("d");
    std::fs::create_dir(&dir).unwrap();
    hq.ok(&["export", s(&dir)]);
    let f = files(&dir).pop().unwrap();
    let bytes = std::fs::read(&f).unwrap();
    let cut = base.join("cut.ferry");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let (_, err) = a.fails(&["import", s(&cut)]);
    assert!(err.contains("refused"), "{err}");
    let (out, err) = a.fails(&["verify", s(&cut)]);
    assert!(err.contains("damaged or truncated"), "{err}");
    assert!(out.contains("sender"), "{out}");
    assert_eq!(a.list("visits"), "[]\n");
}
