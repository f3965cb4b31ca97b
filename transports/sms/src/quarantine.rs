//! What the transport sets aside or keeps for inspection, always within a size cap and an
//! age limit, and at a cost per SMS that does not grow with what is kept:
//!
//! - `quarantine/refused.jsonl`: one line per SMS that was not taken (not ferry's, or from
//!   an unknown number), its sender and text cut short; appended without `fsync`, and
//!   rotated to `refused.1.jsonl` at 512 KiB (so at most 1 MiB), dropped after 14 days.
//! - `expired/`: parts of members' messages given up, at most 64 files and 8 MiB, 30 days.
//! - `inbox/processed/`: applied messages, at most 256, for `keep_sent_hours`.
//! - `reports/`: at most 256 (the node dismisses them as it shows them).
//!
//! State folders of earlier versions (`recv/`, `done/`, one file per refused SMS in
//! `quarantine/`) are converted or cleared a bounded batch at a time by
//! [`SmsTransport::expire`].

use crate::error::SmsError;
use crate::gateway::SmsBody;
use crate::phone::Phone;
use crate::recv::{Entry, Index, State};
use crate::sms::{Accepted, IncomingSms, Refusal, SmsTransport, cut};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const LOG: &str = "quarantine/refused.jsonl";
const ROTATED: &str = "quarantine/refused.1.jsonl";
/// The log is rotated beyond this size.
const LOG_MAX: u64 = 512 * 1024;
/// What is set aside is dropped after this long.
const SET_ASIDE_SECS: u64 = 14 * 24 * 3600;
const EXPIRED_MAX_FILES: usize = 64;
const EXPIRED_MAX_BYTES: u64 = 8 * 1024 * 1024;
const EXPIRED_SECS: u64 = 30 * 24 * 3600;
const PROCESSED_MAX: usize = 256;
const REPORTS_MAX: usize = 256;
/// Entries of earlier versions' state handled per housekeeping round.
const LEGACY_BATCH: usize = 2000;

/// One SMS set aside.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SetAside {
    at: u64,
    from: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    hex: Option<String>,
    reason: String,
    #[serde(default)]
    unknown: bool,
}

impl SetAside {
    fn sms(&self) -> Option<IncomingSms> {
        let body = match (&self.text, &self.hex) {
            (Some(t), _) => SmsBody::Text(t.clone()),
            (None, Some(h)) => SmsBody::Binary(
                (0..h.len() / 2)
                    .filter_map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok())
                    .collect(),
            ),
            (None, None) => return None,
        };
        Some(IncomingSms {
            from: self.from.clone(),
            to: self.to.clone(),
            body,
        })
    }
}

/// Earlier versions' quarantine file (one per SMS).
#[derive(Deserialize)]
struct LegacyQuarantined {
    from: String,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    hex: Option<String>,
}

/// Earlier versions' per-message metadata in `recv/PHONE/TAG/meta.json`.
#[derive(Deserialize)]
struct LegacyRecv {
    count: u16,
    first_seen: u64,
    last_seen: u64,
}

/// Files (not folders) under `dir` with size and modification time, oldest first.
fn files_by_age(dir: &Path) -> Vec<(PathBuf, u64, u64)> {
    let mut out: Vec<(PathBuf, u64, u64)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    let t = m.modified().ok().map_or(0, crate::store::unix);
                    Some((e.path(), m.len(), t))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|(p, _, t)| (*t, p.clone()));
    out
}

fn remove_any(p: &Path) {
    if p.is_dir() {
        let _ = std::fs::remove_dir_all(p);
    } else {
        let _ = std::fs::remove_file(p);
    }
}

impl SmsTransport {
    /// Keeps `expired/` within its count and size when something was just added to it
    /// (so a flood between two housekeeping rounds cannot grow it either).
    pub(crate) fn cap_expired(&self) {
        let expired = files_by_age(&self.store.path("expired"));
        let mut count = expired.len();
        let mut bytes: u64 = expired.iter().map(|(_, b, _)| b).sum();
        for (p, b, _) in &expired {
            if count <= EXPIRED_MAX_FILES && bytes <= EXPIRED_MAX_BYTES {
                break;
            }
            remove_any(p);
            count -= 1;
            bytes = bytes.saturating_sub(*b);
        }
    }

    /// Keeps `reports/` within its count when a report was just added (names sort by
    /// time, oldest first).
    pub(crate) fn cap_reports(&self) -> Result<(), SmsError> {
        let dir = self.store.path("reports");
        let names = self.store.list(&dir)?;
        for name in names.iter().take(names.len().saturating_sub(REPORTS_MAX)) {
            self.store.remove(&dir.join(name))?;
        }
        Ok(())
    }

