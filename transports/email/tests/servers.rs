//! The email transport against real mail servers: Postfix receiving over SMTP and delivering
//! into Maildirs, Dovecot serving them over IMAP, each started by the test on 127.0.0.1 (see
//! `common`). No mocks: every email here crosses a real SMTP session and is read back over
//! real IMAP or from the real Maildir.

mod common;

use common::{Account, DATASET, MailServers, count_messages, files_in};
use ferry_transport::{
    Capabilities, Disposition, MessageId, MessageInfo, Transport, TransportError,
};
use ferry_transport_email::{EmailConfig, EmailError, EmailTransport, FlushMode, extract_email};
use std::io::Read;

fn read_all(t: &mut EmailTransport, id: &MessageId) -> Vec<u8> {
    let mut out = Vec::new();
    t.open(id).unwrap().read_to_end(&mut out).unwrap();
    out
}

fn bundle(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(u32::from(seed)) as u8
        })
        .collect()
}

/// A sender that waits until Postfix has delivered what it sent, so the receiver sees it
/// (mail is asynchronous; the conformance suite reads right after sending). Both ends are
/// real transports over real servers.
struct Delivered<'a> {
    inner: EmailTransport,
    servers: &'a MailServers,
    to: Option<Account>,
    delivered: usize,
}

impl Transport for Delivered<'_> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn send(
        &mut self,
        name: &str,
        body: &mut dyn Read,
        len: u64,
    ) -> Result<MessageInfo, TransportError> {
        let before = self.to.as_ref().map(|a| count_messages(&a.maildir));
        let info = self.inner.send(name, body, len)?;
        if let (Some(to), Some(before)) = (&self.to, before) {
            let emails: usize = info.location.split(' ').next().unwrap().parse().unwrap();
            self.servers.wait_for_mail(to, before + emails);
            self.delivered += emails;
        }
        Ok(info)
    }

    fn list(&mut self) -> Result<Vec<MessageInfo>, TransportError> {
        self.inner.list()
    }

    fn open(&mut self, id: &MessageId) -> Result<Box<dyn Read + '_>, TransportError> {
        self.inner.open(id)
    }

    fn settle(&mut self, id: &MessageId, d: &Disposition) -> Result<(), TransportError> {
        self.inner.settle(id, d)
    }
}

#[test]
fn passes_the_transport_conformance_suite_over_smtp_and_imap() {
    let users: Vec<String> = (1..=8)
        .flat_map(|n| [format!("alice{n}"), format!("bob{n}")])
        .collect();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    let servers = MailServers::start(&users);
    let mut n = 0;
    ferry_transport::conformance::run(|| {
        n += 1;
        let alice = servers.account(&format!("alice{n}"));
        let bob = servers.account(&format!("bob{n}"));
        // 1 MB emails: the 4 MiB message of the suite travels as several emails.
        let sender = servers.sender(&alice, &[&bob], 1_000_000, &format!("alice{n}"));
        let receiver = servers.imap_receiver(&bob, &format!("bob{n}"));
        (
            Delivered {
                inner: sender,
                servers: &servers,
                to: Some(bob),
                delivered: 0,
            },
            Delivered {
                inner: receiver,
                servers: &servers,
                to: None,
                delivered: 0,
            },
        )
    });
}

