//! Safety WAL: durability on real files and under simulated power loss.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

use metanode_chain_store::{ChainDisk, FakeDisk, FsDisk, SafetyWal, SplitMix64, WalError};
use metanode_core::encoding::{Decode, DecodeError, Encode, Reader, Writer, decode_version};
use metanode_core::limits::CHAIN_WAL_COMPACT_BYTES;

const WAL: &str = "safety.wal";

/// A stand-in for `qbft::SafetyState`: versioned, with a variable-length part.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Vote {
    height: u64,
    round: u32,
    memo: Vec<u8>,
}

impl Encode for Vote {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(1);
        w.put_u64(self.height);
        w.put_u32(self.round);
        w.put_bytes(&self.memo);
    }
}

impl Decode for Vote {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, &[1])?;
        Ok(Vote {
            height: r.read_u64()?,
            round: r.read_u32()?,
            memo: r.read_bytes()?.to_vec(),
        })
    }
}

fn vote(i: u64, memo_len: usize) -> Vote {
    Vote {
        height: 100 + i,
        round: (i % 7) as u32,
        memo: vec![i as u8; memo_len],
    }
}

/// Framed size of `vote(_, memo_len)`: 8 header + 1 version + 8 + 4 + 4 + memo.
fn record_len(memo_len: usize) -> u64 {
    8 + 1 + 8 + 4 + 4 + memo_len as u64
}

type Wal<D> = SafetyWal<D, Vote>;

#[test]
fn fs_persist_then_reopen_returns_latest() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut wal, state, report) = Wal::open(FsDisk::open(tmp.path()).unwrap(), WAL).unwrap();
    assert_eq!(state, None);
    assert_eq!(report.file_len_bytes, 0);
    for i in 0..3 {
        wal.persist(&vote(i, 10)).unwrap();
    }
    assert_eq!(wal.len_bytes(), 3 * record_len(10));
    drop(wal);
    let (wal, state, report) = Wal::open(FsDisk::open(tmp.path()).unwrap(), WAL).unwrap();
    assert_eq!(state, Some(vote(2, 10)));
    assert_eq!(report.records_count, 3);
    assert_eq!(report.file_len_bytes, 3 * record_len(10));
    assert_eq!(report.torn_tail, None);
    assert_eq!(wal.len_bytes(), 3 * record_len(10));
}

#[test]
fn fs_torn_tail_is_cut_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut wal, _, _) = Wal::open(FsDisk::open(tmp.path()).unwrap(), WAL).unwrap();
    wal.persist(&vote(1, 5)).unwrap();
    wal.persist(&vote(2, 5)).unwrap();
    drop(wal);
    // By hand: the first 20 bytes of a record that was being written when
    // the power went.
    let full = record_len(5) * 2;
    let next = vote(3, 5).to_canonical_bytes().unwrap();
    let mut frame = (next.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32c::crc32c(&next).to_le_bytes());
    frame.extend_from_slice(&next);
    let path = tmp.path().join(WAL);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(&frame[..20])
        .unwrap();
    let (mut wal, state, report) = Wal::open(FsDisk::open(tmp.path()).unwrap(), WAL).unwrap();
    assert_eq!(state, Some(vote(2, 5)));
    assert_eq!(report.file_len_bytes, full + 20);
    let torn = report.torn_tail.unwrap();
    assert_eq!(torn.offset, full);
    assert_eq!(torn.discarded_bytes, 20);
    assert_eq!(
        torn.reason,
        format!(
            "record of {} payload bytes is incomplete: 20 bytes left including the header",
            next.len()
        )
    );
    assert_eq!(fs::metadata(&path).unwrap().len(), full);
    // Appending after the cut works, and the next open sees no damage.
    wal.persist(&vote(4, 5)).unwrap();
    drop(wal);
    let (_, state, report) = Wal::open(FsDisk::open(tmp.path()).unwrap(), WAL).unwrap();
    assert_eq!(state, Some(vote(4, 5)));
    assert_eq!(report.records_count, 3);
    assert_eq!(report.torn_tail, None);
}

#[test]
fn fs_mid_file_corruption_is_an_error_naming_the_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut wal, _, _) = Wal::open(FsDisk::open(tmp.path()).unwrap(), WAL).unwrap();
    for i in 0..3 {
        wal.persist(&vote(i, 16)).unwrap();
    }
    drop(wal);
    let path = tmp.path().join(WAL);
    let before = fs::read(&path).unwrap();
    // Flip one payload byte of the second record.
    let second = record_len(16);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[before[second as usize + 12] ^ 0x40], second + 12)
        .unwrap();
    let err = Wal::open(FsDisk::open(tmp.path()).unwrap(), WAL).unwrap_err();
    match &err {
        WalError::Corrupt { name, offset, .. } => {
            assert_eq!(name, WAL);
            assert_eq!(*offset, second);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "wal safety.wal is corrupt at offset {second}: checksum mismatch"
        )),
        "{msg}"
    );
    assert!(
        msg.ends_with(&format!(
            "followed by {} more bytes (a torn write is only ever the last record)",
            record_len(16)
        )),
        "{msg}"
    );
    // Nothing was cut: the acknowledged third record is still there.
    assert_eq!(fs::metadata(&path).unwrap().len(), before.len() as u64);
}

