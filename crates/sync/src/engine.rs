//! Authenticating, ingesting, settling, committing and exporting.
//!
//! **The gate.** Every bundle passes [`Engine::authenticate`] before anything in it may
//! change state: it checks the header, the plaintext policy, the structure and limits of
//! every item, the sender's membership and the bundle signature, reading the store and
//! writing nothing. Only an [`Authenticated`] value — which only `authenticate` makes — lets
//! [`Engine::ingest`] apply the same bundle; `ingest` checks that the bytes it reads are the
//! ones that were authenticated. Snapshots, receipts, stashed runs, contacts and rules are
//! all behind this one gate (bundles/SPEC.md §10).

use crate::fork::{Branch, ForkEvidence};
use crate::plan::{BEGINNING_BYTES, Beginning, Coverage, ExportRun};
use crate::storage::{MemberInfo, Proof, Storage, StoredCommit};
use ferry_bundle::{
    BundleError, BundleReader, BundleWriter, Header, Item, Keyring, Opener, RunProof, WriteOptions,
};
use ferry_model::commit::{ChainContext, CommitBytes, CommitError, Form, chain_root};
use ferry_model::crypto::{JoinError, PublicKey, SecretKey, head_message};
use ferry_model::record::{Ghost, Ghosts};
use ferry_model::{
    Change, Commit, DatasetId, Dot, Hash, Hlc, MemberId, Op, RecordState, Value, VersionVector,
};
use std::collections::HashMap;
use std::io::{Read, Write};

/// How long a stashed run is kept waiting for the commits before it (30 days).
pub const STASH_MAX_AGE_MS: u64 = 30 * 86_400_000;
/// Most bytes of stashed commits kept from the bundles of one sender.
pub const STASH_PER_SENDER: u64 = 32 * 1024 * 1024;
/// Most bytes of stashed commits kept in all.
pub const STASH_TOTAL: u64 = 128 * 1024 * 1024;

/// The reserved collection where fork evidence travels (record id = the forked member's
/// number; field [`FORK_FIELD`]).
pub const FORKS: &str = "_forks";
/// The field of a `_forks` record holding the evidence (bytes).
pub const FORK_FIELD: &str = "evidence";

/// The engine for one node in one dataset.
#[derive(Clone, Debug)]
pub struct Engine {
    /// The dataset.
    pub dataset: DatasetId,
    /// The dataset admin's key (trust anchor for every join).
    pub admin_key: PublicKey,
    /// This node's member number.
    pub me: MemberId,
}

/// What a node accepts in bundles it receives, decided by its user per medium.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accept {
    /// Plaintext bundles (bundles/SPEC.md §3.3). Anyone can write one without the dataset
    /// key, so they are accepted only where the user said so for the medium (the serial
    /// `--plaintext` exchange, or `ferry import --plaintext`); they are still authenticated
    /// like any bundle.
    pub plaintext: bool,
}

/// A bundle whose signature verified under the key of its sender, a member whose join this
/// node checked. Only [`Engine::authenticate`] makes one; [`Engine::ingest`] needs one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    header: Header,
    plaintext: bool,
    digest: [u8; 32],
    head: u64,
    /// For each relayed run (by author), what its author's own proof said.
    runs: Vec<(MemberId, RunCheck)>,
    /// The forks that evidence in an admin snapshot proves: (member, frozen from).
    snapshot_forks: Vec<(MemberId, u64)>,
    /// Where the apply may take a step ([`Storage::step`]): (author, commit, chain hash
    /// after it), at about every [`Storage::step_bytes`] of new commits of runs the
    /// signatures cover. Pass 2 takes a step only where its chain hash is the same, so what
    /// it makes durable is exactly what pass 1 authenticated.
    marks: Vec<(MemberId, u64, Hash)>,
}

/// What checking a relayed run's proof found (pass 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunCheck {
    /// The author's signature covers it.
    Valid,
    /// Its author's signature does not verify: a forged relay, or a version of the author's
    /// history that does not link to the one held here. Left out.
    Invalid,
    /// Validly signed, and differs from the history held here from this commit on: a fork.
    Fork(u64),
    /// It cannot be followed yet (earlier commits or the author's join missing): stashed.
    Unchecked,
}

/// Where the sender's own history differs from the one held here: the commit, the chain
/// hash before it, and its commits from there (when they fit the evidence limit).
type SenderFork = (u64, Hash, Option<Vec<CommitBytes>>);

/// What following a run along the chain held here found (pass 1).
#[derive(Debug, Default)]
struct Trace {
    /// It starts past what is held, or its author is unknown: it cannot be followed.
    gap: bool,
    /// The chain hash after its last commit, when known.
    hash: Option<Hash>,
    /// Where it stops matching the history held here, if it does.
    fork_at: Option<u64>,
    /// The chain hash before that point.
    fork_base: Option<Hash>,
    /// Its commits from that point on, when collected (for evidence).
    branch: Vec<CommitBytes>,
    /// Whether `branch` stopped at the evidence limit.
    truncated: bool,
    /// The author's key: known here, or from the join in its commit 1.
    key: Option<PublicKey>,
    /// Where an apply may take a step: (commit, chain hash after it).
    marks: Vec<(u64, Hash)>,
}

impl Authenticated {
    /// The member that made and signed the bundle.
    pub fn sender(&self) -> MemberId {
        self.header.sender
    }

    /// The digest its signature covers.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Whether it is a plaintext bundle.
    pub fn plaintext(&self) -> bool {
        self.plaintext
    }
}

/// What a node lacks before it can check a bundle's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    /// The sender's membership (its join) has not reached this node.
    Membership(MemberId),
    /// The promotion of the admin that invited the sender (its number is in that admin's
    /// range, crate `roles`).
    Inviter {
        /// The sender.
        member: MemberId,
        /// The admin whose promotion has not arrived.
        inviter: MemberId,
    },
    /// The sender's commits `from..=to`: the signature covers its chain up to `to`.
    Commits {
        /// The sender.
        author: MemberId,
        /// First missing commit.
        from: u64,
        /// Last missing commit.
        to: u64,
    },
}

/// What [`Engine::authenticate`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Authentic: apply it with [`Engine::ingest`].
    Authentic(Authenticated),
    /// It cannot be checked yet; nothing from it may be used. Keep the bundle and try again
    /// once this node has learned what is missing (typically from another bundle of the same
    /// sender, on the same medium or on the next).
    NotYet {
        /// The claimed sender.
        sender: MemberId,
        /// What this node lacks.
        missing: Missing,
    },
    /// It can never be checked here: its sender's head lies in history this node received
    /// as a snapshot, so it is older than what this node holds and brings nothing checkable.
    Obsolete {
        /// The claimed sender.
        sender: MemberId,
    },
}

/// Why a bundle was refused. Nothing from a refused bundle may be kept: the caller rolls
/// back its transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError<E: std::error::Error + 'static> {
    /// The storage failed.
    #[error("storage error: {0}")]
    Storage(#[source] E),
    /// The bundle is damaged, truncated, malformed, over a limit, or of an unknown version.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The bundle belongs to another dataset.
    #[error("bundle belongs to another dataset ({found}), not this one ({expected})")]
    WrongDataset {
        /// The bundle's dataset.
        found: DatasetId,
        /// This node's dataset.
        expected: DatasetId,
    },
    /// A plaintext bundle where the user did not allow them.
    #[error(
        "a plaintext (unencrypted) bundle, which anyone can write without the dataset key; it is accepted only with --plaintext"
    )]
    PlaintextNotAccepted,
    /// A commit inside is invalid.
    #[error("commit {seq} of member {author} is invalid: {source}")]
    Commit {
        /// Its author.
        author: MemberId,
        /// Its number.
        seq: u64,
        /// What is wrong.
        #[source]
        source: CommitError,
    },
    /// A signature does not match the member's key: forged, or damaged in a way the
    /// encryption did not catch.
    #[error(
        "signature of member {member} does not verify: the bundle is forged or was made by a device that is not that member"
    )]
    BadSignature {
        /// The member whose signature failed.
        member: MemberId,
    },
    /// A join proof does not verify: the sender is not a member of this dataset.
    #[error("member {member} is not a member of this dataset: {source}")]
    NotMember {
        /// The claimed member number.
        member: MemberId,
        /// What is wrong with the proof.
        #[source]
        source: JoinError,
    },
    /// A second device joined with an invitation that was already used.
    #[error(
        "member {member} already joined from another device; an invitation can be used only once"
    )]
    InvitationReused {
        /// The member number.
        member: MemberId,
    },
    /// The member's invitation was signed by another admin whose promotion has not reached
    /// this node yet: its bundle waits.
    #[error(
        "member {member} was invited by member {inviter}, an admin this laptop does not know of yet; it is read once that admin's promotion arrives"
    )]
    InviterUnknown {
        /// The member.
        member: MemberId,
        /// The admin whose range holds its number.
        inviter: MemberId,
    },
    /// The member's invitation was signed by an admin after its admin role was withdrawn.
    #[error(
        "member {member} was invited by member {inviter}, whose admin role was withdrawn by an admin that did not know of that invitation: nothing it sends is accepted; that laptop needs a new invitation from an admin"
    )]
    InviterDemoted {
        /// The member.
        member: MemberId,
        /// The admin whose range holds its number.
        inviter: MemberId,
    },
    /// The dataset genesis does not match the admin key this node trusts.
    #[error("the dataset's founding commit names a different admin key")]
    WrongGenesis,
    /// Two different commits with the same author and number, both signed by the author:
    /// its device was restored from an old backup, cloned, or lies. The author is frozen.
    #[error(
        "member {author} has two different versions of commit {seq}; its device was probably restored from an old backup or cloned, so ferry accepts nothing more from it"
    )]
    Fork {
        /// The author.
        author: MemberId,
        /// The commit number.
        seq: u64,
        /// The evidence, when this node could assemble it (the node records it, which
        /// freezes the author everywhere).
        evidence: Option<Box<ForkEvidence>>,
    },
    /// The sender's history forked earlier; nothing more is accepted from it.
    #[error(
        "member {member} is frozen: its history forked at commit {seq} (a restored backup or a cloned disk); the admin should remove it"
    )]
    Frozen {
        /// The member.
        member: MemberId,
        /// Where its history forked.
        seq: u64,
    },
    /// The sender's invitation was cancelled by the admin (or expired before its first
    /// bundle reached the admin): nothing of it is accepted.
    #[error(
        "member {member}'s invitation was cancelled by the admin ({reason}): nothing it sends is accepted; that laptop needs a new invitation"
    )]
    Cancelled {
        /// The member.
        member: MemberId,
        /// Why (as the admin wrote it).
        reason: String,
        /// When, by the admin's clock (ms).
        at_ms: u64,
    },
    /// The sender was removed from the dataset by the admin, and the bundle carries its
    /// commits after the cutoff (what it wrote once removed): refused whole.
    #[error(
        "member {member} was removed from the dataset by {}{}: what it wrote after its commit {cutoff} is refused",
        by_whom(*by),
        removed_when_why(*at_ms, reason)
    )]
    Removed {
        /// The member.
        member: MemberId,
        /// The admin that removed it (the founder when only a key grant said so).
        by: MemberId,
        /// Its last commit that counts.
        cutoff: u64,
        /// Why (as the admin wrote it).
        reason: String,
        /// When, by the admin's clock (ms).
        at_ms: u64,
    },
    /// The bundle is sealed under a key epoch this node does not hold.
    #[error(
        "the bundle is sealed with the dataset's key number {epoch}, which this laptop has not received yet; it reads once a bundle from an admin (or one carrying that key's grant) arrives"
    )]
    NoEpochKey {
        /// The epoch.
        epoch: ferry_bundle::EpochId,
    },
    /// The bundle is sealed under a key epoch whose grant removed this laptop.
    #[error(
        "this laptop was removed from the dataset by the admin on {}: it can no longer read what the others write (what it wrote up to its commit {cutoff} still counts); ask the admin for a new invitation if that is a mistake",
        ferry_model::clock::format_utc(*at_ms)
    )]
    RemovedHere {
        /// Its last commit that still counts.
        cutoff: u64,
        /// When, by the admin's clock (ms).
        at_ms: u64,
    },
    /// An admin snapshot contradicts itself or what this node holds.
    #[error("the snapshot is inconsistent: {0}")]
    BadSnapshot(String),
    /// The bundle read by [`Engine::ingest`] is not the one that was authenticated (the file
    /// changed in between).
    #[error("the bundle changed after it was checked; import it again")]
    Changed,
}

impl<E: std::error::Error + 'static> IngestError<E> {
    /// Whether the refusal is about the bundle (quarantine it) rather than the storage.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, IngestError::Storage(_))
    }
}

/// What ingesting one bundle did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngestReport {
    /// The sender.
    pub sender: MemberId,
    /// Commits stored for the first time.
    pub new: u64,
    /// Commits already held.
    pub duplicates: u64,
    /// Commits kept aside because their author's earlier commits or membership are missing.
    pub stashed: u64,
    /// Commits applied to records right away.
    pub applied: u64,
    /// Record changes those commits made (records of user collections, once per commit).
    pub records: u64,
    /// The runs the bundle carried whose commits are now held here (a medium that carries
    /// the bundle carries these for the planner).
    pub runs: Vec<RunSummary>,
    /// The runs kept aside, waiting for earlier commits or their author's membership.
    pub stashed_runs: Vec<RunSummary>,
    /// Relayed runs left out, with why (over the stash quota, from a plaintext bundle, of a
    /// frozen author).
    pub skipped_runs: Vec<(RunSummary, String)>,
    /// Always true for a bundle that was ingested (kept for callers that print it).
    pub authenticated: bool,
    /// The sender's receipt.
    pub receipt: Option<VersionVector>,
    /// Whether the bundle's snapshot was installed (this node lacked commits that the admin
    /// had compacted away).
    pub snapshot: bool,
    /// The state the bundle's snapshot reflects, if it carried one (installed or not).
    pub snapshot_state: Option<VersionVector>,
    /// A snapshot from a member other than the admin, ignored (only the admin's are
    /// installed).
    pub snapshot_ignored: bool,
    /// Relayed runs skipped because their author has two different versions of a commit
    /// (author, commit number). The author is frozen; the rest of the bundle still applies.
    pub forks: Vec<(MemberId, u64)>,
}

/// A snapshot being installed.
struct Snapshot {
    /// What applied becomes.
    state: VersionVector,
    /// What this node held before.
    stored: VersionVector,
}

/// What became of one run.
enum RunOutcome {
    /// Checked and stored (or already held).
    Stored,
    /// Kept aside.
    Stashed,
    /// Left out, with why.
    Skipped(String),
    /// Skipped: its author's history forks from the one held here.
    Forked,
}

/// One run of a bundle.
pub type RunSummary = Coverage;

