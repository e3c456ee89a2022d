//! Receipt log: append, reopen, reads, height checks, torn tails, damage,
//! truncation and fsync failure.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use metanode_chain::types::Receipt;
use metanode_chain_store::{
    BlockReceipts, ChainDisk, FakeDisk, FsDisk, RECEIPTS_LOG_NAME, ReceiptStore, ReceiptStoreError,
};
use metanode_core::hash::{Hash32, blake3_256};

fn receipts(height: u64) -> Vec<Receipt> {
    (0..height % 4)
        .map(|i| Receipt {
            tx_hash: blake3_256(&[height as u8, i as u8]),
            status: (i % 2) as u32,
            fee_charged: height + i,
            output: vec![i as u8; i as usize * 3],
        })
        .collect()
}

fn block_hash(height: u64) -> Hash32 {
    blake3_256(&height.to_le_bytes())
}

fn fill<D: ChainDisk>(store: &mut ReceiptStore<D>, to: u64) {
    for h in store.height() + 1..=to {
        store.append(h, block_hash(h), &receipts(h)).unwrap();
    }
}

#[test]
fn append_reopen_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut store, report) = ReceiptStore::open(FsDisk::open(tmp.path()).unwrap()).unwrap();
    assert_eq!(report.records_count, 0);
    assert_eq!(store.height(), 0);
    assert_eq!(store.get(1).unwrap(), None);
    fill(&mut store, 7);
    assert_eq!(store.height(), 7);
    drop(store);

    let (store, report) = ReceiptStore::open(FsDisk::open(tmp.path()).unwrap()).unwrap();
    assert_eq!(report.records_count, 7);
    assert_eq!(report.torn_tail, None);
    assert_eq!(store.height(), 7);
    for h in 1..=7 {
        assert_eq!(
            store.get(h).unwrap().unwrap(),
            BlockReceipts {
                height: h,
                block_hash: block_hash(h),
                receipts: receipts(h),
            }
        );
        assert_eq!(store.block_hash(h), Some(block_hash(h)));
    }
    assert_eq!(store.get(0).unwrap(), None);
    assert_eq!(store.get(8).unwrap(), None);
    assert_eq!(store.block_hash(0), None);
    assert_eq!(store.block_hash(8), None);
}

#[test]
fn heights_must_follow_the_last_record() {
    let mut disk = FakeDisk::new();
    let (mut store, _) = ReceiptStore::open(&mut disk).unwrap();
    fill(&mut store, 2);
    for wrong in [0, 2, 4] {
        match store.append(wrong, block_hash(wrong), &[]) {
            Err(ReceiptStoreError::WrongHeight { expected, found }) => {
                assert_eq!((expected, found), (3, wrong));
            }
            other => panic!("height {wrong}: expected WrongHeight, got {other:?}"),
        }
    }
    assert_eq!(store.height(), 2);
}

#[test]
fn torn_tail_is_cut_and_reported() {
    let mut disk = FakeDisk::new();
    {
        let (mut store, _) = ReceiptStore::open(&mut disk).unwrap();
        fill(&mut store, 3);
    }
    let full_len = disk.size_bytes(RECEIPTS_LOG_NAME).unwrap().unwrap();
    // A fourth record whose write was cut short by a crash.
    disk.append(RECEIPTS_LOG_NAME, &[40, 0, 0, 0, 1, 2, 3, 4, 5])
        .unwrap();
    let (mut store, report) = ReceiptStore::open(&mut disk).unwrap();
    let torn = report.torn_tail.expect("torn tail reported");
    assert_eq!(torn.offset, full_len);
    assert_eq!(torn.discarded_bytes, 9);
    assert_eq!(store.height(), 3);
    fill(&mut store, 4);
    assert_eq!(store.get(4).unwrap().unwrap().receipts, receipts(4));
}

#[test]
fn damage_before_good_records_is_an_error_naming_the_height() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let (mut store, _) = ReceiptStore::open(FsDisk::open(tmp.path()).unwrap()).unwrap();
        fill(&mut store, 5);
    }
    let path = tmp.path().join(RECEIPTS_LOG_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // First record: 8-byte header, then the version byte; flip a byte of
    // its height field so the checksum fails with records after it.
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, 9).unwrap();
    file.write_all_at(&[byte[0] ^ 0xff], 9).unwrap();
    match ReceiptStore::open(FsDisk::open(tmp.path()).unwrap()) {
        Err(ReceiptStoreError::Corrupt { height, offset, .. }) => {
            assert_eq!((height, offset), (1, 0));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn truncated_cuts_durably_and_appends_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut store, _) = ReceiptStore::open(FsDisk::open(tmp.path()).unwrap()).unwrap();
    fill(&mut store, 6);
    let (store, report) = store.truncated(9).unwrap();
    assert_eq!((store.height(), report.records_count), (6, 6));
    let (mut store, report) = store.truncated(4).unwrap();
    assert_eq!((store.height(), report.records_count), (4, 4));
    assert_eq!(store.get(5).unwrap(), None);
    // Heights 5 and 6 again, for another block.
    let other = Hash32([7; 32]);
    store.append(5, other, &receipts(9)).unwrap();
    drop(store);
    let (store, _) = ReceiptStore::open(FsDisk::open(tmp.path()).unwrap()).unwrap();
    assert_eq!(store.height(), 5);
    assert_eq!(store.block_hash(5), Some(other));
    assert_eq!(store.get(5).unwrap().unwrap().receipts, receipts(9));
    assert_eq!(store.get(4).unwrap().unwrap().receipts, receipts(4));
    let (store, _) = store.truncated(0).unwrap();
    assert_eq!(store.height(), 0);
    assert_eq!(store.len_bytes(), 0);
}

#[test]
fn failed_fsync_poisons_until_reopen() {
    let mut disk = FakeDisk::new();
    let (mut store, _) = ReceiptStore::open(&mut disk).unwrap();
    fill(&mut store, 1);
    store.disk_mut().fail_next_sync(Some(RECEIPTS_LOG_NAME));
    let err = store.append(2, block_hash(2), &receipts(2)).unwrap_err();
    assert!(
        matches!(err, ReceiptStoreError::Io { op: "fsync", .. }),
        "{err}"
    );
    assert!(store.is_poisoned());
    let err = store.append(2, block_hash(2), &receipts(2)).unwrap_err();
    assert!(matches!(err, ReceiptStoreError::Poisoned { .. }), "{err}");
    assert_eq!(store.height(), 1);
    // Reads of acknowledged records still work.
    assert_eq!(store.get(1).unwrap().unwrap().receipts, receipts(1));
}
