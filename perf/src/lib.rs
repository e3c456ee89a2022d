//! Shared pieces of the storage bench harnesses (see perf/README.md).
//!
//! Every system in `cargo xtask bench storage` is driven by a harness binary
//! that speaks the same protocol: same arguments, same pre-generated blobs,
//! same K-in-flight driver, same verification, one JSON line on stdout. A
//! harness is an implementation of [`runner::BlobStore`] plus a one-line
//! `main` calling [`runner::harness_main`].

pub mod args;
pub mod blobgen;
#[cfg(feature = "ours")]
pub mod ipfs;
pub mod latency;
pub mod report;
pub mod runner;

pub use args::{HarnessArgs, Workload};
pub use report::{GcOutcome, Report};
pub use runner::{
    BlobStore, CarExported, ChunkSink, UnixfsAdded, WorkloadError, harness_main, run_workload,
};

#[cfg(test)]
mod tests;
