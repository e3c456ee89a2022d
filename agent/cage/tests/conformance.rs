//! Cage conformance over real TCP on loopback: a tiny hyper upstream, the
//! cage in front of it, and one test per refusal kind. Each case checks the
//! status the client sees AND the receipt the cage wrote for it; every
//! harness ends by verifying the receipt file.
//!
//! Client addresses: Linux routes all of 127.0.0.0/8 to loopback, so the
//! red and yellow cases bind their client sockets to 127.0.0.2 / 127.0.0.3.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ipnet::Ipv4Net;
use metanode_biso::compiled::{CompiledPolicy, RateLimit, Rule, Verdict};
use metanode_cage::receipt::Receipt;
use metanode_cage::{
    CageConfig, Decision, PolicyHandle, RECEIPT_HEADER, ServeReport, Server, read_receipts,
    verify_receipts,
};
use metanode_core::hash::Hash32;
use metanode_core::keys::SigningKey;
use metanode_httpsig::{SignParams, digest, sign_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;

const CLIENT_SEED: [u8; 32] = [7; 32];
const NODE_SEED: [u8; 32] = [9; 32];
const RED_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const YELLOW_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const YELLOW_BURST: u32 = 2;
const UPSTREAM_SLOW_MS: u64 = 3_000;
/// Requests for this path the upstream has received (only the drain test
/// sends it), so the test knows its request is in flight.
const DRAIN_PATH: &str = "/open/slow-drain";
static DRAIN_REQUESTS_SEEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

// ------------------------------------------------------------ upstream

/// Answers `upstream <method> <path> key=<metanode-key-id> len=<body len>`;
/// `/slow…` paths answer after [`UPSTREAM_SLOW_MS`].
async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let method = req.method().clone();
                    let path = req.uri().path().to_owned();
                    let key = req
                        .headers()
                        .get("metanode-key-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned();
                    let body = req.into_body().collect().await.map(|c| c.to_bytes());
                    let len = body.map_or(0, |b| b.len());
                    if path == DRAIN_PATH {
                        DRAIN_REQUESTS_SEEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    if path.starts_with("/open/slow") {
                        tokio::time::sleep(Duration::from_millis(UPSTREAM_SLOW_MS)).await;
                    }
                    let text = format!("upstream {method} {path} key={key} len={len}");
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A raw HTTP/1.1 upstream that answers `/sloppy/extra` with a 204 followed by stray bytes on
/// the same connection (a body a 204 must not have) and anything else with `200 ok`.
async fn start_sloppy_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                    pending.drain(..end + 4);
                    let answer: &[u8] = if head.contains(" /sloppy/extra ") {
                        b"HTTP/1.1 204 No Content\r\n\r\nSTRAY BYTES"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                    };
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

// ------------------------------------------------------------ cage harness

fn rule(verdict: Verdict, rate_per_s: u32, burst: u32, reason_id: u16) -> Rule {
    Rule {
        verdict,
        rate: RateLimit { rate_per_s, burst },
        sample_one_in: 0,
        reason_id,
    }
}

fn test_policy(version: u64) -> CompiledPolicy {
    CompiledPolicy {
        version,
        policy_digest: [version as u8; 32],
        default_rule: rule(Verdict::Green, 0, 0, 0),
        v4: vec![
            (
                Ipv4Net::new(RED_IP, 32).unwrap(),
                rule(Verdict::Red, 0, 0, 1),
            ),
            (
                Ipv4Net::new(YELLOW_IP, 32).unwrap(),
                rule(Verdict::Yellow, 0, YELLOW_BURST, 2),
            ),
        ],
        v6: vec![],
        reasons: vec![
            "default".into(),
            "region xx-blocked".into(),
            "consent pending".into(),
        ],
    }
}

struct Harness {
    addr: SocketAddr,
    receipts_path: PathBuf,
    policy: PolicyHandle,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<ServeReport>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(extra_yaml: &str) -> Harness {
        Harness::start_with(
            "batch_count_max: 3, flush_interval_ms: 50, response_header: true",
            extra_yaml,
        )
        .await
    }

    /// [`Harness::start`] with these `receipts:` fields (besides `path`).
    async fn start_with(receipts_fields: &str, extra_yaml: &str) -> Harness {
        let upstream = start_upstream().await;
        let sloppy = start_sloppy_upstream().await;
        let down = closed_port().await;
        let dir = tempfile::tempdir().unwrap();
        let receipts_path = dir.path().join("receipts.log");
        let client_pub = SigningKey::from_seed(&CLIENT_SEED).public_key();
        let yaml = format!(
            "listen: 127.0.0.1:0\n\
             routes:\n\
             \x20 - {{ path_prefix: /signed, upstream: \"{upstream}\" }}\n\
             \x20 - {{ path_prefix: /open, upstream: \"{upstream}\", unsigned: allow-with-receipt }}\n\
             \x20 - {{ path_prefix: /down, upstream: \"127.0.0.1:{down}\", unsigned: allow-with-receipt }}\n\
             \x20 - {{ path_prefix: /sloppy, upstream: \"{sloppy}\", unsigned: allow-with-receipt }}\n\
             keys: {{ inline: {{ client-1: {client_pub} }} }}\n\
             receipts: {{ path: {}, {receipts_fields} }}\n\
             {extra_yaml}",
            receipts_path.display()
        );
        let config = CageConfig::from_yaml_str(&yaml).unwrap();
        let policy = PolicyHandle::new(test_policy(1));
        let server = Server::bind(config, policy.clone(), SigningKey::from_seed(&NODE_SEED))
            .await
            .unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Harness {
            addr,
            receipts_path,
            policy,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    /// Stops the cage, verifies the receipt file and returns its receipts.
    async fn finish(self) -> (Vec<Receipt>, ServeReport) {
        let (receipts, report, _dir, _path) = self.finish_keeping_file().await;
        (receipts, report)
    }

    /// Like [`Harness::finish`], keeping the receipt file (and its directory).
    async fn finish_keeping_file(
        mut self,
    ) -> (Vec<Receipt>, ServeReport, tempfile::TempDir, PathBuf) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let report = self.task.await.unwrap();
        assert_eq!(report.receipts.error, None);
        let node = SigningKey::from_seed(&NODE_SEED).public_key();
        let verified = verify_receipts(&self.receipts_path, &node).unwrap();
        assert_eq!(verified.receipts_count, report.receipts.receipts_written);
        let receipts = read_receipts(&self.receipts_path, &node).unwrap();
        (receipts, report, self._dir, self.receipts_path)
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn receipt_hash(&self) -> Hash32 {
        let value = self
            .headers
            .get(RECEIPT_HEADER)
            .expect("Metanode-Receipt header")
            .to_str()
            .unwrap();
        let (hash, batch) = value.split_once("; batch=").unwrap();
        batch.parse::<u64>().unwrap();
        hash.parse().unwrap()
    }
}

async fn connect_from(addr: SocketAddr, from: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

async fn send_from(addr: SocketAddr, from: Ipv4Addr, req: Request<Full<Bytes>>) -> Reply {
    let stream = connect_from(addr, from).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    send_from(addr, Ipv4Addr::LOCALHOST, req).await
}

fn plain(addr: SocketAddr, method: &str, path: &str, body: &'static [u8]) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct SignOpts<'a> {
    key_seed: [u8; 32],
    key_id: &'a str,
    created_unix_s: u64,
    expires_unix_s: Option<u64>,
    nonce: &'a str,
    /// Body the Content-Digest is computed over (None: the real body).
    digest_of: Option<&'a [u8]>,
}

impl Default for SignOpts<'_> {
    fn default() -> Self {
        let now = now_s();
        SignOpts {
            key_seed: CLIENT_SEED,
            key_id: "client-1",
            created_unix_s: now,
            expires_unix_s: Some(now + 60),
            nonce: "nonce-default",
            digest_of: None,
        }
    }
}

fn signed(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &'static [u8],
    opts: &SignOpts<'_>,
) -> Request<Full<Bytes>> {
    let req = plain(addr, method, path, body);
    let (mut parts, full) = req.into_parts();
    let mut components = vec!["@method", "@authority", "@path"];
    if !body.is_empty() {
        let digest_input = opts.digest_of.unwrap_or(body);
        parts.headers.insert(
            "content-digest",
            digest::content_digest_header(digest_input),
        );
        components.push("content-digest");
    }
    let key = SigningKey::from_seed(&opts.key_seed);
    sign_request(
        &mut parts,
        &key,
        &SignParams {
            key_id: opts.key_id,
            label: "sig1",
            components: &components,
            created_unix_s: opts.created_unix_s,
            expires_unix_s: opts.expires_unix_s,
            nonce: Some(opts.nonce),
        },
    )
    .unwrap();
    Request::from_parts(parts, full)
}

fn find<'a>(receipts: &'a [Receipt], hash: &Hash32) -> &'a Receipt {
    receipts
        .iter()
        .find(|r| r.hash().unwrap() == *hash)
        .unwrap_or_else(|| panic!("no receipt with hash {hash}"))
}

fn assert_refused(
    receipts: &[Receipt],
    reply: &Reply,
    status: StatusCode,
    decision: Decision,
) -> Receipt {
    assert_eq!(reply.status, status, "body: {}", reply.body);
    let r = find(receipts, &reply.receipt_hash()).clone();
    assert_eq!(r.decision, decision, "{r:?}");
    assert_eq!(r.status, status.as_u16());
    assert_eq!(r.upstream_status, None);
    assert_eq!(
        r.response_hash,
        metanode_core::hash::blake3_256(reply.body.as_bytes())
    );
    r
}

// ------------------------------------------------------------ tests

#[tokio::test]
async fn signed_request_is_forwarded_with_a_receipt() {
    let h = Harness::start("").await;
    let addr = h.addr;
    let body: &'static [u8] = b"{\"amount\": 5}";
    let req = signed(
        h.addr,
        "POST",
        "/signed/pay",
        body,
        &SignOpts {
            nonce: "n-ok",
            ..Default::default()
        },
    );
    let ok = send(h.addr, req).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(ok.body, "upstream POST /signed/pay key=client-1 len=13");

    // Unsigned on an allow-with-receipt route: forwarded, no key.
    let open = send(h.addr, plain(h.addr, "GET", "/open/page?x=1", b"")).await;
    assert_eq!(open.status, StatusCode::OK);
    assert_eq!(open.body, "upstream GET /open/page key=none len=0");

    let (receipts, report) = h.finish().await;
    let r = find(&receipts, &ok.receipt_hash());
    assert_eq!(r.decision, Decision::Forwarded);
    assert_eq!(r.key_id.as_deref(), Some("client-1"));
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_status, Some(200));
    assert_eq!(r.client_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(r.policy_version, 1);
    assert_eq!(
        r.response_hash,
        metanode_core::hash::blake3_256(ok.body.as_bytes())
    );
    let expected_request = metanode_cage::receipt::request_hash(
        "POST",
        &addr.to_string(),
        "/signed/pay",
        Some(&metanode_core::hash::blake3_256(body)),
    );
    assert_eq!(r.request_hash, expected_request);
    let o = find(&receipts, &open.receipt_hash());
    assert_eq!((o.decision, o.key_id.clone()), (Decision::Forwarded, None));
    assert_eq!(report.metrics.requests(Decision::Forwarded), 2);
    assert_eq!(report.metrics.upstream_latency_count, 2);
}

#[tokio::test]
async fn signature_failures_get_4xx_and_receipts() {
    let h = Harness::start("").await;
    let a = h.addr;
    let now = now_s();
    let body: &'static [u8] = b"payload";

    let wrong_key = send(
        a,
        signed(
            a,
            "POST",
            "/signed/x",
            body,
            &SignOpts {
                key_seed: [1; 32],
                nonce: "n1",
                ..Default::default()
            },
        ),
    )
    .await;
    let wrong_digest = send(
        a,
        signed(
            a,
            "POST",
            "/signed/x",
            body,
            &SignOpts {
                digest_of: Some(b"other"),
                nonce: "n2",
                ..Default::default()
            },
        ),
    )
    .await;
    let expired = send(
        a,
        signed(
            a,
            "POST",
            "/signed/x",
            body,
            &SignOpts {
                created_unix_s: now - 10,
                expires_unix_s: Some(now - 5),
                nonce: "n3",
                ..Default::default()
            },
        ),
    )
    .await;
    let too_old = send(
        a,
        signed(
            a,
            "GET",
            "/signed/x",
            b"",
            &SignOpts {
                created_unix_s: now - 1000,
                expires_unix_s: None,
                nonce: "n3b",
                ..Default::default()
            },
        ),
    )
    .await;
    let first = send(
        a,
        signed(
            a,
            "GET",
            "/signed/replay",
            b"",
            &SignOpts {
                nonce: "n4",
                ..Default::default()
            },
        ),
    )
    .await;
    let replayed = send(
        a,
        signed(
            a,
            "GET",
            "/signed/replay",
            b"",
            &SignOpts {
                nonce: "n4",
                ..Default::default()
            },
        ),
    )
    .await;
    let unknown = send(
        a,
        signed(
            a,
            "GET",
            "/signed/x",
            b"",
            &SignOpts {
                key_id: "nobody",
                nonce: "n5",
                ..Default::default()
            },
        ),
    )
    .await;
    let missing = send(a, plain(a, "GET", "/signed/x", b"")).await;
    let mut garbage_req = plain(a, "GET", "/signed/x", b"");
    garbage_req
        .headers_mut()
        .insert("signature-input", HeaderValue::from_static("sig1=((((("));
    garbage_req
        .headers_mut()
        .insert("signature", HeaderValue::from_static("sig1=:AAAA:"));
    let garbage = send(a, garbage_req).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);

    let (receipts, _) = h.finish().await;
    let r = assert_refused(
        &receipts,
        &wrong_key,
        StatusCode::UNAUTHORIZED,
        Decision::SignatureRejected,
    );
    assert!(!r.detail.is_empty());
    let bad_sig_code = r.detail.clone();
    // The digest header is covered and the signature is good: the body is
    // what does not match.
    let d = assert_refused(
        &receipts,
        &wrong_digest,
        StatusCode::UNAUTHORIZED,
        Decision::DigestMismatch,
    );
    assert_eq!(d.detail, "digest_mismatch");
    let e = assert_refused(
        &receipts,
        &expired,
        StatusCode::UNAUTHORIZED,
        Decision::SignatureRejected,
    );
    let rp = assert_refused(
        &receipts,
        &replayed,
        StatusCode::UNAUTHORIZED,
        Decision::SignatureRejected,
    );
    let u = assert_refused(
        &receipts,
        &unknown,
        StatusCode::UNAUTHORIZED,
        Decision::SignatureRejected,
    );
    assert_refused(
        &receipts,
        &missing,
        StatusCode::UNAUTHORIZED,
        Decision::UnsignedRejected,
    );
    let g = assert_refused(
        &receipts,
        &garbage,
        StatusCode::BAD_REQUEST,
        Decision::SignatureRejected,
    );
    // Each failure kind carries its own httpsig code.
    assert_eq!(bad_sig_code, "bad_signature");
    assert_eq!(e.detail, "expired");
    let t = assert_refused(
        &receipts,
        &too_old,
        StatusCode::UNAUTHORIZED,
        Decision::SignatureRejected,
    );
    assert_eq!(t.detail, "too_old");
    assert_eq!(rp.detail, "replayed_nonce");
    assert_eq!(u.detail, "unknown_key");
    assert_eq!(g.detail, "malformed");
    let ok = find(&receipts, &first.receipt_hash());
    assert_eq!(ok.decision, Decision::Forwarded);
}

#[tokio::test]
async fn body_limits_and_upstream_failures() {
    let h = Harness::start(
        "limits: { body_size_bytes_max: 1024 }\ntimeouts: { upstream_timeout_ms: 300 }\n",
    )
    .await;
    let a = h.addr;
    static BIG: [u8; 4096] = [b'x'; 4096];
    let declared = send(a, plain(a, "POST", "/open/upload", &BIG)).await;
    // Chunked: no Content-Length, the limit trips while reading.
    let chunks: Vec<Bytes> = BIG.chunks(512).map(Bytes::from_static).collect();
    let chunked_req = Request::builder()
        .method("POST")
        .uri("/open/upload")
        .header("host", a.to_string())
        .body(Chunks(chunks.into_iter()))
        .unwrap();
    let chunked = send_any(a, chunked_req).await;
    let down = send(a, plain(a, "GET", "/down/x", b"")).await;
    let slow = send(a, plain(a, "GET", "/open/slow", b"")).await;
    let no_route = send(a, plain(a, "GET", "/elsewhere", b"")).await;

    let (receipts, _) = h.finish().await;
    assert_refused(
        &receipts,
        &declared,
        StatusCode::PAYLOAD_TOO_LARGE,
        Decision::BodyTooLarge,
    );
    assert_refused(
        &receipts,
        &chunked,
        StatusCode::PAYLOAD_TOO_LARGE,
        Decision::BodyTooLarge,
    );
    assert_refused(
        &receipts,
        &down,
        StatusCode::BAD_GATEWAY,
        Decision::UpstreamFailed,
    );
    assert_refused(
        &receipts,
        &slow,
        StatusCode::GATEWAY_TIMEOUT,
        Decision::UpstreamTimeout,
    );
    assert_refused(
        &receipts,
        &no_route,
        StatusCode::NOT_FOUND,
        Decision::NoRoute,
    );
}

/// A request body of several chunks and no declared length, so hyper
/// sends it chunked.
struct Chunks(std::vec::IntoIter<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.next().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

async fn send_any<B>(addr: SocketAddr, req: Request<B>) -> Reply
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = connect_from(addr, Ipv4Addr::LOCALHOST).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

#[tokio::test]
async fn traffic_lights_red_yellow_and_runtime_swap() {
    let h = Harness::start("").await;
    let a = h.addr;
    let red = send_from(a, RED_IP, plain(a, "GET", "/open/x", b"")).await;
    let mut yellow = Vec::new();
    for _ in 0..=YELLOW_BURST {
        yellow.push(send_from(a, YELLOW_IP, plain(a, "GET", "/open/y", b"")).await);
    }
    // Swap in a policy that turns everything red.
    let mut all_red = test_policy(2);
    all_red.default_rule = rule(Verdict::Red, 0, 0, 1);
    h.policy.swap(all_red);
    let after_swap = send(a, plain(a, "GET", "/open/z", b"")).await;
    h.policy.swap(test_policy(3));
    let after_restore = send(a, plain(a, "GET", "/open/z", b"")).await;

    let (receipts, _) = h.finish().await;
    let r = assert_refused(&receipts, &red, StatusCode::FORBIDDEN, Decision::RedLight);
    assert_eq!(r.detail, "region xx-blocked");
    assert_eq!(r.client_ip, IpAddr::V4(RED_IP));
    for ok in &yellow[..YELLOW_BURST as usize] {
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(
            find(&receipts, &ok.receipt_hash()).decision,
            Decision::Forwarded
        );
    }
    let y = assert_refused(
        &receipts,
        &yellow[YELLOW_BURST as usize],
        StatusCode::TOO_MANY_REQUESTS,
        Decision::YellowOverBudget,
    );
    assert_eq!(y.detail, "consent pending");
    let s = assert_refused(
        &receipts,
        &after_swap,
        StatusCode::FORBIDDEN,
        Decision::RedLight,
    );
    assert_eq!(s.policy_version, 2);
    assert_eq!(after_restore.status, StatusCode::OK);
    assert_eq!(
        find(&receipts, &after_restore.receipt_hash()).policy_version,
        3
    );
}

#[tokio::test]
async fn per_ip_and_per_key_limits() {
    let h = Harness::start("rate_limits: { per_key: { rate_per_s: 0, burst: 1 } }\n").await;
    let a = h.addr;
    let first = send(
        a,
        signed(
            a,
            "GET",
            "/signed/k",
            b"",
            &SignOpts {
                nonce: "k1",
                ..Default::default()
            },
        ),
    )
    .await;
    let second = send(
        a,
        signed(
            a,
            "GET",
            "/signed/k",
            b"",
            &SignOpts {
                nonce: "k2",
                ..Default::default()
            },
        ),
    )
    .await;
    let (receipts, _) = h.finish().await;
    assert_eq!(first.status, StatusCode::OK);
    let r = assert_refused(
        &receipts,
        &second,
        StatusCode::TOO_MANY_REQUESTS,
        Decision::KeyRateLimited,
    );
    assert_eq!(r.key_id.as_deref(), Some("client-1"));

    let h = Harness::start("rate_limits: { per_ip: { rate_per_s: 0, burst: 1 } }\n").await;
    let a = h.addr;
    let first = send(a, plain(a, "GET", "/open/ip", b"")).await;
    let second = send(a, plain(a, "GET", "/open/ip", b"")).await;
    let (receipts, _) = h.finish().await;
    assert_eq!(first.status, StatusCode::OK);
    assert_refused(
        &receipts,
        &second,
        StatusCode::TOO_MANY_REQUESTS,
        Decision::IpRateLimited,
    );
}

/// Reads until EOF or error; returns what arrived and when it ended.
/// Writes `requests` (the last one with `Connection: close`) in one go and returns everything
/// the cage answered until it closed the connection.
async fn requests_on_one_connection(conn: &mut TcpStream, requests: &[u8]) -> String {
    conn.write_all(requests).await.unwrap();
    let (got, closed) = read_until_closed(conn, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "the cage closes after Connection: close");
    String::from_utf8(got).unwrap()
}

async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Instant>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (got, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(Instant::now())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn slowloris_and_idle_connections_are_closed() {
    const HEADER_MS: u64 = 300;
    const IDLE_MS: u64 = 600;
    let h = Harness::start(&format!(
        "timeouts: {{ header_read_timeout_ms: {HEADER_MS}, idle_timeout_ms: {IDLE_MS} }}\n"
    ))
    .await;
    // Half a request head, then silence.
    let mut slow = TcpStream::connect(h.addr).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /open/x HTTP/1.1\r\nHost: cage\r\nX-Slow: ")
        .await
        .unwrap();
    let (got, closed) = read_until_closed(&mut slow, Duration::from_secs(10)).await;
    let closed = closed.expect("the cage closes a slowloris connection");
    assert!(closed - started >= Duration::from_millis(HEADER_MS));
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
        "{got:?}"
    );

    // Trickling bytes does not extend the header deadline.
    let mut trickle = TcpStream::connect(h.addr).await.unwrap();
    let started = Instant::now();
    trickle
        .write_all(b"GET /open/x HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut closed_while_trickling = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if trickle.write_all(b"X-A: b\r\n").await.is_err() {
            closed_while_trickling = true;
            break;
        }
    }
    let (_, closed) = read_until_closed(&mut trickle, Duration::from_secs(10)).await;
    assert!(closed_while_trickling || closed.is_some());
    assert!(started.elapsed() >= Duration::from_millis(HEADER_MS));

    // A complete request is answered; the idle keep-alive connection is
    // closed after the idle timeout.
    let mut idle = TcpStream::connect(h.addr).await.unwrap();
    idle.write_all(b"GET /open/idle HTTP/1.1\r\nHost: cage\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let answered = Instant::now();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(10)).await;
    let closed = closed.expect("the cage closes an idle keep-alive connection");
    assert!(closed - answered >= Duration::from_millis(IDLE_MS / 2));

    // A malformed head: hyper answers 400, the cage writes the receipt.
    let mut bad = TcpStream::connect(h.addr).await.unwrap();
    bad.write_all(b"NOT A REQUEST\r\n\r\n").await.unwrap();
    let (got, _) = read_until_closed(&mut bad, Duration::from_secs(10)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    let (receipts, report) = h.finish().await;
    let timeouts: Vec<&Receipt> = receipts
        .iter()
        .filter(|r| r.decision == Decision::HeaderReadTimeout)
        .collect();
    assert_eq!(timeouts.len(), 2, "{receipts:?}");
    assert!(timeouts.iter().all(|r| r.status == 408));
    let malformed: Vec<&Receipt> = receipts
        .iter()
        .filter(|r| r.decision == Decision::MalformedRequest)
        .collect();
    assert_eq!(malformed.len(), 1);
    assert_eq!(malformed[0].status, 400);
    assert_eq!(report.metrics.connections_closed_header_timeout, 2);
    assert!(report.metrics.connections_closed_idle >= 1);
}

/// With `limits.connections_count_max` connections open, a new one is
/// answered 503 with `retry-after` and closed cleanly (a FIN after the
/// answer, not a reset that could destroy it), and counted; no receipt,
/// since no request was read as one.
#[tokio::test]
async fn a_connection_over_the_limit_gets_503_and_a_clean_close() {
    let h = Harness::start("limits: { connections_count_max: 1 }\n").await;
    let mut held = TcpStream::connect(h.addr).await.unwrap();
    held.write_all(b"GET /open/held HTTP/1.1\r\nHost: cage\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = held.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // `held` stays open (keep-alive): it has the one slot.
    let mut over = TcpStream::connect(h.addr).await.unwrap();
    over.write_all(b"GET /open/over HTTP/1.1\r\nHost: cage\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match over.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the cage closes a refused connection");
    let text = String::from_utf8_lossy(&got);
    assert!(
        ended.is_ok(),
        "a reset, not a clean close: {ended:?}; read {text:?}"
    );
    assert!(
        text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{text:?}"
    );
    assert!(text.contains("\r\nretry-after: 1\r\n"), "{text:?}");
    assert!(text.ends_with("\r\n\r\n503 connection_limit\n"), "{text:?}");
    let length: usize = text
        .split("content-length: ")
        .nth(1)
        .and_then(|rest| rest.split("\r\n").next())
        .and_then(|v| v.parse().ok())
        .expect("content-length");
    assert_eq!(length, "503 connection_limit\n".len());
    drop(held);
    let (receipts, report) = h.finish().await;
    assert_eq!(report.metrics.connections_refused, 1);
    assert_eq!(
        receipts.len(),
        1,
        "only the held connection's request: {receipts:?}"
    );
}

/// The running cage rotates its receipt log at `receipts.segment_bytes_max`
/// and deletes the oldest segments past `receipts.segments_kept_max`: the
/// log left verifies from its first kept segment up to every receipt
/// written, and each response's receipt in a kept batch is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipt_log_rotates_and_keeps_its_newest_segments() {
    const CONNECTIONS: usize = 6;
    const PER_CONNECTION: usize = 400;
    let mut h = Harness::start_with(
        "batch_count_max: 64, flush_interval_ms: 20, response_header: true, \
         segment_bytes_max: 65536, segments_kept_max: 2",
        "",
    )
    .await;
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let addr = h.addr;
        tasks.push(tokio::spawn(async move {
            let mut raw = Vec::new();
            for n in 0..PER_CONNECTION {
                let close = if n + 1 == PER_CONNECTION {
                    "Connection: close\r\n"
                } else {
                    ""
                };
                raw.extend_from_slice(
                    format!("GET /open/r{c}-{n} HTTP/1.1\r\nHost: cage\r\n{close}\r\n").as_bytes(),
                );
            }
            let mut conn = TcpStream::connect(addr).await.unwrap();
            requests_on_one_connection(&mut conn, &raw).await
        }));
    }
    // (receipt hash, batch) of every response.
    let mut named = Vec::new();
    for task in tasks {
        let text = task.await.unwrap();
        assert_eq!(text.matches("HTTP/1.1 200").count(), PER_CONNECTION);
        for line in text.lines() {
            if let Some(value) = line.strip_prefix(&format!("{RECEIPT_HEADER}: ")) {
                let (hash, batch) = value.split_once("; batch=").unwrap();
                named.push((
                    hash.parse::<Hash32>().unwrap(),
                    batch.parse::<u64>().unwrap(),
                ));
            }
        }
    }
    assert_eq!(named.len(), CONNECTIONS * PER_CONNECTION);
    let _ = h.stop.take().unwrap().send(());
    let report = (&mut h.task).await.unwrap();
    assert_eq!(report.receipts.error, None);
    assert_eq!(report.receipts.receipts_written, named.len() as u64);

    let node = SigningKey::from_seed(&NODE_SEED).public_key();
    let verified = verify_receipts(&h.receipts_path, &node).unwrap();
    assert_eq!(verified.segments_count, 2);
    assert!(
        verified.first_batch_index > 0,
        "the oldest segments were deleted"
    );
    assert_eq!(verified.tip, report.receipts.tip);
    assert!(!h.receipts_path.exists(), "segment 0 was deleted");
    let kept = read_receipts(&h.receipts_path, &node).unwrap();
    let kept_hashes: std::collections::HashSet<Hash32> =
        kept.iter().map(|r| r.hash().unwrap()).collect();
    let (in_kept, in_deleted): (Vec<_>, Vec<_>) = named
        .iter()
        .partition(|(_, batch)| *batch >= verified.first_batch_index);
    assert!(!in_deleted.is_empty() && !in_kept.is_empty());
    assert_eq!(in_kept.len() as u64, verified.receipts_count);
    for (hash, batch) in in_kept {
        assert!(
            kept_hashes.contains(&hash),
            "receipt of batch {batch} is kept"
        );
    }
}

#[tokio::test]
async fn tampered_receipt_file_is_detected() {
    let h = Harness::start("").await;
    for i in 0..7 {
        let r = send(h.addr, plain(h.addr, "GET", &format!("/open/{i}"), b"")).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let (receipts, report, _dir, path) = h.finish_keeping_file().await;
    assert_eq!(receipts.len(), 7);
    assert!(report.receipts.batches_written >= 3, "{report:?}");
    let node = SigningKey::from_seed(&NODE_SEED).public_key();
    let good = std::fs::read(&path).unwrap();
    // Flip one byte at a time across the file: every flip is detected.
    for at in (8..good.len()).step_by(37) {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        assert!(
            verify_receipts(&path, &node).is_err(),
            "flip at {at} not detected"
        );
    }
    std::fs::write(&path, &good).unwrap();
    assert!(verify_receipts(&path, &node).is_ok());
    let other = SigningKey::from_seed(&[1; 32]).public_key();
    assert!(verify_receipts(&path, &other).is_err());
}

#[tokio::test]
async fn tls_listener_serves_http11() {
    use rustls::pki_types::{CertificateDer, ServerName};
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem_dir = tempfile::tempdir().unwrap();
    let cert_path = pem_dir.path().join("cert.pem");
    let key_path = pem_dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let h = Harness::start(&format!(
        "tls: {{ cert_pem: {}, key_pem: {} }}\n",
        cert_path.display(),
        key_path.display()
    ))
    .await;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(certified.cert.der().to_vec()))
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = TcpStream::connect(h.addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(plain(h.addr, "GET", "/open/tls", b""))
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"upstream GET /open/tls key=none len=0");
    let reply = Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };

    // A client that never finishes the handshake is dropped, not served.
    let mut plain_tcp = TcpStream::connect(h.addr).await.unwrap();
    plain_tcp
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (got, closed) = read_until_closed(&mut plain_tcp, Duration::from_secs(15)).await;
    assert!(closed.is_some());
    assert!(!got.starts_with(b"HTTP/1.1 200"));

    let (receipts, report) = h.finish().await;
    let r = find(&receipts, &reply.receipt_hash());
    assert_eq!(r.decision, Decision::Forwarded);
    assert_eq!(report.metrics.tls_handshakes_failed, 1);
}

#[tokio::test]
async fn pipelined_keep_alive_head_and_close_on_one_connection() {
    let h = Harness::start("").await;
    let mut conn = TcpStream::connect(h.addr).await.unwrap();
    // Two requests in one write, then a HEAD and a closing request.
    let text = requests_on_one_connection(
        &mut conn,
        b"GET /open/one HTTP/1.1\r\nHost: cage\r\n\r\n\
          POST /open/two HTTP/1.1\r\nHost: cage\r\nContent-Length: 5\r\n\r\nhello\
          HEAD /open/three HTTP/1.1\r\nHost: cage\r\n\r\n\
          GET /open/four HTTP/1.1\r\nHost: cage\r\nConnection: close\r\n\r\n",
    )
    .await;
    let responses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(responses.len(), 4, "{text}");
    assert!(responses[0].starts_with("200 OK"));
    assert!(responses[0].ends_with("upstream GET /open/one key=none len=0"));
    assert!(responses[1].ends_with("upstream POST /open/two key=none len=5"));
    // HEAD: the upstream's length, no body.
    assert!(responses[2].starts_with("200 OK"));
    assert!(responses[2].ends_with("\r\n\r\n"), "{}", responses[2]);
    assert!(responses[3].contains("connection: close\r\n"));
    assert!(responses[3].ends_with("upstream GET /open/four key=none len=0"));
    let (receipts, report) = h.finish().await;
    assert_eq!(receipts.len(), 4);
    assert!(receipts.iter().all(|r| r.decision == Decision::Forwarded));
    assert_eq!(report.metrics.requests(Decision::Forwarded), 4);
    // One client connection carried all four.
    assert_eq!(report.metrics.connections_accepted, 1);
}

/// A closing response is held back for its FIN (MSG_MORE). A client that
/// sent far more than its request leaves bytes unread, and close(2) with
/// unread bytes sends a reset and drops what was never sent: the cage
/// lingers when it has read past the request, and shuts down before close
/// for bytes it never read, so the response arrives whole either way.
#[tokio::test]
async fn a_closing_response_reaches_a_client_that_sent_more_than_was_read() {
    let h = Harness::start("").await;
    let conn = TcpStream::connect(h.addr).await.unwrap();
    let mut bytes = b"GET /open/last HTTP/1.1\r\nHost: cage\r\nConnection: close\r\n\r\n".to_vec();
    bytes.resize(bytes.len() + (512 << 10), b'x');
    let (mut rd, mut wr) = conn.into_split();
    // The cage stops reading after the closing request, so this write
    // ends with an error once it closes.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&bytes).await;
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the cage neither answered nor closed"),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text:?}");
    assert!(
        text.ends_with("upstream GET /open/last key=none len=0"),
        "{text:?}"
    );
    writer.await.unwrap();
    let (receipts, _) = h.finish().await;
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].decision, Decision::Forwarded);
}

