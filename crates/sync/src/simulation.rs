//! A deterministic simulation of many replicas, over the pure core.
//!
//! One seed is one scenario: 3 to 20 members (some joining late, some with clocks years
//! off) make puts, updates, deletes, increments, set edits and resolutions, and exchange
//! bundles that are lost, duplicated, reordered, relayed by carriers, held up by partitions,
//! and interrupted by crashes. After a final full exchange, [`run`] checks:
//!
//! - **convergence**: every member holds exactly the same records and conflicts;
//! - **no lost write**: every write is still held (as the shown value, a listed sibling, a
//!   counter increment, a set element or a tombstone), or some write whose author had seen it
//!   superseded it;
//! - **idempotence and causality**: [`crate::mem::MemStorage`] asserts on every apply that a
//!   commit is applied once, in its author's order, after everything it depends on.
//!
//! Every seed also runs four more times with an adversary ([`Attack`]), on the same honest
//! actions (the adversary draws from its own generator):
//!
//! - **forgeries**: an outsider who knows only the dataset id and a member gone rogue
//!   deliver crafted bundles of every item kind ([`crate::forge`]: forged snapshots,
//!   receipts for others, altered relayed commits, oversized items, junk runs, heads that
//!   cannot be checked) and replay old bundles anywhere, while the rogue's valid writes go
//!   on as anyone's. Every honest replica must end with exactly the data it has without
//!   the adversary (records, conflicts, held and applied commits, members).
//! - **fork**: a member's laptop is restored from a backup and writes again, so two
//!   versions of its history, both validly signed, travel. Every honest replica must end
//!   with that member frozen (the evidence travelled to all) and the same data, apart from
//!   the record the forked versions wrote.
//! - **removal**: the admin removes a member (a stolen laptop), which goes on writing and
//!   sending as before, and may change the key again later. The removed member must end
//!   without any later key; every other member holds the admin's newest key and has the
//!   removed member frozen after its cutoff, and those that never applied anything of it
//!   past the cutoff hold exactly the same data. (Members that applied some of it before
//!   the removal reached them keep it — nothing applied is retracted — and are counted.)
//! - **admins**: members that believe they are admins (as far as they have applied) promote
//!   and demote others and set merge rules, and members that are none try the same and to
//!   promote themselves (bundles/SPEC.md §15). Every replica must end with the same records
//!   (`_rules` and the derived `_roles` among them) and see the same admins.
//!
//! No processes, no sleeps, no I/O: the same seed always replays the same run.

use crate::sim::{SimNode, SplitMix};
use crate::{IngestError, Received, Storage};
use ferry_bundle::BundleReader;
use ferry_bundle::WriteOptions;
use ferry_model::record::Entry;
use ferry_model::{Dot, MemberId, Op, RecordState, Rule, Value, VersionVector};
use std::collections::BTreeMap;
use std::rc::Rc;

const T0: u64 = 1_763_000_000_000;
const TWO_YEARS_MS: i64 = 2 * 365 * 86_400_000;

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Members at the end.
    pub nodes: usize,
    /// Writes made.
    pub writes: usize,
    /// Bundles delivered (including duplicates).
    pub deliveries: usize,
    /// Commits each member holds at the end.
    pub commits: u64,
    /// Conflicted fields at the end.
    pub conflicts: usize,
    /// Fields that hold the same value from concurrent writes at the end (not conflicts).
    pub equal_values: usize,
    /// Commits that had to wait, stashed, during the run.
    pub stashed: u64,
    /// Commits that arrived before what they depend on and waited, pending.
    pub pending: u64,
    /// Snapshots installed (by members that joined after others compacted).
    pub snapshots: u64,
    /// Ghosts (values deletes removed) shown at the end, on records a delete and an edit
    /// crossed.
    pub ghosts: usize,
    /// Writes to such a record that wrote its ghosts again (as ferry's node does).
    pub revivals: u64,
    /// Commits written in the columnar form (SPEC §17).
    pub columnar: u64,
    /// Dictionaries the admins trained (SPEC §18).
    pub dictionaries: u64,
    /// Bundles applied that were compressed with the dataset's dictionary (SPEC §18).
    pub dictionary_bundles: u64,
    /// Deliveries that waited for the dictionary they were compressed with.
    pub dictionary_waits: u64,
    /// Crashes in the middle of an import that kept the steps it had finished.
    pub crash_steps: u64,
    /// Deleted records written again as their deletes removed them (`ferry restore`).
    pub restores: u64,
    /// Deliveries that could not be checked yet and waited for an earlier bundle.
    pub waited: u64,
    /// Hostile bundles delivered (attacked runs).
    pub forgeries: u64,
    /// Of those, refused outright.
    pub refused: u64,
    /// What became of the fork in the forked run.
    pub fork: Option<ForkOutcome>,
    /// Removal runs: members that had applied some of the removed member's changes past its
    /// cutoff before the removal reached them (they keep them: nothing applied is retracted).
    pub applied_past_cutoff: usize,
    /// Removal runs: bundles of the removed member refused as written after its removal.
    pub refused_removed: u64,
    /// Admins runs: promotions and demotions made, admin actions tried (rules set by
    /// members that believed they were admins, and by members that were not).
    pub role_moves: u64,
    /// Admins runs: how many members were admins at the end.
    pub admins: usize,
}

/// The adversary of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Nobody attacks.
    None,
    /// An outsider and a rogue member deliver crafted and replayed bundles.
    Forgeries,
    /// A member's history forks (a laptop restored from a backup writes again).
    Fork,
    /// The admin removes a member (a stolen laptop), which goes on writing and sending, and
    /// later changes the key again.
    Removal,
    /// Admins promote and demote members (bundles/SPEC.md §15), admins and members that
    /// are none set merge rules and try to promote themselves, while bundles are lost,
    /// reordered and relayed: every replica must judge every change alike.
    Admins,
}

/// What became of a fork in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForkOutcome {
    /// Found, and the evidence reached every honest member, which froze the forked one.
    Travelled,
    /// Found by a member that could not assemble evidence (its own version's commits were
    /// compacted away and it holds no signature inside the other version).
    NoticedWithoutEvidence,
    /// Not noticed: no member met both versions where they overlap.
    Unnoticed,
    /// No evidence could travel, and an honest member holding the other version of the
    /// forked member's history cannot reach the others' state in format v1: it waits for
    /// ever on commits that depend on the version it lacks (the run that would bring them
    /// continues another chain, which v1 cannot tell from a forgery), or cannot install the
    /// admin's snapshot, which would lose what it holds (bundles/DRAFT-v2.md §1 item 3; the
    /// next format's proofs state their chain hash, and its receipts carry chain anchors).
    Stalled,
}

/// The record the forked member writes after its fork (both versions of it).
const FORKED_RECORD: &str = "fx";

/// One logged write: what it did and what its author had seen.
struct Write {
    dot: Dot,
    ctx: VersionVector,
    id: String,
    op: Op,
}

/// A bundle on its way.
struct Flight {
    to: usize,
    bytes: Rc<Vec<u8>>,
}

