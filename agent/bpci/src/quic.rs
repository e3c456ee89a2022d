//! The BPCI endpoint: frames between pinned peers over QUIC (quinn 0.11,
//! rustls 0.23 + aws-lc-rs, see [`crate::tls`]).
//!
//! Shape of the traffic, and why:
//! - One QUIC connection per peer (two for a moment when both dial at once;
//!   both work). A peer without a configured address is reached over the
//!   connection it opened to us.
//! - One long-lived unidirectional stream per (peer, service), frames back to
//!   back on it. A stream is ordered, which the replay rule needs (a nonce
//!   that arrives after a higher one is refused); separate streams per
//!   service mean a 32 MiB block on `blocksync` never holds up a 200-byte
//!   `qbft` vote (QUIC has no head-of-line blocking across streams).
//! - Frames are signed when they are written, by the one writer task of their
//!   (peer, service), so nonces on a stream are increasing by construction.
//! - Delivery is at most once: frames written to a connection that then
//!   fails are lost (and counted), not retried. Consensus and sync already
//!   retransmit at their own level, and a retried frame would need a new
//!   nonce anyway.
//!
//! Bounds (all in `metanode_core::limits`, `BPCI_*`): per (peer, service)
//! outbound frames and per-peer outbound bytes (`send` answers
//! [`SendError::QueueFull`] past them); per-peer inbound bytes held in
//! memory (past it, reading that peer waits and QUIC flow control pushes
//! back); the inbound channel; handshakes in flight; streams per connection.
//! A peer with an address is dialed once at start, then again whenever a
//! frame for it finds no connection, with bounded exponential backoff.
//!
//! Restarts: a peer killed without closing leaves us a connection that looks
//! alive until QUIC's idle timeout. Two things end it at once: a restarted
//! peer dials us at start, and a connection it dials retires the one we
//! dialed before (see `Slots::take_dialed_before`); and its QUIC endpoint
//! answers the old connection's packets with a stateless reset we accept
//! (reset key and connection-id key are derived from the node key, so they
//! survive the restart).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use metanode_core::encoding::DecodeError;
use metanode_core::hash::Hash32;
use metanode_core::keys::{PublicKey, SigningKey};
use metanode_core::limits::{
    BPCI_CLOSE_DRAIN_MS_MAX, BPCI_CONNECT_TIMEOUT_MS, BPCI_CONNECTION_RECEIVE_WINDOW_BYTES,
    BPCI_FRAME_PAYLOAD_BYTES_MAX, BPCI_HANDSHAKES_IN_FLIGHT_COUNT_MAX, BPCI_IDLE_TIMEOUT_MS,
    BPCI_INBOUND_QUEUE_FRAMES_MAX, BPCI_KEEPALIVE_INTERVAL_MS, BPCI_LOSS_PACKET_THRESHOLD,
    BPCI_LOSS_TIME_THRESHOLD_RTT, BPCI_OUTBOUND_QUEUE_BYTES_MAX, BPCI_OUTBOUND_QUEUE_FRAMES_MAX,
    BPCI_PEER_INBOUND_BYTES_MAX, BPCI_PEERS_COUNT_MAX, BPCI_RECONNECT_BACKOFF_MS_MAX,
    BPCI_RECONNECT_BACKOFF_MS_MIN, BPCI_SERVICES_PER_PEER_COUNT_MAX,
    BPCI_SOCKET_RECEIVE_BUFFER_BYTES, BPCI_STREAM_RECEIVE_WINDOW_BYTES,
    BPCI_URGENT_STREAM_PRIORITY,
};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, ReadExactError, VarInt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::frame::{
    FRAME_HEAD_LEN, Frame, FrameError, FrameSigner, FrameVerifier, NodeId, Rejections, ServiceId,
    VerifiedHeader, decode_head,
};
use crate::tls::{self, KeyExchange, TlsConfigError};

/// Payloads above this are hashed (signed or verified) on the blocking pool
/// rather than on a runtime worker: BLAKE3 over a 32 MiB block takes
/// milliseconds, long enough to stall other connections' tasks.
const HASH_INLINE_BYTES_MAX: usize = 256 * 1024;

/// How often a dialer looks for the server's handshake confirmation.
const HANDSHAKE_CONFIRM_POLL: Duration = Duration::from_millis(2);

/// The name we dial; certificates are matched by key, never by name.
const SERVER_NAME: &str = "bpci.invalid";

/// QUIC application error codes we close connections and stop streams with.
const CLOSE_SHUTDOWN: u32 = 0;
const CLOSE_REPLACED: u32 = 1;
const CLOSE_UNKNOWN_PEER: u32 = 2;
const STOP_MALFORMED: u32 = 3;
const CLOSE_SUPERSEDED: u32 = 4;

/// What [`Endpoint::bind`] needs.
#[derive(Debug)]
pub struct TransportConfig {
    /// UDP address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// This node's identity: frames are signed and TLS is authenticated with it.
    pub key: SigningKey,
    /// Chain id of our cluster; frames for another cluster are refused.
    pub cluster: Hash32,
    /// The pinned peers: validators and observers, with an address for those
    /// we dial. Our own key may appear (a shared validator list) and is
    /// skipped. Nobody else can connect to us or be connected to.
    pub peers: Vec<(PublicKey, Option<SocketAddr>)>,
    pub key_exchange: KeyExchange,
    /// First nonce of our frames; see [`FrameSigner`] for why it must grow
    /// across restarts. [`TransportConfig::new`] takes it from the clock.
    pub nonce_base: u64,
    /// Services whose frames QUIC sends ahead of every other service's on
    /// the same connection (`BPCI_URGENT_STREAM_PRIORITY`): small, latency
    /// critical traffic such as consensus, which must not queue behind bulk
    /// traffic in the congestion window. Empty from [`TransportConfig::new`].
    pub urgent_services: Vec<ServiceId>,
}

impl TransportConfig {
    /// Hybrid-only key exchange and a nonce base from the wall clock.
    pub fn new(
        listen: SocketAddr,
        key: SigningKey,
        cluster: Hash32,
        peers: Vec<(PublicKey, Option<SocketAddr>)>,
    ) -> Self {
        TransportConfig {
            listen,
            key,
            cluster,
            peers,
            key_exchange: KeyExchange::default(),
            nonce_base: FrameSigner::nonce_base_from_clock(SystemTime::now()),
            urgent_services: Vec::new(),
        }
    }
}

