//! Landlock: filesystem, TCP and scope restrictions for the calling thread and its descendants.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError, RulesetStatus, Scope,
};
use rustix::fs::{FileType, Mode, OFlags};

/// The Landlock ABI whose rights this policy handles (Linux 6.15+, which this machine kind and CI
/// run).
///
/// Every filesystem right of this ABI, TCP bind/connect (ABI 4) and both scopes (ABI 6) are
/// handled.
/// On an older kernel the missing rights are dropped (best effort) and the report says
/// [`LandlockStatus::PartiallyEnforced`]. Rights of newer ABIs (8: all-threads enforcement, which a
/// single-threaded cage process does not need; 9: `RESOLVE_UNIX`, connecting to pathname unix
/// sockets; 10: UDP) are not handled until this constant is raised after a review and a test run on
/// a kernel that has them.
pub const LANDLOCK_ABI_TARGET: u8 = 7;

const TARGET_ABI: ABI = ABI::V7;
const _: () = assert!(TARGET_ABI as u8 == LANDLOCK_ABI_TARGET);

/// What the cage process may still do after [`restrict_landlock`]. Paths are as seen by the
/// calling process (after `pivot_root`, cage paths); each rule covers the path and everything
/// beneath it. Anything not granted is denied for every handled right.
///
/// The caller lists every path the workload needs: devices such as `/dev/null`, `/dev/zero`,
/// `/dev/urandom` or a tty need `read_write_paths` (writing to `/dev/null` is a write, and
/// `ioctl` on a device needs the `IOCTL_DEV` right, which only the read-write grant includes);
/// the dynamic loader and shared libraries need `read_exec_paths`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LandlockPlan {
    /// Read files, list directories and execute files beneath each path.
    pub read_exec_paths: Vec<PathBuf>,
    /// Every filesystem right (read, write, create, remove, rename/link within granted trees,
    /// truncate, device ioctl, execute) beneath each path.
    pub read_write_paths: Vec<PathBuf>,
    /// TCP ports the workload may `bind` (empty: every TCP bind is denied). Port 0 grants binding
    /// to an ephemeral port.
    pub tcp_bind_ports: Vec<u16>,
    /// TCP ports the workload may `connect` to (empty: every TCP connect is denied).
    pub tcp_connect_ports: Vec<u16>,
    /// Deny signals to, and abstract unix socket connections to, processes outside the workload's
    /// Landlock domain (the launcher, the host).
    pub scoped: bool,
    /// Ask the kernel to log denials after the next `execve` too
    /// (`LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON`, ABI 7): without it only denials of the program
    /// that restricted itself are logged, never the workload's. The records reach the audit log
    /// (read with [`crate::landlock_audit`]) only while audit is enabled. Dropped silently on a
    /// kernel older than ABI 7, like the other best-effort rights.
    pub log_denials_after_exec: bool,
}

/// How much of the plan the running kernel enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LandlockStatus {
    /// Every handled right of [`LANDLOCK_ABI_TARGET`] and every requested scope is enforced.
    FullyEnforced,
    /// The kernel's Landlock is older than the target ABI: some rights or scopes are not enforced.
    PartiallyEnforced,
    /// The kernel has no (enabled) Landlock: nothing is enforced.
    NotEnforced,
}

impl LandlockStatus {
    /// Stable code recorded in receipts: 0 = not enforced, 1 = partially, 2 = fully enforced.
    pub const fn code(self) -> u8 {
        match self {
            LandlockStatus::NotEnforced => 0,
            LandlockStatus::PartiallyEnforced => 1,
            LandlockStatus::FullyEnforced => 2,
        }
    }

    /// Inverse of [`LandlockStatus::code`]; `None` for an unknown code.
    pub const fn from_code(code: u8) -> Option<LandlockStatus> {
        match code {
            0 => Some(LandlockStatus::NotEnforced),
            1 => Some(LandlockStatus::PartiallyEnforced),
            2 => Some(LandlockStatus::FullyEnforced),
            _ => None,
        }
    }

    /// Lower-case name for logs and CLI output.
    pub const fn as_str(self) -> &'static str {
        match self {
            LandlockStatus::NotEnforced => "not_enforced",
            LandlockStatus::PartiallyEnforced => "partially_enforced",
            LandlockStatus::FullyEnforced => "fully_enforced",
        }
    }
}

