//! The single writer thread: every state change of the store passes here.
//!
//! One thread owns the tail of the active segment and is the only mutator of
//! the index, which makes ordering trivial (a later record for a key always
//! wins, on disk and in memory) and lets GC run beside puts without a global
//! lock: relocations are conditional ops evaluated here, in order.
//!
//! Group commit: the thread blocks for one op, then takes every op already
//! queued (up to the batch bounds), appends all their records to one buffer
//! and writes it; the page-aligned middle of a big buffer goes with
//! O_DIRECT. When more ops are already waiting, it may write up to
//! `GROUP_COMMIT_WRITES_PER_SYNC_MAX` such buffers before one fdatasync
//! makes them all durable. Only then does it update the index and answer
//! the callers.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use metanode_core::cid::BlockKey;

use crate::index::{Entry, Storage};
use crate::limits::{
    DIRECT_IO_ALIGN_BYTES, DIRECT_WRITE_BYTES_MIN, GROUP_COMMIT_WRITES_PER_SYNC_MAX,
};
use crate::record::{self, RecordHeader, RecordKind};
use crate::{PutError, Segment, Shared};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applied {
    Stored { existed: bool },
    Removed(bool),
    RefusedPinned,
    PinSet,
    NotFound,
    Relocated(bool),
    Done,
}

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("out of space: {0}")]
    NoSpace(String),
    #[error("read-only filesystem: {0}")]
    ReadOnly(String),
    #[error("store poisoned after failed sync: {0}")]
    Poisoned(String),
    #[error("{0}")]
    Io(String),
}

impl WriteError {
    pub(crate) fn from_io(e: &io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => WriteError::NoSpace(e.to_string()),
            Some(libc::EROFS) => WriteError::ReadOnly(e.to_string()),
            _ => WriteError::Io(e.to_string()),
        }
    }

    pub fn into_put_error(self) -> PutError {
        match self {
            WriteError::NoSpace(s) => PutError::NoSpace(s),
            WriteError::ReadOnly(s) => PutError::ReadOnly(s),
            WriteError::Poisoned(s) => PutError::Poisoned(s),
            WriteError::Io(s) => PutError::Io(s),
        }
    }
}

pub(crate) type Outcome = Result<Applied, WriteError>;

/// Where the writer sends an op's outcome: a blocking caller or a future.
#[derive(Debug)]
pub(crate) enum Reply {
    Blocking(crossbeam_channel::Sender<Outcome>),
    Async(tokio::sync::oneshot::Sender<Outcome>),
}

#[derive(Debug)]
pub(crate) enum ReplyRx {
    Blocking(crossbeam_channel::Receiver<Outcome>),
    Async(tokio::sync::oneshot::Receiver<Outcome>),
}

impl Reply {
    pub fn pair_blocking() -> (Reply, ReplyRx) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        (Reply::Blocking(tx), ReplyRx::Blocking(rx))
    }

    pub fn pair_async() -> (Reply, ReplyRx) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Reply::Async(tx), ReplyRx::Async(rx))
    }

    fn send(self, outcome: Outcome) {
        // A caller that gave up (dropped its receiver) is not an error.
        match self {
            Reply::Blocking(tx) => {
                let _ = tx.send(outcome);
            }
            Reply::Async(tx) => {
                let _ = tx.send(outcome);
            }
        }
    }
}

impl ReplyRx {
    pub fn recv_blocking(self) -> Option<Outcome> {
        match self {
            ReplyRx::Blocking(rx) => rx.recv().ok(),
            ReplyRx::Async(rx) => rx.blocking_recv().ok(),
        }
    }

