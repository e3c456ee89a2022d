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

use std::borrow::Cow;
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

// Classic BPF opcodes (linux/bpf_common.h) that the rewrites inspect: everything seccompiler
// emits.
pub(crate) const BPF_LD_W_ABS: u16 = 0x20;
pub(crate) const BPF_ALU_AND_K: u16 = 0x54;
pub(crate) const BPF_JMP_JA: u16 = 0x05;
pub(crate) const BPF_JMP_JEQ_K: u16 = 0x15;
pub(crate) const BPF_JMP_JGT_K: u16 = 0x25;
pub(crate) const BPF_JMP_JGE_K: u16 = 0x35;
pub(crate) const BPF_RET_K: u16 = 0x06;
/// The farthest a conditional jump reaches (jt and jf are u8).
const BPF_COND_JUMP_MAX: usize = u8::MAX as usize;
/// Syscall tests per leaf of the dispatcher [`dispatch_by_number`] puts in front of the chain.
const DISPATCH_SEGMENT_LEN: usize = 16;
/// Below this many syscall tests a linear chain is already short; no dispatcher.
const DISPATCH_CHAIN_LEN_MIN: usize = 2 * DISPATCH_SEGMENT_LEN;
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
/// Borrowed for the builtin policy (compiled by build.rs into a static), owned otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Program {
    pub(crate) instructions: Cow<'static, [sock_filter]>,
    pub(crate) notifies: bool,
}

/// The BPF programs of a policy, in install order; the last one carries the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledSeccomp {
    pub(crate) programs: Cow<'static, [Program]>,
    /// [`CompiledSeccomp::digest`], computed once when the programs are built.
    pub(crate) digest: [u8; 32],
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
            instructions: Cow::Owned(dispatch_by_number(&thread_jumps(&allowlist)?)),
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
        let digest = programs_digest(&programs);
        Ok(CompiledSeccomp {
            programs: Cow::Owned(programs),
            digest,
        })
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
                instructions: Cow::Owned(thread_jumps(&instructions)?),
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

/// Jump threading, return sharing and dead-code removal on a seccompiler program, without
/// changing what it returns for any input.
///
/// Why: seccompiler emits five instructions per unconditionally allowed syscall (`JEQ nr` into two
/// `JA` trampolines, `RET ALLOW`, and an unreachable mismatch `RET`), 1585 for the builtin
/// allowlist. Installing a filter converts and JITs every instruction and, for seccomp's action
/// cache, emulates the filter for every syscall number; with that layout the install took
/// ~0.86 ms of every spawn on the bench machine. Pointing each conditional jump straight at the
/// end of its `JA` chain, sharing identical returns and dropping what no path reaches leaves
/// about one instruction per such syscall (372 in all; [`dispatch_by_number`] then shortens the
/// paths).
///
/// What changes: a conditional jump whose target is a `JA` is pointed at the chain's final
/// target when that is within a conditional jump's reach (distance measured in the input, which
/// only shrinks when instructions are removed); a `JA` to a `JA` is pointed at the final target;
/// a conditional jump to a `RET k` is pointed at the farthest `RET k` within reach; then the
/// instructions no path from the first one reaches are removed and the offsets recomputed. Loads,
/// ALU operations and returns are copied unchanged and stay in order, a `JA` only moves the
/// program counter and equal `RET`s return the same value, so every input takes the same loads
/// and tests and gets the same answer.
/// Refuses (Backend error) any opcode seccompiler does not emit, and any jump out of the program.
pub(crate) fn thread_jumps(program: &[sock_filter]) -> Result<Vec<sock_filter>, PolicyError> {
    let count = program.len();
    let bad = |at: usize, what: &str| PolicyError::Backend {
        program: "jump threading",
        message: format!("instruction {at}: {what}"),
    };
    // Successor edges (true, false) as absolute indices; a RET points at itself (never followed).
    let mut targets: Vec<(usize, usize)> = Vec::with_capacity(count);
    for (at, insn) in program.iter().enumerate() {
        let edge = match insn.code {
            BPF_JMP_JEQ_K | BPF_JMP_JGT_K | BPF_JMP_JGE_K => {
                (at + 1 + usize::from(insn.jt), at + 1 + usize::from(insn.jf))
            }
            BPF_JMP_JA => {
                let to = at + 1 + insn.k as usize;
                (to, to)
            }
            BPF_LD_W_ABS | BPF_ALU_AND_K => (at + 1, at + 1),
            BPF_RET_K => (at, at),
            other => return Err(bad(at, &format!("opcode {other:#06x} is not handled"))),
        };
        if edge.0 >= count || edge.1 >= count {
            return Err(bad(at, "jumps or falls past the end of the program"));
        }
        targets.push(edge);
    }
    // The end of a JA chain. JA offsets are unsigned, so chains only move forward and end.
    let original = targets.clone();
    let resolve = |mut at: usize| {
        while program[at].code == BPF_JMP_JA {
            at = original[at].0;
        }
        at
    };
    for (at, insn) in program.iter().enumerate() {
        match insn.code {
            BPF_JMP_JEQ_K | BPF_JMP_JGT_K | BPF_JMP_JGE_K => {
                let thread = |to: usize| {
                    let end = resolve(to);
                    if end - at - 1 <= BPF_COND_JUMP_MAX {
                        end
                    } else {
                        to
                    }
                };
                targets[at] = (thread(targets[at].0), thread(targets[at].1));
            }
            BPF_JMP_JA => {
                let end = resolve(targets[at].0);
                targets[at] = (end, end);
            }
            _ => {}
        }
    }
    // Identical returns are interchangeable: point the conditional jumps that end at a `RET k`
    // at as few copies of it as reach allows, so the other copies (one `RET ALLOW` per allowed
    // syscall) become unreachable. Greedy interval stabbing: in program order, keep using the
    // current copy of `RET k` while it lies between the jump's own target and its reach, else
    // take the farthest copy within reach. Positions are the input's, as above.
    let mut rets_by_k: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (at, insn) in program.iter().enumerate() {
        if insn.code == BPF_RET_K {
            rets_by_k.entry(insn.k).or_default().push(at);
        }
    }
    let mut anchors: BTreeMap<u32, usize> = BTreeMap::new();
    for (at, insn) in program.iter().enumerate() {
        if !matches!(insn.code, BPF_JMP_JEQ_K | BPF_JMP_JGT_K | BPF_JMP_JGE_K) {
            continue;
        }
        let reach = at + 1 + BPF_COND_JUMP_MAX;
        let mut share = |to: usize| {
            if program[to].code != BPF_RET_K {
                return to;
            }
            let k = program[to].k;
            if let Some(&anchor) = anchors.get(&k)
                && (to..=reach).contains(&anchor)
            {
                return anchor;
            }
            let farthest = rets_by_k.get(&k).and_then(|positions| {
                let within = positions.partition_point(|&q| q <= reach);
                positions.get(within.checked_sub(1)?).copied()
            });
            match farthest {
                Some(anchor) if anchor >= to => {
                    anchors.insert(k, anchor);
                    anchor
                }
                _ => to,
            }
        };
        let (jt, jf) = targets[at];
        targets[at] = (share(jt), share(jf));
    }
    let mut reachable = vec![false; count];
    let mut stack = vec![0_usize];
    while let Some(at) = stack.pop() {
        if count == 0 || reachable[at] {
            continue;
        }
        reachable[at] = true;
        if program[at].code != BPF_RET_K {
            stack.extend([targets[at].0, targets[at].1]);
        }
    }
    let mut new_index = vec![usize::MAX; count];
    let mut next = 0;
    for at in 0..count {
        if reachable[at] {
            new_index[at] = next;
            next += 1;
        }
    }
    let offset = |from: usize, to: usize| new_index[to] - new_index[from] - 1;
    let mut out = Vec::with_capacity(next);
    for (at, insn) in program.iter().enumerate().filter(|(at, _)| reachable[*at]) {
        let mut insn = insn.clone();
        match insn.code {
            BPF_JMP_JEQ_K | BPF_JMP_JGT_K | BPF_JMP_JGE_K => {
                let (jt, jf) = (offset(at, targets[at].0), offset(at, targets[at].1));
                insn.jt = u8::try_from(jt).map_err(|_| bad(at, "jt out of reach"))?;
                insn.jf = u8::try_from(jf).map_err(|_| bad(at, "jf out of reach"))?;
            }
            BPF_JMP_JA => {
                insn.k = u32::try_from(offset(at, targets[at].0))
                    .map_err(|_| bad(at, "JA out of reach"))?;
            }
            _ => {}
        }
        out.push(insn);
    }
    Ok(out)
}

