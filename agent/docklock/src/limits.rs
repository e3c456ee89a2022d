//! Every bound DockLock enforces, in one place.
//!
//! A bundle is untrusted input: every list and string it carries is bounded here so a hostile
//! config.json cannot make the launcher allocate or loop without limit. Names carry their unit
//! last; relationships between bounds are checked at compile time below.

/// Largest config.json read. runc's default config is about 3 KiB; a real one with long env
/// lists stays far below this.
pub const CONFIG_SIZE_BYTES_MAX: u64 = 1024 * 1024;

/// Longest path (host or cage) accepted anywhere in a spec; Linux's PATH_MAX.
pub const PATH_BYTES_MAX: usize = 4096;

/// Most `process.args` entries, and the longest single argument.
pub const ARGS_COUNT_MAX: usize = 4096;
pub const ARG_BYTES_MAX: usize = 128 * 1024;

/// Most `process.env` entries, and the longest single `KEY=value`.
pub const ENV_COUNT_MAX: usize = 4096;
pub const ENV_ENTRY_BYTES_MAX: usize = 128 * 1024;

/// Most entries in `mounts`, and the most options on one mount.
pub const MOUNTS_COUNT_MAX: usize = 256;
pub const MOUNT_OPTIONS_COUNT_MAX: usize = 64;

/// Most entries in `linux.maskedPaths` and in `linux.readonlyPaths` (each).
pub const SPEC_PATHS_COUNT_MAX: usize = 256;

/// Most `process.user.additionalGids` (the kernel allows 65536; a workload needs a handful).
pub const ADDITIONAL_GIDS_COUNT_MAX: usize = 64;

/// Most `process.rlimits` entries (there are 16 resources; duplicates are refused).
pub const RLIMITS_COUNT_MAX: usize = 16;

/// Most lines in a uid_map / gid_map: the kernel's limit since Linux 4.15.
pub const ID_MAPPINGS_COUNT_MAX: usize = 340;

/// Most entries in `linux.namespaces` (eight kinds exist; duplicates are refused).
pub const NAMESPACES_COUNT_MAX: usize = 8;

/// Most annotations, and the longest key and value.
pub const ANNOTATIONS_COUNT_MAX: usize = 256;
pub const ANNOTATION_BYTES_MAX: usize = 4096;

/// Longest hostname: the kernel's __NEW_UTS_LEN.
pub const HOSTNAME_BYTES_MAX: usize = 64;

/// Most capability names in one capability set of `process.capabilities`.
pub const CAPABILITY_NAMES_COUNT_MAX: usize = 64;

