//! Runs the built probe on the HOST, uncaged. Where nothing confines it, a probe must report "escaped": that
//! is the proof it can see an escape at all, so "blocked" inside the cage means something. Where the host
//! result is known to be a denial (running as nobody, ETXTBSY, ENOENT) the probe must say "blocked" with the
//! errno. fork-bomb, memory-bomb and disk-fill are never run here: uncaged they would hit the host.
//!
//! Root-only checks (CI runs as root) print a notice and return when not root.

use std::io::Write as _;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Command, Stdio};

const PROBE: &str = env!("CARGO_BIN_EXE_docklock-probe");
const NOBODY: u32 = 65534;

#[derive(Debug)]
struct Line {
    outcome: String,
    detail: String,
}

fn probe(args: &[&str]) -> Command {
    let mut command = Command::new(PROBE);
    // fd 0 is never a terminal, so tiocsti cannot type into whoever runs the tests.
    command.args(args).stdin(Stdio::null());
    command
}

/// Runs the probe, checks the one-line JSON contract and the exit code that goes with the outcome.
fn run(mut command: Command, name: &str) -> Line {
    let output = command.output().expect("spawn docklock-probe");
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.ends_with('\n') && stdout.lines().count() == 1,
        "not one line: {stdout:?} (stderr {stderr})"
    );
    let value: serde_json::Value =
        serde_json::from_str(stdout.trim_end()).expect("the line is JSON");
    let object = value.as_object().expect("a JSON object");
    assert_eq!(object.len(), 3, "{stdout}");
    assert_eq!(object["probe"], name);
    let outcome = object["outcome"]
        .as_str()
        .expect("outcome is a string")
        .to_string();
    let detail = object["detail"]
        .as_str()
        .expect("detail is a string")
        .to_string();
    let expected_code = match outcome.as_str() {
        "blocked" | "ok" => 0,
        "escaped" => 1,
        "error" => 2,
        other => panic!("unknown outcome {other}"),
    };
    assert_eq!(
        output.status.code(),
        Some(expected_code),
        "{stdout} (stderr {stderr})"
    );
    Line { outcome, detail }
}

fn run_probe(args: &[&str]) -> Line {
    run(probe(args), args[0])
}

fn as_nobody(args: &[&str]) -> Line {
    let mut command = probe(args);
    command.uid(NOBODY).gid(NOBODY);
    run(command, args[0])
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: this check needs root (CI runs the escape suite as root)");
    }
    root
}

fn assert_escaped(line: &Line, needle: &str) {
    assert_eq!(line.outcome, "escaped", "{}", line.detail);
    assert!(
        line.detail.contains(needle),
        "{needle:?} not in {}",
        line.detail
    );
}

fn assert_blocked(line: &Line, needle: &str) {
    assert_eq!(line.outcome, "blocked", "{}", line.detail);
    assert!(
        line.detail.contains(needle),
        "{needle:?} not in {}",
        line.detail
    );
    assert!(!line.detail.contains("SUCCEEDED"), "{}", line.detail);
}

