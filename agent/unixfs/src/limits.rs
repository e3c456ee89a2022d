//! Every bound of the IPFS data model code, in one place.
//!
//! The block size bound itself is shared with the store and lives in
//! [`metanode_core::dagpb::limits::BLOCK_SIZE_BYTES_MAX`].

pub use metanode_core::dagpb::limits::BLOCK_SIZE_BYTES_MAX;

// ---- importer ----

/// Kubo's and `ipfs-unixfs-importer`'s default chunk size (256 KiB).
pub const CHUNK_SIZE_BYTES_DEFAULT: u64 = 262_144;
/// Largest chunk we cut. Kubo refuses `--chunker size-N` above 1 MiB (its
/// `ChunkSizeLimit`), well under the 2 MiB block limit.
pub const CHUNK_SIZE_BYTES_MAX: u64 = 1024 * 1024;
/// Kubo's balanced-layout default: links per file node.
pub const LINKS_PER_NODE_MAX_DEFAULT: u64 = 174;
/// Smallest accepted links-per-node: with 1 the balanced layout never
/// converges (every level has as many nodes as the one below).
pub const LINKS_PER_NODE_MAX_FLOOR: u64 = 2;
/// Largest accepted links-per-node; keeps a parent node far below the block
/// limit (see the assertion below) and the importer's memory small.
pub const LINKS_PER_NODE_MAX_CEILING: u64 = 4096;

/// Upper bound of one encoded link of a file node: field key + length (3) +
/// Hash field (2 + 36-byte CID) + empty Name (2) + Tsize (1 + 10), plus its
/// blocksizes entry in the UnixFS data (1 + 10).
pub const FILE_NODE_LINK_SIZE_BYTES_MAX: u64 = 3 + 2 + 36 + 2 + 11 + 11;

/// Bytes a dag-pb leaf (CIDv0 imports) adds around its chunk: dag-pb Data
/// key + length (1 + 10), UnixFS Type (2), Data key + length (1 + 10),
/// filesize key + value (1 + 10).
pub const DAG_PB_LEAF_OVERHEAD_BYTES_MAX: u64 = 11 + 2 + 11 + 11;

const _: () = assert!(CHUNK_SIZE_BYTES_DEFAULT <= CHUNK_SIZE_BYTES_MAX);
const _: () =
    assert!(CHUNK_SIZE_BYTES_MAX + DAG_PB_LEAF_OVERHEAD_BYTES_MAX <= BLOCK_SIZE_BYTES_MAX);
const _: () = assert!(LINKS_PER_NODE_MAX_FLOOR <= LINKS_PER_NODE_MAX_DEFAULT);
const _: () = assert!(LINKS_PER_NODE_MAX_DEFAULT <= LINKS_PER_NODE_MAX_CEILING);
// A full file node (links + blocksizes + a few bytes of Type/filesize) fits a block.
const _: () = assert!(
    LINKS_PER_NODE_MAX_CEILING * FILE_NODE_LINK_SIZE_BYTES_MAX + 64 <= BLOCK_SIZE_BYTES_MAX
);

// ---- reading and traversal ----

/// Deepest file DAG we read. A balanced file of 174-link nodes over 1-byte
/// chunks reaches depth 9 at 2^64 bytes, so only a hostile or broken DAG
/// gets here.
pub const FILE_DEPTH_MAX: usize = 32;
/// Deepest DAG a `dag-scope=all` traversal follows (directories nest files,
/// HAMT shards and further directories). Each level holds one node's link
/// list, so this also bounds the traversal's memory.
pub const TRAVERSAL_DEPTH_MAX: usize = 256;

const _: () = assert!(FILE_DEPTH_MAX <= TRAVERSAL_DEPTH_MAX);

/// Blocks a traversal hints ahead and a [`crate::stored::ReadAhead`] holds
/// at once (queued, being read, or read and not yet taken): with one reader
/// thread beside the traversal's own, 4 keeps both busy, and bounds the
/// read-ahead's memory to 4 blocks (1 MiB of 256 KiB leaves; 8 MiB at the
/// largest block we read).
pub const READ_AHEAD_BLOCKS: usize = 4;
/// Block buffers a [`crate::stored::ReadAhead`] keeps for reuse once the
/// blocks read into them are dropped (written to the CAR): the read-ahead's
/// blocks, the one the traversal reads itself and the one being written.
/// Reusing them spares zeroing a fresh buffer (or faulting it in) on every
/// block read.
pub const READ_AHEAD_BUFFERS_KEPT_MAX: usize = READ_AHEAD_BLOCKS + 2;
/// A buffer bigger than this is freed, not kept: a block has at most
/// [`BLOCK_SIZE_BYTES_MAX`] bytes (plus the store's record header while it
/// is read), so only a huge non-block blob read through the store exceeds
/// it. Bounds the pool to about 12 MiB.
pub const READ_AHEAD_BUFFER_SIZE_BYTES_MAX: u64 = BLOCK_SIZE_BYTES_MAX + 4096;

const _: () = assert!(READ_AHEAD_BUFFERS_KEPT_MAX > READ_AHEAD_BLOCKS);
const _: () = assert!(
    READ_AHEAD_BUFFER_SIZE_BYTES_MAX
        >= BLOCK_SIZE_BYTES_MAX + metanode_store::record::RECORD_HEADER_BYTES as u64
);

// ---- CAR ----

/// Largest CAR header (varint-prefixed dag-cbor) we read; a header naming one
/// root is about 60 bytes.
pub const CAR_HEADER_SIZE_BYTES_MAX: u64 = 64 * 1024;
/// Most roots a CAR header may name.
pub const CAR_ROOTS_COUNT_MAX: usize = 1024;
/// Longest binary CID in a CAR section (a 64-byte digest with 9-byte varints).
pub const CAR_CID_SIZE_BYTES_MAX: u64 = 4 * 9 + 64;
/// Largest CAR section (CID + block) we read.
pub const CAR_SECTION_SIZE_BYTES_MAX: u64 = BLOCK_SIZE_BYTES_MAX + CAR_CID_SIZE_BYTES_MAX;
/// Size of the CARv2 pragma (varint 10 + dag-cbor `{version: 2}`).
pub const CAR_V2_PRAGMA_SIZE_BYTES: u64 = 11;
/// Size of the fixed CARv2 header that follows the pragma.
pub const CAR_V2_HEADER_SIZE_BYTES: u64 = 40;
/// Internal read buffer of the CAR reader.
pub const CAR_READ_BUFFER_SIZE_BYTES: usize = 64 * 1024;

const _: () = assert!(CAR_ROOTS_COUNT_MAX as u64 * 40 <= CAR_HEADER_SIZE_BYTES_MAX);
