//! The chain routes against a fake `ChainControl` holding one real,
//! certified block: every status code, the JSON and binary bodies (checked
//! by decoding and verifying them, as a light client would), the head
//! stream, and 409 on a node without a chain.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use metanode_api::{
    AccountInfo, AppState, BoxFuture, BpciMetrics, ChainControl, ChainError, ChainMetrics,
    ChainStatus, HeadEvent, ReceiptWithProof, router, wire,
};
use metanode_chain::light;
use metanode_chain::mempool::MempoolError;
use metanode_chain::poh::poh_root;
use metanode_chain::types::{
    Block, ChainMode, CommitCertificate, FinalizedBlock, Genesis, GenesisAccount, Header, Height,
    Receipt, SignedTx, TxBatch, TxBody, TxKind, ValidatorIndex, ValidatorSet, commit_seal_digest,
    receipts_root, tx_root,
};
use metanode_core::encoding::{Decode, Encode};
use metanode_core::hash::Hash32;
use metanode_core::keys::{PublicKey, SigningKey};
use metanode_core::limits::{CHAIN_TX_BATCH_SIZE_BYTES_MAX, CHAIN_TX_SIZE_BYTES_MAX};
use metanode_core::merkle::{self, InclusionProof};
use metanode_store::{Store, StoreOptions};
use tokio::sync::broadcast;
use tower::ServiceExt as _;

/// Bounds every wait on the head stream; the stream answers far sooner.
const STREAM_WAIT: Duration = Duration::from_secs(10);
/// Heads the fake's broadcast channel holds before a slow reader lags.
const HEADS_CAPACITY: usize = 2;

fn key(i: u8) -> SigningKey {
    SigningKey::from_seed(&[i; 32])
}

/// A genesis with validators 1..=4 and account 10, and block 1 holding one
/// transfer from 10 to 11, certified by validators 1, 2 and 4.
struct World {
    genesis: Genesis,
    block: FinalizedBlock,
    receipt: ReceiptWithProof,
    tx: SignedTx,
}

fn world() -> World {
    let set = ValidatorSet::new((1..=4).map(|i| key(i).public_key()).collect()).unwrap();
    let genesis = Genesis {
        chain_name: "api-test".into(),
        genesis_time_ms: 1_000,
        validators: set.clone(),
        accounts: vec![GenesisAccount {
            key: key(10).public_key(),
            balance: 1_000,
        }],
    };
    let chain_id = genesis.chain_id();
    let tx = transfer(&genesis, 0, 7);
    let receipt = Receipt {
        tx_hash: tx.hash(),
        status: 0,
        fee_charged: 1,
        output: vec![0xab, 0xcd],
    };
    let receipts = vec![receipt.clone()];
    let header = Header {
        chain_id,
        height: 1,
        round: 0,
        prev_hash: genesis.hash(),
        timestamp_ms: 2_000,
        proposer: *set.proposer(1, 0),
        tx_root: tx_root(std::slice::from_ref(&tx)),
        poh_root: poh_root(genesis.hash(), std::slice::from_ref(&tx)),
        receipts_root: receipts_root(&receipts),
        state_root: Hash32([5; 32]),
        da_root: merkle::empty_root(),
        xcmp_root: merkle::empty_root(),
        validator_set_hash: set.hash(),
        next_validator_set_hash: set.hash(),
        mode: ChainMode::Normal,
    };
    let digest = commit_seal_digest(&chain_id, 1, 0, &header.hash());
    let seals: Vec<(ValidatorIndex, _)> = [0u16, 1, 3]
        .iter()
        .map(|&i| (i, key(i as u8 + 1).sign(digest.as_bytes())))
        .collect();
    let certificate = CommitCertificate::from_seals(1, 0, header.hash(), 4, &seals);
    certificate.verify(&chain_id, &header, &set).unwrap();
    let block = FinalizedBlock {
        block: Block {
            header,
            txs: vec![tx.clone()],
        },
        certificate,
    };
    let receipt = ReceiptWithProof {
        height: 1,
        index: 0,
        txs_count: 1,
        receipt,
        proof: light::receipt_proof(&receipts, 0).unwrap(),
        block: block.clone(),
    };
    World {
        genesis,
        block,
        receipt,
        tx,
    }
}

fn transfer(genesis: &Genesis, nonce: u64, amount: u64) -> SignedTx {
    TxBody {
        chain_id: genesis.chain_id(),
        sender: key(10).public_key(),
        nonce,
        fee: 1,
        kind: TxKind::Transfer {
            to: key(11).public_key(),
            amount,
        },
    }
    .sign(&key(10))
    .unwrap()
}

