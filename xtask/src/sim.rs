//! `cargo xtask sim`: the chain's deterministic simulator, built with
//! optimizations (a seed runs the real engine, signatures and all, and CI
//! runs a thousand of them).

use std::process::Command;

use clap::Args;

use crate::process::run_inherited;

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Number of seeds to run (CI runs 1000; a soak runs more).
    #[arg(long, default_value_t = 1000)]
    pub seeds: u64,
    /// First seed of the range.
    #[arg(long, default_value_t = 0)]
    pub first: u64,
    /// Replay exactly one seed, printing its scenario and report.
    #[arg(long, conflicts_with_all = ["seeds", "first"])]
    pub seed: Option<u64>,
}

pub fn run(args: &SimArgs) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(&root).args([
        "run",
        "--quiet",
        "--release",
        "--package",
        "metanode-chain-sim",
        "--bin",
        "metanode-sim",
        "--",
    ]);
    match args.seed {
        Some(seed) => {
            cmd.args(["--seed", &seed.to_string()]);
        }
        None => {
            cmd.args([
                "--seeds",
                &args.seeds.to_string(),
                "--first",
                &args.first.to_string(),
            ]);
        }
    }
    anyhow::ensure!(
        run_inherited(&mut cmd)?,
        "the chain simulator reported failures"
    );
    Ok(())
}
