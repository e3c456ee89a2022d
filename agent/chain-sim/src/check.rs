//! The properties every seed must satisfy.
//!
//! - Agreement: no two nodes ever decide different blocks at one height
//!   (twins included: their code is honest, only their key is shared).
//! - No double-signing by honest validators, across crashes: for one
//!   `(kind, height, round)` an honest key signs at most one payload.
//! - Validity: every decided block's certificate verifies against the
//!   validator set, every transaction in it is validly signed, and its roots
//!   are what re-execution gives.
//! - Liveness: after the heal every honest node is running and has decided
//!   at least `LIVENESS_HEIGHTS_MIN` heights beyond the best height at the
//!   heal, and clients' transactions got committed after the heal.
//! - Identical state: honest nodes at one height have one state root.
//! - Replay: replaying a node's stored blocks from genesis through a fresh
//!   application gives the root the node reports.

use std::collections::BTreeMap;
use std::fmt;

use metanode_chain::app::{Application, LedgerApp};
use metanode_chain::node::{Replay, TipInfo};
use metanode_chain::qbft::{Payload, SignedPayload};
use metanode_chain::types::{CommitCertificate, FinalizedBlock, Genesis, Height, SignedTx};
use metanode_chain_store::{BlockStore, ChainDisk};
use metanode_core::hash::Hash32;

/// Heights every honest node must add after the heal.
pub const LIVENESS_HEIGHTS_MIN: u64 = 3;

/// A violated property, with everything needed to replay it.
#[derive(Clone, Debug)]
pub struct SimFailure {
    pub seed: u64,
    pub at_ms: u64,
    pub what: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at {} ms: {}\n  replay: cargo xtask sim --seed {}",
            self.seed, self.at_ms, self.what, self.seed
        )
    }
}

impl std::error::Error for SimFailure {}

#[derive(Debug)]
pub struct Checker {
    seed: u64,
    genesis: Genesis,
    decided: BTreeMap<Height, (Hash32, Hash32)>,
    /// Certificates already verified per height: nodes usually report the
    /// same one, and re-verifying it would dominate the run time.
    verified_certificates: BTreeMap<Height, Vec<CommitCertificate>>,
    /// (validator, kind, height, round) → the payload it signed.
    signed: BTreeMap<(usize, u8, Height, u32), Payload>,
    submitted: std::collections::BTreeSet<Hash32>,
    heal: Option<(u64, Height)>,
    txs_committed: u64,
    txs_committed_after_heal: u64,
    submitted_before_end: u64,
}

impl Checker {
    pub fn new(seed: u64, genesis: Genesis) -> Self {
        Checker {
            seed,
            genesis,
            decided: BTreeMap::new(),
            verified_certificates: BTreeMap::new(),
            signed: BTreeMap::new(),
            submitted: Default::default(),
            heal: None,
            txs_committed: 0,
            txs_committed_after_heal: 0,
            submitted_before_end: 0,
        }
    }

    pub fn fail(&self, at_ms: u64, what: String) -> SimFailure {
        SimFailure {
            seed: self.seed,
            at_ms,
            what,
        }
    }

    pub fn txs_committed(&self) -> u64 {
        self.txs_committed
    }

    pub fn on_submitted(&mut self, tx: &SignedTx) {
        self.submitted.insert(tx.hash());
        self.submitted_before_end += 1;
    }

    pub fn on_heal(&mut self, at_ms: u64, best_height: Height) {
        self.heal = Some((at_ms, best_height));
    }

    pub fn on_signed(
        &mut self,
        at_ms: u64,
        validator: usize,
        head: &SignedPayload,
    ) -> Result<(), SimFailure> {
        let kind = match head.payload {
            Payload::Proposal { .. } => 0,
            Payload::Prepare { .. } => 1,
            Payload::Commit { .. } => 2,
            Payload::RoundChange { .. } => 3,
        };
        let key = (validator, kind, head.payload.height(), head.payload.round());
        match self.signed.get(&key) {
            Some(previous) if *previous != head.payload => Err(self.fail(
                at_ms,
                format!(
                    "honest validator {validator} double-signed: {previous:?} and then {:?}",
                    head.payload
                ),
            )),
            Some(_) => Ok(()),
            None => {
                self.signed.insert(key, head.payload.clone());
                Ok(())
            }
        }
    }