#[test]
#[allow(clippy::print_stderr)]
fn a_bundle_round_trips_through_a_maildir_and_is_filed_away() {
    let servers = MailServers::start(&["alice", "bob"]);
    let alice = servers.account("alice");
    let bob = servers.account("bob");
    let mut sender = servers.sender(&alice, &[&bob], 10_000_000, "alice");
    let body = bundle(1024, 1);
    let sent = sender
        .send_bundle("b-one-kb", &mut &body[..], 1024)
        .unwrap();
    assert_eq!(sent.emails, 1);
    eprintln!(
        "measured: a 1024-byte bundle makes one email of {} bytes as handed to SMTP",
        sent.email_bytes
    );
    assert!(sent.email_bytes < 4096, "{sent:?}");
    servers.wait_for_mail(&bob, 1);

    let cfg = EmailConfig {
        maildir: Some(bob.maildir.clone()),
        ..Default::default()
    };
    let mut receiver = EmailTransport::new(cfg, DATASET, servers.state("bob")).unwrap();
    let listed = receiver.list().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id.0, "b-one-kb.ferry");
    assert_eq!(listed[0].len, Some(1024));
    assert_eq!(read_all(&mut receiver, &listed[0].id), body);

    let processed = bob.maildir.join(".Ferry.Processed");
    assert!(!processed.exists());
    receiver
        .settle(&listed[0].id, &Disposition::Processed)
        .unwrap();
    assert!(
        files_in(&bob.maildir).is_empty(),
        "the email left the inbox"
    );
    let filed = files_in(&processed);
    assert_eq!(filed.len(), 1, "the email is in the processed folder");
    assert!(filed[0].to_string_lossy().contains(":2,"));
    assert!(receiver.list().unwrap().is_empty());
}

/// Emails captured in `relay`'s mailbox, with their part numbers.
fn captured(relay: &Account) -> Vec<(u32, Vec<u8>)> {
    let mut out: Vec<(u32, Vec<u8>)> = files_in(&relay.maildir)
        .into_iter()
        .map(|p| {
            let raw = std::fs::read(&p).unwrap();
            let ex = extract_email(&raw);
            assert_eq!(ex.pieces.len(), 1, "{ex:?}");
            (ex.pieces[0].part, raw)
        })
        .collect();
    out.sort_by_key(|(part, _)| *part);
    out
}

