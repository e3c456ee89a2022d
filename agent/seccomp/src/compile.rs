//! Compiling a [`SeccompPolicy`] into BPF programs with seccompiler, and installing them.
//!
//! Programs, in install order:
//! 1. one plain ERRNO filter per errno of the silent denials (today: ENOSYS for clone3 and
//!    getrandom). Its arch check is rewritten from KILL_PROCESS to ALLOW so that calls through a
//!    foreign ABI are left to the notifying filter, which reports them.
//! 2. the notifying allowlist filter, installed last with SECCOMP_FILTER_FLAG_NEW_LISTENER. Every
//!    call it does not allow (including every x32 number and every foreign-ABI call) returns
//!    SECCOMP_RET_USER_NOTIF, so the supervisor records it and answers EPERM.
//!
//! Why this works (Documentation/userspace-api/seccomp_filter.rst): with several filters the
//! kernel runs all of them and keeps the action of highest precedence, KILL_PROCESS > KILL_THREAD >
//! TRAP > ERRNO > USER_NOTIF > TRACE > LOG > ALLOW; for equal precedence the most recently installed
//! filter's data wins. ENOSYS therefore beats the notification for clone3/getrandom whatever the
//! order. The ERRNO filters go first because installing a filter is itself a syscall that the
//! filters already installed judge: with the notifying filter in place, the seccomp() call for a
//! later filter would wait for a supervisor that does not exist yet. Only one filter in a process
//! may carry a listener (the kernel answers EBUSY to a second NEW_LISTENER).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

use crate::policy::{Condition, Op, PolicyError, SeccompPolicy, Width};

/// AUDIT_ARCH_X86_64 (linux/audit.h): EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
pub(crate) const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// AUDIT_ARCH_I386: what `int 0x80` from a 64-bit process reports.
pub(crate) const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// __X32_SYSCALL_BIT: x32 syscall numbers are x86_64-like numbers with this bit set.
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// seccompiler (0.5) has no SECCOMP_RET_USER_NOTIF action. The allowlist filter is therefore
/// compiled with `Errno(NOTIFY_SENTINEL_ERRNO)` as its mismatch action, and exactly the RET
/// instructions carrying that value are rewritten to SECCOMP_RET_USER_NOTIF before anything sees
/// the program. 0xffff is not an errno (errnos end at 4095) and the allowlist filter has no other
/// ERRNO action, so the sentinel cannot be confused with a real answer.
pub(crate) const NOTIFY_SENTINEL_ERRNO: u32 = 0xffff;

// Classic BPF opcodes (linux/bpf_common.h) that the rewrites inspect.
pub(crate) const BPF_LD_W_ABS: u16 = 0x20;
pub(crate) const BPF_JMP_JEQ_K: u16 = 0x15;
pub(crate) const BPF_RET_K: u16 = 0x06;
/// Offset of `arch` in `struct seccomp_data`.
const SECCOMP_DATA_ARCH_OFFSET: u32 = 4;
/// seccompiler emits the arch check as these first three instructions; the third is the
/// mismatch action (KILL_PROCESS) that the rewrites replace.
const ARCH_CHECK_LEN: usize = 3;
/// Index of the arch check's RET instruction.
pub(crate) const ARCH_CHECK_RET_INDEX: usize = 2;

/// The kernel limit on a classic BPF program (BPF_MAXINSNS).
pub(crate) const BPF_INSTRUCTIONS_MAX: usize = 4096;

/// One BPF program and whether it is the filter that carries the user-notification listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Program {
    pub(crate) instructions: Vec<sock_filter>,
    pub(crate) notifies: bool,
}

/// The BPF programs of a policy, in install order; the last one carries the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledSeccomp {
    pub(crate) programs: Vec<Program>,
}

/// Why installing the filters failed. Filters installed before the failure stay installed (the
/// kernel offers no way to remove one), so a caller must treat any error as fatal for the thread.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("setting no_new_privs failed: {0}")]
    NoNewPrivs(#[source] io::Error),
    #[error(
        "installing seccomp filter {index} of {count} ({instructions} instructions) failed: {source}"
    )]
    Filter {
        index: usize,
        count: usize,
        instructions: usize,
        #[source]
        source: io::Error,
    },
    #[error(
        "seccomp filter {index} has {instructions} instructions, more than the kernel's {BPF_INSTRUCTIONS_MAX}"
    )]
    TooLong { index: usize, instructions: usize },
    #[error("the compiled policy has no filter that carries the user-notification listener")]
    NoListenerFilter,
}

