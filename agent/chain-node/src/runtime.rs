//! The node loop: one task on a dedicated thread owns the `NodeCore`, the
//! safety WAL and (through [`Shared::stores`]) the block and receipt logs,
//! and executes the core's effects in order (see the crate docs).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metanode_api::HeadEvent;
use metanode_bpci::{Endpoint, Inbound, ServiceId};
use metanode_chain::app::LedgerApp;
use metanode_chain::mempool::{MempoolError, VerifiedTx};
use metanode_chain::node::{NodeConfig, NodeCore, NodeEffect, NodeStart};
use metanode_chain::qbft::{ConsensusMessage, SafetyState};
use metanode_chain::types::{
    Block, CHAIN_ENCODING_VERSION, ChainId, FinalizedBlock, Genesis, Height, Receipt, SignedTx,
    TxBatch,
};
use metanode_chain_store::{FsDisk, SafetyWal};
use metanode_core::encoding::{Decode, Encode};
use metanode_core::hash::Hash32;
use metanode_core::keys::{PublicKey, SigningKey};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::limits::{
    GOSSIP_BATCH_OVERHEAD_BYTES, GOSSIP_BATCH_SIZE_BYTES_MAX, GOSSIP_BATCH_TXS_COUNT_MAX,
    GOSSIP_FLUSH_DELAY_MS, GOSSIP_VERIFY_JOBS_MAX, PERIODIC_TICK_MS, PROPOSAL_VERIFY_JOBS_MAX,
    PROPOSAL_VERIFY_TXS_MIN, REJECTION_REASON_BYTES_MAX, REJECTION_WARN_INTERVAL_MS,
    SYNC_RESPONSE_BLOCKS_MAX, SYNC_RESPONSE_BYTES_MAX, SYNC_RETRY_MS, WAKES_PENDING_COUNT_MAX,
};
use crate::recover::{account_info, index_block, touched_accounts};
use crate::shared::{Counters, MESSAGE_REJECT_REASONS, Shared, Snapshot, TxSource};
use crate::sync::SyncMessage;

/// BPCI service names.
pub const SERVICE_QBFT: &str = "qbft";
pub const SERVICE_MEMPOOL: &str = "mempool";
pub const SERVICE_BLOCKSYNC: &str = "blocksync";

/// Requests from the API side to the loop.
#[derive(Debug)]
pub(crate) enum Command {
    Submit {
        /// Signature already checked by the caller (off the loop). Boxed:
        /// a transaction is ~400 bytes, the batch variant a few words.
        tx: Box<VerifiedTx>,
        /// The canonical bytes, already encoded (and size-checked) by the
        /// caller; gossiped as they are.
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<Hash32, MempoolError>>,
    },
    /// Many client transactions in one loop turn (the batch route); the
    /// answers come back in the same order.
    SubmitBatch {
        /// Each transaction with its canonical bytes (size- and
        /// signature-checked by the caller, off the loop).
        txs: Vec<(VerifiedTx, Vec<u8>)>,
        reply: oneshot::Sender<Vec<Result<Hash32, MempoolError>>>,
    },
}

/// Admitted client transactions waiting to be gossiped together (see
/// [`limits::GOSSIP_BATCH_TXS_COUNT_MAX`]). The payload is built as the
/// canonical `TxBatch` encoding directly from the transactions' canonical
/// bytes, so nothing is encoded twice.
#[derive(Debug, Default)]
struct GossipOut {
    /// Concatenated canonical `SignedTx` bytes.
    txs_bytes: Vec<u8>,
    count: usize,
    /// When the first transaction of the batch arrived.
    since: Option<Instant>,
    /// When the last batch left.
    last_flush: Option<Instant>,
}

impl GossipOut {
    /// Whether `len` more bytes would overflow the batch.
    fn would_overflow(&self, len: usize) -> bool {
        self.count >= GOSSIP_BATCH_TXS_COUNT_MAX
            || GOSSIP_BATCH_OVERHEAD_BYTES + self.txs_bytes.len() + len
                > GOSSIP_BATCH_SIZE_BYTES_MAX
    }

    fn push(&mut self, tx_bytes: &[u8]) {
        self.txs_bytes.extend_from_slice(tx_bytes);
        self.count += 1;
        self.since.get_or_insert_with(Instant::now);
    }

    /// When the pending batch should leave: at once if no batch left in
    /// the last [`GOSSIP_FLUSH_DELAY_MS`] (a lone transaction is not held
    /// back), else that long after the last one. So frames per peer stay
    /// at most one per delay under load, and a quiet node adds no delay.
    fn flush_at(&self) -> Option<Instant> {
        let since = self.since?;
        let delay = Duration::from_millis(GOSSIP_FLUSH_DELAY_MS);
        Some(match self.last_flush {
            Some(last) => since.max(last + delay),
            None => since,
        })
    }

