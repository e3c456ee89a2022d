//! The vDSO hiding and the cage tracer against the real kernel.
//!
//! The runner (this `main`, single-threaded: ptrace requests must come from the thread that
//! forked the tracee, and `follow_cage` waits for any child) re-executes this binary with
//! `METANODE_VDSO_TEST_CHILD=<mode>` as a traced or untraced child and checks what it prints.
//! Runs unprivileged (a parent may trace its own children).
//!
//! `cargo test -p metanode-confine --test vdso [-- NAME_SUBSTRING]`

use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};

use metanode_confine::{
    Attach, VdsoHidden, VirtualTsc, deny_tsc, follow_cage, hide_vdso_once, seize_for_cage, trace_me,
};

const CHILD_ENV: &str = "METANODE_VDSO_TEST_CHILD";
/// The errno the probe's own seccomp filter gives clock_gettime, chosen to be unmistakable.
const PROBE_ERRNO: i32 = libc::EOWNERDEAD;
/// Exit code of the spawner root, relayed by follow_cage.
const SPAWNER_EXIT_CODE: i32 = 3;
/// 2020-01-01T00:00:00Z: any real clock reads later than this.
const YEAR_2020_S: i64 = 1_577_836_800;

type Check = Result<(), String>;

/// A named runner case.
type NamedCase = (&'static str, fn() -> Check);

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
        (
            "hide_once_removes_the_vdso_and_clock_reads_become_syscalls",
            hide_once_clock_probe,
        ),
        (
            "dynamic_bin_date_runs_with_the_vdso_hidden",
            bin_date_hidden,
        ),
        (
            "follow_cage_hides_the_vdso_of_every_exec",
            follow_cage_every_exec,
        ),
        (
            "follow_cage_seized_keeps_job_control_and_delivers_signals",
            follow_cage_seized_job_control,
        ),
        (
            "follow_cage_answers_denied_rdtsc_from_the_virtual_counter",
            follow_cage_virtual_tsc,
        ),
        (
            "follow_cage_delivers_every_other_sigsegv",
            follow_cage_other_sigsegv,
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
            Ok(()) => println!("test {name} ... ok"),
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
        "\nvdso tests: {} passed, {} failed",
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

fn exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"))
}

fn child(mode: &str) -> Command {
    let mut command = Command::new(exe());
    command.env(CHILD_ENV, mode);
    command
}

/// Makes the command's child a tracee of this thread before it execs.
fn traced(command: &mut Command) -> &mut Command {
    // SAFETY: the hook runs in the forked child before exec and only makes one raw syscall
    // (PTRACE_TRACEME), which is async-signal-safe.
    unsafe { command.pre_exec(|| trace_me().map_err(io::Error::from)) }
}

fn spawn_piped(command: &mut Command, what: &str) -> Result<Child, String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawning {what}: {e}"))
}

fn read_stdout(child: &mut Child) -> Result<String, String> {
    let mut text = String::new();
    child
        .stdout
        .take()
        .ok_or("no stdout pipe")?
        .read_to_string(&mut text)
        .map_err(|e| format!("reading the child's stdout: {e}"))?;
    Ok(text)
}

/// The value after `key ` on the first line that starts with it.
fn field<'a>(text: &'a str, key: &str) -> Result<&'a str, String> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
        .ok_or_else(|| format!("no {key:?} line in:\n{text}"))
}

fn number<T: std::str::FromStr>(text: &str, key: &str) -> Result<T, String> {
    let value = field(text, key)?;
    value
        .trim()
        .parse()
        .map_err(|_| format!("{key} is {value:?}, not a number"))
}

