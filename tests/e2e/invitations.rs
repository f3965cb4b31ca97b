//! Invitations: member numbers allocated once across processes (issue 10, finding 7), and
//! invitation files sealed with a one-time code (issue 10, finding 11).

use crate::util::{Laptop, files, invite_code, s};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The member number in `ferry invite`'s output: `… (member #N) …`.
fn member_number(stdout: &str) -> u32 {
    let rest = stdout
        .split("(member #")
        .nth(1)
        .unwrap_or_else(|| panic!("no member number in {stdout:?}"));
    rest.split(')').next().unwrap().parse().unwrap()
}

fn admin(base: &Path) -> Laptop {
    let hq = Laptop::new(base, "hq");
    hq.ok(&["init", "--name", "hq", "--create", "clinic visits"]);
    hq
}

/// The member numbers `status` lists (joined or invited).
fn listed_members(l: &Laptop) -> Vec<u64> {
    l.status()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["member"].as_u64().unwrap())
        .collect()
}

/// Each laptop in turn syncs with one stick.
fn round(stick: &Path, laptops: &[&Laptop]) {
    for l in laptops {
        l.ok(&["sync", s(stick)]);
    }
}

/// Regression test for issue 10, finding 7: two `ferry invite` at the same time on one
/// admin home issued the same member number, and the second laptop to join had every bundle
/// refused. 20 rounds of two concurrent invites: 40 distinct numbers; both laptops of one
/// round join, and their records reach everyone through a stick.
#[test]
fn two_invites_at_once_never_issue_the_same_member_number() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = admin(base);
    let mut issued = Vec::new();
    for round in 0..20 {
        let children: Vec<_> = (0..2)
            .map(|k| {
                let label = format!("c{round}-{k}");
                let file = base.join(format!("{label}.invite"));
                let child = hq
                    .cmd(&["invite", "--out", s(&file), "--label", &label])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn ferry invite");
                (label, file, child)
            })
            .collect();
        for (label, file, child) in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", text(&out));
            let stdout = String::from_utf8(out.stdout).unwrap();
            let code = invite_code(&stdout).expect("a code line");
            issued.push((member_number(&stdout), label, file, code));
        }
    }
    let mut numbers: Vec<u32> = issued.iter().map(|i| i.0).collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers, (2..42).collect::<Vec<u32>>(), "{issued:?}");
    let mut listed = listed_members(&hq);
    listed.sort();
    assert_eq!(listed, (1..42).collect::<Vec<u64>>());

    // Both invitations of the last round join and sync.
    let stick = base.join("stick");
    std::fs::create_dir(&stick).unwrap();
    let pair: Vec<Laptop> = issued[38..]
        .iter()
        .map(|(n, label, file, code)| {
            let l = Laptop::new(base, label);
            l.join(label, file, Some(code.as_str()));
            assert_eq!(l.status()["member"], *n);
            l.ok(&["put", "visits", &format!("v-{label}"), "village=Obunga"]);
            l
        })
        .collect();
    hq.ok(&["put", "visits", "v-hq", "village=Kisumu"]);
    let (x, y) = (&pair[0], &pair[1]);
    round(&stick, &[x, &hq, y, &hq, x, y]);
    let all = hq.list("visits");
    for id in [
        "v-hq",
        &format!("v-{}", issued[38].1),
        &format!("v-{}", issued[39].1),
    ] {
        assert!(all.contains(id), "{id} missing at hq: {all}");
    }
    assert_eq!(x.list("visits"), all);
    assert_eq!(y.list("visits"), all);
    for l in [&hq, x, y] {
        assert_eq!(l.status()["quarantined"], 0, "nothing was refused");
    }
}

