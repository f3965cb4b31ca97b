//! Commits: an atomic group of writes by one member, and their canonical encoding.
//!
//! Each member numbers its commits 1, 2, 3, … . A commit's encoding is relative to the
//! author's previous commit (its [`ChainContext`]): the clock is a delta, the causal context
//! lists only the entries that changed, and field and collection names are indices into a
//! table each author grows as it writes. Because commit `n` always depends on commit `n − 1`
//! of the same author, every receiver holds that context when it decodes a commit, and the
//! encoding is canonical: the bytes that are hashed and signed are the bytes that travel.
//!
//! The hash chain `h(n) = BLAKE3(h(n−1), n, bytes(n))` ties each commit to all earlier ones
//! of its author, so one signature over a head vouches for the whole chain up to it.

use crate::bounded::{self, what};
use crate::clock::{Hlc, VersionVector};
use crate::crypto::{JoinProof, PublicKey};
use crate::{DatasetId, Dot, Hash, MemberId, Value, limits};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

mod columnar;

/// One change to one field (or to the whole record, for [`Op::Delete`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Assign a value to a field.
    Set(String, Value),
    /// Add to a counter field (concurrent increments add up).
    Incr(String, i64),
    /// Add a string to a set field (add wins over a concurrent remove).
    Add(String, String),
    /// Remove a string from a set field (removes only the adds this commit has seen).
    Remove(String, String),
    /// Delete the record: removes every field value this commit has seen.
    Delete,
}

impl Op {
    /// The field this op touches, if it touches one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            Op::Set(f, _) | Op::Incr(f, _) | Op::Add(f, _) | Op::Remove(f, _) => Some(f),
            Op::Delete => None,
        }
    }
}

/// One entry of a commit.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Ops on one record of one collection.
    Record {
        /// Collection name.
        collection: String,
        /// Record id.
        id: String,
        /// The ops, applied in order.
        ops: Vec<Op>,
    },
    /// The admin's first commit: it founds the dataset.
    Genesis {
        /// The dataset's human name.
        name: String,
        /// The admin device's label.
        label: String,
        /// The admin's public key.
        admin_key: PublicKey,
    },
    /// A member's first commit: the admin's invitation and the new device's key.
    Join(JoinProof),
}

/// A decoded commit.
#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    /// Who wrote it.
    pub author: MemberId,
    /// The author's commit number (1, 2, 3, …).
    pub seq: u64,
    /// Hybrid logical clock when it was written.
    pub hlc: Hlc,
    /// What the author had applied from other members when it wrote this commit (the causal
    /// context, without the author's own entry, which is always `seq − 1`).
    pub deps: VersionVector,
    /// The newest clock among the other members' commits the author had applied (its
    /// reference for how far its own clock may be trusted; see `Stamp::ranked`), if any.
    pub seen: Option<Hlc>,
    /// The changes.
    pub changes: Vec<Change>,
}

impl Commit {
    /// The commit's identity as an event.
    pub fn dot(&self) -> Dot {
        Dot::new(self.author, self.seq)
    }

    /// The stamp its writes carry, ranked against what its author had seen.
    pub fn stamp(&self) -> crate::Stamp {
        crate::Stamp::ranked(self.dot(), self.hlc, self.seen)
    }

    /// Everything this commit causally follows: its deps plus the author's earlier commits.
    pub fn context(&self) -> VersionVector {
        let mut c = self.deps.clone();
        c.set(self.author, self.seq - 1);
        c
    }
}