/// Marks every fd above 2 close-on-exec in the child, so only what a test leaks on purpose reaches the probe
/// (the harness itself may have inherited descriptors from whatever started it).
fn close_inherited_fds(command: &mut Command) {
    // SAFETY: close_range is async-signal-safe; CLOSE_RANGE_CLOEXEC only sets flags, so the std exec-error pipe
    // keeps working until exec.
    unsafe {
        command.pre_exec(|| {
            if libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn list_help_noop_and_invocation_errors() {
    let output = Command::new(PROBE).arg("list").output().unwrap();
    assert!(output.status.success());
    let list = String::from_utf8(output.stdout).unwrap();
    let names: Vec<&str> = list.lines().collect();
    for expected in [
        "read-host-file",
        "write-outside-rootfs",
        "write-proc-sys",
        "mount",
        "unshare-setns",
        "ptrace-host",
        "signal-host",
        "raw-socket",
        "egress",
        "io-uring",
        "bpf",
        "perf-event-open",
        "keyctl",
        "tiocsti",
        "open-by-handle-at",
        "x32",
        "fork-bomb",
        "memory-bomb",
        "disk-fill",
        "leaked-fd",
        "overwrite-self-exe",
        "chroot-escape",
        "random",
        "clock",
        "env",
        "args",
        "write-output",
        "noop",
    ] {
        assert!(names.contains(&expected), "{expected} not listed");
    }
    assert_eq!(names.len(), 28);

    let output = Command::new(PROBE).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for name in &names {
        assert!(
            help.contains(&format!("docklock-probe {name}")),
            "{name} not in --help"
        );
    }

    let output = Command::new(PROBE)
        .args(["noop", "ignored"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(output.stdout.is_empty() && output.stderr.is_empty());

    let line = run_probe(&["no-such-probe"]);
    assert_eq!(line.outcome, "error");
    assert!(
        line.detail.contains("unknown probe \"no-such-probe\""),
        "{}",
        line.detail
    );
    let line = run_probe(&["fork-bomb", "--maks", "3"]);
    assert_eq!(line.outcome, "error");
    assert_eq!(
        line.detail,
        "bad arguments: probe fork-bomb does not take flag --maks"
    );
    let line = run_probe(&["egress", "--addr", "localhost"]);
    assert_eq!(
        line.detail,
        "bad arguments: flag --addr: \"localhost\" is not an IP:PORT socket address"
    );
}

#[test]
fn write_outside_rootfs_escapes_as_root_and_is_blocked_for_nobody() {
    if is_root() {
        let line = run_probe(&["write-outside-rootfs"]);
        assert_escaped(&line, "create /etc/.docklock-probe-");
        // Each file it managed to create was removed again.
        assert_eq!(
            line.detail.matches("created; removed again").count(),
            9,
            "{}",
            line.detail
        );
        let line = as_nobody(&["write-outside-rootfs"]);
        assert_blocked(&line, "create /etc/.docklock-probe-");
        assert!(line.detail.contains("EACCES"), "{}", line.detail);
    }
}

#[test]
fn x32_is_enosys_or_reachable() {
    let line = run_probe(&["x32"]);
    match line.outcome.as_str() {
        "blocked" => assert!(
            line.detail
                .contains("syscall(0x40000000 | SYS_getpid): ENOSYS"),
            "{}",
            line.detail
        ),
        "escaped" => assert!(
            line.detail.contains("the x32 ABI is reachable"),
            "{}",
            line.detail
        ),
        other => panic!("x32 outcome {other}: {}", line.detail),
    }
}

#[test]
fn io_uring_follows_the_sysctl() {
    if !is_root() {
        return;
    }
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .unwrap_or_else(|_| "0".into());
    let line = run_probe(&["io-uring"]);
    if disabled.trim() == "2" {
        assert_blocked(&line, "io_uring_setup(8): EPERM");
    } else {
        assert_escaped(&line, "io_uring_setup(8): SUCCEEDED (ring fd");
    }
}

#[test]
fn privileged_kernel_interfaces_escape_as_root_and_are_blocked_for_nobody() {
    if !is_root() {
        return;
    }
    assert_escaped(
        &run_probe(&["bpf"]),
        "bpf(BPF_PROG_LOAD, socket filter): SUCCEEDED",
    );
    assert_escaped(
        &run_probe(&["raw-socket"]),
        "socket(AF_PACKET, SOCK_RAW, ETH_P_ALL): SUCCEEDED",
    );
    assert_escaped(
        &run_probe(&["open-by-handle-at"]),
        "open_by_handle_at(forged inode 2): SUCCEEDED",
    );
    assert_escaped(
        &run_probe(&["keyctl"]),
        "add_key(\"user\", process keyring): SUCCEEDED",
    );
    assert_escaped(&run_probe(&["perf-event-open"]), "SUCCEEDED (fd");
    let line = run_probe(&["tiocsti"]);
    assert_escaped(&line, "syscall ioctl(own pty, TIOCSTI | 1<<32): SUCCEEDED");
    assert!(
        line.detail.contains("ioctl(fd 0, TIOCSTI): ENOTTY"),
        "{}",
        line.detail
    );

    assert_blocked(&as_nobody(&["bpf"]), "bpf(BPF_MAP_CREATE, array): EPERM");
    assert_blocked(
        &as_nobody(&["raw-socket"]),
        "socket(AF_INET, SOCK_RAW, IPPROTO_ICMP): EPERM",
    );
    assert_blocked(
        &as_nobody(&["open-by-handle-at"]),
        "open_by_handle_at(forged inode 2): EPERM",
    );
    assert_blocked(&as_nobody(&["tiocsti"]), "ioctl(own pty, TIOCSTI): EPERM");
}

#[test]
fn mount_escapes_in_a_private_namespace_and_leaves_the_host_alone() {
    if !is_root() {
        return;
    }
    let mut command = probe(&["mount"]);
    // SAFETY: unshare and mount are async-signal-safe and change only the child about to exec.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let line = run(command, "mount");
    assert_escaped(&line, "mount tmpfs on /tmp/docklock-probe-mount-");
    assert!(
        line.detail
            .contains("umount2(/proc, MNT_DETACH): SUCCEEDED"),
        "{}",
        line.detail
    );
    assert!(
        line.detail
            .contains("pivot_root onto /tmp/docklock-probe-mount-"),
        "{}",
        line.detail
    );
    assert!(
        std::path::Path::new("/proc/self/status").exists(),
        "the host's /proc must still be there"
    );

    let line = as_nobody(&["mount"]);
    assert_blocked(&line, "mount proc on /tmp/docklock-probe-mount-");
    assert!(
        line.detail.contains("fsopen(\"tmpfs\"): EPERM"),
        "{}",
        line.detail
    );
    assert!(
        line.detail.contains("umount2(/proc, MNT_DETACH): skipped"),
        "{}",
        line.detail
    );
}

#[test]
fn unshare_setns_escapes_as_root() {
    if is_root() {
        let line = run_probe(&["unshare-setns"]);
        assert_escaped(&line, "unshare(CLONE_NEWNS): SUCCEEDED");
        assert!(
            line.detail.contains("clone(CLONE_NEWUSER): SUCCEEDED"),
            "{}",
            line.detail
        );
        // Joining the user namespace one is already in is EINVAL for everybody.
        assert!(
            line.detail.contains("setns(/proc/self/ns/user): EINVAL"),
            "{}",
            line.detail
        );
        let line = as_nobody(&["unshare-setns"]);
        assert!(
            line.detail.contains("unshare(CLONE_NEWNS): EPERM"),
            "{}",
            line.detail
        );
    }
}

#[test]
fn ptrace_and_signal_reach_a_host_process_when_uncaged() {
    if !is_root() {
        return;
    }
    let mut sleeper = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let pid = sleeper.id().to_string();

    let line = run_probe(&["ptrace-host", "--host-pid", &pid]);
    assert_escaped(
        &line,
        &format!("PTRACE_ATTACH pid {pid} (--host-pid): SUCCEEDED (attached; detached again)"),
    );
    assert!(
        line.detail.contains("pid 1 and the visible pids skipped"),
        "{}",
        line.detail
    );
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "the traced process was resumed, not killed"
    );

    let line = as_nobody(&["signal-host", "--host-pid", &pid]);
    assert_blocked(&line, &format!("kill(pid {pid}, SIGKILL): EPERM"));
    assert!(sleeper.try_wait().unwrap().is_none());

    let line = run_probe(&["signal-host", "--host-pid", &pid]);
    assert_escaped(
        &line,
        &format!("kill(pid {pid}, SIGKILL): SUCCEEDED (signal delivered)"),
    );
    assert_eq!(sleeper.wait().unwrap().signal(), Some(libc::SIGKILL));
}

#[test]
fn chroot_escape_reaches_the_host_path_as_root() {
    if !is_root() {
        return;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    let host_path = file.path().to_str().unwrap();
    let line = run_probe(&["chroot-escape", "--host-path", host_path]);
    assert_escaped(
        &line,
        &format!("stat {host_path} after the chroot loop: SUCCEEDED"),
    );
    let line = as_nobody(&["chroot-escape", "--host-path", host_path]);
    assert_blocked(&line, "chroot /tmp/docklock-probe-chroot-");
    assert!(line.detail.contains("EPERM"), "{}", line.detail);
}

#[test]
fn read_host_file_escapes_only_when_the_marker_is_read() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(b"host-only marker 7f3a9c\n").unwrap();
    let path = file.path().to_str().unwrap();
    let line = run_probe(&["read-host-file", path, "--marker", "marker 7f3a9c"]);
    assert_escaped(
        &line,
        &format!("read {path}: SUCCEEDED (24 bytes, host marker found)"),
    );
    let line = run_probe(&[
        "read-host-file",
        path,
        "/nonexistent/docklock",
        "--marker",
        "other text",
    ]);
    assert_blocked(&line, &format!("read {path}: 24 bytes, marker absent"));
    assert!(
        line.detail.contains("read /nonexistent/docklock: ENOENT"),
        "{}",
        line.detail
    );
    let line = run_probe(&["read-host-file", path]);
    assert_escaped(&line, "without --marker any read counts");
}

#[test]
fn egress_connects_to_a_host_listener_and_reports_refusal() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let line = run_probe(&["egress", "--addr", &addr]);
    assert_escaped(
        &line,
        &format!("TCP connect to {addr}: SUCCEEDED (connected from 127.0.0.1:"),
    );
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_ok(),
        "the listener saw the probe's connection"
    );
    drop(listener);
    let line = run_probe(&["egress", "--addr", &addr]);
    assert_blocked(&line, &format!("TCP connect to {addr}: ECONNREFUSED"));
}

#[test]
fn leaked_fd_names_an_undeclared_descriptor() {
    let mut command = probe(&["leaked-fd"]);
    close_inherited_fds(&mut command);
    let line = run(command, "leaked-fd");
    assert_blocked(&line, "no fd open besides 0, 1, 2");

    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap().to_string();
    let raw = file.as_file().as_raw_fd();
    for allow in [false, true] {
        let mut command = probe(if allow {
            &["leaked-fd", "--allow", "7"]
        } else {
            &["leaked-fd"]
        });
        close_inherited_fds(&mut command);
        // SAFETY: dup2 and fcntl are async-signal-safe; dup2 gives fd 7 without close-on-exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(raw, 7) < 0 || libc::fcntl(7, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let line = run(command, "leaked-fd");
        if allow {
            assert_blocked(&line, "and --allow [7]");
        } else {
            assert_escaped(
                &line,
                &format!("fd 7: SUCCEEDED (open, undeclared, -> {path})"),
            );
            assert_eq!(
                line.detail.matches("SUCCEEDED").count(),
                1,
                "{}",
                line.detail
            );
        }
    }
}

#[test]
fn overwrite_self_exe_is_refused_by_the_kernel_even_uncaged() {
    // Linux refuses to open a running executable for writing (ETXTBSY); the cage adds a read-only rootfs.
    let line = run_probe(&["overwrite-self-exe"]);
    assert_blocked(&line, "open /proc/self/exe O_WRONLY: ETXTBSY");
    assert!(
        line.detail.contains("via /proc/self/fd/"),
        "{}",
        line.detail
    );
}

#[test]
fn write_proc_sys_escapes_in_a_private_uts_namespace() {
    if !is_root() {
        return;
    }
    let before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let mut command = probe(&["write-proc-sys", "/proc/sys/kernel/hostname"]);
    // SAFETY: unshare is async-signal-safe and changes only the child about to exec.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUTS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let line = run(command, "write-proc-sys");
    assert_escaped(
        &line,
        &format!(
            "write /proc/sys/kernel/hostname: SUCCEEDED (wrote the {} bytes it held)",
            before.len()
        ),
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        before
    );
    let line = as_nobody(&["write-proc-sys", "/proc/sys/kernel/hostname"]);
    assert_blocked(&line, "write /proc/sys/kernel/hostname: EACCES");
}

fn hex_after<'a>(detail: &'a str, key: &str) -> &'a str {
    let start = detail
        .find(key)
        .map(|at| at + key.len())
        .expect("key present");
    detail[start..].split(';').next().unwrap()
}

#[test]
fn random_reports_both_sources_as_hex() {
    let first = run_probe(&["random"]);
    let second = run_probe(&["random"]);
    assert_eq!(first.outcome, "ok");
    for line in [&first, &second] {
        for key in ["getrandom=", "/dev/urandom="] {
            let hex = hex_after(&line.detail, key);
            assert_eq!(hex.len(), 64, "{}", line.detail);
            assert!(
                hex.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}",
                line.detail
            );
        }
    }
    // Uncaged there is no seed: two runs draw different bytes.
    assert_ne!(
        hex_after(&first.detail, "getrandom="),
        hex_after(&second.detail, "getrandom=")
    );
}

