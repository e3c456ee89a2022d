//! `/api/v1/cage/receipts*` through the router: batches and receipt proofs
//! read from a real receipt file, checked with the node key alone, and
//! every bad input named.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{Answer, send};
use metanode_api::{AppState, router, wire};
use metanode_cage::receipt::request_hash;
use metanode_cage::{Decision, FileSink, Receipt, ReceiptProof, ReceiptReader, SignedBatch};
use metanode_cage::{ReceiptSink as _, read_signed_batches};
use metanode_core::cid::ContentId;
use metanode_core::encoding::{Decode as _, Encode as _};
use metanode_core::hash::Hash32;
use metanode_core::keys::SigningKey;
use metanode_store::{Store, StoreOptions};

fn receipt(i: u64) -> Receipt {
    Receipt {
        time_unix_ms: 1_700_000_000_000 + i,
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8)),
        key_id: Some(format!("client-{i}")),
        request_hash: request_hash("POST", "api.example", &format!("/orders/{i}"), None),
        decision: Decision::Forwarded,
        detail: String::new(),
        status: 201,
        upstream_status: Some(201),
        response_hash: Hash32::ZERO,
        policy_version: 3,
        policy_digest: [7; 32],
    }
}

/// A receipt file of three batches (2, 3 and 1 receipts) and its reader.
fn receipts(dir: &Path, key: &SigningKey) -> (ReceiptReader, Vec<Vec<Receipt>>) {
    let path = dir.join("receipts.log");
    let mut sink = FileSink::open(&path, &key.public_key()).expect("open the receipt file");
    let mut all = Vec::new();
    let mut seq = 0;
    for count in [2u64, 3, 1] {
        let batch: Vec<Receipt> = (seq..seq + count).map(receipt).collect();
        seq += count;
        let hashes: Vec<Hash32> = batch.iter().map(|r| r.hash().unwrap()).collect();
        let signed = SignedBatch::seal(&sink.tip(), batch.clone(), &hashes, key, 1_700_000_001_000);
        sink.append(&signed.to_encoded().unwrap()).unwrap();
        all.push(batch);
    }
    let reader = ReceiptReader::new(path, key.public_key(), sink.batch_offsets());
    (reader, all)
}

fn app(dir: &Path, reader: Option<ReceiptReader>) -> Router {
    let store = Store::open(StoreOptions::new(dir.join("store"))).expect("store");
    let state = AppState::new(store, common::api_options());
    router(match reader {
        Some(r) => state.with_cage_receipts(r),
        None => state,
    })
}

async fn get(app: &Router, uri: &str) -> Answer {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap_or_else(|e| panic!("not hex ({e}): {text}"))
}

#[tokio::test]
async fn no_cage_answers_409_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), None);
    let hash = Hash32::ZERO.to_hex();
    for uri in [
        "/api/v1/cage/receipts".to_string(),
        "/api/v1/cage/receipts/batches/0".to_string(),
        format!("/api/v1/cage/receipts/{hash}?batch=0"),
    ] {
        let a = get(&app, &uri).await;
        assert_eq!(a.status, StatusCode::CONFLICT, "{uri}");
        assert!(a.error().contains("no HTTP Cage"), "{uri}: {}", a.error());
    }
}