/// Why a commit could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The bytes are not a valid postcard encoding of a commit.
    #[error("malformed commit encoding: {0}")]
    Malformed(#[from] postcard::Error),
    /// Bytes were left over after the commit.
    #[error("{0} unexpected bytes after the commit")]
    TrailingBytes(usize),
    /// The commit is larger than the format allows.
    #[error("commit of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The commit holds more of something than the format allows (bundles/SPEC.md §8);
    /// refused before it is decoded into memory.
    #[error("{0}")]
    Limit(bounded::Exceeded),
    /// The clock did not move forward from the author's previous commit.
    #[error("clock does not advance past the author's previous commit")]
    ClockNotMonotonic,
    /// The causal context names the author itself, goes backwards, or is unsorted.
    #[error("invalid causal context: {0}")]
    BadDeps(&'static str),
    /// A name is empty, too long, repeated or refers past the author's name table.
    #[error("invalid name: {0}")]
    BadName(&'static str),
    /// A record id is empty or too long.
    #[error("invalid record id")]
    BadRecordId,
    /// A genesis or join change is missing, misplaced or duplicated.
    #[error("invalid membership change: {0}")]
    BadMembership(&'static str),
    /// A value is not valid (non-finite float or out-of-range decimal).
    #[error("invalid value")]
    BadValue,
    /// A commit in the columnar form does not decode (bundles/SPEC.md §17).
    #[error("malformed columnar commit: {0}")]
    Columnar(&'static str),
    /// The commit to encode is not the author's next one.
    #[error("commit {got} of member {author} does not follow {have}")]
    OutOfOrder {
        /// The author.
        author: MemberId,
        /// The commit's number.
        got: u64,
        /// The last number in the chain context.
        have: u64,
    },
}

/// What decoding or encoding an author's next commit needs: the state of the author's chain
/// after its latest commit.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainContext {
    /// The author.
    pub author: MemberId,
    /// The number of the latest commit (0 before the first).
    pub seq: u64,
    /// The chain hash after the latest commit.
    pub hash: Hash,
    /// The latest commit's clock.
    pub hlc: Hlc,
    /// The latest commit's causal context (without the author's own entry).
    pub deps: VersionVector,
    /// The author's name table: collection and field names in order of first use.
    pub names: Vec<String>,
    index: HashMap<String, u32>,
}

// wire-format: begin
/// The chain hash before an author's first commit.
pub fn chain_root(dataset: DatasetId, author: MemberId) -> Hash {
    let mut h = blake3::Hasher::new_derive_key("ferry v1 chain root");
    h.update(&dataset.0);
    h.update(&author.0.to_le_bytes());
    Hash(*h.finalize().as_bytes())
}
// wire-format: end

// wire-format: begin
/// The chain hash after commit `seq` with encoding `bytes`, given the hash before it.
pub fn chain_next(prev: &Hash, seq: u64, bytes: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new_derive_key("ferry v1 commit chain");
    h.update(&prev.0);
    h.update(&seq.to_le_bytes());
    h.update(bytes);
    Hash(*h.finalize().as_bytes())
}
// wire-format: end

/// How a commit's changes are laid out in its bytes: the row form (bundles/SPEC.md §5.2)
/// or the columnar form (bundles/SPEC.md §17, bundles of version 11). Chosen by
/// the author when it writes the commit; the bytes never change form afterwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Form {
    /// One change after another, each record's ops with their values.
    #[default]
    Row,
    /// The record changes grouped by collection, their values column by column.
    Columnar,
}

// wire-format: begin
/// The chain hash after a commit in the columnar form: its own context, so that no byte
/// string counts as a commit of both forms.
pub fn chain_next_columnar(prev: &Hash, seq: u64, bytes: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new_derive_key("ferry v11 commit chain");
    h.update(&prev.0);
    h.update(&seq.to_le_bytes());
    h.update(bytes);
    Hash(*h.finalize().as_bytes())
}
// wire-format: end

/// The chain hash after a commit of `form`.
pub fn chain_next_as(form: Form, prev: &Hash, seq: u64, bytes: &[u8]) -> Hash {
    match form {
        Form::Row => chain_next(prev, seq, bytes),
        Form::Columnar => chain_next_columnar(prev, seq, bytes),
    }
}

/// A commit's canonical bytes and the form they are in: what is hashed, signed, stored and
/// relayed, never re-encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitBytes {
    /// The form of `bytes`.
    pub form: Form,
    /// The bytes.
    pub bytes: Vec<u8>,
}

impl CommitBytes {
    /// Bytes in the row form.
    pub fn row(bytes: Vec<u8>) -> CommitBytes {
        CommitBytes {
            form: Form::Row,
            bytes,
        }
    }

    /// The chain hash after this commit, numbered `seq`, given the hash before it.
    pub fn chain(&self, prev: &Hash, seq: u64) -> Hash {
        chain_next_as(self.form, prev, seq, &self.bytes)
    }

    /// How many bytes it holds.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it holds none (a compacted commit).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl ChainContext {
    /// The context before `author`'s first commit.
    pub fn new(dataset: DatasetId, author: MemberId) -> ChainContext {
        ChainContext {
            author,
            seq: 0,
            hash: chain_root(dataset, author),
            hlc: Hlc::default(),
            deps: VersionVector::new(),
            names: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Rebuilds a context from stored parts.
    pub fn from_parts(
        author: MemberId,
        seq: u64,
        hash: Hash,
        hlc: Hlc,
        deps: VersionVector,
        names: Vec<String>,
    ) -> ChainContext {
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        ChainContext {
            author,
            seq,
            hash,
            hlc,
            deps,
            names,
            index,
        }
    }

    /// Encodes `commit`, which must be this author's next commit, and advances the context.
    pub fn encode(&mut self, commit: &Commit) -> Result<Vec<u8>, CommitError> {
        self.encode_as(commit, Form::Row)
    }

    /// [`ChainContext::encode`] in `form`.
    pub fn encode_as(&mut self, commit: &Commit, form: Form) -> Result<Vec<u8>, CommitError> {
        if commit.author != self.author || commit.seq != self.seq + 1 {
            return Err(CommitError::OutOfOrder {
                author: commit.author,
                got: commit.seq,
                have: self.seq,
            });
        }
        if form == Form::Columnar && commit.seq == 1 {
            return Err(CommitError::Columnar("a commit 1 in the columnar form"));
        }
        if self.seq > 0 && commit.hlc <= self.hlc {
            return Err(CommitError::ClockNotMonotonic);
        }
        let mut new_names = Vec::new();
        let mut intern = |name: &str, ctx: &mut ChainContext| -> Result<u32, CommitError> {
            check_name(name)?;
            if let Some(&i) = ctx.index.get(name) {
                return Ok(i);
            }
            let i = ctx.names.len() as u32;
            ctx.names.push(name.to_string());
            ctx.index.insert(name.to_string(), i);
            new_names.push(name.to_string());
            Ok(i)
        };
        let saved_names = self.names.len();
        let mut changes = Vec::with_capacity(commit.changes.len());
        let result = (|| {
            for change in &commit.changes {
                changes.push(match change {
                    Change::Record {
                        collection,
                        id,
                        ops,
                    } => {
                        check_record_id(id)?;
                        let coll = intern(collection, self)?;
                        let mut wire_ops = Vec::with_capacity(ops.len());
                        for op in ops {
                            wire_ops.push(match op {
                                Op::Set(f, v) => WireOp::set(intern(f, self)?, v.clone()),
                                Op::Incr(f, n) => WireOp::Incr(intern(f, self)?, *n),
                                Op::Add(f, e) => WireOp::Add(intern(f, self)?, e.clone()),
                                Op::Remove(f, e) => WireOp::Remove(intern(f, self)?, e.clone()),
                                Op::Delete => WireOp::Delete,
                            });
                        }
                        WireChange::Record {
                            coll,
                            id: id.clone(),
                            ops: wire_ops,
                        }
                    }
                    Change::Genesis {
                        name,
                        label,
                        admin_key,
                    } => WireChange::Genesis {
                        name: name.clone(),
                        label: label.clone(),
                        admin_key: *admin_key,
                    },
                    Change::Join(p) => WireChange::Join(p.clone()),
                });
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.rollback_names(saved_names);
            return Err(e);
        }
        let (ms, lc) = if self.seq == 0 {
            (commit.hlc.ms(), commit.hlc.counter())
        } else {
            (commit.hlc.ms() - self.hlc.ms(), commit.hlc.counter())
        };
        let mut deps = commit.deps.clone();
        deps.set(commit.author, 0);
        let wire = WireCommit {
            ms,
            lc,
            deps: deps
                .changed_since(&self.deps)
                .into_iter()
                .map(|(m, n)| (m.0, n))
                .collect(),
            names: new_names,
            seen: commit
                .seen
                .map(|h| h.ms().wrapping_sub(commit.hlc.ms()) as i64),
            changes,
        };
        let bytes = match form {
            Form::Row => postcard::to_allocvec(&wire)?,
            Form::Columnar => columnar::encode(&wire)?,
        };
        // Decoding our own output validates it exactly as a receiver will.
        self.rollback_names(saved_names);
        let decoded = self.decode_as(&bytes, form)?;
        debug_assert_eq!(decoded.seq, commit.seq);
        Ok(bytes)
    }

    fn rollback_names(&mut self, len: usize) {
        for name in self.names.drain(len..) {
            self.index.remove(&name);
        }
    }

    /// Decodes the author's next commit from `bytes`, checks it, and advances the context
    /// (including the chain hash).
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Commit, CommitError> {
        self.decode_as(bytes, Form::Row)
    }

    /// [`ChainContext::decode`] of a commit in the form it says.
    pub fn decode_bytes(&mut self, c: &CommitBytes) -> Result<Commit, CommitError> {
        self.decode_as(&c.bytes, c.form)
    }

    /// [`ChainContext::decode`] of a commit in `form`.
    pub fn decode_as(&mut self, bytes: &[u8], form: Form) -> Result<Commit, CommitError> {
        if bytes.len() > limits::MAX_COMMIT {
            return Err(CommitError::TooLarge(bytes.len()));
        }
        if form == Form::Columnar && self.seq == 0 {
            return Err(CommitError::Columnar("a commit 1 in the columnar form"));
        }
        let wire = read_form(bytes, form)?;
        let seq = self.seq + 1;
        let hlc = if self.seq == 0 {
            Hlc::from_parts(wire.ms, wire.lc)
        } else {
            let ms = self
                .hlc
                .ms()
                .checked_add(wire.ms)
                .filter(|&ms| ms <= Hlc::MAX_MS)
                .ok_or(CommitError::ClockNotMonotonic)?;
            Hlc::from_parts(ms, wire.lc)
        };
        if wire.ms > Hlc::MAX_MS || (self.seq > 0 && hlc <= self.hlc) {
            return Err(CommitError::ClockNotMonotonic);
        }
        let mut deps = self.deps.clone();
        let mut last = 0u32;
        for (i, &(m, n)) in wire.deps.iter().enumerate() {
            if i > 0 && m <= last {
                return Err(CommitError::BadDeps("entries not in member order"));
            }
            last = m;
            let m = MemberId(m);
            if m == self.author {
                return Err(CommitError::BadDeps("names the author itself"));
            }
            if n <= deps.get(m) {
                return Err(CommitError::BadDeps("does not advance"));
            }
            deps.set(m, n);
        }
        let names_before = self.names.len();
        if names_before + wire.names.len() > limits::MAX_NAME_TABLE {
            return Err(CommitError::Limit(bounded::Exceeded {
                what: what::NAMES,
                max: limits::MAX_NAME_TABLE,
            }));
        }
        for name in &wire.names {
            if let Err(e) = check_name(name) {
                self.rollback_names(names_before);
                return Err(e);
            }
            if self.index.contains_key(name) {
                self.rollback_names(names_before);
                return Err(CommitError::BadName("defined twice"));
            }
            self.index.insert(name.clone(), self.names.len() as u32);
            self.names.push(name.clone());
        }
        let changes = match self.decode_changes(seq, wire.changes) {
            Ok(c) => c,
            Err(e) => {
                self.rollback_names(names_before);
                return Err(e);
            }
        };
        let seen = match wire.seen {
            None => None,
            Some(d) => {
                let ms = hlc.ms().wrapping_add(d as u64);
                if ms > Hlc::MAX_MS {
                    self.rollback_names(names_before);
                    return Err(CommitError::ClockNotMonotonic);
                }
                Some(Hlc::from_parts(ms, 0))
            }
        };
        self.seq = seq;
        self.hash = chain_next_as(form, &self.hash, seq, bytes);
        self.hlc = hlc;
        self.deps = deps.clone();
        Ok(Commit {
            author: self.author,
            seq,
            hlc,
            deps,
            seen,
            changes,
        })
    }

    /// Decodes the author's commit `seq` (already verified, so `seq` ≤ `self.seq`), whose
    /// clock `hlc` and causal context `deps` were stored with it, without touching the
    /// context: how a stored commit is read back to be applied once its causal dependencies
    /// have arrived.
    pub fn decode_stored(
        &self,
        seq: u64,
        hlc: Hlc,
        deps: VersionVector,
        bytes: &[u8],
    ) -> Result<Commit, CommitError> {
        self.decode_stored_as(seq, hlc, deps, bytes, Form::Row)
    }

    /// [`ChainContext::decode_stored`] of a commit in `form`.
    pub fn decode_stored_as(
        &self,
        seq: u64,
        hlc: Hlc,
        deps: VersionVector,
        bytes: &[u8],
        form: Form,
    ) -> Result<Commit, CommitError> {
        let wire = match form {
            Form::Row => read_wire(bytes)?.0,
            Form::Columnar => columnar::decode(bytes)?,
        };
        let seen = wire
            .seen
            .map(|d| Hlc::from_parts(hlc.ms().wrapping_add(d as u64), 0));
        Ok(Commit {
            author: self.author,
            seq,
            hlc,
            deps,
            seen,
            changes: self.decode_changes(seq, wire.changes)?,
        })
    }

    fn name(&self, i: u32) -> Result<String, CommitError> {
        self.names
            .get(i as usize)
            .cloned()
            .ok_or(CommitError::BadName("index past the author's name table"))
    }

    fn decode_changes(&self, seq: u64, wire: Vec<WireChange>) -> Result<Vec<Change>, CommitError> {
        let mut out = Vec::with_capacity(wire.len());
        for (i, change) in wire.into_iter().enumerate() {
            let first = seq == 1 && i == 0;
            out.push(match change {
                WireChange::Record { coll, id, ops } => {
                    if first {
                        return Err(CommitError::BadMembership(
                            "a member's first commit must start with its genesis or join",
                        ));
                    }
                    check_record_id(&id)?;
                    let mut decoded = Vec::with_capacity(ops.len());
                    for op in ops {
                        decoded.push(op.into_op(self)?);
                    }
                    Change::Record {
                        collection: self.name(coll)?,
                        id,
                        ops: decoded,
                    }
                }
                WireChange::Genesis {
                    name,
                    label,
                    admin_key,
                } => {
                    if !first || self.author != MemberId::ADMIN {
                        return Err(CommitError::BadMembership(
                            "genesis outside the admin's first commit",
                        ));
                    }
                    if name.len() > limits::MAX_LABEL || label.len() > limits::MAX_LABEL {
                        return Err(CommitError::BadName("dataset name or label too long"));
                    }
                    Change::Genesis {
                        name,
                        label,
                        admin_key,
                    }
                }
                WireChange::Join(proof) => {
                    if !first || self.author == MemberId::ADMIN {
                        return Err(CommitError::BadMembership(
                            "join outside a member's first commit",
                        ));
                    }
                    Change::Join(proof)
                }
            });
        }
        if seq == 1 && out.is_empty() {
            return Err(CommitError::BadMembership(
                "a member's first commit must carry its genesis or join",
            ));
        }
        Ok(out)
    }
}

/// Decodes a whole commit of `form` into the row form's fields.
fn read_form(bytes: &[u8], form: Form) -> Result<WireCommit, CommitError> {
    match form {
        Form::Row => {
            let (wire, rest) = read_wire(bytes)?;
            if !rest.is_empty() {
                return Err(CommitError::TrailingBytes(rest.len()));
            }
            Ok(wire)
        }
        Form::Columnar => columnar::decode(bytes),
    }
}

/// Decodes a commit's wire form within the limits of bundles/SPEC.md §8.
fn read_wire(bytes: &[u8]) -> Result<(WireCommit, &[u8]), CommitError> {
    let _budget = bounded::OpBudget::start(limits::MAX_OPS);
    bounded::clear_exceeded();
    postcard::take_from_bytes::<WireCommit>(bytes).map_err(|e| match bounded::take_exceeded() {
        Some(limit) => CommitError::Limit(limit),
        None => CommitError::Malformed(e),
    })
}

fn check_name(name: &str) -> Result<(), CommitError> {
    if name.is_empty() {
        return Err(CommitError::BadName("empty"));
    }
    if name.len() > limits::MAX_NAME {
        return Err(CommitError::BadName("too long"));
    }
    Ok(())
}

fn check_record_id(id: &str) -> Result<(), CommitError> {
    if id.is_empty() || id.len() > limits::MAX_RECORD_ID {
        return Err(CommitError::BadRecordId);
    }
    Ok(())
}

// wire-format: begin
/// The encoding of a commit (bundles/SPEC.md §5.2).
#[derive(Serialize, Deserialize)]
struct WireCommit {
    /// Milliseconds since the author's previous commit (absolute for commit 1).
    ms: u64,
    /// Logical counter of the clock.
    lc: u16,
    /// Causal-context entries that changed since the author's previous commit.
    #[serde(deserialize_with = "bounded::vec::<_, _, { limits::MAX_VECTOR }, { what::DEPS }>")]
    deps: Vec<(u32, u64)>,
    /// The newest clock among other members' commits the author had applied, as
    /// milliseconds relative to this commit's own (usually a small negative number).
    seen: Option<i64>,
    /// Names appended to the author's name table.
    #[serde(
        deserialize_with = "bounded::vec::<_, _, { limits::MAX_NAME_TABLE }, { what::NAMES }>"
    )]
    names: Vec<String>,
    #[serde(deserialize_with = "bounded::vec::<_, _, { limits::MAX_CHANGES }, { what::CHANGES }>")]
    changes: Vec<WireChange>,
}

#[derive(Serialize, Deserialize)]
enum WireChange {
    Record {
        coll: u32,
        id: String,
        #[serde(deserialize_with = "bounded::ops")]
        ops: Vec<WireOp>,
    },
    Genesis {
        name: String,
        label: String,
        admin_key: PublicKey,
    },
    Join(JoinProof),
}

/// One op with the value's type folded into the op tag, so a typical field write costs one
/// tag byte and one name byte before its value.
#[derive(Serialize, Deserialize)]
enum WireOp {
    Null(u32),
    False(u32),
    True(u32),
    Int(u32, i64),
    Dec(u32, i64, u8),
    F64(u32, f64),
    Str(u32, String),
    Bytes(u32, Vec<u8>),
    Incr(u32, i64),
    Add(u32, String),
    Remove(u32, String),
    Delete,
}
// wire-format: end

impl WireOp {
    fn set(f: u32, v: Value) -> WireOp {
        match v {
            Value::Null => WireOp::Null(f),
            Value::Bool(false) => WireOp::False(f),
            Value::Bool(true) => WireOp::True(f),
            Value::Int(i) => WireOp::Int(f, i),
            Value::Float(x) => match crate::value::to_decimal(x) {
                Some((m, e)) => WireOp::Dec(f, m, e),
                None => WireOp::F64(f, x),
            },
            Value::Str(s) => WireOp::Str(f, s),
            Value::Bytes(b) => WireOp::Bytes(f, b),
        }
    }

    fn into_op(self, ctx: &ChainContext) -> Result<Op, CommitError> {
        Ok(match self {
            WireOp::Null(f) => Op::Set(ctx.name(f)?, Value::Null),
            WireOp::False(f) => Op::Set(ctx.name(f)?, Value::Bool(false)),
            WireOp::True(f) => Op::Set(ctx.name(f)?, Value::Bool(true)),
            WireOp::Int(f, i) => Op::Set(ctx.name(f)?, Value::Int(i)),
            WireOp::Dec(f, m, e) => Op::Set(
                ctx.name(f)?,
                Value::Float(crate::value::from_decimal(m, e).ok_or(CommitError::BadValue)?),
            ),
            WireOp::F64(f, x) => Op::Set(
                ctx.name(f)?,
                Value::float(x).map_err(|_| CommitError::BadValue)?,
            ),
            WireOp::Str(f, s) => Op::Set(ctx.name(f)?, Value::Str(s)),
            WireOp::Bytes(f, b) => Op::Set(ctx.name(f)?, Value::Bytes(b)),
            WireOp::Incr(f, n) => Op::Incr(ctx.name(f)?, n),
            WireOp::Add(f, e) => Op::Add(ctx.name(f)?, e),
            WireOp::Remove(f, e) => Op::Remove(ctx.name(f)?, e),
            WireOp::Delete => Op::Delete,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    const DS: DatasetId = DatasetId([3; 8]);

    /// The admin's first commit (also the columnar form's tests start from it).
    pub(super) fn genesis() -> Commit {
        Commit {
            author: MemberId::ADMIN,
            seq: 1,
            hlc: Hlc::from_parts(1_763_000_000_000, 0),
            deps: VersionVector::new(),
            seen: None,
            changes: vec![Change::Genesis {
                name: "clinics".into(),
                label: "hq".into(),
                admin_key: SecretKey::from_bytes([1; 32]).public(),
            }],
        }
    }

    fn visit(seq: u64, ms: u64, deps: VersionVector) -> Commit {
        Commit {
            author: MemberId::ADMIN,
            seq,
            hlc: Hlc::from_parts(ms, 0),
            seen: (!deps.is_empty()).then(|| Hlc::from_parts(ms - 40_000, 0)),
            deps,
            changes: vec![Change::Record {
                collection: "visits".into(),
                id: format!("v-{seq}"),
                ops: vec![
                    Op::Set("village".into(), Value::Str("Kisumu Ndogo".into())),
                    Op::Set("weight_kg".into(), Value::Float(61.5)),
                    Op::Set("followup".into(), Value::Bool(true)),
                    Op::Delete,
                    Op::Incr("count".into(), -2),
                    Op::Add("tags".into(), "tb".into()),
                    Op::Remove("tags".into(), "hiv".into()),
                    Op::Set("raw".into(), Value::Bytes(vec![0, 255])),
                    Op::Set("note".into(), Value::Null),
                    Op::Set("big".into(), Value::Float(1e300)),
                ],
            }],
        }
    }

    #[test]
    fn commits_round_trip_and_chain_identically_on_both_sides() {
        let mut writer = ChainContext::new(DS, MemberId::ADMIN);
        let mut reader = ChainContext::new(DS, MemberId::ADMIN);
        let deps: VersionVector = [(MemberId(2), 5)].into_iter().collect();
        let commits = [
            genesis(),
            visit(2, 1_763_000_000_500, deps.clone()),
            visit(3, 1_763_000_060_000, deps),
        ];
        let mut sizes = vec![];
        for c in &commits {
            let bytes = writer.encode(c).unwrap();
            sizes.push(bytes.len());
            assert_eq!(&reader.decode(&bytes).unwrap(), c);
        }
        assert_eq!(writer, reader);
        // Names are sent once per author: the third commit is smaller than the second.
        assert!(sizes[2] < sizes[1], "{sizes:?}");
    }

    #[test]
    fn decoding_rejects_what_an_honest_author_never_writes() {
        let mut w = ChainContext::new(DS, MemberId::ADMIN);
        let g = w.encode(&genesis()).unwrap();
        let next = visit(2, 1_763_000_000_001, VersionVector::new());
        let good = w.encode(&next).unwrap();

        // A member's commit 1 that is not a join.
        let mut r = ChainContext::new(DS, MemberId(2));
        assert!(matches!(r.decode(&g), Err(CommitError::BadMembership(_))));
        // Trailing garbage.
        let mut r = ChainContext::new(DS, MemberId::ADMIN);
        r.decode(&g).unwrap();
        let mut padded = good.clone();
        padded.push(0);
        assert!(matches!(
            r.clone().decode(&padded),
            Err(CommitError::TrailingBytes(1))
        ));
        // Truncated.
        assert!(matches!(
            r.clone().decode(&good[..good.len() - 1]),
            Err(CommitError::Malformed(_))
        ));
        // The decoder state is unchanged by a failed decode.
        let before = r.clone();
        let _ = r.decode(&padded);
        assert_eq!(r, before);
        assert_eq!(r.decode(&good).unwrap(), next);
    }

    #[test]
    fn encoding_refuses_a_clock_that_goes_backwards_or_a_skipped_seq() {
        let mut w = ChainContext::new(DS, MemberId::ADMIN);
        w.encode(&genesis()).unwrap();
        let stale = visit(2, 1_000, VersionVector::new());
        assert!(matches!(
            w.encode(&stale),
            Err(CommitError::ClockNotMonotonic)
        ));
        let skipped = visit(3, 1_763_000_000_001, VersionVector::new());
        assert!(matches!(
            w.encode(&skipped),
            Err(CommitError::OutOfOrder { .. })
        ));
        assert_eq!(w.seq, 1);
        assert!(w.names.is_empty(), "failed encodes leave no names behind");
    }

    /// A commit of one-byte delete ops: `n` ops in `changes` records (hand-encoded, the way
    /// an attacker would write it, without the encoder's own limits).
    fn delete_bomb(changes: usize, ops_each: usize) -> Vec<u8> {
        let wire = WireCommit {
            ms: 5,
            lc: 0,
            deps: vec![],
            seen: None,
            names: vec!["c".into()],
            changes: (0..changes)
                .map(|i| WireChange::Record {
                    coll: 0,
                    id: format!("r{i}"),
                    ops: (0..ops_each).map(|_| WireOp::Delete).collect(),
                })
                .collect(),
        };
        postcard::to_allocvec(&wire).unwrap()
    }

    #[test]
    fn a_commit_with_more_ops_than_the_limit_is_refused_naming_it() {
        let mut w = ChainContext::new(DS, MemberId::ADMIN);
        w.encode(&genesis()).unwrap();
        // At the limit, spread over records: decodes.
        let ok = delete_bomb(4, limits::MAX_OPS / 4);
        assert!(w.clone().decode(&ok).is_ok());
        // One more op, in one record or spread out: refused, and the error names the limit.
        for bytes in [
            delete_bomb(1, limits::MAX_OPS + 1),
            delete_bomb(2, limits::MAX_OPS / 2 + 1),
        ] {
            let e = w.clone().decode(&bytes).unwrap_err();
            assert!(
                matches!(
                    e,
                    CommitError::Limit(bounded::Exceeded {
                        what: what::OPS,
                        ..
                    })
                ),
                "{e:?}"
            );
            assert!(e.to_string().contains("262144 ops in one commit"), "{e}");
        }
        // More changes than the limit, each one byte-cheap.
        let many = delete_bomb(limits::MAX_CHANGES + 1, 0);
        assert!(matches!(
            w.clone().decode(&many),
            Err(CommitError::Limit(bounded::Exceeded {
                what: what::CHANGES,
                ..
            }))
        ));
    }
}
