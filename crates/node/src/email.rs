//! Syncing by email: bundles as attachments over SMTP, received over IMAP or from a Maildir.
//!
//! Settings come from `[email]` in `ferry.toml`, overridden by flags. What to send is
//! planned for the members who will read it (those with a published email address, or the
//! `--to` addresses), exactly as for a USB stick.
//!
//! Every bundle that arrives, whole or put together from parts, goes through
//! [`Node::import_message`] (the engine's gate); what the gate refuses is filed in the
//! refused folder and never offered again. The transport recognises this dataset's emails
//! by a mark only members can make, from [`Node::email_tag`]: no email names the dataset.

use crate::NodeError;
use crate::exchange::{FileOutcome, FileResult, ImportReport};
use crate::forward::{Forwarded, Listing, Reader, Route};
use crate::node::Node;
use crate::progress::Progress;
use ferry_model::MemberId;
use ferry_sync::Storage;
use ferry_transport::TransportError;
use ferry_transport_email::{
    DatasetMarks, DatasetTag, EmailConfig, EmailError, EmailTransport, FlushMode,
};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// How long what was emailed to a member counts as on its way without its receipt: mail
/// waits in the mailbox of a laptop that is away, so it is not sent again before this.
const EMAIL_ASSUME_DELIVERED_MS: u64 = 7 * 24 * 3_600_000;

/// One bundle handed to the mail server.
#[derive(Clone, Debug, Serialize)]
pub struct EmailSent {
    /// The bundle's content name.
    pub name: String,
    /// Bundle bytes.
    pub bytes: u64,
    /// Emails it took.
    pub emails: u32,
    /// Bytes of those emails, as handed to SMTP.
    pub email_bytes: u64,
    /// Recipients.
    pub to: Vec<String>,
}

/// What `send email` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EmailSendReport {
    /// Earlier bundles from the outbox that went out now.
    pub flushed: Vec<EmailSent>,
    /// New bundles sent (the changes, and a snapshot if a member needed one).
    pub sent: Vec<EmailSent>,
    /// Bundles still waiting in the outbox: (name, attempts, last error).
    pub queued: Vec<(String, u32, Option<String>)>,
    /// Whether there was nothing new to send.
    pub nothing_new: bool,
    /// Who it was for.
    pub recipients: Vec<String>,
}

/// A bundle arriving by email whose other parts have not arrived yet.
#[derive(Clone, Debug, Serialize)]
pub struct EmailWaiting {
    /// Its id in the email transport (it is listed under this id once whole).
    pub id: String,
    /// The bundle's content name.
    pub name: String,
    /// Bytes received, of `len`.
    pub have: u64,
    /// Bytes in the whole bundle.
    pub len: u64,
    /// Parts received, of `parts`.
    pub parts_have: u32,
    /// Parts it was split into.
    pub parts: u32,
    /// Whether a member made its parts (their marks verified). If not, anyone may have; such
    /// parts are kept for 7 days, members' for 30.
    pub member: bool,
    /// The address its first part came from, as the email says (anyone can write any).
    pub sender: String,
    /// Whether a part of it arrived in this run.
    pub progressed: bool,
}

/// What `receive email` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EmailReceiveReport {
    /// The bundles applied (or refused), one entry each.
    pub import: ImportReport,
    /// Bundles still missing parts, members' first.
    pub incomplete: Vec<EmailWaiting>,
    /// Emails that are not ferry's (left untouched).
    pub other_mail: usize,
    /// Ferry emails of another dataset, or whose mark does not verify (left untouched).
    pub other_dataset: usize,
    /// Damaged attachments quarantined.
    pub damaged: Vec<FileOutcome>,
    /// Parts refused before any bundle was made of them (they contradict a member's part,
    /// or the bundle the other parts make up); their emails went to the refused folder.
    pub refused_parts: Vec<FileOutcome>,
    /// Parts not kept because they were over a limit (per sender or in all).
    pub dropped: usize,
    /// Their senders, as the emails say (at most 20).
    pub dropped_from: Vec<String>,
    /// How many different senders they came from.
    pub dropped_senders: usize,
    /// Why the first of them was dropped.
    pub dropped_why: Option<String>,
    /// Incomplete bundles given up because they waited too long: (name, made by a member).
    pub expired: Vec<(String, bool)>,
    /// Where refused emails go (`refused_folder`).
    pub refused_folder: String,
}

impl EmailReceiveReport {
    /// Everything refused in this run: bundles, damaged attachments, parts.
    pub fn refused(&self) -> usize {
        self.import.rejected() + self.damaged.len() + self.refused_parts.len()
    }
}

