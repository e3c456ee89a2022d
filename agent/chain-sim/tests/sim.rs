//! The simulator's own guarantees: a seed replays exactly, the checkers
//! catch what they claim to catch, and a handful of seeds pass under
//! `cargo test` (CI runs a thousand through `cargo xtask sim`).

use metanode_chain::qbft::{Payload, SignedPayload};
use metanode_chain::types::{
    Block, ChainId, ChainMode, CommitCertificate, FinalizedBlock, Genesis, Header, ValidatorSet,
    commit_seal_digest,
};
use metanode_chain_sim::check::Checker;
use metanode_chain_sim::{Scenario, run_seed};
use metanode_core::hash::Hash32;
use metanode_core::keys::SigningKey;
use metanode_core::merkle;

#[test]
fn a_seed_replays_exactly() {
    // Seed 2 has Byzantine validators and faults, so most code paths run.
    let a = run_seed(2).expect("seed 2 passes");
    let b = run_seed(2).expect("seed 2 passes again");
    assert_eq!(a.trace_digest, b.trace_digest);
    assert_eq!(a.heights, b.heights);
    assert_eq!(a.messages_sent, b.messages_sent);
    assert!(a.heights.iter().all(|h| *h > 3), "{a:?}");
}

#[test]
fn a_few_seeds_pass() {
    for seed in 10..16 {
        let report = run_seed(seed).unwrap_or_else(|f| panic!("{f}"));
        assert!(!report.heights.is_empty());
    }
}

fn keys() -> Vec<SigningKey> {
    (1..=4u8).map(|i| SigningKey::from_seed(&[i; 32])).collect()
}

fn genesis(keys: &[SigningKey]) -> Genesis {
    Genesis {
        chain_name: "checker".into(),
        genesis_time_ms: 0,
        validators: ValidatorSet::new(keys.iter().map(|k| k.public_key()).collect()).unwrap(),
        accounts: Vec::new(),
    }
}

fn finalized(genesis: &Genesis, keys: &[SigningKey], state_root: Hash32) -> FinalizedBlock {
    let chain_id: ChainId = genesis.chain_id();
    let vs = &genesis.validators;
    let header = Header {
        chain_id,
        height: 1,
        round: 0,
        prev_hash: genesis.hash(),
        timestamp_ms: 1,
        proposer: *vs.proposer(1, 0),
        tx_root: merkle::empty_root(),
        poh_root: merkle::empty_root(),
        receipts_root: merkle::empty_root(),
        state_root,
        da_root: merkle::empty_root(),
        xcmp_root: merkle::empty_root(),
        validator_set_hash: vs.hash(),
        next_validator_set_hash: vs.hash(),
        mode: ChainMode::Normal,
    };
    let hash = header.hash();
    let digest = commit_seal_digest(&chain_id, 1, 0, &hash);
    let seals: Vec<_> = (0..3u16)
        .map(|i| (i, keys[usize::from(i)].sign(digest.as_bytes())))
        .collect();
    FinalizedBlock {
        certificate: CommitCertificate::from_seals(1, 0, hash, 4, &seals),
        block: Block {
            header,
            txs: Vec::new(),
        },
    }
}

#[test]
fn checker_catches_disagreement() {
    let keys = keys();
    let g = genesis(&keys);
    let mut checker = Checker::new(7, g.clone());
    checker
        .on_decided(10, 0, &finalized(&g, &keys, Hash32([1; 32])))
        .unwrap();
    // The same block again is fine; a different block at height 1 is not.
    checker
        .on_decided(11, 1, &finalized(&g, &keys, Hash32([1; 32])))
        .unwrap();
    let failure = checker
        .on_decided(12, 2, &finalized(&g, &keys, Hash32([2; 32])))
        .unwrap_err();
    assert!(
        failure.what.contains("agreement violated at height 1"),
        "{failure}"
    );
    assert_eq!(failure.seed, 7);
    assert!(failure.to_string().contains("cargo xtask sim --seed 7"));
}

#[test]
fn checker_catches_a_forged_certificate() {
    let keys = keys();
    let g = genesis(&keys);
    let mut checker = Checker::new(8, g.clone());
    let mut block = finalized(&g, &keys, Hash32([1; 32]));
    block.certificate.signatures[1].0[5] ^= 1;
    let failure = checker.on_decided(10, 0, &block).unwrap_err();
    assert!(failure.what.contains("bad certificate"), "{failure}");
}

#[test]
fn checker_catches_double_signing() {
    let keys = keys();
    let g = genesis(&keys);
    let chain_id = g.chain_id();
    let mut checker = Checker::new(9, g);
    let prepare = |hash: u8| {
        SignedPayload::sign(
            &chain_id,
            Payload::Prepare {
                height: 3,
                round: 1,
                block_hash: Hash32([hash; 32]),
            },
            &keys[0],
        )
    };
    checker.on_signed(1, 0, &prepare(1)).unwrap();
    // Re-sending the same vote (after a restart) is allowed.
    checker.on_signed(2, 0, &prepare(1)).unwrap();
    let failure = checker.on_signed(3, 0, &prepare(2)).unwrap_err();
    assert!(failure.what.contains("double-signed"), "{failure}");
    // Another validator voting differently is not double-signing.
    checker.on_signed(4, 1, &prepare(2)).unwrap();
}

#[test]
fn scenarios_draw_every_fault_kind() {
    let mut crash = false;
    let mut partition = false;
    let mut fsync = false;
    for seed in 0..200 {
        for f in Scenario::from_seed(seed).faults {
            match f {
                metanode_chain_sim::scenario::FaultEvent::Crash { .. } => crash = true,
                metanode_chain_sim::scenario::FaultEvent::Partition { .. } => partition = true,
                metanode_chain_sim::scenario::FaultEvent::FsyncError { .. } => fsync = true,
            }
        }
    }
    assert!(crash && partition && fsync);
}