    pub async fn recv_async(self) -> Option<Outcome> {
        match self {
            ReplyRx::Blocking(rx) => rx.recv().ok(),
            ReplyRx::Async(rx) => rx.await.ok(),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Op {
    Put {
        key: BlockKey,
        codec: u32,
        flags: u8,
        size_bytes: u64,
        payload: Bytes,
        reply: Reply,
    },
    /// Commit a large blob whose data (and outboard) are durable in tmp/.
    External {
        key: BlockKey,
        codec: u32,
        flags: u8,
        size_bytes: u64,
        data_tmp: PathBuf,
        outboard_tmp: Option<PathBuf>,
        reply: Reply,
    },
    Delete {
        key: BlockKey,
        only_if_unpinned: bool,
        reply: Reply,
    },
    SetPin {
        key: BlockKey,
        pinned: bool,
        reply: Reply,
    },
    /// GC: re-append `record` (read from `from`) if the index still points
    /// there.
    Relocate {
        key: BlockKey,
        from: (u64, u64),
        record: Vec<u8>,
        reply: Reply,
    },
    /// GC: keep a tombstone alive past its segment's compaction, unless the
    /// key was stored again since.
    CarryTombstone {
        key: BlockKey,
        reply: Reply,
    },
    /// GC: re-record a live key's pin state whose record is being compacted.
    CarryMeta {
        key: BlockKey,
        reply: Reply,
    },
    /// GC: forget and unlink a compacted segment.
    DropSegment {
        id: u64,
        reply: Reply,
    },
    /// GC: unlink a large-blob file no record points at.
    RemoveOrphan {
        key: BlockKey,
        path: PathBuf,
        reply: Reply,
    },
    Shutdown,
}

impl Op {
    fn batch_bytes(&self) -> u64 {
        match self {
            Op::Put { payload, .. } => (payload.len() + record::RECORD_HEADER_BYTES) as u64,
            Op::Relocate { record, .. } => record.len() as u64,
            _ => record::RECORD_HEADER_BYTES as u64,
        }
    }
}

/// What to do once the buffered records are durable.
#[derive(Debug)]
enum Effect {
    Insert {
        key: BlockKey,
        entry: Entry,
    },
    Remove {
        key: BlockKey,
        unlink_external: bool,
    },
    TombstoneWritten {
        segment_id: u64,
    },
}

#[derive(Debug)]
struct Pending {
    effects: Vec<Effect>,
    replies: Vec<(Reply, Applied)>,
    /// Keys staged in this flush (later ops in the batch must see them).
    staged: HashMap<BlockKey, Option<Entry>>,
    /// `lead` filler bytes, then the batch's records. The filler places
    /// file offset `tail + i` at `buf[lead + i]` with the same remainder
    /// modulo [`DIRECT_IO_ALIGN_BYTES`], so the page-aligned middle of the
    /// batch can go to the disk with O_DIRECT straight from here.
    buf: Vec<u8>,
    lead: usize,
    /// Bytes of this group already written after the durable tail by
    /// deferred flushes (not yet synced, applied or answered).
    written_len: u64,
    /// A write of this group was started (a failure must cut the tail).
    write_attempted: bool,
    dir_sync_blobs: bool,
    puts: u64,
    logical_bytes_delta: i64,
}

impl Pending {
    fn new() -> Self {
        Self {
            effects: Vec::new(),
            replies: Vec::new(),
            staged: HashMap::new(),
            buf: Vec::new(),
            lead: 0,
            written_len: 0,
            write_attempted: false,
            dir_sync_blobs: false,
            puts: 0,
            logical_bytes_delta: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.effects.is_empty()
            && self.replies.is_empty()
            && self.batch_len() == 0
            && self.written_len == 0
    }

    /// Bytes this group appends after the durable tail: written plus staged.
    fn group_len(&self) -> u64 {
        self.written_len + self.batch_len() as u64
    }

    /// Bytes of records staged (what the flush appends at the tail).
    fn batch_len(&self) -> usize {
        self.buf.len() - self.lead
    }

    fn records(&self) -> &[u8] {
        &self.buf[self.lead..]
    }

    /// Before the first record of a batch appended at file offset `tail`:
    /// put the filler in front (see `buf`).
    fn begin_at(&mut self, tail: u64) {
        if self.batch_len() != 0 {
            return;
        }
        self.buf.clear();
        let align = DIRECT_IO_ALIGN_BYTES as usize;
        let addr = self.buf.as_ptr() as usize;
        let lead = (tail as usize % align + align - addr % align) % align;
        self.buf.resize(lead, 0);
        self.lead = lead;
    }

    fn clear_batch(&mut self) {
        self.buf.clear();
        self.lead = 0;
    }
}

/// How a batch's bytes are split between the page cache and O_DIRECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirectSplit {
    /// Bytes before the first page boundary (buffered).
    head_len: usize,
    /// Page-aligned bytes written with O_DIRECT.
    middle_len: usize,
}

/// Where a batch of `len` bytes appended at file offset `tail`, held in
/// memory at address `addr`, can use O_DIRECT: its page-aligned middle,
/// if that is big enough and sits page-aligned in memory too.
fn direct_split(tail: u64, len: usize, addr: usize) -> Option<DirectSplit> {
    let align = DIRECT_IO_ALIGN_BYTES;
    let end = tail + len as u64;
    let start = tail.next_multiple_of(align);
    let stop = end - end % align;
    if stop <= start || stop - start < DIRECT_WRITE_BYTES_MIN {
        return None;
    }
    let head_len = (start - tail) as usize;
    if !(addr + head_len).is_multiple_of(align as usize) {
        return None;
    }
    Some(DirectSplit {
        head_len,
        middle_len: (stop - start) as usize,
    })
}

pub(crate) struct Writer {
    inner: Arc<Shared>,
    active: Arc<Segment>,
    poisoned: Option<String>,
    blobs_dir: File,
    /// Flush buffer kept across batches: a fresh multi-MiB allocation per
    /// batch costs a page fault per 4 KiB, which showed up as a third of the
    /// time of 256 KiB puts.
    spare_buf: Vec<u8>,
    /// The active segment opened with O_DIRECT (segment id, file), opened
    /// at its first large batch.
    direct: Option<(u64, File)>,
    /// Set when the filesystem refused O_DIRECT: every batch is buffered.
    direct_refused: bool,
    /// A group written but not yet synced (see `process`).
    open_group: Option<Pending>,
}

pub(crate) fn spawn(
    shared: Arc<Shared>,
    rx: crossbeam_channel::Receiver<Op>,
) -> io::Result<std::thread::JoinHandle<()>> {
    let mut writer = Writer::new(shared)?;
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || writer.run(rx))
}

fn op_reply(op: Op) -> Option<Reply> {
    match op {
        Op::Put { reply, .. }
        | Op::External { reply, .. }
        | Op::Delete { reply, .. }
        | Op::SetPin { reply, .. }
        | Op::Relocate { reply, .. }
        | Op::CarryTombstone { reply, .. }
        | Op::CarryMeta { reply, .. }
        | Op::DropSegment { reply, .. }
        | Op::RemoveOrphan { reply, .. } => Some(reply),
        Op::Shutdown => None,
    }
}

impl Writer {
    /// Runs until every sender is gone or `Shutdown` arrives; everything
    /// queued before that is still committed.
    fn run(&mut self, rx: crossbeam_channel::Receiver<Op>) {
        let (count_max, bytes_max) = (
            self.inner.opts.group_commit_batch_count_max,
            self.inner.opts.group_commit_batch_bytes_max,
        );
        while let Ok(first) = rx.recv() {
            if matches!(first, Op::Shutdown) {
                self.close_group();
                return;
            }
            let mut bytes = first.batch_bytes();
            let mut ops = vec![first];
            let mut shutdown = false;
            while ops.len() < count_max && bytes < bytes_max {
                match rx.try_recv() {
                    Ok(Op::Shutdown) => {
                        shutdown = true;
                        break;
                    }
                    Ok(op) => {
                        bytes += op.batch_bytes();
                        ops.push(op);
                    }
                    Err(_) => break,
                }
            }
            // Asked after staging, which takes a while for a big batch:
            // a producer has often queued its next batch by then.
            self.process(ops, &|| !shutdown && !rx.is_empty());
            if shutdown {
                self.close_group();
                return;
            }
        }
        self.close_group();
    }

    fn new(inner: Arc<Shared>) -> io::Result<Self> {
        let active = inner
            .segments
            .read()
            .values()
            .next_back()
            .cloned()
            .expect("open always leaves an active segment");
        let blobs_dir = File::open(&inner.dirs.blobs)?;
        // One batch may pass its byte bound by one record; the filler in
        // front is below one page. Within this capacity the buffer never
        // moves, which keeps the O_DIRECT alignment found at its start.
        let batch_bytes = inner.opts.group_commit_batch_bytes_max as usize
            + inner.opts.inline_size_bytes_max as usize
            + record::RECORD_HEADER_BYTES
            + DIRECT_IO_ALIGN_BYTES as usize;
        Ok(Self {
            inner,
            active,
            poisoned: None,
            blobs_dir,
            spare_buf: Vec::with_capacity(batch_bytes),
            direct: None,
            direct_refused: false,
            open_group: None,
        })
    }

    /// The state of `key` as later ops in this flush must see it.
    fn current(&self, p: &Pending, key: &BlockKey) -> Option<Entry> {
        match p.staged.get(key) {
            Some(staged) => *staged,
            None => self.inner.index.get(key),
        }
    }

    /// Stage `ops` and flush them. While more ops are already queued
    /// (`more_queued()` after staging), the flush may only write: the group stays open,
    /// unanswered, and the next flush syncs it with whatever came after,
    /// up to [`GROUP_COMMIT_WRITES_PER_SYNC_MAX`] writes. A bulk writer
    /// then pays one fdatasync per several batches, while no op is
    /// answered (and no index entry appears) before its bytes are durable.
    fn process(&mut self, ops: Vec<Op>, more_queued: &dyn Fn() -> bool) {
        let mut p = self.open_group.take().unwrap_or_else(|| {
            let mut p = Pending::new();
            p.buf = std::mem::take(&mut self.spare_buf);
            p
        });
        let mut drops = vec![];
        for op in ops {
            if let Some(why) = &self.poisoned {
                if let Some(reply) = op_reply(op) {
                    reply.send(Err(WriteError::Poisoned(why.clone())));
                }
                continue;
            }
            match op {
                Op::DropSegment { id, reply } => drops.push((id, reply)),
                op => self.stage(&mut p, op),
            }
        }
        let group_bytes_max =
            self.inner.opts.group_commit_batch_bytes_max * GROUP_COMMIT_WRITES_PER_SYNC_MAX;
        let defer = drops.is_empty()
            && !p.dir_sync_blobs
            && p.group_len() < group_bytes_max
            && more_queued();
        // Errors were already sent to every op of the failed flush.
        let flushed = self.flush(&mut p, !defer);
        if defer && flushed.is_ok() && !p.is_empty() {
            self.open_group = Some(p);
            return;
        }
        self.spare_buf = std::mem::take(&mut p.buf);
        for (id, reply) in drops {
            let res = self.drop_segment(id);
            reply.send(res.map(|()| Applied::Done));
        }
    }

    /// Sync and answer a group left open by a deferred flush.
    fn close_group(&mut self) {
        if let Some(mut p) = self.open_group.take() {
            let _ = self.flush(&mut p, true);
            self.spare_buf = std::mem::take(&mut p.buf);
        }
    }

    /// Append `header`+`payload` to the flush buffer, rolling to a new
    /// segment first if it would not fit; returns the entry a data record
    /// will have (for state records only the location matters).
    ///
    /// Data records may fill a segment only up to its state reserve; the
    /// reserve (pre-allocated with the segment) is kept for tombstones and
    /// pin changes, so space can always be freed on a full disk.
    fn append(
        &mut self,
        p: &mut Pending,
        header: &RecordHeader,
        payload: &[u8],
    ) -> Result<Entry, WriteError> {
        let rec_len = header.record_len();
        let max = self.inner.opts.segment_size_bytes_max;
        let limit = match header.kind {
            RecordKind::Inline | RecordKind::External => {
                max - max / crate::limits::SEGMENT_STATE_RESERVE_DIVISOR
            }
            RecordKind::Tombstone | RecordKind::Meta => max,
        };
        let tail = self.active.len.load(Ordering::Relaxed);
        if tail + p.group_len() + rec_len > limit
            && tail + p.group_len() > record::SEGMENT_HEADER_BYTES as u64
        {
            // The op being staged read the key's state before this flush;
            // if the flush fails that state is gone, so the op fails too
            // (and no roll happens after a failed flush).
            self.flush(p, true)?;
            if let Some(why) = &self.poisoned {
                return Err(WriteError::Poisoned(why.clone()));
            }
            self.roll().map_err(|e| WriteError::from_io(&e))?;
        }
        let tail = self.active.len.load(Ordering::Relaxed) + p.written_len;
        p.begin_at(tail);
        let offset = tail + p.batch_len() as u64;
        record::encode_record(&mut p.buf, header, payload);
        Ok(Entry {
            segment_id: self.active.id,
            offset,
            record_len: rec_len as u32,
            storage: if header.kind == RecordKind::External {
                Storage::External
            } else {
                Storage::Inline
            },
            size_bytes: header.size_bytes,
            codec: header.codec,
            flags: header.flags,
            damaged: false,
        })
    }

    fn stage(&mut self, p: &mut Pending, op: Op) {
        match op {
            Op::Put {
                key,
                codec,
                flags,
                size_bytes,
                payload,
                reply,
            } => {
                let cur = self.current(p, &key);
                let want_pin = flags & record::FLAG_PINNED != 0;
                if let Some(e) = cur
                    && !e.damaged
                    && (e.pinned() || !want_pin)
                {
                    p.replies.push((reply, Applied::Stored { existed: true }));
                    return;
                }
                let header = RecordHeader {
                    kind: RecordKind::Inline,
                    flags,
                    key,
                    codec,
                    size_bytes,
                    payload_len: payload.len() as u32,
                };
                self.stage_data_record(p, &header, &payload, cur, reply);
            }
            Op::External {
                key,
                codec,
                flags,
                size_bytes,
                data_tmp,
                outboard_tmp,
                reply,
            } => {
                let cur = self.current(p, &key);
                let want_pin = flags & record::FLAG_PINNED != 0;
                if let Some(e) = cur
                    && e.storage == Storage::External
                    && !e.damaged
                    && (e.pinned() || !want_pin)
                {
                    let _ = std::fs::remove_file(&data_tmp);
                    if let Some(o) = &outboard_tmp {
                        let _ = std::fs::remove_file(o);
                    }
                    p.replies.push((reply, Applied::Stored { existed: true }));
                    return;
                }
                // A delete of this key staged earlier in the batch must not
                // unlink the file we are about to rename into place (same
                // key = same bytes, so the new file serves both).
                for effect in p.effects.iter_mut() {
                    if let Effect::Remove {
                        key: k,
                        unlink_external,
                    } = effect
                        && *k == key
                    {
                        *unlink_external = false;
                    }
                }
                // The data must be in place before a durable record names it.
                let data_path = self.inner.dirs.data_path(&key);
                let ob_path = self.inner.dirs.outboard_path(&key);
                let renamed =
                    std::fs::rename(&data_tmp, &data_path).and_then(|()| match &outboard_tmp {
                        Some(o) => std::fs::rename(o, &ob_path),
                        None => Ok(()),
                    });
                if let Err(e) = renamed {
                    let _ = std::fs::remove_file(&data_tmp);
                    if let Some(o) = &outboard_tmp {
                        let _ = std::fs::remove_file(o);
                    }
                    reply.send(Err(WriteError::from_io(&e)));
                    return;
                }
                p.dir_sync_blobs = true;
                let header = RecordHeader {
                    kind: RecordKind::External,
                    flags,
                    key,
                    codec,
                    size_bytes,
                    payload_len: 0,
                };
                self.stage_data_record(p, &header, &[], cur, reply);
            }
            Op::Delete {
                key,
                only_if_unpinned,
                reply,
            } => {
                let Some(cur) = self.current(p, &key) else {
                    p.replies.push((reply, Applied::Removed(false)));
                    return;
                };
                if only_if_unpinned && cur.pinned() {
                    p.replies.push((reply, Applied::RefusedPinned));
                    return;
                }
                self.stage_tombstone(p, key, cur, reply, Applied::Removed(true));
            }
            Op::SetPin { key, pinned, reply } => {
                let Some(cur) = self.current(p, &key) else {
                    p.replies.push((reply, Applied::NotFound));
                    return;
                };
                if cur.pinned() == pinned {
                    p.replies.push((reply, Applied::PinSet));
                    return;
                }
                match self.stage_meta(p, key, cur, pinned) {
                    Ok(()) => p.replies.push((reply, Applied::PinSet)),
                    Err(e) => reply.send(Err(e)),
                }
            }
            Op::CarryMeta { key, reply } => {
                // GC: the pin state lived in a segment being compacted.
                let Some(cur) = self.current(p, &key) else {
                    p.replies.push((reply, Applied::Relocated(false)));
                    return;
                };
                match self.stage_meta(p, key, cur, cur.pinned()) {
                    Ok(()) => p.replies.push((reply, Applied::Relocated(true))),
                    Err(e) => reply.send(Err(e)),
                }
            }
            Op::Relocate {
                key,
                from,
                record: rec,
                reply,
            } => {
                let cur = self.current(p, &key);
                let still_there = cur.is_some_and(|e| (e.segment_id, e.offset) == from);
                if !still_there {
                    p.replies.push((reply, Applied::Relocated(false)));
                    return;
                }
                let cur = cur.expect("checked above");
                let header = match record::decode_header(&rec) {
                    Ok((h, _)) => h,
                    Err(e) => {
                        reply.send(Err(WriteError::Io(format!("relocated record: {e}"))));
                        return;
                    }
                };
                // The copy carries the *current* pin state: it becomes the
                // newest record of the key, so older pin records are moot.
                let header = RecordHeader {
                    flags: cur.flags,
                    ..header
                };
                let payload = &rec[record::RECORD_HEADER_BYTES..];
                match self.append(p, &header, payload) {
                    Ok(entry) => {
                        p.staged.insert(key, Some(entry));
                        p.effects.push(Effect::Insert { key, entry });
                        p.replies.push((reply, Applied::Relocated(true)));
                    }
                    Err(e) => reply.send(Err(e)),
                }
            }
            Op::CarryTombstone { key, reply } => {
                if self.current(p, &key).is_some() {
                    // Stored again after the delete: the tombstone is obsolete.
                    p.replies.push((reply, Applied::Relocated(false)));
                    return;
                }
                let header = tombstone_header(key);
                match self.append(p, &header, &[]) {
                    Ok(entry) => {
                        p.effects.push(Effect::TombstoneWritten {
                            segment_id: entry.segment_id,
                        });
                        p.replies.push((reply, Applied::Relocated(true)));
                    }
                    Err(e) => reply.send(Err(e)),
                }
            }
            Op::RemoveOrphan { key, path, reply } => {
                // Only durable state counts: a tombstone staged in this batch
                // is not yet durable, and a key staged at all is in motion.
                let live_external = p.staged.contains_key(&key)
                    || self
                        .inner
                        .index
                        .get(&key)
                        .is_some_and(|e| e.storage == Storage::External);
                if live_external {
                    p.replies.push((reply, Applied::Removed(false)));
                } else {
                    let removed = std::fs::remove_file(&path).is_ok();
                    p.dir_sync_blobs |= removed;
                    p.replies.push((reply, Applied::Removed(removed)));
                }
            }
            Op::DropSegment { .. } | Op::Shutdown => unreachable!("handled by process()"),
        }
    }

    fn stage_tombstone(
        &mut self,
        p: &mut Pending,
        key: BlockKey,
        cur: Entry,
        reply: Reply,
        applied: Applied,
    ) {
        match self.append(p, &tombstone_header(key), &[]) {
            Ok(entry) => {
                p.logical_bytes_delta -= cur.size_bytes as i64;
                p.staged.insert(key, None);
                p.effects.push(Effect::TombstoneWritten {
                    segment_id: entry.segment_id,
                });
                p.effects.push(Effect::Remove {
                    key,
                    unlink_external: cur.storage == Storage::External,
                });
                p.replies.push((reply, applied));
            }
            Err(e) => reply.send(Err(e)),
        }
    }

    /// Append a blob record (inline or external) and stage what follows
    /// once it is durable: index insert, counters, the "stored" answer.
    fn stage_data_record(
        &mut self,
        p: &mut Pending,
        header: &RecordHeader,
        payload: &[u8],
        cur: Option<Entry>,
        reply: Reply,
    ) {
        let key = header.key;
        match self.append(p, header, payload) {
            Ok(entry) => {
                if cur.is_none() {
                    p.logical_bytes_delta += header.size_bytes as i64;
                }
                p.staged.insert(key, Some(entry));
                p.effects.push(Effect::Insert { key, entry });
                p.puts += 1;
                p.replies.push((
                    reply,
                    Applied::Stored {
                        existed: cur.is_some_and(|e| !e.damaged),
                    },
                ));
            }
            Err(e) => reply.send(Err(e)),
        }
    }

    /// A pin-state record: 60 bytes, no payload copy.
    fn stage_meta(
        &mut self,
        p: &mut Pending,
        key: BlockKey,
        cur: Entry,
        pinned: bool,
    ) -> Result<(), WriteError> {
        let header = RecordHeader {
            kind: RecordKind::Meta,
            flags: if pinned { record::FLAG_PINNED } else { 0 },
            key,
            codec: 0,
            size_bytes: 0,
            payload_len: 0,
        };
        self.append(p, &header, &[])?;
        let entry = Entry {
            flags: if pinned {
                cur.flags | record::FLAG_PINNED
            } else {
                cur.flags & !record::FLAG_PINNED
            },
            ..cur
        };
        p.staged.insert(key, Some(entry));
        p.effects.push(Effect::Insert { key, entry });
        Ok(())
    }

    /// Write what is staged; with `sync`, make the whole group durable,
    /// then apply and answer it (without, the group stays open).
    fn flush(&mut self, p: &mut Pending, sync: bool) -> Result<(), WriteError> {
        if p.is_empty() {
            return Ok(());
        }
        let durable = self.active.len.load(Ordering::Relaxed);
        // `failed`: why the group fails (a failed directory sync, or the
        // classified `io_failed` of a failed write or sync).
        let mut failed: Option<WriteError> = None;
        let mut io_failed: Option<io::Error> = None;
        if sync
            && p.dir_sync_blobs
            && let Err(e) = self.inner.io.sync_all(&self.blobs_dir)
        {
            failed = Some(WriteError::from_io(&e));
        }
        if failed.is_none() && p.batch_len() != 0 {
            p.write_attempted = true;
            match self.write_batch(durable + p.written_len, p.records()) {
                Ok(()) => {
                    p.written_len += p.batch_len() as u64;
                    p.clear_batch();
                }
                Err(e) => io_failed = Some(e),
            }
        }
        if !sync && failed.is_none() && io_failed.is_none() {
            // Written, not durable: nothing is applied or answered until a
            // later flush syncs the whole group.
            return Ok(());
        }
        if failed.is_none()
            && io_failed.is_none()
            && p.written_len != 0
            && let Err(e) = self.inner.io.sync_data(&self.active.file)
        {
            // fsync failed: the page cache may have dropped our data
            // ("fsyncgate"); nothing written from now on can be trusted
            // until a restart re-reads the log.
            self.poisoned = Some(e.to_string());
            io_failed = Some(e);
        }
        if let Some(e) = io_failed {
            failed = Some(if self.poisoned.is_some() {
                WriteError::Poisoned(e.to_string())
            } else {
                WriteError::from_io(&e)
            });
        }
        if failed.is_some() && p.write_attempted {
            // Cut the group off so the next append starts at a record
            // boundary, durably (otherwise complete records of this failed
            // group could reappear after a crash); truncation frees the
            // segment's reserve, so take it again. If the cut cannot be made
            // durable, stop writing.
            let cut = self
                .active
                .file
                .set_len(durable)
                .and_then(|()| self.inner.io.sync_data(&self.active.file));
            if let Err(cut_err) = cut {
                self.poisoned.get_or_insert_with(|| {
                    format!(
                        "cannot cut a failed batch off {}: {cut_err}",
                        self.active.path.display()
                    )
                });
            }
            crate::scan::reserve_segment(&self.active.file, self.inner.opts.segment_size_bytes_max);
        }
        let outcome = match failed {
            None => {
                self.active
                    .len
                    .store(durable + p.written_len, Ordering::Release);
                self.apply(p);
                Ok(())
            }
            Some(e) => {
                tracing::warn!(error = %e, ops = p.replies.len(), "store batch failed");
                for (reply, _) in p.replies.drain(..) {
                    reply.send(Err(e.clone()));
                }
                p.effects.clear();
                Err(e)
            }
        };
        p.clear_batch();
        p.staged.clear();
        p.dir_sync_blobs = false;
        p.puts = 0;
        p.logical_bytes_delta = 0;
        p.written_len = 0;
        p.write_attempted = false;
        outcome
    }

    /// Append `records` at `tail` of the active segment (not yet durable).
    /// A big batch writes its page-aligned middle with O_DIRECT and only its
    /// partial first and last pages through the page cache: a bulk import
    /// then skips copying into freshly allocated page-cache pages and the
    /// writeback of them, which on our VMs made fdatasync'd buffered writes
    /// ten times slower than direct ones. The last partial page stays
    /// buffered, and the next batch's first partial page is that same page,
    /// so no page is ever written both ways. The caller's fdatasync makes
    /// both parts durable (and commits the size change).
    fn write_batch(&mut self, tail: u64, records: &[u8]) -> io::Result<()> {
        let io = self.inner.io.clone();
        let active = self.active.clone();
        let buffered = &active.file;
        let split = direct_split(tail, records.len(), records.as_ptr() as usize)
            .filter(|_| self.open_direct());
        let (Some(split), Some((_, direct))) = (split, self.direct.as_ref()) else {
            return io.write_all_at(buffered, tail, &[records]);
        };
        let (head, rest) = records.split_at(split.head_len);
        let (middle, end) = rest.split_at(split.middle_len);
        let middle_at = tail + split.head_len as u64;
        if !head.is_empty() {
            io.write_all_at(buffered, tail, &[head])?;
        }
        match io.write_all_at(direct, middle_at, &[middle]) {
            Ok(()) => {
                self.inner
                    .counters
                    .direct_write_bytes_total
                    .fetch_add(middle.len() as u64, Ordering::Relaxed);
            }
            // A filesystem that opens O_DIRECT but refuses the write (it
            // wants another alignment): buffered from now on.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::info!(error = %e, "O_DIRECT write refused; store writes stay buffered");
                self.direct_refused = true;
                self.direct = None;
                io.write_all_at(buffered, middle_at, &[middle])?;
            }
            Err(e) => return Err(e),
        }
        if !end.is_empty() {
            io.write_all_at(buffered, middle_at + middle.len() as u64, &[end])?;
        }
        Ok(())
    }

    /// Open the active segment with O_DIRECT unless that is open already;
    /// false when the filesystem does not do it (tmpfs on old kernels,
    /// some FUSE), and from then on.
    fn open_direct(&mut self) -> bool {
        if self.direct_refused {
            return false;
        }
        if self
            .direct
            .as_ref()
            .is_some_and(|(id, _)| *id == self.active.id)
        {
            return true;
        }
        use std::os::unix::fs::OpenOptionsExt;
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&self.active.path);
        match opened {
            Ok(f) => {
                self.direct = Some((self.active.id, f));
                true
            }
            Err(e) => {
                tracing::info!(error = %e, path = %self.active.path.display(),
                    "O_DIRECT open refused; store writes stay buffered");
                self.direct_refused = true;
                self.direct = None;
                false
            }
        }
    }

