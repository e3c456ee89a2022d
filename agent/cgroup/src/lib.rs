//! cgroup v2 (and per-controller v1 fallback on hybrid hosts) limits and accounting for DockLock
//! cages, over a filesystem seam testable on a temp dir.
//!
//! - [`CgroupLayout::discover`] reads /proc/self/mountinfo and /proc/self/cgroup: each
//!   controller is used from cgroup v2 when our v2 cgroup offers it, else from its v1 hierarchy.
//! - [`CageCgroup::create`] makes `<our cgroup>/metanode-docklock/<name>` in every hierarchy it
//!   needs (enabling v2 controllers in the parents' `cgroup.subtree_control`), writes the
//!   limits, and fails naming the controller when a limit cannot be applied.
//! - [`CageCgroup::usage`] reads peaks and event counters; [`CageCgroup::mode`] says which
//!   version each controller used, with a one-byte code for receipts.
//! - [`CageCgroup::kill_and_remove`] kills (v2 `cgroup.kill`, else v1 freezer + SIGKILL, else
//!   SIGKILL loop), waits until empty, removes the directories. Drop does the same.
//!
//! Everything touching the kernel goes through [`CgroupFs`]; [`fake::DirFs`] emulates it on a
//! temp dir for tests without root.

mod cage;
pub mod constants;
pub mod fake;
mod fs;
mod layout;
mod mode;
mod name;
mod parse;

pub use cage::{
    CageCgroup, CageDir, CgroupLimits, CgroupUsage, CreateError, JoinError, KillMethod,
    PreparedLeave, RemoveError, UsageError, cpu_weight_to_shares, io_weight_to_blkio,
};
pub use fs::{CgroupFs, HostFs, OpenedFile};
pub use layout::{CgroupLayout, Controller, LayoutError, Placement};
pub use mode::{CgroupMode, CgroupModeKind, CgroupVersion, ModeCodeError};
pub use name::{NameError, validate_name};

/// Any error of this crate, for callers that handle them alike.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Remove(#[from] RemoveError),
}
