//! Every bound in the agent, in one file.
//!
//! Every queue, batch, connection, message and retry bound in the agent lives
//! here, grouped by service under a section comment. A bound that is not in
//! this file is a bound nobody reviews: the point of one file is that an
//! operator (or a reviewer) can read the whole resource envelope of a node in
//! one sitting and see how the numbers relate.
//!
//! Rules for this file:
//! - Names carry their unit and qualifier last (`…_BYTES_MAX`, `…_COUNT_MAX`).
//! - Relationships between bounds are checked at compile time with
//!   `const _: () = assert!(..)`, next to the section that introduces them.
//! - Other crates add their section at the END of the file, headed by a
//!   `// ---- <service>: <what> ----` comment; do not interleave sections.

// ---- core: canonical encoding (encoding.rs) ----

/// Largest length-prefixed byte string or UTF-8 string the canonical encoding
/// accepts. Larger payloads (blobs) are streamed and verified by range, never
/// carried whole inside one encoded value.
pub const ENCODING_BYTES_LEN_MAX: u32 = 64 * 1024 * 1024;

/// Largest element count of an encoded `Vec<T>` (for `T` other than `u8`,
/// which uses [`ENCODING_BYTES_LEN_MAX`]). The decoder additionally requires
/// that the remaining input can hold that many elements, so a hostile count
/// cannot make it allocate before the bytes are actually there.
pub const ENCODING_VEC_COUNT_MAX: u32 = 1024 * 1024;

// The length prefix is a u32; the bound must leave room to be represented.
const _: () = assert!(ENCODING_BYTES_LEN_MAX < u32::MAX);
// An encoded vector of one-byte elements must be able to reach the count bound
// without first hitting the byte bound, or the count bound would be a lie.
const _: () = assert!(ENCODING_VEC_COUNT_MAX <= ENCODING_BYTES_LEN_MAX);
// Offsets and lengths are handled as usize; 32-bit targets must still fit.
const _: () = assert!(ENCODING_BYTES_LEN_MAX as u64 <= usize::MAX as u64);

// ---- core: merkle proofs (merkle.rs) ----

/// Longest inclusion proof path accepted when decoding. Tree sizes are u64,
/// so a path has at most 64 siblings (one per level of a 2^64-leaf tree).
pub const MERKLE_PROOF_PATH_LEN_MAX: u32 = 64;

const _: () = assert!(MERKLE_PROOF_PATH_LEN_MAX as u64 == u64::BITS as u64);
const _: () = assert!(MERKLE_PROOF_PATH_LEN_MAX <= ENCODING_VEC_COUNT_MAX);

// ---- core: key files (keys.rs) ----

/// Largest key file the loader reads. A valid file is about 170 bytes; the
/// bound only stops a mistaken path (a log, a disk image) from being slurped.
pub const KEY_FILE_SIZE_BYTES_MAX: u64 = 4096;

// The text format (header + two 64-hex-digit lines) must fit comfortably.
const _: () = assert!(KEY_FILE_SIZE_BYTES_MAX >= 256);

// ---- api: http server (agent/api) ----

/// Bytes of a blob read (and hash-verified) per store call while streaming a
/// response. The first window is read and verified before the status line
/// goes out, so corruption in a blob (or requested range) up to this size
/// yields an error status; past it, the response is cut off mid-body instead
/// (the client sees a short body against `Content-Length`).
pub const API_READ_WINDOW_BYTES: u64 = 1024 * 1024;

/// Upload body chunks queued between a connection task and the blocking
/// thread writing them into the store; with hyper's bounded read buffer this
/// bounds the memory one streaming upload can pin.
pub const API_UPLOAD_CHANNEL_CHUNKS_COUNT_MAX: usize = 8;

