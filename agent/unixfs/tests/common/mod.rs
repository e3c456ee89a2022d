//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::cell::RefCell;

use bytes::Bytes;
use metanode_core::cid::{BlockKey, CODEC_DAG_PB, ContentId, HashKind};
use metanode_core::dagpb::{self, PbLink, PbNode};
use metanode_unixfs::{
    Block, BlockSource, CidVersion, DataType, ImportOptions, ImportSummary, MemoryBlocks,
    SourceError, UnixFsData, import_bytes,
};

/// Import `data` and keep every block in memory.
pub fn import_into_memory(
    data: &[u8],
    options: ImportOptions,
) -> (MemoryBlocks, ImportSummary, Vec<Block>) {
    let (blocks, summary) = import_bytes(data, options);
    let mut memory = MemoryBlocks::new();
    for block in &blocks {
        memory
            .insert(block.clone())
            .expect("importer blocks verify");
    }
    (memory, summary, blocks)
}

pub fn options(chunk_size_bytes: u64, links_per_node_max: u64) -> ImportOptions {
    ImportOptions::new(chunk_size_bytes, links_per_node_max, HashKind::Sha2_256)
        .expect("test options")
}

/// [`options`] naming blocks as plain `ipfs add` does (CIDv0, dag-pb leaves).
pub fn options_v0(chunk_size_bytes: u64, links_per_node_max: u64) -> ImportOptions {
    options(chunk_size_bytes, links_per_node_max)
        .with_cid_version(CidVersion::V0)
        .expect("v0 test options")
}

/// A source that records which CIDs were fetched.
pub struct Counting<S> {
    pub inner: S,
    pub fetched: RefCell<Vec<ContentId>>,
}

impl<S> Counting<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            fetched: RefCell::new(Vec::new()),
        }
    }
}

impl<S: BlockSource> BlockSource for Counting<S> {
    fn block(&self, cid: &ContentId) -> Result<Bytes, SourceError> {
        self.fetched.borrow_mut().push(*cid);
        self.inner.block(cid)
    }
}

/// A dag-pb block (sha2-256, CIDv1) from links and UnixFS data.
pub fn dag_pb_block(links: Vec<(ContentId, &str, u64)>, unixfs: &UnixFsData<'_>) -> Block {
    let node = PbNode {
        links: links
            .into_iter()
            .map(|(cid, name, tsize)| PbLink {
                hash: cid.to_bytes(),
                name: Some(name.as_bytes().to_vec()),
                tsize: Some(tsize),
            })
            .collect(),
        data: Some(unixfs.encode()),
    };
    block_of(CODEC_DAG_PB, dagpb::encode(&node))
}

pub fn block_of(codec: u64, data: Vec<u8>) -> Block {
    let key = BlockKey {
        kind: HashKind::Sha2_256,
        digest: HashKind::Sha2_256.digest(&data),
    };
    Block {
        cid: ContentId::from_key(codec, key),
        data: Bytes::from(data),
    }
}

/// A UnixFS File node over `children` (cid, file bytes under it).
pub fn file_node(children: &[(ContentId, u64)], own: Option<&[u8]>) -> Block {
    let mut unixfs = UnixFsData::new(DataType::File);
    unixfs.data = own;
    unixfs.blocksizes = children.iter().map(|c| c.1).collect();
    unixfs.filesize = Some(unixfs.content_size_bytes().expect("small sizes"));
    dag_pb_block(
        children
            .iter()
            .map(|&(cid, size)| (cid, "", size))
            .collect(),
        &unixfs,
    )
}

/// Concatenate a stream of pieces.
pub fn collect<E: std::fmt::Debug>(pieces: impl Iterator<Item = Result<Bytes, E>>) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in pieces {
        out.extend_from_slice(&piece.expect("piece"));
    }
    out
}
