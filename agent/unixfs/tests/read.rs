//! Reading files back out of DAGs: importer -> FileRange round trips,
//! fetching only what a range needs, and refusing malformed DAGs.

mod common;

use common::{
    Counting, block_of, collect, dag_pb_block, file_node, import_into_memory, options, options_v0,
};
use metanode_core::cid::{CODEC_RAW, ContentId};
use metanode_unixfs::testdata::{XorShift32, xorshift32_bytes};
use metanode_unixfs::{
    DataType, FileRange, ImportOptions, MemoryBlocks, ReadError, SourceError, UnixFsData,
    UnixFsFile, file_size,
};

#[test]
fn random_ranges_match_the_original_bytes() {
    for (size, chunk, links) in [
        (0usize, 256u64, 174u64),
        (1, 256, 174),
        (5000, 64, 3),
        (70_001, 1024, 4),
        (300_000, 262_144, 174),
    ] {
        let data = xorshift32_bytes(size as u32 + 1, size);
        let (memory, summary, _) = import_into_memory(&data, options(chunk, links));
        assert_eq!(file_size(&memory, summary.root).unwrap(), size as u64);
        let whole = collect(UnixFsFile::open(&memory, summary.root).unwrap().all());
        assert_eq!(whole, data, "whole file, size {size}");
        if size == 0 {
            assert!(matches!(
                FileRange::new(&memory, summary.root, 0, Some(0)),
                Err(ReadError::RangeInvalid { size_bytes: 0, .. })
            ));
            assert!(collect(FileRange::new(&memory, summary.root, 0, None).unwrap()).is_empty());
            continue;
        }
        let mut rng = XorShift32::new(size as u32 + 99);
        for _ in 0..200 {
            let a = u64::from(rng.next_u32()) % size as u64;
            let b = u64::from(rng.next_u32()) % size as u64;
            let (from, to) = (a.min(b), a.max(b));
            let got = collect(FileRange::new(&memory, summary.root, from, Some(to)).unwrap());
            assert_eq!(
                got,
                &data[from as usize..=to as usize],
                "{from}..={to} of {size}"
            );
            let tail = collect(FileRange::new(&memory, summary.root, from, None).unwrap());
            assert_eq!(tail, &data[from as usize..], "{from}.. of {size}");
        }
    }
}

// Plain `ipfs add` DAGs (CIDv0): the leaves are dag-pb File nodes carrying
// their chunk inline, every link a CIDv0; reads and ranges still give the
// original bytes, and a range fetches only the leaves it overlaps.
#[test]
fn v0_dags_with_inline_leaf_data_read_back() {
    for (size, chunk, links) in [
        (0usize, 256u64, 174u64),
        (1, 256, 174),
        (256, 256, 174),
        (5000, 64, 3),
        (70_001, 1024, 4),
    ] {
        let data = xorshift32_bytes(size as u32 + 7, size);
        let (memory, summary, blocks) = import_into_memory(&data, options_v0(chunk, links));
        assert_eq!(summary.root.version(), 0);
        assert!(blocks.iter().all(|b| b.cid.codec() != CODEC_RAW));
        assert_eq!(file_size(&memory, summary.root).unwrap(), size as u64);
        let whole = collect(UnixFsFile::open(&memory, summary.root).unwrap().all());
        assert_eq!(whole, data, "whole v0 file, size {size}");
        if size == 0 {
            continue;
        }
        let mut rng = XorShift32::new(size as u32 + 5);
        for _ in 0..100 {
            let a = u64::from(rng.next_u32()) % size as u64;
            let b = u64::from(rng.next_u32()) % size as u64;
            let (from, to) = (a.min(b), a.max(b));
            let got = collect(FileRange::new(&memory, summary.root, from, Some(to)).unwrap());
            assert_eq!(got, &data[from as usize..=to as usize], "{from}..={to}");
        }
    }
    // One byte in the middle of 5000 (64-byte chunks, 3 links): the root,
    // one node per level below it, and one leaf.
    let data = xorshift32_bytes(11, 5000);
    let (memory, summary, _) = import_into_memory(&data, options_v0(64, 3));
    let counting = Counting::new(&memory);
    let got = collect(FileRange::new(&counting, summary.root, 2500, Some(2500)).unwrap());
    assert_eq!(got, [data[2500]]);
    let fetched = counting.fetched.borrow();
    // 79 leaves under 3-link nodes: 27, 9, 3, 1 nodes above them.
    assert_eq!(fetched.len(), 5, "{fetched:?}");
    assert!(fetched.iter().all(|c| c.version() == 0));
}

#[test]
fn out_of_bounds_ranges_are_refused() {
    let data = xorshift32_bytes(3, 1000);
    let (memory, summary, _) = import_into_memory(&data, options(100, 3));
    for (from, to) in [
        (0, Some(1000)),
        (1001, None),
        (10, Some(9)),
        (1000, Some(1000)),
    ] {
        match FileRange::new(&memory, summary.root, from, to) {
            Err(ReadError::RangeInvalid {
                size_bytes: 1000, ..
            }) => {}
            other => panic!("{from}..={to:?}: {other:?}"),
        }
    }
    assert!(collect(FileRange::new(&memory, summary.root, 1000, None).unwrap()).is_empty());
}

