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

/// Held by the unit tests that fork and by those that open a store: a forked child inherits the
/// store's flock'd LOCK fd, so a store test running beside a fork (libtest runs tests on
/// threads) could find its own data dir "in use by another process" until the child exits.
#[cfg(test)]
pub(crate) static TEST_FORK_GUARD: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
pub(crate) fn test_fork_guard() -> std::sync::MutexGuard<'static, ()> {
    TEST_FORK_GUARD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
