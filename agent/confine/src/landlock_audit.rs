//! Landlock denials from the kernel's audit log: which accesses a confined workload was refused.
//!
//! A Landlock domain restricted with "log new exec" (see [`LandlockPlan::log_denials_after_exec`])
//! makes the kernel (Landlock ABI 7, Linux 6.15+, `CONFIG_AUDIT`) emit, while audit is enabled,
//! one `AUDIT_LANDLOCK_ACCESS` record per denied access and one `AUDIT_LANDLOCK_DOMAIN` record
//! when the domain first denies something (`status=allocated … pid=<host pid of the process that
//! restricted itself>`) and when it is freed (`status=deallocated denials=N`):
//!
//! ```text
//! type 1423: audit(1796133024.192:7): domain=1d9045329 blockers=fs.read_file path="/etc/passwd" dev="vda" ino=409645
//! type 1424: audit(1796133024.192:7): domain=1d9045329 status=allocated mode=enforcing pid=3825 uid=0 exe="/tmp/llh/m" comm="m"
//! ```
//!
//! The records are read from the audit netlink multicast group `AUDIT_NLGRP_READLOG`, which any
//! `CAP_AUDIT_READ` holder may join next to (never instead of) a registered audit daemon; nothing
//! here registers as the daemon or changes audit rules. Audit must be enabled for the kernel to
//! emit anything: [`NetlinkAudit::open`] enables it when it is off (it stays on afterwards: turning
//! it off again would silence every other listener and concurrent cage), and leaves an
//! immutable (locked) configuration alone.
//!
//! The kernel sits behind [`AuditSource`] ([`NetlinkAudit`] on Linux, [`FakeAudit`] for tests);
//! [`DenialCollector`] is the pure part: it learns the cage's domain id from the allocation record
//! whose pid is the cage process, keeps that domain's denials as deterministic text (the blocked
//! rights and the path or address — never inode numbers, pids or times, which differ between
//! replays) and stops once its own drain marker (an `AUDIT_USER` message sent after the workload
//! ended, queued behind every record the workload caused) comes back.
//!
//! [`LandlockPlan::log_denials_after_exec`]: crate::LandlockPlan::log_denials_after_exec

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

/// `AUDIT_GET`: read the audit status.
pub const AUDIT_GET: u16 = 1000;
/// `AUDIT_SET`: change the audit status (here only `enabled`).
pub const AUDIT_SET: u16 = 1001;
/// `AUDIT_USER`: a user-space message the kernel logs like any record (the drain marker).
pub const AUDIT_USER: u16 = 1107;
/// `AUDIT_LANDLOCK_ACCESS` (Linux 6.15): one denied access.
pub const AUDIT_LANDLOCK_ACCESS: u16 = 1423;
/// `AUDIT_LANDLOCK_DOMAIN` (Linux 6.15): a domain's allocation or deallocation.
pub const AUDIT_LANDLOCK_DOMAIN: u16 = 1424;
/// `AUDIT_NLGRP_READLOG` as a bind mask: the read-only multicast group of every audit record.
const AUDIT_NLGRP_READLOG_MASK: u32 = 1;
/// `NLMSG_ERROR`.
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
/// `AUDIT_STATUS_ENABLED` in `audit_status.mask`.
const AUDIT_STATUS_ENABLED: u32 = 1;
/// `struct nlmsghdr`.
const NLMSG_HEADER_BYTES: usize = 16;
/// `struct audit_status` of Linux 6.x (11 u32); the kernel accepts shorter and longer.
const AUDIT_STATUS_BYTES: usize = 44;
/// The kernel's MAX_AUDIT_MESSAGE_LENGTH (8970) rounded up: one record per datagram.
const AUDIT_DATAGRAM_BYTES_MAX: usize = 9 * 1024;
/// How long [`NetlinkAudit::open`] waits for the kernel's answers to AUDIT_GET / AUDIT_SET.
const AUDIT_REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// Records skipped while waiting for a status reply (other hosts' records arrive on the group).
const AUDIT_REPLY_SKIP_COUNT_MAX: usize = 1024;
/// Denials of a not yet identified domain kept until its allocation record arrives (the kernel
/// logs the allocation right after the domain's first denial, in the same event).
const PENDING_DENIALS_COUNT_MAX: usize = 16;

/// Bounds of one collection (the caller's named constants; DockLock keeps them in its limits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditLimits {
    /// Audit records read per run, whoever caused them; past it reading stops.
    pub records_count_max: u64,
    /// Record text bytes read per run; past it reading stops.
    pub records_bytes_max: u64,
    /// Denials kept; later ones are counted in [`LandlockDenials::dropped_count`].
    pub denials_count_max: usize,
    /// Longest path or other object text kept in a denial (longer ones are shortened).
    pub object_bytes_max: usize,
    /// How long to wait for the drain marker after the workload ended.
    pub drain_timeout: Duration,
    /// How long one receive waits before re-checking the deadline.
    pub poll_interval: Duration,
}

