//! Store behaviour through the public API, on real files, with both I/O
//! implementations and with injected faults.

use std::sync::Arc;

use metanode_core::cid::ContentId;
use metanode_store::{
    Compression, GetError, IoMode, OpenError, PutError, StorageKind, Store, StoreOptions,
};
use metanode_sys::{FaultPlan, FaultyIo, FileIo, PosixIo};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn blob(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

fn opts(dir: &std::path::Path, io: IoMode) -> StoreOptions {
    let mut o = StoreOptions::new(dir);
    o.io = io;
    o
}

fn modes() -> Vec<IoMode> {
    let mut m = vec![IoMode::Posix];
    if metanode_sys::UringIo::probe().is_ok() {
        m.push(IoMode::IoUring);
    }
    m
}

#[test]
fn put_get_small_and_large_both_io_paths() {
    for mode in modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(opts(dir.path(), mode)).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let mut stored = vec![];
        for len in [0usize, 1, 1024, 4096, 256 * 1024, 256 * 1024 + 1, 3 << 20] {
            let data = blob(&mut rng, len);
            let out = store.put(&data, true).unwrap();
            assert_eq!(out.cid, ContentId::raw_blake3_of(&data));
            assert!(!out.existed);
            assert_eq!(out.size_bytes, len as u64);
            assert_eq!(store.get(&out.cid).unwrap(), data);
            let again = store.put(&data, true).unwrap();
            assert!(again.existed);
            let st = store.stat(&out.cid).unwrap().unwrap();
            let kind = if len > 256 * 1024 {
                StorageKind::External
            } else {
                StorageKind::Inline
            };
            assert_eq!(st.storage, kind, "len {len}");
            stored.push((out.cid, data));
        }
        drop(store);
        let store = Store::open(opts(dir.path(), mode)).unwrap();
        for (cid, data) in &stored {
            assert_eq!(&store.get(cid).unwrap(), data, "{mode:?} after reopen");
        }
        assert_eq!(store.stats().blobs_count, stored.len() as u64);
    }
}

#[test]
fn ranges_of_large_and_small_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    let big = blob(&mut rng, (5 << 20) + 77);
    let small = blob(&mut rng, 5000);
    let b = store.put(&big, true).unwrap().cid;
    let s = store.put(&small, true).unwrap().cid;
    for (off, len) in [
        (0u64, 1u64),
        (12_345, 70_000),
        (big.len() as u64 - 1, 1),
        (0, big.len() as u64),
    ] {
        assert_eq!(
            store.read_range(&b, off, len).unwrap(),
            &big[off as usize..(off + len) as usize]
        );
    }
    assert_eq!(store.read_range(&s, 10, 20).unwrap(), &small[10..30]);
    assert!(matches!(
        store.read_range(&s, 4990, 11),
        Err(GetError::BadRange { .. })
    ));
    assert!(matches!(
        store.read_range(&b, u64::MAX, 2),
        Err(GetError::BadRange { .. })
    ));
}

#[test]
fn streaming_writer_matches_put() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let data = blob(&mut rng, 9 << 20);
    let mut w = store.writer(true).unwrap();
    for piece in data.chunks(100_003) {
        std::io::Write::write_all(&mut w, piece).unwrap();
    }
    let out = w.finish().unwrap();
    assert_eq!(out.cid, ContentId::raw_blake3_of(&data));
    assert_eq!(store.get(&out.cid).unwrap(), data);
    // A small blob through the writer is packed.
    let mut w = store.writer(true).unwrap();
    std::io::Write::write_all(&mut w, b"tiny").unwrap();
    let tiny = w.finish().unwrap();
    assert_eq!(
        store.stat(&tiny.cid).unwrap().unwrap().storage,
        StorageKind::Inline
    );
    // An abandoned writer leaves nothing behind.
    let mut w = store.writer(true).unwrap();
    std::io::Write::write_all(&mut w, &data).unwrap();
    drop(w);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn zstd_at_rest_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path(), IoMode::Auto);
    o.compression = Compression::Zstd { level: 3 };
    let store = Store::open(o.clone()).unwrap();
    let text = "metanode ".repeat(5000).into_bytes();
    let out = store.put(&text, true).unwrap();
    assert!(store.stat(&out.cid).unwrap().unwrap().compressed);
    drop(store);
    let store = Store::open(o).unwrap();
    assert_eq!(store.get(&out.cid).unwrap(), text);
}

