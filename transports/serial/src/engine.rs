//! The session protocol as a state machine: frames and the time go in, frames and events
//! come out. No threads, no device; only the receive store touches files.
//!
//! - **Opening.** Each end picks a random *epoch* and sends HELLO (its epoch, the peer's if
//!   known, its MTU) until it hears a HELLO echoing its epoch. A HELLO with a new epoch from an
//!   established peer means the peer restarted: the association starts over (or, once the
//!   application has seen messages of the old one, the session fails with `PeerRestarted`).
//! - **Messages.** The sender OFFERs each message (slot, length, BLAKE3 hash); the receiver
//!   answers NEED with the byte ranges it lacks (from its state folder: this is resume), or
//!   DONE if it holds the message whole. The sender sends DATA for exactly those ranges.
//!   When every byte is in and the hash checks, the receiver sends DONE and delivers the
//!   message (in slot order). A message of at most [`EAGER_MAX`] bytes is sent right behind
//!   its OFFER, without waiting for NEED (the receiver takes it as if it had asked), which
//!   saves a round trip for the small messages that open and close an exchange.
//! - **Reliability.** Selective repeat: every frame but HELLO and ACK has a sequence
//!   number; at most `window` DATA frames are unacknowledged; the sender asks for an ACK
//!   (POLL) every half window and on the last frame of a burst; an ACK names the highest
//!   number received and a 64-bit map of the ones below. A frame older than an acknowledged
//!   one that is not acknowledged itself was lost (serial links keep order): its content is
//!   sent again under a new number. When no ACK comes within the retransmission timeout
//!   (smoothed round trip + 4 × deviation, RFC 6298, doubled per silent timeout), a small
//!   PROBE asks for one, instead of repeating data. Retries are bounded: a piece of a
//!   message sent `MAX_SENDS` times ends the session (`TooManyTries`), and the application's
//!   calls give up once the peer has been silent for `timeout` (`LinkLost`). While an
//!   interactive session is idle, a PROBE every `timeout / 4` shows each end that the other
//!   is still there.
//! - **Closing.** When the application closes and every message it sent is DONE, CLOSE is
//!   sent; the session is over once the peer's CLOSE arrived and ours was acknowledged. An
//!   unacknowledged CLOSE is itself what is sent again on a timeout (no backoff while
//!   closing); an end whose CLOSE was acknowledged keeps sending keep-alives until the
//!   peer's CLOSE arrives; a peer that sent its CLOSE and then stays silent for half the
//!   silence timeout has finished and left (only its last ACK was lost).
//! - **Admission.** Until the application says it knows who the peer is ([`Engine::admit`]),
//!   the peer is a stranger: at most [`PREAUTH_MESSAGES`] messages of at most
//!   [`HANDSHAKE_MAX`] bytes are taken, in memory only (nothing reaches the state folder),
//!   other offers wait unanswered (at most [`MAX_DEFERRED`], then REFUSE), and this end
//!   answers at most [`PREAUTH_ANSWERS`] frames (ACK, NEED, DONE, HELLO replies, PROBE)
//!   before the session fails with `Budget`. Once admitted, messages go to the state folder:
//!   at most [`MAX_RX_PARTIALS`] partly received messages and [`RX_SESSION_BYTES`] bytes per
//!   session (further offers wait), within the folder's own quota (else REFUSE).

use crate::fault::Fault;
use crate::progress::Flow;
use crate::ranges::RangeSet;
use crate::store::{Lookup, Partial, RxStore};
use crate::wire::{Body, DATA_HEADER, Frame, VERSION};
use crate::{MAX_MESSAGE, MessageHash};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many messages may be offered at once.
const OFFER_AHEAD: usize = 4;
/// How often one piece of a message may be sent in a session before the link is declared
/// unusable (at 30 % frame loss, 24 losses in a row happen once in 10^12 tries).
pub(crate) const MAX_SENDS: u8 = 24;
/// REFUSE reason: larger than this end takes.
pub(crate) const REFUSE_TOO_LARGE: u8 = 1;
/// REFUSE reason: too many messages offered at once (before admission, or beyond the
/// session's limits).
pub(crate) const REFUSE_BUSY: u8 = 2;
/// REFUSE reason: the state folder is at its quota.
pub(crate) const REFUSE_FULL: u8 = 3;
/// Largest message whose bytes follow its OFFER at once, before the receiver's NEED: what
/// is wasted when the receiver holds it already is at most this.
pub const EAGER_MAX: u64 = 1024;
/// Largest message taken from a peer that is not admitted yet (kept in memory).
pub const HANDSHAKE_MAX: u64 = 64 * 1024;
/// Messages taken from a peer that is not admitted yet.
pub const PREAUTH_MESSAGES: usize = 4;
/// Offers that may wait unanswered for admission or for room; more are refused.
pub const MAX_DEFERRED: usize = 16;
/// Frames this end sends in answer to a peer that is not admitted yet (ACK, NEED, DONE,
/// REFUSE, HELLO replies, PROBE) before the session fails: a handshake needs about 15 on a
/// clean link, twice that at 30 % loss.
pub const PREAUTH_ANSWERS: u32 = 64;
/// Partly received messages of one session in the state folder at once.
pub const MAX_RX_PARTIALS: usize = 4;
/// Bytes (announced lengths) of one session's partly received messages at once.
pub const RX_SESSION_BYTES: u64 = 2 * MAX_MESSAGE;

/// Counters of one session.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Frames written to the device.
    pub frames_sent: u64,
    /// Valid frames received from the peer.
    pub frames_received: u64,
    /// Received frames thrown away as damaged (CRC, escapes, length).
    pub frames_damaged: u64,
    /// Bytes written to the device (after escaping and encapsulation).
    pub wire_bytes_sent: u64,
    /// Message bytes sent in DATA frames, repeats included.
    pub data_bytes_sent: u64,
    /// Message bytes sent again in this session (after a loss, a cut, or a peer restart).
    pub data_bytes_resent: u64,
    /// New message bytes received and stored.
    pub data_bytes_received: u64,
    /// Message bytes received that were already held.
    pub duplicate_bytes_received: u64,
    /// Bytes of offered messages that were already held from earlier sessions.
    pub resumed_bytes: u64,
    /// Frames declared lost whose content was sent again.
    pub retransmissions: u64,
    /// PROBEs sent after a timeout.
    pub probes: u64,
    /// Smoothed round-trip time, once measured.
    pub rtt: Option<Duration>,
    /// Estimated airtime of everything sent (bytes at the configured rate).
    pub airtime: Duration,
}

/// Fixed parameters of an engine.
#[derive(Clone, Debug)]
pub(crate) struct Params {
    /// Message bytes per DATA frame this end sends and accepts.
    pub(crate) mtu: u16,
    /// Unacknowledged DATA frames allowed.
    pub(crate) window: usize,
    /// Link time of one full DATA frame.
    pub(crate) frame_time: Duration,
    /// Link time of one byte.
    pub(crate) byte_time: Duration,
    /// Open the link (send HELLO) without having anything to send.
    pub(crate) announce: bool,
    /// Fail with `PeerRestarted` (instead of starting over) once the application saw a
    /// message of the association.
    pub(crate) fault_on_restart: bool,
    /// Send a PROBE when the established link has been quiet this long, so each end knows
    /// the other is still there while its application thinks.
    pub(crate) keepalive: Option<Duration>,
    /// Largest retransmission timeout (a third of the silence timeout).
    pub(crate) max_rto: Duration,
    /// Whether the peer is admitted from the start (messages of any size go to the state
    /// folder, no answer budget).
    pub(crate) admitted: bool,
}

/// What the engine tells its driver.
#[derive(Clone, Debug)]
pub(crate) enum Event {
    Established,
    /// A whole message from the peer, checked: its bytes (a message taken in memory), or
    /// in the store.
    Delivered {
        hash: MessageHash,
        resumed: u64,
        data: Option<Vec<u8>>,
    },
    /// The peer holds a message we sent.
    Sent {
        hash: MessageHash,
    },
    /// The peer will not take a message we sent.
    Refused {
        hash: MessageHash,
        reason: u8,
    },
    /// The peer has nothing more to send.
    PeerClosed,
    /// The peer restarted before anything was delivered; the association started over.
    Reassociated,
    Progress {
        flow: Flow,
        hash: MessageHash,
        total: u64,
        done: u64,
        resumed: u64,
    },
    Fault(Fault),
}

