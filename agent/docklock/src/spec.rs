//! Strict loading of OCI runtime-spec bundles (config.json + rootfs), versions 1.0 to 1.2.
//!
//! Every field of config.json is either understood and validated, or refused with an error that
//! names its JSON path: a cage that silently ignored, say, `linux.seccomp` or a device rule would
//! run with a policy its author never reviewed. The serde structs deny unknown fields; fields the
//! spec defines but DockLock does not implement are declared as [`Refused`] so the error can say
//! why. The validated result is a [`CageSpec`], which the launcher trusts without re-checking.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::limits;

// ------------------------------------------------------------------------------------------------
// Validated types
// ------------------------------------------------------------------------------------------------

/// An absolute path inside the cage: starts with `/`, no `.`/`..` or empty components, no NUL,
/// at most [`limits::PATH_BYTES_MAX`] bytes. Repeated and trailing slashes are normalized away.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct CagePath(String);

impl CagePath {
    /// Parses and normalizes `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<CagePath, String> {
        if text.len() > limits::PATH_BYTES_MAX {
            return Err(format!(
                "path is longer than {} bytes",
                limits::PATH_BYTES_MAX
            ));
        }
        if text.contains('\0') {
            return Err("path contains a NUL byte".to_owned());
        }
        if !text.starts_with('/') {
            return Err(format!("`{text}` is not an absolute path"));
        }
        let mut normalized = String::with_capacity(text.len());
        for component in text.split('/').filter(|c| !c.is_empty()) {
            if component == "." || component == ".." {
                return Err(format!("`{text}` contains a `{component}` component"));
            }
            normalized.push('/');
            normalized.push_str(component);
        }
        if normalized.is_empty() {
            normalized.push('/');
        }
        Ok(CagePath(normalized))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The components below `/`, in order (empty for `/` itself).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// The path relative to `/` (empty for `/`), for joining onto a host directory.
    pub fn relative(&self) -> &str {
        self.0.trim_start_matches('/')
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &CagePath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for CagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The set of namespaces a cage gets, as a bit set (the same bits go into the witness record's
/// `namespaces` field, so they are part of the record format: never renumber).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct Namespaces(pub u16);

impl Namespaces {
    pub const MOUNT: Namespaces = Namespaces(1 << 0);
    pub const PID: Namespaces = Namespaces(1 << 1);
    pub const IPC: Namespaces = Namespaces(1 << 2);
    pub const UTS: Namespaces = Namespaces(1 << 3);
    pub const NET: Namespaces = Namespaces(1 << 4);
    pub const CGROUP: Namespaces = Namespaces(1 << 5);
    pub const TIME: Namespaces = Namespaces(1 << 6);
    pub const USER: Namespaces = Namespaces(1 << 7);
    pub const NONE: Namespaces = Namespaces(0);
    /// Everything except the user namespace, which is only created when asked for or when the
    /// caller is not root.
    pub const DEFAULT: Namespaces = Namespaces(0b0111_1111);

    /// (bit, OCI type name, unshare flag), in the order the OCI spec lists them.
    const TABLE: [(Namespaces, &'static str, i32); 8] = [
        (Namespaces::PID, "pid", libc::CLONE_NEWPID),
        (Namespaces::NET, "network", libc::CLONE_NEWNET),
        (Namespaces::MOUNT, "mount", libc::CLONE_NEWNS),
        (Namespaces::IPC, "ipc", libc::CLONE_NEWIPC),
        (Namespaces::UTS, "uts", libc::CLONE_NEWUTS),
        (Namespaces::USER, "user", libc::CLONE_NEWUSER),
        (Namespaces::CGROUP, "cgroup", libc::CLONE_NEWCGROUP),
        (Namespaces::TIME, "time", libc::CLONE_NEWTIME),
    ];

    pub fn contains(self, other: Namespaces) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn with(self, other: Namespaces) -> Namespaces {
        Namespaces(self.0 | other.0)
    }

    pub fn without(self, other: Namespaces) -> Namespaces {
        Namespaces(self.0 & !other.0)
    }

    fn from_oci_name(name: &str) -> Option<Namespaces> {
        Self::TABLE
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(ns, _, _)| *ns)
    }

    /// The flags for unshare(2), user namespace included when present (the kernel creates it
    /// first, so the other namespaces are owned by it).
    pub fn unshare_flags(self) -> i32 {
        Self::TABLE
            .iter()
            .filter(|(ns, _, _)| self.contains(*ns))
            .fold(0, |acc, (_, _, flag)| acc | flag)
    }

    /// The OCI names of the namespaces in the set.
    pub fn names(self) -> Vec<&'static str> {
        Self::TABLE
            .iter()
            .filter(|(ns, _, _)| self.contains(*ns))
            .map(|(_, name, _)| *name)
            .collect()
    }
}

/// One line of a uid_map or gid_map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// What a mount is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum MountKind {
    /// A bind mount of a host path (absolute; relative sources were resolved against the bundle
    /// directory). `recursive` is `rbind`.
    Bind {
        source: PathBuf,
        recursive: bool,
    },
    Tmpfs,
    Proc,
    /// Always read-only.
    Sysfs,
    Mqueue,
    Devpts,
}

impl MountKind {
    pub fn fs_type(&self) -> &'static str {
        match self {
            MountKind::Bind { .. } => "bind",
            MountKind::Tmpfs => "tmpfs",
            MountKind::Proc => "proc",
            MountKind::Sysfs => "sysfs",
            MountKind::Mqueue => "mqueue",
            MountKind::Devpts => "devpts",
        }
    }
}

/// A validated mount. `set_flags`/`clear_flags` are `MS_*` bits (without MS_BIND/MS_REC, which
/// `kind` carries); `data` is the comma-joined filesystem data string (tmpfs `size=`, ...).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CageMount {
    pub destination: CagePath,
    pub kind: MountKind,
    pub set_flags: u64,
    pub clear_flags: u64,
    pub data: String,
}

impl CageMount {
    pub fn readonly(&self) -> bool {
        self.set_flags & libc::MS_RDONLY != 0
    }
}

/// A resource limit (`u64::MAX` is RLIM_INFINITY, as in the OCI spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rlimit {
    /// The RLIMIT_* resource number.
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// `process.capabilities`, names validated against [`limits::CAPABILITIES_KEEPABLE`].
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct CageCapabilities {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub permitted: Vec<String>,
    pub inheritable: Vec<String>,
    pub ambient: Vec<String>,
}

impl CageCapabilities {
    /// Every capability named in any set, sorted and deduplicated. DockLock keeps exactly these
    /// (all others are dropped from every set); see the crate docs for why the sets are merged.
    pub fn union(&self) -> Vec<String> {
        let all: BTreeSet<&String> = self
            .bounding
            .iter()
            .chain(&self.effective)
            .chain(&self.permitted)
            .chain(&self.inheritable)
            .chain(&self.ambient)
            .collect();
        all.into_iter().cloned().collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CageProcess {
    /// `args[0]` is the program; a name without `/` is looked up in the cage's `PATH`.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: CagePath,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// `None`: the spec does not fix the umask (the cage uses 0022, or a replay perturbs it).
    pub umask: Option<u32>,
    pub capabilities: CageCapabilities,
    pub rlimits: Vec<Rlimit>,
}

/// `linux.resources`, converted to plain numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct CageResources {
    pub memory_limit_bytes: Option<u64>,
    /// OCI `memory.swap`: the limit on memory + swap together (cgroup v1 semantics).
    pub memory_swap_limit_bytes: Option<u64>,
    pub pids_max: Option<u64>,
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub blkio_weight: Option<u16>,
}

/// A file copied into the cage (plain-executable mode) at `/in/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredInput {
    /// A single path component: no `/`, not `.` or `..`, not empty.
    pub name: String,
    pub source: PathBuf,
}

