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
//! How a field is *shown* depends on its merge [`Rule`]; the order among concurrent writes
//! is [`Stamp::cmp_rank`], the same on every node.

use crate::{Dot, Hlc, MemberId, Op, Value, VersionVector};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// How far (in ms) a commit's clock may stray from the latest clock reading of the *other*
/// members' commits its author had seen before the clock stops counting: 30 days. See
/// [`Stamp::rank`].
pub const CLOCK_TRUST_WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;

// wire-format: begin
/// The identity and time of the commit that made a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// The commit.
    pub dot: Dot,
    /// Its hybrid logical clock, as its author's device stamped it.
    pub hlc: Hlc,
    /// The time used to order it among concurrent writes (ms since the epoch): its clock,
    /// kept within [`CLOCK_TRUST_WINDOW_MS`] of the newest clock among the other members'
    /// commits its author had seen. A device whose date is years off therefore neither wins
    /// nor loses every later conflict: it counts as at most 30 days ahead of (or behind)
    /// what it had last received. A device that had seen nobody else yet is not limited.
    pub rank: u64,
}

// wire-format: end

impl Stamp {
    /// A stamp whose rank is its own clock (no other member's clock to compare with).
    pub fn new(dot: Dot, hlc: Hlc) -> Stamp {
        Stamp {
            dot,
            hlc,
            rank: hlc.ms(),
        }
    }

    /// A stamp whose rank is its clock kept within the trust window around `seen`, the
    /// newest clock among the other members' commits in its causal context.
    pub fn ranked(dot: Dot, hlc: Hlc, seen: Option<Hlc>) -> Stamp {
        let rank = match seen {
            Some(s) => hlc.ms().clamp(
                s.ms().saturating_sub(CLOCK_TRUST_WINDOW_MS),
                s.ms().saturating_add(CLOCK_TRUST_WINDOW_MS),
            ),
            None => hlc.ms(),
        };
        Stamp { dot, hlc, rank }
    }

    /// How far its clock lies outside the trust window (0 when it does not).
    fn excess(&self) -> u64 {
        self.hlc.ms().abs_diff(self.rank)
    }

    /// The order among concurrent writes: by rank; on equal ranks, the clock closer to the
    /// trust window first (two clocks cut back to the same rank are told apart by how far
    /// off they were: the less implausible one is the later); then clock, member number and
    /// commit number. The greatest is shown first ("latest"); `first` takes the least.
    pub fn cmp_rank(&self, other: &Stamp) -> Ordering {
        self.rank
            .cmp(&other.rank)
            .then_with(|| other.excess().cmp(&self.excess()))
            .then_with(|| {
                (self.hlc, self.dot.author, self.dot.seq).cmp(&(
                    other.hlc,
                    other.dot.author,
                    other.dot.seq,
                ))
            })
    }

    /// Whether `self` is shown before `other`.
    pub fn beats(&self, other: &Stamp) -> bool {
        self.cmp_rank(other) == Ordering::Greater
    }
}

/// How concurrent writes to one field are merged and shown. Set per field by the admin and
/// replicated as dataset metadata; `Conflict` when nothing is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Rule {
    /// Keep every concurrent value, show one (the latest by [`Stamp::cmp_rank`]) and list the
    /// field as a conflict for a person to resolve.
    #[default]
    Conflict,
    /// Show the latest value by ferry's clock and do not list it: for fields where the last
    /// write really is what users want.
    Lww,
    /// Show the largest of the concurrent values.
    Max,
    /// Show the smallest of the concurrent values.
    Min,
    /// A number that concurrent increments add to (`ferry incr`).
    Counter,
    /// A set of strings; an add wins over a concurrent remove (`ferry add`/`ferry remove`).
    Set,
    /// The first value ever written keeps it (e.g. a registration number).
    First,
}

impl Rule {
    /// Every rule, in the order they are documented.
    pub const ALL: [Rule; 7] = [
        Rule::Conflict,
        Rule::Lww,
        Rule::Max,
        Rule::Min,
        Rule::Counter,
        Rule::Set,
        Rule::First,
    ];

    /// The rule's name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Conflict => "conflict",
            Rule::Lww => "lww",
            Rule::Max => "max",
            Rule::Min => "min",
            Rule::Counter => "counter",
            Rule::Set => "set",
            Rule::First => "first",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Rule {
    type Err = String;

    fn from_str(s: &str) -> Result<Rule, String> {
        Rule::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Rule::ALL.iter().map(|r| r.name()).collect();
                format!("unknown rule {s:?}; the rules are {}", names.join(", "))
            })
    }
}

// wire-format: begin
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

// wire-format: end

/// What a field shows under its rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Shown {
    /// One value.
    Value(Value),
    /// A set of strings, sorted.
    Set(Vec<String>),
}

/// A write a delete removed, kept under the delete's tombstone: while a write concurrent
/// with the delete keeps the record, the record shows again as it stood when the delete was
/// made (its ghosts), plus that write.
///
/// The rule, the same in every delivery order:
/// - a delete turns every write it saw into a ghost, and counts itself among the deletes of
///   every ghost it saw — unless it also saw a write that *buried* that ghost;
/// - a write buries a ghost when it saw the ghost and one of the deletes that removed it
///   (its author saw the record deleted, or revived and wrote the ghost again itself);
/// - a write to the ghost's field that saw it supersedes it (it is gone, as a value would be);
/// - a ghost shows while the record is live and one of its deletes is still a tombstone.
///
/// Ghosts are kept until `ferry purge`; version 1 bundles do not carry them, version 3 snapshots do.
// wire-format: begin
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ghost {
    /// The field it was written to.
    pub field: String,
    /// The write.
    pub sibling: Sibling,
    /// The deletes that saw it and count it (dots ascending).
    #[serde(deserialize_with = "crate::bounded::ops")]
    pub under: Vec<Dot>,
    /// For each member, the lowest commit number of its writes that buried it (members
    /// ascending): a delete that saw one of those does not count the ghost.
    #[serde(deserialize_with = "crate::bounded::ops")]
    pub buried: Vec<(MemberId, u64)>,
}

/// A record's ghosts as a version 3 snapshot carries them (SPEC §13): decoding draws the
/// ghosts, and each one's deletes and burying writes, from the current
/// [`crate::bounded::OpBudget`] before allocating them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ghosts(#[serde(deserialize_with = "crate::bounded::ops")] pub Vec<Ghost>);

impl Ghost {
    /// Whether `ghosts` are as a writer writes them (SPEC §13): in canonical order (field,
    /// then dot, kind and element as siblings), none repeated, each under at least one
    /// delete, its deletes' dots strictly ascending and its burying members too.
    pub fn canonical(ghosts: &[Ghost]) -> bool {
        ghosts
            .windows(2)
            .all(|w| ghost_key(&w[0]) < ghost_key(&w[1]))
            && ghosts.iter().all(|g| {
                !g.under.is_empty()
                    && g.under.windows(2).all(|w| w[0] < w[1])
                    && g.buried.windows(2).all(|w| w[0].0 < w[1].0)
            })
    }
}