/// One access Landlock refused the cage, as deterministic text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LandlockDenial {
    /// The refused rights as the kernel names them, comma-separated, e.g. `fs.write_file`.
    pub blockers: String,
    /// What was refused: a path as the kernel resolved it (inside the cage), `addr:port`, or
    /// `key=value` fields for other objects; empty when the record names none.
    pub object: String,
}

impl LandlockDenial {
    /// `"<blockers> <object>"`, e.g. `fs.write_file /etc/passwd`, `net.connect_tcp 10.0.0.1:80`.
    pub fn access(&self) -> String {
        if self.object.is_empty() {
            self.blockers.clone()
        } else {
            format!("{} {}", self.blockers, self.object)
        }
    }
}

/// How complete a collection is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenialCollection {
    /// The drain marker came back: every denial the kernel logged for the domain was read.
    Complete,
    /// The drain marker did not come back in time: the last denials may be missing.
    DrainTimedOut,
    /// The kernel dropped records for this listener (its receive buffer was full): some denials
    /// may be missing.
    RecordsLost,
    /// Reading stopped at the record or byte budget: later denials are missing.
    BudgetExhausted,
    /// Nothing was collected, and why (not root, no audit in the kernel, netlink refused, …).
    Unavailable(String),
}

impl std::fmt::Display for DenialCollection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DenialCollection::Complete => f.write_str("complete"),
            DenialCollection::DrainTimedOut => {
                f.write_str("incomplete: the audit drain marker did not come back in time")
            }
            DenialCollection::RecordsLost => {
                f.write_str("incomplete: the kernel dropped audit records for this listener")
            }
            DenialCollection::BudgetExhausted => {
                f.write_str("incomplete: the per-run audit record budget was used up")
            }
            DenialCollection::Unavailable(why) => write!(f, "not collected: {why}"),
        }
    }
}

/// The denials of one cage, in audit serial order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LandlockDenials {
    pub denials: Vec<LandlockDenial>,
    /// Denials past [`AuditLimits::denials_count_max`], counted not kept.
    pub dropped_count: u64,
    /// Landlock records that did not parse (skipped).
    pub malformed_count: u64,
    pub collection: DenialCollection,
}

impl LandlockDenials {
    /// No denials, and why none were collected.
    pub fn unavailable(why: impl Into<String>) -> LandlockDenials {
        LandlockDenials {
            denials: Vec::new(),
            dropped_count: 0,
            malformed_count: 0,
            collection: DenialCollection::Unavailable(why.into()),
        }
    }
}

/// Why the audit log cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditOpenError {
    #[error("audit netlink socket: {0} (a kernel without CONFIG_AUDIT refuses it)")]
    Socket(rustix::io::Errno),
    #[error("audit netlink: joining the read-log multicast group: {0} (needs CAP_AUDIT_READ)")]
    Bind(rustix::io::Errno),
    #[error("audit netlink: {what}: {errno}")]
    Io {
        what: &'static str,
        errno: rustix::io::Errno,
    },
    #[error("audit netlink: {what}: the kernel refused with errno {errno}")]
    Refused { what: &'static str, errno: i32 },
    #[error("audit netlink: no answer to {what} within {timeout:?}")]
    NoReply {
        what: &'static str,
        timeout: Duration,
    },
    #[error("audit netlink: the {what} reply is {len} bytes, shorter than {expected}")]
    ShortReply {
        what: &'static str,
        len: usize,
        expected: usize,
    },
    #[error("audit_status.enabled is {enabled}, not 0, 1 or 2 (off, on, locked on)")]
    UnknownEnabled { enabled: u32 },
}

/// One thing an [`AuditSource`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// An audit record: its netlink type and text (`audit(<time>:<serial>): key=value …`).
    Record { kind: u16, text: Vec<u8> },
    /// The kernel's error answer to a request of ours (`seq` as sent; `errno` positive).
    Refused { seq: u32, errno: i32 },
    /// Nothing arrived within the wait.
    Idle,
    /// The workload ended (the wake fd became readable or closed). Yielded once.
    Woken,
    /// The kernel dropped records for this socket (ENOBUFS).
    Lost,
}

/// The kernel seam: the audit log as a stream of records.
pub trait AuditSource {
    /// Waits up to `wait` for the next item.
    fn receive(&mut self, wait: Duration) -> Result<Received, rustix::io::Errno>;
    /// Sends an `AUDIT_USER` message with `text`, which the kernel logs behind every record
    /// already queued.
    fn send_user_message(&mut self, seq: u32, text: &str) -> Result<(), rustix::io::Errno>;
}

