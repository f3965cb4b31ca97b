//! Issue 18 (strangers on the SMS path), at the transport: what SMS a stranger sends can
//! make this transport keep, send and offer, fed exactly as a gateway hands SMS over. The
//! gateway is Gammu's outbox folder, so every SMS the transport would send is a file the
//! test counts. (The same findings over the real `ferry sms listen` and Kannel are in
//! tests/e2e/sms/attacks.rs.)

use ferry_transport::{Disposition, Transport};
use ferry_transport_sms::frame::{self, Gone, Missing};
use ferry_transport_sms::{
    Accepted, GatewayKind, IncomingSms, Peer, Phone, SmsBody, SmsConfig, SmsTransport, limits, text,
};
use std::io::Read;
use std::path::Path;

const A: &str = "+15550001";
const B: &str = "+15550002";
const ME: &str = "+15550009";

fn phone(s: &str) -> Phone {
    Phone::parse(s).unwrap()
}

/// A transport on `state` that sends into `state/outbox` (counted by [`sent`]) and knows
/// members A and B.
fn open(state: &Path, tweak: impl FnOnce(&mut SmsConfig)) -> SmsTransport {
    let mut c = SmsConfig::new(GatewayKind::Gammu, phone(ME));
    c.outbox = Some(state.join("outbox"));
    c.accept_unknown = true;
    c.repair_after_minutes = 0;
    tweak(&mut c);
    std::fs::create_dir_all(state.join("outbox")).unwrap();
    let mut t = SmsTransport::open_with_password(c, state.join("sms"), None).unwrap();
    t.set_peers([Peer::new(phone(A), "a"), Peer::new(phone(B), "b")]);
    t
}

/// SMS handed to the gateway so far.
fn sent(state: &Path) -> usize {
    std::fs::read_dir(state.join("outbox")).unwrap().count()
}

fn data(from: &str, tag: u16, msg: &[u8], i: usize) -> IncomingSms {
    let lay = frame::layout(msg.len(), 123).unwrap();
    IncomingSms {
        from: from.into(),
        to: None,
        body: SmsBody::Text(text::encode(&frame::data_frame(tag, msg, lay, i))),
    }
}

fn control(from: &str, f: Vec<u8>) -> IncomingSms {
    IncomingSms {
        from: from.into(),
        to: None,
        body: SmsBody::Text(text::encode(&f)),
    }
}

fn message(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn read(t: &mut SmsTransport, id: &ferry_transport::MessageId) -> Vec<u8> {
    let mut v = Vec::new();
    t.open(id).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// Bytes and files below a folder.
fn usage(dir: &Path) -> (u64, usize) {
    let mut total = (0, 0);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                let (b, n) = usage(&e.path());
                total = (total.0 + b, total.1 + n);
            } else {
                total = (total.0 + m.len(), total.1 + 1);
            }
        }
    }
    total
}

/// Issue 18, finding 2: 100 "missing parts" requests and 100 "gone" notices from 100
/// made-up numbers were each answered with an SMS to the number it claimed. Now nothing is
/// sent to anyone, and each is reported as ignored.
#[test]
fn strangers_requests_and_notices_make_it_send_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = open(dir.path(), |_| {});
    for n in 0..100 {
        let from = format!("+1999555{n:04}");
        let req = frame::missing_frames(
            &[Missing {
                tag: n,
                count: 3,
                parts: vec![0, 1, 2],
            }],
            123,
        );
        let got = t.accept(&control(&from, req[0].clone())).unwrap();
        assert!(matches!(got, Accepted::Ignored { .. }), "{got:?}");
        let gone = frame::gone_frames(&[Gone { tag: n, count: 3 }], 123);
        let got = t.accept(&control(&from, gone[0].clone())).unwrap();
        assert!(matches!(got, Accepted::Ignored { .. }), "{got:?}");
    }
    t.flush_queue().unwrap();
    assert_eq!(sent(dir.path()), 0, "SMS were sent to strangers");
    assert!(t.reports().unwrap().is_empty());
}