/// What a saved email or part attachment held (`ferry import FILE.eml`).
pub(crate) struct SavedFile {
    /// The bundles it completed, its damaged attachments, and bundles still missing parts.
    pub(crate) report: EmailReceiveReport,
    /// Parts it held of bundles that still miss others.
    pub(crate) parts_waiting: usize,
    /// Pieces taken in before (this file or another copy of them was imported).
    pub(crate) seen_before: usize,
    /// Pieces of other datasets, ignored.
    pub(crate) other_dataset: usize,
}

/// The email transport's own error back from the [`TransportError`] its `send` returns
/// (it keeps it inside), so a queued send and the transport's words reach the user as
/// before.
fn email_error(e: TransportError) -> NodeError {
    match e {
        TransportError::Io { what, path, source } => {
            if !source
                .get_ref()
                .is_some_and(|inner| inner.is::<EmailError>())
            {
                return NodeError::Transport(TransportError::Io { what, path, source });
            }
            let source = match source.into_inner().map(|b| b.downcast::<EmailError>()) {
                Some(Ok(inner)) => return NodeError::Email(*inner),
                Some(Err(other)) => std::io::Error::other(other),
                None => std::io::Error::other("email transport"),
            };
            NodeError::Transport(TransportError::Io { what, path, source })
        }
        other => NodeError::Transport(other),
    }
}

fn sent(s: ferry_transport_email::Sent) -> EmailSent {
    EmailSent {
        name: s.name,
        bytes: s.len,
        emails: s.emails,
        email_bytes: s.email_bytes,
        to: s.to,
    }
}

/// This transport's name in the ledger of sends ([`crate::ledger`]).
const LEDGER: &str = "email";

impl Node {
    /// The secret by which this dataset's emails are recognised: BLAKE3 keyed with the
    /// dataset key over a fixed context. Every member computes the same tag; nobody can
    /// without the dataset key, and the tag does not give the key back. The email transport
    /// gets this tag, never the key.
    pub fn email_tag(&self) -> DatasetTag {
        DatasetTag::new(
            *blake3::keyed_hash(
                &self.identity().dataset_key.0,
                b"ferry email recognition tag, version 1",
            )
            .as_bytes(),
        )
    }

    /// The email transport, from `[email]` in `ferry.toml` overridden by `flags`.
    pub fn email_transport(&self, flags: EmailConfig) -> Result<EmailTransport, NodeError> {
        Ok(EmailTransport::new(
            self.email_config(flags)?,
            DatasetMarks {
                tag: self.email_tag(),
                legacy_id: self.identity().dataset.to_hex(),
            },
            self.home().transport_state("email"),
        )?)
    }

    /// The email settings: `[email]` in `ferry.toml` overridden by `flags`.
    fn email_config(&self, flags: EmailConfig) -> Result<EmailConfig, NodeError> {
        let file: EmailConfig = match self.config_section("email")? {
            Some(table) => table.try_into().map_err(|e: toml::de::Error| {
                NodeError::Settings(format!(
                    "[email] in {}: {}",
                    self.home().config().display(),
                    e.message()
                ))
            })?,
            None => EmailConfig::default(),
        };
        Ok(file.overridden_by(flags))
    }

    /// Why `ferry receive email` has no mailbox to read with these settings (neither
    /// `imap_url` nor `maildir`, in `[email]` of ferry.toml or as flags), in a sentence that
    /// says how to set one; `None` when there is a mailbox.
    pub fn email_receive_impossible(
        &self,
        flags: EmailConfig,
    ) -> Result<Option<String>, NodeError> {
        let config = self.email_config(flags)?;
        if config.imap_url.is_some() || config.maildir.is_some() {
            return Ok(None);
        }
        let file = self.home().config();
        Ok(Some(match self.config_section("email")? {
            Some(_) => format!(
                "[email] in {} names no mailbox to read: add imap_url = \"imaps://mail.example.org:993\" (or maildir = \"/home/USER/Maildir\") there, or give --imap-url or --maildir",
                file.display()
            ),
            None => format!(
                "no email settings: {} has no [email] section; write one with from, smtp_url, smtp_password_env and imap_url (see \"By email\" in the README), or give --imap-url or --maildir",
                file.display()
            ),
        }))
    }

    /// Warnings about the email settings (a password stored in ferry.toml, a server reached
    /// without TLS over the network), for the user to read before anything is sent.
    pub fn email_warnings(&self, flags: EmailConfig) -> Result<Vec<String>, NodeError> {
        Ok(self.email_config(flags)?.warnings())
    }

