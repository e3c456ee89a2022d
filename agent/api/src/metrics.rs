//! Prometheus metrics: per-route request counts and latency, bytes in and
//! out, connection counts, and the store's own counters read at scrape time.
//!
//! Labels use the *matched route* (`/ipfs/{cid}`), never the raw path, so a
//! client cannot create unbounded series by requesting many cids.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use metanode_store::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::chain_control::{ChainControl, ChainMetrics};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s: loopback metadata calls through multi-GiB transfers.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// All metrics of one API server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    bytes_in: Family<RouteLabels, Counter>,
    bytes_out: Family<RouteLabels, Counter>,
    pub(crate) connections_open: Gauge,
    pub(crate) connections_total: Counter,
    chain: Arc<ChainSlot>,
}

/// Why the API refused a chain submission before the node saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiTxRefusal {
    /// A single-transaction body over `CHAIN_TX_SIZE_BYTES_MAX`.
    Oversized = 0,
    /// A single-transaction body that is not a canonical `SignedTx` (or
    /// is empty).
    Undecodable = 1,
    /// A batch body over `CHAIN_TX_BATCH_SIZE_BYTES_MAX`.
    BatchOversized = 2,
    /// A batch body that is not a canonical `TxBatch` (or is empty).
    BatchUndecodable = 3,
}

impl ApiTxRefusal {
    const ALL: [ApiTxRefusal; 4] = [
        ApiTxRefusal::Oversized,
        ApiTxRefusal::Undecodable,
        ApiTxRefusal::BatchOversized,
        ApiTxRefusal::BatchUndecodable,
    ];

    /// (source, reason) labels: the same reason names as the node's.
    fn labels(self) -> (&'static str, &'static str) {
        match self {
            ApiTxRefusal::Oversized => ("api", "oversized"),
            ApiTxRefusal::Undecodable => ("api", "undecodable"),
            ApiTxRefusal::BatchOversized => ("api_batch", "oversized"),
            ApiTxRefusal::BatchUndecodable => ("api_batch", "undecodable"),
        }
    }
}

/// The chain node (once the agent hands it over) and the chain refusals
/// counted by the API itself; read by [`ChainCollector`] at scrape time.
#[derive(Default)]
struct ChainSlot {
    control: Mutex<Option<Arc<dyn ChainControl>>>,
    refusals: [AtomicU64; 4],
}

impl std::fmt::Debug for ChainSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainSlot")
    }
}

impl ChainSlot {
    fn control(&self) -> Option<Arc<dyn ChainControl>> {
        // A panic while holding this lock cannot leave a half-written
        // Option behind.
        self.control
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Metrics {
    pub fn new(store: &Store, version: &str) -> Self {
        let mut registry = Registry::with_prefix("metanode");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by matched route, method and status",
            requests.clone(),
        );
        let latency = HistogramFamily::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from request head to response head, by matched route, method and status",
            Unit::Seconds,
            latency.clone(),
        );
        let bytes_in = Family::<RouteLabels, Counter>::default();
        registry.register_with_unit(
            "http_request_body",
            "Request body bytes received, by matched route",
            Unit::Bytes,
            bytes_in.clone(),
        );
        let bytes_out = Family::<RouteLabels, Counter>::default();
        registry.register_with_unit(
            "http_response_body",
            "Response body bytes sent, by matched route",
            Unit::Bytes,
            bytes_out.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "http_connections_open",
            "HTTP connections currently open",
            connections_open.clone(),
        );
        let connections_total = Counter::default();
        registry.register(
            "http_connections",
            "HTTP connections accepted",
            connections_total.clone(),
        );
        registry.register(
            "build",
            "Agent version",
            Info::new(vec![("version".to_string(), version.to_string())]),
        );
        registry.register(
            "store_io",
            "The store's I/O backend",
            Info::new(vec![("io".to_string(), store.io_name().to_string())]),
        );
        registry.register_collector(Box::new(StoreCollector {
            store: store.clone(),
        }));
        let chain = Arc::new(ChainSlot::default());
        registry.register_collector(Box::new(ChainCollector {
            slot: chain.clone(),
        }));
        Self {
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
            connections_open,
            connections_total,
            chain,
        }
    }

