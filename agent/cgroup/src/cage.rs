//! One cage's cgroup: created under `<our cgroup>/metanode-docklock/<name>` in every hierarchy
//! it needs, limits written, processes added, usage read, then killed and removed.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::constants::{
    BLKIO_WEIGHT_MAX, BLKIO_WEIGHT_MIN, CAGES_DIR_NAME, CPU_PERIOD_US_DEFAULT, CPU_PERIOD_US_MAX,
    CPU_PERIOD_US_MIN, CPU_QUOTA_US_MAX, CPU_QUOTA_US_MIN, CPU_SHARES_MAX, CPU_SHARES_MIN,
    FREEZE_WAIT_MS_MAX, KILL_WAIT_MS_MAX, MEMORY_MAX_BYTES_MIN, PIDS_IN_MESSAGE_COUNT_MAX,
    PIDS_MAX_LIMIT, POLL_INTERVAL_MS, WEIGHT_MAX, WEIGHT_MIN,
};
use crate::fs::CgroupFs;
use crate::layout::{CgroupLayout, Controller, Placement};
use crate::mode::{CgroupMode, CgroupVersion};
use crate::name::{NameError, validate_name};
use crate::parse;

/// Limits for one cage, in cgroup v2 units; `None` leaves the kernel default (no limit).
/// Each is applied or `create` fails: none is ever dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// memory.max (v1 memory.limit_in_bytes).
    pub memory_max_bytes: Option<u64>,
    /// Swap alone, as v2 memory.swap.max. On v1 it becomes memory.memsw.limit_in_bytes =
    /// memory_max_bytes + this, so v1 needs memory_max_bytes too. (OCI's `memory.swap` is
    /// memory+swap: the caller converts.)
    pub memory_swap_max_bytes: Option<u64>,
    /// pids.max, counted in tasks (threads included).
    pub pids_max: Option<u64>,
    /// cpu.max quota (v1 cpu.cfs_quota_us).
    pub cpu_quota_us: Option<u64>,
    /// cpu.max period (v1 cpu.cfs_period_us); 100000 when only a quota is given.
    pub cpu_period_us: Option<u64>,
    /// cpu.weight 1..=10000 (v1 cpu.shares via runc's mapping: 1 → 2, 10000 → 262144).
    pub cpu_weight: Option<u64>,
    /// io.weight 1..=10000 (v1 blkio.weight / BFQ weight via runc's mapping onto 10..=1000).
    pub io_weight: Option<u16>,
}

/// What a cage used, read from the kernel's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// v2 memory.peak; v1 memory.max_usage_in_bytes. 0 when memory is unused (see `mode`).
    pub memory_peak_bytes: u64,
    /// v2 cpu.stat usage_usec; v1 cpuacct.usage / 1000.
    pub cpu_usage_us: u64,
    /// pids.peak.
    pub pids_peak: u64,
    /// v2 memory.events oom_kill; v1 memory.oom_control oom_kill.
    pub oom_kills: u64,
    /// pids.events max: forks refused by the pids limit.
    pub pids_max_hits: u64,
}

/// One directory a cage created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CageDir {
    pub version: CgroupVersion,
    pub path: PathBuf,
}

/// How removal kills the cage's tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillMethod {
    /// v2 `cgroup.kill` (atomic, kernel ≥ 5.14).
    V2Kill,
    /// v1 freezer: freeze, SIGKILL every task, thaw (tasks cannot fork while frozen).
    V1Freezer,
    /// SIGKILL every listed task until none is left (no freezer available).
    Signals,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("limit {field} = {value} is out of range: {expected}")]
    InvalidLimit {
        field: &'static str,
        value: u64,
        expected: String,
    },
    #[error("limit {field} needs the {controller} controller, which is not available: {detail}")]
    ControllerUnavailable {
        field: &'static str,
        controller: &'static str,
        detail: String,
    },
    #[error("no cgroup controller (memory, pids, cpu, io) is available to this process: {detail}")]
    NoController { detail: String },
    #[error(
        "limit memory_swap_max_bytes needs memory_max_bytes on cgroup v1, where swap is limited \
         as memory+swap (memory.memsw.limit_in_bytes)"
    )]
    SwapNeedsMemoryOnV1,
    #[error(
        "memory_max_bytes + memory_swap_max_bytes overflows u64 (memory.memsw.limit_in_bytes on cgroup v1)"
    )]
    SwapOverflow,
    #[error("cage cgroup {} already exists (a stale cage of that name, or the name is in use)", .path.display())]
    AlreadyExists { path: PathBuf },
    #[error("cannot create cgroup {}: {source}", .path.display())]
    Mkdir { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot enable controllers `{controllers}` in {}: {source}", .path.display())]
    EnableControllers {
        path: PathBuf,
        controllers: String,
        source: io::Error,
    },
    #[error(
        "cannot enable controllers `{controllers}` in {}: cgroup v2's \"no internal processes\" rule \
         lets a non-root cgroup either hold processes or hand controllers to its children, not both, \
         and it holds processes (pids {pids}); run the agent in a leaf cgroup of its own below it (for \
         example move it into .../agent) and create cages from there, or run it in the root cgroup",
        .path.display()
    )]
    NoInternalProcesses {
        path: PathBuf,
        controllers: String,
        pids: String,
    },
    #[error("limit {field} cannot be applied: {} does not exist ({why})", .path.display())]
    MissingFile {
        field: &'static str,
        path: PathBuf,
        why: &'static str,
    },
    #[error("cannot write {value:?} to {} for limit {field}: {source}", .path.display())]
    WriteLimit {
        field: &'static str,
        path: PathBuf,
        value: String,
        source: io::Error,
    },
}

