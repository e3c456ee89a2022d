//! The cage's virtual time-stamp counter: with `PR_SET_TSC(PR_TSC_SIGSEGV)` ([`crate::deny_tsc`])
//! every `rdtsc`/`rdtscp` in the cage faults, and the tracer ([`crate::follow_cage`]) answers it
//! from a counter that depends only on the logical time and on how many reads came before.
//!
//! Why emulate rather than just deny: glibc's dynamic loader executes `rdtsc` while it starts
//! every program (`_dl_start`), so a plain denial kills every dynamically linked workload before
//! `main`. Answered by the tracer, the loader starts, and the one clock the time namespace does
//! not virtualize reads the same values in every run of the same workload.
//!
//! How a read is recognized (x86_64 only): the fault of an `rdtsc` under `PR_TSC_SIGSEGV` is a
//! general-protection fault, which the kernel reports as a `SIGSEGV` with `si_code == SI_KERNEL`.
//! The tracer sees it at the signal-delivery-stop, checks that the tracee runs 64-bit code and
//! that the bytes at `rip` are `0f 31` (rdtsc) or `0f 01 f9` (rdtscp), writes the virtual value to
//! `edx:eax` (and `ecx`, the TSC_AUX of rdtscp, = 0: "CPU 0"), steps `rip` over the instruction
//! and suppresses the signal. Any other `SIGSEGV` (a real fault, a `kill`, a privileged
//! instruction) is delivered untouched.
//!
//! The cost is one ptrace round trip per read (tens of µs), paid by programs that read the TSC
//! in a loop; ordinary programs read it once or twice at start-up (the vDSO, which would read it
//! on every clock call, is hidden at every exec).

use rustix::io::Errno;

use crate::tracee::signal_info;
#[cfg(target_arch = "x86_64")]
use crate::tracee::{registers, set_registers};
use crate::vdso::last_errno;

/// Virtual ticks a read advances the counter by: 1 µs of a 1 GHz counter, so a program that
/// times a loop with `rdtsc` sees time pass, the same amount in every run.
pub const VIRTUAL_TSC_STEP_TICKS: u64 = 1_000;

/// `si_code` of a signal the kernel raised itself (a general-protection fault, here).
const SI_KERNEL: i32 = 0x80;
/// __USER_CS, the code segment of 64-bit user mode on x86_64.
#[cfg(target_arch = "x86_64")]
const USER_CS_64: u64 = 0x33;
/// `rdtsc` is `0f 31`; `rdtscp` is `0f 01 f9`.
const RDTSC_OPCODE: [u8; 2] = [0x0f, 0x31];
const RDTSCP_OPCODE: [u8; 3] = [0x0f, 0x01, 0xf9];

/// The counter a cage's `rdtsc` reads: read `n` (from 0, across every process of the cage in
/// the order the tracer sees them) returns `start_ticks + n * step_ticks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualTsc {
    pub start_ticks: u64,
    pub step_ticks: u64,
}

impl VirtualTsc {
    /// A 1 GHz counter that reads `logical_time_ns` first (the cage's monotonic clock starts
    /// there too) and advances [`VIRTUAL_TSC_STEP_TICKS`] per read.
    pub fn from_logical_time(logical_time_ns: u64) -> Self {
        Self {
            start_ticks: logical_time_ns,
            step_ticks: VIRTUAL_TSC_STEP_TICKS,
        }
    }

    /// The value of read number `read_index` (wrapping like the 64-bit hardware counter).
    pub fn value(&self, read_index: u64) -> u64 {
        self.start_ticks
            .wrapping_add(read_index.wrapping_mul(self.step_ticks))
    }
}

/// Which counter-reading instruction sits at the start of `code`, and its length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TscInstruction {
    Rdtsc,
    Rdtscp,
}

impl TscInstruction {
    pub(crate) fn decode(code: &[u8]) -> Option<Self> {
        if code.starts_with(&RDTSCP_OPCODE) {
            Some(Self::Rdtscp)
        } else if code.starts_with(&RDTSC_OPCODE) {
            Some(Self::Rdtsc)
        } else {
            None
        }
    }

    fn len_bytes(self) -> u64 {
        match self {
            Self::Rdtsc => RDTSC_OPCODE.len() as u64,
            Self::Rdtscp => RDTSCP_OPCODE.len() as u64,
        }
    }
}

/// At a `SIGSEGV` signal-delivery-stop of tracee `pid`: if the fault is a denied TSC read,
/// answers it with `value` and returns `Ok(true)` (resume the tracee with signal 0); `Ok(false)`
/// when it is any other `SIGSEGV` (deliver it). `Err` when the tracee's state cannot be read or
/// written (ESRCH: it was killed meanwhile).
pub(crate) fn emulate_tsc_read(pid: i32, value: u64) -> Result<bool, Errno> {
    if signal_info(pid)?.si_code != SI_KERNEL {
        return Ok(false);
    }
    emulate_at_rip(pid, value)
}

