//! Keeping the store small: compaction of history every member holds, and purge of
//! deleted records.

use crate::NodeError;
use crate::node::Node;
use crate::progress::{Progress, Unit};
use crate::time::now_ms;
use ferry_model::VersionVector;
use ferry_sync::Storage;
use serde::Serialize;

/// How long the automatic compaction after a sync keeps history (by ferry's clock): 30
/// days. `ferry compact` and `ferry purge` drop it at once.
pub const KEEP_HISTORY_MS: u64 = 30 * 24 * 3600 * 1000;

/// What `compact` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CompactReport {
    /// Commit bodies dropped now.
    pub dropped: u64,
    /// Commits whose bodies are compacted away, in all (including earlier, automatic runs).
    pub total: u64,
    /// Store size before (bytes, database and its log).
    pub bytes_before: u64,
    /// Store size after.
    pub bytes_after: u64,
}

/// A member that holds back compaction and purge on this laptop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HoldBack {
    /// Member number.
    pub member: u32,
    /// Its label.
    pub label: String,
    /// Changes this laptop has applied that it is not known to hold (as its last bundle
    /// told, or none heard): compaction keeps them for it.
    pub lacks: u64,
    /// Changes of its own it said it had made that this laptop has not applied yet: until
    /// they are, an edit of it that did not see a delete may still come, so purge waits.
    pub unapplied: u64,
    /// When this laptop last heard from it (ISO 8601), if ever.
    pub last_heard: Option<String>,
}

impl std::fmt::Display for HoldBack {
    /// `clinic-b (#3: lacks 40 changes, last heard 2026-11-20T08:40:11Z)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut why = Vec::new();
        if self.lacks > 0 {
            why.push(format!("lacks {} changes", self.lacks));
        }
        if self.unapplied > 0 {
            why.push(format!(
                "{} of its changes not applied here yet",
                self.unapplied
            ));
        }
        why.push(match &self.last_heard {
            Some(t) => format!("last heard {t}"),
            None => "never heard from".into(),
        });
        write!(f, "{} (#{}: {})", self.label, self.member, why.join(", "))
    }
}

/// What `purge` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PurgeReport {
    /// Deleted records removed for good.
    pub purged: u64,
    /// Deleted records kept because some member has not received their delete yet.
    pub waiting: u64,
    /// Values deletes had removed, kept for a concurrent edit, dropped for good.
    pub ghosts: u64,
    /// When deleted records were kept: the members they wait for.
    pub held_back_by: Vec<HoldBack>,
    /// The compaction that went with it.
    pub compact: CompactReport,
}

impl Node {
    /// For each author, the last commit this node has compacted away.
    pub fn compacted(&mut self) -> Result<VersionVector, NodeError> {
        let tx = self.read()?;
        let stored = tx.stored()?;
        let mut out = VersionVector::new();
        for (a, _) in stored.iter() {
            out.set(a, tx.compacted(a)?);
        }
        Ok(out)
    }

    /// The members that hold back compaction (they lack changes this laptop applied) or
    /// purge (also: their own reported changes are not all applied here), the longest
    /// silent first.
    pub fn holding_back(&mut self) -> Result<Vec<HoldBack>, NodeError> {
        let labels = self.labels()?;
        let peers = self.known_peers()?;
        let tx = self.read()?;
        let applied = tx.applied()?;
        let heard: std::collections::BTreeMap<_, _> = tx
            .peers()?
            .into_iter()
            .map(|p| (p.member, p.updated_ms))
            .collect();
        let mut out = Vec::new();
        for p in peers {
            let vv = tx.peer(p)?;
            let lacks: u64 = applied
                .iter()
                .map(|(a, n)| n.saturating_sub(vv.get(a)))
                .sum();
            let unapplied = vv.get(p).saturating_sub(applied.get(p));
            if lacks == 0 && unapplied == 0 {
                continue;
            }
            let at = heard.get(&p).copied().filter(|&t| t > 0);
            out.push((
                at.unwrap_or(0),
                HoldBack {
                    member: p.0,
                    label: labels.get(&p).cloned().unwrap_or_else(|| p.to_string()),
                    lacks,
                    unapplied,
                    last_heard: at.map(crate::time::format_utc),
                },
            ));
        }
        out.sort_by_key(|(at, h)| (*at, h.member));
        Ok(out.into_iter().map(|(_, h)| h).collect())
    }

    /// What every member this node knows of (joined or invited) is known to hold, and this
    /// node holds too: the history nobody needs from it any more.
    pub fn horizon(&mut self) -> Result<VersionVector, NodeError> {
        // Only the founding laptop writes the snapshots that laptops invited after a
        // compaction start from (bundles/SPEC.md §4.1): once it is removed, history is kept
        // whole, so that they can replay it instead.
        if self.founder_removed()? {
            return self.compacted();
        }
        let peers = self.known_peers()?;
        let tx = self.read()?;
        // What this node has *applied*, not merely stored: a pending commit's body is still
        // needed to apply it (and a frozen member's unapplied commits keep theirs).
        let mut horizon = tx.applied()?;
        for p in peers {
            let vv = tx.peer(p)?;
            horizon = horizon.iter().map(|(a, n)| (a, n.min(vv.get(a)))).collect();
        }
        Ok(horizon)
    }

