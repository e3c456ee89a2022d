//! Block store: append, reopen, reads, linkage checks, torn tails, damage
//! and crashes, with real signed blocks.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

use metanode_chain::types::{
    Block, ChainId, ChainMode, CommitCertificate, FinalizedBlock, Genesis, GenesisAccount, Header,
    Height, SignedTx, TxBody, TxKind, ValidatorIndex, ValidatorSet, commit_seal_digest,
    receipts_root, tx_root,
};
use metanode_chain_store::{
    BLOCKS_LOG_NAME, BlockStore, BlockStoreError, FakeDisk, FsDisk, SplitMix64,
};
use metanode_core::encoding::Encode;
use metanode_core::hash::Hash32;
use metanode_core::keys::{Signature, SigningKey};
use metanode_core::merkle;

struct Chain {
    keys: Vec<SigningKey>,
    validators: ValidatorSet,
    genesis: Genesis,
}

impl Chain {
    fn new() -> Chain {
        let keys: Vec<SigningKey> = (1..=4u8).map(|i| SigningKey::from_seed(&[i; 32])).collect();
        let validators =
            ValidatorSet::new(keys.iter().map(SigningKey::public_key).collect()).unwrap();
        let genesis = Genesis {
            chain_name: "chain-store-test".into(),
            genesis_time_ms: 1_700_000_000_000,
            validators: validators.clone(),
            accounts: vec![GenesisAccount {
                key: keys[0].public_key(),
                balance: 1_000_000,
            }],
        };
        Chain {
            keys,
            validators,
            genesis,
        }
    }

    fn chain_id(&self) -> ChainId {
        self.genesis.chain_id()
    }

    /// Block `height` on `prev_hash` with `height % 3` transfers, certified
    /// by validators 0, 1 and 3 in round `height % 2`.
    fn block(&self, height: Height, prev_hash: Hash32) -> FinalizedBlock {
        let chain_id = self.chain_id();
        let txs: Vec<SignedTx> = (0..height % 3)
            .map(|n| {
                TxBody {
                    chain_id,
                    sender: self.keys[0].public_key(),
                    nonce: height * 10 + n,
                    fee: 1,
                    kind: TxKind::Transfer {
                        to: self.keys[1].public_key(),
                        amount: 5 + n,
                    },
                }
                .sign(&self.keys[0])
                .unwrap()
            })
            .collect();
        let round = (height % 2) as u32;
        let header = Header {
            chain_id,
            height,
            round,
            prev_hash,
            timestamp_ms: 1_700_000_000_000 + height * 1000,
            proposer: *self.validators.proposer(height, round),
            tx_root: tx_root(&txs),
            poh_root: merkle::empty_root(),
            receipts_root: receipts_root(&[]),
            state_root: Hash32([height as u8; 32]),
            da_root: merkle::empty_root(),
            xcmp_root: merkle::empty_root(),
            validator_set_hash: self.validators.hash(),
            next_validator_set_hash: self.validators.hash(),
            mode: ChainMode::Normal,
        };
        let hash = header.hash();
        let digest = commit_seal_digest(&chain_id, height, round, &hash);
        let seals: Vec<(ValidatorIndex, Signature)> = [0u16, 1, 3]
            .iter()
            .map(|&i| (i, self.keys[usize::from(i)].sign(digest.as_bytes())))
            .collect();
        let certificate = CommitCertificate::from_seals(height, round, hash, 4, &seals);
        certificate
            .verify(&chain_id, &header, &self.validators)
            .unwrap();
        FinalizedBlock {
            block: Block { header, txs },
            certificate,
        }
    }

    /// Blocks 1..=count, linked from genesis.
    fn blocks(&self, count: u64) -> Vec<FinalizedBlock> {
        let mut prev = self.genesis.hash();
        (1..=count)
            .map(|h| {
                let b = self.block(h, prev);
                prev = b.block.hash();
                b
            })
            .collect()
    }
}

fn encoded_len(b: &FinalizedBlock) -> u64 {
    b.to_canonical_bytes().unwrap().len() as u64
}

/// File offset of block `height`'s record.
fn offset_of(blocks: &[FinalizedBlock], height: Height) -> u64 {
    blocks[..(height - 1) as usize]
        .iter()
        .map(|b| 8 + encoded_len(b))
        .sum()
}

