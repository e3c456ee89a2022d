//! `stored::add_file` (leaves hashed on several threads, written in big
//! batches) must store exactly the DAG of the sequential [`Importer`]:
//! same root, same blocks, same bytes — and keep it across a reopen.

use std::collections::HashMap;
use std::io::Read;

use metanode_core::cid::{ContentId, HashKind};
use metanode_store::{Store, StoreOptions};
use metanode_unixfs::testdata::xorshift32_bytes;
use metanode_unixfs::{CidVersion, DagScope, ImportOptions, UnixFsFile, import_bytes, stored};

/// Hands out its bytes in reads of a fixed odd size, so leaves and
/// batches never line up with reads.
struct OddReads<'a> {
    data: &'a [u8],
    read_bytes: usize,
}

impl Read for OddReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.read_bytes.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn check_same_dag(data: &[u8], options: ImportOptions, read_bytes: usize) {
    let (expected, summary) = import_bytes(data, options);
    let distinct: HashMap<ContentId, &[u8]> =
        expected.iter().map(|b| (b.cid, &b.data[..])).collect();

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path())).unwrap();
    let mut input = OddReads { data, read_bytes };
    let mut seen = 0u64;
    let added = stored::add_file(&store, &mut input, options, true, &mut |n| seen = n).unwrap();
    assert_eq!(added, summary, "{options:?}");
    assert_eq!(seen, data.len() as u64);
    assert_eq!(store.list().len(), distinct.len());
    for (cid, bytes) in &distinct {
        assert_eq!(&store.get(cid).unwrap()[..], *bytes, "block {cid}");
    }
    store.close().unwrap();

    // Acknowledged means durable: a fresh open finds every block intact.
    let store = Store::open(StoreOptions::new(dir.path())).unwrap();
    assert_eq!(store.list().len(), distinct.len());
    assert!(store.stat(&summary.root).unwrap().unwrap().pinned);
    let report = store.verify(&|_| {}).unwrap();
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    assert_eq!(report.blobs_checked, distinct.len() as u64);
}

/// Several 8 MiB batches with Kubo's defaults: 97 leaves of 256 KiB and a
/// partial one under one parent.
#[test]
fn kubo_defaults_over_several_batches() {
    let data = xorshift32_bytes(3, 24 * 1024 * 1024 + 5);
    check_same_dag(&data, ImportOptions::default(), 1_000_003);
    let blake3 = ImportOptions::default()
        .with_hash(HashKind::Blake3)
        .unwrap();
    check_same_dag(&data, blake3, 65_537);
}

/// Plain `ipfs add` (CIDv0, dag-pb leaves) through the threaded path: the
/// same DAG as the sequential importer, read back from the store as the
/// original bytes, and exported as a CAR of v0 CIDs.
#[test]
fn v0_add_stores_the_sequential_dag_and_reads_back() {
    let v0 = ImportOptions::default()
        .with_cid_version(CidVersion::V0)
        .unwrap();
    let data = xorshift32_bytes(4, 17 * 1024 * 1024 + 9);
    check_same_dag(&data, v0, 1_000_003);
    for len in [0usize, 1, 262_144, 262_145] {
        check_same_dag(&xorshift32_bytes(2, len), v0, 4096);
    }
    let deep = ImportOptions::new(2048, 4, HashKind::Sha2_256)
        .unwrap()
        .with_cid_version(CidVersion::V0)
        .unwrap();
    check_same_dag(&xorshift32_bytes(9, 3 * 1024 * 1024 + 123), deep, 333_333);

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path())).unwrap();
    let mut input = &data[..];
    let summary = stored::add_file(&store, &mut input, v0, true, &mut |_| {}).unwrap();
    assert!(
        summary.root.to_string().starts_with("Qm"),
        "{}",
        summary.root
    );
    let file = UnixFsFile::open(&store, summary.root).unwrap();
    assert_eq!(file.size_bytes(), data.len() as u64);
    let mut read = Vec::with_capacity(data.len());
    for piece in file.all() {
        read.extend_from_slice(&piece.unwrap());
    }
    assert!(read == data, "v0 file read back differs");
    let (report, car) =
        stored::export_car(&store, summary.root, DagScope::All, None, Vec::new()).unwrap();
    assert_eq!(report.blocks_count, summary.blocks_count);
    let reader = metanode_unixfs::CarReader::new(&car[..]).unwrap();
    assert_eq!(reader.roots(), [summary.root]);
    for item in reader {
        let (cid, _) = item.unwrap();
        assert_eq!(cid.version(), 0, "{cid}");
    }
}

/// A deep tree: 4 links per node over 2 KiB leaves gives seven levels, and
/// each batch completes parents at several of them.
#[test]
fn deep_tree_with_parents_inside_batches() {
    let data = xorshift32_bytes(9, 9 * 1024 * 1024 + 123);
    let options = ImportOptions::new(2048, 4, HashKind::Sha2_256).unwrap();
    check_same_dag(&data, options, 333_333);
}

/// Repeated chunks name the same leaf many times in one batch.
#[test]
fn repeated_chunks_are_stored_once() {
    let data = vec![0u8; 10 * 1024 * 1024];
    check_same_dag(&data, ImportOptions::default(), 4 << 20);
}

#[test]
fn small_inputs() {
    for len in [0usize, 1, 262_143, 262_144, 262_145] {
        let data = xorshift32_bytes(1, len);
        check_same_dag(&data, ImportOptions::default(), 4096);
    }
}
