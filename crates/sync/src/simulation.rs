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
//! No processes, no sleeps, no I/O: the same seed always replays the same run.

use crate::sim::{SimNode, SplitMix};
use crate::{Received, Storage};
use ferry_bundle::WriteOptions;
use ferry_model::record::Entry;
use ferry_model::{Dot, MemberId, Op, Rule, Value, VersionVector};
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
    /// Commits that had to wait, stashed, during the run.
    pub stashed: u64,
    /// Commits that arrived before what they depend on and waited, pending.
    pub pending: u64,
    /// Snapshots installed (by members that joined after others compacted).
    pub snapshots: u64,
    /// Deliveries that could not be checked yet and waited for an earlier bundle.
    pub waited: u64,
}

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
    pending: u64,
    snapshots: u64,
    waited: u64,
    seed: u64,
}

const COLL: &str = "c";

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
        let id = format!("r{}", self.rng.below(4));
        let field = format!("f{}", self.rng.below(3));
        let tag = format!("t{}", self.rng.below(3));
        let op = match self.rng.below(20) {
            0 | 1 => Op::Delete,
            2..=4 => Op::Incr("n".into(), self.rng.below(7) as i64 - 3),
            5 | 6 => Op::Add("tags".into(), tag),
            7 => Op::Remove("tags".into(), tag),
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
                    Some((rid, f)) => {
                        let v = Value::Int(self.rng.below(1000) as i64);
                        return self.log_write(i, rid, Op::Set(f, v));
                    }
                    None => Op::Set(field, Value::Int(self.rng.below(1000) as i64)),
                }
            }
            11 | 12 => Op::Set(field, Value::Float(self.rng.below(1000) as f64 / 10.0)),
            13 => Op::Set(field, Value::Str(format!("s{}", self.rng.below(50)))),
            _ => Op::Set(field, Value::Int(self.rng.below(1000) as i64)),
        };
        self.log_write(i, id, op);
    }

    fn log_write(&mut self, i: usize, id: String, op: Op) {
        let now = self.clock(i);
        let commit = self.node(i).write(COLL, &id, vec![op.clone()], now);
        self.log.push(Write {
            dot: commit.dot(),
            ctx: commit.context(),
            id,
            op,
        });
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
        self.nodes[m] = Some(node);
    }

    fn deliver(&mut self, k: usize) -> Result<(), String> {
        let f = self.flight.swap_remove(k);
        let now = self.clock(f.to);
        let seed = self.seed;
        let node = self.node(f.to);
        node.now_ms = now;
        let r = node.ingest(&f.bytes).map_err(|e| {
            format!(
                "seed {seed}: a genuine bundle was refused by member {}: {e}",
                f.to + 1
            )
        })?;
        self.deliveries += 1;
        match r {
            Received::Applied(r, _) => {
                self.stashed += r.stashed;
                self.pending += r.new - r.applied;
                self.snapshots += r.snapshot as u64;
            }
            Received::NotYet { .. } => self.waited += 1,
            Received::Obsolete { .. } => {}
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), String> {
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
                // A crash in the middle of an import: nothing of it is kept (the transaction
                // rolls back), and the bundle is still there to be imported again.
                if self.flight.is_empty() {
                    return Ok(());
                }
                let k = self.rng.below(self.flight.len() as u64) as usize;
                let to = self.flight[k].to;
                let bytes = self.flight[k].bytes.clone();
                let mut doomed = self.node(to).clone();
                let _ = doomed.ingest(&bytes);
                drop(doomed);
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
        let snapshot = self.node(hub).snapshot_if_needed();
        let bytes = self.node(hub).bundle(&[]);
        for &j in &joined[1..] {
            if let Some(snap) = &snapshot {
                self.ingest_final(j, snap)?;
            }
            self.ingest_final(j, &bytes)?;
        }
        Ok(())
    }

    fn ingest_final(&mut self, to: usize, bytes: &[u8]) -> Result<(), String> {
        let now = self.clock(to);
        let seed = self.seed;
        let node = self.node(to);
        node.now_ms = now;
        node.ingest(bytes)
            .map_err(|e| format!("seed {seed}: final exchange refused: {e}"))?;
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
                    return Err(format!(
                        "seed {seed}: lost write: {:?} by {} on {id} is neither held nor superseded by a write that saw it",
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
            stashed: self.stashed,
            pending: self.pending,
            snapshots: self.snapshots,
            waited: self.waited,
        })
    }
}

/// Runs the scenario of `seed` and checks it; `Err` names the seed and what went wrong.
/// Panics raised by the storage's invariant checks (a commit applied twice, out of order
/// or before its dependencies) also carry through; [`run_caught`] turns them into errors.
pub fn run(seed: u64) -> Result<Outcome, String> {
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
        pending: 0,
        snapshots: 0,
        waited: 0,
        seed,
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
    world.settle()?;
    world.check()
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