/// The parents' `tasks` files, opened by [`CageCgroup::prepare_leave`].
#[derive(Debug)]
pub struct PreparedLeave {
    files: Vec<crate::fs::OpenedFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("pid {pid} is not a process id")]
    InvalidPid { pid: i32 },
    #[error("cannot move the calling process into {} (wrote \"0\"): {source}", .path.display())]
    WriteSelf { path: PathBuf, source: io::Error },
    #[error("cannot add pid {pid} to {}: {source}", .path.display())]
    Write {
        pid: i32,
        path: PathBuf,
        source: io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot parse {}: {detail}", .path.display())]
    Parse { path: PathBuf, detail: String },
}

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot parse {}: {detail}", .path.display())]
    Parse { path: PathBuf, detail: String },
    #[error("cannot kill the tasks of {}: {source}", .path.display())]
    Kill { path: PathBuf, source: io::Error },
    #[error("cannot thaw {} after killing its tasks (they stay frozen and cannot die): {source}", .path.display())]
    Thaw { path: PathBuf, source: io::Error },
    #[error("{} still has tasks (pids {pids}) {KILL_WAIT_MS_MAX} ms after SIGKILL (uninterruptible sleep?)", .path.display())]
    StillPopulated { path: PathBuf, pids: String },
    #[error("cannot remove {}: {source}", .path.display())]
    Rmdir { path: PathBuf, source: io::Error },
}

/// The cgroup of one cage. Dropping it without [`CageCgroup::kill_and_remove`] still kills
/// and removes (best effort, failures logged), so a failed launch or test leaves nothing.
#[derive(Debug)]
pub struct CageCgroup {
    fs: Arc<dyn CgroupFs>,
    name: String,
    /// Created directories, in creation order.
    dirs: Vec<CageDir>,
    memory: Option<CgroupVersion>,
    memory_dir: PathBuf,
    pids: Option<CgroupVersion>,
    pids_dir: PathBuf,
    cpu_acct: Option<CgroupVersion>,
    cpu_acct_dir: PathBuf,
    mode: CgroupMode,
    kill: KillMethod,
    /// The dir whose cgroup.kill / freezer.state removal uses.
    kill_dir: PathBuf,
    removed: bool,
}

/// Which placement each duty of the cage uses.
#[derive(Debug)]
struct Plan {
    memory: Option<Placement>,
    pids: Option<Placement>,
    cpu_limit: Option<Placement>,
    cpu_acct: Option<Placement>,
    io: Option<Placement>,
    freezer: Option<Placement>,
}

