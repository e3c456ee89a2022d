//! Engine tests with a tiny in-test harness: N engines, a FIFO network with
//! a per-message filter, a builder answering `BuildProposal` and a checker
//! answering `CheckBlock`. Time moves only when the network is quiet, to
//! the earliest scheduled timeout.

use std::collections::VecDeque;

use metanode_core::encoding::{Decode, DecodeError, Encode};
use metanode_core::hash::Hash32;
use metanode_core::keys::{PublicKey, Signature, SigningKey};
use metanode_core::merkle;

use super::{Engine, EngineConfig, NEXT_HEIGHT_MESSAGES_PER_SIGNER_MAX, ROUNDS_TRACKED_MAX};
use crate::qbft::messages::{ConsensusMessage, Payload, SignedPayload};
use crate::qbft::{ChainTip, Effect, Input, PreparedRecord, SafetyState};
use crate::types::{
    Block, ChainId, ChainMode, CommitCertificate, FinalizedBlock, Header, Height, Round,
    ValidatorIndex, ValidatorSet, commit_seal_digest,
};

const GENESIS_TIME_MS: u64 = 1_000;

fn chain_id() -> ChainId {
    ChainId(Hash32([7; 32]))
}

fn genesis_hash() -> Hash32 {
    Hash32([0xAA; 32])
}

fn key(i: usize) -> SigningKey {
    SigningKey::from_seed(&[i as u8 + 1; 32])
}

fn validator_set(n: usize) -> ValidatorSet {
    ValidatorSet::new((0..n).map(|i| key(i).public_key()).collect()).unwrap()
}

fn genesis_tip(set: &ValidatorSet) -> ChainTip {
    ChainTip {
        height: 0,
        block_hash: genesis_hash(),
        timestamp_ms: GENESIS_TIME_MS,
        validators: set.clone(),
    }
}

/// A valid empty block; `salt` varies the state root so one proposer can
/// build two different blocks for one `(height, round)`.
fn make_block(
    parent_hash: Hash32,
    parent_timestamp_ms: u64,
    height: Height,
    round: Round,
    proposer: PublicKey,
    set: &ValidatorSet,
    salt: u8,
) -> Block {
    Block {
        header: Header {
            chain_id: chain_id(),
            height,
            round,
            prev_hash: parent_hash,
            timestamp_ms: parent_timestamp_ms + 1,
            proposer,
            tx_root: merkle::empty_root(),
            poh_root: merkle::empty_root(),
            receipts_root: merkle::empty_root(),
            state_root: Hash32([salt; 32]),
            da_root: merkle::empty_root(),
            xcmp_root: merkle::empty_root(),
            validator_set_hash: set.hash(),
            next_validator_set_hash: set.hash(),
            mode: ChainMode::Normal,
        },
        txs: Vec::new(),
    }
}

fn sign(i: usize, payload: Payload) -> SignedPayload {
    SignedPayload::sign(&chain_id(), payload, &key(i))
}

fn prepare(i: usize, height: Height, round: Round, block_hash: Hash32) -> SignedPayload {
    sign(
        i,
        Payload::Prepare {
            height,
            round,
            block_hash,
        },
    )
}

fn commit(i: usize, height: Height, round: Round, block_hash: Hash32) -> SignedPayload {
    let seal = key(i).sign(commit_seal_digest(&chain_id(), height, round, &block_hash).as_bytes());
    sign(
        i,
        Payload::Commit {
            height,
            round,
            block_hash,
            seal,
        },
    )
}

fn round_change(
    i: usize,
    height: Height,
    round: Round,
    prepared: Option<(Round, Hash32)>,
) -> SignedPayload {
    sign(
        i,
        Payload::RoundChange {
            height,
            round,
            prepared,
        },
    )
}

fn proposal_msg(
    i: usize,
    round: Round,
    block: &Block,
    round_changes: Vec<SignedPayload>,
    prepares: Vec<SignedPayload>,
) -> ConsensusMessage {
    ConsensusMessage::Proposal {
        proposal: sign(
            i,
            Payload::Proposal {
                height: block.header.height,
                round,
                block_hash: block.hash(),
            },
        ),
        block: block.clone(),
        round_changes,
        prepares,
    }
}

fn certificate(signers: &[usize], block: &Block, round: Round, n: usize) -> CommitCertificate {
    let h = block.header.height;
    let hash = block.hash();
    let seals: Vec<(ValidatorIndex, Signature)> = signers
        .iter()
        .map(|&i| {
            let digest = commit_seal_digest(&chain_id(), h, round, &hash);
            (i as ValidatorIndex, key(i).sign(digest.as_bytes()))
        })
        .collect();
    CommitCertificate::from_seals(h, round, hash, n, &seals)
}

fn rejections(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Rejected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn broadcasts(effects: &[Effect]) -> Vec<&ConsensusMessage> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Broadcast(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn decided(effects: &[Effect]) -> Vec<&FinalizedBlock> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Decided { block, .. } => Some(block),
            _ => None,
        })
        .collect()
}

/// Every broadcast of a signed payload comes after a `PersistSafety` that
/// already holds it (the crash-safety contract). `durable` is what was
/// persisted before these effects (a restart re-sends from it).
fn assert_persisted_before_broadcast(effects: &[Effect], me: PublicKey, durable: &[SignedPayload]) {
    let mut persisted: Vec<SignedPayload> = durable.to_vec();
    for effect in effects {
        match effect {
            Effect::PersistSafety(state) => persisted = state.signed.clone(),
            Effect::Broadcast(m) if m.head().signer == me => {
                assert!(
                    persisted.contains(m.head()),
                    "broadcast of {:?} before it was persisted",
                    m.head().payload
                );
            }
            Effect::Decided { .. } => persisted.clear(),
            _ => {}
        }
    }
}

type Filter = Box<dyn FnMut(usize, usize, &ConsensusMessage) -> bool>;

struct Node {
    engine: Engine,
    decided: Vec<FinalizedBlock>,
    safety: Option<SafetyState>,
    timeout_at_ms: Option<u64>,
    log: Vec<Effect>,
}

struct Net {
    set: ValidatorSet,
    nodes: Vec<Node>,
    queue: VecDeque<(usize, Input)>,
    now_ms: u64,
    /// `(from, to, message)` → deliver?
    filter: Filter,
    /// Answer `Behind` with blocks another node decided.
    auto_sync: bool,
    steps: usize,
}

impl Net {
    fn new(n: usize) -> Net {
        let set = validator_set(n);
        let mut net = Net {
            set: set.clone(),
            nodes: Vec::new(),
            queue: VecDeque::new(),
            now_ms: 0,
            filter: Box::new(|_, _, _| true),
            auto_sync: false,
            steps: 0,
        };
        for i in 0..n {
            let (engine, effects) = Engine::new(
                EngineConfig::new(chain_id()),
                key(i),
                genesis_tip(&set),
                None,
                0,
            );
            net.nodes.push(Node {
                engine,
                decided: Vec::new(),
                safety: None,
                timeout_at_ms: None,
                log: Vec::new(),
            });
            net.apply(i, effects);
        }
        net
    }