/// Why an endpoint could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("endpoint must be bound from within a tokio runtime")]
    NoRuntime,
    #[error("{count} peers exceed maximum {max}")]
    TooManyPeers { count: usize, max: usize },
    #[error("peer {peer} is listed more than once")]
    DuplicatePeer { peer: NodeId },
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    #[error("binding udp socket {addr} failed: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why a frame was not queued for sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("unknown peer {peer}: not in the pinned peer set")]
    UnknownPeer { peer: NodeId },
    #[error(
        "payload of {len} bytes for service {service} to peer {peer} exceeds the frame maximum of {max} bytes"
    )]
    PayloadTooLarge {
        peer: NodeId,
        service: ServiceId,
        len: usize,
        max: u32,
    },
    #[error(
        "outbound queue to peer {peer} is full for service {service}: {frames_queued} frames and {bytes_queued} bytes waiting"
    )]
    QueueFull {
        peer: NodeId,
        service: ServiceId,
        frames_queued: usize,
        bytes_queued: u64,
    },
    #[error("peer {peer} already has {max} services; service {service} refused")]
    TooManyServices {
        peer: NodeId,
        service: ServiceId,
        max: usize,
    },
    #[error("endpoint is closed")]
    Closed,
}

/// A frame accepted from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The sender, as authenticated by TLS and by the frame signature.
    pub from: PublicKey,
    pub service: ServiceId,
    pub nonce: u64,
    /// The sender's PoH tick when it sent the frame (zero if none).
    pub poh_tick: Hash32,
    pub payload: Vec<u8>,
}

/// One connection's QUIC path state ([`Endpoint::path_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PathStats {
    pub rtt_ms: f64,
    pub cwnd_bytes: u64,
    pub sent_packets: u64,
    pub lost_packets: u64,
    pub congestion_events: u64,
}

/// Counters since the endpoint was bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Frames handed to QUIC (written to a stream; not yet acknowledged).
    pub frames_sent: u64,
    pub payload_bytes_sent: u64,
    pub frames_received: u64,
    pub payload_bytes_received: u64,
    /// `send` calls answered with `QueueFull`.
    pub frames_refused_queue_full: u64,
    /// Frames taken from a queue but not delivered to QUIC (the connection
    /// failed under them, or signing failed).
    pub frames_lost: u64,
    /// Received frames refused, by reason.
    pub frames_rejected: Rejections,
    pub connections_dialed: u64,
    pub connections_accepted: u64,
    pub dial_failures: u64,
    /// Incoming connections refused: failed handshake (e.g. key not
    /// pinned), timeout, or too many handshakes at once.
    pub handshakes_refused: u64,
    /// Connections we dialed that we closed because the peer dialed us
    /// again (it restarted or gave them up).
    pub connections_superseded: u64,
}

#[derive(Debug, Default)]
struct Counters {
    frames_sent: AtomicU64,
    payload_bytes_sent: AtomicU64,
    frames_received: AtomicU64,
    payload_bytes_received: AtomicU64,
    frames_refused_queue_full: AtomicU64,
    frames_lost: AtomicU64,
    connections_dialed: AtomicU64,
    connections_accepted: AtomicU64,
    dial_failures: AtomicU64,
    handshakes_refused: AtomicU64,
    connections_superseded: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

struct Outgoing {
    payload: Vec<u8>,
    /// Holds the payload's bytes against the peer's outbound budget until
    /// the frame is written.
    budget: OwnedSemaphorePermit,
}

struct Delivery {
    inbound: Inbound,
    /// Holds the payload's bytes against the sender's inbound budget until
    /// the application takes the frame.
    _budget: OwnedSemaphorePermit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Dialed,
    Accepted,
}

/// The live connections to one peer: the one we dialed and the one it
/// dialed to us (each replaced by a newer one of the same side).
#[derive(Debug, Default)]
struct Slots {
    dialed: Option<quinn::Connection>,
    /// When `dialed` was confirmed by the peer (its HANDSHAKE_DONE).
    dialed_at: Option<Instant>,
    accepted: Option<quinn::Connection>,
}

impl Slots {
    fn slot(&mut self, side: Side) -> &mut Option<quinn::Connection> {
        match side {
            Side::Dialed => &mut self.dialed,
            Side::Accepted => &mut self.accepted,
        }
    }

    /// Takes the dialed connection if the peer confirmed it before `arrived`
    /// (when the first packet of a connection the peer dialed reached us).
    ///
    /// A peer dials only when it holds no live connection to us, so a
    /// connection it confirmed before dialing again is dead at its end: it
    /// restarted (kill -9 sends no close, so our side would write into the
    /// old connection until the idle timeout), or it gave the connection up.
    /// When both sides dial at once, each one's dial reaches the other
    /// before its own is confirmed, so both connections are kept. The
    /// rare ordering this misjudges costs one live connection (the peer
    /// still has the new one), never the peer.
    fn take_dialed_before(&mut self, arrived: Instant) -> Option<quinn::Connection> {
        if self.dialed_at.is_some_and(|at| at < arrived) {
            self.dialed_at = None;
            return self.dialed.take();
        }
        None
    }

    fn current(&self) -> Option<&quinn::Connection> {
        [&self.dialed, &self.accepted]
            .into_iter()
            .flatten()
            .find(|c| c.close_reason().is_none())
    }
}

struct ServiceQueue {
    tx: mpsc::Sender<Outgoing>,
    writer: JoinHandle<()>,
}

struct Peer {
    key: PublicKey,
    addr: Option<SocketAddr>,
    client_config: quinn::ClientConfig,
    conns: watch::Sender<Slots>,
    /// Signalled by writers that have frames and no connection.
    want: tokio::sync::Notify,
    outbound_bytes: Arc<Semaphore>,
    inbound_bytes: Arc<Semaphore>,
    services: Mutex<HashMap<ServiceId, ServiceQueue>>,
    /// Set during close when no connection to this peer can be had: its
    /// writers stop waiting and drop what is queued.
    gave_up: AtomicBool,
}

impl Peer {
    fn current(&self) -> Option<quinn::Connection> {
        self.conns.borrow().current().cloned()
    }