fn hide_once_clock_probe() -> Check {
    // Control: untraced, the program sees the vDSO, and the vDSO answers clock_gettime even
    // though the probe's own filter fails the syscall.
    let mut control = spawn_piped(&mut child("clock-probe"), "the control probe")?;
    let status = control.wait().map_err(|e| format!("wait: {e}"))?;
    let text = read_stdout(&mut control)?;
    ensure!(status.success(), "control probe failed: {status:?}\n{text}");
    let vdso_mapping: u64 = number(&text, "vdso_mapping")?;
    ensure!(
        vdso_mapping != 0 && number::<u64>(&text, "sysinfo_ehdr")? == vdso_mapping,
        "control: getauxval(AT_SYSINFO_EHDR) should be the [vdso] mapping:\n{text}"
    );
    ensure!(
        field(&text, "filtered_realtime")? == "0 0",
        "control: the vDSO should answer despite the filter:\n{text}"
    );

    // Traced: the vDSO entry is hidden at the exec stop, so libc falls back to the syscall,
    // which works (real time) until the filter makes it fail with PROBE_ERRNO.
    let mut command = child("clock-probe");
    let mut probe = spawn_piped(traced(&mut command), "the traced probe")?;
    let pid = i32::try_from(probe.id()).map_err(|e| e.to_string())?;
    let hidden = hide_vdso_once(pid).map_err(|e| format!("hide_vdso_once: {e}"))?;
    let status = probe.wait().map_err(|e| format!("wait: {e}"))?;
    let text = read_stdout(&mut probe)?;
    ensure!(status.success(), "traced probe failed: {status:?}\n{text}");
    let VdsoHidden::Hidden {
        vdso_address,
        entry_address,
    } = hidden
    else {
        return Err(format!("expected the vDSO to be hidden, got {hidden:?}"));
    };
    ensure!(
        vdso_address == number::<u64>(&text, "vdso_mapping")?,
        "hidden vDSO address {vdso_address:#x} is not the probe's [vdso] mapping:\n{text}"
    );
    let stack: Vec<u64> = field(&text, "stack_mapping")?
        .split(' ')
        .filter_map(|v| v.parse().ok())
        .collect();
    ensure!(
        entry_address % 8 == 0 && stack.len() == 2 && (stack[0]..stack[1]).contains(&entry_address),
        "the rewritten auxv entry {entry_address:#x} is not on the probe's stack:\n{text}"
    );
    ensure!(
        number::<u64>(&text, "sysinfo_ehdr")? == 0,
        "getauxval(AT_SYSINFO_EHDR) should be 0 with the vDSO hidden:\n{text}"
    );
    let realtime: Vec<i64> = field(&text, "realtime")?
        .split(' ')
        .filter_map(|v| v.parse().ok())
        .collect();
    ensure!(
        realtime.len() == 3 && realtime[0] == 0 && realtime[1] > YEAR_2020_S && realtime[2] == 0,
        "clock_gettime through the syscall should still work:\n{text}"
    );
    ensure!(
        field(&text, "filtered_realtime")? == format!("-1 {PROBE_ERRNO}"),
        "with the vDSO hidden, libc's clock_gettime must be the (filtered) syscall:\n{text}"
    );
    Ok(())
}

fn bin_date_hidden() -> Check {
    // LD_SHOW_AUXV makes glibc's ld.so print the auxv it finds on the stack.
    let date = |trace: bool| -> Result<String, String> {
        let mut command = Command::new("/bin/date");
        command.arg("+year %Y").env("LD_SHOW_AUXV", "1");
        if trace {
            traced(&mut command);
        }
        let mut child = spawn_piped(&mut command, "/bin/date")?;
        if trace {
            let pid = i32::try_from(child.id()).map_err(|e| e.to_string())?;
            let hidden = hide_vdso_once(pid).map_err(|e| format!("hide_vdso_once: {e}"))?;
            ensure!(
                matches!(hidden, VdsoHidden::Hidden { .. }),
                "date's vDSO was not hidden: {hidden:?}"
            );
        }
        let status = child.wait().map_err(|e| format!("wait: {e}"))?;
        let text = read_stdout(&mut child)?;
        ensure!(status.success(), "/bin/date failed: {status:?}\n{text}");
        let year: i64 = number(&text, "year")?;
        ensure!(year >= 2020, "/bin/date printed year {year}:\n{text}");
        Ok(text)
    };
    let shown = date(false)?;
    ensure!(
        shown.lines().any(|l| l.starts_with("AT_SYSINFO_EHDR:")),
        "control: ld.so should list AT_SYSINFO_EHDR:\n{shown}"
    );
    let hidden = date(true)?;
    ensure!(
        !hidden.contains("AT_SYSINFO_EHDR") && hidden.lines().any(|l| l.starts_with("AT_PAGESZ:")),
        "with the vDSO hidden ld.so must not see AT_SYSINFO_EHDR (but the rest of the auxv):\n{hidden}"
    );
    Ok(())
}

