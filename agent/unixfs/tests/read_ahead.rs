//! `stored::export_car` reads blocks through [`ReadAhead`] (a second
//! thread reading the hinted blocks while the traversal reads others): the
//! CAR must be byte for byte the one a plain traversal of the store writes,
//! a missing block must end the export with that block's CID (never a hang
//! or a different error), and hinted blocks never taken must not keep the
//! read-ahead from shutting down.

use metanode_core::cid::{ContentId, HashKind};
use metanode_store::{Store, StoreOptions};
use metanode_unixfs::car::CarWriter;
use metanode_unixfs::stored::{self, CarExportError, ReadAhead};
use metanode_unixfs::testdata::xorshift32_bytes;
use metanode_unixfs::{BlockSource, CarBlocks, DagScope, ImportOptions, ReadError, SourceError};

fn store_with(data: &[u8], options: ImportOptions) -> (tempfile::TempDir, Store, ContentId) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path())).unwrap();
    let mut input = data;
    let added = stored::add_file(&store, &mut input, options, true, &mut |_| {}).unwrap();
    (dir, store, added.root)
}

/// The CAR of a traversal reading the store directly, one block at a time.
fn plain_car(store: &Store, root: ContentId) -> Vec<u8> {
    let mut car = CarWriter::new(Vec::new(), &[root]).unwrap();
    for item in CarBlocks::new(store, root, DagScope::All, None) {
        let (cid, data) = item.unwrap();
        car.write_block(&cid, &data).unwrap();
    }
    car.finish().unwrap()
}

#[test]
fn read_ahead_export_equals_the_plain_traversal() {
    // Kubo's layout over several intermediate nodes, a deep tree of 4-link
    // nodes, and a file of one repeated chunk (every hint names a block
    // that is already queued or sent).
    let cases = [
        (
            xorshift32_bytes(5, 50 * 262_144 + 77),
            ImportOptions::new(262_144, 8, HashKind::Sha2_256).unwrap(),
        ),
        (
            xorshift32_bytes(6, 300 * 1024 + 5),
            ImportOptions::new(2048, 4, HashKind::Sha2_256).unwrap(),
        ),
        (vec![0u8; 4 * 1024 * 1024], ImportOptions::default()),
    ];
    for (data, options) in cases {
        let (_dir, store, root) = store_with(&data, options);
        let expected = plain_car(&store, root);
        let (report, car) =
            stored::export_car(&store, root, DagScope::All, None, Vec::new()).unwrap();
        assert!(car == expected, "{options:?}: CARs differ");
        assert_eq!(report.car_bytes, expected.len() as u64);
        store.close().unwrap();
    }
}

#[test]
fn a_missing_leaf_ends_the_export_naming_it() {
    let data = xorshift32_bytes(7, 40 * 262_144);
    let options = ImportOptions::new(262_144, 8, HashKind::Sha2_256).unwrap();
    let (_dir, store, root) = store_with(&data, options);
    // The 13th block of the CAR is a leaf some way into the second
    // intermediate node, so the read-ahead has hinted it before it is due.
    let order: Vec<ContentId> = CarBlocks::new(&store, root, DagScope::All, None)
        .map(|item| item.unwrap().0)
        .collect();
    let victim = order[12];
    assert_eq!(victim.codec(), metanode_core::cid::CODEC_RAW);
    assert!(store.remove(&victim).unwrap());

    let failed = stored::export_car(&store, root, DagScope::All, None, Vec::new());
    match failed {
        Err(CarExportError::Read(ReadError::Source(SourceError::NotFound(cid)))) => {
            assert_eq!(cid, victim)
        }
        other => panic!("expected NotFound({victim}), got {other:?}"),
    }
    store.close().unwrap();
}