#[test]
fn concurrent_puts_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(100 + t);
                (0..200)
                    .map(|_| {
                        let d = blob(&mut rng, 1024);
                        (store.put(&d, true).unwrap().cid, d)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let all: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let stats = store.stats();
    assert_eq!(stats.puts_total, 3200);
    // Group commit: with 16 writers, flushes carry more than one put.
    assert!(
        stats.put_batches_total < stats.puts_total,
        "{} batches for {} puts",
        stats.put_batches_total,
        stats.puts_total
    );
    for (cid, d) in all {
        assert_eq!(store.get(&cid).unwrap(), d);
    }
}

#[test]
fn remove_pin_gc_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path(), IoMode::Auto);
    // Small segments so compaction has sealed segments to work on.
    o.segment_size_bytes_max = 1 << 20;
    o.group_commit_batch_bytes_max = 512 * 1024;
    let store = Store::open(o.clone()).unwrap();
    let mut rng = StdRng::seed_from_u64(4);
    let mut keep = vec![];
    let mut drop_ = vec![];
    for i in 0..400 {
        let d = blob(&mut rng, 8 * 1024);
        let pinned = i % 2 == 0;
        let cid = store.put(&d, pinned).unwrap().cid;
        if pinned {
            keep.push((cid, d));
        } else {
            drop_.push(cid);
        }
    }
    let big = blob(&mut rng, 2 << 20);
    let big_cid = store.put(&big, false).unwrap().cid;
    // rm refuses pinned blobs, removes unpinned ones.
    assert!(store.remove(&keep[0].0).is_err());
    assert!(store.remove(&drop_[0]).unwrap());
    assert!(!store.remove(&drop_[0]).unwrap());
    assert!(matches!(store.get(&drop_[0]), Err(GetError::NotFound(_))));
    // Pin one unpinned blob: GC must keep it.
    store.set_pinned(&drop_[1], true).unwrap();
    let segments_before = store.stats().segments_count;
    let report = store.gc(&|_| {}).unwrap();
    assert_eq!(report.blobs_removed, drop_.len() as u64 - 2 + 1); // + the big one
    assert!(
        report.segments_compacted > 0,
        "{report:?} of {segments_before}"
    );
    assert!(report.bytes_reclaimed > 0);
    assert!(matches!(store.get(&big_cid), Err(GetError::NotFound(_))));
    assert!(!dir.path().join("blobs").read_dir().unwrap().any(|_| true));
    store.get(&drop_[1]).unwrap();
    for (cid, d) in &keep {
        assert_eq!(&store.get(cid).unwrap(), d);
    }
    drop(store);
    // Reopen: deletions stayed deleted (tombstones carried), pins stayed.
    let store = Store::open(o).unwrap();
    for cid in &drop_[2..] {
        assert!(!store.contains(cid), "{cid} came back after gc + reopen");
    }
    assert!(store.stat(&drop_[1]).unwrap().unwrap().pinned);
    for (cid, d) in &keep {
        assert_eq!(&store.get(cid).unwrap(), d);
    }
    assert!(store.verify(&|_| {}).unwrap().damaged.is_empty());
}

