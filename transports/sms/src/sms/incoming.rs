//! Taking one incoming SMS: who sent it, whether it is ferry's (a body decoded into a
//! frame), and what became of it ([`Accepted`]); also Gammu's inbox folder. What a part
//! then does is `recv.rs`'s (reassembly), a repair request `sent.rs`'s.

use super::SmsTransport;
use super::report::Report;
use crate::error::SmsError;
use crate::frame::{self, Frame};
use crate::gateway::SmsBody;
use crate::phone::Phone;
use crate::text;
use ferry_transport::MessageInfo;
use std::path::PathBuf;

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
    ///
    /// [`Transport::list`]: ferry_transport::Transport::list
    Completed {
        /// The sender.
        from: Phone,
        /// The message's tag.
        tag: u16,
        /// The message, as [`Transport::list`] shows it.
        ///
        /// [`Transport::list`]: ferry_transport::Transport::list
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

/// The longest text a gateway may hand over for one SMS (a concatenated SMS of 7 parts in
/// UCS-2, generously); longer is not ferry's and is not decoded.
const MAX_SMS_CHARS: usize = 1200;

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

impl SmsTransport {
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
}
