//! `cargo xtask bench docklock`: how long a fully isolated cage takes to run
//! a static no-op binary, ours (`metanode-docklock run BUNDLE`, the thin
//! launcher binary with the same commands and code as `metanode docklock`)
//! against bubblewrap with equivalent isolation, in the same run on this
//! machine. The same cage through the agent binary (`metanode docklock run
//! BUNDLE`) is timed alongside and reported in its own rows, so the launcher's
//! share of the difference stays visible.
//!
//! What one run does, in order:
//!
//! 1. Builds the static `docklock-probe` and the static thin launcher
//!    `metanode-docklock` (each in its own target dir, crt-static, as the
//!    image ships it) and the static agent binary the image ships; installs Debian's
//!    `bubblewrap` when `bwrap` is not on PATH.
//! 2. Writes an OCI bundle under target/docklock-bench: a read-only rootfs
//!    holding only /bin/docklock-probe, proc on /proc, a tmpfs on /tmp, all
//!    of pid/ipc/uts/mount/network/cgroup/time namespaces, 256 MiB memory
//!    and 64 pids limits, no capabilities, no_new_privs.
//! 3. Runs each runtime once with stderr captured: a non-zero exit fails the
//!    bench naming that stderr (the other runtime is still measured so the
//!    table says what it could).
//! 4. Spawn latency: warm-up runs, then timed runs interleaved (ours, bwrap, agent CLI; ours,
//!    agent CLI, bwrap; ...), so drift (other load, page cache, thermal) hits all alike and each
//!    runtime follows each other as often (a spawn leaves kernel work behind that slows the next). A sample is the wall time from `spawn()` to the exit of the
//!    runtime process (seen through a pidfd), stdio to /dev/null.
//! 5. Replay overhead: `metanode docklock replay BUNDLE --runs 5` wall time
//!    over 5 of our mean spawns.
//! 6. Receipts: metanode-witness records like a real noop run's, signed and
//!    verified in a loop on one core.
//!
//! youki/runc/crun create->start->delete means from youki's README are
//! context rows (published, not measured here); the note says so.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Args;
use metanode_core::keys::SigningKey;
use metanode_core::merkle::empty_root;
use metanode_witness::{
    ExitKind, InputDigest, InputRef, PolicyDecision, Record, RunHeader, SignedRecord, TraceRoots,
    Verdict, namespaces,
};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, kill_process_group, pidfd_open};
use serde_json::{Value, json};

use super::chart;
use super::results::{Better, Report, Row, fmt_num, panels_from_rows, percentile};
use crate::workspace_root;

/// Timed spawns of each runtime (the issue asks for at least 300). 1,000: the p99 of 300
/// samples is their third highest, which moved by up to 1.5 ms (both runtimes) between
/// back-to-back runs on this 2-core VM; of 1,000 it is the tenth. About 30 s per runtime.
const RUNS_FULL: usize = 1000;
const RUNS_QUICK: usize = 30;
/// Untimed spawns of each runtime first: page cache, cgroup hierarchy and
/// dentry caches warm, so the first timed sample is not a cold start.
const WARMUP_RUNS: usize = 10;
/// `--runs` given to `metanode docklock replay`.
const REPLAY_RUNS: usize = 5;
/// Replays timed; the median is reported.
const REPLAY_REPEATS_FULL: usize = 3;
const REPLAY_REPEATS_QUICK: usize = 1;
/// How long each receipt loop (sign, verify) runs.
const RECEIPT_WINDOW: Duration = Duration::from_secs(2);
/// A noop cage exits in milliseconds; this only stops a hung runtime from
/// hanging the bench.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);
const REPLAY_TIMEOUT: Duration = Duration::from_secs(300);
/// Enough of a failing runtime's stderr to say why, not a page of it.
const STDERR_CHARS_MAX: usize = 4000;
/// Notes longer than this are cut in the printed table (not in the JSON).
const TABLE_NOTE_CHARS_MAX: usize = 160;

/// The bundle's limits and names (bwrap gets the same hostname; it has no
/// cgroup limits of its own).
const MEMORY_LIMIT_BYTES: u64 = 256 * 1024 * 1024;
const PIDS_LIMIT: u64 = 64;
const TMP_SIZE_OPTION: &str = "size=64m";
const HOSTNAME: &str = "bench";
const PROBE_IN_CAGE: &str = "/bin/docklock-probe";
/// Everything the workload's environment holds, in both runtimes.
const WORKLOAD_PATH_ENV: &str = "/bin";
/// Empty directories in the rootfs: mount points (the rootfs is read-only,
/// so neither runtime can create them).
const ROOTFS_DIRS: &[&str] = &["bin", "proc", "dev", "tmp", "sys", "out"];
const NAMESPACES: &[&str] = &["pid", "ipc", "uts", "mount", "network", "cgroup", "time"];
/// runc's default masked and read-only paths, which our cage applies to every run
/// (metanode_docklock::cage::MASKED_PATHS_DEFAULT and READONLY_PATHS_DEFAULT; xtask does not
/// depend on that crate). bwrap gets the same mount work for the /proc entries that exist on this
/// kernel; the /sys ones are moot because neither sandbox mounts sysfs.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const PROBE_PACKAGE: &str = "metanode-docklock-probe";
const PROBE_BINARY: &str = "docklock-probe";
const PROBE_TARGET: &str = "x86_64-unknown-linux-gnu";
const BWRAP_PACKAGE: &str = "bubblewrap";
const LAUNCHER_PACKAGE: &str = "metanode-docklock";
const LAUNCHER_BINARY: &str = "metanode-docklock";

/// Targets from issue #6.
const TARGET_P50_STRETCH_MS: f64 = 2.5;

/// youki's README "simple benchmark of a container from creation to
/// deletion" (hyperfine mean): context, never measured here.
const PUBLISHED_SOURCE: &str = "https://github.com/youki-dev/youki/blob/main/README.md";
const PUBLISHED_CONDITIONS: &str = "hyperfine --prepare 'sync; echo 3 > /proc/sys/vm/drop_caches' \
     --warmup 10 --min-runs 100 'RUNTIME create -b tutorial a && RUNTIME start a && RUNTIME delete -f a' \
     (busybox bundle), 16 cores, Ubuntu 22.04, kernel 6.5, cgroup v2 unified; page cache dropped before \
     every run, three runtime invocations per sample";

struct Published {
    peer: &'static str,
    mean_ms: f64,
    figure: &'static str,
}

const PUBLISHED: &[Published] = &[
    Published {
        peer: "youki-published",
        mean_ms: 111.5,
        figure: "youki 0.3.3: 111.5 ms +- 11.6 ms (84.0 ... 142.5 ms)",
    },
    Published {
        peer: "runc-published",
        mean_ms: 224.6,
        figure: "runc 1.1.7: 224.6 ms +- 12.0 ms (190.5 ... 255.4 ms)",
    },
    Published {
        peer: "crun-published",
        mean_ms: 47.3,
        figure: "crun 1.15: 47.3 ms +- 2.8 ms (42.4 ... 56.2 ms)",
    },
];

