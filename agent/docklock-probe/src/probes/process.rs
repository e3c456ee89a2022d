//! Process escapes: ptrace and signals across the pid namespace, and the pids and memory limits.

use std::io::Write as _;
use std::ptr;

use super::ProbeError;
use crate::args::{ArgError, ProbeArgs};
use crate::errno::{Errno, check, check_int};
use crate::limits::{
    FORK_COUNT_MAX_DEFAULT, FORK_COUNT_MAX_LIMIT, MEMORY_MIB_MAX_DEFAULT, MEMORY_MIB_MAX_LIMIT,
    MEMORY_STEP_MIB, VISIBLE_PIDS_MAX,
};
use crate::report::{Attempts, Report};
use crate::sys;

fn host_pid(args: &ProbeArgs) -> Result<Option<i32>, ArgError> {
    match args.value("--host-pid") {
        None => Ok(None),
        Some(_) => args
            .u64_in("--host-pid", 0, 1, i32::MAX as u64)
            .map(|pid| Some(pid as i32)),
    }
}

fn note_visible_pids(attempts: &mut Attempts) -> Vec<i32> {
    match sys::visible_pids(VISIBLE_PIDS_MAX) {
        Ok(pids) => {
            attempts.note(format!("{} pids visible in /proc", pids.len()));
            pids
        }
        Err(errno) => {
            attempts.note(format!("/proc unreadable: {errno}"));
            Vec::new()
        }
    }
}

pub fn ptrace_host(args: &ProbeArgs) -> Result<Report, ProbeError> {
    let host_pid = host_pid(args)?;
    let own_pid = sys::getpid();
    let mut attempts = Attempts::new();
    let visible = note_visible_pids(&mut attempts);
    let mut targets: Vec<i32> = Vec::new();
    if own_pid == 1 || args.switch("--sweep-visible") {
        targets.push(1);
        targets.extend(visible.iter().copied().filter(|&pid| pid != own_pid));
    } else {
        attempts.note(
            "pid 1 and the visible pids skipped: the probe is not PID 1 of its pid namespace, so they may be the \
             host's (--sweep-visible tries them)",
        );
    }
    targets.extend(host_pid);
    targets.sort_unstable();
    targets.dedup();
    if targets.is_empty() {
        return Err(ArgError::MissingFlag {
            flag: "--host-pid",
            why: "outside a pid namespace of its own the probe only attaches to the pid it is given",
        }
        .into());
    }
    for pid in targets {
        let mut what = format!("PTRACE_ATTACH pid {pid}");
        if pid == own_pid {
            what.push_str(" (self)");
        }
        if Some(pid) == host_pid {
            what.push_str(" (--host-pid)");
        }
        attempts.record(what, ptrace_attach_detach(pid));
    }
    Ok(attempts.into_report())
}

fn ptrace_attach_detach(pid: i32) -> Result<String, Errno> {
    let null = ptr::null_mut::<libc::c_void>();
    // SAFETY: PTRACE_ATTACH takes no pointers.
    check(unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, null, null) })?;
    // The attach stops the tracee; wait for that stop so the detach below is accepted, and resume it unharmed.
    let stopped = sys::wait_for(pid);
    // SAFETY: PTRACE_DETACH with signal 0 takes no pointers and resumes the tracee without a signal.
    let detached = check(unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, null, null) });
    Ok(match (stopped, detached) {
        (Ok(_), Ok(_)) => "attached; detached again".to_string(),
        (stopped, detached) => format!("attached; wait {stopped:?}, detach {detached:?}"),
    })
}

pub fn signal_host(args: &ProbeArgs) -> Result<Report, ProbeError> {
    let Some(host_pid) = host_pid(args)? else {
        return Err(ArgError::MissingFlag {
            flag: "--host-pid",
            why: "only the test knows a pid outside the cage",
        }
        .into());
    };
    let own_pid = sys::getpid();
    if host_pid == own_pid {
        return Err(ArgError::Refused {
            flag: "--host-pid",
            value: host_pid.to_string(),
            why: "that is the probe itself",
        }
        .into());
    }
    let mut attempts = Attempts::new();
    // Signal 0 delivers nothing: it only asks whether any process is in reach.
    // SAFETY: kill with signal 0 has no effect beyond the permission check.
    let any = check_int(unsafe { libc::kill(-1, 0) });
    attempts.note(match any {
        Ok(_) => "kill(-1, 0): some process in reach (only this pid namespace and below can be)"
            .to_string(),
        Err(errno) => format!("kill(-1, 0): {errno}"),
    });
    let visible = note_visible_pids(&mut attempts);
    let what = format!("kill(pid {host_pid}, SIGKILL)");
    if own_pid == 1 && visible.contains(&host_pid) {
        // As PID 1 every visible pid is this cage's own; the number only collides with the host pid.
        attempts.contained(
            what,
            "not sent: that number is a process of this pid namespace, not the host's",
        );
    } else {
        // SAFETY: kill takes no pointers; the target is the pid the test handed us.
        let sent = check_int(unsafe { libc::kill(host_pid, libc::SIGKILL) });
        attempts.record(what, sent.map(|_| "signal delivered".to_string()));
    }
    Ok(attempts.into_report())
}

