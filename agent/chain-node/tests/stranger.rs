//! A node whose key nobody pinned cannot take part: its connections are
//! refused in the TLS handshake, so none of its frames is ever accepted.

mod common;

use common::{Cluster, client_key, height, wait_height, wait_until};
use metanode_api::ChainControl;
use metanode_chain::app::LEDGER_FEE_MIN;
use metanode_chain::types::{TxBody, TxKind};
use metanode_chain_node::{ChainNode, ChainNodeConfig};
use metanode_core::keys::SigningKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stranger_cannot_connect_or_inject() {
    common::init_logs();
    let mut cluster = Cluster::start("stranger", 4).await;
    wait_height(&cluster, 2).await;

    // Same genesis, valid transaction, every validator's address: only the
    // key is unknown to them.
    let stranger_key = SigningKey::from_seed(&[0xee; 32]);
    let stranger_pk = stranger_key.public_key();
    let mut config = ChainNodeConfig::new(
        cluster.genesis.clone(),
        stranger_key,
        cluster.dir.path().join("stranger"),
        common::loopback(),
        cluster.all_peers(),
    );
    config.node = common::fast_node_config(&cluster.genesis);
    let stranger = ChainNode::start(config).await.unwrap();
    assert!(!stranger.status().is_validator);

    let client = client_key();
    let tx = TxBody {
        chain_id: cluster.genesis.chain_id(),
        sender: client.public_key(),
        nonce: 0,
        fee: LEDGER_FEE_MIN,
        kind: TxKind::Payload {
            data: b"from a stranger".to_vec(),
        },
    }
    .sign(&client)
    .unwrap();
    // Its own mempool takes it; gossip cannot leave the node.
    let hash = stranger.submit(tx).await.unwrap();

    // Its gossip and sync polling make it dial every validator, and every
    // validator refuses the handshake.
    wait_until("every validator refused the stranger's handshake", || {
        cluster
            .running()
            .all(|n| n.transport_metrics().handshakes_refused > 0)
    })
    .await;
    let h = cluster.running().map(|n| height(n)).max().unwrap();
    wait_height(&cluster, h + 3).await;

    for (i, node) in cluster.running().enumerate() {
        let status = node.status();
        assert!(
            !status.peers_connected.contains(&stranger_pk),
            "validator {i}"
        );
        assert_eq!(status.peers_connected.len(), 3, "validator {i}: {status:?}");
        assert_eq!(node.receipt(&hash).unwrap(), None, "validator {i}");
        assert_eq!(node.account(&client.public_key()).next_nonce, 0);
    }
    let status = stranger.status();
    assert!(status.peers_connected.is_empty(), "{status:?}");
    assert_eq!(status.height, 0, "the stranger got no block");
    assert_eq!(status.messages_received, 0);
    let metrics = stranger.transport_metrics();
    assert_eq!(metrics.frames_sent, 0, "{metrics:?}");
    assert_eq!(metrics.frames_received, 0, "{metrics:?}");
    assert!(metrics.dial_failures > 0, "{metrics:?}");

    stranger.shutdown().await;
    cluster.shutdown_all().await;
}
