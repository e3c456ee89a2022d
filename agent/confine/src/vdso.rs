//! Hiding the vDSO from a freshly exec'd program, so that its libc reads clocks through real
//! syscalls, which the seccomp filter and its supervisor see.
//!
//! The vDSO answers `clock_gettime`, `gettimeofday`, `time` and `getcpu` in user space, reading the
//! kernel's timekeeping page and the TSC: seccomp never sees those calls, and the time namespace
//! only offsets the monotonic and boottime clocks, so without this the wall clock leaks into every
//! cage. `PR_SET_TSC(PR_TSC_SIGSEGV)` cannot close it either: glibc's `ld.so` and the vDSO itself
//! read the TSC, so every dynamically linked program would die (see [`crate::deny_tsc`]).
//!
//! What the kernel offers instead: a program finds the vDSO only through the `AT_SYSINFO_EHDR`
//! entry of the auxiliary vector that `execve` puts on the new stack (glibc's `ld.so`, musl, Go's
//! runtime and Rust's std all read it there), and every one of them falls back to the syscall when
//! the entry is missing. A tracer stopped at the exec therefore turns that entry's type into
//! `AT_IGNORE`, which every auxv reader skips, before the new program runs a single instruction.
//!
//! # Sequence (one exec, then detach)
//! 1. tracee (the forked child, before `execve`, and before seccomp, whose policy refuses
//!    `ptrace`): [`trace_me`].
//! 2. tracee: `execve`. Without options set, the kernel stops it with a plain `SIGTRAP` once the
//!    new image is in place (the legacy exec trap); with `PTRACE_O_TRACEEXEC` set (after a first
//!    stop with `PTRACE_SETOPTIONS`, or through `PTRACE_SEIZE`), the stop is
//!    `SIGTRAP | PTRACE_EVENT_EXEC << 8` in `waitpid`'s status.
//! 3. tracer: `waitpid(pid, __WALL)` sees that stop → [`hide_vdso_at_exec_stop`] →
//!    `PTRACE_DETACH` with signal 0 (which also swallows the legacy `SIGTRAP`).
//!
//! [`crate::hide_vdso_once`] is step 3; [`crate::follow_cage`] instead keeps tracing every process of
//! the cage and hides the vDSO at *every* exec, which a cage needs: each `execve` maps a fresh
//! vDSO and puts a fresh auxv on the new stack, so a shell script's children would otherwise read
//! the real clock again.
//!
//! # What this does not do
//! The vDSO stays mapped (`[vdso]`, `[vvar]`, `[vvar_vclock]` in `/proc/self/maps`): hostile code can
//! still find and call it, or read the timekeeping page directly. Hiding it keeps *ordinary*
//! programs (every libc, language runtime) on the syscall path; it is not a barrier against a
//! program that sets out to read the host clock (which can also `stat` a file it just wrote).
//! `/proc/<pid>/auxv` (the kernel's saved copy) still lists the entry; libc never reads it there.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use rustix::io::Errno;

/// auxv entry types (include/uapi/linux/auxvec.h).
const AT_NULL: u64 = 0;
const AT_IGNORE: u64 = 1;
const AT_SYSINFO_EHDR: u64 = 33;
/// __USER_CS, the code segment of 64-bit user mode on x86_64; a 32-bit program runs with
/// __USER32_CS (0x23) and has 4-byte auxv entries, which this walk does not read.
const USER_CS_64: u64 = 0x33;
const WORD_BYTES: u64 = 8;
/// Bytes of the new stack read per `pread` of `/proc/<pid>/mem`; a typical argc + argv + envp +
/// auxv block is well under 4 KiB.
const STACK_READ_CHUNK_BYTES: usize = 16 * 1024;
/// Most words walked up from the stack pointer: argc, the argv and envp pointer arrays with
/// their NULLs, and the auxv. Since Linux 4.13 `execve` caps the strings *and* their pointers at
/// 3/4 of _STK_LIM (6 MiB), i.e. at most 786,432 pointers; 1 Mi words leaves room for the rest.
const STACK_WORDS_MAX: u64 = 1 << 20;
/// Largest `/proc/<pid>/auxv` accepted. The kernel's saved copy is AT_VECTOR_SIZE words
/// (2 * (2 + 20 + 1 + AT_VECTOR_SIZE_ARCH) ≈ 52 on x86_64, 416 bytes).
const AUXV_FILE_BYTES_MAX: usize = 4096;