/// Puts a binary search on the syscall number in front of seccompiler's linear chain of
/// `JEQ nr` tests, so that a call reaches its own test after ~log2(chain / 16) + 16 comparisons
/// instead of walking every test before it.
///
/// Why: when a filter is installed, the kernel emulates it for every syscall number of every
/// architecture to find the calls it can allow without running it (seccomp's action cache); it
/// does so under the sighand lock, and with the 300-test chain that emulation was most of the
/// ~0.4 ms a (jump-threaded) install took on the bench machine. The filter also runs faster.
///
/// The shape it looks for: `LD nr` followed by a chain of `JEQ k` tests, each false edge going
/// straight to the next test, with strictly ascending `k` (seccompiler emits its rules sorted by
/// number). A test whose `k` is below the segment a number falls in can never be true for that
/// number, and nothing runs between two tests of the chain, so jumping to the first test of the
/// number's segment gives the same result as walking from the top. Every original instruction
/// and edge stays; paths that enter the chain elsewhere are untouched. Returns the program
/// unchanged when the shape is not there or the longer program would not fit the jump offsets.
pub(crate) fn dispatch_by_number(program: &[sock_filter]) -> Vec<sock_filter> {
    dispatcher(program).unwrap_or_else(|| program.to_vec())
}

fn dispatcher(program: &[sock_filter]) -> Option<Vec<sock_filter>> {
    let count = program.len();
    let load_nr = program
        .iter()
        .position(|i| i.code == BPF_LD_W_ABS && i.k == 0)?;
    // The chain: (position, k) of each test, following false edges from the one after the load.
    let mut chain: Vec<(usize, u32)> = Vec::new();
    let mut at = load_nr + 1;
    while at < count && program[at].code == BPF_JMP_JEQ_K {
        if chain.last().is_some_and(|&(_, k)| k >= program[at].k) {
            return None;
        }
        chain.push((at, program[at].k));
        at += 1 + usize::from(program[at].jf);
    }
    if chain.len() < DISPATCH_CHAIN_LEN_MIN {
        return None;
    }
    // Where the walk ends when no test is true (the default action).
    let chain_end = at;
    let segments: Vec<(usize, u32)> = chain
        .chunks(DISPATCH_SEGMENT_LEN)
        .filter_map(|segment| segment.first().copied())
        .collect();
    // With the dispatcher in front, a number reaches segment j only if it lies below segment
    // j + 1's lowest test, so no later test can be true for it: the false edge of a segment's
    // last test may go straight to the default. That holds only if the chain is entered nowhere
    // else, which is checked here (seccompiler never jumps into its chain; this is the guard).
    let mut entries = vec![0_usize; count];
    for (from, insn) in program.iter().enumerate() {
        let mut edge = |to: usize| {
            if let Some(slot) = entries.get_mut(to) {
                *slot += 1;
            }
        };
        match insn.code {
            BPF_JMP_JEQ_K | BPF_JMP_JGT_K | BPF_JMP_JGE_K => {
                edge(from + 1 + usize::from(insn.jt));
                edge(from + 1 + usize::from(insn.jf));
            }
            BPF_JMP_JA => edge(from + 1 + insn.k as usize),
            BPF_RET_K => {}
            _ => edge(from + 1),
        }
    }
    let entered_only_along_chain = chain.iter().all(|&(test, _)| entries[test] == 1);
    let segment_ends: Vec<usize> = if entered_only_along_chain {
        chain
            .chunks(DISPATCH_SEGMENT_LEN)
            .filter_map(|segment| segment.last().map(|&(test, _)| test))
            .filter(|&test| test != chain.last().map_or(usize::MAX, |&(last, _)| last))
            .collect()
    } else {
        Vec::new()
    };
    // The default itself, or an identical RET, whichever the jump reaches first.
    let default_copies: Vec<usize> = match program.get(chain_end) {
        Some(end) if end.code == BPF_RET_K => program
            .iter()
            .enumerate()
            .filter(|(_, i)| i.code == BPF_RET_K && i.k == end.k)
            .map(|(at, _)| at)
            .collect(),
        Some(_) => vec![chain_end],
        None => return None,
    };
    // Pre-order tree: `JGE lo(mid)` with the lower half right after it (false edge 0) and the
    // upper half after that; each leaf is a JA to its segment's first test. size(m) = 2m - 1.
    let tree_len = 2 * segments.len() - 1;
    let new_pos = |old: usize| if old > load_nr { old + tree_len } else { old };
    let mut tree: Vec<sock_filter> = Vec::with_capacity(tree_len);
    emit_tree(&segments, load_nr + 1, &new_pos, &mut tree)?;
    assert_eq!(tree.len(), tree_len, "dispatcher size");

    let mut out: Vec<sock_filter> = Vec::with_capacity(count + tree_len);
    for (old, insn) in program.iter().enumerate() {
        if old == load_nr + 1 {
            out.extend(tree.iter().cloned());
        }
        let mut insn = insn.clone();
        let from = new_pos(old);
        let offset = |to: usize| new_pos(to).checked_sub(from + 1);
        match insn.code {
            BPF_JMP_JEQ_K | BPF_JMP_JGT_K | BPF_JMP_JGE_K => {
                insn.jt = u8::try_from(offset(old + 1 + usize::from(insn.jt))?).ok()?;
                insn.jf = u8::try_from(offset(old + 1 + usize::from(insn.jf))?).ok()?;
                if segment_ends.contains(&old)
                    && let Some(jf) = default_copies
                        .iter()
                        .filter(|&&copy| copy > old)
                        .filter_map(|&copy| offset(copy))
                        .find_map(|jf| u8::try_from(jf).ok())
                {
                    insn.jf = jf;
                }
            }
            BPF_JMP_JA => insn.k = u32::try_from(offset(old + 1 + insn.k as usize)?).ok()?,
            _ => {}
        }
        out.push(insn);
    }
    Some(out)
}