/// This boot's id: a cache of "audit is on" is only good for the boot that wrote it.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// Best effort (a read-only /run only costs the AUDIT_GET next time): the boot id, written
/// whole through a temporary name so a concurrent reader never sees half of it.
fn remember_audit_enabled(path: &Path, boot_id: &[u8]) {
    use std::os::unix::fs::DirBuilderExt as _;
    let Some(dir) = path.parent() else {
        return;
    };
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, boot_id).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Drops the cache of [`NetlinkAudit::open`]: audit was found off after all (a marker that
/// never came back), so the next open checks with the kernel again.
pub fn forget_audit_enabled(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// The audit log through `NETLINK_AUDIT`, joined as a multicast reader.
#[derive(Debug)]
pub struct NetlinkAudit {
    socket: OwnedFd,
    wake: Option<OwnedFd>,
    buffer: Vec<u8>,
    queued: VecDeque<Received>,
    /// Whether `open` turned audit on (it was off).
    pub enabled_here: bool,
}

impl NetlinkAudit {
    /// Opens the socket, joins `AUDIT_NLGRP_READLOG` and makes sure audit is enabled (AUDIT_SET
    /// enabled=1 only when it was 0; the audit daemon's pid is never touched). `receive_buffer_bytes`
    /// sizes the socket's queue (forced as root), which must hold every record that arrives
    /// before the reader thread starts.
    ///
    /// `enabled_cache`: a file that remembers, for this boot, that audit was found on. The
    /// kernel answers AUDIT_GET from a freshly created kernel thread (`audit_send_reply`), which
    /// costs 0.1 ms on a quiet host and several on a loaded one, on every cage's start-up path;
    /// the file (holding the boot id) skips it. Whoever sees the marker drain time out (audit
    /// switched off since) calls [`forget_audit_enabled`] so the next open asks again.
    pub fn open(
        receive_buffer_bytes: usize,
        enabled_cache: Option<&Path>,
    ) -> Result<NetlinkAudit, AuditOpenError> {
        let socket = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            Some(rustix::net::netlink::AUDIT),
        )
        .map_err(AuditOpenError::Socket)?;
        rustix::net::bind(
            &socket,
            &SocketAddrNetlink::new(0, AUDIT_NLGRP_READLOG_MASK),
        )
        .map_err(AuditOpenError::Bind)?;
        // Best effort: without the forced size the default queue (about 200 KiB) still holds
        // hundreds of records; a loss is reported as RecordsLost.
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(&socket, receive_buffer_bytes)
            .is_err()
        {
            let _ =
                rustix::net::sockopt::set_socket_recv_buffer_size(&socket, receive_buffer_bytes);
        }
        let mut audit = NetlinkAudit {
            socket,
            wake: None,
            buffer: vec![0; AUDIT_DATAGRAM_BYTES_MAX],
            queued: VecDeque::new(),
            enabled_here: false,
        };
        let boot_id = enabled_cache.and_then(|_| std::fs::read(BOOT_ID_PATH).ok());
        if let (Some(path), Some(boot_id)) = (enabled_cache, &boot_id)
            && std::fs::read(path).ok().as_ref() == Some(boot_id)
        {
            return Ok(audit);
        }
        let status = audit.request(AUDIT_GET, 1, &[], "AUDIT_GET")?;
        let enabled = read_u32(&status, 4).ok_or(AuditOpenError::ShortReply {
            what: "AUDIT_GET",
            len: status.len(),
            expected: 8,
        })?;
        match enabled {
            1 | 2 => {}
            0 => {
                let mut set = [0u8; AUDIT_STATUS_BYTES];
                set[0..4].copy_from_slice(&AUDIT_STATUS_ENABLED.to_ne_bytes());
                set[4..8].copy_from_slice(&1u32.to_ne_bytes());
                audit.request(AUDIT_SET, 2, &set, "AUDIT_SET enabled=1")?;
                audit.enabled_here = true;
            }
            other => return Err(AuditOpenError::UnknownEnabled { enabled: other }),
        }
        if let (Some(path), Some(boot_id)) = (enabled_cache, &boot_id) {
            remember_audit_enabled(path, boot_id);
        }
        Ok(audit)
    }

    /// `wake` becoming readable (or its write end closing) makes [`AuditSource::receive`] yield
    /// [`Received::Woken`] once.
    pub fn set_wake(&mut self, wake: OwnedFd) {
        self.wake = Some(wake);
    }

    /// Sends one request and waits for its answer: the payload of a reply of type `kind`, or an
    /// empty payload for a zero-error acknowledgement.
    fn request(
        &mut self,
        kind: u16,
        seq: u32,
        payload: &[u8],
        what: &'static str,
    ) -> Result<Vec<u8>, AuditOpenError> {
        // A GET is answered with its reply; a SET is acknowledged (error 0) or refused.
        let flags = if kind == AUDIT_GET {
            NLM_F_REQUEST
        } else {
            NLM_F_REQUEST | NLM_F_ACK
        };
        let message = netlink_message(kind, flags, seq, payload);
        rustix::net::sendto(
            &self.socket,
            &message,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )
        .map_err(|errno| AuditOpenError::Io { what, errno })?;
        let deadline = Instant::now() + AUDIT_REPLY_TIMEOUT;
        for _ in 0..AUDIT_REPLY_SKIP_COUNT_MAX {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let len = match self.receive_datagram(left) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(errno) if errno == rustix::io::Errno::NOBUFS => continue,
                Err(errno) => return Err(AuditOpenError::Io { what, errno }),
            };
            for message in split_netlink(self.buffer.get(..len).unwrap_or_default()) {
                if message.seq != seq {
                    continue;
                }
                if message.kind == NLMSG_ERROR {
                    let errno = error_code(message.payload);
                    if errno != 0 {
                        return Err(AuditOpenError::Refused { what, errno });
                    }
                    return Ok(Vec::new());
                }
                if message.kind == kind {
                    return Ok(message.payload.to_vec());
                }
            }
        }
        Err(AuditOpenError::NoReply {
            what,
            timeout: AUDIT_REPLY_TIMEOUT,
        })
    }

    /// One datagram into `self.buffer`; `None` when nothing arrived within `wait`.
    fn receive_datagram(&mut self, wait: Duration) -> Result<Option<usize>, rustix::io::Errno> {
        let timeout = timespec(wait);
        let mut fds = [PollFd::new(&self.socket, PollFlags::IN)];
        if rustix::event::poll(&mut fds, Some(&timeout))? == 0 {
            return Ok(None);
        }
        let (_, len) = rustix::net::recv(
            &self.socket,
            &mut self.buffer[..],
            RecvFlags::DONTWAIT | RecvFlags::TRUNC,
        )?;
        Ok(Some(len))
    }
}

