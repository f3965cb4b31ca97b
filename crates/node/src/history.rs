//! A record's history (`ferry log`) and bringing a deleted record back (`ferry restore`).
//!
//! The history is what the store still holds: the bodies of commits not compacted away.
//! They are read, the ones touching the record kept, and replayed in the order of ferry's
//! clock (which follows causality: a change made after seeing another has a later clock)
//! into a fresh merge state. Each change is shown with the values before and after it as
//! its author saw them (the earlier changes it had received), and with how many changes to
//! the same field were made concurrently elsewhere.

use crate::error::NodeError;
use crate::node::{Node, check_collection, check_id};
use ferry_model::record::Shown;
use ferry_model::{Change, Commit, MemberId, Op, RecordState};
use ferry_sync::Storage as _;
use serde::Serialize;
use std::collections::BTreeMap;

/// One field a change touched: what it showed before and after.
#[derive(Clone, Debug, Serialize)]
pub struct FieldChange {
    /// The field.
    pub field: String,
    /// What it showed on the author's laptop before (`None`: nothing, or not known because
    /// older history was compacted away).
    #[serde(serialize_with = "ser_shown")]
    pub before: Option<Shown>,
    /// What it showed there after.
    #[serde(serialize_with = "ser_shown")]
    pub after: Option<Shown>,
    /// Changes to the same field made concurrently elsewhere (neither saw the other): a
    /// conflict, or the same value written on two laptops.
    pub concurrent: usize,
}

/// One change to the record.
#[derive(Clone, Debug, Serialize)]
pub struct LogEntry {
    /// Who made it (label).
    pub author: String,
    /// The author's change number.
    pub seq: u64,
    /// Ferry's clock at that change (ISO 8601). It follows the author's own clock, but is
    /// never earlier than a change the author had already received.
    pub at: String,
    /// Whether it deleted the record.
    pub deleted: bool,
    /// Whether every change it had seen is still held here: when not, a value it shows as
    /// nothing before may have been written in history compacted away.
    pub complete: bool,
    /// The fields it set, added to or removed from.
    pub fields: Vec<FieldChange>,
}

/// What `ferry log` shows.
#[derive(Clone, Debug, Serialize)]
pub struct RecordLog {
    /// Collection.
    pub collection: String,
    /// Record id.
    pub id: String,
    /// The changes still held, oldest first.
    pub entries: Vec<LogEntry>,
    /// Whether older history was compacted away here (the log then starts at the oldest
    /// change still held; values before it show as unknown).
    pub truncated: bool,
}

/// What `ferry restore` wrote.
#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    /// The delete undone: who made it and when.
    pub deleted_by: String,
    /// When.
    pub deleted_at: String,
    /// The fields written back.
    pub fields: usize,
}

fn ser_shown<S: serde::Serializer>(v: &Option<Shown>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some(shown) => crate::json::shown_to_json(shown).serialize(s),
    }
}

/// Changes to one record past which `log` replays "before" from all earlier changes rather
/// than from what each author had seen.
const PRECISE_LOG: usize = 2000;

/// A held commit that touches the record: its identity, clock and causal context (its
/// other changes dropped), with its ops on the record.
struct Touch {
    commit: Commit,
    stamp: ferry_model::Stamp,
    ctx: ferry_model::VersionVector,
    ops: Vec<Op>,
}

