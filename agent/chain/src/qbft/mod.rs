//! QBFT consensus (EEA QBFT spec) as a pure state machine.
//!
//! The driver (the node runtime or the simulator) owns I/O and feeds
//! [`Input`]s to [`Engine::handle`], then executes the returned [`Effect`]s
//! **in order**. Ordering is part of the contract: a `PersistSafety` effect
//! must be durable before any effect after it is executed, because the
//! engine emits it just before broadcasting a vote that the persisted state
//! must remember (no double-signing after a crash).

mod engine;
pub mod messages;

pub use engine::{Engine, EngineConfig, EngineStats};
pub use messages::{ConsensusMessage, Payload, SignedPayload};

use metanode_core::hash::Hash32;
use metanode_core::keys::PublicKey;

use crate::types::{Block, FinalizedBlock, Height, Round, ValidatorSet};

/// The last committed block an engine starts from (genesis: height 0,
/// `block_hash` = genesis hash).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChainTip {
    pub height: Height,
    pub block_hash: Hash32,
    pub timestamp_ms: u64,
    /// Validators that decide `height + 1`.
    pub validators: ValidatorSet,
}

/// What goes into the engine.
// Inputs are moved straight into `handle` and never stored in bulk, so the
// size difference between a tick and a block costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Input {
    /// The driver's clock, in ms; the engine fires round timeouts from it.
    /// Must never go backwards.
    Tick { now_ms: u64 },
    /// A message from the network. The engine checks signatures, membership,
    /// height, round and justification itself.
    Message(ConsensusMessage),
    /// Answer to [`Effect::BuildProposal`]: the block to propose, and the
    /// validator set for `height + 1` that executing it produced.
    ProposalBuilt {
        height: Height,
        round: Round,
        block: Block,
        next_validators: ValidatorSet,
    },
    /// Answer to [`Effect::CheckBlock`]: `Ok(next validator set)` when the
    /// block is valid on top of the tip (roots, timestamp, transactions),
    /// `Err(reason)` otherwise.
    BlockChecked {
        height: Height,
        round: Round,
        block_hash: Hash32,
        result: Result<ValidatorSet, String>,
    },
    /// A finalized block for `height + 1` obtained by block sync, already
    /// executed by the driver (which checked its roots). The engine checks
    /// the certificate against its validator set before accepting it.
    SyncedBlock {
        block: FinalizedBlock,
        next_validators: ValidatorSet,
    },
}

/// What comes out of the engine, to be executed in order.
// Effects live briefly in one Vec per input; boxing blocks would add an
// allocation per proposal for no memory saved.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Effect {
    /// Make `state` durable (the safety record: height, round, what this
    /// validator signed, its prepared certificate) before executing any
    /// later effect. On restart pass it back to [`Engine::new`].
    PersistSafety(SafetyState),
    /// Send to every other validator of the current set.
    Broadcast(ConsensusMessage),
    /// This validator proposes at `(height, round)` with a new block: build
    /// one on `parent` (mempool selection, PoH order, execution) and answer
    /// with [`Input::ProposalBuilt`].
    BuildProposal {
        height: Height,
        round: Round,
        parent_hash: Hash32,
        parent_timestamp_ms: u64,
    },
    /// Validate `block` on top of the tip and answer with
    /// [`Input::BlockChecked`].
    CheckBlock {
        height: Height,
        round: Round,
        block: Block,
    },
    /// `block` is final. The driver stores it with its certificate, commits
    /// the application state and prunes the mempool. The engine has already
    /// moved to `height + 1` with `next_validators`.
    Decided {
        block: FinalizedBlock,
        next_validators: ValidatorSet,
    },
    /// Feed `Input::Tick` at or after `at_ms` (the engine ignores early or
    /// stale ticks, so a driver may tick more often).
    ScheduleTimeout {
        height: Height,
        round: Round,
        at_ms: u64,
    },
    /// We are probably behind: f+1 validators sent valid messages for
    /// higher heights (emitted once per height), or at a round timeout one
    /// validator is ahead, or a commit quorum names a block we do not have
    /// (then `height` is our own height). Fetch finalized blocks above our
    /// tip from `peer` (or anyone) and feed them as [`Input::SyncedBlock`].
    Behind { height: Height, peer: PublicKey },
    /// A message was dropped; for metrics and logs, never for control flow.
    Rejected {
        from: Option<PublicKey>,
        reason: String,
    },
}

/// The safety record: what must survive a crash so this validator never
/// signs two conflicting messages for one `(height, round)` and never
/// forgets a block it prepared. Encoded canonically (see engine.rs) for the
/// WAL.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SafetyState {
    pub height: Height,
    pub round: Round,
    /// Latest round and block this validator saw a prepare quorum for at
    /// `height`, with the block and the quorum.
    pub prepared: Option<PreparedRecord>,
    /// Payloads this validator signed at `height` (its own proposal,
    /// prepares, commits, round changes): re-sent as-is after a restart and
    /// checked before signing anything new.
    pub signed: Vec<SignedPayload>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PreparedRecord {
    pub round: Round,
    pub block: Block,
    pub prepares: Vec<SignedPayload>,
}
