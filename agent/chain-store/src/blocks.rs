//! The finalized block log: every block with its commit certificate, in
//! height order, anchored to the genesis hash.
//!
//! The file `blocks.log` is a record log (`len | crc32c | payload`, see
//! the crate docs) of canonical [`FinalizedBlock`] encodings, block 1
//! first. Opening rebuilds an index of
//! record offsets and re-checks the chain's shape: heights consecutive from
//! 1, each `prev_hash` equal to the previous block's hash (block 1's to the
//! genesis hash), each certificate naming its block's height and hash.
//!
//! Certificates are **not** re-verified here: the store does not know the
//! validator sets. The node verifies a block's certificate against the set
//! of its height before appending it (consensus `Decided` blocks are
//! certified by the engine; synced blocks by the engine's `SyncedBlock`
//! check), and a node receiving blocks from [`BlockStore::range`] over block
//! sync verifies them the same way. What the store guarantees is that it
//! returns exactly the bytes it acknowledged, in an unbroken hash chain.

use std::io;

use metanode_chain::types::{FinalizedBlock, Height};
use metanode_core::encoding::{Decode, Encode, EncodeError};
use metanode_core::hash::Hash32;
use metanode_core::limits::CHAIN_BLOCK_RECORD_BYTES_MAX;

use crate::disk::ChainDisk;
use crate::log::{LogError, OpenError, OpenReport, RECORD_HEADER_BYTES, RecordLog};

/// File name of the block log inside the node's chain directory.
pub const BLOCKS_LOG_NAME: &str = "blocks.log";

/// Why opening, appending to or reading the block store failed.
#[derive(Debug, thiserror::Error)]
pub enum BlockStoreError {
    #[error("{op} of {name} at offset {offset} failed: {source}")]
    Io {
        name: String,
        op: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// Damage to the stored block of `height`: framing (checksum, length)
    /// not explainable as a torn write, or a record with a good checksum
    /// whose block breaks the chain (wrong height, broken link, mismatched
    /// certificate) or does not decode.
    #[error("{name}: stored block at offset {offset} (height {height}) is corrupt: {reason}")]
    Corrupt {
        name: String,
        offset: u64,
        height: Height,
        reason: String,
    },
    #[error("block at height {found} refused: the next height is {expected}")]
    WrongHeight { expected: Height, found: Height },
    #[error(
        "block at height {height} refused: prev_hash {found_prev} is not the hash of the tip {expected_prev}"
    )]
    BrokenLink {
        height: Height,
        expected_prev: Hash32,
        found_prev: Hash32,
    },
    #[error("block at height {height} refused: {reason}")]
    CertificateMismatch { height: Height, reason: String },
    #[error("block at height {height} does not encode: {source}")]
    Encode {
        height: Height,
        #[source]
        source: EncodeError,
    },
    #[error("{name}: record of {len} bytes is outside 1..={max}")]
    RecordSize { name: String, len: usize, max: u32 },
    #[error(
        "{name} is poisoned by an earlier failure ({cause}); restart the node so it recovers from what is on disk"
    )]
    Poisoned { name: String, cause: String },
}

impl BlockStoreError {
    /// Converts a log failure concerning the block of `height`.
    fn from_log(e: LogError, height: Height) -> Self {
        match e {
            LogError::Io {
                name,
                op,
                offset,
                source,
            } => BlockStoreError::Io {
                name,
                op,
                offset,
                source,
            },
            LogError::Corrupt {
                name,
                offset,
                reason,
            } => BlockStoreError::Corrupt {
                name,
                offset,
                height,
                reason,
            },
            LogError::RecordSize { name, len, max } => {
                BlockStoreError::RecordSize { name, len, max }
            }
            LogError::Poisoned { name, cause } => BlockStoreError::Poisoned { name, cause },
        }
    }
}

/// Why a block cannot follow the tip (shared by append and open).
enum Refusal {
    Height(Height),
    Link(Hash32),
    Certificate(String),
}

