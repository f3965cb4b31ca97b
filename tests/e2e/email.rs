//! Three laptops with their own mailboxes converge by email alone, through real Postfix
//! (SMTP) and Dovecot (IMAP) on 127.0.0.1.

#[path = "../../transports/email/tests/common/mod.rs"]
#[allow(unused_imports)]
mod mail;

use crate::util::Laptop;
use std::time::{Duration, Instant};

fn configure(l: &Laptop, servers: &mail::MailServers, user: &str) {
    let acct = servers.account(user);
    std::fs::create_dir_all(&l.home).unwrap();
    std::fs::write(
        l.home.join("ferry.toml"),
        format!(
            "[email]\nfrom = \"{}\"\nsmtp_url = \"{}\"\nimap_url = \"{}\"\nimap_user = \"{}\"\nimap_password_env = \"FERRY_TEST_IMAP_PASSWORD\"\n",
            acct.address,
            servers.smtp_url(),
            servers.imap_url(),
            acct.user
        ),
    )
    .unwrap();
}

fn run(l: &Laptop, servers: &mail::MailServers, user: &str, args: &[&str]) -> String {
    let out = l
        .cmd(args)
        .env("FERRY_TEST_IMAP_PASSWORD", servers.account(user).password)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ferry {args:?} failed: {text}");
    text
}

/// Receives until `done` holds (mail delivery is asynchronous), for at most a minute.
fn receive_until(
    l: &Laptop,
    servers: &mail::MailServers,
    user: &str,
    mut done: impl FnMut() -> bool,
) {
    let start = Instant::now();
    loop {
        run(l, servers, user, &["receive", "email"]);
        if done() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{user} did not receive what it should by email"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn records(l: &Laptop) -> usize {
    serde_json::from_str::<serde_json::Value>(&l.list("visits"))
        .unwrap()
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn three_laptops_with_their_own_mailboxes_converge_by_email_alone() {
    let servers = mail::MailServers::start(&["hq", "a", "b"]);
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = (
        Laptop::new(base, "hq"),
        Laptop::new(base, "a"),
        Laptop::new(base, "b"),
    );
    for (l, u) in [(&hq, "hq"), (&a, "a"), (&b, "b")] {
        configure(l, &servers, u);
    }
    hq.ok(&["init", "--name", "hq", "--create", "clinic visits"]);
    hq.ok(&["contact", "set", "--email", "hq@example.test"]);
    let (inv_a, inv_b) = (base.join("a.invite"), base.join("b.invite"));
    let code_a = hq.invite(&inv_a, "clinic-a");
    let code_b = hq.invite(&inv_b, "clinic-b");
    a.join("clinic-a", &inv_a, code_a.as_deref());
    b.join("clinic-b", &inv_b, code_b.as_deref());
    a.ok(&["contact", "set", "--email", "a@example.test"]);
    b.ok(&["contact", "set", "--email", "b@example.test"]);
    hq.ok(&["put", "visits", "v-hq", "village=Kisumu"]);
    a.ok(&["put", "visits", "v-a", "village=Obunga"]);
    b.ok(&["put", "visits", "v-b", "village=Nyalenda"]);

    // The clinics know only HQ's address (from the admin, out of band) at first.
    let out = run(
        &a,
        &servers,
        "a",
        &["send", "email", "--to", "hq@example.test"],
    );
    assert!(out.contains("sent"), "{out}");
    run(
        &b,
        &servers,
        "b",
        &["send", "email", "--to", "hq@example.test"],
    );
    receive_until(&hq, &servers, "hq", || records(&hq) == 3);
    // HQ now knows both clinics' addresses (they travelled as data) and sends to both.
    let out = run(&hq, &servers, "hq", &["send", "email"]);
    assert!(
        out.contains("a@example.test") && out.contains("b@example.test"),
        "{out}"
    );
    receive_until(&a, &servers, "a", || records(&a) == 3);
    receive_until(&b, &servers, "b", || records(&b) == 3);

    // A concurrent edit, synced by email only.
    a.ok(&["put", "visits", "v-hq", "village=Kisumu Ndogo"]);
    b.ok(&["put", "visits", "v-hq", "village=Kisumu Ndogo B"]);
    run(&a, &servers, "a", &["sync", "email"]);
    run(&b, &servers, "b", &["sync", "email"]);
    let conflicted = |l: &Laptop| {
        serde_json::from_str::<serde_json::Value>(&l.ok(&["conflicts", "--json"]))
            .unwrap()
            .as_array()
            .unwrap()
            .len()
            == 1
    };
    for (l, u) in [(&a, "a"), (&b, "b"), (&hq, "hq")] {
        receive_until(l, &servers, u, || conflicted(l));
        run(l, &servers, u, &["send", "email"]);
    }
    for (l, u) in [(&a, "a"), (&b, "b")] {
        receive_until(l, &servers, u, || l.list("visits") == hq.list("visits"));
    }
    assert_eq!(a.list("visits"), hq.list("visits"));
    assert_eq!(b.list("visits"), hq.list("visits"));
    // Applied emails were filed away; nothing else was touched.
    let processed = servers.account("hq").maildir.join(".Ferry.Processed");
    assert!(
        mail::count_messages(&processed) >= 2
            || mail::count_messages(&servers.account("hq").maildir) >= 2
    );
}

#[test]
fn a_send_while_the_mail_server_is_down_is_queued_reported_and_sent_later() {
    let servers = mail::MailServers::start(&["hq", "a"]);
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let hq = Laptop::new(base, "hq");
    configure(&hq, &servers, "hq");
    hq.ok(&["init", "--name", "hq", "--create", "d"]);
    hq.ok(&["put", "visits", "v-1", "x=1"]);
    servers.stop_smtp();
    let out = hq
        .cmd(&["send", "email", "--to", "a@example.test"])
        .env("FERRY_TEST_IMAP_PASSWORD", "pw-hq")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kept in the outbox"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let status = hq.ok(&["status"]);
    assert!(status.contains("email outbox"), "{status}");
    servers.start_smtp();
    let out = run(
        &hq,
        &servers,
        "hq",
        &["send", "email", "--to", "a@example.test"],
    );
    assert!(out.contains("from the outbox"), "{out}");
    servers.wait_for_mail(&servers.account("a"), 1);
}
