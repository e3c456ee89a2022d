//! UnixFS file import with Kubo's parameters, producing exactly the DAG that
//! `ipfs add --cid-version 1` and `ipfs-unixfs-importer` produce:
//!
//! - fixed-size chunks (`--chunker size-N`, 256 KiB by default);
//! - raw leaves (codec raw, CIDv1);
//! - balanced layout: leaves are grouped `links_per_node_max` (174) at a
//!   time under dag-pb File nodes, those nodes again, until one root is left;
//!   a partial last group still gets its own parent (even of one child);
//! - a file of at most one chunk is just its raw leaf (reduce-single-leaf-to-
//!   self), so the empty file is the raw block of no bytes;
//! - parent nodes: UnixFS `{Type: File, filesize, blocksizes}` with every
//!   link `{Hash, Name: "", Tsize}`; a raw child's Tsize and blocksize are its
//!   length, a parent child's Tsize is its block length plus its links'
//!   Tsizes and its blocksize is its filesize.
//!
//! The importer is a pure state machine: bytes in, blocks out (leaves first,
//! every parent after its children). It keeps at most one partial chunk plus
//! `links_per_node_max` pending links per tree level, never the file.

use bytes::{Bytes, BytesMut};
use metanode_core::cid::{BlockKey, CODEC_DAG_PB, CODEC_RAW, ContentId, HashKind};
use metanode_core::dagpb::{self, PbLink, PbNode};

use crate::Block;
use crate::data::{DataType, UnixFsData};
use crate::limits::{
    BLOCK_SIZE_BYTES_MAX, CHUNK_SIZE_BYTES_DEFAULT, CHUNK_SIZE_BYTES_MAX,
    LINKS_PER_NODE_MAX_CEILING, LINKS_PER_NODE_MAX_DEFAULT, LINKS_PER_NODE_MAX_FLOOR,
};

/// Import parameters; always valid once constructed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportOptions {
    chunk_size_bytes: u64,
    links_per_node_max: u64,
    hash: HashKind,
}

impl Default for ImportOptions {
    /// Kubo's defaults: 256 KiB chunks, 174 links per node, sha2-256.
    fn default() -> Self {
        Self {
            chunk_size_bytes: CHUNK_SIZE_BYTES_DEFAULT,
            links_per_node_max: LINKS_PER_NODE_MAX_DEFAULT,
            hash: HashKind::Sha2_256,
        }
    }
}

/// Why import options were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportOptionsError {
    #[error("chunk size {value} bytes is outside 1..={max}")]
    ChunkSize { value: u64, max: u64 },
    #[error("links per node {value} is outside {min}..={max}")]
    LinksPerNode { value: u64, min: u64, max: u64 },
    #[error("chunker {spec:?} is not supported; use size-N (fixed-size chunks of N bytes)")]
    Chunker { spec: String },
    #[error("hash {name:?} is not supported; use sha2-256 or blake3")]
    Hash { name: String },
}

impl ImportOptions {
    pub fn new(
        chunk_size_bytes: u64,
        links_per_node_max: u64,
        hash: HashKind,
    ) -> Result<Self, ImportOptionsError> {
        if !(1..=CHUNK_SIZE_BYTES_MAX).contains(&chunk_size_bytes) {
            return Err(ImportOptionsError::ChunkSize {
                value: chunk_size_bytes,
                max: CHUNK_SIZE_BYTES_MAX,
            });
        }
        if !(LINKS_PER_NODE_MAX_FLOOR..=LINKS_PER_NODE_MAX_CEILING).contains(&links_per_node_max) {
            return Err(ImportOptionsError::LinksPerNode {
                value: links_per_node_max,
                min: LINKS_PER_NODE_MAX_FLOOR,
                max: LINKS_PER_NODE_MAX_CEILING,
            });
        }
        Ok(Self {
            chunk_size_bytes,
            links_per_node_max,
            hash,
        })
    }

    /// Kubo's flags: `--chunker` (`size-N`; `None` for the default) and
    /// `--hash` (`sha2-256` or `blake3`; `None` for sha2-256).
    pub fn from_kubo_flags(
        chunker: Option<&str>,
        hash: Option<&str>,
    ) -> Result<Self, ImportOptionsError> {
        let chunk_size_bytes = chunker.map_or(Ok(CHUNK_SIZE_BYTES_DEFAULT), parse_chunker)?;
        let hash = hash.map_or(Ok(HashKind::Sha2_256), parse_hash)?;
        Self::new(chunk_size_bytes, LINKS_PER_NODE_MAX_DEFAULT, hash)
    }

