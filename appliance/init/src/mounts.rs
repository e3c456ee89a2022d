//! The API filesystems PID 1 mounts at boot, as reviewed data with a reason per entry, and the
//! cgroup v2 controllers it enables for DockLock.

use std::io;
use std::path::Path;

use crate::sys::{InitSys, MountRequest, MsFlags};

/// One mount PID 1 makes at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountSpec {
    pub target: &'static str,
    pub fstype: &'static str,
    pub source: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
    /// Mount only when this path exists (efivarfs only makes sense on an EFI boot).
    pub only_if_exists: Option<&'static str>,
    pub reason: &'static str,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);
const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// The boot mount table, in mount order (parents before children).
pub const MOUNTS: &[MountSpec] = &[
    MountSpec {
        target: "/proc",
        fstype: "proc",
        source: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        only_if_exists: None,
        reason: "process and sysctl interface (/proc/sys); nothing on it is executable or a device",
    },
    MountSpec {
        target: "/sys",
        fstype: "sysfs",
        source: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        only_if_exists: None,
        reason: "devices, block devices, watchdog and the mount points below",
    },
    MountSpec {
        target: "/dev",
        fstype: "devtmpfs",
        source: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
        only_if_exists: None,
        reason: "device nodes created by the kernel: there is no udev",
    },
    MountSpec {
        target: "/dev/pts",
        fstype: "devpts",
        source: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("newinstance,ptmxmode=0666,mode=0620"),
        only_if_exists: None,
        reason: "pseudo terminals for the console; a private instance, no group-writable ttys",
    },
    MountSpec {
        target: "/dev/shm",
        fstype: "tmpfs",
        source: "shm",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("mode=1777"),
        only_if_exists: None,
        reason: "POSIX shared memory; never executable",
    },
    MountSpec {
        target: "/run",
        fstype: "tmpfs",
        source: "run",
        flags: NOSUID_NODEV,
        data: Some("mode=0755"),
        only_if_exists: None,
        reason: "runtime state (sockets, pid files) that must not survive a reboot",
    },
    MountSpec {
        target: "/tmp",
        fstype: "tmpfs",
        source: "tmp",
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
        only_if_exists: None,
        reason: "scratch space in RAM: the root is an initramfs and the data partition holds only state",
    },
    MountSpec {
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        source: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("nsdelegate"),
        only_if_exists: None,
        reason: "cgroup v2 for DockLock limits; nsdelegate makes cgroup namespaces delegation boundaries",
    },
    MountSpec {
        target: "/sys/fs/bpf",
        fstype: "bpf",
        source: "bpf",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("mode=0700"),
        only_if_exists: None,
        reason: "pinned BPF maps and programs of the traffic lights; root only",
    },
    MountSpec {
        target: "/sys/kernel/security",
        fstype: "securityfs",
        source: "securityfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        only_if_exists: None,
        reason: "lockdown status and LSM interfaces",
    },
    MountSpec {
        target: "/sys/firmware/efi/efivars",
        fstype: "efivarfs",
        source: "efivarfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        only_if_exists: Some("/sys/firmware/efi"),
        reason: "systemd-boot loader variables (which slot booted); EFI boots only",
    },
];

/// The cgroup v2 controllers enabled for children of the root cgroup.
pub const CGROUP_CONTROLLERS: &[&str] = &["cpu", "memory", "pids", "io", "cpuset"];
/// Where cgroup2 is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// What went wrong with one mount.
#[derive(Debug)]
pub struct MountFailure {
    pub target: &'static str,
    pub fstype: &'static str,
    /// `create mount point` or `mount`.
    pub step: &'static str,
    pub error: io::Error,
}

/// `mount_all` failed for one or more entries (the others were still mounted).
#[derive(Debug, thiserror::Error)]
#[error("mount failed: {}", describe_failures(.failures))]
pub struct MountError {
    pub failures: Vec<MountFailure>,
}