    /// From now on `/metrics` also shows `chain`'s `metanode_chain_*` and
    /// `metanode_bpci_*` metrics.
    pub(crate) fn set_chain(&self, chain: Arc<dyn ChainControl>) {
        *self.chain.control.lock().unwrap_or_else(|e| e.into_inner()) = Some(chain);
    }

    /// Counts a chain submission the API refused before the node saw it.
    pub(crate) fn count_tx_refusal(&self, refusal: ApiTxRefusal) {
        // The discriminants are the array's indices (0..4).
        self.chain.refusals[refusal as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The store's counters, read fresh on every scrape instead of mirrored
/// into our own atomics (which could drift from the store's truth).
struct StoreCollector {
    store: Store,
}

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.store.stats();
        let gauges: [(&str, &str, Option<Unit>, u64); 4] = [
            ("store_blobs", "Blobs stored.", None, s.blobs_count),
            (
                "store_logical",
                "Sum of stored blob sizes.",
                Some(Unit::Bytes),
                s.bytes_logical,
            ),
            ("store_segments", "Segment files.", None, s.segments_count),
            (
                "store_segment",
                "Bytes in segment files, including garbage awaiting gc.",
                Some(Unit::Bytes),
                s.segment_bytes,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let metric =
                encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        let counters: [(&str, &str, u64); 4] = [
            (
                "store_puts",
                "Blob puts applied by the store.",
                s.puts_total,
            ),
            (
                "store_put_batches",
                "Group commits (one fdatasync each).",
                s.put_batches_total,
            ),
            ("store_gets", "Verified reads.", s.gets_total),
            (
                "store_verify_failures",
                "Reads or verify passes that found data not matching its hash.",
                s.verify_failures_total,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// The chain node's metrics, read fresh on every scrape (nothing when the
/// node runs no chain).
#[derive(Debug)]
struct ChainCollector {
    slot: Arc<ChainSlot>,
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    let metric = encoder.encode_descriptor(name, help, unit.as_ref(), gauge.metric_type())?;
    gauge.encode(metric)
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    let metric = encoder.encode_descriptor(name, help, unit.as_ref(), counter.metric_type())?;
    counter.encode(metric)
}

/// One counter family: a series per label set.
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for ChainCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(chain) = self.slot.control() else {
            return Ok(());
        };
        let m: ChainMetrics = chain.metrics();
        let e = &mut encoder;
        gauge(
            e,
            "chain_height",
            "Height of the last finalized block.",
            None,
            m.height,
        )?;
        gauge(
            e,
            "chain_consensus_height",
            "Height consensus is deciding.",
            None,
            m.consensus_height,
        )?;
        gauge(
            e,
            "chain_round",
            "Consensus round at that height (0 when the first proposal is decided).",
            None,
            u64::from(m.consensus_round),
        )?;
        gauge(
            e,
            "chain_mempool_txs",
            "Transactions waiting in the mempool.",
            None,
            m.mempool_txs as u64,
        )?;
        gauge(
            e,
            "chain_mempool",
            "Encoded size of the transactions waiting in the mempool.",
            Some(Unit::Bytes),
            m.mempool_bytes as u64,
        )?;
        counters(
            e,
            "chain_blocks_committed",
            "Finalized blocks stored: decided by this node's consensus, or fetched by block sync.",
            [
                ([("via", "consensus")], m.blocks_decided),
                ([("via", "sync")], m.blocks_synced),
            ],
        )?;
        counter(
            e,
            "chain_txs_committed",
            "Transactions in the finalized blocks stored.",
            None,
            m.txs_committed,
        )?;
        let api = ApiTxRefusal::ALL.map(|r| {
            let (source, reason) = r.labels();
            (
                source,
                reason,
                self.slot.refusals[r as usize].load(Ordering::Relaxed),
            )
        });
        counters(
            e,
            "chain_txs_rejected",
            "Transactions refused, by where (api: the HTTP body; client: the node's checks of a submission; gossip: from a peer) and why.",
            api.into_iter()
                .chain(m.txs_rejected.iter().copied())
                .map(|(source, reason, n)| ([("source", source), ("reason", reason)], n)),
        )?;
        counter(
            e,
            "chain_messages_received",
            "Consensus messages received from peers.",
            None,
            m.messages_received,
        )?;
        counters(
            e,
            "chain_messages_rejected",
            "Peer messages the node dropped (undecodable frames, invalid consensus messages, refused synced blocks), by reason.",
            m.messages_rejected
                .iter()
                .map(|(reason, n)| ([("reason", *reason)], *n)),
        )?;
        counter(
            e,
            "chain_round_timeouts",
            "Consensus rounds that ran out of time.",
            None,
            m.round_timeouts,
        )?;
        counter(
            e,
            "chain_round_skips",
            "Jumps to a higher round because f + 1 validators were there.",
            None,
            m.round_skips,
        )?;
        counter(
            e,
            "chain_round_changes_sent",
            "Round-change messages this validator signed and sent.",
            None,
            m.round_changes_sent,
        )?;
        gauge(
            e,
            "chain_sync_target_height",
            "Height block sync is fetching up to (0 when not behind).",
            None,
            m.sync_target_height,
        )?;
        counter(
            e,
            "chain_sync_requests_sent",
            "Block-sync requests sent (first asks and retries).",
            None,
            m.sync_requests_sent,
        )?;
        counter(
            e,
            "chain_sync_requests_served",
            "Block-sync requests answered for peers.",
            None,
            m.sync_requests_served,
        )?;
        let b = &m.bpci;
        counter(
            e,
            "bpci_frames_sent",
            "Frames written to QUIC.",
            None,
            b.frames_sent,
        )?;
        counter(
            e,
            "bpci_frames_received",
            "Frames received and accepted.",
            None,
            b.frames_received,
        )?;
        counter(
            e,
            "bpci_payload_sent",
            "Frame payload bytes written to QUIC.",
            Some(Unit::Bytes),
            b.payload_bytes_sent,
        )?;
        counter(
            e,
            "bpci_payload_received",
            "Frame payload bytes accepted.",
            Some(Unit::Bytes),
            b.payload_bytes_received,
        )?;
        counters(
            e,
            "bpci_frames_rejected",
            "Received frames refused, by reason.",
            b.frames_rejected
                .iter()
                .map(|(reason, n)| ([("reason", *reason)], *n)),
        )?;
        counter(
            e,
            "bpci_frames_lost",
            "Frames queued but not written (the connection failed under them).",
            None,
            b.frames_lost,
        )?;
        counter(
            e,
            "bpci_frames_refused_queue_full",
            "Sends refused because the peer's outbound queue was full.",
            None,
            b.frames_refused_queue_full,
        )?;
        counters(
            e,
            "bpci_connections",
            "Connections established (dialed by us or accepted), and dialed ones dropped because the peer dialed again (it restarted).",
            [
                ([("event", "dialed")], b.connections_dialed),
                ([("event", "accepted")], b.connections_accepted),
                ([("event", "superseded")], b.connections_superseded),
            ],
        )?;
        counter(
            e,
            "bpci_dial_failures",
            "Dials that failed (unreachable, timed out, wrong key).",
            None,
            b.dial_failures,
        )?;
        counter(
            e,
            "bpci_handshakes_refused",
            "Incoming handshakes refused (key not pinned, timeout, too many at once).",
            None,
            b.handshakes_refused,
        )?;
        let mut metric = e.encode_descriptor(
            "bpci_peer_connected",
            "1 if a live connection to the pinned peer exists.",
            None,
            MetricType::Gauge,
        )?;
        for (peer, connected) in &b.peers {
            let labels = [("peer", peer.to_string())];
            ConstGauge::new(i64::from(*connected)).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        // Extension methods are client-chosen strings: fold them into one
        // series.
        _ => "other",
    }
}

/// Middleware recording one request: counts, latency to the response head,
/// and body bytes in both directions as they flow.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(request.method());
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let route_labels = RouteLabels { route };
    let counted_in = Counted {
        inner: body,
        counter: metrics.bytes_in.get_or_create(&route_labels).clone(),
    };
    let request = Request::from_parts(parts, Body::new(counted_in));
    let response = next.run(request).await;
    let labels = RequestLabels {
        route: route_labels.route.clone(),
        method,
        status: response.status().as_u16(),
    };
    let elapsed = started.elapsed();
    tracing::debug!(
        method,
        route = %labels.route,
        status = labels.status,
        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .latency
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    let out_counter = metrics.bytes_out.get_or_create(&route_labels).clone();
    response.map(|body| {
        Body::new(Counted {
            inner: body,
            counter: out_counter,
        })
    })
}

/// A body that adds each data frame's length to a counter as it passes.
struct Counted {
    inner: Body,
    counter: Counter,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.counter.inc_by(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