/// What [`restrict_landlock`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LandlockReport {
    pub status: LandlockStatus,
    /// The Landlock ABI whose rights are enforced: min(kernel ABI, [`LANDLOCK_ABI_TARGET`]);
    /// 0 when the kernel has no Landlock.
    pub abi: u8,
    /// The running kernel's Landlock ABI (may exceed `abi`); 0 when it has no Landlock.
    pub kernel_abi: u8,
}

/// Why [`restrict_landlock`] failed. Nothing is restricted when any error is returned, except
/// for [`LandlockError::RestrictSelf`], whose failure leaves the thread as it was too (the kernel
/// applies a domain atomically) but may have set no_new_privs.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("landlock path {}: cannot open: {source}", path.display())]
    OpenPath {
        path: PathBuf,
        source: rustix::io::Errno,
    },
    #[error("landlock path {}: cannot stat: {source}", path.display())]
    StatPath {
        path: PathBuf,
        source: rustix::io::Errno,
    },
    #[error("landlock ruleset: handling {what}: {source}")]
    Handle {
        what: &'static str,
        source: RulesetError,
    },
    #[error("landlock ruleset: creating: {source}")]
    Create { source: RulesetError },
    #[error("landlock path {}: adding the rule: {source}", path.display())]
    AddPath { path: PathBuf, source: RulesetError },
    #[error("landlock tcp port {port}: adding the {what} rule: {source}")]
    AddPort {
        port: u16,
        what: &'static str,
        source: RulesetError,
    },
    #[error("landlock restrict_self: {source}")]
    RestrictSelf { source: RulesetError },
}

impl LandlockError {
    /// The kernel errno behind this error, if one is (for the launcher's `(step, errno)` report).
    pub fn errno(&self) -> Option<rustix::io::Errno> {
        match self {
            LandlockError::OpenPath { source, .. } | LandlockError::StatPath { source, .. } => {
                Some(*source)
            }
            LandlockError::Handle { source, .. }
            | LandlockError::Create { source }
            | LandlockError::AddPath { source, .. }
            | LandlockError::AddPort { source, .. }
            | LandlockError::RestrictSelf { source } => errno_in_chain(source),
        }
    }
}

/// Walks an error's source chain to the first `std::io::Error` carrying an OS errno.
fn errno_in_chain(error: &(dyn std::error::Error + 'static)) -> Option<rustix::io::Errno> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(raw) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            return Some(rustix::io::Errno::from_raw_os_error(raw));
        }
        current = e.source();
    }
    None
}

/// Restricts the calling thread (and everything it later forks or executes) to `plan`.
///
/// Handles every filesystem right of [`LANDLOCK_ABI_TARGET`], TCP bind and connect, and, when
/// `plan.scoped`, the abstract-unix-socket and signal scopes, in best-effort mode: a kernel
/// lacking some of them still gets the rest, and the report says
/// [`LandlockStatus::PartiallyEnforced`] (or `NotEnforced` without Landlock). The caller decides
/// whether that is acceptable; the status belongs in the run record.
///
/// Every path is opened before anything is restricted, so a missing path is an
/// [`LandlockError::OpenPath`] naming it and leaves the thread unrestricted. Sets no_new_privs
/// (Landlock requires it unless the caller has `CAP_SYS_ADMIN`).
pub fn restrict_landlock(plan: &LandlockPlan) -> Result<LandlockReport, LandlockError> {
    let mut path_rules =
        Vec::with_capacity(plan.read_exec_paths.len() + plan.read_write_paths.len());
    for path in &plan.read_exec_paths {
        path_rules.push(open_path_rule(path, AccessFs::from_read(TARGET_ABI))?);
    }
    for path in &plan.read_write_paths {
        path_rules.push(open_path_rule(path, AccessFs::from_all(TARGET_ABI))?);
    }

    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(|source| LandlockError::Handle {
            what: "filesystem rights",
            source,
        })?
        .handle_access(AccessNet::from_all(TARGET_ABI))
        .map_err(|source| LandlockError::Handle {
            what: "tcp bind/connect",
            source,
        })?;
    if plan.scoped {
        ruleset = ruleset
            .scope(Scope::from_all(TARGET_ABI))
            .map_err(|source| LandlockError::Handle {
                what: "scopes",
                source,
            })?;
    }
    let mut created = ruleset
        .create()
        .map_err(|source| LandlockError::Create { source })?;
    for rule in path_rules {
        let PathRule { path, fd, access } = rule;
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|source| LandlockError::AddPath { path, source })?;
    }
    for &port in &plan.tcp_bind_ports {
        created = created
            .add_rule(NetPort::new(port, AccessNet::BindTcp))
            .map_err(|source| LandlockError::AddPort {
                port,
                what: "bind",
                source,
            })?;
    }
    for &port in &plan.tcp_connect_ports {
        created = created
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(|source| LandlockError::AddPort {
                port,
                what: "connect",
                source,
            })?;
    }
    if plan.log_denials_after_exec {
        created = created
            .log_new_exec(true)
            .map_err(|source| LandlockError::Handle {
                what: "logging denials after exec",
                source,
            })?;
    }
    let restriction = created
        .restrict_self()
        .map_err(|source| LandlockError::RestrictSelf { source })?;

    let status = match restriction.ruleset {
        RulesetStatus::FullyEnforced => LandlockStatus::FullyEnforced,
        RulesetStatus::PartiallyEnforced => LandlockStatus::PartiallyEnforced,
        RulesetStatus::NotEnforced => LandlockStatus::NotEnforced,
    };
    let (abi, kernel_abi) = match restriction.landlock {
        landlock::LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => {
            let known = effective_abi as u8;
            let kernel = kernel_abi.map_or(known, |v| u8::try_from(v).unwrap_or(u8::MAX));
            (known.min(LANDLOCK_ABI_TARGET), kernel)
        }
        landlock::LandlockStatus::NotEnabled | landlock::LandlockStatus::NotImplemented => (0, 0),
    };
    Ok(LandlockReport {
        status,
        abi,
        kernel_abi,
    })
}