fn describe_failures(failures: &[MountFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("{} ({}): {}: {}", f.target, f.fstype, f.step, f.error))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What `mount_all` did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountReport {
    pub mounted: Vec<&'static str>,
    /// Entries whose `only_if_exists` path was absent.
    pub skipped: Vec<&'static str>,
}

/// Mount every entry of [`MOUNTS`], creating mount points. A failure does not stop the rest
/// (a failed /tmp must not cost the cgroup mount); every failure is named in the error.
pub fn mount_all(sys: &mut dyn InitSys) -> Result<MountReport, MountError> {
    mount_table(sys, MOUNTS)
}

/// [`mount_all`] over any table (tests use it with their own entries).
pub fn mount_table(sys: &mut dyn InitSys, table: &[MountSpec]) -> Result<MountReport, MountError> {
    let mut report = MountReport::default();
    let mut failures = Vec::new();
    for spec in table {
        if let Some(condition) = spec.only_if_exists
            && !sys.exists(Path::new(condition))
        {
            report.skipped.push(spec.target);
            continue;
        }
        let target = Path::new(spec.target);
        let failure = |step, error| MountFailure {
            target: spec.target,
            fstype: spec.fstype,
            step,
            error,
        };
        if let Err(error) = sys.mkdir_all(target) {
            failures.push(failure("create mount point", error));
            continue;
        }
        let request = MountRequest {
            source: spec.source,
            target,
            fstype: spec.fstype,
            flags: spec.flags,
            data: spec.data,
        };
        match sys.mount(&request) {
            Ok(()) => report.mounted.push(spec.target),
            Err(error) => failures.push(failure("mount", error)),
        }
    }
    if failures.is_empty() {
        Ok(report)
    } else {
        Err(MountError { failures })
    }
}

/// Which controllers were enabled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ControllersReport {
    pub enabled: Vec<&'static str>,
    /// Wanted but not offered by the kernel (not in cgroup.controllers).
    pub missing: Vec<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}: {error}")]
    ReadControllers { path: String, error: io::Error },
    #[error("cannot write `{line}` to {path}: {error}")]
    WriteSubtreeControl {
        path: String,
        line: String,
        error: io::Error,
    },
}

/// Enable [`CGROUP_CONTROLLERS`] for the root's children, skipping (and reporting) the ones the
/// kernel does not offer, since one unknown controller would make the kernel reject the whole write.
pub fn enable_cgroup_controllers(sys: &mut dyn InitSys) -> Result<ControllersReport, CgroupError> {
    let controllers_path = format!("{CGROUP_ROOT}/cgroup.controllers");
    let offered = sys
        .read_file(Path::new(&controllers_path))
        .map_err(|error| CgroupError::ReadControllers {
            path: controllers_path,
            error,
        })?;
    let offered: Vec<&str> = offered.split_whitespace().collect();
    let (enabled, missing): (Vec<&'static str>, Vec<&'static str>) = CGROUP_CONTROLLERS
        .iter()
        .copied()
        .partition(|c| offered.contains(c));
    if !enabled.is_empty() {
        let line = enabled
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        let path = format!("{CGROUP_ROOT}/cgroup.subtree_control");
        sys.write_file(Path::new(&path), &line)
            .map_err(|error| CgroupError::WriteSubtreeControl { path, line, error })?;
    }
    Ok(ControllersReport { enabled, missing })
}

#[cfg(test)]
mod tests {
    use nix::errno::Errno;

    use super::*;
    use crate::sys::fake::{Call, FakeSys};

    #[test]
    fn every_entry_has_a_reason_and_parents_come_first() {
        for (index, spec) in MOUNTS.iter().enumerate() {
            assert!(
                !spec.reason.trim().is_empty(),
                "{} has no reason",
                spec.target
            );
            assert!(
                spec.target.starts_with('/'),
                "{} is not absolute",
                spec.target
            );
            // Any earlier-listed mount that is a prefix must really be a parent directory.
            for later in &MOUNTS[index + 1..] {
                assert!(
                    !Path::new(spec.target).starts_with(later.target),
                    "{} is mounted before its parent {}",
                    spec.target,
                    later.target
                );
            }
        }
    }