struct World {
    rng: SplitMix,
    nodes: Vec<Option<SimNode>>,
    skew: Vec<i64>,
    flight: Vec<Flight>,
    /// Partition: side of each node, or `None` when healed.
    partition: Option<Vec<bool>>,
    log: Vec<Write>,
    now: u64,
    deliveries: usize,
    stashed: u64,
    revivals: u64,
    restores: u64,
    pending: u64,
    snapshots: u64,
    waited: u64,
    seed: u64,
    attack: Attack,
    /// The adversary's own generator, so honest actions are the same with or without it.
    adv: SplitMix,
    /// The generator of bulk writes and version announcements (SPEC §17), drawn after the
    /// other writes so the rest of a seed's story keeps its draws.
    bulk: SplitMix,
    /// Nodes that said they read version 11.
    announced: Vec<bool>,
    /// Columnar commits written.
    columnar: u64,
    /// Dictionaries trained.
    dictionaries: u64,
    /// Bundles applied that were compressed with the dataset's dictionary (SPEC §18).
    dictionary_bundles: u64,
    /// Deliveries that waited for the dictionary they were compressed with.
    dictionary_waits: u64,
    /// Crashes in the middle of an import that kept the steps it had finished.
    crash_steps: u64,
    /// The member gone rogue (or forked), once chosen.
    rogue: Option<usize>,
    /// The restored copy of the forked member's laptop.
    backup: Option<SimNode>,
    forgeries: u64,
    refused: u64,
    fork_outcome: Option<ForkOutcome>,
    /// Bundles each member applied (forgery runs): replayed to the same member.
    applied_log: Vec<(usize, Rc<Vec<u8>>)>,
    /// Removal runs: the removed member and its cutoff, once removed.
    removed: Option<(usize, u64)>,
    /// Removal runs: its bundles refused for being written after its cutoff.
    refused_removed: u64,
    /// Removal runs: members that applied some of it past its cutoff.
    applied_past_cutoff: usize,
    /// Admins runs: role moves and admin actions tried.
    role_moves: u64,
}

const COLL: &str = "c";

/// How many bytes of new commits an import takes between steps in a simulated crash.
const CRASH_STEP_BYTES: u64 = 300;

/// Records from which an admin of the simulation trains the first dictionary.
const DICT_FIRST_AT: u64 = 20;