    /// The `TxBatch` payload (version, count, transactions), emptying the
    /// buffer; `None` when empty.
    fn take_payload(&mut self) -> Option<Vec<u8>> {
        if self.count == 0 {
            return None;
        }
        let mut payload = Vec::with_capacity(GOSSIP_BATCH_OVERHEAD_BYTES + self.txs_bytes.len());
        payload.push(CHAIN_ENCODING_VERSION);
        // `count` is bounded by GOSSIP_BATCH_TXS_COUNT_MAX, far below u32.
        payload.extend_from_slice(&(self.count as u32).to_le_bytes());
        payload.append(&mut self.txs_bytes);
        self.count = 0;
        self.since = None;
        self.last_flush = Some(Instant::now());
        Some(payload)
    }
}

/// A write or fsync failed: the loop must stop (see `metanode_chain_store::wal`
/// for why a failed fsync is never retried).
#[derive(Debug)]
pub(crate) struct Fatal(pub String);

/// What the loop thread is started with.
pub(crate) struct LoopParts {
    pub node_config: NodeConfig,
    pub key: SigningKey,
    pub genesis: Genesis,
    pub start: NodeStart<LedgerApp>,
    pub wal: SafetyWal<FsDisk, SafetyState>,
    pub shared: Arc<Shared>,
    pub net: Net,
    pub commands: mpsc::Receiver<Command>,
    pub stop: watch::Receiver<bool>,
    /// Answered once the core exists and its first effects ran (Ok), or
    /// with the reason it could not start.
    pub ready: oneshot::Sender<Result<(), String>>,
}

/// The endpoint plus the multi-thread runtime it lives on.
///
/// `Endpoint::send` may spawn the (peer, service) writer task with
/// `tokio::spawn`; called from the loop thread that would land on the
/// loop's own current-thread runtime, which blocks in fsync and dies with
/// the loop. Entering the endpoint's runtime around every send keeps all
/// QUIC work there.
#[derive(Debug, Clone)]
pub(crate) struct Net {
    pub endpoint: Arc<Endpoint>,
    pub runtime: tokio::runtime::Handle,
    pub qbft: ServiceId,
    pub mempool: ServiceId,
    pub blocksync: ServiceId,
}

impl Net {
    pub fn new(endpoint: Arc<Endpoint>, runtime: tokio::runtime::Handle) -> Net {
        Net {
            endpoint,
            runtime,
            qbft: ServiceId::named(SERVICE_QBFT),
            mempool: ServiceId::named(SERVICE_MEMPOOL),
            blocksync: ServiceId::named(SERVICE_BLOCKSYNC),
        }
    }

    fn send(&self, peer: &PublicKey, service: ServiceId, payload: Vec<u8>) {
        let _runtime = self.runtime.enter();
        if let Err(e) = self.endpoint.send(peer, service, payload) {
            // Delivery is at most once by design; consensus and sync
            // retransmit at their level.
            tracing::debug!(%peer, %service, "frame not queued: {e}");
        }
    }
}

/// The block a consensus message carries, if any.
fn consensus_block(msg: &ConsensusMessage) -> Option<&Block> {
    match msg {
        ConsensusMessage::Proposal { block, .. } => Some(block),
        ConsensusMessage::RoundChange {
            prepared_block: Some(block),
            ..
        } => Some(block),
        _ => None,
    }
}

/// QUIC path state (round trip, congestion window, losses) is logged this
/// often: enough to see a window collapse during a slow round.
const PATH_STATS_LOG_INTERVAL_MS: u64 = 2_000;

/// Milliseconds since the Unix epoch: block timestamps are wall-clock time
/// (validators check them against their own clocks).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// When a wall-clock deadline falls on the monotonic clock.
fn instant_of(at_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms()))
}

/// Runs the loop on the calling thread (a dedicated one) until stopped,
/// the API side goes away, or a write fails.
pub(crate) fn run_thread(parts: LoopParts) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build();
    match runtime {
        Ok(runtime) => {
            let shared = parts.shared.clone();
            // A panic here is an invariant of the core failing (e.g. a
            // committed state root differing from the decided header): the
            // node must stop, and the API should say why rather than
            // "shutting down".
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runtime.block_on(run(parts));
            }));
            if let Err(panic) = ran {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                let reason = format!("the node loop panicked: {what}");
                tracing::error!("{reason}");
                *shared.fatal.lock() = Some(reason);
            }
        }
        Err(e) => {
            let reason = format!("building the node loop's runtime: {e}");
            tracing::error!("{reason}");
            *parts.shared.fatal.lock() = Some(reason.clone());
            let _ = parts.ready.send(Err(reason));
        }
    }
}

