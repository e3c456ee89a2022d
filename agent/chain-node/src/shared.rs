//! State the node loop publishes and the API reads.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};

use metanode_api::{AccountInfo, HeadEvent};
use metanode_chain::node::TipInfo;
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
}

/// Counters since start (see `ChainStatus`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub messages_received: AtomicU64,
    pub messages_rejected: AtomicU64,
    pub txs_refused: AtomicU64,
    pub blocks_synced: AtomicU64,
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
