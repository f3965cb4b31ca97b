//! [`SmsTransport`]: one node's SMS endpoint — sending with budgets and a queue, answering
//! members' repair requests within limits, and the [`Transport`] mailbox over complete
//! messages. Reassembly lives in `recv.rs`, what is set aside in `quarantine.rs`.

use crate::config::SmsConfig;
use crate::error::SmsError;
use crate::frame::{self, Frame, Gone, Layout, Missing};
use crate::gateway::{Gateway, SmsBody};
use crate::phone::{Peer, Phone};
use crate::store::{Store, iso, unique_stamp, unix};
use crate::text;
use ferry_transport::{
    Capabilities, Direction, Disposition, MessageId, MessageInfo, Transport, TransportError,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where the transport reads the time: the wall clock unless a test or a simulation sets
/// another with [`SmsTransport::set_clock`].
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// One SMS as a gateway hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingSms {
    /// The sender's number as the gateway wrote it.
    pub from: String,
    /// The number it was sent to, when the gateway says.
    pub to: Option<String>,
    /// Its content.
    pub body: SmsBody,
}

/// What became of one incoming SMS ([`SmsTransport::accept`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Accepted {
    /// A part was stored; its message is not complete yet.
    Part {
        /// The sender.
        from: Phone,
        /// The message's tag.
        tag: u16,
        /// This part.
        index: u16,
        /// Parts of the message.
        count: u16,
        /// Parts held now.
        have: u16,
    },
    /// A part already held (or of a message already complete): ignored.
    Duplicate {
        /// The sender.
        from: Phone,
        /// The message's tag.
        tag: u16,
        /// The part.
        index: u16,
    },
    /// The last missing part arrived (or another version of a part did): an assembly of
    /// the message is in the mailbox ([`Transport::list`]).
    Completed {
        /// The sender.
        from: Phone,
        /// The message's tag.
        tag: u16,
        /// The message, as [`Transport::list`] shows it.
        message: MessageInfo,
    },
    /// Every part is there, but so many bundles from this sender (or from numbers that
    /// are no member's) were refused lately that the message waits; it is offered within
    /// minutes ([`SmsTransport::expire`] offers it once the allowance is back).
    Held {
        /// The sender.
        from: Phone,
        /// The message's tag.
        tag: u16,
    },
    /// A member asked for parts again: `resend` parts were queued for it, and `gone`
    /// messages it asked about are no longer held (it was told, at most once a day);
    /// `declined` parts were not sent again (asked too often, or the member's share of the
    /// budget for repairs is spent today).
    RepairRequested {
        /// The peer.
        from: Phone,
        /// Parts queued again.
        resend: usize,
        /// Messages no longer held.
        gone: usize,
        /// Parts asked for that were not sent again.
        declined: usize,
    },
    /// The sender no longer holds messages we were waiting for; they were given up and
    /// reported.
    SenderGone {
        /// The sender.
        from: Phone,
        /// One report per message given up.
        reports: Vec<Report>,
    },
    /// The SMS was not taken (malformed, or from an unknown number): it is noted in the
    /// state folder's bounded `quarantine/` log.
    Refused(Refusal),
    /// A control SMS or part that is not acted on: a repair request or notice from a
    /// number that is no member's (ferry never sends SMS to strangers), or one more
    /// version of a part than are kept. Nothing was sent or changed.
    Ignored {
        /// The sender, as the gateway wrote it (at most 64 characters).
        from: String,
        /// Why, in words.
        reason: String,
    },
}

/// An SMS that was not taken ([`Accepted::Refused`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Its sender as the gateway wrote it, cut to 64 characters (it may hold anything).
    pub from: String,
    /// Why it was not taken.
    pub reason: String,
    /// Whether only because the number is no member's (with `accept_unknown = false`).
    pub unknown_sender: bool,
    /// The log it is noted in.
    pub kept_at: PathBuf,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.unknown_sender {
            write!(
                f,
                "an SMS from {}, which is no member's number, was set aside (noted in {}); if it is a member's new number, set it (ferry contact set --phone)",
                self.from,
                self.kept_at.display()
            )
        } else {
            write!(
                f,
                "an SMS from {} is not a ferry message ({}); noted in {}",
                self.from,
                self.reason,
                self.kept_at.display()
            )
        }
    }
}

/// At most `max` characters of a string a stranger controls (a sender, a text), with an
/// ellipsis when cut. Control characters are kept: whoever prints it escapes them.
pub(crate) fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// Something the user should hear about, kept in the state folder until dismissed
/// ([`SmsTransport::reports`], [`SmsTransport::dismiss_report`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Its identity (for [`SmsTransport::dismiss_report`]).
    pub id: String,
    /// When, in seconds since 1970 (UTC).
    pub at: u64,
    /// What happened.
    pub kind: ReportKind,
}

/// Why an incomplete message was given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GiveUpReason {
    /// No new part arrived for `expiry_hours`.
    Expired,
    /// The sender said it no longer holds the message.
    SenderGone,
    /// The sender reused the tag for a message with another number of parts (earlier
    /// versions of ferry; messages are now told apart by tag and part count).
    Replaced,
    /// Too many incomplete messages from this number (or in all) were waiting: the
    /// oldest made room.
    Crowded,
}

impl std::fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GiveUpReason::Expired => "no new part arrived before the expiry time",
            GiveUpReason::SenderGone => "the sender no longer holds it",
            GiveUpReason::Replaced => "the sender reused its tag for a new message",
            GiveUpReason::Crowded => {
                "too many incomplete messages from that number were waiting and it was the oldest"
            }
        })
    }
}