#[tokio::test]
async fn batches_are_served_verified_with_their_store_cid() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_seed(&[5; 32]);
    let (reader, all) = receipts(dir.path(), &key);
    let path = reader.path().to_path_buf();
    let app = app(dir.path(), Some(reader));

    let info: wire::CageReceiptsInfo =
        serde_json::from_value(get(&app, "/api/v1/cage/receipts").await.json()).unwrap();
    assert_eq!(info.signer, key.public_key().to_string());
    assert_eq!(info.batches_count, 3);
    assert_eq!(info.first_batch_index, 0);

    let on_disk: Vec<Vec<u8>> = read_signed_batches(&path)
        .unwrap()
        .map(|frame| frame.map(|(_, bytes)| bytes))
        .collect::<Result<_, _>>()
        .unwrap();
    let mut seq = 0;
    for (b, receipts) in all.iter().enumerate() {
        let a = get(&app, &format!("/api/v1/cage/receipts/batches/{b}")).await;
        assert_eq!(a.status, StatusCode::OK, "batch {b}");
        let batch: wire::CageBatchResponse = serde_json::from_value(a.json()).unwrap();
        assert_eq!(batch.cid, ContentId::raw_blake3_of(&on_disk[b]).to_string());
        assert_eq!(batch.header.batch_index, b as u64);
        assert_eq!(batch.header.first_receipt_seq, seq);
        assert_eq!(batch.header.receipts_count as usize, receipts.len());
        assert_eq!(batch.header.signer, key.public_key().to_string());
        // Small batches fit one default page.
        assert_eq!(batch.receipts_offset, 0);
        assert_eq!(batch.receipts.len(), receipts.len());
        assert_eq!(batch.next_offset, None);
        for (r, shown) in receipts.iter().zip(&batch.receipts) {
            assert_eq!(shown.seq, seq);
            assert_eq!(shown.receipt_hash, r.hash().unwrap().to_hex());
            assert_eq!(shown.client_ip, r.client_ip.to_string());
            assert_eq!(shown.decision, "forwarded");
            assert_eq!(shown.status, 201);
            seq += 1;
        }
        // The blob's bytes: what the agent stores under that CID.
        let bin = get(
            &app,
            &format!("/api/v1/cage/receipts/batches/{b}?format=bin"),
        )
        .await;
        assert_eq!(bin.status, StatusCode::OK);
        assert_eq!(bin.header(header::CONTENT_TYPE), "application/octet-stream");
        assert_eq!(bin.body.as_ref(), on_disk[b].as_slice());
        let decoded = SignedBatch::from_canonical_bytes(&bin.body).unwrap();
        assert_eq!(decoded.receipts, *receipts);
    }
}

#[tokio::test]
async fn a_receipt_proof_checks_with_the_node_key_alone() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_seed(&[5; 32]);
    let (reader, all) = receipts(dir.path(), &key);
    let app = app(dir.path(), Some(reader));
    let mut seq = 0;
    for (b, receipts) in all.iter().enumerate() {
        for r in receipts {
            let hash = r.hash().unwrap();
            let uri = format!("/api/v1/cage/receipts/{hash}?batch={b}");
            let a = get(&app, &uri).await;
            assert_eq!(a.status, StatusCode::OK, "{uri}: {:?}", a.body);
            let shown: wire::CageReceiptProofResponse = serde_json::from_value(a.json()).unwrap();
            assert_eq!(shown.receipt.receipt_hash, hash.to_hex());
            assert_eq!(shown.receipt.seq, seq);
            assert_eq!(shown.header.batch_index, b as u64);
            let proof = ReceiptProof::from_canonical_bytes(&unhex(&shown.proof_bin)).unwrap();
            assert_eq!(proof.verify(&key.public_key()).unwrap(), hash);
            assert_eq!(proof.receipt, *r);
            assert_eq!(shown.proof.leaf_index, proof.proof.leaf_index);
            let bin = get(&app, &format!("{uri}&format=bin")).await;
            assert_eq!(bin.status, StatusCode::OK);
            assert_eq!(
                bin.body.as_ref(),
                proof.to_canonical_bytes().unwrap().as_slice()
            );
            seq += 1;
        }
    }
}

