//! Kernel attack surface the seccomp policy must close: io_uring, bpf, perf, keyrings, TIOCSTI,
//! open_by_handle_at and the x32 ABI. Every call is the raw syscall, so no libc wrapper can mask the result.

use std::mem::size_of;
use std::os::fd::{AsRawFd, OwnedFd};

use super::{ProbeError, setup_error};
use crate::args::ProbeArgs;
use crate::errno::{Errno, check};
use crate::report::{Attempts, Report};
use crate::sys;

fn fd_text(fd: OwnedFd) -> String {
    format!("fd {}", fd.as_raw_fd())
}

pub fn io_uring(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    // struct io_uring_params is 120 bytes of u32 fields; all zero asks for a plain ring.
    let mut params = [0u32; 30];
    // SAFETY: params is a writable 120-byte io_uring_params the kernel fills in.
    let ring =
        sys::own_fd(unsafe { libc::syscall(libc::SYS_io_uring_setup, 8u32, params.as_mut_ptr()) });
    let mut attempts = Attempts::new();
    attempts.record(
        "io_uring_setup(8)",
        ring.map(|fd| format!("ring {}", fd_text(fd))),
    );
    Ok(attempts.into_report())
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

/// The head of union bpf_attr as BPF_PROG_LOAD reads it, padded with zeros the kernel checks.
#[repr(C)]
struct BpfProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    zero: [u32; 19],
}

pub fn bpf(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    let mut attempts = Attempts::new();
    // map_type, key_size, value_size, max_entries, then zeros.
    let mut map_attr = [0u32; 30];
    map_attr[..4].copy_from_slice(&[BPF_MAP_TYPE_ARRAY, 4, 4, 1]);
    // SAFETY: map_attr is a readable bpf_attr of the size passed.
    let map = sys::own_fd(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            map_attr.as_ptr(),
            size_of::<[u32; 30]>(),
        )
    });
    attempts.record(
        "bpf(BPF_MAP_CREATE, array)",
        map.map(|fd| format!("map {}", fd_text(fd))),
    );

    // r0 = 0; exit — the smallest program the verifier accepts.
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c"GPL";
    let prog_attr = BpfProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        zero: [0; 19],
    };
    // SAFETY: prog_attr and the instructions and license it points to live across the call.
    let prog = sys::own_fd(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &prog_attr as *const BpfProgLoadAttr,
            size_of::<BpfProgLoadAttr>(),
        )
    });
    attempts.record(
        "bpf(BPF_PROG_LOAD, socket filter)",
        prog.map(|fd| format!("program {}", fd_text(fd))),
    );
    Ok(attempts.into_report())
}

const PERF_TYPE_SOFTWARE: u64 = 1;
const PERF_ATTR_SIZE_VER0: u64 = 64;
const PERF_FLAG_FD_CLOEXEC: libc::c_long = 8;
/// disabled | exclude_kernel | exclude_hv: the least privileged event there is.
const PERF_ATTR_FLAGS: u64 = 1 | (1 << 5) | (1 << 6);

pub fn perf_event_open(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    // perf_event_attr (VER0, 64 bytes): type and size share the first word, config (0 = CPU clock) is the
    // second, the flag bits are the sixth.
    let mut attr = [0u64; 8];
    attr[0] = PERF_TYPE_SOFTWARE | (PERF_ATTR_SIZE_VER0 << 32);
    attr[5] = PERF_ATTR_FLAGS;
    // SAFETY: attr is a readable 64-byte perf_event_attr; pid 0 = this process, cpu -1 = any, no group.
    let event = sys::own_fd(unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            0,
            -1,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    });
    let mut attempts = Attempts::new();
    attempts.record(
        "perf_event_open(software cpu-clock, self)",
        event.map(fd_text),
    );
    Ok(attempts.into_report())
}

const KEY_SPEC_PROCESS_KEYRING: libc::c_long = -2;
const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;

pub fn keyctl(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    let mut attempts = Attempts::new();
    let payload = b"docklock-probe";
    // SAFETY: type and description are NUL-terminated, payload is payload.len() readable bytes.
    let key = check(unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            c"docklock-probe".as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_PROCESS_KEYRING,
        )
    });
    attempts.record(
        "add_key(\"user\", process keyring)",
        key.map(|serial| format!("key {serial}")),
    );
    // SAFETY: KEYCTL_GET_KEYRING_ID takes integers only.
    let keyring = check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_SESSION_KEYRING,
            0,
        )
    });
    attempts.record(
        "keyctl(KEYCTL_GET_KEYRING_ID, session)",
        keyring.map(|serial| format!("keyring {serial}")),
    );
    Ok(attempts.into_report())
}

