//! What apps built on a node use (issue 15): writes of whole records in one commit, and a
//! feed of what changed since a cursor — local writes and changes that came from other
//! laptops alike.
//!
//! A [`Cursor`] is the applied vector a reader has seen: for each author, the last of its
//! changes the reader was told about. Changes arrive from other laptops in any order, so a
//! single counter could not say what a reader has missed; a vector can, and it needs no
//! table of its own. Its text form is `A.S-A.S…` (member number, change number), `0` when
//! empty. A cursor older than what compaction kept ([`NodeError::FeedGone`]) means the
//! reader lists the records again and follows from [`Node::feed_cursor`].

use crate::history::held_commit;
use crate::node::{changing_ops, check_collection, check_field, check_id};
use crate::{Node, NodeError};
use ferry_model::{Change, MemberId, Op, RecordState, Rule, Value, VersionVector};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// How far a reader of the changes feed has read (see the module's documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor(VersionVector);

impl Cursor {
    /// The change number of `author` this cursor has read up to.
    pub fn get(&self, author: MemberId) -> u64 {
        self.0.get(author)
    }

    /// Moves the cursor past change `seq` of member `author` (never back).
    pub fn advance(&mut self, author: u32, seq: u64) {
        if self.0.get(MemberId(author)) < seq {
            self.0.set(MemberId(author), seq);
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (a, s) in self.0.iter() {
            if s == 0 {
                continue;
            }
            if !first {
                f.write_str("-")?;
            }
            first = false;
            write!(f, "{}.{s}", a.0)?;
        }
        if first {
            f.write_str("0")?;
        }
        Ok(())
    }
}

/// Why a text is not a cursor.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a cursor: give what a changes page returned as `next` (or 0, or now)")]
pub struct BadCursor(pub String);

impl FromStr for Cursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> Result<Cursor, BadCursor> {
        let bad = || BadCursor(s.chars().take(64).collect());
        let mut vv = VersionVector::new();
        if s == "0" {
            return Ok(Cursor(vv));
        }
        for part in s.split('-') {
            let (a, n) = part.split_once('.').ok_or_else(bad)?;
            let a: u32 = a.parse().map_err(|_| bad())?;
            let n: u64 = n.parse().map_err(|_| bad())?;
            if n == 0 || vv.get(MemberId(a)) != 0 {
                return Err(bad());
            }
            vv.set(MemberId(a), n);
        }
        Ok(Cursor(vv))
    }
}

/// One change to one record, as the feed tells it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FeedChange {
    /// The record's collection.
    pub collection: String,
    /// The record's id.
    pub id: String,
    /// The author's member number.
    pub author: u32,
    /// The author's change number.
    pub seq: u64,
    /// When the author made it (UTC, as the author's clock had it).
    pub at: String,
    /// Whether the change deleted the record.
    pub deleted: bool,
}

/// A page of the changes feed.
#[derive(Clone, Debug)]
pub struct FeedPage {
    /// The changes, each author's in order (a change touching several records appears once
    /// per record).
    pub changes: Vec<FeedChange>,
    /// Where the next page starts.
    pub next: Cursor,
    /// Whether more changes are held past `next` already.
    pub more: bool,
}

/// What a field is given in a record write: one value, or, for a field under the `set`
/// rule, the strings it should hold.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldInput {
    /// One value (`null` clears the field).
    Value(Value),
    /// A set field's elements.
    Set(Vec<String>),
}

/// One record write of [`Node::write_records`].
#[derive(Clone, Debug, PartialEq)]
pub enum RecordWrite {
    /// The record becomes exactly these fields: each given field is set, every other field
    /// the record shows is cleared (the record is not deleted).
    Replace {
        /// Collection.
        collection: String,
        /// Record id.
        id: String,
        /// The fields.
        fields: Vec<(String, FieldInput)>,
    },
    /// Sets only these fields (`null` clears one).
    Merge {
        /// Collection.
        collection: String,
        /// Record id.
        id: String,
        /// The fields.
        fields: Vec<(String, FieldInput)>,
    },
    /// Deletes the record (it must be live).
    Delete {
        /// Collection.
        collection: String,
        /// Record id.
        id: String,
    },
}

impl RecordWrite {
    fn target(&self) -> (&str, &str) {
        match self {
            RecordWrite::Replace { collection, id, .. }
            | RecordWrite::Merge { collection, id, .. }
            | RecordWrite::Delete { collection, id } => (collection, id),
        }
    }
}

