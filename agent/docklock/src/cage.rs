//! The launcher: runs a [`CageSpec`] in a fresh set of namespaces under a cgroup, seccomp, landlock,
//! no capabilities and no_new_privs, with /dev/urandom served from the recorded seed and the
//! monotonic clocks starting at the logical time.
//!
//! Process model (why three processes): P (this process) forks A; A joins the cage cgroup (P writes
//! it before letting A go, so A's cgroup namespace is rooted at the cage), unshares the namespaces
//! and writes the time-namespace offsets — they can only be written before the first process enters
//! the namespace — then forks B, which is PID 1 of the new pid namespace and in the new time
//! namespace. B builds the root filesystem, confines itself and execs the workload. A relays B's wait
//! status to P through a pipe. B sends its seccomp user-notification listener to P over a unix
//! socket; P answers refused calls (EPERM) and records them as violations.
//!
//! Every cage has a user namespace, whatever the spec lists: root in the cage must not be root
//! on the host objects it reaches (a writable bind, /out, a writable rootfs). A unshares it
//! together with the others (so the pid, time, net, ipc and mount namespaces are owned by it and
//! proc, sysfs, mqueue and the clock offsets work inside), tells P, and waits while P writes the
//! uid/gid maps: the spec's (refused if any range holds host id 0), or, when the spec has none,
//! cage ids 0..65536 → host ids from [`crate::limits::CAGE_HOST_ID_BASE`]. A then becomes
//! uid/gid 0 of the namespace. Everything
//! after that (mounts, the tracer, the clocks) runs with capabilities of that namespace only.
//! cgroup limits are still written by P on the host side, before A unshares.
//!
//! Host paths are resolved once, in P, into fds (see [`crate::host`]): the rootfs, the bind
//! sources, /out and the seeded FIFO are cloned by P into detached mount trees (open_tree) that B
//! attaches (move_mount); no path string from the bundle is resolved after `CageSpec::load`.
//!
//! The above is the root caller's cage. An unprivileged caller's (see [`Privilege`]) differs:
//! its user namespace maps only the caller (setgroups denied); there is no cgroup (limits that
//! need one are refused by field, the pids limit is RLIMIT_NPROC, a pid namespace always), so
//! the cage is ended by killing A ([`kill_cage`]); B clones the host objects itself, in its own
//! mount namespace, from the objects P opened ([`Source::clone_tree`]), and removes the FIFO's
//! path; the rootfs must be read-only and /out empty, since the workload writes as the caller.
//! In both, A dies with P (parent-death signal) and the cage with A (PTRACE_O_EXITKILL), and B
//! starts a session of its own, out of the caller's process group.
//!
//! The workload's stdout/stderr are pipes that P relays to their destination (the caller's own
//! stdout/stderr or a capture file): a caller's terminal or file is never handed to the cage,
//! where it could be ioctl'ed, seeked or truncated. Every forked child ends in `_exit`; a panic
//! in one is reported through the error pipe by a hook installed in the child only.
//!
//! The caller must be single-threaded when `run` forks (checked): the children then may allocate
//! (glibc makes malloc usable after fork) and the set-up code stays ordinary Rust. The agent runs
//! cages through the `metanode docklock` subprocess.

use std::ffi::CString;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use metanode_cgroup::{CageCgroup, CgroupLayout, CgroupLimits, CgroupMode, CgroupUsage};
use metanode_confine::{
    AuditLimits, CapSet, DenialCollection, LandlockDenial, LandlockDenials, LandlockPlan,
    LandlockReport, NetlinkAudit,
};
use metanode_seccomp::{CompiledSeccomp, Violation};

use crate::rootfs::BindTree;
use crate::spec::{CageMount, CageSpec, IdMapping, MountKind, Namespaces, OpenedRoot, SpecError};

/// runc's default masked paths: kernel state a workload has no business reading.
pub const MASKED_PATHS_DEFAULT: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's default read-only paths.
pub const READONLY_PATHS_DEFAULT: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Where the randomness FIFO is made: a tmpfs, so creating and removing it costs no journal
/// work (the default temp dir is ext4 here). Falls back to the default temp dir without it.
const RANDOM_FIFO_PARENT: &str = "/dev/shm";
/// Longest error message a child sends back.
const CHILD_ERROR_BYTES_MAX: usize = 1024;

/// How a run is set up beyond the spec: the determinism inputs and the perturbations of a replay.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Names the cage's cgroup (validated by metanode-cgroup).
    pub cage_id: String,
    /// Seeds the ChaCha20 stream behind /dev/urandom and /dev/random.
    pub rng_seed: [u8; 32],
    /// CLOCK_MONOTONIC and CLOCK_BOOTTIME read this value when the workload starts.
    pub logical_time_ns: u64,
    /// Host directory bind-mounted read-write at /out (created if missing).
    pub out_dir: Option<PathBuf>,
    /// Kill the cage after this long.
    pub timeout: Option<Duration>,
    /// Discard the workload's stdout/stderr instead of inheriting them.
    pub quiet: bool,
    /// Capture the workload's stdout into this host file (created or truncated); wins over
    /// `quiet` for stdout.
    pub stdout_file: Option<PathBuf>,
    /// Capture the workload's stderr into this host file (may be the same path as stdout).
    pub stderr_file: Option<PathBuf>,
    /// Replay perturbation: pin the workload to this CPU.
    pub cpu: Option<usize>,
    /// Replay perturbation: disable ASLR (personality ADDR_NO_RANDOMIZE).
    pub no_aslr: bool,
    /// Replay perturbation: umask when the spec fixes none.
    pub umask: Option<u32>,
    /// Replay perturbation: shuffle the environment's order with this seed.
    pub env_shuffle_seed: Option<u64>,
    /// Replay perturbation: sleep this long before exec.
    pub pre_exec_delay: Option<Duration>,
    /// Host directories bind sources outside the bundle may come from (absolute; a source must
    /// resolve beneath one of them, or beneath the bundle directory). Empty: bundle only.
    pub bind_allow: Vec<PathBuf>,
}

impl RunOptions {
    pub fn new(cage_id: impl Into<String>) -> RunOptions {
        RunOptions {
            cage_id: cage_id.into(),
            rng_seed: [0; 32],
            logical_time_ns: 0,
            out_dir: None,
            timeout: None,
            quiet: false,
            stdout_file: None,
            stderr_file: None,
            cpu: None,
            no_aslr: false,
            umask: None,
            env_shuffle_seed: None,
            pre_exec_delay: None,
            bind_allow: Vec::new(),
        }
    }
}

/// How the workload ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CageExit {
    Exited(i32),
    Signaled(i32),
}

impl CageExit {
    /// The shell convention: the exit code, or 128 + the signal.
    pub fn code(self) -> i32 {
        match self {
            CageExit::Exited(code) => code,
            CageExit::Signaled(signal) => 128 + signal,
        }
    }
}

/// What a run produced, for the witness record and the operator.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    pub exit: CageExit,
    /// Syscalls the seccomp allowlist refused, in the order the supervisor received them.
    pub violations: Vec<Violation>,
    /// Refused syscalls past [`crate::limits::VIOLATIONS_COUNT_MAX`], counted but not kept.
    pub violations_dropped_count: u64,
    /// Accesses Landlock refused the cage, in audit serial order, read back from the kernel's
    /// audit log (see `metanode_confine::landlock_audit`).
    pub landlock_denials: Vec<LandlockDenial>,
    /// Denials past [`crate::limits::LANDLOCK_DENIALS_COUNT_MAX`], counted but not kept.
    pub landlock_denials_dropped_count: u64,
    /// Whether `landlock_denials` is complete, or why it is not (audit unavailable: not root, no
    /// CONFIG_AUDIT, netlink refused, …). The witness record has no field for it.
    pub landlock_audit: DenialCollection,
    /// Landlock audit records that did not parse (skipped).
    pub landlock_audit_malformed_count: u64,
    pub usage: CgroupUsage,
    pub cgroup_mode: CgroupMode,
    pub landlock: LandlockReport,
    pub seccomp_digest: [u8; 32],
    pub namespaces: Namespaces,
    /// fork of A → the workload's execve succeeded.
    pub spawn_ns: u64,
    /// fork of A → everything reaped.
    pub wall_ns: u64,
    pub timed_out: bool,
    /// setuid/setgid files and device nodes found in /out after the run, and what was done.
    pub output_violations: Vec<OutputViolation>,
    /// Output violations past [`crate::limits::OUT_VIOLATIONS_COUNT_MAX`], counted not kept.
    pub output_violations_dropped_count: u64,
    /// The spec's warnings (e.g. ignored RPATH entries), carried into the outcome.
    pub warnings: Vec<String>,
    /// The workload wrote more than [`crate::limits::STDIO_RELAY_BYTES_MAX`] to stdout or stderr;
    /// the rest was drained and discarded.
    pub stdio_truncated: bool,
    /// `rdtsc`/`rdtscp` executed in the cage, each answered from the virtual counter (which
    /// starts at the logical time; see `metanode_confine::tsc`). Dynamically linked programs
    /// read it while starting.
    pub tsc_reads_count: u64,
}

/// Something the workload left in /out that must not reach the host as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputViolation {
    /// Relative to the outputs directory.
    pub path: PathBuf,
    pub kind: OutputViolationKind,
}

/// What the launcher found and did. setuid/setgid bits are stripped rather than the file
/// refused: the content is still a legitimate output (and in the outputs root, which does not
/// cover modes), only the privilege bits are dangerous, and the file's owner is a cage id anyway.
/// A device node is never legitimate output (the cage cannot create one; it can only be
/// planted in a pre-existing /out) and is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputViolationKind {
    /// A regular file with S_ISUID and/or S_ISGID; `mode` as found, the bits are now cleared.
    SetidBitsStripped { mode: u32 },
    /// A character or block device node (`mode` as found); removed.
    DeviceNodeRemoved { mode: u32 },
}

impl std::fmt::Display for OutputViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            OutputViolationKind::SetidBitsStripped { mode } => write!(
                f,
                "/out/{} had mode {mode:o} (setuid/setgid): bits stripped",
                self.path.display()
            ),
            OutputViolationKind::DeviceNodeRemoved { mode } => write!(
                f,
                "/out/{} is a device node (mode {mode:o}): removed",
                self.path.display()
            ),
        }
    }
}

