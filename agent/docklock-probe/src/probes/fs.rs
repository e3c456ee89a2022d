//! Filesystem escapes: host files, the read-only rootfs, /proc/sys and /sys, the probe's own binary,
//! chroot, disk quota and leaked descriptors.

use std::os::fd::AsRawFd;

use super::{ProbeError, setup_error};
use crate::args::{ArgError, ProbeArgs};
use crate::errno::{Errno, check_int};
use crate::limits::{
    CHROOT_DOTDOT_COUNT, DISK_MIB_MAX_DEFAULT, DISK_MIB_MAX_LIMIT, DISK_WRITE_BYTES,
    FD_SWEEP_FIRST, FD_SWEEP_LAST, READ_BYTES_MAX,
};
use crate::report::{Attempts, Report};
use crate::sys::{self, CHILD_WORDS, ChildEnd};

const DEFAULT_HOST_FILES: [&str; 2] = ["/etc/shadow", "/proc/1/root/etc/hostname"];

pub fn read_host_file(args: &ProbeArgs) -> Result<Report, ProbeError> {
    let marker = args.value("--marker");
    if marker == Some("") {
        // An empty marker is found in every file, which would report an escape for any readable path.
        return Err(ArgError::Refused {
            flag: "--marker",
            value: String::new(),
            why: "an empty marker is found in every file",
        }
        .into());
    }
    let paths: Vec<&str> = if args.positional().is_empty() {
        DEFAULT_HOST_FILES.to_vec()
    } else {
        args.positional().iter().map(String::as_str).collect()
    };
    let mut attempts = Attempts::new();
    for path in paths {
        let what = format!("read {path}");
        let bytes = match sys::open(path, libc::O_RDONLY, 0)
            .and_then(|fd| sys::read_up_to(&fd, READ_BYTES_MAX))
        {
            Ok(bytes) => bytes,
            Err(errno) => {
                attempts.denied(what, errno);
                continue;
            }
        };
        match marker {
            Some(marker) if contains(&bytes, marker.as_bytes()) => {
                attempts.succeeded(what, format!("{} bytes, host marker found", bytes.len()))
            }
            Some(_) => attempts.contained(
                what,
                format!("{} bytes, marker absent: not the host's file", bytes.len()),
            ),
            None => attempts.succeeded(
                what,
                format!(
                    "{} bytes read; without --marker any read counts",
                    bytes.len()
                ),
            ),
        }
    }
    Ok(attempts.into_report())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// Creates `path` exclusively; on success removes it again so a run on the host leaves nothing behind.
fn try_create(attempts: &mut Attempts, what: String, path: &str) {
    match sys::open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600) {
        Ok(fd) => {
            drop(fd);
            attempts.succeeded(what, removed_text(sys::unlink(path)));
        }
        Err(errno) => attempts.denied(what, errno),
    }
}

fn removed_text(removed: Result<(), Errno>) -> String {
    match removed {
        Ok(()) => "created; removed again".to_string(),
        Err(errno) => format!("created; removing it failed: {errno}"),
    }
}

pub fn write_outside_rootfs(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    let name = format!(".docklock-probe-{}", sys::getpid());
    let mut attempts = Attempts::new();
    for dir in ["", "/etc", "/usr", "/bin"] {
        let path = format!("{dir}/{name}");
        try_create(&mut attempts, format!("create {path}"), &path);
    }
    for path in [
        format!("/tmp/../{name}-dotdot"),
        format!("/tmp/../../../etc/{name}-dotdot"),
    ] {
        try_create(&mut attempts, format!("create {path}"), &path);
    }

    let relative = format!("../usr/{name}-openat");
    let what = format!("openat(/tmp, {relative})");
    match sys::open("/tmp", libc::O_RDONLY | libc::O_DIRECTORY, 0) {
        Ok(tmp) => match sys::openat(
            &tmp,
            &relative,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o600,
        ) {
            Ok(fd) => {
                drop(fd);
                attempts.succeeded(
                    what,
                    removed_text(sys::unlink(format!("/usr/{name}-openat"))),
                );
            }
            Err(errno) => attempts.denied(what, errno),
        },
        Err(errno) => attempts.contained(what, format!("not tried: opening /tmp failed: {errno}")),
    }

    let link = format!("/tmp/{name}-link");
    let through_link = format!("{link}/{name}-symlink");
    let what = format!("create {through_link} (symlink to /etc)");
    match symlink("/etc", &link) {
        Ok(()) => {
            try_create(&mut attempts, what, &through_link);
            if let Err(errno) = sys::unlink(&link) {
                attempts.note(format!("removing {link} failed: {errno}"));
            }
        }
        Err(errno) => {
            attempts.contained(what, format!("not tried: symlink in /tmp failed: {errno}"))
        }
    }

    let dir = format!("/{name}-dir");
    match sys::mkdir(&dir, 0o700) {
        Ok(()) => {
            let removed = match sys::rmdir(&dir) {
                Ok(()) => "created; removed again".to_string(),
                Err(errno) => format!("created; removing it failed: {errno}"),
            };
            attempts.succeeded(format!("mkdir {dir}"), removed);
        }
        Err(errno) => attempts.denied(format!("mkdir {dir}"), errno),
    }
    Ok(attempts.into_report())
}

