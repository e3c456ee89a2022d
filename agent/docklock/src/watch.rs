//! P's one event loop while the cage runs. Everything P serves during a run (A's report, the
//! seccomp listener, the audit socket, the randomness FIFO and the stdio pipes) is followed with
//! one poll(2) on P's own thread. It used to be four helper threads (relay, supervisor, audit
//! reader, randomness feeder): on two cores their creation (clone3, stacks, a malloc arena each,
//! ~0.15 ms apiece here) and their wake-ups competed with A and the workload for the CPU, in
//! the middle of every spawn.

use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use metanode_cgroup::CageCgroup;
use metanode_confine::{DenialFollower, LandlockDenials, NetlinkAudit};
use metanode_seccomp::{ListenerState, Violation, WallClock};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore as _, SeedableRng as _};

/// Bytes of the seeded stream generated and written per FIFO write.
pub(crate) const URANDOM_CHUNK_BYTES: usize = 4096;

/// The seeded stream behind /dev/urandom: ChaCha20 from the run's seed, one sequence however its
/// writes are split between the pre-fill and the loop's top-ups (same seed, same bytes).
pub(crate) struct RandomStream {
    rng: ChaCha20Rng,
    chunk: Vec<u8>,
    /// Bytes of `chunk` already written; `chunk.len()` when the next chunk is due.
    written: usize,
}

impl RandomStream {
    pub(crate) fn new(seed: [u8; 32]) -> RandomStream {
        RandomStream {
            rng: ChaCha20Rng::from_seed(seed),
            chunk: vec![0u8; URANDOM_CHUNK_BYTES],
            written: URANDOM_CHUNK_BYTES,
        }
    }

    /// Writes the next bytes of the stream to the non-blocking `fd` until it is full (or fails)
    /// or `bytes_max` went out; returns how many went out.
    pub(crate) fn write_to(&mut self, fd: RawFd, bytes_max: usize) -> usize {
        let mut total = 0;
        while total < bytes_max {
            if self.written == self.chunk.len() {
                self.rng.fill_bytes(&mut self.chunk);
                self.written = 0;
            }
            let pending = &self.chunk[self.written..];
            let len = pending.len().min(bytes_max - total);
            // SAFETY: writing from a valid slice of `len` bytes to an fd the caller owns.
            let n = unsafe { libc::write(fd, pending.as_ptr().cast(), len) };
            if n <= 0 {
                break;
            }
            self.written += n as usize;
            total += n as usize;
        }
        total
    }
}

/// Copies each stdio pipe to its destination until every pipe reaches end-of-file (all writers
/// gone), with a fixed buffer. Past [`crate::limits::STDIO_RELAY_BYTES_MAX`] per stream, or once
/// a destination fails, it keeps reading and discards, so the workload never blocks on a full
/// pipe.
pub(crate) struct StdioRelay {
    streams: Vec<Stream>,
    buffer: Vec<u8>,
    truncated: bool,
}

struct Stream {
    from: OwnedFd,
    to: Option<std::fs::File>,
    relayed_bytes: u64,
    open: bool,
}

impl StdioRelay {
    pub(crate) fn new(relays: Vec<(OwnedFd, std::fs::File)>) -> StdioRelay {
        StdioRelay {
            buffer: if relays.is_empty() {
                Vec::new()
            } else {
                vec![0u8; crate::limits::STDIO_RELAY_BUFFER_BYTES]
            },
            streams: relays
                .into_iter()
                .map(|(from, to)| Stream {
                    from,
                    to: Some(to),
                    relayed_bytes: 0,
                    open: true,
                })
                .collect(),
            truncated: false,
        }
    }