#[tokio::test]
async fn bad_lookups_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_seed(&[5; 32]);
    let (reader, all) = receipts(dir.path(), &key);
    let offsets_path = reader.path().to_path_buf();
    let app = app(dir.path(), Some(reader.clone()));
    let in_batch_1 = all[1][0].hash().unwrap();
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (
            format!("/api/v1/cage/receipts/{in_batch_1}"),
            StatusCode::BAD_REQUEST,
            "batch is missing",
        ),
        (
            format!("/api/v1/cage/receipts/{in_batch_1}?batch=x"),
            StatusCode::BAD_REQUEST,
            "is not a batch number",
        ),
        (
            format!("/api/v1/cage/receipts/{in_batch_1}?batch=1&format=xml"),
            StatusCode::BAD_REQUEST,
            "format",
        ),
        (
            format!("/api/v1/cage/receipts/{in_batch_1}?batch=1&limit=2"),
            StatusCode::BAD_REQUEST,
            "unknown query parameter",
        ),
        (
            "/api/v1/cage/receipts/abc?batch=1".to_string(),
            StatusCode::BAD_REQUEST,
            "not 64 hex digits",
        ),
        (
            format!("/api/v1/cage/receipts/{in_batch_1}?batch=2"),
            StatusCode::NOT_FOUND,
            "is not in receipt batch 2",
        ),
        (
            format!("/api/v1/cage/receipts/{in_batch_1}?batch=3"),
            StatusCode::NOT_FOUND,
            "holds batches 0..3",
        ),
        (
            "/api/v1/cage/receipts/batches/3".to_string(),
            StatusCode::NOT_FOUND,
            "holds batches 0..3",
        ),
        (
            "/api/v1/cage/receipts/batches/-1".to_string(),
            StatusCode::BAD_REQUEST,
            "is not a batch number",
        ),
        (
            "/api/v1/cage/receipts/batches/0?batch=0".to_string(),
            StatusCode::BAD_REQUEST,
            "unknown query parameter",
        ),
        (
            "/api/v1/cage/receipts?x=1".to_string(),
            StatusCode::BAD_REQUEST,
            "unknown query parameter",
        ),
        (
            "/api/v1/cage/receipts/batches/1?offset=4".to_string(),
            StatusCode::BAD_REQUEST,
            "offset 4 is past the end of batch 1, which holds 3 receipts",
        ),
        (
            "/api/v1/cage/receipts/batches/1?offset=-1".to_string(),
            StatusCode::BAD_REQUEST,
            "offset \"-1\" is not a receipt count",
        ),
        (
            "/api/v1/cage/receipts/batches/1?limit=0".to_string(),
            StatusCode::BAD_REQUEST,
            "limit 0 asks for no receipts",
        ),
        (
            "/api/v1/cage/receipts/batches/1?limit=10001".to_string(),
            StatusCode::BAD_REQUEST,
            "at most 10000",
        ),
        (
            "/api/v1/cage/receipts/batches/1?format=bin&limit=2".to_string(),
            StatusCode::BAD_REQUEST,
            "format=bin is the whole signed batch",
        ),
    ];
    for (uri, status, says) in cases {
        let a = get(&app, &uri).await;
        assert_eq!(a.status, status, "{uri}: {}", a.error());
        assert!(a.error().contains(says), "{uri}: {}", a.error());
    }
    // A batch changed on disk after it was written is a 500 naming it, not
    // served as good: flip a byte inside batch 1's receipts.
    let mut bytes = std::fs::read(&offsets_path).unwrap();
    let at = reader.batch(1).unwrap().offset_bytes as usize + 200;
    bytes[at] ^= 0x40;
    std::fs::write(&offsets_path, &bytes).unwrap();
    let a = get(&app, "/api/v1/cage/receipts/batches/1").await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(a.error().contains("batch 1"), "{}", a.error());
    assert_eq!(
        get(&app, "/api/v1/cage/receipts/batches/0").await.status,
        StatusCode::OK
    );
}