/// Capabilities a workload may declare and keep. Docker's default set without CAP_MKNOD
/// (DockLock serves /dev itself and device nodes are an escape route) and without CAP_NET_RAW
/// (raw sockets are one of the escape probes). Everything else is refused at load time, and
/// everything not declared is dropped from every set before execve.
pub const CAPABILITIES_KEEPABLE: &[&str] = &[
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// Largest memory limit a spec may ask for (1 TiB): larger values are almost certainly unit
/// mistakes (KiB read as bytes upside down) and would disable the limit in practice.
pub const MEMORY_LIMIT_BYTES_MAX: u64 = 1 << 40;
/// Smallest memory limit: below this the cage cannot even exec a static binary.
pub const MEMORY_LIMIT_BYTES_MIN: u64 = 1024 * 1024;

/// Largest pids limit a spec may ask for (the kernel's PID_MAX_LIMIT).
pub const PIDS_LIMIT_MAX: u64 = 4 * 1024 * 1024;

/// CFS period bounds in microseconds (the kernel accepts 1 ms ..= 1 s).
pub const CPU_PERIOD_US_MIN: u64 = 1_000;
pub const CPU_PERIOD_US_MAX: u64 = 1_000_000;
/// Smallest CFS quota in microseconds (the kernel's minimum).
pub const CPU_QUOTA_US_MIN: u64 = 1_000;
/// Largest CFS quota in microseconds (the cgroup v2 cpu.max bound is far higher; an hour per
/// period is already "unlimited" for any period above).
pub const CPU_QUOTA_US_MAX: u64 = 3_600_000_000;

/// cgroup v1 cpu.shares bounds (the kernel clamps to these).
pub const CPU_SHARES_MIN: u64 = 2;
pub const CPU_SHARES_MAX: u64 = 262_144;

/// blockIO.weight bounds as the OCI spec defines them (cgroup v1 blkio.weight).
pub const BLKIO_WEIGHT_MIN: u16 = 10;
pub const BLKIO_WEIGHT_MAX: u16 = 1000;

/// Defaults for the plain-executable mode, which has no spec to state limits.
pub const EXECUTABLE_MEMORY_LIMIT_BYTES: u64 = 256 * 1024 * 1024;
pub const EXECUTABLE_PIDS_LIMIT: u64 = 128;
/// Most declared inputs of one executable run, and the largest one copied into the cage.
pub const EXECUTABLE_INPUTS_COUNT_MAX: usize = 256;
pub const EXECUTABLE_INPUT_SIZE_BYTES_MAX: u64 = 1 << 30;
/// Most shared libraries copied into an executable's rootfs (transitively).
pub const EXECUTABLE_LIBRARIES_COUNT_MAX: usize = 256;
/// Largest ELF file (executable or library) parsed when assembling a rootfs.
pub const ELF_SIZE_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// Size of the tmpfs DockLock mounts at /dev when the spec does not mount one: it holds only
/// empty mount points and symlinks.
pub const DEV_TMPFS_SIZE_BYTES: u64 = 64 * 1024;

/// Pipe buffer asked for the seeded /dev/urandom FIFO, pre-filled before the cage starts and
/// kept full by the launcher's watch loop: a read of up to this many bytes returns whole, so a
/// workload that does not loop on short reads still sees the same bytes in every run (as long as
/// its reads do not outpace the top-ups). 64 KiB is Linux's default pipe size; pre-filling a megabyte cost
/// every spawn about a millisecond of ChaCha20 on a workload that may read 32 bytes.
pub const URANDOM_PIPE_SIZE_BYTES: usize = 64 * 1024;

/// Largest wall timeout a caller may set for one run (a day).
pub const WALL_TIMEOUT_MS_MAX: u64 = 24 * 3600 * 1000;

/// Most replay runs one `replay` call performs.
pub const REPLAY_RUNS_COUNT_MAX: u32 = 64;

/// Most violations kept per run (the supervisor keeps counting past this, the record keeps the
/// first ones): a workload looping on a denied syscall must not grow the record without bound.
pub const VIOLATIONS_COUNT_MAX: usize = 1024;

/// Largest logical start time: the kernel refuses time-namespace offsets that put a clock past
/// KTIME_SEC_MAX / 2 seconds; stay well inside it (about 136 years).
pub const LOGICAL_TIME_NS_MAX: u64 = (u32::MAX as u64) * 1_000_000_000;

const _: () = assert!(MEMORY_LIMIT_BYTES_MIN < MEMORY_LIMIT_BYTES_MAX);
const _: () = assert!(EXECUTABLE_MEMORY_LIMIT_BYTES >= MEMORY_LIMIT_BYTES_MIN);
const _: () = assert!(EXECUTABLE_MEMORY_LIMIT_BYTES <= MEMORY_LIMIT_BYTES_MAX);
const _: () = assert!(EXECUTABLE_PIDS_LIMIT <= PIDS_LIMIT_MAX);
const _: () = assert!(CPU_PERIOD_US_MIN < CPU_PERIOD_US_MAX);
const _: () = assert!(CPU_QUOTA_US_MIN <= CPU_PERIOD_US_MAX);
const _: () = assert!(BLKIO_WEIGHT_MIN < BLKIO_WEIGHT_MAX);
const _: () = assert!(CPU_SHARES_MIN < CPU_SHARES_MAX);
const _: () = assert!(RLIMITS_COUNT_MAX >= 16);
const _: () = assert!(NAMESPACES_COUNT_MAX >= 8);
// KTIME_SEC_MAX / 2 is about 4.6e9 s; the logical start plus a long run must stay below it.
const _: () = assert!(
    LOGICAL_TIME_NS_MAX / 1_000_000_000 + 365 * 24 * 3600 < (i64::MAX as u64 / 1_000_000_000) / 2
);

/// Memory limit of a cage whose spec sets none.
pub const DEFAULT_MEMORY_LIMIT_BYTES: u64 = 1024 * 1024 * 1024;
/// Pids limit of a cage whose spec sets none.
pub const DEFAULT_PIDS_LIMIT: u64 = 1024;
const _: () = assert!(DEFAULT_MEMORY_LIMIT_BYTES >= MEMORY_LIMIT_BYTES_MIN);
const _: () = assert!(DEFAULT_MEMORY_LIMIT_BYTES <= MEMORY_LIMIT_BYTES_MAX);
const _: () = assert!(DEFAULT_PIDS_LIMIT <= PIDS_LIMIT_MAX);

/// First host uid/gid of the default user-namespace mapping (cage ids 0..[`CAGE_ID_RANGE_SIZE`]
/// map to `CAGE_HOST_ID_BASE..CAGE_HOST_ID_BASE + CAGE_ID_RANGE_SIZE`), used whenever a spec
/// declares no mappings. 0x7000_0000 (1879048192) starts the range systemd documents as unused
/// (docs/UIDS-GIDS.md: 0x70000000…0x7FFDFFFF, after the 0x00080000…0x6FFFFFFF container ranges
/// of systemd-nspawn and before the 0x7FFE0000 foreign-image range); it is far above regular
/// users (1000…60000), systemd's dynamic users (61184…65519) and shadow's default subuid
/// allocation (login.defs SUB_UID_MIN 100000 … SUB_UID_MAX 600100000). So cage root owns no host
/// file except what the launcher hands it (/out), and every cage id is unprivileged on the host.
pub const CAGE_HOST_ID_BASE: u32 = 0x7000_0000;
/// How many ids the default mapping gives the cage: the 16-bit id space images expect
/// (nobody = 65534 exists inside).
pub const CAGE_ID_RANGE_SIZE: u32 = 65_536;
const _: () = assert!(CAGE_HOST_ID_BASE as u64 + CAGE_ID_RANGE_SIZE as u64 <= 0x7FFE_0000);
const _: () = assert!(CAGE_HOST_ID_BASE > 600_100_000);

/// Read buffer of the relay that copies the workload's stdout/stderr pipes to their
/// destination (the caller's stdout/stderr or a capture file).
pub const STDIO_RELAY_BUFFER_BYTES: usize = 64 * 1024;
/// Most bytes relayed per stream; past this the relay keeps draining (so the workload never
/// blocks on a full pipe) but discards, and the outcome says so.
pub const STDIO_RELAY_BYTES_MAX: u64 = 1 << 30;

/// Bounds of the post-run scan of /out for setuid/setgid files and device nodes (the witness
/// walk that hashes the outputs has the same order of bounds).
pub const OUT_SCAN_ENTRIES_COUNT_MAX: usize = 1_000_000;
pub const OUT_SCAN_DEPTH_MAX: usize = 128;
/// Most output violations kept in a run's outcome (the rest are counted).
pub const OUT_VIOLATIONS_COUNT_MAX: usize = 1024;

/// Landlock denials read back from the audit log (see `metanode_confine::landlock_audit`).
/// Audit records the launcher reads per run, whoever caused them (the read-log group carries the
/// whole host's records); past either bound it stops reading and the outcome says so.
pub const AUDIT_RECORDS_COUNT_MAX: u64 = 65_536;
pub const AUDIT_RECORDS_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Most Landlock denials kept per run (the rest are counted), like [`VIOLATIONS_COUNT_MAX`].
pub const LANDLOCK_DENIALS_COUNT_MAX: usize = 1024;
/// Longest path (or address) kept in one denial; longer ones keep their start and their length.
/// With the blocked rights in front it stays inside the record's access text bound.
pub const LANDLOCK_DENIAL_OBJECT_BYTES_MAX: usize = 192;
/// Socket queue of the audit listener: every record the host logs between the fork and the start
/// of the reader thread waits there (about 150 bytes each).
pub const AUDIT_RECEIVE_BUFFER_BYTES: usize = 1024 * 1024;
/// How long the launcher waits, after the workload ended, for its drain marker to come back
/// through the audit queue (behind every denial the workload caused); normally well under a
/// millisecond, longer only when kauditd is backlogged.
pub const AUDIT_DRAIN_TIMEOUT_MS: u64 = 500;
/// How often the audit reader re-checks its drain deadline while nothing arrives.
pub const AUDIT_POLL_INTERVAL_MS: u64 = 50;
const _: () = assert!(
    LANDLOCK_DENIAL_OBJECT_BYTES_MAX + 48
        <= metanode_witness::limits::LANDLOCK_ACCESS_LEN_BYTES_MAX as usize
);
const _: () = assert!(AUDIT_POLL_INTERVAL_MS <= AUDIT_DRAIN_TIMEOUT_MS);
/// How long a run waits for the threads of an earlier run in the same process to finish exiting
/// before refusing the process as multi-threaded (a joined thread leaves the thread group a
/// moment after its join returns; replay runs several cages in one process).
pub const THREAD_EXIT_WAIT_MS: u64 = 100;
/// How often that wait re-reads the thread count.
pub const THREAD_EXIT_POLL_INTERVAL_US: u64 = 100;
const _: () = assert!(THREAD_EXIT_POLL_INTERVAL_US <= THREAD_EXIT_WAIT_MS * 1000);