// One byte of a 3-level DAG costs exactly one block per level: the
// blocksizes route the read without touching siblings.
#[test]
fn a_range_fetches_only_overlapping_blocks() {
    let data = xorshift32_bytes(5, 27 * 10); // 27 leaves of 10 bytes, 3 links per node: depth 3
    let (memory, summary, blocks) = import_into_memory(&data, options(10, 3));
    assert_eq!(blocks.len(), 27 + 9 + 3 + 1);
    // Parents are emitted as soon as their children are, between leaves.
    let leaf_cids: Vec<ContentId> = blocks
        .iter()
        .filter(|b| b.cid.codec() == CODEC_RAW)
        .map(|b| b.cid)
        .collect();
    let source = Counting::new(&memory);
    let got = collect(FileRange::new(&source, summary.root, 135, Some(135)).unwrap());
    assert_eq!(got, &data[135..136]);
    let fetched = source.fetched.borrow();
    assert_eq!(fetched.len(), 4, "root + 2 inner nodes + 1 leaf");
    assert_eq!(fetched[0], summary.root);
    assert_eq!(fetched[3], leaf_cids[13], "leaf 13 holds byte 135");

    // A range across a leaf boundary touches both leaves and nothing else.
    let source = Counting::new(&memory);
    let got = collect(FileRange::new(&source, summary.root, 29, Some(30)).unwrap());
    assert_eq!(got, &data[29..31]);
    let leaves: Vec<ContentId> = source
        .fetched
        .borrow()
        .iter()
        .copied()
        .filter(|c| c.codec() == CODEC_RAW)
        .collect();
    assert_eq!(leaves, [leaf_cids[2], leaf_cids[3]]);
}

#[test]
fn raw_root_is_a_one_chunk_file() {
    let data = b"hello world\n".to_vec();
    let (memory, summary, blocks) = import_into_memory(&data, ImportOptions::default());
    assert_eq!(blocks.len(), 1);
    assert_eq!(summary.root.codec(), CODEC_RAW);
    assert_eq!(file_size(&memory, summary.root).unwrap(), 12);
    assert_eq!(
        collect(FileRange::new(&memory, summary.root, 6, Some(10)).unwrap()),
        b"world"
    );
}

// Legacy layout (go-ipfs before raw leaves): dag-pb File leaves carrying the
// bytes in UnixFS Data, and a root with data of its own before its children.
#[test]
fn dag_pb_leaves_and_inline_root_data() {
    let mut memory = MemoryBlocks::new();
    let mut leaf = |bytes: &'static [u8], kind: DataType| {
        let mut unixfs = UnixFsData::new(kind);
        unixfs.data = Some(bytes);
        unixfs.filesize = Some(bytes.len() as u64);
        let block = dag_pb_block(vec![], &unixfs);
        let cid = block.cid;
        memory.insert(block).unwrap();
        (cid, bytes.len() as u64)
    };
    let a = leaf(b"hello ", DataType::File);
    let b = leaf(b"dag-pb ", DataType::Raw);
    let root = file_node(&[a, b], Some(b">> "));
    let root_cid = root.cid;
    memory.insert(root).unwrap();
    assert_eq!(file_size(&memory, root_cid).unwrap(), 16);
    assert_eq!(
        collect(UnixFsFile::open(&memory, root_cid).unwrap().all()),
        b">> hello dag-pb "
    );
    assert_eq!(
        collect(FileRange::new(&memory, root_cid, 2, Some(9)).unwrap()),
        b" hello d"
    );
}

