//! Where each controller lives for this process: cgroup v2 when the controller is offered in
//! our v2 cgroup's `cgroup.controllers`, else the v1 hierarchy that has it mounted.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::fs::{CgroupFs, HostFs};
use crate::mode::CgroupVersion;
use crate::parse::{self, CgroupMount, ProcCgroupEntry};

/// A cgroup controller (or, for `CpuAcct` and `Freezer`, the v1 hierarchy that stands in for
/// a cgroup v2 core feature: `cpu.stat` and `cgroup.kill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
    CpuAcct,
    Io,
    Freezer,
}

impl Controller {
    pub const ALL: [Controller; 6] = [
        Controller::Memory,
        Controller::Pids,
        Controller::Cpu,
        Controller::CpuAcct,
        Controller::Io,
        Controller::Freezer,
    ];

    /// The controller's name in a v1 mount's options and /proc/self/cgroup.
    pub fn v1_name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
            Controller::CpuAcct => "cpuacct",
            Controller::Io => "blkio",
            Controller::Freezer => "freezer",
        }
    }

    /// The controller's name in v2 `cgroup.controllers`; `None` for the two whose v2 duty is a
    /// core feature every v2 cgroup has (`cpu.stat` usage, `cgroup.kill`/`cgroup.freeze`).
    pub fn v2_name(self) -> Option<&'static str> {
        match self {
            Controller::Memory => Some("memory"),
            Controller::Pids => Some("pids"),
            Controller::Cpu => Some("cpu"),
            Controller::Io => Some("io"),
            Controller::CpuAcct | Controller::Freezer => None,
        }
    }
}

/// Where one controller is used from: its version and this process's cgroup directory there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub version: CgroupVersion,
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot read {path}: {source}")]
    ReadProc {
        path: &'static str,
        source: io::Error,
    },
    #[error("{path} line {line}: {detail}")]
    Parse {
        path: &'static str,
        line: usize,
        detail: String,
    },
    #[error("cannot read the cgroup v2 controllers of this process's cgroup {}: {source}", .path.display())]
    V2Controllers { path: PathBuf, source: io::Error },
}

const MOUNTINFO_PATH: &str = "/proc/self/mountinfo";
const PROC_CGROUP_PATH: &str = "/proc/self/cgroup";

#[derive(Debug, Clone)]
struct V2Hierarchy {
    /// This process's cgroup in the unified hierarchy.
    dir: PathBuf,
    /// `cgroup.controllers` of that cgroup: what it may delegate to children.
    controllers: Vec<String>,
}

#[derive(Debug, Clone)]
struct V1Hierarchy {
    controllers: Vec<String>,
    dir: PathBuf,
}

/// The cgroup hierarchies visible to this process and its cgroup in each.
#[derive(Debug, Clone)]
pub struct CgroupLayout {
    fs: Arc<dyn CgroupFs>,
    v2: Option<V2Hierarchy>,
    v1: Vec<V1Hierarchy>,
}