#[cfg(target_arch = "x86_64")]
fn emulate_at_rip(pid: i32, value: u64) -> Result<bool, Errno> {
    let mut regs = registers(pid)?;
    if regs.cs != USER_CS_64 {
        return Ok(false);
    }
    let Some(code) = code_at(pid, regs.rip) else {
        return Ok(false);
    };
    let Some(instruction) = TscInstruction::decode(&code) else {
        return Ok(false);
    };
    // The hardware writes the low halves and zeroes the upper halves of rax and rdx (and rcx).
    regs.rax = value & 0xffff_ffff;
    regs.rdx = value >> 32;
    if instruction == TscInstruction::Rdtscp {
        regs.rcx = 0;
    }
    regs.rip = regs.rip.wrapping_add(instruction.len_bytes());
    set_registers(pid, &regs)?;
    Ok(true)
}

#[cfg(not(target_arch = "x86_64"))]
fn emulate_at_rip(_pid: i32, _value: u64) -> Result<bool, Errno> {
    Ok(false)
}

/// Up to 3 bytes at `rip` (the longest instruction recognized). PEEKTEXT reads whole words, and
/// the word at `rip` crosses into the next page when the instruction ends a mapping; then the
/// words ending 3 and 2 bytes past `rip` are tried. `None` when none can be read: no TSC read can
/// be proven, and the signal is delivered.
#[cfg(target_arch = "x86_64")]
fn code_at(pid: i32, rip: u64) -> Option<Vec<u8>> {
    const WORD_BYTES: usize = std::mem::size_of::<u64>();
    let attempts = [
        (0, RDTSCP_OPCODE.len()),
        (WORD_BYTES - RDTSCP_OPCODE.len(), RDTSCP_OPCODE.len()),
        (WORD_BYTES - RDTSC_OPCODE.len(), RDTSC_OPCODE.len()),
    ];
    attempts.into_iter().find_map(|(back_bytes, wanted_bytes)| {
        let word = peek_text(pid, rip.checked_sub(back_bytes as u64)?).ok()?;
        Some(word.to_le_bytes()[back_bytes..back_bytes + wanted_bytes].to_vec())
    })
}

/// One word of the tracee's memory at `address` (`PTRACE_PEEKTEXT`, whose result is the return
/// value: a word that happens to be -1 is told from an error by errno).
#[cfg(target_arch = "x86_64")]
fn peek_text(pid: i32, address: u64) -> Result<u64, Errno> {
    // SAFETY: errno is thread-local; clearing it lets a -1 result be told from an error.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: PTRACE_PEEKTEXT reads the tracee's memory, not ours; data is unused.
    let word = unsafe {
        libc::ptrace(
            libc::PTRACE_PEEKTEXT,
            pid,
            address as *mut libc::c_void,
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if word == -1 {
        let errno = last_errno();
        if errno != 0 {
            return Err(Errno::from_raw_os_error(errno));
        }
    }
    Ok(word as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_only_the_two_counter_reads() {
        assert_eq!(
            TscInstruction::decode(&[0x0f, 0x31, 0x90, 0x90]),
            Some(TscInstruction::Rdtsc)
        );
        assert_eq!(
            TscInstruction::decode(&[0x0f, 0x01, 0xf9, 0x90]),
            Some(TscInstruction::Rdtscp)
        );
        // rdpid (f3 0f c7 f8), cpuid (0f a2), rdpmc (0f 33), a lone 0f, nothing.
        for code in [
            &[0xf3, 0x0f, 0xc7, 0xf8][..],
            &[0x0f, 0xa2],
            &[0x0f, 0x33],
            &[0x0f],
            &[],
            &[0x0f, 0x01, 0xf8],
        ] {
            assert_eq!(TscInstruction::decode(code), None, "{code:02x?}");
        }
        assert_eq!(TscInstruction::Rdtsc.len_bytes(), 2);
        assert_eq!(TscInstruction::Rdtscp.len_bytes(), 3);
    }

    #[test]
    fn the_counter_starts_at_the_logical_time_and_steps_per_read() {
        let tsc = VirtualTsc::from_logical_time(5_000_000_000);
        assert_eq!(tsc.value(0), 5_000_000_000);
        assert_eq!(tsc.value(1), 5_000_000_000 + VIRTUAL_TSC_STEP_TICKS);
        assert_eq!(
            VirtualTsc {
                start_ticks: u64::MAX,
                step_ticks: 2
            }
            .value(1),
            1
        );
    }
}
