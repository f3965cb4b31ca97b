//! The conformance suite every transport must pass.
//!
//! A transport crate calls [`run`] from a test with a factory that returns a fresh pair of
//! endpoints on the same medium: `(sender, receiver)`. Each check panics with a message
//! naming the broken rule.

use crate::{Disposition, Transport, TransportError};
use std::io::Read;

/// Runs every check. `pair` makes a fresh (sender, receiver) on one empty medium.
pub fn run<T: Transport>(mut pair: impl FnMut() -> (T, T)) {
    let (mut a, mut b) = pair();
    delivers_bytes_unchanged(&mut a, &mut b);
    let (mut a, mut b) = pair();
    carries_binary_and_large_messages(&mut a, &mut b);
    let (mut a, mut b) = pair();
    refuses_oversized_messages(&mut a, &mut b);
    let (mut a, mut b) = pair();
    settling_is_safe(&mut a, &mut b);
    let (mut a, mut b) = pair();
    retry_keeps_and_rejected_is_not_offered_again(&mut a, &mut b);
}

fn read_all<T: Transport>(t: &mut T, id: &crate::MessageId) -> Vec<u8> {
    let mut out = Vec::new();
    t.open(id)
        .expect("open a listed message")
        .read_to_end(&mut out)
        .expect("read a listed message");
    out
}

fn received<T: Transport>(b: &mut T) -> Vec<Vec<u8>> {
    let ids: Vec<_> = b.list().expect("list").into_iter().map(|m| m.id).collect();
    let mut out: Vec<_> = ids.iter().map(|id| read_all(b, id)).collect();
    out.sort();
    out
}

/// What is sent is what arrives, byte for byte, and every message sent is listed.
pub fn delivers_bytes_unchanged<T: Transport>(a: &mut T, b: &mut T) {
    let msgs: [&[u8]; 3] = [
        b"first bundle",
        b"second bundle",
        b"\x00\xff\xc0\xdb binary",
    ];
    for (i, m) in msgs.iter().enumerate() {
        a.send(&format!("m{i}"), &mut &m[..], m.len() as u64)
            .expect("send");
    }
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| m.to_vec()).collect();
    want.sort();
    assert_eq!(
        received(b),
        want,
        "received messages differ from those sent"
    );
}

/// Binary content of every byte value, and a message as large as the transport allows (up to
/// 4 MiB), arrive intact.
pub fn carries_binary_and_large_messages<T: Transport>(a: &mut T, b: &mut T) {
    let cap = a.capabilities().max_message_bytes.unwrap_or(u64::MAX);
    let len = cap.min(4 << 20) as usize;
    let body: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    a.send("large", &mut &body[..], body.len() as u64)
        .expect("send a message at the size limit");
    assert_eq!(received(b), vec![body], "a large message was altered");
}

/// A message above `max_message_bytes` is refused with `TooLarge`, and nothing arrives.
pub fn refuses_oversized_messages<T: Transport>(a: &mut T, b: &mut T) {
    let Some(max) = a.capabilities().max_message_bytes else {
        return;
    };
    let body = vec![7u8; max as usize + 1];
    match a.send("too-big", &mut &body[..], body.len() as u64) {
        Err(TransportError::TooLarge { size, max: m }) => {
            assert_eq!((size, m), (max + 1, max));
        }
        other => panic!("an oversized message must be refused with TooLarge, got {other:?}"),
    }
    assert!(received(b).is_empty(), "an oversized message arrived");
}

/// Settling never loses a message that was not declared obsolete: on a shared medium a
/// rejected message stays where it is (elsewhere it stays unchanged, or the transport
/// drops its copy because the node kept one); an obsolete one may go.
pub fn settling_is_safe<T: Transport>(a: &mut T, b: &mut T) {
    a.send("keep", &mut &b"keep me"[..], 7).expect("send");
    let id = b.list().expect("list")[0].id.clone();
    b.settle(
        &id,
        &Disposition::Rejected {
            reason: "test".into(),
        },
    )
    .expect("settle rejected");
    if !a.capabilities().shared_medium {
        let left = received(b);
        assert!(
            left == vec![b"keep me".to_vec()] || left.is_empty(),
            "a rejected message must stay unchanged, or not be offered again: {left:?}"
        );
        return;
    }
    assert_eq!(
        received(b),
        vec![b"keep me".to_vec()],
        "a rejected message must stay in place"
    );
    b.settle(&id, &Disposition::Processed)
        .expect("settle processed");
    assert_eq!(
        received(b),
        vec![b"keep me".to_vec()],
        "on a shared medium a processed message stays for the next reader"
    );
    b.settle(&id, &Disposition::Obsolete)
        .expect("settle obsolete");
    assert!(
        received(b).is_empty(),
        "an obsolete message on a shared medium is removed"
    );
}

