//! More than one admin (issue 13, item 2): `ferry member promote` / `demote`, run as a user
//! would, with sticks between laptops. Admins invite offline from their own ranges of member
//! numbers, remove members concurrently, and carry on when the founding laptop is gone; a
//! demoted admin's later actions count nowhere.

use crate::removal::{epoch_key, epoch_key_of, head, ids, member, strings, sync, sync_writing};
use crate::util::{Laptop, exchange, invite_code, s, three};
use std::path::Path;

/// `ferry invite --out FILE --label LABEL` on `admin`: the member number it gave, and the
/// code.
fn invite(admin: &Laptop, base: &Path, label: &str) -> (u64, Option<String>) {
    let file = base.join(format!("{label}.invite"));
    let out = admin.ok(&["invite", "--out", s(&file), "--label", label]);
    let n = out
        .split("(member #")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no member number in {out}"));
    (n, invite_code(&out))
}

/// A new laptop joining with the invitation `invite` wrote for `label`.
fn join(base: &Path, label: &str, code: Option<String>) -> Laptop {
    let l = Laptop::new(base, label);
    l.join(
        label,
        &base.join(format!("{label}.invite")),
        code.as_deref(),
    );
    l
}

/// The member numbers `ferry status --json` lists as admins.
fn admins(l: &Laptop) -> Vec<u64> {
    l.status()["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["admin"] == true)
        .map(|m| m["member"].as_u64().unwrap())
        .collect()
}

/// HQ, clinic-a and clinic-b, each with one visit, all holding everything, and clinic-a
/// promoted to admin (every laptop knows).
fn with_second_admin(base: &Path, stick: &Path) -> (Laptop, Laptop, Laptop) {
    let (hq, a, b) = three(base);
    hq.ok(&["put", "visits", "h0", "village=Kisumu"]);
    a.ok(&["put", "visits", "a0", "village=Obunga"]);
    b.ok(&["put", "visits", "b0", "village=Manyatta"]);
    // Only an admin promotes: clinic-b cannot make itself one.
    let (_, err) = b.fails(&["member", "promote", "clinic-b"]);
    assert!(
        err.contains("only the dataset's admins (hq) can promote members"),
        "{err}"
    );
    exchange(&[&hq, &a, &b], stick);
    let out = hq.ok(&["member", "promote", "clinic-a"]);
    assert!(
        out.contains("clinic-a (member #2) is now an admin"),
        "{out}"
    );
    exchange(&[&hq, &a, &b], stick);
    for l in [&hq, &a, &b] {
        assert_eq!(admins(l), vec![1, 2], "every laptop knows both admins");
        assert_eq!(ids(l, "visits"), strings(&["a0", "b0", "h0"]));
    }
    (hq, a, b)
}

/// Two admins invite on the same day without meeting: their invitations get numbers from
/// their own ranges, both laptops join and everyone converges. Then the founding laptop is
/// lost: the second admin still invites, sets rules and removes a member, moving the dataset
/// to a key the removed member does not get; when the founding laptop comes back it seals
/// with that key too.
#[test]
fn a_second_admin_invites_offline_and_runs_the_dataset_while_the_founder_is_away() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let stick = base.join("stick");
    let (hq, a, b) = with_second_admin(base, &stick);

    // Offline, each admin invites one laptop.
    let (c_no, c_code) = invite(&hq, base, "clinic-c");
    let (d_no, d_code) = invite(&a, base, "clinic-d");
    assert_eq!(c_no, 4, "the founder gives numbers from 2 up");
    assert_eq!(
        d_no,
        2 * 65_536,
        "member #2 gives numbers from its own range"
    );
    let c = join(base, "clinic-c", c_code);
    let d = join(base, "clinic-d", d_code);
    c.ok(&["put", "visits", "c0", "village=Nyalenda"]);
    d.ok(&["put", "visits", "d0", "village=Kondele"]);
    // clinic-d's bundle reaches clinic-c first, before anything from clinic-d's inviter: it
    // waits (it is not refused), and is read once the promotion has arrived.
    let early = base.join("early");
    sync_writing(&d, &early);
    let (code, out) = sync(&c, &early);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("an admin whose promotion has not reached this laptop yet"),
        "{out}"
    );
    let all = [&hq, &a, &b, &c, &d];
    exchange(&all, &stick);
    for l in all {
        assert_eq!(
            ids(l, "visits"),
            strings(&["a0", "b0", "c0", "d0", "h0"]),
            "{}",
            l.home.display()
        );
        assert!(
            member(l, d_no)["joined"] == true,
            "clinic-d joined everywhere"
        );
    }

    // The founding laptop is away. clinic-a goes on: it invites, sets a rule, removes b.
    let (e_no, e_code) = invite(&a, base, "clinic-e");
    assert_eq!(e_no, d_no + 1);
    let e = join(base, "clinic-e", e_code);
    a.ok(&["rule", "set", "visits", "village", "lww"]);
    let out = a.ok(&[
        "member",
        "remove",
        "clinic-b",
        "--reason",
        "left the project",
    ]);
    // clinic-a changes the key itself (bundles/SPEC.md §16): epoch 1 of admin #2.
    assert!(out.contains("the dataset now uses key number 1"), "{out}");
    // clinic-b writes after its removal; the others refuse it once they know.
    b.ok(&["put", "visits", "b1", "village=Late"]);
    let stick2 = base.join("stick2");
    for l in [&a, &c, &d, &e, &b, &a, &c, &d, &e] {
        sync(l, &stick2);
    }
    for l in [&a, &c, &d, &e] {
        assert_eq!(
            member(l, 3)["removed"]["reason"],
            "left the project",
            "{}",
            l.home.display()
        );
        assert!(
            !ids(l, "visits").contains(&"b1".to_string()),
            "{}",
            l.home.display()
        );
        assert!(
            l.ok(&["rule", "list", "--json"]).contains("lww"),
            "the second admin's rule counts"
        );
        assert!(member(l, e_no)["joined"] == true);
    }

    for l in [&c, &d, &e] {
        assert!(epoch_key_of(l, 1, 2).is_some(), "{}", l.home.display());
    }
    // What clinic-c writes now is sealed under clinic-a's key: version 11 (every laptop here
    // reads it), whose grant, if any, is a version 9 grant.
    c.ok(&["put", "visits", "c1", "village=Migori"]);
    let (_, bundle) = sync_writing(&c, &base.join("stick3"));
    let h = head(&bundle);
    assert_eq!((h.version, h.epoch, h.signer), (11, 1, 2), "{h:?}");
    assert!(h.grant == 0 || h.grant_format == 9, "{h:?}");

    // The founding laptop comes back: it learns of the removal (and refuses clinic-b's late
    // bundle, naming who removed it) and clinic-a's key, which it seals with from then on:
    // no second key change is needed.
    let (code, out) = sync(&hq, &stick2);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("member #3 was removed from the dataset by admin #2 on "),
        "{out}"
    );
    assert!(epoch_key_of(&hq, 1, 2).is_some(), "{out}");
    assert!(epoch_key(&hq, 1).is_none(), "hq changed no key: {out}");
    hq.ok(&["put", "visits", "h1", "village=Kisumu"]);
    let (_, bundle) = sync_writing(&hq, &base.join("stick3"));
    let h = head(&bundle);
    assert_eq!(
        (h.epoch, h.signer),
        (1, 2),
        "hq seals with clinic-a's key: {h:?}"
    );
    for l in [&a, &c, &d, &e] {
        let (code, out) = sync(l, &base.join("stick3"));
        assert_eq!(code, 0, "{out}");
        assert!(ids(l, "visits").contains(&"h1".to_string()));
        assert!(ids(l, "visits").contains(&"c1".to_string()));
    }
    let (_, out) = sync(&b, &base.join("stick3"));
    assert!(
        out.contains("this laptop was removed from the dataset"),
        "{out}"
    );
    assert!(
        epoch_key_of(&b, 1, 2).is_none(),
        "the removed laptop gets no new key"
    );
    for id in ["h1", "c1"] {
        assert!(!ids(&b, "visits").contains(&id.to_string()), "{id}");
    }
}

