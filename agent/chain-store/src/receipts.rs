//! The receipt log: each finalized block's receipts, in height order, so a
//! node can answer "where did my transaction land and what happened" without
//! keeping every receipt in memory.
//!
//! The file `receipts.log` is a record log (`len | crc32c | payload`, see the
//! crate docs); record `h` holds the receipts of block `h`:
//! `version u8 (1) | height u64 | block hash | count u32 | receipt*`
//! (canonical [`Receipt`] encodings, one per transaction, in block order).
//!
//! Receipts are *derived* data: replaying the block log through the
//! application recomputes them. The node appends a block's receipts right
//! after the block itself is durable, so after a crash this log is at most
//! one block behind the block log (the node re-appends from its replay), and
//! it can be ahead only when the block log lost its last record (a torn or
//! rotten tail that a peer supplies again). [`ReceiptStore::truncated`] cuts
//! it back for that case, and each record names its block's hash so a log
//! that does not belong to the block log beside it is noticed at start
//! ([`ReceiptStore::block_hash`]) rather than served.

use std::io;

use metanode_chain::types::{Height, Receipt};
use metanode_core::encoding::{
    Decode, DecodeError, Encode, EncodeError, Reader, Writer, decode_version,
};
use metanode_core::hash::Hash32;
use metanode_core::limits::{
    CHAIN_BLOCK_TXS_COUNT_MAX, CHAIN_LOG_TAIL_SCAN_BYTES_MAX, CHAIN_RECEIPT_OUTPUT_BYTES_MAX,
};

use crate::disk::ChainDisk;
use crate::log::{LogError, OpenError, OpenReport, RECORD_HEADER_BYTES, RecordLog};

/// File name of the receipt log inside the node's chain directory.
pub const RECEIPTS_LOG_NAME: &str = "receipts.log";

const RECEIPTS_RECORD_VERSIONS: &[u8] = &[1];

/// Largest encoded receipt: version, tx hash, status, fee, output length
/// prefix and the largest output.
const RECEIPT_BYTES_MAX: u64 = 1 + 32 + 4 + 8 + 4 + CHAIN_RECEIPT_OUTPUT_BYTES_MAX as u64;
/// Largest record: the receipts of a block with the most transactions, each
/// with the largest output (about 83 MB; real blocks are far smaller, but a
/// bound below what a valid block can produce would make it unstorable).
pub const RECEIPTS_RECORD_BYTES_MAX: u32 =
    (1 + 8 + 32 + 4 + CHAIN_BLOCK_TXS_COUNT_MAX as u64 * RECEIPT_BYTES_MAX) as u32;

const _: () = assert!(
    1 + 8 + 32 + 4 + CHAIN_BLOCK_TXS_COUNT_MAX as u64 * RECEIPT_BYTES_MAX < u32::MAX as u64 - 8
);
// Opening scans past a bad record for valid ones (torn tail or damage?);
// the scan bound must cover several records, as for the other logs.
const _: () = assert!(CHAIN_LOG_TAIL_SCAN_BYTES_MAX >= 8 * RECEIPTS_RECORD_BYTES_MAX as u64);

