//! The QBFT engine: one validator's (or observer's) view of consensus as a
//! pure state machine, following the EEA QBFT spec (Dafny `L1/node.dfy`) and
//! Besu's implementation of it.
//!
//! Per height the engine keeps, for each tracked round, the first valid
//! proposal, one prepare, one commit and one round change per signer. A
//! validator signs at most one proposal, prepare, commit and round change per
//! `(height, round)`, never signs for a round below its current one, and
//! makes every signature durable (`Effect::PersistSafety`) before the
//! broadcast that carries it. Finality is a commit quorum with valid seals in
//! any tracked round, turned into a [`CommitCertificate`] that is re-verified
//! before `Effect::Decided` leaves the engine.
//!
//! Choices beyond the spec, and why:
//! - A proposal is "accepted" once it is well formed and justified; it is
//!   prepared only after the driver's `BlockChecked` says `Ok` with a next
//!   validator set matching the header (checked here, so a driver bug can
//!   never finalize a block whose successor set is unknown). Check results
//!   are cached by block hash for the height, so a re-proposal is not
//!   executed twice.
//! - A justified proposal for a later round moves us to that round (as in
//!   Besu), without a round change of our own.
//! - On a round timeout we move to `max(round + 1, highest round any
//!   validator sent a valid round change for)`. With capped timers an honest
//!   validator that ran rounds alone can otherwise stay a round ahead of the
//!   rest forever (it may not go back, and alone it is not the f + 1 that
//!   pulls others up). Doing it only at a timeout keeps faulty validators
//!   from rushing us through rounds.
//! - `Effect::Behind` is emitted as soon as f + 1 current validators signed
//!   messages above our height, and at a round timeout if even one did, or
//!   if a commit quorum names a block we lack (`height` is then ours).
//! - `SafetyState::signed` keeps only the current round's signatures: we
//!   never sign below the current round, so older ones guard nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use metanode_core::encoding::{Decode, DecodeError, Encode, Reader, Writer, decode_version};
use metanode_core::hash::Hash32;
use metanode_core::keys::{PublicKey, Signature, SigningKey};
use metanode_core::limits::CHAIN_VALIDATORS_COUNT_MAX;

use super::messages::{ConsensusMessage, Payload, SignedPayload};
use super::{ChainTip, Effect, Input, PreparedRecord, SafetyState};
use crate::types::{
    Block, CHAIN_ENCODING_VERSION, ChainId, CommitCertificate, FinalizedBlock, Header, Height,
    Round, ValidatorIndex, ValidatorSet, commit_seal_digest,
};

#[path = "justify.rs"]
mod justify;

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

use justify::{Context, describe, describe_with_block};

/// Round 0's timeout; each later round doubles it (QBFT's `roundTimeout`).
const ROUND_TIMEOUT_BASE_MS_DEFAULT: u64 = 1_000;
/// Cap on the doubling, so a long outage does not leave validators waiting
/// hours for the next round once the network heals.
const ROUND_TIMEOUT_MAX_MS_DEFAULT: u64 = 60_000;

/// Rounds kept ahead of (and behind) the current round. Honest validators
/// drift apart by a few rounds at most (the f + 1 round-change rule pulls
/// laggards up), so a message more than 64 rounds ahead is from a faulty or
/// long-partitioned peer; dropping it only costs that peer a re-send on its
/// next timeout. Bounds per-height state at (2 · 64 + 1) rounds × N signers ×
/// 4 message kinds.
const ROUNDS_TRACKED_MAX: Round = 64;

/// Next-height messages buffered per signer while this height is open. An
/// honest peer that decided before us sends a proposal (if it leads), a
/// prepare, a commit and maybe a round change per round: 8 covers two rounds
/// of it. A peer further ahead than that means we are behind, and block sync
/// (`Effect::Behind`) is the remedy, not a deeper buffer.
const NEXT_HEIGHT_MESSAGES_PER_SIGNER_MAX: usize = 8;

/// Bound on `SafetyState::signed` in its encoding. The engine keeps only the
/// current round's signatures (at most one per message kind, so 4), which is
/// far below this; the slack lets a future engine keep more rounds without a
/// format change.
const SAFETY_SIGNED_COUNT_MAX: u32 = CHAIN_VALIDATORS_COUNT_MAX * 4;

const SAFETY_VERSIONS: &[u8] = &[CHAIN_ENCODING_VERSION];

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub chain_id: ChainId,
    pub round_timeout_base_ms: u64,
    pub round_timeout_max_ms: u64,
}

impl EngineConfig {
    /// Base 1 s, doubling per round, capped at 60 s.
    pub fn new(chain_id: ChainId) -> Self {
        EngineConfig {
            chain_id,
            round_timeout_base_ms: ROUND_TIMEOUT_BASE_MS_DEFAULT,
            round_timeout_max_ms: ROUND_TIMEOUT_MAX_MS_DEFAULT,
        }
    }

    /// `base · 2^round`, capped at the maximum (saturating, never overflows).
    pub fn round_timeout_ms(&self, round: Round) -> u64 {
        let factor = 1u64.checked_shl(round).unwrap_or(u64::MAX);
        self.round_timeout_base_ms
            .saturating_mul(factor)
            .min(self.round_timeout_max_ms)
    }
}

/// What the driver said about a block (by hash) at this height.
#[derive(Clone, Debug)]
enum CheckStatus {
    /// `Effect::CheckBlock` emitted, no answer yet.
    Pending,
    /// Valid on the tip; executing it yields this set for `height + 1`
    /// (already checked against `header.next_validator_set_hash`).
    Valid(ValidatorSet),
    Invalid(String),
}

/// The proposal this node accepted for a round: well formed, signed by the
/// round's proposer and justified. Its block is in `Engine::blocks`; it is
/// prepared once the block check says `Valid`.
#[derive(Clone, Debug)]
struct AcceptedProposal {
    proposer: PublicKey,
    block_hash: Hash32,
}

#[derive(Default, Debug)]
struct RoundState {
    proposal: Option<AcceptedProposal>,
    /// We lead this round and asked for a block or signed a proposal: never
    /// start a second one.
    proposing: bool,
    prepares: BTreeMap<PublicKey, SignedPayload>,
    commits: BTreeMap<PublicKey, SignedPayload>,
    round_changes: BTreeMap<PublicKey, SignedPayload>,
}

/// A `BuildProposal` waiting for its `ProposalBuilt`, with the round changes
/// that justify proposing a new block in this round (empty for round 0).
#[derive(Debug)]
struct PendingBuild {
    round: Round,
    round_changes: Vec<SignedPayload>,
}

