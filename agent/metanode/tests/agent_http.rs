//! The real agent over real sockets: health, metrics, the trustless-gateway
//! subset, uploads (small, streamed, oversize, stalled), corruption on disk,
//! connection bounds and graceful shutdown.

mod common;

use std::io::{BufReader, Write};
use std::path::Path;

use common::{Agent, Response, connect, get, pattern, read_head, read_response, request};

fn post_blob(agent: &Agent, data: &[u8]) -> String {
    let r = request(agent.addr, "POST", "/api/v1/blobs", &[], Some(data));
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["size"], data.len() as u64);
    assert_eq!(v["existed"], false);
    v["cid"].as_str().expect("cid").to_string()
}

fn raw(agent: &Agent, cid: &str, headers: &[(&str, &str)]) -> Response {
    request(
        agent.addr,
        "GET",
        &format!("/ipfs/{cid}?format=raw"),
        headers,
        None,
    )
}

/// A config for tests that need non-default API bounds.
fn write_config(dir: &Path, api_lines: &str) -> std::path::PathBuf {
    let path = dir.join("node.yaml");
    let yaml = format!(
        "node:\n  name: test-node\n  data_dir: {}\napi:\n{api_lines}",
        dir.join("store").display()
    );
    std::fs::write(&path, yaml).expect("write config");
    path
}

#[test]
fn health_and_metrics() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(&tmp.path().join("store"));
    let r = get(agent.addr, "/health");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["io"] == "io_uring" || v["io"] == "posix", "{v}");

    post_blob(&agent, b"counted");
    let r = get(agent.addr, "/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        r.headers
    );
    let text = String::from_utf8(r.body).expect("utf-8");
    for needle in [
        r#"metanode_http_requests_total{route="/health",method="GET",status="200"} 1"#,
        r#"metanode_http_requests_total{route="/api/v1/blobs",method="POST",status="201"} 1"#,
        "# TYPE metanode_http_request_duration_seconds histogram",
        r#"metanode_http_request_body_bytes_total{route="/api/v1/blobs"} 7"#,
        "metanode_store_blobs 1",
        "metanode_store_puts_total",
        "metanode_store_put_batches_total",
        "metanode_http_connections_total",
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(agent.stop().success());
}