/// Why opening, appending to or reading the receipt log failed.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptStoreError {
    #[error("{op} of {name} at offset {offset} failed: {source}")]
    Io {
        name: String,
        op: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// Damage to the receipts of `height`: framing not explainable as a
    /// torn write, or a record with a good checksum that does not decode or
    /// is not for the height its position says.
    #[error("{name}: receipts at offset {offset} (height {height}) are corrupt: {reason}")]
    Corrupt {
        name: String,
        offset: u64,
        height: Height,
        reason: String,
    },
    #[error("receipts for height {found} refused: the next height is {expected}")]
    WrongHeight { expected: Height, found: Height },
    #[error("receipts for height {height} do not encode: {source}")]
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

impl ReceiptStoreError {
    fn from_log(e: LogError, height: Height) -> Self {
        match e {
            LogError::Io {
                name,
                op,
                offset,
                source,
            } => ReceiptStoreError::Io {
                name,
                op,
                offset,
                source,
            },
            LogError::Corrupt {
                name,
                offset,
                reason,
            } => ReceiptStoreError::Corrupt {
                name,
                offset,
                height,
                reason,
            },
            LogError::RecordSize { name, len, max } => {
                ReceiptStoreError::RecordSize { name, len, max }
            }
            LogError::Poisoned { name, cause } => ReceiptStoreError::Poisoned { name, cause },
        }
    }
}

/// The receipts of one finalized block, as stored.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BlockReceipts {
    pub height: Height,
    /// Hash of the block whose execution produced them.
    pub block_hash: Hash32,
    /// One per transaction, in block order.
    pub receipts: Vec<Receipt>,
}

impl Encode for BlockReceipts {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(RECEIPTS_RECORD_VERSIONS[0]);
        w.put_u64(self.height);
        self.block_hash.encode(w);
        w.put_seq_bounded(&self.receipts, CHAIN_BLOCK_TXS_COUNT_MAX);
    }
}

impl Decode for BlockReceipts {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, RECEIPTS_RECORD_VERSIONS)?;
        Ok(BlockReceipts {
            height: r.read_u64()?,
            block_hash: Hash32::decode(r)?,
            receipts: r.read_seq_bounded(CHAIN_BLOCK_TXS_COUNT_MAX)?,
        })
    }
}

/// Append-only store of per-block receipts with an in-memory height index.
#[derive(Debug)]
pub struct ReceiptStore<D> {
    log: RecordLog<D>,
    /// End offset of each record (record `h` spans `ends[h - 2]`, or 0, to
    /// `ends[h - 1]`), as in the block store.
    ends: Vec<u64>,
    /// Block hash of each record, checked against the block log at start.
    hashes: Vec<Hash32>,
}

impl<D: ChainDisk> ReceiptStore<D> {
    /// Opens (or starts) `receipts.log` on `disk`; checks that the records
    /// decode and are for heights 1, 2, 3, … in order. A torn last record
    /// is cut off and reported.
    pub fn open(disk: D) -> Result<(Self, OpenReport), ReceiptStoreError> {
        let mut ends: Vec<u64> = Vec::new();
        let mut hashes: Vec<Hash32> = Vec::new();
        let opened = RecordLog::open(
            disk,
            RECEIPTS_LOG_NAME,
            RECEIPTS_RECORD_BYTES_MAX,
            |offset, payload| {
                let height = ends.len() as Height + 1;
                let invalid = |reason: String| ReceiptStoreError::Corrupt {
                    name: RECEIPTS_LOG_NAME.to_owned(),
                    offset,
                    height,
                    reason,
                };
                let record = BlockReceipts::from_canonical_bytes(&payload)
                    .map_err(|e| invalid(format!("does not decode: {e}")))?;
                if record.height != height {
                    return Err(invalid(format!("record holds height {}", record.height)));
                }
                ends.push(offset + RECORD_HEADER_BYTES + payload.len() as u64);
                hashes.push(record.block_hash);
                Ok(())
            },
        );
        let (log, report) = match opened {
            Ok(opened) => opened,
            Err(OpenError::Log(e)) => {
                return Err(ReceiptStoreError::from_log(e, ends.len() as Height + 1));
            }
            Err(OpenError::Visit(e)) => return Err(e),
        };
        Ok((ReceiptStore { log, ends, hashes }, report))
    }

