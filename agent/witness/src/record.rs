//! The witness record: what ran, with what, what it produced and what the
//! cage decided; its canonical encoding; Ed25519 signing and verification.
//!
//! Canonical encoding (version 1), fields in this order, integers
//! little-endian, strings `u32` length + UTF-8, `[u8; 32]` raw:
//!
//! ```text
//! Record       = version:u8(=1) RunHeader TraceRoots PolicyDecision
//! RunHeader    = node[32] service:str(<=256) agreement[32] input_root[32]
//!                rng_seed[32] env_root[32] logical_time_ns:u64
//! TraceRoots   = events_root[32] outputs_root[32] state_delta_root[32]
//! PolicyDecision = seccomp_digest[32] landlock_status:u8 landlock_abi:u8
//!                cgroup_mode:u8 namespaces:u16 ExitKind
//!                violations:u32 count (<=64) ViolationRecord*
//!                violations_dropped_count:u64 verdict:u8
//! ExitKind     = 0 code:u8 | 1 signal:u8 | 2 reason:str(<=1024)
//! ViolationRecord = ViolationKind detail:str(<=256)
//! ViolationKind = 0 nr:i64 name:str(<=64) | 1 access:str(<=256) | 2 (oom kill) | 3 (pids limit)
//!                | 4 (wall timeout) | 5 OutputAction mode:u32 path:str(<=512)
//! OutputAction = 0 setid bits stripped | 1 device node removed
//! Verdict      = 0 completed | 1 violated | 2 failed
//! SignedRecord = Record signer[32] signature[64]
//! ```
//!
//! The signature is Ed25519 (RFC 8032, verified strictly) over the 32 bytes
//! of `H(0x13 || canonical Record)`, the record hash.
//!
//! What is in the signed record, and what is not: everything in it is a
//! function of the declared inputs, the policy and the workload's behaviour,
//! so replays of a deterministic workload on any node produce records that
//! differ only in `node` (and the signature). Measurements that vary from run
//! to run on the same inputs — wall time, CPU time, peak memory, pids — are
//! [`ResourceUsage`], reported beside the receipt and never signed or hashed:
//! signing them would make every replay's record differ, and a verifier could
//! not check them anyway. Counts that depend on timing (how many forks the
//! pids limit refused, how many OOM kills) are reduced to "it happened".

use std::fmt;

use metanode_core::encoding::{
    Decode, DecodeError, Encode, EncodeError, Reader, Writer, decode_version,
};
use metanode_core::hash::{Hash32, hash_encoded};
use metanode_core::keys::{PublicKey, PublicKeyError, Signature, SigningKey};
use metanode_core::tags::DomainTag;

use crate::limits::{
    EXIT_FAILED_REASON_LEN_BYTES_MAX, LANDLOCK_ACCESS_LEN_BYTES_MAX,
    OUTPUT_VIOLATION_PATH_LEN_BYTES_MAX, SERVICE_NAME_LEN_BYTES_MAX, SYSCALL_NAME_LEN_BYTES_MAX,
    VIOLATION_DETAIL_LEN_BYTES_MAX, VIOLATIONS_COUNT_MAX,
};
use crate::roots::{Event, EventsError, events_root};

/// Version byte of the record encoding this build writes.
pub const RECORD_ENCODING_VERSION: u8 = 1;
const VERSIONS: &[u8] = &[RECORD_ENCODING_VERSION];

/// Bits of [`PolicyDecision::namespaces`]: which namespaces the cage
/// unshared. Never renumber a bit; a new namespace gets the next free bit
/// and a new record version (old decoders reject unknown bits).
pub mod namespaces {
    pub const USER: u16 = 1 << 0;
    pub const MOUNT: u16 = 1 << 1;
    pub const PID: u16 = 1 << 2;
    pub const IPC: u16 = 1 << 3;
    pub const UTS: u16 = 1 << 4;
    pub const NET: u16 = 1 << 5;
    pub const CGROUP: u16 = 1 << 6;
    pub const TIME: u16 = 1 << 7;
    /// Every bit defined in this version.
    pub const ALL: u16 = USER | MOUNT | PID | IPC | UTS | NET | CGROUP | TIME;