/// The netlink socket, for a caller that polls it in its own loop (POLLIN: a datagram is
/// queued; [`DenialFollower::read_ready`] then takes it in).
impl AsFd for NetlinkAudit {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AuditSource for NetlinkAudit {
    fn receive(&mut self, wait: Duration) -> Result<Received, rustix::io::Errno> {
        if let Some(item) = self.queued.pop_front() {
            return Ok(item);
        }
        let timeout = timespec(wait);
        let (socket_ready, woken) = {
            let mut fds = vec![PollFd::new(&self.socket, PollFlags::IN)];
            if let Some(wake) = &self.wake {
                fds.push(PollFd::from_borrowed_fd(wake.as_fd(), PollFlags::IN));
            }
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => return Ok(Received::Idle),
                Err(errno) => return Err(errno),
            }
            (
                !fds[0].revents().is_empty(),
                fds.get(1).is_some_and(|fd| !fd.revents().is_empty()),
            )
        };
        if woken {
            self.wake = None;
            return Ok(Received::Woken);
        }
        if !socket_ready {
            return Ok(Received::Idle);
        }
        let len = match rustix::net::recv(
            &self.socket,
            &mut self.buffer[..],
            RecvFlags::DONTWAIT | RecvFlags::TRUNC,
        ) {
            Ok((_, len)) => len,
            Err(rustix::io::Errno::NOBUFS) => return Ok(Received::Lost),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => return Ok(Received::Idle),
            Err(errno) => return Err(errno),
        };
        // A truncated datagram's record is cut short: it fails to parse and is counted as such.
        let data = self
            .buffer
            .get(..len.min(self.buffer.len()))
            .unwrap_or_default();
        for message in split_netlink(data) {
            self.queued.push_back(if message.kind == NLMSG_ERROR {
                Received::Refused {
                    seq: message.seq,
                    errno: error_code(message.payload),
                }
            } else {
                Received::Record {
                    kind: message.kind,
                    text: message.payload.to_vec(),
                }
            });
        }
        Ok(self.queued.pop_front().unwrap_or(Received::Idle))
    }

    fn send_user_message(&mut self, seq: u32, text: &str) -> Result<(), rustix::io::Errno> {
        // The kernel overwrites the payload's last byte with a NUL: send one.
        let mut payload = Vec::with_capacity(text.len() + 1);
        payload.extend_from_slice(text.as_bytes());
        payload.push(0);
        let message = netlink_message(AUDIT_USER, NLM_F_REQUEST, seq, &payload);
        rustix::net::sendto(
            &self.socket,
            &message,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )
        .map(|_| ())
    }
}

/// A scripted audit log: yields its items in order, then [`Received::Idle`]; answers a user
/// message with the kernel's `AUDIT_USER` record when `echo_user_messages` is set.
#[derive(Clone, Debug, Default)]
pub struct FakeAudit {
    pub items: VecDeque<Received>,
    pub echo_user_messages: bool,
    /// Every user message sent, in order.
    pub sent: Vec<String>,
}

impl AuditSource for FakeAudit {
    fn receive(&mut self, _wait: Duration) -> Result<Received, rustix::io::Errno> {
        Ok(self.items.pop_front().unwrap_or(Received::Idle))
    }

