//! Opening a store: lock, recover, rebuild the index from the logs.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metanode_sys::FileIo;
use parking_lot::{Mutex, RwLock};

use crate::index::{Entry, Index, Storage};
use crate::record::{self, RECORD_HEADER_BYTES, RecordKind, SEGMENT_HEADER_BYTES};
use crate::{Counters, Dirs, Inner, OpenError, OpenReport, Segment, Shared, StoreOptions, writer};

fn io_err(what: &'static str, path: &Path, source: io::Error) -> OpenError {
    if source.raw_os_error() == Some(libc::EROFS) {
        return OpenError::ReadOnly {
            dir: path.to_path_buf(),
        };
    }
    OpenError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn open(opts: StoreOptions) -> Result<Inner, OpenError> {
    let dirs = Dirs::new(&opts.data_dir);
    if !opts.read_only {
        for d in [&dirs.root, &dirs.packs, &dirs.blobs, &dirs.tmp] {
            std::fs::create_dir_all(d).map_err(|e| io_err("creating directory", d, e))?;
        }
        // New directory entries must be durable before anything inside them
        // is acknowledged: fsync the data dir and its parent.
        for d in [Some(dirs.root.as_path()), dirs.root.parent()]
            .into_iter()
            .flatten()
        {
            if let Ok(f) = File::open(d) {
                f.sync_all()
                    .map_err(|e| io_err("syncing directory", d, e))?;
            }
        }
    } else if !dirs.packs.is_dir() {
        return Err(OpenError::Io {
            what: "opening store",
            path: dirs.root.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "no store here (packs/ is missing)"),
        });
    }
    let lock = take_lock(&dirs.root, opts.read_only)?;
    let selection = match &opts.io_override {
        Some(io) => metanode_sys::Selection {
            io: io.clone(),
            reason: "injected by caller".into(),
        },
        None => metanode_sys::select(opts.io)?,
    };
    let io = selection.io;
    let mut report = OpenReport::default();
    if !opts.read_only {
        report.tmp_files_removed = clear_dir(&dirs.tmp)?;
    }
    let index = Index::new();
    let mut segments = BTreeMap::new();
    let ids = list_segments(&dirs.packs)?;
    let last = ids.last().copied();
    for id in &ids {
        let path = dirs.segment_path(*id);
        let is_last = Some(*id) == last;
        let seg = scan_segment(
            &path,
            *id,
            is_last && !opts.read_only,
            &index,
            &mut report,
            &*io,
            opts.segment_size_bytes_max,
        )?;
        segments.insert(*id, Arc::new(seg));
    }
    // Recompute live bytes now that the index is final.
    for (_, e) in index.snapshot() {
        if let Some(seg) = segments.get(&e.segment_id) {
            seg.live_bytes
                .fetch_add(e.record_len as u64, Ordering::Relaxed);
        }
    }
    let counters = Counters::default();
    let logical: u64 = index.snapshot().iter().map(|(_, e)| e.size_bytes).sum();
    counters.bytes_logical.store(logical, Ordering::Relaxed);
    if !opts.read_only {
        // The last segment stays active even when nearly full: the writer
        // rolls when a record does not fit, and a store on a full disk must
        // still open (its reserve takes the tombstones that free space).
        if segments.is_empty() {
            let id = last.map_or(1, |l| l + 1);
            let seg = create_segment(&dirs, &*io, id, opts.segment_size_bytes_max)
                .map_err(|e| io_err("creating segment", &dirs.segment_path(id), e))?;
            segments.insert(id, Arc::new(seg));
        }
    }
    report.segments = segments.len() as u64;
    if report.torn_tail_bytes_truncated > 0 {
        tracing::warn!(
            bytes = report.torn_tail_bytes_truncated,
            "cut a torn tail off the last segment"
        );
    }
    for d in &report.damaged_regions {
        tracing::error!(region = %d, "damaged region in segment");
    }
    let shared = Arc::new(Shared {
        opts,
        io,
        io_reason: selection.reason,
        dirs,
        index,
        segments: RwLock::new(segments),
        counters,
    });
    let (writer_tx, writer_handle) = if shared.opts.read_only {
        (None, None)
    } else {
        let (tx, rx) = crossbeam_channel::bounded(crate::limits::WRITER_QUEUE_DEPTH_MAX);
        let handle = writer::spawn(shared.clone(), rx)
            .map_err(|e| io_err("starting writer for", &shared.dirs.root, e))?;
        (Some(tx), Some(handle))
    };
    Ok(Inner {
        shared,
        writer_tx,
        writer_handle: Mutex::new(writer_handle),
        gc_running: Mutex::new(()),
        gc_gate: Arc::new(RwLock::new(())),
        open_report: report,
        _lock: lock,
    })
}