/// The QBFT state machine.
pub struct Engine {
    config: EngineConfig,
    key: SigningKey,
    public_key: PublicKey,
    is_validator: bool,
    /// Latest driver clock seen (from `new` and `Tick`).
    now_ms: u64,
    /// The last decided block; `tip.validators` decides `height`.
    tip: ChainTip,
    height: Height,
    round: Round,
    round_deadline_ms: u64,
    /// Latest prepare quorum this validator saw (and committed on) here.
    prepared: Option<PreparedRecord>,
    /// What this validator signed at this height, current round only.
    signed: Vec<SignedPayload>,
    rounds: BTreeMap<Round, RoundState>,
    /// Blocks of accepted proposals and of valid prepared round changes.
    blocks: BTreeMap<Hash32, Block>,
    checks: BTreeMap<Hash32, CheckStatus>,
    /// Prepare quorums proving `(round, block)` prepared: from valid round
    /// changes and our own prepare quorums; a re-proposal attaches one.
    prepare_certs: BTreeMap<(Round, Hash32), Vec<SignedPayload>>,
    pending_build: Option<PendingBuild>,
    /// Validly signed `height + 1` messages, replayed after deciding.
    next_height_messages: Vec<ConsensusMessage>,
    /// Highest height above ours each current validator signed a message for.
    ahead: BTreeMap<PublicKey, Height>,
    /// Highest height already reported in `Effect::Behind` from `ahead`.
    behind_reported: Height,
    /// A safety record for a height above ours (the block store lost blocks
    /// the safety log outlived): restored when we get there, so syncing back
    /// up to it never double-signs.
    deferred_safety: Option<SafetyState>,
    stats: EngineStats,
}

/// Counters since the engine was created, for metrics (they steer nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Rounds that ran out of time here.
    pub round_timeouts: u64,
    /// Jumps to a higher round because f + 1 validators were already there.
    pub round_skips: u64,
    /// Round-change messages this validator signed and sent.
    pub round_changes_sent: u64,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("chain_id", &self.config.chain_id)
            .field("public_key", &self.public_key)
            .field("is_validator", &self.is_validator)
            .field("height", &self.height)
            .field("round", &self.round)
            .field("round_deadline_ms", &self.round_deadline_ms)
            .field("prepared_round", &self.prepared.as_ref().map(|p| p.round))
            .field("signed_count", &self.signed.len())
            .finish_non_exhaustive()
    }
}

fn reject(out: &mut Vec<Effect>, from: Option<PublicKey>, reason: String) {
    out.push(Effect::Rejected { from, reason });
}

fn same_kind(a: &Payload, b: &Payload) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

fn payload_block_hash(payload: &Payload) -> Option<Hash32> {
    match payload {
        Payload::Proposal { block_hash, .. }
        | Payload::Prepare { block_hash, .. }
        | Payload::Commit { block_hash, .. } => Some(*block_hash),
        Payload::RoundChange { .. } => None,
    }
}

impl Engine {
    /// Starts at `tip.height + 1`. `safety` is the last `PersistSafety` state
    /// the driver made durable (None on first start); a record for this
    /// height restores the round, the prepared certificate and the signed
    /// payloads (re-broadcast here), a record for an earlier height is stale
    /// and ignored.
    pub fn new(
        config: EngineConfig,
        key: SigningKey,
        tip: ChainTip,
        safety: Option<SafetyState>,
        now_ms: u64,
    ) -> (Engine, Vec<Effect>) {
        let public_key = key.public_key();
        let is_validator = tip.validators.index_of(&public_key).is_some();
        let height = tip.height.saturating_add(1);
        let mut engine = Engine {
            config,
            key,
            public_key,
            is_validator,
            now_ms,
            tip,
            height,
            round: 0,
            round_deadline_ms: now_ms,
            prepared: None,
            signed: Vec::new(),
            rounds: BTreeMap::new(),
            blocks: BTreeMap::new(),
            checks: BTreeMap::new(),
            prepare_certs: BTreeMap::new(),
            pending_build: None,
            next_height_messages: Vec::new(),
            ahead: BTreeMap::new(),
            behind_reported: 0,
            deferred_safety: None,
            stats: EngineStats::default(),
        };
        let mut out = Vec::new();
        match safety {
            Some(state) if state.height == height => engine.restore_safety(state, &mut out),
            Some(state) if state.height > height => engine.deferred_safety = Some(state),
            _ => {}
        }
        engine.start_round(&mut out);
        (engine, out)
    }

