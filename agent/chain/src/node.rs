//! One validator's chain logic without I/O: the QBFT engine, the mempool,
//! PoH ordering and the application, glued together.
//!
//! The engine asks for blocks to be built and checked; this module answers
//! those requests itself (mempool selection, PoH, execution, root checks), so
//! what leaves it is only what needs the outside world: votes to send,
//! safety state and blocks to make durable, timers, and sync requests. The
//! real node (sockets, files) and the deterministic simulator (fake network,
//! fake disk) both drive this type; neither re-implements block validation.
//!
//! Durability contract, in the order effects are returned:
//! - `PersistSafety` must be durable before any later effect runs (the vote
//!   that follows it must never be forgotten across a crash);
//! - `StoreBlock` must be durable before the next input is handled; if it
//!   cannot be stored the node must stop (restart replays the stored blocks
//!   through a fresh application, so the in-memory commit already done here
//!   is never ahead of the disk for long).

use metanode_core::hash::Hash32;
use metanode_core::keys::{PublicKey, SigningKey};
use metanode_core::limits::{
    CHAIN_BLOCK_SIZE_BYTES_MAX, CHAIN_BLOCK_TXS_COUNT_MAX, CHAIN_PROPOSAL_TXS_BUDGET_INITIAL,
    CHAIN_PROPOSAL_TXS_BUDGET_MIN,
};
use metanode_core::merkle;

use crate::app::{Application, BlockContext};
use crate::mempool::{InsertOutcome, Mempool, MempoolConfig, MempoolError, VerifiedTx};
use crate::poh::{PohRecorder, poh_root};
use crate::qbft::{ChainTip, ConsensusMessage, Effect, Engine, EngineConfig, Input, SafetyState};
use crate::types::{
    Block, ChainMode, FinalizedBlock, Genesis, Header, Height, Receipt, Round, SignedTx,
    ValidatorSet, receipts_root, tx_root,
};

/// Node settings that are not consensus rules.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub engine: EngineConfig,
    pub mempool: MempoolConfig,
    /// A proposer waits at least this long after its parent's timestamp, so
    /// an idle chain does not spin through empty blocks.
    pub block_interval_min_ms: u64,
    /// With an empty mempool the proposer still proposes after this long
    /// (a heartbeat block that moves time forward and proves liveness).
    pub empty_block_interval_ms: u64,
    pub block_txs_count_max: usize,
    pub block_size_bytes_max: usize,
    /// How far a proposal's timestamp may be ahead of our clock.
    pub timestamp_skew_allowance_ms: u64,
}

impl NodeConfig {
    pub fn new(engine: EngineConfig) -> Self {
        NodeConfig {
            engine,
            mempool: MempoolConfig::default(),
            block_interval_min_ms: 50,
            empty_block_interval_ms: 1_000,
            block_txs_count_max: 10_000,
            block_size_bytes_max: 8 * 1024 * 1024,
            timestamp_skew_allowance_ms: 2_000,
        }
    }
}

const _: () = assert!(CHAIN_BLOCK_TXS_COUNT_MAX as usize >= 10_000);
const _: () = assert!(CHAIN_BLOCK_SIZE_BYTES_MAX as usize >= 8 * 1024 * 1024);

/// Our own round-0 proposal decided within this share (per mille) of the
/// round timeout after its timestamp (build to decision, on our clock) lets
/// the next one grow by half if it used at least half the budget: there is
/// room for a bigger block inside the timeout. (A small block's speed says
/// nothing about a full one's, so an idle chain does not grow its budget.)
/// Not lower: at 40 ms one-way a block needs ~250 ms however small it is
/// (transit, prepare, commit, the block interval), and a quarter of the 1 s
/// timeout kept blocks at a few hundred transactions.
const BUDGET_GROW_BELOW_TIMEOUT_PERMILLE: u64 = 400;
/// Decided later than this share of the timeout: the next one shrinks by a
/// quarter before a timeout forces a halving. Between the two the budget
/// holds, so it settles instead of oscillating; above it there is still a
/// third of the timeout of margin for a slower peer or a busier core.
const BUDGET_SHRINK_ABOVE_TIMEOUT_PERMILLE: u64 = 650;
const _: () = assert!(BUDGET_GROW_BELOW_TIMEOUT_PERMILLE < BUDGET_SHRINK_ABOVE_TIMEOUT_PERMILLE);
const _: () = assert!(BUDGET_SHRINK_ABOVE_TIMEOUT_PERMILLE < 1_000);

