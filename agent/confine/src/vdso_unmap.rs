//! Unmapping the vDSO and its data pages from a tracee stopped at its exec, so that no code in a
//! cage can reach the host's clock through them.
//!
//! Hiding the `AT_SYSINFO_EHDR` entry ([`crate::vdso`]) keeps every libc and language runtime on
//! the syscall path, but leaves `[vvar]`, `[vvar_vclock]` and `[vdso]` mapped: a program that
//! looks for them in `/proc/self/maps` can call the vDSO's `clock_gettime` or read the
//! timekeeping page directly (`CLOCK_REALTIME_COARSE` needs no TSC at all) and learn the host's
//! wall clock. The kernel has no way for a tracer to unmap memory of another process, so the
//! tracer makes the tracee do it: at the exec stop, before the new program runs one instruction,
//! the tracee's registers are pointed at a `syscall` instruction inside its own vDSO with
//! `munmap(start, length)` loaded, it is single-stepped over that one instruction, and its
//! registers are put back (the compel/CRIU way of running a call in a tracee).
//!
//! Nothing a program needs is lost: with `AT_SYSINFO_EHDR` hidden no libc calls into the vDSO,
//! and on x86_64 a signal handler returns through the `SA_RESTORER` trampoline libc registers
//! (the kernel refuses a 64-bit handler without one), not through the vDSO. The cage's seccomp
//! policy refuses `arch_prctl(ARCH_MAP_VDSO_*)`, the one call that would map it again.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use rustix::io::Errno;

use crate::vdso::{VdsoError, last_errno};

/// The kernel's names of the vDSO's mappings in `/proc/<pid>/maps` (`[vvar_vclock]` since 6.13).
const VDSO_MAPPING_NAMES: [&str; 3] = ["[vvar]", "[vvar_vclock]", "[vdso]"];
/// The name of the mapping that holds the vDSO's code (and so a `syscall` instruction).
const VDSO_CODE_NAME: &str = "[vdso]";
/// `syscall` on x86_64.
const SYSCALL_INSTRUCTION: [u8; 2] = [0x0f, 0x05];
/// Largest `/proc/<pid>/maps` read at an exec stop. A freshly exec'd program has its image, its
/// interpreter, the stack and the vDSO: a few dozen lines.
const MAPS_BYTES_MAX: u64 = 256 * 1024;
/// Largest vDSO code mapping searched for the `syscall` instruction (it is two pages today).
const VDSO_CODE_BYTES_MAX: u64 = 64 * 1024;
/// Stops one injected call may take: a signal pending at the exec is reported (and held back)
/// before the tracee reaches the instruction; more than a few means something else is wrong.
const INJECT_STOPS_MAX: usize = 8;

/// How an unmapping at an exec stop ended (see [`unmap_vdso_at_exec_stop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VdsoUnmapped {
    /// The mappings are gone (`bytes` in all; 0 when there were none), the registers are back
    /// as they were. Resume the tracee with `signal` (0: none): a signal that arrived before the
    /// injected call ran and was held back, to be delivered now as if it had been pending.
    Resume { bytes: u64, signal: i32 },
    /// The tracee ended meanwhile (SIGKILL); its raw wait status, which this call reaped.
    Gone { wait_status: i32 },
}

/// Which stop a tracee is in after its exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecStop {
    /// `PTRACE_EVENT_EXEC`: still inside `execve`, whose return value the kernel writes into rax
    /// after this stop, over anything the tracer puts there.
    Event,
    /// The legacy `SIGTRAP` of a tracee without `PTRACE_O_TRACEEXEC`: a signal-delivery-stop
    /// after `execve` returned.
    Trap,
}