    fn send_user_message(&mut self, _seq: u32, text: &str) -> Result<(), rustix::io::Errno> {
        self.sent.push(text.to_owned());
        if self.echo_user_messages {
            self.items.push_back(Received::Record {
                kind: AUDIT_USER,
                text: format!(
                    "audit(1796133025.000:99): pid=1 uid=0 auid=4294967295 ses=4294967295 msg='{text}'"
                )
                .into_bytes(),
            });
        }
        Ok(())
    }
}

/// One parsed Landlock record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LandlockRecord {
    Access {
        serial: u64,
        domain: u64,
        denial: LandlockDenial,
    },
    DomainAllocated {
        serial: u64,
        domain: u64,
        pid: u32,
    },
    DomainDeallocated {
        serial: u64,
        domain: u64,
    },
}

/// Why a Landlock record did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordParseError {
    #[error("audit record type {kind}: no `audit(<time>:<serial>):` prefix")]
    Prefix { kind: u16 },
    #[error("audit record type {kind}: field {field} missing or malformed")]
    Field { kind: u16, field: &'static str },
    #[error("audit record type {kind}: unknown domain status {status:?}")]
    Status { kind: u16, status: String },
}

/// Parses an `AUDIT_LANDLOCK_ACCESS` or `AUDIT_LANDLOCK_DOMAIN` record; `Ok(None)` for any other
/// record type. Object text is shortened to `object_bytes_max`.
pub fn parse_landlock_record(
    kind: u16,
    text: &[u8],
    object_bytes_max: usize,
) -> Result<Option<LandlockRecord>, RecordParseError> {
    if kind != AUDIT_LANDLOCK_ACCESS && kind != AUDIT_LANDLOCK_DOMAIN {
        return Ok(None);
    }
    let (serial, fields) = split_record(text).ok_or(RecordParseError::Prefix { kind })?;
    let field = |name: &'static str| {
        fields
            .iter()
            .find(|(key, _)| *key == name.as_bytes())
            .map(|(_, value)| *value)
    };
    let domain = field("domain")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or(RecordParseError::Field {
            kind,
            field: "domain",
        })?;
    if kind == AUDIT_LANDLOCK_DOMAIN {
        let status = field("status").ok_or(RecordParseError::Field {
            kind,
            field: "status",
        })?;
        return match status {
            b"allocated" => {
                let pid = field("pid")
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or(RecordParseError::Field { kind, field: "pid" })?;
                Ok(Some(LandlockRecord::DomainAllocated {
                    serial,
                    domain,
                    pid,
                }))
            }
            b"deallocated" => Ok(Some(LandlockRecord::DomainDeallocated { serial, domain })),
            other => Err(RecordParseError::Status {
                kind,
                status: String::from_utf8_lossy(other).into_owned(),
            }),
        };
    }
    let blockers = field("blockers")
        .filter(|v| {
            !v.is_empty()
                && v.iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b','))
        })
        .ok_or(RecordParseError::Field {
            kind,
            field: "blockers",
        })?;
    let blockers = String::from_utf8_lossy(blockers).into_owned();
    let object = object_text(&fields, object_bytes_max);
    Ok(Some(LandlockRecord::Access {
        serial,
        domain,
        denial: LandlockDenial { blockers, object },
    }))
}

/// Fields that differ between replays of the same workload (or say nothing about the object):
/// left out of the denial text.
const VOLATILE_FIELDS: &[&[u8]] = &[
    b"domain",
    b"blockers",
    b"dev",
    b"ino",
    b"pid",
    b"opid",
    b"tid",
    b"ppid",
];

/// Fields the kernel writes with `audit_log_untrustedstring`: quoted, or hex when they hold a
/// space, quote or control byte.
const UNTRUSTED_STRING_FIELDS: &[&[u8]] = &[b"path", b"name", b"comm", b"ocomm", b"exe"];

/// The denied object as deterministic text: paths as they are, `addr:port` for sockets,
/// `key=value` for anything else, in the record's order.
fn object_text(fields: &[Field<'_>], object_bytes_max: usize) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut address: Option<String> = None;
    for (key, value) in fields {
        if VOLATILE_FIELDS.contains(key) {
            continue;
        }
        // Only untrusted strings may be hex-encoded; "80" is a port, not a byte.
        let value = if UNTRUSTED_STRING_FIELDS.contains(key) {
            decode_value(value)
        } else {
            String::from_utf8_lossy(value).into_owned()
        };
        match *key {
            b"path" | b"name" => parts.push(value),
            b"daddr" | b"saddr" | b"laddr" | b"faddr" => {
                address = Some(if value.contains(':') {
                    format!("[{value}]")
                } else {
                    value
                });
            }
            b"dest" | b"src" | b"lport" | b"fport" => {
                let host = address.take().unwrap_or_else(|| "*".to_owned());
                parts.push(format!("{host}:{value}"));
            }
            _ => parts.push(format!("{}={value}", String::from_utf8_lossy(key))),
        }
    }
    if let Some(host) = address {
        parts.push(host);
    }
    bounded_text(&parts.join(" "), object_bytes_max)
}

/// An audit value: `"quoted"` as is, an even-length upper-case hex string (how the kernel writes
/// untrusted strings holding spaces, quotes or control bytes) decoded, anything else as is.
fn decode_value(value: &[u8]) -> String {
    if let Some(inner) = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
    {
        return String::from_utf8_lossy(inner).into_owned();
    }
    let is_hex = value.len() >= 2
        && value.len().is_multiple_of(2)
        && value
            .iter()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b));
    if is_hex {
        let bytes: Vec<u8> = value
            .chunks_exact(2)
            .filter_map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
            })
            .collect();
        return String::from_utf8_lossy(&bytes).into_owned();
    }
    String::from_utf8_lossy(value).into_owned()
}

