//! Start refuses what cannot work, before touching the network.

mod common;

use metanode_chain::types::{ChainId, Genesis};
use metanode_chain_node::{ChainNode, ChainNodeConfig, StartError};
use metanode_core::hash::Hash32;

fn config(genesis: &Genesis, dir: &std::path::Path) -> ChainNodeConfig {
    ChainNodeConfig::new(
        genesis.clone(),
        common::validator_key(0),
        dir.join("v0"),
        common::loopback(),
        Vec::new(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_config_for_another_chain_is_refused() {
    let genesis = common::genesis("start", 1);
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&genesis, dir.path());
    config.node.engine.chain_id = ChainId(Hash32([3; 32]));
    match ChainNode::start(config).await {
        Err(StartError::ChainIdMismatch {
            configured,
            genesis: expected,
        }) => {
            assert_eq!(configured, ChainId(Hash32([3; 32])));
            assert_eq!(expected, genesis.chain_id());
        }
        other => panic!("expected ChainIdMismatch, got {other:?}"),
    }
    assert!(!dir.path().join("v0").exists(), "nothing was created");
}

#[test]
fn current_thread_runtime_is_refused() {
    let genesis = common::genesis("start", 1);
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(ChainNode::start(config(&genesis, dir.path())));
    assert!(matches!(result, Err(StartError::NoRuntime)), "{result:?}");
}
