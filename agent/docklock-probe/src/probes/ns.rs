//! Mount and namespace escapes.

use std::ffi::CStr;
use std::os::fd::AsRawFd;
use std::ptr;

use super::{ProbeError, setup_error};
use crate::args::ProbeArgs;
use crate::errno::{Errno, check, check_int};
use crate::report::Attempts;
use crate::report::Report;
use crate::sys::{self, CHILD_WORDS, ChildEnd};

const FSOPEN_CLOEXEC: libc::c_long = 1;

fn mount_call(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
) -> Result<(), Errno> {
    let source = source.map_or(ptr::null(), CStr::as_ptr);
    let fstype = fstype.map_or(ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a valid NUL-terminated string; data is null.
    check_int(unsafe { libc::mount(source, target.as_ptr(), fstype, flags, ptr::null()) }).map(drop)
}

fn umount(target: &CStr, flags: libc::c_int) -> Result<(), Errno> {
    // SAFETY: target is a valid NUL-terminated string.
    check_int(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

/// Word 0 of a child whose attempt was not made.
const SKIPPED: i64 = -2;

/// In a forked child: get a private mount namespace first (unshare + MS_PRIVATE), so a success changes only
/// the child's view. When that fails the attempt runs in the probe's own namespace, but only if
/// `own_namespace` says that namespace is the cage's; on the host it is skipped.
fn in_private_child(
    own_namespace: bool,
    attempt: impl FnOnce() -> Result<(), Errno>,
) -> Result<ChildEnd, Errno> {
    sys::in_child(move || {
        // SAFETY: unshare only changes this (child) process's namespaces.
        let unshared = check_int(unsafe { libc::unshare(libc::CLONE_NEWNS) }).map(drop);
        let private =
            unshared.and_then(|()| mount_call(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE));
        let mut words = [0i64; CHILD_WORDS];
        words[1] = sys::result_word(private);
        words[0] = if private.is_ok() || own_namespace {
            sys::result_word(attempt())
        } else {
            SKIPPED
        };
        words
    })
}

fn record_child(attempts: &mut Attempts, what: &str, end: Result<ChildEnd, Errno>) {
    match end {
        Ok(ChildEnd::Reported(words)) if words[0] == SKIPPED => attempts.contained(
            what,
            format!(
                "skipped: no private mount namespace for it ({}) and the probe may share the host's",
                sys::word_result(words[1]).err().map_or_else(String::new, |errno| errno.to_string())
            ),
        ),
        Ok(ChildEnd::Reported(words)) => {
            attempts.record(what, sys::word_result(words[0]).map(|()| "in a forked child".to_string()))
        }
        Ok(ChildEnd::Died(status)) => attempts.contained(what, format!("child {status}")),
        Err(errno) => attempts.contained(what, format!("not tried: fork failed: {errno}")),
    }
}

pub fn mount(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    let base = format!("/tmp/docklock-probe-mount-{}", sys::getpid());
    let dirs = [
        base.clone(),
        format!("{base}/tmpfs"),
        format!("{base}/proc"),
        format!("{base}/root"),
    ];
    for dir in &dirs {
        sys::mkdir(dir, 0o700).map_err(setup_error(format!("mkdir {dir}")))?;
    }
    let tmpfs_dir = sys::cpath(&dirs[1]).map_err(setup_error("path"))?;
    let proc_dir = sys::cpath(&dirs[2]).map_err(setup_error("path"))?;
    let root_dir = sys::cpath(&dirs[3]).map_err(setup_error("path"))?;
    let mut attempts = Attempts::new();
    let mut mounted: Vec<&CStr> = Vec::new();

    let tmpfs = mount_call(Some(c"tmpfs"), &tmpfs_dir, Some(c"tmpfs"), 0);
    if tmpfs.is_ok() {
        mounted.push(&tmpfs_dir);
    }
    attempts.record(
        format!("mount tmpfs on {}", dirs[1]),
        tmpfs.map(|()| "mounted".to_string()),
    );

    let proc = mount_call(Some(c"proc"), &proc_dir, Some(c"proc"), 0);
    if proc.is_ok() {
        mounted.push(&proc_dir);
    }
    attempts.record(
        format!("mount proc on {}", dirs[2]),
        proc.map(|()| "mounted".to_string()),
    );

    let bind = mount_call(Some(c"/"), &root_dir, None, libc::MS_BIND);
    if bind.is_ok() {
        mounted.push(&root_dir);
    }
    attempts.record(
        format!("bind-mount / on {}", dirs[3]),
        bind.map(|()| "mounted".to_string()),
    );

    // SAFETY: a static NUL-terminated fs name; fsopen returns a new fd or an error.
    let fsopen =
        sys::own_fd(unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) });
    attempts.record(
        "fsopen(\"tmpfs\")",
        fsopen.map(|fd| format!("fs context fd {}", fd.as_raw_fd())),
    );

    let own_namespace = sys::in_own_mount_namespace();
    // Per-mount flags only: clears the read-only bit the cage put on its rootfs.
    let remount = in_private_child(own_namespace, || {
        mount_call(None, c"/", None, libc::MS_REMOUNT | libc::MS_BIND)
    });
    record_child(
        &mut attempts,
        "remount / read-write (MS_REMOUNT|MS_BIND)",
        remount,
    );
    let umount_proc = in_private_child(own_namespace, || umount(c"/proc", libc::MNT_DETACH));
    record_child(&mut attempts, "umount2(/proc, MNT_DETACH)", umount_proc);
    let pivot_dir = tmpfs_dir.clone();
    let pivot = in_private_child(own_namespace, move || {
        // SAFETY: pivot_dir is a valid NUL-terminated string.
        check_int(unsafe { libc::chdir(pivot_dir.as_ptr()) })?;
        // pivot_root(".", ".") stacks the old root on the new one, the way runc does it.
        // SAFETY: static NUL-terminated strings.
        check(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) })
            .map(drop)
    });
    record_child(
        &mut attempts,
        &format!("pivot_root onto {}", dirs[1]),
        pivot,
    );

    for target in mounted.into_iter().rev() {
        if let Err(errno) = umount(target, libc::MNT_DETACH) {
            attempts.note(format!(
                "umount {} failed: {errno}",
                target.to_string_lossy()
            ));
        }
    }
    for dir in dirs.iter().rev() {
        if let Err(errno) = sys::rmdir(dir) {
            attempts.note(format!("rmdir {dir} failed: {errno}"));
        }
    }
    Ok(attempts.into_report())
}

