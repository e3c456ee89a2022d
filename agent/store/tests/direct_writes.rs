//! Big group commits write their page-aligned middle with O_DIRECT and the
//! partial pages around it through the page cache. These tests mix such
//! batches with small buffered ones on both I/O paths, read everything
//! back at once and after a reopen, and kill a writing process to check
//! that every acknowledged block survives and verifies.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use bytes::Bytes;
use metanode_core::cid::{BlockKey, CODEC_RAW, ContentId, HashKind};
use metanode_store::{IoMode, Store, StoreOptions, VerifiedBlock};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn modes() -> Vec<IoMode> {
    let mut m = vec![IoMode::Posix];
    if metanode_sys::UringIo::probe().is_ok() {
        m.push(IoMode::IoUring);
    }
    m
}

fn opts(dir: &Path, io: IoMode) -> StoreOptions {
    let mut o = StoreOptions::new(dir);
    o.io = io;
    o
}

/// `count` raw sha2-256 blocks of `len` bytes each (random, so distinct).
fn blocks(rng: &mut StdRng, count: usize, len: usize) -> Vec<VerifiedBlock> {
    (0..count)
        .map(|_| {
            let mut data = vec![0u8; len];
            rng.fill(&mut data[..]);
            VerifiedBlock::hash(CODEC_RAW, HashKind::Sha2_256, Bytes::from(data))
        })
        .collect()
}

fn put_all(store: &Store, batch: &[VerifiedBlock]) {
    let outcomes = store
        .put_verified_queued(batch, false)
        .expect("queue")
        .wait()
        .expect("durable");
    assert_eq!(outcomes.len(), batch.len());
    assert!(outcomes.iter().all(|o| !o.existed));
}

fn check_all(store: &Store, all: &[VerifiedBlock]) {
    for b in all {
        let got = store.get(b.cid()).expect("stored block reads");
        assert_eq!(&got[..], &b.data()[..], "block {}", b.cid());
    }
}

#[test]
fn big_and_small_batches_interleave_and_read_back() {
    for mode in modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(opts(dir.path(), mode)).unwrap();
        let mut rng = StdRng::seed_from_u64(11);
        let mut all = Vec::new();
        // Odd sizes move the tail off page boundaries between big batches.
        // A block of almost 2 MiB is a batch whose middle goes direct even
        // when the writer takes it alone; 256 KiB ones may or may not share
        // a batch, depending on how the writer thread catches them.
        for round in 0..4 {
            let small = blocks(&mut rng, 3, 100 + round * 37);
            put_all(&store, &small);
            let mut big = blocks(&mut rng, 2, 2_000_000 + round * 7);
            big.extend(blocks(&mut rng, 5, 256 * 1024 + 1 + round));
            put_all(&store, &big);
            // Readable right after the ack, through the page cache fd.
            check_all(&store, &big);
            all.extend(small);
            all.extend(big);
        }
        let direct = store.stats().direct_write_bytes_total;
        let pages = metanode_store::limits::DIRECT_IO_ALIGN_BYTES;
        assert!(
            direct >= 4 * 2 * (2_000_000 - 2 * pages),
            "{mode:?}: only {direct} bytes went direct"
        );
        check_all(&store, &all);
        store.close().unwrap();

        let store = Store::open(opts(dir.path(), mode)).unwrap();
        assert_eq!(store.open_report().torn_tail_bytes_truncated, 0);
        assert_eq!(store.list().len(), all.len());
        check_all(&store, &all);
        let report = store.verify(&|_| {}).unwrap();
        assert!(report.damaged.is_empty(), "{:?}", report.damaged);
        assert_eq!(store.stats().verify_failures_total, 0);
    }
}

