//! Reassembly in the state folder, fed SMS as a gateway would hand them over: any order,
//! duplicates, restarts between parts, two processes at once, tags reused.

use ferry_transport::{Transport, TransportError};
use ferry_transport_sms::frame::{self, Layout};
use ferry_transport_sms::{
    Accepted, GatewayKind, IncomingSms, Peer, Phone, SmsBody, SmsConfig, SmsTransport, text,
};
use std::io::Read;
use std::path::Path;

const A: &str = "+15550001";

fn open(state: &Path) -> SmsTransport {
    let mut c = SmsConfig::new(GatewayKind::Gammu, Phone::parse("+15550002").unwrap());
    c.outbox = Some(state.join("outbox"));
    let mut t = SmsTransport::open_with_password(c, state, None).unwrap();
    t.set_peers([Peer::new(Phone::parse(A).unwrap(), "a")]);
    t
}

fn message(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 253) as u8).collect()
}

fn sms(from: &str, tag: u16, msg: &[u8], lay: Layout, i: usize) -> IncomingSms {
    IncomingSms {
        from: from.into(),
        to: None,
        body: SmsBody::Text(text::encode(&frame::data_frame(tag, msg, lay, i))),
    }
}

fn inbox(t: &mut SmsTransport) -> Vec<Vec<u8>> {
    let ids: Vec<_> = t.list().unwrap().into_iter().map(|m| m.id).collect();
    ids.iter()
        .map(|id| {
            let mut v = Vec::new();
            t.open(id).unwrap().read_to_end(&mut v).unwrap();
            v
        })
        .collect()
}

#[test]
fn parts_reassemble_in_any_order_across_restarts_and_duplicates_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let msg = message(2000);
    let lay = frame::layout(msg.len(), 123).unwrap();
    assert_eq!(lay.count, 18);
    // A scrambled order with every third part twice.
    let mut order: Vec<usize> = (0..lay.count).map(|i| (i * 7) % lay.count).collect();
    order.extend((0..lay.count).step_by(3));
    let (first, rest) = order.split_at(9);
    let mut outcomes = Vec::new();
    {
        let mut t = open(dir.path());
        for &i in first {
            outcomes.push(t.accept(&sms(A, 77, &msg, lay, i)).unwrap());
        }
        assert_eq!(t.incomplete().unwrap()[0].have, 9);
    } // the process stops; days pass
    let mut t = open(dir.path());
    for &i in rest {
        // The gateway that wrote the sender without its "+".
        outcomes.push(t.accept(&sms("15550001", 77, &msg, lay, i)).unwrap());
    }
    let completed = outcomes
        .iter()
        .filter(|o| matches!(o, Accepted::Completed { .. }))
        .count();
    let duplicates = outcomes
        .iter()
        .filter(|o| matches!(o, Accepted::Duplicate { .. }))
        .count();
    assert_eq!((completed, duplicates), (1, order.len() - lay.count));
    assert_eq!(inbox(&mut t), vec![msg.clone()]);
    // A late duplicate after completion starts nothing new.
    assert!(matches!(
        t.accept(&sms(A, 77, &msg, lay, 5)).unwrap(),
        Accepted::Duplicate { .. }
    ));
    assert!(t.incomplete().unwrap().is_empty());
    assert_eq!(t.list().unwrap().len(), 1);
    let id = t.list().unwrap()[0].id.clone();
    assert_eq!(t.sender_of(&id).unwrap(), Some(Phone::parse(A).unwrap()));
}

#[test]
fn two_processes_taking_parts_of_one_message_complete_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let msg = message(3000);
    let lay = frame::layout(msg.len(), 123).unwrap();
    let handles: Vec<_> = (0..2)
        .map(|k| {
            let (path, msg) = (dir.path().to_path_buf(), msg.clone());
            std::thread::spawn(move || {
                let mut t = open(&path);
                (0..lay.count)
                    .filter(|i| i % 2 == k || i % 5 == 0)
                    .map(|i| t.accept(&sms(A, 5, &msg, lay, i)).unwrap())
                    .filter(|o| matches!(o, Accepted::Completed { .. }))
                    .count()
            })
        })
        .collect();
    let completed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(completed, 1);
    assert_eq!(inbox(&mut open(dir.path())), vec![msg]);
}

#[test]
fn a_reused_tag_with_another_part_count_is_kept_apart_from_the_old_parts() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = open(dir.path());
    let old = message(500);
    let new = message(300);
    let (lo, ln) = (
        frame::layout(500, 123).unwrap(),
        frame::layout(300, 123).unwrap(),
    );
    t.accept(&sms(A, 9, &old, lo, 0)).unwrap();
    for i in 0..ln.count {
        t.accept(&sms(A, 9, &new, ln, i)).unwrap();
    }
    assert_eq!(inbox(&mut t), vec![new]);
    // The old message's part is still there, and it completes when the rest arrives.
    let inc = t.incomplete().unwrap();
    assert_eq!((inc.len(), inc[0].have, inc[0].count), (1, 1, 5));
    for i in 1..lo.count {
        t.accept(&sms(A, 9, &old, lo, i)).unwrap();
    }
    assert_eq!(inbox(&mut t).len(), 2);
    assert!(t.reports().unwrap().is_empty());
}