/// What the node's one exchange relies on: a message settled `Retry` stays listed with the
/// same bytes (the node kept no copy); one settled `Rejected` is not offered again unless
/// the medium is shared (where it stays for the other readers); one settled `Processed` is
/// not offered again unless the medium is shared, opens as `NotFound` (another process
/// settled it) and settles again harmlessly; `send` reports the message's length.
pub fn retry_keeps_and_rejected_is_not_offered_again<T: Transport>(a: &mut T, b: &mut T) {
    let shared = a.capabilities().shared_medium;
    for (name, body) in [
        ("later", &b"try me later"[..]),
        ("bad", b"refuse me"),
        ("good", b"take me"),
    ] {
        let sent = a
            .send(name, &mut &body[..], body.len() as u64)
            .expect("send");
        // The exchange reports what it sent by what `send` returns.
        assert!(
            sent.len.is_none_or(|l| l == body.len() as u64),
            "send must report the message's own length, got {:?} for {}",
            sent.len,
            body.len()
        );
    }
    let id_of = |b: &mut T, want: &[u8]| {
        let ids: Vec<_> = b.list().expect("list").into_iter().map(|m| m.id).collect();
        ids.into_iter()
            .find(|id| read_all(b, id) == want)
            .unwrap_or_else(|| panic!("{:?} is not listed", String::from_utf8_lossy(want)))
    };
    let later = id_of(b, b"try me later");
    b.settle(
        &later,
        &Disposition::Retry {
            reason: "test".into(),
        },
    )
    .expect("settle retry");
    let bad = id_of(b, b"refuse me");
    b.settle(
        &bad,
        &Disposition::Rejected {
            reason: "test".into(),
        },
    )
    .expect("settle rejected");
    let good = id_of(b, b"take me");
    b.settle(&good, &Disposition::Processed)
        .expect("settle processed");
    let left = received(b);
    assert!(
        left.contains(&b"try me later".to_vec()),
        "a message settled Retry must stay listed, unchanged: {left:?}"
    );
    // Retry again and again: still there, still the same bytes.
    let later = id_of(b, b"try me later");
    b.settle(
        &later,
        &Disposition::Retry {
            reason: "test".into(),
        },
    )
    .expect("settle retry twice");
    let later = id_of(b, b"try me later");
    assert_eq!(read_all(b, &later), b"try me later");
    if !shared {
        assert_eq!(
            received(b),
            vec![b"try me later".to_vec()],
            "rejected and processed messages must not be offered again"
        );
        // Two processes may take from one mailbox (`ferry serve`'s scheduled run and a
        // terminal's): the one that comes second opens a message the first settled, and
        // must learn that it is gone — `NotFound`, which the exchange skips — not get its
        // bytes again or an error that stops the run. Settling it again changes nothing.
        match b.open(&good) {
            Err(TransportError::NotFound(_)) => {}
            Err(e) => panic!("opening a settled message must say NotFound, got {e}"),
            Ok(_) => panic!("a processed message must not open again"),
        }
        match b.settle(&good, &Disposition::Processed) {
            Ok(()) | Err(TransportError::NotFound(_)) => {}
            Err(e) => panic!("settling a settled message again must be harmless, got {e}"),
        }
        assert_eq!(
            received(b),
            vec![b"try me later".to_vec()],
            "settling twice must not bring a message back or lose another"
        );
    }
}

#[cfg(test)]
mod tests {
    //! The suite itself: a correct in-memory mailbox passes it, and each way of breaking a
    //! rule the exchange relies on makes it fail.
    use super::*;
    use crate::{Capabilities, Direction, MessageId, MessageInfo};
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;
    use std::time::Duration;