#[test]
fn fs_compaction_keeps_only_the_latest() {
    let tmp = tempfile::tempdir().unwrap();
    let memo_len = 512 * 1024;
    let per = record_len(memo_len);
    let fit = CHAIN_WAL_COMPACT_BYTES / per;
    let (mut wal, _, _) = Wal::open(FsDisk::open(tmp.path()).unwrap(), WAL).unwrap();
    for i in 0..fit {
        wal.persist(&vote(i, memo_len)).unwrap();
    }
    assert_eq!(wal.compactions_count(), 0);
    assert_eq!(wal.len_bytes(), fit * per);
    // The next record would pass the bound: the file restarts from it.
    wal.persist(&vote(fit, memo_len)).unwrap();
    assert_eq!(wal.compactions_count(), 1);
    assert_eq!(wal.len_bytes(), per);
    assert_eq!(fs::metadata(tmp.path().join(WAL)).unwrap().len(), per);
    wal.persist(&vote(fit + 1, memo_len)).unwrap();
    assert_eq!(wal.len_bytes(), 2 * per);
    drop(wal);
    let (_, state, report) = Wal::open(FsDisk::open(tmp.path()).unwrap(), WAL).unwrap();
    assert_eq!(state, Some(vote(fit + 1, memo_len)));
    assert_eq!(report.records_count, 2);
}

/// The core property: crash anywhere, and the reopened WAL holds the last
/// acknowledged state — or the one whose persist was cut short, whose bytes
/// may all have reached the disk (it was never acknowledged, so recovering
/// it is allowed: the engine had not yet sent the vote it protects).
/// Nothing else, never an older state, never garbage.
#[test]
fn fake_crash_recovers_the_last_acknowledged_state_across_500_seeds() {
    let mut recovered_acked = 0;
    let mut recovered_in_flight = 0;
    let mut torn_tails = 0;
    let mut compactions = 0;
    for seed in 0..500u64 {
        let mut rng = SplitMix64::new(seed);
        let count = 1 + rng.up_to(20);
        // A quarter of the seeds use 1 MiB records so compaction (replace)
        // happens and can be interrupted too.
        let memo_len = if rng.up_to(3) == 0 {
            1 << 20
        } else {
            rng.up_to(300) as usize
        };
        let mut disk = FakeDisk::new();
        // Each persist is two operations (append, fsync) or one (replace).
        disk.power_off_after(rng.up_to(2 * count));
        let (mut wal, state, _) = Wal::open(disk, WAL).unwrap();
        assert_eq!(state, None);
        let mut acked = None;
        let mut in_flight = None;
        for i in 0..count {
            let v = vote(i, memo_len);
            match wal.persist(&v) {
                Ok(()) => acked = Some(v),
                Err(e) => {
                    assert!(matches!(e, WalError::Io { .. }), "seed {seed}: {e}");
                    in_flight = Some(v);
                    break;
                }
            }
        }
        compactions += wal.compactions_count();
        let mut disk = wal.into_disk();
        disk.crash(seed);
        let (mut wal, state, report) =
            Wal::open(disk, WAL).unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
        if report.torn_tail.is_some() {
            torn_tails += 1;
        }
        if state == acked {
            recovered_acked += 1;
        } else {
            assert!(
                in_flight.is_some() && state == in_flight,
                "seed {seed}: recovered {:?}, last acknowledged {:?}",
                state.as_ref().map(|v| v.height),
                acked.as_ref().map(|v| v.height)
            );
            recovered_in_flight += 1;
        }
        // Life goes on after recovery.
        let after = vote(1000, 3);
        wal.persist(&after).unwrap();
        let (_, state, report) = Wal::open(wal.into_disk(), WAL).unwrap();
        assert_eq!(state, Some(after), "seed {seed}");
        assert_eq!(report.torn_tail, None, "seed {seed}");
    }
    eprintln!(
        "acked {recovered_acked} in-flight {recovered_in_flight} torn {torn_tails} compactions {compactions}"
    );
    assert_eq!(recovered_acked + recovered_in_flight, 500);
    // Every kind of outcome was exercised.
    assert!(recovered_acked > 100, "{recovered_acked}");
    assert!(recovered_in_flight > 10, "{recovered_in_flight}");
    assert!(torn_tails > 10, "{torn_tails}");
    assert!(compactions > 10, "{compactions}");
}

