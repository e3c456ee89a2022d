//! Where readers and traversals get blocks from.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use metanode_core::cid::{BlockKey, ContentId};

use crate::Block;

/// A source of blocks by CID (the store, a CAR being imported, a map in
/// tests).
///
/// Contract: a returned block MUST already be verified against the CID's
/// multihash. Readers and traversals here do not hash again, because the
/// store verifies every read and hashing twice would halve gateway
/// throughput.
pub trait BlockSource {
    fn block(&self, cid: &ContentId) -> Result<Bytes, SourceError>;

    /// A hint from a traversal: these blocks are asked for next, in this
    /// order (unless a failure ends the walk first). A source that can read
    /// ahead starts on them; the default ignores the hint.
    fn prefetch(&self, _upcoming: &[ContentId]) {}
}

impl<T: BlockSource + ?Sized> BlockSource for &T {
    fn block(&self, cid: &ContentId) -> Result<Bytes, SourceError> {
        (**self).block(cid)
    }

    fn prefetch(&self, upcoming: &[ContentId]) {
        (**self).prefetch(upcoming)
    }
}

impl<T: BlockSource + ?Sized> BlockSource for Arc<T> {
    fn block(&self, cid: &ContentId) -> Result<Bytes, SourceError> {
        (**self).block(cid)
    }

    fn prefetch(&self, upcoming: &[ContentId]) {
        (**self).prefetch(upcoming)
    }
}

/// Why a source could not produce a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("block {0} not found")]
    NotFound(ContentId),
    #[error("block {cid}: {reason}")]
    Other { cid: ContentId, reason: String },
}

impl SourceError {
    /// The CID the error is about.
    pub fn cid(&self) -> &ContentId {
        match self {
            SourceError::NotFound(cid) | SourceError::Other { cid, .. } => cid,
        }
    }
}

/// Blocks in memory, keyed by multihash like an IPFS blockstore (so a CIDv0
/// and a CIDv1 of the same bytes find the same block). Verifies on insert.
#[derive(Debug, Default, Clone)]
pub struct MemoryBlocks {
    blocks: HashMap<BlockKey, Bytes>,
}

impl MemoryBlocks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Insert a block after checking its bytes against its CID.
    pub fn insert(&mut self, block: Block) -> Result<(), SourceError> {
        if !block.cid.key().matches(&block.data) {
            return Err(SourceError::Other {
                cid: block.cid,
                reason: "bytes do not match the cid's multihash".into(),
            });
        }
        self.blocks.insert(block.cid.key(), block.data);
        Ok(())
    }

    /// Number of distinct blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

impl BlockSource for MemoryBlocks {
    fn block(&self, cid: &ContentId) -> Result<Bytes, SourceError> {
        self.blocks
            .get(&cid.key())
            .cloned()
            .ok_or(SourceError::NotFound(*cid))
    }
}
