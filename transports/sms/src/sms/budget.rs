//! The daily budgets: SMS sent per number (`peers/PHONE.json`, with its share for repairs)
//! and to all numbers together (`budget.json`), counted per UTC day.

use super::SmsTransport;
use crate::error::SmsError;
use crate::phone::Phone;
use serde::{Deserialize, Serialize};

/// How many SMS sending a message would take, and how many of them today's budget allows
/// ([`SmsTransport::dry_run`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DryRun {
    /// SMS the message takes.
    pub messages: usize,
    /// Of those, how many would go today.
    pub send_today: usize,
    /// Of those, how many would wait for a later day.
    pub queued: usize,
    /// SMS already waiting for this peer (they go first).
    pub already_queued: usize,
    /// Today's budget left for this peer.
    pub remaining_today: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct PeerState {
    day: u64,
    pub(super) sent_today: u32,
    pub(super) sent_total: u64,
    pub(super) next_tag: Option<u16>,
    /// The day `repairs_today` counts.
    #[serde(default)]
    repairs_day: u64,
    /// Repair SMS (requests, parts sent again, "gone" notices) queued for this peer that
    /// day.
    #[serde(default)]
    repairs_today: u32,
    /// The last day a "gone" notice was queued for this peer.
    #[serde(default)]
    pub(super) gone_day: Option<u64>,
}

/// SMS sent to all numbers together on one day (`budget.json`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(super) struct TotalState {
    day: u64,
    pub(super) sent_today: u32,
}

impl SmsTransport {
    pub(super) fn peer_state(&self, phone: &Phone, now: u64) -> Result<PeerState, SmsError> {
        let path = self.store.path(&format!("peers/{}.json", Self::key(phone)));
        let mut s: PeerState = self.store.read_json(&path)?.unwrap_or_default();
        if s.day != now / 86_400 {
            s.day = now / 86_400;
            s.sent_today = 0;
        }
        if s.repairs_day != now / 86_400 {
            s.repairs_day = now / 86_400;
            s.repairs_today = 0;
        }
        Ok(s)
    }

    pub(super) fn save_peer_state(&self, phone: &Phone, s: &PeerState) -> Result<(), SmsError> {
        let path = self.store.path(&format!("peers/{}.json", Self::key(phone)));
        self.store.write_json(&path, s)
    }

    pub(super) fn total_state(&self, now: u64) -> Result<TotalState, SmsError> {
        let mut s: TotalState = self
            .store
            .read_json(&self.store.path("budget.json"))?
            .unwrap_or_default();
        if s.day != now / 86_400 {
            s = TotalState {
                day: now / 86_400,
                sent_today: 0,
            };
        }
        Ok(s)
    }

    /// Repair SMS (requests, parts sent again, "gone" notices) one peer may have per day:
    /// a quarter of its daily budget, so repairs, forged or not, never take the budget of
    /// new data.
    pub fn repair_share(&self) -> u32 {
        (self.config.daily_budget / 4).max(1)
    }

    /// Takes up to `n` SMS from `peer`'s repair share for today; returns how many it may
    /// queue. Runs under the state lock.
    pub(crate) fn take_repair_share(
        &self,
        peer: &Phone,
        n: usize,
        now: u64,
    ) -> Result<usize, SmsError> {
        if n == 0 {
            return Ok(0);
        }
        let mut s = self.peer_state(peer, now)?;
        let left = self.repair_share().saturating_sub(s.repairs_today) as usize;
        let take = n.min(left);
        if take > 0 {
            s.repairs_today += take as u32;
            self.save_peer_state(peer, &s)?;
        }
        Ok(take)
    }

    /// How many SMS sending a message of `len` bytes to `to` would take, and how many of
    /// them would go today. Sends nothing.
    pub fn dry_run(&self, to: &Phone, len: u64) -> Result<DryRun, SmsError> {
        let messages = self.messages_for(len)?;
        let _l = self.store.lock()?;
        let now = self.now_secs();
        let state = self.peer_state(to, now)?;
        let total = self.total_state(now)?;
        let remaining = self
            .config
            .daily_budget
            .saturating_sub(state.sent_today)
            .min(
                self.config
                    .total_daily_budget
                    .saturating_sub(total.sent_today),
            );
        let already_queued = self.queue(to)?.len();
        let room = (remaining as usize).saturating_sub(already_queued);
        let send_today = messages.min(room);
        Ok(DryRun {
            messages,
            send_today,
            queued: messages - send_today,
            already_queued,
            remaining_today: remaining,
        })
    }
}
