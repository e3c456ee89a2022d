//! The receipt file on disk: segments, verification, appending.
//!
//! Layout (integers little-endian; `SignedBatch` as in `receipt.rs`):
//!
//! ```text
//! segment 0  <path>    = "MNCAGER1" Frame*                (the chain from genesis)
//! segment n  <path>.n  = "MNCAGES1" segment:u64 next_batch_index:u64
//!                        next_receipt_seq:u64 prev_batch_hash[32] Frame*
//! Frame                = len:u32 SignedBatch
//! ```
//!
//! Why segments: at ~300 bytes per receipt, 20k requests/s write ~6 MB/s
//! forever. With `receipts.segment_bytes_max` the sink starts segment
//! `n + 1` once the next batch would not fit in segment `n` (a segment
//! holds at least one batch, so one may exceed the bound by one frame);
//! with `receipts.segments_kept_max` the oldest segments are deleted
//! past that count, or moved to `receipts.archive_dir` under the same
//! names (the archive is then a log of its own, ending where the live one
//! starts). Segments are never renamed, so a batch's (segment, offset)
//! stays valid for as long as its segment is in the log.
//!
//! A later segment's header carries the chain tip it continues, so
//! verification checks each segment against the end of the one before it,
//! and a log whose early segments were deleted still verifies from its
//! first segment on: the report says which batch it starts at (an anchored
//! start, taken on trust from that header, as any log's first entry is).
//!
//! Crash safety: a new segment's header is written and synced, and the
//! directory synced, before a batch goes into it; old segments are deleted
//! only after that, and an archived one leaves the log only once its
//! archive name is synced (a crash may leave it under both names, which
//! the next round finishes, never under none). A crash mid-rotation leaves a last segment with a torn
//! header, which the next open rewrites from the previous segment's tip; a
//! torn last frame is cut off as before. Anything torn in a segment that is
//! not the last is damage and fails verification by name.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use metanode_core::hash::Hash32;
use metanode_core::keys::PublicKey;

use crate::metrics::Metrics;
use crate::receipt::{
    BatchError, ChainTip, EncodedBatch, RawFrame, Receipt, ReceiptSink, SignedBatch, SinkError,
    decode_frame, read_full, read_raw_frame,
};

/// Segment 0's first bytes (the original single-file format).
pub const RECEIPT_FILE_MAGIC: &[u8; 8] = b"MNCAGER1";
/// A later segment's first bytes.
pub const RECEIPT_SEGMENT_MAGIC: &[u8; 8] = b"MNCAGES1";
/// A later segment's header: magic, segment number, the tip it continues.
pub const RECEIPT_SEGMENT_HEADER_BYTES: u64 = 8 + 8 + 8 + 8 + 32;

/// The largest batch index or receipt sequence a segment header may start
/// at.
const SEGMENT_START_NUMBER_MAX: u64 = 1 << 62;

/// When the sink starts a new segment, how many it keeps, and where the
/// older ones go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentPolicy {
    /// Start a new segment before a batch that would take the current one
    /// past this size; 0 = one segment, never rotated.
    pub segment_bytes_max: u64,
    /// Remove the oldest segments past this count; 0 = keep all.
    pub segments_kept_max: u32,
    /// Where removed segments go, under the names they had (`<dir>/<log
    /// name>`, `<dir>/<log name>.N`), so the archive is itself a log that
    /// `verify-receipts` walks; `None` deletes them. Same filesystem as
    /// the log (a segment moves by link and unlink, never by copy).
    pub archive_dir: Option<PathBuf>,
}

impl SegmentPolicy {
    /// One file that grows without bound (the format before segments).
    pub const ONE_FILE: SegmentPolicy = SegmentPolicy {
        segment_bytes_max: 0,
        segments_kept_max: 0,
        archive_dir: None,
    };
}

/// Gives segment `segment` of the log at `base` its archive name, the same
/// name under `archive_base` (the archived log's base path): a hard link,
/// then the archive directory synced, so the live name may go (the caller
/// unlinks it). Never replaces a name: an archive that already holds it
/// refuses, unless it is this very file (linked by a round that crashed or
/// failed before its unlink; a symlink to it is not: unlinking the live
/// name would lose the data).
fn link_into_archive(base: &Path, archive_base: &Path, segment: u32) -> io::Result<()> {
    let from = segment_path(base, segment);
    let to = segment_path(archive_base, segment);
    match std::fs::hard_link(&from, &to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if !is_hard_link_of(&from, &to)? {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "the archive already holds {}, a different file; refusing to replace it",
                        to.display()
                    ),
                ));
            }
        }
        Err(e) => return Err(e),
    }
    sync_parent_dir(&to)
}

/// The archived log's base path for the log at `base`.
fn archive_base(archive_dir: &Path, base: &Path) -> PathBuf {
    archive_dir.join(base.file_name().unwrap_or_default())
}

/// Segment `segment` of the receipt log at `base`: `base` itself for 0,
/// `base.N` after.
pub fn segment_path(base: &Path, segment: u32) -> PathBuf {
    if segment == 0 {
        return base.to_path_buf();
    }
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".{segment}"));
    PathBuf::from(name)
}

/// The lock file of the log at `base`: `<base>.lock`. Segment numbers are
/// digits, so no segment is ever taken for it.
fn lock_path(base: &Path) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the log's lock (exclusive, without waiting), or says who has it.
fn lock_log(base: &Path) -> Result<File, OpenSinkError> {
    let lock = lock_path(base);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(|source| OpenSinkError::Io {
            action: "open the lock of",
            path: base.to_path_buf(),
            source,
        })?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(OpenSinkError::InUse {
            path: base.to_path_buf(),
            lock,
        }),
        Err(e) => Err(OpenSinkError::Io {
            action: "lock",
            path: base.to_path_buf(),
            source: e.into(),
        }),
    }
}

/// Bytes before the first frame of segment `segment`.
fn header_bytes(segment: u32) -> u64 {
    if segment == 0 {
        RECEIPT_FILE_MAGIC.len() as u64
    } else {
        RECEIPT_SEGMENT_HEADER_BYTES
    }
}

/// Why a receipt file does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyReceiptsError {
    #[error("cannot read receipt file {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("receipt file {} does not start with the cage receipt magic", .path.display())]
    BadMagic { path: PathBuf },
    #[error("receipt file {}: frame at offset {offset} is truncated (torn write?)", .path.display())]
    Truncated { path: PathBuf, offset: u64 },
    #[error("receipt file {}: frame at offset {offset} declares {len} bytes, more than {max}", .path.display())]
    FrameTooLarge {
        path: PathBuf,
        offset: u64,
        len: u32,
        max: u32,
    },
    #[error("receipt file {}: batch at offset {offset} does not decode: {source}", .path.display())]
    Decode {
        path: PathBuf,
        offset: u64,
        source: metanode_core::encoding::DecodeError,
    },
    #[error("receipt file {}: batch {batch_index} at offset {offset}: {source}", .path.display())]
    Batch {
        path: PathBuf,
        offset: u64,
        batch_index: u64,
        source: BatchError,
    },
    #[error(
        "receipt segment {} is missing: segments are numbered without gaps (only the oldest may be deleted)",
        .path.display()
    )]
    SegmentMissing { path: PathBuf },
    #[error("receipt segment {}: bad header: {reason}", .path.display())]
    SegmentHeader { path: PathBuf, reason: String },
    #[error(
        "receipt segment {} does not continue the segment before it: its header starts at batch \
         {found_batch_index}, receipt {found_receipt_seq}; the segment before ends before batch \
         {expected_batch_index}, receipt {expected_receipt_seq}{}",
        .path.display(),
        if *.same_numbers { " (same numbers, different previous batch hash)" } else { "" }
    )]
    SegmentDoesNotContinue {
        path: PathBuf,
        found_batch_index: u64,
        found_receipt_seq: u64,
        expected_batch_index: u64,
        expected_receipt_seq: u64,
        same_numbers: bool,
    },
}

/// What a verified receipt log holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Batches in the segments on disk.
    pub batches_count: u64,
    /// Receipts in the segments on disk.
    pub receipts_count: u64,
    /// Where the chain ends (the next batch continues it).
    pub tip: ChainTip,
    /// Where the first segment on disk starts: genesis, or, when early
    /// segments were removed, the tip its header continues (an archive of
    /// them ends there).
    pub start: ChainTip,
    /// Bytes that verified, over all segments (all of them for
    /// [`verify_receipts`]).
    pub verified_len_bytes: u64,
    /// The first batch on disk: 0 unless early segments were deleted, in
    /// which case the chain is verified from the first segment's header on.
    pub first_batch_index: u64,
    /// Segments on disk (1 for a log that never rotated).
    pub segments_count: u32,
}

