//! The virtual wall clock: the supervisor answers the cage's wall-clock reads from a logical
//! clock instead of the host's.
//!
//! Which calls arrive here is the policy's doing (policy/seccomp.yaml): `clock_gettime` on
//! CLOCK_REALTIME (0), CLOCK_REALTIME_COARSE (5) and CLOCK_TAI (11), `gettimeofday` and `time`.
//! They reach the supervisor only if the program makes the syscall, i.e. if its vDSO is hidden
//! (`metanode_confine::follow_cage` does that at every exec); the monotonic clocks stay native
//! and are offset by the time namespace.
//!
//! The logical clock: the k-th wall-clock read of the run (k = 0, 1, 2, ... counted over every
//! process and thread of the cage, in the order the supervisor receives them) returns
//! `logical_time_ns + k * step_ns`. It never consults a host clock, so a run whose reads happen in
//! the same order sees exactly the same times; time advances by `step_ns` per read so that
//! "until the clock passes X" loops end and durations are non-zero. Concurrent reads from
//! several threads are served in arrival order, which the scheduler decides: such a workload
//! sees the same *set* of values but possibly in a different assignment.
//!
//! Not served (left to the caller of [`WallClock::handle`], i.e. reported and refused):
//! CLOCK_REALTIME_ALARM and CLOCK_BOOTTIME_ALARM (they need an RTC device and answer EINVAL on
//! hosts without one, so a native answer would differ between hosts), any other clock id the
//! policy did not allow, and every call through a non-native ABI.

use std::os::fd::OwnedFd;

use crate::memory::{CallerMemory, MemoryError};
use crate::supervise::{Notification, Reply, SuperviseError, Violation, supervise_with};

/// Default advance of the logical clock per read: 1 ms, so a program waiting for the clock to
/// pass a deadline needs (deadline / 1 ms) reads, not millions.
pub const WALL_CLOCK_STEP_NS_DEFAULT: u64 = 1_000_000;
/// TAI − UTC in seconds since 2017-01-01 (37 s; no leap second has been announced since).
pub const TAI_OFFSET_S_DEFAULT: u64 = 37;
const NS_PER_S: u64 = 1_000_000_000;
const NS_PER_US: u64 = 1_000;

// Clock ids (include/uapi/linux/time.h).
const CLOCK_REALTIME: i32 = 0;
const CLOCK_REALTIME_COARSE: i32 = 5;
const CLOCK_TAI: i32 = 11;

/// The logical wall clock and its bookkeeping. Construct with [`WallClock::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WallClock {
    /// What the first read returns, in ns since the Unix epoch (UTC): the run header's
    /// `logical_time_ns`.
    pub logical_time_ns: u64,
    /// How far the clock advances per read.
    pub step_ns: u64,
    /// Added to UTC for CLOCK_TAI.
    pub tai_offset_s: u64,
    reads_count: u64,
    failures_count: u64,
    first_failure: Option<ClockFailure>,
}

/// A wall-clock read the supervisor could not serve because it could not reach the caller's
/// memory (a setup problem such as missing ptrace permission); the call was reported and refused
/// instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockFailure {
    pub pid: u32,
    pub syscall_name: &'static str,
    pub message: String,
}

impl WallClock {
    /// A clock whose first read returns `logical_time_ns`, advancing by
    /// [`WALL_CLOCK_STEP_NS_DEFAULT`] per read, with CLOCK_TAI [`TAI_OFFSET_S_DEFAULT`] ahead.
    pub fn new(logical_time_ns: u64) -> WallClock {
        WallClock {
            logical_time_ns,
            step_ns: WALL_CLOCK_STEP_NS_DEFAULT,
            tai_offset_s: TAI_OFFSET_S_DEFAULT,
            reads_count: 0,
            failures_count: 0,
            first_failure: None,
        }
    }

    /// Wall-clock reads served so far (k of the next read).
    pub fn reads_count(&self) -> u64 {
        self.reads_count
    }

    /// Reads that could not be served (see [`ClockFailure`]).
    pub fn failures_count(&self) -> u64 {
        self.failures_count
    }

    /// The first of those failures.
    pub fn first_failure(&self) -> Option<&ClockFailure> {
        self.first_failure.as_ref()
    }

    /// The UTC time in ns that read number `k` returns (saturating at u64::MAX, year 2554).
    pub fn time_of_read_ns(&self, k: u64) -> u64 {
        self.logical_time_ns
            .saturating_add(k.saturating_mul(self.step_ns))
    }