#[test]
fn clock_reads_all_clocks_through_vdso_and_syscall() {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let line = run_probe(&["clock"]);
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(line.outcome, "ok");
    let realtime: u64 = hex_after(&line.detail, "realtime vdso=")
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        before <= realtime && realtime <= after,
        "{realtime} not in {before}..={after}"
    );
    for key in ["syscall=", "monotonic vdso=", "boottime vdso="] {
        assert!(line.detail.contains(key), "{key} missing: {}", line.detail);
    }
    assert!(line.detail.contains("rdtsc=allowed ("), "{}", line.detail);
}

/// True when an ELF64 little-endian file has a PT_INTERP program header (a dynamic loader).
fn has_program_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    assert_eq!(elf.get(..5), Some(&b"\x7fELF\x02"[..]), "not an ELF64 file");
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|index| {
        let at = phoff + index * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}

/// Builds the probe the way the escape suite does (static, its own target dir so it never waits on the outer
/// cargo lock) and runs it under PR_SET_TSC(SIGSEGV) — a dynamically linked binary cannot be used for that:
/// Debian's ld.so executes rdtsc in _dl_start and dies before main.
#[test]
fn static_build_runs_under_pr_set_tsc_and_sees_tsc_denied() {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target_dir = workspace.join("target/docklock-probe");
    let status = Command::new(env!("CARGO"))
        .current_dir(&workspace)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--release",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-p",
            "metanode-docklock-probe",
        ])
        .status()
        .expect("run cargo");
    assert!(status.success(), "static build failed");
    let binary = target_dir.join("x86_64-unknown-linux-gnu/release/docklock-probe");
    let elf = std::fs::read(&binary).unwrap();
    assert!(
        !has_program_interpreter(&elf),
        "the static build asks for a dynamic loader"
    );

    let mut command = Command::new(&binary);
    command.arg("clock").stdin(Stdio::null());
    // SAFETY: prctl is async-signal-safe and changes only the child about to exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_TSC, libc::PR_TSC_SIGSEGV, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let line = run(command, "clock");
    assert_eq!(line.outcome, "ok");
    assert!(
        line.detail
            .ends_with("rdtsc=SIGSEGV (denied by PR_SET_TSC)"),
        "{}",
        line.detail
    );
    let clocksource =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default();
    if clocksource.trim() == "tsc" {
        // The vDSO reads the TSC itself, so under PR_SET_TSC it faults; only the syscall answers.
        assert!(
            line.detail
                .contains("realtime vdso=child killed by SIGSEGV syscall="),
            "{}",
            line.detail
        );
    }
    let syscall_secs = hex_after(&line.detail, "monotonic vdso=");
    assert!(syscall_secs.contains(" syscall="), "{}", line.detail);

    // egress must not read the clock either (std's connect_timeout does, through the vDSO).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut command = Command::new(&binary);
    command
        .args(["egress", "--addr", &addr])
        .stdin(Stdio::null());
    // SAFETY: as above.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_TSC, libc::PR_TSC_SIGSEGV, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    assert_escaped(
        &run(command, "egress"),
        &format!("TCP connect to {addr}: SUCCEEDED"),
    );
}

