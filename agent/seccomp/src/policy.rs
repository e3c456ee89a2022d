//! The policy as data: `policy/seccomp.yaml` parsed into syscall numbers, with every rule checked.
//!
//! The YAML format is documented at the top of `policy/seccomp.yaml`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;
use syscalls::x86_64::Sysno;

/// The reviewed policy compiled into the crate.
const BUILTIN_POLICY_YAML: &str = include_str!("../policy/seccomp.yaml");

/// The one format version this parser understands.
pub(crate) const POLICY_FORMAT_VERSION: u32 = 1;
/// The only architecture a policy may name; syscall numbers are resolved with x86_64's table.
pub(crate) const POLICY_ARCH: &str = "x86_64";
/// Syscalls take at most six arguments (index 0..=5), as `struct seccomp_data` has.
pub(crate) const ARG_INDEX_MAX: u8 = 5;
/// Largest errno the kernel can return through SECCOMP_RET_ERRNO (MAX_ERRNO).
pub(crate) const ERRNO_MAX: i32 = 4095;
/// The errno that the supervisor answers with; denials with it take the reported path.
pub(crate) const REPORTED_ERRNO: i32 = libc::EPERM;

/// Why a policy could not be parsed or compiled. Every message names the line or the syscall.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("seccomp policy line {line}, column {column}: {message}")]
    Yaml {
        line: u64,
        column: u64,
        message: String,
    },
    #[error(
        "seccomp policy line {line}: format version {version} is not supported (expected {POLICY_FORMAT_VERSION})"
    )]
    Version { line: u64, version: u32 },
    #[error(
        "seccomp policy line {line}: arch {arch:?} is not supported; only {POLICY_ARCH} policies can be compiled"
    )]
    UnsupportedArch { line: u64, arch: String },
    #[error(
        "seccomp policy: this build targets {host}; seccomp policies can only be compiled and installed on {POLICY_ARCH}"
    )]
    UnsupportedHost { host: &'static str },
    #[error("seccomp policy line {line}: unknown {POLICY_ARCH} syscall {name:?}")]
    UnknownSyscall { line: u64, name: String },
    #[error(
        "seccomp policy line {line}: unknown errno {name:?} (expected a name such as EPERM or ENOSYS)"
    )]
    UnknownErrno { line: u64, name: String },
    #[error(
        "seccomp policy line {line}: {section} rule has no reason (every rule needs a non-empty `reason`)"
    )]
    MissingReason { line: u64, section: &'static str },
    #[error("seccomp policy line {line}: {section} rule has an empty `names` list")]
    NoNames { line: u64, section: &'static str },
    #[error(
        "seccomp policy: syscall {name:?} is both allowed (line {allow_line}) and denied (line {deny_line})"
    )]
    AllowedAndDenied {
        name: String,
        allow_line: u64,
        deny_line: u64,
    },
    #[error(
        "seccomp policy line {line}: syscall {name:?} is already {section} at line {first_line}"
    )]
    Duplicate {
        name: String,
        line: u64,
        first_line: u64,
        section: &'static str,
    },
    #[error(
        "seccomp policy line {line}: syscall {name:?} has both an unconditional allow rule and an allow rule with args (line {other_line})"
    )]
    MixedAllow {
        name: String,
        line: u64,
        other_line: u64,
    },
    #[error(
        "seccomp policy line {line}: deny rule with `when` for {name:?} needs an unconditional allow rule for {name:?} to carve the exception from"
    )]
    WhenWithoutAllow { name: String, line: u64 },
    #[error(
        "seccomp policy line {line}: {what} must use errno EPERM, not {errno} (such calls are answered by the supervisor, which always answers EPERM)"
    )]
    ReportedErrno {
        line: u64,
        what: &'static str,
        errno: String,
    },
    #[error("seccomp policy line {line}: condition: {message}")]
    Condition { line: u64, message: String },
    #[error("seccomp policy: building the {program} filter failed: {message}")]
    Backend {
        program: &'static str,
        message: String,
    },
}