/// Counts `HTTP/1.1 404` in a byte stream read in pieces.
#[derive(Default)]
struct NotFoundCounter {
    tail: Vec<u8>,
}

impl NotFoundCounter {
    const NEEDLE: &'static [u8] = b"HTTP/1.1 404";

    fn feed(&mut self, bytes: &[u8]) -> usize {
        self.tail.extend_from_slice(bytes);
        let found = self
            .tail
            .windows(Self::NEEDLE.len())
            .filter(|w| *w == Self::NEEDLE)
            .count();
        // Keep what could be the start of a match cut by the read.
        let keep = self.tail.len().min(Self::NEEDLE.len() - 1);
        self.tail.drain(..self.tail.len() - keep);
        found
    }
}

/// A client socket the cage has never had to wait on is read and written
/// directly, outside tokio's cooperative budget. A client pipelining
/// requests the cage answers itself (404s here), always a step ahead so
/// its socket never runs dry, must still not keep the worker (one here)
/// from accepting and serving another connection: the flood goes on until
/// that connection is answered (bounded, in case it never is), so a
/// starved worker shows as no flood receipt after the other one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelining_client_does_not_starve_the_workers_other_connections() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    const CHUNK_REQUESTS: usize = 1_000;
    const FLOOD_REQUESTS_MAX: usize = 400_000;
    // One worker, one receipt lane: the log is in the order requests were
    // decided.
    let h = Harness::start_with(
        "batch_count_max: 4096, flush_interval_ms: 50",
        "workers: 1\n",
    )
    .await;
    let flood = std::net::TcpStream::connect(h.addr).unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut flood = flood.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let chunk = b"GET /nowhere HTTP/1.1\r\nHost: cage\r\n\r\n".repeat(CHUNK_REQUESTS);
            let mut sent = 0;
            while !stop.load(SeqCst) && sent < FLOOD_REQUESTS_MAX {
                flood.write_all(&chunk).unwrap();
                sent += CHUNK_REQUESTS;
            }
            flood.shutdown(std::net::Shutdown::Write).unwrap();
            sent
        })
    };
    let reader = {
        let mut flood = flood;
        let answered = answered.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut counter = NotFoundCounter::default();
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match flood.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        answered.fetch_add(counter.feed(&buf[..n]), SeqCst);
                    }
                }
            }
        })
    };
    let started = Instant::now();
    while answered.load(SeqCst) < 100 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the flood is never answered"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let reply = tokio::time::timeout(
        Duration::from_secs(300),
        send(h.addr, plain(h.addr, "GET", "/open/other", b"")),
    )
    .await
    .expect("the other connection is answered");
    stop.store(true, SeqCst);
    assert_eq!(reply.status, StatusCode::OK);
    let sent = writer.join().unwrap();
    reader.join().unwrap();
    assert_eq!(answered.load(SeqCst), sent, "every flood request answered");
    let (receipts, _) = h.finish().await;
    assert_eq!(receipts.len(), sent + 1);
    let other = receipts
        .iter()
        .position(|r| r.decision == Decision::Forwarded)
        .expect("the other request's receipt");
    assert!(
        other < sent,
        "the other connection waited for the whole flood ({sent} requests)"
    );
}

