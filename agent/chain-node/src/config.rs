//! What a node needs to start, and why starting can fail.

use std::net::SocketAddr;
use std::path::PathBuf;

use metanode_bpci::{KeyExchange, TransportError};
use metanode_chain::node::NodeConfig;
use metanode_chain::qbft::EngineConfig;
use metanode_chain::types::{ChainId, Genesis, Height};
use metanode_chain_store::{BlockStoreError, ReceiptStoreError, WalError};
use metanode_core::keys::{PublicKey, SigningKey};

/// File of the consensus safety WAL inside the data directory.
pub const SAFETY_WAL_NAME: &str = "safety.wal";
/// Lock file inside the data directory: one node per directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Everything [`crate::ChainNode::start`] needs.
#[derive(Debug)]
pub struct ChainNodeConfig {
    pub genesis: Genesis,
    /// This node's key: signs consensus messages (if it is a validator) and
    /// BPCI frames, and authenticates it to its peers.
    pub key: SigningKey,
    /// Holds `safety.wal`, `blocks.log` and `receipts.log`; created 0700.
    pub data_dir: PathBuf,
    /// BPCI (QUIC) listen address.
    pub listen: SocketAddr,
    /// Every validator (and observer) this node talks to, with an address
    /// when known. Only these keys can connect to us. Our own key may be
    /// listed (a shared list) and is skipped.
    pub peers: Vec<(PublicKey, Option<SocketAddr>)>,
    pub node: NodeConfig,
    pub key_exchange: KeyExchange,
}

impl ChainNodeConfig {
    /// Default node settings for `genesis`'s chain and hybrid-only key
    /// exchange.
    pub fn new(
        genesis: Genesis,
        key: SigningKey,
        data_dir: PathBuf,
        listen: SocketAddr,
        peers: Vec<(PublicKey, Option<SocketAddr>)>,
    ) -> Self {
        let node = NodeConfig::new(EngineConfig::new(genesis.chain_id()));
        ChainNodeConfig {
            genesis,
            key,
            data_dir,
            listen,
            peers,
            node,
            key_exchange: KeyExchange::default(),
        }
    }
}

/// Why [`crate::ChainNode::start`] failed. Nothing on disk is changed by a
/// failed start except cutting torn tails (which open always does) and
/// re-deriving receipts.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("start must be called inside a tokio multi-thread runtime")]
    NoRuntime,
    #[error("node config is for chain {configured}, the genesis is chain {genesis}")]
    ChainIdMismatch {
        configured: ChainId,
        genesis: ChainId,
    },
    #[error("opening data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {path} is in use by another node (lock file {LOCK_FILE_NAME} is held)")]
    Locked { path: PathBuf },
    #[error("opening the safety wal: {0}")]
    Wal(#[from] WalError),
    #[error("opening the block store: {0}")]
    Blocks(#[from] BlockStoreError),
    #[error("opening the receipt log: {0}")]
    Receipts(#[from] ReceiptStoreError),
    #[error("replaying stored block {height}: {reason}")]
    Replay { height: Height, reason: String },
    #[error("duplicating the node key for the transport: {0}")]
    Key(String),
    #[error("binding the bpci endpoint on {listen}: {source}")]
    Transport {
        listen: SocketAddr,
        #[source]
        source: TransportError,
    },
    #[error("spawning the node thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the node thread ended before starting: {0}")]
    ThreadEnded(String),
}