#[derive(Debug, Args, Clone)]
pub struct DocklockBenchArgs {
    /// A smoke run: 30 timed spawns of each runtime instead of 1,000, one
    /// replay; writes perf/results/docklock.quick.json so the committed full
    /// run stays.
    #[arg(long)]
    pub quick: bool,
}

// ------------------------------------------------------------- runtimes

/// One way to run the bundle's workload.
#[derive(Debug, Clone)]
struct Contender {
    /// Name in rows and charts.
    name: &'static str,
    /// What failed, in error messages ("metanode docklock run failed: ...").
    label: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    /// Some: the environment is cleared and set to exactly these.
    env: Option<Vec<(&'static str, &'static str)>>,
}

impl Contender {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        if let Some(env) = &self.env {
            cmd.env_clear();
            cmd.envs(env.iter().copied());
        }
        cmd
    }

    fn command_line(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| {
                let a = a.to_string_lossy();
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.into_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Ours through the thin launcher: the whole job (bundle parse, cgroup, cage, receipt-ready
/// outcome) from a command line, like bwrap.
fn ours(launcher: &Path, bundle: &Path) -> Contender {
    Contender {
        name: "ours",
        label: "metanode-docklock run",
        program: launcher.to_path_buf(),
        args: vec!["run".into(), bundle.into()],
        env: None,
    }
}

/// The same cage through the agent binary's `metanode docklock run`.
fn ours_agent_cli(metanode: &Path, bundle: &Path) -> Contender {
    Contender {
        name: "ours-agent-cli",
        label: "metanode docklock run",
        program: metanode.to_path_buf(),
        args: vec!["docklock".into(), "run".into(), bundle.into()],
        env: None,
    }
}

/// What a path is on this host (the sandboxes' fresh procfs shows the same kernel's entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostPath {
    Dir,
    File,
    Missing,
}

fn host_path(path: &str) -> HostPath {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => HostPath::Dir,
        Ok(_) => HostPath::File,
        Err(_) => HostPath::Missing,
    }
}

/// bwrap arguments doing the mount work of our masked and read-only paths: an empty read-only
/// tmpfs over a masked directory, /dev/null over a masked file (as our cage does), and a
/// read-only bind of each read-only path. bwrap can only bind from the host (its sources resolve
/// in the old root), so those binds show the host's /proc entry where ours re-binds the cage's
/// own: the same mount operations, and for a no-op workload the same cost.
fn bwrap_mask_args(kind: impl Fn(&str) -> HostPath) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    for &path in MASKED_PATHS {
        match kind(path) {
            HostPath::Dir => {
                args.extend(["--tmpfs", path, "--remount-ro", path].map(OsString::from));
            }
            HostPath::File => args.extend(["--ro-bind", "/dev/null", path].map(OsString::from)),
            HostPath::Missing => {}
        }
    }
    for &path in READONLY_PATHS {
        if kind(path) != HostPath::Missing {
            args.extend(["--ro-bind", path, path].map(OsString::from));
        }
    }
    args
}

/// bwrap with the isolation closest to the bundle's: every namespace it can
/// create (it has no time namespace), the same read-only rootfs, a fresh
/// proc with the same masked and read-only paths as our cage, a minimal /dev,
/// a tmpfs /tmp, the same hostname, no capabilities, a new session, and the
/// workload's environment cleared to PATH=/bin like the bundle's process.env.
fn bwrap(bwrap: &Path, rootfs: &Path, mask_args: Vec<OsString>) -> Contender {
    let mut args: Vec<OsString> = vec![
        "--unshare-all".into(),
        "--die-with-parent".into(),
        "--new-session".into(),
        "--ro-bind".into(),
        rootfs.into(),
        "/".into(),
    ];
    for a in ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"] {
        args.push(a.into());
    }
    args.extend(mask_args);
    for a in [
        "--hostname",
        HOSTNAME,
        "--cap-drop",
        "ALL",
        PROBE_IN_CAGE,
        "noop",
    ] {
        args.push(a.into());
    }
    Contender {
        name: "bwrap",
        label: "bwrap",
        program: bwrap.to_path_buf(),
        args,
        env: Some(vec![("PATH", WORKLOAD_PATH_ENV)]),
    }
}

/// Waits until `child` exits or `timeout` passes; true when it exited. A
/// pidfd wakes us the moment the child exits, where polling `try_wait`
/// would round every sample up to the polling interval.
fn wait_exit(child: &Child, timeout: Duration) -> anyhow::Result<bool> {
    let pidfd = pidfd_open(Pid::from_child(child), PidfdFlags::empty()).context("pidfd_open")?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e).context("poll the child's pidfd"),
        }
    }
}

/// Spawns `cmd` in its own process group and waits for it: its status and
/// the wall time from just before `spawn()` to its exit.
fn spawn_and_wait(cmd: &mut Command, timeout: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    let exited = wait_exit(&child, timeout);
    let elapsed = started.elapsed();
    if !matches!(exited, Ok(true)) {
        // The group id is the child's pid (process_group(0)): whatever it
        // started goes too.
        let _ = kill_process_group(Pid::from_child(&child), Signal::KILL);
        let _ = child.wait();
        exited?;
        bail!(
            "{:?} did not exit within {} s (killed)",
            cmd.get_program(),
            timeout.as_secs()
        );
    }
    let status = child.wait().context("reap the child")?;
    Ok((status, elapsed))
}

fn read_capped(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let text = text.trim();
    let chars = text.chars().count();
    if chars <= STDERR_CHARS_MAX {
        return text.to_string();
    }
    let tail: String = text.chars().skip(chars - STDERR_CHARS_MAX).collect();
    format!("...{tail}")
}

/// One untimed run with stderr captured: Err("LABEL failed: STDERR (exit status N)").
fn run_checked(c: &Contender, scratch: &Path) -> Result<(), String> {
    let stderr_path = scratch.join(format!("{}.stderr", c.name));
    let stderr =
        File::create(&stderr_path).map_err(|e| format!("create {}: {e}", stderr_path.display()))?;
    let mut cmd = c.command();
    cmd.stdout(Stdio::null()).stderr(stderr);
    match spawn_and_wait(&mut cmd, SPAWN_TIMEOUT) {
        Ok((status, _)) if status.success() => Ok(()),
        Ok((status, _)) => {
            let text = read_capped(&stderr_path);
            Err(format!(
                "{} failed: {} ({status})",
                c.label,
                if text.is_empty() { "no stderr" } else { &text }
            ))
        }
        Err(e) => Err(format!("{} failed: {e:#}", c.label)),
    }
}

/// One timed run, stdio to /dev/null.
fn run_timed(c: &Contender) -> anyhow::Result<Duration> {
    let mut cmd = c.command();
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let (status, elapsed) = spawn_and_wait(&mut cmd, SPAWN_TIMEOUT)?;
    ensure!(status.success(), "{status}");
    Ok(elapsed)
}