/// Emits the dispatcher for `segments` (first test position in the input, lowest number) at
/// output position `start`. None when a jump does not fit.
fn emit_tree(
    segments: &[(usize, u32)],
    start: usize,
    new_pos: &dyn Fn(usize) -> usize,
    out: &mut Vec<sock_filter>,
) -> Option<()> {
    let here = start + out.len();
    match segments {
        [] => None,
        [(first_test, _)] => {
            let k = u32::try_from(new_pos(*first_test).checked_sub(here + 1)?).ok()?;
            out.push(sock_filter {
                code: BPF_JMP_JA,
                jt: 0,
                jf: 0,
                k,
            });
            Some(())
        }
        _ => {
            let (lower, upper) = segments.split_at(segments.len() / 2);
            let lower_len = 2 * lower.len() - 1;
            out.push(sock_filter {
                code: BPF_JMP_JGE_K,
                jt: u8::try_from(lower_len).ok()?,
                jf: 0,
                k: upper.first()?.1,
            });
            emit_tree(lower, start, new_pos, out)?;
            emit_tree(upper, start, new_pos, out)
        }
    }
}

/// BLAKE3 over the programs in install order: for each, its instruction count as u32
/// little-endian, then its instructions exactly as handed to the kernel (struct sock_filter:
/// code u16 LE, jt, jf, k u32 LE). The counts keep the program boundaries unambiguous.
pub(crate) fn programs_digest(programs: &[Program]) -> [u8; 32] {
    // One buffer and one hash call: feeding BLAKE3 three tiny slices per instruction cost
    // ~90 us for the builtin policy, 8 bytes at a time.
    let bytes_count: usize = programs
        .iter()
        .map(|p| 4 + SOCK_FILTER_BYTES * p.instructions.len())
        .sum();
    let mut bytes = Vec::with_capacity(bytes_count);
    for program in programs {
        let count = u32::try_from(program.instructions.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&count.to_le_bytes());
        for instruction in program.instructions.iter() {
            bytes.extend_from_slice(&instruction.code.to_le_bytes());
            bytes.extend_from_slice(&[instruction.jt, instruction.jf]);
            bytes.extend_from_slice(&instruction.k.to_le_bytes());
        }
    }
    *blake3::hash(&bytes).as_bytes()
}

/// Size of one `struct sock_filter` as the digest frames it (and as the kernel reads it).
const SOCK_FILTER_BYTES: usize = 8;