/// Why a cage could not be run. Failures inside the children name the set-up step.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "docklock must launch from a single-threaded process (this one has {threads} threads); the agent runs cages through `metanode docklock run`"
    )]
    MultiThreaded { threads: u64 },
    #[error("run options: {0}")]
    Options(String),
    /// What an unprivileged caller's cage cannot have (see [`Privilege::Unprivileged`]).
    #[error("{field}: {reason} (run as root for it)")]
    Unprivileged { field: &'static str, reason: String },
    #[error("{0}")]
    Spec(#[from] SpecError),
    #[error("mounts[{index}].source {}: {reason}", path.display())]
    BindSource {
        index: usize,
        path: PathBuf,
        reason: String,
    },
    #[error("outputs directory {}: {reason}", path.display())]
    OutDir { path: PathBuf, reason: String },
    #[error("write the user namespace's id maps: {0}")]
    IdMaps(String),
    #[error("seccomp policy: {0}")]
    Policy(#[from] metanode_seccomp::PolicyError),
    #[error("cgroup: {0}")]
    Cgroup(#[from] metanode_cgroup::CgroupError),
    #[error("capabilities in the spec: {0}")]
    Capabilities(#[from] metanode_confine::CapParseError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cage set-up failed: {0}")]
    Setup(String),
    #[error("seccomp supervisor: {0}")]
    Supervise(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

fn last_os(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn cpath(path: &Path) -> CString {
    // Paths come from validated CagePaths and host paths without NUL (the OS gave them to us).
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

/// Threads of this process, from /proc/self/status.
fn thread_count() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// [`thread_count`], given the threads of an earlier run in this process time to finish exiting:
/// `join` returns once a thread's tid is cleared, which is before the kernel takes it out of
/// the thread group, so right after a run (replay runs several in one process) the count can
/// still include it for a moment. A caller with threads of its own is refused after the wait.
fn settled_thread_count() -> u64 {
    let started = Instant::now();
    loop {
        let threads = thread_count();
        if threads == 1
            || started.elapsed() >= Duration::from_millis(crate::limits::THREAD_EXIT_WAIT_MS)
        {
            return threads;
        }
        std::thread::sleep(Duration::from_micros(
            crate::limits::THREAD_EXIT_POLL_INTERVAL_US,
        ));
    }
}

/// A pipe, both ends close-on-exec.
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), RunError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-int array for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io_err("pipe2")(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Runs `spec` caged. Blocks until every process of the cage is gone (the launcher's helper
/// process may still be finishing its own exit; it is reaped by a later run, or by init).
pub fn run(spec: &CageSpec, opts: &RunOptions) -> Result<RunOutcome, RunError> {
    reap_deferred();
    let threads = settled_thread_count();
    if threads != 1 {
        return Err(RunError::MultiThreaded { threads });
    }
    if opts.logical_time_ns > crate::limits::LOGICAL_TIME_NS_MAX {
        return Err(RunError::Options(format!(
            "logical time {} ns is above the {} ns the time namespace can represent safely",
            opts.logical_time_ns,
            crate::limits::LOGICAL_TIME_NS_MAX
        )));
    }
    if let Some(timeout) = opts.timeout
        && (timeout.is_zero()
            || timeout.as_millis() > u128::from(crate::limits::WALL_TIMEOUT_MS_MAX))
    {
        return Err(RunError::Options(format!(
            "timeout {timeout:?} is outside 1 ms ..= {} ms",
            crate::limits::WALL_TIMEOUT_MS_MAX
        )));
    }
    let privilege = Privilege::of_caller();
    if privilege.is_unprivileged() {
        check_unprivileged(spec)?;
    }
    for dir in &opts.bind_allow {
        if !dir.is_absolute() {
            return Err(RunError::Options(format!(
                "bind allowlist entry {} must be an absolute path",
                dir.display()
            )));
        }
    }
    let (uid_map, gid_map) = id_maps(spec, privilege)?;
    let host_uid = to_host_id(&uid_map, spec.process.uid).ok_or_else(|| {
        RunError::Options(format!(
            "process.user.uid {} is not mapped by the user namespace's uid map",
            spec.process.uid
        ))
    })?;
    let host_gid = to_host_id(&gid_map, spec.process.gid).ok_or_else(|| {
        RunError::Options(format!(
            "process.user.gid {} is not mapped by the user namespace's gid map",
            spec.process.gid
        ))
    })?;
    // Compiled at build time from policy/seccomp.yaml: no YAML parse or BPF compile per spawn.
    let seccomp: &'static CompiledSeccomp = CompiledSeccomp::builtin()?;
    let keep_caps = CapSet::parse_names(&spec.process.capabilities.union())?;

    // The rootfs and the bundle directory, opened once (by `load`, or here for a spec built from
    // parse_config): from now on only fds.
    let opened_here;
    let opened: &OpenedRoot = match (&spec.opened, &spec.bundle_dir) {
        (Some(opened), _) => opened,
        (None, Some(bundle_dir)) => {
            opened_here = crate::spec::open_bundle_root(bundle_dir, &spec.rootfs)?;
            &opened_here
        }
        (None, None) => {
            opened_here = OpenedRoot {
                bundle: None,
                rootfs: crate::host::open_dir_nofollow(&spec.rootfs).map_err(|errno| {
                    RunError::Io {
                        what: format!("open the rootfs {}", spec.rootfs.display()),
                        source: errno.into(),
                    }
                })?,
            };
            &opened_here
        }
    };

    let out_fd = match &opts.out_dir {
        Some(out) => Some(prepare_out_dir(out, host_uid, host_gid, privilege)?),
        None => None,
    };
    // The seeded randomness: a FIFO on the host, cloned as a mount tree over /dev/urandom and
    // /dev/random.
    let mut fifo_dir_builder = tempfile::Builder::new();
    fifo_dir_builder.prefix("docklock-rng-");
    let fifo_dir = if Path::new(RANDOM_FIFO_PARENT).is_dir() {
        fifo_dir_builder.tempdir_in(RANDOM_FIFO_PARENT)
    } else {
        fifo_dir_builder.tempdir()
    }
    .map_err(io_err("create the randomness FIFO directory"))?;
    let fifo_path = fifo_dir.path().join("urandom");
    let fifo_c = cpath(&fifo_path);
    // SAFETY: fifo_c is a valid NUL-terminated path.
    if unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o600) } != 0 {
        return Err(io_err("mkfifo")(std::io::Error::last_os_error()));
    }
    // O_RDWR so the open does not wait for a reader (and P's copy stays a reader, so the FIFO
    // never polls as an error); non-blocking so a top-up stops when it is full. Opened while
    // the owner may still write, which an unprivileged P needs.
    // SAFETY: fifo_c is a valid path; the returned fd is checked.
    let fifo_fd = unsafe {
        libc::open(
            fifo_c.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fifo_fd < 0 {
        return Err(io_err("open the randomness FIFO")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: open succeeded; we own the fd.
    let fifo = unsafe { OwnedFd::from_raw_fd(fifo_fd) };
    // Then read-only for everyone, the owner included: for an unprivileged caller the cage's
    // uid is the owner. It cannot chmod it back: the cage sees the FIFO through read-only mounts
    // (which refuse a chmod, though not a FIFO's write open), and never by its host path.
    // SAFETY: fifo_c is a valid path.
    if unsafe { libc::chmod(fifo_c.as_ptr(), 0o444) } != 0 {
        return Err(io_err("chmod the randomness FIFO")(
            std::io::Error::last_os_error(),
        ));
    }
    // A pipe buffer kept full (pre-filled below, topped up by the watch loop) makes a read of up to
    // this size return whole, so a workload that does not loop on short reads still sees the same
    // bytes run after run. Best effort: past the user's pipe page quota the kernel may give less.
    // SAFETY: fcntl on our own fd with an integer argument.
    unsafe {
        libc::fcntl(
            fifo.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            crate::limits::URANDOM_PIPE_SIZE_BYTES as libc::c_int,
        )
    };
    let sources = host_sources(spec, opts, opened, out_fd.as_ref(), &fifo)?;
    let bind_is_dir: Vec<Option<bool>> = sources
        .binds
        .iter()
        .map(|bind| bind.as_ref().map(|(_, is_dir)| *is_dir))
        .collect();
    crate::rootfs::create_mount_points(
        &opened.rootfs,
        &spec.mounts,
        &bind_is_dir,
        opts.out_dir.is_some(),
    )
    .map_err(RunError::Setup)?;
    let trees = match privilege {
        Privilege::Root => CageTrees::Cloned(sources.clone_trees(false).map_err(RunError::Setup)?),
        Privilege::Unprivileged { .. } => CageTrees::CloneInCage(sources),
    };
    let program = resolve_program(spec, &opened.rootfs);

    let cgroup = match privilege {
        Privilege::Root => {
            let layout = CgroupLayout::discover().map_err(metanode_cgroup::CgroupError::from)?;
            let limits = cgroup_limits(spec);
            Some(
                CageCgroup::create(&layout, &opts.cage_id, &limits)
                    .map_err(metanode_cgroup::CgroupError::from)?,
            )
        }
        Privilege::Unprivileged { .. } => None,
    };
    let cgroup_mode = cgroup.as_ref().map(CageCgroup::mode).unwrap_or_default();

    // On cgroup v2, A is created inside the cage's cgroup (clone3 CLONE_INTO_CGROUP): no
    // migration at all. Everywhere else A moves itself (see `CageCgroup::add_self`).
    let v2_cgroup = match cgroup.as_ref().and_then(CageCgroup::v2_dir) {
        Some(dir) => Some(
            rustix::fs::open(
                dir,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|errno| RunError::Io {
                what: format!("open the cage cgroup {}", dir.display()),
                source: errno.into(),
            })?,
        ),
        None => None,
    };
    // A reports "unshared" and waits for P to write its id maps (only a process outside the
    // namespace may, and only once, before A relies on any id in it).
    let (unshared_r, unshared_w) = pipe()?;
    let (mapped_r, mapped_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let mut socks = [0; 2];
    // SAFETY: `socks` is a valid two-int array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            socks.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io_err("socketpair")(std::io::Error::last_os_error()));
    }
    // SAFETY: socketpair succeeded; both fds are ours.
    let (sock_p, sock_c) = unsafe {
        (
            OwnedFd::from_raw_fd(socks[0]),
            OwnedFd::from_raw_fd(socks[1]),
        )
    };

    // B's message carries its credentials, so P learns B's pid as the host sees it: the pid the
    // kernel names in the audit record of the cage's Landlock domain.
    rustix::net::sockopt::set_socket_passcred(&sock_p, true).map_err(|errno| RunError::Io {
        what: "set SO_PASSCRED on the cage socket".into(),
        source: errno.into(),
    })?;
    let stdio = StdioPlan::new(opts)?;
    let mut plan = ChildPlan::new(spec, opts, keep_caps, seccomp, trees, program, privilege);
    plan.stdout_fd = stdio.stdout_w.as_ref().map(|fd| fd.as_raw_fd());
    plan.stderr_fd = stdio
        .stderr_w
        .as_ref()
        .map(|fd| fd.as_raw_fd())
        .or(if stdio.shared { plan.stdout_fd } else { None });
    let started = Instant::now();
    // The process is single-threaded (checked above), so the child may run ordinary code.
    let (a_pid, a_in_v2_cgroup) = fork_into_cgroup(v2_cgroup.as_ref()).map_err(io_err("fork"))?;
    if a_pid == 0 {
        drop((err_r, status_r, sock_p, fifo, unshared_r, mapped_w));
        child_main(err_w.as_raw_fd(), || {
            process_a(
                &plan,
                (cgroup.as_ref(), a_in_v2_cgroup),
                err_w,
                status_w,
                sock_c,
                (unshared_w, mapped_r),
            )
        });
    }
    drop(v2_cgroup);
    let StdioPlan {
        stdout_w,
        stderr_w,
        relays,
        ..
    } = stdio;
    drop((
        err_w, status_w, sock_c, unshared_w, mapped_r, stdout_w, stderr_w, plan,
    ));
    // Nothing in the cage writes the pipes before the workload runs, and P waits on nothing
    // the workload controls before its watch loop (which pumps the relay, unless a destination
    // may block and the relay has a thread of its own).
    let relay = crate::watch::Relay::start(crate::watch::StdioRelay::new(relays));
    // Done here, while A joins the cgroup and unshares (P would only wait), and before P lets B
    // exist (the "m" below):
    // - The FIFO is filled before the workload can read it, so its first reads find it full
    //   without waiting for the watch loop; only what the workload consumes is generated later
    //   (a no-op workload costs 64 KiB of ChaCha20, not a megabyte).
    // - The audit listener joins before B's Landlock domain exists: the kernel logs the
    //   domain's first denial (and its allocation) the moment it happens, and only to
    //   listeners already there.
    let mut random = crate::watch::RandomStream::new(opts.rng_seed);
    random.write_to(fifo.as_raw_fd(), crate::limits::URANDOM_PIPE_SIZE_BYTES);
    let audit = NetlinkAudit::open(
        crate::limits::AUDIT_RECEIVE_BUFFER_BYTES,
        Some(Path::new(AUDIT_ENABLED_CACHE_PATH)),
    )
    .map_err(|e| e.to_string());
    {
        let mut byte = [0u8; 1];
        // No "u" means A failed to join the cgroup or to unshare: its error is on the error
        // pipe, read below.
        if std::fs::File::from(unshared_r)
            .read_exact(&mut byte)
            .is_ok()
            && byte[0] == b'u'
        {
            let mapped = write_id_maps(a_pid, &uid_map, &gid_map, privilege);
            let reply: &[u8] = if mapped.is_ok() { b"m" } else { b"x" };
            let _ = std::fs::File::from(mapped_w).write_all(reply);
            if let Err(e) = mapped {
                reap(a_pid);
                if let Some(cgroup) = cgroup {
                    let _ = cgroup.kill_and_remove();
                }
                return Err(RunError::IdMaps(e));
            }
        }
    }

    // The deadline runs from the fork, so a set-up that stalls (a bind source on a hung network
    // mount, say) is killed too, not only a slow workload.
    let deadline = opts.timeout.map(|t| started + t);
    let mut setup_timed_out = false;
    if let Some(deadline) = deadline
        && !wait_readable(sock_p.as_raw_fd(), deadline)
    {
        setup_timed_out = true;
        kill_cage(cgroup.as_ref(), a_pid);
    }
    // The listener arrives just before exec (or the socket closes when set-up failed).
    let (listener, landlock_report, b_pid) = match receive_fd(&sock_p) {
        Some((fd, [code, abi, kernel_abi], b_pid)) => (
            Some(fd),
            metanode_confine::LandlockStatus::from_code(code).map(|status| LandlockReport {
                status,
                abi,
                kernel_abi,
            }),
            b_pid,
        ),
        None => (None, None, None),
    };
    let mut err_text = Vec::new();
    let _ = std::fs::File::from(err_r)
        .take(CHILD_ERROR_BYTES_MAX as u64)
        .read_to_end(&mut err_text);
    let spawn_ns = started.elapsed().as_nanos() as u64;

    // The audit follower reads B's Landlock domain's records while the workload runs, and once
    // it is gone drains the audit queue up to a marker of its own.
    let audit = match (audit, b_pid) {
        (Ok(audit), Some(b_pid)) => Ok((
            audit,
            metanode_confine::DenialFollower::new(
                b_pid,
                audit_limits(),
                format!("metanode-docklock drain {}-{b_pid}", std::process::id()),
            ),
        )),
        (Err(why), _) => Err(LandlockDenials::unavailable(why)),
        (Ok(_), None) => Err(LandlockDenials::unavailable(
            "the cage process's pid did not arrive with its seccomp listener",
        )),
    };
    // A's report ends the wait, not A's exit: A closes the status pipe once the cage is gone and
    // (on v1) A has left the cage cgroup; A's own exit, which tears down the workload's mount
    // namespace (an RCU grace period, 0.1 to several ms), then overlaps with the clean-up here.
    let watched = crate::watch::Watch {
        status: status_r,
        report_bytes_max: A_REPORT_HEADER_BYTES + CHILD_ERROR_BYTES_MAX,
        deadline,
        cgroup: cgroup.as_ref(),
        a_pid,
        listener,
        logical_time_ns: opts.logical_time_ns,
        audit,
        fifo,
        random,
        relay,
    }
    .run();
    let relayed_bytes = watched.report;
    let timed_out = watched.timed_out;
    let a_left_cgroup = relayed_bytes.first() == Some(&A_LEFT_CGROUP);
    let relayed = relayed_bytes.len() >= A_REPORT_HEADER_BYTES;
    let mut status = [0u8; 4];
    let mut tsc_reads = [0u8; 8];
    if relayed {
        status.copy_from_slice(&relayed_bytes[1..5]);
        tsc_reads.copy_from_slice(&relayed_bytes[5..A_REPORT_HEADER_BYTES]);
    }
    let trace_note = relayed_bytes
        .get(A_REPORT_HEADER_BYTES..)
        .unwrap_or_default()
        .to_vec();
    if !a_left_cgroup {
        // A is still in the cage (v2, a failed move, or A died): removal must wait for its exit.
        reap(a_pid);
    }
    let supervised = watched.supervised;
    let wall_ns = started.elapsed().as_nanos() as u64;
    let (usage, removed) = match cgroup {
        Some(cgroup) => (
            cgroup.usage().map_err(metanode_cgroup::CgroupError::from),
            cgroup.kill_and_remove(),
        ),
        // No cgroup, no counters: the receipt's cgroup mode says "unused".
        None => (Ok(CgroupUsage::default()), Ok(())),
    };
    // Every cage process is gone, so every copy of the pipes' write ends is closed and the relay
    // reaches end-of-file.
    let stdio_truncated = watched.relay.finish();
    let landlock_denials = match watched.audit {
        Ok((mut socket, mut follower)) => {
            follower.drain(&mut socket);
            follower.finish()
        }
        Err(unavailable) => unavailable,
    };
    if landlock_denials.collection == DenialCollection::DrainTimedOut {
        // Perhaps audit was switched off since the cache was written: the next run asks.
        metanode_confine::forget_audit_enabled(Path::new(AUDIT_ENABLED_CACHE_PATH));
    }

    if a_left_cgroup {
        // A is out of the cage and may still be tearing down the dead workload's mount namespace
        // (an RCU grace period: usually well under a millisecond, hundreds on a loaded host).
        // Nothing of the result depends on it: reap it if done, else on a later run (or init
        // does, when this process exits first).
        reap_or_defer(a_pid);
    }
    if setup_timed_out {
        return Err(RunError::Setup(format!(
            "the cage was not set up within the {:.1} s timeout; killed",
            opts.timeout.unwrap_or_default().as_secs_f64()
        )));
    }
    if !err_text.is_empty() {
        return Err(RunError::Setup(
            String::from_utf8_lossy(&err_text).into_owned(),
        ));
    }
    if !trace_note.is_empty() {
        return Err(RunError::Setup(
            String::from_utf8_lossy(&trace_note).into_owned(),
        ));
    }
    // A timeout kills every task of the cgroup, A included, so A may not get to relay: the
    // workload then ended by our SIGKILL.
    if !relayed && timed_out {
        status = (libc::SIGKILL).to_le_bytes();
    } else if !relayed {
        return Err(RunError::Setup(
            "the cage's intermediate process ended without reporting the workload's status".into(),
        ));
    }
    match supervised {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(RunError::Supervise(e)),
        None => {
            return Err(RunError::Setup(
                "the workload was never handed its seccomp listener".into(),
            ));
        }
    }
    removed.map_err(metanode_cgroup::CgroupError::from)?;
    let raw = i32::from_le_bytes(status);
    let exit = if libc::WIFSIGNALED(raw) {
        CageExit::Signaled(libc::WTERMSIG(raw))
    } else {
        CageExit::Exited(libc::WEXITSTATUS(raw))
    };
    let (violations, violations_dropped_count) =
        (watched.violations, watched.violations_dropped_count);
    // The cage is gone: nothing can race the scan.
    let (output_violations, output_violations_dropped_count) = match &opts.out_dir {
        Some(out) => scan_outputs(out)?,
        None => (Vec::new(), 0),
    };
    Ok(RunOutcome {
        exit,
        violations,
        violations_dropped_count,
        landlock_denials: landlock_denials.denials,
        landlock_denials_dropped_count: landlock_denials.dropped_count,
        landlock_audit: landlock_denials.collection,
        landlock_audit_malformed_count: landlock_denials.malformed_count,
        usage: usage?,
        cgroup_mode,
        landlock: landlock_report.ok_or_else(|| {
            RunError::Setup("the workload sent an unknown landlock status code".into())
        })?,
        seccomp_digest: seccomp.digest(),
        namespaces: cage_namespaces(spec, privilege),
        spawn_ns,
        wall_ns,
        timed_out,
        output_violations,
        output_violations_dropped_count,
        warnings: {
            let mut warnings = spec.warnings.clone();
            if host_runs_from_initramfs() {
                warnings.push(
                    "this host runs from its initramfs, which pivot_root cannot leave: the cage's \
                     root was entered with chroot (the old root stays unreachable: no \
                     capabilities, chroot and mount refused)"
                        .to_string(),
                );
            }
            warnings
        },
        stdio_truncated,
        tsc_reads_count: u64::from_le_bytes(tsc_reads),
    })
}

/// Remembers, for this boot, that the kernel's audit is on, so a cage's start-up skips the
/// AUDIT_GET round trip (see `metanode_confine::NetlinkAudit::open`). On tmpfs: gone at reboot.
const AUDIT_ENABLED_CACHE_PATH: &str = "/run/metanode/docklock-audit-enabled";

/// The audit reader's bounds (see [`crate::limits`]).
fn audit_limits() -> AuditLimits {
    AuditLimits {
        records_count_max: crate::limits::AUDIT_RECORDS_COUNT_MAX,
        records_bytes_max: crate::limits::AUDIT_RECORDS_BYTES_MAX,
        denials_count_max: crate::limits::LANDLOCK_DENIALS_COUNT_MAX,
        object_bytes_max: crate::limits::LANDLOCK_DENIAL_OBJECT_BYTES_MAX,
        drain_timeout: Duration::from_millis(crate::limits::AUDIT_DRAIN_TIMEOUT_MS),
        poll_interval: Duration::from_millis(crate::limits::AUDIT_POLL_INTERVAL_MS),
    }
}

/// Who runs the launcher. Root gets every feature. An unprivileged caller gets a cage of its
/// own user namespace, as bwrap gives one:
/// - one id mapped, the caller's own uid and gid as cage 0 (the kernel lets an unprivileged
///   process map only itself, and only with setgroups denied; wider maps need newuidmap);
/// - no cgroup (it may create none here): memory, CPU and I/O limits are refused by name, the
///   pids limit becomes RLIMIT_NPROC (which counts the tasks of the cage's one uid in the cage's
///   user namespace, A included, as pids.current counts A), and a pid namespace is always
///   made, so that the kernel ends every cage task with its init;
/// - mounts cloned by B inside the cage's mount namespace (see [`Source`]);
/// - no Landlock denial log (the audit socket needs CAP_AUDIT_READ; recorded as unavailable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Privilege {
    Root,
    Unprivileged { uid: u32, gid: u32 },
}

impl Privilege {
    fn of_caller() -> Privilege {
        // SAFETY: geteuid/getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if uid == 0 {
            Privilege::Root
        } else {
            Privilege::Unprivileged { uid, gid }
        }
    }

    fn is_unprivileged(self) -> bool {
        matches!(self, Privilege::Unprivileged { .. })
    }
}

/// Whether this process runs cages as root (see [`Privilege`] for what a cage of any other
/// caller lacks).
pub fn caller_is_root() -> bool {
    Privilege::of_caller() == Privilege::Root
}

/// Refuses, by field, what an unprivileged caller's cage cannot enforce (see [`Privilege`]).
fn check_unprivileged(spec: &CageSpec) -> Result<(), RunError> {
    let r = &spec.resources;
    let no_cgroup = "an unprivileged caller's cage has no cgroup to enforce it";
    let refused = [
        (
            "linux.resources.memory.limit",
            r.memory_limit_bytes.is_some(),
        ),
        (
            "linux.resources.memory.swap",
            r.memory_swap_limit_bytes.is_some(),
        ),
        ("linux.resources.cpu.quota", r.cpu_quota_us.is_some()),
        ("linux.resources.cpu.period", r.cpu_period_us.is_some()),
        ("linux.resources.cpu.shares", r.cpu_shares.is_some()),
        ("linux.resources.blockIO.weight", r.blkio_weight.is_some()),
    ];
    if let Some((field, _)) = refused.iter().find(|(_, set)| *set) {
        return Err(RunError::Unprivileged {
            field,
            reason: no_cgroup.into(),
        });
    }
    if !spec.process.additional_gids.is_empty() {
        return Err(RunError::Unprivileged {
            field: "process.user.additionalGids",
            reason: "an unprivileged caller's user namespace maps one gid and must deny setgroups"
                .into(),
        });
    }
    if !spec.rootfs_readonly {
        return Err(RunError::Unprivileged {
            field: "root.readonly",
            reason: "false would let the workload, which writes as the caller, change the caller's own rootfs on the host (and so every later run and replay); give writable space with a tmpfs mount or --out"
                .into(),
        });
    }
    // The pids limit becomes RLIMIT_NPROC, which B can lower but not raise past the caller's.
    let tasks_max = pids_limit(spec);
    let mut caller = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &raw mut caller) } == 0
        && caller.rlim_max != libc::RLIM_INFINITY
        && caller.rlim_max < tasks_max
    {
        return Err(RunError::Unprivileged {
            field: "linux.resources.pids.limit",
            reason: format!(
                "{tasks_max} tasks (the default when unset) is above the caller's RLIMIT_NPROC hard limit {}, which an unprivileged cage cannot raise; ask for fewer",
                caller.rlim_max
            ),
        });
    }
    if let Some(r) = spec
        .process
        .rlimits
        .iter()
        .find(|r| r.resource == libc::RLIMIT_NPROC && r.hard > tasks_max)
    {
        return Err(RunError::Unprivileged {
            field: "process.rlimits",
            reason: format!(
                "RLIMIT_NPROC hard {} is above the cage's pids limit {tasks_max}, which an unprivileged caller's cage enforces as RLIMIT_NPROC",
                r.hard
            ),
        });
    }
    Ok(())
}

/// The namespaces a cage gets: the spec's, always a user namespace, and for an unprivileged
/// caller always a pid namespace (its init's end is what ends every task of a cage without a
/// cgroup; see [`kill_cage`]).
fn cage_namespaces(spec: &CageSpec, privilege: Privilege) -> Namespaces {
    let namespaces = spec.namespaces.with(Namespaces::USER);
    match privilege {
        Privilege::Root => namespaces,
        Privilege::Unprivileged { .. } => namespaces.with(Namespaces::PID),
    }
}

/// The id maps to write: the spec's (checked again: never host id 0), or the default range. An
/// unprivileged caller maps exactly its own uid and gid (see [`Privilege`]).
fn id_maps(
    spec: &CageSpec,
    privilege: Privilege,
) -> Result<(Vec<IdMapping>, Vec<IdMapping>), RunError> {
    if let Privilege::Unprivileged { uid, gid } = privilege {
        let own = |maps: &[IdMapping], host_id: u32, field: &'static str| {
            let mine = IdMapping {
                container_id: 0,
                host_id,
                size: 1,
            };
            if maps.is_empty() || maps == [mine] {
                Ok(vec![mine])
            } else {
                Err(RunError::Unprivileged {
                    field,
                    reason: format!(
                        "an unprivileged caller may map only its own id as cage 0 ({{containerID: 0, hostID: {host_id}, size: 1}})"
                    ),
                })
            }
        };
        return Ok((
            own(&spec.uid_mappings, uid, "linux.uidMappings")?,
            own(&spec.gid_mappings, gid, "linux.gidMappings")?,
        ));
    }
    crate::spec::check_id_mappings(&spec.uid_mappings, "linux.uidMappings")?;
    crate::spec::check_id_mappings(&spec.gid_mappings, "linux.gidMappings")?;
    let default = || {
        vec![IdMapping {
            container_id: 0,
            host_id: crate::limits::CAGE_HOST_ID_BASE,
            size: crate::limits::CAGE_ID_RANGE_SIZE,
        }]
    };
    let pick = |maps: &[IdMapping]| {
        if maps.is_empty() {
            default()
        } else {
            maps.to_vec()
        }
    };
    Ok((pick(&spec.uid_mappings), pick(&spec.gid_mappings)))
}

/// The host id a cage id maps to, if any.
fn to_host_id(maps: &[IdMapping], id: u32) -> Option<u32> {
    maps.iter().find_map(|m| {
        let offset = id.checked_sub(m.container_id)?;
        (offset < m.size).then(|| m.host_id + offset)
    })
}

/// Creates the outputs directory if needed and hands it to the workload's host ids (only the
/// directory itself, never what is in it). A non-empty directory not already owned by them is
/// refused rather than chowned: an operator's `--out /etc` typo must not give /etc to the cage.
fn prepare_out_dir(
    out: &Path,
    host_uid: u32,
    host_gid: u32,
    privilege: Privilege,
) -> Result<OwnedFd, RunError> {
    let fail = |reason: String| RunError::OutDir {
        path: out.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(out).map_err(|e| fail(format!("create: {e}")))?;
    let fd = rustix::fs::open(
        out,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| fail(format!("open (it must be a directory, not a symlink): {e}")))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| fail(format!("stat: {e}")))?;
    // For an unprivileged caller "already theirs" means the caller's own: `--out ~` would hand
    // the workload the whole home directory. Its outputs directory must be empty.
    if stat.st_uid != host_uid || stat.st_gid != host_gid || privilege.is_unprivileged() {
        let dir = fd.try_clone().map_err(|e| fail(format!("dup: {e}")))?;
        let mut entries = rustix::fs::Dir::new(dir).map_err(|e| fail(format!("read: {e}")))?;
        let non_empty = entries.any(|entry| {
            entry.is_ok_and(|e| {
                let name = e.file_name().to_bytes();
                name != b"." && name != b".."
            })
        });
        if non_empty && privilege.is_unprivileged() {
            return Err(fail(
                "not empty; an unprivileged caller's cage writes as the caller, so it gets an empty or new directory only"
                    .into(),
            ));
        }
        if non_empty {
            return Err(fail(format!(
                "not empty and owned by {}:{}, not by the cage's host ids {host_uid}:{host_gid}; give the cage an empty or its own directory",
                stat.st_uid, stat.st_gid
            )));
        }
        rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(host_uid)),
            Some(rustix::fs::Gid::from_raw(host_gid)),
        )
        .map_err(|e| fail(format!("chown to {host_uid}:{host_gid}: {e}")))?;
    }
    Ok(fd)
}

/// Detached mount trees B attaches (see [`crate::rootfs::clone_tree`]).
struct HostTrees {
    rootfs: OwnedFd,
    binds: Vec<Option<BindTree>>,
    out: Option<OwnedFd>,
    random: [OwnedFd; 2],
}

/// A host object the cage mounts, resolved once by P, and how it is to be cloned.
struct Source {
    fd: OwnedFd,
    recursive: bool,
    /// mount_setattr (set, clear) bits for the clone.
    attrs: (u64, u64),
    /// What it is, for errors.
    what: String,
}

impl Source {
    /// Clones the object into a detached tree (private, with `attrs`). `refind`: the object is
    /// first found again by its path in the calling process's mount namespace and must be the
    /// same one (device and inode). That is B's way for an unprivileged caller: P may not clone
    /// mounts (open_tree(OPEN_TREE_CLONE) needs CAP_SYS_ADMIN over the host's mount namespace),
    /// and B may clone only mounts of its own namespace, which is a copy of P's, so P's fd
    /// names a mount B cannot clone while the path names its copy. No symlink is followed, and
    /// a path swapped since P resolved it is refused.
    fn clone_tree(&self, refind: bool) -> Result<OwnedFd, String> {
        let fail = |step: &str, errno: rustix::io::Errno| format!("{}: {step}: {errno}", self.what);
        let found;
        let source = if refind {
            let path = self.path()?;
            found = rustix::fs::openat2(
                rustix::fs::CWD,
                &path,
                rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
                rustix::fs::ResolveFlags::NO_SYMLINKS | rustix::fs::ResolveFlags::NO_MAGICLINKS,
            )
            .map_err(|errno| fail(&format!("open {} again", path.display()), errno))?;
            let is = rustix::fs::fstat(&found).map_err(|errno| fail("stat", errno))?;
            self.check_same(&path, &is)?;
            &found
        } else {
            &self.fd
        };
        crate::rootfs::clone_tree(source, self.recursive, self.attrs).map_err(|errno| {
            let hint = match errno {
                // A bind copies mounts locked together with the host's: one with mounts below
                // it may be cloned only with them.
                rustix::io::Errno::INVAL if refind && !self.recursive => {
                    " (an unprivileged caller's non-recursive bind of a directory with mounts below it; use rbind)"
                }
                // A flag the host's mount sets (e.g. read-only) cannot be cleared from inside
                // a user namespace.
                rustix::io::Errno::PERM if refind => {
                    " (an unprivileged caller cannot clear a flag the host's mount sets, such as ro or nosuid)"
                }
                _ => "",
            };
            format!("{}: clone as a mount tree: {errno}{hint}", self.what)
        })
    }

    /// Where this process's mount namespace shows the object (the kernel's name for P's fd).
    fn path(&self) -> Result<PathBuf, String> {
        std::fs::read_link(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
            .map_err(|e| format!("{}: find its path: {e}", self.what))
    }

    /// Refuses `is` (what `path` names now) unless it is the object P opened: same device and
    /// inode, so a path swapped since P resolved it is never cloned or removed.
    fn check_same(&self, path: &Path, is: &rustix::fs::Stat) -> Result<(), String> {
        let was = rustix::fs::fstat(&self.fd).map_err(|e| format!("{}: stat: {e}", self.what))?;
        if (was.st_dev, was.st_ino) != (is.st_dev, is.st_ino) {
            return Err(format!(
                "{}: {} is no longer the object the launcher opened (replaced meanwhile)",
                self.what,
                path.display()
            ));
        }
        Ok(())
    }
}

/// Every host object the cage mounts, resolved by P (see [`host_sources`]).
struct HostSources {
    rootfs: Source,
    /// By index in the spec's mounts: the bind source and whether it is a directory.
    binds: Vec<Option<(Source, bool)>>,
    out: Option<Source>,
    /// The seeded FIFO, cloned twice (/dev/urandom and /dev/random).
    fifo: Source,
}

impl HostSources {
    fn clone_trees(&self, refind: bool) -> Result<HostTrees, String> {
        let mut binds = Vec::with_capacity(self.binds.len());
        for bind in &self.binds {
            binds.push(match bind {
                Some((source, is_dir)) => Some(BindTree {
                    tree: source.clone_tree(refind)?,
                    is_dir: *is_dir,
                }),
                None => None,
            });
        }
        Ok(HostTrees {
            rootfs: self.rootfs.clone_tree(refind)?,
            binds,
            out: match &self.out {
                Some(out) => Some(out.clone_tree(refind)?),
                None => None,
            },
            random: [self.fifo.clone_tree(refind)?, self.fifo.clone_tree(refind)?],
        })
    }

    /// Unlinks the FIFO and its private directory once B has attached its clones (a detached
    /// tree whose root is unlinked can no longer be attached; attached, it keeps working). For
    /// an unprivileged caller, whose cage uid owns the FIFO (root's cage cannot even enter the
    /// root-owned 0700 directory): then no writable bind of /dev/shm or /tmp reaches it, where
    /// the owner could chmod it back and write. B may: it is the caller in the cage's user
    /// namespace. Checked to be the same object first.
    fn remove_fifo(&self) -> Result<(), String> {
        let path = self.fifo.path()?;
        let what = &self.fifo.what;
        let is = rustix::fs::lstat(&path)
            .map_err(|e| format!("{what}: stat {}: {e}", path.display()))?;
        self.fifo.check_same(&path, &is)?;
        std::fs::remove_file(&path)
            .map_err(|e| format!("{what}: remove {}: {e}", path.display()))?;
        if let Some(dir) = path.parent() {
            std::fs::remove_dir(dir)
                .map_err(|e| format!("{what}: remove {}: {e}", dir.display()))?;
        }
        Ok(())
    }
}

/// The cage's mount trees as B gets them: cloned by P (root), or to be cloned by B itself in
/// the cage's mount namespace (an unprivileged caller, see [`Source::clone_tree`]).
enum CageTrees {
    Cloned(HostTrees),
    CloneInCage(HostSources),
}

/// Resolves every host path of the cage once, into fds.
fn host_sources(
    spec: &CageSpec,
    opts: &RunOptions,
    opened: &OpenedRoot,
    out: Option<&OwnedFd>,
    fifo: &OwnedFd,
) -> Result<HostSources, RunError> {
    let dup = |fd: &OwnedFd, what: &str| {
        fd.try_clone().map_err(|source| RunError::Io {
            what: format!("duplicate the fd of {what}"),
            source,
        })
    };
    // Device nodes and setuid files shipped in the image must not work in the cage (a block
    // device node would otherwise give raw access to a host disk): nodev + nosuid on the whole
    // tree. DockLock's own /dev is a separate mount built inside.
    let rootfs = Source {
        fd: dup(&opened.rootfs, "the rootfs")?,
        recursive: true,
        attrs: crate::rootfs::mount_attrs(libc::MS_NOSUID | libc::MS_NODEV, 0),
        what: format!("the rootfs {}", spec.rootfs.display()),
    };
    let bundle = match (&opened.bundle, &spec.bundle_dir) {
        (Some(fd), Some(dir)) => Some((dir.as_path(), fd)),
        _ => None,
    };
    let mut binds = Vec::with_capacity(spec.mounts.len());
    for (index, m) in spec.mounts.iter().enumerate() {
        let MountKind::Bind { source, recursive } = &m.kind else {
            binds.push(None);
            continue;
        };
        let resolved = resolve_bind_source(index, source, bundle, &opts.bind_allow)?;
        let stat = rustix::fs::fstat(&resolved).map_err(|errno| RunError::BindSource {
            index,
            path: source.clone(),
            reason: format!("stat: {errno}"),
        })?;
        let is_dir =
            rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory;
        binds.push(Some((
            Source {
                fd: resolved,
                recursive: *recursive,
                attrs: crate::rootfs::mount_attrs(
                    m.set_flags | libc::MS_NODEV | libc::MS_NOSUID,
                    m.clear_flags,
                ),
                what: format!("mounts[{index}].source {}", source.display()),
            },
            is_dir,
        )));
    }
    let out = match out {
        Some(fd) => Some(Source {
            fd: dup(fd, "the outputs directory")?,
            recursive: false,
            attrs: crate::rootfs::mount_attrs(libc::MS_NOSUID | libc::MS_NODEV, libc::MS_RDONLY),
            what: "the outputs directory".into(),
        }),
        None => None,
    };
    // The FIFO is read-only for the workload: it must not inject bytes into the stream.
    let fifo = Source {
        fd: dup(fifo, "the randomness FIFO")?,
        recursive: false,
        attrs: crate::rootfs::mount_attrs(libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC, 0),
        what: "the randomness FIFO".into(),
    };
    Ok(HostSources {
        rootfs,
        binds,
        out,
        fifo,
    })
}

/// A bind source, resolved beneath the bundle directory or beneath an allowlisted directory
/// (openat2 RESOLVE_BENEATH, so neither `..` nor a symlink leads out); anything else refused.
fn resolve_bind_source(
    index: usize,
    source: &Path,
    bundle: Option<(&Path, &OwnedFd)>,
    allow: &[PathBuf],
) -> Result<OwnedFd, RunError> {
    let refuse = |reason: String| RunError::BindSource {
        index,
        path: source.to_path_buf(),
        reason,
    };
    if let Some((dir, fd)) = bundle
        && let Some(relative) = crate::host::lexically_below(dir, source)
    {
        return crate::host::resolve_beneath(fd, &relative, false).map_err(|errno| {
            refuse(format!(
                "beneath the bundle directory {}: {}",
                dir.display(),
                crate::host::errno_text(errno)
            ))
        });
    }
    for dir in allow {
        let Some(relative) = crate::host::lexically_below(dir, source) else {
            continue;
        };
        // The allowlisted directory is the operator's own path: following symlinks up to it is
        // fine; below it, RESOLVE_BENEATH holds.
        let dir_fd = rustix::fs::open(
            dir,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|errno| {
            refuse(format!(
                "open the allowed directory {}: {errno}",
                dir.display()
            ))
        })?;
        return crate::host::resolve_beneath(&dir_fd, &relative, false).map_err(|errno| {
            refuse(format!(
                "beneath the allowed directory {}: {}",
                dir.display(),
                crate::host::errno_text(errno)
            ))
        });
    }
    Err(refuse(
        "outside the bundle directory and not beneath any allowed bind directory (`metanode docklock run --allow-bind DIR`)".into(),
    ))
}

/// Walks /out after the run (the cage is gone) without following symlinks: strips setuid and
/// setgid bits from regular files and removes device nodes, recording each. Bounded by
/// [`crate::limits::OUT_SCAN_ENTRIES_COUNT_MAX`] and [`crate::limits::OUT_SCAN_DEPTH_MAX`].
fn scan_outputs(out: &Path) -> Result<(Vec<OutputViolation>, u64), RunError> {
    let fail = |reason: String| RunError::OutDir {
        path: out.to_path_buf(),
        reason,
    };
    let root = rustix::fs::open(out, scan_dir_flags(), rustix::fs::Mode::empty())
        .map_err(|e| fail(format!("open for the setuid/device scan: {e}")))?;
    let mut scan = OutScan {
        violations: Vec::new(),
        dropped: 0,
        entries: 0,
    };
    scan.dir(root, PathBuf::new(), 0).map_err(fail)?;
    Ok((scan.violations, scan.dropped))
}

fn scan_dir_flags() -> rustix::fs::OFlags {
    rustix::fs::OFlags::RDONLY
        | rustix::fs::OFlags::DIRECTORY
        | rustix::fs::OFlags::NOFOLLOW
        | rustix::fs::OFlags::CLOEXEC
}

struct OutScan {
    violations: Vec<OutputViolation>,
    dropped: u64,
    entries: usize,
}

impl OutScan {
    fn record(&mut self, path: PathBuf, kind: OutputViolationKind) {
        if self.violations.len() < crate::limits::OUT_VIOLATIONS_COUNT_MAX {
            self.violations.push(OutputViolation { path, kind });
        } else {
            self.dropped += 1;
        }
    }

    fn dir(&mut self, fd: OwnedFd, prefix: PathBuf, depth: usize) -> Result<(), String> {
        use rustix::fs::{AtFlags, FileType, Mode, OFlags};
        if depth > crate::limits::OUT_SCAN_DEPTH_MAX {
            return Err(format!(
                "{} is nested deeper than {} levels",
                prefix.display(),
                crate::limits::OUT_SCAN_DEPTH_MAX
            ));
        }
        let listing = fd.try_clone().map_err(|e| format!("dup: {e}"))?;
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::new(listing).map_err(|e| format!("read: {e}"))? {
            let entry = entry.map_err(|e| format!("read {}: {e}", prefix.display()))?;
            let name = entry.file_name().to_owned();
            if name.as_bytes() != b"." && name.as_bytes() != b".." {
                names.push(name);
            }
        }
        // Sorted, so the violations (and which ones are kept past the bound) come in the same
        // order on every replay and filesystem: they are signed into the witness record.
        names.sort();
        for name in names {
            self.entries += 1;
            if self.entries > crate::limits::OUT_SCAN_ENTRIES_COUNT_MAX {
                return Err(format!(
                    "more than {} entries",
                    crate::limits::OUT_SCAN_ENTRIES_COUNT_MAX
                ));
            }
            let path = prefix.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
            let stat = rustix::fs::statat(&fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| format!("stat {}: {e}", path.display()))?;
            let mode = stat.st_mode;
            match FileType::from_raw_mode(mode) {
                FileType::Directory => {
                    let sub =
                        rustix::fs::openat(&fd, name.as_c_str(), scan_dir_flags(), Mode::empty())
                            .map_err(|e| format!("open {}: {e}", path.display()))?;
                    self.dir(sub, path, depth + 1)?;
                }
                FileType::RegularFile if mode & (libc::S_ISUID | libc::S_ISGID) != 0 => {
                    let file = rustix::fs::openat(
                        &fd,
                        name.as_c_str(),
                        OFlags::RDONLY
                            | OFlags::NOFOLLOW
                            | OFlags::NONBLOCK
                            | OFlags::NOCTTY
                            | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| format!("open {}: {e}", path.display()))?;
                    let opened = rustix::fs::fstat(&file)
                        .map_err(|e| format!("stat {}: {e}", path.display()))?;
                    if opened.st_ino != stat.st_ino || opened.st_dev != stat.st_dev {
                        return Err(format!("{} changed during the scan", path.display()));
                    }
                    let stripped = opened.st_mode & 0o7777 & !(libc::S_ISUID | libc::S_ISGID);
                    rustix::fs::fchmod(&file, Mode::from_raw_mode(stripped)).map_err(|e| {
                        format!("strip the setuid/setgid bits of {}: {e}", path.display())
                    })?;
                    self.record(
                        path,
                        OutputViolationKind::SetidBitsStripped {
                            mode: mode & 0o7777,
                        },
                    );
                }
                FileType::CharacterDevice | FileType::BlockDevice => {
                    rustix::fs::unlinkat(&fd, name.as_c_str(), AtFlags::empty())
                        .map_err(|e| format!("remove device node {}: {e}", path.display()))?;
                    self.record(path, OutputViolationKind::DeviceNodeRemoved { mode });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The cage's task limit: the spec's, else the operator's default (a fork bomb must stay inside
/// the cage). pids.max for root's cage, RLIMIT_NPROC for an unprivileged caller's.
fn pids_limit(spec: &CageSpec) -> u64 {
    spec.resources
        .pids_max
        .unwrap_or(crate::limits::DEFAULT_PIDS_LIMIT)
}

fn cgroup_limits(spec: &CageSpec) -> CgroupLimits {
    let r = &spec.resources;
    CgroupLimits {
        // A spec without limits still gets the operator's defaults: a fork or memory bomb must
        // stay inside the cage.
        memory_max_bytes: Some(
            r.memory_limit_bytes
                .unwrap_or(crate::limits::DEFAULT_MEMORY_LIMIT_BYTES),
        ),
        // OCI swap is memory + swap; cgroup v2 (and our crate) take swap alone.
        memory_swap_max_bytes: match (r.memory_swap_limit_bytes, r.memory_limit_bytes) {
            (Some(total), Some(mem)) => Some(total.saturating_sub(mem)),
            _ => None,
        },
        pids_max: Some(pids_limit(spec)),
        cpu_quota_us: r.cpu_quota_us,
        cpu_period_us: r.cpu_period_us,
        // runc's shares→weight conversion.
        cpu_weight: r
            .cpu_shares
            .map(|s| 1 + ((s.clamp(2, 262_144) - 2) * 9999) / 262_142),
        io_weight: r
            .blkio_weight
            .map(|w| 1 + ((w.clamp(10, 1000) - 10) * 9999) / 990),
    }
}

/// Writes A's uid_map and gid_map. For root, setgroups stays "allow": P is privileged in the
/// parent namespace, so the kernel permits it and the spec's additionalGids can be set inside.
/// An unprivileged caller must deny setgroups before it may write a gid_map.
fn write_id_maps(
    pid: i32,
    uid_map: &[IdMapping],
    gid_map: &[IdMapping],
    privilege: Privilege,
) -> Result<(), String> {
    let text = |maps: &[IdMapping]| -> String {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
            .collect()
    };
    if privilege.is_unprivileged() {
        let path = format!("/proc/{pid}/setgroups");
        std::fs::write(&path, b"deny").map_err(|e| format!("{path}: {e}"))?;
    }
    for (file, content) in [("uid_map", text(uid_map)), ("gid_map", text(gid_map))] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, content.as_bytes()).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

/// The workload's stdout/stderr: pipes whose write ends B puts on fds 1 and 2, and the relays P
/// runs from their read ends to the destination. Quiet streams without a capture file get the
/// cage's /dev/null instead (no pipe, no relay thread).
struct StdioPlan {
    stdout_w: Option<OwnedFd>,
    stderr_w: Option<OwnedFd>,
    /// stdout and stderr share one pipe (they go to the same capture file; one pipe keeps
    /// their interleaving).
    shared: bool,
    relays: Vec<(OwnedFd, std::fs::File)>,
}

impl StdioPlan {
    fn new(opts: &RunOptions) -> Result<StdioPlan, RunError> {
        let mut plan = StdioPlan {
            stdout_w: None,
            stderr_w: None,
            shared: false,
            relays: Vec::new(),
        };
        let stdout_dest = match &opts.stdout_file {
            Some(path) => Some(open_capture(path)?),
            None if opts.quiet => None,
            None => Some(inherited(1)?),
        };
        if let Some(dest) = stdout_dest {
            let (r, w) = pipe()?;
            plan.relays.push((r, dest));
            plan.stdout_w = Some(w);
        }
        if opts.stderr_file.is_some() && opts.stderr_file == opts.stdout_file {
            plan.shared = true;
            return Ok(plan);
        }
        let stderr_dest = match &opts.stderr_file {
            Some(path) => Some(open_capture(path)?),
            None if opts.quiet => None,
            None => Some(inherited(2)?),
        };
        if let Some(dest) = stderr_dest {
            let (r, w) = pipe()?;
            plan.relays.push((r, dest));
            plan.stderr_w = Some(w);
        }
        Ok(plan)
    }
}

/// A copy of this process's own fd 1 or 2, for the relay to write to.
fn inherited(fd: RawFd) -> Result<std::fs::File, RunError> {
    // SAFETY: fds 0-2 stay open for the life of the process; the borrow ends with the dup.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    borrowed
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .map_err(io_err(format!("duplicate the launcher's fd {fd}")))
}

/// Opens a capture file for the workload's stdout or stderr (written by P's relay only).
fn open_capture(path: &Path) -> Result<std::fs::File, RunError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_err(format!("open the capture file {}", path.display())))
}

/// The fd a panicking cage child reports on (-1: its error pipe is closed, use stderr).
static CHILD_PANIC_FD: AtomicI32 = AtomicI32::new(-1);
/// Exit code of a cage child that panicked.
const CHILD_PANIC_EXIT_CODE: i32 = 125;

/// Runs `body` as the whole life of a forked child: a panic never unwinds into the parent's
/// code (whose frames this process shares after fork) — the hook, installed in the child only,
/// writes the message to `report_fd` and `_exit`s at once; a normal return `_exit`s with its code.
fn child_main(report_fd: RawFd, body: impl FnOnce() -> i32) -> ! {
    CHILD_PANIC_FD.store(report_fd, Ordering::SeqCst);
    std::panic::set_hook(Box::new(|info| {
        let message = format!("docklock: a cage set-up process panicked: {info}");
        let fd = CHILD_PANIC_FD.load(Ordering::SeqCst);
        let fd = if fd >= 0 { fd } else { 2 };
        // SAFETY: writing a valid buffer to an fd, then _exit, which is always safe.
        unsafe {
            libc::write(fd, message.as_ptr().cast(), message.len());
            libc::_exit(CHILD_PANIC_EXIT_CODE)
        }
    }));
    let code = body();
    // SAFETY: _exit is always safe; it skips the parent's atexit handlers and buffers.
    unsafe { libc::_exit(code) }
}

/// The kernel's struct clone_args up to `cgroup` (CLONE_ARGS_SIZE_VER2, Linux 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// include/uapi/linux/sched.h; not in the libc crate for glibc targets.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// fork(2), or with `cgroup` (an fd of a cgroup v2 directory) clone3(CLONE_INTO_CGROUP) so the
/// child starts inside that cgroup. Returns (pid, 0 in the child; whether the child started in
/// `cgroup`). A kernel without clone3 or CLONE_INTO_CGROUP (ENOSYS, E2BIG, EINVAL) gets a plain
/// fork and `false`: the child then joins by itself.
fn fork_into_cgroup(cgroup: Option<&OwnedFd>) -> std::io::Result<(i32, bool)> {
    if let Some(cgroup) = cgroup {
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: cgroup.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: `args` is a valid clone_args of the size passed. Without CLONE_VM the child
        // gets a copy of this address space and continues on (its copy of) this stack, like
        // fork. The caller is single-threaded, so no lock (malloc arenas, stdio) is held by
        // another thread at the clone. glibc's fork() would also refresh the tid cached in the
        // thread control block; the child keeps the parent's value, which glibc only uses for
        // owner-checking pthread mutexes (Rust's locks are futex-based and do not use it) and
        // never for signals to itself (raise uses gettid).
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &raw const args,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if pid >= 0 {
            return Ok((pid as i32, true));
        }
        let error = std::io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL) => {}
            _ => return Err(error),
        }
    }
    // SAFETY: the caller is single-threaded (see above); glibc's fork keeps malloc usable.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((pid, false))
}

/// Helper processes (A) of earlier runs that had not exited when their run returned.
static DEFERRED_REAPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Reaps `pid` if it has exited; true when it is gone (reaped now, or not our child any more).
fn try_reap(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waiting for our own child without blocking; status is a valid out pointer.
    let rc = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
    rc != 0
}

fn reap_or_defer(pid: i32) {
    reap_deferred();
    if !try_reap(pid)
        && let Ok(mut pending) = DEFERRED_REAPS.lock()
    {
        pending.push(pid);
    }
}

fn reap_deferred() {
    if let Ok(mut pending) = DEFERRED_REAPS.lock() {
        pending.retain(|pid| !try_reap(*pid));
    }
}

fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waiting for our own child; status is a valid out pointer.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
}

/// Waits until `fd` is readable (or hung up) or `deadline` passes; false on the deadline.
fn wait_readable(fd: RawFd, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe {
            libc::poll(
                &raw mut pfd,
                1,
                left.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        if ready > 0 {
            return true;
        }
        if ready == 0 {
            if Instant::now() >= deadline {
                return false;
            }
            continue;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // poll itself failed: let the blocking read find out what is wrong.
            return true;
        }
    }
}

/// Kills every task of the cage. With a cgroup, by the cgroup's own mechanism (cgroup.kill /
/// freezer), not pid by pid: a pid read from cgroup.procs could be reused before the signal. A
/// failure there is caught by the removal, which kills again and reports what survived.
/// Without one (an unprivileged caller), by killing A, P's own unreaped child (so its pid
/// cannot be reused): the kernel then kills every tracee (A traces the whole cage with
/// PTRACE_O_EXITKILL) and B before its seizure (its parent-death signal), and with the pid
/// namespace's init every task left in it.
pub(crate) fn kill_cage(cgroup: Option<&CageCgroup>, a_pid: i32) {
    match cgroup {
        Some(cgroup) => {
            let _ = cgroup.kill_all();
        }
        None => {
            // SAFETY: kill with a valid signal; a_pid is our child, not yet reaped.
            unsafe { libc::kill(a_pid, libc::SIGKILL) };
        }
    }
}

/// Receives the listener fd (SCM_RIGHTS), B's landlock report (status code, ABI, kernel ABI) and
/// B's pid in P's pid namespace (SCM_CREDENTIALS, which the kernel attaches because `sock` has
/// SO_PASSCRED); None when the peer closed without sending.
fn receive_fd(sock: &OwnedFd) -> Option<(OwnedFd, [u8; 3], Option<u32>)> {
    let mut payload = [0u8; 3];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut cmsg = [0u64; 8];
    // SAFETY: msghdr is plain data; zero is a valid initial value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg);
    loop {
        // SAFETY: msg points at valid buffers that outlive the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return None;
        }
        break;
    }
    let mut fd = None;
    let mut pid = None;
    // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR handles an empty control buffer.
    let mut header = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    while !header.is_null() {
        // SAFETY: header is non-null and inside `cmsg` (CMSG_NXTHDR checks the bounds).
        let (level, kind) = unsafe { ((*header).cmsg_level, (*header).cmsg_type) };
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            // SAFETY: an SCM_RIGHTS message carries at least one int after the header.
            let raw = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<RawFd>()) };
            // SAFETY: the kernel installed this fd in our table for us.
            fd = Some(unsafe { OwnedFd::from_raw_fd(raw) });
        } else if level == libc::SOL_SOCKET && kind == libc::SCM_CREDENTIALS {
            // SAFETY: an SCM_CREDENTIALS message carries one struct ucred after the header.
            let cred =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<libc::ucred>()) };
            pid = u32::try_from(cred.pid).ok().filter(|&pid| pid != 0);
        }
        // SAFETY: msg and header are valid; CMSG_NXTHDR returns null past the last header.
        header = unsafe { libc::CMSG_NXTHDR(&raw const msg, header) };
    }
    Some((fd?, payload, pid))
}

