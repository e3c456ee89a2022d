//! Four validators over real QUIC finalize one chain; heads stream.

mod common;

use common::{Cluster, assert_same_blocks, wait_height};
use metanode_api::ChainControl;
use metanode_chain::types::ValidatorSet;
use tokio::sync::broadcast::error::RecvError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_finalize_identical_blocks() {
    common::init_logs();
    let mut cluster = Cluster::start("finality", 4).await;
    wait_height(&cluster, 5).await;
    assert_same_blocks(&cluster, 5);

    let set = ValidatorSet::new(
        (0..4)
            .map(|i| common::validator_key(i).public_key())
            .collect(),
    )
    .unwrap();
    let chain_id = cluster.genesis.chain_id();
    let mut prev = cluster.genesis.hash();
    for h in 1..=5 {
        let block = cluster.node(0).block(h).unwrap().unwrap();
        let header = &block.block.header;
        assert_eq!(header.height, h);
        assert_eq!(header.prev_hash, prev, "height {h} links to its parent");
        block.certificate.verify(&chain_id, header, &set).unwrap();
        prev = header.hash();
    }
    assert_eq!(
        cluster.node(0).block(0).unwrap(),
        None,
        "genesis has no block"
    );

    for (i, node) in cluster.running().enumerate() {
        let status = node.status();
        assert!(status.is_validator, "validator {i}");
        assert_eq!(status.chain_id, cluster.genesis.hash());
        assert_eq!(status.chain_name, "finality");
        assert_eq!(status.node_key, common::validator_key(i).public_key());
        assert_eq!(status.validators, set.validators().to_vec());
        assert!(status.consensus_height > status.height);
        assert!(status.messages_received > 0, "validator {i} got votes");
        assert_eq!(status.frames_rejected, 0, "validator {i}: {status:?}");
        assert_eq!(node.fatal_error(), None);
        // Connections come and go only with nodes, and all four run.
        assert_eq!(status.peers_connected.len(), 3, "validator {i}: {status:?}");
    }
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_subscriber_sees_consecutive_heights() {
    common::init_logs();
    let mut cluster = Cluster::start("heads", 4).await;
    let node = cluster.node(1).clone();
    let mut heads = node.heads();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let head = tokio::time::timeout(common::WAIT, heads.recv())
            .await
            .expect("a head arrives in time");
        match head {
            Ok(head) => seen.push(head),
            Err(RecvError::Lagged(n)) => panic!("subscriber lagged by {n}"),
            Err(RecvError::Closed) => panic!("heads channel closed"),
        }
    }
    for pair in seen.windows(2) {
        assert_eq!(pair[1].height, pair[0].height + 1, "{seen:?}");
    }
    for head in &seen {
        let block = node.block(head.height).unwrap().expect("a head is stored");
        assert_eq!(block.block.hash(), head.block_hash);
        assert_eq!(block.block.header.state_root, head.state_root);
        assert_eq!(block.block.header.timestamp_ms, head.timestamp_ms);
        assert_eq!(block.block.txs.len() as u64, head.txs_count);
        assert_eq!(block.certificate.round, head.round);
    }
    assert!(node.status().height >= seen[3].height);
    cluster.shutdown_all().await;
}