/// Issue 18, finding 2: forged repair requests claiming a member's number made 40 requests
/// trigger 195 resends and spend that member's daily budget, so the next real change
/// waited a day. Now each part goes again at most once per 20 s and 3 times a day, and
/// repair SMS to one member take at most a quarter of its budget: the next message still
/// goes out at once, whole.
#[test]
fn forged_repair_requests_claiming_a_members_number_cannot_spend_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = open(dir.path(), |c| c.daily_budget = 50);
    // Five messages of 3 parts went to A.
    let mut tags = Vec::new();
    for k in 0..5 {
        let r = t
            .send_to(&phone(A), &format!("m{k}"), &message(k, 300))
            .unwrap();
        assert_eq!((r.parts, r.sent_now), (3, 3));
        tags.push(r.tag);
    }
    assert_eq!(sent(dir.path()), 15);
    // 40 forged requests for every part of every message, and for messages never sent.
    for k in 0..40u16 {
        let mut reqs: Vec<Missing> = tags
            .iter()
            .map(|&tag| Missing {
                tag,
                count: 3,
                parts: vec![0, 1, 2],
            })
            .collect();
        reqs.push(Missing {
            tag: 10_000 + k,
            count: 2,
            parts: vec![0, 1],
        });
        for f in frame::missing_frames(&reqs, 123) {
            t.accept(&control(A, f)).unwrap();
        }
        t.flush_queue().unwrap();
    }
    let repairs = sent(dir.path()) - 15;
    assert!(
        repairs <= t.repair_share() as usize,
        "{repairs} repair SMS went to A (share {})",
        t.repair_share()
    );
    // The next real message still goes out today, all of it.
    let r = t.send_to(&phone(A), "next", &message(9, 300)).unwrap();
    assert_eq!((r.sent_now, r.queued), (3, 0), "{r:?}");
    // A stranger's number is never sent anything, even for a tag that was sent to A.
    let req = frame::missing_frames(
        &[Missing {
            tag: tags[0],
            count: 3,
            parts: vec![0],
        }],
        123,
    );
    let before = sent(dir.path());
    t.accept(&control("+19995550000", req[0].clone())).unwrap();
    t.flush_queue().unwrap();
    assert_eq!(sent(dir.path()), before);
}

/// Issue 18, finding 2: fake first parts from 50 numbers made ferry send 250 repair
/// requests to them. Now strangers' incomplete messages are never asked about; members'
/// are.
#[test]
fn strangers_partial_messages_are_never_asked_to_repair() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = open(dir.path(), |_| {});
    for n in 0..50 {
        t.accept(&data(&format!("+1999555{n:04}"), n, &message(1, 500), 0))
            .unwrap();
    }
    t.accept(&data(A, 7, &message(2, 500), 0)).unwrap();
    let asked = t.request_missing().unwrap();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].to, phone(A));
    assert_eq!(sent(dir.path()), 1, "one repair request, to the member");
}

/// Issue 18, finding 10: a forged part with a member's number and the real tag made the
/// message fail, and the real part was then dropped as a duplicate. Now both versions are
/// kept; when the node refuses the assembly with the forged part, the one with the real
/// part is offered.
#[test]
fn a_forged_part_does_not_displace_the_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = open(dir.path(), |_| {});
    let real = message(3, 600);
    let mut forged = real.clone();
    forged[150] ^= 0xFF; // part 1 of 6
    // The forged part 1 arrives first, then every real part.
    t.accept(&data(A, 40, &forged, 1)).unwrap();
    let mut offered = Vec::new();
    for i in 0..6 {
        if let Accepted::Completed { message, .. } = t.accept(&data(A, 40, &real, i)).unwrap() {
            offered.push(message.id);
        }
    }
    assert_eq!(offered.len(), 1);
    let first = read(&mut t, &offered[0]);
    assert_eq!(
        first, forged,
        "the first assembly used the version that came first"
    );
    // The node checks it and refuses it: the other assembly takes its place.
    t.settle(
        &offered[0],
        &Disposition::Rejected {
            reason: "signature".into(),
        },
    )
    .unwrap();
    let listed = t.list().unwrap();
    assert_eq!(listed.len(), 1, "the refused assembly is not offered again");
    assert_eq!(read(&mut t, &listed[0].id), real);
    t.settle(&listed[0].id, &Disposition::Processed).unwrap();
    assert!(t.list().unwrap().is_empty());
    assert!(t.incomplete().unwrap().is_empty());
    // A forged part arriving after the real message was applied starts nothing.
    assert!(matches!(
        t.accept(&data(A, 40, &forged, 1)).unwrap(),
        Accepted::Duplicate { .. }
    ));

    // The real part first and the forged one after: the real assembly is offered first
    // and applied; the forged version is never offered.
    t.accept(&data(A, 41, &real, 1)).unwrap();
    t.accept(&data(A, 41, &forged, 1)).unwrap();
    for i in [0, 2, 3, 4, 5] {
        t.accept(&data(A, 41, &real, i)).unwrap();
    }
    let listed = t.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(read(&mut t, &listed[0].id), real);
}