/// Finding 7, the other half: a number is reserved before the file is written, so a file
/// that cannot be written uses up its number but leaves no member to wait for, no partly
/// written file, and the next invite works.
#[test]
fn an_invitation_that_cannot_be_written_leaves_nothing_in_the_way_of_the_next() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = admin(base);
    let missing = base.join("no-such-folder").join("a.invite");
    let (_, err) = hq.fails(&["invite", "--out", s(&missing), "--label", "lost"]);
    assert!(err.contains("no-such-folder"), "{err}");
    assert_eq!(
        listed_members(&hq),
        [1],
        "the failed invitation is not a member"
    );

    // An existing file is refused before any number is used.
    let taken = base.join("taken.invite");
    std::fs::write(&taken, b"something else").unwrap();
    let (_, err) = hq.fails(&["invite", "--out", s(&taken)]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&taken).unwrap(), b"something else");

    let inv = base.join("a.invite");
    let out = hq.ok(&["invite", "--out", s(&inv), "--label", "clinic-a"]);
    assert_eq!(member_number(&out), 3, "number 2 stays used up: {out}");
    let a = Laptop::new(base, "a");
    a.join("clinic-a", &inv, invite_code(&out).as_deref());
    a.ok(&["put", "visits", "v-a", "village=Obunga"]);
    let stick = base.join("stick");
    std::fs::create_dir(&stick).unwrap();
    round(&stick, &[&a, &hq, &a]);
    assert!(hq.list("visits").contains("v-a"));
    // Nobody waits for member 2 (a member that can never join would hold back compaction
    // and the tidying of sticks for ever).
    assert_eq!(listed_members(&hq), [1, 3]);
    assert_eq!(listed_members(&a), [1, 3]);
}

/// A tmpfs mounted on a folder, unmounted when dropped (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "mounting a tmpfs failed: this test needs root (CI runs as root)"
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A stick that is full: the file is created, then writing it fails. The partly written
/// file is removed and the number is not left as a member.
#[test]
#[ignore = "needs root to mount a tmpfs — run tests/run"]
fn an_invitation_on_a_full_stick_leaves_no_partial_file() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = admin(base);
    let stick = base.join("full-stick");
    let _mount = Tmpfs::mount(&stick, "8k");
    // Fill it.
    let mut filler = std::fs::File::create(stick.join("filler")).unwrap();
    while filler.write_all(&[0u8; 512]).is_ok() {}
    let _ = filler.sync_all();
    drop(filler);
    let inv = stick.join("a.invite");
    let (_, err) = hq.fails(&["invite", "--out", s(&inv), "--label", "clinic-a"]);
    assert!(
        err.contains("cannot write") && err.contains("a.invite"),
        "{err}"
    );
    assert!(!inv.exists(), "the partly written invitation is removed");
    assert_eq!(listed_members(&hq), [1]);
    std::fs::remove_file(stick.join("filler")).unwrap();
    let out = hq.ok(&["invite", "--out", s(&inv), "--label", "clinic-a"]);
    assert_eq!(member_number(&out), 3, "{out}");
    let a = Laptop::new(base, "a");
    a.join("clinic-a", &inv, invite_code(&out).as_deref());
    assert_eq!(a.status()["member"], 3);
}

/// The code line as the issue states it: `code: XXXX-XXXX-XXXX`, Crockford's alphabet.
fn check_code_line(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("code: "))
        .unwrap_or_else(|| panic!("no `code: ` line in {stdout:?}"));
    let code = &line["code: ".len()..];
    let groups: Vec<&str> = code.split('-').collect();
    assert_eq!(groups.len(), 3, "{line:?}");
    for g in groups {
        assert_eq!(g.len(), 4, "{line:?}");
        assert!(
            g.chars()
                .all(|c| c.is_ascii_digit() || (c.is_ascii_uppercase() && !"ILOU".contains(c))),
            "{line:?}"
        );
    }
    code.to_string()
}