impl CompiledSeccomp {
    /// BLAKE3 over the programs in install order: for each, its instruction count as u32
    /// little-endian, then its instructions exactly as handed to the kernel (struct sock_filter:
    /// code u16 LE, jt, jf, k u32 LE). The counts keep the program boundaries unambiguous.
    /// Computed once, when the programs were built (for the builtin policy: at build time).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
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
    use crate::bpf_eval::{SeccompData, evaluate, run};
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
        let mut rewritten = raw.clone();
        route_refusals_to_supervisor(&mut rewritten).expect("rewrite");
        // The installed program is exactly this rewrite, jump-threaded, with the dispatcher.
        assert_eq!(
            compiled
                .programs
                .last()
                .expect("notifying program")
                .instructions
                .as_ref(),
            dispatch_by_number(&thread_jumps(&rewritten).expect("threads")).as_slice()
        );
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
            .zip(rewritten.iter())
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
        // The ENOSYS filter defers foreign ABIs to the notifying filter instead of killing
        // (jump threading may share the arch check's RET with the final one, so ask the program).
        let errno = &compiled.programs[0].instructions;
        for nr in [0, 435, 318] {
            let foreign = SeccompData {
                nr,
                arch: AUDIT_ARCH_I386,
                args: [0; 6],
            };
            assert_eq!(run(errno, &foreign), ALLOW, "i386 {nr}");
        }
        assert_eq!(
            run(errno, &call("clone3", [0; 6])),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
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
        for program in compiled.programs.iter() {
            bytes.extend((program.instructions.len() as u32).to_le_bytes());
            for i in program.instructions.iter() {
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

    fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
        sock_filter { code, jt, jf, k }
    }

    /// Inputs that reach every branch of the builtin programs: every x86_64 number (plus unknown
    /// ones) through the native, x32 and i386 ABIs and an unknown arch, with arguments set to
    /// every constant a condition of that syscall compares with, and its neighbours, with and
    /// without garbage in the high half.
    fn probe_inputs(policy: &SeccompPolicy) -> Vec<SeccompData> {
        let mut values_by_nr: BTreeMap<u32, Vec<(u8, u64)>> = BTreeMap::new();
        for (nr, c) in policy.conditions() {
            let mask = match c.op {
                Op::MaskedEq(m) | Op::MaskedNe(m) => m,
                _ => c.width.all_ones(),
            };
            let entry = values_by_nr.entry(nr).or_default();
            for v in [
                c.value,
                c.value.wrapping_add(1),
                c.value.wrapping_sub(1),
                mask,
                !mask,
            ] {
                entry.push((c.arg, v));
                entry.push((c.arg, v | 0xdead_beef_0000_0000));
            }
        }
        let numbers: Vec<i32> = Sysno::iter()
            .map(|s| s.id())
            .chain([-1, 1000, 0x3fff_ffff])
            .collect();
        let mut inputs = Vec::new();
        for &nr in &numbers {
            let mut arg_sets = vec![[0_u64; 6], [u64::MAX; 6]];
            for &(arg, value) in values_by_nr.get(&(nr as u32)).into_iter().flatten() {
                let mut args = [0_u64; 6];
                args[usize::from(arg)] = value;
                arg_sets.push(args);
                let mut ones = [u64::MAX; 6];
                ones[usize::from(arg)] = value;
                arg_sets.push(ones);
            }
            for args in arg_sets {
                for (nr, arch) in [
                    (nr, AUDIT_ARCH_X86_64),
                    (nr | X32_SYSCALL_BIT as i32, AUDIT_ARCH_X86_64),
                    (nr, AUDIT_ARCH_I386),
                    (nr, 0x1234),
                ] {
                    inputs.push(SeccompData { nr, arch, args });
                }
            }
        }
        inputs
    }

    #[test]
    fn jump_threading_keeps_every_answer_and_shrinks_the_allowlist() {
        let policy = SeccompPolicy::builtin().expect("parses");
        let mut allowlist = policy.allowlist_bpf().expect("compiles");
        route_refusals_to_supervisor(&mut allowlist).expect("rewrite");
        let errno = policy.errno_programs().expect("errno programs");
        let mut unthreaded: Vec<Vec<sock_filter>> = Vec::new();
        for program in &errno {
            // errno_programs threads already; threading is idempotent on its output.
            unthreaded.push(program.instructions.to_vec());
        }
        unthreaded.push(allowlist.clone());
        let inputs = probe_inputs(&policy);
        assert!(
            inputs.len() > 8 * Sysno::iter().count(),
            "{} inputs",
            inputs.len()
        );
        for program in &unthreaded {
            let threaded = thread_jumps(program).expect("threads");
            let again = thread_jumps(&threaded).expect("threads");
            for data in &inputs {
                let expected = run(program, data);
                assert_eq!(expected, run(&threaded, data), "{data:?}");
                assert_eq!(expected, run(&again, data), "second pass, {data:?}");
            }
        }
        let threaded = thread_jumps(&allowlist).expect("threads");
        let dispatched = dispatch_by_number(&threaded);
        assert_ne!(
            dispatched, threaded,
            "the builtin allowlist gets a dispatcher"
        );
        for data in &inputs {
            assert_eq!(run(&allowlist, data), run(&dispatched, data), "{data:?}");
        }
        // About one instruction instead of five per unconditionally allowed syscall.
        assert!(
            threaded.len() * 3 < allowlist.len(),
            "{} -> {}",
            allowlist.len(),
            threaded.len()
        );
        assert!(!threaded.iter().any(|i| i.code == BPF_JMP_JA));
    }

    #[test]
    fn jump_threading_keeps_trampolines_a_conditional_jump_cannot_skip() {
        // 0: load nr; 1: JEQ 7 -> 2 (JA -> 301: RET 1) else 3 (RET 2). 301 is out of reach of a
        // jt from 1, so the trampoline must stay; the RETs in between are unreachable.
        let mut program = vec![
            insn(BPF_LD_W_ABS, 0, 0, 0),
            insn(BPF_JMP_JEQ_K, 0, 1, 7),
            insn(BPF_JMP_JA, 0, 0, 298),
            insn(BPF_RET_K, 0, 0, 2),
        ];
        program.extend((4..301).map(|k| insn(BPF_RET_K, 0, 0, k)));
        program.push(insn(BPF_RET_K, 0, 0, 1));
        let threaded = thread_jumps(&program).expect("threads");
        assert_eq!(
            threaded,
            vec![
                insn(BPF_LD_W_ABS, 0, 0, 0),
                insn(BPF_JMP_JEQ_K, 0, 1, 7),
                insn(BPF_JMP_JA, 0, 0, 1),
                insn(BPF_RET_K, 0, 0, 2),
                insn(BPF_RET_K, 0, 0, 1),
            ]
        );
        for (nr, expected) in [(7, 1), (8, 2)] {
            let data = SeccompData {
                nr,
                arch: AUDIT_ARCH_X86_64,
                args: [0; 6],
            };
            assert_eq!(run(&program, &data), expected);
            assert_eq!(run(&threaded, &data), expected);
        }
        // Chains of JA collapse into one jump.
        let chain = vec![
            insn(BPF_JMP_JA, 0, 0, 1),
            insn(BPF_RET_K, 0, 0, 9),
            insn(BPF_JMP_JA, 0, 0, 0),
            insn(BPF_RET_K, 0, 0, 5),
        ];
        assert_eq!(
            thread_jumps(&chain).expect("threads"),
            vec![insn(BPF_JMP_JA, 0, 0, 0), insn(BPF_RET_K, 0, 0, 5)]
        );
    }

    #[test]
    fn jump_threading_refuses_what_it_does_not_understand() {
        let unknown = [insn(0x45, 0, 0, 1), insn(BPF_RET_K, 0, 0, 0)]; // JSET
        assert!(matches!(
            thread_jumps(&unknown),
            Err(PolicyError::Backend { message, .. }) if message.contains("0x0045")
        ));
        let past_end = [insn(BPF_JMP_JEQ_K, 0, 3, 1), insn(BPF_RET_K, 0, 0, 0)];
        assert!(matches!(
            thread_jumps(&past_end),
            Err(PolicyError::Backend { message, .. }) if message.contains("past the end")
        ));
        let falls_off = [insn(BPF_LD_W_ABS, 0, 0, 0)];
        assert!(thread_jumps(&falls_off).is_err());
        assert_eq!(thread_jumps(&[]).expect("empty"), Vec::new());
    }

    /// Instructions executed to reach a RET, as the kernel's action-cache emulation walks them.
    fn path_len(program: &[sock_filter], data: &SeccompData) -> usize {
        let mut pc = 0;
        let mut steps = 0;
        let mut acc = 0_u32;
        loop {
            let i = &program[pc];
            steps += 1;
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => acc = if i.k == 0 { data.nr as u32 } else { data.arch },
                BPF_JMP_JA => pc += i.k as usize,
                BPF_JMP_JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
                BPF_JMP_JGE_K => pc += usize::from(if acc >= i.k { i.jt } else { i.jf }),
                BPF_JMP_JGT_K => pc += usize::from(if acc > i.k { i.jt } else { i.jf }),
                // Argument checks end the walk (the kernel's emulation stops there too).
                _ => return steps,
            }
        }
    }

    #[test]
    fn dispatcher_shortens_every_path_to_a_syscall_test() {
        let (_, compiled) = builtin();
        let policy = SeccompPolicy::builtin().expect("parses");
        let mut allowlist = policy.allowlist_bpf().expect("compiles");
        route_refusals_to_supervisor(&mut allowlist).expect("rewrite");
        let installed = &compiled.programs.last().expect("listener").instructions;
        let longest = |program: &[sock_filter]| {
            Sysno::iter()
                .map(|s| path_len(program, &call(s.name(), [0; 6])))
                .max()
                .unwrap_or(0)
        };
        let (before, after) = (longest(&allowlist), longest(installed));
        // A balanced tree over 16-test segments: depth + one jump + one segment + the prologue.
        assert!(
            after <= 3 + 6 + 1 + DISPATCH_SEGMENT_LEN + 2,
            "{before} -> {after}"
        );
        assert!(before > 10 * after, "{before} -> {after}");
    }

    #[test]
    fn dispatcher_leaves_other_shapes_alone() {
        // Too short a chain.
        let short = vec![
            insn(BPF_LD_W_ABS, 0, 0, 0),
            insn(BPF_JMP_JEQ_K, 0, 1, 1),
            insn(BPF_RET_K, 0, 0, 1),
            insn(BPF_RET_K, 0, 0, 2),
        ];
        assert_eq!(dispatch_by_number(&short), short);
        // A chain that is not sorted: a dispatcher would skip a test that could match.
        let mut unsorted = vec![insn(BPF_LD_W_ABS, 0, 0, 0)];
        for k in (0..40).rev() {
            unsorted.push(insn(BPF_JMP_JEQ_K, 0, 0, k));
        }
        unsorted.push(insn(BPF_RET_K, 0, 0, 9));
        assert_eq!(dispatch_by_number(&unsorted), unsorted);
        // No load of the number at all.
        let none = vec![insn(BPF_RET_K, 0, 0, 0)];
        assert_eq!(dispatch_by_number(&none), none);
    }

    #[test]
    fn dispatcher_jumps_to_the_segment_of_every_number() {
        // LD nr; JEQ 0, 3, 6, ... 3*39 each true -> RET (k + 1000); default RET 7.
        let tests = 40_u32;
        let mut program = vec![insn(BPF_LD_W_ABS, 0, 0, 0)];
        for n in 0..tests {
            program.push(insn(BPF_JMP_JEQ_K, 1, 0, 3 * n));
        }
        program.push(insn(BPF_JMP_JA, 0, 0, tests));
        for n in 0..tests {
            program.push(insn(BPF_RET_K, 0, 0, 1000 + 3 * n));
        }
        program.push(insn(BPF_RET_K, 0, 0, 7));
        // Each JEQ's true edge must skip the rest of the chain: rebuild with real offsets.
        for n in 0..tests as usize {
            let at = 1 + n;
            let ret = 1 + tests as usize + 1 + n;
            program[at].jt = (ret - at - 1) as u8;
        }
        let dispatched = dispatch_by_number(&program);
        assert_eq!(dispatched.len(), program.len() + 2 * 3 - 1);
        for nr in 0..(3 * tests as i32 + 5) {
            let data = SeccompData {
                nr,
                arch: AUDIT_ARCH_X86_64,
                args: [0; 6],
            };
            let expected = if nr % 3 == 0 && nr < 3 * tests as i32 {
                1000 + nr as u32
            } else {
                7
            };
            assert_eq!(run(&program, &data), expected, "nr {nr}");
            assert_eq!(run(&dispatched, &data), expected, "nr {nr}");
        }
    }
}

/// Adversarial checks of [`thread_jumps`] and [`dispatch_by_number`]: seeded random seccompiler
/// filters and random classic-BPF programs, each run through the original and the rewritten
/// program with the crate's evaluator, and the evaluator itself checked against the running
/// kernel. The seeds are fixed, so a failure names an input that reproduces.
#[cfg(test)]
mod pass_differential_tests {
    use super::*;
    use crate::bpf_eval::{SeccompData, run};

