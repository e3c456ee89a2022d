//! Builds the cage's mount tree under the rootfs, before pivot_root (runs in B, the workload).
//!
//! The image is untrusted: a symlink inside it (`/data -> /etc`) must not turn a mount point or a
//! `mkdir` into an operation on the host. Like youki (libpathrs `Root`) and runc
//! (`securejoin`), every path inside the rootfs is resolved with openat2(RESOLVE_IN_ROOT), which
//! resolves `..` and absolute symlinks as if the rootfs were `/`; missing mount points are created
//! with mkdirat/openat relative to the resolved parent, and mounts land on the resolved fd
//! (move_mount, or mount(2) through /proc/self/fd/N as runc does), never on a path string that
//! could be re-resolved.
//!
//! Bind mounts use the new mount API: open_tree(OPEN_TREE_CLONE) of the source, mount_setattr on
//! the detached copy (recursively for `rbind`, so `rbind,ro` is read-only all the way down — a
//! plain MS_REMOUNT only affects the top mount, bubblewrap walks mountinfo for the same reason),
//! then move_mount onto the mount point. Binds are always nodev and nosuid, as bubblewrap's
//! `--bind`: the cage has no device access beyond DockLock's own /dev.
//!
//! Everything that comes from a host path the bundle names (the rootfs, bind sources) and the
//! launcher's own host objects (/out, the seeded FIFO) is cloned by the launcher *before* the
//! fork, from fds resolved once ([`clone_tree`]), made private and given its attributes there, and
//! only attached here: the cage's user namespace could neither reach those host paths (cage root
//! is an unprivileged host uid) nor be trusted to resolve them again.
//!
//! Order (bubblewrap and runc agree on the essentials): /dev first (a tmpfs with null, zero,
//! full, the seeded random FIFO and the usual links), then the spec's mounts in order (so
//! /dev/pts, /dev/shm and /dev/mqueue land inside that /dev rather than being covered by it), then
//! /out, then masked paths (ro empty tmpfs over directories, /dev/null over files) and read-only
//! paths (a recursive read-only bind of the path onto itself).