fn symlink(target: &str, link: &str) -> Result<(), Errno> {
    let (target, link) = (sys::cpath(target)?, sys::cpath(link)?);
    // SAFETY: both are valid NUL-terminated strings.
    check_int(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }).map(drop)
}

enum Payload {
    /// Write back what the file holds, so a successful write changes nothing.
    SameValue,
    Fixed(&'static [u8], &'static str),
}

pub fn write_proc_sys(args: &ProbeArgs) -> Result<Report, ProbeError> {
    let targets: Vec<(&str, Payload)> = if args.positional().is_empty() {
        vec![
            ("/proc/sys/kernel/hostname", Payload::SameValue),
            ("/proc/sys/kernel/core_pattern", Payload::SameValue),
            // 'h' prints the sysrq help to the kernel log and does nothing else.
            (
                "/proc/sysrq-trigger",
                Payload::Fixed(b"h", "'h' (sysrq help, only logs)"),
            ),
            ("/sys/kernel/uevent_helper", Payload::SameValue),
            ("/sys/kernel/mm/ksm/run", Payload::SameValue),
        ]
    } else {
        args.positional()
            .iter()
            .map(|path| (path.as_str(), Payload::SameValue))
            .collect()
    };
    let mut attempts = Attempts::new();
    for (path, payload) in targets {
        let what = format!("write {path}");
        let current =
            sys::open(path, libc::O_RDONLY, 0).and_then(|fd| sys::read_up_to(&fd, 64 * 1024));
        let fd = match sys::open(path, libc::O_WRONLY, 0) {
            Ok(fd) => fd,
            Err(errno) => {
                attempts.denied(what, errno);
                continue;
            }
        };
        let (bytes, described): (Vec<u8>, String) = match (&payload, current) {
            (Payload::Fixed(bytes, described), _) => (bytes.to_vec(), (*described).to_string()),
            (Payload::SameValue, Ok(value)) if value.is_empty() => {
                (b"\n".to_vec(), "its (empty) value".to_string())
            }
            (Payload::SameValue, Ok(value)) => {
                let described = format!("the {} bytes it held", value.len());
                (value, described)
            }
            (Payload::SameValue, Err(errno)) => {
                // Opened for writing is already the escape; writing an unknown value could harm the host.
                attempts.succeeded(
                    what,
                    format!("opened for writing; not written as reading it failed: {errno}"),
                );
                continue;
            }
        };
        match sys::write_all(&fd, &bytes) {
            Ok(()) => attempts.succeeded(what, format!("wrote {described}")),
            Err(errno) => attempts.denied(format!("{what} (opened for writing)"), errno),
        }
    }
    Ok(attempts.into_report())
}

pub fn overwrite_self_exe(_args: &ProbeArgs) -> Result<Report, ProbeError> {
    let mut attempts = Attempts::new();
    try_open(
        &mut attempts,
        "open /proc/self/exe O_WRONLY".to_string(),
        "/proc/self/exe",
    );

    let target = std::fs::read_link("/proc/self/exe");
    match &target {
        Ok(target) => {
            let target = target.to_string_lossy().into_owned();
            try_open(&mut attempts, format!("open {target} O_WRONLY"), &target);
        }
        Err(error) => attempts.note(format!("readlink /proc/self/exe: {}", io_errno_text(error))),
    }

    if let Some(argv0) = std::env::args_os()
        .next()
        .map(|arg| arg.to_string_lossy().into_owned())
        && argv0.contains('/')
        && target
            .as_ref()
            .map(|target| target.to_string_lossy() != argv0)
            .unwrap_or(true)
    {
        try_open(
            &mut attempts,
            format!("open argv[0] {argv0} O_WRONLY"),
            &argv0,
        );
    }

    // The runc CVE-2019-5736 route: an O_PATH handle reopened for writing through /proc/self/fd.
    match sys::open("/proc/self/exe", libc::O_PATH, 0) {
        Ok(handle) => {
            let reopen = format!("/proc/self/fd/{}", handle.as_raw_fd());
            try_open(
                &mut attempts,
                format!("reopen O_PATH /proc/self/exe via {reopen} O_WRONLY"),
                &reopen,
            );
        }
        Err(errno) => attempts.note(format!("O_PATH open of /proc/self/exe: {errno}")),
    }
    Ok(attempts.into_report())
}