#[derive(Debug)]
struct FakeChain {
    genesis: Genesis,
    block: FinalizedBlock,
    receipt: ReceiptWithProof,
    /// What the next `submit` calls answer, in order; empty = admit.
    outcomes: Mutex<VecDeque<ChainError>>,
    submitted: Mutex<Vec<SignedTx>>,
    heads: Mutex<Option<broadcast::Sender<HeadEvent>>>,
}

impl FakeChain {
    fn new(world: &World) -> Self {
        Self {
            genesis: world.genesis.clone(),
            block: world.block.clone(),
            receipt: world.receipt.clone(),
            outcomes: Mutex::new(VecDeque::new()),
            submitted: Mutex::new(Vec::new()),
            heads: Mutex::new(Some(broadcast::channel(HEADS_CAPACITY).0)),
        }
    }

    fn publish(&self, height: Height) {
        let heads = self.heads.lock().unwrap();
        heads.as_ref().unwrap().send(head(height)).unwrap();
    }

    fn subscribers(&self) -> usize {
        self.heads
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, broadcast::Sender::receiver_count)
    }
}

fn head(height: Height) -> HeadEvent {
    HeadEvent {
        height,
        block_hash: Hash32([height as u8; 32]),
        timestamp_ms: 1_000 + height,
        txs_count: height * 2,
        state_root: Hash32([0xee; 32]),
        round: 1,
    }
}

impl ChainControl for FakeChain {
    fn metrics(&self) -> ChainMetrics {
        ChainMetrics {
            height: 1,
            consensus_height: 2,
            consensus_round: 3,
            mempool_txs: 4,
            mempool_bytes: 500,
            blocks_decided: 6,
            blocks_synced: 7,
            txs_committed: 8,
            round_timeouts: 9,
            round_skips: 10,
            round_changes_sent: 11,
            messages_received: 12,
            messages_rejected: vec![("qbft_undecodable", 13)],
            txs_rejected: vec![("client", "bad_signature", 14), ("gossip", "duplicate", 15)],
            sync_requests_sent: 16,
            sync_requests_served: 17,
            sync_target_height: 18,
            bpci: BpciMetrics {
                frames_sent: 19,
                frames_received: 20,
                payload_bytes_sent: 21,
                payload_bytes_received: 22,
                frames_rejected: vec![("bad_signature", 23), ("wrong_chain_id", 24)],
                frames_lost: 25,
                frames_refused_queue_full: 26,
                connections_dialed: 27,
                connections_accepted: 28,
                connections_superseded: 29,
                dial_failures: 30,
                handshakes_refused: 31,
                peers: vec![(key(2).public_key(), true), (key(3).public_key(), false)],
            },
        }
    }

    fn status(&self) -> ChainStatus {
        let header = &self.block.block.header;
        ChainStatus {
            chain_id: self.genesis.hash(),
            chain_name: self.genesis.chain_name.clone(),
            node_key: key(1).public_key(),
            is_validator: true,
            height: 1,
            block_hash: header.hash(),
            block_timestamp_ms: header.timestamp_ms,
            state_root: header.state_root,
            consensus_height: 2,
            consensus_round: 3,
            validators: self.genesis.validators.validators().to_vec(),
            mempool_txs: 4,
            mempool_bytes: 500,
            peers_connected: vec![key(2).public_key(), key(3).public_key()],
            messages_received: 60,
            messages_rejected: 1,
            last_rejection: Some("stale round".into()),
            frames_rejected: 2,
            txs_refused: 3,
            blocks_synced: 0,
        }
    }

    fn genesis(&self) -> Genesis {
        self.genesis.clone()
    }