impl World {
    fn joined(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.rng.below(from.len() as u64) as usize]
    }

    fn clock(&self, i: usize) -> u64 {
        (self.now as i64 + self.skew[i]).max(1) as u64
    }

    fn node(&mut self, i: usize) -> &mut SimNode {
        self.nodes[i].as_mut().expect("joined")
    }

    fn write(&mut self) {
        let joined = self.joined();
        let i = self.pick(&joined);
        self.write_one(i);
        self.bulk_or_announce(i);
        // An admin trains the dataset's dictionary when one is due, as before it sends
        // (SPEC §18); here from a few records on (no draw, so the stories keep theirs).
        if !(self.backup.is_some() && Some(i) == self.rogue) {
            let now = self.clock(i);
            if self.node(i).train_dictionary_from(now, DICT_FIRST_AT) {
                self.dictionaries += 1;
            }
        }
    }

    /// Sometimes, after a write by node `i`: it says it reads version 11, or it writes 16 to
    /// 24 records in one commit (columnar once every member it knows has said so).
    fn bulk_or_announce(&mut self, i: usize) {
        if self.backup.is_some() && Some(i) == self.rogue {
            return;
        }
        if self.announced.len() <= i {
            self.announced.resize(i + 1, false);
        }
        match self.bulk.below(12) {
            0..=5 if !self.announced[i] => {
                let now = self.clock(i);
                self.node(i).announce_reads(now);
                self.announced[i] = true;
            }
            6 => {
                let n = 16 + self.bulk.below(9) as usize;
                let mut records = Vec::with_capacity(n);
                for k in 0..n {
                    // Records the other writes use, and ones only bulk writes make.
                    // (Each record once per commit.)
                    let id = match k < 4 && self.bulk.below(2) == 0 {
                        true => format!("r{k}"),
                        false => format!("b{k}"),
                    };
                    let op = match self.bulk.below(8) {
                        0 => Op::Delete,
                        1 => Op::Incr("n".into(), self.bulk.below(7) as i64 - 3),
                        2 => Op::Add("tags".into(), format!("t{}", self.bulk.below(3))),
                        3 => Op::Set("f0".into(), Value::Null),
                        4 => Op::Set(
                            "f1".into(),
                            Value::Float(self.bulk.below(1000) as f64 / 8.0),
                        ),
                        5 => Op::Set(
                            "f2".into(),
                            Value::Str(format!("2026-11-{:02}", 1 + self.bulk.below(28))),
                        ),
                        _ => Op::Set(
                            format!("f{}", self.bulk.below(3)),
                            Value::Int(self.bulk.below(1000) as i64),
                        ),
                    };
                    records.push((id, vec![op]));
                }
                self.log_many(i, records);
            }
            _ => {}
        }
    }

    /// One commit of many records' ops, logged as [`World::log_writes`] logs one.
    fn log_many(&mut self, i: usize, records: Vec<(String, Vec<Op>)>) {
        let now = self.clock(i);
        let mut done: Vec<(String, Vec<Op>)> = Vec::with_capacity(records.len());
        for (id, ops) in records {
            let mut all = self
                .node(i)
                .store
                .records
                .get(&(COLL.to_string(), id.clone()))
                .map(|r| r.revival_ops(&ops))
                .unwrap_or_default();
            if !all.is_empty() {
                self.revivals += 1;
            }
            all.extend(ops);
            done.push((id, all));
        }
        let before = self
            .node(i)
            .store
            .stored()
            .expect("mem")
            .get(self.node(i).me());
        let commit = self.node(i).write_many(COLL, done.clone(), now);
        let me = self.node(i).me();
        let stored = self.node(i).store.commit(me, before + 1).expect("mem");
        if stored.is_some_and(|c| c.form == ferry_model::commit::Form::Columnar) {
            self.columnar += 1;
        }
        for (id, ops) in done {
            for op in ops {
                self.log.push(Write {
                    dot: commit.dot(),
                    ctx: commit.context(),
                    id: id.clone(),
                    op,
                });
            }
        }
    }

    fn write_one(&mut self, i: usize) {
        let joined = self.joined();
        let mut id = format!("r{}", self.rng.below(4));
        if self.backup.is_some() && Some(i) == self.rogue {
            // After its fork the forked member writes only its own record (both versions of
            // its history do), so the rest of the data must still converge.
            id = FORKED_RECORD.into();
        }
        let field = format!("f{}", self.rng.below(3));
        let tag = format!("t{}", self.rng.below(3));
        let op = match self.rng.below(20) {
            0 | 1 => Op::Delete,
            2..=4 => Op::Incr("n".into(), self.rng.below(7) as i64 - 3),
            5 | 6 => Op::Add("tags".into(), tag),
            7 => Op::Remove("tags".into(), tag),
            15 if id != FORKED_RECORD => {
                // `ferry restore`: a deleted record written again as its deletes removed it.
                let dead = self.record_where(i, |r| !r.is_live() && r.before_delete().is_some());
                if let Some((rid, r)) = dead {
                    let before = r.before_delete().expect("checked");
                    let ops: Vec<Op> = before
                        .shown()
                        .into_iter()
                        .map(|(f, v)| Op::Set(f.to_string(), v))
                        .collect();
                    self.restores += 1;
                    return self.log_writes(i, rid, ops);
                }
                Op::Set(field, Value::Int(self.rng.below(1000) as i64))
            }
            8 if id != FORKED_RECORD => {
                // `ferry resolve --all`: every conflicted field of a record in one commit.
                let found = self.record_where(i, |r| !r.conflicted_fields().is_empty());
                let ops: Vec<Op> = found
                    .as_ref()
                    .map(|(_, r)| {
                        r.conflicted_fields()
                            .into_iter()
                            .filter_map(|f| Some(Op::Set(f.to_string(), r.winner(f)?.clone())))
                            .collect()
                    })
                    .unwrap_or_default();
                match found {
                    Some((rid, _)) if !ops.is_empty() => return self.log_writes(i, rid, ops),
                    _ => Op::Set(field, Value::Int(self.rng.below(1000) as i64)),
                }
            }
            9 if id != FORKED_RECORD => {
                // An edit of a record this node sees deleted on one laptop while edited on
                // another (it writes the record's ghosts again), if any.
                let crossed = self.record_where(i, RecordState::delete_conflict);
                let v = Value::Int(self.rng.below(1000) as i64);
                match crossed {
                    Some((rid, _)) => return self.log_write(i, rid, Op::Set(field, v)),
                    None => Op::Set(field, v),
                }
            }
            8..=10 => {
                // A resolution: write over a field this node sees in conflict, if any.
                let state = self
                    .node(i)
                    .store
                    .records
                    .iter()
                    .find(|((c, _), r)| c == COLL && !r.conflicted_fields().is_empty())
                    .map(|((_, id), r)| (id.clone(), r.conflicted_fields()[0].to_string()));
                match state {
                    Some((rid, f)) if id != FORKED_RECORD => {
                        let v = Value::Int(self.rng.below(1000) as i64);
                        return self.log_write(i, rid, Op::Set(f, v));
                    }
                    Some(_) => Op::Set(field, Value::Int(self.rng.below(1000) as i64)),
                    None => Op::Set(field, Value::Int(self.rng.below(1000) as i64)),
                }
            }
            11 | 12 => Op::Set(field, Value::Float(self.rng.below(1000) as f64 / 10.0)),
            13 => Op::Set(field, Value::Str(format!("s{}", self.rng.below(50)))),
            14 if id != FORKED_RECORD => {
                // The same value typed on two laptops, neither having seen the other's.
                // (The same draws whoever is rogue, so that an attacked run makes the same
                // writes as its clean twin; a forked member writes only its own record.)
                let others: Vec<usize> = joined.iter().copied().filter(|&j| j != i).collect();
                let v = Value::Str(format!("same{}", self.rng.below(3)));
                if !others.is_empty() {
                    let j = self.pick(&others);
                    if !(self.backup.is_some() && Some(j) == self.rogue) {
                        self.log_write(j, id.clone(), Op::Set(field.clone(), v.clone()));
                    }
                }
                Op::Set(field, v)
            }
            _ => Op::Set(field, Value::Int(self.rng.below(1000) as i64)),
        };
        self.log_write(i, id, op);
    }

    /// The first record of the simulated collection (not the forked member's own) that
    /// node `i` holds and `pred` picks, with its id.
    fn record_where(
        &mut self,
        i: usize,
        pred: impl Fn(&RecordState) -> bool,
    ) -> Option<(String, RecordState)> {
        self.node(i)
            .store
            .records
            .iter()
            .find(|((c, id), r)| c == COLL && id != FORKED_RECORD && pred(r))
            .map(|((_, id), r)| (id.clone(), r.clone()))
    }

    fn log_write(&mut self, i: usize, id: String, op: Op) {
        self.log_writes(i, id, vec![op]);
    }

    /// One commit of `ops` on record `id`, made as ferry's node makes it: a write to a
    /// record deleted on one laptop while edited on another first writes again what the
    /// record shows from before the delete ([`RecordState::revival_ops`]).
    fn log_writes(&mut self, i: usize, id: String, ops: Vec<Op>) {
        let now = self.clock(i);
        let mut all = self
            .node(i)
            .store
            .records
            .get(&(COLL.to_string(), id.clone()))
            .map(|r| r.revival_ops(&ops))
            .unwrap_or_default();
        if !all.is_empty() {
            self.revivals += 1;
        }
        all.extend(ops);
        let commit = self.node(i).write(COLL, &id, all.clone(), now);
        for op in all {
            self.log.push(Write {
                dot: commit.dot(),
                ctx: commit.context(),
                id: id.clone(),
                op,
            });
        }
    }

    fn send(&mut self) {
        let joined = self.joined();
        let i = self.pick(&joined);
        // Half the bundles are for every known member (a USB stick), half are made for one
        // member only (what that member lacks, as over SMS), and may still reach others.
        let bytes = if self.rng.below(2) == 0 {
            Rc::new(self.node(i).bundle(&[]))
        } else {
            let target = MemberId(self.pick(&joined) as u32 + 1);
            Rc::new(self.node(i).bundle_for(&[target], &[]))
        };
        // A member that lacks history this one compacted away gets a snapshot.
        if let Some(snap) = self.node(i).snapshot_if_needed() {
            let snap = Rc::new(snap);
            for &j in &joined {
                if j != i {
                    self.flight.push(Flight {
                        to: j,
                        bytes: snap.clone(),
                    });
                }
            }
        }
        for &j in &joined {
            if j == i || self.rng.below(2) == 0 {
                continue;
            }
            match self.rng.below(10) {
                0 | 1 => {} // lost
                2 => {
                    self.flight.push(Flight {
                        to: j,
                        bytes: bytes.clone(),
                    });
                    self.flight.push(Flight {
                        to: j,
                        bytes: bytes.clone(),
                    });
                }
                _ => self.flight.push(Flight {
                    to: j,
                    bytes: bytes.clone(),
                }),
            }
        }
    }

    fn blocked(&self, to: usize, from_side: Option<bool>) -> bool {
        match (&self.partition, from_side) {
            (Some(sides), Some(side)) => sides[to] != side,
            _ => false,
        }
    }

    fn join(&mut self, m: usize) {
        let now = self.clock(0);
        let label = format!("m{}", m + 1);
        let inv = self.node(0).invite(MemberId(m as u32 + 1), &label, now);
        let now = self.clock(m);
        let mut node = SimNode::join(&inv, self.rng.next_u64(), now);
        node.options = WriteOptions {
            level: 0,
            ..Default::default()
        };
        // An invitation made after a key change carries every epoch's key (as
        // `ferry invite` writes them into the file).
        node.key.install(&self.node(0).key.history(), None);
        self.nodes[m] = Some(node);
    }

    fn deliver(&mut self, k: usize) -> Result<(), String> {
        let f = self.flight.swap_remove(k);
        let now = self.clock(f.to);
        let seed = self.seed;
        let forked = self.forked_sender(&f.bytes);
        let node = self.node(f.to);
        node.now_ms = now;
        let r = match node.ingest(&f.bytes) {
            Ok(r) => r,
            // Compressed with a dictionary this member does not hold yet (a bundle made for
            // another member that reached it too): it waits for the dictionary.
            Err(IngestError::Bundle(ferry_bundle::BundleError::NoDictionary(k)))
                if crate::dicts::dictionary(&node.store, k)
                    .expect("mem")
                    .is_none() =>
            {
                self.dictionary_waits += 1;
                return Ok(());
            }
            // The forked member's bundles are refused once its fork is known: expected.
            // (A version that does not overlap the one held here fails its signature.)
            Err(
                IngestError::Fork { .. }
                | IngestError::Frozen { .. }
                | IngestError::BadSignature { .. },
            ) if forked => {
                return Ok(());
            }
            Err(e) => match self.removal_refusal(f.to, &f.bytes, &e) {
                Ok(()) => return Ok(()),
                Err(()) => {
                    return Err(format!(
                        "seed {seed}: a genuine bundle was refused by member {}: {e}",
                        f.to + 1
                    ));
                }
            },
        };
        self.deliveries += 1;
        match r {
            Received::Applied(r, _) => {
                if f.bytes.get(1) == Some(&ferry_bundle::VERSION_DICTS) {
                    self.dictionary_bundles += 1;
                }
                if self.attack == Attack::Forgeries {
                    self.applied_log.push((f.to, f.bytes.clone()));
                }
                self.stashed += r.stashed;
                self.pending += r.new - r.applied;
                self.snapshots += r.snapshot as u64;
            }
            Received::NotYet { .. } => self.waited += 1,
            Received::Obsolete { .. } => {}
        }
        Ok(())
    }

    /// Whether a refusal is what a removal makes expected (removal runs): the removed
    /// member's bundle written after its cutoff, or a bundle of the new key epoch at the
    /// removed member or at one that has not received the key yet.
    fn removal_refusal(
        &mut self,
        to: usize,
        bytes: &[u8],
        e: &IngestError<crate::mem::MemError>,
    ) -> Result<(), ()> {
        let Some((r, cutoff)) = self.removed else {
            return Err(());
        };
        let sender = BundleReader::open(bytes).map(|o| o.header().sender).ok();
        match e {
            IngestError::Removed {
                member, cutoff: c, ..
            } if *member == MemberId(r as u32 + 1) && *c == cutoff => {
                self.refused_removed += 1;
                Ok(())
            }
            IngestError::RemovedHere { .. } if to == r => Ok(()),
            // The removed laptop cannot read the new epoch; an honest one waits for the key.
            IngestError::NoEpochKey { .. } => Ok(()),
            // A bundle of the removed member, or one of the epoch at it.
            _ if to == r || sender == Some(MemberId(r as u32 + 1)) => Ok(()),
            _ => Err(()),
        }
    }

    /// Whether `bytes` is a bundle of the member whose history forked (fork runs).
    fn forked_sender(&self, bytes: &[u8]) -> bool {
        self.attack == Attack::Fork
            && self.rogue.is_some_and(|r| {
                BundleReader::open(bytes).is_ok_and(|o| o.header().sender == MemberId(r as u32 + 1))
            })
    }

    /// The adversary's move, drawn from its own generator.
    fn adversary(&mut self) -> Result<(), String> {
        let joined = self.joined();
        if self.rogue.is_none() && joined.len() > 1 {
            let pick = 1 + self.adv.below(joined.len() as u64 - 1) as usize;
            self.rogue = Some(joined[pick]);
        }
        match self.attack {
            Attack::None => Ok(()),
            Attack::Forgeries => self.forge(&joined),
            Attack::Removal => {
                self.remove();
                Ok(())
            }
            Attack::Admins => {
                self.role_move(&joined);
                Ok(())
            }
            Attack::Fork => {
                self.fork();
                Ok(())
            }
        }
    }

    /// Delivers one hostile bundle to an honest replica: an outsider's, a rogue member's, or
    /// an old bundle replayed.
    fn forge(&mut self, joined: &[usize]) -> Result<(), String> {
        let to = joined[self.adv.below(joined.len() as u64) as usize];
        if Some(to) == self.rogue {
            return Ok(());
        }
        let dataset = self.node(0).engine.dataset;
        let bytes = match (self.adv.below(10), self.rogue) {
            (0..=3, _) | (_, None) => crate::forge::outsider(dataset, &mut self.adv),
            (4..=8, Some(r)) => {
                // What the recipient already knows the rogue holds (see forge::rogue).
                let rogue = MemberId(r as u32 + 1);
                let target = self.nodes[to].as_ref().expect("joined");
                let mut known = target.store.peer(rogue).expect("mem");
                let held = target.store.stored().expect("mem").get(rogue);
                known.set(rogue, known.get(rogue).min(held));
                let mut adv = self.adv.clone();
                let b =
                    crate::forge::rogue(self.nodes[r].as_ref().expect("joined"), &known, &mut adv);
                self.adv = adv;
                b
            }
            // A replay: a bundle this member applied before, again (replaying one to another
            // member would only deliver real data early, a valid effect).
            _ => {
                let mine: Vec<_> = self.applied_log.iter().filter(|(t, _)| *t == to).collect();
                match mine.len() {
                    0 => return Ok(()),
                    n => mine[self.adv.below(n as u64) as usize].1.to_vec(),
                }
            }
        };
        // Some replicas take plaintext bundles (a radio link): they must be checked too.
        let plaintext = self.adv.below(2) == 0;
        let now = self.clock(to);
        let node = self.node(to);
        node.now_ms = now;
        node.accept.plaintext = plaintext;
        let r = node.ingest(&bytes);
        node.accept.plaintext = false;
        self.forgeries += 1;
        if r.is_err() {
            self.refused += 1;
        }
        Ok(())
    }

    /// The rogue's laptop is restored from a backup taken now, and both copies write: two
    /// versions of its history. The restored copy's bundles then travel like any other.
    /// Removal runs: the admin removes the member gone rogue (which goes on writing and
    /// sending as before); later moves are the admin changing the key again.
    fn remove(&mut self) {
        let now = self.clock(0);
        if self.removed.is_some() {
            if self.adv.below(4) == 0 {
                self.node(0).rekey(now);
            }
            return;
        }
        let Some(r) = self.rogue else {
            return;
        };
        let cutoff = self.node(0).remove(MemberId(r as u32 + 1), "stolen", now);
        self.removed = Some((r, cutoff));
    }

    /// Admins runs: a member that believes it is an admin (as far as it has applied)
    /// promotes or demotes another, or sets a merge rule; one that is none tries the same.
    fn role_move(&mut self, joined: &[usize]) {
        let i = joined[self.adv.below(joined.len() as u64) as usize];
        let now = self.clock(i);
        let pick = self.adv.below(joined.len() as u64) as usize;
        let kind = self.adv.below(5);
        let value = self.adv.below(4);
        let node = self.node(i);
        let me = node.me();
        let admins = crate::roles::admins(&node.store).expect("mem");
        let known: Vec<MemberId> = node
            .store
            .members()
            .expect("mem")
            .into_iter()
            .map(|m| m.member)
            .collect();
        let target = MemberId(joined[pick] as u32 + 1);
        let set = |f: &str, v: Value| Op::Set(f.into(), v);
        let (collection, id, ops) = match kind {
            // Promote a member this laptop knows (itself, when it is not an admin: skipped
            // everywhere).
            0 | 1 => {
                let who = if admins.contains(&me) { target } else { me };
                if !known.contains(&who) {
                    return;
                }
                let f = crate::roles::MEMBER_ADMIN_FIELD;
                (
                    "_members",
                    who.0.to_string(),
                    vec![set(f, Value::Bool(true))],
                )
            }
            // Demote an admin, never the last one this laptop knows of, nor the founder (which
            // invites every member of the run: a demotion would cap its range).
            2 => {
                let Some(&who) = admins.get(pick % admins.len().max(1)) else {
                    return;
                };
                if admins.len() < 2 || who == MemberId(1) {
                    return;
                }
                let f = crate::roles::MEMBER_ADMIN_FIELD;
                let upto = crate::roles::MEMBER_INVITES_UPTO_FIELD;
                let ops = vec![set(f, Value::Bool(false)), set(upto, Value::Int(0))];
                ("_members", who.0.to_string(), ops)
            }
            // Set a merge rule (counts only when made by an admin).
            _ => {
                let rule = ["lww", "max", "min", "conflict"][value as usize];
                let field = format!("f{}", value % 3);
                let ops = vec![set(&field, Value::Str(rule.into()))];
                ("_rules", COLL.to_string(), ops)
            }
        };
        node.write(collection, &id, ops, now);
        self.role_moves += 1;
    }

    /// After a removal: the removed laptop holds no later key; every other holds the
    /// admin's newest and has the removed member frozen after its cutoff; those that never
    /// applied anything of it past the cutoff hold exactly the same data; the others differ
    /// only by what they applied before the removal reached them (counted).
    fn check_removal(&mut self) -> Result<(), String> {
        let seed = self.seed;
        let Some((r, cutoff)) = self.removed else {
            return Err(format!("seed {seed}: the admin removed nobody"));
        };
        let removed = MemberId(r as u32 + 1);
        let admin_epoch = self.node(0).key.current().0;
        if self.node(r).key.current().0.number != 0 {
            return Err(format!(
                "seed {seed}: the removed member {} holds a key of a later epoch",
                r + 1
            ));
        }
        let honest: Vec<usize> = self.joined().into_iter().filter(|&i| i != r).collect();
        let mut clean = Vec::new();
        for &i in &honest {
            let n = self.nodes[i].as_ref().expect("joined");
            if n.key.current().0 != admin_epoch {
                return Err(format!(
                    "seed {seed}: member {} holds key epoch {}, the admin {admin_epoch}",
                    i + 1,
                    n.key.current().0
                ));
            }
            if i != 0 {
                let frozen = n.store.frozen(removed).map_err(|e| e.to_string())?;
                if frozen.is_none_or(|f| f > cutoff + 1) {
                    return Err(format!(
                        "seed {seed}: member {} has the removed member {} frozen from {frozen:?}, not after its cutoff {cutoff}",
                        i + 1,
                        r + 1
                    ));
                }
            }
            let applied = n.store.applied().map_err(|e| e.to_string())?.get(removed);
            if applied <= cutoff {
                clean.push(i);
            } else {
                self.applied_past_cutoff += 1;
            }
        }
        let first = self.nodes[clean[0]].as_ref().expect("joined");
        let (records, conflicts) = (first.store.records.clone(), first.conflicts());
        for &i in &clean[1..] {
            let n = self.nodes[i].as_ref().expect("joined");
            if n.store.records != records || n.conflicts() != conflicts {
                let diff = records
                    .iter()
                    .find(|(k, v)| n.store.records.get(*k) != Some(*v))
                    .map(|(k, _)| k.clone());
                return Err(format!(
                    "seed {seed}: after the removal of {}, member {} diverges from member {} (first differing record: {diff:?})",
                    r + 1,
                    i + 1,
                    clean[0] + 1
                ));
            }
        }
        Ok(())
    }

    fn fork(&mut self) {
        let Some(r) = self.rogue else { return };
        let now = self.clock(r);
        match &mut self.backup {
            None => {
                let mut backup = self.nodes[r].clone().expect("joined");
                backup.rng = SplitMix(self.adv.next_u64());
                let v = Value::Int(self.adv.below(1000) as i64);
                self.node(r)
                    .write(COLL, FORKED_RECORD, vec![Op::Set("a".into(), v)], now);
                let v = Value::Int(1000 + self.adv.below(1000) as i64);
                backup.write(COLL, FORKED_RECORD, vec![Op::Set("b".into(), v)], now);
                self.backup = Some(backup);
            }
            Some(backup) => {
                let v = Value::Int(self.adv.below(1000) as i64);
                backup.write(COLL, FORKED_RECORD, vec![Op::Set("b".into(), v)], now);
                let bytes = Rc::new(backup.bundle(&[]));
                let joined = self.joined();
                let to = joined[self.adv.below(joined.len() as u64) as usize];
                if to != r {
                    self.flight.push(Flight { to, bytes });
                }
            }
        }
    }

    fn step(&mut self) -> Result<(), String> {
        if self.attack != Attack::None && self.adv.below(3) == 0 {
            self.adversary()?;
        }
        self.now += self.rng.below(3_600_000);
        match self.rng.below(100) {
            0..=29 => self.write(),
            30..=49 => self.send(),
            50..=74 => {
                if self.flight.is_empty() {
                    return Ok(());
                }
                let k = self.rng.below(self.flight.len() as u64) as usize;
                // A partition holds bundles between its sides (the carrier cannot cross).
                let from_side = self.partition.as_ref().map(|_| self.rng.below(2) == 0);
                if self.blocked(self.flight[k].to, from_side) {
                    return Ok(());
                }
                self.deliver(k)?;
            }
            75..=84 => {
                // A carrier relays a bundle it holds, unchanged, to someone else.
                if self.flight.is_empty() {
                    return Ok(());
                }
                let k = self.rng.below(self.flight.len() as u64) as usize;
                let joined = self.joined();
                let to = self.pick(&joined);
                let bytes = self.flight[k].bytes.clone();
                self.flight.push(Flight { to, bytes });
            }
            85..=87 => {
                // The admin invites the next member, who joins at once.
                if let Some(m) = (0..self.nodes.len()).find(|&m| self.nodes[m].is_none()) {
                    self.join(m);
                }
            }
            88 | 89 => {
                // A member compacts the history every member it knows of holds.
                let joined = self.joined();
                let i = self.pick(&joined);
                self.node(i).compact();
            }
            90..=92 => {
                self.partition = match self.partition {
                    Some(_) => None,
                    None => Some(
                        (0..self.nodes.len())
                            .map(|_| self.rng.below(2) == 0)
                            .collect(),
                    ),
                };
            }
            93..=95 => {
                // A crash in the middle of an import: what its last step made durable is
                // kept (steps every few hundred bytes of new commits here, so that bundles
                // of a few commits take some), the rest rolls back, and the bundle is still
                // there to be imported again.
                if self.flight.is_empty() {
                    return Ok(());
                }
                let k = self.rng.below(self.flight.len() as u64) as usize;
                let to = self.flight[k].to;
                let bytes = self.flight[k].bytes.clone();
                let now = self.clock(to);
                let mut doomed = self.node(to).clone();
                doomed.now_ms = now;
                doomed.store.step_bytes = Some(CRASH_STEP_BYTES);
                let _ = doomed.ingest(&bytes);
                if let Some(mut durable) = doomed.store.last_step.take() {
                    durable.step_bytes = None;
                    // The next ferry command on that laptop finishes what the import left
                    // (ferry-node's `finish_interrupted_import`).
                    let seed = self.seed;
                    let node = self.node(to);
                    node.store = *durable;
                    node.now_ms = now;
                    node.engine
                        .settle(&mut node.store, now)
                        .map_err(|e| format!("seed {seed}: settling after a crash: {e}"))?;
                    node.retry_waiting();
                    self.crash_steps += 1;
                }
            }
            _ => {
                // The admin sets a merge rule (replicated metadata).
                let rule = Rule::ALL[self.rng.below(Rule::ALL.len() as u64) as usize];
                let field = format!("f{}", self.rng.below(3));
                let now = self.clock(0);
                self.node(0).write(
                    "_rules",
                    COLL,
                    vec![Op::Set(field, Value::Str(rule.name().into()))],
                    now,
                );
            }
        }
        Ok(())
    }

    /// Delivers everything, then has everyone exchange with everyone until nothing is new.
    fn settle(&mut self) -> Result<(), String> {
        self.partition = None;
        while !self.flight.is_empty() {
            let k = self.rng.below(self.flight.len() as u64) as usize;
            self.deliver(k)?;
        }
        // Everyone sends to the first member, which then sends everyone what they lack.
        let joined = self.joined();
        let hub = joined[0];
        for &i in &joined[1..] {
            let bytes = self.node(i).bundle(&[]);
            self.ingest_final(hub, &bytes)?;
        }
        if let Some(backup) = &mut self.backup {
            // The restored laptop syncs too.
            let bytes = backup.bundle(&[]);
            self.ingest_final(hub, &bytes)?;
        }
        let snapshot = self.node(hub).snapshot_if_needed();
        let bytes = self.node(hub).bundle(&[]);
        for &j in &joined[1..] {
            if let Some(snap) = &snapshot {
                self.ingest_final(j, snap)?;
            }
            self.ingest_final(j, &bytes)?;
        }
        // With more than one admin, a member other than the hub may write on receiving the
        // hub's bundle (the key of a join it judges, SPEC §15): those changes travel with the
        // next exchange, as in the field.
        if self.attack == Attack::Admins {
            for _ in 0..3 {
                let before: Vec<VersionVector> = joined
                    .iter()
                    .map(|&i| self.node(i).store.stored().expect("mem"))
                    .collect();
                for &i in &joined[1..] {
                    let bytes = self.node(i).bundle(&[]);
                    self.ingest_final(hub, &bytes)?;
                }
                let bytes = self.node(hub).bundle(&[]);
                for &j in &joined[1..] {
                    self.ingest_final(j, &bytes)?;
                }
                let after: Vec<VersionVector> = joined
                    .iter()
                    .map(|&i| self.node(i).store.stored().expect("mem"))
                    .collect();
                if after == before {
                    break;
                }
            }
        }
        Ok(())
    }

    fn ingest_final(&mut self, to: usize, bytes: &[u8]) -> Result<(), String> {
        let now = self.clock(to);
        let seed = self.seed;
        let forked = self.forked_sender(bytes);
        let node = self.node(to);
        node.now_ms = now;
        match node.ingest(bytes) {
            Ok(_) => {}
            Err(
                IngestError::Fork { .. }
                | IngestError::Frozen { .. }
                | IngestError::BadSignature { .. },
            ) if forked => {}
            Err(e) => {
                if self.removal_refusal(to, bytes, &e).is_err() {
                    return Err(format!("seed {seed}: final exchange refused: {e}"));
                }
            }
        }
        Ok(())
    }

    /// After a fork: every honest replica has the forked member frozen (the evidence
    /// reached all of them) and holds the same data, apart from the record the two versions
    /// of the forked member wrote and which of its commits it holds.
    fn check_fork(&mut self) -> Result<(), String> {
        let seed = self.seed;
        let (Some(r), Some(_)) = (self.rogue, &self.backup) else {
            return Ok(());
        };
        let rogue = MemberId(r as u32 + 1);
        let honest: Vec<usize> = self.joined().into_iter().filter(|&i| i != r).collect();
        type Data = (
            BTreeMap<(String, String), ferry_model::RecordState>,
            VersionVector,
        );
        let data = |n: &SimNode| -> Result<Data, String> {
            let records = n
                .store
                .records
                .iter()
                .filter(|((_, id), _)| id != FORKED_RECORD)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut stored = n.store.stored().map_err(|e| e.to_string())?;
            stored.set(rogue, 0);
            Ok((records, stored))
        };
        // Evidence written by any honest member reaches every one of them. (In format v1 a
        // fork can go unnoticed — both versions numbered alike, each side holding one — or
        // be noticed where the evidence cannot be assembled: those runs are counted.)
        let evidence = honest.iter().any(|&i| {
            let n = self.nodes[i].as_ref().expect("joined");
            n.store
                .records
                .get(&(crate::FORKS.to_string(), rogue.0.to_string()))
                .is_some_and(|r| r.is_live())
        });
        let frozen = honest
            .iter()
            .filter(|&&i| {
                let n = self.nodes[i].as_ref().expect("joined");
                n.store.frozen(rogue).ok().flatten().is_some()
            })
            .count();
        self.fork_outcome = Some(match (evidence, frozen) {
            (true, _) => ForkOutcome::Travelled,
            (false, 0) => ForkOutcome::Unnoticed,
            (false, _) => ForkOutcome::NoticedWithoutEvidence,
        });
        // An honest member left waiting on the version it does not hold (format v1 cannot
        // tell that run from a forgery) is counted, and the others are compared.
        let mut checked = Vec::new();
        for &i in &honest {
            let n = self.nodes[i].as_ref().expect("joined");
            if !evidence && stalled_by_fork(n, rogue)? {
                self.fork_outcome = Some(ForkOutcome::Stalled);
            } else {
                checked.push(i);
            }
        }
        let Some(&first) = checked.first() else {
            return Ok(());
        };
        let reference = data(self.nodes[first].as_ref().expect("joined"))?;
        for &i in &checked {
            let n = self.nodes[i].as_ref().expect("joined");
            if evidence && n.store.frozen(rogue).map_err(|e| e.to_string())?.is_none() {
                return Err(format!(
                    "seed {seed}: member {} did not freeze member {rogue}, whose history forked, although the evidence was written (replay with FERRY_SIM_SEED={seed})",
                    i + 1
                ));
            }
            let (records, stored) = data(n)?;
            // Without evidence, a member that holds another version of the forked member's
            // history than the reference cannot be brought to the same state in format v1:
            // the admin's snapshot that would bring it up to date loses what it holds, and
            // a run continuing the version it lacks fails its signature there. Counted.
            if !evidence
                && (records != reference.0 || stored != reference.1)
                && holds_other_version(n, self.nodes[first].as_ref().expect("joined"), rogue)?
            {
                self.fork_outcome = Some(ForkOutcome::Stalled);
                continue;
            }
            if records != reference.0 {
                let diff = records
                    .iter()
                    .find(|(k, v)| reference.0.get(*k) != Some(*v))
                    .map(|(k, _)| k.clone());
                let detail = match (&diff, std::env::var_os("FERRY_SIM_DEBUG")) {
                    (Some(k), Some(_)) => format!(
                        "\nhere: {:?}\nthere: {:?}\nheld here: {:?} applied here: {:?}\nheld there: {:?}; evidence written: {evidence}, member {rogue} frozen here from: {:?}",
                        records.get(k),
                        reference.0.get(k),
                        n.store.stored(),
                        n.store.applied(),
                        reference.1,
                        n.store.frozen(rogue)
                    ),
                    _ => String::new(),
                };
                return Err(format!(
                    "seed {seed}: after member {rogue} forked, member {} diverges from member {} (first differing record: {diff:?}){detail}",
                    i + 1,
                    first + 1
                ));
            }
            if stored != reference.1 {
                return Err(format!(
                    "seed {seed}: after member {rogue} forked, member {} holds other commits",
                    i + 1
                ));
            }
        }
        Ok(())
    }

    fn check(&mut self) -> Result<Outcome, String> {
        let seed = self.seed;
        let joined = self.joined();
        let first = self.nodes[joined[0]].as_ref().expect("joined");
        let records = &first.store.records;
        let conflicts = first.conflicts();
        let stored = first.store.stored().map_err(|e| e.to_string())?;
        for &i in &joined[1..] {
            let n = self.nodes[i].as_ref().expect("joined");
            if &n.store.records != records {
                let diff = records
                    .iter()
                    .find(|(k, r)| n.store.records.get(*k) != Some(*r))
                    .map(|(k, _)| k.clone());
                return Err(format!(
                    "seed {seed}: member {} diverges from member {} (first differing record: {diff:?})",
                    i + 1,
                    joined[0] + 1
                ));
            }
            if n.conflicts() != conflicts {
                return Err(format!(
                    "seed {seed}: member {} lists other conflicts",
                    i + 1
                ));
            }
            if n.store.stored().map_err(|e| e.to_string())? != stored {
                return Err(format!("seed {seed}: member {} holds other commits", i + 1));
            }
            if !n.waiting.is_empty() {
                return Err(format!(
                    "seed {seed}: member {} still has {} bundles it could not check",
                    i + 1,
                    n.waiting.len()
                ));
            }
            if !n.store.stashed().map_err(|e| e.to_string())?.is_empty() {
                return Err(format!(
                    "seed {seed}: member {} still has stashed commits",
                    i + 1
                ));
            }
        }
        // A field is listed as a conflict exactly when its concurrent values differ: the
        // same value from two laptops is kept twice and not listed.
        let mut equal_values = 0;
        for ((c, id), r) in records {
            // What a field shows from: its surviving writes and, while a delete is crossed
            // by an edit, the values that delete removed (ghosts).
            for f in r.shown().keys() {
                let values: Vec<&Value> = r.values(f).into_iter().map(|(_, v)| v).collect();
                let differ = values.iter().any(|v| *v != values[0]);
                let listed = conflicts
                    .iter()
                    .any(|(cc, ii, ff)| cc == c && ii == id && ff == f);
                if listed != differ {
                    return Err(format!(
                        "seed {seed}: {c}/{id} {f} holds {values:?}, listed as a conflict: {listed}"
                    ));
                }
                if values.len() > 1 && !differ {
                    equal_values += 1;
                }
            }
        }
        // No lost write.
        let mut by_record: BTreeMap<&str, Vec<&Write>> = BTreeMap::new();
        for w in &self.log {
            by_record.entry(&w.id).or_default().push(w);
        }
        for (id, writes) in &by_record {
            let rec = records.get(&(COLL.to_string(), id.to_string()));
            for w in writes {
                let held = rec.is_some_and(|r| match &w.op {
                    Op::Set(f, _) => r.fields.get(f).is_some_and(|s| {
                        s.iter()
                            .any(|x| x.stamp.dot == w.dot && matches!(x.entry, Entry::Value(_)))
                    }),
                    Op::Incr(f, _) => r.fields.get(f).is_some_and(|s| {
                        s.iter()
                            .any(|x| x.stamp.dot == w.dot && matches!(x.entry, Entry::Incr(_)))
                    }),
                    Op::Add(f, e) => r.fields.get(f).is_some_and(|s| {
                        s.iter().any(|x| {
                            x.stamp.dot == w.dot && matches!(&x.entry, Entry::Elem(y) if y == e)
                        })
                    }),
                    Op::Remove(..) => true,
                    Op::Delete => r.tombstones.iter().any(|t| t.dot == w.dot),
                });
                if held || matches!(w.op, Op::Remove(..)) {
                    continue;
                }
                let superseded = writes.iter().any(|w2| {
                    w2.ctx.covers(w.dot)
                        && match (&w.op, &w2.op) {
                            (_, Op::Delete) => true,
                            (Op::Delete, _) => true,
                            (Op::Set(f, _) | Op::Incr(f, _), Op::Set(g, _)) => f == g,
                            (Op::Add(f, e), Op::Add(g, x) | Op::Remove(g, x)) => f == g && e == x,
                            (Op::Add(f, _), Op::Set(g, _)) => f == g,
                            _ => false,
                        }
                });
                if !superseded {
                    let detail = if std::env::var_os("FERRY_SIM_DEBUG").is_some() {
                        let log: Vec<String> = writes
                            .iter()
                            .map(|x| format!("{:?} {:?} ctx {:?}", x.dot, x.op, x.ctx))
                            .collect();
                        format!("\nrecord: {rec:?}\nwrites:\n{}", log.join("\n"))
                    } else {
                        String::new()
                    };
                    return Err(format!(
                        "seed {seed}: lost write: {:?} by {} on {id} is neither held nor superseded by a write that saw it{detail}",
                        w.op, w.dot.author
                    ));
                }
                // Removed only by deletes: kept as a ghost, so an edit concurrent with a
                // delete brings the record back whole.
                // (An increment supersedes an increment it saw once it also saw a delete
                // that removed it: it carries the revived count.)
                let saw_its_delete = |w2: &Write| {
                    writes.iter().any(|d| {
                        matches!(d.op, Op::Delete) && d.ctx.covers(w.dot) && w2.ctx.covers(d.dot)
                    })
                };
                let by_field_write = writes.iter().any(|w2| {
                    w2.ctx.covers(w.dot)
                        && match (&w.op, &w2.op) {
                            (Op::Incr(f, _), Op::Incr(g, _)) => f == g && saw_its_delete(w2),
                            (Op::Set(f, _) | Op::Incr(f, _), Op::Set(g, _)) => f == g,
                            (Op::Add(f, e), Op::Add(g, x) | Op::Remove(g, x)) => f == g && e == x,
                            (Op::Add(f, _), Op::Set(g, _)) => f == g,
                            _ => false,
                        }
                });
                let ghost = rec.is_some_and(|r| {
                    r.ghosts.iter().any(|g| {
                        g.sibling.stamp.dot == w.dot && Some(g.field.as_str()) == w.op.field()
                    })
                });
                if !matches!(w.op, Op::Delete) && !by_field_write && !ghost {
                    return Err(format!(
                        "seed {seed}: {:?} by {} on {id} was removed by a delete only, yet is not kept as a ghost",
                        w.op, w.dot.author
                    ));
                }
            }
        }
        Ok(Outcome {
            nodes: joined.len(),
            writes: self.log.len(),
            deliveries: self.deliveries,
            commits: stored.total(),
            conflicts: conflicts.len(),
            equal_values,
            stashed: self.stashed,
            pending: self.pending,
            snapshots: self.snapshots,
            ghosts: records.values().map(|r| r.shown_ghosts().count()).sum(),
            revivals: self.revivals,
            columnar: self.columnar,
            dictionaries: self.dictionaries,
            dictionary_bundles: self.dictionary_bundles,
            dictionary_waits: self.dictionary_waits,
            crash_steps: self.crash_steps,
            restores: self.restores,
            waited: self.waited,
            forgeries: 0,
            refused: 0,
            fork: None,
            applied_past_cutoff: 0,
            refused_removed: 0,
            role_moves: 0,
            admins: 0,
        })
    }
}