const _: () = assert!((STACK_READ_CHUNK_BYTES as u64).is_multiple_of(WORD_BYTES));
const _: () = assert!(STACK_READ_CHUNK_BYTES >= AUXV_FILE_BYTES_MAX);

/// What [`hide_vdso_at_exec_stop`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VdsoHidden {
    /// The `AT_SYSINFO_EHDR` entry at `entry_address` (on the tracee's stack) now has type
    /// `AT_IGNORE`; `vdso_address` is where the (still mapped) vDSO starts.
    Hidden {
        vdso_address: u64,
        entry_address: u64,
    },
    /// The auxv had no `AT_SYSINFO_EHDR` entry (a kernel booted with `vdso=0`): nothing to hide.
    Absent,
}

/// Why the vDSO of a stopped tracee could not be hidden. A tracer must not let such a tracee run
/// (kill it): its libc would read the real clock.
#[derive(Debug, thiserror::Error)]
pub enum VdsoError {
    #[error(
        "reading the registers of pid {pid} failed (it must be our tracee, stopped at its exec): {source}"
    )]
    Registers { pid: i32, source: Errno },
    #[error(
        "pid {pid} runs a 32-bit program (code segment {cs:#x}); only x86_64 programs can have their vDSO hidden"
    )]
    Not64Bit { pid: i32, cs: u64 },
    #[error("pid {pid}: stack pointer {rsp:#x} is not a word-aligned, non-null address")]
    StackPointer { pid: i32, rsp: u64 },
    #[error("opening /proc/{pid}/{file} failed: {source}")]
    Open {
        pid: i32,
        file: &'static str,
        source: io::Error,
    },
    #[error("reading the stack of pid {pid} at {address:#x} failed: {source}")]
    ReadStack {
        pid: i32,
        address: u64,
        source: io::Error,
    },
    #[error(
        "pid {pid}: argc/argv/envp/auxv do not end within {STACK_WORDS_MAX} words of the stack pointer {rsp:#x}"
    )]
    StackTooLarge { pid: i32, rsp: u64 },
    #[error("pid {pid}: argv[{argc}] at {address:#x} is {value:#x}, not the NULL that ends argv")]
    ArgvNotTerminated {
        pid: i32,
        argc: u64,
        address: u64,
        value: u64,
    },
    #[error("reading /proc/{pid}/auxv failed: {source}")]
    ReadAuxv { pid: i32, source: io::Error },
    #[error(
        "/proc/{pid}/auxv is malformed: {bytes_count} bytes (expected whole 16-byte entries ending with AT_NULL, at most {AUXV_FILE_BYTES_MAX} bytes)"
    )]
    AuxvMalformed { pid: i32, bytes_count: usize },
    #[error(
        "pid {pid}: auxv entry {entry} on the stack at {address:#x} differs from /proc/{pid}/auxv (the tracee is not stopped right after its exec)"
    )]
    AuxvMismatch {
        pid: i32,
        entry: usize,
        address: u64,
    },
    #[error(
        "writing AT_IGNORE over pid {pid}'s AT_SYSINFO_EHDR entry at {address:#x} failed: {source}"
    )]
    Write {
        pid: i32,
        address: u64,
        source: io::Error,
    },
    #[error("hiding the vDSO is implemented for x86_64 only")]
    UnsupportedArch,
}