pub fn fork_bomb(args: &ProbeArgs) -> Result<Report, ProbeError> {
    let max = args.u64_in("--max", FORK_COUNT_MAX_DEFAULT, 1, FORK_COUNT_MAX_LIMIT)?;
    let parent = sys::getpid();
    let mut children: Vec<libc::pid_t> = Vec::with_capacity(max as usize);
    let mut failed: Option<Errno> = None;
    while (children.len() as u64) < max {
        // SAFETY: single-threaded; the child only calls async-signal-safe functions and never returns.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: prctl, getppid and pause are async-signal-safe; the child dies with the probe.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                if libc::getppid() != parent {
                    libc::_exit(0);
                }
                loop {
                    libc::pause();
                }
            }
        }
        if pid < 0 {
            let errno = Errno::last();
            if errno.0 == libc::EINTR {
                continue;
            }
            failed = Some(errno);
            break;
        }
        children.push(pid);
    }
    let count = children.len();
    let mut reap_failures = 0usize;
    for &pid in &children {
        // SAFETY: kill takes no pointers; pid is our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &pid in &children {
        if sys::wait_for(pid).is_err() {
            reap_failures += 1;
        }
    }
    let cleanup = if reap_failures == 0 {
        "all children killed and reaped".to_string()
    } else {
        format!("{reap_failures} children could not be reaped")
    };
    Ok(match failed {
        Some(errno) => {
            let why = if errno.0 == libc::EAGAIN {
                " (the pids limit)"
            } else {
                ""
            };
            Report::blocked(format!(
                "fork failed with {errno}{why} after {count} children, below --max {max}; {cleanup}"
            ))
        }
        None => Report::escaped(format!(
            "forked {count} children (--max {max}) without a failure; {cleanup}"
        )),
    })
}

pub fn memory_bomb(args: &ProbeArgs) -> Result<Report, ProbeError> {
    let max_mib = args.u64_in("--max-mib", MEMORY_MIB_MAX_DEFAULT, 1, MEMORY_MIB_MAX_LIMIT)?;
    let step_bytes = (MEMORY_STEP_MIB << 20) as usize;
    // SAFETY: sysconf takes no pointers.
    let page_bytes = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .unwrap_or(4096)
        .max(1);
    let mut regions: Vec<*mut u8> = Vec::new();
    let mut touched_mib: u64 = 0;
    let mut failed: Option<Errno> = None;
    let stderr = std::io::stderr();
    while touched_mib < max_mib {
        // SAFETY: an anonymous private mapping with no address hint; the result is checked below.
        let region = unsafe {
            libc::mmap(
                ptr::null_mut(),
                step_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if region == libc::MAP_FAILED {
            failed = Some(Errno::last());
            break;
        }
        let region = region.cast::<u8>();
        regions.push(region);
        for offset in (0..step_bytes).step_by(page_bytes) {
            // SAFETY: offset < step_bytes, inside the mapping just created; a write makes the page resident.
            unsafe { ptr::write_volatile(region.add(offset), 0xA5) };
        }
        touched_mib += MEMORY_STEP_MIB;
        // Progress goes to stderr because the OOM killer usually ends the probe before any stdout line.
        let _ = writeln!(stderr.lock(), "memory-bomb: {touched_mib} MiB touched");
    }
    for region in regions {
        // SAFETY: each region was mapped above with step_bytes and is not used afterwards.
        unsafe { libc::munmap(region.cast(), step_bytes) };
    }
    Ok(match failed {
        Some(errno) => Report::blocked(format!(
            "mmap failed with {errno} after {touched_mib} MiB touched"
        )),
        None => Report::escaped(format!(
            "touched {touched_mib} MiB (--max-mib {max_mib}) without being stopped by the memory limit"
        )),
    })
}
