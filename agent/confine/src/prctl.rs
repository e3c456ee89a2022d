//! Single-flag prctls of the cage process.

use rustix::io::Errno;
use rustix::process::Signal;

/// `PR_SET_NO_NEW_PRIVS`: `execve` can no longer grant privileges (setuid/setgid bits and file
/// capabilities are ignored). Irreversible, inherited by children, kept across `execve`.
pub fn set_no_new_privs() -> Result<(), Errno> {
    rustix::thread::set_no_new_privs(true)
}

/// `PR_SET_TSC(PR_TSC_SIGSEGV)`: executing `rdtsc`/`rdtscp` raises `SIGSEGV`, so the workload
/// cannot read the host's cycle counter, the one clock the time namespace does not virtualize.
/// Kept across fork and `execve`. The vDSO's `clock_gettime` reads the TSC too and then faults,
/// which pushes time reads into the syscall that seccomp and the time namespace control.
///
/// **Only static workloads survive it**: glibc's dynamic loader reads the TSC while starting a
/// program, so after this call `execve` of any dynamically linked glibc binary dies with SIGSEGV
/// before `main` (seen with Debian glibc 2.36; tests/confine.rs shows it on the test binary).
///
/// Other architectures have no such switch: `EINVAL` there, for the launcher to report.
pub fn deny_tsc() -> Result<(), Errno> {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        rustix::process::set_time_stamp_counter_readability(
            rustix::process::TimeStampCounterReadability::RaiseSIGSEGV,
        )
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        Err(Errno::INVAL)
    }
}

/// `PR_SET_PDEATHSIG`: the calling thread gets `signal` when the thread that forked it exits.
///
/// The parent may already have exited before this call; the caller compares `getppid()` with
/// the parent it expects afterwards (in a new pid namespace PID 1 sees a parent of 0, so compare
/// before `unshare`, or pass the expected parent pid down a pipe). Cleared by `execve` of a
/// setuid/setgid or file-capability binary, which no_new_privs rules out in a cage.
pub fn set_parent_death_signal(signal: Signal) -> Result<(), Errno> {
    rustix::process::set_parent_process_death_signal(Some(signal))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The effect (SIGKILL when the parent exits) is tested across processes in tests/confine.rs;
    // this checks the flag reads back, then resets it on the test thread.
    #[test]
    fn parent_death_signal_reads_back_and_resets() {
        set_parent_death_signal(Signal::TERM).expect("PR_SET_PDEATHSIG");
        let read = rustix::process::parent_process_death_signal().expect("PR_GET_PDEATHSIG");
        rustix::process::set_parent_process_death_signal(None).expect("reset");
        assert_eq!(read, Some(Signal::TERM));
        assert_eq!(
            rustix::process::parent_process_death_signal().expect("read"),
            None
        );
    }
}
