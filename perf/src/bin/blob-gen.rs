//! Writes the large input file of add-large/read-large (blob
//! `blobgen::LARGE_INDEX` of the run's seed), fsynced, and prints
//! `{"path", "bytes", "blake3"}` on stdout. Built in release with the
//! harnesses so generating 1 GiB takes about a second, not a debug build's
//! tens.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use metanode_perf::blobgen;

const TOTAL_BYTES_MAX: u64 = 64 << 30;

#[derive(Debug, Parser)]
#[command(about = "Generate the deterministic large input file of the storage bench.")]
struct Args {
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    total_bytes: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (1..=TOTAL_BYTES_MAX).contains(&args.total_bytes),
        "--total-bytes {} is outside 1..={TOTAL_BYTES_MAX}",
        args.total_bytes
    );
    let hash = blobgen::write_large_file(&args.out, args.seed, args.total_bytes)
        .with_context(|| format!("write {}", args.out.display()))?;
    println!(
        "{}",
        serde_json::json!({
            "path": args.out,
            "bytes": args.total_bytes,
            "blake3": hash.to_hex().as_str(),
        })
    );
    Ok(())
}