    fn apply(&mut self, p: &mut Pending) {
        let segments = self.inner.segments.read();
        let mut unlinked = false;
        for effect in p.effects.drain(..) {
            match effect {
                Effect::Insert { key, entry } => {
                    if let Some(seg) = segments.get(&entry.segment_id) {
                        seg.live_bytes
                            .fetch_add(entry.record_len as u64, Ordering::Relaxed);
                    }
                    if let Some(old) = self.inner.index.insert(key, entry)
                        && let Some(seg) = segments.get(&old.segment_id)
                    {
                        seg.live_bytes
                            .fetch_sub(old.record_len as u64, Ordering::Relaxed);
                    }
                }
                Effect::Remove {
                    key,
                    unlink_external,
                } => {
                    if let Some(old) = self.inner.index.remove(&key)
                        && let Some(seg) = segments.get(&old.segment_id)
                    {
                        seg.live_bytes
                            .fetch_sub(old.record_len as u64, Ordering::Relaxed);
                    }
                    if unlink_external {
                        // The tombstone is durable; a crash before these
                        // unlinks leaves orphans that GC removes.
                        let _ = std::fs::remove_file(self.inner.dirs.data_path(&key));
                        let _ = std::fs::remove_file(self.inner.dirs.outboard_path(&key));
                        unlinked = true;
                    }
                }
                Effect::TombstoneWritten { segment_id } => {
                    if let Some(seg) = segments.get(&segment_id) {
                        seg.tombstones.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        drop(segments);
        if unlinked {
            let _ = self.inner.io.sync_all(&self.blobs_dir);
        }
        let c = &self.inner.counters;
        if p.puts > 0 {
            c.puts_total.fetch_add(p.puts, Ordering::Relaxed);
            c.put_batches_total.fetch_add(1, Ordering::Relaxed);
        }
        if p.logical_bytes_delta >= 0 {
            c.bytes_logical
                .fetch_add(p.logical_bytes_delta as u64, Ordering::Relaxed);
        } else {
            c.bytes_logical
                .fetch_sub((-p.logical_bytes_delta) as u64, Ordering::Relaxed);
        }
        for (reply, applied) in p.replies.drain(..) {
            reply.send(Ok(applied));
        }
    }

    /// Seal the active segment and start the next one.
    fn roll(&mut self) -> io::Result<()> {
        let id = self.active.id + 1;
        let seg = crate::scan::create_segment(
            &self.inner.dirs,
            &*self.inner.io,
            id,
            self.inner.opts.segment_size_bytes_max,
        )?;
        let seg = Arc::new(seg);
        self.inner.segments.write().insert(id, seg.clone());
        self.active = seg;
        self.direct = None;
        Ok(())
    }

    fn drop_segment(&mut self, id: u64) -> Result<(), WriteError> {
        if id == self.active.id {
            return Err(WriteError::Io(format!("segment {id} is active")));
        }
        let Some(seg) = self.inner.segments.read().get(&id).cloned() else {
            return Ok(());
        };
        // The unlink must be durable before the segment leaves the map: GC
        // decides whether tombstones need carrying by which segments exist.
        let durable = std::fs::remove_file(&seg.path)
            .and_then(|()| File::open(&self.inner.dirs.packs))
            .and_then(|dir| self.inner.io.sync_all(&dir));
        if let Err(e) = durable {
            self.poisoned.get_or_insert_with(|| {
                format!("cannot durably remove {}: {e}", seg.path.display())
            });
            return Err(WriteError::from_io(&e));
        }
        // Readers holding an Arc keep reading the unlinked file safely.
        self.inner.segments.write().remove(&id);
        Ok(())
    }
}

fn tombstone_header(key: BlockKey) -> RecordHeader {
    RecordHeader {
        kind: RecordKind::Tombstone,
        flags: 0,
        key,
        codec: 0,
        size_bytes: 0,
        payload_len: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = DIRECT_IO_ALIGN_BYTES;
    const MIN: usize = DIRECT_WRITE_BYTES_MIN as usize;

    #[test]
    fn direct_split_takes_the_aligned_middle() {
        // Tail mid-page, buffer placed like the tail: head to the next page,
        // middle whole pages, the partial last page left out.
        let tail = 3 * A + 100;
        let len = MIN + 2 * A as usize + 17;
        let addr = 1 << 20 | 100;
        let split = direct_split(tail, len, addr).expect("big enough");
        assert_eq!(split.head_len, (A - 100) as usize);
        assert_eq!((tail + split.head_len as u64) % A, 0);
        assert_eq!((addr + split.head_len) % A as usize, 0);
        let end = tail + len as u64;
        assert_eq!(split.middle_len as u64, end - end % A - 4 * A);
        assert_eq!(split.middle_len % A as usize, 0);
        // An aligned tail has no head.
        let split = direct_split(8 * A, MIN, 1 << 20).expect("exactly the minimum");
        assert_eq!((split.head_len, split.middle_len), (0, MIN));
    }

    #[test]
    fn direct_split_refuses_small_or_misplaced_batches() {
        assert_eq!(direct_split(0, MIN - 1, 1 << 20), None);
        // The middle would be one page short of the minimum.
        assert_eq!(direct_split(100, MIN, (1 << 20) + 100), None);
        // Memory not placed like the file offset.
        assert_eq!(direct_split(100, 2 * MIN, 1 << 20), None);
        assert_eq!(direct_split(0, 0, 0), None);
    }

    #[test]
    fn begin_at_places_records_like_the_file() {
        let mut p = Pending::new();
        p.buf = Vec::with_capacity(1 << 20);
        for tail in [0u64, 1, 100, A - 1, A, 5 * A + 60] {
            p.clear_batch();
            p.begin_at(tail);
            assert_eq!(p.batch_len(), 0);
            assert!(p.lead < A as usize);
            let at = p.buf.as_ptr() as usize + p.lead;
            assert_eq!(at % A as usize, (tail % A) as usize, "tail {tail}");
            p.buf.extend_from_slice(b"record");
            // A batch already begun keeps its place.
            p.begin_at(tail + 7);
            assert_eq!(p.records(), b"record");
        }
    }
}