    /// Appends the receipts of block `height` (which must be `height() +
    /// 1`), durable when this returns Ok. Any I/O failure poisons the log.
    pub fn append(
        &mut self,
        height: Height,
        block_hash: Hash32,
        receipts: &[Receipt],
    ) -> Result<(), ReceiptStoreError> {
        let expected = self.height() + 1;
        self.log
            .check_writable()
            .map_err(|e| ReceiptStoreError::from_log(e, expected))?;
        if height != expected {
            return Err(ReceiptStoreError::WrongHeight {
                expected,
                found: height,
            });
        }
        let record = BlockReceipts {
            height,
            block_hash,
            receipts: receipts.to_vec(),
        };
        let payload = record
            .to_canonical_bytes()
            .map_err(|source| ReceiptStoreError::Encode { height, source })?;
        let offset = self
            .log
            .append(&payload)
            .map_err(|e| ReceiptStoreError::from_log(e, height))?;
        assert_eq!(
            offset,
            self.ends.last().copied().unwrap_or(0),
            "receipt log offset drifted from its index"
        );
        self.ends.push(self.log.len_bytes());
        self.hashes.push(block_hash);
        Ok(())
    }

    /// The receipts of block `height`, None for 0 or above the last record.
    /// Reads from disk and re-checks the record's checksum.
    pub fn get(&self, height: Height) -> Result<Option<BlockReceipts>, ReceiptStoreError> {
        let Some((start, end)) = self.span(height) else {
            return Ok(None);
        };
        let invalid = |reason: String| ReceiptStoreError::Corrupt {
            name: RECEIPTS_LOG_NAME.to_owned(),
            offset: start,
            height,
            reason,
        };
        let payload = self
            .log
            .read_record(start, end - start)
            .map_err(|e| ReceiptStoreError::from_log(e, height))?;
        let record = BlockReceipts::from_canonical_bytes(&payload)
            .map_err(|e| invalid(format!("does not decode: {e}")))?;
        if record.height != height {
            return Err(invalid(format!("record holds height {}", record.height)));
        }
        Ok(Some(record))
    }

    /// Block hash recorded with the receipts of `height` (from the index,
    /// no disk read).
    pub fn block_hash(&self, height: Height) -> Option<Hash32> {
        let index = usize::try_from(height.checked_sub(1)?).ok()?;
        self.hashes.get(index).copied()
    }

    /// Highest height with receipts, 0 when empty.
    pub fn height(&self) -> Height {
        self.ends.len() as Height
    }

    /// Size of the receipt log.
    pub fn len_bytes(&self) -> u64 {
        self.log.len_bytes()
    }

    /// True after a failed write; `append` then refuses until restart.
    pub fn is_poisoned(&self) -> bool {
        self.log.is_poisoned()
    }

    /// Cuts the log durably after the receipts of `height` (nothing is cut
    /// when it is already at or below it) and reopens it. Used at start when
    /// the log is ahead of the block log or disagrees with it.
    pub fn truncated(self, height: Height) -> Result<(Self, OpenReport), ReceiptStoreError> {
        if height >= self.height() {
            let report = OpenReport {
                name: RECEIPTS_LOG_NAME.to_owned(),
                file_len_bytes: self.log.len_bytes(),
                records_count: self.height(),
                torn_tail: None,
            };
            return Ok((self, report));
        }
        self.log
            .check_writable()
            .map_err(|e| ReceiptStoreError::from_log(e, height + 1))?;
        let len = match usize::try_from(height).ok().and_then(|h| h.checked_sub(1)) {
            Some(index) => self.ends.get(index).copied().unwrap_or(0),
            None => 0,
        };
        let mut disk = self.log.into_disk();
        disk.truncate(RECEIPTS_LOG_NAME, len)
            .map_err(|source| ReceiptStoreError::Io {
                name: RECEIPTS_LOG_NAME.to_owned(),
                op: "truncate",
                offset: len,
                source,
            })?;
        ReceiptStore::open(disk)
    }

    pub fn disk(&self) -> &D {
        self.log.disk()
    }

    /// For fault injection in tests.
    pub fn disk_mut(&mut self) -> &mut D {
        self.log.disk_mut()
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
