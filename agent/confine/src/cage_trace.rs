//! The cage's tracer: follows every process of a cage (forks, vforks, threads) and hides the vDSO
//! at every exec, relaying the root's exit status like a plain `waitpid` would.
//!
//! Why follow everything rather than detach after the first exec: every `execve` maps a fresh
//! vDSO and writes a fresh auxv, so `sh -c date` would give `date` the real wall clock again.
//!
//! Attaching (the tracer must be the root's parent, or allowed to trace it):
//! * [`Attach::Seized`] (recommended): the tracer calls [`seize_for_cage`] on the forked root
//!   *before the root execs* (the root waits on a pipe until the tracer says so). Seized tracees
//!   keep job control: a group-stop (SIGSTOP, SIGTSTP...) stays a stop (`PTRACE_LISTEN`).
//! * [`Attach::TraceMe`]: the root calls [`crate::trace_me`] before its seccomp filter and then
//!   execs; no handshake. The tracer sets its options at the root's first stop (the legacy
//!   post-exec `SIGTRAP`, or a `SIGSTOP` the root raised). Tracees are then not seized, so a
//!   group-stop cannot be held: the tracer resumes it, i.e. stop signals do not stop cage
//!   processes (the classic strace limitation).
//!
//! Either way, the options include `PTRACE_O_EXITKILL`: if the tracer dies, the kernel kills
//! every tracee, so no cage process ever runs untraced. Children created with `CLONE_UNTRACED`
//! escape auto-attach; the DockLock seccomp policy refuses that flag.

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use rustix::io::Errno;

use crate::tsc::{VirtualTsc, emulate_tsc_read};
use crate::vdso::{VdsoError, VdsoHidden, hide_vdso_at_exec_stop, last_errno};

/// Options of every tracee: stop at each exec, auto-attach every new process and thread, and
/// kill the tracees if the tracer exits.
const TRACE_OPTIONS: libc::c_int = libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_EXITKILL;

/// How the root of the cage became our tracee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// [`seize_for_cage`] was called on it (options already set).
    Seized,
    /// It called [`crate::trace_me`] (options are set at its first stop).
    TraceMe,
}

/// A process whose vDSO could not be hidden; it was killed before running its new program.
#[derive(Debug)]
pub struct HideFailure {
    pub pid: i32,
    pub error: VdsoError,
}

/// What [`follow_cage`] saw.
#[derive(Debug)]
pub struct CageTrace {
    /// The root's wait status, as `waitpid` reported it.
    pub root_status: ExitStatus,
    /// Exec stops handled (every `execve` that succeeded in the cage).
    pub execs_count: u64,
    /// Execs whose vDSO entry was rewritten (the others had none, or failed).
    pub vdso_hidden_count: u64,
    /// Execs whose vDSO could not be hidden; each such process was killed.
    pub hide_failures_count: u64,
    /// The first of those failures, for the report.
    pub first_hide_failure: Option<HideFailure>,
    /// `rdtsc`/`rdtscp` faults answered from the virtual counter (only with a [`VirtualTsc`]
    /// and a cage under [`crate::deny_tsc`]).
    pub tsc_reads_count: u64,
    /// The root's mount namespace, opened at its first exec stop (None if it never exec'd or
    /// the open failed). Held, the root's exit does not tear the namespace down — that teardown
    /// waits for an RCU grace period (0.1 to several ms) before the root is reported exited; the
    /// caller drops it once nobody waits on it.
    pub root_mount_ns: Option<std::os::fd::OwnedFd>,
}