/// What the node needs the outside world to do, in order.
// Same reasoning as the engine's `Effect`: short-lived, one Vec per input.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum NodeEffect {
    PersistSafety(SafetyState),
    Broadcast(ConsensusMessage),
    /// Append durably to the block store (height = previous tip + 1).
    /// `receipts` are the block's receipts, one per transaction, in order
    /// (their Merkle root is the header's `receipts_root`).
    StoreBlock {
        block: FinalizedBlock,
        receipts: Vec<Receipt>,
    },
    /// Call [`NodeCore::on_tick`] at or after `at_ms` (local clock).
    WakeAt {
        at_ms: u64,
    },
    /// Fetch finalized blocks above our tip, up to at least `height`, from
    /// `peer` (or anyone) and feed them to [`NodeCore::on_synced_block`].
    Behind {
        height: Height,
        peer: PublicKey,
    },
    /// Dropped input, for metrics and logs.
    Rejected {
        from: Option<PublicKey>,
        reason: String,
    },
}

/// Why a block fetched by sync was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("synced block at height {got} does not follow our tip {tip}")]
    NotNext { got: Height, tip: Height },
    #[error("synced block at height {height} is invalid: {reason}")]
    Invalid { height: Height, reason: String },
}

/// Where a node starts: recovered from its block store and safety WAL.
#[derive(Debug)]
pub struct NodeStart<A> {
    /// The application with every stored block applied.
    pub app: A,
    /// The last stored block (or genesis).
    pub tip: TipInfo,
    /// The set deciding `tip.height + 1`.
    pub validators: ValidatorSet,
    /// The last durable safety record, if any.
    pub safety: Option<SafetyState>,
}

/// Summary of the last decided block, for status queries.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TipInfo {
    pub height: Height,
    pub hash: Hash32,
    pub timestamp_ms: u64,
    pub state_root: Hash32,
}

pub struct NodeCore<A: Application> {
    config: NodeConfig,
    genesis_hash: Hash32,
    engine: Engine,
    app: A,
    mempool: Mempool,
    tip: TipInfo,
    /// The set deciding `tip.height + 1` (the engine's, kept here because the
    /// engine has already moved on when it reports a decision).
    validators: ValidatorSet,
    /// Set while the engine waits for our block at (height, round).
    pending_build: Option<(Height, Round)>,
    /// Transactions our next proposal may hold, at most
    /// `config.block_txs_count_max` ([`NodeCore::adapt_block_budget`]).
    block_txs_budget: usize,
    /// Set while a block from sync is applied: its latency says nothing
    /// about how fast a proposal travels now.
    applying_synced: bool,
    now_ms: u64,
}

impl<A: Application> std::fmt::Debug for NodeCore<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCore")
            .field("tip", &self.tip)
            .field("engine", &self.engine)
            .field("mempool_txs", &self.mempool.len())
            .finish_non_exhaustive()
    }
}

impl<A: Application> NodeCore<A> {
    /// Starts on top of `start.tip` (the last stored block, or genesis) with
    /// `start.app` already at that height (replayed from the block store).
    pub fn new(
        config: NodeConfig,
        key: SigningKey,
        genesis: &Genesis,
        start: NodeStart<A>,
        now_ms: u64,
    ) -> (Self, Vec<NodeEffect>) {
        let NodeStart {
            app,
            tip,
            validators,
            safety,
        } = start;
        assert_eq!(
            app.committed_height(),
            tip.height,
            "application must be replayed to the tip before the node starts"
        );
        let chain_tip = ChainTip {
            height: tip.height,
            block_hash: tip.hash,
            timestamp_ms: tip.timestamp_ms,
            validators: validators.clone(),
        };
        let chain_id = genesis.chain_id();
        let config_block_txs_count_max = config.block_txs_count_max;
        let (engine, effects) = Engine::new(config.engine.clone(), key, chain_tip, safety, now_ms);
        let mempool = Mempool::new(chain_id, config.mempool.clone());
        let mut node = NodeCore {
            config,
            genesis_hash: genesis.hash(),
            engine,
            app,
            mempool,
            tip,
            validators,
            pending_build: None,
            block_txs_budget: (CHAIN_PROPOSAL_TXS_BUDGET_INITIAL as usize)
                .min(config_block_txs_count_max)
                .max(1),
            applying_synced: false,
            now_ms,
        };
        let mut out = Vec::new();
        node.run(effects, &mut out);
        (node, out)
    }