/// What a [`Report`] is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
#[non_exhaustive]
pub enum ReportKind {
    /// An incomplete message was given up; its parts are kept in `kept_at`.
    GaveUp {
        /// The sender.
        from: Phone,
        /// The message's tag.
        tag: u16,
        /// Parts that arrived.
        have: u16,
        /// Parts it had.
        count: u16,
        /// When its first part arrived (seconds since 1970).
        first_seen: u64,
        /// Why.
        reason: GiveUpReason,
        /// Where the parts are.
        kept_at: PathBuf,
    },
    /// An SMS that is not ferry's, or was damaged on the way; kept in `kept_at` (earlier
    /// versions of ferry; such SMS are now [`Accepted::Refused`] and noted in a bounded log).
    Malformed {
        /// Its sender, as the gateway wrote it.
        from: String,
        /// What is wrong with it.
        reason: String,
        /// Where it is kept.
        kept_at: PathBuf,
    },
    /// An SMS from a number that is no member's; kept in `kept_at` (earlier versions of
    /// ferry; see [`Accepted::Refused`]).
    UnknownSender {
        /// The number.
        from: String,
        /// Where it is kept.
        kept_at: PathBuf,
    },
    /// A peer asked for parts of messages this node no longer keeps; it was told.
    RepairUnavailable {
        /// The peer.
        to: Phone,
        /// The messages' tags.
        tags: Vec<u16>,
    },
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            ReportKind::GaveUp {
                from,
                tag,
                have,
                count,
                first_seen,
                reason,
                kept_at,
            } => write!(
                f,
                "gave up an SMS message from {from} (tag {tag}, first part {}): {have} of {count} parts arrived and {reason}; it will be sent again when the sender sees it is missing (parts kept in {})",
                iso(*first_seen),
                kept_at.display()
            ),
            ReportKind::Malformed {
                from,
                reason,
                kept_at,
            } => write!(
                f,
                "an SMS from {from} is not a ferry message ({reason}); kept in {}",
                kept_at.display()
            ),
            ReportKind::UnknownSender { from, kept_at } => write!(
                f,
                "an SMS from {from}, which is no member's number, was set aside in {}; if it is a member's new number, set it (ferry contact set --phone) and receive again",
                kept_at.display()
            ),
            ReportKind::RepairUnavailable { to, tags } => write!(
                f,
                "{to} asked again for parts of {} message{} this laptop no longer keeps (tag{} {}); it was told, and what it still lacks goes with the next send",
                tags.len(),
                if tags.len() == 1 { "" } else { "s" },
                if tags.len() == 1 { "" } else { "s" },
                tags.iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// What [`SmsTransport::send_to`] did with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendReport {
    /// The recipient.
    pub to: Phone,
    /// The tag the message travels under.
    pub tag: u16,
    /// SMS the message takes.
    pub parts: usize,
    /// Of those, handed to the gateway now.
    pub sent_now: usize,
    /// Of those, waiting in the queue (today's budget is spent, or earlier SMS go first).
    pub queued: usize,
    /// The same message (by name) was already sent or queued to this peer; nothing new was
    /// queued.
    pub already_sent: bool,
}

/// How many SMS sending a message would take, and how many of them today's budget allows
/// ([`SmsTransport::dry_run`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DryRun {
    /// SMS the message takes.
    pub messages: usize,
    /// Of those, how many would go today.
    pub send_today: usize,
    /// Of those, how many would wait for a later day.
    pub queued: usize,
    /// SMS already waiting for this peer (they go first).
    pub already_queued: usize,
    /// Today's budget left for this peer.
    pub remaining_today: u32,
}

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

/// What [`SmsTransport::flush_queue`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// SMS handed to the gateway.
    pub sent: usize,
    /// SMS still waiting (for a later day's budget).
    pub still_queued: usize,
}

/// A request for missing parts that was queued to a peer ([`SmsTransport::request_missing`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairRequest {
    /// The peer that sent the message.
    pub to: Phone,
    /// The message's tag.
    pub tag: u16,
    /// Its number of parts.
    pub count: u16,
    /// The parts asked for.
    pub missing: Vec<u16>,
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

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct PeerState {
    day: u64,
    sent_today: u32,
    sent_total: u64,
    next_tag: Option<u16>,
    /// The day `repairs_today` counts.
    #[serde(default)]
    repairs_day: u64,
    /// Repair SMS (requests, parts sent again, "gone" notices) queued for this peer that
    /// day.
    #[serde(default)]
    repairs_today: u32,
    /// The last day a "gone" notice was queued for this peer.
    #[serde(default)]
    gone_day: Option<u64>,
}

/// SMS sent to all numbers together on one day (`budget.json`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct TotalState {
    day: u64,
    sent_today: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SentMeta {
    name: String,
    at: u64,
    len: u64,
    binary: bool,
    count: usize,
    chunk: usize,
    /// Per part sent again: (when last, the day counted, times that day).
    #[serde(default)]
    resent: BTreeMap<u16, (u64, u64, u8)>,
}

/// What the mailbox keeps beside each assembled message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MessageMeta {
    pub from: Phone,
    pub tag: u16,
    pub parts: u16,
    pub len: u64,
    pub completed_at: u64,
    /// Which version of each part this assembly used.
    #[serde(default)]
    pub choice: Option<Vec<u8>>,
}

/// A queued SMS, from its file name `P-STAMP-TAG-INDEX.EXT`.
struct Queued {
    path: PathBuf,
    priority: u8,
    tag: Option<u16>,
    index: Option<u16>,
    binary: bool,
}

