//! Restarts from the data directory: one validator (the others keep going,
//! it replays, syncs and follows), then all four (the chain continues from
//! the stored tip without a fork).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use common::{Cluster, assert_same_blocks, block_hash, height, wait_height, wait_until};
use metanode_api::ChainControl;
use metanode_chain::types::Height;
use metanode_core::hash::Hash32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_validator_replays_syncs_and_follows() {
    common::init_logs();
    let mut cluster = Cluster::start("restart-one", 4).await;
    wait_height(&cluster, 3).await;

    let stopped = cluster.node(3).clone();
    cluster.stop(3).await;
    assert_eq!(cluster.running().count(), 3);
    // A stopped node still answers reads from its files.
    let stored_height = height(&stopped);
    assert!(stored_height >= 3);
    let stored: BTreeMap<Height, Hash32> = (1..=stored_height)
        .map(|h| (h, block_hash(&stopped, h).unwrap()))
        .collect();
    drop(stopped);
    // The three left are a quorum (3 of 4) and keep finalizing.
    let h0 = cluster.running().map(|n| height(n)).max().unwrap();
    wait_height(&cluster, h0 + 5).await;

    // Restarted from its directory, it replays what it had stored.
    let node = cluster.restart(3).await;
    assert!(height(&node) >= stored_height);
    for (h, hash) in &stored {
        assert_eq!(block_hash(&node, *h), Some(*hash), "replayed height {h}");
    }

    // It catches up on what it missed, then follows consensus at the tip.
    // A short outage may be bridged without block sync: the survivors keep
    // consensus frames queued for it (bounded) and deliver them when it
    // reconnects. Either way every height it gained after the restart was
    // decided or synced by this process, exactly once.
    let target = cluster.running().map(|n| height(n)).max().unwrap() + 3;
    wait_height(&cluster, target).await;
    // (Polled: the height and the counters are read at slightly different
    // moments, so they agree only between two blocks.)
    wait_until("every height regained was decided or synced once", || {
        let m = node.metrics();
        m.blocks_decided + m.blocks_synced == m.height - stored_height
    })
    .await;
    assert_same_blocks(&cluster, target);
    for (h, hash) in stored {
        assert_eq!(block_hash(cluster.node(0), h), Some(hash), "height {h}");
    }
    // Following, not only syncing: it votes again (others count its
    // messages) and sees all three peers.
    wait_until("the restarted validator is connected to all", || {
        node.status().peers_connected.len() == 3
    })
    .await;
    assert_eq!(node.fatal_error(), None);
    cluster.shutdown_all().await;
}

/// A validator whose disk was replaced (empty data directory) comes back:
/// the blocks it once had are no longer in any peer's send queue, so it can
/// only get them through block sync, and then it follows at the tip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validator_with_an_empty_disk_block_syncs_the_chain() {
    common::init_logs();
    let mut cluster = Cluster::start("empty-disk", 4).await;
    wait_height(&cluster, 3).await;
    cluster.stop(3).await;
    let lost = std::fs::read_dir(cluster.data_dir(3)).unwrap().count();
    assert!(lost > 0, "validator 3 wrote files");
    std::fs::remove_dir_all(cluster.data_dir(3)).unwrap();
    let h0 = cluster.running().map(|n| height(n)).max().unwrap();
    wait_height(&cluster, h0 + 2).await;

    let node = cluster.restart(3).await;
    assert_eq!(height(&node), 0, "nothing left to replay");
    let target = cluster.running().map(|n| height(n)).max().unwrap() + 3;
    wait_height(&cluster, target).await;
    // Heights 1..=3 were delivered to it before it stopped, so nothing
    // queued can bring them back: at least those came by block sync.
    wait_until("the empty validator block-synced the early heights", || {
        node.status().blocks_synced >= 3
    })
    .await;
    assert_same_blocks(&cluster, target);
    wait_until("the empty validator is connected to all", || {
        node.status().peers_connected.len() == 3
    })
    .await;
    assert_eq!(node.fatal_error(), None);
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restarts_from_its_stored_tips() {
    common::init_logs();
    let mut cluster = Cluster::start("restart-all", 4).await;
    wait_height(&cluster, 4).await;
    cluster.shutdown_all().await;

    // Each validator's files, as left by the shutdown.
    let mut before: Vec<BTreeMap<Height, Hash32>> = Vec::new();
    for i in 0..4 {
        let node = cluster.restart(i).await;
        let tip = height(&node);
        assert!(tip >= 4, "validator {i} replayed to {tip}");
        before.push(
            (1..=tip)
                .map(|h| (h, block_hash(&node, h).unwrap()))
                .collect(),
        );
    }
    let old_tip = before.iter().map(|b| b.len() as Height).max().unwrap();

    wait_height(&cluster, old_tip + 3).await;
    assert_same_blocks(&cluster, old_tip + 3);
    for (i, blocks) in before.iter().enumerate() {
        for (h, hash) in blocks {
            assert_eq!(
                block_hash(cluster.node(i), *h),
                Some(*hash),
                "validator {i} height {h} changed across the restart"
            );
        }
    }
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directory_admits_one_node_at_a_time() {
    common::init_logs();
    let mut cluster = Cluster::start("lock", 1).await;
    wait_height(&cluster, 1).await;
    // Private to the node, with its three files in it.
    let dir = cluster.data_dir(0);
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    for file in ["safety.wal", "blocks.log", "receipts.log"] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    let second = metanode_chain_node::ChainNode::start(cluster.config(
        0,
        common::loopback(),
        cluster.all_peers(),
    ))
    .await;
    match second {
        Err(metanode_chain_node::StartError::Locked { path }) => {
            assert_eq!(path, cluster.data_dir(0));
        }
        other => panic!("second node on one directory: {other:?}"),
    }
    cluster.shutdown_all().await;
    // Released by the shutdown.
    let node = cluster.restart(0).await;
    assert!(height(&node) >= 1);
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_receipt_log_is_rederived_by_replay() {
    use metanode_chain::app::LEDGER_FEE_MIN;
    use metanode_chain::light::verify_receipt;
    use metanode_chain::types::{TxBody, TxKind};

    common::init_logs();
    // One validator is its own quorum.
    let mut cluster = Cluster::start("receipts", 1).await;
    let client = common::client_key();
    let tx = TxBody {
        chain_id: cluster.genesis.chain_id(),
        sender: client.public_key(),
        nonce: 0,
        fee: LEDGER_FEE_MIN,
        kind: TxKind::Payload {
            data: b"kept".to_vec(),
        },
    }
    .sign(&client)
    .unwrap();
    let hash = cluster.node(0).submit(tx).await.unwrap();
    wait_until("the payload is final", || {
        cluster.node(0).receipt(&hash).unwrap().is_some()
    })
    .await;
    let before = cluster.node(0).receipt(&hash).unwrap().unwrap();
    cluster.shutdown_all().await;

    std::fs::remove_file(cluster.data_dir(0).join("receipts.log")).unwrap();
    let node = cluster.restart(0).await;
    let after = node.receipt(&hash).unwrap().expect("receipt re-derived");
    assert_eq!(after, before);
    verify_receipt(&after.block.block.header, &after.receipt, &after.proof).unwrap();
    // The payload index (8 bytes LE) is the receipt output.
    assert_eq!(after.receipt.output, 0u64.to_le_bytes().to_vec());
    cluster.shutdown_all().await;
}
