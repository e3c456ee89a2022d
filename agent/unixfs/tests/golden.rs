//! Root CIDs from the reference importer: `tests/vectors/unixfs_kubo.json`
//! was produced by npm `ipfs-unixfs-importer` 17.1.1 (the JS twin of Kubo's
//! importer, `cidVersion: 1`, raw leaves, balanced layout, 174 links) over
//! `xorshift32_bytes(seed, size_bytes)` with the given chunk size, and
//! `tests/vectors/unixfs_kubo_v0.json` by the same generator with
//! `--cid-version 0` (`cidVersion: 0, rawLeaves: false`: plain `ipfs add`);
//! there the vectors of at most 3 blocks also list every block (CID, size,
//! and the bytes in hex when short).
//! Regenerate: `cd hw-tests/ipfs-interop && node gen-vectors.mjs [--cid-version 0]`.

use std::collections::BTreeMap;

use metanode_core::cid::{CODEC_DAG_PB, CODEC_RAW, HashKind};
use metanode_core::dagpb;
use metanode_unixfs::testdata::XorShift32;
use metanode_unixfs::{CidVersion, DataType, ImportOptions, Importer, UnixFsData};

struct Vector {
    name: String,
    size_bytes: u64,
    seed: u32,
    chunk_size_bytes: u64,
    root_cid: String,
    blocks_count: u64,
    /// CID → (size, hex bytes when listed), for the smallest vectors.
    blocks: Option<BTreeMap<String, (u64, Option<String>)>>,
}

const V1_VECTORS: &str = "unixfs_kubo.json";
const V0_VECTORS: &str = "unixfs_kubo_v0.json";

fn vectors_in(file: &str) -> Vec<Vector> {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("golden vectors file");
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
            blocks: v["blocks"].as_array().map(|list| {
                list.iter()
                    .map(|b| {
                        let cid = b["cid"].as_str().expect("block cid").to_string();
                        let size = b["size_bytes"].as_u64().expect("block size_bytes");
                        (cid, (size, b["hex"].as_str().map(str::to_string)))
                    })
                    .collect()
            }),
        })
        .collect()
}

fn vectors() -> Vec<Vector> {
    vectors_in(V1_VECTORS)
}

fn options_for(vector: &Vector, hash: HashKind, cid_version: CidVersion) -> ImportOptions {
    ImportOptions::new(vector.chunk_size_bytes, 174, hash)
        .and_then(|o| o.with_cid_version(cid_version))
        .expect("vector options")
}

/// What an import emitted, beyond its summary.
struct Emitted {
    parents_count: u64,
    /// Every block (CID → bytes) when `keep_blocks`.
    blocks: BTreeMap<String, Vec<u8>>,
}

