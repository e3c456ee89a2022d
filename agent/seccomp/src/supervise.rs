//! The user-notification supervisor: every call the allowlist refuses arrives here and is
//! answered by a handler: [`supervise`] refuses and reports everything (EPERM, [`Violation`]);
//! [`supervise_with`] lets a handler emulate calls instead (DockLock's wall clock).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use syscalls::x86_64::Sysno;

use crate::compile::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};
use crate::memory::ProcessMemory;
use crate::policy::ERRNO_MAX;

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

/// One call the allowlist did not allow, as the supervisor receives it. Handed to the handler of
/// [`supervise_with`], which answers it with a [`Reply`].
#[derive(Debug)]
pub struct Notification<'a> {
    /// The kernel's cookie for this notification (SECCOMP_IOCTL_NOTIF_ID_VALID checks it).
    pub id: u64,
    /// The calling thread's id in the supervisor's pid namespace (0 if not visible there).
    pub pid: u32,
    /// AUDIT_ARCH_* of the syscall ABI used.
    pub arch: u32,
    /// The raw syscall number (x32 numbers keep their 0x40000000 bit).
    pub syscall_nr: i32,
    /// The six argument registers.
    pub args: [u64; 6],
    pub instruction_pointer: u64,
    /// The listener the notification came from; `None` for [`Notification::detached`].
    listener: Option<BorrowedFd<'a>>,
}

impl Notification<'_> {
    /// A notification tied to no listener, for testing handlers: [`Notification::is_valid`] is
    /// false and its [`Notification::caller_memory`] refuses every write as gone.
    pub fn detached(
        id: u64,
        pid: u32,
        arch: u32,
        syscall_nr: i32,
        args: [u64; 6],
    ) -> Notification<'static> {
        Notification {
            id,
            pid,
            arch,
            syscall_nr,
            args,
            instruction_pointer: 0,
            listener: None,
        }
    }

    /// The receipt's name for the call: the x86_64 name, or `x32_abi` / `i386_abi` /
    /// `foreign_abi` / `unknown`.
    pub fn syscall_name(&self) -> &'static str {
        syscall_name(self.arch, self.syscall_nr)
    }

    /// The x86_64 syscall number when the call came through the native 64-bit ABI (not x32,
    /// not `int 0x80`); handlers that emulate calls must only ever look at these.
    pub fn native_syscall_nr(&self) -> Option<i64> {
        let native = self.arch == AUDIT_ARCH_X86_64
            && u32::try_from(self.syscall_nr).is_ok_and(|nr| nr & X32_SYSCALL_BIT == 0);
        native.then_some(i64::from(self.syscall_nr))
    }

    /// The violation record of this call.
    pub fn violation(&self) -> Violation {
        Violation {
            pid: self.pid,
            syscall_nr: i64::from(self.syscall_nr),
            syscall_name: self.syscall_name(),
            args: self.args,
        }
    }

    /// SECCOMP_IOCTL_NOTIF_ID_VALID: the caller is still blocked in this very call (it was not
    /// killed, and the id was not reused). False for a detached notification.
    pub fn is_valid(&self) -> bool {
        let Some(listener) = self.listener else {
            return false;
        };
        let mut id = self.id;
        loop {
            // SAFETY: the request reads one u64 (the id) from the pointer; `id` outlives the
            // call.
            let rc = unsafe {
                libc::ioctl(
                    listener.as_raw_fd(),
                    libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
                    &raw mut id,
                )
            };
            if rc == 0 {
                return true;
            }
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return false;
            }
        }
    }

    /// The caller's memory, for a handler that writes a result into it (see [`crate::CallerMemory`]).
    pub fn caller_memory(&self) -> ProcessMemory<'_> {
        ProcessMemory::new(self)
    }
}

/// A handler's answer to a [`Notification`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Fail the call with this errno (1..=4095; anything else is answered EPERM).
    Deny(i32),
    /// Complete the call with this return value, after the handler wrote any output into the
    /// caller's memory. The kernel never runs the call itself.
    Return(i64),
}

/// Answers every notification on `listener` with -EPERM and reports it through `on_violation`;
/// returns Ok when no task uses the filter any more (the listener polls POLLHUP), i.e. every
/// confined process has exited. The kernel drops a task's use of the filter when the task is
/// reaped (release_task), so zombies still count: the caller must wait for its children.
///
/// A violation is reported whether or not the answer reaches the caller, so an attempt whose
/// caller dies meanwhile is still recorded. With SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (set by
/// `install` where the kernel has it) a received call cannot be interrupted and restarted, so
/// each attempt is reported once.
pub fn supervise(
    listener: OwnedFd,
    on_violation: &mut dyn FnMut(Violation),
) -> Result<(), SuperviseError> {
    supervise_with(listener, &mut |notification| {
        on_violation(notification.violation());
        Reply::Deny(libc::EPERM)
    })
}

