//! Garbage collection without stopping the world.
//!
//! 1. Mark and sweep: live = pinned blocks plus every block reachable through
//!    dag-pb links from a pinned dag-pb block (a pinned UnixFS root keeps its
//!    whole file). Every other block gets a tombstone (through the writer,
//!    with "only if still unpinned", so a pin racing with GC wins). Imports
//!    hold the GC gate from their first block until their root is pinned,
//!    and mark + sweep run under its write side, so a DAG being written is
//!    never swept. A pinned DAG node that cannot be read stops GC before the
//!    sweep: sweeping then could delete blocks the pinned DAG still needs.
//! 2. Compact: a sealed segment that is mostly garbage has its live records
//!    re-appended through the writer as *conditional relocations* (applied
//!    only if the index still points at the old copy), then the segment is
//!    dropped. Readers that looked up the old location keep an `Arc` of the
//!    segment and read the unlinked file safely.
//! 3. Orphans: large-blob files with no record (a crash between rename and
//!    record, or between tombstone and unlink) are removed — by the writer,
//!    which is the only thread that renames files into `blobs/`.
//!
//! Puts and gets never wait for GC beyond sharing the writer's batches.

use std::sync::atomic::Ordering;

use std::collections::HashSet;

use metanode_core::cid::{BlockKey, CODEC_DAG_PB, ContentId, HashKind};
use metanode_core::dagpb;

use crate::record::RecordKind;
use crate::writer::{Applied, Op, Reply, ReplyRx};
use crate::{GetError, Store, limits};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: u64,
    pub segments_compacted: u64,
    pub bytes_reclaimed: u64,
    pub orphans_removed: u64,
    /// Segments left alone because they hold damaged live records (run
    /// `verify` for the list).
    pub segments_skipped_damaged: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcProgress {
    Swept { removed: u64 },
    Compacting { segment_id: u64, done: u64, of: u64 },
    Orphans { removed: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("store was opened read-only")]
    OpenedReadOnly,
    #[error("gc is already running")]
    AlreadyRunning,
    #[error(
        "gc stopped before sweeping: DAG node {cid} reachable from a pin is unreadable ({why}); repair it by re-adding its content, or unpin its root"
    )]
    UnreadableDagNode { cid: ContentId, why: String },
    #[error("gc write failed: {0}")]
    Write(String),
    #[error("gc could not read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// Ops are sent in windows so GC never fills the writer queue that puts
/// also use.
const GC_OPS_IN_FLIGHT_MAX: usize = 256;