    fn apply(&mut self, i: usize, effects: Vec<Effect>) {
        let durable = self.nodes[i]
            .safety
            .as_ref()
            .map(|s| s.signed.clone())
            .unwrap_or_default();
        assert_persisted_before_broadcast(&effects, self.nodes[i].engine.public_key(), &durable);
        for effect in &effects {
            match effect {
                Effect::PersistSafety(state) => self.nodes[i].safety = Some(state.clone()),
                Effect::Broadcast(m) => {
                    for j in 0..self.nodes.len() {
                        if j != i && (self.filter)(i, j, m) {
                            self.queue.push_back((j, Input::Message(m.clone())));
                        }
                    }
                }
                Effect::BuildProposal {
                    height,
                    round,
                    parent_hash,
                    parent_timestamp_ms,
                } => {
                    let block = make_block(
                        *parent_hash,
                        *parent_timestamp_ms,
                        *height,
                        *round,
                        self.nodes[i].engine.public_key(),
                        &self.set,
                        0,
                    );
                    self.queue.push_back((
                        i,
                        Input::ProposalBuilt {
                            height: *height,
                            round: *round,
                            block,
                            next_validators: self.set.clone(),
                        },
                    ));
                }
                Effect::CheckBlock {
                    height,
                    round,
                    block,
                } => self.queue.push_back((
                    i,
                    Input::BlockChecked {
                        height: *height,
                        round: *round,
                        block_hash: block.hash(),
                        result: Ok(self.set.clone()),
                    },
                )),
                Effect::Decided { block, .. } => self.nodes[i].decided.push(block.clone()),
                Effect::ScheduleTimeout { at_ms, .. } => {
                    self.nodes[i].timeout_at_ms = Some(*at_ms);
                }
                Effect::Behind { .. } if self.auto_sync => {
                    let want = self.nodes[i].engine.height();
                    let found = self
                        .nodes
                        .iter()
                        .flat_map(|n| n.decided.iter())
                        .find(|b| b.block.header.height == want)
                        .cloned();
                    if let Some(block) = found {
                        self.queue.push_back((
                            i,
                            Input::SyncedBlock {
                                block,
                                next_validators: self.set.clone(),
                            },
                        ));
                    }
                }
                Effect::Behind { .. } | Effect::Rejected { .. } => {}
            }
        }
        self.nodes[i].log.extend(effects);
    }

    fn deliver(&mut self, i: usize, input: Input) {
        let mut out = Vec::new();
        self.nodes[i].engine.handle(input, &mut out);
        self.apply(i, out);
    }

    /// Delivers queued inputs until the queue is empty or `done` holds.
    fn drain(&mut self, done: &dyn Fn(&Net) -> bool) -> bool {
        while let Some((i, input)) = self.queue.pop_front() {
            self.steps += 1;
            assert!(self.steps < 200_000, "harness did not converge");
            self.deliver(i, input);
            if done(self) {
                return true;
            }
        }
        done(self)
    }

    /// Runs the network, advancing time to the next timeout whenever it is
    /// quiet, until `done` holds (or `max_timeouts` time jumps passed).
    fn run_until(&mut self, max_timeouts: usize, done: impl Fn(&Net) -> bool) -> bool {
        for _ in 0..=max_timeouts {
            if self.drain(&done) {
                return true;
            }
            let Some(next) = self.nodes.iter().filter_map(|n| n.timeout_at_ms).min() else {
                return false;
            };
            self.now_ms = self.now_ms.max(next);
            for i in 0..self.nodes.len() {
                self.queue.push_back((
                    i,
                    Input::Tick {
                        now_ms: self.now_ms,
                    },
                ));
            }
        }
        false
    }

    /// Moves the clock to the earliest scheduled timeout and ticks everyone.
    fn tick_to_next_timeout(&mut self) {
        let Some(next) = self.nodes.iter().filter_map(|n| n.timeout_at_ms).min() else {
            return;
        };
        self.now_ms = self.now_ms.max(next);
        for i in 0..self.nodes.len() {
            self.queue.push_back((
                i,
                Input::Tick {
                    now_ms: self.now_ms,
                },
            ));
        }
    }

    /// Crash and restart node `i` from its durable state: the blocks it
    /// decided and its last persisted safety record. Its pending driver
    /// answers are lost; messages in flight to it are not.
    fn restart(&mut self, i: usize) {
        let tip = match self.nodes[i].decided.last() {
            Some(fin) => ChainTip {
                height: fin.block.header.height,
                block_hash: fin.block.hash(),
                timestamp_ms: fin.block.header.timestamp_ms,
                validators: self.set.clone(),
            },
            None => genesis_tip(&self.set),
        };
        self.queue
            .retain(|(j, input)| *j != i || matches!(input, Input::Message(_)));
        let (engine, effects) = Engine::new(
            EngineConfig::new(chain_id()),
            key(i),
            tip,
            self.nodes[i].safety.clone(),
            self.now_ms,
        );
        self.nodes[i].engine = engine;
        self.apply(i, effects);
    }

    fn all_decided(&self, nodes: &[usize], height: Height) -> bool {
        nodes
            .iter()
            .all(|&i| self.nodes[i].decided.len() as u64 >= height)
    }

    fn rejections(&self, i: usize) -> Vec<String> {
        rejections(&self.nodes[i].log)
    }
}

fn check_chain(net: &Net, nodes: &[usize], heights: u64) {
    let reference = &net.nodes[nodes[0]].decided;
    let mut parent = genesis_hash();
    for h in 1..=heights {
        let fin = &reference[(h - 1) as usize];
        assert_eq!(fin.block.header.height, h);
        assert_eq!(fin.block.header.prev_hash, parent);
        fin.certificate
            .verify(&chain_id(), &fin.block.header, &net.set)
            .unwrap();
        parent = fin.block.hash();
        for &i in nodes {
            let other = &net.nodes[i].decided[(h - 1) as usize];
            assert_eq!(
                other.block, fin.block,
                "node {i} decided another block at {h}"
            );
            other
                .certificate
                .verify(&chain_id(), &other.block.header, &net.set)
                .unwrap();
        }
    }
}

// ------------------------------------------------------------------- tests

#[test]
fn round_timeout_doubles_and_caps() {
    let config = EngineConfig::new(chain_id());
    assert_eq!(config.round_timeout_ms(0), 1_000);
    assert_eq!(config.round_timeout_ms(1), 2_000);
    assert_eq!(config.round_timeout_ms(5), 32_000);
    assert_eq!(config.round_timeout_ms(6), 60_000);
    assert_eq!(config.round_timeout_ms(63), 60_000);
    assert_eq!(config.round_timeout_ms(64), 60_000);
    assert_eq!(config.round_timeout_ms(Round::MAX), 60_000);
}

#[test]
fn happy_path_decides_five_heights() {
    let mut net = Net::new(4);
    assert!(net.run_until(0, |n| n.all_decided(&[0, 1, 2, 3], 5)));
    check_chain(&net, &[0, 1, 2, 3], 5);
    for node in &net.nodes {
        // No round changes were needed, and nothing was rejected.
        assert!(node.decided.iter().all(|b| b.certificate.round == 0));
        assert_eq!(rejections(&node.log), Vec::<String>::new());
        assert!(node.engine.height() >= 6);
    }
    // Every height was proposed by its round-0 proposer.
    for fin in &net.nodes[0].decided {
        let h = fin.block.header.height;
        assert_eq!(fin.block.header.proposer, *net.set.proposer(h, 0));
    }
}

#[test]
fn silent_proposer_is_replaced_in_round_one() {
    let mut net = Net::new(4);
    let silent = net.set.index_of(net.set.proposer(1, 0)).unwrap() as usize;
    assert_eq!(silent, 1);
    net.filter = Box::new(move |from, _, _| from != silent);
    // The mute node still hears the others, so all four decide.
    assert!(net.run_until(3, |n| n.all_decided(&[0, 1, 2, 3], 1)));
    check_chain(&net, &[0, 1, 2, 3], 1);
    let fin = &net.nodes[0].decided[0];
    assert_eq!(fin.certificate.round, 1);
    assert_eq!(fin.block.header.round, 1);
    assert_eq!(fin.block.header.proposer, *net.set.proposer(1, 1));
    // Its round-0 block went nowhere: the decided block is another one.
    let muted = net.nodes[silent].log.iter().find_map(|e| match e {
        Effect::Broadcast(ConsensusMessage::Proposal { block, .. }) => Some(block.hash()),
        _ => None,
    });
    assert!(muted.is_some_and(|h| h != fin.block.hash()));
}

