//! The one release build of the agent binary. The image ships it as /init; chain-test's nodes,
//! vm-test's operator CLI and the benches run the same file. Two reasons for one build: tests and
//! benches exercise exactly what ships (static glibc, stripped), and a cold CI compiles the agent
//! and its dependency tree once instead of twice (a host release build and a static one took
//! about 10 minutes each on the 2-core CI machine).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

/// An explicit target: RUSTFLAGS then apply to the agent only, not to build scripts and proc
/// macros (which cannot be crt-static).
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Every caller passes exactly these flags: a different RUSTFLAGS makes cargo rebuild the whole
/// tree.
const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static -C strip=symbols";

/// Where [`build_static`] leaves the binary (in `CARGO_TARGET_DIR` when that is set).
pub fn static_path(root: &Path) -> PathBuf {
    crate::target_dir(root)
        .join(STATIC_TARGET)
        .join("release/metanode")
}

/// Builds the static, stripped `metanode` (crt-static, release) and returns its path.
pub fn build_static(root: &Path) -> anyhow::Result<PathBuf> {
    eprintln!("==> building static metanode (crt-static, {STATIC_TARGET}, release)");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "metanode",
            "--bin",
            "metanode",
            "--target",
            STATIC_TARGET,
        ])
        .env("RUSTFLAGS", STATIC_RUSTFLAGS)
        .status()
        .context("run cargo build")?;
    anyhow::ensure!(status.success(), "building the static metanode failed");
    let bin = static_path(root);
    anyhow::ensure!(bin.exists(), "cargo built no {}", bin.display());
    Ok(bin)
}