/// `text` itself when it fits `max` bytes, else its start and its length, cut on a character
/// boundary (the same on every replay).
pub fn bounded_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let suffix = format!("...[{} bytes]", text.len());
    let mut end = max.saturating_sub(suffix.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", text.get(..end).unwrap_or_default())
}

/// One `key=value` of a record, as raw bytes (a quoted value keeps its quotes).
type Field<'a> = (&'a [u8], &'a [u8]);

/// `audit(<seconds>.<millis>:<serial>): k=v k="v" …` → the serial and the fields.
fn split_record(text: &[u8]) -> Option<(u64, Vec<Field<'_>>)> {
    let text = text.strip_suffix(b"\0").unwrap_or(text);
    let rest = text.strip_prefix(b"audit(")?;
    let close = rest.iter().position(|&b| b == b')')?;
    let stamp = rest.get(..close)?;
    let colon = stamp.iter().rposition(|&b| b == b':')?;
    let serial = std::str::from_utf8(stamp.get(colon + 1..)?)
        .ok()?
        .parse()
        .ok()?;
    let mut rest = rest.get(close + 1..)?.strip_prefix(b":")?;
    let mut fields = Vec::new();
    loop {
        while let Some(stripped) = rest.strip_prefix(b" ") {
            rest = stripped;
        }
        if rest.is_empty() {
            break;
        }
        let eq = rest.iter().position(|&b| b == b'=' || b == b' ')?;
        if rest.get(eq) != Some(&b'=') {
            return None;
        }
        let key = rest.get(..eq)?;
        let after = rest.get(eq + 1..)?;
        let end = if after.first() == Some(&b'"') {
            // The kernel never writes a quote inside a quoted value (it hex-encodes those).
            1 + after.get(1..)?.iter().position(|&b| b == b'"')? + 1
        } else {
            after.iter().position(|&b| b == b' ').unwrap_or(after.len())
        };
        fields.push((key, after.get(..end)?));
        rest = after.get(end..)?;
    }
    Some((serial, fields))
}

/// Gathers one cage's denials from audit records (pure: fed by [`collect_landlock_denials`]).
#[derive(Debug)]
pub struct DenialCollector {
    cage_pid: u32,
    limits: AuditLimits,
    marker: String,
    domain: Option<u64>,
    pending: VecDeque<(u64, u64, LandlockDenial)>,
    denials: Vec<(u64, LandlockDenial)>,
    dropped_count: u64,
    malformed_count: u64,
    records_count: u64,
    records_bytes: u64,
    lost: bool,
    marker_seen: bool,
    deallocated: bool,
}

impl DenialCollector {
    /// `cage_pid`: the host pid of the process that restricted itself (the domain's creator).
    /// `marker`: text of the drain marker this collector will send (unique per run).
    pub fn new(cage_pid: u32, limits: AuditLimits, marker: String) -> DenialCollector {
        DenialCollector {
            cage_pid,
            limits,
            marker,
            domain: None,
            pending: VecDeque::new(),
            denials: Vec::new(),
            dropped_count: 0,
            malformed_count: 0,
            records_count: 0,
            records_bytes: 0,
            lost: false,
            marker_seen: false,
            deallocated: false,
        }
    }

    /// Whether the record or byte budget is used up (the caller stops reading).
    pub fn budget_exhausted(&self) -> bool {
        self.records_count >= self.limits.records_count_max
            || self.records_bytes >= self.limits.records_bytes_max
    }

    /// Whether everything the domain logged has been read: the marker came back, or the domain
    /// was freed (its last record).
    pub fn drained(&self) -> bool {
        self.marker_seen || self.deallocated
    }

    /// The kernel dropped records for the socket.
    pub fn note_lost(&mut self) {
        self.lost = true;
    }