/// The canonical order of a record's ghosts: by field (UTF-8 bytes), then as siblings.
fn ghost_key(g: &Ghost) -> (&str, (Dot, u8, &str)) {
    (g.field.as_str(), sibling_key(&g.sibling))
}

/// The canonical order of a field's siblings: by dot, then kind, then element.
fn sibling_key(s: &Sibling) -> (Dot, u8, &str) {
    match &s.entry {
        Entry::Value(_) => (s.stamp.dot, 0, ""),
        Entry::Incr(_) => (s.stamp.dot, 1, ""),
        Entry::Elem(e) => (s.stamp.dot, 2, e.as_str()),
    }
}

// wire-format: end

impl Ghost {
    /// Whether a commit with causal context `ctx` saw a write that buried this ghost.
    fn buried_for(&self, ctx: &VersionVector) -> bool {
        self.buried.iter().any(|&(m, s)| ctx.covers(Dot::new(m, s)))
    }

    /// Counts `delete` among the deletes of this ghost, keeping for each author only its
    /// first and last (an author's later delete saw its earlier ones): all that decides
    /// whether a write saw one of them (the first) and whether one stands (the last), so
    /// the list stays bounded by twice the members however many deletes arrive.
    fn count_under(&mut self, delete: Dot) {
        let same: Vec<usize> = (0..self.under.len())
            .filter(|&i| self.under[i].author == delete.author)
            .collect();
        match same.as_slice() {
            [] | [_] => {
                if let Err(i) = self.under.binary_search(&delete) {
                    self.under.insert(i, delete);
                }
            }
            [first, .., last] => {
                if delete < self.under[*first] {
                    self.under[*first] = delete;
                } else if delete > self.under[*last] {
                    self.under[*last] = delete;
                }
            }
        }
    }

    fn bury(&mut self, by: Dot) {
        match self.buried.binary_search_by_key(&by.author, |&(m, _)| m) {
            Ok(i) => self.buried[i].1 = self.buried[i].1.min(by.seq),
            Err(i) => self.buried.insert(i, (by.author, by.seq)),
        }
    }
}

// wire-format: begin
/// The merge state of one record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordState {
    /// Field name → surviving writes.
    #[serde(
        deserialize_with = "crate::bounded::map_of_ops::<_, _, _, { crate::limits::MAX_NAME_TABLE }, { crate::bounded::what::NAMES }>"
    )]
    pub fields: BTreeMap<String, Vec<Sibling>>,
    /// Record deletes not yet superseded by a write that saw them.
    #[serde(deserialize_with = "crate::bounded::ops")]
    pub tombstones: Vec<Stamp>,
    /// For each field whose earliest value ever written is no longer among its surviving
    /// writes: that earliest value (what the `first` rule shows). Kept only while it is
    /// earlier than every surviving value, so the state is the same on every node.
    #[serde(
        deserialize_with = "crate::bounded::map::<_, _, _, { crate::limits::MAX_NAME_TABLE }, { crate::bounded::what::NAMES }>"
    )]
    pub firsts: BTreeMap<String, Sibling>,
    /// Writes deletes removed (see [`Ghost`]), in canonical order (field, then
    /// [`sibling_key`]). Not part of a version 1 record state: the bundle codec writes
    /// them after it in version 3 snapshots (SPEC §13).
    #[serde(skip)]
    pub ghosts: Vec<Ghost>,
}

// wire-format: end

impl RecordState {
    /// Applies one op of the commit `stamp`, whose causal context is `ctx`. The caller applies
    /// each commit once, after everything in its context.
    pub fn apply(&mut self, stamp: Stamp, ctx: &VersionVector, op: &Op) {
        let seen = |s: &Stamp| ctx.covers(s.dot) || s.dot == stamp.dot;
        // Any write that saw a delete supersedes it (the record is re-created).
        self.tombstones.retain(|t| !ctx.covers(t.dot));
        if !self.ghosts.is_empty() {
            self.ghosts_meet(stamp, ctx, op);
        }
        match op {
            Op::Set(f, v) => {
                let sib = Sibling {
                    stamp,
                    entry: Entry::Value(v.clone()),
                };
                match self.fields.get_mut(f.as_str()) {
                    // The common case: a field written for the first time.
                    None if !self.firsts.contains_key(f.as_str()) => {
                        self.fields.insert(f.clone(), vec![sib]);
                        return;
                    }
                    None => {
                        self.fields.insert(f.clone(), vec![sib]);
                        self.retire(f, Vec::new());
                        return;
                    }
                    Some(sibs) => {
                        // Also common: one earlier value that this write saw.
                        if sibs.len() == 1
                            && seen(&sibs[0].stamp)
                            && !self.firsts.contains_key(f.as_str())
                        {
                            let old = std::mem::replace(&mut sibs[0], sib);
                            self.retire(f, vec![old]);
                            return;
                        }
                        let removed = self.remove_from(f, |s| seen(&s.stamp));
                        self.fields.entry(f.clone()).or_default().push(sib);
                        self.retire(f, removed);
                    }
                }
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
                let removed = self.remove_from(f, |s| {
                    matches!(&s.entry, Entry::Elem(x) if x == e) && seen(&s.stamp)
                });
                self.fields.entry(f.clone()).or_default().push(Sibling {
                    stamp,
                    entry: Entry::Elem(e.clone()),
                });
                self.retire(f, removed);
            }
            Op::Remove(f, e) => {
                let removed = self.remove_from(f, |s| {
                    matches!(&s.entry, Entry::Elem(x) if x == e) && seen(&s.stamp)
                });
                self.retire(f, removed);
            }
            Op::Delete => {
                let names: Vec<String> = self.fields.keys().cloned().collect();
                let mut ghosts = false;
                for f in names {
                    let removed = self.remove_from(&f, |s| seen(&s.stamp));
                    for sib in &removed {
                        ghosts = true;
                        // One commit that writes, deletes and writes the same field again
                        // would make a second ghost of the same write: merged into one.
                        let same = self
                            .ghosts
                            .iter_mut()
                            .find(|g| g.field == f && sibling_key(&g.sibling) == sibling_key(sib));
                        match same {
                            Some(g) => {
                                g.sibling.entry = match (&g.sibling.entry, &sib.entry) {
                                    (Entry::Incr(a), Entry::Incr(b)) => {
                                        Entry::Incr(a.saturating_add(*b))
                                    }
                                    (_, e) => e.clone(),
                                };
                                g.count_under(stamp.dot);
                            }
                            None => self.ghosts.push(Ghost {
                                field: f.clone(),
                                sibling: sib.clone(),
                                under: vec![stamp.dot],
                                buried: Vec::new(),
                            }),
                        }
                    }
                    self.retire(&f, removed);
                }
                if ghosts {
                    self.ghosts.sort_by(|a, b| ghost_key(a).cmp(&ghost_key(b)));
                }
                if !self.tombstones.iter().any(|t| t.dot == stamp.dot) {
                    self.tombstones.push(stamp);
                }
            }
        }
        if matches!(op, Op::Delete | Op::Remove(..) | Op::Set(..) | Op::Add(..)) {
            self.fields.retain(|_, sibs| !sibs.is_empty());
        }
        // One canonical order, so equal states are equal values (and equal bytes on disk).
        if let Some(f) = op.field() {
            if let Some(sibs) = self.fields.get_mut(f).filter(|s| s.len() > 1) {
                sibs.sort_by(|a, b| sibling_key(a).cmp(&sibling_key(b)));
            }
        }
        self.tombstones.sort_by_key(|t| t.dot);
    }

