//! Issue 12, "no silent success" and "errors that say what to do": each case that printed
//! nothing (exit 0) or a line a clerk cannot act on now gets one line that says what
//! happened and what to do, and the exit status the README documents (0 worked, 1 failed,
//! 2 the command line itself is wrong). Each test asserts the line's key words and the
//! status.

use crate::util::{Laptop, files, s, three};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A laptop that made a new dataset, with three visits.
fn hq_with_visits(base: &Path) -> Laptop {
    let hq = Laptop::new(base, "hq");
    hq.ok(&["init", "--name", "hq", "--create", "visits"]);
    for i in 1..=3 {
        hq.ok(&["put", "visits", &format!("v{i}"), &format!("a={i}")]);
    }
    hq
}

fn dir(base: &Path, name: &str) -> PathBuf {
    let d = base.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The dataset id of a laptop (hex).
fn dataset_id(l: &Laptop) -> String {
    l.status()["dataset_id"].as_str().unwrap().to_string()
}

// ---- 1. import of the wrong folder --------------------------------------------------------

#[test]
fn import_of_an_empty_folder_says_it_holds_no_bundles_and_fails() {
    let base = tempfile::tempdir().unwrap();
    let hq = hq_with_visits(base.path());
    let empty = dir(base.path(), "empty");
    let (out, err) = hq.fails(&["import", s(&empty)]);
    assert_eq!(out, "");
    assert!(
        err.contains("no ferry bundles in") && err.contains("it holds no files"),
        "{err}"
    );
    assert!(err.contains("*.ferry under ferry/<dataset id>/"), "{err}");
    assert!(
        err.contains(&format!("ferry/{}/", dataset_id(&hq))),
        "{err}"
    );
}

#[test]
fn import_of_a_folder_of_other_files_names_them_and_says_what_a_bundle_is() {
    let base = tempfile::tempdir().unwrap();
    let hq = hq_with_visits(base.path());
    let docs = dir(base.path(), "docs");
    for name in ["a.txt", "b.doc", "c", "d.pdf"] {
        std::fs::write(docs.join(name), b"not ferry's").unwrap();
    }
    let (_, err) = hq.fails(&["import", s(&docs)]);
    assert!(
        err.contains("no ferry bundles in") && err.contains("4 other files: a.txt, b.doc, c, …"),
        "{err}"
    );
    assert!(err.contains("files named *.ferry"), "{err}");
}

#[test]
fn import_of_another_datasets_stick_names_both_datasets_and_fails() {
    let base = tempfile::tempdir().unwrap();
    let hq = hq_with_visits(base.path());
    let other = Laptop::new(base.path(), "other");
    other.ok(&["init", "--name", "o", "--create", "stock"]);
    other.ok(&["put", "stock", "s1", "nets=100"]);
    let stick = dir(base.path(), "stick");
    other.ok(&["sync", s(&stick)]);
    let (_, err) = hq.fails(&["import", s(&stick)]);
    assert!(
        err.contains("only bundles of another dataset")
            && err.contains(&dataset_id(&other))
            && err.contains(&dataset_id(&hq))
            && err.contains("\"visits\""),
        "{err}"
    );
    assert!(
        files(&hq.home.join("quarantine")).is_empty(),
        "nothing was read"
    );
}

/// The right stick with nothing on it for this dataset yet is not an error.
#[test]
fn import_of_this_datasets_empty_folder_says_there_is_nothing_to_import() {
    let base = tempfile::tempdir().unwrap();
    let hq = hq_with_visits(base.path());
    let stick = dir(base.path(), "stick");
    dir(&stick.join("ferry"), &dataset_id(&hq));
    let out = hq.ok(&["import", s(&stick)]);
    assert!(out.starts_with("nothing to import"), "{out}");
}

// ---- 2. an unknown collection; `ferry collections` ---------------------------------------

#[test]
fn list_of_an_unknown_collection_names_the_collections_there_are() {
    let base = tempfile::tempdir().unwrap();
    let hq = hq_with_visits(base.path());
    let (out, err) = hq.fails(&["list", "visit"]);
    assert_eq!(out, "");
    assert!(
        err.contains("no collection named \"visit\"; collections here: visits (3 records)"),
        "{err}"
    );
    for cmd in ["get", "delete"] {
        let (_, err) = hq.fails(&[cmd, "visit", "v1"]);
        assert!(err.contains("collections here: visits"), "{cmd}: {err}");
    }
    // For scripts the answer stays `[]`; stderr says why.
    let out = hq.run(&["list", "visit", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]\n");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("warning: no collection named \"visit\"; collections here: visits"),
        "{}",
        text(&out)
    );
    // A laptop with no records at all says how records get there.
    let fresh = Laptop::new(base.path(), "fresh");
    fresh.ok(&["init", "--name", "f", "--create", "x"]);
    let (_, err) = fresh.fails(&["list", "visits"]);
    assert!(
        err.contains("no records yet") && err.contains("sync"),
        "{err}"
    );
    // A collection whose records were all deleted exists: empty, not an error.
    hq.ok(&["put", "tmp", "t1", "x=1"]);
    hq.ok(&["delete", "tmp", "t1"]);
    assert_eq!(hq.ok(&["list", "tmp"]), "");
}