/// After refusing an upload that grew past `api.upload_size_bytes_max`, the
/// server reads and discards up to this many more bytes of it before
/// answering. A client that sends its whole body before reading (curl,
/// most libraries) then gets a clean 413 instead of a connection reset that
/// can swallow the answer; beyond this the connection is just closed.
pub const API_UPLOAD_REFUSED_DRAIN_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// Uploads streaming into the store at once. Each holds a blocking-pool
/// thread for its whole duration, so this must stay well below the pool size
/// or reads (which also run on the pool) would starve behind uploads. More
/// uploads wait (up to the request timeout) for a slot.
pub const API_UPLOADS_STREAMING_COUNT_MAX: usize = 64;

/// Threads of the agent's blocking pool (store calls from async handlers).
pub const API_BLOCKING_THREADS_COUNT_MAX: usize = 256;

/// Read windows of one download fetched ahead of the socket, so disk reads
/// and hashing overlap with sending; a download holds at most this many
/// windows in memory.
pub const API_READ_WINDOWS_IN_FLIGHT_COUNT_MAX: usize = 2;

/// How long a graceful shutdown waits for in-flight requests before it drops
/// their connections and closes the store anyway.
pub const API_SHUTDOWN_DRAIN_MS_MAX: u64 = 10_000;

/// Entries returned by one `GET /api/v1/blobs` page when the caller gives no
/// `limit`, and the largest `limit` accepted.
pub const API_LIST_PAGE_COUNT_DEFAULT: usize = 1000;
pub const API_LIST_PAGE_COUNT_MAX: usize = 10_000;

/// Longest piece of client input (a cid, a header value) quoted back in an
/// error message, so an error body cannot be made arbitrarily large.
pub const API_ERROR_INPUT_ECHO_CHARS_MAX: usize = 128;

/// Largest `If-None-Match` list entries or `Range` specs looked at; beyond it
/// the header is treated as not matching / the range as multi-part (served
/// whole), so a hostile header costs bounded work.
pub const API_HEADER_LIST_ITEMS_COUNT_MAX: usize = 64;

/// Largest update image (a signed UKI) the API accepts; the appliance's UKI
/// is about 10 MiB and the ESP holds three of these.
pub const API_UPDATE_IMAGE_SIZE_BYTES_MAX: u64 = 40 * 1024 * 1024;
/// Largest node config document `POST /api/v1/config` accepts.
pub const API_CONFIG_SIZE_BYTES_MAX: u64 = 1024 * 1024;
/// Cage receipt-batch reads (`/api/v1/cage/receipts*`) served at once; more
/// wait. One read holds a batch (up to ~50 MB at the largest batch size)
/// in a few forms and hashes it, so the bound caps that memory and CPU.
pub const API_CAGE_BATCH_READS_COUNT_MAX: usize = 2;
/// Receipts in one page of a batch's JSON (`?offset=&limit=`), when the
/// request names no limit and at most: a page of the largest receipts
/// stays a few MB of JSON where a whole 65,536-receipt batch is tens of
/// MB, and a batch of the default size (4,096) still comes whole.
/// `format=bin` is always the whole signed batch.
pub const API_CAGE_BATCH_PAGE_RECEIPTS_COUNT_MAX: u32 = 10_000;
/// Bounds of a config trial's confirmation window.
pub const CONFIG_TRY_TIMEOUT_S_MIN: u64 = 10;
pub const CONFIG_TRY_TIMEOUT_S_MAX: u64 = 3600;
pub const CONFIG_TRY_TIMEOUT_S_DEFAULT: u64 = 60;

const _: () = assert!(CONFIG_TRY_TIMEOUT_S_MIN <= CONFIG_TRY_TIMEOUT_S_DEFAULT);
const _: () = assert!(CONFIG_TRY_TIMEOUT_S_DEFAULT <= CONFIG_TRY_TIMEOUT_S_MAX);
const _: () = assert!(API_READ_WINDOW_BYTES >= 64 * 1024);
const _: () = assert!(API_READ_WINDOW_BYTES <= ENCODING_BYTES_LEN_MAX as u64);
const _: () = assert!(API_UPLOAD_CHANNEL_CHUNKS_COUNT_MAX >= 1);
const _: () = assert!(API_READ_WINDOWS_IN_FLIGHT_COUNT_MAX >= 1);
// Leave at least as many pool threads for reads, stats and gc as uploads
// can occupy.
const _: () = assert!(2 * API_UPLOADS_STREAMING_COUNT_MAX <= API_BLOCKING_THREADS_COUNT_MAX);
const _: () = assert!(API_LIST_PAGE_COUNT_DEFAULT <= API_LIST_PAGE_COUNT_MAX);

