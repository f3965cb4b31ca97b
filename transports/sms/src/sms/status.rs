//! What `ferry status` shows of the SMS transport: sent and queued per peer, what
//! strangers left, incomplete messages.

use super::SmsTransport;
use crate::error::SmsError;
use crate::phone::Phone;

/// Per-peer counters for `ferry status` ([`SmsTransport::counters`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCounters {
    /// The peer.
    pub phone: Phone,
    /// Its label, when it is a known peer.
    pub label: Option<String>,
    /// SMS sent to it today (UTC).
    pub sent_today: u32,
    /// The daily budget.
    pub daily_budget: u32,
    /// SMS sent to it in all.
    pub sent_total: u64,
    /// SMS waiting in the queue for it.
    pub queued: usize,
    /// Messages from it still incomplete.
    pub incomplete: usize,
}

/// What numbers that are no member's left with this node ([`SmsTransport::strangers`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StrangerCounters {
    /// Their incomplete messages kept now (at most 64).
    pub incomplete: usize,
    /// Their incomplete messages dropped so far to stay within bounds, or after a day.
    pub dropped_messages: u64,
    /// Versions of parts dropped (anyone's) because a part already had four.
    pub extra_versions: u64,
    /// Bytes of the log of SMS set aside (at most 1 MiB).
    pub set_aside_log_bytes: u64,
}

/// An incomplete message ([`SmsTransport::incomplete`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incomplete {
    /// The sender.
    pub from: Phone,
    /// The message's tag.
    pub tag: u16,
    /// Parts held.
    pub have: u16,
    /// Parts it has.
    pub count: u16,
    /// When its first part arrived (seconds since 1970).
    pub first_seen: u64,
    /// When its last part arrived.
    pub last_seen: u64,
    /// Repair requests sent for it so far.
    pub requests: u32,
}

impl SmsTransport {
    /// SMS sent and queued per peer: every known peer, and any other number this node
    /// sent to (`--to`). Numbers that only sent to it are not listed one by one: see
    /// [`SmsTransport::strangers`].
    pub fn counters(&self) -> Result<Vec<PeerCounters>, SmsError> {
        let _l = self.store.lock()?;
        let now = self.now_secs();
        let mut phones: Vec<Phone> = self.peers.iter().map(|p| p.phone.clone()).collect();
        for dir in ["peers", "queue"] {
            for p in self.store.peers_in(dir)? {
                if !phones.iter().any(|q| q.same_as(&p)) {
                    phones.push(p);
                }
            }
        }
        let index = self.load_index()?;
        let mut out = Vec::new();
        for phone in phones {
            let state = self.peer_state(&phone, now)?;
            let incomplete = index
                .messages
                .iter()
                .filter(|e| e.from.same_as(&phone))
                .count();
            out.push(PeerCounters {
                label: self.peer_for(&phone).map(|p| p.label.clone()),
                sent_today: state.sent_today,
                daily_budget: self.config.daily_budget,
                sent_total: state.sent_total,
                queued: self.queue(&phone)?.len(),
                incomplete,
                phone,
            });
        }
        Ok(out)
    }

    /// What numbers that are no member's left with this node, in all.
    pub fn strangers(&self) -> Result<StrangerCounters, SmsError> {
        let _l = self.store.lock()?;
        let index = self.load_index()?;
        Ok(StrangerCounters {
            incomplete: index
                .messages
                .iter()
                .filter(|e| !self.is_member(&e.from))
                .count(),
            dropped_messages: index.dropped.stranger_messages,
            extra_versions: index.dropped.extra_versions,
            set_aside_log_bytes: self.quarantine_bytes(),
        })
    }

    /// Messages still incomplete.
    pub fn incomplete(&self) -> Result<Vec<Incomplete>, SmsError> {
        let _l = self.store.lock()?;
        self.incomplete_messages()
    }
}
