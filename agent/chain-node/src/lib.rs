//! The running chain node: `metanode_chain::node::NodeCore` driven by real
//! time, BPCI over QUIC, the safety WAL, block and receipt logs on disk,
//! block sync, and the [`metanode_api::ChainControl`] the HTTP API serves.
//!
//! It drives the core exactly as the deterministic simulator does
//! (`metanode_chain_sim::world`), with sockets, files and clocks in place of
//! the simulated ones; neither re-implements block validation.
//!
//! # Start
//!
//! [`ChainNode::start`] opens the data directory (created 0700, locked
//! against a second node), the safety WAL, `blocks.log` and
//! `receipts.log`, then replays every stored block through a fresh
//! `LedgerApp::from_genesis`, checking each certificate against the
//! validator set of its height and the state, receipts and next-set roots
//! against execution (what the simulator's restart does). Replay also
//! rebuilds the tx index (tx hash → height, position; in memory) and the
//! account snapshot, and re-derives receipts the receipt log lacks (a crash
//! between the block append and the receipts append). Only then is the QUIC
//! endpoint bound and the loop started.
//!
//! # The loop
//!
//! One task owns the `NodeCore<LedgerApp>` and the `SafetyWal`, and is the
//! only writer of the block and receipt logs. It waits on, in this order
//! (biased `select!`): stop; the earliest pending wake-up (`WakeAt`
//! deadlines, kept in a bounded ordered set); a periodic tick
//! ([`limits::PERIODIC_TICK_MS`]: drives `on_tick`, sync retries, the
//! observer's sync polling and the status snapshot); client submissions
//! (a bounded channel with a oneshot reply); inbound BPCI frames.
//!
//! Effects run in the order the core returns them:
//! - `PersistSafety` → `SafetyWal::persist`, durable before the effects
//!   after it run (in particular the `Broadcast` of the vote it protects);
//! - `Broadcast` → the canonical bytes to every other validator of the
//!   current set on service `qbft`;
//! - `StoreBlock` → append the block (durable), then its receipts (durable),
//!   index its transactions; after the whole step, update the accounts it
//!   touched (senders, recipients, proposer), the status snapshot, and
//!   publish its [`metanode_api::HeadEvent`] — so a head subscriber that
//!   reads `account()` sees the block's effects;
//! - `WakeAt` → remember the deadline; `Behind` → start (or raise the target
//!   of) block sync; `Rejected` → counted, reason kept in the status, logged
//!   at `warn` at most once per [`limits::REJECTION_WARN_INTERVAL_MS`].
//!
//! A failed WAL, block or receipt write is fatal: the loop stops with the
//! error logged and kept ([`ChainNode::fatal_error`]), submissions answer
//! `Unavailable`, and nothing is retried (a failed fsync cannot be trusted,
//! see `metanode_chain_store::wal`). Restarting recovers from the disk.
//!
//! ## Why a dedicated thread
//!
//! fsync takes milliseconds and executing or verifying a large block takes
//! longer; on a runtime worker either would stall the QUIC tasks sharing
//! it. `block_in_place` would cover the fsyncs but not the CPU work spread
//! through every core call. So the loop runs on its own `std::thread` with a
//! current-thread tokio runtime (timers only), while the endpoint's tasks
//! stay on the caller's multi-thread runtime and keep serving connections
//! (and acknowledging frames) while the loop is busy. Every `Endpoint::send`
//! enters that runtime's context so writer tasks are spawned there, not on
//! the loop's runtime. API reads (`block`, `receipt`) share the stores with
//! the loop through one mutex (held for an append and its fsync, or for a
//! read); `account` and `status` read snapshots and never touch the disk.
//!
//! # Services on BPCI
//!
//! - `qbft`: canonical `ConsensusMessage` bytes.
//! - `mempool`: a canonical `TxBatch` (version, count, `SignedTx`s). A
//!   transaction a client submits here is gossiped once to every other
//!   validator, batched with the others admitted meanwhile (at most
//!   [`limits::GOSSIP_BATCH_TXS_COUNT_MAX`] / [`limits::GOSSIP_BATCH_SIZE_BYTES_MAX`]
//!   per frame, at most one frame per [`limits::GOSSIP_FLUSH_DELAY_MS`]
//!   per peer; a transaction after a quiet interval leaves at once), so one
//!   frame signature and its checks cover hundreds of transactions. One
//!   received by gossip goes into the mempool and is not gossiped again.
//!
//! Transaction signatures are checked off the loop: client submissions on
//! the API's task (a batch on the blocking pool), gossiped batches on the
//! endpoint runtime's blocking pool (at most
//! [`limits::GOSSIP_VERIFY_JOBS_MAX`] at once, else on the loop). The loop
//! admits `VerifiedTx`s, so consensus messages never wait behind thousands
//! of signature checks.
//! - `blocksync`: [`sync::SyncMessage`] (version byte, request or response).
//!   A response holds consecutive blocks from the requested height, bounded
//!   by count and bytes; each is fed to `NodeCore::on_synced_block` in
//!   order, its effects run before the next. The first request goes to the
//!   peer that showed us the higher height; retries every
//!   [`limits::SYNC_RETRY_MS`] rotate through the connected peers; a
//!   response that made progress is followed at once by the next request to
//!   the same peer; sync stops when the tip reaches the target.
//!
//! Every frame is decoded with the canonical decoders; bad bytes count as
//! rejected messages, never a panic. Only pinned peers (`config.peers`) can
//! connect at all (enforced by the transport's TLS).

pub mod config;
pub mod limits;
mod node;
mod recover;
mod runtime;
mod shared;
pub mod sync;

pub use config::{ChainNodeConfig, LOCK_FILE_NAME, SAFETY_WAL_NAME, StartError};
pub use node::ChainNode;
pub use runtime::{SERVICE_BLOCKSYNC, SERVICE_MEMPOOL, SERVICE_QBFT};
