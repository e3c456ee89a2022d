//! Real-kernel tests of every confinement step.
//!
//! Confinement cannot be undone, so each case re-executes this binary with
//! `METANODE_CONFINE_TEST_CHILD=<mode>`: the child confines itself, probes the effects and exits
//! 0 after printing a done marker; the runner (this `main`, single-threaded, never confined)
//! checks the child's exit status and output. Runs unprivileged except the capability cases,
//! which need root and say "skipped (needs root)" otherwise.
//!
//! `cargo test -p metanode-confine --test confine [-- NAME_SUBSTRING]`

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output, Stdio};

use metanode_confine::{
    AuditLimits, CapSet, DenialCollection, LANDLOCK_ABI_TARGET, LandlockPlan, LandlockReport,
    LandlockStatus, NetlinkAudit, Signal, close_fds_except, close_fds_except_via_proc,
    collect_landlock_denials, deny_tsc, drop_capabilities, restrict_landlock, set_no_new_privs,
    set_parent_death_signal,
};

const CHILD_ENV: &str = "METANODE_CONFINE_TEST_CHILD";
const ROOT_ENV: &str = "METANODE_CONFINE_TEST_ROOT";
const SCOPED_ENV: &str = "METANODE_CONFINE_TEST_SCOPED";
const DONE_MARKER: &str = "confine-child-done";
const RDTSC_MARKER: &str = "rdtsc: executing";
/// A uid/gid nobody on the test machine uses, for chown probes.
const FOREIGN_ID: u32 = 54_321;
/// The uid/gid a root child switches to for the unprivileged capability cases (nobody).
const UNPRIVILEGED_ID: libc::uid_t = 65_534;
/// How long the parent-death victim waits before giving up (so a broken PDEATHSIG fails the
/// test instead of hanging it); not a performance bound.
const VICTIM_WAIT_SECS: u64 = 120;

type Check = Result<(), String>;