#[test]
fn collections_lists_names_and_live_record_counts() {
    let base = tempfile::tempdir().unwrap();
    let hq = hq_with_visits(base.path());
    hq.ok(&["put", "stock", "kisumu", "nets=100"]);
    hq.ok(&["delete", "visits", "v3"]);
    assert_eq!(
        hq.ok(&["collections"]),
        "stock  1 record\nvisits  2 records\n"
    );
    let json: serde_json::Value = serde_json::from_str(&hq.ok(&["collections", "--json"])).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"name": "stock", "records": 1},
            {"name": "visits", "records": 2},
        ])
    );
    let fresh = Laptop::new(base.path(), "fresh");
    fresh.ok(&["init", "--name", "f", "--create", "x"]);
    assert!(fresh.ok(&["collections"]).starts_with("No collections yet"));
    assert_eq!(fresh.ok(&["collections", "--json"]), "[]\n");
}

// ---- 3. sync one level too deep ----------------------------------------------------------

#[test]
fn sync_to_the_ferry_folder_of_a_stick_is_refused_and_names_the_stick() {
    let base = tempfile::tempdir().unwrap();
    let hq = hq_with_visits(base.path());
    let usb = dir(base.path(), "usb");
    hq.ok(&["sync", s(&usb)]);
    let before = files(&usb);
    let top = usb.canonicalize().unwrap();
    // The stick's `ferry` folder, and a dataset folder in it.
    let ferry = usb.join("ferry");
    let dataset = ferry.join(dataset_id(&hq));
    for (given, words) in [
        (&ferry, "one level too deep"),
        (&dataset, "the folder of one dataset"),
    ] {
        for cmd in ["sync", "export"] {
            let (_, err) = hq.fails(&[cmd, s(given)]);
            assert!(err.contains(words), "{cmd} {}: {err}", given.display());
            assert!(
                err.contains(&format!(
                    "give the stick's top folder instead ({})",
                    top.display()
                )),
                "{err}"
            );
        }
    }
    // A folder named `ferry` that has no dataset folders yet (made by hand).
    let hand = dir(base.path(), "usb2").join("ferry");
    std::fs::create_dir(&hand).unwrap();
    let (_, err) = hq.fails(&["sync", s(&hand)]);
    assert!(
        err.contains("named ferry") && err.contains("too deep"),
        "{err}"
    );
    assert_eq!(files(&usb), before, "nothing was written");
    assert!(files(&base.path().join("usb2")).is_empty());
}

// ---- 4. receive email without settings ---------------------------------------------------

#[test]
fn receive_email_without_settings_says_that_none_exist_and_how_to_set_them() {
    let base = tempfile::tempdir().unwrap();
    let hq = hq_with_visits(base.path());
    let (out, err) = hq.fails(&["receive", "email"]);
    assert!(!out.contains("no new ferry email"), "{out}");
    assert!(
        err.contains("no email settings")
            && err.contains("ferry.toml")
            && err.contains("[email]")
            && err.contains("imap_url"),
        "{err}"
    );
    // A section without a mailbox says which setting is missing.
    std::fs::write(
        hq.home.join("ferry.toml"),
        "[email]\nfrom = \"hq@example.org\"\nsmtp_url = \"smtp://127.0.0.1:2525\"\n",
    )
    .unwrap();
    let (_, err) = hq.fails(&["receive", "email"]);
    assert!(
        err.contains("names no mailbox to read") && err.contains("imap_url"),
        "{err}"
    );
}

