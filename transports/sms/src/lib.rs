//! ferry's SMS transport: bundles (opaque bytes) as text or binary SMS through Kannel, Gammu
//! SMSD's spool folders, or any HTTP SMS API.
//!
//! - **Encoding** ([`text`]): text SMS use 73 characters of the GSM-7 basic alphabet that
//!   gateways leave alone, as one base-73 number per SMS: 6.19 bits per character, **123
//!   bytes per 160-character SMS**. Binary (8-bit) SMS carry 140 bytes.
//! - **Frames** ([`frame`]): each SMS carries 4 (one-part message), 5 (2–16 parts) or 6
//!   (17–256 parts) bytes of header and checksum: a 14-bit message tag, part index and
//!   count, CRC-16. So a text SMS carries 117–119 bytes of message, a binary one 134–136:
//!   two text SMS carry up to 236 bytes, two binary SMS 270.
//! - **Reassembly** is durable for members' numbers (the state folder the node gives
//!   [`SmsTransport::open`]): parts may arrive in any order, twice, days apart, across
//!   restarts; a complete message appears in the [`ferry_transport::Transport`] mailbox
//!   (`list`/`open`/`settle`). What is kept is bounded per sender and in all, with expiry,
//!   and one SMS costs the same however much is kept. Several versions of a part are kept,
//!   so a forged part cannot displace a real one: when the node refuses an assembly
//!   (`settle` with `Rejected`), the next one is offered.
//! - **Repair**: [`SmsTransport::request_missing`] sends a member a compact "missing 3,5
//!   of message X" control SMS; the member answers from its copy of what it sent
//!   ([`SmsTransport::accept`] queues the parts, [`SmsTransport::flush_queue`] sends them),
//!   or says it no longer holds it. Only members' published numbers are ever asked or
//!   answered, within limits (see [`SmsTransport`]): a stranger cannot make ferry send an
//!   SMS.
//! - **Expiry**: [`SmsTransport::expire`] gives up messages that made no progress for
//!   `expiry_hours`, with a [`Report`] each, and keeps what is set aside within size and
//!   age limits.
//! - **Budget**: `daily_budget` SMS per peer and `total_daily_budget` in all per UTC day;
//!   what goes beyond waits in a durable queue. [`SmsTransport::dry_run`] says how many SMS
//!   a message would take; [`SmsTransport::counters`] gives sent and queued counts per peer.
//! - **Gateways**: Kannel (`sendsms` GET or POST; incoming SMS through the [`Listener`],
//!   which follows the [`ListenPolicy`]: loopback by default, beyond it only with a token
//!   and TLS), Gammu SMSD (files in its outbox; [`SmsTransport::receive_spool`] reads its
//!   inbox), and an HTTP template ([`HttpTemplate`]).
//!
//! **Architecture Invariant:** like every transport, this one moves opaque bytes: it never
//! parses a bundle. Receipts and everything else the node sends are just messages to it.
//!
//! ```no_run
//! use ferry_transport_sms::{GatewayKind, Peer, Phone, SmsConfig, SmsTransport};
//! # fn main() -> Result<(), ferry_transport_sms::SmsError> {
//! let mut config = SmsConfig::new(GatewayKind::Kannel, Phone::parse("+15550001")?);
//! config.sendsms_url = Some("http://127.0.0.1:13013/cgi-bin/sendsms".into());
//! config.username = Some("tester".into());
//! let mut sms = SmsTransport::open_with_password(config, "/tmp/ferry-sms", Some("foobar".into()))?;
//! let clinic = Phone::parse("+15550002")?;
//! sms.set_peers([Peer::new(clinic.clone(), "clinic-a")]);
//! println!("{} SMS", sms.dry_run(&clinic, 233)?.messages);
//! let report = sms.send_to(&clinic, "bundle-1", &[0u8; 233])?;
//! println!("{} sent, {} queued", report.sent_now, report.queued);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
pub mod frame;
mod gateway;
mod http;
mod listen;
mod phone;
pub mod policy;
mod quarantine;
mod recv;
mod sms;
mod store;
pub mod text;

pub use config::{GatewayKind, HttpMethod, HttpTemplate, SmsConfig};
pub use error::SmsError;
pub use gateway::SmsBody;
pub use listen::{Event, Listener, Listening, Stopper, listen};
pub use phone::{Peer, Phone};
pub use policy::ListenPolicy;
pub use sms::{
    Accepted, Clock, DryRun, FlushReport, GiveUpReason, IncomingSms, Incomplete, PeerCounters,
    Refusal, RepairRequest, Report, ReportKind, SendReport, SmsTransport, StrangerCounters,
};

/// Bounds on what the transport keeps of incoming SMS (see [`SmsTransport`] and the
/// README): per member number, for numbers that are no member's, and in all.
pub mod limits {
    pub use crate::recv::{
        ATTEMPTS, CANDIDATES, PER_MEMBER_MESSAGES, PER_MEMBER_PARTS, PER_STRANGER_MESSAGES,
        STRANGER_EXPIRY_SECS, STRANGER_MESSAGES, STRANGER_PARTS, TOTAL_MESSAGES, TOTAL_PARTS,
    };
}