    fn services(&self) -> MutexGuard<'_, HashMap<ServiceId, ServiceQueue>> {
        // Map updates are single inserts/removals; a panic elsewhere while
        // holding the lock cannot leave it inconsistent.
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn give_up(&self) {
        self.gave_up.store(true, Ordering::Release);
        // Wake writers waiting for a connection so they see the flag.
        self.conns.send_modify(|_| {});
    }

    /// A live connection to this peer, waiting (and asking the dialer) for
    /// one if there is none; `None` once the endpoint gave up on the peer.
    async fn connection(&self) -> Option<quinn::Connection> {
        let mut rx = self.conns.subscribe();
        loop {
            if let Some(c) = rx.borrow_and_update().current() {
                return Some(c.clone());
            }
            if self.gave_up.load(Ordering::Acquire) {
                return None;
            }
            self.want.notify_one();
            // The sender lives in `self`, so this only returns on a change.
            let _ = rx.changed().await;
        }
    }
}

struct Inner {
    quic: quinn::Endpoint,
    cluster: Hash32,
    signer: FrameSigner,
    verifier: FrameVerifier,
    peers: HashMap<PublicKey, Arc<Peer>>,
    inbound_tx: mpsc::Sender<Delivery>,
    counters: Counters,
    poh_tick: Mutex<Hash32>,
    /// Set when a graceful close starts: no new frames, no new dials.
    closing: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
    handshakes: Arc<Semaphore>,
    urgent_services: Vec<ServiceId>,
}

/// A BPCI node endpoint. Cheap to share behind an `Arc`; every method takes
/// `&self`.
pub struct Endpoint {
    inner: Arc<Inner>,
    inbound_rx: tokio::sync::Mutex<mpsc::Receiver<Delivery>>,
    local_addr: SocketAddr,
    public_key: PublicKey,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_addr", &self.local_addr)
            .field("public_key", &self.public_key)
            .field("peers", &self.inner.peers.len())
            .finish_non_exhaustive()
    }
}

fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(BPCI_SERVICES_PER_PEER_COUNT_MAX as u32))
        .stream_receive_window(VarInt::from_u32(BPCI_STREAM_RECEIVE_WINDOW_BYTES))
        .receive_window(VarInt::from_u32(BPCI_CONNECTION_RECEIVE_WINDOW_BYTES))
        .send_window(u64::from(BPCI_CONNECTION_RECEIVE_WINDOW_BYTES))
        .time_threshold(BPCI_LOSS_TIME_THRESHOLD_RTT)
        .packet_threshold(BPCI_LOSS_PACKET_THRESHOLD)
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
            BPCI_IDLE_TIMEOUT_MS as u32,
        ))))
        .keep_alive_interval(Some(Duration::from_millis(BPCI_KEEPALIVE_INTERVAL_MS)));
    t
}

const _: () = assert!(BPCI_IDLE_TIMEOUT_MS <= u32::MAX as u64);
const _: () = assert!(BPCI_SERVICES_PER_PEER_COUNT_MAX <= u32::MAX as usize);

