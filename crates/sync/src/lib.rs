//! ferry's sync engine: what to do with a bundle, and what to put in one.
//!
//! The engine is pure logic over a [`Storage`] trait. It never opens files or sockets and
//! never reads the clock: the caller passes `now` and random salts, and supplies storage
//! (SQLite in `ferry-store`, or [`mem::MemStorage`] for tests and seeded simulations).
//!
//! - [`Engine::ingest`] reads one bundle: it checks every commit against its author's hash
//!   chain and signature, stores what is new, counts duplicates, keeps commits whose
//!   causal dependencies are missing as *pending*, and keeps runs that cannot be checked yet
//!   (their author's earlier commits or membership have not arrived) as *stashed*.
//! - [`Engine::settle`] applies whatever pending and stashed commits have become ready.
//! - [`Engine::commit_local`] records this node's own writes.
//! - [`plan::plan_export`] decides what a bundle must carry, and [`Engine::export`] writes it.
//!
//! Callers run `ingest` + `settle` inside one storage transaction and roll back on error:
//! a bundle is applied entirely or not at all.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod dicts;
mod engine;
pub mod forge;
pub mod fork;
pub mod mem;
mod membership;
pub mod plan;
pub mod roles;
pub mod sim;
pub mod simulation;
mod storage;

pub use engine::{
    ADMIN_FIELDS, Accept, Authenticated, Blocked, Engine, ExportReport, FORK_FIELD, FORKS,
    IngestError, IngestReport, MEMBER_CANCELLED_FIELD, MEMBER_CUTOFF_FIELD, MEMBER_EXPIRES_FIELD,
    MEMBER_KEY_FIELD, MEMBER_READS_FIELD, MEMBER_REMOVED_FIELD, MEMBERS, Missing, Needed, Received,
    Removal, RunSummary, STASH_MAX_AGE_MS, STASH_PER_SENDER, STASH_TOTAL, SettleReport, Verdict,
    accepted_keys, cancellation, decode_snapshot_record, frozen_from, invitation_expiry, may_write,
    member_reads, removal,
};
pub use fork::ForkEvidence;
pub use membership::Invitation;
pub use plan::{Coverage, ExportRun};
pub use storage::{
    MemberInfo, Proof, RecordVisitor, STASH_COMMIT_COST, STASH_RUN_COST, StashedRun, Storage,
    StoredCommit, sendable,
};