/// Issue 13, "done means": two admins remove members at the same time, offline — one
/// removes clinic-b, the other clinic-c, and both remove clinic-x, each with the cutoff it
/// had seen. Every remaining laptop ends with all three removed, clinic-x's cutoff the
/// higher of the two, and a key none of them holds.
#[test]
fn two_admins_removing_concurrently() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let stick = base.join("stick");
    let (hq, a, b) = with_second_admin(base, &stick);
    let (_, c_code) = invite(&hq, base, "clinic-c");
    let (x_no, x_code) = invite(&hq, base, "clinic-x");
    let c = join(base, "clinic-c", c_code);
    let x = join(base, "clinic-x", x_code);
    exchange(&[&hq, &a, &b, &c, &x], &stick);
    // clinic-x writes twice more; only clinic-a sees it before the removals.
    x.ok(&["put", "visits", "x1", "village=One"]);
    x.ok(&["put", "visits", "x2", "village=Two"]);
    let side = base.join("side");
    sync(&x, &side);
    sync(&a, &side);

    // Offline, at the same time.
    hq.ok(&["member", "remove", "clinic-b", "--reason", "stolen"]);
    hq.ok(&["member", "remove", "clinic-x", "--reason", "left"]);
    a.ok(&["member", "remove", "clinic-c", "--reason", "lost"]);
    a.ok(&["member", "remove", "clinic-x", "--reason", "left"]);

    let meet = base.join("meet");
    for l in [&hq, &a, &hq, &a, &hq] {
        let (code, out) = sync(l, &meet);
        assert_eq!(code, 0, "{out}");
    }
    for l in [&hq, &a] {
        for (n, why) in [(3, "stolen"), (4, "lost"), (x_no, "left")] {
            assert_eq!(
                member(l, n)["removed"]["reason"],
                why,
                "{}",
                l.home.display()
            );
        }
        // The higher cutoff counts: what clinic-a had applied of clinic-x (its join and
        // two visits at least), so hq applies those visits too.
        let cutoff = member(l, x_no)["removed"]["cutoff"].as_u64().unwrap();
        assert!(cutoff >= 3, "{cutoff}: {}", l.home.display());
        assert_eq!(
            cutoff,
            member(&hq, x_no)["removed"]["cutoff"].as_u64().unwrap()
        );
        assert_eq!(
            ids(l, "visits"),
            strings(&["a0", "b0", "h0", "x1", "x2"]),
            "{}",
            l.home.display()
        );
    }
    // New data after the removals reaches the admins only.
    hq.ok(&["put", "visits", "h1", "village=After"]);
    let last = base.join("last");
    let (_, bundle) = sync_writing(&hq, &last);
    // A key after all three removals: each admin changed it for what it knew, and again
    // once it learned of the other's removals (bundles/SPEC.md §16).
    let h = head(&bundle);
    assert_eq!(h.epoch, 3, "a key after all three removals: {h:?}");
    let (code, out) = sync(&a, &last);
    assert_eq!(code, 0, "{out}");
    assert!(ids(&a, "visits").contains(&"h1".to_string()));
    // (Each is told it was removed when a bundle it reads carries a grant that says so;
    // once every remaining member holds the key, bundles no longer carry it.)
    for l in [&b, &c, &x] {
        let (_, out) = sync(l, &last);
        assert!(
            out.contains("this laptop was removed from the dataset")
                || out.contains("which this laptop has not received yet"),
            "{}: {out}",
            l.home.display()
        );
        for signer in [1, 2] {
            assert!(epoch_key_of(l, 3, signer).is_none(), "{}", l.home.display());
        }
        assert!(!ids(l, "visits").contains(&"h1".to_string()));
    }
}