    /// The same options with another hash function.
    pub fn with_hash(self, hash: HashKind) -> Self {
        Self { hash, ..self }
    }

    pub fn chunk_size_bytes(&self) -> u64 {
        self.chunk_size_bytes
    }

    pub fn links_per_node_max(&self) -> u64 {
        self.links_per_node_max
    }

    pub fn hash(&self) -> HashKind {
        self.hash
    }
}

/// Parse Kubo's `--chunker` value; only fixed-size `size-N` is supported.
pub fn parse_chunker(spec: &str) -> Result<u64, ImportOptionsError> {
    let refused = || ImportOptionsError::Chunker {
        spec: spec.chars().take(64).collect(),
    };
    let digits = spec.strip_prefix("size-").ok_or_else(refused)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refused());
    }
    let value: u64 = digits.parse().map_err(|_| refused())?;
    if !(1..=CHUNK_SIZE_BYTES_MAX).contains(&value) {
        return Err(ImportOptionsError::ChunkSize {
            value,
            max: CHUNK_SIZE_BYTES_MAX,
        });
    }
    Ok(value)
}

/// Parse Kubo's `--hash` value.
pub fn parse_hash(name: &str) -> Result<HashKind, ImportOptionsError> {
    match name {
        "sha2-256" => Ok(HashKind::Sha2_256),
        "blake3" => Ok(HashKind::Blake3),
        _ => Err(ImportOptionsError::Hash {
            name: name.chars().take(64).collect(),
        }),
    }
}

/// The outcome of an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    pub root: ContentId,
    /// Bytes of file content imported.
    pub size_bytes: u64,
    /// Blocks emitted, counting a repeated chunk each time it occurs.
    pub blocks_count: u64,
}

/// A child waiting for its parent.
#[derive(Debug, Clone, Copy)]
struct Pending {
    cid: ContentId,
    /// Cumulative DAG size as the reference importer computes it.
    tsize: u64,
    /// File bytes under this child (its blocksize entry in the parent).
    content_bytes: u64,
}

/// The fixed-size chunker: file bytes in, leaf contents out. It keeps at
/// most one partial chunk.
#[derive(Debug)]
pub struct Chunker {
    chunk_size: usize,
    chunk: BytesMut,
    leaves_count: u64,
}

impl Chunker {
    pub fn new(options: ImportOptions) -> Self {
        Self {
            chunk_size: options.chunk_size_bytes as usize,
            chunk: BytesMut::new(),
            leaves_count: 0,
        }
    }

    /// Bytes held in the partial chunk.
    pub fn partial_bytes(&self) -> usize {
        self.chunk.len()
    }

    /// Cut `data` into leaves, appended to `leaves`. Each byte is copied
    /// once, into the chunk that becomes its leaf.
    pub fn push(&mut self, mut data: &[u8], leaves: &mut Vec<Bytes>) {
        let chunk_size = self.chunk_size;
        while !data.is_empty() {
            if self.chunk.is_empty() && data.len() >= chunk_size {
                let (head, tail) = data.split_at(chunk_size);
                self.emit(Bytes::copy_from_slice(head), leaves);
                data = tail;
                continue;
            }
            if self.chunk.capacity() == 0 {
                self.chunk.reserve(chunk_size);
            }
            let take = (chunk_size - self.chunk.len()).min(data.len());
            let (head, tail) = data.split_at(take);
            self.chunk.extend_from_slice(head);
            data = tail;
            if self.chunk.len() == chunk_size {
                let leaf = std::mem::take(&mut self.chunk).freeze();
                self.emit(leaf, leaves);
            }
        }
    }

    /// Like [`Chunker::push`], but whole chunks are sliced out of `data`
    /// without copying when no partial chunk is pending.
    pub fn push_bytes(&mut self, mut data: Bytes, leaves: &mut Vec<Bytes>) {
        while self.chunk.is_empty() && data.len() >= self.chunk_size {
            let leaf = data.split_to(self.chunk_size);
            self.emit(leaf, leaves);
        }
        self.push(&data, leaves);
    }

    /// The last (partial) chunk; the reference chunker yields one empty
    /// chunk for an empty file.
    pub fn finish(mut self, leaves: &mut Vec<Bytes>) {
        if !self.chunk.is_empty() || self.leaves_count == 0 {
            let leaf = std::mem::take(&mut self.chunk).freeze();
            self.emit(leaf, leaves);
        }
    }