/// Comparison width: how much of the 64-bit argument slot is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Width {
    /// Only the low 32 bits (`arg & 0xffff_ffff`), as the kernel reads `int` parameters.
    Bits32,
    Bits64,
}

impl Width {
    pub(crate) fn all_ones(self) -> u64 {
        match self {
            Width::Bits32 => u64::from(u32::MAX),
            Width::Bits64 => u64::MAX,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    MaskedEq(u64),
    MaskedNe(u64),
}

/// One comparison of one syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Condition {
    pub(crate) arg: u8,
    pub(crate) width: Width,
    pub(crate) op: Op,
    pub(crate) value: u64,
}

impl Condition {
    /// The condition that holds exactly when `self` does not, if seccompiler can express it.
    /// Used to turn a `deny ... when` into the allow rule of the notifying filter.
    pub(crate) fn negated(self) -> Option<Condition> {
        let op = match self.op {
            Op::Eq => Op::Ne,
            Op::Ne => Op::Eq,
            Op::Lt => Op::Ge,
            Op::Ge => Op::Lt,
            Op::Le => Op::Gt,
            Op::Gt => Op::Le,
            Op::MaskedNe(mask) => Op::MaskedEq(mask),
            // A full-width mask makes masked_eq a plain eq, whose negation is ne; any narrower
            // mask would need a "masked not equal", which seccomp BPF via seccompiler lacks.
            Op::MaskedEq(mask) if mask == self.width.all_ones() => Op::Ne,
            Op::MaskedEq(_) => return None,
        };
        Some(Condition { op, ..self })
    }
}

/// One allowed syscall: either unconditional (`alternatives` empty) or allowed when any one
/// alternative (a conjunction of conditions) holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllowedSyscall {
    pub(crate) sysno: Sysno,
    pub(crate) alternatives: Vec<Vec<Condition>>,
    pub(crate) line: u64,
}

/// A parsed, checked policy. Syscall numbers are x86_64's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompPolicy {
    /// Allowed syscalls by number.
    pub(crate) allowed: BTreeMap<u32, AllowedSyscall>,
    /// `deny ... when` rules (always EPERM, reported) by number; each condition refuses the call.
    pub(crate) carve_outs: BTreeMap<u32, Vec<Condition>>,
    /// Unconditional EPERM denials: documented, and refused by the default (reported) path.
    pub(crate) reported: BTreeMap<u32, Sysno>,
    /// Unconditional denials with another errno: answered by plain ERRNO filters, not reported.
    pub(crate) errno_denials: BTreeMap<u32, (Sysno, u16)>,
}