// ---- 5. sync to a read-only stick --------------------------------------------------------

/// `stick` made read-only until dropped: as root (who writes through file modes), a
/// read-only bind mount of it over itself; else its folders' modes.
struct ReadOnly {
    at: PathBuf,
    mounted: bool,
}

impl ReadOnly {
    fn make(at: &Path) -> ReadOnly {
        let uid = Command::new("id").arg("-u").output().expect("run id -u");
        let root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let run = |args: &[&str]| {
            Command::new(args[0])
                .args(&args[1..])
                .status()
                .is_ok_and(|s| s.success())
        };
        if root {
            let mounted = run(&["mount", "--bind", s(at), s(at)]);
            assert!(mounted, "mount --bind failed");
            let ro = ReadOnly {
                at: at.to_path_buf(),
                mounted: true,
            };
            assert!(
                run(&["mount", "-o", "remount,bind,ro", s(at)]),
                "remount read-only failed"
            );
            ro
        } else {
            assert!(run(&["chmod", "-R", "a-w", s(at)]), "chmod failed");
            ReadOnly {
                at: at.to_path_buf(),
                mounted: false,
            }
        }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.at).status();
        } else {
            let _ = Command::new("chmod")
                .args(["-R", "u+w"])
                .arg(&self.at)
                .status();
        }
    }
}

#[test]
fn sync_to_a_read_only_stick_reports_the_import_then_the_write_error() {
    let base = tempfile::tempdir().unwrap();
    let (hq, a, _) = three(base.path());
    hq.ok(&["put", "visits", "v-hq", "village=Obunga"]);
    a.ok(&["put", "visits", "v-a", "village=Kondele"]);
    let stick = dir(base.path(), "stick");
    hq.ok(&["sync", s(&stick)]);
    let before = files(&stick);
    let out = {
        let _ro = ReadOnly::make(&stick);
        a.run(&["sync", s(&stick)])
    };
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("applied") && l.contains("from hq")),
        "the import is reported\n{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("imported 1 bundle from the medium")
            && err.contains("applied and kept")
            && err.contains("writing to the medium failed")
            && err.contains(&format!("run `ferry sync {}` again", stick.display())),
        "{err}"
    );
    assert!(a.list("visits").contains("v-hq"), "the import is kept");
    assert_eq!(files(&stick), before, "nothing was written");
}

// ---- 6. errors that say what to do -------------------------------------------------------

#[test]
fn a_damaged_bundle_says_to_copy_it_again_from_the_sender() {
    let base = tempfile::tempdir().unwrap();
    let (hq, a, _) = three(base.path());
    let stick = dir(base.path(), "stick");
    hq.ok(&["sync", s(&stick)]);
    let bundle = files(&stick).pop().unwrap();
    let mut bytes = std::fs::read(&bundle).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let damaged = base.path().join("damaged.ferry");
    std::fs::write(&damaged, &bytes).unwrap();
    let (out, _) = a.fails(&["import", s(&damaged)]);
    let line = out.lines().find(|l| l.starts_with("REFUSED")).unwrap();
    assert!(
        line.contains("damaged or truncated") && line.contains("copy it again from the sender"),
        "{line}"
    );
    // The detail comes after the advice.
    let advice = line.find("copy it again").unwrap();
    assert!(
        line.find("failed authentication").unwrap() > advice,
        "{line}"
    );
    let (_, err) = a.fails(&["verify", s(&damaged)]);
    assert!(err.contains("copy it again from the sender"), "{err}");
}