#[test]
fn gc_runs_beside_puts_and_gets() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path(), IoMode::Auto);
    o.segment_size_bytes_max = 1 << 20;
    o.group_commit_batch_bytes_max = 512 * 1024;
    let store = Store::open(o).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let mut pinned = vec![];
    for i in 0..600 {
        let d = blob(&mut rng, 4096);
        let cid = store.put(&d, i % 3 == 0).unwrap().cid;
        if i % 3 == 0 {
            pinned.push((cid, d));
        }
    }
    let pinned = Arc::new(pinned);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..3u64)
        .map(|t| {
            let (store, pinned, stop) = (store.clone(), pinned.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(50 + t);
                let mut mine = vec![];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let d = blob(&mut rng, 2048);
                    mine.push((store.put(&d, true).unwrap().cid, d));
                    let (cid, d) = &pinned[rng.random_range(0..pinned.len())];
                    assert_eq!(&store.get(cid).unwrap(), d);
                }
                mine
            })
        })
        .collect();
    let report = store.gc(&|_| {}).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert_eq!(report.blobs_removed, 400);
    for (cid, d) in written.iter().chain(pinned.iter()) {
        assert_eq!(&store.get(cid).unwrap(), d);
    }
}

fn flip_byte(path: &std::path::Path, at_from_end: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = f.metadata().unwrap().len();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, len - at_from_end).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, len - at_from_end).unwrap();
}

fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn corruption_is_reported_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(6);
    let small = blob(&mut rng, 3000);
    let other = blob(&mut rng, 3000);
    let big = blob(&mut rng, 1 << 20);
    let (s, o, b) = {
        let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
        let s = store.put(&small, true).unwrap().cid;
        let o = store.put(&other, true).unwrap().cid;
        let b = store.put(&big, true).unwrap().cid;
        (s, o, b)
    };
    // Damage the payload of the first small blob (record header 60 bytes +
    // segment header 24 bytes precede it) and one byte of the big blob.
    {
        use std::os::unix::fs::FileExt;
        let seg = &segment_files(dir.path())[0];
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(seg)
            .unwrap();
        f.write_all_at(b"X", 24 + 60 + 100).unwrap();
    }
    let data_file = std::fs::read_dir(dir.path().join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().unwrap() == "data")
        .unwrap();
    flip_byte(&data_file, 5000);
    let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
    assert!(matches!(store.get(&s), Err(GetError::Corrupt { .. })));
    assert_eq!(store.get(&o).unwrap(), other, "neighbour stays readable");
    assert!(matches!(store.get(&b), Err(GetError::Corrupt { .. })));
    // A range far from the damage still verifies.
    assert_eq!(store.read_range(&b, 0, 1000).unwrap(), &big[..1000]);
    let report = store.verify(&|_| {}).unwrap();
    let damaged: Vec<_> = report.damaged.iter().filter_map(|d| d.cid).collect();
    assert!(damaged.contains(&s) && damaged.contains(&b), "{report:?}");
    assert!(!damaged.contains(&o));
    assert!(store.stats().verify_failures_total >= 2);
    // Putting the same bytes again repairs a damaged packed blob (it is not
    // answered "existed").
    let again = store.put(&small, true).unwrap();
    assert!(!again.existed);
    assert_eq!(store.get(&s).unwrap(), small);
}

#[test]
fn torn_tail_is_cut_and_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let data: Vec<_> = (0..50).map(|_| blob(&mut rng, 1000)).collect();
    {
        let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
        for d in &data {
            store.put(d, true).unwrap();
        }
    }
    // Simulate a crash mid-write: half a record at the end.
    let seg = segment_files(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
        let mut partial = vec![];
        metanode_store::record::encode_record(
            &mut partial,
            &metanode_store::record::RecordHeader {
                kind: metanode_store::record::RecordKind::Inline,
                flags: 0,
                key: metanode_core::cid::BlockKey::blake3([1; 32]),
                codec: 0x55,
                size_bytes: 500,
                payload_len: 500,
            },
            &[7u8; 500],
        );
        f.write_all(&partial[..300]).unwrap();
    }
    let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
    assert_eq!(store.open_report().torn_tail_bytes_truncated, 300);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
    for d in &data {
        assert_eq!(&store.get(&ContentId::raw_blake3_of(d)).unwrap(), d);
    }
    // And it keeps accepting writes after the cut.
    let more = blob(&mut rng, 1000);
    let cid = store.put(&more, true).unwrap().cid;
    drop(store);
    let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
    assert_eq!(store.get(&cid).unwrap(), more);
    assert!(store.verify(&|_| {}).unwrap().damaged.is_empty());
}