#[test]
fn prepared_block_is_reproposed_after_lost_commits() {
    let mut net = Net::new(4);
    // Height 1, round 0: everything but commits gets through, so every node
    // prepares block X and locks on it, but nobody can decide.
    net.filter =
        Box::new(|_, _, m| !matches!(m, ConsensusMessage::Commit(p) if p.payload.round() == 0));
    assert!(net.run_until(0, |n| {
        n.nodes
            .iter()
            .all(|node| node.safety.as_ref().is_some_and(|s| s.prepared.is_some()))
    }));
    let x = net.nodes[0]
        .safety
        .as_ref()
        .unwrap()
        .prepared
        .as_ref()
        .unwrap()
        .block
        .clone();
    assert_eq!(x.header.round, 0);
    for node in &net.nodes {
        let prepared = node.safety.as_ref().unwrap().prepared.as_ref().unwrap();
        assert_eq!(prepared.block, x);
        assert_eq!(prepared.round, 0);
        assert!(prepared.prepares.len() >= 3);
    }
    assert!(net.run_until(3, |n| n.all_decided(&[0, 1, 2, 3], 1)));
    check_chain(&net, &[0, 1, 2, 3], 1);
    let fin = &net.nodes[0].decided[0];
    assert_eq!(fin.block, x, "the locked block must be the one decided");
    assert_eq!(fin.certificate.round, 1);
    // The round-1 proposer re-proposed X with a justification instead of
    // building a new block.
    let leader = net.set.index_of(net.set.proposer(1, 1)).unwrap() as usize;
    let node = &net.nodes[leader];
    assert!(!node.log.iter().any(|e| matches!(
        e,
        Effect::BuildProposal {
            height: 1,
            round: 1,
            ..
        }
    )));
    let reproposal = broadcasts(&node.log)
        .into_iter()
        .find_map(|m| match m {
            ConsensusMessage::Proposal {
                proposal,
                block,
                round_changes,
                prepares,
            } if proposal.payload.round() == 1 => Some((block, round_changes, prepares)),
            _ => None,
        })
        .expect("round-1 proposal");
    assert_eq!(*reproposal.0, x);
    assert!(reproposal.1.len() >= 3);
    assert!(reproposal.2.len() >= 3);
}

/// An engine at height 1 round 1 whose validators all locked on `x` in
/// round 0, for justification tests. Returns (engine, x, prepares for x).
fn engine_at_round_one(i: usize) -> (Engine, Block, Vec<SignedPayload>) {
    let set = validator_set(4);
    let (mut engine, _) = Engine::new(
        EngineConfig::new(chain_id()),
        key(i),
        genesis_tip(&set),
        None,
        0,
    );
    let mut out = Vec::new();
    engine.handle(Input::Tick { now_ms: 1_000 }, &mut out);
    assert_eq!(engine.round(), 1);
    let x = make_block(
        genesis_hash(),
        GENESIS_TIME_MS,
        1,
        0,
        key(1).public_key(),
        &set,
        0,
    );
    let prepares = (0..3).map(|j| prepare(j, 1, 0, x.hash())).collect();
    (engine, x, prepares)
}

#[test]
fn forged_round_changes_are_rejected() {
    let (mut engine, x, prepares) = engine_at_round_one(0);
    let mut out = Vec::new();

    // Bad signature.
    let mut forged = round_change(1, 1, 1, None);
    forged.signature = Signature([9; 64]);
    engine.handle(
        Input::Message(ConsensusMessage::RoundChange {
            round_change: forged,
            prepared_block: None,
            prepares: Vec::new(),
        }),
        &mut out,
    );
    // Non-validator.
    let outsider = SignedPayload::sign(
        &chain_id(),
        Payload::RoundChange {
            height: 1,
            round: 1,
            prepared: None,
        },
        &key(9),
    );
    engine.handle(
        Input::Message(ConsensusMessage::RoundChange {
            round_change: outsider,
            prepared_block: None,
            prepares: Vec::new(),
        }),
        &mut out,
    );
    // Prepared certificate below quorum.
    engine.handle(
        Input::Message(ConsensusMessage::RoundChange {
            round_change: round_change(2, 1, 1, Some((0, x.hash()))),
            prepared_block: Some(x.clone()),
            prepares: prepares[..2].to_vec(),
        }),
        &mut out,
    );
    // Prepared certificate for another block.
    let y = make_block(
        genesis_hash(),
        GENESIS_TIME_MS,
        1,
        0,
        key(1).public_key(),
        &validator_set(4),
        1,
    );
    let y_prepares: Vec<SignedPayload> = (0..3).map(|j| prepare(j, 1, 0, y.hash())).collect();
    engine.handle(
        Input::Message(ConsensusMessage::RoundChange {
            round_change: round_change(3, 1, 1, Some((0, x.hash()))),
            prepared_block: Some(x.clone()),
            prepares: y_prepares,
        }),
        &mut out,
    );
    // Prepared "at" its own round.
    engine.handle(
        Input::Message(ConsensusMessage::RoundChange {
            round_change: round_change(3, 1, 1, Some((1, x.hash()))),
            prepared_block: Some(x.clone()),
            prepares: (0..3).map(|j| prepare(j, 1, 1, x.hash())).collect(),
        }),
        &mut out,
    );
    // A certificate with one forged prepare.
    let mut bad_prepares = prepares.clone();
    bad_prepares[2].signature = Signature([3; 64]);
    engine.handle(
        Input::Message(ConsensusMessage::RoundChange {
            round_change: round_change(2, 1, 1, Some((0, x.hash()))),
            prepared_block: Some(x.clone()),
            prepares: bad_prepares,
        }),
        &mut out,
    );
    let reasons = rejections(&out);
    assert_eq!(reasons.len(), 6, "{reasons:#?}");
    assert!(
        reasons[0].contains("signature does not verify"),
        "{}",
        reasons[0]
    );
    assert!(reasons[0].starts_with("round change for height 1 round 1 from "));
    assert!(
        reasons[1].contains("signer is not a validator"),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[2].contains("2 prepares, below the quorum of 3"),
        "{}",
        reasons[2]
    );
    assert!(
        reasons[3].contains("not a prepare for height 1 round 0 block"),
        "{}",
        reasons[3]
    );
    assert!(
        reasons[4].contains("prepared round 1 is not below"),
        "{}",
        reasons[4]
    );
    assert!(
        reasons[5].contains("prepare 2: signature of"),
        "{}",
        reasons[5]
    );
    // None of them counted: no proposal, no round skip, nothing signed.
    assert!(broadcasts(&out).is_empty());
    assert_eq!(engine.round(), 1);

    // A valid prepared round change is accepted silently.
    let mut ok = Vec::new();
    engine.handle(
        Input::Message(ConsensusMessage::RoundChange {
            round_change: round_change(2, 1, 1, Some((0, x.hash()))),
            prepared_block: Some(x.clone()),
            prepares,
        }),
        &mut ok,
    );
    assert!(rejections(&ok).is_empty(), "{:?}", rejections(&ok));
}