fn take_lock(root: &Path, shared: bool) -> Result<File, OpenError> {
    let path = root.join("LOCK");
    let file = if shared {
        File::open(&path).or_else(|_| File::open(root))
    } else {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o644)
            .open(&path)
    }
    .map_err(|e| io_err("opening lock file", &path, e))?;
    let op = if shared { libc::LOCK_SH } else { libc::LOCK_EX } | libc::LOCK_NB;
    // SAFETY: flock only takes the fd number; `file` outlives the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default();
            return Err(OpenError::Locked {
                dir: root.to_path_buf(),
                holder,
            });
        }
        return Err(io_err("locking", &path, err));
    }
    if !shared {
        // Best effort: the pid helps an operator find the holder.
        let _ = file.set_len(0);
        let _ = std::os::unix::fs::FileExt::write_at(
            &file,
            std::process::id().to_string().as_bytes(),
            0,
        );
    }
    Ok(file)
}

fn clear_dir(dir: &Path) -> Result<u64, OpenError> {
    let mut n = 0;
    for ent in std::fs::read_dir(dir).map_err(|e| io_err("listing", dir, e))? {
        let ent = ent.map_err(|e| io_err("listing", dir, e))?;
        if std::fs::remove_file(ent.path()).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

fn list_segments(packs: &Path) -> Result<Vec<u64>, OpenError> {
    let mut ids = vec![];
    for ent in std::fs::read_dir(packs).map_err(|e| io_err("listing", packs, e))? {
        let ent = ent.map_err(|e| io_err("listing", packs, e))?;
        let name = ent.file_name();
        let name = name.to_string_lossy();
        if let Some(hex) = name.strip_suffix(".seg")
            && hex.len() == 16
            && let Ok(id) = u64::from_str_radix(hex, 16)
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

pub(crate) fn create_segment(
    dirs: &Dirs,
    io: &dyn FileIo,
    id: u64,
    size_bytes_max: u64,
) -> io::Result<Segment> {
    let path = dirs.segment_path(id);
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)?;
    // Reserve the whole segment now (without changing its size), so appends
    // into it — above all the tombstones and pin changes that free space —
    // cannot hit ENOSPC later. A full disk shows up here, at roll time.
    // Any failure removes the half-made file, or every later roll would
    // trip over it.
    let made = fallocate_keep_size(&file, size_bytes_max)
        .and_then(|()| io.write_all_at_durable(&file, 0, &[&record::encode_segment_header(id)]))
        .and_then(|()| File::open(&dirs.packs))
        .and_then(|dir| io.sync_all(&dir));
    if let Err(e) = made {
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(Segment {
        id,
        path,
        file,
        len: AtomicU64::new(SEGMENT_HEADER_BYTES as u64),
        live_bytes: AtomicU64::new(0),
        tombstones: AtomicU64::new(0),
    })
}

fn fallocate_keep_size(file: &File, size_bytes: u64) -> io::Result<()> {
    // SAFETY: fallocate only takes the fd number and plain integers.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE,
            0,
            size_bytes as libc::off_t,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(err);
        }
    }
    Ok(())
}

/// Take a segment's reserve again after a truncation freed it (best
/// effort: on a full disk this can fail, and appends then report ENOSPC).
pub(crate) fn reserve_segment(file: &File, size_bytes: u64) {
    if let Err(e) = fallocate_keep_size(file, size_bytes) {
        tracing::warn!(error = %e, "cannot re-reserve segment space after truncation");
    }
}

/// One record found by [`for_each_record`].
pub(crate) struct Found<'a> {
    pub offset: u64,
    pub header: record::RecordHeader,
    /// Whole record (header + payload).
    pub bytes: &'a [u8],
    /// False when the header frames the record (a valid record or the end
    /// of the file follows it) but the checksum fails: the key is known, the
    /// content is damaged. Reads of such a key fail their hash check.
    pub crc_ok: bool,
}

/// Walk every record of a segment file, calling `on_record`; stretches that
/// do not even frame a record are reported through `on_damage(offset, why)`
/// and skipped by searching for the next valid record. Returns the offset
/// just past the last record whose checksum holds, and the file length.
pub(crate) fn for_each_record(
    path: &Path,
    mut on_record: impl FnMut(Found<'_>),
    mut on_damage: impl FnMut(u64, String),
) -> io::Result<(u64, u64)> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut win = Window {
        file,
        file_len,
        base: 0,
        buf: Vec::new(),
    };
    let mut off = SEGMENT_HEADER_BYTES as u64;
    let mut valid_end = off;
    while off < file_len {
        match parse_at(&mut win, off) {
            Ok((header, len)) => {
                on_record(Found {
                    offset: off,
                    header,
                    bytes: win.get(off, len)?,
                    crc_ok: true,
                });
                off += len as u64;
                valid_end = off;
            }
            Err(why) => {
                // A header that frames its record (the next record parses
                // right after it) is a damaged payload, not lost framing.
                if let Ok((header, _)) = record::decode_header(win.get(off, RECORD_HEADER_BYTES)?)
                    && header.record_len() <= RECORD_LEN_MAX
                {
                    let end = off + header.record_len();
                    if end < file_len && parse_at(&mut win, end).is_ok() {
                        on_record(Found {
                            offset: off,
                            header,
                            bytes: win.get(off, header.record_len() as usize)?,
                            crc_ok: false,
                        });
                        off = end;
                        continue;
                    }
                }
                on_damage(off, why);
                // Resynchronise on the next offset that parses and checks.
                let mut next = None;
                let mut o = off + 1;
                while o + RECORD_HEADER_BYTES as u64 <= file_len {
                    if win.get(o, 4)? == record::RECORD_MAGIC.to_le_bytes()
                        && parse_at(&mut win, o).is_ok()
                    {
                        next = Some(o);
                        break;
                    }
                    o += 1;
                }
                match next {
                    Some(n) => off = n,
                    None => break,
                }
            }
        }
    }
    Ok((valid_end, file_len))
}

/// Largest record a segment can hold: anything claiming more is garbage, and
/// refusing it keeps a corrupt length from turning into a huge allocation.
const RECORD_LEN_MAX: u64 = crate::limits::INLINE_SIZE_BYTES_MAX_CAP + RECORD_HEADER_BYTES as u64;
/// Bytes read per refill while scanning (memory stays bounded by this plus
/// one record, however big the segment is).
const SCAN_WINDOW_BYTES: usize = 8 << 20;

/// A sliding read window over a segment file.
struct Window {
    file: File,
    file_len: u64,
    base: u64,
    buf: Vec<u8>,
}

impl Window {
    /// Bytes `[off, off + n)`, cut at the end of the file.
    fn get(&mut self, off: u64, n: usize) -> io::Result<&[u8]> {
        let end = (off + n as u64).min(self.file_len);
        let off = off.min(end);
        if off < self.base || end > self.base + self.buf.len() as u64 {
            let want = ((end - off) as usize)
                .max(SCAN_WINDOW_BYTES)
                .min((self.file_len - off) as usize);
            self.buf.resize(want, 0);
            std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut self.buf, off)?;
            self.base = off;
        }
        let start = (off - self.base) as usize;
        Ok(&self.buf[start..start + (end - off) as usize])
    }
}