/// `PTRACE_TRACEME`: makes the calling process a tracee of its parent. For the forked child of
/// the tracer, before `execve`; it must come before the seccomp filter (the cage policy refuses
/// `ptrace`). Landlock does not stand in the way (a domain only restricts tracing *out* of it,
/// and the tracer is outside every domain), but calling it first keeps the order obvious.
/// Async-signal-safe (one raw syscall), so it may run in a `pre_exec` hook.
pub fn trace_me() -> Result<(), Errno> {
    // SAFETY: PTRACE_TRACEME ignores pid, addr and data and touches no memory of ours.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_TRACEME,
            0,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(last_errno()))
    }
}

pub(crate) fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Rewrites the `AT_SYSINFO_EHDR` entry of tracee `pid`'s auxv to `AT_IGNORE`, so the program it
/// just exec'd finds no vDSO and its libc makes real clock syscalls.
///
/// `pid` must be our tracee, stopped right after `execve` replaced its image: at
/// `PTRACE_EVENT_EXEC`, or at the legacy post-exec `SIGTRAP` (see the module docs). There, `rsp`
/// points at `argc`, followed by argv, NULL, envp, NULL and the auxv pairs up to `AT_NULL`. The
/// auxv found by walking them must equal `/proc/<pid>/auxv` (the kernel's copy of what it put on
/// the stack) entry for entry, which proves the walk found the real one; anything else is an
/// error, as is a 32-bit program. The word is written through `/proc/<pid>/mem` (the stack is
/// writable, so no forced write is needed) and read back.
///
/// Race-free: `/proc/<pid>/mem` is opened *before* the registers are read, and reading them
/// succeeds only while `pid` is our stopped tracee, so the open file is that tracee's memory
/// (a pid cannot be reused while the tracee it names is alive and stopped), and after an exec
/// only the stopped thread uses that memory.
pub fn hide_vdso_at_exec_stop(pid: i32) -> Result<VdsoHidden, VdsoError> {
    let mem = OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .map_err(|source| VdsoError::Open {
            pid,
            file: "mem",
            source,
        })?;
    let (rsp, cs) = stack_pointer_and_code_segment(pid)?;
    if cs != USER_CS_64 {
        return Err(VdsoError::Not64Bit { pid, cs });
    }
    if rsp == 0 || !rsp.is_multiple_of(WORD_BYTES) {
        return Err(VdsoError::StackPointer { pid, rsp });
    }
    let saved_auxv = read_saved_auxv(pid)?;
    let mut stack = StackWords {
        pid,
        mem: &mem,
        rsp,
        chunk_first_word: 0,
        chunk: Vec::new(),
    };
    let found = locate_auxv(&mut stack, &saved_auxv)?;
    let Some(entry_address) = found.sysinfo_ehdr_type_address else {
        return Ok(VdsoHidden::Absent);
    };
    let write_error = |source| VdsoError::Write {
        pid,
        address: entry_address,
        source,
    };
    let written = mem
        .write_at(&AT_IGNORE.to_le_bytes(), entry_address)
        .map_err(write_error)?;
    let mut back = [0_u8; WORD_BYTES as usize];
    let read = mem.read_at(&mut back, entry_address).map_err(write_error)?;
    if written != back.len() || read != back.len() || u64::from_le_bytes(back) != AT_IGNORE {
        return Err(write_error(io::Error::other(
            "the word did not read back as AT_IGNORE",
        )));
    }
    Ok(VdsoHidden::Hidden {
        vdso_address: found.vdso_address,
        entry_address,
    })
}

#[cfg(target_arch = "x86_64")]
fn stack_pointer_and_code_segment(pid: i32) -> Result<(u64, u64), VdsoError> {
    crate::tracee::registers(pid)
        .map(|regs| (regs.rsp, regs.cs))
        .map_err(|source| VdsoError::Registers { pid, source })
}

#[cfg(not(target_arch = "x86_64"))]
fn stack_pointer_and_code_segment(_pid: i32) -> Result<(u64, u64), VdsoError> {
    Err(VdsoError::UnsupportedArch)
}