struct PathRule {
    path: PathBuf,
    fd: OwnedFd,
    access: BitFlags<AccessFs>,
}

/// Opens `path` with `O_PATH` and narrows `access` to the rights a non-directory can carry, since
/// the kernel rejects directory-only rights (list, create, remove, refer) on a file rule: a plan
/// may name a single file such as `/dev/null`.
fn open_path_rule(path: &Path, access: BitFlags<AccessFs>) -> Result<PathRule, LandlockError> {
    let fd = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).map_err(
        |source| LandlockError::OpenPath {
            path: path.to_path_buf(),
            source,
        },
    )?;
    let stat = rustix::fs::fstat(&fd).map_err(|source| LandlockError::StatPath {
        path: path.to_path_buf(),
        source,
    })?;
    let access = if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
        access
    } else {
        access & AccessFs::from_file(TARGET_ABI)
    };
    Ok(PathRule {
        path: path.to_path_buf(),
        fd,
        access,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_round_trip_and_are_distinct() {
        let all = [
            LandlockStatus::NotEnforced,
            LandlockStatus::PartiallyEnforced,
            LandlockStatus::FullyEnforced,
        ];
        for status in all {
            assert_eq!(LandlockStatus::from_code(status.code()), Some(status));
        }
        assert_eq!(all.map(LandlockStatus::code), [0, 1, 2]);
        assert_eq!(LandlockStatus::from_code(3), None);
    }

    #[test]
    fn file_rules_keep_only_file_rights() {
        let file = open_path_rule(Path::new("/dev/null"), AccessFs::from_all(TARGET_ABI))
            .expect("/dev/null opens");
        assert_eq!(file.access, AccessFs::from_file(TARGET_ABI));
        assert!(
            file.access
                .contains(AccessFs::WriteFile | AccessFs::IoctlDev)
        );
        assert!(!file.access.contains(AccessFs::ReadDir));

        let dir = open_path_rule(Path::new("/"), AccessFs::from_read(TARGET_ABI)).expect("/ opens");
        assert_eq!(dir.access, AccessFs::from_read(TARGET_ABI));
    }

    #[test]
    fn missing_path_names_the_path() {
        let missing = Path::new("/nonexistent/metanode-confine-test");
        let error = open_path_rule(missing, AccessFs::from_read(TARGET_ABI))
            .err()
            .expect("a missing path is an error");
        assert_eq!(error.errno(), Some(rustix::io::Errno::NOENT));
        assert!(
            error
                .to_string()
                .contains("/nonexistent/metanode-confine-test"),
            "{error}"
        );
    }
}