/// What a runner case reports: passed, or skipped with the reason (only for want of root).
enum Outcome {
    Passed,
    Skipped(&'static str),
}

type Case = Result<Outcome, String>;

/// A named runner case.
type NamedCase = (&'static str, fn() -> Case);

fn passed(check: Check) -> Case {
    check.map(|()| Outcome::Passed)
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn main() -> ExitCode {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        return child_main(&mode);
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let cases: &[NamedCase] = &[
        ("landlock_filesystem", || passed(landlock_filesystem())),
        ("landlock_tcp", || passed(landlock_tcp())),
        ("landlock_scopes_deny_signals_and_abstract_sockets", || {
            passed(landlock_scopes())
        }),
        ("landlock_without_scopes_allows_signals", || {
            passed(landlock_unscoped())
        }),
        (
            "landlock_missing_path_is_an_error_and_restricts_nothing",
            || passed(landlock_missing_path()),
        ),
        ("drop_capabilities_to_empty", drop_capabilities_empty),
        ("drop_capabilities_keeps_the_listed", drop_capabilities_keep),
        (
            "drop_capabilities_after_setuid_with_keepcaps",
            drop_capabilities_keepcaps,
        ),
        (
            "drop_capabilities_without_privilege_fails_with_eperm",
            drop_capabilities_unprivileged,
        ),
        ("no_new_privs", || passed(no_new_privs())),
        ("deny_tsc_makes_rdtsc_fault", || passed(deny_tsc_faults())),
        (
            "deny_tsc_survives_exec",
            || passed(deny_tsc_survives_exec()),
        ),
        ("close_fds_except_with_close_range", || {
            passed(close_fds(false))
        }),
        ("close_fds_except_via_proc", || passed(close_fds(true))),
        ("parent_death_signal_kills_the_orphan", || {
            passed(parent_death_signal())
        }),
        (
            "landlock_denials_after_exec_reach_the_audit_log",
            landlock_denials_in_audit_log,
        ),
    ];
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, case) in cases {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        match case() {
            Ok(Outcome::Passed) => println!("test {name} ... ok"),
            Ok(Outcome::Skipped(reason)) => println!("test {name} ... skipped ({reason})"),
            Err(message) => {
                println!(
                    "test {name} ... FAILED\n    {}",
                    message.replace('\n', "\n    ")
                );
                failed.push(*name);
            }
        }
    }
    println!(
        "\nconfine tests: {} passed, {} failed",
        ran - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------------------------
// Runner side

fn child(mode: &str) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mut command = Command::new(exe);
    command.env(CHILD_ENV, mode);
    command
}

fn run(mut command: Command, what: &str) -> Result<Output, String> {
    command
        .output()
        .map_err(|e| format!("spawning child {what}: {e}"))
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The child exited 0 after printing its done marker, so its checks ran and passed.
fn expect_done(mode: &str, output: &Output) -> Check {
    let marker = format!("{DONE_MARKER} {mode}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success() && stdout.lines().any(|l| l == marker),
        "child {mode} did not pass:\n{}",
        describe(output)
    );
    Ok(())
}

fn run_mode(mode: &str, env: &[(&str, OsString)]) -> Check {
    let mut command = child(mode);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = run(command, mode)?;
    expect_done(mode, &output)
}

fn temp_dir() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("metanode-confine-")
        .tempdir()
        .map_err(|e| format!("creating a temp dir: {e}"))
}

fn io_ctx<T>(result: io::Result<T>, what: &str) -> Result<T, String> {
    result.map_err(|e| format!("{what}: {e}"))
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn landlock_filesystem() -> Check {
    let dir = temp_dir()?;
    let root = dir.path();
    io_ctx(fs::create_dir(root.join("ro")), "mkdir ro")?;
    io_ctx(fs::create_dir(root.join("rw")), "mkdir rw")?;
    io_ctx(
        fs::write(root.join("ro/data.txt"), "read-only data\n"),
        "write ro/data.txt",
    )?;
    io_ctx(
        fs::write(root.join("rw-file.txt"), "before\n"),
        "write rw-file.txt",
    )?;
    run_mode("landlock-fs", &[(ROOT_ENV, root.as_os_str().to_owned())])
}

fn landlock_tcp() -> Check {
    run_mode("landlock-tcp", &[])
}

fn landlock_scopes() -> Check {
    run_mode("landlock-scope", &[(SCOPED_ENV, "1".into())])
}

fn landlock_unscoped() -> Check {
    run_mode("landlock-scope", &[(SCOPED_ENV, "0".into())])
}

fn landlock_missing_path() -> Check {
    let dir = temp_dir()?;
    run_mode(
        "landlock-missing",
        &[(ROOT_ENV, dir.path().as_os_str().to_owned())],
    )
}

/// A child restricts itself with "log new exec", execs a shell that tries to create a file in a
/// read-only tree: the denial comes back from the audit log, named by path, and nothing of other
/// domains does.
fn landlock_denials_in_audit_log() -> Case {
    if !is_root() {
        return Ok(Outcome::Skipped(
            "needs root (CAP_AUDIT_READ, CAP_AUDIT_CONTROL)",
        ));
    }
    let dir = temp_dir()?;
    let denied = dir.path().join("denied");
    // The first open asks the kernel and remembers "on" for this boot; the second trusts the
    // cache (no AUDIT_GET) and must still hear the denial.
    let cache = dir.path().join("run/audit-enabled");
    drop(NetlinkAudit::open(1 << 20, Some(&cache)).map_err(|e| format!("open audit: {e}"))?);
    let boot_id = std::fs::read("/proc/sys/kernel/random/boot_id").map_err(|e| e.to_string())?;
    if std::fs::read(&cache).ok() != Some(boot_id) {
        return Err(format!("{} does not hold this boot's id", cache.display()));
    }
    let mut audit =
        NetlinkAudit::open(1 << 20, Some(&cache)).map_err(|e| format!("open audit: {e}"))?;
    metanode_confine::forget_audit_enabled(&cache);
    if cache.exists() {
        return Err(format!("{} survived forget_audit_enabled", cache.display()));
    }
    let plan = LandlockPlan {
        read_exec_paths: vec![PathBuf::from("/")],
        log_denials_after_exec: true,
        ..LandlockPlan::default()
    };
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(format!("echo x > {}", denied.display()))
        .stderr(Stdio::null());
    // SAFETY: the runner is single-threaded, so the forked child may allocate; restrict_landlock
    // only makes syscalls on the child's own state.
    unsafe {
        command.pre_exec(move || {
            restrict_landlock(&plan)
                .map(|_| ())
                .map_err(|e| io::Error::other(e.to_string()))
        });
    }
    let mut shell = io_ctx(command.spawn(), "spawning the confined shell")?;
    let status = io_ctx(shell.wait(), "waiting for the shell")?;
    ensure!(!status.success(), "the shell created {}", denied.display());
    let (wake_r, wake_w) = io_ctx(rustix::pipe::pipe().map_err(io::Error::from), "pipe")?;
    audit.set_wake(wake_r);
    drop(wake_w);
    let limits = AuditLimits {
        records_count_max: 100_000,
        records_bytes_max: 64 << 20,
        denials_count_max: 16,
        object_bytes_max: 192,
        drain_timeout: std::time::Duration::from_secs(5),
        poll_interval: std::time::Duration::from_millis(50),
    };
    let got = collect_landlock_denials(
        &mut audit,
        shell.id(),
        limits,
        format!("metanode-confine test {}", std::process::id()),
    );
    ensure!(
        got.collection == DenialCollection::Complete,
        "collection {:?}",
        got.collection
    );
    let accesses: Vec<String> = got.denials.iter().map(|d| d.access()).collect();
    ensure!(
        accesses == [format!("fs.make_reg {}", dir.path().display())],
        "denials {accesses:?}"
    );
    Ok(Outcome::Passed)
}

fn drop_capabilities_empty() -> Case {
    if !is_root() {
        return Ok(Outcome::Skipped("needs root"));
    }
    let dir = temp_dir()?;
    for name in ["before", "after"] {
        io_ctx(
            fs::write(dir.path().join(name), "x"),
            "creating a chown target",
        )?;
    }
    passed(run_mode(
        "caps-empty",
        &[(ROOT_ENV, dir.path().as_os_str().to_owned())],
    ))
}

fn drop_capabilities_keep() -> Case {
    if !is_root() {
        return Ok(Outcome::Skipped("needs root"));
    }
    let dir = temp_dir()?;
    let owned = dir.path().join("chown-me");
    let secret = dir.path().join("secret");
    io_ctx(fs::write(&owned, "x"), "creating chown-me")?;
    io_ctx(fs::write(&secret, "secret"), "creating secret")?;
    io_ctx(
        chown(&secret, Some(FOREIGN_ID), Some(FOREIGN_ID)),
        "chown secret",
    )?;
    io_ctx(
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)),
        "chmod secret",
    )?;
    passed(run_mode(
        "caps-keep",
        &[(ROOT_ENV, dir.path().as_os_str().to_owned())],
    ))
}

fn drop_capabilities_keepcaps() -> Case {
    if !is_root() {
        return Ok(Outcome::Skipped("needs root"));
    }
    passed(run_mode("caps-keepcaps", &[]))
}

fn drop_capabilities_unprivileged() -> Case {
    // As root the child first switches to an unprivileged uid (which clears its capabilities).
    passed(run_mode("caps-unprivileged", &[]))
}

fn no_new_privs() -> Check {
    run_mode("nnp", &[])
}

fn deny_tsc_faults() -> Check {
    // Control: without deny_tsc the same instruction runs and the child exits cleanly.
    let control = run(child("rdtsc"), "rdtsc")?;
    expect_done("rdtsc", &control)?;
    let control_stdout = String::from_utf8_lossy(&control.stdout);
    ensure!(
        control_stdout.contains("rdtsc value "),
        "control printed no counter value"
    );

    // deny_tsc, then rdtsc in the same process: killed by SIGSEGV right after the marker.
    let output = run(child("tsc-deny-then-rdtsc"), "tsc-deny-then-rdtsc")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        stdout.lines().any(|l| l == RDTSC_MARKER)
            && !stdout.contains("rdtsc value ")
            && output.status.signal() == Some(libc::SIGSEGV),
        "expected death by SIGSEGV right after {RDTSC_MARKER:?}:\n{}",
        describe(&output)
    );
    Ok(())
}

fn deny_tsc_survives_exec() -> Check {
    // The flag survives execve. Observed through this dynamically linked test binary, which
    // cannot even start under it: glibc's ld.so reads the TSC during startup, so the exec'd
    // process dies before main (no marker) - the same binary runs fine without the flag (the
    // control in deny_tsc_makes_rdtsc_fault).
    let output = run(child("tsc-deny-then-exec"), "tsc-deny-then-exec")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        stdout.contains("exec after deny_tsc")
            && !stdout.contains(RDTSC_MARKER)
            && output.status.signal() == Some(libc::SIGSEGV),
        "expected the exec'd process to die by SIGSEGV before main:\n{}",
        describe(&output)
    );
    Ok(())
}