    fn submit(&self, tx: SignedTx) -> BoxFuture<'_, Result<Hash32, ChainError>> {
        Box::pin(async move {
            if let Some(err) = self.outcomes.lock().unwrap().pop_front() {
                return Err(err);
            }
            let hash = tx.hash();
            self.submitted.lock().unwrap().push(tx);
            Ok(hash)
        })
    }

    fn block(&self, height: Height) -> Result<Option<FinalizedBlock>, ChainError> {
        match height {
            1 => Ok(Some(self.block.clone())),
            // A height whose record is damaged on disk.
            7 => Err(ChainError::Storage(
                "block log record at offset 4096 is damaged".into(),
            )),
            _ => Ok(None),
        }
    }

    fn receipt(&self, tx_hash: &Hash32) -> Result<Option<ReceiptWithProof>, ChainError> {
        Ok((*tx_hash == self.receipt.receipt.tx_hash).then(|| self.receipt.clone()))
    }

    fn account(&self, key: &PublicKey) -> AccountInfo {
        if self.genesis.accounts.iter().any(|a| a.key == *key) {
            AccountInfo {
                balance: 992,
                next_nonce: 1,
            }
        } else {
            AccountInfo {
                balance: 0,
                next_nonce: 0,
            }
        }
    }

    fn heads(&self) -> broadcast::Receiver<HeadEvent> {
        match self.heads.lock().unwrap().as_ref() {
            Some(tx) => tx.subscribe(),
            // Closed: a receiver whose sender is already gone.
            None => broadcast::channel(1).1,
        }
    }
}

fn state(dir: &std::path::Path, chain: Option<Arc<FakeChain>>) -> AppState {
    let store = Store::open(StoreOptions::new(dir.join("store"))).expect("store");
    let opts = common::api_options();
    let state = AppState::new(store, opts);
    match chain {
        Some(chain) => state.with_chain(chain),
        None => state,
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not the expected json ({e}): {}", self.text()))
    }

    fn error(&self) -> String {
        self.json::<wire::ErrorBody>().error
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let resp = app.clone().oneshot(request).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(app: &Router, uri: &str) -> Answer {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post_tx(app: &Router, body: Vec<u8>) -> Answer {
    let request = Request::post("/api/v1/chain/txs")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(body))
        .unwrap();
    send(app, request).await
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length: {text}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test]
async fn no_chain_answers_409_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path(), None));
    let tx = transfer(&world().genesis, 0, 1)
        .to_canonical_bytes()
        .unwrap();
    for (method, uri) in [
        (Method::GET, "/api/v1/chain/status"),
        (Method::GET, "/api/v1/chain/genesis"),
        (Method::GET, "/api/v1/chain/genesis?format=bin"),
        (Method::POST, "/api/v1/chain/txs"),
        (Method::GET, "/api/v1/chain/blocks/1"),
        (Method::GET, "/api/v1/chain/blocks/latest"),
        (
            Method::GET,
            &format!("/api/v1/chain/receipts/{}", "ab".repeat(32)),
        ),
        (
            Method::GET,
            &format!("/api/v1/chain/accounts/{}", key(1).public_key()),
        ),
        (Method::GET, "/api/v1/chain/heads"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(tx.clone()))
            .unwrap();
        let answer = send(&app, request).await;
        assert_eq!(
            answer.status,
            StatusCode::CONFLICT,
            "{uri}: {}",
            answer.text()
        );
        assert_eq!(
            answer.error(),
            "this node runs no chain (its config has no `chain:` section), so it has no \
             blocks, transactions or accounts",
            "{uri}"
        );
    }
}

#[tokio::test]
async fn status_and_genesis() {
    let dir = tempfile::tempdir().unwrap();
    let w = world();
    let app = router(state(dir.path(), Some(Arc::new(FakeChain::new(&w)))));

    let answer = get(&app, "/api/v1/chain/status").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let status: wire::ChainStatusResponse = answer.json();
    assert_eq!(status.chain_id, w.genesis.hash().to_hex());
    assert_eq!(status.chain_name, "api-test");
    assert_eq!(status.node_key, key(1).public_key().to_string());
    assert_eq!(status.height, 1);
    assert_eq!(status.block_hash, w.block.block.header.hash().to_hex());
    assert_eq!(status.state_root, "05".repeat(32));
    assert_eq!((status.consensus_height, status.consensus_round), (2, 3));
    assert_eq!(status.validators.len(), 4);
    assert_eq!(status.validators[3], key(4).public_key().to_string());
    assert_eq!(
        status.peers_connected,
        [
            key(2).public_key().to_string(),
            key(3).public_key().to_string()
        ]
    );
    assert_eq!((status.mempool_txs, status.mempool_bytes), (4, 500));
    assert_eq!(status.last_rejection.as_deref(), Some("stale round"));
    assert_eq!(
        (
            status.messages_received,
            status.messages_rejected,
            status.frames_rejected,
            status.txs_refused
        ),
        (60, 1, 2, 3)
    );
    let answer = get(&app, "/api/v1/chain/status?verbose=1").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("\"verbose\""), "{}", answer.text());

    let answer = get(&app, "/api/v1/chain/genesis").await;
    assert_eq!(answer.status, StatusCode::OK);
    let genesis: wire::GenesisResponse = answer.json();
    assert_eq!(genesis.chain_id, w.genesis.chain_id().to_string());
    assert_eq!(genesis.chain_name, "api-test");
    assert_eq!(genesis.genesis_time_ms, 1_000);
    assert_eq!(genesis.validators[0], key(1).public_key().to_string());
    assert_eq!(
        genesis.accounts,
        [wire::GenesisAccountInfo {
            public_key: key(10).public_key().to_string(),
            balance: 1_000
        }]
    );

    // The canonical bytes decode to the same document, whose hash is the id.
    let answer = get(&app, "/api/v1/chain/genesis?format=bin").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header(header::CONTENT_TYPE),
        Some("application/octet-stream")
    );
    let decoded = Genesis::from_canonical_bytes(&answer.body).unwrap();
    assert_eq!(decoded, w.genesis);
    assert_eq!(decoded.hash().to_hex(), genesis.chain_id);

    let answer = get(&app, "/api/v1/chain/genesis?format=yaml").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("format=bin"), "{}", answer.text());
}

