//! Trustless-gateway block selection: order, scopes, entity-bytes, dups.

mod common;

use std::collections::HashSet;

use common::{block_of, dag_pb_block, import_into_memory, options, options_v0};
use metanode_core::cid::{CODEC_DAG_PB, CODEC_RAW, ContentId};
use metanode_core::dagpb;
use metanode_unixfs::testdata::{XorShift32, xorshift32_bytes};
use metanode_unixfs::{
    BlockSource, CarBlocks, DagScope, DataType, EntityBytes, MemoryBlocks, ReadError, SourceError,
    UnixFsData,
};

fn order(
    source: &MemoryBlocks,
    root: ContentId,
    scope: DagScope,
    range: Option<&str>,
) -> Vec<ContentId> {
    let range = range.map(|r| EntityBytes::parse(r).unwrap());
    CarBlocks::new(source, root, scope, range)
        .map(|item| item.expect("traversal").0)
        .collect()
}

/// Reference DFS pre-order without duplicates, written recursively.
fn dfs(
    source: &MemoryBlocks,
    cid: ContentId,
    seen: &mut HashSet<ContentId>,
    out: &mut Vec<ContentId>,
) {
    if !seen.insert(cid) {
        return;
    }
    out.push(cid);
    if cid.codec() == CODEC_DAG_PB {
        let block = source.block(&cid).unwrap();
        for child in dagpb::links(&block).unwrap() {
            dfs(source, child, seen, out);
        }
    }
}

/// 27 leaves of 10 bytes under 3-link nodes: root -> 3 -> 9 -> 27.
fn three_levels() -> (MemoryBlocks, ContentId, Vec<ContentId>) {
    let data = xorshift32_bytes(21, 270);
    let (memory, summary, blocks) = import_into_memory(&data, options(10, 3));
    let leaves = blocks
        .iter()
        .filter(|b| b.cid.codec() == CODEC_RAW)
        .map(|b| b.cid)
        .collect();
    (memory, summary.root, leaves)
}

#[test]
fn all_is_dfs_preorder() {
    let (memory, root, leaves) = three_levels();
    let got = order(&memory, root, DagScope::All, None);
    let mut expected = Vec::new();
    dfs(&memory, root, &mut HashSet::new(), &mut expected);
    assert_eq!(got.len(), 40);
    assert_eq!(got, expected);
    // Pre-order: root, first inner, first inner's first child, leaves 0..3, ...
    assert_eq!(got[0], root);
    assert_eq!(&got[3..6], &leaves[..3]);
    let leaf_order: Vec<ContentId> = got
        .iter()
        .copied()
        .filter(|c| c.codec() == CODEC_RAW)
        .collect();
    assert_eq!(leaf_order, leaves, "leaves come out in file order");
    // A file entity without a range is the whole file.
    assert_eq!(order(&memory, root, DagScope::Entity, None), expected);
    assert_eq!(
        order(&memory, root, DagScope::Entity, Some("0:*")),
        expected
    );
    // entity-bytes is ignored outside dag-scope=entity.
    assert_eq!(order(&memory, root, DagScope::All, Some("0:0")), expected);
}

#[test]
fn block_scope_is_the_root_only() {
    let (memory, root, _) = three_levels();
    assert_eq!(order(&memory, root, DagScope::Block, None), [root]);
    assert_eq!(order(&memory, root, DagScope::Block, Some("0:5")), [root]);
}

fn path_to(memory: &MemoryBlocks, root: ContentId, indexes: &[usize]) -> Vec<ContentId> {
    let mut path = vec![root];
    let mut cid = root;
    for &i in indexes {
        cid = dagpb::links(&memory.block(&cid).unwrap()).unwrap()[i];
        path.push(cid);
    }
    path
}