/// A validated cage description: what the launcher runs. Built by [`CageSpec::load`] from a
/// bundle or by [`CageSpec::from_executable`].
#[derive(Clone, Debug)]
pub struct CageSpec {
    pub oci_version: String,
    /// Absolute host path of the root filesystem, for messages and digests: the launcher uses
    /// the directory opened by [`CageSpec::load`] / [`CageSpec::from_executable`], not this path.
    pub rootfs: PathBuf,
    pub rootfs_readonly: bool,
    pub process: CageProcess,
    pub hostname: Option<String>,
    pub mounts: Vec<CageMount>,
    pub namespaces: Namespaces,
    pub uid_mappings: Vec<IdMapping>,
    pub gid_mappings: Vec<IdMapping>,
    pub resources: CageResources,
    /// The spec's masked/read-only paths; runc's defaults are added by the launcher.
    pub masked_paths: Vec<CagePath>,
    pub readonly_paths: Vec<CagePath>,
    pub annotations: BTreeMap<String, String>,
    /// Declared inputs (plain-executable mode), already copied under `/in` in the rootfs.
    pub inputs: Vec<DeclaredInput>,
    /// BLAKE3 of config.json as read (all zeros for the plain-executable mode).
    pub config_digest: [u8; 32],
    /// Things the operator should know that did not stop the spec (e.g. RPATH entries the
    /// plain-executable mode ignored); the launcher copies them into the run's outcome.
    pub warnings: Vec<String>,
    /// Keeps an assembled rootfs (plain-executable mode) alive as long as the spec.
    #[allow(dead_code, reason = "held for its Drop: removes the assembled rootfs")]
    pub(crate) owned_rootfs: Option<Arc<tempfile::TempDir>>,
    /// The bundle directory relative paths were joined to (None for the plain-executable mode).
    pub(crate) bundle_dir: Option<PathBuf>,
    /// The bundle directory and the rootfs, opened once by [`CageSpec::load`] (the rootfs also by
    /// [`CageSpec::from_executable`]): the launcher builds the cage from these fds and never
    /// resolves `rootfs` again, so swapping the directory after loading changes nothing.
    pub(crate) opened: Option<Arc<OpenedRoot>>,
}

/// fds opened when a spec is loaded; see [`crate::host`].
#[derive(Debug)]
pub(crate) struct OpenedRoot {
    /// O_PATH fd of the bundle directory (None in the plain-executable mode).
    pub(crate) bundle: Option<std::os::fd::OwnedFd>,
    /// O_PATH fd of the root filesystem directory.
    pub(crate) rootfs: std::os::fd::OwnedFd,
}

/// Opens `bundle_dir` and resolves `rootfs` beneath it: the rootfs must be the bundle directory
/// or below it, through no `..` or symlink that leads out. Errors name `root.path`.
pub(crate) fn open_bundle_root(bundle_dir: &Path, rootfs: &Path) -> Result<OpenedRoot, SpecError> {
    let bundle = crate::host::open_dir_nofollow(bundle_dir).map_err(|errno| SpecError::Read {
        path: bundle_dir.to_path_buf(),
        source: errno.into(),
    })?;
    let relative = crate::host::lexically_below(bundle_dir, rootfs).ok_or_else(|| {
        invalid(
            "root.path",
            format!(
                "{} is outside the bundle directory {}; the rootfs must be inside the bundle",
                rootfs.display(),
                bundle_dir.display()
            ),
        )
    })?;
    let rootfs_fd = match crate::host::resolve_beneath(&bundle, &relative, true) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::XDEV) => {
            return Err(invalid(
                "root.path",
                format!(
                    "{} leaves the bundle directory {} through `..` or a symlink",
                    rootfs.display(),
                    bundle_dir.display()
                ),
            ));
        }
        Err(errno) => {
            return Err(SpecError::Read {
                path: rootfs.to_path_buf(),
                source: errno.into(),
            });
        }
    };
    Ok(OpenedRoot {
        bundle: Some(bundle),
        rootfs: rootfs_fd,
    })
}

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

/// Why a bundle was refused. Every variant names the file or the JSON path at fault.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {size_bytes} bytes, more than the {max_bytes} DockLock reads")]
    TooLarge {
        path: PathBuf,
        size_bytes: u64,
        max_bytes: u64,
    },
    #[error("config.json is not a valid OCI runtime spec at `{field}`: {message}")]
    Json { field: String, message: String },
    #[error("unsupported OCI field `{field}`: {reason}")]
    Unsupported { field: String, reason: String },
    #[error("`{what}` is not supported: {reason}")]
    NotSupported { what: String, reason: String },
    #[error("`{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Unsupported {
        field: field.into(),
        reason: reason.into(),
    }
}

// ------------------------------------------------------------------------------------------------
// OCI wire structs (config.json as written; nothing here is trusted)
// ------------------------------------------------------------------------------------------------

