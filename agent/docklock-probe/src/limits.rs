//! Every bound and default of the probes, in one place.

/// fork-bomb: forks counted before the probe gives up and reports an escape.
pub const FORK_COUNT_MAX_DEFAULT: u64 = 10_000;
/// fork-bomb: `--max` above this would only hide a missing pids limit behind a longer run.
pub const FORK_COUNT_MAX_LIMIT: u64 = 1_000_000;

/// memory-bomb: each step maps and touches this much.
pub const MEMORY_STEP_MIB: u64 = 16;
pub const MEMORY_MIB_MAX_DEFAULT: u64 = 4096;
pub const MEMORY_MIB_MAX_LIMIT: u64 = 1 << 20;

/// disk-fill: one write(2) call.
pub const DISK_WRITE_BYTES: usize = 1 << 20;
pub const DISK_MIB_MAX_DEFAULT: u64 = 2048;
pub const DISK_MIB_MAX_LIMIT: u64 = 1 << 20;

/// leaked-fd: fds swept with fcntl(F_GETFD) besides the /proc/self/fd listing.
pub const FD_SWEEP_FIRST: i32 = 3;
pub const FD_SWEEP_LAST: i32 = 64;

/// read-host-file: bytes read from each path when looking for the marker.
pub const READ_BYTES_MAX: usize = 1 << 20;

/// egress: how long a TCP connect may take before it counts as dropped.
pub const EGRESS_CONNECT_TIMEOUT_MS: u64 = 3000;

/// write-output: files written by one run.
pub const OUTPUT_FILES_COUNT_DEFAULT: u64 = 1;
pub const OUTPUT_FILES_COUNT_MAX: u64 = 10_000;

/// random: bytes asked of getrandom(2) and of /dev/urandom.
pub const RANDOM_BYTES: usize = 32;

/// chroot-escape: chdir("..") calls after chroot; deeper than any real directory tree.
pub const CHROOT_DOTDOT_COUNT: u32 = 256;

/// Pids listed or swept from /proc by ptrace-host and signal-host.
pub const VISIBLE_PIDS_MAX: usize = 4096;

const _: () = assert!(FD_SWEEP_FIRST > 2 && FD_SWEEP_FIRST <= FD_SWEEP_LAST);
const _: () = assert!(FORK_COUNT_MAX_DEFAULT <= FORK_COUNT_MAX_LIMIT);
const _: () = assert!(MEMORY_MIB_MAX_DEFAULT <= MEMORY_MIB_MAX_LIMIT);
const _: () = assert!(MEMORY_MIB_MAX_DEFAULT.is_multiple_of(MEMORY_STEP_MIB));
const _: () = assert!(DISK_MIB_MAX_DEFAULT <= DISK_MIB_MAX_LIMIT);
const _: () = assert!(
    DISK_WRITE_BYTES == 1 << 20,
    "disk-fill counts MiB by whole writes"
);
const _: () = assert!(OUTPUT_FILES_COUNT_DEFAULT <= OUTPUT_FILES_COUNT_MAX);