#[test]
fn entity_bytes_pick_the_overlapping_leaves_and_their_path() {
    let (memory, root, leaves) = three_levels();
    // Byte 135 is leaf 13 = child 1 of child 1 of child 1.
    let got = order(&memory, root, DagScope::Entity, Some("135:135"));
    assert_eq!(got, path_to(&memory, root, &[1, 1, 1]));
    assert_eq!(got[3], leaves[13]);

    // The last 15 bytes: leaves 25 (bytes 250..260, partly) and 26.
    let got = order(&memory, root, DagScope::Entity, Some("-15:*"));
    let mut expected = path_to(&memory, root, &[2, 2]);
    expected.extend([leaves[25], leaves[26]]);
    assert_eq!(got, expected);

    // A range crossing an inner-node boundary (bytes 85..=95: leaves 8 and 9).
    let got = order(&memory, root, DagScope::Entity, Some("85:95"));
    let mut expected = path_to(&memory, root, &[0, 2]);
    expected.push(leaves[8]);
    expected.extend(path_to(&memory, root, &[1, 0]).into_iter().skip(1));
    expected.push(leaves[9]);
    assert_eq!(got, expected);

    // "499:-1000"-style: from the start to 200 bytes before the end.
    let got = order(&memory, root, DagScope::Entity, Some("0:-200"));
    let got_leaves: Vec<ContentId> = got
        .iter()
        .copied()
        .filter(|c| c.codec() == CODEC_RAW)
        .collect();
    assert_eq!(got_leaves, &leaves[..8], "bytes 0..=70 are leaves 0..=7");

    // A `to` past the end is clamped; ranges entirely outside give the root.
    assert_eq!(
        order(&memory, root, DagScope::Entity, Some("265:100000")).len(),
        4
    );
    for outside in ["270:*", "1000:2000", "0:-271", "-5:-6"] {
        if let Ok(range) = EntityBytes::parse(outside) {
            let got: Vec<ContentId> = CarBlocks::new(&memory, root, DagScope::Entity, Some(range))
                .map(|b| b.unwrap().0)
                .collect();
            assert_eq!(got, [root], "{outside}");
        }
    }
}

// A plain `ipfs add` (CIDv0) DAG: dag-pb leaves with no links are leaves of
// the walk, every CID sent is the v0 one the parent links to, and
// entity-bytes picks the same path as for raw leaves.
#[test]
fn v0_dags_traverse_like_v1() {
    let data = xorshift32_bytes(21, 270);
    let (memory, summary, blocks) = import_into_memory(&data, options_v0(10, 3));
    let root = summary.root;
    let got = order(&memory, root, DagScope::All, None);
    let mut expected = Vec::new();
    dfs(&memory, root, &mut HashSet::new(), &mut expected);
    assert_eq!(got.len(), 40);
    assert_eq!(got, expected);
    assert!(
        got.iter()
            .all(|c| c.version() == 0 && c.codec() == CODEC_DAG_PB)
    );
    let leaves: Vec<ContentId> = blocks
        .iter()
        .filter(|b| dagpb::links(&b.data).unwrap().is_empty())
        .map(|b| b.cid)
        .collect();
    assert_eq!(leaves.len(), 27);
    let got = order(&memory, root, DagScope::Entity, Some("135:135"));
    assert_eq!(got, path_to(&memory, root, &[1, 1, 1]));
    assert_eq!(got[3], leaves[13]);
    assert_eq!(order(&memory, root, DagScope::Block, None), [root]);
}

#[test]
fn repeated_blocks_are_sent_once() {
    // 100 identical zero chunks: one distinct leaf, and a one-level DAG.
    let data = vec![0u8; 1000];
    let (memory, summary, blocks) = import_into_memory(&data, options(10, 174));
    assert_eq!(blocks.len(), 101);
    let got = order(&memory, summary.root, DagScope::All, None);
    assert_eq!(got, [summary.root, blocks[0].cid]);
    let got = order(&memory, summary.root, DagScope::Entity, Some("55:999"));
    assert_eq!(got, [summary.root, blocks[0].cid]);

    // With three levels, the repeated inner nodes are also sent once.
    let (memory, summary, _) = import_into_memory(&data, options(10, 3));
    let got = order(&memory, summary.root, DagScope::All, None);
    let distinct: HashSet<ContentId> = got.iter().copied().collect();
    assert_eq!(distinct.len(), got.len());
    let mut expected = Vec::new();
    dfs(&memory, summary.root, &mut HashSet::new(), &mut expected);
    assert_eq!(got, expected);
    let entity = order(&memory, summary.root, DagScope::Entity, Some("0:*"));
    assert_eq!(entity.iter().copied().collect::<HashSet<_>>(), distinct);
}