    fn open_fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.streams
            .iter()
            .filter(|s| s.open)
            .map(|s| s.from.as_raw_fd())
    }

    /// One read from the pipe `fd` (poll said readable or hung up) and its copy out.
    fn pump(&mut self, fd: RawFd) {
        let Some(stream) = self
            .streams
            .iter_mut()
            .find(|s| s.open && s.from.as_raw_fd() == fd)
        else {
            return;
        };
        // SAFETY: reading into our own buffer from our own fd.
        let n = unsafe {
            libc::read(
                stream.from.as_raw_fd(),
                self.buffer.as_mut_ptr().cast(),
                self.buffer.len(),
            )
        };
        if n < 0 {
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                stream.open = false;
            }
            return;
        }
        if n == 0 {
            stream.open = false;
            return;
        }
        let chunk = self.buffer.get(..n as usize).unwrap_or_default();
        let room = crate::limits::STDIO_RELAY_BYTES_MAX.saturating_sub(stream.relayed_bytes);
        let keep = chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        if keep < chunk.len() {
            self.truncated = true;
        }
        stream.relayed_bytes += keep as u64;
        if let Some(to) = &mut stream.to
            && keep > 0
            && to.write_all(&chunk[..keep]).is_err()
        {
            // The destination is gone (a closed pipe, a full disk): keep draining.
            stream.to = None;
        }
    }

    /// Whether a write to a destination may block for long: anything but a regular file or
    /// /dev/null (a pipe whose reader is paused, a terminal under flow control, a socket).
    fn writes_may_block(&self) -> bool {
        self.streams.iter().any(|stream| {
            stream.to.as_ref().is_some_and(|to| {
                let Ok(meta) = rustix::fs::fstat(to) else {
                    return true;
                };
                let file_type = rustix::fs::FileType::from_raw_mode(meta.st_mode);
                let dev_null = file_type == rustix::fs::FileType::CharacterDevice
                    && meta.st_rdev == rustix::fs::makedev(DEV_NULL_MAJOR, DEV_NULL_MINOR);
                file_type != rustix::fs::FileType::RegularFile && !dev_null
            })
        })
    }

    /// Relays until every pipe is at end-of-file (call once every writer is gone); returns
    /// whether anything was discarded for the bound.
    pub(crate) fn finish(mut self) -> bool {
        loop {
            let mut pfds: Vec<libc::pollfd> = self
                .open_fds()
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            if pfds.is_empty() {
                return self.truncated;
            }
            // SAFETY: a valid array of pollfds of the given length.
            let ready = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
            if ready < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return self.truncated;
            }
            for pfd in pfds.iter().filter(|p| p.revents != 0) {
                self.pump(pfd.fd);
            }
        }
    }
}

/// /dev/null's device numbers (mem major 1, minor 3: Documentation/admin-guide/devices.txt).
const DEV_NULL_MAJOR: u32 = 1;
const DEV_NULL_MINOR: u32 = 3;

/// Where the stdio relay runs.
pub(crate) enum Relay {
    /// Pumped by the watch loop: every destination is a regular file or /dev/null, whose writes
    /// do not wait on anyone.
    Inline(StdioRelay),
    /// In a thread of its own, because a destination may block (a paused `| less`, a terminal):
    /// a blocked write must not stall the seccomp answers, the FIFO or the deadline.
    Thread(std::thread::JoinHandle<bool>),
}

impl Relay {
    /// Inline when no destination can block, else on its own thread (started now).
    pub(crate) fn start(relay: StdioRelay) -> Relay {
        if relay.writes_may_block() {
            Relay::Thread(std::thread::spawn(move || relay.finish()))
        } else {
            Relay::Inline(relay)
        }
    }

    /// The pipes the watch loop polls (none when the relay has its own thread).
    fn open_fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        match self {
            Relay::Inline(relay) => Some(relay.open_fds()),
            Relay::Thread(_) => None,
        }
        .into_iter()
        .flatten()
    }

    fn pump(&mut self, fd: RawFd) {
        if let Relay::Inline(relay) = self {
            relay.pump(fd);
        }
    }

    /// Relays to end-of-file (call once every writer is gone) and returns whether anything was
    /// discarded for the bound.
    pub(crate) fn finish(self) -> bool {
        match self {
            Relay::Inline(relay) => relay.finish(),
            Relay::Thread(handle) => handle.join().unwrap_or(false),
        }
    }
}

/// What P follows while the cage runs (see the module comment).
pub(crate) struct Watch<'a> {
    /// A's report pipe: the report, then end-of-file once A closed it.
    pub(crate) status: OwnedFd,
    /// A's report bound: past it the rest is read and dropped.
    pub(crate) report_bytes_max: usize,
    /// Killing the cage's tasks when this passes before A's report.
    pub(crate) deadline: Option<Instant>,
    /// The cage's cgroup; None for an unprivileged caller (see `crate::cage::kill_cage`).
    pub(crate) cgroup: Option<&'a CageCgroup>,
    /// A, P's child: killing it ends a cage without a cgroup.
    pub(crate) a_pid: i32,
    /// The seccomp listener (None: the workload never got its policy installed).
    pub(crate) listener: Option<OwnedFd>,
    pub(crate) logical_time_ns: u64,
    /// The audit socket and the follower of the cage's Landlock domain, or why there is none.
    pub(crate) audit: Result<(NetlinkAudit, DenialFollower), LandlockDenials>,
    /// The randomness FIFO (non-blocking, O_RDWR) and the stream that tops it up.
    pub(crate) fifo: OwnedFd,
    pub(crate) random: RandomStream,
    pub(crate) relay: Relay,
}