impl SeccompPolicy {
    /// Compiles the policy into BPF programs for x86_64. Refuses on any other build target.
    pub fn compile(&self) -> Result<CompiledSeccomp, PolicyError> {
        if !cfg!(target_arch = "x86_64") {
            return Err(PolicyError::UnsupportedHost {
                host: std::env::consts::ARCH,
            });
        }
        let mut programs = self.errno_programs()?;
        let mut allowlist = self.allowlist_bpf()?;
        route_refusals_to_supervisor(&mut allowlist)?;
        programs.push(Program {
            instructions: allowlist,
            notifies: true,
        });
        assert_eq!(
            programs.iter().filter(|p| p.notifies).count(),
            1,
            "exactly one filter may carry the listener"
        );
        assert!(
            programs.last().is_some_and(|p| p.notifies),
            "the notifying filter must be installed last"
        );
        Ok(CompiledSeccomp { programs })
    }

    /// One ERRNO filter per distinct errno of the silent denials, arch check deferring to the
    /// notifying filter.
    fn errno_programs(&self) -> Result<Vec<Program>, PolicyError> {
        let mut by_errno: BTreeMap<u16, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
        for (&nr, &(_sysno, errno)) in &self.errno_denials {
            by_errno
                .entry(errno)
                .or_default()
                .insert(i64::from(nr), Vec::new());
        }
        let mut programs = Vec::with_capacity(by_errno.len());
        for (errno, rules) in by_errno {
            let filter = SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(u32::from(errno)),
                TargetArch::x86_64,
            )
            .map_err(|err| backend_error("errno", &err))?;
            let mut instructions: BpfProgram = filter
                .try_into()
                .map_err(|err| backend_error("errno", &err))?;
            replace_arch_mismatch_action(&mut instructions, libc::SECCOMP_RET_ALLOW)?;
            programs.push(Program {
                instructions,
                notifies: false,
            });
        }
        Ok(programs)
    }

    /// The allowlist filter exactly as seccompiler emits it: ALLOW on match, the sentinel ERRNO
    /// otherwise, KILL_PROCESS for a foreign arch. [`route_refusals_to_supervisor`] finishes it.
    pub(crate) fn allowlist_bpf(&self) -> Result<BpfProgram, PolicyError> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for (&nr, allowed) in &self.allowed {
            let carve_outs = self.carve_outs.get(&nr).map_or(&[][..], Vec::as_slice);
            let alternatives: Vec<Vec<Condition>> = if carve_outs.is_empty() {
                allowed.alternatives.clone()
            } else {
                // Parsing guarantees carve-outs only refine an unconditional allow: the call is
                // allowed when no `deny ... when` condition holds.
                assert!(
                    allowed.alternatives.is_empty(),
                    "carve-out on a conditional allow"
                );
                let negations = carve_outs
                    .iter()
                    .map(|c| {
                        c.negated().ok_or_else(|| PolicyError::Backend {
                            program: "allowlist",
                            message: format!(
                                "condition on {} cannot be negated",
                                allowed.sysno.name()
                            ),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                vec![negations]
            };
            let mut chain = Vec::with_capacity(alternatives.len());
            for conditions in alternatives {
                let conditions = conditions
                    .iter()
                    .map(|c| seccompiler_condition(c, allowed.sysno.name()))
                    .collect::<Result<Vec<_>, _>>()?;
                chain.push(
                    SeccompRule::new(conditions).map_err(|err| backend_error("allowlist", &err))?,
                );
            }
            rules.insert(i64::from(nr), chain);
        }
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Errno(NOTIFY_SENTINEL_ERRNO),
            SeccompAction::Allow,
            TargetArch::x86_64,
        )
        .map_err(|err| backend_error("allowlist", &err))?;
        filter
            .try_into()
            .map_err(|err| backend_error("allowlist", &err))
    }
}

fn backend_error(program: &'static str, err: &seccompiler::BackendError) -> PolicyError {
    PolicyError::Backend {
        program,
        message: err.to_string(),
    }
}

fn seccompiler_condition(
    condition: &Condition,
    syscall: &str,
) -> Result<SeccompCondition, PolicyError> {
    let width = match condition.width {
        // seccompiler's Dword loads only the low half of the argument slot: exactly the masked
        // comparison (arg & 0xffffffff) that `int` parameters need.
        Width::Bits32 => SeccompCmpArgLen::Dword,
        Width::Bits64 => SeccompCmpArgLen::Qword,
    };
    let op = match condition.op {
        Op::Eq => SeccompCmpOp::Eq,
        Op::Ne => SeccompCmpOp::Ne,
        Op::Lt => SeccompCmpOp::Lt,
        Op::Le => SeccompCmpOp::Le,
        Op::Gt => SeccompCmpOp::Gt,
        Op::Ge => SeccompCmpOp::Ge,
        Op::MaskedEq(mask) => SeccompCmpOp::MaskedEq(mask),
        Op::MaskedNe(_) => {
            return Err(PolicyError::Backend {
                program: "allowlist",
                message: format!("masked_ne on {syscall} has no BPF form"),
            });
        }
    };
    SeccompCondition::new(condition.arg, width, op, condition.value)
        .map_err(|err| backend_error("allowlist", &err))
}

/// Rewrites the allowlist program so that every refusal goes to the supervisor: each
/// `RET ERRNO|sentinel` becomes `RET USER_NOTIF`, and so does the arch check's KILL_PROCESS.
/// Returns how many sentinel RETs were rewritten. Nothing else is touched (see the tests).
pub(crate) fn route_refusals_to_supervisor(
    program: &mut [sock_filter],
) -> Result<usize, PolicyError> {
    replace_arch_mismatch_action(program, libc::SECCOMP_RET_USER_NOTIF)?;
    let sentinel = libc::SECCOMP_RET_ERRNO | NOTIFY_SENTINEL_ERRNO;
    let mut rewritten = 0;
    for instruction in program.iter_mut() {
        if instruction.code == BPF_RET_K && instruction.k == sentinel {
            instruction.k = libc::SECCOMP_RET_USER_NOTIF;
            rewritten += 1;
        }
    }
    if rewritten == 0 {
        return Err(PolicyError::Backend {
            program: "allowlist",
            message: "no refusal (sentinel RET) found to route to the supervisor".to_string(),
        });
    }
    Ok(rewritten)
}

/// Replaces the action seccompiler returns for a foreign architecture (KILL_PROCESS) after
/// checking that the program starts with exactly the arch check it is documented to emit.
fn replace_arch_mismatch_action(
    program: &mut [sock_filter],
    action: u32,
) -> Result<(), PolicyError> {
    let expected = [
        (BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH_OFFSET),
        (BPF_JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (BPF_RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
    ];
    let matches = program.len() > ARCH_CHECK_LEN
        && program
            .iter()
            .zip(expected)
            .all(|(i, (code, jt, jf, k))| (i.code, i.jt, i.jf, i.k) == (code, jt, jf, k));
    match program.get_mut(ARCH_CHECK_RET_INDEX) {
        Some(ret) if matches => {
            ret.k = action;
            Ok(())
        }
        _ => Err(PolicyError::Backend {
            program: "arch check",
            message:
                "seccompiler's arch check is not the expected LD arch; JEQ x86_64; RET KILL_PROCESS"
                    .to_string(),
        }),
    }
}

impl CompiledSeccomp {
    /// BLAKE3 over the programs in install order: for each, its instruction count as u32
    /// little-endian, then its instructions exactly as handed to the kernel (struct sock_filter:
    /// code u16 LE, jt, jf, k u32 LE). The counts keep the program boundaries unambiguous.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        for program in &self.programs {
            let count = u32::try_from(program.instructions.len()).unwrap_or(u32::MAX);
            hasher.update(&count.to_le_bytes());
            for instruction in &program.instructions {
                hasher.update(&instruction.code.to_le_bytes());
                hasher.update(&[instruction.jt, instruction.jf]);
                hasher.update(&instruction.k.to_le_bytes());
            }
        }
        *hasher.finalize().as_bytes()
    }

    /// Number of BPF programs installed (the notifying one is last).
    pub fn programs_count(&self) -> usize {
        self.programs.len()
    }

    /// Installs every filter on the calling thread: sets no_new_privs, then the ERRNO filters,
    /// then the notifying filter with SECCOMP_FILTER_FLAG_NEW_LISTENER. Returns the listener.
    ///
    /// From the moment this returns, every refused call of this thread (and of the children it
    /// forks or threads it starts) blocks until someone answers it through the listener, so the
    /// caller must hand the listener to a supervisor (another process, e.g. over SCM_RIGHTS) and
    /// close its own copy before running untrusted code: a confined process that keeps its
    /// listener could answer its own notifications. (The kernel creates it O_CLOEXEC, so an
    /// execve closes it anyway.)
    pub fn install(&self) -> Result<OwnedFd, InstallError> {
        // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) takes only integers and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1_u64, 0_u64, 0_u64, 0_u64) };
        if rc != 0 {
            return Err(InstallError::NoNewPrivs(io::Error::last_os_error()));
        }
        let count = self.programs.len();
        let mut listener = None;
        for (index, program) in self.programs.iter().enumerate() {
            let filter: Vec<libc::sock_filter> = program
                .instructions
                .iter()
                .map(|i| libc::sock_filter {
                    code: i.code,
                    jt: i.jt,
                    jf: i.jf,
                    k: i.k,
                })
                .collect();
            let len = u16::try_from(filter.len())
                .ok()
                .filter(|&len| usize::from(len) <= BPF_INSTRUCTIONS_MAX)
                .ok_or(InstallError::TooLong {
                    index,
                    instructions: filter.len(),
                })?;
            let fprog = libc::sock_fprog {
                len,
                filter: filter.as_ptr().cast_mut(),
            };
            let result = if program.notifies {
                // WAIT_KILLABLE_RECV (5.19+): once the supervisor has received a notification,
                // only a fatal signal interrupts the wait, so a restarted syscall is not reported
                // twice. Older kernels refuse the flag with EINVAL; the listener works without it.
                set_filter(
                    libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
                        | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
                    &fprog,
                )
                .or_else(|err| {
                    if err.raw_os_error() == Some(libc::EINVAL) {
                        set_filter(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog)
                    } else {
                        Err(err)
                    }
                })
            } else {
                set_filter(0, &fprog)
            };
            let fd = result.map_err(|source| InstallError::Filter {
                index,
                count,
                instructions: filter.len(),
                source,
            })?;
            if program.notifies {
                let raw = RawFd::try_from(fd).map_err(|_| InstallError::Filter {
                    index,
                    count,
                    instructions: filter.len(),
                    source: io::Error::other(format!("listener fd {fd} out of range")),
                })?;
                // SAFETY: with NEW_LISTENER, a successful seccomp() returns a new file descriptor
                // that nothing else owns; wrapping it transfers that ownership exactly once.
                listener = Some(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        listener.ok_or(InstallError::NoListenerFilter)
    }
}

/// seccomp(SECCOMP_SET_MODE_FILTER, flags, fprog); returns the syscall's non-negative result.
fn set_filter(flags: libc::c_ulong, fprog: &libc::sock_fprog) -> io::Result<libc::c_long> {
    // SAFETY: `fprog` points at a live sock_fprog whose `filter` points at `len` initialised
    // sock_filter values (the caller's Vec outlives this call); the kernel only copies them in.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            std::ptr::from_ref(fprog),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf_eval::{SeccompData, evaluate};
    use syscalls::x86_64::Sysno;

    const USER_NOTIF: u32 = libc::SECCOMP_RET_USER_NOTIF;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    fn builtin() -> (SeccompPolicy, CompiledSeccomp) {
        let policy = SeccompPolicy::builtin().expect("builtin policy parses");
        let compiled = policy.compile().expect("builtin policy compiles");
        (policy, compiled)
    }

    fn call(name: &str, args: [u64; 6]) -> SeccompData {
        let sysno: Sysno = name.parse().expect("known syscall");
        SeccompData {
            nr: sysno.id(),
            arch: AUDIT_ARCH_X86_64,
            args,
        }
    }

    #[test]
    fn rewrite_touches_exactly_the_sentinel_rets_and_the_arch_check() {
        let (policy, compiled) = builtin();
        let raw = policy.allowlist_bpf().expect("allowlist compiles");
        let rewritten = &compiled
            .programs
            .last()
            .expect("notifying program")
            .instructions;
        assert_eq!(raw.len(), rewritten.len());

        let sentinel = libc::SECCOMP_RET_ERRNO | NOTIFY_SENTINEL_ERRNO;
        let sentinel_indices: Vec<usize> = raw
            .iter()
            .enumerate()
            .filter(|(_, i)| i.code == BPF_RET_K && i.k == sentinel)
            .map(|(index, _)| index)
            .collect();
        // seccompiler emits one mismatch RET per syscall chain plus the final default.
        assert_eq!(sentinel_indices.len(), policy.allowed.len() + 1);

        let changed: Vec<usize> = raw
            .iter()
            .zip(rewritten)
            .enumerate()
            .filter(|(_, (before, after))| before != after)
            .map(|(index, _)| index)
            .collect();
        let mut expected = vec![ARCH_CHECK_RET_INDEX];
        expected.extend(&sentinel_indices);
        assert_eq!(changed, expected);
        for &index in &changed {
            let (before, after) = (&raw[index], &rewritten[index]);
            assert_eq!(
                (after.code, after.jt, after.jf),
                (before.code, before.jt, before.jf)
            );
            assert_eq!(after.k, USER_NOTIF);
        }
        assert_eq!(raw[ARCH_CHECK_RET_INDEX].k, libc::SECCOMP_RET_KILL_PROCESS);
        assert!(
            !rewritten
                .iter()
                .any(|i| i.code == BPF_RET_K && i.k == sentinel)
        );
    }

    #[test]
    fn programs_are_ordered_errno_first_listener_last() {
        let (_, compiled) = builtin();
        assert_eq!(compiled.programs_count(), 2);
        let flags: Vec<bool> = compiled.programs.iter().map(|p| p.notifies).collect();
        assert_eq!(flags, vec![false, true]);
        // The ENOSYS filter defers foreign ABIs to the notifying filter instead of killing.
        let errno = &compiled.programs[0].instructions;
        assert_eq!(errno[ARCH_CHECK_RET_INDEX].k, ALLOW);
        assert!(
            compiled
                .programs
                .iter()
                .all(|p| p.instructions.len() < BPF_INSTRUCTIONS_MAX)
        );
    }

    #[test]
    fn digest_is_blake3_of_framed_programs_and_tracks_the_policy() {
        let (_, compiled) = builtin();
        let mut bytes = Vec::new();
        for program in &compiled.programs {
            bytes.extend((program.instructions.len() as u32).to_le_bytes());
            for i in &program.instructions {
                bytes.extend(i.code.to_le_bytes());
                bytes.push(i.jt);
                bytes.push(i.jf);
                bytes.extend(i.k.to_le_bytes());
            }
        }
        assert_eq!(compiled.digest(), *blake3::hash(&bytes).as_bytes());
        assert_eq!(compiled.digest(), builtin().1.digest());

        let yaml =
            include_str!("../policy/seccomp.yaml").replace("[uretprobe, uprobe]", "[uretprobe]");
        let smaller = SeccompPolicy::parse(&yaml).expect("edited policy parses");
        assert_ne!(
            smaller.compile().expect("compiles").digest(),
            compiled.digest()
        );
    }

    #[test]
    fn every_allowed_syscall_is_allowed_and_every_reported_denial_notifies() {
        let (policy, compiled) = builtin();
        for allowed in policy.allowed.values() {
            let mut data = call(allowed.sysno.name(), [0; 6]);
            match allowed.sysno.name() {
                "personality" => data.args[0] = 0xffff_ffff,
                // Clock 0 is CLOCK_REALTIME, which goes to the supervisor; 1 is MONOTONIC.
                "clock_gettime" => data.args[0] = 1,
                _ => {}
            }
            assert_eq!(
                evaluate(&compiled, &data),
                ALLOW,
                "{}",
                allowed.sysno.name()
            );
        }
        for sysno in policy.reported.values() {
            assert_eq!(
                evaluate(&compiled, &call(sysno.name(), [0; 6])),
                USER_NOTIF,
                "{}",
                sysno.name()
            );
        }
        for (sysno, errno) in policy.errno_denials.values() {
            assert_eq!(
                evaluate(&compiled, &call(sysno.name(), [0; 6])),
                libc::SECCOMP_RET_ERRNO | u32::from(*errno),
                "{}",
                sysno.name()
            );
        }
        // A number no table knows yet takes the default (reported) path.
        let unknown = SeccompData {
            nr: 1000,
            arch: AUDIT_ARCH_X86_64,
            args: [0; 6],
        };
        assert_eq!(evaluate(&compiled, &unknown), USER_NOTIF);
    }

    #[test]
    fn clone3_and_getrandom_get_enosys_not_a_notification() {
        let (_, compiled) = builtin();
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        assert_eq!(evaluate(&compiled, &call("clone3", [0; 6])), enosys);
        assert_eq!(evaluate(&compiled, &call("getrandom", [0; 6])), enosys);
    }

    #[test]
    fn clone_is_allowed_only_without_namespace_flags() {
        let (_, compiled) = builtin();
        let thread_flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(
            evaluate(&compiled, &call("clone", [thread_flags, 0, 0, 0, 0, 0])),
            ALLOW
        );
        assert_eq!(
            evaluate(
                &compiled,
                &call("clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0])
            ),
            ALLOW
        );
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            0x80, // CLONE_NEWTIME
        ] {
            let flags = flag as u32 as u64 | libc::SIGCHLD as u64;
            assert_eq!(
                evaluate(&compiled, &call("clone", [flags, 0, 0, 0, 0, 0])),
                USER_NOTIF,
                "flag {flag:#x}"
            );
        }
    }

    #[test]
    fn terminal_injection_ioctls_are_refused_whatever_the_high_bits() {
        let (_, compiled) = builtin();
        for command in [0x5412_u64, 0x541c] {
            for high in [0_u64, 0xdead_beef, 0xffff_ffff, 1] {
                let arg = high << 32 | command;
                assert_eq!(
                    evaluate(&compiled, &call("ioctl", [0, arg, 0, 0, 0, 0])),
                    USER_NOTIF,
                    "ioctl {arg:#x}"
                );
            }
        }
        // FIONREAD, with or without garbage above it, stays allowed.
        assert_eq!(
            evaluate(&compiled, &call("ioctl", [3, 0x541b, 0, 0, 0, 0])),
            ALLOW
        );
        assert_eq!(
            evaluate(&compiled, &call("ioctl", [3, 0x1234_0000_541b, 0, 0, 0, 0])),
            ALLOW
        );
    }

    #[test]
    fn other_carve_outs_and_personalities() {
        let (_, compiled) = builtin();
        assert_eq!(
            evaluate(
                &compiled,
                &call("socket", [libc::AF_VSOCK as u64, 1, 0, 0, 0, 0])
            ),
            USER_NOTIF
        );
        assert_eq!(
            evaluate(
                &compiled,
                &call("socket", [libc::AF_INET as u64, 1, 0, 0, 0, 0])
            ),
            ALLOW
        );
        assert_eq!(
            evaluate(
                &compiled,
                &call("prctl", [libc::PR_SET_TSC as u64, 1, 0, 0, 0, 0])
            ),
            USER_NOTIF
        );
        assert_eq!(
            evaluate(
                &compiled,
                &call("prctl", [libc::PR_SET_NAME as u64, 0, 0, 0, 0, 0])
            ),
            ALLOW
        );
        for persona in [0_u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
            assert_eq!(
                evaluate(&compiled, &call("personality", [persona, 0, 0, 0, 0, 0])),
                ALLOW
            );
        }
        assert_eq!(
            evaluate(
                &compiled,
                &call(
                    "personality",
                    [libc::ADDR_NO_RANDOMIZE as u64, 0, 0, 0, 0, 0]
                )
            ),
            USER_NOTIF
        );
    }

    /// MAKE_PROCESS_CPUCLOCK / MAKE_THREAD_CPUCLOCK (include/linux/posix-timers.h) as the 32-bit
    /// int the kernel reads, sign-extended into the 64-bit register as libc passes it.
    fn cpu_clock(pid: u32, kind: u32, per_thread: bool) -> u64 {
        let id = (!pid << 3) | kind | if per_thread { 4 } else { 0 };
        id as i32 as i64 as u64
    }

    #[test]
    fn clock_gettime_is_native_only_for_clocks_the_time_namespace_or_the_cage_owns() {
        let (_, compiled) = builtin();
        let clock = |id: u64| evaluate(&compiled, &call("clock_gettime", [id, 0, 0, 0, 0, 0]));
        // MONOTONIC, PROCESS/THREAD_CPUTIME_ID, MONOTONIC_RAW, MONOTONIC_COARSE, BOOTTIME.
        for id in [1, 2, 3, 4, 6, 7] {
            assert_eq!(clock(id), ALLOW, "clock {id}");
        }
        // CPU clocks of processes and threads: PROF, VIRT, SCHED, for pid 0 (self) and others.
        for pid in [0, 1, 4_194_304] {
            for kind in [0, 1, 2] {
                for per_thread in [false, true] {
                    let id = cpu_clock(pid, kind, per_thread);
                    assert_eq!(clock(id), ALLOW, "cpu clock {id:#x}");
                }
            }
        }
        // REALTIME, REALTIME_COARSE, REALTIME_ALARM, BOOTTIME_ALARM, SGI_CYCLE, TAI, unknown,
        // and CLOCKFD (a PTP clock behind fd 3) go to the supervisor.
        for id in [0, 5, 8, 9, 10, 11, 12, 0x7fff_ffff, cpu_clock(3, 3, false)] {
            assert_eq!(clock(id), USER_NOTIF, "clock {id:#x}");
        }
        assert_eq!(clock(cpu_clock(3, 3, true)), USER_NOTIF, "invalid id 7");
        // Only the low 32 bits count, as in the kernel: garbage above them changes nothing.
        assert_eq!(clock(0xdead_beef_0000_0001), ALLOW);
        assert_eq!(clock(0xdead_beef_0000_0000), USER_NOTIF);
        assert_eq!(
            clock(0x0000_0001_0000_0000),
            USER_NOTIF,
            "REALTIME with high garbage"
        );
    }

    #[test]
    fn wall_clock_reads_and_absolute_realtime_sleeps_reach_the_supervisor() {
        let (_, compiled) = builtin();
        for name in [
            "gettimeofday",
            "time",
            "clock_settime",
            "settimeofday",
            "adjtimex",
        ] {
            assert_eq!(
                evaluate(&compiled, &call(name, [0; 6])),
                USER_NOTIF,
                "{name}"
            );
        }
        assert_eq!(evaluate(&compiled, &call("clock_getres", [0; 6])), ALLOW);
        let sleep = |clock: u64, flags: u64| {
            evaluate(
                &compiled,
                &call("clock_nanosleep", [clock, flags, 0, 0, 0, 0]),
            )
        };
        const TIMER_ABSTIME: u64 = 1;
        // Relative sleeps on any clock are only delays.
        for clock in [0, 1, 5, 7, 11] {
            assert_eq!(sleep(clock, 0), ALLOW, "relative on {clock}");
            assert_eq!(sleep(clock, 0xffff_ffff_0000_0000), ALLOW, "high garbage");
        }
        // Absolute deadlines: by the namespaced or CPU clocks only.
        for clock in [1, 2, 7, cpu_clock(0, 2, false)] {
            assert_eq!(sleep(clock, TIMER_ABSTIME), ALLOW, "absolute on {clock:#x}");
        }
        for clock in [0, 5, 8, 9, 11, cpu_clock(3, 3, false)] {
            assert_eq!(
                sleep(clock, TIMER_ABSTIME),
                USER_NOTIF,
                "absolute on {clock:#x}"
            );
        }
        assert_eq!(evaluate(&compiled, &call("nanosleep", [0; 6])), ALLOW);
    }

    #[test]
    fn clone_untraced_is_refused() {
        let (_, compiled) = builtin();
        const CLONE_UNTRACED: u64 = 0x0080_0000;
        let fork = libc::SIGCHLD as u64;
        assert_eq!(
            evaluate(
                &compiled,
                &call("clone", [fork | CLONE_UNTRACED, 0, 0, 0, 0, 0])
            ),
            USER_NOTIF
        );
        assert_eq!(
            evaluate(&compiled, &call("clone", [fork, 0, 0, 0, 0, 0])),
            ALLOW
        );
    }

    #[test]
    fn x32_and_foreign_abi_calls_all_notify() {
        let (_, compiled) = builtin();
        for sysno in Sysno::iter() {
            let data = SeccompData {
                nr: sysno.id() | X32_SYSCALL_BIT as i32,
                arch: AUDIT_ARCH_X86_64,
                args: [0; 6],
            };
            assert_eq!(
                evaluate(&compiled, &data),
                USER_NOTIF,
                "x32 {}",
                sysno.name()
            );
            let data = SeccompData {
                nr: sysno.id(),
                arch: AUDIT_ARCH_I386,
                args: [0; 6],
            };
            assert_eq!(
                evaluate(&compiled, &data),
                USER_NOTIF,
                "i386 {}",
                sysno.name()
            );
        }
    }
}
