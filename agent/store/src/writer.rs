//! The single writer thread: every state change of the store passes here.
//!
//! One thread owns the tail of the active segment and is the only mutator of
//! the index, which makes ordering trivial (a later record for a key always
//! wins, on disk and in memory) and lets GC run beside puts without a global
//! lock: relocations are conditional ops evaluated here, in order.
//!
//! Group commit: the thread blocks for one op, then takes every op already
//! queued (up to the batch bounds), appends all their records to one buffer
//! and makes it durable with one write+fdatasync (linked in one io_uring
//! submission). Only then does it update the index and answer the callers.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use metanode_core::cid::BlockKey;

use crate::index::{Entry, Storage};
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
    buf: Vec<u8>,
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
            dir_sync_blobs: false,
            puts: 0,
            logical_bytes_delta: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.effects.is_empty() && self.replies.is_empty() && self.buf.is_empty()
    }
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
            self.process(ops);
            if shutdown {
                return;
            }
        }
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
        let batch_bytes = inner.opts.group_commit_batch_bytes_max as usize
            + inner.opts.inline_size_bytes_max as usize
            + record::RECORD_HEADER_BYTES;
        Ok(Self {
            inner,
            active,
            poisoned: None,
            blobs_dir,
            spare_buf: Vec::with_capacity(batch_bytes),
        })
    }

    /// The state of `key` as later ops in this flush must see it.
    fn current(&self, p: &Pending, key: &BlockKey) -> Option<Entry> {
        match p.staged.get(key) {
            Some(staged) => *staged,
            None => self.inner.index.get(key),
        }
    }

    fn process(&mut self, ops: Vec<Op>) {
        let mut p = Pending::new();
        p.buf = std::mem::take(&mut self.spare_buf);
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
        // Errors were already sent to every op of the failed flush.
        let _ = self.flush(&mut p);
        self.spare_buf = std::mem::take(&mut p.buf);
        for (id, reply) in drops {
            let res = self.drop_segment(id);
            reply.send(res.map(|()| Applied::Done));
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
        if tail + p.buf.len() as u64 + rec_len > limit
            && tail + p.buf.len() as u64 > record::SEGMENT_HEADER_BYTES as u64
        {
            // The op being staged read the key's state before this flush;
            // if the flush fails that state is gone, so the op fails too
            // (and no roll happens after a failed flush).
            self.flush(p)?;
            if let Some(why) = &self.poisoned {
                return Err(WriteError::Poisoned(why.clone()));
            }
            self.roll().map_err(|e| WriteError::from_io(&e))?;
        }
        let offset = self.active.len.load(Ordering::Relaxed) + p.buf.len() as u64;
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

    /// Make everything staged durable, then apply and answer.
    fn flush(&mut self, p: &mut Pending) -> Result<(), WriteError> {
        if p.is_empty() {
            return Ok(());
        }
        let mut result: Result<(), WriteError> = Ok(());
        if p.dir_sync_blobs
            && let Err(e) = self.inner.io.sync_all(&self.blobs_dir)
        {
            result = Err(WriteError::from_io(&e));
        }
        if result.is_ok() && !p.buf.is_empty() {
            let tail = self.active.len.load(Ordering::Relaxed);
            let written = self
                .inner
                .io
                .write_all_at(&self.active.file, tail, &[&p.buf]);
            let synced = written.and_then(|()| {
                self.inner
                    .io
                    .sync_data(&self.active.file)
                    .map_err(|e| (e, ()))
                    .map_err(|(e, ())| {
                        // fsync failed: the page cache may have dropped our data
                        // ("fsyncgate"); nothing written from now on can be trusted
                        // until a restart re-reads the log.
                        self.poisoned = Some(e.to_string());
                        e
                    })
            });
            match synced {
                Ok(()) => {
                    self.active
                        .len
                        .store(tail + p.buf.len() as u64, Ordering::Release);
                }
                Err(e) => {
                    // Cut the partial batch off so the next append starts at
                    // a record boundary, durably (otherwise complete records
                    // of this failed batch could reappear after a crash);
                    // truncation frees the segment's reserve, so take it
                    // again. If the cut cannot be made durable, stop writing.
                    let cut = self
                        .active
                        .file
                        .set_len(tail)
                        .and_then(|()| self.inner.io.sync_data(&self.active.file));
                    if let Err(cut_err) = cut {
                        self.poisoned.get_or_insert_with(|| {
                            format!(
                                "cannot cut a failed batch off {}: {cut_err}",
                                self.active.path.display()
                            )
                        });
                    }
                    crate::scan::reserve_segment(
                        &self.active.file,
                        self.inner.opts.segment_size_bytes_max,
                    );
                    result = Err(if self.poisoned.is_some() {
                        WriteError::Poisoned(e.to_string())
                    } else {
                        WriteError::from_io(&e)
                    });
                }
            }
        }
        let outcome = match result {
            Ok(()) => {
                self.apply(p);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, ops = p.replies.len(), "store batch failed");
                for (reply, _) in p.replies.drain(..) {
                    reply.send(Err(e.clone()));
                }
                p.effects.clear();
                Err(e)
            }
        };
        p.buf.clear();
        p.staged.clear();
        p.dir_sync_blobs = false;
        p.puts = 0;
        p.logical_bytes_delta = 0;
        outcome
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
