//! Content-addressed blob store ("relay storage").
//!
//! Layout of a data dir:
//! ```text
//! LOCK                  flock'd by the one process that owns the store
//! packs/<id>.seg        append-only segment logs of small blobs + state records
//! blobs/<hash>.data     large blobs, one file each
//! blobs/<hash>.obao     their bao outboards (BLAKE3 tree above 16 KiB groups)
//! tmp/                  large blobs being written (emptied at open)
//! ```
//! Why it is fast: every put of a small blob is one record appended to the
//! active segment by a single writer thread, which gathers all puts that
//! arrived while the previous flush ran and makes them durable with one
//! write+fdatasync (group commit); under a bulk load a few such writes
//! share one fdatasync, and the page-aligned middle of a big write skips
//! the page cache (O_DIRECT). No per-blob files, no per-blob fsync.
//!
//! Why it is safe: a put is acknowledged only after the record (and, for a
//! large blob, its renamed data file and directory) is durable. The index is
//! rebuilt from the logs at open, a torn tail is cut off, and every read is
//! checked against the key's hash, so a damaged byte is reported, never
//! served.

mod gc;
mod index;
pub mod large;
pub mod record;
mod scan;
mod verify;
mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metanode_core::cid::{BlockKey, CODEC_RAW, ContentId, HashKind};
use metanode_sys::FileIo;
pub use metanode_sys::IoMode;
use parking_lot::{Mutex, RwLock};

pub use gc::{GcError, GcProgress, GcReport};
use index::{Entry, Index, Storage};
pub use verify::{Damaged, VerifyError, VerifyProgress, VerifyReport};
use writer::{Applied, Op, Reply, WriteError};

/// Compression of packed (inline) blobs. Large blobs are stored raw so any
/// range can be read and verified without decompressing from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd { level: i32 },
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    pub io: IoMode,
    pub compression: Compression,
    /// Blobs up to this size are packed into segments.
    pub inline_size_bytes_max: u64,
    pub segment_size_bytes_max: u64,
    pub group_commit_batch_bytes_max: u64,
    pub group_commit_batch_count_max: usize,
    /// Open without a writer (shared lock): reads, stat and verify only.
    pub read_only: bool,
    /// Test hook: wrap the chosen I/O (fault injection).
    pub io_override: Option<Arc<dyn FileIo>>,
}

pub mod limits {
    //! Store bounds. (The agent-wide registry is metanode_core::limits; these
    //! are the store's defaults and hard caps, checked against each other.)

    /// Kubo's default chunk is 256 KiB: every UnixFS leaf must be packed.
    pub const INLINE_SIZE_BYTES_MAX_DEFAULT: u64 = 256 * 1024;
    /// Packed blobs above this would make records too big to batch well.
    pub const INLINE_SIZE_BYTES_MAX_CAP: u64 = 4 * 1024 * 1024;
    pub const SEGMENT_SIZE_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;
    pub const GROUP_COMMIT_BATCH_BYTES_MAX_DEFAULT: u64 = 8 * 1024 * 1024;
    pub const GROUP_COMMIT_BATCH_COUNT_MAX_DEFAULT: usize = 1024;
    /// While more ops are queued, the writer may write up to this many
    /// batches before one fdatasync covers them all (answers wait for it).
    /// On our VMs an fdatasync after 8 MiB took 1.5-6 ms, as long as
    /// writing the 8 MiB.
    pub const GROUP_COMMIT_WRITES_PER_SYNC_MAX: u64 = 4;
    /// Operations queued for the writer before `put` blocks (backpressure).
    pub const WRITER_QUEUE_DEPTH_MAX: usize = 1024;
    /// Largest single blob (stored as one file + outboard).
    pub const BLOB_SIZE_BYTES_MAX: u64 = 1 << 40;
    /// 1/N of every segment is kept for tombstones and pin changes (data
    /// records stop short of it), so space can be freed on a full disk.
    pub const SEGMENT_STATE_RESERVE_DIVISOR: u64 = 8;
    /// A segment is compacted when at least this share of it is garbage.
    pub const GC_GARBAGE_RATIO_MIN_PERCENT: u64 = 25;
    /// Largest IPFS block [`crate::Store::put_blocks`] accepts: trustless
    /// gateway clients refuse bigger ones, and Kubo's largest chunker is 1 MiB.
    pub const BLOCK_SIZE_BYTES_MAX: u64 = 2 * 1024 * 1024;

    /// Alignment of O_DIRECT writes (file offset, length and memory): the
    /// largest logical block size in common use, so it suits 512-byte
    /// devices too.
    pub const DIRECT_IO_ALIGN_BYTES: u64 = 4096;
    /// A group commit writes its page-aligned middle with O_DIRECT when that
    /// middle is at least this big (a bulk import's batches); smaller ones go
    /// through the page cache. On the VMs we run on, buffered write +
    /// fdatasync of 8 MiB ran at ~110 MB/s and O_DIRECT + fdatasync at
    /// ~1.2 GB/s (`dd bs=8M oflag=dsync` vs `oflag=direct,dsync`).
    pub const DIRECT_WRITE_BYTES_MIN: u64 = 1024 * 1024;

    const _: () = assert!(DIRECT_IO_ALIGN_BYTES.is_power_of_two());
    const _: () = assert!(DIRECT_WRITE_BYTES_MIN.is_multiple_of(DIRECT_IO_ALIGN_BYTES));
    const _: () = assert!(DIRECT_WRITE_BYTES_MIN <= GROUP_COMMIT_BATCH_BYTES_MAX_DEFAULT);
    const _: () = assert!(INLINE_SIZE_BYTES_MAX_DEFAULT <= INLINE_SIZE_BYTES_MAX_CAP);
    const _: () = assert!(INLINE_SIZE_BYTES_MAX_CAP < GROUP_COMMIT_BATCH_BYTES_MAX_DEFAULT);
    const _: () = assert!(GROUP_COMMIT_BATCH_BYTES_MAX_DEFAULT < SEGMENT_SIZE_BYTES_MAX_DEFAULT);
    // A record length is stored as u32.
    const _: () = assert!(INLINE_SIZE_BYTES_MAX_CAP < u32::MAX as u64 / 2);
    // IPFS blocks are always packed, whatever inline_size_bytes_max says.
    const _: () = assert!(BLOCK_SIZE_BYTES_MAX <= INLINE_SIZE_BYTES_MAX_CAP);
}