/// The segment numbers of the log at `base`, ascending; checked to be
/// consecutive (deleting happens from the oldest end only).
pub fn list_segments(base: &Path) -> Result<Vec<u32>, VerifyReceiptsError> {
    let io_err = |source| VerifyReceiptsError::Io {
        path: base.to_path_buf(),
        source,
    };
    let name = base.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        io_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the receipt path has no UTF-8 file name",
        ))
    })?;
    let dir = dir_of(base);
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(e)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err)?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if file_name == name {
            segments.push(0);
        } else if let Some(number) = file_name
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(parse_segment_number)
        {
            segments.push(number);
        }
    }
    segments.sort_unstable();
    for pair in segments.windows(2) {
        if let [a, b] = pair
            && *b != a + 1
        {
            return Err(VerifyReceiptsError::SegmentMissing {
                path: segment_path(base, a + 1),
            });
        }
    }
    Ok(segments)
}

/// `N` of a `base.N` name: decimal, no sign, no leading zero, at least 1.
/// Anything else (`base.bak`, `base.01`) is not a segment.
fn parse_segment_number(text: &str) -> Option<u32> {
    if text.is_empty() || text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn encode_segment_header(
    segment: u32,
    start: &ChainTip,
) -> [u8; RECEIPT_SEGMENT_HEADER_BYTES as usize] {
    let mut out = [0u8; RECEIPT_SEGMENT_HEADER_BYTES as usize];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        if let Some(slot) = out.get_mut(at..at + bytes.len()) {
            slot.copy_from_slice(bytes);
        }
        at += bytes.len();
    };
    put(RECEIPT_SEGMENT_MAGIC);
    put(&u64::from(segment).to_le_bytes());
    put(&start.next_batch_index.to_le_bytes());
    put(&start.next_receipt_seq.to_le_bytes());
    put(start.prev_batch_hash.as_bytes());
    assert_eq!(
        at as u64, RECEIPT_SEGMENT_HEADER_BYTES,
        "segment header layout"
    );
    out
}

fn decode_segment_header(
    bytes: &[u8; RECEIPT_SEGMENT_HEADER_BYTES as usize],
    segment: u32,
    path: &Path,
) -> Result<ChainTip, VerifyReceiptsError> {
    let bad = |reason: String| VerifyReceiptsError::SegmentHeader {
        path: path.to_path_buf(),
        reason,
    };
    let u64_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes.get(at..at + 8).unwrap_or(&[0; 8]));
        u64::from_le_bytes(word)
    };
    if bytes.get(..8) != Some(RECEIPT_SEGMENT_MAGIC.as_slice()) {
        return Err(bad("does not start with the receipt segment magic".into()));
    }
    let named = u64_at(8);
    if named != u64::from(segment) {
        return Err(bad(format!(
            "names segment {named}, but the file is segment {segment}"
        )));
    }
    // Far beyond any real log (2^62 batches), so `next_tip` arithmetic on
    // what follows can never overflow.
    for (what, value) in [
        ("batch index", u64_at(16)),
        ("receipt sequence", u64_at(24)),
    ] {
        if value > SEGMENT_START_NUMBER_MAX {
            return Err(bad(format!(
                "starts at {what} {value}, past {SEGMENT_START_NUMBER_MAX}"
            )));
        }
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(bytes.get(32..64).unwrap_or(&[0; 32]));
    Ok(ChainTip {
        next_batch_index: u64_at(16),
        next_receipt_seq: u64_at(24),
        prev_batch_hash: Hash32::from_bytes(hash),
    })
}

/// What a segment's first bytes say.
enum SegmentStart {
    /// The header is whole: the chain tip the segment continues.
    Tip(ChainTip),
    /// Shorter than its header, and (segment 0) a prefix of its magic: a
    /// crash came while the file was being created. `got` bytes are there.
    Torn { got: usize },
}

/// Reads segment `segment`'s magic (segment 0) or header (later ones) from
/// the start of `reader`. A wrong magic or a header that does not decode is
/// an error; the callers decide what a torn start means where they are.
fn read_segment_start(
    reader: &mut impl Read,
    segment: u32,
    path: &Path,
) -> Result<SegmentStart, VerifyReceiptsError> {
    let io_err = |source| VerifyReceiptsError::Io {
        path: path.to_path_buf(),
        source,
    };
    if segment == 0 {
        let mut magic = [0u8; 8];
        let got = read_full(reader, &mut magic).map_err(io_err)?;
        if got < 8 && RECEIPT_FILE_MAGIC.starts_with(magic.get(..got).unwrap_or_default()) {
            return Ok(SegmentStart::Torn { got });
        }
        if &magic != RECEIPT_FILE_MAGIC {
            return Err(VerifyReceiptsError::BadMagic {
                path: path.to_path_buf(),
            });
        }
        return Ok(SegmentStart::Tip(ChainTip::GENESIS));
    }
    let mut header = [0u8; RECEIPT_SEGMENT_HEADER_BYTES as usize];
    let got = read_full(reader, &mut header).map_err(io_err)?;
    if (got as u64) < RECEIPT_SEGMENT_HEADER_BYTES {
        return Ok(SegmentStart::Torn { got });
    }
    decode_segment_header(&header, segment, path).map(SegmentStart::Tip)
}

/// One segment as scanned.
#[derive(Clone, Copy, Debug)]
struct SegmentScan {
    start: ChainTip,
    end: ChainTip,
    /// Where its good part ends (0: nothing good, not even a header).
    verified_len_bytes: u64,
}

/// Walks one segment from its header. `expected_start`: the previous
/// segment's end (None for the first segment on disk). `allow_torn_tail`:
/// the last segment, where a crash may have left a torn header or frame.
/// Calls `on_batch(offset, batch)` for each verified batch.
fn scan_segment(
    path: &Path,
    segment: u32,
    key: &PublicKey,
    expected_start: Option<ChainTip>,
    allow_torn_tail: bool,
    on_batch: &mut dyn FnMut(u64, SignedBatch),
) -> Result<SegmentScan, VerifyReceiptsError> {
    let io_err = |source| VerifyReceiptsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
    // A last segment whose start is torn, or (a later one) holds only a
    // header that does not decode: a crash while it was being created,
    // before the header's bytes were on disk. No batch is in it, so the
    // opener rewrites it from the end of the segment before.
    let unwritten = match expected_start {
        Some(start) if allow_torn_tail => Some(start),
        None if allow_torn_tail && segment == 0 => Some(ChainTip::GENESIS),
        _ => None,
    };
    let empty = |start| SegmentScan {
        start,
        end: start,
        verified_len_bytes: 0,
    };
    let start = match read_segment_start(&mut reader, segment, path) {
        Ok(SegmentStart::Tip(start)) => start,
        Ok(SegmentStart::Torn { got }) => {
            return match unwritten {
                Some(start) => Ok(empty(start)),
                None if segment == 0 => Err(VerifyReceiptsError::BadMagic {
                    path: path.to_path_buf(),
                }),
                None => Err(VerifyReceiptsError::SegmentHeader {
                    path: path.to_path_buf(),
                    reason: format!("torn: {got} of {RECEIPT_SEGMENT_HEADER_BYTES} bytes"),
                }),
            };
        }
        Err(e @ VerifyReceiptsError::SegmentHeader { .. }) => match unwritten {
            Some(start) if segment > 0 && reader.fill_buf().map_err(io_err)?.is_empty() => {
                tracing::warn!(path = %path.display(), error = %e, "receipt segment without batches has a bad header; rewriting it");
                return Ok(empty(start));
            }
            _ => return Err(e),
        },
        Err(e) => return Err(e),
    };
    if let Some(expected) = expected_start
        && start != expected
    {
        return Err(VerifyReceiptsError::SegmentDoesNotContinue {
            path: path.to_path_buf(),
            found_batch_index: start.next_batch_index,
            found_receipt_seq: start.next_receipt_seq,
            expected_batch_index: expected.next_batch_index,
            expected_receipt_seq: expected.next_receipt_seq,
            same_numbers: start.next_batch_index == expected.next_batch_index
                && start.next_receipt_seq == expected.next_receipt_seq,
        });
    }
    let mut offset = header_bytes(segment);
    let mut tip = start;
    loop {
        let body = match read_raw_frame(&mut reader, path, offset)? {
            RawFrame::Body(body) => body,
            RawFrame::End => break,
            RawFrame::Torn if allow_torn_tail => break,
            RawFrame::Torn => {
                return Err(VerifyReceiptsError::Truncated {
                    path: path.to_path_buf(),
                    offset,
                });
            }
        };
        let frame_len = 4 + body.len() as u64;
        let batch = decode_frame(&body, path, offset)?;
        batch
            .verify(key, &tip)
            .map_err(|source| VerifyReceiptsError::Batch {
                path: path.to_path_buf(),
                offset,
                batch_index: tip.next_batch_index,
                source,
            })?;
        tip = batch.next_tip();
        on_batch(offset, batch);
        offset += frame_len;
    }
    Ok(SegmentScan {
        start,
        end: tip,
        verified_len_bytes: offset,
    })
}

/// The whole log, scanned in segment order.
struct LogScan {
    /// (segment, its scan), ascending.
    segments: Vec<(u32, SegmentScan)>,
    report: VerifyReport,
}