fn close_fds(via_proc: bool) -> Check {
    run_mode(
        if via_proc {
            "close-fds-proc"
        } else {
            "close-fds"
        },
        &[],
    )
}

fn parent_death_signal() -> Check {
    // As a subreaper, this runner inherits the orphaned victim and can reap it to see how it died.
    io_ctx(
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .map_err(io::Error::from),
        "PR_SET_CHILD_SUBREAPER",
    )?;
    let output = run(child("pdeath-parent"), "pdeath-parent")?;
    expect_done("pdeath-parent", &output)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let victim = stdout
        .lines()
        .find_map(|l| l.strip_prefix("victim "))
        .and_then(|pid| pid.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| format!("no victim pid in the output:\n{}", describe(&output)))?;
    let waited = io_ctx(
        rustix::process::waitpid(Some(victim), rustix::process::WaitOptions::empty())
            .map_err(io::Error::from),
        "waitpid(victim)",
    )?;
    let (_, status) = waited.ok_or("waitpid returned no status")?;
    ensure!(
        status.terminating_signal() == Some(libc::SIGKILL),
        "victim was not killed by SIGKILL when its parent exited: {status:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Child side

fn child_main(mode: &str) -> ExitCode {
    let result = match mode {
        "landlock-fs" => child_landlock_fs(),
        "landlock-tcp" => child_landlock_tcp(),
        "landlock-scope" => child_landlock_scope(),
        "landlock-missing" => child_landlock_missing(),
        "caps-empty" => child_caps_empty(),
        "caps-keep" => child_caps_keep(),
        "caps-keepcaps" => child_caps_keepcaps(),
        "caps-unprivileged" => child_caps_unprivileged(),
        "nnp" => child_nnp(),
        "rdtsc" => child_rdtsc(),
        "tsc-deny-then-rdtsc" => child_tsc_deny().and_then(|()| child_rdtsc()),
        "tsc-deny-then-exec" => child_tsc_deny_then_exec(),
        "close-fds" => child_close_fds(false),
        "close-fds-proc" => child_close_fds(true),
        "pdeath-parent" => child_pdeath_parent(),
        "pdeath-victim" => child_pdeath_victim(),
        other => Err(format!("unknown child mode {other:?}")),
    };
    match result {
        Ok(()) => {
            println!("{DONE_MARKER} {mode}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("child {mode}: {message}");
            ExitCode::FAILURE
        }
    }
}

fn env_path(key: &str) -> Result<PathBuf, String> {
    std::env::var_os(key)
        .map(PathBuf::from)
        .ok_or_else(|| format!("{key} is not set"))
}

fn expect_errno<T>(result: io::Result<T>, errno: i32, what: &str) -> Check {
    let wanted = io::Error::from_raw_os_error(errno);
    match result {
        Ok(_) => Err(format!("{what}: succeeded, expected {wanted}")),
        Err(e) if e.raw_os_error() == Some(errno) => Ok(()),
        Err(e) => Err(format!("{what}: failed with {e}, expected {wanted}")),
    }
}

/// The running kernel's Landlock ABI (0 without Landlock), asked directly, not via the crate.
fn kernel_landlock_abi() -> u8 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the syscall only returns
    // the ABI number; it reads and writes no memory.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u8::try_from(version.max(0)).unwrap_or(u8::MAX)
}

/// On a kernel with the target ABI (this machine kind: 7) the report must say fully enforced at
/// that ABI; an older kernel must at least be reported as such.
fn check_report(report: LandlockReport) -> Check {
    println!("landlock report {report:?}");
    let kernel = kernel_landlock_abi();
    ensure!(
        kernel > 0,
        "this kernel has no Landlock; the landlock tests need one"
    );
    ensure!(
        report.kernel_abi == kernel,
        "report {report:?} but the kernel says ABI {kernel}"
    );
    if kernel >= LANDLOCK_ABI_TARGET {
        ensure!(
            report.status == LandlockStatus::FullyEnforced && report.abi == LANDLOCK_ABI_TARGET,
            "expected fully enforced at ABI {LANDLOCK_ABI_TARGET}, got {report:?}"
        );
    } else {
        ensure!(
            report.status != LandlockStatus::NotEnforced && report.abi == kernel,
            "expected enforcement at the kernel's ABI {kernel}, got {report:?}"
        );
    }
    Ok(())
}

fn outside_file() -> Result<&'static Path, String> {
    ["/etc/hostname", "/etc/passwd"]
        .into_iter()
        .map(Path::new)
        .find(|p| fs::read(p).is_ok())
        .ok_or_else(|| "neither /etc/hostname nor /etc/passwd is readable".to_string())
}

fn child_landlock_fs() -> Check {
    let root = env_path(ROOT_ENV)?;
    let ro = root.join("ro");
    let rw = root.join("rw");
    let rw_file = root.join("rw-file.txt");
    let outside = outside_file()?;

    let plan = LandlockPlan {
        read_exec_paths: vec![ro.clone()],
        read_write_paths: vec![rw.clone(), rw_file.clone()],
        ..LandlockPlan::default()
    };
    let report = restrict_landlock(&plan).map_err(|e| format!("restrict_landlock: {e}"))?;
    check_report(report)?;

    let data = io_ctx(
        fs::read_to_string(ro.join("data.txt")),
        "reading ro/data.txt",
    )?;
    ensure!(data == "read-only data\n", "ro/data.txt reads {data:?}");
    let listed: Vec<_> = io_ctx(fs::read_dir(&ro), "listing ro")?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    ensure!(listed == ["data.txt"], "ro lists {listed:?}");
    expect_errno(
        OpenOptions::new().write(true).open(ro.join("data.txt")),
        libc::EACCES,
        "opening ro/data.txt for writing",
    )?;
    expect_errno(
        File::create(ro.join("new.txt")),
        libc::EACCES,
        "creating ro/new.txt",
    )?;
    expect_errno(fs::create_dir(ro.join("sub")), libc::EACCES, "mkdir ro/sub")?;

    io_ctx(
        fs::write(rw.join("new.txt"), "written\n"),
        "writing rw/new.txt",
    )?;
    io_ctx(fs::create_dir(rw.join("sub")), "mkdir rw/sub")?;
    io_ctx(
        fs::rename(rw.join("new.txt"), rw.join("sub/new.txt")),
        "rename within rw",
    )?;
    let back = io_ctx(
        fs::read_to_string(rw.join("sub/new.txt")),
        "reading rw/sub/new.txt",
    )?;
    ensure!(back == "written\n", "rw/sub/new.txt reads {back:?}");
    io_ctx(
        fs::write(&rw_file, "after\n"),
        "writing the rw-file.txt file rule",
    )?;
    ensure!(
        io_ctx(fs::read_to_string(&rw_file), "reading rw-file.txt")? == "after\n",
        "rw-file.txt not rewritten"
    );
    // Moving a file from rw into ro would create it in ro: denied (EXDEV when only the refer
    // right is missing, EACCES when a make right is; ro lacks both).
    let moved = fs::rename(rw.join("sub/new.txt"), ro.join("moved.txt"));
    ensure!(
        matches!(
            moved.as_ref().map_err(io::Error::raw_os_error),
            Err(Some(libc::EXDEV | libc::EACCES))
        ),
        "renaming rw/sub/new.txt into ro: {moved:?}, expected EXDEV or EACCES"
    );

    expect_errno(
        fs::read(outside),
        libc::EACCES,
        &format!("reading {}", outside.display()),
    )?;
    expect_errno(fs::read_dir("/"), libc::EACCES, "listing /")?;
    expect_errno(
        File::create(root.join("beside.txt")),
        libc::EACCES,
        "creating a file beside the rules",
    )?;
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let listener = io_ctx(TcpListener::bind("127.0.0.1:0"), "binding 127.0.0.1:0")?;
    Ok(io_ctx(listener.local_addr(), "local_addr")?.port())
}

fn child_landlock_tcp() -> Check {
    // Created before the restriction, like a socket the launcher hands in.
    let server = io_ctx(TcpListener::bind("127.0.0.1:0"), "binding the server")?;
    let server_port = io_ctx(server.local_addr(), "server local_addr")?.port();
    let allowed_bind = free_port()?;
    let mut denied = free_port()?;
    while denied == allowed_bind || denied == server_port {
        denied = free_port()?;
    }

    let plan = LandlockPlan {
        tcp_bind_ports: vec![allowed_bind],
        tcp_connect_ports: vec![server_port],
        ..LandlockPlan::default()
    };
    let report = restrict_landlock(&plan).map_err(|e| format!("restrict_landlock: {e}"))?;
    check_report(report)?;

    let bound = io_ctx(
        TcpListener::bind(("127.0.0.1", allowed_bind)),
        &format!("binding listed port {allowed_bind}"),
    )?;
    expect_errno(
        TcpListener::bind(("127.0.0.1", denied)),
        libc::EACCES,
        &format!("binding unlisted port {denied}"),
    )?;
    io_ctx(
        TcpStream::connect(("127.0.0.1", server_port)),
        &format!("connecting to listed port {server_port}"),
    )?;
    expect_errno(
        TcpStream::connect(("127.0.0.1", denied)),
        libc::EACCES,
        &format!("connecting to unlisted port {denied}"),
    )?;
    drop(bound);

    // A second domain with no ports: every TCP bind and connect is denied from now on.
    let report = restrict_landlock(&LandlockPlan::default())
        .map_err(|e| format!("restrict_landlock (no ports): {e}"))?;
    check_report(report)?;
    expect_errno(
        TcpListener::bind(("127.0.0.1", allowed_bind)),
        libc::EACCES,
        "binding the once-listed port under an empty port list",
    )?;
    expect_errno(
        TcpStream::connect(("127.0.0.1", server_port)),
        libc::EACCES,
        "connecting to the once-listed port under an empty port list",
    )?;
    Ok(())
}

fn child_landlock_scope() -> Check {
    let scoped = std::env::var(SCOPED_ENV).map_err(|_| format!("{SCOPED_ENV} is not set"))? == "1";
    let name = format!("metanode-confine-test-{}", std::process::id());
    let address = io_ctx(
        SocketAddr::from_abstract_name(name.as_bytes()),
        "abstract address",
    )?;
    // Bound before the restriction: outside the domain, like a host service's socket.
    let _listener = io_ctx(
        UnixListener::bind_addr(&address),
        "binding the abstract socket",
    )?;
    let parent = rustix::process::getppid().ok_or("no parent process")?;
    io_ctx(
        rustix::process::test_kill_process(parent).map_err(io::Error::from),
        "kill(parent, 0) before restricting",
    )?;

    let plan = LandlockPlan {
        scoped,
        ..LandlockPlan::default()
    };
    let report = restrict_landlock(&plan).map_err(|e| format!("restrict_landlock: {e}"))?;
    check_report(report)?;

    let kill = rustix::process::test_kill_process(parent).map_err(io::Error::from);
    let connect = UnixStream::connect_addr(&address);
    if scoped {
        expect_errno(kill, libc::EPERM, "kill(parent, 0) under the signal scope")?;
        expect_errno(
            connect,
            libc::EPERM,
            "connecting to an outside abstract socket",
        )?;
    } else {
        io_ctx(kill, "kill(parent, 0) without scopes")?;
        io_ctx(connect, "connecting to the abstract socket without scopes")?;
    }
    Ok(())
}

fn child_landlock_missing() -> Check {
    let missing = env_path(ROOT_ENV)?.join("does-not-exist");
    let nnp_before =
        rustix::thread::no_new_privs().map_err(|e| format!("PR_GET_NO_NEW_PRIVS: {e}"))?;
    let plan = LandlockPlan {
        read_exec_paths: vec![PathBuf::from("/")],
        read_write_paths: vec![missing.clone()],
        ..LandlockPlan::default()
    };
    let error = match restrict_landlock(&plan) {
        Ok(report) => return Err(format!("a missing path was accepted: {report:?}")),
        Err(error) => error,
    };
    let message = error.to_string();
    ensure!(
        message.contains(&missing.display().to_string()),
        "the error does not name the path: {message}"
    );
    ensure!(
        error.errno() == Some(rustix::io::Errno::NOENT),
        "errno {:?}",
        error.errno()
    );
    // Nothing was restricted: writing anywhere still works and no_new_privs is unchanged.
    io_ctx(
        fs::write(env_path(ROOT_ENV)?.join("still-writable"), "x"),
        "writing after the error",
    )?;
    let nnp_after =
        rustix::thread::no_new_privs().map_err(|e| format!("PR_GET_NO_NEW_PRIVS: {e}"))?;
    ensure!(
        nnp_before == nnp_after,
        "no_new_privs changed from {nnp_before} to {nnp_after}"
    );
    Ok(())
}

/// The capability masks of this process from /proc/self/status, by field name (CapEff, ...).
fn status_caps() -> Result<Vec<(String, u64)>, String> {
    let status = io_ctx(
        fs::read_to_string("/proc/self/status"),
        "reading /proc/self/status",
    )?;
    let mut out = Vec::new();
    for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let value = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .ok_or_else(|| format!("{field} missing from /proc/self/status"))?;
        let mask = u64::from_str_radix(value.trim(), 16)
            .map_err(|e| format!("{field} {value:?} is not hex: {e}"))?;
        out.push((field.to_string(), mask));
    }
    Ok(out)
}

