//! State the node loop publishes and the API reads.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};

use metanode_api::{AccountInfo, HeadEvent, LabeledCount};
use metanode_chain::mempool::MempoolError;
use metanode_chain::node::TipInfo;
use metanode_chain::qbft::EngineStats;
use metanode_core::keys::PublicKey;
use parking_lot::{Mutex, RwLock};
use tokio::sync::broadcast;

use crate::recover::Stores;

/// What the loop last saw of the core; refreshed on every periodic tick and
/// after every stored block.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub tip: TipInfo,
    pub consensus_height: u64,
    pub consensus_round: u32,
    pub is_validator: bool,
    pub validators: Vec<PublicKey>,
    pub mempool_txs: usize,
    pub mempool_bytes: usize,
    pub engine_stats: EngineStats,
    /// Height block sync is fetching up to; zero when not behind.
    pub sync_target_height: u64,
}

/// Why the loop dropped a peer message (metric label values).
pub(crate) const MESSAGE_REJECT_REASONS: [&str; 6] = [
    "qbft_undecodable",
    "mempool_undecodable",
    "blocksync_undecodable",
    "unknown_service",
    "consensus_refused",
    "synced_block_refused",
];

/// Counters since start (see `ChainStatus` and `ChainMetrics`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub messages_received: AtomicU64,
    pub messages_rejected: AtomicU64,
    pub txs_refused: AtomicU64,
    pub blocks_synced: AtomicU64,
    pub blocks_decided: AtomicU64,
    pub txs_committed: AtomicU64,
    pub sync_requests_sent: AtomicU64,
    pub sync_requests_served: AtomicU64,
    /// By [`MESSAGE_REJECT_REASONS`].
    pub messages_rejected_by: ReasonCounts<6>,
    /// By `MempoolError::REASONS`: submissions to this node, and
    /// transactions gossiped by peers.
    pub txs_rejected_client: ReasonCounts<16>,
    pub txs_rejected_gossip: ReasonCounts<16>,
}

/// A counter per reason of a fixed list.
#[derive(Debug)]
pub(crate) struct ReasonCounts<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for ReasonCounts<N> {
    fn default() -> Self {
        ReasonCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl<const N: usize> ReasonCounts<N> {
    /// Counts `reason`, which must be one of `reasons` (a reason missing
    /// from the list is a bug in this crate, not bad input).
    pub fn bump(&self, reasons: &[&'static str; N], reason: &str) {
        let index = reasons.iter().position(|r| *r == reason);
        assert!(
            index.is_some(),
            "reason {reason} is not in the metric's list"
        );
        if let Some(counter) = index.and_then(|i| self.0.get(i)) {
            Counters::bump(counter);
        }
    }

    pub fn snapshot(&self, reasons: &[&'static str; N]) -> Vec<LabeledCount> {
        reasons
            .iter()
            .zip(&self.0)
            .map(|(reason, n)| (*reason, Counters::get(n)))
            .collect()
    }
}

impl Counters {
    pub fn reject_tx(&self, source: TxSource, error: &MempoolError) {
        Counters::bump(&self.txs_refused);
        let by = match source {
            TxSource::Client => &self.txs_rejected_client,
            TxSource::Gossip => &self.txs_rejected_gossip,
        };
        by.bump(&MempoolError::REASONS, error.reason());
    }
}

/// Where a refused transaction came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxSource {
    Client,
    Gossip,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Shared between the node loop (the only writer of the stores) and the
/// API-facing [`crate::ChainNode`].
///
/// Locks are `parking_lot`'s: never held across an await, and no poisoning
/// to handle (a panic in the loop already stops the node).
#[derive(Debug)]
pub(crate) struct Shared {
    /// Block log, receipt log and tx index. The loop holds the lock while it
    /// appends (including the fsync), readers while they read.
    pub stores: Mutex<Stores>,
    /// Balance and next nonce of every account the chain knows, as of the
    /// last stored block.
    pub accounts: RwLock<HashMap<PublicKey, AccountInfo>>,
    pub snapshot: RwLock<Snapshot>,
    pub counters: Counters,
    pub last_rejection: Mutex<Option<String>>,
    pub heads: broadcast::Sender<HeadEvent>,
    /// Why the loop stopped on its own (a failed write or fsync), if it did.
    pub fatal: Mutex<Option<String>>,
    /// The data directory lock, released at shutdown.
    pub dir_lock: Mutex<Option<File>>,
    /// Every pinned peer but us: sync rotation and `peers_connected`.
    pub peer_keys: Vec<PublicKey>,
}
