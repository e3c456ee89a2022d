//! The kernel seam: every cgroup filesystem operation (and the two process operations removal
//! needs) goes through [`CgroupFs`], so layout discovery, the files written for given limits,
//! usage parsing and removal are unit-tested on a temp dir ([`crate::fake::DirFs`]).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::constants::CGROUP_FILE_BYTES_MAX;

/// The operations the crate performs on cgroup filesystems. Paths are absolute host paths
/// (`/sys/fs/cgroup/...`); a fake maps them under its own root.
pub trait CgroupFs: fmt::Debug + Send + Sync {
    /// Creates one directory (not its parents). `AlreadyExists` when it exists.
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Removes one (cgroup) directory.
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Reads a whole file (bounded by [`CGROUP_FILE_BYTES_MAX`]).
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes `contents` to an existing file in a single write(2), as cgroup files require.
    fn write(&self, path: &Path, contents: &str) -> io::Result<()>;
    /// Whether the path exists (interface files appear only with their controller/kernel).
    fn exists(&self, path: &Path) -> bool;
    /// Sends SIGKILL to a process. A seam so a fake never signals a real process.
    fn kill(&self, pid: i32) -> io::Result<()>;
    /// Waits between polls of the kernel. A seam so a fake never sleeps.
    fn sleep(&self, duration: Duration);
    /// Opens an existing file now for a write later ([`Self::write_opened`]). cgroup v1 checks a
    /// `tasks` write against the credentials the file was opened with, so a process about to
    /// change its ids (a launcher entering a user namespace) opens first. The fake checks that
    /// the file exists and writes by path later.
    fn open_for_write(&self, path: &Path) -> io::Result<OpenedFile> {
        if self.exists(path) {
            Ok(OpenedFile {
                path: path.to_path_buf(),
                file: None,
            })
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist", path.display()),
            ))
        }
    }
    /// One write(2) of `contents` to a file from [`Self::open_for_write`].
    fn write_opened(&self, opened: &mut OpenedFile, contents: &str) -> io::Result<()> {
        self.write(&opened.path, contents)
    }
}

/// A cgroup file opened for a later write ([`CgroupFs::open_for_write`]).
#[derive(Debug)]
pub struct OpenedFile {
    pub path: PathBuf,
    /// The open file (the host); `None` for a fake, which writes by path.
    file: Option<File>,
}

/// The real thing: the host's cgroup filesystems and kill(2).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFs;

impl CgroupFs for HostFs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        read_bounded(File::open(path)?)
    }

    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        // No O_CREAT/O_TRUNC: cgroup interface files exist or the feature is missing.
        write_once(&mut OpenOptions::new().write(true).open(path)?, contents)
    }

    fn open_for_write(&self, path: &Path) -> io::Result<OpenedFile> {
        Ok(OpenedFile {
            path: path.to_path_buf(),
            file: Some(OpenOptions::new().write(true).open(path)?),
        })
    }

    fn write_opened(&self, opened: &mut OpenedFile, contents: &str) -> io::Result<()> {
        match opened.file.as_mut() {
            Some(file) => write_once(file, contents),
            None => self.write(&opened.path, contents),
        }
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn kill(&self, pid: i32) -> io::Result<()> {
        let pid = rustix::process::Pid::from_raw(pid).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("pid {pid} is not positive"),
            )
        })?;
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).map_err(io::Error::from)
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// One write(2) of `contents`: the kernel parses each write as one whole value, so a short write
/// would have applied a truncated value, which must not pass silently.
fn write_once(file: &mut File, contents: &str) -> io::Result<()> {
    let written = file.write(contents.as_bytes())?;
    if written != contents.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {written} of {} bytes", contents.len()),
        ));
    }
    Ok(())
}

/// Reads at most [`CGROUP_FILE_BYTES_MAX`] bytes; a longer file is an error, never a silent cut.
pub(crate) fn read_bounded(file: impl Read) -> io::Result<String> {
    let mut text = String::new();
    file.take(CGROUP_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > CGROUP_FILE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("file longer than {CGROUP_FILE_BYTES_MAX} bytes"),
        ));
    }
    Ok(text)
}