#[test]
fn fs_append_reopen_get_and_range() {
    let chain = Chain::new();
    let blocks = chain.blocks(10);
    let tmp = tempfile::tempdir().unwrap();
    let genesis_hash = chain.genesis.hash();
    let (mut store, report) =
        BlockStore::open(FsDisk::open(tmp.path()).unwrap(), genesis_hash).unwrap();
    assert_eq!(report.records_count, 0);
    assert_eq!(store.tip(), None);
    assert_eq!(store.tip_hash(), genesis_hash);
    for b in &blocks {
        store.append(b).unwrap();
    }
    let tip = (10, blocks[9].block.hash());
    assert_eq!(store.tip(), Some(tip));
    assert_eq!(store.get(4).unwrap().as_ref(), Some(&blocks[3]));
    drop(store);

    let (store, report) =
        BlockStore::open(FsDisk::open(tmp.path()).unwrap(), genesis_hash).unwrap();
    assert_eq!(report.records_count, 10);
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.file_len_bytes, offset_of(&blocks, 11));
    assert_eq!(store.len_bytes(), offset_of(&blocks, 11));
    assert_eq!(store.tip(), Some(tip));
    assert_eq!(store.get(0).unwrap(), None);
    assert_eq!(store.get(11).unwrap(), None);
    for (i, b) in blocks.iter().enumerate() {
        assert_eq!(store.get(i as u64 + 1).unwrap().as_ref(), Some(b));
    }

    let heights = |v: Vec<FinalizedBlock>| -> Vec<Height> {
        v.iter().map(|b| b.block.header.height).collect()
    };
    assert_eq!(
        heights(store.range(3, 7, u64::MAX).unwrap()),
        vec![3, 4, 5, 6, 7]
    );
    assert_eq!(store.range(3, 7, u64::MAX).unwrap()[0], blocks[2]);
    // Exactly two blocks fit; one byte less and only one does.
    let two = encoded_len(&blocks[2]) + encoded_len(&blocks[3]);
    assert_eq!(heights(store.range(3, 7, two).unwrap()), vec![3, 4]);
    assert_eq!(heights(store.range(3, 7, two - 1).unwrap()), vec![3]);
    // The first block is always returned so block sync makes progress.
    assert_eq!(heights(store.range(3, 7, 1).unwrap()), vec![3]);
    // Clipped to 1..=tip; empty when reversed or past the tip.
    assert_eq!(
        heights(store.range(0, 100, u64::MAX).unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    assert!(store.range(8, 3, u64::MAX).unwrap().is_empty());
    assert!(store.range(11, 20, u64::MAX).unwrap().is_empty());
}

#[test]
fn wrong_height_broken_link_and_foreign_certificate_are_refused() {
    let chain = Chain::new();
    let blocks = chain.blocks(3);
    let genesis_hash = chain.genesis.hash();
    let (mut store, _) = BlockStore::open(FakeDisk::new(), genesis_hash).unwrap();

    // Block 1 must link to genesis.
    let stray = chain.block(1, Hash32([0xAA; 32]));
    match store.append(&stray).unwrap_err() {
        BlockStoreError::BrokenLink {
            height,
            expected_prev,
            found_prev,
        } => {
            assert_eq!(height, 1);
            assert_eq!(expected_prev, genesis_hash);
            assert_eq!(found_prev, Hash32([0xAA; 32]));
        }
        other => panic!("expected broken link, got {other:?}"),
    }
    store.append(&blocks[0]).unwrap();

    let err = store.append(&blocks[2]).unwrap_err();
    assert!(
        matches!(
            err,
            BlockStoreError::WrongHeight {
                expected: 2,
                found: 3
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "block at height 3 refused: the next height is 2"
    );
    assert!(matches!(
        store.append(&blocks[0]).unwrap_err(),
        BlockStoreError::WrongHeight {
            expected: 2,
            found: 1
        }
    ));

    // Height 2 built on something other than block 1.
    let fork = chain.block(2, Hash32([0xBB; 32]));
    let err = store.append(&fork).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "block at height 2 refused: prev_hash {} is not the hash of the tip {}",
            Hash32([0xBB; 32]),
            blocks[0].block.hash()
        )
    );

    // A certificate for another block (the fork's) attached to block 2.
    let mut mixed = blocks[1].clone();
    mixed.certificate = fork.certificate.clone();
    match store.append(&mixed).unwrap_err() {
        BlockStoreError::CertificateMismatch { height, reason } => {
            assert_eq!(height, 2);
            assert_eq!(
                reason,
                format!(
                    "certificate is for block {}, the block hashes to {}",
                    fork.block.hash(),
                    blocks[1].block.hash()
                )
            );
        }
        other => panic!("expected certificate mismatch, got {other:?}"),
    }

    // Refusals wrote nothing.
    assert_eq!(store.tip(), Some((1, blocks[0].block.hash())));
    assert_eq!(store.len_bytes(), offset_of(&blocks, 2));
    store.append(&blocks[1]).unwrap();
    store.append(&blocks[2]).unwrap();
    let (store, report) = BlockStore::open(store.into_disk(), genesis_hash).unwrap();
    assert_eq!(report.records_count, 3);
    assert_eq!(store.tip(), Some((3, blocks[2].block.hash())));
}

#[test]
fn opening_against_another_genesis_names_height_1() {
    let chain = Chain::new();
    let blocks = chain.blocks(2);
    let mut disk = FakeDisk::new();
    {
        let (mut store, _) = BlockStore::open(&mut disk, chain.genesis.hash()).unwrap();
        store.append(&blocks[0]).unwrap();
        store.append(&blocks[1]).unwrap();
    }
    let other = Hash32([0x55; 32]);
    match BlockStore::open(&mut disk, other).unwrap_err() {
        BlockStoreError::Corrupt {
            name,
            offset,
            height,
            reason,
        } => {
            assert_eq!(name, BLOCKS_LOG_NAME);
            assert_eq!((offset, height), (0, 1));
            assert_eq!(
                reason,
                format!(
                    "prev_hash {} is not the previous block's hash {other}",
                    chain.genesis.hash()
                )
            );
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
    // Nothing was lost by the failed open.
    let (store, _) = BlockStore::open(&mut disk, chain.genesis.hash()).unwrap();
    assert_eq!(store.height(), 2);
}

#[test]
fn fs_torn_last_block_is_cut_and_appending_resumes() {
    let chain = Chain::new();
    let blocks = chain.blocks(4);
    let genesis_hash = chain.genesis.hash();
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut store, _) =
            BlockStore::open(FsDisk::open(tmp.path()).unwrap(), genesis_hash).unwrap();
        for b in &blocks[..3] {
            store.append(b).unwrap();
        }
    }
    // Half of block 4's record, as a crash mid-write leaves it.
    let payload = blocks[3].to_canonical_bytes().unwrap();
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    let half = frame.len() / 2;
    let path = tmp.path().join(BLOCKS_LOG_NAME);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&frame[..half])
        .unwrap();
    let (mut store, report) =
        BlockStore::open(FsDisk::open(tmp.path()).unwrap(), genesis_hash).unwrap();
    let torn = report.torn_tail.unwrap();
    assert_eq!(torn.offset, offset_of(&blocks, 4));
    assert_eq!(torn.discarded_bytes, half as u64);
    assert_eq!(fs::metadata(&path).unwrap().len(), offset_of(&blocks, 4));
    assert_eq!(store.tip(), Some((3, blocks[2].block.hash())));
    store.append(&blocks[3]).unwrap();
    drop(store);
    let (store, report) =
        BlockStore::open(FsDisk::open(tmp.path()).unwrap(), genesis_hash).unwrap();
    assert_eq!(report.torn_tail, None);
    assert_eq!(store.get(4).unwrap().as_ref(), Some(&blocks[3]));
}