async fn run(parts: LoopParts) {
    let LoopParts {
        node_config,
        key,
        genesis,
        start,
        wal,
        shared,
        net,
        mut commands,
        mut stop,
        ready,
    } = parts;
    let me = key.public_key();
    let (core, effects) = NodeCore::new(node_config, key, &genesis, start, now_ms());
    let (checked_tx, mut checked_rx) = mpsc::channel(GOSSIP_VERIFY_JOBS_MAX);
    let (block_checked_tx, mut block_checked_rx) = mpsc::channel(1);
    let mut node = NodeLoop {
        core,
        wal,
        shared,
        net,
        me,
        wakes: BTreeSet::new(),
        behind: None,
        next_poll: Instant::now(),
        rotation: 0,
        touched: BTreeSet::new(),
        to_index: Vec::new(),
        heads: Vec::new(),
        last_warn: None,
        syncing: false,
        gossip: GossipOut::default(),
        gossip_verify: GossipVerify {
            permits: Arc::new(tokio::sync::Semaphore::new(GOSSIP_VERIFY_JOBS_MAX)),
            results: checked_tx,
        },
        block_verify: BlockVerify {
            permit: Arc::new(tokio::sync::Semaphore::new(1)),
            results: block_checked_tx,
        },
        chain_id: genesis.chain_id(),
        next_path_log: Instant::now(),
    };
    let first = node.apply(effects);
    node.finish_batch(first.is_ok());
    if let Err(Fatal(reason)) = first {
        node.stop_fatal(&reason);
        let _ = ready.send(Err(reason));
        return;
    }
    let _ = ready.send(Ok(()));

    let mut periodic = tokio::time::interval(Duration::from_millis(PERIODIC_TICK_MS));
    periodic.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let endpoint = node.net.endpoint.clone();
    loop {
        let wake = node.wakes.first().map(|at| instant_of(*at));
        let gossip_at = node.gossip.flush_at();
        let step = tokio::select! {
            // Stop first, then timers, then work: a flood of frames cannot
            // starve timeouts, and a stop is never queued behind anything.
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                node.on_wake()
            }
            () = tokio::time::sleep_until(gossip_at.unwrap_or_else(Instant::now)), if gossip_at.is_some() => {
                node.flush_gossip();
                Ok(())
            }
            _ = periodic.tick() => node.on_periodic(),
            Some(verified) = block_checked_rx.recv() => node.on_block_verified(verified),
            Some(checked) = checked_rx.recv() => {
                node.admit_gossip(checked);
                Ok(())
            }
            command = commands.recv() => match command {
                Some(command) => node.on_command(command),
                // The ChainNode is gone.
                None => break,
            },
            inbound = endpoint.recv() => match inbound {
                Some(inbound) => node.on_inbound(inbound),
                None => break,
            },
        };
        node.finish_batch(step.is_ok());
        if let Err(Fatal(reason)) = step {
            node.stop_fatal(&reason);
            return;
        }
    }
    tracing::info!(height = node.core.tip().height, "chain node loop stopped");
}

/// Block sync in progress: a peer showed us `target`.
#[derive(Debug)]
struct Behind {
    target: Height,
    first_peer: PublicKey,
    attempts: u32,
    retry_at: Instant,
}

struct NodeLoop {
    core: NodeCore<LedgerApp>,
    wal: SafetyWal<FsDisk, SafetyState>,
    shared: Arc<Shared>,
    net: Net,
    me: PublicKey,
    /// Pending wake-up deadlines (wall-clock ms), earliest first.
    wakes: BTreeSet<u64>,
    behind: Option<Behind>,
    /// Observers (not in the validator set) receive no votes, so nothing
    /// tells them they are behind: they ask a peer for new blocks this
    /// often instead.
    next_poll: Instant,
    /// Round-robin position over the peers for sync retries.
    rotation: usize,
    /// Accounts changed by the blocks stored in this batch.
    touched: BTreeSet<PublicKey>,
    /// Transactions of the blocks stored in this batch, indexed (made
    /// visible to `receipt()`) once the batch is done.
    to_index: Vec<(Height, Vec<Hash32>)>,
    /// Heads stored in this batch, published once the batch is done.
    heads: Vec<HeadEvent>,
    last_warn: Option<Instant>,
    /// Set while the effects of a synced block run: its `StoreBlock` counts
    /// as synced, not decided.
    syncing: bool,
    /// Admitted client transactions not yet gossiped.
    gossip: GossipOut,
    /// Gossiped batches whose signatures are being checked off the loop.
    gossip_verify: GossipVerify,
    block_verify: BlockVerify,
    chain_id: ChainId,
    next_path_log: Instant,
}

/// A consensus message whose block's unseen transactions were checked off
/// the loop ([`NodeLoop::preverify_block`]).
#[derive(Debug)]
struct BlockVerified {
    from: PublicKey,
    msg: ConsensusMessage,
    /// Its encoded size, for the log.
    bytes: usize,
    /// The transactions whose signatures verified.
    txs: Vec<VerifiedTx>,
}

/// The off-loop check of one block at a time: its slot and the channel the
/// result comes back on.
#[derive(Debug)]
struct BlockVerify {
    permit: Arc<tokio::sync::Semaphore>,
    results: mpsc::Sender<BlockVerified>,
}

/// A gossiped batch after its signature checks.
#[derive(Debug)]
struct GossipChecked {
    from: PublicKey,
    txs: Vec<Result<VerifiedTx, MempoolError>>,
}

/// The off-loop signature checks of gossiped batches: job slots and the
/// channel their results come back on (as many as there are slots, so a
/// job never waits long to hand its result over).
#[derive(Debug)]
struct GossipVerify {
    permits: Arc<tokio::sync::Semaphore>,
    results: mpsc::Sender<GossipChecked>,
}

impl NodeLoop {
    fn stop_fatal(&mut self, reason: &str) {
        tracing::error!(
            height = self.core.tip().height,
            "chain node stopped: {reason}; restart the node to recover from what is on disk"
        );
        *self.shared.fatal.lock() = Some(reason.to_owned());
    }

