//! The reverse proxy: accept loop, per-connection timeouts, the request
//! path and upstream forwarding.
//!
//! Each client connection is one task on its worker's current-thread
//! runtime. The task parses request heads itself ([`crate::h1`]), decides,
//! and forwards over its own upstream HTTP/1.1 keep-alive connection (kept
//! across the requests of the client connection, like nginx's per-worker
//! upstream keepalive but without a shared pool): no task hand-off, no lock
//! and no header map on the unsigned path.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use metanode_biso::compiled::{CompiledPolicy, Verdict};
use metanode_core::hash::{Hash32, blake3_256};
use metanode_core::keys::SigningKey;
use metanode_httpsig::{KeyDirectory, ReplayCache, VerifyPolicy};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::audit::ReceiptReader;
use crate::client::LastWrite;
use crate::config::{CageConfig, ConfigError, UnsignedPolicy};
use crate::h1::{
    self, ChunkedDecoder, DateCache, Framing, HeadError, HeaderKind, RequestHead, ResponseHead,
};
use crate::lights::PolicyHandle;
use crate::limits::{
    CHUNKED_OVERHEAD_FACTOR, LINGER_BYTES_MAX, LINGER_MS, LISTEN_BACKLOG, LISTEN_DEFER_ACCEPT_S,
    READ_CHUNK_BYTES, RECEIPT_DETAIL_LEN_BYTES_MAX, REFUSED_DRAIN_BYTES_MAX,
    REQUEST_HEAD_BUF_BYTES_MAX, SHUTDOWN_DRAIN_MS_MAX,
};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::ratelimit::{KeyedBuckets, Rate};
use crate::receipt::{
    BatchReplica, Decision, FileSink, OpenSinkError, ReceiptLog, ReceiptSink, ReceiptView,
    ReplicatedSink, RequestHashInput, WriterReport, now_unix_ms, request_hash, truncate_utf8,
};
use crate::spares::{ConnBuffers, Spares};
use crate::verifier::Verifier;

/// Response header carrying the request's receipt hash and batch.
pub const RECEIPT_HEADER: &str = "metanode-receipt";
/// Request header the cage sets for the upstream: the verified key id
/// (a client-sent one is removed, so upstreams can trust it).
pub const KEY_ID_HEADER: &str = "metanode-key-id";

/// Why the cage could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("tls: cannot use {}: {reason}", .path.display())]
    Tls { path: PathBuf, reason: String },
    #[error("receipts: {0}")]
    Receipts(#[from] OpenSinkError),
    #[error("cannot start the receipt writer: {0}")]
    ReceiptWriter(io::Error),
}

/// What a finished [`Server::run`] reports.
#[derive(Debug)]
pub struct ServeReport {
    pub receipts: WriterReport,
    pub metrics: MetricsSnapshot,
    /// Connections still open when the drain time ran out (then dropped).
    pub connections_dropped: u32,
}

struct Route {
    prefix: String,
    authority: http::uri::Authority,
    unsigned: UnsignedPolicy,
}

impl Route {
    /// Prefix match on a segment boundary.
    fn matches(&self, path: &str) -> bool {
        path.starts_with(&self.prefix)
            && (self.prefix.ends_with('/')
                || path.len() == self.prefix.len()
                || path.as_bytes().get(self.prefix.len()) == Some(&b'/'))
    }
}

struct State {
    config: CageConfig,
    /// Longest prefix first.
    routes: Vec<Route>,
    keys: KeyDirectory,
    verify_policy: VerifyPolicy,
    replay: ReplayCache,
    policy: PolicyHandle,
    yellow: KeyedBuckets<IpAddr>,
    per_ip: Option<(Rate, KeyedBuckets<IpAddr>)>,
    per_key: Option<(Rate, KeyedBuckets<String>)>,
    receipts: ReceiptLog,
    metrics: Arc<Metrics>,
}

/// A bound, not yet running cage.
pub struct Server {
    /// One SO_REUSEPORT listener per worker thread.
    listeners: Vec<std::net::TcpListener>,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    local_addr: SocketAddr,
    receipt_reader: ReceiptReader,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Fails if a socket already listens on `addr` (or it cannot be bound at
/// all: a privileged port, an address this host does not have).
/// SO_REUSEPORT lets every socket that sets it share a port, so a second
/// cage (or a cage beside the agent's) on the same address would start
/// without a word and take a share of the connections under its own key
/// and policy; a probe without SO_REUSEPORT cannot bind beside a listener.
/// SO_REUSEADDR keeps a restart from tripping over its predecessor's
/// TIME_WAIT connections.
fn refuse_a_listening_port(addr: SocketAddr) -> io::Result<()> {
    let probe = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    probe.set_reuseaddr(true)?;
    probe.bind(addr).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process listens there (another cage, or an agent's cage, on the same \
                 address?)",
            )
        } else {
            e
        }
    })
}

/// `count` listeners on `addr` sharing its port with SO_REUSEPORT, so the
/// kernel spreads connections over the workers without a shared accept.
fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        refuse_a_listening_port(addr)?;
    }
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        // Accepted sockets inherit TCP_NODELAY from the listener (Linux
        // copies the listener's TCP state into each child): one setsockopt
        // per listener instead of one per connection.
        socket.set_nodelay(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(LISTEN_BACKLOG)?;
        // Delayed ACKs from the first byte (HAProxy's `tcp-smart-accept`):
        // a new connection starts in quick-ACK mode, so its request would
        // be acknowledged by a segment of its own; accepted sockets inherit
        // this from the listener, and the ACK then rides on the response
        // if that comes within the delayed-ACK time (40 ms; else the ACK
        // goes alone and the socket returns to quick ACKs). Bulk uploads
        // still get an ACK every second full segment. The cost: a client
        // with Nagle on that writes a request in two small pieces waits up
        // to 40 ms for its second piece to leave.
        rustix::net::sockopt::set_tcp_quickack(&listener, false)?;
        crate::client::set_defer_accept(&listener, LISTEN_DEFER_ACCEPT_S)?;
        // Port 0: the others join the port the first one got.
        addr = listener.local_addr()?;
        listeners.push(listener.into_std()?);
    }
    Ok(listeners)
}

