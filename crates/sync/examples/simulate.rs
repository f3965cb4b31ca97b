//! The simulation's long mode: `cargo run --release -p ferry-sync --example simulate -- N
//! [FIRST_SEED] [THREADS]` runs N seeds and prints how long it took; any failing seed is
//! printed with the command that replays it.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use ferry_sync::simulation::run_caught;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(10_000);
    let first = args.get(1).copied().unwrap_or(0);
    let threads = args.get(2).copied().unwrap_or(2).max(1);
    // The invariant checks panic; their messages are collected, not printed twice.
    std::panic::set_hook(Box::new(|_| {}));
    let next = AtomicU64::new(first);
    let failed = AtomicU64::new(0);
    let writes = AtomicU64::new(0);
    let deliveries = AtomicU64::new(0);
    let conflicts = AtomicU64::new(0);
    let stashed = AtomicU64::new(0);
    let pending = AtomicU64::new(0);
    let snapshots = AtomicU64::new(0);
    let forgeries = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let travelled = AtomicU64::new(0);
    let ghosts = AtomicU64::new(0);
    let revivals = AtomicU64::new(0);
    let restores = AtomicU64::new(0);
    let unnoticed = AtomicU64::new(0);
    let stalled = AtomicU64::new(0);
    let refused_removed = AtomicU64::new(0);
    let past_cutoff = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= first + n {
                        break;
                    }
                    match run_caught(seed) {
                        Ok(o) => {
                            writes.fetch_add(o.writes as u64, Ordering::Relaxed);
                            deliveries.fetch_add(o.deliveries as u64, Ordering::Relaxed);
                            conflicts.fetch_add(o.conflicts as u64, Ordering::Relaxed);
                            stashed.fetch_add(o.stashed, Ordering::Relaxed);
                            pending.fetch_add(o.pending, Ordering::Relaxed);
                            snapshots.fetch_add(o.snapshots, Ordering::Relaxed);
                            forgeries.fetch_add(o.forgeries, Ordering::Relaxed);
                            refused.fetch_add(o.refused, Ordering::Relaxed);
                            ghosts.fetch_add(o.ghosts as u64, Ordering::Relaxed);
                            revivals.fetch_add(o.revivals, Ordering::Relaxed);
                            restores.fetch_add(o.restores, Ordering::Relaxed);
                            refused_removed.fetch_add(o.refused_removed, Ordering::Relaxed);
                            past_cutoff.fetch_add(o.applied_past_cutoff as u64, Ordering::Relaxed);
                            match o.fork {
                                Some(ferry_sync::simulation::ForkOutcome::Travelled) => {
                                    travelled.fetch_add(1, Ordering::Relaxed);
                                }
                                Some(ferry_sync::simulation::ForkOutcome::Stalled) => {
                                    stalled.fetch_add(1, Ordering::Relaxed);
                                }
                                Some(_) => {
                                    unnoticed.fetch_add(1, Ordering::Relaxed);
                                }
                                None => {}
                            }
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            println!("FAILED {e}\n  replay: FERRY_SIM_SEED={seed} cargo test -p ferry-sync --test simulation");
                        }
                    }
                    if (seed - first + 1) % 10_000 == 0 {
                        eprintln!("{} seeds, {:.0} s", seed - first + 1, start.elapsed().as_secs_f64());
                    }
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{n} seeds ({first}..{}) on {threads} threads in {secs:.1} s: {} failed; {} writes, {} bundle deliveries, {} commits stashed and {} pending on arrival, {} snapshots installed, {} conflicts at the end; {} ghosts shown at the end, {} writes that revived a record, {} restores; {} forged bundles delivered ({} refused outright, the rest without effect); forks: evidence reached every member in {} runs, went unnoticed or without evidence in {}, and left an honest member waiting on the other version in {}; removals: {} bundles of removed members refused, {} members had applied a removed member's changes past its cutoff before the removal reached them",
        first + n,
        failed.load(Ordering::Relaxed),
        writes.load(Ordering::Relaxed),
        deliveries.load(Ordering::Relaxed),
        stashed.load(Ordering::Relaxed),
        pending.load(Ordering::Relaxed),
        snapshots.load(Ordering::Relaxed),
        conflicts.load(Ordering::Relaxed),
        ghosts.load(Ordering::Relaxed),
        revivals.load(Ordering::Relaxed),
        restores.load(Ordering::Relaxed),
        forgeries.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        travelled.load(Ordering::Relaxed),
        unnoticed.load(Ordering::Relaxed),
        stalled.load(Ordering::Relaxed),
        refused_removed.load(Ordering::Relaxed),
        past_cutoff.load(Ordering::Relaxed)
    );
    if failed.load(Ordering::Relaxed) > 0 {
        std::process::exit(1);
    }
}
