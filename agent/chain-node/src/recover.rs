//! Start-up: open the data directory, and rebuild the application by
//! replaying every stored block, as the simulator's restart does
//! (`metanode_chain_sim::check::replay`): the in-memory state of a previous
//! run is never trusted, only what is durable.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use metanode_api::AccountInfo;
use metanode_chain::app::{Application, LedgerApp};
use metanode_chain::node::{NodeStart, Replay};
use metanode_chain::qbft::SafetyState;
use metanode_chain::types::{FinalizedBlock, Genesis, Height, SignedTx, TxKind};
use metanode_chain_store::{BlockStore, FsDisk, OpenReport, ReceiptStore, SafetyWal};
use metanode_core::hash::Hash32;
use metanode_core::keys::PublicKey;

use crate::config::{LOCK_FILE_NAME, SAFETY_WAL_NAME, StartError};

/// Where a finalized transaction sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TxLocation {
    pub height: Height,
    pub index: u32,
}

/// The durable stores the loop appends to and API readers read, behind one
/// lock so the tx index never points past what is stored.
#[derive(Debug)]
pub(crate) struct Stores {
    pub blocks: BlockStore<FsDisk>,
    pub receipts: ReceiptStore<FsDisk>,
    /// Transaction id → location, for every stored block. In memory (about
    /// 50 bytes per transaction), rebuilt by replay at start.
    pub tx_index: HashMap<Hash32, TxLocation>,
}

/// Adds a stored block's transactions to the index.
pub(crate) fn index_block(
    tx_index: &mut HashMap<Hash32, TxLocation>,
    height: Height,
    tx_hashes: impl IntoIterator<Item = Hash32>,
) {
    for (index, hash) in tx_hashes.into_iter().enumerate() {
        // A block holds at most CHAIN_BLOCK_TXS_COUNT_MAX (< 2^32) transactions.
        let index = u32::try_from(index).expect("block transaction count fits u32");
        tx_index.insert(hash, TxLocation { height, index });
    }
}

/// Everything start-up recovered.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Held for the node's lifetime: a second node on the same directory
    /// would interleave appends with ours.
    pub lock: File,
    pub wal: SafetyWal<FsDisk, SafetyState>,
    pub stores: Stores,
    pub start: NodeStart<LedgerApp>,
    pub accounts: HashMap<PublicKey, AccountInfo>,
    pub receipts_rebuilt: u64,
}

/// Accounts a block can change in the built-in ledger: senders, transfer
/// recipients and the proposer (fees). Validator-set payloads change no
/// account.
pub(crate) fn touched_accounts(block: &FinalizedBlock, out: &mut BTreeSet<PublicKey>) {
    out.insert(block.block.header.proposer);
    for tx in &block.block.txs {
        let body = tx.body();
        out.insert(body.sender);
        if let TxKind::Transfer { to, .. } = &body.kind {
            out.insert(*to);
        }
    }
}

pub(crate) fn account_info(app: &LedgerApp, key: &PublicKey) -> AccountInfo {
    AccountInfo {
        balance: app.balance(key),
        next_nonce: app.next_nonce(key),
    }
}

fn log_report(report: &OpenReport) {
    match &report.torn_tail {
        Some(torn) => tracing::warn!(
            file = %report.name,
            offset = torn.offset,
            discarded_bytes = torn.discarded_bytes,
            reason = %torn.reason,
            "cut a torn last record (a write that was never acknowledged)"
        ),
        None => tracing::debug!(
            file = %report.name,
            records = report.records_count,
            "opened"
        ),
    }
}

fn lock_dir(dir: &Path) -> Result<File, StartError> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| StartError::DataDir {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StartError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(StartError::DataDir { path, source }),
    }
}

fn open_disk(dir: &Path) -> Result<FsDisk, StartError> {
    FsDisk::open(dir).map_err(|source| StartError::DataDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Opens the data directory (creating it 0700), takes its lock, opens the
/// WAL and both logs and replays the blocks. Blocking: call off the runtime.
pub(crate) fn recover(genesis: &Genesis, dir: &Path) -> Result<Recovered, StartError> {
    let wal_disk = open_disk(dir)?;
    let lock = lock_dir(dir)?;
    let (wal, safety, report) = SafetyWal::open(wal_disk, SAFETY_WAL_NAME)?;
    log_report(&report);
    let (blocks, report) = BlockStore::open(open_disk(dir)?, genesis.hash())?;
    log_report(&report);
    let (receipts, report) = ReceiptStore::open(open_disk(dir)?)?;
    log_report(&report);
    let mut receipts = receipts;
    if receipts.height() > blocks.height() {
        // The block log lost its last record(s) (torn or rotten tail); the
        // receipts of those blocks go with them and come back with the
        // blocks from a peer.
        tracing::warn!(
            receipts_height = receipts.height(),
            blocks_height = blocks.height(),
            "receipt log is ahead of the block log; cutting it back"
        );
        receipts = receipts.truncated(blocks.height())?.0;
    }
    let mut tx_index = HashMap::new();
    let Replayed {
        replay,
        receipts,
        touched,
        receipts_rebuilt,
    } = replay(genesis, &blocks, receipts, &mut tx_index)?;
    let stores = Stores {
        blocks,
        receipts,
        tx_index,
    };
    let mut keys: BTreeSet<PublicKey> = genesis.accounts.iter().map(|a| a.key).collect();
    keys.extend(touched);
    let accounts = keys
        .iter()
        .map(|k| (*k, account_info(replay.app(), k)))
        .collect();
    Ok(Recovered {
        lock,
        wal,
        stores,
        start: replay.finish(safety),
        accounts,
        receipts_rebuilt,
    })
}

struct Replayed {
    replay: Replay<LedgerApp>,
    receipts: ReceiptStore<FsDisk>,
    touched: BTreeSet<PublicKey>,
    receipts_rebuilt: u64,
}

/// Replays every stored block through a fresh ledger
/// ([`metanode_chain::node::Replay`]: certificates and roots checked);
/// rebuilds the tx index and re-derives receipts the receipt log is missing
/// (or holds for another block).
fn replay(
    genesis: &Genesis,
    blocks: &BlockStore<FsDisk>,
    mut receipts: ReceiptStore<FsDisk>,
    tx_index: &mut HashMap<Hash32, TxLocation>,
) -> Result<Replayed, StartError> {
    let mut replay = Replay::from_genesis(genesis, LedgerApp::from_genesis(genesis));
    let mut touched = BTreeSet::new();
    let mut rebuilt = 0u64;
    let top = blocks.height();
    for height in 1..=top {
        let fail = |reason: String| StartError::Replay { height, reason };
        let block = blocks
            .get(height)?
            .ok_or_else(|| fail(format!("missing below the tip {top}")))?;
        let block_receipts = replay
            .apply(&block, false)
            .map_err(|e| fail(e.to_string()))?;
        let hash = replay.tip().hash;
        if receipts.height() >= height && receipts.block_hash(height) != Some(hash) {
            tracing::warn!(
                height,
                "receipt log holds receipts of another block here; re-deriving from this height"
            );
            receipts = receipts.truncated(height - 1)?.0;
        }
        if receipts.height() < height {
            receipts.append(height, hash, &block_receipts)?;
            rebuilt += 1;
        }
        index_block(tx_index, height, block.block.txs.iter().map(SignedTx::hash));
        touched_accounts(&block, &mut touched);
    }
    Ok(Replayed {
        replay,
        receipts,
        touched,
        receipts_rebuilt: rebuilt,
    })
}
