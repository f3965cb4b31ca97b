//! Encryption at rest (issue 13, item 4): a home protected by a passphrase holds no record
//! value and no dataset key in clear, anywhere in its folder, and a wrong or missing
//! passphrase is one clear line.

use crate::forge::dataset_key;
use crate::util::{Laptop, s};
use std::path::{Path, PathBuf};

/// A file holding `text` (how FERRY_PASSPHRASE_FILE gives a passphrase).
fn phrase_file(base: &Path, name: &str, text: &str) -> PathBuf {
    let p = base.join(name);
    std::fs::write(&p, format!("{text}\n")).unwrap();
    p
}

/// Runs `l` with the passphrase in `file` (and, when given, a new one in `new`).
fn run(l: &Laptop, file: &Path, new: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut c = l.cmd(args);
    c.env("FERRY_PASSPHRASE_FILE", file);
    match new {
        Some(n) => c.env("FERRY_NEW_PASSPHRASE_FILE", n),
        None => c.env_remove("FERRY_NEW_PASSPHRASE_FILE"),
    };
    c.stdin(std::process::Stdio::null());
    c.output().unwrap()
}

fn ok(l: &Laptop, file: &Path, args: &[&str]) -> String {
    let out = run(l, file, None, args);
    assert!(
        out.status.success(),
        "ferry {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every file below `dir`, with its bytes.
fn every_file(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Fails if any file below `home` holds one of `needles`.
fn nothing_in_clear(home: &Path, needles: &[(String, Vec<u8>)]) -> usize {
    let files = every_file(home);
    for (path, bytes) in &files {
        for (what, needle) in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == &needle[..]),
                "{} holds {what} in clear",
                path.display()
            );
        }
    }
    files.len()
}

/// The values the test loads: distinctive strings no encoding would make by chance.
fn values(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("Zyxwvut-patient-{i:04}-Nyalenda"))
        .collect()
}

