//! The [`Transport`] mailbox over assembled messages (`inbox/ID.msg, ID.json`): list, open,
//! settle (processed ones filed in `inbox/processed/`), and who sent each.

use super::SmsTransport;
use crate::error::SmsError;
use crate::phone::Phone;
use ferry_transport::{
    Capabilities, Direction, Disposition, MessageId, MessageInfo, Transport, TransportError,
};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

/// What the mailbox keeps beside each assembled message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MessageMeta {
    pub from: Phone,
    pub tag: u16,
    pub parts: u16,
    pub len: u64,
    pub completed_at: u64,
    /// Which version of each part this assembly used (as the previous version wrote it:
    /// read only, to settle an assembly it offered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<Vec<u8>>,
    /// The part-store candidates this assembly used, one per part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<Vec<u32>>,
}

impl SmsTransport {
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
        let info = MessageInfo {
            id: MessageId(format!("{}-{:05}", to.digits(), r.tag)),
            len: Some(len),
            location: format!(
                "SMS to {to}: {} message(s), {} sent, {} queued",
                r.parts, r.sent_now, r.queued
            ),
        };
        self.sent.push(r);
        Ok(info)
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
    /// at most 256) and its parts are dropped. Retry: left as it is. Obsolete: removed.
    /// Rejected: the node keeps
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
        if matches!(disposition, Disposition::Retry { .. }) {
            // Not taken now: left as it is, offered again.
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
            Disposition::Obsolete | Disposition::Rejected { .. } | Disposition::Retry { .. } => {
                self.store.remove(&msg)?;
                self.store.remove(&meta_path)?;
            }
        }
        self.settle_assembly(meta, disposition, now)?;
        Ok(())
    }
}
