//! The contract between the HTTP API and a running chain node.
//!
//! The API crate does not depend on the node runtime (sockets, QUIC, disk);
//! the runtime (`metanode-chain-node`) implements [`ChainControl`] and the
//! binary hands it to [`crate::AppState::with_chain`]. Tests drive the routes
//! with a fake. A node without a chain answers 409 on `/api/v1/chain*`.

use std::future::Future;
use std::pin::Pin;

use metanode_chain::mempool::MempoolError;
use metanode_chain::types::{FinalizedBlock, Genesis, Height, Receipt, SignedTx};
use metanode_core::hash::Hash32;
use metanode_core::keys::PublicKey;
use metanode_core::merkle::InclusionProof;

/// A boxed future, so [`ChainControl`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a chain operation failed, already phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The mempool refused the transaction (bad signature, wrong chain,
    /// replayed nonce, full: backpressure).
    #[error("transaction refused: {0}")]
    Refused(#[from] MempoolError),
    /// The node is shutting down or its chain task has stopped.
    #[error("the chain is not running: {0}")]
    Unavailable(String),
    /// Reading the block store failed.
    #[error("reading the block store failed: {0}")]
    Storage(String),
}

/// A snapshot of the node's chain state; cheap to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainStatus {
    pub chain_id: Hash32,
    pub chain_name: String,
    pub node_key: PublicKey,
    pub is_validator: bool,
    /// Last finalized block.
    pub height: Height,
    pub block_hash: Hash32,
    pub block_timestamp_ms: u64,
    pub state_root: Hash32,
    /// Height and round being decided.
    pub consensus_height: Height,
    pub consensus_round: u32,
    pub validators: Vec<PublicKey>,
    pub mempool_txs: usize,
    pub mempool_bytes: usize,
    /// Validators we currently hold an authenticated connection to.
    pub peers_connected: Vec<PublicKey>,
    /// Counters since start: consensus messages received and rejected (with
    /// the reason text of the most recent rejection), frames rejected by the
    /// transport, transactions refused, blocks synced from peers.
    pub messages_received: u64,
    pub messages_rejected: u64,
    pub last_rejection: Option<String>,
    pub frames_rejected: u64,
    pub txs_refused: u64,
    pub blocks_synced: u64,
}

/// A count under a fixed label value (a reason, a source, a service).
pub type LabeledCount = (&'static str, u64);

/// What a chain node exports on `/metrics` (rendered as `metanode_chain_*`
/// and `metanode_bpci_*`). Counters run since the node started; label
/// values are fixed strings or pinned peer keys, so series stay bounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainMetrics {
    /// Last finalized block.
    pub height: Height,
    /// Height and round being decided.
    pub consensus_height: Height,
    pub consensus_round: u32,
    pub mempool_txs: usize,
    pub mempool_bytes: usize,
    /// Blocks stored after this node's consensus decided them.
    pub blocks_decided: u64,
    /// Blocks stored from block sync.
    pub blocks_synced: u64,
    /// Transactions in the stored blocks (decided and synced).
    pub txs_committed: u64,
    pub round_timeouts: u64,
    pub round_skips: u64,
    pub round_changes_sent: u64,
    /// Consensus messages received (decoded or not).
    pub messages_received: u64,
    /// Peer messages dropped by the node, by reason.
    pub messages_rejected: Vec<LabeledCount>,
    /// Transactions refused by the node: (source `client`|`gossip`, reason
    /// from `MempoolError::reason`, count).
    pub txs_rejected: Vec<(&'static str, &'static str, u64)>,
    pub sync_requests_sent: u64,
    pub sync_requests_served: u64,
    /// Height block sync is fetching up to; zero when not behind.
    pub sync_target_height: Height,
    pub bpci: BpciMetrics,
}

/// The node's BPCI transport, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BpciMetrics {
    pub frames_sent: u64,
    pub frames_received: u64,
    pub payload_bytes_sent: u64,
    pub payload_bytes_received: u64,
    /// Frames refused on receipt, by reason.
    pub frames_rejected: Vec<LabeledCount>,
    /// Frames queued but never written (the connection failed under them).
    pub frames_lost: u64,
    /// Sends refused because the peer's queue was full.
    pub frames_refused_queue_full: u64,
    pub connections_dialed: u64,
    pub connections_accepted: u64,
    /// Connections dropped because the peer dialed again (it restarted).
    pub connections_superseded: u64,
    pub dial_failures: u64,
    pub handshakes_refused: u64,
    /// Every pinned peer and whether a live connection to it exists.
    pub peers: Vec<(PublicKey, bool)>,
}

/// Where a transaction landed and the proof that it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptWithProof {
    pub height: Height,
    /// Position of the transaction (and its receipt) in the block.
    pub index: u64,
    /// Number of transactions in the block (= the receipt tree size).
    pub txs_count: u64,
    pub receipt: Receipt,
    /// Inclusion of `receipt` under the block header's `receipts_root`.
    pub proof: InclusionProof,
    /// The finalized block holding it (header + certificate: enough for a
    /// light client to check finality and the proof).
    pub block: FinalizedBlock,
}

/// Account state as the last finalized block left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountInfo {
    pub balance: u64,
    /// The nonce the account's next transaction must carry.
    pub next_nonce: u64,
}

/// A finalized head, as streamed to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadEvent {
    pub height: Height,
    pub block_hash: Hash32,
    pub timestamp_ms: u64,
    pub txs_count: u64,
    pub state_root: Hash32,
    /// Round that decided it.
    pub round: u32,
}

/// What a chain node offers the API. Implemented by `metanode-chain-node`.
pub trait ChainControl: Send + Sync + std::fmt::Debug {
    fn status(&self) -> ChainStatus;
    /// Counters and gauges for `/metrics`.
    fn metrics(&self) -> ChainMetrics;
    fn genesis(&self) -> Genesis;
    /// Admits `tx` into the mempool (and gossips it to the validators).
    /// Returns its id once admitted; finality comes later (see `heads`).
    fn submit(&self, tx: SignedTx) -> BoxFuture<'_, Result<Hash32, ChainError>>;
    /// Admits many transactions, one answer per transaction in order (the
    /// batch route). The outer error is for the whole batch (the node is
    /// stopped or busy); a refused transaction is an inner error and does
    /// not affect the others. The default submits them one at a time; the
    /// node admits them in one step and gossips them in shared frames.
    fn submit_batch(
        &self,
        txs: Vec<SignedTx>,
    ) -> BoxFuture<'_, Result<Vec<Result<Hash32, ChainError>>, ChainError>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(txs.len());
            for tx in txs {
                results.push(self.submit(tx).await);
            }
            Ok(results)
        })
    }
    /// A finalized block from the block store (blocking disk read: call from
    /// a blocking thread).
    fn block(&self, height: Height) -> Result<Option<FinalizedBlock>, ChainError>;
    /// The receipt of a finalized transaction with its inclusion proof
    /// (blocking disk read).
    fn receipt(&self, tx_hash: &Hash32) -> Result<Option<ReceiptWithProof>, ChainError>;
    fn account(&self, key: &PublicKey) -> AccountInfo;
    /// Finalized heads from now on. A subscriber that falls behind the
    /// channel's bound gets `Lagged` and should re-read `status`.
    fn heads(&self) -> tokio::sync::broadcast::Receiver<HeadEvent>;
}
