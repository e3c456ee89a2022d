//! errno values with their symbolic names, so every detail names the exact denial (EPERM from seccomp or
//! capabilities, EACCES from landlock, EROFS from a read-only mount, ENOSYS from a missing syscall, ...).

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Errno(pub i32);

impl Errno {
    /// The errno left by the last failed libc call on this thread.
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    pub fn from_io(error: &std::io::Error) -> Option<Errno> {
        error.raw_os_error().map(Errno)
    }

    pub fn name(self) -> Option<&'static str> {
        errno_name(self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "errno {}", self.0),
        }
    }
}

/// Turns a raw libc/syscall return into the value or the errno it set.
pub fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret < 0 { Err(Errno::last()) } else { Ok(ret) }
}

/// Same as [`check`] for the many libc calls returning `c_int`.
pub fn check_int(ret: libc::c_int) -> Result<libc::c_int, Errno> {
    if ret < 0 { Err(Errno::last()) } else { Ok(ret) }
}

macro_rules! errno_names {
    ($($name:ident),* $(,)?) => {
        fn errno_name(errno: i32) -> Option<&'static str> {
            match errno {
                $(libc::$name => Some(stringify!($name)),)*
                _ => None,
            }
        }
    };
}

// Linux errno-base.h and errno.h in order; the aliases EWOULDBLOCK, EDEADLOCK and ENOTSUP share numbers
// with EAGAIN, EDEADLK and EOPNOTSUPP and are left out.
errno_names!(
    EPERM,
    ENOENT,
    ESRCH,
    EINTR,
    EIO,
    ENXIO,
    E2BIG,
    ENOEXEC,
    EBADF,
    ECHILD,
    EAGAIN,
    ENOMEM,
    EACCES,
    EFAULT,
    ENOTBLK,
    EBUSY,
    EEXIST,
    EXDEV,
    ENODEV,
    ENOTDIR,
    EISDIR,
    EINVAL,
    ENFILE,
    EMFILE,
    ENOTTY,
    ETXTBSY,
    EFBIG,
    ENOSPC,
    ESPIPE,
    EROFS,
    EMLINK,
    EPIPE,
    EDOM,
    ERANGE,
    EDEADLK,
    ENAMETOOLONG,
    ENOLCK,
    ENOSYS,
    ENOTEMPTY,
    ELOOP,
    ENOMSG,
    EIDRM,
    ECHRNG,
    EL2NSYNC,
    EL3HLT,
    EL3RST,
    ELNRNG,
    EUNATCH,
    ENOCSI,
    EL2HLT,
    EBADE,
    EBADR,
    EXFULL,
    ENOANO,
    EBADRQC,
    EBADSLT,
    EBFONT,
    ENOSTR,
    ENODATA,
    ETIME,
    ENOSR,
    ENONET,
    ENOPKG,
    EREMOTE,
    ENOLINK,
    EADV,
    ESRMNT,
    ECOMM,
    EPROTO,
    EMULTIHOP,
    EDOTDOT,
    EBADMSG,
    EOVERFLOW,
    ENOTUNIQ,
    EBADFD,
    EREMCHG,
    ELIBACC,
    ELIBBAD,
    ELIBSCN,
    ELIBMAX,
    ELIBEXEC,
    EILSEQ,
    ERESTART,
    ESTRPIPE,
    EUSERS,
    ENOTSOCK,
    EDESTADDRREQ,
    EMSGSIZE,
    EPROTOTYPE,
    ENOPROTOOPT,
    EPROTONOSUPPORT,
    ESOCKTNOSUPPORT,
    EOPNOTSUPP,
    EPFNOSUPPORT,
    EAFNOSUPPORT,
    EADDRINUSE,
    EADDRNOTAVAIL,
    ENETDOWN,
    ENETUNREACH,
    ENETRESET,
    ECONNABORTED,
    ECONNRESET,
    ENOBUFS,
    EISCONN,
    ENOTCONN,
    ESHUTDOWN,
    ETOOMANYREFS,
    ETIMEDOUT,
    ECONNREFUSED,
    EHOSTDOWN,
    EHOSTUNREACH,
    EALREADY,
    EINPROGRESS,
    ESTALE,
    EUCLEAN,
    ENOTNAM,
    ENAVAIL,
    EISNAM,
    EREMOTEIO,
    EDQUOT,
    ENOMEDIUM,
    EMEDIUMTYPE,
    ECANCELED,
    ENOKEY,
    EKEYEXPIRED,
    EKEYREVOKED,
    EKEYREJECTED,
    EOWNERDEAD,
    ENOTRECOVERABLE,
    ERFKILL,
    EHWPOISON,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_errnos_the_cage_produces() {
        assert_eq!(Errno(libc::EPERM).to_string(), "EPERM");
        assert_eq!(Errno(libc::EACCES).to_string(), "EACCES");
        assert_eq!(Errno(libc::EROFS).to_string(), "EROFS");
        assert_eq!(Errno(libc::ENOSYS).to_string(), "ENOSYS");
        assert_eq!(Errno(libc::EAGAIN).to_string(), "EAGAIN");
        assert_eq!(Errno(libc::EHWPOISON).to_string(), "EHWPOISON");
        assert_eq!(Errno(9999).to_string(), "errno 9999");
    }

    #[test]
    fn every_errno_up_to_the_last_one_has_a_name() {
        // Linux numbers its errnos densely from 1 to EHWPOISON, except 41 and 58 which were never assigned.
        for errno in 1..=libc::EHWPOISON {
            if errno == 41 || errno == 58 {
                assert_eq!(Errno(errno).name(), None);
            } else {
                assert!(Errno(errno).name().is_some(), "errno {errno} has no name");
            }
        }
    }
}
