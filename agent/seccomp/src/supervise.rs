//! The user-notification supervisor: every call the allowlist refuses arrives here, is answered
//! with EPERM and is reported as a [`Violation`].

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use syscalls::x86_64::Sysno;

use crate::compile::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};

/// One refused call, as the receipt records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The caller's pid in the supervisor's pid namespace (0 if it is not visible there).
    pub pid: u32,
    /// The raw syscall number the caller used (x32 numbers keep their 0x40000000 bit).
    pub syscall_nr: i64,
    /// The x86_64 name, or `x32_abi` / `i386_abi` / `foreign_abi` / `unknown`.
    pub syscall_name: &'static str,
    /// The six argument registers, unmodified (pointers are not dereferenced).
    pub args: [u64; 6],
}

/// Why supervision stopped before the last confined task exited.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("polling the seccomp listener failed: {0}")]
    Poll(#[source] io::Error),
    #[error(
        "the seccomp listener reported poll events {revents:#x} (not a notification, not a hang-up)"
    )]
    Listener { revents: i16 },
    #[error("receiving a seccomp notification failed: {0}")]
    Receive(#[source] io::Error),
    #[error("answering the seccomp notification for {syscall_name} of pid {pid} failed: {source}")]
    Respond {
        pid: u32,
        syscall_name: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Answers every notification on `listener` with -EPERM and reports it through `on_violation`;
/// returns Ok when no task uses the filter any more (the listener polls POLLHUP), i.e. every
/// confined process has exited. The kernel drops a task's use of the filter when the task is
/// reaped (release_task), so zombies still count: the caller must wait for its children.
///
/// A violation is reported when it is received, before it is answered, so an attempt whose
/// caller dies meanwhile is still recorded. With SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (set by
/// `install` where the kernel has it) a received call cannot be interrupted and restarted, so
/// each attempt is reported once.
pub fn supervise(
    listener: OwnedFd,
    on_violation: &mut dyn FnMut(Violation),
) -> Result<(), SuperviseError> {
    let fd = listener.as_raw_fd();
    loop {
        let mut poll_fd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `poll_fd` is one valid, writable pollfd and the count passed is 1.
        let rc = unsafe { libc::poll(&raw mut poll_fd, 1, -1) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(SuperviseError::Poll(err));
        }
        if poll_fd.revents & libc::POLLIN != 0 {
            let Some(notification) = receive(fd)? else {
                continue;
            };
            let violation = violation_from(&notification);
            let answered = respond_eperm(fd, notification.id);
            on_violation(violation.clone());
            match answered {
                Ok(()) => {}
                // The caller died, or a signal ended its wait: nothing is left to answer.
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
                Err(source) => {
                    return Err(SuperviseError::Respond {
                        pid: violation.pid,
                        syscall_name: violation.syscall_name,
                        source,
                    });
                }
            }
            continue;
        }
        if poll_fd.revents & libc::POLLHUP != 0 {
            return Ok(());
        }
        if poll_fd.revents != 0 {
            return Err(SuperviseError::Listener {
                revents: poll_fd.revents,
            });
        }
    }
}

/// SECCOMP_IOCTL_NOTIF_RECV. `None` when the notification vanished between poll and receive
/// (its caller was killed), which the kernel reports as ENOENT.
fn receive(fd: libc::c_int) -> Result<Option<libc::seccomp_notif>, SuperviseError> {
    loop {
        // The kernel refuses (EINVAL) a receive buffer that is not all zeroes. The struct size
        // is fixed by the ioctl number itself (_IOWR with sizeof(struct seccomp_notif)), so a
        // kernel with a different layout would refuse the request rather than overrun it.
        let mut notification = libc::seccomp_notif {
            id: 0,
            pid: 0,
            flags: 0,
            data: libc::seccomp_data {
                nr: 0,
                arch: 0,
                instruction_pointer: 0,
                args: [0; 6],
            },
        };
        // SAFETY: `notification` is a writable seccomp_notif, the exact type the request
        // SECCOMP_IOCTL_NOTIF_RECV is defined with; the kernel writes at most its size.
        let rc = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &raw mut notification) };
        if rc == 0 {
            return Ok(Some(notification));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ENOENT) => return Ok(None),
            _ => return Err(SuperviseError::Receive(err)),
        }
    }
}

/// SECCOMP_IOCTL_NOTIF_SEND with error -EPERM (never SECCOMP_USER_NOTIF_FLAG_CONTINUE: nothing
/// refused is ever let through).
fn respond_eperm(fd: libc::c_int, id: u64) -> io::Result<()> {
    let mut response = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: -libc::EPERM,
        flags: 0,
    };
    loop {
        // SAFETY: `response` is a valid seccomp_notif_resp, the type SECCOMP_IOCTL_NOTIF_SEND is
        // defined with; the kernel reads it and may write it back (_IOWR).
        let rc = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &raw mut response) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

fn violation_from(notification: &libc::seccomp_notif) -> Violation {
    let data = &notification.data;
    Violation {
        pid: notification.pid,
        syscall_nr: i64::from(data.nr),
        syscall_name: syscall_name(data.arch, data.nr),
        args: data.args,
    }
}

/// The name a receipt shows for a refused call.
pub(crate) fn syscall_name(arch: u32, nr: i32) -> &'static str {
    match arch {
        AUDIT_ARCH_X86_64 => match u32::try_from(nr) {
            Err(_) => "unknown",
            Ok(number) if number & X32_SYSCALL_BIT != 0 => "x32_abi",
            Ok(number) => usize::try_from(number)
                .ok()
                .and_then(Sysno::new)
                .map_or("unknown", |sysno| sysno.name()),
        },
        AUDIT_ARCH_I386 => "i386_abi",
        _ => "foreign_abi",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_native_x32_foreign_and_unknown_numbers() {
        assert_eq!(syscall_name(AUDIT_ARCH_X86_64, 165), "mount");
        assert_eq!(syscall_name(AUDIT_ARCH_X86_64, 425), "io_uring_setup");
        assert_eq!(syscall_name(AUDIT_ARCH_X86_64, 0x4000_0000 | 39), "x32_abi");
        assert_eq!(syscall_name(AUDIT_ARCH_X86_64, 1000), "unknown");
        assert_eq!(syscall_name(AUDIT_ARCH_X86_64, -1), "unknown");
        assert_eq!(syscall_name(AUDIT_ARCH_I386, 20), "i386_abi");
        assert_eq!(syscall_name(0xc000_00b7, 0), "foreign_abi");
    }
}