/// Why one write of a batch was refused: its place in the batch and the reason.
#[derive(Debug, thiserror::Error)]
#[error("write {index} ({collection}/{id}): {source}")]
pub struct WriteRefused {
    /// Its place in the batch, from 0.
    pub index: usize,
    /// Its collection.
    pub collection: String,
    /// Its record id.
    pub id: String,
    /// Why.
    #[source]
    pub source: Box<NodeError>,
    /// `true` when the writes were all accepted but the store failed to save them (a full
    /// disk, another process holding the home): no single write is to blame, and `index`
    /// is the last one's.
    pub saving: bool,
}

/// A page of a collection's live records ([`Node::records_page`]).
#[derive(Clone, Debug)]
pub struct RecordsPage {
    /// The records, by id.
    pub records: Vec<(String, RecordState)>,
    /// The id to give as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

impl Node {
    /// The feed's cursor now: a page read from it holds only changes made after this call.
    pub fn feed_cursor(&mut self) -> Result<Cursor, NodeError> {
        let tx = self.read()?;
        Ok(Cursor(ferry_sync::Storage::applied(&tx)?))
    }

    /// The changes applied here after `since`, at most about `limit` (whole changes: a
    /// change touching many records is never cut), ferry's own collections left out.
    /// [`NodeError::FeedGone`] when compaction dropped changes the reader has not read.
    pub fn changes_since(&mut self, since: &Cursor, limit: usize) -> Result<FeedPage, NodeError> {
        use ferry_sync::Storage as _;
        let tx = self.read()?;
        let applied = tx.applied()?;
        let mut next = since.0.clone();
        let mut changes = Vec::new();
        let mut more = false;
        'authors: for (author, top) in applied.iter() {
            let from = since.get(author);
            if top <= from {
                continue;
            }
            if changes.len() >= limit {
                more = true;
                break;
            }
            let Some(chain) = tx.chain(author)? else {
                continue;
            };
            for seq in from + 1..=top {
                if changes.len() >= limit {
                    more = true;
                    break 'authors;
                }
                let Some(commit) = held_commit(&tx, &chain, author, seq)? else {
                    if tx.compacted(author)? >= seq {
                        return Err(NodeError::FeedGone {
                            author: author.0,
                            seq,
                        });
                    }
                    // Not held and not compacted: applied without a body (cannot happen
                    // with this store); nothing to tell.
                    next.set(author, seq);
                    continue;
                };
                let at = crate::time::format_utc(commit.hlc.ms());
                for ch in &commit.changes {
                    let Change::Record {
                        collection,
                        id,
                        ops,
                    } = ch
                    else {
                        continue;
                    };
                    if collection.starts_with('_') {
                        continue;
                    }
                    changes.push(FeedChange {
                        collection: collection.clone(),
                        id: id.clone(),
                        author: author.0,
                        seq,
                        at: at.clone(),
                        deleted: ops.iter().any(|o| matches!(o, Op::Delete)),
                    });
                }
                next.set(author, seq);
            }
        }
        Ok(FeedPage {
            changes,
            next: Cursor(next),
            more,
        })
    }

    /// A page of the live records of `collection` in id order: at most `limit` records
    /// whose ids come after `after`, each showing every `(field, value)` of `filter` (a set
    /// field: holding the value among its elements). [`NodeError::NoCollection`] for a
    /// collection this laptop holds no record of.
    pub fn records_page(
        &mut self,
        collection: &str,
        after: &str,
        limit: usize,
        filter: &[(String, Value)],
    ) -> Result<RecordsPage, NodeError> {
        const STOP: &str = "(page full)";
        self.require_collection(collection)?;
        let rules = self.rules()?;
        let mut page = Vec::new();
        let mut next = None;
        let mut tx = self.read()?;
        let walked = crate::node::for_each_live_after(&mut tx, collection, after, |id, r| {
            if page.len() == limit {
                next = page
                    .last()
                    .map(|(id, _): &(String, RecordState)| id.clone());
                return Err(NodeError::Internal(STOP.into()));
            }
            let shows = |(f, v): &(String, Value)| match r.show(f, rules.of(collection, f)) {
                Some(ferry_model::Shown::Value(w)) => w == *v,
                Some(ferry_model::Shown::Set(e)) => e.iter().any(|x| Value::Str(x.clone()) == *v),
                None => false,
            };
            if filter.iter().all(shows) {
                page.push((id.to_string(), r.clone()));
            }
            Ok(())
        });
        match walked {
            Err(NodeError::Internal(m)) if m == STOP => {}
            other => other?,
        }
        Ok(RecordsPage {
            records: page,
            next,
        })
    }