fn send_fd(sock: RawFd, fd: RawFd, mut payload: [u8; 3]) -> Result<(), String> {
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    let mut cmsg = [0u64; 8];
    // SAFETY: plain data, zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    // SAFETY: the control buffer is large enough for one fd (64 bytes ≥ CMSG_SPACE(4)).
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&raw const msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<RawFd>(), fd);
    }
    // SAFETY: msg points at valid buffers.
    if unsafe { libc::sendmsg(sock, &raw const msg, 0) } != payload.len() as isize {
        return Err(last_os("send the seccomp listener"));
    }
    Ok(())
}

/// Everything the children need, computed before the fork.
struct ChildPlan {
    /// P's pid, which A checks after setting its parent-death signal.
    launcher_pid: i32,
    trees: CageTrees,
    /// An unprivileged caller's cage: setgroups is denied, tasks are bounded by RLIMIT_NPROC.
    unprivileged: bool,
    /// The RLIMIT_NPROC B sets for an unprivileged caller (the spec's pids limit or the default).
    tasks_max: u64,
    rootfs_readonly: bool,
    mounts: Vec<CageMount>,
    masked: Vec<String>,
    readonly: Vec<String>,
    hostname: Option<String>,
    namespaces: Namespaces,
    logical_time_ns: u64,
    args: Vec<CString>,
    env: Vec<CString>,
    program: Option<CString>,
    cwd: CString,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    umask: u32,
    rlimits: Vec<crate::spec::Rlimit>,
    keep_caps: CapSet,
    landlock: LandlockPlan,
    seccomp: &'static CompiledSeccomp,
    quiet: bool,
    /// Write ends of the stdout/stderr pipes P relays (dup2'ed by B before exec).
    stdout_fd: Option<RawFd>,
    stderr_fd: Option<RawFd>,
    cpu: Option<usize>,
    no_aslr: bool,
    pre_exec_delay: Option<Duration>,
}