#[test]
fn a_split_bundle_arriving_out_of_order_and_twice_is_put_together_once() {
    let servers = MailServers::start(&["alice", "relay", "bob"]);
    let alice = servers.account("alice");
    let relay = servers.account("relay");
    let bob = servers.account("bob");
    // 64 KB emails carry about 44 KB of bundle each: 200 KB takes five.
    let mut sender = servers.sender(&alice, &[&relay], 64_000, "alice");
    let body = bundle(200_000, 2);
    let sent = sender
        .send_bundle("big-bundle", &mut &body[..], body.len() as u64)
        .unwrap();
    assert_eq!(sent.emails, 5, "{sent:?}");
    servers.wait_for_mail(&relay, 5);
    let parts = captured(&relay);
    assert_eq!(
        parts.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    for (_, raw) in &parts {
        assert!(
            raw.len() <= 64_000 + 2048,
            "an email of {} bytes",
            raw.len()
        );
    }

    let mut receiver = servers.imap_receiver(&bob, "bob");
    let deliver = |order: &[usize], total: usize| {
        for &i in order {
            servers.inject(&alice.address, &bob.address, &parts[i - 1].1);
        }
        servers.wait_for_mail(&bob, total);
    };
    // Day one: parts 4 and 2.
    deliver(&[4, 2], 2);
    let r = receiver.receive().unwrap();
    assert!(r.complete.is_empty(), "{r:?}");
    assert_eq!(r.incomplete.len(), 1);
    assert_eq!(r.incomplete[0].parts, 5);
    assert!(r.incomplete[0].have > 0 && r.incomplete[0].have < 200_000);
    assert!(
        receiver.list().unwrap().is_empty(),
        "only whole bundles are listed"
    );

    // Day two, after a restart: part 2 again, then 5, 1 and 3.
    drop(receiver);
    let mut receiver = servers.imap_receiver(&bob, "bob");
    deliver(&[2, 5, 1, 3], 6);
    let r = receiver.receive().unwrap();
    assert_eq!(r.complete.len(), 1, "{r:?}");
    assert!(r.incomplete.is_empty());
    assert!(r.problems.is_empty());
    let id = r.complete[0].id.clone();
    assert_eq!(read_all(&mut receiver, &id), body);

    // Applied: all six emails (the duplicate too) go to Ferry/Processed, created now.
    let processed = bob.maildir.join(".Ferry.Processed");
    assert!(!processed.exists());
    receiver.settle(&id, &Disposition::Processed).unwrap();
    assert!(files_in(&bob.maildir).is_empty());
    assert_eq!(files_in(&processed).len(), 6);
    assert!(receiver.list().unwrap().is_empty());

    // A copy of part 3 arriving a week later is filed away on arrival, not listed.
    deliver(&[3], 7);
    let r = receiver.receive().unwrap();
    assert!(r.complete.is_empty() && r.incomplete.is_empty(), "{r:?}");
    assert_eq!(r.filed, 1);
    assert_eq!(files_in(&processed).len(), 7);
}

#[test]
fn other_mail_and_broken_attachments_stay_in_the_mailbox_and_are_reported() {
    let servers = MailServers::start(&["alice", "relay", "bob"]);
    let alice = servers.account("alice");
    let relay = servers.account("relay");
    let bob = servers.account("bob");

    // A real bundle email, captured, then altered in its attachment.
    let mut sender = servers.sender(&alice, &[&relay], 10_000_000, "alice");
    let body = bundle(3000, 3);
    sender
        .send_bundle("tampered", &mut &body[..], 3000)
        .unwrap();
    servers.wait_for_mail(&relay, 1);
    let raw = String::from_utf8(captured(&relay).remove(0).1).unwrap();
    let att = raw.rfind("Content-Transfer-Encoding: base64").unwrap();
    let line = raw[att..]
        .find("\n\n")
        .or_else(|| raw[att..].find("\r\n\r\n"))
        .unwrap()
        + att
        + 10;
    let mut tampered = raw.into_bytes();
    tampered[line] = if tampered[line] == b'A' { b'B' } else { b'A' };

    let plain =
        b"From: carol@example.test\r\nTo: bob@example.test\r\nSubject: lunch\r\n\r\nat noon?\r\n";
    // A file a person attached by hand: looks like a bundle, is not one.
    let by_hand = b"From: dan@example.test\r\nTo: bob@example.test\r\nSubject: here is the file\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n\
Content-Type: text/plain\r\n\r\nsee attached\r\n--XX\r\n\
Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"notes.ferry\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nbm90IGEgYnVuZGxl\r\n--XX--\r\n";
    // A bundle email for another dataset (another team sharing the mailbox).
    let other_dataset = String::from_utf8(captured(&relay).remove(0).1)
        .unwrap()
        .replace(DATASET, "ffffffffffffffffffffffffffffffff");

    servers.inject("carol@example.test", &bob.address, plain);
    servers.inject(&alice.address, &bob.address, &tampered);
    servers.inject("dan@example.test", &bob.address, by_hand);
    servers.inject(&alice.address, &bob.address, other_dataset.as_bytes());
    servers.wait_for_mail(&bob, 4);

    let mut receiver = servers.imap_receiver(&bob, "bob");
    let r = receiver.receive().unwrap();
    assert_eq!(r.emails_seen, 4);
    assert_eq!(
        r.other_mail, 2,
        "the lunch email and the other dataset's: {r:?}"
    );
    assert_eq!(r.problems.len(), 1, "{r:?}");
    let p = &r.problems[0];
    assert!(p.reason.contains("digest"), "{p:?}");
    assert_eq!(p.file_name.as_deref(), Some("tampered.ferry"));
    assert_eq!(
        p.data.len(),
        3000,
        "the altered bytes are kept for quarantine"
    );
    assert_ne!(p.data, body);
    assert!(p.location.contains("UID"), "{p:?}");

    // The hand-attached file is offered to the node, which finds it is no bundle and
    // rejects it: it stays listed and in the mailbox.
    assert_eq!(r.complete.len(), 1, "{r:?}");
    let id = r.complete[0].id.clone();
    assert_eq!(id.0, "notes.ferry");
    assert_eq!(read_all(&mut receiver, &id), b"not a bundle");
    receiver
        .settle(
            &id,
            &Disposition::Rejected {
                reason: "not a ferry bundle".into(),
            },
        )
        .unwrap();
    assert_eq!(receiver.list().unwrap().len(), 1);

    // Nothing was moved, nothing deleted, no folder created.
    assert_eq!(files_in(&bob.maildir).len(), 4);
    assert_eq!(count_messages(&bob.maildir), 4);
    assert!(!bob.maildir.join(".Ferry.Processed").exists());

    // The problem stays reported (across restarts) until the node dismisses it; reading
    // the mailbox again does not report it twice.
    drop(receiver);
    let mut receiver = servers.imap_receiver(&bob, "bob");
    assert_eq!(receiver.receive().unwrap().problems.len(), 0);
    let kept = receiver.problems().unwrap();
    assert_eq!(kept.len(), 1);
    assert!(receiver.dismiss_problem(&kept[0].id).unwrap());
    assert!(receiver.problems().unwrap().is_empty());
    assert_eq!(files_in(&bob.maildir).len(), 4);
}

#[test]
#[allow(clippy::print_stderr)]
fn a_send_while_smtp_is_down_is_queued_and_delivered_after_it_is_back() {
    let servers = MailServers::start(&["alice", "bob"]);
    let alice = servers.account("alice");
    let bob = servers.account("bob");
    let mut sender = servers.sender(&alice, &[&bob], 10_000_000, "alice");
    let body = bundle(50_000, 4);

    servers.stop_smtp();
    let err = sender
        .send_bundle("while-down", &mut &body[..], body.len() as u64)
        .unwrap_err();
    let text = err.to_string();
    eprintln!("measured: while SMTP is down the error reads: {text}");
    assert!(
        matches!(err, EmailError::Queued { attempts: 1, .. }),
        "{err:?}"
    );
    assert!(text.contains("kept in the outbox"), "{text}");
    assert!(text.contains(&servers.smtp_url()), "{text}");
    assert!(!text.contains('\n'), "one line: {text}");
    // Through the trait the same failure is an error whose source is the EmailError.
    let again =
        Transport::send(&mut sender, "while-down", &mut &body[..], body.len() as u64).unwrap_err();
    match &again {
        TransportError::Io { source, .. } => assert!(
            matches!(
                source
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<EmailError>()),
                Some(EmailError::Queued { attempts: 2, .. })
            ),
            "{again:?}"
        ),
        other => panic!("expected Io, got {other:?}"),
    }

    let queued = sender.outbox().unwrap();
    assert_eq!(
        queued.len(),
        1,
        "the same bundle is queued once: {queued:?}"
    );
    assert_eq!(queued[0].name, "while-down");
    assert_eq!(queued[0].attempts, 2);
    assert!(queued[0].last_error.is_some());
    assert!(queued[0].next_try > std::time::SystemTime::now());

    // An automatic run respects the back-off; a restart keeps the queue.
    drop(sender);
    let mut sender = servers.sender(&alice, &[&bob], 10_000_000, "alice");
    let r = sender.flush_outbox(FlushMode::Due).unwrap();
    assert!(r.sent.is_empty() && r.failed.is_empty());
    assert_eq!(r.waiting.len(), 1);

    servers.start_smtp();
    let r = sender.flush_outbox(FlushMode::All).unwrap();
    assert_eq!(r.sent.len(), 1, "{r:?}");
    assert!(sender.outbox().unwrap().is_empty());
    servers.wait_for_mail(&bob, 1);

    let mut receiver = servers.imap_receiver(&bob, "bob");
    let listed = receiver.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(read_all(&mut receiver, &listed[0].id), body);
}

