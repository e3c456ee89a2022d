//! The builtin policy against the real kernel.
//!
//! The test binary re-executes itself with `METANODE_SECCOMP_TEST_CHILD` set; that child installs
//! the policy on itself (no_new_privs makes this work without root), sends the listener to the
//! parent over a unix socket (SCM_RIGHTS, as DockLock does), runs raw syscalls and a small Rust
//! std workload, and prints one line per probe. The parent supervises and compares both the
//! results and the exact list of violations. A re-exec (not fork) keeps the child a fresh,
//! single-threaded process whose only filter is ours.
//!
//! The wall-clock case runs the child as DockLock does: traced by this test's main thread with
//! metanode_confine::follow_cage, which hides the vDSO at its exec, so its clock reads become
//! syscalls that supervise_with_wall_clock answers from the logical clock.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};

use metanode_confine::{Attach, CageTrace, follow_cage, trace_me};
use metanode_seccomp::{
    CompiledSeccomp, SeccompPolicy, Violation, WallClock, supervise, supervise_with_wall_clock,
};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};

const CHILD_ENV: &str = "METANODE_SECCOMP_TEST_CHILD";
/// Child modes.
const MODE_PROBES: &str = "probes";
const MODE_QUIET: &str = "quiet";
const MODE_EXEC: &str = "exec";
const MODE_WALL_CLOCK: &str = "wall-clock";
/// The run's logical time: 2023-11-14T22:13:20Z.
const LOGICAL_TIME_NS: u64 = 1_700_000_000_000_000_000;
/// Exit code of the re-executed grandchild, proving it ran to completion under the filter.
const EXEC_EXIT_CODE: i32 = 7;

const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541c;
const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
/// getpid in the i386 table.
const I386_GETPID: i32 = 20;

fn main() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok(MODE_PROBES) => child(true),
        Ok(MODE_QUIET) => child(false),
        Ok(MODE_EXEC) => std::process::exit(grandchild()),
        Ok(MODE_WALL_CLOCK) => wall_clock_child(),
        Ok(other) => panic!("unknown child mode {other:?}"),
        Err(_) => {
            let tests: [(&str, fn()); 3] = [
                (
                    "confined_child_gets_promised_results_and_every_violation_is_reported",
                    confined_child_gets_promised_results_and_every_violation_is_reported,
                ),
                (
                    "supervisor_returns_ok_when_a_clean_child_exits",
                    supervisor_returns_ok_when_a_clean_child_exits,
                ),
                (
                    "wall_clock_reads_with_the_vdso_hidden_are_logical_and_deterministic",
                    wall_clock_reads_are_logical_and_deterministic,
                ),
            ];
            println!("\nrunning {} tests", tests.len());
            for (name, test) in tests {
                println!("test {name} ...");
                test();
                println!("test {name} ... ok");
            }
            println!("\ntest result: ok. {} passed", tests.len());
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Parent side

struct ChildRun {
    pid: u32,
    status: ExitStatus,
    stdout: String,
    violations: Vec<Violation>,
}

fn run_confined_child(mode: &str) -> ChildRun {
    let (parent_end, child_end) = UnixStream::pair().expect("socketpair");
    let exe = std::env::current_exe().expect("current_exe");
    let child = Command::new(exe)
        .env(CHILD_ENV, mode)
        .stdin(Stdio::from(OwnedFd::from(child_end)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the confined child");
    let pid = child.id();

    let listener = receive_listener(&parent_end);
    let supervisor = std::thread::spawn(move || {
        let mut violations = Vec::new();
        let result = supervise(listener, &mut |violation| violations.push(violation));
        (result, violations)
    });
    let output = child.wait_with_output().expect("wait for the child");
    // The filter's last user is gone once the child is reaped, so the supervisor must return.
    let (result, violations) = supervisor.join().expect("supervisor thread");
    result.expect("supervise returns Ok when no task uses the filter");
    ChildRun {
        pid,
        status: output.status,
        stdout: String::from_utf8(output.stdout).expect("utf-8 output"),
        violations,
    }
}

fn receive_listener(socket: &UnixStream) -> OwnedFd {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0_u8; 1];
    recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .expect("recvmsg listener");
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return fd;
        }
    }
    panic!("the child sent no listener (it failed before or during install; see its stderr)");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The call succeeded with exactly this return value.
    Returns(i64),
    /// The call succeeded (non-negative return value).
    Succeeds,
    /// The call failed with this errno.
    Fails(i32),
}