    /// DockLock's answer to any notification: a wall-clock read is answered by
    /// [`WallClock::handle`]; everything else (and a read that could not be served) is reported
    /// through `on_violation` and refused with EPERM. The handler of
    /// [`supervise_with_wall_clock`], and of a caller driving [`crate::answer_ready`] itself.
    pub fn answer_or_refuse(
        &mut self,
        notification: &Notification<'_>,
        on_violation: &mut dyn FnMut(Violation),
    ) -> Reply {
        self.handle(notification).unwrap_or_else(|| {
            on_violation(notification.violation());
            Reply::Deny(libc::EPERM)
        })
    }

    /// Answers `notification` if it is a wall-clock read, writing the result into the caller's
    /// memory; `None` for anything else, which the caller reports as a violation and refuses.
    pub fn handle(&mut self, notification: &Notification<'_>) -> Option<Reply> {
        let mut memory = notification.caller_memory();
        self.handle_in(notification, &mut memory)
    }

    /// [`WallClock::handle`] with the caller's memory supplied (a fake one in tests).
    ///
    /// Each served read takes the next logical time, even if writing it fails (a bad pointer
    /// gives EFAULT, as the kernel would); a `gettimeofday` with both pointers null reads
    /// nothing. Arguments are read as the kernel reads them: the clock id as a 32-bit int.
    pub fn handle_in(
        &mut self,
        notification: &Notification<'_>,
        memory: &mut dyn CallerMemory,
    ) -> Option<Reply> {
        let nr = notification.native_syscall_nr()?;
        let args = notification.args;
        let result = match nr {
            libc::SYS_clock_gettime => {
                let extra_s = match args[0] as u32 as i32 {
                    CLOCK_REALTIME | CLOCK_REALTIME_COARSE => 0,
                    CLOCK_TAI => self.tai_offset_s,
                    _ => return None,
                };
                let now_ns = self.next_read_ns();
                let now_ns = now_ns.saturating_add(extra_s.saturating_mul(NS_PER_S));
                memory
                    .write(args[1], &timespec_bytes(now_ns))
                    .map(|()| Reply::Return(0))
            }
            libc::SYS_gettimeofday => self.gettimeofday(args[0], args[1], memory),
            libc::SYS_time => {
                let seconds = seconds_of(self.next_read_ns());
                let written = if args[0] == 0 {
                    Ok(())
                } else {
                    memory.write(args[0], &seconds.to_le_bytes())
                };
                written.map(|()| Reply::Return(seconds))
            }
            _ => return None,
        };
        match result {
            Ok(reply) => Some(reply),
            Err(MemoryError::Fault { .. }) => Some(Reply::Deny(libc::EFAULT)),
            // Nobody is waiting for the answer any more; it is dropped.
            Err(MemoryError::Gone) => Some(Reply::Deny(libc::EFAULT)),
            Err(error @ MemoryError::Unavailable { .. }) => {
                self.failures_count += 1;
                if self.first_failure.is_none() {
                    self.first_failure = Some(ClockFailure {
                        pid: notification.pid,
                        syscall_name: notification.syscall_name(),
                        message: error.to_string(),
                    });
                }
                None
            }
        }
    }

    fn gettimeofday(
        &mut self,
        timeval_address: u64,
        timezone_address: u64,
        memory: &mut dyn CallerMemory,
    ) -> Result<Reply, MemoryError> {
        if timeval_address != 0 {
            let now_ns = self.next_read_ns();
            let mut timeval = [0_u8; 16];
            let (seconds, rest) = timeval.split_at_mut(8);
            seconds.copy_from_slice(&seconds_of(now_ns).to_le_bytes());
            rest.copy_from_slice(&((now_ns % NS_PER_S / NS_PER_US) as i64).to_le_bytes());
            memory.write(timeval_address, &timeval)?;
        }
        if timezone_address != 0 {
            // struct timezone {int tz_minuteswest; int tz_dsttime}: the cage runs in UTC.
            memory.write(timezone_address, &[0_u8; 8])?;
        }
        Ok(Reply::Return(0))
    }

    fn next_read_ns(&mut self) -> u64 {
        let now_ns = self.time_of_read_ns(self.reads_count);
        self.reads_count += 1;
        now_ns
    }
}

fn seconds_of(ns: u64) -> i64 {
    // u64::MAX / 1e9 ≈ 1.8e10 fits in i64.
    (ns / NS_PER_S) as i64
}