    pub fn tip(&self) -> &TipInfo {
        &self.tip
    }
    pub fn app(&self) -> &A {
        &self.app
    }
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }
    pub fn genesis_hash(&self) -> Hash32 {
        self.genesis_hash
    }

    /// Transactions our next proposal may hold (adaptive, see
    /// [`NodeCore::adapt_block_budget`]).
    pub fn block_txs_budget(&self) -> usize {
        self.block_txs_budget
    }

    /// Admits a client transaction into the mempool.
    pub fn submit_tx(&mut self, tx: SignedTx) -> Result<InsertOutcome, MempoolError> {
        self.mempool.insert(tx, &self.app)
    }

    /// Admits a transaction whose signature was checked already (see
    /// [`VerifiedTx`]).
    pub fn submit_verified_tx(&mut self, tx: VerifiedTx) -> Result<InsertOutcome, MempoolError> {
        self.mempool.insert_verified(tx, &self.app)
    }

    pub fn on_tick(&mut self, now_ms: u64, out: &mut Vec<NodeEffect>) {
        self.now_ms = self.now_ms.max(now_ms);
        self.try_build(out);
        self.step(
            Input::Tick {
                now_ms: self.now_ms,
            },
            out,
        );
    }

    pub fn on_message(&mut self, msg: ConsensusMessage, out: &mut Vec<NodeEffect>) {
        self.step(Input::Message(msg), out);
    }

    /// Feeds one finalized block from block sync: checks it as a proposal
    /// would be checked (roots, execution), then lets the engine check the
    /// certificate.
    pub fn on_synced_block(
        &mut self,
        block: FinalizedBlock,
        out: &mut Vec<NodeEffect>,
    ) -> Result<(), SyncError> {
        let height = block.block.header.height;
        if height != self.tip.height + 1 {
            return Err(SyncError::NotNext {
                got: height,
                tip: self.tip.height,
            });
        }
        // Sync may deliver an old block whose timestamp is far behind our
        // clock, so only the parent ordering is checked, not the skew.
        let next_validators = self
            .check_block(&block.block, false)
            .map_err(|reason| SyncError::Invalid { height, reason })?;
        let before = self.tip.height;
        self.applying_synced = true;
        self.step(
            Input::SyncedBlock {
                block,
                next_validators,
            },
            out,
        );
        self.applying_synced = false;
        if self.tip.height == before {
            return Err(SyncError::Invalid {
                height,
                reason: "the engine refused its commit certificate".into(),
            });
        }
        Ok(())
    }

    fn step(&mut self, input: Input, out: &mut Vec<NodeEffect>) {
        let mut effects = Vec::new();
        self.engine.handle(input, &mut effects);
        self.run(effects, out);
    }

    /// Executes engine effects, answering build and check requests locally
    /// (which produces further engine effects, handled in the same loop).
    fn run(&mut self, mut effects: Vec<Effect>, out: &mut Vec<NodeEffect>) {
        let mut queue = std::collections::VecDeque::from(std::mem::take(&mut effects));
        while let Some(effect) = queue.pop_front() {
            let mut more = Vec::new();
            match effect {
                Effect::PersistSafety(state) => out.push(NodeEffect::PersistSafety(state)),
                Effect::Broadcast(msg) => out.push(NodeEffect::Broadcast(msg)),
                Effect::BuildProposal { height, round, .. } => {
                    self.pending_build = Some((height, round));
                    self.try_build_into(&mut more, out);
                }
                Effect::CheckBlock {
                    height,
                    round,
                    block,
                } => {
                    let block_hash = block.hash();
                    let result = self.check_block(&block, true);
                    self.engine.handle(
                        Input::BlockChecked {
                            height,
                            round,
                            block_hash,
                            result,
                        },
                        &mut more,
                    );
                }
                Effect::Decided {
                    block,
                    next_validators,
                } => {
                    let receipts = self.commit(&block);
                    if !self.applying_synced {
                        self.adapt_block_budget(
                            &block.block.header,
                            block.block.txs.len(),
                            block.certificate.round,
                        );
                    }
                    self.validators = next_validators;
                    self.pending_build = None;
                    out.push(NodeEffect::StoreBlock { block, receipts });
                }
                Effect::ScheduleTimeout { at_ms, .. } => out.push(NodeEffect::WakeAt { at_ms }),
                Effect::Behind { height, peer } => out.push(NodeEffect::Behind { height, peer }),
                Effect::Rejected { from, reason } => {
                    out.push(NodeEffect::Rejected { from, reason })
                }
            }
            // Effects produced while answering come before the rest of the
            // batch, preserving the engine's persist-before-send order.
            for e in more.into_iter().rev() {
                queue.push_front(e);
            }
        }
    }

    fn try_build(&mut self, out: &mut Vec<NodeEffect>) {
        let mut more = Vec::new();
        self.try_build_into(&mut more, out);
        self.run(more, out);
    }

    /// Builds the pending proposal if its time has come; otherwise asks to be
    /// woken when it will have.
    fn try_build_into(&mut self, engine_out: &mut Vec<Effect>, out: &mut Vec<NodeEffect>) {
        let Some((height, round)) = self.pending_build else {
            return;
        };
        if height != self.engine.height() || round != self.engine.round() {
            self.pending_build = None;
            return;
        }
        let earliest_ms = self.tip.timestamp_ms + self.config.block_interval_min_ms;
        let idle_ms = self.tip.timestamp_ms + self.config.empty_block_interval_ms;
        // A round > 0 means the chain is already late: build at once.
        if round == 0
            && (self.now_ms < earliest_ms || (self.mempool.is_empty() && self.now_ms < idle_ms))
        {
            let at_ms = if self.now_ms < earliest_ms && !self.mempool.is_empty() {
                earliest_ms
            } else {
                // Re-checked on every tick, so a transaction arriving meanwhile
                // is picked up at the next tick after `earliest_ms`.
                earliest_ms
                    .max(self.now_ms + self.config.block_interval_min_ms)
                    .min(idle_ms)
            };
            out.push(NodeEffect::WakeAt { at_ms });
            return;
        }
        self.pending_build = None;
        let block = self.build_block(height, round);
        let next_validators = self
            .check_block(&block, false)
            .expect("a block we just built is valid on our own tip");
        self.engine.handle(
            Input::ProposalBuilt {
                height,
                round,
                block,
                next_validators,
            },
            engine_out,
        );
    }

    fn context(&self, height: Height, timestamp_ms: u64, proposer: PublicKey) -> BlockContext {
        BlockContext {
            chain_id: self.config.engine.chain_id,
            height,
            timestamp_ms,
            proposer,
            validators: self.validators.clone(),
        }
    }

    fn build_block(&mut self, height: Height, round: Round) -> Block {
        let txs = self.mempool.select(
            self.block_txs_budget.min(self.config.block_txs_count_max),
            self.config.block_size_bytes_max,
            &self.app,
        );
        let parent = self.tip.hash;
        let mut poh = PohRecorder::new(parent);
        for tx in &txs {
            poh.record(tx);
        }
        let timestamp_ms = self.now_ms.max(self.tip.timestamp_ms + 1);
        let proposer = self.engine.public_key();
        let ctx = self.context(height, timestamp_ms, proposer);
        let execution = self.app.execute(&ctx, &txs);
        let header = Header {
            chain_id: self.config.engine.chain_id,
            height,
            round,
            prev_hash: parent,
            timestamp_ms,
            proposer,
            tx_root: tx_root(&txs),
            poh_root: poh.root(),
            receipts_root: receipts_root(&execution.receipts),
            state_root: execution.state_root,
            da_root: merkle::empty_root(),
            xcmp_root: merkle::empty_root(),
            validator_set_hash: self.validators.hash(),
            next_validator_set_hash: execution.next_validators.hash(),
            mode: ChainMode::Normal,
        };
        Block { header, txs }
    }

    /// Sizes our next proposal so that it is proposed, checked and voted on
    /// well inside round 0's timeout. A block that needs longer than the
    /// timeout to reach the validators (slow or lossy links, a long round
    /// trip) or to be checked (signatures of transactions they have not seen)
    /// fails every round, and each later round's proposer builds an even
    /// bigger one from a fuller mempool: measured at 40 ± 10 ms one-way
    /// delay under saturation, 10,000-transaction blocks needed 5 rounds
    /// (31 s of timeouts) per height. So the budget halves when a block was
    /// decided after a timeout (round > 0) and otherwise follows the latency
    /// of our own round-0 proposals, timestamp to decision on our clock (the
    /// only latency we measure without trusting another clock): grow by
    /// half below 40 % of the timeout (if the block filled at least half the
    /// budget), shrink by a quarter above 65 %
    /// of it (only for blocks built and decided in round 0). It is proposer
    /// policy, not a validity rule: validators accept
    /// any block within `block_txs_count_max`. Driven only by decided
    /// headers and `now_ms`, it is as deterministic as the rest of the core.
    fn adapt_block_budget(
        &mut self,
        header: &Header,
        header_txs_count: usize,
        decided_round: Round,
    ) {
        let max = self.config.block_txs_count_max.max(1);
        let min = (CHAIN_PROPOSAL_TXS_BUDGET_MIN as usize).min(max);
        let budget = self.block_txs_budget.clamp(min, max);
        let timeout_ms = self.config.engine.round_timeout_base_ms;
        // The certificate's round, not the header's: a block prepared in
        // round 0 and re-proposed after a timeout keeps its header round.
        self.block_txs_budget = if decided_round > 0 {
            (budget / 2).max(min)
        } else if header.proposer == self.engine.public_key() && header.round == 0 {
            let latency_ms = self.now_ms.saturating_sub(header.timestamp_ms);
            let filled = header_txs_count.saturating_mul(2) >= budget;
            let grow_below_ms =
                timeout_ms.saturating_mul(BUDGET_GROW_BELOW_TIMEOUT_PERMILLE) / 1_000;
            let shrink_above_ms =
                timeout_ms.saturating_mul(BUDGET_SHRINK_ABOVE_TIMEOUT_PERMILLE) / 1_000;
            if latency_ms < grow_below_ms && filled {
                budget.saturating_add(budget / 2).min(max)
            } else if latency_ms > shrink_above_ms {
                (budget - budget / 4).max(min)
            } else {
                budget
            }
        } else {
            budget
        };
    }

    /// Validates `block` as the next block on our tip; `Ok` carries the
    /// validator set it hands to the next height.
    fn check_block(&mut self, block: &Block, check_clock: bool) -> Result<ValidatorSet, String> {
        let h = &block.header;
        let height = self.tip.height + 1;
        let chain_id = self.config.engine.chain_id;
        if h.chain_id != chain_id {
            return Err(format!("chain id {} is not ours ({chain_id})", h.chain_id));
        }
        if h.height != height {
            return Err(format!(
                "height {} is not the next height {height}",
                h.height
            ));
        }
        if h.prev_hash != self.tip.hash {
            return Err(format!(
                "prev_hash {} is not our tip {}",
                h.prev_hash, self.tip.hash
            ));
        }
        let validators = &self.validators;
        if h.validator_set_hash != validators.hash() {
            return Err(format!(
                "validator_set_hash {} is not the current set {}",
                h.validator_set_hash,
                validators.hash()
            ));
        }
        if h.proposer != *validators.proposer(height, h.round) {
            return Err(format!(
                "proposer {} is not the proposer of round {}",
                h.proposer, h.round
            ));
        }
        if h.timestamp_ms <= self.tip.timestamp_ms {
            return Err(format!(
                "timestamp {} ms is not after the parent's {} ms",
                h.timestamp_ms, self.tip.timestamp_ms
            ));
        }
        if check_clock && h.timestamp_ms > self.now_ms + self.config.timestamp_skew_allowance_ms {
            return Err(format!(
                "timestamp {} ms is more than {} ms ahead of our clock {} ms",
                h.timestamp_ms, self.config.timestamp_skew_allowance_ms, self.now_ms
            ));
        }
        if h.mode != ChainMode::Normal {
            return Err(format!("mode {:?} is not accepted yet", h.mode));
        }
        if block.txs.len() > self.config.block_txs_count_max {
            return Err(format!(
                "{} transactions exceed the block limit {}",
                block.txs.len(),
                self.config.block_txs_count_max
            ));
        }
        for (i, tx) in block.txs.iter().enumerate() {
            if tx.body().chain_id != chain_id {
                return Err(format!(
                    "transaction {i} ({}) is for another chain",
                    tx.hash()
                ));
            }
            // Transactions we admitted ourselves were verified on the way in.
            if !self.mempool.contains(&tx.hash()) && tx.verify_signature().is_err() {
                return Err(format!(
                    "transaction {i} ({}) has a bad signature",
                    tx.hash()
                ));
            }
        }
        let computed_tx_root = tx_root(&block.txs);
        if computed_tx_root != h.tx_root {
            return Err(format!(
                "tx_root {} does not match the transactions ({computed_tx_root})",
                h.tx_root
            ));
        }
        let computed_poh = poh_root(h.prev_hash, &block.txs);
        if computed_poh != h.poh_root {
            return Err(format!(
                "poh_root {} does not match the recomputed ticks ({computed_poh})",
                h.poh_root
            ));
        }
        if h.da_root != merkle::empty_root() || h.xcmp_root != merkle::empty_root() {
            return Err("da_root and xcmp_root must be the empty root".into());
        }
        let ctx = self.context(height, h.timestamp_ms, h.proposer);
        let execution = self.app.execute(&ctx, &block.txs);
        let computed_receipts = receipts_root(&execution.receipts);
        if computed_receipts != h.receipts_root {
            return Err(format!(
                "receipts_root {} does not match execution ({computed_receipts})",
                h.receipts_root
            ));
        }
        if execution.state_root != h.state_root {
            return Err(format!(
                "state_root {} does not match execution ({})",
                h.state_root, execution.state_root
            ));
        }
        if execution.next_validators.hash() != h.next_validator_set_hash {
            return Err(format!(
                "next_validator_set_hash {} does not match execution ({})",
                h.next_validator_set_hash,
                execution.next_validators.hash()
            ));
        }
        Ok(execution.next_validators)
    }

    fn commit(&mut self, block: &FinalizedBlock) -> Vec<Receipt> {
        let h = &block.block.header;
        assert_eq!(
            h.height,
            self.tip.height + 1,
            "decided blocks come in order"
        );
        let ctx = BlockContext {
            chain_id: self.config.engine.chain_id,
            height: h.height,
            timestamp_ms: h.timestamp_ms,
            proposer: h.proposer,
            // The set that decided this block: the engine has already moved
            // on to the next one, so it comes from our own record.
            validators: self.validators.clone(),
        };
        let execution = self.app.commit(&ctx, &block.block.txs);
        // A different root here means our application is not deterministic
        // or the engine decided a block nobody checked: either is a bug that
        // must stop the node rather than fork its state.
        assert_eq!(
            execution.state_root, h.state_root,
            "committed state root differs from the decided header at height {}",
            h.height
        );
        self.mempool.remove_committed(&block.block.txs, &self.app);
        self.tip = TipInfo {
            height: h.height,
            hash: h.hash(),
            timestamp_ms: h.timestamp_ms,
            state_root: execution.state_root,
        };
        execution.receipts
    }
}

