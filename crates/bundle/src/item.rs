//! The items a bundle payload carries (bundles/SPEC.md §4).

use ferry_model::crypto::Signature;
use ferry_model::{Hash, Hlc, MemberId, VersionVector};
use serde::{Deserialize, Serialize};

/// How the last commit of a run is vouched for by its author.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunProof {
    /// The author is the bundle's sender and the run ends at the sender's head: the bundle
    /// signature vouches for it (no extra bytes).
    Sender,
    /// A signature by the author over its head at the run's last commit, without a digest.
    Head(Signature),
    /// A bundle signature the author made earlier, forwarded with the digest it signed, so a
    /// relay never needs to re-sign another member's commits.
    Bundle {
        /// The digest the author signed.
        digest: [u8; 32],
        /// The author's signature.
        sig: Signature,
    },
}

/// One entry of the payload. A payload is: one `Receipt`, any number of `PeerReceipt`s,
/// optionally a snapshot (`Snapshot`, then `SnapshotChain`s, then `SnapshotRecord`s), then
/// runs, each a `Run` followed by exactly `count` `Commit`s of that author in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    /// The sender's version vector: every commit it holds. Its own entry is its head, which
    /// the bundle signature vouches for.
    Receipt(VersionVector),
    /// What the sender knows another member holds (gossip; optional).
    PeerReceipt(MemberId, VersionVector),
    /// The start of a run of consecutive commits by one author.
    Run {
        /// The author.
        author: MemberId,
        /// Number of the first commit.
        first: u64,
        /// How many commits follow (at least 1).
        count: u64,
        /// Who vouches for commit `first + count − 1`.
        proof: RunProof,
    },
    /// One commit's canonical encoding (see `ferry_model::commit`).
    Commit(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The start of a snapshot: the sender's records as they are after applying `state`,
    /// for a member that needs commits the sender has compacted away (`compacted`: for each
    /// author, the last commit whose body the sender no longer has).
    Snapshot {
        /// What the records reflect.
        state: VersionVector,
        /// What the sender has compacted.
        compacted: VersionVector,
    },
    /// One author's chain at the snapshot point: commit `seq`'s chain hash, clock, causal
    /// context and name-table length, the names, and the author's commit 1 (its genesis or
    /// join, which proves its membership).
    SnapshotChain {
        /// The author.
        author: MemberId,
        /// The commit the snapshot reflects.
        seq: u64,
        /// Its chain hash.
        hash: Hash,
        /// Its clock.
        hlc: Hlc,
        /// Its causal context (without the author's own entry).
        deps: VersionVector,
        /// The author's name table after it.
        #[serde(
            deserialize_with = "ferry_model::bounded::vec::<_, _, { ferry_model::limits::MAX_NAME_TABLE }, { ferry_model::bounded::what::NAMES }>"
        )]
        names: Vec<String>,
        /// The author's commit 1.
        #[serde(with = "serde_bytes")]
        first: Vec<u8>,
    },
    /// One record's merge state at the snapshot point.
    SnapshotRecord {
        /// Collection.
        collection: String,
        /// Record id.
        id: String,
        /// `postcard(RecordState)` (see bundles/SPEC.md §4.1).
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
    },
    /// One commit's canonical encoding in the columnar form (bundles/SPEC.md §17; only in
    /// version 11 and later), where a [`Item::Commit`] may stand.
    ColumnarCommit(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl Item {
    /// A commit item for `c`, of the kind its form needs.
    pub fn commit(c: ferry_model::commit::CommitBytes) -> Item {
        match c.form {
            ferry_model::commit::Form::Row => Item::Commit(c.bytes),
            ferry_model::commit::Form::Columnar => Item::ColumnarCommit(c.bytes),
        }
    }
}