fn confined_child_gets_promised_results_and_every_violation_is_reported() {
    let run = run_confined_child(MODE_PROBES);
    assert!(
        run.status.success(),
        "child failed: {:?}\n{}",
        run.status,
        run.stdout
    );

    let mut results: BTreeMap<String, (i64, i32)> = BTreeMap::new();
    for line in run.stdout.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [name, ret, errno] = fields[..] {
            let parsed = (ret.parse().expect("ret"), errno.parse().expect("errno"));
            assert!(
                results.insert(name.to_string(), parsed).is_none(),
                "probe {name} twice"
            );
        }
    }

    let pid = i64::from(run.pid);
    let expectations: Vec<(&str, Expect, Option<&str>)> = vec![
        // Allowed calls work.
        ("getpid", Expect::Returns(pid), None),
        ("pipe_write_read", Expect::Returns(5), None),
        ("clock_gettime", Expect::Returns(0), None),
        ("no_new_privs", Expect::Returns(1), None),
        ("ioctl_fionread", Expect::Returns(0), None),
        ("personality_query", Expect::Succeeds, None),
        // Refused by the allowlist: EPERM from the supervisor, one violation each.
        ("mount", Expect::Fails(libc::EPERM), Some("mount")),
        ("umount2", Expect::Fails(libc::EPERM), Some("umount2")),
        (
            "io_uring_setup",
            Expect::Fails(libc::EPERM),
            Some("io_uring_setup"),
        ),
        ("bpf", Expect::Fails(libc::EPERM), Some("bpf")),
        (
            "perf_event_open",
            Expect::Fails(libc::EPERM),
            Some("perf_event_open"),
        ),
        ("keyctl", Expect::Fails(libc::EPERM), Some("keyctl")),
        ("ptrace", Expect::Fails(libc::EPERM), Some("ptrace")),
        (
            "process_vm_readv",
            Expect::Fails(libc::EPERM),
            Some("process_vm_readv"),
        ),
        ("unshare", Expect::Fails(libc::EPERM), Some("unshare")),
        ("setns", Expect::Fails(libc::EPERM), Some("setns")),
        (
            "userfaultfd",
            Expect::Fails(libc::EPERM),
            Some("userfaultfd"),
        ),
        (
            "open_by_handle_at",
            Expect::Fails(libc::EPERM),
            Some("open_by_handle_at"),
        ),
        (
            "clock_settime",
            Expect::Fails(libc::EPERM),
            Some("clock_settime"),
        ),
        (
            "settimeofday",
            Expect::Fails(libc::EPERM),
            Some("settimeofday"),
        ),
        ("clone_newuser", Expect::Fails(libc::EPERM), Some("clone")),
        ("ioctl_tiocsti", Expect::Fails(libc::EPERM), Some("ioctl")),
        (
            "ioctl_tiocsti_high_bits",
            Expect::Fails(libc::EPERM),
            Some("ioctl"),
        ),
        ("ioctl_tioclinux", Expect::Fails(libc::EPERM), Some("ioctl")),
        ("socket_vsock", Expect::Fails(libc::EPERM), Some("socket")),
        ("prctl_set_tsc", Expect::Fails(libc::EPERM), Some("prctl")),
        (
            "personality_no_aslr",
            Expect::Fails(libc::EPERM),
            Some("personality"),
        ),
        ("x32_getpid", Expect::Fails(libc::EPERM), Some("x32_abi")),
        ("i386_getpid", Expect::Fails(libc::EPERM), Some("i386_abi")),
        // Expected refusals: ENOSYS straight from the kernel, not reported.
        ("clone3", Expect::Fails(libc::ENOSYS), None),
        ("getrandom", Expect::Fails(libc::ENOSYS), None),
        // Threads, files, loopback sockets, randomness fallback, exec: no violation at all.
        ("std_workload", Expect::Returns(0), None),
    ];

    for (name, expect, _) in &expectations {
        let &(ret, errno) = results
            .get(*name)
            .unwrap_or_else(|| panic!("probe {name} did not report; output:\n{}", run.stdout));
        let ok = match *expect {
            Expect::Returns(value) => ret == value,
            Expect::Succeeds => ret >= 0,
            Expect::Fails(expected) => ret == -1 && errno == expected,
        };
        assert!(
            ok,
            "probe {name}: got ret {ret} errno {errno}, expected {expect:?}"
        );
    }
    assert_eq!(
        results.len(),
        expectations.len(),
        "unexpected probes: {results:?}"
    );

    // The supervisor saw exactly the refused calls, in the order the child made them.
    let expected_names: Vec<&str> = expectations.iter().filter_map(|(_, _, v)| *v).collect();
    let seen_names: Vec<&str> = run.violations.iter().map(|v| v.syscall_name).collect();
    assert_eq!(seen_names, expected_names);
    assert!(
        run.violations.iter().all(|v| v.pid == run.pid),
        "{:?}",
        run.violations
    );

    // Raw numbers and arguments arrive untouched.
    let by_name = |name: &str| -> Vec<&Violation> {
        run.violations
            .iter()
            .filter(|v| v.syscall_name == name)
            .collect()
    };
    let ioctls = by_name("ioctl");
    let commands: Vec<u64> = ioctls.iter().map(|v| v.args[1]).collect();
    assert_eq!(
        commands,
        vec![TIOCSTI, 0xdead_beef_0000_0000 | TIOCSTI, TIOCLINUX]
    );
    let clone = by_name("clone");
    assert_eq!(
        clone[0].args[0],
        (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64
    );
    assert_eq!(clone[0].syscall_nr, libc::SYS_clone);
    let x32 = by_name("x32_abi");
    assert_eq!(x32[0].syscall_nr, X32_SYSCALL_BIT | libc::SYS_getpid);
    let i386 = by_name("i386_abi");
    assert_eq!(i386[0].syscall_nr, i64::from(I386_GETPID));
}