    /// Bit and name of each namespace, in bit order (names as in
    /// `/proc/<pid>/ns/`, except `mount` for `mnt`).
    pub const NAMES: [(u16, &str); 8] = [
        (USER, "user"),
        (MOUNT, "mount"),
        (PID, "pid"),
        (IPC, "ipc"),
        (UTS, "uts"),
        (NET, "net"),
        (CGROUP, "cgroup"),
        (TIME, "time"),
    ];

    /// Names of the namespaces set in `mask`, in bit order; unknown bits are
    /// not named.
    pub fn names(mask: u16) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(bit, _)| mask & bit != 0)
            .map(|(_, name)| *name)
            .collect()
    }
}

// ---------------------------------------------------------------- header

/// What ran, for whom, with what. Every field is an input fixed before the
/// cage starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunHeader {
    /// The node that ran the workload.
    pub node: [u8; 32],
    /// Service name, at most [`SERVICE_NAME_LEN_BYTES_MAX`] bytes.
    pub service: String,
    /// Hash of the agreement the run executes under.
    pub agreement: [u8; 32],
    /// [`crate::input_root`] over the declared inputs.
    pub input_root: [u8; 32],
    /// Seed that fed getrandom and /dev/urandom in the cage; recorded so a
    /// replay can use the same one.
    pub rng_seed: [u8; 32],
    /// [`crate::env_root`] over the environment.
    pub env_root: [u8; 32],
    /// Logical time the cage's clocks start at.
    pub logical_time_ns: u64,
}

impl Encode for RunHeader {
    fn encode(&self, w: &mut Writer) {
        w.put_raw(&self.node);
        w.put_str_bounded(&self.service, SERVICE_NAME_LEN_BYTES_MAX);
        w.put_raw(&self.agreement);
        w.put_raw(&self.input_root);
        w.put_raw(&self.rng_seed);
        w.put_raw(&self.env_root);
        w.put_u64(self.logical_time_ns);
    }
}

impl Decode for RunHeader {
    const ENCODED_LEN_MIN: usize = 32 + 4 + 4 * 32 + 8;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(RunHeader {
            node: r.read_array()?,
            service: r.read_str_bounded(SERVICE_NAME_LEN_BYTES_MAX)?.to_owned(),
            agreement: r.read_array()?,
            input_root: r.read_array()?,
            rng_seed: r.read_array()?,
            env_root: r.read_array()?,
            logical_time_ns: r.read_u64()?,
        })
    }
}

// ---------------------------------------------------------------- roots

/// What the run produced, as Merkle roots. Replays of a deterministic
/// workload must give equal roots, so nothing timing-dependent goes in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceRoots {
    /// [`PolicyDecision::events_root`]: the ordered violations and the exit.
    pub events_root: [u8; 32],
    /// [`crate::OutputsManifest::root`] of the outputs directory.
    pub outputs_root: [u8; 32],
    /// Root of the service state changes the run proposes (defined by the
    /// service; the empty-tree root when there are none).
    pub state_delta_root: [u8; 32],
}

impl TraceRoots {
    /// Names of the roots that differ between `self` and `other`, in field
    /// order: what a replay reports when runs disagree.
    pub fn differing(&self, other: &TraceRoots) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.events_root != other.events_root {
            out.push("events_root");
        }
        if self.outputs_root != other.outputs_root {
            out.push("outputs_root");
        }
        if self.state_delta_root != other.state_delta_root {
            out.push("state_delta_root");
        }
        out
    }
}

impl Encode for TraceRoots {
    fn encode(&self, w: &mut Writer) {
        w.put_raw(&self.events_root);
        w.put_raw(&self.outputs_root);
        w.put_raw(&self.state_delta_root);
    }
}

impl Decode for TraceRoots {
    const ENCODED_LEN_MIN: usize = 3 * 32;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(TraceRoots {
            events_root: r.read_array()?,
            outputs_root: r.read_array()?,
            state_delta_root: r.read_array()?,
        })
    }
}

// ---------------------------------------------------------------- exit

/// How the workload ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// Exited with this status (`WEXITSTATUS`, 0..=255).
    Exited(u8),
    /// Killed by this signal (`WTERMSIG`).
    Signaled(u8),
    /// The cage could not be set up, so the workload never ran; the reason
    /// names the step ("docklock: pivot_root failed: ..."), at most
    /// [`EXIT_FAILED_REASON_LEN_BYTES_MAX`] bytes.
    Failed(String),
}