impl Endpoint {
    /// Binds the UDP socket, builds the TLS configuration and starts
    /// accepting pinned peers. Must be called within a tokio runtime.
    pub fn bind(config: TransportConfig) -> Result<Endpoint, TransportError> {
        tokio::runtime::Handle::try_current().map_err(|_| TransportError::NoRuntime)?;
        let key = Arc::new(config.key);
        let ours = key.public_key();
        let mut seen = HashSet::new();
        let mut peer_list = Vec::new();
        for (peer, addr) in config.peers {
            if peer == ours {
                continue;
            }
            if !seen.insert(peer) {
                return Err(TransportError::DuplicatePeer { peer: peer.into() });
            }
            peer_list.push((peer, addr));
        }
        if peer_list.len() > BPCI_PEERS_COUNT_MAX {
            return Err(TransportError::TooManyPeers {
                count: peer_list.len(),
                max: BPCI_PEERS_COUNT_MAX,
            });
        }
        let pinned: Vec<PublicKey> = peer_list.iter().map(|(k, _)| *k).collect();

        let provider = tls::provider(config.key_exchange.groups());
        let certified = tls::certified_key(key.clone())?;
        let transport = Arc::new(transport_config());
        let server_tls = tls::server_config(provider.clone(), certified.clone(), pinned.clone())?;
        let server_quic = QuicServerConfig::try_from(server_tls).map_err(TlsConfigError::from)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_quic));
        server.transport_config(transport.clone());

        let mut peers = HashMap::new();
        for (peer, addr) in peer_list {
            let client_tls = tls::client_config(provider.clone(), certified.clone(), peer)?;
            let client_quic =
                QuicClientConfig::try_from(client_tls).map_err(TlsConfigError::from)?;
            let mut client_config = quinn::ClientConfig::new(Arc::new(client_quic));
            client_config.transport_config(transport.clone());
            peers.insert(
                peer,
                Arc::new(Peer {
                    key: peer,
                    addr,
                    client_config,
                    conns: watch::Sender::new(Slots::default()),
                    want: tokio::sync::Notify::new(),
                    outbound_bytes: Arc::new(Semaphore::new(
                        BPCI_OUTBOUND_QUEUE_BYTES_MAX as usize,
                    )),
                    inbound_bytes: Arc::new(Semaphore::new(BPCI_PEER_INBOUND_BYTES_MAX as usize)),
                    services: Mutex::new(HashMap::new()),
                    gave_up: AtomicBool::new(false),
                }),
            );
        }
        let verifier = FrameVerifier::new(config.cluster, pinned).map_err(|_| {
            TransportError::TooManyPeers {
                count: peers.len(),
                max: BPCI_PEERS_COUNT_MAX,
            }
        })?;

        // A stateless-reset key derived from the node key (not random per
        // process): after a kill -9 and restart, the new process can answer
        // a peer's packets for the old connection with a reset the peer
        // accepts, so the peer drops the dead connection at once instead of
        // writing into it until the idle timeout (30 s of lost consensus
        // messages). Ed25519 signatures are deterministic, so this signature
        // is a stable secret only the key holder can compute.
        //
        // The reset key alone is not enough: quinn answers a packet for an
        // unknown connection with a reset only if its connection id passes
        // the id generator's check, which by default is keyed randomly per
        // process, so a restarted process silently dropped every packet of
        // the old connections (and so never reset them). The generator key
        // is derived from the node key the same way.
        let reset_secret = key.sign(b"metanode bpci quic stateless reset key v1");
        let reset_key =
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &reset_secret.to_bytes()[..32]);
        let cid_secret = key
            .sign(b"metanode bpci quic connection id key v1")
            .to_bytes();
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(&cid_secret[..8]);
        let cid_key = u64::from_le_bytes(cid_key);
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let bind_error = |source| TransportError::Bind {
            addr: config.listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(config.listen).map_err(bind_error)?;
        // Best effort: the kernel caps it at net.core.rmem_max, and a smaller
        // buffer only costs throughput (drops QUIC recovers from).
        if let Err(e) = quinn_udp::UdpSocketState::new((&socket).into()).and_then(|state| {
            state.set_recv_buffer_size((&socket).into(), BPCI_SOCKET_RECEIVE_BUFFER_BYTES)
        }) {
            tracing::warn!("bpci socket receive buffer not enlarged: {e}");
        }
        let runtime = quinn::default_runtime()
            .ok_or_else(|| bind_error(std::io::Error::other("no async runtime found")))?;
        let quic = quinn::Endpoint::new(endpoint_config, Some(server), socket, runtime)
            .map_err(bind_error)?;
        let local_addr = quic.local_addr().map_err(|source| TransportError::Bind {
            addr: config.listen,
            source,
        })?;
        let (inbound_tx, inbound_rx) = mpsc::channel(BPCI_INBOUND_QUEUE_FRAMES_MAX);
        let inner = Arc::new(Inner {
            quic,
            cluster: config.cluster,
            signer: FrameSigner::new(key, config.cluster, config.nonce_base),
            verifier,
            peers,
            inbound_tx,
            counters: Counters::default(),
            poh_tick: Mutex::new(Hash32::ZERO),
            closing: watch::Sender::new(false),
            shutdown: watch::Sender::new(false),
            handshakes: Arc::new(Semaphore::new(BPCI_HANDSHAKES_IN_FLIGHT_COUNT_MAX)),
            urgent_services: config.urgent_services,
        });
        inner.spawn(run_accept(inner.clone()));
        for peer in inner.peers.values() {
            if let Some(addr) = peer.addr {
                inner.spawn(run_dialer(inner.clone(), peer.clone(), addr));
                // Dial at start rather than on the first frame: after a
                // restart the peer learns at once that its connections to
                // our previous process are dead (module docs).
                peer.want.notify_one();
            }
        }
        tracing::info!(%local_addr, node = %ours, peers = inner.peers.len(), "bpci endpoint bound");
        Ok(Endpoint {
            inner,
            inbound_rx: tokio::sync::Mutex::new(inbound_rx),
            local_addr,
            public_key: ours,
        })
    }

    /// The UDP address we listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Our node key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Sets the PoH tick carried by frames signed from now on.
    pub fn set_poh_tick(&self, tick: Hash32) {
        *self
            .inner
            .poh_tick
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = tick;
    }

    /// Whether a live connection to `peer` exists now.
    pub fn is_connected(&self, peer: &PublicKey) -> bool {
        self.inner
            .peers
            .get(peer)
            .is_some_and(|p| p.current().is_some())
    }

    /// Queues `payload` for `peer` on `service`. Never waits: when the
    /// peer's queue is full the frame is refused with
    /// [`SendError::QueueFull`], and the caller decides what to drop.
    /// Frames to one (peer, service) are delivered in the order queued, or
    /// not at all.
    pub fn send(
        &self,
        peer: &PublicKey,
        service: ServiceId,
        payload: Vec<u8>,
    ) -> Result<(), SendError> {
        if *self.inner.closing.borrow() {
            return Err(SendError::Closed);
        }
        let p = self
            .inner
            .peers
            .get(peer)
            .ok_or(SendError::UnknownPeer { peer: peer.into() })?;
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|len| *len <= BPCI_FRAME_PAYLOAD_BYTES_MAX)
            .ok_or(SendError::PayloadTooLarge {
                peer: peer.into(),
                service,
                len: payload.len(),
                max: BPCI_FRAME_PAYLOAD_BYTES_MAX,
            })?;
        let mut services = p.services();
        if !services.contains_key(&service) {
            if services.len() >= BPCI_SERVICES_PER_PEER_COUNT_MAX {
                return Err(SendError::TooManyServices {
                    peer: peer.into(),
                    service,
                    max: BPCI_SERVICES_PER_PEER_COUNT_MAX,
                });
            }
            let (tx, rx) = mpsc::channel(BPCI_OUTBOUND_QUEUE_FRAMES_MAX);
            let writer = self
                .inner
                .spawn(run_writer(self.inner.clone(), p.clone(), service, rx));
            services.insert(service, ServiceQueue { tx, writer });
        }
        let Some(queue) = services.get(&service) else {
            return Err(SendError::Closed);
        };
        let queue_full = |queue: &ServiceQueue| {
            bump(&self.inner.counters.frames_refused_queue_full, 1);
            SendError::QueueFull {
                peer: peer.into(),
                service,
                frames_queued: BPCI_OUTBOUND_QUEUE_FRAMES_MAX - queue.tx.capacity(),
                bytes_queued: BPCI_OUTBOUND_QUEUE_BYTES_MAX
                    - p.outbound_bytes.available_permits() as u64,
            }
        };
        let Ok(budget) = p.outbound_bytes.clone().try_acquire_many_owned(len) else {
            return Err(queue_full(queue));
        };
        match queue.tx.try_send(Outgoing { payload, budget }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(out)) => {
                drop(out);
                Err(queue_full(queue))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    /// The next accepted frame, in order per (peer, service). `None` once
    /// the endpoint is closed and every frame received before was taken.
    pub async fn recv(&self) -> Option<Inbound> {
        let mut rx = self.inbound_rx.lock().await;
        let mut shutdown = self.inner.shutdown.subscribe();
        tokio::select! {
            biased;
            delivery = rx.recv() => delivery.map(|d| d.inbound),
            _ = shutdown.wait_for(|closed| *closed) => rx.try_recv().ok().map(|d| d.inbound),
        }
    }

    /// QUIC path state of the live connection to each connected peer:
    /// round-trip estimate, congestion window, packets sent and declared
    /// lost, and congestion events. Lets the node explain a slow broadcast
    /// (a collapsed window after losses, or a long round trip).
    pub fn path_stats(&self) -> Vec<(PublicKey, PathStats)> {
        let mut stats = Vec::new();
        for peer in self.inner.peers.values() {
            if let Some(conn) = peer.current() {
                let s = conn.stats();
                stats.push((
                    peer.key,
                    PathStats {
                        rtt_ms: conn.rtt().as_secs_f64() * 1e3,
                        cwnd_bytes: s.path.cwnd,
                        sent_packets: s.path.sent_packets,
                        lost_packets: s.path.lost_packets,
                        congestion_events: s.path.congestion_events,
                    },
                ));
            }
        }
        stats
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Metrics {
            frames_sent: get(&c.frames_sent),
            payload_bytes_sent: get(&c.payload_bytes_sent),
            frames_received: get(&c.frames_received),
            payload_bytes_received: get(&c.payload_bytes_received),
            frames_refused_queue_full: get(&c.frames_refused_queue_full),
            frames_lost: get(&c.frames_lost),
            frames_rejected: self.inner.verifier.rejections(),
            connections_dialed: get(&c.connections_dialed),
            connections_accepted: get(&c.connections_accepted),
            dial_failures: get(&c.dial_failures),
            handshakes_refused: get(&c.handshakes_refused),
            connections_superseded: get(&c.connections_superseded),
        }
    }

    /// Graceful close: refuses new sends, lets every writer send what is
    /// queued and wait until the peer acknowledged it (bounded by
    /// `BPCI_CLOSE_DRAIN_MS_MAX`), then closes all connections and waits
    /// (bounded the same) for the peers to see the close.
    pub async fn close(&self) {
        if self.inner.closing.send_replace(true) {
            return;
        }
        let mut writers = Vec::new();
        for peer in self.inner.peers.values() {
            // Dropping a queue's sender ends its writer once it is drained.
            writers.extend(peer.services().drain().map(|(_, q)| q.writer));
            if peer.addr.is_none() {
                // Nobody will dial a peer we only wait for; its queued
                // frames cannot be delivered.
                peer.give_up();
            }
        }
        let bound = Duration::from_millis(BPCI_CLOSE_DRAIN_MS_MAX);
        let drained = tokio::time::timeout(bound, async {
            for writer in writers {
                let _ = writer.await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!("bpci close: queued frames not all acknowledged in time");
        }
        self.inner
            .quic
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"endpoint closed");
        self.inner.shutdown.send_replace(true);
        let _ = tokio::time::timeout(bound, self.inner.quic.wait_idle()).await;
    }

    /// Sends raw bytes on a fresh stream to `peer`, bypassing the signer:
    /// lets tests hand a receiver frames no honest sender would write.
    #[cfg(test)]
    async fn send_raw(&self, peer: &PublicKey, bytes: &[u8]) -> quinn::SendStream {
        let p = self.inner.peers.get(peer).expect("test peer is pinned");
        let conn = p.connection().await.expect("test peer connects");
        let mut s = conn.open_uni().await.expect("test stream opens");
        s.write_all(bytes).await.expect("test bytes are written");
        s
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.inner.closing.send_replace(true);
        self.inner
            .quic
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"endpoint dropped");
        self.inner.shutdown.send_replace(true);
    }
}

