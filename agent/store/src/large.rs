//! Large blobs: their own data file plus a bao outboard.
//!
//! The outboard holds the BLAKE3 tree's parent hash pairs above 16 KiB chunk
//! groups (the layout iroh-blobs uses: bao-tree post-order, chunk log 4), so
//! any byte range is verified against the CID's digest by reading only that
//! range plus ~log2(size/16 KiB) hash pairs — a 1 GiB blob costs 4 MiB of
//! outboard and a 1-byte range read touches one 16 KiB group.
//!
//! Writing is a single pass: chunk-group chaining values are computed while
//! the data streams to disk, and the outboard is assembled from them at the
//! end (see [`GroupHasher`]); no second read of a 1 GiB file.

use std::fs::File;
use std::io::{self, Cursor};

use bao_tree::io::BaoContentItem;
use bao_tree::io::outboard::PostOrderOutboard;
use bao_tree::io::sync::{DecodeResponseIter, ReadAt, Size, encode_ranges};
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use metanode_sys::FileIo;

/// 16 chunks of 1 KiB per group, as iroh-blobs.
pub const CHUNK_LOG: u8 = 4;
pub const GROUP_BYTES: usize = 1024 << CHUNK_LOG;
const GROUP_CHUNKS: u64 = 1 << CHUNK_LOG;

pub fn block_size() -> BlockSize {
    BlockSize::from_chunk_log(CHUNK_LOG)
}

/// Streaming BLAKE3 that keeps every chunk group's chaining value.
#[derive(Debug)]
pub struct GroupHasher {
    /// Bytes of the current (incomplete) group.
    pending: Vec<u8>,
    /// Chaining values of completed groups, in order.
    cvs: Vec<ChainingValue>,
    size_bytes: u64,
}

impl Default for GroupHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl GroupHasher {
    pub fn new() -> Self {
        Self {
            pending: Vec::with_capacity(GROUP_BYTES),
            cvs: Vec::new(),
            size_bytes: 0,
        }
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.size_bytes += data.len() as u64;
        // A full group is only hashed once we know more data follows: if the
        // blob ends exactly at a group boundary and it is the only group, it
        // must be hashed as the root instead.
        while !data.is_empty() {
            if self.pending.len() == GROUP_BYTES {
                self.flush_group();
            }
            let take = (GROUP_BYTES - self.pending.len()).min(data.len());
            if self.pending.is_empty() && take == GROUP_BYTES && data.len() > GROUP_BYTES {
                // Fast path: hash straight from the caller's buffer.
                let start_chunk = self.cvs.len() as u64 * GROUP_CHUNKS;
                self.cvs.push(group_cv(start_chunk, &data[..GROUP_BYTES]));
                data = &data[GROUP_BYTES..];
                continue;
            }
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
    }

    fn flush_group(&mut self) {
        let start_chunk = self.cvs.len() as u64 * GROUP_CHUNKS;
        self.cvs.push(group_cv(start_chunk, &self.pending));
        self.pending.clear();
    }

    /// The BLAKE3 root (= `blake3::hash` of all data) and the post-order
    /// outboard bytes (64 bytes per parent above group level).
    pub fn finish(mut self) -> ([u8; 32], Vec<u8>) {
        if self.cvs.is_empty() {
            // Zero or one group: the root is a plain hash, no outboard.
            return (*blake3::hash(&self.pending).as_bytes(), Vec::new());
        }
        if !self.pending.is_empty() {
            self.flush_group();
        }
        let chunks = ChunkNum::chunks(self.size_bytes).0;
        let mut outboard = Vec::with_capacity(self.cvs.len().saturating_sub(1) * 64);
        let root = build(&self.cvs, 0, chunks, true, &mut outboard);
        (root, outboard)
    }
}

fn group_cv(start_chunk: u64, data: &[u8]) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(start_chunk * 1024);
    hasher.update(data);
    hasher.finalize_non_root()
}

