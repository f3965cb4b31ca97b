//! README's "Security in plain words", sentence by sentence, tried on the real binary where
//! `attacks.rs` (the eleven findings of issue 10), `medium.rs` and `invitations.rs` do not
//! already try it.

use crate::util::{Laptop, files, s, three};
use std::path::Path;

fn dir(base: &Path, name: &str) -> std::path::PathBuf {
    let d = base.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// "Someone who finds a lost stick sees only the number and size of the bundle files, the
/// dataset's random id and a small member number in each; not a single record, field name
/// or patient."
#[test]
fn a_lost_stick_shows_no_record_field_name_or_patient() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, _b) = three(base);
    hq.ok(&[
        "put",
        "patients",
        "p-ZZ-4512",
        "full_name=Achieng Otieno Wanjiru",
        "hiv_status=positive-QX",
        "village=Kisumu Ndogo",
    ]);
    a.ok(&["put", "patients", "p-ZZ-7781", "hiv_status=negative-QX"]);
    let stick = dir(base, "stick");
    hq.ok(&["sync", s(&stick)]);
    a.ok(&["sync", s(&stick)]);
    let found = files(&stick);
    assert!(found.len() >= 2, "{found:?}");
    let secrets = [
        "p-ZZ-4512",
        "p-ZZ-7781",
        "Achieng",
        "Wanjiru",
        "positive-QX",
        "negative-QX",
        "Kisumu Ndogo",
        "hiv_status",
        "full_name",
        "patients",
        "clinic visits",
        "clinic-a",
    ];
    for f in &found {
        // Only ferry/<dataset id, 16 hex>/<content hash, 32 hex>.ferry.
        let rel = f.strip_prefix(&stick).unwrap();
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(parts.len(), 3, "{rel:?}");
        assert_eq!(parts[0], "ferry");
        assert!(parts[1].len() == 16 && parts[1].bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(
            parts[2].len() == 32 + 6
                && parts[2].ends_with(".ferry")
                && parts[2][..32].bytes().all(|b| b.is_ascii_hexdigit()),
            "{rel:?}"
        );
        let bytes = std::fs::read(f).unwrap();
        for secret in secrets {
            let needle = secret.as_bytes();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{secret:?} is readable in {rel:?}"
            );
        }
        // The header: magic F, version 11 (every laptop here reads it), the dataset id, a
        // small member number.
        assert_eq!(&bytes[..2], b"F\x0b");
    }
}

/// "Each bundle has its own key, made from fresh randomness, so restoring a laptop from a
/// backup or cloning its disk never makes two bundles share a key."
#[test]
fn a_cloned_laptop_never_writes_a_bundle_under_the_same_key() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, _a, _b) = three(base);
    hq.ok(&["put", "visits", "v-1", "n=1"]);
    let clone = Laptop::new(base, "hq-clone");
    copy_dir(&hq.home, &clone.home);
    let (s1, s2) = (dir(base, "s1"), dir(base, "s2"));
    hq.ok(&["export", s(&s1)]);
    clone.ok(&["export", s(&s2)]);
    let (f1, f2) = (files(&s1).pop().unwrap(), files(&s2).pop().unwrap());
    let (b1, b2) = (std::fs::read(f1).unwrap(), std::fs::read(f2).unwrap());
    // Same dataset and sender; the 16 salt bytes after them (from which the bundle key is
    // derived together with the dataset key) differ, and so does everything sealed.
    assert_eq!(b1[..11], b2[..11]);
    assert_ne!(b1[11..27], b2[11..27], "the two copies drew the same salt");
    assert_ne!(b1[27..], b2[27..]);
}

/// "A laptop restored from an old backup, or a cloned disk, that goes on writing creates two
/// versions of its history. A laptop that sees both refuses the second, keeps the evidence
/// and passes it on with its next bundle; every laptop the evidence reaches checks it and
/// from then on accepts nothing more from that member."
#[test]
fn a_restored_backup_that_writes_again_is_frozen_wherever_the_evidence_reaches() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let s0 = dir(base, "s0");
    for l in [&hq, &a, &b, &hq, &a, &b] {
        l.ok(&["sync", s(&s0)]);
    }
    // Clinic A's disk is copied (a backup), then A goes on working and reaches HQ.
    let restored = Laptop::new(base, "a-restored");
    copy_dir(&a.home, &restored.home);
    a.ok(&["put", "visits", "v-a", "village=Obunga"]);
    let s1 = dir(base, "s1");
    a.ok(&["export", s(&s1)]);
    hq.ok(&["import", s(&s1)]);
    // The backup is restored on another laptop, which writes as clinic A again.
    restored.ok(&["put", "visits", "v-r", "village=Forged"]);
    let s2 = dir(base, "s2");
    restored.ok(&["export", s(&s2)]);
    let (out, err) = hq.fails(&["import", s(&s2)]);
    assert!(out.contains("REFUSED"), "{out}");
    assert!(out.contains("two different versions"), "{out}");
    assert!(err.contains("refused"), "{err}");
    let frozen = |l: &Laptop| {
        l.status()["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["label"] == "clinic-a")
            .and_then(|m| m["frozen_from"].as_u64())
    };
    assert!(frozen(&hq).is_some(), "HQ froze clinic A");
    assert!(
        hq.ok(&["status"]).contains("FROZEN"),
        "`ferry status` says so"
    );
    // HQ's next bundle carries the evidence; clinic B checks it and freezes A too, though it
    // never saw the second version itself.
    let s3 = dir(base, "s3");
    hq.ok(&["export", s(&s3)]);
    assert!(frozen(&b).is_none());
    b.ok(&["import", s(&s3)]);
    assert_eq!(frozen(&b), frozen(&hq), "the evidence reached clinic B");
    // From then on B accepts nothing more from clinic A.
    a.ok(&["put", "visits", "v-a2", "village=Later"]);
    let s4 = dir(base, "s4");
    a.ok(&["export", s(&s4)]);
    let (out, _) = b.fails(&["import", s(&s4)]);
    assert!(out.contains("frozen"), "{out}");
    assert!(!b.list("visits").contains("v-a2"));
    // The laptop that was copied learns it too, and is told.
    a.ok(&["import", s(&s3)]);
    assert!(
        a.ok(&["status"])
            .contains("another device also writes as this laptop"),
        "{}",
        a.ok(&["status"])
    );
}

fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}
