//! The SMS transport through a real Kannel (bearerbox + smsbox) on 127.0.0.1, with the test
//! as the phone network behind Kannel's HTTP SMSC: it routes SMS between numbers and drops,
//! duplicates and reorders some of them. Fails (never skips) when Kannel is not installed.

mod common;

use common::*;
use ferry_transport::{Disposition, MessageId, MessageInfo, Transport, TransportError};
use ferry_transport_sms::frame::{self, Frame};
use ferry_transport_sms::{
    Accepted, GiveUpReason, HttpMethod, HttpTemplate, Peer, ReportKind, SmsConfig, SmsError,
    SmsTransport, text,
};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

const A: &str = "+15550001";
const B: &str = "+15550002";
const C: &str = "+15550003";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// Data parts sent per (sender, tag, index), and how many of them the network dropped.
fn part_traffic(net: &Network) -> BTreeMap<(String, u16, u16), (usize, usize)> {
    let mut m = BTreeMap::new();
    for (mt, fate) in net.log() {
        if let Some(Frame::Data { tag, index, .. }) = mt.frame() {
            let e = m.entry((mt.from.clone(), tag, index)).or_insert((0, 0));
            e.0 += 1;
            if fate == Fate::Drop {
                e.1 += 1;
            }
        }
    }
    m
}

/// Asks for missing parts until both sides hold what they expect (each round moves the
/// clock past the repair back-off).
fn repair_until(w: &mut World, want: &[(usize, Vec<Vec<u8>>)]) -> usize {
    for round in 0..10 {
        let done = want
            .iter()
            .all(|(i, msgs)| sorted(w.endpoints[*i].inbox()) == sorted(msgs.clone()));
        if done {
            return round;
        }
        w.clock.advance(2 * DAY);
        for i in 0..w.endpoints.len() {
            w.endpoints[i].sms.request_missing().unwrap();
        }
        w.settle();
    }
    panic!(
        "messages still incomplete after 10 repair rounds: {:?}",
        w.endpoints
            .iter()
            .map(|e| e.sms.incomplete().unwrap())
            .collect::<Vec<_>>()
    );
}

