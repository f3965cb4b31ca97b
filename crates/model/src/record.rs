//! The merge state of one record: every write that is not yet superseded, with its dot.
//!
//! This is a dotted-version-vector set per field. A write carries the dot of its commit and
//! the commit's causal context. Applying it removes exactly the entries whose dots the
//! context covers (the writer had seen them) and keeps the rest (concurrent writes), so:
//!
//! - applying the same commits in any causal order gives the same state;
//! - concurrent writes to one field are all kept (siblings) and nothing is lost;
//! - siblings never pile up: a later write that saw them replaces them all.
//!
//! Which sibling is *shown* is decided by [`Stamp::beats`], the same on every node.

use crate::{Dot, Hlc, Op, Value, VersionVector};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The identity and time of the commit that made a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// The commit.
    pub dot: Dot,
    /// Its hybrid logical clock.
    pub hlc: Hlc,
}

impl Stamp {
    /// The deterministic display order among concurrent writes: the later clock wins; on
    /// equal clocks the higher member number, then the higher commit number. Clocks only
    /// break ties between writes that are already known to be concurrent.
    pub fn beats(&self, other: &Stamp) -> bool {
        self.cmp_display(other) == Ordering::Greater
    }

    fn cmp_display(&self, other: &Stamp) -> Ordering {
        (self.hlc, self.dot.author, self.dot.seq).cmp(&(other.hlc, other.dot.author, other.dot.seq))
    }
}

/// One surviving write to a field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Entry {
    /// An assigned value.
    Value(Value),
    /// A counter increment.
    Incr(i64),
    /// A set element that was added.
    Elem(String),
}

/// A write that has not been superseded, with the commit that made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sibling {
    /// Who wrote it and when.
    pub stamp: Stamp,
    /// What was written.
    pub entry: Entry,
}

/// The merge state of one record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordState {
    /// Field name → surviving writes.
    pub fields: BTreeMap<String, Vec<Sibling>>,
    /// Record deletes not yet superseded by a write that saw them.
    pub tombstones: Vec<Stamp>,
}

impl RecordState {
    /// Applies one op of the commit `stamp`, whose causal context is `ctx`. The caller applies
    /// each commit once, after everything in its context.
    pub fn apply(&mut self, stamp: Stamp, ctx: &VersionVector, op: &Op) {
        let seen = |s: &Stamp| ctx.covers(s.dot) || s.dot == stamp.dot;
        // Any write that saw a delete supersedes it (the record is re-created).
        self.tombstones.retain(|t| !ctx.covers(t.dot));
        match op {
            Op::Set(f, v) => {
                let sibs = self.fields.entry(f.clone()).or_default();
                sibs.retain(|s| !seen(&s.stamp));
                sibs.push(Sibling {
                    stamp,
                    entry: Entry::Value(v.clone()),
                });
            }
            Op::Incr(f, n) => {
                let sibs = self.fields.entry(f.clone()).or_default();
                match sibs
                    .iter_mut()
                    .find(|s| s.stamp.dot == stamp.dot && matches!(s.entry, Entry::Incr(_)))
                {
                    Some(Sibling {
                        entry: Entry::Incr(m),
                        ..
                    }) => *m = m.saturating_add(*n),
                    _ => sibs.push(Sibling {
                        stamp,
                        entry: Entry::Incr(*n),
                    }),
                }
            }
            Op::Add(f, e) => {
                let sibs = self.fields.entry(f.clone()).or_default();
                sibs.retain(|s| !(matches!(&s.entry, Entry::Elem(x) if x == e) && seen(&s.stamp)));
                sibs.push(Sibling {
                    stamp,
                    entry: Entry::Elem(e.clone()),
                });
            }
            Op::Remove(f, e) => {
                if let Some(sibs) = self.fields.get_mut(f) {
                    sibs.retain(|s| {
                        !(matches!(&s.entry, Entry::Elem(x) if x == e) && seen(&s.stamp))
                    });
                }
            }
            Op::Delete => {
                for sibs in self.fields.values_mut() {
                    sibs.retain(|s| !seen(&s.stamp));
                }
                if !self.tombstones.iter().any(|t| t.dot == stamp.dot) {
                    self.tombstones.push(stamp);
                }
            }
        }
        self.fields.retain(|_, sibs| !sibs.is_empty());
    }