/// What the loop saw, and the parts whose work continues after it (the relay until end-of-file,
/// the audit follower until its drain marker is back).
pub(crate) struct Watched {
    pub(crate) report: Vec<u8>,
    pub(crate) timed_out: bool,
    /// None when there was no listener; Some(Err) when supervision failed.
    pub(crate) supervised: Option<Result<(), String>>,
    pub(crate) violations: Vec<Violation>,
    pub(crate) violations_dropped_count: u64,
    pub(crate) audit: Result<(NetlinkAudit, DenialFollower), LandlockDenials>,
    pub(crate) relay: Relay,
}

/// Which fd a pollfd slot is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Status,
    Listener,
    Audit,
    Fifo,
    Relay,
}

impl Watch<'_> {
    /// Serves the cage until A's report is complete (A closed its pipe) and the listener hung up
    /// (the last confined task is reaped). Wall-clock reads are answered from the logical clock;
    /// every other refused call is recorded and denied. A deadline that passes first kills the
    /// cage's tasks (A too while it is in the cage, which closes the report pipe) and the loop
    /// waits on. Once the report is in, the audit follower sends its drain marker.
    pub(crate) fn run(self) -> Watched {
        let Watch {
            status,
            report_bytes_max,
            mut deadline,
            cgroup,
            a_pid,
            mut listener,
            logical_time_ns,
            mut audit,
            fifo,
            mut random,
            mut relay,
        } = self;
        let mut clock = WallClock::new(logical_time_ns);
        let mut violations = Vec::new();
        let mut violations_dropped_count = 0u64;
        let mut supervised = listener.as_ref().map(|_| Ok(()));
        let mut report = Vec::new();
        let mut report_done = false;
        let mut timed_out = false;
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(8);
        let mut slots: Vec<Slot> = Vec::with_capacity(8);
        while !report_done || listener.is_some() {
            pfds.clear();
            slots.clear();
            let mut add = |fd: RawFd, events: i16, slot: Slot| {
                pfds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
                slots.push(slot);
            };
            if !report_done {
                add(status.as_raw_fd(), libc::POLLIN, Slot::Status);
                // Topped up only while the workload may read; P's O_RDWR copy keeps a reader, so
                // the FIFO never polls as an error.
                add(fifo.as_raw_fd(), libc::POLLOUT, Slot::Fifo);
            }
            if let Some(listener) = &listener {
                add(listener.as_raw_fd(), libc::POLLIN, Slot::Listener);
            }
            if let Ok((socket, follower)) = &audit
                && !follower.is_done()
            {
                add(socket.as_fd().as_raw_fd(), libc::POLLIN, Slot::Audit);
            }
            for fd in relay.open_fds() {
                add(fd, libc::POLLIN, Slot::Relay);
            }
            // The deadline holds until the last confined task is gone, not only until A reports:
            // a workload A stopped tracing (its tracer failed) must still be ended.
            let timeout_ms = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    // Rounded up: a poll that wakes a little early only loops once more.
                    left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
                }
                _ => -1,
            };
            // SAFETY: a valid array of pollfds of the given length.
            let ready =
                unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
            // Checked on every return, not only on poll's timeout: a workload that keeps an fd
            // ready (printing nonstop, reading /dev/urandom, looping on a refused call) would
            // otherwise never reach it.
            if let Some(at) = deadline
                && Instant::now() >= at
            {
                crate::cage::kill_cage(cgroup, a_pid);
                timed_out = true;
                deadline = None;
            }
            if ready < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                // Nothing can be served any more: end the cage rather than leave it blocked.
                crate::cage::kill_cage(cgroup, a_pid);
                supervised = Some(Err(format!("polling the cage's pipes and listener: {err}")));
                listener = None;
                if !report_done {
                    read_to_end_bounded(&status, &mut report, report_bytes_max);
                    report_done = true;
                    if let Ok((socket, follower)) = &mut audit {
                        follower.workload_ended(socket);
                    }
                }
                continue;
            }
            if ready == 0 {
                continue;
            }
            for (pfd, slot) in pfds.iter().zip(slots.iter()) {
                if pfd.revents == 0 {
                    continue;
                }
                match slot {
                    Slot::Status => {
                        // Poll said the read will not block.
                        if !read_some_bounded(status.as_raw_fd(), &mut report, report_bytes_max) {
                            report_done = true;
                            if let Ok((socket, follower)) = &mut audit {
                                follower.workload_ended(socket);
                            }
                        }
                    }
                    Slot::Listener => {
                        let Some(fd) = &listener else { continue };
                        let state = metanode_seccomp::answer_ready(
                            fd.as_fd(),
                            pfd.revents,
                            &mut |notification| {
                                clock.answer_or_refuse(notification, &mut |v| {
                                    // A workload looping on a refused call must not grow P's
                                    // memory without bound: keep the first ones, count the rest.
                                    if violations.len() < crate::limits::VIOLATIONS_COUNT_MAX {
                                        violations.push(v);
                                    } else {
                                        violations_dropped_count += 1;
                                    }
                                })
                            },
                        );
                        match state {
                            Ok(ListenerState::Open) => {}
                            Ok(ListenerState::Closed) => listener = None,
                            Err(e) => {
                                // Dropping the listener fails every pending and later refused
                                // call (ENOSYS) instead of leaving it blocked.
                                supervised = Some(Err(e.to_string()));
                                listener = None;
                            }
                        }
                    }
                    Slot::Audit => {
                        if let Ok((socket, follower)) = &mut audit {
                            follower.read_ready(socket);
                        }
                    }
                    Slot::Fifo => {
                        random.write_to(fifo.as_raw_fd(), usize::MAX);
                    }
                    Slot::Relay => relay.pump(pfd.fd),
                }
            }
        }
        Watched {
            report,
            timed_out,
            supervised,
            violations,
            violations_dropped_count,
            audit,
            relay,
        }
    }
}