#[test]
fn garbage_with_absurd_lengths_is_skipped_not_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(12);
    let before: Vec<_> = (0..20).map(|_| blob(&mut rng, 700)).collect();
    let after: Vec<_> = (0..20).map(|_| blob(&mut rng, 700)).collect();
    {
        let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
        for d in &before {
            store.put(d, true).unwrap();
        }
    }
    // A fake header claiming a 4 GiB payload, then more valid records: the
    // scan must neither try to read 4 GiB nor lose what follows.
    let seg = segment_files(dir.path()).pop().unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
        let mut junk = vec![];
        junk.extend_from_slice(b"MNRB");
        junk.extend_from_slice(&[0u8; 4]);
        junk.extend_from_slice(&[1, 0, 1, 0]);
        junk.extend_from_slice(&0x55u32.to_le_bytes());
        junk.extend_from_slice(&u64::MAX.to_le_bytes());
        junk.extend_from_slice(&u32::MAX.to_le_bytes());
        junk.extend_from_slice(&[9u8; 32]);
        junk.extend_from_slice(&[0xAB; 100]);
        f.write_all(&junk).unwrap();
    }
    {
        let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
        // The junk was the torn tail of the last segment: cut.
        assert_eq!(store.open_report().torn_tail_bytes_truncated, 160);
        for d in &after {
            store.put(d, true).unwrap();
        }
    }
    // Now put the junk in the middle of the log (flip bytes of a record
    // header in place): records after it are found again by resync.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&seg)
            .unwrap();
        f.write_all_at(&u32::MAX.to_le_bytes(), 24 + 24).unwrap();
    }
    let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
    assert!(!store.open_report().damaged_regions.is_empty());
    for d in before[1..].iter().chain(&after) {
        assert_eq!(&store.get(&ContentId::raw_blake3_of(d)).unwrap(), d);
    }
    let report = store.verify(&|_| {}).unwrap();
    assert!(!report.damaged.is_empty());
}

fn faulty_store(dir: &std::path::Path) -> (Store, FaultyIo) {
    let faulty = FaultyIo::new(Arc::new(PosixIo));
    let mut o = opts(dir, IoMode::Posix);
    o.io_override = Some(Arc::new(faulty.clone()) as Arc<dyn FileIo>);
    (Store::open(o).unwrap(), faulty)
}

#[test]
fn enospc_fails_clearly_and_keeps_the_store_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(8);
    let (store, faulty) = faulty_store(dir.path());
    let before: Vec<_> = (0..20).map(|_| blob(&mut rng, 2000)).collect();
    for d in &before {
        store.put(d, true).unwrap();
    }
    faulty.set_plan(FaultPlan {
        write_bytes_left: Some(3000),
        ..Default::default()
    });
    let a = blob(&mut rng, 2000);
    let b = blob(&mut rng, 2000);
    let first = store.put(&a, true);
    let second = store.put(&b, true);
    let failed: Vec<_> = [first, second]
        .into_iter()
        .filter_map(|r| r.err())
        .collect();
    assert!(!failed.is_empty());
    for e in &failed {
        assert!(matches!(e, PutError::NoSpace(_)), "{e}");
        assert!(e.to_string().contains("out of space"), "{e}");
    }
    // Space comes back: the store continues where it was.
    faulty.set_plan(FaultPlan::default());
    let c = blob(&mut rng, 2000);
    let c_cid = store.put(&c, true).unwrap().cid;
    drop(store);
    let store = Store::open(opts(dir.path(), IoMode::Posix)).unwrap();
    assert_eq!(store.open_report().torn_tail_bytes_truncated, 0);
    for d in &before {
        assert_eq!(&store.get(&ContentId::raw_blake3_of(d)).unwrap(), d);
    }
    assert_eq!(store.get(&c_cid).unwrap(), c);
    assert!(store.verify(&|_| {}).unwrap().damaged.is_empty());
}

