//! [`DirFs`]: a cgroup filesystem on a temp dir that behaves like the kernel where our logic
//! depends on it, plus fixtures of the host kinds we run on. Public so crates that create cages
//! (DockLock) can unit-test without root.
//!
//! Emulated: interface files appear on mkdir (v1: the hierarchy's template; v2: only files of
//! controllers the parent enabled in `cgroup.subtree_control`, which becomes the child's
//! `cgroup.controllers`); writes need an existing file (ENOENT like the kernel); `+ctrl` needs
//! the controller in `cgroup.controllers` (ENOENT); the v2 "no internal processes" rule (EBUSY
//! both ways, except in the hierarchy root); `cgroup.kill` and kill(2) take pids out of every
//! `cgroup.procs`; rmdir refuses (EBUSY) while tasks or child cgroups remain.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustix::io::Errno;

use crate::fs::CgroupFs;
use crate::layout::{CgroupLayout, LayoutError};
use crate::mode::CgroupVersion;
use crate::parse;

/// An interface file created in every new cgroup of a hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFile {
    pub name: String,
    /// The content the kernel shows in a fresh cgroup.
    pub contents: String,
    /// v2 only: the controller that must be enabled by the parent for the file to exist.
    pub controller: Option<String>,
}

impl TemplateFile {
    pub fn new(name: &str, contents: &str, controller: Option<&str>) -> TemplateFile {
        TemplateFile {
            name: name.to_string(),
            contents: contents.to_string(),
            controller: controller.map(str::to_string),
        }
    }
}

#[derive(Debug, Clone)]
struct Hierarchy {
    mount: PathBuf,
    version: CgroupVersion,
    template: Vec<TemplateFile>,
}

#[derive(Debug, Default)]
struct State {
    hierarchies: Vec<Hierarchy>,
    writes: Vec<(PathBuf, String)>,
    killed: Vec<i32>,
}

/// A fake cgroup filesystem rooted at a directory; host paths map below it.
#[derive(Debug)]
pub struct DirFs {
    root: PathBuf,
    state: Mutex<State>,
}

impl DirFs {
    pub fn new(root: impl Into<PathBuf>) -> DirFs {
        DirFs {
            root: root.into(),
            state: Mutex::new(State::default()),
        }
    }

    /// Mounts a hierarchy at `mount` (a host path). For v2, `offered` is the root's
    /// `cgroup.controllers`. The root gets the template files that need no controller.
    pub fn add_hierarchy(
        &self,
        mount: &Path,
        version: CgroupVersion,
        offered: &[&str],
        template: Vec<TemplateFile>,
    ) -> io::Result<()> {
        let dir = self.host(mount);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cgroup.procs"), "")?;
        for file in &template {
            if version == CgroupVersion::V1 || file.controller.is_none() {
                std::fs::write(dir.join(&file.name), &file.contents)?;
            }
        }
        if version == CgroupVersion::V2 {
            std::fs::write(dir.join("cgroup.controllers"), offered.join(" "))?;
            std::fs::write(dir.join("cgroup.subtree_control"), "")?;
        }
        self.lock().hierarchies.push(Hierarchy {
            mount: mount.to_path_buf(),
            version,
            template,
        });
        Ok(())
    }

    /// Sets a file's content as the kernel would (counters, pre-existing state); creates it.
    pub fn set_file(&self, path: &Path, contents: &str) -> io::Result<()> {
        std::fs::write(self.host(path), contents)
    }

    /// Every successful write through the seam, in order: (host path, contents).
    pub fn writes(&self) -> Vec<(PathBuf, String)> {
        self.lock().writes.clone()
    }

    /// Pids "killed" through kill(2) or `cgroup.kill`, in order.
    pub fn killed(&self) -> Vec<i32> {
        self.lock().killed.clone()
    }

    /// Where a host path lives in the temp dir.
    pub fn host(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in another test thread while holding the lock must not hide this test's result.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn hierarchy_of(&self, path: &Path) -> Option<Hierarchy> {
        self.lock()
            .hierarchies
            .iter()
            .filter(|h| path.starts_with(&h.mount))
            .max_by_key(|h| h.mount.components().count())
            .cloned()
    }

