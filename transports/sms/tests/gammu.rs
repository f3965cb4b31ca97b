//! The SMS transport through real Gammu SMSD daemons (the `files` service, dummy phones) on
//! this machine: outgoing SMS are files in the outbox that gammu-smsd transmits; the test
//! carries each transmitted SMS to the other phone's SIM as an incoming one, which
//! gammu-smsd puts in its inbox. Fails (never skips) when Gammu is not installed.

mod common;

use common::*;
use ferry_transport_sms::frame::Frame;
use ferry_transport_sms::{Accepted, Peer, text};
use std::collections::HashSet;
use std::time::Duration;

const A: &str = "+15550001";
const B: &str = "+15550002";

/// Carries what `from` transmitted to `to`'s phone, except what `drop` refuses; returns how
/// many SMS it carried or dropped.
fn carry(
    from: &Gammu,
    from_number: &str,
    to: &Gammu,
    seen: &mut HashSet<String>,
    drop: &mut dyn FnMut(&GammuBody) -> bool,
) -> usize {
    let sent = from.take_sent(seen);
    for (_, _, body) in &sent {
        if !drop(body) {
            to.deliver(from_number, body);
        }
    }
    sent.len()
}

fn frame_of(body: &GammuBody) -> Option<Frame> {
    let bytes = match body {
        GammuBody::Text(t) => text::decode(t).ok()?,
        GammuBody::Binary(b) => b.clone(),
    };
    ferry_transport_sms::frame::decode(&bytes).ok()
}

fn exchange(binary: bool) {
    let clock = TestClock::default();
    let (mut ga, mut gb) = (Gammu::start(), Gammu::start());
    let (pa, pb) = (phone(A), phone(B));
    let peers = [Peer::new(pa.clone(), "a"), Peer::new(pb.clone(), "b")];
    let mut ca = ga.config(&pa);
    let mut cb = gb.config(&pb);
    ca.binary = binary;
    cb.binary = binary;
    let mut a = Endpoint::new(ca, &peers, &clock, None);
    let mut b = Endpoint::new(cb, &peers, &clock, None);
    let (mut seen_a, mut seen_b) = (HashSet::new(), HashSet::new());

    let m = blob(20, 1000);
    let r = a.sms.send_to(&pb, "m", &m).unwrap();
    assert_eq!(r.parts, if binary { 8 } else { 9 });
    // Part 2 is lost on the way.
    let mut carried = 0;
    wait_for("gammu-smsd A to transmit every part", || {
        ga.assert_running();
        carried += carry(&ga, A, &gb, &mut seen_a, &mut |body| {
            matches!(frame_of(body), Some(Frame::Data { index: 2, .. }))
        });
        carried == r.parts
    });
    let mut parts = 0;
    wait_for("gammu-smsd B to receive the parts", || {
        gb.assert_running();
        for acc in b.sms.receive_spool().unwrap() {
            assert!(matches!(acc, Accepted::Part { .. }), "{acc:?}");
            parts += 1;
        }
        parts == r.parts - 1
    });
    // A person's SMS on the same phone is set aside, nothing else is disturbed.
    gb.deliver(A, &GammuBody::Text("Hello, are you there?".into()));
    wait_for("the person's SMS", || {
        b.sms
            .receive_spool()
            .unwrap()
            .iter()
            .any(|acc| matches!(acc, Accepted::Refused(_)))
    });
    let noted = std::fs::read_to_string(b.state.path().join("quarantine/refused.jsonl")).unwrap();
    assert!(noted.contains("Hello, are you there?"), "{noted}");
    assert!(b.sms.reports().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(&gb.inbox).unwrap().count(),
        0,
        "taken SMS leave gammu's inbox"
    );

    // B asks for part 2 through its outbox; A answers from its inbox.
    clock.advance(Duration::from_secs(3600));
    let reqs = b.sms.request_missing().unwrap();
    assert_eq!(reqs[0].missing, vec![2]);
    wait_for("the repair request to cross", || {
        gb.assert_running();
        carry(&gb, B, &ga, &mut seen_b, &mut |_| false);
        a.sms
            .receive_spool()
            .unwrap()
            .iter()
            .any(|acc| matches!(acc, Accepted::RepairRequested { resend: 1, .. }))
    });
    wait_for("the repaired part to cross", || {
        carry(&ga, A, &gb, &mut seen_a, &mut |_| false);
        b.sms
            .receive_spool()
            .unwrap()
            .iter()
            .any(|acc| matches!(acc, Accepted::Completed { .. }))
    });
    assert_eq!(b.inbox(), vec![m]);
    assert_eq!(
        seen_a.len(),
        r.parts + 1,
        "only the lost part was sent again"
    );
    for g in [&ga, &gb] {
        assert_eq!(
            std::fs::read_dir(&g.error).unwrap().count(),
            0,
            "gammu refused an SMS"
        );
        assert!(g.log().contains("Transmitted"));
    }
    if binary {
        assert!(seen_a.iter().all(|n| n.ends_with(".smsbackup")));
    } else {
        assert!(seen_a.iter().all(|n| n.ends_with(".txt")));
    }
}

#[test]
#[ignore = "needs gammu-smsd — run tests/run"]
fn text_sms_cross_gammu_spools_and_a_lost_part_is_repaired() {
    exchange(false);
}

#[test]
#[ignore = "needs gammu-smsd — run tests/run"]
fn binary_sms_cross_gammu_spools_and_a_lost_part_is_repaired() {
    exchange(true);
}