/// Why a stored block could not be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("stored block at height {got} does not follow the replayed tip {tip}")]
    NotNext { got: Height, tip: Height },
    #[error("height {height}: {source}")]
    Certificate {
        height: Height,
        source: crate::types::CertificateError,
    },
    #[error("height {height}: replayed state root {replayed} differs from the header's {header}")]
    StateRoot {
        height: Height,
        replayed: Hash32,
        header: Hash32,
    },
    #[error(
        "height {height}: replayed receipts root {replayed} differs from the header's {header}"
    )]
    ReceiptsRoot {
        height: Height,
        replayed: Hash32,
        header: Hash32,
    },
    #[error(
        "height {height}: replayed next validator set {replayed} differs from the header's {header}"
    )]
    NextValidators {
        height: Height,
        replayed: Hash32,
        header: Hash32,
    },
}

/// Rebuilds a node's state from its stored blocks: each block's certificate
/// is checked against the set of its height and its roots against
/// re-execution. The in-memory application is never trusted across a
/// restart, so the node runtime and the simulator both start through this.
#[derive(Debug)]
pub struct Replay<A: Application> {
    chain_id: crate::types::ChainId,
    app: A,
    tip: TipInfo,
    validators: ValidatorSet,
}

impl<A: Application> Replay<A> {
    /// Starts at genesis; `app` must be the application's genesis state.
    pub fn from_genesis(genesis: &Genesis, app: A) -> Self {
        assert_eq!(
            app.committed_height(),
            0,
            "replay starts from genesis state"
        );
        let tip = TipInfo {
            height: 0,
            hash: genesis.hash(),
            timestamp_ms: genesis.genesis_time_ms,
            state_root: app.committed_state_root(),
        };
        Replay {
            chain_id: genesis.chain_id(),
            app,
            tip,
            validators: genesis.validators.clone(),
        }
    }

