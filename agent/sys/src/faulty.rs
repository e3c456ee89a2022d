//! Fault injection for tests: the disk fills up, a sync fails, a write is
//! torn, the filesystem turns read-only — each on demand, deterministically.

use std::fs::File;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::FileIo;

/// What to break next. Counters count down; `None` means never.
#[derive(Debug, Default, Clone)]
pub struct FaultPlan {
    /// Writes succeed until this many more bytes were written, then the
    /// write that crosses the limit writes what fits and fails with ENOSPC.
    pub write_bytes_left: Option<u64>,
    /// The next N syncs succeed, the one after fails with EIO.
    pub syncs_before_eio: Option<u32>,
    /// Every write fails with EROFS.
    pub read_only: bool,
    /// Every read fails with EIO.
    pub reads_fail: bool,
}

#[derive(Debug, Clone)]
pub struct FaultyIo {
    inner: Arc<dyn FileIo>,
    plan: Arc<Mutex<FaultPlan>>,
}

impl FaultyIo {
    pub fn new(inner: Arc<dyn FileIo>) -> Self {
        Self {
            inner,
            plan: Arc::new(Mutex::new(FaultPlan::default())),
        }
    }

    /// Replace the plan; takes effect for the next operation.
    pub fn set_plan(&self, plan: FaultPlan) {
        *self.plan.lock() = plan;
    }

    pub fn plan(&self) -> FaultPlan {
        self.plan.lock().clone()
    }
}

impl FileIo for FaultyIo {
    fn name(&self) -> &'static str {
        "faulty"
    }

    fn write_all_at(&self, file: &File, offset: u64, bufs: &[&[u8]]) -> io::Result<()> {
        let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let allowed = {
            let mut plan = self.plan.lock();
            if plan.read_only {
                return Err(io::Error::from_raw_os_error(libc::EROFS));
            }
            match plan.write_bytes_left {
                None => total,
                Some(left) => {
                    let ok = left.min(total);
                    plan.write_bytes_left = Some(left - ok);
                    ok
                }
            }
        };
        if allowed == total {
            return self.inner.write_all_at(file, offset, bufs);
        }
        // Torn write: the prefix that "fit" really reaches the file, exactly
        // as a full disk leaves a partial record behind.
        let mut left = allowed as usize;
        let mut prefix: Vec<&[u8]> = vec![];
        for b in bufs {
            if left == 0 {
                break;
            }
            let n = left.min(b.len());
            prefix.push(&b[..n]);
            left -= n;
        }
        self.inner.write_all_at(file, offset, &prefix)?;
        Err(io::Error::from_raw_os_error(libc::ENOSPC))
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        {
            let mut plan = self.plan.lock();
            if let Some(n) = plan.syncs_before_eio {
                if n == 0 {
                    plan.syncs_before_eio = None;
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
                plan.syncs_before_eio = Some(n - 1);
            }
        }
        self.inner.sync_data(file)
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        self.inner.sync_all(file)
    }

    fn read_exact_at(&self, file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if self.plan.lock().reads_fail {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.read_exact_at(file, offset, buf)
    }

    fn read_cached_at(&self, file: &File, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        if self.plan.lock().reads_fail {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.read_cached_at(file, offset, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PosixIo;

    #[test]
    fn enospc_tears_the_write_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("f"))
            .unwrap();
        let io = FaultyIo::new(Arc::new(PosixIo));
        io.set_plan(FaultPlan {
            write_bytes_left: Some(5),
            ..Default::default()
        });
        let err = io.write_all_at(&file, 0, &[b"abc", b"defgh"]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"abcde");
        // The disk stays full.
        assert!(io.write_all_at(&file, 5, &[b"x"]).is_err());
    }

    #[test]
    fn sync_fails_once_after_n() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let io = FaultyIo::new(Arc::new(PosixIo));
        io.set_plan(FaultPlan {
            syncs_before_eio: Some(1),
            ..Default::default()
        });
        io.sync_data(&file).unwrap();
        assert_eq!(
            io.sync_data(&file).unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        io.sync_data(&file).unwrap();
    }

    #[test]
    fn read_only_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let io = FaultyIo::new(Arc::new(PosixIo));
        io.set_plan(FaultPlan {
            read_only: true,
            ..Default::default()
        });
        assert_eq!(
            io.write_all_at(&file, 0, &[b"x"])
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EROFS)
        );
    }
}
