//! `POST /api/v1/unixfs?cid-version=0|1` through the real route table and a
//! real store (no sockets): CIDv0 roots equal the reference importer's
//! (plain `ipfs add`), the gateway serves them as files and CARs, and bad
//! values are refused naming the parameter before anything is stored.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use metanode_api::{AppState, router, wire};
use metanode_core::cid::{CODEC_DAG_PB, ContentId};
use metanode_store::{Store, StoreOptions};
use metanode_unixfs::testdata::xorshift32_bytes;

mod common;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    app: Router,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreOptions::new(dir.path())).expect("open store");
    let app = router(AppState::new(store.clone(), common::api_options()));
    Fixture {
        _dir: dir,
        store,
        app,
    }
}

/// Status and body of `request` through `app`.
async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Bytes) {
    let answer = common::send(app, request).await;
    (answer.status, answer.body)
}

fn post(uri: &str, body: &[u8]) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body.to_vec()))
        .expect("request")
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

/// (size_bytes, seed, root_cid) of a named vector of the unixfs crate's
/// golden files (made by npm `ipfs-unixfs-importer`).
fn vector(file: &str, name: &str) -> (usize, u32, String) {
    let path = format!(
        "{}/../unixfs/tests/vectors/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("golden vectors file");
    let json: serde_json::Value = serde_json::from_str(&text).expect("vectors are json");
    let v = json
        .as_array()
        .expect("array")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("vector {name} in {file}"));
    (
        v["size_bytes"].as_u64().expect("size") as usize,
        v["seed"].as_u64().expect("seed") as u32,
        v["root_cid"].as_str().expect("root").to_string(),
    )
}

async fn add(app: &Router, query: &str, data: &[u8]) -> wire::UnixfsAddResponse {
    let (status, body) = send(app, post(&format!("/api/v1/unixfs{query}"), data)).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{query}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).expect("add json")
}

#[tokio::test(flavor = "multi_thread")]
async fn cid_version_0_gives_plain_ipfs_add_roots_that_the_gateway_serves() {
    let f = fixture();
    for name in ["empty", "one_byte", "one_chunk", "one_chunk_plus_one"] {
        let (size, seed, v0_root) = vector("unixfs_kubo_v0.json", name);
        let (_, _, v1_root) = vector("unixfs_kubo.json", name);
        let data = xorshift32_bytes(seed, size);
        let v0 = add(&f.app, "?cid-version=0", &data).await;
        assert_eq!(v0.cid, v0_root, "{name}");
        assert_eq!(v0.size, size as u64);
        assert!(v0.pinned);
        // Kubo's raw-leaves flag is accepted when it agrees.
        let again = add(&f.app, "?raw-leaves=false&cid-version=0", &data).await;
        assert_eq!(again.cid, v0_root, "{name}");
        let v1 = add(&f.app, "?cid-version=1", &data).await;
        assert_eq!(v1.cid, v1_root, "{name}");
        assert_eq!(add(&f.app, "", &data).await.cid, v1_root, "default is v1");

        // The gateway reads the dag-pb leaves' inline data.
        let (status, body) = send(&f.app, get(&format!("/ipfs/{v0_root}"))).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert!(body[..] == data[..], "{name}: body differs");
    }

    // The CAR of a v0 root: the root first, every block named by its CIDv0.
    let (size, seed, root) = vector("unixfs_kubo_v0.json", "one_chunk_plus_one");
    let (status, car) = send(&f.app, get(&format!("/ipfs/{root}?format=car"))).await;
    assert_eq!(status, StatusCode::OK);
    let reader = metanode_unixfs::CarReader::new(&car[..]).expect("car header");
    let root_cid: ContentId = root.parse().expect("root parses");
    assert_eq!(reader.roots(), [root_cid]);
    let cids: Vec<ContentId> = reader.map(|item| item.expect("car block").0).collect();
    assert_eq!(cids.len(), 3);
    assert_eq!(cids[0], root_cid);
    assert!(
        cids.iter()
            .all(|c| c.version() == 0 && c.codec() == CODEC_DAG_PB),
        "{cids:?}"
    );

    // A range across the two leaves.
    let data = xorshift32_bytes(seed, size);
    let request = Request::get(format!("/ipfs/{root}"))
        .header(header::RANGE, "bytes=262140-262144")
        .body(Body::empty())
        .expect("request");
    let (status, body) = send(&f.app, request).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&body[..], &data[262_140..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_cid_version_values_and_combinations_are_refused() {
    let f = fixture();
    for (query, needle) in [
        ("?cid-version=2", "cid-version \"2\""),
        ("?cid-version=v0", "cid-version \"v0\""),
        ("?cid-version=", "cid-version \"\""),
        ("?cid-version=0&hash=blake3", "cid-version 0"),
        ("?hash=blake3&cid-version=0", "cid-version 0"),
        ("?cid-version=0&raw-leaves=true", "cid-version 0"),
        ("?raw-leaves=false", "cid-version 1"),
        ("?cid-version=0&raw-leaves=maybe", "raw-leaves"),
        ("?cidversion=0", "cid-version"),
    ] {
        let (status, body) = send(&f.app, post(&format!("/api/v1/unixfs{query}"), b"x")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        let error: wire::ErrorBody = serde_json::from_slice(&body).expect("error body");
        assert!(
            error.error.contains(needle),
            "{query}: {:?} lacks {needle:?}",
            error.error
        );
    }
    assert!(f.store.list().is_empty(), "a refused add stored blocks");
}