#[test]
fn unjustified_new_block_over_a_lock_is_rejected() {
    // Node 0 at round 1; the round-1 proposer (node 2) proposes a fresh
    // block Y although one of its justifying round changes is prepared on X.
    let (mut engine, x, prepares) = engine_at_round_one(0);
    let set = validator_set(4);
    let y = make_block(
        genesis_hash(),
        GENESIS_TIME_MS,
        1,
        1,
        key(2).public_key(),
        &set,
        5,
    );
    let rcs = vec![
        round_change(1, 1, 1, Some((0, x.hash()))),
        round_change(2, 1, 1, None),
        round_change(3, 1, 1, None),
    ];
    let mut out = Vec::new();
    engine.handle(
        Input::Message(proposal_msg(2, 1, &y, rcs.clone(), Vec::new())),
        &mut out,
    );
    let reasons = rejections(&out);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("locks block"), "{}", reasons[0]);
    assert!(!out.iter().any(|e| matches!(e, Effect::CheckBlock { .. })));

    // The same justification re-proposing X (with its prepares) is accepted
    // and checked.
    let mut out = Vec::new();
    engine.handle(
        Input::Message(proposal_msg(2, 1, &x, rcs, prepares)),
        &mut out,
    );
    assert!(rejections(&out).is_empty(), "{:?}", rejections(&out));
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::CheckBlock { height: 1, round: 1, block } if *block == x
    )));
}

#[test]
fn malformed_and_oversized_justifications_are_rejected() {
    let (mut engine, x, prepares) = engine_at_round_one(0);
    let set = validator_set(4);
    let fresh = make_block(
        genesis_hash(),
        GENESIS_TIME_MS,
        1,
        1,
        key(2).public_key(),
        &set,
        3,
    );
    let mut out = Vec::new();

    // 300 round changes: more than the set, refused before any signature check.
    let many: Vec<SignedPayload> = (0..300).map(|_| round_change(1, 1, 1, None)).collect();
    engine.handle(
        Input::Message(proposal_msg(2, 1, &fresh, many, Vec::new())),
        &mut out,
    );
    // Duplicate signers.
    let dup = vec![
        round_change(1, 1, 1, None),
        round_change(1, 1, 1, None),
        round_change(3, 1, 1, None),
    ];
    engine.handle(
        Input::Message(proposal_msg(2, 1, &fresh, dup, Vec::new())),
        &mut out,
    );
    // Round changes for another round.
    let wrong_round: Vec<SignedPayload> = (1..4).map(|j| round_change(j, 1, 2, None)).collect();
    engine.handle(
        Input::Message(proposal_msg(2, 1, &fresh, wrong_round, Vec::new())),
        &mut out,
    );
    // A prepare payload where a round change belongs.
    let mixed = vec![
        round_change(1, 1, 1, None),
        prepare(2, 1, 0, x.hash()),
        round_change(3, 1, 1, None),
    ];
    engine.handle(
        Input::Message(proposal_msg(2, 1, &fresh, mixed, Vec::new())),
        &mut out,
    );
    // Round 0 proposal with a justification attached (to a node still in
    // round 0; at round 1 it would merely be stale).
    let x0 = make_block(
        genesis_hash(),
        GENESIS_TIME_MS,
        1,
        0,
        key(1).public_key(),
        &set,
        0,
    );
    let (mut at_round_zero, _) = Engine::new(
        EngineConfig::new(chain_id()),
        key(0),
        genesis_tip(&set),
        None,
        0,
    );
    at_round_zero.handle(
        Input::Message(proposal_msg(
            1,
            0,
            &x0,
            vec![round_change(1, 1, 1, None)],
            Vec::new(),
        )),
        &mut out,
    );
    // Prepare message carrying a commit payload.
    engine.handle(
        Input::Message(ConsensusMessage::Prepare(commit(1, 1, 1, x.hash()))),
        &mut out,
    );
    // Unprepared round change with stray prepares attached.
    engine.handle(
        Input::Message(ConsensusMessage::RoundChange {
            round_change: round_change(1, 1, 2, None),
            prepared_block: None,
            prepares: prepares.clone(),
        }),
        &mut out,
    );
    // A round far beyond the tracked window, and the largest round there is.
    engine.handle(
        Input::Message(ConsensusMessage::Prepare(prepare(
            1,
            1,
            Round::MAX,
            x.hash(),
        ))),
        &mut out,
    );
    engine.handle(
        Input::Message(ConsensusMessage::RoundChange {
            round_change: round_change(1, 1, 1 + ROUNDS_TRACKED_MAX + 1, None),
            prepared_block: None,
            prepares: Vec::new(),
        }),
        &mut out,
    );
    // Proposal signed by someone who does not lead the round.
    engine.handle(
        Input::Message(proposal_msg(3, 1, &fresh, Vec::new(), Vec::new())),
        &mut out,
    );
    // Payload names another block than the one attached.
    let mut lying = proposal_msg(2, 1, &fresh, Vec::new(), Vec::new());
    if let ConsensusMessage::Proposal { block, .. } = &mut lying {
        block.header.timestamp_ms += 1;
    }
    engine.handle(Input::Message(lying), &mut out);

    let reasons = rejections(&out);
    let expected = [
        "more than the 4 validators",
        "round change 1 repeats signer",
        "not a round change for height 1 round 1",
        "round change 1 is a prepare for height 1 round 0",
        "round 0 proposal carries a justification",
        "prepare message from",
        "round change is not prepared but carries 3 prepares",
        "rounds ahead of our round 1",
        "rounds ahead of our round 1",
        "signer is not the proposer of height 1 round 1",
        "but the attached block is",
    ];
    assert_eq!(reasons.len(), expected.len(), "{reasons:#?}");
    for (reason, want) in reasons.iter().zip(expected) {
        assert!(reason.contains(want), "{reason:?} should contain {want:?}");
    }
    assert!(broadcasts(&out).is_empty());
    assert_eq!(engine.round(), 1);
}

#[test]
fn equivocating_proposer_never_splits_decisions() {
    // Node 1 leads height 1 round 0 and is Byzantine: block X goes to nodes
    // 0 and 2, block Y to node 3, and it prepares and commits both.
    let mut net = Net::new(4);
    let byz = 1;
    net.filter = Box::new(move |from, _, _| from != byz);
    net.auto_sync = true;
    net.queue.retain(|(i, _)| *i != byz);
    let set = net.set.clone();
    let x = make_block(
        genesis_hash(),
        GENESIS_TIME_MS,
        1,
        0,
        key(byz).public_key(),
        &set,
        1,
    );
    let y = make_block(
        genesis_hash(),
        GENESIS_TIME_MS,
        1,
        0,
        key(byz).public_key(),
        &set,
        2,
    );
    assert_ne!(x.hash(), y.hash());
    for (to, block) in [(0, &x), (2, &x), (3, &y)] {
        let h = block.hash();
        for message in [
            proposal_msg(byz, 0, block, Vec::new(), Vec::new()),
            ConsensusMessage::Prepare(prepare(byz, 1, 0, h)),
            ConsensusMessage::Commit(commit(byz, 1, 0, h)),
        ] {
            net.queue.push_back((to, Input::Message(message)));
        }
    }
    // Node 3 later hears of X too: the second proposal is refused.
    net.queue.push_back((
        3,
        Input::Message(proposal_msg(byz, 0, &x, Vec::new(), Vec::new())),
    ));
    let honest = [0, 2, 3];
    assert!(net.run_until(8, |n| n.all_decided(&honest, 2)));
    check_chain(&net, &honest, 2);
    let first = &net.nodes[0].decided[0].block;
    assert!(
        *first == x || *first == y,
        "decided block is one of the two proposals"
    );
    assert!(
        net.rejections(3)
            .iter()
            .any(|r| r.contains("proposer equivocation")),
        "{:?}",
        net.rejections(3)
    );
}

