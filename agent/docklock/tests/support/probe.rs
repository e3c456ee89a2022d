//! The static `docklock-probe` for tests that run real cages. Shared by
//! agent/docklock/tests/cage.rs and agent/metanode/tests/docklock_escape.rs (included with
//! `#[path]`), so the nested build command lives in one place.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The workspace root: both including crates sit two levels below it (agent/<crate>).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the including crate sits two levels below the workspace")
        .to_path_buf()
}

/// Builds the static probe once per test run, with a nested cargo into target/docklock-probe so
/// it does not wait on the outer cargo's build-directory lock.
pub fn probe_binary() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let root = workspace_root();
        let target = root.join("target/docklock-probe");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = std::process::Command::new(cargo)
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args([
                "build",
                "--release",
                "--target",
                "x86_64-unknown-linux-gnu",
                "-p",
                "metanode-docklock-probe",
            ])
            .status()
            .expect("run cargo build for the probe");
        assert!(status.success(), "building docklock-probe failed");
        target.join("x86_64-unknown-linux-gnu/release/docklock-probe")
    })
}
