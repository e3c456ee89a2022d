//! The decision log: every BISO state change, signed by the node and chained
//! by hash, appended durably.
//!
//! File format (all integers little-endian, canonical encoding of
//! `metanode_core::encoding`):
//!
//! ```text
//! File        = Frame*
//! Frame       = len:u32 SignedEntry            (len <= LOG_ENTRY_LEN_BYTES_MAX)
//! SignedEntry = Entry signature[64]
//! Entry       = version:u8(=1) seq:u64 prev_entry_hash[32] unix_time_s:u64 Kind
//! Kind        = 0 policy_version:u64 policy_digest[32] mode:u8 default_verdict:u8
//!                 green_count:u32 yellow_count:u32 red_count:u32      (PolicyApplied)
//!             | 1 from:u8 to:u8                                       (ModeChanged)
//! ```
//!
//! `seq` starts at 0 and increases by one; `prev_entry_hash` is the entry
//! hash of the previous entry (all zeros for the first). The entry hash is
//! `H(0x1b || canonical Entry)` and the signature is Ed25519 by the node key
//! over its 32 bytes, as the witness record does. Because each entry commits
//! to its predecessor, deleting, reordering or editing an entry breaks the
//! chain at that entry, and [`verify_log`] names it.
//!
//! Durability: each append is one `write` of the whole frame to a file
//! opened `O_APPEND`, then `fdatasync`; the directory is fsynced when the
//! file is created. A crash can leave a torn last frame. [`DecisionLog::open`]
//! refuses such a log ([`OpenLogError::Verify`] with
//! [`LogVerifyError::TornTail`]) rather than appending after garbage;
//! [`DecisionLog::recover_torn_tail`] cuts exactly the torn bytes off (never
//! a complete entry, never a bad signature) and reports how many it cut.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use metanode_core::encoding::{
    Decode, DecodeError, Encode, EncodeError, Reader, Writer, decode_version,
};
use metanode_core::hash::{Hash32, hash_encoded};
use metanode_core::keys::{PublicKey, Signature, SigningKey};
use metanode_core::tags::DomainTag;

use crate::compiled::{CompiledPolicy, Verdict, VerdictCounts};
use crate::limits::LOG_ENTRY_LEN_BYTES_MAX;
use crate::policy::Mode;

/// Version byte of the entry encoding this build writes.
pub const LOG_ENTRY_ENCODING_VERSION: u8 = 1;
const VERSIONS: &[u8] = &[LOG_ENTRY_ENCODING_VERSION];
const FRAME_LEN_PREFIX_BYTES: u64 = 4;

const KIND_POLICY_APPLIED: u8 = 0;
const KIND_MODE_CHANGED: u8 = 1;

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecisionKind {
    /// A compiled policy was applied to the enforcement points.
    PolicyApplied {
        policy_version: u64,
        policy_digest: [u8; 32],
        mode: Mode,
        default_verdict: Verdict,
        /// Prefix rules per light.
        counts: VerdictCounts,
    },
    /// The Bus BIOS mode changed.
    ModeChanged { from: Mode, to: Mode },
}

impl DecisionKind {
    /// The entry for applying `compiled`, made under `mode`.
    pub fn policy_applied(compiled: &CompiledPolicy, mode: Mode) -> DecisionKind {
        DecisionKind::PolicyApplied {
            policy_version: compiled.version,
            policy_digest: compiled.policy_digest,
            mode,
            default_verdict: compiled.default_rule.verdict,
            counts: compiled.verdict_counts(),
        }
    }
}

fn decode_mode(r: &mut Reader<'_>) -> Result<Mode, DecodeError> {
    let offset = r.offset();
    let byte = r.read_u8()?;
    Mode::from_u8(byte).ok_or(DecodeError::InvalidTag {
        what: "mode",
        value: u64::from(byte),
        offset,
    })
}

impl Encode for DecisionKind {
    fn encode(&self, w: &mut Writer) {
        match self {
            DecisionKind::PolicyApplied {
                policy_version,
                policy_digest,
                mode,
                default_verdict,
                counts,
            } => {
                w.put_u8(KIND_POLICY_APPLIED);
                w.put_u64(*policy_version);
                w.put_raw(policy_digest);
                w.put_u8(mode.to_u8());
                w.put_u8(*default_verdict as u8);
                w.put_u32(counts.green_count);
                w.put_u32(counts.yellow_count);
                w.put_u32(counts.red_count);
            }
            DecisionKind::ModeChanged { from, to } => {
                w.put_u8(KIND_MODE_CHANGED);
                w.put_u8(from.to_u8());
                w.put_u8(to.to_u8());
            }
        }
    }
}

