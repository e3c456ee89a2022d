//! The record log both durable files are made of.
//!
//! A record is `len u32 LE | crc32c u32 LE of payload | payload`, with
//! `1 <= len <= record_bytes_max`. Zero-length records are refused because
//! eight zero bytes (`len 0`, crc32c of nothing = 0) would otherwise be a
//! valid record, and zeros are exactly what a file extended by a crash
//! (size updated, data blocks never written) reads back as.
//!
//! Every append is followed by an fsync before it is acknowledged, so at
//! most one record is ever in flight when power fails: a torn tail is at
//! most one record, possibly cut short, possibly full-length with garbage or
//! zeros. Opening a log reads records until the first bad one and decides:
//!
//! - nothing after it can hold a valid record (fewer than 8 bytes, or a
//!   complete bad record that ends the file, or bytes after it in which no
//!   valid record starts): a torn tail, cut off durably and reported;
//! - a complete record with a bad checksum that does not end the file, or a
//!   valid record anywhere after the bad one: damage in the middle. That is
//!   an error naming the offset, never a truncation, because the records
//!   after it were acknowledged.
//!
//! A bit flip inside the *last* record is indistinguishable from a torn
//! write and is treated as one: that record is dropped. For the block log a
//! peer supplies the block again; for the safety WAL it means restarting
//! from the previous state, which is why the node must keep the disk under
//! it healthy (ECC, scrubbing) — no single-copy format can do better.

use std::io;

use crate::disk::ChainDisk;
use metanode_core::limits::CHAIN_LOG_TAIL_SCAN_BYTES_MAX;

/// Bytes of `len` + `crc32c` before each payload.
pub(crate) const RECORD_HEADER_BYTES: u64 = 8;

/// What opening a log found, for the node's log and the simulator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    pub name: String,
    /// Size of the file as found, before any repair (0 if absent).
    pub file_len_bytes: u64,
    /// Valid records kept.
    pub records_count: u64,
    /// The tail cut off, if the last write was torn.
    pub torn_tail: Option<TornTail>,
}

/// A torn last write, removed on open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// Where the torn record began; the file now ends here.
    pub offset: u64,
    pub discarded_bytes: u64,
    /// What was wrong with it.
    pub reason: String,
}

/// Failures of the log layer; the WAL and the block store turn them into
/// their own error enums.
#[derive(Debug)]
pub(crate) enum LogError {
    Io {
        name: String,
        op: &'static str,
        offset: u64,
        source: io::Error,
    },
    Corrupt {
        name: String,
        offset: u64,
        reason: String,
    },
    RecordSize {
        name: String,
        len: usize,
        max: u32,
    },
    Poisoned {
        name: String,
        cause: String,
    },
}

/// Opening failed in the log itself or in the caller's record visitor.
#[derive(Debug)]
pub(crate) enum OpenError<E> {
    Log(LogError),
    Visit(E),
}

impl<E> From<LogError> for OpenError<E> {
    fn from(e: LogError) -> Self {
        OpenError::Log(e)
    }
}

/// Why the record at some offset is not valid.
enum Bad {
    ShortHeader {
        remaining: u64,
    },
    LenOutOfBounds {
        len: u32,
    },
    Incomplete {
        len: u32,
        remaining: u64,
    },
    Checksum {
        len: u32,
        stored: u32,
        computed: u32,
    },
}

impl Bad {
    fn describe(&self, max: u32) -> String {
        match self {
            Bad::ShortHeader { remaining } => {
                format!("{remaining} bytes left, less than a record header")
            }
            Bad::LenOutOfBounds { len } => format!("record length {len} is outside 1..={max}"),
            Bad::Incomplete { len, remaining } => format!(
                "record of {len} payload bytes is incomplete: {remaining} bytes left including the header"
            ),
            Bad::Checksum {
                len,
                stored,
                computed,
            } => format!(
                "checksum mismatch in record of {len} payload bytes: stored {stored:#010x}, computed {computed:#010x}"
            ),
        }
    }
}