/// A field the OCI spec defines and DockLock refuses: its value is skipped while parsing and its
/// presence is reported with a reason by [`check_refused`].
type Refused = Option<IgnoredAny>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciSpec {
    oci_version: String,
    root: Option<OciRoot>,
    process: Option<OciProcess>,
    hostname: Option<String>,
    domainname: Refused,
    #[serde(default)]
    mounts: Vec<OciMount>,
    hooks: Refused,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    linux: Option<OciLinux>,
    solaris: Refused,
    windows: Refused,
    vm: Refused,
    zos: Refused,
    freebsd: Refused,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciRoot {
    path: String,
    #[serde(default)]
    readonly: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciProcess {
    terminal: Option<bool>,
    console_size: Refused,
    user: Option<OciUser>,
    #[serde(default)]
    args: Vec<String>,
    command_line: Refused,
    #[serde(default)]
    env: Vec<String>,
    cwd: Option<String>,
    capabilities: Option<OciCapabilities>,
    #[serde(default)]
    rlimits: Vec<OciRlimit>,
    no_new_privileges: Option<bool>,
    apparmor_profile: Refused,
    oom_score_adj: Refused,
    scheduler: Refused,
    #[serde(rename = "selinuxLabel")]
    selinux_label: Refused,
    io_priority: Refused,
    #[serde(rename = "execCPUAffinity")]
    exec_cpu_affinity: Refused,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciUser {
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
    umask: Option<u32>,
    #[serde(default)]
    additional_gids: Vec<u32>,
    username: Refused,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OciCapabilities {
    bounding: Option<Vec<String>>,
    effective: Option<Vec<String>>,
    inheritable: Option<Vec<String>>,
    permitted: Option<Vec<String>>,
    ambient: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OciRlimit {
    #[serde(rename = "type")]
    kind: String,
    hard: u64,
    soft: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciMount {
    destination: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    source: Option<String>,
    #[serde(default)]
    options: Vec<String>,
    uid_mappings: Refused,
    gid_mappings: Refused,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciLinux {
    #[serde(default)]
    namespaces: Vec<OciNamespace>,
    #[serde(default)]
    uid_mappings: Vec<OciIdMapping>,
    #[serde(default)]
    gid_mappings: Vec<OciIdMapping>,
    time_offsets: Refused,
    devices: Refused,
    cgroups_path: Refused,
    resources: Option<OciResources>,
    rootfs_propagation: Refused,
    seccomp: Refused,
    sysctl: Refused,
    #[serde(default)]
    masked_paths: Vec<String>,
    #[serde(default)]
    readonly_paths: Vec<String>,
    mount_label: Refused,
    intel_rdt: Refused,
    personality: Refused,
    memory_policy: Refused,
    net_devices: Refused,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OciNamespace {
    #[serde(rename = "type")]
    kind: String,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OciIdMapping {
    #[serde(rename = "containerID")]
    container_id: u32,
    #[serde(rename = "hostID")]
    host_id: u32,
    size: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciResources {
    #[serde(default)]
    devices: Vec<OciDeviceRule>,
    memory: Option<OciMemory>,
    cpu: Option<OciCpu>,
    pids: Option<OciPids>,
    #[serde(rename = "blockIO")]
    block_io: Option<OciBlockIo>,
    hugepage_limits: Refused,
    network: Refused,
    rdma: Refused,
    unified: Refused,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OciDeviceRule {
    allow: bool,
    #[serde(rename = "type")]
    kind: Option<String>,
    major: Option<i64>,
    minor: Option<i64>,
    access: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciMemory {
    limit: Option<i64>,
    reservation: Refused,
    swap: Option<i64>,
    kernel: Refused,
    #[serde(rename = "kernelTCP")]
    kernel_tcp: Refused,
    swappiness: Refused,
    #[serde(rename = "disableOOMKiller")]
    disable_oom_killer: Refused,
    use_hierarchy: Refused,
    check_before_update: Refused,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciCpu {
    shares: Option<u64>,
    quota: Option<i64>,
    burst: Refused,
    period: Option<u64>,
    realtime_runtime: Refused,
    realtime_period: Refused,
    cpus: Refused,
    mems: Refused,
    idle: Refused,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OciPids {
    limit: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct OciBlockIo {
    weight: Option<u16>,
    leaf_weight: Refused,
    weight_device: Refused,
    throttle_read_bps_device: Refused,
    throttle_write_bps_device: Refused,
    #[serde(rename = "throttleReadIOPSDevice")]
    throttle_read_iops_device: Refused,
    #[serde(rename = "throttleWriteIOPSDevice")]
    throttle_write_iops_device: Refused,
}

fn check_refused(pairs: &[(&Refused, &str, &str)]) -> Result<(), SpecError> {
    for (value, field, reason) in pairs {
        if value.is_some() {
            return Err(unsupported(*field, *reason));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Loading
// ------------------------------------------------------------------------------------------------

/// Default `PATH` for looking up `args[0]` when the spec's env has none (runc's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl CageSpec {
    /// Loads `<bundle>/config.json`, validates it, and checks that the rootfs and every bind
    /// source exist on the host.
    pub fn load(bundle: &Path) -> Result<CageSpec, SpecError> {
        let bundle_dir = std::path::absolute(bundle).map_err(|source| SpecError::Read {
            path: bundle.to_path_buf(),
            source,
        })?;
        let config_path = bundle_dir.join("config.json");
        let bundle_fd =
            crate::host::open_dir_nofollow(&bundle_dir).map_err(|errno| SpecError::Read {
                path: bundle_dir.clone(),
                source: errno.into(),
            })?;
        // Opened once through the bundle fd, not following a symlink and without blocking on a
        // FIFO, then checked to be a regular file and read through a bound: a config.json
        // pointing at /dev/zero or a FIFO must not hang or exhaust the launcher.
        let file: std::fs::File = rustix::fs::openat(
            &bundle_fd,
            "config.json",
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::NOFOLLOW
                | rustix::fs::OFlags::NONBLOCK
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|errno| SpecError::Read {
            path: config_path.clone(),
            source: errno.into(),
        })?
        .into();
        let metadata = file.metadata().map_err(|source| SpecError::Read {
            path: config_path.clone(),
            source,
        })?;
        if !metadata.is_file() {
            return Err(SpecError::Read {
                path: config_path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        if metadata.len() > limits::CONFIG_SIZE_BYTES_MAX {
            return Err(SpecError::TooLarge {
                path: config_path,
                size_bytes: metadata.len(),
                max_bytes: limits::CONFIG_SIZE_BYTES_MAX,
            });
        }
        let mut bytes = Vec::new();
        {
            use std::io::Read as _;
            file.take(limits::CONFIG_SIZE_BYTES_MAX + 1)
                .read_to_end(&mut bytes)
                .map_err(|source| SpecError::Read {
                    path: config_path.clone(),
                    source,
                })?;
        }
        drop(bundle_fd);
        let mut spec = CageSpec::parse_config(&bytes, &bundle_dir)?;
        spec.opened = Some(Arc::new(open_bundle_root(&bundle_dir, &spec.rootfs)?));
        spec.check_host_paths()?;
        Ok(spec)
    }

    /// Parses and validates config.json bytes without touching the filesystem; relative paths
    /// (root.path, bind sources) are resolved against `bundle_dir`.
    pub fn parse_config(json: &[u8], bundle_dir: &Path) -> Result<CageSpec, SpecError> {
        if json.len() as u64 > limits::CONFIG_SIZE_BYTES_MAX {
            return Err(SpecError::TooLarge {
                path: bundle_dir.join("config.json"),
                size_bytes: json.len() as u64,
                max_bytes: limits::CONFIG_SIZE_BYTES_MAX,
            });
        }
        let deserializer = &mut serde_json::Deserializer::from_slice(json);
        let oci: OciSpec = serde_path_to_error::deserialize(deserializer).map_err(json_error)?;
        let mut spec = convert(oci, bundle_dir)?;
        spec.config_digest = *blake3::hash(json).as_bytes();
        Ok(spec)
    }

    /// Checks that the rootfs is a directory and every bind source exists. (A pre-flight for
    /// clear errors only: the launcher resolves bind sources again, safely, when it runs.)
    pub fn check_host_paths(&self) -> Result<(), SpecError> {
        let root_is_dir = match &self.opened {
            // Opened with O_DIRECTORY: a directory by construction.
            Some(_) => true,
            None => std::fs::metadata(&self.rootfs)
                .map_err(|source| SpecError::Read {
                    path: self.rootfs.clone(),
                    source,
                })?
                .is_dir(),
        };
        if !root_is_dir {
            return Err(invalid(
                "root.path",
                format!("{} is not a directory", self.rootfs.display()),
            ));
        }
        for (index, mount) in self.mounts.iter().enumerate() {
            if let MountKind::Bind { source, .. } = &mount.kind {
                // Only sources in the bundle: probing other host paths as root would tell the
                // config's author which of them exist. The launcher judges the rest.
                let in_bundle = self
                    .bundle_dir
                    .as_deref()
                    .is_none_or(|dir| crate::host::lexically_below(dir, source).is_some());
                if !in_bundle {
                    continue;
                }
                std::fs::metadata(source).map_err(|error| {
                    invalid(
                        format!("mounts[{index}].source"),
                        format!("bind source {}: {error}", source.display()),
                    )
                })?;
            }
        }
        Ok(())
    }

    /// The cage's effective umask when the spec fixes none.
    pub fn umask_or_default(&self) -> u32 {
        self.process.umask.unwrap_or(0o022)
    }
}

fn json_error(error: serde_path_to_error::Error<serde_json::Error>) -> SpecError {
    let path = error.path().to_string();
    let inner = error.inner();
    let message = inner.to_string();
    // serde's message for deny_unknown_fields is "unknown field `NAME`, expected ...": turn it
    // into the full JSON path of the offending field so the author can find it.
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some(end) = rest.find('`')
    {
        let name = &rest[..end];
        // serde_path_to_error already ends the path with the unknown field's name.
        let field = if path == "." || path.is_empty() {
            name.to_owned()
        } else if path == name || path.ends_with(&format!(".{name}")) {
            path.clone()
        } else {
            format!("{path}.{name}")
        };
        return unsupported(field, "DockLock does not implement this field");
    }
    SpecError::Json {
        field: path,
        message,
    }
}

fn check_oci_version(version: &str) -> Result<(), SpecError> {
    let core = version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    let numbers: Option<Vec<u32>> = parts.iter().map(|p| p.parse().ok()).collect();
    match numbers.as_deref() {
        Some([1, minor, _patch]) if *minor <= 2 => Ok(()),
        _ => Err(invalid(
            "ociVersion",
            format!(
                "version `{version}` is not supported (DockLock reads runtime-spec 1.0 to 1.2)"
            ),
        )),
    }
}

fn convert(oci: OciSpec, bundle_dir: &Path) -> Result<CageSpec, SpecError> {
    check_oci_version(&oci.oci_version)?;
    check_refused(&[
        (
            &oci.domainname,
            "domainname",
            "the cage's NIS domain name is left empty",
        ),
        (
            &oci.hooks,
            "hooks",
            "hooks run host programs outside the cage, which a determinism cage cannot account for",
        ),
        (
            &oci.solaris,
            "solaris",
            "DockLock runs Linux containers only",
        ),
        (
            &oci.windows,
            "windows",
            "DockLock runs Linux containers only",
        ),
        (&oci.vm, "vm", "DockLock runs Linux containers only"),
        (&oci.zos, "zos", "DockLock runs Linux containers only"),
        (
            &oci.freebsd,
            "freebsd",
            "DockLock runs Linux containers only",
        ),
    ])?;

    let root = oci
        .root
        .ok_or_else(|| invalid("root", "a bundle must name its root filesystem"))?;
    let rootfs = host_path(&root.path, bundle_dir, "root.path")?;

    let process = oci
        .process
        .ok_or_else(|| invalid("process", "a bundle must describe the process to run"))?;
    let process = convert_process(process)?;

    let linux = oci.linux.ok_or_else(|| {
        invalid(
            "linux",
            "the `linux` section is required (DockLock runs Linux containers only)",
        )
    })?;
    let mounts = convert_mounts(oci.mounts, bundle_dir)?;
    let (namespaces, uid_mappings, gid_mappings, resources, masked_paths, readonly_paths) =
        convert_linux(linux)?;

    let hostname = match oci.hostname {
        Some(name) if name.is_empty() => None,
        Some(name) => {
            check_hostname(&name)?;
            if !namespaces.contains(Namespaces::UTS) {
                return Err(invalid(
                    "hostname",
                    "setting a hostname needs a `uts` entry in linux.namespaces",
                ));
            }
            Some(name)
        }
        None => None,
    };

    if oci.annotations.len() > limits::ANNOTATIONS_COUNT_MAX {
        return Err(invalid(
            "annotations",
            format!("more than {} annotations", limits::ANNOTATIONS_COUNT_MAX),
        ));
    }
    for (key, value) in &oci.annotations {
        if key.len() > limits::ANNOTATION_BYTES_MAX || value.len() > limits::ANNOTATION_BYTES_MAX {
            return Err(invalid(
                format!("annotations.{key}"),
                format!(
                    "key or value longer than {} bytes",
                    limits::ANNOTATION_BYTES_MAX
                ),
            ));
        }
        // The prefix is reserved for DockLock; an annotation under it that DockLock does not
        // interpret would look like a setting that silently did nothing.
        if key.starts_with("org.metanode.docklock.") {
            return Err(unsupported(
                format!("annotations.{key}"),
                "the org.metanode.docklock. prefix is reserved and this key is not defined",
            ));
        }
    }

    Ok(CageSpec {
        oci_version: oci.oci_version,
        rootfs,
        rootfs_readonly: root.readonly,
        process,
        hostname,
        mounts,
        namespaces,
        uid_mappings,
        gid_mappings,
        resources,
        masked_paths,
        readonly_paths,
        annotations: oci.annotations,
        inputs: Vec::new(),
        config_digest: [0; 32],
        warnings: Vec::new(),
        owned_rootfs: None,
        bundle_dir: Some(bundle_dir.to_path_buf()),
        opened: None,
    })
}

fn host_path(text: &str, bundle_dir: &Path, field: &str) -> Result<PathBuf, SpecError> {
    if text.is_empty() {
        return Err(invalid(field, "path is empty"));
    }
    if text.len() > limits::PATH_BYTES_MAX || text.contains('\0') {
        return Err(invalid(field, "path is too long or contains a NUL byte"));
    }
    let path = Path::new(text);
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        bundle_dir.join(path)
    })
}

fn check_hostname(name: &str) -> Result<(), SpecError> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if name.len() > limits::HOSTNAME_BYTES_MAX || !valid_chars || name.starts_with(['-', '.']) {
        return Err(invalid(
            "hostname",
            format!(
                "`{name}` is not a hostname (letters, digits, `-` and `.`, at most {} bytes)",
                limits::HOSTNAME_BYTES_MAX
            ),
        ));
    }
    Ok(())
}

fn convert_process(process: OciProcess) -> Result<CageProcess, SpecError> {
    check_refused(&[
        (
            &process.console_size,
            "process.consoleSize",
            "the cage has no terminal",
        ),
        (
            &process.command_line,
            "process.commandLine",
            "it is a Windows field; use process.args",
        ),
        (
            &process.apparmor_profile,
            "process.apparmorProfile",
            "DockLock confines with landlock and seccomp, not AppArmor",
        ),
        (
            &process.oom_score_adj,
            "process.oomScoreAdj",
            "the cage's memory cgroup decides what is killed",
        ),
        (
            &process.scheduler,
            "process.scheduler",
            "scheduling policy is not part of the cage",
        ),
        (
            &process.selinux_label,
            "process.selinuxLabel",
            "DockLock confines with landlock and seccomp, not SELinux",
        ),
        (
            &process.io_priority,
            "process.ioPriority",
            "I/O priority is not part of the cage; use linux.resources.blockIO.weight",
        ),
        (
            &process.exec_cpu_affinity,
            "process.execCPUAffinity",
            "CPU placement is chosen by DockLock (replay rotates it on purpose)",
        ),
    ])?;
    if process.terminal == Some(true) {
        return Err(SpecError::NotSupported {
            what: "process.terminal: true".to_owned(),
            reason:
                "the cage has no terminal; stdout and stderr are inherited or captured to files"
                    .to_owned(),
        });
    }
    if process.no_new_privileges == Some(false) {
        return Err(SpecError::NotSupported {
            what: "process.noNewPrivileges: false".to_owned(),
            reason: "DockLock always sets no_new_privs (seccomp and landlock depend on it)"
                .to_owned(),
        });
    }

    if process.args.is_empty() {
        return Err(invalid(
            "process.args",
            "at least the program to run is required",
        ));
    }
    if process.args.len() > limits::ARGS_COUNT_MAX {
        return Err(invalid(
            "process.args",
            format!("more than {} arguments", limits::ARGS_COUNT_MAX),
        ));
    }
    for (index, arg) in process.args.iter().enumerate() {
        if arg.len() > limits::ARG_BYTES_MAX || arg.contains('\0') {
            return Err(invalid(
                format!("process.args[{index}]"),
                format!(
                    "argument is longer than {} bytes or contains a NUL byte",
                    limits::ARG_BYTES_MAX
                ),
            ));
        }
    }
    if process.args.first().is_some_and(String::is_empty) {
        return Err(invalid("process.args[0]", "the program name is empty"));
    }

    if process.env.len() > limits::ENV_COUNT_MAX {
        return Err(invalid(
            "process.env",
            format!("more than {} entries", limits::ENV_COUNT_MAX),
        ));
    }
    for (index, entry) in process.env.iter().enumerate() {
        let field = format!("process.env[{index}]");
        if entry.len() > limits::ENV_ENTRY_BYTES_MAX || entry.contains('\0') {
            return Err(invalid(
                field,
                format!(
                    "entry is longer than {} bytes or contains a NUL byte",
                    limits::ENV_ENTRY_BYTES_MAX
                ),
            ));
        }
        match entry.split_once('=') {
            Some((key, _)) if !key.is_empty() => {}
            _ => return Err(invalid(field, format!("`{entry}` is not KEY=value"))),
        }
    }

    let cwd_text = process
        .cwd
        .ok_or_else(|| invalid("process.cwd", "the working directory is required"))?;
    let cwd = CagePath::parse(&cwd_text).map_err(|reason| invalid("process.cwd", reason))?;

    let user = process.user.unwrap_or(OciUser {
        uid: 0,
        gid: 0,
        umask: None,
        additional_gids: Vec::new(),
        username: None,
    });
    check_refused(&[(
        &user.username,
        "process.user.username",
        "it is a Windows field; use uid and gid",
    )])?;
    if let Some(umask) = user.umask
        && umask > 0o777
    {
        return Err(invalid(
            "process.user.umask",
            format!("{umask:#o} is not a umask (at most 0o777)"),
        ));
    }
    if user.additional_gids.len() > limits::ADDITIONAL_GIDS_COUNT_MAX {
        return Err(invalid(
            "process.user.additionalGids",
            format!("more than {} groups", limits::ADDITIONAL_GIDS_COUNT_MAX),
        ));
    }

    let capabilities = convert_capabilities(process.capabilities)?;
    let rlimits = convert_rlimits(&process.rlimits)?;

    Ok(CageProcess {
        args: process.args,
        env: process.env,
        cwd,
        uid: user.uid,
        gid: user.gid,
        additional_gids: user.additional_gids,
        umask: user.umask,
        capabilities,
        rlimits,
    })
}

fn convert_capabilities(caps: Option<OciCapabilities>) -> Result<CageCapabilities, SpecError> {
    let Some(caps) = caps else {
        return Ok(CageCapabilities::default());
    };
    let check = |set: Option<Vec<String>>, name: &str| -> Result<Vec<String>, SpecError> {
        let set = set.unwrap_or_default();
        if set.len() > limits::CAPABILITY_NAMES_COUNT_MAX {
            return Err(invalid(
                format!("process.capabilities.{name}"),
                format!("more than {} names", limits::CAPABILITY_NAMES_COUNT_MAX),
            ));
        }
        for (index, cap) in set.iter().enumerate() {
            if !limits::CAPABILITIES_KEEPABLE.contains(&cap.as_str()) {
                let reason = if metanode_confine::CapSet::number_of(cap).is_some() {
                    format!("{cap} is not a capability DockLock lets a workload keep")
                } else {
                    format!("`{cap}` is not a known capability name")
                };
                return Err(invalid(
                    format!("process.capabilities.{name}[{index}]"),
                    reason,
                ));
            }
        }
        let mut sorted = set;
        sorted.sort();
        sorted.dedup();
        Ok(sorted)
    };
    Ok(CageCapabilities {
        bounding: check(caps.bounding, "bounding")?,
        effective: check(caps.effective, "effective")?,
        permitted: check(caps.permitted, "permitted")?,
        inheritable: check(caps.inheritable, "inheritable")?,
        ambient: check(caps.ambient, "ambient")?,
    })
}

const RLIMIT_NAMES: [(&str, u32); 16] = [
    ("RLIMIT_CPU", libc::RLIMIT_CPU),
    ("RLIMIT_FSIZE", libc::RLIMIT_FSIZE),
    ("RLIMIT_DATA", libc::RLIMIT_DATA),
    ("RLIMIT_STACK", libc::RLIMIT_STACK),
    ("RLIMIT_CORE", libc::RLIMIT_CORE),
    ("RLIMIT_RSS", libc::RLIMIT_RSS),
    ("RLIMIT_NPROC", libc::RLIMIT_NPROC),
    ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE),
    ("RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK),
    ("RLIMIT_AS", libc::RLIMIT_AS),
    ("RLIMIT_LOCKS", libc::RLIMIT_LOCKS),
    ("RLIMIT_SIGPENDING", libc::RLIMIT_SIGPENDING),
    ("RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE),
    ("RLIMIT_NICE", libc::RLIMIT_NICE),
    ("RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO),
    ("RLIMIT_RTTIME", libc::RLIMIT_RTTIME),
];

fn convert_rlimits(rlimits: &[OciRlimit]) -> Result<Vec<Rlimit>, SpecError> {
    if rlimits.len() > limits::RLIMITS_COUNT_MAX {
        return Err(invalid(
            "process.rlimits",
            format!("more than {} entries", limits::RLIMITS_COUNT_MAX),
        ));
    }
    let mut out: Vec<Rlimit> = Vec::with_capacity(rlimits.len());
    for (index, rlimit) in rlimits.iter().enumerate() {
        let field = format!("process.rlimits[{index}]");
        let resource = RLIMIT_NAMES
            .iter()
            .find(|(name, _)| *name == rlimit.kind)
            .map(|(_, resource)| *resource)
            .ok_or_else(|| {
                invalid(
                    format!("{field}.type"),
                    format!("`{}` is not a known resource limit", rlimit.kind),
                )
            })?;
        if out.iter().any(|r| r.resource == resource) {
            return Err(invalid(
                format!("{field}.type"),
                format!("{} is set twice", rlimit.kind),
            ));
        }
        if rlimit.soft > rlimit.hard {
            return Err(invalid(
                field,
                format!(
                    "soft limit {} is above hard limit {}",
                    rlimit.soft, rlimit.hard
                ),
            ));
        }
        out.push(Rlimit {
            resource,
            soft: rlimit.soft,
            hard: rlimit.hard,
        });
    }
    Ok(out)
}

/// Cage paths DockLock itself places nodes at; a spec mount there would silently replace the
/// seeded randomness or the null device.
const MANAGED_DEV_NODES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

fn convert_mounts(mounts: Vec<OciMount>, bundle_dir: &Path) -> Result<Vec<CageMount>, SpecError> {
    if mounts.len() > limits::MOUNTS_COUNT_MAX {
        return Err(invalid(
            "mounts",
            format!("more than {} mounts", limits::MOUNTS_COUNT_MAX),
        ));
    }
    let mut out = Vec::with_capacity(mounts.len());
    for (index, mount) in mounts.into_iter().enumerate() {
        out.push(convert_mount(index, mount, bundle_dir)?);
    }
    Ok(out)
}

fn convert_mount(index: usize, mount: OciMount, bundle_dir: &Path) -> Result<CageMount, SpecError> {
    let at = |suffix: &str| format!("mounts[{index}]{suffix}");
    check_refused(&[
        (
            &mount.uid_mappings,
            &at(".uidMappings"),
            "id-mapped mounts are not supported",
        ),
        (
            &mount.gid_mappings,
            &at(".gidMappings"),
            "id-mapped mounts are not supported",
        ),
    ])?;
    let destination = CagePath::parse(&mount.destination)
        .map_err(|reason| invalid(at(".destination"), reason))?;
    if destination.is_root() {
        return Err(invalid(
            at(".destination"),
            "mounting over / is not supported; use root.path",
        ));
    }
    if MANAGED_DEV_NODES.contains(&destination.as_str()) {
        return Err(invalid(
            at(".destination"),
            format!("{destination} is provided by DockLock (null devices and seeded randomness)"),
        ));
    }
    if mount.options.len() > limits::MOUNT_OPTIONS_COUNT_MAX {
        return Err(invalid(
            at(".options"),
            format!("more than {} options", limits::MOUNT_OPTIONS_COUNT_MAX),
        ));
    }

    let bind = mount.options.iter().any(|o| o == "bind" || o == "rbind");
    let recursive = mount.options.iter().any(|o| o == "rbind");
    let kind = match (mount.kind.as_deref(), bind) {
        (None | Some("bind") | Some("none"), true) | (Some("bind"), false) => {
            let source = mount
                .source
                .as_deref()
                .ok_or_else(|| invalid(at(".source"), "a bind mount needs a source"))?;
            MountKind::Bind {
                source: host_path(source, bundle_dir, &at(".source"))?,
                recursive,
            }
        }
        (Some(_), true) => {
            return Err(invalid(
                at(".type"),
                "a mount with the `bind` or `rbind` option must have type `bind` or none",
            ));
        }
        (Some("tmpfs"), false) => MountKind::Tmpfs,
        (Some("proc"), false) => MountKind::Proc,
        (Some("sysfs"), false) => MountKind::Sysfs,
        (Some("mqueue"), false) => MountKind::Mqueue,
        (Some("devpts"), false) => MountKind::Devpts,
        (Some(other), false) => {
            return Err(SpecError::NotSupported {
                what: format!("{} type `{other}`", at(".type")),
                reason: "DockLock mounts bind, tmpfs, proc, sysfs (read-only), mqueue and devpts"
                    .to_owned(),
            });
        }
        (None, false) => {
            return Err(invalid(
                at(".type"),
                "a mount needs a type (or the `bind`/`rbind` option)",
            ));
        }
    };

    let (set_flags, clear_flags, data) =
        parse_mount_options(&kind, &mount.options, &at(".options"))?;

    match kind {
        MountKind::Proc if destination.as_str() != "/proc" => {
            return Err(invalid(
                at(".destination"),
                "proc may only be mounted at /proc",
            ));
        }
        MountKind::Sysfs if set_flags & libc::MS_RDONLY == 0 => {
            return Err(SpecError::NotSupported {
                what: format!("{} sysfs mounted read-write", at("")),
                reason: "sysfs is only mounted read-only; add the `ro` option".to_owned(),
            });
        }
        MountKind::Bind { .. } if clear_flags & libc::MS_NODEV != 0 => {
            return Err(SpecError::NotSupported {
                what: format!("{} `dev` on a bind mount", at(".options")),
                reason: "bind mounts are always nodev: the cage has no device access".to_owned(),
            });
        }
        MountKind::Bind { .. } if set_flags & (libc::MS_SYNCHRONOUS | libc::MS_DIRSYNC) != 0 => {
            return Err(SpecError::NotSupported {
                what: format!("{} `sync`/`dirsync` on a bind mount", at(".options")),
                reason: "they are filesystem-wide flags a bind mount cannot change".to_owned(),
            });
        }
        ref kind if destination.as_str() == "/dev" && *kind != MountKind::Tmpfs => {
            return Err(invalid(
                at(".type"),
                "only a tmpfs may be mounted at /dev (DockLock fills it with its own nodes)",
            ));
        }
        _ => {}
    }
    Ok(CageMount {
        destination,
        kind,
        set_flags,
        clear_flags,
        data,
    })
}

/// Mount options as (MS_* flags to set, MS_* flags to clear, data string).
fn parse_mount_options(
    kind: &MountKind,
    options: &[String],
    field: &str,
) -> Result<(u64, u64, String), SpecError> {
    let mut set: u64 = 0;
    let mut clear: u64 = 0;
    let mut data: Vec<String> = Vec::new();
    for (index, option) in options.iter().enumerate() {
        let (flag_set, flag_clear): (u64, u64) = match option.as_str() {
            "bind" | "rbind" => (0, 0),
            // The whole cage tree is made private; these only restate that (or ask for less).
            "private" | "rprivate" | "slave" | "rslave" => (0, 0),
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "noatime" => (libc::MS_NOATIME, libc::MS_RELATIME | libc::MS_STRICTATIME),
            "atime" => (0, libc::MS_NOATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "relatime" => (libc::MS_RELATIME, libc::MS_NOATIME | libc::MS_STRICTATIME),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, libc::MS_NOATIME | libc::MS_RELATIME),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "shared" | "rshared" | "unbindable" | "runbindable" => {
                return Err(SpecError::NotSupported {
                    what: format!("{field}[{index}] `{option}`"),
                    reason: "cage mounts never propagate to or from the host".to_owned(),
                });
            }
            other => {
                check_data_option(kind, other)
                    .map_err(|reason| invalid(format!("{field}[{index}]"), reason))?;
                data.push(other.to_owned());
                (0, 0)
            }
        };
        set = (set | flag_set) & !flag_clear;
        clear = (clear | flag_clear) & !flag_set;
    }
    Ok((set, clear, data.join(",")))
}

/// Accepts the filesystem data options DockLock knows per type; the error names the option.
fn check_data_option(kind: &MountKind, option: &str) -> Result<(), String> {
    let (key, value) = match option.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (option, None),
    };
    let number =
        |v: Option<&str>| v.is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
    let octal_mode = |v: Option<&str>| {
        v.is_some_and(|v| {
            !v.is_empty() && v.len() <= 5 && u32::from_str_radix(v, 8).is_ok_and(|m| m <= 0o7777)
        })
    };
    let size = |v: Option<&str>| {
        v.is_some_and(|v| {
            let digits = v.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', '%']);
            !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && v.len() - digits.len() <= 1
        })
    };
    let ok = match (kind, key) {
        (MountKind::Tmpfs, "size") => size(value),
        (MountKind::Tmpfs, "nr_inodes") => size(value),
        (MountKind::Tmpfs, "mode") => octal_mode(value),
        (MountKind::Tmpfs | MountKind::Devpts, "uid" | "gid") => number(value),
        (MountKind::Devpts, "newinstance") => value.is_none(),
        (MountKind::Devpts, "ptmxmode" | "mode") => octal_mode(value),
        (MountKind::Proc, "hidepid") => {
            matches!(
                value,
                Some("0" | "1" | "2" | "4" | "off" | "noaccess" | "invisible" | "ptraceable")
            )
        }
        (MountKind::Proc, "subset") => value == Some("pid"),
        _ => {
            return Err(format!(
                "unknown mount option `{option}` for a {} mount",
                kind.fs_type()
            ));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("bad value in mount option `{option}`"))
    }
}

type LinuxParts = (
    Namespaces,
    Vec<IdMapping>,
    Vec<IdMapping>,
    CageResources,
    Vec<CagePath>,
    Vec<CagePath>,
);

fn convert_linux(linux: OciLinux) -> Result<LinuxParts, SpecError> {
    check_refused(&[
        (
            &linux.time_offsets,
            "linux.timeOffsets",
            "the cage clock starts at the run's logical time, which DockLock sets",
        ),
        (
            &linux.devices,
            "linux.devices",
            "the cage gets only DockLock's minimal /dev (null, zero, full, seeded random)",
        ),
        (
            &linux.cgroups_path,
            "linux.cgroupsPath",
            "DockLock creates, names and removes the cage cgroup itself",
        ),
        (
            &linux.rootfs_propagation,
            "linux.rootfsPropagation",
            "the cage's mounts are always private",
        ),
        (
            &linux.seccomp,
            "linux.seccomp",
            "DockLock applies its own reviewed seccomp policy",
        ),
        (
            &linux.sysctl,
            "linux.sysctl",
            "the cage cannot change kernel parameters",
        ),
        (
            &linux.mount_label,
            "linux.mountLabel",
            "DockLock confines with landlock and seccomp, not SELinux",
        ),
        (
            &linux.intel_rdt,
            "linux.intelRdt",
            "cache allocation is not part of the cage",
        ),
        (
            &linux.personality,
            "linux.personality",
            "the cage runs the native 64-bit personality (replay varies only ASLR)",
        ),
        (
            &linux.memory_policy,
            "linux.memoryPolicy",
            "NUMA policy is not part of the cage",
        ),
        (
            &linux.net_devices,
            "linux.netDevices",
            "the cage's network namespace gets no devices from the host",
        ),
    ])?;

    if linux.namespaces.len() > limits::NAMESPACES_COUNT_MAX {
        return Err(invalid(
            "linux.namespaces",
            format!("more than {} entries", limits::NAMESPACES_COUNT_MAX),
        ));
    }
    let mut namespaces = Namespaces::NONE;
    for (index, ns) in linux.namespaces.iter().enumerate() {
        let kind = Namespaces::from_oci_name(&ns.kind).ok_or_else(|| {
            invalid(
                format!("linux.namespaces[{index}].type"),
                format!("`{}` is not a namespace type", ns.kind),
            )
        })?;
        if ns.path.is_some() {
            return Err(invalid(
                format!("linux.namespaces[{index}].path"),
                "joining an existing namespace is not supported",
            ));
        }
        if namespaces.contains(kind) {
            return Err(invalid(
                format!("linux.namespaces[{index}].type"),
                format!("`{}` is listed twice", ns.kind),
            ));
        }
        namespaces = namespaces.with(kind);
    }
    for (required, name) in [(Namespaces::MOUNT, "mount"), (Namespaces::PID, "pid")] {
        if !namespaces.contains(required) {
            return Err(invalid(
                "linux.namespaces",
                format!(
                    "a `{name}` namespace is required (the cage pivots into its rootfs as PID 1)"
                ),
            ));
        }
    }
    // The cage clock is part of the determinism contract, so a time namespace is always added;
    // ipc and network too, so a spec cannot reach the host's SysV IPC, message queues, network
    // or netlink by leaving them out. That only adds isolation to what the spec asked for.
    namespaces = namespaces
        .with(Namespaces::TIME)
        .with(Namespaces::IPC)
        .with(Namespaces::NET);

    let uid_mappings = convert_mappings(&linux.uid_mappings, "linux.uidMappings")?;
    let gid_mappings = convert_mappings(&linux.gid_mappings, "linux.gidMappings")?;
    if !namespaces.contains(Namespaces::USER)
        && (!uid_mappings.is_empty() || !gid_mappings.is_empty())
    {
        return Err(invalid(
            "linux.uidMappings",
            "id mappings need a `user` entry in linux.namespaces",
        ));
    }
    if uid_mappings.is_empty() != gid_mappings.is_empty() {
        return Err(invalid(
            "linux.gidMappings",
            "uidMappings and gidMappings must be given together",
        ));
    }

    let resources = match linux.resources {
        Some(resources) => convert_resources(resources)?,
        None => CageResources::default(),
    };

    let masked_paths = convert_paths(&linux.masked_paths, "linux.maskedPaths")?;
    let readonly_paths = convert_paths(&linux.readonly_paths, "linux.readonlyPaths")?;
    Ok((
        namespaces,
        uid_mappings,
        gid_mappings,
        resources,
        masked_paths,
        readonly_paths,
    ))
}

fn convert_mappings(mappings: &[OciIdMapping], field: &str) -> Result<Vec<IdMapping>, SpecError> {
    let out: Vec<IdMapping> = mappings
        .iter()
        .map(|m| IdMapping {
            container_id: m.container_id,
            host_id: m.host_id,
            size: m.size,
        })
        .collect();
    check_id_mappings(&out, field)?;
    Ok(out)
}

/// A mapping whose host range holds host id 0 makes cage root the host's root: refused. (Ranges
/// are checked for overflow before, so only a range starting at 0 can contain it.)
fn check_unprivileged_mapping(host_id: u32, field: &str) -> Result<(), SpecError> {
    if host_id == 0 {
        return Err(invalid(
            field,
            "maps onto host id 0 (root); map the cage into an unprivileged host range",
        ));
    }
    Ok(())
}

/// Checks id mappings the launcher is about to write (the fields are public, so a spec built or
/// changed in code is checked again): non-empty ranges, within 32 bits, never host id 0.
pub fn check_id_mappings(mappings: &[IdMapping], field: &str) -> Result<(), SpecError> {
    if mappings.len() > limits::ID_MAPPINGS_COUNT_MAX {
        return Err(invalid(
            field,
            format!("more than {} mappings", limits::ID_MAPPINGS_COUNT_MAX),
        ));
    }
    for (index, m) in mappings.iter().enumerate() {
        let overflows = m.container_id as u64 + m.size as u64 > 1 << 32
            || m.host_id as u64 + m.size as u64 > 1 << 32;
        if m.size == 0 || overflows {
            return Err(invalid(
                format!("{field}[{index}]"),
                "size must be at least 1 and the range must stay within 32-bit ids",
            ));
        }
        check_unprivileged_mapping(m.host_id, &format!("{field}[{index}]"))?;
    }
    Ok(())
}

fn convert_paths(paths: &[String], field: &str) -> Result<Vec<CagePath>, SpecError> {
    if paths.len() > limits::SPEC_PATHS_COUNT_MAX {
        return Err(invalid(
            field,
            format!("more than {} paths", limits::SPEC_PATHS_COUNT_MAX),
        ));
    }
    paths
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let path = CagePath::parse(p)
                .map_err(|reason| invalid(format!("{field}[{index}]"), reason))?;
            if path.is_root() {
                return Err(invalid(format!("{field}[{index}]"), "cannot apply to /"));
            }
            Ok(path)
        })
        .collect()
}

fn convert_resources(resources: OciResources) -> Result<CageResources, SpecError> {
    check_refused(&[
        (
            &resources.hugepage_limits,
            "linux.resources.hugepageLimits",
            "huge pages are not part of the cage's limits",
        ),
        (
            &resources.network,
            "linux.resources.network",
            "the cage has no network devices to classify",
        ),
        (
            &resources.rdma,
            "linux.resources.rdma",
            "RDMA is not available in the cage",
        ),
        (
            &resources.unified,
            "linux.resources.unified",
            "raw cgroup v2 files are not accepted; use the typed limits",
        ),
    ])?;
    // runc's default config carries one rule, deny-all: that is exactly what the cage has (no
    // device nodes besides DockLock's own), so it is accepted; any allow rule is not.
    for (index, rule) in resources.devices.iter().enumerate() {
        let deny_all = !rule.allow
            && matches!(rule.kind.as_deref(), None | Some("a"))
            && rule.major.is_none_or(|m| m == -1)
            && rule.minor.is_none_or(|m| m == -1)
            && matches!(rule.access.as_deref(), None | Some("rwm"));
        if !deny_all {
            return Err(SpecError::NotSupported {
                what: format!("linux.resources.devices[{index}]"),
                reason: "only the deny-all rule is accepted: the cage has no device access"
                    .to_owned(),
            });
        }
    }

    let mut out = CageResources::default();
    if let Some(memory) = resources.memory {
        check_refused(&[
            (
                &memory.reservation,
                "linux.resources.memory.reservation",
                "soft limits are not part of the cage",
            ),
            (
                &memory.kernel,
                "linux.resources.memory.kernel",
                "kernel memory limits are deprecated and not supported",
            ),
            (
                &memory.kernel_tcp,
                "linux.resources.memory.kernelTCP",
                "kernel memory limits are deprecated and not supported",
            ),
            (
                &memory.swappiness,
                "linux.resources.memory.swappiness",
                "swappiness is not part of the cage",
            ),
            (
                &memory.disable_oom_killer,
                "linux.resources.memory.disableOOMKiller",
                "an OOM inside the cage must kill inside the cage",
            ),
            (
                &memory.use_hierarchy,
                "linux.resources.memory.useHierarchy",
                "hierarchy accounting is always on",
            ),
            (
                &memory.check_before_update,
                "linux.resources.memory.checkBeforeUpdate",
                "the cage's limits are never updated",
            ),
        ])?;
        out.memory_limit_bytes = positive_limit(
            memory.limit,
            "linux.resources.memory.limit",
            limits::MEMORY_LIMIT_BYTES_MIN,
            limits::MEMORY_LIMIT_BYTES_MAX,
        )?;
        out.memory_swap_limit_bytes = positive_limit(
            memory.swap,
            "linux.resources.memory.swap",
            limits::MEMORY_LIMIT_BYTES_MIN,
            limits::MEMORY_LIMIT_BYTES_MAX,
        )?;
        if let (Some(limit), Some(swap)) = (out.memory_limit_bytes, out.memory_swap_limit_bytes)
            && swap < limit
        {
            return Err(invalid(
                "linux.resources.memory.swap",
                format!("memory+swap limit {swap} is below the memory limit {limit}"),
            ));
        }
        if out.memory_swap_limit_bytes.is_some() && out.memory_limit_bytes.is_none() {
            return Err(invalid(
                "linux.resources.memory.swap",
                "a swap limit needs a memory limit",
            ));
        }
    }
    if let Some(pids) = resources.pids {
        out.pids_max = positive_limit(
            Some(pids.limit),
            "linux.resources.pids.limit",
            1,
            limits::PIDS_LIMIT_MAX,
        )?;
    }
    if let Some(cpu) = resources.cpu {
        check_refused(&[
            (
                &cpu.burst,
                "linux.resources.cpu.burst",
                "CPU burst is not part of the cage",
            ),
            (
                &cpu.realtime_runtime,
                "linux.resources.cpu.realtimeRuntime",
                "the cage gets no realtime scheduling",
            ),
            (
                &cpu.realtime_period,
                "linux.resources.cpu.realtimePeriod",
                "the cage gets no realtime scheduling",
            ),
            (
                &cpu.cpus,
                "linux.resources.cpu.cpus",
                "CPU placement is chosen by DockLock (replay rotates it on purpose)",
            ),
            (
                &cpu.mems,
                "linux.resources.cpu.mems",
                "NUMA placement is not part of the cage",
            ),
            (
                &cpu.idle,
                "linux.resources.cpu.idle",
                "SCHED_IDLE groups are not part of the cage",
            ),
        ])?;
        out.cpu_quota_us = positive_limit(
            cpu.quota,
            "linux.resources.cpu.quota",
            limits::CPU_QUOTA_US_MIN,
            limits::CPU_QUOTA_US_MAX,
        )?;
        if let Some(period) = cpu.period {
            if !(limits::CPU_PERIOD_US_MIN..=limits::CPU_PERIOD_US_MAX).contains(&period) {
                return Err(invalid(
                    "linux.resources.cpu.period",
                    format!(
                        "{period} is outside {}..={} microseconds",
                        limits::CPU_PERIOD_US_MIN,
                        limits::CPU_PERIOD_US_MAX
                    ),
                ));
            }
            out.cpu_period_us = Some(period);
        }
        if let Some(shares) = cpu.shares {
            if !(limits::CPU_SHARES_MIN..=limits::CPU_SHARES_MAX).contains(&shares) {
                return Err(invalid(
                    "linux.resources.cpu.shares",
                    format!(
                        "{shares} is outside {}..={}",
                        limits::CPU_SHARES_MIN,
                        limits::CPU_SHARES_MAX
                    ),
                ));
            }
            out.cpu_shares = Some(shares);
        }
    }
    if let Some(block_io) = resources.block_io {
        check_refused(&[
            (
                &block_io.leaf_weight,
                "linux.resources.blockIO.leafWeight",
                "leaf weights do not exist in cgroup v2",
            ),
            (
                &block_io.weight_device,
                "linux.resources.blockIO.weightDevice",
                "per-device settings are not part of the cage",
            ),
            (
                &block_io.throttle_read_bps_device,
                "linux.resources.blockIO.throttleReadBpsDevice",
                "per-device settings are not part of the cage",
            ),
            (
                &block_io.throttle_write_bps_device,
                "linux.resources.blockIO.throttleWriteBpsDevice",
                "per-device settings are not part of the cage",
            ),
            (
                &block_io.throttle_read_iops_device,
                "linux.resources.blockIO.throttleReadIOPSDevice",
                "per-device settings are not part of the cage",
            ),
            (
                &block_io.throttle_write_iops_device,
                "linux.resources.blockIO.throttleWriteIOPSDevice",
                "per-device settings are not part of the cage",
            ),
        ])?;
        if let Some(weight) = block_io.weight {
            if !(limits::BLKIO_WEIGHT_MIN..=limits::BLKIO_WEIGHT_MAX).contains(&weight) {
                return Err(invalid(
                    "linux.resources.blockIO.weight",
                    format!(
                        "{weight} is outside {}..={}",
                        limits::BLKIO_WEIGHT_MIN,
                        limits::BLKIO_WEIGHT_MAX
                    ),
                ));
            }
            out.blkio_weight = Some(weight);
        }
    }
    Ok(out)
}

/// An OCI limit where a value ≤ 0 means "unlimited" (runc's convention for -1 and 0).
fn positive_limit(
    value: Option<i64>,
    field: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, SpecError> {
    match value {
        None => Ok(None),
        Some(v) if v <= 0 => Ok(None),
        Some(v) => {
            let v = v as u64;
            if (min..=max).contains(&v) {
                Ok(Some(v))
            } else {
                Err(invalid(field, format!("{v} is outside {min}..={max}")))
            }
        }
    }
}