impl CgroupLayout {
    /// Reads /proc/self/mountinfo and /proc/self/cgroup and the v2 `cgroup.controllers`.
    pub fn discover() -> Result<CgroupLayout, LayoutError> {
        let read = |path: &'static str| {
            std::fs::File::open(path)
                .and_then(crate::fs::read_bounded)
                .map_err(|source| LayoutError::ReadProc { path, source })
        };
        let mountinfo = read(MOUNTINFO_PATH)?;
        let proc_cgroup = read(PROC_CGROUP_PATH)?;
        CgroupLayout::from_texts(Arc::new(HostFs), &mountinfo, &proc_cgroup)
    }

    /// The same over given texts and filesystem (a [`crate::fake::DirFs`] in tests): the
    /// controllers a v2 cgroup offers are read from `fs`.
    pub fn from_texts(
        fs: Arc<dyn CgroupFs>,
        mountinfo: &str,
        proc_self_cgroup: &str,
    ) -> Result<CgroupLayout, LayoutError> {
        let mounts =
            parse::parse_mountinfo(mountinfo).map_err(|(line, detail)| LayoutError::Parse {
                path: MOUNTINFO_PATH,
                line,
                detail,
            })?;
        let entries = parse::parse_proc_cgroup(proc_self_cgroup).map_err(|(line, detail)| {
            LayoutError::Parse {
                path: PROC_CGROUP_PATH,
                line,
                detail,
            }
        })?;

        let v2 = match entries
            .iter()
            .find(|e| e.hierarchy_id == 0 && e.controllers.is_empty())
        {
            Some(entry) => match visible_dir(&mounts, entry, |m| m.v1_options.is_none()) {
                Some(dir) => {
                    let path = dir.join("cgroup.controllers");
                    let text = fs
                        .read(&path)
                        .map_err(|source| LayoutError::V2Controllers { path, source })?;
                    Some(V2Hierarchy {
                        dir,
                        controllers: parse::parse_controller_list(&text),
                    })
                }
                None => None,
            },
            None => None,
        };

        let mut v1 = Vec::new();
        for entry in entries.iter().filter(|e| e.hierarchy_id != 0) {
            // Named hierarchies (name=systemd) carry no controller.
            let controllers: Vec<String> = entry
                .controllers
                .iter()
                .filter(|c| !c.starts_with("name="))
                .cloned()
                .collect();
            if controllers.is_empty() {
                continue;
            }
            let mounted_here = |mount: &CgroupMount| {
                mount
                    .v1_options
                    .as_ref()
                    .is_some_and(|options| controllers.iter().all(|c| options.contains(c)))
            };
            if let Some(dir) = visible_dir(&mounts, entry, mounted_here) {
                v1.push(V1Hierarchy { controllers, dir });
            }
        }
        Ok(CgroupLayout { fs, v2, v1 })
    }

    /// Where `controller` is used from, or `None` when it is available nowhere.
    /// `CpuAcct` follows `Cpu` on v2, else v1 `cpuacct`, else the v2 core `cpu.stat`;
    /// `Freezer` is the v1 freezer only (v2 has `cgroup.kill` in every cgroup).
    pub fn placement(&self, controller: Controller) -> Option<Placement> {
        let v2 = |dir: &Path| Placement {
            version: CgroupVersion::V2,
            dir: dir.to_path_buf(),
        };
        let v1 = || {
            self.v1
                .iter()
                .find(|h| h.controllers.iter().any(|c| c == controller.v1_name()))
                .map(|h| Placement {
                    version: CgroupVersion::V1,
                    dir: h.dir.clone(),
                })
        };
        match controller {
            Controller::CpuAcct => match self.placement(Controller::Cpu) {
                Some(cpu) if cpu.version == CgroupVersion::V2 => Some(cpu),
                _ => v1().or_else(|| self.v2.as_ref().map(|h| v2(&h.dir))),
            },
            Controller::Freezer => v1(),
            _ => {
                let offered_in_v2 = self.v2.as_ref().filter(|h| {
                    controller
                        .v2_name()
                        .is_some_and(|name| h.controllers.iter().any(|c| c == name))
                });
                offered_in_v2.map(|h| v2(&h.dir)).or_else(v1)
            }
        }
    }

    /// This process's cgroup in the unified (v2) hierarchy, when one is mounted.
    pub fn v2_dir(&self) -> Option<&Path> {
        self.v2.as_ref().map(|h| h.dir.as_path())
    }

    pub(crate) fn fs(&self) -> &Arc<dyn CgroupFs> {
        &self.fs
    }

    /// Why `controller` has no placement, for error messages.
    pub(crate) fn explain_missing(&self, controller: Controller) -> String {
        let v2 = match &self.v2 {
            Some(h) => format!(
                "not offered in cgroup v2 ({}/cgroup.controllers lists: {})",
                h.dir.display(),
                if h.controllers.is_empty() {
                    "nothing".to_string()
                } else {
                    h.controllers.join(" ")
                }
            ),
            None => "no cgroup v2 hierarchy is mounted".to_string(),
        };
        format!(
            "{v2}, and no cgroup v1 hierarchy with `{}` is mounted where this process's cgroup is visible",
            controller.v1_name()
        )
    }
}

