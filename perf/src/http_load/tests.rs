//! The generator against a small in-process HTTP/1.1 server on 127.0.0.1
//! whose behaviour (status, chunked, stall) the test chooses and which counts
//! what it received. No timing thresholds: only counts and logical relations.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metanode_core::keys::SigningKey;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::driver::{self, Outcome, RunConfig};
use crate::report::ErrorKind;
use crate::request::{Method, RequestSource, RequestSpec, presign};

#[derive(Debug, Clone, Copy)]
struct Behaviour {
    chunked: bool,
    /// Every `n`th request (1-based) is answered with 503.
    unavailable_every: Option<u64>,
    /// Request number `.0` (1-based, over all connections) waits `.1` first.
    stall: Option<(u64, Duration)>,
}

const PLAIN: Behaviour = Behaviour {
    chunked: false,
    unavailable_every: None,
    stall: None,
};

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    connections: AtomicU64,
}

/// Starts the server on its own thread and runtime (the generator builds its
/// own runtime, which cannot nest inside a test runtime).
fn serve(behaviour: Behaviour) -> (SocketAddr, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let server_counters = Arc::clone(&counters);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                server_counters.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_connection(
                    stream,
                    behaviour,
                    Arc::clone(&server_counters),
                ));
            }
        });
    });
    (rx.recv().unwrap(), counters)
}

