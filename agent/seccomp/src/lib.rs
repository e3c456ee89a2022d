//! DockLock's seccomp-bpf confinement: an allowlist policy kept as reviewed data
//! (`policy/seccomp.yaml`, a reason per rule), compiled with seccompiler, with refused calls
//! reported to a supervisor through seccomp user notification.
//!
//! Flow: [`SeccompPolicy::builtin`] (or [`SeccompPolicy::parse`]) → [`SeccompPolicy::compile`] →
//! [`CompiledSeccomp::install`] in the confined process, which returns the listener → hand the
//! listener to the supervising process → [`supervise`] records each [`Violation`] and answers
//! EPERM until the last confined task has exited.
//!
//! Reported vs silent: every call the allowlist does not allow is reported (including calls
//! refused by a `deny ... when` carve-out, every x32 syscall number and every call through a
//! foreign ABI such as `int 0x80`); only the `deny` rules with an errno other than EPERM (clone3
//! and getrandom → ENOSYS) are answered by the kernel directly and not reported, because they are
//! the expected way to make libc fall back.

mod compile;
mod policy;
mod supervise;

#[cfg(test)]
mod bpf_eval;

pub use compile::{CompiledSeccomp, InstallError};
pub use policy::{PolicyError, SeccompPolicy};
pub use supervise::{SuperviseError, Violation, supervise};