impl ChildPlan {
    fn new(
        spec: &CageSpec,
        opts: &RunOptions,
        keep_caps: CapSet,
        seccomp: &'static CompiledSeccomp,
        trees: CageTrees,
        program: Option<CString>,
        privilege: Privilege,
    ) -> ChildPlan {
        let mut env = spec.process.env.clone();
        if let Some(seed) = opts.env_shuffle_seed {
            shuffle(&mut env, seed);
        }
        let mut masked: Vec<String> = MASKED_PATHS_DEFAULT.iter().map(|s| s.to_string()).collect();
        masked.extend(spec.masked_paths.iter().map(|p| p.as_str().to_string()));
        let mut readonly: Vec<String> = READONLY_PATHS_DEFAULT
            .iter()
            .map(|s| s.to_string())
            .collect();
        readonly.extend(spec.readonly_paths.iter().map(|p| p.as_str().to_string()));
        // Landlock (applied after pivot_root, so these are cage paths): read+exec everywhere,
        // write only where the spec mounted something writable, /out, and /dev.
        let mut rw: Vec<PathBuf> = vec![PathBuf::from("/dev")];
        for m in &spec.mounts {
            let writable =
                !m.readonly() && matches!(m.kind, MountKind::Tmpfs | MountKind::Bind { .. });
            if writable {
                rw.push(PathBuf::from(m.destination.as_str()));
            }
        }
        if opts.out_dir.is_some() {
            rw.push(PathBuf::from("/out"));
        }
        if !spec.rootfs_readonly {
            rw.push(PathBuf::from("/"));
        }
        let landlock = LandlockPlan {
            read_exec_paths: vec![PathBuf::from("/")],
            read_write_paths: rw,
            tcp_bind_ports: Vec::new(),
            tcp_connect_ports: Vec::new(),
            scoped: true,
            // P reads the denials back from the audit log into the run's violations.
            log_denials_after_exec: true,
        };
        ChildPlan {
            launcher_pid: std::process::id() as i32,
            trees,
            unprivileged: privilege.is_unprivileged(),
            tasks_max: pids_limit(spec),
            rootfs_readonly: spec.rootfs_readonly,
            mounts: spec.mounts.clone(),
            masked,
            readonly,
            hostname: spec.hostname.clone(),
            namespaces: cage_namespaces(spec, privilege),
            logical_time_ns: opts.logical_time_ns,
            args: spec
                .process
                .args
                .iter()
                .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
                .collect(),
            env: env
                .iter()
                .map(|e| CString::new(e.as_bytes()).unwrap_or_default())
                .collect(),
            program,
            cwd: CString::new(spec.process.cwd.as_str()).unwrap_or_default(),
            uid: spec.process.uid,
            gid: spec.process.gid,
            groups: spec.process.additional_gids.clone(),
            umask: spec.process.umask.or(opts.umask).unwrap_or(0o022),
            rlimits: spec.process.rlimits.clone(),
            keep_caps,
            landlock,
            seccomp,
            quiet: opts.quiet,
            stdout_fd: None,
            stderr_fd: None,
            cpu: opts.cpu,
            no_aslr: opts.no_aslr,
            pre_exec_delay: opts.pre_exec_delay,
        }
    }
}