#[test]
fn hinted_blocks_never_taken_are_dropped() {
    let data = xorshift32_bytes(8, 6 * 262_144);
    let (_dir, store, root) = store_with(&data, ImportOptions::default());
    let order: Vec<ContentId> = CarBlocks::new(&store, root, DagScope::All, None)
        .map(|item| item.unwrap().0)
        .collect();
    let missing = ContentId::raw_blake3_of(b"not stored");
    {
        let ahead = ReadAhead::new(store.clone());
        ahead.prefetch(&[order[1], order[2], missing, order[3]]);
        // Taken out of order; a block never hinted is read directly.
        assert_eq!(
            ahead.block(&order[2]).unwrap(),
            store.get(&order[2]).unwrap()
        );
        assert_eq!(
            ahead.block(&order[4]).unwrap(),
            store.get(&order[4]).unwrap()
        );
        assert_eq!(ahead.block(&missing), Err(SourceError::NotFound(missing)));
        // order[1] and order[3] are still held (queued or read): dropping
        // the read-ahead must end its thread all the same.
    }
    store.close().unwrap();
}

/// The read-ahead reads blocks into buffers it takes back once a block is
/// dropped. A buffer that held a longer block must give a shorter one
/// exactly its own bytes (none of the longer block's tail), and the other
/// way round.
#[test]
fn a_reused_buffer_returns_exactly_the_next_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path())).unwrap();
    let long = xorshift32_bytes(9, 262_144);
    let short = xorshift32_bytes(10, 1000);
    let middle = xorshift32_bytes(11, 100_000);
    let [l, s, m] = [&long, &short, &middle].map(|d| store.put(d, true).unwrap().cid);
    let ahead = ReadAhead::new(store.clone());

    let first = ahead.block(&l).unwrap();
    assert_eq!(first, long);
    let first_at = first.as_ptr();
    drop(first);
    let second = ahead.block(&s).unwrap();
    // No other thread runs (nothing was hinted): the buffer just given back
    // is the one read into.
    assert_eq!(second.as_ptr(), first_at, "the buffer was reused");
    assert_eq!(second.len(), short.len());
    assert_eq!(second, short);
    drop(second);
    let third = ahead.block(&m).unwrap();
    assert_eq!(third.as_ptr(), first_at, "the buffer was reused");
    assert_eq!(third, middle);
    drop(third);
    assert_eq!(ahead.block(&l).unwrap(), long);
    drop(ahead);
    store.close().unwrap();
}

/// Damage in a leaf is still refused on the read-ahead's path (reused
/// buffers, both threads): the export ends with that block's CID and the
/// store's verdict, never with the damaged bytes.
#[test]
fn a_damaged_leaf_ends_the_export_naming_it() {
    let data = xorshift32_bytes(12, 40 * 262_144 + 500);
    let options = ImportOptions::new(262_144, 8, HashKind::Sha2_256).unwrap();
    let (dir, store, root) = store_with(&data, options);
    let order: Vec<ContentId> = CarBlocks::new(&store, root, DagScope::All, None)
        .map(|item| item.unwrap().0)
        .collect();
    // Well into the DAG, so earlier blocks' buffers are being reused and
    // the read-ahead hints it before it is due.
    let victim = order[20];
    assert_eq!(victim.codec(), metanode_core::cid::CODEC_RAW);
    let victim_bytes = store.get(&victim).unwrap();
    // Flip one byte of the victim's payload where it sits in its segment.
    let needle = &victim_bytes[1000..1064];
    let mut damaged = 0;
    for entry in std::fs::read_dir(dir.path().join("packs")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            use std::os::unix::fs::FileExt;
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.write_all_at(&[bytes[at + 10] ^ 0x40], (at + 10) as u64)
                .unwrap();
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1, "the victim's payload is stored once");

    let failed = stored::export_car(&store, root, DagScope::All, None, Vec::new());
    match failed {
        Err(CarExportError::Read(ReadError::Source(SourceError::Other { cid, reason }))) => {
            assert_eq!(cid, victim);
            assert!(reason.contains("damaged"), "{reason}");
        }
        other => panic!("expected the damaged {victim} to be refused, got {other:?}"),
    }
    // The other blocks still read, exact, through a read-ahead whose
    // buffers held the refused read.
    let ahead = ReadAhead::new(store.clone());
    assert!(ahead.block(&victim).is_err());
    for cid in &order[19..22] {
        if *cid != victim {
            assert_eq!(ahead.block(cid).unwrap(), store.get(cid).unwrap());
        }
    }
    drop(ahead);
    store.close().unwrap();
}