/// What [`Engine::settle`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SettleReport {
    /// Pending commits applied.
    pub applied: u64,
    /// Record changes those commits made (records of user collections, once per commit).
    pub records: u64,
    /// Stashed commits that could now be checked and were stored.
    pub unstashed: u64,
    /// Stashed runs that failed their check, or waited too long, and were dropped: author,
    /// first and last commit, reason.
    pub dropped: Vec<(MemberId, u64, u64, String)>,
}

/// What [`Engine::export`] wrote.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportReport {
    /// The runs.
    pub runs: Vec<ExportRun>,
    /// Number of commits.
    pub commits: u64,
    /// The signed digest.
    pub digest: [u8; 32],
}

type Res<T, S> = Result<T, IngestError<<S as Storage>::Error>>;

pub(crate) fn st<S: Storage, T>(r: Result<T, S::Error>) -> Res<T, S> {
    r.map_err(IngestError::Storage)
}

/// Whether `author` may write to `collection`/`id`, `admin` saying whether it is an admin
/// in the commit's causal context (crate `roles`). Reserved collections (names starting
/// with `_`) hold dataset metadata: `_members/N` may be written by an admin and (except the
/// fields only admins set) by member N; `_forks` by any member (fork evidence, honoured only
/// when it verifies); `_roles` by nobody (the engine derives it); every other reserved
/// collection only by an admin. Ops that break this are skipped, the same way on every node.
pub fn may_write(author: MemberId, admin: bool, collection: &str, id: &str) -> bool {
    if !collection.starts_with('_') || collection == FORKS {
        return true;
    }
    if collection == crate::roles::ROLES {
        return false;
    }
    admin || (collection == MEMBERS && id == author.0.to_string())
}

/// The fields of `_members/N` only an admin sets (member N may write the others: its
/// addresses).
pub const ADMIN_FIELDS: [&str; 8] = [
    MEMBER_KEY_FIELD,
    MEMBER_CANCELLED_FIELD,
    MEMBER_REMOVED_FIELD,
    MEMBER_CUTOFF_FIELD,
    MEMBER_EXPIRES_FIELD,
    crate::roles::MEMBER_ADMIN_FIELD,
    crate::roles::MEMBER_INVITES_UPTO_FIELD,
    "epoch",
];

/// A record's id and the ops one commit applies to it.
type RecordOps = (String, Vec<Op>);

/// Reads the next item, which the reader guarantees is a commit of the current run.
fn next_commit<R: Read>(reader: &mut BundleReader<R>) -> Result<CommitBytes, BundleError> {
    match reader.next_item()? {
        Some(Item::Commit(bytes)) => Ok(CommitBytes::row(bytes)),
        Some(Item::ColumnarCommit(bytes)) => Ok(CommitBytes {
            form: Form::Columnar,
            bytes,
        }),
        _ => unreachable!("the reader checks that a run holds `count` commits"),
    }
}

impl Engine {
    /// Checks one bundle without changing anything (the gate of bundles/SPEC.md §10): the
    /// header, whether plaintext is accepted, every item's structure and limits, the
    /// sender's membership and the bundle signature. Run it and then [`Engine::ingest`] in
    /// the same storage transaction.
    pub fn authenticate<S: Storage, R: Read>(
        &self,
        store: &S,
        opener: Opener<R>,
        keys: &Keyring,
        accept: Accept,
    ) -> Res<Verdict, S> {
        let header = opener.header().clone();
        if header.dataset != self.dataset {
            return Err(IngestError::WrongDataset {
                found: header.dataset,
                expected: self.dataset,
            });
        }
        let plaintext = opener.is_plaintext();
        if plaintext && !accept.plaintext {
            return Err(IngestError::PlaintextNotAccepted);
        }
        let sender = header.sender;
        if sender.0 == 0 {
            return Err(BundleError::Malformed("member 0 does not exist".into()).into());
        }
        // A removed sender's bundle is read as far as its receipt: one made before its cutoff
        // carries only what counts and is taken like any other.
        let mut removed = None;
        if let Some(seq) = st::<S, _>(store.frozen(sender))? {
            let rec = st::<S, _>(store.record(MEMBERS, &sender.0.to_string()))?;
            if let Some((reason, at_ms)) = cancellation(rec.as_ref()) {
                return Err(IngestError::Cancelled {
                    member: sender,
                    reason,
                    at_ms,
                });
            }
            // The admin's record of the removal, or (before it arrives) the grant that
            // announced it.
            let announced = || {
                keys.removal(sender).map(|(cutoff, at_ms)| Removal {
                    cutoff,
                    reason: String::new(),
                    at_ms,
                    by: MemberId::ADMIN,
                })
            };
            match removal(rec.as_ref()).or_else(announced) {
                Some(r) if seq > r.cutoff => removed = Some(r),
                _ => {
                    return Err(IngestError::Frozen {
                        member: sender,
                        seq,
                    });
                }
            }
        }
        let mut reader = self.open_sealed(store, opener, keys)?;
        let Some(Item::Receipt(receipt)) = reader.next_item()? else {
            unreachable!("the reader checks that a payload starts with a receipt");
        };
        let head = receipt.get(sender);
        if let Some(r) = removed.filter(|r| head > r.cutoff) {
            return Err(IngestError::Removed {
                member: sender,
                by: r.by,
                cutoff: r.cutoff,
                reason: r.reason,
                at_ms: r.at_ms,
            });
        }
        let chain = st::<S, _>(store.chain(sender))?;
        let have = chain.as_ref().map_or(0, |c| c.seq);
        let mut signer = st::<S, _>(store.member(sender))?.map(|m| m.key);
        // The chain hash at the head the signature vouches for, once known.
        let mut head_hash = if head <= have {
            self.known_hash(store, sender, head)?
        } else {
            None
        };
        let mut missing = None;
        let mut admin_snapshot = false;
        // What each relayed run's author's own signature says of it.
        let mut runs = Vec::new();
        let mut marks = Vec::new();
        // In an admin snapshot: the members' keys, and the forks its evidence proves.
        let mut snapshot_keys: Vec<(MemberId, PublicKey)> = Vec::new();
        let mut snapshot_forks: Vec<(MemberId, u64)> = Vec::new();
        // A second version of the sender's history: where it starts, the hash before it and
        // its commits.
        let mut fork: Option<SenderFork> = None;
        while let Some(item) = reader.next_item()? {
            match item {
                Item::Snapshot { .. } => admin_snapshot = sender == MemberId::ADMIN,
                Item::SnapshotChain {
                    author,
                    seq,
                    hash,
                    first,
                    ..
                } if admin_snapshot => {
                    // The members' keys, for checking the fork evidence the snapshot holds.
                    let key = match st::<S, _>(store.member(author))? {
                        Some(m) => Some(m.key),
                        None => {
                            let mut ctx = ChainContext::new(self.dataset, author);
                            ctx.decode(&first)
                                .ok()
                                .and_then(|c| self.first_commit_key(store, &c, true).ok())
                        }
                    };
                    if let Some(k) = key {
                        snapshot_keys.push((author, k));
                    }
                    if author != sender {
                        continue;
                    }
                    if signer.is_none() {
                        let mut ctx = ChainContext::new(self.dataset, author);
                        let commit = ctx.decode(&first).map_err(|source| IngestError::Commit {
                            author,
                            seq: 1,
                            source,
                        })?;
                        signer = Some(self.first_commit_key(store, &commit, false)?);
                    }
                    if seq == head && head_hash.is_none() {
                        head_hash = Some(hash);
                    }
                }
                Item::SnapshotRecord {
                    collection,
                    id,
                    state,
                    ..
                } if admin_snapshot && collection == FORKS => {
                    // Forks the admin knows of: they decide whether installing the snapshot
                    // loses anything (a frozen member's writes after its fork do not count).
                    let Ok(n) = id.parse::<u32>() else { continue };
                    let Some(key) = snapshot_keys
                        .iter()
                        .find(|(m, _)| m.0 == n)
                        .map(|&(_, k)| k)
                    else {
                        continue;
                    };
                    let rec: Option<RecordState> = {
                        let _budget =
                            ferry_model::bounded::OpBudget::start(ferry_model::limits::MAX_OPS);
                        // The record state comes first in every version (ghosts follow it
                        // in version 3; `_forks` never has any).
                        postcard::take_from_bytes(&state).ok().map(|(r, _)| r)
                    };
                    for sib in rec.iter().flat_map(|r| r.fields.get(FORK_FIELD)).flatten() {
                        if let ferry_model::record::Entry::Value(Value::Bytes(b)) = &sib.entry {
                            if let Some(ev) =
                                ForkEvidence::from_bytes(b).filter(|ev| ev.author.0 == n)
                            {
                                if let Ok(k) = ev.verify(self.dataset, &key) {
                                    snapshot_forks.push((ev.author, k));
                                }
                            }
                        }
                    }
                }
                Item::Run {
                    author,
                    first,
                    count,
                    proof,
                } => {
                    let last = first + count - 1;
                    if proof == RunProof::Sender && (author != sender || last != head) {
                        return Err(BundleError::Malformed(
                            "a run vouched for by the sender is not the sender's up to its head"
                                .into(),
                        )
                        .into());
                    }
                    let own = author == sender;
                    let trace = self.follow_run(store, &mut reader, author, first, last, own)?;
                    if !own {
                        let check = self.check_relayed(author, last, &proof, &trace);
                        if check == RunCheck::Valid {
                            marks.extend(trace.marks.iter().map(|&(seq, h)| (author, seq, h)));
                        }
                        runs.push((author, check));
                        continue;
                    }
                    if trace.fork_at.is_none() {
                        // (Used only once the bundle's signature verifies below.)
                        marks.extend(trace.marks.iter().map(|&(seq, h)| (author, seq, h)));
                    }
                    if trace.gap {
                        missing = Some(match first {
                            1 => Missing::Inviter {
                                member: author,
                                inviter: crate::roles::inviter(author),
                            },
                            _ => Missing::Commits {
                                author,
                                from: have + 1,
                                to: first - 1,
                            },
                        });
                        continue;
                    }
                    if signer.is_none() {
                        signer = trace.key;
                    }
                    if trace.fork_at == Some(1) {
                        // A second device that joined with the same invitation (its own key,
                        // a valid join): say so.
                        let mut ctx = ChainContext::new(self.dataset, sender);
                        let commit = ctx.decode_bytes(&trace.branch[0]).map_err(|source| {
                            IngestError::Commit {
                                author: sender,
                                seq: 1,
                                source,
                            }
                        })?;
                        self.first_commit_key(store, &commit, false)?;
                        return Err(IngestError::InvitationReused { member: sender });
                    }
                    if last == head && (trace.fork_at.is_some() || head > have) {
                        head_hash = trace.hash;
                    }
                    if let (Some(seq), Some(base)) = (trace.fork_at, trace.fork_base) {
                        fork = Some((seq, base, (!trace.truncated).then_some(trace.branch)));
                    }
                }
                // Peer receipts are ignored (SPEC §4); snapshot records are read by ingest
                // once the bundle is authentic; the reader rejects anything out of place.
                _ => {}
            }
        }
        let trailer = reader.finish()?;
        let Some(signer) = signer else {
            return Ok(Verdict::NotYet {
                sender,
                missing: match missing {
                    Some(m @ Missing::Inviter { .. }) => m,
                    _ => Missing::Membership(sender),
                },
            });
        };
        let Some(hash) = head_hash else {
            if head <= have {
                return Ok(Verdict::Obsolete { sender });
            }
            return Ok(Verdict::NotYet {
                sender,
                missing: missing.unwrap_or(Missing::Commits {
                    author: sender,
                    from: have + 1,
                    to: head,
                }),
            });
        };
        let msg = head_message(self.dataset, sender, head, &hash, Some(&trailer.digest));
        if !signer.verify(&msg, &trailer.signature) {
            return Err(IngestError::BadSignature { member: sender });
        }
        if let Some((seq, base_hash, commits)) = fork {
            let evidence = match commits {
                Some(commits) => {
                    let theirs = Branch::new(commits, Some(trailer.digest), trailer.signature);
                    self.fork_evidence(store, sender, seq - 1, base_hash, theirs)?
                }
                None => None,
            };
            return Err(IngestError::Fork {
                author: sender,
                seq,
                evidence: evidence.map(Box::new),
            });
        }
        Ok(Verdict::Authentic(Authenticated {
            header,
            plaintext,
            digest: trailer.digest,
            head,
            runs,
            snapshot_forks,
            marks,
        }))
    }

    /// Follows one run's commits along the author's chain as held here, reading the store
    /// only: where it stops matching (another version of the history), the chain hash after
    /// its last commit, and the author's key (known, or from the join in its commit 1).
    /// `collect` keeps the commits from a fork point on (for evidence), up to the evidence
    /// limit.
    fn follow_run<S: Storage, R: Read>(
        &self,
        store: &S,
        reader: &mut BundleReader<R>,
        author: MemberId,
        first: u64,
        last: u64,
        collect: bool,
    ) -> Res<Trace, S> {
        let chain = st::<S, _>(store.chain(author))?;
        let have = chain.as_ref().map_or(0, |c| c.seq);
        let mut trace = Trace {
            key: st::<S, _>(store.member(author))?.map(|m| m.key),
            ..Trace::default()
        };
        let refused = first == 1
            && trace.key.is_none()
            && crate::roles::join_allowed(store, author)?.is_err();
        if refused && collect {
            // The sender itself: its join is refused for ever.
            return Err(IngestError::InviterDemoted {
                member: author,
                inviter: crate::roles::inviter(author),
            });
        }
        if first > have + 1
            || (first > 1 && trace.key.is_none())
            || (first == 1 && trace.key.is_none() && !self.inviter_ready(store, author)?)
            || refused
        {
            for _ in first..=last {
                next_commit(reader)?;
            }
            trace.gap = true;
            return Ok(trace);
        }
        let mut h: Option<Hash> = None;
        let mut kept = 0usize;
        let step = store.step_bytes();
        let mut since_mark = 0u64;
        for seq in first..=last {
            let bytes = next_commit(reader)?;
            if trace.fork_at.is_some() {
                h = h.map(|h| bytes.chain(&h, seq));
                kept += bytes.len();
                if collect && kept <= crate::fork::MAX_EVIDENCE {
                    trace.branch.push(bytes);
                } else {
                    trace.truncated = true;
                }
                continue;
            }
            if seq <= have {
                if self.is_held(store, author, seq, &bytes)? {
                    h = self.known_hash(store, author, seq)?;
                } else {
                    let base = self.hash_at(store, author, seq - 1)?;
                    h = Some(bytes.chain(&base, seq));
                    trace.fork_at = Some(seq);
                    trace.fork_base = Some(base);
                    kept = bytes.len();
                    if collect {
                        trace.branch.push(bytes);
                    }
                }
                continue;
            }
            let prev = match (seq == have + 1, h) {
                (true, _) => chain
                    .as_ref()
                    .map_or_else(|| chain_root(self.dataset, author), |c| c.hash),
                (false, Some(h)) => h,
                (false, None) => unreachable!("every commit past the held ones is chained"),
            };
            if seq == 1 && trace.key.is_none() {
                let mut ctx = ChainContext::new(self.dataset, author);
                let commit = ctx
                    .decode_bytes(&bytes)
                    .map_err(|source| IngestError::Commit {
                        author,
                        seq: 1,
                        source,
                    })?;
                trace.key = Some(self.first_commit_key(store, &commit, false)?);
            }
            h = Some(bytes.chain(&prev, seq));
            since_mark += bytes.len() as u64;
            if let (Some(step), Some(hash)) = (step, h) {
                if since_mark >= step && seq < last {
                    trace.marks.push((seq, hash));
                    since_mark = 0;
                }
            }
        }
        trace.hash = h;
        Ok(trace)
    }