fn child_caps_empty() -> Check {
    let root = env_path(ROOT_ENV)?;
    let before = status_caps()?;
    ensure!(
        before.iter().any(|(f, m)| f == "CapEff" && *m != 0),
        "the child started without capabilities: {before:?}"
    );
    // Control: with capabilities, chown to a foreign uid works.
    io_ctx(
        chown(root.join("before"), Some(FOREIGN_ID), Some(FOREIGN_ID)),
        "chown as root",
    )?;

    drop_capabilities(CapSet::EMPTY).map_err(|e| format!("drop_capabilities: {e}"))?;

    let after = status_caps()?;
    ensure!(
        after.iter().all(|(_, m)| *m == 0),
        "capabilities left: {after:?}"
    );
    expect_errno(
        chown(root.join("after"), Some(FOREIGN_ID), Some(FOREIGN_ID)),
        libc::EPERM,
        "chown to a foreign uid without capabilities",
    )?;
    Ok(())
}

fn child_caps_keep() -> Check {
    let root = env_path(ROOT_ENV)?;
    let keep = CapSet::parse_names(&["CAP_CHOWN".to_string(), "CAP_NET_BIND_SERVICE".to_string()])
        .map_err(|e| format!("parse_names: {e}"))?;
    let expected = (1u64 << 0) | (1u64 << 10);
    ensure!(keep.bits() == expected, "parsed {:#x}", keep.bits());
    // Control: as full root the 0-mode foreign file is readable (CAP_DAC_OVERRIDE).
    io_ctx(
        fs::read(root.join("secret")),
        "reading the 0-mode file as full root",
    )?;

    drop_capabilities(keep).map_err(|e| format!("drop_capabilities: {e}"))?;

    let after = status_caps()?;
    for (field, mask) in &after {
        let wanted = if field == "CapAmb" { 0 } else { expected };
        ensure!(
            *mask == wanted,
            "{field} is {mask:#x}, expected {wanted:#x} ({after:?})"
        );
    }
    io_ctx(
        chown(root.join("chown-me"), Some(FOREIGN_ID), Some(FOREIGN_ID)),
        "chown with CAP_CHOWN kept",
    )?;
    expect_errno(
        fs::read(root.join("secret")),
        libc::EACCES,
        "reading a 0-mode foreign file without CAP_DAC_OVERRIDE",
    )?;
    Ok(())
}