/// Stream the vector's content through the importer in `piece_bytes`
/// pieces (a multiple of 4, as the generator emits whole words).
fn import(
    vector: &Vector,
    piece_bytes: usize,
    options: ImportOptions,
    keep_blocks: bool,
) -> (metanode_unixfs::ImportSummary, Emitted) {
    let mut importer = Importer::new(options);
    let mut rng = XorShift32::new(vector.seed);
    let mut piece = vec![0u8; piece_bytes];
    let mut left = vector.size_bytes as usize;
    let mut blocks = Vec::new();
    let mut emitted = Emitted {
        parents_count: 0,
        blocks: BTreeMap::new(),
    };
    let mut check = |blocks: &mut Vec<metanode_unixfs::Block>| {
        for block in blocks.drain(..) {
            assert_eq!(
                block.cid.version(),
                options.cid_version().number(),
                "{}",
                block.cid
            );
            assert!(block.cid.key().matches(&block.data), "{}", block.cid);
            if block.cid.codec() == CODEC_DAG_PB {
                // Every node is canonical dag-pb that links only to CIDs we can fetch.
                let node = dagpb::decode(&block.data).expect("node decodes");
                assert_eq!(dagpb::encode(&node), &block.data[..]);
                assert_eq!(
                    dagpb::links(&block.data).expect("links").len(),
                    node.links.len()
                );
                let unixfs = UnixFsData::decode(node.data.as_deref().expect("unixfs data"))
                    .expect("unixfs decodes");
                assert_eq!(unixfs.kind, DataType::File);
                if node.links.is_empty() {
                    // A dag-pb leaf (v0): its chunk inline.
                    assert!(!options.raw_leaves());
                    let chunk_bytes = unixfs.data.map_or(0, <[u8]>::len) as u64;
                    assert!(chunk_bytes <= vector.chunk_size_bytes);
                    assert_eq!(unixfs.filesize, Some(chunk_bytes));
                } else {
                    emitted.parents_count += 1;
                    for link in dagpb::links(&block.data).expect("links") {
                        assert_eq!(link.version(), options.cid_version().number());
                    }
                }
            } else {
                assert_eq!(block.cid.codec(), CODEC_RAW);
                assert!(options.raw_leaves());
                assert!(block.data.len() as u64 <= vector.chunk_size_bytes);
            }
            if keep_blocks {
                emitted
                    .blocks
                    .insert(block.cid.to_string(), block.data.to_vec());
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
    (summary, emitted)
}

fn check_required_names(vectors: &[Vector]) {
    assert!(vectors.len() >= 8, "expected the full vector set");
    let names: Vec<&str> = vectors.iter().map(|v| v.name.as_str()).collect();
    for required in [
        "empty",
        "one_byte",
        "one_chunk",
        "one_chunk_plus_one",
        "chunks_174",
        "chunks_175",
        "large_64MiB",
    ] {
        assert!(names.contains(&required), "vector {required} missing");
    }
}

#[test]
fn importer_matches_reference_root_cids() {
    let vectors = vectors();
    check_required_names(&vectors);
    for vector in &vectors {
        let options = options_for(vector, HashKind::Sha2_256, CidVersion::V1);
        let (summary, _) = import(vector, 1 << 20, options, false);
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
        let options = options_for(vector, HashKind::Sha2_256, CidVersion::V1);
        let (summary, emitted) = import(vector, 4 * 1013, options, false);
        assert_eq!(
            summary.root.to_string(),
            vector.root_cid,
            "vector {}",
            vector.name
        );
        check_layout_shape(vector, &summary, emitted.parents_count);
    }
}

fn check_layout_shape(vector: &Vector, summary: &metanode_unixfs::ImportSummary, parents: u64) {
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

// BLAKE3 builds the same shape with BLAKE3 multihashes throughout.
#[test]
fn blake3_import_has_the_same_shape() {
    let vector = vectors()
        .into_iter()
        .find(|v| v.name == "one_chunk_plus_one")
        .expect("vector");
    let options = options_for(&vector, HashKind::Blake3, CidVersion::V1);
    let (summary, emitted) = import(&vector, 1 << 16, options, false);
    let parents = emitted.parents_count;
    assert_eq!(summary.root.key().kind, HashKind::Blake3);
    assert_eq!(summary.root.codec(), CODEC_DAG_PB);
    assert_eq!((summary.blocks_count, parents), (vector.blocks_count, 1));
    assert!(
        summary.root.to_string().starts_with("bafyb4i"),
        "{}",
        summary.root
    );
}

// Plain `ipfs add` (CIDv0, dag-pb leaves): every root equals the reference
// importer's, the DAG has the same balanced shape, every block is a CIDv0;
// for the smallest vectors every block is the reference's, byte for byte.
#[test]
fn v0_importer_matches_reference_root_cids_and_blocks() {
    let v1_names: Vec<String> = vectors().into_iter().map(|v| v.name).collect();
    let vectors = vectors_in(V0_VECTORS);
    check_required_names(&vectors);
    let mut blocks_checked = 0;
    for vector in &vectors {
        assert!(
            v1_names.contains(&vector.name),
            "{} has no v1 twin",
            vector.name
        );
        let options = options_for(vector, HashKind::Sha2_256, CidVersion::V0);
        let keep_blocks = vector.blocks.is_some();
        let (summary, emitted) = import(vector, 1 << 20, options, keep_blocks);
        assert!(vector.root_cid.starts_with("Qm"), "{}", vector.root_cid);
        assert_eq!(
            summary.root.to_string(),
            vector.root_cid,
            "vector {}",
            vector.name
        );
        assert_eq!(summary.size_bytes, vector.size_bytes, "{}", vector.name);
        assert_eq!(summary.blocks_count, vector.blocks_count, "{}", vector.name);
        check_layout_shape(vector, &summary, emitted.parents_count);
        let Some(expected) = &vector.blocks else {
            continue;
        };
        let ours: Vec<&String> = emitted.blocks.keys().collect();
        let theirs: Vec<&String> = expected.keys().collect();
        assert_eq!(ours, theirs, "vector {}: block cids", vector.name);
        for (cid, (size_bytes, hex_bytes)) in expected {
            let data = &emitted.blocks[cid];
            assert_eq!(
                data.len() as u64,
                *size_bytes,
                "{} block {cid}",
                vector.name
            );
            if let Some(hex_bytes) = hex_bytes {
                assert_eq!(&hex::encode(data), hex_bytes, "{} block {cid}", vector.name);
                blocks_checked += 1;
            }
        }
    }
    // empty, one_byte, and one_chunk_plus_one's short leaf and parent.
    assert!(
        blocks_checked >= 4,
        "only {blocks_checked} blocks compared byte for byte"
    );
}

// Unaligned pushes give the same v0 DAG as whole-chunk pushes.
#[test]
fn v0_unaligned_pushes_give_the_same_root() {
    for vector in vectors_in(V0_VECTORS)
        .iter()
        .filter(|v| v.size_bytes <= 4 << 20)
    {
        let options = options_for(vector, HashKind::Sha2_256, CidVersion::V0);
        let (summary, _) = import(vector, 4 * 1013, options, false);
        assert_eq!(
            summary.root.to_string(),
            vector.root_cid,
            "vector {}",
            vector.name
        );
    }
}

// The v0 empty file is the one plain `ipfs add` prints.
#[test]
fn reference_agrees_on_the_v0_empty_file() {
    let empty = vectors_in(V0_VECTORS)
        .into_iter()
        .find(|v| v.name == "empty")
        .expect("empty vector");
    assert_eq!(
        empty.root_cid,
        "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    );
}