/// Finding 11: `init --join` without the code, with a wrong one, with one that is not a
/// code, and with it typed loosely; a damaged file; the file holds no secret in clear.
#[test]
fn joining_takes_the_one_time_code_and_says_what_to_do_without_it() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = admin(base);
    let inv = base.join("a.invite");
    let out = hq.ok(&["invite", "--out", s(&inv), "--label", "clinic-a"]);
    let code = check_code_line(&out);
    assert!(
        !std::fs::read(&inv)
            .unwrap()
            .windows(14)
            .any(|w| w == code.as_bytes())
    );

    let c = Laptop::new(base, "c");
    let join = |extra: &[&str]| {
        let mut args = vec!["init", "--name", "clinic-a", "--join", s(&inv)];
        args.extend(extra);
        c.fails(&args).1
    };
    // No code and no terminal: one line that says how to give it.
    let err = join(&[]);
    assert!(
        err.contains("one-time code")
            && err.contains("--code")
            && err.contains("FERRY_INVITE_CODE"),
        "{err}"
    );
    // The same code with its first symbol changed.
    let first = if code.starts_with('Z') { "Y" } else { "Z" };
    let wrong = format!("{first}{}", &code[1..]);
    let err = join(&["--code", &wrong]);
    assert!(
        err.contains("does not open") && err.contains("XXXX-XXXX-XXXX") && err.contains("admin"),
        "{err}"
    );
    let err = join(&["--code", "12345"]);
    assert!(err.contains("12 letters and digits"), "{err}");
    assert!(!c.home.join("ferry.db").exists(), "no half-made node");

    // A damaged file: the clear error, before any code is asked for.
    let damaged = base.join("damaged.invite");
    let mut bytes = std::fs::read(&inv).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&damaged, &bytes).unwrap();
    let (_, err) = c.fails(&[
        "init",
        "--name",
        "x",
        "--join",
        s(&damaged),
        "--code",
        &code,
    ]);
    assert!(err.contains("damaged or truncated"), "{err}");

    // Typed loosely: lower case, spaces for dashes, O for 0, L for 1.
    let loose = code
        .to_lowercase()
        .replace('-', " ")
        .replace('0', "o")
        .replace('1', "l");
    let a = Laptop::new(base, "a");
    let out = a.run(&[
        "init",
        "--name",
        "clinic-a",
        "--join",
        s(&inv),
        "--code",
        &loose,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
    assert_eq!(a.status()["member"], 2);
}

/// Finding 11: the code comes from `--code`, from `FERRY_INVITE_CODE`, or, when neither is
/// given and a terminal is attached, from one prompt on the terminal.
#[test]
fn the_code_comes_from_the_option_the_environment_or_the_terminal() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = admin(base);
    let stick = base.join("stick");
    std::fs::create_dir(&stick).unwrap();

    let inv_env = base.join("env.invite");
    let code = hq.invite(&inv_env, "by-env").unwrap();
    let by_env = Laptop::new(base, "by-env");
    let out = by_env
        .cmd(&["init", "--name", "by-env", "--join", s(&inv_env)])
        .env("FERRY_INVITE_CODE", &code)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(by_env.status()["member"], 2);

    // A terminal: `script` gives ferry a pseudo-terminal and types what we write.
    let inv_tty = base.join("tty.invite");
    let code = hq.invite(&inv_tty, "by-tty").unwrap();
    let by_tty = Laptop::new(base, "by-tty");
    let command = format!(
        "{} --home {} init --name by-tty --join {}",
        crate::util::ferry_bin(),
        s(&by_tty.home),
        s(&inv_tty)
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env_remove("FERRY_HOME")
        .env_remove("FERRY_INVITE_CODE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script (util-linux)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{code}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(shown.matches("Invitation code").count(), 1, "{shown}");
    assert_eq!(by_tty.status()["member"], 3);

    // Both sync with HQ.
    by_env.ok(&["put", "visits", "v-env", "village=Obunga"]);
    by_tty.ok(&["put", "visits", "v-tty", "village=Manyatta"]);
    round(&stick, &[&by_env, &by_tty, &hq, &by_env, &by_tty]);
    for l in [&by_env, &by_tty] {
        assert_eq!(l.list("visits"), hq.list("visits"));
    }
    assert!(hq.list("visits").contains("v-tty"));
}

/// Finding 11: an invitation in clear, as earlier ferry wrote it (`ferryinv` and the
/// invitation), is still accepted, with one NOTE line saying it is not protected.
#[test]
fn an_invitation_from_an_earlier_ferry_still_joins_with_a_note() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = admin(base);
    let sealed = base.join("sealed.invite");
    let code = hq.invite(&sealed, "clinic-a").unwrap();
    let inv = ferry_node::invite::open(
        &std::fs::read(&sealed).unwrap(),
        &ferry_node::invite::InviteCode::parse(&code).unwrap(),
    )
    .unwrap();
    let old = base.join("old.invite");
    let mut bytes = b"ferryinv".to_vec();
    bytes.extend(postcard::to_allocvec(&inv).unwrap());
    std::fs::write(&old, bytes).unwrap();

    let a = Laptop::new(base, "a");
    let out = a.run(&["init", "--name", "clinic-a", "--join", s(&old)]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("NOTE: ") && err.contains("not protected by a code"),
        "{err}"
    );
    assert_eq!(a.status()["member"], 2);
    let stick = base.join("stick");
    std::fs::create_dir(&stick).unwrap();
    a.ok(&["put", "visits", "v-a", "village=Obunga"]);
    round(&stick, &[&a, &hq]);
    assert!(hq.list("visits").contains("v-a"));
    assert!(!files(&stick).is_empty());
}

/// Issue 12, item 7: one invitation used on two laptops. The admin accepts the first join
/// it sees; the second laptop is told so by name after `sync` and in `status` (exit status
/// 1), and `ferry rejoin` with a new invitation carries what it typed — a value, a counter,
/// a tag — into the new membership, keeps the old database, and removes the bundles it wrote
/// as the refused member from the stick; then everyone converges.
#[test]
fn a_laptop_whose_invitation_was_used_elsewhere_is_told_and_rejoins_with_its_records() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = admin(base);
    hq.ok(&["rule", "set", "stock", "boxes", "counter"]);
    hq.ok(&["rule", "set", "visits", "tags", "set"]);
    let inv = base.join("b.invite");
    let code = hq.invite(&inv, "clinic-b");
    let first = Laptop::new(base, "first");
    first.join("clinic-b", &inv, code.as_deref());
    let second = Laptop::new(base, "second");
    second.join("clinic-b", &inv, code.as_deref());
    // The second laptop learns the rules from a stick HQ wrote (it only reads it).
    let rules = base.join("rules-stick");
    std::fs::create_dir_all(&rules).unwrap();
    hq.ok(&["export", s(&rules)]);
    second.ok(&["import", s(&rules)]);
    first.ok(&["put", "visits", "f1", "age=31"]);
    second.ok(&["put", "visits", "s1", "village=Kisumu Ndogo", "age=7"]);
    second.ok(&["incr", "stock", "amoxicillin", "boxes", "12"]);
    second.ok(&["add", "visits", "s1", "tags", "malaria"]);
    second.ok(&["put", "visits", "s2", "age=1"]);
    second.ok(&["delete", "visits", "s2"]);
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    first.ok(&["sync", s(&stick)]);
    hq.ok(&["sync", s(&stick)]);
    let old_bundles: Vec<_> = {
        let before = files(&stick);
        let _ = second.run(&["sync", s(&stick)]);
        files(&stick)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect()
    };
    assert_eq!(old_bundles.len(), 1, "the refused laptop wrote its bundle");
    // Told by name, with what to do, on every sync and in status.
    let (_, err) = second.fails(&["sync", s(&stick)]);
    assert!(
        err.contains("hq accepted another laptop as clinic-b (member #2")
            && err.contains("ferry rejoin --join"),
        "{err}"
    );
    let status = second.ok(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("REFUSED") && l.contains("invitation was used on two laptops")),
        "{status}"
    );
    assert_eq!(second.status()["refused_membership"]["member"], 2);
    // The laptop the admin accepted refuses the other one's bundle (exit status 1) but is
    // not told that it was refused itself.
    let out = first.run(&["sync", s(&stick)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("invitation can be used only once"),
        "{out:?}"
    );
    assert_eq!(
        first.status()["refused_membership"],
        serde_json::Value::Null
    );

    // Rejoining needs a new invitation: the old one is a usage mistake.
    let err = second.misuse(&[
        "rejoin",
        "--join",
        s(&inv),
        "--code",
        code.as_deref().unwrap(),
    ]);
    assert!(
        err.contains("already used") && err.contains("new invitation"),
        "{err}"
    );
    let (_, err) = first.fails(&[
        "rejoin",
        "--join",
        s(&inv),
        "--code",
        code.as_deref().unwrap(),
    ]);
    assert!(err.contains("nothing to rejoin"), "{err}");

    let inv2 = base.join("b2.invite");
    let code2 = hq.invite(&inv2, "clinic-b2");
    let out = second.ok(&[
        "rejoin",
        "--join",
        s(&inv2),
        "--code",
        code2.as_deref().unwrap(),
        "--name",
        "clinic-b2",
    ]);
    assert!(out.contains("member #3; was member #2"), "{out}");
    assert!(out.contains("wrote again 2 records"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("delete") && l.contains("visits/s2")),
        "{out}"
    );
    let kept: Vec<_> = files(&second.home.join("refused"));
    assert!(
        kept.iter().any(|p| p.ends_with("ferry.db")),
        "the old database is kept: {kept:?}"
    );

    // The new membership syncs like any other; the refused bundle leaves the stick.
    let out = second.ok(&["sync", s(&stick)]);
    assert!(out.contains("removed"), "{out}");
    for f in &old_bundles {
        assert!(!f.exists(), "{} is still on the stick", f.display());
    }
    for l in [&hq, &first, &second, &hq, &first] {
        l.ok(&["sync", s(&stick)]);
    }
    for l in [&hq, &first, &second] {
        let s1 = l.ok(&["get", "visits", "s1", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&s1).unwrap();
        assert_eq!(v["village"], "Kisumu Ndogo", "{s1}");
        assert_eq!(v["age"], 7, "{s1}");
        assert_eq!(v["tags"], serde_json::json!(["malaria"]), "{s1}");
        let stock = l.ok(&["get", "stock", "amoxicillin", "--json"]);
        assert!(stock.contains("12"), "{stock}");
        assert!(l.ok(&["get", "visits", "f1"]).contains("31"));
    }
    assert_eq!(
        second.status()["refused_membership"],
        serde_json::Value::Null
    );
}

/// Issue 12, item 7 (review): the refused laptop is told even when it wrote less than the
/// accepted one, so that the admin's record of the accepted key follows changes of "its"
/// member number it will never hold (the record waits, unapplied, and still counts); and a
/// rejoin that fails (a wrong code for the new invitation) leaves the home as it was.
#[test]
fn a_refused_laptop_that_wrote_nothing_is_told_and_a_failed_rejoin_changes_nothing() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = admin(base);
    let inv = base.join("b.invite");
    let code = hq.invite(&inv, "clinic-b");
    let first = Laptop::new(base, "first");
    first.join("clinic-b", &inv, code.as_deref());
    let second = Laptop::new(base, "second");
    second.join("clinic-b", &inv, code.as_deref());
    for i in 0..3 {
        first.ok(&["put", "visits", &format!("f{i}"), "age=1"]);
    }
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    first.ok(&["sync", s(&stick)]);
    hq.ok(&["sync", s(&stick)]);
    let (_, err) = second.fails(&["import", s(&stick)]);
    assert!(
        err.contains("hq accepted another laptop as clinic-b"),
        "{err}"
    );

    let inv2 = base.join("b2.invite");
    let code2 = hq.invite(&inv2, "clinic-b2");
    let before = files(&second.home);
    let (_, err) = second.fails(&["rejoin", "--join", s(&inv2), "--code", "AAAA-AAAA-AAAA"]);
    assert!(err.contains("code does not open"), "{err}");
    assert_eq!(files(&second.home), before, "the home is as it was");
    assert!(second.ok(&["status"]).contains("REFUSED"));
    second.ok(&[
        "rejoin",
        "--join",
        s(&inv2),
        "--code",
        code2.as_deref().unwrap(),
    ]);
    assert!(!second.ok(&["status"]).contains("REFUSED"));
}