/// Checks that `block` extends a chain whose tip is `(expected - 1,
/// prev_hash)`; returns the block's hash.
fn check_next(
    block: &FinalizedBlock,
    expected: Height,
    prev_hash: &Hash32,
) -> Result<Hash32, Refusal> {
    let header = &block.block.header;
    if header.height != expected {
        return Err(Refusal::Height(header.height));
    }
    if header.prev_hash != *prev_hash {
        return Err(Refusal::Link(header.prev_hash));
    }
    let hash = header.hash();
    let cert = &block.certificate;
    if cert.height != header.height {
        return Err(Refusal::Certificate(format!(
            "certificate is for height {}",
            cert.height
        )));
    }
    if cert.block_hash != hash {
        return Err(Refusal::Certificate(format!(
            "certificate is for block {}, the block hashes to {hash}",
            cert.block_hash
        )));
    }
    Ok(hash)
}

impl Refusal {
    fn describe(&self, expected: Height, prev_hash: &Hash32) -> String {
        match self {
            Refusal::Height(found) => format!("height {found}, expected {expected}"),
            Refusal::Link(found) => {
                format!("prev_hash {found} is not the previous block's hash {prev_hash}")
            }
            Refusal::Certificate(reason) => reason.clone(),
        }
    }
}

/// Append-only store of finalized blocks with an in-memory height index.
#[derive(Debug)]
pub struct BlockStore<D> {
    log: RecordLog<D>,
    genesis_hash: Hash32,
    /// End offset of each record: block `h` spans `ends[h - 2]` (0 for
    /// h = 1) to `ends[h - 1]`. Heights are dense from 1, so this is the
    /// whole index: 8 bytes per block.
    ends: Vec<u64>,
    /// Hash of the highest block, or the genesis hash.
    tip_hash: Hash32,
}

impl<D: ChainDisk> BlockStore<D> {
    /// Opens (or starts) `blocks.log` on `disk` for the chain whose genesis
    /// hash is `genesis_hash`, checking the whole chain's linkage.
    pub fn open(disk: D, genesis_hash: Hash32) -> Result<(Self, OpenReport), BlockStoreError> {
        let mut ends: Vec<u64> = Vec::new();
        let mut tip_hash = genesis_hash;
        let opened = RecordLog::open(
            disk,
            BLOCKS_LOG_NAME,
            CHAIN_BLOCK_RECORD_BYTES_MAX,
            |offset, payload| {
                let height = ends.len() as Height + 1;
                let invalid = |reason: String| BlockStoreError::Corrupt {
                    name: BLOCKS_LOG_NAME.to_owned(),
                    offset,
                    height,
                    reason,
                };
                let block = FinalizedBlock::from_canonical_bytes(&payload)
                    .map_err(|e| invalid(format!("does not decode: {e}")))?;
                tip_hash = check_next(&block, height, &tip_hash)
                    .map_err(|r| invalid(r.describe(height, &tip_hash)))?;
                ends.push(offset + RECORD_HEADER_BYTES + payload.len() as u64);
                Ok(())
            },
        );
        let (log, report) = match opened {
            Ok(opened) => opened,
            // A log failure concerns the record after the last good one.
            Err(OpenError::Log(e)) => {
                return Err(BlockStoreError::from_log(e, ends.len() as Height + 1));
            }
            Err(OpenError::Visit(e)) => return Err(e),
        };
        let store = BlockStore {
            log,
            genesis_hash,
            ends,
            tip_hash,
        };
        Ok((store, report))
    }