impl Node {
    /// The changes to one record still held here, oldest first, each with the values
    /// before and after it. Reads every held commit (the store keeps no index by record).
    pub fn log(&mut self, collection: &str, id: &str) -> Result<RecordLog, NodeError> {
        check_collection(collection)?;
        check_id(id)?;
        let labels = self.labels()?;
        let rules = self.rules()?;
        let (touches, compacted) = self.touches(collection, id)?;
        let truncated = compacted.iter().any(|(_, c)| c >= 2);
        if touches.is_empty() && self.get(collection, id)?.is_none() {
            self.require_collection(collection)?;
            return Err(NodeError::NoRecord {
                collection: collection.into(),
                id: id.into(),
            });
        }
        let rule_of = |f: &str| rules.of(collection, f);
        // Each change's "before" is replayed from the changes its author had seen; past
        // this many changes to one record, from all earlier ones (linear, not quadratic).
        let precise = touches.len() <= PRECISE_LOG;
        let mut running = RecordState::default();
        let mut entries = Vec::new();
        for (i, t) in touches.iter().enumerate() {
            let (stamp, ctx) = (t.stamp, &t.ctx);
            // The record as the author saw it: the earlier changes it had received.
            let mut view = if precise {
                let mut view = RecordState::default();
                for e in touches[..i].iter().filter(|e| ctx.covers(e.commit.dot())) {
                    for op in &e.ops {
                        view.apply(e.stamp, &e.ctx, op);
                    }
                }
                view
            } else {
                let view = running.clone();
                for op in &t.ops {
                    running.apply(stamp, ctx, op);
                }
                view
            };
            // Whether everything this change had seen is still held (else "before" may
            // miss values written in history compacted away).
            let complete = !ctx.iter().any(|(a, n)| n.min(compacted.get(a)) >= 2);
            let mut fields: Vec<String> = Vec::new();
            let mut deleted = false;
            for op in &t.ops {
                match op.field() {
                    Some(f) if !fields.iter().any(|x| x == f) => fields.push(f.to_string()),
                    Some(_) => {}
                    None => deleted = true,
                }
            }
            let before: BTreeMap<String, Option<Shown>> = fields
                .iter()
                .map(|f| (f.clone(), view.show(f, rule_of(f))))
                .collect();
            for op in &t.ops {
                view.apply(stamp, ctx, op);
            }
            let all: Vec<FieldChange> = fields
                .into_iter()
                .map(|f| {
                    // Changes to the same field that neither saw this one nor were seen by it.
                    let concurrent = touches
                        .iter()
                        .filter(|o| {
                            o.commit.dot() != t.commit.dot()
                                && !ctx.covers(o.commit.dot())
                                && !o.ctx.covers(t.commit.dot())
                                && o.ops.iter().any(|op| op.field() == Some(f.as_str()))
                        })
                        .count();
                    FieldChange {
                        before: before.get(&f).cloned().flatten(),
                        after: view.show(&f, rule_of(&f)),
                        concurrent,
                        field: f,
                    }
                })
                .collect();
            // A field written again as it showed (what a write to a record deleted
            // elsewhere while edited carries to keep it whole) changed nothing; a change of
            // nothing else is shown whole.
            let changed =
                |c: &FieldChange| c.concurrent > 0 || c.before.is_none() || c.before != c.after;
            let fields = if all.iter().any(changed) {
                all.into_iter().filter(changed).collect()
            } else {
                all
            };
            entries.push(LogEntry {
                author: label_of(&labels, t.commit.author),
                seq: t.commit.seq,
                at: crate::time::format_utc(t.commit.hlc.ms()),
                deleted,
                complete,
                fields,
            });
        }
        Ok(RecordLog {
            collection: collection.into(),
            id: id.into(),
            entries,
            truncated,
        })
    }

    /// Brings a deleted record back with the values it showed just before its last delete,
    /// as a new change that travels like any other.
    pub fn restore(&mut self, collection: &str, id: &str) -> Result<Restored, NodeError> {
        check_collection(collection)?;
        check_id(id)?;
        if self.get(collection, id)?.is_some_and(|r| r.is_live()) {
            return Err(NodeError::NotDeleted {
                collection: collection.into(),
                id: id.into(),
            });
        }
        let labels = self.labels()?;
        let rules = self.rules()?;
        let rule_of = |f: &str| rules.of(collection, f);
        // What the standing deletes removed is kept with the record (its ghosts) until
        // `ferry purge`, whatever compaction did to the history.
        if let Some(current) = self.get(collection, id)? {
            if let (Some(state), Some(delete)) = (
                current.before_delete(),
                current.tombstones.iter().max_by(|a, b| a.cmp_rank(b)),
            ) {
                let delete = *delete;
                return self
                    .restore_from(collection, id, &state, rule_of)
                    .map(|fields| Restored {
                        deleted_by: label_of(&labels, delete.dot.author),
                        deleted_at: crate::time::format_utc(delete.hlc.ms()),
                        fields,
                    });
            }
        }
        let (touches, compacted) = self.touches(collection, id)?;
        // Replay up to the last delete; what shows just before it is what comes back.
        let last_delete = touches
            .iter()
            .rposition(|t| t.ops.iter().any(|op| matches!(op, Op::Delete)));
        let Some(last) = last_delete else {
            if touches.is_empty() && self.get(collection, id)?.is_none() {
                self.require_collection(collection)?;
                return Err(NodeError::NoRecord {
                    collection: collection.into(),
                    id: id.into(),
                });
            }
            return Err(NodeError::HistoryGone {
                collection: collection.into(),
                id: id.into(),
            });
        };
        let mut state = RecordState::default();
        for t in &touches[..last] {
            for op in &t.ops {
                state.apply(t.stamp, &t.ctx, op);
            }
        }
        let delete = &touches[last].commit;
        // Every change the delete had seen must still be held, or the values come back
        // only in part.
        if touches[last]
            .ctx
            .iter()
            .any(|(a, n)| n.min(compacted.get(a)) >= 2)
        {
            return Err(NodeError::HistoryGone {
                collection: collection.into(),
                id: id.into(),
            });
        }
        let fields = self.restore_from(collection, id, &state, rule_of)?;
        Ok(Restored {
            deleted_by: label_of(&labels, delete.author),
            deleted_at: crate::time::format_utc(delete.hlc.ms()),
            fields,
        })
    }