#[derive(Debug)]
struct OutMsg {
    hash: MessageHash,
    data: Arc<Vec<u8>>,
    slot: Option<u16>,
    offered: bool,
    answered: bool,
    /// Its bytes go out without waiting for NEED (a small message).
    eager: bool,
    more: bool,
    to_send: RangeSet,
    acked: RangeSet,
    inflight: RangeSet,
    done_wait: Option<Instant>,
    resumed: u64,
}

impl OutMsg {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    /// Whether it has bytes to send now.
    fn sendable(&self) -> bool {
        (self.answered || self.eager) && !self.to_send.is_empty()
    }

    fn done_bytes(&self) -> u64 {
        self.len()
            .saturating_sub(self.to_send.len() + self.inflight.len())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ctrl {
    Offer(MessageHash),
    Need(u16),
    Done(u16),
    Refuse(u16, u8),
    Close,
}

#[derive(Debug)]
enum Sent {
    Data {
        hash: MessageHash,
        start: u64,
        end: u64,
    },
    Ctrl(Ctrl),
    Probe,
}

#[derive(Debug)]
struct Inflight {
    sent: Sent,
    at: Instant,
    poll: bool,
}

#[derive(Debug)]
enum RxState {
    /// Being received in memory (a peer not admitted yet).
    Memory { buf: Vec<u8>, held: RangeSet },
    /// Being received into the state folder.
    Partial(Partial),
    /// Whole and checked: its bytes until delivered (a message taken in memory), or in the
    /// store.
    Complete(Option<Vec<u8>>),
}

impl RxState {
    fn held(&self) -> Option<&RangeSet> {
        match self {
            RxState::Memory { held, .. } => Some(held),
            RxState::Partial(p) => Some(p.held()),
            RxState::Complete(_) => None,
        }
    }

    fn ctrl(&self, slot: u16) -> Ctrl {
        match self {
            RxState::Complete(_) => Ctrl::Done(slot),
            _ => Ctrl::Need(slot),
        }
    }
}

#[derive(Debug)]
struct RxSlot {
    hash: MessageHash,
    len: u64,
    state: RxState,
    resumed: u64,
    delivered: bool,
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    epoch: u16,
    mtu: u16,
}

/// Most doublings of the RTO after consecutive losses.
const MAX_BACKOFF: u32 = 2;

/// Round-trip estimator (RFC 6298).
#[derive(Debug)]
struct Rtt {
    srtt: Option<Duration>,
    rttvar: Duration,
    min: Duration,
    max: Duration,
    initial: Duration,
}

impl Rtt {
    fn sample(&mut self, r: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(r);
                self.rttvar = self.rttvar * 3 / 4 + diff / 4;
                self.srtt = Some(s * 7 / 8 + r / 8);
            }
        }
    }

    fn rto(&self) -> Duration {
        match self.srtt {
            None => self.initial,
            Some(s) => {
                (s + (self.rttvar * 4).max(Duration::from_millis(50))).clamp(self.min, self.max)
            }
        }
    }
}

/// One end of a session.
#[derive(Debug)]
pub(crate) struct Engine {
    p: Params,
    epoch: u16,
    store: RxStore,
    peer: Option<Peer>,
    established: bool,
    sent_echo: bool,
    hello_reply: bool,
    hello_at: Instant,
    dirty: bool,
    last_heard: Option<Instant>,
    fault: Option<Fault>,
    // Sending.
    next_seq: u64,
    inflight: BTreeMap<u64, Inflight>,
    data_inflight: usize,
    since_poll: usize,
    last_poll_at: Instant,
    last_progress: Instant,
    backoff: u32,
    probe_due: bool,
    rtt: Rtt,
    ctrl: VecDeque<Ctrl>,
    out: Vec<OutMsg>,
    next_slot: u16,
    ever_sent: HashMap<MessageHash, RangeSet>,
    sends: HashMap<(MessageHash, u64), u8>,
    // Receiving.
    rx_largest: Option<u64>,
    rx_bitmap: u64,
    ack_due: Option<Instant>,
    rx: BTreeMap<u16, RxSlot>,
    next_deliver: u16,
    // Admission.
    admitted: bool,
    mem_taken: usize,
    deferred: VecDeque<(u16, u64, MessageHash)>,
    answers: u32,
    progress_at: Option<Instant>,
    // Closing.
    close_requested: bool,
    close_sent: bool,
    close_acked: bool,
    peer_closed: bool,
    events: Vec<Event>,
    pub(crate) stats: SessionStats,
}

/// The 64-bit number nearest to `reference` whose low 16 bits are `s`.
fn unwrap_seq(reference: u64, s: u16) -> u64 {
    let cand = (reference & !0xFFFF) | u64::from(s);
    let dist = |c: u64| c.abs_diff(reference);
    let mut best = cand;
    if cand >= 0x1_0000 && dist(cand - 0x1_0000) < dist(best) {
        best = cand - 0x1_0000;
    }
    if dist(cand + 0x1_0000) < dist(best) {
        best = cand + 0x1_0000;
    }
    best
}

impl Engine {
    pub(crate) fn new(p: Params, epoch: u16, store: RxStore, now: Instant) -> Engine {
        let initial = Duration::from_secs(1) + p.frame_time * 3;
        // An ACK may wait behind one frame the peer is sending, then takes its own time.
        let min = Duration::from_millis(200) + p.frame_time * 2;
        Engine {
            epoch,
            store,
            peer: None,
            established: false,
            sent_echo: false,
            hello_reply: false,
            hello_at: now,
            dirty: false,
            last_heard: None,
            fault: None,
            next_seq: 0,
            inflight: BTreeMap::new(),
            data_inflight: 0,
            since_poll: 0,
            last_poll_at: now,
            last_progress: now,
            backoff: 0,
            probe_due: false,
            rtt: Rtt {
                srtt: None,
                rttvar: Duration::ZERO,
                min,
                // Probes must come well within the peer's silence timeout, or a few losses in
                // a row would make a live link look dead.
                max: Duration::from_secs(60).min(p.max_rto).max(min),
                initial,
            },
            ctrl: VecDeque::new(),
            out: Vec::new(),
            next_slot: 0,
            ever_sent: HashMap::new(),
            sends: HashMap::new(),
            rx_largest: None,
            rx_bitmap: 0,
            ack_due: None,
            rx: BTreeMap::new(),
            next_deliver: 0,
            admitted: p.admitted,
            mem_taken: 0,
            deferred: VecDeque::new(),
            answers: 0,
            progress_at: None,
            close_requested: false,
            close_sent: false,
            close_acked: false,
            peer_closed: false,
            events: Vec::new(),
            stats: SessionStats::default(),
            p,
        }
    }

    pub(crate) fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub(crate) fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    pub(crate) fn rto(&self) -> Duration {
        self.rtt.rto()
    }

    /// When message bytes last moved either way (new bytes stored, ours acknowledged, a
    /// message completed); keep-alives and repeats do not count.
    pub(crate) fn progress_at(&self) -> Option<Instant> {
        self.progress_at
    }

    /// The application knows who the peer is: take its messages into the state folder
    /// (offers that waited are answered now) and lift the answer budget.
    pub(crate) fn admit(&mut self, now: Instant) {
        if !self.admitted {
            self.admitted = true;
            self.pump_deferred(now);
        }
    }

    fn mtu(&self) -> usize {
        usize::from(
            self.peer
                .map_or(self.p.mtu, |p| p.mtu.min(self.p.mtu))
                .max(1),
        )
    }

    fn fail(&mut self, f: Fault) {
        if self.fault.is_none() {
            self.fault = Some(f.clone());
            self.events.push(Event::Fault(f));
        }
    }

    fn push_ctrl(&mut self, c: Ctrl) {
        if !self.ctrl.contains(&c) {
            self.ctrl.push_back(c);
        }
    }

    fn wants_link(&self) -> bool {
        self.p.announce || !self.out.is_empty() || self.close_requested
    }