async fn serve_connection(mut stream: TcpStream, behaviour: Behaviour, counters: Arc<Counters>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Read one whole request: head, then Content-Length bytes of body.
        let (head_bytes, body_bytes, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = request.parse(&buf) {
                let header = |name: &str| {
                    request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                };
                let length = header("content-length").map_or(0, |v| v.parse::<usize>().unwrap());
                let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
                break (n, length, close);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_bytes + body_bytes {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_bytes + body_bytes);

        let number = counters.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((n, stall)) = behaviour.stall
            && n == number
        {
            tokio::time::sleep(stall).await;
        }
        let status = match behaviour.unavailable_every {
            Some(every) if number.is_multiple_of(every) => "503 Service Unavailable",
            _ => "200 OK",
        };
        let connection = if close { "connection: close\r\n" } else { "" };
        let response = if behaviour.chunked {
            format!(
                "HTTP/1.1 {status}\r\n{connection}transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )
        } else {
            format!("HTTP/1.1 {status}\r\n{connection}content-length: 5\r\n\r\nhello")
        };
        if stream.write_all(response.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

fn spec(close: bool) -> RequestSpec {
    RequestSpec {
        method: Method::Post,
        host: "test".into(),
        path: "/load".into(),
        body: crate::request::body_of(100),
        close,
    }
}

fn run(
    target: SocketAddr,
    connections: usize,
    duration: Duration,
    rate_rps: Option<f64>,
    close: bool,
) -> Outcome {
    run_source(
        target,
        connections,
        duration,
        rate_rps,
        close,
        RequestSource::Fixed(spec(close).plain()),
    )
}

fn run_source(
    target: SocketAddr,
    connections: usize,
    duration: Duration,
    rate_rps: Option<f64>,
    close: bool,
    source: RequestSource,
) -> Outcome {
    let config = RunConfig {
        target,
        connections,
        threads: 1,
        warmup: Duration::ZERO,
        duration,
        rate_rps,
        close,
        timeout: Duration::from_secs(10),
        pacer_tick: driver::PACER_TICK_DEFAULT,
    };
    driver::run(config, source, false).unwrap()
}

#[test]
fn closed_loop_keep_alive_counts_match_the_server() {
    let (addr, counters) = serve(Behaviour {
        unavailable_every: Some(7),
        ..PLAIN
    });
    let outcome = run(addr, 3, Duration::from_millis(300), None, false);
    let served = counters.requests.load(Ordering::SeqCst);
    let stats = &outcome.stats;
    assert!(served > 0);
    assert_eq!(stats.errors(), 0, "{:?}", stats.error_examples);
    assert_eq!(stats.responses(), served);
    assert_eq!(
        stats.non_2xx_by_status.get(&503).copied().unwrap_or(0),
        served / 7
    );
    assert_eq!(stats.ok_2xx, served - served / 7);
    assert_eq!(stats.latency.count(), served);
    // Keep-alive: one connection per connection task, never reopened.
    assert_eq!(counters.connections.load(Ordering::SeqCst), 3);
}

#[test]
fn closed_loop_close_opens_a_connection_per_request_and_reads_chunked() {
    let (addr, counters) = serve(Behaviour {
        chunked: true,
        ..PLAIN
    });
    let outcome = run(addr, 2, Duration::from_millis(200), None, true);
    let served = counters.requests.load(Ordering::SeqCst);
    assert!(served > 0);
    assert_eq!(
        outcome.stats.errors(),
        0,
        "{:?}",
        outcome.stats.error_examples
    );
    assert_eq!(outcome.stats.ok_2xx, served);
    assert_eq!(counters.connections.load(Ordering::SeqCst), served);
}

#[test]
fn open_loop_sends_exactly_the_schedule() {
    let (addr, counters) = serve(PLAIN);
    // Slots g/200 s for g < 100 fall before the 0.5 s deadline.
    let outcome = run(addr, 2, Duration::from_millis(500), Some(200.0), false);
    assert_eq!(
        outcome.stats.errors(),
        0,
        "{:?}",
        outcome.stats.error_examples
    );
    assert_eq!(outcome.stats.ok_2xx, 100);
    assert_eq!(counters.requests.load(Ordering::SeqCst), 100);
    assert_eq!(outcome.stats.behind_schedule.count(), 100);
    assert_eq!(outcome.stats.latency.count(), 100);
}

#[test]
fn open_loop_charges_a_stall_to_every_request_it_delays() {
    let stall = Duration::from_millis(400);
    let rate_rps = 100.0;
    let (addr, counters) = serve(Behaviour {
        stall: Some((3, stall)),
        ..PLAIN
    });
    let outcome = run(addr, 1, Duration::from_secs(1), Some(rate_rps), false);
    assert_eq!(
        outcome.stats.errors(),
        0,
        "{:?}",
        outcome.stats.error_examples
    );
    assert_eq!(outcome.stats.ok_2xx, 100);
    assert_eq!(counters.requests.load(Ordering::SeqCst), 100);
    let latency = outcome.stats.latency.summary().unwrap();
    // The stalled request itself waited at least the stall after its intended time.
    assert!(latency.max >= stall.as_micros() as u64, "{latency:?}");
    // Every slot due in the first half of the stall could only be sent after
    // it ended, so each is at least half a stall late: rate × stall / 2 of them.
    let delayed = (rate_rps * stall.as_secs_f64() / 2.0) as u64;
    assert!(
        outcome.stats.latency.count_at_least(stall / 2) >= delayed,
        "{} requests ≥ {:?}, expected ≥ {delayed}",
        outcome.stats.latency.count_at_least(stall / 2),
        stall / 2
    );
    // Those requests waited for the connection, not for the generator.
    let waited = outcome.stats.waited_for_connection.tail().unwrap();
    assert!(waited.max >= (stall / 2).as_micros() as u64, "{waited:?}");
}

#[test]
fn dead_target_counts_connect_errors_without_panicking() {
    // Bind then drop: nothing listens on this port any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let outcome = run(addr, 1, Duration::from_millis(100), None, false);
    assert_eq!(outcome.stats.responses(), 0);
    assert!(
        outcome
            .stats
            .errors_by_kind
            .get(&ErrorKind::Connect)
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert!(outcome.stats.latency.summary().is_none());
}

const KEY_ID: &str = "bench-key";

fn signing_key() -> SigningKey {
    SigningKey::from_seed(&[7u8; 32])
}

/// Reads one serialized request back into `http` parts, as the cage would.
fn parse_request(bytes: &[u8]) -> (http::request::Parts, &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_bytes) = request.parse(bytes).unwrap() else {
        panic!("a presigned request is complete");
    };
    let mut builder = http::Request::builder()
        .method(request.method.unwrap())
        .uri(request.path.unwrap());
    for header in request.headers.iter() {
        builder = builder.header(header.name, header.value);
    }
    let (parts, ()) = builder.body(()).unwrap().into_parts();
    (parts, &bytes[head_bytes..])
}

#[test]
fn presigned_requests_verify_once_each_with_content_digest() {
    let count = 40;
    let pool = presign(&spec(false), &signing_key(), KEY_ID, count, 2).unwrap();
    let source = RequestSource::Presigned(pool);
    assert_eq!(source.presigned_count(), Some(count));

    let mut keys = metanode_httpsig::KeyDirectory::new();
    keys.insert(KEY_ID, signing_key().public_key());
    let policy = metanode_httpsig::VerifyPolicy::default();
    let replay = metanode_httpsig::ReplayCache::new(1000, 600);
    let now_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut nonces = HashSet::new();
    let mut first = None;
    for _ in 0..count {
        let bytes = source.next().unwrap();
        let (parts, body) = parse_request(bytes);
        assert_eq!(body, crate::request::body_of(100));
        let verified =
            metanode_httpsig::verify_request(&parts, &keys, &policy, &replay, now_unix_s).unwrap();
        assert_eq!(verified.key_id, KEY_ID);
        assert!(verified.covered.iter().any(|c| c == "content-digest"));
        metanode_httpsig::digest::verify_content_digest(
            parts.headers.get("content-digest").unwrap(),
            body,
        )
        .unwrap();
        assert!(nonces.insert(verified.nonce.unwrap()));
        first.get_or_insert(parts);
    }
    assert_eq!(source.next(), None);
    assert!(source.exhausted());
    // The nonces are what keep a second run from being refused as replays.
    let replayed =
        metanode_httpsig::verify_request(&first.unwrap(), &keys, &policy, &replay, now_unix_s);
    assert!(replayed.is_err());
}

#[test]
fn signed_run_stops_when_the_presigned_pool_runs_out() {
    let (addr, counters) = serve(PLAIN);
    let pool = presign(&spec(false), &signing_key(), KEY_ID, 50, 1).unwrap();
    let outcome = run_source(
        addr,
        2,
        Duration::from_secs(30),
        None,
        false,
        RequestSource::Presigned(pool),
    );
    assert!(outcome.presigned_exhausted);
    assert_eq!(
        outcome.stats.errors(),
        0,
        "{:?}",
        outcome.stats.error_examples
    );
    assert_eq!(outcome.stats.ok_2xx, 50);
    assert_eq!(counters.requests.load(Ordering::SeqCst), 50);
}
