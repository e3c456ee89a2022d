//! The kernel seam for file I/O.
//!
//! Every byte the store writes or reads goes through [`FileIo`], which has
//! three implementations:
//! - [`UringIo`]: io_uring, with a write and its `fdatasync` linked into one
//!   submission so a group commit costs one syscall;
//! - [`PosixIo`]: `pwritev`/`pread`/`fdatasync`, used when io_uring is not
//!   available (e.g. `kernel.io_uring_disabled=2`, seccomp, old kernels);
//! - [`FaultyIo`]: wraps another implementation and injects ENOSPC, EIO on
//!   sync, torn writes and read-only failures, so the store's error handling
//!   is tested without filling a real disk.
//!
//! [`select`] picks one at runtime and says why.

mod faulty;
mod posix;
mod uring;

use std::fmt;
use std::fs::File;
use std::io;
use std::sync::Arc;

pub use faulty::{FaultPlan, FaultyIo};
pub use posix::PosixIo;
pub use uring::UringIo;

/// Positioned, durable file I/O. Implementations must be usable from many
/// threads at once.
pub trait FileIo: Send + Sync + fmt::Debug {
    /// Short name for logs and metrics (`io_uring`, `posix`, `faulty(..)`).
    fn name(&self) -> &'static str;

    /// Write every byte of `bufs` (in order) at `offset`.
    fn write_all_at(&self, file: &File, offset: u64, bufs: &[&[u8]]) -> io::Result<()>;

    /// Make previously written data of `file` durable (`fdatasync`).
    fn sync_data(&self, file: &File) -> io::Result<()>;

    /// Write then make durable. io_uring links both into one submission; the
    /// default is the two calls in sequence.
    fn write_all_at_durable(&self, file: &File, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        self.write_all_at(file, offset, bufs)?;
        self.sync_data(file)
    }

    /// Make a file's data *and* metadata durable (`fsync`); used for
    /// directories after a create/rename/unlink.
    fn sync_all(&self, file: &File) -> io::Result<()>;

    /// Fill `buf` from `offset`; a short file is `UnexpectedEof`.
    fn read_exact_at(&self, file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Fill `buf` from `offset` only if the bytes are already in the page
    /// cache (`preadv2(RWF_NOWAIT)`): `Ok(false)` means "would block", so an
    /// async caller can serve hot data on its own thread and hand cold reads
    /// to a blocking pool. Never sleeps on the disk.
    fn read_cached_at(&self, file: &File, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        posix::read_nowait(file, offset, buf)
    }
}

/// Which implementation the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// io_uring when the kernel lets us, otherwise pread/pwrite.
    Auto,
    /// io_uring or fail.
    IoUring,
    /// pread/pwrite only.
    Posix,
}

/// The implementation chosen and the reason, for the startup log and
/// `/metrics`.
#[derive(Debug, Clone)]
pub struct Selection {
    pub io: Arc<dyn FileIo>,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("io_uring was required (store.io: io_uring) but is unavailable: {0}")]
    UringUnavailable(String),
}

/// Choose the I/O implementation for `mode`, probing io_uring by creating a
/// ring (the only reliable probe: sysctls, seccomp and LSMs can each refuse).
pub fn select(mode: IoMode) -> Result<Selection, SelectError> {
    select_with_probe(mode, UringIo::probe)
}

/// [`select`] with an injectable probe so the fallback decision is unit-tested
/// without changing the machine's sysctls.
pub fn select_with_probe(
    mode: IoMode,
    probe: impl FnOnce() -> Result<(), String>,
) -> Result<Selection, SelectError> {
    match mode {
        IoMode::Posix => Ok(Selection {
            io: Arc::new(PosixIo),
            reason: "posix requested by config".into(),
        }),
        IoMode::IoUring => match probe() {
            Ok(()) => Ok(Selection {
                io: Arc::new(UringIo::new()),
                reason: "io_uring requested by config".into(),
            }),
            Err(why) => Err(SelectError::UringUnavailable(why)),
        },
        IoMode::Auto => match probe() {
            Ok(()) => Ok(Selection {
                io: Arc::new(UringIo::new()),
                reason: "io_uring available".into(),
            }),
            Err(why) => Ok(Selection {
                io: Arc::new(PosixIo),
                reason: format!("io_uring unavailable ({why}); using pread/pwrite"),
            }),
        },
    }
}

