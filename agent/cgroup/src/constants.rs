//! Every bound of the crate, in one place.

/// Directory under the agent's own cgroup that holds one child cgroup per cage. One shared
/// parent keeps cages out of the agent's own cgroup and lets v2 enable controllers once.
pub const CAGES_DIR_NAME: &str = "metanode-docklock";

/// Longest cage name. Names become directory names in every hierarchy; a short bound keeps
/// error messages and paths readable and far below NAME_MAX (255).
pub const CAGE_NAME_LEN_BYTES_MAX: usize = 64;

/// Smallest memory limit accepted. Below this not even a static binary can exec; a value this
/// small is far likelier a unit mistake (KiB for bytes) than a wish.
pub const MEMORY_MAX_BYTES_MIN: u64 = 1024 * 1024;

/// The kernel's PID_MAX_LIMIT on 64-bit: a pids.max above it cannot mean anything.
pub const PIDS_MAX_LIMIT: u64 = 4 * 1024 * 1024;

/// CFS bandwidth bounds from the kernel (kernel/sched/core.c: min_cfs_quota_period = 1 ms,
/// max_cfs_quota_period = 1 s, quotas below 1 ms are refused).
pub const CPU_PERIOD_US_MIN: u64 = 1_000;
pub const CPU_PERIOD_US_MAX: u64 = 1_000_000;
pub const CPU_QUOTA_US_MIN: u64 = 1_000;
/// The kernel's default period, used when only a quota is given (as cpu.max does).
pub const CPU_PERIOD_US_DEFAULT: u64 = 100_000;

/// cgroup v2 cpu.weight and io.weight range (the units of `CgroupLimits`).
pub const WEIGHT_MIN: u64 = 1;
pub const WEIGHT_MAX: u64 = 10_000;

/// cgroup v1 cpu.shares range the v2 weight is mapped onto (runc's conversion).
pub const CPU_SHARES_MIN: u64 = 2;
pub const CPU_SHARES_MAX: u64 = 262_144;

/// cgroup v1 blkio weight range (also what runc writes to the BFQ weight files).
pub const BLKIO_WEIGHT_MIN: u64 = 10;
pub const BLKIO_WEIGHT_MAX: u64 = 1_000;

/// Largest cgroup file we read. Counters are a few hundred bytes; cgroup.procs of a cage is
/// bounded by its pids limit (7 bytes per pid), so 1 MiB covers ~150k tasks.
pub const CGROUP_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// How long removal waits for the cage's tasks to die after SIGKILL / cgroup.kill. Dying tasks
/// finish within milliseconds unless stuck in uninterruptible sleep; then we report, not hang.
pub const KILL_WAIT_MS_MAX: u64 = 5_000;
/// How long removal waits for the v1 freezer to report FROZEN before killing anyway.
pub const FREEZE_WAIT_MS_MAX: u64 = 1_000;
/// Poll interval while waiting for the kernel (freezer state, cgroup.procs emptying, rmdir).
pub const POLL_INTERVAL_MS: u64 = 2;

/// At most this many pids are listed in an error message.
pub const PIDS_IN_MESSAGE_COUNT_MAX: usize = 8;

const _: () = assert!(CPU_PERIOD_US_MIN <= CPU_PERIOD_US_DEFAULT);
const _: () = assert!(CPU_PERIOD_US_DEFAULT <= CPU_PERIOD_US_MAX);
const _: () = assert!(CPU_QUOTA_US_MIN >= CPU_PERIOD_US_MIN);
const _: () = assert!(WEIGHT_MIN < WEIGHT_MAX && WEIGHT_MAX <= u16::MAX as u64);
const _: () = assert!(CPU_SHARES_MIN < CPU_SHARES_MAX);
const _: () = assert!(BLKIO_WEIGHT_MIN < BLKIO_WEIGHT_MAX);
const _: () = assert!(POLL_INTERVAL_MS > 0 && POLL_INTERVAL_MS <= FREEZE_WAIT_MS_MAX);
const _: () = assert!(FREEZE_WAIT_MS_MAX <= KILL_WAIT_MS_MAX);
// CAGES_DIR_NAME + '/' + name must stay a short relative path.
const _: () = assert!(CAGES_DIR_NAME.len() + 1 + CAGE_NAME_LEN_BYTES_MAX < 255);

/// The kernel's largest CFS quota: MAX_BW in kernel/sched/sched.h is 2^44 - 1 microseconds.
pub const CPU_QUOTA_US_MAX: u64 = (1 << 44) - 1;
const _: () = assert!(CPU_QUOTA_US_MIN < CPU_QUOTA_US_MAX);