#[test]
fn gateway_reads_ranges_etags_and_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(&tmp.path().join("store"));
    let data = pattern(1000, 1);
    let cid = post_blob(&agent, &data);

    let r = raw(&agent, &cid, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("content-type"), Some("application/vnd.ipld.raw"));
    assert_eq!(r.header("content-length"), Some("1000"));
    let etag = format!("\"{cid}.raw\"");
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=29030400, immutable")
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("vary"), Some("Accept"));
    assert_eq!(
        r.header("x-ipfs-path"),
        Some(format!("/ipfs/{cid}").as_str())
    );

    // Accept header instead of ?format=raw.
    let r = request(
        agent.addr,
        "GET",
        &format!("/ipfs/{cid}"),
        &[("Accept", "application/vnd.ipld.raw")],
        None,
    );
    assert_eq!(r.header("content-type"), Some("application/vnd.ipld.raw"));
    assert_eq!(r.body, data);

    // Plain path request of a raw block: the bytes as octet-stream.
    let r = get(agent.addr, &format!("/ipfs/{cid}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.body, data);

    // HEAD: the same headers, no body.
    let r = request(
        agent.addr,
        "HEAD",
        &format!("/ipfs/{cid}?format=raw"),
        &[],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1000"));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert!(r.body.is_empty());

    // Ranges: exact slices, including the last byte and the suffix form.
    for (range, first, last) in [
        ("bytes=0-9", 0usize, 9usize),
        ("bytes=999-999", 999, 999),
        ("bytes=990-", 990, 999),
        ("bytes=-1", 999, 999),
        ("bytes=-25", 975, 999),
        ("bytes=500-5000", 500, 999),
    ] {
        let r = raw(&agent, &cid, &[("Range", range)]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.body, &data[first..=last], "{range}");
        let want = format!("bytes {first}-{last}/1000");
        assert_eq!(r.header("content-range"), Some(want.as_str()), "{range}");
    }
    for range in ["bytes=1000-", "bytes=-0", "bytes=4000-5000"] {
        let r = raw(&agent, &cid, &[("Range", range)]);
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.header("content-range"), Some("bytes */1000"));
        assert!(r.error().contains("outside"), "{}", r.error());
    }
    // Multi-range requests are answered with the whole blob.
    let r = raw(&agent, &cid, &[("Range", "bytes=0-1,10-11")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);

    // Conditional requests.
    let r = raw(&agent, &cid, &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = raw(&agent, &cid, &[("If-None-Match", "\"something-else\"")]);
    assert_eq!(r.status, 200);

    // Errors are JSON and name the input.
    let r = get(agent.addr, "/ipfs/bafkreinotacid?format=raw");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("bafkreinotacid"), "{}", r.error());
    let missing = metanode_core::cid::ContentId::raw_blake3_of(b"never stored").to_string();
    let r = raw(&agent, &missing, &[]);
    assert_eq!(r.status, 404);
    assert!(r.error().contains(&missing), "{}", r.error());

    assert!(agent.stop().success());
}

#[test]
fn five_mib_upload_streams_and_reads_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(&tmp.path().join("store"));
    let data = pattern(5 * 1024 * 1024, 2);
    let cid = post_blob(&agent, &data);
    let r = raw(&agent, &cid, &[]);
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert!(r.body == data, "read-back differs");
    // A range spanning read windows.
    let r = raw(&agent, &cid, &[("Range", "bytes=1048000-3146000")]);
    assert_eq!(r.status, 206);
    assert!(r.body[..] == data[1_048_000..=3_146_000]);

    // The same bytes again in chunked transfer encoding (no length known).
    let mut stream = connect(agent.addr);
    write!(
        stream,
        "POST /api/v1/blobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .expect("head");
    for chunk in data.chunks(300_000) {
        write!(stream, "{:x}\r\n", chunk.len()).expect("chunk size");
        stream.write_all(chunk).expect("chunk");
        stream.write_all(b"\r\n").expect("chunk end");
    }
    stream.write_all(b"0\r\n\r\n").expect("last chunk");
    let r = read_response(&mut BufReader::new(stream), false);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["existed"], true);
    assert_eq!(r.json()["cid"], cid.as_str());
    assert!(agent.stop().success());
}

#[test]
fn oversize_and_stalled_uploads_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        tmp.path(),
        "  upload_size_bytes_max: 1048576\n  request_timeout_ms: 500\n",
    );
    let store = tmp.path().join("store");
    let agent = Agent::start_args(
        &["agent", "--config", config.to_str().expect("utf-8")],
        &store,
    );

    // Declared too large: refused from the headers, before any body byte.
    let r = request(
        agent.addr,
        "POST",
        "/api/v1/blobs",
        &[("Content-Length", "1048577")],
        None,
    );
    assert_eq!(r.status, 413);
    assert!(r.error().contains("1048577"), "{}", r.error());
    assert!(r.error().contains("upload_size_bytes_max"), "{}", r.error());

    // Chunked and too large: refused while streaming.
    let mut stream = connect(agent.addr);
    write!(
        stream,
        "POST /api/v1/blobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .expect("head");
    let chunk = vec![9u8; 64 * 1024];
    for _ in 0..24 {
        // 1.5 MiB in all; the server may stop reading, so ignore write errors.
        if write!(stream, "{:x}\r\n", chunk.len()).is_err()
            || stream.write_all(&chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let r = read_response(&mut BufReader::new(stream), false);
    assert_eq!(r.status, 413);
    assert!(r.error().contains("1048576"), "{}", r.error());

    // A body that stops arriving: 408 after request_timeout_ms.
    let mut stream = connect(agent.addr);
    write!(
        stream,
        "POST /api/v1/blobs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\nonly ten b"
    )
    .expect("partial request");
    let r = read_response(&mut BufReader::new(stream), false);
    assert_eq!(r.status, 408);
    assert!(r.error().contains("request_timeout_ms"), "{}", r.error());

    // Nothing of the refused uploads was stored.
    let r = get(agent.addr, "/api/v1/blobs");
    assert_eq!(r.json()["blobs"].as_array().map(Vec::len), Some(0));
    assert!(agent.stop().success());
}

/// Flip one byte of `path` at `offset`.
fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read file");
    bytes[offset] ^= 0x01;
    std::fs::write(path, bytes).expect("write file");
}

fn only_file(dir: &Path, ext: &str) -> std::path::PathBuf {
    let found: Vec<_> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one *.{ext} in {}: {found:?}",
        dir.display()
    );
    found.into_iter().next().expect("one file")
}