#[tokio::test]
async fn submit_admits_and_maps_every_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let w = world();
    let fake = Arc::new(FakeChain::new(&w));
    let app = router(state(dir.path(), Some(fake.clone())));
    let tx = transfer(&w.genesis, 1, 3);
    let bytes = tx.to_canonical_bytes().unwrap();

    let answer = post_tx(&app, bytes.clone()).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let admitted: wire::TxSubmitResponse = answer.json();
    assert_eq!(admitted.tx_hash, tx.hash().to_hex());
    assert_eq!(*fake.submitted.lock().unwrap(), std::slice::from_ref(&tx));

    // Without a content type the bytes are still taken for what they are.
    let request = Request::post("/api/v1/chain/txs")
        .body(Body::from(bytes.clone()))
        .unwrap();
    assert_eq!(send(&app, request).await.status, StatusCode::ACCEPTED);

    let sender = key(10).public_key();
    let refusals = [
        (
            ChainError::Refused(MempoolError::Full {
                tx: tx.hash(),
                fee: 1,
                txs: 10,
                bytes: 2_000,
                txs_max: 10,
                bytes_max: 4_096,
            }),
            StatusCode::TOO_MANY_REQUESTS,
            "mempool is full",
        ),
        (
            ChainError::Refused(MempoolError::SenderFull {
                tx: tx.hash(),
                sender: sender.into(),
                count: 1_000,
            }),
            StatusCode::TOO_MANY_REQUESTS,
            "already has 1000 pending transactions",
        ),
        (
            ChainError::Refused(MempoolError::NonceTooLow {
                tx: tx.hash(),
                sender: sender.into(),
                nonce: 1,
                expected: 5,
            }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "is already committed (next nonce 5)",
        ),
        (
            ChainError::Refused(MempoolError::BadSignature {
                tx: tx.hash(),
                sender: sender.into(),
                nonce: 1,
            }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "has a bad signature",
        ),
        (
            ChainError::Unavailable("the node is shutting down".into()),
            StatusCode::SERVICE_UNAVAILABLE,
            "the chain is not running: the node is shutting down",
        ),
    ];
    for (err, status, needle) in refusals {
        fake.outcomes.lock().unwrap().push_back(err);
        let answer = post_tx(&app, bytes.clone()).await;
        assert_eq!(answer.status, status, "{}", answer.text());
        assert!(answer.error().contains(needle), "{}", answer.text());
        let retry = answer.header(header::RETRY_AFTER);
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(retry, Some("1"));
        } else {
            assert_eq!(retry, None);
        }
    }
    assert_eq!(fake.submitted.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn submit_rejects_bad_bodies_before_the_chain_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let w = world();
    let fake = Arc::new(FakeChain::new(&w));
    let app = router(state(dir.path(), Some(fake.clone())));
    let bytes = w.tx.to_canonical_bytes().unwrap();
    let max = CHAIN_TX_SIZE_BYTES_MAX as usize;

    // Declared too large: refused from the header alone.
    let request = Request::post("/api/v1/chain/txs")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, (max + 1).to_string())
        .body(Body::from(vec![0; max + 1]))
        .unwrap();
    let answer = send(&app, request).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        answer.error(),
        format!(
            "transaction body is {} bytes; a transaction is at most {max} bytes",
            max + 1
        )
    );
    // Streamed without a length: cut off at the limit.
    let chunks = vec![
        Ok::<_, std::io::Error>(Bytes::from(vec![1u8; max])),
        Ok(Bytes::from_static(b"x")),
    ];
    let request = Request::post("/api/v1/chain/txs")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    let answer = send(&app, request).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.text()
    );
    assert!(
        answer.error().contains(&format!("more than {max} bytes")),
        "{}",
        answer.text()
    );

    // Truncated: the decode error names what and where.
    let answer = post_tx(&app, bytes[..bytes.len() - 10].to_vec()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let message = answer.error();
    assert!(
        message.starts_with(&format!(
            "the body ({} bytes) is not a canonical SignedTx: truncated input",
            bytes.len() - 10
        )),
        "{message}"
    );
    assert!(message.contains("at offset"), "{message}");
    // Trailing bytes after a valid transaction.
    let mut extra = bytes.clone();
    extra.push(0);
    let answer = post_tx(&app, extra).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer
            .error()
            .contains(&format!("trailing bytes: 1 after offset {}", bytes.len())),
        "{}",
        answer.text()
    );
    // An unknown version byte.
    let mut version = bytes.clone();
    version[0] = 9;
    let answer = post_tx(&app, version).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.error().contains("unknown version 9 at offset 0"),
        "{}",
        answer.text()
    );

    let answer = post_tx(&app, Vec::new()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.error().contains("the body is empty"),
        "{}",
        answer.text()
    );

    let request = Request::post("/api/v1/chain/txs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes))
        .unwrap();
    let answer = send(&app, request).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        answer.error().contains("\"application/json\""),
        "{}",
        answer.text()
    );

    assert!(fake.submitted.lock().unwrap().is_empty());
}