#[test]
fn an_email_the_server_finds_too_large_is_queued_and_sent_split_once_the_limit_is_lowered() {
    let servers = MailServers::start_with(&["alice", "bob"], &["message_size_limit = 100000"]);
    let alice = servers.account("alice");
    let bob = servers.account("bob");
    let body = bundle(150_000, 5);
    let mut sender = servers.sender(&alice, &[&bob], 10_000_000, "alice");
    let err = sender
        .send_bundle("too-big", &mut &body[..], body.len() as u64)
        .unwrap_err();
    assert!(
        err.to_string().contains("max_message_bytes"),
        "the error says what to change: {err}"
    );
    assert_eq!(sender.outbox().unwrap().len(), 1);
    drop(sender);

    // The person lowers max_message_bytes; the queued bundle is split anew.
    let mut sender = servers.sender(&alice, &[&bob], 90_000, "alice");
    let r = sender.flush_outbox(FlushMode::All).unwrap();
    assert_eq!(r.sent.len(), 1, "{r:?}");
    assert_eq!(r.sent[0].emails, 3);
    servers.wait_for_mail(&bob, 3);
    let mut receiver = servers.imap_receiver(&bob, "bob");
    let listed = receiver.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(read_all(&mut receiver, &listed[0].id), body);
}

#[test]
fn processed_emails_move_over_imap_to_the_configured_folder_created_if_missing() {
    let servers = MailServers::start(&["alice", "bob"]);
    let alice = servers.account("alice");
    let bob = servers.account("bob");
    let mut sender = servers.sender(&alice, &[&bob], 10_000_000, "alice");
    let one = bundle(2000, 6);
    let two = bundle(3000, 7);
    sender.send_bundle("one", &mut &one[..], 2000).unwrap();
    sender.send_bundle("two", &mut &two[..], 3000).unwrap();
    servers.inject(
        "carol@example.test",
        &bob.address,
        b"From: carol@example.test\r\nSubject: hello\r\n\r\nhi\r\n",
    );
    servers.wait_for_mail(&bob, 3);

    let cfg = EmailConfig {
        processed_folder: Some("Archive/Ferry done".into()),
        ..servers.imap_config(&bob)
    };
    let mut receiver = EmailTransport::new(cfg, DATASET, servers.state("bob")).unwrap();
    let listed = receiver.list().unwrap();
    let ids: Vec<&str> = listed.iter().map(|m| m.id.0.as_str()).collect();
    assert_eq!(ids, vec!["one.ferry", "two.ferry"]);
    let folder = bob.maildir.join(".Archive.Ferry done");
    assert!(!folder.exists());

    receiver
        .settle(&MessageId("one.ferry".into()), &Disposition::Processed)
        .unwrap();
    assert_eq!(
        files_in(&folder).len(),
        1,
        "moved by IMAP into the new folder"
    );
    assert_eq!(
        files_in(&bob.maildir).len(),
        2,
        "the other two stay in the inbox"
    );
    let left: Vec<String> = files_in(&bob.maildir)
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
        .collect();
    assert!(left.iter().any(|m| m.contains("Subject: hello")));
    assert!(left.iter().any(|m| m.contains("X-Ferry-Bundle: two")));

    // Obsolete means the same for an inbox: filed, never deleted.
    receiver
        .settle(&MessageId("two.ferry".into()), &Disposition::Obsolete)
        .unwrap();
    assert_eq!(files_in(&folder).len(), 2);
    assert_eq!(files_in(&bob.maildir).len(), 1);
    assert!(receiver.list().unwrap().is_empty());
    assert!(matches!(
        receiver.open(&MessageId("one.ferry".into())),
        Err(TransportError::NotFound(_))
    ));
}