impl CageCgroup {
    /// Creates the cage's cgroup in every hierarchy it needs and applies `limits`.
    /// Memory, pids and CPU accounting are used wherever available even without a limit
    /// (`mode()` tells which); a limit whose controller is unavailable is an error.
    pub fn create(
        layout: &CgroupLayout,
        name: &str,
        limits: &CgroupLimits,
    ) -> Result<CageCgroup, CreateError> {
        validate_name(name)?;
        validate_limits(limits)?;
        let plan = plan(layout, limits)?;
        let mode = CgroupMode {
            memory: plan.memory.as_ref().map(|p| p.version),
            pids: plan.pids.as_ref().map(|p| p.version),
            cpu: plan
                .cpu_limit
                .as_ref()
                .or(plan.cpu_acct.as_ref())
                .map(|p| p.version),
            io: plan.io.as_ref().map(|p| p.version),
        };
        let cage_dir = |placement: &Option<Placement>| {
            placement
                .as_ref()
                .map(|p| p.dir.join(CAGES_DIR_NAME).join(name))
                .unwrap_or_default()
        };
        let mut cage = CageCgroup {
            fs: layout.fs().clone(),
            name: name.to_string(),
            dirs: Vec::new(),
            memory: mode.memory,
            memory_dir: cage_dir(&plan.memory),
            pids: mode.pids,
            pids_dir: cage_dir(&plan.pids),
            cpu_acct: plan.cpu_acct.as_ref().map(|p| p.version),
            cpu_acct_dir: cage_dir(&plan.cpu_acct),
            mode,
            kill: KillMethod::Signals,
            kill_dir: PathBuf::new(),
            removed: false,
        };
        // From here on an early return drops `cage`, which removes what was created.
        let placements = [
            &plan.memory,
            &plan.pids,
            &plan.cpu_limit,
            &plan.cpu_acct,
            &plan.io,
            &plan.freezer,
        ];
        let mut bases: Vec<&Placement> = Vec::new();
        for placement in placements.into_iter().flatten() {
            if !bases.iter().any(|b| b.dir == placement.dir) {
                bases.push(placement);
            }
        }
        let v2_enable: Vec<&'static str> = [
            (&plan.memory, Controller::Memory),
            (&plan.pids, Controller::Pids),
            (&plan.cpu_limit, Controller::Cpu),
            (&plan.io, Controller::Io),
        ]
        .into_iter()
        .filter(|(p, _)| p.as_ref().is_some_and(|p| p.version == CgroupVersion::V2))
        .filter_map(|(_, c)| c.v2_name())
        .collect();
        for base in bases {
            let parent = base.dir.join(CAGES_DIR_NAME);
            let dir = parent.join(name);
            if base.version == CgroupVersion::V2 {
                cage.enable_v2(&base.dir, &v2_enable)?;
                cage.mkdir_parent(&parent)?;
                cage.enable_v2(&parent, &v2_enable)?;
            } else {
                cage.mkdir_parent(&parent)?;
            }
            match cage.fs.mkdir(&dir) {
                Ok(()) => cage.dirs.push(CageDir {
                    version: base.version,
                    path: dir,
                }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(CreateError::AlreadyExists { path: dir });
                }
                Err(source) => return Err(CreateError::Mkdir { path: dir, source }),
            }
        }
        cage.choose_kill_method(&plan);
        cage.apply_limits(&plan, limits)?;
        Ok(cage)
    }

    /// Moves `pid` (and, for tasks it creates later, their children) into the cage in every
    /// hierarchy. On error the process may be in some hierarchies only: kill the cage.
    pub fn add_process(&self, pid: i32) -> Result<(), JoinError> {
        if pid <= 0 {
            return Err(JoinError::InvalidPid { pid });
        }
        for dir in &self.dirs {
            let path = dir.path.join("cgroup.procs");
            self.fs
                .write(&path, &pid.to_string())
                .map_err(|source| JoinError::Write { pid, path, source })?;
        }
        Ok(())
    }

    /// Moves the calling process into the cage in every hierarchy, by writing "0" (the caller)
    /// instead of a pid: on v1 to `tasks`, which moves the calling thread only, so the caller must
    /// be single-threaded (a freshly forked launcher child is). Why not [`Self::add_process`]
    /// from the parent: writing a pid, or writing to v1 `cgroup.procs`, takes the kernel's global
    /// cgroup_threadgroup_rwsem for writing, whose rcu_sync waits for an RCU grace period when the
    /// lock has been idle (3-16 ms per spawn on the CI machine); a thread moving itself skips that
    /// lock. On v2 the only self-move is `cgroup.procs` "0", which still takes the lock: there the
    /// launcher creates the process inside the cgroup instead (clone3 CLONE_INTO_CGROUP on
    /// [`Self::v2_dir`]) and passes `v2_joined`, so only the v1 hierarchies are written here.
    pub fn add_self(&self, v2_joined: bool) -> Result<(), JoinError> {
        for dir in &self.dirs {
            let file = match dir.version {
                CgroupVersion::V1 => "tasks",
                CgroupVersion::V2 if v2_joined => continue,
                CgroupVersion::V2 => "cgroup.procs",
            };
            let path = dir.path.join(file);
            self.fs
                .write(&path, "0")
                .map_err(|source| JoinError::WriteSelf { path, source })?;
        }
        Ok(())
    }

    /// Moves the calling (single-threaded) process out of the cage, into the parent of the
    /// cage's directory in every hierarchy, by writing "0" to its `tasks` — the same cheap
    /// self-move as [`Self::add_self`] — so the cage can be removed while the caller finishes
    /// exiting. Only on v1: returns `Ok(false)` without moving anything when a hierarchy is v2,
    /// where the parent holds no processes ("no internal processes") and the only self-move
    /// takes the global lock. A launcher process leaves only after every workload process is
    /// gone.
    pub fn leave_self(&self) -> Result<bool, JoinError> {
        match self.prepare_leave()? {
            Some(prepared) => {
                self.leave_prepared(prepared)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// [`Self::leave_self`] in two steps: opens the parents' `tasks` files now, for
    /// [`Self::leave_prepared`] to write later. cgroup v1 checks that write against the
    /// credentials the file was opened with, so a launcher process that joins the cage and
    /// then becomes an unprivileged id in a user namespace (cage root maps to an unprivileged
    /// host uid, which may not write the root-owned `tasks` files) opens them before the change.
    /// `None` when a hierarchy is v2 (see [`Self::leave_self`]).
    pub fn prepare_leave(&self) -> Result<Option<PreparedLeave>, JoinError> {
        if self.dirs.iter().any(|d| d.version == CgroupVersion::V2) {
            return Ok(None);
        }
        let mut files = Vec::with_capacity(self.dirs.len());
        for dir in &self.dirs {
            let Some(parent) = dir.path.parent() else {
                continue;
            };
            let path = parent.join("tasks");
            files.push(
                self.fs
                    .open_for_write(&path)
                    .map_err(|source| JoinError::WriteSelf { path, source })?,
            );
        }
        Ok(Some(PreparedLeave { files }))
    }

    /// Moves the calling (single-threaded) process into the parents opened by
    /// [`Self::prepare_leave`] (writes "0" to each `tasks`).
    pub fn leave_prepared(&self, prepared: PreparedLeave) -> Result<(), JoinError> {
        for mut file in prepared.files {
            self.fs
                .write_opened(&mut file, "0")
                .map_err(|source| JoinError::WriteSelf {
                    path: file.path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The cage's directory on the unified (v2) hierarchy, when a controller uses v2: a process
    /// created with clone3(CLONE_INTO_CGROUP) on an fd of it starts inside the cage there, with
    /// no migration at all.
    pub fn v2_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.version == CgroupVersion::V2)
            .map(|d| d.path.as_path())
    }

    /// Reads the cage's counters (peaks and event counts since creation).
    pub fn usage(&self) -> Result<CgroupUsage, UsageError> {
        let mut usage = CgroupUsage::default();
        if let Some(version) = self.memory {
            let (peak_file, oom_file) = match version {
                CgroupVersion::V2 => ("memory.peak", "memory.events"),
                CgroupVersion::V1 => ("memory.max_usage_in_bytes", "memory.oom_control"),
            };
            usage.memory_peak_bytes = self.read_counter(&self.memory_dir, peak_file, None)?;
            usage.oom_kills = self.read_counter(&self.memory_dir, oom_file, Some("oom_kill"))?;
        }
        if self.pids.is_some() {
            usage.pids_peak = self.read_counter(&self.pids_dir, "pids.peak", None)?;
            usage.pids_max_hits = self.read_counter(&self.pids_dir, "pids.events", Some("max"))?;
        }
        match self.cpu_acct {
            Some(CgroupVersion::V2) => {
                usage.cpu_usage_us =
                    self.read_counter(&self.cpu_acct_dir, "cpu.stat", Some("usage_usec"))?;
            }
            Some(CgroupVersion::V1) => {
                usage.cpu_usage_us =
                    self.read_counter(&self.cpu_acct_dir, "cpuacct.usage", None)? / 1000;
            }
            None => {}
        }
        Ok(usage)
    }

    /// Which version each controller used.
    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directories created, one per hierarchy used, in creation order.
    pub fn dirs(&self) -> &[CageDir] {
        &self.dirs
    }

    /// How [`CageCgroup::kill_and_remove`] will kill the tasks.
    pub fn kill_method(&self) -> &KillMethod {
        &self.kill
    }

    /// Kills every task in the cage, waits until none is left, removes every directory.
    pub fn kill_and_remove(mut self) -> Result<(), RemoveError> {
        // Marked first: a failure is reported here, and Drop must not wait all over again.
        self.removed = true;
        self.remove()
    }

    fn read_counter(&self, dir: &Path, file: &str, key: Option<&str>) -> Result<u64, UsageError> {
        let path = dir.join(file);
        let text = self.fs.read(&path).map_err(|source| UsageError::Read {
            path: path.clone(),
            source,
        })?;
        match key {
            Some(key) => parse::parse_keyed_u64(&text, key),
            None => parse::parse_single_u64(&text),
        }
        .map_err(|detail| UsageError::Parse { path, detail })
    }

    fn mkdir_parent(&self, parent: &Path) -> Result<(), CreateError> {
        match self.fs.mkdir(parent) {
            Ok(()) => Ok(()),
            // Shared by all cages and never removed (removal would race a concurrent create).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(CreateError::Mkdir {
                path: parent.to_path_buf(),
                source,
            }),
        }
    }

    /// Enables `wanted` v2 controllers for the children of `dir`, writing only what is missing.
    fn enable_v2(&self, dir: &Path, wanted: &[&str]) -> Result<(), CreateError> {
        let control = dir.join("cgroup.subtree_control");
        let enabled = self.fs.read(&control).map_err(|source| CreateError::Read {
            path: control.clone(),
            source,
        })?;
        let enabled = parse::parse_controller_list(&enabled);
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|w| !enabled.iter().any(|e| e == w))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let line = missing
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        match self.fs.write(&control, &line) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                Err(CreateError::NoInternalProcesses {
                    path: dir.to_path_buf(),
                    controllers: line,
                    pids: self
                        .fs
                        .read(&dir.join("cgroup.procs"))
                        .ok()
                        .and_then(|text| parse::parse_pids(&text).ok())
                        .map(|pids| pid_list(&pids))
                        .unwrap_or_else(|| "unreadable cgroup.procs".to_string()),
                })
            }
            Err(source) => Err(CreateError::EnableControllers {
                path: dir.to_path_buf(),
                controllers: line,
                source,
            }),
        }
    }

    fn choose_kill_method(&mut self, plan: &Plan) {
        let v2 = self
            .dirs
            .iter()
            .find(|d| d.version == CgroupVersion::V2)
            .map(|d| d.path.clone());
        if let Some(dir) = v2.filter(|dir| self.fs.exists(&dir.join("cgroup.kill"))) {
            self.kill = KillMethod::V2Kill;
            self.kill_dir = dir;
        } else if let Some(freezer) = &plan.freezer {
            self.kill = KillMethod::V1Freezer;
            self.kill_dir = freezer.dir.join(CAGES_DIR_NAME).join(&self.name);
        }
    }

    fn write_limit(
        &self,
        dir: &Path,
        file: &str,
        field: &'static str,
        value: String,
    ) -> Result<(), CreateError> {
        let path = dir.join(file);
        self.fs
            .write(&path, &value)
            .map_err(|source| CreateError::WriteLimit {
                field,
                path,
                value,
                source,
            })
    }

    /// Picks the first of `files` that exists in `dir`.
    fn first_existing(
        &self,
        dir: &Path,
        files: &[&str],
        field: &'static str,
        why: &'static str,
    ) -> Result<String, CreateError> {
        files
            .iter()
            .find(|f| self.fs.exists(&dir.join(f)))
            .map(|f| f.to_string())
            .ok_or_else(|| CreateError::MissingFile {
                field,
                path: dir.join(files.first().copied().unwrap_or("")),
                why,
            })
    }

    fn apply_limits(&self, plan: &Plan, limits: &CgroupLimits) -> Result<(), CreateError> {
        let dir_of = |p: &Placement| p.dir.join(CAGES_DIR_NAME).join(&self.name);
        if let Some(memory) = &plan.memory {
            let dir = dir_of(memory);
            match memory.version {
                CgroupVersion::V2 => {
                    if let Some(max) = limits.memory_max_bytes {
                        self.write_limit(&dir, "memory.max", "memory_max_bytes", max.to_string())?;
                    }
                    if let Some(swap) = limits.memory_swap_max_bytes {
                        let file = self.first_existing(
                            &dir,
                            &["memory.swap.max"],
                            "memory_swap_max_bytes",
                            "kernel without swap support (CONFIG_SWAP / CONFIG_MEMCG_SWAP)",
                        )?;
                        self.write_limit(&dir, &file, "memory_swap_max_bytes", swap.to_string())?;
                    }
                }
                CgroupVersion::V1 => {
                    if let Some(max) = limits.memory_max_bytes {
                        // Before memsw: the kernel refuses memsw below the memory limit.
                        self.write_limit(
                            &dir,
                            "memory.limit_in_bytes",
                            "memory_max_bytes",
                            max.to_string(),
                        )?;
                    }
                    if let Some(swap) = limits.memory_swap_max_bytes {
                        let max = limits
                            .memory_max_bytes
                            .ok_or(CreateError::SwapNeedsMemoryOnV1)?;
                        let total = max.checked_add(swap).ok_or(CreateError::SwapOverflow)?;
                        let file = self.first_existing(
                            &dir,
                            &["memory.memsw.limit_in_bytes"],
                            "memory_swap_max_bytes",
                            "swap accounting is off: boot with swapaccount=1",
                        )?;
                        self.write_limit(&dir, &file, "memory_swap_max_bytes", total.to_string())?;
                    }
                }
            }
        }
        if let (Some(pids), Some(max)) = (&plan.pids, limits.pids_max) {
            self.write_limit(&dir_of(pids), "pids.max", "pids_max", max.to_string())?;
        }
        if let Some(cpu) = &plan.cpu_limit {
            let dir = dir_of(cpu);
            let bandwidth = limits.cpu_quota_us.is_some() || limits.cpu_period_us.is_some();
            let period = limits.cpu_period_us.unwrap_or(CPU_PERIOD_US_DEFAULT);
            match cpu.version {
                CgroupVersion::V2 => {
                    if bandwidth {
                        let quota = limits
                            .cpu_quota_us
                            .map_or_else(|| "max".to_string(), |q| q.to_string());
                        let field = if limits.cpu_quota_us.is_some() {
                            "cpu_quota_us"
                        } else {
                            "cpu_period_us"
                        };
                        self.write_limit(&dir, "cpu.max", field, format!("{quota} {period}"))?;
                    }
                    if let Some(weight) = limits.cpu_weight {
                        self.write_limit(&dir, "cpu.weight", "cpu_weight", weight.to_string())?;
                    }
                }
                CgroupVersion::V1 => {
                    if bandwidth {
                        self.write_limit(
                            &dir,
                            "cpu.cfs_period_us",
                            "cpu_period_us",
                            period.to_string(),
                        )?;
                    }
                    if let Some(quota) = limits.cpu_quota_us {
                        self.write_limit(
                            &dir,
                            "cpu.cfs_quota_us",
                            "cpu_quota_us",
                            quota.to_string(),
                        )?;
                    }
                    if let Some(weight) = limits.cpu_weight {
                        self.write_limit(
                            &dir,
                            "cpu.shares",
                            "cpu_weight",
                            cpu_weight_to_shares(weight).to_string(),
                        )?;
                    }
                }
            }
        }
        if let (Some(io), Some(weight)) = (&plan.io, limits.io_weight) {
            let dir = dir_of(io);
            let weight = u64::from(weight);
            match io.version {
                CgroupVersion::V2 => {
                    let file = self.first_existing(&dir, &["io.weight", "io.bfq.weight"], "io_weight", "neither the iocost controller (io.weight) nor the BFQ scheduler (io.bfq.weight) is available")?;
                    let value = if file == "io.weight" {
                        format!("default {weight}")
                    } else {
                        io_weight_to_blkio(weight).to_string()
                    };
                    self.write_limit(&dir, &file, "io_weight", value)?;
                }
                CgroupVersion::V1 => {
                    let file = self.first_existing(&dir, &["blkio.weight", "blkio.bfq.weight"], "io_weight", "neither CFQ (blkio.weight) nor BFQ (blkio.bfq.weight) weights are available")?;
                    self.write_limit(
                        &dir,
                        &file,
                        "io_weight",
                        io_weight_to_blkio(weight).to_string(),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Pids in every cage dir (deduplicated). A dir already gone counts as empty.
    fn tasks(&self) -> Result<Vec<(PathBuf, Vec<i32>)>, RemoveError> {
        let mut all = Vec::new();
        for dir in &self.dirs {
            let path = dir.path.join("cgroup.procs");
            let text = match self.fs.read(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(RemoveError::Read { path, source }),
            };
            let pids = parse::parse_pids(&text).map_err(|detail| RemoveError::Parse {
                path: path.clone(),
                detail,
            })?;
            if !pids.is_empty() {
                all.push((dir.path.clone(), pids));
            }
        }
        Ok(all)
    }

    fn signal_all(&self, tasks: &[(PathBuf, Vec<i32>)]) -> Result<(), RemoveError> {
        for (dir, pids) in tasks {
            for pid in pids {
                match self.fs.kill(*pid) {
                    Ok(()) => {}
                    // Exited between listing and signalling.
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => {}
                    Err(source) => {
                        return Err(RemoveError::Kill {
                            path: dir.clone(),
                            source,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn poll(&self) {
        self.fs.sleep(Duration::from_millis(POLL_INTERVAL_MS));
    }

    fn freeze_and_kill(&self) -> Result<(), RemoveError> {
        let state = self.kill_dir.join("freezer.state");
        if let Err(error) = self.fs.write(&state, "FROZEN") {
            // Killing without the freezer still works; a fork racing the kill is caught by
            // the retry loop in `remove`.
            tracing::warn!(path = %state.display(), %error, "cannot freeze the cage; killing unfrozen");
            return self.signal_all(&self.tasks()?);
        }
        for _ in 0..FREEZE_WAIT_MS_MAX / POLL_INTERVAL_MS {
            match self.fs.read(&state) {
                Ok(text) if text.trim() == "FROZEN" => break,
                Ok(_) => self.poll(),
                Err(source) => {
                    return Err(RemoveError::Read {
                        path: state,
                        source,
                    });
                }
            }
        }
        let killed = self.tasks().and_then(|tasks| self.signal_all(&tasks));
        // Thaw even when killing failed: frozen tasks with a pending SIGKILL die only on thaw.
        self.fs
            .write(&state, "THAWED")
            .map_err(|source| RemoveError::Thaw {
                path: state.clone(),
                source,
            })?;
        killed
    }

    /// Kills every task of the cage by the cgroup's own mechanism (v2 cgroup.kill, v1 freeze +
    /// kill + thaw, or signals as the last resort) without removing it: a launcher's timeout uses
    /// this, so no pid read from cgroup.procs can be reused by another process before the kill.
    pub fn kill_all(&self) -> Result<(), RemoveError> {
        self.kill_listed().map(|_| ())
    }

    /// [`Self::kill_all`]; false when the cage was already empty (nothing was signalled).
    fn kill_listed(&self) -> Result<bool, RemoveError> {
        // An empty cage needs no freeze or kill.
        if self.tasks()?.is_empty() {
            return Ok(false);
        }
        match self.kill {
            KillMethod::V2Kill => {
                let path = self.kill_dir.join("cgroup.kill");
                match self.fs.write(&path, "1") {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(source) => return Err(RemoveError::Kill { path, source }),
                }
            }
            KillMethod::V1Freezer => self.freeze_and_kill()?,
            KillMethod::Signals => self.signal_all(&self.tasks()?)?,
        }
        Ok(true)
    }

    fn remove(&mut self) -> Result<(), RemoveError> {
        // Usually the launcher has reaped everything: then each rmdir succeeds at once, and no
        // procs file is read (4 opens and reads per spawn on v1). A cgroup that still holds a
        // task refuses rmdir with EBUSY; what is left then goes the kill-and-wait way below.
        while let Some(dir) = self.dirs.last() {
            match self.fs.rmdir(&dir.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => break,
            }
            self.dirs.pop();
        }
        if self.dirs.is_empty() {
            return Ok(());
        }
        // An empty cage is neither killed nor listed again (a cgroup whose last task is gone
        // gets no new one but by a write to it).
        let mut remaining = if self.kill_listed()? {
            self.tasks()?
        } else {
            Vec::new()
        };
        for _ in 0..KILL_WAIT_MS_MAX / POLL_INTERVAL_MS {
            if remaining.is_empty() {
                break;
            }
            // Tasks forked while the kill was under way (Signals mode) get theirs now.
            self.signal_all(&remaining)?;
            self.poll();
            remaining = self.tasks()?;
        }
        if let Some((path, pids)) = remaining.into_iter().next() {
            return Err(RemoveError::StillPopulated {
                path,
                pids: pid_list(&pids),
            });
        }
        let mut first_error = None;
        while let Some(dir) = self.dirs.pop() {
            if let Err(error) = self.rmdir_when_released(&dir.path) {
                tracing::warn!(%error, "cannot remove a cage cgroup");
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// rmdir, retrying EBUSY briefly: the kernel may still be releasing the last exited task.
    fn rmdir_when_released(&self, path: &Path) -> Result<(), RemoveError> {
        let mut attempts_left = KILL_WAIT_MS_MAX / POLL_INTERVAL_MS;
        loop {
            match self.fs.rmdir(path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::ResourceBusy && attempts_left > 0 => {
                    attempts_left -= 1;
                    self.poll();
                }
                Err(source) => {
                    return Err(RemoveError::Rmdir {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            }
        }
    }
}

impl Drop for CageCgroup {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        if let Err(error) = self.remove() {
            tracing::warn!(cage = %self.name, %error, "cage cgroup left behind");
        }
    }
}

fn check_range(
    field: &'static str,
    value: Option<u64>,
    min: u64,
    max: u64,
) -> Result<(), CreateError> {
    match value {
        Some(value) if !(min..=max).contains(&value) => Err(CreateError::InvalidLimit {
            field,
            value,
            expected: format!("{min}..={max}"),
        }),
        _ => Ok(()),
    }
}

fn validate_limits(limits: &CgroupLimits) -> Result<(), CreateError> {
    check_range(
        "memory_max_bytes",
        limits.memory_max_bytes,
        MEMORY_MAX_BYTES_MIN,
        u64::MAX,
    )?;
    check_range("pids_max", limits.pids_max, 1, PIDS_MAX_LIMIT)?;
    check_range(
        "cpu_quota_us",
        limits.cpu_quota_us,
        CPU_QUOTA_US_MIN,
        CPU_QUOTA_US_MAX,
    )?;
    check_range(
        "cpu_period_us",
        limits.cpu_period_us,
        CPU_PERIOD_US_MIN,
        CPU_PERIOD_US_MAX,
    )?;
    check_range("cpu_weight", limits.cpu_weight, WEIGHT_MIN, WEIGHT_MAX)?;
    check_range(
        "io_weight",
        limits.io_weight.map(u64::from),
        WEIGHT_MIN,
        WEIGHT_MAX,
    )
}

/// Resolves where each duty goes; a limit without a controller is an error here, before any
/// directory exists.
fn plan(layout: &CgroupLayout, limits: &CgroupLimits) -> Result<Plan, CreateError> {
    let required = |controller: Controller, field: &'static str| {
        layout
            .placement(controller)
            .ok_or_else(|| CreateError::ControllerUnavailable {
                field,
                controller: controller.v2_name().unwrap_or(controller.v1_name()),
                detail: layout.explain_missing(controller),
            })
    };
    let memory = match (limits.memory_max_bytes, limits.memory_swap_max_bytes) {
        (Some(_), _) => Some(required(Controller::Memory, "memory_max_bytes")?),
        (None, Some(_)) => Some(required(Controller::Memory, "memory_swap_max_bytes")?),
        (None, None) => layout.placement(Controller::Memory),
    };
    if memory
        .as_ref()
        .is_some_and(|m| m.version == CgroupVersion::V1)
        && limits.memory_swap_max_bytes.is_some()
        && limits.memory_max_bytes.is_none()
    {
        return Err(CreateError::SwapNeedsMemoryOnV1);
    }
    if memory
        .as_ref()
        .is_some_and(|m| m.version == CgroupVersion::V1)
        && let (Some(max), Some(swap)) = (limits.memory_max_bytes, limits.memory_swap_max_bytes)
        && max.checked_add(swap).is_none()
    {
        return Err(CreateError::SwapOverflow);
    }
    let pids = match limits.pids_max {
        Some(_) => Some(required(Controller::Pids, "pids_max")?),
        None => layout.placement(Controller::Pids),
    };
    let cpu_field = [
        (limits.cpu_quota_us, "cpu_quota_us"),
        (limits.cpu_period_us, "cpu_period_us"),
        (limits.cpu_weight, "cpu_weight"),
    ]
    .into_iter()
    .find_map(|(value, field)| value.map(|_| field));
    let cpu_limit = cpu_field
        .map(|field| required(Controller::Cpu, field))
        .transpose()?;
    let cpu_acct = layout.placement(Controller::CpuAcct);
    let io = limits
        .io_weight
        .map(|_| required(Controller::Io, "io_weight"))
        .transpose()?;
    let any_v2 = [&memory, &pids, &cpu_limit, &cpu_acct, &io]
        .into_iter()
        .any(|p| p.as_ref().is_some_and(|p| p.version == CgroupVersion::V2));
    // The freezer is only needed to kill v1-only cages without fork races.
    let freezer = if any_v2 {
        None
    } else {
        layout.placement(Controller::Freezer)
    };
    if [&memory, &pids, &cpu_limit, &cpu_acct, &io]
        .iter()
        .all(|p| p.is_none())
    {
        return Err(CreateError::NoController {
            detail: layout.explain_missing(Controller::Memory),
        });
    }
    Ok(Plan {
        memory,
        pids,
        cpu_limit,
        cpu_acct,
        io,
        freezer,
    })
}

/// runc's cgroup v2 → v1 conversion: weight 1..=10000 onto shares 2..=262144.
pub fn cpu_weight_to_shares(weight: u64) -> u64 {
    let weight = weight.clamp(WEIGHT_MIN, WEIGHT_MAX);
    CPU_SHARES_MIN
        + (weight - WEIGHT_MIN) * (CPU_SHARES_MAX - CPU_SHARES_MIN) / (WEIGHT_MAX - WEIGHT_MIN)
}

/// runc's io.weight ↔ blkio.weight conversion: weight 1..=10000 onto 10..=1000.
pub fn io_weight_to_blkio(weight: u64) -> u64 {
    let weight = weight.clamp(WEIGHT_MIN, WEIGHT_MAX);
    BLKIO_WEIGHT_MIN
        + (weight - WEIGHT_MIN) * (BLKIO_WEIGHT_MAX - BLKIO_WEIGHT_MIN) / (WEIGHT_MAX - WEIGHT_MIN)
}

fn pid_list(pids: &[i32]) -> String {
    let mut list: Vec<String> = pids
        .iter()
        .take(PIDS_IN_MESSAGE_COUNT_MAX)
        .map(i32::to_string)
        .collect();
    if pids.len() > PIDS_IN_MESSAGE_COUNT_MAX {
        list.push(format!(
            "and {} more",
            pids.len() - PIDS_IN_MESSAGE_COUNT_MAX
        ));
    }
    list.join(", ")
}