    /// Whether the record has any field value (a record whose fields were all deleted is
    /// gone from listings).
    pub fn is_live(&self) -> bool {
        !self.fields.is_empty()
    }

    /// The assigned values of a field, the shown one (the winner) first.
    pub fn values(&self, field: &str) -> Vec<(&Stamp, &Value)> {
        let mut vals: Vec<_> = self
            .fields
            .get(field)
            .into_iter()
            .flatten()
            .filter_map(|s| match &s.entry {
                Entry::Value(v) => Some((&s.stamp, v)),
                _ => None,
            })
            .collect();
        vals.sort_by(|a, b| b.0.cmp_display(a.0));
        vals
    }

    /// The value shown for a field: the winner among its concurrent values, plus the sum of
    /// any counter increments.
    pub fn winner(&self, field: &str) -> Option<&Value> {
        self.values(field).first().map(|(_, v)| *v)
    }

    /// The value shown for each field, by field name: the winning value, with any counter
    /// increments added to it (or to 0); a field holding only set elements shows them sorted,
    /// one per line.
    pub fn shown(&self) -> BTreeMap<&str, Value> {
        let mut out = BTreeMap::new();
        for (name, sibs) in &self.fields {
            // Summed exactly, then clamped once, so the order of siblings cannot matter.
            let sum: i128 = sibs
                .iter()
                .filter_map(|s| match s.entry {
                    Entry::Incr(n) => Some(n as i128),
                    _ => None,
                })
                .sum();
            let incr = sum.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
            let has_incr = sibs.iter().any(|s| matches!(s.entry, Entry::Incr(_)));
            let mut elems: Vec<&str> = sibs
                .iter()
                .filter_map(|s| match &s.entry {
                    Entry::Elem(e) => Some(e.as_str()),
                    _ => None,
                })
                .collect();
            let value = match (self.winner(name), has_incr) {
                (Some(Value::Int(i)), true) => {
                    Value::Int((*i as i128 + sum).clamp(i64::MIN as i128, i64::MAX as i128) as i64)
                }
                (Some(Value::Float(x)), true) => Value::Float(x + incr as f64),
                (Some(v), _) => v.clone(),
                (None, true) => Value::Int(incr),
                (None, false) => {
                    elems.sort_unstable();
                    elems.dedup();
                    Value::Str(elems.join("\n"))
                }
            };
            out.insert(name.as_str(), value);
        }
        out
    }

    /// Fields that hold more than one concurrent value, by name.
    pub fn conflicted_fields(&self) -> Vec<&str> {
        self.fields
            .keys()
            .filter(|f| self.values(f).len() > 1)
            .map(|f| f.as_str())
            .collect()
    }