fn switch_to_unprivileged_ids() -> Check {
    // SAFETY: plain integer syscalls; this child process is single-threaded.
    let ret = unsafe { libc::setresgid(UNPRIVILEGED_ID, UNPRIVILEGED_ID, UNPRIVILEGED_ID) };
    ensure!(ret == 0, "setresgid: {}", io::Error::last_os_error());
    // SAFETY: as above.
    let ret = unsafe { libc::setresuid(UNPRIVILEGED_ID, UNPRIVILEGED_ID, UNPRIVILEGED_ID) };
    ensure!(ret == 0, "setresuid: {}", io::Error::last_os_error());
    Ok(())
}

/// The launcher's order is setuid, then drop_capabilities: with PR_SET_KEEPCAPS the permitted set
/// survives setuid (the effective one does not) and drop_capabilities must still work.
fn child_caps_keepcaps() -> Check {
    rustix::thread::set_keep_capabilities(true).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"))?;
    switch_to_unprivileged_ids()?;
    let between = status_caps()?;
    ensure!(
        between.iter().any(|(f, m)| f == "CapEff" && *m == 0)
            && between.iter().any(|(f, m)| f == "CapPrm" && *m != 0),
        "after setuid with keepcaps expected CapEff 0 and CapPrm kept: {between:?}"
    );
    let keep = CapSet::parse_names(&["CAP_NET_BIND_SERVICE".to_string()])
        .map_err(|e| format!("parse_names: {e}"))?;
    drop_capabilities(keep).map_err(|e| format!("drop_capabilities: {e}"))?;
    let after = status_caps()?;
    for (field, mask) in &after {
        let wanted = if field == "CapAmb" { 0 } else { 1u64 << 10 };
        ensure!(
            *mask == wanted,
            "{field} is {mask:#x}, expected {wanted:#x} ({after:?})"
        );
    }
    Ok(())
}

