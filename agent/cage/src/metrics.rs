//! Cage counters: lock-free, read as a snapshot, rendered as Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::receipt::Decision;

/// Upper bounds (seconds) of the upstream latency histogram buckets.
pub const UPSTREAM_LATENCY_BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Shards of the per-request counters; a thread always uses the same one.
const SHARDS_COUNT: usize = 16;

/// The counters every request touches. Each worker thread writes its own
/// shard (a cache line of its own), so cores do not bounce a shared line
/// on every request; a snapshot sums the shards.
#[derive(Debug, Default)]
#[repr(align(128))]
struct RequestShard {
    requests_by_decision: [AtomicU64; Decision::ALL.len()],
    upstream_latency_buckets: [AtomicU64; UPSTREAM_LATENCY_BUCKETS_S.len()],
    upstream_latency_count: AtomicU64,
    upstream_latency_sum_us: AtomicU64,
}

fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS_COUNT;
    }
    INDEX.with(|i| *i)
}

/// Live counters; shared by every connection.
#[derive(Debug, Default)]
pub struct Metrics {
    shards: [RequestShard; SHARDS_COUNT],
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    connections_open: AtomicU64,
    connections_closed_header_timeout: AtomicU64,
    connections_closed_idle: AtomicU64,
    tls_handshakes_failed: AtomicU64,
    receipt_batches_written: AtomicU64,
    receipts_written: AtomicU64,
    receipt_write_errors: AtomicU64,
    receipt_batches_replicated: AtomicU64,
    receipt_replica_errors: AtomicU64,
    receipt_batches_replica_dropped: AtomicU64,
    receipt_batches_unpinned: AtomicU64,
    receipt_segments_started: AtomicU64,
    receipt_segments_deleted: AtomicU64,
    receipt_segment_delete_errors: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// In [`Decision::ALL`] order.
    pub requests_by_decision: Vec<(Decision, u64)>,
    /// Cumulative counts per bucket of [`UPSTREAM_LATENCY_BUCKETS_S`].
    pub upstream_latency_buckets: Vec<(f64, u64)>,
    pub upstream_latency_count: u64,
    pub upstream_latency_sum_s: f64,
    pub connections_accepted: u64,
    /// Closed at accept because `limits.connections_count_max` were open.
    pub connections_refused: u64,
    pub connections_open: u64,
    pub connections_closed_header_timeout: u64,
    pub connections_closed_idle: u64,
    pub tls_handshakes_failed: u64,
    pub receipt_batches_written: u64,
    pub receipts_written: u64,
    pub receipt_write_errors: u64,
    /// Batches also stored in the replica (the node's content store).
    pub receipt_batches_replicated: u64,
    /// Failed replica puts (each batch stays queued for a retry) and unpins.
    pub receipt_replica_errors: u64,
    /// Batches given up on by the replica queue (they are in the file).
    pub receipt_batches_replica_dropped: u64,
    /// Batches unpinned in the store past `receipts.store_pinned_batches_max`.
    pub receipt_batches_unpinned: u64,
    /// Receipt log segments started (rotation at `receipts.segment_bytes_max`).
    pub receipt_segments_started: u64,
    /// Receipt log segments deleted (or moved to `receipts.archive_dir`)
    /// past `receipts.segments_kept_max`.
    pub receipt_segments_deleted: u64,
    /// Old receipt log segments that could not be deleted (left on disk).
    pub receipt_segment_delete_errors: u64,
}