    /// What a relayed run's own proof says, from its trace (pass 1).
    fn check_relayed(&self, author: MemberId, last: u64, proof: &RunProof, t: &Trace) -> RunCheck {
        if t.gap {
            return RunCheck::Unchecked;
        }
        let (Some(key), Some(hash)) = (t.key, t.hash) else {
            // It ends inside history received as a snapshot: nothing new to check.
            return RunCheck::Valid;
        };
        let (digest, sig) = match proof {
            RunProof::Head(sig) => (None, sig),
            RunProof::Bundle { digest, sig } => (Some(digest), sig),
            RunProof::Sender => unreachable!("checked: only the sender's run"),
        };
        if !key.verify(
            &head_message(self.dataset, author, last, &hash, digest),
            sig,
        ) {
            return RunCheck::Invalid;
        }
        match t.fork_at {
            Some(seq) => RunCheck::Fork(seq),
            None => RunCheck::Valid,
        }
    }

    /// Applies one bundle that [`Engine::authenticate`] found authentic, at wall time
    /// `now_ms`, in the same transaction: stores and applies what is new, installs an admin
    /// snapshot where it loses nothing, stashes relayed runs that cannot be checked yet
    /// (within quotas), and remembers the sender's receipt. The caller commits on `Ok`.
    pub fn ingest<S: Storage, R: Read>(
        &self,
        store: &mut S,
        opener: Opener<R>,
        keys: &Keyring,
        auth: &Authenticated,
        now_ms: u64,
    ) -> Res<IngestReport, S> {
        if *opener.header() != auth.header || opener.is_plaintext() != auth.plaintext {
            return Err(IngestError::Changed);
        }
        let sender = auth.header.sender;
        let mut reader = self.open_sealed(store, opener, keys)?;
        let version = reader.version();
        let Some(Item::Receipt(receipt)) = reader.next_item()? else {
            unreachable!("the reader checks that a payload starts with a receipt");
        };
        if receipt.get(sender) != auth.head {
            return Err(IngestError::Changed);
        }
        let mut report = IngestReport {
            sender,
            authenticated: true,
            ..Default::default()
        };
        let mut applied = st::<S, _>(store.applied())?;
        // A snapshot being installed: its state (what applied becomes) and what was held.
        let mut snapshot: Option<Snapshot> = None;
        let mut found_forks = Vec::new();
        let mut stash_budget = StashBudget {
            sender: STASH_PER_SENDER.saturating_sub(st::<S, _>(store.stash_bytes(Some(sender)))?),
            total: STASH_TOTAL.saturating_sub(st::<S, _>(store.stash_bytes(None))?),
            allowed: !auth.plaintext,
        };
        while let Some(item) = reader.next_item()? {
            let (author, first, count, proof) = match item {
                Item::Run {
                    author,
                    first,
                    count,
                    proof,
                } => (author, first, count, proof),
                Item::Snapshot { state, compacted } => {
                    if sender != MemberId::ADMIN {
                        // Only the admin authors snapshots (SPEC §4.1).
                        report.snapshot_ignored = true;
                        continue;
                    }
                    report.snapshot_state = Some(state.clone());
                    if let Some((a, c)) = compacted.iter().find(|&(a, c)| c > state.get(a)) {
                        return Err(IngestError::BadSnapshot(format!(
                            "it says commits up to {c} of member {a} were compacted, past the state it reflects"
                        )));
                    }
                    if let Some(s) =
                        self.snapshot_wanted(store, &state, &compacted, &auth.snapshot_forks)?
                    {
                        st::<S, _>(store.clear_records())?;
                        snapshot = Some(s);
                        report.snapshot = true;
                    }
                    continue;
                }
                Item::SnapshotChain {
                    author,
                    seq,
                    hash,
                    hlc,
                    deps,
                    names,
                    first,
                } => {
                    if let Some(s) = &snapshot {
                        if s.state.get(author) != seq {
                            return Err(IngestError::BadSnapshot(format!(
                                "the chain of member {author} is not at the state it reflects"
                            )));
                        }
                        let held = s.stored.get(author);
                        self.install_chain(
                            store, author, seq, held, hash, hlc, deps, names, &first, now_ms,
                        )?;
                    }
                    continue;
                }
                Item::SnapshotRecord {
                    collection,
                    id,
                    state,
                } => {
                    if let Some(s) = &snapshot {
                        // wire-format: begin
                        let state: RecordState =
                            decode_snapshot_record(&collection, &id, &state, version)?;
                        // wire-format: end
                        check_snapshot_record(&collection, &id, &state, &s.state, version)?;
                        st::<S, _>(store.put_record(&collection, &id, &state))?;
                        if collection == FORKS {
                            if let Ok(n) = id.parse::<u32>() {
                                self.honour_fork_record(store, MemberId(n))?;
                            }
                        }
                        if collection == MEMBERS {
                            if let (Some(from), Ok(n)) = (frozen_from(&state), id.parse::<u32>()) {
                                self.freeze(store, MemberId(n), from)?;
                            }
                        }
                    }
                    continue;
                }
                // Peer receipts are gossip that version 1 readers ignore (SPEC §4); the
                // reader has already rejected every other item out of place.
                _ => continue,
            };
            if let Some(s) = snapshot.take() {
                applied = self.finish_snapshot(store, s, now_ms)?;
            }
            let run = Coverage {
                author,
                first,
                last: first + count - 1,
            };
            let check = auth
                .runs
                .iter()
                .find(|(a, _)| *a == author)
                .map(|&(_, c)| c);
            let outcome = match check {
                Some(RunCheck::Invalid) => {
                    for _ in first..=run.last {
                        next_commit(&mut reader)?;
                    }
                    RunOutcome::Skipped(format!(
                        "they do not carry a valid signature of member {author} (a forged relay, or a version of its history that does not follow the one held here)"
                    ))
                }
                Some(RunCheck::Fork(seq)) => {
                    self.relayed_fork(store, &mut reader, run, seq, &proof, &mut found_forks)?;
                    report.forks.push((author, seq));
                    RunOutcome::Forked
                }
                _ => self.ingest_run(
                    store,
                    &mut reader,
                    sender,
                    now_ms,
                    &mut applied,
                    &mut report,
                    run,
                    &proof,
                    &mut stash_budget,
                    &auth.marks,
                )?,
            };
            match outcome {
                RunOutcome::Stored => report.runs.push(run),
                RunOutcome::Stashed => report.stashed_runs.push(run),
                RunOutcome::Skipped(why) => report.skipped_runs.push((run, why)),
                RunOutcome::Forked => {}
            }
        }
        if let Some(s) = snapshot.take() {
            self.finish_snapshot(store, s, now_ms)?;
        }
        let trailer = reader.finish()?;
        if trailer.digest != auth.digest {
            return Err(IngestError::Changed);
        }
        if report.runs.iter().any(|r| r.author == sender) && sender != self.me {
            let proof = Proof {
                seq: auth.head,
                digest: Some(trailer.digest),
                sig: trailer.signature,
            };
            st::<S, _>(store.put_proof(sender, &proof))?;
        }
        if sender != self.me {
            st::<S, _>(store.merge_peer(sender, &receipt))?;
        }
        report.receipt = Some(receipt);
        for evidence in found_forks {
            self.record_fork(store, &evidence, now_ms)?;
        }
        Ok(report)
    }

    /// Authenticates and, if authentic, ingests and settles one bundle, with `open` giving a
    /// fresh reader of the same bytes for each pass. For callers whose bytes are at hand (the
    /// simulation, tests); the node runs the passes itself to report on each.
    pub fn receive<S: Storage, R: Read>(
        &self,
        store: &mut S,
        mut open: impl FnMut() -> Result<Opener<R>, BundleError>,
        keys: &Keyring,
        accept: Accept,
        now_ms: u64,
    ) -> Res<Received, S> {
        match self.authenticate(store, open()?, keys, accept)? {
            Verdict::Authentic(auth) => {
                let report = self.ingest(store, open()?, keys, &auth, now_ms)?;
                let settled = self.settle(store, now_ms)?;
                Ok(Received::Applied(Box::new(report), settled))
            }
            Verdict::NotYet { sender, missing } => Ok(Received::NotYet { sender, missing }),
            Verdict::Obsolete { sender } => Ok(Received::Obsolete { sender }),
        }
    }

    fn hash_at<S: Storage>(&self, store: &S, author: MemberId, seq: u64) -> Res<Hash, S> {
        if seq == 0 {
            return Ok(chain_root(self.dataset, author));
        }
        st::<S, _>(store.commit_hash(author, seq))?.ok_or_else(|| {
            IngestError::Storage(missing::<S>(format!("hash of commit {seq} of {author}")))
        })
    }

    /// The chain hash after commit `seq` of `author`, if this node knows it (it does not for
    /// commits inside history it received as a snapshot).
    fn known_hash<S: Storage>(
        &self,
        store: &S,
        author: MemberId,
        seq: u64,
    ) -> Res<Option<Hash>, S> {
        if seq == 0 {
            return Ok(Some(chain_root(self.dataset, author)));
        }
        st::<S, _>(store.commit_hash(author, seq))
    }

    /// Whether `bytes` is the commit `seq` of `author` already held (same chain hash).
    /// Commits inside history received as a snapshot cannot be compared one by one and
    /// count as held.
    fn is_held<S: Storage>(
        &self,
        store: &S,
        author: MemberId,
        seq: u64,
        bytes: &CommitBytes,
    ) -> Res<bool, S> {
        match (
            self.known_hash(store, author, seq - 1)?,
            self.known_hash(store, author, seq)?,
        ) {
            (Some(prev), Some(this)) => Ok(bytes.chain(&prev, seq) == this),
            _ => Ok(true),
        }
    }

    /// Reads one run's commits: stores what is new and checkable, stashes what is not yet
    /// checkable (within the budget), skips a frozen author's new commits, and turns a
    /// verified second version of an author's history into fork evidence.
    #[allow(clippy::too_many_arguments)]
    fn ingest_run<S: Storage, R: Read>(
        &self,
        store: &mut S,
        reader: &mut BundleReader<R>,
        sender: MemberId,
        now_ms: u64,
        applied: &mut VersionVector,
        report: &mut IngestReport,
        run: Coverage,
        proof: &RunProof,
        budget: &mut StashBudget,
        marks: &[(MemberId, u64, Hash)],
    ) -> Res<RunOutcome, S> {
        let Coverage {
            author,
            first,
            last,
        } = run;
        let chain = st::<S, _>(store.chain(author))?;
        let have = chain.as_ref().map_or(0, |c| c.seq);
        let known = st::<S, _>(store.member(author))?;
        let skip = |reader: &mut BundleReader<R>, n: u64| -> Res<(), S> {
            for _ in 0..n {
                next_commit(reader)?;
            }
            Ok(())
        };
        let stored_proof = match proof {
            RunProof::Sender => None,
            RunProof::Head(sig) => Some(Proof {
                seq: last,
                digest: None,
                sig: *sig,
            }),
            RunProof::Bundle { digest, sig } => Some(Proof {
                seq: last,
                digest: Some(*digest),
                sig: *sig,
            }),
        };
        if first == 1 && known.is_none() {
            if let Err(why) = crate::roles::join_allowed(store, author)? {
                // Its inviter's role was withdrawn before the join counted here (SPEC §15):
                // the run is left out and the member frozen from its first commit, so what
                // depends on it does not wait for ever.
                skip(reader, last - first + 1)?;
                self.freeze(store, author, 1)?;
                return Ok(RunOutcome::Skipped(why));
            }
        }
        if first > have + 1
            || (first > 1 && known.is_none())
            || (first == 1 && known.is_none() && !self.inviter_ready(store, author)?)
        {
            // Earlier commits (or the author's membership, or its inviter's) have not arrived. The sender's own
            // run never gets here (authenticate checked it links to what is held); a relayed
            // run is kept aside, as a unit, until they do — within the stash budget, and never
            // from a plaintext bundle (SPEC §10.2).
            if !budget.allowed {
                skip(reader, last - first + 1)?;
                return Ok(RunOutcome::Skipped(
                    "changes relayed in a plaintext bundle are not kept aside".into(),
                ));
            }
            if crate::storage::STASH_RUN_COST > budget.sender.min(budget.total) {
                skip(reader, last - first + 1)?;
                return Ok(RunOutcome::Skipped(format!(
                    "the changes kept aside from {sender}'s bundles reached their limit ({} MiB)",
                    STASH_PER_SENDER >> 20
                )));
            }
            budget.sender -= crate::storage::STASH_RUN_COST;
            budget.total -= crate::storage::STASH_RUN_COST;
            let id = st::<S, _>(store.stash_run(sender, author, first, last, now_ms))?;
            for seq in first..=last {
                let bytes = next_commit(reader)?;
                let n = (bytes.len() as u64).max(crate::storage::STASH_COMMIT_COST);
                if n > budget.sender.min(budget.total) {
                    st::<S, _>(store.drop_stashed(id))?;
                    skip(reader, last - seq)?;
                    return Ok(RunOutcome::Skipped(format!(
                        "the changes kept aside from {sender}'s bundles reached their limit ({} MiB)",
                        STASH_PER_SENDER >> 20
                    )));
                }
                budget.sender -= n;
                budget.total -= n;
                st::<S, _>(store.stash_commit(id, seq, &bytes))?;
            }
            if let Some(p) = &stored_proof {
                st::<S, _>(store.set_stash_proof(id, p))?;
            }
            report.stashed += last - first + 1;
            return Ok(RunOutcome::Stashed);
        }
        let mut ctx = chain.unwrap_or_else(|| ChainContext::new(self.dataset, author));
        let mut key = known.map(|m| m.key);
        let mut last_hash = None;
        let mut steps = marks
            .iter()
            .filter(|m| m.0 == author && (first..=last).contains(&m.1))
            .map(|&(_, seq, hash)| (seq, hash))
            .peekable();
        for seq in first..=last {
            let bytes = next_commit(reader)?;
            if seq <= ctx.seq {
                if !self.is_held(store, author, seq, &bytes)? {
                    // Pass 1 followed this run against the store as it was; only what this
                    // bundle itself installed since (an admin snapshot) can make a commit it
                    // carries differ from the one held now: the bundle contradicts itself.
                    return Err(IngestError::BadSnapshot(format!(
                        "commit {seq} of member {author} in the bundle differs from the history its own snapshot states"
                    )));
                }
                report.duplicates += 1;
                last_hash = self.known_hash(store, author, seq)?;
                continue;
            }
            let commit = ctx
                .decode_bytes(&bytes)
                .map_err(|source| IngestError::Commit {
                    author,
                    seq,
                    source,
                })?;
            if seq == 1 {
                key = Some(self.admit(store, &commit, now_ms, false)?);
            }
            st::<S, _>(store.insert_commit(&StoredCommit {
                author,
                seq,
                hash: ctx.hash,
                hlc: commit.hlc,
                deps: commit.deps.clone(),
                names: ctx.names.len() as u32,
                bytes: bytes.bytes,
                form: bytes.form,
            }))?;
            report.new += 1;
            last_hash = Some(ctx.hash);
            self.note_evidence(store, &commit)?;
            // A frozen author's commits are still stored when they extend the history held
            // here (they were signed before anyone knew), but those from its fork point on
            // are never applied. (Asked again for each commit: one of them, or what it
            // applies, may carry the evidence.)
            if applied.get(author) + 1 == seq
                && st::<S, _>(store.frozen(author))?.is_none_or(|k| seq < k)
                && self.deps_met(store, applied, &commit.deps)?
            {
                report.records += self.apply(store, commit, now_ms)?;
                applied.set(author, seq);
                report.applied += 1;
            }
            if let Some((_, hash)) = steps.next_if(|&(at, _)| at == seq) {
                // A step: only where the commits read so far are those pass 1 followed to
                // the signature (the file did not change in between).
                if ctx.hash != hash {
                    return Err(IngestError::Changed);
                }
                st::<S, _>(store.put_chain(&ctx))?;
                st::<S, _>(store.step())?;
            }
        }
        let Some(key) = key else {
            return Err(IngestError::Storage(missing::<S>(format!(
                "the key of member {author}"
            ))));
        };
        // (A run that ends inside history received as a snapshot cannot be checked and
        // brings nothing new.)
        if let (Some(p), Some(hash)) = (stored_proof, last_hash) {
            let msg = head_message(self.dataset, author, last, &hash, p.digest.as_ref());
            if !key.verify(&msg, &p.sig) {
                return Err(IngestError::BadSignature { member: author });
            }
            if last > have {
                st::<S, _>(store.put_proof(author, &p))?;
            }
        }
        if last > have {
            st::<S, _>(store.put_chain(&ctx))?;
        }
        Ok(RunOutcome::Stored)
    }

