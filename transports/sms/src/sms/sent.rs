//! The ledger of sent messages (`sent/PHONE/TAG.msg, .json`): each message sent is kept
//! for `keep_sent_hours`, so a member's repair request is answered from it, within
//! per-part and per-member limits, or told the message is gone.

use super::SmsTransport;
use super::incoming::Accepted;
use super::outbox::{PRIO_CONTROL, PRIO_REPAIR, encode_body};
use super::report::ReportKind;
use crate::error::SmsError;
use crate::frame::{self, Gone, Layout, Missing};
use crate::phone::Phone;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct SentMeta {
    pub(super) name: String,
    pub(super) at: u64,
    pub(super) len: u64,
    pub(super) binary: bool,
    pub(super) count: usize,
    pub(super) chunk: usize,
    /// Per part sent again: (when last, the day counted, times that day).
    #[serde(default)]
    pub(super) resent: BTreeMap<u16, (u64, u64, u8)>,
}

/// A part is sent again at most this often per UTC day, however often it is asked for.
const RESENDS_PER_PART_PER_DAY: u8 = 3;

/// ... and not again within this many seconds of the last time.
const RESEND_MIN_SECS: u64 = 20;

impl SmsTransport {
    pub(super) fn find_sent(
        &self,
        to: &Phone,
        name: &str,
    ) -> Result<Option<(u16, SentMeta)>, SmsError> {
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
}