// ------------------------------------------------------------------------------------------------
// YAML shape

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Spanned<u32>,
    arch: Spanned<String>,
    x32_abi: Spanned<RawAbi>,
    foreign_arch: Spanned<RawAbi>,
    allow: Vec<Spanned<RawAllow>>,
    deny: Vec<Spanned<RawDeny>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAbi {
    errno: Spanned<String>,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    names: Vec<Spanned<String>>,
    reason: Option<String>,
    #[serde(default)]
    args: Vec<Spanned<RawCondition>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeny {
    names: Vec<Spanned<String>>,
    errno: Spanned<String>,
    reason: Option<String>,
    when: Option<Spanned<RawCondition>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    arg: u8,
    width: u8,
    op: RawOp,
    value: u64,
    mask: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    MaskedEq,
    MaskedNe,
}

// ------------------------------------------------------------------------------------------------
// Parsing and checking

impl SeccompPolicy {
    /// The reviewed policy shipped in `policy/seccomp.yaml`.
    pub fn builtin() -> Result<SeccompPolicy, PolicyError> {
        SeccompPolicy::parse(BUILTIN_POLICY_YAML)
    }

    /// Parses and checks a policy. Errors name the line (and column for YAML errors) or syscall.
    pub fn parse(yaml: &str) -> Result<SeccompPolicy, PolicyError> {
        let raw: RawPolicy = serde_saphyr::from_str(yaml).map_err(|err| {
            let (line, column) = err
                .location()
                .map_or((0, 0), |location| (location.line(), location.column()));
            PolicyError::Yaml {
                line,
                column,
                message: err.without_snippet().to_string(),
            }
        })?;

        if raw.version.value != POLICY_FORMAT_VERSION {
            return Err(PolicyError::Version {
                line: raw.version.referenced.line(),
                version: raw.version.value,
            });
        }
        if raw.arch.value != POLICY_ARCH {
            return Err(PolicyError::UnsupportedArch {
                line: raw.arch.referenced.line(),
                arch: raw.arch.value,
            });
        }
        check_abi_rule(&raw.x32_abi, "x32_abi")?;
        check_abi_rule(&raw.foreign_arch, "foreign_arch")?;

        let mut policy = SeccompPolicy {
            allowed: BTreeMap::new(),
            carve_outs: BTreeMap::new(),
            reported: BTreeMap::new(),
            errno_denials: BTreeMap::new(),
        };
        // Line of the unconditional allow rule, or of the first rule with args, per syscall.
        let mut allow_lines: BTreeMap<u32, u64> = BTreeMap::new();
        for rule in &raw.allow {
            policy.add_allow_rule(rule, &mut allow_lines)?;
        }
        let mut deny_lines: BTreeMap<u32, u64> = BTreeMap::new();
        for rule in &raw.deny {
            policy.add_deny_rule(rule, &allow_lines, &mut deny_lines)?;
        }
        Ok(policy)
    }

    fn add_allow_rule(
        &mut self,
        rule: &Spanned<RawAllow>,
        allow_lines: &mut BTreeMap<u32, u64>,
    ) -> Result<(), PolicyError> {
        let line = rule.referenced.line();
        check_rule_text(
            &rule.value.names,
            rule.value.reason.as_deref(),
            line,
            "allow",
        )?;
        let mut conditions = Vec::with_capacity(rule.value.args.len());
        for condition in &rule.value.args {
            let condition_line = condition.referenced.line();
            let parsed = parse_condition(&condition.value, condition_line)?;
            if let Op::MaskedNe(_) = parsed.op {
                return Err(PolicyError::Condition {
                    line: condition_line,
                    message: "masked_ne cannot be used in allow rules (seccomp BPF has no masked \
                              not-equal); write a deny rule with `when` instead"
                        .to_string(),
                });
            }
            conditions.push(parsed);
        }

        for name in &rule.value.names {
            let name_line = name.referenced.line();
            let sysno = resolve_syscall(name)?;
            let nr = sysno_number(sysno);
            match self.allowed.get_mut(&nr) {
                None => {
                    let alternatives = if conditions.is_empty() {
                        Vec::new()
                    } else {
                        vec![conditions.clone()]
                    };
                    self.allowed.insert(
                        nr,
                        AllowedSyscall {
                            sysno,
                            alternatives,
                            line: name_line,
                        },
                    );
                    allow_lines.insert(nr, name_line);
                }
                Some(existing) => {
                    let first_line = allow_lines.get(&nr).copied().unwrap_or(existing.line);
                    match (existing.alternatives.is_empty(), conditions.is_empty()) {
                        (true, true) => {
                            return Err(PolicyError::Duplicate {
                                name: name.value.clone(),
                                line: name_line,
                                first_line,
                                section: "allowed",
                            });
                        }
                        (false, false) => existing.alternatives.push(conditions.clone()),
                        _ => {
                            return Err(PolicyError::MixedAllow {
                                name: name.value.clone(),
                                line: name_line,
                                other_line: first_line,
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn add_deny_rule(
        &mut self,
        rule: &Spanned<RawDeny>,
        allow_lines: &BTreeMap<u32, u64>,
        deny_lines: &mut BTreeMap<u32, u64>,
    ) -> Result<(), PolicyError> {
        let line = rule.referenced.line();
        check_rule_text(
            &rule.value.names,
            rule.value.reason.as_deref(),
            line,
            "deny",
        )?;
        let errno = resolve_errno(&rule.value.errno)?;

        let carve_out = match &rule.value.when {
            None => None,
            Some(when) => {
                let when_line = when.referenced.line();
                if errno != REPORTED_ERRNO {
                    return Err(PolicyError::ReportedErrno {
                        line: rule.value.errno.referenced.line(),
                        what: "a deny rule with `when`",
                        errno: rule.value.errno.value.clone(),
                    });
                }
                let condition = parse_condition(&when.value, when_line)?;
                let negation = condition.negated().ok_or_else(|| PolicyError::Condition {
                    line: when_line,
                    message: "masked_eq with a mask narrower than the width cannot be negated \
                              into the allow rule (seccomp BPF has no masked not-equal)"
                        .to_string(),
                })?;
                Some((condition, negation))
            }
        };

        for name in &rule.value.names {
            let name_line = name.referenced.line();
            let sysno = resolve_syscall(name)?;
            let nr = sysno_number(sysno);
            match carve_out {
                Some((condition, _negation)) => {
                    let unconditional = self
                        .allowed
                        .get(&nr)
                        .is_some_and(|allowed| allowed.alternatives.is_empty());
                    if !unconditional {
                        return Err(PolicyError::WhenWithoutAllow {
                            name: name.value.clone(),
                            line: name_line,
                        });
                    }
                    self.carve_outs.entry(nr).or_default().push(condition);
                }
                None => {
                    if let Some(&allow_line) = allow_lines.get(&nr) {
                        return Err(PolicyError::AllowedAndDenied {
                            name: name.value.clone(),
                            allow_line,
                            deny_line: name_line,
                        });
                    }
                    if let Some(&first_line) = deny_lines.get(&nr) {
                        return Err(PolicyError::Duplicate {
                            name: name.value.clone(),
                            line: name_line,
                            first_line,
                            section: "denied",
                        });
                    }
                    deny_lines.insert(nr, name_line);
                    if errno == REPORTED_ERRNO {
                        self.reported.insert(nr, sysno);
                    } else {
                        // resolve_errno guarantees 1..=ERRNO_MAX, which fits SECCOMP_RET_DATA.
                        let data = u16::try_from(errno).map_err(|_| PolicyError::UnknownErrno {
                            line: rule.value.errno.referenced.line(),
                            name: rule.value.errno.value.clone(),
                        })?;
                        self.errno_denials.insert(nr, (sysno, data));
                    }
                }
            }
        }
        Ok(())
    }

    /// Names of the syscalls this policy allows (with or without argument conditions).
    pub fn allowed_syscalls(&self) -> Vec<&'static str> {
        self.allowed.values().map(|a| a.sysno.name()).collect()
    }

    /// Every argument condition of the policy with its syscall number: the allowed
    /// alternatives' conditions, then the carve-outs'. Tests probe the compiled programs
    /// with each condition's constants.
    #[cfg(test)]
    pub(crate) fn conditions(&self) -> impl Iterator<Item = (u32, Condition)> + '_ {
        self.allowed
            .iter()
            .flat_map(|(&nr, a)| a.alternatives.iter().flatten().map(move |c| (nr, *c)))
            .chain(
                self.carve_outs
                    .iter()
                    .flat_map(|(&nr, cs)| cs.iter().map(move |c| (nr, *c))),
            )
    }

    /// Syscalls refused with an errno other than EPERM by a plain ERRNO filter: expected
    /// behaviour, never reported to the supervisor. Pairs of (name, errno).
    pub fn silent_denials(&self) -> Vec<(&'static str, i32)> {
        self.errno_denials
            .values()
            .map(|(sysno, errno)| (sysno.name(), i32::from(*errno)))
            .collect()
    }
}

fn check_abi_rule(rule: &Spanned<RawAbi>, what: &'static str) -> Result<(), PolicyError> {
    let line = rule.referenced.line();
    if rule
        .value
        .reason
        .as_deref()
        .is_none_or(|r| r.trim().is_empty())
    {
        return Err(PolicyError::MissingReason {
            line,
            section: what,
        });
    }
    let errno = resolve_errno(&rule.value.errno)?;
    if errno != REPORTED_ERRNO {
        return Err(PolicyError::ReportedErrno {
            line: rule.value.errno.referenced.line(),
            what,
            errno: rule.value.errno.value.clone(),
        });
    }
    Ok(())
}

fn check_rule_text(
    names: &[Spanned<String>],
    reason: Option<&str>,
    line: u64,
    section: &'static str,
) -> Result<(), PolicyError> {
    if names.is_empty() {
        return Err(PolicyError::NoNames { line, section });
    }
    if reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(PolicyError::MissingReason { line, section });
    }
    Ok(())
}

fn resolve_syscall(name: &Spanned<String>) -> Result<Sysno, PolicyError> {
    name.value
        .parse::<Sysno>()
        .map_err(|()| PolicyError::UnknownSyscall {
            line: name.referenced.line(),
            name: name.value.clone(),
        })
}

pub(crate) fn sysno_number(sysno: Sysno) -> u32 {
    // x86_64 syscall numbers are small and non-negative (the table ends below 1024).
    u32::try_from(sysno.id()).unwrap_or(u32::MAX)
}

fn resolve_errno(name: &Spanned<String>) -> Result<i32, PolicyError> {
    (1..=ERRNO_MAX)
        .find(|&number| syscalls::Errno::new(number).name() == Some(name.value.as_str()))
        .ok_or_else(|| PolicyError::UnknownErrno {
            line: name.referenced.line(),
            name: name.value.clone(),
        })
}

fn parse_condition(raw: &RawCondition, line: u64) -> Result<Condition, PolicyError> {
    let fail = |message: String| PolicyError::Condition { line, message };
    if raw.arg > ARG_INDEX_MAX {
        return Err(fail(format!(
            "arg {} is out of range (syscall arguments are 0..={ARG_INDEX_MAX})",
            raw.arg
        )));
    }
    let width = match raw.width {
        32 => Width::Bits32,
        64 => Width::Bits64,
        other => return Err(fail(format!("width {other} is not 32 or 64"))),
    };
    let all_ones = width.all_ones();
    if raw.value & !all_ones != 0 {
        return Err(fail(format!(
            "value {:#x} does not fit in {} bits",
            raw.value, raw.width
        )));
    }
    let masked = matches!(raw.op, RawOp::MaskedEq | RawOp::MaskedNe);
    let mask = match (masked, raw.mask) {
        (true, None) => return Err(fail("masked_eq/masked_ne need a `mask`".to_string())),
        (false, Some(mask)) => {
            return Err(fail(format!(
                "`mask` {mask:#x} is only meaningful with masked_eq/masked_ne"
            )));
        }
        (true, Some(mask)) => {
            if mask == 0 || mask & !all_ones != 0 {
                return Err(fail(format!(
                    "mask {mask:#x} must be non-zero and fit in {} bits",
                    raw.width
                )));
            }
            if raw.value & !mask != 0 {
                // (arg & mask) can never equal a value with bits outside the mask.
                return Err(fail(format!(
                    "value {:#x} has bits outside mask {mask:#x}",
                    raw.value
                )));
            }
            mask
        }
        (false, None) => 0,
    };
    let op = match raw.op {
        RawOp::Eq => Op::Eq,
        RawOp::Ne => Op::Ne,
        RawOp::Lt => Op::Lt,
        RawOp::Le => Op::Le,
        RawOp::Gt => Op::Gt,
        RawOp::Ge => Op::Ge,
        RawOp::MaskedEq => Op::MaskedEq(mask),
        RawOp::MaskedNe => Op::MaskedNe(mask),
    };
    Ok(Condition {
        arg: raw.arg,
        width,
        op,
        value: raw.value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small valid policy; tests splice rules into it.
    fn policy_with(allow: &str, deny: &str) -> String {
        format!(
            "version: 1\narch: x86_64\n\
             x32_abi: {{errno: EPERM, reason: x32 numbers}}\n\
             foreign_arch: {{errno: EPERM, reason: i386 entry}}\n\
             allow:\n{allow}deny:\n{deny}"
        )
    }

    #[test]
    fn builtin_policy_parses_and_classifies_every_x86_64_syscall() {
        let policy = SeccompPolicy::builtin().expect("builtin policy parses");
        let mut unclassified = Vec::new();
        for sysno in Sysno::iter() {
            let nr = sysno_number(sysno);
            let allowed = policy.allowed.contains_key(&nr);
            let denied =
                policy.reported.contains_key(&nr) || policy.errno_denials.contains_key(&nr);
            assert!(
                !(allowed && denied),
                "{} is both allowed and denied",
                sysno.name()
            );
            if !allowed && !denied {
                unclassified.push(sysno.name());
            }
        }
        // A new kernel syscall showing up in the `syscalls` table must be reviewed into the file.
        assert_eq!(unclassified, Vec::<&str>::new());
    }

    #[test]
    fn builtin_policy_has_the_promised_rules() {
        let policy = SeccompPolicy::builtin().expect("builtin policy parses");
        let nr = |name: &str| sysno_number(name.parse::<Sysno>().expect("known syscall"));
        for name in [
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "keyctl",
            "add_key",
            "request_key",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "mount",
            "umount2",
            "pivot_root",
            "fsopen",
            "fsconfig",
            "fsmount",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "unshare",
            "setns",
            "kexec_load",
            "kexec_file_load",
            "open_by_handle_at",
            "name_to_handle_at",
            "init_module",
            "finit_module",
            "delete_module",
            "reboot",
            "swapon",
            "swapoff",
            "clock_settime",
            "clock_adjtime",
            "settimeofday",
            "adjtimex",
            "gettimeofday",
            "time",
        ] {
            assert!(
                policy.reported.contains_key(&nr(name)),
                "{name} must be a reported denial"
            );
        }
        assert_eq!(
            policy.silent_denials(),
            vec![("getrandom", libc::ENOSYS), ("clone3", libc::ENOSYS)]
        );
        let clone = policy
            .carve_outs
            .get(&nr("clone"))
            .expect("clone carve-out");
        assert_eq!(
            clone,
            &vec![
                Condition {
                    arg: 0,
                    width: Width::Bits32,
                    op: Op::MaskedNe(0x7e02_0080),
                    value: 0,
                },
                // CLONE_UNTRACED: the child would escape the vDSO-hiding tracer.
                Condition {
                    arg: 0,
                    width: Width::Bits32,
                    op: Op::MaskedNe(0x0080_0000),
                    value: 0,
                }
            ]
        );
        let alternatives = |name: &str| policy.allowed.get(&nr(name)).map(|a| a.alternatives.len());
        assert_eq!(alternatives("clock_gettime"), Some(5));
        assert_eq!(alternatives("clock_nanosleep"), Some(6));
        assert_eq!(alternatives("clock_getres"), Some(0), "unconditional");
        let ioctl = policy
            .carve_outs
            .get(&nr("ioctl"))
            .expect("ioctl carve-outs");
        let commands: Vec<(u8, Width, Op, u64)> = ioctl
            .iter()
            .map(|c| (c.arg, c.width, c.op, c.value))
            .collect();
        assert_eq!(
            commands,
            vec![
                (1, Width::Bits32, Op::Eq, 0x5412),
                (1, Width::Bits32, Op::Eq, 0x541c)
            ]
        );
        assert!(
            policy
                .allowed
                .get(&nr("personality"))
                .is_some_and(|p| p.alternatives.len() == 5)
        );
    }

    #[test]
    fn unknown_syscall_names_the_syscall_and_line() {
        let yaml = policy_with(
            "  - names: [read]\n    reason: io\n  - names: [write, mountt]\n    reason: typo\n",
            "  []\n",
        );
        let err = SeccompPolicy::parse(&yaml).expect_err("unknown syscall");
        match &err {
            PolicyError::UnknownSyscall { line, name } => {
                assert_eq!((*line, name.as_str()), (8, "mountt"));
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "seccomp policy line 8: unknown x86_64 syscall \"mountt\""
        );
    }

    #[test]
    fn syscall_both_allowed_and_denied_is_refused() {
        let yaml = policy_with(
            "  - names: [read, mount]\n    reason: oops\n",
            "  - names: [mount]\n    errno: EPERM\n    reason: mount family\n",
        );
        let err = SeccompPolicy::parse(&yaml).expect_err("overlap");
        match err {
            PolicyError::AllowedAndDenied {
                name,
                allow_line,
                deny_line,
            } => assert_eq!((name.as_str(), allow_line, deny_line), ("mount", 6, 9)),
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn missing_or_blank_reason_is_refused() {
        let yaml = policy_with("  - names: [read]\n", "  []\n");
        match SeccompPolicy::parse(&yaml).expect_err("missing reason") {
            PolicyError::MissingReason { line, section } => {
                assert_eq!((line, section), (6, "allow"))
            }
            other => panic!("unexpected error {other:?}"),
        }
        let yaml = policy_with(
            "  - names: [read]\n    reason: io\n",
            "  - names: [mount]\n    errno: EPERM\n    reason: '   '\n",
        );
        match SeccompPolicy::parse(&yaml).expect_err("blank reason") {
            PolicyError::MissingReason { line, section } => {
                assert_eq!((line, section), (9, "deny"))
            }
            other => panic!("unexpected error {other:?}"),
        }
        let yaml = "version: 1\narch: x86_64\nx32_abi: {errno: EPERM}\n\
                    foreign_arch: {errno: EPERM, reason: r}\nallow: []\ndeny: []\n";
        match SeccompPolicy::parse(yaml).expect_err("abi reason") {
            PolicyError::MissingReason { line, section } => {
                assert_eq!((line, section), (3, "x32_abi"))
            }
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn duplicates_and_mixed_allow_rules_are_refused() {
        let yaml = policy_with(
            "  - names: [read]\n    reason: io\n  - names: [read]\n    reason: again\n",
            "  []\n",
        );
        match SeccompPolicy::parse(&yaml).expect_err("duplicate allow") {
            PolicyError::Duplicate {
                name,
                line,
                first_line,
                ..
            } => assert_eq!((name.as_str(), line, first_line), ("read", 8, 6)),
            other => panic!("unexpected error {other:?}"),
        }
        let yaml = policy_with(
            "  - names: [personality]\n    reason: all\n  - names: [personality]\n    \
             args: [{arg: 0, width: 32, op: eq, value: 0}]\n    reason: some\n",
            "  []\n",
        );
        assert!(matches!(
            SeccompPolicy::parse(&yaml),
            Err(PolicyError::MixedAllow {
                line: 8,
                other_line: 6,
                ..
            })
        ));
        let yaml = policy_with(
            "  - names: [read]\n    reason: io\n",
            "  - names: [mount]\n    errno: EPERM\n    reason: a\n  - names: [mount]\n    errno: ENOSYS\n    reason: b\n",
        );
        assert!(matches!(
            SeccompPolicy::parse(&yaml),
            Err(PolicyError::Duplicate {
                line: 12,
                first_line: 9,
                section: "denied",
                ..
            })
        ));
    }

    #[test]
    fn conditional_denials_are_checked() {
        // `when` needs an unconditional allow of the same syscall.
        let yaml = policy_with(
            "  - names: [read]\n    reason: io\n",
            "  - names: [ioctl]\n    when: {arg: 1, width: 32, op: eq, value: 0x5412}\n    errno: EPERM\n    reason: tiocsti\n",
        );
        assert!(matches!(
            SeccompPolicy::parse(&yaml),
            Err(PolicyError::WhenWithoutAllow { line: 9, .. })
        ));
        // `when` must be answered by the supervisor, i.e. EPERM.
        let yaml = policy_with(
            "  - names: [ioctl]\n    reason: io\n",
            "  - names: [ioctl]\n    when: {arg: 1, width: 32, op: eq, value: 0x5412}\n    errno: ENOSYS\n    reason: tiocsti\n",
        );
        assert!(matches!(
            SeccompPolicy::parse(&yaml),
            Err(PolicyError::ReportedErrno { line: 11, .. })
        ));
        // A narrow masked_eq cannot be negated.
        let yaml = policy_with(
            "  - names: [clone]\n    reason: threads\n",
            "  - names: [clone]\n    when: {arg: 0, width: 32, op: masked_eq, mask: 0x10000000, value: 0x10000000}\n    errno: EPERM\n    reason: userns\n",
        );
        assert!(matches!(
            SeccompPolicy::parse(&yaml),
            Err(PolicyError::Condition { line: 10, .. })
        ));
    }

    #[test]
    fn bad_conditions_name_the_line() {
        for (condition, fragment) in [
            (
                "{arg: 6, width: 32, op: eq, value: 1}",
                "arg 6 is out of range",
            ),
            ("{arg: 0, width: 16, op: eq, value: 1}", "width 16"),
            (
                "{arg: 0, width: 32, op: eq, value: 0x100000000}",
                "does not fit in 32 bits",
            ),
            (
                "{arg: 0, width: 32, op: masked_eq, value: 1}",
                "need a `mask`",
            ),
            (
                "{arg: 0, width: 32, op: eq, value: 1, mask: 1}",
                "only meaningful",
            ),
            (
                "{arg: 0, width: 64, op: masked_eq, mask: 0xf0, value: 1}",
                "bits outside mask",
            ),
            (
                "{arg: 0, width: 64, op: masked_ne, mask: 0xf0, value: 0}",
                "masked_ne cannot be used",
            ),
        ] {
            let yaml = policy_with(
                &format!("  - names: [socket]\n    args:\n      - {condition}\n    reason: r\n"),
                "  []\n",
            );
            let err = SeccompPolicy::parse(&yaml).expect_err(condition);
            let text = err.to_string();
            assert!(
                text.starts_with("seccomp policy line 8: condition: ") && text.contains(fragment),
                "{condition}: {text}"
            );
        }
    }

    #[test]
    fn yaml_errors_arch_and_x32_errno_are_reported_with_lines() {
        let yaml = policy_with("  - names: [read]\n    reasn: io\n", "  []\n");
        match SeccompPolicy::parse(&yaml).expect_err("unknown field") {
            PolicyError::Yaml { line, message, .. } => {
                assert_eq!(line, 7);
                assert!(message.contains("unknown field `reasn`"), "{message}");
            }
            other => panic!("unexpected error {other:?}"),
        }
        let yaml = policy_with("  - names: [read]\n    reason: io\n", "  []\n")
            .replace("arch: x86_64", "arch: aarch64");
        assert_eq!(
            SeccompPolicy::parse(&yaml).expect_err("arch").to_string(),
            "seccomp policy line 2: arch \"aarch64\" is not supported; only x86_64 policies can be compiled"
        );
        let yaml = policy_with("  - names: [read]\n    reason: io\n", "  []\n")
            .replace("x32_abi: {errno: EPERM", "x32_abi: {errno: ENOSYS");
        assert!(matches!(
            SeccompPolicy::parse(&yaml),
            Err(PolicyError::ReportedErrno {
                line: 3,
                what: "x32_abi",
                ..
            })
        ));
        let yaml = policy_with(
            "  - names: [read]\n    reason: io\n",
            "  - names: [mount]\n    errno: EPERMS\n    reason: r\n",
        );
        assert!(matches!(
            SeccompPolicy::parse(&yaml),
            Err(PolicyError::UnknownErrno { line: 10, .. })
        ));
    }

    #[test]
    fn negation_covers_every_operator() {
        let base = Condition {
            arg: 1,
            width: Width::Bits32,
            op: Op::Eq,
            value: 7,
        };
        let negate = |op| Condition { op, ..base }.negated().map(|c| c.op);
        assert_eq!(negate(Op::Eq), Some(Op::Ne));
        assert_eq!(negate(Op::Ne), Some(Op::Eq));
        assert_eq!(negate(Op::Lt), Some(Op::Ge));
        assert_eq!(negate(Op::Ge), Some(Op::Lt));
        assert_eq!(negate(Op::Le), Some(Op::Gt));
        assert_eq!(negate(Op::Gt), Some(Op::Le));
        assert_eq!(negate(Op::MaskedNe(0xff)), Some(Op::MaskedEq(0xff)));
        assert_eq!(negate(Op::MaskedEq(0xffff_ffff)), Some(Op::Ne));
        assert_eq!(negate(Op::MaskedEq(0xff)), None);
    }
}