// ---- config: node config file (config.rs) ----
// Ranges of the config fields. `NodeConfig::validate` checks them and the
// JSON Schema / CUE export publish them, so both read these constants.

/// Largest config file read. A real config is a few KiB; the bound only stops
/// a mistaken path (a disk image, /dev/zero) from being slurped into memory.
pub const CONFIG_FILE_SIZE_BYTES_MAX: u64 = 1024 * 1024;

/// Most diagnostics `config check` reports for one file; past it the rest of
/// a garbage file would only bury the first, useful errors.
pub const CONFIG_DIAGNOSTICS_COUNT_MAX: usize = 200;

/// `node.name` length in characters (a DNS label).
pub const CONFIG_NODE_NAME_LEN_RANGE: core::ops::RangeInclusive<usize> = 1..=63;

/// `api.upload_size_bytes_max`: up to 1 TiB; the store streams uploads, so
/// the bound is about how long one request may hold a connection.
pub const CONFIG_API_UPLOAD_SIZE_BYTES_MAX_RANGE: core::ops::RangeInclusive<u64> = 1..=(1 << 40);

/// `api.request_timeout_ms`: at least 100 ms (below that nothing completes),
/// at most one hour (a 1 TiB upload at ~300 MB/s).
pub const CONFIG_API_REQUEST_TIMEOUT_MS_RANGE: core::ops::RangeInclusive<u64> = 100..=3_600_000;

/// `api.connections_max`: each connection costs a task and socket buffers.
pub const CONFIG_API_CONNECTIONS_MAX_RANGE: core::ops::RangeInclusive<u32> = 1..=65_536;

/// `store.zstd_level`: zstd's normal levels; 20+ ("ultra") need a window
/// larger than a segment reader should allocate per blob.
pub const CONFIG_STORE_ZSTD_LEVEL_RANGE: core::ops::RangeInclusive<i32> = 1..=19;

/// `store.inline_size_bytes_max`: 1 KiB ..= 64 MiB.
pub const CONFIG_STORE_INLINE_SIZE_BYTES_MAX_RANGE: core::ops::RangeInclusive<u64> =
    1024..=(64 << 20);

/// `store.segment_size_bytes_max`: 1 MiB ..= 4 GiB, so an offset inside a
/// segment always fits a u32.
pub const CONFIG_STORE_SEGMENT_SIZE_BYTES_MAX_RANGE: core::ops::RangeInclusive<u64> =
    (1 << 20)..=(4 << 30);

/// `store.group_commit_batch_bytes_max`: 64 KiB ..= 1 GiB of writes per fsync.
pub const CONFIG_STORE_GROUP_COMMIT_BATCH_BYTES_MAX_RANGE: core::ops::RangeInclusive<u64> =
    (64 << 10)..=(1 << 30);

/// `store.group_commit_batch_count_max`: writes acknowledged per fsync.
pub const CONFIG_STORE_GROUP_COMMIT_BATCH_COUNT_MAX_RANGE: core::ops::RangeInclusive<u32> =
    1..=65_536;

// The cross-field rule inline <= batch <= segment must be satisfiable.
const _: () = assert!(
    *CONFIG_STORE_INLINE_SIZE_BYTES_MAX_RANGE.start()
        <= *CONFIG_STORE_GROUP_COMMIT_BATCH_BYTES_MAX_RANGE.end()
);
const _: () = assert!(
    *CONFIG_STORE_GROUP_COMMIT_BATCH_BYTES_MAX_RANGE.start()
        <= *CONFIG_STORE_SEGMENT_SIZE_BYTES_MAX_RANGE.end()
);
const _: () = assert!(*CONFIG_NODE_NAME_LEN_RANGE.start() >= 1);

