//! The outputs manifest: every entry under a run's outputs directory, its
//! Merkle root, and the first entry two manifests disagree on.
//!
//! The walk never follows a symlink, not even for the outputs directory
//! itself: the workload wrote that tree, and a symlink it planted must not
//! make the host hash (and so reveal digests of) files outside it. Every
//! file is opened relative to its parent directory's descriptor with
//! `O_NOFOLLOW` and checked to be the inode `lstat` saw, and the walk stays on
//! the outputs directory's filesystem.
//!
//! One entry per file, directory, symlink or special file below the outputs
//! directory (not the directory itself):
//!
//! | kind | size_bytes | digest |
//! |---|---|---|
//! | file | bytes read | BLAKE3-256 of the contents (unkeyed, as in a raw CID) |
//! | symlink | target length | BLAKE3-256 of the target bytes |
//! | directory, fifo, socket, device | 0 | 32 zero bytes |
//!
//! Leaves are sorted by the bytes of the relative path (`/`-separated, raw
//! bytes, so non-UTF-8 names work), and leaf `i` is
//! `path:u32 len + bytes, kind:u8, size_bytes:u64, digest[32]`. The root is
//! `metanode_core::merkle::root_of` over those leaves.
//!
//! Permissions, owners and times are left out on purpose: replay perturbs
//! the umask and the clock, and a deterministic workload must still give the
//! same root.

use std::ffi::{CString, OsString};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use metanode_core::encoding::Writer;
use metanode_core::hash::{Hash32, blake3_256};
use metanode_core::merkle::{leaf_hash, root_of};
use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, Stat};

use crate::limits::{
    OUTPUTS_DEPTH_MAX, OUTPUTS_ENTRIES_COUNT_MAX, OUTPUTS_PATH_LEN_BYTES_MAX,
    OUTPUTS_SYMLINK_TARGET_LEN_BYTES_MAX,
};

/// What an output entry is. The codes are part of the leaf encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl EntryKind {
    /// The byte in the leaf encoding; never renumber.
    pub const fn code(self) -> u8 {
        match self {
            EntryKind::File => 0,
            EntryKind::Directory => 1,
            EntryKind::Symlink => 2,
            EntryKind::Fifo => 3,
            EntryKind::Socket => 4,
            EntryKind::CharDevice => 5,
            EntryKind::BlockDevice => 6,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Directory => "directory",
            EntryKind::Symlink => "symlink",
            EntryKind::Fifo => "fifo",
            EntryKind::Socket => "socket",
            EntryKind::CharDevice => "character device",
            EntryKind::BlockDevice => "block device",
        }
    }
}

/// One entry under the outputs directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputEntry {
    /// Relative to the outputs directory, `/`-separated, no leading `/`.
    pub path: PathBuf,
    pub kind: EntryKind,
    pub size_bytes: u64,
    pub digest: Hash32,
    /// The link target, for symlinks (also committed through `digest`).
    pub symlink_target: Option<PathBuf>,
}

impl OutputEntry {
    fn path_bytes(&self) -> &[u8] {
        self.path.as_os_str().as_bytes()
    }

    /// The canonical leaf bytes (see the module docs).
    pub fn leaf_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(4 + self.path_bytes().len() + 1 + 8 + 32);
        w.put_bytes_bounded(self.path_bytes(), OUTPUTS_PATH_LEN_BYTES_MAX);
        w.put_u8(self.kind.code());
        w.put_u64(self.size_bytes);
        w.put_raw(self.digest.as_bytes());
        w.finish()
            .expect("the walk rejects paths longer than the leaf bound")
    }
}

impl fmt::Display for OutputEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, &self.symlink_target) {
            (EntryKind::File, _) => write!(
                f,
                "file of {} bytes (blake3 {})",
                self.size_bytes, self.digest
            ),
            (EntryKind::Symlink, Some(target)) => write!(f, "symlink to {}", target.display()),
            (kind, _) => f.write_str(kind.name()),
        }
    }
}

/// The entries under an outputs directory, sorted, and their Merkle root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputsManifest {
    entries: Vec<OutputEntry>,
    root: Hash32,
}