#[test]
fn restart_never_double_signs() {
    let set = validator_set(4);
    let me = 0;
    let (mut engine, effects) = Engine::new(
        EngineConfig::new(chain_id()),
        key(me),
        genesis_tip(&set),
        None,
        0,
    );
    assert!(matches!(
        effects.as_slice(),
        [Effect::ScheduleTimeout {
            height: 1,
            round: 0,
            at_ms: 1_000
        }]
    ));
    let x = make_block(
        genesis_hash(),
        GENESIS_TIME_MS,
        1,
        0,
        key(1).public_key(),
        &set,
        1,
    );
    let y = make_block(
        genesis_hash(),
        GENESIS_TIME_MS,
        1,
        0,
        key(1).public_key(),
        &set,
        2,
    );
    let mut out = Vec::new();
    engine.handle(
        Input::Message(proposal_msg(1, 0, &x, Vec::new(), Vec::new())),
        &mut out,
    );
    engine.handle(
        Input::BlockChecked {
            height: 1,
            round: 0,
            block_hash: x.hash(),
            result: Ok(set.clone()),
        },
        &mut out,
    );
    assert_persisted_before_broadcast(&out, key(me).public_key(), &[]);
    let safety = out
        .iter()
        .rev()
        .find_map(|e| match e {
            Effect::PersistSafety(s) => Some(s.clone()),
            _ => None,
        })
        .expect("prepare was persisted");
    let own_prepare = prepare(me, 1, 0, x.hash());
    assert_eq!(safety.signed, vec![own_prepare.clone()]);
    assert_eq!((safety.height, safety.round), (1, 0));

    // Crash; restart from the durable record.
    let (mut restarted, effects) = Engine::new(
        EngineConfig::new(chain_id()),
        key(me),
        genesis_tip(&set),
        Some(safety.clone()),
        500,
    );
    assert_eq!(restarted.round(), 0);
    // It re-sends the prepare it had signed.
    assert_eq!(
        broadcasts(&effects),
        vec![&ConsensusMessage::Prepare(own_prepare.clone())]
    );
    // The equivocating proposer now shows it Y for the same (h, r).
    let mut out = Vec::new();
    restarted.handle(
        Input::Message(proposal_msg(1, 0, &y, Vec::new(), Vec::new())),
        &mut out,
    );
    restarted.handle(
        Input::BlockChecked {
            height: 1,
            round: 0,
            block_hash: y.hash(),
            result: Ok(set.clone()),
        },
        &mut out,
    );
    let signed_y = broadcasts(&out).into_iter().any(|m| {
        m.head().signer == key(me).public_key() && m.head().payload != own_prepare.payload
    });
    assert!(!signed_y, "restarted engine signed something new: {out:#?}");
    let reasons = rejections(&out);
    assert!(
        reasons.iter().any(|r| r
            .starts_with("refusing to sign prepare for height 1 round 0 block")
            && r.contains("conflicts with the prepare for height 1 round 0 block")),
        "{reasons:?}"
    );
    // It still commits X once a quorum prepares X.
    let mut out = Vec::new();
    restarted.handle(
        Input::Message(proposal_msg(1, 0, &x, Vec::new(), Vec::new())),
        &mut out,
    );
    assert!(
        rejections(&out)
            .iter()
            .any(|r| r.contains("already accepted"))
    );

    // A stale record (older height) is ignored; a record at a later round
    // blocks signing in earlier rounds.
    let mut later = safety.clone();
    later.round = 3;
    later.signed = vec![round_change(me, 1, 3, None)];
    let (engine3, effects) = Engine::new(
        EngineConfig::new(chain_id()),
        key(me),
        genesis_tip(&set),
        Some(later),
        0,
    );
    assert_eq!(engine3.round(), 3);
    assert!(matches!(
        broadcasts(&effects).as_slice(),
        [ConsensusMessage::RoundChange { .. }]
    ));
    let mut stale = safety;
    stale.height = 0;
    let (engine0, effects) = Engine::new(
        EngineConfig::new(chain_id()),
        key(me),
        genesis_tip(&set),
        Some(stale),
        0,
    );
    assert_eq!(engine0.round(), 0);
    assert!(broadcasts(&effects).is_empty());
}

#[test]
fn restart_keeps_the_lock_in_round_changes() {
    // All four lock on X (commits lost); node 0 restarts from its record and
    // its next round change still carries X with the prepare certificate.
    let mut net = Net::new(4);
    net.filter = Box::new(|_, _, m| !matches!(m, ConsensusMessage::Commit(_)));
    assert!(net.run_until(0, |n| {
        n.nodes[0]
            .safety
            .as_ref()
            .is_some_and(|s| s.prepared.is_some())
    }));
    let safety = net.nodes[0].safety.clone().unwrap();
    let x = safety.prepared.as_ref().unwrap().block.clone();
    let (mut engine, _) = Engine::new(
        EngineConfig::new(chain_id()),
        key(0),
        genesis_tip(&net.set),
        Some(safety),
        0,
    );
    let mut out = Vec::new();
    engine.handle(Input::Tick { now_ms: 1_000 }, &mut out);
    let rc = broadcasts(&out)
        .into_iter()
        .find_map(|m| match m {
            ConsensusMessage::RoundChange {
                round_change,
                prepared_block,
                prepares,
            } => Some((round_change.clone(), prepared_block.clone(), prepares.len())),
            _ => None,
        })
        .expect("round change after the timeout");
    assert_eq!(
        rc.0.payload,
        Payload::RoundChange {
            height: 1,
            round: 1,
            prepared: Some((0, x.hash()))
        }
    );
    assert_eq!(rc.1, Some(x));
    assert!(rc.2 >= 3);
}

#[test]
fn synced_block_with_bad_certificate_is_rejected_and_good_one_accepted() {
    let set = validator_set(4);
    let (mut engine, _) = Engine::new(
        EngineConfig::new(chain_id()),
        key(0),
        genesis_tip(&set),
        None,
        0,
    );
    let block = make_block(
        genesis_hash(),
        GENESIS_TIME_MS,
        1,
        0,
        key(1).public_key(),
        &set,
        1,
    );
    let mut out = Vec::new();
    // Two seals: below quorum.
    engine.handle(
        Input::SyncedBlock {
            block: FinalizedBlock {
                block: block.clone(),
                certificate: certificate(&[1, 2], &block, 0, 4),
            },
            next_validators: set.clone(),
        },
        &mut out,
    );
    // Seals for round 0 claimed as round 1.
    let mut wrong_round = certificate(&[1, 2, 3], &block, 0, 4);
    wrong_round.round = 1;
    engine.handle(
        Input::SyncedBlock {
            block: FinalizedBlock {
                block: block.clone(),
                certificate: wrong_round,
            },
            next_validators: set.clone(),
        },
        &mut out,
    );
    // Good certificate, but a next set that the header does not name.
    engine.handle(
        Input::SyncedBlock {
            block: FinalizedBlock {
                block: block.clone(),
                certificate: certificate(&[1, 2, 3], &block, 0, 4),
            },
            next_validators: validator_set(3),
        },
        &mut out,
    );
    // Not built on our tip.
    let orphan = make_block(
        Hash32([5; 32]),
        GENESIS_TIME_MS,
        1,
        0,
        key(1).public_key(),
        &set,
        1,
    );
    engine.handle(
        Input::SyncedBlock {
            block: FinalizedBlock {
                block: orphan.clone(),
                certificate: certificate(&[0, 1, 2], &orphan, 0, 4),
            },
            next_validators: set.clone(),
        },
        &mut out,
    );
    let reasons = rejections(&out);
    assert_eq!(reasons.len(), 4, "{reasons:#?}");
    assert!(
        reasons[0].contains("2 signers is below the quorum of 3"),
        "{}",
        reasons[0]
    );
    assert!(reasons[1].contains("does not verify"), "{}", reasons[1]);
    assert!(
        reasons[2].contains("next validator set hashes to"),
        "{}",
        reasons[2]
    );
    assert!(reasons[3].contains("prev_hash"), "{}", reasons[3]);
    assert!(decided(&out).is_empty());
    assert_eq!(engine.height(), 1);

    let good = FinalizedBlock {
        block: block.clone(),
        certificate: certificate(&[0, 2, 3], &block, 0, 4),
    };
    let mut out = Vec::new();
    engine.handle(
        Input::SyncedBlock {
            block: good.clone(),
            next_validators: set.clone(),
        },
        &mut out,
    );
    assert_eq!(decided(&out), vec![&good]);
    assert_eq!(engine.height(), 2);
    assert_eq!(engine.round(), 0);
    // Height 2 starts: the new safety record and the round-0 timer.
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::PersistSafety(SafetyState { height: 2, round: 0, prepared: None, signed }) if signed.is_empty()
    )));
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::ScheduleTimeout {
            height: 2,
            round: 0,
            ..
        }
    )));
    // The same block again is now for an old height.
    let mut out = Vec::new();
    engine.handle(
        Input::SyncedBlock {
            block: good,
            next_validators: set,
        },
        &mut out,
    );
    assert!(rejections(&out)[0].contains("this node is deciding height 2"));
}