fn supervisor_returns_ok_when_a_clean_child_exits() {
    let run = run_confined_child(MODE_QUIET);
    assert!(run.status.success(), "child failed: {:?}", run.status);
    assert_eq!(run.stdout.trim(), "std_workload 0 0");
    assert_eq!(run.violations, Vec::<Violation>::new());
}

struct WallClockRun {
    stdout: String,
    violations: Vec<Violation>,
    clock: WallClock,
    trace: CageTrace,
}

/// One DockLock-style run: the child is our tracee (PTRACE_TRACEME before exec, so before its
/// filter), follow_cage hides its vDSO at the exec stop and relays its exit, and a supervisor
/// thread answers its notifications with the wall clock.
fn run_wall_clock_child() -> WallClockRun {
    let (parent_end, child_end) = UnixStream::pair().expect("socketpair");
    let mut command = Command::new(std::env::current_exe().expect("current_exe"));
    command
        .env(CHILD_ENV, MODE_WALL_CLOCK)
        .stdin(Stdio::from(OwnedFd::from(child_end)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: the hook runs in the forked child before exec and makes one raw syscall
    // (PTRACE_TRACEME), which is async-signal-safe.
    unsafe { command.pre_exec(|| trace_me().map_err(io::Error::from)) };
    #[expect(
        clippy::zombie_processes,
        reason = "follow_cage reaps the child: it waits for every child of this process"
    )]
    let mut child = command.spawn().expect("spawn the traced child");
    // The command holds our copy of the child's socket end; without it, a child that dies early
    // makes receive_listener fail instead of hang.
    drop(command);
    let pid = i32::try_from(child.id()).expect("pid");

    let supervisor = std::thread::spawn(move || {
        let listener = receive_listener(&parent_end);
        let mut clock = WallClock::new(LOGICAL_TIME_NS);
        let mut violations = Vec::new();
        let result = supervise_with_wall_clock(listener, &mut clock, &mut |v| violations.push(v));
        (result, violations, clock)
    });
    // ptrace requests must come from the thread that forked the child: this one.
    let trace = follow_cage(pid, Attach::TraceMe, None).expect("trace the child");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout pipe")
        .read_to_string(&mut stdout)
        .expect("read the child's output");
    let (result, violations, clock) = supervisor.join().expect("supervisor thread");
    result.expect("supervise returns Ok when no task uses the filter");
    WallClockRun {
        stdout,
        violations,
        clock,
        trace,
    }
}