    fn store_bytes(&self) -> u64 {
        let db = self.home.db();
        let wal = std::path::PathBuf::from(format!("{}-wal", db.display()));
        [db, wal]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Drops the bodies of commits every known member holds (members invited later get a
    /// snapshot instead). With `vacuum`, also gives the freed space back to the disk.
    pub fn compact(
        &mut self,
        vacuum: bool,
        progress: &dyn Progress,
    ) -> Result<CompactReport, NodeError> {
        let horizon = self.horizon()?;
        self.compact_upto(horizon, vacuum, progress)
    }

    /// The automatic compaction after a sync: like [`Node::compact`], but the history of
    /// the last [`KEEP_HISTORY_MS`] (by ferry's clock) stays, so `ferry log` shows recent
    /// changes and `ferry restore` can bring back a record deleted recently.
    pub fn compact_older(&mut self, progress: &dyn Progress) -> Result<CompactReport, NodeError> {
        let horizon = self.horizon()?;
        let mut upto = VersionVector::new();
        {
            let tx = self.read()?;
            // Ferry's clock (never behind a change this laptop received), or the wall clock.
            let cutoff = now_ms()
                .max(tx.clock()?.ms())
                .saturating_sub(KEEP_HISTORY_MS);
            for (author, held) in horizon.iter() {
                // An author's clock only grows along its chain: find the last commit up to
                // `held` written before the cutoff.
                let (mut lo, mut hi) = (tx.compacted(author)?.min(held), held);
                while lo < hi {
                    let mid = lo + (hi - lo).div_ceil(2);
                    let old = tx.commit_hlc(author, mid)?.is_none_or(|h| h.ms() <= cutoff);
                    if old {
                        lo = mid;
                    } else {
                        hi = mid - 1;
                    }
                }
                upto.set(author, lo);
            }
        }
        self.compact_upto(upto, false, progress)
    }

    fn compact_upto(
        &mut self,
        horizon: VersionVector,
        vacuum: bool,
        progress: &dyn Progress,
    ) -> Result<CompactReport, NodeError> {
        let bytes_before = self.store_bytes();
        let mut tx = self.store.transaction(now_ms())?;
        // What there is to drop, so that the display counts towards it.
        let compacted = {
            let mut c = VersionVector::new();
            for (a, _) in horizon.iter() {
                c.set(a, tx.compacted(a)?);
            }
            c
        };
        // Commit 1 of each member (its genesis or join) is always kept.
        let todo: u64 = horizon
            .iter()
            .map(|(a, n)| n.saturating_sub(compacted.get(a).max(1)))
            .sum();
        progress.begin("compacting history", Some(todo), Unit::Changes);
        let mut dropped = 0;
        for (a, n) in horizon.iter() {
            let one: VersionVector = [(a, n)].into_iter().collect();
            let d = tx.compact(&one)?;
            dropped += d;
            progress.advance(n.saturating_sub(compacted.get(a).max(1)));
        }
        let total = tx.compacted_count()?;
        tx.commit()?;
        progress.end();
        if vacuum {
            progress.begin(
                "giving the freed space back to the disk",
                Some(self.store_bytes()),
                Unit::Bytes,
            );
            self.store.vacuum()?;
            progress.advance(bytes_before);
            progress.end();
        }
        Ok(CompactReport {
            dropped,
            total,
            bytes_before,
            bytes_after: self.store_bytes(),
        })
    }

    /// Removes deleted records for good once every member has received their delete, and
    /// compacts the history that still holds their data.
    pub fn purge(&mut self, progress: &dyn Progress) -> Result<PurgeReport, NodeError> {
        let mut horizon = self.horizon()?;
        // A member that has received a delete may have written, before that, an edit this
        // laptop has not applied yet: only once every member's own changes up to its last
        // report are applied here can no edit that did not see the delete still arrive.
        {
            let peers = self.known_peers()?;
            let tx = self.read()?;
            let applied = tx.applied()?;
            for p in peers {
                if applied.get(p) < tx.peer(p)?.get(p) {
                    horizon = VersionVector::new();
                }
            }
        }
        let bytes_before = self.store_bytes();
        let mut tx = self.store.transaction(now_ms())?;
        let mut report = PurgeReport::default();
        let dead = tx.dead_records()?;
        progress.begin(
            "purging deleted records",
            Some(dead.len() as u64),
            Unit::Records,
        );
        for (collection, id, state) in dead {
            progress.advance(1);
            // Safe to forget when every member has seen every delete: no edit that did not
            // see them can still arrive, so nothing could conflict with them.
            if state.tombstones.iter().all(|t| horizon.covers(t.dot)) {
                tx.delete_record(&collection, &id)?;
                report.purged += 1;
            } else {
                report.waiting += 1;
            }
        }
        // Values deletes removed that a record created again no longer shows (ghosts).
        let mut forgotten = Vec::new();
        tx.visit_records(&mut |collection, id, state| {
            if state.is_live() && !state.ghosts.is_empty() {
                let mut state = state.clone();
                let dropped = state.forget_ghosts(&horizon);
                if dropped > 0 {
                    forgotten.push((collection.to_string(), id.to_string(), state, dropped));
                }
            }
            Ok(())
        })?;
        for (collection, id, state, dropped) in forgotten {
            tx.put_record(&collection, &id, &state)?;
            report.ghosts += dropped as u64;
        }
        tx.commit()?;
        progress.end();
        if report.waiting > 0 {
            report.held_back_by = self.holding_back()?;
        }
        report.compact = self.compact(true, progress)?;
        report.compact.bytes_before = bytes_before;
        Ok(report)
    }
}