#[test]
fn fs_mid_file_damage_is_an_error_naming_offset_and_height() {
    let chain = Chain::new();
    let blocks = chain.blocks(4);
    let genesis_hash = chain.genesis.hash();
    let tmp = tempfile::tempdir().unwrap();
    let (mut store, _) = BlockStore::open(FsDisk::open(tmp.path()).unwrap(), genesis_hash).unwrap();
    for b in &blocks {
        store.append(b).unwrap();
    }
    // Bit rot inside block 2 after it was stored: reads catch it...
    let at = offset_of(&blocks, 2);
    let path = tmp.path().join(BLOCKS_LOG_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at + 40).unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], at + 40).unwrap();
    match store.get(2).unwrap_err() {
        BlockStoreError::Corrupt {
            offset,
            height,
            reason,
            ..
        } => {
            assert_eq!((offset, height), (at, 2));
            assert!(reason.starts_with("checksum mismatch"), "{reason}");
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
    assert_eq!(store.get(3).unwrap().as_ref(), Some(&blocks[2]));
    drop(store);
    // ...and so does opening, without truncating blocks 3 and 4.
    let err = BlockStore::open(FsDisk::open(tmp.path()).unwrap(), genesis_hash).unwrap_err();
    assert!(
        matches!(err, BlockStoreError::Corrupt { offset, height: 2, .. } if offset == at),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "blocks.log: stored block at offset {at} (height 2) is corrupt: checksum mismatch"
        )),
        "{err}"
    );
    assert_eq!(fs::metadata(&path).unwrap().len(), offset_of(&blocks, 5));
}