#[tokio::test]
async fn blocks_in_json_and_canonical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let w = world();
    let app = router(state(dir.path(), Some(Arc::new(FakeChain::new(&w)))));
    let header = &w.block.block.header;

    for uri in ["/api/v1/chain/blocks/1", "/api/v1/chain/blocks/latest"] {
        let answer = get(&app, uri).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.text());
        let block: wire::BlockResponse = answer.json();
        assert_eq!(block.height, 1);
        assert_eq!(block.hash, header.hash().to_hex());
        assert_eq!(block.header.hash, block.hash);
        assert_eq!(block.header.prev_hash, w.genesis.hash().to_hex());
        assert_eq!(block.header.proposer, header.proposer.to_string());
        assert_eq!(block.header.receipts_root, header.receipts_root.to_hex());
        assert_eq!(
            block.header.next_validator_set_hash,
            header.next_validator_set_hash.to_hex()
        );
        assert_eq!(block.header.mode, "normal");
        assert_eq!(block.txs_count, 1);
        assert_eq!(block.txs, [w.tx.hash().to_hex()]);
        assert_eq!(block.certificate.signers, [0, 1, 3]);
        assert_eq!(block.certificate.signatures_count, 3);
        assert_eq!(block.certificate.block_hash, block.hash);
    }

    // The canonical bytes verify like a light client would check them.
    let answer = get(&app, "/api/v1/chain/blocks/1?format=bin").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header(header::CONTENT_TYPE),
        Some("application/octet-stream")
    );
    let block = FinalizedBlock::from_canonical_bytes(&answer.body).unwrap();
    assert_eq!(block, w.block);
    let mut client = light::LightClient::from_genesis(&w.genesis);
    client
        .verify_header(&block.block.header, &block.certificate, None)
        .unwrap();
    light::verify_block_body(&block.block.header, &block.block.txs).unwrap();
    assert_eq!(client.height(), 1);

    let answer = get(&app, "/api/v1/chain/blocks/2").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.error(),
        "no block at height 2: the last finalized height is 1"
    );
    for (uri, needle) in [
        ("/api/v1/chain/blocks/one", "block \"one\" is not a height"),
        ("/api/v1/chain/blocks/-1", "is not a height"),
        (
            "/api/v1/chain/blocks/18446744073709551616",
            "is not a height",
        ),
        ("/api/v1/chain/blocks/0", "height 0 is the genesis document"),
        (
            "/api/v1/chain/blocks/1?format=xml",
            "format \"xml\" is not supported",
        ),
        (
            "/api/v1/chain/blocks/1?fmt=bin",
            "unknown query parameter \"fmt\"",
        ),
    ] {
        let answer = get(&app, uri).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(answer.error().contains(needle), "{uri}: {}", answer.text());
    }
    let answer = get(&app, "/api/v1/chain/blocks/7").await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        answer.error(),
        "reading the block store failed: block log record at offset 4096 is damaged"
    );
}

