//! Router-level tests: the real route table and a real store in a temp dir,
//! driven with `tower::ServiceExt::oneshot` (no sockets).

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use bytes::Bytes;
use metanode_api::{AppState, router, wire};
use metanode_core::cid::{CODEC_DAG_PB, ContentId};
use metanode_store::{Store, StoreOptions};

mod common;

use common::{INLINE_BYTES, UPLOAD_MAX_BYTES, send};

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    app: Router,
}

fn open(dir: tempfile::TempDir) -> Fixture {
    let mut opts = StoreOptions::new(dir.path());
    opts.inline_size_bytes_max = INLINE_BYTES;
    let store = Store::open(opts).expect("open store");
    let app = router(AppState::new(store.clone(), common::api_options()));
    Fixture { dir, store, app }
}

fn fixture() -> Fixture {
    open(tempfile::tempdir().expect("tempdir"))
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

fn get_with(uri: &str, name: header::HeaderName, value: &str) -> Request<Body> {
    Request::get(uri)
        .header(name, value)
        .body(Body::empty())
        .expect("request")
}

fn post(uri: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .expect("request")
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

async fn upload(app: &Router, data: &[u8]) -> String {
    let a = send(app, post("/api/v1/blobs", data.to_vec())).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let put: wire::PutResponse = serde_json::from_slice(&a.body).expect("put json");
    assert_eq!(put.size, data.len() as u64);
    assert!(!put.existed);
    assert_eq!(put.cid, ContentId::raw_blake3_of(data).to_string());
    put.cid
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_version_and_io() {
    let f = fixture();
    let a = send(&f.app, get("/health")).await;
    assert_eq!(a.status, StatusCode::OK);
    let h: wire::Health = serde_json::from_slice(&a.body).expect("health json");
    assert_eq!(h.status, "ok");
    assert_eq!(h.version, "test");
    assert_eq!(h.io, f.store.io_name());
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_then_existing_upload_then_raw_read() {
    let f = fixture();
    let data = b"hello trustless world".to_vec();
    let cid = upload(&f.app, &data).await;

    let again = send(&f.app, post("/api/v1/blobs", data.clone())).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["existed"], true);
    assert_eq!(again.header(header::LOCATION), format!("/ipfs/{cid}"));

    let a = send(&f.app, get(&format!("/ipfs/{cid}?format=raw"))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(&a.body[..], &data[..]);
    assert_eq!(a.header(header::CONTENT_TYPE), "application/vnd.ipld.raw");
    assert_eq!(a.header(header::ETAG), format!("\"{cid}.raw\""));
    assert_eq!(
        a.header(header::CACHE_CONTROL),
        "public, max-age=29030400, immutable"
    );
    assert_eq!(a.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(a.header(header::ACCEPT_RANGES), "bytes");
    assert_eq!(a.header(header::VARY), "Accept");
    assert_eq!(a.header(header::CONTENT_LENGTH), data.len().to_string());
    assert_eq!(
        a.header(header::HeaderName::from_static("x-ipfs-path")),
        format!("/ipfs/{cid}")
    );

    // Accept alone selects the raw response too.
    let a = send(
        &f.app,
        get_with(
            &format!("/ipfs/{cid}"),
            header::ACCEPT,
            "application/vnd.ipld.raw",
        ),
    )
    .await;
    assert_eq!(a.header(header::CONTENT_TYPE), "application/vnd.ipld.raw");

    // A plain path request gets the bytes as octet-stream, with its own ETag.
    let a = send(&f.app, get(&format!("/ipfs/{cid}"))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(&a.body[..], &data[..]);
    assert_eq!(a.header(header::CONTENT_TYPE), "application/octet-stream");
    assert_eq!(a.header(header::ETAG), format!("\"{cid}\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn head_sends_headers_without_body() {
    let f = fixture();
    let data = pattern(10_000);
    let cid = upload(&f.app, &data).await;
    let request = Request::head(format!("/ipfs/{cid}?format=raw"))
        .body(Body::empty())
        .expect("request");
    let a = send(&f.app, request).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header(header::CONTENT_LENGTH), "10000");
    assert!(a.body.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn ranges_return_exact_slices() {
    let f = fixture();
    // External (larger than INLINE_BYTES): ranges go through bao-verified reads.
    let data = pattern(100_000);
    let cid = upload(&f.app, &data).await;
    let uri = format!("/ipfs/{cid}?format=raw");
    let cases: [(&str, usize, usize); 6] = [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=99999-99999", 99_999, 99_999),
        ("bytes=99990-", 99_990, 99_999),
        ("bytes=-7", 99_993, 99_999),
        ("bytes=50000-200000", 50_000, 99_999),
    ];
    for (range, first, last) in cases {
        let a = send(&f.app, get_with(&uri, header::RANGE, range)).await;
        assert_eq!(a.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(&a.body[..], &data[first..=last], "{range}");
        assert_eq!(
            a.header(header::CONTENT_RANGE),
            format!("bytes {first}-{last}/100000"),
            "{range}"
        );
        assert_eq!(
            a.header(header::CONTENT_LENGTH),
            (last - first + 1).to_string()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unsatisfiable_multi_and_invalid_ranges() {
    let f = fixture();
    let data = pattern(1000);
    let cid = upload(&f.app, &data).await;
    let uri = format!("/ipfs/{cid}?format=raw");

    for range in ["bytes=1000-", "bytes=-0", "bytes=5000-6000"] {
        let a = send(&f.app, get_with(&uri, header::RANGE, range)).await;
        assert_eq!(a.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(a.header(header::CONTENT_RANGE), "bytes */1000");
        assert!(a.error().contains(range), "{}", a.error());
    }
    // Multi-range and malformed ranges are served whole (documented).
    for range in ["bytes=0-1,5-6", "bytes=9-3", "pages=1-2", "bytes=x-"] {
        let a = send(&f.app, get_with(&uri, header::RANGE, range)).await;
        assert_eq!(a.status, StatusCode::OK, "{range}");
        assert_eq!(&a.body[..], &data[..], "{range}");
    }
    // If-Range with another validator: the whole blob, not the range.
    let request = Request::get(&uri)
        .header(header::RANGE, "bytes=0-9")
        .header(header::IF_RANGE, "\"something-else\"")
        .body(Body::empty())
        .expect("request");
    let a = send(&f.app, request).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body.len(), 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn etag_gives_304() {
    let f = fixture();
    let cid = upload(&f.app, b"cache me").await;
    let uri = format!("/ipfs/{cid}?format=raw");
    let etag = format!("\"{cid}.raw\"");
    for value in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".into(),
    ] {
        let a = send(&f.app, get_with(&uri, header::IF_NONE_MATCH, &value)).await;
        assert_eq!(a.status, StatusCode::NOT_MODIFIED, "{value}");
        assert!(a.body.is_empty());
        assert_eq!(a.header(header::ETAG), etag);
    }
    // The plain representation has a different ETag, so the raw one does not match it.
    let a = send(
        &f.app,
        get_with(&format!("/ipfs/{cid}"), header::IF_NONE_MATCH, &etag),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_json_error_naming_it() {
    let f = fixture();
    let a = send(&f.app, get("/ipfs/not-a-cid?format=raw")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("not-a-cid"), "{}", a.error());

    let a = send(&f.app, get("/ipfs/bafybeigarbage")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("bafybeigarbage"), "{}", a.error());

    let cid = ContentId::raw_blake3_of(b"never stored");
    let a = send(&f.app, get(&format!("/ipfs/{cid}"))).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.error().contains(&cid.to_string()), "{}", a.error());

    let a = send(&f.app, get(&format!("/ipfs/{cid}?format=car"))).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    let a = send(&f.app, get(&format!("/ipfs/{cid}?format=tar"))).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("tar"), "{}", a.error());

    let a = send(
        &f.app,
        get_with(
            &format!("/ipfs/{cid}"),
            header::ACCEPT,
            "application/vnd.ipld.dag-json",
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_ACCEPTABLE);

    let a = send(&f.app, post("/api/v1/blobs?pin=maybe", b"x".to_vec())).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("pin=\"maybe\""), "{}", a.error());

    let a = send(&f.app, post("/api/v1/blobs?pinned=true", b"x".to_vec())).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("pinned"), "{}", a.error());

    let a = send(&f.app, get("/api/v1/blobs?limit=0")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.error().contains("limit"), "{}", a.error());

    let a = send(&f.app, get("/no/such/route")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.error().contains("/no/such/route"), "{}", a.error());

    let request = Request::builder()
        .method(Method::PUT)
        .uri(format!("/ipfs/{cid}"))
        .body(Body::empty())
        .expect("request");
    let a = send(&f.app, request).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(a.error().contains("PUT"), "{}", a.error());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dag_pb_block_that_is_not_unixfs_is_refused_as_a_file_but_served_raw() {
    let f = fixture();
    let data = b"pretend dag-pb bytes";
    upload(&f.app, data).await;
    let raw = ContentId::raw_blake3_of(data);
    let dag_pb = ContentId::from_key(CODEC_DAG_PB, raw.key());
    let a = send(&f.app, get(&format!("/ipfs/{dag_pb}"))).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert!(
        a.error().contains("not a valid UnixFS DAG"),
        "{}",
        a.error()
    );
    assert!(a.error().contains("format=raw"), "{}", a.error());
    // The block itself is still available as a raw block.
    let a = send(&f.app, get(&format!("/ipfs/{dag_pb}?format=raw"))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(&a.body[..], data);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_uploads_get_413() {
    let f = fixture();
    // Declared too large: refused from the header alone.
    let request = Request::post("/api/v1/blobs")
        .header(header::CONTENT_LENGTH, UPLOAD_MAX_BYTES + 1)
        .body(Body::empty())
        .expect("request");
    let a = send(&f.app, request).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.error().contains("upload_size_bytes_max"), "{}", a.error());

    // Unknown length that turns out too large: refused while streaming.
    let chunk = Bytes::from(vec![7u8; 256 * 1024]);
    let chunks = (0..(UPLOAD_MAX_BYTES / chunk.len() as u64 + 1))
        .map(move |_| Ok::<Bytes, std::io::Error>(chunk.clone()));
    let request = Request::post("/api/v1/blobs")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("request");
    let a = send(&f.app, request).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Nothing of it was kept.
    assert!(f.store.list().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_upload_of_unknown_length_round_trips() {
    let f = fixture();
    // Several read windows long, sent in uneven chunks without a length.
    let data = pattern(3 * 1024 * 1024 + 12_345);
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(70_001)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let request = Request::post("/api/v1/blobs?pin=false")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("request");
    let a = send(&f.app, request).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let cid = a.json()["cid"].as_str().expect("cid").to_string();
    assert_eq!(cid, ContentId::raw_blake3_of(&data).to_string());

    let a = send(&f.app, get(&format!("/ipfs/{cid}?format=raw"))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.body[..] == data[..],
        "streamed read differs from the upload"
    );

    let stat = send(&f.app, get(&format!("/api/v1/blobs/{cid}/stat"))).await;
    let info: wire::BlobInfo = serde_json::from_slice(&stat.body).expect("stat json");
    assert_eq!(info.size, data.len() as u64);
    assert!(!info.pinned);
    assert_eq!(info.storage, wire::Storage::External);
}

#[tokio::test(flavor = "multi_thread")]
async fn pins_remove_list_gc_verify() {
    let f = fixture();
    let a_cid = upload(&f.app, b"first blob").await;
    let b_cid = upload(&f.app, b"second blob").await;

    let list = send(&f.app, get("/api/v1/blobs?limit=1")).await;
    let page: wire::ListResponse = serde_json::from_slice(&list.body).expect("list json");
    assert_eq!(page.blobs.len(), 1);
    let first = page.blobs[0].cid.clone();
    let next = page.next.expect("a second page");
    let list = send(&f.app, get(&format!("/api/v1/blobs?after={next}"))).await;
    let page2: wire::ListResponse = serde_json::from_slice(&list.body).expect("list json");
    assert_eq!(page2.blobs.len(), 1);
    assert_eq!(page2.next, None);
    let mut seen = vec![first, page2.blobs[0].cid.clone()];
    seen.sort();
    let mut want = vec![a_cid.clone(), b_cid.clone()];
    want.sort();
    assert_eq!(seen, want);

    // Pinned by default: delete refuses until unpinned.
    let del = || {
        Request::delete(format!("/api/v1/blobs/{a_cid}"))
            .body(Body::empty())
            .expect("request")
    };
    let a = send(&f.app, del()).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert!(a.error().contains("pinned"), "{}", a.error());
    let unpin = Request::delete(format!("/api/v1/pins/{a_cid}"))
        .body(Body::empty())
        .expect("request");
    let a = send(&f.app, unpin).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["pinned"], false);
    let a = send(&f.app, del()).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["removed"], true);
    let a = send(&f.app, del()).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = send(&f.app, get(&format!("/ipfs/{a_cid}"))).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    let pin_missing = Request::post(format!("/api/v1/pins/{a_cid}"))
        .body(Body::empty())
        .expect("request");
    assert_eq!(
        send(&f.app, pin_missing).await.status,
        StatusCode::NOT_FOUND
    );

    let gc = Request::post("/api/v1/gc")
        .body(Body::empty())
        .expect("request");
    let a = send(&f.app, gc).await;
    assert_eq!(a.status, StatusCode::OK);
    let _: wire::GcResponse = serde_json::from_slice(&a.body).expect("gc json");

    let verify = Request::post("/api/v1/verify")
        .body(Body::empty())
        .expect("request");
    let a = send(&f.app, verify).await;
    assert_eq!(a.status, StatusCode::OK);
    let report: wire::VerifyResponse = serde_json::from_slice(&a.body).expect("verify json");
    assert!(report.damaged.is_empty());
    assert_eq!(report.blobs_checked, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_by_route_and_expose_store_stats() {
    let f = fixture();
    let cid = upload(&f.app, b"metered").await;
    send(&f.app, get(&format!("/ipfs/{cid}?format=raw"))).await;
    send(&f.app, get("/ipfs/garbage")).await;
    let a = send(&f.app, get("/metrics")).await;
    assert_eq!(a.status, StatusCode::OK);
    let text = String::from_utf8(a.body.to_vec()).expect("utf-8");
    for needle in [
        r#"metanode_http_requests_total{route="/ipfs/{cid}",method="GET",status="200"} 1"#,
        r#"metanode_http_requests_total{route="/ipfs/{cid}",method="GET",status="400"} 1"#,
        r#"metanode_http_requests_total{route="/api/v1/blobs",method="POST",status="201"} 1"#,
        r#"metanode_http_request_duration_seconds_count{route="/api/v1/blobs",method="POST",status="201"} 1"#,
        r#"metanode_http_request_body_bytes_total{route="/api/v1/blobs"} 7"#,
        r#"metanode_http_response_body_bytes_total{route="/ipfs/{cid}"}"#,
        "metanode_store_blobs 1",
        "metanode_store_logical_bytes 7",
        "metanode_store_verify_failures_total 0",
        r#"metanode_build_info{version="test"} 1"#,
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

/// Flip one byte of `path` at `offset`.
fn flip(path: &std::path::Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read file");
    bytes[offset] ^= 0x40;
    std::fs::write(path, bytes).expect("write file");
}

fn file_with_extension(dir: &std::path::Path, ext: &str) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("dir entry").path())
        .find(|p| p.extension().is_some_and(|e| e == ext))
        .unwrap_or_else(|| panic!("no *.{ext} in {}", dir.display()))
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_blocks_are_never_served() {
    let f = fixture();
    let small = b"a small packed blob that will rot".to_vec();
    let large = pattern(64 * 1024);
    let small_cid = upload(&f.app, &small).await;
    let large_cid = upload(&f.app, &large).await;
    let Fixture { dir, store, app } = f;
    drop(app);
    store.close().expect("close store");

    let segment = file_with_extension(&dir.path().join("packs"), "seg");
    let seg_bytes = std::fs::read(&segment).expect("read segment");
    let at = seg_bytes
        .windows(small.len())
        .position(|w| w == &small[..])
        .expect("small blob stored uncompressed in the segment");
    flip(&segment, at + 5);
    flip(
        &file_with_extension(&dir.path().join("blobs"), "data"),
        40_000,
    );

    let f = open(dir);
    for (cid, original) in [(&small_cid, &small[..]), (&large_cid, &large[..])] {
        let a = send(&f.app, get(&format!("/ipfs/{cid}?format=raw"))).await;
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{cid}");
        assert!(a.error().contains("damaged"), "{}", a.error());
        assert!(a.error().contains(cid.as_str()), "{}", a.error());
        assert!(
            !a.body
                .windows(16)
                .any(|w| original.windows(16).any(|o| o == w)),
            "error body leaks blob bytes"
        );
    }
    // A range that does not touch the damaged bao group is still served, verified.
    let a = send(
        &f.app,
        get_with(
            &format!("/ipfs/{large_cid}?format=raw"),
            header::RANGE,
            "bytes=0-99",
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&a.body[..], &large[..100]);

    let metrics = send(&f.app, get("/metrics")).await;
    let text = String::from_utf8(metrics.body.to_vec()).expect("utf-8");
    assert!(
        !text.contains("metanode_store_verify_failures_total 0"),
        "verify failures not counted:\n{text}"
    );
}
