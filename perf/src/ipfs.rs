//! What a CAR export of a UnixFS import must look like, computed with the
//! pure importer and no store: the reference `ours-harness` checks its
//! library and HTTP exports against (untimed).

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use bytes::BytesMut;
use metanode_core::cid::ContentId;
use metanode_unixfs::car::{encode_header, encode_section_prefix};
use metanode_unixfs::{Block, ImportOptions, Importer};

/// Input read size; matches the store's add path so leaves are sliced from
/// the same buffers.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// The CARv1 (dag-scope=all, no duplicates) of a file imported as UnixFS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedCar {
    pub root: ContentId,
    /// File bytes imported.
    pub size_bytes: u64,
    /// Distinct blocks of the DAG, i.e. sections of the CAR.
    pub blocks_count: u64,
    /// Header plus every section (`varint ‖ cid ‖ block`).
    pub car_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("reading {path} at byte {offset} for the expected car: {source}")]
pub struct ExpectedCarError {
    pub path: String,
    pub offset: u64,
    #[source]
    pub source: std::io::Error,
}

/// Imports `path` with `options` in memory (blocks are counted and dropped,
/// never held) and sizes the CAR a gateway must send for its root.
pub fn expected_car(path: &Path, options: ImportOptions) -> Result<ExpectedCar, ExpectedCarError> {
    let error = |offset, source| ExpectedCarError {
        path: path.display().to_string(),
        offset,
        source,
    };
    let mut file = std::fs::File::open(path).map_err(|e| error(0, e))?;
    let mut importer = Importer::new(options);
    let mut seen: HashSet<ContentId> = HashSet::new();
    let mut sections_bytes = 0u64;
    let mut out: Vec<Block> = Vec::new();
    let mut count = |out: &mut Vec<Block>| {
        for block in out.drain(..) {
            if seen.insert(block.cid) {
                let prefix = encode_section_prefix(&block.cid, block.data.len());
                sections_bytes += (prefix.len() + block.data.len()) as u64;
            }
        }
    };
    let mut offset = 0u64;
    loop {
        let mut buf = BytesMut::zeroed(READ_BUFFER_BYTES);
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(error(offset, e)),
        };
        buf.truncate(n);
        importer.push_bytes(buf.freeze(), &mut out);
        offset += n as u64;
        count(&mut out);
    }
    let summary = importer.finish(&mut out);
    count(&mut out);
    let header_bytes = encode_header(&[summary.root]).len() as u64;
    Ok(ExpectedCar {
        root: summary.root,
        size_bytes: summary.size_bytes,
        blocks_count: seen.len() as u64,
        car_bytes: header_bytes + sections_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use metanode_store::{Store, StoreOptions};
    use metanode_unixfs::{DagScope, stored};

    /// Export through the real store and compare with the pure reference:
    /// two chunks' worth of leaves under one parent, plus a partial leaf.
    #[test]
    fn expected_car_matches_a_store_export() {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("in.bin");
        let size_bytes = 2 * 262_144 + 1000;
        crate::blobgen::write_large_file(&input, 7, size_bytes).expect("input");
        let expected = expected_car(&input, ImportOptions::default()).expect("expected car");
        assert_eq!(expected.size_bytes, size_bytes);
        // Three raw leaves and the dag-pb root.
        assert_eq!(expected.blocks_count, 4);
        assert_eq!(expected.root.codec(), metanode_core::cid::CODEC_DAG_PB);

        let store = Store::open(StoreOptions::new(dir.path().join("store"))).expect("store");
        let mut file = std::fs::File::open(&input).expect("open input");
        let added = stored::add_file(
            &store,
            &mut file,
            ImportOptions::default(),
            true,
            &mut |_| {},
        )
        .expect("add");
        assert_eq!(added.root, expected.root);
        assert_eq!(added.size_bytes, size_bytes);
        let (report, car) = stored::export_car(&store, added.root, DagScope::All, None, Vec::new())
            .expect("export");
        assert_eq!(car.len() as u64, expected.car_bytes);
        assert_eq!(report.car_bytes, expected.car_bytes);
        assert_eq!(report.blocks_count, expected.blocks_count);
        // Byte by byte: a 59-byte header (varint 58, then the dag-cbor map
        // with one 36-byte CIDv1 root), then per section varint(36 + len),
        // the 36-byte CIDv1 (sha2-256) and the block.
        let root_len = store.get(&added.root).expect("root block").len() as u64;
        let section = |len: u64| varint_len(36 + len) + 36 + len;
        assert_eq!(
            expected.car_bytes,
            59 + 2 * section(262_144) + section(1000) + section(root_len)
        );
        assert_eq!(section(262_144), 3 + 36 + 262_144);
        store.close().expect("close");
    }

    /// The quick bench's input (32 MiB, seed 1): root and CAR size are
    /// what Helia (ipfs-unixfs-importer with Kubo's options, then
    /// @helia/car's export) printed for the same bytes.
    #[test]
    fn quick_bench_input_gives_helias_root_and_car_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("large.bin");
        crate::blobgen::write_large_file(&input, 1, 32 << 20).expect("input");
        let expected = expected_car(&input, ImportOptions::default()).expect("expected car");
        assert_eq!(
            expected.root.to_string(),
            "bafybeidpinj56g2hg5amvkao7hwdqgahrwtrlnixhjhko6vjzf7srftjlu"
        );
        assert_eq!(expected.car_bytes, 33_565_931);
        assert_eq!(expected.blocks_count, 129);
        assert_eq!(expected.size_bytes, 32 << 20);
    }

    fn varint_len(mut v: u64) -> u64 {
        let mut n = 1;
        while v >= 0x80 {
            v >>= 7;
            n += 1;
        }
        n
    }

    #[test]
    fn a_missing_input_names_the_path() {
        let err = expected_car(Path::new("/nonexistent/in.bin"), ImportOptions::default())
            .expect_err("no such file");
        assert_eq!(err.offset, 0);
        assert!(err.to_string().contains("/nonexistent/in.bin"), "{err}");
    }
}