impl Inner {
    /// Spawns a task that also ends when the endpoint shuts down.
    fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut shutdown = self.shutdown.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.wait_for(|closed| *closed) => {}
                () = task => {}
            }
        })
    }

    fn poh_tick(&self) -> Hash32 {
        *self.poh_tick.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `conn` the peer's current connection of its side and starts
    /// reading the streams the peer opens on it. `since` is when the peer
    /// confirmed a connection we dialed, or when the first packet of one it
    /// dialed arrived: an accepted connection also retires a dialed one the
    /// peer confirmed before it (see [`Slots::take_dialed_before`]).
    fn register(
        self: &Arc<Self>,
        peer: &Arc<Peer>,
        conn: quinn::Connection,
        side: Side,
        since: Instant,
    ) {
        let mut old = None;
        let mut superseded = None;
        peer.conns.send_modify(|slots| {
            old = slots.slot(side).replace(conn.clone());
            match side {
                Side::Dialed => slots.dialed_at = Some(since),
                Side::Accepted => superseded = slots.take_dialed_before(since),
            }
        });
        if let Some(old) = old
            && old.stable_id() != conn.stable_id()
        {
            old.close(
                VarInt::from_u32(CLOSE_REPLACED),
                b"replaced by a newer connection",
            );
        }
        if let Some(stale) = superseded {
            bump(&self.counters.connections_superseded, 1);
            tracing::debug!(peer = %peer.key, "bpci peer reconnected: dropping the connection it dialed before");
            stale.close(
                VarInt::from_u32(CLOSE_SUPERSEDED),
                b"superseded: the peer dialed again",
            );
        }
        tracing::debug!(peer = %peer.key, ?side, "bpci connection up");
        self.spawn(run_connection(self.clone(), peer.clone(), conn, side));
    }
}

#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("handshake: {0}")]
    Handshake(#[from] quinn::ConnectionError),
    #[error("handshake timed out after {BPCI_CONNECT_TIMEOUT_MS} ms")]
    Timeout,
    #[error("peer presented key {found:?} instead of {expected}")]
    WrongPeer {
        expected: NodeId,
        found: Option<NodeId>,
    },
}