fn child_caps_unprivileged() -> Check {
    if rustix::process::geteuid().is_root() {
        switch_to_unprivileged_ids()?;
    }
    let chown_only =
        CapSet::parse_names(&["CAP_CHOWN".to_string()]).map_err(|e| format!("parse_names: {e}"))?;
    match drop_capabilities(chown_only) {
        Ok(()) => return Err("kept CAP_CHOWN without having it".to_string()),
        Err(error) => ensure!(
            error.errno() == rustix::io::Errno::PERM && error.to_string().contains("CAP_CHOWN"),
            "keeping CAP_CHOWN unprivileged: {error}"
        ),
    }
    let bounding_before = status_caps()?;
    match drop_capabilities(CapSet::EMPTY) {
        Ok(()) => return Err("dropped the bounding set without CAP_SETPCAP".to_string()),
        // The first capability still in the bounding set is CAP_CHOWN (0).
        Err(error) => ensure!(
            error
                == metanode_confine::CapDropError::BoundingDrop {
                    number: 0,
                    errno: rustix::io::Errno::PERM
                },
            "dropping everything unprivileged: {error} (caps before {bounding_before:?})"
        ),
    }
    Ok(())
}

fn status_field(name: &str) -> Result<String, String> {
    let status = io_ctx(
        fs::read_to_string("/proc/self/status"),
        "reading /proc/self/status",
    )?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("{name} missing from /proc/self/status"))
}