    /// Notes an SMS that is not taken in the bounded log; its sender is cut to 64
    /// characters, its text to 480.
    pub(crate) fn set_aside(
        &self,
        sms: &IncomingSms,
        reason: &str,
        unknown: bool,
        now: u64,
    ) -> Result<Refusal, SmsError> {
        let (text, hex) = match &sms.body {
            SmsBody::Text(t) => (Some(cut(t, 480)), None),
            SmsBody::Binary(b) => (
                None,
                Some(b.iter().take(280).map(|x| format!("{x:02x}")).collect()),
            ),
        };
        let entry = SetAside {
            at: now,
            from: cut(&sms.from, 64),
            to: sms.to.as_deref().map(|t| cut(t, 64)),
            text,
            hex,
            reason: cut(reason, 200),
            unknown,
        };
        let log = self.store.path(LOG);
        if self.store.stat(&log).is_some_and(|(len, _)| len > LOG_MAX) {
            self.store.rename(&log, &self.store.path(ROTATED))?;
        }
        self.store.append_line(
            &log,
            &serde_json::to_string(&entry).expect("set-aside entries serialize"),
        )?;
        Ok(Refusal {
            from: entry.from,
            reason: entry.reason,
            unknown_sender: unknown,
            kept_at: log,
        })
    }

    /// Bytes of the log of SMS set aside.
    pub(crate) fn quarantine_bytes(&self) -> u64 {
        [LOG, ROTATED]
            .iter()
            .filter_map(|p| self.store.stat(&self.store.path(p)))
            .map(|(len, _)| len)
            .sum()
    }