#[test]
fn non_files_are_refused_with_their_kind() {
    let mut memory = MemoryBlocks::new();
    for (kind, name) in [
        (DataType::Directory, "Directory"),
        (DataType::Symlink, "Symlink"),
        (DataType::HamtShard, "HAMTShard"),
        (DataType::Metadata, "Metadata"),
    ] {
        let block = dag_pb_block(vec![], &UnixFsData::new(kind));
        let cid = block.cid;
        memory.insert(block).unwrap();
        match UnixFsFile::open(&memory, cid) {
            Err(ReadError::NotAFile { cid: got, kind }) => {
                assert_eq!((got, kind), (cid, name));
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    // dag-pb without Data is not UnixFS.
    let bare = block_of(0x70, vec![]);
    let cid = bare.cid;
    memory.insert(bare).unwrap();
    assert!(matches!(
        UnixFsFile::open(&memory, cid),
        Err(ReadError::NotAFile {
            kind: "dag-pb node without data",
            ..
        })
    ));
}

#[test]
fn missing_blocks_are_named() {
    let data = xorshift32_bytes(11, 100);
    let (_, summary, blocks) = import_into_memory(&data, options(10, 174));
    let mut partial = MemoryBlocks::new();
    for block in blocks.iter().filter(|b| b.cid != blocks[4].cid) {
        partial.insert(block.clone()).unwrap();
    }
    let results: Vec<_> = FileRange::new(&partial, summary.root, 0, None)
        .unwrap()
        .collect();
    assert_eq!(
        results.len(),
        5,
        "four pieces, then the error, then nothing"
    );
    assert_eq!(
        results[4],
        Err(ReadError::Source(SourceError::NotFound(blocks[4].cid)))
    );
    assert!(
        results[4]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains(&blocks[4].cid.to_string())
    );
    // Reading before the missing leaf works.
    assert_eq!(
        collect(FileRange::new(&partial, summary.root, 0, Some(39)).unwrap()),
        &data[..40]
    );
    assert!(matches!(
        file_size(MemoryBlocks::new(), summary.root),
        Err(ReadError::Source(SourceError::NotFound(cid))) if cid == summary.root
    ));
}

#[test]
fn inconsistent_sizes_are_refused_naming_the_cid() {
    let mut memory = MemoryBlocks::new();
    let leaf = block_of(CODEC_RAW, b"abcd".to_vec());
    let leaf_cid = leaf.cid;
    memory.insert(leaf).unwrap();

    // Parent claims the leaf holds 5 bytes.
    let liar = file_node(&[(leaf_cid, 5)], None);
    let liar_cid = liar.cid;
    memory.insert(liar).unwrap();
    let err = collect_err(FileRange::new(&memory, liar_cid, 0, None).unwrap());
    assert_eq!(
        err,
        ReadError::ChildSizeMismatch {
            cid: leaf_cid,
            parent: liar_cid,
            expected_bytes: 5,
            actual_bytes: 4
        }
    );

    // filesize disagrees with blocksizes.
    let mut unixfs = UnixFsData::new(DataType::File);
    unixfs.blocksizes = vec![4];
    unixfs.filesize = Some(3);
    let bad = dag_pb_block(vec![(leaf_cid, "", 4)], &unixfs);
    let bad_cid = bad.cid;
    memory.insert(bad).unwrap();
    assert_eq!(
        UnixFsFile::open(&memory, bad_cid).unwrap_err(),
        ReadError::FilesizeMismatch {
            cid: bad_cid,
            filesize: 3,
            content_bytes: 4
        }
    );

    // blocksizes count differs from links count.
    let mut unixfs = UnixFsData::new(DataType::File);
    unixfs.blocksizes = vec![4, 4];
    let bad = dag_pb_block(vec![(leaf_cid, "", 4)], &unixfs);
    let bad_cid = bad.cid;
    memory.insert(bad).unwrap();
    assert_eq!(
        UnixFsFile::open(&memory, bad_cid).unwrap_err(),
        ReadError::BlocksizesMismatch {
            cid: bad_cid,
            blocksizes_count: 2,
            links_count: 1
        }
    );

    // A directory inside a file.
    let dir = dag_pb_block(vec![], &UnixFsData::new(DataType::Directory));
    let dir_cid = dir.cid;
    memory.insert(dir).unwrap();
    let holder = file_node(&[(dir_cid, 0), (leaf_cid, 4)], None);
    let holder_cid = holder.cid;
    memory.insert(holder).unwrap();
    // The zero-size directory child is never fetched for a range...
    assert_eq!(
        collect(FileRange::new(&memory, holder_cid, 0, None).unwrap()),
        b"abcd"
    );
    // ...but a directory where content is expected is an error.
    let holder = file_node(&[(dir_cid, 4)], None);
    let holder_cid = holder.cid;
    memory.insert(holder).unwrap();
    assert_eq!(
        collect_err(FileRange::new(&memory, holder_cid, 0, None).unwrap()),
        ReadError::UnexpectedNodeType {
            cid: dir_cid,
            kind: DataType::Directory
        }
    );
}

#[test]
fn too_deep_dags_are_refused() {
    let mut memory = MemoryBlocks::new();
    let leaf = block_of(CODEC_RAW, b"x".to_vec());
    let mut cid = leaf.cid;
    memory.insert(leaf).unwrap();
    for _ in 0..=metanode_unixfs::limits::FILE_DEPTH_MAX {
        let node = file_node(&[(cid, 1)], None);
        cid = node.cid;
        memory.insert(node).unwrap();
    }
    match collect_err(FileRange::new(&memory, cid, 0, None).unwrap()) {
        ReadError::TooDeep { depth_max, .. } => {
            assert_eq!(depth_max, metanode_unixfs::limits::FILE_DEPTH_MAX)
        }
        other => panic!("{other:?}"),
    }
}

fn collect_err(range: FileRange<&MemoryBlocks>) -> ReadError {
    for piece in range {
        if let Err(e) = piece {
            return e;
        }
    }
    panic!("expected an error")
}