/// The first output (in manifest order) on which two manifests disagree.
/// `None` on a side means the path is missing there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub path: PathBuf,
    pub ours: Option<OutputEntry>,
    pub theirs: Option<OutputEntry>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |e: &Option<OutputEntry>| match e {
            Some(e) => e.to_string(),
            None => "missing".to_owned(),
        };
        write!(
            f,
            "output {} differs: ours {}, theirs {}",
            self.path.display(),
            side(&self.ours),
            side(&self.theirs)
        )
    }
}

impl OutputsManifest {
    fn from_sorted(entries: Vec<OutputEntry>) -> Self {
        let leaves: Vec<Hash32> = entries.iter().map(|e| leaf_hash(&e.leaf_bytes())).collect();
        OutputsManifest {
            root: root_of(&leaves),
            entries,
        }
    }

    /// Entries sorted by the bytes of their path.
    pub fn entries(&self) -> &[OutputEntry] {
        &self.entries
    }

    /// The value for `TraceRoots::outputs_root`.
    pub fn root(&self) -> Hash32 {
        self.root
    }

    /// The entry at `path` (relative), if any.
    pub fn get(&self, path: &Path) -> Option<&OutputEntry> {
        let key = path.as_os_str().as_bytes();
        self.entries
            .binary_search_by(|e| e.path_bytes().cmp(key))
            .ok()
            .and_then(|i| self.entries.get(i))
    }

    /// The first path, in manifest order, whose entry differs or exists on
    /// one side only; `None` when the manifests agree (equal roots).
    pub fn first_difference(&self, other: &OutputsManifest) -> Option<Difference> {
        if self.root == other.root {
            return None;
        }
        let (mut ours, mut theirs) = (self.entries.iter(), other.entries.iter());
        let (mut a, mut b) = (ours.next(), theirs.next());
        loop {
            let (ours_only, theirs_only) = match (a, b) {
                (None, None) => return None,
                (Some(x), None) => (x, None),
                (None, Some(y)) => {
                    return Some(Difference {
                        path: y.path.clone(),
                        ours: None,
                        theirs: Some(y.clone()),
                    });
                }
                (Some(x), Some(y)) => match x.path_bytes().cmp(y.path_bytes()) {
                    std::cmp::Ordering::Less => (x, None),
                    std::cmp::Ordering::Greater => {
                        return Some(Difference {
                            path: y.path.clone(),
                            ours: None,
                            theirs: Some(y.clone()),
                        });
                    }
                    std::cmp::Ordering::Equal if x == y => {
                        a = ours.next();
                        b = theirs.next();
                        continue;
                    }
                    std::cmp::Ordering::Equal => (x, Some(y)),
                },
            };
            return Some(Difference {
                path: ours_only.path.clone(),
                ours: Some(ours_only.clone()),
                theirs: theirs_only.cloned(),
            });
        }
    }
}

/// Why an outputs directory could not be hashed. Paths are full paths
/// (the outputs directory joined with the entry).
#[derive(Debug, thiserror::Error)]
pub enum OutputsError {
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("outputs directory {} is a symlink; the walk never follows symlinks", .path.display())]
    RootIsSymlink { path: PathBuf },
    #[error("outputs path {} is not a directory", .path.display())]
    RootNotADirectory { path: PathBuf },
    #[error("outputs directory {} holds more than {max} entries", .path.display())]
    TooManyEntries { path: PathBuf, max: u32 },
    #[error("output path {} is {len} bytes relative to the outputs directory, more than {max}", .path.display())]
    PathTooLong { path: PathBuf, len: usize, max: u32 },
    #[error("output directory {} is nested more than {max} levels deep", .path.display())]
    TooDeep { path: PathBuf, max: u32 },
    #[error("output {} is on another filesystem (a mount point); the walk stays on one", .path.display())]
    OtherFilesystem { path: PathBuf },
    #[error("output {} changed while it was being hashed", .path.display())]
    Changed { path: PathBuf },
    #[error("symlink {} has a target of {len} bytes, more than {max}", .path.display())]
    SymlinkTargetTooLong { path: PathBuf, len: usize, max: u32 },
    #[error("output {} has an unknown file type (mode {mode:#o})", .path.display())]
    UnknownFileType { path: PathBuf, mode: u32 },
}

