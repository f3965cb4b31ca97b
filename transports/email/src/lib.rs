//! The email transport: bundles travel as email attachments, sent over SMTP and received
//! over IMAP, from a local Maildir, or from `.eml` files and attachments a person saved.
//!
//! Where a clinic has a few minutes of satellite or 2G data a day, email is the
//! store-and-forward network that already exists: mail servers queue, retry and relay for
//! days. This crate uses the servers people already have, through the protocols every
//! provider speaks.
//!
//! - **Sending** ([`EmailTransport::send_bundle`], or [`Transport::send`]): each bundle goes
//!   to every recipient ([`EmailTransport::set_recipients`]) as one email with the bundle
//!   attached, or — when it is larger than `max_message_bytes` allows once base64-encoded —
//!   as several numbered emails ([`mime`] describes the framing). The bundle is first copied
//!   into the outbox in the state folder; a send that fails (server down, login refused,
//!   email refused) leaves it there, and [`EmailTransport::flush_outbox`] tries again with
//!   back-off. Nothing is lost, and [`EmailTransport::outbox`] shows what waits.
//! - **Recognising**: no email names its dataset. Each piece carries a *mark* that only
//!   members can make, from the [`DatasetTag`] the node derives from the dataset key
//!   ([`mime`] describes it); emails of earlier versions, which named the dataset in
//!   `X-Ferry-Dataset`, are still read, as unverified pieces.
//! - **Receiving** ([`EmailTransport::receive`], or [`Transport::list`]): only mail not seen
//!   before is looked at; only messages whose headers or structure show ferry data are
//!   downloaded; parts are kept in the state folder until the bundle is whole (in any order,
//!   days apart, twice); only whole bundles are listed. What is kept is bounded per sender
//!   and in all, expires, and strangers' pieces never push out members' (see
//!   `reassembly.rs`). Mail for another dataset and other mail is never touched. A broken
//!   attachment is reported ([`EmailTransport::problems`]) with its bytes, for the node to
//!   quarantine; its email stays where it is.
//! - **Settling**: a processed bundle's emails (every part, duplicates included) are moved
//!   to `processed_folder`; a bundle the node refused ([`EmailTransport::refuse`]) has its
//!   emails moved to `refused_folder` and is never offered again; so do pieces that claim a
//!   bundle but do not match it. Folders are created if missing. Nothing is ever deleted.
//! - **Saved files** ([`extract_file`], [`EmailTransport::import_file`]): `.eml` files, saved
//!   part attachments and bare bundle files give their bundles back.
//!
//! The public API is blocking, like [`Transport`]; a private single-threaded tokio runtime
//! runs lettre and async-imap inside (so do not call it from inside another async runtime).
//!
//! How a node drives it (`ferry sync email`: receive, then send):
//!
//! ```no_run
//! use ferry_transport::{Disposition, Transport};
//! use ferry_transport_email::{DatasetMarks, DatasetTag, EmailConfig, EmailError, EmailTransport, FlushMode};
//! use std::io::Read;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = EmailConfig {
//!     from: Some("clinic-a@example.org".into()),
//!     smtp_url: Some("smtps://mail.example.org".into()),
//!     smtp_user: Some("clinic-a".into()),
//!     smtp_password_env: Some("FERRY_SMTP_PASSWORD".into()),
//!     imap_url: Some("imaps://mail.example.org".into()),
//!     ..EmailConfig::default()
//! };
//! // From the node: a tag derived from the dataset key, and the dataset id (to read emails of
//! // earlier versions).
//! let marks = DatasetMarks { tag: DatasetTag::new([7; 32]), legacy_id: "5f2c0a9e41d7b3c8".into() };
//! let mut email = EmailTransport::new(config, marks, "/home/ana/.local/share/ferry/email")?;
//!
//! // Receive: whole bundles are listed; apply each, then settle it.
//! let report = email.receive()?;
//! for info in &report.complete {
//!     let mut bundle = Vec::new();
//!     email.open(&info.id)?.read_to_end(&mut bundle)?;
//!     let applied = true; // the node imports `bundle` here
//!     if applied {
//!         email.settle(&info.id, &Disposition::Processed)?;
//!     } else {
//!         email.refuse(&info.id)?; // to refused_folder, never offered again
//!     }
//! }
//! // Broken attachments: quarantine their bytes, then forget them.
//! for problem in email.problems()? {
//!     let _ = (&problem.data, &problem.reason, &problem.location);
//!     email.dismiss_problem(&problem.id)?;
//! }
//!
//! // Send: what earlier runs left in the outbox first, then the new bundles.
//! email.set_recipients(&["hq@example.org", "clinic-b@example.org"])?;
//! let flushed = email.flush_outbox(FlushMode::All)?;
//! let bundle = vec![0u8; 1000]; // from the node's export
//! match email.send_bundle("3f9a…", &mut &bundle[..], bundle.len() as u64) {
//!     Ok(sent) => assert_eq!(sent.len, 1000),
//!     Err(EmailError::Queued { .. }) => { /* kept; say so and exit non-zero */ }
//!     Err(other) => return Err(other.into()),
//! }
//! let waiting = email.outbox()?; // for `ferry status`
//! # let _ = (flushed, waiting);
//! # Ok(())
//! # }
//! ```
//!
//! **Architecture Invariant:** the transport never parses a bundle. It checks only its own
//! framing (part headers, marks, and BLAKE3 digests of what the sender attached). It holds
//! no key: the tag it is given recognises emails and opens nothing.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod imap;
mod maildir;
pub mod mime;
mod reassembly;
mod smtp;
mod store;

pub use config::{
    DEFAULT_IMAP_FOLDER, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PROCESSED_FOLDER,
    DEFAULT_REFUSED_FOLDER, EmailConfig, MIN_MAX_MESSAGE_BYTES,
};
pub use error::EmailError;
pub use mime::{
    Claim, Damaged, DatasetTag, Extracted, FileKind, Piece, check_address, classify, extract_email,
    extract_file, render_email, render_emails,
};

use ferry_transport::{
    Capabilities, Direction, Disposition, MessageId, MessageInfo, Transport, TransportError,
};
use lettre::message::Mailbox;
use mime::PartSpec;
use reassembly::{Added, Fate, Group, Inbox as Parts, Trust};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::{Entry, Source, State};

/// Most emails one bundle is split into.
pub const MAX_PARTS: u32 = 100;
/// Room left in every email for headers that servers add on the way (`Received:`, DKIM).
const TRANSIT_MARGIN: u64 = 4096;
/// Room left for headers whose length varies between emails (date, message id).
const HEADER_SLACK: u64 = 512;
/// First retry delay of a failed send; it doubles with each failure, up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: u64 = 60;
/// Longest retry delay.
const BACKOFF_MAX: u64 = 6 * 3600;

