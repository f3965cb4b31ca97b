//! [`SmsTransport`]: one node's SMS endpoint over a state folder. This file holds the
//! endpoint and its settings; its work is split by concern:
//!
//! - `incoming.rs`: taking one incoming SMS (decoding, refusing, Gammu's inbox);
//! - `outbox.rs`: sending (a message cut into SMS, the durable queue, flushing it);
//! - `budget.rs`: the per-number and total daily budgets, and the repair share;
//! - `sent.rs`: the ledger of sent messages, and answering members' repair requests from it;
//! - `housekeeping.rs`: asking for missing parts, expiry;
//! - `report.rs`: what the user should hear about;
//! - `status.rs`: counters for `ferry status`;
//! - `mailbox.rs`: the [`Transport`](ferry_transport::Transport) mailbox over complete
//!   messages.
//!
//! Reassembly lives in `recv.rs`, what is set aside in `quarantine.rs`.

mod budget;
mod housekeeping;
mod incoming;
mod mailbox;
mod outbox;
mod report;
mod sent;
mod status;

pub use budget::DryRun;
pub use housekeeping::RepairRequest;
pub(crate) use incoming::cut;
pub use incoming::{Accepted, IncomingSms, Refusal};
pub(crate) use mailbox::MessageMeta;
pub use outbox::{FlushReport, SendReport};
pub(crate) use outbox::{PRIO_CONTROL, encode_body};
pub use report::{GiveUpReason, Report, ReportKind};
pub use status::{Incomplete, PeerCounters, StrangerCounters};

use crate::config::SmsConfig;
use crate::error::SmsError;
use crate::frame::{self, Layout};
use crate::gateway::Gateway;
use crate::phone::{Peer, Phone};
use crate::store::{Store, unix};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// Where the transport reads the time: the wall clock unless a test or a simulation sets
/// another with [`SmsTransport::set_clock`].
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

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
///
/// [`Transport`]: ferry_transport::Transport
pub struct SmsTransport {
    pub(crate) config: SmsConfig,
    pub(crate) store: Store,
    gateway: Gateway,
    pub(crate) peers: Vec<Peer>,
    recipient: Option<Phone>,
    /// What [`Transport::send`] did since [`SmsTransport::take_sent`].
    sent: Vec<SendReport>,
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
            sent: Vec::new(),
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
    ///
    /// [`Transport::send`]: ferry_transport::Transport::send
    pub fn set_recipient(&mut self, to: Option<Phone>) {
        self.recipient = to;
    }

    /// What [`Transport::send`] did since the last call (SMS sent now and queued for each
    /// message), oldest first.
    ///
    /// [`Transport::send`]: ferry_transport::Transport::send
    pub fn take_sent(&mut self) -> Vec<SendReport> {
        std::mem::take(&mut self.sent)
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
}