    /// Sends what the recipients still need: first anything left in the outbox, then one
    /// bundle (and a snapshot when a recipient joined after history was compacted). A
    /// bundle the server does not take stays queued and the error says so.
    pub fn send_email(
        &mut self,
        flags: EmailConfig,
        to: &[String],
        progress: &dyn Progress,
    ) -> Result<EmailSendReport, NodeError> {
        let mut transport = self.email_transport(flags)?;
        self.train_dictionary()?;
        let mut report = EmailSendReport::default();
        // Recipients: the given addresses, else every other member with one.
        let me = self.identity().me;
        let contacts = self.contacts()?;
        let by_address: Vec<(MemberId, String)> = contacts
            .iter()
            .filter(|(m, _)| **m != me)
            .filter_map(|(m, c)| c.email.clone().map(|e| (*m, e)))
            .collect();
        let recipients: Vec<String> = if to.is_empty() {
            by_address.iter().map(|(_, e)| e.clone()).collect()
        } else {
            to.to_vec()
        };
        if recipients.is_empty() {
            return Err(NodeError::NoRecipient(
                "no member has published an email address yet (`ferry contact set --email` on their laptops); give --to ADDRESS".into(),
            ));
        }
        transport.set_recipients(&recipients)?;
        report.recipients = recipients.clone();
        let flushed = transport.flush_outbox(FlushMode::All)?;
        report.flushed = flushed.sent.into_iter().map(sent).collect();
        // Plan for the members who read these addresses (all members if none is known).
        let mut readers: Vec<MemberId> = by_address
            .iter()
            .filter(|(_, e)| recipients.iter().any(|r| r.eq_ignore_ascii_case(e)))
            .map(|(m, _)| *m)
            .collect();
        if readers.is_empty() {
            readers = self.known_peers()?;
        }
        // What was sent to each reader in the last week and is not confirmed yet is taken
        // as on its way (mail waits in the mailbox of a laptop that is away): a member away
        // for weeks does not make every send carry the same changes again. After a week
        // without its receipt, it is sent again. A snapshot goes only from the admin.
        let route = Route {
            ledger: LEDGER,
            key: "*".into(),
            readers: readers
                .into_iter()
                .map(|m| Reader {
                    member: Some(m),
                    key: m.to_string(),
                })
                .collect(),
            window_ms: EMAIL_ASSUME_DELIVERED_MS,
            snapshots: true,
            dry_run: false,
        };
        let forwarded = self.forward(&mut transport, &route, progress);
        report.sent = transport.take_sent().into_iter().map(sent).collect();
        match forwarded {
            Ok(Forwarded::NothingNew) => report.nothing_new = true,
            Ok(Forwarded::Sent(_) | Forwarded::Planned { .. } | Forwarded::NeedsSnapshot) => {}
            Ok(Forwarded::TooLarge { len, max }) => {
                return Err(EmailError::TooLarge {
                    size: len,
                    max,
                    parts: ferry_transport_email::MAX_PARTS,
                }
                .into());
            }
            Err(NodeError::Transport(e)) => {
                return Err(match email_error(e) {
                    // Kept in the outbox: the caller reports it and exits non-zero.
                    NodeError::Email(e @ EmailError::Queued { .. }) => {
                        report.queued = queued(&transport)?;
                        NodeError::Queued(e.to_string(), report.queued.len())
                    }
                    e => e,
                });
            }
            Err(e) => return Err(e),
        }
        report.queued = queued(&transport)?;
        Ok(report)
    }

    /// Fetches ferry's emails, applies every complete bundle (filing its emails in the
    /// processed folder), quarantines damaged attachments (their emails stay in place), and
    /// reports bundles still missing parts. Other mail is never touched.
    pub fn receive_email(
        &mut self,
        flags: EmailConfig,
        progress: &dyn Progress,
    ) -> Result<EmailReceiveReport, NodeError> {
        let config = self.email_config(flags.clone())?;
        let mut transport = self.email_transport(flags)?;
        let received = transport.receive()?;
        let mut report = EmailReceiveReport {
            other_mail: received.other_mail,
            other_dataset: received.other_dataset,
            refused_parts: received
                .refused
                .into_iter()
                .map(|r| FileOutcome {
                    path: PathBuf::from(r.location),
                    bytes: 0,
                    result: FileResult::Rejected {
                        reason: r.reason,
                        quarantined: None,
                    },
                })
                .collect(),
            dropped: received.dropped,
            dropped_from: received.dropped_from.into_iter().collect(),
            dropped_senders: received.dropped_senders,
            dropped_why: received.dropped_why,
            expired: received.expired,
            refused_folder: config.refused_folder().to_string(),
            ..Default::default()
        };
        self.take_email_bundles(&mut transport, received.complete, &mut report, progress)?;
        let progressed: Vec<String> = received
            .incomplete
            .iter()
            .filter(|i| i.progressed)
            .map(|i| i.id.clone())
            .collect();
        for w in &mut report.incomplete {
            w.progressed = progressed.contains(&w.id);
        }
        Ok(report)
    }

