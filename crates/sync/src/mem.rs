//! An in-memory [`Storage`], for tests and seeded simulations of many replicas.
//!
//! Transactions are by cloning: take a copy before [`crate::Engine::ingest`] and put it back
//! if the ingest fails.

use crate::storage::{MemberInfo, Proof, StashedRun, Storage, StoredCommit};
use ferry_model::commit::{ChainContext, CommitBytes};
use ferry_model::{Hash, Hlc, MemberId, RecordState, VersionVector};
use std::collections::BTreeMap;

/// The in-memory storage's only error: data it should hold is missing.
#[derive(Debug, thiserror::Error)]
#[error("in-memory storage is missing {0}")]
pub struct MemError(pub String);

/// Everything a replica stores, in maps.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    members: BTreeMap<MemberId, MemberInfo>,
    chains: BTreeMap<MemberId, ChainContext>,
    commits: BTreeMap<(MemberId, u64), StoredCommit>,
    proofs: BTreeMap<(MemberId, u64), Proof>,
    applied: VersionVector,
    /// Records by (collection, id).
    pub records: BTreeMap<(String, String), RecordState>,
    stash_runs: BTreeMap<u64, StashedRun>,
    stash_commits: BTreeMap<(u64, u64), CommitBytes>,
    next_stash: u64,
    peers: BTreeMap<MemberId, VersionVector>,
    clock: Hlc,
    compacted: VersionVector,
    frozen: BTreeMap<MemberId, u64>,
    /// When set, an apply takes a step every so many bytes of new commits
    /// ([`Storage::step_bytes`]); unset, a bundle is applied at once.
    pub step_bytes: Option<u64>,
    /// The state at the latest step, as a crash after it would leave the store (tests).
    pub last_step: Option<Box<MemStorage>>,
    /// How many steps were taken.
    pub steps: u64,
}

impl Storage for MemStorage {
    type Error = MemError;

    fn missing(what: String) -> MemError {
        MemError(what)
    }

    fn step_bytes(&self) -> Option<u64> {
        self.step_bytes
    }

    fn step(&mut self) -> Result<(), MemError> {
        let mut durable = self.clone();
        durable.last_step = None;
        self.last_step = Some(Box::new(durable));
        self.steps += 1;
        Ok(())
    }

    fn latest_proofs(&self) -> Result<VersionVector, MemError> {
        Ok(self.proofs.keys().copied().collect())
    }

    fn members(&self) -> Result<Vec<MemberInfo>, MemError> {
        Ok(self.members.values().cloned().collect())
    }

    fn member(&self, m: MemberId) -> Result<Option<MemberInfo>, MemError> {
        Ok(self.members.get(&m).cloned())
    }

    fn put_member(&mut self, info: &MemberInfo) -> Result<(), MemError> {
        self.members.insert(info.member, info.clone());
        Ok(())
    }

    fn chain(&self, m: MemberId) -> Result<Option<ChainContext>, MemError> {
        Ok(self.chains.get(&m).cloned())
    }

    fn put_chain(&mut self, ctx: &ChainContext) -> Result<(), MemError> {
        self.chains.insert(ctx.author, ctx.clone());
        Ok(())
    }

    fn stored(&self) -> Result<VersionVector, MemError> {
        Ok(self.chains.values().map(|c| (c.author, c.seq)).collect())
    }

    fn insert_commit(&mut self, c: &StoredCommit) -> Result<(), MemError> {
        self.commits.insert((c.author, c.seq), c.clone());
        Ok(())
    }

    fn commit(&self, m: MemberId, seq: u64) -> Result<Option<StoredCommit>, MemError> {
        Ok(self.commits.get(&(m, seq)).cloned())
    }

    fn commit_hash(&self, m: MemberId, seq: u64) -> Result<Option<Hash>, MemError> {
        Ok(self.commits.get(&(m, seq)).map(|c| c.hash))
    }

    fn commit_hlc(&self, m: MemberId, seq: u64) -> Result<Option<Hlc>, MemError> {
        Ok(self.commits.get(&(m, seq)).map(|c| c.hlc))
    }

    fn put_proof(&mut self, author: MemberId, proof: &Proof) -> Result<(), MemError> {
        self.proofs.insert((author, proof.seq), proof.clone());
        Ok(())
    }

    fn proof(&self, author: MemberId, seq: u64) -> Result<Option<Proof>, MemError> {
        Ok(self.proofs.get(&(author, seq)).cloned())
    }

    fn applied(&self) -> Result<VersionVector, MemError> {
        Ok(self.applied.clone())
    }

    fn set_applied(&mut self, m: MemberId, seq: u64) -> Result<(), MemError> {
        // The engine's invariants, checked on every apply (the simulation relies on them):
        // each commit once, in its author's order, after everything it depends on.
        assert_eq!(
            seq,
            self.applied.get(m) + 1,
            "commit {seq} of {m} applied twice or out of order"
        );
        let c = self
            .commits
            .get(&(m, seq))
            .ok_or_else(|| MemError(format!("commit {seq} of {m} applied without being stored")))?;
        // (A frozen author's commits from its fork point on are never applied; depending on
        // them counts as met once its commits before the fork are.)
        let met = c.deps.iter().all(|(d, n)| {
            let have = self.applied.get(d);
            have >= n || self.frozen.get(&d).is_some_and(|&k| have + 1 >= k)
        });
        assert!(met, "commit {seq} of {m} applied before its dependencies");
        assert!(
            self.frozen.get(&m).is_none_or(|&k| seq < k),
            "commit {seq} of {m} applied past its fork point"
        );
        self.applied.set(m, seq);
        Ok(())
    }

    fn record(&self, collection: &str, id: &str) -> Result<Option<RecordState>, MemError> {
        Ok(self
            .records
            .get(&(collection.to_string(), id.to_string()))
            .cloned())
    }

