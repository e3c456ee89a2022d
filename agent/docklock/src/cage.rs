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
//! With `user` in the spec's namespaces, A unshares it together with the others, tells P, and
//! waits while P writes the uid/gid maps (the spec's, or container 0 → the caller's ids); A then
//! becomes uid/gid 0 of the namespace. Everything after that (mounts, the tracer, the clocks) runs
//! with capabilities of that namespace only.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metanode_cgroup::{CageCgroup, CgroupLayout, CgroupLimits, CgroupMode, CgroupUsage};
use metanode_confine::{CapSet, LandlockPlan, LandlockReport};
use metanode_seccomp::{CompiledSeccomp, SeccompPolicy, Violation};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore as _, SeedableRng as _};

use crate::spec::{CageMount, CageSpec, MountKind, Namespaces};

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

/// Bytes of the seeded stream written per FIFO write.
const URANDOM_CHUNK_BYTES: usize = 4096;
/// How often blocked helper threads re-check whether the cage is finished.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
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
    #[error(
        "docklock needs root: it creates the cage's cgroup (unprivileged callers would need a delegated cgroup subtree, not supported yet); root callers get a user namespace by listing `user` in linux.namespaces"
    )]
    NotRoot,
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

/// A pipe, both ends close-on-exec.
fn pipe() -> Result<(OwnedFd, OwnedFd), RunError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-int array for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io_err("pipe2")(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Runs `spec` caged. Blocks until every process of the cage is gone.
pub fn run(spec: &CageSpec, opts: &RunOptions) -> Result<RunOutcome, RunError> {
    let threads = thread_count();
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
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(RunError::NotRoot);
    }
    let seccomp = SeccompPolicy::builtin()?.compile()?;
    let keep_caps = CapSet::parse_names(&spec.process.capabilities.union())?;
    let layout = CgroupLayout::discover().map_err(metanode_cgroup::CgroupError::from)?;
    let limits = cgroup_limits(spec);
    let cgroup = CageCgroup::create(&layout, &opts.cage_id, &limits)
        .map_err(metanode_cgroup::CgroupError::from)?;
    let cgroup_mode = cgroup.mode();

    if let Some(out) = &opts.out_dir {
        std::fs::create_dir_all(out).map_err(io_err(format!("create {}", out.display())))?;
    }
    // The seeded randomness: a FIFO on the host, bind-mounted over /dev/urandom and /dev/random.
    let fifo_dir = tempfile::Builder::new()
        .prefix("docklock-rng-")
        .tempdir()
        .map_err(io_err("create the randomness FIFO directory"))?;
    let fifo_path = fifo_dir.path().join("urandom");
    let fifo_c = cpath(&fifo_path);
    // SAFETY: fifo_c is a valid NUL-terminated path.
    if unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o444) } != 0 {
        return Err(io_err("mkfifo")(std::io::Error::last_os_error()));
    }
    // O_RDWR so the open does not wait for a reader; non-blocking so the feeder can stop.
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
    // A big pipe buffer, kept full by the feeder, makes a read of up to this size return whole, so a
    // workload that does not loop on short reads still sees the same bytes run after run. Best
    // effort: past /proc/sys/fs/pipe-max-size the default buffer stays.
    // SAFETY: fcntl on our own fd with an integer argument.
    unsafe {
        libc::fcntl(
            fifo.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            crate::limits::URANDOM_PIPE_SIZE_BYTES as libc::c_int,
        )
    };

    let (go_r, go_w) = pipe()?;
    // With a user namespace, A reports "unshared" and waits for P to write its id maps (only a
    // process outside the namespace may, and only once, before A relies on any id in it).
    let userns_pipes = if spec.namespaces.contains(Namespaces::USER) {
        let (unshared_r, unshared_w) = pipe()?;
        let (mapped_r, mapped_w) = pipe()?;
        Some(((unshared_r, mapped_w), (unshared_w, mapped_r)))
    } else {
        None
    };
    let (userns_parent, userns_child) = match userns_pipes {
        Some((parent, child)) => (Some(parent), Some(child)),
        None => (None, None),
    };
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

    let mut plan = ChildPlan::new(spec, opts, &fifo_path, keep_caps, &seccomp);
    let stdout_file = open_capture(opts.stdout_file.as_deref())?;
    let stderr_file = match (&opts.stderr_file, &opts.stdout_file, &stdout_file) {
        (Some(err), Some(out), Some(file)) if err == out => Some(
            file.try_clone()
                .map_err(io_err(format!("share {} for stderr", err.display())))?,
        ),
        _ => open_capture(opts.stderr_file.as_deref())?,
    };
    plan.stdout_fd = stdout_file.as_ref().map(|f| f.as_raw_fd());
    plan.stderr_fd = stderr_file.as_ref().map(|f| f.as_raw_fd());
    let started = Instant::now();
    // SAFETY: the process is single-threaded (checked above), so the child may run ordinary code.
    let a_pid = unsafe { libc::fork() };
    if a_pid < 0 {
        return Err(io_err("fork")(std::io::Error::last_os_error()));
    }
    if a_pid == 0 {
        drop((go_w, err_r, status_r, sock_p, fifo, userns_parent));
        let code = process_a(&plan, go_r, err_w, status_w, sock_c, userns_child);
        // SAFETY: _exit is always safe; it skips the parent's atexit handlers and buffers.
        unsafe { libc::_exit(code) };
    }
    drop((
        go_r,
        err_w,
        status_w,
        sock_c,
        stdout_file,
        stderr_file,
        userns_child,
    ));
    let joined = cgroup.add_process(a_pid);
    let mut go_w = std::fs::File::from(go_w);
    let go_byte: &[u8] = if joined.is_ok() { b"g" } else { b"x" };
    let _ = go_w.write_all(go_byte);
    drop(go_w);
    if let Err(e) = joined {
        reap(a_pid);
        return Err(RunError::Cgroup(e.into()));
    }
    if let Some((unshared_r, mapped_w)) = userns_parent {
        let mut byte = [0u8; 1];
        // No "u" means A failed to unshare: its error is on the error pipe, read below.
        if std::fs::File::from(unshared_r)
            .read_exact(&mut byte)
            .is_ok()
            && byte[0] == b'u'
        {
            let mapped = write_id_maps(a_pid, spec);
            let reply: &[u8] = if mapped.is_ok() { b"m" } else { b"x" };
            let _ = std::fs::File::from(mapped_w).write_all(reply);
            if let Err(e) = mapped {
                reap(a_pid);
                let _ = cgroup.kill_and_remove();
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
        kill_cgroup_tasks(&cgroup);
    }
    // The listener arrives just before exec (or the socket closes when set-up failed).
    let (listener, landlock_report) = match receive_fd(&sock_p) {
        Some((fd, [code, abi, kernel_abi])) => (
            Some(fd),
            metanode_confine::LandlockStatus::from_code(code).map(|status| LandlockReport {
                status,
                abi,
                kernel_abi,
            }),
        ),
        None => (None, None),
    };
    let mut err_text = Vec::new();
    let _ = std::fs::File::from(err_r)
        .take(CHILD_ERROR_BYTES_MAX as u64)
        .read_to_end(&mut err_text);
    let spawn_ns = started.elapsed().as_nanos() as u64;

    let done = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(Mutex::new((Vec::new(), 0u64)));
    let logical_time_ns = opts.logical_time_ns;
    let supervisor = listener.map(|listener| {
        let violations = Arc::clone(&violations);
        std::thread::spawn(move || {
            // Wall-clock reads (the vDSO is hidden, so they are real syscalls) are answered from
            // the logical clock; every other refused call is recorded and denied.
            let mut clock = metanode_seccomp::WallClock::new(logical_time_ns);
            metanode_seccomp::supervise_with_wall_clock(listener, &mut clock, &mut |v| {
                // A workload looping on a refused call must not grow P's memory without bound:
                // keep the first ones, count the rest.
                if let Ok(mut list) = violations.lock() {
                    if list.0.len() < crate::limits::VIOLATIONS_COUNT_MAX {
                        list.0.push(v);
                    } else {
                        list.1 += 1;
                    }
                }
            })
            .map_err(|e| e.to_string())
        })
    });
    // Closing wake_w wakes the feeder at once when the cage is gone (no polling interval).
    let (wake_r, wake_w) = pipe()?;
    let feeder = {
        let done = Arc::clone(&done);
        let seed = opts.rng_seed;
        std::thread::spawn(move || feed_randomness(fifo, wake_r, seed, &done))
    };
    let timed_out = wait_with_timeout(a_pid, deadline, &cgroup);
    let mut relayed_bytes = Vec::new();
    let _ = std::fs::File::from(status_r)
        .take(4 + CHILD_ERROR_BYTES_MAX as u64)
        .read_to_end(&mut relayed_bytes);
    let relayed = relayed_bytes.len() >= 4;
    let mut status = [0u8; 4];
    if relayed {
        status.copy_from_slice(&relayed_bytes[..4]);
    }
    let trace_note = relayed_bytes.get(4..).unwrap_or_default().to_vec();
    done.store(true, Ordering::Release);
    drop(wake_w);
    let _ = feeder.join();
    let supervised = supervisor.map(|handle| handle.join());
    let wall_ns = started.elapsed().as_nanos() as u64;
    let usage = cgroup.usage().map_err(metanode_cgroup::CgroupError::from);
    let removed = cgroup.kill_and_remove();

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
        Some(Ok(Ok(()))) => {}
        Some(Ok(Err(e))) => return Err(RunError::Supervise(e)),
        Some(Err(_)) => return Err(RunError::Supervise("supervisor thread panicked".into())),
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
    let (violations, violations_dropped_count) = std::mem::take(
        &mut *violations
            .lock()
            .map_err(|_| RunError::Supervise("violation list poisoned".into()))?,
    );
    Ok(RunOutcome {
        exit,
        violations,
        violations_dropped_count,
        usage: usage?,
        cgroup_mode,
        landlock: landlock_report.ok_or_else(|| {
            RunError::Setup("the workload sent an unknown landlock status code".into())
        })?,
        seccomp_digest: seccomp.digest(),
        namespaces: spec.namespaces,
        spawn_ns,
        wall_ns,
        timed_out,
    })
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
        pids_max: Some(r.pids_max.unwrap_or(crate::limits::DEFAULT_PIDS_LIMIT)),
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

/// Writes A's uid_map and gid_map: the spec's mappings, or container 0 → the caller's ids.
/// setgroups stays "allow": P is privileged in the parent namespace, so the kernel permits it and
/// the spec's additionalGids can be set inside.
fn write_id_maps(pid: i32, spec: &CageSpec) -> Result<(), String> {
    // SAFETY: geteuid/getegid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let text = |maps: &[crate::spec::IdMapping], own: u32| {
        if maps.is_empty() {
            format!("0 {own} 1\n")
        } else {
            maps.iter()
                .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
                .collect()
        }
    };
    for (file, content) in [
        ("uid_map", text(&spec.uid_mappings, euid)),
        ("gid_map", text(&spec.gid_mappings, egid)),
    ] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, content.as_bytes()).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

/// Opens a capture file for the workload's stdout or stderr (close-on-exec in P; B dup2s it).
fn open_capture(path: Option<&Path>) -> Result<Option<std::fs::File>, RunError> {
    let Some(path) = path else {
        return Ok(None);
    };
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map(Some)
        .map_err(io_err(format!("open the capture file {}", path.display())))
}

fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waiting for our own child; status is a valid out pointer.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
}