// ---- chain: blocks, transactions, consensus (agent/chain) ----

/// Validators in one set. The signer bitmap and proposer index are u16;
/// BFT message cost grows with N², so a permissioned chain stays small.
pub const CHAIN_VALIDATORS_COUNT_MAX: u32 = 256;
/// Transactions in one block; bounds proposal size and execution time.
pub const CHAIN_BLOCK_TXS_COUNT_MAX: u32 = 20_000;
/// The least a proposer's adaptive block budget (`metanode_chain::node`)
/// shrinks to. The budget halves after each round timeout; this floor keeps
/// a chain whose timeouts have another cause (a crashed proposer, a
/// partition) from crawling at a few transactions per block once it heals.
/// A transfer block this size is ~50 KB: a few round trips even through a
/// collapsed congestion window.
pub const CHAIN_PROPOSAL_TXS_BUDGET_MIN: u32 = 256;
/// Where a node's block budget starts (at every start, like a congestion
/// window): it grows by half per own fast, well-filled block, so a chain
/// under load reaches `block_txs_count_max` within a few dozen heights when
/// the links allow it, while a slow path never sees a first round of
/// 10,000-transaction blocks that cannot make it (measured at 40 ± 10 ms:
/// starting at the maximum cost ~10 s of failed rounds before it settled).
pub const CHAIN_PROPOSAL_TXS_BUDGET_INITIAL: u32 = 1_024;
/// Largest opaque payload in one transaction.
pub const CHAIN_TX_PAYLOAD_BYTES_MAX: u32 = 64 * 1024;
/// Largest canonically encoded transaction accepted from a client or a peer.
pub const CHAIN_TX_SIZE_BYTES_MAX: u32 = 72 * 1024;
/// Largest encoded block (header + transactions).
pub const CHAIN_BLOCK_SIZE_BYTES_MAX: u32 = 32 * 1024 * 1024;
/// Largest receipt output.
pub const CHAIN_RECEIPT_OUTPUT_BYTES_MAX: u32 = 4 * 1024;
/// Longest chain name in a genesis document.
pub const CHAIN_NAME_LEN_MAX: u32 = 64;
/// Accounts in a genesis document.
pub const CHAIN_GENESIS_ACCOUNTS_COUNT_MAX: u32 = 100_000;

const _: () = assert!(CHAIN_VALIDATORS_COUNT_MAX <= u16::MAX as u32);
const _: () = assert!(CHAIN_TX_PAYLOAD_BYTES_MAX + 1024 <= CHAIN_TX_SIZE_BYTES_MAX);
const _: () = assert!(CHAIN_BLOCK_SIZE_BYTES_MAX <= ENCODING_BYTES_LEN_MAX);
const _: () = assert!(CHAIN_BLOCK_TXS_COUNT_MAX <= ENCODING_VEC_COUNT_MAX);
const _: () = assert!(
    CHAIN_PROPOSAL_TXS_BUDGET_MIN >= 1
        && CHAIN_PROPOSAL_TXS_BUDGET_MIN <= CHAIN_BLOCK_TXS_COUNT_MAX
);
const _: () = assert!(
    CHAIN_PROPOSAL_TXS_BUDGET_MIN <= CHAIN_PROPOSAL_TXS_BUDGET_INITIAL
        && CHAIN_PROPOSAL_TXS_BUDGET_INITIAL <= CHAIN_BLOCK_TXS_COUNT_MAX
);

/// Transactions one `TxBatch` (gossip frame, batch submission) holds at most.
pub const CHAIN_TX_BATCH_TXS_COUNT_MAX: u32 = 4_096;
/// Encoded bytes of one `TxBatch` at most: a few hundred small transfers or
/// a few maximum-size payload transactions; far below a BPCI frame.
pub const CHAIN_TX_BATCH_SIZE_BYTES_MAX: u32 = 4 * 1024 * 1024;

