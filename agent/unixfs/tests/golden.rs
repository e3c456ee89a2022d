//! Root CIDs from the reference importer: `tests/vectors/unixfs_kubo.json`
//! was produced by npm `ipfs-unixfs-importer` 17.1.1 (the JS twin of Kubo's
//! importer, `cidVersion: 1`, raw leaves, balanced layout, 174 links) over
//! `xorshift32_bytes(seed, size_bytes)` with the given chunk size.

use metanode_core::cid::{CODEC_DAG_PB, CODEC_RAW, HashKind};
use metanode_core::dagpb;
use metanode_unixfs::testdata::XorShift32;
use metanode_unixfs::{ImportOptions, Importer};

struct Vector {
    name: String,
    size_bytes: u64,
    seed: u32,
    chunk_size_bytes: u64,
    root_cid: String,
    blocks_count: u64,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/unixfs_kubo.json"
    );
    let text = std::fs::read_to_string(path).expect("golden vectors file");
    let json: serde_json::Value = serde_json::from_str(&text).expect("vectors are json");
    json.as_array()
        .expect("vectors are an array")
        .iter()
        .map(|v| Vector {
            name: v["name"].as_str().expect("name").to_string(),
            size_bytes: v["size_bytes"].as_u64().expect("size_bytes"),
            seed: v["seed"].as_u64().expect("seed") as u32,
            chunk_size_bytes: v["chunk_size_bytes"].as_u64().expect("chunk_size_bytes"),
            root_cid: v["root_cid"].as_str().expect("root_cid").to_string(),
            blocks_count: v["blocks_count"].as_u64().expect("blocks_count"),
        })
        .collect()
}

/// Stream the vector's content through the importer in `piece_bytes`
/// pieces (a multiple of 4, as the generator emits whole words).
fn import(
    vector: &Vector,
    piece_bytes: usize,
    hash: HashKind,
) -> (metanode_unixfs::ImportSummary, u64) {
    let options = ImportOptions::new(vector.chunk_size_bytes, 174, hash).expect("vector options");
    let mut importer = Importer::new(options);
    let mut rng = XorShift32::new(vector.seed);
    let mut piece = vec![0u8; piece_bytes];
    let mut left = vector.size_bytes as usize;
    let mut blocks = Vec::new();
    let mut parents = 0u64;
    let mut check = |blocks: &mut Vec<metanode_unixfs::Block>| {
        for block in blocks.drain(..) {
            if block.cid.codec() == CODEC_DAG_PB {
                parents += 1;
                // Every parent is canonical dag-pb that links only to CIDs we can fetch.
                let node = dagpb::decode(&block.data).expect("parent decodes");
                assert_eq!(dagpb::encode(&node), &block.data[..]);
                assert_eq!(
                    dagpb::links(&block.data).expect("links").len(),
                    node.links.len()
                );
            } else {
                assert_eq!(block.cid.codec(), CODEC_RAW);
                assert!(block.data.len() as u64 <= vector.chunk_size_bytes);
            }
        }
    };
    while left > 0 {
        let n = left.min(piece_bytes);
        rng.fill(&mut piece[..n]);
        importer.push(&piece[..n], &mut blocks);
        check(&mut blocks);
        left -= n;
    }
    let summary = importer.finish(&mut blocks);
    check(&mut blocks);
    (summary, parents)
}

#[test]
fn importer_matches_reference_root_cids() {
    let vectors = vectors();
    assert!(vectors.len() >= 8, "expected the full vector set");
    let names: Vec<&str> = vectors.iter().map(|v| v.name.as_str()).collect();
    for required in [
        "empty",
        "one_byte",
        "one_chunk",
        "one_chunk_plus_one",
        "chunks_174",
        "chunks_175",
    ] {
        assert!(names.contains(&required), "vector {required} missing");
    }
    for vector in &vectors {
        let (summary, _) = import(vector, 1 << 20, HashKind::Sha2_256);
        assert_eq!(
            summary.root.to_string(),
            vector.root_cid,
            "vector {}",
            vector.name
        );
        assert_eq!(
            summary.size_bytes, vector.size_bytes,
            "vector {}",
            vector.name
        );
        assert_eq!(
            summary.blocks_count, vector.blocks_count,
            "vector {}",
            vector.name
        );
    }
}

// The empty file is the raw block of no bytes, exactly what
// `ipfs add --cid-version 1` prints for it.
#[test]
fn reference_agrees_on_the_empty_file() {
    let empty = vectors()
        .into_iter()
        .find(|v| v.name == "empty")
        .expect("empty vector");
    assert_eq!(empty.size_bytes, 0);
    assert_eq!(
        empty.root_cid,
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    );
}

// Odd push sizes (not aligned to chunks) give the same DAG; the structure
// (parents count) matches the balanced layout arithmetic.
#[test]
fn unaligned_pushes_and_layout_shape() {
    for vector in vectors().iter().filter(|v| v.size_bytes <= 4 << 20) {
        let (summary, parents) = import(vector, 4 * 1013, HashKind::Sha2_256);
        assert_eq!(
            summary.root.to_string(),
            vector.root_cid,
            "vector {}",
            vector.name
        );
        let leaves = vector.size_bytes.div_ceil(vector.chunk_size_bytes).max(1);
        let mut expected_parents = 0;
        let mut level = leaves;
        while level > 1 {
            level = level.div_ceil(174);
            expected_parents += level;
        }
        assert_eq!(parents, expected_parents, "vector {}", vector.name);
        assert_eq!(summary.blocks_count, leaves + expected_parents);
    }
}

// BLAKE3 builds the same shape with BLAKE3 multihashes throughout.
#[test]
fn blake3_import_has_the_same_shape() {
    let vector = vectors()
        .into_iter()
        .find(|v| v.name == "one_chunk_plus_one")
        .expect("vector");
    let (summary, parents) = import(&vector, 1 << 16, HashKind::Blake3);
    assert_eq!(summary.root.key().kind, HashKind::Blake3);
    assert_eq!(summary.root.codec(), CODEC_DAG_PB);
    assert_eq!((summary.blocks_count, parents), (vector.blocks_count, 1));
    assert!(
        summary.root.to_string().starts_with("bafyb4i"),
        "{}",
        summary.root
    );
}
