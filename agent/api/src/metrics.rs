//! Prometheus metrics: per-route request counts and latency, bytes in and
//! out, connection counts, and the store's own counters read at scrape time.
//!
//! Labels use the *matched route* (`/ipfs/{cid}`), never the raw path, so a
//! client cannot create unbounded series by requesting many cids.

use std::pin::Pin;
use std::sync::Arc;
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
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

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
        Self {
            registry,
            requests,
            latency,
            bytes_in,
            bytes_out,
            connections_open,
            connections_total,
        }
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