#[test]
fn saved_emails_and_saved_parts_import_like_received_mail() {
    let servers = MailServers::start(&["alice", "relay"]);
    let alice = servers.account("alice");
    let relay = servers.account("relay");
    let mut sender = servers.sender(&alice, &[&relay], 40_000, "alice");
    let body = bundle(60_000, 8);
    let sent = sender
        .send_bundle("saved", &mut &body[..], body.len() as u64)
        .unwrap();
    assert_eq!(sent.emails, 3);
    servers.wait_for_mail(&relay, 3);
    let parts = captured(&relay);

    // Part 1 saved as a .eml, part 2 as its bare attachment, part 3 as a .eml.
    let dir = servers.state("saved-files");
    std::fs::write(dir.join("one.eml"), &parts[0].1).unwrap();
    assert_eq!(extract_email(&parts[1].1).pieces[0].part, 2);
    // The bare attachment, as a mail program saves it.
    let msg = mail_parser::MessageParser::default()
        .parse(&parts[1].1[..])
        .unwrap();
    let framed = msg.attachments().next().unwrap().contents().to_vec();
    std::fs::write(dir.join("saved.part-2-of-3.ferrypart"), &framed).unwrap();
    std::fs::write(dir.join("three.eml"), &parts[2].1).unwrap();

    let mut node =
        EmailTransport::new(EmailConfig::default(), DATASET, servers.state("node")).unwrap();
    let r = node.import_file(&dir.join("one.eml")).unwrap();
    assert!(r.complete.is_empty());
    assert_eq!(r.incomplete.len(), 1);
    let r = node
        .import_file(&dir.join("saved.part-2-of-3.ferrypart"))
        .unwrap();
    assert!(r.complete.is_empty());
    let r = node.import_file(&dir.join("three.eml")).unwrap();
    assert_eq!(r.complete.len(), 1, "{r:?}");
    assert_eq!(read_all(&mut node, &r.complete[0].id), body);
    node.settle(&r.complete[0].id, &Disposition::Processed)
        .unwrap();
    assert!(
        dir.join("one.eml").exists(),
        "saved files are never removed"
    );
    // Importing a part again later is recognised as done.
    let r = node.import_file(&dir.join("one.eml")).unwrap();
    assert_eq!(r.already_processed, 1);
    assert!(r.complete.is_empty() && r.incomplete.is_empty());
}