/// Whether `n` and `other` hold different versions of `rogue`'s history: a commit number
/// both hold with different chain hashes.
fn holds_other_version(n: &SimNode, other: &SimNode, rogue: MemberId) -> Result<bool, String> {
    let err = |e: crate::mem::MemError| e.to_string();
    let top = n
        .store
        .stored()
        .map_err(err)?
        .get(rogue)
        .min(other.store.stored().map_err(err)?.get(rogue));
    for seq in 1..=top {
        let mine = n.store.commit_hash(rogue, seq).map_err(err)?;
        let theirs = other.store.commit_hash(rogue, seq).map_err(err)?;
        if let (Some(a), Some(b)) = (mine, theirs) {
            if a != b {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Whether everything `n` holds but has not applied waits, directly or through another
/// waiting author, on commits of `rogue` beyond those `n` holds — the one divergence an
/// unnoticed fork may cause in format v1 ([`ForkOutcome::Stalled`]). Any other commit left
/// unapplied, or none at all, is not explained by the fork.
fn stalled_by_fork(n: &SimNode, rogue: MemberId) -> Result<bool, String> {
    let err = |e: crate::mem::MemError| e.to_string();
    let held = n.store.stored().map_err(err)?;
    let applied = n.store.applied().map_err(err)?;
    let behind: Vec<MemberId> = held
        .iter()
        .filter(|&(m, h)| m != rogue && applied.get(m) < h)
        .map(|(m, _)| m)
        .collect();
    let mut waiting: Vec<MemberId> = Vec::new();
    loop {
        let before = waiting.len();
        for &m in &behind {
            if waiting.contains(&m) {
                continue;
            }
            let next = applied.get(m) + 1;
            let Some(c) = n.store.commit(m, next).map_err(err)? else {
                continue;
            };
            let waits = c.deps.iter().any(|(d, s)| {
                (d == rogue && s > held.get(rogue)) || (waiting.contains(&d) && s > applied.get(d))
            });
            if waits {
                waiting.push(m);
            }
        }
        if waiting.len() == before {
            break;
        }
    }
    Ok(!waiting.is_empty() && waiting.len() == behind.len())
}

/// Runs the scenario of `seed` and checks it; `Err` names the seed and what went wrong.
/// Panics raised by the storage's invariant checks (a commit applied twice, out of order
/// or before its dependencies) also carry through; [`run_caught`] turns them into errors.
///
/// Signature checks are remembered for the seed's three runs
/// ([`ferry_model::crypto::with_verify_memo`]): they deliver the same signed commits again
/// and again, and a check's answer depends only on its bytes.
pub fn run(seed: u64) -> Result<Outcome, String> {
    ferry_model::crypto::with_verify_memo(|| run_three(seed))
}

fn run_three(seed: u64) -> Result<Outcome, String> {
    let mut honest = simulate(seed, Attack::None)?;
    let mut outcome = honest.check()?;
    // The same honest run, with forgeries delivered everywhere: not one may have an effect.
    let with = |e: String, what: &str| format!("{e} [with {what}]");
    let attacked = simulate(seed, Attack::Forgeries).map_err(|e| with(e, "forgeries"))?;
    same_data(seed, &honest, &attacked)?;
    outcome.forgeries = attacked.forgeries;
    outcome.refused = attacked.refused;
    // A member's history forks: it ends frozen everywhere, the rest converges.
    let mut forked = simulate(seed, Attack::Fork).map_err(|e| with(e, "a fork"))?;
    forked.check_fork().map_err(|e| with(e, "a fork"))?;
    outcome.fork = forked.fork_outcome;
    // A member is removed and goes on as before: nothing new reaches it, the rest agrees.
    let mut removal = simulate(seed, Attack::Removal).map_err(|e| with(e, "a removal"))?;
    if removal.removed.is_some() {
        removal.check_removal().map_err(|e| with(e, "a removal"))?;
    }
    outcome.applied_past_cutoff = removal.applied_past_cutoff;
    outcome.refused_removed = removal.refused_removed;
    // Admins come and go while members set rules: every replica ends the same (the checks
    // of an honest run: same records — `_rules` and `_roles` among them — and conflicts).
    let mut admins = simulate(seed, Attack::Admins).map_err(|e| with(e, "admins"))?;
    admins.check().map_err(|e| with(e, "admins"))?;
    let first = admins.joined()[0];
    let set = crate::roles::admins(&admins.nodes[first].as_ref().expect("joined").store)
        .map_err(|e| e.to_string())?;
    for i in admins.joined() {
        let n = admins.nodes[i].as_ref().expect("joined");
        if crate::roles::admins(&n.store).map_err(|e| e.to_string())? != set {
            return Err(format!(
                "seed {seed}: member {} sees other admins than member {} [with admins]",
                i + 1,
                first + 1
            ));
        }
    }
    outcome.role_moves = admins.role_moves;
    outcome.admins = set.len();
    Ok(outcome)
}

/// One run of `seed` with `attack`, up to and including the final exchange.
fn simulate(seed: u64, attack: Attack) -> Result<World, String> {
    let mut rng = SplitMix(seed);
    let n = match rng.below(100) {
        0..=79 => 3 + rng.below(3),
        80..=94 => 6 + rng.below(5),
        _ => 11 + rng.below(10),
    } as usize;
    let mut admin = SimNode::create("sim", "m1", rng.next_u64(), T0);
    admin.options = WriteOptions {
        level: 0,
        ..Default::default()
    };
    let skew = (0..n)
        .map(|_| match rng.below(20) {
            0 => TWO_YEARS_MS,
            1 => -TWO_YEARS_MS,
            _ => 0,
        })
        .collect();
    let mut world = World {
        rng,
        nodes: (0..n).map(|_| None).collect(),
        skew,
        flight: Vec::new(),
        partition: None,
        log: Vec::new(),
        now: T0,
        deliveries: 0,
        stashed: 0,
        revivals: 0,
        restores: 0,
        pending: 0,
        snapshots: 0,
        waited: 0,
        seed,
        attack,
        adv: SplitMix(seed ^ 0xad5e_55a2_1e5b_0b5e),
        bulk: SplitMix(seed ^ 0xb01c_c01a_3a11_0011),
        announced: Vec::new(),
        columnar: 0,
        dictionaries: 0,
        dictionary_bundles: 0,
        dictionary_waits: 0,
        crash_steps: 0,
        rogue: None,
        backup: None,
        forgeries: 0,
        refused: 0,
        fork_outcome: None,
        applied_log: Vec::new(),
        removed: None,
        refused_removed: 0,
        applied_past_cutoff: 0,
        role_moves: 0,
    };
    world.nodes[0] = Some(admin);
    // Some members join at the start; the others during the run.
    let at_start = 2 + world.rng.below(n as u64 - 1) as usize;
    for m in 1..at_start {
        world.join(m);
    }
    let steps = 20 + world.rng.below(40);
    for _ in 0..steps {
        world.step()?;
    }
    if attack == Attack::Removal && world.removed.is_none() {
        // The removal happens at the latest just before the end.
        world.adversary()?;
    }
    if attack == Attack::Fork && world.backup.is_none() {
        // The fork happens at the latest just before the end.
        world.adversary()?;
        world.adversary()?;
    }
    world.settle()?;
    if attack == Attack::Fork {
        // Evidence found in the final exchange travels with a second one.
        world.settle()?;
    }
    Ok(world)
}

/// Checks that every replica of `attacked` holds exactly the data it holds in `honest`.
fn same_data(seed: u64, honest: &World, attacked: &World) -> Result<(), String> {
    for (i, (h, a)) in honest.nodes.iter().zip(&attacked.nodes).enumerate() {
        let (Some(h), Some(a)) = (h, a) else {
            if h.is_some() != a.is_some() {
                return Err(format!(
                    "seed {seed}: member {} joined in one run only",
                    i + 1
                ));
            }
            continue;
        };
        let what = if h.store.records != a.store.records {
            let diff = h
                .store
                .records
                .iter()
                .find(|(k, r)| a.store.records.get(*k) != Some(*r))
                .map(|(k, _)| k.clone())
                .or_else(|| {
                    a.store
                        .records
                        .keys()
                        .find(|k| !h.store.records.contains_key(*k))
                        .cloned()
                });
            format!("records (first differing: {diff:?})")
        } else if h.store.stored().ok() != a.store.stored().ok() {
            "held commits".into()
        } else if h.store.applied().ok() != a.store.applied().ok() {
            "applied commits".into()
        } else if h.store.members().ok() != a.store.members().ok() {
            "members".into()
        } else {
            continue;
        };
        return Err(format!(
            "seed {seed}: forgeries changed member {}'s {what} (replay with FERRY_SIM_SEED={seed})",
            i + 1
        ));
    }
    Ok(())
}

/// [`run`], with an invariant panic turned into an error naming the seed.
pub fn run_caught(seed: u64) -> Result<Outcome, String> {
    match std::panic::catch_unwind(|| run(seed)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("seed {seed}: invariant broken: {msg}"))
        }
    }
}
