//! Every bound of the HTTP Cage, in one place.
//!
//! Config ranges (`*_RANGE`) are what [`crate::config::CageConfig::validate`]
//! accepts; `DEFAULT_*` are the values of an omitted field. The compile-time
//! asserts at the bottom keep defaults inside their ranges and the bounds
//! consistent with each other.

use std::ops::RangeInclusive;

use metanode_core::limits::{ENCODING_BYTES_LEN_MAX, ENCODING_VEC_COUNT_MAX};

// ---- config: routes and keys ----

/// Routes in one config; routing is a linear longest-prefix scan.
pub const ROUTES_COUNT_MAX: usize = 256;
/// Longest route path prefix.
pub const ROUTE_PREFIX_LEN_BYTES_MAX: usize = 1024;
/// Keys in the key directory (inline plus directory files).
pub const KEYS_COUNT_MAX: usize = 65_536;
/// Longest key id (also the bound of the key id inside a receipt).
pub const KEY_ID_LEN_BYTES_MAX: u32 = 256;
/// Largest key file in a key directory (hex key plus whitespace).
pub const KEY_FILE_SIZE_BYTES_MAX: u64 = 1024;
/// Largest cage config file.
pub const CONFIG_FILE_SIZE_BYTES_MAX: u64 = 4 * 1024 * 1024;

// ---- config: sizes ----

pub const BODY_SIZE_BYTES_MAX_RANGE: RangeInclusive<u64> = 0..=(1024 * 1024 * 1024);
pub const DEFAULT_BODY_SIZE_BYTES_MAX: u64 = 1024 * 1024;
/// Upstream responses are collected (to hash them into the receipt before
/// the `Metanode-Receipt` header is sent) up to this size.
pub const RESPONSE_BODY_SIZE_BYTES_MAX_RANGE: RangeInclusive<u64> = 0..=(1024 * 1024 * 1024);
pub const DEFAULT_RESPONSE_BODY_SIZE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Bounds the request head (line plus headers) and an upstream response
/// head.
pub const REQUEST_HEAD_BUF_BYTES_MAX: usize = 64 * 1024;
/// Header fields accepted in one request head (and in an upstream
/// response head).
pub const REQUEST_HEADERS_COUNT_MAX: usize = 128;
/// Trailer section of a chunked body (trailers are read and dropped).
pub const CHUNK_TRAILERS_BYTES_MAX: usize = 16 * 1024;
/// Raw chunked bytes (sizes, extensions, data) may exceed the decoded body
/// limit by at most this factor plus [`REQUEST_HEAD_BUF_BYTES_MAX`]: bounds
/// memory against a peer sending one-byte chunks with long extensions.
pub const CHUNKED_OVERHEAD_FACTOR: u64 = 2;
/// Socket read size (a read asks for at least this much room).
pub const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Spare connection buffers a worker keeps for its next connections
/// ([`crate::spares`]): a spare is ~40 KiB typically and at most 8 buffers
/// of [`CONN_SPARE_BUFFER_BYTES_MAX`], so under 9 MiB per worker at worst.
pub const CONN_SPARES_COUNT_MAX: usize = 32;
/// A connection buffer that grew past this (a large body) is freed when the
/// connection ends instead of kept as a spare.
pub const CONN_SPARE_BUFFER_BYTES_MAX: usize = 2 * READ_CHUNK_BYTES;
/// Header slots a new connection's head vectors start with: typical heads
/// fit without growing (more still work; the parser's limit is
/// [`REQUEST_HEADERS_COUNT_MAX`]).
pub const CONN_SPARE_HEADERS_COUNT: usize = 32;
/// After refusing a request whose body was not read, the cage half-closes
/// and reads (discards) what the client still sends for at most this long /
/// this many bytes, so the client sees the response instead of a reset.
pub const LINGER_MS: u64 = 1_000;
pub const LINGER_BYTES_MAX: usize = 4 * 1024 * 1024;
/// A connection refused at `limits.connections_count_max` gets a 503; what
/// its client already sent is read and dropped first (at most this much,
/// without waiting) so the close does not reset the answer away: one
/// request head at its largest.
pub const REFUSED_DRAIN_BYTES_MAX: usize = REQUEST_HEAD_BUF_BYTES_MAX;