enum Frame {
    Valid(Vec<u8>),
    Bad(Bad),
}

/// `len | crc32c | payload` for one record.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + RECORD_HEADER_BYTES as usize);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn header_fields(header: &[u8]) -> Option<(u32, u32)> {
    let len = u32::from_le_bytes(header.get(0..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(header.get(4..8)?.try_into().ok()?);
    Some((len, crc))
}

/// An append-only file of framed records with its write discipline: every
/// write is synced before it counts, and any failed write poisons the log.
#[derive(Debug)]
pub(crate) struct RecordLog<D> {
    disk: D,
    name: String,
    len_bytes: u64,
    record_bytes_max: u32,
    /// Why the log refuses writes (see [`crate::wal`] for why a failed
    /// fsync must not be retried).
    poisoned: Option<String>,
}

impl<D: ChainDisk> RecordLog<D> {
    /// Opens `name`, hands every valid record (offset, payload) to `visit`
    /// in order, and cuts off a torn tail.
    pub(crate) fn open<E>(
        mut disk: D,
        name: &str,
        record_bytes_max: u32,
        mut visit: impl FnMut(u64, Vec<u8>) -> Result<(), E>,
    ) -> Result<(Self, OpenReport), OpenError<E>> {
        let file_len = disk
            .size_bytes(name)
            .map_err(|source| io_error(name, "stat", 0, source))?
            .unwrap_or(0);
        let mut pos = 0u64;
        let mut records_count = 0u64;
        let mut torn_tail = None;
        while pos < file_len {
            match read_frame(&disk, name, pos, file_len, record_bytes_max)? {
                Frame::Valid(payload) => {
                    let next = pos + RECORD_HEADER_BYTES + payload.len() as u64;
                    visit(pos, payload).map_err(OpenError::Visit)?;
                    records_count += 1;
                    pos = next;
                }
                Frame::Bad(bad) => {
                    classify_bad(&disk, name, pos, file_len, record_bytes_max, &bad)?;
                    torn_tail = Some(TornTail {
                        offset: pos,
                        discarded_bytes: file_len - pos,
                        reason: bad.describe(record_bytes_max),
                    });
                    break;
                }
            }
        }
        if let Some(torn) = &torn_tail {
            // Durably, before anything is appended after it: otherwise a
            // crash could leave the torn bytes in the middle of the log.
            disk.truncate(name, torn.offset)
                .map_err(|source| io_error(name, "truncate", torn.offset, source))?;
        }
        let log = RecordLog {
            disk,
            name: name.to_owned(),
            len_bytes: pos,
            record_bytes_max,
            poisoned: None,
        };
        let report = OpenReport {
            name: name.to_owned(),
            file_len_bytes: file_len,
            records_count,
            torn_tail,
        };
        Ok((log, report))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    pub(crate) fn disk(&self) -> &D {
        &self.disk
    }

    pub(crate) fn disk_mut(&mut self) -> &mut D {
        &mut self.disk
    }

    pub(crate) fn into_disk(self) -> D {
        self.disk
    }

    pub(crate) fn check_writable(&self) -> Result<(), LogError> {
        match &self.poisoned {
            Some(cause) => Err(LogError::Poisoned {
                name: self.name.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Bytes one record of `payload_len` takes in the file, or the bound it
    /// breaks.
    pub(crate) fn framed_len(&self, payload_len: usize) -> Result<u64, LogError> {
        if payload_len == 0 || payload_len > self.record_bytes_max as usize {
            return Err(LogError::RecordSize {
                name: self.name.clone(),
                len: payload_len,
                max: self.record_bytes_max,
            });
        }
        Ok(RECORD_HEADER_BYTES + payload_len as u64)
    }

    /// Appends one record and syncs it; durable on Ok. Returns the offset of
    /// the record.
    pub(crate) fn append(&mut self, payload: &[u8]) -> Result<u64, LogError> {
        self.check_writable()?;
        let framed_len = self.framed_len(payload.len())?;
        let offset = self.len_bytes;
        let framed = frame(payload);
        if let Err(source) = self.disk.append(&self.name, &framed) {
            // A partial write may have reached the file; anything appended
            // after it would sit behind garbage.
            return Err(self.poison("append", offset, source));
        }
        if let Err(source) = self.disk.sync(&self.name) {
            return Err(self.poison("fsync", offset, source));
        }
        self.len_bytes += framed_len;
        Ok(offset)
    }

    /// Replaces the whole file with the single record `payload`, atomically
    /// and durably.
    pub(crate) fn replace(&mut self, payload: &[u8]) -> Result<(), LogError> {
        self.check_writable()?;
        let framed_len = self.framed_len(payload.len())?;
        if let Err(source) = self.disk.replace(&self.name, &frame(payload)) {
            return Err(self.poison("replace", 0, source));
        }
        self.len_bytes = framed_len;
        Ok(())
    }

    /// Reads and checks the record of `framed_len` bytes at `offset` (both
    /// from the caller's index), returning its payload.
    pub(crate) fn read_record(&self, offset: u64, framed_len: u64) -> Result<Vec<u8>, LogError> {
        let corrupt = |reason: String| LogError::Corrupt {
            name: self.name.clone(),
            offset,
            reason,
        };
        let len = usize::try_from(framed_len)
            .ok()
            .filter(|l| *l as u64 > RECORD_HEADER_BYTES)
            .ok_or_else(|| corrupt(format!("indexed record length {framed_len} is invalid")))?;
        let bytes = self
            .disk
            .read_at(&self.name, offset, len)
            .map_err(|source| io_error(&self.name, "read", offset, source))?;
        let (stored_len, stored_crc) =
            header_fields(&bytes).ok_or_else(|| corrupt("short record header".into()))?;
        let payload = bytes
            .get(RECORD_HEADER_BYTES as usize..)
            .unwrap_or_default();
        if stored_len as usize != payload.len() {
            return Err(corrupt(format!(
                "record length {stored_len} differs from the indexed {}",
                payload.len()
            )));
        }
        let computed = crc32c::crc32c(payload);
        if computed != stored_crc {
            return Err(corrupt(format!(
                "checksum mismatch: stored {stored_crc:#010x}, computed {computed:#010x}"
            )));
        }
        Ok(payload.to_vec())
    }

    fn poison(&mut self, op: &'static str, offset: u64, source: io::Error) -> LogError {
        self.poisoned = Some(format!("{op} at offset {offset} failed: {source}"));
        io_error(&self.name, op, offset, source)
    }
}

fn io_error(name: &str, op: &'static str, offset: u64, source: io::Error) -> LogError {
    LogError::Io {
        name: name.to_owned(),
        op,
        offset,
        source,
    }
}

fn read_frame<D: ChainDisk>(
    disk: &D,
    name: &str,
    pos: u64,
    file_len: u64,
    max: u32,
) -> Result<Frame, LogError> {
    let remaining = file_len - pos;
    if remaining < RECORD_HEADER_BYTES {
        return Ok(Frame::Bad(Bad::ShortHeader { remaining }));
    }
    let header = disk
        .read_at(name, pos, RECORD_HEADER_BYTES as usize)
        .map_err(|source| io_error(name, "read", pos, source))?;
    let (len, stored) = header_fields(&header).ok_or_else(|| LogError::Corrupt {
        name: name.to_owned(),
        offset: pos,
        reason: "short read of record header".into(),
    })?;
    if len == 0 || len > max {
        return Ok(Frame::Bad(Bad::LenOutOfBounds { len }));
    }
    if RECORD_HEADER_BYTES + u64::from(len) > remaining {
        return Ok(Frame::Bad(Bad::Incomplete { len, remaining }));
    }
    let payload_offset = pos + RECORD_HEADER_BYTES;
    let payload = disk
        .read_at(name, payload_offset, len as usize)
        .map_err(|source| io_error(name, "read", payload_offset, source))?;
    let computed = crc32c::crc32c(&payload);
    if computed != stored {
        return Ok(Frame::Bad(Bad::Checksum {
            len,
            stored,
            computed,
        }));
    }
    Ok(Frame::Valid(payload))
}

/// Ok if the bad record at `pos` is a torn tail, Err(Corrupt) if it is
/// damage with acknowledged records after it (see the module docs).
fn classify_bad<D: ChainDisk>(
    disk: &D,
    name: &str,
    pos: u64,
    file_len: u64,
    max: u32,
    bad: &Bad,
) -> Result<(), LogError> {
    let corrupt = |reason: String| LogError::Corrupt {
        name: name.to_owned(),
        offset: pos,
        reason,
    };
    let what = bad.describe(max);
    let tail_len = file_len - pos;
    match bad {
        Bad::ShortHeader { .. } => return Ok(()),
        Bad::Checksum { len, .. } => {
            let end = pos + RECORD_HEADER_BYTES + u64::from(*len);
            if end == file_len {
                return Ok(());
            }
            return Err(corrupt(format!(
                "{what}, followed by {} more bytes (a torn write is only ever the last record)",
                file_len - end
            )));
        }
        Bad::LenOutOfBounds { .. } | Bad::Incomplete { .. } => {}
    }
    // The length cannot be trusted, so look for a valid record starting at
    // any later byte. A torn tail is at most one record, so a longer tail is
    // damage without looking.
    if tail_len > RECORD_HEADER_BYTES + u64::from(max) {
        return Err(corrupt(format!(
            "{what}, and {tail_len} bytes follow, more than one torn record can leave"
        )));
    }
    let tail = disk
        .read_at(name, pos, tail_len as usize)
        .map_err(|source| io_error(name, "read", pos, source))?;
    let mut budget_bytes = CHAIN_LOG_TAIL_SCAN_BYTES_MAX;
    match find_valid_frame(&tail, 1, max, &mut budget_bytes) {
        Some(Some(at)) => Err(corrupt(format!(
            "{what}, but a valid record follows at offset {}",
            pos + at as u64
        ))),
        Some(None) => Ok(()),
        None => Err(corrupt(format!(
            "{what}, and the {tail_len} bytes after it could not be ruled out as valid records within the scan budget"
        ))),
    }
}

/// First position `>= from` in `bytes` where a valid record starts:
/// Some(Some(pos)), Some(None) if there is none, None if checking would
/// exceed the checksum budget.
fn find_valid_frame(
    bytes: &[u8],
    from: usize,
    max: u32,
    budget_bytes: &mut u64,
) -> Option<Option<usize>> {
    let header = RECORD_HEADER_BYTES as usize;
    for p in from..bytes.len() {
        let Some((len, stored)) = bytes.get(p..).and_then(header_fields) else {
            break;
        };
        if len == 0 || len > max {
            continue;
        }
        let Some(payload) = bytes.get(p + header..p + header + len as usize) else {
            continue;
        };
        *budget_bytes = budget_bytes.checked_sub(u64::from(len))?;
        if crc32c::crc32c(payload) == stored {
            return Some(Some(p));
        }
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::FakeDisk;
    use std::convert::Infallible;

    type Records = Vec<(u64, Vec<u8>)>;

    fn open_collect(disk: &mut FakeDisk, name: &str) -> Result<(Records, OpenReport), LogError> {
        let mut seen = Vec::new();
        match RecordLog::open(&mut *disk, name, 1024, |offset, payload| {
            seen.push((offset, payload));
            Ok::<(), Infallible>(())
        }) {
            Ok((_, report)) => Ok((seen, report)),
            Err(OpenError::Log(e)) => Err(e),
            Err(OpenError::Visit(never)) => match never {},
        }
    }

    fn log_with(payloads: &[&[u8]]) -> FakeDisk {
        let mut disk = FakeDisk::new();
        let (mut log, _) =
            RecordLog::open(&mut disk, "l", 1024, |_, _| Ok::<(), Infallible>(())).unwrap();
        for p in payloads {
            log.append(p).unwrap();
        }
        disk
    }

    #[test]
    fn frame_layout_is_len_crc_payload() {
        let f = frame(b"abc");
        assert_eq!(&f[0..4], &3u32.to_le_bytes());
        assert_eq!(&f[4..8], &crc32c::crc32c(b"abc").to_le_bytes());
        assert_eq!(&f[8..], b"abc");
    }

    #[test]
    fn reads_back_records_with_offsets() {
        let mut disk = log_with(&[b"one", b"three"]);
        let (seen, report) = open_collect(&mut disk, "l").unwrap();
        assert_eq!(seen, vec![(0, b"one".to_vec()), (11, b"three".to_vec())]);
        assert_eq!(report.records_count, 2);
        assert_eq!(report.file_len_bytes, 24);
        assert_eq!(report.torn_tail, None);
    }

    #[test]
    fn zero_filled_tail_is_torn() {
        let mut disk = log_with(&[b"one"]);
        disk.append("l", &[0u8; 40]).unwrap();
        disk.sync("l").unwrap();
        let (seen, report) = open_collect(&mut disk, "l").unwrap();
        assert_eq!(seen.len(), 1);
        let torn = report.torn_tail.unwrap();
        assert_eq!((torn.offset, torn.discarded_bytes), (11, 40));
        assert_eq!(torn.reason, "record length 0 is outside 1..=1024");
        assert_eq!(disk.read("l").unwrap().unwrap().len(), 11);
    }

    #[test]
    fn full_length_garbage_last_record_is_torn() {
        let mut disk = log_with(&[b"one"]);
        let mut rec = frame(b"two!");
        rec[9] ^= 1;
        disk.append("l", &rec).unwrap();
        disk.sync("l").unwrap();
        let (_, report) = open_collect(&mut disk, "l").unwrap();
        assert!(
            report
                .torn_tail
                .unwrap()
                .reason
                .starts_with("checksum mismatch"),
        );
    }

    #[test]
    fn bad_length_followed_by_valid_record_is_corruption() {
        let mut disk = log_with(&[b"first", b"second", b"third"]);
        // Make record 2's length point past the end of the file.
        assert!(disk.corrupt("l", 13 + 3));
        let err = open_collect(&mut disk, "l").unwrap_err();
        match err {
            LogError::Corrupt { offset, reason, .. } => {
                assert_eq!(offset, 13);
                assert!(
                    reason.ends_with("a valid record follows at offset 27"),
                    "{reason}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn tail_longer_than_one_record_is_corruption_without_scanning() {
        let mut disk = log_with(&[b"one"]);
        // An out-of-bounds length followed by more bytes than any single
        // torn record (8 + 1024 here) could leave.
        let mut junk = vec![0xEEu8; 8 + 1024 + 1];
        junk[0..4].copy_from_slice(&0u32.to_le_bytes());
        disk.append("l", &junk).unwrap();
        disk.sync("l").unwrap();
        match open_collect(&mut disk, "l").unwrap_err() {
            LogError::Corrupt { offset, reason, .. } => {
                assert_eq!(offset, 11);
                assert_eq!(
                    reason,
                    "record length 0 is outside 1..=1024, and 1033 bytes follow, more than one torn record can leave"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(disk.size_bytes("l").unwrap(), Some(11 + 1033));
    }

    #[test]
    fn scan_budget_exhaustion_refuses_to_guess() {
        let rec = frame(b"xyz");
        let mut budget = 2;
        assert_eq!(find_valid_frame(&rec, 0, 1024, &mut budget), None);
        let mut budget = 3;
        assert_eq!(find_valid_frame(&rec, 0, 1024, &mut budget), Some(Some(0)));
        let mut budget = 100;
        assert_eq!(find_valid_frame(&rec, 1, 1024, &mut budget), Some(None));
    }
}