/// Why tracing stopped before the cage was gone. The tracer should exit (EXITKILL then kills
/// every tracee) and report it.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("waiting for the traced cage processes failed: {0}")]
    Wait(Errno),
    #[error("ptrace {request} on pid {pid} failed: {source}")]
    Ptrace {
        request: &'static str,
        pid: i32,
        source: Errno,
    },
    #[error("the cage's root pid {root} was never reported as exited")]
    RootLost { root: i32 },
    #[error("pid {pid} ended before its exec (wait status {status:#x})")]
    EndedBeforeExec { pid: i32, status: i32 },
    #[error("pid {pid} was killed: {source}")]
    Hide {
        pid: i32,
        #[source]
        source: VdsoError,
    },
}

/// `PTRACE_SEIZE` with the cage options: `pid` (our freshly forked child, which must not have
/// exec'd yet) becomes a tracee without being stopped. Then let it continue to its exec and run
/// [`follow_cage`] with [`Attach::Seized`].
pub fn seize_for_cage(pid: i32) -> Result<(), Errno> {
    // SAFETY: PTRACE_SEIZE takes the options as the data argument (an integer passed as a
    // pointer-sized value); addr must be 0. No memory of ours is touched.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            TRACE_OPTIONS as usize as *mut libc::c_void,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(last_errno()))
    }
}

/// Traces the cage rooted at `root` (our child and tracee) until no tracee and no child is left,
/// hiding the vDSO at every exec ([`hide_vdso_at_exec_stop`]). A process whose vDSO cannot be
/// hidden is killed with SIGKILL before it runs a single instruction of its new program.
/// Signals are delivered as they would be untraced (see [`Attach`] for group-stops), except,
/// with `tsc`, the `SIGSEGV` of a denied `rdtsc`/`rdtscp` ([`crate::deny_tsc`]), which is
/// answered from the virtual counter instead (see [`crate::tsc`]).
///
/// Must run on the thread that forked `root` (ptrace requests come from the tracer thread), and
/// reaps every child of the calling process (it waits with `waitpid(-1, __WALL)`), so the
/// caller should have no other children. Returns when `waitpid` reports no children left.
pub fn follow_cage(
    root: i32,
    attach: Attach,
    tsc: Option<VirtualTsc>,
) -> Result<CageTrace, TraceError> {
    let mut tracer = Tracer {
        trace: CageTrace {
            root_status: ExitStatus::from_raw(0),
            execs_count: 0,
            vdso_hidden_count: 0,
            hide_failures_count: 0,
            first_hide_failure: None,
            tsc_reads_count: 0,
            root_mount_ns: None,
        },
        root_status: None,
    };
    // Pids whose first stop was seen: a non-seized auto-attached child starts with a SIGSTOP
    // that must be swallowed, not delivered.
    let mut seen: HashSet<i32> = HashSet::from([root]);
    let mut root_options_set = attach == Attach::Seized;
    while let Some((pid, status)) = wait_any()? {
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            seen.remove(&pid);
            if pid == root {
                tracer.root_status = Some(ExitStatus::from_raw(status));
            }
            continue;
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        let signal = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xffff;
        if pid == root && !root_options_set {
            root_options_set = true;
            set_options(pid)?;
            if event == 0 && signal == libc::SIGTRAP {
                // The legacy trap after an exec of a tracee that had no options yet.
                tracer.exec_stop(pid);
                resume(pid, 0)?;
                continue;
            }
            if event == 0 && signal == libc::SIGSTOP {
                // The root stopped itself so that options could be set before its exec.
                resume(pid, 0)?;
                continue;
            }
        }
        let first_stop = seen.insert(pid);
        match event {
            libc::PTRACE_EVENT_EXEC => {
                if pid == root && tracer.trace.root_mount_ns.is_none() {
                    tracer.trace.root_mount_ns = rustix::fs::open(
                        format!("/proc/{pid}/ns/mnt"),
                        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                        rustix::fs::Mode::empty(),
                    )
                    .ok();
                }
                tracer.exec_stop(pid);
                // A non-leader thread that execs takes over the leader's pid; its old tid is gone
                // without an exit report.
                if let Some(former) = event_message(pid)
                    && former != pid
                {
                    seen.remove(&former);
                }
                resume(pid, 0)?;
            }
            libc::PTRACE_EVENT_STOP => {
                if is_stop_signal(signal) {
                    // A group-stop of a seized tracee: stay stopped until SIGCONT.
                    listen(pid)?;
                } else {
                    // The initial stop of an auto-attached, seized child.
                    resume(pid, 0)?;
                }
            }
            0 => {
                if first_stop && signal == libc::SIGSTOP {
                    // The initial stop of an auto-attached child that is not seized.
                    resume(pid, 0)?;
                } else if attach == Attach::TraceMe && is_group_stop(pid) {
                    resume(pid, 0)?;
                } else if let Some(tsc) = tsc
                    && signal == libc::SIGSEGV
                    && tracer.answer_tsc_read(pid, tsc)
                {
                    resume(pid, 0)?;
                } else {
                    // A signal-delivery-stop: deliver the signal.
                    resume(pid, signal)?;
                }
            }
            // Fork, vfork and clone events: the new process reports its own first stop.
            _ => resume(pid, 0)?,
        }
    }
    let root_status = tracer.root_status.ok_or(TraceError::RootLost { root })?;
    Ok(CageTrace {
        root_status,
        ..tracer.trace
    })
}