#[tokio::test]
async fn stray_upstream_bytes_never_become_the_next_response() {
    let h = Harness::start("").await;
    let mut conn = TcpStream::connect(h.addr).await.unwrap();
    // The upstream answers the first with a 204 and then bytes no 204 may carry; the second
    // request, on the same client connection, must get the upstream's real answer to it.
    let text = requests_on_one_connection(
        &mut conn,
        b"GET /sloppy/extra HTTP/1.1\r\nHost: cage\r\n\r\n\
          GET /sloppy/next HTTP/1.1\r\nHost: cage\r\nConnection: close\r\n\r\n",
    )
    .await;
    let responses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(responses.len(), 2, "{text}");
    assert!(responses[0].starts_with("204 "), "{text}");
    assert!(responses[1].starts_with("200 OK"), "{text}");
    assert!(responses[1].ends_with("\r\n\r\nok"), "{text}");
    let (receipts, _report) = h.finish().await;
    assert_eq!(receipts.len(), 2);
    assert!(receipts.iter().all(|r| r.decision == Decision::Forwarded));
}

/// Workers keep the buffers of finished connections for the next ones:
/// connections alternating a large chunked upload with many headers, a
/// bare GET, and a kept-alive connection whose large body is followed by
/// small requests (its read buffer consumed past a big storage) each get
/// exactly their own answers, and every receipt hashes its own request
/// and response.
#[tokio::test]
async fn reused_connection_buffers_never_mix_connections() {
    const CONNECTIONS: usize = 24;
    let h = Harness::start("").await;
    let mut expected = Vec::new();
    for i in 0..CONNECTIONS {
        // (method, path, body, chunked) of this connection's requests.
        let requests: Vec<(&str, String, Vec<u8>, bool)> = match i % 4 {
            0 => vec![("POST", format!("/open/big{i}"), vec![b'b'; 20_000], true)],
            2 => vec![
                (
                    "POST",
                    format!("/open/large{i}"),
                    vec![b'c'; 300_000],
                    false,
                ),
                ("GET", format!("/open/after{i}"), Vec::new(), false),
                ("GET", format!("/open/last{i}"), Vec::new(), false),
            ],
            _ => vec![("GET", format!("/open/small{i}"), Vec::new(), false)],
        };
        let mut raw = Vec::new();
        let mut answers = Vec::new();
        for (n, (method, path, body, chunked)) in requests.iter().enumerate() {
            raw.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nHost: cage\r\n").as_bytes());
            if n == 0 && !body.is_empty() {
                for f in 0..40 {
                    raw.extend_from_slice(
                        format!("X-Filler-{f}: {}\r\n", "v".repeat(100)).as_bytes(),
                    );
                }
            }
            if n + 1 == requests.len() {
                raw.extend_from_slice(b"Connection: close\r\n");
            }
            if *chunked {
                raw.extend_from_slice(
                    format!("Transfer-Encoding: chunked\r\n\r\n{:x}\r\n", body.len()).as_bytes(),
                );
                raw.extend_from_slice(body);
                raw.extend_from_slice(b"\r\n0\r\n\r\n");
            } else {
                if !body.is_empty() {
                    raw.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
                }
                raw.extend_from_slice(b"\r\n");
                raw.extend_from_slice(body);
            }
            let answer = format!("upstream {method} {path} key=none len={}", body.len());
            let request_hash = metanode_cage::receipt::request_hash(
                method,
                "cage",
                path,
                Some(&metanode_core::hash::blake3_256(body)),
            );
            expected.push((
                request_hash,
                metanode_core::hash::blake3_256(answer.as_bytes()),
            ));
            answers.push(answer);
        }
        let mut conn = TcpStream::connect(h.addr).await.unwrap();
        let text = requests_on_one_connection(&mut conn, &raw).await;
        let responses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
        assert_eq!(responses.len(), answers.len(), "connection {i}: {text}");
        for (response, answer) in responses.iter().zip(&answers) {
            assert!(response.starts_with("200 OK"), "connection {i}: {response}");
            assert!(
                response.ends_with(answer.as_str()),
                "connection {i}: {response}"
            );
        }
    }
    let (receipts, report) = h.finish().await;
    let mut got: Vec<(Hash32, Hash32)> = receipts
        .iter()
        .map(|r| {
            assert_eq!(r.decision, Decision::Forwarded);
            (r.request_hash, r.response_hash)
        })
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(
        got, expected,
        "each receipt names its own request and response"
    );
    assert_eq!(report.metrics.connections_accepted, CONNECTIONS as u64);
}