    /// Writes records in one commit: all of them, or none when one is refused (the error
    /// names which). Returns, per write, how many fields it changed (a delete counts 1);
    /// writes that change nothing make no commit.
    pub fn write_records(&mut self, writes: &[RecordWrite]) -> Result<Vec<usize>, WriteRefused> {
        self.write_records_noting(writes, None)
    }

    /// [`Node::write_records`], also setting a metadata value (`key`, `value`) in the same
    /// transaction (an attached table's capture cursor), even when no write changes anything.
    pub(crate) fn write_records_noting(
        &mut self,
        writes: &[RecordWrite],
        note: Option<(&str, &[u8])>,
    ) -> Result<Vec<usize>, WriteRefused> {
        let rules = self.rules().map_err(|e| refused(0, writes, e))?;
        let mut changes = Vec::new();
        let mut counts = Vec::with_capacity(writes.len());
        // Every record as it is now, read in one transaction.
        let mut states = Vec::with_capacity(writes.len());
        {
            let tx = self
                .store
                .read()
                .map_err(|e| refused(0, writes, e.into()))?;
            use ferry_sync::Storage as _;
            let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
            for (i, w) in writes.iter().enumerate() {
                let (collection, id) = w.target();
                let fail = |e| refused(i, writes, e);
                check_collection(collection).map_err(fail)?;
                check_id(id).map_err(fail)?;
                if !seen.insert((collection, id)) {
                    return Err(fail(NodeError::BadArgument(
                        "the same record is written twice in one batch; write it once".into(),
                    )));
                }
                states.push(tx.record(collection, id).map_err(|e| fail(e.into()))?);
            }
        }
        for ((i, w), state) in writes.iter().enumerate().zip(states) {
            let (collection, id) = w.target();
            let fail = |e| refused(i, writes, e);
            let live = state.as_ref().filter(|s| s.is_live());
            let ops = match w {
                RecordWrite::Delete { .. } => {
                    if live.is_none() {
                        return Err(fail(NodeError::NoRecord {
                            collection: collection.into(),
                            id: id.into(),
                        }));
                    }
                    vec![Op::Delete]
                }
                RecordWrite::Replace { fields, .. } | RecordWrite::Merge { fields, .. } => {
                    let replace = matches!(w, RecordWrite::Replace { .. });
                    let mut ops = Vec::new();
                    for (f, input) in fields {
                        check_field(f).map_err(fail)?;
                        let rule = rules.of(collection, f);
                        ops.extend(
                            field_ops(live, f, input, rule)
                                .map_err(|m| fail(NodeError::BadArgument(m)))?,
                        );
                    }
                    if replace && let Some(s) = live {
                        for (f, shown) in s.shown_with(|f| rules.of(collection, f)) {
                            if fields.iter().any(|(g, _)| g == f) {
                                continue;
                            }
                            match shown {
                                ferry_model::Shown::Value(Value::Null) => {}
                                ferry_model::Shown::Set(e) if e.is_empty() => {}
                                ferry_model::Shown::Set(e) => {
                                    ops.extend(e.into_iter().map(|x| Op::Remove(f.to_string(), x)))
                                }
                                ferry_model::Shown::Value(_) => {
                                    ops.push(Op::Set(f.to_string(), Value::Null))
                                }
                            }
                        }
                    }
                    changing_ops(live, ops, true)
                }
            };
            counts.push(ops.len());
            if !ops.is_empty() {
                changes.push(Change::Record {
                    collection: collection.into(),
                    id: id.into(),
                    ops,
                });
            }
        }
        if !changes.is_empty() || note.is_some() {
            self.commit_noting(changes, note)
                .map_err(|e| WriteRefused {
                    saving: true,
                    ..refused(writes.len().saturating_sub(1), writes, e)
                })?;
        }
        Ok(counts)
    }
}

fn refused(index: usize, writes: &[RecordWrite], source: NodeError) -> WriteRefused {
    let (collection, id) = writes.get(index).map(|w| w.target()).unwrap_or(("", ""));
    WriteRefused {
        index,
        collection: collection.into(),
        id: id.into(),
        source: Box::new(source),
        saving: false,
    }
}