async fn dial(
    inner: &Inner,
    peer: &Peer,
    addr: SocketAddr,
) -> Result<quinn::Connection, DialError> {
    let connecting = inner
        .quic
        .connect_with(peer.client_config.clone(), addr, SERVER_NAME)?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(BPCI_CONNECT_TIMEOUT_MS);
    let conn = tokio::time::timeout_at(deadline, connecting)
        .await
        .map_err(|_| DialError::Timeout)??;
    // A TLS 1.3 client completes its handshake before the server has
    // checked the client's certificate, so a server that refuses us looks
    // connected for a round trip. The server's HANDSHAKE_DONE frame (sent
    // once it has accepted us, retransmitted until acknowledged) is the
    // confirmation; quinn exposes it only as a frame counter.
    tokio::time::timeout_at(deadline, async {
        loop {
            if conn.stats().frame_rx.handshake_done > 0 {
                return Ok(());
            }
            if let Some(e) = conn.close_reason() {
                return Err(e);
            }
            tokio::select! {
                _ = conn.closed() => {}
                () = tokio::time::sleep(HANDSHAKE_CONFIRM_POLL) => {}
            }
        }
    })
    .await
    .map_err(|_| DialError::Timeout)??;
    // The verifier already refused any other key; this keeps a future
    // verifier change from silently attaching a connection to the wrong peer.
    let found = tls::peer_key_of(&conn);
    if found != Some(peer.key) {
        conn.close(VarInt::from_u32(CLOSE_UNKNOWN_PEER), b"unexpected peer key");
        return Err(DialError::WrongPeer {
            expected: peer.key.into(),
            found: found.map(NodeId::from),
        });
    }
    Ok(conn)
}

/// Dials a peer when a writer needs it, with exponential backoff between
/// failures and at least the minimum backoff between any two dials.
async fn run_dialer(inner: Arc<Inner>, peer: Arc<Peer>, addr: SocketAddr) {
    let min = Duration::from_millis(BPCI_RECONNECT_BACKOFF_MS_MIN);
    let max = Duration::from_millis(BPCI_RECONNECT_BACKOFF_MS_MAX);
    let mut closing = inner.closing.subscribe();
    loop {
        tokio::select! {
            () = peer.want.notified() => {}
            _ = closing.wait_for(|c| *c) => {
                if peer.current().is_none() {
                    peer.give_up();
                }
                return;
            }
        }
        let mut backoff = min;
        while peer.current().is_none() {
            match dial(&inner, &peer, addr).await {
                Ok(conn) => {
                    bump(&inner.counters.connections_dialed, 1);
                    inner.register(&peer, conn, Side::Dialed, Instant::now());
                    break;
                }
                Err(e) => {
                    bump(&inner.counters.dial_failures, 1);
                    tracing::debug!(peer = %peer.key, %addr, "bpci dial failed: {e}");
                    // While closing, one failed attempt is the last.
                    let closed = tokio::select! {
                        () = tokio::time::sleep(backoff) => *inner.closing.borrow(),
                        _ = closing.wait_for(|c| *c) => true,
                    };
                    if closed {
                        peer.give_up();
                        return;
                    }
                    backoff = (backoff * 2).min(max);
                }
            }
        }
        tokio::time::sleep(min).await;
    }
}

async fn run_accept(inner: Arc<Inner>) {
    while let Some(incoming) = inner.quic.accept().await {
        let arrived = Instant::now();
        let Ok(permit) = inner.handshakes.clone().try_acquire_owned() else {
            bump(&inner.counters.handshakes_refused, 1);
            incoming.refuse();
            continue;
        };
        let task_inner = inner.clone();
        inner.spawn(async move {
            let _permit = permit;
            let inner = task_inner;
            let remote = incoming.remote_address();
            let timeout = Duration::from_millis(BPCI_CONNECT_TIMEOUT_MS);
            let conn = match tokio::time::timeout(timeout, incoming.into_future()).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    bump(&inner.counters.handshakes_refused, 1);
                    tracing::debug!(%remote, "bpci handshake refused: {e}");
                    return;
                }
                Err(_) => {
                    bump(&inner.counters.handshakes_refused, 1);
                    tracing::debug!(%remote, "bpci handshake timed out");
                    return;
                }
            };
            match tls::peer_key_of(&conn).and_then(|k| inner.peers.get(&k).cloned()) {
                Some(peer) => {
                    bump(&inner.counters.connections_accepted, 1);
                    inner.register(&peer, conn, Side::Accepted, arrived);
                }
                None => {
                    // Unreachable while the verifier pins the same set.
                    bump(&inner.counters.handshakes_refused, 1);
                    conn.close(VarInt::from_u32(CLOSE_UNKNOWN_PEER), b"unknown peer");
                }
            }
        });
    }
}

/// Accepts the peer's streams on one connection until it closes, then
/// forgets the connection.
async fn run_connection(inner: Arc<Inner>, peer: Arc<Peer>, conn: quinn::Connection, side: Side) {
    loop {
        match conn.accept_uni().await {
            Ok(recv) => {
                inner.spawn(run_stream(inner.clone(), peer.clone(), recv));
            }
            Err(e) => {
                tracing::debug!(peer = %peer.key, ?side, "bpci connection closed: {e}");
                break;
            }
        }
    }
    let id = conn.stable_id();
    peer.conns.send_modify(|slots| {
        let slot = slots.slot(side);
        if slot.as_ref().is_some_and(|c| c.stable_id() == id) {
            *slot = None;
        }
    });
}