impl StoreOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            io: IoMode::Auto,
            compression: Compression::None,
            inline_size_bytes_max: limits::INLINE_SIZE_BYTES_MAX_DEFAULT,
            segment_size_bytes_max: limits::SEGMENT_SIZE_BYTES_MAX_DEFAULT,
            group_commit_batch_bytes_max: limits::GROUP_COMMIT_BATCH_BYTES_MAX_DEFAULT,
            group_commit_batch_count_max: limits::GROUP_COMMIT_BATCH_COUNT_MAX_DEFAULT,
            read_only: false,
            io_override: None,
        }
    }

    fn validate(&self) -> Result<(), OpenError> {
        let bad = |field: &'static str, why: String| Err(OpenError::BadOption { field, why });
        if self.inline_size_bytes_max == 0
            || self.inline_size_bytes_max > limits::INLINE_SIZE_BYTES_MAX_CAP
        {
            return bad(
                "inline_size_bytes_max",
                format!(
                    "{} is outside 1..={}",
                    self.inline_size_bytes_max,
                    limits::INLINE_SIZE_BYTES_MAX_CAP
                ),
            );
        }
        let record_max = self.inline_size_bytes_max + record::RECORD_HEADER_BYTES as u64;
        if self.group_commit_batch_bytes_max < record_max {
            return bad(
                "group_commit_batch_bytes_max",
                format!(
                    "{} is smaller than one inline record ({record_max})",
                    self.group_commit_batch_bytes_max
                ),
            );
        }
        if self.segment_size_bytes_max
            - self.segment_size_bytes_max / limits::SEGMENT_STATE_RESERVE_DIVISOR
            < self.group_commit_batch_bytes_max + record::SEGMENT_HEADER_BYTES as u64
        {
            return bad(
                "segment_size_bytes_max",
                format!(
                    "{} is smaller than one batch plus the segment header",
                    self.segment_size_bytes_max
                ),
            );
        }
        if self.group_commit_batch_count_max == 0 {
            return bad("group_commit_batch_count_max", "must be at least 1".into());
        }
        if let Compression::Zstd { level } = self.compression
            && !(1..=19).contains(&level)
        {
            return bad(
                "compression",
                format!("zstd level {level} is outside 1..=19"),
            );
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("store option {field}: {why}")]
    BadOption { field: &'static str, why: String },
    #[error(
        "data dir {dir} is on a read-only filesystem; a writable store cannot be opened there (open read-only to verify or read)"
    )]
    ReadOnly { dir: PathBuf },
    #[error("data dir {dir} is in use by another process{holder} (stop it, or use its HTTP API)")]
    Locked { dir: PathBuf, holder: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("io: {0}")]
    Select(#[from] metanode_sys::SelectError),
    #[error("segment {path} is unreadable: {why}")]
    BadSegment { path: PathBuf, why: String },
}

#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("blob of {size_bytes} bytes exceeds the maximum of {max_bytes}")]
    TooLarge { size_bytes: u64, max_bytes: u64 },
    #[error("store is out of space: {0} (delete blobs and run gc, or grow the disk)")]
    NoSpace(String),
    #[error("store data dir is read-only: {0}")]
    ReadOnly(String),
    #[error(
        "store stopped accepting writes after a failed sync ({0}); restart the agent to recover"
    )]
    Poisoned(String),
    #[error("store was opened read-only")]
    OpenedReadOnly,
    #[error("write failed: {0}")]
    Io(String),
    #[error("store is closed")]
    Closed,
    #[error("block {cid} does not match its CID (its bytes hash to {actual})")]
    BlockHashMismatch { cid: ContentId, actual: String },
    #[error("block {cid} is {size_bytes} bytes; IPFS blocks are at most {max_bytes}")]
    BlockTooLarge {
        cid: ContentId,
        size_bytes: u64,
        max_bytes: u64,
    },
}

/// Refuse a block above the size IPFS clients (and this store) take.
fn check_block_size(cid: &ContentId, data: &[u8], max_bytes: u64) -> Result<(), PutError> {
    if data.len() as u64 > max_bytes {
        return Err(PutError::BlockTooLarge {
            cid: *cid,
            size_bytes: data.len() as u64,
            max_bytes,
        });
    }
    Ok(())
}

/// Verify an IPFS block against its own multihash before storing it.
fn check_block_hash(cid: &ContentId, data: &[u8]) -> Result<(), PutError> {
    let key = cid.key();
    let actual = key.kind.digest(data);
    if actual != key.digest {
        return Err(PutError::BlockHashMismatch {
            cid: *cid,
            actual: format!("{}:{}", key.kind.name(), hex::encode(actual)),
        });
    }
    Ok(())
}

/// An IPFS block whose CID is known to name its bytes. The only ways to
/// make one hash the bytes ([`VerifiedBlock::hash`]) or check them against
/// a given CID ([`VerifiedBlock::check`]), so [`Store::put_verified_queued`]
/// can take it without hashing again: an importer that has just computed a
/// leaf's CID would otherwise pay for sha2-256 twice per byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBlock {
    cid: ContentId,
    data: bytes::Bytes,
}

impl VerifiedBlock {
    /// Name `data` with `codec` and a digest of `kind` computed here.
    pub fn hash(codec: u64, kind: HashKind, data: bytes::Bytes) -> Self {
        let key = BlockKey {
            kind,
            digest: kind.digest(&data),
        };
        Self {
            cid: ContentId::from_key(codec, key),
            data,
        }
    }

    /// Check `data` against `cid`'s multihash.
    pub fn check(cid: ContentId, data: bytes::Bytes) -> Result<Self, PutError> {
        check_block_hash(&cid, &data)?;
        Ok(Self { cid, data })
    }

    pub fn cid(&self) -> &ContentId {
        &self.cid
    }

    pub fn data(&self) -> &bytes::Bytes {
        &self.data
    }

    pub fn into_parts(self) -> (ContentId, bytes::Bytes) {
        (self.cid, self.data)
    }
}

/// Blocks queued by [`Store::put_blocks_queued`]; none is acknowledged
/// until [`PendingPuts::wait`] returns `Ok`.
#[derive(Debug)]
#[must_use = "blocks are not durable until wait() returns Ok"]
pub struct PendingPuts {
    store: Store,
    puts: Vec<(ContentId, u64, Option<writer::ReplyRx>)>,
}

