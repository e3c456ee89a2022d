//! The IPFS data model on the agent's store: UnixFS add, CAR import and
//! export, file reads. The logic above is pure; this module only moves
//! blocks between it and [`Store`], keeping two rules:
//!
//! - A block is acknowledged (and a root pinned) only after it is durable,
//!   and the DAG is held against GC from its first block to its root's pin.
//! - A failed import pins nothing and acknowledges nothing. The blocks it
//!   already wrote stay unpinned and unreachable from any pin, so the next
//!   GC removes them. They are not deleted on the spot: a concurrent import
//!   may have found the same block already stored and be about to pin a DAG
//!   that needs it (GC's mark phase sees that; a blind delete would not).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use metanode_core::cid::{CODEC_DAG_PB, ContentId};
use metanode_core::dagpb;
use metanode_store::{GetError, PendingPuts, PutError, Store, VerifiedBlock};

use crate::Block;
use crate::car::{CarReadError, CarReader, CarWriteError, CarWriter};
use crate::importer::{Chunker, DagBuilder, ImportOptions, ImportSummary};
use crate::limits::{
    READ_AHEAD_BLOCKS, READ_AHEAD_BUFFER_SIZE_BYTES_MAX, READ_AHEAD_BUFFERS_KEPT_MAX,
};
use crate::reader::ReadError;
use crate::source::{BlockSource, SourceError};
use crate::traverse::{CarBlocks, DagScope, EntityBytes};

impl BlockSource for Store {
    /// Every read is verified against the CID by the store.
    fn block(&self, cid: &ContentId) -> Result<Bytes, SourceError> {
        self.get(cid)
            .map(Bytes::from)
            .map_err(|e| source_error(cid, e))
    }
}