fn try_open(attempts: &mut Attempts, what: String, path: &str) {
    match sys::open(path, libc::O_WRONLY, 0) {
        Ok(fd) => {
            drop(fd);
            attempts.succeeded(what, "opened for writing (closed without writing)");
        }
        Err(errno) => attempts.denied(what, errno),
    }
}

fn io_errno_text(error: &std::io::Error) -> String {
    match Errno::from_io(error) {
        Some(errno) => errno.to_string(),
        None => error.to_string(),
    }
}

pub fn chroot_escape(args: &ProbeArgs) -> Result<Report, ProbeError> {
    let host_path = args
        .required("--host-path", "a path that exists only on the host")?
        .to_string();
    let host_cpath = sys::cpath(&host_path).map_err(|_| ArgError::Refused {
        flag: "--host-path",
        value: host_path.clone(),
        why: "a path cannot hold a NUL byte",
    })?;
    let dir = format!("/tmp/docklock-probe-chroot-{}", sys::getpid());
    sys::mkdir(&dir, 0o700).map_err(setup_error(format!("mkdir {dir}")))?;
    let dir_cpath = sys::cpath(&dir).map_err(setup_error(format!("path {dir}")))?;

    // Not attempted is -1; otherwise the sys::result_word convention.
    let end = sys::in_child(move || {
        let mut words = [-1i64; CHILD_WORDS];
        // SAFETY: dir_cpath is a valid NUL-terminated string.
        let chrooted = check_int(unsafe { libc::chroot(dir_cpath.as_ptr()) }).map(drop);
        words[0] = sys::result_word(chrooted);
        if chrooted.is_err() {
            return words;
        }
        let dotdot = c"..";
        for _ in 0..CHROOT_DOTDOT_COUNT {
            // SAFETY: a static NUL-terminated string; failures show up in the stat below.
            unsafe { libc::chdir(dotdot.as_ptr()) };
        }
        // SAFETY: a static NUL-terminated string.
        words[1] = sys::result_word(check_int(unsafe { libc::chroot(c".".as_ptr()) }).map(drop));
        // SAFETY: libc::stat is plain integers, for which all-zero is a valid value.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: host_cpath is a valid NUL-terminated string and stat a valid out-pointer.
        words[2] = sys::result_word(
            check_int(unsafe { libc::stat(host_cpath.as_ptr(), &mut stat) }).map(drop),
        );
        words
    });
    let removed = sys::rmdir(&dir);
    let end = end.map_err(setup_error("fork"))?;

    let mut attempts = Attempts::new();
    match end {
        ChildEnd::Died(status) => attempts.contained("chroot loop", format!("child {status}")),
        ChildEnd::Reported(words) => match sys::word_result(words[0]) {
            Err(errno) => attempts.denied(format!("chroot {dir}"), errno),
            Ok(()) => {
                attempts.note(format!("chroot {dir} allowed (CAP_SYS_CHROOT held)"));
                if words[1] != -1 {
                    attempts.note(format!(
                        "chroot(\".\") after {CHROOT_DOTDOT_COUNT} chdir(\"..\"): {}",
                        word_text(words[1])
                    ));
                }
                let what = format!("stat {host_path} after the chroot loop");
                match sys::word_result(words[2]) {
                    Ok(()) => attempts.succeeded(what, "host path visible"),
                    Err(errno) => attempts.denied(what, errno),
                }
            }
        },
    }
    if let Err(errno) = removed {
        attempts.note(format!("removing {dir} failed: {errno}"));
    }
    Ok(attempts.into_report())
}

fn word_text(word: i64) -> String {
    match sys::word_result(word) {
        Ok(()) => "ok".to_string(),
        Err(errno) => errno.to_string(),
    }
}