impl MetricsSnapshot {
    pub fn requests(&self, decision: Decision) -> u64 {
        self.requests_by_decision
            .iter()
            .find(|(d, _)| *d == decision)
            .map_or(0, |(_, n)| *n)
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    fn shard(&self) -> &RequestShard {
        // The index is below SHARDS_COUNT by construction.
        &self.shards[shard_index()]
    }

    pub(crate) fn request(&self, decision: Decision) {
        if let Some(c) = self.shard().requests_by_decision.get(decision.index()) {
            inc(c);
        }
    }

    pub(crate) fn upstream_latency(&self, latency: Duration) {
        let shard = self.shard();
        let s = latency.as_secs_f64();
        if let Some(i) = UPSTREAM_LATENCY_BUCKETS_S.iter().position(|b| s <= *b)
            && let Some(c) = shard.upstream_latency_buckets.get(i)
        {
            inc(c);
        }
        inc(&shard.upstream_latency_count);
        shard
            .upstream_latency_sum_us
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn connection_accepted(&self) {
        inc(&self.connections_accepted);
        inc(&self.connections_open);
    }
    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
    pub(crate) fn connection_refused(&self) {
        inc(&self.connections_refused);
    }
    pub(crate) fn header_timeout(&self) {
        inc(&self.connections_closed_header_timeout);
    }
    pub(crate) fn idle_close(&self) {
        inc(&self.connections_closed_idle);
    }
    pub(crate) fn tls_handshake_failed(&self) {
        inc(&self.tls_handshakes_failed);
    }
    pub(crate) fn receipt_batch_written(&self, receipts: u64) {
        inc(&self.receipt_batches_written);
        self.receipts_written.fetch_add(receipts, Ordering::Relaxed);
    }
    pub(crate) fn receipt_write_failed(&self) {
        inc(&self.receipt_write_errors);
    }
    pub(crate) fn receipt_batch_replicated(&self) {
        inc(&self.receipt_batches_replicated);
    }
    pub(crate) fn receipt_batch_unpinned(&self) {
        inc(&self.receipt_batches_unpinned);
    }
    pub(crate) fn receipt_segment_started(&self) {
        inc(&self.receipt_segments_started);
    }
    pub(crate) fn receipt_segment_deleted(&self) {
        inc(&self.receipt_segments_deleted);
    }
    pub(crate) fn receipt_segment_delete_failed(&self) {
        inc(&self.receipt_segment_delete_errors);
    }
    pub(crate) fn receipt_replica_failed(&self) {
        inc(&self.receipt_replica_errors);
    }
    pub(crate) fn receipt_batch_replica_dropped(&self) {
        inc(&self.receipt_batches_replica_dropped);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let sum = |f: &dyn Fn(&RequestShard) -> &AtomicU64| -> u64 {
            self.shards.iter().map(|s| get(f(s))).sum()
        };
        let mut cumulative = 0;
        MetricsSnapshot {
            requests_by_decision: Decision::ALL
                .iter()
                .enumerate()
                .map(|(i, d)| (*d, sum(&|s| &s.requests_by_decision[i])))
                .collect(),
            upstream_latency_buckets: UPSTREAM_LATENCY_BUCKETS_S
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    cumulative += sum(&|s| &s.upstream_latency_buckets[i]);
                    (*b, cumulative)
                })
                .collect(),
            upstream_latency_count: sum(&|s| &s.upstream_latency_count),
            upstream_latency_sum_s: sum(&|s| &s.upstream_latency_sum_us) as f64 / 1e6,
            connections_accepted: get(&self.connections_accepted),
            connections_refused: get(&self.connections_refused),
            connections_open: get(&self.connections_open),
            connections_closed_header_timeout: get(&self.connections_closed_header_timeout),
            connections_closed_idle: get(&self.connections_closed_idle),
            tls_handshakes_failed: get(&self.tls_handshakes_failed),
            receipt_batches_written: get(&self.receipt_batches_written),
            receipts_written: get(&self.receipts_written),
            receipt_write_errors: get(&self.receipt_write_errors),
            receipt_batches_replicated: get(&self.receipt_batches_replicated),
            receipt_replica_errors: get(&self.receipt_replica_errors),
            receipt_batches_replica_dropped: get(&self.receipt_batches_replica_dropped),
            receipt_batches_unpinned: get(&self.receipt_batches_unpinned),
            receipt_segments_started: get(&self.receipt_segments_started),
            receipt_segments_deleted: get(&self.receipt_segments_deleted),
            receipt_segment_delete_errors: get(&self.receipt_segment_delete_errors),
        }
    }
}