#[test]
fn next_height_messages_are_buffered_and_replayed() {
    // Node 3 hears nothing while 0..=2 decide heights 1 and 2.
    let mut net = Net::new(4);
    let held = std::rc::Rc::new(std::cell::RefCell::new(Vec::<ConsensusMessage>::new()));
    let sink = held.clone();
    net.filter = Box::new(move |_, to, m| {
        if to == 3 {
            sink.borrow_mut().push(m.clone());
            false
        } else {
            true
        }
    });
    assert!(net.run_until(0, |n| n.all_decided(&[0, 1, 2], 2)));
    let held: Vec<ConsensusMessage> = held.borrow().clone();
    let at = |h: Height| -> Vec<ConsensusMessage> {
        held.iter()
            .filter(|m| m.head().payload.height() == h)
            .cloned()
            .collect()
    };
    let node = &mut net.nodes[3].engine;
    let mut out = Vec::new();
    // Height 2 first: buffered (and enough signers to flag that we lag).
    for m in at(2) {
        node.handle(Input::Message(m), &mut out);
    }
    assert_eq!(node.height(), 1);
    assert!(broadcasts(&out).is_empty());
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::Behind { height: 2, .. }))
    );
    // Then height 1: the node decides it, and the buffered height-2
    // messages alone carry it through height 2 as well.
    for m in at(1) {
        node.handle(Input::Message(m), &mut out);
        // Answer block checks as the driver would.
        while let Some((height, round, hash)) = out.iter().find_map(|e| match e {
            Effect::CheckBlock {
                height,
                round,
                block,
            } => Some((*height, *round, block.hash())),
            _ => None,
        }) {
            out.retain(|e| !matches!(e, Effect::CheckBlock { .. }));
            node.handle(
                Input::BlockChecked {
                    height,
                    round,
                    block_hash: hash,
                    result: Ok(validator_set(4)),
                },
                &mut out,
            );
        }
    }
    let blocks: Vec<Block> = decided(&out).into_iter().map(|f| f.block.clone()).collect();
    let expected: Vec<Block> = net.nodes[0].decided[..2]
        .iter()
        .map(|f| f.block.clone())
        .collect();
    assert_eq!(blocks, expected);
    assert_eq!(net.nodes[3].engine.height(), 3);
    // Node 3 prepared and committed height 2 from the replayed messages.
    assert!(broadcasts(&out).iter().any(|m| matches!(
        m,
        ConsensusMessage::Commit(p) if p.payload.height() == 2
    )));
}

#[test]
fn next_height_buffer_is_bounded_per_signer() {
    let set = validator_set(4);
    let (mut engine, _) = Engine::new(
        EngineConfig::new(chain_id()),
        key(0),
        genesis_tip(&set),
        None,
        0,
    );
    let mut out = Vec::new();
    for round in 0..(NEXT_HEIGHT_MESSAGES_PER_SIGNER_MAX as Round + 2) {
        engine.handle(
            Input::Message(ConsensusMessage::Prepare(prepare(
                1,
                2,
                round,
                Hash32([1; 32]),
            ))),
            &mut out,
        );
    }
    let reasons = rejections(&out);
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("already holding 8 next-height messages"));
    assert_eq!(
        engine.next_height_messages.len(),
        NEXT_HEIGHT_MESSAGES_PER_SIGNER_MAX
    );
    // Far-future messages are only counted, never buffered.
    let mut out = Vec::new();
    engine.handle(
        Input::Message(ConsensusMessage::Prepare(prepare(2, 9, 0, Hash32([1; 32])))),
        &mut out,
    );
    assert_eq!(
        engine.next_height_messages.len(),
        NEXT_HEIGHT_MESSAGES_PER_SIGNER_MAX
    );
    // Signer 1 (at height 2) and signer 2 (at 9) make f + 1 = 2 ahead: the
    // height both are at or beyond is 2.
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        matches!(out[0], Effect::Behind { height: 2, .. }),
        "{out:?}"
    );
    let mut out = Vec::new();
    engine.handle(
        Input::Message(ConsensusMessage::Prepare(prepare(3, 9, 0, Hash32([1; 32])))),
        &mut out,
    );
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        matches!(out[0], Effect::Behind { height: 9, .. }),
        "{out:?}"
    );
    // Already reported: a repeat says nothing.
    let mut out = Vec::new();
    engine.handle(
        Input::Message(ConsensusMessage::Prepare(prepare(3, 9, 1, Hash32([1; 32])))),
        &mut out,
    );
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn old_height_replays_are_ignored() {
    let mut net = Net::new(4);
    assert!(net.run_until(0, |n| n.all_decided(&[0, 1, 2, 3], 2)));
    let h1: Vec<ConsensusMessage> = net.nodes[1]
        .log
        .iter()
        .filter_map(|e| match e {
            Effect::Broadcast(m) if m.head().payload.height() == 1 => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert!(h1.len() >= 2);
    let engine = &mut net.nodes[0].engine;
    let (height, round) = (engine.height(), engine.round());
    for m in h1 {
        let mut out = Vec::new();
        engine.handle(Input::Message(m), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
    assert_eq!((engine.height(), engine.round()), (height, round));
}

#[test]
fn round_change_quorum_skips_rounds() {
    // f + 1 = 2 validators at round 3 pull node 0 from round 0 to round 3.
    let set = validator_set(4);
    let (mut engine, _) = Engine::new(
        EngineConfig::new(chain_id()),
        key(0),
        genesis_tip(&set),
        None,
        0,
    );
    let mut out = Vec::new();
    for j in [1, 2] {
        engine.handle(
            Input::Message(ConsensusMessage::RoundChange {
                round_change: round_change(j, 1, 3, None),
                prepared_block: None,
                prepares: Vec::new(),
            }),
            &mut out,
        );
        assert_eq!(engine.round(), if j == 1 { 0 } else { 3 });
    }
    assert_eq!(
        broadcasts(&out),
        vec![&ConsensusMessage::RoundChange {
            round_change: round_change(0, 1, 3, None),
            prepared_block: None,
            prepares: Vec::new(),
        }]
    );
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::ScheduleTimeout {
            height: 1,
            round: 3,
            at_ms: 8_000
        }
    )));
    // Node 0 leads height 1 round 3 ((1 + 3) mod 4 = 0) and now holds three
    // round changes, a quorum: it asks for a new block.
    assert_eq!(*set.proposer(1, 3), key(0).public_key());
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::BuildProposal {
            height: 1,
            round: 3,
            ..
        }
    )));
}