/// Like [`supervise`], but every notification is answered with what `handler` returns: a
/// handler may emulate a call (write its result into the caller's memory with
/// [`Notification::caller_memory`], then [`Reply::Return`]) or refuse it ([`Reply::Deny`]);
/// recording violations is the handler's job. [`crate::supervise_with_wall_clock`] is the
/// handler DockLock uses. The handler runs before the answer is sent; the caller stays blocked
/// until then. An answer whose caller is gone meanwhile is dropped silently.
pub fn supervise_with(
    listener: OwnedFd,
    handler: &mut dyn FnMut(&Notification<'_>) -> Reply,
) -> Result<(), SuperviseError> {
    loop {
        let mut poll_fd = libc::pollfd {
            fd: listener.as_raw_fd(),
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
        if answer_ready(listener.as_fd(), poll_fd.revents, handler)? == ListenerState::Closed {
            return Ok(());
        }
    }
}

/// Whether a listener still has confined tasks behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerState {
    /// Tasks still use the filter: keep polling.
    Open,
    /// No task uses the filter any more (POLLHUP): supervision is over.
    Closed,
}

/// One step of [`supervise_with`] for a caller that polls the listener in its own event loop
/// (DockLock's launcher follows the listener, the audit socket and the cage's pipes with one
/// poll(2) instead of a thread each): `revents` is what poll returned for `listener` (asked
/// for POLLIN). A notification is received, handed to `handler` and answered; a hang-up means
/// the last confined task is gone. Zero `revents` is a no-op.
pub fn answer_ready(
    listener: BorrowedFd<'_>,
    revents: i16,
    handler: &mut dyn FnMut(&Notification<'_>) -> Reply,
) -> Result<ListenerState, SuperviseError> {
    let fd = listener.as_raw_fd();
    if revents & libc::POLLIN != 0 {
        let Some(received) = receive(fd)? else {
            return Ok(ListenerState::Open);
        };
        let notification = Notification {
            id: received.id,
            pid: received.pid,
            arch: received.data.arch,
            syscall_nr: received.data.nr,
            args: received.data.args,
            instruction_pointer: received.data.instruction_pointer,
            listener: Some(listener),
        };
        let reply = handler(&notification);
        return match respond(fd, notification.id, reply) {
            Ok(()) => Ok(ListenerState::Open),
            // The caller died, or a signal ended its wait: nothing is left to answer.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(ListenerState::Open),
            Err(source) => Err(SuperviseError::Respond {
                pid: notification.pid,
                syscall_name: notification.syscall_name(),
                source,
            }),
        };
    }
    if revents & libc::POLLHUP != 0 {
        return Ok(ListenerState::Closed);
    }
    if revents != 0 {
        return Err(SuperviseError::Listener { revents });
    }
    Ok(ListenerState::Open)
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

/// SECCOMP_IOCTL_NOTIF_SEND. Never SECCOMP_USER_NOTIF_FLAG_CONTINUE: nothing refused is ever
/// let through to the kernel.
fn respond(fd: libc::c_int, id: u64, reply: Reply) -> io::Result<()> {
    let (val, error) = response_values(reply);
    let mut response = libc::seccomp_notif_resp {
        id,
        val,
        error,
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

/// (val, error) of the kernel response. The kernel returns `error` to the caller when it is
/// non-zero, else `val`; it does not check `error`, so an errno outside 1..=ERRNO_MAX (which
/// would read as a success or garbage) becomes EPERM.
fn response_values(reply: Reply) -> (i64, i32) {
    match reply {
        Reply::Return(value) => (value, 0),
        Reply::Deny(errno) if (1..=ERRNO_MAX).contains(&errno) => (0, -errno),
        Reply::Deny(_) => (0, -libc::EPERM),
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

    #[test]
    fn replies_map_to_kernel_responses() {
        assert_eq!(response_values(Reply::Return(0)), (0, 0));
        assert_eq!(
            response_values(Reply::Return(1_700_000_000)),
            (1_700_000_000, 0)
        );
        assert_eq!(
            response_values(Reply::Deny(libc::EFAULT)),
            (0, -libc::EFAULT)
        );
        assert_eq!(response_values(Reply::Deny(4095)), (0, -4095));
        // Never a "success" or a garbage value by mistake.
        for bad in [0, -1, 4096, i32::MAX, i32::MIN] {
            assert_eq!(
                response_values(Reply::Deny(bad)),
                (0, -libc::EPERM),
                "{bad}"
            );
        }
    }

    #[test]
    fn detached_notifications_describe_the_call_and_are_never_valid() {
        let mount = Notification::detached(7, 42, AUDIT_ARCH_X86_64, 165, [1, 2, 3, 4, 5, 6]);
        assert_eq!(mount.syscall_name(), "mount");
        assert_eq!(mount.native_syscall_nr(), Some(165));
        assert!(!mount.is_valid());
        assert_eq!(
            mount.violation(),
            Violation {
                pid: 42,
                syscall_nr: 165,
                syscall_name: "mount",
                args: [1, 2, 3, 4, 5, 6],
            }
        );
        let x32 = Notification::detached(1, 1, AUDIT_ARCH_X86_64, 0x4000_0000 | 228, [0; 6]);
        assert_eq!(x32.native_syscall_nr(), None);
        let i386 = Notification::detached(1, 1, AUDIT_ARCH_I386, 228, [0; 6]);
        assert_eq!(i386.native_syscall_nr(), None);
        assert_eq!(
            Notification::detached(1, 1, AUDIT_ARCH_X86_64, -1, [0; 6]).native_syscall_nr(),
            None
        );
    }
}
