//! IPFS data model for the store (issue #8), pure and I/O-free except
//! through traits:
//!
//! - [`importer`]: UnixFS file import giving the same root CID as
//!   `ipfs add --cid-version 1` (fixed-size chunks, raw leaves, balanced
//!   layout with 174 links per node, sha2-256 or BLAKE3) or, with
//!   [`CidVersion::V0`], as plain `ipfs add` (CIDv0, dag-pb leaves);
//! - [`data`]: the UnixFS `Data` protobuf;
//! - [`reader`]: file size and zero-copy range reads across a DAG, fetching
//!   only the blocks a range needs;
//! - [`car`]: CARv1 writing, CARv1/CARv2 reading with per-block
//!   verification;
//! - [`traverse`]: the trustless gateway's CAR block selection
//!   (`dag-scope`, `entity-bytes`, DFS order, no duplicates).
//!
//! The dag-pb codec itself is [`metanode_core::dagpb`]. Directories are not
//! imported (files only); reading and traversal understand directories and
//! HAMT shards as far as the gateway needs.

pub mod car;
pub mod data;
pub mod importer;
pub mod limits;
pub mod reader;
pub mod source;
pub mod stored;
#[doc(hidden)]
pub mod testdata;
pub mod traverse;

use bytes::Bytes;
use metanode_core::cid::ContentId;

pub use car::{CarReadError, CarReader, CarWriteError, CarWriter};
pub use data::{DataType, UnixFsData, UnixFsError};
pub use importer::{
    Chunker, CidVersion, DagBuilder, ImportOptions, ImportOptionsError, ImportSummary, Importer,
    KuboAddFlags, import_bytes,
};
pub use reader::{FileRange, ReadError, UnixFsFile, file_size};
pub use source::{BlockSource, MemoryBlocks, SourceError};
pub use traverse::{CarBlocks, DagScope, EntityBytes, GatewayParamError, parse_dag_scope};

/// A block and its CID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub cid: ContentId,
    pub data: Bytes,
}