pub(crate) const PRIO_CONTROL: u8 = 0;
const PRIO_REPAIR: u8 = 1;
const PRIO_DATA: u8 = 2;

/// A part is sent again at most this often per UTC day, however often it is asked for.
const RESENDS_PER_PART_PER_DAY: u8 = 3;
/// ... and not again within this many seconds of the last time.
const RESEND_MIN_SECS: u64 = 20;
/// The longest text a gateway may hand over for one SMS (a concatenated SMS of 7 parts in
/// UCS-2, generously); longer is not ferry's and is not decoded.
const MAX_SMS_CHARS: usize = 1200;

pub(crate) fn encode_body(frame: Vec<u8>, binary: bool) -> SmsBody {
    if binary {
        SmsBody::Binary(frame)
    } else {
        SmsBody::Text(text::encode(&frame))
    }
}

/// Decodes an SMS body into a frame: text in ferry's alphabet, or binary; each way is tried
/// when the other fails (gateways sometimes hand 8-bit data over as text and back).
fn decode_body(body: &SmsBody) -> Result<Frame, String> {
    match body {
        SmsBody::Text(t) => {
            if t.len() > MAX_SMS_CHARS * 4 {
                return Err(format!("{} bytes is longer than any SMS", t.len()));
            }
            let t = t.trim();
            let whole = match text::decode(t) {
                Ok(bytes) => frame::decode(&bytes).map_err(|e| e.to_string()),
                Err(e) => frame::decode(t.as_bytes()).map_err(|_| e.to_string()),
            };
            // A gateway may add a footer or a prefix after a space or a line break: a
            // word that decodes and passes the CRC is ferry's.
            whole.or_else(|e| {
                t.split_whitespace()
                    .filter(|w| w.len() < t.len())
                    .take(16)
                    .find_map(|w| text::decode(w).ok().and_then(|b| frame::decode(&b).ok()))
                    .ok_or(e)
            })
        }
        SmsBody::Binary(b) => {
            if b.len() > MAX_SMS_CHARS * 2 {
                return Err(format!("{} bytes is longer than any SMS", b.len()));
            }
            match frame::decode(b) {
                Ok(f) => Ok(f),
                Err(e) => std::str::from_utf8(b)
                    .ok()
                    .and_then(|t| text::decode(t.trim()).ok())
                    .and_then(|bytes| frame::decode(&bytes).ok())
                    .ok_or_else(|| e.to_string()),
            }
        }
    }
}

/// One node's SMS endpoint over a state folder the node gives it.
///
/// The [`Transport`] trait's `send` has no recipient argument: set one with
/// [`SmsTransport::set_recipient`] (one instance per recipient, or switch before each
/// send), or call [`SmsTransport::send_to`] directly. Several instances (the listener's
/// thread, a `ferry send sms` process) may share one state folder: every change holds a
/// file lock, and one sender at a time empties the queue.
///
/// **Nothing a stranger sends makes it send an SMS**: it sends what it is asked to send
/// ([`SmsTransport::send_to`]), repair requests for members' incomplete messages, and
/// answers to members' repair requests — parts of messages it sent to that very number,
/// each part at most three times a day, and repair SMS to one member at most a quarter of
/// `daily_budget` a day — all within `daily_budget` per number and `total_daily_budget`
/// in all.
pub struct SmsTransport {
    pub(crate) config: SmsConfig,
    pub(crate) store: Store,
    gateway: Gateway,
    pub(crate) peers: Vec<Peer>,
    recipient: Option<Phone>,
    clock: Clock,
}

impl std::fmt::Debug for SmsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsTransport")
            .field("gateway", &self.config.gateway)
            .field("from", &self.config.from)
            .field("state", &self.store.root())
            .field("peers", &self.peers.len())
            .field("recipient", &self.recipient)
            .finish()
    }
}

impl SmsTransport {
    /// Opens the transport over `state_dir` (created if missing), reading the gateway
    /// password from the environment variable named by `password_env`.
    pub fn open(config: SmsConfig, state_dir: impl AsRef<Path>) -> Result<SmsTransport, SmsError> {
        let password = match &config.password_env {
            Some(var) => Some(
                std::env::var(var).map_err(|_| SmsError::PasswordMissing { var: var.clone() })?,
            ),
            None => None,
        };
        SmsTransport::open_with_password(config, state_dir, password)
    }