fn follow_cage_every_exec() -> Check {
    // Control: untraced, every process of the tree sees its vDSO.
    let mut control = spawn_piped(&mut child("spawner"), "the control spawner")?;
    let status = control.wait().map_err(|e| format!("wait: {e}"))?;
    let text = read_stdout(&mut control)?;
    ensure!(
        status.code() == Some(SPAWNER_EXIT_CODE),
        "control spawner: {status:?}\n{text}"
    );
    let values = sysinfo_values(&text)?;
    ensure!(
        values.len() == 4 && values.iter().all(|&v| v != 0),
        "control: four processes should each see a vDSO:\n{text}"
    );

    let mut command = child("spawner");
    let mut root = spawn_piped(traced(&mut command), "the traced spawner")?;
    let pid = i32::try_from(root.id()).map_err(|e| e.to_string())?;
    let trace = follow_cage(pid, Attach::TraceMe, None).map_err(|e| format!("follow_cage: {e}"))?;
    let text = read_stdout(&mut root)?;
    ensure!(
        trace.root_status.code() == Some(SPAWNER_EXIT_CODE),
        "root status {:?} should be relayed:\n{text}",
        trace.root_status
    );
    let values = sysinfo_values(&text)?;
    ensure!(
        values == [0, 0, 0, 0],
        "every exec'd process must find no vDSO, got {values:?}:\n{text}"
    );
    // Root, its child, the thread's child, /bin/sh and the child sh runs.
    ensure!(
        trace.execs_count == 5
            && trace.vdso_hidden_count == 5
            && trace.hide_failures_count == 0
            && trace.first_hide_failure.is_none(),
        "unexpected trace {trace:?}"
    );
    Ok(())
}

fn sysinfo_values(text: &str) -> Result<Vec<u64>, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("sysinfo_ehdr "))
        .map(|v| v.parse().map_err(|_| format!("bad value {v:?}")))
        .collect()
}

fn follow_cage_seized_job_control() -> Check {
    // std's spawn returns only once the child has exec'd, too late to seize it before its exec,
    // so this case forks by hand: the child waits for the go-ahead on a pipe, then execs.
    let (go_read, go_write) = io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (mut out_read, out_write) = io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let mut command = child("job-control");
    command.stdin(Stdio::null()).stdout(out_write);
    // SAFETY: this runner is single-threaded, so the forked child may allocate; it only waits
    // for one byte, execs (or exits if that fails).
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        drop(go_write);
        let mut byte = [0_u8; 1];
        let mut go_read = go_read;
        if go_read.read_exact(&mut byte).is_ok() {
            let error = command.exec();
            eprintln!("exec: {error}");
        }
        // SAFETY: ends the forked child without running the runner's exit handlers.
        unsafe { libc::_exit(127) };
    }
    drop(go_read);
    drop(command);
    seize_for_cage(pid).map_err(|e| format!("seize_for_cage: {e}"))?;
    let mut go_write = go_write;
    go_write
        .write_all(b"g")
        .map_err(|e| format!("writing the go-ahead: {e}"))?;
    drop(go_write);
    let trace = follow_cage(pid, Attach::Seized, None).map_err(|e| format!("follow_cage: {e}"))?;
    let mut text = String::new();
    out_read
        .read_to_string(&mut text)
        .map_err(|e| format!("reading the root's output: {e}"))?;
    ensure!(
        trace.root_status.signal() == Some(libc::SIGTERM),
        "the root's SIGTERM should be delivered and kill it, got {:?}:\n{text}",
        trace.root_status
    );
    // The root's mount namespace is held from its exec on (its exit then skips the teardown).
    let held = trace
        .root_mount_ns
        .as_ref()
        .ok_or("the root's mount namespace was not held")?;
    let held_ino = rustix::fs::fstat(held)
        .map_err(|e| format!("fstat the held namespace: {e}"))?
        .st_ino;
    let own_ino = std::fs::metadata("/proc/self/ns/mnt")
        .map_err(|e| format!("stat /proc/self/ns/mnt: {e}"))?;
    ensure!(
        held_ino == std::os::unix::fs::MetadataExt::ino(&own_ino),
        "the held fd is not the root's (here: our own) mount namespace"
    );
    let stopped = format!("child stopped by {}", libc::SIGSTOP);
    ensure!(
        text.lines().collect::<Vec<_>>()
            == [
                "sysinfo_ehdr 0",
                stopped.as_str(),
                "stopper resumed",
                "child exited 0",
            ],
        "job control under a seizing tracer:\n{text}"
    );
    ensure!(
        trace.execs_count == 2 && trace.vdso_hidden_count == 2,
        "unexpected trace {trace:?}"
    );
    Ok(())
}