    /// The state of a record no commit wrote before, once one commit (`stamp`, causal
    /// context `ctx`) applied `ops` to it.
    pub fn made_by(stamp: Stamp, ctx: &VersionVector, ops: Vec<Op>) -> RecordState {
        let mut rec = RecordState::default();
        for op in ops {
            rec.apply_owned(stamp, ctx, op);
        }
        rec
    }

    /// [`RecordState::apply`], taking the op by value: a value that is set is moved into the
    /// state, not copied (a 16 MiB text costs its size once).
    pub fn apply_owned(&mut self, stamp: Stamp, ctx: &VersionVector, op: Op) {
        match op {
            // The two common cases of `apply`, with the field name and the value moved in
            // (no copies): a field written for the first time, and one earlier value that
            // this write saw. The same state as `apply` makes (it returns early there too).
            Op::Set(f, v)
                if self.tombstones.is_empty()
                    && self.ghosts.is_empty()
                    && !self.firsts.contains_key(f.as_str()) =>
            {
                let sib = Sibling {
                    stamp,
                    entry: Entry::Value(v),
                };
                match self.fields.get_mut(f.as_str()) {
                    None => {
                        self.fields.insert(f, vec![sib]);
                    }
                    Some(sibs)
                        if sibs.len() == 1
                            && (ctx.covers(sibs[0].stamp.dot)
                                || sibs[0].stamp.dot == stamp.dot) =>
                    {
                        let old = std::mem::replace(&mut sibs[0], sib);
                        self.retire(&f, vec![old]);
                    }
                    Some(_) => {
                        let Entry::Value(v) = sib.entry else {
                            unreachable!("made as a value above")
                        };
                        self.apply_set_moved(stamp, ctx, f, v);
                    }
                }
            }
            Op::Set(f, v) => self.apply_set_moved(stamp, ctx, f, v),
            other => self.apply(stamp, ctx, &other),
        }
    }

    /// `apply` of a set, the value moved into the state.
    fn apply_set_moved(&mut self, stamp: Stamp, ctx: &VersionVector, f: String, v: Value) {
        // Siblings are ordered by stamp alone, never by value, so applying a placeholder and
        // then putting the value in its place is the same state.
        self.apply(stamp, ctx, &Op::Set(f.clone(), Value::Null));
        if let Some(sib) = self.fields.get_mut(&f).and_then(|sibs| {
            sibs.iter_mut()
                .find(|s| s.stamp.dot == stamp.dot && matches!(s.entry, Entry::Value(_)))
        }) {
            sib.entry = Entry::Value(v);
        }
    }

    /// What a write or delete does to the ghosts it meets (see [`Ghost`]).
    fn ghosts_meet(&mut self, stamp: Stamp, ctx: &VersionVector, op: &Op) {
        let seen = |s: &Stamp| ctx.covers(s.dot) || s.dot == stamp.dot;
        match op {
            Op::Delete => {
                for g in &mut self.ghosts {
                    if seen(&g.sibling.stamp) && !g.buried_for(ctx) {
                        g.count_under(stamp.dot);
                    }
                }
            }
            _ => {
                // Superseded by a write to its field that saw it.
                let gone = |g: &Ghost| {
                    seen(&g.sibling.stamp)
                        && match op {
                            Op::Set(f, _) => g.field == *f,
                            Op::Add(f, e) | Op::Remove(f, e) => {
                                g.field == *f
                                    && matches!(&g.sibling.entry, Entry::Elem(x) if x == e)
                            }
                            // An increment by a laptop that saw the delete: the revival of
                            // the counter is in its commit (`revival_ops`), or the record
                            // was deleted where it was made; either way the old increment
                            // no longer counts (a later delete must not count it twice).
                            Op::Incr(f, _) => {
                                g.field == *f
                                    && matches!(g.sibling.entry, Entry::Incr(_))
                                    && g.under.iter().any(|d| ctx.covers(*d))
                            }
                            Op::Delete => false,
                        }
                };
                self.ghosts.retain(|g| !gone(g));
                for g in &mut self.ghosts {
                    if seen(&g.sibling.stamp) && g.under.iter().any(|d| ctx.covers(*d)) {
                        g.bury(stamp.dot);
                    }
                }
            }
        }
    }

    /// Whether a ghost shows: the record is live and one of its deletes is a tombstone.
    fn ghost_shows(&self, g: &Ghost) -> bool {
        self.is_live()
            && g.under
                .iter()
                .any(|d| self.tombstones.iter().any(|t| t.dot == *d))
    }

    /// The ghosts that show now (see [`Ghost`]).
    pub fn shown_ghosts(&self) -> impl Iterator<Item = &Ghost> {
        self.ghosts.iter().filter(|g| self.ghost_shows(g))
    }

    /// Every write a field shows from: its surviving writes and the ghosts that show.
    fn visible(&self, field: &str) -> impl Iterator<Item = &Sibling> {
        let ghosts = if self.tombstones.is_empty() || self.ghosts.is_empty() {
            [].iter()
        } else {
            self.ghosts.iter()
        };
        self.fields.get(field).into_iter().flatten().chain(
            ghosts
                .filter(move |g| g.field == field && self.ghost_shows(g))
                .map(|g| &g.sibling),
        )
    }