#[test]
fn fake_sync_failure_poisons_until_restart() {
    let (mut wal, _, _) = Wal::open(FakeDisk::new(), WAL).unwrap();
    wal.persist(&vote(1, 8)).unwrap();
    wal.disk_mut().fail_next_sync(Some(WAL));
    let err = wal.persist(&vote(2, 8)).unwrap_err();
    assert!(
        matches!(&err, WalError::Io { op: "fsync", offset, .. } if *offset == record_len(8)),
        "{err:?}"
    );
    assert!(wal.is_poisoned());
    // The disk would now report success for a retried fsync (fsyncgate);
    // the WAL must not believe it.
    let err = wal.persist(&vote(3, 8)).unwrap_err();
    match &err {
        WalError::Poisoned { name, cause } => {
            assert_eq!(name, WAL);
            assert_eq!(
                cause,
                &format!(
                    "fsync at offset {} failed: injected fsync failure (EIO) on {WAL}",
                    record_len(8)
                )
            );
        }
        other => panic!("expected poisoned, got {other:?}"),
    }
    assert_eq!(wal.disk().stats().sync_failures_count, 1);
    // After the restart either state is acceptable: the failed one was never
    // acknowledged, its bytes may or may not have reached the disk.
    let disk = wal.into_disk();
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let mut d = disk.clone();
        d.crash(seed);
        let (mut wal, state, _) = Wal::open(d, WAL).unwrap();
        let height = state.unwrap().height;
        assert!(height == 101 || height == 102, "seed {seed}: {height}");
        seen.insert(height);
        wal.persist(&vote(9, 8)).unwrap();
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![101, 102]);
}

#[test]
fn fake_failed_compaction_poisons_and_recovers_old_or_new() {
    let memo_len = 3 << 20;
    let (mut wal, _, _) = Wal::open(FakeDisk::new(), WAL).unwrap();
    wal.persist(&vote(1, memo_len)).unwrap();
    wal.persist(&vote(2, memo_len)).unwrap();
    wal.disk_mut().fail_next_sync(Some(WAL));
    // The third record passes the bound, so this is a replace, and it fails.
    let err = wal.persist(&vote(3, memo_len)).unwrap_err();
    assert!(matches!(err, WalError::Io { op: "replace", .. }), "{err:?}");
    assert!(matches!(
        wal.persist(&vote(4, 1)),
        Err(WalError::Poisoned { .. })
    ));
    let disk = wal.into_disk();
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..32 {
        let mut d = disk.clone();
        d.crash(seed);
        let (_, state, _) = Wal::open(d, WAL).unwrap();
        seen.insert(state.unwrap().height);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![102, 103]);
}

#[test]
fn fake_bit_rot_before_a_valid_record_is_an_error() {
    let (mut wal, _, _) = Wal::open(FakeDisk::new(), WAL).unwrap();
    for i in 0..3 {
        wal.persist(&vote(i, 4)).unwrap();
    }
    let mut disk = wal.into_disk();
    let mut rotten = disk.clone();
    assert!(rotten.corrupt(WAL, 10));
    let err = Wal::open(rotten, WAL).unwrap_err();
    assert!(
        matches!(err, WalError::Corrupt { offset: 0, .. }),
        "{err:?}"
    );
    // A flipped length byte: the scan finds the valid records after it.
    let mut rotten = disk.clone();
    assert!(rotten.corrupt(WAL, record_len(4) + 3));
    match Wal::open(rotten, WAL).unwrap_err() {
        WalError::Corrupt { offset, reason, .. } => {
            assert_eq!(offset, record_len(4));
            assert!(
                reason.ends_with(&format!(
                    "a valid record follows at offset {}",
                    2 * record_len(4)
                )),
                "{reason}"
            );
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // Rot in the last record looks exactly like a torn write: it is cut and
    // reported, and the previous state comes back (documented limitation).
    assert!(disk.corrupt(WAL, 2 * record_len(4) + 10));
    let (_, state, report) = Wal::open(&mut disk, WAL).unwrap();
    assert_eq!(state, Some(vote(1, 4)));
    assert_eq!(report.torn_tail.unwrap().offset, 2 * record_len(4));
    assert_eq!(disk.size_bytes(WAL).unwrap(), Some(2 * record_len(4)));
}

#[test]
fn records_out_of_bounds_are_refused_without_poisoning() {
    #[derive(Debug)]
    struct Nothing;
    impl Encode for Nothing {
        fn encode(&self, _: &mut Writer) {}
    }
    impl Decode for Nothing {
        fn decode(_: &mut Reader<'_>) -> Result<Self, DecodeError> {
            Ok(Nothing)
        }
    }
    let (mut wal, _, _) = SafetyWal::<_, Nothing>::open(FakeDisk::new(), WAL).unwrap();
    let err = wal.persist(&Nothing).unwrap_err();
    assert_eq!(
        err.to_string(),
        "wal safety.wal: record of 0 bytes is outside 1..=37748736"
    );
    assert!(!wal.is_poisoned());
}

#[test]
fn a_last_record_that_does_not_decode_is_an_error() {
    let mut disk = FakeDisk::new();
    {
        let (mut wal, _, _) = Wal::open(&mut disk, WAL).unwrap();
        wal.persist(&vote(1, 4)).unwrap();
    }
    // A valid frame around a payload of an unknown version.
    let mut payload = vote(2, 4).to_canonical_bytes().unwrap();
    payload[0] = 9;
    let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    disk.append(WAL, &frame).unwrap();
    disk.sync(WAL).unwrap();
    let err = Wal::open(disk, WAL).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "wal safety.wal: record at offset {} does not decode: unknown version 9 at offset 0 (supported: [1])",
            record_len(4)
        )
    );
}