/// A demoted admin: what it did before it learned of the demotion still counts (its
/// promotion and not the demotion were in that change's causal context), what it does after
/// counts nowhere, and a laptop it invited that the demoting admin did not know of is
/// refused everywhere.
#[test]
fn a_demoted_admins_later_actions_count_nowhere() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let stick = base.join("stick");
    let (hq, a, b) = with_second_admin(base, &stick);

    // Offline: clinic-a sets a rule and invites; hq demotes clinic-a.
    a.ok(&["rule", "set", "visits", "village", "lww"]);
    let (d_no, d_code) = invite(&a, base, "clinic-d");
    let out = hq.ok(&["member", "demote", "clinic-a"]);
    assert!(
        out.contains("clinic-a (member #2) is no longer an admin"),
        "{out}"
    );
    // The only admin left cannot step down.
    let err = hq.misuse(&["member", "demote", "hq"]);
    assert!(err.contains("is the dataset's only admin"), "{err}");

    exchange(&[&hq, &a, &b], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(admins(l), vec![1], "{}", l.home.display());
        assert!(
            l.ok(&["rule", "list"]).contains("lww"),
            "the rule set before clinic-a knew counts"
        );
    }
    // After: clinic-a is told it is no admin.
    let (_, err) = a.fails(&["rule", "set", "visits", "age", "max"]);
    assert!(
        err.contains("only the dataset's admins (hq) can set merge rules"),
        "{err}"
    );

    // The laptop clinic-a invited unknown to hq: refused everywhere, in one line.
    let d = join(base, "clinic-d", d_code);
    d.ok(&["put", "visits", "d0", "village=Kondele"]);
    let (_, _) = sync_writing(&d, &base.join("d"));
    for l in [&hq, &b] {
        let (code, out) = sync(l, &base.join("d"));
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(&format!(
                "member #{d_no} was invited by member #2, whose admin role was withdrawn by an admin that did not know of that invitation"
            )),
            "{out}"
        );
        assert!(!ids(l, "visits").contains(&"d0".to_string()));
    }
}