/// Post-order walk of BLAKE3's tree over chunks `start..start+n`, emitting
/// parent pairs above the group level. BLAKE3 splits a subtree of n chunks
/// so the left side holds the largest power of two strictly less than n.
fn build(
    cvs: &[ChainingValue],
    start_chunk: u64,
    n_chunks: u64,
    is_root: bool,
    out: &mut Vec<u8>,
) -> [u8; 32] {
    if n_chunks <= GROUP_CHUNKS {
        let cv = cvs[(start_chunk / GROUP_CHUNKS) as usize];
        assert!(!is_root, "a single group is hashed as root by the caller");
        return cv;
    }
    let left_chunks = 1u64 << (63 - (n_chunks - 1).leading_zeros());
    let left = build(cvs, start_chunk, left_chunks, false, out);
    let right = build(
        cvs,
        start_chunk + left_chunks,
        n_chunks - left_chunks,
        false,
        out,
    );
    out.extend_from_slice(&left);
    out.extend_from_slice(&right);
    if is_root {
        *merge_subtrees_root(&left, &right, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(&left, &right, Mode::Hash)
    }
}

/// A file read through the store's I/O seam, for bao-tree.
struct SeamFile<'a> {
    io: &'a dyn FileIo,
    file: &'a File,
    size_bytes: u64,
}

impl ReadAt for SeamFile<'_> {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        if pos >= self.size_bytes {
            return Ok(0);
        }
        let n = buf.len().min((self.size_bytes - pos) as usize);
        self.io.read_exact_at(self.file, pos, &mut buf[..n])?;
        Ok(n)
    }
}

impl Size for SeamFile<'_> {
    fn size(&self) -> io::Result<Option<u64>> {
        Ok(Some(self.size_bytes))
    }
}

/// Why a verified range read failed.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("verification failed: {0}")]
    Corrupt(String),
}

/// A stored large blob: its open files and what they must hash to.
#[derive(Debug, Clone, Copy)]
pub struct LargeBlob<'a> {
    pub data: &'a File,
    pub outboard: &'a File,
    pub outboard_len: u64,
    /// The CID digest: the BLAKE3 root every byte is checked against.
    pub root: [u8; 32],
    pub size_bytes: u64,
}