const _: () = assert!(CHAIN_TX_BATCH_TXS_COUNT_MAX <= ENCODING_VEC_COUNT_MAX);
const _: () = assert!(CHAIN_TX_BATCH_SIZE_BYTES_MAX >= 2 * CHAIN_TX_SIZE_BYTES_MAX);
const _: () = assert!(CHAIN_TX_BATCH_SIZE_BYTES_MAX <= BPCI_FRAME_PAYLOAD_BYTES_MAX);

// ---- chain-store: WAL and block log (agent/chain-store) ----

/// Largest safety-WAL record: the safety state holds at most one prepared
/// block plus signed consensus payloads (about 200 bytes each), so a block
/// and 4 MiB of headroom covers thousands of payloads.
pub const CHAIN_WAL_RECORD_BYTES_MAX: u32 = CHAIN_BLOCK_SIZE_BYTES_MAX + 4 * 1024 * 1024;
/// WAL size past which `persist` rewrites the file with only the new record
/// instead of appending; it also bounds what opening the WAL reads
/// (this plus one record).
pub const CHAIN_WAL_COMPACT_BYTES: u64 = 8 * 1024 * 1024;
/// Largest block-log record: an encoded block plus its commit certificate
/// (at most 256 seals of 64 bytes and a 32-byte bitmap).
pub const CHAIN_BLOCK_RECORD_BYTES_MAX: u32 = CHAIN_BLOCK_SIZE_BYTES_MAX + 64 * 1024;
/// Checksum work spent deciding whether a bad record at the end of a log is
/// a torn write or damage followed by good records; past it opening fails
/// (refusing to start is safe, dropping acknowledged data is not).
pub const CHAIN_LOG_TAIL_SCAN_BYTES_MAX: u64 = 1 << 30;

const _: () = assert!(CHAIN_WAL_RECORD_BYTES_MAX < u32::MAX - 8);
const _: () = assert!(CHAIN_BLOCK_RECORD_BYTES_MAX < u32::MAX - 8);
const _: () = assert!(CHAIN_WAL_COMPACT_BYTES >= 64 * 1024);
const _: () = assert!(CHAIN_LOG_TAIL_SCAN_BYTES_MAX >= 8 * CHAIN_WAL_RECORD_BYTES_MAX as u64);
const _: () = assert!(CHAIN_LOG_TAIL_SCAN_BYTES_MAX >= 8 * CHAIN_BLOCK_RECORD_BYTES_MAX as u64);

// ---- bpci: frames and transport (agent/bpci) ----