fn wall_clock_reads_are_logical_and_deterministic() {
    let first = run_wall_clock_child();
    assert!(
        first.trace.root_status.success(),
        "child failed: {:?}\n{}",
        first.trace.root_status,
        first.stdout
    );
    assert_eq!(
        (
            first.trace.execs_count,
            first.trace.vdso_hidden_count,
            first.trace.hide_failures_count
        ),
        (1, 1, 0),
        "{:?}",
        first.trace
    );
    // Read k returns LOGICAL_TIME_NS + k * 1 ms, whatever the host clock says; TAI is 37 s
    // ahead; the monotonic clock is native; the unserved clocks, an absolute sleep on the
    // wall clock and mount are refused and reported.
    let expected = [
        "getauxval_sysinfo_ehdr 0",
        "realtime 0 0 1700000000 0",
        "realtime 0 0 1700000000 1000000",
        "realtime_coarse 0 0 1700000000 2000000",
        "tai 0 0 1700000037 3000000",
        "gettimeofday 0 0 1700000000 4000",
        "time 1700000000",
        "systemtime 1700000000006000000",
        "monotonic 0 0 nonzero",
        "boottime_alarm -1 1",
        "abs_sleep_realtime 1",
        "rel_sleep_realtime 0",
        "abs_sleep_monotonic 0",
        "mount -1 1",
    ];
    assert_eq!(first.stdout.lines().collect::<Vec<_>>(), expected);
    assert_eq!(first.clock.reads_count(), 7);
    assert_eq!(
        first.clock.failures_count(),
        0,
        "{:?}",
        first.clock.first_failure()
    );
    // The arguments that say what was refused (pointers differ between runs).
    let summary = |run: &WallClockRun| -> Vec<(&'static str, u64, u64)> {
        run.violations
            .iter()
            .map(|v| match v.syscall_name {
                "clock_gettime" => (v.syscall_name, v.args[0], 0),
                "clock_nanosleep" => (v.syscall_name, v.args[0], v.args[1]),
                _ => (v.syscall_name, 0, 0),
            })
            .collect()
    };
    assert_eq!(
        summary(&first),
        vec![
            ("clock_gettime", libc::CLOCK_BOOTTIME_ALARM as u64, 0),
            // CLOCK_REALTIME with TIMER_ABSTIME.
            ("clock_nanosleep", 0, libc::TIMER_ABSTIME as u64),
            ("mount", 0, 0),
        ]
    );

    // A second run sees exactly the same times and refusals.
    let second = run_wall_clock_child();
    assert_eq!(second.stdout, first.stdout);
    assert_eq!(summary(&second), summary(&first));
    assert_eq!(second.clock, first.clock);
}

// ------------------------------------------------------------------------------------------------
// Child side (runs confined; every failure panics, which the parent sees as a failed exit)

fn child(probes: bool) {
    // The build-time program DockLock installs; the wall-clock child below compiles at run time,
    // so both paths meet the kernel.
    let compiled = CompiledSeccomp::builtin().expect("builtin policy compiled at build time");
    let listener = compiled.install().expect("install the filters");
    send_listener(&listener);
    // Keep no copy of the listener: a confined process must not be able to answer itself.
    drop(listener);

    if probes {
        run_probes();
    }
    std_workload();
    println!("std_workload 0 0");
}

fn send_listener(listener: &OwnedFd) {
    let stdin = std::io::stdin();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [listener.as_fd()];
    assert!(
        control.push(SendAncillaryMessage::ScmRights(&fds)),
        "cmsg space"
    );
    sendmsg(
        stdin.as_fd(),
        &[IoSlice::new(b"L")],
        &mut control,
        SendFlags::empty(),
    )
    .expect("send the listener to the parent");
}

/// Prints `name ret errno` for a raw syscall result.
fn report(name: &str, ret: libc::c_long) {
    let errno = if ret == -1 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    println!("{name} {ret} {errno}");
}

