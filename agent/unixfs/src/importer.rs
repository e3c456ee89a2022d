//! UnixFS file import with Kubo's parameters, producing exactly the DAG that
//! `ipfs add --cid-version 1` (the default here) or plain `ipfs add`
//! ([`CidVersion::V0`]) and `ipfs-unixfs-importer` produce:
//!
//! - fixed-size chunks (`--chunker size-N`, 256 KiB by default);
//! - CIDv1: raw leaves (codec raw). CIDv0 (`Qm…`): dag-pb leaves with no
//!   links and UnixFS `{Type: File, Data: chunk, filesize}` (Data absent for
//!   an empty chunk), since a raw block has no CIDv0; every block and every
//!   link of a v0 DAG is a CIDv0, and v0 implies sha2-256;
//! - balanced layout: leaves are grouped `links_per_node_max` (174) at a
//!   time under dag-pb File nodes, those nodes again, until one root is left;
//!   a partial last group still gets its own parent (even of one child);
//! - a file of at most one chunk is just its leaf (reduce-single-leaf-to-
//!   self), so the empty file is the raw block of no bytes (v1) or the node
//!   `{Data: {Type: File, filesize: 0}}` (v0, `QmbFMke1…`);
//! - parent nodes: UnixFS `{Type: File, filesize, blocksizes}` with every
//!   link `{Hash, Name: "", Tsize}`; a leaf child's Tsize is its block length
//!   and its blocksize its chunk length, a parent child's Tsize is its block
//!   length plus its links' Tsizes and its blocksize is its filesize.
//!
//! The importer is a pure state machine: bytes in, blocks out (leaves first,
//! every parent after its children). It keeps at most one partial chunk plus
//! `links_per_node_max` pending links per tree level, never the file.

use bytes::{Bytes, BytesMut};
use metanode_core::cid::{BlockKey, CODEC_DAG_PB, CODEC_RAW, ContentId, HashKind};
use metanode_core::dagpb::{self, PbLink, PbNode, varint};

use crate::Block;
use crate::data::{DataType, UnixFsData};
use crate::limits::{
    BLOCK_SIZE_BYTES_MAX, CHUNK_SIZE_BYTES_DEFAULT, CHUNK_SIZE_BYTES_MAX,
    DAG_PB_LEAF_OVERHEAD_BYTES_MAX, LINKS_PER_NODE_MAX_CEILING, LINKS_PER_NODE_MAX_DEFAULT,
    LINKS_PER_NODE_MAX_FLOOR,
};

/// The CID version an import names its blocks with. It also picks the
/// leaves, as Kubo does: CIDv1 imports use raw leaves, CIDv0 imports dag-pb
/// leaves (a raw block has no CIDv0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CidVersion {
    /// `Qm…`: what plain `ipfs add` prints (Kubo's default). sha2-256 only.
    V0,
    /// `bafy…` / `bafk…`: `ipfs add --cid-version 1`, raw leaves.
    #[default]
    V1,
}

impl CidVersion {
    /// 0 or 1, as `--cid-version` spells it.
    pub const fn number(self) -> u64 {
        match self {
            CidVersion::V0 => 0,
            CidVersion::V1 => 1,
        }
    }

    /// True when leaves are raw blocks (CIDv1), false for dag-pb leaves.
    pub const fn raw_leaves(self) -> bool {
        matches!(self, CidVersion::V1)
    }
}

/// Import parameters; always valid once constructed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportOptions {
    chunk_size_bytes: u64,
    links_per_node_max: u64,
    hash: HashKind,
    cid_version: CidVersion,
}

impl Default for ImportOptions {
    /// Kubo's `ipfs add --cid-version 1`: 256 KiB chunks, 174 links per
    /// node, sha2-256, raw leaves.
    fn default() -> Self {
        Self {
            chunk_size_bytes: CHUNK_SIZE_BYTES_DEFAULT,
            links_per_node_max: LINKS_PER_NODE_MAX_DEFAULT,
            hash: HashKind::Sha2_256,
            cid_version: CidVersion::V1,
        }
    }
}

