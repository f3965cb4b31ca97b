//! A seeded simulation: several replicas write concurrently and exchange bundles that are
//! lost, duplicated, reordered and relayed. Once everything has been delivered, every
//! replica shows the same records and the same conflicts. A failing seed is printed; add it
//! to `REGRESSION_SEEDS` to pin it.

use ferry_model::{MemberId, Op, Value};
use ferry_sync::Storage;
use ferry_sync::sim::{SimNode, SplitMix};

const T0: u64 = 1_763_000_000_000;
const REGRESSION_SEEDS: &[u64] = &[];

fn replicas(n: u32, rng: &mut SplitMix) -> Vec<SimNode> {
    let mut admin = SimNode::create("sim", "n1", rng.next_u64(), T0);
    let invites: Vec<_> = (2..=n)
        .map(|m| admin.invite(MemberId(m), &format!("n{m}"), T0))
        .collect();
    let mut nodes = vec![admin];
    for inv in &invites {
        nodes.push(SimNode::join(inv, rng.next_u64(), T0));
    }
    nodes
}

fn random_op(rng: &mut SplitMix) -> (String, Vec<Op>) {
    let id = format!("r{}", rng.below(6));
    let field = ["a", "b", "c"][rng.below(3) as usize].to_string();
    let op = match rng.below(10) {
        0 => Op::Delete,
        1 => Op::Incr("count".into(), rng.below(5) as i64 - 2),
        2 => Op::Add("tags".into(), format!("t{}", rng.below(3))),
        3 => Op::Remove("tags".into(), format!("t{}", rng.below(3))),
        4 => Op::Set(field, Value::Float(rng.below(1000) as f64 / 10.0)),
        _ => Op::Set(field, Value::Int(rng.below(100) as i64)),
    };
    (id, vec![op])
}

fn run(seed: u64) {
    let mut rng = SplitMix(seed);
    let n = 2 + rng.below(4) as u32;
    let mut nodes = replicas(n, &mut rng);
    // Bundles in flight: (recipient, bytes).
    let mut flight: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut now = T0;
    for _ in 0..60 {
        now += rng.below(5_000);
        let i = rng.below(n as u64) as usize;
        match rng.below(4) {
            0 | 1 => {
                let (id, ops) = random_op(&mut rng);
                nodes[i].write("sim", &id, ops, now);
            }
            2 => {
                let bundle = nodes[i].bundle(&[]);
                let to = rng.below(n as u64) as usize;
                // Lost 20 % of the time, duplicated 20 % of the time.
                match rng.below(5) {
                    0 => {}
                    1 => {
                        flight.push((to, bundle.clone()));
                        flight.push((to, bundle));
                    }
                    _ => flight.push((to, bundle)),
                }
            }
            _ => {
                if !flight.is_empty() {
                    let k = rng.below(flight.len() as u64) as usize;
                    let (to, bytes) = flight.swap_remove(k);
                    nodes[to].now_ms = now;
                    if let Err(e) = nodes[to].ingest(&bytes) {
                        panic!("seed {seed}: delivery refused: {e}");
                    }
                }
            }
        }
    }
    // Deliver what is left in any order, then let everyone exchange until quiet: with
    // receipts, each node sends exactly what the others lack.
    while let Some((to, bytes)) = flight.pop() {
        nodes[to]
            .ingest(&bytes)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    for _round in 0..3 {
        for i in 0..nodes.len() {
            let bundle = nodes[i].bundle(&[]);
            for (j, node) in nodes.iter_mut().enumerate() {
                if i != j {
                    node.ingest(&bundle)
                        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                }
            }
        }
    }
    let first = nodes[0].listing();
    let conflicts = nodes[0].conflicts();
    for node in &nodes[1..] {
        assert_eq!(
            node.listing(),
            first,
            "seed {seed}: {} differs from n1",
            node.label
        );
        assert_eq!(node.conflicts(), conflicts, "seed {seed}: conflicts differ");
        assert!(
            node.store.stashed().unwrap_or_default().is_empty(),
            "seed {seed}"
        );
    }
}

#[test]
fn replicas_converge_under_loss_duplication_reordering_and_relays() {
    for &seed in REGRESSION_SEEDS {
        run(seed);
    }
    for seed in 0..120 {
        run(seed);
    }
}