    fn put_record(
        &mut self,
        collection: &str,
        id: &str,
        state: &RecordState,
    ) -> Result<(), MemError> {
        self.records
            .insert((collection.to_string(), id.to_string()), state.clone());
        Ok(())
    }

    fn stash_run(
        &mut self,
        sender: MemberId,
        author: MemberId,
        first: u64,
        last: u64,
        at_ms: u64,
    ) -> Result<u64, MemError> {
        self.next_stash += 1;
        let id = self.next_stash;
        self.stash_runs.insert(
            id,
            StashedRun {
                id,
                sender,
                at_ms,
                author,
                first,
                last,
                proof: None,
            },
        );
        Ok(id)
    }

    fn stash_bytes(&self, sender: Option<MemberId>) -> Result<u64, MemError> {
        let mine = |run: &u64| {
            sender.is_none_or(|s| self.stash_runs.get(run).is_some_and(|r| r.sender == s))
        };
        let commits: u64 = self
            .stash_commits
            .iter()
            .filter(|((run, _), _)| mine(run))
            .map(|(_, b)| (b.len() as u64).max(crate::storage::STASH_COMMIT_COST))
            .sum();
        let runs = self.stash_runs.keys().filter(|r| mine(r)).count() as u64;
        Ok(commits + runs * crate::storage::STASH_RUN_COST)
    }

    fn expire_stash(&mut self, before_ms: u64) -> Result<Vec<StashedRun>, MemError> {
        let old: Vec<StashedRun> = self
            .stash_runs
            .values()
            .filter(|r| r.at_ms < before_ms)
            .cloned()
            .collect();
        for r in &old {
            self.drop_stashed(r.id)?;
        }
        Ok(old)
    }

    fn stash_commit(&mut self, run: u64, seq: u64, c: &CommitBytes) -> Result<(), MemError> {
        self.stash_commits.insert((run, seq), c.clone());
        Ok(())
    }

    fn set_stash_proof(&mut self, run: u64, proof: &Proof) -> Result<(), MemError> {
        if let Some(r) = self.stash_runs.get_mut(&run) {
            r.proof = Some(proof.clone());
        }
        Ok(())
    }

    fn stashed_runs(&self, author: MemberId) -> Result<Vec<StashedRun>, MemError> {
        Ok(self
            .stash_runs
            .values()
            .filter(|r| r.author == author)
            .cloned()
            .collect())
    }

    fn stashed_commit(&self, run: u64, seq: u64) -> Result<Option<CommitBytes>, MemError> {
        Ok(self.stash_commits.get(&(run, seq)).cloned())
    }

    fn drop_stashed(&mut self, run: u64) -> Result<(), MemError> {
        self.stash_runs.remove(&run);
        self.stash_commits.retain(|&(r, _), _| r != run);
        Ok(())
    }

    fn stashed(&self) -> Result<Vec<(MemberId, u64)>, MemError> {
        let mut out: BTreeMap<MemberId, u64> = BTreeMap::new();
        for r in self.stash_runs.values() {
            *out.entry(r.author).or_default() += r.last - r.first + 1;
        }
        Ok(out.into_iter().collect())
    }

    fn compacted(&self, m: MemberId) -> Result<u64, MemError> {
        Ok(self.compacted.get(m))
    }

    fn compact(&mut self, upto: &VersionVector) -> Result<u64, MemError> {
        let mut dropped = 0;
        for (m, n) in upto.iter() {
            for seq in 2..=n {
                if let Some(c) = self.commits.get_mut(&(m, seq)) {
                    if !c.bytes.is_empty() {
                        c.bytes = Vec::new();
                        dropped += 1;
                    }
                }
            }
            if n > self.compacted.get(m) {
                self.compacted.set(m, n);
            }
            // Proofs stay: a signature at an older commit is what fork evidence needs once the
            // commits themselves are gone.
        }
        Ok(dropped)
    }

    fn visit_records(
        &self,
        f: &mut crate::storage::RecordVisitor<'_, MemError>,
    ) -> Result<(), MemError> {
        for ((c, id), r) in &self.records {
            f(c, id, r)?;
        }
        Ok(())
    }

    fn clear_records(&mut self) -> Result<(), MemError> {
        self.records.clear();
        Ok(())
    }

    fn reset_applied(&mut self, vv: &VersionVector) -> Result<(), MemError> {
        self.applied = vv.clone();
        Ok(())
    }

    fn frozen(&self, m: MemberId) -> Result<Option<u64>, MemError> {
        Ok(self.frozen.get(&m).copied())
    }

    fn freeze(&mut self, m: MemberId, seq: u64) -> Result<(), MemError> {
        let k = self.frozen.entry(m).or_insert(seq);
        *k = (*k).min(seq);
        Ok(())
    }

    fn refreeze(&mut self, m: MemberId, seq: u64) -> Result<(), MemError> {
        self.frozen.insert(m, seq);
        Ok(())
    }

    fn unfreeze(&mut self, m: MemberId) -> Result<(), MemError> {
        self.frozen.remove(&m);
        Ok(())
    }

    fn peer(&self, m: MemberId) -> Result<VersionVector, MemError> {
        Ok(self.peers.get(&m).cloned().unwrap_or_default())
    }

    fn merge_peer(&mut self, m: MemberId, vv: &VersionVector) -> Result<(), MemError> {
        self.peers.entry(m).or_default().merge(vv);
        Ok(())
    }

    fn clock(&self) -> Result<Hlc, MemError> {
        Ok(self.clock)
    }

    fn set_clock(&mut self, hlc: Hlc) -> Result<(), MemError> {
        self.clock = hlc;
        Ok(())
    }
}