/// The ops that give field `f` the input, under the field's rule.
fn field_ops(
    state: Option<&RecordState>,
    f: &str,
    input: &FieldInput,
    rule: Rule,
) -> Result<Vec<Op>, String> {
    match (input, rule) {
        (FieldInput::Set(elems), Rule::Set) => {
            let held: Vec<String> = match state.and_then(|s| s.show(f, Rule::Set)) {
                Some(ferry_model::Shown::Set(e)) => e,
                _ => Vec::new(),
            };
            let mut ops: Vec<Op> = held
                .iter()
                .filter(|h| !elems.contains(h))
                .map(|h| Op::Remove(f.into(), h.clone()))
                .collect();
            ops.extend(
                elems
                    .iter()
                    .filter(|e| !held.contains(e))
                    .map(|e| Op::Add(f.into(), e.clone())),
            );
            Ok(ops)
        }
        (FieldInput::Set(_), _) => Err(format!(
            "field {f:?} holds one value (rule {rule}): a list is only for fields under the set rule"
        )),
        (FieldInput::Value(v), _) => Ok(vec![Op::Set(f.into(), v.clone())]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Home;

    fn set(f: &str, v: Value) -> (String, FieldInput) {
        (f.into(), FieldInput::Value(v))
    }

    #[test]
    fn cursors_read_back_what_they_write_and_refuse_anything_else() {
        let mut c = Cursor::default();
        assert_eq!(c.to_string(), "0");
        assert_eq!("0".parse::<Cursor>().unwrap(), c);
        c.advance(3, 7);
        c.advance(1, 2);
        c.advance(3, 5);
        assert_eq!(c.to_string(), "1.2-3.7", "never moves back");
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        for bad in [
            "",
            "x",
            "1",
            "1.",
            ".1",
            "1.0",
            "1.2-1.3",
            "1.2-",
            "-1.2",
            "1.2.3",
            "4294967296.1",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_feed_tells_each_change_once_in_pages_and_a_batch_is_one_change_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = Node::create(&Home::at(dir.path().join("hq")), "hq", "visits").unwrap();
        let start = n.feed_cursor().unwrap();
        let w = |id: &str, age: i64| RecordWrite::Merge {
            collection: "visits".into(),
            id: id.into(),
            fields: vec![set("age", Value::Int(age))],
        };
        // A refused batch leaves no trace: no record, no change on the feed.
        let refused = n
            .write_records(&[
                w("a", 1),
                RecordWrite::Delete {
                    collection: "visits".into(),
                    id: "nobody".into(),
                },
            ])
            .unwrap_err();
        assert_eq!(refused.index, 1);
        assert!(matches!(*refused.source, NodeError::NoRecord { .. }));
        assert!(n.get("visits", "a").unwrap().is_none());
        assert!(n.changes_since(&start, 10).unwrap().changes.is_empty());
        // Five writes, one change each; then one batch of three is one change.
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            n.write_records(&[w(id, i as i64)]).unwrap();
        }
        n.write_records(&[w("f", 0), w("g", 0), w("a", 9)]).unwrap();
        let all = n.changes_since(&start, 100).unwrap();
        let ids: Vec<&str> = all.changes.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d", "e", "f", "g", "a"]);
        assert!(!all.more);
        assert_eq!(all.next, n.feed_cursor().unwrap());
        // Pages of 2 tell the same changes, each once (a change is never cut).
        let (mut at, mut paged) = (start.clone(), Vec::new());
        loop {
            let p = n.changes_since(&at, 2).unwrap();
            paged.extend(p.changes.iter().map(|c| c.id.clone()));
            at = p.next;
            if !p.more {
                break;
            }
        }
        assert_eq!(paged, ids);
        assert!(n.changes_since(&at, 10).unwrap().changes.is_empty());
        // Replace clears what it does not name; writing a record twice in a batch is refused.
        n.write_records(&[RecordWrite::Replace {
            collection: "visits".into(),
            id: "a".into(),
            fields: vec![set("village", Value::Str("Kibera".into()))],
        }])
        .unwrap();
        let state = n.get("visits", "a").unwrap().unwrap();
        let shown = state.shown();
        assert_eq!(shown.get("age"), Some(&Value::Null));
        assert_eq!(shown.get("village"), Some(&Value::Str("Kibera".into())));
        let twice = n.write_records(&[w("h", 1), w("h", 2)]).unwrap_err();
        assert_eq!(twice.index, 1);
        // Once compaction dropped the history, an old cursor is told so; a new one works.
        n.compact(false, &crate::NoProgress).unwrap();
        assert!(matches!(
            n.changes_since(&start, 10),
            Err(NodeError::FeedGone { .. })
        ));
        let now = n.feed_cursor().unwrap();
        n.write_records(&[w("z", 1)]).unwrap();
        let after = n.changes_since(&now, 10).unwrap();
        assert_eq!(after.changes.len(), 1);
        assert_eq!(after.changes[0].id, "z");
    }
}
