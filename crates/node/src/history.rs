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

/// A held commit that touches the record, with its ops on it.
struct Touch {
    commit: Commit,
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
        let (touches, truncated) = self.touches(collection, id)?;
        if touches.is_empty() && self.get(collection, id)?.is_none() {
            self.require_collection(collection)?;
            return Err(NodeError::NoRecord {
                collection: collection.into(),
                id: id.into(),
            });
        }
        let rule_of = |f: &str| rules.of(collection, f);
        let mut entries = Vec::new();
        for (i, t) in touches.iter().enumerate() {
            let stamp = t.commit.stamp();
            let ctx = t.commit.context();
            // The record as the author saw it: the earlier changes it had received.
            let mut view = RecordState::default();
            for e in touches[..i].iter().filter(|e| ctx.covers(e.commit.dot())) {
                let (s, c) = (e.commit.stamp(), e.commit.context());
                for op in &e.ops {
                    view.apply(s, &c, op);
                }
            }
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
                view.apply(stamp, &ctx, op);
            }
            let fields = fields
                .into_iter()
                .map(|f| {
                    // Changes to the same field that neither saw this one nor were seen by it.
                    let concurrent = touches
                        .iter()
                        .filter(|o| {
                            o.commit.dot() != t.commit.dot()
                                && !ctx.covers(o.commit.dot())
                                && !o.commit.context().covers(t.commit.dot())
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
            entries.push(LogEntry {
                author: label_of(&labels, t.commit.author),
                seq: t.commit.seq,
                at: crate::time::format_utc(t.commit.hlc.ms()),
                deleted,
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
        let (touches, _) = self.touches(collection, id)?;
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
            let (stamp, ctx) = (t.commit.stamp(), t.commit.context());
            for op in &t.ops {
                state.apply(stamp, &ctx, op);
            }
        }
        let delete = &touches[last].commit;
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
        Ok(Restored {
            deleted_by: label_of(&labels, delete.author),
            deleted_at: crate::time::format_utc(delete.hlc.ms()),
            fields,
        })
    }

    /// The held commits that touch one record, in the order of ferry's clock, and whether
    /// some history was compacted away here (so older changes may be missing).
    fn touches(&mut self, collection: &str, id: &str) -> Result<(Vec<Touch>, bool), NodeError> {
        let tx = self.read()?;
        let stored = tx.stored()?;
        let mut out = Vec::new();
        let mut truncated = false;
        for (author, top) in stored.iter() {
            truncated |= tx.compacted(author)? > 0;
            let Some(chain) = tx.chain(author)? else {
                continue;
            };
            for seq in 1..=top {
                let Some(c) = ferry_sync::Storage::commit(&tx, author, seq)? else {
                    continue;
                };
                if c.bytes.is_empty() {
                    continue;
                }
                let Ok(commit) = chain.decode_stored(seq, c.hlc, c.deps, &c.bytes) else {
                    continue;
                };
                let ops: Vec<Op> = commit
                    .changes
                    .iter()
                    .filter_map(|ch| match ch {
                        Change::Record {
                            collection: c,
                            id: i,
                            ops,
                        } if c == collection && i == id => Some(ops.clone()),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                if !ops.is_empty() {
                    out.push(Touch { commit, ops });
                }
            }
        }
        out.sort_by(|a, b| {
            a.commit
                .hlc
                .cmp(&b.commit.hlc)
                .then(a.commit.author.cmp(&b.commit.author))
                .then(a.commit.seq.cmp(&b.commit.seq))
        });
        Ok((out, truncated))
    }
}

fn label_of(labels: &BTreeMap<MemberId, String>, m: MemberId) -> String {
    labels
        .get(&m)
        .cloned()
        .unwrap_or_else(|| format!("member #{}", m.0))
}