#[test]
fn directories_raw_roots_and_plain_dag_pb() {
    let (mut memory, file_root, _) = three_levels();
    let dir = dag_pb_block(
        vec![(file_root, "file.bin", 1000)],
        &UnixFsData::new(DataType::Directory),
    );
    let dir_cid = dir.cid;
    memory.insert(dir).unwrap();
    assert_eq!(order(&memory, dir_cid, DagScope::Entity, None), [dir_cid]);
    assert_eq!(
        order(&memory, dir_cid, DagScope::Entity, Some("0:10")),
        [dir_cid]
    );
    let all = order(&memory, dir_cid, DagScope::All, None);
    assert_eq!(all.len(), 41);
    assert_eq!(all[1], file_root);

    let raw = block_of(CODEC_RAW, b"blob".to_vec());
    let raw_cid = raw.cid;
    memory.insert(raw).unwrap();
    for scope in [DagScope::Block, DagScope::Entity, DagScope::All] {
        assert_eq!(order(&memory, raw_cid, scope, None), [raw_cid]);
        assert_eq!(order(&memory, raw_cid, scope, Some("1:2")), [raw_cid]);
    }

    // dag-pb without UnixFS data: entity is the block, all follows links.
    let node = dagpb::PbNode {
        links: vec![dagpb::PbLink {
            hash: raw_cid.to_bytes(),
            name: None,
            tsize: None,
        }],
        data: None,
    };
    let plain = block_of(CODEC_DAG_PB, dagpb::encode(&node));
    let plain_cid = plain.cid;
    memory.insert(plain).unwrap();
    assert_eq!(
        order(&memory, plain_cid, DagScope::Entity, None),
        [plain_cid]
    );
    assert_eq!(
        order(&memory, plain_cid, DagScope::All, None),
        [plain_cid, raw_cid]
    );
}

#[test]
fn hamt_entity_is_the_shard_nodes_only() {
    let mut memory = MemoryBlocks::new();
    let entry_a = block_of(CODEC_RAW, b"a".to_vec());
    let entry_b = block_of(CODEC_RAW, b"b".to_vec());
    let (a, b) = (entry_a.cid, entry_b.cid);
    memory.insert(entry_a).unwrap();
    memory.insert(entry_b).unwrap();
    let mut shard = UnixFsData::new(DataType::HamtShard);
    shard.fanout = Some(256);
    shard.hash_type = Some(0x22);
    let sub = dag_pb_block(vec![(a, "0Aa.txt", 1)], &shard);
    let sub_cid = sub.cid;
    memory.insert(sub).unwrap();
    let root = dag_pb_block(vec![(sub_cid, "00", 50), (b, "1Bb.txt", 1)], &shard);
    let root_cid = root.cid;
    memory.insert(root).unwrap();
    assert_eq!(
        order(&memory, root_cid, DagScope::Entity, None),
        [root_cid, sub_cid]
    );
    assert_eq!(
        order(&memory, root_cid, DagScope::All, None),
        [root_cid, sub_cid, a, b]
    );

    // A sub-shard link to something that is not a shard is an error.
    let bad = dag_pb_block(vec![(b, "FF", 1)], &shard);
    let bad_cid = bad.cid;
    memory.insert(bad).unwrap();
    let items: Vec<_> = CarBlocks::new(&memory, bad_cid, DagScope::Entity, None).collect();
    assert_eq!(items.len(), 2);
    assert!(matches!(&items[1], Err(ReadError::HamtChild { cid, kind: "raw block" }) if *cid == b));

    // A shard without a usable fanout.
    let mut no_fanout = UnixFsData::new(DataType::HamtShard);
    no_fanout.fanout = Some(100);
    let odd = dag_pb_block(vec![], &no_fanout);
    let odd_cid = odd.cid;
    memory.insert(odd).unwrap();
    let items: Vec<_> = CarBlocks::new(&memory, odd_cid, DagScope::Entity, None).collect();
    assert!(matches!(
        &items[0],
        Err(ReadError::HamtFanout {
            fanout: Some(100),
            ..
        })
    ));
}

