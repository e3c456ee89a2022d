//! Small durable-file helpers shared by `esp` and `config_try`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// Makes a directory's entries (creates, renames, removals) durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `path` (which must not exist), writes `bytes` and fsyncs the file. The caller makes
/// the name durable with [`fsync_dir`] (or a rename followed by it).
pub(crate) fn write_new_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Why [`read_bounded`] failed.
#[derive(Debug)]
pub(crate) enum ReadBoundedError {
    Io(io::Error),
    TooLarge,
}

/// Reads a whole file, refusing files larger than `max_bytes` without reading them whole.
pub(crate) fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadBoundedError> {
    let file = File::open(path).map_err(ReadBoundedError::Io)?;
    let mut out = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(ReadBoundedError::Io)?;
    if out.len() as u64 > max_bytes {
        return Err(ReadBoundedError::TooLarge);
    }
    Ok(out)
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old or the new content:
/// write `dir/.name.tmp`, fsync, rename over, fsync the directory. Only for filesystems whose
/// rename-over is atomic (ext4 on the data partition) — never the FAT ESP.
pub(crate) fn replace_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    write_new_durable(&tmp, bytes)?;
    fs::rename(&tmp, dir.join(name))?;
    fsync_dir(dir)
}

/// Removes a file if present; returns whether it existed.
pub(crate) fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_bounded_refuses_oversized_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"12345").unwrap();
        assert_eq!(read_bounded(&p, 5).unwrap(), b"12345");
        assert!(matches!(
            read_bounded(&p, 4),
            Err(ReadBoundedError::TooLarge)
        ));
    }

    #[test]
    fn replace_atomically_overwrites_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        replace_atomically(dir.path(), "c", b"one").unwrap();
        replace_atomically(dir.path(), "c", b"two").unwrap();
        assert_eq!(fs::read(dir.path().join("c")).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("c")]);
    }
}
