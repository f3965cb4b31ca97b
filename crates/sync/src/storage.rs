//! The storage a replica needs, as a trait.

use ferry_model::commit::{ChainContext, CommitBytes, Form};
use ferry_model::crypto::{PublicKey, Signature};
use ferry_model::{Hash, Hlc, MemberId, Op, RecordState, Stamp, VersionVector};

/// What a stashed run costs the stash quota beyond its commits.
pub const STASH_RUN_COST: u64 = 256;
/// What a stashed commit costs the stash quota at least, however short it is.
pub const STASH_COMMIT_COST: u64 = 128;

/// A member whose key this replica knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Member number.
    pub member: MemberId,
    /// The member's device key.
    pub key: PublicKey,
    /// The label the admin gave it.
    pub label: String,
}

/// A commit whose place in its author's chain has been checked.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredCommit {
    /// The author.
    pub author: MemberId,
    /// Its number.
    pub seq: u64,
    /// The chain hash after it.
    pub hash: Hash,
    /// Its clock.
    pub hlc: Hlc,
    /// Its causal context (without the author's own entry).
    pub deps: VersionVector,
    /// The length of the author's name table after it (to rebuild the chain context at
    /// this commit).
    pub names: u32,
    /// Its canonical encoding; empty once compacted away.
    pub bytes: Vec<u8>,
    /// The form of `bytes` (bundles/SPEC.md §17).
    pub form: Form,
}

impl StoredCommit {
    /// Its bytes with their form.
    pub fn body(self) -> CommitBytes {
        CommitBytes {
            form: self.form,
            bytes: self.bytes,
        }
    }
}

/// What node `me` can send of each member's commits: its own up to its head, every other
/// member's up to the latest commit it holds that member's proof for (the stored head, but
/// after an apply that stopped between two steps, [`Storage::step`]).
pub fn sendable<S: Storage>(store: &S, me: MemberId) -> Result<VersionVector, S::Error> {
    let stored = store.stored()?;
    let proven = store.latest_proofs()?;
    Ok(stored
        .iter()
        .map(|(a, n)| (a, if a == me { n } else { n.min(proven.get(a)) }))
        .collect())
}

/// A callback over records: (collection, id, state).
pub type RecordVisitor<'a, E> = dyn FnMut(&str, &str, &RecordState) -> Result<(), E> + 'a;

/// A run kept aside until it can be checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StashedRun {
    /// Its id in the storage.
    pub id: u64,
    /// The member whose (authenticated) bundle carried it: stash quotas are per sender.
    pub sender: MemberId,
    /// When it was kept (wall-clock milliseconds); it is dropped after 30 days.
    pub at_ms: u64,
    /// The author.
    pub author: MemberId,
    /// First commit number.
    pub first: u64,
    /// Last commit number.
    pub last: u64,
    /// The author's proof at `last`, once known.
    pub proof: Option<Proof>,
}

/// An author's signature over its chain head at `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The commit number the signature vouches for.
    pub seq: u64,
    /// The bundle digest it also covers, when it was a bundle signature.
    pub digest: Option<[u8; 32]>,
    /// The signature.
    pub sig: Signature,
}

/// Everything the engine reads and writes. Implementations run inside a transaction that
/// the caller commits after a successful ingest and rolls back otherwise.
///
/// Invariants the engine keeps (and implementations may rely on):
/// - a member's commits are inserted in order 1, 2, 3, … with no gaps;
/// - `set_applied(m, n)` is called with `n` = the previous value + 1;
/// - for every member other than the local node with commits, a proof is stored at its
///   latest commit — except after an apply that stopped between two of its steps
///   ([`Storage::step`]): then at an earlier commit, and what a node sends of that member
///   ends at its latest proof ([`Storage::latest_proofs`]) until the rest arrives.
pub trait Storage {
    /// The storage's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The error for data the engine stored earlier and cannot find again (the storage is
    /// corrupt or was changed behind the engine's back).
    fn missing(what: String) -> Self::Error;