/// struct timespec {time_t tv_sec; long tv_nsec} on x86_64.
fn timespec_bytes(ns: u64) -> [u8; 16] {
    let mut bytes = [0_u8; 16];
    let (seconds, nanoseconds) = bytes.split_at_mut(8);
    seconds.copy_from_slice(&seconds_of(ns).to_le_bytes());
    nanoseconds.copy_from_slice(&((ns % NS_PER_S) as i64).to_le_bytes());
    bytes
}

/// DockLock's supervisor: wall-clock reads are answered by `clock`; every other notification is
/// reported through `on_violation` and refused with EPERM, as [`crate::supervise`] does. A read
/// that `clock` could not serve is reported and refused too (and counted in
/// [`WallClock::failures_count`]).
pub fn supervise_with_wall_clock(
    listener: OwnedFd,
    clock: &mut WallClock,
    on_violation: &mut dyn FnMut(Violation),
) -> Result<(), SuperviseError> {
    supervise_with(listener, &mut |notification| {
        clock.answer_or_refuse(notification, on_violation)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT};

    const LOGICAL_NS: u64 = 1_700_000_000_000_000_000;
    /// Where the fake caller's one writable buffer lives.
    const BUFFER_ADDRESS: u64 = 0x7ffc_0000_1000;
    const BUFFER_BYTES: usize = 64;

    /// One writable buffer; everything else faults. Can pretend the caller is gone or the
    /// supervisor lacks access.
    struct FakeMemory {
        buffer: [u8; BUFFER_BYTES],
        writes: Vec<(u64, usize)>,
        gone: bool,
        unavailable: bool,
    }

    impl FakeMemory {
        fn new() -> FakeMemory {
            FakeMemory {
                buffer: [0xaa; BUFFER_BYTES],
                writes: Vec::new(),
                gone: false,
                unavailable: false,
            }
        }

        fn word(&self, offset: usize) -> i64 {
            let mut bytes = [0_u8; 8];
            bytes.copy_from_slice(&self.buffer[offset..offset + 8]);
            i64::from_le_bytes(bytes)
        }

        fn int(&self, offset: usize) -> i32 {
            let mut bytes = [0_u8; 4];
            bytes.copy_from_slice(&self.buffer[offset..offset + 4]);
            i32::from_le_bytes(bytes)
        }
    }

    impl CallerMemory for FakeMemory {
        fn write(&mut self, address: u64, bytes: &[u8]) -> Result<(), MemoryError> {
            if self.gone {
                return Err(MemoryError::Gone);
            }
            if self.unavailable {
                return Err(MemoryError::Unavailable {
                    pid: 42,
                    what: "opening /proc/<pid>/mem",
                    source: std::io::Error::from_raw_os_error(libc::EACCES),
                });
            }
            let offset = address
                .checked_sub(BUFFER_ADDRESS)
                .and_then(|o| usize::try_from(o).ok())
                .filter(|&o| o + bytes.len() <= BUFFER_BYTES)
                .ok_or(MemoryError::Fault {
                    address,
                    len: bytes.len(),
                })?;
            self.buffer[offset..offset + bytes.len()].copy_from_slice(bytes);
            self.writes.push((address, bytes.len()));
            Ok(())
        }
    }

    fn call(nr: i64, args: [u64; 6]) -> Notification<'static> {
        Notification::detached(1, 42, AUDIT_ARCH_X86_64, nr as i32, args)
    }

    fn clock_gettime(clock: u64, address: u64) -> Notification<'static> {
        call(libc::SYS_clock_gettime, [clock, address, 0, 0, 0, 0])
    }

    #[test]
    fn realtime_reads_follow_the_logical_clock_exactly() {
        let mut clock = WallClock::new(LOGICAL_NS);
        let mut memory = FakeMemory::new();
        for k in 0..3_i64 {
            let reply = clock.handle_in(&clock_gettime(0, BUFFER_ADDRESS), &mut memory);
            assert_eq!(reply, Some(Reply::Return(0)));
            assert_eq!(memory.word(0), 1_700_000_000, "tv_sec of read {k}");
            assert_eq!(memory.word(8), k * 1_000_000, "tv_nsec of read {k}");
        }
        assert_eq!(clock.reads_count(), 3);
        assert_eq!(memory.writes, vec![(BUFFER_ADDRESS, 16); 3]);
    }

    #[test]
    fn coarse_and_tai_clocks_and_32_bit_clock_ids() {
        let mut clock = WallClock::new(LOGICAL_NS + 999_999_999);
        clock.step_ns = 1;
        let mut memory = FakeMemory::new();
        assert_eq!(
            clock.handle_in(&clock_gettime(5, BUFFER_ADDRESS), &mut memory),
            Some(Reply::Return(0))
        );
        assert_eq!(
            (memory.word(0), memory.word(8)),
            (1_700_000_000, 999_999_999)
        );
        // The next read carries into the next second; TAI is 37 s ahead.
        assert_eq!(
            clock.handle_in(&clock_gettime(11, BUFFER_ADDRESS + 16), &mut memory),
            Some(Reply::Return(0))
        );
        assert_eq!((memory.word(16), memory.word(24)), (1_700_000_037 + 1, 0));
        // The kernel reads clockid_t as an int: garbage above bit 31 still means REALTIME.
        assert_eq!(
            clock.handle_in(
                &clock_gettime(0xdead_beef_0000_0000, BUFFER_ADDRESS),
                &mut memory
            ),
            Some(Reply::Return(0))
        );
        assert_eq!((memory.word(0), memory.word(8)), (1_700_000_001, 1));
        assert_eq!(clock.reads_count(), 3);
    }

    #[test]
    fn other_clocks_abis_and_syscalls_are_not_served() {
        let mut clock = WallClock::new(LOGICAL_NS);
        let mut memory = FakeMemory::new();
        // MONOTONIC (allowed natively), the alarm clocks, SGI_CYCLE, an unknown id, an fd clock.
        for id in [1_u64, 8, 9, 10, 12, 0xffff_fffb] {
            assert_eq!(
                clock.handle_in(&clock_gettime(id, BUFFER_ADDRESS), &mut memory),
                None,
                "clock {id}"
            );
        }
        let via_x32 = Notification::detached(
            1,
            42,
            AUDIT_ARCH_X86_64,
            (X32_SYSCALL_BIT as i64 | libc::SYS_clock_gettime) as i32,
            [0, BUFFER_ADDRESS, 0, 0, 0, 0],
        );
        // i386's number 13 is time(); 228 would be clock_gettime's x86_64 number.
        let via_int80 = Notification::detached(1, 42, AUDIT_ARCH_I386, 13, [0; 6]);
        let via_int80_228 = Notification::detached(1, 42, AUDIT_ARCH_I386, 228, [0; 6]);
        let mount = call(libc::SYS_mount, [0; 6]);
        let settime = call(libc::SYS_clock_settime, [0, BUFFER_ADDRESS, 0, 0, 0, 0]);
        for other in [via_x32, via_int80, via_int80_228, mount, settime] {
            assert_eq!(clock.handle_in(&other, &mut memory), None, "{other:?}");
        }
        assert_eq!(clock.reads_count(), 0);
        assert!(memory.writes.is_empty());
    }

    #[test]
    fn gettimeofday_writes_timeval_and_utc_timezone() {
        let mut clock = WallClock::new(LOGICAL_NS + 123_456_789);
        let mut memory = FakeMemory::new();
        let both = call(
            libc::SYS_gettimeofday,
            [BUFFER_ADDRESS, BUFFER_ADDRESS + 16, 0, 0, 0, 0],
        );
        assert_eq!(clock.handle_in(&both, &mut memory), Some(Reply::Return(0)));
        assert_eq!((memory.word(0), memory.word(8)), (1_700_000_000, 123_456));
        assert_eq!((memory.int(16), memory.int(20)), (0, 0));
        // Neither pointer: succeeds without reading the clock; timezone only: no read either.
        let neither = call(libc::SYS_gettimeofday, [0; 6]);
        assert_eq!(
            clock.handle_in(&neither, &mut memory),
            Some(Reply::Return(0))
        );
        let timezone_only = call(libc::SYS_gettimeofday, [0, BUFFER_ADDRESS + 32, 0, 0, 0, 0]);
        assert_eq!(
            clock.handle_in(&timezone_only, &mut memory),
            Some(Reply::Return(0))
        );
        assert_eq!(clock.reads_count(), 1);
        // A bad timezone pointer after a good timeval: EFAULT, as the kernel answers.
        let bad_timezone = call(libc::SYS_gettimeofday, [BUFFER_ADDRESS, 8, 0, 0, 0, 0]);
        assert_eq!(
            clock.handle_in(&bad_timezone, &mut memory),
            Some(Reply::Deny(libc::EFAULT))
        );
        assert_eq!((memory.word(0), memory.word(8)), (1_700_000_000, 124_456));
    }

    #[test]
    fn time_returns_seconds_and_stores_them_when_asked() {
        let mut clock = WallClock::new(LOGICAL_NS);
        clock.step_ns = 600 * 1_000_000_000;
        let mut memory = FakeMemory::new();
        let no_pointer = call(libc::SYS_time, [0; 6]);
        assert_eq!(
            clock.handle_in(&no_pointer, &mut memory),
            Some(Reply::Return(1_700_000_000))
        );
        let pointer = call(libc::SYS_time, [BUFFER_ADDRESS + 8, 0, 0, 0, 0, 0]);
        assert_eq!(
            clock.handle_in(&pointer, &mut memory),
            Some(Reply::Return(1_700_000_600))
        );
        assert_eq!(memory.word(8), 1_700_000_600);
        assert_eq!(memory.writes, vec![(BUFFER_ADDRESS + 8, 8)]);
    }

    #[test]
    fn bad_pointers_fault_and_still_consume_a_read() {
        let mut clock = WallClock::new(LOGICAL_NS);
        let mut memory = FakeMemory::new();
        for address in [0, 8, BUFFER_ADDRESS + BUFFER_BYTES as u64 - 8, u64::MAX - 4] {
            assert_eq!(
                clock.handle_in(&clock_gettime(0, address), &mut memory),
                Some(Reply::Deny(libc::EFAULT)),
                "{address:#x}"
            );
        }
        assert_eq!(clock.reads_count(), 4);
        assert_eq!(
            clock.handle_in(&call(libc::SYS_time, [16, 0, 0, 0, 0, 0]), &mut memory),
            Some(Reply::Deny(libc::EFAULT))
        );
        assert!(memory.writes.is_empty());
    }

    #[test]
    fn unreachable_memory_is_a_recorded_failure_and_left_to_the_caller() {
        let mut clock = WallClock::new(LOGICAL_NS);
        let mut memory = FakeMemory::new();
        memory.unavailable = true;
        assert_eq!(
            clock.handle_in(&clock_gettime(0, BUFFER_ADDRESS), &mut memory),
            None
        );
        assert_eq!(clock.failures_count(), 1);
        let failure = clock.first_failure().expect("recorded");
        assert_eq!((failure.pid, failure.syscall_name), (42, "clock_gettime"));
        assert!(
            failure.message.contains("opening /proc/<pid>/mem"),
            "{failure:?}"
        );
        // A caller that is gone gets an answer nobody reads; not a failure.
        memory.unavailable = false;
        memory.gone = true;
        assert_eq!(
            clock.handle_in(&clock_gettime(0, BUFFER_ADDRESS), &mut memory),
            Some(Reply::Deny(libc::EFAULT))
        );
        assert_eq!(clock.failures_count(), 1);
    }

    #[test]
    fn detached_notifications_reach_no_real_memory() {
        // handle() on a detached notification: the real ProcessMemory refuses as "gone".
        let mut clock = WallClock::new(LOGICAL_NS);
        assert_eq!(
            clock.handle(&clock_gettime(0, BUFFER_ADDRESS)),
            Some(Reply::Deny(libc::EFAULT))
        );
        assert_eq!(clock.failures_count(), 0);
    }

    #[test]
    fn sequences_are_deterministic_and_saturate_instead_of_overflowing() {
        let run = |clock: &mut WallClock| -> Vec<(i64, i64)> {
            let mut memory = FakeMemory::new();
            (0..5)
                .map(|_| {
                    clock.handle_in(&clock_gettime(0, BUFFER_ADDRESS), &mut memory);
                    (memory.word(0), memory.word(8))
                })
                .collect()
        };
        let first = run(&mut WallClock::new(LOGICAL_NS));
        assert_eq!(first, run(&mut WallClock::new(LOGICAL_NS)));
        assert_eq!(first[4], (1_700_000_000, 4_000_000));

        let mut late = WallClock::new(u64::MAX - 1);
        late.step_ns = u64::MAX;
        let values = run(&mut late);
        let max = ((u64::MAX / NS_PER_S) as i64, (u64::MAX % NS_PER_S) as i64);
        let before_max = (
            ((u64::MAX - 1) / NS_PER_S) as i64,
            ((u64::MAX - 1) % NS_PER_S) as i64,
        );
        assert_eq!(values[0], before_max);
        assert_eq!(values[1..], [max; 4]);
        assert_eq!(late.time_of_read_ns(u64::MAX), u64::MAX);
    }
}
