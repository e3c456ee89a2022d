//! Thin safe wrappers over the libc calls the probes share. Each returns the errno the kernel gave, because
//! the errno is what tells a seccomp denial (EPERM via the supervisor), a landlock denial (EACCES), a
//! read-only mount (EROFS) and a missing kernel feature (ENOSYS) apart.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::errno::{Errno, check_int};

/// Words a forked child can send back to its parent.
pub const CHILD_WORDS: usize = 4;

pub fn cpath(path: impl AsRef<Path>) -> Result<CString, Errno> {
    // A path with an interior NUL cannot reach the kernel; EINVAL is what the kernel would say for a bad name.
    CString::new(path.as_ref().as_os_str().as_bytes()).map_err(|_| Errno(libc::EINVAL))
}

pub fn open(
    path: impl AsRef<Path>,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> Result<OwnedFd, Errno> {
    let path = cpath(path)?;
    // SAFETY: path is a valid NUL-terminated string; open has no other memory effects.
    let fd = check_int(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn openat(
    dir: &OwnedFd,
    path: &str,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> Result<OwnedFd, Errno> {
    let path = cpath(path)?;
    // SAFETY: dir is an open fd and path a valid NUL-terminated string.
    let fd = check_int(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            path.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    })?;
    // SAFETY: fd was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Takes ownership of an fd returned by a raw syscall (io_uring_setup, bpf, perf_event_open, ...).
pub fn own_fd(ret: libc::c_long) -> Result<OwnedFd, Errno> {
    let fd = crate::errno::check(ret)? as RawFd;
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn write_all(fd: &OwnedFd, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        // SAFETY: bytes points to bytes.len() readable bytes.
        let written = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        if written < 0 {
            let errno = Errno::last();
            if errno.0 == libc::EINTR {
                continue;
            }
            return Err(errno);
        }
        if written == 0 {
            return Err(Errno(libc::EIO));
        }
        bytes = bytes.get(written as usize..).unwrap_or_default();
    }
    Ok(())
}

/// Reads until EOF or `limit_bytes`.
pub fn read_up_to(fd: &OwnedFd, limit_bytes: usize) -> Result<Vec<u8>, Errno> {
    let mut out = vec![0u8; limit_bytes];
    let mut filled = 0;
    while filled < limit_bytes {
        let Some(rest) = out.get_mut(filled..) else {
            break;
        };
        // SAFETY: rest is a writable buffer of rest.len() bytes.
        let got = unsafe { libc::read(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) };
        if got < 0 {
            let errno = Errno::last();
            if errno.0 == libc::EINTR {
                continue;
            }
            return Err(errno);
        }
        if got == 0 {
            break;
        }
        filled += got as usize;
    }
    out.truncate(filled);
    Ok(out)
}

pub fn unlink(path: impl AsRef<Path>) -> Result<(), Errno> {
    let path = cpath(path)?;
    // SAFETY: path is a valid NUL-terminated string.
    check_int(unsafe { libc::unlink(path.as_ptr()) }).map(drop)
}

pub fn mkdir(path: impl AsRef<Path>, mode: libc::mode_t) -> Result<(), Errno> {
    let path = cpath(path)?;
    // SAFETY: path is a valid NUL-terminated string.
    check_int(unsafe { libc::mkdir(path.as_ptr(), mode) }).map(drop)
}

pub fn rmdir(path: impl AsRef<Path>) -> Result<(), Errno> {
    let path = cpath(path)?;
    // SAFETY: path is a valid NUL-terminated string.
    check_int(unsafe { libc::rmdir(path.as_ptr()) }).map(drop)
}

pub fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Human text for a wait status: "exit 3" or "killed by SIGSEGV".
pub fn describe_wait_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by {}", signal_name(libc::WTERMSIG(status)))
    } else {
        format!("wait status {status:#x}")
    }
}

pub fn signal_name(signal: libc::c_int) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        other => return format!("signal {other}"),
    };
    name.to_string()
}

/// How a forked child ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChildEnd {
    /// The child sent its words and exited.
    Reported([i64; CHILD_WORDS]),
    /// The child died (or exited) before sending its words; the text is the wait status.
    Died(String),
}