    /// Queues a message (a message already queued is not queued twice).
    pub(crate) fn queue(&mut self, hash: MessageHash, data: Arc<Vec<u8>>) {
        if self.out.iter().any(|m| m.hash == hash) {
            return;
        }
        self.out.push(OutMsg {
            hash,
            data,
            slot: None,
            offered: false,
            answered: false,
            eager: false,
            more: false,
            to_send: RangeSet::new(),
            acked: RangeSet::new(),
            inflight: RangeSet::new(),
            done_wait: None,
            resumed: 0,
        });
    }

    /// The application will send nothing more.
    pub(crate) fn request_close(&mut self) {
        self.close_requested = true;
    }

    /// Whether closing is finished: our CLOSE was acknowledged (or the peer, having sent its
    /// own CLOSE, went silent) and the peer's CLOSE arrived.
    pub(crate) fn close_complete(&self, now: Instant) -> bool {
        let peer_gone = self.peer_gone_at().is_some_and(|t| now >= t);
        self.close_sent && self.peer_closed && (self.close_acked || peer_gone)
    }

    /// When a peer that has sent its CLOSE but not acknowledged ours counts as gone: it
    /// finished (only the last ACK was lost) and exited. Half the silence timeout of
    /// silence, so the session ends well before it would be declared lost. Not sooner: the
    /// silence may also be a peer that missed our CLOSE and waits for it (its own CLOSE was
    /// acknowledged, so it has nothing in flight); meanwhile our CLOSE is tried again every
    /// RTO (no backoff while closing) and that peer sends keep-alives, so on a live link the
    /// silence ends long before. (At three RTOs, a third of the sessions over a link losing
    /// 30 % of its frames ended with one end `LinkLost`; see `crate::sim`.)
    fn peer_gone_at(&self) -> Option<Instant> {
        if !(self.close_sent && self.peer_closed) || self.close_acked {
            return None;
        }
        let wait = self.p.max_rto * 3 / 2;
        self.last_heard.map(|t| t + wait)
    }

    fn reassociate(&mut self) {
        for slot in self.rx.values_mut() {
            if let RxState::Partial(p) = &mut slot.state {
                let _ = p.sync();
            }
        }
        self.established = false;
        self.sent_echo = false;
        self.inflight.clear();
        self.data_inflight = 0;
        self.since_poll = 0;
        self.backoff = 0;
        self.probe_due = false;
        self.ctrl.clear();
        self.next_slot = 0;
        for m in &mut self.out {
            m.slot = None;
            m.offered = false;
            m.answered = false;
            m.eager = false;
            m.more = false;
            m.to_send = RangeSet::new();
            m.acked = RangeSet::new();
            m.inflight = RangeSet::new();
            m.done_wait = None;
        }
        self.rx_largest = None;
        self.rx_bitmap = 0;
        self.ack_due = None;
        self.rx.clear();
        self.next_deliver = 0;
        self.mem_taken = 0;
        self.deferred.clear();
        self.close_sent = false;
        self.close_acked = false;
        self.peer_closed = false;
        self.events.push(Event::Reassociated);
    }

    /// Handles one valid frame from the link.
    pub(crate) fn on_frame(&mut self, f: Frame, now: Instant) {
        if self.fault.is_some() || f.epoch == self.epoch {
            return;
        }
        if let Body::Hello { version, echo, mtu } = f.body {
            self.last_heard = Some(now);
            self.stats.frames_received += 1;
            self.on_hello(f.epoch, version, echo, mtu, now);
            return;
        }
        if self.peer.map(|p| p.epoch) != Some(f.epoch) {
            return; // a stale frame of an earlier session, or a stranger
        }
        self.last_heard = Some(now);
        self.stats.frames_received += 1;
        if !self.established {
            self.establish();
        }
        if let Body::Ack { largest, bitmap } = f.body {
            self.on_ack(largest, bitmap, now);
            return;
        }
        let reference = self.rx_largest.unwrap_or(u64::from(f.seq) + 0x1_0000);
        let seq = unwrap_seq(reference, f.seq);
        let dup = self.rx_record(seq);
        if f.poll || dup {
            self.ack_due = Some(now);
        } else if self.ack_due.is_none() {
            let delay = self.p.frame_time * (self.p.window as u32 / 2 + 1);
            self.ack_due = Some(now + delay.max(Duration::from_millis(20)));
        }
        if dup {
            return;
        }
        match f.body {
            Body::Offer { slot, len, hash } => {
                self.on_offer(slot, u64::from(len), MessageHash(hash), now)
            }
            Body::Need { slot, more, ranges } => self.on_need(slot, more, &ranges, now),
            Body::Data { slot, offset, data } => self.on_data(slot, u64::from(offset), &data, now),
            Body::Done { slot } => self.on_done(slot, now),
            Body::Refuse { slot, reason } => {
                if let Some(i) = self.out.iter().position(|m| m.slot == Some(slot)) {
                    let m = self.out.remove(i);
                    self.events.push(Event::Refused {
                        hash: m.hash,
                        reason,
                    });
                }
            }
            Body::Close => {
                if !self.peer_closed {
                    self.peer_closed = true;
                    self.events.push(Event::PeerClosed);
                }
            }
            Body::Probe | Body::Hello { .. } | Body::Ack { .. } => {}
        }
    }

    fn establish(&mut self) {
        self.established = true;
        self.hello_reply = false;
        self.events.push(Event::Established);
    }

    fn on_hello(&mut self, epoch: u16, version: u8, echo: u16, mtu: u16, _now: Instant) {
        if version != VERSION {
            self.fail(Fault::Version(version));
            return;
        }
        match self.peer {
            Some(p) if p.epoch == epoch => {}
            Some(_) => {
                if self.dirty && self.p.fault_on_restart {
                    self.fail(Fault::PeerRestarted);
                    return;
                }
                self.reassociate();
            }
            None => {}
        }
        self.peer = Some(Peer {
            epoch,
            mtu: mtu.max(1),
        });
        let was_established = self.established;
        if echo == self.epoch && !self.established {
            self.establish();
        }
        if echo != self.epoch || !self.sent_echo {
            self.hello_reply = true;
        } else if was_established {
            // The peer knows us but still sends HELLO: it missed the HELLO that echoed it,
            // and waits. Any numbered frame of ours opens the link for it; a PROBE is the
            // smallest (a HELLO could make two established ends answer each other for ever).
            self.probe_due = true;
        }
    }

    /// Records a received sequence number; true if it was seen before.
    fn rx_record(&mut self, s: u64) -> bool {
        match self.rx_largest {
            None => {
                self.rx_largest = Some(s);
                self.rx_bitmap = 0;
                false
            }
            Some(l) if s > l => {
                let sh = s - l;
                self.rx_bitmap = if sh >= 64 { 0 } else { self.rx_bitmap << sh };
                if sh <= 64 {
                    self.rx_bitmap |= 1 << (sh - 1);
                }
                self.rx_largest = Some(s);
                false
            }
            Some(l) if s == l => true,
            Some(l) => {
                let d = l - s;
                if d > 64 {
                    return true;
                }
                let bit = 1u64 << (d - 1);
                let seen = self.rx_bitmap & bit != 0;
                self.rx_bitmap |= bit;
                seen
            }
        }
    }

    fn on_ack(&mut self, largest: u16, bitmap: u64, now: Instant) {
        if self.next_seq == 0 {
            return;
        }
        let largest = unwrap_seq(self.next_seq - 1, largest);
        if largest >= self.next_seq {
            return;
        }
        let keys: Vec<u64> = self.inflight.range(..=largest).map(|(k, _)| *k).collect();
        let mut progress = false;
        for k in keys {
            let d = largest - k;
            let acked = d == 0 || (d <= 64 && bitmap >> (d - 1) & 1 == 1);
            let Some(f) = self.inflight.remove(&k) else {
                continue;
            };
            if matches!(f.sent, Sent::Data { .. }) {
                self.data_inflight -= 1;
            }
            if acked {
                progress = true;
                if d == 0 && f.poll {
                    self.rtt.sample(now.saturating_duration_since(f.at));
                    self.stats.rtt = self.rtt.srtt;
                }
                self.on_acked(f.sent, now);
            } else {
                self.stats.retransmissions += 1;
                self.on_lost(f.sent);
            }
        }
        if progress {
            self.backoff = 0;
            self.last_progress = now;
        }
    }

    fn msg_mut(&mut self, hash: &MessageHash) -> Option<&mut OutMsg> {
        self.out.iter_mut().find(|m| m.hash == *hash)
    }

