//! Writing results into the memory of a task that is blocked in a seccomp notification.
//!
//! Why `/proc/<pid>/mem` and not `process_vm_writev`: both name the task by pid, and the pid of a
//! notification can be reused once its task is killed and reaped, so a write by pid could land
//! in an unrelated process (as root, any process on the host). Opening `/proc/<pid>/mem` (and
//! `/proc/<pid>/maps`) pins the memory of whichever process had the pid at that moment; checking
//! SECCOMP_IOCTL_NOTIF_ID_VALID *afterwards* proves that this was still our caller, blocked in
//! the call (seccomp_unotify(2), "Caveats regarding the use of `/proc/[tid]/mem`"). Every later
//! read and write goes to that pinned memory, whatever happens to the pid.
//!
//! Why the maps check: writes through `/proc/<pid>/mem` are "forced" (FOLL_FORCE), so they would
//! succeed on the caller's read-only private mappings (its code, for example), where the kernel's
//! own `copy_to_user` fails with EFAULT. The target range is therefore checked to lie in writable
//! mappings first (PROCMAP_QUERY on Linux 6.11+, else `/proc/<pid>/maps` text), and the emulated
//! call fails with EFAULT exactly where the real one would.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::supervise::Notification;

/// Memory of the caller of a notification, as a handler writes results into it.
pub trait CallerMemory {
    /// Writes `bytes` at `address` in the caller's address space, as the kernel's
    /// `copy_to_user` would: all of it, into writable memory, or [`MemoryError::Fault`].
    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), MemoryError>;
}

/// Why a write into the caller's memory did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The range is not (entirely) writable memory of the caller: the real call would fail
    /// with EFAULT.
    #[error("{len} bytes at {address:#x} are not writable memory of the caller")]
    Fault { address: u64, len: usize },
    /// The caller was killed, or its notification is no longer valid: nobody waits for an
    /// answer any more.
    #[error("the caller is gone (its notification is no longer valid)")]
    Gone,
    /// The supervisor could not reach the caller's memory (no permission, no /proc): a setup
    /// problem, not the caller's doing.
    #[error("{what} for pid {pid} failed: {source}")]
    Unavailable {
        pid: u32,
        what: &'static str,
        source: io::Error,
    },
}

/// The real [`CallerMemory`] of a notification's caller (see the module docs).
#[derive(Debug)]
pub struct ProcessMemory<'a> {
    notification: &'a Notification<'a>,
    opened: Option<Opened>,
}

#[derive(Debug)]
struct Opened {
    mem: File,
    maps: File,
}

impl<'a> ProcessMemory<'a> {
    pub(crate) fn new(notification: &'a Notification<'a>) -> ProcessMemory<'a> {
        ProcessMemory {
            notification,
            opened: None,
        }
    }

    /// Opens (once) mem and maps of the caller, then proves they are the caller's.
    fn open(&mut self) -> Result<&Opened, MemoryError> {
        if self.opened.is_none() {
            let pid = self.notification.pid;
            if pid == 0 {
                return Err(MemoryError::Unavailable {
                    pid,
                    what: "finding the caller (not visible in the supervisor's pid namespace)",
                    source: io::Error::from_raw_os_error(libc::ESRCH),
                });
            }
            let mem = open_proc(
                OpenOptions::new().read(true).write(true),
                pid,
                "mem",
                "opening /proc/<pid>/mem",
            )?;
            let maps = open_proc(
                OpenOptions::new().read(true),
                pid,
                "maps",
                "opening /proc/<pid>/maps",
            )?;
            // After the opens: the files are the memory of our caller only if the caller is
            // still blocked in this notification now.
            if !self.notification.is_valid() {
                return Err(MemoryError::Gone);
            }
            self.opened = Some(Opened { mem, maps });
        }
        self.opened.as_ref().ok_or(MemoryError::Gone)
    }
}

fn open_proc(
    options: &OpenOptions,
    pid: u32,
    file: &str,
    what: &'static str,
) -> Result<File, MemoryError> {
    options
        .open(format!("/proc/{pid}/{file}"))
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ENOENT | libc::ESRCH) => MemoryError::Gone,
            _ => MemoryError::Unavailable { pid, what, source },
        })
}