use std::os::fd::{AsFd, AsRawFd as _, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{MoveMountFlags, OpenTreeFlags};

use crate::spec::{CageMount, MountKind};

/// mount_setattr(2) attribute bits (include/uapi/linux/mount.h).
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Host device nodes bound into the cage's /dev (random and urandom are the seeded FIFO).
const DEV_NODES: [&str; 3] = ["null", "zero", "full"];

/// A detached mount tree cloned by the launcher from a bind source.
#[derive(Debug)]
pub(crate) struct BindTree {
    pub tree: OwnedFd,
    /// Whether the source is a directory (the mount point is then a directory, else a file).
    pub is_dir: bool,
}

/// What the mount tree needs; the lists hold cage paths.
#[derive(Debug)]
pub(crate) struct RootfsPlan<'a> {
    /// The rootfs tree, already attached in this mount namespace.
    pub root: &'a OwnedFd,
    pub mounts: &'a [CageMount],
    /// Detached trees for the spec's bind mounts, by index in `mounts`.
    pub bind_trees: &'a [Option<BindTree>],
    pub out_tree: Option<&'a OwnedFd>,
    /// Detached trees of the seeded FIFO for /dev/urandom and /dev/random.
    pub random_trees: [&'a OwnedFd; 2],
    pub masked: &'a [String],
    pub readonly: &'a [String],
    pub dev_tmpfs_size_bytes: u64,
}

/// Creates, in the rootfs on disk, the mount points the cage needs that no earlier mount
/// covers: /dev, each spec mount's destination, /out. Runs in the launcher before the fork, as
/// host root: cage root is an unprivileged host uid and could not create them in a rootfs
/// owned by host root. Every step resolves inside the rootfs (RESOLVE_IN_ROOT), as in B.
/// Mount points below an earlier mount (/dev/pts in the /dev tmpfs) are left to B, which
/// creates them inside that mount.
pub(crate) fn create_mount_points(
    root: &OwnedFd,
    mounts: &[CageMount],
    bind_is_dir: &[Option<bool>],
    out: bool,
) -> Result<(), String> {
    let dev = crate::spec::CagePath::parse("/dev").map_err(|e| format!("/dev: {e}"))?;
    let covered = |destination: &crate::spec::CagePath, earlier: &[CageMount]| {
        let below =
            |outer: &crate::spec::CagePath| destination != outer && destination.starts_with(outer);
        below(&dev)
            || earlier
                .iter()
                .any(|m| m.destination.as_str() != "/dev" && below(&m.destination))
    };
    open_mountpoint(root, "/dev", false).map_err(|e| format!("/dev: {e}"))?;
    for (index, m) in mounts.iter().enumerate() {
        if m.destination.as_str() == "/dev" || covered(&m.destination, &mounts[..index]) {
            continue;
        }
        let file = matches!(bind_is_dir.get(index), Some(Some(false)));
        open_mountpoint(root, m.destination.as_str(), file).map_err(|e| {
            format!(
                "mounts[{index}] ({} on {}): {e}",
                m.kind.fs_type(),
                m.destination
            )
        })?;
    }
    if out {
        let out_path = crate::spec::CagePath::parse("/out").map_err(|e| format!("/out: {e}"))?;
        if !covered(&out_path, mounts) {
            open_mountpoint(root, "/out", false).map_err(|e| format!("/out: {e}"))?;
        }
    }
    Ok(())
}

/// Clones the mount at `source` (an fd resolved once) into a detached tree, private (so nothing
/// mounted on it in the cage propagates to the host's peers of the source mount) and with the
/// given mount_setattr bits, recursively. Runs in the launcher, before the fork.
pub(crate) fn clone_tree(
    source: &OwnedFd,
    recursive: bool,
    (attr_set, attr_clr): (u64, u64),
) -> Result<OwnedFd, Errno> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_EMPTY_PATH;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = rustix::mount::open_tree(source, "", flags)?;
    let attr = MountAttr {
        attr_set,
        attr_clr,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    // SAFETY: the fd is a detached mount tree we own; attr is a valid mount_attr of the given size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL),
        ));
    }
    Ok(tree)
}