/// Deterministic Fisher-Yates with SplitMix64 (replay perturbation only).
fn shuffle(items: &mut [String], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// The program to exec, as a cage path: args[0] if it has a '/', else looked up in the spec's PATH
/// inside the rootfs (glibc's execvpe would search the launcher's PATH, not the cage's), through
/// the rootfs fd with the rootfs as `/` (RESOLVE_IN_ROOT).
fn resolve_program(spec: &CageSpec, rootfs: &OwnedFd) -> Option<CString> {
    let first = spec.process.args.first()?;
    if first.contains('/') {
        return CString::new(first.as_bytes()).ok();
    }
    let path_var = spec
        .process
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(crate::spec::DEFAULT_PATH);
    for dir in path_var.split(':').filter(|d| d.starts_with('/')) {
        let candidate = format!("{}/{first}", dir.trim_end_matches('/'));
        let found = rustix::fs::openat2(
            rootfs,
            candidate.trim_start_matches('/'),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
            rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS,
        )
        .and_then(|fd| rustix::fs::fstat(&fd));
        if let Ok(stat) = found
            && rustix::fs::FileType::from_raw_mode(stat.st_mode)
                == rustix::fs::FileType::RegularFile
        {
            return CString::new(candidate).ok();
        }
    }
    None
}

/// A: joins the cgroup (moves itself; or was created inside it on v2), unshares, sets the clocks,
/// forks B, relays B's status. Returns A's exit code.
fn process_a(
    plan: &ChildPlan,
    (cgroup, in_v2_cgroup): (Option<&CageCgroup>, bool),
    err_w: OwnedFd,
    status_w: OwnedFd,
    sock: OwnedFd,
    (unshared_w, mapped_r): (OwnedFd, OwnedFd),
) -> i32 {
    let report = |msg: String| {
        let mut f = std::fs::File::from(err_w.try_clone().expect_or_exit());
        let _ = f.write_all(msg.as_bytes());
    };
    // If P dies, so does A, and with A every tracee (PTRACE_O_EXITKILL): nothing would watch
    // the cage's deadline or answer its refused calls, and a cage without a cgroup would have
    // no other way to be ended. Checked against P's pid afterwards: P may have died before.
    if let Err(e) = metanode_confine::set_parent_death_signal(metanode_confine::Signal::KILL) {
        report(format!("set the parent-death signal: {e}"));
        return 1;
    }
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != plan.launcher_pid {
        return 1;
    }
    // A traces the cage from inside its memory cgroup: it must never be the OOM victim, or the
    // run would end as a set-up failure instead of a recorded OOM kill of the workload.
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    // Before the unshare, so that A's cgroup namespace is rooted at the cage, and before any
    // fork, so that every cage process is counted and limited. A is single-threaded here, which
    // `add_self` needs (on v1 it moves the calling thread). A never drops `cgroup` (it ends in
    // _exit), so the cage is not removed from here.
    if let Some(cgroup) = cgroup
        && let Err(e) = cgroup.add_self(in_v2_cgroup)
    {
        report(format!("join the cage cgroup: {e}"));
        return 1;
    }
    // The way back out, opened while A is still host root: once A is cage root (an unprivileged
    // host uid) it may no longer open the root-owned parent `tasks` files, and v1 checks a write
    // against the opener's credentials. Without it A stays in the cage and P must wait for A's
    // exit before removing the cage (0.4-0.85 ms per spawn measured here). None on v2; an error
    // only costs that wait.
    let leave = cgroup.and_then(|cgroup| cgroup.prepare_leave().ok().flatten());
    // Every namespace but the mount namespace: B unshares its own (owned by the user namespace
    // created here, so the same locked copy of the host's mounts), and a mount namespace of A's
    // would only be one more copy of the host's mount table to make now and to tear down, with
    // an RCU grace period, when A exits. A itself never mounts; it keeps the host's view, which
    // its tracing of B through /proc needs anyway.
    let flags = plan.namespaces.unshare_flags() & !libc::CLONE_NEWNS;
    // SAFETY: unshare with namespace flags only affects this process.
    if unsafe { libc::unshare(flags) } != 0 {
        report(last_os("unshare the cage namespaces"));
        return 1;
    }
    {
        let mut byte = [0u8; 1];
        if std::fs::File::from(unshared_w).write_all(b"u").is_err()
            || std::fs::File::from(mapped_r).read_exact(&mut byte).is_err()
            || byte[0] != b'm'
        {
            return 1;
        }
        // Become root of the namespace (A kept its host ids, which may map to nobody there), so
        // that B and a workload running as uid 0 are uid 0 inside.
        // SAFETY: setresgid/setresuid with plain ids affect only this process.
        let became_root = unsafe { libc::setresgid(0, 0, 0) == 0 && libc::setresuid(0, 0, 0) == 0 };
        if !became_root {
            report(last_os(
                "become uid/gid 0 in the user namespace (the id maps must map 0)",
            ));
            return 1;
        }
        // The id change cleared the dumpable flag, which hands /proc/self to host root; A must
        // still write its own timens_offsets (runc sets it back for the same reason).
        // SAFETY: prctl with integer arguments on this process.
        if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) } != 0 {
            report(last_os("set the dumpable flag"));
            return 1;
        }
    }
    if plan.namespaces.contains(Namespaces::TIME)
        && let Err(e) = set_time_offsets(plan.logical_time_ns)
    {
        report(e);
        return 1;
    }
    // B waits until A has seized it: A traces the whole cage so that every exec's vDSO is hidden
    // (the wall clock must reach the seccomp supervisor), and ptrace must be set up before B
    // installs the seccomp policy, which refuses ptrace.
    let Ok((traced_r, traced_w)) = pipe() else {
        report(last_os("pipe"));
        return 1;
    };
    // SAFETY: A is single-threaded (a fork of a single-threaded process).
    let b_pid = unsafe { libc::fork() };
    if b_pid < 0 {
        report(last_os("fork the workload"));
        return 1;
    }
    if b_pid == 0 {
        // B inherited the panic hook and CHILD_PANIC_FD (A's error pipe, B's too until exec).
        drop(traced_w);
        let mut byte = [0u8; 1];
        if std::fs::File::from(traced_r).read_exact(&mut byte).is_err() || byte[0] != b't' {
            // SAFETY: always safe.
            unsafe { libc::_exit(126) };
        }
        let result = process_b(plan, sock.as_raw_fd(), err_w.as_raw_fd());
        // Only reached on failure: exec replaces the image on success.
        if let Err(msg) = result {
            report(msg);
        }
        // SAFETY: always safe.
        unsafe { libc::_exit(127) };
    }
    drop(traced_r);
    // Only B and the workload may hold the stdout/stderr pipes: P's relay must see end-of-file
    // when the cage is gone, while A may still be reporting.
    for fd in [plan.stdout_fd, plan.stderr_fd].into_iter().flatten() {
        // SAFETY: closing inherited copies A owns and never uses (EBADF on the second close of a
        // shared pipe is harmless).
        unsafe { libc::close(fd) };
    }
    if let Err(e) = metanode_confine::seize_for_cage(b_pid) {
        report(format!("ptrace-seize the workload: {e}"));
        // SAFETY: our own child.
        unsafe { libc::kill(b_pid, libc::SIGKILL) };
        return 1;
    }
    let _ = std::fs::File::from(traced_w).write_all(b"t");
    drop(sock);
    // The error pipe must close now (B's copy closes at exec) so that P sees the exec and starts
    // the seccomp supervisor; A's later reports travel after the status on the status pipe (a
    // panic from here on goes to stderr: its fd number may be reused).
    CHILD_PANIC_FD.store(-1, Ordering::SeqCst);
    drop(err_w);
    // B denies itself the TSC before its exec; every read in the cage is answered here from a
    // counter that starts at the logical time.
    let trace = metanode_confine::follow_cage(
        b_pid,
        metanode_confine::Attach::Seized,
        Some(metanode_confine::VirtualTsc::from_logical_time(
            plan.logical_time_ns,
        )),
    );
    let (status, tsc_reads_count, note, workload_mount_ns) = match trace {
        Ok(trace) => (
            trace.root_status.into_raw(),
            trace.tsc_reads_count,
            trace.first_hide_failure.map(|failure| {
                format!(
                    "hiding the vDSO failed for {} exec(s), those processes were killed: {failure:?}",
                    trace.hide_failures_count
                )
            }),
            trace.root_mount_ns,
        ),
        Err(e) => (0, 0, Some(format!("tracing the cage: {e}")), None),
    };
    // Every cage process is gone. Leave the cage cgroup (v1: a cheap self-move) so P can remove it
    // without waiting for A's exit; then report, and only then let go of the workload's mount
    // namespace, whose teardown (held off the workload's exit by the tracer) is A's to pay.
    let left = match cgroup {
        Some(cgroup) => leave.is_some_and(|prepared| cgroup.leave_prepared(prepared).is_ok()),
        // Nothing to leave: P need not wait for A's exit.
        None => true,
    };
    let mut message = vec![if left { A_LEFT_CGROUP } else { A_IN_CGROUP }];
    message.extend_from_slice(&status.to_le_bytes());
    message.extend_from_slice(&tsc_reads_count.to_le_bytes());
    message.extend_from_slice(note.unwrap_or_default().as_bytes());
    let _ = std::fs::File::from(status_w).write_all(&message);
    drop(workload_mount_ns);
    0
}