const EXIT_EXITED: u8 = 0;
const EXIT_SIGNALED: u8 = 1;
const EXIT_FAILED: u8 = 2;

impl Encode for ExitKind {
    fn encode(&self, w: &mut Writer) {
        match self {
            ExitKind::Exited(code) => {
                w.put_u8(EXIT_EXITED);
                w.put_u8(*code);
            }
            ExitKind::Signaled(signal) => {
                w.put_u8(EXIT_SIGNALED);
                w.put_u8(*signal);
            }
            ExitKind::Failed(reason) => {
                w.put_u8(EXIT_FAILED);
                w.put_str_bounded(reason, EXIT_FAILED_REASON_LEN_BYTES_MAX);
            }
        }
    }
}

impl Decode for ExitKind {
    const ENCODED_LEN_MIN: usize = 2;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.read_u8()? {
            EXIT_EXITED => Ok(ExitKind::Exited(r.read_u8()?)),
            EXIT_SIGNALED => Ok(ExitKind::Signaled(r.read_u8()?)),
            EXIT_FAILED => Ok(ExitKind::Failed(
                r.read_str_bounded(EXIT_FAILED_REASON_LEN_BYTES_MAX)?
                    .to_owned(),
            )),
            value => Err(DecodeError::InvalidTag {
                what: "exit kind",
                value: u64::from(value),
                offset,
            }),
        }
    }
}

impl fmt::Display for ExitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitKind::Exited(code) => write!(f, "exited with status {code}"),
            ExitKind::Signaled(signal) => write!(f, "killed by signal {signal}"),
            ExitKind::Failed(reason) => write!(f, "cage set-up failed: {reason}"),
        }
    }
}

// ---------------------------------------------------------------- violations

/// What the policy stopped. Each variant is something the host observes
/// deterministically for a deterministic workload: no pids, addresses,
/// times or counts of timing-dependent events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// A syscall outside the seccomp allowlist, answered with EPERM. The
    /// arguments are not recorded: they hold addresses, which ASLR changes.
    Syscall { nr: i64, name: String },
    /// An access landlock denied, e.g. "fs.write_file /etc/passwd" or
    /// "net.connect_tcp 10.0.0.1:80": the kernel's names of the refused
    /// rights and the path (as resolved inside the cage) or address, read
    /// back from the audit log — never inode numbers, pids or times. Pushed
    /// after the seccomp `Syscall`s and before `OomKill`, in audit serial
    /// order.
    Landlock { access: String },
    /// The memory limit was hit and the kernel OOM-killed a cage process.
    /// This and `PidsLimit` are known only from the cgroup counters after
    /// the run: push them after the seccomp violations, in this order, so
    /// every replay lists them the same way.
    OomKill,
    /// The pids limit refused at least one fork.
    PidsLimit,
    /// The launcher's wall timeout expired and it killed the cage: the exit
    /// signal that follows is the launcher's, not the workload's own.
    WallTimeout,
    /// Something the workload left in its outputs directory that must not
    /// reach the host as is, found by the launcher's scan after the run and
    /// neutralised before the outputs were hashed (so `outputs_root` covers
    /// the neutralised tree). Pushed last, after `WallTimeout`, in the
    /// scan's order (sorted names, depth first), so replays list them alike.
    Output {
        action: OutputAction,
        /// The file's mode as the workload left it (`st_mode`, type bits
        /// included for device nodes), before the launcher acted.
        mode: u32,
        /// Relative to the outputs directory, at most
        /// [`OUTPUT_VIOLATION_PATH_LEN_BYTES_MAX`] bytes (the recorder
        /// shortens longer paths deterministically).
        path: String,
    },
}

/// What the launcher did about an [`ViolationKind::Output`] finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputAction {
    /// A regular file had S_ISUID and/or S_ISGID; the bits were cleared.
    SetidBitsStripped,
    /// A character or block device node; it was removed.
    DeviceNodeRemoved,
}

impl OutputAction {
    /// Short lower-case name, as in the JSON view.
    pub fn name(self) -> &'static str {
        match self {
            OutputAction::SetidBitsStripped => "setid_bits_stripped",
            OutputAction::DeviceNodeRemoved => "device_node_removed",
        }
    }

    const fn code(self) -> u8 {
        match self {
            OutputAction::SetidBitsStripped => 0,
            OutputAction::DeviceNodeRemoved => 1,
        }
    }
}