/// A receipt log that rotated and deleted its oldest segments: batches in
/// any kept segment are served and proven, deleted ones answer 410 naming
/// the first batch kept, and the info route says where the log starts.
#[tokio::test]
async fn batches_of_deleted_segments_answer_410_and_kept_ones_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_seed(&[5; 32]);
    let path = dir.path().join("receipts.log");
    let policy = metanode_cage::SegmentPolicy {
        segment_bytes_max: 2_000,
        segments_kept_max: 2,
        archive_dir: None,
    };
    let mut sink = FileSink::open_segmented(&path, &key.public_key(), policy).unwrap();
    let mut all = Vec::new();
    for b in 0..24u64 {
        let batch: Vec<Receipt> = (2 * b..2 * b + 2).map(receipt).collect();
        let hashes: Vec<Hash32> = batch.iter().map(|r| r.hash().unwrap()).collect();
        let signed =
            SignedBatch::seal(&sink.tip(), batch.clone(), &hashes, &key, 1_700_000_001_000);
        sink.append(&signed.to_encoded().unwrap()).unwrap();
        all.push(batch);
    }
    let offsets = sink.batch_offsets();
    let first = offsets.first();
    assert!(first > 0, "segments were deleted");
    let reader = ReceiptReader::new(path, key.public_key(), offsets);
    let app = app(dir.path(), Some(reader));

    let info: wire::CageReceiptsInfo =
        serde_json::from_value(get(&app, "/api/v1/cage/receipts").await.json()).unwrap();
    assert_eq!(info.batches_count, 24);
    assert_eq!(info.first_batch_index, first);

    let gone = get(
        &app,
        &format!("/api/v1/cage/receipts/batches/{}", first - 1),
    )
    .await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert!(
        gone.error().contains("segments_kept_max"),
        "{}",
        gone.error()
    );
    assert!(
        gone.error()
            .contains(&format!("oldest batch kept is {first}")),
        "{}",
        gone.error()
    );
    let hash = all[0][0].hash().unwrap().to_hex();
    let gone = get(&app, &format!("/api/v1/cage/receipts/{hash}?batch=0")).await;
    assert_eq!(gone.status, StatusCode::GONE);

    for b in [first, 23] {
        let a = get(&app, &format!("/api/v1/cage/receipts/batches/{b}")).await;
        assert_eq!(a.status, StatusCode::OK, "batch {b}: {}", a.error());
        let r = &all[b as usize][1];
        let hash = r.hash().unwrap().to_hex();
        let a = get(
            &app,
            &format!("/api/v1/cage/receipts/{hash}?batch={b}&format=bin"),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "proof in batch {b}");
        let proof = ReceiptProof::from_canonical_bytes(&a.body).unwrap();
        assert_eq!(proof.verify(&key.public_key()).unwrap(), r.hash().unwrap());
        assert_eq!(proof.receipt, *r);
    }
}

/// `?offset=&limit=` pages a batch's receipts: the pages, followed by
/// `next_offset`, give every receipt once and in order, each with the
/// batch's header; an offset at the end is an empty last page.
#[tokio::test]
async fn a_batch_is_paged_by_offset_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_seed(&[6; 32]);
    let (reader, all) = receipts(dir.path(), &key);
    let app = app(dir.path(), Some(reader));
    let whole: wire::CageBatchResponse =
        serde_json::from_value(get(&app, "/api/v1/cage/receipts/batches/1").await.json()).unwrap();
    assert_eq!(whole.receipts.len(), 3);
    let mut offset = Some(0);
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(at) = offset {
        let a = get(
            &app,
            &format!("/api/v1/cage/receipts/batches/1?offset={at}&limit=2"),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "offset {at}: {}", a.error());
        let page: wire::CageBatchResponse = serde_json::from_value(a.json()).unwrap();
        assert_eq!(page.receipts_offset, at);
        assert_eq!(page.header, whole.header);
        assert_eq!(page.cid, whole.cid);
        assert!(!page.receipts.is_empty() && page.receipts.len() <= 2);
        seen.extend(page.receipts);
        offset = page.next_offset;
        pages += 1;
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, whole.receipts);
    let hashes: Vec<String> = all[1].iter().map(|r| r.hash().unwrap().to_hex()).collect();
    let shown: Vec<String> = seen.iter().map(|r| r.receipt_hash.clone()).collect();
    assert_eq!(shown, hashes);
    // The middle receipt alone, and an empty page at the end.
    let one: wire::CageBatchResponse = serde_json::from_value(
        get(&app, "/api/v1/cage/receipts/batches/1?limit=1&offset=1")
            .await
            .json(),
    )
    .unwrap();
    assert_eq!(one.receipts, whole.receipts[1..2]);
    assert_eq!(one.next_offset, Some(2));
    let end: wire::CageBatchResponse = serde_json::from_value(
        get(&app, "/api/v1/cage/receipts/batches/1?offset=3")
            .await
            .json(),
    )
    .unwrap();
    assert!(end.receipts.is_empty());
    assert_eq!((end.receipts_offset, end.next_offset), (3, None));
}