    fn on_acked(&mut self, sent: Sent, now: Instant) {
        match sent {
            Sent::Data { hash, start, end } => {
                let rto = self.rto();
                let Some(m) = self.msg_mut(&hash) else { return };
                if !m.acked.contains(start, end) {
                    self.progress_at = Some(now);
                }
                let Some(m) = self.msg_mut(&hash) else { return };
                m.inflight.remove(start, end);
                m.acked.insert(start, end);
                let (total, done, resumed) = (m.len(), m.done_bytes(), m.resumed);
                let finished = m.to_send.is_empty() && m.inflight.is_empty();
                let more = m.more;
                if finished && !more {
                    m.done_wait = Some(now + rto * 2);
                }
                if finished && more {
                    self.push_ctrl(Ctrl::Offer(hash));
                }
                self.events.push(Event::Progress {
                    flow: Flow::Sending,
                    hash,
                    total,
                    done,
                    resumed,
                });
            }
            Sent::Ctrl(Ctrl::Close) => self.close_acked = true,
            Sent::Ctrl(_) | Sent::Probe => {}
        }
    }

    fn on_lost(&mut self, sent: Sent) {
        match sent {
            Sent::Data { hash, start, end } => {
                if let Some(m) = self.msg_mut(&hash) {
                    m.inflight.remove(start, end);
                    let mut r = RangeSet::new();
                    r.insert(start, end);
                    r.subtract(&m.acked);
                    for (a, b) in r.iter() {
                        m.to_send.insert(a, b);
                    }
                }
            }
            Sent::Ctrl(Ctrl::Offer(hash)) => {
                if self.out.iter().any(|m| m.hash == hash) {
                    self.push_ctrl(Ctrl::Offer(hash));
                }
            }
            Sent::Ctrl(c @ (Ctrl::Need(_) | Ctrl::Done(_))) => {
                let slot = match c {
                    Ctrl::Need(s) | Ctrl::Done(s) => s,
                    _ => unreachable!("matched above"),
                };
                if let Some(rs) = self.rx.get(&slot) {
                    let c = rs.state.ctrl(slot);
                    self.push_ctrl(c);
                }
            }
            Sent::Ctrl(c @ Ctrl::Refuse(..)) => self.push_ctrl(c),
            Sent::Ctrl(Ctrl::Close) => {
                if !self.close_acked {
                    self.push_ctrl(Ctrl::Close);
                }
            }
            Sent::Probe => {}
        }
    }

    fn on_offer(&mut self, slot: u16, len: u64, hash: MessageHash, now: Instant) {
        if len > MAX_MESSAGE {
            self.push_ctrl(Ctrl::Refuse(slot, REFUSE_TOO_LARGE));
            return;
        }
        if let Some(rs) = self.rx.get(&slot) {
            if rs.hash == hash && rs.len == len {
                let c = rs.state.ctrl(slot);
                self.push_ctrl(c);
                return;
            }
        }
        if self.deferred.iter().any(|d| d.0 == slot) {
            return; // the same offer again: it still waits
        }
        self.take_offer(slot, len, hash, now);
    }

    /// Starts receiving an offered message, or lets it wait (for admission, or for room in
    /// this session), or refuses it (too many waiting, or the state folder is full).
    fn take_offer(&mut self, slot: u16, len: u64, hash: MessageHash, now: Instant) {
        let state = if !self.admitted {
            if len > HANDSHAKE_MAX || self.mem_taken >= PREAUTH_MESSAGES {
                return self.defer(slot, len, hash);
            }
            self.mem_taken += 1;
            RxState::Memory {
                buf: vec![0; len as usize],
                held: RangeSet::new(),
            }
        } else {
            let partial = |r: &&RxSlot| matches!(&r.state, RxState::Partial(_));
            let open = self.rx.values().filter(partial).count();
            let open_bytes: u64 = self.rx.values().filter(partial).map(|r| r.len).sum();
            if open >= MAX_RX_PARTIALS || open_bytes + len > RX_SESSION_BYTES {
                return self.defer(slot, len, hash);
            }
            match self.store.lookup(&hash, len) {
                Ok(Lookup::Complete) => RxState::Complete(None),
                Ok(Lookup::Partial(p)) if p.on_disk() => RxState::Partial(p),
                Ok(Lookup::Partial(p)) => {
                    // A new message: make room in the folder for its whole length now, with
                    // this session's other new ones (their files appear with their bytes).
                    let unwritten: u64 = self
                        .rx
                        .values()
                        .filter_map(|r| match &r.state {
                            RxState::Partial(p) if !p.on_disk() => Some(r.len),
                            _ => None,
                        })
                        .sum();
                    let keep = self.rx.values().map(|r| r.hash).collect();
                    match self.store.make_room(len + unwritten, &keep) {
                        Ok(true) => RxState::Partial(p),
                        Ok(false) => {
                            self.push_ctrl(Ctrl::Refuse(slot, REFUSE_FULL));
                            return;
                        }
                        Err(e) => {
                            let f = Fault::state(self.store.dir(), &e);
                            self.fail(f);
                            return;
                        }
                    }
                }
                Err(e) => {
                    let f = Fault::state(self.store.dir(), &e);
                    self.fail(f);
                    return;
                }
            }
        };
        let resumed = match &state {
            RxState::Complete(_) => len,
            s => s.held().map_or(0, RangeSet::len),
        };
        self.stats.resumed_bytes += resumed;
        self.rx.insert(
            slot,
            RxSlot {
                hash,
                len,
                state,
                resumed,
                delivered: false,
            },
        );
        self.events.push(Event::Progress {
            flow: Flow::Receiving,
            hash,
            total: len,
            done: resumed,
            resumed,
        });
        self.check_complete(slot, now);
    }

    fn defer(&mut self, slot: u16, len: u64, hash: MessageHash) {
        if self.deferred.len() >= MAX_DEFERRED {
            self.push_ctrl(Ctrl::Refuse(slot, REFUSE_BUSY));
        } else {
            self.deferred.push_back((slot, len, hash));
        }
    }

    /// Takes the offers that waited, as far as there is room now.
    fn pump_deferred(&mut self, now: Instant) {
        for (slot, len, hash) in std::mem::take(&mut self.deferred) {
            if self.fault.is_some() {
                return;
            }
            self.take_offer(slot, len, hash, now);
        }
    }

    /// After a write (or an offer): finish a complete message, or ask for what is missing.
    fn check_complete(&mut self, slot: u16, now: Instant) {
        let Some(rs) = self.rx.get_mut(&slot) else {
            return;
        };
        let ctrl = match &mut rs.state {
            RxState::Complete(_) => Ctrl::Done(slot),
            RxState::Memory { buf, held } if held.len() == rs.len => {
                if MessageHash::of(buf) == rs.hash {
                    rs.state = RxState::Complete(Some(std::mem::take(buf)));
                    Ctrl::Done(slot)
                } else {
                    *held = RangeSet::new();
                    Ctrl::Need(slot)
                }
            }
            RxState::Partial(p) if p.is_complete() => match p.finish(&self.store) {
                Ok(true) => {
                    rs.state = RxState::Complete(None);
                    Ctrl::Done(slot)
                }
                Ok(false) => Ctrl::Need(slot),
                Err(e) => {
                    let f = Fault::state(p.path(), &e);
                    self.fail(f);
                    return;
                }
            },
            RxState::Memory { .. } | RxState::Partial(_) => Ctrl::Need(slot),
        };
        let done = ctrl == Ctrl::Done(slot);
        if done {
            // A NEED still queued for it would only say DONE again.
            self.ctrl.retain(|c| *c != Ctrl::Need(slot));
        }
        self.push_ctrl(ctrl);
        if done {
            self.progress_at = Some(now);
            self.deliver_in_order();
            // A slot is free: offers that waited for room may start.
            if self.admitted && !self.deferred.is_empty() {
                self.pump_deferred(now);
            }
        }
    }

    fn deliver_in_order(&mut self) {
        while let Some(rs) = self.rx.get_mut(&self.next_deliver) {
            let RxState::Complete(data) = &mut rs.state else {
                break;
            };
            if !rs.delivered {
                rs.delivered = true;
                self.dirty = true;
                self.events.push(Event::Delivered {
                    hash: rs.hash,
                    resumed: rs.resumed,
                    data: data.take(),
                });
            }
            self.next_deliver = self.next_deliver.wrapping_add(1);
        }
    }