#[test]
fn failed_fsync_poisons_writes_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    let (store, faulty) = faulty_store(dir.path());
    let ok = blob(&mut rng, 100);
    store.put(&ok, true).unwrap();
    faulty.set_plan(FaultPlan {
        syncs_before_eio: Some(0),
        ..Default::default()
    });
    let err = store.put(&blob(&mut rng, 100), true).unwrap_err();
    assert!(matches!(err, PutError::Poisoned(_)), "{err}");
    let err = store.put(&blob(&mut rng, 100), true).unwrap_err();
    assert!(matches!(err, PutError::Poisoned(_)), "{err}");
    assert!(err.to_string().contains("restart"), "{err}");
    // Reads still work; a restart recovers.
    assert_eq!(store.get(&ContentId::raw_blake3_of(&ok)).unwrap(), ok);
    drop(store);
    let store = Store::open(opts(dir.path(), IoMode::Posix)).unwrap();
    store.put(&blob(&mut rng, 100), true).unwrap();
    assert_eq!(store.get(&ContentId::raw_blake3_of(&ok)).unwrap(), ok);
}

#[test]
fn second_writer_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
    let err = Store::open(opts(dir.path(), IoMode::Auto)).unwrap_err();
    assert!(matches!(err, OpenError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn bad_options_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path(), IoMode::Auto);
    o.inline_size_bytes_max = 0;
    let err = Store::open(o).unwrap_err();
    assert!(err.to_string().contains("inline_size_bytes_max"), "{err}");
}

#[test]
fn async_reads_serve_hot_and_cold_records() {
    use std::os::unix::io::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let data: Vec<_> = (0..50).map(|_| blob(&mut rng, 3000)).collect();
    let big = blob(&mut rng, 2 << 20);
    {
        let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
        for d in data.iter().chain([&big]) {
            store.put(d, true).unwrap();
        }
    }
    // Evict the segments from the page cache: the no-wait path must fall
    // back to a blocking read and still return verified bytes.
    for seg in segment_files(dir.path()) {
        let f = std::fs::File::open(&seg).unwrap();
        f.sync_all().unwrap();
        // SAFETY: plain fadvise on an fd we own.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..2 {
            // First pass cold, second pass hot.
            for d in &data {
                let cid = ContentId::raw_blake3_of(d);
                assert_eq!(&store.get_async(&cid).await.unwrap(), d);
                assert_eq!(
                    store.read_range_async(&cid, 100, 50).await.unwrap(),
                    &d[100..150]
                );
            }
        }
        let cid = ContentId::raw_blake3_of(&big);
        assert_eq!(
            store.read_range_async(&cid, 1 << 20, 10).await.unwrap(),
            &big[1 << 20..(1 << 20) + 10]
        );
        assert!(matches!(
            store.get_async(&ContentId::raw_blake3_of(b"absent")).await,
            Err(GetError::NotFound(_))
        ));
    });
}

#[test]
fn async_put_from_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cids = rt.block_on(async {
        let mut tasks = vec![];
        for i in 0..64u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let data = bytes::Bytes::from(format!("async blob {i}").into_bytes());
                store.put_async(data.clone(), true).await.unwrap().cid
            }));
        }
        let mut out = vec![];
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    for (i, cid) in cids.iter().enumerate() {
        assert_eq!(
            store.get(cid).unwrap(),
            format!("async blob {i}").into_bytes()
        );
    }
}