/// Makes the command's child a tracee of this thread whose TSC reads fault, before it execs.
fn traced_without_tsc(command: &mut Command) -> &mut Command {
    // SAFETY: the hook runs in the forked child before exec and makes two raw syscalls
    // (PTRACE_TRACEME, prctl), both async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            trace_me().map_err(io::Error::from)?;
            deny_tsc().map_err(io::Error::from)
        })
    }
}

fn follow_cage_virtual_tsc() -> Check {
    // This test binary is dynamically linked: under the denial alone, glibc's ld.so faults on its
    // own rdtsc before main (tests/confine.rs shows that). With the tracer answering, it starts,
    // and each of the child's reads returns the next value of the virtual counter.
    let tsc = VirtualTsc::from_logical_time(7_000_000_000);
    let run = || -> Result<(Vec<u64>, u64), String> {
        let mut command = child("rdtsc");
        let mut root = spawn_piped(traced_without_tsc(&mut command), "the rdtsc child")?;
        let pid = i32::try_from(root.id()).map_err(|e| e.to_string())?;
        let trace = follow_cage(pid, Attach::TraceMe, Some(tsc))
            .map_err(|e| format!("follow_cage: {e}"))?;
        let text = read_stdout(&mut root)?;
        ensure!(
            trace.root_status.success(),
            "the rdtsc child failed: {:?}\n{text}",
            trace.root_status
        );
        let values = field(&text, "tsc")?
            .split(' ')
            .map(|v| v.parse().map_err(|_| format!("bad tsc value {v:?}")))
            .collect::<Result<Vec<u64>, String>>()?;
        Ok((values, trace.tsc_reads_count))
    };
    let (values, reads) = run()?;
    ensure!(values.len() == 3, "three reads expected: {values:?}");
    // The loader's reads come first; the child's three are the last three of the cage's.
    ensure!(
        reads >= 3
            && values
                == [
                    tsc.value(reads - 3),
                    tsc.value(reads - 2),
                    tsc.value(reads - 1)
                ],
        "{reads} reads answered, the child saw {values:?} (start {}, step {})",
        tsc.start_ticks,
        tsc.step_ticks
    );
    let (again, reads_again) = run()?;
    ensure!(
        again == values && reads_again == reads,
        "a second run read {again:?} ({reads_again} reads), the first {values:?} ({reads} reads)"
    );
    Ok(())
}