/// Removes `[vvar]`, `[vvar_vclock]` and `[vdso]` from `pid`, a 64-bit tracee stopped right
/// after its exec (`stop` says which stop), by running `munmap` in it. On an error the tracee
/// may be anywhere in the injected call: the caller must kill it.
#[cfg(target_arch = "x86_64")]
pub fn unmap_vdso_at_exec_stop(pid: i32, stop: ExecStop) -> Result<VdsoUnmapped, VdsoError> {
    let spans = vdso_spans(pid)?;
    let Some(code) = spans.code else {
        if spans.ranges.is_empty() {
            return Ok(VdsoUnmapped::Resume {
                bytes: 0,
                signal: 0,
            });
        }
        return Err(VdsoError::NoSyscallInstruction { pid, vdso_start: 0 });
    };
    let syscall_address = find_syscall_instruction(pid, code)?;
    if stop == ExecStop::Event {
        // On to the syscall-exit-stop of execve, where rax is settled and may be set.
        if let Some(wait_status) = run_to_exec_exit(pid)? {
            return Ok(VdsoUnmapped::Gone { wait_status });
        }
    }
    let saved =
        crate::tracee::registers(pid).map_err(|source| VdsoError::Registers { pid, source })?;
    let mut held_signal = 0;
    let mut bytes = 0;
    // The span holding the vDSO's code goes last: its `syscall` runs every call.
    let mut ordered: Vec<(u64, u64)> = spans
        .ranges
        .iter()
        .copied()
        .filter(|&(start, end)| !(start <= code.0 && code.1 <= end))
        .collect();
    ordered.extend(
        spans
            .ranges
            .iter()
            .copied()
            .filter(|&(start, end)| start <= code.0 && code.1 <= end),
    );
    for (start, end) in ordered {
        let mut regs = saved;
        regs.rax = libc::SYS_munmap as u64;
        regs.rdi = start;
        regs.rsi = end - start;
        regs.rip = syscall_address;
        // Not in a syscall: the kernel must not try to restart anything on the way out.
        regs.orig_rax = u64::MAX;
        crate::tracee::set_registers(pid, &regs)
            .map_err(|source| VdsoError::Registers { pid, source })?;
        match step_over_syscall(pid, syscall_address, &mut held_signal)? {
            Stepped::Returned(0) => bytes += end - start,
            Stepped::Returned(value) => {
                return Err(VdsoError::UnmapRefused {
                    pid,
                    start,
                    length: end - start,
                    errno: -(value as i64),
                });
            }
            Stepped::Gone(wait_status) => return Ok(VdsoUnmapped::Gone { wait_status }),
        }
    }
    crate::tracee::set_registers(pid, &saved)
        .map_err(|source| VdsoError::Registers { pid, source })?;
    Ok(VdsoUnmapped::Resume {
        bytes,
        signal: held_signal,
    })
}

#[cfg(not(target_arch = "x86_64"))]
pub fn unmap_vdso_at_exec_stop(_pid: i32, _stop: ExecStop) -> Result<VdsoUnmapped, VdsoError> {
    Err(VdsoError::UnsupportedArch)
}

/// `PTRACE_SYSCALL` from the exec event stop to the syscall-exit-stop of the same `execve` (the
/// next stop: a pending signal is only delivered on the way back to user mode, after it). Some
/// wait status when the tracee ended instead.
#[cfg(target_arch = "x86_64")]
fn run_to_exec_exit(pid: i32) -> Result<Option<i32>, VdsoError> {
    let before =
        crate::tracee::registers(pid).map_err(|source| VdsoError::Registers { pid, source })?;
    // SAFETY: PTRACE_SYSCALL on our stopped tracee; addr and data (signal 0) are plain integers.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SYSCALL,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if rc != 0 {
        return Err(VdsoError::Inject {
            pid,
            step: "PTRACE_SYSCALL",
            source: Errno::from_raw_os_error(last_errno()),
        });
    }
    let status = wait_for(pid)?;
    if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
        return Ok(Some(status));
    }
    let regs =
        crate::tracee::registers(pid).map_err(|source| VdsoError::Registers { pid, source })?;
    let at_exec_exit = libc::WIFSTOPPED(status)
        && libc::WSTOPSIG(status) == libc::SIGTRAP
        && (status >> 16) == 0
        && regs.orig_rax == before.orig_rax
        && regs.rip == before.rip;
    if !at_exec_exit {
        return Err(VdsoError::Inject {
            pid,
            step: "reaching the syscall-exit-stop of execve",
            source: Errno::INVAL,
        });
    }
    Ok(None)
}

enum Stepped {
    /// The call ran; rax after it.
    Returned(u64),
    Gone(i32),
}

/// Single-steps `pid` until it has executed the `syscall` at `at`. A signal-delivery-stop on
/// the way (a signal pending at the exec) is held back in `held_signal` (the first one) and
/// stepped past, to be delivered once the registers are restored.
#[cfg(target_arch = "x86_64")]
fn step_over_syscall(pid: i32, at: u64, held_signal: &mut i32) -> Result<Stepped, VdsoError> {
    for _ in 0..INJECT_STOPS_MAX {
        // SAFETY: PTRACE_SINGLESTEP on our stopped tracee; addr and data (signal 0) are plain
        // integers.
        let rc = unsafe {
            libc::ptrace(
                libc::PTRACE_SINGLESTEP,
                pid,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            )
        };
        if rc != 0 {
            return Err(VdsoError::Inject {
                pid,
                step: "PTRACE_SINGLESTEP",
                source: Errno::from_raw_os_error(last_errno()),
            });
        }
        let status = wait_for(pid)?;
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return Ok(Stepped::Gone(status));
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        let signal = libc::WSTOPSIG(status);
        let regs =
            crate::tracee::registers(pid).map_err(|source| VdsoError::Registers { pid, source })?;
        if signal == libc::SIGTRAP && regs.rip == at + SYSCALL_INSTRUCTION.len() as u64 {
            return Ok(Stepped::Returned(regs.rax));
        }
        if (status >> 16) == 0 && *held_signal == 0 && signal != libc::SIGTRAP {
            *held_signal = signal;
        }
    }
    Err(VdsoError::InjectStops {
        pid,
        stops: INJECT_STOPS_MAX,
    })
}