    pub fn tip(&self) -> &TipInfo {
        &self.tip
    }

    pub fn app(&self) -> &A {
        &self.app
    }

    /// Applies the next stored block and returns its receipts.
    /// `certificate_verified` skips the signature check for a certificate the
    /// caller has already verified against this height's set (the
    /// simulator's checker); every root is still checked.
    pub fn apply(
        &mut self,
        block: &FinalizedBlock,
        certificate_verified: bool,
    ) -> Result<Vec<Receipt>, ReplayError> {
        let header = &block.block.header;
        let height = header.height;
        if height != self.tip.height + 1 {
            return Err(ReplayError::NotNext {
                got: height,
                tip: self.tip.height,
            });
        }
        if !certificate_verified {
            block
                .certificate
                .verify(&self.chain_id, header, &self.validators)
                .map_err(|source| ReplayError::Certificate { height, source })?;
        }
        let ctx = BlockContext {
            chain_id: self.chain_id,
            height,
            timestamp_ms: header.timestamp_ms,
            proposer: header.proposer,
            validators: self.validators.clone(),
        };
        let execution = self.app.commit(&ctx, &block.block.txs);
        if execution.state_root != header.state_root {
            return Err(ReplayError::StateRoot {
                height,
                replayed: execution.state_root,
                header: header.state_root,
            });
        }
        let replayed_receipts = receipts_root(&execution.receipts);
        if replayed_receipts != header.receipts_root {
            return Err(ReplayError::ReceiptsRoot {
                height,
                replayed: replayed_receipts,
                header: header.receipts_root,
            });
        }
        if execution.next_validators.hash() != header.next_validator_set_hash {
            return Err(ReplayError::NextValidators {
                height,
                replayed: execution.next_validators.hash(),
                header: header.next_validator_set_hash,
            });
        }
        self.validators = execution.next_validators;
        self.tip = TipInfo {
            height,
            hash: header.hash(),
            timestamp_ms: header.timestamp_ms,
            state_root: execution.state_root,
        };
        Ok(execution.receipts)
    }