#[test]
#[ignore = "needs Kannel (bearerbox, smsbox) — run tests/run"]
fn messages_cross_kannel_despite_loss_duplication_and_reordering() {
    let mut w = World::new(&[A, B], |_| {});
    // Data parts: 2 in 13 dropped, 1 duplicated, 1 held back behind the next SMS. Repair
    // requests: every third dropped (they are asked again after the back-off).
    w.net.set_policy(|mt: &Mt| match mt.frame() {
        Some(Frame::Data { .. }) => match mt.seq % 13 {
            2 | 9 => Fate::Drop,
            5 => Fate::Duplicate,
            7 => Fate::Hold,
            _ => Fate::Deliver,
        },
        Some(_) if mt.seq % 3 == 0 => Fate::Drop,
        _ => Fate::Deliver,
    });
    let to_b: Vec<Vec<u8>> = vec![blob(1, 233), blob(2, 233), blob(3, 233), blob(4, 2900)];
    let to_a: Vec<Vec<u8>> = vec![blob(5, 233), blob(6, 1500)];
    let (pa, pb) = (phone(A), phone(B));
    for (i, m) in to_b.iter().enumerate() {
        let r = w.endpoints[0]
            .sms
            .send_to(&pb, &format!("a{i}"), m)
            .unwrap();
        assert_eq!(
            (r.parts, r.sent_now, r.queued),
            (
                w.endpoints[0].sms.messages_for(m.len() as u64).unwrap(),
                r.parts,
                0
            )
        );
        if m.len() == 233 {
            assert_eq!(r.parts, 2, "a 233-byte bundle takes 2 text SMS");
        }
    }
    for (i, m) in to_a.iter().enumerate() {
        w.endpoints[1]
            .sms
            .send_to(&pa, &format!("b{i}"), m)
            .unwrap();
    }
    w.settle();
    let first_pass = w.net.mt_count();
    assert_eq!(
        first_pass,
        2 * 4 + 25 + 13,
        "SMS per message: 2 per 233 bytes, 25 for 2900, 13 for 1500"
    );
    let rounds = repair_until(&mut w, &[(1, to_b.clone()), (0, to_a.clone())]);
    assert!(
        rounds >= 1,
        "the network dropped parts, so repair was needed"
    );

    // Only the parts that were lost were sent again: each part went out once, plus once
    // per time the network dropped it.
    let traffic = part_traffic(&w.net);
    let dropped: usize = traffic.values().map(|t| t.1).sum();
    assert!(dropped >= 4, "the test network dropped parts");
    for (part, (sent, drops)) in &traffic {
        assert_eq!(
            *sent,
            1 + drops,
            "part {part:?} was sent {sent} times but dropped {drops}"
        );
    }
    let requests = w
        .net
        .log()
        .iter()
        .filter(|(mt, _)| matches!(mt.frame(), Some(Frame::Missing(_))))
        .count();
    assert!(requests >= 2, "both sides asked for missing parts");
    // Duplicates were ignored, nothing was refused, nothing is left half-done.
    for e in &mut w.endpoints {
        assert!(e.sms.reports().unwrap().is_empty(), "{:?}", e.sms.reports());
        assert!(e.sms.incomplete().unwrap().is_empty());
    }
    assert!(
        w.endpoints[1]
            .events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains("Duplicate")),
        "a duplicated SMS was seen and ignored"
    );
    // The mailbox: a processed message leaves the list but is kept; an obsolete one goes.
    let ids: Vec<MessageId> = w.endpoints[1]
        .sms
        .list()
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        w.endpoints[1].sms.sender_of(&ids[0]).unwrap(),
        Some(pa.clone())
    );
    w.endpoints[1]
        .sms
        .settle(&ids[0], &Disposition::Processed)
        .unwrap();
    w.endpoints[1]
        .sms
        .settle(&ids[1], &Disposition::Obsolete)
        .unwrap();
    assert_eq!(w.endpoints[1].sms.list().unwrap().len(), 2);
    assert!(
        w.endpoints[1]
            .state
            .path()
            .join("inbox/processed")
            .join(format!("{}.msg", ids[0]))
            .exists()
    );
}