/// Largest BPCI frame payload. Block sync carries a whole block with its
/// commit certificate in one frame, so this is a block record plus room for
/// the carrying service's own envelope (height, request id, proofs).
pub const BPCI_FRAME_PAYLOAD_BYTES_MAX: u32 = 33 * 1024 * 1024;
/// Peers pinned by one endpoint: the validator set plus configured observers.
pub const BPCI_PEERS_COUNT_MAX: usize = 2 * CHAIN_VALIDATORS_COUNT_MAX as usize;
/// Distinct services one peer may use. Bounds the replay guard
/// (peers × services nonces), the outbound writers per peer and the QUIC
/// uni streams a peer may hold open to us (one per service).
pub const BPCI_SERVICES_PER_PEER_COUNT_MAX: usize = 16;
/// Frames queued for one (peer, service) before `send` answers `QueueFull`.
pub const BPCI_OUTBOUND_QUEUE_FRAMES_MAX: usize = 1024;
/// Payload bytes queued for one peer (all services) before `send` answers
/// `QueueFull`: room for two largest frames plus small traffic behind them.
pub const BPCI_OUTBOUND_QUEUE_BYTES_MAX: u64 = 3 * BPCI_FRAME_PAYLOAD_BYTES_MAX as u64;
/// Received frames waiting for the application to call `recv`.
pub const BPCI_INBOUND_QUEUE_FRAMES_MAX: usize = 4096;
/// Payload bytes one peer may hold in our memory (being read, or delivered
/// but not yet taken by `recv`). Past it reading that peer's streams waits,
/// and QUIC flow control pushes back on the sender; other peers go on.
pub const BPCI_PEER_INBOUND_BYTES_MAX: u64 = 2 * BPCI_FRAME_PAYLOAD_BYTES_MAX as u64;
/// TLS handshakes in progress at once; further connection attempts are
/// refused until one finishes.
pub const BPCI_HANDSHAKES_IN_FLIGHT_COUNT_MAX: usize = 64;
/// Time allowed for one outgoing connection attempt (QUIC + TLS handshake),
/// and for an incoming handshake.
pub const BPCI_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Reconnect backoff: first delay after a failed dial, doubled per failure
/// up to the maximum (also the least spacing between two dials of a peer).
pub const BPCI_RECONNECT_BACKOFF_MS_MIN: u64 = 100;
pub const BPCI_RECONNECT_BACKOFF_MS_MAX: u64 = 10_000;
/// A connection with no traffic for this long is dead; keep-alives are sent
/// well within it so an idle but healthy link stays up.
pub const BPCI_IDLE_TIMEOUT_MS: u64 = 30_000;
pub const BPCI_KEEPALIVE_INTERVAL_MS: u64 = 5_000;
/// QUIC flow-control windows: per stream (one service) and per connection.
/// They bound what a peer can make quinn buffer before we read it.
pub const BPCI_STREAM_RECEIVE_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
pub const BPCI_CONNECTION_RECEIVE_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// How long a graceful close waits for queued frames to be sent and
/// acknowledged before it closes the connections anyway.
pub const BPCI_CLOSE_DRAIN_MS_MAX: u64 = 5_000;
/// QUIC loss detection: a packet counts as lost only once it is this many
/// smoothed round trips old while a later one was acknowledged (RFC 9002's
/// time threshold; its default is 1.125). Paths between validators jitter
/// per packet (the bench's 40 ± 10 ms relay, ECMP and link aggregation on
/// real WANs), which reorders packets sent back to back by up to the jitter
/// spread, and the acknowledgement of an early packet can come ~25 % of an
/// RTT after that of a later one. Declared lost, each such packet halved
/// the congestion window: measured at 40 ± 10 ms, ~10 % of packets were
/// "lost" with the relay dropping none, the window sat at 6-9 KB and a
/// 119 KB proposal took 3.3 s to arrive, a 1.86 MB one 24 s. 1.5 RTT
/// tolerates reordering up to half a round trip; a real loss is detected
/// 0.375 RTT later than with the default, small against a round timeout.
pub const BPCI_LOSS_TIME_THRESHOLD_RTT: f32 = 1.5;
/// QUIC loss detection by packet count (RFC 9002's kPacketThreshold, 3 by
/// default) is off: a burst of hundreds of packets under per-packet jitter
/// is reordered far deeper than any small count, so only the time threshold
/// above decides (as Linux TCP's RACK does, for the same reason).
pub const BPCI_LOSS_PACKET_THRESHOLD: u32 = u32::MAX;
/// Receive buffer asked for on the endpoint's UDP socket (the kernel caps
/// it at net.core.rmem_max). Every peer may land a whole congestion window
/// at once (a proposal to all validators makes each of them send votes and
/// gossip back together), and the default (~208 KB) overflowed: losses with
/// the bench relay dropping nothing, each one halving a window of ~200 KB.
/// 4 MiB holds the windows of a handful of busy peers.
pub const BPCI_SOCKET_RECEIVE_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Send priority of the streams of the services an endpoint marks urgent
/// (consensus): QUIC sends their buffered bytes before any other stream's,
/// so a proposal or a vote never waits behind megabytes of buffered mempool
/// gossip in the same congestion window. Other streams keep quinn's 0.
pub const BPCI_URGENT_STREAM_PRIORITY: i32 = 1;