    /// SplitMix64: seeded and reproducible; a test needs no more (and no extra dependency).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }

        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }

        /// An argument with no relation to any condition: zero, all ones or random.
        fn any_arg(&mut self) -> u64 {
            match self.below(3) {
                0 => 0,
                1 => u64::MAX,
                _ => self.next(),
            }
        }
    }

    fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
        sock_filter { code, jt, jf, k }
    }

    /// What the kernel's bpf_check_classic and seccomp_check_filter demand of the subset used
    /// here: every jump lands inside the program, loads read aligned words of seccomp_data, the
    /// last instruction returns, and the length fits.
    fn assert_kernel_accepts(program: &[sock_filter], what: &str) {
        assert!(
            !program.is_empty() && program.len() <= BPF_INSTRUCTIONS_MAX,
            "{what}: {} instructions",
            program.len()
        );
        for (at, i) in program.iter().enumerate() {
            let last_target = match i.code {
                BPF_JMP_JA => at + 1 + i.k as usize,
                BPF_JMP_JEQ_K | BPF_JMP_JGT_K | BPF_JMP_JGE_K => {
                    at + 1 + usize::from(i.jt.max(i.jf))
                }
                BPF_LD_W_ABS => {
                    assert!(i.k % 4 == 0 && i.k < 64, "{what}: load {:#x} at {at}", i.k);
                    at
                }
                BPF_ALU_AND_K | BPF_RET_K => at,
                other => panic!("{what}: opcode {other:#x} at {at}"),
            };
            assert!(last_target < program.len(), "{what}: jump out at {at}");
        }
        assert_eq!(
            program.last().map(|i| i.code),
            Some(BPF_RET_K),
            "{what}: last instruction"
        );
    }

    /// Checks that both passes, alone and chained, give the original's answer for every input,
    /// and that every result is a program the kernel loads. Returns whether the dispatcher
    /// changed the threaded program (so callers can make sure the interesting case happens).
    fn assert_passes_keep_answers(
        original: &[sock_filter],
        inputs: &[SeccompData],
        what: &str,
    ) -> bool {
        let threaded = thread_jumps(original).unwrap_or_else(|e| panic!("{what}: {e}"));
        let rethreaded = thread_jumps(&threaded).unwrap_or_else(|e| panic!("{what}: {e}"));
        let dispatched = dispatch_by_number(&threaded);
        let dispatched_only = dispatch_by_number(original);
        assert!(threaded.len() <= original.len(), "{what}: threading grew");
        for (name, program) in [
            ("threaded", &threaded),
            ("rethreaded", &rethreaded),
            ("dispatched", &dispatched),
            ("dispatched unthreaded", &dispatched_only),
        ] {
            assert_kernel_accepts(program, &format!("{what}, {name}"));
        }
        for data in inputs {
            let expected = run(original, data);
            assert_eq!(
                run(&threaded, data),
                expected,
                "{what}, threaded, {data:x?}"
            );
            assert_eq!(
                run(&rethreaded, data),
                expected,
                "{what}, rethreaded, {data:x?}"
            );
            assert_eq!(
                run(&dispatched, data),
                expected,
                "{what}, dispatched, {data:x?}"
            );
            assert_eq!(
                run(&dispatched_only, data),
                expected,
                "{what}, dispatched unthreaded, {data:x?}"
            );
        }
        dispatched != threaded
    }

    /// Values a comparison against `value` under `mask` can turn on: the value, its neighbours,
    /// the mask edges, and each 32-bit half kept while the other is replaced (seccompiler
    /// compares 64-bit arguments half by half).
    fn boundary_values(value: u64, mask: u64, rng: &mut Rng) -> Vec<u64> {
        let random_high = rng.next() & 0xffff_ffff_0000_0000;
        let random_low = rng.next() & 0xffff_ffff;
        vec![
            value,
            value.wrapping_add(1),
            value.wrapping_sub(1),
            value & mask,
            value | !mask,
            (value & mask) | (rng.next() & !mask),
            mask,
            !mask,
            (value & 0xffff_ffff) | random_high,
            (value & 0xffff_ffff_0000_0000) | random_low,
            (value & 0xffff_ffff_0000_0000).wrapping_add(0x1_0000_0000) | (value & 0xffff_ffff),
            (value & 0xffff_ffff_0000_0000).wrapping_sub(0x1_0000_0000) | (value & 0xffff_ffff),
        ]
    }

    /// A random filter built by seccompiler exactly as the policy compiler builds one, with the
    /// numbers and per-argument constants it compares with.
    struct RandomFilter {
        program: Vec<sock_filter>,
        numbers: Vec<u32>,
        constants: BTreeMap<u32, Vec<(u8, u64, u64)>>,
    }

    const RANDOM_VALUES: [u64; 12] = [
        0,
        1,
        0x5412,
        0x541c,
        0x7e02_0000,
        0x0080_0000,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x1_0000_0000,
        0x8000_0000_0000_0000,
        u64::MAX,
    ];

    fn random_number_set(rng: &mut Rng) -> Vec<u32> {
        let count = rng.pick(&[0, 1, 5, 31, 32, 33, 47, 48, 49, 100, 300, 450]);
        let mut numbers = std::collections::BTreeSet::new();
        let base = rng.pick(&[0_u32, 1, 200, 0x3fff_ff00, 0x7fff_ff00, 0xffff_fe00]);
        while numbers.len() < count {
            let nr = match rng.below(4) {
                // Dense runs, as syscall tables are.
                0 | 1 => base.wrapping_add(rng.below(600) as u32),
                // Boundaries of the number space and of the x32 bit.
                2 => rng.pick(&[
                    0,
                    1,
                    0x3fff_ffff,
                    0x4000_0000,
                    0x4000_0001,
                    0x7fff_ffff,
                    0x8000_0000,
                    0xffff_fffe,
                    0xffff_ffff,
                ]),
                _ => rng.next() as u32,
            };
            numbers.insert(nr);
        }
        numbers.into_iter().collect()
    }

    fn random_action(rng: &mut Rng) -> SeccompAction {
        match rng.below(8) {
            0 => SeccompAction::Allow,
            1 => SeccompAction::Errno(1),
            2 => SeccompAction::Errno(NOTIFY_SENTINEL_ERRNO),
            3 => SeccompAction::Trap,
            4 => SeccompAction::KillProcess,
            5 => SeccompAction::KillThread,
            6 => SeccompAction::Log,
            _ => SeccompAction::Trace(3),
        }
    }

    fn random_filter(rng: &mut Rng) -> Option<RandomFilter> {
        let numbers = random_number_set(rng);
        let pool: Vec<u64> = (0..6)
            .map(|_| {
                if rng.chance(50) {
                    rng.pick(&RANDOM_VALUES)
                } else {
                    rng.next() >> rng.below(64)
                }
            })
            .collect();
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        let mut constants: BTreeMap<u32, Vec<(u8, u64, u64)>> = BTreeMap::new();
        for &nr in &numbers {
            let rules_count = if rng.chance(55) {
                0
            } else if rng.chance(4) {
                // A body longer than a conditional jump reaches: trampolines must stay.
                rng.pick(&[30, 60])
            } else {
                1 + rng.below(3)
            };
            let mut chain = Vec::with_capacity(rules_count);
            for _ in 0..rules_count {
                // Now and then enough conditions for seccompiler's own helper jumps.
                let conditions_count = if rng.chance(3) { 45 } else { 1 + rng.below(4) };
                let mut conditions = Vec::with_capacity(conditions_count);
                for _ in 0..conditions_count {
                    let arg = rng.below(6) as u8;
                    let width = if rng.chance(50) {
                        SeccompCmpArgLen::Dword
                    } else {
                        SeccompCmpArgLen::Qword
                    };
                    let mut value = rng.pick(&pool);
                    let mut mask = u64::MAX;
                    let op = match rng.below(7) {
                        0 => SeccompCmpOp::Eq,
                        1 => SeccompCmpOp::Ne,
                        2 => SeccompCmpOp::Lt,
                        3 => SeccompCmpOp::Le,
                        4 => SeccompCmpOp::Gt,
                        5 => SeccompCmpOp::Ge,
                        _ => {
                            mask = rng.pick(&pool) | rng.pick(&RANDOM_VALUES);
                            value &= mask;
                            SeccompCmpOp::MaskedEq(mask)
                        }
                    };
                    if matches!(width, SeccompCmpArgLen::Dword) {
                        value &= 0xffff_ffff;
                        mask &= 0xffff_ffff;
                    }
                    constants.entry(nr).or_default().push((arg, value, mask));
                    conditions.push(SeccompCondition::new(arg, width, op, value).ok()?);
                }
                chain.push(SeccompRule::new(conditions).ok()?);
            }
            rules.insert(i64::from(nr), chain);
        }
        let mismatch = random_action(rng);
        let mut matched = random_action(rng);
        while matched == mismatch {
            matched = random_action(rng);
        }
        let filter = SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64).ok()?;
        // Too large for seccompiler (or the kernel): not a program the passes can be given.
        let mut program: BpfProgram = filter.try_into().ok()?;
        // The production rewrites, now and then, so their output shapes are covered too.
        if rng.chance(30) {
            let _ = route_refusals_to_supervisor(&mut program);
        } else if rng.chance(20) {
            replace_arch_mismatch_action(&mut program, libc::SECCOMP_RET_ALLOW).ok()?;
        }
        Some(RandomFilter {
            program,
            numbers,
            constants,
        })
    }

    /// Calls aimed at every branch: each number of the filter and its neighbours, through the
    /// native, x32 and foreign ABIs, with arguments drawn from the constants of that number's
    /// conditions (every argument at once, so multi-condition rules can all hold), plus random
    /// calls.
    fn inputs_for(filter: &RandomFilter, rng: &mut Rng) -> Vec<SeccompData> {
        let mut inputs = Vec::new();
        let arch = |rng: &mut Rng| {
            if rng.chance(85) {
                AUDIT_ARCH_X86_64
            } else {
                rng.pick(&[AUDIT_ARCH_I386, 0, 0x1234, AUDIT_ARCH_X86_64 ^ 1])
            }
        };
        for &nr in &filter.numbers {
            let values: Vec<(u8, u64)> = filter
                .constants
                .get(&nr)
                .into_iter()
                .flatten()
                .flat_map(|&(arg, value, mask)| {
                    boundary_values(value, mask, rng)
                        .into_iter()
                        .map(move |v| (arg, v))
                })
                .collect();
            let tries = if values.is_empty() { 2 } else { 24 };
            for _ in 0..tries {
                let mut args = [0_u64; 6];
                for (index, arg) in args.iter_mut().enumerate() {
                    let own: Vec<u64> = values
                        .iter()
                        .filter(|(a, _)| usize::from(*a) == index)
                        .map(|&(_, v)| v)
                        .collect();
                    *arg = if !own.is_empty() && rng.chance(85) {
                        rng.pick(&own)
                    } else {
                        rng.any_arg()
                    };
                }
                for nr in [nr, nr.wrapping_add(1), nr.wrapping_sub(1)] {
                    inputs.push(SeccompData {
                        nr: nr as i32,
                        arch: arch(rng),
                        args,
                    });
                }
                inputs.push(SeccompData {
                    nr: (nr | X32_SYSCALL_BIT) as i32,
                    arch: AUDIT_ARCH_X86_64,
                    args,
                });
            }
        }
        for _ in 0..200 {
            let nr = if rng.chance(50) {
                rng.next() as u32
            } else {
                rng.pick(&[0, u32::MAX, 0x4000_0000, 0x7fff_ffff, 0x8000_0000])
            };
            inputs.push(SeccompData {
                nr: nr as i32,
                arch: arch(rng),
                args: [(); 6].map(|()| rng.any_arg()),
            });
        }
        inputs
    }

    #[test]
    fn random_seccompiler_filters_keep_every_answer() {
        let mut rng = Rng(0x5eed_0001);
        let (mut filters, mut dispatched, mut inputs_count) = (0, 0, 0);
        while filters < 250 {
            let Some(filter) = random_filter(&mut rng) else {
                continue;
            };
            filters += 1;
            let inputs = inputs_for(&filter, &mut rng);
            inputs_count += inputs.len();
            let what = format!("random filter {filters}");
            if assert_passes_keep_answers(&filter.program, &inputs, &what) {
                dispatched += 1;
            }
        }
        // The dispatcher must have been exercised, not skipped for every shape.
        assert!(dispatched > 60, "{dispatched} of {filters} dispatched");
        assert!(inputs_count > 250_000, "{inputs_count} inputs");
    }

    /// A random program in the handled subset, with forward jumps only and a `RET` last. After
    /// a block of random instructions (loads of the arch and arguments, tests, jumps) comes the
    /// shape the dispatcher rewrites: a load of the number and a chain of `JEQ` tests, then more
    /// random instructions. Per program, the chain may be clean (strictly ascending, entered only
    /// along itself, so the dispatcher and its shortcut to the default apply) or break the
    /// dispatcher's assumptions: duplicate or descending numbers, instructions between tests,
    /// and jumps into the middle of the chain with something other than the number in A.
    fn random_program(rng: &mut Rng, ks: &mut Vec<u32>) -> Vec<sock_filter> {
        let len = 8 + rng.below(700);
        let rets = [0_u32, 1, 0x7fff_0000, libc::SECCOMP_RET_USER_NOTIF];
        let break_per_mille = rng.pick(&[0, 0, 0, 5, 50]);
        let into_chain_percent = rng.pick(&[0, 0, 0, 2, 15]);
        let random_instruction = |rng: &mut Rng, ks: &[u32]| {
            let k = |rng: &mut Rng| {
                if !ks.is_empty() && rng.chance(50) {
                    rng.pick(ks).wrapping_add(rng.pick(&[0, 0, 1, u32::MAX]))
                } else {
                    rng.next() as u32 >> rng.below(32)
                }
            };
            match rng.below(10) {
                0 | 1 => insn(
                    BPF_LD_W_ABS,
                    0,
                    0,
                    rng.pick(&[4, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 0]),
                ),
                2 => insn(BPF_ALU_AND_K, 0, 0, rng.next() as u32),
                3 => insn(BPF_JMP_JA, 0, 0, 0),
                4 | 5 => insn(BPF_RET_K, 0, 0, rng.pick(&rets)),
                6 => insn(BPF_JMP_JGT_K, 0, 0, k(rng)),
                7 => insn(BPF_JMP_JGE_K, 0, 0, k(rng)),
                _ => insn(BPF_JMP_JEQ_K, 0, 0, k(rng)),
            }
        };
        // The chain's numbers first, so the random instructions can compare with them.
        let tests = rng.pick(&[10, 31, 32, 33, 64, 100, 200]);
        let mut k = rng.pick(&[0_u32, 5, 0x3fff_ff00, 0xffff_f000]);
        for _ in 0..tests {
            k = if rng.below(1000) >= break_per_mille {
                k.saturating_add(1 + rng.below(40) as u32)
            } else if rng.chance(50) {
                k // a duplicate: no dispatcher
            } else {
                k.wrapping_sub(1 + rng.below(3) as u32) // descending: no dispatcher
            };
            ks.push(k);
        }
        let mut program: Vec<sock_filter> = Vec::with_capacity(len);
        if rng.chance(50) {
            program.extend([
                insn(BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH_OFFSET),
                insn(BPF_JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
                insn(BPF_RET_K, 0, 0, rng.pick(&rets)),
            ]);
        }
        // Before the number is loaded: no load of it (the dispatcher takes the first one).
        for _ in 0..rng.pick(&[0, 0, 3, 20]) {
            let mut instruction = random_instruction(rng, ks);
            if instruction.code == BPF_LD_W_ABS && instruction.k == 0 {
                instruction.k = SECCOMP_DATA_ARCH_OFFSET;
            }
            program.push(instruction);
        }
        // Positions of the chain tests, whose false edge goes to the next test.
        let mut chain_tests: Vec<usize> = Vec::new();
        program.push(insn(BPF_LD_W_ABS, 0, 0, 0));
        for &k in ks.iter() {
            if program.len() + 6 >= len {
                break;
            }
            chain_tests.push(program.len());
            program.push(insn(BPF_JMP_JEQ_K, 0, 0, k));
            // Instructions the false edge jumps over (reached only through other edges), as
            // jump threading leaves shared RETs and rule bodies between seccompiler's tests.
            if rng.chance(15) {
                for _ in 0..1 + rng.below(3) {
                    program.push(random_instruction(rng, ks));
                }
            }
        }
        while program.len() < len - 1 {
            program.push(random_instruction(rng, ks));
        }
        program.push(insn(BPF_RET_K, 0, 0, rng.pick(&rets)));
        let count = program.len();
        let is_chain_test = |at: usize| chain_tests.binary_search(&at).is_ok();
        for (at, instruction) in program.iter_mut().enumerate() {
            // A forward offset within reach: into the chain now and then (per program), else
            // anywhere else, often nearby.
            let target = |rng: &mut Rng, far: bool| -> usize {
                let reach = if far {
                    count - at - 2
                } else {
                    (count - at - 2).min(BPF_COND_JUMP_MAX)
                };
                let into_chain: Vec<usize> = chain_tests
                    .iter()
                    .filter(|&&t| t > at && t - at - 1 <= reach)
                    .map(|&t| t - at - 1)
                    .collect();
                if !into_chain.is_empty() && rng.chance(into_chain_percent) {
                    return rng.pick(&into_chain);
                }
                for _ in 0..8 {
                    let offset = if rng.chance(40) {
                        rng.below(reach.min(3) + 1)
                    } else {
                        rng.below(reach + 1)
                    };
                    if !is_chain_test(at + 1 + offset) {
                        return offset;
                    }
                }
                reach
            };
            let code = instruction.code;
            if code == BPF_JMP_JA {
                instruction.k = target(rng, true) as u32;
            } else if matches!(code, BPF_JMP_JEQ_K | BPF_JMP_JGT_K | BPF_JMP_JGE_K) {
                let jt = target(rng, false) as u8;
                let jf = match chain_tests.binary_search(&at) {
                    Ok(index) => match chain_tests.get(index + 1) {
                        Some(&next) if rng.chance(99) => (next - at - 1) as u8,
                        _ => target(rng, false) as u8,
                    },
                    Err(_) => target(rng, false) as u8,
                };
                instruction.jt = jt;
                instruction.jf = jf;
            }
        }
        program
    }

    #[test]
    fn random_programs_keep_every_answer() {
        let mut rng = Rng(0x5eed_0002);
        let mut dispatched = 0;
        let programs = 1500;
        for index in 0..programs {
            let mut ks = Vec::new();
            let program = random_program(&mut rng, &mut ks);
            assert_kernel_accepts(&program, "generator");
            let mut inputs = Vec::with_capacity(600);
            for _ in 0..600 {
                let nr = if !ks.is_empty() && rng.chance(70) {
                    rng.pick(&ks).wrapping_add(rng.pick(&[0, 0, 1, u32::MAX]))
                } else {
                    rng.next() as u32
                };
                let arch = if rng.chance(80) {
                    AUDIT_ARCH_X86_64
                } else {
                    rng.next() as u32
                };
                let args = [(); 6].map(|()| {
                    let half = |rng: &mut Rng| {
                        if !ks.is_empty() && rng.chance(50) {
                            u64::from(rng.pick(&ks))
                        } else {
                            rng.next() & 0xffff_ffff
                        }
                    };
                    half(&mut rng) << 32 | half(&mut rng)
                });
                inputs.push(SeccompData {
                    nr: nr as i32,
                    arch,
                    args,
                });
            }
            let what = format!("random program {index}: {program:?}");
            if assert_passes_keep_answers(&program, &inputs, &what) {
                dispatched += 1;
            }
        }
        assert!(dispatched > 100, "{dispatched} of {programs} dispatched");
    }

    /// The builtin policy as a [`RandomFilter`]: its seccompiler program (refusals routed to the
    /// supervisor, as installed) with every x86_64 number and the constants of its conditions.
    fn builtin_filter() -> (SeccompPolicy, RandomFilter) {
        let policy = SeccompPolicy::builtin().expect("builtin policy parses");
        let mut program = policy.allowlist_bpf().expect("compiles");
        route_refusals_to_supervisor(&mut program).expect("rewrite");
        let mut numbers: Vec<u32> = syscalls::x86_64::Sysno::iter()
            .map(|s| s.id() as u32)
            .chain([1000, 0x3fff_ffff, u32::MAX])
            .collect();
        numbers.sort_unstable();
        numbers.dedup();
        let mut constants: BTreeMap<u32, Vec<(u8, u64, u64)>> = BTreeMap::new();
        for (nr, c) in policy.conditions() {
            let mask = match c.op {
                crate::policy::Op::MaskedEq(m) | crate::policy::Op::MaskedNe(m) => m,
                _ => c.width.all_ones(),
            };
            constants
                .entry(nr)
                .or_default()
                .push((c.arg, c.value, mask));
        }
        let filter = RandomFilter {
            program,
            numbers,
            constants,
        };
        (policy, filter)
    }

    #[test]
    fn builtin_allowlist_keeps_every_answer_with_arguments_combined() {
        let (_, filter) = builtin_filter();
        let mut rng = Rng(0x5eed_0003);
        let mut inputs = Vec::new();
        // Several rounds: arguments are drawn afresh, so multi-argument rules (clone flags with
        // other arguments, socket family and type, ioctl requests) meet many combinations.
        for _ in 0..16 {
            inputs.extend(inputs_for(&filter, &mut rng));
        }
        assert!(inputs.len() > 50_000, "{} inputs", inputs.len());
        assert!(assert_passes_keep_answers(
            &filter.program,
            &inputs,
            "builtin allowlist"
        ));
        // The installed program is the one checked here.
        let compiled = CompiledSeccomp::builtin().expect("x86_64 build");
        let installed = &compiled.programs.last().expect("listener").instructions;
        let expected = dispatch_by_number(&thread_jumps(&filter.program).expect("threads"));
        assert_eq!(installed.as_ref(), expected.as_slice());
    }

    /// What the running kernel answers for `program` on each input (native calls only: the arch
    /// is x86_64 whatever `data.arch` says). A forked child installs the program with every
    /// `RET k` turned into `RET ERRNO|n` (n numbering the distinct k), so no call runs, and
    /// reports each errno through shared memory; only exit_group is let through, by a prologue,
    /// so that the child can leave.
    fn kernel_answers(program: &[sock_filter], inputs: &[SeccompData]) -> Vec<u32> {
        let mut values: Vec<u32> = program
            .iter()
            .filter(|i| i.code == BPF_RET_K)
            .map(|i| i.k)
            .collect();
        values.sort_unstable();
        values.dedup();
        assert!(values.len() < 4000, "errno data is 12 bits");
        let exit_group = libc::SYS_exit_group as u32;
        let mut filter = vec![
            libc::sock_filter {
                code: BPF_LD_W_ABS,
                jt: 0,
                jf: 0,
                k: 0,
            },
            libc::sock_filter {
                code: BPF_JMP_JEQ_K,
                jt: 0,
                jf: 1,
                k: exit_group,
            },
            libc::sock_filter {
                code: BPF_RET_K,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            },
        ];
        filter.extend(program.iter().map(|i| {
            let k = if i.code == BPF_RET_K {
                let index = values.binary_search(&i.k).expect("collected above");
                libc::SECCOMP_RET_ERRNO | (index as u32 + 1)
            } else {
                i.k
            };
            libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k,
            }
        }));
        let fprog = libc::sock_fprog {
            len: u16::try_from(filter.len()).expect("fits"),
            filter: filter.as_mut_ptr(),
        };
        let calls: Vec<(libc::c_long, [u64; 6])> = inputs
            .iter()
            .filter(|d| d.nr as u32 != exit_group)
            .map(|d| (libc::c_long::from(d.nr), d.args))
            .collect();
        assert_eq!(calls.len(), inputs.len(), "exit_group cannot be probed");
        let bytes = 4 * calls.len().max(1);
        // SAFETY: a fresh anonymous shared mapping: no file, no existing memory is touched.
        let shared = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(shared, libc::MAP_FAILED, "mmap");
        let results = shared.cast::<u32>();
        // SAFETY: fork is async-signal-safe. The child (a copy of this one thread of a possibly
        // multi-threaded test process) allocates nothing and takes no lock: it makes raw
        // syscalls on data prepared before the fork, stores into the shared mapping within its
        // `bytes`, and leaves with _exit, so no state copied mid-update in another thread is used.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: as above; `fprog` points at `filter`, alive in the child's copy of memory,
            // each `results.add(index)` is within the mapping (index < calls.len()), and the
            // probed calls cannot run: the installed filter answers each with an errno.
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1_u64, 0_u64, 0_u64, 0_u64) != 0 {
                    libc::_exit(2);
                }
                let rc = libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0_u64,
                    std::ptr::from_ref(&fprog),
                );
                if rc != 0 {
                    libc::_exit(3);
                }
                for (index, (nr, a)) in calls.iter().enumerate() {
                    let rc = libc::syscall(*nr, a[0], a[1], a[2], a[3], a[4], a[5]);
                    let answer = if rc == -1 {
                        *libc::__errno_location() as u32
                    } else {
                        u32::MAX
                    };
                    results.add(index).write_volatile(answer);
                }
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above; `status` is a valid out-pointer.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid, "waitpid: {}", io::Error::last_os_error());
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
        // SAFETY: the child has exited; the mapping holds calls.len() initialised u32s, read once
        // and then unmapped.
        let answers: Vec<u32> = unsafe {
            let answers = (0..calls.len())
                .map(|index| results.add(index).read_volatile())
                .collect();
            libc::munmap(shared, bytes);
            answers
        };
        answers
            .into_iter()
            .zip(inputs)
            .map(|(errno, data)| {
                let index = (errno as usize)
                    .checked_sub(1)
                    .filter(|&i| i < values.len())
                    .unwrap_or_else(|| panic!("kernel answered errno {errno:#x} for {data:x?}"));
                values[index]
            })
            .collect()
    }

    /// Numbers the kernel check cannot probe: exit_group ends the child, and recent kernels run
    /// uretprobe (335) and uprobe (336) without consulting seccomp at all (seen on 6.18: outside
    /// a uprobe trampoline uretprobe raises SIGILL whatever the filter says), so no filter answer
    /// is observable for them.
    const UNPROBED_NUMBERS: [u32; 3] = [libc::SYS_exit_group as u32, 335, 336];

    /// Native calls from `inputs` (the kernel check can issue no other), without
    /// [`UNPROBED_NUMBERS`].
    fn native_sample(inputs: &[SeccompData], count: usize, rng: &mut Rng) -> Vec<SeccompData> {
        let native: Vec<SeccompData> = inputs
            .iter()
            .filter(|d| d.arch == AUDIT_ARCH_X86_64 && !UNPROBED_NUMBERS.contains(&(d.nr as u32)))
            .copied()
            .collect();
        (0..count.min(native.len()))
            .map(|_| native[rng.below(native.len())])
            .collect()
    }

    #[test]
    fn kernel_agrees_with_the_evaluator_on_original_and_rewritten_programs() {
        let mut rng = Rng(0x5eed_0004);
        let (policy, builtin) = builtin_filter();
        let mut cases: Vec<(String, RandomFilter)> = vec![("builtin".to_string(), builtin)];
        while cases.len() < 6 {
            if let Some(filter) = random_filter(&mut rng) {
                cases.push((format!("random filter {}", cases.len()), filter));
            }
        }
        let errno = policy.errno_programs().expect("errno programs");
        for (what, filter) in &cases {
            let inputs = native_sample(&inputs_for(filter, &mut rng), 3000, &mut rng);
            let threaded = thread_jumps(&filter.program).expect("threads");
            let dispatched = dispatch_by_number(&threaded);
            for (name, program) in [("original", &filter.program), ("rewritten", &dispatched)] {
                let kernel = kernel_answers(program, &inputs);
                for (data, answer) in inputs.iter().zip(kernel) {
                    assert_eq!(answer, run(program, data), "{what}, {name}, {data:x?}");
                    assert_eq!(
                        answer,
                        run(&filter.program, data),
                        "{what}, {name} vs original, {data:x?}"
                    );
                }
            }
        }
        // The ENOSYS filter as installed.
        let data: Vec<SeccompData> = (0..500)
            .map(|nr| SeccompData {
                nr,
                arch: AUDIT_ARCH_X86_64,
                args: [0; 6],
            })
            .filter(|d| !UNPROBED_NUMBERS.contains(&(d.nr as u32)))
            .collect();
        for program in &errno {
            let kernel = kernel_answers(&program.instructions, &data);
            for (d, answer) in data.iter().zip(kernel) {
                assert_eq!(
                    answer,
                    run(&program.instructions, d),
                    "errno filter, {d:x?}"
                );
            }
        }
    }
}