/// Walks every segment of the log at `base`; `allow_torn_tail` accepts a
/// torn end of the last segment (what a crash leaves). `on_batch(segment,
/// offset, batch)` sees each verified batch in chain order.
fn scan_log(
    base: &Path,
    key: &PublicKey,
    allow_torn_tail: bool,
    on_batch: &mut dyn FnMut(u32, u64, SignedBatch),
) -> Result<LogScan, VerifyReceiptsError> {
    let numbers = list_segments(base)?;
    if numbers.is_empty() && !allow_torn_tail {
        return Err(VerifyReceiptsError::Io {
            path: base.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
        });
    }
    let mut segments: Vec<(u32, SegmentScan)> = Vec::with_capacity(numbers.len());
    for (i, &segment) in numbers.iter().enumerate() {
        let last = i + 1 == numbers.len();
        let expected = segments.last().map(|(_, s)| s.end);
        let scan = match scan_segment(
            &segment_path(base, segment),
            segment,
            key,
            expected,
            allow_torn_tail && last,
            &mut |offset, batch| on_batch(segment, offset, batch),
        ) {
            Ok(scan) => scan,
            // A live log deleted its oldest segment since the listing
            // (oldest first, so only while nothing is scanned yet): the
            // log now starts at the next one.
            Err(VerifyReceiptsError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotFound && segments.is_empty() && !last =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        segments.push((segment, scan));
    }
    let start = segments.first().map_or(ChainTip::GENESIS, |(_, s)| s.start);
    let tip = segments.last().map_or(ChainTip::GENESIS, |(_, s)| s.end);
    let report = VerifyReport {
        batches_count: tip.next_batch_index - start.next_batch_index,
        receipts_count: tip.next_receipt_seq - start.next_receipt_seq,
        tip,
        start,
        verified_len_bytes: segments.iter().map(|(_, s)| s.verified_len_bytes).sum(),
        first_batch_index: start.next_batch_index,
        segments_count: segments.len() as u32,
    };
    Ok(LogScan { segments, report })
}

/// Verifies every batch of a receipt log, all its segments: decoding,
/// signer, signature, Merkle root, chain and sequence numbers, and each
/// segment's header against the end of the segment before it. The first
/// bad batch is named by segment file, index and byte offset.
pub fn verify_receipts(path: &Path, key: &PublicKey) -> Result<VerifyReport, VerifyReceiptsError> {
    Ok(scan_log(path, key, false, &mut |_, _, _| {})?.report)
}

/// [`verify_receipts`], calling `progress(bytes_done, bytes_total)` after
/// each batch (a log of many segments takes a while). The total is the
/// segments' size when verification starts.
pub fn verify_receipts_with_progress(
    path: &Path,
    key: &PublicKey,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport, VerifyReceiptsError> {
    // Bytes before each segment, by segment number.
    let mut before = std::collections::HashMap::new();
    let mut total = 0u64;
    for segment in list_segments(path)? {
        before.insert(segment, total);
        total += std::fs::metadata(segment_path(path, segment)).map_or(0, |m| m.len());
    }
    let report = scan_log(path, key, false, &mut |segment, offset, _| {
        let done = before.get(&segment).map_or(total, |b| b + offset);
        progress(done.min(total), total);
    })?
    .report;
    progress(total, total);
    Ok(report)
}

/// Every receipt of a receipt log, in order, if the whole log verifies.
pub fn read_receipts(path: &Path, key: &PublicKey) -> Result<Vec<Receipt>, VerifyReceiptsError> {
    let mut out = Vec::new();
    scan_log(path, key, false, &mut |_, _, batch| {
        out.extend(batch.receipts)
    })?;
    Ok(out)
}

/// The signed batches (frames without their length) of a receipt log with
/// their batch indexes, over all segments, up to each segment's length when
/// it is reached. A torn frame or header ends them in the last segment (a
/// crash) and is an error in any other; a segment deleted since the listing
/// is skipped. Each is one canonical
/// `SignedBatch`, the bytes the agent stores as a blob. Unverified:
/// [`verify_receipts`] checks the log.
pub fn read_signed_batches(
    path: &Path,
) -> Result<
    impl Iterator<Item = Result<(u64, Vec<u8>), VerifyReceiptsError>> + use<>,
    VerifyReceiptsError,
> {
    let base = path.to_path_buf();
    let mut segments = list_segments(path)?.into_iter().peekable();
    // (path, reader, offset, is the last segment listed)
    let mut current: Option<(PathBuf, BufReader<io::Take<File>>, u64, bool)> = None;
    let mut next_index = 0u64;
    let mut failed = false;
    Ok(std::iter::from_fn(move || {
        loop {
            if failed {
                return None;
            }
            if current.is_none() {
                let segment = segments.next()?;
                let last = segments.peek().is_none();
                match open_segment_for_reading(&base, segment) {
                    Ok(Some((reader, start))) => {
                        next_index = start.next_batch_index;
                        current = Some((
                            segment_path(&base, segment),
                            reader,
                            header_bytes(segment),
                            last,
                        ));
                    }
                    // A crash mid-rotation: nothing was written there yet.
                    Ok(None) if last => return None,
                    Ok(None) => {
                        failed = true;
                        return Some(Err(VerifyReceiptsError::SegmentHeader {
                            path: segment_path(&base, segment),
                            reason: "torn, in a segment that is not the last".into(),
                        }));
                    }
                    // Deleted (oldest first) since it was listed: its
                    // batches are gone; the next segment continues.
                    Err(VerifyReceiptsError::Io { source, .. })
                        if source.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        failed = true;
                        return Some(Err(e));
                    }
                }
                continue;
            }
            let (seg_path, reader, offset, last) = current.as_mut()?;
            match read_raw_frame(reader, seg_path, *offset) {
                Ok(RawFrame::Body(body)) => {
                    *offset += 4 + body.len() as u64;
                    let index = next_index;
                    next_index += 1;
                    return Some(Ok((index, body)));
                }
                Ok(RawFrame::End) => current = None,
                Ok(RawFrame::Torn) if *last => return None,
                Ok(RawFrame::Torn) => {
                    failed = true;
                    return Some(Err(VerifyReceiptsError::Truncated {
                        path: seg_path.clone(),
                        offset: *offset,
                    }));
                }
                Err(e) => {
                    failed = true;
                    return Some(Err(e));
                }
            }
        }
    }))
}

/// A segment opened at its first frame, bounded to its length now, with
/// the tip it starts from; None when its header is torn or it is empty.
#[allow(clippy::type_complexity)]
fn open_segment_for_reading(
    base: &Path,
    segment: u32,
) -> Result<Option<(BufReader<io::Take<File>>, ChainTip)>, VerifyReceiptsError> {
    let path = segment_path(base, segment);
    let io_err = |source| VerifyReceiptsError::Io {
        path: path.clone(),
        source,
    };
    let file = File::open(&path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let mut reader = BufReader::new(file.take(len));
    Ok(match read_segment_start(&mut reader, segment, &path)? {
        SegmentStart::Tip(start) => Some((reader, start)),
        SegmentStart::Torn { .. } => None,
    })
}

/// Where one batch's frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLocation {
    pub segment: u32,
    pub offset_bytes: u64,
}

/// Where each durable batch's frame is, by batch index, shared between the
/// [`FileSink`] that fills it and the readers that look batches up
/// ([`crate::audit::ReceiptReader`]).
///
/// It is filled from the log's scan when the sink opens and after each
/// append's fsync, so it only ever names acknowledged batches, and a
/// segment leaves it before its file is deleted. Cost: 8 bytes per batch
/// (plus 16 per segment), against a frame of at least ~300 bytes.
#[derive(Clone, Debug, Default)]
pub struct BatchOffsets(Arc<parking_lot::RwLock<BatchIndex>>);

#[derive(Debug, Default)]
struct BatchIndex {
    /// The batch index of `offsets[0]`.
    first_batch_index: u64,
    /// Frame offsets within their segment, batch by batch.
    offsets: VecDeque<u64>,
    /// (segment, the index of its first batch), ascending; a segment
    /// without batches shares its successor's first index.
    segments: VecDeque<(u32, u64)>,
}

impl BatchOffsets {
    /// Where batch `batch_index`'s frame is, if its segment is on disk.
    pub fn get(&self, batch_index: u64) -> Option<BatchLocation> {
        let index = self.0.read();
        let at = usize::try_from(batch_index.checked_sub(index.first_batch_index)?).ok()?;
        let offset_bytes = *index.offsets.get(at)?;
        let holder = index
            .segments
            .partition_point(|&(_, first)| first <= batch_index)
            .checked_sub(1)?;
        let (segment, _) = *index.segments.get(holder)?;
        Some(BatchLocation {
            segment,
            offset_bytes,
        })
    }

    /// Batches written so far (the next batch's index); those still on
    /// disk are `first()..len()`.
    pub fn len(&self) -> u64 {
        let index = self.0.read();
        index.first_batch_index + index.offsets.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The oldest batch still on disk (0 unless segments were deleted).
    pub fn first(&self) -> u64 {
        self.0.read().first_batch_index
    }

    /// Segments on disk.
    pub fn segments_count(&self) -> usize {
        self.0.read().segments.len()
    }

    fn push(&self, offset_bytes: u64) {
        self.0.write().offsets.push_back(offset_bytes);
    }

    /// Segment `segment` begins with batch `first_batch_index`: the next
    /// one, or any for the first segment indexed (an anchored start).
    fn start_segment(&self, segment: u32, first_batch_index: u64) {
        let mut index = self.0.write();
        if index.segments.is_empty() {
            assert!(index.offsets.is_empty(), "offsets before any segment");
            index.first_batch_index = first_batch_index;
        }
        let next = index.first_batch_index + index.offsets.len() as u64;
        assert_eq!(
            first_batch_index, next,
            "a segment starts at the next batch"
        );
        index.segments.push_back((segment, first_batch_index));
    }

    /// The oldest segment, if it may be removed (it is not the one the sink
    /// appends to).
    fn oldest_removable(&self) -> Option<u32> {
        let index = self.0.read();
        (index.segments.len() >= 2)
            .then(|| index.segments.front().map(|&(segment, _)| segment))
            .flatten()
    }

    /// Deletes the oldest segment with `delete` (given its number) and, if
    /// that succeeds, forgets it and its batches; returns its number and
    /// what `delete` said, or None when only the newest is left (the sink
    /// is appending to it). The index stays locked across `delete`, so a
    /// reader never finds a batch whose file is gone and, once the file is
    /// gone, sees `first()` past it. A failed delete changes nothing: the
    /// segments on disk stay contiguous with the index.
    fn delete_oldest_segment(
        &self,
        delete: impl FnOnce(u32) -> io::Result<()>,
    ) -> Option<(u32, io::Result<()>)> {
        let mut index = self.0.write();
        if index.segments.len() < 2 {
            return None;
        }
        let &(segment, first) = index.segments.front()?;
        if let Err(e) = delete(segment) {
            return Some((segment, Err(e)));
        }
        index.segments.pop_front();
        let next_first = index.segments.front().map_or(first, |&(_, f)| f);
        for _ in first..next_first {
            index.offsets.pop_front();
        }
        index.first_batch_index = next_first;
        Some((segment, Ok(())))
    }
}

/// Why a receipt file could not be opened for appending.
#[derive(Debug, thiserror::Error)]
pub enum OpenSinkError {
    #[error("cannot {action} receipt file {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The existing log does not verify with this node's key; it is left
    /// untouched (an audit trail is never rewritten).
    #[error("existing receipt file does not verify, refusing to append: {0}")]
    Existing(#[from] VerifyReceiptsError),
    #[error("receipts.archive_dir {}: {reason}", .dir.display())]
    Archive { dir: PathBuf, reason: String },
    /// Another open sink (another cage or agent, or this process) holds
    /// the log's lock: two writers would interleave their batches and
    /// break the chain for both.
    #[error(
        "receipt file {} is in use by another writer (its lock {} is held): \
         is another cage or agent running with this receipts.path?",
        .path.display(),
        .lock.display()
    )]
    InUse { path: PathBuf, lock: PathBuf },
}

/// Append-only receipt log; write + fsync per batch, segments per
/// [`SegmentPolicy`].
#[derive(Debug)]
pub struct FileSink {
    file: File,
    /// `<path>.lock`, flock'd exclusively for the sink's life (released
    /// when the process exits, however it exits).
    _lock: File,
    base: PathBuf,
    /// The segment being appended to, and its path.
    segment: u32,
    segment_path: PathBuf,
    policy: SegmentPolicy,
    tip: ChainTip,
    /// Frame buffer reused across batches.
    frame: Vec<u8>,
    /// Where the next frame starts in the current segment.
    end_bytes: u64,
    offsets: BatchOffsets,
    /// Rotation and deletion counters, when the sink serves a cage.
    metrics: Option<Arc<Metrics>>,
    /// Segments removed, and removals failed, before `metrics` was attached
    /// (at open): added to it when it is.
    uncounted: (u64, u64),
}

impl FileSink {
    /// Opens (or creates) the log at `path` as one file, never rotated.
    pub fn open(path: &Path, key: &PublicKey) -> Result<FileSink, OpenSinkError> {
        FileSink::open_segmented(path, key, SegmentPolicy::ONE_FILE)
    }

    /// Opens (or creates) the log at `path`. An existing log is verified
    /// with `key`, all segments, and continued; a torn last frame, or a
    /// last segment's torn header (crash during an append or a rotation),
    /// is repaired. Segments past `policy.segments_kept_max` are deleted.
    pub fn open_segmented(
        path: &Path,
        key: &PublicKey,
        policy: SegmentPolicy,
    ) -> Result<FileSink, OpenSinkError> {
        let io_err = |action: &'static str, at: &Path| {
            let at = at.to_path_buf();
            move |source| OpenSinkError::Io {
                action,
                path: at,
                source,
            }
        };
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(io_err("create the directory of", path))?;
        }
        // Before the scan: a live writer's half-written batch would look
        // like a torn tail, and cutting it off would lose its receipts.
        let lock = lock_log(path)?;
        let offsets = BatchOffsets::default();
        let mut frames: Vec<(u32, u64)> = Vec::new();
        let scan = scan_log(path, key, true, &mut |segment, offset, _| {
            frames.push((segment, offset));
        })?;
        if let Some(dir) = &policy.archive_dir {
            let live_first = scan
                .segments
                .first()
                .map(|&(segment, first)| (segment, first.start));
            check_archive_dir(path, key, dir, live_first)?;
        }
        // Index the scan: segments in order, each batch's offset.
        let mut frames = frames.into_iter().peekable();
        for (segment, segment_scan) in &scan.segments {
            offsets.start_segment(*segment, segment_scan.start.next_batch_index);
            while let Some((_, offset)) = frames.next_if(|(s, _)| s == segment) {
                offsets.push(offset);
            }
        }
        let (segment, last) = match scan.segments.last() {
            Some(&(segment, last)) => (segment, last),
            None => {
                offsets.start_segment(0, 0);
                (
                    0,
                    SegmentScan {
                        start: ChainTip::GENESIS,
                        end: ChainTip::GENESIS,
                        verified_len_bytes: 0,
                    },
                )
            }
        };
        let segment_path = segment_path(path, segment);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&segment_path)
            .map_err(io_err("open", &segment_path))?;
        let mut end_bytes = last.verified_len_bytes;
        if end_bytes == 0 {
            // New, or its header torn by a crash: (re)write the header.
            file.set_len(0).map_err(io_err("truncate", &segment_path))?;
            write_header(&mut file, segment, &last.start)
                .map_err(io_err("write the header of", &segment_path))?;
            sync_parent_dir(&segment_path)
                .map_err(io_err("sync the directory of", &segment_path))?;
            end_bytes = header_bytes(segment);
        } else {
            let len = file
                .metadata()
                .map_err(io_err("stat", &segment_path))?
                .len();
            if len > end_bytes {
                tracing::warn!(
                    path = %segment_path.display(),
                    torn_bytes = len - end_bytes,
                    "cutting off a torn last receipt batch"
                );
                file.set_len(end_bytes)
                    .map_err(io_err("truncate the torn tail of", &segment_path))?;
                file.sync_all().map_err(io_err("sync", &segment_path))?;
            }
        }
        file.seek(SeekFrom::End(0))
            .map_err(io_err("seek", &segment_path))?;
        let mut sink = FileSink {
            file,
            _lock: lock,
            base: path.to_path_buf(),
            segment,
            segment_path,
            policy,
            tip: last.end,
            frame: Vec::new(),
            end_bytes,
            offsets,
            metrics: None,
            uncounted: (0, 0),
        };
        sink.delete_old_segments();
        Ok(sink)
    }

    /// Counts rotations and removals in `metrics`: from now on, and the
    /// removals (and failed ones) of the open that made this sink.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> FileSink {
        let (removed, failed) = std::mem::take(&mut self.uncounted);
        for _ in 0..removed {
            metrics.receipt_segment_deleted();
        }
        for _ in 0..failed {
            metrics.receipt_segment_delete_failed();
        }
        self.metrics = Some(metrics);
        self
    }

    /// The log's batch index; readers keep a clone while the sink appends.
    pub fn batch_offsets(&self) -> BatchOffsets {
        self.offsets.clone()
    }

    /// The log's base path (segment 0's name).
    pub fn path(&self) -> &Path {
        &self.base
    }

    /// The segment being appended to.
    pub fn segment(&self) -> u32 {
        self.segment
    }

    /// Starts segment `segment + 1` at the current tip: header written and
    /// synced, and the directory synced, before any batch goes there.
    fn rotate(&mut self) -> Result<(), SinkError> {
        let next = self.segment.checked_add(1).ok_or_else(|| SinkError::Io {
            action: "start a new segment of",
            path: self.base.clone(),
            source: io::Error::other(format!(
                "segment {} is the last number there is",
                self.segment
            )),
        })?;
        let path = segment_path(&self.base, next);
        let io_err = |action: &'static str| {
            let path = path.clone();
            move |source| SinkError::Io {
                action,
                path,
                source,
            }
        };
        // Truncate: a file of this name is a failed earlier attempt (no
        // batch is in it: the index never named it).
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err("create"))?;
        write_header(&mut file, next, &self.tip).map_err(io_err("write the header of"))?;
        sync_parent_dir(&path).map_err(io_err("sync the directory of"))?;
        tracing::info!(
            segment = next,
            path = %path.display(),
            first_batch = self.tip.next_batch_index,
            "receipt log: new segment"
        );
        self.file = file;
        self.segment = next;
        self.segment_path = path;
        self.end_bytes = RECEIPT_SEGMENT_HEADER_BYTES;
        self.offsets.start_segment(next, self.tip.next_batch_index);
        if let Some(m) = &self.metrics {
            m.receipt_segment_started();
        }
        self.delete_old_segments();
        Ok(())
    }

    /// Removes the oldest segments past `segments_kept_max`, oldest first,
    /// each off disk (deleted, or moved to `archive_dir`) and out of the
    /// index together. A failed removal is counted and logged and stops
    /// the round (removing a newer one would leave a gap that no open
    /// accepts); the next rotation or open tries again.
    fn delete_old_segments(&mut self) {
        let kept_max = self.policy.segments_kept_max as usize;
        if kept_max == 0 {
            return;
        }
        let archive = self
            .policy
            .archive_dir
            .as_deref()
            .map(|dir| archive_base(dir, &self.base));
        let mut deleted = false;
        while self.offsets.segments_count() > kept_max {
            let base = &self.base;
            let Some(oldest) = self.offsets.oldest_removable() else {
                break;
            };
            // The archive name is made durable before the index is locked,
            // so lookups never wait for a directory sync; only the unlink
            // runs under the lock. The sink is the only remover, so the
            // oldest segment is the same one then.
            let mut result = match &archive {
                Some(to) => link_into_archive(base, to, oldest),
                None => Ok(()),
            };
            if result.is_ok() {
                let Some((_, removed)) = self.offsets.delete_oldest_segment(|segment| {
                    assert_eq!(segment, oldest, "only the sink removes segments");
                    std::fs::remove_file(segment_path(base, segment))
                }) else {
                    break;
                };
                result = removed;
            }
            let path = segment_path(&self.base, oldest);
            match result {
                Ok(()) => {
                    deleted = true;
                    match &self.metrics {
                        Some(m) => m.receipt_segment_deleted(),
                        None => self.uncounted.0 += 1,
                    }
                    match &archive {
                        Some(to) => tracing::info!(
                            path = %path.display(),
                            archived_as = %segment_path(to, oldest).display(),
                            first_batch_kept = self.offsets.first(),
                            "receipt log: archived the oldest segment (receipts.segments_kept_max)"
                        ),
                        None => tracing::info!(
                            path = %path.display(),
                            first_batch_kept = self.offsets.first(),
                            "receipt log: deleted the oldest segment (receipts.segments_kept_max)"
                        ),
                    }
                }
                Err(e) => {
                    match &self.metrics {
                        Some(m) => m.receipt_segment_delete_failed(),
                        None => self.uncounted.1 += 1,
                    }
                    match &archive {
                        Some(to) => tracing::warn!(
                            path = %path.display(),
                            archive_as = %segment_path(to, oldest).display(),
                            error = %e,
                            "receipt log: cannot archive the oldest segment; it stays, and the next rotation tries again"
                        ),
                        None => tracing::warn!(
                            path = %path.display(),
                            error = %e,
                            "receipt log: cannot delete the oldest segment; it stays, and the next rotation tries again"
                        ),
                    }
                    break;
                }
            }
        }
        // (An archived segment's new name was synced before its unlink.)
        if deleted && let Err(e) = sync_parent_dir(&self.segment_path) {
            tracing::warn!(error = %e, "receipt log: cannot sync the directory after removing segments");
        }
    }
}