/// The founding laptop is stolen: a demotion would not stop it (it never learns of it), so
/// clinic-a removes it. What the thief writes afterwards — a record, a rule, an invitation
/// — counts nowhere; the others go on.
#[test]
fn a_stolen_founding_laptop_is_removed_by_another_admin() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let stick = base.join("stick");
    let (hq, a, b) = with_second_admin(base, &stick);
    let out = a.ok(&[
        "member",
        "remove",
        "hq",
        "--reason",
        "stolen from the office",
    ]);
    assert!(
        out.contains("Removed hq (member #1, the founding laptop)"),
        "{out}"
    );
    // The thief, not knowing: a record, a rule and an invitation.
    hq.ok(&["put", "visits", "thief", "village=Nowhere"]);
    hq.ok(&["rule", "set", "visits", "village", "max"]);
    let (_, code) = invite(&hq, base, "clinic-t");
    let t = join(base, "clinic-t", code);
    t.ok(&["put", "visits", "t0", "village=Nowhere"]);
    let other = base.join("other");
    for l in [&a, &b] {
        sync(l, &other);
    }
    for l in [&hq, &t, &a, &b, &a, &b] {
        sync(l, &other);
    }
    for l in [&a, &b] {
        assert_eq!(member(l, 1)["removed"]["reason"], "stolen from the office");
        assert_eq!(admins(l), vec![2], "{}", l.home.display());
        let visits = ids(l, "visits");
        assert!(!visits.contains(&"thief".to_string()), "{visits:?}");
        assert!(!visits.contains(&"t0".to_string()), "{visits:?}");
        assert!(!l.ok(&["rule", "list"]).contains("max"));
    }
    // The others still work together, under clinic-a's key, which the thief never gets.
    b.ok(&["put", "visits", "b1", "village=Later"]);
    for l in [&b, &a, &hq] {
        sync(l, &other);
    }
    assert!(ids(&a, "visits").contains(&"b1".to_string()));
    assert!(!ids(&hq, "visits").contains(&"b1".to_string()));
    assert!(epoch_key_of(&b, 1, 2).is_some());
    assert!(
        epoch_key_of(&hq, 1, 2).is_none(),
        "the thief gets no new key"
    );
}