#[test]
fn a_footer_or_prefix_added_by_a_gateway_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = open(dir.path());
    let msg = message(100);
    let lay = frame::layout(100, 123).unwrap();
    let text = text::encode(&frame::data_frame(4, &msg, lay, 0));
    for (i, wrapped) in [
        format!("{text}\n-- sent by FreeSMS"),
        format!("FWD: {text}"),
    ]
    .into_iter()
    .enumerate()
    {
        let sms = IncomingSms {
            from: A.into(),
            to: None,
            body: SmsBody::Text(wrapped),
        };
        let want_new = i == 0;
        match t.accept(&sms).unwrap() {
            Accepted::Completed { .. } => assert!(want_new),
            Accepted::Duplicate { .. } => assert!(!want_new),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(inbox(&mut t), vec![msg]);
}

#[test]
fn binary_parts_and_text_parts_are_both_understood() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = open(dir.path());
    let msg = message(250);
    let lay = frame::layout(msg.len(), frame::BINARY_FRAME).unwrap();
    for i in 0..lay.count {
        let body = SmsBody::Binary(frame::data_frame(3, &msg, lay, i));
        t.accept(&IncomingSms {
            from: A.into(),
            to: None,
            body,
        })
        .unwrap();
    }
    assert_eq!(inbox(&mut t), vec![msg]);
}

#[test]
fn sending_needs_a_recipient_and_refuses_what_256_sms_cannot_carry() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = open(dir.path());
    let max = t.capabilities().max_message_bytes.unwrap();
    assert_eq!(max, 256 * 117);
    let err = t.send("x", &mut &b"hi"[..], 2).unwrap_err();
    assert!(
        err.to_string().contains("ferry contact set --phone"),
        "{err}"
    );
    let big = vec![0u8; max as usize + 1];
    assert!(matches!(
        t.send("y", &mut &big[..], big.len() as u64),
        Err(TransportError::TooLarge { .. })
    ));
    // With a recipient, the SMS lands in Gammu's outbox under Gammu's naming.
    std::fs::create_dir_all(dir.path().join("outbox")).unwrap();
    t.set_recipient(Some(Phone::parse("+15550009").unwrap()));
    let info = t.send("z", &mut &message(233)[..], 233).unwrap();
    assert!(
        info.location.contains("2 message(s), 2 sent"),
        "{}",
        info.location
    );
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2);
    for n in &names {
        assert!(
            n.starts_with("OUTC") && n.contains("_+15550009_") && n.ends_with(".txt"),
            "{n}"
        );
        let text = std::fs::read_to_string(dir.path().join("outbox").join(n)).unwrap();
        assert!(text.len() <= 160 && text.bytes().all(|b| text::ALPHABET.contains(&b)));
    }
}

/// Upgrading: a message the previous version kept as `incoming/DIGITS-TAG-COUNT.json` (every
/// version of every part in hexadecimal) is taken over by the part store, versions included,
/// and completes when its last part arrives.
#[test]
fn a_message_kept_by_the_previous_version_is_taken_over_with_its_versions() {
    let dir = tempfile::tempdir().unwrap();
    let msg = message(600);
    let lay = frame::layout(msg.len(), 123).unwrap();
    assert!(lay.count >= 3);
    {
        let mut t = open(dir.path());
        for i in 0..lay.count - 1 {
            t.accept(&sms(A, 9, &msg, lay, i)).unwrap();
        }
    }
    let key = format!("15550001-00009-{:03}", lay.count);
    let incoming = dir.path().join("incoming");
    assert!(incoming.join("parts").join(&key).join("log").is_file());
    std::fs::remove_dir_all(incoming.join("parts").join(&key)).unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut parts: Vec<Vec<String>> = (0..lay.count - 1)
        .map(
            |i| match frame::decode(&frame::data_frame(9, &msg, lay, i)).unwrap() {
                frame::Frame::Data { payload, .. } => vec![hex(&payload)],
                other => panic!("a data frame decodes as data, not {other:?}"),
            },
        )
        .collect();
    // A forged version of part 1 that arrived after the real one.
    parts[1].push(hex(b"forged"));
    parts.push(Vec::new());
    let legacy = incoming.join(format!("{key}.json"));
    std::fs::write(
        &legacy,
        serde_json::to_vec(&serde_json::json!({ "parts": parts, "tried": [] })).unwrap(),
    )
    .unwrap();
    let mut t = open(dir.path());
    let last = t.accept(&sms(A, 9, &msg, lay, lay.count - 1)).unwrap();
    assert!(matches!(last, Accepted::Completed { .. }), "{last:?}");
    assert!(!legacy.exists());
    // The real versions, first to arrive, make the first assembly.
    assert_eq!(inbox(&mut t), vec![msg]);
}