fn child_nnp() -> Check {
    let before = status_field("NoNewPrivs")?;
    println!("NoNewPrivs before: {before}");
    set_no_new_privs().map_err(|e| format!("set_no_new_privs: {e}"))?;
    let after = status_field("NoNewPrivs")?;
    ensure!(after == "1", "NoNewPrivs after set_no_new_privs: {after}");
    ensure!(
        rustix::thread::no_new_privs().map_err(|e| format!("PR_GET_NO_NEW_PRIVS: {e}"))?,
        "PR_GET_NO_NEW_PRIVS says 0"
    );
    Ok(())
}

fn child_rdtsc() -> Check {
    println!("{RDTSC_MARKER}");
    io_ctx(io::stdout().flush(), "flushing stdout")?;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc has no memory effects; it either returns the counter or, under
        // PR_TSC_SIGSEGV, faults, which is what the test observes.
        let ticks = unsafe { core::arch::x86_64::_rdtsc() };
        println!("rdtsc value {ticks}");
        Ok(())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Err("rdtsc test needs x86_64".to_string())
    }
}

fn child_tsc_deny() -> Check {
    deny_tsc().map_err(|e| format!("deny_tsc: {e}"))?;
    let readability = rustix::process::time_stamp_counter_readability()
        .map_err(|e| format!("PR_GET_TSC: {e}"))?;
    ensure!(
        readability == rustix::process::TimeStampCounterReadability::RaiseSIGSEGV,
        "PR_GET_TSC says {readability:?}"
    );
    Ok(())
}

