//! A real cluster for the tests: validators on 127.0.0.1 over QUIC, each
//! with its own data directory, fast consensus settings.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metanode_api::ChainControl;
use metanode_chain::node::NodeConfig;
use metanode_chain::qbft::EngineConfig;
use metanode_chain::types::{Genesis, GenesisAccount, Height, ValidatorSet};
use metanode_chain_node::{ChainNode, ChainNodeConfig, StartError};
use metanode_core::hash::Hash32;
use metanode_core::keys::{PublicKey, SigningKey};
use tempfile::TempDir;

/// Every wait in the tests is bounded by this; generous, because a loaded
/// 2-core machine runs several clusters at once. Nothing asserts on speed.
pub const WAIT: Duration = Duration::from_secs(60);

pub const CLIENT_BALANCE: u64 = 1_000_000;

pub fn validator_key(i: usize) -> SigningKey {
    let mut seed = [0x5au8; 32];
    seed[0] = i as u8;
    SigningKey::from_seed(&seed)
}

pub fn client_key() -> SigningKey {
    SigningKey::from_seed(&[0xc1; 32])
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub fn genesis(name: &str, validators: usize) -> Genesis {
    let set = ValidatorSet::new(
        (0..validators)
            .map(|i| validator_key(i).public_key())
            .collect(),
    )
    .unwrap();
    Genesis {
        chain_name: name.into(),
        genesis_time_ms: now_ms(),
        validators: set,
        accounts: vec![GenesisAccount {
            key: client_key().public_key(),
            balance: CLIENT_BALANCE,
        }],
    }
}

/// Small intervals so a test sees many blocks quickly.
pub fn fast_node_config(genesis: &Genesis) -> NodeConfig {
    let mut engine = EngineConfig::new(genesis.chain_id());
    engine.round_timeout_base_ms = 500;
    engine.round_timeout_max_ms = 4_000;
    let mut node = NodeConfig::new(engine);
    node.block_interval_min_ms = 20;
    node.empty_block_interval_ms = 200;
    node
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub struct Cluster {
    pub genesis: Genesis,
    pub dir: TempDir,
    /// Listen address of each validator (learned at first start, reused on
    /// restarts so the others can keep dialing it).
    pub addrs: Vec<SocketAddr>,
    pub nodes: Vec<Option<Arc<ChainNode>>>,
}

impl Cluster {
    /// Starts `n` validators. Validator `i` is given the addresses of
    /// validators `0..i` (bound before it); every pair is thus dialable in
    /// one direction, and the other direction uses the same connection.
    pub async fn start(name: &str, n: usize) -> Cluster {
        Cluster::start_some(name, n, n).await
    }

    /// A chain of `n` validators of which only the first `started` run as
    /// nodes (a test plays the others).
    pub async fn start_some(name: &str, n: usize, started: usize) -> Cluster {
        let genesis = genesis(name, n);
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Cluster {
            genesis,
            dir,
            addrs: Vec::new(),
            nodes: Vec::new(),
        };
        for i in 0..started {
            let peers: Vec<(PublicKey, Option<SocketAddr>)> = (0..n)
                .map(|j| (validator_key(j).public_key(), cluster.addrs.get(j).copied()))
                .collect();
            let node = ChainNode::start(cluster.config(i, loopback(), peers))
                .await
                .unwrap_or_else(|e| panic!("validator {i} starts: {e}"));
            cluster.addrs.push(node.local_addr());
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    pub fn data_dir(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("v{i}"))
    }

    pub fn config(
        &self,
        i: usize,
        listen: SocketAddr,
        peers: Vec<(PublicKey, Option<SocketAddr>)>,
    ) -> ChainNodeConfig {
        let mut config = ChainNodeConfig::new(
            self.genesis.clone(),
            validator_key(i),
            self.data_dir(i),
            listen,
            peers,
        );
        config.node = fast_node_config(&self.genesis);
        config
    }

    /// Every validator with its address.
    pub fn all_peers(&self) -> Vec<(PublicKey, Option<SocketAddr>)> {
        self.addrs
            .iter()
            .enumerate()
            .map(|(j, a)| (validator_key(j).public_key(), Some(*a)))
            .collect()
    }

    pub fn node(&self, i: usize) -> &Arc<ChainNode> {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub fn running(&self) -> impl Iterator<Item = &Arc<ChainNode>> {
        self.nodes.iter().flatten()
    }

    pub async fn stop(&mut self, i: usize) {
        let node = self.nodes[i].take().expect("node is running");
        node.shutdown().await;
        // Shutting down twice is harmless.
        node.shutdown().await;
    }

    /// Restarts validator `i` from its data directory on its old address.
    /// The old socket may take a moment to be released, so a bind failure
    /// is retried (bounded).
    pub async fn restart(&mut self, i: usize) -> Arc<ChainNode> {
        assert!(self.nodes[i].is_none(), "validator {i} is still running");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match ChainNode::start(self.config(i, self.addrs[i], self.all_peers())).await {
                Ok(node) => {
                    self.nodes[i] = Some(node.clone());
                    return node;
                }
                Err(StartError::Transport { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("validator {i} restarts: {e}"),
            }
        }
    }

    /// Shuts every running node down, all at once: each endpoint's close
    /// waits (bounded) for frames queued to peers that are already gone, so
    /// one after the other would add those waits up.
    pub async fn shutdown_all(&mut self) {
        let mut stopping = tokio::task::JoinSet::new();
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            stopping.spawn(async move {
                node.shutdown().await;
                node
            });
        }
        while let Some(node) = stopping.join_next().await {
            let node = node.expect("shutdown does not panic");
            assert_eq!(node.fatal_error(), None);
        }
    }
}

pub fn height(node: &ChainNode) -> Height {
    node.status().height
}

pub fn block_hash(node: &ChainNode, height: Height) -> Option<Hash32> {
    node.block(height)
        .unwrap_or_else(|e| panic!("block {height} reads: {e}"))
        .map(|b| b.block.hash())
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after
/// [`WAIT`].
pub async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

/// Waits until every running node is at least at `height`.
pub async fn wait_height(cluster: &Cluster, height: Height) {
    wait_until(
        &format!("every running validator reaches height {height}"),
        || cluster.running().all(|n| self::height(n) >= height),
    )
    .await;
}

/// Asserts that every running node stores the same block at every height
/// from 1 to `top`.
pub fn assert_same_blocks(cluster: &Cluster, top: Height) {
    for h in 1..=top {
        let hashes: Vec<Option<Hash32>> = cluster.running().map(|n| block_hash(n, h)).collect();
        assert!(hashes[0].is_some(), "height {h} is stored: {hashes:?}");
        assert!(
            hashes.iter().all(|x| *x == hashes[0]),
            "validators disagree at height {h}: {hashes:?}"
        );
    }
}

/// `METANODE_TEST_LOG=debug` (an env-filter directive) shows the nodes' logs.
pub fn init_logs() {
    if let Ok(filter) = std::env::var("METANODE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}
