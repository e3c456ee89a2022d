//! Closing every file descriptor the workload was not declared to receive.

use std::os::fd::{AsRawFd, RawFd};

use rustix::fs::{Dir, Mode, OFlags};
use rustix::io::Errno;

/// Closes every open file descriptor of the calling process except those in `keep` (which need
/// not be open, sorted or unique), with `close_range(2)` over the gaps between them. Falls back to
/// [`close_fds_except_via_proc`] when the kernel has no `close_range` (before 5.9).
///
/// Any object in this process that owns a closed descriptor (a `File`, a socket) must not be used
/// afterwards: this is for the last steps before `execve`. Does not allocate unless it falls back.
/// A negative fd in `keep` is `EBADF`.
pub fn close_fds_except(keep: &[RawFd]) -> Result<(), Errno> {
    check_keep(keep)?;
    // Only the first close_range can report ENOSYS; the /proc walk then does the whole job.
    match for_each_gap(keep, close_range) {
        Err(Errno::NOSYS) => close_fds_except_via_proc(keep),
        other => other,
    }
}

/// Same as [`close_fds_except`], by listing `/proc/self/fd` and closing each descriptor not kept
/// (for kernels without `close_range`; needs procfs mounted in the caller's view). Allocates.
pub fn close_fds_except_via_proc(keep: &[RawFd]) -> Result<(), Errno> {
    check_keep(keep)?;
    let dir_fd = rustix::fs::open(
        "/proc/self/fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let listing_fd = dir_fd.as_raw_fd();
    let mut to_close = Vec::new();
    // Dir::new reads through this very descriptor (read_from would open a second one, which
    // would then be listed and closed under the reader).
    let mut dir = Dir::new(dir_fd)?;
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .ok()
            .and_then(|name| name.parse::<RawFd>().ok())
        else {
            continue; // "." and ".."
        };
        if fd != listing_fd && !keep.contains(&fd) {
            to_close.push(fd);
        }
    }
    drop(dir);
    for fd in to_close {
        // SAFETY: `fd` was open in this process when listed and no other thread runs here (the
        // caller is the single-threaded process about to exec), so it still names that
        // descriptor; objects owning it must not be used afterwards, as documented above.
        unsafe { rustix::io::close(fd) };
    }
    Ok(())
}

fn check_keep(keep: &[RawFd]) -> Result<(), Errno> {
    if keep.iter().any(|&fd| fd < 0) {
        Err(Errno::BADF)
    } else {
        Ok(())
    }
}

/// Calls `close(first, last)` for each maximal inclusive range of descriptor numbers in
/// `0..=u32::MAX` containing none of `keep` (all non-negative), in ascending order. Quadratic in
/// `keep.len()` so that the post-fork path needs no allocation; cages keep a handful of fds.
fn for_each_gap(
    keep: &[RawFd],
    mut close: impl FnMut(u32, u32) -> Result<(), Errno>,
) -> Result<(), Errno> {
    let mut next: u32 = 0;
    loop {
        let lowest_kept = keep
            .iter()
            .filter_map(|&fd| u32::try_from(fd).ok())
            .filter(|&fd| fd >= next)
            .min();
        match lowest_kept {
            Some(kept) => {
                if kept > next {
                    close(next, kept - 1)?;
                }
                // RawFd is i32, so kept + 1 cannot overflow u32.
                next = kept + 1;
            }
            None => return close(next, u32::MAX),
        }
    }
}

fn close_range(first: u32, last: u32) -> Result<(), Errno> {
    // SAFETY: close_range takes three integers and touches no memory of ours; closing descriptors
    // that live objects own is the documented contract of the callers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            libc::c_uint::from(first),
            libc::c_uint::from(last),
            libc::c_uint::from(0u8),
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(keep: &[RawFd]) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for_each_gap(keep, |a, b| {
            out.push((a, b));
            Ok(())
        })
        .expect("collecting gaps does not fail");
        out
    }

    #[test]
    fn gaps_cover_everything_but_the_kept_fds() {
        assert_eq!(gaps(&[]), vec![(0, u32::MAX)]);
        assert_eq!(gaps(&[0, 1, 2]), vec![(3, u32::MAX)]);
        assert_eq!(gaps(&[2, 0, 1]), vec![(3, u32::MAX)]);
        assert_eq!(gaps(&[5]), vec![(0, 4), (6, u32::MAX)]);
        assert_eq!(
            gaps(&[0, 2, 2, 10, 11, 40]),
            vec![(1, 1), (3, 9), (12, 39), (41, u32::MAX)]
        );
        assert_eq!(
            gaps(&[RawFd::MAX]),
            vec![
                (0, RawFd::MAX as u32 - 1),
                (RawFd::MAX as u32 + 1, u32::MAX)
            ]
        );
    }

    #[test]
    fn a_failing_close_stops_the_walk() {
        let mut calls = 0;
        let result = for_each_gap(&[3], |_, _| {
            calls += 1;
            Err(Errno::PERM)
        });
        assert_eq!(result, Err(Errno::PERM));
        assert_eq!(calls, 1);
    }

    #[test]
    fn negative_fds_are_rejected_before_closing_anything() {
        assert_eq!(close_fds_except(&[0, -1]), Err(Errno::BADF));
        assert_eq!(close_fds_except_via_proc(&[-5]), Err(Errno::BADF));
    }
}