const NAMESPACE_FLAGS: [(&str, libc::c_int); 8] = [
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER),
    ("CLONE_NEWNS", libc::CLONE_NEWNS),
    ("CLONE_NEWNET", libc::CLONE_NEWNET),
    ("CLONE_NEWPID", libc::CLONE_NEWPID),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP),
    ("CLONE_NEWTIME", libc::CLONE_NEWTIME),
];

pub fn unshare_setns(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    let mut attempts = Attempts::new();
    for (name, flag) in NAMESPACE_FLAGS {
        let end = sys::in_child(move || {
            // SAFETY: unshare changes only this forked child's namespaces.
            let result = check_int(unsafe { libc::unshare(flag) }).map(drop);
            [sys::result_word(result), 0, 0, 0]
        });
        record_child(&mut attempts, &format!("unshare({name})"), end);
    }

    attempts.record("clone(CLONE_NEWUSER)", clone_new_user());

    match std::fs::read_dir("/proc/self/ns") {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in names {
                let path = format!("/proc/self/ns/{name}");
                let fd = match sys::open(&path, libc::O_RDONLY, 0) {
                    Ok(fd) => fd,
                    Err(errno) => {
                        attempts.note(format!("open {path}: {errno}"));
                        continue;
                    }
                };
                let raw = fd.as_raw_fd();
                let end = sys::in_child(move || {
                    // SAFETY: raw is an open namespace fd inherited from the parent; setns changes only this child.
                    let result = check_int(unsafe { libc::setns(raw, 0) }).map(drop);
                    [sys::result_word(result), 0, 0, 0]
                });
                drop(fd);
                record_child(&mut attempts, &format!("setns({path})"), end);
            }
        }
        Err(error) => attempts.note(format!(
            "/proc/self/ns unreadable ({}): no setns attempted",
            error
                .raw_os_error()
                .map_or_else(|| error.to_string(), |errno| Errno(errno).to_string())
        )),
    }
    Ok(attempts.into_report())
}

/// Raw clone(2) (not unshare) with CLONE_NEWUSER; the child exits at once.
fn clone_new_user() -> Result<String, Errno> {
    let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long;
    // SAFETY: with a null stack, clone behaves like fork: the child gets a copy of this stack and only calls
    // _exit, the parent waits for it.
    let pid =
        check(unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) })?;
    if pid == 0 {
        // SAFETY: ends the child immediately without touching the parent's state.
        unsafe { libc::_exit(0) }
    }
    let status = sys::wait_for(pid as libc::pid_t)?;
    Ok(format!(
        "child {pid} ran in a new user namespace ({})",
        sys::describe_wait_status(status)
    ))
}