    /// Writes again what `state` shows, as one new change; returns how many fields.
    fn restore_from(
        &mut self,
        collection: &str,
        id: &str,
        state: &RecordState,
        rule_of: impl Fn(&str) -> ferry_model::Rule,
    ) -> Result<usize, NodeError> {
        let mut ops = Vec::new();
        for (field, shown) in state.shown_with(rule_of) {
            match shown {
                Shown::Value(v) => ops.push(Op::Set(field.to_string(), v)),
                Shown::Set(elems) => {
                    ops.extend(elems.into_iter().map(|e| Op::Add(field.to_string(), e)))
                }
            }
        }
        if ops.is_empty() {
            return Err(NodeError::HistoryGone {
                collection: collection.into(),
                id: id.into(),
            });
        }
        let fields = state.fields.len();
        self.commit(vec![Change::Record {
            collection: collection.into(),
            id: id.into(),
            ops,
        }])?;
        Ok(fields)
    }

    /// The applied commits still held that touch one record, in causal order (a change
    /// after every change it had seen; ferry's clock orders the rest), and what this node
    /// has compacted away (per author, the last commit whose body is gone). Commits stored
    /// but never applied (waiting for what they depend on, or a forked member's after its
    /// fork) are not history.
    fn touches(
        &mut self,
        collection: &str,
        id: &str,
    ) -> Result<(Vec<Touch>, ferry_model::VersionVector), NodeError> {
        let tx = self.read()?;
        let applied = tx.applied()?;
        let mut found = Vec::new();
        let mut compacted = ferry_model::VersionVector::new();
        for (author, top) in applied.iter() {
            compacted.set(author, tx.compacted(author)?);
            let Some(chain) = tx.chain(author)? else {
                continue;
            };
            for seq in 1..=top {
                let Some(commit) = held_commit(&tx, &chain, author, seq)? else {
                    continue;
                };
                let ops: Vec<Op> = commit
                    .changes
                    .into_iter()
                    .filter_map(|ch| match ch {
                        Change::Record {
                            collection: c,
                            id: i,
                            ops,
                        } if c == collection && i == id => Some(ops),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                if !ops.is_empty() {
                    let commit = Commit {
                        changes: Vec::new(),
                        ..commit
                    };
                    found.push(Touch {
                        stamp: commit.stamp(),
                        ctx: commit.context(),
                        commit,
                        ops,
                    });
                }
            }
        }
        Ok((causal_order(found), compacted))
    }
}

/// Orders changes so that each comes after every change it had seen (a laptop whose clock
/// is behind may stamp a change earlier than one it saw), and by ferry's clock otherwise:
/// among the changes whose seen changes are all placed, the earliest by clock goes next.
fn causal_order(mut touches: Vec<Touch>) -> Vec<Touch> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let n = touches.len();
    if n > PRECISE_LOG {
        // Quadratic below; past this many changes to one record, ferry's clock alone.
        touches.sort_by_key(|t| (t.commit.hlc, t.commit.author, t.commit.seq));
        return touches;
    }
    let key = |t: &Touch| (t.commit.hlc, t.commit.author, t.commit.seq);
    // For each change, how many of the others it saw, and who saw it.
    let mut unseen = vec![0usize; n];
    let mut seen_by: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, t) in touches.iter().enumerate() {
        for (j, o) in touches.iter().enumerate() {
            if i != j && t.ctx.covers(o.commit.dot()) {
                unseen[i] += 1;
                seen_by[j].push(i);
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<(_, usize)>> = (0..n)
        .filter(|&i| unseen[i] == 0)
        .map(|i| Reverse((key(&touches[i]), i)))
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse((_, i))) = ready.pop() {
        order.push(i);
        for &k in &seen_by[i] {
            unseen[k] -= 1;
            if unseen[k] == 0 {
                ready.push(Reverse((key(&touches[k]), k)));
            }
        }
    }
    let mut slots: Vec<Option<Touch>> = touches.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// Commit `seq` of `author` (whose chain context is `chain`), decoded, if its body is
/// still held here (not compacted away) and decodes.
pub(crate) fn held_commit(
    tx: &ferry_store::StoreTx<'_>,
    chain: &ferry_model::commit::ChainContext,
    author: MemberId,
    seq: u64,
) -> Result<Option<Commit>, NodeError> {
    let Some(c) = ferry_sync::Storage::commit(tx, author, seq)? else {
        return Ok(None);
    };
    if c.bytes.is_empty() {
        return Ok(None);
    }
    Ok(chain
        .decode_stored_as(seq, c.hlc, c.deps, &c.bytes, c.form)
        .ok())
}

fn label_of(labels: &BTreeMap<MemberId, String>, m: MemberId) -> String {
    labels
        .get(&m)
        .cloned()
        .unwrap_or_else(|| format!("member #{}", m.0))
}