/// A bundle sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Content name.
    pub name: String,
    /// Bundle size.
    pub len: u64,
    /// Number of emails it took.
    pub emails: u32,
    /// Bytes of email handed to the server (all parts).
    pub email_bytes: u64,
    /// Recipients.
    pub to: Vec<String>,
}

/// A bundle waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    /// The entry's id.
    pub id: String,
    /// Content name.
    pub name: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Bundle size.
    pub len: u64,
    /// When it was queued.
    pub queued_at: SystemTime,
    /// Sending attempts so far.
    pub attempts: u32,
    /// When the next automatic attempt is due ([`FlushMode::Due`]).
    pub next_try: SystemTime,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Emails of this bundle already sent, of `parts`.
    pub parts_sent: u32,
    /// Emails this bundle is split into (0 before the first attempt).
    pub parts: u32,
}

/// Which outbox entries [`EmailTransport::flush_outbox`] tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushMode {
    /// Only those whose back-off has expired (for automatic runs).
    Due,
    /// All of them now (a person asked to send).
    All,
}

/// What [`EmailTransport::flush_outbox`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Bundles sent and removed from the outbox.
    pub sent: Vec<Sent>,
    /// Bundles tried that failed again ([`Queued::last_error`] says why).
    pub failed: Vec<Queued>,
    /// Bundles not tried this time (back-off not expired, or the server was down).
    pub waiting: Vec<Queued>,
}

/// A bundle with parts still missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incomplete {
    /// The id it will be listed under once whole.
    pub id: String,
    /// Content name.
    pub name: String,
    /// Bytes received.
    pub have: u64,
    /// Bytes in the whole bundle.
    pub len: u64,
    /// Different parts received.
    pub parts_have: u32,
    /// Number of parts the sender split it into.
    pub parts: u32,
    /// Emails (or files) that brought parts so far.
    pub emails: usize,
    /// When its first part arrived.
    pub first_seen: SystemTime,
    /// When it is given up if still incomplete.
    pub expires: SystemTime,
    /// Whether a member made its parts (their marks verified); if not, anyone may have.
    pub member: bool,
    /// The address its first part came from, as the email says (not checked).
    pub sender: String,
    /// Whether a part of it arrived in this run.
    pub progressed: bool,
}

/// A broken attachment found in the mailbox: its email stays where it is; the node
/// quarantines `data` and then calls [`EmailTransport::dismiss_problem`].
#[derive(Clone, PartialEq, Eq)]
pub struct Problem {
    /// Its id, for [`EmailTransport::dismiss_problem`].
    pub id: String,
    /// Where the email is (account, folder, UID, subject).
    pub location: String,
    /// The attachment's file name, when it had one.
    pub file_name: Option<String>,
    /// What is wrong, in one line.
    pub reason: String,
    /// The attachment's bytes (empty when there was no attachment).
    pub data: Vec<u8>,
    /// When it was found.
    pub found_at: SystemTime,
}

impl std::fmt::Debug for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Problem")
            .field("id", &self.id)
            .field("location", &self.location)
            .field("file_name", &self.file_name)
            .field("reason", &self.reason)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// A piece the transport refused because it claims a part of a bundle but does not match
/// it (it differs from a member's copy of the same bytes, or from the bundle the other parts
/// make up). Its email was moved to the refused folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedPiece {
    /// Where the email is (account, folder, UID or file, subject).
    pub location: String,
    /// Why, in one line.
    pub reason: String,
}

/// What [`EmailTransport::receive`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiveReport {
    /// Whole bundles waiting for the node (all of them, not only new ones), members' first:
    /// what [`Transport::list`] returns.
    pub complete: Vec<MessageInfo>,
    /// Bundles still missing parts (all of them; [`Incomplete::progressed`] tells those that
    /// moved in this run).
    pub incomplete: Vec<Incomplete>,
    /// Broken attachments found this time (also kept in [`EmailTransport::problems`]).
    pub problems: Vec<Problem>,
    /// Pieces refused this time (their emails went to the refused folder).
    pub refused: Vec<RefusedPiece>,
    /// New emails looked at.
    pub emails_seen: usize,
    /// Of those, emails that were not ferry mail: left untouched.
    pub other_mail: usize,
    /// Of those, ferry emails of another dataset (or whose mark does not verify: altered):
    /// left untouched.
    pub other_dataset: usize,
    /// Emails moved straight to the processed or refused folder: late copies of bundles
    /// already settled, and emails whose pieces were refused.
    pub filed: usize,
    /// Pieces not kept because they were over a limit (per sender or in all), or dropped to
    /// make room for others; their emails stay where they are, and are not read again.
    pub dropped: usize,
    /// The senders of those pieces, as their emails say (at most 20 listed).
    pub dropped_from: BTreeSet<String>,
    /// How many different senders those pieces came from.
    pub dropped_senders: usize,
    /// Why the first of them was dropped.
    pub dropped_why: Option<String>,
    /// Incomplete bundles given up in this run because they waited too long: (name, whether
    /// a member made them).
    pub expired: Vec<(String, bool)>,
}

/// What [`EmailTransport::import_file`] found in a saved file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Whole bundles this file completed (or held); open them like received ones.
    pub complete: Vec<MessageInfo>,
    /// Bundles of which this file held a part and which still miss others.
    pub incomplete: Vec<Incomplete>,
    /// Broken attachments or parts in the file.
    pub damaged: Vec<Damaged>,
    /// Pieces refused: they do not match the bundle they claim, or the file holds more
    /// than one email's worth of attachments.
    pub refused: Vec<String>,
    /// Pieces for another dataset, or whose mark does not verify (ignored).
    pub other_dataset: usize,
    /// Pieces of bundles already processed (ignored).
    pub already_processed: usize,
    /// Digests (BLAKE3, hex) of bundles refused before that pieces in the file belong to
    /// (ignored).
    pub already_refused: Vec<String>,
    /// Pieces not kept because they were over a limit.
    pub dropped: usize,
}

/// How a transport knows its dataset's emails; given by the node.
#[derive(Clone, Debug)]
pub struct DatasetMarks {
    /// Marks outgoing pieces and checks incoming ones. Never sent.
    pub tag: DatasetTag,
    /// The dataset id (hex): recognises emails of earlier versions of ferry, which wrote it
    /// in `X-Ferry-Dataset`. Never sent.
    pub legacy_id: String,
}