    fn tick(&mut self) -> Result<(), Fatal> {
        let mut out = Vec::new();
        self.core.on_tick(now_ms(), &mut out);
        self.apply(out)
    }

    fn on_wake(&mut self) -> Result<(), Fatal> {
        let now = now_ms();
        self.wakes.retain(|at| *at > now);
        self.tick()
    }

    fn on_periodic(&mut self) -> Result<(), Fatal> {
        self.tick()?;
        let now = Instant::now();
        if self.behind.as_ref().is_some_and(|b| now >= b.retry_at) {
            self.request_sync(None);
        }
        if self.behind.is_none() && !self.core.engine().is_validator() && now >= self.next_poll {
            self.next_poll = now + Duration::from_millis(SYNC_RETRY_MS);
            if let Some(peer) = self.rotate_peer() {
                self.send_sync_request(&peer);
            }
        }
        self.update_snapshot();
        if now >= self.next_path_log && tracing::enabled!(tracing::Level::DEBUG) {
            self.next_path_log = now + Duration::from_millis(PATH_STATS_LOG_INTERVAL_MS);
            for (peer, p) in self.net.endpoint.path_stats() {
                tracing::debug!(
                    %peer,
                    rtt_ms = p.rtt_ms,
                    cwnd_bytes = p.cwnd_bytes,
                    sent_packets = p.sent_packets,
                    lost_packets = p.lost_packets,
                    congestion_events = p.congestion_events,
                    height = self.core.tip().height + 1,
                    round = self.core.engine().round(),
                    "bpci path"
                );
            }
        }
        Ok(())
    }

    fn on_command(&mut self, command: Command) -> Result<(), Fatal> {
        match command {
            Command::Submit { tx, bytes, reply } => {
                let result = self.admit_client_tx(*tx, &bytes);
                let _ = reply.send(result);
            }
            Command::SubmitBatch { txs, reply } => {
                let results = txs
                    .into_iter()
                    .map(|(tx, bytes)| self.admit_client_tx(tx, &bytes))
                    .collect();
                let _ = reply.send(results);
            }
        }
        Ok(())
    }

    /// Admits a client transaction and queues it for gossip. Gossiped once,
    /// by the node the client chose; receivers do not re-gossip.
    fn admit_client_tx(&mut self, tx: VerifiedTx, bytes: &[u8]) -> Result<Hash32, MempoolError> {
        let result = self.core.submit_verified_tx(tx).map(|outcome| outcome.tx);
        match &result {
            Ok(hash) => {
                tracing::trace!(tx = %hash, "transaction admitted; queued for gossip");
                if self.gossip.would_overflow(bytes.len()) {
                    self.flush_gossip();
                }
                self.gossip.push(bytes);
                if self.gossip.count >= GOSSIP_BATCH_TXS_COUNT_MAX {
                    self.flush_gossip();
                }
            }
            Err(e) => {
                self.shared.counters.reject_tx(TxSource::Client, e);
                tracing::debug!("transaction refused: {e}");
            }
        }
        result
    }

    /// Sends the pending gossip batch, the same bytes to every other
    /// validator.
    fn flush_gossip(&mut self) {
        let Some(payload) = self.gossip.take_payload() else {
            return;
        };
        let peers = self.other_validators();
        let mut payload = Some(payload);
        for (i, peer) in peers.iter().enumerate() {
            // The last peer gets the buffer itself, the others a copy.
            let bytes = if i + 1 == peers.len() {
                payload.take().unwrap_or_default()
            } else {
                payload.clone().unwrap_or_default()
            };
            self.net.send(peer, self.net.mempool, bytes);
        }
    }