#[test]
fn missing_blocks_end_the_stream_with_their_cid() {
    let (memory, root, leaves) = three_levels();
    let missing = ContentId::raw_blake3_of(b"nowhere");
    let items: Vec<_> = CarBlocks::new(&memory, missing, DagScope::All, None).collect();
    assert_eq!(
        items,
        [Err(ReadError::Source(SourceError::NotFound(missing)))]
    );

    let mut partial = MemoryBlocks::new();
    for cid in order(&memory, root, DagScope::All, None) {
        if cid != leaves[5] {
            partial
                .insert(metanode_unixfs::Block {
                    cid,
                    data: memory.block(&cid).unwrap(),
                })
                .unwrap();
        }
    }
    for (scope, range) in [(DagScope::All, None), (DagScope::Entity, Some("40:60"))] {
        let range = range.map(|r| EntityBytes::parse(r).unwrap());
        let items: Vec<_> = CarBlocks::new(&partial, root, scope, range).collect();
        let last = items.last().unwrap();
        assert_eq!(
            last,
            &Err(ReadError::Source(SourceError::NotFound(leaves[5]))),
            "{scope}"
        );
        assert!(items[..items.len() - 1].iter().all(Result::is_ok));
    }
}

// Random dag-pb and raw blocks (some decodable, most not) linked at random:
// traversals in every scope end (with items or errors), never panic.
#[test]
fn garbage_dags_never_panic() {
    let mut rng = XorShift32::new(77);
    let mut memory = MemoryBlocks::new();
    let mut cids: Vec<ContentId> = Vec::new();
    for i in 0..300u32 {
        let block = if i % 3 == 0 || cids.is_empty() {
            let len = (rng.next_u32() % 40) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u32() as u8).collect();
            block_of(if i % 2 == 0 { CODEC_RAW } else { CODEC_DAG_PB }, bytes)
        } else {
            let kinds = [
                DataType::File,
                DataType::Raw,
                DataType::Directory,
                DataType::HamtShard,
                DataType::Symlink,
            ];
            let mut unixfs = UnixFsData::new(kinds[(rng.next_u32() % 5) as usize]);
            let count = 1 + (rng.next_u32() % 4) as usize;
            let mut links = Vec::new();
            for _ in 0..count {
                let child = cids[(rng.next_u32() as usize) % cids.len()];
                let size = u64::from(rng.next_u32() % 50);
                unixfs.blocksizes.push(size);
                links.push((
                    child,
                    if rng.next_u32().is_multiple_of(2) {
                        "00"
                    } else {
                        ""
                    },
                    size,
                ));
            }
            if rng.next_u32().is_multiple_of(2) {
                unixfs.filesize = unixfs.content_size_bytes();
            }
            unixfs.fanout = Some(256);
            dag_pb_block(links, &unixfs)
        };
        cids.push(block.cid);
        memory.insert(block).unwrap();
    }
    let ranges = ["0:*", "3:17", "-10:*", "5:-5", "100:200"];
    for (i, &root) in cids.iter().enumerate() {
        for scope in [DagScope::Block, DagScope::Entity, DagScope::All] {
            let range = EntityBytes::parse(ranges[i % ranges.len()]).ok();
            let mut seen = HashSet::new();
            for item in CarBlocks::new(&memory, root, scope, range) {
                match item {
                    Ok((cid, _)) => assert!(seen.insert(cid), "duplicate {cid}"),
                    Err(e) => assert!(!e.to_string().is_empty()),
                }
            }
        }
        let _ = metanode_unixfs::FileRange::new(&memory, root, 0, None).map(|r| r.count());
    }
}