    /// Appends the block at `tip + 1`, durable when this returns Ok. The
    /// certificate must already be verified by the caller (module docs).
    pub fn append(&mut self, block: &FinalizedBlock) -> Result<(), BlockStoreError> {
        let expected = self.height() + 1;
        self.log
            .check_writable()
            .map_err(|e| BlockStoreError::from_log(e, expected))?;
        let hash = match check_next(block, expected, &self.tip_hash) {
            Ok(hash) => hash,
            Err(Refusal::Height(found)) => {
                return Err(BlockStoreError::WrongHeight { expected, found });
            }
            Err(Refusal::Link(found_prev)) => {
                return Err(BlockStoreError::BrokenLink {
                    height: expected,
                    expected_prev: self.tip_hash,
                    found_prev,
                });
            }
            Err(Refusal::Certificate(reason)) => {
                return Err(BlockStoreError::CertificateMismatch {
                    height: expected,
                    reason,
                });
            }
        };
        let payload = block
            .to_canonical_bytes()
            .map_err(|source| BlockStoreError::Encode {
                height: expected,
                source,
            })?;
        let offset = self
            .log
            .append(&payload)
            .map_err(|e| BlockStoreError::from_log(e, expected))?;
        // The record must start where the index says the last one ended, or
        // every later offset would be wrong.
        assert_eq!(
            offset,
            self.ends.last().copied().unwrap_or(0),
            "block log offset drifted from its index"
        );
        self.ends.push(self.log.len_bytes());
        self.tip_hash = hash;
        Ok(())
    }

    /// The block at `height`, None for 0 (genesis has no block) or above
    /// the tip. Reads from disk and re-checks the record's checksum.
    pub fn get(&self, height: Height) -> Result<Option<FinalizedBlock>, BlockStoreError> {
        let Some((start, end)) = self.span(height) else {
            return Ok(None);
        };
        let invalid = |reason: String| BlockStoreError::Corrupt {
            name: BLOCKS_LOG_NAME.to_owned(),
            offset: start,
            height,
            reason,
        };
        let payload = self
            .log
            .read_record(start, end - start)
            .map_err(|e| BlockStoreError::from_log(e, height))?;
        let block = FinalizedBlock::from_canonical_bytes(&payload)
            .map_err(|e| invalid(format!("does not decode: {e}")))?;
        if block.block.header.height != height {
            return Err(invalid(format!(
                "record holds height {}",
                block.block.header.height
            )));
        }
        Ok(Some(block))
    }

    /// Blocks `from..=to_inclusive` clipped to `1..=tip`, in order, stopping
    /// before the one that would take the total encoded size past
    /// `max_bytes` — except that the first block is always included, so
    /// block sync progresses even past a block larger than the budget.
    pub fn range(
        &self,
        from: Height,
        to_inclusive: Height,
        max_bytes: u64,
    ) -> Result<Vec<FinalizedBlock>, BlockStoreError> {
        let to = to_inclusive.min(self.height());
        let mut out = Vec::new();
        let mut total_bytes = 0u64;
        for height in from.max(1)..=to {
            let Some((start, end)) = self.span(height) else {
                break;
            };
            let size_bytes = end - start - RECORD_HEADER_BYTES;
            if !out.is_empty() && total_bytes + size_bytes > max_bytes {
                break;
            }
            match self.get(height)? {
                Some(block) => out.push(block),
                None => break,
            }
            total_bytes += size_bytes;
        }
        Ok(out)
    }

    /// Height and hash of the highest stored block; None before block 1.
    pub fn tip(&self) -> Option<(Height, Hash32)> {
        (!self.ends.is_empty()).then_some((self.height(), self.tip_hash))
    }

    /// Highest stored height, 0 when empty.
    pub fn height(&self) -> Height {
        self.ends.len() as Height
    }

    /// Hash of the highest block, or the genesis hash when empty: what the
    /// next block's `prev_hash` must be.
    pub fn tip_hash(&self) -> Hash32 {
        self.tip_hash
    }

    pub fn genesis_hash(&self) -> Hash32 {
        self.genesis_hash
    }

    /// Size of the block log.
    pub fn len_bytes(&self) -> u64 {
        self.log.len_bytes()
    }

    /// True after a failed write: `append` then refuses with
    /// [`BlockStoreError::Poisoned`] until the node restarts (see
    /// [`crate::wal`] for why). Reads stay allowed: every indexed record was
    /// synced before the failure, so what they return was acknowledged.
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

    /// Byte range of the record of `height` in the log.
    fn span(&self, height: Height) -> Option<(u64, u64)> {
        let index = usize::try_from(height.checked_sub(1)?).ok()?;
        let end = *self.ends.get(index)?;
        let start = match index.checked_sub(1) {
            Some(prev) => *self.ends.get(prev)?,
            None => 0,
        };
        Some((start, end))
    }
}