/// An invitation from an earlier ferry (in clear, without a checksum) with one byte changed:
/// it is damaged, not forged, and the line says to ask for it again.
#[test]
fn a_damaged_invitation_says_damaged_and_ask_for_it_again_not_forgery() {
    let base = tempfile::tempdir().unwrap();
    let hq = hq_with_visits(base.path());
    let sealed = base.path().join("sealed.invite");
    let code = hq.invite(&sealed, "clinic-a").unwrap();
    let inv = ferry_node::invite::open(
        &std::fs::read(&sealed).unwrap(),
        &ferry_node::invite::InviteCode::parse(&code).unwrap(),
    )
    .unwrap();
    let mut bytes = b"ferryinv".to_vec();
    bytes.extend(postcard::to_allocvec(&inv).unwrap());
    // The invitation secret is the last field: its last byte, changed.
    *bytes.last_mut().unwrap() ^= 0x01;
    let damaged = base.path().join("old.invite");
    std::fs::write(&damaged, bytes).unwrap();
    let a = Laptop::new(base.path(), "a");
    let (_, err) = a.fails(&["init", "--name", "clinic-a", "--join", s(&damaged)]);
    assert!(!err.contains("not signed by"), "{err}");
    assert!(
        err.contains("damaged") && err.contains("ask the admin for the file again"),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_named_in_plain_words() {
    let base = tempfile::tempdir().unwrap();
    let hq = hq_with_visits(base.path());
    let missing = base.path().join("no-such.ferry");
    for args in [
        vec!["import", s(&missing)],
        vec!["verify", s(&missing)],
        vec!["load", "visits", s(&missing)],
        vec!["init", "--name", "x", "--join", s(&missing)],
    ] {
        let l = if args[0] == "init" {
            Laptop::new(base.path(), "new")
        } else {
            Laptop {
                home: hq.home.clone(),
            }
        };
        let (_, err) = l.fails(&args);
        assert!(!err.contains("os error"), "{args:?}: {err}");
        assert!(
            err.contains("no such file or folder") && err.contains(s(&missing)),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn verify_of_another_datasets_bundle_names_no_local_member_as_sender() {
    let base = tempfile::tempdir().unwrap();
    let hq = hq_with_visits(base.path());
    let other = Laptop::new(base.path(), "other");
    other.ok(&["init", "--name", "o-admin", "--create", "stock"]);
    let stick = dir(base.path(), "stick");
    other.ok(&["sync", s(&stick)]);
    let bundle = files(&stick).pop().unwrap();
    let (out, err) = hq.fails(&["verify", s(&bundle)]);
    let sender = out.lines().find(|l| l.starts_with("sender")).unwrap();
    assert!(!sender.contains("hq"), "{out}");
    assert!(sender.contains("other dataset"), "{out}");
    assert!(
        err.contains("belongs to another dataset")
            && err.contains(&dataset_id(&other))
            && err.contains("\"visits\""),
        "{err}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&hq.run(&["verify", s(&bundle), "--json"]).stdout).unwrap();
    assert_eq!(json["sender"], serde_json::json!([1, ""]));
}

// ---- 7. usage mistakes exit 2 ------------------------------------------------------------

#[test]
fn usage_mistakes_exit_2_with_one_line_that_shows_the_right_form() {
    let base = tempfile::tempdir().unwrap();
    let hq = hq_with_visits(base.path());
    let err = hq.misuse(&["put", "visits", "v9", "weight"]);
    assert!(
        err.contains("is not FIELD=VALUE") && err.contains("weight_kg=61.5"),
        "{err}"
    );
    let err = hq.misuse(&["contact", "set"]);
    assert!(err.contains("--email") && err.contains("--phone"), "{err}");
    let err = hq.misuse(&["contact", "set", "--email", "not-an-address"]);
    assert!(err.contains("not an email address"), "{err}");
    let err = hq.misuse(&["rule", "set", "visits", "temp_c", "maximum"]);
    assert!(err.contains("unknown rule") && err.contains("max"), "{err}");
    let err = hq.misuse(&["put", "_rules", "x", "a=1"]);
    assert!(err.contains("reserved"), "{err}");
    let err = hq.misuse(&["put", "visits", "v9", "id=7"]);
    assert!(err.contains("record id"), "{err}");
    // Not usage mistakes: the command line is right, the work failed.
    hq.fails(&["resolve", "visits", "v1", "a", "2"]);
    hq.fails(&["get", "visits", "no-such-id"]);
}

// ---- `ferry doctor` ----------------------------------------------------------------------

/// A member that never synced holds back compaction and purge, by name; a home others can
/// read is a problem (exit 1) with the command that fixes it; a stick's bundles are counted.
#[test]
fn doctor_names_who_holds_back_compaction_and_what_is_wrong() {
    let base = tempfile::tempdir().unwrap();
    let (hq, a, _b) = three(base.path());
    hq.ok(&["put", "visits", "v1", "a=1"]);
    hq.ok(&["put", "visits", "v2", "a=2"]);
    hq.ok(&["delete", "visits", "v2"]);
    let stick = dir(base.path(), "stick");
    // (HQ's second sync records which device it accepted as A, which A then takes.)
    for l in [&hq, &a, &hq, &a, &hq] {
        l.ok(&["sync", s(&stick)]);
    }
    let out = hq.ok(&["doctor", s(&stick)]);
    let line = |area: &str| {
        out.lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(area))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(line("store").starts_with("ok"), "{out}");
    assert!(line("home").starts_with("ok"), "{out}");
    let holding = line("compaction");
    assert!(
        holding.starts_with("note")
            && holding.contains("clinic-b")
            && holding.contains("holds back compaction")
            && holding.contains("nothing heard from it yet")
            && !holding.contains("clinic-a"),
        "{out}"
    );
    assert!(
        line("purge").contains("1 of 1 deleted records are kept until clinic-b"),
        "{out}"
    );
    assert!(
        line("stick").contains("bundles of this dataset")
            && line("stick").contains("read or written by this laptop"),
        "{out}"
    );
    // A home other users can read.
    let status = Command::new("chmod")
        .arg("755")
        .arg(&hq.home)
        .status()
        .unwrap();
    assert!(status.success());
    let (out, err) = hq.fails(&["doctor"]);
    let problem = out.lines().find(|l| l.starts_with("PROBLEM")).unwrap();
    assert!(
        problem.contains("home") && problem.contains(&format!("chmod 700 {}", hq.home.display())),
        "{out}"
    );
    assert!(err.contains("doctor found a problem"), "{err}");
    let json: serde_json::Value =
        serde_json::from_slice(&hq.run(&["doctor", "--json"]).stdout).unwrap();
    assert!(
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["severity"] == "problem" && f["area"] == "home"),
        "{json}"
    );
}

// ---- a second process waiting for the home -----------------------------------------------

/// While one `ferry load -` holds the store's write lock (reading its standard input), a
/// `ferry put` on the same home waits, and after a second says for whom: the process id
/// and command of the load. It then finishes once the load has.
#[test]
fn a_command_waiting_for_the_home_says_for_whom() {
    use std::io::Write;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let base = tempfile::tempdir().unwrap();
    let hq = hq_with_visits(base.path());
    let mut load = hq
        .cmd(&["load", "visits", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let load_pid = load.id();
    let mut input = load.stdin.take().unwrap();
    writeln!(input, r#"{{"id": "v-loaded", "a": 9}}"#).unwrap();
    // The load has opened the home (its note is there) and then takes the lock at once.
    let running = hq.home.join("running");
    let started = Instant::now();
    let noted = || {
        std::fs::read_dir(&running).is_ok_and(|mut d| {
            d.any(|e| {
                e.is_ok_and(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{load_pid}-"))
                })
            })
        })
    };
    while !noted() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the load never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let put = hq
        .cmd(&["put", "visits", "v-put", "a=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    drop(input);
    let load = load.wait_with_output().unwrap();
    assert!(load.status.success(), "{}", text(&load));
    let put = put.wait_with_output().unwrap();
    assert!(put.status.success(), "{}", text(&put));
    let err = String::from_utf8_lossy(&put.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("waiting for another ferry on this home")
            && err.contains(&format!("process {load_pid} "))
            && err.contains("load visits -")
            && err.contains("running since"),
        "{err}"
    );
    let list = hq.ok(&["list", "visits"]);
    assert!(
        list.contains("v-loaded") && list.contains("v-put"),
        "{list}"
    );
    assert!(
        std::fs::read_dir(&running).unwrap().next().is_none(),
        "every note is removed when its process ends"
    );
}