impl Decode for OutputAction {
    const ENCODED_LEN_MIN: usize = 1;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.read_u8()? {
            0 => Ok(OutputAction::SetidBitsStripped),
            1 => Ok(OutputAction::DeviceNodeRemoved),
            value => Err(DecodeError::InvalidTag {
                what: "output action",
                value: u64::from(value),
                offset,
            }),
        }
    }
}

const VIOLATION_SYSCALL: u8 = 0;
const VIOLATION_LANDLOCK: u8 = 1;
const VIOLATION_OOM_KILL: u8 = 2;
const VIOLATION_PIDS_LIMIT: u8 = 3;
const VIOLATION_WALL_TIMEOUT: u8 = 4;
const VIOLATION_OUTPUT: u8 = 5;

impl ViolationKind {
    /// Short lower-case name, as in the JSON view.
    pub fn name(&self) -> &'static str {
        match self {
            ViolationKind::Syscall { .. } => "syscall",
            ViolationKind::Landlock { .. } => "landlock",
            ViolationKind::OomKill => "oom_kill",
            ViolationKind::PidsLimit => "pids_limit",
            ViolationKind::WallTimeout => "wall_timeout",
            ViolationKind::Output { .. } => "output",
        }
    }
}

impl Encode for ViolationKind {
    fn encode(&self, w: &mut Writer) {
        match self {
            ViolationKind::Syscall { nr, name } => {
                w.put_u8(VIOLATION_SYSCALL);
                w.put_i64(*nr);
                w.put_str_bounded(name, SYSCALL_NAME_LEN_BYTES_MAX);
            }
            ViolationKind::Landlock { access } => {
                w.put_u8(VIOLATION_LANDLOCK);
                w.put_str_bounded(access, LANDLOCK_ACCESS_LEN_BYTES_MAX);
            }
            ViolationKind::OomKill => w.put_u8(VIOLATION_OOM_KILL),
            ViolationKind::PidsLimit => w.put_u8(VIOLATION_PIDS_LIMIT),
            ViolationKind::WallTimeout => w.put_u8(VIOLATION_WALL_TIMEOUT),
            ViolationKind::Output { action, mode, path } => {
                w.put_u8(VIOLATION_OUTPUT);
                w.put_u8(action.code());
                w.put_u32(*mode);
                w.put_str_bounded(path, OUTPUT_VIOLATION_PATH_LEN_BYTES_MAX);
            }
        }
    }
}

impl Decode for ViolationKind {
    const ENCODED_LEN_MIN: usize = 1;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.read_u8()? {
            VIOLATION_SYSCALL => Ok(ViolationKind::Syscall {
                nr: r.read_i64()?,
                name: r.read_str_bounded(SYSCALL_NAME_LEN_BYTES_MAX)?.to_owned(),
            }),
            VIOLATION_LANDLOCK => Ok(ViolationKind::Landlock {
                access: r
                    .read_str_bounded(LANDLOCK_ACCESS_LEN_BYTES_MAX)?
                    .to_owned(),
            }),
            VIOLATION_OOM_KILL => Ok(ViolationKind::OomKill),
            VIOLATION_PIDS_LIMIT => Ok(ViolationKind::PidsLimit),
            VIOLATION_WALL_TIMEOUT => Ok(ViolationKind::WallTimeout),
            VIOLATION_OUTPUT => Ok(ViolationKind::Output {
                action: OutputAction::decode(r)?,
                mode: r.read_u32()?,
                path: r
                    .read_str_bounded(OUTPUT_VIOLATION_PATH_LEN_BYTES_MAX)?
                    .to_owned(),
            }),
            value => Err(DecodeError::InvalidTag {
                what: "violation kind",
                value: u64::from(value),
                offset,
            }),
        }
    }
}

/// One violation, in the order the host observed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViolationRecord {
    pub kind: ViolationKind,
    /// Human-readable context, at most [`VIOLATION_DETAIL_LEN_BYTES_MAX`]
    /// bytes. It is signed and hashed into the events root, so it must be as
    /// deterministic as the kind: no pids, addresses or times.
    pub detail: String,
}