/// Reads frames from one stream, verifies them and delivers the accepted
/// ones. A frame whose head decodes but is refused is skipped (its length is
/// known), so one bad frame does not cost the frames behind it; a head that
/// does not decode leaves no way to find the next frame, so the stream is
/// stopped.
async fn run_stream(inner: Arc<Inner>, peer: Arc<Peer>, mut recv: quinn::RecvStream) {
    let from = peer.key;
    loop {
        let mut head = [0u8; FRAME_HEAD_LEN];
        match recv.read_exact(&mut head).await {
            Ok(()) => {}
            Err(ReadExactError::FinishedEarly(0)) => return,
            Err(ReadExactError::FinishedEarly(read)) => {
                record_truncated(&inner, from, "frame head", read, FRAME_HEAD_LEN);
                return;
            }
            Err(ReadExactError::ReadError(e)) => {
                tracing::debug!(peer = %from, "bpci stream ended: {e}");
                return;
            }
        }
        let verified = match inner.verifier.verify_head(&from, &head) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!("bpci frame refused: {e}");
                match decode_head(&head) {
                    Ok((header, _)) if skip(&mut recv, header.payload_len).await => continue,
                    Ok(_) => return,
                    Err(_) => {
                        let _ = recv.stop(VarInt::from_u32(STOP_MALFORMED));
                        return;
                    }
                }
            }
        };
        let len = verified.header().payload_len;
        let Ok(budget) = peer.inbound_bytes.clone().acquire_many_owned(len).await else {
            return;
        };
        let mut payload = vec![0u8; len as usize];
        match recv.read_exact(&mut payload).await {
            Ok(()) => {}
            Err(ReadExactError::FinishedEarly(read)) => {
                record_truncated(
                    &inner,
                    from,
                    "frame payload",
                    FRAME_HEAD_LEN + read,
                    FRAME_HEAD_LEN + len as usize,
                );
                return;
            }
            Err(ReadExactError::ReadError(e)) => {
                tracing::debug!(peer = %from, "bpci stream ended mid-frame: {e}");
                return;
            }
        }
        let frame = match accept_payload(&inner, verified, payload).await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                tracing::debug!("bpci frame refused: {e}");
                continue;
            }
            None => return,
        };
        bump(&inner.counters.frames_received, 1);
        bump(&inner.counters.payload_bytes_received, u64::from(len));
        let inbound = Inbound {
            from,
            service: frame.header.service,
            nonce: frame.header.nonce,
            poh_tick: frame.header.poh_tick,
            payload: frame.payload,
        };
        let delivery = Delivery {
            inbound,
            _budget: budget,
        };
        if inner.inbound_tx.send(delivery).await.is_err() {
            return;
        }
    }
}

fn record_truncated(
    inner: &Inner,
    from: PublicKey,
    what: &'static str,
    read: usize,
    needed: usize,
) {
    let error = FrameError::Malformed {
        from: from.into(),
        source: DecodeError::Truncated {
            what,
            offset: read,
            needed: needed - read,
            remaining: 0,
        },
    };
    tracing::debug!("bpci frame refused: {error}");
    inner.verifier.record_rejection(&error);
}

/// Reads and drops `len` bytes; false if the stream ended first.
async fn skip(recv: &mut quinn::RecvStream, len: u32) -> bool {
    let mut left = len as usize;
    while left > 0 {
        match recv.read_chunk(left, true).await {
            Ok(Some(chunk)) => left = left.saturating_sub(chunk.bytes.len()),
            Ok(None) | Err(_) => return false,
        }
    }
    true
}

/// Runs `f` inline for small payloads and on the blocking pool for large
/// ones; `None` if the runtime is shutting down.
async fn hash_sized<T, F>(len: usize, f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if len <= HASH_INLINE_BYTES_MAX {
        return Some(f());
    }
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => Some(v),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => None,
        },
    }
}

async fn accept_payload(
    inner: &Arc<Inner>,
    verified: VerifiedHeader,
    payload: Vec<u8>,
) -> Option<Result<Frame, FrameError>> {
    let task_inner = inner.clone();
    hash_sized(payload.len(), move || {
        task_inner.verifier.accept_payload(verified, payload)
    })
    .await
}

async fn sign(
    inner: &Arc<Inner>,
    service: ServiceId,
    payload: Vec<u8>,
) -> Option<Result<Frame, FrameError>> {
    let task_inner = inner.clone();
    let tick = inner.poh_tick();
    hash_sized(payload.len(), move || {
        task_inner
            .signer
            .sign(task_inner.cluster, service, tick, payload)
    })
    .await
}