    fn emit(&mut self, leaf: Bytes, leaves: &mut Vec<Bytes>) {
        self.leaves_count += 1;
        leaves.push(leaf);
    }
}

/// The balanced-layout tree above the leaves: leaf CIDs in (in file order),
/// parent blocks out, each after its children. It keeps at most
/// `links_per_node_max` pending links per tree level.
#[derive(Debug)]
pub struct DagBuilder {
    options: ImportOptions,
    /// `levels[0]` holds leaves, `levels[k]` nodes of height k, each fewer
    /// than `links_per_node_max` (a full level is reduced at once).
    levels: Vec<Vec<Pending>>,
    size_bytes: u64,
    blocks_count: u64,
}

impl DagBuilder {
    pub fn new(options: ImportOptions) -> Self {
        Self {
            options,
            levels: vec![Vec::new()],
            size_bytes: 0,
            blocks_count: 0,
        }
    }

    /// File bytes under the leaves added so far.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Add the next leaf of the file: `cid` names its `len` bytes (raw
    /// codec, this import's hash). Parents it completes go to `out`.
    pub fn push_leaf(&mut self, cid: ContentId, len: u64, out: &mut Vec<Block>) {
        assert!(
            cid.codec() == CODEC_RAW && cid.key().kind == self.options.hash,
            "leaf {cid} is not a raw leaf of this import's hash"
        );
        self.size_bytes += len;
        self.blocks_count += 1;
        self.add(
            0,
            Pending {
                cid,
                tsize: len,
                content_bytes: len,
            },
            out,
        );
    }

    /// Build the remaining parents and name the root. At least one leaf
    /// must have been pushed ([`Chunker::finish`] always yields one).
    pub fn finish(mut self, out: &mut Vec<Block>) -> ImportSummary {
        let mut level = 0;
        let root = loop {
            let is_top = self.levels[level + 1..].iter().all(Vec::is_empty);
            let count = self.levels[level].len();
            if is_top {
                assert!(count > 0, "importer lost its root at level {level}");
                if count == 1 {
                    break self.levels[level][0];
                }
            }
            if count > 0 {
                let children = std::mem::take(&mut self.levels[level]);
                let parent = self.emit_parent(&children, out);
                self.add(level + 1, parent, out);
            }
            level += 1;
        };
        ImportSummary {
            root: root.cid,
            size_bytes: self.size_bytes,
            blocks_count: self.blocks_count,
        }
    }

    /// Append to a level; a level reaching `links_per_node_max` becomes a
    /// parent one level up at once (what batching the stream does).
    fn add(&mut self, mut level: usize, mut entry: Pending, out: &mut Vec<Block>) {
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(entry);
            if self.levels[level].len() as u64 != self.options.links_per_node_max {
                return;
            }
            let children = std::mem::take(&mut self.levels[level]);
            entry = self.emit_parent(&children, out);
            level += 1;
        }
    }

    fn emit_parent(&mut self, children: &[Pending], out: &mut Vec<Block>) -> Pending {
        let mut unixfs = UnixFsData::new(DataType::File);
        unixfs.blocksizes = children.iter().map(|c| c.content_bytes).collect();
        let content_bytes: u64 = unixfs.blocksizes.iter().sum();
        unixfs.filesize = Some(content_bytes);
        let node = PbNode {
            links: children
                .iter()
                .map(|c| PbLink {
                    hash: c.cid.to_bytes(),
                    name: Some(Vec::new()),
                    tsize: Some(c.tsize),
                })
                .collect(),
            data: Some(unixfs.encode()),
        };
        let block = dagpb::encode(&node);
        // Guaranteed by LINKS_PER_NODE_MAX_CEILING (see limits.rs).
        assert!(block.len() as u64 <= BLOCK_SIZE_BYTES_MAX);
        let cid = cid_of(self.options.hash, CODEC_DAG_PB, &block);
        let tsize = block.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>();
        self.blocks_count += 1;
        out.push(Block {
            cid,
            data: Bytes::from(block),
        });
        Pending {
            cid,
            tsize,
            content_bytes,
        }
    }
}

/// The CID of `data` as a block of `codec`, hashed with `kind`.
pub fn cid_of(kind: HashKind, codec: u64, data: &[u8]) -> ContentId {
    ContentId::from_key(
        codec,
        BlockKey {
            kind,
            digest: kind.digest(data),
        },
    )
}