fn child_tsc_deny_then_exec() -> Check {
    child_tsc_deny()?;
    println!("exec after deny_tsc");
    io_ctx(io::stdout().flush(), "flushing stdout")?;
    let error = child("rdtsc").exec();
    Err(format!("exec into the rdtsc mode failed: {error}"))
}

/// Open descriptors of this process, excluding the one used to list them.
fn open_fds() -> Result<BTreeSet<RawFd>, String> {
    let dir = File::open("/proc/self/fd").map_err(|e| format!("opening /proc/self/fd: {e}"))?;
    let listing = dir.as_raw_fd();
    // Dir::new reads through this descriptor; read_from would open (and list) another one.
    let mut entries = rustix::fs::Dir::new(dir).map_err(|e| format!("reading dir: {e}"))?;
    let mut fds = BTreeSet::new();
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(|e| format!("reading /proc/self/fd: {e}"))?;
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .ok()
            .and_then(|n| n.parse::<RawFd>().ok())
            && fd != listing
        {
            fds.insert(fd);
        }
    }
    Ok(fds)
}

fn child_close_fds(via_proc: bool) -> Check {
    let null = c"/dev/null";
    // Raw descriptors (not Files) so nothing owns them when they are closed under it.
    // SAFETY: open with a valid NUL-terminated path; the returned fd is only used via dup2 below.
    let base = unsafe { libc::open(null.as_ptr(), libc::O_RDONLY) };
    ensure!(base >= 0, "open /dev/null: {}", io::Error::last_os_error());
    for target in [7, 9, 30, 100, 1000] {
        // SAFETY: dup2 on descriptors this process owns; no Rust object owns the targets.
        let ret = unsafe { libc::dup2(base, target) };
        ensure!(
            ret == target,
            "dup2 to {target}: {}",
            io::Error::last_os_error()
        );
    }
    let before = open_fds()?;
    println!("open before: {before:?}");
    for fd in [base, 7, 9, 30, 100, 1000] {
        ensure!(
            before.contains(&fd),
            "fd {fd} was not open before the call: {before:?}"
        );
    }

    let keep = [2, 100, 0, 9, 1, 9];
    if via_proc {
        close_fds_except_via_proc(&keep).map_err(|e| format!("close_fds_except_via_proc: {e}"))?;
    } else {
        close_fds_except(&keep).map_err(|e| format!("close_fds_except: {e}"))?;
    }

    let after = open_fds()?;
    let expected: BTreeSet<RawFd> = [0, 1, 2, 9, 100].into_iter().collect();
    ensure!(
        after == expected,
        "open after: {after:?}, expected {expected:?}"
    );
    let fd9 = rustix::fs::fstat(borrow_open_fd(9)).map_err(|e| format!("fstat kept fd 9: {e}"))?;
    let dev_null = rustix::fs::stat(null).map_err(|e| format!("stat /dev/null: {e}"))?;
    ensure!(
        fd9.st_rdev == dev_null.st_rdev,
        "kept fd 9 no longer refers to /dev/null"
    );
    Ok(())
}

fn borrow_open_fd(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: only called for a descriptor the test just verified is open and never closes.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

fn child_pdeath_parent() -> Check {
    let mut victim = child("pdeath-victim")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning the victim: {e}"))?;
    let stdout = victim.stdout.take().ok_or("victim has no stdout pipe")?;
    let mut line = String::new();
    io_ctx(
        BufReader::new(stdout).read_line(&mut line),
        "reading the victim's first line",
    )?;
    ensure!(
        line.trim() == "armed",
        "victim said {line:?} instead of armed"
    );
    println!("victim {}", victim.id());
    // Returning exits this process (the victim's parent) with the victim still running.
    Ok(())
}

fn child_pdeath_victim() -> Check {
    set_parent_death_signal(Signal::KILL).map_err(|e| format!("set_parent_death_signal: {e}"))?;
    let read = rustix::process::parent_process_death_signal()
        .map_err(|e| format!("PR_GET_PDEATHSIG: {e}"))?;
    ensure!(read == Some(Signal::KILL), "PR_GET_PDEATHSIG says {read:?}");
    println!("armed");
    io_ctx(io::stdout().flush(), "flushing stdout")?;
    std::thread::sleep(std::time::Duration::from_secs(VICTIM_WAIT_SECS));
    Err("still alive after the parent exited".to_string())
}