#[test]
fn a_protected_home_holds_no_value_or_key_in_clear_and_its_passphrase_can_change() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let stick = base.join("stick");
    std::fs::create_dir(&stick).unwrap();
    let first = phrase_file(base, "p1", "mango tree by the well");
    let second = phrase_file(base, "p2", "three goats and a radio");

    // hq (no passphrase) invites clinic-a, which joins with a passphrase.
    let hq = Laptop::new(base, "hq");
    hq.ok(&["init", "--name", "hq", "--create", "clinic visits"]);
    let inv = base.join("a.invite");
    let code = hq.invite(&inv, "clinic-a").unwrap();
    let a = Laptop::new(base, "a");
    ok(
        &a,
        &first,
        &["init", "--join", s(&inv), "--code", &code, "--passphrase"],
    );
    assert!(a.home.join("store.key").is_file());

    // clinic-a loads 300 records, edits, deletes and restores, and syncs both ways.
    let vals = values(300);
    let lines: String = vals
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{{\"id\":\"p-{i:04}\",\"name\":\"{v}\",\"age\":{}}}\n",
                20 + i % 60
            )
        })
        .collect();
    let file = base.join("patients.jsonl");
    std::fs::write(&file, lines).unwrap();
    ok(&a, &first, &["load", "patients", s(&file)]);
    std::fs::remove_file(&file).unwrap();
    ok(
        &a,
        &first,
        &[
            "put",
            "patients",
            "p-0001",
            "village=Zyxwvut-village-Kondele",
        ],
    );
    ok(&a, &first, &["delete", "patients", "p-0002"]);
    ok(&a, &first, &["restore", "patients", "p-0002"]);
    ok(&a, &first, &["sync", s(&stick)]);
    hq.ok(&["sync", s(&stick)]);
    hq.ok(&["put", "patients", "p-hq", "name=Zyxwvut-from-hq-Obunga"]);
    hq.ok(&["sync", s(&stick)]);
    ok(&a, &first, &["sync", s(&stick)]);
    ok(&a, &first, &["compact"]);
    assert_eq!(
        hq.list("patients"),
        ok(&a, &first, &["list", "patients", "--json"])
    );
    assert!(ok(&a, &first, &["get", "patients", "p-hq"]).contains("Zyxwvut-from-hq-Obunga"));

    // Nothing in clear: not one value, not the dataset key (raw or hex).
    let key = dataset_key(&hq);
    let mut needles: Vec<(String, Vec<u8>)> = vals
        .iter()
        .map(|v| (format!("the value {v}"), v.as_bytes().to_vec()))
        .collect();
    needles.push(("a village".into(), b"Zyxwvut-village".to_vec()));
    needles.push(("hq's value".into(), b"Zyxwvut-from-hq".to_vec()));
    needles.push(("the word Zyxwvut".into(), b"Zyxwvut".to_vec()));
    needles.push(("the dataset key".into(), key.to_vec()));
    needles.push(("the dataset key in hex".into(), hex(&key).into_bytes()));
    let scanned = nothing_in_clear(&a.home, &needles);
    assert!(
        scanned >= 2,
        "the store and its key file at least: {scanned}"
    );
    // The check can fail: hq's home, without a passphrase, holds them.
    assert!(
        every_file(&hq.home)
            .iter()
            .any(|(_, b)| b.windows(7).any(|w| w == b"Zyxwvut")),
        "hq's plain store holds the values"
    );

    // A wrong passphrase, or none, is one line and changes nothing.
    for (file, env) in [(Some(&second), true), (None, false)] {
        let mut c = a.cmd(&["list", "patients"]);
        match (file, env) {
            (Some(f), true) => c.env("FERRY_PASSPHRASE_FILE", f),
            _ => c.env_remove("FERRY_PASSPHRASE_FILE"),
        };
        let out = c.stdin(std::process::Stdio::null()).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("passphrase does not open")
                || err.contains("is protected by a passphrase"),
            "{err}"
        );
    }

    // The passphrase changes; the old one stops working, the new one opens everything.
    let out = run(&a, &first, Some(&second), &["passphrase", "set"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&a, &first, None, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    hq.ok(&["put", "patients", "p-hq2", "age=41"]);
    hq.ok(&["sync", s(&stick)]);
    ok(&a, &second, &["sync", s(&stick)]);
    assert_eq!(
        hq.list("patients"),
        ok(&a, &second, &["list", "patients", "--json"])
    );
    nothing_in_clear(&a.home, &needles);
}

#[test]
fn a_home_protected_later_is_encrypted_in_place_and_a_short_passphrase_is_refused() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = Laptop::new(base, "hq");
    hq.ok(&["init", "--name", "hq", "--create", "clinic visits"]);
    for (i, v) in values(20).iter().enumerate() {
        hq.ok(&["put", "visits", &format!("v{i}"), &format!("who={v}")]);
    }
    let before = hq.list("visits");
    let short = phrase_file(base, "short", "mango");
    let out = run(&hq, &short, Some(&short), &["passphrase", "set"]);
    assert_eq!(out.status.code(), Some(2), "a usage mistake");
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8 characters"));
    assert!(!hq.home.join("store.key").exists(), "nothing changed");

    let good = phrase_file(base, "good", "mango tree by the well");
    let out = run(&hq, &good, Some(&good), &["passphrase", "set"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("now encrypted"));
    let needles: Vec<(String, Vec<u8>)> = values(20)
        .into_iter()
        .map(|v| (v.clone(), v.into_bytes()))
        .collect();
    nothing_in_clear(&hq.home, &needles);
    assert_eq!(ok(&hq, &good, &["list", "visits", "--json"]), before);
    // Without it, ferry says what to do, in one line.
    let out = hq
        .cmd(&["list", "visits"])
        .env_remove("FERRY_PASSPHRASE_FILE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("FERRY_PASSPHRASE_FILE"), "{err}");
}

/// Copies a home folder (as a backup or a second disk would hold it).
fn copy_home(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// A passphrase change gives the store a new key too, so an old `store.key` with the old
/// passphrase opens nothing written after; and a change that stopped midway (the power
/// failed) is finished or undone at the next command, with one line saying which
/// passphrase to type when the one typed is not it.
#[test]
fn a_passphrase_change_rotates_the_store_key_and_survives_a_stop_at_any_step() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let old = phrase_file(base, "old", "mango tree by the well");
    let new = phrase_file(base, "new", "three goats and a radio");
    let hq = Laptop::new(base, "hq");
    ok(
        &hq,
        &old,
        &[
            "init",
            "--name",
            "hq",
            "--create",
            "clinic visits",
            "--passphrase",
        ],
    );
    ok(&hq, &old, &["put", "visits", "v1", "who=Zyxwvut-one"]);
    // Before the change: a copy of the home with the old key file (a thief's copy).
    let before = base.join("before");
    copy_home(&hq.home, &before);

    // The change, on a copy: a home whose change completed.
    let after = base.join("after");
    copy_home(&hq.home, &after);
    let changed = Laptop::new(base, "after");
    let out = run(&changed, &old, Some(&new), &["passphrase", "set"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&changed, &new, &["put", "visits", "v2", "who=Zyxwvut-two"]);
    // The old key file with the old passphrase does not open the store written since.
    std::fs::copy(before.join("store.key"), base.join("thief.key")).unwrap();
    let thief = base.join("thief");
    copy_home(&after, &thief);
    std::fs::copy(base.join("thief.key"), thief.join("store.key")).unwrap();
    let out = run(&Laptop::new(base, "thief"), &old, None, &["list", "visits"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the old key no longer opens the store"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Zyxwvut"));

    // A stop after the new key was sealed, before the store was touched: the old
    // passphrase opens it (and the half-made change is dropped); the new one is told so.
    let early = base.join("early");
    copy_home(&hq.home, &early);
    std::fs::copy(after.join("store.key"), early.join("store.key.next")).unwrap();
    let early = Laptop::new(base, "early");
    let out = run(&early, &new, None, &["list", "visits"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("opens with the one it had before"), "{err}");
    assert!(ok(&early, &old, &["list", "visits"]).contains("Zyxwvut-one"));
    assert!(!early.home.join("store.key.next").exists());

    // A stop after the store was re-encrypted, before the new key file was put in place:
    // the new passphrase opens it and finishes the change; the old one is told so.
    let late = base.join("late");
    copy_home(&after, &late);
    std::fs::rename(late.join("store.key"), late.join("store.key.next")).unwrap();
    std::fs::copy(before.join("store.key"), late.join("store.key")).unwrap();
    let late = Laptop::new(base, "late");
    let out = run(&late, &old, None, &["list", "visits"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("opens with the new one"), "{err}");
    assert!(ok(&late, &new, &["list", "visits"]).contains("Zyxwvut-two"));
    assert!(!late.home.join("store.key.next").exists());
    assert!(ok(&late, &new, &["status"]).contains("records"));
}