impl Encode for ViolationRecord {
    fn encode(&self, w: &mut Writer) {
        self.kind.encode(w);
        w.put_str_bounded(&self.detail, VIOLATION_DETAIL_LEN_BYTES_MAX);
    }
}

impl Decode for ViolationRecord {
    const ENCODED_LEN_MIN: usize = 1 + 4;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ViolationRecord {
            kind: ViolationKind::decode(r)?,
            detail: r
                .read_str_bounded(VIOLATION_DETAIL_LEN_BYTES_MAX)?
                .to_owned(),
        })
    }
}

// ---------------------------------------------------------------- verdict

/// The cage's overall judgement, derived from the exit and the violations
/// (see [`Verdict::for_outcome`]); a record whose verdict disagrees with its
/// own exit and violations does not sign or verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The workload ran to its end (by exit or signal) without violating the
    /// policy.
    Completed,
    /// The workload ran and the policy stopped at least one action.
    Violated,
    /// The cage could not be set up; the workload did not run.
    Failed,
}

impl Verdict {
    /// The verdict for a run that ended with `exit` after
    /// `violations_total_count` violations.
    pub fn for_outcome(exit: &ExitKind, violations_total_count: u64) -> Verdict {
        match exit {
            ExitKind::Failed(_) => Verdict::Failed,
            _ if violations_total_count > 0 => Verdict::Violated,
            _ => Verdict::Completed,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Completed => "completed",
            Verdict::Violated => "violated",
            Verdict::Failed => "failed",
        }
    }

    const fn code(self) -> u8 {
        match self {
            Verdict::Completed => 0,
            Verdict::Violated => 1,
            Verdict::Failed => 2,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Encode for Verdict {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(self.code());
    }
}

impl Decode for Verdict {
    const ENCODED_LEN_MIN: usize = 1;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.read_u8()? {
            0 => Ok(Verdict::Completed),
            1 => Ok(Verdict::Violated),
            2 => Ok(Verdict::Failed),
            value => Err(DecodeError::InvalidTag {
                what: "verdict",
                value: u64::from(value),
                offset,
            }),
        }
    }
}

// ---------------------------------------------------------------- decision

/// How the cage was built and what it decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDecision {
    /// `CompiledSeccomp::digest()`: BLAKE3 of the installed BPF programs.
    pub seccomp_digest: [u8; 32],
    /// `LandlockStatus::code()` from metanode-confine.
    pub landlock_status: u8,
    /// Landlock ABI version the kernel offered.
    pub landlock_abi: u8,
    /// `CgroupMode` code from metanode-cgroup.
    pub cgroup_mode: u8,
    /// Bits from [`namespaces`]; unknown bits are rejected.
    pub namespaces: u16,
    pub exit: ExitKind,
    /// The first [`VIOLATIONS_COUNT_MAX`] violations, in observed order
    /// (use [`PolicyDecision::push_violation`]).
    pub violations: Vec<ViolationRecord>,
    /// Violations observed after the list was full.
    pub violations_dropped_count: u64,
    pub verdict: Verdict,
}

impl PolicyDecision {
    /// Appends `violation`, or counts it in `violations_dropped_count` once
    /// the list holds [`VIOLATIONS_COUNT_MAX`], so a workload that triggers
    /// millions of denials still yields a bounded, signable record.
    pub fn push_violation(&mut self, violation: ViolationRecord) {
        if self.violations.len() < VIOLATIONS_COUNT_MAX as usize {
            self.violations.push(violation);
        } else {
            self.violations_dropped_count = self.violations_dropped_count.saturating_add(1);
        }
    }

    /// Listed plus dropped violations.
    pub fn violations_total_count(&self) -> u64 {
        (self.violations.len() as u64).saturating_add(self.violations_dropped_count)
    }

    /// The verdict this decision's exit and violations call for.
    pub fn expected_verdict(&self) -> Verdict {
        Verdict::for_outcome(&self.exit, self.violations_total_count())
    }

    /// The ordered events the events root commits to: each listed violation,
    /// then `ViolationsDropped` if any were dropped, then the exit.
    pub fn events(&self) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .violations
            .iter()
            .cloned()
            .map(Event::Violation)
            .collect();
        if self.violations_dropped_count > 0 {
            events.push(Event::ViolationsDropped {
                count: self.violations_dropped_count,
            });
        }
        events.push(Event::Exit(self.exit.clone()));
        events
    }

    /// [`events_root`] over [`PolicyDecision::events`]: the value for
    /// [`TraceRoots::events_root`].
    pub fn events_root(&self) -> Result<Hash32, EventsError> {
        events_root(&self.events())
    }
}