const _: () = assert!(BPCI_FRAME_PAYLOAD_BYTES_MAX >= CHAIN_BLOCK_RECORD_BYTES_MAX + 64 * 1024);
const _: () = assert!(BPCI_FRAME_PAYLOAD_BYTES_MAX <= ENCODING_BYTES_LEN_MAX);
const _: () = assert!(BPCI_OUTBOUND_QUEUE_BYTES_MAX >= BPCI_FRAME_PAYLOAD_BYTES_MAX as u64);
// One largest frame must fit the inbound budget, or it could never be read;
// permits are taken as one u32 per frame.
const _: () = assert!(BPCI_PEER_INBOUND_BYTES_MAX >= BPCI_FRAME_PAYLOAD_BYTES_MAX as u64);
const _: () = assert!(BPCI_PEER_INBOUND_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(BPCI_OUTBOUND_QUEUE_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(BPCI_OUTBOUND_QUEUE_FRAMES_MAX >= 1);
// RFC 9002 requires a packet threshold of at least 3 (ours is the maximum,
// i.e. off) and a time threshold above one round trip.
const _: () = assert!(BPCI_LOSS_TIME_THRESHOLD_RTT > 1.0);
const _: () = assert!(BPCI_URGENT_STREAM_PRIORITY > 0);
const _: () = assert!(BPCI_INBOUND_QUEUE_FRAMES_MAX >= 1);
const _: () = assert!(BPCI_SERVICES_PER_PEER_COUNT_MAX >= 1);
const _: () = assert!(BPCI_RECONNECT_BACKOFF_MS_MIN >= 1);
const _: () = assert!(BPCI_RECONNECT_BACKOFF_MS_MIN <= BPCI_RECONNECT_BACKOFF_MS_MAX);
const _: () = assert!(BPCI_KEEPALIVE_INTERVAL_MS < BPCI_IDLE_TIMEOUT_MS);
const _: () = assert!(BPCI_STREAM_RECEIVE_WINDOW_BYTES <= BPCI_CONNECTION_RECEIVE_WINDOW_BYTES);

// ---- config: chain section ----

/// `chain.block_interval_min_ms`: below 1 ms a proposer would spin; above a
/// minute the chain is not interactive any more.
pub const CONFIG_CHAIN_BLOCK_INTERVAL_MIN_MS_RANGE: core::ops::RangeInclusive<u64> = 1..=60_000;
/// `chain.empty_block_interval_ms`: the heartbeat of an idle chain.
pub const CONFIG_CHAIN_EMPTY_BLOCK_INTERVAL_MS_RANGE: core::ops::RangeInclusive<u64> = 10..=600_000;
/// `chain.round_timeout_base_ms`: the first QBFT round timeout (it doubles per
/// round up to the engine's one-minute cap, so the base may not exceed it).
pub const CONFIG_CHAIN_ROUND_TIMEOUT_BASE_MS_RANGE: core::ops::RangeInclusive<u64> = 100..=60_000;
/// `chain.peers`: validators and observers this node connects to.
pub const CONFIG_CHAIN_PEERS_COUNT_MAX: usize = CHAIN_VALIDATORS_COUNT_MAX as usize;
/// `chain.peers[].address`: a DNS name (253) plus `:` and a port.
pub const CONFIG_CHAIN_PEER_ADDRESS_LEN_MAX: usize = 253 + 1 + 5;
/// A genesis file (YAML): the largest allowed account list at about 100
/// bytes per account, with room to spare.
pub const CONFIG_CHAIN_GENESIS_FILE_SIZE_BYTES_MAX: u64 = 32 * 1024 * 1024;
/// `/api/v1/chain/heads`: how often an open head stream checks whether the
/// server is draining, so a shutdown is not held up by idle subscribers.
pub const API_CHAIN_HEADS_DRAIN_CHECK_MS: u64 = 250;
/// Longest line of the head stream a client accepts (a head event is about
/// 250 bytes of JSON).
pub const API_CHAIN_HEADS_LINE_BYTES_MAX: u64 = 64 * 1024;

const _: () = assert!(*CONFIG_CHAIN_BLOCK_INTERVAL_MIN_MS_RANGE.start() >= 1);
const _: () = assert!(
    *CONFIG_CHAIN_BLOCK_INTERVAL_MIN_MS_RANGE.start()
        <= *CONFIG_CHAIN_EMPTY_BLOCK_INTERVAL_MS_RANGE.end()
);
const _: () = assert!(API_CHAIN_HEADS_DRAIN_CHECK_MS < API_SHUTDOWN_DRAIN_MS_MAX);
const _: () = assert!(
    CONFIG_CHAIN_GENESIS_FILE_SIZE_BYTES_MAX >= CHAIN_GENESIS_ACCOUNTS_COUNT_MAX as u64 * 128
);

// ---- docklock: cage runs through the agent API (agent/api docklock.rs, metanode docklock_service.rs) ----

/// `docklock.run_timeout_s_max`: a run's wall timeout; a request's `timeout_s` may not exceed the
/// configured value, which may not exceed the range's end (a day: the launcher's own cap).
pub const CONFIG_DOCKLOCK_RUN_TIMEOUT_S_RANGE: core::ops::RangeInclusive<u64> = 1..=24 * 3600;
/// `docklock.run_timeout_s_max` when the config names none.
pub const CONFIG_DOCKLOCK_RUN_TIMEOUT_S_DEFAULT: u64 = 300;
/// Largest `POST /api/v1/docklock/runs` request body (JSON: paths, args, env, inputs).
pub const API_DOCKLOCK_REQUEST_SIZE_BYTES_MAX: usize = 1024 * 1024;
/// Declared inputs of one API run (each is copied into the cage's /in).
pub const API_DOCKLOCK_INPUTS_COUNT_MAX: usize = 64;
/// Bytes of all regular files a run leaves in /out that the agent stores as blobs. Over it, the
/// run's answer says so and no output is acknowledged (the receipt still names the outputs root).
pub const API_DOCKLOCK_OUTPUTS_SIZE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Regular files of /out stored per run (each becomes a blob and a line of the answer).
pub const API_DOCKLOCK_OUTPUTS_COUNT_MAX: usize = 1024;
/// Bytes of the launcher child's stdout and of its stderr the agent keeps (the JSON outcome is
/// one line of a few KiB; the workload's own output is relayed to stderr and cut here).
pub const API_DOCKLOCK_CHILD_OUTPUT_BYTES_MAX: usize = 256 * 1024;
/// Cage runs at once through the API: the launcher takes a CPU-pinned cgroup per run, and one at
/// a time keeps a node's runs from competing for its two cores.
pub const API_DOCKLOCK_RUNS_CONCURRENT_COUNT_MAX: usize = 1;
/// Longest `service` name of an API run (the witness record's own bound).
pub const API_DOCKLOCK_SERVICE_NAME_LEN_BYTES_MAX: usize = 256;
/// `Retry-After` of a run refused because another is in progress.
pub const API_DOCKLOCK_BUSY_RETRY_AFTER_S: u64 = 5;

const _: () = assert!(*CONFIG_DOCKLOCK_RUN_TIMEOUT_S_RANGE.start() >= 1);
const _: () =
    assert!(CONFIG_DOCKLOCK_RUN_TIMEOUT_S_DEFAULT <= *CONFIG_DOCKLOCK_RUN_TIMEOUT_S_RANGE.end());
const _: () = assert!(API_DOCKLOCK_RUNS_CONCURRENT_COUNT_MAX >= 1);
const _: () = assert!(API_DOCKLOCK_REQUEST_SIZE_BYTES_MAX as u64 <= API_CONFIG_SIZE_BYTES_MAX);