/// Runs `body` in a forked child and returns what it sent back. Attempts that would change the probe's own
/// state (unshare, setns, chroot, pivot_root, a user namespace with full capabilities) run there so one
/// attempt cannot make the next one look like an escape or a denial. The probe is single-threaded, so the
/// child may allocate (glibc keeps malloc usable across fork).
pub fn in_child(body: impl FnOnce() -> [i64; CHILD_WORDS]) -> Result<ChildEnd, Errno> {
    let mut fds: [libc::c_int; 2] = [-1; 2];
    // SAFETY: fds is a writable array of two c_ints, as pipe2 requires.
    check_int(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both fds are fresh and owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the probe is single-threaded; the child only runs `body`, writes to the pipe and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Errno::last());
    }
    if pid == 0 {
        drop(read_end);
        // A panic must never unwind out of the child into the parent's code path.
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            Ok(words) => {
                let mut bytes = [0u8; CHILD_WORDS * 8];
                for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
                    chunk.copy_from_slice(&word.to_le_bytes());
                }
                if write_all(&write_end, &bytes).is_ok() {
                    0
                } else {
                    3
                }
            }
            Err(_) => 101,
        };
        // SAFETY: _exit ends the child without running the parent's destructors or flushing its buffers.
        unsafe { libc::_exit(code) }
    }
    drop(write_end);
    let bytes = read_up_to(&read_end, CHILD_WORDS * 8);
    let status = wait_for(pid)?;
    match bytes {
        Ok(bytes) if bytes.len() == CHILD_WORDS * 8 => {
            let mut words = [0i64; CHILD_WORDS];
            for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
                let mut buf = [0u8; 8];
                buf.copy_from_slice(chunk);
                *word = i64::from_le_bytes(buf);
            }
            Ok(ChildEnd::Reported(words))
        }
        _ => Ok(ChildEnd::Died(describe_wait_status(status))),
    }
}

/// waitpid that retries on EINTR; returns the raw wait status.
pub fn wait_for(pid: libc::pid_t) -> Result<libc::c_int, Errno> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: status is a valid out-pointer.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if ret >= 0 {
            return Ok(status);
        }
        let errno = Errno::last();
        if errno.0 != libc::EINTR {
            return Err(errno);
        }
    }
}

/// The result word convention for [`in_child`] attempts: 0 is success, a positive value is the errno.
pub fn result_word(result: Result<(), Errno>) -> i64 {
    match result {
        Ok(()) => 0,
        Err(errno) => i64::from(errno.0.max(1)),
    }
}

pub fn word_result(word: i64) -> Result<(), Errno> {
    if word == 0 {
        Ok(())
    } else {
        Err(Errno(word as i32))
    }
}

/// (device, inode) of a namespace link such as /proc/self/ns/mnt.
pub fn namespace_id(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()))
}

/// True when the probe is PID 1 of its pid namespace, or its mount namespace differs from its parent's or
/// PID 1's: then mounts it changes are the cage's (or a test's private namespace's), not the host's.
pub fn in_own_mount_namespace() -> bool {
    if getpid() == 1 {
        return true;
    }
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let own = namespace_id("/proc/self/ns/mnt");
    // A link we may not read (PID 1 of the host usually) proves nothing either way.
    let differs = |other: Option<(u64, u64)>| matches!((own, other), (Some(own), Some(other)) if own != other);
    differs(namespace_id(&format!("/proc/{parent}/ns/mnt")))
        || differs(namespace_id("/proc/1/ns/mnt"))
}

/// Numeric entries of /proc (the pids this process can see), sorted, at most `max`.
pub fn visible_pids(max: usize) -> Result<Vec<i32>, Errno> {
    let entries = std::fs::read_dir("/proc")
        .map_err(|error| Errno::from_io(&error).unwrap_or(Errno(libc::EIO)))?;
    let mut pids: Vec<i32> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse().ok())
        })
        .take(max)
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_words_round_trip_and_deaths_are_described() {
        let end = in_child(|| [0, 1, -2, i64::MAX]).unwrap();
        assert_eq!(end, ChildEnd::Reported([0, 1, -2, i64::MAX]));
        let end = in_child(|| {
            // std's SIGSEGV handler returns for a signal that is not a fault; with the default action
            // the raised signal ends the child, the way a real fault (rdtsc under PR_SET_TSC) does.
            // SAFETY: only the forked child changes its disposition and raises the signal.
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
            [0; CHILD_WORDS]
        })
        .unwrap();
        assert_eq!(end, ChildEnd::Died("killed by SIGSEGV".to_string()));
    }

    #[test]
    fn result_words_carry_errnos() {
        assert_eq!(result_word(Ok(())), 0);
        assert_eq!(result_word(Err(Errno(libc::EPERM))), 1);
        assert_eq!(word_result(0), Ok(()));
        assert_eq!(word_result(i64::from(libc::EROFS)), Err(Errno(libc::EROFS)));
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