/// Where incoming mail is read from.
enum Inbox {
    None,
    Imap(Box<imap::Imap>),
    Maildir(maildir::Maildir),
}

/// Bundles by email for one dataset. See the [crate documentation](crate).
pub struct EmailTransport {
    config: EmailConfig,
    marks: DatasetMarks,
    from: Option<Mailbox>,
    to: Vec<Mailbox>,
    state: State,
    /// Received parts, loaded at the first use.
    parts: Option<Parts>,
    inbox: Option<Inbox>,
    rt: tokio::runtime::Runtime,
    max_bundle: u64,
    /// Bundles [`Transport::send`] handed over since [`EmailTransport::take_sent`].
    sent: Vec<Sent>,
}

impl std::fmt::Debug for EmailTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailTransport")
            .field("config", &self.config)
            .field("marks", &self.marks)
            .field("to", &self.to)
            .field("state", &self.state.dir())
            .finish_non_exhaustive()
    }
}

fn to_system(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn in_words(secs: u64) -> String {
    match secs {
        0 => "on the next run".into(),
        s if s < 120 => format!("in {s} s"),
        s if s < 7200 => format!("in {} min", s / 60),
        s => format!("in {} h", s / 3600),
    }
}

/// A size for people: "512 B", "3.2 kB", "4.5 MB".
pub(crate) fn human(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        _ => format!("{:.1} MB", n as f64 / 1e6),
    }
}

/// Bundle bytes that fit in one email of at most `max_message_bytes` from `from` to `to`
/// for a bundle named `name`.
pub(crate) fn per_email(
    from: &Mailbox,
    to: &[Mailbox],
    tag: &DatasetTag,
    name: &str,
    max_message_bytes: u64,
) -> Result<u64, EmailError> {
    let digest = "0".repeat(64);
    let spec = PartSpec {
        from,
        to,
        tag,
        name,
        size: 10u64.pow(15),
        digest: &digest,
        part: MAX_PARTS,
        parts: MAX_PARTS,
        offset: 10u64.pow(15),
    };
    let empty = mime::build_email(&spec, &[])?.len() as u64;
    let header = mime::part_header(&spec, &[]).len() as u64;
    let overhead = empty.saturating_sub(mime::base64_len(header) - 2) + HEADER_SLACK;
    let max = max_message_bytes.saturating_sub(TRANSIT_MARGIN);
    let cap = mime::capacity(max, overhead, header + 24);
    if cap == 0 {
        return Err(EmailError::Setting {
            key: "max_message_bytes",
            problem: format!(
                "{max_message_bytes} leaves no room for data after the headers; raise it"
            ),
        });
    }
    Ok(cap)
}

/// Where the emails of settled pieces go: (source, to the refused folder).
type Filing = Vec<(Source, bool)>;