pub(crate) fn run(store: &Store, progress: &dyn Fn(GcProgress)) -> Result<GcReport, GcError> {
    let inner = store.inner();
    let tx = inner.writer_tx.as_ref().ok_or(GcError::OpenedReadOnly)?;
    let _running = inner.gc_running.try_lock().ok_or(GcError::AlreadyRunning)?;
    let mut report = GcReport::default();

    // 1. Mark and sweep, with imports and pin changes held off.
    let gate = inner.gc_gate.write();
    let live = mark(store)?;
    let unpinned: Vec<BlockKey> = inner
        .index
        .snapshot()
        .into_iter()
        .filter(|(k, e)| !e.pinned() && !live.contains(k))
        .map(|(k, _)| k)
        .collect();
    for window in unpinned.chunks(GC_OPS_IN_FLIGHT_MAX) {
        let mut rxs = Vec::with_capacity(window.len());
        for key in window {
            let (reply, rx) = Reply::pair_blocking();
            tx.send(Op::Delete {
                key: *key,
                only_if_unpinned: true,
                reply,
            })
            .map_err(|_| GcError::Write("store closed".into()))?;
            rxs.push(rx);
        }
        for rx in rxs {
            if let Applied::Removed(true) = wait(rx)? {
                report.blobs_removed += 1;
            }
        }
        progress(GcProgress::Swept {
            removed: report.blobs_removed,
        });
    }
    drop(gate);

    // 2. Compact sealed segments that are mostly garbage.
    let candidates: Vec<_> = {
        let segs = inner.segments.read();
        let active = segs.keys().next_back().copied();
        segs.values()
            .filter(|s| Some(s.id) != active)
            .filter(|s| {
                let len = s.len.load(Ordering::Relaxed);
                let live = s.live_bytes.load(Ordering::Relaxed);
                let garbage = len.saturating_sub(live + crate::record::SEGMENT_HEADER_BYTES as u64);
                garbage * 100 >= len * limits::GC_GARBAGE_RATIO_MIN_PERCENT
            })
            .cloned()
            .collect()
    };
    for seg in candidates {
        let older_exists = inner
            .segments
            .read()
            .keys()
            .next()
            .is_some_and(|first| *first < seg.id);
        let mut ops: Vec<(BlockKey, Op, ReplyRx)> = vec![];
        let damaged = std::cell::Cell::new(false);
        crate::scan::for_each_record(
            &seg.path,
            |found| {
                let h = found.header;
                if !found.crc_ok {
                    damaged.set(true);
                    return;
                }
                match h.kind {
                    RecordKind::Inline | RecordKind::External => {
                        let live = inner
                            .index
                            .get(&h.key)
                            .is_some_and(|e| e.segment_id == seg.id && e.offset == found.offset);
                        if live {
                            let (reply, rx) = Reply::pair_blocking();
                            ops.push((
                                h.key,
                                Op::Relocate {
                                    key: h.key,
                                    from: (seg.id, found.offset),
                                    record: found.bytes.to_vec(),
                                    reply,
                                },
                                rx,
                            ));
                        }
                    }
                    RecordKind::Meta => {
                        // Still the newest word on the pin state only when
                        // the key's data record is older than this segment.
                        let needed = inner
                            .index
                            .get(&h.key)
                            .is_some_and(|e| e.segment_id < seg.id);
                        if needed {
                            let (reply, rx) = Reply::pair_blocking();
                            ops.push((h.key, Op::CarryMeta { key: h.key, reply }, rx));
                        }
                    }
                    RecordKind::Tombstone => {
                        // Needed only while an older segment might still
                        // hold a record of this key.
                        if older_exists {
                            let (reply, rx) = Reply::pair_blocking();
                            ops.push((h.key, Op::CarryTombstone { key: h.key, reply }, rx));
                        }
                    }
                }
            },
            |_, _| damaged.set(true),
        )
        .map_err(|source| GcError::Read {
            path: seg.path.display().to_string(),
            source,
        })?;
        if damaged.get() {
            // Dropping the segment could drop a damaged live record along
            // with the evidence; leave it for an operator.
            report.segments_skipped_damaged += 1;
            continue;
        }
        let total = ops.len() as u64;
        let mut done = 0u64;
        let mut iter = ops.into_iter().peekable();
        while iter.peek().is_some() {
            let mut rxs = vec![];
            for (_, op, rx) in iter.by_ref().take(GC_OPS_IN_FLIGHT_MAX) {
                tx.send(op)
                    .map_err(|_| GcError::Write("store closed".into()))?;
                rxs.push(rx);
            }
            for rx in rxs {
                wait(rx)?;
                done += 1;
            }
            progress(GcProgress::Compacting {
                segment_id: seg.id,
                done,
                of: total,
            });
        }
        let (reply, rx) = Reply::pair_blocking();
        tx.send(Op::DropSegment { id: seg.id, reply })
            .map_err(|_| GcError::Write("store closed".into()))?;
        wait(rx)?;
        report.segments_compacted += 1;
        report.bytes_reclaimed += seg.len.load(Ordering::Relaxed);
    }

    // 3. Orphaned large-blob files.
    let dir = &inner.dirs.blobs;
    let entries = std::fs::read_dir(dir).map_err(|source| GcError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    let mut rxs = vec![];
    for ent in entries.flatten() {
        let path = ent.path();
        let Some(key) = key_of_blob_file(&path) else {
            continue;
        };
        let live = inner
            .index
            .get(&key)
            .is_some_and(|e| e.storage == crate::index::Storage::External);
        if !live {
            let (reply, rx) = Reply::pair_blocking();
            tx.send(Op::RemoveOrphan { key, path, reply })
                .map_err(|_| GcError::Write("store closed".into()))?;
            rxs.push(rx);
        }
    }
    for rx in rxs {
        if let Applied::Removed(true) = wait(rx)? {
            report.orphans_removed += 1;
        }
    }
    progress(GcProgress::Orphans {
        removed: report.orphans_removed,
    });
    Ok(report)
}

/// Every block reachable from a pinned dag-pb block (pinned blocks are
/// live by their own flag). A link to a block we do not have is fine (a
/// partial DAG, e.g. a CAR of one entity range); a pinned DAG node we cannot
/// read or parse is an error.
fn mark(store: &Store) -> Result<HashSet<BlockKey>, GcError> {
    let mut live = HashSet::new();
    let mut stack: Vec<BlockKey> = Vec::new();
    for (key, entry) in store.inner().index.snapshot() {
        if entry.pinned() && entry.codec as u64 == CODEC_DAG_PB {
            live.insert(key);
            stack.push(key);
        }
    }
    while let Some(key) = stack.pop() {
        let cid = ContentId::from_key(CODEC_DAG_PB, key);
        let data = match store.get(&cid) {
            Ok(d) => d,
            Err(GetError::NotFound(_)) => continue,
            Err(e) => {
                return Err(GcError::UnreadableDagNode {
                    cid,
                    why: e.to_string(),
                });
            }
        };
        let links = dagpb::links(&data).map_err(|e| GcError::UnreadableDagNode {
            cid,
            why: e.to_string(),
        })?;
        for child in links {
            if live.insert(child.key()) && child.codec() == CODEC_DAG_PB {
                stack.push(child.key());
            }
        }
    }
    Ok(live)
}

fn wait(rx: ReplyRx) -> Result<Applied, GcError> {
    match rx.recv_blocking() {
        Some(Ok(a)) => Ok(a),
        Some(Err(e)) => Err(GcError::Write(e.to_string())),
        None => Err(GcError::Write("store closed".into())),
    }
}

/// `blobs/blake3-<hex>.data` or `.obao` → its key.
pub(crate) fn key_of_blob_file(path: &std::path::Path) -> Option<BlockKey> {
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".data")
        .or_else(|| name.strip_suffix(".obao"))?;
    let (kind, hex) = stem.split_once('-')?;
    let kind = match kind {
        "blake3" => HashKind::Blake3,
        "sha2-256" => HashKind::Sha2_256,
        _ => return None,
    };
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex, &mut digest).ok()?;
    Some(BlockKey { kind, digest })
}
