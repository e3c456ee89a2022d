//! The consensus safety WAL: the latest [`SafetyState`]-like record, made
//! durable before the vote it protects leaves the node.
//!
//! # Poisoning (why a failed fsync means restart)
//!
//! When writeback of a dirty page fails, Linux reports the error to `fsync`
//! once and then marks the page clean (or drops it): a second `fsync`
//! returns success although the data never reached the disk
//! ("fsyncgate", found by PostgreSQL in 2018, whose answer was to panic and
//! recover from its WAL). Retrying is therefore a lie, and even
//! reading the file back only shows the page cache. After any failed write
//! or sync the WAL refuses every later call with [`WalError::Poisoned`]; the
//! node must exit and restart, and `open` then reads what the disk really
//! holds. Continuing instead could acknowledge a safety state that a crash
//! will roll back, and a validator that forgets a vote can double-sign.
//!
//! [`SafetyState`]: metanode_chain::qbft::SafetyState

use std::convert::Infallible;
use std::io;
use std::marker::PhantomData;

use metanode_core::encoding::{Decode, DecodeError, Encode, EncodeError};
use metanode_core::limits::{CHAIN_WAL_COMPACT_BYTES, CHAIN_WAL_RECORD_BYTES_MAX};

use crate::disk::ChainDisk;
use crate::log::{LogError, OpenError, OpenReport, RecordLog};

/// Why opening or writing the safety WAL failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{op} of wal {name} at offset {offset} failed: {source}")]
    Io {
        name: String,
        op: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("wal {name} is corrupt at offset {offset}: {reason}")]
    Corrupt {
        name: String,
        offset: u64,
        reason: String,
    },
    #[error("wal {name}: record at offset {offset} does not decode: {source}")]
    Decode {
        name: String,
        offset: u64,
        #[source]
        source: DecodeError,
    },
    #[error("safety state does not encode: {0}")]
    Encode(#[from] EncodeError),
    #[error("wal {name}: record of {len} bytes is outside 1..={max}")]
    RecordSize { name: String, len: usize, max: u32 },
    #[error(
        "wal {name} is poisoned by an earlier failure ({cause}); restart the node so it recovers from what is on disk"
    )]
    Poisoned { name: String, cause: String },
}

impl From<LogError> for WalError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Io {
                name,
                op,
                offset,
                source,
            } => WalError::Io {
                name,
                op,
                offset,
                source,
            },
            LogError::Corrupt {
                name,
                offset,
                reason,
            } => WalError::Corrupt {
                name,
                offset,
                reason,
            },
            LogError::RecordSize { name, len, max } => WalError::RecordSize { name, len, max },
            LogError::Poisoned { name, cause } => WalError::Poisoned { name, cause },
        }
    }
}

/// The latest safety record of type `S` in the file `name`: every persist
/// appends one record (or, past [`CHAIN_WAL_COMPACT_BYTES`], atomically
/// rewrites the file with just that record), and opening returns the last
/// valid one.
#[derive(Debug)]
pub struct SafetyWal<D, S> {
    log: RecordLog<D>,
    compactions_count: u64,
    _record: PhantomData<fn(&S) -> S>,
}

impl<D: ChainDisk, S: Encode + Decode> SafetyWal<D, S> {
    /// Opens (or starts) the WAL `name` on `disk` and returns the latest
    /// durable state, None for a fresh WAL. A torn last record (a persist
    /// that never returned Ok) is cut off and reported; damage before
    /// valid records, or a last record that does not decode, is an error.
    pub fn open(disk: D, name: &str) -> Result<(Self, Option<S>, OpenReport), WalError> {
        let mut last: Option<(u64, Vec<u8>)> = None;
        let opened = RecordLog::open(disk, name, CHAIN_WAL_RECORD_BYTES_MAX, |offset, payload| {
            last = Some((offset, payload));
            Ok::<(), Infallible>(())
        });
        let (log, report) = match opened {
            Ok(opened) => opened,
            Err(OpenError::Log(e)) => return Err(e.into()),
            Err(OpenError::Visit(never)) => match never {},
        };
        // Only the last record matters; earlier ones are superseded and are
        // not decoded (their checksums were verified by the scan).
        let state = match last {
            Some((offset, payload)) => Some(S::from_canonical_bytes(&payload).map_err(
                |source| WalError::Decode {
                    name: name.to_owned(),
                    offset,
                    source,
                },
            )?),
            None => None,
        };
        let wal = SafetyWal {
            log,
            compactions_count: 0,
            _record: PhantomData,
        };
        Ok((wal, state, report))
    }

    /// Makes `state` the durable latest record; when this returns Ok it
    /// survives power loss. Any I/O failure poisons the WAL (module docs).
    pub fn persist(&mut self, state: &S) -> Result<(), WalError> {
        self.log.check_writable()?;
        let payload = state.to_canonical_bytes()?;
        let framed_len = self.log.framed_len(payload.len())?;
        if self.log.len_bytes() > 0 && self.log.len_bytes() + framed_len > CHAIN_WAL_COMPACT_BYTES {
            // Only the latest record is ever read, so the file can restart
            // from it; replace is atomic, so a crash leaves the old file
            // (the previous state) or the new one, never neither.
            self.log.replace(&payload)?;
            self.compactions_count += 1;
        } else {
            self.log.append(&payload)?;
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        self.log.name()
    }

    /// Current file size.
    pub fn len_bytes(&self) -> u64 {
        self.log.len_bytes()
    }

    /// Compactions since open.
    pub fn compactions_count(&self) -> u64 {
        self.compactions_count
    }

    pub fn is_poisoned(&self) -> bool {
        self.log.is_poisoned()
    }

    pub fn disk(&self) -> &D {
        self.log.disk()
    }

    /// For fault injection in tests and the simulator.
    pub fn disk_mut(&mut self) -> &mut D {
        self.log.disk_mut()
    }

    /// Gives the disk back (the simulator crashes it and reopens).
    pub fn into_disk(self) -> D {
        self.log.into_disk()
    }
}