fn follow_cage_other_sigsegv() -> Check {
    // A privileged instruction faults with the same SI_KERNEL SIGSEGV as a denied rdtsc, and a
    // raised SIGSEGV has the same signal: neither is a TSC read, both must end the process.
    for mode in ["privileged-instruction", "raise-sigsegv"] {
        let mut command = child(mode);
        let mut root = spawn_piped(traced_without_tsc(&mut command), mode)?;
        let pid = i32::try_from(root.id()).map_err(|e| e.to_string())?;
        let trace = follow_cage(pid, Attach::TraceMe, Some(VirtualTsc::from_logical_time(0)))
            .map_err(|e| format!("follow_cage: {e}"))?;
        let text = read_stdout(&mut root)?;
        ensure!(
            trace.root_status.signal() == Some(libc::SIGSEGV),
            "{mode}: expected death by SIGSEGV, got {:?}:\n{text}",
            trace.root_status
        );
        ensure!(
            text.contains("about to fault") && !text.contains("survived"),
            "{mode}: {text}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Child side

fn child_main(mode: &str) -> ExitCode {
    let result = match mode {
        "clock-probe" => child_clock_probe(),
        "auxv" => print_sysinfo_ehdr(),
        "spawner" => child_spawner(),
        "job-control" => child_job_control(),
        "stopper" => child_stopper(),
        "rdtsc" => child_rdtsc(),
        "privileged-instruction" | "raise-sigsegv" => child_fault(mode),
        other => Err(format!("unknown child mode {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("child {mode}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `tsc A B C`: rdtsc, rdtsc, rdtscp.
fn child_rdtsc() -> Check {
    // SAFETY: rdtsc and rdtscp only read the counter (and TSC_AUX into `aux`).
    let (a, b, c) = unsafe {
        let a = core::arch::x86_64::_rdtsc();
        let b = core::arch::x86_64::_rdtsc();
        let mut aux = 0_u32;
        let c = core::arch::x86_64::__rdtscp(&raw mut aux);
        (a, b, c)
    };
    println!("tsc {a} {b} {c}");
    io::stdout().flush().map_err(|e| format!("flush: {e}"))
}

fn child_fault(mode: &str) -> Check {
    // Rust's runtime handles SIGSEGV (stack-overflow detection) by restoring the default action
    // and returning, which ends the process only when the instruction faults again; a raised
    // signal does not, so the default action goes back first.
    // SAFETY: installs the default disposition; no handler code is involved.
    unsafe { libc::signal(libc::SIGSEGV, libc::SIG_DFL) };
    println!("about to fault");
    io::stdout().flush().map_err(|e| format!("flush: {e}"))?;
    if mode == "raise-sigsegv" {
        // SAFETY: raise only sends a signal to this thread.
        unsafe { libc::raise(libc::SIGSEGV) };
    } else {
        // SAFETY: hlt is privileged: in user mode it raises a general-protection fault (SIGSEGV,
        // SI_KERNEL) and does nothing else.
        unsafe { std::arch::asm!("hlt") };
    }
    println!("survived");
    Ok(())
}

fn print_sysinfo_ehdr() -> Check {
    // SAFETY: getauxval only reads the process's auxv copy.
    let value = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    println!("sysinfo_ehdr {value}");
    io::stdout().flush().map_err(|e| format!("flush: {e}"))
}

/// libc's clock_gettime(CLOCK_REALTIME): (return value, errno, seconds).
fn libc_realtime() -> (i32, i32, i64) {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &raw mut now) };
    let errno = if rc == 0 {
        0
    } else {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    };
    (rc, errno, now.tv_sec)
}

fn child_clock_probe() -> Check {
    print_sysinfo_ehdr()?;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("maps: {e}"))?;
    let range = |name: &str| -> (u64, u64) {
        maps.lines()
            .find(|l| l.ends_with(name))
            .and_then(|l| l.split(' ').next())
            .and_then(|range| range.split_once('-'))
            .and_then(|(start, end)| {
                Some((
                    u64::from_str_radix(start, 16).ok()?,
                    u64::from_str_radix(end, 16).ok()?,
                ))
            })
            .unwrap_or((0, 0))
    };
    println!("vdso_mapping {}", range("[vdso]").0);
    let (stack_start, stack_end) = range("[stack]");
    println!("stack_mapping {stack_start} {stack_end}");
    let (rc, errno, seconds) = libc_realtime();
    println!("realtime {rc} {seconds} {errno}");
    install_clock_gettime_errno_filter()?;
    let (rc, errno, _) = libc_realtime();
    println!("filtered_realtime {rc} {errno}");
    Ok(())
}

/// A four-instruction seccomp filter: the clock_gettime *syscall* fails with PROBE_ERRNO,
/// everything else is allowed. The vDSO's clock_gettime never enters the kernel, so it is
/// untouched: the probe tells the two paths apart without strace. (No arch check: a test
/// filter for this x86_64 process only.)
fn install_clock_gettime_errno_filter() -> Check {
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // if A == SYS_clock_gettime fall through, else skip one
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: libc::SYS_clock_gettime as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | PROBE_ERRNO as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: integer-only prctl.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1_u64, 0_u64, 0_u64, 0_u64) };
    ensure!(
        rc == 0,
        "PR_SET_NO_NEW_PRIVS: {}",
        io::Error::last_os_error()
    );
    // SAFETY: `program` points at `filter`, four valid instructions that outlive the call; the
    // kernel copies them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &raw const program,
        )
    };
    ensure!(rc == 0, "seccomp: {}", io::Error::last_os_error());
    Ok(())
}