/// Walks `dir` (which must be a real directory, not a symlink to one) and
/// returns its manifest; see the module docs for what is hashed.
pub fn outputs_root(dir: &Path) -> Result<OutputsManifest, OutputsError> {
    let io_err = |action: &'static str| {
        move |e: rustix::io::Errno| OutputsError::Io {
            action,
            path: dir.to_path_buf(),
            source: e.into(),
        }
    };
    let st = rustix::fs::statat(CWD, dir, AtFlags::SYMLINK_NOFOLLOW).map_err(io_err("stat"))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {}
        FileType::Symlink => {
            return Err(OutputsError::RootIsSymlink {
                path: dir.to_path_buf(),
            });
        }
        _ => {
            return Err(OutputsError::RootNotADirectory {
                path: dir.to_path_buf(),
            });
        }
    }
    let fd = rustix::fs::openat(CWD, dir, dir_flags(), Mode::empty()).map_err(io_err("open"))?;
    let opened = rustix::fs::fstat(&fd).map_err(io_err("stat"))?;
    if !same_inode(&st, &opened) {
        return Err(OutputsError::Changed {
            path: dir.to_path_buf(),
        });
    }
    let mut walk = Walk {
        root: dir,
        dev: st.st_dev,
        entries: Vec::new(),
    };
    walk.dir(fd, &[], 1)?;
    let mut entries = walk.entries;
    entries.sort_unstable_by(|a, b| a.path_bytes().cmp(b.path_bytes()));
    Ok(OutputsManifest::from_sorted(entries))
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn same_inode(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

struct Walk<'a> {
    root: &'a Path,
    dev: u64,
    entries: Vec<OutputEntry>,
}

/// The outputs directory joined with a relative entry path, for errors.
fn full(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(Path::new(std::ffi::OsStr::from_bytes(rel)))
}