/// TIOCSTI through libc's ioctl, and as a raw syscall with bit 32 set in cmd: the kernel takes cmd as a
/// 32-bit int, so a filter that compares the whole 64-bit argument would let the second one through.
fn push_tiocsti(attempts: &mut Attempts, fd: libc::c_int, fd_name: &str) {
    let byte: u8 = 0;
    // SAFETY: TIOCSTI reads one byte from the pointer.
    let plain = check(libc::c_long::from(unsafe {
        libc::ioctl(fd, libc::TIOCSTI, &byte)
    }));
    attempts.record(
        format!("ioctl({fd_name}, TIOCSTI)"),
        plain.map(|_| "NUL byte pushed into the input".to_string()),
    );
    let high_cmd: u64 = libc::TIOCSTI | (1 << 32);
    // SAFETY: same call, the kernel truncates cmd to its low 32 bits.
    let high = check(unsafe { libc::syscall(libc::SYS_ioctl, fd, high_cmd, &byte as *const u8) });
    attempts.record(
        format!("syscall ioctl({fd_name}, TIOCSTI | 1<<32)"),
        high.map(|_| "NUL byte pushed into the input".to_string()),
    );
}

pub fn tiocsti(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    let mut attempts = Attempts::new();
    push_tiocsti(&mut attempts, 0, "fd 0");
    match open_pty_peer() {
        Ok((master, peer)) => {
            push_tiocsti(&mut attempts, peer.as_raw_fd(), "own pty");
            drop((master, peer));
        }
        Err(why) => attempts.note(format!("no pty of its own: {why}")),
    }
    Ok(attempts.into_report())
}

/// A fresh pty pair, so TIOCSTI can be tried on a real terminal that is not the caller's.
fn open_pty_peer() -> Result<(OwnedFd, OwnedFd), String> {
    let master = sys::open("/dev/ptmx", libc::O_RDWR | libc::O_NOCTTY, 0)
        .map_err(|errno| format!("open /dev/ptmx: {errno}"))?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int.
    check(libc::c_long::from(unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock)
    }))
    .map_err(|errno| format!("unlock pty: {errno}"))?;
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags and returns a new fd.
    let peer = sys::own_fd(libc::c_long::from(unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags)
    }))
    .map_err(|errno| format!("open pty peer: {errno}"))?;
    Ok((master, peer))
}

const MAX_HANDLE_BYTES: usize = 128;
const FILEID_INO32_GEN: i32 = 1;

#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_BYTES],
}

fn open_by_handle(mount_fd: &OwnedFd, handle: &FileHandle) -> Result<String, Errno> {
    // SAFETY: handle is a valid file_handle with handle_bytes of payload.
    let fd = sys::own_fd(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            handle as *const FileHandle,
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    })?;
    Ok(format!("opened as {}", fd_text(fd)))
}

pub fn open_by_handle_at(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    let root =
        sys::open("/", libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(setup_error("open /"))?;
    let mut attempts = Attempts::new();

    let mut own = FileHandle {
        handle_bytes: MAX_HANDLE_BYTES as u32,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_BYTES],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: own has room for MAX_HANDLE_BYTES as handle_bytes says; mount_id is a valid out-pointer.
    let named = check(unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            &mut own as *mut FileHandle,
            &mut mount_id as *mut libc::c_int,
            0,
        )
    });
    match named {
        Ok(_) => attempts.record(
            "open_by_handle_at(handle of /)",
            open_by_handle(&root, &own),
        ),
        Err(errno) => attempts.note(format!(
            "name_to_handle_at(/): {errno}, so only the forged handle is tried"
        )),
    }

    // The 2014 "shocker" container escape: ext4's root directory is inode 2, and generation 0 skips the check.
    let mut forged = FileHandle {
        handle_bytes: 8,
        handle_type: FILEID_INO32_GEN,
        f_handle: [0; MAX_HANDLE_BYTES],
    };
    forged.f_handle[0] = 2;
    attempts.record(
        "open_by_handle_at(forged inode 2)",
        open_by_handle(&root, &forged),
    );
    Ok(attempts.into_report())
}

#[cfg(target_arch = "x86_64")]
pub fn x32(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
    // SAFETY: getpid takes no arguments, whatever ABI serves it.
    let pid = check(unsafe { libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid) });
    let mut attempts = Attempts::new();
    attempts.record(
        "syscall(0x40000000 | SYS_getpid)",
        pid.map(|pid| format!("returned {pid}: the x32 ABI is reachable")),
    );
    if pid == Err(Errno(libc::ENOSYS)) {
        attempts.note(
            "ENOSYS: the kernel refuses x32 (no CONFIG_X86_X32_ABI, or a filter answers ENOSYS)",
        );
    }
    Ok(attempts.into_report())
}

#[cfg(not(target_arch = "x86_64"))]
pub fn x32(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    Err(ProbeError::Unsupported {
        what: "the x32 ABI exists only on x86_64",
    })
}