    /// The replayed state, ready for [`NodeCore::new`] with the node's last
    /// durable safety record.
    pub fn finish(self, safety: Option<SafetyState>) -> NodeStart<A> {
        NodeStart {
            app: self.app,
            tip: self.tip,
            validators: self.validators,
            safety,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::LedgerApp;
    use crate::qbft::EngineConfig;
    use crate::types::{GenesisAccount, TxBody, TxKind};

    const ROUND_TIMEOUT_MS: u64 = 1_000;

    /// A one-validator chain (it leads every round and is its own quorum),
    /// whose empty heartbeat comes after round 0's timeout, so an empty
    /// mempool makes every height time out once and decide in round 1.
    fn lone_validator(block_txs_count_max: usize) -> (NodeCore<LedgerApp>, SigningKey) {
        let validator = SigningKey::from_seed(&[7; 32]);
        let client = SigningKey::from_seed(&[9; 32]);
        let genesis = Genesis {
            chain_name: "budget".into(),
            genesis_time_ms: 0,
            validators: ValidatorSet::new(vec![validator.public_key()]).unwrap(),
            accounts: vec![GenesisAccount {
                key: client.public_key(),
                balance: 1_000_000,
            }],
        };
        let mut engine = EngineConfig::new(genesis.chain_id());
        engine.round_timeout_base_ms = ROUND_TIMEOUT_MS;
        let mut config = NodeConfig::new(engine);
        config.block_interval_min_ms = 50;
        config.empty_block_interval_ms = 5 * ROUND_TIMEOUT_MS;
        config.block_txs_count_max = block_txs_count_max;
        let start = Replay::from_genesis(&genesis, LedgerApp::from_genesis(&genesis)).finish(None);
        let (node, _) = NodeCore::new(config, validator, &genesis, start, 0);
        (node, client)
    }

    fn stored(out: &[NodeEffect]) -> Vec<&Block> {
        out.iter()
            .filter_map(|e| match e {
                NodeEffect::StoreBlock { block, .. } => Some(&block.block),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn block_budget_halves_after_timeouts_to_its_floor_and_grows_after_fast_blocks() {
        let (mut node, client) = lone_validator(1_024);
        assert_eq!(node.block_txs_budget(), 1_024);
        let min = CHAIN_PROPOSAL_TXS_BUDGET_MIN as usize;
        // Each height: round 0 times out (empty mempool), round 1 decides.
        for (i, expected) in [512, min, min].into_iter().enumerate() {
            let mut out = Vec::new();
            node.on_tick((i as u64 + 1) * ROUND_TIMEOUT_MS, &mut out);
            let blocks = stored(&out);
            assert_eq!(blocks.len(), 1, "height {} decided", i + 1);
            assert_eq!(blocks[0].header.round, 1);
            assert_eq!(node.block_txs_budget(), expected);
        }
        let chain_id = node.config.engine.chain_id;
        for nonce in 0..600 {
            node.submit_tx(transfer(chain_id, &client, nonce)).unwrap();
        }
        // Our own round-0 block, decided at once: it held the budget, and
        // the next may be half as big again.
        let mut out = Vec::new();
        node.on_tick(node.tip().timestamp_ms + 50, &mut out);
        let blocks = stored(&out);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].header.round, 0);
        assert_eq!(blocks[0].txs.len(), min);
        assert_eq!(node.block_txs_budget(), min + min / 2);
        let mut out = Vec::new();
        node.on_tick(node.tip().timestamp_ms + 50, &mut out);
        let blocks = stored(&out);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].txs.len(), 600 - min);
        let grown = (min + min / 2) * 3 / 2;
        assert_eq!(node.block_txs_budget(), grown);
        // A fast block far below the budget says nothing about a full one.
        for nonce in 600..610 {
            node.submit_tx(transfer(chain_id, &client, nonce)).unwrap();
        }
        let mut out = Vec::new();
        node.on_tick(node.tip().timestamp_ms + 50, &mut out);
        let blocks = stored(&out);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].txs.len(), 10);
        assert_eq!(node.block_txs_budget(), grown);
    }

    fn transfer(chain_id: crate::types::ChainId, client: &SigningKey, nonce: u64) -> SignedTx {
        TxBody {
            chain_id,
            sender: client.public_key(),
            nonce,
            fee: 1,
            kind: TxKind::Transfer {
                to: client.public_key(),
                amount: 1,
            },
        }
        .sign(client)
        .unwrap()
    }
}