    fn read_list(&self, path: &Path) -> io::Result<Vec<String>> {
        Ok(parse::parse_controller_list(&std::fs::read_to_string(
            self.host(path),
        )?))
    }

    fn procs_of(&self, dir: &Path) -> io::Result<Vec<i32>> {
        let text = std::fs::read_to_string(self.host(&dir.join("cgroup.procs")))?;
        parse::parse_pids(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Takes `pids` out of every cgroup.procs of every hierarchy; returns how many were found.
    fn remove_pids_everywhere(&self, pids: &[i32]) -> io::Result<usize> {
        let mounts: Vec<PathBuf> = self
            .lock()
            .hierarchies
            .iter()
            .map(|h| self.host(&h.mount))
            .collect();
        let mut found = 0;
        for mount in mounts {
            for procs in procs_files(&mount)? {
                let text = std::fs::read_to_string(&procs)?;
                let before = parse::parse_pids(&text)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let after: Vec<i32> = before
                    .iter()
                    .copied()
                    .filter(|p| !pids.contains(p))
                    .collect();
                found += before.len() - after.len();
                std::fs::write(
                    &procs,
                    after.iter().map(|p| format!("{p}\n")).collect::<String>(),
                )?;
            }
        }
        Ok(found)
    }

    fn write_procs(
        &self,
        path: &Path,
        dir: &Path,
        hierarchy: &Hierarchy,
        contents: &str,
    ) -> io::Result<()> {
        let pid: i32 = match contents.trim().parse() {
            // "0" is the writing process itself, as in the kernel.
            Ok(0) => i32::try_from(std::process::id()).map_err(|_| Errno::INVAL)?,
            Ok(pid) => pid,
            Err(_) => return Err(Errno::INVAL.into()),
        };
        if hierarchy.version == CgroupVersion::V2
            && dir != hierarchy.mount
            && !self
                .read_list(&dir.join("cgroup.subtree_control"))?
                .is_empty()
        {
            return Err(Errno::BUSY.into());
        }
        // A process is in one cgroup per hierarchy: joining this one leaves the others.
        for procs in procs_files(&self.host(&hierarchy.mount))? {
            let text = std::fs::read_to_string(&procs)?;
            let listed = parse::parse_pids(&text)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if listed.contains(&pid) {
                let kept: String = listed
                    .iter()
                    .filter(|p| **p != pid)
                    .map(|p| format!("{p}\n"))
                    .collect();
                std::fs::write(&procs, kept)?;
            }
        }
        let mut pids = self.procs_of(dir)?;
        pids.push(pid);
        std::fs::write(
            self.host(path),
            pids.iter().map(|p| format!("{p}\n")).collect::<String>(),
        )
    }

    fn write_subtree_control(
        &self,
        path: &Path,
        dir: &Path,
        hierarchy: &Hierarchy,
        contents: &str,
    ) -> io::Result<()> {
        let offered = self.read_list(&dir.join("cgroup.controllers"))?;
        let mut enabled = self.read_list(path)?;
        for token in contents.split_whitespace() {
            let (enable, name) = match token.split_at_checked(1) {
                Some(("+", name)) => (true, name),
                Some(("-", name)) => (false, name),
                _ => return Err(Errno::INVAL.into()),
            };
            if enable {
                if !offered.iter().any(|c| c == name) {
                    return Err(Errno::NOENT.into());
                }
                if dir != hierarchy.mount && !self.procs_of(dir)?.is_empty() {
                    return Err(Errno::BUSY.into());
                }
                if !enabled.iter().any(|c| c == name) {
                    enabled.push(name.to_string());
                }
            } else {
                enabled.retain(|c| c != name);
            }
        }
        std::fs::write(self.host(path), enabled.join(" "))
    }

    fn write_kill(&self, dir: &Path, contents: &str) -> io::Result<()> {
        if contents.trim() != "1" {
            return Err(Errno::INVAL.into());
        }
        let mut pids = Vec::new();
        for procs in procs_files(&self.host(dir))? {
            let text = std::fs::read_to_string(procs)?;
            pids.extend(
                parse::parse_pids(&text)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            );
        }
        self.remove_pids_everywhere(&pids)?;
        self.lock().killed.extend(pids);
        Ok(())
    }
}

/// Every cgroup.procs below `dir` (inclusive), host paths.
fn procs_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            } else if entry.file_name() == "cgroup.procs" {
                found.push(entry.path());
            }
        }
    }
    Ok(found)
}

