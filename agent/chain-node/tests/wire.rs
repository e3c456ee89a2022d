//! What a pinned peer can put on the wire: block sync requests are served
//! with verifiable blocks; bytes that do not decode are counted and
//! described in the status, and the node keeps finalizing.

mod common;

use common::{Cluster, height, validator_key, wait_height, wait_until};
use metanode_api::ChainControl;
use metanode_bpci::{Endpoint, ServiceId, TransportConfig};
use metanode_chain_node::sync::SyncMessage;
use metanode_chain_node::{SERVICE_BLOCKSYNC, SERVICE_MEMPOOL, SERVICE_QBFT};
use metanode_core::encoding::{Decode, Encode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_is_served_and_garbage_is_counted() {
    common::init_logs();
    // Validators 0..=2 run; the test holds validator 3's key and speaks
    // BPCI with it directly.
    let mut cluster = Cluster::start_some("wire", 4, 3).await;
    wait_height(&cluster, 3).await;
    let peers = cluster.all_peers();
    let raw = Endpoint::bind(TransportConfig::new(
        common::loopback(),
        validator_key(3),
        cluster.genesis.chain_id().0,
        peers.clone(),
    ))
    .unwrap();
    let node = cluster.node(0).clone();
    let to = validator_key(0).public_key();

    let request = SyncMessage::Request {
        from_height: 2,
        max_blocks: 2,
    };
    raw.send(
        &to,
        ServiceId::named(SERVICE_BLOCKSYNC),
        request.to_canonical_bytes().unwrap(),
    )
    .unwrap();
    // Other frames (votes from the running validators, their sync
    // requests) arrive too: take the first sync response.
    let blocks = tokio::time::timeout(common::WAIT, async {
        loop {
            let inbound = raw.recv().await.expect("endpoint open");
            if inbound.service != ServiceId::named(SERVICE_BLOCKSYNC) || inbound.from != to {
                continue;
            }
            match SyncMessage::from_canonical_bytes(&inbound.payload).unwrap() {
                SyncMessage::Response { blocks } => break blocks,
                SyncMessage::Request { .. } => continue,
            }
        }
    })
    .await
    .expect("a sync response arrives");
    let heights: Vec<u64> = blocks.iter().map(|b| b.block.header.height).collect();
    assert_eq!(heights, vec![2, 3]);
    let chain_id = cluster.genesis.chain_id();
    for block in &blocks {
        block
            .certificate
            .verify(&chain_id, &block.block.header, &cluster.genesis.validators)
            .unwrap();
        assert_eq!(
            Some(block.block.hash()),
            common::block_hash(&node, block.block.header.height)
        );
    }

    let before = node.status();
    let key = validator_key(3).public_key().to_string();
    let garbage: [(&str, &[u8], &str); 4] = [
        (
            SERVICE_QBFT,
            b"\x01not a vote",
            "qbft frame does not decode",
        ),
        (
            SERVICE_MEMPOOL,
            b"\x07not a transaction",
            "mempool frame does not decode",
        ),
        (
            SERVICE_BLOCKSYNC,
            &[1, 9, 0],
            "blocksync frame does not decode",
        ),
        ("no-such-service", b"hello", "frame for unknown service"),
    ];
    for (service, bytes, reason) in garbage {
        raw.send(&to, ServiceId::named(service), bytes.to_vec())
            .unwrap();
        // One at a time, so each rejection's reason can be seen.
        wait_until(&format!("the {service} frame is rejected"), || {
            node.status()
                .last_rejection
                .is_some_and(|r| r.contains(reason) && r.contains(&key))
        })
        .await;
    }
    assert!(node.status().messages_rejected >= before.messages_rejected + 4);
    // Frames were well formed at the transport level: nothing refused there.
    assert_eq!(node.status().frames_rejected, 0);
    let h = height(&node);
    wait_height(&cluster, h + 2).await;
    assert_eq!(node.fatal_error(), None);

    raw.close().await;
    cluster.shutdown_all().await;
}
