//! Checks of the signed evidence QBFT messages carry: prepare quorums
//! (a round change's prepared certificate, a re-proposal's lock proof) and
//! round-change quorums (a proposal's justification for round r > 0).
//!
//! Every check runs the cheap structural tests (counts, kinds, heights,
//! rounds, distinct signers, membership) over the whole list before the
//! first signature is verified, so a malformed justification costs no
//! signature work. Lists longer than the validator set are refused up front:
//! with one payload per signer, anything longer is padding.

use std::collections::BTreeSet;

use metanode_core::hash::Hash32;

use super::super::messages::{Payload, SignedPayload};
use crate::types::{ChainId, Height, Round, ValidatorSet};

/// Who may sign, and for which chain and height.
pub(super) struct Context<'a> {
    pub chain_id: &'a ChainId,
    pub validators: &'a ValidatorSet,
    pub height: Height,
}

/// "prepare for height 5 round 2": how rejection reasons name a payload.
pub(super) fn describe(payload: &Payload) -> String {
    let kind = match payload {
        Payload::Proposal { .. } => "proposal",
        Payload::Prepare { .. } => "prepare",
        Payload::Commit { .. } => "commit",
        Payload::RoundChange { .. } => "round change",
    };
    format!(
        "{kind} for height {} round {}",
        payload.height(),
        payload.round()
    )
}

/// `describe` plus the block the payload names, for conflict reports.
pub(super) fn describe_with_block(payload: &Payload) -> String {
    match payload {
        Payload::Proposal { block_hash, .. }
        | Payload::Prepare { block_hash, .. }
        | Payload::Commit { block_hash, .. } => {
            format!("{} block {block_hash}", describe(payload))
        }
        Payload::RoundChange {
            prepared: Some((prepared_round, block_hash)),
            ..
        } => format!(
            "{} prepared at round {prepared_round} for block {block_hash}",
            describe(payload)
        ),
        Payload::RoundChange { prepared: None, .. } => {
            format!("{} (not prepared)", describe(payload))
        }
    }
}

/// Membership and signature of one payload.
pub(super) fn check_signer(ctx: &Context<'_>, signed: &SignedPayload) -> Result<(), String> {
    if ctx.validators.index_of(&signed.signer).is_none() {
        return Err(format!("signer {} is not a validator", signed.signer));
    }
    signed
        .verify(ctx.chain_id)
        .map_err(|_| format!("signature of {} does not verify", signed.signer))
}

fn check_count(what: &str, len: usize, validators: &ValidatorSet) -> Result<(), String> {
    let n = validators.len();
    if len > n {
        return Err(format!(
            "{len} {what}, more than the {n} validators (one per signer)"
        ));
    }
    let quorum = validators.quorum();
    if len < quorum {
        return Err(format!("{len} {what}, below the quorum of {quorum}"));
    }
    Ok(())
}

/// `prepares` is a quorum of distinct validators' prepares for
/// `(ctx.height, round, block_hash)`.
pub(super) fn check_prepare_quorum(
    ctx: &Context<'_>,
    round: Round,
    block_hash: &Hash32,
    prepares: &[SignedPayload],
) -> Result<(), String> {
    check_count("prepares", prepares.len(), ctx.validators)?;
    let mut signers = BTreeSet::new();
    for (i, prepare) in prepares.iter().enumerate() {
        match &prepare.payload {
            Payload::Prepare {
                height,
                round: r,
                block_hash: h,
            } if *height == ctx.height && *r == round && h == block_hash => {}
            other => {
                return Err(format!(
                    "prepare {i} is a {}, not a prepare for height {} round {round} block {block_hash}",
                    describe_with_block(other),
                    ctx.height
                ));
            }
        }
        if ctx.validators.index_of(&prepare.signer).is_none() {
            return Err(format!(
                "prepare {i}: signer {} is not a validator",
                prepare.signer
            ));
        }
        if !signers.insert(prepare.signer) {
            return Err(format!("prepare {i} repeats signer {}", prepare.signer));
        }
    }
    for (i, prepare) in prepares.iter().enumerate() {
        check_signer(ctx, prepare).map_err(|e| format!("prepare {i}: {e}"))?;
    }
    Ok(())
}

/// The highest prepared `(round, block)` among a set of round changes. Two
/// different blocks can only be prepared in one round if more than f
/// validators equivocated, but a justification naming either is accepted,
/// as the QBFT spec's `isHighestPrepared` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HighestPrepared {
    pub round: Round,
    pub block_hashes: Vec<Hash32>,
}

/// `round_changes` is a quorum of distinct validators' valid round changes
/// for `(ctx.height, round)`, each prepared (if at all) in an earlier round.
/// Returns the highest prepared `(round, block)` among them, if any.
pub(super) fn check_round_change_quorum(
    ctx: &Context<'_>,
    round: Round,
    round_changes: &[SignedPayload],
) -> Result<Option<HighestPrepared>, String> {
    check_count("round changes", round_changes.len(), ctx.validators)?;
    let mut signers = BTreeSet::new();
    let mut highest: Option<HighestPrepared> = None;
    for (i, rc) in round_changes.iter().enumerate() {
        let prepared = match &rc.payload {
            Payload::RoundChange {
                height,
                round: r,
                prepared,
            } if *height == ctx.height && *r == round => *prepared,
            other => {
                return Err(format!(
                    "round change {i} is a {}, not a round change for height {} round {round}",
                    describe(other),
                    ctx.height
                ));
            }
        };
        if ctx.validators.index_of(&rc.signer).is_none() {
            return Err(format!(
                "round change {i}: signer {} is not a validator",
                rc.signer
            ));
        }
        if !signers.insert(rc.signer) {
            return Err(format!("round change {i} repeats signer {}", rc.signer));
        }
        if let Some((prepared_round, block_hash)) = prepared {
            if prepared_round >= round {
                return Err(format!(
                    "round change {i} claims a prepare quorum at round {prepared_round}, not below its round {round}"
                ));
            }
            match &mut highest {
                Some(h) if h.round > prepared_round => {}
                Some(h) if h.round == prepared_round => {
                    if !h.block_hashes.contains(&block_hash) {
                        h.block_hashes.push(block_hash);
                    }
                }
                _ => {
                    highest = Some(HighestPrepared {
                        round: prepared_round,
                        block_hashes: vec![block_hash],
                    });
                }
            }
        }
    }
    for (i, rc) in round_changes.iter().enumerate() {
        check_signer(ctx, rc).map_err(|e| format!("round change {i}: {e}"))?;
    }
    Ok(highest)
}
