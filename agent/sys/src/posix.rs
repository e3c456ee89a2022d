//! pread/pwrite/fdatasync: the fallback when io_uring is unavailable.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use crate::FileIo;

#[derive(Debug, Clone, Copy, Default)]
pub struct PosixIo;

impl FileIo for PosixIo {
    fn name(&self) -> &'static str {
        "posix"
    }

    fn write_all_at(&self, file: &File, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        let mut off = offset;
        for buf in bufs {
            file.write_all_at(buf, off)?;
            off += buf.len() as u64;
        }
        Ok(())
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        // SAFETY: fdatasync only reads the fd number; the File outlives the call.
        let rc = unsafe { libc::fdatasync(file.as_raw_fd()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }

    fn read_exact_at(&self, file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        file.read_exact_at(buf, offset)
    }
}

/// One `preadv2(RWF_NOWAIT)`; a short read counts as "would block" (the
/// rest is not cached), as does EAGAIN.
pub(crate) fn read_nowait(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
    if buf.is_empty() {
        return Ok(true);
    }
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the iovec points at `buf`, which is valid for writes of its
    // length for the whole call; the fd is owned by `file`.
    let n = unsafe {
        libc::preadv2(
            file.as_raw_fd(),
            &iov,
            1,
            offset as libc::off_t,
            libc::RWF_NOWAIT,
        )
    };
    if n < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) => Ok(false),
            _ => Err(err),
        };
    }
    Ok(n as usize == buf.len())
}