fn write_header(file: &mut File, segment: u32, start: &ChainTip) -> io::Result<()> {
    if segment == 0 {
        assert_eq!(*start, ChainTip::GENESIS, "segment 0 starts at genesis");
        file.write_all(RECEIPT_FILE_MAGIC)?;
    } else {
        file.write_all(&encode_segment_header(segment, start))?;
    }
    file.sync_all()
}

/// Creates the archive directory and checks, before anything moves, that
/// segments can go there: not the log's own directory (the archived names
/// would be the live ones); a hard link from the log's directory works (the
/// same mount, writable), tried with a probe file; and the archive is empty
/// or ends where the live log starts (`live_first`: its first segment and
/// the tip that segment continues), so archiving never mixes two logs or
/// leaves a gap in the archive.
fn check_archive_dir(
    path: &Path,
    key: &PublicKey,
    dir: &Path,
    live_first: Option<(u32, ChainTip)>,
) -> Result<(), OpenSinkError> {
    use std::os::unix::fs::MetadataExt as _;
    let archive_err = |reason: String| OpenSinkError::Archive {
        dir: dir.to_path_buf(),
        reason,
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| archive_err(format!("cannot create it: {e}")))?;
        // A directory just created is durable once its parent is synced.
        sync_parent_dir(dir).map_err(|e| archive_err(format!("cannot sync its parent: {e}")))?;
    }
    let log_dir = dir_of(path);
    let (a, l) = (
        std::fs::metadata(dir).map_err(|e| archive_err(format!("cannot stat it: {e}")))?,
        std::fs::metadata(log_dir)
            .map_err(|e| archive_err(format!("cannot stat {}: {e}", log_dir.display())))?,
    );
    if (a.dev(), a.ino()) == (l.dev(), l.ino()) {
        return Err(archive_err(format!(
            "it is the receipt log's own directory; archived segments keep their names, so \
             they need another directory on the same filesystem as {}",
            log_dir.display()
        )));
    }
    // The probe: created new (O_EXCL, so a symlink of that name is never
    // followed), linked into the archive, both names removed.
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let probe_name = format!(".{name}.archive-probe");
    let (probe, probe_to) = (log_dir.join(&probe_name), dir.join(&probe_name));
    let _ = std::fs::remove_file(&probe);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| {
            archive_err(format!(
                "cannot create a probe file in the receipt log's directory {} ({e}); moving \
                 segments out needs it writable",
                log_dir.display()
            ))
        })?;
    let _ = std::fs::remove_file(&probe_to);
    let linked = std::fs::hard_link(&probe, &probe_to);
    let _ = std::fs::remove_file(&probe);
    let _ = std::fs::remove_file(&probe_to);
    linked.map_err(|e| {
        archive_err(format!(
            "cannot hard-link a file from {} into it ({e}); segments move there by hard link, \
             so it must be a writable directory on the same mount as the receipt log",
            log_dir.display()
        ))
    })?;
    let archived_base = archive_base(dir, path);
    let archived = list_segments(&archived_base).map_err(|e| {
        archive_err(format!(
            "its log {} is not a run of consecutive segments: {e}",
            archived_base.display()
        ))
    })?;
    let (Some(&first), Some(&last)) = (archived.first(), archived.last()) else {
        return Ok(());
    };
    let not_continued = |why: String| {
        archive_err(format!(
            "it holds segments {first}..={last} of {}, which the live log does not continue \
             ({why}); move them elsewhere or choose another archive_dir",
            archived_base.display()
        ))
    };
    let Some((live_segment, live_start)) = live_first else {
        return Err(not_continued("the live log is new".into()));
    };
    let archived_last = segment_path(&archived_base, last);
    if live_segment == last {
        // Linked by a round that stopped before its unlink: the very file.
        if is_hard_link_of(&segment_path(path, live_segment), &archived_last).unwrap_or(false) {
            return Ok(());
        }
        return Err(not_continued(format!(
            "its segment {last} is another file than the live log's"
        )));
    }
    if Some(live_segment) != last.checked_add(1) {
        return Err(not_continued(format!(
            "the live log's first segment is {live_segment}: archiving it would {}",
            if live_segment < last {
                "mix two logs under one name"
            } else {
                "leave a gap in the archive"
            }
        )));
    }
    // Numbers in sequence: the archive's last segment must also end where
    // the live log's first one starts, signed by this key.
    let end = scan_segment(&archived_last, last, key, None, false, &mut |_, _| {})
        .map_err(|e| not_continued(format!("its last segment does not verify: {e}")))?
        .end;
    if end != live_start {
        return Err(not_continued(format!(
            "its last segment ends at batch {} (hash {}), the live log starts at batch {} after \
             hash {}",
            end.next_batch_index,
            end.prev_batch_hash.to_hex(),
            live_start.next_batch_index,
            live_start.prev_batch_hash.to_hex()
        )));
    }
    Ok(())
}

