//! Sending: a message cut into SMS under a fresh tag, recorded in the sent ledger, every
//! part queued durably (`queue/PHONE/P-STAMP-TAG-INDEX.txt|.bin`), then sent, most urgent
//! and oldest first, as far as the budgets allow.

use super::SmsTransport;
use super::sent::SentMeta;
use crate::error::SmsError;
use crate::frame;
use crate::gateway::SmsBody;
use crate::phone::Phone;
use crate::store::unique_stamp;
use crate::text;
use std::collections::BTreeMap;
use std::path::PathBuf;

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

/// What [`SmsTransport::flush_queue`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// SMS handed to the gateway.
    pub sent: usize,
    /// SMS still waiting (for a later day's budget).
    pub still_queued: usize,
}

/// A queued SMS, from its file name `P-STAMP-TAG-INDEX.EXT`.
pub(super) struct Queued {
    path: PathBuf,
    priority: u8,
    pub(super) tag: Option<u16>,
    pub(super) index: Option<u16>,
    binary: bool,
}

pub(crate) const PRIO_CONTROL: u8 = 0;

pub(super) const PRIO_REPAIR: u8 = 1;

const PRIO_DATA: u8 = 2;

pub(crate) fn encode_body(frame: Vec<u8>, binary: bool) -> SmsBody {
    if binary {
        SmsBody::Binary(frame)
    } else {
        SmsBody::Text(text::encode(&frame))
    }
}

impl SmsTransport {
    pub(super) fn queue(&self, phone: &Phone) -> Result<Vec<Queued>, SmsError> {
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
}