    /// Reads a relayed run that pass 1 found to be another, validly signed version of its
    /// author's history from commit `seq` on, and turns it into evidence (or, when the
    /// evidence cannot be assembled here, freezes the author directly).
    fn relayed_fork<S: Storage, R: Read>(
        &self,
        store: &mut S,
        reader: &mut BundleReader<R>,
        run: Coverage,
        seq: u64,
        proof: &RunProof,
        forks: &mut Vec<ForkEvidence>,
    ) -> Res<(), S> {
        let mut commits = Vec::new();
        let mut size = 0usize;
        for s in run.first..=run.last {
            let bytes = next_commit(reader)?;
            if s >= seq {
                size += bytes.len();
                commits.push(bytes);
            }
        }
        let (digest, sig) = match proof {
            RunProof::Head(sig) => (None, *sig),
            RunProof::Bundle { digest, sig } => (Some(*digest), *sig),
            RunProof::Sender => unreachable!("a relayed run"),
        };
        let evidence = if size <= crate::fork::MAX_EVIDENCE {
            let base = self.hash_at(store, run.author, seq - 1)?;
            let theirs = Branch::new(commits, digest, sig);
            self.fork_evidence(store, run.author, seq - 1, base, theirs)?
        } else {
            None
        };
        match evidence {
            Some(ev) => forks.push(ev),
            None => self.freeze(store, run.author, seq)?,
        }
        Ok(())
    }

    /// Assembles evidence that `author` forked after commit `base`: `theirs` is the branch
    /// just received (checked), the other is the one held here, from its bodies and the
    /// author's proof at its end. `None` when this node no longer holds what the evidence
    /// needs (bodies compacted away, or its own history).
    fn fork_evidence<S: Storage>(
        &self,
        store: &S,
        author: MemberId,
        base: u64,
        base_hash: Hash,
        theirs: Branch,
    ) -> Res<Option<ForkEvidence>, S> {
        if author == self.me || theirs.commits.is_empty() {
            return Ok(None);
        }
        let have = st::<S, _>(store.chain(author))?.map_or(0, |c| c.seq);
        let their_end = base + theirs.commits.len() as u64;
        // Best: this node's version with its commits and the author's proof at its end.
        if let Some(proof) = st::<S, _>(store.proof(author, have))? {
            let mut commits = Vec::new();
            let mut size = theirs.commits.iter().map(|c| c.len()).sum::<usize>();
            let mut complete = true;
            for seq in base + 1..=have {
                match st::<S, _>(store.commit(author, seq))? {
                    Some(c)
                        if !c.bytes.is_empty()
                            && size + c.bytes.len() <= crate::fork::MAX_EVIDENCE =>
                    {
                        size += c.bytes.len();
                        commits.push(c.body());
                    }
                    _ => {
                        complete = false;
                        break;
                    }
                }
            }
            if complete && !commits.is_empty() {
                return Ok(Some(ForkEvidence {
                    author,
                    base,
                    base_hash,
                    a: Branch::new(commits, proof.digest, proof.sig),
                    b: crate::fork::Other::Branch(theirs),
                }));
            }
        }
        // Else (its commits were compacted away): a signature of the author over this node's
        // version at a commit inside the one just received.
        for seq in base + 1..=have.min(their_end).min(base + 100_000) {
            let (Some(p), Some(hash)) = (
                st::<S, _>(store.proof(author, seq))?,
                st::<S, _>(store.commit_hash(author, seq))?,
            ) else {
                continue;
            };
            return Ok(Some(ForkEvidence {
                author,
                base,
                base_hash,
                a: theirs,
                b: crate::fork::Other::Head {
                    seq,
                    hash,
                    digest: p.digest,
                    sig: p.sig,
                },
            }));
        }
        Ok(None)
    }

    /// Freezes `member` from commit `seq` on (its history forked there): nothing more is
    /// accepted from it as a sender and none of its commits from `seq` on is applied. A
    /// laptop never freezes itself (its own writes stay its own; the others refuse what it
    /// sends).
    pub fn freeze<S: Storage>(&self, store: &mut S, member: MemberId, seq: u64) -> Res<(), S> {
        if member != self.me {
            st::<S, _>(store.freeze(member, seq))?;
        }
        Ok(())
    }

    /// Honours the removals an admin's epoch grant announces (SPEC §14.1): each removed
    /// member is frozen after its cutoff at once, before the `_members` record saying so
    /// arrives, so that a laptop learning of a removal from a bundle's header never applies
    /// what the removed member wrote after it. The grant must have been checked
    /// ([`ferry_bundle::EpochGrant::from_bytes`]).
    pub fn honour_grant<S: Storage>(
        &self,
        store: &mut S,
        grant: &ferry_bundle::EpochGrant,
    ) -> Res<(), S> {
        for r in &grant.body.removed {
            // A removal record with a higher cutoff (a concurrent removal) counts over it.
            let rec = st::<S, _>(store.record(MEMBERS, &r.member.0.to_string()))?;
            let cutoff = removal(rec.as_ref()).map_or(r.cutoff, |x| x.cutoff.max(r.cutoff));
            self.freeze(store, r.member, cutoff.saturating_add(1))?;
        }
        Ok(())
    }

    /// Records verified fork evidence: freezes the author here and writes the evidence into
    /// `_forks/AUTHOR` as this node's own commit, so it travels to every member, each of
    /// which checks it and freezes the author too. Evidence that does not verify changes
    /// nothing (returns `Ok(false)`).
    pub fn record_fork<S: Storage>(
        &self,
        store: &mut S,
        evidence: &ForkEvidence,
        now_ms: u64,
    ) -> Res<bool, S> {
        let Some(member) = st::<S, _>(store.member(evidence.author))? else {
            return Ok(false);
        };
        let Ok(seq) = evidence.verify(self.dataset, &member.key) else {
            return Ok(false);
        };
        if evidence.author == self.me {
            return Ok(true);
        }
        self.freeze(store, evidence.author, seq)?;
        // Written unless `_forks` already holds evidence of a fork at this commit or before.
        let known = self.recorded_fork(store, evidence.author)?;
        if known.is_none_or(|k| k > seq) {
            self.commit_local(
                store,
                vec![Change::Record {
                    collection: FORKS.into(),
                    id: evidence.author.0.to_string(),
                    ops: vec![Op::Set(
                        FORK_FIELD.into(),
                        Value::Bytes(evidence.to_bytes()),
                    )],
                }],
                now_ms,
            )?;
        }
        Ok(true)
    }

    /// The earliest fork point of `author` that evidence in `_forks/AUTHOR` proves under its
    /// key (known here), if any.
    fn recorded_fork<S: Storage>(&self, store: &S, author: MemberId) -> Res<Option<u64>, S> {
        let Some(member) = st::<S, _>(store.member(author))? else {
            return Ok(None);
        };
        let Some(rec) = st::<S, _>(store.record(FORKS, &author.0.to_string()))? else {
            return Ok(None);
        };
        let mut best: Option<u64> = None;
        for sib in rec.fields.get(FORK_FIELD).into_iter().flatten() {
            if let ferry_model::record::Entry::Value(Value::Bytes(b)) = &sib.entry {
                if let Some(ev) = ForkEvidence::from_bytes(b).filter(|ev| ev.author == author) {
                    if let Ok(k) = ev.verify(self.dataset, &member.key) {
                        best = Some(best.map_or(k, |b| b.min(k)));
                    }
                }
            }
        }
        Ok(best)
    }