    /// The names of the fields that show something, ascending.
    fn visible_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.fields.keys().map(String::as_str).collect();
        if !self.tombstones.is_empty() && !self.ghosts.is_empty() {
            names.extend(self.shown_ghosts().map(|g| g.field.as_str()));
            names.sort_unstable();
            names.dedup();
        }
        names
    }

    /// The record as its standing deletes removed it: a state holding, as surviving writes,
    /// the ghosts of its tombstones (what `ferry restore` brings back when the history is
    /// compacted). `None` when no standing delete holds any.
    pub fn before_delete(&self) -> Option<RecordState> {
        let mut out = RecordState::default();
        for g in &self.ghosts {
            if g.under
                .iter()
                .any(|d| self.tombstones.iter().any(|t| t.dot == *d))
            {
                out.fields
                    .entry(g.field.clone())
                    .or_default()
                    .push(g.sibling.clone());
            }
        }
        (!out.fields.is_empty()).then_some(out)
    }

    /// Drops the ghosts that no longer show and never can again once every member holds
    /// `horizon`: none of their deletes is a tombstone, and every member has seen the
    /// writes that buried them (so no delete that did not see those can still arrive).
    /// Returns how many it dropped (`ferry purge`).
    pub fn forget_ghosts(&mut self, horizon: &VersionVector) -> usize {
        let before = self.ghosts.len();
        let tombstones = &self.tombstones;
        self.ghosts.retain(|g| {
            g.under
                .iter()
                .any(|d| tombstones.iter().any(|t| t.dot == *d))
                || g.buried.is_empty()
                || !g
                    .buried
                    .iter()
                    .all(|&(m, s)| horizon.covers(Dot::new(m, s)))
                || !g.under.iter().all(|d| horizon.covers(*d))
        });
        before - self.ghosts.len()
    }

    /// Ops a write to this record must carry besides `ops` so that its author keeps what it
    /// sees: while a delete and a write that did not see it both survive, the record shows
    /// the values the delete removed (ghosts), and a write that saw the delete ends that —
    /// so it writes again what the ghosts add to each field it does not set itself: the
    /// value a field shows, when no surviving write gives it one (a field that was in
    /// conflict comes back with the value it showed, as `ferry restore` brings it back);
    /// counter increments as one `Incr` of their sum; set elements as `Add`s (those no
    /// surviving write holds). Empty for a record that is not in that state.
    pub fn revival_ops(&self, ops: &[Op]) -> Vec<Op> {
        if !self.delete_conflict() || ops.iter().any(|o| matches!(o, Op::Delete)) {
            return Vec::new();
        }
        let set_here = |f: &str| ops.iter().any(|o| matches!(o, Op::Set(g, _) if g == f));
        let mut out = Vec::new();
        let mut fields: Vec<&str> = self.shown_ghosts().map(|g| g.field.as_str()).collect();
        fields.dedup();
        for f in fields {
            if set_here(f) {
                continue;
            }
            let live = self.fields.get(f).map(Vec::as_slice).unwrap_or(&[]);
            let ghosts: Vec<&Sibling> = self
                .shown_ghosts()
                .filter(|g| g.field == f)
                .map(|g| &g.sibling)
                .collect();
            let value = |s: &&Sibling| matches!(s.entry, Entry::Value(_));
            let live_incr = live.iter().any(|s| matches!(s.entry, Entry::Incr(_)));
            let mut incr: Option<i64> = ghosts
                .iter()
                .any(|s| matches!(s.entry, Entry::Incr(_)))
                .then(|| {
                    ghosts
                        .iter()
                        .filter_map(|s| match s.entry {
                            Entry::Incr(n) => Some(n),
                            _ => None,
                        })
                        .fold(0i64, |a, n| a.saturating_add(n))
                });
            if ghosts.iter().any(value) {
                // The value the field shows, among the ghosts' and the surviving writes'
                // (a `Set` supersedes the surviving ones this laptop saw, so a field in
                // conflict keeps the value it showed).
                let winner = self.values(f).first().map(|(_, v)| (*v).clone());
                match winner {
                    // A counter's base under increments made since: kept as an increment,
                    // so those stay.
                    Some(Value::Int(i)) if live_incr && !live.iter().any(|s| value(&s)) => {
                        incr = Some(incr.unwrap_or(0).saturating_add(i));
                    }
                    Some(v) => out.push(Op::Set(f.to_string(), v)),
                    None => {}
                }
            }
            if let Some(n) = incr {
                out.push(Op::Incr(f.to_string(), n));
            }
            let mut elems: Vec<&str> = ghosts
                .iter()
                .filter_map(|s| match &s.entry {
                    Entry::Elem(e) => Some(e.as_str()),
                    _ => None,
                })
                .filter(|e| {
                    !live
                        .iter()
                        .any(|s| matches!(&s.entry, Entry::Elem(x) if x == e))
                })
                // An element the write adds or removes itself is left to it.
                .filter(|e| {
                    !ops.iter()
                        .any(|o| matches!(o, Op::Add(g, x) | Op::Remove(g, x) if g == f && x == e))
                })
                .collect();
            elems.sort_unstable();
            elems.dedup();
            out.extend(
                elems
                    .into_iter()
                    .map(|e| Op::Add(f.to_string(), e.to_string())),
            );
        }
        out
    }

    /// Every write a field shows from: its surviving writes and, while a delete is crossed
    /// by an edit, the values that delete removed (ghosts).
    pub fn visible_siblings(&self, field: &str) -> Vec<&Sibling> {
        self.visible(field).collect()
    }

    /// Removes the siblings of `field` matching `pred` and returns them.
    fn remove_from(&mut self, field: &str, pred: impl Fn(&Sibling) -> bool) -> Vec<Sibling> {
        let Some(sibs) = self.fields.get_mut(field) else {
            return Vec::new();
        };
        let (removed, kept): (Vec<_>, Vec<_>) = std::mem::take(sibs).into_iter().partition(pred);
        *sibs = kept;
        removed
    }

    /// Keeps the earliest value ever written to `field` after `removed` left it.
    fn retire(&mut self, field: &str, removed: Vec<Sibling>) {
        let earliest_removed = removed
            .into_iter()
            .filter(|s| matches!(s.entry, Entry::Value(_)))
            .min_by(|a, b| a.stamp.cmp_rank(&b.stamp));
        let mut first = self.firsts.remove(field);
        if let Some(r) = earliest_removed {
            if first
                .as_ref()
                .is_none_or(|f| r.stamp.cmp_rank(&f.stamp) == Ordering::Less)
            {
                first = Some(r);
            }
        }
        let earliest_current = self
            .fields
            .get(field)
            .into_iter()
            .flatten()
            .filter(|s| matches!(s.entry, Entry::Value(_)))
            .min_by(|a, b| a.stamp.cmp_rank(&b.stamp));
        if let Some(f) = first {
            if earliest_current.is_none_or(|c| f.stamp.cmp_rank(&c.stamp) == Ordering::Less) {
                self.firsts.insert(field.to_string(), f);
            }
        }
    }

    /// Whether the record has any field value (a record whose fields were all deleted is
    /// gone from listings).
    pub fn is_live(&self) -> bool {
        !self.fields.is_empty()
    }

    /// The assigned values of a field, the latest by [`Stamp::cmp_rank`] first.
    pub fn values(&self, field: &str) -> Vec<(&Stamp, &Value)> {
        let mut vals: Vec<_> = self
            .visible(field)
            .filter_map(|s| match &s.entry {
                Entry::Value(v) => Some((&s.stamp, v)),
                _ => None,
            })
            .collect();
        vals.sort_by(|a, b| b.0.cmp_rank(a.0));
        vals
    }

    /// The latest of a field's concurrent values (what the `conflict` and `lww` rules show).
    pub fn winner(&self, field: &str) -> Option<&Value> {
        self.values(field).first().map(|(_, v)| *v)
    }

    /// What `field` shows under `rule`, if it shows anything.
    pub fn show(&self, field: &str, rule: Rule) -> Option<Shown> {
        let sibs: Vec<&Sibling> = self.visible(field).collect();
        if sibs.is_empty() {
            return None;
        }
        let incr: Vec<i64> = sibs
            .iter()
            .filter_map(|s| match s.entry {
                Entry::Incr(n) => Some(n),
                _ => None,
            })
            .collect();
        let values = self.values(field);
        if rule == Rule::Set {
            let mut elems: Vec<String> = sibs
                .iter()
                .filter_map(|s| match &s.entry {
                    Entry::Elem(e) => Some(e.clone()),
                    Entry::Value(Value::Str(v)) => Some(v.clone()),
                    Entry::Value(Value::Null) | Entry::Incr(_) => None,
                    Entry::Value(v) => Some(v.to_string()),
                })
                .collect();
            elems.sort_unstable();
            elems.dedup();
            return Some(Shown::Set(elems));
        }
        let base = match rule {
            Rule::Max => values
                .iter()
                .map(|(_, v)| *v)
                .max_by(|a, b| numeric_cmp(a, b)),
            Rule::Min => values
                .iter()
                .map(|(_, v)| *v)
                .min_by(|a, b| numeric_cmp(a, b)),
            Rule::First => match self.firsts.get(field) {
                Some(Sibling {
                    entry: Entry::Value(v),
                    ..
                }) => Some(v),
                _ => values.last().map(|(_, v)| *v),
            },
            Rule::Conflict | Rule::Lww | Rule::Counter | Rule::Set => {
                values.first().map(|(_, v)| *v)
            }
        };
        if incr.is_empty() {
            return match base {
                Some(v) => Some(Shown::Value(v.clone())),
                // Only set elements: show them, whatever the rule, so nothing is hidden.
                None => self.show(field, Rule::Set),
            };
        }
        // Counter increments add to the base value (or to 0), summed exactly.
        let sum: i128 = incr.iter().map(|&n| n as i128).sum();
        let clamp = |x: i128| x.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        Some(Shown::Value(match base {
            Some(Value::Int(i)) => Value::Int(clamp(*i as i128 + sum)),
            Some(Value::Float(x)) => Value::Float(x + clamp(sum) as f64),
            _ => Value::Int(clamp(sum)),
        }))
    }

    /// What every field shows, with `rule_of` giving each field's rule.
    pub fn shown_with(&self, rule_of: impl Fn(&str) -> Rule) -> BTreeMap<&str, Shown> {
        self.visible_names()
            .into_iter()
            .filter_map(|f| Some((f, self.show(f, rule_of(f))?)))
            .collect()
    }

    /// What every field shows when no rules are set (every field `conflict`), as values: a
    /// field holding only set elements shows them sorted, one per line.
    pub fn shown(&self) -> BTreeMap<&str, Value> {
        self.shown_with(|_| Rule::Conflict)
            .into_iter()
            .map(|(f, s)| {
                let v = match s {
                    Shown::Value(v) => v,
                    Shown::Set(e) => Value::Str(e.join("\n")),
                };
                (f, v)
            })
            .collect()
    }

    /// Whether some field holds concurrent values that differ, or a delete crossed an edit
    /// (cheap: no allocation).
    pub fn has_conflict(&self) -> bool {
        self.delete_conflict() || self.fields.values().any(|sibs| differing(sibs.iter()))
    }

    /// Fields that hold concurrent values that differ, by name (whatever their rule). The
    /// same value written concurrently on two laptops is not a conflict: it shows once, and
    /// both writes are kept (with their authors).
    pub fn conflicted_fields(&self) -> Vec<&str> {
        self.visible_names()
            .into_iter()
            .filter(|f| differing(self.visible(f)))
            .collect()
    }

    /// Whether a delete and a write that did not see it both survive: the record was deleted
    /// on one node while it was edited on another. The record stays visible (the edit is
    /// never lost) until a person deletes it again or edits it.
    pub fn delete_conflict(&self) -> bool {
        !self.tombstones.is_empty() && self.is_live()
    }

    /// Every write still held (for checks: a write is never lost without a write that saw
    /// it).
    pub fn stamps(&self) -> impl Iterator<Item = (&str, &Sibling)> {
        self.fields
            .iter()
            .flat_map(|(f, sibs)| sibs.iter().map(move |s| (f.as_str(), s)))
    }
}