impl PendingPuts {
    /// Wait until every queued block is durable. Waits for every reply even
    /// after a failure, so no op of the batch is in flight when the caller
    /// sees the error.
    pub fn wait(self) -> Result<Vec<PutOutcome>, PutError> {
        let mut outcomes = Vec::with_capacity(self.puts.len());
        let mut first_err = None;
        for (cid, size, rx) in self.puts {
            let res = match rx {
                None => Ok(self.store.existed(cid, size)),
                Some(rx) => rx
                    .recv_blocking()
                    .ok_or(PutError::Closed)
                    .and_then(|applied| self.store.finish_put(cid, size, applied)),
            };
            match res {
                Ok(o) => outcomes.push(o),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(outcomes),
        }
    }
}

/// While any hold lives, GC does not start its sweep (see [`Store::gc_hold`]).
#[derive(Debug)]
pub struct GcHold {
    _guard: parking_lot::ArcRwLockReadGuard<parking_lot::RawRwLock, ()>,
}

/// What reading a packed record into the caller's buffer came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InlineRead {
    /// The buffer holds the blob, verified against its key.
    Read,
    /// The segment was compacted away under us: look up again.
    Moved,
    /// A `nowait` read and the record is not in the page cache.
    NotCached,
}

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("{0} is not in the store")]
    NotFound(ContentId),
    #[error("{cid} is damaged on disk and was not served: {reason}")]
    Corrupt { cid: ContentId, reason: String },
    #[error("range {offset}+{len} is outside {cid} ({size_bytes} bytes)")]
    BadRange {
        cid: ContentId,
        offset: u64,
        len: u64,
        size_bytes: u64,
    },
    #[error("reading {cid}: {source}")]
    Io { cid: ContentId, source: io::Error },
}

#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("{0} is pinned; unpin it first")]
    Pinned(ContentId),
    #[error("store was opened read-only")]
    OpenedReadOnly,
    #[error("delete of {cid} failed: {why}")]
    Write { cid: ContentId, why: String },
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{0} is not in the store")]
    NotFound(ContentId),
    #[error("store was opened read-only")]
    OpenedReadOnly,
    #[error("pin change of {cid} failed: {why}")]
    Write { cid: ContentId, why: String },
}

#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    #[error("writer thread panicked")]
    WriterPanicked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    Inline,
    External,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobStat {
    pub size_bytes: u64,
    pub pinned: bool,
    pub storage: StorageKind,
    pub compressed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    pub cid: ContentId,
    pub size_bytes: u64,
    pub existed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub blobs_count: u64,
    pub bytes_logical: u64,
    pub segments_count: u64,
    pub segment_bytes: u64,
    pub puts_total: u64,
    pub put_batches_total: u64,
    pub gets_total: u64,
    pub verify_failures_total: u64,
    /// Segment bytes written with O_DIRECT (the aligned middles of big
    /// group commits); the rest went through the page cache.
    pub direct_write_bytes_total: u64,
}

/// What `open` found while rebuilding the index.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub segments: u64,
    pub records: u64,
    /// Bytes cut off the end of the last segment (an unacknowledged torn
    /// write from a crash).
    pub torn_tail_bytes_truncated: u64,
    /// Damaged regions in sealed segments (reported by `verify` too).
    pub damaged_regions: Vec<String>,
    pub tmp_files_removed: u64,
}

/// A segment file and its accounting.
#[derive(Debug)]
pub(crate) struct Segment {
    pub id: u64,
    pub path: PathBuf,
    pub file: File,
    /// Bytes durably appended (the next append offset for the active one).
    pub len: AtomicU64,
    /// Bytes of records the index still points at.
    pub live_bytes: AtomicU64,
    /// Tombstone records (they may need carrying forward on compaction).
    pub tombstones: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub puts_total: AtomicU64,
    pub put_batches_total: AtomicU64,
    pub gets_total: AtomicU64,
    pub verify_failures_total: AtomicU64,
    pub bytes_logical: AtomicU64,
    pub direct_write_bytes_total: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Dirs {
    pub root: PathBuf,
    pub packs: PathBuf,
    pub blobs: PathBuf,
    pub tmp: PathBuf,
}

impl Dirs {
    fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            packs: root.join("packs"),
            blobs: root.join("blobs"),
            tmp: root.join("tmp"),
        }
    }

    pub fn data_path(&self, key: &BlockKey) -> PathBuf {
        self.blobs.join(format!("{}.data", key.file_stem()))
    }

    pub fn outboard_path(&self, key: &BlockKey) -> PathBuf {
        self.blobs.join(format!("{}.obao", key.file_stem()))
    }

    pub fn segment_path(&self, id: u64) -> PathBuf {
        self.packs.join(format!("{id:016x}.seg"))
    }
}

/// State shared by callers and the writer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub opts: StoreOptions,
    pub io: Arc<dyn FileIo>,
    pub io_reason: String,
    pub dirs: Dirs,
    pub index: Index,
    pub segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    pub counters: Counters,
}

/// What `Store` clones share; owns the writer thread (which only holds
/// `Shared`, so dropping the last `Store` stops and joins it).
#[derive(Debug)]
pub(crate) struct Inner {
    pub shared: Arc<Shared>,
    pub writer_tx: Option<crossbeam_channel::Sender<Op>>,
    pub writer_handle: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub gc_running: Mutex<()>,
    /// Readers: imports between their first block and their root's pin.
    /// Writer: GC while it marks and sweeps.
    pub gc_gate: Arc<RwLock<()>>,
    pub open_report: OpenReport,
    pub _lock: File,
}

impl std::ops::Deref for Inner {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping the sender ends the writer loop after it drains.
        self.writer_tx = None;
        if let Some(h) = self.writer_handle.lock().take() {
            let _ = h.join();
        }
    }
}