impl CallerMemory for ProcessMemory<'_> {
    fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), MemoryError> {
        let len = bytes.len();
        let fault = MemoryError::Fault { address, len };
        let Some(end) = u64::try_from(len)
            .ok()
            .and_then(|len| address.checked_add(len))
        else {
            return Err(fault);
        };
        if len == 0 {
            return Ok(());
        }
        let pid = self.notification.pid;
        let opened = self.open()?;
        let unavailable = |what, source| MemoryError::Unavailable { pid, what, source };
        if !range_is_writable(&opened.maps, address, end)
            .map_err(|source| unavailable("reading /proc/<pid>/maps", source))?
        {
            return Err(fault);
        }
        match opened.mem.write_at(bytes, address) {
            Ok(written) if written == len => Ok(()),
            // Zero bytes: the process exited after the check (its memory is gone) or the pages
            // went away; short: the range was unmapped meanwhile. EFAULT/EIO likewise.
            Ok(_) => Err(fault),
            Err(err) if matches!(err.raw_os_error(), Some(libc::EFAULT | libc::EIO)) => Err(fault),
            Err(source) => Err(unavailable("writing /proc/<pid>/mem", source)),
        }
    }
}

/// Whether [address, end) lies entirely in writable mappings of the process whose maps file
/// this is. Mappings that abut are walked one after the other.
fn range_is_writable(maps: &File, address: u64, end: u64) -> io::Result<bool> {
    if PROCMAP_QUERY_SUPPORT.load(Ordering::Relaxed) != QUERY_UNSUPPORTED {
        match range_is_writable_by_query(maps, address, end) {
            Ok(writable) => {
                PROCMAP_QUERY_SUPPORT.store(QUERY_SUPPORTED, Ordering::Relaxed);
                return Ok(writable);
            }
            Err(err)
                if matches!(err.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL))
                    && PROCMAP_QUERY_SUPPORT.load(Ordering::Relaxed) == QUERY_UNKNOWN =>
            {
                PROCMAP_QUERY_SUPPORT.store(QUERY_UNSUPPORTED, Ordering::Relaxed);
            }
            Err(err) => return Err(err),
        }
    }
    let mut reader = BufReader::new(maps);
    reader.seek(SeekFrom::Start(0))?;
    range_is_writable_in_maps_text(reader.lines(), address, end)
}

const QUERY_UNKNOWN: u8 = 0;
const QUERY_SUPPORTED: u8 = 1;
const QUERY_UNSUPPORTED: u8 = 2;
/// Whether this kernel has PROCMAP_QUERY (learnt on first use).
static PROCMAP_QUERY_SUPPORT: AtomicU8 = AtomicU8::new(QUERY_UNKNOWN);

/// `struct procmap_query` (include/uapi/linux/fs.h, Linux 6.11).
#[repr(C)]
#[derive(Debug, Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

const PROCMAP_QUERY_SIZE_BYTES: usize = 104;
const _: () = assert!(std::mem::size_of::<ProcmapQuery>() == PROCMAP_QUERY_SIZE_BYTES);
/// _IOWR(PROCFS_IOCTL_MAGIC 'f', 17, struct procmap_query).
const PROCMAP_QUERY: libc::c_ulong =
    (3 << 30) | ((PROCMAP_QUERY_SIZE_BYTES as libc::c_ulong) << 16) | (0x66 << 8) | 17;
const PROCMAP_QUERY_VMA_WRITABLE: u64 = 0x02;
/// Mappings walked at most for one range; results are at most a few pages, so more means the
/// answers make no sense.
const QUERY_STEPS_MAX: usize = 64;

fn range_is_writable_by_query(maps: &File, address: u64, end: u64) -> io::Result<bool> {
    let mut cursor = address;
    for _ in 0..QUERY_STEPS_MAX {
        let mut query = ProcmapQuery {
            size: PROCMAP_QUERY_SIZE_BYTES as u64,
            query_addr: cursor,
            ..ProcmapQuery::default()
        };
        // SAFETY: PROCMAP_QUERY reads and writes one struct procmap_query, whose size is in
        // `size`; name and build-id output are off (sizes 0), so no other memory is written.
        let rc = unsafe { libc::ioctl(maps.as_raw_fd(), PROCMAP_QUERY, &raw mut query) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            // ENOENT: no mapping covers the address.
            return if err.raw_os_error() == Some(libc::ENOENT) {
                Ok(false)
            } else {
                Err(err)
            };
        }
        let covers = query.vma_start <= cursor && cursor < query.vma_end;
        if !covers || query.vma_flags & PROCMAP_QUERY_VMA_WRITABLE == 0 {
            return Ok(false);
        }
        if query.vma_end >= end {
            return Ok(true);
        }
        cursor = query.vma_end;
    }
    Ok(false)
}

