//! The ptrace requests that read or write a stopped tracee's state, shared by the vDSO hiding,
//! the cage tracer and the virtual TSC. Each needs `pid` to be our tracee, stopped.

use rustix::io::Errno;

use crate::vdso::last_errno;

/// `PTRACE_GETSIGINFO`: the signal the tracee is stopped with. EINVAL for a group-stop of a
/// tracee that is not seized (ptrace(2), "Group-stop").
pub(crate) fn signal_info(pid: i32) -> Result<libc::siginfo_t, Errno> {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: PTRACE_GETSIGINFO writes one siginfo_t to `data`, which points at one.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGINFO,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            (&raw mut info).cast::<libc::c_void>(),
        )
    };
    if rc != 0 {
        return Err(Errno::from_raw_os_error(last_errno()));
    }
    Ok(info)
}

/// `PTRACE_GETREGS`: the tracee's general-purpose registers.
#[cfg(target_arch = "x86_64")]
pub(crate) fn registers(pid: i32) -> Result<libc::user_regs_struct, Errno> {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: PTRACE_GETREGS writes exactly one user_regs_struct to `data`, which points at one.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            (&raw mut regs).cast::<libc::c_void>(),
        )
    };
    if rc != 0 {
        return Err(Errno::from_raw_os_error(last_errno()));
    }
    Ok(regs)
}

/// `PTRACE_SETREGS`: replaces the tracee's general-purpose registers.
#[cfg(target_arch = "x86_64")]
pub(crate) fn set_registers(pid: i32, regs: &libc::user_regs_struct) -> Result<(), Errno> {
    // SAFETY: PTRACE_SETREGS reads exactly one user_regs_struct from `data`, which points at one.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGS,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::from_ref(regs).cast_mut().cast::<libc::c_void>(),
        )
    };
    if rc != 0 {
        return Err(Errno::from_raw_os_error(last_errno()));
    }
    Ok(())
}
