//! DockLock: runs an OCI runtime-spec bundle or a plain executable in a determinism cage
//! (namespaces, pivot_root, cgroups, seccomp, landlock), with seeded randomness, a virtual clock
//! and a signed witness record.

pub mod cage;
pub mod cli;
pub mod executable;
mod host;
pub mod limits;
pub mod replay;
mod rootfs;
pub mod spec;
pub mod store_inputs;
mod watch;
pub mod witness;

pub use spec::{CageSpec, SpecError};

#[cfg(test)]
mod spec_tests;
