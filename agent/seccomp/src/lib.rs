//! DockLock's seccomp-bpf confinement: an allowlist policy kept as reviewed data
//! (`policy/seccomp.yaml`, a reason per rule), compiled with seccompiler, with refused calls
//! sent to a supervisor through seccomp user notification. seccompiler's output then goes
//! through two passes that change no answer (jump threading, and a binary search on the syscall
//! number in front of its linear chain), which cut the install from ~0.86 ms to ~0.1 ms.
//!
//! Flow: [`CompiledSeccomp::builtin`] (the reviewed policy, compiled at build time by build.rs),
//! or [`SeccompPolicy::parse`] → [`SeccompPolicy::compile`] for any other policy →
//! [`CompiledSeccomp::install`] in the confined process, which returns the listener → hand the
//! listener to the supervising process → one of:
//! * [`supervise_with_wall_clock`] (DockLock): wall-clock reads (`clock_gettime` on
//!   CLOCK_REALTIME / REALTIME_COARSE / TAI, `gettimeofday`, `time`) are answered from a logical
//!   clock ([`WallClock`]: the k-th read returns `logical_time_ns + k * step_ns`); every other
//!   notification is recorded as a [`Violation`] and answered EPERM;
//! * [`supervise`]: records and refuses everything;
//! * [`supervise_with`]: any handler returning a [`Reply`] (emulate, or deny with an errno).
//!
//! Each returns once the last confined task has exited. [`answer_ready`] is one step of them, for
//! a caller that polls the listener in its own event loop (DockLock's launcher).
//!
//! The wall-clock reads reach the supervisor only as syscalls: the confined program's vDSO must
//! be hidden (metanode_confine::follow_cage rewrites AT_SYSINFO_EHDR at every exec), or libc
//! reads the host's clock in user space. The policy refuses CLONE_UNTRACED, which would start a
//! process that tracer does not follow.
//!
//! Results are written into the caller's memory through `/proc/<pid>/mem`, opened before
//! SECCOMP_IOCTL_NOTIF_ID_VALID confirms the caller (see [`ProcessMemory`]): a pid-based
//! `process_vm_writev` could hit an unrelated process that reused the pid of a killed caller.
//!
//! Reported vs silent: every call the allowlist does not allow goes to the supervisor (including
//! calls refused by a `deny ... when` carve-out, every x32 syscall number and every call through a
//! foreign ABI such as `int 0x80`); only the `deny` rules with an errno other than EPERM (clone3
//! and getrandom → ENOSYS) are answered by the kernel directly and not reported, because they are
//! the expected way to make libc fall back.

mod builtin;
mod compile;
mod memory;
mod policy;
mod supervise;
mod wall_clock;

#[cfg(test)]
mod bpf_eval;

pub use compile::{CompiledSeccomp, InstallError};
pub use memory::{CallerMemory, MemoryError, ProcessMemory};
pub use policy::{PolicyError, SeccompPolicy};
pub use supervise::{
    ListenerState, Notification, Reply, SuperviseError, Violation, answer_ready, supervise,
    supervise_with,
};
pub use wall_clock::{
    ClockFailure, TAI_OFFSET_S_DEFAULT, WALL_CLOCK_STEP_NS_DEFAULT, WallClock,
    supervise_with_wall_clock,
};