#[test]
fn observer_follows_commits_and_never_signs() {
    // Four validators plus an observer (key 4) that receives everything.
    let mut net = Net::new(4);
    let (observer, effects) = Engine::new(
        EngineConfig::new(chain_id()),
        key(4),
        genesis_tip(&net.set),
        None,
        0,
    );
    assert!(!observer.is_validator());
    net.nodes.push(Node {
        engine: observer,
        decided: Vec::new(),
        safety: None,
        timeout_at_ms: None,
        log: Vec::new(),
    });
    net.apply(4, effects);
    assert!(net.run_until(0, |n| n.all_decided(&[0, 1, 2, 3, 4], 3)));
    check_chain(&net, &[0, 1, 2, 3, 4], 3);
    let log = &net.nodes[4].log;
    assert!(broadcasts(log).is_empty());
    assert!(!log.iter().any(|e| matches!(e, Effect::PersistSafety(_))));
}

#[test]
fn commit_quorum_without_block_asks_for_sync() {
    let set = validator_set(4);
    let (mut engine, _) = Engine::new(
        EngineConfig::new(chain_id()),
        key(0),
        genesis_tip(&set),
        None,
        0,
    );
    let x = make_block(
        genesis_hash(),
        GENESIS_TIME_MS,
        1,
        0,
        key(1).public_key(),
        &set,
        1,
    );
    let mut out = Vec::new();
    for j in 1..4 {
        engine.handle(
            Input::Message(ConsensusMessage::Commit(commit(j, 1, 0, x.hash()))),
            &mut out,
        );
    }
    assert!(out.is_empty(), "{out:?}");
    // A forged seal is refused outright.
    let mut bad = commit(2, 1, 1, x.hash());
    if let Payload::Commit { seal, .. } = &mut bad.payload {
        *seal = Signature([1; 64]);
    }
    let bad = sign(2, bad.payload);
    engine.handle(Input::Message(ConsensusMessage::Commit(bad)), &mut out);
    assert!(rejections(&out)[0].contains("commit seal does not verify"));
    let mut out = Vec::new();
    engine.handle(Input::Tick { now_ms: 1_000 }, &mut out);
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::Behind { height: 1, .. })),
        "{out:?}"
    );
    // The block arrives late (the proposal for round 0 is stale by now, but
    // a round change carrying it prepared is not): the node decides.
    let prepares = (1..4).map(|j| prepare(j, 1, 0, x.hash())).collect();
    let mut out = Vec::new();
    engine.handle(
        Input::Message(ConsensusMessage::RoundChange {
            round_change: round_change(1, 1, 1, Some((0, x.hash()))),
            prepared_block: Some(x.clone()),
            prepares,
        }),
        &mut out,
    );
    let (height, round, block) = out
        .iter()
        .find_map(|e| match e {
            Effect::CheckBlock {
                height,
                round,
                block,
            } => Some((*height, *round, block.clone())),
            _ => None,
        })
        .expect("check of the committed block");
    assert_eq!((height, round, &block), (1, 0, &x));
    let mut out = Vec::new();
    engine.handle(
        Input::BlockChecked {
            height,
            round,
            block_hash: x.hash(),
            result: Ok(set.clone()),
        },
        &mut out,
    );
    let fins = decided(&out);
    assert_eq!(fins.len(), 1);
    assert_eq!(fins[0].block, x);
    assert_eq!(fins[0].certificate.round, 0);
    assert_eq!(engine.height(), 2);
}

#[test]
fn invalid_blocks_are_not_prepared() {
    let set = validator_set(4);
    let (mut engine, _) = Engine::new(
        EngineConfig::new(chain_id()),
        key(0),
        genesis_tip(&set),
        None,
        0,
    );
    let x = make_block(
        genesis_hash(),
        GENESIS_TIME_MS,
        1,
        0,
        key(1).public_key(),
        &set,
        1,
    );
    let mut out = Vec::new();
    engine.handle(
        Input::Message(proposal_msg(1, 0, &x, Vec::new(), Vec::new())),
        &mut out,
    );
    engine.handle(
        Input::BlockChecked {
            height: 1,
            round: 0,
            block_hash: x.hash(),
            result: Err("state root mismatch".into()),
        },
        &mut out,
    );
    assert!(broadcasts(&out).is_empty());
    let reasons = rejections(&out);
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].contains("failed the check: state root mismatch"),
        "{}",
        reasons[0]
    );
    // A driver answer whose next set does not match the header is refused too.
    let (mut engine, _) = Engine::new(
        EngineConfig::new(chain_id()),
        key(0),
        genesis_tip(&set),
        None,
        0,
    );
    let mut out = Vec::new();
    engine.handle(
        Input::Message(proposal_msg(1, 0, &x, Vec::new(), Vec::new())),
        &mut out,
    );
    engine.handle(
        Input::BlockChecked {
            height: 1,
            round: 0,
            block_hash: x.hash(),
            result: Ok(validator_set(3)),
        },
        &mut out,
    );
    assert!(broadcasts(&out).is_empty());
    assert!(rejections(&out)[0].contains("next validator set hashing to"));
}

#[test]
fn proposer_refuses_a_bad_built_block_and_ignores_stale_ones() {
    let set = validator_set(4);
    // Node 1 leads height 1 round 0.
    let (mut engine, effects) = Engine::new(
        EngineConfig::new(chain_id()),
        key(1),
        genesis_tip(&set),
        None,
        0,
    );
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::BuildProposal {
            height: 1,
            round: 0,
            parent_timestamp_ms: GENESIS_TIME_MS,
            ..
        }
    )));
    let mut out = Vec::new();
    // Stale: another round.
    let block = make_block(
        genesis_hash(),
        GENESIS_TIME_MS,
        1,
        2,
        key(1).public_key(),
        &set,
        0,
    );
    engine.handle(
        Input::ProposalBuilt {
            height: 1,
            round: 2,
            block,
            next_validators: set.clone(),
        },
        &mut out,
    );
    assert!(out.is_empty());
    // Wrong parent.
    let block = make_block(
        Hash32([3; 32]),
        GENESIS_TIME_MS,
        1,
        0,
        key(1).public_key(),
        &set,
        0,
    );
    engine.handle(
        Input::ProposalBuilt {
            height: 1,
            round: 0,
            block,
            next_validators: set.clone(),
        },
        &mut out,
    );
    assert!(broadcasts(&out).is_empty());
    assert!(rejections(&out)[0].contains("built proposal for height 1 round 0 is unusable"));
}