// ---------------------------------------------------------------- stats

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
struct Stats {
    count: usize,
    mean_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

fn stats(samples: &[f64]) -> Option<Stats> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(Stats {
        count: sorted.len(),
        mean_ms: sorted.iter().sum::<f64>() / sorted.len().max(1) as f64,
        p50_ms: percentile(&sorted, 50.0)?,
        p99_ms: percentile(&sorted, 99.0)?,
        min_ms: *sorted.first()?,
        max_ms: *sorted.last()?,
    })
}

/// One runtime's timed samples, or why it stopped.
#[derive(Debug)]
struct Series {
    name: &'static str,
    samples_ms: Vec<f64>,
    failure: Option<String>,
}

impl Series {
    fn stats(&self) -> Option<Stats> {
        if self.failure.is_some() {
            return None;
        }
        stats(&self.samples_ms)
    }

    fn json(&self) -> Value {
        json!({
            "system": self.name,
            "status": if self.failure.is_some() { "failed" } else { "ok" },
            "error": self.failure,
            "stats": self.stats(),
            // Microsecond resolution is plenty for millisecond spawns.
            "samples_ms": self.samples_ms.iter().map(|v| (v * 1e3).round() / 1e3).collect::<Vec<_>>(),
        })
    }
}

/// Warm-up then timed runs, the runtimes interleaved A B C, A C B, A B C, ... A runtime
/// whose run fails stops there (its series carries the error); the others
/// go on.
fn measure_spawns(
    contenders: &[&Contender],
    warmup: usize,
    runs: usize,
    scratch: &Path,
) -> Vec<Series> {
    let mut series: Vec<Series> = contenders
        .iter()
        .map(|c| Series {
            name: c.name,
            samples_ms: Vec::with_capacity(runs),
            failure: None,
        })
        .collect();
    let progress_every = (runs / 5).max(1);
    let count = contenders.len();
    for round in 0..warmup + runs {
        // A spawn leaves work behind (the kernel's network-namespace cleanup, a helper's deferred
        // exit) that slows the next one, so in a fixed order each runtime would always run right
        // after the same one (ours after the heavy agent binary). Even rounds go A B C, odd ones
        // A C B: over two rounds every runtime follows every other exactly once.
        for k in 0..count {
            let i = if round % 2 == 0 || k == 0 {
                k
            } else {
                count - k
            };
            let (c, s) = (contenders[i], &mut series[i]);
            if s.failure.is_some() {
                continue;
            }
            match run_timed(c) {
                Ok(d) if round >= warmup => s.samples_ms.push(d.as_secs_f64() * 1e3),
                Ok(_) => {}
                Err(e) => {
                    // Timed runs discard stderr; run once more to say why.
                    let why = match run_checked(c, scratch) {
                        Err(msg) => msg,
                        Ok(()) => format!(
                            "{} failed ({e:#}); a re-run with stderr captured succeeded",
                            c.label
                        ),
                    };
                    s.failure = Some(format!("run {round} (warm-up {warmup}): {why}"));
                }
            }
        }
        let done = round + 1;
        if done == warmup {
            eprintln!("    warm-up done ({warmup} runs each)");
        } else if done > warmup && (done - warmup).is_multiple_of(progress_every) {
            let line: Vec<String> = series
                .iter()
                .map(|s| match (&s.failure, stats(&s.samples_ms)) {
                    (Some(_), _) => format!("{} failed", s.name),
                    (None, Some(st)) => {
                        format!("{} p50 {:.2} ms", s.name, st.p50_ms)
                    }
                    (None, None) => format!("{} -", s.name),
                })
                .collect();
            eprintln!("    {}/{runs}: {}", done - warmup, line.join(", "));
        }
    }
    series
}

// --------------------------------------------------------------- bundle

/// config.json of the bench bundle (OCI runtime-spec 1.2), limited to what
/// `metanode docklock run` supports.
fn bundle_config() -> Value {
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": [PROBE_IN_CAGE, "noop"],
            "env": [format!("PATH={WORKLOAD_PATH_ENV}")],
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "permitted": []},
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": HOSTNAME,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", TMP_SIZE_OPTION]}
        ],
        "linux": {
            "namespaces": NAMESPACES.iter().map(|t| json!({"type": t})).collect::<Vec<_>>(),
            "resources": {
                "memory": {"limit": MEMORY_LIMIT_BYTES},
                "pids": {"limit": PIDS_LIMIT}
            }
        }
    })
}

/// Writes DIR/bundle/{config.json, rootfs/...} from scratch; returns the
/// bundle directory.
fn write_bundle(dir: &Path, probe: &Path) -> anyhow::Result<PathBuf> {
    let bundle = dir.join("bundle");
    if bundle.exists() {
        std::fs::remove_dir_all(&bundle)
            .with_context(|| format!("remove the previous bundle {}", bundle.display()))?;
    }
    let rootfs = bundle.join("rootfs");
    for d in ROOTFS_DIRS {
        std::fs::create_dir_all(rootfs.join(d))
            .with_context(|| format!("create {}", rootfs.join(d).display()))?;
    }
    let dest = rootfs.join(PROBE_IN_CAGE.trim_start_matches('/'));
    std::fs::copy(probe, &dest)
        .with_context(|| format!("copy {} to {}", probe.display(), dest.display()))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_string_pretty(&bundle_config())? + "\n",
    )?;
    Ok(bundle)
}

/// True when `elf` is a 64-bit little-endian ELF without a PT_INTERP
/// program header, i.e. runs in a rootfs holding nothing else.
fn is_static_elf(elf: &[u8]) -> Result<bool, String> {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8).and_then(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            usize::try_from(u64::from_le_bytes(a)).ok()
        })
    };
    if elf.get(0..4) != Some(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    if elf.get(4..6) != Some(&[2, 1]) {
        return Err("not a 64-bit little-endian ELF".into());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Err("truncated ELF header".into());
    };
    for i in 0..phnum {
        let at = phoff
            .checked_add(i * phentsize)
            .ok_or("program header offset overflows")?;
        match u32_at(at) {
            Some(PT_INTERP) => return Ok(false),
            Some(_) => {}
            None => return Err(format!("program header {i} lies outside the file")),
        }
    }
    Ok(true)
}

// --------------------------------------------------------------- builds

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds `binary` of `package` static (crt-static) in its own target dir
/// under target/, so it never waits on, or invalidates, the workspace's
/// target/ for a different RUSTFLAGS; refuses a result that still has an
/// ELF interpreter.
fn build_static(
    root: &Path,
    target_subdir: &str,
    package: &str,
    binary: &str,
) -> anyhow::Result<PathBuf> {
    let target_dir = root.join("target").join(target_subdir);
    eprintln!("    building {binary} (static, {PROBE_TARGET})");
    let mut cmd = cargo();
    cmd.current_dir(root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // Would override RUSTFLAGS if inherited from an outer cargo.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            PROBE_TARGET,
            "-p",
            package,
            "--bin",
            binary,
        ]);
    ensure!(
        crate::process::run_inherited(&mut cmd)?,
        "RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target {PROBE_TARGET} \
         -p {package} --bin {binary} failed"
    );
    let built = target_dir.join(PROBE_TARGET).join("release").join(binary);
    let bytes = std::fs::read(&built).with_context(|| format!("read {}", built.display()))?;
    match is_static_elf(&bytes) {
        Ok(true) => Ok(built),
        Ok(false) => bail!(
            "{} is dynamically linked (has an ELF interpreter) though built with crt-static",
            built.display()
        ),
        Err(why) => bail!("{}: {why}", built.display()),
    }
}

