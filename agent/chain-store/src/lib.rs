//! Durable chain state: the consensus safety WAL and the finalized block
//! store, over a small storage seam.
//!
//! - [`disk`]: the [`ChainDisk`] seam, with [`FsDisk`] (real files, the node)
//!   and [`FakeDisk`] (in memory, deterministic power loss, torn writes,
//!   fsync failure and bit rot, the simulator).
//! - [`wal`]: [`SafetyWal`], the latest consensus safety record, durable
//!   before the vote it protects is sent.
//! - [`blocks`]: [`BlockStore`], finalized blocks with their certificates,
//!   hash-linked to genesis.
//!
//! Both files are record logs (`len | crc32c | payload`, see `log.rs`): a
//! torn last record is cut off on open and reported in an [`OpenReport`];
//! damage followed by good records is an error naming the offset, never a
//! silent truncation. A failed write or fsync poisons the log until the
//! node restarts (see [`wal`] for why).

pub mod blocks;
pub mod disk;
mod log;
pub mod receipts;
pub mod wal;

pub use blocks::{BLOCKS_LOG_NAME, BlockStore, BlockStoreError};
pub use disk::{ChainDisk, DiskStats, FakeDisk, FsDisk, SplitMix64};
pub use log::{OpenReport, TornTail};
pub use receipts::{BlockReceipts, RECEIPTS_LOG_NAME, ReceiptStore, ReceiptStoreError};
pub use wal::{SafetyWal, WalError};