#[test]
fn fake_crashes_keep_every_acknowledged_block() {
    let chain = Chain::new();
    let blocks = chain.blocks(12);
    let genesis_hash = chain.genesis.hash();
    let mut in_flight_survived = 0;
    let mut torn_tails = 0;
    for seed in 0..200u64 {
        let mut rng = SplitMix64::new(seed);
        let mut disk = FakeDisk::new();
        disk.power_off_after(rng.up_to(2 * blocks.len() as u64));
        let (mut store, _) = BlockStore::open(disk, genesis_hash).unwrap();
        let mut acked = 0u64;
        for b in &blocks {
            if store.append(b).is_err() {
                break;
            }
            acked += 1;
        }
        let mut disk = store.into_disk();
        disk.crash(seed);
        let (store, report) = BlockStore::open(disk, genesis_hash)
            .unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
        torn_tails += u64::from(report.torn_tail.is_some());
        let height = store.height();
        assert!(
            height == acked || height == acked + 1,
            "seed {seed}: height {height}, acknowledged {acked}"
        );
        in_flight_survived += u64::from(height == acked + 1);
        for h in 1..=height {
            assert_eq!(
                store.get(h).unwrap().as_ref(),
                Some(&blocks[(h - 1) as usize]),
                "seed {seed} height {h}"
            );
        }
    }
    assert!(in_flight_survived > 5, "{in_flight_survived}");
    assert!(torn_tails > 5, "{torn_tails}");
}

#[test]
fn fake_sync_failure_poisons_appends_but_not_reads() {
    let chain = Chain::new();
    let blocks = chain.blocks(3);
    let (mut store, _) = BlockStore::open(FakeDisk::new(), chain.genesis.hash()).unwrap();
    store.append(&blocks[0]).unwrap();
    store.disk_mut().fail_next_sync(None);
    let err = store.append(&blocks[1]).unwrap_err();
    assert!(
        matches!(&err, BlockStoreError::Io { op: "fsync", offset, .. } if *offset == offset_of(&blocks, 2)),
        "{err:?}"
    );
    assert!(store.is_poisoned());
    assert!(matches!(
        store.append(&blocks[1]).unwrap_err(),
        BlockStoreError::Poisoned { .. }
    ));
    // The tip did not move, and acknowledged blocks are still served.
    assert_eq!(store.tip(), Some((1, blocks[0].block.hash())));
    assert_eq!(store.get(1).unwrap().as_ref(), Some(&blocks[0]));
    assert_eq!(store.get(2).unwrap(), None);
}

#[test]
fn fake_bit_rot_in_the_middle_is_an_error() {
    let chain = Chain::new();
    let blocks = chain.blocks(3);
    let genesis_hash = chain.genesis.hash();
    let (mut store, _) = BlockStore::open(FakeDisk::new(), genesis_hash).unwrap();
    for b in &blocks {
        store.append(b).unwrap();
    }
    let mut disk = store.into_disk();
    // The length field of block 1: the scan finds block 2 after it.
    assert!(disk.corrupt(BLOCKS_LOG_NAME, 2));
    match BlockStore::open(disk, genesis_hash).unwrap_err() {
        BlockStoreError::Corrupt {
            offset,
            height,
            reason,
            ..
        } => {
            assert_eq!((offset, height), (0, 1));
            assert!(
                reason.ends_with(&format!(
                    "a valid record follows at offset {}",
                    offset_of(&blocks, 2)
                )),
                "{reason}"
            );
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
}
