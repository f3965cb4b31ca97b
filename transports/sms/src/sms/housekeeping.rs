//! Housekeeping the listener runs between requests: asking members for missing parts,
//! and expiry (incomplete messages given up, sent copies and what is kept pruned).

use super::SmsTransport;
use super::report::Report;
use super::sent::SentMeta;
use crate::error::SmsError;
use crate::phone::Phone;

/// A request for missing parts that was queued to a peer ([`SmsTransport::request_missing`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairRequest {
    /// The peer that sent the message.
    pub to: Phone,
    /// The message's tag.
    pub tag: u16,
    /// Its number of parts.
    pub count: u16,
    /// The parts asked for.
    pub missing: Vec<u16>,
}

impl SmsTransport {
    /// Asks members for the parts still missing of their messages that made no progress
    /// for `repair_after_minutes` (then twice as long after each request), one compact
    /// control SMS per member where possible, and sends them as the budgets allow. Numbers
    /// that are no member's are never asked.
    pub fn request_missing(&mut self) -> Result<Vec<RepairRequest>, SmsError> {
        let out = {
            let _l = self.store.lock()?;
            let now = self.now_secs();
            self.queue_repairs(now)?
        };
        if !out.is_empty() {
            self.flush_queue()?;
        }
        Ok(out)
    }

    /// Housekeeping: gives up incomplete messages with no new part for `expiry_hours` (each
    /// reported, its parts kept in `expired/`; strangers' after a day, dropped), offers
    /// held messages whose sender's allowance came back, forgets finished messages after
    /// the same time, drops sent copies older than `keep_sent_hours`, and keeps
    /// `quarantine/`, `expired/`, `reports/` and the processed mailbox within their size
    /// and age limits. Returns the new reports.
    pub fn expire(&mut self) -> Result<Vec<Report>, SmsError> {
        let _l = self.store.lock()?;
        let now = self.now_secs();
        let keep_sent = self
            .config
            .keep_sent_hours
            .unwrap_or(self.config.expiry_hours)
            * 3600;
        self.sweep_legacy(now)?;
        let reports = self.expire_incoming(now)?;
        self.offer_held(now)?;
        for peer in self.store.peers_in("sent")? {
            let dir = self.store.path(&format!("sent/{}", Self::key(&peer)));
            for name in self.store.list(&dir)? {
                let Some(stem) = name.strip_suffix(".json") else {
                    continue;
                };
                let path = dir.join(&name);
                if let Some(m) = self.store.read_json::<SentMeta>(&path)? {
                    if now >= m.at.saturating_add(keep_sent) {
                        self.store.remove(&dir.join(format!("{stem}.msg")))?;
                        self.store.remove(&path)?;
                    }
                }
            }
        }
        self.prune_kept(now)?;
        Ok(reports)
    }
}