/// Kubo's `ipfs add` flags as text (CLI arguments, HTTP query values);
/// `None` leaves Kubo's default (for the CID version: 1, this project's
/// default; plain `ipfs add` is `cid_version: Some("0")`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KuboAddFlags<'a> {
    /// `--chunker`: `size-N`.
    pub chunker: Option<&'a str>,
    /// `--hash`: `sha2-256` or `blake3`.
    pub hash: Option<&'a str>,
    /// `--cid-version`: `0` or `1`.
    pub cid_version: Option<&'a str>,
    /// `--raw-leaves`: must agree with the CID version (true for 1, false
    /// for 0); accepted so Kubo command lines keep working.
    pub raw_leaves: Option<bool>,
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
    #[error(
        "cid-version {value:?} is not supported; use 0 (CIDv0 Qm…, what plain `ipfs add` prints) or 1 (CIDv1)"
    )]
    CidVersion { value: String },
    #[error(
        "cid-version 0 supports only the sha2-256 hash (a CIDv0 cannot name another), not {hash}; use cid-version 1 for {hash}"
    )]
    CidV0Hash { hash: &'static str },
    #[error(
        "raw-leaves={raw_leaves} does not fit cid-version {cid_version}: cid-version 0 uses dag-pb leaves (a raw block has no CIDv0), cid-version 1 raw leaves"
    )]
    RawLeaves { raw_leaves: bool, cid_version: u64 },
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
            cid_version: CidVersion::V1,
        })
    }

    /// Options from Kubo's `ipfs add` flags (see [`KuboAddFlags`]); the
    /// flags are checked together, so their order never matters.
    pub fn from_kubo_flags(flags: &KuboAddFlags<'_>) -> Result<Self, ImportOptionsError> {
        let chunk_size_bytes = flags
            .chunker
            .map_or(Ok(CHUNK_SIZE_BYTES_DEFAULT), parse_chunker)?;
        let hash = flags.hash.map_or(Ok(HashKind::Sha2_256), parse_hash)?;
        let cid_version = flags
            .cid_version
            .map_or(Ok(CidVersion::default()), parse_cid_version)?;
        let options = Self::new(chunk_size_bytes, LINKS_PER_NODE_MAX_DEFAULT, hash)?
            .with_cid_version(cid_version)?;
        match flags.raw_leaves {
            Some(raw_leaves) => options.with_raw_leaves(raw_leaves),
            None => Ok(options),
        }
    }

    /// The same options with another hash function; CIDv0 refuses any hash
    /// but sha2-256.
    pub fn with_hash(self, hash: HashKind) -> Result<Self, ImportOptionsError> {
        Self::check_v0_hash(self.cid_version, hash)?;
        Ok(Self { hash, ..self })
    }

    /// The same options naming blocks with `cid_version` (which also picks
    /// raw or dag-pb leaves); CIDv0 refuses any hash but sha2-256.
    pub fn with_cid_version(self, cid_version: CidVersion) -> Result<Self, ImportOptionsError> {
        Self::check_v0_hash(cid_version, self.hash)?;
        Ok(Self {
            cid_version,
            ..self
        })
    }

    /// Check Kubo's `--raw-leaves` against the CID version: leaves are raw
    /// exactly under CIDv1, so a disagreeing value is refused rather than
    /// silently giving another DAG than the caller asked for.
    pub fn with_raw_leaves(self, raw_leaves: bool) -> Result<Self, ImportOptionsError> {
        if raw_leaves != self.raw_leaves() {
            return Err(ImportOptionsError::RawLeaves {
                raw_leaves,
                cid_version: self.cid_version.number(),
            });
        }
        Ok(self)
    }

    fn check_v0_hash(cid_version: CidVersion, hash: HashKind) -> Result<(), ImportOptionsError> {
        if cid_version == CidVersion::V0 && hash != HashKind::Sha2_256 {
            return Err(ImportOptionsError::CidV0Hash { hash: hash.name() });
        }
        Ok(())
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

    pub fn cid_version(&self) -> CidVersion {
        self.cid_version
    }

    /// True when leaves are raw blocks (CIDv1), false for dag-pb leaves.
    pub fn raw_leaves(&self) -> bool {
        self.cid_version.raw_leaves()
    }

    /// Codec of this import's leaves.
    pub fn leaf_codec(&self) -> u64 {
        if self.raw_leaves() {
            CODEC_RAW
        } else {
            CODEC_DAG_PB
        }
    }

    /// The block a chunk becomes: the chunk itself (raw leaves, no copy), or
    /// the dag-pb node `{Data: UnixFS {Type: File, Data: chunk, filesize}}`
    /// with no links, byte for byte what `ipfs-unixfs-importer` writes for
    /// `rawLeaves: false, leafType: 'file'` (Data absent for an empty chunk).
    pub fn leaf_block_data(&self, chunk: Bytes) -> Bytes {
        if self.raw_leaves() {
            return chunk;
        }
        Bytes::from(dag_pb_file_leaf(&chunk))
    }

    /// The id of the block of `codec` with `key` under this import's CID
    /// version.
    pub fn cid_from_key(&self, codec: u64, key: BlockKey) -> ContentId {
        match self.cid_version {
            CidVersion::V1 => ContentId::from_key(codec, key),
            // Options never pair v0 with another hash or with raw leaves,
            // so anything else here is a bug.
            CidVersion::V0 => match ContentId::from_key_v0(key) {
                Some(cid) if codec == CODEC_DAG_PB => cid,
                _ => panic!(
                    "a CIDv0 import named a {} block of codec 0x{codec:x}",
                    key.kind.name()
                ),
            },
        }
    }

    /// The id of `data` as a block of `codec`, hashed and versioned as this
    /// import names blocks.
    pub fn cid_of(&self, codec: u64, data: &[u8]) -> ContentId {
        self.cid_from_key(
            codec,
            BlockKey {
                kind: self.hash,
                digest: self.hash.digest(data),
            },
        )
    }
}