impl Encode for PolicyDecision {
    fn encode(&self, w: &mut Writer) {
        w.put_raw(&self.seccomp_digest);
        w.put_u8(self.landlock_status);
        w.put_u8(self.landlock_abi);
        w.put_u8(self.cgroup_mode);
        w.put_u16(self.namespaces);
        self.exit.encode(w);
        w.put_seq_bounded(&self.violations, VIOLATIONS_COUNT_MAX);
        w.put_u64(self.violations_dropped_count);
        self.verdict.encode(w);
    }
}

impl Decode for PolicyDecision {
    const ENCODED_LEN_MIN: usize = 32 + 1 + 1 + 1 + 2 + ExitKind::ENCODED_LEN_MIN + 4 + 8 + 1;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let seccomp_digest = r.read_array()?;
        let landlock_status = r.read_u8()?;
        let landlock_abi = r.read_u8()?;
        let cgroup_mode = r.read_u8()?;
        let ns_offset = r.offset();
        let namespaces = r.read_u16()?;
        if namespaces & !namespaces::ALL != 0 {
            return Err(DecodeError::Invalid {
                what: "namespaces",
                offset: ns_offset,
                reason: format!(
                    "unknown namespace bits {:#06x}",
                    namespaces & !namespaces::ALL
                ),
            });
        }
        Ok(PolicyDecision {
            seccomp_digest,
            landlock_status,
            landlock_abi,
            cgroup_mode,
            namespaces,
            exit: ExitKind::decode(r)?,
            violations: r.read_seq_bounded(VIOLATIONS_COUNT_MAX)?,
            violations_dropped_count: r.read_u64()?,
            verdict: Verdict::decode(r)?,
        })
    }
}

// ---------------------------------------------------------------- record

/// Why a record contradicts itself. Signing refuses such a record and
/// verification rejects one, so a receipt that verifies is also coherent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    #[error("namespaces has unknown bits {bits:#06x}")]
    UnknownNamespaceBits { bits: u16 },
    #[error(
        "violations_dropped_count is {dropped} but only {listed} violations are listed (the list holds {max} before dropping)"
    )]
    DroppedBeforeListFull {
        dropped: u64,
        listed: usize,
        max: u32,
    },
    #[error("verdict is {recorded} but the exit and violations call for {expected}")]
    VerdictMismatch {
        recorded: Verdict,
        expected: Verdict,
    },
    #[error("events_root is {recorded} but the decision's events hash to {computed}")]
    EventsRootMismatch { recorded: Hash32, computed: Hash32 },
    #[error("cannot compute the events root: {0}")]
    Events(#[from] EventsError),
}

/// Why [`Record::sign`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("record does not fit the canonical encoding: {0}")]
    Encode(#[from] EncodeError),
    #[error("record is inconsistent: {0}")]
    Inconsistent(#[from] ConsistencyError),
}

/// The signed part of a receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub header: RunHeader,
    pub roots: TraceRoots,
    pub decision: PolicyDecision,
}

impl Record {
    /// `H(0x13 || canonical record)`: what the signature covers.
    pub fn hash(&self) -> Result<Hash32, EncodeError> {
        hash_encoded(DomainTag::DocklockRecord, self)
    }

    /// Checks that the record agrees with itself: known namespace bits, no
    /// dropped violations before the list is full, the verdict matches the
    /// exit and violations, and the events root matches the decision.
    pub fn check_consistency(&self) -> Result<(), ConsistencyError> {
        let d = &self.decision;
        let unknown = d.namespaces & !namespaces::ALL;
        if unknown != 0 {
            return Err(ConsistencyError::UnknownNamespaceBits { bits: unknown });
        }
        if d.violations_dropped_count > 0 && d.violations.len() < VIOLATIONS_COUNT_MAX as usize {
            return Err(ConsistencyError::DroppedBeforeListFull {
                dropped: d.violations_dropped_count,
                listed: d.violations.len(),
                max: VIOLATIONS_COUNT_MAX,
            });
        }
        let expected = d.expected_verdict();
        if d.verdict != expected {
            return Err(ConsistencyError::VerdictMismatch {
                recorded: d.verdict,
                expected,
            });
        }
        let computed = d.events_root()?;
        if computed.to_bytes() != self.roots.events_root {
            return Err(ConsistencyError::EventsRootMismatch {
                recorded: Hash32(self.roots.events_root),
                computed,
            });
        }
        Ok(())
    }