fn not_cgroupfs(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{} is not on a fake cgroup hierarchy", path.display()),
    )
}

impl CgroupFs for DirFs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        let hierarchy = self.hierarchy_of(path).ok_or_else(|| not_cgroupfs(path))?;
        let parent = path.parent().ok_or_else(|| not_cgroupfs(path))?;
        let dir = self.host(path);
        std::fs::create_dir(&dir)?;
        std::fs::write(dir.join("cgroup.procs"), "")?;
        match hierarchy.version {
            CgroupVersion::V1 => {
                std::fs::write(dir.join("tasks"), "")?;
                for file in &hierarchy.template {
                    std::fs::write(dir.join(&file.name), &file.contents)?;
                }
            }
            CgroupVersion::V2 => {
                let enabled = self.read_list(&parent.join("cgroup.subtree_control"))?;
                std::fs::write(dir.join("cgroup.controllers"), enabled.join(" "))?;
                std::fs::write(dir.join("cgroup.subtree_control"), "")?;
                for file in &hierarchy.template {
                    let present = file.controller.as_ref().is_none_or(|c| enabled.contains(c));
                    if present {
                        std::fs::write(dir.join(&file.name), &file.contents)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        let dir = self.host(path);
        for entry in std::fs::read_dir(&dir)? {
            if entry?.file_type()?.is_dir() {
                return Err(Errno::BUSY.into());
            }
        }
        if !self.procs_of(path)?.is_empty() {
            return Err(Errno::BUSY.into());
        }
        std::fs::remove_dir_all(dir)
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        crate::fs::read_bounded(std::fs::File::open(self.host(path))?)
    }

    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        let hierarchy = self.hierarchy_of(path).ok_or_else(|| not_cgroupfs(path))?;
        if !self.host(path).is_file() {
            return Err(Errno::NOENT.into());
        }
        let dir = path.parent().ok_or_else(|| not_cgroupfs(path))?;
        match path.file_name().and_then(|n| n.to_str()) {
            Some("cgroup.procs") => self.write_procs(path, dir, &hierarchy, contents)?,
            // A single-threaded fake process: its thread id is its pid, so moving the thread moves
            // the process (the case `add_self` documents); listed in cgroup.procs like the kernel.
            Some("tasks") if hierarchy.version == CgroupVersion::V1 => {
                let procs = dir.join("cgroup.procs");
                self.write_procs(&procs, dir, &hierarchy, contents)?
            }
            Some("cgroup.subtree_control") => {
                self.write_subtree_control(path, dir, &hierarchy, contents)?
            }
            Some("cgroup.kill") => self.write_kill(dir, contents)?,
            _ => std::fs::write(self.host(path), contents)?,
        }
        self.lock()
            .writes
            .push((path.to_path_buf(), contents.to_string()));
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        self.host(path).exists()
    }

    fn kill(&self, pid: i32) -> io::Result<()> {
        if self.remove_pids_everywhere(&[pid])? == 0 {
            return Err(Errno::SRCH.into());
        }
        self.lock().killed.push(pid);
        Ok(())
    }

    fn sleep(&self, _duration: Duration) {}
}

// ----- fixtures -----

/// /proc/self/mountinfo captured on the CI machine kind (hybrid: v1 per controller, cgroup2
/// with only hugetlb at /sys/fs/cgroup/unified).
pub const HYBRID_CI_MOUNTINFO: &str = include_str!("../testdata/hybrid-ci-mountinfo.txt");
/// /proc/self/cgroup captured on the same machine (memory cgroup under /process_api/<id>).
pub const HYBRID_CI_PROC_SELF_CGROUP: &str =
    include_str!("../testdata/hybrid-ci-proc-self-cgroup.txt");
/// A Debian 12 systemd host (pure v2), process in `metanode.service` (see testdata/README.md).
pub const V2_DEBIAN12_SERVICE_MOUNTINFO: &str =
    include_str!("../testdata/v2-debian12-service-mountinfo.txt");
pub const V2_DEBIAN12_SERVICE_PROC_SELF_CGROUP: &str =
    include_str!("../testdata/v2-debian12-service-proc-self-cgroup.txt");
/// Our appliance: pure v2 at /sys/fs/cgroup, the agent (PID 1) in the root cgroup.
pub const V2_APPLIANCE_MOUNTINFO: &str = include_str!("../testdata/v2-appliance-mountinfo.txt");
pub const V2_APPLIANCE_PROC_SELF_CGROUP: &str =
    include_str!("../testdata/v2-appliance-proc-self-cgroup.txt");

/// The controllers a stock kernel offers in the v2 root (kernel print order).
pub const V2_ROOT_CONTROLLERS: &[&str] = &[
    "cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc",
];

const MEMORY_EVENTS_ZERO: &str = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n";
const CPU_STAT_ZERO: &str =
    "usage_usec 0\nuser_usec 0\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n";

/// Interface files of a v2 cgroup on a 6.x kernel with iocost, for the controllers we use.
pub fn v2_template() -> Vec<TemplateFile> {
    let t = TemplateFile::new;
    vec![
        t("cgroup.type", "domain\n", None),
        t("cgroup.events", "populated 0\nfrozen 0\n", None),
        t("cgroup.freeze", "0\n", None),
        t("cgroup.kill", "", None),
        t("cpu.stat", CPU_STAT_ZERO, None),
        t("memory.max", "max\n", Some("memory")),
        t("memory.swap.max", "max\n", Some("memory")),
        t("memory.peak", "0\n", Some("memory")),
        t("memory.current", "0\n", Some("memory")),
        t("memory.events", MEMORY_EVENTS_ZERO, Some("memory")),
        t("pids.max", "max\n", Some("pids")),
        t("pids.current", "0\n", Some("pids")),
        t("pids.peak", "0\n", Some("pids")),
        t("pids.events", "max 0\n", Some("pids")),
        t("cpu.max", "max 100000\n", Some("cpu")),
        t("cpu.weight", "100\n", Some("cpu")),
        t("io.weight", "default 100\n", Some("io")),
        t("io.max", "", Some("io")),
    ]
}

/// Interface files of a v1 cgroup in the hierarchy of `controller`, as on the CI machine kind
/// (6.18: blkio has only the BFQ weight, memory has memsw because swap accounting is on).
pub fn v1_template(controller: &str) -> Vec<TemplateFile> {
    let t = |name: &str, contents: &str| TemplateFile::new(name, contents, None);
    match controller {
        "memory" => vec![
            t("memory.limit_in_bytes", "9223372036854771712\n"),
            t("memory.memsw.limit_in_bytes", "9223372036854771712\n"),
            t("memory.max_usage_in_bytes", "0\n"),
            t("memory.usage_in_bytes", "0\n"),
            t(
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
            ),
        ],
        "pids" => vec![
            t("pids.max", "max\n"),
            t("pids.current", "0\n"),
            t("pids.peak", "0\n"),
            t("pids.events", "max 0\n"),
        ],
        "cpu" => vec![
            t("cpu.cfs_period_us", "100000\n"),
            t("cpu.cfs_quota_us", "-1\n"),
            t("cpu.shares", "1024\n"),
            t(
                "cpu.stat",
                "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n",
            ),
        ],
        "cpuacct" => vec![
            t("cpuacct.usage", "0\n"),
            t("cpuacct.stat", "user 0\nsystem 0\n"),
        ],
        "blkio" => vec![t("blkio.bfq.weight", "100\n")],
        "freezer" => vec![t("freezer.state", "THAWED\n")],
        _ => Vec::new(),
    }
}

/// The CI machine kind, from the captured texts: v1 cpu, cpuacct, cpuset, memory, devices,
/// freezer, blkio, pids (memory cgroup nested under /process_api/<id>); cgroup2 at
/// /sys/fs/cgroup/unified offering hugetlb.
pub fn hybrid_ci_host(root: &Path) -> Result<(Arc<DirFs>, CgroupLayout), FixtureError> {
    let fs = Arc::new(DirFs::new(root));
    for controller in [
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
    ] {
        let mount = Path::new("/sys/fs/cgroup").join(controller);
        fs.add_hierarchy(&mount, CgroupVersion::V1, &[], v1_template(controller))?;
    }
    fs.add_hierarchy(
        Path::new("/sys/fs/cgroup/unified"),
        CgroupVersion::V2,
        &["hugetlb"],
        v2_template(),
    )?;
    fs.mkdir(Path::new("/sys/fs/cgroup/memory/process_api"))?;
    fs.mkdir(Path::new(
        "/sys/fs/cgroup/memory/process_api/18126a8bb1a3cd564a319d927452652c",
    ))?;
    let layout =
        CgroupLayout::from_texts(fs.clone(), HYBRID_CI_MOUNTINFO, HYBRID_CI_PROC_SELF_CGROUP)?;
    Ok((fs, layout))
}

/// Our appliance: pure v2, the agent as PID 1 in the root cgroup, `enabled` already written to
/// the root's cgroup.subtree_control by PID 1's boot code.
pub fn v2_appliance_host(
    root: &Path,
    enabled: &[&str],
) -> Result<(Arc<DirFs>, CgroupLayout), FixtureError> {
    let fs = Arc::new(DirFs::new(root));
    let mount = Path::new("/sys/fs/cgroup");
    fs.add_hierarchy(mount, CgroupVersion::V2, V2_ROOT_CONTROLLERS, v2_template())?;
    fs.set_file(&mount.join("cgroup.procs"), "1\n")?;
    fs.set_file(&mount.join("cgroup.subtree_control"), &enabled.join(" "))?;
    let layout = CgroupLayout::from_texts(
        fs.clone(),
        V2_APPLIANCE_MOUNTINFO,
        V2_APPLIANCE_PROC_SELF_CGROUP,
    )?;
    Ok((fs, layout))
}

/// A Debian 12 systemd host: pure v2, the agent (pid 4242) inside `system.slice/metanode.service`
/// with memory, pids, cpu and io delegated down to that cgroup but not enabled in it.
pub fn v2_debian12_service_host(root: &Path) -> Result<(Arc<DirFs>, CgroupLayout), FixtureError> {
    let fs = Arc::new(DirFs::new(root));
    let mount = Path::new("/sys/fs/cgroup");
    fs.add_hierarchy(mount, CgroupVersion::V2, V2_ROOT_CONTROLLERS, v2_template())?;
    fs.set_file(&mount.join("cgroup.subtree_control"), "cpu io memory pids")?;
    let slice = mount.join("system.slice");
    fs.mkdir(&slice)?;
    fs.write(
        &slice.join("cgroup.subtree_control"),
        "+cpu +io +memory +pids",
    )?;
    let service = slice.join("metanode.service");
    fs.mkdir(&service)?;
    fs.write(&service.join("cgroup.procs"), "4242")?;
    let layout = CgroupLayout::from_texts(
        fs.clone(),
        V2_DEBIAN12_SERVICE_MOUNTINFO,
        V2_DEBIAN12_SERVICE_PROC_SELF_CGROUP,
    )?;
    Ok((fs, layout))
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot build the fake cgroup tree: {0}")]
    Io(#[from] io::Error),
    #[error("the fixture's texts do not give a layout: {0}")]
    Layout(#[from] LayoutError),
}