#[cfg(target_arch = "x86_64")]
fn wait_for(pid: i32) -> Result<i32, VdsoError> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes one int to `status`, which outlives the call.
        let waited = unsafe { libc::waitpid(pid, &raw mut status, libc::__WALL) };
        if waited == pid {
            return Ok(status);
        }
        let errno = last_errno();
        if waited < 0 && errno == libc::EINTR {
            continue;
        }
        return Err(VdsoError::Inject {
            pid,
            step: "waitpid",
            source: Errno::from_raw_os_error(errno),
        });
    }
}

/// The vDSO's mappings of `pid`, merged where adjacent, and the one with its code.
struct VdsoSpans {
    ranges: Vec<(u64, u64)>,
    code: Option<(u64, u64)>,
}

fn vdso_spans(pid: i32) -> Result<VdsoSpans, VdsoError> {
    let open_error = |source| VdsoError::Open {
        pid,
        file: "maps",
        source,
    };
    let mut text = String::new();
    File::open(format!("/proc/{pid}/maps"))
        .map_err(open_error)?
        .take(MAPS_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(|source| VdsoError::ReadMaps { pid, source })?;
    Ok(parse_vdso_spans(&text))
}

/// The vDSO's mappings in a `/proc/<pid>/maps` text, adjacent ones merged (one munmap each).
fn parse_vdso_spans(maps: &str) -> VdsoSpans {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    let mut code = None;
    for line in maps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(name)) = (fields.next(), fields.nth(4)) else {
            continue;
        };
        if !VDSO_MAPPING_NAMES.contains(&name) {
            continue;
        }
        let Some((start, end)) = range.split_once('-').and_then(|(start, end)| {
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            ))
        }) else {
            continue;
        };
        if end <= start {
            continue;
        }
        if name == VDSO_CODE_NAME {
            code = Some((start, end));
        }
        ranges.push((start, end));
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => merged.push((start, end)),
        }
    }
    VdsoSpans {
        ranges: merged,
        code,
    }
}

/// The address of a `syscall` instruction in the vDSO's code (its fallback paths have several).
fn find_syscall_instruction(pid: i32, (start, end): (u64, u64)) -> Result<u64, VdsoError> {
    let mem = File::open(format!("/proc/{pid}/mem")).map_err(|source| VdsoError::Open {
        pid,
        file: "mem",
        source,
    })?;
    let len = (end - start).min(VDSO_CODE_BYTES_MAX) as usize;
    let mut code = vec![0_u8; len];
    let read = mem
        .read_at(&mut code, start)
        .map_err(|source| VdsoError::ReadVdso {
            pid,
            address: start,
            source,
        })?;
    code.truncate(read);
    code.windows(SYSCALL_INSTRUCTION.len())
        .position(|w| w == SYSCALL_INSTRUCTION)
        .map(|offset| start + offset as u64)
        .ok_or(VdsoError::NoSyscallInstruction {
            pid,
            vdso_start: start,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacent_vdso_mappings_merge_into_one_span_and_others_are_ignored() {
        let maps = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 08:01 1234 /usr/bin/true
7ffd1e5f0000-7ffd1e611000 rw-p 00000000 00:00 0                          [stack]
7f7726b8b000-7f7726b8f000 r--p 00000000 00:00 0                          [vvar]
7f7726b8f000-7f7726b91000 r--p 00000000 00:00 0                          [vvar_vclock]
7f7726b91000-7f7726b93000 r-xp 00000000 00:00 0                          [vdso]
7f7726c00000-7f7726c01000 r--p 00000000 00:00 0                          [vdso_not]
";
        let spans = parse_vdso_spans(maps);
        assert_eq!(spans.ranges, vec![(0x7f7726b8b000, 0x7f7726b93000)]);
        assert_eq!(spans.code, Some((0x7f7726b91000, 0x7f7726b93000)));
    }

    #[test]
    fn apart_mappings_stay_apart_and_a_missing_vdso_is_none() {
        let maps = "\
7f0000000000-7f0000004000 r--p 00000000 00:00 0 [vvar]
7f0000010000-7f0000012000 r-xp 00000000 00:00 0 [vdso]
garbage line
zz-yy r--p 00000000 00:00 0 [vvar]
";
        let spans = parse_vdso_spans(maps);
        assert_eq!(
            spans.ranges,
            vec![
                (0x7f0000000000, 0x7f0000004000),
                (0x7f0000010000, 0x7f0000012000)
            ]
        );
        let none = parse_vdso_spans("7f0000000000-7f0000004000 r--p 00000000 00:00 0 [heap]\n");
        assert!(none.ranges.is_empty() && none.code.is_none());
    }
}