/// The probe: static because the bench rootfs holds nothing else (and the
/// VM test runs it on the appliance, which has no libraries either).
pub(crate) fn build_probe(root: &Path) -> anyhow::Result<PathBuf> {
    build_static(root, "docklock-probe", PROBE_PACKAGE, PROBE_BINARY)
}

/// The thin launcher, static as the image ships its binaries
/// (xtask/src/image): a static-pie binary has no ELF interpreter, no shared
/// libraries to map and a few thousand relative relocations, so its
/// exec-to-main is a fraction of the dynamic build's, and that start-up is
/// on every spawn's critical path.
fn build_launcher(root: &Path) -> anyhow::Result<PathBuf> {
    build_static(root, "docklock-launcher", LAUNCHER_PACKAGE, LAUNCHER_BINARY)
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// `bwrap` on PATH, installing Debian's package first when it is missing
/// (like bootstrap/lib.sh's apt_install).
fn ensure_bwrap() -> anyhow::Result<PathBuf> {
    if let Some(path) = find_on_path("bwrap") {
        return Ok(path);
    }
    let install = || {
        let mut cmd = Command::new("apt-get");
        // apt's progress goes to stderr so stdout stays the results table.
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::io::stderr())
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                BWRAP_PACKAGE,
            ]);
        crate::process::run_inherited(&mut cmd)
    };
    eprintln!(
        "==> bwrap is not on PATH: apt-get install -y --no-install-recommends {BWRAP_PACKAGE}"
    );
    if !install()? {
        eprintln!("==> install failed; apt-get update, then once more");
        let mut update = Command::new("apt-get");
        update
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::io::stderr())
            .args(["update", "-q"]);
        crate::process::run_inherited(&mut update)?;
        ensure!(
            install()?,
            "apt-get install {BWRAP_PACKAGE} failed: install bubblewrap by hand"
        );
    }
    find_on_path("bwrap")
        .with_context(|| format!("{BWRAP_PACKAGE} is installed but bwrap is not on PATH"))
}