/// A's report: one byte [`A_LEFT_CGROUP`] or [`A_IN_CGROUP`], the workload's wait status (i32
/// LE), the TSC reads answered (u64 LE), then a note when tracing failed.
const A_REPORT_HEADER_BYTES: usize = 1 + 4 + 8;

/// First byte of A's report: whether A left the cage cgroup before reporting.
const A_LEFT_CGROUP: u8 = b'L';
const A_IN_CGROUP: u8 = b'S';

trait ExpectOrExit<T> {
    fn expect_or_exit(self) -> T;
}

impl<T, E> ExpectOrExit<T> for Result<T, E> {
    /// In a forked child there is nobody to return an error to: exit.
    fn expect_or_exit(self) -> T {
        match self {
            Ok(v) => v,
            // SAFETY: always safe.
            Err(_) => unsafe { libc::_exit(126) },
        }
    }
}

/// Writes the time-namespace offsets so that CLOCK_MONOTONIC and CLOCK_BOOTTIME read
/// `logical_time_ns` now. The kernel refuses offsets that would make a clock negative, and
/// accepts them only before the first process enters the namespace (B is forked next).
fn set_time_offsets(logical_time_ns: u64) -> Result<(), String> {
    let mut text = String::new();
    for (name, clock) in [
        ("monotonic", libc::CLOCK_MONOTONIC),
        ("boottime", libc::CLOCK_BOOTTIME),
    ] {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out pointer.
        unsafe { libc::clock_gettime(clock, &raw mut now) };
        let now_ns = now.tv_sec as i128 * 1_000_000_000 + now.tv_nsec as i128;
        let offset_ns = logical_time_ns as i128 - now_ns;
        let secs = offset_ns.div_euclid(1_000_000_000);
        let nanos = offset_ns.rem_euclid(1_000_000_000);
        text.push_str(&format!("{name} {secs} {nanos}\n"));
    }
    std::fs::write("/proc/self/timens_offsets", text)
        .map_err(|e| format!("write /proc/self/timens_offsets: {e}"))
}

fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: u64,
    data: Option<&str>,
) -> Result<(), String> {
    let src = source.map(cpath);
    let tgt = cpath(target);
    let fs = fstype.map(|t| CString::new(t).unwrap_or_default());
    let dat = data.map(|d| CString::new(d).unwrap_or_default());
    // SAFETY: every pointer is a valid NUL-terminated string or null.
    let rc = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            tgt.as_ptr(),
            fs.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            dat.as_ref().map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    if rc != 0 {
        return Err(last_os(&format!(
            "mount {} on {}",
            fstype.unwrap_or("bind"),
            target.display()
        )));
    }
    Ok(())
}

/// B: PID 1 of the cage. Builds the filesystem, confines itself, execs. Returns only on failure.
fn process_b(plan: &ChildPlan, sock: RawFd, err_w: RawFd) -> Result<(), String> {
    metanode_confine::set_parent_death_signal(metanode_confine::Signal::KILL)
        .map_err(|e| format!("set the parent-death signal: {e}"))?;
    // A session of its own: kill(0, ...) and kill(-pgrp, ...) reach a process group across pid
    // namespaces, and the launcher's group holds the caller's pipeline (for an unprivileged
    // caller the workload's uid is the caller's, so the credential check would not stop it).
    // SAFETY: setsid only affects this process; B is not a group leader (a fork of A).
    if unsafe { libc::setsid() } < 0 {
        return Err(last_os("start a session of its own (setsid)"));
    }
    // A mount namespace of B's own: pivot_root moves the root of every process of the namespace,
    // and A (the tracer) must keep seeing the host's /proc to reach B's memory.
    // SAFETY: unshare only affects this process.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(last_os("unshare the workload's mount namespace"));
    }
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    // For an unprivileged caller the trees are cloned here, in this namespace (see
    // `Source::clone_tree`); P cloned them for root.
    let cloned_here;
    let trees = match &plan.trees {
        CageTrees::Cloned(trees) => trees,
        CageTrees::CloneInCage(sources) => {
            cloned_here = sources.clone_trees(true)?;
            &cloned_here
        }
    };
    // The rootfs tree (nodev, nosuid, private) is attached over this namespace's `/`: no path
    // names it, and absolute lookups here still start at the old root (a process's root does
    // not follow an overmount), which the /dev/null binds and /proc/self/fd rely on until
    // pivot_root.
    let root = &trees.rootfs;
    let old_root = rustix::fs::open(
        "/",
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| format!("open /: {e}"))?;
    crate::rootfs::attach(root, &old_root, "attach the rootfs")?;
    drop(old_root);
    crate::rootfs::prepare(&crate::rootfs::RootfsPlan {
        root,
        mounts: &plan.mounts,
        bind_trees: &trees.binds,
        out_tree: trees.out.as_ref(),
        random_trees: [&trees.random[0], &trees.random[1]],
        masked: &plan.masked,
        readonly: &plan.readonly,
        dev_tmpfs_size_bytes: crate::limits::DEV_TMPFS_SIZE_BYTES,
    })?;
    if let CageTrees::CloneInCage(sources) = &plan.trees {
        sources.remove_fifo()?;
    }
    pivot(root)?;
    if plan.rootfs_readonly {
        crate::rootfs::make_readonly(Path::new("/"))?;
    }
    if let Some(name) = &plan.hostname {
        // SAFETY: name points at name.len() valid bytes.
        if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
            return Err(last_os("sethostname"));
        }
    }
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(plan.umask as libc::mode_t) };
    if let Some(cpu) = plan.cpu {
        // (CPU_SET would panic past the set's size: checked first.)
        if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(format!("cpu {cpu} is beyond the affinity mask"));
        }
        // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it (index checked above).
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set)
        };
        // A replay must not report a perturbation that did not happen.
        if rc != 0 {
            return Err(last_os(&format!("pin to cpu {cpu}")));
        }
    }
    if plan.no_aslr {
        // SAFETY: personality only changes this process's execution domain flags.
        if unsafe { libc::personality(libc::ADDR_NO_RANDOMIZE as libc::c_ulong) } < 0 {
            return Err(last_os("personality(ADDR_NO_RANDOMIZE)"));
        }
    }
    // Identity: keep capabilities across setuid only long enough to drop them precisely.
    if plan.uid != 0 || plan.gid != 0 || !plan.groups.is_empty() {
        // SAFETY: prctl/setgroups/setresgid/setresuid with valid arguments.
        unsafe {
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0);
            if libc::setgroups(plan.groups.len(), plan.groups.as_ptr()) != 0 {
                return Err(last_os("setgroups"));
            }
            if libc::setresgid(plan.gid, plan.gid, plan.gid) != 0 {
                return Err(last_os("setresgid"));
            }
            if libc::setresuid(plan.uid, plan.uid, plan.uid) != 0 {
                return Err(last_os("setresuid"));
            }
        }
    } else if !plan.unprivileged {
        // SAFETY: valid (empty) group list.
        if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
            return Err(last_os("setgroups"));
        }
    }
    // SAFETY: cwd is a valid C string.
    if unsafe { libc::chdir(plan.cwd.as_ptr()) } != 0 {
        return Err(last_os(&format!("chdir {}", plan.cwd.to_string_lossy())));
    }
    // stdin is never the caller's: it would be an undeclared input (and a terminal to play
    // TIOCSTI games with). The cage's /dev/null is the host's null device.
    // SAFETY: open + dup2 on fds we own; the path is a valid C string.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
        if null < 0 || libc::dup2(null, 0) < 0 {
            return Err(last_os("point stdin at /dev/null"));
        }
        libc::close(null);
    }
    for (fd, target) in [(plan.stdout_fd, 1), (plan.stderr_fd, 2)] {
        if let Some(fd) = fd {
            // SAFETY: fd was opened by P for this purpose and inherited across fork.
            if unsafe { libc::dup2(fd, target) } < 0 {
                return Err(last_os(&format!(
                    "redirect fd {target} to its capture file"
                )));
            }
        }
    }
    if plan.quiet {
        // SAFETY: open + dup2 on fds we own.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null >= 0 {
                if plan.stdout_fd.is_none() {
                    libc::dup2(null, 1);
                }
                if plan.stderr_fd.is_none() {
                    libc::dup2(null, 2);
                }
                libc::close(null);
            }
        }
    }
    metanode_confine::close_fds_except(&[0, 1, 2, sock, err_w])
        .map_err(|e| format!("close undeclared fds: {e}"))?;
    metanode_confine::drop_capabilities(plan.keep_caps)
        .map_err(|e| format!("drop capabilities: {e}"))?;
    if plan.unprivileged {
        // The cage's pids limit without a cgroup: the kernel counts RLIMIT_NPROC per uid in the
        // cage's user namespace, and the cage has one uid (A, uid 0 there too, is counted, as
        // the pids controller counts it). Before the spec's rlimits, which may lower it.
        let limit = libc::rlimit {
            rlim_cur: plan.tasks_max,
            rlim_max: plan.tasks_max,
        };
        // SAFETY: valid rlimit pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &raw const limit) } != 0 {
            return Err(last_os("setrlimit(RLIMIT_NPROC) to the pids limit"));
        }
    }
    // rlimits only after the capabilities are gone, so a spec can lower hard limits but never
    // raise them (RLIMIT_RTPRIO would otherwise let the workload starve the host with SCHED_FIFO).
    for r in &plan.rlimits {
        let limit = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: valid rlimit pointer; resource numbers were validated by the spec parser.
        if unsafe { libc::setrlimit(r.resource as _, &raw const limit) } != 0 {
            return Err(last_os(&format!("setrlimit({})", r.resource)));
        }
    }
    metanode_confine::set_no_new_privs().map_err(|e| format!("set no_new_privs: {e}"))?;
    let landlock = metanode_confine::restrict_landlock(&plan.landlock)
        .map_err(|e| format!("landlock: {e}"))?;
    let Some(program) = &plan.program else {
        return Err(format!(
            "program {:?} not found in the cage's PATH",
            plan.args.first().map(|a| a.to_string_lossy().into_owned())
        ));
    };
    if let Some(delay) = plan.pre_exec_delay {
        std::thread::sleep(delay);
    }
    // rdtsc/rdtscp now fault, and A (the tracer) answers them from the virtual counter: the
    // cycle counter is the one clock the time namespace does not virtualize. Before seccomp,
    // whose policy refuses PR_SET_TSC (a workload could switch the counter back on).
    metanode_confine::deny_tsc().map_err(|e| format!("deny the TSC (PR_SET_TSC): {e}"))?;
    let listener = plan
        .seccomp
        .install()
        .map_err(|e| format!("seccomp: {e}"))?;
    // From here on only calls the allowlist permits: sendmsg, close, execve.
    // B's own landlock report travels with the listener: the receipt records what the kernel
    // enforced, not what P predicted.
    send_fd(
        sock,
        listener.as_raw_fd(),
        [landlock.status.code(), landlock.abi, landlock.kernel_abi],
    )?;
    drop(listener);
    let mut argv: Vec<*const libc::c_char> = plan.args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: program, argv and envp are NUL-terminated and outlive the call.
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(last_os(&format!("execve {}", program.to_string_lossy())))
}