    /// Signs the record hash with `key` after checking the record is
    /// consistent and within its encoding bounds.
    pub fn sign(&self, key: &SigningKey) -> Result<SignedRecord, SignError> {
        self.check_consistency()?;
        let hash = self.hash()?;
        Ok(SignedRecord {
            record: self.clone(),
            signer: key.public_key().to_bytes(),
            signature: key.sign(hash.as_bytes()).to_bytes(),
        })
    }
}

impl Encode for Record {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(RECORD_ENCODING_VERSION);
        self.header.encode(w);
        self.roots.encode(w);
        self.decision.encode(w);
    }
}

impl Decode for Record {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, VERSIONS)?;
        Ok(Record {
            header: RunHeader::decode(r)?,
            roots: TraceRoots::decode(r)?,
            decision: PolicyDecision::decode(r)?,
        })
    }
}

// ---------------------------------------------------------------- signed

/// Why a signed record was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("invalid signer: {source}")]
    InvalidSigner {
        signer: [u8; 32],
        source: PublicKeyError,
    },
    #[error("record was signed by {}, expected {}", hex::encode(.found), hex::encode(.expected))]
    UnexpectedSigner { expected: [u8; 32], found: [u8; 32] },
    #[error("record does not fit the canonical encoding: {0}")]
    Encode(#[from] EncodeError),
    #[error("signature does not verify for record {record_hash} under signer {}", hex::encode(.signer))]
    BadSignature {
        record_hash: Hash32,
        signer: [u8; 32],
    },
    #[error("record is signed but inconsistent: {0}")]
    Inconsistent(#[from] ConsistencyError),
}

/// A record with its signer's Ed25519 signature over the record hash: the
/// receipt, stored as its canonical bytes in a `.dlr` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRecord {
    pub record: Record,
    pub signer: [u8; 32],
    pub signature: [u8; 64],
}

impl SignedRecord {
    /// Checks the signature against `signer` (strict Ed25519) and the
    /// record's consistency. Says nothing about whether `signer` is a node
    /// you trust: use [`SignedRecord::verify_with`] for that.
    pub fn verify(&self) -> Result<(), VerifyError> {
        let key =
            PublicKey::from_bytes(&self.signer).map_err(|source| VerifyError::InvalidSigner {
                signer: self.signer,
                source,
            })?;
        let record_hash = self.record.hash()?;
        key.verify(record_hash.as_bytes(), &Signature(self.signature))
            .map_err(|_| VerifyError::BadSignature {
                record_hash,
                signer: self.signer,
            })?;
        self.record.check_consistency()?;
        Ok(())
    }

    /// [`SignedRecord::verify`], and the signer must be `expected_signer`.
    pub fn verify_with(&self, expected_signer: &PublicKey) -> Result<(), VerifyError> {
        if self.signer != expected_signer.to_bytes() {
            return Err(VerifyError::UnexpectedSigner {
                expected: expected_signer.to_bytes(),
                found: self.signer,
            });
        }
        self.verify()
    }
}

impl Encode for SignedRecord {
    fn encode(&self, w: &mut Writer) {
        self.record.encode(w);
        w.put_raw(&self.signer);
        w.put_raw(&self.signature);
    }
}

impl Decode for SignedRecord {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SignedRecord {
            record: Record::decode(r)?,
            signer: r.read_array()?,
            signature: r.read_array()?,
        })
    }
}

// ---------------------------------------------------------------- usage

/// Resources one run used. Reported beside the receipt (run output, bench
/// rows, billing) and deliberately outside the signed record: these vary
/// between runs of identical inputs, so signing them would make replays
/// disagree, and no verifier could recompute them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResourceUsage {
    pub memory_peak_bytes: u64,
    pub cpu_usage_us: u64,
    pub pids_peak: u64,
    pub wall_ns: u64,
}