/// Appends the Prometheus text exposition of `s` (metric names
/// `metanode_cage_*`).
pub fn render_prometheus(s: &MetricsSnapshot, out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP metanode_cage_requests_total Requests by cage decision.\n# TYPE metanode_cage_requests_total counter"
    );
    for (d, n) in &s.requests_by_decision {
        let _ = writeln!(
            out,
            "metanode_cage_requests_total{{decision=\"{}\"}} {n}",
            d.name()
        );
    }
    let _ = writeln!(
        out,
        "# HELP metanode_cage_upstream_latency_seconds Upstream request latency (head and body).\n# TYPE metanode_cage_upstream_latency_seconds histogram"
    );
    for (b, n) in &s.upstream_latency_buckets {
        let _ = writeln!(
            out,
            "metanode_cage_upstream_latency_seconds_bucket{{le=\"{b}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "metanode_cage_upstream_latency_seconds_bucket{{le=\"+Inf\"}} {}\nmetanode_cage_upstream_latency_seconds_sum {}\nmetanode_cage_upstream_latency_seconds_count {}",
        s.upstream_latency_count, s.upstream_latency_sum_s, s.upstream_latency_count
    );
    let counters = [
        (
            "connections_accepted_total",
            "counter",
            "Client connections accepted.",
            s.connections_accepted,
        ),
        (
            "connections_refused_total",
            "counter",
            "Connections closed at accept: too many open.",
            s.connections_refused,
        ),
        (
            "connections_open",
            "gauge",
            "Client connections open now.",
            s.connections_open,
        ),
        (
            "connections_closed_header_timeout_total",
            "counter",
            "Connections closed by the header read timeout.",
            s.connections_closed_header_timeout,
        ),
        (
            "connections_closed_idle_total",
            "counter",
            "Keep-alive connections closed by the idle timeout.",
            s.connections_closed_idle,
        ),
        (
            "tls_handshakes_failed_total",
            "counter",
            "TLS handshakes that failed or timed out.",
            s.tls_handshakes_failed,
        ),
        (
            "receipt_batches_written_total",
            "counter",
            "Signed receipt batches written and synced.",
            s.receipt_batches_written,
        ),
        (
            "receipts_written_total",
            "counter",
            "Receipts written and synced.",
            s.receipts_written,
        ),
        (
            "receipt_write_errors_total",
            "counter",
            "Receipt writer failures (the cage then refuses requests).",
            s.receipt_write_errors,
        ),
        (
            "receipt_batches_replicated_total",
            "counter",
            "Signed receipt batches also stored in the node's content store.",
            s.receipt_batches_replicated,
        ),
        (
            "receipt_batches_unpinned_total",
            "counter",
            "Receipt batches unpinned in the content store past receipts.store_pinned_batches_max (the receipt log keeps them, unless their segment is deleted).",
            s.receipt_batches_unpinned,
        ),
        (
            "receipt_segments_started_total",
            "counter",
            "Receipt log segments started (rotation at receipts.segment_bytes_max).",
            s.receipt_segments_started,
        ),
        (
            "receipt_segments_deleted_total",
            "counter",
            "Oldest receipt log segments deleted (or archived) past receipts.segments_kept_max.",
            s.receipt_segments_deleted,
        ),
        (
            "receipt_segment_delete_errors_total",
            "counter",
            "Old receipt log segments that could not be deleted or archived (left in place; the next rotation or start tries again).",
            s.receipt_segment_delete_errors,
        ),
        (
            "receipt_replica_errors_total",
            "counter",
            "Failed puts (retried with the next batch) and unpins of receipt batches in the content store.",
            s.receipt_replica_errors,
        ),
        (
            "receipt_batches_replica_dropped_total",
            "counter",
            "Receipt batches the content-store queue gave up on (they stay in the receipt file).",
            s.receipt_batches_replica_dropped,
        ),
    ];
    for (name, kind, help, value) in counters {
        let _ = writeln!(
            out,
            "# HELP metanode_cage_{name} {help}\n# TYPE metanode_cage_{name} {kind}\nmetanode_cage_{name} {value}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_and_render() {
        let m = Metrics::new();
        m.request(Decision::Forwarded);
        m.request(Decision::Forwarded);
        m.request(Decision::RedLight);
        m.upstream_latency(Duration::from_micros(700));
        m.upstream_latency(Duration::from_secs(10));
        let s = m.snapshot();
        assert_eq!(s.requests(Decision::Forwarded), 2);
        assert_eq!(s.requests(Decision::RedLight), 1);
        assert_eq!(s.upstream_latency_count, 2);
        // 700 µs lands in the 1 ms bucket; 10 s only in +Inf.
        assert_eq!(s.upstream_latency_buckets[0], (0.0005, 0));
        assert_eq!(s.upstream_latency_buckets[1], (0.001, 1));
        assert_eq!(s.upstream_latency_buckets.last().map(|b| b.1), Some(1));
        let mut out = String::new();
        render_prometheus(&s, &mut out);
        assert!(out.contains("metanode_cage_requests_total{decision=\"forwarded\"} 2\n"));
        assert!(out.contains("metanode_cage_upstream_latency_seconds_count 2\n"));
        assert!(out.contains("metanode_cage_upstream_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
    }
}