/// Read `kernel.io_uring_disabled` to explain a failed probe (0 = allowed,
/// 1 = root/group only, 2 = disabled for everyone).
pub fn io_uring_disabled_sysctl() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_posix_when_probe_fails() {
        let sel = select_with_probe(IoMode::Auto, || Err("EPERM".into())).unwrap();
        assert_eq!(sel.io.name(), "posix");
        assert!(sel.reason.contains("EPERM"), "{}", sel.reason);
    }

    #[test]
    fn required_uring_fails_clearly() {
        let err =
            select_with_probe(IoMode::IoUring, || Err("disabled by sysctl".into())).unwrap_err();
        assert!(err.to_string().contains("disabled by sysctl"));
    }

    #[test]
    fn posix_never_probes() {
        let sel = select_with_probe(IoMode::Posix, || panic!("must not probe")).unwrap();
        assert_eq!(sel.io.name(), "posix");
    }

    /// Exercise every implementation against a real file.
    fn round_trip(io: &dyn FileIo) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let big = vec![7u8; 300_000];
        io.write_all_at_durable(&file, 0, &[b"hello ", b"world", &big])
            .unwrap();
        io.write_all_at(&file, 3, &[b"LO"]).unwrap();
        io.sync_data(&file).unwrap();
        let mut buf = [0u8; 11];
        io.read_exact_at(&file, 0, &mut buf).unwrap();
        assert_eq!(&buf, b"helLO world");
        let mut tail = vec![0u8; big.len()];
        io.read_exact_at(&file, 11, &mut tail).unwrap();
        assert_eq!(tail, big);
        let mut past = [0u8; 4];
        let err = io
            .read_exact_at(&file, 11 + big.len() as u64 - 2, &mut past)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let d = File::open(dir.path()).unwrap();
        io.sync_all(&d).unwrap();
    }

    #[test]
    fn cached_read_serves_hot_pages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![5u8; 8192]).unwrap();
        let file = File::open(&path).unwrap();
        let mut buf = [0u8; 100];
        // Just written, so cached: served without blocking.
        assert!(PosixIo.read_cached_at(&file, 4000, &mut buf).unwrap());
        assert_eq!(buf, [5u8; 100]);
        // Past the end is a short read: "would block" (caller falls back
        // to the blocking path, which reports EOF properly).
        assert!(!PosixIo.read_cached_at(&file, 8150, &mut buf).unwrap());
    }

    #[test]
    fn posix_round_trip() {
        round_trip(&PosixIo);
    }

    #[test]
    fn uring_round_trip() {
        // CI runs as root on a kernel with io_uring; when a developer's
        // machine forbids it the probe says so and we test the fallback above.
        match UringIo::probe() {
            Ok(()) => round_trip(&UringIo::new()),
            Err(why) => eprintln!("skipping io_uring round trip: {why}"),
        }
    }

    #[test]
    fn uring_used_from_many_threads() {
        if UringIo::probe().is_err() {
            return;
        }
        let io = Arc::new(UringIo::new());
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(dir.path().join("f"))
                .unwrap(),
        );
        let handles: Vec<_> = (0..4u8)
            .map(|t| {
                let io = io.clone();
                let file = file.clone();
                std::thread::spawn(move || {
                    for i in 0..50u64 {
                        let off = (t as u64 * 50 + i) * 8;
                        io.write_all_at(&file, off, &[&[t; 8]]).unwrap();
                        let mut b = [0u8; 8];
                        io.read_exact_at(&file, off, &mut b).unwrap();
                        assert_eq!(b, [t; 8]);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
