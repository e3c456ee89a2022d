//! `cargo xtask`: project automation that would otherwise be shell.
//!
//! - `cargo xtask ci`: fmt, clippy, tests, then the quick storage bench.
//! - `cargo xtask bench --list` / `cargo xtask bench storage [--quick]`.
//! - `cargo xtask chain-test`: the chain's fault matrix on 4 nodes in netns.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod agent_bin;
mod bench;
mod chain_net;
mod chain_relay;
mod chain_test;
mod ci;
mod http;
mod image;
mod process;
mod sim;
mod time;
mod vm;
mod vm_test;

#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Metanode project automation."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// fmt --check, clippy -D warnings, tests, then `bench storage --quick`.
    Ci,
    /// Run a benchmark with its peers, print a table, write perf/results/NAME.json + .png.
    Bench(BenchCmd),
    /// Build the appliance image into target/image/: kernel (cached), initramfs,
    /// signed UKI, GPT disk (raw, raw.zst, qcow2).
    Image(image::ImageArgs),
    /// Boot the image under QEMU with the serial console on this terminal.
    Vm(vm::VmArgs),
    /// The appliance's QEMU system tests (needs `cargo xtask image` first).
    VmTest(vm_test::VmTestArgs),
    /// The chain's deterministic simulator over many seeds (or replay one).
    Sim(sim::SimArgs),
    /// The chain's fault matrix on 4 agents in network namespaces (root):
    /// loss, proposer kill -9, partitions 2|2 and 3|1, heal, catch-up, light client,
    /// then 40±10 ms one-way delay (TUN relay), 3|1 under delay, delay + loss.
    ChainTest,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchCmd {
    /// List the benches and their systems.
    #[arg(long)]
    list: bool,
    #[command(subcommand)]
    which: Option<BenchName>,
}

#[derive(Debug, Subcommand)]
enum BenchName {
    /// Blob store: ours (library, HTTP) vs iroh-blobs, Helia, a flatfs-style baseline.
    Storage(bench::storage::StorageArgs),
    /// Appliance image: sizes and boot times vs Debian cloud kernel + busybox.
    Image(bench::image::ImageBenchArgs),
    /// Chain: 4 validators in netns over QUIC (root); published Besu/CometBFT figures.
    Chain(bench::chain::ChainBenchArgs),
    /// DockLock: spawn latency of a caged static no-op vs bubblewrap (root).
    Docklock(bench::docklock::DocklockBenchArgs),
    /// Traffic lights + HTTP Cage: XDP vs nftables, cage vs nginx (root).
    Cage(bench::cage::CageBenchArgs),
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory for builds run from `root`: `CARGO_TARGET_DIR` (a relative one is
/// relative to `root`, where xtask runs cargo) or `root/target`.
pub fn target_dir(root: &std::path::Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Ci => ci::run(),
        Command::Image(args) => image::build(&args).map(|_| ()),
        Command::Vm(args) => vm::run_interactive(&args),
        Command::VmTest(args) => vm_test::run(&args).map(|_| ()),
        Command::Sim(args) => sim::run(&args),
        Command::ChainTest => chain_test::run(),
        Command::Bench(BenchCmd { list: true, .. }) => {
            bench::print_list();
            Ok(())
        }
        Command::Bench(BenchCmd {
            which: Some(BenchName::Storage(args)),
            ..
        }) => bench::storage::run(&args).and_then(|summary| summary.ensure_no_failures()),
        Command::Bench(BenchCmd {
            which: Some(BenchName::Image(args)),
            ..
        }) => bench::image::run(&args),
        Command::Bench(BenchCmd {
            which: Some(BenchName::Chain(args)),
            ..
        }) => bench::chain::run(&args),
        Command::Bench(BenchCmd {
            which: Some(BenchName::Docklock(args)),
            ..
        }) => bench::docklock::run(&args),
        Command::Bench(BenchCmd {
            which: Some(BenchName::Cage(args)),
            ..
        }) => bench::cage::run(&args),
        Command::Bench(BenchCmd { which: None, .. }) => {
            bench::print_list();
            Err(anyhow::anyhow!(
                "name a bench (see the list above) or pass --list"
            ))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