/// Encode a dag-pb File leaf in one pass: the chunk is copied once, where
/// building the UnixFS message and then the dag-pb node would copy it twice
/// more (a tested twin of `dagpb::encode` over `UnixFsData::encode`).
fn dag_pb_file_leaf(chunk: &[u8]) -> Vec<u8> {
    let len = chunk.len() as u64;
    // UnixFS Type (field 1) = File, then Data (field 2) when non-empty.
    let mut head = Vec::with_capacity(2 + 1 + 10);
    head.extend_from_slice(&[1 << 3, DataType::File.code() as u8]);
    if !chunk.is_empty() {
        head.push(2 << 3 | 2);
        varint::write(&mut head, len);
    }
    // filesize (field 3).
    let mut tail = Vec::with_capacity(1 + 10);
    tail.push(3 << 3);
    varint::write(&mut tail, len);
    let unixfs_len = head.len() + chunk.len() + tail.len();
    let mut out = Vec::with_capacity(1 + 10 + unixfs_len);
    // dag-pb Data (field 1); a node with no links has nothing else.
    out.push(1 << 3 | 2);
    varint::write(&mut out, unixfs_len as u64);
    out.extend_from_slice(&head);
    out.extend_from_slice(chunk);
    out.extend_from_slice(&tail);
    assert!(out.len() as u64 <= len + DAG_PB_LEAF_OVERHEAD_BYTES_MAX);
    out
}

