//! `metanode-sim`: run the chain simulator over many seeds (CI, soak) or
//! replay one seed with its scenario printed.

use std::io::Write;
use std::time::Instant;

use anyhow::bail;
use clap::Parser;

/// Deterministic BFT simulator for the Metanode chain.
///
/// Every seed builds a world (validators, network faults, crashes, disk
/// faults, Byzantine nodes) from the seed alone and checks agreement,
/// validity, liveness after healing, identical state roots and replay from
/// genesis. A failing seed prints a command that replays it exactly.
///
/// Examples:
///   metanode-sim --seeds 1000            # what CI runs
///   metanode-sim --seeds 100000 --first 1000000   # a soak
///   metanode-sim --seed 42               # replay one seed, with details
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Number of seeds to run.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// First seed of the range.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Run exactly this seed and print its scenario and report.
    #[arg(long, conflicts_with_all = ["seeds", "first"])]
    seed: Option<u64>,
    /// Worker threads (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(seed) = args.seed {
        println!("{}", metanode_chain_sim::Scenario::from_seed(seed));
        let started = Instant::now();
        return match metanode_chain_sim::run_seed(seed) {
            Ok(r) => {
                println!(
                    "ok: heights {:?}, {} txs committed, {} crashes, {} messages ({} rejected), {} simulated ms in {:.2?}; trace {}",
                    r.heights,
                    r.txs_committed,
                    r.crashes,
                    r.messages_sent,
                    r.messages_rejected,
                    r.sim_ms,
                    started.elapsed(),
                    r.trace_digest
                );
                Ok(())
            }
            Err(f) => bail!("{f}"),
        };
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let started = Instant::now();
    let total = args.seeds;
    let progress = move |done: u64, failed: usize| {
        if done.is_multiple_of(50) || done == total {
            eprint!(
                "\rsim: {done}/{total} seeds, {failed} failed, {:.0?}   ",
                started.elapsed()
            );
            let _ = std::io::stderr().flush();
        }
    };
    let summary = metanode_chain_sim::run_seeds(args.first, args.seeds, threads, &progress);
    eprintln!();
    println!(
        "sim: {} seeds ({}..{}) in {:.1?}: {} blocks decided, {} txs committed, {} crashes, {} messages ({} rejected)",
        summary.seeds_run,
        args.first,
        args.first + args.seeds,
        started.elapsed(),
        summary.blocks_decided,
        summary.txs_committed,
        summary.crashes,
        summary.messages_sent,
        summary.messages_rejected
    );
    if !summary.failures.is_empty() {
        for f in &summary.failures {
            eprintln!("FAIL {f}");
        }
        bail!(
            "{} of {} seeds failed",
            summary.failures.len(),
            summary.seeds_run
        );
    }
    Ok(())
}
