//! Capability sets by OCI name, and dropping every capability but a kept set.
//!
//! Implemented on rustix (capget/capset and the `PR_CAPBSET_*`/`PR_CAP_AMBIENT` prctls) rather than
//! the `caps` crate: `caps` reports failures as strings (the launcher must pass an errno back to
//! its parent), changes each set with a separate capget/capset pair over `HashSet`s, and rustix is
//! already in the workspace.

use rustix::io::Errno;
use rustix::thread::{CapabilitySet, CapabilitySets};

use crate::{CAPABILITY_COUNT, CAPABILITY_NUMBER_PROBE_MAX};

/// OCI / `capabilities(7)` names, indexed by capability number.
const CAPABILITY_NAMES: [&str; CAPABILITY_COUNT] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A set of Linux capabilities: bit `n` is capability number `n` (`CAP_CHOWN` = 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CapSet(u64);

/// A capability name that is not one of the [`CAPABILITY_COUNT`] known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability {name:?} (expected an OCI name such as \"CAP_NET_BIND_SERVICE\")")]
pub struct CapParseError {
    pub name: String,
}

impl CapSet {
    pub const EMPTY: CapSet = CapSet(0);
    /// Every capability known by name.
    pub const ALL: CapSet = CapSet((1u64 << CAPABILITY_COUNT) - 1);

    /// Parses OCI capability names (`"CAP_NET_BIND_SERVICE"`; exact, upper case, as runc does).
    /// Duplicates are allowed; the first unknown name is the error.
    pub fn parse_names(names: &[String]) -> Result<CapSet, CapParseError> {
        let mut bits = 0u64;
        for name in names {
            let number =
                CapSet::number_of(name).ok_or_else(|| CapParseError { name: name.clone() })?;
            bits |= 1u64 << number;
        }
        Ok(CapSet(bits))
    }

    /// The capability number of an OCI name.
    pub fn number_of(name: &str) -> Option<u8> {
        let index = CAPABILITY_NAMES.iter().position(|known| *known == name)?;
        u8::try_from(index).ok()
    }

    /// The OCI name of a capability number, if known.
    pub fn name_of(number: u8) -> Option<&'static str> {
        CAPABILITY_NAMES.get(usize::from(number)).copied()
    }

    /// The set with exactly these bits; `None` if a bit names no known capability.
    pub const fn from_bits(bits: u64) -> Option<CapSet> {
        if bits & !CapSet::ALL.0 == 0 {
            Some(CapSet(bits))
        } else {
            None
        }
    }

    pub const fn bits(self) -> u64 {
        self.0
    }

    pub const fn contains(self, number: u8) -> bool {
        number < 64 && self.0 & (1u64 << number) != 0
    }

    pub const fn union(self, other: CapSet) -> CapSet {
        CapSet(self.0 | other.0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Names of the capabilities in the set, by number.
    pub fn names(self) -> Vec<&'static str> {
        CAPABILITY_NAMES
            .iter()
            .enumerate()
            .filter(|(number, _)| self.0 & (1u64 << number) != 0)
            .map(|(_, name)| *name)
            .collect()
    }
}

/// Which step of [`drop_capabilities`] failed, with the kernel's errno.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapDropError {
    #[error("capget: {0}")]
    Capget(Errno),
    #[error("raising the effective capabilities to the permitted set: {0}")]
    RaiseEffective(Errno),
    #[error("reading {} in the bounding set: {errno}", cap_label(*.number))]
    BoundingRead { number: u8, errno: Errno },
    #[error("dropping {} from the bounding set: {errno}", cap_label(*.number))]
    BoundingDrop { number: u8, errno: Errno },
    #[error("clearing the ambient capabilities: {0}")]
    AmbientClear(Errno),
    #[error(
        "capabilities to keep are not permitted to this process: {}",
        .missing.names().join(", ")
    )]
    KeepNotPermitted { missing: CapSet },
    #[error("capset: {0}")]
    Capset(Errno),
    #[error(
        "capabilities after capset differ from the kept set {:#x}: effective {effective:#x}, \
         permitted {permitted:#x}, inheritable {inheritable:#x}",
        .keep.bits()
    )]
    NotApplied {
        keep: CapSet,
        effective: u64,
        permitted: u64,
        inheritable: u64,
    },
}