#[test]
#[ignore = "needs Kannel (bearerbox, smsbox) — run tests/run"]
fn a_receiver_asks_for_exactly_the_missing_parts_and_hears_when_they_are_gone() {
    let mut w = World::new(&[A, B], |_| {});
    let (pa, pb) = (phone(A), phone(B));
    // Parts 3 and 5 of the first transmission are lost.
    let first = Arc::new(AtomicUsize::new(0));
    w.net.set_policy(move |mt: &Mt| match mt.frame() {
        Some(Frame::Data { index: 3 | 5, .. })
            if first.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 =>
        {
            Fate::Drop
        }
        _ => Fate::Deliver,
    });
    let msg = blob(7, 650);
    let r = w.endpoints[0].sms.send_to(&pb, "six", &msg).unwrap();
    assert_eq!(r.parts, 6);
    w.settle();
    let inc = w.endpoints[1].sms.incomplete().unwrap();
    assert_eq!((inc.len(), inc[0].have, inc[0].count), (1, 4, 6));
    // Not yet: the back-off has not passed.
    assert!(w.endpoints[1].sms.request_missing().unwrap().is_empty());
    w.clock.advance(Duration::from_secs(31 * 60));
    let before = w.net.mt_count();
    let reqs = w.endpoints[1].sms.request_missing().unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (reqs[0].to.clone(), reqs[0].tag, reqs[0].missing.clone()),
        (pa.clone(), r.tag, vec![3, 5])
    );
    w.settle();
    let after: Vec<(Mt, Fate)> = w.net.log().split_off(before);
    let frames: Vec<Frame> = after.iter().filter_map(|(mt, _)| mt.frame()).collect();
    assert_eq!(frames.len(), 3, "one request and two parts: {frames:?}");
    assert!(matches!(&frames[0], Frame::Missing(m) if m[0].parts == vec![3, 5]));
    let resent: Vec<u16> = frames[1..]
        .iter()
        .map(|f| match f {
            Frame::Data { index, .. } => *index,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(resent, vec![3, 5]);
    assert!(
        after[0].0.text.len() <= 20,
        "a repair request is a short SMS"
    );
    assert_eq!(w.endpoints[1].inbox(), vec![msg]);

    // A part lost again, and by the time the receiver asks, the sender has dropped its
    // copy: the sender says so, and the receiver gives the message up with a report.
    w.net.set_policy(|mt: &Mt| match mt.frame() {
        Some(Frame::Data { index: 1, .. }) => Fate::Drop,
        _ => Fate::Deliver,
    });
    w.endpoints[0]
        .sms
        .send_to(&pb, "two", &blob(8, 233))
        .unwrap();
    w.settle();
    w.clock.advance(15 * DAY);
    w.endpoints[0].sms.expire().unwrap();
    w.endpoints[1].sms.request_missing().unwrap();
    w.settle();
    assert!(w.endpoints[1].sms.incomplete().unwrap().is_empty());
    let reports = w.endpoints[1].sms.reports().unwrap();
    assert!(
        reports.iter().any(|r| matches!(
            &r.kind,
            ReportKind::GaveUp {
                reason: GiveUpReason::SenderGone,
                have: 1,
                count: 2,
                ..
            }
        )),
        "{reports:?}"
    );
    let sender_reports = w.endpoints[0].sms.reports().unwrap();
    assert!(
        sender_reports
            .iter()
            .any(|r| matches!(&r.kind, ReportKind::RepairUnavailable { .. })),
        "{sender_reports:?}"
    );
    for r in reports.iter().chain(&sender_reports) {
        assert!(!r.to_string().contains('\n'));
    }
}

#[test]
#[ignore = "needs Kannel (bearerbox, smsbox) — run tests/run"]
fn malformed_unknown_and_never_completed_sms_are_reported_and_nothing_else_is_lost() {
    let mut w = World::new(&[A, B], |_| {});
    let (pa, pb) = (phone(A), phone(B));
    // Every second part of the first message is lost, and nobody asks for it.
    w.net.set_policy(|mt: &Mt| match mt.frame() {
        Some(Frame::Data {
            index: 1, count: 2, ..
        }) => Fate::Drop,
        _ => Fate::Deliver,
    });
    let incomplete = blob(9, 233);
    let good = blob(10, 3000);
    w.endpoints[0]
        .sms
        .send_to(&pb, "never", &incomplete)
        .unwrap();
    // A stranger's SMS that is a valid ferry message, a person's text, a damaged part.
    let stranger = text::encode(&frame::data_frame(
        42,
        b"from a stranger",
        frame::layout(15, 123).unwrap(),
        0,
    ));
    w.net.inject("+15559999", B, stranger.as_bytes(), false);
    w.net.inject(A, B, b"Hello, are you there?", false);
    let mut damaged = text::encode(&frame::data_frame(
        43,
        b"x",
        frame::layout(1, 123).unwrap(),
        0,
    ))
    .into_bytes();
    damaged[1] = if damaged[1] == b'a' { b'b' } else { b'a' };
    w.net.inject(A, B, &damaged, false);
    w.net.inject(A, B, &[0xFF, 0x00, 0x13], true);
    w.endpoints[0].sms.send_to(&pb, "good", &good).unwrap();
    w.settle();

    assert_eq!(
        w.endpoints[1].inbox(),
        vec![good.clone()],
        "the good message arrived"
    );
    // Not taken, each noted once in the bounded log: one from an unknown number, three
    // that are not ferry's. None of them is a report to dismiss.
    assert!(w.endpoints[1].sms.reports().unwrap().is_empty());
    let events = w.endpoints[1].events.lock().unwrap().clone();
    let refused = |unknown: bool| {
        events
            .iter()
            .filter(|e| {
                e.contains("Refused(Refusal") && e.contains(&format!("unknown_sender: {unknown}"))
            })
            .count()
    };
    assert_eq!((refused(true), refused(false)), (1, 3), "{events:#?}");
    let log = w.endpoints[1].state.path().join("quarantine/refused.jsonl");
    let noted = std::fs::read_to_string(&log).unwrap();
    assert_eq!(noted.lines().count(), 4, "{noted}");
    assert!(noted.contains("+15559999"));
    // The stranger turns out to be a member with a new number: its SMS is taken after all.
    let peers = vec![
        Peer::new(pa.clone(), "a"),
        Peer::new(phone("+15559999"), "a's new phone"),
    ];
    w.endpoints[1].sms.set_peers(peers);
    let replayed = w.endpoints[1].sms.replay_quarantine().unwrap();
    assert_eq!(replayed.len(), 1);
    assert!(matches!(replayed[0], Accepted::Completed { .. }));
    assert_eq!(
        sorted(w.endpoints[1].inbox()),
        sorted(vec![good.clone(), b"from a stranger".to_vec()])
    );
    // The log no longer holds what was taken.
    let noted = std::fs::read_to_string(&log).unwrap();
    assert_eq!(noted.lines().count(), 3, "{noted}");
    // The incomplete message (A's own number again) waits, then expires with a report; its part is kept.
    assert_eq!(w.endpoints[1].sms.incomplete().unwrap().len(), 1);
    w.clock.advance(13 * DAY);
    assert!(
        w.endpoints[1].sms.expire().unwrap().is_empty(),
        "not yet expired"
    );
    w.clock.advance(2 * DAY);
    let expired = w.endpoints[1].sms.expire().unwrap();
    assert_eq!(expired.len(), 1);
    match &expired[0].kind {
        ReportKind::GaveUp {
            from,
            have,
            count,
            reason,
            kept_at,
            ..
        } => {
            assert_eq!(
                (from, *have, *count, *reason),
                (&pa, 1, 2, GiveUpReason::Expired)
            );
            assert!(kept_at.exists(), "the part is kept: {}", kept_at.display());
        }
        other => panic!("{other:?}"),
    }
    assert!(w.endpoints[1].sms.incomplete().unwrap().is_empty());
    assert_eq!(
        sorted(w.endpoints[1].inbox()),
        sorted(vec![good, b"from a stranger".to_vec()]),
        "nothing else was lost"
    );
    // What was set aside goes after 14 days.
    assert!(!log.exists());

    // Reports go away when dismissed.
    for r in w.endpoints[1].sms.reports().unwrap() {
        w.endpoints[1].sms.dismiss_report(&r.id).unwrap();
    }
    assert!(w.endpoints[1].sms.reports().unwrap().is_empty());
}

#[test]
#[ignore = "needs Kannel (bearerbox, smsbox) — run tests/run"]
fn the_daily_budget_queues_what_exceeds_it_durably_and_sends_it_the_next_day() {
    let mut w = World::new(&[A, B], |c| {
        if c.from.as_str() == A {
            c.daily_budget = 3;
        }
    });
    let pb = phone(B);
    let (m1, m2) = (blob(11, 233), blob(12, 233));
    let dry = w.endpoints[0].sms.dry_run(&pb, 233).unwrap();
    assert_eq!(
        (
            dry.messages,
            dry.send_today,
            dry.queued,
            dry.remaining_today
        ),
        (2, 2, 0, 3)
    );
    let r1 = w.endpoints[0].sms.send_to(&pb, "m1", &m1).unwrap();
    assert_eq!((r1.sent_now, r1.queued), (2, 0));
    let dry = w.endpoints[0].sms.dry_run(&pb, 233).unwrap();
    assert_eq!((dry.messages, dry.send_today, dry.queued), (2, 1, 1));
    let r2 = w.endpoints[0].sms.send_to(&pb, "m2", &m2).unwrap();
    assert_eq!((r2.sent_now, r2.queued), (1, 1));
    // Sending the same message again costs nothing.
    let again = w.endpoints[0].sms.send_to(&pb, "m2", &m2).unwrap();
    assert!(again.already_sent);
    w.settle();
    assert_eq!(w.net.mt_count(), 3, "exactly the budget went out");
    let c = &w.endpoints[0].sms.counters().unwrap()[0];
    assert_eq!(
        (
            c.phone.clone(),
            c.sent_today,
            c.daily_budget,
            c.queued,
            c.sent_total
        ),
        (pb.clone(), 3, 3, 1, 3)
    );
    assert_eq!(c.label.as_deref(), Some("node-1"));
    assert_eq!(w.endpoints[1].inbox(), vec![m1.clone()]);

    // A restart keeps the queue; the same day, nothing more goes.
    let config = w.endpoints[0].sms.config().clone();
    let mut again = SmsTransport::open_with_password(
        config,
        w.endpoints[0].state.path(),
        Some(KANNEL_PASS.into()),
    )
    .unwrap();
    again.set_clock(w.clock.clock());
    assert_eq!(again.counters().unwrap()[0].queued, 1);
    assert_eq!(again.flush_queue().unwrap().sent, 0);
    w.clock.advance(DAY);
    let f = again.flush_queue().unwrap();
    assert_eq!((f.sent, f.still_queued), (1, 0));
    let expected = 4;
    settle(&w.net, &w.answered, || expected);
    assert_eq!(sorted(w.endpoints[1].inbox()), sorted(vec![m1, m2]));
    let c = &again.counters().unwrap()[0];
    assert_eq!((c.sent_today, c.sent_total, c.queued), (1, 4, 0));
}

#[test]
#[ignore = "needs Kannel (bearerbox, smsbox) — run tests/run"]
fn binary_sms_and_post_requests_cross_kannel() {
    let mut w = World::new(&[A, B], |c| {
        c.binary = true;
        c.method = HttpMethod::Post;
    });
    w.net.set_policy(|mt: &Mt| {
        if mt.seq == 1 {
            Fate::Drop
        } else {
            Fate::Deliver
        }
    });
    let (pa, pb) = (phone(A), phone(B));
    let (m1, m2, m3) = (blob(13, 233), blob(14, 1000), blob(15, 136));
    assert_eq!(w.endpoints[0].sms.messages_for(233).unwrap(), 2);
    w.endpoints[0].sms.send_to(&pb, "m1", &m1).unwrap();
    w.endpoints[0].sms.send_to(&pb, "m3", &m3).unwrap();
    w.endpoints[1].sms.send_to(&pa, "m2", &m2).unwrap();
    w.settle();
    assert_eq!(w.net.mt_count(), 2 + 1 + 8);
    for (mt, _) in w.net.log() {
        assert_eq!(mt.coding.as_deref(), Some("1"), "binary SMS");
        assert!(mt.text.len() <= 140);
    }
    repair_until(&mut w, &[(1, vec![m1, m3]), (0, vec![m2])]);
}

#[test]
#[ignore = "needs Kannel (bearerbox, smsbox) — run tests/run"]
fn an_http_template_gateway_sends_the_same_sms() {
    // Kannel's sendsms interface driven through the generic template, as an Android
    // gateway app or a hosted provider would be.
    let mut w = World::new(&[A, B], |c| {
        if c.from.as_str() == A {
            let url = c.sendsms_url.take().unwrap();
            c.gateway = ferry_transport_sms::GatewayKind::Http;
            c.template = Some(HttpTemplate {
                url: format!(
                    "{url}?username={{username}}&password={{password}}&from={{from}}&to={{to}}&text={{text}}"
                ),
                method: None,
                body: None,
                content_type: None,
                headers: BTreeMap::new(),
                success_contains: Some("Accepted".into()),
            });
        }
    });
    let m = blob(16, 500);
    w.endpoints[0].sms.send_to(&phone(B), "t", &m).unwrap();
    w.settle();
    assert_eq!(w.endpoints[1].inbox(), vec![m]);

    // A refusal is an error that names the gateway, and the SMS stays queued.
    let mut config = w.endpoints[0].sms.config().clone();
    config.username = Some("nobody".into());
    let state = tempfile::tempdir().unwrap();
    let mut bad =
        SmsTransport::open_with_password(config, state.path(), Some("wrong".into())).unwrap();
    match bad.send_to(&phone(B), "x", b"hello") {
        Err(SmsError::GatewayRefused { status, .. }) => assert_eq!(status, 403),
        other => panic!("{other:?}"),
    }
    assert_eq!(bad.counters().unwrap()[0].queued, 1);
}

/// A transport whose `send` returns once the SMS crossed the network, so the conformance
/// suite (written for synchronous media) sees what arrived.
struct Synced {
    ep: Endpoint,
    net: Arc<Network>,
    answered: Arc<AtomicUsize>,
}

impl Transport for Synced {
    fn capabilities(&self) -> ferry_transport::Capabilities {
        self.ep.sms.capabilities()
    }
    fn send(
        &mut self,
        name: &str,
        body: &mut dyn Read,
        len: u64,
    ) -> Result<MessageInfo, TransportError> {
        let before_mt = self.net.mt_count();
        let before = self.ep.sent_total() as usize;
        let info = self.ep.sms.send(name, body, len)?;
        let sent = self.ep.sent_total() as usize - before;
        settle(&self.net, &self.answered, || before_mt + sent);
        Ok(info)
    }
    fn list(&mut self) -> Result<Vec<MessageInfo>, TransportError> {
        self.ep.sms.list()
    }
    fn open(&mut self, id: &MessageId) -> Result<Box<dyn Read + '_>, TransportError> {
        self.ep.sms.open(id)
    }
    fn settle(&mut self, id: &MessageId, d: &Disposition) -> Result<(), TransportError> {
        self.ep.sms.settle(id, d)
    }
}

