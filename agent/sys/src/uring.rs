//! io_uring implementation.
//!
//! A ring is not `Sync`, and sharing one behind a lock would serialise every
//! reader; instead each thread lazily gets its own small ring (thread-local).
//! Operations are synchronous from the caller's point of view (submit, wait):
//! the win is that a group commit's write and `fdatasync` travel in one
//! `io_uring_enter`, and a big read is one submission.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

use io_uring::{IoUring, opcode, squeue, types};

use crate::FileIo;

/// Entries per thread-local ring: we never have more than a write + sync (or
/// one read) in flight per thread, so a small ring keeps memory bounded.
const RING_ENTRIES: u32 = 8;
/// iovecs per writev submission (Linux IOV_MAX is 1024).
const IOVECS_PER_WRITE_MAX: usize = 1024;

thread_local! {
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
    static NEXT_GENERATION: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[derive(Debug, Default)]
pub struct UringIo {
    _private: (),
}

impl UringIo {
    pub fn new() -> Self {
        Self { _private: () }
    }

    /// Try to create a ring; the error says why not (sysctl, seccomp, ENOSYS).
    pub fn probe() -> Result<(), String> {
        match IoUring::new(2) {
            Ok(_) => Ok(()),
            Err(e) => {
                let hint = match crate::io_uring_disabled_sysctl() {
                    Some(v) if v > 0 => format!("; kernel.io_uring_disabled={v}"),
                    _ => String::new(),
                };
                Err(format!("io_uring_setup failed: {e}{hint}"))
            }
        }
    }

    fn with_ring<T>(f: impl FnOnce(&mut IoUring) -> io::Result<T>) -> io::Result<T> {
        RING.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(IoUring::new(RING_ENTRIES)?);
            }
            let ring = slot.as_mut().expect("ring was just created");
            f(ring)
        })
    }

    /// Push entries and wait for all their completions; returns each result
    /// in submission order (negative = -errno). Entries carry `user_data`
    /// 0..n; each call tags them with a fresh per-thread generation in the
    /// high bits so a completion can never be credited to the wrong call.
    fn run(ring: &mut IoUring, entries: &[squeue::Entry]) -> io::Result<Vec<i32>> {
        let generation = NEXT_GENERATION.with(|g| {
            let v = g.get().wrapping_add(1);
            g.set(v);
            v
        });
        // SAFETY: every entry points at buffers/iovecs owned by the caller's
        // stack frame, which stays alive until we have reaped all completions
        // below: this function never returns while any is in flight (an
        // unrecoverable ring error aborts the process instead).
        unsafe {
            let mut sq = ring.submission();
            for e in entries {
                let tagged = e.clone().user_data((generation << 8) | e.get_user_data());
                sq.push(&tagged)
                    .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            }
        }
        let mut results = vec![0i32; entries.len()];
        let mut seen = 0usize;
        while seen < entries.len() {
            match ring.submit_and_wait(entries.len() - seen) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY)
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // The kernel may still write into our caller's buffers:
                    // returning would be a use-after-free.
                    eprintln!("fatal: io_uring_enter failed with operations in flight: {e}");
                    std::process::abort();
                }
            }
            for cqe in ring.completion() {
                let data = cqe.user_data();
                if data >> 8 != generation {
                    continue;
                }
                let idx = (data & 0xff) as usize;
                if idx < results.len() {
                    results[idx] = cqe.result();
                    seen += 1;
                }
            }
        }
        Ok(results)
    }

    /// One writev (optionally linked to an fdatasync); returns bytes written.
    fn writev_once(file: &File, offset: u64, bufs: &[&[u8]], sync: bool) -> io::Result<usize> {
        let iovecs: Vec<libc::iovec> = bufs
            .iter()
            .take(IOVECS_PER_WRITE_MAX)
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let wanted: usize = iovecs.iter().map(|v| v.iov_len).sum();
        let fd = types::Fd(file.as_raw_fd());
        let mut entries = vec![];
        let write = opcode::Writev::new(fd, iovecs.as_ptr(), iovecs.len() as u32)
            .offset(offset)
            .build()
            .user_data(0);
        let covers_all = iovecs.len() == bufs.len();
        if sync && covers_all {
            entries.push(write.flags(squeue::Flags::IO_LINK));
            entries.push(
                opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .user_data(1),
            );
        } else {
            entries.push(write);
        }
        let results = Self::with_ring(|ring| Self::run(ring, &entries))?;
        if results[0] < 0 {
            return Err(io::Error::from_raw_os_error(-results[0]));
        }
        let written = results[0] as usize;
        if entries.len() == 2 && written == wanted {
            // A cancelled sync (-ECANCELED) only happens after a short write,
            // handled by the caller's retry; any other error is real.
            if results[1] < 0 {
                return Err(io::Error::from_raw_os_error(-results[1]));
            }
        }
        Ok(written)
    }

    fn write_loop(file: &File, offset: u64, bufs: &[&[u8]], sync: bool) -> io::Result<()> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut done = 0usize;
        let mut synced = false;
        while done < total || (sync && !synced) {
            // Rebuild the remaining slice list after a short write.
            let mut remaining: Vec<&[u8]> = Vec::with_capacity(bufs.len());
            let mut skip = done;
            for b in bufs {
                if skip >= b.len() {
                    skip -= b.len();
                    continue;
                }
                remaining.push(&b[skip..]);
                skip = 0;
            }
            if remaining.is_empty() {
                // Everything written but the linked sync was cancelled.
                UringIo::new().fsync(file, true)?;
                break;
            }
            let want_now: usize = remaining
                .iter()
                .take(IOVECS_PER_WRITE_MAX)
                .map(|b| b.len())
                .sum();
            let n = Self::writev_once(file, offset + done as u64, &remaining, sync)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "io_uring write returned 0",
                ));
            }
            done += n;
            if sync && n == want_now && remaining.len() <= IOVECS_PER_WRITE_MAX {
                synced = true;
            }
        }
        Ok(())
    }

    fn fsync(&self, file: &File, datasync: bool) -> io::Result<()> {
        let fd = types::Fd(file.as_raw_fd());
        let flags = if datasync {
            types::FsyncFlags::DATASYNC
        } else {
            types::FsyncFlags::empty()
        };
        let entry = opcode::Fsync::new(fd).flags(flags).build().user_data(0);
        let res = Self::with_ring(|ring| Self::run(ring, &[entry]))?;
        if res[0] < 0 {
            return Err(io::Error::from_raw_os_error(-res[0]));
        }
        Ok(())
    }
}

impl FileIo for UringIo {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn write_all_at(&self, file: &File, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        Self::write_loop(file, offset, bufs, false)
    }

    fn write_all_at_durable(&self, file: &File, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        Self::write_loop(file, offset, bufs, true)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.fsync(file, true)
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        self.fsync(file, false)
    }

    fn read_exact_at(&self, file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let fd = types::Fd(file.as_raw_fd());
        let mut done = 0usize;
        while done < buf.len() {
            let rest = &mut buf[done..];
            // Reads larger than u32::MAX are split; the kernel may also
            // return short reads, which we continue from.
            let len = rest.len().min(u32::MAX as usize) as u32;
            let entry = opcode::Read::new(fd, rest.as_mut_ptr(), len)
                .offset(offset + done as u64)
                .build()
                .user_data(0);
            let res = Self::with_ring(|ring| Self::run(ring, &[entry]))?;
            match res[0] {
                n if n < 0 => return Err(io::Error::from_raw_os_error(-n)),
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file ends before offset {}", offset + buf.len() as u64),
                    ));
                }
                n => done += n as usize,
            }
        }
        Ok(())
    }
}