/// `get_into` reuses the caller's buffer: whatever it held before (a longer
/// blob, a shorter one, junk) never shows in the result, for packed,
/// compressed and large blobs alike.
#[test]
fn get_into_a_used_buffer_returns_exactly_the_blob() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(12);
    let long = blob(&mut rng, 256 * 1024);
    let short = blob(&mut rng, 3000);
    let empty: Vec<u8> = Vec::new();
    let large = blob(&mut rng, 3 << 20);
    let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
    let [l, s, e, g] = [&long, &short, &empty, &large].map(|d| store.put(d, true).unwrap().cid);

    let mut buf = Vec::new();
    store.get_into(&l, &mut buf).unwrap();
    assert_eq!(buf, long);
    // Shorter after longer: only the short blob's bytes, none of the tail.
    store.get_into(&s, &mut buf).unwrap();
    assert_eq!(buf, short);
    assert!(buf.capacity() >= long.len(), "the buffer was reused");
    store.get_into(&e, &mut buf).unwrap();
    assert!(buf.is_empty());
    // Longer after shorter, and into a buffer full of junk.
    store.get_into(&l, &mut buf).unwrap();
    assert_eq!(buf, long);
    let mut junk = vec![0xA5u8; 300 * 1024];
    store.get_into(&s, &mut junk).unwrap();
    assert_eq!(junk, short);
    store.get_into(&g, &mut junk).unwrap();
    assert_eq!(junk, large);
    store.get_into(&s, &mut junk).unwrap();
    assert_eq!(junk, short);

    let mut z = opts(&dir.path().join("z"), IoMode::Auto);
    z.compression = Compression::Zstd { level: 3 };
    let zstore = Store::open(z).unwrap();
    let text = "metanode ".repeat(5000).into_bytes();
    let t = zstore.put(&text, true).unwrap().cid;
    assert!(zstore.stat(&t).unwrap().unwrap().compressed);
    let mut buf = vec![0x5Au8; 200 * 1024];
    zstore.get_into(&t, &mut buf).unwrap();
    assert_eq!(buf, text);

    let mut buf = vec![1u8; 10];
    assert!(matches!(
        store.get_into(&ContentId::raw_blake3_of(b"absent"), &mut buf),
        Err(GetError::NotFound(_))
    ));
    assert!(buf.is_empty(), "a failed read leaves nothing to be taken");
}

/// Damage reaches `get_into` callers as `Corrupt`, never as bytes, even
/// when their buffer already holds a good copy of a same-sized blob.
#[test]
fn get_into_refuses_damaged_and_truncated_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(13);
    let first = blob(&mut rng, 3000);
    let second = blob(&mut rng, 3000);
    let last = blob(&mut rng, 3000);
    let store = Store::open(opts(dir.path(), IoMode::Auto)).unwrap();
    let [f, s, l] = [&first, &second, &last].map(|d| store.put(d, true).unwrap().cid);
    let seg = segment_files(dir.path()).pop().unwrap();
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        // Segment header 24 bytes + record header 60 bytes precede the
        // first payload.
        file.write_all_at(b"X", 24 + 60 + 100).unwrap();
    }
    let mut buf = Vec::new();
    store.get_into(&s, &mut buf).unwrap();
    assert_eq!(buf, second);
    assert!(matches!(
        store.get_into(&f, &mut buf),
        Err(GetError::Corrupt { .. })
    ));
    assert!(buf.is_empty());

    // Cut the last record short under the open store.
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    store.get_into(&s, &mut buf).unwrap();
    match store.get_into(&l, &mut buf) {
        Err(GetError::Corrupt { cid, reason }) => {
            assert_eq!(cid, l);
            assert!(reason.contains("truncated"), "{reason}");
        }
        other => panic!("truncated record served: {other:?}"),
    }
    assert!(buf.is_empty());
    assert!(store.stats().verify_failures_total >= 2);
}
