//! ferry's pure data model: what a dataset, a record, a commit and a clock are.
//!
//! Nothing in this crate does I/O, reads the wall clock or draws randomness: time and random
//! bytes come in as arguments. That is what lets the same code run inside a seeded simulation
//! of many replicas and inside the real node.
//!
//! The main pieces:
//! - [`Value`]: what a field holds.
//! - [`VersionVector`] and [`Hlc`]: causality and time.
//! - [`Commit`] and [`commit::ChainContext`]: an atomic group of writes by one member, its
//!   canonical encoding and its place in the author's hash chain.
//! - [`RecordState`]: the per-record merge state (dotted siblings, tombstones) that makes
//!   applying commits idempotent and order-independent.
//! - [`crypto`]: member keys, head signatures, invitations and join proofs.
//!
//! ```
//! use ferry_model::{Dot, Hlc, MemberId, Op, RecordState, Stamp, Value, VersionVector};
//!
//! let mut rec = RecordState::default();
//! let a = Stamp::new(Dot::new(MemberId(1), 1), Hlc::from_parts(1_000, 0));
//! let b = Stamp::new(Dot::new(MemberId(2), 1), Hlc::from_parts(2_000, 0));
//! // Two writes that did not see each other: both are kept, one wins everywhere.
//! rec.apply(a, &VersionVector::new(), &Op::Set("weight_kg".into(), Value::Float(61.5)));
//! rec.apply(b, &VersionVector::new(), &Op::Set("weight_kg".into(), Value::Float(62.0)));
//! assert_eq!(rec.winner("weight_kg"), Some(&Value::Float(62.0)));
//! assert_eq!(rec.conflicted_fields(), vec!["weight_kg"]);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bounded;
pub mod clock;
pub mod columns;
pub mod commit;
pub mod crypto;
mod id;
pub mod record;
mod value;

pub use clock::{Hlc, VersionVector};
pub use commit::{Change, Commit, Op};
pub use id::{DatasetId, Dot, Hash, MemberId};
pub use record::{RecordState, Rule, Shown, Stamp};
pub use value::{Value, ValueParseError};

/// Limits that every decoder enforces, so hostile input cannot make a reader allocate without
/// bound. They are part of the format (bundles/SPEC.md §8).
// wire-format: begin
pub mod limits {
    /// Longest collection or field name, in bytes of UTF-8.
    pub const MAX_NAME: usize = 256;
    /// Longest record id, in bytes of UTF-8.
    pub const MAX_RECORD_ID: usize = 1024;
    /// Largest encoded commit, in bytes.
    pub const MAX_COMMIT: usize = 16 * 1024 * 1024;
    /// Longest member label, in bytes of UTF-8.
    pub const MAX_LABEL: usize = 256;
    /// Most members one version vector may name.
    pub const MAX_VECTOR: usize = 65_536;
    /// Most names in one author's name table (collections and fields it ever used).
    pub const MAX_NAME_TABLE: usize = 65_536;
    /// Most changes (records touched) in one commit.
    pub const MAX_CHANGES: usize = 65_536;
    /// Most ops in one commit, over all its changes. With [`MAX_COMMIT`] this bounds the
    /// memory a decoded commit takes, whatever its bytes.
    pub const MAX_OPS: usize = 262_144;
}
// wire-format: end