// ---- config: timeouts ----

pub const TIMEOUT_MS_RANGE: RangeInclusive<u64> = 10..=3_600_000;
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 30_000;
/// After shutdown is requested, open connections get this long to finish
/// their requests before they are dropped.
pub const SHUTDOWN_DRAIN_MS_MAX: u64 = 10_000;

// ---- config: connections and upstream pool ----

/// Worker threads (`workers: 0` = one per CPU).
pub const WORKERS_COUNT_MAX: u32 = 256;
/// Accept backlog of each worker's listener.
pub const LISTEN_BACKLOG: u32 = 4096;
/// TCP_DEFER_ACCEPT on the listeners: how long the kernel holds a
/// connection that has sent nothing before handing it over anyway (then
/// the header timeout runs from accept). The kernel counts SYN-ACK
/// retransmissions (1 s, then 3 s, 7 s, 15 s…), so 1 s is its shortest
/// step; nginx and HAProxy use 1 s too. Longer would keep silent clients in
/// the listener's SYN queue, past the header timeout.
pub const LISTEN_DEFER_ACCEPT_S: u32 = 1;

pub const CONNECTIONS_COUNT_MAX_RANGE: RangeInclusive<u32> = 1..=1_000_000;
pub const DEFAULT_CONNECTIONS_COUNT_MAX: u32 = 16_384;
pub const UPSTREAM_IDLE_CONNECTIONS_PER_HOST_RANGE: RangeInclusive<u32> = 0..=65_536;
pub const DEFAULT_UPSTREAM_IDLE_CONNECTIONS_PER_HOST: u32 = 512;
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS: u64 = 90_000;

// ---- config: signatures ----

pub const SIGNATURE_MAX_AGE_S_RANGE: RangeInclusive<u64> = 1..=86_400;
pub const DEFAULT_SIGNATURE_MAX_AGE_S: u64 = 300;
pub const SIGNATURE_CLOCK_SKEW_S_RANGE: RangeInclusive<u64> = 0..=3_600;
pub const DEFAULT_SIGNATURE_CLOCK_SKEW_S: u64 = 5;
pub const REPLAY_CACHE_ENTRIES_RANGE: RangeInclusive<u64> = 1..=16_000_000;
pub const DEFAULT_REPLAY_CACHE_ENTRIES: u64 = 1_000_000;

// ---- config: rate limits ----

/// Token buckets one limiter keeps (per IP, per key, per yellow source).
/// When a limiter's shard is full, its least recently used bucket is dropped
/// in O(1): it has the most time to have refilled, and a full bucket is the
/// same as no bucket.
pub const RATE_BUCKETS_COUNT_RANGE: RangeInclusive<u64> = 1..=16_000_000;
pub const DEFAULT_RATE_BUCKETS_COUNT_MAX: u64 = 1_000_000;
/// Locks one rate limiter's buckets are split over, each on its own cache
/// line. Every worker (one per core) takes a limiter's lock on every request;
/// with one lock they all serialize on it and its cache line moves between
/// cores per request. With 64, two workers meet on a lock for 1 in 64
/// request pairs, and the locks cost 8 KiB per limiter. A power of two so the
/// shard is a mask of the key's hash; fewer when `buckets_count_max` is
/// small (see the next bound).
pub const RATE_BUCKETS_SHARDS_COUNT_MAX: usize = 64;
/// Fewest buckets per shard. Each shard evicts when it alone is full, and
/// keys spread over shards by hash, not evenly: with 1,024 or more per shard
/// a shard fills within a few percent of the whole limiter's bound (a
/// binomial spread of about sqrt(1024) = 32), while a limiter of 16 split
/// 16 ways would evict at its second key whenever two keys met in a shard.
pub const RATE_BUCKETS_SHARD_KEYS_MIN: usize = 1024;

// ---- signature verification batches ----