/// pivot_root(".", ".") then detach the old root: runc's way, no temporary directory needed.
/// The rootfs is entered through its fd, and is already attached over this namespace's `/`.
///
/// When the host runs from its initramfs (the appliance: PID 1 never leaves it), pivot_root
/// fails with EINVAL: the namespace's root mount is the rootfs, which has no parent to detach
/// from. Then the cage root, already mounted over `/`, is entered with chroot(".") instead
/// (runc's no-pivot mode does the same after MS_MOVE). What stays beneath it, the initramfs and
/// the host mounts copied into this namespace, is unreachable by path and hidden from the cage's
/// mountinfo; getting back to it needs an fd outside the root (all undeclared fds are closed),
/// another process's /proc/<pid>/root (the cage's pid namespace holds only cage processes),
/// chroot or mount (no capabilities; seccomp refuses both), or setns/open_by_handle_at (refused).
fn pivot(root: &OwnedFd) -> Result<(), String> {
    // SAFETY: fchdir on our own fd, then valid paths; these syscalls only affect this mount
    // namespace (chroot: this process).
    unsafe {
        if libc::fchdir(root.as_raw_fd()) != 0 {
            return Err(last_os("enter the rootfs"));
        }
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) == 0 {
            if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 {
                return Err(last_os("detach the old root"));
            }
        } else {
            let pivot_error = std::io::Error::last_os_error();
            if pivot_error.raw_os_error() != Some(libc::EINVAL) || !root_is_initramfs() {
                return Err(format!("pivot_root: {pivot_error}"));
            }
            if libc::chroot(c".".as_ptr()) != 0 {
                return Err(last_os(
                    "chroot into the rootfs (pivot_root cannot leave the host's initramfs)",
                ));
            }
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(last_os("chdir /"));
        }
    }
    Ok(())
}

/// Whether the launcher's root is the initramfs: mounted as `rootfs` on `/` (ramfs, or tmpfs
/// with `rootfstype=tmpfs`), where the workload's pivot_root fails and it uses chroot.
fn host_runs_from_initramfs() -> bool {
    root_is_initramfs()
        && std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|info| {
            info.lines().any(|line| {
                let mount_point = line.split(' ').nth(4);
                let fs_type = line
                    .split_once(" - ")
                    .and_then(|(_, rest)| rest.split(' ').next());
                mount_point == Some("/") && fs_type == Some("rootfs")
            })
        })
}

/// Whether this process's root is on a ramfs or tmpfs: with pivot_root's EINVAL, the rootfs
/// (initramfs) that pivot_root refuses to move away from. The workload checks only this: its
/// `/` is its namespace's root mount, whatever is attached over it.
fn root_is_initramfs() -> bool {
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    match rustix::fs::statfs("/") {
        Ok(fs) => matches!(fs.f_type, RAMFS_MAGIC | TMPFS_MAGIC),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic in a forked child never unwinds into the parent's frames: the child's hook
    /// reports it on the error pipe and `_exit`s with CHILD_PANIC_EXIT_CODE.
    #[test]
    fn a_panicking_child_reports_and_exits() {
        let _forking = crate::test_fork_guard();
        let (r, w) = pipe().expect("pipe");
        // SAFETY: the child only runs child_main, which ends in _exit (or the hook's _exit).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            drop(r);
            child_main(w.as_raw_fd(), || -> i32 {
                panic!("set-up invariant broken")
            });
        }
        drop(w);
        let mut status = 0;
        // SAFETY: our own child; valid out pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), CHILD_PANIC_EXIT_CODE);
        let mut message = String::new();
        std::fs::File::from(r)
            .read_to_string(&mut message)
            .expect("read the report");
        assert!(
            message.starts_with("docklock: a cage set-up process panicked: ")
                && message.contains("set-up invariant broken"),
            "{message}"
        );
    }

    /// clone3(CLONE_INTO_CGROUP) on the real kernel: the child's first look at /proc/self/cgroup
    /// already shows the v2 cgroup it was created in (no migration happened). Needs root and a
    /// cgroup2 mount (this CI machine has one at /sys/fs/cgroup/unified, the appliance at
    /// /sys/fs/cgroup); skipped with a printed reason otherwise.
    #[test]
    fn fork_into_cgroup_starts_the_child_in_the_v2_cgroup() {
        let _forking = crate::test_fork_guard();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipping: needs root to create a cgroup");
            return;
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let Some(mount) = mountinfo.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split(' ').nth(4).map(PathBuf::from))
                .flatten()
        }) else {
            println!("skipping: no cgroup2 mount");
            return;
        };
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("own cgroup");
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("a 0:: line beside a cgroup2 mount");
        let name = format!("docklock-clone3-{}", std::process::id());
        let dir = mount.join(own.trim_start_matches('/')).join(&name);
        std::fs::create_dir(&dir).expect("mkdir the test cgroup");
        let fd = rustix::fs::open(
            &dir,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .expect("open the test cgroup");
        let (r, w) = pipe().expect("pipe");
        let (pid, joined) = fork_into_cgroup(Some(&fd)).expect("clone3");
        if pid == 0 {
            // The test harness has other threads: raw syscalls only until _exit.
            let mut buf = [0u8; 4096];
            // SAFETY: valid path and buffer; _exit ends the child.
            unsafe {
                let f = libc::open(c"/proc/self/cgroup".as_ptr(), libc::O_RDONLY);
                let n = libc::read(f, buf.as_mut_ptr().cast(), buf.len());
                if n > 0 {
                    libc::write(w.as_raw_fd(), buf.as_ptr().cast(), n as usize);
                }
                libc::_exit(0);
            }
        }
        drop(w);
        let mut seen = String::new();
        std::fs::File::from(r)
            .read_to_string(&mut seen)
            .expect("read the child's report");
        reap(pid);
        let _ = std::fs::remove_dir(&dir);
        assert!(
            joined,
            "clone3 CLONE_INTO_CGROUP fell back to fork on Linux 6.18"
        );
        let line = seen
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or_default();
        assert!(line.ends_with(&format!("/{name}")), "{seen}");
        // Without a cgroup it is a plain fork.
        let (pid, joined) = fork_into_cgroup(None).expect("fork");
        if pid == 0 {
            // SAFETY: always safe.
            unsafe { libc::_exit(0) };
        }
        reap(pid);
        assert!(!joined);
    }

    #[test]
    fn a_returning_child_exits_with_its_code() {
        let _forking = crate::test_fork_guard();
        // SAFETY: as above.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            child_main(-1, || 42);
        }
        let mut status = 0;
        // SAFETY: our own child; valid out pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 42);
    }

    #[test]
    fn default_mapping_and_host_ids() {
        let maps = [
            IdMapping {
                container_id: 0,
                host_id: 100_000,
                size: 1000,
            },
            IdMapping {
                container_id: 5000,
                host_id: 200_000,
                size: 10,
            },
        ];
        assert_eq!(to_host_id(&maps, 0), Some(100_000));
        assert_eq!(to_host_id(&maps, 999), Some(100_999));
        assert_eq!(to_host_id(&maps, 1000), None);
        assert_eq!(to_host_id(&maps, 5009), Some(200_009));
        let spec = CageSpec::from_executable(Path::new("/bin/true"), &[], &[], &[]).expect("true");
        let (uid_map, gid_map) = id_maps(&spec, Privilege::Root).expect("default maps");
        let expected = [IdMapping {
            container_id: 0,
            host_id: crate::limits::CAGE_HOST_ID_BASE,
            size: crate::limits::CAGE_ID_RANGE_SIZE,
        }];
        assert_eq!(uid_map, expected);
        assert_eq!(gid_map, expected);
    }

    /// An unprivileged caller maps exactly its own uid and gid as cage 0: by default, or when
    /// the spec asks for just that; any other map is refused naming the field.
    #[test]
    fn unprivileged_caller_maps_only_itself() {
        let caller = Privilege::Unprivileged {
            uid: 1000,
            gid: 1001,
        };
        let mut spec =
            CageSpec::from_executable(Path::new("/bin/true"), &[], &[], &[]).expect("true");
        let (uid_map, gid_map) = id_maps(&spec, caller).expect("own maps");
        let own = |host_id| {
            [IdMapping {
                container_id: 0,
                host_id,
                size: 1,
            }]
        };
        assert_eq!(uid_map, own(1000));
        assert_eq!(gid_map, own(1001));
        spec.uid_mappings = own(1000).to_vec();
        assert_eq!(id_maps(&spec, caller).expect("same map").0, own(1000));
        spec.uid_mappings = vec![IdMapping {
            container_id: 0,
            host_id: 100_000,
            size: 65_536,
        }];
        let refused = id_maps(&spec, caller).expect_err("a range is not the caller's own id");
        assert!(
            matches!(
                refused,
                RunError::Unprivileged {
                    field: "linux.uidMappings",
                    ..
                }
            ),
            "{refused}"
        );
    }

    /// Limits that need a cgroup, and additional groups (setgroups is denied), are refused for
    /// an unprivileged caller by field; the pids limit is not (it becomes RLIMIT_NPROC).
    #[test]
    fn unprivileged_caller_refuses_cgroup_limits_by_field() {
        let spec = || {
            let mut spec =
                CageSpec::from_executable(Path::new("/bin/true"), &[], &[], &[]).expect("true");
            // The plain-executable default memory limit (the CLI drops it for an unprivileged
            // caller, with a warning).
            spec.resources = Default::default();
            spec
        };
        assert!(check_unprivileged(&spec()).is_ok());
        let mut pids = spec();
        pids.resources.pids_max = Some(32);
        assert!(check_unprivileged(&pids).is_ok());
        let mut memory = spec();
        memory.resources.memory_limit_bytes = Some(1 << 28);
        let refused = check_unprivileged(&memory).expect_err("memory limit needs a cgroup");
        assert!(
            refused
                .to_string()
                .starts_with("linux.resources.memory.limit: "),
            "{refused}"
        );
        let mut cpu = spec();
        cpu.resources.cpu_quota_us = Some(50_000);
        assert!(matches!(
            check_unprivileged(&cpu),
            Err(RunError::Unprivileged {
                field: "linux.resources.cpu.quota",
                ..
            })
        ));
        let mut groups = spec();
        groups.process.additional_gids = vec![5];
        assert!(matches!(
            check_unprivileged(&groups),
            Err(RunError::Unprivileged {
                field: "process.user.additionalGids",
                ..
            })
        ));
        let namespaces = cage_namespaces(&spec(), Privilege::Unprivileged { uid: 1, gid: 1 });
        assert!(namespaces.contains(Namespaces::PID) && namespaces.contains(Namespaces::USER));
    }

    /// The post-run scan strips setuid/setgid bits (files only), removes device nodes, leaves
    /// everything else, and never follows symlinks.
    #[test]
    fn output_scan_strips_setid_bits_and_removes_device_nodes() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path();
        std::fs::create_dir(out.join("sub")).expect("mkdir");
        std::fs::write(out.join("sub/tool"), b"x").expect("write");
        std::fs::set_permissions(
            out.join("sub/tool"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .expect("chmod");
        std::fs::write(out.join("plain"), b"y").expect("write");
        // A symlink to a setuid file outside /out must not be followed.
        let outside = tempfile::NamedTempFile::new().expect("outside");
        std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o2755))
            .expect("chmod");
        std::os::unix::fs::symlink(outside.path(), out.join("link")).expect("symlink");
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            let node = CString::new(out.join("null").as_os_str().as_bytes()).expect("path");
            // SAFETY: valid path; a char device node (1,3) = /dev/null's numbers.
            let rc =
                unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
            assert_eq!(rc, 0, "mknod");
        }
        let node_mode = if root {
            std::fs::symlink_metadata(out.join("null"))
                .expect("stat node")
                .mode()
        } else {
            0
        };
        let (violations, dropped) = scan_outputs(out).expect("scan");
        assert_eq!(dropped, 0);
        let mut expected = vec![OutputViolation {
            path: PathBuf::from("sub/tool"),
            kind: OutputViolationKind::SetidBitsStripped { mode: 0o4755 },
        }];
        if root {
            expected.insert(
                0,
                OutputViolation {
                    path: PathBuf::from("null"),
                    kind: OutputViolationKind::DeviceNodeRemoved { mode: node_mode },
                },
            );
        }
        let mut got = violations;
        got.sort_by(|a, b| a.path.cmp(&b.path));
        expected.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(got, expected);
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode(&out.join("sub/tool")), 0o755);
        assert_eq!(
            mode(outside.path()),
            0o2755,
            "followed a symlink out of /out"
        );
        assert!(!out.join("null").exists());
        assert!(out.join("plain").exists());
    }
}