struct Tracer {
    trace: CageTrace,
    root_status: Option<ExitStatus>,
}

impl Tracer {
    /// True when `pid`'s SIGSEGV was a denied TSC read, now answered (resume without the
    /// signal); false to deliver it. A read that cannot be answered (the tracee's registers or
    /// code unreadable: it was killed meanwhile, say) gets the SIGSEGV the denial raised, so the
    /// process ends as an unanswered `rdtsc` would; it never runs on with a wrong value.
    fn answer_tsc_read(&mut self, pid: i32, tsc: VirtualTsc) -> bool {
        let answered =
            emulate_tsc_read(pid, tsc.value(self.trace.tsc_reads_count)).unwrap_or(false);
        if answered {
            self.trace.tsc_reads_count += 1;
        }
        answered
    }

    fn exec_stop(&mut self, pid: i32) {
        self.trace.execs_count += 1;
        match hide_vdso_at_exec_stop(pid) {
            Ok(VdsoHidden::Hidden { .. }) => self.trace.vdso_hidden_count += 1,
            Ok(VdsoHidden::Absent) => {}
            // Killed meanwhile (SIGKILL ends a ptrace-stop): its exit is reported next.
            Err(VdsoError::Registers { source, .. }) if source == Errno::SRCH => {}
            Err(error) => {
                kill(pid);
                self.trace.hide_failures_count += 1;
                if self.trace.first_hide_failure.is_none() {
                    self.trace.first_hide_failure = Some(HideFailure { pid, error });
                }
            }
        }
    }
}

/// Waits for one tracee or the child to change state with `waitpid(-1, __WALL)`. `None` when
/// nothing is left to wait for (ECHILD).
fn wait_any() -> Result<Option<(i32, i32)>, TraceError> {
    wait_for(-1)
}

fn wait_for(pid: i32) -> Result<Option<(i32, i32)>, TraceError> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes one int to `status`, which outlives the call.
        let waited = unsafe { libc::waitpid(pid, &raw mut status, libc::__WALL) };
        if waited > 0 {
            return Ok(Some((waited, status)));
        }
        match last_errno() {
            libc::EINTR => continue,
            libc::ECHILD => return Ok(None),
            errno => return Err(TraceError::Wait(Errno::from_raw_os_error(errno))),
        }
    }
}