    /// How many bytes of new commits a bundle's apply takes between two steps
    /// ([`Storage::step`]); `None` (the default): a bundle is applied in one transaction.
    fn step_bytes(&self) -> Option<u64> {
        None
    }
    /// Makes what the apply wrote so far durable and goes on in a new transaction. The
    /// engine calls it only between two whole commits of a run the bundle's signature
    /// covers, once those commits are stored, applied as far as they can be and the
    /// author's chain saved: a state a smaller bundle could have left. A crash later leaves
    /// that state; importing the bundle again finishes it. A storage that finds another
    /// writer slipped in between fails (the engine's view of the store is stale): the
    /// caller imports the bundle again. The default does nothing.
    fn step(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    /// For each member with a stored proof, the latest commit its proof covers. A node sends
    /// another member's commits up to that commit only ([`crate::Engine::sendable`]).
    fn latest_proofs(&self) -> Result<VersionVector, Self::Error>;

    /// Every member whose key is known.
    fn members(&self) -> Result<Vec<MemberInfo>, Self::Error>;
    /// One member.
    fn member(&self, m: MemberId) -> Result<Option<MemberInfo>, Self::Error>;
    /// Records a member's key (from its verified join or from the dataset's genesis).
    fn put_member(&mut self, info: &MemberInfo) -> Result<(), Self::Error>;

    /// The author's chain after its latest stored commit, or `None` before its first.
    fn chain(&self, m: MemberId) -> Result<Option<ChainContext>, Self::Error>;
    /// Saves the author's chain after appending commits (names only ever grow).
    fn put_chain(&mut self, ctx: &ChainContext) -> Result<(), Self::Error>;
    /// For each author, its latest stored commit number.
    fn stored(&self) -> Result<VersionVector, Self::Error>;

    /// Stores a checked commit (not yet applied).
    fn insert_commit(&mut self, c: &StoredCommit) -> Result<(), Self::Error>;
    /// One stored commit.
    fn commit(&self, m: MemberId, seq: u64) -> Result<Option<StoredCommit>, Self::Error>;
    /// Whether any of commits `first..=last` of `m` is in the columnar form (a bundle that
    /// carries one is version 11).
    fn columnar_in(&self, m: MemberId, first: u64, last: u64) -> Result<bool, Self::Error> {
        for seq in first..=last {
            if self
                .commit(m, seq)?
                .is_some_and(|c| c.form == Form::Columnar)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
    /// The chain hash after one stored commit.
    fn commit_hash(&self, m: MemberId, seq: u64) -> Result<Option<Hash>, Self::Error>;
    /// The clock of one stored commit.
    fn commit_hlc(&self, m: MemberId, seq: u64) -> Result<Option<Hlc>, Self::Error>;

    /// Stores an author's proof.
    fn put_proof(&mut self, author: MemberId, proof: &Proof) -> Result<(), Self::Error>;
    /// The author's proof at exactly `seq`.
    fn proof(&self, author: MemberId, seq: u64) -> Result<Option<Proof>, Self::Error>;

    /// For each author, the latest commit applied to records.
    fn applied(&self) -> Result<VersionVector, Self::Error>;
    /// Marks the author's commit `seq` applied.
    fn set_applied(&mut self, m: MemberId, seq: u64) -> Result<(), Self::Error>;
    /// A record's merge state.
    fn record(&self, collection: &str, id: &str) -> Result<Option<RecordState>, Self::Error>;
    /// Saves a record's merge state.
    fn put_record(
        &mut self,
        collection: &str,
        id: &str,
        state: &RecordState,
    ) -> Result<(), Self::Error>;

    /// The states of the records `ids` of `collection` (in that order; `None` for a record
    /// never stored): the reads a whole commit's writes to one collection need, at once, so
    /// a store can tell in one probe that records are new. The default reads each one.
    fn records_of(
        &self,
        collection: &str,
        ids: &[&str],
    ) -> Result<Vec<Option<RecordState>>, Self::Error> {
        ids.iter().map(|id| self.record(collection, id)).collect()
    }
    /// Saves a record's merge state; `stored` says whether the record was stored before (as
    /// [`Storage::records_of`] found it), so a store may insert new rows without looking
    /// and update the others in place. The default is [`Storage::put_record`].
    fn write_record(
        &mut self,
        collection: &str,
        id: &str,
        state: &RecordState,
        stored: bool,
    ) -> Result<(), Self::Error> {
        let _ = stored;
        self.put_record(collection, id, state)
    }

    /// Saves a record never stored before, made by one commit (`stamp`, causal context
    /// `ctx`) applying `ops` to it: the state [`RecordState::apply_owned`] makes of them. A
    /// store may encode the common case — each field set once — without building the state
    /// (an import's new records). The default builds it.
    fn insert_new_record(
        &mut self,
        collection: &str,
        id: &str,
        stamp: Stamp,
        ctx: &VersionVector,
        ops: Vec<Op>,
    ) -> Result<(), Self::Error> {
        self.write_record(
            collection,
            id,
            &RecordState::made_by(stamp, ctx, ops),
            false,
        )
    }

    /// [`Storage::insert_new_record`] of each of `records` (id, ops), all of `collection`
    /// and made by one commit: a store may prepare its write once for all of them. The
    /// default inserts each.
    fn insert_new_records(
        &mut self,
        collection: &str,
        stamp: Stamp,
        ctx: &VersionVector,
        records: Vec<(String, Vec<Op>)>,
    ) -> Result<(), Self::Error> {
        for (id, ops) in records {
            self.insert_new_record(collection, &id, stamp, ctx, ops)?;
        }
        Ok(())
    }

    /// Starts keeping a run that cannot be checked yet (its author's earlier commits or
    /// membership are missing), carried by an authenticated bundle of `sender`, at wall time
    /// `at_ms`. Returns the run's id. Each run is kept, checked and dropped as a unit, so a
    /// bogus copy can never hide a genuine one.
    fn stash_run(
        &mut self,
        sender: MemberId,
        author: MemberId,
        first: u64,
        last: u64,
        at_ms: u64,
    ) -> Result<u64, Self::Error>;
    /// What the stash kept from `sender`'s bundles, or from everyone's (`None`), in bytes,
    /// counting each run as [`STASH_RUN_COST`] bytes more and each commit as at least
    /// [`STASH_COMMIT_COST`] bytes (so a quota bounds rows too, not only their bodies).
    fn stash_bytes(&self, sender: Option<MemberId>) -> Result<u64, Self::Error>;
    /// Forgets the stashed runs kept before `before_ms`, and returns them.
    fn expire_stash(&mut self, before_ms: u64) -> Result<Vec<StashedRun>, Self::Error>;
    /// Keeps one commit of a stashed run.
    fn stash_commit(&mut self, run: u64, seq: u64, c: &CommitBytes) -> Result<(), Self::Error>;
    /// Sets the proof of a stashed run (at its last commit).
    fn set_stash_proof(&mut self, run: u64, proof: &Proof) -> Result<(), Self::Error>;
    /// The stashed runs of `author`.
    fn stashed_runs(&self, author: MemberId) -> Result<Vec<StashedRun>, Self::Error>;
    /// One commit of a stashed run.
    fn stashed_commit(&self, run: u64, seq: u64) -> Result<Option<CommitBytes>, Self::Error>;
    /// Forgets a stashed run and its commits.
    fn drop_stashed(&mut self, run: u64) -> Result<(), Self::Error>;
    /// Authors with stashed runs, and how many commits those hold.
    fn stashed(&self) -> Result<Vec<(MemberId, u64)>, Self::Error>;

    /// The highest commit of `m` whose body was compacted away (commits 2 up to it have no
    /// body; commit 1, the member's genesis or join, always keeps its body), or 0.
    fn compacted(&self, m: MemberId) -> Result<u64, Self::Error>;
    /// Drops the bodies of commits 2 up to `upto[m]` of each member; their hash, clock and
    /// causal context stay. Returns how many bodies were dropped.
    fn compact(&mut self, upto: &VersionVector) -> Result<u64, Self::Error>;
    /// How many records are stored, in every collection. The default visits them all.
    fn record_count(&self) -> Result<u64, Self::Error> {
        let mut n = 0u64;
        self.visit_records(&mut |_, _, _| {
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }
    /// Calls `f` with every record of every collection: (collection, id, state).
    fn visit_records(&self, f: &mut RecordVisitor<'_, Self::Error>) -> Result<(), Self::Error>;
    /// Removes every record (before installing a snapshot).
    fn clear_records(&mut self) -> Result<(), Self::Error>;
    /// Sets what is applied for every author at once (installing a snapshot).
    fn reset_applied(&mut self, vv: &VersionVector) -> Result<(), Self::Error>;

    /// Where `m`'s history forked, if it is frozen (nothing more of it is accepted).
    fn frozen(&self, m: MemberId) -> Result<Option<u64>, Self::Error>;
    /// Freezes `m`: its history forked at commit `seq` (checked evidence). Frozen again at
    /// an earlier commit, the earlier one counts.
    fn freeze(&mut self, m: MemberId, seq: u64) -> Result<(), Self::Error>;
    /// Moves `m`'s freeze to `seq`, later than it was: a removal whose cutoff rose when a
    /// concurrent removal with a higher one arrived (the engine checks that nothing else
    /// froze it earlier).
    fn refreeze(&mut self, m: MemberId, seq: u64) -> Result<(), Self::Error>;
    /// Lifts `m`'s freeze: it was set by a key grant that turned out not to count (its
    /// signer removed before it signed, or no admin then); the engine checks that nothing
    /// else froze `m`.
    fn unfreeze(&mut self, m: MemberId) -> Result<(), Self::Error>;

    /// What `m` is known to hold.
    fn peer(&self, m: MemberId) -> Result<VersionVector, Self::Error>;
    /// Raises what `m` is known to hold.
    fn merge_peer(&mut self, m: MemberId, vv: &VersionVector) -> Result<(), Self::Error>;

    /// The latest clock reading issued or seen.
    fn clock(&self) -> Result<Hlc, Self::Error>;
    /// Saves the clock.
    fn set_clock(&mut self, hlc: Hlc) -> Result<(), Self::Error>;
}