    /// Takes one record into account.
    pub fn observe(&mut self, kind: u16, text: &[u8]) {
        self.records_count = self.records_count.saturating_add(1);
        self.records_bytes = self.records_bytes.saturating_add(text.len() as u64);
        if kind == AUDIT_USER {
            if contains(text, format!("msg='{}'", self.marker).as_bytes()) {
                self.marker_seen = true;
            }
            return;
        }
        match parse_landlock_record(kind, text, self.limits.object_bytes_max) {
            Ok(None) => {}
            Err(_) => self.malformed_count = self.malformed_count.saturating_add(1),
            Ok(Some(LandlockRecord::Access {
                serial,
                domain,
                denial,
            })) => match self.domain {
                Some(ours) if ours == domain => self.keep(serial, denial),
                Some(_) => {}
                None => {
                    if self.pending.len() == PENDING_DENIALS_COUNT_MAX {
                        self.pending.pop_front();
                    }
                    self.pending.push_back((serial, domain, denial));
                }
            },
            Ok(Some(LandlockRecord::DomainAllocated { domain, pid, .. })) => {
                if self.domain.is_none() && pid == self.cage_pid {
                    self.domain = Some(domain);
                    for (serial, of, denial) in std::mem::take(&mut self.pending) {
                        if of == domain {
                            self.keep(serial, denial);
                        }
                    }
                }
            }
            Ok(Some(LandlockRecord::DomainDeallocated { domain, .. })) => {
                if self.domain == Some(domain) {
                    self.deallocated = true;
                }
            }
        }
    }

    fn keep(&mut self, serial: u64, denial: LandlockDenial) {
        if self.denials.len() < self.limits.denials_count_max {
            self.denials.push((serial, denial));
        } else {
            self.dropped_count = self.dropped_count.saturating_add(1);
        }
    }

    /// The denials in audit serial order, and how complete they are (`timed_out`: the drain
    /// deadline passed first).
    pub fn finish(self, timed_out: bool) -> LandlockDenials {
        let collection = if self.lost {
            DenialCollection::RecordsLost
        } else if self.budget_exhausted() && !self.drained() {
            DenialCollection::BudgetExhausted
        } else if timed_out && !self.drained() {
            DenialCollection::DrainTimedOut
        } else {
            DenialCollection::Complete
        };
        let mut denials = self.denials;
        // Records arrive in queue order, which is serial order; sorting (stable) makes it so
        // even if a record of an earlier event was queued late.
        denials.sort_by_key(|(serial, _)| *serial);
        LandlockDenials {
            denials: denials.into_iter().map(|(_, d)| d).collect(),
            dropped_count: self.dropped_count,
            malformed_count: self.malformed_count,
            collection,
        }
    }
}

/// Reads `source` until the workload has ended ([`Received::Woken`]), then sends a drain marker
/// and reads on until it comes back (or the domain is freed, or `limits.drain_timeout` passes).
/// `marker` must be unique among concurrent runs on the host (e.g. launcher pid and cage pid).
/// A thread of its own; [`DenialFollower`] is the same, driven from the caller's event loop.
pub fn collect_landlock_denials(
    source: &mut dyn AuditSource,
    cage_pid: u32,
    limits: AuditLimits,
    marker: String,
) -> LandlockDenials {
    let mut follower = DenialFollower::new(cage_pid, limits, marker);
    while !follower.is_done() {
        let wait = follower.wait();
        follower.step(source, wait);
    }
    follower.finish()
}

/// [`collect_landlock_denials`] as a state machine, for a caller that polls the audit socket
/// (see `AsFd for NetlinkAudit`) in its own event loop: [`DenialFollower::read_ready`] when the
/// socket is readable, [`DenialFollower::workload_ended`] once the cage is gone, then
/// [`DenialFollower::drain`] (or more `read_ready`) until [`DenialFollower::is_done`], then
/// [`DenialFollower::finish`].
#[derive(Debug)]
pub struct DenialFollower {
    collector: DenialCollector,
    limits: AuditLimits,
    /// Set when the workload ended and the marker went out: reading stops by then at the latest.
    drain_deadline: Option<Instant>,
    marker_refused: bool,
    /// Reading the socket failed: the collection is unavailable.
    failed: Option<rustix::io::Errno>,
}

impl DenialFollower {
    /// The serial of the drain marker (our own AUDIT_USER request).
    const MARKER_SEQ: u32 = 3;

    pub fn new(cage_pid: u32, limits: AuditLimits, marker: String) -> DenialFollower {
        DenialFollower {
            collector: DenialCollector::new(cage_pid, limits, marker),
            limits,
            drain_deadline: None,
            marker_refused: false,
            failed: None,
        }
    }

    /// Whether reading is over: the budget is used up, reading failed, or (after the workload
    /// ended) the marker came back, was refused, or the drain timed out.
    pub fn is_done(&self) -> bool {
        if self.cannot_read_on() {
            return true;
        }
        self.drain_deadline.is_some_and(|deadline| {
            self.collector.drained() || self.marker_refused || Instant::now() >= deadline
        })
    }

    /// The budget is used up or reading failed: nothing more will be taken in, deadline or not.
    fn cannot_read_on(&self) -> bool {
        self.collector.budget_exhausted() || self.failed.is_some()
    }