/// Streaming UnixFS importer ([`Chunker`], leaf hashing, [`DagBuilder`] on
/// one thread); see the module docs.
#[derive(Debug)]
pub struct Importer {
    hash: HashKind,
    chunker: Chunker,
    builder: DagBuilder,
    /// Leaves cut by the last push, reused to keep its allocation.
    leaves: Vec<Bytes>,
}

impl Importer {
    pub fn new(options: ImportOptions) -> Self {
        Self {
            hash: options.hash,
            chunker: Chunker::new(options),
            builder: DagBuilder::new(options),
            leaves: Vec::new(),
        }
    }

    /// Bytes accepted so far.
    pub fn size_bytes(&self) -> u64 {
        self.builder.size_bytes() + self.chunker.partial_bytes() as u64
    }

    /// Feed file bytes; completed blocks are appended to `out`. Each byte is
    /// copied once, into the chunk that becomes its leaf block.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Block>) {
        let mut leaves = std::mem::take(&mut self.leaves);
        self.chunker.push(data, &mut leaves);
        self.emit_leaves(&mut leaves, out);
        self.leaves = leaves;
    }

    /// Like [`Importer::push`], but whole chunks are sliced out of `data`
    /// without copying when no partial chunk is pending.
    pub fn push_bytes(&mut self, data: Bytes, out: &mut Vec<Block>) {
        let mut leaves = std::mem::take(&mut self.leaves);
        self.chunker.push_bytes(data, &mut leaves);
        self.emit_leaves(&mut leaves, out);
        self.leaves = leaves;
    }

    /// Flush the last chunk, build the remaining parents, and name the root.
    pub fn finish(self, out: &mut Vec<Block>) -> ImportSummary {
        let Importer {
            hash,
            chunker,
            mut builder,
            mut leaves,
        } = self;
        chunker.finish(&mut leaves);
        emit_leaves(hash, &mut builder, &mut leaves, out);
        builder.finish(out)
    }

    fn emit_leaves(&mut self, leaves: &mut Vec<Bytes>, out: &mut Vec<Block>) {
        emit_leaves(self.hash, &mut self.builder, leaves, out);
    }
}

/// Hash each leaf on this thread and hand it to the builder; the leaf goes
/// to `out` before any parent it completes.
fn emit_leaves(
    hash: HashKind,
    builder: &mut DagBuilder,
    leaves: &mut Vec<Bytes>,
    out: &mut Vec<Block>,
) {
    for data in leaves.drain(..) {
        let cid = cid_of(hash, CODEC_RAW, &data);
        let len = data.len() as u64;
        out.push(Block { cid, data });
        builder.push_leaf(cid, len, out);
    }
}

