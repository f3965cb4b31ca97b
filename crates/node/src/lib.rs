//! A ferry node: one home folder holding one member of one dataset.
//!
//! This crate is where ferry meets the outside world. It owns the home folder (database,
//! quarantine, outbox), draws randomness and reads the clock, and drives the pure sync
//! engine over the SQLite store and the transports. The CLI is a thin layer over
//! [`Node`]; everything a user can do is a method here, testable without a process.
//!
//! **Architecture Invariant:** this is the only crate that knows the concrete transports;
//! it registers them explicitly (no global registry).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod attach;
mod backup;
mod contacts;
mod doctor;
mod email;
mod epochs;
mod error;
mod exchange;
mod feed;
mod forward;
mod history;
mod home;
mod housekeeping;
mod identity;
pub mod invite;
pub mod json;
mod ledger;
mod load;
mod lock;
mod medium;
mod node;
mod passphrase;
mod progress;
mod rejoin;
mod resolve;
mod serial;
mod sms;
pub mod time;
mod token;

pub use attach::{AttachRun, Attachment};
pub use backup::BackupReport;
pub use contacts::Contact;
pub use doctor::{DoctorReport, Finding, Severity};
pub use email::{EmailReceiveReport, EmailSendReport, EmailSent, EmailWaiting};
pub use epochs::RekeyReport;
pub use error::{ErrorKind, NodeError, NothingToImport};
pub use exchange::{
    DryImport, DryMember, DryRun, DryWrite, ExportOutcome, FileOutcome, FileResult, ImportReport,
    SyncReport, VerifyReport, disposition_of,
};
pub use feed::{
    BadCursor, Cursor, FeedChange, FeedPage, FieldInput, RecordWrite, RecordsPage, WriteRefused,
};
pub use ferry_sync::Accept;
pub use ferry_transport::plain_io;
pub use ferry_transport_email::EmailConfig;
pub use history::{FieldChange, LogEntry, RecordLog, Restored};
pub use home::{Home, Passphrase};
pub use housekeeping::{CompactReport, HoldBack, PurgeReport};
pub use identity::Identity;
pub use load::{FileFormat, LoadReport};
pub use medium::SkippedEntry;
pub use node::check_collection;
pub use node::{
    ConflictValue, ConflictView, InvitationFile, InviteReport, MemberStatus, NeededChanges, Node,
    RemovedView, Status, WaitingChanges,
};
pub use progress::{NoProgress, Progress, Unit};
pub use rejoin::{RefusedMembership, RejoinReport};
pub use resolve::{Prefer, ResolveAllReport, Settled};
pub use serial::{
    Flow, LinkStats, ListenEvent, ProgressReport, STRANGER_AIRTIME, SerialFlags, SerialProgress,
    SerialReport,
};
/// A flag value that overrides a key of `[sms]` or `[serial]` in `ferry.toml`.
pub use sms::SmsSetting as Setting;
pub use sms::{SmsCounters, SmsFlags, SmsPeerSend, SmsReceiveReport, SmsSendReport, SmsSetting};
pub use token::{PAGE_LINK_TTL_MS, new_secret};

/// A size for people: "512 B", "3.2 kB", "4.5 MB".
pub(crate) fn human_bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.1} GB", n as f64 / 1e9),
    }
}

pub(crate) fn id_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