impl EmailTransport {
    /// An email transport for the dataset `marks` recognise, keeping its state (received
    /// parts, outbox, problems) in `state_dir` (created if missing; the node passes
    /// `HOME/email`). Settings are checked here; passwords are read from the environment
    /// only when a server is used, so importing saved files needs no server settings.
    pub fn new(
        config: EmailConfig,
        marks: DatasetMarks,
        state_dir: impl Into<PathBuf>,
    ) -> Result<EmailTransport, EmailError> {
        config.validate()?;
        let id = &marks.legacy_id;
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EmailError::Setting {
                key: "dataset",
                problem: format!("`{id}` is not a dataset id (hex digits)"),
            });
        }
        let marks = DatasetMarks {
            legacy_id: id.to_ascii_lowercase(),
            ..marks
        };
        let from = config
            .from
            .as_deref()
            .map(mime::parse_address)
            .transpose()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EmailError::io("cannot start the network runtime", "email", e))?;
        let mut t = EmailTransport {
            config,
            marks,
            from,
            to: Vec::new(),
            state: State::open(state_dir.into())?,
            parts: None,
            inbox: None,
            rt,
            max_bundle: 0,
            sent: Vec::new(),
        };
        t.max_bundle = t.per_email(&"x".repeat(mime::MAX_NAME), &t.to)? * u64::from(MAX_PARTS);
        Ok(t)
    }

    /// Sets who receives the bundles sent from now on (members' published addresses, or
    /// `--to`). Changes [`EmailTransport::max_bundle_bytes`] slightly (the `To:` header
    /// takes room in every email).
    pub fn set_recipients<S: AsRef<str>>(&mut self, to: &[S]) -> Result<(), EmailError> {
        let mut list: Vec<Mailbox> = Vec::new();
        for a in to {
            let m = mime::parse_address(a.as_ref())?;
            if !list.iter().any(|x| x.email == m.email) {
                list.push(m);
            }
        }
        self.max_bundle =
            self.per_email(&"x".repeat(mime::MAX_NAME), &list)? * u64::from(MAX_PARTS);
        self.to = list;
        Ok(())
    }

    /// The recipients, as set.
    pub fn recipients(&self) -> Vec<String> {
        self.to.iter().map(|m| m.email.to_string()).collect()
    }

    /// The settings in use.
    pub fn config(&self) -> &EmailConfig {
        &self.config
    }

    /// The state folder.
    pub fn state_dir(&self) -> &Path {
        self.state.dir()
    }

    /// Largest bundle this transport sends: [`MAX_PARTS`] emails of `max_message_bytes`.
    pub fn max_bundle_bytes(&self) -> u64 {
        self.max_bundle
    }

    /// Bundle bytes that fit in one email to `to` for a bundle named `name`.
    fn per_email(&self, name: &str, to: &[Mailbox]) -> Result<u64, EmailError> {
        let placeholder_from;
        let from = match &self.from {
            Some(f) => f,
            None => {
                placeholder_from =
                    mime::parse_address(&format!("{}@example.invalid", "x".repeat(48)))?;
                &placeholder_from
            }
        };
        let placeholder_to;
        let to = if to.is_empty() {
            placeholder_to = [mime::parse_address(&format!(
                "{}@example.invalid",
                "x".repeat(48)
            ))?];
            &placeholder_to[..]
        } else {
            to
        };
        per_email(
            from,
            to,
            &self.marks.tag,
            name,
            self.config.max_message_bytes(),
        )
    }

    // ---- sending ---------------------------------------------------------------------------

    /// Sends one bundle of `len` bytes read from `body` to every recipient. The bundle is
    /// first kept in the outbox; if sending fails it stays there and the error is
    /// [`EmailError::Queued`] (a later [`EmailTransport::flush_outbox`] sends it). Errors in
    /// the settings (no `from`, no recipients, no `smtp_url`, a missing password variable)
    /// and bundles too large for [`EmailTransport::max_bundle_bytes`] are refused before
    /// anything is queued.
    pub fn send_bundle(
        &mut self,
        name: &str,
        body: &mut dyn Read,
        len: u64,
    ) -> Result<Sent, EmailError> {
        let name = mime::sanitize_name(name);
        if len > self.max_bundle {
            return Err(EmailError::TooLarge {
                size: len,
                max: self.max_bundle,
                parts: MAX_PARTS,
            });
        }
        self.sender()?;
        if self.to.is_empty() {
            return Err(EmailError::NoRecipients);
        }
        let smtp = smtp::Smtp::new(&self.config)?;
        let to = self.recipients();
        let mut entry = self.state.enqueue(&name, &to, body, len)?;
        self.attempt(&smtp, &mut entry).map_err(|f| f.error)
    }

    fn sender(&self) -> Result<Mailbox, EmailError> {
        self.from.clone().ok_or(EmailError::MissingSetting {
            key: "from",
            hint: "set `from` (this laptop's address) in [email] in ferry.toml or pass --from",
        })
    }

    /// Tries to send one outbox entry; on success it leaves the outbox, on failure its
    /// back-off is recorded and the error is [`EmailError::Queued`].
    fn attempt(&mut self, smtp: &smtp::Smtp, entry: &mut Entry) -> Result<Sent, smtp::Failure> {
        match self.deliver(smtp, entry) {
            Ok(sent) => {
                self.state.remove_entry(entry)?;
                Ok(sent)
            }
            Err(smtp::Failure {
                error: e,
                server_down,
            }) => {
                entry.attempts += 1;
                let delay = BACKOFF_FIRST
                    .saturating_mul(1u64 << (entry.attempts - 1).min(20))
                    .min(BACKOFF_MAX);
                entry.next_try = store::now() + delay;
                entry.last_error = Some(e.to_string());
                self.state.save_entry(entry)?;
                Err(smtp::Failure {
                    error: EmailError::Queued {
                        name: entry.name.clone(),
                        attempts: entry.attempts,
                        next_try: in_words(delay),
                        reason: e.to_string(),
                    },
                    server_down,
                })
            }
        }
    }

    /// The split of `entry` under the current settings: (emails, bytes per email).
    fn split(&self, entry: &Entry, to: &[Mailbox]) -> Result<(u32, u64), EmailError> {
        let per = self.per_email(&entry.name, to)?;
        let parts = entry.size.div_ceil(per).max(1);
        if parts > u64::from(MAX_PARTS) {
            return Err(EmailError::TooLarge {
                size: entry.size,
                max: per * u64::from(MAX_PARTS),
                parts: MAX_PARTS,
            });
        }
        Ok((parts as u32, entry.size.div_ceil(parts)))
    }

    fn deliver(&mut self, smtp: &smtp::Smtp, entry: &mut Entry) -> Result<Sent, smtp::Failure> {
        let from = self.sender()?;
        let to = entry
            .to
            .iter()
            .map(|a| mime::parse_address(a))
            .collect::<Result<Vec<_>, _>>()?;
        let (parts, chunk) = self.split(entry, &to)?;
        if entry.chunk != chunk {
            // Settings changed since the first attempt: send every part again, split anew
            // (the receiver puts parts together by byte offset, so mixed splits still work).
            entry.chunk = chunk;
            entry.sent.clear();
            self.state.save_entry(entry)?;
        }
        let path = self.state.entry_bundle(entry);
        let mut file = File::open(&path).map_err(|e| EmailError::io("cannot open", &path, e))?;
        let max = self.config.max_message_bytes();
        let mut email_bytes = 0;
        for part in 1..=parts {
            if entry.sent.contains(&part) {
                continue;
            }
            let offset = u64::from(part - 1) * chunk;
            let len = chunk.min(entry.size - offset);
            let mut data = vec![0u8; len as usize];
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.read_exact(&mut data))
                .map_err(|e| EmailError::io("cannot read", &path, e))?;
            let spec = PartSpec {
                from: &from,
                to: &to,
                tag: &self.marks.tag,
                name: &entry.name,
                size: entry.size,
                digest: &entry.digest,
                part,
                parts,
                offset,
            };
            let email = mime::build_email(&spec, &data)?;
            if email.len() as u64 > max {
                return Err(EmailError::Setting {
                    key: "max_message_bytes",
                    problem: format!(
                        "an email came out at {} bytes, over the {max} allowed; raise it a little",
                        email.len()
                    ),
                }
                .into());
            }
            self.rt.block_on(smtp.send(&from, &to, &email))?;
            email_bytes += email.len() as u64;
            entry.sent.insert(part);
            self.state.save_entry(entry)?;
        }
        Ok(Sent {
            name: entry.name.clone(),
            len: entry.size,
            emails: parts,
            email_bytes,
            to: entry.to.clone(),
        })
    }

    /// Sends what waits in the outbox: with [`FlushMode::Due`] only entries whose back-off
    /// has expired, with [`FlushMode::All`] everything. Stops early when the server is
    /// unreachable (the rest stays for the next run). Fails only when the settings cannot
    /// work (no `smtp_url`, say); send failures are reported in [`FlushReport::failed`].
    pub fn flush_outbox(&mut self, mode: FlushMode) -> Result<FlushReport, EmailError> {
        let mut report = FlushReport::default();
        let entries = self.state.entries()?;
        if entries.is_empty() {
            return Ok(report);
        }
        let smtp = smtp::Smtp::new(&self.config)?;
        let now = store::now();
        let mut server_down = false;
        for mut e in entries {
            if server_down || (mode == FlushMode::Due && e.next_try > now) {
                report.waiting.push(self.queued(&e));
                continue;
            }
            match self.attempt(&smtp, &mut e) {
                Ok(sent) => report.sent.push(sent),
                Err(f) => {
                    // Connection-level failures hit every entry alike: stop here.
                    server_down = f.server_down;
                    report.failed.push(self.queued(&e));
                }
            }
        }
        Ok(report)
    }

    fn queued(&self, e: &Entry) -> Queued {
        let parts = if e.chunk == 0 {
            0
        } else {
            e.size.div_ceil(e.chunk).max(1) as u32
        };
        Queued {
            id: e.id.clone(),
            name: e.name.clone(),
            to: e.to.clone(),
            len: e.size,
            queued_at: to_system(e.queued_at),
            attempts: e.attempts,
            next_try: to_system(e.next_try),
            last_error: e.last_error.clone(),
            parts_sent: e.sent.len() as u32,
            parts,
        }
    }

    /// What waits in the outbox, oldest first (for `ferry status`).
    pub fn outbox(&self) -> Result<Vec<Queued>, EmailError> {
        Ok(self
            .state
            .entries()?
            .iter()
            .map(|e| self.queued(e))
            .collect())
    }

    // ---- receiving -------------------------------------------------------------------------

    fn inbox(&mut self) -> Result<&mut Inbox, EmailError> {
        if self.inbox.is_none() {
            let inbox = if let Some(root) = &self.config.maildir {
                Inbox::Maildir(maildir::Maildir::new(root.clone()))
            } else if let Some(imap) = imap::Imap::new(&self.config)? {
                Inbox::Imap(Box::new(imap))
            } else {
                Inbox::None
            };
            self.inbox = Some(inbox);
        }
        Ok(self.inbox.as_mut().expect("just set"))
    }

    /// The received parts, loaded (incomplete bundles that waited too long dropped) at the
    /// first use.
    fn parts(&mut self) -> Result<&mut Parts, EmailError> {
        if self.parts.is_none() {
            self.parts = Some(Parts::load(self.state.dir(), store::now())?);
        }
        Ok(self.parts.as_mut().expect("just set"))
    }

    /// Reads new mail from the IMAP folder or the Maildir (nothing to read when neither is
    /// set), keeps the ferry parts it carries, and reports what is whole, what still misses
    /// parts, what is broken and what was refused. The work per email does not depend on
    /// how much is already kept.
    pub fn receive(&mut self) -> Result<ReceiveReport, EmailError> {
        let mut report = ReceiveReport::default();
        let mut filing: Filing = Vec::new();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let now = store::now();
        let folder = self.config.imap_folder().to_string();
        self.parts()?;
        self.inbox()?;
        let mut x = Intake {
            parts: self.parts.as_mut().expect("loaded above"),
            state: &self.state,
            marks: &self.marks,
            report: &mut report,
            filing: &mut filing,
            touched: &mut touched,
            dropped_senders: HashSet::new(),
            now,
        };
        let mut saved = Instant::now();
        x.report.expired = std::mem::take(&mut x.parts.expired)
            .into_iter()
            .map(|(name, t)| (name, t == Trust::Member))
            .collect();
        match self.inbox.as_mut().expect("set above") {
            Inbox::None => {}
            Inbox::Imap(imap) => {
                let account = imap.account();
                let key = format!("imap {account} {folder}");
                let mut cursor = x.state.cursor(&key)?;
                let (validity, uids) = self.rt.block_on(imap.new_uids(
                    &folder,
                    cursor.last_uid,
                    cursor.uidvalidity,
                ))?;
                if validity != cursor.uidvalidity {
                    cursor = store::Cursor {
                        uidvalidity: validity,
                        ..Default::default()
                    };
                }
                let glances = self.rt.block_on(imap.glance(&uids))?;
                for g in glances {
                    x.report.emails_seen += 1;
                    if g.candidate {
                        if let Some(raw) = self.rt.block_on(imap.body(g.uid))? {
                            let ex = extract_email(&raw);
                            let source = Source::Imap {
                                account: account.clone(),
                                folder: folder.clone(),
                                uidvalidity: validity,
                                uid: g.uid,
                                subject: ex.subject.clone(),
                            };
                            ingest(&mut x, ex, source)?;
                        }
                    } else {
                        x.report.other_mail += 1;
                    }
                    cursor.last_uid = cursor.last_uid.max(g.uid);
                    // Saved now and then: reading a few emails again after a crash is
                    // harmless (what they carry is kept once).
                    if saved.elapsed() >= CURSOR_EVERY {
                        x.state.set_cursor(&key, &cursor)?;
                        saved = Instant::now();
                    }
                }
                x.state.set_cursor(&key, &cursor)?;
            }
            Inbox::Maildir(md) => {
                let key = md.key();
                let mut cursor = x.state.cursor(&key)?;
                let messages = md.messages()?;
                let present: BTreeSet<String> = messages.iter().map(|(b, _)| b.clone()).collect();
                // Forget messages that are gone, so the list does not grow for ever.
                cursor.seen.retain(|b| present.contains(b));
                for (base, path) in messages {
                    if cursor.seen.contains(&base) {
                        continue;
                    }
                    x.report.emails_seen += 1;
                    let raw = match std::fs::read(&path) {
                        Ok(r) => r,
                        // Moved or deleted by a mail program meanwhile: look again next time.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(EmailError::io("cannot read", path, e)),
                    };
                    let ex = extract_email(&raw);
                    let source = Source::Maildir {
                        root: md.root().to_path_buf(),
                        file: base.clone(),
                        subject: ex.subject.clone(),
                        at: Some(path.clone()),
                    };
                    ingest(&mut x, ex, source)?;
                    cursor.seen.insert(base);
                    if saved.elapsed() >= CURSOR_EVERY {
                        x.state.set_cursor(&key, &cursor)?;
                        saved = Instant::now();
                    }
                }
                x.state.set_cursor(&key, &cursor)?;
            }
        }
        if !filing.is_empty() {
            report.filed = self.file(&filing)?;
        }
        // Pieces refused when their bundle became whole in this run.
        let parts = self.parts()?;
        for g in parts
            .groups()
            .filter(|g| g.complete && touched.contains(&g.id))
        {
            for r in &g.refused {
                report.refused.push(RefusedPiece {
                    location: r.source.describe(),
                    reason: r.reason.clone(),
                });
            }
        }
        report.complete = self.received()?;
        report.incomplete = self.incomplete()?;
        for i in &mut report.incomplete {
            i.progressed = touched.contains(&i.id);
        }
        Ok(report)
    }

    /// Whole bundles waiting for the node, without reading any mail.
    /// Members' first (their marks verified), so junk that must go through the node's gate
    /// one by one does not hold them up; then by id.
    pub fn received(&mut self) -> Result<Vec<MessageInfo>, EmailError> {
        let mut groups: Vec<&Group> = self.parts()?.groups().filter(|g| g.complete).collect();
        groups.sort_by(|a, b| (b.trust, &a.id).cmp(&(a.trust, &b.id)));
        Ok(groups.into_iter().map(info).collect())
    }

    /// Bundles still missing parts (for `ferry status`), members' first.
    pub fn incomplete(&mut self) -> Result<Vec<Incomplete>, EmailError> {
        let mut out: Vec<Incomplete> = self
            .parts()?
            .groups()
            .filter(|g| !g.complete)
            .map(incomplete)
            .collect();
        out.sort_by(|a, b| (b.member, a.first_seen).cmp(&(a.member, b.first_seen)));
        Ok(out)
    }

    /// Broken attachments found and not yet dismissed, oldest first.
    pub fn problems(&self) -> Result<Vec<Problem>, EmailError> {
        Ok(self
            .state
            .problems()?
            .into_iter()
            .map(|(r, data)| Problem {
                id: r.id,
                location: r.location,
                file_name: r.file_name,
                reason: r.reason,
                data,
                found_at: to_system(r.found_at),
            })
            .collect())
    }

    /// Forgets a problem (once the node has quarantined it). The email itself is not
    /// touched. Returns false when there is no such problem.
    pub fn dismiss_problem(&mut self, id: &str) -> Result<bool, EmailError> {
        self.state.remove_problem(id)
    }

    /// Takes in a saved file: a `.eml` email, a saved part attachment, or a bare bundle
    /// file. Parts are kept with those received by email; whole bundles are then listed
    /// and opened like received ones, and [`Disposition::Processed`] leaves the file alone.
    pub fn import_file(&mut self, path: &Path) -> Result<ImportReport, EmailError> {
        let bytes = std::fs::read(path).map_err(|e| EmailError::io("cannot read", path, e))?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ex = extract_file(&bytes, &file_name);
        let source = Source::File {
            path: path.to_path_buf(),
        };
        let now = store::now();
        let mut report = ImportReport::default();
        if ex.excess > 0 {
            report.refused.push(too_many(&ex));
            return Ok(report);
        }
        self.parts()?;
        let parts = self.parts.as_mut().expect("loaded above");
        for d in ex.damaged {
            if self.marks.trust_of_damaged(&d).is_some() {
                report.damaged.push(d);
            } else {
                report.other_dataset += 1;
            }
        }
        let mut touched = BTreeSet::new();
        for piece in ex.pieces {
            let claim = piece.claim();
            let Some(trust) = self.marks.trust_of(&piece, &claim) else {
                report.other_dataset += 1;
                continue;
            };
            match parts.add(&piece, &claim, trust, &source, now)? {
                Added::Late(Fate::Processed) => report.already_processed += 1,
                Added::Late(Fate::Refused) => report.already_refused.push(claim.digest.clone()),
                Added::Refused(why) => report.refused.push(why),
                Added::Dropped(_) => report.dropped += 1,
                Added::Waiting | Added::Complete => {
                    touched.insert(reassembly::gid_of(&claim.digest, claim.size));
                }
            }
        }
        for g in parts.groups().filter(|g| touched.contains(&g.gid)) {
            if g.complete {
                report.complete.push(info(g));
            } else {
                report.incomplete.push(incomplete(g));
            }
        }
        Ok(report)
    }

    /// Moves the emails of `filing` that this transport can reach to the processed folder
    /// (or, those marked so, to the refused folder). Returns how many were moved.
    fn file(&mut self, filing: &Filing) -> Result<usize, EmailError> {
        let (refused, processed): (Vec<_>, Vec<_>) = filing.iter().partition(|(_, r)| *r);
        let refused: Vec<Source> = refused.into_iter().map(|(s, _)| s.clone()).collect();
        let processed: Vec<Source> = processed.into_iter().map(|(s, _)| s.clone()).collect();
        let to_processed = self.config.processed_folder().to_string();
        let to_refused = self.config.refused_folder().to_string();
        Ok(self.file_away(&processed, &to_processed)? + self.file_away(&refused, &to_refused)?)
    }

    /// Moves the emails of `sources` that this transport can reach to `folder`. Returns how
    /// many were moved.
    fn file_away(&mut self, sources: &[Source], folder: &str) -> Result<usize, EmailError> {
        if sources.is_empty() {
            return Ok(0);
        }
        self.inbox()?;
        let mut moved = 0;
        match self.inbox.as_mut().expect("set above") {
            Inbox::None => {}
            Inbox::Imap(imap) => {
                let account = imap.account();
                let mut by_folder: BTreeMap<(String, u32), Vec<u32>> = BTreeMap::new();
                for s in sources {
                    if let Source::Imap {
                        account: a,
                        folder,
                        uidvalidity,
                        uid,
                        ..
                    } = s
                    {
                        if *a == account {
                            by_folder
                                .entry((folder.clone(), *uidvalidity))
                                .or_default()
                                .push(*uid);
                        }
                    }
                }
                if !by_folder.is_empty() {
                    let dest = self.rt.block_on(imap.ensure_folder(folder))?;
                    for ((from, validity), uids) in by_folder {
                        moved += self
                            .rt
                            .block_on(imap.move_messages(&from, validity, &uids, &dest))?;
                    }
                }
            }
            Inbox::Maildir(md) => {
                let files: Vec<(String, Option<PathBuf>)> = sources
                    .iter()
                    .filter_map(|s| match s {
                        Source::Maildir { root, file, at, .. } if root == md.root() => {
                            Some((file.clone(), at.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                if !files.is_empty() {
                    let dest = md.ensure_folder(folder)?;
                    moved += md.move_messages(&files, &dest)?;
                }
            }
        }
        Ok(moved)
    }

    fn group(&mut self, id: &MessageId) -> Result<Group, EmailError> {
        self.parts()?
            .by_id(&id.0)
            .filter(|g| g.complete)
            .cloned()
            .ok_or_else(|| EmailError::NotFound(id.clone()))
    }

    /// Files a bundle away: for [`Disposition::Processed`] (and `Obsolete`, which for an
    /// inbox means the same) every email that carried a part of it is moved to the
    /// processed folder (emails whose pieces claimed it but do not match it, to the refused
    /// folder), and the bundle is forgotten (late copies are filed on arrival). For
    /// [`Disposition::Retry`] nothing moves and it stays listed; [`Disposition::Rejected`]
    /// is [`EmailTransport::refuse`].
    pub fn settle_bundle(
        &mut self,
        id: &MessageId,
        disposition: &Disposition,
    ) -> Result<(), EmailError> {
        match disposition {
            Disposition::Retry { .. } => {
                self.group(id)?;
                Ok(())
            }
            Disposition::Rejected { .. } => self.refuse(id),
            Disposition::Processed | Disposition::Obsolete => {
                let g = self.group(id)?;
                let mut filing: Filing = g.sources.iter().map(|s| (s.clone(), false)).collect();
                filing.extend(g.refused.iter().map(|r| (r.source.clone(), true)));
                self.file(&filing)?;
                self.parts()?.settle(&id.0, Fate::Processed, store::now())
            }
        }
    }

    /// Files a bundle the node refused: every email that carried a piece of it goes to the
    /// refused folder (created if missing; nothing is deleted), the bundle is no longer
    /// listed, and later copies of it are filed there on arrival, never offered again.
    pub fn refuse(&mut self, id: &MessageId) -> Result<(), EmailError> {
        let g = self.group(id)?;
        let filing: Filing = g.all_sources().into_iter().map(|s| (s, true)).collect();
        self.file(&filing)?;
        self.parts()?.settle(&id.0, Fate::Refused, store::now())
    }
}

/// How often the read position in a mailbox is saved while reading (and once at the end):
/// after a crash, at most this much reading is done again, which is harmless.
const CURSOR_EVERY: Duration = Duration::from_secs(1);

impl DatasetMarks {
    /// How far a piece that claims `claim` can be trusted to be this dataset's: made by a
    /// member (its mark verifies), unverified (the dataset id of an earlier ferry, or a
    /// whole bundle attached by hand, with no mark), or `None`: not this dataset's (another
    /// dataset's id, a mark that does not verify, a part with no mark at all).
    fn trust_of(&self, piece: &Piece, claim: &Claim) -> Option<Trust> {
        self.trust(
            piece.tag.as_deref(),
            piece.dataset.as_deref(),
            Some(claim),
            piece.is_whole(),
        )
    }

    /// [`DatasetMarks::trust_of`] for a broken attachment: its mark is checked when what it
    /// claimed could be read; one that cannot be checked counts as unverified.
    fn trust_of_damaged(&self, d: &Damaged) -> Option<Trust> {
        self.trust(
            d.tag.as_deref(),
            d.dataset.as_deref(),
            d.claim.as_ref(),
            true,
        )
    }

    fn trust(
        &self,
        tag: Option<&str>,
        dataset: Option<&str>,
        claim: Option<&Claim>,
        whole: bool,
    ) -> Option<Trust> {
        if let Some(t) = tag {
            return match claim {
                Some(c) if self.tag.verifies(c, t) => Some(Trust::Member),
                Some(_) => None,
                None => Some(Trust::Unverified),
            };
        }
        if let Some(d) = dataset {
            return d
                .eq_ignore_ascii_case(&self.legacy_id)
                .then_some(Trust::Unverified);
        }
        whole.then_some(Trust::Unverified)
    }
}

impl Drop for EmailTransport {
    fn drop(&mut self) {
        if let Some(Inbox::Imap(imap)) = self.inbox.as_mut() {
            self.rt.block_on(imap.logout());
        }
    }
}

fn info(g: &Group) -> MessageInfo {
    MessageInfo {
        id: MessageId(g.id.clone()),
        len: Some(g.size),
        location: g.location(),
    }
}

fn incomplete(g: &Group) -> Incomplete {
    Incomplete {
        id: g.id.clone(),
        name: g.name.clone(),
        have: g.have(),
        len: g.size,
        parts_have: g.parts_have(),
        parts: g.parts,
        emails: g.all_sources().len(),
        first_seen: to_system(g.first_seen),
        expires: to_system(g.first_seen + reassembly::quota(g.trust).expiry_secs),
        member: g.trust == Trust::Member,
        sender: g.sender.clone(),
        progressed: false,
    }
}

fn too_many(ex: &Extracted) -> String {
    if ex.pieces.is_empty() && ex.damaged.is_empty() && ex.excess > mime::MAX_MIME_PARTS {
        return format!(
            "it has {} MIME parts and claims to carry ferry data; a ferry email has two, so it was not read",
            ex.excess
        );
    }
    format!(
        "it carries {} ferry attachments; a ferry email carries one, so none of them was read",
        ex.pieces.len() + ex.damaged.len() + ex.excess
    )
}

/// What one run of [`EmailTransport::receive`] works with.
struct Intake<'a> {
    parts: &'a mut Parts,
    state: &'a State,
    marks: &'a DatasetMarks,
    report: &'a mut ReceiveReport,
    filing: &'a mut Filing,
    /// Ids of bundles that received a piece.
    touched: &'a mut BTreeSet<String>,
    /// Senders of dropped pieces.
    dropped_senders: HashSet<String>,
    now: u64,
}

impl Intake<'_> {
    /// Counts a piece of `sender` that was not kept (or no longer is).
    fn dropped(&mut self, sender: String) {
        self.report.dropped += 1;
        if self.report.dropped_from.len() < 20 {
            self.report.dropped_from.insert(sender.clone());
        }
        self.dropped_senders.insert(sender);
        self.report.dropped_senders = self.dropped_senders.len();
    }
}

/// Keeps the pieces of one email that belong to this dataset; reports broken and refused
/// ones, and notes where the email goes when nothing of it waits.
fn ingest(x: &mut Intake<'_>, ex: Extracted, source: Source) -> Result<(), EmailError> {
    if !ex.is_ferry() {
        x.report.other_mail += 1;
        return Ok(());
    }
    if ex.excess > 0 {
        // Junk, or an odd forward: refused whole, without reading the attachments.
        let d = Damaged {
            file_name: None,
            dataset: None,
            tag: None,
            claim: None,
            reason: too_many(&ex),
            data: Vec::new(),
        };
        x.report.problems.push(problem(x.state, &source, &d)?);
        return Ok(());
    }
    let (mut ours, mut foreign, mut waits) = (false, false, false);
    let (mut to_refused, mut to_processed) = (false, false);
    for piece in &ex.pieces {
        let claim = piece.claim();
        let Some(trust) = x.marks.trust_of(piece, &claim) else {
            foreign = true;
            continue;
        };
        ours = true;
        match x.parts.add(piece, &claim, trust, &source, x.now)? {
            Added::Waiting | Added::Complete => {
                waits = true;
                let gid = reassembly::gid_of(&claim.digest, claim.size);
                if let Some(id) = x.parts.id_of(&gid) {
                    x.touched.insert(id.to_string());
                }
            }
            // A copy of a bundle applied before: filed with it when it is the same bytes
            // (whole, or a part a member marked); an unmarked part may be anyone's, so its
            // email is left where it is.
            Added::Late(Fate::Processed) if piece.is_whole() || trust == Trust::Member => {
                to_processed = true;
            }
            Added::Late(Fate::Processed) => waits = true,
            Added::Late(Fate::Refused) => to_refused = true,
            Added::Refused(reason) => {
                to_refused = true;
                x.report.refused.push(RefusedPiece {
                    location: source.describe(),
                    reason,
                });
            }
            Added::Dropped(why) => {
                x.report.dropped_why.get_or_insert(why);
                x.dropped(piece.sender.clone().unwrap_or_else(|| "?".into()));
            }
        }
    }
    // Pieces of others that made room for these.
    for s in std::mem::take(&mut x.parts.evicted) {
        x.report.dropped_why.get_or_insert_with(|| {
            "the room for such parts was full, so the sender holding the most of it gave way".into()
        });
        x.dropped(s);
    }
    // Broken attachments: one report per email, which stays where it is.
    let damaged: Vec<&Damaged> = ex
        .damaged
        .iter()
        .filter(|d| match x.marks.trust_of_damaged(d) {
            Some(_) => true,
            None => {
                foreign = true;
                false
            }
        })
        .collect();
    if let Some(first) = damaged.first() {
        ours = true;
        waits = true;
        let mut d = (*first).clone();
        if damaged.len() > 1 {
            d.reason = format!(
                "{} (and {} more broken attachments)",
                d.reason,
                damaged.len() - 1
            );
        }
        x.report.problems.push(problem(x.state, &source, &d)?);
    }
    if !ours {
        if foreign {
            x.report.other_dataset += 1;
        } else {
            x.report.other_mail += 1;
        }
        return Ok(());
    }
    if !waits {
        if to_refused {
            x.filing.push((source, true));
        } else if to_processed {
            x.filing.push((source, false));
        }
    }
    Ok(())
}

fn problem(state: &State, source: &Source, d: &Damaged) -> Result<Problem, EmailError> {
    let r = state.add_problem(source.describe(), d)?;
    Ok(Problem {
        id: r.id,
        location: r.location,
        file_name: r.file_name,
        reason: r.reason,
        data: d.data.clone(),
        found_at: to_system(r.found_at),
    })
}

impl EmailTransport {
    /// What [`Transport::send`] handed to the server since the last call (emails, bytes,
    /// recipients of each bundle), oldest first.
    pub fn take_sent(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.sent)
    }
}

impl Transport for EmailTransport {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "email",
            max_message_bytes: Some(self.max_bundle),
            direction: Direction::OneWay,
            typical_latency: Duration::from_secs(6 * 3600),
            trusted_carrier: false,
            shared_medium: false,
        }
    }

    /// [`EmailTransport::send_bundle`]; a queued bundle is an error (it was not sent), whose
    /// source is the [`EmailError::Queued`].
    fn send(
        &mut self,
        name: &str,
        body: &mut dyn Read,
        len: u64,
    ) -> Result<MessageInfo, TransportError> {
        let sent = self.send_bundle(name, body, len)?;
        let info = MessageInfo {
            id: MessageId(format!("{}{}", sent.name, mime::BUNDLE_SUFFIX)),
            len: Some(len),
            location: format!("{} email(s) to {}", sent.emails, sent.to.join(", ")),
        };
        self.sent.push(sent);
        Ok(info)
    }

    /// [`EmailTransport::receive`], then the whole bundles.
    fn list(&mut self) -> Result<Vec<MessageInfo>, TransportError> {
        Ok(self.receive()?.complete)
    }

    fn open(&mut self, id: &MessageId) -> Result<Box<dyn Read + '_>, TransportError> {
        let g = self.group(id)?;
        let path = self.parts()?.bundle_path(&g);
        let f = File::open(&path).map_err(|e| EmailError::io("cannot open", &path, e))?;
        Ok(Box::new(std::io::BufReader::with_capacity(64 * 1024, f)))
    }

    fn settle(&mut self, id: &MessageId, disposition: &Disposition) -> Result<(), TransportError> {
        Ok(self.settle_bundle(id, disposition)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks() -> DatasetMarks {
        DatasetMarks {
            tag: DatasetTag::new([3; 32]),
            legacy_id: "00112233445566778899aabbccddeeff".into(),
        }
    }

    #[test]
    #[allow(clippy::print_stderr)]
    fn emails_at_the_default_size_carry_about_73_percent_bundle_and_stay_within_it() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EmailConfig {
            from: Some("clinic-a@example.test".into()),
            ..Default::default()
        };
        let mut t = EmailTransport::new(cfg, marks(), dir.path()).unwrap();
        t.set_recipients(&["hq@example.test", "clinic-b@example.test"])
            .unwrap();
        let name = "a".repeat(64);
        let per = t.per_email(&name, &t.to).unwrap();
        eprintln!(
            "measured: default max_message_bytes {} carries {per} bundle bytes per email; largest bundle {}",
            DEFAULT_MAX_MESSAGE_BYTES,
            t.max_bundle_bytes()
        );
        assert!((7_200_000..7_310_000).contains(&per), "{per}");
        assert!(t.max_bundle_bytes() <= per * u64::from(MAX_PARTS));
        // A part as full as allowed, with the longest numbers, stays within the limit.
        let digest = "f".repeat(64);
        let spec = PartSpec {
            from: t.from.as_ref().unwrap(),
            to: &t.to,
            tag: &t.marks.tag,
            name: &name,
            size: 700_000_000,
            digest: &digest,
            part: 99,
            parts: 100,
            offset: 693_000_000,
        };
        let email = mime::build_email(&spec, &vec![0xA5; per as usize]).unwrap();
        assert!(email.len() as u64 <= DEFAULT_MAX_MESSAGE_BYTES - TRANSIT_MARGIN);
        assert!(email.len() as u64 > DEFAULT_MAX_MESSAGE_BYTES - TRANSIT_MARGIN - 2048);
    }

    #[test]
    fn bad_settings_are_refused_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let small = EmailConfig {
            max_message_bytes: Some(1000),
            ..Default::default()
        };
        let e = EmailTransport::new(small, marks(), dir.path()).unwrap_err();
        assert!(e.to_string().contains("max_message_bytes"), "{e}");
        let bad = DatasetMarks {
            legacy_id: "not hex".into(),
            ..marks()
        };
        let e = EmailTransport::new(EmailConfig::default(), bad, dir.path()).unwrap_err();
        assert!(e.to_string().contains("dataset"), "{e}");

        let mut t = EmailTransport::new(EmailConfig::default(), marks(), dir.path()).unwrap();
        let e = t.send_bundle("b", &mut &b"x"[..], 1).unwrap_err();
        assert!(e.to_string().contains("`from`"), "{e}");
        let cfg = EmailConfig {
            from: Some("a@example.test".into()),
            smtp_url: Some("smtp://127.0.0.1:1".into()),
            ..Default::default()
        };
        let mut t = EmailTransport::new(cfg, marks(), dir.path()).unwrap();
        let e = t.send_bundle("b", &mut &b"x"[..], 1).unwrap_err();
        assert!(matches!(e, EmailError::NoRecipients), "{e}");
        assert!(t.outbox().unwrap().is_empty(), "nothing was queued");
        assert!(t.set_recipients(&["not an address"]).is_err());
    }
}
