//! On-disk record format of segment files.
//!
//! A segment is a log: a 24-byte segment header, then records back to back.
//! Every record is self-describing (magic, CRC32C over everything after the
//! CRC field) so the index can always be rebuilt by scanning, and a torn
//! tail is recognised and cut off. The CRC only detects torn/garbled
//! records; whether a payload is the right content is decided by its hash
//! on every read.
//!
//! Record header, little-endian, 60 bytes:
//! ```text
//! 0  magic   u32  "MNRB"
//! 4  crc32c  u32  over bytes 8..end of payload
//! 8  kind    u8   1 inline blob, 2 external blob, 3 tombstone, 4 pin state
//! 9  flags   u8   bit0 zstd payload, bit1 pinned; other bits must be 0
//! 10 hash    u8   HashKind::disk_byte
//! 11 zero    u8   reserved, must be 0
//! 12 codec   u32  multicodec of the CID (raw 0x55, dag-pb 0x70)
//! 16 size    u64  logical (uncompressed) size of the blob
//! 24 len     u32  payload bytes that follow the header
//! 28 digest  [32]
//! 60 payload
//! ```

use metanode_core::cid::{BlockKey, HashKind};

pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"MNRB");
pub const RECORD_HEADER_BYTES: usize = 60;

pub const SEGMENT_MAGIC: [u8; 8] = *b"MNSEG\0\0\x01";
pub const SEGMENT_VERSION: u32 = 1;
/// magic(8) + version(4) + segment id(8) + crc32c of the previous 20 (4).
pub const SEGMENT_HEADER_BYTES: usize = 24;

pub const FLAG_ZSTD: u8 = 0b01;
pub const FLAG_PINNED: u8 = 0b10;
const FLAGS_KNOWN: u8 = FLAG_ZSTD | FLAG_PINNED;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// The payload is the blob (possibly zstd-compressed).
    Inline,
    /// The blob lives in its own file under `blobs/`; no payload.
    External,
    /// The key was deleted; no payload.
    Tombstone,
    /// New pin state for a live key (flags bit1 only); no payload, so a pin
    /// change costs 60 bytes even on a nearly full disk.
    Meta,
}

impl RecordKind {
    fn byte(self) -> u8 {
        match self {
            RecordKind::Inline => 1,
            RecordKind::External => 2,
            RecordKind::Tombstone => 3,
            RecordKind::Meta => 4,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(RecordKind::Inline),
            2 => Some(RecordKind::External),
            3 => Some(RecordKind::Tombstone),
            4 => Some(RecordKind::Meta),
            _ => None,
        }
    }
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: RecordKind,
    pub flags: u8,
    pub key: BlockKey,
    pub codec: u32,
    pub size_bytes: u64,
    pub payload_len: u32,
}

impl RecordHeader {
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_BYTES as u64 + self.payload_len as u64
    }

    pub fn pinned(&self) -> bool {
        self.flags & FLAG_PINNED != 0
    }

    pub fn compressed(&self) -> bool {
        self.flags & FLAG_ZSTD != 0
    }
}

/// Why bytes at some offset are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("bad record magic 0x{0:08x}")]
    BadMagic(u32),
    #[error("unknown record kind {0}")]
    BadKind(u8),
    #[error("unknown record flags 0b{0:08b}")]
    BadFlags(u8),
    #[error("unknown hash kind byte {0}")]
    BadHash(u8),
    #[error("reserved byte is {0}, expected 0")]
    BadReserved(u8),
    #[error("{kind:?} record carries a {len}-byte payload")]
    BadPayloadLen { kind: RecordKind, len: u32 },
    #[error("record checksum mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})")]
    BadCrc { stored: u32, computed: u32 },
    #[error("record truncated: needs {needed} bytes, {available} available")]
    Truncated { needed: u64, available: u64 },
}