    /// Opens the transport with the gateway password given directly.
    pub fn open_with_password(
        config: SmsConfig,
        state_dir: impl AsRef<Path>,
        password: Option<String>,
    ) -> Result<SmsTransport, SmsError> {
        config.validate()?;
        let store = Store::open(state_dir.as_ref())?;
        let gateway = Gateway::new(&config, password);
        Ok(SmsTransport {
            config,
            store,
            gateway,
            peers: Vec::new(),
            recipient: None,
            clock: Arc::new(SystemTime::now),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &SmsConfig {
        &self.config
    }

    /// The state folder.
    pub fn state_dir(&self) -> &Path {
        self.store.root()
    }

    /// The members SMS are exchanged with: the only numbers repair requests and answers
    /// ever go to. SMS from other numbers are set aside (unless `accept_unknown`, and then
    /// kept within the small bounds for strangers).
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = Peer>) {
        self.peers = peers.into_iter().collect();
    }

    /// The known peers.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// The recipient of [`Transport::send`].
    pub fn set_recipient(&mut self, to: Option<Phone>) {
        self.recipient = to;
    }

    /// Replaces the clock (tests, simulations).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    pub(crate) fn now_secs(&self) -> u64 {
        unix((self.clock)())
    }

    /// Bytes one SMS carries in the configured mode, header included.
    pub fn frame_bytes(&self) -> usize {
        self.config.frame_bytes()
    }

    /// The largest message, in bytes.
    pub fn max_message_bytes(&self) -> u64 {
        frame::max_message(self.frame_bytes()) as u64
    }

    /// How many SMS a message of `len` bytes takes in the configured mode.
    pub fn messages_for(&self, len: u64) -> Result<usize, SmsError> {
        self.layout(len).map(|l| l.count)
    }

    fn layout(&self, len: u64) -> Result<Layout, SmsError> {
        usize::try_from(len)
            .ok()
            .and_then(|l| frame::layout(l, self.frame_bytes()))
            .ok_or(SmsError::TooLarge {
                size: len,
                max: self.max_message_bytes(),
                max_parts: frame::MAX_PARTS,
            })
    }

    pub(crate) fn peer_for(&self, from: &Phone) -> Option<&Peer> {
        self.peers.iter().find(|p| p.phone.same_as(from))
    }

    fn key(phone: &Phone) -> &str {
        phone.as_str()
    }

    // ---- budget and peer state -------------------------------------------------------

    fn peer_state(&self, phone: &Phone, now: u64) -> Result<PeerState, SmsError> {
        let path = self.store.path(&format!("peers/{}.json", Self::key(phone)));
        let mut s: PeerState = self.store.read_json(&path)?.unwrap_or_default();
        if s.day != now / 86_400 {
            s.day = now / 86_400;
            s.sent_today = 0;
        }
        if s.repairs_day != now / 86_400 {
            s.repairs_day = now / 86_400;
            s.repairs_today = 0;
        }
        Ok(s)
    }

    fn save_peer_state(&self, phone: &Phone, s: &PeerState) -> Result<(), SmsError> {
        let path = self.store.path(&format!("peers/{}.json", Self::key(phone)));
        self.store.write_json(&path, s)
    }

    fn total_state(&self, now: u64) -> Result<TotalState, SmsError> {
        let mut s: TotalState = self
            .store
            .read_json(&self.store.path("budget.json"))?
            .unwrap_or_default();
        if s.day != now / 86_400 {
            s = TotalState {
                day: now / 86_400,
                sent_today: 0,
            };
        }
        Ok(s)
    }

    /// Repair SMS (requests, parts sent again, "gone" notices) one peer may have per day:
    /// a quarter of its daily budget, so repairs, forged or not, never take the budget of
    /// new data.
    pub fn repair_share(&self) -> u32 {
        (self.config.daily_budget / 4).max(1)
    }

    /// Takes up to `n` SMS from `peer`'s repair share for today; returns how many it may
    /// queue. Runs under the state lock.
    pub(crate) fn take_repair_share(
        &self,
        peer: &Phone,
        n: usize,
        now: u64,
    ) -> Result<usize, SmsError> {
        if n == 0 {
            return Ok(0);
        }
        let mut s = self.peer_state(peer, now)?;
        let left = self.repair_share().saturating_sub(s.repairs_today) as usize;
        let take = n.min(left);
        if take > 0 {
            s.repairs_today += take as u32;
            self.save_peer_state(peer, &s)?;
        }
        Ok(take)
    }

    // ---- the queue --------------------------------------------------------------------

    fn queue(&self, phone: &Phone) -> Result<Vec<Queued>, SmsError> {
        let dir = self.store.path(&format!("queue/{}", Self::key(phone)));
        let mut out = Vec::new();
        for name in self.store.list(&dir)? {
            let Some((stem, ext)) = name.rsplit_once('.') else {
                continue;
            };
            let fields: Vec<&str> = stem.split('-').collect();
            if fields.len() != 4 {
                continue;
            }
            out.push(Queued {
                path: dir.join(&name),
                priority: fields[0].parse().unwrap_or(PRIO_DATA),
                tag: fields[2].parse().ok(),
                index: fields[3].parse().ok(),
                binary: ext == "bin",
            });
        }
        Ok(out)
    }

    pub(crate) fn enqueue(
        &self,
        phone: &Phone,
        priority: u8,
        tag: Option<u16>,
        index: Option<u16>,
        body: &SmsBody,
    ) -> Result<(), SmsError> {
        let (bytes, ext) = match body {
            SmsBody::Text(t) => (t.as_bytes(), "txt"),
            SmsBody::Binary(b) => (b.as_slice(), "bin"),
        };
        let name = format!(
            "{priority}-{}-{}-{}.{ext}",
            unique_stamp(),
            tag.map_or("ctl".into(), |t| format!("{t:05}")),
            index.map_or("000".into(), |i| format!("{i:03}")),
        );
        let path = self
            .store
            .path(&format!("queue/{}/{name}", Self::key(phone)));
        self.store.write(&path, bytes)
    }

    /// Sends what waits in the queue, oldest and most urgent first (repair requests, then
    /// repaired parts, then new messages), as far as each peer's budget and the total
    /// budget for today allow. Stops at the first gateway error; what was not sent stays
    /// queued.
    pub fn flush_queue(&mut self) -> Result<FlushReport, SmsError> {
        let _flushing = self.store.flush_lock()?;
        let mut report = FlushReport::default();
        let peers = self.store.peers_in("queue")?;
        for peer in &peers {
            loop {
                let next = {
                    let _l = self.store.lock()?;
                    let now = self.now_secs();
                    let state = self.peer_state(peer, now)?;
                    let total = self.total_state(now)?;
                    if state.sent_today >= self.config.daily_budget
                        || total.sent_today >= self.config.total_daily_budget
                    {
                        None
                    } else {
                        let mut q = self.queue(peer)?;
                        q.sort_by(|a, b| {
                            (a.priority, a.path.file_name()).cmp(&(b.priority, b.path.file_name()))
                        });
                        match q.into_iter().next() {
                            None => None,
                            Some(entry) => {
                                let bytes = self.store.read(&entry.path)?.unwrap_or_default();
                                let body = if entry.binary {
                                    SmsBody::Binary(bytes)
                                } else {
                                    SmsBody::Text(String::from_utf8_lossy(&bytes).into_owned())
                                };
                                Some((entry, body))
                            }
                        }
                    }
                };
                let Some((entry, body)) = next else {
                    break;
                };
                let note = format!(
                    "ferry-{}-{}",
                    entry.tag.map_or("ctl".into(), |t| t.to_string()),
                    entry.index.unwrap_or(0)
                );
                self.gateway.send(peer, &body, entry.priority, &note)?;
                let _l = self.store.lock()?;
                self.store.remove(&entry.path)?;
                let now = self.now_secs();
                let mut state = self.peer_state(peer, now)?;
                state.sent_today += 1;
                state.sent_total += 1;
                self.save_peer_state(peer, &state)?;
                let mut total = self.total_state(now)?;
                total.sent_today += 1;
                self.store
                    .write_json(&self.store.path("budget.json"), &total)?;
                report.sent += 1;
            }
        }
        let _l = self.store.lock()?;
        for peer in &peers {
            report.still_queued += self.queue(peer)?.len();
        }
        Ok(report)
    }

    // ---- sending ------------------------------------------------------------------------

    fn allocate_tag(&self, to: &Phone, now: u64) -> Result<u16, SmsError> {
        use std::hash::BuildHasher;
        let mut state = self.peer_state(to, now)?;
        let mut next = state.next_tag.unwrap_or_else(|| {
            (std::collections::hash_map::RandomState::new().hash_one(now)
                % u64::from(frame::TAG_LIMIT)) as u16
        });
        for _ in 0..frame::TAG_LIMIT {
            let candidate = next;
            next = (next + 1) % frame::TAG_LIMIT;
            let meta = self
                .store
                .path(&format!("sent/{}/{candidate:05}.json", Self::key(to)));
            if !meta.exists() {
                state.next_tag = Some(next);
                self.save_peer_state(to, &state)?;
                return Ok(candidate);
            }
        }
        Err(SmsError::Config {
            setting: "keep_sent_hours",
            problem: format!(
                "{} messages to {to} are still kept for repair; lower keep_sent_hours",
                frame::TAG_LIMIT
            ),
        })
    }

    fn find_sent(&self, to: &Phone, name: &str) -> Result<Option<(u16, SentMeta)>, SmsError> {
        let dir = self.store.path(&format!("sent/{}", Self::key(to)));
        for file in self.store.list(&dir)? {
            let Some(tag) = file
                .strip_suffix(".json")
                .and_then(|t| t.parse::<u16>().ok())
            else {
                continue;
            };
            if let Some(meta) = self.store.read_json::<SentMeta>(&dir.join(&file))? {
                if meta.name == name {
                    return Ok(Some((tag, meta)));
                }
            }
        }
        Ok(None)
    }

    fn load_sent(&self, to: &Phone, tag: u16) -> Result<Option<(SentMeta, Vec<u8>)>, SmsError> {
        let dir = self.store.path(&format!("sent/{}", Self::key(to)));
        let Some(meta) = self
            .store
            .read_json::<SentMeta>(&dir.join(format!("{tag:05}.json")))?
        else {
            return Ok(None);
        };
        Ok(self
            .store
            .read(&dir.join(format!("{tag:05}.msg")))?
            .map(|bytes| (meta, bytes)))
    }

    /// Sends one message to `to`: cuts it into SMS, keeps a copy to answer repair
    /// requests, queues every part durably, then sends as many as today's budgets allow.
    /// A message already sent to `to` under the same `name` (and size) is not sent again.
    ///
    /// On a gateway error the parts stay queued (a later [`SmsTransport::flush_queue`], or
    /// the listener's housekeeping, sends them) and the error is returned.
    pub fn send_to(
        &mut self,
        to: &Phone,
        name: &str,
        message: &[u8],
    ) -> Result<SendReport, SmsError> {
        let len = message.len() as u64;
        let layout = self.layout(len)?;
        let binary = self.config.binary;
        let (tag, already) = {
            let _l = self.store.lock()?;
            let now = self.now_secs();
            match self.find_sent(to, name)? {
                Some((tag, meta)) if meta.len == len => (tag, true),
                _ => {
                    let tag = self.allocate_tag(to, now)?;
                    let dir = self.store.path(&format!("sent/{}", Self::key(to)));
                    self.store
                        .write(&dir.join(format!("{tag:05}.msg")), message)?;
                    let meta = SentMeta {
                        name: name.to_string(),
                        at: now,
                        len,
                        binary,
                        count: layout.count,
                        chunk: layout.chunk,
                        resent: BTreeMap::new(),
                    };
                    self.store
                        .write_json(&dir.join(format!("{tag:05}.json")), &meta)?;
                    for i in 0..layout.count {
                        let f = frame::data_frame(tag, message, layout, i);
                        self.enqueue(
                            to,
                            PRIO_DATA,
                            Some(tag),
                            Some(i as u16),
                            &encode_body(f, binary),
                        )?;
                    }
                    (tag, false)
                }
            }
        };
        let flushed = self.flush_queue();
        let queued = {
            let _l = self.store.lock()?;
            self.queue(to)?
                .iter()
                .filter(|q| q.tag == Some(tag))
                .count()
        };
        flushed?;
        Ok(SendReport {
            to: to.clone(),
            tag,
            parts: layout.count,
            sent_now: if already {
                0
            } else {
                layout.count - queued.min(layout.count)
            },
            queued,
            already_sent: already,
        })
    }

    /// How many SMS sending a message of `len` bytes to `to` would take, and how many of
    /// them would go today. Sends nothing.
    pub fn dry_run(&self, to: &Phone, len: u64) -> Result<DryRun, SmsError> {
        let messages = self.messages_for(len)?;
        let _l = self.store.lock()?;
        let now = self.now_secs();
        let state = self.peer_state(to, now)?;
        let total = self.total_state(now)?;
        let remaining = self
            .config
            .daily_budget
            .saturating_sub(state.sent_today)
            .min(
                self.config
                    .total_daily_budget
                    .saturating_sub(total.sent_today),
            );
        let already_queued = self.queue(to)?.len();
        let room = (remaining as usize).saturating_sub(already_queued);
        let send_today = messages.min(room);
        Ok(DryRun {
            messages,
            send_today,
            queued: messages - send_today,
            already_queued,
            remaining_today: remaining,
        })
    }

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

    // ---- receiving ----------------------------------------------------------------------

    /// Takes one incoming SMS: stores a part (and offers its message when it was the last
    /// one missing), answers a member's repair request by queueing the parts asked for, or
    /// gives up messages a member no longer holds. A malformed SMS, or one from an unknown
    /// number (without `accept_unknown`), is noted in the bounded `quarantine/` log.
    /// Returns once what must last is on disk (members' parts durably); repaired parts are
    /// queued, and [`SmsTransport::flush_queue`] sends them.
    pub fn accept(&mut self, sms: &IncomingSms) -> Result<Accepted, SmsError> {
        let _l = self.store.lock()?;
        let now = self.now_secs();
        match self.classify(sms) {
            Err((reason, unknown)) => Ok(Accepted::Refused(
                self.set_aside(sms, &reason, unknown, now)?,
            )),
            Ok((from, frame)) => self.apply(&from, frame, now),
        }
    }

    /// The sender and frame of an SMS, or why it is refused (and whether because the number
    /// is unknown).
    pub(crate) fn classify(&self, sms: &IncomingSms) -> Result<(Phone, Frame), (String, bool)> {
        if sms.from.len() > 64 {
            return Err(("the sender is not a phone number".into(), false));
        }
        let Ok(from) = Phone::parse(&sms.from) else {
            return Err(("the sender is not a phone number".into(), false));
        };
        let from = match self.peer_for(&from) {
            Some(p) => p.phone.clone(),
            None if self.config.accept_unknown => from,
            None => return Err(("unknown sender".into(), true)),
        };
        let frame = decode_body(&sms.body).map_err(|e| (e, false))?;
        Ok((from, frame))
    }

    /// Answers a member's repair request: the parts asked for of messages sent to that very
    /// number, each at most [`RESENDS_PER_PART_PER_DAY`] times a day and not twice within
    /// [`RESEND_MIN_SECS`], within the member's repair share; and, at most once a day, a
    /// "gone" notice for messages no longer kept.
    pub(crate) fn answer_missing(
        &self,
        from: &Phone,
        requests: &[Missing],
        now: u64,
    ) -> Result<Accepted, SmsError> {
        let day = now / 86_400;
        let queued = self.queue(from)?;
        let mut wanted: Vec<(u16, u16)> = Vec::new();
        let mut sent: BTreeMap<u16, (SentMeta, Vec<u8>)> = BTreeMap::new();
        let mut gone = Vec::new();
        let mut declined = 0;
        for r in requests {
            let held = match sent.get(&r.tag) {
                Some(_) => true,
                None => match self.load_sent(from, r.tag)? {
                    Some((meta, message)) if meta.count == usize::from(r.count) => {
                        sent.insert(r.tag, (meta, message));
                        true
                    }
                    _ => false,
                },
            };
            if !held {
                gone.push(Gone {
                    tag: r.tag,
                    count: r.count,
                });
                continue;
            }
            let meta = &sent[&r.tag].0;
            for &i in &r.parts {
                let waiting = queued
                    .iter()
                    .any(|q| q.tag == Some(r.tag) && q.index == Some(i));
                let too_often = meta.resent.get(&i).is_some_and(|&(last, d, n)| {
                    now < last.saturating_add(RESEND_MIN_SECS)
                        || (d == day && n >= RESENDS_PER_PART_PER_DAY)
                });
                if waiting || wanted.contains(&(r.tag, i)) {
                    continue;
                }
                if too_often {
                    declined += 1;
                    continue;
                }
                wanted.push((r.tag, i));
            }
        }
        let allowed = self.take_repair_share(from, wanted.len(), now)?;
        declined += wanted.len() - allowed;
        for &(tag, i) in &wanted[..allowed] {
            let (meta, message) = sent.get_mut(&tag).expect("loaded above");
            let layout = Layout {
                count: meta.count,
                chunk: meta.chunk,
            };
            let f = frame::data_frame(tag, message, layout, usize::from(i));
            self.enqueue(
                from,
                PRIO_REPAIR,
                Some(tag),
                Some(i),
                &encode_body(f, meta.binary),
            )?;
            let e = meta.resent.entry(i).or_insert((0, day, 0));
            if e.1 != day {
                *e = (0, day, 0);
            }
            e.0 = now;
            e.2 = e.2.saturating_add(1);
        }
        let dir = self.store.path(&format!("sent/{}", Self::key(from)));
        for (tag, (meta, _)) in &sent {
            self.store
                .write_json(&dir.join(format!("{tag:05}.json")), meta)?;
        }
        let mut told = 0;
        if !gone.is_empty() {
            let state = self.peer_state(from, now)?;
            let frames = frame::gone_frames(&gone, self.frame_bytes());
            if state.gone_day != Some(day)
                && self.take_repair_share(from, frames.len(), now)? == frames.len()
            {
                for f in frames {
                    self.enqueue(
                        from,
                        PRIO_CONTROL,
                        None,
                        None,
                        &encode_body(f, self.config.binary),
                    )?;
                }
                let mut state = self.peer_state(from, now)?;
                state.gone_day = Some(day);
                self.save_peer_state(from, &state)?;
                told = gone.len();
                self.report(
                    ReportKind::RepairUnavailable {
                        to: from.clone(),
                        tags: gone.iter().map(|g| g.tag).collect(),
                    },
                    now,
                )?;
            }
        }
        Ok(Accepted::RepairRequested {
            from: from.clone(),
            resend: allowed,
            gone: told,
            declined: declined + (gone.len() - told),
        })
    }

    pub(crate) fn report(&self, kind: ReportKind, now: u64) -> Result<Report, SmsError> {
        let report = Report {
            id: unique_stamp(),
            at: now,
            kind,
        };
        let path = self.store.path(&format!("reports/{}.json", report.id));
        self.store.write_json(&path, &report)?;
        self.cap_reports()?;
        Ok(report)
    }

    /// Reads Gammu's inbox folder: takes every SMS in it ([`SmsTransport::accept`]) and
    /// removes each file once taken (its content is then in the state folder), then sends
    /// what the SMS asked for (repaired parts).
    pub fn receive_spool(&mut self) -> Result<Vec<Accepted>, SmsError> {
        let inbox = self.config.inbox.clone().ok_or_else(|| SmsError::Config {
            setting: "inbox",
            problem: "receiving through Gammu needs its inbox folder (inboxpath of gammu-smsdrc)"
                .into(),
        })?;
        let mut out = Vec::new();
        for sms in crate::gateway::read_spool(&inbox)? {
            let accepted = self.accept(&IncomingSms {
                from: sms.from,
                to: None,
                body: sms.body,
            })?;
            std::fs::remove_file(&sms.path).map_err(|source| SmsError::Spool {
                what: "remove a message from",
                path: sms.path.clone(),
                source,
            })?;
            out.push(accepted);
        }
        if out
            .iter()
            .any(|a| matches!(a, Accepted::RepairRequested { .. }))
        {
            self.flush_queue()?;
        }
        Ok(out)
    }

    // ---- repair and expiry ----------------------------------------------------------------

    /// Asks members for the parts still missing of their messages that made no progress
    /// for `repair_after_minutes` (then twice as long after each request), one compact
    /// control SMS per member where possible, and sends them as the budgets allow. Numbers
    /// that are no member's are never asked.
    pub fn request_missing(&mut self) -> Result<Vec<RepairRequest>, SmsError> {
        let out = {
            let _l = self.store.lock()?;
            let now = self.now_secs();
            self.queue_repairs(now)?
        };
        if !out.is_empty() {
            self.flush_queue()?;
        }
        Ok(out)
    }

    /// Housekeeping: gives up incomplete messages with no new part for `expiry_hours` (each
    /// reported, its parts kept in `expired/`; strangers' after a day, dropped), offers
    /// held messages whose sender's allowance came back, forgets finished messages after
    /// the same time, drops sent copies older than `keep_sent_hours`, and keeps
    /// `quarantine/`, `expired/`, `reports/` and the processed mailbox within their size
    /// and age limits. Returns the new reports.
    pub fn expire(&mut self) -> Result<Vec<Report>, SmsError> {
        let _l = self.store.lock()?;
        let now = self.now_secs();
        let keep_sent = self
            .config
            .keep_sent_hours
            .unwrap_or(self.config.expiry_hours)
            * 3600;
        self.sweep_legacy(now)?;
        let reports = self.expire_incoming(now)?;
        self.offer_held(now)?;
        for peer in self.store.peers_in("sent")? {
            let dir = self.store.path(&format!("sent/{}", Self::key(&peer)));
            for name in self.store.list(&dir)? {
                let Some(stem) = name.strip_suffix(".json") else {
                    continue;
                };
                let path = dir.join(&name);
                if let Some(m) = self.store.read_json::<SentMeta>(&path)? {
                    if now >= m.at.saturating_add(keep_sent) {
                        self.store.remove(&dir.join(format!("{stem}.msg")))?;
                        self.store.remove(&path)?;
                    }
                }
            }
        }
        self.prune_kept(now)?;
        Ok(reports)
    }

    /// Messages still incomplete.
    pub fn incomplete(&self) -> Result<Vec<Incomplete>, SmsError> {
        let _l = self.store.lock()?;
        self.incomplete_messages()
    }

    /// Reports not yet dismissed, oldest first.
    pub fn reports(&self) -> Result<Vec<Report>, SmsError> {
        let dir = self.store.path("reports");
        let mut out = Vec::new();
        for name in self.store.list(&dir)? {
            match self.store.read_json::<Report>(&dir.join(&name)) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                // A report this version cannot read is dropped, not a reason to stop.
                Err(SmsError::CorruptState { .. }) => {
                    let _ = self.store.remove(&dir.join(&name));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Dismisses a report once the user has seen it.
    pub fn dismiss_report(&mut self, id: &str) -> Result<(), SmsError> {
        if id.contains(['/', '\\', '.']) {
            return Ok(());
        }
        let _l = self.store.lock()?;
        self.store
            .remove(&self.store.path(&format!("reports/{id}.json")))
    }

    /// Who sent a message of the mailbox (by the number the gateway gave; numbers can be
    /// forged, so this says nothing about who wrote it).
    pub fn sender_of(&self, id: &MessageId) -> Result<Option<Phone>, SmsError> {
        Ok(self.message_meta(id)?.map(|m| m.from))
    }

    /// Whether a message of the mailbox came from a member's published number.
    pub fn from_member(&self, id: &MessageId) -> Result<bool, SmsError> {
        Ok(self
            .message_meta(id)?
            .is_some_and(|m| self.is_member(&m.from)))
    }

    fn message_meta(&self, id: &MessageId) -> Result<Option<MessageMeta>, SmsError> {
        let Some(path) = self.inbox_path(id, "json") else {
            return Ok(None);
        };
        let meta = self.store.read_json::<MessageMeta>(&path)?;
        Ok(match meta {
            Some(m) => Some(m),
            None => self.store.read_json::<MessageMeta>(
                &self.store.path(&format!("inbox/processed/{}.json", id.0)),
            )?,
        })
    }

    fn inbox_path(&self, id: &MessageId, ext: &str) -> Option<PathBuf> {
        let ok = !id.0.is_empty()
            && id.0.len() < 80
            && id.0.chars().all(|c| c.is_ascii_digit() || c == '-');
        ok.then(|| self.store.path(&format!("inbox/{}.{ext}", id.0)))
    }
}

impl Transport for SmsTransport {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "sms",
            max_message_bytes: Some(self.max_message_bytes()),
            direction: Direction::OneWay,
            typical_latency: Duration::from_secs(3600),
            trusted_carrier: false,
            shared_medium: false,
        }
    }

    fn send(
        &mut self,
        name: &str,
        body: &mut dyn Read,
        len: u64,
    ) -> Result<MessageInfo, TransportError> {
        let max = self.max_message_bytes();
        if len > max {
            return Err(TransportError::TooLarge { size: len, max });
        }
        let to = self.recipient.clone().ok_or(SmsError::NoRecipient)?;
        let mut message = Vec::with_capacity(len as usize);
        body.take(len)
            .read_to_end(&mut message)
            .map_err(|source| TransportError::Io {
                what: "cannot read message",
                path: name.to_string(),
                source,
            })?;
        if message.len() as u64 != len {
            return Err(TransportError::Io {
                what: "short message",
                path: name.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} of {len} bytes", message.len()),
                ),
            });
        }
        let r = self.send_to(&to, name, &message)?;
        Ok(MessageInfo {
            id: MessageId(format!("{}-{:05}", to.digits(), r.tag)),
            len: Some(len),
            location: format!(
                "SMS to {to}: {} message(s), {} sent, {} queued",
                r.parts, r.sent_now, r.queued
            ),
        })
    }

