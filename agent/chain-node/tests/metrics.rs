//! The node's `/metrics` counters (`ChainControl::metrics`) count every
//! kind of refusal by reason: transactions from clients and from gossip
//! (bad signature, wrong chain id), undecodable frames per service, and
//! frames the transport refuses (wrong chain id), never panicking.

mod common;

use common::{Cluster, client_key, validator_key, wait_until};
use metanode_api::{ChainControl, ChainMetrics};
use metanode_bpci::{Endpoint, ServiceId, TransportConfig};
use metanode_chain::app::LEDGER_FEE_MIN;
use metanode_chain::types::{ChainId, SignedTx, TxBatch, TxBody, TxKind};
use metanode_chain_node::{SERVICE_MEMPOOL, SERVICE_QBFT};
use metanode_core::encoding::{Decode, Encode};
use metanode_core::hash::{Hash32, blake3_256};

fn payload_tx(chain_id: ChainId, nonce: u64) -> SignedTx {
    let client = client_key();
    TxBody {
        chain_id,
        sender: client.public_key(),
        nonce,
        fee: LEDGER_FEE_MIN,
        kind: TxKind::Payload {
            data: b"metrics".to_vec(),
        },
    }
    .sign(&client)
    .unwrap()
}

/// `tx` with one bit of its signature (the last bytes of the canonical
/// encoding) flipped.
fn bad_signature(tx: &SignedTx) -> SignedTx {
    let mut bytes = tx.to_canonical_bytes().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    SignedTx::from_canonical_bytes(&bytes).unwrap()
}

fn tx_rejected(m: &ChainMetrics, source: &str, reason: &str) -> u64 {
    m.txs_rejected
        .iter()
        .find(|(s, r, _)| *s == source && *r == reason)
        .map(|(_, _, n)| *n)
        .unwrap_or_else(|| panic!("no series for {source}/{reason}: {:?}", m.txs_rejected))
}

fn labeled(series: &[(&'static str, u64)], reason: &str) -> u64 {
    series
        .iter()
        .find(|(r, _)| *r == reason)
        .map(|(_, n)| *n)
        .unwrap_or_else(|| panic!("no series for {reason}: {series:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_by_reason() {
    common::init_logs();
    // Validator 0 runs; the test plays validator 1 over BPCI.
    let cluster = Cluster::start_some("metrics", 2, 1).await;
    let node = cluster.node(0).clone();
    let chain_id = cluster.genesis.chain_id();
    let good = payload_tx(chain_id, 0);
    let elsewhere = payload_tx(ChainId(blake3_256(b"another chain")), 0);

    // Client submissions: bad signature, wrong chain id (twice, once in a
    // batch). Each is refused with its own error.
    assert!(node.submit(bad_signature(&good)).await.is_err());
    assert!(node.submit(elsewhere.clone()).await.is_err());
    let answers = node.submit_batch(vec![elsewhere.clone()]).await.unwrap();
    assert!(answers[0].is_err());

    // Gossip from a peer: undecodable frames on two services, a batch with
    // a bad-signature and a wrong-chain transaction.
    let node0 = (validator_key(0).public_key(), Some(cluster.addrs[0]));
    let peer = Endpoint::bind(TransportConfig::new(
        common::loopback(),
        validator_key(1),
        chain_id.0,
        vec![node0],
    ))
    .unwrap();
    let to = validator_key(0).public_key();
    peer.send(&to, ServiceId::named(SERVICE_QBFT), vec![0xff; 7])
        .unwrap();
    peer.send(&to, ServiceId::named(SERVICE_MEMPOOL), vec![0xee; 3])
        .unwrap();
    let batch = TxBatch {
        txs: vec![bad_signature(&good), elsewhere],
    };
    peer.send(
        &to,
        ServiceId::named(SERVICE_MEMPOOL),
        batch.to_canonical_bytes().unwrap(),
    )
    .unwrap();
    wait_until("the gossip is counted", || {
        let m = node.metrics();
        tx_rejected(&m, "gossip", "wrong_chain_id") == 1
            && labeled(&m.messages_rejected, "mempool_undecodable") == 1
    })
    .await;
    // A frame signed for another chain: the transport refuses it. It
    // comes from a second endpoint with validator 1's key, so the first
    // one closes before: a node keeps one connection per peer identity
    // and closes the older when a newer one arrives, dropping what was in
    // flight on it (seen in CI when both endpoints dialled at once).
    peer.close().await;
    let mut wrong = TransportConfig::new(
        common::loopback(),
        validator_key(1),
        Hash32([9; 32]),
        vec![(to, Some(cluster.addrs[0]))],
    );
    wrong.nonce_base = u64::MAX / 2;
    let wrong = Endpoint::bind(wrong).unwrap();
    wrong
        .send(&to, ServiceId::named(SERVICE_QBFT), b"vote".to_vec())
        .unwrap();
    wait_until("the foreign frame is counted", || {
        labeled(&node.metrics().bpci.frames_rejected, "wrong_chain_id") == 1
    })
    .await;
    let m = node.metrics();
    assert_eq!(tx_rejected(&m, "client", "bad_signature"), 1);
    assert_eq!(tx_rejected(&m, "client", "wrong_chain_id"), 2);
    assert_eq!(tx_rejected(&m, "gossip", "bad_signature"), 1);
    assert_eq!(tx_rejected(&m, "gossip", "wrong_chain_id"), 1);
    assert_eq!(tx_rejected(&m, "client", "oversized"), 0);
    assert_eq!(labeled(&m.messages_rejected, "qbft_undecodable"), 1);
    assert_eq!(labeled(&m.messages_rejected, "mempool_undecodable"), 1);
    assert_eq!(labeled(&m.messages_rejected, "blocksync_undecodable"), 0);
    assert_eq!(labeled(&m.bpci.frames_rejected, "wrong_chain_id"), 1);
    assert_eq!(labeled(&m.bpci.frames_rejected, "bad_signature"), 0);
    // The status totals agree with the per-reason counts.
    let status = node.status();
    assert_eq!(status.txs_refused, 5);
    assert_eq!(status.messages_rejected, 2);
    assert_eq!(status.frames_rejected, 1);
    assert_eq!(m.bpci.peers, vec![(validator_key(1).public_key(), true)]);
    assert_eq!(node.fatal_error(), None);

    // The good transaction is still admitted: refusals cost nothing else.
    node.submit(good).await.unwrap();
    wait_until("the mempool holds it", || node.metrics().mempool_txs == 1).await;
    wrong.close().await;
    node.shutdown().await;
}