#[tokio::test]
async fn receipts_carry_what_an_offline_light_client_needs() {
    let dir = tempfile::tempdir().unwrap();
    let w = world();
    let app = router(state(dir.path(), Some(Arc::new(FakeChain::new(&w)))));

    let answer = get(&app, &format!("/api/v1/chain/receipts/{}", w.tx.hash())).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let r: wire::ReceiptResponse = answer.json();
    assert_eq!((r.height, r.index, r.txs_count), (1, 0, 1));
    assert_eq!(r.receipt.tx_hash, w.tx.hash().to_hex());
    assert_eq!((r.receipt.status, r.receipt.fee_charged), (0, 1));
    assert_eq!(r.receipt.output, "abcd");
    assert_eq!(r.header.hash, w.block.block.header.hash().to_hex());

    // Offline: trust only the genesis, then check certificate and proof.
    let header = Header::from_canonical_bytes(&unhex(&r.header_bin)).unwrap();
    let certificate = CommitCertificate::from_canonical_bytes(&unhex(&r.certificate_bin)).unwrap();
    let receipt = Receipt::from_canonical_bytes(&unhex(&r.receipt_bin)).unwrap();
    let proof = InclusionProof {
        leaf_index: r.proof.leaf_index,
        tree_size: r.proof.tree_size,
        path: r.proof.path.iter().map(|h| h.parse().unwrap()).collect(),
    };
    assert_eq!(header.hash().to_hex(), r.header.hash);
    let mut client = light::LightClient::from_genesis(&w.genesis);
    client.verify_header(&header, &certificate, None).unwrap();
    light::verify_receipt(&header, &receipt, &proof).unwrap();
    assert_eq!(receipt, w.receipt.receipt);
    assert_eq!(proof.tree_size, r.txs_count);

    let unknown = Hash32([0x42; 32]);
    let answer = get(&app, &format!("/api/v1/chain/receipts/{unknown}")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.error(),
        format!(
            "transaction {unknown} has no receipt: it is unknown to this node or not final yet"
        )
    );
    let answer = get(&app, "/api/v1/chain/receipts/abc").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        answer.error(),
        "transaction hash \"abc\" is not 64 hex digits: hash must be 64 hex digits, got 3 bytes"
    );
}

#[tokio::test]
async fn accounts_by_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let w = world();
    let app = router(state(dir.path(), Some(Arc::new(FakeChain::new(&w)))));

    let funded = key(10).public_key();
    let answer = get(&app, &format!("/api/v1/chain/accounts/{funded}")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json::<wire::AccountResponse>(),
        wire::AccountResponse {
            public_key: funded.to_string(),
            balance: 992,
            next_nonce: 1
        }
    );
    // Upper-case hex names the same account.
    let answer = get(
        &app,
        &format!(
            "/api/v1/chain/accounts/{}",
            funded.to_string().to_uppercase()
        ),
    )
    .await;
    assert_eq!(
        answer.json::<wire::AccountResponse>().public_key,
        funded.to_string()
    );
    let stranger = key(99).public_key();
    let answer = get(&app, &format!("/api/v1/chain/accounts/{stranger}")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let info: wire::AccountResponse = answer.json();
    assert_eq!((info.balance, info.next_nonce), (0, 0));

    let answer = get(&app, "/api/v1/chain/accounts/xyz").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer
            .error()
            .starts_with("account \"xyz\" is not an Ed25519 public key (64 hex digits)"),
        "{}",
        answer.text()
    );
    let identity = format!("01{}", "00".repeat(31));
    let answer = get(&app, &format!("/api/v1/chain/accounts/{identity}")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.error().contains("small-order"), "{}", answer.text());
}

/// The next data frame of a streaming body, within [`STREAM_WAIT`]; `None`
/// at the end of the stream.
async fn next_chunk(body: &mut Body) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(STREAM_WAIT, body.frame())
            .await
            .expect("the head stream answered in time")?
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            return Some(data);
        }
    }
}