/// Waits for A; on timeout kills everything in the cage's cgroup. Returns whether it timed out.
/// Sleeps in poll(2) on a pidfd (no periodic wake-ups); falls back to polling waitpid when
/// pidfd_open is unavailable.
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

fn wait_with_timeout(pid: i32, deadline: Option<Instant>, cgroup: &CageCgroup) -> bool {
    let mut timed_out = false;
    // SAFETY: pidfd_open on our own unreaped child; the result is checked.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd >= 0 {
        // SAFETY: pidfd_open succeeded, the fd is ours.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
        loop {
            let wait_ms = match deadline {
                Some(deadline) if !timed_out => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    left.as_millis().min(i32::MAX as u128) as i32
                }
                _ => -1,
            };
            let mut pfd = libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&raw mut pfd, 1, wait_ms) };
            if ready > 0 {
                reap(pid);
                return timed_out;
            }
            if ready < 0
                && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                break;
            }
            if ready == 0 && deadline.is_some_and(|d| Instant::now() >= d) && !timed_out {
                timed_out = true;
                kill_cgroup_tasks(cgroup);
            }
        }
    }
    loop {
        let mut status = 0;
        // SAFETY: our own child; status is a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
        if rc == pid || rc < 0 {
            return timed_out;
        }
        if let Some(deadline) = deadline
            && !timed_out
            && Instant::now() >= deadline
        {
            timed_out = true;
            kill_cgroup_tasks(cgroup);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn kill_cgroup_tasks(cgroup: &CageCgroup) {
    // By the cgroup's own mechanism (cgroup.kill / freezer), not pid by pid: a pid read from
    // cgroup.procs could be reused before the signal. A failure here is caught by the removal,
    // which kills again and reports what survived.
    let _ = cgroup.kill_all();
}

fn feed_randomness(fifo: OwnedFd, wake: OwnedFd, seed: [u8; 32], done: &AtomicBool) {
    let mut rng = ChaCha20Rng::from_seed(seed);
    let mut chunk = vec![0u8; URANDOM_CHUNK_BYTES];
    let mut pending: &[u8] = &[];
    let mut filled = Vec::new();
    while !done.load(Ordering::Acquire) {
        if pending.is_empty() {
            rng.fill_bytes(&mut chunk);
            filled.clone_from(&chunk);
            pending = &filled;
        }
        // SAFETY: writing from a valid slice to our own fd.
        let n = unsafe { libc::write(fifo.as_raw_fd(), pending.as_ptr().cast(), pending.len()) };
        if n > 0 {
            pending = &pending[n as usize..];
            continue;
        }
        let mut pfds = [
            libc::pollfd {
                fd: fifo.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        unsafe { libc::poll(pfds.as_mut_ptr(), 2, POLL_INTERVAL.as_millis() as i32) };
        if pfds[1].revents != 0 {
            return;
        }
    }
}

/// Receives one fd sent with SCM_RIGHTS; None when the peer closed without sending.
/// Receives the listener fd (SCM_RIGHTS) and B's landlock report (status code, ABI, kernel ABI);
/// None when the peer closed without sending.
fn receive_fd(sock: &OwnedFd) -> Option<(OwnedFd, [u8; 3])> {
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
    // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR handles an empty control buffer.
    let header = unsafe { libc::CMSG_FIRSTHDR(&raw const msg) };
    if header.is_null() {
        return None;
    }
    // SAFETY: header is non-null and inside `cmsg`.
    let (level, kind) = unsafe { ((*header).cmsg_level, (*header).cmsg_type) };
    if level != libc::SOL_SOCKET || kind != libc::SCM_RIGHTS {
        return None;
    }
    // SAFETY: an SCM_RIGHTS message carries at least one int after the header.
    let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<RawFd>()) };
    // SAFETY: the kernel installed this fd in our table for us.
    Some((unsafe { OwnedFd::from_raw_fd(fd) }, payload))
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
    rootfs: PathBuf,
    rootfs_readonly: bool,
    mounts: Vec<CageMount>,
    masked: Vec<String>,
    readonly: Vec<String>,
    fifo: PathBuf,
    out_dir: Option<PathBuf>,
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
    seccomp: CompiledSeccomp,
    quiet: bool,
    /// Host files opened by P for the workload's stdout/stderr (dup2'ed by B before exec).
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
        fifo: &Path,
        keep_caps: CapSet,
        seccomp: &CompiledSeccomp,
    ) -> ChildPlan {
        let mut env = spec.process.env.clone();
        if let Some(seed) = opts.env_shuffle_seed {
            shuffle(&mut env, seed);
        }
        let program = resolve_program(spec);
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
        };
        ChildPlan {
            rootfs: spec.rootfs.clone(),
            rootfs_readonly: spec.rootfs_readonly,
            mounts: spec.mounts.clone(),
            masked,
            readonly,
            fifo: fifo.to_path_buf(),
            out_dir: opts.out_dir.clone(),
            hostname: spec.hostname.clone(),
            namespaces: spec.namespaces,
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
            seccomp: seccomp.clone(),
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
/// inside the rootfs (glibc's execvpe would search the launcher's PATH, not the cage's).
fn resolve_program(spec: &CageSpec) -> Option<CString> {
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
        let host = spec.rootfs.join(candidate.trim_start_matches('/'));
        if host.is_file() {
            return CString::new(candidate).ok();
        }
    }
    None
}

/// A: joins the cgroup (P did it; we wait for the go byte), unshares, sets the clocks, forks B,
/// relays B's status. Returns A's exit code.
fn process_a(
    plan: &ChildPlan,
    go_r: OwnedFd,
    err_w: OwnedFd,
    status_w: OwnedFd,
    sock: OwnedFd,
    userns: Option<(OwnedFd, OwnedFd)>,
) -> i32 {
    let report = |msg: String| {
        let mut f = std::fs::File::from(err_w.try_clone().expect_or_exit());
        let _ = f.write_all(msg.as_bytes());
    };
    // A traces the cage from inside its memory cgroup: it must never be the OOM victim, or the
    // run would end as a set-up failure instead of a recorded OOM kill of the workload.
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    let mut go = [0u8; 1];
    if std::fs::File::from(go_r).read_exact(&mut go).is_err() || go[0] != b'g' {
        return 1;
    }
    // SAFETY: unshare with namespace flags only affects this process.
    if unsafe { libc::unshare(plan.namespaces.unshare_flags()) } != 0 {
        report(last_os("unshare the cage namespaces"));
        return 1;
    }
    if let Some((unshared_w, mapped_r)) = userns {
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
    if let Err(e) = metanode_confine::seize_for_cage(b_pid) {
        report(format!("ptrace-seize the workload: {e}"));
        // SAFETY: our own child.
        unsafe { libc::kill(b_pid, libc::SIGKILL) };
        return 1;
    }
    let _ = std::fs::File::from(traced_w).write_all(b"t");
    drop(sock);
    // The error pipe must close now (B's copy closes at exec) so that P sees the exec and starts
    // the seccomp supervisor; A's later reports travel after the status on the status pipe.
    drop(err_w);
    let trace = metanode_confine::follow_cage(b_pid, metanode_confine::Attach::Seized);
    let (status, note) = match trace {
        Ok(trace) => (
            trace.root_status.into_raw(),
            trace.first_hide_failure.map(|failure| {
                format!(
                    "hiding the vDSO failed for {} exec(s), those processes were killed: {failure:?}",
                    trace.hide_failures_count
                )
            }),
        ),
        Err(e) => (0, Some(format!("tracing the cage: {e}"))),
    };
    let mut message = status.to_le_bytes().to_vec();
    message.extend_from_slice(note.unwrap_or_default().as_bytes());
    let _ = std::fs::File::from(status_w).write_all(&message);
    0
}

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
    let root = &plan.rootfs;
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
    mount(Some(root), root, None, libc::MS_BIND | libc::MS_REC, None)?;
    // Device nodes and setuid files shipped in the image must not work in the cage (a block
    // device node owned by root would otherwise give raw access to a host disk): nodev + nosuid on
    // the whole tree. DockLock's own /dev is a separate mount built afterwards.
    rootfs_nodev_nosuid(root)?;
    crate::rootfs::prepare(&crate::rootfs::RootfsPlan {
        rootfs: root,
        mounts: &plan.mounts,
        out_dir: plan.out_dir.as_deref(),
        fifo: &plan.fifo,
        masked: &plan.masked,
        readonly: &plan.readonly,
        dev_tmpfs_size_bytes: crate::limits::DEV_TMPFS_SIZE_BYTES,
    })?;
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
    } else {
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

fn rootfs_nodev_nosuid(root: &Path) -> Result<(), String> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    const AT_RECURSIVE: libc::c_int = 0x8000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let path = cpath(root);
    // SAFETY: a valid path and a properly sized mount_attr that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            AT_RECURSIVE,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(last_os("make the rootfs nodev,nosuid"));
    }
    Ok(())
}

/// pivot_root(".", ".") then detach the old root: runc's way, no temporary directory needed.
fn pivot(root: &Path) -> Result<(), String> {
    let root_c = cpath(root);
    // SAFETY: valid paths; these syscalls only affect this mount namespace.
    unsafe {
        if libc::chdir(root_c.as_ptr()) != 0 {
            return Err(last_os("chdir to the rootfs"));
        }
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0 {
            return Err(last_os("pivot_root"));
        }
        if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(last_os("detach the old root"));
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(last_os("chdir /"));
        }
    }
    Ok(())
}