fn is_stop_signal(signal: libc::c_int) -> bool {
    matches!(
        signal,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

/// One ptrace request whose data is an integer (or unused); ESRCH (the tracee was killed or is
/// no longer stopped for us) is not an error: its exit is reported by the next wait.
fn request(
    request: libc::c_uint,
    name: &'static str,
    pid: i32,
    data: usize,
) -> Result<(), TraceError> {
    // SAFETY: the requests passed here (PTRACE_CONT, PTRACE_LISTEN, PTRACE_SETOPTIONS,
    // PTRACE_DETACH) read `data` as an integer (a signal number or option bits) and ignore addr;
    // no memory of ours is read or written.
    let rc = unsafe {
        libc::ptrace(
            request,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            data as *mut libc::c_void,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    match last_errno() {
        libc::ESRCH => Ok(()),
        errno => Err(TraceError::Ptrace {
            request: name,
            pid,
            source: Errno::from_raw_os_error(errno),
        }),
    }
}

fn resume(pid: i32, signal: libc::c_int) -> Result<(), TraceError> {
    request(
        libc::PTRACE_CONT,
        "PTRACE_CONT",
        pid,
        usize::try_from(signal).unwrap_or(0),
    )
}

fn listen(pid: i32) -> Result<(), TraceError> {
    request(libc::PTRACE_LISTEN, "PTRACE_LISTEN", pid, 0)
}

fn set_options(pid: i32) -> Result<(), TraceError> {
    request(
        libc::PTRACE_SETOPTIONS,
        "PTRACE_SETOPTIONS",
        pid,
        TRACE_OPTIONS as usize,
    )
}

fn detach(pid: i32) -> Result<(), TraceError> {
    request(libc::PTRACE_DETACH, "PTRACE_DETACH", pid, 0)
}

fn kill(pid: i32) {
    // SAFETY: kill takes only integers. A failure (ESRCH) means the process is already gone.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// `PTRACE_GETEVENTMSG`; `None` if the tracee is gone.
fn event_message(pid: i32) -> Option<i32> {
    let mut message: libc::c_ulong = 0;
    // SAFETY: PTRACE_GETEVENTMSG writes one unsigned long to `data`, which points at one.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETEVENTMSG,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            (&raw mut message).cast::<libc::c_void>(),
        )
    };
    if rc == 0 {
        i32::try_from(message).ok()
    } else {
        None
    }
}

/// For a tracee that is not seized, a stop with a stop signal is a group-stop exactly when
/// `PTRACE_GETSIGINFO` fails with EINVAL (ptrace(2), "Group-stop").
fn is_group_stop(pid: i32) -> bool {
    crate::tracee::signal_info(pid).is_err_and(|errno| errno == Errno::INVAL)
}

/// The one-exec variant (module docs of [`crate::vdso`]): waits for traced child `pid` (which
/// called [`crate::trace_me`]) to stop at its exec, hides its vDSO and detaches, so the program
/// runs untraced from then on. Signals that arrive before the exec are delivered. Execs the
/// program makes later keep their vDSO; a cage wants [`follow_cage`] instead.
///
/// If the vDSO cannot be hidden, the child is killed (it never runs its new program) and the
/// error returned; the caller still reaps it.
pub fn hide_vdso_once(pid: i32) -> Result<VdsoHidden, TraceError> {
    loop {
        let Some((_, status)) = wait_for(pid)? else {
            return Err(TraceError::Wait(Errno::CHILD));
        };
        if !libc::WIFSTOPPED(status) {
            return Err(TraceError::EndedBeforeExec { pid, status });
        }
        let signal = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xffff;
        let exec_stop = (event == 0 && signal == libc::SIGTRAP) || event == libc::PTRACE_EVENT_EXEC;
        if !exec_stop {
            resume(pid, if event == 0 { signal } else { 0 })?;
            continue;
        }
        return match hide_vdso_at_exec_stop(pid) {
            Ok(hidden) => {
                detach(pid)?;
                Ok(hidden)
            }
            Err(source) => {
                kill(pid);
                // Let the SIGKILL take it out of the stop; it never returns to user space.
                resume(pid, 0)?;
                Err(TraceError::Hide { pid, source })
            }
        };
    }
}
