//! IPFS blocks in the store: put by CID (sha2-256 and BLAKE3, raw and
//! dag-pb), verification on write, and GC that keeps every block reachable
//! from a pinned dag-pb root.

use bytes::Bytes;
use metanode_core::cid::{BlockKey, CODEC_DAG_PB, CODEC_RAW, ContentId, HashKind};
use metanode_core::dagpb::{self, PbLink, PbNode};
use metanode_store::{PutError, Store, StoreOptions, limits};

fn cid_of(codec: u64, kind: HashKind, data: &[u8]) -> ContentId {
    ContentId::from_key(
        codec,
        BlockKey {
            kind,
            digest: kind.digest(data),
        },
    )
}

/// A dag-pb node linking `children` (no UnixFS data: GC must not care).
fn node(children: &[ContentId]) -> (ContentId, Bytes) {
    let pb = PbNode {
        links: children
            .iter()
            .map(|c| PbLink {
                hash: c.to_bytes(),
                name: Some(Vec::new()),
                tsize: Some(1),
            })
            .collect(),
        data: Some(vec![8, 2]),
    };
    let bytes = dagpb::encode(&pb);
    (
        cid_of(CODEC_DAG_PB, HashKind::Sha2_256, &bytes),
        Bytes::from(bytes),
    )
}

fn leaf(i: u32) -> (ContentId, Bytes) {
    let data = format!("leaf number {i} with some padding").into_bytes();
    (
        cid_of(CODEC_RAW, HashKind::Sha2_256, &data),
        Bytes::from(data),
    )
}

#[test]
fn blocks_round_trip_with_their_codec_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path())).unwrap();
    let (l1, d1) = leaf(1);
    let b3 = Bytes::from_static(b"a blake3 raw block");
    let c3 = cid_of(CODEC_RAW, HashKind::Blake3, &b3);
    let (root, droot) = node(&[l1]);
    let out = store
        .put_blocks(
            &[(l1, d1.clone()), (c3, b3.clone()), (root, droot.clone())],
            false,
        )
        .unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[2].cid, root);
    assert!(out.iter().all(|o| !o.existed));
    assert_eq!(store.get(&l1).unwrap(), d1);
    assert_eq!(store.get(&c3).unwrap(), b3);
    assert_eq!(store.get(&root).unwrap(), droot);
    // The listing keeps each block's codec.
    let listed: Vec<ContentId> = store.list().into_iter().map(|(c, _)| c).collect();
    assert!(listed.contains(&root) && listed.contains(&l1));
    // Again: nothing new is written.
    let again = store.put_block(&root, droot.clone(), false).unwrap();
    assert!(again.existed);
    // And after a reopen, from the segment log.
    store.close().unwrap();
    let store = Store::open(StoreOptions::new(dir.path())).unwrap();
    assert_eq!(store.get(&root).unwrap(), droot);
    assert_eq!(
        store
            .list()
            .iter()
            .find(|(c, _)| *c == root)
            .map(|(c, _)| c.codec()),
        Some(CODEC_DAG_PB)
    );
}

#[test]
fn a_block_that_does_not_match_its_cid_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path())).unwrap();
    let (good, dgood) = leaf(1);
    let (bad, _) = leaf(2);
    let err = store
        .put_blocks(
            &[(good, dgood), (bad, Bytes::from_static(b"not leaf 2"))],
            true,
        )
        .unwrap_err();
    match err {
        PutError::BlockHashMismatch { cid, actual } => {
            assert_eq!(cid, bad);
            assert!(actual.starts_with("sha2-256:"), "{actual}");
        }
        other => panic!("expected BlockHashMismatch, got {other}"),
    }
    // The batch is checked before anything is queued.
    assert!(!store.contains(&good));

    let big = Bytes::from(vec![7u8; limits::BLOCK_SIZE_BYTES_MAX as usize + 1]);
    let big_cid = cid_of(CODEC_RAW, HashKind::Sha2_256, &big);
    let err = store.put_block(&big_cid, big, false).unwrap_err();
    assert!(
        matches!(err, PutError::BlockTooLarge { size_bytes, .. } if size_bytes == limits::BLOCK_SIZE_BYTES_MAX + 1),
        "{err}"
    );
    // A block larger than the raw-blob inline threshold but within the IPFS
    // limit is still stored packed.
    let mut small_inline = StoreOptions::new(dir.path().join("small"));
    small_inline.inline_size_bytes_max = 4096;
    let s2 = Store::open(small_inline).unwrap();
    let mib = Bytes::from(vec![3u8; 1024 * 1024]);
    let mib_cid = cid_of(CODEC_RAW, HashKind::Sha2_256, &mib);
    s2.put_block(&mib_cid, mib.clone(), false).unwrap();
    assert_eq!(s2.get(&mib_cid).unwrap(), mib);
}

#[test]
fn gc_keeps_everything_reachable_from_a_pinned_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path())).unwrap();
    let leaves: Vec<_> = (0..6).map(leaf).collect();
    let (mid_a, dmid_a) = node(&[leaves[0].0, leaves[1].0]);
    let (mid_b, dmid_b) = node(&[leaves[2].0, leaves[3].0]);
    // A link to a block the store does not have (a partial DAG) is fine.
    let (absent, _) = leaf(99);
    let (root, droot) = node(&[mid_a, mid_b, absent]);
    let (other_root, dother) = node(&[leaves[4].0]);

    let hold = store.gc_hold();
    let mut blocks: Vec<(ContentId, Bytes)> = leaves.clone();
    blocks.extend([
        (mid_a, dmid_a),
        (mid_b, dmid_b),
        (root, droot),
        (other_root, dother),
    ]);
    store.put_blocks(&blocks, false).unwrap();
    store.set_pinned(&root, true).unwrap();
    drop(hold);

    store.gc(&|_| {}).unwrap();
    for c in [
        root,
        mid_a,
        mid_b,
        leaves[0].0,
        leaves[1].0,
        leaves[2].0,
        leaves[3].0,
    ] {
        assert!(store.contains(&c), "{c} is reachable from the pinned root");
    }
    // Unpinned, unreachable: swept.
    for c in [other_root, leaves[4].0, leaves[5].0] {
        assert!(!store.contains(&c), "{c} should have been collected");
    }

    // Unpin the root: the whole DAG goes.
    store.set_pinned(&root, false).unwrap();
    let report = store.gc(&|_| {}).unwrap();
    assert_eq!(report.blobs_removed, 7);
    assert_eq!(store.list().len(), 0);
}

#[test]
fn gc_stops_before_sweeping_when_a_pinned_dag_node_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreOptions::new(dir.path())).unwrap();
    let (l, dl) = leaf(1);
    // Bytes that are not dag-pb, stored under the dag-pb codec: a foreign
    // or damaged node.
    let junk = Bytes::from_static(b"\xff\xff\xff not protobuf");
    let junk_cid = cid_of(CODEC_DAG_PB, HashKind::Sha2_256, &junk);
    store
        .put_blocks(&[(l, dl), (junk_cid, junk)], false)
        .unwrap();
    store.set_pinned(&junk_cid, true).unwrap();
    let err = store.gc(&|_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&junk_cid.to_string()), "{msg}");
    assert!(msg.contains("before sweeping"), "{msg}");
    // Nothing was swept.
    assert!(store.contains(&l));
}