    fn on_data(&mut self, slot: u16, offset: u64, data: &[u8], now: Instant) {
        let Some(rs) = self.rx.get_mut(&slot) else {
            return;
        };
        let end = offset + data.len() as u64;
        if end > rs.len {
            return;
        }
        let (new, done) = match &mut rs.state {
            RxState::Complete(_) => {
                self.stats.duplicate_bytes_received += data.len() as u64;
                return;
            }
            RxState::Memory { buf, held } => {
                let new = data.len() as u64 - held.overlap(offset, end);
                buf[offset as usize..end as usize].copy_from_slice(data);
                held.insert(offset, end);
                (new, held.len())
            }
            RxState::Partial(p) => {
                let new = data.len() as u64 - p.held().overlap(offset, end);
                if let Err(e) = p.write(offset, data) {
                    let f = Fault::state(p.path(), &e);
                    self.fail(f);
                    return;
                }
                (new, p.held().len())
            }
        };
        self.stats.data_bytes_received += new;
        self.stats.duplicate_bytes_received += data.len() as u64 - new;
        if new > 0 {
            self.progress_at = Some(now);
        }
        let (hash, total, resumed) = (rs.hash, rs.len, rs.resumed);
        self.events.push(Event::Progress {
            flow: Flow::Receiving,
            hash,
            total,
            done,
            resumed,
        });
        if done == total {
            self.check_complete(slot, now);
        }
    }

    fn on_need(&mut self, slot: u16, more: bool, ranges: &[(u32, u32)], _now: Instant) {
        let Some(m) = self.out.iter_mut().find(|m| m.slot == Some(slot)) else {
            return;
        };
        let mut want = RangeSet::new();
        for &(o, l) in ranges {
            let (a, b) = (u64::from(o), (u64::from(o) + u64::from(l)).min(m.len()));
            want.insert(a, b);
        }
        if !m.answered && !more {
            m.resumed = m.len() - want.len();
        }
        m.answered = true;
        m.more = more;
        m.done_wait = None;
        let mut fresh = want.clone();
        fresh.subtract(&m.inflight);
        fresh.subtract(&m.acked);
        if fresh.is_empty() && m.inflight.is_empty() && !want.is_empty() {
            // The receiver lost what it had acknowledged (its hash check failed): start over.
            m.acked = RangeSet::new();
            fresh = want;
        }
        m.to_send = fresh;
        let hash = m.hash;
        let (total, done, resumed) = (m.len(), m.done_bytes(), m.resumed);
        if m.to_send.is_empty() && m.inflight.is_empty() && more {
            self.push_ctrl(Ctrl::Offer(hash));
        }
        self.events.push(Event::Progress {
            flow: Flow::Sending,
            hash,
            total,
            done,
            resumed,
        });
    }

    fn on_done(&mut self, slot: u16, now: Instant) {
        if let Some(i) = self.out.iter().position(|m| m.slot == Some(slot)) {
            let m = self.out.remove(i);
            self.progress_at = Some(now);
            self.ever_sent.remove(&m.hash);
            self.sends.retain(|k, _| k.0 != m.hash);
            self.dirty = true;
            let total = m.len();
            self.events.push(Event::Progress {
                flow: Flow::Sending,
                hash: m.hash,
                total,
                done: total,
                resumed: m.resumed,
            });
            self.events.push(Event::Sent { hash: m.hash });
            // Frames still in flight for it are now moot.
        }
    }

    /// When to PROBE: an RTO after the last POLL, while a POLL is unanswered. Frames sent
    /// mid-burst without POLL arm no timer: the burst always ends with a POLL.
    fn loss_deadline(&self) -> Option<Instant> {
        if !self.inflight.values().any(|f| f.poll) {
            return None;
        }
        // While closing, only a few small frames are left, and the peer may wait in silence
        // for one of them: no backoff, so a lossy link has many tries before `peer_gone_at`.
        let backoff = if self.close_sent { 0 } else { self.backoff };
        let rto = (self.rto() * 2u32.saturating_pow(backoff)).min(self.rtt.max);
        Some(self.last_poll_at.max(self.last_progress) + rto)
    }

    fn keepalive_deadline(&self) -> Option<Instant> {
        let k = self.p.keepalive?;
        // Also after our CLOSE was acknowledged, while the peer's CLOSE has not arrived: a
        // peer whose CLOSE was lost must hear that this end is still there (see
        // `peer_gone_at`).
        if !self.established
            || !self.inflight.is_empty()
            || self.probe_due
            || (self.close_sent && !self.close_acked)
        {
            return None;
        }
        Some(
            self.last_poll_at
                .max(self.last_heard.unwrap_or(self.last_poll_at))
                + k,
        )
    }

    /// Runs timers; call after every input and at `next_deadline`.
    pub(crate) fn on_tick(&mut self, now: Instant) {
        if self.fault.is_some() {
            return;
        }
        if self.loss_deadline().is_some_and(|d| d <= now) {
            self.probe_due = true;
            // Losses on a point-to-point link are noise, not congestion: back off a little
            // (up to 4 × RTO, for a shared radio channel) rather than exponentially.
            self.backoff = (self.backoff + 1).min(MAX_BACKOFF);
            self.last_poll_at = now;
        }
        if self.keepalive_deadline().is_some_and(|d| d <= now) {
            self.probe_due = true;
            self.last_poll_at = now;
        }
        if !self.established {
            return;
        }
        let mut reoffer = Vec::new();
        for m in &mut self.out {
            if m.done_wait.is_some_and(|d| d <= now) {
                m.done_wait = None;
                m.acked = RangeSet::new();
                reoffer.push(m.hash);
            }
        }
        for h in reoffer {
            self.push_ctrl(Ctrl::Offer(h));
        }
        let pending: Vec<MessageHash> = self
            .out
            .iter_mut()
            .take(OFFER_AHEAD)
            .filter(|m| !m.offered)
            .map(|m| {
                m.offered = true;
                m.hash
            })
            .collect();
        for h in pending {
            self.push_ctrl(Ctrl::Offer(h));
        }
        if self.close_requested && self.out.is_empty() && !self.close_sent {
            self.close_sent = true;
            self.push_ctrl(Ctrl::Close);
        }
    }