/// Child side of `acknowledged_blocks_survive_a_killed_writer`: when
/// `MN_DIRECT_CRASH_DIR` is set, write batches to the store there, print
/// each acknowledged CID, then queue one more batch and die without
/// waiting for it or closing the store.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os("MN_DIRECT_CRASH_DIR") else {
        return;
    };
    let store = Store::open(opts(Path::new(&dir), IoMode::Auto)).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let mut out = std::io::stdout().lock();
    for round in 0..6 {
        let batch = blocks(&mut rng, 12, 256 * 1024 + round * 61);
        put_all(&store, &batch);
        for b in &batch {
            writeln!(out, "acked {}", b.cid()).unwrap();
        }
    }
    out.flush().unwrap();
    let last = blocks(&mut rng, 24, 256 * 1024);
    let pending = store.put_verified_queued(&last, false).unwrap();
    std::mem::forget(pending);
    // No destructor, no flush: as close to a crash as a process gets.
    std::process::abort();
}

#[test]
fn acknowledged_blocks_survive_a_killed_writer() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("MN_DIRECT_CRASH_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(!child.status.success(), "the child must die, not finish");
    let acked: Vec<ContentId> = child
        .stdout
        .lines()
        .map_while(Result::ok)
        // libtest prints "test crash_child ... " in front of the first line.
        .filter_map(|l| {
            l.split_once("acked ")
                .map(|(_, c)| c.trim().parse().unwrap())
        })
        .collect();
    assert_eq!(acked.len(), 6 * 12);

    let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
    for cid in &acked {
        let data = store.get(cid).expect("acknowledged block is there");
        let key = BlockKey {
            kind: HashKind::Sha2_256,
            digest: HashKind::Sha2_256.digest(&data),
        };
        assert_eq!(cid.key(), key);
    }
    // Whatever of the unacknowledged batch made it is whole or cut off.
    let report = store.verify(&|_| {}).unwrap();
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert!(store.list().len() >= acked.len());
    assert!(store.list().len() <= acked.len() + 24);
}

/// A burst bigger than one batch, queued at once (so the writer may write
/// several batches before one sync), hits a full disk half-way: every
/// block is either acknowledged and durable or refused and absent, and
/// the store goes on where it was.
#[test]
fn full_disk_in_a_burst_acknowledges_only_what_is_durable() {
    use metanode_store::PutError;
    use metanode_sys::{FaultPlan, FaultyIo, FileIo, PosixIo};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let faulty = FaultyIo::new(Arc::new(PosixIo));
    let mut o = opts(dir.path(), IoMode::Posix);
    o.io_override = Some(Arc::new(faulty.clone()) as Arc<dyn FileIo>);
    let store = Store::open(o).unwrap();
    let mut rng = StdRng::seed_from_u64(21);
    let burst = blocks(&mut rng, 96, 256 * 1024 + 3);
    faulty.set_plan(FaultPlan {
        write_bytes_left: Some(13 << 20),
        ..Default::default()
    });
    // One queued put per block, all queued before the first wait.
    let pending: Vec<_> = burst
        .iter()
        .map(|b| {
            store
                .put_verified_queued(std::slice::from_ref(b), false)
                .unwrap()
        })
        .collect();
    let mut acked = Vec::new();
    let mut refused = 0;
    for (b, p) in burst.iter().zip(pending) {
        match p.wait() {
            Ok(_) => acked.push(b.clone()),
            Err(PutError::NoSpace(_)) => refused += 1,
            Err(e) => panic!("unexpected error for {}: {e}", b.cid()),
        }
    }
    assert!(refused > 0, "the disk filled up half-way");
    assert!(acked.len() * (256 * 1024) < 13 << 20);
    faulty.set_plan(FaultPlan::default());
    // Refused blocks are not half there: they can be stored again.
    let again: Vec<_> = burst
        .iter()
        .filter(|b| !acked.contains(b))
        .cloned()
        .collect();
    put_all(&store, &again);
    store.close().unwrap();

    let store = Store::open(opts(dir.path(), IoMode::Posix)).unwrap();
    assert_eq!(store.open_report().torn_tail_bytes_truncated, 0);
    assert_eq!(store.list().len(), burst.len());
    check_all(&store, &burst);
    assert!(store.verify(&|_| {}).unwrap().damaged.is_empty());
}
