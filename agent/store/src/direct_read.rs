//! Reading packed records that are not in the page cache with O_DIRECT.
//!
//! Why: a bulk reader (a CAR export) reads segments that the import wrote
//! with O_DIRECT, so they are not cached. A buffered read of such data
//! allocates page-cache pages, reads into them and copies them out: on our
//! 2-core VM ~1.03 s of system CPU per GiB, against ~0.25 s for an O_DIRECT
//! read straight into the caller's buffer (`dd` both ways). Records that
//! are cached keep the buffered read: copying them beats going to the disk.
//!
//! Opt-in (`StoreOptions::direct_reads`): without the kernel's readahead a
//! reader waits on the disk block by block, and on our Firecracker VM
//! direct reads stop at ~0.4-0.5 GB/s however big or parallel, while cold
//! buffered reads run at 1.3-2.1 GB/s; there it costs a CAR export more
//! throughput than the CPU it saves.
//!
//! Whether a record is cached is asked with `cachestat(2)` (Linux 6.5),
//! which only counts pages. A `preadv2(RWF_NOWAIT)` probe would answer too,
//! but on a miss the kernel starts readahead into the page cache, the very
//! work this avoids (checked on 6.18: after one EAGAIN, 256 KiB were cached).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::limits::{
    DIRECT_IO_ALIGN_BYTES, DIRECT_READ_ALIGN_BYTES_MAX, DIRECT_READ_CACHED_PERCENT_MAX,
};

/// `cachestat(2)`'s number: the same on every architecture (it came after
/// the tables were unified), and not yet in the libc crate for x86_64.
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Whether this store reads cold records with O_DIRECT: as opened, and
/// turned off for good (per store, so a refusing filesystem is not asked again on every
/// block) when the kernel lacks `cachestat`, or the filesystem refuses
/// O_DIRECT or reports an alignment we do not do.
#[derive(Debug)]
pub(crate) struct DirectReads {
    off: AtomicBool,
}

impl DirectReads {
    /// Off when the store was opened without direct reads.
    pub fn new(enabled: bool) -> Self {
        Self {
            off: AtomicBool::new(!enabled),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.off.load(Ordering::Relaxed)
    }

    pub fn turn_off(&self, why: &str) {
        if !self.off.swap(true, Ordering::Relaxed) {
            tracing::info!(%why, "store reads stay buffered (no O_DIRECT reads)");
        }
    }
}

/// A segment opened for O_DIRECT reads, with the alignment its filesystem
/// wants for file offsets, lengths and memory.
#[derive(Debug)]
pub(crate) struct DirectFile {
    pub file: File,
    pub align_bytes: u64,
}

/// Why a segment cannot be opened for direct reads.
#[derive(Debug)]
pub(crate) enum DirectOpenError {
    /// The filesystem does not do O_DIRECT reads (or not at an alignment
    /// we do): true of every segment of the store.
    Unsupported(String),
    /// This open failed (the segment was removed by compaction, too many
    /// open files): the buffered read takes over for this block.
    Io(io::Error),
}

/// Open `path` read-only with O_DIRECT and learn its alignment from
/// `statx(STATX_DIOALIGN)` (Linux 6.1), else [`DIRECT_IO_ALIGN_BYTES`].
pub(crate) fn open(path: &Path) -> Result<DirectFile, DirectOpenError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EINVAL) {
                DirectOpenError::Unsupported(format!("O_DIRECT open of {}: {e}", path.display()))
            } else {
                DirectOpenError::Io(e)
            }
        })?;
    let align_bytes = match dio_align_bytes(&file) {
        Some(0) => {
            return Err(DirectOpenError::Unsupported(format!(
                "{} reports no direct I/O support (statx)",
                path.display()
            )));
        }
        Some(a) => a,
        None => DIRECT_IO_ALIGN_BYTES,
    };
    if !align_bytes.is_power_of_two() || align_bytes > DIRECT_READ_ALIGN_BYTES_MAX {
        return Err(DirectOpenError::Unsupported(format!(
            "{} wants direct I/O aligned to {align_bytes} bytes (at most {DIRECT_READ_ALIGN_BYTES_MAX} done)",
            path.display()
        )));
    }
    Ok(DirectFile { file, align_bytes })
}

/// The larger of the memory and file-offset alignments `statx` reports;
/// `Some(0)` when the file cannot do direct I/O, `None` when the kernel or
/// filesystem does not say.
fn dio_align_bytes(file: &File) -> Option<u64> {
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a NUL-terminated empty string and AT_EMPTY_PATH
    // makes statx look at the fd, which `file` owns for the call; `stx` is
    // valid for writes of its size.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    if stx.stx_dio_offset_align == 0 {
        return Some(0);
    }
    Some(u64::from(
        stx.stx_dio_mem_align.max(stx.stx_dio_offset_align),
    ))
}

/// Whether the bytes `offset..offset + len` of `file` are cold enough to
/// read with O_DIRECT: at most [`DIRECT_READ_CACHED_PERCENT_MAX`] of their
/// pages cached. `Err` when the kernel has no `cachestat`.
pub(crate) fn mostly_uncached(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    let range = CachestatRange { off: offset, len };
    let mut stat = Cachestat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both valid for the
    // call and laid out as the kernel's structs; the fd is owned by `file`.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let page_bytes = page_size_bytes();
    let pages = (offset + len).div_ceil(page_bytes) - offset / page_bytes;
    Ok(stat.nr_cache * 100 <= pages * DIRECT_READ_CACHED_PERCENT_MAX)
}

fn page_size_bytes() -> u64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        DIRECT_IO_ALIGN_BYTES
    }
}

/// Where a record at `offset` of `len` bytes lands when read with
/// O_DIRECT: the file range `file_at..file_at + read_len` (both multiples
/// of `align_bytes`) covering it, and where the record starts within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AlignedRange {
    pub file_at: u64,
    pub read_len: usize,
    pub record_at: usize,
}

pub(crate) fn aligned_range(offset: u64, len: usize, align_bytes: u64) -> AlignedRange {
    assert!(align_bytes.is_power_of_two());
    let file_at = offset & !(align_bytes - 1);
    let end = (offset + len as u64).next_multiple_of(align_bytes);
    AlignedRange {
        file_at,
        read_len: (end - file_at) as usize,
        record_at: (offset - file_at) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_range_covers_the_record() {
        for (offset, len, align) in [
            (0u64, 1usize, 4096u64),
            (4096, 4096, 4096),
            (4095, 2, 4096),
            (12_345, 262_144 + 40, 4096),
            (1000, 24, 512),
        ] {
            let r = aligned_range(offset, len, align);
            assert_eq!(r.file_at % align, 0);
            assert_eq!(r.read_len as u64 % align, 0);
            assert_eq!(r.file_at + r.record_at as u64, offset);
            assert!(r.record_at + len <= r.read_len);
            // Never a whole block more than needed at either end.
            assert!((r.record_at as u64) < align);
            assert!(((r.read_len - r.record_at - len) as u64) < align);
        }
    }
}