/// Shutdown lets a request in flight finish and closes an idle keep-alive
/// connection at once; no connection is reported dropped.
#[tokio::test]
async fn shutdown_drains_requests_in_flight_and_closes_idle_connections() {
    let h = Harness::start("").await;
    let a = h.addr;
    let mut idle = TcpStream::connect(a).await.unwrap();
    idle.write_all(b"GET /open/first HTTP/1.1\r\nHost: cage\r\n\r\n")
        .await
        .unwrap();
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    while !first.ends_with(b"upstream GET /open/first key=none len=0") {
        let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
            .await
            .expect("the first answer in time")
            .unwrap();
        assert!(n > 0, "the cage kept the connection open");
        first.extend_from_slice(&buf[..n]);
    }
    let in_flight = tokio::spawn(async move {
        let reply = send(a, plain(a, "GET", DRAIN_PATH, b"")).await;
        (reply, Instant::now())
    });
    let waited = Instant::now();
    while DRAIN_REQUESTS_SEEN.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the slow request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let finished = tokio::spawn(h.finish());
    let (rest, idle_closed) = read_until_closed(&mut idle, Duration::from_secs(30)).await;
    let idle_closed = idle_closed.expect("shutdown closes the idle connection");
    assert!(rest.is_empty(), "nothing more on the idle connection");
    let (reply, answered) = in_flight.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        format!("upstream GET {DRAIN_PATH} key=none len=0")
    );
    assert!(
        idle_closed < answered,
        "the idle connection closed before the request in flight was answered"
    );
    let (receipts, report) = tokio::time::timeout(Duration::from_secs(60), finished)
        .await
        .expect("the drain ends once the request in flight is answered")
        .unwrap();
    assert_eq!(report.connections_dropped, 0);
    assert_eq!(receipts.len(), 2, "both requests have their receipt");
}

/// The listen address is checked before the receipt log is opened: a cage
/// that cannot listen (here: another process listens there) creates no
/// receipt file, no lock and no directory.
#[tokio::test]
async fn a_cage_that_cannot_listen_leaves_no_receipt_file() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let receipts = dir.path().join("cage").join("receipts.log");
    let yaml = format!(
        "listen: 127.0.0.1:{port}\nroutes:\n  - {{ path_prefix: /, upstream: \"127.0.0.1:9\" }}\n\
         receipts: {{ path: {} }}\n",
        receipts.display()
    );
    let config = CageConfig::from_yaml_str(&yaml).unwrap();
    let refused = Server::bind(
        config,
        PolicyHandle::new(test_policy(1)),
        SigningKey::from_seed(&NODE_SEED),
    )
    .await;
    let Err(e) = refused else {
        panic!("a cage bound beside another listener on port {port}");
    };
    assert!(
        e.to_string()
            .contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{e}"
    );
    assert!(!dir.path().join("cage").exists(), "nothing was created");
}