/// Reads `fd` (blocking) to end-of-file, keeping at most `bytes_max` in `into`.
fn read_to_end_bounded(fd: &OwnedFd, into: &mut Vec<u8>, bytes_max: usize) {
    while read_some_bounded(fd.as_raw_fd(), into, bytes_max) {}
}

/// One read of `fd` appended to `into`, which keeps at most `bytes_max` (the rest is read and
/// dropped). False at end-of-file or on an error other than EINTR.
fn read_some_bounded(fd: RawFd, into: &mut Vec<u8>, bytes_max: usize) -> bool {
    let mut buffer = [0u8; 512];
    // SAFETY: reading into our own buffer from an fd the caller owns.
    let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
    if n < 0 {
        return std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
    }
    if n == 0 {
        return false;
    }
    let room = bytes_max.saturating_sub(into.len());
    into.extend_from_slice(&buffer[..(n as usize).min(room)]);
    true
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    /// The pre-fill and the loop's top-ups write one ChaCha20 sequence: split anywhere (even
    /// mid-chunk), the bytes read back are the seed's keystream from its start.
    #[test]
    fn random_stream_is_the_seed_keystream_however_writes_are_split() {
        let seed = [7u8; 32];
        let total = 3 * URANDOM_CHUNK_BYTES + 123;
        let mut expected = vec![0u8; total];
        ChaCha20Rng::from_seed(seed).fill_bytes(&mut expected);
        let (r, w) = crate::cage::pipe().expect("pipe");
        // SAFETY: fcntl on our own fd with an integer argument.
        unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        let mut stream = RandomStream::new(seed);
        let mut got = Vec::new();
        for piece in [1000, URANDOM_CHUNK_BYTES, 1, URANDOM_CHUNK_BYTES * 2 - 878] {
            assert_eq!(stream.write_to(w.as_raw_fd(), piece), piece);
            let mut buf = vec![0u8; piece];
            std::fs::File::from(r.try_clone().expect("dup"))
                .read_exact(&mut buf)
                .expect("read back");
            got.extend_from_slice(&buf);
        }
        assert_eq!(got.len(), total);
        assert_eq!(got, expected);
        // A full pipe stops the writer without losing its place.
        let wrote = stream.write_to(w.as_raw_fd(), usize::MAX);
        assert!(wrote > 0 && wrote < usize::MAX);
    }
}