/// Issue 13, item 1: labels belong to the admin and name one laptop each; `ferry member
/// list` shows every member (number, label, role, joined, last bundle, what it lacks); `#N`
/// works where a label does.
#[test]
fn labels_are_the_admins_and_member_list_shows_who_lacks_what() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = admin(base);
    let inv_a = base.join("a.invite");
    let code_a = hq.invite(&inv_a, "clinic-a");
    // A second laptop cannot take a label that is taken, whatever its case, nor one that
    // reads as a member number.
    let err = hq.misuse(&[
        "invite",
        "--out",
        s(&base.join("x.invite")),
        "--label",
        "HQ",
    ]);
    assert!(err.contains("already the label of member #1"), "{err}");
    let err = hq.misuse(&[
        "invite",
        "--out",
        s(&base.join("x.invite")),
        "--label",
        "#7",
    ]);
    assert!(err.contains("#N"), "{err}");
    assert!(!base.join("x.invite").exists());
    let inv_b = base.join("b.invite");
    let code_b = hq.invite(&inv_b, "clinic-b");

    // Joining under another label than the invitation's: a usage mistake, nothing created.
    let a = Laptop::new(base, "a");
    let mut join = vec!["init", "--name", "hq", "--join", s(&inv_a)];
    join.extend(["--code", code_a.as_deref().unwrap()]);
    let err = a.misuse(&join);
    assert!(
        err.contains("invites this laptop as \"clinic-a\"") && err.contains("without --name"),
        "{err}"
    );
    assert!(!a.home.exists(), "nothing was created");
    // Without --name the laptop takes the invitation's label.
    let out = a.ok(&[
        "init",
        "--join",
        s(&inv_a),
        "--code",
        code_a.as_deref().unwrap(),
    ]);
    assert!(out.contains("\"clinic-a\" (member #2)"), "{out}");
    let b = Laptop::new(base, "b");
    b.join("clinic-b", &inv_b, code_b.as_deref());
    let err = Laptop::new(base, "c").misuse(&["init", "--create", "x"]);
    assert!(err.contains("--name"), "{err}");

    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    a.ok(&["put", "visits", "v1", "age=30"]);
    round(&stick, &[&a, &hq]);
    for i in 0..4 {
        hq.ok(&["put", "visits", &format!("h{i}"), "age=1"]);
    }
    // hq has heard from clinic-a, never from clinic-b; both lack hq's four new visits.
    let list: serde_json::Value =
        serde_json::from_str(&hq.ok(&["member", "list", "--json"])).unwrap();
    let by = |n: u64| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|m| m["member"] == n)
            .unwrap_or_else(|| panic!("no member {n} in {list}"))
            .clone()
    };
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
    assert_eq!(by(1)["label"], "hq");
    assert_eq!(by(1)["admin"], true);
    assert_eq!(by(1)["you"], true);
    assert_eq!(by(2)["label"], "clinic-a");
    assert_eq!(by(2)["joined"], true);
    assert!(by(2)["joined_at"].is_string(), "{list}");
    assert!(by(2)["last_heard"].is_string(), "{list}");
    // Its last bundle came before hq's four visits (and hq's own earlier changes).
    let lacks = by(2)["lacks_from_us"].as_u64().unwrap();
    assert!(lacks >= 4, "{list}");
    assert_eq!(by(3)["joined"], false, "clinic-b's join has not reached hq");
    assert!(by(3)["last_heard"].is_null());
    let text = hq.ok(&["member", "list"]);
    let row = |label: &str| {
        text.lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no {label} in {text}"))
            .to_string()
    };
    assert!(
        row("clinic-a").starts_with("#2 ")
            && row("clinic-a").ends_with(&format!(" {lacks} changes")),
        "{text}"
    );
    assert!(row("clinic-b").contains("invited only") && row("clinic-b").contains("never"));
    assert!(row("hq").contains("admin") && row("hq").contains("(this laptop)"));
    // Once clinic-a's next bundle tells hq it holds everything, it lacks nothing.
    round(&stick, &[&hq, &a, &hq]);
    let list: serde_json::Value =
        serde_json::from_str(&hq.ok(&["member", "list", "--json"])).unwrap();
    let two = list
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["member"] == 2)
        .unwrap();
    assert_eq!(two["lacks_from_us"], 0, "{list}");

    // Renaming is the admin's: `#N` names the member; a taken label is refused.
    let (_, err) = a.fails(&["member", "rename", "#2", "clinic-kisumu"]);
    assert!(err.contains("only the dataset's admins (hq)"), "{err}");
    let err = hq.misuse(&["member", "rename", "#2", "Clinic-B"]);
    assert!(err.contains("already the label of member #3"), "{err}");
    let err = hq.misuse(&["member", "rename", "#9", "x"]);
    assert!(
        err.contains("no member is \"#9\"") && err.contains("#2 clinic-a"),
        "{err}"
    );
    let out = hq.ok(&["member", "rename", "#2", "clinic-kisumu"]);
    assert!(
        out.contains("Member #2 (clinic-a) is now labelled clinic-kisumu"),
        "{out}"
    );
    round(&stick, &[&hq, &a, &b]);
    for l in [&a, &b] {
        let list: serde_json::Value =
            serde_json::from_str(&l.ok(&["member", "list", "--json"])).unwrap();
        let two = list
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["member"] == 2)
            .unwrap();
        assert_eq!(two["label"], "clinic-kisumu", "{list}");
    }
    assert_eq!(a.status()["label"], "clinic-kisumu");

    // `#N` where a label is asked for: settle a conflict with clinic-b's value.
    a.ok(&["put", "visits", "v1", "age=31"]);
    b.ok(&["put", "visits", "v1", "age=32"]);
    round(&stick, &[&a, &b, &a]);
    let out = a.ok(&["resolve", "--all", "--prefer", "author=#3"]);
    assert!(out.contains("32"), "{out}");
    assert_eq!(
        a.ok(&["get", "visits", "v1", "--json"]).trim(),
        r#"{"age":32}"#
    );
}