/// The same check over `/proc/<pid>/maps` lines ("start-end perms offset dev inode path", sorted
/// by address).
fn range_is_writable_in_maps_text(
    lines: impl Iterator<Item = io::Result<String>>,
    address: u64,
    end: u64,
) -> io::Result<bool> {
    let mut cursor = address;
    for line in lines {
        let line = line?;
        let (start, stop, writable) = parse_maps_line(&line).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected /proc/<pid>/maps line {line:?}"),
            )
        })?;
        if stop <= cursor {
            continue;
        }
        if start > cursor || !writable {
            return Ok(false);
        }
        if stop >= end {
            return Ok(true);
        }
        cursor = stop;
    }
    Ok(false)
}

fn parse_maps_line(line: &str) -> Option<(u64, u64, bool)> {
    let mut fields = line.split_ascii_whitespace();
    let (start, stop) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let stop = u64::from_str_radix(stop, 16).ok()?;
    (start < stop).then_some((start, stop, perms.as_bytes().get(1) == Some(&b'w')))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0a0000000-55d0a0001000 r--p 00000000 08:01 123 /usr/bin/probe
55d0a0001000-55d0a0002000 r-xp 00001000 08:01 123 /usr/bin/probe
55d0a0003000-55d0a0004000 rw-p 00003000 08:01 123 /usr/bin/probe
55d0a0004000-55d0a0006000 rw-p 00000000 00:00 0 [heap]
7ffc10000000-7ffc10021000 rw-p 00000000 00:00 0 [stack]
7ffc10100000-7ffc10104000 r--p 00000000 00:00 0 [vvar]
";

    fn writable(address: u64, len: u64) -> bool {
        let lines = MAPS.lines().map(|l| Ok(l.to_string()));
        range_is_writable_in_maps_text(lines, address, address + len).expect("parses")
    }

    #[test]
    fn maps_text_check_matches_what_copy_to_user_could_write() {
        assert!(writable(0x55d0_a000_3000, 16));
        assert!(writable(0x7ffc_1002_0ff0, 16), "last 16 bytes of the stack");
        // Across two abutting writable mappings.
        assert!(writable(0x55d0_a000_3ff8, 16));
        // Read-only data, code, the vvar page, a gap, past the end of a mapping.
        assert!(!writable(0x55d0_a000_0000, 16));
        assert!(!writable(0x55d0_a000_1000, 8));
        assert!(!writable(0x7ffc_1010_0000, 16));
        assert!(!writable(0x55d0_a000_2000, 8), "unmapped gap");
        assert!(!writable(0x55d0_a000_2ff8, 16), "starts in the gap");
        assert!(!writable(0x7ffc_1002_0ff8, 16), "runs off the stack");
        assert!(!writable(0, 16), "null");
        assert!(!writable(0xffff_ffff_ffff_0000, 16), "beyond every mapping");
    }

    #[test]
    fn maps_text_garbage_is_an_error_not_a_panic() {
        let lines = ["zzzz-1000 rw-p 0 0 0"].map(|l| Ok(l.to_string()));
        assert!(range_is_writable_in_maps_text(lines.into_iter(), 0, 8).is_err());
        assert_eq!(parse_maps_line("2000-1000 rw-p"), None, "end before start");
        assert_eq!(parse_maps_line(""), None);
        assert_eq!(parse_maps_line("1000-2000"), None);
        assert_eq!(
            parse_maps_line("1000-2000 r"),
            Some((0x1000, 0x2000, false))
        );
    }

    #[test]
    fn the_real_check_agrees_with_this_process_maps() {
        // Against our own memory, through whichever path this kernel supports.
        let maps = File::open("/proc/self/maps").expect("open maps");
        let on_stack = [0_u8; 64];
        let address = on_stack.as_ptr() as u64;
        assert!(range_is_writable(&maps, address, address + 64).expect("check"));
        let code = parse_maps_line as fn(&str) -> Option<(u64, u64, bool)> as usize as u64;
        assert!(!range_is_writable(&maps, code, code + 16).expect("check"));
        assert!(!range_is_writable(&maps, 0, 16).expect("check"));
        // The text fallback says the same.
        let text = || BufReader::new(File::open("/proc/self/maps").expect("maps")).lines();
        assert!(range_is_writable_in_maps_text(text(), address, address + 64).expect("text"));
        assert!(!range_is_writable_in_maps_text(text(), code, code + 16).expect("text"));
    }
}