impl CapDropError {
    /// The kernel errno behind this error (`EPERM` for a kept capability that is not permitted).
    pub fn errno(&self) -> Errno {
        match self {
            CapDropError::Capget(errno)
            | CapDropError::RaiseEffective(errno)
            | CapDropError::AmbientClear(errno)
            | CapDropError::Capset(errno)
            | CapDropError::BoundingRead { errno, .. }
            | CapDropError::BoundingDrop { errno, .. } => *errno,
            CapDropError::KeepNotPermitted { .. } | CapDropError::NotApplied { .. } => Errno::PERM,
        }
    }
}

fn cap_label(number: u8) -> String {
    match CapSet::name_of(number) {
        Some(name) => name.to_string(),
        None => format!("capability {number}"),
    }
}

/// The kernel's highest capability number (`/proc/sys/kernel/cap_last_cap`), if readable.
fn kernel_last_capability() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Leaves the calling thread with exactly `keep`: every other capability is dropped from the
/// bounding set (including ones newer than this crate, up to the kernel's last), the ambient set
/// is cleared, and effective = permitted = inheritable = `keep`.
///
/// Needs `CAP_SETPCAP` in the permitted set (root, or root in a user namespace): a process that
/// switched to a non-root uid must have set `PR_SET_KEEPCAPS` before `setuid` (the effective set
/// is raised back to the permitted one here), or call this before `setuid`. With the ambient set
/// empty, kept capabilities survive `execve` only for a uid-0 workload (or file capabilities),
/// which is what OCI bundles that declare capabilities run as.
pub fn drop_capabilities(keep: CapSet) -> Result<(), CapDropError> {
    let current = rustix::thread::capabilities(None).map_err(CapDropError::Capget)?;
    // After setuid with PR_SET_KEEPCAPS the effective set is empty but the permitted one is not;
    // PR_CAPBSET_DROP needs CAP_SETPCAP effective.
    if current.effective != current.permitted {
        let raised = CapabilitySets {
            effective: current.permitted,
            ..current
        };
        rustix::thread::set_capabilities(None, raised).map_err(CapDropError::RaiseEffective)?;
    }
    let missing = keep.bits() & !current.permitted.bits();
    if missing != 0 {
        return Err(CapDropError::KeepNotPermitted {
            missing: CapSet(missing),
        });
    }

    // One prctl per capability: PR_CAPBSET_DROP of a capability already out of the set
    // succeeds, so only kept ones are read (to find the kernel's last capability, EINVAL past
    // it, the same way). Reading each before dropping it doubled the calls: ~0.15 ms per cage.
    for number in 0..=CAPABILITY_NUMBER_PROBE_MAX {
        let number_u8 = number as u8;
        let cap = CapabilitySet::from_bits_retain(1u64 << number);
        if keep.contains(number_u8) {
            match rustix::thread::capability_is_in_bounding_set(cap) {
                Ok(_) => {}
                // EINVAL: past the kernel's last capability.
                Err(Errno::INVAL) => break,
                Err(errno) => {
                    return Err(CapDropError::BoundingRead {
                        number: number_u8,
                        errno,
                    });
                }
            }
            continue;
        }
        match rustix::thread::remove_capability_from_bounding_set(cap) {
            Ok(()) => {}
            // EINVAL past the kernel's last capability ends the walk. For one of the named
            // capabilities it does only on a kernel older than that capability (CAP_BPF is 5.8),
            // which /proc says; anything else is a failure (fail closed).
            Err(Errno::INVAL)
                if usize::from(number_u8) >= CAPABILITY_COUNT
                    || kernel_last_capability().is_some_and(|last| u32::from(number_u8) > last) =>
            {
                break;
            }
            Err(errno) => {
                return Err(CapDropError::BoundingDrop {
                    number: number_u8,
                    errno,
                });
            }
        }
    }

    match rustix::thread::clear_ambient_capability_set() {
        // EINVAL: a kernel before 4.3 has no ambient set, so there is nothing to clear.
        Ok(()) | Err(Errno::INVAL) => {}
        Err(errno) => return Err(CapDropError::AmbientClear(errno)),
    }

    let kept = CapabilitySet::from_bits_retain(keep.bits());
    let wanted = CapabilitySets {
        effective: kept,
        permitted: kept,
        inheritable: kept,
    };
    rustix::thread::set_capabilities(None, wanted).map_err(CapDropError::Capset)?;

    let now = rustix::thread::capabilities(None).map_err(CapDropError::Capget)?;
    if now != wanted {
        return Err(CapDropError::NotApplied {
            keep,
            effective: now.effective.bits(),
            permitted: now.permitted.bits(),
            inheritable: now.inheritable.bits(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn names_match_the_kernel_numbers() {
        // rustix's constants come from the kernel headers (linux-raw-sys): an independent source.
        for (number, name) in CAPABILITY_NAMES.iter().enumerate() {
            let short = name
                .strip_prefix("CAP_")
                .expect("every name starts with CAP_");
            let flag = CapabilitySet::from_name(short).expect("rustix knows every name");
            assert_eq!(flag.bits(), 1u64 << number, "{name}");
        }
        assert_eq!(CapSet::ALL.bits().count_ones() as usize, CAPABILITY_COUNT);
        assert_eq!(CapSet::ALL.bits(), (1u64 << 41) - 1);
    }

    #[test]
    fn parse_names_sets_the_named_bits() {
        let set = CapSet::parse_names(&names(&["CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_CHOWN"]))
            .expect("known names parse");
        assert_eq!(set.bits(), (1 << 10) | 1);
        assert_eq!(set.names(), vec!["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]);
        assert!(set.contains(10) && set.contains(0) && !set.contains(21) && !set.contains(200));
        let last = CapSet::parse_names(&names(&["CAP_CHECKPOINT_RESTORE"])).expect("parses");
        assert_eq!(last.bits(), 1 << 40);
        assert_eq!(
            CapSet::parse_names(&[]).expect("empty parses"),
            CapSet::EMPTY
        );
    }

    #[test]
    fn unknown_or_miscased_names_are_errors_naming_them() {
        for bad in [
            "CAP_NET_BIND_SERVIC",
            "cap_chown",
            "NET_ADMIN",
            "",
            "CAP_SYS_ADMIN ",
        ] {
            let error = CapSet::parse_names(&names(&["CAP_CHOWN", bad])).expect_err(bad);
            assert_eq!(error.name, bad);
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn from_bits_rejects_unknown_bits_and_round_trips() {
        assert_eq!(CapSet::from_bits(1 << 41), None);
        assert_eq!(CapSet::from_bits(u64::MAX), None);
        let set = CapSet::from_bits(0x401).expect("known bits");
        assert_eq!(set.bits(), 0x401);
        assert_eq!(CapSet::name_of(40), Some("CAP_CHECKPOINT_RESTORE"));
        assert_eq!(CapSet::name_of(41), None);
        assert_eq!(CapSet::number_of("CAP_SYS_ADMIN"), Some(21));
    }

    #[test]
    fn drop_errors_name_the_capability_and_errno() {
        let error = CapDropError::BoundingDrop {
            number: 21,
            errno: Errno::PERM,
        };
        assert_eq!(error.errno(), Errno::PERM);
        assert!(error.to_string().contains("CAP_SYS_ADMIN"), "{error}");
        let future = CapDropError::BoundingDrop {
            number: 45,
            errno: Errno::PERM,
        };
        assert!(future.to_string().contains("capability 45"), "{future}");
        let missing = CapDropError::KeepNotPermitted {
            missing: CapSet(1 << 12),
        };
        assert!(missing.to_string().contains("CAP_NET_ADMIN"), "{missing}");
    }
}