/// Signatures one verification batch takes at most (per worker): enough to
/// share the final inversion well (its cost per signature is flat beyond
/// a few dozen), small enough that the last of a batch waits little.
pub const VERIFY_BATCH_COUNT_MAX: usize = 64;
/// How long a batch of two or more may wait for more signatures, from the
/// enqueue time of its oldest: the verifier then yields to the runtime once
/// (it never sleeps on a timer), so requests that arrived in the same
/// event-loop turn join. A batch of one is verified at once.
pub const VERIFY_BATCH_WAIT_US_MAX: u64 = 200;

// ---- receipts ----

pub const RECEIPT_BATCH_COUNT_RANGE: RangeInclusive<u32> = 1..=65_536;
pub const DEFAULT_RECEIPT_BATCH_COUNT_MAX: u32 = 4096;
pub const RECEIPT_FLUSH_INTERVAL_MS_RANGE: RangeInclusive<u64> = 1..=60_000;
pub const DEFAULT_RECEIPT_FLUSH_INTERVAL_MS: u64 = 200;
/// Receipt lanes (one per worker thread, see `receipt::bind_receipt_lane`);
/// the cage runs at most `WORKERS_COUNT_MAX` workers.
pub const RECEIPT_LANES_COUNT_MAX: usize = WORKERS_COUNT_MAX as usize;
/// Batches (bytes) waiting for the content store while it is slow or
/// failing; beyond this the oldest are dropped from the queue (they stay in
/// the receipt file). Four default-size batches of the largest receipts;
/// the newest batch is always kept, so one batch of the largest size
/// (`RECEIPT_FRAME_BYTES_MAX`) may exceed it.
pub const RECEIPT_REPLICA_BACKLOG_BYTES_MAX: usize = 4 * 4096 * RECEIPT_ENCODED_BYTES_MAX as usize;
/// How often a failing content store is retried with the oldest waiting batch.
pub const RECEIPT_REPLICA_RETRY_MS: u64 = 1_000;
/// How long closing waits for the content store to take what is queued.
pub const RECEIPT_REPLICA_CLOSE_WAIT_MS: u64 = 5_000;
/// How long the writer holds batches back waiting for a lower index, in
/// flush intervals (at least `RECEIPT_EARLY_WAIT_MS_MIN`). Every reserved
/// index is sealed by its lane's fill, a later batch's sweep, the timer or
/// close, with no await before it reaches the writer, so it arrives within
/// about one interval; past this the writer fails closed (a lost batch would
/// otherwise hold every later one, and the requests waiting for room,
/// forever).
pub const RECEIPT_EARLY_WAIT_FLUSH_INTERVALS: u32 = 10;
pub const RECEIPT_EARLY_WAIT_MS_MIN: u64 = 1_000;
/// Sealed batches the writer has not finished; at this many, requests wait
/// before recording (every request must get a receipt, so the proxy slows
/// down instead of dropping).
pub const RECEIPT_CHANNEL_BATCHES_COUNT_MAX: usize = 16;
/// Longest free-text detail in a receipt (an httpsig error code, a policy
/// reason).
pub const RECEIPT_DETAIL_LEN_BYTES_MAX: u32 = 256;
/// Largest encoded receipt: fixed fields plus key id and detail.
pub const RECEIPT_ENCODED_BYTES_MAX: u32 =
    256 + KEY_ID_LEN_BYTES_MAX + RECEIPT_DETAIL_LEN_BYTES_MAX;
/// Largest batch frame in a receipt file.
pub const RECEIPT_FRAME_BYTES_MAX: u32 =
    512 + *RECEIPT_BATCH_COUNT_RANGE.end() * RECEIPT_ENCODED_BYTES_MAX;
/// `receipts.segment_bytes_max`: a receipt log segment's size before the
/// next batch starts a new one (0 = never). At least 64 KiB (~500
/// receipts), so a rotation (a create and two fsyncs) stays rare next to
/// the fsync per batch; at most 64 GiB.
pub const RECEIPT_SEGMENT_BYTES_RANGE: RangeInclusive<u64> = (64 << 10)..=(64 << 30);
/// 64 MiB: at ~300 bytes per receipt, ~220k receipts, or about 11 s of
/// 20k signed requests/s, per segment.
pub const DEFAULT_RECEIPT_SEGMENT_BYTES_MAX: u64 = 64 << 20;
/// `receipts.segments_kept_max`: the oldest segments past this count are
/// deleted (0 = keep all; the default, as the audit trail is the point).
/// At least 2 otherwise: with 1, every rotation would delete the batches
/// that responses named seconds before.
pub const RECEIPT_SEGMENTS_KEPT_RANGE: RangeInclusive<u32> = 2..=1_000_000;