    /// How long the next [`DenialFollower::step`] may wait: the poll interval, cut to the drain
    /// deadline.
    fn wait(&self) -> Duration {
        match self.drain_deadline {
            Some(deadline) => deadline
                .saturating_duration_since(Instant::now())
                .min(self.limits.poll_interval),
            None => self.limits.poll_interval,
        }
    }

    /// Receives one item (waiting up to `wait`) and takes it in; false when nothing came.
    fn step(&mut self, source: &mut dyn AuditSource, wait: Duration) -> bool {
        match source.receive(wait) {
            Ok(Received::Record { kind, text }) => self.collector.observe(kind, &text),
            Ok(Received::Woken) => self.workload_ended(source),
            Ok(Received::Refused { seq, .. }) => {
                if seq == Self::MARKER_SEQ {
                    self.marker_refused = true;
                }
            }
            Ok(Received::Lost) => self.collector.note_lost(),
            Ok(Received::Idle) => return false,
            Err(errno) => self.failed = Some(errno),
        }
        true
    }

    /// Takes in everything queued now, without waiting (call when the socket is readable).
    pub fn read_ready(&mut self, source: &mut dyn AuditSource) {
        while !self.is_done() && self.step(source, Duration::ZERO) {}
    }

    /// The workload is gone: sends the drain marker, which the kernel logs behind every record
    /// of the cage's domain, and starts the drain deadline. Once only.
    pub fn workload_ended(&mut self, source: &mut dyn AuditSource) {
        if self.drain_deadline.is_some() {
            return;
        }
        self.drain_deadline = Some(Instant::now() + self.limits.drain_timeout);
        if source
            .send_user_message(Self::MARKER_SEQ, &self.collector.marker)
            .is_err()
        {
            self.marker_refused = true;
        }
    }

    /// Once the workload is gone: sends the marker if [`DenialFollower::workload_ended`] has not,
    /// takes in what is queued (however long the caller took to come here: the drain deadline may
    /// have passed meanwhile with the marker already in the socket), then reads (waiting) until
    /// [`DenialFollower::is_done`].
    pub fn drain(&mut self, source: &mut dyn AuditSource) {
        self.workload_ended(source);
        while !self.cannot_read_on()
            && !self.collector.drained()
            && self.step(source, Duration::ZERO)
        {}
        while !self.is_done() {
            let wait = self.wait();
            self.step(source, wait);
        }
    }

    pub fn finish(self) -> LandlockDenials {
        if let Some(errno) = self.failed {
            return LandlockDenials {
                collection: DenialCollection::Unavailable(format!(
                    "reading the audit log: {errno}"
                )),
                ..self.collector.finish(true)
            };
        }
        let timed_out = self
            .drain_deadline
            .is_none_or(|deadline| Instant::now() >= deadline);
        self.collector.finish(timed_out || self.marker_refused)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A netlink message: header (native endian) + payload, padded to 4 bytes.
fn netlink_message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = NLMSG_HEADER_BYTES + payload.len();
    let mut message = Vec::with_capacity(len.next_multiple_of(4));
    message.extend_from_slice(&(len as u32).to_ne_bytes());
    message.extend_from_slice(&kind.to_ne_bytes());
    message.extend_from_slice(&flags.to_ne_bytes());
    message.extend_from_slice(&seq.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend_from_slice(payload);
    message.resize(len.next_multiple_of(4), 0);
    message
}

/// One message of a netlink datagram.
#[derive(Debug, PartialEq, Eq)]
struct NetlinkMessage<'a> {
    kind: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The messages of a datagram; stops at the first malformed header.
fn split_netlink(mut data: &[u8]) -> Vec<NetlinkMessage<'_>> {
    let mut messages = Vec::new();
    while data.len() >= NLMSG_HEADER_BYTES {
        let (Some(len), Some(kind), Some(seq)) =
            (read_u32(data, 0), read_u16(data, 4), read_u32(data, 8))
        else {
            break;
        };
        let len = len as usize;
        if len < NLMSG_HEADER_BYTES {
            break;
        }
        // A truncated datagram: keep what arrived of the last record.
        let end = len.min(data.len());
        let Some(payload) = data.get(NLMSG_HEADER_BYTES..end) else {
            break;
        };
        messages.push(NetlinkMessage { kind, seq, payload });
        data = data.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    messages
}

/// The positive errno of an `NLMSG_ERROR` payload (`struct nlmsgerr` starts with `-errno`).
fn error_code(payload: &[u8]) -> i32 {
    read_u32(payload, 0).map_or(libc::EPROTO, |raw| (raw as i32).saturating_neg())
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn read_u16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn timespec(wait: Duration) -> Timespec {
    Timespec {
        tv_sec: wait.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(wait.subsec_nanos()),
    }
}

#[cfg(test)]
#[path = "landlock_audit_tests.rs"]
mod tests;