#[test]
fn corrupt_on_disk_is_never_served() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let small = b"a small blob packed into a segment".to_vec();
    let large = pattern(3 * 1024 * 1024, 3);
    let agent = Agent::start(&store);
    let small_cid = post_blob(&agent, &small);
    let large_cid = post_blob(&agent, &large);
    assert!(agent.stop().success());

    let segment = only_file(&store.join("packs"), "seg");
    let seg = std::fs::read(&segment).expect("read segment");
    let at = seg
        .windows(small.len())
        .position(|w| w == &small[..])
        .expect("small blob stored verbatim in the segment");
    flip(&segment, at + 7);
    // Early (first read window) and late (beyond it) damage in the large blob.
    let data_file = only_file(&store.join("blobs"), "data");
    flip(&data_file, 100_000);
    flip(&data_file, 2_500_000);

    let agent = Agent::start(&store);
    for cid in [&small_cid, &large_cid] {
        let r = raw(&agent, cid, &[]);
        assert_eq!(
            r.status,
            500,
            "{cid}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.error().contains("damaged"), "{}", r.error());
        assert!(r.error().contains(cid.as_str()), "{}", r.error());
    }
    // Damage past the first read window of a response: the status line is
    // already out, so the body is cut short — and every byte that did arrive
    // is correct. (bytes=1000000-: the first 1 MiB window is intact, the
    // next one holds the flipped byte at 2500000.)
    let r = raw(&agent, &large_cid, &[("Range", "bytes=1000000-")]);
    assert_eq!(r.status, 206);
    assert!(!r.complete, "a damaged tail was served in full");
    assert!(r.body.len() < large.len() - 1_000_000);
    assert!(
        r.body[..] == large[1_000_000..1_000_000 + r.body.len()],
        "wrong bytes were served"
    );
    // Undamaged parts of the large blob are still served, verified.
    let r = raw(&agent, &large_cid, &[("Range", "bytes=0-65535")]);
    assert_eq!(r.status, 206);
    assert!(r.body[..] == large[..65_536]);

    let metrics = String::from_utf8(get(agent.addr, "/metrics").body).expect("utf-8");
    assert!(
        !metrics.contains("metanode_store_verify_failures_total 0\n"),
        "damage not counted:\n{metrics}"
    );
    assert!(agent.stop().success());
}

#[test]
fn connections_are_bounded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = write_config(tmp.path(), "  connections_max: 2\n");
    let store = tmp.path().join("store");
    let agent = Agent::start_args(
        &["agent", "--config", config.to_str().expect("utf-8")],
        &store,
    );

    // Two keep-alive connections, each proven accepted by one answered request.
    let keep_alive = |path: &str| {
        let mut stream = connect(agent.addr);
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
        let mut reader = BufReader::new(stream);
        let r = read_response(&mut reader, false);
        assert_eq!(r.status, 200);
        reader
    };
    let first = keep_alive("/health");
    let _second = keep_alive("/health");

    // A third connection is not served while both slots are held...
    let mut third = connect(agent.addr);
    third
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .expect("timeout");
    write!(
        third,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut byte = [0u8; 1];
    let early = std::io::Read::read(&mut third, &mut byte);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "third connection was served beyond connections_max: {early:?}"
    );
    // ...and is served once one closes.
    drop(first);
    third
        .set_read_timeout(Some(common::IO_TIMEOUT))
        .expect("timeout");
    let mut reader = BufReader::new(third);
    let (status, _) = read_head(&mut reader);
    assert_eq!(status, 200);
    assert!(agent.stop().success());
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let agent = Agent::start(&store);
    let data = pattern(2 * 1024 * 1024, 4);

    // Start an upload and wait for `100 Continue`: then the server is
    // reading this request's body, so it is in flight.
    let mut stream = connect(agent.addr);
    write!(
        stream,
        "POST /api/v1/blobs HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        data.len()
    )
    .expect("head");
    let mut reader = BufReader::new(stream.try_clone().expect("clone socket"));
    let (status, _) = read_head(&mut reader);
    assert_eq!(status, 100);
    stream.write_all(&data[..1024 * 1024]).expect("first half");

    agent.signal(libc::SIGTERM);
    // New connections are refused once the listener is closed; poll (bounded)
    // until that happens, proving shutdown began while our upload is open.
    let deadline = std::time::Instant::now() + common::IO_TIMEOUT;
    while std::net::TcpStream::connect(agent.addr).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "listener still open after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    stream.write_all(&data[1024 * 1024..]).expect("second half");
    let r = read_response(&mut reader, false);
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    let cid = r.json()["cid"].as_str().expect("cid").to_string();
    let mut agent = agent;
    assert!(agent.wait().success(), "log:\n{}", agent.log());
    assert!(
        agent.log().contains("store closed"),
        "log:\n{}",
        agent.log()
    );
    drop(agent);

    // The upload acknowledged during shutdown is durable.
    let agent = Agent::start(&store);
    let r = raw(&agent, &cid, &[]);
    assert_eq!(r.status, 200);
    assert!(r.body == data);
    assert!(agent.stop().success());
}