/// Whether a field's concurrent assigned values are not all the same value.
fn differing<'a>(sibs: impl Iterator<Item = &'a Sibling>) -> bool {
    let mut values = sibs.filter_map(|s| match &s.entry {
        Entry::Value(v) => Some(v),
        _ => None,
    });
    match values.next() {
        Some(first) => values.any(|v| v != first),
        None => false,
    }
}

/// Numbers by numeric value (integers and floats together), then anything else by
/// [`Value::total_cmp`].
pub fn numeric_cmp(a: &Value, b: &Value) -> Ordering {
    let num = |v: &Value| match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) => Some(*x),
        _ => None,
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x.total_cmp(&y).then_with(|| a.total_cmp(b)),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => a.total_cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemberId;
    use proptest::prelude::*;

    fn st(author: u32, seq: u64, ms: u64) -> Stamp {
        Stamp::new(Dot::new(MemberId(author), seq), Hlc::from_parts(ms, 0))
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
    fn the_same_value_written_concurrently_is_not_a_conflict_and_both_writes_are_kept() {
        let mut r = RecordState::default();
        r.apply(st(1, 1, 10), &ctx(&[]), &set("w", 7));
        r.apply(st(2, 1, 5), &ctx(&[]), &set("w", 7));
        assert!(r.conflicted_fields().is_empty());
        assert!(!r.has_conflict());
        assert_eq!(r.values("w").len(), 2, "both authors' writes are kept");
        assert_eq!(r.winner("w"), Some(&Value::Int(7)));
        // A third, different value concurrent with both is a conflict again.
        r.apply(st(3, 1, 1), &ctx(&[]), &set("w", 8));
        assert_eq!(r.conflicted_fields(), vec!["w"]);
        assert!(r.has_conflict());
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
        assert_eq!(
            r.winner("b"),
            Some(&Value::Int(1)),
            "the deleted value shows again"
        );
        // Re-creating after seeing the delete clears the tombstone.
        r.apply(st(1, 2, 4), &ctx(&[(1, 1), (2, 1), (3, 1)]), &set("b", 2));
        assert!(!r.delete_conflict());
    }

    /// Applies `commits` in `order` to a fresh state.
    fn replay(commits: &[(Stamp, VersionVector, Op)], order: &[usize]) -> RecordState {
        let mut r = RecordState::default();
        for &i in order {
            let (s, c, op) = &commits[i];
            r.apply(*s, c, op);
        }
        r
    }

    fn shown_ints(r: &RecordState) -> Vec<(String, i64)> {
        r.shown()
            .into_iter()
            .map(|(f, v)| match v {
                Value::Int(i) => (f.to_string(), i),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_delete_crossed_by_an_edit_shows_the_whole_record_in_every_order() {
        // Member 1 writes a, b, c; member 2 deletes the record; member 3, not having seen
        // the delete, sets c = 9.
        let commits = vec![
            (st(1, 1, 1), ctx(&[]), set("a", 1)),
            (st(1, 1, 1), ctx(&[]), set("b", 2)),
            (st(1, 1, 1), ctx(&[]), set("c", 3)),
            (st(2, 1, 2), ctx(&[(1, 1)]), Op::Delete),
            (st(3, 1, 3), ctx(&[(1, 1)]), set("c", 9)),
        ];
        let one = replay(&commits, &[0, 1, 2, 3, 4]);
        let two = replay(&commits, &[0, 1, 2, 4, 3]);
        assert_eq!(one, two);
        assert_eq!(
            shown_ints(&one),
            vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 9)],
            "every field as it stood when deleted, plus the edit"
        );
        assert!(one.delete_conflict());
        assert!(
            one.conflicted_fields().is_empty(),
            "c = 3 was seen by the edit"
        );
        assert_eq!(one.values("c").len(), 1);
        // Deleted alone (no crossing edit), it shows nothing.
        let deleted = replay(&commits, &[0, 1, 2, 3]);
        assert!(!deleted.is_live());
        assert!(deleted.shown().is_empty());
        assert_eq!(
            deleted.ghosts.len(),
            3,
            "kept under the tombstone until purge"
        );
    }

    #[test]
    fn deleting_again_after_seeing_the_edit_removes_it_and_a_later_crossing_edit_brings_it_all_back()
     {
        let mut commits = vec![
            (st(1, 1, 1), ctx(&[]), set("a", 1)),
            (st(1, 1, 1), ctx(&[]), set("b", 2)),
            (st(2, 1, 2), ctx(&[(1, 1)]), Op::Delete),
            (st(3, 1, 3), ctx(&[(1, 1)]), set("c", 9)),
            // Member 2 sees the edit and deletes again.
            (st(2, 2, 4), ctx(&[(1, 1), (2, 1), (3, 1)]), Op::Delete),
        ];
        for order in [[0, 1, 2, 3, 4], [0, 1, 3, 2, 4]] {
            let r = replay(&commits, &order);
            assert!(!r.is_live(), "{order:?}");
            assert!(r.shown().is_empty());
        }
        // Member 1 had seen the revived record (not the second delete) and edits it.
        commits.push((st(1, 2, 5), ctx(&[(1, 1), (2, 1), (3, 1)]), set("d", 4)));
        let a = replay(&commits, &[0, 1, 2, 3, 4, 5]);
        let b = replay(&commits, &[0, 1, 3, 2, 5, 4]);
        assert_eq!(a, b);
        assert_eq!(
            shown_ints(&a),
            vec![
                ("a".into(), 1),
                ("b".into(), 2),
                ("c".into(), 9),
                ("d".into(), 4)
            ]
        );
    }

    #[test]
    fn a_record_created_again_after_a_delete_never_shows_the_old_fields() {
        let commits = vec![
            (st(1, 1, 1), ctx(&[]), set("a", 1)),
            (st(2, 1, 2), ctx(&[(1, 1)]), Op::Delete),
            // Created again by someone who saw the delete.
            (st(2, 2, 3), ctx(&[(1, 1), (2, 1)]), set("x", 5)),
            // Deleted again, while member 3 (having seen the re-creation) edits it.
            (st(1, 2, 4), ctx(&[(1, 1), (2, 2)]), Op::Delete),
            (st(3, 1, 5), ctx(&[(1, 1), (2, 2)]), set("y", 6)),
        ];
        let a = replay(&commits, &[0, 1, 2, 3, 4]);
        let b = replay(&commits, &[0, 1, 2, 4, 3]);
        assert_eq!(a, b);
        assert_eq!(shown_ints(&a), vec![("x".into(), 5), ("y".into(), 6)]);
        let recreated = replay(&commits, &[0, 1, 2]);
        assert_eq!(shown_ints(&recreated), vec![("x".into(), 5)]);
    }

    #[test]
    fn two_crossing_deletes_each_keep_what_they_saw() {
        // Deletes by 2 and 3 both saw a = 1; member 4 saw only 2's delete and creates x:
        // 3's delete still crosses it, and a shows with x in every order.
        let commits = vec![
            (st(1, 1, 1), ctx(&[]), set("a", 1)),
            (st(2, 1, 2), ctx(&[(1, 1)]), Op::Delete),
            (st(3, 1, 2), ctx(&[(1, 1)]), Op::Delete),
            (st(4, 1, 3), ctx(&[(1, 1), (2, 1)]), set("x", 5)),
        ];
        let states: Vec<_> = [[0, 1, 2, 3], [0, 1, 3, 2], [0, 2, 1, 3]]
            .iter()
            .map(|o| replay(&commits, o))
            .collect();
        assert_eq!(states[0], states[1]);
        assert_eq!(states[0], states[2]);
        assert_eq!(
            shown_ints(&states[0]),
            vec![("a".into(), 1), ("x".into(), 5)]
        );
    }

    #[test]
    fn a_write_to_a_revived_record_writes_its_ghosts_again_and_ends_the_conflict() {
        let mut r = RecordState::default();
        r.apply(st(1, 1, 1), &ctx(&[]), &set("a", 1));
        r.apply(st(1, 1, 1), &ctx(&[]), &Op::Incr("n".into(), 4));
        r.apply(st(1, 1, 1), &ctx(&[]), &Op::Add("t".into(), "x".into()));
        r.apply(st(1, 1, 1), &ctx(&[]), &set("c", 3));
        r.apply(st(2, 1, 2), &ctx(&[(1, 1)]), &Op::Delete);
        r.apply(st(3, 1, 3), &ctx(&[(1, 1)]), &set("c", 9));
        assert_eq!(
            r.show("n", Rule::Counter),
            Some(Shown::Value(Value::Int(4)))
        );
        assert_eq!(r.show("t", Rule::Set), Some(Shown::Set(vec!["x".into()])));
        // Member 1 saw all of it and edits c: it writes a, n and t again.
        let ops = vec![set("c", 10)];
        let mut all = r.revival_ops(&ops);
        assert_eq!(
            all,
            vec![
                set("a", 1),
                Op::Incr("n".into(), 4),
                Op::Add("t".into(), "x".into())
            ]
        );
        all.extend(ops);
        let seen = ctx(&[(1, 1), (2, 1), (3, 1)]);
        for op in &all {
            r.apply(st(1, 2, 4), &seen, op);
        }
        assert!(!r.delete_conflict());
        assert!(!r.has_conflict());
        assert_eq!(
            r.show("a", Rule::Conflict),
            Some(Shown::Value(Value::Int(1)))
        );
        assert_eq!(
            r.show("n", Rule::Counter),
            Some(Shown::Value(Value::Int(4)))
        );
        assert_eq!(
            r.show("c", Rule::Conflict),
            Some(Shown::Value(Value::Int(10)))
        );
        assert!(r.revival_ops(&[set("c", 11)]).is_empty());
    }

    #[test]
    fn a_write_ending_a_revival_keeps_counters_and_sets_the_crossing_edit_also_wrote() {
        let mut r = RecordState::default();
        r.apply(st(1, 1, 1), &ctx(&[]), &Op::Incr("n".into(), 5));
        r.apply(st(1, 1, 1), &ctx(&[]), &Op::Add("t".into(), "tb".into()));
        r.apply(st(2, 1, 2), &ctx(&[(1, 1)]), &Op::Delete);
        r.apply(st(3, 1, 3), &ctx(&[(1, 1)]), &Op::Incr("n".into(), 1));
        r.apply(
            st(3, 1, 3),
            &ctx(&[(1, 1)]),
            &Op::Add("t".into(), "hiv".into()),
        );
        assert_eq!(
            r.show("n", Rule::Counter),
            Some(Shown::Value(Value::Int(6)))
        );
        let mut all = r.revival_ops(&[set("d", 4)]);
        all.push(set("d", 4));
        for op in &all {
            r.apply(st(1, 2, 4), &ctx(&[(1, 1), (2, 1), (3, 1)]), op);
        }
        assert!(!r.has_conflict());
        assert_eq!(
            r.show("n", Rule::Counter),
            Some(Shown::Value(Value::Int(6)))
        );
        assert_eq!(
            r.show("t", Rule::Set),
            Some(Shown::Set(vec!["hiv".into(), "tb".into()]))
        );
    }

    /// Applies `ops` as one commit of `stamp` with context `c`.
    fn commit(r: &mut RecordState, stamp: Stamp, c: &VersionVector, ops: &[Op]) {
        for op in ops {
            r.apply(stamp, c, op);
        }
    }

    #[test]
    fn a_second_delete_crossing_the_write_that_ended_a_revival_does_not_count_a_counter_twice() {
        // 1 increments n by 8; 2 deletes; 3 edits c concurrently; 1 (having seen all) puts
        // d, which carries the counter again; 2 deletes again without having seen that.
        let all = ctx(&[(1, 1), (2, 1), (3, 1)]);
        let mut orders = Vec::new();
        for late_delete_first in [false, true] {
            let mut r = RecordState::default();
            r.apply(st(1, 1, 1), &ctx(&[]), &Op::Incr("n".into(), 8));
            r.apply(st(2, 1, 2), &ctx(&[(1, 1)]), &Op::Delete);
            r.apply(st(3, 1, 3), &ctx(&[(1, 1)]), &set("c", 9));
            let mut ops = r.revival_ops(&[set("d", 4)]);
            ops.push(set("d", 4));
            assert_eq!(ops[0], Op::Incr("n".into(), 8));
            if late_delete_first {
                r.apply(st(2, 2, 5), &all, &Op::Delete);
                commit(&mut r, st(1, 2, 4), &all, &ops);
            } else {
                commit(&mut r, st(1, 2, 4), &all, &ops);
                r.apply(st(2, 2, 5), &all, &Op::Delete);
            }
            assert_eq!(
                r.show("n", Rule::Counter),
                Some(Shown::Value(Value::Int(8)))
            );
            orders.push(r);
        }
        assert_eq!(orders[0], orders[1]);
    }

    #[test]
    fn a_write_removing_a_revived_set_element_is_not_undone_by_its_own_revival() {
        let mut r = RecordState::default();
        r.apply(st(1, 1, 1), &ctx(&[]), &Op::Add("t".into(), "x".into()));
        r.apply(st(1, 1, 1), &ctx(&[]), &Op::Add("t".into(), "y".into()));
        r.apply(st(2, 1, 2), &ctx(&[(1, 1)]), &Op::Delete);
        r.apply(st(3, 1, 3), &ctx(&[(1, 1)]), &set("c", 9));
        let user = [Op::Remove("t".into(), "x".into())];
        let mut ops = r.revival_ops(&user);
        assert_eq!(ops, vec![Op::Add("t".into(), "y".into())]);
        ops.extend(user);
        commit(&mut r, st(1, 2, 4), &ctx(&[(1, 1), (2, 1), (3, 1)]), &ops);
        assert_eq!(r.show("t", Rule::Set), Some(Shown::Set(vec!["y".into()])));
    }

    #[test]
    fn a_counter_base_revived_under_new_increments_keeps_them() {
        let mut r = RecordState::default();
        r.apply(st(1, 1, 1), &ctx(&[]), &set("n", 10));
        r.apply(st(2, 1, 2), &ctx(&[(1, 1)]), &Op::Delete);
        r.apply(st(3, 1, 3), &ctx(&[(1, 1)]), &Op::Incr("n".into(), 1));
        assert_eq!(
            r.show("n", Rule::Counter),
            Some(Shown::Value(Value::Int(11)))
        );
        let mut ops = r.revival_ops(&[set("c", 3)]);
        ops.push(set("c", 3));
        commit(&mut r, st(1, 2, 4), &ctx(&[(1, 1), (2, 1), (3, 1)]), &ops);
        assert!(!r.delete_conflict());
        assert_eq!(
            r.show("n", Rule::Counter),
            Some(Shown::Value(Value::Int(11)))
        );
    }

    #[test]
    fn a_ghost_in_conflict_with_a_surviving_value_keeps_the_value_it_showed() {
        // a = x (member 1) and a = y (member 2, concurrent); member 3 deletes having seen
        // only x: x shows as a ghost beside y, in conflict.
        let mut r = RecordState::default();
        r.apply(
            st(1, 1, 10),
            &ctx(&[]),
            &Op::Set("a".into(), Value::Str("x".into())),
        );
        r.apply(st(1, 1, 10), &ctx(&[]), &set("b", 1));
        r.apply(
            st(2, 1, 5),
            &ctx(&[]),
            &Op::Set("a".into(), Value::Str("y".into())),
        );
        r.apply(st(3, 1, 20), &ctx(&[(1, 1)]), &Op::Delete);
        assert_eq!(r.conflicted_fields(), vec!["a"]);
        let shown = r.winner("a").cloned();
        assert_eq!(shown, Some(Value::Str("x".into())), "the later clock shows");
        let mut ops = r.revival_ops(&[set("c", 3)]);
        ops.push(set("c", 3));
        commit(&mut r, st(1, 2, 30), &ctx(&[(1, 1), (2, 1), (3, 1)]), &ops);
        assert_eq!(r.winner("a").cloned(), shown, "the value it showed stays");
        assert_eq!(r.winner("b"), Some(&Value::Int(1)));
    }

    #[test]
    fn one_commit_that_writes_deletes_and_writes_again_leaves_canonical_ghosts() {
        let mut r = RecordState::default();
        let c = st(1, 1, 1);
        commit(
            &mut r,
            c,
            &ctx(&[]),
            &[
                Op::Incr("n".into(), 1),
                Op::Delete,
                Op::Incr("n".into(), 2),
                Op::Delete,
            ],
        );
        r.apply(st(2, 1, 2), &ctx(&[(1, 1)]), &Op::Delete);
        assert_eq!(r.ghosts.len(), 1);
        assert!(Ghost::canonical(&r.ghosts), "{:?}", r.ghosts);
        assert_eq!(r.ghosts[0].sibling.entry, Entry::Incr(3));
    }

    #[test]
    fn many_deletes_keep_a_ghosts_list_of_deletes_bounded() {
        let mut r = RecordState::default();
        r.apply(st(1, 1, 1), &ctx(&[]), &set("a", 1));
        for seq in 1..=100 {
            r.apply(
                st(2, seq, seq + 1),
                &ctx(&[(1, 1), (2, seq - 1)]),
                &Op::Delete,
            );
            r.apply(
                st(3, seq, seq + 1),
                &ctx(&[(1, 1), (3, seq - 1)]),
                &Op::Delete,
            );
        }
        assert_eq!(r.ghosts.len(), 1);
        assert_eq!(r.ghosts[0].under.len(), 4, "{:?}", r.ghosts[0].under);
        // A crossing edit still shows it (the last deletes stand).
        r.apply(st(4, 1, 500), &ctx(&[(1, 1)]), &set("c", 9));
        assert_eq!(r.winner("a"), Some(&Value::Int(1)));
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
            r.show("t", Rule::Set),
            Some(Shown::Set(vec!["x".into()])),
            "a concurrent add survives"
        );
    }

    #[test]
    fn counter_sums_do_not_depend_on_sibling_order_near_the_limits() {
        let incrs = [i64::MAX, 1, -1];
        let mut shown = Vec::new();
        for order in [[0, 1, 2], [0, 2, 1], [2, 1, 0]] {
            let mut r = RecordState::default();
            for (k, &i) in order.iter().enumerate() {
                r.apply(
                    st(k as u32 + 1, 1, 1),
                    &ctx(&[]),
                    &Op::Incr("n".into(), incrs[i]),
                );
            }
            shown.push(r.shown()["n"].clone());
        }
        assert!(
            shown.iter().all(|v| *v == Value::Int(i64::MAX)),
            "{shown:?}"
        );
    }

    #[test]
    fn each_rule_shows_what_it_promises() {
        let mut r = RecordState::default();
        r.apply(
            st(1, 1, 100),
            &ctx(&[]),
            &Op::Set("f".into(), Value::Float(38.5)),
        );
        r.apply(
            st(2, 1, 300),
            &ctx(&[]),
            &Op::Set("f".into(), Value::Int(37)),
        );
        r.apply(
            st(3, 1, 200),
            &ctx(&[]),
            &Op::Set("f".into(), Value::Float(39.1)),
        );
        let show = |r: &RecordState, rule| match r.show("f", rule) {
            Some(Shown::Value(v)) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(show(&r, Rule::Conflict), Value::Int(37), "latest");
        assert_eq!(show(&r, Rule::Lww), Value::Int(37));
        assert_eq!(show(&r, Rule::Max), Value::Float(39.1));
        assert_eq!(show(&r, Rule::Min), Value::Int(37));
        assert_eq!(show(&r, Rule::First), Value::Float(38.5), "earliest");
        // A later write that saw all three replaces them, but `first` keeps the first.
        r.apply(st(1, 2, 400), &ctx(&[(1, 1), (2, 1), (3, 1)]), &set("f", 1));
        assert_eq!(show(&r, Rule::Conflict), Value::Int(1));
        assert_eq!(show(&r, Rule::First), Value::Float(38.5));
        assert_eq!(Rule::from_str("max"), Ok(Rule::Max));
        assert!(Rule::from_str("largest").unwrap_err().contains("max"));
    }

    #[test]
    fn a_clock_years_ahead_counts_as_at_most_the_trust_window_ahead() {
        let now = 1_763_000_000_000;
        let seen = Some(Hlc::from_parts(now, 0));
        let ahead = Stamp::ranked(
            Dot::new(MemberId(1), 5),
            Hlc::from_parts(now + 2 * 365 * 86_400_000, 0),
            seen,
        );
        let behind = Stamp::ranked(
            Dot::new(MemberId(2), 5),
            Hlc::from_parts(now - 2 * 365 * 86_400_000, 0),
            seen,
        );
        assert_eq!(ahead.rank, now + CLOCK_TRUST_WINDOW_MS);
        assert_eq!(behind.rank, now - CLOCK_TRUST_WINDOW_MS);
        // An honest write 31 days after the skewed device's last sync is shown over it.
        let honest = Stamp::ranked(
            Dot::new(MemberId(3), 9),
            Hlc::from_parts(now + 31 * 86_400_000, 0),
            Some(Hlc::from_parts(now + 31 * 86_400_000 - 1000, 0)),
        );
        assert!(honest.beats(&ahead));
        assert!(ahead.beats(&behind));
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3u8, 0..50i64).prop_map(|(f, v)| Op::Set(format!("f{f}"), Value::Int(v))),
            (0..3u8, -5..5i64).prop_map(|(f, n)| Op::Incr(format!("f{f}"), n)),
            (0..3u8).prop_map(|e| Op::Add("tags".into(), format!("t{e}"))),
            (0..3u8).prop_map(|e| Op::Remove("tags".into(), format!("t{e}"))),
            Just(Op::Delete),
        ]
    }

    proptest! {
        /// Writes by three members, each member's writes in order, each seeing a random
        /// prefix of the others' (a valid causal history), applied in every causal order we
        /// try: the state is the same.
        #[test]
        fn any_causal_order_gives_the_same_state(
            ops in proptest::collection::vec((0..3u32, arb_op(), 0..4u64, 0..4u64, 0..10_000u64), 1..25),
            shuffle in any::<u64>(),
        ) {
            // Build commits: (stamp, ctx, op).
            let mut seqs = [0u64; 3];
            let mut commits = Vec::new();
            for (author, op, see_a, see_b, ms) in ops {
                let a = author as usize;
                seqs[a] += 1;
                let mut c = VersionVector::new();
                c.set(MemberId(author + 1), seqs[a] - 1);
                let others = [(a + 1) % 3, (a + 2) % 3];
                for (o, see) in others.iter().zip([see_a, see_b]) {
                    // Only commits already made can be seen.
                    c.set(MemberId(*o as u32 + 1), see.min(seqs[*o]));
                }
                commits.push((st(author + 1, seqs[a], ms), c, op));
            }
            let apply_in = |order: &[usize]| {
                let mut r = RecordState::default();
                for &i in order {
                    let (s, c, op) = &commits[i];
                    r.apply(*s, c, op);
                }
                r
            };
            let natural: Vec<usize> = (0..commits.len()).collect();
            // Another causal order: repeatedly pick a random ready commit.
            let mut rng = shuffle;
            let mut done = vec![false; commits.len()];
            let mut applied = VersionVector::new();
            let mut order = Vec::new();
            while order.len() < commits.len() {
                let ready: Vec<usize> = (0..commits.len())
                    .filter(|&i| !done[i] && applied.dominates(&commits[i].1)
                        && applied.get(commits[i].0.dot.author) + 1 == commits[i].0.dot.seq)
                    .collect();
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let i = ready[(rng >> 33) as usize % ready.len()];
                done[i] = true;
                applied.set(commits[i].0.dot.author, commits[i].0.dot.seq);
                order.push(i);
            }
            prop_assert_eq!(apply_in(&natural), apply_in(&order));
            // Taking each op by value (the apply path's moves) makes the same state.
            let mut owned = RecordState::default();
            for (s, c, op) in &commits {
                owned.apply_owned(*s, c, op.clone());
            }
            prop_assert_eq!(owned, apply_in(&natural));
        }

        #[test]
        fn ranks_stay_within_the_window_of_what_was_seen(
            ms in 0..(1u64 << 47), seen in 0..(1u64 << 47)
        ) {
            let s = Stamp::ranked(Dot::new(MemberId(1), 1), Hlc::from_parts(ms, 0), Some(Hlc::from_parts(seen, 0)));
            prop_assert!(s.rank.abs_diff(seen) <= CLOCK_TRUST_WINDOW_MS);
            prop_assert!(s.rank == ms || s.rank.abs_diff(seen) == CLOCK_TRUST_WINDOW_MS);
        }
    }
}
