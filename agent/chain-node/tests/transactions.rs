//! A client transaction end to end: submit, gossip, finality, receipt with
//! an inclusion proof, balances; replays and other chains refused.

mod common;

use common::{CLIENT_BALANCE, Cluster, client_key, wait_until};
use metanode_api::{ChainControl, ChainError};
use metanode_chain::app::{LEDGER_FEE_MIN, STATUS_OK};
use metanode_chain::light::verify_receipt;
use metanode_chain::mempool::MempoolError;
use metanode_chain::types::{ChainId, TxBody, TxKind};
use metanode_core::hash::Hash32;
use metanode_core::keys::SigningKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_is_finalized_with_a_verifiable_receipt() {
    common::init_logs();
    let mut cluster = Cluster::start("transactions", 4).await;
    let chain_id = cluster.genesis.chain_id();
    let client = client_key();
    let recipient = SigningKey::from_seed(&[0xd2; 32]).public_key();
    let amount = 1_234;
    let tx = TxBody {
        chain_id,
        sender: client.public_key(),
        nonce: 0,
        fee: LEDGER_FEE_MIN,
        kind: TxKind::Transfer {
            to: recipient,
            amount,
        },
    }
    .sign(&client)
    .unwrap();
    let hash = tx.hash();

    let entry = cluster.node(0).clone();
    assert_eq!(entry.submit(tx.clone()).await.unwrap(), hash);
    // Admitted, not yet final: a second submission of the same bytes is a
    // duplicate of the pending one.
    match entry.submit(tx.clone()).await {
        Err(ChainError::Refused(MempoolError::Duplicate { tx })) => assert_eq!(tx, hash),
        // Already committed in the meantime is the other correct answer.
        Err(ChainError::Refused(MempoolError::NonceTooLow { tx, .. })) => assert_eq!(tx, hash),
        other => panic!("second submission: {other:?}"),
    }

    // Every validator stores the block and can prove the receipt, whoever
    // proposed it (the transaction was gossiped to all of them).
    wait_until("every validator has the receipt", || {
        cluster
            .running()
            .all(|n| n.receipt(&hash).unwrap().is_some())
    })
    .await;
    for (i, node) in cluster.running().enumerate() {
        let found = node.receipt(&hash).unwrap().unwrap();
        assert_eq!(found.receipt.tx_hash, hash, "validator {i}");
        assert_eq!(found.receipt.status, STATUS_OK, "validator {i}: {found:?}");
        assert_eq!(found.receipt.fee_charged, LEDGER_FEE_MIN);
        let header = &found.block.block.header;
        assert_eq!(header.height, found.height);
        assert_eq!(found.block.block.txs[found.index as usize].hash(), hash);
        assert_eq!(found.txs_count, found.block.block.txs.len() as u64);
        verify_receipt(header, &found.receipt, &found.proof).unwrap();
        found
            .block
            .certificate
            .verify(&chain_id, header, &cluster.genesis.validators)
            .unwrap();
        // The proof is bound to this block: the wrong root refuses it.
        let mut other = header.clone();
        other.receipts_root = Hash32([1; 32]);
        assert!(verify_receipt(&other, &found.receipt, &found.proof).is_err());
        assert_eq!(
            node.block(found.height).unwrap().unwrap().block.hash(),
            header.hash()
        );

        let sender = node.account(&client.public_key());
        assert_eq!(sender.balance, CLIENT_BALANCE - amount - LEDGER_FEE_MIN);
        assert_eq!(sender.next_nonce, 1);
        let to = node.account(&recipient);
        assert_eq!((to.balance, to.next_nonce), (amount, 0));
        // Validators start with nothing; this was the only fee so far.
        assert_eq!(node.account(&header.proposer).balance, LEDGER_FEE_MIN);
    }

    // The same bytes again, now committed: refused as a replay.
    let replay = entry.submit(tx.clone()).await.unwrap_err();
    match &replay {
        ChainError::Refused(MempoolError::NonceTooLow {
            tx,
            nonce,
            expected,
            ..
        }) => assert_eq!((*tx, *nonce, *expected), (hash, 0, 1)),
        other => panic!("replay: {other:?}"),
    }
    assert!(replay.to_string().contains("already committed"), "{replay}");

    // A transaction for another chain, properly signed, is refused by
    // every node it is handed to.
    let foreign = TxBody {
        chain_id: ChainId(Hash32([9; 32])),
        sender: client.public_key(),
        nonce: 1,
        fee: LEDGER_FEE_MIN,
        kind: TxKind::Transfer {
            to: recipient,
            amount: 1,
        },
    }
    .sign(&client)
    .unwrap();
    let refused = cluster.node(2).submit(foreign).await.unwrap_err();
    match &refused {
        ChainError::Refused(MempoolError::WrongChain { got, expected, .. }) => {
            assert_eq!((*got, *expected), (ChainId(Hash32([9; 32])), chain_id));
        }
        other => panic!("foreign chain: {other:?}"),
    }
    assert!(
        refused.to_string().contains("this node runs chain"),
        "{refused}"
    );

    assert_eq!(entry.status().txs_refused, 2);
    assert_eq!(cluster.node(2).status().txs_refused, 1);
    assert_eq!(entry.receipt(&Hash32([7; 32])).unwrap(), None);
    cluster.shutdown_all().await;
}