/// The directory `path` names a file in (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether `archived` is the very file `live` (a hard link of it), not a
/// symlink to it nor another file.
fn is_hard_link_of(live: &Path, archived: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let a = std::fs::symlink_metadata(live)?;
    let b = std::fs::symlink_metadata(archived)?;
    Ok(b.is_file() && (a.dev(), a.ino()) == (b.dev(), b.ino()))
}

/// Makes a created or deleted name in `path`'s directory durable.
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = dir_of(path);
    File::open(dir)?.sync_all()
}

impl ReceiptSink for FileSink {
    fn tip(&self) -> ChainTip {
        self.tip
    }

    fn append(&mut self, batch: &EncodedBatch) -> Result<(), SinkError> {
        self.frame.clear();
        batch
            .write_frame(&mut self.frame)
            .map_err(|source| SinkError::Encode {
                batch_index: batch.header.batch_index,
                source,
            })?;
        // Batch i is the i-th frame: the writer appends in index order from
        // the tip. Checked before writing, so a violation never leaves a
        // batch on disk that the index does not name.
        assert_eq!(
            self.offsets.len(),
            batch.header.batch_index,
            "receipt batches are appended in index order"
        );
        let segment_max = self.policy.segment_bytes_max;
        if segment_max > 0
            && self.end_bytes > header_bytes(self.segment)
            && self.end_bytes + self.frame.len() as u64 > segment_max
        {
            self.rotate()?;
        }
        let io_err = |action: &'static str| {
            let path = self.segment_path.clone();
            move |source| SinkError::Io {
                action,
                path,
                source,
            }
        };
        self.file
            .write_all(&self.frame)
            .map_err(io_err("append to"))?;
        self.file.sync_data().map_err(io_err("sync"))?;
        self.tip = batch.header.next_tip();
        // Only now (durable) may a reader find the batch.
        self.offsets.push(self.end_bytes);
        self.end_bytes += self.frame.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use metanode_core::keys::SigningKey;