pub fn disk_fill(args: &ProbeArgs) -> Result<Report, ProbeError> {
    let max_mib = args.u64_in("--max-mib", DISK_MIB_MAX_DEFAULT, 1, DISK_MIB_MAX_LIMIT)?;
    let path = args.value("--path").unwrap_or("/tmp/fill").to_string();
    // With RLIMIT_FSIZE the kernel sends SIGXFSZ, which would end the probe without a line; EFBIG is the answer.
    // SAFETY: setting a signal to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let fd = sys::open(&path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC, 0o600)
        .map_err(setup_error(format!("create {path}")))?;
    let block = vec![0xA5u8; DISK_WRITE_BYTES];
    let limit_bytes = max_mib << 20;
    let mut written_bytes: u64 = 0;
    let mut stopped_by: Option<Errno> = None;
    while written_bytes < limit_bytes {
        // SAFETY: block is DISK_WRITE_BYTES readable bytes.
        let written = unsafe { libc::write(fd.as_raw_fd(), block.as_ptr().cast(), block.len()) };
        if written > 0 {
            written_bytes += written as u64;
            continue;
        }
        let errno = if written == 0 {
            Errno(libc::ENOSPC)
        } else {
            Errno::last()
        };
        if errno.0 == libc::EINTR {
            continue;
        }
        stopped_by = Some(errno);
        break;
    }
    // Delayed allocation can defer ENOSPC to fsync on a disk-backed /tmp.
    // SAFETY: fd is open.
    if stopped_by.is_none() && unsafe { libc::fsync(fd.as_raw_fd()) } < 0 {
        stopped_by = Some(Errno::last());
    }
    drop(fd);
    let removed = match sys::unlink(&path) {
        Ok(()) => "removed".to_string(),
        Err(errno) => format!("removing it failed: {errno}"),
    };
    let written_mib = written_bytes >> 20;
    match stopped_by {
        Some(errno) if [libc::ENOSPC, libc::EDQUOT, libc::EFBIG].contains(&errno.0) => {
            Ok(Report::blocked(format!(
                "{errno} after {written_mib} MiB ({written_bytes} bytes) to {path}, below --max-mib {max_mib}; {removed}"
            )))
        }
        Some(errno) => Err(ProbeError::Setup {
            step: format!("write {path} after {written_bytes} bytes"),
            errno,
        }),
        None => Ok(Report::escaped(format!(
            "wrote {written_mib} MiB to {path} without ENOSPC/EDQUOT/EFBIG (--max-mib {max_mib}); {removed}"
        ))),
    }
}

pub fn leaked_fd(args: &ProbeArgs) -> Result<Report, ProbeError> {
    let allowed: Vec<i32> = args
        .u64s_in("--allow", 0, i32::MAX as u64)?
        .into_iter()
        .map(|fd| fd as i32)
        .collect();
    let declared = |fd: i32| fd <= 2 || allowed.contains(&fd);
    let mut attempts = Attempts::new();
    let mut candidates: Vec<i32> = Vec::new();

    match std::fs::read_dir("/proc/self/fd") {
        Ok(entries) => {
            let listed: Vec<i32> = entries
                .filter_map(|entry| entry.ok())
                .filter_map(|entry| {
                    entry
                        .file_name()
                        .to_str()
                        .and_then(|name| name.parse().ok())
                })
                .collect();
            attempts.note(format!("/proc/self/fd listed {} fds", listed.len()));
            candidates.extend(listed);
        }
        Err(error) => attempts.note(format!(
            "/proc/self/fd unreadable: {}",
            io_errno_text(&error)
        )),
    }
    candidates.extend(FD_SWEEP_FIRST..=FD_SWEEP_LAST);
    candidates.sort_unstable();
    candidates.dedup();

    let mut leaked_count = 0;
    for fd in candidates.into_iter().filter(|&fd| !declared(fd)) {
        // The read_dir handle above is closed by now, so only fds that are really open answer.
        // SAFETY: F_GETFD only reads the descriptor flags; an unused number gives EBADF.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            continue;
        }
        leaked_count += 1;
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|target| target.to_string_lossy().into_owned())
            .unwrap_or_else(|error| format!("target unknown: {}", io_errno_text(&error)));
        attempts.succeeded(format!("fd {fd}"), format!("open, undeclared, -> {target}"));
    }
    if leaked_count == 0 {
        let allowed_text = if allowed.is_empty() {
            String::new()
        } else {
            format!(" and --allow {allowed:?}")
        };
        attempts.contained(
            format!("fds 3..={FD_SWEEP_LAST} and /proc/self/fd"),
            format!("no fd open besides 0, 1, 2{allowed_text}"),
        );
    }
    Ok(attempts.into_report())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_search_needs_the_whole_marker() {
        assert!(contains(b"host says MARK-123 here", b"MARK-123"));
        assert!(!contains(b"host says MARK-12", b"MARK-123"));
        assert!(!contains(b"anything", b""));
    }
}