fn command_stdout(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

// -------------------------------------------------------------- replay

#[derive(Debug)]
struct ReplayResult {
    wall_ms: Vec<f64>,
    /// `metanode --json docklock replay` output of the first replay.
    report: Value,
}

/// Times `metanode --json docklock replay BUNDLE --runs 5` `repeats`
/// times. Ok(Err(why)) when the subcommand does not exist (a missing row,
/// not a failure); Err when it exists and fails.
fn measure_replay(
    metanode: &Path,
    bundle: &Path,
    repeats: usize,
    scratch: &Path,
) -> anyhow::Result<Result<ReplayResult, String>> {
    let help_err = scratch.join("replay-help.stderr");
    let mut help = Command::new(metanode);
    help.args(["docklock", "replay", "--help"])
        .stdout(Stdio::null())
        .stderr(File::create(&help_err)?);
    let (status, _) = spawn_and_wait(&mut help, SPAWN_TIMEOUT)?;
    if !status.success() {
        return Ok(Err(format!(
            "metanode has no `docklock replay` subcommand ({status}: {})",
            read_capped(&help_err)
        )));
    }
    let mut wall_ms = Vec::with_capacity(repeats);
    let mut report = Value::Null;
    for i in 0..repeats {
        let out_path = scratch.join("replay.stdout");
        let err_path = scratch.join("replay.stderr");
        let mut cmd = Command::new(metanode);
        cmd.args(["--json", "docklock", "replay"])
            .arg(bundle)
            .args(["--runs", &REPLAY_RUNS.to_string()])
            .stdout(File::create(&out_path)?)
            .stderr(File::create(&err_path)?);
        let (status, elapsed) = spawn_and_wait(&mut cmd, REPLAY_TIMEOUT)?;
        ensure!(
            status.success(),
            "metanode docklock replay --runs {REPLAY_RUNS} failed ({status}): {} {}",
            read_capped(&err_path),
            read_capped(&out_path)
        );
        wall_ms.push(elapsed.as_secs_f64() * 1e3);
        if i == 0 {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            report = serde_json::from_str(&text).unwrap_or(Value::String(text));
        }
    }
    Ok(Ok(ReplayResult { wall_ms, report }))
}

// ------------------------------------------------------------- receipts

/// The record `metanode docklock run --receipt` signs for the bench's noop
/// bundle: clean exit, no violations, every namespace but user, the real
/// root functions over a realistic environment and inputs.
fn sample_record(key: &SigningKey) -> anyhow::Result<Record> {
    let decision = PolicyDecision {
        seccomp_digest: *blake3::hash(b"seccomp policy").as_bytes(),
        landlock_status: 0,
        landlock_abi: 7,
        cgroup_mode: 0,
        namespaces: namespaces::ALL & !namespaces::USER,
        exit: ExitKind::Exited(0),
        violations: Vec::new(),
        violations_dropped_count: 0,
        verdict: Verdict::Completed,
    };
    let inputs = [
        InputRef {
            name: "rootfs".into(),
            digest: InputDigest::Blake3(*blake3::hash(b"rootfs").as_bytes()),
            size_bytes: 1 << 20,
        },
        InputRef {
            name: "args".into(),
            digest: InputDigest::Blake3(*blake3::hash(b"/bin/docklock-probe noop").as_bytes()),
            size_bytes: 24,
        },
    ];
    let env = [
        format!("PATH={WORKLOAD_PATH_ENV}"),
        "HOME=/".to_string(),
        "LANG=C.UTF-8".to_string(),
    ];
    Ok(Record {
        header: RunHeader {
            node: key.public_key().to_bytes(),
            service: "docklock-bench".into(),
            agreement: *blake3::hash(b"config.json").as_bytes(),
            input_root: metanode_witness::input_root(&inputs)?.into(),
            rng_seed: [0; 32],
            env_root: metanode_witness::env_root(&env)?.into(),
            logical_time_ns: 1_000_000_000,
        },
        roots: TraceRoots {
            events_root: decision.events_root()?.into(),
            outputs_root: empty_root().into(),
            state_delta_root: empty_root().into(),
        },
        decision,
    })
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct ReceiptRates {
    signed_per_s: f64,
    verified_per_s: f64,
    record_encoded_bytes: usize,
    signed: u64,
    verified: u64,
}

/// Signs (consistency check + canonical encoding + BLAKE3 + Ed25519) and
/// verifies for `window` each, on this thread.
fn receipt_rates(window: Duration) -> anyhow::Result<ReceiptRates> {
    use metanode_core::encoding::Encode;
    let key = SigningKey::from_seed(&[7; 32]);
    let mut record = sample_record(&key)?;
    let mut last: Option<SignedRecord> = None;
    let mut signed = 0u64;
    let started = Instant::now();
    while started.elapsed() < window {
        // A different record each time, as every real run's is.
        record.header.logical_time_ns = record.header.logical_time_ns.wrapping_add(1);
        last = Some(std::hint::black_box(record.sign(&key)?));
        signed += 1;
    }
    let sign_s = started.elapsed().as_secs_f64();
    let receipt = last.context("the signing loop ran no iteration")?;
    let mut verified = 0u64;
    let started = Instant::now();
    while started.elapsed() < window {
        std::hint::black_box(&receipt).verify()?;
        verified += 1;
    }
    let verify_s = started.elapsed().as_secs_f64();
    Ok(ReceiptRates {
        signed_per_s: signed as f64 / sign_s,
        verified_per_s: verified as f64 / verify_s,
        record_encoded_bytes: receipt.to_canonical_bytes()?.len(),
        signed,
        verified,
    })
}

// ---------------------------------------------------------------- rows

fn row(metric: &str, unit: &'static str, ours: Option<f64>, better: Better) -> Row {
    Row {
        metric: metric.into(),
        unit,
        ours,
        peer: None,
        peer_value: None,
        better,
        ours_note: None,
        peer_note: None,
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// The spawn rows: p50 and p99 against bwrap (with the targets),
/// ours' mean alone, and the published create->delete context rows.
fn spawn_rows(ours: &Series, bwrap: &Series) -> Vec<Row> {
    let (o, b) = (ours.stats(), bwrap.stats());
    let ours_missing = ours
        .failure
        .clone()
        .or_else(|| o.is_none().then(|| "no timed run completed".to_string()));
    let peer_missing = bwrap
        .failure
        .clone()
        .or_else(|| b.is_none().then(|| "no timed run completed".to_string()));
    let mut rows = Vec::new();
    for (metric, pick) in [
        ("spawn_p50_ms", (|s: &Stats| s.p50_ms) as fn(&Stats) -> f64),
        ("spawn_p99_ms", |s: &Stats| s.p99_ms),
    ] {
        let mut r = row(metric, "ms", o.as_ref().map(pick), Better::Lower);
        r.peer = Some("bwrap");
        r.peer_value = b.as_ref().map(pick);
        r.peer_note = peer_missing.clone();
        r.ours_note = match (r.ours, r.peer_value) {
            (Some(v), Some(p)) => {
                let mut note = format!("target <= bwrap in the same run: {}", verdict(v <= p));
                if metric == "spawn_p50_ms" {
                    note += &format!(
                        "; stretch <= {TARGET_P50_STRETCH_MS} ms: {}",
                        verdict(v <= TARGET_P50_STRETCH_MS)
                    );
                }
                Some(note)
            }
            (Some(_), None) => Some("bwrap not measured: no target check".into()),
            (None, _) => ours_missing.clone(),
        };
        rows.push(r);
    }
    let mut mean = row(
        "spawn_mean_ms",
        "ms",
        o.as_ref().map(|s| s.mean_ms),
        Better::Lower,
    );
    mean.ours_note = ours_missing.clone();
    rows.push(mean);
    for p in PUBLISHED {
        let mut r = row(
            "create_start_delete_mean_ms",
            "ms",
            o.as_ref().map(|s| s.mean_ms),
            Better::Lower,
        );
        r.peer = Some(p.peer);
        r.peer_value = Some(p.mean_ms);
        r.ours_note = match &ours_missing {
            Some(why) => Some(why.clone()),
            None => Some("ours = spawn_mean_ms of this run (one command creates, starts and deletes the cage)".into()),
        };
        r.peer_note = Some(format!(
            "PUBLISHED figure, not measured here: {} from {PUBLISHED_SOURCE}; {PUBLISHED_CONDITIONS}",
            p.figure
        ));
        rows.push(r);
    }
    rows
}

/// The same cage through `metanode docklock run` (the agent binary): no target, context for how
/// much of ours' spawn is the launcher binary's start-up.
fn agent_cli_rows(cli: &Series) -> Vec<Row> {
    let stats = cli.stats();
    let missing = cli.failure.clone().or_else(|| {
        stats
            .is_none()
            .then(|| "no timed run completed".to_string())
    });
    [
        (
            "spawn_p50_ms_via_agent_cli",
            (|s: &Stats| s.p50_ms) as fn(&Stats) -> f64,
        ),
        ("spawn_p99_ms_via_agent_cli", |s: &Stats| s.p99_ms),
    ]
    .into_iter()
    .map(|(metric, pick)| {
        let mut r = row(metric, "ms", stats.as_ref().map(pick), Better::Lower);
        r.ours_note = Some(missing.clone().unwrap_or_else(|| {
            "the same cage via `metanode docklock run` (the agent binary), interleaved with the \
             others: ours' rows minus these = the thin launcher's start-up saving"
                .to_string()
        }));
        r
    })
    .collect()
}

fn replay_rows(replay: &Result<ReplayResult, String>, ours_mean_ms: Option<f64>) -> Vec<Row> {
    let median_ms = replay.as_ref().ok().and_then(|r| {
        let mut v = r.wall_ms.clone();
        v.sort_by(f64::total_cmp);
        percentile(&v, 50.0)
    });
    let mut wall = row(
        &format!("replay_{REPLAY_RUNS}_runs_wall_ms"),
        "ms",
        median_ms,
        Better::Lower,
    );
    let mut ratio = row(
        &format!("replay_{REPLAY_RUNS}_runs_over_{REPLAY_RUNS}_spawns_ratio"),
        "x",
        median_ms
            .zip(ours_mean_ms)
            .map(|(r, s)| r / (REPLAY_RUNS as f64 * s)),
        Better::Lower,
    );
    match replay {
        Err(why) => {
            wall.ours_note = Some(why.clone());
            ratio.ours_note = Some(why.clone());
        }
        Ok(_) => {
            wall.ours_note = Some(format!(
                "median wall time of `metanode docklock replay BUNDLE --runs {REPLAY_RUNS}` (perturbed re-runs + output comparison)"
            ));
            ratio.ours_note = Some(match ours_mean_ms {
                Some(_) => format!(
                    "replay wall / ({REPLAY_RUNS} x spawn_mean_ms): the cost of perturbation and comparison over plain runs"
                ),
                None => "spawn_mean_ms missing: no ratio".into(),
            });
        }
    }
    vec![wall, ratio]
}

fn receipt_rows(rates: &ReceiptRates) -> Vec<Row> {
    let mut s = row(
        "receipts_signed_per_s_one_core",
        "receipts/s",
        Some(rates.signed_per_s),
        Better::Higher,
    );
    s.ours_note = Some(format!(
        "Record::sign (consistency check, canonical encoding, H(0x13 || record), Ed25519) of a {}-byte receipt",
        rates.record_encoded_bytes
    ));
    let mut v = row(
        "receipts_verified_per_s_one_core",
        "receipts/s",
        Some(rates.verified_per_s),
        Better::Higher,
    );
    v.ours_note = Some("SignedRecord::verify (strict Ed25519 + consistency check)".into());
    vec![s, v]
}

fn print_table(report: &Report) {
    println!("\ndocklock bench ({}), {}", report.mode, report.when);
    println!(
        "machine: {} cores, kernel {}, {}",
        report.machine["cores"],
        report.machine["kernel"].as_str().unwrap_or("?"),
        report.machine["bwrap_version"]
            .as_str()
            .unwrap_or("bwrap ?")
    );
    println!(
        "{:<38} {:<10} {:>10}  {:<16} {:>10}  note",
        "metric", "unit", "ours", "peer", "peer value"
    );
    for r in &report.rows {
        let note = match (&r.ours_note, &r.peer_note, r.peer) {
            (_, Some(_), Some(peer)) if peer.ends_with("-published") => {
                "published figure, not measured here (see JSON)".to_string()
            }
            (Some(o), Some(p), _) => format!("{o}; peer: {p}"),
            (Some(o), None, _) => o.clone(),
            (None, Some(p), _) => format!("peer: {p}"),
            (None, None, _) => String::new(),
        };
        // The JSON keeps whole notes; a table line keeps its start.
        let note = if note.chars().count() > TABLE_NOTE_CHARS_MAX {
            let head: String = note.chars().take(TABLE_NOTE_CHARS_MAX).collect();
            format!("{head}... (see JSON)")
        } else {
            note
        };
        println!(
            "{:<38} {:<10} {:>10}  {:<16} {:>10}  {}",
            r.metric,
            r.unit,
            r.ours.map_or("missing".into(), fmt_num),
            r.peer.unwrap_or("-"),
            match (r.peer, r.peer_value) {
                (None, _) => "-".to_string(),
                (Some(_), Some(v)) => fmt_num(v),
                (Some(_), None) => "missing".to_string(),
            },
            note
        );
    }
}

// ------------------------------------------------------------------ run

pub fn run(args: &DocklockBenchArgs) -> anyhow::Result<()> {
    ensure!(
        rustix::process::geteuid().is_root(),
        "cargo xtask bench docklock needs root: both runtimes create mount, pid, network and \
         cgroup namespaces and our cage writes cgroup limits (run it as root, e.g. sudo -E cargo xtask ...)"
    );
    let runs = if args.quick { RUNS_QUICK } else { RUNS_FULL };
    let replay_repeats = if args.quick {
        REPLAY_REPEATS_QUICK
    } else {
        REPLAY_REPEATS_FULL
    };
    let root = workspace_root();
    let dir = root.join("target/docklock-bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;

    eprintln!("==> setup: bubblewrap, static probe, metanode (release), bundle");
    let bwrap_path = ensure_bwrap()?;
    let probe = build_probe(&root)?;
    let launcher = build_launcher(&root)?;
    let metanode = crate::agent_bin::build_static(&root)?;
    let bundle = write_bundle(&dir, &probe)?;
    let ours = ours(&launcher, &bundle);
    let ours_cli = ours_agent_cli(&metanode, &bundle);
    let peer = bwrap(
        &bwrap_path,
        &bundle.join("rootfs"),
        bwrap_mask_args(host_path),
    );
    eprintln!("    ours:  {}", ours.command_line());
    eprintln!("    bwrap: {}", peer.command_line());
    eprintln!("    ours via the agent CLI: {}", ours_cli.command_line());

    eprintln!("==> one checked run of each (stderr captured)");
    let ours_check = run_checked(&ours, &dir);
    let peer_check = run_checked(&peer, &dir);
    let cli_check = run_checked(&ours_cli, &dir);
    for (c, check) in [
        (&ours, &ours_check),
        (&peer, &peer_check),
        (&ours_cli, &cli_check),
    ] {
        match check {
            Ok(()) => eprintln!("    {}: exit 0", c.name),
            Err(why) => eprintln!("    {}: {why}", c.name),
        }
    }
    let runnable: Vec<&Contender> = [
        (&ours, &ours_check),
        (&peer, &peer_check),
        (&ours_cli, &cli_check),
    ]
    .into_iter()
    .filter(|(_, check)| check.is_ok())
    .map(|(c, _)| c)
    .collect();
    eprintln!(
        "==> spawn latency: {WARMUP_RUNS} warm-up + {runs} timed runs each, interleaved ({})",
        runnable
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut measured = measure_spawns(&runnable, WARMUP_RUNS, runs, &dir);
    let mut take = |c: &Contender, check: &Result<(), String>| match measured
        .iter()
        .position(|s| s.name == c.name)
    {
        Some(i) => measured.swap_remove(i),
        None => Series {
            name: c.name,
            samples_ms: Vec::new(),
            failure: check.clone().err(),
        },
    };
    let ours_series = take(&ours, &ours_check);
    let peer_series = take(&peer, &peer_check);
    let cli_series = take(&ours_cli, &cli_check);

    let replay = if let Some(why) = &ours_series.failure {
        eprintln!("==> replay: skipped (ours does not run)");
        Ok(Err(format!("not run: {why}")))
    } else {
        eprintln!("==> replay: `metanode docklock replay --runs {REPLAY_RUNS}` x{replay_repeats}");
        measure_replay(&metanode, &bundle, replay_repeats, &dir)
    };
    let (replay, replay_error) = match replay {
        Ok(r) => (r, None),
        Err(e) => (Err(format!("failed: {e:#}")), Some(format!("{e:#}"))),
    };

    eprintln!(
        "==> receipts: sign and verify for {} s each",
        RECEIPT_WINDOW.as_secs()
    );
    let rates = receipt_rates(RECEIPT_WINDOW)?;

    let mut rows = spawn_rows(&ours_series, &peer_series);
    rows.extend(agent_cli_rows(&cli_series));
    rows.extend(replay_rows(&replay, ours_series.stats().map(|s| s.mean_ms)));
    rows.extend(receipt_rows(&rates));

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let bwrap_version = command_stdout(&peer.program.to_string_lossy(), &["--version"]);
    let bwrap_package = command_stdout("dpkg-query", &["-W", "-f=${Version}", BWRAP_PACKAGE]);
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string());
    let status_of = |s: &Series| if s.failure.is_some() { "failed" } else { "ok" };
    let panels = panels_from_rows(&rows);
    let report = Report {
        bench: "docklock",
        when: crate::time::now_iso8601(),
        mode: if args.quick { "quick" } else { "full" },
        machine: json!({
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "cpu_model": cpu_model,
            "kernel": kernel.trim(),
            "bwrap_version": bwrap_version,
            "bwrap_debian_package_version": bwrap_package,
            "note": "both runtimes and the bench share these cores; samples interleave the runtimes",
        }),
        ours: serde_json::Map::from_iter([
            (
                "system".to_owned(),
                json!(
                    "metanode-docklock run (release build; the thin launcher, same code and flags as \
                       `metanode docklock run`): namespaces, pivot_root, cgroup limits, \
                       seccomp allowlist + supervisor, landlock, no_new_privs, capabilities dropped"
                ),
            ),
            ("command".to_owned(), json!(ours.command_line())),
            (
                "agent_cli_command".to_owned(),
                json!(ours_cli.command_line()),
            ),
            ("agent_cli_status".to_owned(), json!(status_of(&cli_series))),
            ("status".to_owned(), json!(status_of(&ours_series))),
            ("error".to_owned(), json!(ours_series.failure)),
            ("bundle_config".to_owned(), bundle_config()),
        ]),
        peers: serde_json::Map::from_iter([
            (
                "bwrap".to_owned(),
                json!({
                    "command": peer.command_line(),
                    "environment": "cleared, PATH=/bin",
                    "version": bwrap_version,
                    "debian_package_version": bwrap_package,
                    "status": status_of(&peer_series),
                    "error": peer_series.failure,
                    "isolation": "user (try), ipc, pid, net, uts, cgroup (try) namespaces; same read-only rootfs; \
                                  fresh /proc, minimal /dev, tmpfs /tmp; hostname bench; all capabilities dropped; new session",
                    "not_equivalent": "bwrap has no time namespace, no cgroup memory/pids limits, no seccomp filter and no \
                                       landlock here: it does less work than ours",
                }),
            ),
            (
                "youki-published".to_owned(),
                json!({"source": PUBLISHED_SOURCE, "figures": PUBLISHED.iter().map(|p| p.figure).collect::<Vec<_>>(),
                       "conditions": PUBLISHED_CONDITIONS, "measured_here": false}),
            ),
        ]),
        workload: json!({
            "probe": format!("{PROBE_IN_CAGE} noop (static, crt-static): exits 0 before doing anything"),
            "probe_size_bytes": std::fs::metadata(&probe).map(|m| m.len()).ok(),
            "bundle": bundle.display().to_string(),
            "warmup_runs_each": WARMUP_RUNS,
            "timed_runs_each": runs,
            "order": "interleaved: even rounds ours, bwrap, agent CLI; odd rounds ours, agent CLI, bwrap (each runtime follows each other equally often)",
            "sample": "wall time from Command::spawn() to the runtime process's exit (pidfd), stdio /dev/null",
            "percentiles": "nearest rank over the sorted samples",
            "replay": format!("metanode --json docklock replay BUNDLE --runs {REPLAY_RUNS}, {replay_repeats} time(s), median"),
            "receipts": format!("{} s of Record::sign then {} s of SignedRecord::verify on one thread",
                                RECEIPT_WINDOW.as_secs(), RECEIPT_WINDOW.as_secs()),
        }),
        rows,
        runs: vec![
            json!({"phase": "spawn", "series": [ours_series.json(), peer_series.json(), cli_series.json()]}),
            match &replay {
                Ok(r) => {
                    json!({"phase": "replay", "status": "ok", "wall_ms": r.wall_ms, "report": r.report})
                }
                Err(why) => json!({"phase": "replay", "status": "missing", "error": why}),
            },
            json!({"phase": "receipts", "result": rates}),
        ],
        panels,
    };
    print_table(&report);
    let results = root.join("perf/results");
    std::fs::create_dir_all(&results)?;
    let stem = if args.quick {
        "docklock.quick"
    } else {
        "docklock"
    };
    let json_path = results.join(format!("{stem}.json"));
    std::fs::write(&json_path, report.to_json_pretty()? + "\n")?;
    chart::draw(&report, &results.join(format!("{stem}.png")))?;
    eprintln!("wrote {} and {stem}.png", json_path.display());

    let problems: Vec<String> = [
        ours_series.failure,
        peer_series.failure,
        cli_series.failure,
        replay_error,
    ]
    .into_iter()
    .flatten()
    .collect();
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=300).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(150.0));
        assert_eq!(percentile(&v, 99.0), Some(297.0));
        assert_eq!(percentile(&[], 50.0), None);
        let s = stats(&[4.0, 1.0, 3.0, 2.0]).expect("stats");
        assert_eq!(s.count, 4);
        assert_eq!(s.mean_ms, 2.5);
        assert_eq!(s.p50_ms, 2.0);
        assert_eq!(s.p99_ms, 4.0);
        assert_eq!((s.min_ms, s.max_ms), (1.0, 4.0));
        assert_eq!(stats(&[]), None);
    }

    #[test]
    fn bundle_config_declares_the_isolation_the_bench_promises() {
        let c = bundle_config();
        assert_eq!(c["process"]["args"], json!(["/bin/docklock-probe", "noop"]));
        assert_eq!(c["root"], json!({"path": "rootfs", "readonly": true}));
        assert_eq!(c["process"]["noNewPrivileges"], json!(true));
        assert_eq!(c["process"]["capabilities"]["bounding"], json!([]));
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .filter_map(|n| n["type"].as_str())
            .collect();
        assert_eq!(
            ns,
            ["pid", "ipc", "uts", "mount", "network", "cgroup", "time"]
        );
        assert_eq!(
            c["linux"]["resources"]["memory"]["limit"],
            json!(268_435_456)
        );
        assert_eq!(c["linux"]["resources"]["pids"]["limit"], json!(64));
        assert_eq!(c["mounts"][1]["destination"], json!("/tmp"));
        assert_eq!(c["mounts"][1]["options"][2], json!("size=64m"));
    }

    #[test]
    fn bundle_has_the_probe_and_every_mount_point() {
        let dir = std::env::temp_dir().join(format!("xtask-docklock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let probe = dir.join("probe");
        std::fs::write(&probe, b"\x7fELF fake").expect("probe");
        let bundle = write_bundle(&dir, &probe).expect("bundle");
        let stray = bundle.join("rootfs/tmp/stray");
        std::fs::write(&stray, b"x").expect("stray");
        // A second write starts from scratch.
        let bundle = write_bundle(&dir, &probe).expect("bundle again");
        assert!(!stray.exists());
        for d in ROOTFS_DIRS {
            assert!(bundle.join("rootfs").join(d).is_dir(), "{d}");
        }
        let copied = bundle.join("rootfs/bin/docklock-probe");
        assert_eq!(std::fs::read(&copied).expect("copied"), b"\x7fELF fake");
        assert_eq!(
            std::fs::metadata(&copied)
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        let config: Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).expect("config"))
                .expect("json");
        assert_eq!(config, bundle_config());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn bwrap_command_line_is_the_documented_one() {
        // As on this machine: /proc/acpi a directory, /proc/keys and /proc/timer_list files,
        // four of the five read-only paths present.
        let kind = |path: &str| match path {
            "/proc/acpi" | "/proc/bus" | "/proc/fs" | "/proc/irq" | "/proc/sys" => HostPath::Dir,
            "/proc/keys" | "/proc/timer_list" => HostPath::File,
            _ => HostPath::Missing,
        };
        let c = bwrap(
            Path::new("/usr/bin/bwrap"),
            Path::new("/b/rootfs"),
            bwrap_mask_args(kind),
        );
        assert_eq!(
            c.command_line(),
            "/usr/bin/bwrap --unshare-all --die-with-parent --new-session --ro-bind /b/rootfs / \
             --proc /proc --dev /dev --tmpfs /tmp --tmpfs /proc/acpi --remount-ro /proc/acpi \
             --ro-bind /dev/null /proc/keys --ro-bind /dev/null /proc/timer_list \
             --ro-bind /proc/bus /proc/bus --ro-bind /proc/fs /proc/fs --ro-bind /proc/irq /proc/irq \
             --ro-bind /proc/sys /proc/sys --hostname bench --cap-drop ALL /bin/docklock-probe noop"
        );
        let bare = bwrap(
            Path::new("/usr/bin/bwrap"),
            Path::new("/b/rootfs"),
            bwrap_mask_args(|_| HostPath::Missing),
        );
        assert_eq!(
            bare.command_line(),
            "/usr/bin/bwrap --unshare-all --die-with-parent --new-session --ro-bind /b/rootfs / \
             --proc /proc --dev /dev --tmpfs /tmp --hostname bench --cap-drop ALL /bin/docklock-probe noop"
        );
        let o = ours(Path::new("/t/metanode-docklock"), Path::new("/b"));
        assert_eq!(o.command_line(), "/t/metanode-docklock run /b");
        let cli = ours_agent_cli(Path::new("/t/metanode"), Path::new("/b"));
        assert_eq!(cli.command_line(), "/t/metanode docklock run /b");
    }

    /// A minimal ELF64 header with one program header of type `pt`.
    fn elf_with(pt: u32) -> Vec<u8> {
        let mut e = vec![0u8; 64 + 56];
        e[0..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        e[64..68].copy_from_slice(&pt.to_le_bytes());
        e
    }

    #[test]
    fn static_elf_check_reads_program_headers() {
        assert_eq!(is_static_elf(&elf_with(1)), Ok(true));
        assert_eq!(is_static_elf(&elf_with(3)), Ok(false));
        assert!(is_static_elf(b"#!/bin/sh").is_err());
        let mut truncated = elf_with(1);
        truncated.truncate(66);
        assert!(
            is_static_elf(&truncated)
                .expect_err("truncated")
                .contains("program header 0")
        );
        // The test binary itself is dynamically linked (the default target).
        let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read self");
        assert_eq!(is_static_elf(&me), Ok(false));
    }

    #[test]
    fn sample_record_signs_and_verifies() {
        let key = SigningKey::from_seed(&[7; 32]);
        let record = sample_record(&key).expect("record");
        let signed = record.sign(&key).expect("signs");
        signed.verify_with(&key.public_key()).expect("verifies");
        assert_eq!(signed.record.decision.verdict, Verdict::Completed);
        let mut tampered = signed.clone();
        tampered.record.header.logical_time_ns += 1;
        assert!(tampered.verify().is_err());
    }

    fn series(name: &'static str, samples: &[f64], failure: Option<&str>) -> Series {
        Series {
            name,
            samples_ms: samples.to_vec(),
            failure: failure.map(str::to_string),
        }
    }

    #[test]
    fn spawn_rows_compare_with_bwrap_and_label_published_figures() {
        let ours = series("ours", &[1.0, 2.0, 3.0], None);
        let peer = series("bwrap", &[2.0, 4.0, 6.0], None);
        let rows = spawn_rows(&ours, &peer);
        let p50 = &rows[0];
        assert_eq!(
            (p50.metric.as_str(), p50.ours, p50.peer, p50.peer_value),
            ("spawn_p50_ms", Some(2.0), Some("bwrap"), Some(4.0))
        );
        assert_eq!(
            p50.ours_note.as_deref(),
            Some("target <= bwrap in the same run: met; stretch <= 2.5 ms: met")
        );
        assert_eq!((rows[1].ours, rows[1].peer_value), (Some(3.0), Some(6.0)));
        assert_eq!(
            (rows[2].metric.as_str(), rows[2].peer, rows[2].ours),
            ("spawn_mean_ms", None, Some(2.0))
        );
        let published: Vec<_> = rows
            .iter()
            .filter(|r| r.metric == "create_start_delete_mean_ms")
            .collect();
        assert_eq!(published.len(), 3);
        for r in published {
            assert!(r.peer.expect("peer").ends_with("-published"));
            let note = r.peer_note.as_deref().expect("note");
            assert!(note.starts_with("PUBLISHED figure, not measured here"));
            assert!(note.contains(PUBLISHED_SOURCE));
        }
    }

    #[test]
    fn a_failed_runtime_leaves_its_values_missing_with_the_reason() {
        let ours = series(
            "ours",
            &[],
            Some("metanode docklock run failed: boom (exit status: 1)"),
        );
        let peer = series("bwrap", &[2.0], None);
        let rows = spawn_rows(&ours, &peer);
        assert_eq!(rows[0].ours, None);
        assert_eq!(rows[0].peer_value, Some(2.0));
        assert!(
            rows[0]
                .ours_note
                .as_deref()
                .is_some_and(|n| n.starts_with("metanode docklock run failed: boom"))
        );
        let replay = replay_rows(&Err("metanode has no `docklock replay`".into()), None);
        assert_eq!(replay[0].ours, None);
        assert_eq!(
            replay[1].ours_note.as_deref(),
            Some("metanode has no `docklock replay`")
        );
    }

    #[test]
    fn replay_ratio_is_over_five_mean_spawns() {
        let r = ReplayResult {
            wall_ms: vec![30.0, 10.0, 20.0],
            report: Value::Null,
        };
        let rows = replay_rows(&Ok(r), Some(2.0));
        assert_eq!(rows[0].ours, Some(20.0));
        assert_eq!(rows[1].ours, Some(2.0));
    }

    #[test]
    fn panels_group_peers_under_their_metric() {
        let ours = series("ours", &[1.0], None);
        let peer = series("bwrap", &[2.0], None);
        let panels = panels_from_rows(&spawn_rows(&ours, &peer));
        let names: Vec<&str> = panels.iter().map(|p| p.metric.as_str()).collect();
        assert_eq!(
            names,
            [
                "spawn_p50_ms",
                "spawn_p99_ms",
                "spawn_mean_ms",
                "create_start_delete_mean_ms"
            ]
        );
        assert_eq!(
            panels[0].bars,
            vec![("ours", Some(1.0)), ("bwrap", Some(2.0))]
        );
        assert_eq!(panels[3].bars.len(), 4);
    }

    #[test]
    fn timed_run_sees_the_exit_status() {
        let ok = Contender {
            name: "true",
            label: "true",
            program: "/bin/true".into(),
            args: Vec::new(),
            env: None,
        };
        assert!(run_timed(&ok).is_ok());
        let fail = Contender {
            name: "sh",
            label: "sh",
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo nope >&2; exit 3".into()],
            env: Some(vec![("PATH", "/bin")]),
        };
        assert!(run_timed(&fail).is_err());
        let dir = std::env::temp_dir().join(format!("xtask-docklock-chk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let err = run_checked(&fail, &dir).expect_err("fails");
        assert_eq!(err, "sh failed: nope (exit status: 3)");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
