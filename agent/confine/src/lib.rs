//! Process confinement steps applied just before exec: landlock (filesystem, TCP, scopes) with the
//! achieved status, capability dropping, no_new_privs, TSC denial, closing undeclared fds; and the
//! cage's tracer, which hides the vDSO from every exec'd program so clock reads become syscalls
//! that the seccomp supervisor can answer from the logical clock.
//!
//! Every function here acts on the *calling thread* (capabilities, landlock, no_new_privs, the TSC
//! flag and the parent-death signal are per-thread kernel state) and is meant for the
//! single-threaded workload process of a cage, after `pivot_root` and just before `execve`.
//! Everything applied here survives `execve` and is inherited by every descendant (except the
//! parent-death signal, which children do not inherit); none of it can be undone.
//!
//! Suggested order (the DockLock launcher's): [`trace_me`] (or the parent's [`seize_for_cage`]),
//! [`close_fds_except`], [`drop_capabilities`], [`set_no_new_privs`], [`restrict_landlock`], then
//! seccomp, then `execve`. `ptrace` must be set up before seccomp, whose policy refuses it.
//! [`deny_tsc`] only under [`follow_cage`] with a [`VirtualTsc`], which answers the reads (glibc's
//! dynamic loader reads the TSC at start-up, so an unanswered denial kills dynamic programs).
//!
//! What Landlock refused is read back from the kernel's audit log by [`landlock_audit`] (in the
//! launcher, not the confined process).
//!
//! The tracer side ([`follow_cage`], [`hide_vdso_once`], [`hide_vdso_at_exec_stop`]) runs in the
//! process that forked the workload; see the [`vdso`] module for why and how.

mod cage_trace;
mod capabilities;
mod fds;
pub mod landlock_audit;
mod landlock_rules;
mod prctl;
mod tracee;
pub mod tsc;
pub mod vdso;

pub use cage_trace::{
    Attach, CageTrace, HideFailure, TraceError, follow_cage, hide_vdso_once, seize_for_cage,
};
pub use capabilities::{CapDropError, CapParseError, CapSet, drop_capabilities};
pub use fds::{close_fds_except, close_fds_except_via_proc};
pub use landlock_audit::{
    AuditLimits, AuditOpenError, AuditSource, DenialCollection, DenialFollower, LandlockDenial,
    LandlockDenials, NetlinkAudit, collect_landlock_denials, forget_audit_enabled,
};
pub use landlock_rules::{
    LANDLOCK_ABI_TARGET, LandlockError, LandlockPlan, LandlockReport, LandlockStatus,
    restrict_landlock,
};
pub use prctl::{deny_tsc, set_no_new_privs, set_parent_death_signal};
pub use tsc::{VIRTUAL_TSC_STEP_TICKS, VirtualTsc};
pub use vdso::{VdsoError, VdsoHidden, hide_vdso_at_exec_stop, trace_me};

/// Re-exported so callers name errnos and signals with the same types these functions use.
pub use rustix::io::Errno;
pub use rustix::process::Signal;

/// Number of Linux capabilities this crate knows by name (`CAP_CHOWN` = 0 ..
/// `CAP_CHECKPOINT_RESTORE` = 40, unchanged through Linux 6.18). Capabilities a newer kernel adds
/// beyond these are still dropped from the bounding set; they just cannot be kept by name.
pub const CAPABILITY_COUNT: usize = 41;

/// Highest capability number the bounding-set loop probes (the kernel's sets are 64 bits wide).
const CAPABILITY_NUMBER_PROBE_MAX: u32 = 63;

const _: () = assert!(CAPABILITY_COUNT <= CAPABILITY_NUMBER_PROBE_MAX as usize + 1);