fn run_probes() {
    // SAFETY: getpid takes no arguments.
    report("getpid", unsafe { libc::syscall(libc::SYS_getpid) });

    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two ints into `fds`.
    let rc = unsafe { libc::syscall(libc::SYS_pipe2, fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2");
    let [read_fd, write_fd] = fds;
    // SAFETY: writes 5 bytes from a static buffer.
    let written = unsafe { libc::syscall(libc::SYS_write, write_fd, c"hello".as_ptr(), 5) };
    assert_eq!(written, 5, "write to pipe");
    let mut queued: libc::c_int = -1;
    // SAFETY: FIONREAD stores one int into `queued`.
    report("ioctl_fionread", unsafe {
        libc::syscall(libc::SYS_ioctl, read_fd, libc::FIONREAD, &raw mut queued)
    });
    assert_eq!(queued, 5, "FIONREAD");
    let mut buffer = [0_u8; 8];
    // SAFETY: reads at most 8 bytes into `buffer`.
    report("pipe_write_read", unsafe {
        libc::syscall(libc::SYS_read, read_fd, buffer.as_mut_ptr(), buffer.len())
    });

    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime stores one timespec into `now`.
    report("clock_gettime", unsafe {
        libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, &raw mut now)
    });
    // SAFETY: integer-only prctl.
    report("no_new_privs", unsafe {
        libc::syscall(libc::SYS_prctl, libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
    });
    // SAFETY: integer-only personality query.
    report("personality_query", unsafe {
        libc::syscall(libc::SYS_personality, 0xffff_ffff_u64)
    });

    // Each of these would do something observable if the filter let it through (as root: a
    // failing mount, a keyring id, a new ring, a traced process...), so EPERM here is the filter.
    let missing: &CStr = c"/nonexistent-metanode-seccomp";
    // SAFETY: valid C strings; the mount point does not exist.
    report("mount", unsafe {
        libc::syscall(
            libc::SYS_mount,
            c"none".as_ptr(),
            missing.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null::<u8>(),
        )
    });
    // SAFETY: valid C string.
    report("umount2", unsafe {
        libc::syscall(libc::SYS_umount2, missing.as_ptr(), 0)
    });
    let mut params = [0_u8; 120];
    // SAFETY: io_uring_params is 120 bytes; `params` is zeroed and writable.
    report("io_uring_setup", unsafe {
        libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr())
    });
    // SAFETY: BPF_MAP_CREATE with a null attribute pointer and size 0.
    report("bpf", unsafe {
        libc::syscall(libc::SYS_bpf, 0, std::ptr::null::<u8>(), 0)
    });
    // SAFETY: null attr; the kernel would answer EFAULT.
    report("perf_event_open", unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            std::ptr::null::<u8>(),
            0,
            -1,
            -1,
            0,
        )
    });
    // SAFETY: KEYCTL_GET_KEYRING_ID(KEY_SPEC_SESSION_KEYRING, create=0): integers only.
    report("keyctl", unsafe {
        libc::syscall(libc::SYS_keyctl, 0, -3, 0)
    });
    // SAFETY: PTRACE_TRACEME: integers only.
    report("ptrace", unsafe {
        libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0)
    });
    // SAFETY: zero-length iovecs; nothing is read.
    report("process_vm_readv", unsafe {
        libc::syscall(
            libc::SYS_process_vm_readv,
            libc::getppid(),
            std::ptr::null::<u8>(),
            0,
            std::ptr::null::<u8>(),
            0,
            0,
        )
    });
    // SAFETY: integer-only.
    report("unshare", unsafe {
        libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER)
    });
    // SAFETY: integer-only.
    report("setns", unsafe { libc::syscall(libc::SYS_setns, -1, 0) });
    // SAFETY: integer-only.
    report("userfaultfd", unsafe {
        libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC)
    });
    // SAFETY: null handle; the kernel would answer EBADF/EFAULT.
    report("open_by_handle_at", unsafe {
        libc::syscall(libc::SYS_open_by_handle_at, -1, std::ptr::null::<u8>(), 0)
    });
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: an invalid clock id (-1) with a valid timespec: EINVAL if it were allowed.
    report("clock_settime", unsafe {
        libc::syscall(libc::SYS_clock_settime, -1, &raw const zero)
    });
    // SAFETY: both pointers null: a no-op if it were allowed.
    report("settimeofday", unsafe {
        libc::syscall(
            libc::SYS_settimeofday,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
        )
    });

    let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long;
    // SAFETY: fork-like clone (no CLONE_VM, null stack: the child would continue on a copy of
    // this stack); if the filter failed, the child exits at once below.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    if rc == 0 {
        // SAFETY: _exit is async-signal-safe and ends the accidental child immediately.
        unsafe { libc::_exit(0) };
    }
    report("clone_newuser", rc);
    // SAFETY: null args with size 0: EINVAL if it were allowed.
    report("clone3", unsafe {
        libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0)
    });
    let mut random = [0_u8; 16];
    // SAFETY: writes at most 16 bytes into `random`.
    report("getrandom", unsafe {
        libc::syscall(libc::SYS_getrandom, random.as_mut_ptr(), random.len(), 0)
    });

    let injected = b'x';
    // On a pipe the kernel would answer these three with ENOTTY if the filter let them through.
    // SAFETY: one readable byte behind the pointer.
    report("ioctl_tiocsti", unsafe {
        libc::syscall(libc::SYS_ioctl, read_fd, TIOCSTI, &raw const injected)
    });
    // SAFETY: as above.
    report("ioctl_tiocsti_high_bits", unsafe {
        libc::syscall(
            libc::SYS_ioctl,
            read_fd,
            0xdead_beef_0000_0000 | TIOCSTI,
            &raw const injected,
        )
    });
    // SAFETY: as above.
    report("ioctl_tioclinux", unsafe {
        libc::syscall(libc::SYS_ioctl, read_fd, TIOCLINUX, &raw const injected)
    });
    // SAFETY: integer-only.
    report("socket_vsock", unsafe {
        libc::syscall(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0)
    });
    // SAFETY: integer-only (PR_TSC_ENABLE = 1).
    report("prctl_set_tsc", unsafe {
        libc::syscall(libc::SYS_prctl, libc::PR_SET_TSC, 1, 0, 0, 0)
    });
    // SAFETY: integer-only.
    report("personality_no_aslr", unsafe {
        libc::syscall(libc::SYS_personality, libc::ADDR_NO_RANDOMIZE)
    });
    // SAFETY: integer-only; an x32 number (the kernel here has no x32 ABI and would say ENOSYS).
    report("x32_getpid", unsafe {
        libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid)
    });
    report("i386_getpid", int80(I386_GETPID));

    // SAFETY: closing the two descriptors pipe2 returned.
    unsafe {
        libc::close(read_fd);
        libc::close(write_fd);
    }
}