impl Decode for DecisionKind {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.read_u8()? {
            KIND_POLICY_APPLIED => {
                let policy_version = r.read_u64()?;
                let policy_digest = r.read_array()?;
                let mode = decode_mode(r)?;
                let verdict_offset = r.offset();
                let byte = r.read_u8()?;
                let default_verdict = Verdict::from_u8(byte).ok_or(DecodeError::InvalidTag {
                    what: "verdict",
                    value: u64::from(byte),
                    offset: verdict_offset,
                })?;
                Ok(DecisionKind::PolicyApplied {
                    policy_version,
                    policy_digest,
                    mode,
                    default_verdict,
                    counts: VerdictCounts {
                        green_count: r.read_u32()?,
                        yellow_count: r.read_u32()?,
                        red_count: r.read_u32()?,
                    },
                })
            }
            KIND_MODE_CHANGED => Ok(DecisionKind::ModeChanged {
                from: decode_mode(r)?,
                to: decode_mode(r)?,
            }),
            value => Err(DecodeError::InvalidTag {
                what: "decision kind",
                value: u64::from(value),
                offset,
            }),
        }
    }
}

/// One log entry (the signed part).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: u64,
    pub prev_entry_hash: Hash32,
    pub unix_time_s: u64,
    pub kind: DecisionKind,
}

impl LogEntry {
    /// `H(0x1b || canonical entry)`: what the signature covers and the next
    /// entry's `prev_entry_hash`.
    pub fn hash(&self) -> Result<Hash32, EncodeError> {
        hash_encoded(DomainTag::BisoDecision, self)
    }
}

impl Encode for LogEntry {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(LOG_ENTRY_ENCODING_VERSION);
        w.put_u64(self.seq);
        self.prev_entry_hash.encode(w);
        w.put_u64(self.unix_time_s);
        self.kind.encode(w);
    }
}

impl Decode for LogEntry {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, VERSIONS)?;
        Ok(LogEntry {
            seq: r.read_u64()?,
            prev_entry_hash: Hash32::decode(r)?,
            unix_time_s: r.read_u64()?,
            kind: DecisionKind::decode(r)?,
        })
    }
}

/// An entry and the node's signature over its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedLogEntry {
    pub entry: LogEntry,
    pub signature: Signature,
}

impl Encode for SignedLogEntry {
    fn encode(&self, w: &mut Writer) {
        self.entry.encode(w);
        self.signature.encode(w);
    }
}

impl Decode for SignedLogEntry {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SignedLogEntry {
            entry: LogEntry::decode(r)?,
            signature: Signature::decode(r)?,
        })
    }
}

// ---------------------------------------------------------------- verify

/// What is wrong with one entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadEntry {
    #[error("frame length {len_bytes} exceeds the {max_bytes}-byte entry limit")]
    FrameTooLarge { len_bytes: u32, max_bytes: u32 },
    #[error("not a canonical entry: {0}")]
    Decode(#[from] DecodeError),
    #[error("sequence number {found}, expected {expected}")]
    Seq { expected: u64, found: u64 },
    #[error("prev_entry_hash {found} does not match the previous entry's hash {expected}")]
    PrevHash { expected: Hash32, found: Hash32 },
    #[error("signature does not verify under node key {}", hex::encode(.public_key))]
    Signature { public_key: [u8; 32] },
    #[error("entry does not fit the canonical encoding: {0}")]
    Encode(#[from] EncodeError),
}

/// Why [`verify_log`] rejected a log. Names the first bad entry by index
/// (0-based, equal to its expected `seq`) and byte offset of its frame.
#[derive(Debug, thiserror::Error)]
pub enum LogVerifyError {
    #[error("cannot read decision log {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("decision log {}: entry {index} at byte {offset}: {reason}", path.display())]
    BadEntry {
        path: PathBuf,
        index: u64,
        offset: u64,
        reason: BadEntry,
    },
    /// The file ends inside a frame: the trace of a crash mid-append.
    #[error("decision log {}: torn tail at entry {index}, byte {offset}: {present_bytes} of {needed_bytes} bytes present", path.display())]
    TornTail {
        path: PathBuf,
        index: u64,
        offset: u64,
        present_bytes: u64,
        /// Bytes the frame needs; 4 when even the length prefix is torn.
        needed_bytes: u64,
    },
}

/// A policy application as the log last recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedPolicy {
    pub policy_version: u64,
    pub policy_digest: [u8; 32],
}

/// A verified log, summarised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogSummary {
    pub entries_count: u64,
    /// Hash of the last entry; zero for an empty log.
    pub last_entry_hash: Hash32,
    pub last_unix_time_s: Option<u64>,
    /// The last policy applied.
    pub policy: Option<AppliedPolicy>,
    /// The mode after the last entry (from a mode change, or the mode a
    /// policy was applied under).
    pub mode: Option<Mode>,
    pub len_bytes: u64,
}