#[test]
fn env_and_args_are_reported_exactly() {
    let mut command = probe(&["env"]);
    command
        .env_clear()
        .env("B", "two words")
        .env("A", "x=\"y\"");
    let line = run(command, "env");
    let vars: Vec<String> = serde_json::from_str(&line.detail).unwrap();
    let mut sorted = vars.clone();
    sorted.sort();
    assert_eq!(sorted, ["A=x=\"y\"", "B=two words"]);

    let line = run_probe(&["args", "one", "two words", "--not-a-flag"]);
    let argv: Vec<String> = serde_json::from_str(&line.detail).unwrap();
    assert_eq!(argv, [PROBE, "args", "one", "two words", "--not-a-flag"]);
}

#[test]
fn write_output_writes_deterministic_files() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_str().unwrap();
    let line = run_probe(&["write-output", "--count", "3", "--dir", dir_path]);
    let file_line = |index: u64| format!("docklock-probe write-output file {index} of 3\n");
    let expected = [file_line(0), file_line(1).repeat(2), file_line(2).repeat(3)];
    let total: usize = expected.iter().map(String::len).sum();
    assert_eq!(
        line.detail,
        format!("wrote 3 files ({total} bytes) to {dir_path}")
    );
    for (index, content) in expected.iter().enumerate() {
        assert_eq!(
            &std::fs::read_to_string(dir.path().join(format!("out-{index:05}.txt"))).unwrap(),
            content
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["out-00000.txt", "out-00001.txt", "out-00002.txt"]);
}