/// Issue 13, item 1: `ferry invite cancel` — the cancelled laptop (which joined anyway,
/// offline) is refused by the admin and by every laptop that has the cancellation, learns
/// it must ask for a new invitation, and nobody waits for it any more; a used invitation
/// cannot be cancelled. `ferry invite list` shows each invitation's state.
#[test]
fn a_cancelled_invitation_is_refused_everywhere_and_nobody_waits_for_it() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = admin(base);
    let (inv_a, inv_c) = (base.join("a.invite"), base.join("c.invite"));
    let code_a = hq.invite(&inv_a, "clinic-a");
    let code_c = hq.invite(&inv_c, "clinic-c");
    let a = Laptop::new(base, "a");
    a.join("clinic-a", &inv_a, code_a.as_deref());
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    hq.ok(&["put", "visits", "v1", "age=30"]);
    round(&stick, &[&a, &hq, &a, &hq]);
    // clinic-a has joined: its invitation cannot be cancelled any more.
    let err = hq.misuse(&["invite", "cancel", "clinic-a"]);
    assert!(err.contains("has joined"), "{err}");
    let (_, err) = a.fails(&["invite", "cancel", "clinic-c"]);
    assert!(err.contains("only the dataset's admin"), "{err}");
    let out = hq.ok(&["invite", "cancel", "#3", "--reason", "the stick was lost"]);
    assert!(
        out.contains("Cancelled the invitation of clinic-c (member #3)"),
        "{out}"
    );
    let list: serde_json::Value =
        serde_json::from_str(&hq.ok(&["invite", "list", "--json"])).unwrap();
    assert_eq!(list[0]["state"], "joined", "{list}");
    assert_eq!(list[1]["state"], "cancelled", "{list}");
    assert_eq!(list[1]["cancelled"], "the stick was lost", "{list}");
    // clinic-a learns of the cancellation before clinic-c's bundle comes.
    round(&stick, &[&hq, &a]);

    // Whoever holds the file and its code joins anyway (offline, nothing can tell it yet)
    // and writes.
    let c = Laptop::new(base, "c");
    c.join("clinic-c", &inv_c, code_c.as_deref());
    c.ok(&["put", "visits", "stolen", "age=99"]);
    c.ok(&["put", "visits", "v1", "age=0"]);
    c.ok(&["sync", s(&stick)]);
    for l in [&hq, &a] {
        let out = l.run(&["sync", s(&stick)]);
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("invitation was cancelled by the admin (the stick was lost)"),
            "{text}"
        );
        assert!(l.list("visits").contains("\"v1\""));
        assert!(!l.list("visits").contains("stolen"), "{}", l.list("visits"));
        assert_eq!(
            l.ok(&["get", "visits", "v1", "--json"]).trim(),
            r#"{"age":30}"#
        );
        // Nobody waits for the cancelled member.
        let held: Vec<u64> = l.status()["held_back_by"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["member"].as_u64().unwrap())
            .collect();
        assert!(!held.contains(&3), "{held:?}");
        assert!(l.ok(&["status"]).contains("CANCELLED"));
    }
    // Nothing is written for the cancelled laptop: it reads nothing new (in format v1 it
    // cannot even be told why: a bundle it could check would carry the dataset's history).
    round(&stick, &[&hq, &a, &hq]);
    c.ok(&["sync", s(&stick)]);
    assert_eq!(
        c.list("visits").matches("\"id\"").count(),
        2,
        "only its own"
    );
    assert!(
        !c.list("visits").contains("\"age\":30"),
        "{}",
        c.list("visits")
    );
}

