//! The few kernel calls aya 0.14 does not expose: BPF_PROG_TEST_RUN and the
//! bpffs check/mount.

use std::{
    ffi::CString,
    io,
    os::{fd::AsRawFd as _, fd::BorrowedFd, unix::ffi::OsStrExt as _},
    path::Path,
};

/// `BPF_PROG_TEST_RUN` from include/uapi/linux/bpf.h.
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_FS_MAGIC` from include/uapi/linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The `test` member of `union bpf_attr` (fields up to `batch_size`). The
/// kernel accepts a shorter attr than its own and zero-fills the rest.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad0: u32,
}

const _: () = assert!(size_of::<TestRunAttr>() == 80);

/// What one BPF_PROG_TEST_RUN returned.
pub(crate) struct TestRunRaw {
    pub(crate) retval: u32,
    /// Mean run time per repetition in nanoseconds, as the kernel measures it.
    pub(crate) duration_ns: u32,
}

/// Runs `prog` on a copy of `packet` `repeat` times in the kernel.
pub(crate) fn prog_test_run(
    prog: BorrowedFd<'_>,
    packet: &[u8],
    repeat: u32,
) -> io::Result<TestRunRaw> {
    let attr = test_run(prog, packet, repeat, 0, 0)?;
    Ok(TestRunRaw {
        retval: attr.retval,
        duration_ns: attr.duration,
    })
}

/// `BPF_F_TEST_XDP_LIVE_FRAMES`: frames the program redirects really leave.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// Runs XDP `prog` `repeat` times in live-frames mode, `batch_size` frames
/// per batch; what the program redirects is sent out of the target device.
/// Frames come from a page pool whose pages get `packet` copied in once and
/// are then recycled with only their pointers reset, so a program that
/// rewrites a field must write it every time.
pub(crate) fn prog_test_run_live(
    prog: BorrowedFd<'_>,
    packet: &[u8],
    repeat: u32,
    batch_size: u32,
) -> io::Result<()> {
    test_run(prog, packet, repeat, BPF_F_TEST_XDP_LIVE_FRAMES, batch_size).map(|_| ())
}

/// One BPF_PROG_TEST_RUN of `prog` on `packet` with `flags` and
/// `batch_size` (0 for the kernel's default); returns the attr as the kernel
/// left it (retval, duration).
fn test_run(
    prog: BorrowedFd<'_>,
    packet: &[u8],
    repeat: u32,
    flags: u32,
    batch_size: u32,
) -> io::Result<TestRunAttr> {
    let data_size_in =
        u32::try_from(packet.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in,
        data_in: packet.as_ptr() as u64,
        repeat,
        flags,
        batch_size,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a properly initialised prefix of `union bpf_attr`
    // for BPF_PROG_TEST_RUN that lives across the call; `data_in` points at
    // `packet`, which the kernel only reads (`data_size_in` bytes), and
    // `data_out`/`ctx_*` are null with zero sizes, so the kernel writes only
    // into `attr` itself. `prog` is a valid program fd borrowed for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            size_of::<TestRunAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

/// Whether `path` lies on a bpffs.
pub(crate) fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs is plain old data, valid when zeroed.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string and `stat` a writable
    // statfs that outlives the call.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_type == BPF_FS_MAGIC)
}

/// Mounts a bpffs on `target` (an existing directory).
pub(crate) fn mount_bpffs(target: &Path) -> io::Result<()> {
    let c_target = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fstype = c"bpf";
    // SAFETY: all pointers are NUL-terminated strings that outlive the call;
    // no mount data is passed.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c_target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
