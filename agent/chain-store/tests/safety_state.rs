//! The WAL with the record type the node uses: `qbft::SafetyState`.

use metanode_chain::qbft::{Payload, PreparedRecord, SafetyState, SignedPayload};
use metanode_chain::types::{Block, ChainId, ChainMode, Header, ValidatorSet, tx_root};
use metanode_chain_store::{FakeDisk, FsDisk, SafetyWal};
use metanode_core::hash::Hash32;
use metanode_core::keys::SigningKey;
use metanode_core::merkle;

const WAL: &str = "safety.wal";

fn states() -> Vec<SafetyState> {
    let keys: Vec<SigningKey> = (1..=4u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
    let validators = ValidatorSet::new(keys.iter().map(SigningKey::public_key).collect()).unwrap();
    let chain_id = ChainId(Hash32([7; 32]));
    let header = Header {
        chain_id,
        height: 5,
        round: 1,
        prev_hash: Hash32([4; 32]),
        timestamp_ms: 1_700_000_005_000,
        proposer: *validators.proposer(5, 1),
        tx_root: tx_root(&[]),
        poh_root: merkle::empty_root(),
        receipts_root: merkle::empty_root(),
        state_root: Hash32([9; 32]),
        da_root: merkle::empty_root(),
        xcmp_root: merkle::empty_root(),
        validator_set_hash: validators.hash(),
        next_validator_set_hash: validators.hash(),
        mode: ChainMode::Normal,
    };
    let block_hash = header.hash();
    let prepare = |i: usize| {
        SignedPayload::sign(
            &chain_id,
            Payload::Prepare {
                height: 5,
                round: 1,
                block_hash,
            },
            &keys[i],
        )
    };
    let round_change = SignedPayload::sign(
        &chain_id,
        Payload::RoundChange {
            height: 5,
            round: 1,
            prepared: None,
        },
        &keys[0],
    );
    vec![
        SafetyState {
            height: 5,
            round: 0,
            prepared: None,
            signed: vec![],
        },
        SafetyState {
            height: 5,
            round: 1,
            prepared: None,
            signed: vec![round_change.clone()],
        },
        SafetyState {
            height: 5,
            round: 1,
            prepared: Some(PreparedRecord {
                round: 1,
                block: Block {
                    header,
                    txs: vec![],
                },
                prepares: vec![prepare(0), prepare(1), prepare(2)],
            }),
            signed: vec![round_change, prepare(0)],
        },
    ]
}

#[test]
fn safety_state_survives_reopen_on_real_files() {
    let states = states();
    let tmp = tempfile::tempdir().unwrap();
    let (mut wal, state, _) =
        SafetyWal::<_, SafetyState>::open(FsDisk::open(tmp.path()).unwrap(), WAL).unwrap();
    assert_eq!(state, None);
    for s in &states {
        wal.persist(s).unwrap();
    }
    drop(wal);
    let (_, state, report) =
        SafetyWal::<_, SafetyState>::open(FsDisk::open(tmp.path()).unwrap(), WAL).unwrap();
    assert_eq!(report.records_count, 3);
    assert_eq!(state.as_ref(), states.last());
}

#[test]
fn safety_state_after_a_crash_is_the_acknowledged_one_or_the_cut_one() {
    let states = states();
    for seed in 0..100u64 {
        let mut disk = FakeDisk::new();
        // Two operations per persist: cut inside the third one.
        disk.power_off_after(4 + seed % 2);
        let (mut wal, _, _) = SafetyWal::<_, SafetyState>::open(disk, WAL).unwrap();
        wal.persist(&states[0]).unwrap();
        wal.persist(&states[1]).unwrap();
        assert!(wal.persist(&states[2]).is_err());
        let mut disk = wal.into_disk();
        disk.crash(seed);
        let (_, state, _) = SafetyWal::<_, SafetyState>::open(disk, WAL).unwrap();
        let state = state.unwrap();
        assert!(
            state == states[1] || state == states[2],
            "seed {seed}: {state:?}"
        );
    }
}
