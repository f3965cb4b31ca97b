//! What the user should hear about ([`Report`]): kept in the state folder (`reports/`)
//! until the node shows and dismisses it.

use super::SmsTransport;
use crate::error::SmsError;
use crate::phone::Phone;
use crate::store::{iso, unique_stamp};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    ///
    /// [`Accepted::Refused`]: crate::Accepted::Refused
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
    ///
    /// [`Accepted::Refused`]: crate::Accepted::Refused
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

impl SmsTransport {
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
}