/// `/proc/<pid>/auxv` as (type, value) pairs, checked to be whole entries ending with `AT_NULL`.
fn read_saved_auxv(pid: i32) -> Result<Vec<(u64, u64)>, VdsoError> {
    let file = File::open(format!("/proc/{pid}/auxv")).map_err(|source| VdsoError::Open {
        pid,
        file: "auxv",
        source,
    })?;
    let mut bytes = Vec::with_capacity(AUXV_FILE_BYTES_MAX);
    // One byte more than allowed, to tell "too long" from "exactly the limit".
    file.take(AUXV_FILE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| VdsoError::ReadAuxv { pid, source })?;
    parse_auxv(&bytes).ok_or(VdsoError::AuxvMalformed {
        pid,
        bytes_count: bytes.len(),
    })
}

/// Whole 16-byte (type, value) entries, the last and only the last being `AT_NULL`.
fn parse_auxv(bytes: &[u8]) -> Option<Vec<(u64, u64)>> {
    let entry_bytes = 2 * WORD_BYTES as usize;
    if bytes.is_empty()
        || bytes.len() > AUXV_FILE_BYTES_MAX
        || !bytes.len().is_multiple_of(entry_bytes)
    {
        return None;
    }
    let entries: Vec<(u64, u64)> = bytes
        .chunks_exact(entry_bytes)
        .map(|entry| {
            let (kind, value) = entry.split_at(WORD_BYTES as usize);
            (le_word(kind), le_word(value))
        })
        .collect();
    let (last, rest) = entries.split_last()?;
    if last.0 != AT_NULL || rest.iter().any(|&(kind, _)| kind == AT_NULL) {
        return None;
    }
    Some(entries)
}

fn le_word(bytes: &[u8]) -> u64 {
    let mut word = [0_u8; WORD_BYTES as usize];
    for (to, from) in word.iter_mut().zip(bytes) {
        *to = *from;
    }
    u64::from_le_bytes(word)
}

/// Where the walk found the auxv's vDSO entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AuxvFound {
    /// Address of the `AT_SYSINFO_EHDR` entry's type word, if the auxv has one.
    sysinfo_ehdr_type_address: Option<u64>,
    vdso_address: u64,
}

/// Source of stack words by index from the stack pointer (a seam for the walk's unit tests).
trait WordSource {
    fn pid(&self) -> i32;
    fn rsp(&self) -> u64;
    fn word(&mut self, index: u64) -> Result<u64, VdsoError>;
}

/// Words of a tracee's stack, read through `/proc/<pid>/mem` in chunks.
struct StackWords<'a> {
    pid: i32,
    mem: &'a File,
    rsp: u64,
    chunk_first_word: u64,
    chunk: Vec<u8>,
}

impl WordSource for StackWords<'_> {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn rsp(&self) -> u64 {
        self.rsp
    }

    fn word(&mut self, index: u64) -> Result<u64, VdsoError> {
        let (pid, rsp) = (self.pid, self.rsp);
        let too_large = || VdsoError::StackTooLarge { pid, rsp };
        if index >= STACK_WORDS_MAX {
            return Err(too_large());
        }
        let address = word_address(rsp, index).ok_or_else(too_large)?;
        let cached = index
            .checked_sub(self.chunk_first_word)
            .and_then(|offset| usize::try_from(offset * WORD_BYTES).ok())
            .and_then(|start| self.chunk.get(start..start + WORD_BYTES as usize));
        if let Some(bytes) = cached {
            return Ok(le_word(bytes));
        }
        let mut chunk = vec![0_u8; STACK_READ_CHUNK_BYTES];
        let read =
            self.mem
                .read_at(&mut chunk, address)
                .map_err(|source| VdsoError::ReadStack {
                    pid,
                    address,
                    source,
                })?;
        // The kernel stops at the end of the stack mapping; a walk that runs off it is broken.
        let whole = read - read % WORD_BYTES as usize;
        if whole == 0 {
            return Err(VdsoError::ReadStack {
                pid,
                address,
                source: io::Error::from(io::ErrorKind::UnexpectedEof),
            });
        }
        chunk.truncate(whole);
        let word = le_word(&chunk);
        self.chunk = chunk;
        self.chunk_first_word = index;
        Ok(word)
    }
}

