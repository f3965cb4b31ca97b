//! ferry's store: one SQLite database per node, holding the replica and its bookkeeping.
//!
//! [`Store`] opens (and migrates) the database; [`Store::transaction`] gives a [`StoreTx`],
//! which implements the sync engine's [`ferry_sync::Storage`] trait and the node's own
//! queries. A bundle is applied in one transaction: if the process dies at any point, SQLite
//! rolls the transaction back on the next open, and importing the same bundle again
//! completes the job.
//!
//! Records are stored one row per record, holding the record's whole merge state in a
//! compact blob whose field names are local numbers (see [`codec`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codec;
mod migrations;
mod store;

pub use store::{
    BundleSeen, ConflictRow, PeerRow, QuarantineRow, STEP_BYTES, Store, StoreError, StoreTx,
    UNSETTLED, WaitingRow,
};