    /// Checks the signatures of a gossiped batch on the endpoint runtime's
    /// blocking pool (at most [`GOSSIP_VERIFY_JOBS_MAX`] batches at once);
    /// the loop admits the result when it comes back
    /// ([`NodeLoop::admit_gossip`]). A consensus message arriving meanwhile
    /// is handled at once instead of waiting behind hundreds of signature
    /// checks. With every job slot taken the batch is checked here, on the
    /// loop: that is the backpressure (the inbound queue then fills and
    /// QUIC flow control slows the senders).
    fn verify_gossip(&mut self, from: PublicKey, txs: Vec<SignedTx>) {
        let chain_id = self.chain_id;
        let job = (txs, chain_id);
        match self.gossip_verify.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let results = self.gossip_verify.results.clone();
                let (txs, chain_id) = job;
                self.net.runtime.spawn_blocking(move || {
                    let checked = txs
                        .into_iter()
                        .map(|tx| VerifiedTx::check(tx, chain_id))
                        .collect();
                    // The loop is gone when this fails: nothing to do.
                    let _ = results.blocking_send(GossipChecked { from, txs: checked });
                    drop(permit);
                });
            }
            Err(_) => {
                let (txs, chain_id) = job;
                let txs = txs
                    .into_iter()
                    .map(|tx| VerifiedTx::check(tx, chain_id))
                    .collect();
                self.admit_gossip(GossipChecked { from, txs });
            }
        }
    }

    /// Admits the checked transactions of one gossip batch.
    fn admit_gossip(&mut self, checked: GossipChecked) {
        let GossipChecked { from, txs } = checked;
        for tx in txs {
            // Duplicates and stale nonces are normal: clients may hand one
            // transaction to several nodes, and a block may have committed
            // it while its signature was being checked.
            let admitted = tx.and_then(|tx| self.core.submit_verified_tx(tx));
            if let Err(e) = admitted {
                self.shared.counters.reject_tx(TxSource::Gossip, &e);
                tracing::trace!(peer = %from, "gossiped transaction not admitted: {e}");
            }
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) -> Result<(), Fatal> {
        let Inbound {
            from,
            service,
            payload,
            ..
        } = inbound;
        if service == self.net.qbft {
            Counters::bump(&self.shared.counters.messages_received);
            match ConsensusMessage::from_canonical_bytes(&payload) {
                Ok(msg) => {
                    if let Some(msg) = self.preverify_block(from, msg, payload.len()) {
                        self.on_consensus(from, msg, payload.len())
                    } else {
                        Ok(())
                    }
                }
                Err(e) => {
                    self.reject(
                        Some(from),
                        "qbft_undecodable",
                        format!("qbft frame does not decode: {e}"),
                    );
                    Ok(())
                }
            }
        } else if service == self.net.mempool {
            match TxBatch::from_canonical_bytes(&payload) {
                Ok(batch) => self.verify_gossip(from, batch.txs),
                Err(e) => self.reject(
                    Some(from),
                    "mempool_undecodable",
                    format!("mempool frame does not decode: {e}"),
                ),
            }
            Ok(())
        } else if service == self.net.blocksync {
            match SyncMessage::from_canonical_bytes(&payload) {
                Ok(SyncMessage::Request {
                    from_height,
                    max_blocks,
                }) => {
                    self.serve_sync(&from, from_height, max_blocks);
                    Ok(())
                }
                Ok(SyncMessage::Response { blocks }) => self.on_synced(&from, blocks),
                Err(e) => {
                    self.reject(
                        Some(from),
                        "blocksync_undecodable",
                        format!("blocksync frame does not decode: {e}"),
                    );
                    Ok(())
                }
            }
        } else {
            self.reject(
                Some(from),
                "unknown_service",
                format!("frame for unknown service {service}"),
            );
            Ok(())
        }
    }

    /// Hands one consensus message to the core.
    fn on_consensus(
        &mut self,
        from: PublicKey,
        msg: ConsensusMessage,
        bytes: usize,
    ) -> Result<(), Fatal> {
        let carries_block = consensus_block(&msg).map(|b| b.txs.len());
        let (height, round) = (msg.head().payload.height(), msg.head().payload.round());
        let started = Instant::now();
        let mut out = Vec::new();
        self.core.on_message(msg, &mut out);
        if let Some(txs) = carries_block {
            // Proposals and prepared round changes carry whole blocks: how
            // long one took to arrive and to be handled (its check included)
            // decides whether a round fits its timeout.
            tracing::debug!(
                peer = %from,
                height,
                round,
                txs,
                bytes,
                handled_ms = started.elapsed().as_secs_f64() * 1e3,
                at_ms = now_ms(),
                "consensus message with a block received"
            );
        }
        self.apply(out)
    }

    /// A block in a consensus message usually holds transactions that have
    /// not reached us by gossip yet (the proposal overtakes the gossip of
    /// its last transactions, and under delay much more than that). The
    /// core would check each one's signature inline, on the loop — measured
    /// 0.45-1.1 s for a few thousand to 10,000 transactions on this 2-core
    /// machine, on top of the proposal's transit, inside the round timeout.
    /// So those are checked here first, split over
    /// [`PROPOSAL_VERIFY_JOBS_MAX`] blocking jobs, and admitted to the
    /// mempool like gossip; the message goes to the core when they are done
    /// ([`NodeLoop::on_block_verified`]), and the core then finds them in the
    /// mempool. Returns the message when it should be handled now (nothing
    /// worth moving off the loop, or a check of another block is running:
    /// then the core checks inline, the old behaviour, as backpressure).
    fn preverify_block(
        &mut self,
        from: PublicKey,
        msg: ConsensusMessage,
        bytes: usize,
    ) -> Option<ConsensusMessage> {
        let unseen: Vec<SignedTx> = match consensus_block(&msg) {
            Some(block) => block
                .txs
                .iter()
                .filter(|tx| !self.core.mempool().contains(&tx.hash()))
                .cloned()
                .collect(),
            None => return Some(msg),
        };
        if unseen.len() < PROPOSAL_VERIFY_TXS_MIN {
            return Some(msg);
        }
        let Ok(permit) = self.block_verify.permit.clone().try_acquire_owned() else {
            return Some(msg);
        };
        let chain_id = self.chain_id;
        let results = self.block_verify.results.clone();
        let chunk_len = unseen.len().div_ceil(PROPOSAL_VERIFY_JOBS_MAX);
        let mut unseen = unseen;
        let mut chunks = Vec::new();
        while unseen.len() > chunk_len {
            let rest = unseen.split_off(chunk_len);
            chunks.push(std::mem::replace(&mut unseen, rest));
        }
        chunks.push(unseen);
        self.net.runtime.spawn(async move {
            let jobs: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    tokio::task::spawn_blocking(move || {
                        chunk
                            .into_iter()
                            .map(|tx| VerifiedTx::check(tx, chain_id))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut txs = Vec::new();
            for job in jobs {
                // A job that panicked leaves its transactions to the core's
                // inline check.
                if let Ok(checked) = job.await {
                    txs.extend(checked.into_iter().filter_map(Result::ok));
                }
            }
            // The loop is gone when this fails: nothing to do.
            let _ = results
                .send(BlockVerified {
                    from,
                    msg,
                    bytes,
                    txs,
                })
                .await;
            drop(permit);
        });
        None
    }

    /// Admits the checked transactions of a consensus message's block, then
    /// hands the message to the core.
    fn on_block_verified(&mut self, verified: BlockVerified) -> Result<(), Fatal> {
        let BlockVerified {
            from,
            msg,
            bytes,
            txs,
        } = verified;
        for tx in txs {
            // Refusals (a full mempool, a nonce already committed) only mean
            // the core checks that signature itself, or the block fails.
            if let Err(e) = self.core.submit_verified_tx(tx) {
                tracing::trace!(peer = %from, "block transaction not admitted: {e}");
            }
        }
        self.on_consensus(from, msg, bytes)
    }

    /// Executes the core's effects in order (module docs of
    /// `metanode_chain::node` for the durability contract).
    fn apply(&mut self, effects: Vec<NodeEffect>) -> Result<(), Fatal> {
        for effect in effects {
            match effect {
                NodeEffect::PersistSafety(state) => self
                    .wal
                    .persist(&state)
                    .map_err(|e| Fatal(format!("persisting the safety state: {e}")))?,
                NodeEffect::Broadcast(msg) => self.broadcast(&msg),
                NodeEffect::StoreBlock { block, receipts } => self.store_block(block, &receipts)?,
                NodeEffect::WakeAt { at_ms } => self.add_wake(at_ms),
                NodeEffect::Behind { height, peer } => self.on_behind(height, peer),
                NodeEffect::Rejected { from, reason } => {
                    self.reject(from, "consensus_refused", reason)
                }
            }
        }
        Ok(())
    }

    fn other_validators(&self) -> Vec<PublicKey> {
        self.core
            .engine()
            .validators()
            .validators()
            .iter()
            .filter(|v| **v != self.me)
            .copied()
            .collect()
    }

    fn broadcast(&mut self, msg: &ConsensusMessage) {
        let bytes = match msg.to_canonical_bytes() {
            Ok(bytes) => bytes,
            Err(e) => {
                // Our own message out of bounds is a bug, but not one worth
                // stopping the chain for: the round times out and moves on.
                tracing::error!("consensus message does not encode: {e}");
                return;
            }
        };
        if let Some(txs) = consensus_block(msg).map(|b| b.txs.len()) {
            tracing::debug!(
                height = msg.head().payload.height(),
                round = msg.head().payload.round(),
                txs,
                bytes = bytes.len(),
                at_ms = now_ms(),
                "consensus message with a block sent"
            );
        }
        for peer in self.other_validators() {
            self.net.send(&peer, self.net.qbft, bytes.clone());
        }
    }

    fn store_block(&mut self, block: FinalizedBlock, receipts: &[Receipt]) -> Result<(), Fatal> {
        let header = &block.block.header;
        let height = header.height;
        let hash = header.hash();
        {
            let mut stores = self.shared.stores.lock();
            stores
                .blocks
                .append(&block)
                .map_err(|e| Fatal(format!("storing block {height}: {e}")))?;
            stores
                .receipts
                .append(height, hash, receipts)
                .map_err(|e| Fatal(format!("storing the receipts of block {height}: {e}")))?;
        }
        let counters = &self.shared.counters;
        if !self.syncing {
            Counters::bump(&counters.blocks_decided);
        }
        counters.txs_committed.fetch_add(
            block.block.txs.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        touched_accounts(&block, &mut self.touched);
        self.to_index
            .push((height, block.block.txs.iter().map(SignedTx::hash).collect()));
        tracing::debug!(
            height,
            %hash,
            txs = block.block.txs.len(),
            round = block.certificate.round,
            "finalized block stored"
        );
        self.heads.push(HeadEvent {
            height,
            block_hash: hash,
            timestamp_ms: header.timestamp_ms,
            txs_count: block.block.txs.len() as u64,
            state_root: header.state_root,
            round: block.certificate.round,
        });
        Ok(())
    }

    fn add_wake(&mut self, at_ms: u64) {
        self.wakes.insert(at_ms);
        if self.wakes.len() > WAKES_PENDING_COUNT_MAX {
            self.wakes.pop_last();
        }
    }

    /// Counts a dropped peer message under `kind` (one of
    /// [`MESSAGE_REJECT_REASONS`]) and keeps `reason` for the status.
    fn reject(&mut self, from: Option<PublicKey>, kind: &'static str, reason: String) {
        Counters::bump(&self.shared.counters.messages_rejected);
        self.shared
            .counters
            .messages_rejected_by
            .bump(&MESSAGE_REJECT_REASONS, kind);
        let text = match from {
            Some(peer) => format!("from {peer}: {reason}"),
            None => reason,
        };
        let text = truncate_text(text, REJECTION_REASON_BYTES_MAX);
        let now = Instant::now();
        let warn = self
            .last_warn
            .is_none_or(|at| now >= at + Duration::from_millis(REJECTION_WARN_INTERVAL_MS));
        if warn {
            self.last_warn = Some(now);
            tracing::warn!("message rejected (further ones for a while at debug): {text}");
        } else {
            tracing::debug!("message rejected: {text}");
        }
        *self.shared.last_rejection.lock() = Some(text);
    }

    // --------------------------------------------------------------- sync

    fn on_behind(&mut self, height: Height, peer: PublicKey) {
        match self.behind.as_mut() {
            // A request is out: only raise the target. The response (or the
            // retry) asks for more; a second request now would fetch the
            // same blocks twice.
            Some(behind) if Instant::now() < behind.retry_at => {
                behind.target = behind.target.max(height);
            }
            Some(behind) if height <= behind.target => {}
            _ => {
                tracing::debug!(target = height, %peer, tip = self.core.tip().height, "behind; syncing");
                self.behind = Some(Behind {
                    target: height,
                    first_peer: peer,
                    attempts: 0,
                    retry_at: Instant::now(),
                });
                self.request_sync(None);
            }
        }
    }

    /// Asks for the blocks above our tip: `prefer` if given (a peer that
    /// just served us), else the peer that showed us the height on the first
    /// attempt, else the next connected peer.
    fn request_sync(&mut self, prefer: Option<PublicKey>) {
        let tip = self.core.tip().height;
        let Some(behind) = self.behind.as_ref() else {
            return;
        };
        if tip >= behind.target {
            self.behind = None;
            return;
        }
        let peer = match (prefer, behind.attempts) {
            (Some(peer), _) => Some(peer),
            (None, 0) => Some(behind.first_peer),
            (None, _) => self.rotate_peer(),
        };
        if let Some(behind) = self.behind.as_mut() {
            behind.attempts = behind.attempts.saturating_add(1);
            behind.retry_at = Instant::now() + Duration::from_millis(SYNC_RETRY_MS);
        }
        if let Some(peer) = peer {
            self.send_sync_request(&peer);
        }
    }

    /// The next peer in round-robin order among the connected ones (all
    /// pinned peers when none is connected: sending dials).
    fn rotate_peer(&mut self) -> Option<PublicKey> {
        let endpoint = &self.net.endpoint;
        let all: Vec<PublicKey> = self.peers();
        let connected: Vec<PublicKey> = all
            .iter()
            .filter(|p| endpoint.is_connected(p))
            .copied()
            .collect();
        let pool = if connected.is_empty() { all } else { connected };
        if pool.is_empty() {
            return None;
        }
        self.rotation = self.rotation.wrapping_add(1);
        pool.get(self.rotation % pool.len()).copied()
    }

    fn peers(&self) -> Vec<PublicKey> {
        self.shared.peer_keys.clone()
    }

    fn send_sync_request(&self, peer: &PublicKey) {
        Counters::bump(&self.shared.counters.sync_requests_sent);
        let request = SyncMessage::Request {
            from_height: self.core.tip().height + 1,
            max_blocks: SYNC_RESPONSE_BLOCKS_MAX,
        };
        match request.to_canonical_bytes() {
            Ok(bytes) => self.net.send(peer, self.net.blocksync, bytes),
            Err(e) => tracing::error!("sync request does not encode: {e}"),
        }
    }

    fn serve_sync(&self, peer: &PublicKey, from_height: Height, max_blocks: u32) {
        Counters::bump(&self.shared.counters.sync_requests_served);
        let count = max_blocks.min(SYNC_RESPONSE_BLOCKS_MAX);
        let blocks = if count == 0 {
            Vec::new()
        } else {
            let to = from_height.saturating_add(u64::from(count) - 1);
            let read =
                self.shared
                    .stores
                    .lock()
                    .blocks
                    .range(from_height, to, SYNC_RESPONSE_BYTES_MAX);
            match read {
                Ok(blocks) => blocks,
                Err(e) => {
                    tracing::error!(%peer, from_height, "reading blocks for sync failed: {e}");
                    return;
                }
            }
        };
        match (SyncMessage::Response { blocks }).to_canonical_bytes() {
            Ok(bytes) => self.net.send(peer, self.net.blocksync, bytes),
            Err(e) => tracing::error!("sync response does not encode: {e}"),
        }
    }

    /// Feeds synced blocks to the core in order; each block's effects (its
    /// `StoreBlock` in particular) run before the next block is fed.
    fn on_synced(&mut self, from: &PublicKey, blocks: Vec<FinalizedBlock>) -> Result<(), Fatal> {
        let mut accepted = 0u64;
        for block in blocks {
            let height = block.block.header.height;
            let tip = self.core.tip().height;
            if height <= tip {
                continue;
            }
            if height != tip + 1 {
                break;
            }
            let mut out = Vec::new();
            let result = self.core.on_synced_block(block, &mut out);
            self.syncing = true;
            let applied = self.apply(out);
            self.syncing = false;
            applied?;
            match result {
                Ok(()) => {
                    accepted += 1;
                    Counters::bump(&self.shared.counters.blocks_synced);
                }
                Err(e) => {
                    self.reject(
                        Some(*from),
                        "synced_block_refused",
                        format!("synced block refused: {e}"),
                    );
                    break;
                }
            }
        }
        if accepted > 0 {
            tracing::debug!(peer = %from, accepted, tip = self.core.tip().height, "synced blocks");
            // More may be waiting: ask the same peer again right away. A
            // response with nothing new ends this.
            if self.behind.is_some() {
                self.request_sync(Some(*from));
            } else {
                self.send_sync_request(from);
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ publish

    /// After each loop step: publish what the step's stored blocks changed
    /// (accounts, then receipts, status and heads) — only once every block
    /// of the step is durable, and accounts first, so a client that sees a
    /// receipt or a head and then reads `account()` sees the block's effects.
    /// After a failed store (`complete` false) the core is ahead of the
    /// disk, so accounts and status are not refreshed from it; what was
    /// stored is still published.
    fn finish_batch(&mut self, complete: bool) {
        if !self.touched.is_empty() {
            let touched = std::mem::take(&mut self.touched);
            if complete {
                let app = self.core.app();
                let mut accounts = self.shared.accounts.write();
                for key in touched {
                    accounts.insert(key, account_info(app, &key));
                }
            }
        }
        if !self.to_index.is_empty() {
            let mut stores = self.shared.stores.lock();
            for (height, txs) in self.to_index.drain(..) {
                index_block(&mut stores.tx_index, height, txs);
            }
        }
        if !self.heads.is_empty() {
            if complete {
                self.update_snapshot();
            }
            for head in self.heads.drain(..) {
                // No subscriber is fine.
                let _ = self.shared.heads.send(head);
            }
        }
    }

    fn update_snapshot(&self) {
        let engine = self.core.engine();
        let snapshot = Snapshot {
            tip: self.core.tip().clone(),
            consensus_height: engine.height(),
            consensus_round: engine.round(),
            is_validator: engine.is_validator(),
            validators: engine.validators().validators().to_vec(),
            mempool_txs: self.core.mempool().len(),
            mempool_bytes: self.core.mempool().bytes(),
            engine_stats: engine.stats(),
            sync_target_height: self.behind.as_ref().map_or(0, |b| b.target),
        };
        *self.shared.snapshot.write() = snapshot;
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate_text(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_text_respects_char_boundaries() {
        assert_eq!(truncate_text("short".into(), 10), "short");
        assert_eq!(truncate_text("abcdef".into(), 3), "abc…");
        // 'é' is two bytes: a cut inside it backs off to before it.
        assert_eq!(truncate_text("aé".into(), 2), "a…");
    }

    fn transfer(seed: u8, nonce: u64) -> SignedTx {
        use metanode_chain::types::{TxBody, TxKind};
        let key = SigningKey::from_seed(&[seed; 32]);
        TxBody {
            chain_id: ChainId(Hash32([4; 32])),
            sender: key.public_key(),
            nonce,
            fee: 1,
            kind: TxKind::Transfer {
                to: SigningKey::from_seed(&[seed + 1; 32]).public_key(),
                amount: 1,
            },
        }
        .sign(&key)
        .unwrap()
    }

    #[test]
    fn gossip_payload_is_the_canonical_tx_batch() {
        let txs: Vec<SignedTx> = (0..4).map(|n| transfer(3, n)).collect();
        let mut out = GossipOut::default();
        assert_eq!(out.take_payload(), None);
        assert_eq!(out.flush_at(), None);
        for tx in &txs {
            out.push(&tx.to_canonical_bytes().unwrap());
        }
        // Nothing left recently: the batch may leave at once.
        assert_eq!(out.flush_at(), out.since);
        let payload = out.take_payload().unwrap();
        let expected = TxBatch { txs: txs.clone() }.to_canonical_bytes().unwrap();
        assert_eq!(payload, expected);
        assert_eq!(TxBatch::from_canonical_bytes(&payload).unwrap().txs, txs);
        assert_eq!(out.count, 0);
        assert!(out.txs_bytes.is_empty());
        // Right after a flush the next batch waits for the delay.
        out.push(&txs[0].to_canonical_bytes().unwrap());
        let last = out.last_flush.unwrap();
        assert_eq!(
            out.flush_at(),
            Some(
                out.since
                    .unwrap()
                    .max(last + Duration::from_millis(GOSSIP_FLUSH_DELAY_MS))
            )
        );
    }

    #[test]
    fn gossip_batch_overflows_at_its_bounds() {
        let mut out = GossipOut::default();
        let bytes = transfer(5, 0).to_canonical_bytes().unwrap();
        assert!(!out.would_overflow(bytes.len()));
        for _ in 0..GOSSIP_BATCH_TXS_COUNT_MAX {
            out.push(&bytes);
        }
        assert!(out.would_overflow(bytes.len()));
        let mut big = GossipOut::default();
        assert!(big.would_overflow(GOSSIP_BATCH_SIZE_BYTES_MAX));
        big.push(&vec![
            0;
            GOSSIP_BATCH_SIZE_BYTES_MAX
                - GOSSIP_BATCH_OVERHEAD_BYTES
                - 10
        ]);
        assert!(!big.would_overflow(10));
        assert!(big.would_overflow(11));
    }
}