/// Issue 13, item 1: `ferry invite --expires` — the joining laptop refuses an expired
/// invitation by its own clock; a join whose first bundle reaches the admin after the
/// expiry is refused by the admin, which cancels it for every laptop.
#[test]
fn an_expired_invitation_is_refused_by_the_joining_laptop_and_by_the_admin() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = admin(base);
    let err = hq.misuse(&["invite", "--out", s(&base.join("x")), "--expires", "7 days"]);
    assert!(err.contains("not a duration"), "{err}");
    let inv_b = base.join("b.invite");
    let out = hq.ok(&[
        "invite",
        "--out",
        s(&inv_b),
        "--label",
        "clinic-b",
        "--expires",
        "8s",
    ]);
    assert!(out.contains("expires: "), "{out}");
    let code_b = invite_code(&out);
    let inv_c = base.join("c.invite");
    let code_c = hq.invite(&inv_c, "clinic-c");
    let inv_d = base.join("d.invite");
    let out = hq.ok(&[
        "invite",
        "--out",
        s(&inv_d),
        "--label",
        "clinic-d",
        "--expires",
        "1s",
    ]);
    let code_d = invite_code(&out);
    // clinic-b joins in time but its first bundle reaches hq late.
    let b = Laptop::new(base, "b");
    b.join("clinic-b", &inv_b, code_b.as_deref());
    b.ok(&["put", "visits", "late", "age=1"]);
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    let late = base.join("late-stick");
    std::fs::create_dir_all(&late).unwrap();
    b.ok(&["sync", s(&late)]);
    std::thread::sleep(std::time::Duration::from_secs(9));
    // clinic-d's invitation expired before anyone used it: the joining laptop refuses it.
    let d = Laptop::new(base, "d");
    let mut args = vec!["init", "--join", s(&inv_d)];
    args.extend(["--code", code_d.as_deref().unwrap()]);
    let (_, err) = d.fails(&args);
    assert!(err.contains("the invitation expired at"), "{err}");
    assert!(!d.home.exists());

    let out = hq.run(&["import", s(&late)]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !hq.list("visits").contains("late"),
        "{text}\n{}",
        hq.list("visits")
    );
    let list: serde_json::Value =
        serde_json::from_str(&hq.ok(&["invite", "list", "--json"])).unwrap();
    let b_state = list
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["label"] == "clinic-b")
        .unwrap()
        .clone();
    assert_eq!(b_state["state"], "cancelled", "{list}");
    assert!(
        b_state["cancelled"]
            .as_str()
            .unwrap()
            .contains("expired before its first bundle reached the admin"),
        "{list}"
    );
    // clinic-c, invited without a limit, joins now and follows the admin: it never
    // applies clinic-b's visit, though it is on the stick.
    hq.ok(&["put", "visits", "v-hq", "age=2"]);
    let c = Laptop::new(base, "c");
    c.join("clinic-c", &inv_c, code_c.as_deref());
    round(&stick, &[&c, &hq, &c]);
    assert!(c.ok(&["status"]).contains("CANCELLED"));
    // clinic-b's bundle reaches clinic-c now: refused, as by hq.
    let out = c.run(&["import", s(&late)]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("invitation was cancelled by the admin"),
        "{text}"
    );
    let visits = c.list("visits");
    assert!(
        visits.contains("v-hq") && !visits.contains("late"),
        "{visits}"
    );
}