/// An i386 syscall through `int 0x80`; returns -1 with errno set like libc does.
fn int80(nr: i32) -> libc::c_long {
    let ret: i32;
    // SAFETY: `int 0x80` enters the kernel's i386 entry with eax = nr and no pointer arguments;
    // it returns in eax, and r8-r11 are declared clobbered for kernels that did not preserve them.
    unsafe {
        std::arch::asm!(
            "int 0x80",
            inlateout("eax") nr => ret,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nostack)
        );
    }
    if (-4095..0).contains(&ret) {
        // SAFETY: errno is thread-local and writable.
        unsafe { *libc::__errno_location() = -ret };
        -1
    } else {
        libc::c_long::from(ret)
    }
}

/// What an ordinary Rust program does; any call outside the allowlist would show up as a
/// violation in the parent (which expects none from this part).
fn std_workload() {
    // Threads: glibc tries clone3 (ENOSYS), falls back to clone with thread flags.
    let shared = std::sync::Arc::new(std::sync::Mutex::new(0_u64));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let shared = std::sync::Arc::clone(&shared);
            std::thread::spawn(move || {
                // RandomState's keys come from getrandom (ENOSYS) → /dev/urandom in a new thread.
                let mut map = std::collections::HashMap::new();
                map.insert(i, i * 2);
                *shared.lock().expect("lock") += map[&i];
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread");
    }
    assert_eq!(*shared.lock().expect("lock"), 12);

    // Files.
    let path = std::env::temp_dir().join(format!("metanode-seccomp-{}", std::process::id()));
    std::fs::write(&path, b"data").expect("write temp file");
    assert_eq!(std::fs::read(&path).expect("read temp file"), b"data");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 4);
    std::fs::remove_file(&path).expect("remove temp file");

    // Loopback TCP and a unix socket pair.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().expect("local addr");
    let mut client = TcpStream::connect(address).expect("connect loopback");
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(b"ping").expect("send");
    let mut got = [0_u8; 4];
    server.read_exact(&mut got).expect("receive");
    assert_eq!(&got, b"ping");
    let (mut a, mut b) = UnixStream::pair().expect("unix pair");
    a.write_all(b"pong").expect("unix send");
    b.read_exact(&mut got).expect("unix receive");
    assert_eq!(&got, b"pong");

    // Large allocations (mmap) and clocks.
    let big = vec![1_u8; 64 << 20];
    assert_eq!(big.iter().map(|&b| u64::from(b)).sum::<u64>(), 64 << 20);
    let start = std::time::Instant::now();
    assert!(std::time::SystemTime::now() > std::time::UNIX_EPOCH);
    assert!(
        std::time::Instant::now() >= start,
        "monotonic clock went backwards"
    );

    // Process creation and exec: the grandchild inherits the filter and must run to the end.
    let exe = std::env::current_exe().expect("current_exe");
    let status = Command::new(exe)
        .env(CHILD_ENV, MODE_EXEC)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("spawn grandchild");
    assert_eq!(
        status.code(),
        Some(EXEC_EXIT_CODE),
        "grandchild under the filter"
    );
}

