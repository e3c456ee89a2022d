//! `cargo xtask ci`: the checks CI runs, in order, each with a header and
//! its duration; the first failure stops the run.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::bench::storage::{self, StorageArgs};
use crate::process::run_inherited;
use crate::workspace_root;

type StepFn = Box<dyn Fn(&Path) -> anyhow::Result<()>>;

fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root).args(args);
    anyhow::ensure!(run_inherited(&mut cmd)?, "cargo {} failed", args.join(" "));
    Ok(())
}

fn steps() -> Vec<(&'static str, StepFn)> {
    vec![
        (
            "cargo fmt --all -- --check",
            Box::new(|root| cargo(root, &["fmt", "--all", "--", "--check"])),
        ),
        (
            "cargo fmt --check (perf/iroh-harness, its own workspace)",
            Box::new(|root| {
                cargo(
                    root,
                    &[
                        "fmt",
                        "--manifest-path",
                        "perf/iroh-harness/Cargo.toml",
                        "--",
                        "--check",
                    ],
                )
            }),
        ),
        (
            "cargo clippy --workspace --all-targets -- -D warnings",
            Box::new(|root| {
                cargo(
                    root,
                    &[
                        "clippy",
                        "--workspace",
                        "--all-targets",
                        "--",
                        "-D",
                        "warnings",
                    ],
                )
            }),
        ),
        (
            "cargo clippy -- -D warnings (perf/iroh-harness, cached target dir)",
            Box::new(|root| {
                let mut cmd =
                    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
                cmd.current_dir(root)
                    .args(["clippy", "--release", "--manifest-path"])
                    .arg(root.join("perf/iroh-harness/Cargo.toml"))
                    .args(["--", "-D", "warnings"])
                    .env("CARGO_TARGET_DIR", storage::iroh_target_dir());
                anyhow::ensure!(
                    run_inherited(&mut cmd)?,
                    "clippy of perf/iroh-harness failed"
                );
                Ok(())
            }),
        ),
        (
            "npm ci (hw-tests/ipfs-interop: the IPFS software the interop tests drive)",
            Box::new(|root| {
                let dir = root.join("hw-tests/ipfs-interop");
                let mut cmd = Command::new("npm");
                cmd.current_dir(&dir)
                    .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
                anyhow::ensure!(
                    run_inherited(&mut cmd)?,
                    "npm ci in {} failed",
                    dir.display()
                );
                Ok(())
            }),
        ),
        (
            "cargo test --workspace",
            Box::new(|root| cargo(root, &["test", "--workspace"])),
        ),
        (
            "cargo xtask sim --seeds 1000 (chain simulator: faults, crashes, Byzantine nodes)",
            Box::new(|_| {
                crate::sim::run(&crate::sim::SimArgs {
                    seeds: 1000,
                    first: 0,
                    seed: None,
                })
            }),
        ),
        (
            "cargo xtask chain-test (4 agents in netns over QUIC: loss, proposer kill -9, partitions, heal, light client, 40±10 ms delay, delay + loss)",
            Box::new(|_| crate::chain_test::run()),
        ),
        (
            "cargo xtask image (kernel cached by its inputs in $METANODE_CACHE_DIR/kernel)",
            Box::new(|_| {
                crate::image::build(&crate::image::ImageArgs {
                    out: None,
                    keys: None,
                    kernel_only: false,
                })
                .map(|_| ())
            }),
        ),
        (
            "cargo xtask vm-test (QEMU boots of the image: direct, UEFI, Secure Boot, update, config, DockLock, traffic)",
            Box::new(|_| {
                crate::vm_test::run(&crate::vm_test::VmTestArgs {
                    only: Vec::new(),
                    image: None,
                    api_port: 17878,
                })
                .map(|_| ())
            }),
        ),
        (
            "cargo xtask bench storage --quick",
            Box::new(|_| {
                let args = StorageArgs {
                    quick: true,
                    dir: storage::DEFAULT_DIR.into(),
                    systems: Vec::new(),
                    workloads: Vec::new(),
                    timeout_s: None,
                    no_build: false,
                };
                let summary = storage::run(&args)?;
                summary.ensure_no_failures()
            }),
        ),
        (
            "cargo xtask bench cage --quick (XDP vs nftables, cage vs nginx, signed requests per core)",
            Box::new(|_| {
                crate::bench::cage::run(&crate::bench::cage::CageBenchArgs {
                    quick: true,
                    only: Vec::new(),
                })
            }),
        ),
    ]
}

/// Free space under the checkout, in GiB, or None when statvfs fails. Printed
/// beside every step because a full disk is the most confusing CI failure
/// (it surfaces as a linker bus error).
fn free_disk_gib(root: &Path) -> Option<f64> {
    let st = rustix::fs::statvfs(root).ok()?;
    Some(st.f_bavail as f64 * st.f_frsize as f64 / (1u64 << 30) as f64)
}

fn disk_note(root: &Path) -> String {
    free_disk_gib(root).map_or_else(
        || "free disk unknown".to_string(),
        |g| format!("{g:.1} GiB free"),
    )
}

pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "note: not running as root; CI runs as root and tests that need it may skip or fail here"
        );
    }
    let steps = steps();
    let total = steps.len();
    let started = Instant::now();
    let mut done = Vec::new();
    for (i, (title, step)) in steps.iter().enumerate() {
        eprintln!("\n==> [{}/{total}] {title} ({})", i + 1, disk_note(&root));
        let t = Instant::now();
        let result = step(&root);
        let secs = t.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                eprintln!("<== [{}/{total}] ok in {secs:.1} s: {title}", i + 1);
                done.push((*title, secs));
            }
            Err(e) => {
                eprintln!(
                    "<== [{}/{total}] FAILED after {secs:.1} s: {title} ({})",
                    i + 1,
                    disk_note(&root)
                );
                return Err(e.context(format!("ci step {title:?} failed")));
            }
        }
    }
    eprintln!("\nci passed in {:.0} s:", started.elapsed().as_secs_f64());
    for (title, secs) in done {
        eprintln!("  {secs:>7.1} s  {title}");
    }
    Ok(())
}