impl LogSummary {
    const EMPTY: LogSummary = LogSummary {
        entries_count: 0,
        last_entry_hash: Hash32::ZERO,
        last_unix_time_s: None,
        policy: None,
        mode: None,
        len_bytes: 0,
    };

    fn absorb(&mut self, entry: &LogEntry, hash: Hash32, frame_len_bytes: u64) {
        self.entries_count += 1;
        self.last_entry_hash = hash;
        self.last_unix_time_s = Some(entry.unix_time_s);
        self.len_bytes += frame_len_bytes;
        match entry.kind {
            DecisionKind::PolicyApplied {
                policy_version,
                policy_digest,
                mode,
                ..
            } => {
                self.policy = Some(AppliedPolicy {
                    policy_version,
                    policy_digest,
                });
                self.mode = Some(mode);
            }
            DecisionKind::ModeChanged { to, .. } => self.mode = Some(to),
        }
    }
}

/// Reads up to `len` bytes; fewer only at end of file.
fn read_up_to(reader: &mut impl Read, len: u64, buf: &mut Vec<u8>) -> io::Result<u64> {
    buf.clear();
    reader.take(len).read_to_end(buf).map(|n| n as u64)
}

fn verify_entry(
    bytes: &[u8],
    summary: &LogSummary,
    key: &PublicKey,
) -> Result<(LogEntry, Hash32), BadEntry> {
    let signed = SignedLogEntry::from_canonical_bytes(bytes)?;
    let entry = signed.entry;
    if entry.seq != summary.entries_count {
        return Err(BadEntry::Seq {
            expected: summary.entries_count,
            found: entry.seq,
        });
    }
    if entry.prev_entry_hash != summary.last_entry_hash {
        return Err(BadEntry::PrevHash {
            expected: summary.last_entry_hash,
            found: entry.prev_entry_hash,
        });
    }
    let hash = entry.hash()?;
    key.verify(hash.as_bytes(), &signed.signature)
        .map_err(|_| BadEntry::Signature {
            public_key: key.to_bytes(),
        })?;
    Ok((entry, hash))
}

fn scan(path: &Path, file: &File, key: &PublicKey) -> Result<LogSummary, LogVerifyError> {
    let read_error = |source| LogVerifyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::new(file);
    let mut summary = LogSummary::EMPTY;
    let mut buf = Vec::new();
    loop {
        let offset = summary.len_bytes;
        let index = summary.entries_count;
        let got = read_up_to(&mut reader, FRAME_LEN_PREFIX_BYTES, &mut buf).map_err(read_error)?;
        if got == 0 {
            return Ok(summary);
        }
        let torn = |present_bytes, needed_bytes| LogVerifyError::TornTail {
            path: path.to_path_buf(),
            index,
            offset,
            present_bytes,
            needed_bytes,
        };
        let Ok(prefix) = <[u8; 4]>::try_from(buf.as_slice()) else {
            return Err(torn(got, FRAME_LEN_PREFIX_BYTES));
        };
        let len_bytes = u32::from_le_bytes(prefix);
        let bad = |reason| LogVerifyError::BadEntry {
            path: path.to_path_buf(),
            index,
            offset,
            reason,
        };
        if len_bytes > LOG_ENTRY_LEN_BYTES_MAX {
            return Err(bad(BadEntry::FrameTooLarge {
                len_bytes,
                max_bytes: LOG_ENTRY_LEN_BYTES_MAX,
            }));
        }
        let got = read_up_to(&mut reader, u64::from(len_bytes), &mut buf).map_err(read_error)?;
        if got < u64::from(len_bytes) {
            return Err(torn(
                FRAME_LEN_PREFIX_BYTES + got,
                FRAME_LEN_PREFIX_BYTES + u64::from(len_bytes),
            ));
        }
        let (entry, hash) = verify_entry(&buf, &summary, key).map_err(bad)?;
        summary.absorb(&entry, hash, FRAME_LEN_PREFIX_BYTES + u64::from(len_bytes));
    }
}

/// Verify a decision log end to end against the node's public key: framing,
/// canonical encoding, sequence, hash chain and every signature. The error
/// names the first bad entry.
pub fn verify_log(path: &Path, key: &PublicKey) -> Result<LogSummary, LogVerifyError> {
    let file = File::open(path).map_err(|source| LogVerifyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    scan(path, &file, key)
}

// ---------------------------------------------------------------- append

/// Why [`DecisionLog::open`] or [`DecisionLog::recover_torn_tail`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenLogError {
    #[error("cannot open decision log {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Verify(#[from] LogVerifyError),
}