impl fmt::Display for CgroupLayout {
    /// One line per controller: `memory: v1 at /sys/fs/cgroup/memory/...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for controller in Controller::ALL {
            match self.placement(controller) {
                Some(p) => writeln!(
                    f,
                    "{}: {:?} at {}",
                    controller.v1_name(),
                    p.version,
                    p.dir.display()
                )?,
                None => writeln!(f, "{}: unavailable", controller.v1_name())?,
            }
        }
        Ok(())
    }
}

/// This process's cgroup directory through the first matching mount that shows it.
fn visible_dir(
    mounts: &[CgroupMount],
    entry: &ProcCgroupEntry,
    matches: impl Fn(&CgroupMount) -> bool,
) -> Option<PathBuf> {
    mounts.iter().filter(|m| matches(m)).find_map(|mount| {
        let relative = parse::relative_to_root(&entry.path, &mount.root)?;
        Some(if relative.is_empty() {
            mount.mount_point.clone()
        } else {
            mount.mount_point.join(relative)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{self, DirFs, FixtureError};
    use crate::mode::CgroupVersion::{V1, V2};

    fn at(version: CgroupVersion, dir: &str) -> Option<Placement> {
        Some(Placement {
            version,
            dir: PathBuf::from(dir),
        })
    }

    #[test]
    fn hybrid_ci_host_uses_v1_for_every_controller() -> Result<(), FixtureError> {
        let temp = tempfile::tempdir()?;
        let (_, layout) = fake::hybrid_ci_host(temp.path())?;
        let memory = "/sys/fs/cgroup/memory/process_api/18126a8bb1a3cd564a319d927452652c";
        assert_eq!(layout.placement(Controller::Memory), at(V1, memory));
        assert_eq!(
            layout.placement(Controller::Pids),
            at(V1, "/sys/fs/cgroup/pids")
        );
        assert_eq!(
            layout.placement(Controller::Cpu),
            at(V1, "/sys/fs/cgroup/cpu")
        );
        assert_eq!(
            layout.placement(Controller::CpuAcct),
            at(V1, "/sys/fs/cgroup/cpuacct")
        );
        assert_eq!(
            layout.placement(Controller::Io),
            at(V1, "/sys/fs/cgroup/blkio")
        );
        assert_eq!(
            layout.placement(Controller::Freezer),
            at(V1, "/sys/fs/cgroup/freezer")
        );
        assert_eq!(layout.v2_dir(), Some(Path::new("/sys/fs/cgroup/unified")));
        let shown = layout.to_string();
        assert!(
            shown.contains(&format!("memory: V1 at {memory}\n")),
            "{shown}"
        );
        let why = layout.explain_missing(Controller::Memory);
        assert!(
            why.contains("/sys/fs/cgroup/unified/cgroup.controllers lists: hugetlb"),
            "{why}"
        );
        Ok(())
    }

    #[test]
    fn appliance_uses_v2_for_everything_and_has_no_freezer() -> Result<(), FixtureError> {
        let temp = tempfile::tempdir()?;
        let (_, layout) = fake::v2_appliance_host(temp.path(), &[])?;
        for controller in [
            Controller::Memory,
            Controller::Pids,
            Controller::Cpu,
            Controller::CpuAcct,
            Controller::Io,
        ] {
            assert_eq!(
                layout.placement(controller),
                at(V2, "/sys/fs/cgroup"),
                "{controller:?}"
            );
        }
        assert_eq!(layout.placement(Controller::Freezer), None);
        Ok(())
    }

    #[test]
    fn systemd_service_cgroup_is_found_below_the_mount() -> Result<(), FixtureError> {
        let temp = tempfile::tempdir()?;
        let (_, layout) = fake::v2_debian12_service_host(temp.path())?;
        let service = "/sys/fs/cgroup/system.slice/metanode.service";
        assert_eq!(layout.placement(Controller::Memory), at(V2, service));
        assert_eq!(layout.placement(Controller::Io), at(V2, service));
        assert_eq!(layout.v2_dir(), Some(Path::new(service)));
        Ok(())
    }

    #[test]
    fn container_mount_roots_and_comounted_v1_controllers() -> Result<(), FixtureError> {
        let temp = tempfile::tempdir()?;
        let fs = Arc::new(DirFs::new(temp.path()));
        fs.add_hierarchy(
            Path::new("/sys/fs/cgroup/unified"),
            V2,
            &["memory"],
            fake::v2_template(),
        )?;
        let mountinfo = "50 24 0:30 /system.slice/docker-ab.scope /sys/fs/cgroup/unified rw shared:9 - cgroup2 cgroup2 rw\n\
                         51 24 0:31 /docker/ab /sys/fs/cgroup/cpu,cpuacct rw shared:5 - cgroup cgroup rw,cpuacct,cpu\n\
                         52 24 0:32 /docker/other /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        let proc_cgroup =
            "3:cpu,cpuacct:/docker/ab\n2:pids:/docker/ab\n0::/system.slice/docker-ab.scope\n";
        let layout = CgroupLayout::from_texts(fs, mountinfo, proc_cgroup)?;
        assert_eq!(
            layout.placement(Controller::Memory),
            at(V2, "/sys/fs/cgroup/unified")
        );
        assert_eq!(
            layout.placement(Controller::Cpu),
            at(V1, "/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(
            layout.placement(Controller::CpuAcct),
            at(V1, "/sys/fs/cgroup/cpu,cpuacct")
        );
        // The pids mount shows another container's subtree, not ours.
        assert_eq!(layout.placement(Controller::Pids), None);
        Ok(())
    }

    #[test]
    fn cpu_accounting_falls_back_to_v2_core_stats() -> Result<(), FixtureError> {
        let temp = tempfile::tempdir()?;
        let fs = Arc::new(DirFs::new(temp.path()));
        fs.add_hierarchy(
            Path::new("/sys/fs/cgroup/unified"),
            V2,
            &[],
            fake::v2_template(),
        )?;
        let mountinfo = "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                         42 31 0:39 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        let layout = CgroupLayout::from_texts(fs, mountinfo, "1:cpu:/\n0::/\n")?;
        assert_eq!(
            layout.placement(Controller::Cpu),
            at(V1, "/sys/fs/cgroup/cpu")
        );
        assert_eq!(
            layout.placement(Controller::CpuAcct),
            at(V2, "/sys/fs/cgroup/unified")
        );
        assert_eq!(layout.placement(Controller::Memory), None);
        Ok(())
    }

    #[test]
    fn errors_name_the_file_and_line() -> Result<(), FixtureError> {
        let temp = tempfile::tempdir()?;
        let fs: Arc<dyn CgroupFs> = Arc::new(DirFs::new(temp.path()));
        let error =
            CgroupLayout::from_texts(fs.clone(), "garbage line\n", "0::/\n").expect_err("bad");
        assert_eq!(
            error.to_string(),
            "/proc/self/mountinfo line 1: no ' - ' separator after field 6"
        );
        let error = CgroupLayout::from_texts(fs.clone(), "", "0::/\nnope\n").expect_err("bad");
        assert!(
            error.to_string().starts_with("/proc/self/cgroup line 2: "),
            "{error}"
        );
        // cgroup2 mounted but nothing there: the controllers file cannot be read.
        let mountinfo = "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let error = CgroupLayout::from_texts(fs, mountinfo, "0::/\n").expect_err("no files");
        assert!(
            matches!(&error, LayoutError::V2Controllers { path, .. } if path == Path::new("/sys/fs/cgroup/cgroup.controllers"))
        );
        Ok(())
    }

    #[test]
    fn discover_reads_this_machine() -> Result<(), LayoutError> {
        // Whatever the host, discovery must parse the kernel's own texts, and every placement
        // must point at a directory that exists.
        let layout = CgroupLayout::discover()?;
        for controller in Controller::ALL {
            if let Some(placement) = layout.placement(controller) {
                assert!(
                    placement.dir.is_dir(),
                    "{controller:?} at {}",
                    placement.dir.display()
                );
            }
        }
        Ok(())
    }
}