#[test]
fn safety_state_round_trips_canonically() {
    let set = validator_set(4);
    let x = make_block(
        genesis_hash(),
        GENESIS_TIME_MS,
        1,
        0,
        key(1).public_key(),
        &set,
        1,
    );
    let states = [
        SafetyState {
            height: 1,
            round: 0,
            prepared: None,
            signed: Vec::new(),
        },
        SafetyState {
            height: 7,
            round: 2,
            prepared: Some(PreparedRecord {
                round: 1,
                block: x.clone(),
                prepares: (0..3).map(|j| prepare(j, 7, 1, x.hash())).collect(),
            }),
            signed: vec![
                round_change(0, 7, 2, Some((1, x.hash()))),
                prepare(0, 7, 2, x.hash()),
                commit(0, 7, 2, x.hash()),
                sign(
                    0,
                    Payload::Proposal {
                        height: 7,
                        round: 2,
                        block_hash: x.hash(),
                    },
                ),
            ],
        },
    ];
    for state in states {
        let bytes = state.to_canonical_bytes().unwrap();
        let back = SafetyState::from_canonical_bytes(&bytes).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.to_canonical_bytes().unwrap(), bytes);
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(
            SafetyState::from_canonical_bytes(&extra),
            Err(DecodeError::TrailingBytes { count: 1, .. })
        ));
        let mut bad_version = bytes.clone();
        bad_version[0] = 9;
        assert!(matches!(
            SafetyState::from_canonical_bytes(&bad_version),
            Err(DecodeError::UnknownVersion { found: 9, .. })
        ));
        assert!(SafetyState::from_canonical_bytes(&bytes[..bytes.len() - 1]).is_err());
        if let Some(prepared) = &state.prepared {
            let pb = prepared.to_canonical_bytes().unwrap();
            assert_eq!(
                PreparedRecord::from_canonical_bytes(&pb).unwrap(),
                *prepared
            );
        }
    }
    // An oversized `signed` count is refused before anything is allocated.
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        SafetyState::from_canonical_bytes(&bytes),
        Err(DecodeError::CountExceedsMax {
            count: u32::MAX,
            max: 1024,
            ..
        })
    ));
}

#[test]
fn debug_output_never_shows_the_secret_key() {
    let set = validator_set(4);
    let (engine, _) = Engine::new(
        EngineConfig::new(chain_id()),
        key(0),
        genesis_tip(&set),
        None,
        0,
    );
    let text = format!("{engine:?}");
    assert!(text.contains(&key(0).public_key().to_string()));
    assert!(!text.contains(&hex::encode([1u8; 32])), "{text}");
    assert!(text.contains("height: 1"));
}

/// Every pair of nodes decided the same block at every height both reached,
/// with valid certificates, and no node ever broadcast two different
/// payloads of one kind for one `(height, round)`, across restarts.
fn assert_safe(net: &Net, context: &str) {
    let top = net.nodes.iter().map(|n| n.decided.len()).max().unwrap_or(0);
    for h in 1..=top {
        let mut seen: Option<Hash32> = None;
        for node in &net.nodes {
            if let Some(fin) = node.decided.get(h - 1) {
                assert_eq!(fin.block.header.height, h as u64, "{context}");
                fin.certificate
                    .verify(&chain_id(), &fin.block.header, &net.set)
                    .unwrap();
                let hash = fin.block.hash();
                assert!(
                    seen.is_none_or(|s| s == hash),
                    "{context}: fork at height {h}"
                );
                seen = Some(hash);
            }
        }
    }
    for (i, node) in net.nodes.iter().enumerate() {
        let mut signed: std::collections::BTreeMap<(u8, Height, Round), &Payload> =
            std::collections::BTreeMap::new();
        for m in broadcasts(&node.log) {
            let p = &m.head().payload;
            let kind = match p {
                Payload::Proposal { .. } => 0,
                Payload::Prepare { .. } => 1,
                Payload::Commit { .. } => 2,
                Payload::RoundChange { .. } => 3,
            };
            if let Some(prev) = signed.insert((kind, p.height(), p.round()), p) {
                assert_eq!(prev, p, "{context}: node {i} signed two different payloads");
            }
        }
    }
}

#[test]
fn seeded_faults_stay_safe_and_live() {
    // Random loss for a while, in some seeds a crashed node, in others
    // crash-restarts from the persisted safety record; then the network
    // heals and every live node must reach the same chain.
    use rand::{Rng, SeedableRng};
    /// Deliveries subject to random loss before the network heals.
    const DROP_BUDGET: u32 = 300;
    for seed in 0..30u64 {
        let mut net = Net::new(4);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let loss = 0.1 + (seed % 4) as f64 * 0.1;
        let drops: Vec<bool> = (0..DROP_BUDGET).map(|_| rng.random_bool(loss)).collect();
        let dead = (seed % 3 == 0).then_some((seed / 3 % 4) as usize);
        let restarts = seed % 3 == 1;
        let left = std::rc::Rc::new(std::cell::Cell::new(DROP_BUDGET));
        let budget = left.clone();
        net.filter = Box::new(move |from, to, _| {
            if dead == Some(from) || dead == Some(to) {
                return false;
            }
            let n = budget.get();
            if n == 0 {
                return true;
            }
            budget.set(n - 1);
            !drops[n as usize - 1]
        });
        net.auto_sync = true;
        let live: Vec<usize> = (0..4).filter(|i| dead != Some(*i)).collect();
        let context = format!("seed {seed} loss {loss} dead {dead:?} restarts {restarts}");
        let mut ok = false;
        for _ in 0..200 {
            if net.run_until(0, |n| n.all_decided(&live, 5)) {
                ok = true;
                break;
            }
            if restarts && rng.random_bool(0.3) {
                net.restart(rng.random_range(0..4usize));
            }
            net.tick_to_next_timeout();
        }
        assert_safe(&net, &context);
        assert!(
            ok,
            "{context}: stalled at {:?}, drop budget left {}",
            net.nodes
                .iter()
                .map(|n| (n.engine.height(), n.engine.round()))
                .collect::<Vec<_>>(),
            left.get()
        );
    }
}

#[test]
fn future_safety_record_is_restored_when_sync_reaches_it() {
    // The safety log says height 2 (the block store lost block 1): after
    // syncing block 1 the engine restores it, re-sends its prepare and
    // refuses to prepare another block in that round.
    let set = validator_set(4);
    let b1 = make_block(
        genesis_hash(),
        GENESIS_TIME_MS,
        1,
        0,
        key(1).public_key(),
        &set,
        1,
    );
    let x = make_block(
        b1.hash(),
        b1.header.timestamp_ms,
        2,
        0,
        key(2).public_key(),
        &set,
        1,
    );
    let y = make_block(
        b1.hash(),
        b1.header.timestamp_ms,
        2,
        0,
        key(2).public_key(),
        &set,
        2,
    );
    let own = prepare(0, 2, 0, x.hash());
    let safety = SafetyState {
        height: 2,
        round: 0,
        prepared: None,
        signed: vec![own.clone()],
    };
    let (mut engine, effects) = Engine::new(
        EngineConfig::new(chain_id()),
        key(0),
        genesis_tip(&set),
        Some(safety),
        0,
    );
    assert!(broadcasts(&effects).is_empty());
    let mut out = Vec::new();
    engine.handle(
        Input::SyncedBlock {
            block: FinalizedBlock {
                block: b1.clone(),
                certificate: certificate(&[0, 1, 2], &b1, 0, 4),
            },
            next_validators: set.clone(),
        },
        &mut out,
    );
    assert_eq!(engine.height(), 2);
    assert_eq!(
        broadcasts(&out),
        vec![&ConsensusMessage::Prepare(own.clone())]
    );
    // The persisted record for height 2 still holds the prepare.
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::PersistSafety(SafetyState { height: 2, signed, .. }) if *signed == vec![own.clone()]
    )));
    let mut out = Vec::new();
    engine.handle(
        Input::Message(proposal_msg(2, 0, &y, Vec::new(), Vec::new())),
        &mut out,
    );
    engine.handle(
        Input::BlockChecked {
            height: 2,
            round: 0,
            block_hash: y.hash(),
            result: Ok(set),
        },
        &mut out,
    );
    assert!(broadcasts(&out).is_empty(), "{out:#?}");
    assert!(
        rejections(&out)
            .iter()
            .any(|r| r.starts_with("refusing to sign prepare"))
    );
}