    /// What a broken mailbox gets wrong.
    #[derive(Clone, Copy, PartialEq)]
    enum Flaw {
        None,
        /// A processed message still opens.
        OpensSettled,
        /// Retry drops the message.
        RetryDrops,
        /// A rejected message is offered again.
        RejectedStays,
        /// `send` reports another length.
        WrongLength,
    }

    /// The last number given, the messages listed, the messages settled away.
    type Medium = (u64, BTreeMap<u64, Vec<u8>>, BTreeMap<u64, Vec<u8>>);

    #[derive(Clone)]
    struct Mailbox {
        shared: Rc<RefCell<Medium>>,
        flaw: Flaw,
    }

    impl Transport for Mailbox {
        fn capabilities(&self) -> Capabilities {
            Capabilities {
                name: "memory",
                max_message_bytes: Some(64 << 10),
                direction: Direction::OneWay,
                typical_latency: Duration::ZERO,
                trusted_carrier: false,
                shared_medium: false,
            }
        }

        fn send(
            &mut self,
            _name: &str,
            body: &mut dyn Read,
            len: u64,
        ) -> Result<MessageInfo, TransportError> {
            if len > 64 << 10 {
                return Err(TransportError::TooLarge {
                    size: len,
                    max: 64 << 10,
                });
            }
            let mut bytes = Vec::new();
            body.read_to_end(&mut bytes).expect("read from memory");
            let mut s = self.shared.borrow_mut();
            s.0 += 1;
            let n = s.0;
            s.1.insert(n, bytes);
            Ok(MessageInfo {
                id: MessageId(n.to_string()),
                len: Some(if self.flaw == Flaw::WrongLength {
                    len + 1
                } else {
                    len
                }),
                location: format!("message {n}"),
            })
        }

        fn list(&mut self) -> Result<Vec<MessageInfo>, TransportError> {
            Ok(self
                .shared
                .borrow()
                .1
                .iter()
                .map(|(n, b)| MessageInfo {
                    id: MessageId(n.to_string()),
                    len: Some(b.len() as u64),
                    location: format!("message {n}"),
                })
                .collect())
        }

        fn open(&mut self, id: &MessageId) -> Result<Box<dyn Read + '_>, TransportError> {
            let n: u64 =
                id.0.parse()
                    .map_err(|_| TransportError::NotFound(id.clone()))?;
            let s = self.shared.borrow();
            let found = s.1.get(&n).or(match self.flaw {
                Flaw::OpensSettled => s.2.get(&n),
                _ => None,
            });
            match found {
                Some(b) => Ok(Box::new(std::io::Cursor::new(b.clone()))),
                None => Err(TransportError::NotFound(id.clone())),
            }
        }

        fn settle(&mut self, id: &MessageId, d: &Disposition) -> Result<(), TransportError> {
            let n: u64 =
                id.0.parse()
                    .map_err(|_| TransportError::NotFound(id.clone()))?;
            let mut s = self.shared.borrow_mut();
            let take = match d {
                Disposition::Retry { .. } => self.flaw == Flaw::RetryDrops,
                Disposition::Rejected { .. } => self.flaw != Flaw::RejectedStays,
                Disposition::Processed | Disposition::Obsolete => true,
            };
            if take && let Some(b) = s.1.remove(&n) {
                s.2.insert(n, b);
            }
            Ok(())
        }
    }

    fn suite_passes(flaw: Flaw) -> bool {
        std::panic::catch_unwind(|| {
            run(|| {
                let shared = Rc::new(RefCell::new(Default::default()));
                let a = Mailbox {
                    shared: shared.clone(),
                    flaw,
                };
                (a.clone(), a)
            })
        })
        .is_ok()
    }

    #[test]
    fn a_correct_mailbox_passes_and_each_broken_rule_fails_the_suite() {
        assert!(suite_passes(Flaw::None), "a correct mailbox must pass");
        for (flaw, what) in [
            (Flaw::OpensSettled, "a settled message that still opens"),
            (Flaw::RetryDrops, "Retry that drops the message"),
            (Flaw::RejectedStays, "a rejected message offered again"),
            (Flaw::WrongLength, "send reporting another length"),
        ] {
            assert!(!suite_passes(flaw), "the suite let {what} pass");
        }
    }
}