fn load_tls(config: &crate::config::TlsConfig) -> Result<TlsAcceptor, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls_err = |path: &PathBuf, reason: String| ServeError::Tls {
        path: path.clone(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_pem)
        .map_err(|e| tls_err(&config.cert_pem, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(&config.cert_pem, e.to_string()))?;
    if certs.is_empty() {
        return Err(tls_err(
            &config.cert_pem,
            "no certificate in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_pem)
        .map_err(|e| tls_err(&config.key_pem, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err(&config.cert_pem, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| tls_err(&config.cert_pem, e.to_string()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

impl Server {
    /// Validates the config, loads keys and TLS material, opens (and
    /// verifies) the receipt file, starts the receipt writer and binds the
    /// listener. Must be called inside a tokio runtime.
    pub async fn bind(
        config: CageConfig,
        policy: PolicyHandle,
        signing_key: SigningKey,
    ) -> Result<Server, ServeError> {
        Self::bind_with_replica(config, policy, signing_key, None).await
    }

    /// [`Server::bind`], and every receipt batch, once in the receipt file,
    /// also goes to `replica` (the agent's content store; see
    /// [`ReplicatedSink`]).
    pub async fn bind_with_replica(
        config: CageConfig,
        policy: PolicyHandle,
        signing_key: SigningKey,
        replica: Option<Box<dyn BatchReplica>>,
    ) -> Result<Server, ServeError> {
        config.validate()?;
        let mut keys = KeyDirectory::new();
        for (key_id, key) in config.load_keys()? {
            keys.insert(key_id, key);
        }
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            routes.push(Route {
                prefix: r.path_prefix.clone(),
                authority: config.upstream_authority(i)?,
                unsigned: r.unsigned,
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let tls = config.tls.as_ref().map(load_tls).transpose()?;

        let s = &config.signature;
        let verify_policy = VerifyPolicy {
            max_age_s: s.max_age_s,
            clock_skew_s: s.clock_skew_s,
            require_nonce: s.require_nonce,
            request_scheme: if config.tls.is_some() {
                http::uri::Scheme::HTTPS
            } else {
                http::uri::Scheme::HTTP
            },
            ..VerifyPolicy::default()
        };
        let replay = ReplayCache::new(
            s.replay_cache_entries_max as usize,
            s.max_age_s + s.clock_skew_s,
        );
        let buckets_max = config.rate_limits.buckets_count_max as usize;
        let rate = |r: crate::config::RateConfig| Rate {
            rate_per_s: r.rate_per_s,
            burst: r.burst,
        };

        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        if config.listen.port() != 0 {
            // Before the receipt log is opened (or created): a cage that
            // cannot listen leaves no file behind. `bind_listeners` checks
            // again, right before it binds.
            refuse_a_listening_port(config.listen).map_err(|source| ServeError::Bind {
                addr: config.listen,
                source,
            })?;
        }
        let metrics = Arc::new(Metrics::new());
        let file = FileSink::open_segmented(
            &config.receipts.path,
            &signing_key.public_key(),
            config.receipts.segment_policy(),
        )?
        .with_metrics(metrics.clone());
        let receipt_reader = ReceiptReader::new(
            config.receipts.path.clone(),
            signing_key.public_key(),
            file.batch_offsets(),
        );
        let sink: Box<dyn ReceiptSink> = match replica {
            None => Box::new(file),
            Some(replica) => Box::new(
                ReplicatedSink::new(
                    file,
                    replica,
                    metrics.clone(),
                    Some(config.receipts.path.clone()),
                    config.receipts.store_pinned_batches_max,
                )
                .map_err(ServeError::ReceiptWriter)?,
            ),
        };
        let receipts = ReceiptLog::start(
            sink,
            signing_key,
            &config.receipts,
            metrics.clone(),
            workers,
        )
        .map_err(ServeError::ReceiptWriter)?;
        let bind_err = |source| ServeError::Bind {
            addr: config.listen,
            source,
        };
        let listeners = bind_listeners(config.listen, workers).map_err(bind_err)?;
        let local_addr = listeners
            .first()
            .ok_or_else(|| bind_err(io::Error::other("no listener")))?
            .local_addr()
            .map_err(bind_err)?;

        let state = State {
            per_ip: config
                .rate_limits
                .per_ip
                .map(|r| (rate(r), KeyedBuckets::new(buckets_max))),
            per_key: config
                .rate_limits
                .per_key
                .map(|r| (rate(r), KeyedBuckets::new(buckets_max))),
            yellow: KeyedBuckets::new(buckets_max),
            config,
            routes,
            keys,
            verify_policy,
            replay,
            policy,
            receipts,
            metrics,
        };
        Ok(Server {
            listeners,
            tls,
            state: Arc::new(state),
            local_addr,
            receipt_reader,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Live counters (keep the Arc to render metrics while running).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.state.metrics.clone()
    }

    /// Looks receipt batches up and proves receipts (the agent's API serves
    /// it); stays valid after the server stops.
    pub fn receipt_reader(&self) -> ReceiptReader {
        self.receipt_reader.clone()
    }

    /// Handle to swap the BISO policy at runtime.
    pub fn policy(&self) -> PolicyHandle {
        self.state.policy.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets open
    /// connections finish (at most [`SHUTDOWN_DRAIN_MS_MAX`]), seals and
    /// writes the last receipt batch.
    ///
    /// Connections are served by worker threads (`workers` in the config),
    /// each with its own current-thread runtime, listener and upstream pool,
    /// so a request and its upstream exchange stay on one core; the calling
    /// runtime only waits and runs the receipt timer.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> ServeReport {
        let Server {
            listeners,
            tls,
            state,
            local_addr,
            receipt_reader: _,
        } = self;
        let slots = Arc::new(Semaphore::new(
            state.config.limits.connections_count_max as usize,
        ));
        let (stop_tx, stop_rx) = watch::channel(false);
        tracing::info!(%local_addr, tls = tls.is_some(), workers = listeners.len(), "cage listening");
        let mut threads = Vec::with_capacity(listeners.len());
        for (i, listener) in listeners.into_iter().enumerate() {
            let state = state.clone();
            let tls = tls.clone();
            let slots = slots.clone();
            let stop_rx = stop_rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("cage-worker-{i}"))
                .spawn(move || {
                    crate::receipt::bind_receipt_lane(i);
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start a cage worker runtime");
                            return 0;
                        }
                    };
                    runtime.block_on(worker(listener, state, tls, slots, stop_rx))
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => tracing::error!(error = %e, "cannot start a cage worker thread"),
            }
        }
        shutdown.await;
        let _ = stop_tx.send(true);
        let connections_dropped = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .map(|t| t.join().unwrap_or(0))
                .sum::<u32>()
        })
        .await
        .unwrap_or(0);
        let receipts = state.receipts.close().await;
        ServeReport {
            receipts,
            metrics: state.metrics.snapshot(),
            connections_dropped,
        }
    }
}

/// The answer to a connection refused at `limits.connections_count_max`:
/// no request was read, so no receipt (the refusal is counted in
/// `metanode_cage_connections_refused_total`) and no date.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    content-type: text/plain; charset=utf-8\r\nretry-after: 1\r\ncontent-length: 21\r\n\
    connection: close\r\n\r\n503 connection_limit\n";

/// One worker: accepts on its listener and serves each connection in its
/// own task until told to stop, then drains; returns how many connections
/// were still open when the drain time ran out.
async fn worker(
    listener: std::net::TcpListener,
    state: Arc<State>,
    tls: Option<TlsAcceptor>,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> u32 {
    let listener = match crate::client::Listener::new(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cage worker cannot use its listener");
            return 0;
        }
    };
    let local = Arc::new(WorkerLocal {
        pool: UpstreamPool::new(&state.config),
        // One verifier per worker: its batches run on the worker's core.
        verifier: Verifier::spawn(),
        spares: Spares::default(),
        live: Live::default(),
    });
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Out of descriptors or memory: back off instead of
                // spinning. Anything else concerns that one connection.
                let resources = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                if resources {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        let accepted_at = Instant::now();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            state.metrics.connection_refused();
            // A plain client learns why and when to come back; a TLS one
            // would read the answer as garbage, so it only sees the close.
            if tls.is_none() {
                stream.refuse(BUSY_RESPONSE, REFUSED_DRAIN_BYTES_MAX);
            }
            continue;
        };
        state.metrics.connection_accepted();
        let state = state.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        let live = Live::enter(&local);
        // Boxed where it is made: the connection future is large (its
        // request path state), and spawning moves it by value through
        // several calls, a full copy each time, per connection.
        tokio::spawn(Box::pin(async move {
            let local = &live.0;
            let shared = Shared {
                state: &state,
                pool: &local.pool,
                verifier: &local.verifier,
                spares: &local.spares,
            };
            match tls {
                None => serve_connection(shared, stream, peer, accepted_at, stop).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        state.config.timeouts.header_read(),
                        acceptor.accept(stream),
                    )
                    .await;
                    match handshake {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(shared, tls_stream, peer, accepted_at, stop).await
                        }
                        _ => state.metrics.tls_handshake_failed(),
                    }
                }
            }
            state.metrics.connection_closed();
            drop(slot);
            drop(live);
        }));
    }
    drop(listener);
    let drained = tokio::time::timeout(
        Duration::from_millis(SHUTDOWN_DRAIN_MS_MAX),
        local.live.drained(),
    )
    .await;
    match drained {
        Ok(()) => 0,
        Err(_) => local.live.count(),
    }
}

/// What a worker's connections share, only ever used on the worker's
/// thread; one `Arc` per connection task holds all of it.
struct WorkerLocal {
    pool: UpstreamPool,
    verifier: Verifier,
    spares: Spares,
    live: Live,
}

/// How many connection tasks a worker has, so it can wait for them to
/// finish at shutdown. A `JoinSet` did this with a lock and list entry per
/// task, maintained on every spawn and finish, and its handles were never
/// otherwise used.
#[derive(Default)]
struct Live {
    count: AtomicUsize,
    none_left: tokio::sync::Notify,
}

/// One live connection task: counted from spawn until dropped (finished,
/// panicked or cancelled with the runtime).
struct LiveTask(Arc<WorkerLocal>);

impl Live {
    fn enter(local: &Arc<WorkerLocal>) -> LiveTask {
        local.live.count.fetch_add(1, Ordering::Relaxed);
        LiveTask(local.clone())
    }

    fn count(&self) -> u32 {
        u32::try_from(self.count.load(Ordering::Acquire)).unwrap_or(u32::MAX)
    }

    /// Returns once no connection task is left. `notify_one` keeps a
    /// permit when nobody waits yet, so a task finishing between the
    /// count's load and the wait is not missed.
    async fn drained(&self) {
        while self.count.load(Ordering::Acquire) > 0 {
            self.none_left.notified().await;
        }
    }
}

impl Drop for LiveTask {
    fn drop(&mut self) {
        let live = &self.0.live;
        if live.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            live.none_left.notify_one();
        }
    }
}

/// Binds and serves until `shutdown`; see [`Server`].
pub async fn serve(
    config: CageConfig,
    policy: PolicyHandle,
    signing_key: SigningKey,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<ServeReport, ServeError> {
    let server = Server::bind(config, policy, signing_key).await?;
    Ok(server.run(shutdown).await)
}

// ---------------------------------------------------------------- connection

/// How waiting for a request head ended.
enum HeadRead {
    Ready,
    /// Peer closed, read error, idle timeout or shutdown: close quietly.
    Closed,
    /// Slowloris: the head did not complete within the header timeout.
    Timeout {
        bytes_seen: bool,
    },
    Malformed(HeadError),
}

/// A dedicated keep-alive connection to one route's upstream.
struct Upstream {
    stream: TcpStream,
    buf: BytesMut,
    route: usize,
    idle_since: Instant,
}

/// Idle upstream connections of one worker: a client connection that ends
/// leaves its upstream connection here for the next one, so clients that
/// open a connection per request do not cost an upstream connect each.
/// Only the worker's own thread uses it (its sockets belong to the worker's
/// runtime), so the lock is never contended.
struct UpstreamPool {
    idle: parking_lot::Mutex<Vec<Upstream>>,
    idle_count_max: usize,
    idle_timeout: Duration,
}

impl UpstreamPool {
    fn new(config: &CageConfig) -> Self {
        UpstreamPool {
            idle: parking_lot::Mutex::new(Vec::new()),
            idle_count_max: config.limits.upstream_idle_connections_per_host as usize,
            idle_timeout: config.timeouts.upstream_idle(),
        }
    }

    fn fresh(&self, up: &Upstream, now: Instant) -> bool {
        now.saturating_duration_since(up.idle_since) < self.idle_timeout
    }

    /// Keeps `up` if it is clean (no unread bytes) and there is room.
    /// Parked connections form a stack (most recent last), so the oldest
    /// is first: when it has gone stale, the stale ones are closed.
    fn put(&self, up: Option<Upstream>, now: Instant) {
        let Some(up) = up else { return };
        if !up.buf.is_empty() || !self.fresh(&up, now) {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.first().is_some_and(|u| !self.fresh(u, now)) {
            idle.retain(|u| self.fresh(u, now));
        }
        if idle.len() < self.idle_count_max {
            idle.push(up);
        }
    }

    /// The most recently parked connection to `route` that is not too old
    /// (stale ones met on the way are closed).
    fn take(&self, route: usize, now: Instant) -> Option<Upstream> {
        let mut idle = self.idle.lock();
        loop {
            let at = idle.iter().rposition(|u| u.route == route)?;
            let up = idle.remove(at);
            if self.fresh(&up, now) {
                return Some(up);
            }
        }
    }
}

/// A wait that ran past its deadline.
struct Elapsed;

/// The one timer of a connection, shared by all its waits (request head,
/// body, upstream, linger). A tokio timeout per wait registers a timer entry
/// and removes it again on every request; this timer stays registered and
/// is re-armed lazily: it is armed at most `horizon` (the shortest
/// configured timeout) ahead, so a later wait, whose deadline is at least
/// that far out, finds it armed early enough and changes nothing. When it
/// fires before the current wait's deadline it is moved on.
struct ConnTimer {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: Instant,
    horizon: Duration,
}

impl ConnTimer {
    fn new(now: Instant, horizon: Duration) -> Self {
        let armed = now + horizon;
        ConnTimer {
            sleep: Box::pin(tokio::time::sleep_until(armed)),
            armed,
            horizon,
        }
    }

    fn arm(&mut self, at: Instant) {
        self.sleep.as_mut().reset(at);
        self.armed = at;
    }

    /// `fut`'s output, or `Elapsed` once `deadline` has passed.
    async fn limit<F: Future>(&mut self, deadline: Instant, fut: F) -> Result<F::Output, Elapsed> {
        if deadline < self.armed {
            self.arm(deadline);
        }
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(cx) {
                return std::task::Poll::Ready(Ok(v));
            }
            while self.sleep.as_mut().poll(cx).is_ready() {
                if self.armed >= deadline {
                    return std::task::Poll::Ready(Err(Elapsed));
                }
                // Fired for an earlier, shorter wait: move on towards this
                // one's deadline.
                let now = Instant::now();
                if now >= deadline {
                    return std::task::Poll::Ready(Err(Elapsed));
                }
                self.arm(deadline.min(now + self.horizon));
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// Where a body is: a range of a read buffer, or decoded into a vector.
#[derive(Clone)]
enum BodyAt {
    Buf(Range<usize>),
    Decoded,
}

/// Why the upstream exchange failed.
enum UpstreamError {
    Connect,
    /// Broken before or while sending/receiving; `received`: some response
    /// bytes had arrived (a retry could duplicate the request).
    Request {
        received: bool,
    },
    BadResponse,
    ResponseBody,
    TooLarge,
}

/// A forwarded response, its head in `Upstream::buf`.
struct Forwarded {
    body: BodyAt,
    /// Bytes of `Upstream::buf` the response used.
    consumed: usize,
}

/// What the request path decided.
enum Outcome {
    Refuse {
        decision: Decision,
        status: StatusCode,
        detail: String,
    },
    Forward(Forwarded),
}

fn refuse(decision: Decision, status: StatusCode, detail: impl Into<String>) -> Outcome {
    Outcome::Refuse {
        decision,
        status,
        detail: detail.into(),
    }
}

/// What the receipt needs from the request, gathered along the way.
struct RequestFacts {
    /// When the head was complete (the one clock read the decisions use).
    started: Instant,
    time_unix_ms: u64,
    policy_version: u64,
    policy_digest: [u8; 32],
    key_id: Option<String>,
    body_blake3: Option<Hash32>,
    is_head: bool,
}

/// What a connection shares with its worker.
#[derive(Clone, Copy)]
struct Shared<'a> {
    state: &'a State,
    pool: &'a UpstreamPool,
    verifier: &'a Verifier,
    spares: &'a Spares,
}

/// One client connection and its buffers, reused across its requests.
struct Conn<'a, S> {
    state: &'a State,
    pool: &'a UpstreamPool,
    verifier: &'a Verifier,
    stream: S,
    peer_ip: IpAddr,
    /// `x-forwarded-for` text of `peer_ip`, formatted once.
    peer_ip_text: String,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    head: RequestHead,
    resp: ResponseHead,
    /// A decoded chunked request body.
    req_body: Vec<u8>,
    /// The request hash input ([`RequestHashInput`]), reused.
    req_hash_input: Vec<u8>,
    /// A decoded chunked upstream body.
    up_body: Vec<u8>,
    /// The header map signature and digest checks read, kept between
    /// requests for its capacity (empty between them).
    sig_headers: Option<HeaderMap>,
    upstream: Option<Upstream>,
    dates: DateCache,
    /// This connection's snapshot of the BISO policy, with its generation.
    policy: (u64, Arc<CompiledPolicy>),
    last_activity: Instant,
    timer: ConnTimer,
    /// Shutdown requested (read without registering a waiter).
    stop: watch::Receiver<bool>,
    /// Completes on shutdown; made once per connection and polled while
    /// waiting for a request head, so a request does not register and
    /// unregister a waiter on the shutdown signal.
    stopping: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
}

async fn serve_connection<S>(
    shared: Shared<'_>,
    stream: S,
    peer: SocketAddr,
    accepted_at: Instant,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + LastWrite,
{
    let Shared {
        state,
        pool,
        verifier,
        spares,
    } = shared;
    let peer_ip = peer.ip().to_canonical();
    let ConnBuffers {
        rbuf,
        wbuf,
        request_headers,
        response_headers,
        req_body,
        req_hash_input,
        up_body,
        mut peer_ip_text,
    } = spares.take();
    {
        use std::fmt::Write as _;
        let _ = write!(peer_ip_text, "{peer_ip}");
    }
    let mut c = Conn {
        state,
        pool,
        verifier,
        stream,
        peer_ip,
        peer_ip_text,
        rbuf,
        wbuf,
        head: RequestHead {
            headers: request_headers,
            ..RequestHead::default()
        },
        resp: ResponseHead {
            headers: response_headers,
            ..ResponseHead::default()
        },
        req_body,
        req_hash_input,
        up_body,
        sig_headers: None,
        upstream: None,
        dates: DateCache::default(),
        policy: (state.policy.generation(), state.policy.current()),
        last_activity: accepted_at,
        timer: ConnTimer::new(accepted_at, state.config.timeouts.shortest()),
        stop,
        stopping: None,
    };
    let mut first = true;
    loop {
        match c.read_head(first.then_some(accepted_at)).await {
            HeadRead::Ready => {}
            HeadRead::Closed => {
                pool.put(c.upstream.take(), Instant::now());
                c.recycle(spares);
                return;
            }
            HeadRead::Timeout { bytes_seen } => {
                state.metrics.header_timeout();
                pool.put(c.upstream.take(), Instant::now());
                c.recycle(spares);
                // Close first: the receipt pipeline may make us wait.
                drop(c.stream);
                if bytes_seen {
                    state
                        .record_head_failure(
                            peer_ip,
                            Decision::HeaderReadTimeout,
                            StatusCode::REQUEST_TIMEOUT,
                            "request head incomplete",
                            None,
                        )
                        .await;
                }
                return;
            }
            HeadRead::Malformed(e) => {
                c.malformed(e).await;
                c.recycle(spares);
                return;
            }
        }
        first = false;
        match c.request().await {
            Next::KeepAlive => {}
            Next::Close => {
                pool.put(c.upstream.take(), Instant::now());
                c.recycle(spares);
                return;
            }
            Next::Linger => {
                pool.put(c.upstream.take(), Instant::now());
                c.linger().await;
                c.recycle(spares);
                return;
            }
        }
    }
}

/// What happens to the connection after a response.
enum Next {
    KeepAlive,
    Close,
    /// Close after reading off what the client still sends (its unread body).
    Linger,
}

fn is_idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"PUT" | b"DELETE" | b"TRACE"
    )
}

/// BLAKE3 of the empty string (bodiless requests and responses are the
/// common case; hash it once).
fn empty_hash() -> Hash32 {
    static EMPTY: std::sync::LazyLock<Hash32> = std::sync::LazyLock::new(|| blake3_256(b""));
    *EMPTY
}

/// BLAKE3 of a body.
fn body_hash(body: &[u8]) -> Hash32 {
    if body.is_empty() {
        empty_hash()
    } else {
        blake3_256(body)
    }
}

fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads at least one byte more into `buf`; Ok(false) at EOF.
async fn read_more<R: AsyncRead + Unpin>(stream: &mut R, buf: &mut BytesMut) -> io::Result<bool> {
    if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 2 {
        buf.reserve(READ_CHUNK_BYTES);
    }
    Ok(stream.read_buf(buf).await? > 0)
}

impl<S> Conn<'_, S> {
    /// Hands the connection's buffers to its worker for a later connection
    /// (the connection reads and writes nothing more).
    fn recycle(&mut self, spares: &Spares) {
        use std::mem::take;
        spares.put(ConnBuffers {
            rbuf: take(&mut self.rbuf),
            wbuf: take(&mut self.wbuf),
            request_headers: take(&mut self.head.headers),
            response_headers: take(&mut self.resp.headers),
            req_body: take(&mut self.req_body),
            req_hash_input: take(&mut self.req_hash_input),
            up_body: take(&mut self.up_body),
            peer_ip_text: take(&mut self.peer_ip_text),
        });
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + LastWrite> Conn<'_, S> {
    /// Waits for a complete request head. `first`: the connection's
    /// accept time (the header clock runs from it); later heads start their
    /// clock at their first byte and are bounded by the idle timeout before.
    async fn read_head(&mut self, first: Option<Instant>) -> HeadRead {
        let timeouts = &self.state.config.timeouts;
        let mut head_deadline = first.map(|accepted| accepted + timeouts.header_read());
        loop {
            if !self.rbuf.is_empty() {
                match h1::parse_request(&self.rbuf, &mut self.head) {
                    Ok(Some(())) => return HeadRead::Ready,
                    // Part of a head: its clock starts now (at its first
                    // bytes), read only when a head does not come whole.
                    Ok(None) if head_deadline.is_none() => {
                        head_deadline = Some(Instant::now() + timeouts.header_read());
                    }
                    Ok(None) => {}
                    Err(e) => return HeadRead::Malformed(e),
                }
            }
            let deadline = head_deadline.unwrap_or(self.last_activity + timeouts.idle());
            let read = if self.rbuf.is_empty() {
                let stopping = self.stopping.get_or_insert_with(|| {
                    let mut stop = self.stop.clone();
                    Box::pin(async move {
                        // An error means the sender is gone: stopping too.
                        let _ = stop.changed().await;
                    })
                });
                tokio::select! {
                    biased;
                    r = self.timer.limit(deadline, read_more(&mut self.stream, &mut self.rbuf)) => r,
                    () = stopping.as_mut() => return HeadRead::Closed,
                }
            } else {
                self.timer
                    .limit(deadline, read_more(&mut self.stream, &mut self.rbuf))
                    .await
            };
            match read {
                Err(Elapsed) if head_deadline.is_some() => {
                    return HeadRead::Timeout {
                        bytes_seen: !self.rbuf.is_empty(),
                    };
                }
                Err(Elapsed) => {
                    self.state.metrics.idle_close();
                    return HeadRead::Closed;
                }
                Ok(Ok(true)) => {}
                Ok(Ok(false) | Err(_)) => return HeadRead::Closed,
            }
        }
    }

    /// Answers a malformed head (400/431) and records its receipt.
    async fn malformed(&mut self, e: HeadError) {
        let status = e.status();
        let text = format!(
            "{} {}: {e}\n",
            status.as_u16(),
            Decision::MalformedRequest.name()
        );
        self.wbuf.clear();
        self.refusal_head(status, text.len(), true);
        self.wbuf.extend_from_slice(text.as_bytes());
        let _ = self.write_out().await;
        let _ = self.stream.shutdown().await;
        self.state
            .record_head_failure(
                self.peer_ip,
                Decision::MalformedRequest,
                status,
                &e.to_string(),
                Some(blake3_256(text.as_bytes())),
            )
            .await;
    }

    /// Half-closes, then discards what the client still sends (bounded).
    async fn linger(&mut self) {
        let _ = self.stream.shutdown().await;
        let deadline = Instant::now() + Duration::from_millis(LINGER_MS);
        let mut discarded = 0usize;
        while discarded < LINGER_BYTES_MAX {
            self.rbuf.clear();
            match self
                .timer
                .limit(deadline, read_more(&mut self.stream, &mut self.rbuf))
                .await
            {
                Ok(Ok(true)) => discarded += self.rbuf.len(),
                _ => break,
            }
        }
    }

    async fn write_out(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.wbuf).await?;
        self.stream.flush().await?;
        self.last_activity = Instant::now();
        Ok(())
    }

    /// Serves the request whose head is in `self.head`.
    async fn request(&mut self) -> Next {
        let state = self.state;
        let buf = &self.rbuf[..];
        let head = &self.head;
        let method = buf.get(head.method.clone()).unwrap_or_default();
        let target = buf.get(head.target.clone()).unwrap_or_default();
        let is_head = method == b"HEAD";
        // Origin form (the common case) needs no URI parse.
        let absolute: Option<Uri> = if target.starts_with(b"/") {
            None
        } else {
            Uri::try_from(target).ok()
        };
        let host_text = || {
            head.headers
                .iter()
                .find(|h| h.kind == HeaderKind::Host)
                .and_then(|h| buf.get(h.value.clone()))
                .filter(|v| v.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b)))
                .and_then(|v| std::str::from_utf8(v).ok())
                .unwrap_or_default()
        };
        let method_text = std::str::from_utf8(method).unwrap_or_default();
        let target_text = std::str::from_utf8(target).unwrap_or_default();
        let (authority, path_and_query, path) = match &absolute {
            None => {
                let path = target_text.split_once('?').map_or(target_text, |(p, _)| p);
                (host_text(), target_text, path)
            }
            Some(uri) => (
                uri.authority().map_or_else(host_text, |a| a.as_str()),
                uri.path_and_query().map_or(uri.path(), |pq| pq.as_str()),
                uri.path(),
            ),
        };
        state.policy.refresh(&mut self.policy);
        RequestHashInput::start(
            &mut self.req_hash_input,
            method_text,
            authority,
            path_and_query,
        );
        let mut facts = RequestFacts {
            started: Instant::now(),
            time_unix_ms: now_unix_ms(),
            policy_version: self.policy.1.version,
            policy_digest: self.policy.1.policy_digest,
            key_id: None,
            body_blake3: None,
            is_head,
        };
        let route = state.route(path);
        let upstream_target: Option<Vec<u8>> = absolute.as_ref().map(|uri| {
            uri.path_and_query()
                .map_or("/", |pq| pq.as_str())
                .as_bytes()
                .to_vec()
        });
        let bad_target = !target.starts_with(b"/") && absolute.is_none() && target != b"*";
        let outcome = if !state.receipts.is_healthy() {
            refuse(
                Decision::ReceiptsUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "receipt writer failed",
            )
        } else if bad_target {
            refuse(
                Decision::MalformedRequest,
                StatusCode::BAD_REQUEST,
                "request target",
            )
        } else {
            self.decide(route, upstream_target.as_deref(), &mut facts)
                .await
        };
        self.respond(facts, outcome).await
    }

    async fn decide(
        &mut self,
        route: Option<usize>,
        upstream_target: Option<&[u8]>,
        facts: &mut RequestFacts,
    ) -> Outcome {
        let state = self.state;
        let now = facts.started.into_std();
        let client_ip = self.peer_ip;
        // 1. BISO light of the client address.
        let policy = &self.policy.1;
        let rule = *policy.lookup(client_ip);
        match rule.verdict {
            Verdict::Red => {
                return refuse(
                    Decision::RedLight,
                    StatusCode::FORBIDDEN,
                    policy.reason(&rule),
                );
            }
            Verdict::Yellow => {
                let rate = Rate {
                    rate_per_s: rule.rate.rate_per_s,
                    burst: rule.rate.burst,
                };
                if !state.yellow.try_take(&client_ip, rate, now) {
                    return refuse(
                        Decision::YellowOverBudget,
                        StatusCode::TOO_MANY_REQUESTS,
                        policy.reason(&rule),
                    );
                }
            }
            Verdict::Green => {}
        }
        // 2. Per-IP limit.
        if let Some((rate, buckets)) = &state.per_ip
            && !buckets.try_take(&client_ip, *rate, now)
        {
            return refuse(
                Decision::IpRateLimited,
                StatusCode::TOO_MANY_REQUESTS,
                "per_ip",
            );
        }
        // 3. Route.
        let Some(route_index) = route else {
            return refuse(Decision::NoRoute, StatusCode::NOT_FOUND, "");
        };
        let Some(route) = state.routes.get(route_index) else {
            return refuse(Decision::NoRoute, StatusCode::NOT_FOUND, "");
        };
        // 4. Signature, or the route's unsigned policy. Only signed
        // requests (and content digests) need a header map.
        let signed = self.head.signed;
        let mut covers_digest = false;
        let mut header_map: Option<HeaderMap> = None;
        if signed {
            let map = self.sig_headers.take().unwrap_or_default();
            let parts = match request_parts(&self.rbuf, &self.head, map) {
                Ok(p) => p,
                Err(reason) => {
                    return refuse(Decision::SignatureRejected, StatusCode::BAD_REQUEST, reason);
                }
            };
            let now_s = now_unix_s();
            let verified = match metanode_httpsig::prepare_request(
                &parts,
                &state.keys,
                &state.verify_policy,
                &state.replay,
                now_s,
            ) {
                Ok(pending) => match self.verifier.check(pending).await {
                    Ok(checked) => checked.and_then(|c| c.record_nonce(&state.replay, now_s)),
                    Err(gone) => {
                        return refuse(
                            Decision::SignatureRejected,
                            StatusCode::SERVICE_UNAVAILABLE,
                            gone,
                        );
                    }
                },
                Err(e) => Err(e),
            };
            match verified {
                Ok(verified) => {
                    covers_digest = verified.covered.iter().any(|c| c == "content-digest");
                    facts.key_id = Some(verified.key_id);
                }
                Err(e) => {
                    return refuse(Decision::SignatureRejected, e.status(), e.code());
                }
            }
            header_map = Some(parts.headers);
        } else if route.unsigned == UnsignedPolicy::Reject {
            return refuse(
                Decision::UnsignedRejected,
                StatusCode::UNAUTHORIZED,
                "signature required",
            );
        }
        // 5. Per-key limit.
        if let (Some((rate, buckets)), Some(key_id)) = (&state.per_key, &facts.key_id)
            && !buckets.try_take(key_id, *rate, now)
        {
            return refuse(
                Decision::KeyRateLimited,
                StatusCode::TOO_MANY_REQUESTS,
                "per_key",
            );
        }
        // 6. Body, bounded in size and time.
        let body_max = state.config.limits.body_size_bytes_max;
        let framing = self.head.framing.unwrap_or(Framing::Empty);
        if let Framing::Length(n) = framing
            && n > body_max
        {
            return refuse(
                Decision::BodyTooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                "content-length",
            );
        }
        let body_at = match self.read_body(framing, body_max).await {
            Ok(b) => b,
            Err(refusal) => return refusal,
        };
        let body: &[u8] = match &body_at {
            BodyAt::Buf(r) => self.rbuf.get(r.clone()).unwrap_or_default(),
            BodyAt::Decoded => &self.req_body,
        };
        facts.body_blake3 = Some(body_hash(body));
        // 7. Content-Digest binds the body to the signature.
        let has_digest = self
            .head
            .headers
            .iter()
            .any(|h| h.kind == HeaderKind::ContentDigest);
        if has_digest {
            let headers = match header_map {
                Some(h) => h,
                None => match request_parts(
                    &self.rbuf,
                    &self.head,
                    self.sig_headers.take().unwrap_or_default(),
                ) {
                    Ok(p) => p.headers,
                    Err(reason) => {
                        return refuse(Decision::DigestMismatch, StatusCode::BAD_REQUEST, reason);
                    }
                },
            };
            if let Err(e) = metanode_httpsig::digest::verify_content_digest_headers(&headers, body)
            {
                // Signed: the signature no longer binds the body, an
                // authentication failure. Unsigned: a broken request.
                let status = if signed {
                    StatusCode::UNAUTHORIZED
                } else {
                    e.status()
                };
                return refuse(Decision::DigestMismatch, status, e.code());
            }
            if signed && !body.is_empty() && !covers_digest {
                return refuse(
                    Decision::DigestNotCovered,
                    StatusCode::UNAUTHORIZED,
                    "content-digest not covered by the signature",
                );
            }
            self.sig_headers = Some(cleared(headers));
        } else if signed && !body.is_empty() {
            // httpsig already requires the digest when the head declares a
            // body; this catches a body the head did not announce.
            return refuse(
                Decision::DigestNotCovered,
                StatusCode::UNAUTHORIZED,
                "body without content-digest",
            );
        } else if let Some(headers) = header_map {
            self.sig_headers = Some(cleared(headers));
        }
        // 8. Upstream.
        self.upstream_request(route_index, upstream_target, &body_at, facts);
        let started = Instant::now();
        let idempotent = is_idempotent(self.rbuf.get(self.head.method.clone()).unwrap_or_default());
        let exchange = exchange(
            Exchange {
                state,
                pool: self.pool,
                upstream: &mut self.upstream,
                request: &self.wbuf,
                resp: &mut self.resp,
                body_out: &mut self.up_body,
                now: started,
            },
            route_index,
            facts.is_head,
            idempotent,
        );
        let result = self
            .timer
            .limit(started + state.config.timeouts.upstream(), exchange)
            .await;
        state.metrics.upstream_latency(started.elapsed());
        let authority = route.authority.as_str();
        match result {
            Err(_) => {
                // The connection is mid-exchange: never reuse it.
                self.upstream = None;
                refuse(
                    Decision::UpstreamTimeout,
                    StatusCode::GATEWAY_TIMEOUT,
                    authority,
                )
            }
            Ok(Ok(forwarded)) => Outcome::Forward(forwarded),
            Ok(Err(e)) => {
                self.upstream = None;
                match e {
                    UpstreamError::TooLarge => refuse(
                        Decision::UpstreamResponseTooLarge,
                        StatusCode::BAD_GATEWAY,
                        authority,
                    ),
                    UpstreamError::Connect => refuse(
                        Decision::UpstreamFailed,
                        StatusCode::BAD_GATEWAY,
                        format!("connect {authority}"),
                    ),
                    UpstreamError::Request { .. } => refuse(
                        Decision::UpstreamFailed,
                        StatusCode::BAD_GATEWAY,
                        format!("request {authority}"),
                    ),
                    UpstreamError::BadResponse => refuse(
                        Decision::UpstreamFailed,
                        StatusCode::BAD_GATEWAY,
                        format!("response {authority}"),
                    ),
                    UpstreamError::ResponseBody => refuse(
                        Decision::UpstreamFailed,
                        StatusCode::BAD_GATEWAY,
                        format!("response_body {authority}"),
                    ),
                }
            }
        }
    }

    /// Reads the request body (after the head in `rbuf`), within the body
    /// timeout and size limit.
    async fn read_body(&mut self, framing: Framing, body_max: u64) -> Result<BodyAt, Outcome> {
        let start = self.head.len;
        if framing == Framing::Empty || framing == Framing::Close {
            return Ok(BodyAt::Buf(start..start));
        }
        if self.head.expect_continue && self.head.minor_version == 1 && self.rbuf.len() == start {
            self.wbuf.clear();
            self.wbuf
                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            if self.write_out().await.is_err() {
                return Err(refuse(
                    Decision::BodyReadFailed,
                    StatusCode::BAD_REQUEST,
                    "connection lost",
                ));
            }
        }
        let deadline = Instant::now() + self.state.config.timeouts.body_read();
        let timed_out = || refuse(Decision::BodyReadTimeout, StatusCode::REQUEST_TIMEOUT, "");
        let lost = || {
            refuse(
                Decision::BodyReadFailed,
                StatusCode::BAD_REQUEST,
                "connection closed before the body was complete",
            )
        };
        match framing {
            Framing::Length(n) => {
                let end = start.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
                while self.rbuf.len() < end {
                    self.rbuf.reserve(end - self.rbuf.len());
                    match self
                        .timer
                        .limit(deadline, self.stream.read_buf(&mut self.rbuf))
                        .await
                    {
                        Err(_) => return Err(timed_out()),
                        Ok(Ok(0) | Err(_)) => return Err(lost()),
                        Ok(Ok(_)) => {}
                    }
                }
                Ok(BodyAt::Buf(start..end))
            }
            _ => {
                let mut decoder = ChunkedDecoder::default();
                self.req_body.clear();
                let raw_max = body_max
                    .saturating_mul(CHUNKED_OVERHEAD_FACTOR)
                    .saturating_add(REQUEST_HEAD_BUF_BYTES_MAX as u64);
                let mut pos = start;
                loop {
                    let input = self.rbuf.get(pos..).unwrap_or_default();
                    match decoder.decode(input, &mut self.req_body, body_max) {
                        Ok(used) => pos += used,
                        Err(h1::ChunkError::TooLarge { .. }) => {
                            return Err(refuse(
                                Decision::BodyTooLarge,
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "body",
                            ));
                        }
                        Err(e) => {
                            return Err(refuse(
                                Decision::BodyReadFailed,
                                StatusCode::BAD_REQUEST,
                                e.to_string(),
                            ));
                        }
                    }
                    if decoder.is_done() {
                        // The raw body ends where the decoder stopped.
                        self.head.framing = Some(Framing::Length((pos - start) as u64));
                        return Ok(BodyAt::Decoded);
                    }
                    if (pos - start) as u64 > raw_max {
                        return Err(refuse(
                            Decision::BodyTooLarge,
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "chunked framing",
                        ));
                    }
                    match self
                        .timer
                        .limit(deadline, read_more(&mut self.stream, &mut self.rbuf))
                        .await
                    {
                        Err(_) => return Err(timed_out()),
                        Ok(Ok(false) | Err(_)) => return Err(lost()),
                        Ok(Ok(true)) => {}
                    }
                }
            }
        }
    }

    /// Writes the upstream request (head and body) into `wbuf`.
    fn upstream_request(
        &mut self,
        route_index: usize,
        upstream_target: Option<&[u8]>,
        body_at: &BodyAt,
        facts: &RequestFacts,
    ) {
        let buf = &self.rbuf[..];
        let head = &self.head;
        let out = &mut self.wbuf;
        out.clear();
        let method = buf.get(head.method.clone()).unwrap_or_default();
        out.extend_from_slice(method);
        out.push(b' ');
        out.extend_from_slice(
            upstream_target.unwrap_or_else(|| buf.get(head.target.clone()).unwrap_or_default()),
        );
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let connection_options = head.connection_options;
        let mut has_host = false;
        let mut prior_forwarded_for: Option<&[u8]> = None;
        for h in &head.headers {
            match h.kind {
                HeaderKind::ContentLength | HeaderKind::KeyId | HeaderKind::Expect => continue,
                HeaderKind::XForwardedFor => {
                    prior_forwarded_for = prior_forwarded_for.or_else(|| buf.get(h.value.clone()));
                    continue;
                }
                HeaderKind::Host => has_host = true,
                _ => {}
            }
            if h1::forwarded(buf, &head.headers, h, connection_options) {
                h1::put_header(
                    out,
                    buf.get(h.name.clone()).unwrap_or_default(),
                    buf.get(h.value.clone()).unwrap_or_default(),
                );
            }
        }
        if !has_host && let Some(route) = self.state.routes.get(route_index) {
            h1::put_header(out, b"host", route.authority.as_str().as_bytes());
        }
        let body: &[u8] = match body_at {
            BodyAt::Buf(r) => buf.get(r.clone()).unwrap_or_default(),
            BodyAt::Decoded => &self.req_body,
        };
        if !body.is_empty() || method == b"POST" || method == b"PUT" {
            out.extend_from_slice(b"content-length: ");
            h1::put_u64(out, body.len() as u64);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(key_id) = &facts.key_id
            && HeaderValue::from_str(key_id).is_ok()
        {
            h1::put_header(out, KEY_ID_HEADER.as_bytes(), key_id.as_bytes());
        }
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(prior) = prior_forwarded_for {
            out.extend_from_slice(prior);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(self.peer_ip_text.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
    }

    /// Turns the outcome into a response, records its receipt and sends it.
    async fn respond(&mut self, facts: RequestFacts, outcome: Outcome) -> Next {
        let state = self.state;
        // What is left of the request on the connection decides reuse.
        let body_unread = !matches!(self.head.framing, Some(Framing::Empty) | None)
            && matches!(outcome, Outcome::Refuse { .. })
            && !self.body_complete();
        // A closed channel (sender gone) also means stopping.
        let stopping = self.stop.has_changed().unwrap_or(true);
        let close = self.head.close || body_unread || stopping;
        let (decision, detail, upstream_status, status, response_hash, text) = match &outcome {
            Outcome::Refuse {
                decision,
                status,
                detail,
            } => {
                let text = if detail.is_empty() {
                    format!("{} {}\n", status.as_u16(), decision.name())
                } else {
                    format!("{} {}: {}\n", status.as_u16(), decision.name(), detail)
                };
                let hash = if facts.is_head {
                    empty_hash()
                } else {
                    blake3_256(text.as_bytes())
                };
                (*decision, detail.as_str(), None, *status, hash, text)
            }
            Outcome::Forward(f) => {
                let body = self.upstream_body(&f.body);
                let hash = if facts.is_head {
                    empty_hash()
                } else {
                    body_hash(body)
                };
                let status =
                    StatusCode::from_u16(self.resp.status).unwrap_or(StatusCode::BAD_GATEWAY);
                (
                    Decision::Forwarded,
                    "",
                    Some(self.resp.status),
                    status,
                    hash,
                    String::new(),
                )
            }
        };
        let receipt = ReceiptView {
            time_unix_ms: facts.time_unix_ms,
            client_ip: self.peer_ip,
            key_id: facts
                .key_id
                .as_deref()
                .map(|k| truncate_utf8(k, crate::limits::KEY_ID_LEN_BYTES_MAX)),
            request_hash: RequestHashInput::finish(
                &mut self.req_hash_input,
                facts.body_blake3.as_ref(),
            ),
            decision,
            detail: truncate_utf8(detail, RECEIPT_DETAIL_LEN_BYTES_MAX),
            status: status.as_u16(),
            upstream_status,
            response_hash,
            policy_version: facts.policy_version,
            policy_digest: facts.policy_digest,
        };
        state.metrics.request(decision);
        let ticket = match state.receipts.record(receipt).await {
            Ok(ticket) => ticket,
            Err(e) => {
                // Fail closed: a response whose receipt is lost is not sent.
                tracing::error!(error = %e, "cannot record receipt");
                let text = b"503 receipts_unavailable\n";
                self.wbuf.clear();
                self.refusal_head(StatusCode::SERVICE_UNAVAILABLE, text.len(), true);
                self.wbuf.extend_from_slice(text);
                let _ = self.write_out().await;
                return if body_unread {
                    Next::Linger
                } else {
                    Next::Close
                };
            }
        };
        let receipt_header = state
            .config
            .receipts
            .response_header
            .then(|| ticket.header_value());
        self.wbuf.clear();
        match &outcome {
            Outcome::Refuse { status, .. } => {
                self.refusal_head(*status, text.len(), close);
                if let Some(v) = &receipt_header {
                    // Insert before the blank line ending the head.
                    self.wbuf.truncate(self.wbuf.len() - 2);
                    h1::put_header(&mut self.wbuf, RECEIPT_HEADER.as_bytes(), v.as_bytes());
                    self.wbuf.extend_from_slice(b"\r\n");
                }
                if !facts.is_head {
                    self.wbuf.extend_from_slice(text.as_bytes());
                }
            }
            Outcome::Forward(f) => {
                self.forwarded_head(&f.body, receipt_header.as_deref(), close);
                let Some(up) = &self.upstream else {
                    return Next::Close;
                };
                let body: &[u8] = match &f.body {
                    BodyAt::Buf(r) => up.buf.get(r.clone()).unwrap_or_default(),
                    BodyAt::Decoded => &self.up_body,
                };
                self.wbuf.extend_from_slice(body);
            }
        }
        // The request (head and raw body) in the read buffer; anything past
        // it is the client's next request or stray bytes.
        let consumed = match self.head.framing {
            Some(Framing::Length(n)) => self.head.len + n as usize,
            _ => self.head.len,
        };
        // Closing with bytes the client sent still unread would make
        // close(2) reset the connection, which can take the response with
        // it (RFC 9112 §9.6): linger instead, as nginx does.
        let sent_past_request = self.rbuf.len() > consumed;
        let linger = body_unread || sent_past_request;
        if close && !linger {
            // Nothing follows this response but close(2): its last bytes
            // can wait for the FIN and leave in one segment with it.
            self.stream.last_write();
        }
        let written = self.write_out().await;
        // Done with the upstream response: keep or drop its connection.
        if let Outcome::Forward(f) = &outcome {
            // Kept only when the response used up every byte the upstream sent: anything past
            // it (a body after a HEAD, 204 or 304 answer, or junk) would be parsed as the next
            // response on this connection.
            let last_activity = self.last_activity;
            let keep_upstream = !self.resp.close
                && self.upstream.as_mut().is_some_and(|up| {
                    up.buf.advance(f.consumed.min(up.buf.len()));
                    up.idle_since = last_activity;
                    up.buf.is_empty()
                });
            if !keep_upstream {
                self.upstream = None;
            }
        }
        if written.is_err() {
            return Next::Close;
        }
        if close {
            return if linger { Next::Linger } else { Next::Close };
        }
        self.rbuf.advance(consumed.min(self.rbuf.len()));
        Next::KeepAlive
    }

    /// The whole request body is in `rbuf` (or was decoded).
    fn body_complete(&self) -> bool {
        match self.head.framing {
            Some(Framing::Length(n)) => self.rbuf.len() as u64 >= self.head.len as u64 + n,
            Some(Framing::Chunked) => false,
            _ => true,
        }
    }

    fn upstream_body(&self, at: &BodyAt) -> &[u8] {
        match at {
            BodyAt::Buf(r) => self
                .upstream
                .as_ref()
                .and_then(|u| u.buf.get(r.clone()))
                .unwrap_or_default(),
            BodyAt::Decoded => &self.up_body,
        }
    }

    /// Status line and headers of a response the cage made itself.
    fn refusal_head(&mut self, status: StatusCode, body_len: usize, close: bool) {
        let out = &mut self.wbuf;
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\n");
        if status == StatusCode::TOO_MANY_REQUESTS {
            out.extend_from_slice(b"retry-after: 1\r\n");
        }
        out.extend_from_slice(b"content-length: ");
        h1::put_u64(out, body_len as u64);
        out.extend_from_slice(b"\r\ndate: ");
        out.extend_from_slice(self.dates.get());
        out.extend_from_slice(b"\r\n");
        self.connection_header(close);
        self.wbuf.extend_from_slice(b"\r\n");
    }

    fn connection_header(&mut self, close: bool) {
        if close {
            self.wbuf.extend_from_slice(b"connection: close\r\n");
        } else if self.head.minor_version == 0 {
            self.wbuf.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }

    /// Status line and headers of a forwarded upstream response.
    fn forwarded_head(&mut self, body: &BodyAt, receipt_header: Option<&str>, close: bool) {
        let Some(up) = &self.upstream else {
            return;
        };
        let buf = &up.buf[..];
        let resp = &self.resp;
        let out = &mut self.wbuf;
        out.extend_from_slice(b"HTTP/1.1 ");
        h1::put_u64(out, u64::from(resp.status));
        out.push(b' ');
        match StatusCode::from_u16(resp.status)
            .ok()
            .and_then(|s| s.canonical_reason())
        {
            Some(reason) => out.extend_from_slice(reason.as_bytes()),
            None => out.extend_from_slice(buf.get(resp.reason.clone()).unwrap_or_default()),
        }
        out.extend_from_slice(b"\r\n");
        let bodiless = resp.framing == Some(Framing::Empty);
        let connection_options = resp.connection_options;
        let mut has_date = false;
        for h in &resp.headers {
            let name = buf.get(h.name.clone()).unwrap_or_default();
            match h.kind {
                // A bodiless response (HEAD, 204, 304) keeps the upstream's
                // length; otherwise the cage states the length it sends.
                HeaderKind::ContentLength if !bodiless => continue,
                HeaderKind::Other if name.eq_ignore_ascii_case(RECEIPT_HEADER.as_bytes()) => {
                    continue;
                }
                HeaderKind::Other if name.eq_ignore_ascii_case(b"date") => has_date = true,
                _ => {}
            }
            if h1::forwarded(buf, &resp.headers, h, connection_options) {
                h1::put_header(out, name, buf.get(h.value.clone()).unwrap_or_default());
            }
        }
        if !bodiless {
            let len = match body {
                BodyAt::Buf(r) => r.len(),
                BodyAt::Decoded => self.up_body.len(),
            };
            out.extend_from_slice(b"content-length: ");
            h1::put_u64(out, len as u64);
            out.extend_from_slice(b"\r\n");
        }
        if !has_date {
            out.extend_from_slice(b"date: ");
            out.extend_from_slice(self.dates.get());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(v) = receipt_header {
            h1::put_header(out, RECEIPT_HEADER.as_bytes(), v.as_bytes());
        }
        self.connection_header(close);
        self.wbuf.extend_from_slice(b"\r\n");
    }
}

/// What one upstream exchange works with (fields of the connection, so the
/// connection's timer can bound it).
struct Exchange<'a> {
    state: &'a State,
    pool: &'a UpstreamPool,
    upstream: &'a mut Option<Upstream>,
    request: &'a [u8],
    resp: &'a mut ResponseHead,
    body_out: &'a mut Vec<u8>,
    now: Instant,
}

/// Sends `request` upstream and reads the response. A reused connection
/// that fails before any response byte (the upstream closed it while idle)
/// is retried once on a fresh one for idempotent methods.
async fn exchange(
    x: Exchange<'_>,
    route_index: usize,
    is_head: bool,
    idempotent: bool,
) -> Result<Forwarded, UpstreamError> {
    let state = x.state;
    let response_max = state.config.limits.response_body_size_bytes_max;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let own = x.upstream.take().filter(|u| {
            u.route == route_index
                && x.now.saturating_duration_since(u.idle_since)
                    < state.config.timeouts.upstream_idle()
        });
        // A retry always connects afresh.
        let reusable = match own {
            Some(u) => Some(u),
            None if attempt == 1 => x.pool.take(route_index, x.now),
            None => None,
        };
        let reused = reusable.is_some();
        let mut up = match reusable {
            Some(u) => u,
            None => {
                let route = state
                    .routes
                    .get(route_index)
                    .ok_or(UpstreamError::Connect)?;
                let stream = TcpStream::connect(route.authority.as_str())
                    .await
                    .map_err(|_| UpstreamError::Connect)?;
                let _ = stream.set_nodelay(true);
                Upstream {
                    stream,
                    buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
                    route: route_index,
                    idle_since: x.now,
                }
            }
        };
        match exchange_on(
            &mut up,
            x.request,
            is_head,
            x.resp,
            x.body_out,
            response_max,
        )
        .await
        {
            Ok(forwarded) => {
                *x.upstream = Some(up);
                return Ok(forwarded);
            }
            Err(UpstreamError::Request { received: false })
                if reused && idempotent && attempt == 1 => {}
            Err(e) => return Err(e),
        }
    }
}

/// One request/response exchange on `up` (the request is `request`).
async fn exchange_on(
    up: &mut Upstream,
    request: &[u8],
    is_head: bool,
    resp: &mut ResponseHead,
    body_out: &mut Vec<u8>,
    response_max: u64,
) -> Result<Forwarded, UpstreamError> {
    up.stream
        .write_all(request)
        .await
        .map_err(|_| UpstreamError::Request { received: false })?;
    let mut received = !up.buf.is_empty();
    // Head; interim 1xx responses (100 Continue) are skipped.
    loop {
        if !up.buf.is_empty() {
            match h1::parse_response(&up.buf, is_head, resp) {
                Ok(Some(())) if resp.status == 101 => return Err(UpstreamError::BadResponse),
                Ok(Some(())) if (100..200).contains(&resp.status) => {
                    up.buf.advance(resp.len);
                    continue;
                }
                Ok(Some(())) => break,
                Ok(None) => {}
                Err(_) => return Err(UpstreamError::BadResponse),
            }
        }
        match read_more(&mut up.stream, &mut up.buf).await {
            Ok(true) => received = true,
            Ok(false) | Err(_) => return Err(UpstreamError::Request { received }),
        }
    }
    let start = resp.len;
    match resp.framing.unwrap_or(Framing::Empty) {
        Framing::Empty => Ok(Forwarded {
            body: BodyAt::Buf(start..start),
            consumed: start,
        }),
        Framing::Length(n) => {
            if n > response_max {
                return Err(UpstreamError::TooLarge);
            }
            let end = start.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
            while up.buf.len() < end {
                up.buf.reserve(end - up.buf.len());
                match up.stream.read_buf(&mut up.buf).await {
                    Ok(0) | Err(_) => return Err(UpstreamError::ResponseBody),
                    Ok(_) => {}
                }
            }
            Ok(Forwarded {
                body: BodyAt::Buf(start..end),
                consumed: end,
            })
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::default();
            body_out.clear();
            let raw_max = response_max
                .saturating_mul(CHUNKED_OVERHEAD_FACTOR)
                .saturating_add(REQUEST_HEAD_BUF_BYTES_MAX as u64);
            let mut pos = start;
            loop {
                let input = up.buf.get(pos..).unwrap_or_default();
                match decoder.decode(input, body_out, response_max) {
                    Ok(used) => pos += used,
                    Err(h1::ChunkError::TooLarge { .. }) => return Err(UpstreamError::TooLarge),
                    Err(_) => return Err(UpstreamError::ResponseBody),
                }
                if decoder.is_done() {
                    return Ok(Forwarded {
                        body: BodyAt::Decoded,
                        consumed: pos,
                    });
                }
                if (pos - start) as u64 > raw_max {
                    return Err(UpstreamError::TooLarge);
                }
                match read_more(&mut up.stream, &mut up.buf).await {
                    Ok(true) => {}
                    Ok(false) | Err(_) => return Err(UpstreamError::ResponseBody),
                }
            }
        }
        Framing::Close => loop {
            if (up.buf.len() - start) as u64 > response_max {
                return Err(UpstreamError::TooLarge);
            }
            match read_more(&mut up.stream, &mut up.buf).await {
                Ok(true) => {}
                Ok(false) => {
                    return Ok(Forwarded {
                        body: BodyAt::Buf(start..up.buf.len()),
                        consumed: up.buf.len(),
                    });
                }
                Err(_) => return Err(UpstreamError::ResponseBody),
            }
        },
    }
}

/// `map` emptied, its capacity kept for the next request.
fn cleared(mut map: HeaderMap) -> HeaderMap {
    map.clear();
    map
}

/// The head as `http` types, for signature and digest verification, in
/// `headers` (a map whose capacity is reused; it is cleared first).
///
/// Allocation was ~8 % of a core on the signed path, most of it here: a
/// copy per header value and per unregistered name. The target and the
/// values now share one copy of the head's bytes, and the names the cage
/// already classified are static.
fn request_parts(
    buf: &[u8],
    head: &RequestHead,
    mut headers: HeaderMap,
) -> Result<http::request::Parts, String> {
    let head_bytes = Bytes::copy_from_slice(buf.get(..head.len).unwrap_or_default());
    let part = |range: &Range<usize>| -> Bytes {
        if range.start <= range.end && range.end <= head_bytes.len() {
            head_bytes.slice(range.clone())
        } else {
            Bytes::new()
        }
    };
    let method = Method::from_bytes(head_bytes.get(head.method.clone()).unwrap_or_default())
        .map_err(|e| format!("method: {e}"))?;
    let uri =
        Uri::from_maybe_shared(part(&head.target)).map_err(|e| format!("request target: {e}"))?;
    headers.clear();
    headers.reserve(head.headers.len());
    for h in &head.headers {
        let name = match h.kind {
            HeaderKind::Host => http::header::HOST,
            HeaderKind::ContentLength => http::header::CONTENT_LENGTH,
            HeaderKind::TransferEncoding => http::header::TRANSFER_ENCODING,
            HeaderKind::Signature => HeaderName::from_static("signature"),
            HeaderKind::SignatureInput => HeaderName::from_static("signature-input"),
            HeaderKind::ContentDigest => HeaderName::from_static("content-digest"),
            _ => HeaderName::from_bytes(head_bytes.get(h.name.clone()).unwrap_or_default())
                .map_err(|e| format!("header name: {e}"))?,
        };
        let value = HeaderValue::from_maybe_shared(part(&h.value))
            .map_err(|e| format!("header {name}: {e}"))?;
        headers.append(name, value);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = if head.minor_version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    parts.headers = headers;
    Ok(parts)
}

impl State {
    /// Index of the longest matching route.
    fn route(&self, path: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.matches(path))
    }

    /// A receipt for a request that never got a parsed head (slowloris,
    /// malformed head).
    async fn record_head_failure(
        &self,
        client_ip: IpAddr,
        decision: Decision,
        status: StatusCode,
        detail: &str,
        response_hash: Option<Hash32>,
    ) {
        let policy = self.policy.current();
        let receipt = ReceiptView {
            time_unix_ms: now_unix_ms(),
            client_ip,
            key_id: None,
            request_hash: request_hash("", "", "", None),
            decision,
            detail: truncate_utf8(detail, RECEIPT_DETAIL_LEN_BYTES_MAX),
            status: status.as_u16(),
            upstream_status: None,
            response_hash: response_hash.unwrap_or_else(empty_hash),
            policy_version: policy.version,
            policy_digest: policy.policy_digest,
        };
        self.metrics.request(decision);
        if let Err(e) = self.receipts.record(receipt).await {
            tracing::error!(error = %e, "cannot record receipt");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map built from shared head bytes and static names equals the
    /// one a copy per name and value gives, whatever the names' case.
    #[test]
    fn request_parts_match_a_copy_per_header() {
        let raw: &[u8] = b"POST /pay?x=1 HTTP/1.1\r\nHOST: cage.example\r\n\
            SIGNATURE-Input: sig1=(\"@method\");keyid=\"k\"\r\nSignature: sig1=:AAAA:\r\n\
            Content-DIGEST: sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:\r\n\
            content-length: 3\r\nX-Thing: caf\xc3\xa9 \r\nx-thing: two\r\n\r\nabc";
        let mut head = RequestHead::default();
        assert!(h1::parse_request(raw, &mut head).unwrap().is_some());
        // A map with leftovers: they must not survive.
        let mut used = HeaderMap::new();
        used.insert("x-stale", HeaderValue::from_static("old"));
        let parts = request_parts(raw, &head, used).unwrap();
        let mut expected = HeaderMap::new();
        for h in &head.headers {
            expected.append(
                HeaderName::from_bytes(&raw[h.name.clone()]).unwrap(),
                HeaderValue::from_bytes(&raw[h.value.clone()]).unwrap(),
            );
        }
        assert_eq!(parts.headers, expected);
        assert_eq!(parts.headers.get_all("x-thing").iter().count(), 2);
        assert_eq!(parts.method, Method::POST);
        assert_eq!(parts.uri, "/pay?x=1");
        assert_eq!(parts.version, Version::HTTP_11);
    }

    /// SO_REUSEPORT alone would let a second cage share the port and
    /// silently take some of its connections.
    #[tokio::test]
    async fn a_second_cage_on_a_listening_address_is_refused() {
        let first = bind_listeners("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = first[0].local_addr().unwrap();
        let e = bind_listeners(addr, 2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(
            e.to_string().contains("another process listens there"),
            "{e}"
        );
        // Once the first is gone the address binds again.
        drop(first);
        let again = bind_listeners(addr, 2).unwrap();
        assert_eq!(again[1].local_addr().unwrap(), addr);
    }

    /// The listener's tuning reaches every accepted socket without a
    /// syscall per connection: TCP_NODELAY (a kernel that stopped copying
    /// it would bring Nagle's delay back to every small response) and
    /// delayed ACKs from the first byte. TCP_DEFER_ACCEPT holds a
    /// connection until its first bytes, so what is accepted is readable,
    /// and a silent one only for the hold time.
    #[tokio::test]
    async fn accepted_connections_come_readable_with_the_listeners_tuning() {
        let listeners = bind_listeners("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        assert_eq!(listeners[1].local_addr().unwrap(), addr, "one shared port");
        let [a, b] = listeners
            .try_into()
            .map(|ls: [std::net::TcpListener; 2]| {
                ls.map(|l| crate::client::Listener::new(l).unwrap())
            })
            .unwrap();
        // SO_REUSEPORT hands a connection to one of the two listeners.
        let accept = || async {
            tokio::select! {
                r = a.accept() => r.unwrap(),
                r = b.accept() => r.unwrap(),
            }
        };

        // Before connect: the kernel's SYN-ACK timer starts during it.
        let held_since = Instant::now();
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut held = std::pin::pin!(accept());
        assert!(
            tokio::time::timeout(Duration::from_millis(300), held.as_mut())
                .await
                .is_err(),
            "a connection that sent nothing is held by the kernel"
        );
        let (silent, _) = tokio::time::timeout(Duration::from_secs(30), held)
            .await
            .expect("a silent connection is handed over after the hold");
        assert!(held_since.elapsed() >= Duration::from_secs(u64::from(LISTEN_DEFER_ACCEPT_S)));
        // Checked on the silent one: no data came, so no delayed-ACK timer
        // can have fired and put the socket back into quick-ACK mode.
        let sock = silent.plain().expect("not registered");
        assert!(sock.nodelay().unwrap());
        assert!(
            !rustix::net::sockopt::tcp_quickack(sock).unwrap(),
            "quick-ACK mode is off from the start"
        );

        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"G").await.unwrap();
        let (mut accepted, _) = tokio::time::timeout(Duration::from_secs(30), accept())
            .await
            .expect("its first byte releases it");
        let mut first = [0u8; 1];
        accepted.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"G");
        assert!(
            accepted.plain().is_some(),
            "the byte was there at accept: read without joining epoll"
        );
    }
}