/// The one writer of a (peer, service): signs each queued frame as it sends
/// it, on one stream per connection.
async fn run_writer(
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    service: ServiceId,
    mut rx: mpsc::Receiver<Outgoing>,
) {
    let mut stream: Option<(usize, quinn::SendStream)> = None;
    loop {
        // Take a frame only once there is a connection to put it on, so
        // frames waiting for a connection stay counted by the queue bound.
        if peer.connection().await.is_none() {
            break;
        }
        let Some(Outgoing { payload, budget }) = rx.recv().await else {
            break;
        };
        let Some(conn) = peer.connection().await else {
            bump(&inner.counters.frames_lost, 1);
            break;
        };
        let len = payload.len() as u64;
        let frame = match sign(&inner, service, payload).await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                bump(&inner.counters.frames_lost, 1);
                tracing::error!("bpci frame not sent: {e}");
                continue;
            }
            None => return,
        };
        if stream
            .as_ref()
            .is_none_or(|(id, _)| *id != conn.stable_id())
        {
            stream = match conn.open_uni().await {
                Ok(s) => {
                    if inner.urgent_services.contains(&service) {
                        // Only fails on a stream already closed, which the
                        // write below reports.
                        let _ = s.set_priority(BPCI_URGENT_STREAM_PRIORITY);
                    }
                    Some((conn.stable_id(), s))
                }
                Err(e) => {
                    bump(&inner.counters.frames_lost, 1);
                    tracing::debug!(peer = %peer.key, %service, "bpci stream not opened: {e}");
                    continue;
                }
            };
        }
        let Some((_, s)) = stream.as_mut() else {
            continue;
        };
        let written = match s.write_all(&frame.head_bytes()).await {
            Ok(()) => s.write_all(&frame.payload).await,
            Err(e) => Err(e),
        };
        drop(budget);
        match written {
            Ok(()) => {
                bump(&inner.counters.frames_sent, 1);
                bump(&inner.counters.payload_bytes_sent, len);
            }
            Err(e) => {
                bump(&inner.counters.frames_lost, 1);
                tracing::debug!(
                    peer = %peer.key, %service, nonce = frame.header.nonce,
                    "bpci frame lost: {e}"
                );
                stream = None;
            }
        }
    }
    // Closing. Frames still queued have no connection to go on.
    rx.close();
    while rx.try_recv().is_ok() {
        bump(&inner.counters.frames_lost, 1);
    }
    // Let the peer acknowledge everything written before the connection goes.
    if let Some((_, mut s)) = stream {
        let _ = s.finish();
        let _ = s.stopped().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, FrameSigner};
    use metanode_core::encoding::Encode;
    use metanode_core::hash::blake3_256;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_seed(&[seed; 32])
    }

    fn cluster() -> Hash32 {
        blake3_256(b"quic-test-chain")
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    async fn eventually<F: Fn() -> bool>(what: &str, f: F) {
        let waited = tokio::time::timeout(Duration::from_secs(20), async {
            while !f() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "never happened: {what}");
    }

    /// Frames no honest writer produces arrive on an authenticated
    /// connection: each is refused and counted, and the stream keeps going.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_frames_on_the_wire_are_refused_and_counted() {
        let (ka, kb, kc) = (key(1), key(2), key(3));
        let (pa, pb, pc) = (ka.public_key(), kb.public_key(), kc.public_key());
        let a = Endpoint::bind(TransportConfig::new(
            loopback(),
            ka,
            cluster(),
            vec![(pb, None), (pc, None)],
        ))
        .unwrap();
        let b = Endpoint::bind(TransportConfig::new(
            loopback(),
            kb,
            cluster(),
            vec![(pa, Some(a.local_addr()))],
        ))
        .unwrap();

        let svc = ServiceId::named("qbft");
        let signer_b = FrameSigner::new(Arc::new(key(2)), cluster(), 10);
        let signer_c = FrameSigner::new(Arc::new(key(3)), cluster(), 10);
        let f = |payload: &[u8]| {
            signer_b
                .sign(cluster(), svc, Hash32::ZERO, payload.to_vec())
                .unwrap()
        };
        let f10 = f(b"ten");
        let f11 = f(b"eleven");
        let f12 = f(b"twelve");
        let mut tampered = f(b"thirteen");
        tampered.payload = b"THIRTEEN".to_vec();
        let mut bad_sig = f(b"fourteen");
        bad_sig.signature.0[0] ^= 0x80;
        let wrong_cluster = signer_b
            .sign(blake3_256(b"elsewhere"), svc, Hash32::ZERO, b"x".to_vec())
            .unwrap();
        let from_c = signer_c
            .sign(cluster(), svc, Hash32::ZERO, b"c".to_vec())
            .unwrap();
        let f16 = f(b"last"); // nonces 13..=15 went to the bad frames above

        let mut wire = Vec::new();
        for frame in [
            &f11,
            &f10,
            &f11,
            &tampered,
            &bad_sig,
            &wrong_cluster,
            &from_c,
            &f12,
            &f16,
        ] {
            frame.encode_into(&mut wire);
        }
        let mut stream = b.send_raw(&pa, &wire).await;
        stream.finish().unwrap();

        let mut got = Vec::new();
        for _ in 0..3 {
            let m = a.recv().await.unwrap();
            assert_eq!((m.from, m.service), (pb, svc));
            got.push((m.nonce, m.payload));
        }
        assert_eq!(
            got,
            vec![
                (11, b"eleven".to_vec()),
                (12, b"twelve".to_vec()),
                (16, b"last".to_vec())
            ]
        );
        let r = a.metrics().frames_rejected;
        assert_eq!(r.replayed, 2, "{r:?}"); // f10 reordered, f11 replayed
        assert_eq!(r.digest_mismatch, 1, "{r:?}");
        assert_eq!(r.bad_signature, 1, "{r:?}");
        assert_eq!(r.wrong_cluster, 1, "{r:?}");
        assert_eq!(r.source_mismatch, 1, "{r:?}");
        assert_eq!(r.total(), 6, "{r:?}");
        assert_eq!(a.metrics().frames_received, 3);

        // A head that does not decode stops the stream: nothing after it is
        // read, and it counts as malformed.
        let mut garbage = vec![0xffu8; FRAME_HEAD_LEN];
        f(b"after garbage").encode_into(&mut garbage);
        let _stream = b.send_raw(&pa, &garbage).await;
        eventually("malformed head counted", || {
            a.metrics().frames_rejected.malformed == 1
        })
        .await;
        assert_eq!(a.metrics().frames_received, 3);
        b.close().await;
        a.close().await;
    }

    /// A dialer offering only classical X25519 cannot connect over QUIC to
    /// a hybrid-only endpoint: the group restriction holds on the real path.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn classical_only_quic_client_is_refused() {
        let (ka, kb) = (key(1), key(2));
        let (pa, pb) = (ka.public_key(), kb.public_key());
        let a = Endpoint::bind(TransportConfig::new(
            loopback(),
            ka,
            cluster(),
            vec![(pb, None)],
        ))
        .unwrap();
        let kb = Arc::new(kb);
        let certified = tls::certified_key(kb.clone()).unwrap();
        let classical = tls::provider(vec![rustls::crypto::aws_lc_rs::kx_group::X25519]);
        let client_tls = tls::client_config(classical, certified.clone(), pa).unwrap();
        let client =
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls).unwrap()));
        let quic = quinn::Endpoint::client(loopback()).unwrap();
        let err = quic
            .connect_with(client, a.local_addr(), SERVER_NAME)
            .unwrap()
            .await
            .unwrap_err();
        // The server aborts with TLS alert 40 (handshake_failure) as a QUIC
        // crypto error, naming the missing group.
        match &err {
            quinn::ConnectionError::ConnectionClosed(close) => {
                assert_eq!(close.error_code, quinn::TransportErrorCode::crypto(40));
                assert_eq!(
                    &close.reason[..],
                    b"peer is incompatible: NoKxGroupsInCommon"
                );
            }
            other => panic!("expected a crypto close, got {other:?}"),
        }
        eventually("refusal counted", || a.metrics().handshakes_refused == 1).await;

        // The same identity with the hybrid group connects.
        let hybrid = tls::provider(KeyExchange::HybridOnly.groups());
        let client_tls = tls::client_config(hybrid, certified, pa).unwrap();
        let client =
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls).unwrap()));
        let conn = quic
            .connect_with(client, a.local_addr(), SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        assert_eq!(tls::peer_key_of(&conn), Some(pa));
        eventually("accepted", || a.metrics().connections_accepted == 1).await;
        conn.close(VarInt::from_u32(0), b"done");
        a.close().await;
    }

    impl Frame {
        fn encode_into(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.to_canonical_bytes().unwrap());
        }
    }
}