#[test]
fn tls_and_logins_work_with_both_servers() {
    let servers = MailServers::start_tls(&["alice", "bob"]);
    let alice = servers.account("alice");
    let bob = servers.account("bob");
    let tls = |cfg: EmailConfig| EmailConfig {
        tls_ca_file: Some(servers.ca_file.clone()),
        ..cfg
    };
    let send = |smtp_url: String, login: bool, ca: bool, state: &str| {
        let mut cfg = EmailConfig {
            from: Some(alice.address.clone()),
            smtp_url: Some(smtp_url),
            ..Default::default()
        };
        if login {
            cfg.smtp_user = Some(alice.user.clone());
            cfg.smtp_password = Some(alice.password.clone());
        }
        if ca {
            cfg = tls(cfg);
        }
        let mut t = EmailTransport::new(cfg, DATASET, servers.state(state)).unwrap();
        t.set_recipients(&[&bob.address]).unwrap();
        let body = bundle(5000, state.len() as u8);
        t.send_bundle(state, &mut &body[..], 5000)
    };

    // STARTTLS, then AUTH (the server offers AUTH only over TLS, and takes mail only from a
    // logged-in sender).
    send(servers.smtp_url(), true, true, "starttls").unwrap();
    // TLS from the start.
    send(
        format!("smtps://127.0.0.1:{}", servers.smtps_port),
        true,
        true,
        "smtps",
    )
    .unwrap();
    servers.wait_for_mail(&bob, 2);

    // Without the login the server refuses the mail: queued, with a clear reason.
    let err = send(servers.smtp_url(), false, true, "no-login").unwrap_err();
    assert!(matches!(err, EmailError::Queued { .. }), "{err:?}");
    assert!(err.to_string().contains("SMTP server"), "{err}");
    // A certificate from an unknown authority is refused.
    let err = send(
        format!("smtps://127.0.0.1:{}", servers.smtps_port),
        true,
        false,
        "unknown-ca",
    )
    .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // IMAP with STARTTLS (Dovecot refuses passwords before TLS) and with TLS from the start.
    for (url, state) in [
        (servers.imap_url(), "imap-starttls"),
        (format!("imaps://127.0.0.1:{}", servers.imaps_port), "imaps"),
    ] {
        let cfg = tls(EmailConfig {
            imap_url: Some(url),
            ..servers.imap_config(&bob)
        });
        let mut t = EmailTransport::new(cfg, DATASET, servers.state(state)).unwrap();
        let listed = t.list().unwrap();
        let ids: Vec<&str> = listed.iter().map(|m| m.id.0.as_str()).collect();
        assert_eq!(ids, vec!["smtps.ferry", "starttls.ferry"], "{state}");
    }
    let cfg = EmailConfig {
        imap_url: Some(format!("imaps://127.0.0.1:{}", servers.imaps_port)),
        ..servers.imap_config(&bob)
    };
    let mut t = EmailTransport::new(cfg, DATASET, servers.state("imaps-unknown-ca")).unwrap();
    let err = t.receive().unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}