    pub fn handle(&mut self, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::Tick { now_ms } => {
                self.now_ms = self.now_ms.max(now_ms);
                if self.now_ms >= self.round_deadline_ms {
                    self.on_round_timeout(out);
                }
            }
            Input::Message(message) => self.on_message(message, out),
            Input::ProposalBuilt {
                height,
                round,
                block,
                next_validators,
            } => self.on_proposal_built(height, round, block, next_validators, out),
            Input::BlockChecked {
                height,
                round: _,
                block_hash,
                result,
            } => self.on_block_checked(height, block_hash, result, out),
            Input::SyncedBlock {
                block,
                next_validators,
            } => self.on_synced_block(block, next_validators, out),
        }
    }

    /// The height being decided.
    pub fn height(&self) -> Height {
        self.height
    }

    pub fn round(&self) -> Round {
        self.round
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The set deciding `height()`.
    pub fn validators(&self) -> &ValidatorSet {
        &self.tip.validators
    }

    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Observers (keys outside the set) follow commits and synced blocks and
    /// never sign.
    pub fn is_validator(&self) -> bool {
        self.is_validator
    }

    // ------------------------------------------------------------ helpers

    fn ctx(&self) -> Context<'_> {
        Context {
            chain_id: &self.config.chain_id,
            validators: &self.tip.validators,
            height: self.height,
        }
    }

    fn quorum(&self) -> usize {
        self.tip.validators.quorum()
    }

    fn round_state(&mut self, round: Round) -> &mut RoundState {
        self.rounds.entry(round).or_default()
    }

    fn safety_state(&self) -> SafetyState {
        SafetyState {
            height: self.height,
            round: self.round,
            prepared: self.prepared.clone(),
            signed: self.signed.clone(),
        }
    }

    /// `header` builds on our tip for the height being decided.
    fn check_header_extends_tip(&self, header: &Header) -> Result<(), String> {
        if header.chain_id != self.config.chain_id {
            return Err(format!(
                "block header is for chain {}, not {}",
                header.chain_id, self.config.chain_id
            ));
        }
        if header.height != self.height {
            return Err(format!(
                "block header height is {}, not {}",
                header.height, self.height
            ));
        }
        if header.prev_hash != self.tip.block_hash {
            return Err(format!(
                "block header prev_hash is {}, not the tip {}",
                header.prev_hash, self.tip.block_hash
            ));
        }
        let set_hash = self.tip.validators.hash();
        if header.validator_set_hash != set_hash {
            return Err(format!(
                "block header validator_set_hash is {}, not the current set's {set_hash}",
                header.validator_set_hash
            ));
        }
        Ok(())
    }

    fn accepted_valid_hash(&self, round: Round) -> Option<Hash32> {
        let hash = self.rounds.get(&round)?.proposal.as_ref()?.block_hash;
        matches!(self.checks.get(&hash), Some(CheckStatus::Valid(_))).then_some(hash)
    }

    // ------------------------------------------------------------- signing

    /// Signs `payload` unless that could equivocate: an identical payload
    /// already signed is returned as is; a payload for a round below ours, or
    /// below a round change we signed, or a second, different payload of the
    /// same kind for one round, is refused.
    fn sign_guarded(&mut self, payload: Payload) -> Result<SignedPayload, String> {
        if let Some(existing) = self.signed.iter().find(|s| s.payload == payload) {
            return Ok(existing.clone());
        }
        let what = describe_with_block(&payload);
        let round = payload.round();
        if payload.height() != self.height {
            return Err(format!(
                "refusing to sign {what}: this validator is at height {}",
                self.height
            ));
        }
        if round < self.round {
            return Err(format!(
                "refusing to sign {what}: this validator is already at round {}",
                self.round
            ));
        }
        if let Some(rc) = self
            .signed
            .iter()
            .find(|s| matches!(s.payload, Payload::RoundChange { .. }) && s.payload.round() > round)
        {
            return Err(format!(
                "refusing to sign {what}: this validator already signed a {}",
                describe(&rc.payload)
            ));
        }
        if let Some(conflict) = self
            .signed
            .iter()
            .find(|s| same_kind(&s.payload, &payload) && s.payload.round() == round)
        {
            return Err(format!(
                "refusing to sign {what}: it conflicts with the {} this validator already signed",
                describe_with_block(&conflict.payload)
            ));
        }
        let signed = SignedPayload::sign(&self.config.chain_id, payload, &self.key);
        self.signed.push(signed.clone());
        assert!(
            self.signed.len() <= SAFETY_SIGNED_COUNT_MAX as usize,
            "safety record holds {} signed payloads; pruning per round keeps it at 4",
            self.signed.len()
        );
        Ok(signed)
    }

    /// Signs, persists the safety record, then broadcasts `wrap(signed)`:
    /// the record is durable before any peer can see the signature.
    fn sign_and_broadcast(
        &mut self,
        payload: Payload,
        out: &mut Vec<Effect>,
        wrap: impl FnOnce(SignedPayload) -> ConsensusMessage,
    ) -> Option<SignedPayload> {
        assert!(
            self.is_validator,
            "an observer tried to sign a consensus message"
        );
        let signed = match self.sign_guarded(payload) {
            Ok(signed) => signed,
            Err(reason) => {
                reject(out, None, reason);
                return None;
            }
        };
        out.push(Effect::PersistSafety(self.safety_state()));
        out.push(Effect::Broadcast(wrap(signed.clone())));
        Some(signed)
    }

    // -------------------------------------------------------------- rounds

    fn start_round(&mut self, out: &mut Vec<Effect>) {
        self.round_deadline_ms = self
            .now_ms
            .saturating_add(self.config.round_timeout_ms(self.round));
        out.push(Effect::ScheduleTimeout {
            height: self.height,
            round: self.round,
            at_ms: self.round_deadline_ms,
        });
        self.maybe_propose(out);
    }

    /// Moves to a higher round: new timer, state outside the window dropped.
    /// The caller sends a round change (timeout, f + 1 rule) or prepares a
    /// justified proposal, then calls `maybe_propose`.
    fn enter_round(&mut self, round: Round, out: &mut Vec<Effect>) {
        assert!(
            round > self.round,
            "rounds only move forward ({} to {round})",
            self.round
        );
        self.round = round;
        self.pending_build = None;
        self.round_deadline_ms = self
            .now_ms
            .saturating_add(self.config.round_timeout_ms(round));
        self.prune();
        out.push(Effect::ScheduleTimeout {
            height: self.height,
            round,
            at_ms: self.round_deadline_ms,
        });
    }

    fn prune(&mut self) {
        let floor = self.round.saturating_sub(ROUNDS_TRACKED_MAX);
        self.rounds = self.rounds.split_off(&floor);
        // We never sign below the current round again, so older signatures
        // no longer guard anything.
        let round = self.round;
        self.signed.retain(|s| s.payload.round() >= round);
        let mut blocks = BTreeSet::new();
        let mut certs = BTreeSet::new();
        for rs in self.rounds.values() {
            if let Some(p) = &rs.proposal {
                blocks.insert(p.block_hash);
            }
            for rc in rs.round_changes.values() {
                if let Payload::RoundChange {
                    prepared: Some((prepared_round, hash)),
                    ..
                } = rc.payload
                {
                    blocks.insert(hash);
                    certs.insert((prepared_round, hash));
                }
            }
        }
        if let Some(p) = &self.prepared {
            let hash = p.block.hash();
            blocks.insert(hash);
            certs.insert((p.round, hash));
        }
        self.blocks.retain(|h, _| blocks.contains(h));
        self.checks.retain(|h, _| blocks.contains(h));
        self.prepare_certs.retain(|k, _| certs.contains(k));
    }

    fn on_round_timeout(&mut self, out: &mut Vec<Effect>) {
        let Some(next) = self.round.checked_add(1) else {
            return;
        };
        self.stats.round_timeouts += 1;
        // Catch up with the highest round any validator asked for. With
        // capped timers, an honest validator that ran rounds alone (say, it
        // decided the previous height first) can stay a whole round ahead of
        // the others forever: it may never go back, and alone it is not the
        // f + 1 that pulls others forward. Jumping on one signer only at a
        // timeout keeps the f + 1 rule's protection against being rushed by
        // faulty validators (they can only add up to ROUNDS_TRACKED_MAX
        // rounds per timeout, never shorten one), and moving up is safe.
        let next = next.max(self.highest_round_change_round().unwrap_or(0));
        self.enter_round(next, out);
        self.send_round_change(out);
        self.report_behind(out);
        self.maybe_propose(out);
    }

    fn send_round_change(&mut self, out: &mut Vec<Effect>) {
        if !self.is_validator {
            return;
        }
        let (height, round) = (self.height, self.round);
        let prepared = self.prepared.as_ref().map(|p| (p.round, p.block.hash()));
        let (prepared_block, prepares) = match &self.prepared {
            Some(p) => (Some(p.block.clone()), p.prepares.clone()),
            None => (None, Vec::new()),
        };
        let payload = Payload::RoundChange {
            height,
            round,
            prepared,
        };
        if let Some(signed) =
            self.sign_and_broadcast(payload, out, |round_change| ConsensusMessage::RoundChange {
                round_change,
                prepared_block,
                prepares,
            })
        {
            self.stats.round_changes_sent += 1;
            let me = self.public_key;
            self.round_state(round).round_changes.insert(me, signed);
        }
    }

    /// The highest round above ours some other validator sent a valid round
    /// change for (within the tracked window, as all stored rounds are).
    fn highest_round_change_round(&self) -> Option<Round> {
        let start = self.round.checked_add(1)?;
        let me = self.public_key;
        self.rounds
            .range(start..)
            .rev()
            .find(|(_, rs)| rs.round_changes.keys().any(|k| *k != me))
            .map(|(round, _)| *round)
    }

    /// The round f + 1 validators have moved past ours to: the (f + 1)-th
    /// highest of each signer's highest round change above our round, so at
    /// least one honest validator is at or beyond it.
    fn round_skip_target(&self) -> Option<Round> {
        let start = self.round.checked_add(1)?;
        let mut highest: BTreeMap<PublicKey, Round> = BTreeMap::new();
        for (round, rs) in self.rounds.range(start..) {
            for signer in rs.round_changes.keys() {
                highest.insert(*signer, *round);
            }
        }
        let weak_quorum = self.tip.validators.weak_quorum();
        let mut rounds: Vec<Round> = highest.into_values().collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        rounds.get(weak_quorum.checked_sub(1)?).copied()
    }

    /// Leads the current round if it is ours: round 0 builds a block; a
    /// later round needs a quorum of round changes and re-proposes the
    /// highest prepared block among them, or builds a new one if none is
    /// prepared.
    fn maybe_propose(&mut self, out: &mut Vec<Effect>) {
        let (height, round) = (self.height, self.round);
        let me = self.public_key;
        if !self.is_validator || *self.tip.validators.proposer(height, round) != me {
            return;
        }
        if self
            .signed
            .iter()
            .any(|s| matches!(s.payload, Payload::Proposal { round: r, .. } if r == round))
        {
            return;
        }
        let quorum = self.quorum();
        let build = Effect::BuildProposal {
            height,
            round,
            parent_hash: self.tip.block_hash,
            parent_timestamp_ms: self.tip.timestamp_ms,
        };
        let rs = self.round_state(round);
        if rs.proposing || rs.proposal.is_some() {
            return;
        }
        if round == 0 {
            rs.proposing = true;
            self.pending_build = Some(PendingBuild {
                round,
                round_changes: Vec::new(),
            });
            out.push(build);
            return;
        }
        if rs.round_changes.len() < quorum {
            return;
        }
        rs.proposing = true;
        let round_changes: Vec<SignedPayload> = rs.round_changes.values().cloned().collect();
        let highest = round_changes
            .iter()
            .filter_map(|rc| match rc.payload {
                Payload::RoundChange {
                    prepared: Some(p), ..
                } => Some(p),
                _ => None,
            })
            .max_by_key(|(prepared_round, _)| *prepared_round);
        let Some((prepared_round, hash)) = highest else {
            self.pending_build = Some(PendingBuild {
                round,
                round_changes,
            });
            out.push(build);
            return;
        };
        // Every stored prepared round change had its block and certificate
        // checked and stored on receipt, and `prune` keeps what they name.
        let block = self.blocks.get(&hash).cloned();
        let prepares = self.prepare_certs.get(&(prepared_round, hash)).cloned();
        let (Some(block), Some(prepares)) = (block, prepares) else {
            panic!(
                "prepared round change for block {hash} at round {prepared_round} without its block or certificate"
            );
        };
        let payload = Payload::Proposal {
            height,
            round,
            block_hash: hash,
        };
        let sent = self.sign_and_broadcast(payload, out, |proposal| ConsensusMessage::Proposal {
            proposal,
            block,
            round_changes,
            prepares,
        });
        if sent.is_some() {
            self.round_state(round).proposal = Some(AcceptedProposal {
                proposer: me,
                block_hash: hash,
            });
            self.process_accepted_proposal(out);
            if self.height == height {
                self.try_decide_all(hash, out);
            }
        }
    }

    // ------------------------------------------------------------ proposals

    fn on_proposal_built(
        &mut self,
        height: Height,
        round: Round,
        block: Block,
        next_validators: ValidatorSet,
        out: &mut Vec<Effect>,
    ) {
        let expected = height == self.height
            && round == self.round
            && self
                .pending_build
                .as_ref()
                .is_some_and(|p| p.round == round);
        if !expected {
            return;
        }
        let Some(pending) = self.pending_build.take() else {
            return;
        };
        let header = &block.header;
        let next_hash = next_validators.hash();
        let problem = self
            .check_header_extends_tip(header)
            .err()
            .or_else(|| {
                (header.round != round)
                    .then(|| format!("header round is {}, not {round}", header.round))
            })
            .or_else(|| {
                (header.proposer != self.public_key).then(|| {
                    format!("header proposer is {}, not this validator", header.proposer)
                })
            })
            .or_else(|| {
                (header.next_validator_set_hash != next_hash).then(|| {
                    format!(
                        "header next_validator_set_hash is {}, but the next validator set hashes to {next_hash}",
                        header.next_validator_set_hash
                    )
                })
            });
        if let Some(problem) = problem {
            reject(
                out,
                None,
                format!("built proposal for height {height} round {round} is unusable: {problem}"),
            );
            return;
        }
        let hash = block.hash();
        self.checks
            .insert(hash, CheckStatus::Valid(next_validators));
        self.blocks.insert(hash, block.clone());
        let payload = Payload::Proposal {
            height,
            round,
            block_hash: hash,
        };
        let sent = self.sign_and_broadcast(payload, out, |proposal| ConsensusMessage::Proposal {
            proposal,
            block,
            round_changes: pending.round_changes,
            prepares: Vec::new(),
        });
        if sent.is_some() {
            let me = self.public_key;
            self.round_state(round).proposal = Some(AcceptedProposal {
                proposer: me,
                block_hash: hash,
            });
            self.process_accepted_proposal(out);
            if self.height == height {
                self.try_decide_all(hash, out);
            }
        }
    }

    /// Everything about a received proposal except the block's execution.
    fn validate_proposal(
        &self,
        proposal: &SignedPayload,
        block: &Block,
        round_changes: &[SignedPayload],
        prepares: &[SignedPayload],
    ) -> Result<(), String> {
        let Payload::Proposal {
            height,
            round,
            block_hash,
        } = proposal.payload
        else {
            return Err("not a proposal payload".into());
        };
        let leader = self.tip.validators.proposer(height, round);
        if proposal.signer != *leader {
            return Err(format!(
                "signer is not the proposer of height {height} round {round} ({leader} is)"
            ));
        }
        let n = self.tip.validators.len();
        if round_changes.len() > n || prepares.len() > n {
            return Err(format!(
                "justification holds {} round changes and {} prepares, more than the {n} validators",
                round_changes.len(),
                prepares.len()
            ));
        }
        proposal
            .verify(&self.config.chain_id)
            .map_err(|_| "signature does not verify".to_string())?;
        let actual = block.hash();
        if actual != block_hash {
            return Err(format!(
                "payload names block {block_hash} but the attached block is {actual}"
            ));
        }
        self.check_header_extends_tip(&block.header)?;
        let new_block = |header: &Header| -> Result<(), String> {
            if header.round != round {
                return Err(format!(
                    "new block's header names round {}, not {round}",
                    header.round
                ));
            }
            if header.proposer != proposal.signer {
                return Err(format!(
                    "new block's header names proposer {}, not the signer",
                    header.proposer
                ));
            }
            Ok(())
        };
        if round == 0 {
            if !round_changes.is_empty() || !prepares.is_empty() {
                return Err("round 0 proposal carries a justification".into());
            }
            return new_block(&block.header);
        }
        let ctx = self.ctx();
        let highest = justify::check_round_change_quorum(&ctx, round, round_changes)
            .map_err(|e| format!("round-change justification: {e}"))?;
        match highest {
            None => {
                if !prepares.is_empty() {
                    return Err(format!(
                        "no justifying round change is prepared, yet the proposal carries {} prepares",
                        prepares.len()
                    ));
                }
                new_block(&block.header)
            }
            Some(highest) => {
                if !highest.block_hashes.contains(&block_hash) {
                    return Err(format!(
                        "the highest prepared round change (round {}) locks block {}, but the proposal is for {block_hash}",
                        highest.round,
                        highest
                            .block_hashes
                            .first()
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    ));
                }
                justify::check_prepare_quorum(&ctx, highest.round, &block_hash, prepares)
                    .map_err(|e| format!("prepare justification: {e}"))
            }
        }
    }

    fn on_proposal(
        &mut self,
        proposal: SignedPayload,
        block: Block,
        round_changes: Vec<SignedPayload>,
        prepares: Vec<SignedPayload>,
        out: &mut Vec<Effect>,
    ) {
        let Payload::Proposal {
            round, block_hash, ..
        } = proposal.payload
        else {
            return;
        };
        if round < self.round {
            return;
        }
        let signer = proposal.signer;
        let what = describe(&proposal.payload);
        let existing = self
            .rounds
            .get(&round)
            .and_then(|rs| rs.proposal.as_ref())
            .map(|p| p.block_hash);
        if existing == Some(block_hash) {
            return;
        }
        if let Err(reason) = self.validate_proposal(&proposal, &block, &round_changes, &prepares) {
            reject(out, Some(signer), format!("{what} from {signer}: {reason}"));
            return;
        }
        if let Some(accepted) = existing {
            reject(
                out,
                Some(signer),
                format!(
                    "{what} from {signer}: this validator already accepted its proposal for block {accepted} in this round (proposer equivocation)"
                ),
            );
            return;
        }
        if round > self.round {
            // A justified proposal proves a quorum moved to its round.
            self.enter_round(round, out);
        }
        self.blocks.entry(block_hash).or_insert(block);
        self.round_state(round).proposal = Some(AcceptedProposal {
            proposer: signer,
            block_hash,
        });
        let height = self.height;
        self.process_accepted_proposal(out);
        if self.height == height {
            self.try_decide_all(block_hash, out);
        }
    }

    /// Drives the current round's accepted proposal: ask for the block check
    /// once, then prepare (validators) and look for quorums.
    fn process_accepted_proposal(&mut self, out: &mut Vec<Effect>) {
        let (height, round) = (self.height, self.round);
        let Some(proposal) = self.rounds.get(&round).and_then(|rs| rs.proposal.clone()) else {
            return;
        };
        let hash = proposal.block_hash;
        match self.checks.get(&hash) {
            None => {
                let Some(block) = self.blocks.get(&hash).cloned() else {
                    return;
                };
                self.checks.insert(hash, CheckStatus::Pending);
                out.push(Effect::CheckBlock {
                    height,
                    round,
                    block,
                });
            }
            Some(CheckStatus::Pending) => {}
            Some(CheckStatus::Invalid(reason)) => reject(
                out,
                Some(proposal.proposer),
                format!(
                    "proposal for height {height} round {round} from {}: block {hash} failed the check: {reason}",
                    proposal.proposer
                ),
            ),
            Some(CheckStatus::Valid(_)) => {
                if self.is_validator {
                    let payload = Payload::Prepare {
                        height,
                        round,
                        block_hash: hash,
                    };
                    if let Some(signed) =
                        self.sign_and_broadcast(payload, out, ConsensusMessage::Prepare)
                    {
                        let me = self.public_key;
                        self.round_state(round).prepares.insert(me, signed);
                    }
                }
                self.try_commit(out);
            }
        }
    }

    fn on_block_checked(
        &mut self,
        height: Height,
        block_hash: Hash32,
        result: Result<ValidatorSet, String>,
        out: &mut Vec<Effect>,
    ) {
        if height != self.height
            || !matches!(self.checks.get(&block_hash), Some(CheckStatus::Pending))
        {
            return;
        }
        let Some(block) = self.blocks.get(&block_hash) else {
            return;
        };
        let status = match result {
            Ok(next) => {
                let next_hash = next.hash();
                if next_hash == block.header.next_validator_set_hash {
                    CheckStatus::Valid(next)
                } else {
                    CheckStatus::Invalid(format!(
                        "executing it gives a next validator set hashing to {next_hash}, but the header names {}",
                        block.header.next_validator_set_hash
                    ))
                }
            }
            Err(reason) => CheckStatus::Invalid(reason),
        };
        self.checks.insert(block_hash, status);
        if self.accepted_hash_any(self.round) == Some(block_hash) {
            self.process_accepted_proposal(out);
        }
        if self.height == height {
            self.try_decide_all(block_hash, out);
        }
    }

    fn accepted_hash_any(&self, round: Round) -> Option<Hash32> {
        Some(self.rounds.get(&round)?.proposal.as_ref()?.block_hash)
    }

    // ------------------------------------------------------ prepare, commit

    fn on_prepare(&mut self, prepare: SignedPayload, out: &mut Vec<Effect>) {
        let Payload::Prepare { round, .. } = prepare.payload else {
            return;
        };
        if round < self.round {
            return;
        }
        let signer = prepare.signer;
        let existing = self
            .rounds
            .get(&round)
            .and_then(|rs| rs.prepares.get(&signer));
        if existing == Some(&prepare) {
            return;
        }
        let what = describe_with_block(&prepare.payload);
        if let Err(reason) = justify::check_signer(&self.ctx(), &prepare) {
            reject(out, Some(signer), format!("{what} from {signer}: {reason}"));
            return;
        }
        if let Some(existing) = existing {
            reject(
                out,
                Some(signer),
                format!(
                    "{what} from {signer}: conflicts with its earlier {}",
                    describe_with_block(&existing.payload)
                ),
            );
            return;
        }
        self.round_state(round).prepares.insert(signer, prepare);
        if round == self.round {
            self.try_commit(out);
        }
    }

    /// A prepare quorum for the current round's accepted, valid proposal:
    /// record it as prepared (the lock) and commit.
    fn try_commit(&mut self, out: &mut Vec<Effect>) {
        if !self.is_validator {
            return;
        }
        let (height, round) = (self.height, self.round);
        let Some(hash) = self.accepted_valid_hash(round) else {
            return;
        };
        if self
            .signed
            .iter()
            .any(|s| matches!(s.payload, Payload::Commit { round: r, .. } if r == round))
        {
            return;
        }
        let prepares: Vec<SignedPayload> = self
            .rounds
            .get(&round)
            .map(|rs| {
                rs.prepares
                    .values()
                    .filter(|p| payload_block_hash(&p.payload) == Some(hash))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if prepares.len() < self.quorum() {
            return;
        }
        let Some(block) = self.blocks.get(&hash).cloned() else {
            return;
        };
        self.prepare_certs.insert((round, hash), prepares.clone());
        self.prepared = Some(PreparedRecord {
            round,
            block,
            prepares,
        });
        let digest = commit_seal_digest(&self.config.chain_id, height, round, &hash);
        let seal = self.key.sign(digest.as_bytes());
        let payload = Payload::Commit {
            height,
            round,
            block_hash: hash,
            seal,
        };
        if let Some(signed) = self.sign_and_broadcast(payload, out, ConsensusMessage::Commit) {
            let me = self.public_key;
            self.round_state(round).commits.insert(me, signed);
            self.try_decide(round, hash, out);
        }
    }

    fn on_commit(&mut self, commit: SignedPayload, out: &mut Vec<Effect>) {
        let Payload::Commit {
            height,
            round,
            block_hash,
            seal,
        } = commit.payload
        else {
            return;
        };
        if u64::from(round) + u64::from(ROUNDS_TRACKED_MAX) < u64::from(self.round) {
            return;
        }
        let signer = commit.signer;
        let existing = self
            .rounds
            .get(&round)
            .and_then(|rs| rs.commits.get(&signer));
        if existing == Some(&commit) {
            return;
        }
        let what = describe_with_block(&commit.payload);
        if let Err(reason) = justify::check_signer(&self.ctx(), &commit) {
            reject(out, Some(signer), format!("{what} from {signer}: {reason}"));
            return;
        }
        let digest = commit_seal_digest(&self.config.chain_id, height, round, &block_hash);
        if signer.verify(digest.as_bytes(), &seal).is_err() {
            reject(
                out,
                Some(signer),
                format!("{what} from {signer}: commit seal does not verify"),
            );
            return;
        }
        if let Some(existing) = existing {
            reject(
                out,
                Some(signer),
                format!(
                    "{what} from {signer}: conflicts with its earlier {}",
                    describe_with_block(&existing.payload)
                ),
            );
            return;
        }
        self.round_state(round).commits.insert(signer, commit);
        self.try_decide(round, block_hash, out);
    }

    fn try_decide_all(&mut self, hash: Hash32, out: &mut Vec<Effect>) {
        let height = self.height;
        let rounds: Vec<Round> = self.rounds.keys().copied().collect();
        for round in rounds {
            if self.height != height {
                return;
            }
            self.try_decide(round, hash, out);
        }
    }

    /// A commit quorum (valid seals) for `(round, hash)` with the block in
    /// hand and checked valid decides the height.
    fn try_decide(&mut self, round: Round, hash: Hash32, out: &mut Vec<Effect>) {
        let height = self.height;
        let Some(rs) = self.rounds.get(&round) else {
            return;
        };
        let seals: Vec<(ValidatorIndex, Signature)> = rs
            .commits
            .values()
            .filter_map(|c| match c.payload {
                Payload::Commit {
                    block_hash, seal, ..
                } if block_hash == hash => {
                    self.tip.validators.index_of(&c.signer).map(|i| (i, seal))
                }
                _ => None,
            })
            .collect();
        if seals.len() < self.quorum() {
            return;
        }
        let Some(block) = self.blocks.get(&hash).cloned() else {
            return;
        };
        match self.checks.get(&hash).cloned() {
            None => {
                self.checks.insert(hash, CheckStatus::Pending);
                out.push(Effect::CheckBlock {
                    height,
                    round,
                    block,
                });
            }
            Some(CheckStatus::Pending) => {}
            Some(CheckStatus::Invalid(reason)) => reject(
                out,
                None,
                format!(
                    "a quorum committed block {hash} at height {height} round {round}, but it failed our check: {reason}"
                ),
            ),
            Some(CheckStatus::Valid(next)) => {
                let certificate = CommitCertificate::from_seals(
                    height,
                    round,
                    hash,
                    self.tip.validators.len(),
                    &seals,
                );
                let verified =
                    certificate.verify(&self.config.chain_id, &block.header, &self.tip.validators);
                assert!(
                    verified.is_ok(),
                    "certificate for block {hash} at height {height} round {round}, built from verified seals, does not verify: {verified:?}"
                );
                assert_eq!(
                    next.hash(),
                    block.header.next_validator_set_hash,
                    "a Valid check status always matches the header's next set"
                );
                self.decide(FinalizedBlock { block, certificate }, next, out);
            }
        }
    }

    fn decide(&mut self, block: FinalizedBlock, next: ValidatorSet, out: &mut Vec<Effect>) {
        let header = block.block.header.clone();
        out.push(Effect::Decided {
            block,
            next_validators: next.clone(),
        });
        self.advance(&header, next, out);
    }

    /// Moves to the height after `header`, decided by `next`.
    fn advance(&mut self, header: &Header, next: ValidatorSet, out: &mut Vec<Effect>) {
        self.tip = ChainTip {
            height: header.height,
            block_hash: header.hash(),
            timestamp_ms: header.timestamp_ms,
            validators: next,
        };
        self.height = header.height.saturating_add(1);
        self.round = 0;
        self.is_validator = self.tip.validators.index_of(&self.public_key).is_some();
        self.prepared = None;
        self.signed.clear();
        self.rounds.clear();
        self.blocks.clear();
        self.checks.clear();
        self.prepare_certs.clear();
        self.pending_build = None;
        let height = self.height;
        self.ahead.retain(|_, h| *h > height);
        if let Some(state) = self.deferred_safety.take() {
            if state.height == height {
                self.restore_safety(state, out);
            } else if state.height > height {
                self.deferred_safety = Some(state);
            }
        }
        if self.is_validator {
            out.push(Effect::PersistSafety(self.safety_state()));
        }
        self.start_round(out);
        // Pipelining: what peers already said about this height counts now.
        let buffered = std::mem::take(&mut self.next_height_messages);
        for message in buffered {
            self.on_message(message, out);
        }
    }

    // -------------------------------------------------------- round changes

    fn validate_round_change(
        &self,
        round_change: &SignedPayload,
        prepared_block: Option<&Block>,
        prepares: &[SignedPayload],
    ) -> Result<(), String> {
        let Payload::RoundChange {
            height,
            round,
            prepared,
        } = round_change.payload
        else {
            return Err("not a round change payload".into());
        };
        if self.tip.validators.index_of(&round_change.signer).is_none() {
            return Err("signer is not a validator".into());
        }
        match (prepared, prepared_block) {
            (None, None) if prepares.is_empty() => {}
            (None, None) => {
                return Err(format!(
                    "round change is not prepared but carries {} prepares",
                    prepares.len()
                ));
            }
            (None, Some(_)) => {
                return Err("round change is not prepared but carries a block".into());
            }
            (Some(_), None) => return Err("round change is prepared but carries no block".into()),
            (Some((prepared_round, hash)), Some(block)) => {
                if prepared_round >= round {
                    return Err(format!(
                        "prepared round {prepared_round} is not below the round change's round {round}"
                    ));
                }
                let actual = block.hash();
                if actual != hash {
                    return Err(format!(
                        "round change is prepared for block {hash} but carries block {actual}"
                    ));
                }
                if block.header.height != height {
                    return Err(format!(
                        "prepared block is for height {}, not {height}",
                        block.header.height
                    ));
                }
                if prepares.len() > self.tip.validators.len() {
                    return Err(format!(
                        "prepared certificate holds {} prepares, more than the {} validators",
                        prepares.len(),
                        self.tip.validators.len()
                    ));
                }
            }
        }
        round_change
            .verify(&self.config.chain_id)
            .map_err(|_| "signature does not verify".to_string())?;
        if let Some((prepared_round, hash)) = prepared {
            justify::check_prepare_quorum(&self.ctx(), prepared_round, &hash, prepares)
                .map_err(|e| format!("prepared certificate: {e}"))?;
        }
        Ok(())
    }

    fn on_round_change(
        &mut self,
        round_change: SignedPayload,
        prepared_block: Option<Block>,
        prepares: Vec<SignedPayload>,
        out: &mut Vec<Effect>,
    ) {
        let Payload::RoundChange {
            round, prepared, ..
        } = round_change.payload
        else {
            return;
        };
        if round < self.round {
            return;
        }
        let signer = round_change.signer;
        let existing = self
            .rounds
            .get(&round)
            .and_then(|rs| rs.round_changes.get(&signer));
        if existing == Some(&round_change) {
            return;
        }
        let what = describe(&round_change.payload);
        if let Err(reason) =
            self.validate_round_change(&round_change, prepared_block.as_ref(), &prepares)
        {
            reject(out, Some(signer), format!("{what} from {signer}: {reason}"));
            return;
        }
        if let Some(existing) = existing {
            reject(
                out,
                Some(signer),
                format!(
                    "{} from {signer}: conflicts with its earlier {}",
                    describe_with_block(&round_change.payload),
                    describe_with_block(&existing.payload)
                ),
            );
            return;
        }
        if let (Some((prepared_round, hash)), Some(block)) = (prepared, prepared_block) {
            self.blocks.entry(hash).or_insert(block);
            self.prepare_certs
                .entry((prepared_round, hash))
                .or_insert(prepares);
        }
        self.round_state(round)
            .round_changes
            .insert(signer, round_change);
        let height = self.height;
        if let Some((_, hash)) = prepared {
            // The block may be the one a commit quorum we hold is for.
            self.try_decide_all(hash, out);
            if self.height != height {
                return;
            }
        }
        if let Some(target) = self.round_skip_target() {
            self.stats.round_skips += 1;
            self.enter_round(target, out);
            self.send_round_change(out);
        }
        self.maybe_propose(out);
    }

    // ------------------------------------------------------------ dispatch

    fn on_message(&mut self, message: ConsensusMessage, out: &mut Vec<Effect>) {
        let head = message.head();
        let signer = head.signer;
        let kind_matches = matches!(
            (&message, &head.payload),
            (ConsensusMessage::Proposal { .. }, Payload::Proposal { .. })
                | (ConsensusMessage::Prepare(_), Payload::Prepare { .. })
                | (ConsensusMessage::Commit(_), Payload::Commit { .. })
                | (
                    ConsensusMessage::RoundChange { .. },
                    Payload::RoundChange { .. }
                )
        );
        if !kind_matches {
            let kind = match &message {
                ConsensusMessage::Proposal { .. } => "proposal",
                ConsensusMessage::Prepare(_) => "prepare",
                ConsensusMessage::Commit(_) => "commit",
                ConsensusMessage::RoundChange { .. } => "round change",
            };
            reject(
                out,
                Some(signer),
                format!(
                    "{kind} message from {signer} carries a {}",
                    describe(&head.payload)
                ),
            );
            return;
        }
        let height = head.payload.height();
        if height < self.height {
            return;
        }
        if height > self.height {
            self.on_future_height(message, out);
            return;
        }
        let round = head.payload.round();
        if u64::from(round) > u64::from(self.round) + u64::from(ROUNDS_TRACKED_MAX) {
            reject(
                out,
                Some(signer),
                format!(
                    "{} from {signer}: round {round} is more than {ROUNDS_TRACKED_MAX} rounds ahead of our round {}",
                    describe(&head.payload),
                    self.round
                ),
            );
            return;
        }
        match message {
            ConsensusMessage::Proposal {
                proposal,
                block,
                round_changes,
                prepares,
            } => self.on_proposal(proposal, block, round_changes, prepares, out),
            ConsensusMessage::Prepare(prepare) => self.on_prepare(prepare, out),
            ConsensusMessage::Commit(commit) => self.on_commit(commit, out),
            ConsensusMessage::RoundChange {
                round_change,
                prepared_block,
                prepares,
            } => self.on_round_change(round_change, prepared_block, prepares, out),
        }
    }

    /// Messages above our height: buffer `height + 1` for replay after we
    /// decide, and count who is ahead to detect that we are behind.
    fn on_future_height(&mut self, message: ConsensusMessage, out: &mut Vec<Effect>) {
        let head = message.head();
        let signer = head.signer;
        let height = head.payload.height();
        let what = describe(&head.payload);
        if self.tip.validators.index_of(&signer).is_none() {
            reject(
                out,
                Some(signer),
                format!(
                    "{what} from {signer}: signer is not in the validator set of height {}, the latest this node knows",
                    self.height
                ),
            );
            return;
        }
        let next_height = height == self.height.saturating_add(1);
        let already_counted = self.ahead.get(&signer).is_some_and(|h| *h >= height);
        if (next_height || !already_counted) && head.verify(&self.config.chain_id).is_err() {
            reject(
                out,
                Some(signer),
                format!("{what} from {signer}: signature does not verify"),
            );
            return;
        }
        if next_height {
            if self.next_height_messages.contains(&message) {
                return;
            }
            let held = self
                .next_height_messages
                .iter()
                .filter(|m| m.head().signer == signer)
                .count();
            if held >= NEXT_HEIGHT_MESSAGES_PER_SIGNER_MAX {
                reject(
                    out,
                    Some(signer),
                    format!(
                        "{what} from {signer}: already holding {NEXT_HEIGHT_MESSAGES_PER_SIGNER_MAX} next-height messages from this signer"
                    ),
                );
            } else {
                self.next_height_messages.push(message);
            }
        }
        self.note_ahead(signer, height, out);
    }

    fn note_ahead(&mut self, signer: PublicKey, height: Height, out: &mut Vec<Effect>) {
        let entry = self.ahead.entry(signer).or_insert(height);
        *entry = (*entry).max(height);
        if let Some((height, peer)) = self.ahead_evidence()
            && height > self.behind_reported
        {
            self.behind_reported = height;
            out.push(Effect::Behind { height, peer });
        }
    }

    /// The highest height f + 1 current validators signed messages for.
    fn ahead_evidence(&self) -> Option<(Height, PublicKey)> {
        let weak_quorum = self.tip.validators.weak_quorum();
        let mut ahead: Vec<(Height, PublicKey)> =
            self.ahead.iter().map(|(k, h)| (*h, *k)).collect();
        ahead.sort_unstable_by(|a, b| b.cmp(a));
        ahead.get(weak_quorum.checked_sub(1)?).copied()
    }

    /// On a round timeout: ask for block sync if a quorum committed a block
    /// we lack (or cannot execute), or if f + 1 validators are ahead.
    fn report_behind(&mut self, out: &mut Vec<Effect>) {
        let quorum = self.quorum();
        let mut missing: Option<PublicKey> = None;
        'rounds: for rs in self.rounds.values() {
            let mut tally: BTreeMap<Hash32, Vec<PublicKey>> = BTreeMap::new();
            for (signer, commit) in &rs.commits {
                if let Some(hash) = payload_block_hash(&commit.payload) {
                    tally.entry(hash).or_default().push(*signer);
                }
            }
            for (hash, signers) in tally {
                let usable = matches!(
                    self.checks.get(&hash),
                    Some(CheckStatus::Valid(_) | CheckStatus::Pending)
                );
                if signers.len() >= quorum && !(self.blocks.contains_key(&hash) && usable) {
                    missing = signers.first().copied();
                    break 'rounds;
                }
            }
        }
        if let Some(peer) = missing {
            out.push(Effect::Behind {
                height: self.height,
                peer,
            });
        }
        // Strong evidence (f + 1 ahead) is reported as soon as it exists; at
        // a timeout, when this height is stuck anyway, one validator ahead
        // is enough to try its blocks (a validator that decided alone is
        // otherwise never caught up with). Asking the lowest one ahead:
        // an honest validator there has exactly the blocks we miss.
        let evidence = self
            .ahead_evidence()
            .or_else(|| self.ahead.iter().map(|(k, h)| (*h, *k)).min());
        if let Some((height, peer)) = evidence {
            self.behind_reported = self.behind_reported.max(height);
            out.push(Effect::Behind { height, peer });
        }
    }

    // ---------------------------------------------------------------- sync

    fn on_synced_block(
        &mut self,
        block: FinalizedBlock,
        next_validators: ValidatorSet,
        out: &mut Vec<Effect>,
    ) {
        let header = &block.block.header;
        let what = format!(
            "synced block {} for height {}",
            header.hash(),
            header.height
        );
        if header.height != self.height {
            reject(
                out,
                None,
                format!("{what}: this node is deciding height {}", self.height),
            );
            return;
        }
        if let Err(reason) = self.check_header_extends_tip(header) {
            reject(out, None, format!("{what}: {reason}"));
            return;
        }
        if let Err(e) =
            block
                .certificate
                .verify(&self.config.chain_id, header, &self.tip.validators)
        {
            reject(out, None, format!("{what}: commit certificate: {e}"));
            return;
        }
        let next_hash = next_validators.hash();
        if next_hash != header.next_validator_set_hash {
            reject(
                out,
                None,
                format!(
                    "{what}: next validator set hashes to {next_hash}, but the header names {}",
                    header.next_validator_set_hash
                ),
            );
            return;
        }
        self.decide(block, next_validators, out);
    }

    // ------------------------------------------------------------- restart

    /// Takes back a safety record for the height being decided: round,
    /// prepared certificate and signatures, re-broadcasting what can be
    /// rebuilt (a round > 0 proposal cannot: its round changes are gone, and
    /// the round timer recovers).
    fn restore_safety(&mut self, state: SafetyState, out: &mut Vec<Effect>) {
        let height = self.height;
        self.round = state.round;
        if let Some(prepared) = state.prepared
            && prepared.block.header.height == height
            && prepared.round <= state.round
        {
            let hash = prepared.block.hash();
            self.blocks.insert(hash, prepared.block.clone());
            self.prepare_certs
                .insert((prepared.round, hash), prepared.prepares.clone());
            self.prepared = Some(prepared);
        }
        let me = self.public_key;
        for signed in state.signed {
            let round = signed.payload.round();
            if signed.signer != me || signed.payload.height() != height || round < self.round {
                continue;
            }
            if self.signed.contains(&signed) {
                continue;
            }
            self.signed.push(signed.clone());
            if !self.is_validator {
                continue;
            }
            match signed.payload {
                Payload::Proposal { block_hash, .. } => {
                    self.round_state(round).proposing = true;
                    let block = self.blocks.get(&block_hash).cloned();
                    if let (0, Some(block)) = (round, block) {
                        self.round_state(round).proposal = Some(AcceptedProposal {
                            proposer: me,
                            block_hash,
                        });
                        out.push(Effect::Broadcast(ConsensusMessage::Proposal {
                            proposal: signed,
                            block,
                            round_changes: Vec::new(),
                            prepares: Vec::new(),
                        }));
                    }
                }
                Payload::Prepare { .. } => {
                    self.round_state(round).prepares.insert(me, signed.clone());
                    out.push(Effect::Broadcast(ConsensusMessage::Prepare(signed)));
                }
                Payload::Commit { .. } => {
                    self.round_state(round).commits.insert(me, signed.clone());
                    out.push(Effect::Broadcast(ConsensusMessage::Commit(signed)));
                }
                Payload::RoundChange { prepared, .. } => {
                    let attachments = match prepared {
                        None => Some((None, Vec::new())),
                        Some((prepared_round, hash)) => {
                            match (
                                self.blocks.get(&hash),
                                self.prepare_certs.get(&(prepared_round, hash)),
                            ) {
                                (Some(block), Some(cert)) => {
                                    Some((Some(block.clone()), cert.clone()))
                                }
                                _ => None,
                            }
                        }
                    };
                    if let Some((prepared_block, prepares)) = attachments {
                        self.round_state(round)
                            .round_changes
                            .insert(me, signed.clone());
                        out.push(Effect::Broadcast(ConsensusMessage::RoundChange {
                            round_change: signed,
                            prepared_block,
                            prepares,
                        }));
                    }
                }
            }
        }
        if self.accepted_hash_any(self.round).is_some() {
            self.process_accepted_proposal(out);
        }
    }
}

// ------------------------------------------------------------------ codecs

impl Encode for PreparedRecord {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(CHAIN_ENCODING_VERSION);
        w.put_u32(self.round);
        self.block.encode(w);
        w.put_seq_bounded(&self.prepares, CHAIN_VALIDATORS_COUNT_MAX);
    }
}

impl Decode for PreparedRecord {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, SAFETY_VERSIONS)?;
        Ok(PreparedRecord {
            round: r.read_u32()?,
            block: Block::decode(r)?,
            prepares: r.read_seq_bounded(CHAIN_VALIDATORS_COUNT_MAX)?,
        })
    }
}

impl Encode for SafetyState {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(CHAIN_ENCODING_VERSION);
        w.put_u64(self.height);
        w.put_u32(self.round);
        self.prepared.encode(w);
        w.put_seq_bounded(&self.signed, SAFETY_SIGNED_COUNT_MAX);
    }
}

impl Decode for SafetyState {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, SAFETY_VERSIONS)?;
        Ok(SafetyState {
            height: r.read_u64()?,
            round: r.read_u32()?,
            prepared: Option::<PreparedRecord>::decode(r)?,
            signed: r.read_seq_bounded(SAFETY_SIGNED_COUNT_MAX)?,
        })
    }
}
