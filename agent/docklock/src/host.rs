//! Host paths the cage is built from, resolved once into fds.
//!
//! config.json is untrusted: `root.path` and bind sources may contain `..` or lead through
//! symlinks, and the bundle directory may be changed by its owner while the launcher works. So
//! the bundle directory is opened once (O_PATH, the last component not followed), every path
//! the bundle names is resolved *beneath* it with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
//! — a `..` or a symlink that leads out fails with EXDEV — and from then on only the fds are used.
//! Bind sources outside the bundle are allowed only beneath a directory the operator listed
//! (`RunOptions::bind_allow`), resolved the same way beneath that directory.

use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Opens a directory the operator named (the bundle, an allowlisted directory): O_PATH, and the
/// last component must not be a symlink (a bundle path swapped for a symlink is refused).
pub(crate) fn open_dir_nofollow(path: &Path) -> Result<OwnedFd, Errno> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Resolves `relative` beneath `dir`: `..` and symlinks are followed only while they stay inside
/// (EXDEV otherwise), magic links (/proc/*/fd) never. Returns an O_PATH fd.
pub(crate) fn resolve_beneath(
    dir: &OwnedFd,
    relative: &Path,
    directory: bool,
) -> Result<OwnedFd, Errno> {
    let relative = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if directory {
        flags |= OFlags::DIRECTORY;
    }
    rustix::fs::openat2(
        dir,
        relative,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    )
}

/// `path` relative to `base` when `path` is lexically `base` or below it (`.` components and
/// repeated slashes ignored; `..` kept, for openat2 to judge). None otherwise.
pub(crate) fn lexically_below(base: &Path, path: &Path) -> Option<PathBuf> {
    fn clean(p: &Path) -> Vec<Component<'_>> {
        p.components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect()
    }
    let base = clean(base);
    let path = clean(path);
    if path.len() < base.len() || path[..base.len()] != base[..] {
        return None;
    }
    Some(path[base.len()..].iter().collect())
}

/// Why a bind source was refused (the caller adds the field name).
pub(crate) fn errno_text(errno: Errno) -> String {
    if errno == Errno::XDEV {
        "a `..` or a symlink leads outside the directory it must stay in".to_owned()
    } else {
        std::io::Error::from_raw_os_error(errno.raw_os_error()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexically_below_keeps_dotdot_for_openat2() {
        let base = Path::new("/b/bundle");
        assert_eq!(
            lexically_below(base, Path::new("/b/bundle/rootfs")),
            Some(PathBuf::from("rootfs"))
        );
        assert_eq!(
            lexically_below(base, Path::new("/b/bundle/./x/../../etc")),
            Some(PathBuf::from("x/../../etc"))
        );
        assert_eq!(
            lexically_below(base, Path::new("/b/bundle")),
            Some(PathBuf::new())
        );
        assert_eq!(lexically_below(base, Path::new("/b/bundle2/x")), None);
        assert_eq!(lexically_below(base, Path::new("/etc")), None);
    }

    #[test]
    fn resolve_beneath_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("inside")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("out-link")).unwrap();
        std::os::unix::fs::symlink("inside", dir.path().join("in-link")).unwrap();
        let fd = open_dir_nofollow(dir.path()).unwrap();
        assert!(resolve_beneath(&fd, Path::new("inside"), true).is_ok());
        assert!(resolve_beneath(&fd, Path::new("in-link"), true).is_ok());
        assert_eq!(
            resolve_beneath(&fd, Path::new("out-link"), true).unwrap_err(),
            Errno::XDEV
        );
        assert_eq!(
            resolve_beneath(&fd, Path::new("inside/../.."), true).unwrap_err(),
            Errno::XDEV
        );
        assert_eq!(
            resolve_beneath(&fd, Path::new("/etc"), true).unwrap_err(),
            Errno::XDEV
        );
        let link = dir.path().join("dir-link");
        std::os::unix::fs::symlink(dir.path().join("inside"), &link).unwrap();
        // O_PATH|O_NOFOLLOW opens the link itself, which O_DIRECTORY then refuses.
        assert_eq!(open_dir_nofollow(&link).unwrap_err(), Errno::NOTDIR);
    }
}
