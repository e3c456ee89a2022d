//! Deterministic simulator for the BPI chain.
//!
//! One seed = one world: 4 or 7 validators running the real
//! [`metanode_chain::node::NodeCore`] (engine, mempool, PoH, ledger) over a
//! simulated network (delay, loss, duplication, reordering, partitions),
//! with crashes and restarts on fault-injecting disks (torn writes, fsync
//! errors), clock skew, and Byzantine validators (twins, invalid, withheld,
//! replayed and forged messages). The checkers in [`check`] decide whether
//! the seed passed; a failing seed prints how to replay it, and replays
//! exactly because every decision comes from the seed.

pub mod check;
pub mod rng;
pub mod scenario;
pub mod world;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub use check::SimFailure;
pub use scenario::Scenario;
pub use world::SimReport;

/// Runs one seed. A panic inside the node code (an invariant assertion) is a
/// failure of the seed, reported like any other.
pub fn run_seed(seed: u64) -> Result<SimReport, SimFailure> {
    let scenario = Scenario::from_seed(seed);
    let described = scenario.to_string();
    match catch_unwind(AssertUnwindSafe(|| world::World::new(scenario).run())) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "non-string panic".into());
            Err(SimFailure {
                seed,
                at_ms: 0,
                what: format!("panic: {message} ({described})"),
            })
        }
    }
}

/// Totals over many seeds.
#[derive(Debug, Default)]
pub struct Summary {
    pub seeds_run: u64,
    pub failures: Vec<SimFailure>,
    pub blocks_decided: u64,
    pub txs_committed: u64,
    pub crashes: u64,
    pub messages_sent: u64,
    pub messages_rejected: u64,
}

/// Runs `count` seeds from `first` on `threads` threads; `progress` is called
/// after each seed with (seeds done, failures so far).
pub fn run_seeds(
    first: u64,
    count: u64,
    threads: usize,
    progress: &(dyn Fn(u64, usize) + Sync),
) -> Summary {
    let next = AtomicU64::new(first);
    let end = first + count;
    let summary = Mutex::new(Summary::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let result = run_seed(seed);
                    let mut s = summary.lock().unwrap_or_else(|e| e.into_inner());
                    s.seeds_run += 1;
                    match result {
                        Ok(r) => {
                            s.blocks_decided += r.heights.iter().copied().max().unwrap_or(0);
                            s.txs_committed += r.txs_committed;
                            s.crashes += r.crashes;
                            s.messages_sent += r.messages_sent;
                            s.messages_rejected += r.messages_rejected;
                        }
                        Err(f) => s.failures.push(f),
                    }
                    let (done, failed) = (s.seeds_run, s.failures.len());
                    drop(s);
                    progress(done, failed);
                }
            });
        }
    });
    let mut s = summary.into_inner().unwrap_or_else(|e| e.into_inner());
    s.failures.sort_by_key(|f| f.seed);
    s
}