fn parse_at(win: &mut Window, off: u64) -> Result<(record::RecordHeader, usize), String> {
    let head = win
        .get(off, RECORD_HEADER_BYTES)
        .map_err(|e| e.to_string())?;
    let (header, crc) = record::decode_header(head).map_err(|e| e.to_string())?;
    let len = header.record_len();
    if len > RECORD_LEN_MAX {
        return Err(format!(
            "record claims {len} bytes, more than any record can hold"
        ));
    }
    if off + len > win.file_len {
        return Err(format!(
            "record of {len} bytes runs past the end of the file"
        ));
    }
    let bytes = win.get(off, len as usize).map_err(|e| e.to_string())?;
    record::check_crc(bytes, crc).map_err(|e| e.to_string())?;
    Ok((header, len as usize))
}

fn scan_segment(
    path: &PathBuf,
    id: u64,
    truncate_tail: bool,
    index: &Index,
    report: &mut OpenReport,
    io: &dyn FileIo,
    segment_size_bytes_max: u64,
) -> Result<Segment, OpenError> {
    let file = if truncate_tail {
        OpenOptions::new().read(true).write(true).open(path)
    } else {
        File::open(path)
    }
    .map_err(|e| io_err("opening segment", path, e))?;
    let mut head = [0u8; SEGMENT_HEADER_BYTES];
    let head_ok = io.read_exact_at(&file, 0, &mut head).is_ok()
        && record::decode_segment_header(&head, id).is_ok();
    if !head_ok {
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if truncate_tail && file_len < SEGMENT_HEADER_BYTES as u64 * 2 {
            // The crash hit while the segment was being created: nothing in
            // it was ever acknowledged. Rewrite its header.
            io.write_all_at_durable(&file, 0, &[&record::encode_segment_header(id)])
                .map_err(|e| io_err("repairing segment header", path, e))?;
            file.set_len(SEGMENT_HEADER_BYTES as u64)
                .map_err(|e| io_err("truncating", path, e))?;
            report.torn_tail_bytes_truncated +=
                file_len.saturating_sub(SEGMENT_HEADER_BYTES as u64);
        } else {
            let why = record::decode_segment_header(&head, id)
                .err()
                .map_or_else(|| "unreadable header".to_string(), |e| e.to_string());
            return Err(OpenError::BadSegment {
                path: path.clone(),
                why,
            });
        }
    }
    let mut found = vec![];
    let mut damage = vec![];
    let (valid_end, file_len) = for_each_record(
        path,
        |f| found.push((f.offset, f.header, f.crc_ok)),
        |off, why| damage.push((off, why)),
    )
    .map_err(|e| io_err("reading segment", path, e))?;
    let mut len = file_len;
    let cut_tail = truncate_tail && valid_end < file_len;
    if cut_tail {
        // Everything after the last valid record of the last segment is a
        // write whose fsync never completed, so it was never acknowledged:
        // cut it off. Damage *before* valid_end is real and stays reported.
        damage.retain(|(off, _)| *off < valid_end);
        found.retain(|(off, _, _)| *off < valid_end);
        file.set_len(valid_end)
            .map_err(|e| io_err("truncating torn tail of", path, e))?;
        reserve_segment(&file, segment_size_bytes_max);
        io.sync_data(&file)
            .map_err(|e| io_err("syncing", path, e))?;
        report.torn_tail_bytes_truncated += file_len - valid_end;
        len = valid_end;
    }
    let tombstones = AtomicU64::new(0);
    for (offset, h, crc_ok) in found {
        report.records += 1;
        if !crc_ok {
            damage.push((
                offset,
                format!("checksum mismatch in the record of {:?}", h.key),
            ));
            // Only a packed blob's key is worth trusting from a damaged
            // record: its reads fail their hash check (never served),
            // `verify` names it, and a re-put repairs it (the entry is
            // marked damaged, so the put is not answered "existed"). A
            // damaged tombstone or pin record could flip meaning: ignored.
            let trust = h.kind == RecordKind::Inline && h.payload_len > 0;
            if !trust {
                continue;
            }
        }
        match h.kind {
            RecordKind::Inline | RecordKind::External => {
                index.insert(
                    h.key,
                    Entry {
                        segment_id: id,
                        offset,
                        record_len: h.record_len() as u32,
                        storage: if h.kind == RecordKind::External {
                            Storage::External
                        } else {
                            Storage::Inline
                        },
                        size_bytes: h.size_bytes,
                        codec: h.codec,
                        flags: h.flags,
                        damaged: !crc_ok,
                    },
                );
            }
            RecordKind::Tombstone => {
                index.remove(&h.key);
                tombstones.fetch_add(1, Ordering::Relaxed);
            }
            RecordKind::Meta => {
                if let Some(mut e) = index.get(&h.key) {
                    e.flags = (e.flags & !record::FLAG_PINNED) | (h.flags & record::FLAG_PINNED);
                    index.insert(h.key, e);
                }
            }
        }
    }
    for (off, why) in damage {
        report
            .damaged_regions
            .push(format!("{}+{off}: {why}", path.display()));
    }
    Ok(Segment {
        id,
        path: path.clone(),
        file,
        len: AtomicU64::new(len),
        live_bytes: AtomicU64::new(0),
        tombstones,
    })
}