impl Walk<'_> {
    /// Adds every entry of the directory open at `fd`, whose relative path is
    /// `prefix` (empty for the outputs directory), recursing into
    /// subdirectories. `depth` counts the levels open at once.
    fn dir(&mut self, fd: OwnedFd, prefix: &[u8], depth: u32) -> Result<(), OutputsError> {
        let root = self.root;
        let io_err = |action: &'static str, rel: &[u8]| {
            let path = full(root, rel);
            move |e: rustix::io::Errno| OutputsError::Io {
                action,
                path,
                source: e.into(),
            }
        };
        let mut dir = Dir::new(fd).map_err(io_err("read directory", prefix))?;
        let mut names: Vec<CString> = Vec::new();
        for entry in &mut dir {
            let entry = entry.map_err(io_err("read directory", prefix))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(entry.file_name().to_owned());
            }
        }
        // Sorted so errors (and limits) hit the same entry on every run.
        names.sort_unstable();
        let dir_fd = dir.fd().map_err(io_err("read directory", prefix))?;

        for name in names {
            let mut rel = Vec::with_capacity(prefix.len() + 1 + name.as_bytes().len());
            if !prefix.is_empty() {
                rel.extend_from_slice(prefix);
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            if rel.len() > OUTPUTS_PATH_LEN_BYTES_MAX as usize {
                return Err(OutputsError::PathTooLong {
                    path: full(root, &rel),
                    len: rel.len(),
                    max: OUTPUTS_PATH_LEN_BYTES_MAX,
                });
            }
            if self.entries.len() >= OUTPUTS_ENTRIES_COUNT_MAX as usize {
                return Err(OutputsError::TooManyEntries {
                    path: self.root.to_path_buf(),
                    max: OUTPUTS_ENTRIES_COUNT_MAX,
                });
            }
            let st = rustix::fs::statat(dir_fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(io_err("stat", &rel))?;
            if st.st_dev != self.dev {
                return Err(OutputsError::OtherFilesystem {
                    path: full(root, &rel),
                });
            }
            let path = PathBuf::from(OsString::from_vec(rel.clone()));
            let special = |kind| OutputEntry {
                path: path.clone(),
                kind,
                size_bytes: 0,
                digest: Hash32::ZERO,
                symlink_target: None,
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => {
                    let flags = OFlags::RDONLY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC;
                    let fd = rustix::fs::openat(dir_fd, name.as_c_str(), flags, Mode::empty())
                        .map_err(io_err("open", &rel))?;
                    let opened = rustix::fs::fstat(&fd).map_err(io_err("stat", &rel))?;
                    if !same_inode(&st, &opened)
                        || FileType::from_raw_mode(opened.st_mode) != FileType::RegularFile
                    {
                        return Err(OutputsError::Changed {
                            path: full(root, &rel),
                        });
                    }
                    let mut hasher = blake3::Hasher::new();
                    hasher
                        .update_reader(File::from(fd))
                        .map_err(|source| OutputsError::Io {
                            action: "read",
                            path: full(root, &rel),
                            source,
                        })?;
                    self.entries.push(OutputEntry {
                        path,
                        kind: EntryKind::File,
                        size_bytes: hasher.count(),
                        digest: hasher.finalize().into(),
                        symlink_target: None,
                    });
                }
                FileType::Directory => {
                    if depth >= OUTPUTS_DEPTH_MAX {
                        return Err(OutputsError::TooDeep {
                            path: full(root, &rel),
                            max: OUTPUTS_DEPTH_MAX,
                        });
                    }
                    let fd =
                        rustix::fs::openat(dir_fd, name.as_c_str(), dir_flags(), Mode::empty())
                            .map_err(io_err("open", &rel))?;
                    let opened = rustix::fs::fstat(&fd).map_err(io_err("stat", &rel))?;
                    if !same_inode(&st, &opened) {
                        return Err(OutputsError::Changed {
                            path: full(root, &rel),
                        });
                    }
                    self.entries.push(special(EntryKind::Directory));
                    self.dir(fd, &rel, depth + 1)?;
                }
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(dir_fd, name.as_c_str(), Vec::new())
                        .map_err(io_err("read symlink", &rel))?
                        .into_bytes();
                    if target.len() > OUTPUTS_SYMLINK_TARGET_LEN_BYTES_MAX as usize {
                        return Err(OutputsError::SymlinkTargetTooLong {
                            path: full(root, &rel),
                            len: target.len(),
                            max: OUTPUTS_SYMLINK_TARGET_LEN_BYTES_MAX,
                        });
                    }
                    self.entries.push(OutputEntry {
                        path,
                        kind: EntryKind::Symlink,
                        size_bytes: target.len() as u64,
                        digest: blake3_256(&target),
                        symlink_target: Some(PathBuf::from(OsString::from_vec(target))),
                    });
                }
                FileType::Fifo => self.entries.push(special(EntryKind::Fifo)),
                FileType::Socket => self.entries.push(special(EntryKind::Socket)),
                FileType::CharacterDevice => self.entries.push(special(EntryKind::CharDevice)),
                FileType::BlockDevice => self.entries.push(special(EntryKind::BlockDevice)),
                FileType::Unknown => {
                    return Err(OutputsError::UnknownFileType {
                        path: full(root, &rel),
                        mode: st.st_mode,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn write(dir: &Path, rel: &str, data: &[u8]) {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, data).unwrap();
    }

    fn files() -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("a.txt", b"alpha"),
            ("sub/b.bin", &[0, 1, 2, 3]),
            ("sub/deeper/c", b""),
            ("z", b"last"),
        ]
    }

    #[test]
    fn same_files_in_any_creation_order_give_the_same_root() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        for (rel, data) in files() {
            write(one.path(), rel, data);
        }
        for (rel, data) in files().into_iter().rev() {
            write(two.path(), rel, data);
        }
        fs::create_dir(one.path().join("empty")).unwrap();
        fs::create_dir(two.path().join("empty")).unwrap();
        let m1 = outputs_root(one.path()).unwrap();
        let m2 = outputs_root(two.path()).unwrap();
        assert_eq!(m1.root(), m2.root());
        assert_eq!(m1.first_difference(&m2), None);

        let paths: Vec<&[u8]> = m1.entries().iter().map(|e| e.path_bytes()).collect();
        assert_eq!(
            paths,
            vec![
                &b"a.txt"[..],
                b"empty",
                b"sub",
                b"sub/b.bin",
                b"sub/deeper",
                b"sub/deeper/c",
                b"z"
            ]
        );
        let b = m1.get(Path::new("sub/b.bin")).unwrap();
        assert_eq!(b.kind, EntryKind::File);
        assert_eq!(b.size_bytes, 4);
        assert_eq!(b.digest, blake3_256(&[0, 1, 2, 3]));
        assert_eq!(
            m1.get(Path::new("empty")).unwrap().kind,
            EntryKind::Directory
        );

        // The root is the Merkle root over the documented leaf layout.
        let leaves: Vec<Hash32> = m1
            .entries()
            .iter()
            .map(|e| {
                let mut w = Writer::new();
                w.put_bytes(e.path_bytes());
                w.put_u8(e.kind.code());
                w.put_u64(e.size_bytes);
                w.put_raw(e.digest.as_bytes());
                leaf_hash(&w.finish().unwrap())
            })
            .collect();
        assert_eq!(m1.root(), root_of(&leaves));
    }

    #[test]
    fn one_changed_byte_changes_the_root_and_names_the_path() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        for (rel, data) in files() {
            write(one.path(), rel, data);
            write(two.path(), rel, data);
        }
        write(two.path(), "sub/b.bin", &[0, 1, 2, 4]);
        let m1 = outputs_root(one.path()).unwrap();
        let m2 = outputs_root(two.path()).unwrap();
        assert_ne!(m1.root(), m2.root());
        let diff = m1.first_difference(&m2).unwrap();
        assert_eq!(diff.path, Path::new("sub/b.bin"));
        assert_eq!(
            diff.ours.as_ref().unwrap().digest,
            blake3_256(&[0, 1, 2, 3])
        );
        assert_eq!(
            diff.theirs.as_ref().unwrap().digest,
            blake3_256(&[0, 1, 2, 4])
        );
        assert!(
            diff.to_string()
                .starts_with("output sub/b.bin differs: ours file of 4 bytes"),
            "{diff}"
        );
        // And the other way round.
        assert_eq!(
            m2.first_difference(&m1).unwrap().path,
            Path::new("sub/b.bin")
        );

        // Two differences: the first in path order is named.
        write(two.path(), "a.txt", b"ALPHA");
        let m2 = outputs_root(two.path()).unwrap();
        assert_eq!(m1.first_difference(&m2).unwrap().path, Path::new("a.txt"));
    }

    #[test]
    fn missing_and_extra_entries_are_named() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        for (rel, data) in files() {
            write(one.path(), rel, data);
            write(two.path(), rel, data);
        }
        write(two.path(), "sub/extra", b"x");
        let m1 = outputs_root(one.path()).unwrap();
        let m2 = outputs_root(two.path()).unwrap();
        let diff = m1.first_difference(&m2).unwrap();
        assert_eq!(diff.path, Path::new("sub/extra"));
        assert_eq!(diff.ours, None);
        assert_eq!(diff.theirs.unwrap().size_bytes, 1);
        let diff = m2.first_difference(&m1).unwrap();
        assert_eq!(diff.path, Path::new("sub/extra"));
        assert_eq!(diff.theirs, None);
        assert!(diff.to_string().ends_with("theirs missing"), "{diff}");

        fs::remove_file(two.path().join("z")).unwrap();
        fs::remove_file(two.path().join("sub/extra")).unwrap();
        let m2 = outputs_root(two.path()).unwrap();
        let diff = m1.first_difference(&m2).unwrap();
        assert_eq!(diff.path, Path::new("z"));
        assert_eq!(diff.theirs, None);
    }

    #[test]
    fn symlinks_are_recorded_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret", b"host data");
        let one = tempfile::tempdir().unwrap();
        symlink(outside.path().join("secret"), one.path().join("link")).unwrap();
        symlink(outside.path(), one.path().join("dirlink")).unwrap();
        let m = outputs_root(one.path()).unwrap();
        assert_eq!(m.entries().len(), 2);
        let link = m.get(Path::new("link")).unwrap();
        assert_eq!(link.kind, EntryKind::Symlink);
        let target = outside.path().join("secret");
        assert_eq!(link.symlink_target.as_deref(), Some(target.as_path()));
        assert_eq!(link.digest, blake3_256(target.as_os_str().as_bytes()));
        assert_eq!(link.size_bytes, target.as_os_str().len() as u64);
        // Nothing below the linked directory was walked.
        assert_eq!(
            m.get(Path::new("dirlink")).unwrap().kind,
            EntryKind::Symlink
        );
        assert!(m.get(Path::new("dirlink/secret")).is_none());

        // A different target is a different output.
        let two = tempfile::tempdir().unwrap();
        symlink(outside.path().join("other"), two.path().join("link")).unwrap();
        symlink(outside.path(), two.path().join("dirlink")).unwrap();
        let m2 = outputs_root(two.path()).unwrap();
        assert_eq!(m.first_difference(&m2).unwrap().path, Path::new("link"));

        // The outputs directory itself may not be a symlink.
        let root_link = outside.path().join("outputs-link");
        symlink(one.path(), &root_link).unwrap();
        assert!(matches!(
            outputs_root(&root_link),
            Err(OutputsError::RootIsSymlink { .. })
        ));
        assert!(matches!(
            outputs_root(&outside.path().join("secret")),
            Err(OutputsError::RootNotADirectory { .. })
        ));
        let err = outputs_root(&outside.path().join("absent")).unwrap_err();
        assert!(
            matches!(err, OutputsError::Io { action: "stat", .. }),
            "{err}"
        );
    }

    #[test]
    fn modes_are_not_part_of_the_root() {
        use std::os::unix::fs::PermissionsExt;
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        write(one.path(), "f", b"same");
        write(two.path(), "f", b"same");
        fs::set_permissions(two.path().join("f"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(one.path().join("f"), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            outputs_root(one.path()).unwrap().root(),
            outputs_root(two.path()).unwrap().root()
        );
    }

    #[test]
    fn special_files_and_non_utf8_names_are_recorded() {
        let one = tempfile::tempdir().unwrap();
        rustix::fs::mknodat(
            CWD,
            one.path().join("pipe").as_path(),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let odd = OsString::from_vec(vec![b'n', 0xff, b'x']);
        fs::write(one.path().join(&odd), b"1").unwrap();
        let m = outputs_root(one.path()).unwrap();
        let pipe = m.get(Path::new("pipe")).unwrap();
        assert_eq!(
            (pipe.kind, pipe.size_bytes, pipe.digest),
            (EntryKind::Fifo, 0, Hash32::ZERO)
        );
        assert_eq!(m.get(Path::new(&odd)).unwrap().size_bytes, 1);
        assert_eq!(m.entries()[0].path_bytes(), &[b'n', 0xff, b'x']);
    }

    #[test]
    fn empty_directory_has_the_empty_root() {
        let one = tempfile::tempdir().unwrap();
        let m = outputs_root(one.path()).unwrap();
        assert!(m.entries().is_empty());
        assert_eq!(m.root(), metanode_core::merkle::empty_root());
    }

    #[test]
    fn too_deep_is_refused_by_name() {
        let one = tempfile::tempdir().unwrap();
        let mut rel = PathBuf::new();
        for _ in 0..OUTPUTS_DEPTH_MAX {
            rel.push("d");
        }
        fs::create_dir_all(one.path().join(&rel)).unwrap();
        let err = outputs_root(one.path()).unwrap_err();
        match err {
            OutputsError::TooDeep { path, max } => {
                assert_eq!(max, OUTPUTS_DEPTH_MAX);
                assert_eq!(path, one.path().join(&rel));
            }
            other => panic!("expected TooDeep, got {other}"),
        }
    }
}