/// Attaches a detached tree (from [`clone_tree`]) on `target`.
pub(crate) fn attach(tree: &OwnedFd, target: &OwnedFd, what: &str) -> Result<(), String> {
    rustix::mount::move_mount(
        tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(fail(format!("{what}: move_mount")))
}

fn fail(what: impl std::fmt::Display) -> impl FnOnce(Errno) -> String {
    move |errno| {
        format!(
            "{what}: {}",
            std::io::Error::from_raw_os_error(errno.raw_os_error())
        )
    }
}

/// Resolves `cage_path` (absolute, validated, no `..`) inside `root` as if `root` were `/`.
fn resolve(root: &OwnedFd, cage_path: &str, extra: OFlags) -> Result<OwnedFd, Errno> {
    let relative = cage_path.trim_start_matches('/');
    rustix::fs::openat2(
        root,
        if relative.is_empty() { "." } else { relative },
        OFlags::PATH | OFlags::CLOEXEC | extra,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Opens the mount point `cage_path` inside `root`, creating what is missing (directories, and
/// an empty file as the last component when `file`): every step resolves inside the rootfs.
fn open_mountpoint(root: &OwnedFd, cage_path: &str, file: bool) -> Result<OwnedFd, String> {
    match resolve(root, cage_path, OFlags::empty()) {
        Ok(fd) => return Ok(fd),
        Err(Errno::NOENT) => {}
        Err(errno) => return Err(fail(format!("resolve {cage_path} in the rootfs"))(errno)),
    }
    let components: Vec<&str> = cage_path.split('/').filter(|c| !c.is_empty()).collect();
    let mut parent = resolve(root, "/", OFlags::DIRECTORY).map_err(fail("open the rootfs"))?;
    for (index, component) in components.iter().enumerate() {
        let prefix = components[..=index].join("/");
        match resolve(root, &prefix, OFlags::empty()) {
            Ok(fd) => {
                parent = fd;
                continue;
            }
            Err(Errno::NOENT) => {}
            Err(errno) => return Err(fail(format!("resolve /{prefix} in the rootfs"))(errno)),
        }
        let last = index + 1 == components.len();
        let created = if last && file {
            rustix::fs::openat(
                &parent,
                *component,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
        } else {
            rustix::fs::mkdirat(&parent, *component, Mode::from_raw_mode(0o755))
        };
        match created {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(errno) => {
                return Err(fail(format!("create mount point /{prefix} in the rootfs"))(
                    errno,
                ));
            }
        }
        parent = resolve(root, &prefix, OFlags::empty())
            .map_err(fail(format!("resolve /{prefix} in the rootfs")))?;
    }
    Ok(parent)
}

/// The `/proc/self/fd/N` name of an fd, for mount(2) calls that take a path: the magic link
/// leads to exactly the resolved inode (runc's approach).
fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn legacy_mount(
    fstype: &str,
    target: &OwnedFd,
    flags: u64,
    data: &str,
    what: &str,
) -> Result<(), String> {
    let source = std::ffi::CString::new(fstype).map_err(|_| format!("{what}: bad fs type"))?;
    let target_path =
        std::ffi::CString::new(fd_path(target)).map_err(|_| format!("{what}: bad target"))?;
    let data_c = std::ffi::CString::new(data).map_err(|_| format!("{what}: NUL in options"))?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_path.as_ptr(),
            source.as_ptr(),
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                data_c.as_ptr().cast()
            },
        )
    };
    if rc != 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// MS_* flags to set/clear → mount_setattr's (attr_set, attr_clr).
pub(crate) fn mount_attrs(set: u64, clear: u64) -> (u64, u64) {
    let mut attr_set = 0;
    let mut attr_clr = 0;
    for (ms, attr) in [
        (libc::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (libc::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (libc::MS_NODEV, MOUNT_ATTR_NODEV),
        (libc::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
        (libc::MS_NODIRATIME, MOUNT_ATTR_NODIRATIME),
    ] {
        if set & ms != 0 {
            attr_set |= attr;
        } else if clear & ms != 0 {
            attr_clr |= attr;
        }
    }
    // The atime mode is one field: setting any mode requires clearing the whole field.
    if set & libc::MS_NOATIME != 0 {
        attr_set |= MOUNT_ATTR_NOATIME;
        attr_clr |= MOUNT_ATTR_ATIME_MASK;
    } else if set & libc::MS_STRICTATIME != 0 {
        attr_set |= MOUNT_ATTR_STRICTATIME;
        attr_clr |= MOUNT_ATTR_ATIME_MASK;
    } else if set & libc::MS_RELATIME != 0 || clear & (libc::MS_NOATIME | libc::MS_STRICTATIME) != 0
    {
        // relatime is the zero value of the field.
        attr_clr |= MOUNT_ATTR_ATIME_MASK;
    }
    (attr_set, attr_clr)
}

fn set_attrs(
    tree: &OwnedFd,
    attr_set: u64,
    attr_clr: u64,
    recursive: bool,
    what: &str,
) -> Result<(), String> {
    if attr_set == 0 && attr_clr == 0 {
        return Ok(());
    }
    let attr = MountAttr {
        attr_set,
        attr_clr,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: the fd is a detached mount tree we own; attr is a valid mount_attr of the given size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "{what}: set mount attributes: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Clones the mount at `source` (a host path or an fd), applies attributes, attaches it on
/// `target`.
fn bind<Fd: AsFd>(
    source_dir: Fd,
    source_path: &Path,
    target: &OwnedFd,
    recursive: bool,
    (attr_set, attr_clr): (u64, u64),
    what: &str,
) -> Result<(), String> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    if source_path.as_os_str().is_empty() {
        flags |= OpenTreeFlags::AT_EMPTY_PATH;
    }
    let tree = rustix::mount::open_tree(source_dir, source_path, flags)
        .map_err(fail(format!("{what}: open_tree {}", source_path.display())))?;
    set_attrs(&tree, attr_set, attr_clr, recursive, what)?;
    rustix::mount::move_mount(
        &tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(fail(format!("{what}: move_mount")))
}

/// Makes the mount at `path` read-only and nothing else: mount_setattr changes only the named
/// attribute, where MS_REMOUNT|MS_BIND would also have to restate every flag the mount already has
/// (and fails with EPERM in a user namespace when it drops a locked one such as nosuid).
pub(crate) fn make_readonly(path: &Path) -> Result<(), String> {
    let fd = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail(format!("open {}", path.display())))?;
    set_attrs(
        &fd,
        MOUNT_ATTR_RDONLY,
        0,
        false,
        &format!("make {} read-only", path.display()),
    )
}

/// Builds the whole mount tree under `plan.root` (the rootfs tree, already attached).
pub(crate) fn prepare(plan: &RootfsPlan<'_>) -> Result<(), String> {
    let root = plan.root;

    let dev_spec = plan
        .mounts
        .iter()
        .find(|m| m.destination.as_str() == "/dev");
    build_dev(root, plan, dev_spec)?;

    for (index, m) in plan.mounts.iter().enumerate() {
        if m.destination.as_str() == "/dev" {
            continue;
        }
        let what = format!(
            "mounts[{index}] ({} on {})",
            m.kind.fs_type(),
            m.destination
        );
        match &m.kind {
            MountKind::Bind { .. } => {
                let Some(Some(tree)) = plan.bind_trees.get(index) else {
                    return Err(format!("{what}: the launcher prepared no tree for it"));
                };
                let target = open_mountpoint(root, m.destination.as_str(), !tree.is_dir)
                    .map_err(|e| format!("{what}: {e}"))?;
                attach(&tree.tree, &target, &what)?;
            }
            kind => {
                let target = open_mountpoint(root, m.destination.as_str(), false)
                    .map_err(|e| format!("{what}: {e}"))?;
                legacy_mount(kind.fs_type(), &target, m.set_flags, &m.data, &what)?;
            }
        }
    }

    if let Some(out) = plan.out_tree {
        let target = open_mountpoint(root, "/out", false).map_err(|e| format!("/out: {e}"))?;
        attach(out, &target, "bind the outputs directory on /out")?;
    }

    for path in plan.masked {
        let target = match resolve(root, path, OFlags::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue,
            Err(errno) => return Err(fail(format!("resolve masked path {path}"))(errno)),
        };
        let stat = rustix::fs::fstat(&target).map_err(fail(format!("stat masked path {path}")))?;
        let what = format!("mask {path}");
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory {
            legacy_mount("tmpfs", &target, libc::MS_RDONLY, "size=0,mode=555", &what)?;
        } else {
            bind(
                rustix::fs::CWD,
                Path::new("/dev/null"),
                &target,
                false,
                mount_attrs(libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC, 0),
                &what,
            )?;
        }
    }

    for path in plan.readonly {
        let target = match resolve(root, path, OFlags::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue,
            Err(errno) => return Err(fail(format!("resolve read-only path {path}"))(errno)),
        };
        bind(
            &target,
            Path::new(""),
            &target,
            true,
            mount_attrs(
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                0,
            ),
            &format!("make {path} read-only"),
        )?;
    }
    Ok(())
}

/// /dev: the spec's tmpfs at /dev if it has one (runc's default config does), else DockLock's;
/// then the device nodes, the seeded FIFO and the links, before any spec mount under /dev.
fn build_dev(
    root: &OwnedFd,
    plan: &RootfsPlan<'_>,
    spec: Option<&CageMount>,
) -> Result<(), String> {
    let target = open_mountpoint(root, "/dev", false).map_err(|e| format!("/dev: {e}"))?;
    match spec {
        Some(m) if m.kind == MountKind::Tmpfs => {
            legacy_mount(
                "tmpfs",
                &target,
                m.set_flags,
                &m.data,
                "mount the spec's tmpfs on /dev",
            )?;
        }
        Some(m) => {
            return Err(format!(
                "only a tmpfs may be mounted at /dev (the spec mounts {})",
                m.kind.fs_type()
            ));
        }
        None => legacy_mount(
            "tmpfs",
            &target,
            libc::MS_NOSUID | libc::MS_NOEXEC,
            &format!("size={},mode=755", plan.dev_tmpfs_size_bytes),
            "mount the /dev tmpfs",
        )?,
    }
    drop(target);
    let dev = resolve(root, "/dev", OFlags::DIRECTORY).map_err(fail("open the new /dev"))?;
    let sources: Vec<(&str, Option<&OwnedFd>)> = DEV_NODES
        .iter()
        .map(|name| (*name, None))
        .chain([
            ("urandom", Some(plan.random_trees[0])),
            ("random", Some(plan.random_trees[1])),
        ])
        .collect();
    for (name, tree) in sources {
        let what = format!("create /dev/{name}");
        let node = rustix::fs::openat(
            &dev,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o666),
        )
        .map_err(fail(&what))?;
        drop(node);
        let node = rustix::fs::openat(
            &dev,
            name,
            OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(fail(&what))?;
        // The seeded FIFO trees come read-only from the launcher (the workload must not inject
        // bytes into the stream); the null devices are the host's own, a trusted path.
        match tree {
            Some(tree) => attach(tree, &node, &format!("bind /dev/{name}"))?,
            None => bind(
                rustix::fs::CWD,
                &Path::new("/dev").join(name),
                &node,
                false,
                mount_attrs(libc::MS_NOSUID | libc::MS_NOEXEC, 0),
                &format!("bind /dev/{name}"),
            )?,
        }
    }
    let has_devpts = plan
        .mounts
        .iter()
        .any(|m| m.kind == MountKind::Devpts && m.destination.as_str() == "/dev/pts");
    let mut links = vec![
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    if has_devpts {
        links.push(("ptmx", "pts/ptmx"));
    }
    for (link, to) in links {
        rustix::fs::symlinkat(to, &dev, link).map_err(fail(format!("symlink /dev/{link}")))?;
    }
    rustix::fs::mkdirat(&dev, "shm", Mode::from_raw_mode(0o1777))
        .map_err(fail("mkdir /dev/shm"))?;
    // mkdirat is subject to B's umask; /dev/shm must be world-writable and sticky.
    rustix::fs::chmodat(
        &dev,
        "shm",
        Mode::from_raw_mode(0o1777),
        rustix::fs::AtFlags::empty(),
    )
    .map_err(fail("chmod /dev/shm"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_flags_map_to_mount_setattr_bits() {
        assert_eq!(mount_attrs(0, 0), (0, 0));
        assert_eq!(
            mount_attrs(
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                0
            ),
            (
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
                0
            )
        );
        // `rw` clears the read-only bit of the cloned tree.
        assert_eq!(mount_attrs(0, libc::MS_RDONLY), (0, MOUNT_ATTR_RDONLY));
        // Setting an atime mode clears the whole atime field first.
        assert_eq!(
            mount_attrs(libc::MS_NOATIME, 0),
            (MOUNT_ATTR_NOATIME, MOUNT_ATTR_ATIME_MASK)
        );
        assert_eq!(
            mount_attrs(libc::MS_STRICTATIME | libc::MS_NODIRATIME, 0),
            (
                MOUNT_ATTR_STRICTATIME | MOUNT_ATTR_NODIRATIME,
                MOUNT_ATTR_ATIME_MASK
            )
        );
        // relatime is the field's zero value.
        assert_eq!(
            mount_attrs(libc::MS_RELATIME, 0),
            (0, MOUNT_ATTR_ATIME_MASK)
        );
        assert_eq!(mount_attrs(0, libc::MS_NOATIME), (0, MOUNT_ATTR_ATIME_MASK));
        // A flag both set and cleared (the spec parser never produces that) is set.
        assert_eq!(
            mount_attrs(libc::MS_NOSUID, libc::MS_NOSUID),
            (MOUNT_ATTR_NOSUID, 0)
        );
    }
}
