//! Every bound and interval of the node runtime, with its reason. The
//! transport's own bounds (`BPCI_*`) and the chain's (`CHAIN_*`) live in
//! `metanode_core::limits`; the relations to them are checked here.

use metanode_core::limits::{BPCI_FRAME_PAYLOAD_BYTES_MAX, CHAIN_BLOCK_RECORD_BYTES_MAX};

/// Client submissions waiting for the node loop. Each is answered within
/// one loop turn (a mempool insert), so a full queue means the loop is stuck
/// behind disk or CPU: refusing with "busy" then is better backpressure than
/// letting HTTP handlers pile up memory.
pub const SUBMIT_QUEUE_COUNT_MAX: usize = 1_024;

/// Finalized heads buffered per `heads()` subscriber. At the fastest block
/// rate (one per ~20 ms) this is ~5 s of slack for a slow reader, at the
/// default rate minutes; a subscriber further behind gets `Lagged` and
/// re-reads the status (the API documents that). ~100 bytes each.
pub const HEADS_CHANNEL_COUNT_MAX: usize = 256;

/// The loop ticks the core at least this often even without a deadline: it
/// drives proposals waiting for the mempool, round timeouts whose wake was
/// dropped, sync retries and the status snapshot. 100 ms keeps the worst
/// added latency well under one block interval at default settings.
pub const PERIODIC_TICK_MS: u64 = 100;

/// A sync request without progress is retried after this long, each retry
/// to the next connected peer (the first one may be down, slow or itself
/// behind).
pub const SYNC_RETRY_MS: u64 = 500;

/// Blocks one sync response carries at most (the requester may ask for
/// fewer). With small blocks the byte budget below is never reached, so this
/// bounds the work one request costs the server (one read per block).
pub const SYNC_RESPONSE_BLOCKS_MAX: u32 = 64;

/// Encoded bytes of one sync response, except that the first block is
/// always sent whatever its size, so sync progresses past a huge block.
pub const SYNC_RESPONSE_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// Bytes a sync response adds around its blocks (version, kind, count).
pub const SYNC_RESPONSE_OVERHEAD_BYTES: u64 = 1 + 1 + 4;

// A response is at most one maximum-size block or the byte budget, plus the
// envelope; either must fit one BPCI frame.
const _: () = assert!(SYNC_RESPONSE_BYTES_MAX <= CHAIN_BLOCK_RECORD_BYTES_MAX as u64);
const _: () = assert!(
    CHAIN_BLOCK_RECORD_BYTES_MAX as u64 + SYNC_RESPONSE_OVERHEAD_BYTES
        <= BPCI_FRAME_PAYLOAD_BYTES_MAX as u64
);

/// Pending wake-up deadlines kept. The engine asks for one per round and
/// the proposer one per tick while waiting, and due ones are removed, so a
/// handful is normal; past the bound the latest is dropped (the periodic
/// tick still fires it, up to `PERIODIC_TICK_MS` late).
pub const WAKES_PENDING_COUNT_MAX: usize = 64;

/// At most one rejection per this interval is logged at `warn`; the rest go
/// to `debug`. A faulty or hostile peer can make every message a rejection,
/// and logs must not become the denial of service.
pub const REJECTION_WARN_INTERVAL_MS: u64 = 10_000;

/// Rejection reasons are cut to this length in the status snapshot: the
/// reason text comes from decoding peer bytes and must not grow unbounded.
pub const REJECTION_REASON_BYTES_MAX: usize = 512;

const _: () = assert!(SYNC_RETRY_MS >= PERIODIC_TICK_MS);
const _: () = assert!(SYNC_RESPONSE_BLOCKS_MAX >= 1);
const _: () = assert!(SUBMIT_QUEUE_COUNT_MAX >= 1 && HEADS_CHANNEL_COUNT_MAX >= 1);

/// Transactions one `mempool` gossip frame carries at most. Gossip is
/// batched because each frame costs a signature, its verification at every
/// receiver and a QUIC write: per transaction that was most of the CPU
/// (profiled: ~30 % of all cycles at 2,000 tx/s when every transaction
/// travelled alone). Hundreds per frame make that negligible.
pub const GOSSIP_BATCH_TXS_COUNT_MAX: usize = 1_024;

/// Encoded bytes of one gossip batch at most (a full batch of transfers is
/// ~190 KiB; payload transactions fill it sooner).
pub const GOSSIP_BATCH_SIZE_BYTES_MAX: usize = 1024 * 1024;

/// Gossip batches leave a node at most once per this interval (per peer);
/// a transaction arriving after a quiet interval leaves at once. Short
/// against the block interval (50 ms in the bench), long enough that a node
/// taking thousands of tx/s sends a few frames per block rather than one per
/// transaction.
pub const GOSSIP_FLUSH_DELAY_MS: u64 = 5;

const _: () = assert!(GOSSIP_BATCH_TXS_COUNT_MAX >= 1);
const _: () = assert!(
    GOSSIP_BATCH_TXS_COUNT_MAX <= metanode_core::limits::CHAIN_TX_BATCH_TXS_COUNT_MAX as usize
);
// One transaction of the largest size always fits an empty batch.
const _: () = assert!(
    metanode_core::limits::CHAIN_TX_SIZE_BYTES_MAX as usize + GOSSIP_BATCH_OVERHEAD_BYTES
        <= GOSSIP_BATCH_SIZE_BYTES_MAX
);
const _: () = assert!(
    GOSSIP_BATCH_SIZE_BYTES_MAX <= metanode_core::limits::CHAIN_TX_BATCH_SIZE_BYTES_MAX as usize
);
const _: () = assert!(GOSSIP_FLUSH_DELAY_MS < PERIODIC_TICK_MS);

/// Bytes a `TxBatch` adds around its transactions (version, count).
pub const GOSSIP_BATCH_OVERHEAD_BYTES: usize = 1 + 4;

/// Transactions one client submission (`POST /api/v1/chain/txs/batch`)
/// may carry: the API's body bound is `CHAIN_TX_BATCH_SIZE_BYTES_MAX`; this bounds
/// the loop turn that admits them (~50 µs of signature check each).
pub const SUBMIT_BATCH_TXS_COUNT_MAX: usize = 4_096;

const _: () = assert!(
    SUBMIT_BATCH_TXS_COUNT_MAX <= metanode_core::limits::CHAIN_TX_BATCH_TXS_COUNT_MAX as usize
);

/// Gossiped batches whose signatures are checked off the node loop at the
/// same time (on the endpoint runtime's blocking pool). Two keep both cores
/// of a small machine busy; past that the loop checks a batch itself, which
/// slows its intake: the backpressure.
pub const GOSSIP_VERIFY_JOBS_MAX: usize = 2;

const _: () = assert!(GOSSIP_VERIFY_JOBS_MAX >= 1);

/// Blocking jobs one block's unseen transactions are split over when a
/// consensus message carrying it is checked off the loop: both cores of a
/// small machine (the loop waits for the block anyway, so it is idle).
pub const PROPOSAL_VERIFY_JOBS_MAX: usize = 2;

/// A block with fewer unseen transactions than this is checked inline by the
/// core: at ~50 µs each that is a few milliseconds, less than the hops to the
/// blocking pool and back cost in latency.
pub const PROPOSAL_VERIFY_TXS_MIN: usize = 64;

const _: () = assert!(PROPOSAL_VERIFY_JOBS_MAX >= 1 && PROPOSAL_VERIFY_TXS_MIN >= 1);