/// The founding laptop's disk dies; a backup of it is restored through another admin: it
/// joins again under a number from that admin's range (never writing as member 1 again, so
/// nothing forks), keeps what it had written, receives what its old self wrote after the
/// backup, and can be made an admin again. The dead founding laptop is removed, and the key
/// changes without it. An invitation the founding laptop made itself does not do.
#[test]
fn the_founding_laptop_restored_from_a_backup_joins_again_through_another_admin() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let stick = base.join("stick");
    let (hq, a, b) = with_second_admin(base, &stick);
    let file = base.join("hq.backup");
    let out = hq.ok(&["backup", s(&file)]);
    let backup_code = invite_code(&out).unwrap_or_else(|| panic!("no code in {out}"));
    // An invitation hq makes itself before its disk dies.
    let own = base.join("own.invite");
    let own_code = hq.invite(&own, "hq-own").unwrap();
    hq.ok(&["put", "visits", "h1", "village=After-backup"]);
    exchange(&[&hq, &a, &b], &stick);
    std::fs::remove_dir_all(&hq.home).unwrap();

    let hq2 = Laptop::new(base, "hq2");
    let err = hq2.misuse(&[
        "init",
        "--join",
        s(&own),
        "--code",
        &own_code,
        "--restore",
        s(&file),
        "--backup-code",
        &backup_code,
    ]);
    assert!(
        err.contains(
            "a backup of the founding laptop joins again with an invitation from another admin"
        ),
        "{err}"
    );
    assert!(!hq2.home.join("ferry.db").exists());

    let (n, code) = invite(&a, base, "hq-2");
    assert_eq!(n, 2 * 65_536, "a number from clinic-a's range");
    let inv = base.join("hq-2.invite");
    let out = hq2.ok(&[
        "init",
        "--join",
        s(&inv),
        "--code",
        code.as_deref().unwrap(),
        "--restore",
        s(&file),
        "--backup-code",
        &backup_code,
    ]);
    assert!(
        out.contains(&format!("joined again as member #{n}")),
        "{out}"
    );
    assert!(out.contains("the backup was of member #1"), "{out}");
    assert!(ids(&hq2, "visits").contains(&"h0".to_string()));
    exchange(&[&hq2, &a, &b], &stick);
    for l in [&hq2, &a, &b] {
        assert_eq!(
            ids(l, "visits"),
            strings(&["a0", "b0", "h0", "h1"]),
            "{}",
            l.home.display()
        );
    }
    // clinic-a makes it an admin again and removes the dead founding laptop; the key moves
    // on without it, and the restored laptop can change it too.
    a.ok(&["member", "promote", "hq-2"]);
    let out = a.ok(&["member", "remove", "hq", "--reason", "disk died"]);
    assert!(out.contains("the dataset now uses key number 1"), "{out}");
    exchange(&[&a, &hq2, &b], &stick);
    assert_eq!(admins(&hq2), vec![2, n]);
    let out = hq2.ok(&["rekey"]);
    assert!(out.contains("key number 2"), "{out}");
    hq2.ok(&["put", "visits", "h2", "village=Restored"]);
    exchange(&[&hq2, &a, &b], &stick);
    for l in [&a, &b] {
        assert!(ids(l, "visits").contains(&"h2".to_string()));
        assert!(
            epoch_key_of(l, 2, n as u32).is_some(),
            "{}",
            l.home.display()
        );
    }
}