/// Read `[offset, offset+len)` of a large blob, verifying every byte against
/// `root` (the CID digest) through the outboard. The caller has clamped the
/// range to the blob size.
pub fn read_range_verified(
    io: &dyn FileIo,
    blob: LargeBlob<'_>,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, RangeError> {
    let LargeBlob {
        data,
        outboard,
        outboard_len,
        root,
        size_bytes,
    } = blob;
    assert!(offset + len <= size_bytes, "range clamped by caller");
    if len == 0 {
        return Ok(Vec::new());
    }
    let tree = BaoTree::new(size_bytes, block_size());
    if outboard_len != tree.outboard_size() {
        return Err(RangeError::Corrupt(format!(
            "outboard is {outboard_len} bytes, expected {}",
            tree.outboard_size()
        )));
    }
    let data_file = SeamFile {
        io,
        file: data,
        size_bytes,
    };
    let ob = PostOrderOutboard {
        root: blake3::Hash::from(root),
        tree,
        data: SeamFile {
            io,
            file: outboard,
            size_bytes: outboard_len,
        },
    };
    let ranges = ChunkRanges::from(ChunkNum::full_chunks(offset)..ChunkNum::chunks(offset + len));
    let mut encoded = Vec::with_capacity(len as usize + len as usize / 200 + 4096);
    encode_ranges(&data_file, &ob, &ranges, &mut encoded).map_err(|e| match e {
        bao_tree::io::EncodeError::Io(io) => RangeError::Io(io),
        other => RangeError::Corrupt(other.to_string()),
    })?;
    let mut out = vec![0u8; len as usize];
    let mut covered = 0u64;
    let end = offset + len;
    for item in DecodeResponseIter::new(
        blake3::Hash::from(root),
        tree,
        Cursor::new(&encoded),
        &ranges,
    ) {
        let item = item.map_err(|e| RangeError::Corrupt(e.to_string()))?;
        if let BaoContentItem::Leaf(leaf) = item {
            let leaf_end = leaf.offset + leaf.data.len() as u64;
            let from = leaf.offset.max(offset);
            let to = leaf_end.min(end);
            if from < to {
                out[(from - offset) as usize..(to - offset) as usize].copy_from_slice(
                    &leaf.data[(from - leaf.offset) as usize..(to - leaf.offset) as usize],
                );
                covered += to - from;
            }
        }
    }
    if covered != len {
        return Err(RangeError::Corrupt(format!(
            "verified {covered} of {len} requested bytes"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metanode_sys::PosixIo;
    use std::io::Write;

    fn data(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u64 * 2654435761 % 251) as u8)
            .collect()
    }

    #[test]
    fn matches_blake3_and_bao_tree_outboard() {
        for len in [
            0usize,
            1,
            1024,
            GROUP_BYTES - 1,
            GROUP_BYTES,
            GROUP_BYTES + 1,
            3 * GROUP_BYTES,
            5 * GROUP_BYTES + 7,
            1 << 20,
            (1 << 20) + 3 * 1024 + 5,
        ] {
            let d = data(len);
            // Feed in awkward pieces to exercise the buffering.
            let mut h = GroupHasher::new();
            for piece in d.chunks(7777) {
                h.update(piece);
            }
            let (root, ob) = h.finish();
            assert_eq!(root, *blake3::hash(&d).as_bytes(), "root len={len}");
            let tree = BaoTree::new(len as u64, block_size());
            let mut expected = Vec::new();
            bao_tree::io::sync::outboard_post_order(&d[..], tree, &mut expected).unwrap();
            assert_eq!(ob, expected, "outboard len={len}");
            // One big update takes the fast path; same answer.
            let mut h2 = GroupHasher::new();
            h2.update(&d);
            assert_eq!(h2.finish(), (root, ob));
        }
    }

    #[test]
    fn ranges_verify_and_detect_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let len = 5 * GROUP_BYTES + 123;
        let d = data(len);
        let mut h = GroupHasher::new();
        h.update(&d);
        let (root, ob) = h.finish();
        let dp = dir.path().join("d");
        let op = dir.path().join("o");
        std::fs::File::create(&dp).unwrap().write_all(&d).unwrap();
        std::fs::File::create(&op).unwrap().write_all(&ob).unwrap();
        let df = File::open(&dp).unwrap();
        let of = File::open(&op).unwrap();
        let io = PosixIo;
        for (off, n) in [
            (0, len),
            (0, 1),
            (len - 1, 1),
            (1000, 40_000),
            (GROUP_BYTES, GROUP_BYTES),
        ] {
            let got = read_range_verified(
                &io,
                LargeBlob {
                    data: &df,
                    outboard: &of,
                    outboard_len: ob.len() as u64,
                    root,
                    size_bytes: len as u64,
                },
                off as u64,
                n as u64,
            )
            .unwrap();
            assert_eq!(got, &d[off..off + n], "range {off}+{n}");
        }
        // Flip one byte in group 3: ranges touching it fail, others pass.
        let mut bad = d.clone();
        bad[3 * GROUP_BYTES + 10] ^= 1;
        std::fs::write(&dp, &bad).unwrap();
        let df = File::open(&dp).unwrap();
        let err = read_range_verified(
            &io,
            LargeBlob {
                data: &df,
                outboard: &of,
                outboard_len: ob.len() as u64,
                root,
                size_bytes: len as u64,
            },
            (3 * GROUP_BYTES) as u64,
            100,
        );
        assert!(matches!(err, Err(RangeError::Corrupt(_))), "{err:?}");
        let ok = read_range_verified(
            &io,
            LargeBlob {
                data: &df,
                outboard: &of,
                outboard_len: ob.len() as u64,
                root,
                size_bytes: len as u64,
            },
            0,
            100,
        )
        .unwrap();
        assert_eq!(ok, &d[..100]);
        // A damaged outboard is caught too.
        let mut bad_ob = ob.clone();
        bad_ob[5] ^= 1;
        std::fs::write(&dp, &d).unwrap();
        std::fs::write(&op, &bad_ob).unwrap();
        let df = File::open(&dp).unwrap();
        let of = File::open(&op).unwrap();
        assert!(
            read_range_verified(
                &io,
                LargeBlob {
                    data: &df,
                    outboard: &of,
                    outboard_len: ob.len() as u64,
                    root,
                    size_bytes: len as u64,
                },
                0,
                len as u64
            )
            .is_err()
        );
    }
}