fn source_error(cid: &ContentId, e: GetError) -> SourceError {
    match e {
        GetError::NotFound(_) => SourceError::NotFound(*cid),
        e => SourceError::Other {
            cid: *cid,
            reason: e.to_string(),
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("reading the input at byte {offset}: {source}")]
    Read {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("storing blocks: {0}")]
    Put(#[from] PutError),
    #[error("pinning root {cid}: {why}")]
    Pin { cid: ContentId, why: String },
}

/// Blocks handed to the store per call, and input read (then cut and
/// hashed) per step: big enough that one group commit covers many blocks
/// and the hashing threads share 32 leaves of Kubo's 256 KiB chunks, small
/// enough to bound memory.
const ADD_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Batches queued and not yet acknowledged. With the batch being hashed
/// and the one being read, an import holds at most
/// `ADD_BATCH_BYTES * (ADD_BATCHES_IN_FLIGHT_MAX + 2)` (80 MiB) of input,
/// when the disk stalls; a batch the store has written no longer holds
/// memory while it waits for its sync. More than the store's
/// `GROUP_COMMIT_WRITES_PER_SYNC_MAX` (4), so the next batches are queued
/// while one fdatasync covers the previous four.
const ADD_BATCHES_IN_FLIGHT_MAX: usize = 8;
/// Read buffers an import keeps for reuse once the store has copied every
/// leaf sliced from them: a fresh 8 MiB buffer per batch cost a page fault
/// per 4 KiB (and zeroing), about a tenth of an import's time.
const ADD_READ_BUFFERS_KEPT_MAX: usize = ADD_BATCHES_IN_FLIGHT_MAX + 2;
/// Threads hashing an import's leaves while the caller's thread reads the
/// next batch: one per core, up to this many.
const ADD_HASH_THREADS_MAX: usize = 8;

const _: () = assert!(ADD_BATCH_BYTES as u64 >= 2 * crate::limits::CHUNK_SIZE_BYTES_MAX);
const _: () = assert!(
    ADD_BATCHES_IN_FLIGHT_MAX as u64 > metanode_store::limits::GROUP_COMMIT_WRITES_PER_SYNC_MAX
);

/// Writes batches of blocks while the caller produces the next: up to
/// [`ADD_BATCHES_IN_FLIGHT_MAX`] batches sit in the writer queue, so hashing
/// the next batch overlaps the writes and fsyncs of the previous ones (with
/// one batch in flight an import waited on every fdatasync and ran at a
/// fraction of one core).
struct BatchWriter<'s> {
    store: &'s Store,
    in_flight: std::collections::VecDeque<PendingPuts>,
    blocks_new_count: u64,
}

impl<'s> BatchWriter<'s> {
    fn new(store: &'s Store) -> Self {
        Self {
            store,
            in_flight: std::collections::VecDeque::new(),
            blocks_new_count: 0,
        }
    }

    fn settle_oldest(&mut self) -> Result<(), PutError> {
        if let Some(p) = self.in_flight.pop_front() {
            let outcomes = p.wait()?;
            self.blocks_new_count += outcomes.iter().filter(|o| !o.existed).count() as u64;
        }
        Ok(())
    }

    /// Wait until every queued block is durable.
    fn settle(&mut self) -> Result<(), PutError> {
        let mut first_err = None;
        while !self.in_flight.is_empty() {
            if let Err(e) = self.settle_oldest() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Queue `blocks` (drained), first waiting for the oldest batch when
    /// the pipeline is full. Each block is checked against its CID first.
    fn send(&mut self, blocks: &mut Vec<Block>) -> Result<(), PutError> {
        let batch = blocks
            .drain(..)
            .map(|b| VerifiedBlock::check(b.cid, b.data))
            .collect::<Result<Vec<_>, _>>()?;
        self.send_verified(batch)
    }

    /// [`BatchWriter::send`] for blocks whose CIDs were computed from their
    /// bytes.
    fn send_verified(&mut self, batch: Vec<VerifiedBlock>) -> Result<(), PutError> {
        while self.in_flight.len() >= ADD_BATCHES_IN_FLIGHT_MAX {
            self.settle_oldest()?;
        }
        if !batch.is_empty() {
            self.in_flight
                .push_back(self.store.put_verified_queued(&batch, false)?);
        }
        Ok(())
    }

    /// After a failure: let queued ops finish so none is in flight when the
    /// caller sees the error.
    fn abandon(mut self) {
        let _ = self.settle();
    }
}

fn batch_bytes(blocks: &[Block]) -> usize {
    blocks.iter().map(|b| b.data.len()).sum()
}

/// Import `input` as a UnixFS file (Kubo's `ipfs add` layout for the given
/// options: `--cid-version 1` by default, plain `ipfs add` with CIDv0) and, when `pin`, pin its root. `progress`
/// gets the number of input bytes consumed so far.
///
/// The DAG is exactly [`crate::Importer`]'s (same chunker and tree
/// builder). Per batch of input, helper threads (one per core) hash the
/// leaves while this thread reads the next batch, and the store writes the
/// earlier batches meanwhile. Every leaf's CID is computed from its bytes
/// once ([`VerifiedBlock::hash`]); the store does not hash it again.
pub fn add_file(
    store: &Store,
    input: &mut dyn Read,
    options: ImportOptions,
    pin: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportSummary, AddError> {
    let _hold = store.gc_hold();
    let mut writer = BatchWriter::new(store);
    let result = (|| {
        let hasher = LeafHasher::new(options);
        let mut chunker = Chunker::new(options);
        let mut builder = DagBuilder::new(options);
        let mut leaves: Vec<Bytes> = Vec::new();
        let mut offset = 0u64;
        let buffers = ReadBuffers::default();
        let mut data = buffers.read_batch(input, offset)?;
        loop {
            let eof = data.len() < ADD_BATCH_BYTES;
            offset += data.len() as u64;
            progress(offset);
            chunker.push_bytes(data, &mut leaves);
            if eof {
                break;
            }
            // This thread reads the next batch while the others hash this
            // one's leaves.
            let (batch, next) = hasher.build(&mut leaves, &mut builder, || {
                buffers.read_batch(input, offset)
            });
            writer.send_verified(batch?)?;
            data = next?;
        }
        chunker.finish(&mut leaves);
        let (batch, ()) = hasher.build(&mut leaves, &mut builder, || ());
        let mut batch = batch?;
        let mut parents = Vec::new();
        let summary = builder.finish(&mut parents);
        for p in parents {
            batch.push(VerifiedBlock::check(p.cid, p.data)?);
        }
        writer.send_verified(batch)?;
        writer.settle()?;
        if pin {
            store
                .set_pinned(&summary.root, true)
                .map_err(|e| AddError::Pin {
                    cid: summary.root,
                    why: e.to_string(),
                })?;
        }
        Ok(summary)
    })();
    if result.is_err() {
        writer.abandon();
    }
    result
}

/// Input buffers of [`ADD_BATCH_BYTES`], handed out again once every
/// `Bytes` sliced from them is gone (see [`ADD_READ_BUFFERS_KEPT_MAX`]).
#[derive(Debug, Default, Clone)]
struct ReadBuffers {
    free: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

/// A filled read buffer; dropping it (with the last leaf of it) returns
/// the buffer to its pool.
struct PooledBuffer {
    buf: Vec<u8>,
    len: usize,
    home: ReadBuffers,
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        // A poisoned pool only loses the reuse, never data.
        if let Ok(mut free) = self.home.free.lock()
            && free.len() < ADD_READ_BUFFERS_KEPT_MAX
        {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

impl ReadBuffers {
    /// Up to [`ADD_BATCH_BYTES`] of input; fewer only at its end. Leaves
    /// slice the result without copying.
    fn read_batch(&self, input: &mut dyn Read, offset: u64) -> Result<Bytes, AddError> {
        let reused = self.free.lock().ok().and_then(|mut free| free.pop());
        // Zeroed once when made; a reused buffer is read into as it is.
        let mut buf = reused.unwrap_or_else(|| vec![0u8; ADD_BATCH_BYTES]);
        let mut len = 0;
        while len < buf.len() {
            match input.read(&mut buf[len..]) {
                Ok(0) => break,
                // A reader claiming more than it was given is not trusted
                // with a slice past the buffer.
                Ok(n) => len += n.min(buf.len() - len),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(AddError::Read {
                        offset: offset + len as u64,
                        source,
                    });
                }
            }
        }
        Ok(Bytes::from_owner(PooledBuffer {
            buf,
            len,
            home: self.clone(),
        }))
    }
}

/// Hashes a batch of leaves on several threads and feeds them, in file
/// order, to the tree builder.
struct LeafHasher {
    options: ImportOptions,
    threads: usize,
}

impl LeafHasher {
    fn new(options: ImportOptions) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            options,
            threads: cores.clamp(1, ADD_HASH_THREADS_MAX),
        }
    }

    /// Hash `leaves` (drained) while this thread runs `meanwhile`, then
    /// add them to `builder`; returns the leaves and the parents they
    /// completed (each parent after its children), and what `meanwhile`
    /// returned.
    fn build<R>(
        &self,
        leaves: &mut Vec<Bytes>,
        builder: &mut DagBuilder,
        meanwhile: impl FnOnce() -> R,
    ) -> (Result<Vec<VerifiedBlock>, PutError>, R) {
        let options = self.options;
        let (hashed, r) = hash_leaves(options, std::mem::take(leaves), self.threads, meanwhile);
        let mut batch = Vec::with_capacity(hashed.len() + 1);
        let mut parents = Vec::new();
        for (leaf, content_bytes) in hashed {
            // The store gets the leaf under its CIDv1 spelling (it keys
            // blocks by codec and multihash, the same for both versions);
            // the DAG links it as this import's version names it.
            let cid = options.cid_from_key(leaf.cid().codec(), leaf.cid().key());
            builder.push_leaf(cid, leaf.data().len() as u64, content_bytes, &mut parents);
            batch.push(leaf);
            for p in parents.drain(..) {
                match VerifiedBlock::check(p.cid, p.data) {
                    Ok(parent) => batch.push(parent),
                    Err(e) => return (Err(e), r),
                }
            }
        }
        (Ok(batch), r)
    }
}

/// Turn chunks into leaf blocks ([`ImportOptions::leaf_block_data`]) and
/// hash them, in order, on `threads` helper threads (contiguous runs of
/// equal-size leaves, one per thread) while this thread runs `meanwhile`.
/// Each leaf comes with its chunk's length. A run whose thread cannot be
/// started is hashed here.
fn hash_leaves<R>(
    options: ImportOptions,
    leaves: Vec<Bytes>,
    threads: usize,
    meanwhile: impl FnOnce() -> R,
) -> (Vec<(VerifiedBlock, u64)>, R) {
    let hash_run = |run: &[Bytes]| -> Vec<(VerifiedBlock, u64)> {
        run.iter()
            .map(|chunk| {
                let data = options.leaf_block_data(chunk.clone());
                let leaf = VerifiedBlock::hash(options.leaf_codec(), options.hash(), data);
                (leaf, chunk.len() as u64)
            })
            .collect()
    };
    if leaves.is_empty() {
        return (Vec::new(), meanwhile());
    }
    let run_len = leaves.len().div_ceil(threads.max(1));
    std::thread::scope(|scope| {
        let helpers: Vec<_> = leaves
            .chunks(run_len)
            .map(|run| {
                let spawned = std::thread::Builder::new()
                    .name("unixfs-hash".into())
                    .spawn_scoped(scope, move || hash_run(run));
                (run, spawned)
            })
            .collect();
        let r = meanwhile();
        let mut out = Vec::with_capacity(leaves.len());
        for (run, spawned) in helpers {
            match spawned {
                Ok(handle) => match handle.join() {
                    Ok(hashed) => out.extend(hashed),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                Err(e) => {
                    tracing::debug!(error = %e, "hash thread not started; hashing here");
                    out.extend(hash_run(run));
                }
            }
        }
        (out, r)
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarImportReport {
    pub roots: Vec<ContentId>,
    /// Sections read (a block repeated in the CAR counts each time).
    pub blocks_count: u64,
    /// Blocks that were not in the store before.
    pub blocks_new_count: u64,
    pub block_bytes: u64,
    pub pinned: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CarImportError {
    #[error(transparent)]
    Car(#[from] CarReadError),
    #[error("storing blocks: {0}")]
    Put(#[from] PutError),
    #[error(
        "car is incomplete: block {missing} (linked from {parent}) is neither in the car nor in the store; nothing was imported"
    )]
    Missing {
        missing: ContentId,
        parent: ContentId,
    },
    #[error("car block {cid} is not valid dag-pb: {why}; nothing was imported")]
    BadDagPb { cid: ContentId, why: String },
    #[error("car has no roots; nothing was imported")]
    NoRoots,
    #[error("root {0} is neither in the car nor in the store; nothing was imported")]
    MissingRoot(ContentId),
    #[error("pinning root {cid}: {why}")]
    Pin { cid: ContentId, why: String },
}

/// Import a CARv1/CARv2: every block is verified against its CID (by the
/// reader, and again by the store), and unless `allow_partial` every DAG
/// under the roots must be complete (each link's block in the CAR or
/// already stored). On success the roots are pinned when `pin` (never with
/// `allow_partial`); on any
/// error nothing is pinned (see the module docs for what GC does then).
pub fn import_car(
    store: &Store,
    input: &mut dyn Read,
    pin: bool,
    allow_partial: bool,
) -> Result<CarImportReport, CarImportError> {
    // An incomplete DAG is never pinned: a pin promises the whole DAG.
    let pin = pin && !allow_partial;
    let _hold = store.gc_hold();
    let mut writer = BatchWriter::new(store);
    let result = (|| {
        let reader = CarReader::new(input)?;
        let roots = reader.roots().to_vec();
        if roots.is_empty() && !allow_partial {
            return Err(CarImportError::NoRoots);
        }
        let mut seen: HashSet<ContentId> = HashSet::new();
        // (parent, child) for every dag-pb link, checked once all is read.
        let mut links: Vec<(ContentId, ContentId)> = Vec::new();
        let mut out: Vec<Block> = Vec::new();
        let mut report = CarImportReport {
            roots: roots.clone(),
            blocks_count: 0,
            blocks_new_count: 0,
            block_bytes: 0,
            pinned: false,
        };
        for item in reader {
            let (cid, data) = item?;
            report.blocks_count += 1;
            report.block_bytes += data.len() as u64;
            if !seen.insert(cid.to_v1()) {
                continue;
            }
            if cid.codec() == CODEC_DAG_PB && !allow_partial {
                let children = dagpb::links(&data).map_err(|e| CarImportError::BadDagPb {
                    cid,
                    why: e.to_string(),
                })?;
                links.extend(children.into_iter().map(|c| (cid, c)));
            }
            out.push(Block { cid, data });
            if batch_bytes(&out) >= ADD_BATCH_BYTES {
                writer.send(&mut out)?;
            }
        }
        writer.send(&mut out)?;
        writer.settle()?;
        if !allow_partial {
            for root in &roots {
                if !seen.contains(&root.to_v1()) && !store.contains(root) {
                    return Err(CarImportError::MissingRoot(*root));
                }
            }
            for (parent, child) in &links {
                if !seen.contains(&child.to_v1()) && !store.contains(child) {
                    return Err(CarImportError::Missing {
                        missing: *child,
                        parent: *parent,
                    });
                }
            }
        }
        report.blocks_new_count = writer.blocks_new_count;
        if pin {
            for root in &roots {
                store
                    .set_pinned(root, true)
                    .map_err(|e| CarImportError::Pin {
                        cid: *root,
                        why: e.to_string(),
                    })?;
            }
            report.pinned = !roots.is_empty();
        }
        Ok(report)
    })();
    if result.is_err() {
        writer.abandon();
    }
    result
}

/// A [`Store`] that reads hinted blocks ahead on a thread of its own, so a
/// traversal's reads (each a copy out of the page cache and a full hash of
/// the block) run on two cores: the reader takes the newest hinted block
/// and the traversal reads any block it asks for that the reader has not
/// started. A block the reader has started is waited for; one it never
/// started costs nothing extra. At most [`READ_AHEAD_BLOCKS`] blocks are
/// held. The thread starts at the first hint (a one-block request spawns
/// nothing) and is joined on drop.
pub struct ReadAhead {
    store: Store,
    shared: Arc<AheadShared>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct AheadShared {
    state: Mutex<AheadState>,
    changed: Condvar,
    buffers: BlockBuffers,
}

impl AheadShared {
    // A poisoned lock means a reader panicked mid-update of a map of plain
    // values: the map is still usable, and block() falls back to reading by
    // itself for anything not Ready.
    fn lock(&self) -> std::sync::MutexGuard<'_, AheadState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(
        &self,
        state: std::sync::MutexGuard<'a, AheadState>,
    ) -> std::sync::MutexGuard<'a, AheadState> {
        self.changed.wait(state).unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct AheadState {
    queue: VecDeque<ContentId>,
    slots: HashMap<ContentId, AheadSlot>,
    closed: bool,
}

enum AheadSlot {
    Queued,
    Reading,
    Ready(Result<Bytes, SourceError>),
}

impl ReadAhead {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            shared: Arc::default(),
            worker: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AheadState> {
        self.shared.lock()
    }

    fn start_worker(&self) {
        let mut worker = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if worker.is_some() {
            return;
        }
        let (store, shared) = (self.store.clone(), Arc::clone(&self.shared));
        let spawned = std::thread::Builder::new()
            .name("car-read-ahead".into())
            .spawn(move || read_ahead_worker(&store, &shared));
        // Without the thread every hinted block is read by block() itself
        // (Queued is taken over there), so a failed spawn only costs speed.
        if let Ok(handle) = spawned {
            *worker = Some(handle);
        }
    }
}

fn read_ahead_worker(store: &Store, shared: &AheadShared) {
    let lock = || shared.lock();
    loop {
        let cid = {
            let mut state = lock();
            loop {
                if state.closed {
                    return;
                }
                // The newest hint is the block needed last: the traversal
                // reads the older ones itself meanwhile, so the two rarely
                // wait for each other (taking the oldest, the reader would
                // be reading exactly the block the traversal asks for next).
                if let Some(cid) = state.queue.pop_back() {
                    state.slots.insert(cid, AheadSlot::Reading);
                    break cid;
                }
                state = shared.wait(state);
            }
        };
        let read = shared.buffers.read(store, &cid);
        lock().slots.insert(cid, AheadSlot::Ready(read));
        shared.changed.notify_all();
    }
}

impl BlockSource for ReadAhead {
    fn block(&self, cid: &ContentId) -> Result<Bytes, SourceError> {
        let mut state = self.lock();
        match state.slots.get(cid) {
            None => {
                drop(state);
                return self.shared.buffers.read(&self.store, cid);
            }
            Some(AheadSlot::Queued) => {
                // Not started: read it here, in parallel with the reader's
                // current block.
                state.slots.remove(cid);
                state.queue.retain(|queued| queued != cid);
                drop(state);
                return self.shared.buffers.read(&self.store, cid);
            }
            Some(AheadSlot::Reading | AheadSlot::Ready(_)) => {}
        }
        loop {
            if matches!(state.slots.get(cid), Some(AheadSlot::Ready(_)))
                && let Some(AheadSlot::Ready(read)) = state.slots.remove(cid)
            {
                // A slot came free for the next hint.
                self.shared.changed.notify_all();
                return read;
            }
            state = self.shared.wait(state);
        }
    }

    fn prefetch(&self, upcoming: &[ContentId]) {
        let mut added = false;
        {
            let mut state = self.lock();
            for cid in upcoming {
                if state.slots.len() >= READ_AHEAD_BLOCKS {
                    break;
                }
                if !state.slots.contains_key(cid) {
                    state.slots.insert(*cid, AheadSlot::Queued);
                    state.queue.push_back(*cid);
                    added = true;
                }
            }
        }
        if added {
            self.start_worker();
            self.shared.changed.notify_all();
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.lock().closed = true;
        self.shared.changed.notify_all();
        let worker = self.worker.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(handle) = worker.take() {
            // The reader finishes the block it holds (one store read) and
            // sees `closed`.
            let _ = handle.join();
        }
    }
}

/// Buffers of the blocks a [`ReadAhead`] read, returned when the last
/// `Bytes` of a block is dropped (after it was written out) and read into
/// again, up to [`READ_AHEAD_BUFFERS_KEPT_MAX`] of them. Without them every
/// block read got a fresh ~256 KiB buffer, zeroed whole before the read
/// overwrote it (calloc's memset, or page faults and the kernel's zeroing
/// when malloc had given the memory back, as it may when the block is
/// freed on another thread, e.g. by the HTTP body). A buffer goes back with
/// its length, so the next read writes (zeroes) only what it grows by before
/// overwriting all of it.
#[derive(Debug, Default, Clone)]
struct BlockBuffers {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// A block read into a pooled buffer; dropping it returns the buffer.
struct PooledBlock {
    buf: Vec<u8>,
    home: BlockBuffers,
}

impl AsRef<[u8]> for PooledBlock {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledBlock {
    fn drop(&mut self) {
        self.home.give_back(std::mem::take(&mut self.buf));
    }
}

impl BlockBuffers {
    /// `cid` from the store, verified, in a reused buffer when one is free.
    fn read(&self, store: &Store, cid: &ContentId) -> Result<Bytes, SourceError> {
        // A poisoned pool only loses the reuse, never data.
        let reused = self.free.lock().ok().and_then(|mut free| free.pop());
        let mut buf = reused.unwrap_or_default();
        match store.get_into(cid, &mut buf) {
            Ok(()) => Ok(Bytes::from_owner(PooledBlock {
                buf,
                home: self.clone(),
            })),
            Err(e) => {
                self.give_back(buf);
                Err(source_error(cid, e))
            }
        }
    }

    fn give_back(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() as u64 > READ_AHEAD_BUFFER_SIZE_BYTES_MAX {
            return;
        }
        if let Ok(mut free) = self.free.lock()
            && free.len() < READ_AHEAD_BUFFERS_KEPT_MAX
        {
            free.push(buf);
        }
    }
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CarExportError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] CarWriteError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CarExportReport {
    pub blocks_count: u64,
    pub car_bytes: u64,
}

/// Write the CARv1 a trustless gateway would send for `root` with
/// `scope` / `entity_bytes` (DFS pre-order, no duplicates).
pub fn export_car<W: Write>(
    store: &Store,
    root: ContentId,
    scope: DagScope,
    entity_bytes: Option<EntityBytes>,
    sink: W,
) -> Result<(CarExportReport, W), CarExportError> {
    let mut car = CarWriter::new(sink, &[root])?;
    let mut blocks_count = 0;
    let source = ReadAhead::new(store.clone());
    for item in CarBlocks::new(&source, root, scope, entity_bytes) {
        let (cid, data) = item?;
        car.write_block(&cid, &data)?;
        blocks_count += 1;
    }
    let car_bytes = car.bytes_written();
    let sink = car.finish()?;
    Ok((
        CarExportReport {
            blocks_count,
            car_bytes,
        },
        sink,
    ))
}