/// The wall-clock child: installs the policy, hands over the listener, then reads every clock
/// through libc (which, with the vDSO hidden, makes the syscalls) and prints what it got.
fn wall_clock_child() {
    let compiled = SeccompPolicy::builtin()
        .expect("builtin policy parses")
        .compile()
        .expect("builtin policy compiles");
    let listener = compiled.install().expect("install the filters");
    send_listener(&listener);
    drop(listener);

    // SAFETY: getauxval only reads this process's auxv.
    let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    println!("getauxval_sysinfo_ehdr {vdso}");
    let read = |clock: libc::clockid_t| -> (i32, i32, libc::timespec) {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime stores one timespec into `now`.
        let rc = unsafe { libc::clock_gettime(clock, &raw mut now) };
        (rc, errno_if(rc != 0), now)
    };
    for (name, clock) in [
        ("realtime", libc::CLOCK_REALTIME),
        ("realtime", libc::CLOCK_REALTIME),
        ("realtime_coarse", libc::CLOCK_REALTIME_COARSE),
        ("tai", libc::CLOCK_TAI),
    ] {
        let (rc, errno, now) = read(clock);
        println!("{name} {rc} {errno} {} {}", now.tv_sec, now.tv_nsec);
    }
    let mut timeval = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: gettimeofday stores one timeval; a null timezone is allowed.
    let rc = unsafe { libc::gettimeofday(&raw mut timeval, std::ptr::null_mut()) };
    println!(
        "gettimeofday {rc} {} {} {}",
        errno_if(rc != 0),
        timeval.tv_sec,
        timeval.tv_usec
    );
    // SAFETY: a null pointer asks only for the return value.
    println!("time {}", unsafe { libc::time(std::ptr::null_mut()) });
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch");
    println!("systemtime {}", since_epoch.as_nanos());
    let (rc, errno, now) = read(libc::CLOCK_MONOTONIC);
    let nonzero = if (now.tv_sec, now.tv_nsec) == (0, 0) {
        "zero"
    } else {
        "nonzero"
    };
    println!("monotonic {rc} {errno} {nonzero}");
    let (rc, errno, _) = read(libc::CLOCK_BOOTTIME_ALARM);
    println!("boottime_alarm {rc} {errno}");
    let past = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let short = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000,
    };
    // clock_nanosleep returns the error number itself. SAFETY: valid timespecs, null remainder.
    let rc = unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_REALTIME,
            libc::TIMER_ABSTIME,
            &raw const past,
            std::ptr::null_mut(),
        )
    };
    println!("abs_sleep_realtime {rc}");
    // SAFETY: as above.
    let rc = unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_REALTIME,
            0,
            &raw const short,
            std::ptr::null_mut(),
        )
    };
    println!("rel_sleep_realtime {rc}");
    // SAFETY: as above; a deadline in the past returns at once.
    let rc = unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &raw const past,
            std::ptr::null_mut(),
        )
    };
    println!("abs_sleep_monotonic {rc}");
    // SAFETY: valid C strings; the mount point does not exist.
    let rc = unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/nonexistent-metanode-seccomp".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    println!("mount {rc} {}", errno_if(rc != 0));
}

fn errno_if(failed: bool) -> i32 {
    if failed {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    }
}

/// A freshly exec'd, dynamically linked Rust program under the inherited filter: loader, std
/// start-up and a thread.
fn grandchild() -> i32 {
    std::thread::spawn(|| EXEC_EXIT_CODE).join().unwrap_or(1)
}