    pub fn on_decided(
        &mut self,
        at_ms: u64,
        node: usize,
        block: &FinalizedBlock,
    ) -> Result<(), SimFailure> {
        let header = &block.block.header;
        let hash = header.hash();
        // The validator set is fixed in the simulated chain (the built-in
        // ledger has no admin key here), so genesis's set decides every height.
        let seen = self.verified_certificates.entry(header.height).or_default();
        if !seen.contains(&block.certificate) {
            if let Err(e) =
                block
                    .certificate
                    .verify(&self.genesis.chain_id(), header, &self.genesis.validators)
            {
                return Err(self.fail(
                    at_ms,
                    format!(
                        "node {node} decided height {} with a bad certificate: {e}",
                        header.height
                    ),
                ));
            }
            seen.push(block.certificate.clone());
        }
        // The node itself asserts that its committed state root equals the
        // header's before reporting the block (a mismatch panics and fails
        // the seed), so agreement on the hash covers identical state roots.
        match self.decided.get(&header.height) {
            Some((other, _)) if *other != hash => Err(self.fail(
                at_ms,
                format!(
                    "agreement violated at height {}: node {node} decided {hash}, another node {other}",
                    header.height
                ),
            )),
            Some(_) => Ok(()),
            None => {
                for tx in &block.block.txs {
                    if !self.submitted.contains(&tx.hash()) && tx.verify_signature().is_err() {
                        return Err(self.fail(
                            at_ms,
                            format!(
                                "height {} contains transaction {} with a bad signature",
                                header.height,
                                tx.hash()
                            ),
                        ));
                    }
                }
                self.txs_committed += block.block.txs.len() as u64;
                if self.heal.is_some() {
                    self.txs_committed_after_heal += block.block.txs.len() as u64;
                }
                self.decided.insert(header.height, (hash, header.state_root));
                Ok(())
            }
        }
    }

    pub fn finish<D: ChainDisk>(
        &self,
        at_ms: u64,
        finals: &[(usize, TipInfo, Hash32, &BlockStore<D>)],
    ) -> Result<(), SimFailure> {
        let Some((_, heal_height)) = self.heal else {
            return Err(self.fail(at_ms, "the run ended before the heal".into()));
        };
        for (node, tip, root, blocks) in finals {
            if tip.height < heal_height + LIVENESS_HEIGHTS_MIN {
                return Err(self.fail(
                    at_ms,
                    format!(
                        "liveness: node {node} is at height {} after the heal, needs {} (best at heal {heal_height} + {LIVENESS_HEIGHTS_MIN})",
                        tip.height,
                        heal_height + LIVENESS_HEIGHTS_MIN
                    ),
                ));
            }
            if let Some((hash, state_root)) = self.decided.get(&tip.height)
                && (*hash != tip.hash || *state_root != *root)
            {
                return Err(self.fail(
                    at_ms,
                    format!(
                        "node {node} at height {} has block {} root {root}, the chain has {hash} root {state_root}",
                        tip.height, tip.hash
                    ),
                ));
            }
            let replayed = replay(&self.genesis, blocks, Some(&self.verified_certificates))
                .map_err(|e| self.fail(at_ms, format!("node {node}: replay from genesis: {e}")))?;
            let (replayed_height, replayed_root) =
                (replayed.tip().height, replayed.app().committed_state_root());
            if replayed_height != tip.height || replayed_root != *root {
                return Err(self.fail(
                    at_ms,
                    format!(
                        "node {node}: replay from genesis reaches height {} root {}, the node is at {} root {root}",
                        replayed_height, replayed_root, tip.height
                    ),
                ));
            }
        }
        if self.submitted_before_end > 0 && self.txs_committed_after_heal == 0 {
            return Err(self.fail(
                at_ms,
                "liveness: clients kept submitting but no transaction was committed after the heal"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Replays every stored block through a fresh application
/// ([`metanode_chain::node::Replay`]: certificates and roots checked): what a
/// restarting node does, and the replay-from-genesis checker.
/// `already_verified`: certificates the caller verified before (the
/// checker's record); one of those is compared instead of re-verified.
pub fn replay<D: ChainDisk>(
    genesis: &Genesis,
    blocks: &BlockStore<D>,
    already_verified: Option<&BTreeMap<Height, Vec<CommitCertificate>>>,
) -> Result<Replay<LedgerApp>, String> {
    let mut replay = Replay::from_genesis(genesis, LedgerApp::from_genesis(genesis));
    let top = blocks.tip().map(|(h, _)| h).unwrap_or(0);
    for height in 1..=top {
        let block = blocks
            .get(height)
            .map_err(|e| format!("reading height {height}: {e}"))?
            .ok_or_else(|| format!("height {height} missing below the tip {top}"))?;
        let known = already_verified
            .and_then(|m| m.get(&height))
            .is_some_and(|certs| certs.contains(&block.certificate));
        replay.apply(&block, known).map_err(|e| e.to_string())?;
    }
    Ok(replay)
}