    fn take_email_bundles(
        &mut self,
        transport: &mut EmailTransport,
        complete: Vec<ferry_transport::MessageInfo>,
        report: &mut EmailReceiveReport,
        progress: &dyn Progress,
    ) -> Result<(), NodeError> {
        // Listed once: listing again would fetch the mailbox again. The transport checks each
        // bundle against its digest before offering it, so a refusal offers no other.
        let files = self.take_from(
            transport,
            Listing::Once(complete),
            &mut |_, info| Ok(info.location.clone()),
            &mut |_, _| Ok(()),
            progress,
        )?;
        report.import.files.extend(files);
        for p in transport.problems()? {
            // Named by content; a problem without bytes (an email refused unread) by where
            // it is and why, so each is recorded.
            let name = if p.data.is_empty() {
                blake3::hash(format!("{}\0{}", p.location, p.reason).as_bytes()).to_hex()[..32]
                    .to_string()
            } else {
                blake3::hash(&p.data).to_hex()[..32].to_string()
            };
            let file = self
                .home()
                .root()
                .join("inbox")
                .join(format!("{name}.damaged"));
            std::fs::create_dir_all(file.parent().expect("has a parent"))
                .map_err(|e| NodeError::io("cannot create", &file, e))?;
            std::fs::write(&file, &p.data).map_err(|e| NodeError::io("cannot write", &file, e))?;
            let origin = PathBuf::from(&p.location);
            let quarantined = self.quarantine(&file, &origin, &name, &p.reason)?;
            let _ = std::fs::remove_file(&file);
            transport.dismiss_problem(&p.id)?;
            report.damaged.push(FileOutcome {
                path: origin,
                bytes: p.data.len() as u64,
                result: FileResult::Rejected {
                    reason: p.reason,
                    quarantined,
                },
            });
        }
        report.incomplete = transport
            .incomplete()?
            .into_iter()
            .map(|i| EmailWaiting {
                id: i.id,
                name: i.name,
                have: i.have,
                len: i.len,
                parts_have: i.parts_have,
                parts: i.parts,
                member: i.member,
                sender: i.sender,
                progressed: i.progressed,
            })
            .collect();
        let tx = self.read()?;
        report.import.pending = tx.stored()?.total().saturating_sub(tx.applied()?.total());
        Ok(())
    }

    /// Takes in saved emails (`.eml`) and saved part attachments: whole bundles apply,
    /// parts wait for the rest.
    pub(crate) fn import_saved_email(
        &mut self,
        path: &Path,
        progress: &dyn Progress,
    ) -> Result<SavedFile, NodeError> {
        let mut transport = self.email_transport(EmailConfig::default())?;
        let imported = transport.import_file(path)?;
        let mut report = EmailReceiveReport::default();
        let (parts_waiting, seen_before, other_dataset) = (
            imported.incomplete.len(),
            imported.already_processed,
            imported.other_dataset,
        );
        self.take_email_bundles(&mut transport, imported.complete, &mut report, progress)?;
        // Only the bundles and parts this file held.
        let held: Vec<String> = imported.incomplete.iter().map(|i| i.id.clone()).collect();
        report.incomplete.retain(|w| held.contains(&w.id));
        let mut refusals: Vec<String> = imported.damaged.into_iter().map(|d| d.reason).collect();
        refusals.extend(imported.refused);
        // A bundle refused before (from another copy of it): said so, not refused again.
        for digest in imported.already_refused {
            // A bundle's content name is the start of its BLAKE3 digest.
            let name = &digest[..32.min(digest.len())];
            let result = match self.read()?.quarantined(name)? {
                Some(q) => FileResult::RefusedBefore {
                    reason: q.reason,
                    quarantined: PathBuf::from(q.stored_as),
                },
                None => FileResult::Skipped {
                    reason: "it holds a bundle that was refused before".into(),
                },
            };
            report.import.files.push(FileOutcome {
                path: path.to_path_buf(),
                bytes: 0,
                result,
            });
        }
        for reason in refusals {
            report.damaged.push(FileOutcome {
                path: path.to_path_buf(),
                bytes: 0,
                result: FileResult::Rejected {
                    reason,
                    quarantined: None,
                },
            });
        }
        Ok(SavedFile {
            report,
            parts_waiting,
            seen_before,
            other_dataset,
        })
    }

    /// Bundles waiting in the email outbox, for `status`: (name, attempts, last error).
    pub fn email_outbox(&self) -> Result<Vec<(String, u32, Option<String>)>, NodeError> {
        if !self.home().transport_state("email").exists() {
            return Ok(Vec::new());
        }
        let transport = self.email_transport(EmailConfig::default())?;
        queued(&transport)
    }
}

fn queued(t: &EmailTransport) -> Result<Vec<(String, u32, Option<String>)>, NodeError> {
    Ok(t.outbox()?
        .into_iter()
        .map(|q| (q.name, q.attempts, q.last_error))
        .collect())
}