fn word_address(rsp: u64, index: u64) -> Option<u64> {
    index
        .checked_mul(WORD_BYTES)
        .and_then(|offset| rsp.checked_add(offset))
}

/// Walks argc, argv, envp to the auxv and checks it against the kernel's saved copy.
fn locate_auxv(
    stack: &mut dyn WordSource,
    saved_auxv: &[(u64, u64)],
) -> Result<AuxvFound, VdsoError> {
    let (pid, rsp) = (stack.pid(), stack.rsp());
    let argc = stack.word(0)?;
    // argv[argc] (word argc + 1) must be the NULL that ends argv.
    let argv_end = argc
        .checked_add(1)
        .filter(|&index| index < STACK_WORDS_MAX)
        .ok_or(VdsoError::StackTooLarge { pid, rsp })?;
    let value = stack.word(argv_end)?;
    if value != 0 {
        return Err(VdsoError::ArgvNotTerminated {
            pid,
            argc,
            address: word_address(rsp, argv_end).unwrap_or(0),
            value,
        });
    }
    let mut index = argv_end + 1;
    while stack.word(index)? != 0 {
        index += 1;
    }
    let auxv_first_word = index + 1;
    let mut found = AuxvFound {
        sysinfo_ehdr_type_address: None,
        vdso_address: 0,
    };
    for (entry, &(kind, value)) in saved_auxv.iter().enumerate() {
        let type_index = auxv_first_word + 2 * entry as u64;
        let on_stack = (stack.word(type_index)?, stack.word(type_index + 1)?);
        let address = word_address(rsp, type_index).unwrap_or(0);
        if on_stack != (kind, value) {
            return Err(VdsoError::AuxvMismatch {
                pid,
                entry,
                address,
            });
        }
        if kind == AT_SYSINFO_EHDR && found.sysinfo_ehdr_type_address.is_none() {
            found = AuxvFound {
                sysinfo_ehdr_type_address: Some(address),
                vdso_address: value,
            };
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stack image in a Vec, words from the stack pointer up.
    struct FakeStack {
        rsp: u64,
        words: Vec<u64>,
    }

    impl WordSource for FakeStack {
        fn pid(&self) -> i32 {
            4242
        }
        fn rsp(&self) -> u64 {
            self.rsp
        }
        fn word(&mut self, index: u64) -> Result<u64, VdsoError> {
            if index >= STACK_WORDS_MAX {
                return Err(VdsoError::StackTooLarge {
                    pid: 0,
                    rsp: self.rsp,
                });
            }
            usize::try_from(index)
                .ok()
                .and_then(|i| self.words.get(i).copied())
                .ok_or(VdsoError::ReadStack {
                    pid: 0,
                    address: self.rsp + index * 8,
                    source: io::Error::from(io::ErrorKind::UnexpectedEof),
                })
        }
    }

    const RSP: u64 = 0x7ffc_0000_1000;
    const VDSO: u64 = 0x7fff_f7fc_1000;

    fn auxv() -> Vec<(u64, u64)> {
        vec![
            (AT_SYSINFO_EHDR, VDSO),
            (16, 0x178b_fbff), // AT_HWCAP
            (6, 4096),         // AT_PAGESZ
            (AT_NULL, 0),
        ]
    }

    fn stack(argv: &[u64], envp: &[u64], auxv: &[(u64, u64)]) -> FakeStack {
        let mut words = vec![argv.len() as u64];
        words.extend(argv);
        words.push(0);
        words.extend(envp);
        words.push(0);
        for &(kind, value) in auxv {
            words.extend([kind, value]);
        }
        // Strings and padding above the auxv.
        words.extend([0x006f_6c6c_6568, 0]);
        FakeStack { rsp: RSP, words }
    }

    #[test]
    fn walk_finds_the_vdso_entry_after_argv_and_envp() {
        let mut fake = stack(&[0x1111, 0x2222], &[0x3333, 0x4444, 0x5555], &auxv());
        let found = locate_auxv(&mut fake, &auxv()).expect("walk");
        // argc, 2 argv, NULL, 3 envp, NULL = 8 words before the auxv.
        assert_eq!(
            found,
            AuxvFound {
                sysinfo_ehdr_type_address: Some(RSP + 8 * 8),
                vdso_address: VDSO,
            }
        );
    }

    #[test]
    fn walk_handles_empty_argv_and_envp_and_a_missing_vdso() {
        let without: Vec<(u64, u64)> = auxv()
            .into_iter()
            .filter(|&(kind, _)| kind != AT_SYSINFO_EHDR)
            .collect();
        let mut fake = stack(&[], &[], &without);
        let found = locate_auxv(&mut fake, &without).expect("walk");
        assert_eq!(found.sysinfo_ehdr_type_address, None);
        let mut fake = stack(&[], &[], &auxv());
        let found = locate_auxv(&mut fake, &auxv()).expect("walk");
        assert_eq!(found.sysinfo_ehdr_type_address, Some(RSP + 3 * 8));
    }

    #[test]
    fn walk_refuses_a_stack_that_is_not_at_an_exec() {
        // The auxv on the stack differs from the kernel's copy (e.g. the tracee already ran).
        let mut other = auxv();
        other[1].1 = 0;
        let mut fake = stack(&[0x1111], &[0x3333], &other);
        match locate_auxv(&mut fake, &auxv()) {
            Err(VdsoError::AuxvMismatch {
                entry: 1, address, ..
            }) => {
                assert_eq!(address, RSP + (5 + 2) * 8);
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
        // argv not NULL-terminated where argc says.
        let mut fake = stack(&[0x1111], &[0x3333], &auxv());
        fake.words[0] = 0; // argc 0, but argv[0] is a pointer
        assert!(matches!(
            locate_auxv(&mut fake, &auxv()),
            Err(VdsoError::ArgvNotTerminated {
                argc: 0,
                value: 0x1111,
                ..
            })
        ));
    }

    #[test]
    fn walk_is_bounded_on_garbage() {
        // A huge argc points far beyond any stack.
        let mut fake = stack(&[0x1111], &[], &auxv());
        fake.words[0] = u64::MAX;
        assert!(matches!(
            locate_auxv(&mut fake, &auxv()),
            Err(VdsoError::StackTooLarge { .. })
        ));
        fake.words[0] = STACK_WORDS_MAX - 1;
        assert!(matches!(
            locate_auxv(&mut fake, &auxv()),
            Err(VdsoError::StackTooLarge { .. })
        ));
        // envp never ends within the stack image: the read fails, no panic, no endless loop.
        let mut fake = FakeStack {
            rsp: RSP,
            words: vec![0, 0, 7, 7, 7],
        };
        assert!(matches!(
            locate_auxv(&mut fake, &auxv()),
            Err(VdsoError::ReadStack { .. })
        ));
    }

    #[test]
    fn saved_auxv_parsing_checks_shape() {
        let mut bytes = Vec::new();
        for (kind, value) in auxv() {
            bytes.extend(kind.to_le_bytes());
            bytes.extend(value.to_le_bytes());
        }
        assert_eq!(parse_auxv(&bytes), Some(auxv()));
        assert_eq!(parse_auxv(&bytes[..bytes.len() - 1]), None);
        assert_eq!(parse_auxv(&bytes[..bytes.len() - 16]), None, "no AT_NULL");
        assert_eq!(parse_auxv(&[]), None);
        let mut early_null = vec![0_u8; 16];
        early_null.extend(&bytes);
        assert_eq!(parse_auxv(&early_null), None);
        assert_eq!(parse_auxv(&vec![0_u8; AUXV_FILE_BYTES_MAX + 16]), None);
    }
}