// ---- compile-time checks ----

const fn in_u64(v: u64, r: &RangeInclusive<u64>) -> bool {
    v >= *r.start() && v <= *r.end()
}
const fn in_u32(v: u32, r: &RangeInclusive<u32>) -> bool {
    v >= *r.start() && v <= *r.end()
}

const _: () = assert!(in_u64(
    DEFAULT_BODY_SIZE_BYTES_MAX,
    &BODY_SIZE_BYTES_MAX_RANGE
));
const _: () = assert!(in_u64(
    DEFAULT_RESPONSE_BODY_SIZE_BYTES_MAX,
    &RESPONSE_BODY_SIZE_BYTES_MAX_RANGE
));
const _: () = assert!(REQUEST_HEAD_BUF_BYTES_MAX >= 8192);
const _: () = assert!(in_u64(DEFAULT_HEADER_READ_TIMEOUT_MS, &TIMEOUT_MS_RANGE));
const _: () = assert!(in_u64(DEFAULT_IDLE_TIMEOUT_MS, &TIMEOUT_MS_RANGE));
const _: () = assert!(in_u64(DEFAULT_BODY_READ_TIMEOUT_MS, &TIMEOUT_MS_RANGE));
const _: () = assert!(in_u64(DEFAULT_UPSTREAM_TIMEOUT_MS, &TIMEOUT_MS_RANGE));
const _: () = assert!(in_u64(DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS, &TIMEOUT_MS_RANGE));
const _: () = assert!(in_u32(
    DEFAULT_CONNECTIONS_COUNT_MAX,
    &CONNECTIONS_COUNT_MAX_RANGE
));
const _: () = assert!(in_u32(
    DEFAULT_UPSTREAM_IDLE_CONNECTIONS_PER_HOST,
    &UPSTREAM_IDLE_CONNECTIONS_PER_HOST_RANGE
));
const _: () = assert!(in_u64(
    DEFAULT_SIGNATURE_MAX_AGE_S,
    &SIGNATURE_MAX_AGE_S_RANGE
));
const _: () = assert!(in_u64(
    DEFAULT_SIGNATURE_CLOCK_SKEW_S,
    &SIGNATURE_CLOCK_SKEW_S_RANGE
));
const _: () = assert!(in_u64(
    DEFAULT_REPLAY_CACHE_ENTRIES,
    &REPLAY_CACHE_ENTRIES_RANGE
));
const _: () = assert!(in_u64(
    DEFAULT_RATE_BUCKETS_COUNT_MAX,
    &RATE_BUCKETS_COUNT_RANGE
));
const _: () = assert!(RATE_BUCKETS_SHARDS_COUNT_MAX.is_power_of_two());
const _: () = assert!(in_u32(
    DEFAULT_RECEIPT_BATCH_COUNT_MAX,
    &RECEIPT_BATCH_COUNT_RANGE
));
const _: () = assert!(in_u64(
    DEFAULT_RECEIPT_FLUSH_INTERVAL_MS,
    &RECEIPT_FLUSH_INTERVAL_MS_RANGE
));
const _: () = assert!(in_u64(
    DEFAULT_RECEIPT_SEGMENT_BYTES_MAX,
    &RECEIPT_SEGMENT_BYTES_RANGE
));
// A whole batch must be one canonical byte string and one vector.
const _: () = assert!(RECEIPT_FRAME_BYTES_MAX <= ENCODING_BYTES_LEN_MAX);
const _: () = assert!(*RECEIPT_BATCH_COUNT_RANGE.end() <= ENCODING_VEC_COUNT_MAX);
const _: () = assert!(RECEIPT_CHANNEL_BATCHES_COUNT_MAX >= 1);
const _: () = assert!(VERIFY_BATCH_COUNT_MAX >= 1);