    /// Freezes the authors a stored commit carries verified fork evidence about, as soon as
    /// it is stored (not only once applied): the commit may itself wait for commits of the
    /// forked author that will never be applied.
    fn note_evidence<S: Storage>(&self, store: &mut S, commit: &Commit) -> Res<(), S> {
        for change in &commit.changes {
            let Change::Record {
                collection,
                id,
                ops,
                ..
            } = change
            else {
                continue;
            };
            // Only what `_forks/N` holds in its `evidence` field counts, checked before any
            // bytes are decoded.
            let Ok(n) = id.parse::<u32>() else { continue };
            if collection != FORKS || n == self.me.0 {
                continue;
            }
            for op in ops {
                let Op::Set(field, Value::Bytes(b)) = op else {
                    continue;
                };
                if field != FORK_FIELD {
                    continue;
                }
                let Some(ev) = ForkEvidence::from_bytes(b).filter(|ev| ev.author.0 == n) else {
                    continue;
                };
                if let Some(member) = st::<S, _>(store.member(ev.author))? {
                    if let Ok(seq) = ev.verify(self.dataset, &member.key) {
                        self.freeze(store, ev.author, seq)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Looks for evidence about `author` in the commits stored here but not applied yet (they
    /// may wait for commits of `author` itself, which its freeze would let them skip).
    fn scan_pending_evidence<S: Storage>(&self, store: &mut S, author: MemberId) -> Res<(), S> {
        let stored = st::<S, _>(store.stored())?;
        let applied = st::<S, _>(store.applied())?;
        for (a, top) in stored.iter() {
            if a == author || applied.get(a) >= top {
                continue;
            }
            let Some(chain) = st::<S, _>(store.chain(a))? else {
                continue;
            };
            for seq in applied.get(a) + 1..=top {
                let Some(c) = st::<S, _>(store.commit(a, seq))? else {
                    continue;
                };
                if c.bytes.is_empty() {
                    continue;
                }
                if let Ok(commit) = chain.decode_stored_as(seq, c.hlc, c.deps, &c.bytes, c.form) {
                    self.note_evidence(store, &commit)?;
                }
            }
        }
        Ok(())
    }

    /// Freezes `author` if `_forks/AUTHOR` holds evidence that verifies under its key (known
    /// here). Called when such a record is written and when the author's join arrives.
    fn honour_fork_record<S: Storage>(&self, store: &mut S, author: MemberId) -> Res<(), S> {
        // A laptop does not freeze itself: its own writes stay its own; the others refuse
        // what it sends.
        if author == self.me {
            return Ok(());
        }
        if let Some(k) = self.recorded_fork(store, author)? {
            self.freeze(store, author, k)?;
        }
        Ok(())
    }

    /// What waits here and for what: for each author with commits stored but not applied,
    /// how many wait and which other members' commits the first of them needs; for each
    /// author with runs kept aside, the earlier commits of that author they need. Read-only;
    /// for `status` and import summaries ("20 changes from hq wait for clinic-m's first
    /// change").
    pub fn blocked<S: Storage>(&self, store: &S) -> Res<Vec<Blocked>, S> {
        let stored = st::<S, _>(store.stored())?;
        let applied = st::<S, _>(store.applied())?;
        let mut out = Vec::new();
        for (author, top) in stored.iter() {
            let top = match st::<S, _>(store.frozen(author))? {
                Some(k) => top.min(k - 1),
                None => top,
            };
            let have = applied.get(author);
            if have >= top {
                continue;
            }
            let Some(c) = st::<S, _>(store.commit(author, have + 1))? else {
                continue;
            };
            let mut needs = Vec::new();
            for (m, n) in c.deps.iter() {
                let held = applied.get(m);
                if held >= n {
                    continue;
                }
                if st::<S, _>(store.frozen(m))?.is_some_and(|k| held + 1 >= k) {
                    continue;
                }
                needs.push(Needed {
                    member: m,
                    held,
                    needed: n,
                });
            }
            out.push(Blocked {
                author,
                waiting: top - have,
                needs,
            });
        }
        for (author, count) in st::<S, _>(store.stashed())? {
            let first = st::<S, _>(store.stashed_runs(author))?
                .iter()
                .map(|r| r.first)
                .min();
            let held = stored.get(author).max(applied.get(author));
            let needs = match first {
                Some(first) if first > held + 1 => vec![Needed {
                    member: author,
                    held,
                    needed: first - 1,
                }],
                // Runs of a member this node has not seen join: they need its first commit.
                _ if st::<S, _>(store.member(author))?.is_none() => vec![Needed {
                    member: author,
                    held: 0,
                    needed: 1,
                }],
                _ => Vec::new(),
            };
            out.push(Blocked {
                author,
                waiting: count,
                needs,
            });
        }
        Ok(out)
    }

    /// Whether everything a commit depends on (`deps`) is applied here. A frozen author's
    /// commits from its fork point on will never be applied anywhere, so a dependency on
    /// them counts as met once its commits before the fork are applied: honest work that
    /// saw them is not held up for ever.
    fn deps_met<S: Storage>(
        &self,
        store: &S,
        applied: &VersionVector,
        deps: &VersionVector,
    ) -> Res<bool, S> {
        for (m, n) in deps.iter() {
            let have = applied.get(m);
            if have >= n {
                continue;
            }
            match st::<S, _>(store.frozen(m))? {
                Some(k) if have + 1 >= k => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Whether member `m`'s join can be checked here (its inviter's promotion has arrived,
    /// or it was invited by the founder); `true` too when it never can (the check says why).
    fn inviter_ready<S: Storage>(&self, store: &S, m: MemberId) -> Res<bool, S> {
        Ok(!matches!(crate::roles::join_allowed(store, m)?, Ok(false)))
    }

    /// Whether this laptop judges member `m`'s join (records its key, or refuses it when its
    /// invitation expired): the admin that invited it, or every admin once that one is not
    /// an admin any more.
    fn judges<S: Storage>(&self, store: &S, m: MemberId) -> Res<bool, S> {
        let applied = st::<S, _>(store.applied())?;
        if !crate::roles::is_admin_in(store, self.me, &applied)? {
            return Ok(false);
        }
        let by = crate::roles::inviter(m);
        Ok(by == self.me || !crate::roles::is_admin_in(store, by, &applied)?)
    }

    /// Checks an author's first commit (genesis or join) and records the member's key.
    fn admit<S: Storage>(
        &self,
        store: &mut S,
        commit: &Commit,
        now_ms: u64,
        vouched: bool,
    ) -> Res<PublicKey, S> {
        let key = self.first_commit_key(store, commit, vouched)?;
        let label = match commit.changes.first() {
            Some(Change::Genesis { label, .. }) => label.clone(),
            Some(Change::Join(proof)) => proof.invite.label.clone(),
            _ => unreachable!("checked by first_commit_key"),
        };
        match st::<S, _>(store.member(commit.author))? {
            Some(m) if m.key != key => {
                return Err(IngestError::InvitationReused {
                    member: commit.author,
                });
            }
            Some(_) => {}
            None => {
                st::<S, _>(store.put_member(&MemberInfo {
                    member: commit.author,
                    key,
                    label,
                }))?;
                // A cancelled invitation admits nobody: its member's commits are kept but
                // never applied. On the admin an expired one too, by the admin's clock when
                // the join first reaches it ([`Engine::record_member_keys`] then writes the
                // cancellation, so every laptop follows).
                if commit.author != MemberId::ADMIN {
                    let rec = st::<S, _>(store.record(MEMBERS, &commit.author.0.to_string()))?;
                    let expired = self.judges(store, commit.author)?
                        && accepted_keys(rec.as_ref()).is_empty()
                        && invitation_expiry(rec.as_ref()).is_some_and(|e| now_ms > e);
                    if expired || cancellation(rec.as_ref()).is_some() {
                        self.freeze(store, commit.author, 1)?;
                    }
                }
                // Evidence that arrived before the member's join can be checked now: in the
                // `_forks` record, or in a commit still waiting for what it depends on.
                self.honour_fork_record(store, commit.author)?;
                self.scan_pending_evidence(store, commit.author)?;
            }
        }
        Ok(key)
    }

    /// The member key an author's first commit establishes, after checking its genesis or
    /// join against the admin key.
    /// `vouched`: the commit comes in the founder's snapshot, whose `_roles` records arrive
    /// only after its chains: its word stands for the inviter's role (as for the rest of the
    /// state it vouches for), and the inviter's chain, installed first, gives its key.
    fn first_commit_key<S: Storage>(
        &self,
        store: &S,
        commit: &Commit,
        vouched: bool,
    ) -> Res<PublicKey, S> {
        match commit.changes.first() {
            Some(Change::Genesis { admin_key, .. }) => {
                if *admin_key != self.admin_key {
                    return Err(IngestError::WrongGenesis);
                }
                Ok(*admin_key)
            }
            Some(Change::Join(proof)) => {
                // Signed by the admin whose range holds the member's number (crate `roles`).
                let member = commit.author;
                let by = crate::roles::inviter(member);
                // A laptop's own join was checked against its invitation when it joined.
                let allowed = match member == self.me || vouched {
                    true => Ok(true),
                    false => crate::roles::join_allowed(store, member)?,
                };
                match allowed {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(IngestError::InviterUnknown {
                            member,
                            inviter: by,
                        });
                    }
                    Err(_) => {
                        return Err(IngestError::InviterDemoted {
                            member,
                            inviter: by,
                        });
                    }
                }
                let key = match by {
                    MemberId::ADMIN => self.admin_key,
                    by => st::<S, _>(store.member(by))?.map(|m| m.key).ok_or(
                        IngestError::InviterUnknown {
                            member,
                            inviter: by,
                        },
                    )?,
                };
                proof
                    .verify(self.dataset, commit.author, &key)
                    .map_err(|source| IngestError::NotMember {
                        member: commit.author,
                        source,
                    })?;
                Ok(proof.member_key)
            }
            _ => unreachable!("the commit decoder requires a genesis or join first"),
        }
    }

    /// Applies a commit's record changes and advances the clock.
    /// (The commit is taken by value: its values move into the records, not copied.)
    /// Returns how many records of user collections (not ferry's own `_…`) it changed.
    fn apply<S: Storage>(&self, store: &mut S, commit: Commit, now_ms: u64) -> Res<u64, S> {
        let stamp = commit.stamp();
        let ctx = commit.context();
        let mut records = 0;
        // Whether the author is an admin in the commit's context (asked once, when it
        // writes a reserved collection).
        let mut admin: Option<bool> = None;
        // Writes to user collections are gathered and applied together (one probe of the
        // store per collection, see `apply_user_records`); they are applied before any
        // write to ferry's own collections, whose effects may read the store.
        let mut batch: Vec<(String, String, Vec<Op>)> = Vec::new();
        for change in commit.changes {
            if let Change::Record {
                collection,
                id,
                ops,
            } = change
            {
                if !collection.starts_with('_') {
                    batch.push((collection, id, ops));
                    records += 1;
                    continue;
                }
                Self::apply_user_records(store, std::mem::take(&mut batch), stamp, &ctx)?;
                let is_admin = match (collection.starts_with('_'), admin) {
                    (false, _) => false,
                    (true, Some(a)) => a,
                    (true, None) => {
                        let a = crate::roles::is_admin_in(store, commit.author, &ctx)?;
                        admin = Some(a);
                        a
                    }
                };
                if !may_write(commit.author, is_admin, &collection, &id) {
                    continue;
                }
                let role = match collection == MEMBERS && is_admin {
                    true => crate::roles::role_event(&ops, &ctx),
                    false => None,
                };
                let mut rec = st::<S, _>(store.record(&collection, &id))?.unwrap_or_default();
                if collection == FORKS {
                    // Evidence only accumulates: each write of the evidence field is kept
                    // beside the others (it supersedes nothing), and nothing else applies, so
                    // no member can erase evidence, and a snapshot carries all of it.
                    let none = VersionVector::new();
                    for op in ops {
                        if matches!(&op, Op::Set(f, Value::Bytes(_)) if f == FORK_FIELD) {
                            rec.apply_owned(stamp, &none, op);
                        }
                    }
                } else if collection == MEMBERS && !is_admin {
                    // A member may publish its addresses, but not set what only admins set
                    // (the key recorded as accepted, its removal, its role…) nor delete the
                    // record holding them: only an admin says which device is member N.
                    for op in ops {
                        let keeps = match &op {
                            Op::Delete => false,
                            op => op.field().is_none_or(|f| !ADMIN_FIELDS.contains(&f)),
                        };
                        if keeps {
                            rec.apply_owned(stamp, &ctx, op);
                        }
                    }
                } else {
                    for op in ops {
                        rec.apply_owned(stamp, &ctx, op);
                    }
                }
                let freezes = match collection == MEMBERS && is_admin {
                    true => frozen_from(&rec),
                    false => None,
                };
                let cutoffs = removal_cutoffs(&rec);
                st::<S, _>(store.put_record(&collection, &id, &rec))?;
                drop(rec);
                if let (Some(event), Ok(n)) = (role, id.parse::<u32>()) {
                    crate::roles::record_event(store, MemberId(n), stamp, &event)?;
                }
                if let (Some(from), Ok(n)) = (freezes, id.parse::<u32>()) {
                    let m = MemberId(n);
                    self.freeze(store, m, from)?;
                    // Concurrent removals take the highest cutoff: a freeze a lower one set
                    // moves up (unless a fork froze the member earlier still).
                    let now = st::<S, _>(store.frozen(m))?;
                    if let Some(f) = now.filter(|&f| f < from && m != self.me) {
                        let by_removal = cutoffs.contains(&(f - 1));
                        let by_fork = self.recorded_fork(store, m)?.is_some_and(|k| k <= f);
                        // (What was applied here meanwhile of other members that had seen
                        // the held-back changes stays as applied: those changes now apply
                        // after it — the removing commit first of all. Later commits that
                        // depend on them wait for them again, as `deps_met` asks the
                        // freeze as it is now.)
                        if by_removal && !by_fork {
                            st::<S, _>(store.refreeze(m, from))?;
                        }
                    }
                }
                if collection == FORKS {
                    if let Ok(n) = id.parse::<u32>() {
                        self.honour_fork_record(store, MemberId(n))?;
                    }
                }
            }
        }
        Self::apply_user_records(store, batch, stamp, &ctx)?;
        st::<S, _>(store.set_applied(commit.author, commit.seq))?;
        let clock = st::<S, _>(store.clock())?;
        let seen = clock.observe(commit.hlc, now_ms);
        if seen > clock {
            st::<S, _>(store.set_clock(seen))?;
        }
        Ok(records)
    }

    /// Applies one commit's writes to user collections, in order: the records of each
    /// collection are read in one call (`Storage::records_of`, which can tell new records
    /// without reading each), each record's ops applied (a record written twice takes both
    /// in order), and each record written once.
    fn apply_user_records<S: Storage>(
        store: &mut S,
        batch: Vec<(String, String, Vec<Op>)>,
        stamp: ferry_model::Stamp,
        ctx: &VersionVector,
    ) -> Res<(), S> {
        if batch.is_empty() {
            return Ok(());
        }
        // Collections in order of first write, each with its records in order of first
        // write and every op of each.
        let mut groups: Vec<(String, Vec<RecordOps>)> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        for (collection, id, ops) in batch {
            match group_of.get(collection.as_str()) {
                Some(&g) => groups[g].1.push((id, ops)),
                None => {
                    group_of.insert(collection.clone(), groups.len());
                    groups.push((collection, vec![(id, ops)]));
                }
            }
        }
        for (_, records) in &mut groups {
            let mut first: HashMap<&str, usize> = HashMap::with_capacity(records.len());
            let twice = records
                .iter()
                .enumerate()
                .any(|(i, (id, _))| first.insert(id.as_str(), i).is_some());
            drop(first);
            if twice {
                let mut merged: Vec<RecordOps> = Vec::with_capacity(records.len());
                let mut at: HashMap<String, usize> = HashMap::new();
                for (id, ops) in records.drain(..) {
                    match at.get(&id) {
                        Some(&i) => merged[i].1.extend(ops),
                        None => {
                            at.insert(id.clone(), merged.len());
                            merged.push((id, ops));
                        }
                    }
                }
                *records = merged;
            }
        }
        for (collection, records) in groups {
            let ids: Vec<&str> = records.iter().map(|(id, _)| id.as_str()).collect();
            let states = st::<S, _>(store.records_of(&collection, &ids))?;
            drop(ids);
            if states.len() != records.len() {
                return Err(IngestError::Storage(missing::<S>(format!(
                    "{} of {} records of {collection}",
                    states.len(),
                    records.len()
                ))));
            }
            let mut new = Vec::new();
            for ((id, ops), state) in records.into_iter().zip(states) {
                let Some(mut rec) = state else {
                    new.push((id, ops));
                    continue;
                };
                for op in ops {
                    rec.apply_owned(stamp, ctx, op);
                }
                st::<S, _>(store.write_record(&collection, &id, &rec, true))?;
            }
            if !new.is_empty() {
                st::<S, _>(store.insert_new_records(&collection, stamp, ctx, new))?;
            }
        }
        Ok(())
    }

    /// Applies every pending commit whose dependencies are now present and checks every
    /// stashed run whose prerequisites have arrived, until nothing more can be done.
    pub fn settle<S: Storage>(&self, store: &mut S, now_ms: u64) -> Res<SettleReport, S> {
        let mut report = SettleReport::default();
        for run in st::<S, _>(store.expire_stash(now_ms.saturating_sub(STASH_MAX_AGE_MS)))? {
            report.dropped.push((
                run.author,
                run.first,
                run.last,
                "they waited 30 days for the changes before them".into(),
            ));
        }
        loop {
            let mut progress = false;
            for (author, _) in st::<S, _>(store.stashed())? {
                progress |= self.unstash(store, author, &mut report, now_ms)?;
            }
            let stored = st::<S, _>(store.stored())?;
            let mut applied = st::<S, _>(store.applied())?;
            for (author, top) in stored.iter() {
                let mut chain: Option<ChainContext> = None;
                // A frozen author's commits from its fork point on are never applied.
                let top = match st::<S, _>(store.frozen(author))? {
                    Some(k) => top.min(k - 1),
                    None => top,
                };
                while applied.get(author) < top {
                    let seq = applied.get(author) + 1;
                    // (Applying one of its commits may freeze the author.)
                    if st::<S, _>(store.frozen(author))?.is_some_and(|k| seq >= k) {
                        break;
                    }
                    let c = st::<S, _>(store.commit(author, seq))?.ok_or_else(|| {
                        IngestError::Storage(missing::<S>(format!("commit {seq} of {author}")))
                    })?;
                    if !self.deps_met(store, &applied, &c.deps)? {
                        break;
                    }
                    if chain.is_none() {
                        chain = st::<S, _>(store.chain(author))?;
                    }
                    let ctx = chain.as_ref().expect("stored implies a chain");
                    let commit = ctx
                        .decode_stored_as(seq, c.hlc, c.deps, &c.bytes, c.form)
                        .map_err(|source| IngestError::Commit {
                            author,
                            seq,
                            source,
                        })?;
                    drop(c.bytes);
                    self.apply(store, commit, now_ms)?;
                    applied.set(author, seq);
                    report.applied += 1;
                    progress = true;
                }
            }
            if !progress {
                self.record_member_keys(store, now_ms)?;
                return Ok(report);
            }
        }
    }

    /// On the admin: writes into `_members/N` (field [`MEMBER_KEY_FIELD`]) the key of every
    /// member whose join it accepted, once. A second laptop that used the same invitation
    /// learns from it, by name, that the admin took the other one (its own key differs),
    /// instead of waiting for ever on changes it believes it holds.
    fn record_member_keys<S: Storage>(&self, store: &mut S, now_ms: u64) -> Res<(), S> {
        let applied = st::<S, _>(store.applied())?;
        if !crate::roles::is_admin_in(store, self.me, &applied)? {
            return Ok(());
        }
        let mut changes = Vec::new();
        for m in st::<S, _>(store.members())? {
            if m.member == MemberId::ADMIN || !self.judges(store, m.member)? {
                continue;
            }
            let id = m.member.0.to_string();
            let rec = st::<S, _>(store.record(MEMBERS, &id))?;
            if accepted_keys(rec.as_ref()).contains(&m.key) || cancellation(rec.as_ref()).is_some()
            {
                continue;
            }
            // A join that reached this admin after its invitation expired was refused when
            // it arrived (frozen from its first commit): say so to every laptop.
            if accepted_keys(rec.as_ref()).is_empty()
                && invitation_expiry(rec.as_ref()).is_some()
                && st::<S, _>(store.frozen(m.member))? == Some(1)
            {
                changes.push(Change::Record {
                    collection: MEMBERS.into(),
                    id,
                    ops: vec![Op::Set(
                        MEMBER_CANCELLED_FIELD.into(),
                        Value::Str(
                            "the invitation expired before its first bundle reached the admin"
                                .into(),
                        ),
                    )],
                });
                continue;
            }
            changes.push(Change::Record {
                collection: MEMBERS.into(),
                id,
                ops: vec![Op::Set(
                    MEMBER_KEY_FIELD.into(),
                    Value::Bytes(m.key.0.to_vec()),
                )],
            });
        }
        if !changes.is_empty() {
            self.commit_local(store, changes, now_ms)?;
        }
        Ok(())
    }

    /// Moves an author's stashed runs into its chain as far as they check out. A run that
    /// fails its check is dropped on its own; the others are kept. Returns whether any
    /// commit moved.
    fn unstash<S: Storage>(
        &self,
        store: &mut S,
        author: MemberId,
        report: &mut SettleReport,
        now_ms: u64,
    ) -> Res<bool, S> {
        let mut moved = false;
        loop {
            let have = st::<S, _>(store.chain(author))?.map_or(0, |c| c.seq);
            let mut candidates = Vec::new();
            for run in st::<S, _>(store.stashed_runs(author))? {
                if run.last <= have {
                    st::<S, _>(store.drop_stashed(run.id))?;
                } else if run.first <= have + 1
                    && run.proof.is_some()
                    && (have > 0 || self.inviter_ready(store, author)?)
                {
                    candidates.push(run);
                }
            }
            // The longest run first: one check moves the most.
            candidates.sort_by_key(|r| std::cmp::Reverse(r.last));
            let mut progressed = false;
            for run in candidates {
                match self.check_stashed(store, &run, have)? {
                    Ok(()) => {
                        self.promote(store, &run, have, now_ms)?;
                        report.unstashed += run.last - have;
                        progressed = true;
                        break;
                    }
                    Err(reason) => {
                        report.dropped.push((author, run.first, run.last, reason));
                        st::<S, _>(store.drop_stashed(run.id))?;
                    }
                }
            }
            if !progressed {
                return Ok(moved);
            }
            moved = true;
        }
    }

    /// Checks a stashed run against the chain held (`have` commits): the overlap must be the
    /// same commits, the rest must decode in order, a first commit must be a valid genesis
    /// or join, and the proof must verify. `Ok(Err(reason))` when it does not.
    fn check_stashed<S: Storage>(
        &self,
        store: &S,
        run: &crate::StashedRun,
        have: u64,
    ) -> Res<Result<(), String>, S> {
        let author = run.author;
        let fetch = |seq: u64| -> Res<Option<CommitBytes>, S> {
            st::<S, _>(store.stashed_commit(run.id, seq))
        };
        for seq in run.first..=have {
            let Some(bytes) = fetch(seq)? else {
                return Ok(Err(format!("commit {seq} is missing from the run")));
            };
            if !self.is_held(store, author, seq, &bytes)? {
                return Ok(Err(format!(
                    "commit {seq} differs from the one held here (a fork)"
                )));
            }
        }
        let mut ctx = st::<S, _>(store.chain(author))?
            .unwrap_or_else(|| ChainContext::new(self.dataset, author));
        let mut key = st::<S, _>(store.member(author))?.map(|m| m.key);
        for seq in have + 1..=run.last {
            let Some(bytes) = fetch(seq)? else {
                return Ok(Err(format!("commit {seq} is missing from the run")));
            };
            let commit = match ctx.decode_bytes(&bytes) {
                Ok(c) => c,
                Err(e) => return Ok(Err(format!("commit {seq} is invalid: {e}"))),
            };
            if seq == 1 {
                match self.first_commit_key(store, &commit, false) {
                    Ok(k) if key.is_none_or(|held| held == k) => key = Some(k),
                    Ok(_) => return Ok(Err("another device already joined as this member".into())),
                    Err(e) => return Ok(Err(e.to_string())),
                }
            }
        }
        let proof = run.proof.as_ref().expect("candidates have a proof");
        let msg = head_message(
            self.dataset,
            author,
            run.last,
            &ctx.hash,
            proof.digest.as_ref(),
        );
        if !key.is_some_and(|k| k.verify(&msg, &proof.sig)) {
            return Ok(Err(format!(
                "the signature over commit {} does not verify",
                run.last
            )));
        }
        Ok(Ok(()))
    }

    /// Stores a checked stashed run's new commits and proof, and forgets the run.
    fn promote<S: Storage>(
        &self,
        store: &mut S,
        run: &crate::StashedRun,
        have: u64,
        now_ms: u64,
    ) -> Res<(), S> {
        let author = run.author;
        let mut ctx = st::<S, _>(store.chain(author))?
            .unwrap_or_else(|| ChainContext::new(self.dataset, author));
        for seq in have + 1..=run.last {
            let bytes = st::<S, _>(store.stashed_commit(run.id, seq))?.ok_or_else(|| {
                IngestError::Storage(missing::<S>(format!("stashed commit {seq}")))
            })?;
            let commit = ctx
                .decode_bytes(&bytes)
                .map_err(|source| IngestError::Commit {
                    author,
                    seq,
                    source,
                })?;
            if seq == 1 {
                self.admit(store, &commit, now_ms, false)?;
            }
            self.note_evidence(store, &commit)?;
            st::<S, _>(store.insert_commit(&StoredCommit {
                author,
                seq,
                hash: ctx.hash,
                hlc: commit.hlc,
                deps: commit.deps,
                names: ctx.names.len() as u32,
                bytes: bytes.bytes,
                form: bytes.form,
            }))?;
        }
        let proof = run.proof.clone().expect("checked");
        st::<S, _>(store.put_proof(author, &proof))?;
        st::<S, _>(store.put_chain(&ctx))?;
        st::<S, _>(store.drop_stashed(run.id))?;
        Ok(())
    }

    /// Whether to install a snapshot of `state` (with history compacted up to `compacted`):
    /// only when this node lacks commits it can no longer get any other way, and everything
    /// it applied from others is in the snapshot (so nothing it holds is lost).
    fn snapshot_wanted<S: Storage>(
        &self,
        store: &S,
        state: &VersionVector,
        compacted: &VersionVector,
        forks: &[(MemberId, u64)],
    ) -> Res<Option<Snapshot>, S> {
        let stored = st::<S, _>(store.stored())?;
        let applied = st::<S, _>(store.applied())?;
        let needs = compacted.iter().any(|(a, c)| stored.get(a) < c);
        let mut covered = true;
        for (a, n) in applied.iter() {
            covered &= if a == self.me {
                n >= state.get(a)
            } else if n <= state.get(a) {
                true
            } else {
                // A member whose history forked (known here, or proven by the snapshot's
                // evidence): its commits from the fork point on do not count, so the
                // snapshot loses nothing if it holds the member's commits before it.
                let local = st::<S, _>(store.frozen(a))?;
                let proven = forks.iter().filter(|(m, _)| *m == a).map(|&(_, k)| k).min();
                match local.into_iter().chain(proven).min() {
                    Some(k) => state.get(a) + 1 >= k,
                    None => false,
                }
            };
        }
        Ok((needs && covered).then(|| Snapshot {
            state: state.clone(),
            stored,
        }))
    }

    /// Installs one author's chain from a snapshot, if this node holds less of it.
    #[allow(clippy::too_many_arguments)]
    fn install_chain<S: Storage>(
        &self,
        store: &mut S,
        author: MemberId,
        seq: u64,
        held: u64,
        hash: Hash,
        hlc: Hlc,
        deps: VersionVector,
        names: Vec<String>,
        first: &[u8],
        now_ms: u64,
    ) -> Res<(), S> {
        if held >= seq || seq == 0 {
            // This node holds as much of the author as the snapshot states: nothing to adopt.
            // (Where the snapshot's hash at `seq` differs from the one held, the author's
            // history forked and the admin holds the other version: the version held here
            // stays, as everywhere a fork is met.)
            return Ok(());
        }
        if held == 0 {
            // The author's membership comes with its commit 1, checked like any other (its
            // inviter's role as the snapshot states it).
            let mut ctx = ChainContext::new(self.dataset, author);
            let commit = ctx.decode(first).map_err(|source| IngestError::Commit {
                author,
                seq: 1,
                source,
            })?;
            self.admit(store, &commit, now_ms, true)?;
            st::<S, _>(store.insert_commit(&StoredCommit {
                author,
                seq: 1,
                hash: ctx.hash,
                hlc: commit.hlc,
                deps: commit.deps,
                names: ctx.names.len() as u32,
                bytes: first.to_vec(),
                form: Form::Row,
            }))?;
            if seq == 1 {
                st::<S, _>(store.put_chain(&ctx))?;
                // Without the author's signature over it, this node cannot pass the commit
                // on; marked compacted, a member that lacks it gets a snapshot instead.
                let upto: VersionVector = [(author, 1)].into_iter().collect();
                st::<S, _>(store.compact(&upto))?;
                return Ok(());
            }
        }
        // The name table follows the rules a commit's names follow (§5.2): decoding the
        // author's next commits uses it.
        let mut seen = std::collections::HashSet::with_capacity(names.len());
        for name in &names {
            if name.is_empty() || name.len() > ferry_model::limits::MAX_NAME || !seen.insert(name) {
                return Err(IngestError::BadSnapshot(format!(
                    "the name table of member {author} breaks the rules for names"
                )));
            }
        }
        // Commit `seq` is known by its hash, clock and context; its body (and those before
        // it) were compacted away by the sender.
        st::<S, _>(store.insert_commit(&StoredCommit {
            author,
            seq,
            hash,
            hlc,
            deps: deps.clone(),
            names: names.len() as u32,
            bytes: Vec::new(),
            form: Form::Row,
        }))?;
        let ctx = ChainContext::from_parts(author, seq, hash, hlc, deps, names);
        st::<S, _>(store.put_chain(&ctx))?;
        let upto: VersionVector = [(author, seq)].into_iter().collect();
        st::<S, _>(store.compact(&upto))?;
        Ok(())
    }

    /// Ends a snapshot install: what is applied becomes the snapshot's state, then this
    /// node's own later commits are applied again on top. Returns what is applied.
    fn finish_snapshot<S: Storage>(
        &self,
        store: &mut S,
        s: Snapshot,
        now_ms: u64,
    ) -> Res<VersionVector, S> {
        let mut applied = s.state.clone();
        let own_from = s.state.get(self.me);
        applied.set(self.me, own_from);
        st::<S, _>(store.reset_applied(&applied))?;
        let top = s.stored.get(self.me);
        if top > own_from {
            let chain = st::<S, _>(store.chain(self.me))?.expect("own chain");
            for seq in own_from + 1..=top {
                let c = st::<S, _>(store.commit(self.me, seq))?.ok_or_else(|| {
                    IngestError::Storage(missing::<S>(format!("own commit {seq}")))
                })?;
                let commit = chain
                    .decode_stored_as(seq, c.hlc, c.deps, &c.bytes, c.form)
                    .map_err(|source| IngestError::Commit {
                        author: self.me,
                        seq,
                        source,
                    })?;
                self.apply(store, commit, now_ms)?;
            }
            applied.set(self.me, top);
        }
        Ok(applied)
    }

    /// Starts reading a bundle with the key of the epoch its header names.
    fn open_sealed<S: Storage, R: Read>(
        &self,
        store: &S,
        opener: Opener<R>,
        keys: &Keyring,
    ) -> Res<BundleReader<R>, S> {
        let epoch = opener.header().epoch_id();
        let key = match keys.key(epoch) {
            Some(k) => k,
            None if opener.is_plaintext() => keys.current().1,
            None => {
                // A grant of member 1's that removes this laptop says so (the reason stays
                // among the members: only the cutoff and the date travel in clear). Other
                // admins' grants are judged by the node, which knows who is an admin.
                let header = opener.header();
                let admin = |m: MemberId| (m == MemberId::ADMIN).then_some(self.admin_key);
                if let Ok(g) = ferry_bundle::EpochGrant::read_for_header(
                    &header.grant,
                    self.dataset,
                    header.grant_format,
                    header.epoch_id(),
                    admin,
                ) {
                    if let Some(r) = g.body.removed.iter().find(|r| r.member == self.me) {
                        return Err(IngestError::RemovedHere {
                            cutoff: r.cutoff,
                            at_ms: g.body.at_ms,
                        });
                    }
                }
                return Err(IngestError::NoEpochKey { epoch });
            }
        };
        Ok(opener.decrypt_with(key, |k| Self::dictionary_bytes(store, k))?)
    }

    /// Starts a bundle from this node: the header and its receipt.
    fn start_bundle<S: Storage, W: Write>(
        &self,
        store: &S,
        out: W,
        salt: [u8; 16],
        keys: &Keyring,
        mut options: WriteOptions,
        dictionary: Option<ferry_bundle::Dictionary>,
    ) -> Res<(BundleWriter<W>, VersionVector), S> {
        // A dataset with more than one admin writes version 7 (SPEC §15): a reader that does
        // not know its rules refuses the bundle instead of dropping the admins' changes.
        if crate::roles::any(store)? {
            options.version = options.version.max(ferry_bundle::VERSION_ADMINS);
        }
        let mut header = Header::new(self.dataset, self.me, salt);
        let (epoch, key) = keys.current();
        if !options.plaintext && epoch.number > 0 {
            header.epoch = epoch.number;
            header.signer = epoch.signer;
            let grant = keys.grant();
            // An epoch another admin began, or a grant that names one (SPEC §16).
            if epoch.signer != MemberId::ADMIN
                || grant.is_some_and(|(_, v, _)| v == ferry_bundle::VERSION_KEYS)
            {
                options.version = options.version.max(ferry_bundle::VERSION_KEYS);
            }
            if options.grant {
                if let Some((_, format, grant)) = grant {
                    header.grant = grant.to_vec();
                    header.grant_format = format;
                }
            }
        }
        let receipt = st::<S, _>(store.stored())?;
        let mut w = match dictionary {
            Some(d) => BundleWriter::with_dictionary(out, &header, key, options, d)?,
            _ => BundleWriter::new(out, &header, key, options)?,
        };
        w.push(&Item::Receipt(receipt.clone()))?;
        Ok((w, receipt))
    }

    /// Writes runs with their proofs: this node signs its own head (or the bundle does);
    /// other authors' runs carry the proof this node holds at their end.
    fn push_runs<S: Storage, W: Write>(
        &self,
        store: &S,
        w: &mut BundleWriter<W>,
        runs: &[ExportRun],
        receipt: &VersionVector,
        signer: &SecretKey,
        report: &mut ExportReport,
    ) -> Res<(), S> {
        for run in runs {
            let proof = if run.author == self.me && run.last == receipt.get(self.me) {
                RunProof::Sender
            } else if run.author == self.me {
                let hash = self.hash_at(store, self.me, run.last)?;
                RunProof::Head(signer.sign(&head_message(
                    self.dataset,
                    self.me,
                    run.last,
                    &hash,
                    None,
                )))
            } else {
                match st::<S, _>(store.proof(run.author, run.last))? {
                    Some(Proof {
                        digest: Some(digest),
                        sig,
                        ..
                    }) => RunProof::Bundle { digest, sig },
                    Some(Proof {
                        digest: None, sig, ..
                    }) => RunProof::Head(sig),
                    None => {
                        return Err(IngestError::Storage(missing::<S>(format!(
                            "proof for commit {} of {}",
                            run.last, run.author
                        ))));
                    }
                }
            };
            w.push(&Item::Run {
                author: run.author,
                first: run.first,
                count: run.last - run.first + 1,
                proof,
            })?;
            for seq in run.first..=run.last {
                let c = st::<S, _>(store.commit(run.author, seq))?
                    .filter(|c| !c.bytes.is_empty())
                    .ok_or_else(|| {
                        IngestError::Storage(missing::<S>(format!(
                            "commit {seq} of {} (compacted away: plan runs after it)",
                            run.author
                        )))
                    })?;
                w.push(&Item::commit(c.body()))?;
                report.commits += 1;
            }
            report.runs.push(*run);
        }
        Ok(())
    }

    /// Signs and seals a bundle: the signature vouches for this node's head and the digest.
    fn seal<S: Storage, W: Write>(
        &self,
        store: &S,
        w: BundleWriter<W>,
        receipt: &VersionVector,
        signer: &SecretKey,
        mut report: ExportReport,
    ) -> Res<(W, ExportReport), S> {
        let head = receipt.get(self.me);
        let hash = self.hash_at(store, self.me, head)?;
        let (out, digest) =
            w.finish(|d| signer.sign(&head_message(self.dataset, self.me, head, &hash, Some(d))))?;
        report.digest = digest;
        Ok((out, report))
    }

    /// Writes a snapshot bundle: this node's records as they are, for members that need
    /// commits it has compacted away, then the commits it holds but has not applied.
    pub fn export_snapshot<S: Storage, W: Write>(
        &self,
        store: &S,
        out: W,
        salt: [u8; 16],
        keys: &Keyring,
        signer: &SecretKey,
        mut options: WriteOptions,
    ) -> Res<(W, ExportReport), S> {
        // Version 3 only when a record holds ghosts (values deletes removed), which a
        // version 1 record state cannot carry (SPEC §13); otherwise any reader reads it.
        let mut ghosts = false;
        st::<S, _>(store.visit_records(&mut |_, _, state| {
            ghosts |= !state.ghosts.is_empty();
            Ok(())
        }))?;
        options.version = if ghosts {
            ferry_bundle::VERSION_GHOSTS
        } else {
            ferry_bundle::VERSION
        };
        // A sealed bundle of a later key epoch is version 5, whose snapshots always carry
        // ghosts (SPEC §14).
        let mut version = options.version;
        if !options.plaintext && keys.current().0.number > 0 {
            version = ferry_bundle::VERSION_EPOCHS;
        }
        if crate::roles::any(store)? {
            version = ferry_bundle::VERSION_ADMINS;
        }
        // Then what is held but not applied (pending), as ordinary runs. Version 11 when
        // they hold a columnar commit, or once every member reads it (SPEC §17.2).
        let pending: Vec<ExportRun> = {
            let (stored, applied) = (st::<S, _>(store.stored())?, st::<S, _>(store.applied())?);
            stored
                .iter()
                .filter(|&(a, top)| applied.get(a) < top)
                .map(|(author, last)| Coverage {
                    author,
                    first: applied.get(author) + 1,
                    last,
                })
                .collect()
        };
        if self.columnar_in(store, &pending)? || self.everyone_reads_columns(store)? {
            version = ferry_bundle::VERSION_COLUMNS;
            options.version = version;
        }
        let (mut w, receipt) = self.start_bundle(store, out, salt, keys, options, None)?;
        let state = st::<S, _>(store.applied())?;
        let mut compacted = VersionVector::new();
        for (a, _) in receipt.iter() {
            compacted.set(a, st::<S, _>(store.compacted(a))?);
        }
        w.push(&Item::Snapshot {
            state: state.clone(),
            compacted,
        })?;
        for (author, seq) in state.iter() {
            let at = st::<S, _>(store.commit(author, seq))?.ok_or_else(|| {
                IngestError::Storage(missing::<S>(format!("commit {seq} of {author}")))
            })?;
            let first = st::<S, _>(store.commit(author, 1))?.ok_or_else(|| {
                IngestError::Storage(missing::<S>(format!("commit 1 of {author}")))
            })?;
            let chain = st::<S, _>(store.chain(author))?
                .ok_or_else(|| IngestError::Storage(missing::<S>(format!("chain of {author}"))))?;
            w.push(&Item::SnapshotChain {
                author,
                seq,
                hash: at.hash,
                hlc: at.hlc,
                deps: at.deps,
                names: chain.names[..at.names as usize].to_vec(),
                first: first.bytes,
            })?;
        }
        let mut failed = None;
        st::<S, _>(store.visit_records(&mut |collection, id, state| {
            // wire-format: begin
            let mut bytes = postcard::to_allocvec(state).expect("a record state encodes");
            if ferry_bundle::carries_ghosts(version) {
                bytes = postcard::to_extend(&state.ghosts, bytes).expect("ghosts encode");
            }
            let item = Item::SnapshotRecord {
                collection: collection.to_string(),
                id: id.to_string(),
                state: bytes,
            };
            // wire-format: end
            if let Err(e) = w.push(&item) {
                failed = Some(e);
            }
            Ok(())
        }))?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        let mut report = ExportReport::default();
        self.push_runs(store, &mut w, &pending, &receipt, signer, &mut report)?;
        self.seal(store, w, &receipt, signer, report)
    }

    /// Records this node's own commit of `changes` at wall time `now_ms` and applies it.
    pub fn commit_local<S: Storage>(
        &self,
        store: &mut S,
        changes: Vec<Change>,
        now_ms: u64,
    ) -> Res<Commit, S> {
        let mut ctx = st::<S, _>(store.chain(self.me))?
            .unwrap_or_else(|| ChainContext::new(self.dataset, self.me));
        let hlc =
            st::<S, _>(store.clock())?
                .max(ctx.hlc)
                .tick(now_ms)
                .ok_or(IngestError::Commit {
                    author: self.me,
                    seq: ctx.seq + 1,
                    source: CommitError::ClockNotMonotonic,
                })?;
        let mut deps = st::<S, _>(store.applied())?;
        // Never less than what this laptop's previous commit had seen: installing an admin
        // snapshot can set what is applied of a forked member back to its fork point (its
        // later commits do not count), but what this laptop saw before stays seen, and a
        // commit's context only grows along its author's chain (SPEC §5.2).
        for (m, n) in ctx.deps.iter() {
            if n > deps.get(m) {
                deps.set(m, n);
            }
        }
        deps.set(self.me, 0);
        // The newest clock among the other members' commits applied here.
        let mut seen: Option<Hlc> = None;
        for (m, n) in deps.iter() {
            if let Some(h) = st::<S, _>(store.commit_hlc(m, n))? {
                seen = seen.max(Some(Hlc::from_parts(h.ms(), 0)));
            }
        }
        let mut commit = Commit {
            author: self.me,
            seq: ctx.seq + 1,
            hlc,
            deps,
            seen,
            changes,
        };
        // The columnar form for a commit of many records once every member reads it (SPEC
        // §17.2); its changes are applied here in the order readers decode them (grouped by
        // collection), so every laptop applies the same sequence.
        let form = if commit.seq > 1
            && worth_columns(&commit.changes)
            && self.everyone_reads_columns(store)?
        {
            commit.changes = grouped_by_collection(std::mem::take(&mut commit.changes));
            Form::Columnar
        } else {
            Form::Row
        };
        let bytes = ctx
            .encode_as(&commit, form)
            .map_err(|source| IngestError::Commit {
                author: self.me,
                seq: commit.seq,
                source,
            })?;
        if commit.seq == 1 {
            self.admit(store, &commit, now_ms, false)?;
        }
        st::<S, _>(store.insert_commit(&StoredCommit {
            author: self.me,
            seq: commit.seq,
            hash: ctx.hash,
            hlc,
            deps: commit.deps.clone(),
            names: ctx.names.len() as u32,
            bytes,
            form,
        }))?;
        st::<S, _>(store.put_chain(&ctx))?;
        self.apply(store, commit.clone(), now_ms)?;
        Ok(commit)
    }

    /// Whether every member this node knows, but those removed or whose invitation was
    /// cancelled, has said it reads version 11 (its `_members/N` field `reads`, SPEC §17.2).
    pub fn everyone_reads_columns<S: Storage>(&self, store: &S) -> Res<bool, S> {
        for m in st::<S, _>(store.members())? {
            let rec = st::<S, _>(store.record(MEMBERS, &m.member.0.to_string()))?;
            if rec.as_ref().is_some_and(|r| frozen_from(r).is_some()) {
                continue;
            }
            if member_reads(rec.as_ref()) < i64::from(ferry_bundle::VERSION_COLUMNS) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes a bundle carrying `runs` (see [`crate::plan::plan_export`]) and, as gossip,
    /// `peer_receipts`, signed by this node.
    #[allow(clippy::too_many_arguments)]
    pub fn export<S: Storage, W: Write>(
        &self,
        store: &S,
        runs: &[ExportRun],
        peer_receipts: &[(MemberId, VersionVector)],
        out: W,
        salt: [u8; 16],
        keys: &Keyring,
        signer: &SecretKey,
        mut options: WriteOptions,
    ) -> Res<(W, ExportReport), S> {
        let columnar = self.columnar_in(store, runs)?;
        if columnar || self.everyone_reads_columns(store)? {
            options.version = ferry_bundle::VERSION_COLUMNS;
        }
        if columnar {
            // Columnar commits are laid out for compression already: a fast level keeps them
            // smaller than row commits at level 17, at many times the speed (SPEC §17).
            options.level = options.level.min(COLUMNAR_LEVEL);
            options.workers = COLUMNAR_WORKERS;
        }
        // Small bundles with the dataset's dictionary once every member holds it (SPEC
        // §18); columnar runs are large and laid out for compression already.
        let dictionary = if columnar {
            None
        } else {
            self.shared_dictionary(store, options.recipient)?
        };
        let (mut w, receipt) = self.start_bundle(store, out, salt, keys, options, dictionary)?;
        for (m, vv) in peer_receipts {
            w.push(&Item::PeerReceipt(*m, vv.clone()))?;
        }
        let mut report = ExportReport::default();
        self.push_runs(store, &mut w, runs, &receipt, signer, &mut report)?;
        self.seal(store, w, &receipt, signer, report)
    }

    /// Whether one of `runs` holds a columnar commit (its bundle is version 11, SPEC §17.2).
    fn columnar_in<S: Storage>(&self, store: &S, runs: &[ExportRun]) -> Res<bool, S> {
        for run in runs {
            if st::<S, _>(store.columnar_in(run.author, run.first, run.last))? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The beginnings of chains a bundle carrying `runs` depends on that this node can
    /// carry too, for [`crate::plan::carry_beginnings`]: for each run not starting at
    /// commit 1, the commits before it; for each other member the runs' commits depend on,
    /// commits 1 up to the newest they need (else the member's join alone), ending at one
    /// this node holds a proof for. Only beginnings of at most [`BEGINNING_BYTES`] whose
    /// bodies are still here (not compacted away) are given.
    pub fn beginnings<S: Storage>(&self, store: &S, runs: &[ExportRun]) -> Res<Vec<Beginning>, S> {
        let stored = st::<S, _>(store.stored())?;
        let mut depends = VersionVector::new();
        let mut out = Vec::new();
        for run in runs {
            if let Some(c) = st::<S, _>(store.commit(run.author, run.last))? {
                depends.merge(&c.deps);
            }
            if run.first > 1 {
                // The run's own proof covers its beginning once joined to it.
                if let Some(b) = self.beginning(store, run.author, run.first - 1, false)? {
                    out.push(b);
                }
            }
        }
        for (m, needed) in depends.iter() {
            if needed == 0 || runs.iter().any(|r| r.author == m) {
                continue;
            }
            let needed = needed.min(stored.get(m));
            for want in [needed, 1] {
                if let Some(b) = self.beginning(store, m, want, true)? {
                    out.push(b);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Commits 1 up to `want` of `author` or, with `proven`, up to the first commit from
    /// `want` on that this node can prove — if their bodies are all here and they weigh at
    /// most [`BEGINNING_BYTES`].
    fn beginning<S: Storage>(
        &self,
        store: &S,
        author: MemberId,
        want: u64,
        proven: bool,
    ) -> Res<Option<Beginning>, S> {
        let mut bytes = 0u64;
        let mut seq = 1;
        loop {
            let Some(c) = st::<S, _>(store.commit(author, seq))? else {
                return Ok(None);
            };
            if c.bytes.is_empty() {
                return Ok(None);
            }
            bytes += c.bytes.len() as u64;
            if bytes > BEGINNING_BYTES {
                return Ok(None);
            }
            if seq >= want
                && (!proven || author == self.me || st::<S, _>(store.proof(author, seq))?.is_some())
            {
                return Ok(Some(Beginning {
                    author,
                    last: seq,
                    bytes,
                }));
            }
            seq += 1;
        }
    }

    /// Applies nothing; reads a record's state (convenience for callers and tests).
    pub fn record<S: Storage>(
        &self,
        store: &S,
        collection: &str,
        id: &str,
    ) -> Res<Option<RecordState>, S> {
        st::<S, _>(store.record(collection, id))
    }
}

/// " on DATE (why)", as far as this laptop knows them (a removal learned from the admin's key
/// grant carries no reason; the admin's record with it may not have arrived).
fn removed_when_why(at_ms: u64, reason: &str) -> String {
    let when = match at_ms {
        0 => String::new(),
        ms => format!(" on {}", ferry_model::clock::format_utc(ms)),
    };
    match reason {
        "" => format!(
            "{when} (announced in the admin's key grant; the reason comes with the admin's next changes)"
        ),
        why => format!("{when} ({why})"),
    }
}

/// The reserved collection of members: `_members/N` holds member N's label and, written by
/// the admin, the key of the device whose join it accepted.
pub const MEMBERS: &str = "_members";

/// The field of `_members/N` where member N says the highest bundle version its ferry
/// reads (SPEC §17.2): 11 once it reads columnar commits.
pub const MEMBER_READS_FIELD: &str = "reads";

/// Records of one collection in one commit from which the commit is written columnar.
pub const COLUMNAR_FROM: usize = 16;

/// The zstd level of a bundle that carries columnar commits (at most).
pub const COLUMNAR_LEVEL: i32 = 3;

/// zstd worker threads for such a bundle's payload.
pub const COLUMNAR_WORKERS: u32 = 2;

/// The highest bundle version a `_members/N` record says its member reads (1 when it does
/// not say).
pub fn member_reads(rec: Option<&RecordState>) -> i64 {
    rec.and_then(|r| r.fields.get(MEMBER_READS_FIELD))
        .into_iter()
        .flatten()
        .filter_map(|sib| match &sib.entry {
            ferry_model::record::Entry::Value(Value::Int(n)) => Some(*n),
            _ => None,
        })
        .max()
        .unwrap_or(1)
}

/// Whether `changes` write at least [`COLUMNAR_FROM`] records of one collection.
fn worth_columns(changes: &[Change]) -> bool {
    let mut per: HashMap<&str, usize> = HashMap::new();
    for c in changes {
        if let Change::Record { collection, .. } = c {
            let n = per.entry(collection).or_default();
            *n += 1;
            if *n >= COLUMNAR_FROM {
                return true;
            }
        }
    }
    false
}

/// `changes` grouped by collection, collections in order of first write, each keeping its
/// order: the order a columnar commit's changes decode in (SPEC §17.1).
fn grouped_by_collection(changes: Vec<Change>) -> Vec<Change> {
    let mut order: HashMap<String, usize> = HashMap::new();
    let mut keyed: Vec<(usize, Change)> = changes
        .into_iter()
        .map(|c| {
            let k = match &c {
                Change::Record { collection, .. } => {
                    let next = order.len();
                    *order.entry(collection.clone()).or_insert(next)
                }
                _ => 0,
            };
            (k, c)
        })
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, c)| c).collect()
}

/// The field of `_members/N` where the admin records the accepted device key (32 bytes).
pub const MEMBER_KEY_FIELD: &str = "key";

/// The field of `_members/N` where the admin cancels N's invitation (text: why). From then
/// on nothing of member N is applied and nothing it sends is accepted, on every laptop that
/// has the cancellation (what a laptop applied before it arrived stays: nothing applied is
/// retracted). The admin cancels an invitation on `ferry invite cancel`, and by itself when
/// the first bundle of a joined laptop reaches it after the invitation expired.
pub const MEMBER_CANCELLED_FIELD: &str = "cancelled";

/// The field of `_members/N` where the admin removes member N (text: why). With
/// [`MEMBER_CUTOFF_FIELD`], N's last commit that still counts: from then on nothing of N
/// after it is applied and bundles N makes after it are refused, on every laptop that has
/// the removal (nothing applied is retracted). `ferry member remove` writes both and moves
/// the dataset to a new key epoch (bundles/SPEC.md §14).
pub const MEMBER_REMOVED_FIELD: &str = "removed";

/// The field of `_members/N` holding a removed member's cutoff (`Int`).
pub const MEMBER_CUTOFF_FIELD: &str = "cutoff";

/// A member's removal, as the admin recorded it in its `_members/N` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    /// Its last commit that still counts.
    pub cutoff: u64,
    /// Why.
    pub reason: String,
    /// When, by the admin's clock (ms).
    pub at_ms: u64,
    /// The admin that removed it (of concurrent removals, the one whose reason is shown).
    pub by: MemberId,
}

/// "the admin" for the founder, else "admin #N".
fn by_whom(by: MemberId) -> String {
    match by {
        MemberId::ADMIN => "the admin".into(),
        by => format!("admin {by}"),
    }
}

/// The admin's removal of a member in its `_members/N` record, if any. Concurrent cutoffs
/// (kept side by side) count as the highest.
pub fn removal(rec: Option<&RecordState>) -> Option<Removal> {
    let (reason, hlc) = admin_values(rec, MEMBER_REMOVED_FIELD).into_iter().next()?;
    let by = rec
        .and_then(|r| r.fields.get(MEMBER_REMOVED_FIELD))
        .into_iter()
        .flatten()
        .find(|sib| sib.stamp.hlc == hlc)
        .map_or(MemberId::ADMIN, |sib| sib.stamp.dot.author);
    let cutoff = admin_values(rec, MEMBER_CUTOFF_FIELD)
        .into_iter()
        .filter_map(|(v, _)| match v {
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        })
        .max()?;
    Some(Removal {
        cutoff,
        reason: match reason {
            Value::Str(why) => why.clone(),
            _ => String::new(),
        },
        at_ms: hlc.ms(),
        by,
    })
}

/// Every cutoff the admins wrote in a `_members/N` record (concurrent removals keep theirs
/// side by side).
fn removal_cutoffs(rec: &RecordState) -> Vec<u64> {
    admin_values(Some(rec), MEMBER_CUTOFF_FIELD)
        .into_iter()
        .filter_map(|(v, _)| match v {
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        })
        .collect()
}

/// From which commit a `_members/N` record freezes member N: 1 when its invitation was
/// cancelled, the commit after the cutoff when it was removed.
pub fn frozen_from(rec: &RecordState) -> Option<u64> {
    if cancellation(Some(rec)).is_some() {
        return Some(1);
    }
    removal(Some(rec)).map(|r| r.cutoff.saturating_add(1))
}

/// The field of `_members/N` where the admin records when N's invitation expires (ms since
/// the Unix epoch, by the admin's clock).
pub const MEMBER_EXPIRES_FIELD: &str = "expires";

/// The admins' writes of `field` (one of [`ADMIN_FIELDS`]) in a `_members/N` record,
/// newest first (only admins write these fields: the engine skips anyone else's writes).
fn admin_values<'a>(rec: Option<&'a RecordState>, field: &str) -> Vec<(&'a Value, Hlc)> {
    let mut out: Vec<_> = rec
        .and_then(|r| r.fields.get(field))
        .into_iter()
        .flatten()
        .filter_map(|sib| match &sib.entry {
            ferry_model::record::Entry::Value(v) => Some((v, sib.stamp.hlc)),
            _ => None,
        })
        .collect();
    out.sort_by_key(|&(_, hlc)| std::cmp::Reverse(hlc));
    out
}

/// The admin's cancellation of an invitation in its `_members/N` record, if any: why, and
/// when by the admin's clock (ms).
pub fn cancellation(rec: Option<&RecordState>) -> Option<(String, u64)> {
    admin_values(rec, MEMBER_CANCELLED_FIELD)
        .into_iter()
        .next()
        .map(|(v, hlc)| match v {
            Value::Str(why) => (why.clone(), hlc.ms()),
            _ => (String::new(), hlc.ms()),
        })
}

/// When the invitation of a `_members/N` record expires (ms by the admin's clock), if the
/// admin set a limit.
pub fn invitation_expiry(rec: Option<&RecordState>) -> Option<u64> {
    admin_values(rec, MEMBER_EXPIRES_FIELD)
        .into_iter()
        .find_map(|(v, _)| match v {
            Value::Int(ms) => u64::try_from(*ms).ok(),
            _ => None,
        })
}

/// The device keys admins recorded as accepted in a `_members/N` record (only admins
/// write this field).
pub fn accepted_keys(rec: Option<&RecordState>) -> Vec<PublicKey> {
    let Some(rec) = rec else {
        return Vec::new();
    };
    rec.fields
        .get(MEMBER_KEY_FIELD)
        .into_iter()
        .flatten()
        .filter_map(|sib| match &sib.entry {
            ferry_model::record::Entry::Value(Value::Bytes(b)) => {
                <[u8; 32]>::try_from(b.as_slice()).ok().map(PublicKey)
            }
            _ => None,
        })
        .collect()
}

/// Storage that lost something the engine itself stored is corrupt.
fn missing<S: Storage>(what: String) -> S::Error {
    S::missing(what)
}

/// What a bundle may still add to the stash (bytes), and whether it may at all.
struct StashBudget {
    sender: u64,
    total: u64,
    allowed: bool,
}

/// Commits of one author that wait here ([`Engine::blocked`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// Whose commits wait.
    pub author: MemberId,
    /// How many (stored but not applied, or kept aside).
    pub waiting: u64,
    /// What the first of them needs that this node does not hold.
    pub needs: Vec<Needed>,
}

/// Commits of one member that something waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needed {
    /// The member.
    pub member: MemberId,
    /// Up to which of its commits this node holds (applied).
    pub held: u64,
    /// Up to which one is needed.
    pub needed: u64,
}

/// What [`Engine::receive`] did with one bundle.
#[derive(Clone, Debug, PartialEq)]
pub enum Received {
    /// Authentic, ingested and settled.
    Applied(Box<IngestReport>, SettleReport),
    /// Not checkable yet; nothing was used (see [`Verdict::NotYet`]).
    NotYet {
        /// The claimed sender.
        sender: MemberId,
        /// What this node lacks.
        missing: Missing,
    },
    /// Never checkable here; nothing was used (see [`Verdict::Obsolete`]).
    Obsolete {
        /// The claimed sender.
        sender: MemberId,
    },
}

// wire-format: begin
/// Decodes a snapshot record state of a bundle of format `version`: `postcard(RecordState)`,
/// and in version 3 its ghosts after it (SPEC §4.1, §13), bounded like a commit. Public for
/// the fuzz targets (`tests/fuzz/`); the engine calls it for every snapshot record it reads.
pub fn decode_snapshot_record(
    collection: &str,
    id: &str,
    bytes: &[u8],
    version: u8,
) -> Result<RecordState, BundleError> {
    let _budget = ferry_model::bounded::OpBudget::start(ferry_model::limits::MAX_OPS);
    ferry_model::bounded::clear_exceeded();
    let failed = |e: postcard::Error| match ferry_model::bounded::take_exceeded() {
        Some(limit) => BundleError::Limit(format!("snapshot record {collection}/{id}: {limit}")),
        None => BundleError::Malformed(format!("snapshot record {collection}/{id}: {e}")),
    };
    // A record state decodes to exactly its bytes (SPEC §4.1): nothing may follow it in
    // version 1, nothing but its ghosts in version 3, nothing after those.
    let trailing = || {
        BundleError::Malformed(format!(
            "snapshot record {collection}/{id}: bytes after the record state"
        ))
    };
    let (mut state, rest): (RecordState, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(failed)?;
    if !ferry_bundle::carries_ghosts(version) {
        return if rest.is_empty() {
            Ok(state)
        } else {
            Err(trailing())
        };
    }
    let (Ghosts(ghosts), rest): (Ghosts, &[u8]) =
        postcard::take_from_bytes(rest).map_err(failed)?;
    if !rest.is_empty() {
        return Err(trailing());
    }
    if !Ghost::canonical(&ghosts) {
        return Err(BundleError::Malformed(format!(
            "snapshot record {collection}/{id}: ghosts out of order, repeated, or under no delete"
        )));
    }
    state.ghosts = ghosts;
    Ok(state)
}
// wire-format: end

/// Checks one record of an admin snapshot against the state it reflects: it may only state
/// writes that history holds (every stamp within `state`) and, below version 7, that their
/// authors were allowed to make ([`may_write`], the founder the only admin). (In version 7
/// who was an admin when a reserved record was written — `_roles`, SPEC §15 — is the
/// snapshot's author's word, like the rest of the state it vouches for.)
fn check_snapshot_record<E: std::error::Error + 'static>(
    collection: &str,
    id: &str,
    rec: &RecordState,
    state: &VersionVector,
    version: u8,
) -> Result<(), IngestError<E>> {
    let bad = |what: &str| {
        Err(IngestError::BadSnapshot(format!(
            "record {collection}/{id} holds {what}"
        )))
    };
    let stamps = rec
        .fields
        .values()
        .flatten()
        .map(|s| &s.stamp)
        .chain(rec.tombstones.iter())
        .chain(rec.firsts.values().map(|s| &s.stamp))
        .chain(rec.ghosts.iter().map(|g| &g.sibling.stamp));
    let dots = rec.ghosts.iter().flat_map(|g| {
        g.under
            .iter()
            .copied()
            .chain(g.buried.iter().map(|&(m, s)| Dot::new(m, s)))
    });
    for dot in stamps.map(|s| s.dot).chain(dots) {
        if !state.covers(dot) {
            return bad("a write from after the state the snapshot reflects");
        }
        let founder = dot.author == MemberId::ADMIN;
        if version < ferry_bundle::VERSION_ADMINS && !may_write(dot.author, founder, collection, id)
        {
            return bad("a write its author was not allowed to make");
        }
        // Nobody but an admin sets what only admins set, not even in its own record.
        let own = collection == MEMBERS && id == dot.author.0.to_string() && !founder;
        if own && version < ferry_bundle::VERSION_ADMINS {
            let admin_only = rec
                .fields
                .iter()
                .filter(|(f, _)| ADMIN_FIELDS.contains(&f.as_str()))
                .flat_map(|(_, sibs)| sibs)
                .any(|sib| sib.stamp.dot == dot);
            if admin_only {
                return bad("a field only the admin sets, written by the member itself");
            }
        }
    }
    Ok(())
}