/// Append one record (header + payload) to `out`.
pub fn encode_record(out: &mut Vec<u8>, header: &RecordHeader, payload: &[u8]) {
    assert_eq!(header.payload_len as usize, payload.len(), "payload length");
    assert_eq!(header.flags & !FLAGS_KNOWN, 0, "unknown flags");
    let start = out.len();
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // crc, patched below
    out.push(header.kind.byte());
    out.push(header.flags);
    out.push(header.key.kind.disk_byte());
    out.push(0);
    out.extend_from_slice(&header.codec.to_le_bytes());
    out.extend_from_slice(&header.size_bytes.to_le_bytes());
    out.extend_from_slice(&header.payload_len.to_le_bytes());
    out.extend_from_slice(&header.key.digest);
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decode a header from the first 60 bytes of `buf` (no CRC check: the
/// payload may not have been read yet).
pub fn decode_header(buf: &[u8]) -> Result<(RecordHeader, u32), RecordError> {
    if buf.len() < RECORD_HEADER_BYTES {
        return Err(RecordError::Truncated {
            needed: RECORD_HEADER_BYTES as u64,
            available: buf.len() as u64,
        });
    }
    let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().expect("4 bytes"));
    let magic = u32_at(0);
    if magic != RECORD_MAGIC {
        return Err(RecordError::BadMagic(magic));
    }
    let crc = u32_at(4);
    let kind = RecordKind::from_byte(buf[8]).ok_or(RecordError::BadKind(buf[8]))?;
    let flags = buf[9];
    if flags & !FLAGS_KNOWN != 0 {
        return Err(RecordError::BadFlags(flags));
    }
    let hash = HashKind::from_disk_byte(buf[10]).ok_or(RecordError::BadHash(buf[10]))?;
    if buf[11] != 0 {
        return Err(RecordError::BadReserved(buf[11]));
    }
    let codec = u32_at(12);
    let size_bytes = u64::from_le_bytes(buf[16..24].try_into().expect("8 bytes"));
    let payload_len = u32_at(24);
    if kind != RecordKind::Inline && payload_len != 0 {
        return Err(RecordError::BadPayloadLen {
            kind,
            len: payload_len,
        });
    }
    let digest: [u8; 32] = buf[28..60].try_into().expect("32 bytes");
    Ok((
        RecordHeader {
            kind,
            flags,
            key: BlockKey { kind: hash, digest },
            codec,
            size_bytes,
            payload_len,
        },
        crc,
    ))
}

/// Check the CRC of a whole record (header + payload in `record`).
pub fn check_crc(record: &[u8], stored: u32) -> Result<(), RecordError> {
    let computed = crc32c::crc32c(&record[8..]);
    if computed != stored {
        return Err(RecordError::BadCrc { stored, computed });
    }
    Ok(())
}

pub fn encode_segment_header(segment_id: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&segment_id.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentHeaderError {
    #[error("segment header truncated ({0} bytes)")]
    Truncated(usize),
    #[error("not a metanode segment (bad magic)")]
    BadMagic,
    #[error("segment format version {found} is not supported (supported: {SEGMENT_VERSION})")]
    UnknownVersion { found: u32 },
    #[error("segment header checksum mismatch")]
    BadCrc,
    #[error("segment header names id {found}, file name says {expected}")]
    WrongId { found: u64, expected: u64 },
}

pub fn decode_segment_header(buf: &[u8], expected_id: u64) -> Result<(), SegmentHeaderError> {
    if buf.len() < SEGMENT_HEADER_BYTES {
        return Err(SegmentHeaderError::Truncated(buf.len()));
    }
    if buf[0..8] != SEGMENT_MAGIC {
        return Err(SegmentHeaderError::BadMagic);
    }
    let crc = u32::from_le_bytes(buf[20..24].try_into().expect("4 bytes"));
    if crc32c::crc32c(&buf[0..20]) != crc {
        return Err(SegmentHeaderError::BadCrc);
    }
    let version = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
    if version != SEGMENT_VERSION {
        return Err(SegmentHeaderError::UnknownVersion { found: version });
    }
    let id = u64::from_le_bytes(buf[12..20].try_into().expect("8 bytes"));
    if id != expected_id {
        return Err(SegmentHeaderError::WrongId {
            found: id,
            expected: expected_id,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: RecordKind, payload: &[u8]) -> RecordHeader {
        RecordHeader {
            kind,
            flags: FLAG_PINNED,
            key: BlockKey::blake3([9; 32]),
            codec: 0x55,
            size_bytes: payload.len() as u64,
            payload_len: payload.len() as u32,
        }
    }

    #[test]
    fn round_trip_and_crc() {
        let mut buf = vec![];
        let h = header(RecordKind::Inline, b"payload");
        encode_record(&mut buf, &h, b"payload");
        assert_eq!(buf.len() as u64, h.record_len());
        let (got, crc) = decode_header(&buf).unwrap();
        assert_eq!(got, h);
        check_crc(&buf, crc).unwrap();
        // Any flipped bit after the CRC field is caught.
        for i in 8..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            let bad_header = decode_header(&bad);
            if let Ok((_, crc)) = bad_header {
                assert!(check_crc(&bad, crc).is_err(), "flip at {i} undetected");
            }
        }
    }

    #[test]
    fn rejects_garbage_headers() {
        let mut buf = vec![];
        encode_record(&mut buf, &header(RecordKind::Tombstone, b""), b"");
        let mut b = buf.clone();
        b[0] = 0;
        assert!(matches!(decode_header(&b), Err(RecordError::BadMagic(_))));
        let mut b = buf.clone();
        b[8] = 9;
        assert_eq!(decode_header(&b).unwrap_err(), RecordError::BadKind(9));
        let mut b = buf.clone();
        b[9] = 0x80;
        assert!(matches!(decode_header(&b), Err(RecordError::BadFlags(_))));
        let mut b = buf.clone();
        b[10] = 7;
        assert_eq!(decode_header(&b).unwrap_err(), RecordError::BadHash(7));
        let mut b = buf.clone();
        b[24] = 1;
        assert!(matches!(
            decode_header(&b),
            Err(RecordError::BadPayloadLen { .. })
        ));
        assert!(matches!(
            decode_header(&buf[..10]),
            Err(RecordError::Truncated { .. })
        ));
    }

    #[test]
    fn segment_header() {
        let h = encode_segment_header(42);
        decode_segment_header(&h, 42).unwrap();
        assert!(matches!(
            decode_segment_header(&h, 41),
            Err(SegmentHeaderError::WrongId { .. })
        ));
        let mut b = h;
        b[8] = 2;
        assert!(decode_segment_header(&b, 42).is_err());
        assert_eq!(
            decode_segment_header(&h[..5], 42),
            Err(SegmentHeaderError::Truncated(5))
        );
    }
}