    fn list(&mut self) -> Result<Vec<MessageInfo>, TransportError> {
        let dir = self.store.path("inbox");
        let mut out = Vec::new();
        for name in self.store.list(&dir)? {
            let Some(id) = name.strip_suffix(".msg") else {
                continue;
            };
            let path = dir.join(&name);
            let len = std::fs::metadata(&path).ok().map(|m| m.len());
            out.push(MessageInfo {
                id: MessageId(id.to_string()),
                len,
                location: path.display().to_string(),
            });
        }
        Ok(out)
    }

    fn open(&mut self, id: &MessageId) -> Result<Box<dyn Read + '_>, TransportError> {
        let path = self
            .inbox_path(id, "msg")
            .ok_or_else(|| TransportError::NotFound(id.clone()))?;
        match std::fs::File::open(&path) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(TransportError::NotFound(id.clone()))
            }
            Err(source) => Err(TransportError::Io {
                what: "cannot open",
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Processed: the message is filed in `inbox/processed/` (kept for `keep_sent_hours`,
    /// at most 256) and its parts are dropped. Obsolete: removed. Rejected: the node keeps
    /// its own copy (quarantine), so this one is dropped and never offered again; the next
    /// untried assembly of its parts, if any, is offered instead (another version of a
    /// part may be the real one).
    fn settle(&mut self, id: &MessageId, disposition: &Disposition) -> Result<(), TransportError> {
        let (Some(msg), Some(meta_path)) =
            (self.inbox_path(id, "msg"), self.inbox_path(id, "json"))
        else {
            return Err(TransportError::NotFound(id.clone()));
        };
        let _l = self.store.lock()?;
        let now = self.now_secs();
        let meta = self
            .store
            .read_json::<MessageMeta>(&meta_path)
            .ok()
            .flatten();
        if !msg.exists() {
            // Settled before (by another process, or twice): nothing left to do.
            return Ok(());
        }
        match disposition {
            Disposition::Processed => {
                let done = self.store.path("inbox/processed");
                self.store
                    .rename(&msg, &done.join(format!("{}.msg", id.0)))?;
                if meta_path.exists() {
                    self.store
                        .rename(&meta_path, &done.join(format!("{}.json", id.0)))?;
                }
            }
            Disposition::Obsolete | Disposition::Rejected { .. } => {
                self.store.remove(&msg)?;
                self.store.remove(&meta_path)?;
            }
        }
        self.settle_assembly(meta, disposition, now)?;
        Ok(())
    }
}