/// Why [`DecisionLog::append`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("signing key {} is not the log's key {}", hex::encode(.found), hex::encode(.expected))]
    WrongKey { expected: [u8; 32], found: [u8; 32] },
    #[error("entry does not fit the canonical encoding: {0}")]
    Encode(#[from] EncodeError),
    #[error("writing entry {seq} to decision log {}: {source}", path.display())]
    Write {
        path: PathBuf,
        seq: u64,
        #[source]
        source: io::Error,
    },
    /// An earlier append failed part-way, so the file may end in a torn
    /// frame; appending after it would hide the entry behind garbage.
    #[error("decision log {} is unusable after a failed append; reopen it", path.display())]
    Poisoned { path: PathBuf },
}

/// What [`DecisionLog::recover_torn_tail`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailRecovery {
    /// Complete, verified entries kept.
    pub entries_count: u64,
    /// Torn bytes cut off the end (0 when the tail was clean).
    pub dropped_bytes: u64,
}

/// An open decision log, positioned to append.
#[derive(Debug)]
pub struct DecisionLog {
    path: PathBuf,
    file: File,
    key: PublicKey,
    summary: LogSummary,
    poisoned: bool,
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> OpenLogError + '_ {
    move |source| OpenLogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

impl DecisionLog {
    /// Open (or create) the log at `path`, verifying every existing entry
    /// against `key`. A torn tail or any bad entry is an error: nothing is
    /// appended after an entry that does not verify.
    pub fn open(path: &Path, key: &PublicKey) -> Result<DecisionLog, OpenLogError> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_error(path))?;
        if !existed {
            // The new name must survive a crash along with the entries.
            sync_parent_dir(path).map_err(io_error(path))?;
        }
        let summary = scan(path, &file, key)?;
        Ok(DecisionLog {
            path: path.to_path_buf(),
            file,
            key: *key,
            summary,
            poisoned: false,
        })
    }

    /// Cut a torn last frame (the only damage a crash mid-append leaves)
    /// off the log at `path` and fsync. Any other damage, such as a bad
    /// signature or a broken chain, is returned as an error and nothing is
    /// cut: that is tampering or media failure, and a person must look.
    pub fn recover_torn_tail(path: &Path, key: &PublicKey) -> Result<TailRecovery, OpenLogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error(path))?;
        match scan(path, &file, key) {
            Ok(summary) => Ok(TailRecovery {
                entries_count: summary.entries_count,
                dropped_bytes: 0,
            }),
            Err(LogVerifyError::TornTail {
                index,
                offset,
                present_bytes,
                ..
            }) => {
                file.set_len(offset).map_err(io_error(path))?;
                file.sync_all().map_err(io_error(path))?;
                Ok(TailRecovery {
                    entries_count: index,
                    dropped_bytes: present_bytes,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sign `kind` with `key` (which must be the log's key), chain it to the
    /// previous entry and append it durably (write + fdatasync). Returns the
    /// entry once it is on disk.
    pub fn append(
        &mut self,
        key: &SigningKey,
        unix_time_s: u64,
        kind: DecisionKind,
    ) -> Result<SignedLogEntry, AppendError> {
        if self.poisoned {
            return Err(AppendError::Poisoned {
                path: self.path.clone(),
            });
        }
        if key.public_key() != self.key {
            return Err(AppendError::WrongKey {
                expected: self.key.to_bytes(),
                found: key.public_key().to_bytes(),
            });
        }
        let entry = LogEntry {
            seq: self.summary.entries_count,
            prev_entry_hash: self.summary.last_entry_hash,
            unix_time_s,
            kind,
        };
        let hash = entry.hash()?;
        let signed = SignedLogEntry {
            entry,
            signature: key.sign(hash.as_bytes()),
        };
        let body = signed.to_canonical_bytes()?;
        let len_bytes = u32::try_from(body.len())
            .ok()
            .filter(|len| *len <= LOG_ENTRY_LEN_BYTES_MAX);
        // Entries are fixed-size apart from the kind tag, far below the
        // limit: exceeding it is a bug in this file.
        let len_bytes = len_bytes.expect("a log entry fits the frame limit");
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&len_bytes.to_le_bytes());
        frame.extend_from_slice(&body);
        let result = self
            .file
            .write_all(&frame)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = result {
            self.poisoned = true;
            return Err(AppendError::Write {
                path: self.path.clone(),
                seq: entry.seq,
                source,
            });
        }
        self.summary
            .absorb(&entry, hash, FRAME_LEN_PREFIX_BYTES + u64::from(len_bytes));
        Ok(signed)
    }

    /// [`append`](Self::append) stamped with the system clock.
    pub fn append_now(
        &mut self,
        key: &SigningKey,
        kind: DecisionKind,
    ) -> Result<SignedLogEntry, AppendError> {
        let unix_time_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.append(key, unix_time_s, kind)
    }

    /// The state of the log after the last append.
    pub fn summary(&self) -> LogSummary {
        self.summary
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True after a failed append: the handle refuses further appends and
    /// the log must be reopened (which checks the file and cuts nothing
    /// that verified).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