    /// Whether a delete and a write that did not see it both survive: the record was deleted
    /// on one node while it was edited on another. The record stays visible.
    pub fn delete_conflict(&self) -> bool {
        !self.tombstones.is_empty() && self.is_live()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemberId;

    fn st(author: u32, seq: u64, ms: u64) -> Stamp {
        Stamp {
            dot: Dot::new(MemberId(author), seq),
            hlc: Hlc::from_parts(ms, 0),
        }
    }

    fn ctx(entries: &[(u32, u64)]) -> VersionVector {
        entries.iter().map(|&(m, n)| (MemberId(m), n)).collect()
    }

    fn set(f: &str, v: i64) -> Op {
        Op::Set(f.into(), Value::Int(v))
    }

    #[test]
    fn a_write_that_saw_the_siblings_replaces_them_all() {
        let mut r = RecordState::default();
        r.apply(st(1, 1, 10), &ctx(&[]), &set("w", 1));
        r.apply(st(2, 1, 5), &ctx(&[]), &set("w", 2));
        assert_eq!(r.conflicted_fields(), vec!["w"]);
        // The later clock is shown, but both are kept.
        assert_eq!(r.winner("w"), Some(&Value::Int(1)));
        assert_eq!(r.values("w").len(), 2);
        r.apply(st(3, 1, 1), &ctx(&[(1, 1), (2, 1)]), &set("w", 3));
        assert_eq!(r.values("w").len(), 1);
        assert_eq!(r.winner("w"), Some(&Value::Int(3)));
        assert!(r.conflicted_fields().is_empty());
    }

    #[test]
    fn siblings_do_not_explode_under_repeated_concurrent_writes() {
        // Two writers each write 50 times, each having seen only its own writes.
        let mut r = RecordState::default();
        for seq in 1..=50 {
            r.apply(
                st(1, seq, seq),
                &ctx(&[(1, seq - 1)]),
                &set("w", seq as i64),
            );
            r.apply(
                st(2, seq, seq),
                &ctx(&[(2, seq - 1)]),
                &set("w", -(seq as i64)),
            );
        }
        assert_eq!(r.values("w").len(), 2);
    }

    #[test]
    fn delete_concurrent_with_an_edit_keeps_the_edit_and_flags_it() {
        let mut r = RecordState::default();
        r.apply(st(1, 1, 1), &ctx(&[]), &set("a", 1));
        r.apply(st(1, 1, 1), &ctx(&[]), &set("b", 1));
        let mut other = r.clone();
        r.apply(st(2, 1, 2), &ctx(&[(1, 1)]), &Op::Delete);
        assert!(!r.is_live());
        r.apply(st(3, 1, 3), &ctx(&[(1, 1)]), &set("a", 9));
        other.apply(st(3, 1, 3), &ctx(&[(1, 1)]), &set("a", 9));
        other.apply(st(2, 1, 2), &ctx(&[(1, 1)]), &Op::Delete);
        assert_eq!(r, other);
        assert!(r.delete_conflict());
        assert_eq!(r.winner("a"), Some(&Value::Int(9)));
        assert_eq!(r.winner("b"), None);
        // Re-creating after seeing the delete clears the tombstone.
        r.apply(st(1, 2, 4), &ctx(&[(1, 1), (2, 1), (3, 1)]), &set("b", 2));
        assert!(!r.delete_conflict());
    }

    #[test]
    fn counters_add_concurrent_increments_and_sets_are_add_wins() {
        let mut r = RecordState::default();
        r.apply(st(1, 1, 1), &ctx(&[]), &set("n", 10));
        r.apply(st(1, 2, 2), &ctx(&[(1, 1)]), &Op::Incr("n".into(), 2));
        r.apply(st(2, 1, 2), &ctx(&[(1, 1)]), &Op::Incr("n".into(), 3));
        assert_eq!(r.shown()["n"], Value::Int(15));
        r.apply(
            st(1, 3, 3),
            &ctx(&[(1, 2)]),
            &Op::Add("t".into(), "x".into()),
        );
        r.apply(
            st(2, 2, 4),
            &ctx(&[(1, 3), (2, 1)]),
            &Op::Remove("t".into(), "x".into()),
        );
        assert!(!r.fields.contains_key("t"));
        r.apply(
            st(1, 4, 5),
            &ctx(&[(1, 3)]),
            &Op::Add("t".into(), "x".into()),
        );
        r.apply(
            st(2, 3, 6),
            &ctx(&[(1, 3), (2, 2)]),
            &Op::Remove("t".into(), "x".into()),
        );
        assert_eq!(
            r.shown()["t"],
            Value::Str("x".into()),
            "a concurrent add survives"
        );
    }
}