#[test]
#[ignore = "needs Kannel (bearerbox, smsbox) — run tests/run"]
fn passes_the_transport_conformance_suite_over_kannel() {
    let numbers = [
        "+15550011",
        "+15550012",
        "+15550013",
        "+15550014",
        "+15550015",
        "+15550016",
        "+15550017",
        "+15550018",
        "+15550019",
        "+15550020",
    ];
    let mut w = World::new(&numbers, |_| {});
    let mut pairs = 0;
    let (net, answered) = (w.net.clone(), w.answered.clone());
    let mut endpoints: HashMap<usize, Endpoint> = w.endpoints.drain(..).enumerate().collect();
    ferry_transport::conformance::run(|| {
        let mut a = endpoints
            .remove(&(2 * pairs))
            .expect("a pair for each check of the suite");
        let b = endpoints.remove(&(2 * pairs + 1)).unwrap();
        pairs += 1;
        a.sms.set_recipient(Some(b.phone.clone()));
        (
            Synced {
                ep: a,
                net: net.clone(),
                answered: answered.clone(),
            },
            Synced {
                ep: b,
                net: net.clone(),
                answered: answered.clone(),
            },
        )
    });
    assert_eq!(pairs, 5);
    // The suite's large message was as large as 256 text SMS carry.
    let c = SmsConfig::new(ferry_transport_sms::GatewayKind::Kannel, phone(C));
    assert_eq!(frame::max_message(c.frame_bytes()), 256 * 117);
}