    use super::*;
    use crate::audit::{LookupError, ReceiptReader};
    use crate::receipt::tests::sample;

    /// Small segments: a few batches each.
    const SMALL: SegmentPolicy = SegmentPolicy {
        segment_bytes_max: 2_000,
        segments_kept_max: 0,
        archive_dir: None,
    };

    fn key() -> SigningKey {
        SigningKey::from_seed(&[5; 32])
    }

    /// Appends `count` batches of 2 receipts each; returns their receipts.
    fn append(sink: &mut FileSink, key: &SigningKey, count: u64) -> Vec<Receipt> {
        let mut all = Vec::new();
        for _ in 0..count {
            let seq = sink.tip().next_receipt_seq;
            let receipts: Vec<Receipt> = (seq..seq + 2).map(sample).collect();
            let hashes: Vec<Hash32> = receipts.iter().map(|r| r.hash().unwrap()).collect();
            let batch = SignedBatch::seal(&sink.tip(), receipts.clone(), &hashes, key, seq);
            sink.append(&batch.to_encoded().unwrap()).unwrap();
            all.extend(receipts);
        }
        all
    }

    #[test]
    fn a_second_writer_is_refused_while_the_first_holds_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let key = key();
        let mut first = FileSink::open(&path, &key.public_key()).unwrap();
        append(&mut first, &key, 2);
        let e = FileSink::open(&path, &key.public_key()).unwrap_err();
        assert!(
            matches!(&e, OpenSinkError::InUse { path: p, .. } if *p == path),
            "{e}"
        );
        assert!(e.to_string().contains("in use by another writer"), "{e}");
        // The refused open touched nothing: the first goes on, and once it
        // is gone the log opens and verifies.
        append(&mut first, &key, 2);
        drop(first);
        let again = FileSink::open(&path, &key.public_key()).unwrap();
        assert_eq!(again.tip().next_receipt_seq, 8, "four batches of two");
    }

    fn on_disk(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn segments_rotate_at_the_bound_and_the_log_reads_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let key = key();
        let mut sink = FileSink::open_segmented(&path, &key.public_key(), SMALL).unwrap();
        let receipts = append(&mut sink, &key, 20);
        let segments = list_segments(&path).unwrap();
        assert!(segments.len() >= 4, "rotated: {:?}", on_disk(dir.path()));
        assert_eq!(segments, (0..segments.len() as u32).collect::<Vec<_>>());
        for &s in &segments {
            let len = std::fs::metadata(segment_path(&path, s)).unwrap().len();
            assert!(len <= SMALL.segment_bytes_max, "segment {s}: {len} bytes");
        }
        let report = verify_receipts(&path, &key.public_key()).unwrap();
        let mut seen = Vec::new();
        let same = verify_receipts_with_progress(&path, &key.public_key(), &mut |done, total| {
            seen.push((done, total))
        })
        .unwrap();
        assert_eq!(same, report);
        // One call per batch and one at the end, never backwards, ending
        // at the log's size.
        assert_eq!(seen.len(), 21);
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
        let size: u64 = segments
            .iter()
            .map(|&s| std::fs::metadata(segment_path(&path, s)).unwrap().len())
            .sum();
        assert_eq!(*seen.last().unwrap(), (size, size));
        assert_eq!(report.verified_len_bytes, size);
        assert_eq!(report.batches_count, 20);
        assert_eq!(report.receipts_count, 40);
        assert_eq!(report.first_batch_index, 0);
        assert_eq!(report.segments_count as usize, segments.len());
        assert_eq!(report.tip, sink.tip());
        assert_eq!(read_receipts(&path, &key.public_key()).unwrap(), receipts);
        let frames: Vec<(u64, Vec<u8>)> = read_signed_batches(&path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            frames.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            (0..20).collect::<Vec<_>>()
        );
        // Every batch is found in its segment, with the bytes just listed.
        let reader = ReceiptReader::new(path.clone(), key.public_key(), sink.batch_offsets());
        for (index, bytes) in &frames {
            let stored = reader.batch(*index).unwrap();
            assert_eq!(&stored.signed_batch_bytes, bytes);
            assert_eq!(
                stored.segment,
                sink.batch_offsets().get(*index).unwrap().segment
            );
        }
        assert_eq!(reader.batch(19).unwrap().segment, *segments.last().unwrap());

        // Reopened: the same index and tip; appends continue the last
        // segment, and the log still verifies as one chain.
        let offsets_before: Vec<BatchLocation> = (0..20)
            .map(|b| sink.batch_offsets().get(b).unwrap())
            .collect();
        let tip = sink.tip();
        drop(sink);
        let mut sink = FileSink::open_segmented(&path, &key.public_key(), SMALL).unwrap();
        assert_eq!(sink.tip(), tip);
        assert_eq!(sink.segment(), *segments.last().unwrap());
        let offsets_after: Vec<BatchLocation> = (0..20)
            .map(|b| sink.batch_offsets().get(b).unwrap())
            .collect();
        assert_eq!(offsets_after, offsets_before);
        append(&mut sink, &key, 5);
        assert_eq!(
            verify_receipts(&path, &key.public_key())
                .unwrap()
                .batches_count,
            25
        );
    }

    #[test]
    fn kept_segments_bound_the_log_and_it_verifies_from_the_first_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let key = key();
        let policy = SegmentPolicy {
            segments_kept_max: 2,
            ..SMALL
        };
        let mut sink = FileSink::open_segmented(&path, &key.public_key(), policy).unwrap();
        let receipts = append(&mut sink, &key, 30);
        let segments = list_segments(&path).unwrap();
        assert_eq!(segments.len(), 2, "{:?}", on_disk(dir.path()));
        assert!(!path.exists(), "segment 0 was deleted");
        let offsets = sink.batch_offsets();
        let first = offsets.first();
        assert!(first > 0);
        assert_eq!(offsets.segments_count(), 2);
        let report = verify_receipts(&path, &key.public_key()).unwrap();
        assert_eq!(report.first_batch_index, first);
        assert_eq!(report.batches_count, 30 - first);
        assert_eq!(report.segments_count, 2);
        let kept = read_receipts(&path, &key.public_key()).unwrap();
        assert_eq!(kept.as_slice(), &receipts[(2 * first) as usize..]);
        // Resync numbers the kept batches by their real index.
        let first_frame = read_signed_batches(&path).unwrap().next().unwrap().unwrap();
        assert_eq!(first_frame.0, first);

        let reader = ReceiptReader::new(path.clone(), key.public_key(), offsets.clone());
        match reader.batch(first - 1) {
            Err(LookupError::BatchDeleted {
                batch_index,
                first_batch_index,
            }) => {
                assert_eq!(batch_index, first - 1);
                assert_eq!(first_batch_index, first);
            }
            other => panic!("expected BatchDeleted, got {other:?}"),
        }
        assert!(reader.batch(first).is_ok());
        assert!(matches!(
            reader.batch(30),
            Err(LookupError::BatchNotWritten { .. })
        ));

        // Reopened from an anchored start, it continues; a smaller bound at
        // open deletes down to it.
        drop(sink);
        let one = SegmentPolicy {
            segments_kept_max: 1,
            ..SMALL
        };
        let mut sink = FileSink::open_segmented(&path, &key.public_key(), one).unwrap();
        assert_eq!(list_segments(&path).unwrap().len(), 1);
        append(&mut sink, &key, 3);
        let report = verify_receipts(&path, &key.public_key()).unwrap();
        assert_eq!(report.tip.next_batch_index, 33);
        assert_eq!(report.first_batch_index, sink.batch_offsets().first());
    }

    /// With an archive, the segments retention removes move there under
    /// their names: the archive verifies as a log from genesis, its tip is
    /// where the live log's first kept segment starts, and the two hold
    /// every receipt once. A name the archive already holds for another
    /// file is never replaced: that segment stays live, counted.
    #[test]
    fn an_archive_takes_the_removed_segments_and_continues_into_the_live_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live").join("receipts.log");
        let archive_dir = dir.path().join("archive");
        let key = key();
        let policy = SegmentPolicy {
            segments_kept_max: 2,
            archive_dir: Some(archive_dir.clone()),
            ..SMALL
        };
        let metrics = Arc::new(Metrics::new());
        let mut sink = FileSink::open_segmented(&path, &key.public_key(), policy.clone())
            .unwrap()
            .with_metrics(metrics.clone());
        let receipts = append(&mut sink, &key, 30);
        let archived_base = archive_dir.join("receipts.log");
        let archived = list_segments(&archived_base).unwrap();
        let live = list_segments(&path).unwrap();
        assert_eq!(live.len(), 2);
        assert_eq!(archived.first(), Some(&0));
        assert_eq!(archived.last().map(|s| s + 1), live.first().copied());
        assert_eq!(
            metrics.snapshot().receipt_segments_deleted,
            archived.len() as u64
        );
        let old = verify_receipts(&archived_base, &key.public_key()).unwrap();
        let new = verify_receipts(&path, &key.public_key()).unwrap();
        assert_eq!(old.first_batch_index, 0);
        assert_eq!(old.tip.next_batch_index, new.first_batch_index);
        // The live log's first header names the archive's tip: one chain.
        assert_eq!(new.start, old.tip, "the live log continues the archive");
        assert_eq!(old.start, ChainTip::GENESIS);
        let mut all = read_receipts(&archived_base, &key.public_key()).unwrap();
        all.extend(read_receipts(&path, &key.public_key()).unwrap());
        assert_eq!(all, receipts);

        // Another file under the name of the live log's first segment in
        // the archive: the cage refuses to start, nothing moves, nothing is
        // lost; once it is gone, the next open archives down to the bound.
        drop(sink);
        let next = live[0];
        std::fs::write(segment_path(&archived_base, next), b"another log").unwrap();
        let one = SegmentPolicy {
            segments_kept_max: 1,
            ..policy
        };
        let err = FileSink::open_segmented(&path, &key.public_key(), one.clone()).unwrap_err();
        assert!(
            err.to_string().contains("another file than the live log's"),
            "{err}"
        );
        assert_eq!(list_segments(&path).unwrap(), live, "nothing moved");
        assert_eq!(
            std::fs::read(segment_path(&archived_base, next)).unwrap(),
            b"another log"
        );
        std::fs::remove_file(segment_path(&archived_base, next)).unwrap();
        let metrics = Arc::new(Metrics::new());
        let sink = FileSink::open_segmented(&path, &key.public_key(), one)
            .unwrap()
            .with_metrics(metrics.clone());
        assert_eq!(list_segments(&path).unwrap(), live[1..]);
        assert_eq!(metrics.snapshot().receipt_segments_deleted, 1);
        let old = verify_receipts(&archived_base, &key.public_key()).unwrap();
        assert_eq!(old.tip.next_batch_index, sink.batch_offsets().first());
        let mut all = read_receipts(&archived_base, &key.public_key()).unwrap();
        all.extend(read_receipts(&path, &key.public_key()).unwrap());
        assert_eq!(all, receipts);

        // A segment linked into the archive by a round that stopped before
        // its unlink is finished, not refused: the archive then holds the
        // whole chain.
        drop(sink);
        let last = live[1];
        std::fs::hard_link(
            segment_path(&path, last),
            segment_path(&archived_base, last),
        )
        .unwrap();
        link_into_archive(&path, &archived_base, last).unwrap();
        std::fs::remove_file(segment_path(&path, last)).unwrap();
        assert!(!segment_path(&path, last).exists());
        assert_eq!(
            read_receipts(&archived_base, &key.public_key()).unwrap(),
            receipts
        );

        // The archive may not be the log's own directory (another mount
        // fails the link probe the same way; not made here).
        let own = SegmentPolicy {
            segments_kept_max: 2,
            archive_dir: Some(dir.path().join("live")),
            ..SMALL
        };
        let err = FileSink::open_segmented(&path, &key.public_key(), own).unwrap_err();
        assert!(err.to_string().contains("own directory"), "{err}");
    }

    /// An archive that the live log does not continue is refused at open,
    /// before anything moves: another log's segments from 0 (a log reset)
    /// or a gap; and a symlink under the name to archive is never taken
    /// for the segment itself.
    #[test]
    fn an_archive_the_log_does_not_continue_is_refused_and_a_symlink_is_not_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        let key = key();
        let path = dir.path().join("live").join("receipts.log");
        let archive_dir = dir.path().join("archive");
        let archived_base = archive_dir.join("receipts.log");
        let policy = SegmentPolicy {
            segments_kept_max: 2,
            archive_dir: Some(archive_dir.clone()),
            ..SMALL
        };
        // An old log's archive (segments 0..) and a new live log from 0.
        let mut old = FileSink::open_segmented(&archived_base, &key.public_key(), SMALL).unwrap();
        append(&mut old, &key, 10);
        let old_last = old.segment();
        drop(old);
        let err = FileSink::open_segmented(&path, &key.public_key(), policy.clone()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("receipts.archive_dir")
                && text.contains(&format!("segments 0..={old_last}"))
                && text.contains("the live log is new"),
            "{text}"
        );
        assert!(!path.exists(), "nothing was created in the live log");

        // A live log that starts past the archive's end: a gap.
        let mut live = FileSink::open_segmented(&path, &key.public_key(), SMALL).unwrap();
        append(&mut live, &key, 30);
        drop(live);
        for segment in 0..=old_last + 1 {
            let _ = std::fs::remove_file(segment_path(&path, segment));
        }
        let err = FileSink::open_segmented(&path, &key.public_key(), policy.clone()).unwrap_err();
        assert!(err.to_string().contains("leave a gap"), "{err}");

        // Numbers in sequence but another chain: the old log's segments up
        // to just before the live log's first, which does not continue them.
        // (Three receipts a batch: the same key, another chain.)
        let live_first = list_segments(&path).unwrap()[0];
        std::fs::remove_dir_all(&archive_dir).unwrap();
        let mut other = FileSink::open_segmented(&archived_base, &key.public_key(), SMALL).unwrap();
        while other.segment() < live_first {
            let seq = other.tip().next_receipt_seq;
            let receipts: Vec<Receipt> = (seq..seq + 3).map(sample).collect();
            let hashes: Vec<Hash32> = receipts.iter().map(|r| r.hash().unwrap()).collect();
            let batch = SignedBatch::seal(&other.tip(), receipts, &hashes, &key, seq);
            other.append(&batch.to_encoded().unwrap()).unwrap();
        }
        drop(other);
        std::fs::remove_file(segment_path(&archived_base, live_first)).unwrap();
        let err = FileSink::open_segmented(&path, &key.public_key(), policy.clone()).unwrap_err();
        assert!(
            err.to_string().contains("the live log starts at batch"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&archive_dir);

        // A symlink in the archive pointing at the live segment: refused,
        // the live segment stays.
        std::fs::create_dir_all(&archive_dir).unwrap();
        let live_first = list_segments(&path).unwrap()[0];
        std::os::unix::fs::symlink(
            segment_path(&path, live_first),
            segment_path(&archived_base, live_first),
        )
        .unwrap();
        let err = link_into_archive(&path, &archived_base, live_first).unwrap_err();
        assert!(err.to_string().contains("refusing to replace it"), "{err}");
        assert!(segment_path(&path, live_first).is_file());
        verify_receipts(&path, &key.public_key()).unwrap();
    }

    /// A segment that cannot be deleted stays, and no newer one is deleted
    /// past it (that would leave a gap no open accepts); once it can go,
    /// the next open trims to the bound.
    #[test]
    fn a_failed_delete_never_leaves_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let key = key();
        let policy = SegmentPolicy {
            segments_kept_max: 3,
            ..SMALL
        };
        let metrics = Arc::new(Metrics::new());
        let mut sink = FileSink::open_segmented(&path, &key.public_key(), policy.clone())
            .unwrap()
            .with_metrics(metrics.clone());
        while sink.segment() < 2 {
            append(&mut sink, &key, 1);
        }
        // Segment 0 becomes undeletable by remove_file: a directory.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("keep"), b"x").unwrap();
        while sink.segment() < 5 {
            append(&mut sink, &key, 1);
        }
        let m = metrics.snapshot();
        assert_eq!(m.receipt_segments_started, 5);
        assert_eq!(m.receipt_segments_deleted, 0);
        assert_eq!(m.receipt_segment_delete_errors, 3);
        for s in 1..=5 {
            assert!(segment_path(&path, s).exists(), "segment {s} kept");
        }
        assert_eq!(sink.batch_offsets().first(), 0);
        let last = sink.tip();
        drop(sink);
        std::fs::remove_dir_all(&path).unwrap();
        let metrics = Arc::new(Metrics::new());
        let sink = FileSink::open_segmented(&path, &key.public_key(), policy)
            .unwrap()
            .with_metrics(metrics.clone());
        assert_eq!(list_segments(&path).unwrap(), vec![3, 4, 5]);
        // Removed while opening, counted once the metrics are attached.
        assert_eq!(metrics.snapshot().receipt_segments_deleted, 2);
        assert_eq!(sink.tip(), last);
        let report = verify_receipts(&path, &key.public_key()).unwrap();
        assert_eq!(report.first_batch_index, sink.batch_offsets().first());
        assert_eq!(report.tip, last);
    }

    #[test]
    fn a_torn_segment_header_is_repaired_at_open_and_named_by_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        let key = key();
        let mut sink = FileSink::open_segmented(&path, &key.public_key(), SMALL).unwrap();
        append(&mut sink, &key, 8);
        let tip = sink.tip();
        let last = sink.segment();
        assert!(last >= 1);
        drop(sink);
        // A crash mid-rotation: the next segment exists, its header cut.
        let next = segment_path(&path, last + 1);
        let header = encode_segment_header(last + 1, &tip);
        std::fs::write(&next, &header[..10]).unwrap();
        match verify_receipts(&path, &key.public_key()) {
            Err(VerifyReceiptsError::SegmentHeader { path: p, reason }) => {
                assert_eq!(p, next);
                assert!(reason.contains("torn"), "{reason}");
            }
            other => panic!("expected a torn header, got {other:?}"),
        }
        let mut sink = FileSink::open_segmented(&path, &key.public_key(), SMALL).unwrap();
        assert_eq!(sink.segment(), last + 1);
        assert_eq!(sink.tip(), tip);
        assert_eq!(std::fs::read(&next).unwrap(), header);
        append(&mut sink, &key, 2);
        let report = verify_receipts(&path, &key.public_key()).unwrap();
        assert_eq!(report.batches_count, 10);
        // An empty file (created, nothing written) is repaired the same way.
        drop(sink);
        let after = segment_path(&path, last + 2);
        std::fs::write(&after, b"").unwrap();
        let sink = FileSink::open_segmented(&path, &key.public_key(), SMALL).unwrap();
        assert_eq!(sink.segment(), last + 2);
        assert!(verify_receipts(&path, &key.public_key()).is_ok());
        // A whole header of zeros (the file grew, its bytes never landed)
        // in a segment without batches: rewritten too.
        drop(sink);
        let zeros = segment_path(&path, last + 3);
        std::fs::write(&zeros, [0u8; RECEIPT_SEGMENT_HEADER_BYTES as usize]).unwrap();
        assert!(verify_receipts(&path, &key.public_key()).is_err());
        let sink = FileSink::open_segmented(&path, &key.public_key(), SMALL).unwrap();
        assert_eq!(sink.segment(), last + 3);
        assert_eq!(
            std::fs::read(&zeros).unwrap(),
            encode_segment_header(last + 3, &sink.tip())
        );
        assert_eq!(
            verify_receipts(&path, &key.public_key()).unwrap().tip,
            sink.tip()
        );
    }

    #[test]
    fn damage_between_segments_is_named() {
        let key = key();
        let build = || {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("receipts.log");
            let mut sink = FileSink::open_segmented(&path, &key.public_key(), SMALL).unwrap();
            append(&mut sink, &key, 20);
            assert!(sink.segment() >= 3);
            (dir, path)
        };

        // A middle segment deleted.
        let (_dir, path) = build();
        std::fs::remove_file(segment_path(&path, 2)).unwrap();
        match verify_receipts(&path, &key.public_key()) {
            Err(VerifyReceiptsError::SegmentMissing { path: p }) => {
                assert_eq!(p, segment_path(&path, 2));
            }
            other => panic!("expected SegmentMissing, got {other:?}"),
        }
        assert!(matches!(
            FileSink::open_segmented(&path, &key.public_key(), SMALL),
            Err(OpenSinkError::Existing(
                VerifyReceiptsError::SegmentMissing { .. }
            ))
        ));

        // A header that starts somewhere else.
        let (_dir, path) = build();
        let seg2 = segment_path(&path, 2);
        let mut bytes = std::fs::read(&seg2).unwrap();
        bytes[16] ^= 1; // next_batch_index
        std::fs::write(&seg2, &bytes).unwrap();
        assert!(matches!(
            verify_receipts(&path, &key.public_key()),
            Err(VerifyReceiptsError::SegmentDoesNotContinue {
                same_numbers: false,
                ..
            })
        ));
        bytes[16] ^= 1;
        bytes[40] ^= 1; // prev_batch_hash
        std::fs::write(&seg2, &bytes).unwrap();
        match verify_receipts(&path, &key.public_key()) {
            Err(
                e @ VerifyReceiptsError::SegmentDoesNotContinue {
                    same_numbers: true, ..
                },
            ) => assert!(
                e.to_string().contains("different previous batch hash"),
                "{e}"
            ),
            other => panic!("expected SegmentDoesNotContinue, got {other:?}"),
        }
        bytes[40] ^= 1;
        let mut huge = bytes.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&seg2, &huge).unwrap();
        match verify_receipts(&path, &key.public_key()) {
            Err(VerifyReceiptsError::SegmentHeader { reason, .. }) => {
                assert!(reason.contains("past"), "{reason}");
            }
            other => panic!("expected SegmentHeader, got {other:?}"),
        }
        bytes[8] = 7; // names segment 7
        std::fs::write(&seg2, &bytes).unwrap();
        match verify_receipts(&path, &key.public_key()) {
            Err(VerifyReceiptsError::SegmentHeader { reason, .. }) => {
                assert!(reason.contains("names segment 7"), "{reason}");
            }
            other => panic!("expected SegmentHeader, got {other:?}"),
        }

        // A torn frame in a segment that is not the last: damage, not a
        // crash, and open refuses it rather than cutting it.
        let (_dir, path) = build();
        let seg1 = segment_path(&path, 1);
        let len = std::fs::metadata(&seg1).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg1)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        match verify_receipts(&path, &key.public_key()) {
            Err(VerifyReceiptsError::Truncated { path: p, .. }) => assert_eq!(p, seg1),
            other => panic!("expected Truncated, got {other:?}"),
        }
        // Resync's reader names it too, rather than stopping quietly.
        let last = read_signed_batches(&path).unwrap().last().unwrap();
        assert!(
            matches!(&last, Err(VerifyReceiptsError::Truncated { path: p, .. }) if *p == seg1),
            "{last:?}"
        );
        assert!(FileSink::open_segmented(&path, &key.public_key(), SMALL).is_err());
        assert_eq!(std::fs::metadata(&seg1).unwrap().len(), len - 5);
    }

    #[test]
    fn only_canonical_numbers_are_segments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipts.log");
        for name in [
            "receipts.log",
            "receipts.log.1",
            "receipts.log.01",
            "receipts.log.0",
            "receipts.log.bak",
            "receipts.log.1.tmp",
            "receipts.logx.2",
            "other.log.2",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(list_segments(&path).unwrap(), vec![0, 1]);
        assert_eq!(parse_segment_number("4294967295"), Some(u32::MAX));
        assert_eq!(parse_segment_number("4294967296"), None);
        assert_eq!(parse_segment_number("+1"), None);
        assert!(
            list_segments(&dir.path().join("none/x"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_index_maps_batches_to_segments_across_empty_ones() {
        let offsets = BatchOffsets::default();
        offsets.start_segment(0, 0);
        offsets.push(8);
        offsets.push(100);
        offsets.start_segment(1, 2); // stays empty
        offsets.start_segment(2, 2);
        offsets.push(64);
        let at = |b| offsets.get(b).map(|l| (l.segment, l.offset_bytes));
        assert_eq!(at(0), Some((0, 8)));
        assert_eq!(at(1), Some((0, 100)));
        assert_eq!(at(2), Some((2, 64)));
        assert_eq!(at(3), None);
        assert_eq!(offsets.len(), 3);
        let ok = |_| Ok(());
        // A failed delete changes nothing.
        let failed = offsets.delete_oldest_segment(|_| Err(io::Error::other("busy")));
        assert!(matches!(failed, Some((0, Err(_)))));
        assert_eq!((offsets.first(), at(0)), (0, Some((0, 8))));
        assert!(matches!(
            offsets.delete_oldest_segment(ok),
            Some((0, Ok(())))
        ));
        assert_eq!(offsets.first(), 2);
        assert_eq!(at(1), None);
        assert!(matches!(
            offsets.delete_oldest_segment(ok),
            Some((1, Ok(())))
        ));
        assert_eq!(at(2), Some((2, 64)));
        // The newest is never deleted.
        assert!(offsets.delete_oldest_segment(ok).is_none());
        assert_eq!(offsets.len(), 3);
    }
}