async fn open_heads(app: &Router) -> Body {
    let resp = app
        .clone()
        .oneshot(
            Request::get("/api/v1/chain/heads")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/x-ndjson");
    resp.into_body()
}

#[tokio::test]
async fn heads_stream_ndjson_with_lag_markers() {
    let dir = tempfile::tempdir().unwrap();
    let w = world();
    let fake = Arc::new(FakeChain::new(&w));
    let app = router(state(dir.path(), Some(fake.clone())));

    let mut body = open_heads(&app).await;
    assert_eq!(fake.subscribers(), 1);
    fake.publish(5);
    let line = next_chunk(&mut body).await.expect("a line");
    assert!(line.ends_with(b"\n"));
    let event: wire::HeadEventInfo = serde_json::from_slice(&line).unwrap();
    assert_eq!(event, wire::HeadEventInfo::from(&head(5)));
    assert_eq!(event.block_hash, "05".repeat(32));
    assert_eq!(
        (event.txs_count, event.round, event.timestamp_ms),
        (10, 1, 1_005)
    );

    // Five heads into a channel of two: the reader is told it missed three,
    // then gets the two newest.
    for height in 6..=10 {
        fake.publish(height);
    }
    let mut lines = Vec::new();
    while lines.len() < 3 {
        let chunk = next_chunk(&mut body).await.expect("a line");
        lines.extend(
            chunk
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    let lagged: wire::HeadsLagged = serde_json::from_slice(&lines[0]).unwrap();
    assert_eq!(lagged, wire::HeadsLagged { lagged: 3 });
    let heights: Vec<u64> = lines[1..]
        .iter()
        .map(|l| {
            serde_json::from_slice::<wire::HeadEventInfo>(l)
                .unwrap()
                .height
        })
        .collect();
    assert_eq!(heights, [9, 10]);

    // A client that goes away unsubscribes.
    drop(body);
    assert_eq!(fake.subscribers(), 0);

    // The stream ends when the chain stops.
    let mut body = open_heads(&app).await;
    fake.heads.lock().unwrap().take();
    assert_eq!(next_chunk(&mut body).await, None);
}

#[tokio::test]
async fn heads_stream_ends_when_the_server_drains() {
    let dir = tempfile::tempdir().unwrap();
    let w = world();
    let fake = Arc::new(FakeChain::new(&w));
    let st = state(dir.path(), Some(fake.clone()));
    let app = router(st.clone());

    let mut body = open_heads(&app).await;
    fake.publish(1);
    assert!(next_chunk(&mut body).await.is_some());
    st.set_draining();
    assert_eq!(next_chunk(&mut body).await, None);
    assert_eq!(fake.subscribers(), 0);
}

async fn post_batch(app: &Router, body: Vec<u8>) -> Answer {
    let request = Request::post("/api/v1/chain/txs/batch")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(body))
        .unwrap();
    send(app, request).await
}

#[tokio::test]
async fn batch_submit_answers_each_transaction_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let w = world();
    let fake = Arc::new(FakeChain::new(&w));
    let app = router(state(dir.path(), Some(fake.clone())));
    let txs: Vec<SignedTx> = (1..=3).map(|n| transfer(&w.genesis, n, 1)).collect();
    let body = TxBatch { txs: txs.clone() }.to_canonical_bytes().unwrap();
    let answer = post_batch(&app, body.clone()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let all: wire::TxBatchSubmitResponse = answer.json();
    assert_eq!((all.accepted, all.refused), (3, 0));
    let hashes: Vec<String> = all.results.iter().map(|r| r.tx_hash.clone()).collect();
    let expected: Vec<String> = txs.iter().map(|t| t.hash().to_hex()).collect();
    assert_eq!(hashes, expected);
    assert!(
        all.results
            .iter()
            .all(|r| r.status == 202 && r.error.is_none())
    );
    assert_eq!(*fake.submitted.lock().unwrap(), txs);

    // The default `submit_batch` submits in order, so the first queued
    // outcome lands on the first transaction.
    fake.outcomes
        .lock()
        .unwrap()
        .push_back(ChainError::Refused(MempoolError::SenderFull {
            tx: txs[0].hash(),
            sender: key(10).public_key().into(),
            count: 1_000,
        }));
    let answer = post_batch(&app, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let mixed: wire::TxBatchSubmitResponse = answer.json();
    assert_eq!((mixed.accepted, mixed.refused), (2, 1));
    assert_eq!(mixed.results[0].status, 429);
    assert!(
        mixed.results[0]
            .error
            .as_deref()
            .unwrap()
            .contains("already has 1000 pending transactions")
    );
    assert_eq!(mixed.results[0].tx_hash, txs[0].hash().to_hex());
    assert_eq!(mixed.results[1].status, 202);

    // Bad bodies never reach the chain.
    let before = fake.submitted.lock().unwrap().len();
    let single = txs[0].to_canonical_bytes().unwrap();
    let answer = post_batch(&app, single).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.error().contains("not a canonical TxBatch"),
        "{}",
        answer.text()
    );
    let answer = post_batch(&app, Vec::new()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let too_big = vec![0u8; CHAIN_TX_BATCH_SIZE_BYTES_MAX as usize + 1];
    let answer = post_batch(&app, too_big).await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.text()
    );
    assert_eq!(fake.submitted.lock().unwrap().len(), before);
}

/// `/metrics` carries the chain node's counters and gauges with their types
/// and reason labels, plus the submissions the API itself refused, and
/// still ends with `# EOF`; a node without a chain shows none of them.
#[tokio::test]
async fn metrics_export_chain_and_bpci_counters_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let plain = router(state(dir.path(), None));
    let text = get(&plain, "/metrics").await.text();
    assert!(!text.contains("metanode_chain_"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let w = world();
    let app = router(state(dir.path(), Some(Arc::new(FakeChain::new(&w)))));
    // Two bodies the API refuses before the node: too large, not a SignedTx.
    let big = vec![0u8; CHAIN_TX_SIZE_BYTES_MAX as usize + 1];
    assert_eq!(
        post_tx(&app, big).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        post_tx(&app, vec![7u8; 10]).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post_tx(&app, vec![9u8; 3]).await.status,
        StatusCode::BAD_REQUEST
    );

    let answer = get(&app, "/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    let text = answer.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let peer2 = key(2).public_key().to_string();
    let peer3 = key(3).public_key().to_string();
    for line in [
        "# TYPE metanode_chain_height gauge",
        "metanode_chain_height 1",
        "metanode_chain_consensus_height 2",
        "metanode_chain_round 3",
        "metanode_chain_mempool_txs 4",
        "# TYPE metanode_chain_mempool_bytes gauge",
        "# UNIT metanode_chain_mempool_bytes bytes",
        "metanode_chain_mempool_bytes 500",
        "# TYPE metanode_chain_blocks_committed counter",
        "metanode_chain_blocks_committed_total{via=\"consensus\"} 6",
        "metanode_chain_blocks_committed_total{via=\"sync\"} 7",
        "metanode_chain_txs_committed_total 8",
        "metanode_chain_round_timeouts_total 9",
        "metanode_chain_round_skips_total 10",
        "metanode_chain_round_changes_sent_total 11",
        "metanode_chain_messages_received_total 12",
        "metanode_chain_messages_rejected_total{reason=\"qbft_undecodable\"} 13",
        "# TYPE metanode_chain_txs_rejected counter",
        "metanode_chain_txs_rejected_total{source=\"api\",reason=\"oversized\"} 1",
        "metanode_chain_txs_rejected_total{source=\"api\",reason=\"undecodable\"} 2",
        "metanode_chain_txs_rejected_total{source=\"api_batch\",reason=\"oversized\"} 0",
        "metanode_chain_txs_rejected_total{source=\"client\",reason=\"bad_signature\"} 14",
        "metanode_chain_txs_rejected_total{source=\"gossip\",reason=\"duplicate\"} 15",
        "metanode_chain_sync_requests_sent_total 16",
        "metanode_chain_sync_requests_served_total 17",
        "metanode_chain_sync_target_height 18",
        "metanode_bpci_frames_sent_total 19",
        "metanode_bpci_frames_received_total 20",
        "metanode_bpci_payload_sent_bytes_total 21",
        "metanode_bpci_payload_received_bytes_total 22",
        "metanode_bpci_frames_rejected_total{reason=\"bad_signature\"} 23",
        "metanode_bpci_frames_rejected_total{reason=\"wrong_chain_id\"} 24",
        "metanode_bpci_frames_lost_total 25",
        "metanode_bpci_frames_refused_queue_full_total 26",
        "metanode_bpci_connections_total{event=\"dialed\"} 27",
        "metanode_bpci_connections_total{event=\"accepted\"} 28",
        "metanode_bpci_connections_total{event=\"superseded\"} 29",
        "metanode_bpci_dial_failures_total 30",
        "metanode_bpci_handshakes_refused_total 31",
        "# TYPE metanode_bpci_peer_connected gauge",
        &format!("metanode_bpci_peer_connected{{peer=\"{peer2}\"}} 1"),
        &format!("metanode_bpci_peer_connected{{peer=\"{peer3}\"}} 0"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
}