/// A handle to an open store; clones share it.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Open (creating if needed) the store in `opts.data_dir`, rebuilding the
    /// index from the segment logs and cutting off any torn tail.
    pub fn open(opts: StoreOptions) -> Result<Store, OpenError> {
        opts.validate()?;
        let inner = scan::open(opts)?;
        Ok(Store {
            inner: Arc::new(inner),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.dirs.root
    }

    pub fn io_name(&self) -> &'static str {
        self.inner.io.name()
    }

    pub fn io_reason(&self) -> &str {
        &self.inner.io_reason
    }

    pub fn open_report(&self) -> &OpenReport {
        &self.inner.open_report
    }

    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    fn sender(&self) -> Result<&crossbeam_channel::Sender<Op>, PutError> {
        self.inner
            .writer_tx
            .as_ref()
            .ok_or(PutError::OpenedReadOnly)
    }

    /// Store `data`; returns once data and index are durable.
    pub fn put(&self, data: &[u8], pin: bool) -> Result<PutOutcome, PutError> {
        if data.len() as u64 > self.inner.opts.inline_size_bytes_max {
            let mut w = self.writer(pin)?;
            io::Write::write_all(&mut w, data).map_err(put_io_error)?;
            return w.finish();
        }
        let key = BlockKey::blake3(*blake3::hash(data).as_bytes());
        let cid = ContentId::from_key(CODEC_RAW, key);
        let (op, rx) = self.prepare_inline(cid, bytes::Bytes::copy_from_slice(data), pin, false)?;
        let Some(op) = op else {
            return Ok(self.existed(cid, data.len() as u64));
        };
        self.sender()?.send(op).map_err(|_| PutError::Closed)?;
        let applied = rx.recv_blocking().ok_or(PutError::Closed)?;
        self.finish_put(cid, data.len() as u64, applied)
    }

    /// [`Store::put`] for async callers: never blocks the runtime thread
    /// (hashing and compression of a small blob happen inline; they cost
    /// microseconds).
    pub async fn put_async(&self, data: bytes::Bytes, pin: bool) -> Result<PutOutcome, PutError> {
        if data.len() as u64 > self.inner.opts.inline_size_bytes_max {
            let store = self.clone();
            return tokio::task::spawn_blocking(move || store.put(&data, pin))
                .await
                .map_err(|_| PutError::Closed)?;
        }
        let key = BlockKey::blake3(*blake3::hash(&data).as_bytes());
        let cid = ContentId::from_key(CODEC_RAW, key);
        let size = data.len() as u64;
        let (op, rx) = self.prepare_inline(cid, data, pin, true)?;
        let Some(op) = op else {
            return Ok(self.existed(cid, size));
        };
        // The queue is bounded; if it is full we wait without blocking the runtime.
        let tx = self.sender()?.clone();
        let mut op = Some(op);
        loop {
            match tx.try_send(op.take().expect("op present")) {
                Ok(()) => break,
                Err(crossbeam_channel::TrySendError::Full(back)) => {
                    op = Some(back);
                    tokio::time::sleep(std::time::Duration::from_micros(200)).await;
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                    return Err(PutError::Closed);
                }
            }
        }
        let applied = rx.recv_async().await.ok_or(PutError::Closed)?;
        self.finish_put(cid, size, applied)
    }

    /// Store IPFS blocks named by their CIDs (any supported codec and hash:
    /// UnixFS nodes, raw leaves, blocks of an imported CAR). Each block is
    /// checked against its CID before anything is written, and all blocks
    /// are queued before waiting, so a whole batch shares group commits.
    ///
    /// Returns once every block is durable. Blocks are stored packed (a
    /// block is at most [`limits::BLOCK_SIZE_BYTES_MAX`]). Hold a
    /// [`GcHold`] from before the first block until the DAG's root is
    /// pinned, or a concurrent GC may sweep the unpinned children.
    pub fn put_blocks(
        &self,
        blocks: &[(ContentId, bytes::Bytes)],
        pin: bool,
    ) -> Result<Vec<PutOutcome>, PutError> {
        self.put_blocks_queued(blocks, pin)?.wait()
    }

    /// [`Store::put_blocks`] split in two: check and queue the blocks now,
    /// wait for durability later, so an importer can hash its next batch
    /// while this one is written.
    pub fn put_blocks_queued(
        &self,
        blocks: &[(ContentId, bytes::Bytes)],
        pin: bool,
    ) -> Result<PendingPuts, PutError> {
        let max_bytes = self.block_size_bytes_max();
        let mut verified = Vec::with_capacity(blocks.len());
        for (cid, data) in blocks {
            check_block_size(cid, data, max_bytes)?;
            verified.push(VerifiedBlock::check(*cid, data.clone())?);
        }
        self.put_verified_queued(&verified, pin)
    }

    /// [`Store::put_blocks_queued`] for blocks already checked against
    /// their CIDs (the type says so): only their size is checked here.
    /// Every later read is still verified against the CID.
    pub fn put_verified_queued(
        &self,
        blocks: &[VerifiedBlock],
        pin: bool,
    ) -> Result<PendingPuts, PutError> {
        let max_bytes = self.block_size_bytes_max();
        for block in blocks {
            check_block_size(&block.cid, &block.data, max_bytes)?;
        }
        let tx = self.sender()?;
        let mut pending = PendingPuts {
            store: self.clone(),
            puts: Vec::with_capacity(blocks.len()),
        };
        for VerifiedBlock { cid, data } in blocks {
            let (op, rx) = self.prepare_inline(*cid, data.clone(), pin, false)?;
            let rx = match op {
                Some(op) => {
                    // Wait for the ops already queued, so none is still in
                    // flight when the caller sees the error.
                    if tx.send(op).is_err() {
                        let _ = pending.wait();
                        return Err(PutError::Closed);
                    }
                    Some(rx)
                }
                None => None,
            };
            pending.puts.push((*cid, data.len() as u64, rx));
        }
        Ok(pending)
    }

    /// The largest block [`Store::put_blocks`] takes: the IPFS limit, or
    /// less when this store's batches are configured smaller (a block is
    /// one packed record and a record never spans batches).
    pub fn block_size_bytes_max(&self) -> u64 {
        limits::BLOCK_SIZE_BYTES_MAX
            .min(self.inner.opts.group_commit_batch_bytes_max - record::RECORD_HEADER_BYTES as u64)
    }

    /// One block; see [`Store::put_blocks`].
    pub fn put_block(
        &self,
        cid: &ContentId,
        data: bytes::Bytes,
        pin: bool,
    ) -> Result<PutOutcome, PutError> {
        let mut out = self.put_blocks(&[(*cid, data)], pin)?;
        Ok(out.pop().expect("one outcome per block"))
    }

    /// Keep GC from sweeping while a DAG is written and its root pinned
    /// (GC marks every block reachable from a pinned dag-pb root as live,
    /// but the blocks of a DAG being imported are not reachable yet). Cheap;
    /// many holds can coexist; GC waits for all of them.
    pub fn gc_hold(&self) -> GcHold {
        GcHold {
            _guard: self.inner.gc_gate.read_arc_recursive(),
        }
    }

    fn existed(&self, cid: ContentId, size: u64) -> PutOutcome {
        PutOutcome {
            cid,
            size_bytes: size,
            existed: true,
        }
    }

    /// Build the writer op for a small blob, or `None` when it is already
    /// stored with a pin state at least as strong.
    #[allow(clippy::type_complexity)]
    fn prepare_inline(
        &self,
        cid: ContentId,
        data: bytes::Bytes,
        pin: bool,
        is_async: bool,
    ) -> Result<(Option<Op>, writer::ReplyRx), PutError> {
        let (reply, rx) = if is_async {
            Reply::pair_async()
        } else {
            Reply::pair_blocking()
        };
        if self.inner.writer_tx.is_none() {
            return Err(PutError::OpenedReadOnly);
        }
        let key = cid.key();
        if let Some(e) = self.inner.index.get(&key)
            && !e.damaged
            && (e.pinned() || !pin)
        {
            return Ok((None, rx));
        }
        let mut flags = if pin { record::FLAG_PINNED } else { 0 };
        let size_bytes = data.len() as u64;
        let mut payload = data;
        if let Compression::Zstd { level } = self.inner.opts.compression
            && payload.len() >= 512
            && let Ok(z) = zstd::bulk::compress(&payload, level)
            && z.len() < payload.len() - payload.len() / 8
        {
            payload = bytes::Bytes::from(z);
            flags |= record::FLAG_ZSTD;
        }
        Ok((
            Some(Op::Put {
                key,
                codec: cid.codec() as u32,
                flags,
                size_bytes,
                payload,
                reply,
            }),
            rx,
        ))
    }

    fn finish_put(
        &self,
        cid: ContentId,
        size: u64,
        applied: Result<Applied, WriteError>,
    ) -> Result<PutOutcome, PutError> {
        match applied {
            Ok(Applied::Stored { existed }) => Ok(PutOutcome {
                cid,
                size_bytes: size,
                existed,
            }),
            Ok(other) => Err(PutError::Io(format!("unexpected writer reply {other:?}"))),
            Err(e) => Err(e.into_put_error()),
        }
    }

    /// A streaming writer for blobs of any size (HTTP bodies, files).
    pub fn writer(&self, pin: bool) -> Result<BlobWriter, PutError> {
        if self.inner.writer_tx.is_none() {
            return Err(PutError::OpenedReadOnly);
        }
        Ok(BlobWriter::new(self.clone(), pin))
    }

    fn lookup(&self, cid: &ContentId) -> Result<Entry, GetError> {
        self.inner
            .index
            .get(&cid.key())
            .ok_or(GetError::NotFound(*cid))
    }

    fn corrupt(&self, cid: &ContentId, reason: String) -> GetError {
        self.inner
            .counters
            .verify_failures_total
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(%cid, %reason, "damaged blob refused");
        GetError::Corrupt { cid: *cid, reason }
    }

    /// The whole blob, verified against its hash.
    pub fn get(&self, cid: &ContentId) -> Result<Vec<u8>, GetError> {
        let mut buf = Vec::new();
        self.get_into(cid, &mut buf)?;
        Ok(buf)
    }

    /// [`Store::get`] into `buf`, reusing its memory: `buf` ends up holding
    /// exactly the blob (its old length and bytes do not matter). A caller
    /// that reads many blocks keeps its buffers: a fresh ~256 KiB one per
    /// block is zeroed whole before the read overwrites it (calloc's memset
    /// when malloc kept the memory; page faults and the kernel's zeroing
    /// when malloc gave it back, as it may for a buffer freed on another
    /// thread). On an error `buf` is left empty.
    pub fn get_into(&self, cid: &ContentId, buf: &mut Vec<u8>) -> Result<(), GetError> {
        let read = self.get_into_inner(cid, buf);
        if read.is_err() {
            // Whatever the failed read left there is never taken for the blob.
            buf.clear();
        }
        read
    }

    fn get_into_inner(&self, cid: &ContentId, buf: &mut Vec<u8>) -> Result<(), GetError> {
        self.inner
            .counters
            .gets_total
            .fetch_add(1, Ordering::Relaxed);
        // A compaction may move the record between our index lookup and the
        // read; the second lookup sees the new location.
        for _ in 0..3 {
            let entry = self.lookup(cid)?;
            match entry.storage {
                Storage::Inline => match self.read_inline_into(cid, &entry, false, buf)? {
                    InlineRead::Read => return Ok(()),
                    InlineRead::Moved => continue,
                    InlineRead::NotCached => {
                        unreachable!("blocking reads never report would-block")
                    }
                },
                Storage::External => {
                    *buf = self.read_external(cid, &entry, 0, entry.size_bytes)?;
                    return Ok(());
                }
            }
        }
        Err(GetError::Io {
            cid: *cid,
            source: io::Error::other("blob moved repeatedly during read"),
        })
    }

    /// Run a read that may sleep on the disk on tokio's blocking pool.
    async fn on_blocking_pool(
        &self,
        cid: &ContentId,
        read: impl FnOnce(&Store, &ContentId) -> Result<Vec<u8>, GetError> + Send + 'static,
    ) -> Result<Vec<u8>, GetError> {
        let (store, id) = (self.clone(), *cid);
        tokio::task::spawn_blocking(move || read(&store, &id))
            .await
            .map_err(|e| GetError::Io {
                cid: *cid,
                source: io::Error::other(format!("read task failed: {e}")),
            })?
    }

    /// [`Store::get`] for async callers. A packed blob whose record is in
    /// the page cache (the common case for hot data) is read and verified
    /// right here — a few microseconds, no thread hop; anything that could
    /// sleep on the disk goes to the blocking pool.
    pub async fn get_async(&self, cid: &ContentId) -> Result<Vec<u8>, GetError> {
        let mut data = Vec::new();
        if let Some(entry) = self.inner.index.get(&cid.key())
            && entry.storage == Storage::Inline
            && self.read_inline_into(cid, &entry, true, &mut data)? == InlineRead::Read
        {
            self.inner
                .counters
                .gets_total
                .fetch_add(1, Ordering::Relaxed);
            return Ok(data);
        }
        self.on_blocking_pool(cid, |store, id| store.get(id)).await
    }

    /// [`Store::read_range`] for async callers (see [`Store::get_async`]).
    pub async fn read_range_async(
        &self,
        cid: &ContentId,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, GetError> {
        let mut data = Vec::new();
        if let Some(entry) = self.inner.index.get(&cid.key())
            && entry.storage == Storage::Inline
            && offset
                .checked_add(len)
                .is_some_and(|end| end <= entry.size_bytes)
            && self.read_inline_into(cid, &entry, true, &mut data)? == InlineRead::Read
        {
            self.inner
                .counters
                .gets_total
                .fetch_add(1, Ordering::Relaxed);
            return Ok(data[offset as usize..(offset + len) as usize].to_vec());
        }
        self.on_blocking_pool(cid, move |store, id| store.read_range(id, offset, len))
            .await
    }

    /// `len` bytes from `offset`, verified. Large blobs verify only the
    /// 16 KiB groups the range touches.
    pub fn read_range(&self, cid: &ContentId, offset: u64, len: u64) -> Result<Vec<u8>, GetError> {
        let entry = self.lookup(cid)?;
        let end = offset.checked_add(len);
        if end.is_none_or(|end| end > entry.size_bytes) {
            return Err(GetError::BadRange {
                cid: *cid,
                offset,
                len,
                size_bytes: entry.size_bytes,
            });
        }
        match entry.storage {
            Storage::Inline => {
                let all = self.get(cid)?;
                Ok(all[offset as usize..(offset + len) as usize].to_vec())
            }
            Storage::External => {
                self.inner
                    .counters
                    .gets_total
                    .fetch_add(1, Ordering::Relaxed);
                self.read_external(cid, &entry, offset, len)
            }
        }
    }

    /// Read and verify an inline record into `buf` (see [`InlineRead`]).
    /// Only a verified blob is reported as [`InlineRead::Read`]; otherwise
    /// `buf` holds nothing the caller may use.
    fn read_inline_into(
        &self,
        cid: &ContentId,
        entry: &Entry,
        nowait: bool,
        buf: &mut Vec<u8>,
    ) -> Result<InlineRead, GetError> {
        let Some(seg) = self.inner.segments.read().get(&entry.segment_id).cloned() else {
            return Ok(InlineRead::Moved);
        };
        let record_len = entry.record_len as usize;
        if buf.capacity() < record_len {
            // Its old bytes are about to be overwritten: a fresh zeroed
            // allocation (pages from the kernel, already zero) beats growing
            // it, which would copy them and then zero the rest.
            *buf = vec![0u8; record_len];
        } else {
            // Writes only the part past the old length; every byte up to
            // `record_len` is overwritten by the read below or the read
            // fails.
            buf.resize(record_len, 0);
        }
        if nowait {
            match self.inner.io.read_cached_at(&seg.file, entry.offset, buf) {
                Ok(true) => {}
                Ok(false) => return Ok(InlineRead::NotCached),
                Err(source) => return Err(GetError::Io { cid: *cid, source }),
            }
        } else if let Err(e) = self.inner.io.read_exact_at(&seg.file, entry.offset, buf) {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                return Err(
                    self.corrupt(cid, format!("segment {} is truncated", seg.path.display()))
                );
            }
            return Err(GetError::Io {
                cid: *cid,
                source: e,
            });
        }
        let (header, crc) = record::decode_header(buf).map_err(|e| {
            self.corrupt(
                cid,
                format!("record at {}+{}: {e}", seg.path.display(), entry.offset),
            )
        })?;
        if header.key != cid.key() {
            return Err(self.corrupt(
                cid,
                format!(
                    "record at {}+{} holds another key",
                    seg.path.display(),
                    entry.offset
                ),
            ));
        }
        record::check_crc(buf, crc).map_err(|e| {
            self.corrupt(
                cid,
                format!("record at {}+{}: {e}", seg.path.display(), entry.offset),
            )
        })?;
        if header.size_bytes > limits::INLINE_SIZE_BYTES_MAX_CAP {
            return Err(self.corrupt(
                cid,
                format!(
                    "record claims {} bytes, more than a packed blob can hold",
                    header.size_bytes
                ),
            ));
        }
        if header.compressed() {
            let payload = &buf[record::RECORD_HEADER_BYTES..];
            *buf = zstd::bulk::decompress(payload, header.size_bytes as usize)
                .map_err(|e| self.corrupt(cid, format!("zstd payload: {e}")))?;
        } else {
            // The payload moves to the front of the buffer it was read into:
            // a fresh copy would fault in and zero new pages for every block
            // (a third of a large CAR export's time on the 2-core VM).
            buf.copy_within(record::RECORD_HEADER_BYTES.., 0);
            buf.truncate(record_len - record::RECORD_HEADER_BYTES);
        }
        if buf.len() as u64 != header.size_bytes || !cid.key().matches(buf) {
            return Err(self.corrupt(cid, "content does not match its hash".into()));
        }
        Ok(InlineRead::Read)
    }

    fn read_external(
        &self,
        cid: &ContentId,
        entry: &Entry,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, GetError> {
        let key = cid.key();
        let data_path = self.inner.dirs.data_path(&key);
        let open = |p: &Path| {
            File::open(p).map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound && self.inner.index.get(&key).is_none() {
                    // Deleted between our lookup and the open: not damage.
                    GetError::NotFound(*cid)
                } else if e.kind() == io::ErrorKind::NotFound {
                    self.corrupt(cid, format!("data file {} is missing", p.display()))
                } else {
                    GetError::Io {
                        cid: *cid,
                        source: e,
                    }
                }
            })
        };
        let data = open(&data_path)?;
        let actual_len = data
            .metadata()
            .map_err(|e| GetError::Io {
                cid: *cid,
                source: e,
            })?
            .len();
        if actual_len != entry.size_bytes {
            return Err(self.corrupt(
                cid,
                format!(
                    "data file {} is {actual_len} bytes, expected {}",
                    data_path.display(),
                    entry.size_bytes
                ),
            ));
        }
        match key.kind {
            HashKind::Blake3 if entry.size_bytes > large::GROUP_BYTES as u64 => {
                let ob_path = self.inner.dirs.outboard_path(&key);
                let ob = open(&ob_path)?;
                let ob_len = ob
                    .metadata()
                    .map_err(|e| GetError::Io {
                        cid: *cid,
                        source: e,
                    })?
                    .len();
                large::read_range_verified(
                    &*self.inner.io,
                    large::LargeBlob {
                        data: &data,
                        outboard: &ob,
                        outboard_len: ob_len,
                        root: key.digest,
                        size_bytes: entry.size_bytes,
                    },
                    offset,
                    len,
                )
                .map_err(|e| match e {
                    large::RangeError::Io(source) => GetError::Io { cid: *cid, source },
                    large::RangeError::Corrupt(why) => self.corrupt(cid, why),
                })
            }
            _ => {
                // No outboard (small or sha2-256): verify the whole file.
                let mut all = vec![0u8; entry.size_bytes as usize];
                self.inner
                    .io
                    .read_exact_at(&data, 0, &mut all)
                    .map_err(|e| GetError::Io {
                        cid: *cid,
                        source: e,
                    })?;
                if !key.matches(&all) {
                    return Err(self.corrupt(cid, "content does not match its hash".into()));
                }
                Ok(all[offset as usize..(offset + len) as usize].to_vec())
            }
        }
    }

    pub fn stat(&self, cid: &ContentId) -> Result<Option<BlobStat>, GetError> {
        Ok(self.inner.index.get(&cid.key()).map(|e| stat_of(&e)))
    }

    pub fn contains(&self, cid: &ContentId) -> bool {
        self.inner.index.get(&cid.key()).is_some()
    }

    fn write_op<T>(
        &self,
        make: impl FnOnce(Reply) -> Op,
        map_err: impl Fn(String) -> T,
        read_only: T,
    ) -> Result<Result<Applied, WriteError>, T> {
        let Some(tx) = self.inner.writer_tx.as_ref() else {
            return Err(read_only);
        };
        let (reply, rx) = Reply::pair_blocking();
        tx.send(make(reply))
            .map_err(|_| map_err("store is closed".into()))?;
        rx.recv_blocking()
            .ok_or_else(|| map_err("store is closed".into()))
    }

    /// Delete a blob (durable tombstone). Pinned blobs must be unpinned first.
    pub fn remove(&self, cid: &ContentId) -> Result<bool, DeleteError> {
        if self.inner.index.get(&cid.key()).is_some_and(|e| e.pinned()) {
            return Err(DeleteError::Pinned(*cid));
        }
        let key = cid.key();
        let cid2 = *cid;
        let res = self.write_op(
            |reply| Op::Delete {
                key,
                only_if_unpinned: true,
                reply,
            },
            |why| DeleteError::Write { cid: cid2, why },
            DeleteError::OpenedReadOnly,
        )?;
        match res {
            Ok(Applied::Removed(existed)) => Ok(existed),
            Ok(Applied::RefusedPinned) => Err(DeleteError::Pinned(*cid)),
            Ok(other) => Err(DeleteError::Write {
                cid: *cid,
                why: format!("unexpected reply {other:?}"),
            }),
            Err(e) => Err(DeleteError::Write {
                cid: *cid,
                why: e.to_string(),
            }),
        }
    }

    pub fn set_pinned(&self, cid: &ContentId, pinned: bool) -> Result<(), PinError> {
        // A pin landing between GC's mark and sweep would not protect the
        // DAG below it.
        let _hold = self.gc_hold();
        let key = cid.key();
        let cid2 = *cid;
        let res = self.write_op(
            |reply| Op::SetPin { key, pinned, reply },
            |why| PinError::Write { cid: cid2, why },
            PinError::OpenedReadOnly,
        )?;
        match res {
            Ok(Applied::PinSet) => Ok(()),
            Ok(Applied::NotFound) => Err(PinError::NotFound(*cid)),
            Ok(other) => Err(PinError::Write {
                cid: *cid,
                why: format!("unexpected reply {other:?}"),
            }),
            Err(e) => Err(PinError::Write {
                cid: *cid,
                why: e.to_string(),
            }),
        }
    }

    pub fn list(&self) -> Vec<(ContentId, BlobStat)> {
        let mut all: Vec<_> = self
            .inner
            .index
            .snapshot()
            .into_iter()
            .map(|(k, e)| (ContentId::from_key(e.codec as u64, k), stat_of(&e)))
            .collect();
        all.sort_by_key(|(c, _)| c.key());
        all
    }

    pub fn stats(&self) -> StoreStats {
        let segs = self.inner.segments.read();
        let c = &self.inner.counters;
        StoreStats {
            blobs_count: self.inner.index.len() as u64,
            bytes_logical: c.bytes_logical.load(Ordering::Relaxed),
            segments_count: segs.len() as u64,
            segment_bytes: segs.values().map(|s| s.len.load(Ordering::Relaxed)).sum(),
            puts_total: c.puts_total.load(Ordering::Relaxed),
            put_batches_total: c.put_batches_total.load(Ordering::Relaxed),
            gets_total: c.gets_total.load(Ordering::Relaxed),
            verify_failures_total: c.verify_failures_total.load(Ordering::Relaxed),
            direct_write_bytes_total: c.direct_write_bytes_total.load(Ordering::Relaxed),
        }
    }

    /// Remove unpinned blobs, compact segments that are mostly garbage and
    /// delete orphaned files — while puts and gets continue.
    pub fn gc(&self, progress: &dyn Fn(GcProgress)) -> Result<GcReport, GcError> {
        gc::run(self, progress)
    }

    /// Read every stored byte and check it against its hash.
    pub fn verify(&self, progress: &dyn Fn(VerifyProgress)) -> Result<VerifyReport, VerifyError> {
        verify::run(self, progress)
    }

    /// Stop the writer after it has flushed everything queued.
    pub fn close(self) -> Result<(), CloseError> {
        let handle = self.inner.writer_handle.lock().take();
        if let Some(tx) = self.inner.writer_tx.as_ref() {
            let _ = tx.send(Op::Shutdown);
        }
        if let Some(h) = handle
            && h.join().is_err()
        {
            return Err(CloseError::WriterPanicked);
        }
        Ok(())
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

fn stat_of(e: &Entry) -> BlobStat {
    BlobStat {
        size_bytes: e.size_bytes,
        pinned: e.pinned(),
        storage: match e.storage {
            Storage::Inline => StorageKind::Inline,
            Storage::External => StorageKind::External,
        },
        compressed: e.compressed(),
    }
}

/// Bytes buffered before a large blob's data is written to its temp file.
const LARGE_WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// Streams a blob of any size into the store. Small results are packed like
/// `put`; large ones go to a temp file, hashed on the way, and are committed
/// by the writer thread (rename + record) in one group commit.
#[derive(Debug)]
pub struct BlobWriter {
    store: Store,
    pin: bool,
    hasher: large::GroupHasher,
    buf: Vec<u8>,
    file: Option<(File, PathBuf)>,
    file_len: u64,
    finished: bool,
}

impl BlobWriter {
    fn new(store: Store, pin: bool) -> Self {
        Self {
            store,
            pin,
            hasher: large::GroupHasher::new(),
            buf: Vec::new(),
            file: None,
            file_len: 0,
            finished: false,
        }
    }

    fn tmp_file(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            let name = format!(
                "{}-{}.part",
                std::process::id(),
                NEXT_TMP.fetch_add(1, Ordering::Relaxed)
            );
            let path = self.store.inner.dirs.tmp.join(name);
            let f = std::fs::OpenOptions::new()
                .create_new(true)
                .read(true)
                .write(true)
                .open(&path)?;
            self.file = Some((f, path));
        }
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        self.tmp_file()?;
        let (f, _) = self.file.as_ref().expect("temp file open");
        self.store
            .inner
            .io
            .write_all_at(f, self.file_len, &[&self.buf])?;
        self.file_len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    pub fn size_bytes(&self) -> u64 {
        self.hasher.size_bytes()
    }

    /// Make the blob durable and return its id.
    pub fn finish(mut self) -> Result<PutOutcome, PutError> {
        let inline_max = self.store.inner.opts.inline_size_bytes_max;
        if self.file.is_none() && self.buf.len() as u64 <= inline_max {
            let buf = std::mem::take(&mut self.buf);
            return self.store.put(&buf, self.pin);
        }
        let io_err = put_io_error;
        if !self.buf.is_empty() {
            self.spill().map_err(io_err)?;
        }
        let size_bytes = self.hasher.size_bytes();
        let hasher = std::mem::take(&mut self.hasher);
        let (root, outboard) = hasher.finish();
        let key = BlockKey::blake3(root);
        // From here on this function owns the temp files' cleanup.
        self.finished = true;
        let (data_file, data_tmp) = self.file.take().expect("large blob has a temp file");
        let inner = &self.store.inner;
        let cleanup = |paths: &[&Path]| {
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        };
        if let Some(e) = inner.index.get(&key)
            && !e.damaged
            && (e.pinned() || !self.pin)
        {
            cleanup(&[&data_tmp]);
            return Ok(PutOutcome {
                cid: ContentId::from_key(CODEC_RAW, key),
                size_bytes,
                existed: true,
            });
        }
        if let Err(e) = inner.io.sync_data(&data_file) {
            cleanup(&[&data_tmp]);
            return Err(io_err(e));
        }
        drop(data_file);
        let ob_tmp = data_tmp.with_extension("obao");
        if !outboard.is_empty() {
            let write_ob = || -> io::Result<()> {
                let f = std::fs::OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(&ob_tmp)?;
                inner.io.write_all_at_durable(&f, 0, &[&outboard])
            };
            if let Err(e) = write_ob() {
                cleanup(&[&data_tmp, &ob_tmp]);
                return Err(io_err(e));
            }
        }
        let (reply, rx) = Reply::pair_blocking();
        let op = Op::External {
            key,
            codec: CODEC_RAW as u32,
            flags: if self.pin { record::FLAG_PINNED } else { 0 },
            size_bytes,
            data_tmp: data_tmp.clone(),
            outboard_tmp: (!outboard.is_empty()).then(|| ob_tmp.clone()),
            reply,
        };
        let tx = inner.writer_tx.as_ref().ok_or(PutError::OpenedReadOnly)?;
        if tx.send(op).is_err() {
            cleanup(&[&data_tmp, &ob_tmp]);
            return Err(PutError::Closed);
        }
        let applied = rx.recv_blocking().ok_or(PutError::Closed)?;
        self.store
            .finish_put(ContentId::from_key(CODEC_RAW, key), size_bytes, applied)
    }
}

static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// Name the failure the way an operator acts on it (the writer thread's
/// classification, so both paths report a full disk the same way).
fn put_io_error(e: io::Error) -> PutError {
    WriteError::from_io(&e).into_put_error()
}

impl io::Write for BlobWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.hasher.size_bytes() + data.len() as u64 > limits::BLOB_SIZE_BYTES_MAX {
            return Err(io::Error::other(format!(
                "blob exceeds the maximum of {} bytes",
                limits::BLOB_SIZE_BYTES_MAX
            )));
        }
        // Work in pieces that stay in the CPU cache between hashing and
        // the copy into the page cache; once the blob is known to be large
        // (a temp file exists) and nothing is buffered, full pieces go
        // straight from the caller's buffer to the file.
        let inline_max = self.store.inner.opts.inline_size_bytes_max as usize;
        for piece in data.chunks(LARGE_WRITE_BUFFER_BYTES) {
            self.hasher.update(piece);
            if let Some((f, _)) = self.file.as_ref()
                && self.buf.is_empty()
                && piece.len() == LARGE_WRITE_BUFFER_BYTES
            {
                self.store
                    .inner
                    .io
                    .write_all_at(f, self.file_len, &[piece])?;
                self.file_len += piece.len() as u64;
                continue;
            }
            self.buf.extend_from_slice(piece);
            if self.buf.len() >= LARGE_WRITE_BUFFER_BYTES.max(inline_max + 1) {
                self.spill()?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.finished
            && let Some((_, path)) = self.file.take()
        {
            let _ = std::fs::remove_file(path);
        }
    }
}