    /// Takes again the SMS set aside that can now be taken (for instance after
    /// [`SmsTransport::set_peers`] learnt a member's new number); the others stay.
    pub fn replay_quarantine(&mut self) -> Result<Vec<Accepted>, SmsError> {
        let _l = self.store.lock()?;
        let now = self.now_secs();
        let mut out = Vec::new();
        for rel in [ROTATED, LOG] {
            let path = self.store.path(rel);
            let Some(bytes) = self.store.read(&path)? else {
                continue;
            };
            let mut kept = String::new();
            let mut changed = false;
            for line in String::from_utf8_lossy(&bytes).lines() {
                let entry: Option<SetAside> = serde_json::from_str(line).ok();
                let taken = match entry.as_ref().and_then(SetAside::sms) {
                    Some(sms) => match self.classify(&sms) {
                        Ok((from, frame)) => {
                            out.push(self.apply(&from, frame, now)?);
                            true
                        }
                        Err(_) => false,
                    },
                    None => false,
                };
                if taken {
                    changed = true;
                } else {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
            if changed {
                self.store.write_as(&path, kept.as_bytes(), false)?;
            }
        }
        // Earlier versions kept one file per SMS.
        let dir = self.store.path("quarantine");
        for name in self.store.list(&dir)? {
            if !name.ends_with(".json") {
                continue;
            }
            let path = dir.join(&name);
            let Ok(Some(q)) = self.store.read_json::<LegacyQuarantined>(&path) else {
                continue;
            };
            let entry = SetAside {
                at: now,
                from: q.from,
                to: q.to,
                text: q.text,
                hex: q.hex,
                reason: String::new(),
                unknown: true,
            };
            if let Some(Ok((from, frame))) = entry.sms().map(|s| self.classify(&s)) {
                out.push(self.apply(&from, frame, now)?);
                self.store.remove(&path)?;
            }
        }
        Ok(out)
    }

    /// Keeps what is set aside or kept for inspection within its size and age limits.
    pub(crate) fn prune_kept(&self, now: u64) -> Result<(), SmsError> {
        let old = |t: u64, limit: u64| now >= t.saturating_add(limit);
        for rel in [ROTATED, LOG] {
            let p = self.store.path(rel);
            if self
                .store
                .stat(&p)
                .is_some_and(|(_, t)| old(t, SET_ASIDE_SECS))
            {
                self.store.remove(&p)?;
            }
        }
        // Parts of messages given up.
        let expired = files_by_age(&self.store.path("expired"));
        let mut count = expired.len();
        let mut bytes: u64 = expired.iter().map(|(_, b, _)| b).sum();
        for (p, b, t) in &expired {
            if count > EXPIRED_MAX_FILES || bytes > EXPIRED_MAX_BYTES || old(*t, EXPIRED_SECS) {
                remove_any(p);
                count -= 1;
                bytes = bytes.saturating_sub(*b);
            }
        }
        // Applied messages.
        let keep_sent = self
            .config
            .keep_sent_hours
            .unwrap_or(self.config.expiry_hours)
            * 3600;
        let processed = files_by_age(&self.store.path("inbox/processed"));
        let mut count = processed.len();
        for (p, _, t) in &processed {
            if count > 2 * PROCESSED_MAX || old(*t, keep_sent) {
                remove_any(p);
                count -= 1;
            }
        }
        // Reports the node has not dismissed (it dismisses what it shows).
        self.cap_reports()
    }

    /// Converts or clears, a bounded batch at a time, what earlier versions kept: members'
    /// incomplete messages in `recv/` move into the index (within its bounds), strangers'
    /// are dropped; `done/` is dropped; one-file-per-SMS quarantine beyond the newest 256
    /// or older than 14 days is dropped.
    pub(crate) fn sweep_legacy(&self, now: u64) -> Result<(), SmsError> {
        let mut budget = LEGACY_BATCH;
        let recv = self.store.path("recv");
        if recv.is_dir() {
            let mut index: Index = self.load_index()?;
            for peer in self.store.peers_in("recv")? {
                let peer_dir = recv.join(peer.as_str());
                for name in self.store.list(&peer_dir)? {
                    if budget == 0 {
                        break;
                    }
                    budget -= 1;
                    let dir = peer_dir.join(&name);
                    let tag = name.parse::<u16>().ok();
                    let meta = self
                        .store
                        .read_json::<LegacyRecv>(&dir.join("meta.json"))
                        .ok()
                        .flatten();
                    if let (Some(tag), Some(meta), Some(member)) =
                        (tag, meta, self.peer_for(&peer).map(|p| p.phone.clone()))
                    {
                        let room = index
                            .messages
                            .iter()
                            .filter(|e| e.from.same_as(&member))
                            .count()
                            < crate::recv::PER_MEMBER_MESSAGES;
                        if room {
                            self.convert_legacy(&mut index, &member, tag, &meta, &dir)?;
                        }
                    }
                    remove_any(&dir);
                }
                let _ = std::fs::remove_dir(&peer_dir);
            }
            // Anything else in there (not a number) goes too.
            for name in self.store.list(&recv)? {
                if budget == 0 {
                    break;
                }
                if Phone::parse(&name).is_err() {
                    remove_any(&recv.join(&name));
                    budget -= 1;
                }
            }
            let _ = std::fs::remove_dir(&recv);
            self.save_index(&index, true)?;
        }
        let done = self.store.path("done");
        if budget > 0 && done.is_dir() {
            let _ = std::fs::remove_dir_all(&done);
        }
        let dir = self.store.path("quarantine");
        let legacy: Vec<(PathBuf, u64, u64)> = files_by_age(&dir)
            .into_iter()
            .filter(|(p, _, _)| p.extension().is_some_and(|e| e == "json"))
            .collect();
        let excess = legacy.len().saturating_sub(256);
        for (i, (p, _, t)) in legacy.iter().enumerate() {
            if budget == 0 {
                break;
            }
            if i < excess || now >= t.saturating_add(SET_ASIDE_SECS) {
                remove_any(p);
                budget -= 1;
            }
        }
        // Given-up messages of earlier versions were folders in `expired/`; the age and
        // size limits of `prune_kept` apply to them too.
        Ok(())
    }

    fn convert_legacy(
        &self,
        index: &mut Index,
        from: &Phone,
        tag: u16,
        meta: &LegacyRecv,
        dir: &Path,
    ) -> Result<(), SmsError> {
        if index
            .messages
            .iter()
            .any(|e| e.from.same_as(from) && e.tag == tag && e.count == meta.count)
        {
            return Ok(());
        }
        let mut parts: Vec<Vec<Vec<u8>>> = Vec::with_capacity(usize::from(meta.count));
        let mut have = 0;
        for i in 0..meta.count {
            match self.store.read(&dir.join(format!("{i:03}.part")))? {
                Some(b) => {
                    have += 1;
                    parts.push(vec![b]);
                }
                None => parts.push(Vec::new()),
            }
        }
        if have == 0 || have == meta.count {
            return Ok(());
        }
        let entry = Entry {
            from: from.clone(),
            tag,
            count: meta.count,
            have,
            stored: u32::from(have),
            first_seen: meta.first_seen,
            last_seen: meta.last_seen,
            last_request: None,
            requests: 0,
            state: State::Collecting,
        };
        self.import_parts(&entry, &parts)?;
        index.messages.push(entry);
        Ok(())
    }
}