fn wait_status(child: &mut Child) -> Result<std::process::ExitStatus, String> {
    child.wait().map_err(|e| format!("wait: {e}"))
}

fn child_spawner() -> Check {
    print_sysinfo_ehdr()?;
    let mut direct = child("auxv").spawn().map_err(|e| format!("spawn: {e}"))?;
    ensure!(wait_status(&mut direct)?.success(), "direct child failed");
    // From another thread: new threads are auto-attached too, and so are their children.
    let from_thread = std::thread::spawn(|| -> Check {
        let mut grandchild = child("auxv").spawn().map_err(|e| format!("spawn: {e}"))?;
        ensure!(
            wait_status(&mut grandchild)?.success(),
            "thread's child failed"
        );
        Ok(())
    });
    from_thread.join().map_err(|_| "thread panicked")??;
    // Through a shell: sh execs, then forks and execs our probe; `; true` keeps sh from
    // replacing itself with the last command.
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg("\"$0\"; true")
        .arg(exe())
        .env(CHILD_ENV, "auxv")
        .status()
        .map_err(|e| format!("sh: {e}"))?;
    ensure!(status.success(), "sh failed: {status:?}");
    std::process::exit(SPAWNER_EXIT_CODE);
}

fn child_job_control() -> Check {
    print_sysinfo_ehdr()?;
    let stopper = child("stopper")
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let pid = i32::try_from(stopper.id()).map_err(|e| e.to_string())?;
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes one int to `status`.
    let rc = unsafe { libc::waitpid(pid, &raw mut status, libc::WUNTRACED) };
    ensure!(
        rc == pid && libc::WIFSTOPPED(status),
        "stopper not stopped: {status:#x}"
    );
    println!("child stopped by {}", libc::WSTOPSIG(status));
    io::stdout().flush().map_err(|e| format!("flush: {e}"))?;
    // SAFETY: integer-only.
    let rc = unsafe { libc::kill(pid, libc::SIGCONT) };
    ensure!(rc == 0, "SIGCONT failed");
    // SAFETY: waitpid writes one int to `status`.
    let rc = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    ensure!(
        rc == pid && libc::WIFEXITED(status),
        "stopper did not exit: {status:#x}"
    );
    println!("child exited {}", libc::WEXITSTATUS(status));
    io::stdout().flush().map_err(|e| format!("flush: {e}"))?;
    // The tracer must deliver this, not swallow it.
    // SAFETY: integer-only; the default action of SIGTERM ends this process.
    unsafe { libc::raise(libc::SIGTERM) };
    Err("still alive after SIGTERM".to_string())
}

fn child_stopper() -> Check {
    // SAFETY: integer-only; stops this process until SIGCONT.
    unsafe { libc::raise(libc::SIGSTOP) };
    println!("stopper resumed");
    io::stdout().flush().map_err(|e| format!("flush: {e}"))
}