/// Import a whole buffer at once (tests, small files).
pub fn import_bytes(data: &[u8], options: ImportOptions) -> (Vec<Block>, ImportSummary) {
    let mut importer = Importer::new(options);
    let mut blocks = Vec::new();
    importer.push(data, &mut blocks);
    let summary = importer.finish(&mut blocks);
    (blocks, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_bounded() {
        assert_eq!(
            ImportOptions::new(0, 174, HashKind::Sha2_256),
            Err(ImportOptionsError::ChunkSize {
                value: 0,
                max: CHUNK_SIZE_BYTES_MAX
            })
        );
        assert!(ImportOptions::new(CHUNK_SIZE_BYTES_MAX + 1, 174, HashKind::Sha2_256).is_err());
        assert!(ImportOptions::new(1, 1, HashKind::Sha2_256).is_err());
        assert!(ImportOptions::new(1, LINKS_PER_NODE_MAX_CEILING + 1, HashKind::Sha2_256).is_err());
        let ok = ImportOptions::new(CHUNK_SIZE_BYTES_MAX, 2, HashKind::Blake3).unwrap();
        assert_eq!(ok.chunk_size_bytes(), CHUNK_SIZE_BYTES_MAX);
        assert_eq!(ok.links_per_node_max(), 2);
        assert_eq!(ok.hash(), HashKind::Blake3);
    }

    #[test]
    fn kubo_flags() {
        assert_eq!(
            ImportOptions::from_kubo_flags(None, None).unwrap(),
            ImportOptions::default()
        );
        let o = ImportOptions::from_kubo_flags(Some("size-1024"), Some("blake3")).unwrap();
        assert_eq!((o.chunk_size_bytes(), o.hash()), (1024, HashKind::Blake3));
        for bad in [
            "size-", "size-x", "rabin", "size--1", "size-+5", "buzhash", "",
        ] {
            assert!(
                matches!(parse_chunker(bad), Err(ImportOptionsError::Chunker { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_chunker("size-0"),
            Err(ImportOptionsError::ChunkSize { value: 0, .. })
        ));
        assert!(matches!(
            parse_chunker("size-99999999999999999999999"),
            Err(ImportOptionsError::Chunker { .. })
        ));
        assert!(matches!(
            parse_hash("sha3-256"),
            Err(ImportOptionsError::Hash { .. })
        ));
    }

    // The well-known `ipfs add --cid-version 1` id of the empty file.
    #[test]
    fn empty_file_is_the_empty_raw_block() {
        let (blocks, summary) = import_bytes(b"", ImportOptions::default());
        assert_eq!(
            summary.root.to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
        assert_eq!(blocks.len(), 1);
        assert!(blocks[0].data.is_empty());
        assert_eq!((summary.size_bytes, summary.blocks_count), (0, 1));
    }

    /// Two chunks: a parent with two links, byte-for-byte what the reference
    /// importer writes (links `{Hash, Name: "", Tsize}`, Data
    /// `{File, filesize, blocksizes}`).
    #[test]
    fn two_chunk_parent_layout() {
        let options = ImportOptions::new(4, 174, HashKind::Sha2_256).unwrap();
        let (blocks, summary) = import_bytes(b"abcdefg", options);
        assert_eq!(blocks.len(), 3);
        assert_eq!(&blocks[0].data[..], b"abcd");
        assert_eq!(&blocks[1].data[..], b"efg");
        let root = &blocks[2];
        assert_eq!(root.cid, summary.root);
        assert_eq!(root.cid.codec(), CODEC_DAG_PB);
        let mut expected = Vec::new();
        for leaf in &blocks[..2] {
            let hash = leaf.cid.to_bytes();
            expected.extend_from_slice(&[0x12, 2 + 36 + 2 + 2, 0x0a, 36]);
            expected.extend_from_slice(&hash);
            expected.extend_from_slice(&[0x12, 0x00, 0x18, leaf.data.len() as u8]);
        }
        expected.extend_from_slice(&[0x0a, 8, 0x08, 0x02, 0x18, 7, 0x20, 4, 0x20, 3]);
        assert_eq!(&root.data[..], &expected[..]);
        assert_eq!(summary.size_bytes, 7);
    }

    #[test]
    fn streaming_in_any_pieces_gives_the_same_dag() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let options = ImportOptions::new(100, 3, HashKind::Blake3).unwrap();
        let (whole, summary) = import_bytes(&data, options);
        for piece in [1usize, 7, 99, 100, 101, 333, 10_000] {
            let mut importer = Importer::new(options);
            let mut blocks = Vec::new();
            for part in data.chunks(piece) {
                importer.push(part, &mut blocks);
            }
            assert_eq!(importer.finish(&mut blocks), summary, "piece {piece}");
            assert_eq!(blocks.len(), whole.len());
            assert!(
                blocks
                    .iter()
                    .zip(&whole)
                    .all(|(a, b)| a.cid == b.cid && a.data == b.data)
            );

            let mut importer = Importer::new(options);
            let mut blocks = Vec::new();
            for part in data.chunks(piece) {
                importer.push_bytes(Bytes::copy_from_slice(part), &mut blocks);
            }
            assert_eq!(
                importer.finish(&mut blocks),
                summary,
                "push_bytes piece {piece}"
            );
        }
        assert_eq!(summary.root.key().kind, HashKind::Blake3);
    }

    #[test]
    fn every_parent_follows_its_children() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let options = ImportOptions::new(10, 4, HashKind::Sha2_256).unwrap();
        let (blocks, summary) = import_bytes(&data, options);
        let mut seen = std::collections::HashSet::new();
        for block in &blocks {
            assert!(block.cid.key().matches(&block.data));
            if block.cid.codec() == CODEC_DAG_PB {
                for child in dagpb::links(&block.data).unwrap() {
                    assert!(seen.contains(&child), "{} before child {child}", block.cid);
                }
            }
            seen.insert(block.cid);
        }
        assert_eq!(blocks.last().unwrap().cid, summary.root);
        assert_eq!(summary.blocks_count, blocks.len() as u64);
    }
}