/// Parse Kubo's `--cid-version` value: `0` or `1`.
pub fn parse_cid_version(value: &str) -> Result<CidVersion, ImportOptionsError> {
    match value {
        "0" => Ok(CidVersion::V0),
        "1" => Ok(CidVersion::V1),
        _ => Err(ImportOptionsError::CidVersion {
            value: value.chars().take(64).collect(),
        }),
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

    /// Add the next leaf of the file: `cid` names its block of
    /// `block_bytes` ([`ImportOptions::leaf_block_data`]) holding
    /// `content_bytes` of the file. Parents it completes go to `out`.
    pub fn push_leaf(
        &mut self,
        cid: ContentId,
        block_bytes: u64,
        content_bytes: u64,
        out: &mut Vec<Block>,
    ) {
        let options = &self.options;
        assert!(
            cid.codec() == options.leaf_codec()
                && cid.key().kind == options.hash
                && cid.version() == options.cid_version.number(),
            "leaf {cid} is not a leaf of this import's codec, hash and cid version"
        );
        assert!(
            block_bytes >= content_bytes,
            "leaf {cid} of {block_bytes} bytes cannot hold {content_bytes} bytes of file"
        );
        self.size_bytes += content_bytes;
        self.blocks_count += 1;
        self.add(
            0,
            Pending {
                cid,
                tsize: block_bytes,
                content_bytes,
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
        let cid = self.options.cid_of(CODEC_DAG_PB, &block);
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

/// The CIDv1 of `data` as a block of `codec`, hashed with `kind`.
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
    options: ImportOptions,
    chunker: Chunker,
    builder: DagBuilder,
    /// Leaves cut by the last push, reused to keep its allocation.
    leaves: Vec<Bytes>,
}

impl Importer {
    pub fn new(options: ImportOptions) -> Self {
        Self {
            options,
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
            options,
            chunker,
            mut builder,
            mut leaves,
        } = self;
        chunker.finish(&mut leaves);
        emit_leaves(options, &mut builder, &mut leaves, out);
        builder.finish(out)
    }

    fn emit_leaves(&mut self, leaves: &mut Vec<Bytes>, out: &mut Vec<Block>) {
        emit_leaves(self.options, &mut self.builder, leaves, out);
    }
}

/// Hash each leaf on this thread and hand it to the builder; the leaf goes
/// to `out` before any parent it completes.
fn emit_leaves(
    options: ImportOptions,
    builder: &mut DagBuilder,
    leaves: &mut Vec<Bytes>,
    out: &mut Vec<Block>,
) {
    for chunk in leaves.drain(..) {
        let content_bytes = chunk.len() as u64;
        let data = options.leaf_block_data(chunk);
        let cid = options.cid_of(options.leaf_codec(), &data);
        let block_bytes = data.len() as u64;
        out.push(Block { cid, data });
        builder.push_leaf(cid, block_bytes, content_bytes, out);
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

    fn flags<'a>(
        chunker: Option<&'a str>,
        hash: Option<&'a str>,
        cid_version: Option<&'a str>,
        raw_leaves: Option<bool>,
    ) -> Result<ImportOptions, ImportOptionsError> {
        ImportOptions::from_kubo_flags(&KuboAddFlags {
            chunker,
            hash,
            cid_version,
            raw_leaves,
        })
    }

    #[test]
    fn kubo_flags() {
        assert_eq!(
            flags(None, None, None, None).unwrap(),
            ImportOptions::default()
        );
        let o = flags(Some("size-1024"), Some("blake3"), None, None).unwrap();
        assert_eq!((o.chunk_size_bytes(), o.hash()), (1024, HashKind::Blake3));
        assert_eq!((o.cid_version(), o.raw_leaves()), (CidVersion::V1, true));
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

    // Plain `ipfs add` = cid-version 0: sha2-256, dag-pb leaves. Kubo refuses
    // v0 with another hash; raw leaves are refused under v0 (and their
    // absence under v1), whatever order the flags come in.
    #[test]
    fn cid_version_flags() {
        let v0 = flags(None, None, Some("0"), None).unwrap();
        assert_eq!(v0.cid_version(), CidVersion::V0);
        assert_eq!((v0.raw_leaves(), v0.leaf_codec()), (false, CODEC_DAG_PB));
        assert_eq!(v0.hash(), HashKind::Sha2_256);
        assert_eq!(
            flags(None, Some("sha2-256"), Some("0"), Some(false)),
            Ok(v0)
        );
        assert_eq!(
            flags(None, None, Some("1"), Some(true)),
            Ok(ImportOptions::default())
        );
        let err = flags(None, Some("blake3"), Some("0"), None).unwrap_err();
        assert_eq!(err, ImportOptionsError::CidV0Hash { hash: "blake3" });
        assert!(err.to_string().contains("cid-version 0"), "{err}");
        assert_eq!(
            ImportOptions::default()
                .with_hash(HashKind::Blake3)
                .unwrap()
                .with_cid_version(CidVersion::V0),
            Err(ImportOptionsError::CidV0Hash { hash: "blake3" })
        );
        assert_eq!(
            v0.with_hash(HashKind::Blake3),
            Err(ImportOptionsError::CidV0Hash { hash: "blake3" })
        );
        assert_eq!(
            flags(None, None, Some("0"), Some(true)),
            Err(ImportOptionsError::RawLeaves {
                raw_leaves: true,
                cid_version: 0
            })
        );
        assert_eq!(
            flags(None, None, None, Some(false)),
            Err(ImportOptionsError::RawLeaves {
                raw_leaves: false,
                cid_version: 1
            })
        );
        for bad in ["2", "v0", "", "00", " 0", "-1"] {
            let err = flags(None, None, Some(bad), None).unwrap_err();
            assert_eq!(
                err,
                ImportOptionsError::CidVersion {
                    value: bad.to_string()
                }
            );
            assert!(err.to_string().starts_with("cid-version"), "{err}");
        }
    }

    // The well-known id plain `ipfs add` prints for the empty file.
    #[test]
    fn v0_empty_file_is_kubos() {
        let options = ImportOptions::default()
            .with_cid_version(CidVersion::V0)
            .unwrap();
        let (blocks, summary) = import_bytes(b"", options);
        assert_eq!(
            summary.root.to_string(),
            "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
        );
        assert_eq!(blocks.len(), 1);
        assert_eq!(&blocks[0].data[..], &[0x0a, 0x04, 0x08, 0x02, 0x18, 0x00]);
        assert_eq!((summary.size_bytes, summary.blocks_count), (0, 1));
    }

    // The one-pass leaf encoder writes what the generic dag-pb and UnixFS
    // encoders write, for chunk lengths around every varint boundary.
    #[test]
    fn dag_pb_leaf_matches_the_generic_encoders() {
        for len in [0usize, 1, 2, 100, 127, 128, 129, 16_383, 16_384, 262_144] {
            let chunk: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let mut unixfs = UnixFsData::new(DataType::File);
            unixfs.data = (!chunk.is_empty()).then_some(&chunk[..]);
            unixfs.filesize = Some(len as u64);
            let expected = dagpb::encode(&PbNode {
                links: Vec::new(),
                data: Some(unixfs.encode()),
            });
            assert_eq!(dag_pb_file_leaf(&chunk), expected, "chunk of {len} bytes");
            let decoded =
                UnixFsData::decode(dagpb::decode(&expected).unwrap().data.as_deref().unwrap())
                    .unwrap()
                    .content_size_bytes();
            assert_eq!(decoded, Some(len as u64));
        }
    }

    // Under v0 every block and every link is a CIDv0, leaves are dag-pb, and
    // a leaf's Tsize is its block length while its blocksize is its chunk's.
    #[test]
    fn v0_links_are_v0_and_leaf_tsize_is_the_block_length() {
        let options = ImportOptions::new(4, 174, HashKind::Sha2_256)
            .unwrap()
            .with_cid_version(CidVersion::V0)
            .unwrap();
        let (blocks, summary) = import_bytes(b"abcdefg", options);
        assert_eq!(blocks.len(), 3);
        assert!(blocks.iter().all(|b| b.cid.version() == 0
            && b.cid.codec() == CODEC_DAG_PB
            && b.cid.key().matches(&b.data)));
        assert!(
            summary.root.to_string().starts_with("Qm"),
            "{}",
            summary.root
        );
        // Leaf "abcd": Data {Type File, Data "abcd", filesize 4}.
        assert_eq!(
            &blocks[0].data[..],
            &[
                0x0a, 0x0a, 0x08, 0x02, 0x12, 0x04, b'a', b'b', b'c', b'd', 0x18, 0x04
            ]
        );
        let root = dagpb::decode(&blocks[2].data).unwrap();
        assert_eq!(root.links.len(), 2);
        for (link, leaf) in root.links.iter().zip(&blocks[..2]) {
            assert_eq!(link.hash, leaf.cid.to_bytes());
            assert_eq!(link.hash.len(), 34, "a CIDv0 link is the bare multihash");
            assert_eq!(link.tsize, Some(leaf.data.len() as u64));
        }
        let unixfs = UnixFsData::decode(root.data.as_deref().unwrap()).unwrap();
        assert_eq!(unixfs.blocksizes, vec![4, 3]);
        assert_eq!(unixfs.filesize, Some(7));
        assert_eq!((summary.size_bytes, summary.blocks_count), (7, 3));
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