    #[test]
    fn mounts_everything_in_order_and_skips_efivars_without_efi() {
        let mut fake = FakeSys::new();
        let report = mount_all(&mut fake).expect("mount_all");
        let mounted: Vec<(String, String)> = fake
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Mount { target, fstype, .. } => Some((target.display().to_string(), fstype)),
                _ => None,
            })
            .collect();
        let expected: Vec<(String, String)> = MOUNTS
            .iter()
            .filter(|m| m.only_if_exists.is_none())
            .map(|m| (m.target.to_owned(), m.fstype.to_owned()))
            .collect();
        assert_eq!(mounted, expected);
        assert_eq!(report.skipped, vec!["/sys/firmware/efi/efivars"]);
        assert_eq!(report.mounted.len(), MOUNTS.len() - 1);
        // Mount points were created before mounting (the fake refuses a missing mount point).
        assert!(fake.calls().contains(&Call::Mkdir("/dev/pts".into())));
        let calls = fake.calls();
        let proc_mount = calls
            .iter()
            .find_map(|c| match c {
                Call::Mount {
                    target,
                    flags,
                    data,
                    ..
                } if target == Path::new("/proc") => Some((*flags, data.clone())),
                _ => None,
            })
            .expect("proc mounted");
        assert_eq!(
            proc_mount.0,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
        );
        assert_eq!(proc_mount.1, None);
    }

    #[test]
    fn efivars_mounted_on_efi_boot() {
        let mut fake = FakeSys::new();
        fake.add_dir("/sys/firmware/efi");
        let report = mount_all(&mut fake).expect("mount_all");
        assert!(report.skipped.is_empty());
        assert!(report.mounted.contains(&"/sys/firmware/efi/efivars"));
    }

    #[test]
    fn failure_names_the_mount_and_the_rest_still_mount() {
        let mut fake = FakeSys::new();
        fake.state()
            .mount_errors
            .insert("/sys/fs/bpf".into(), Errno::ENODEV);
        let error = mount_all(&mut fake).expect_err("bpf fails");
        assert_eq!(error.failures.len(), 1);
        assert_eq!(error.failures[0].target, "/sys/fs/bpf");
        assert_eq!(error.failures[0].step, "mount");
        let message = error.to_string();
        assert!(message.contains("/sys/fs/bpf (bpf): mount:"), "{message}");
        assert!(
            fake.state()
                .mounted
                .contains(&"/sys/kernel/security".into())
        );
    }

    #[test]
    fn enables_offered_controllers_and_reports_missing() {
        let mut fake = FakeSys::new();
        fake.add_file(
            "/sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory hugetlb pids rdma\n",
        );
        fake.add_file("/sys/fs/cgroup/cgroup.subtree_control", "");
        let report = enable_cgroup_controllers(&mut fake).expect("controllers");
        assert_eq!(
            report.enabled,
            vec!["cpu", "memory", "pids", "io", "cpuset"]
        );
        assert!(report.missing.is_empty());
        assert_eq!(
            fake.file("/sys/fs/cgroup/cgroup.subtree_control")
                .as_deref(),
            Some("+cpu +memory +pids +io +cpuset")
        );

        let mut fake = FakeSys::new();
        fake.add_file("/sys/fs/cgroup/cgroup.controllers", "memory pids\n");
        fake.add_file("/sys/fs/cgroup/cgroup.subtree_control", "");
        let report = enable_cgroup_controllers(&mut fake).expect("controllers");
        assert_eq!(report.enabled, vec!["memory", "pids"]);
        assert_eq!(report.missing, vec!["cpu", "io", "cpuset"]);
        assert_eq!(
            fake.file("/sys/fs/cgroup/cgroup.subtree_control")
                .as_deref(),
            Some("+memory +pids")
        );
    }

    #[test]
    fn controllers_file_missing_is_an_error_naming_it() {
        let mut fake = FakeSys::new();
        let error = enable_cgroup_controllers(&mut fake).expect_err("no cgroup2");
        assert!(
            error
                .to_string()
                .contains("/sys/fs/cgroup/cgroup.controllers"),
            "{error}"
        );
    }
}
