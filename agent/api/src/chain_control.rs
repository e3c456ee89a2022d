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