    /// When `on_tick` next has work.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let mut d = [
            self.ack_due,
            (!self.established && self.wants_link()).then_some(self.hello_at),
            self.loss_deadline(),
            self.keepalive_deadline(),
            self.peer_gone_at(),
        ]
        .into_iter()
        .flatten()
        .min();
        for m in &self.out {
            if let Some(w) = m.done_wait {
                d = Some(d.map_or(w, |x| x.min(w)));
            }
        }
        d
    }

    fn data_ready(&self) -> bool {
        self.data_inflight < self.p.window && self.out.iter().any(OutMsg::sendable)
    }

    /// Whether a frame is waiting to be sent now.
    pub(crate) fn wants_transmit(&self, now: Instant) -> bool {
        if self.fault.is_some() {
            return false;
        }
        self.ack_due.is_some_and(|t| t <= now)
            || self.hello_reply
            || (!self.established && self.wants_link() && self.hello_at <= now)
            || (self.established && (self.probe_due || !self.ctrl.is_empty() || self.data_ready()))
    }

    fn numbered(&mut self, body: Body, sent: Sent, poll: bool, now: Instant) -> Frame {
        let seq = self.next_seq;
        self.next_seq += 1;
        if matches!(sent, Sent::Data { .. }) {
            self.data_inflight += 1;
        }
        if poll {
            self.since_poll = 0;
        } else {
            self.since_poll += 1;
        }
        if self.inflight.is_empty() {
            self.last_progress = now;
        }
        let frame = Frame {
            epoch: self.epoch,
            seq: seq as u16,
            poll,
            body,
        };
        // Round trips count from the end of the frame's own transmission.
        let at = now + self.p.byte_time * (frame.encode().len() as u32 + 2);
        if poll {
            self.last_poll_at = at;
        }
        self.inflight.insert(seq, Inflight { sent, at, poll });
        frame
    }

    /// The next frame to write, if any. Call when the link may take a frame.
    ///
    /// Before admission, frames that answer the peer (all but this end's own OFFER, DATA
    /// and unprompted HELLO) count against [`PREAUTH_ANSWERS`]; past it the session fails
    /// with `Budget` and the frame is not sent.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Frame> {
        let reply = self.hello_reply;
        let frame = self.next_frame(now)?;
        if self.admitted {
            return Some(frame);
        }
        let answer = match &frame.body {
            Body::Hello { .. } => reply,
            Body::Offer { .. } | Body::Data { .. } => false,
            _ => true,
        };
        if answer {
            self.answers += 1;
            if self.answers > PREAUTH_ANSWERS {
                self.fail(Fault::Budget(PREAUTH_ANSWERS));
                return None;
            }
        }
        Some(frame)
    }

    fn next_frame(&mut self, now: Instant) -> Option<Frame> {
        if self.fault.is_some() {
            return None;
        }
        if self.ack_due.is_some_and(|t| t <= now) {
            self.ack_due = None;
            // What we acknowledge must survive a crash.
            for rs in self.rx.values_mut() {
                if let RxState::Partial(p) = &mut rs.state {
                    if let Err(e) = p.sync() {
                        let f = Fault::state(p.path(), &e);
                        self.fail(f);
                        return None;
                    }
                }
            }
            if let Some(l) = self.rx_largest {
                let body = Body::Ack {
                    largest: l as u16,
                    bitmap: self.rx_bitmap,
                };
                return Some(Frame {
                    epoch: self.epoch,
                    seq: 0,
                    poll: false,
                    body,
                });
            }
        }
        if self.hello_reply || (!self.established && self.wants_link() && self.hello_at <= now) {
            self.hello_reply = false;
            self.hello_at = now + self.rtt.initial.min(Duration::from_secs(10));
            let echo = self.peer.map_or(0, |p| p.epoch);
            self.sent_echo = self.peer.is_some();
            let body = Body::Hello {
                version: VERSION,
                echo,
                mtu: self.p.mtu,
            };
            return Some(Frame {
                epoch: self.epoch,
                seq: 0,
                poll: false,
                body,
            });
        }
        if !self.established {
            return None;
        }
        if self.probe_due {
            self.probe_due = false;
            self.stats.probes += 1;
            // Closing, with every message confirmed: the CLOSE itself asks for the ACK. A
            // peer that missed it waits for it in silence; this try gives it the CLOSE,
            // instead of a probe, its ACK and then a resend all having to cross.
            if self.close_sent && !self.close_acked && self.out.is_empty() {
                return Some(self.numbered(Body::Close, Sent::Ctrl(Ctrl::Close), true, now));
            }
            return Some(self.numbered(Body::Probe, Sent::Probe, true, now));
        }
        while let Some(c) = self.ctrl.pop_front() {
            if let Some(body) = self.materialize(&c) {
                return Some(self.numbered(body, Sent::Ctrl(c), true, now));
            }
        }
        if !self.data_ready() {
            return None;
        }
        let mtu = self.mtu() as u64;
        let i = self.out.iter().position(OutMsg::sendable)?;
        let m = &mut self.out[i];
        let (a, b) = m.to_send.first()?;
        let end = b.min(a + mtu);
        m.to_send.remove(a, end);
        m.inflight.insert(a, end);
        let slot = m.slot.unwrap_or(0);
        let hash = m.hash;
        let data = m.data[a as usize..end as usize].to_vec();
        let ever = self.ever_sent.entry(hash).or_default();
        let again = ever.overlap(a, end);
        ever.insert(a, end);
        self.stats.data_bytes_sent += end - a;
        self.stats.data_bytes_resent += again;
        let tries = self.sends.entry((hash, a)).or_insert(0);
        *tries += 1;
        if *tries > MAX_SENDS {
            self.fail(Fault::TooManyTries(end - a));
            return None;
        }
        let last =
            self.data_inflight + 1 >= self.p.window || !self.out.iter().any(OutMsg::sendable);
        let poll = last || self.since_poll + 1 >= (self.p.window / 2).max(1);
        let body = Body::Data {
            slot,
            offset: a as u32,
            data,
        };
        Some(self.numbered(
            body,
            Sent::Data {
                hash,
                start: a,
                end,
            },
            poll,
            now,
        ))
    }

    fn materialize(&mut self, c: &Ctrl) -> Option<Body> {
        match c {
            Ctrl::Offer(hash) => {
                let next = &mut self.next_slot;
                let m = self.out.iter_mut().find(|m| m.hash == *hash)?;
                let slot = *m.slot.get_or_insert_with(|| {
                    let s = *next;
                    *next = next.wrapping_add(1);
                    s
                });
                m.offered = true;
                let fresh = m.acked.is_empty() && m.inflight.is_empty() && m.to_send.is_empty();
                if !m.answered && fresh && m.len() <= EAGER_MAX {
                    m.eager = true;
                    m.to_send = RangeSet::full(m.len());
                }
                Some(Body::Offer {
                    slot,
                    len: m.len() as u32,
                    hash: m.hash.0,
                })
            }
            Ctrl::Need(slot) => {
                let per = ((self.mtu() + DATA_HEADER).saturating_sub(4) / 8).clamp(1, 255);
                let rs = self.rx.get(slot)?;
                match rs.state.held() {
                    None => Some(Body::Done { slot: *slot }),
                    Some(held) => {
                        let missing = held.missing(rs.len);
                        let ranges: Vec<(u32, u32)> = missing
                            .iter()
                            .take(per)
                            .map(|(a, b)| (a as u32, (b - a) as u32))
                            .collect();
                        let more = missing.iter().count() > per;
                        Some(Body::Need {
                            slot: *slot,
                            more,
                            ranges,
                        })
                    }
                }
            }
            Ctrl::Done(slot) => Some(Body::Done { slot: *slot }),
            Ctrl::Refuse(slot, reason) => Some(Body::Refuse {
                slot: *slot,
                reason: *reason,
            }),
            // A CLOSE already acknowledged (a try that crossed) is not sent again.
            Ctrl::Close => (!self.close_acked).then_some(Body::Close),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_unwrap_around_the_reference() {
        assert_eq!(unwrap_seq(0x1_0005, 3), 0x1_0003);
        assert_eq!(unwrap_seq(0x1_FFFE, 2), 0x2_0002);
        assert_eq!(unwrap_seq(0x2_0001, 0xFFFF), 0x1_FFFF);
        assert_eq!(unwrap_seq(5, 7), 7);
    }

    struct Pair {
        a: Engine,
        b: Engine,
        now: Instant,
        _dirs: (tempfile::TempDir, tempfile::TempDir),
    }

    fn params() -> Params {
        Params {
            mtu: 50,
            window: 4,
            frame_time: Duration::from_millis(10),
            byte_time: Duration::from_micros(100),
            announce: true,
            fault_on_restart: true,
            keepalive: None,
            max_rto: Duration::from_secs(60),
            admitted: true,
        }
    }

    impl Pair {
        fn new() -> Pair {
            let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let now = Instant::now();
            let a = Engine::new(params(), 0x0A0A, RxStore::open(da.path()).unwrap(), now);
            let b = Engine::new(params(), 0x0B0B, RxStore::open(db.path()).unwrap(), now);
            Pair {
                a,
                b,
                now,
                _dirs: (da, db),
            }
        }

        /// Runs both ends in lock-step, dropping frames for which `drop(n)` is true
        /// (n counts frames). Returns the events of each end.
        fn run(
            &mut self,
            steps: usize,
            mut drop: impl FnMut(usize, &Frame) -> bool,
        ) -> (Vec<Event>, Vec<Event>) {
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            let mut n = 0;
            for _ in 0..steps {
                self.now += Duration::from_millis(10);
                let now = self.now;
                self.a.on_tick(now);
                self.b.on_tick(now);
                while let Some(f) = self.a.poll_transmit(now) {
                    n += 1;
                    if !drop(n, &f) {
                        self.b.on_frame(Frame::decode(&f.encode()).unwrap(), now);
                    }
                }
                while let Some(f) = self.b.poll_transmit(now) {
                    n += 1;
                    if !drop(n, &f) {
                        self.a.on_frame(Frame::decode(&f.encode()).unwrap(), now);
                    }
                }
                ea.extend(self.a.take_events());
                eb.extend(self.b.take_events());
            }
            (ea, eb)
        }
    }

    fn delivered(ev: &[Event]) -> Vec<MessageHash> {
        ev.iter()
            .filter_map(|e| {
                if let Event::Delivered { hash, .. } = e {
                    Some(*hash)
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn messages_cross_both_ways_and_close() {
        let mut p = Pair::new();
        let ma: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mb: Vec<u8> = (0..777u32).map(|i| (i * 3) as u8).collect();
        let (ha, hb) = (MessageHash::of(&ma), MessageHash::of(&mb));
        p.a.queue(ha, Arc::new(ma));
        p.b.queue(hb, Arc::new(mb));
        p.a.request_close();
        p.b.request_close();
        let (ea, eb) = p.run(2000, |_, _| false);
        assert_eq!(delivered(&eb), vec![ha]);
        assert_eq!(delivered(&ea), vec![hb]);
        assert!(p.a.close_complete(p.now) && p.b.close_complete(p.now));
        assert_eq!(p.a.stats.data_bytes_resent, 0);
    }

    /// The other end finished and exited before its ACK of our CLOSE arrived: this end
    /// still finishes, well within its silence timeout (3 × the largest RTO), even with
    /// its RTO at the largest value.
    #[test]
    fn a_lost_last_ack_ends_the_session_within_half_the_silence_timeout() {
        let max_rto = Duration::from_secs(20);
        let mut p = Pair::new();
        p.a.p.max_rto = max_rto;
        p.a.rtt.max = max_rto;
        p.a.queue(MessageHash::of(b"hello"), Arc::new(b"hello".to_vec()));
        p.b.request_close();
        // Both exchange data; b closes first, then a: b is complete the moment a's CLOSE
        // arrives and exits without acknowledging it.
        let mut b_gone = false;
        let mut a_requested = false;
        for _ in 0..20_000 {
            p.now += Duration::from_millis(10);
            let now = p.now;
            if !a_requested && p.b.close_sent {
                p.a.request_close();
                a_requested = true;
            }
            p.a.on_tick(now);
            if !b_gone {
                p.b.on_tick(now);
            }
            while let Some(f) = p.a.poll_transmit(now) {
                if !b_gone {
                    p.b.on_frame(Frame::decode(&f.encode()).unwrap(), now);
                }
            }
            if !b_gone && p.b.close_complete(now) {
                b_gone = true;
                // Its RTO has grown on a bad link.
                p.a.rtt.srtt = Some(Duration::from_secs(30));
            }
            if !b_gone {
                while let Some(f) = p.b.poll_transmit(now) {
                    p.a.on_frame(Frame::decode(&f.encode()).unwrap(), now);
                }
            }
            if p.a.close_complete(now) {
                break;
            }
        }
        assert!(b_gone, "b finished");
        assert!(!p.a.close_acked, "a's CLOSE was never acknowledged");
        assert!(p.a.close_complete(p.now), "a finished too");
        let silent = p.now.duration_since(p.a.last_heard.unwrap());
        assert!(
            silent <= max_rto * 3 / 2 + Duration::from_millis(20),
            "a waited {silent:?} after the last frame"
        );
    }

    /// B missed the HELLO in which A echoed it, and A (established, with nothing to send)
    /// would never send another: B's repeated HELLOs are answered with a PROBE, which opens
    /// the link for B; once both are up, neither sends HELLO again (no HELLO ping-pong).
    #[test]
    fn an_end_that_missed_its_echo_is_answered_and_then_no_hello_is_sent() {
        let mut p = Pair::new();
        let mut dropped = false;
        let mut up = None;
        for step in 0..3000 {
            let (a_up, b_up) = (p.a.established, p.b.established);
            let mut hellos_after = 0;
            p.run(1, |_, f| {
                if let Body::Hello { echo, .. } = f.body {
                    if a_up && b_up {
                        hellos_after += 1;
                    }
                    if f.epoch == 0x0A0A && echo == 0x0B0B && !dropped {
                        dropped = true;
                        return true;
                    }
                }
                false
            });
            assert_eq!(hellos_after, 0, "a HELLO after both ends were up");
            if up.is_none() && p.a.established && p.b.established {
                up = Some(step);
            }
        }
        assert!(dropped, "A echoed B");
        let up = up.expect("both ends are up");
        // B's next HELLO comes one initial RTO after its last (about 1 s here).
        assert!(up < 300, "up after {up} steps of 10 ms");
    }

    #[test]
    fn sequence_numbers_wrap_within_a_session() {
        let mut p = Pair::new();
        p.a.next_seq = 0xFFF0;
        let m: Vec<u8> = (0..3000u32).map(|i| (i % 13) as u8).collect();
        let h = MessageHash::of(&m);
        p.a.queue(h, Arc::new(m));
        let (_, eb) = p.run(2000, |_, _| false);
        assert_eq!(delivered(&eb), vec![h]);
        assert!(p.a.next_seq > 0x1_0000);
        assert_eq!(p.a.stats.data_bytes_resent, 0);
    }

    #[test]
    fn lost_frames_are_sent_again_and_the_message_arrives() {
        let mut p = Pair::new();
        let m: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let h = MessageHash::of(&m);
        p.a.queue(h, Arc::new(m));
        // Drop 30 % of the frames in both directions (a fixed pseudo-random pattern).
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let (_, eb) = p.run(5000, |_, _| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 10 < 3
        });
        assert_eq!(delivered(&eb), vec![h]);
        assert!(p.a.stats.retransmissions > 0);
    }

    #[test]
    fn a_restarted_receiver_resumes_from_its_state_folder() {
        let mut p = Pair::new();
        let m: Vec<u8> = (0..2000u32).map(|i| (i * 7) as u8).collect();
        let h = MessageHash::of(&m);
        p.a.queue(h, Arc::new(m));
        // Run until about half has arrived, then restart B on the same folder.
        let mut steps = 0;
        while p.b.stats.data_bytes_received < 1000 {
            p.run(1, |_, _| false);
            steps += 1;
            assert!(steps < 1000);
        }
        let held = p.b.stats.data_bytes_received;
        let store = RxStore::open(p._dirs.1.path()).unwrap();
        p.b = Engine::new(params(), 0x0C0C, store, p.now);
        let (ea, eb) = p.run(3000, |_, _| false);
        assert_eq!(delivered(&eb), vec![h]);
        assert!(ea.iter().any(|e| matches!(e, Event::Reassociated)));
        assert_eq!(p.b.stats.resumed_bytes, held);
        // Only what was in flight at the restart is sent again.
        assert!(
            p.a.stats.data_bytes_resent <= 4 * 50,
            "{}",
            p.a.stats.data_bytes_resent
        );
    }

    #[test]
    fn a_piece_that_never_gets_through_ends_the_session() {
        let mut p = Pair::new();
        let m = vec![0xC0; 120];
        p.a.queue(MessageHash::of(&m), Arc::new(m));
        // Everything crosses except DATA at offset 50.
        let (ea, _) = p.run(20_000, |_, f| {
            matches!(f.body, Body::Data { offset: 50, .. })
        });
        assert!(
            ea.iter()
                .any(|e| matches!(e, Event::Fault(Fault::TooManyTries(50)))),
            "{ea:?}"
        );
    }

    #[test]
    fn a_restart_after_delivery_is_a_fault() {
        let mut p = Pair::new();
        let m = b"receipt".to_vec();
        let h = MessageHash::of(&m);
        p.b.queue(h, Arc::new(m));
        let (ea, _) = p.run(100, |_, _| false);
        assert_eq!(delivered(&ea), vec![h]);
        let store = RxStore::open(p._dirs.1.path()).unwrap();
        p.b = Engine::new(params(), 0x0C0C, store, p.now);
        let (ea, _) = p.run(100, |_, _| false);
        assert!(
            ea.iter()
                .any(|e| matches!(e, Event::Fault(Fault::PeerRestarted)))
        );
    }

    /// Files in a state folder's `rx/`, and their apparent sizes.
    fn rx_files(dir: &std::path::Path) -> (usize, u64) {
        std::fs::read_dir(dir.join("rx"))
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .fold((0, 0), |(n, b), l| (n + 1, b + l))
    }

    /// A stranger's frames, as its own engine would number them (epoch 0x5555).
    struct Stranger {
        seq: u16,
    }

    impl Stranger {
        const EPOCH: u16 = 0x5555;

        fn hello(echo: u16) -> Frame {
            Frame {
                epoch: Self::EPOCH,
                seq: 0,
                poll: false,
                body: Body::Hello {
                    version: VERSION,
                    echo,
                    mtu: 50,
                },
            }
        }

        fn next(&mut self, body: Body) -> Frame {
            self.seq = self.seq.wrapping_add(1);
            Frame {
                epoch: Self::EPOCH,
                seq: self.seq,
                poll: true,
                body,
            }
        }
    }

    /// A not-yet-admitted end `b` meets a stranger that completes the link opening, then
    /// sends `frames` (made by `make`), with `b` sending whatever it wants in between.
    /// Returns `b`'s answers (frames it sent after the opening) and its events.
    fn stranger_sends(
        b: &mut Engine,
        now: &mut Instant,
        frames: usize,
        mut make: impl FnMut(&mut Stranger, usize) -> Frame,
    ) -> (usize, Vec<Event>) {
        b.on_frame(Stranger::hello(0), *now);
        while b.poll_transmit(*now).is_some() {}
        b.on_frame(Stranger::hello(b.epoch), *now);
        let mut sent = 0;
        let mut st = Stranger { seq: 0 };
        for i in 0..frames {
            *now += Duration::from_millis(1);
            b.on_frame(make(&mut st, i), *now);
            b.on_tick(*now);
            while b.poll_transmit(*now).is_some() {
                sent += 1;
            }
        }
        (sent, b.take_events())
    }

    fn offer(i: usize, len: u32) -> Body {
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
        Body::Offer {
            slot: i as u16,
            len,
            hash,
        }
    }

    /// Issue 18, finding 7: 2 000 OFFER frames of 16 MiB each from a peer nobody admitted
    /// create no file, hold no file handle, keep a bounded number of offers in memory, and
    /// get a bounded number of answers before the session fails.
    #[test]
    fn offers_from_a_stranger_create_no_file_and_get_a_bounded_number_of_answers() {
        let dir = tempfile::tempdir().unwrap();
        let mut now = Instant::now();
        let p = Params {
            announce: false,
            admitted: false,
            ..params()
        };
        let mut b = Engine::new(p, 0x0B0B, RxStore::open(dir.path()).unwrap(), now);
        let (answers, events) =
            stranger_sends(&mut b, &mut now, 2000, |st, i| st.next(offer(i, 16 << 20)));
        assert_eq!(
            rx_files(dir.path()),
            (0, 0),
            "no file for a stranger's offers"
        );
        assert!(
            b.rx.len() <= PREAUTH_MESSAGES && b.deferred.len() <= MAX_DEFERRED,
            "{} offers in memory, {} waiting",
            b.rx.len(),
            b.deferred.len()
        );
        assert!(
            answers <= PREAUTH_ANSWERS as usize,
            "{answers} frames answered"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Fault(Fault::Budget(_)))),
            "{events:?}"
        );
    }

    /// Small messages of a peer not admitted yet are taken in memory and delivered with
    /// their bytes; a larger one waits unanswered, and goes to the state folder once the
    /// peer is admitted.
    #[test]
    fn a_large_offer_waits_for_admission_and_small_ones_stay_in_memory() {
        let mut p = Pair::new();
        p.b.admitted = false;
        p.b.p.admitted = false;
        let small = b"a hello".to_vec();
        let large: Vec<u8> = (0..(HANDSHAKE_MAX as u32 + 500))
            .map(|i| (i % 251) as u8)
            .collect();
        let (hs, hl) = (MessageHash::of(&small), MessageHash::of(&large));
        p.a.queue(hs, Arc::new(small.clone()));
        p.a.queue(hl, Arc::new(large.clone()));
        let (_, eb) = p.run(300, |_, _| false);
        let got: Vec<_> = eb
            .iter()
            .filter_map(|e| match e {
                Event::Delivered { hash, data, .. } => Some((*hash, data.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            got,
            vec![(hs, Some(small))],
            "only the small one, in memory"
        );
        assert_eq!(
            rx_files(p._dirs.1.path()).0,
            0,
            "nothing in the state folder"
        );
        assert_eq!(p.b.deferred.len(), 1, "the large one waits");
        p.b.admit(p.now);
        let (_, eb) = p.run(3000, |_, _| false);
        assert_eq!(delivered(&eb), vec![hl]);
        assert_eq!(p.b.store.read(&hl).unwrap(), large);
    }

    /// An admitted peer still gets at most MAX_RX_PARTIALS partial messages at once; the
    /// rest wait, then are refused; none has a file before its first bytes.
    #[test]
    fn an_admitted_peer_has_at_most_a_few_partial_messages_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut now = Instant::now();
        let p = Params {
            announce: false,
            ..params()
        };
        let mut b = Engine::new(p, 0x0B0B, RxStore::open(dir.path()).unwrap(), now);
        let (_, events) = stranger_sends(&mut b, &mut now, 200, |st, i| st.next(offer(i, 1 << 20)));
        let partial =
            b.rx.values()
                .filter(|r| matches!(r.state, RxState::Partial(_)))
                .count();
        assert_eq!(partial, MAX_RX_PARTIALS);
        assert_eq!(b.deferred.len(), MAX_DEFERRED);
        assert_eq!(
            rx_files(dir.path()),
            (0, 0),
            "no file before the first bytes"
        );
        assert!(
            !events.iter().any(|e| matches!(e, Event::Fault(_))),
            "{events:?}"
        );
    }

    /// The state folder's quota holds across sessions: a peer that announces more than
    /// RX_MAX_BYTES in messages and sends a byte of each (so each makes its sparse files)
    /// leaves at most the quota's apparent size, oldest first removed.
    #[test]
    fn partial_messages_stay_within_the_folders_quota_by_apparent_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut now = Instant::now();
        for session in 0..10u16 {
            let p = Params {
                announce: false,
                ..params()
            };
            let store = RxStore::open(dir.path()).unwrap();
            let mut b = Engine::new(p, 0x0B0B + session, store, now);
            let mut n = 0;
            stranger_sends(&mut b, &mut now, 8, |st, i| {
                let k = usize::from(session) * 4 + i / 2;
                if i % 2 == 0 {
                    st.next(offer(k, (16 << 20) - 1))
                } else {
                    n += 1;
                    st.next(Body::Data {
                        slot: k as u16,
                        offset: (16 << 20) - 2,
                        data: vec![7],
                    })
                }
            });
            assert_eq!(n, 4);
            let (_, apparent) = b.store.usage().unwrap();
            assert!(
                apparent <= crate::store::RX_MAX_BYTES,
                "session {session}: {apparent} bytes"
            );
        }
    }

    /// A small message crosses without the receiver's NEED (its bytes follow the OFFER):
    /// it is delivered in the step its OFFER arrives; many of them also arrive, in order, on
    /// a link losing 30 % of frames; a large one still waits for NEED.
    #[test]
    fn small_messages_follow_their_offer_without_waiting_for_need() {
        let mut p = Pair::new();
        p.run(10, |_, _| false); // the link is up
        let m = vec![7u8; 40];
        p.a.queue(MessageHash::of(&m), Arc::new(m.clone()));
        let mut needs = 0;
        let (_, eb) = p.run(1, |_, f| {
            needs += usize::from(matches!(f.body, Body::Need { .. }));
            false
        });
        assert_eq!(delivered(&eb), vec![MessageHash::of(&m)], "in one step");
        assert_eq!(needs, 0);

        let small: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 40 + usize::from(i)]).collect();
        let want: Vec<_> = small.iter().map(|m| MessageHash::of(m)).collect();
        let mut p = Pair::new();
        for m in &small {
            p.a.queue(MessageHash::of(m), Arc::new(m.clone()));
        }
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let (_, eb) = p.run(20_000, |_, _| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 10 < 3
        });
        assert_eq!(delivered(&eb), want, "in order, at 30 % loss");

        let mut p = Pair::new();
        let large = vec![9u8; EAGER_MAX as usize + 1];
        p.a.queue(MessageHash::of(&large), Arc::new(large.clone()));
        let mut needs = 0;
        let (_, eb) = p.run(2000, |_, f| {
            if matches!(f.body, Body::Need { .. }) {
                needs += 1;
            }
            false
        });
        assert_eq!(delivered(&eb), vec![MessageHash::of(&large)]);
        assert!(needs > 0);
    }
}