/// Issue 18, finding 5: refused messages were imported again on every later event. A
/// refused assembly is never offered again, and refusals spend the sender's allowance:
/// beyond it, complete messages wait instead of being offered.
#[test]
fn refused_messages_are_never_offered_again_and_junk_cannot_keep_the_node_busy() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = open(dir.path(), |_| {});
    let mut offered = 0;
    let mut held = 0;
    for n in 0..40u16 {
        let from = format!("+1999555{n:04}");
        match t.accept(&data(&from, n, &message(n as u8, 90), 0)).unwrap() {
            Accepted::Completed { message, .. } => {
                offered += 1;
                t.settle(
                    &message.id,
                    &Disposition::Rejected {
                        reason: "not a bundle".into(),
                    },
                )
                .unwrap();
            }
            Accepted::Held { .. } => held += 1,
            other => panic!("{other:?}"),
        }
        assert!(
            t.list().unwrap().is_empty(),
            "a refused message is listed again"
        );
    }
    assert_eq!(
        offered, 10,
        "ten refusals in a burst from numbers that are no member's"
    );
    assert_eq!(held, 30);
    // A member's messages are not held back by strangers' refusals.
    let real = message(7, 90);
    assert!(matches!(
        t.accept(&data(A, 1, &real, 0)).unwrap(),
        Accepted::Completed { .. }
    ));
}

/// Issue 18, findings 3 and 5: 22 000 fake parts took the home from 124 KB to 345 MB in
/// 88 007 files, and `ferry status` then listed 21 997 numbers. Now strangers' incomplete
/// messages stay within their bound, as do the state folder's files and bytes, and the
/// counters list members only.
#[test]
fn a_flood_of_fake_parts_stays_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = open(dir.path(), |_| {});
    for n in 0..3000u32 {
        let from = format!("+1999{n:07}");
        let tag = (n % 16_000) as u16;
        match n % 3 {
            // A first part of a 20-part message.
            0 => t.accept(&data(&from, tag, &message(1, 2300), 0)).unwrap(),
            // Not ferry's at all, and long.
            1 => t
                .accept(&IncomingSms {
                    from: from.clone(),
                    to: None,
                    body: SmsBody::Text(format!("win a prize {}", "!".repeat(900))),
                })
                .unwrap(),
            // A sender that is not a number, 17 000 characters long with escape codes.
            _ => t
                .accept(&IncomingSms {
                    from: format!("\x1b[2K\rapplied a bundle from hq\n{}", "9".repeat(17_000)),
                    to: None,
                    body: SmsBody::Text("x".into()),
                })
                .unwrap(),
        };
    }
    let strangers = t.strangers().unwrap();
    assert!(
        strangers.incomplete <= limits::STRANGER_MESSAGES,
        "{strangers:?}"
    );
    assert!(
        strangers.set_aside_log_bytes <= 1024 * 1024 + 4096,
        "{strangers:?}"
    );
    let (bytes, files) = usage(&dir.path().join("sms"));
    assert!(files < 200, "{files} files");
    assert!(bytes < 3_000_000, "{bytes} bytes");
    let counters = t.counters().unwrap();
    assert_eq!(counters.len(), 2, "members only: {counters:?}");
}

/// Issue 18, finding 3 (per sender): a flood of fake first parts claiming a member's
/// number fills that member's share only; another member's message in flight completes.
#[test]
fn a_flood_claiming_one_members_number_does_not_crowd_out_another_member() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = open(dir.path(), |_| {});
    let real = message(5, 500);
    t.accept(&data(B, 3, &real, 0)).unwrap();
    for n in 0..300u16 {
        t.accept(&data(A, n, &message(1, 500), 0)).unwrap();
    }
    let inc = t.incomplete().unwrap();
    let of_a = inc.iter().filter(|i| i.from == phone(A)).count();
    assert!(of_a <= limits::PER_MEMBER_MESSAGES, "{of_a}");
    for i in 1..5 {
        t.accept(&data(B, 3, &real, i)).unwrap();
    }
    let listed = t.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(read(&mut t, &listed[0].id), real);
    // What made room was reported (members' messages are never dropped silently), and
    // the reports stay bounded.
    assert!(t.reports().unwrap().len() <= 256);
    let (_, files) = usage(&dir.path().join("sms/expired"));
    assert!(files <= 64, "{files} files in expired/");
}
