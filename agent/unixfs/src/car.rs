//! CAR files (<https://ipld.io/specs/transport/car/>): CARv1 writing, CARv1
//! and CARv2 reading.
//!
//! CARv1 is `varint(len) ‖ dag-cbor header` then sections
//! `varint(len(cid) + len(block)) ‖ cid ‖ block`. The header is the map
//! `{"roots": [CID…], "version": 1}`; we write it byte-for-byte as
//! `@ipld/car` does (keys in dag-cbor order, each CID as tag 42 over a byte
//! string of `0x00 ‖ cid`) and read it with a small strict dag-cbor decoder
//! that accepts exactly that shape.
//!
//! CARv2 is an 11-byte pragma (a CARv1 header saying `{"version": 2}`), a
//! 40-byte header (characteristics, data offset, data size, index offset,
//! little-endian) and a CARv1 payload at `[data offset, data offset + data
//! size)`; the index is ignored.
//!
//! The reader bounds every length before allocating, verifies every block
//! against its CID, and names the byte offset (and block index or CID) of
//! whatever is wrong.

use std::io::{self, BufReader, Read, Write};

use bytes::Bytes;
use metanode_core::cid::{CidParseError, ContentId};
use metanode_core::dagpb::{cid_byte_len, varint};

use crate::limits::{
    BLOCK_SIZE_BYTES_MAX, CAR_HEADER_SIZE_BYTES_MAX, CAR_READ_BUFFER_SIZE_BYTES,
    CAR_ROOTS_COUNT_MAX, CAR_SECTION_SIZE_BYTES_MAX, CAR_V2_HEADER_SIZE_BYTES,
    CAR_V2_PRAGMA_SIZE_BYTES,
};

/// dag-cbor tag for a CID.
const CBOR_TAG_CID: u64 = 42;
const CBOR_MAJOR_UNSIGNED: u8 = 0;
const CBOR_MAJOR_BYTES: u8 = 2;
const CBOR_MAJOR_TEXT: u8 = 3;
const CBOR_MAJOR_ARRAY: u8 = 4;
const CBOR_MAJOR_MAP: u8 = 5;
const CBOR_MAJOR_TAG: u8 = 6;

fn cbor_head(out: &mut Vec<u8>, major: u8, value: u64) {
    let major = major << 5;
    if value < 24 {
        out.push(major | value as u8);
    } else if value <= 0xff {
        out.extend_from_slice(&[major | 24, value as u8]);
    } else if value <= 0xffff {
        out.push(major | 25);
        out.extend_from_slice(&(value as u16).to_be_bytes());
    } else if value <= 0xffff_ffff {
        out.push(major | 26);
        out.extend_from_slice(&(value as u32).to_be_bytes());
    } else {
        out.push(major | 27);
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// The CARv1 header for `roots`, length prefix included.
pub fn encode_header(roots: &[ContentId]) -> Vec<u8> {
    let mut cbor = Vec::with_capacity(24 + roots.len() * 42);
    cbor_head(&mut cbor, CBOR_MAJOR_MAP, 2);
    cbor_head(&mut cbor, CBOR_MAJOR_TEXT, 5);
    cbor.extend_from_slice(b"roots");
    cbor_head(&mut cbor, CBOR_MAJOR_ARRAY, roots.len() as u64);
    for root in roots {
        let bytes = root.to_bytes();
        cbor_head(&mut cbor, CBOR_MAJOR_TAG, CBOR_TAG_CID);
        cbor_head(&mut cbor, CBOR_MAJOR_BYTES, bytes.len() as u64 + 1);
        cbor.push(0x00);
        cbor.extend_from_slice(&bytes);
    }
    cbor_head(&mut cbor, CBOR_MAJOR_TEXT, 7);
    cbor.extend_from_slice(b"version");
    cbor_head(&mut cbor, CBOR_MAJOR_UNSIGNED, 1);
    let mut out = Vec::with_capacity(cbor.len() + 3);
    varint::write(&mut out, cbor.len() as u64);
    out.extend_from_slice(&cbor);
    out
}

/// What precedes a block in a CAR section: `varint(len) ‖ cid`. Lets an
/// async writer send the block bytes without copying them.
pub fn encode_section_prefix(cid: &ContentId, block_len_bytes: usize) -> Vec<u8> {
    let cid_bytes = cid.to_bytes();
    let mut out = Vec::with_capacity(cid_bytes.len() + 4);
    varint::write(&mut out, (cid_bytes.len() + block_len_bytes) as u64);
    out.extend_from_slice(&cid_bytes);
    out
}

/// Why a CAR could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CarWriteError {
    #[error("writing car: {0}")]
    Io(#[from] io::Error),
    #[error("block {cid} is {size_bytes} bytes; IPFS clients refuse blocks over {max_bytes}")]
    BlockTooLarge {
        cid: ContentId,
        size_bytes: u64,
        max_bytes: u64,
    },
}

/// Writes a CARv1. The caller supplies blocks already verified against
/// their CIDs (they come from the store or the importer).
#[derive(Debug)]
pub struct CarWriter<W: Write> {
    inner: W,
    bytes_written: u64,
}

impl<W: Write> CarWriter<W> {
    /// Write the header naming `roots`.
    pub fn new(mut inner: W, roots: &[ContentId]) -> Result<Self, CarWriteError> {
        let header = encode_header(roots);
        inner.write_all(&header)?;
        Ok(Self {
            inner,
            bytes_written: header.len() as u64,
        })
    }

    /// Append one section. Blocks over 2 MiB are refused: no IPFS client
    /// would accept the CAR.
    pub fn write_block(&mut self, cid: &ContentId, data: &[u8]) -> Result<(), CarWriteError> {
        if data.len() as u64 > BLOCK_SIZE_BYTES_MAX {
            return Err(CarWriteError::BlockTooLarge {
                cid: *cid,
                size_bytes: data.len() as u64,
                max_bytes: BLOCK_SIZE_BYTES_MAX,
            });
        }
        let prefix = encode_section_prefix(cid, data.len());
        self.inner.write_all(&prefix)?;
        self.inner.write_all(data)?;
        self.bytes_written += (prefix.len() + data.len()) as u64;
        Ok(())
    }

    /// Bytes written so far (header included).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Flush and hand back the writer.
    pub fn finish(mut self) -> Result<W, CarWriteError> {
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Why a CAR could not be read. Offsets are from the start of the stream.
#[derive(Debug, thiserror::Error)]
pub enum CarReadError {
    #[error("reading car at offset {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("car ends at offset {offset} inside the {what} ({needed_bytes} more bytes expected)")]
    Truncated {
        offset: u64,
        what: &'static str,
        needed_bytes: u64,
    },
    #[error("car varint at offset {offset}: {reason}")]
    Varint { offset: u64, reason: &'static str },
    #[error("car header at offset {offset} has zero length")]
    HeaderZeroLength { offset: u64 },
    #[error("car header at offset {offset} is {size_bytes} bytes; the limit is {max_bytes}")]
    HeaderTooLarge {
        offset: u64,
        size_bytes: u64,
        max_bytes: u64,
    },
    #[error("car header at offset {offset} is invalid: {reason}")]
    HeaderInvalid { offset: u64, reason: String },
    #[error("car version {version} is not supported (1 or 2{context})")]
    UnsupportedVersion { version: u64, context: &'static str },
    #[error("car header root {index} ({cid_hex}) is not a cid we can serve: {source}")]
    RootCid {
        index: usize,
        cid_hex: String,
        #[source]
        source: CidParseError,
    },
    #[error("carv2 header is invalid: {reason}")]
    V2Header { reason: String },
    #[error("car section {block_index} at offset {offset} has zero length")]
    SectionZeroLength { offset: u64, block_index: u64 },
    #[error(
        "car section {block_index} at offset {offset} is {size_bytes} bytes; the limit is {max_bytes}"
    )]
    SectionTooLarge {
        offset: u64,
        block_index: u64,
        size_bytes: u64,
        max_bytes: u64,
    },
    #[error(
        "car section {block_index} at offset {offset} runs past the end of the carv2 data ({data_end})"
    )]
    SectionPastDataEnd {
        offset: u64,
        block_index: u64,
        data_end: u64,
    },
    #[error("car section {block_index} at offset {offset} does not start with a cid: {prefix_hex}")]
    CidInvalid {
        offset: u64,
        block_index: u64,
        prefix_hex: String,
    },
    #[error("car section {block_index} at offset {offset} names a cid we cannot store: {source}")]
    CidUnsupported {
        offset: u64,
        block_index: u64,
        #[source]
        source: CidParseError,
    },
    #[error(
        "car block {cid} (section {block_index} at offset {offset}) is {size_bytes} bytes; the limit is {max_bytes}"
    )]
    BlockTooLarge {
        cid: ContentId,
        offset: u64,
        block_index: u64,
        size_bytes: u64,
        max_bytes: u64,
    },
    #[error("car block {cid} (section {block_index} at offset {offset}) does not match its cid")]
    HashMismatch {
        cid: ContentId,
        offset: u64,
        block_index: u64,
    },
}

/// Reads a CARv1 or CARv2 and yields `(cid, block)` pairs, each verified
/// against its CID.
#[derive(Debug)]
pub struct CarReader<R: Read> {
    inner: BufReader<R>,
    offset: u64,
    /// CARv2: where the CARv1 payload ends.
    data_end: Option<u64>,
    roots: Vec<ContentId>,
    version: u64,
    block_index: u64,
    done: bool,
}

struct Header {
    version: u64,
    roots: Option<Vec<ContentId>>,
}

impl<R: Read> CarReader<R> {
    /// Read and check the header (both headers for a CARv2).
    pub fn new(inner: R) -> Result<Self, CarReadError> {
        let mut reader = Self {
            inner: BufReader::with_capacity(CAR_READ_BUFFER_SIZE_BYTES, inner),
            offset: 0,
            data_end: None,
            roots: Vec::new(),
            version: 0,
            block_index: 0,
            done: false,
        };
        let header = reader.read_header()?;
        match (header.version, header.roots) {
            (1, Some(roots)) => {
                reader.version = 1;
                reader.roots = roots;
            }
            (2, None) => {
                reader.version = 2;
                reader.read_v2()?;
            }
            (1, None) => {
                return Err(CarReadError::HeaderInvalid {
                    offset: 0,
                    reason: "version 1 header has no roots".into(),
                });
            }
            (2, Some(_)) => {
                return Err(CarReadError::HeaderInvalid {
                    offset: 0,
                    reason: "version 2 pragma must not have roots".into(),
                });
            }
            (version, _) => {
                return Err(CarReadError::UnsupportedVersion {
                    version,
                    context: "",
                });
            }
        }
        Ok(reader)
    }

    pub fn roots(&self) -> &[ContentId] {
        &self.roots
    }

    /// 1 or 2: the container version (a CARv2's payload is always v1).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn read_v2(&mut self) -> Result<(), CarReadError> {
        let mut fixed = [0u8; CAR_V2_HEADER_SIZE_BYTES as usize];
        self.read_exact(&mut fixed, "carv2 header")?;
        let word = |index: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&fixed[index * 8..index * 8 + 8]);
            u64::from_le_bytes(bytes)
        };
        // Words 0 and 1 are the characteristics bitfield (only "fully
        // indexed" is defined; it does not change how the payload reads).
        let (data_offset, data_size) = (word(2), word(3));
        let header_end = CAR_V2_PRAGMA_SIZE_BYTES + CAR_V2_HEADER_SIZE_BYTES;
        if data_offset < header_end {
            return Err(CarReadError::V2Header {
                reason: format!("data offset {data_offset} is inside the {header_end}-byte header"),
            });
        }
        let data_end =
            data_offset
                .checked_add(data_size)
                .ok_or_else(|| CarReadError::V2Header {
                    reason: format!("data offset {data_offset} + data size {data_size} overflows"),
                })?;
        let padding =
            data_offset
                .checked_sub(self.offset)
                .ok_or_else(|| CarReadError::V2Header {
                    reason: format!(
                        "data offset {data_offset} is before the end of the header ({})",
                        self.offset
                    ),
                })?;
        let skipped =
            io::copy(&mut (&mut self.inner).take(padding), &mut io::sink()).map_err(|source| {
                CarReadError::Io {
                    offset: self.offset,
                    source,
                }
            })?;
        self.offset += skipped;
        if skipped < padding {
            return Err(CarReadError::Truncated {
                offset: self.offset,
                what: "carv2 padding before the data",
                needed_bytes: padding - skipped,
            });
        }
        self.data_end = Some(data_end);
        let header_offset = self.offset;
        let header = self.read_header()?;
        if self.offset > data_end {
            return Err(CarReadError::V2Header {
                reason: format!(
                    "inner header ends at {} past the data end {data_end}",
                    self.offset
                ),
            });
        }
        match (header.version, header.roots) {
            (1, Some(roots)) => {
                self.roots = roots;
                Ok(())
            }
            (1, None) => Err(CarReadError::HeaderInvalid {
                offset: header_offset,
                reason: "version 1 header has no roots".into(),
            }),
            (version, _) => Err(CarReadError::UnsupportedVersion {
                version,
                context: "; the carv2 payload must be version 1",
            }),
        }
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), CarReadError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => {
                    self.offset += filled as u64;
                    return Err(CarReadError::Truncated {
                        offset: self.offset,
                        what,
                        needed_bytes: (buf.len() - filled) as u64,
                    });
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(CarReadError::Io {
                        offset: self.offset + filled as u64,
                        source,
                    });
                }
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// A varint, or `None` at a clean end of input before its first byte.
    fn read_varint(&mut self, what: &'static str) -> Result<Option<u64>, CarReadError> {
        let start = self.offset;
        let mut buf = [0u8; 10];
        for len in 0..buf.len() {
            let mut byte = [0u8; 1];
            if len == 0 {
                match self.inner.read(&mut byte) {
                    Ok(0) => return Ok(None),
                    Ok(_) => self.offset += 1,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        self.read_exact(&mut byte, what)?;
                    }
                    Err(source) => {
                        return Err(CarReadError::Io {
                            offset: start,
                            source,
                        });
                    }
                }
            } else {
                self.read_exact(&mut byte, what)?;
            }
            buf[len] = byte[0];
            if byte[0] & 0x80 == 0 {
                return match varint::read(&buf[..=len], 0) {
                    Ok((value, _)) => Ok(Some(value)),
                    Err(varint::VarintError::NotMinimal { .. }) => Err(CarReadError::Varint {
                        offset: start,
                        reason: "not minimally encoded",
                    }),
                    Err(_) => Err(CarReadError::Varint {
                        offset: start,
                        reason: "does not fit 64 bits",
                    }),
                };
            }
        }
        Err(CarReadError::Varint {
            offset: start,
            reason: "longer than 10 bytes",
        })
    }

    fn read_header(&mut self) -> Result<Header, CarReadError> {
        let offset = self.offset;
        let len = self
            .read_varint("header length")?
            .ok_or(CarReadError::Truncated {
                offset,
                what: "header length",
                needed_bytes: 1,
            })?;
        if len == 0 {
            return Err(CarReadError::HeaderZeroLength { offset });
        }
        if len > CAR_HEADER_SIZE_BYTES_MAX {
            return Err(CarReadError::HeaderTooLarge {
                offset,
                size_bytes: len,
                max_bytes: CAR_HEADER_SIZE_BYTES_MAX,
            });
        }
        let mut cbor = vec![0u8; len as usize];
        let cbor_offset = self.offset;
        self.read_exact(&mut cbor, "header")?;
        parse_header(&cbor).map_err(|e| match e {
            HeaderProblem::Invalid { at, reason } => CarReadError::HeaderInvalid {
                offset: cbor_offset + at as u64,
                reason,
            },
            HeaderProblem::Root {
                index,
                cid_hex,
                source,
            } => CarReadError::RootCid {
                index,
                cid_hex,
                source,
            },
        })
    }

    fn read_section(&mut self) -> Result<Option<(ContentId, Bytes)>, CarReadError> {
        let offset = self.offset;
        let block_index = self.block_index;
        if let Some(data_end) = self.data_end
            && offset >= data_end
        {
            return Ok(None);
        }
        let Some(len) = self.read_varint("section length")? else {
            return match self.data_end {
                None => Ok(None),
                Some(data_end) => Err(CarReadError::Truncated {
                    offset,
                    what: "carv2 data",
                    needed_bytes: data_end - offset,
                }),
            };
        };
        if len == 0 {
            return Err(CarReadError::SectionZeroLength {
                offset,
                block_index,
            });
        }
        if len > CAR_SECTION_SIZE_BYTES_MAX {
            return Err(CarReadError::SectionTooLarge {
                offset,
                block_index,
                size_bytes: len,
                max_bytes: CAR_SECTION_SIZE_BYTES_MAX,
            });
        }
        if let Some(data_end) = self.data_end
            && self.offset + len > data_end
        {
            return Err(CarReadError::SectionPastDataEnd {
                offset,
                block_index,
                data_end,
            });
        }
        let body_offset = self.offset;
        let mut body = Vec::with_capacity(len as usize);
        let got = (&mut self.inner)
            .take(len)
            .read_to_end(&mut body)
            .map_err(|source| CarReadError::Io {
                offset: body_offset,
                source,
            })?;
        self.offset += got as u64;
        if (got as u64) < len {
            return Err(CarReadError::Truncated {
                offset: self.offset,
                what: "section",
                needed_bytes: len - got as u64,
            });
        }
        let body = Bytes::from(body);
        let Some(cid_len) = cid_byte_len(&body) else {
            return Err(CarReadError::CidInvalid {
                offset: body_offset,
                block_index,
                prefix_hex: hex::encode(&body[..body.len().min(40)]),
            });
        };
        let cid = ContentId::from_bytes(&body[..cid_len]).map_err(|source| {
            CarReadError::CidUnsupported {
                offset: body_offset,
                block_index,
                source,
            }
        })?;
        let data = body.slice(cid_len..);
        if data.len() as u64 > BLOCK_SIZE_BYTES_MAX {
            return Err(CarReadError::BlockTooLarge {
                cid,
                offset,
                block_index,
                size_bytes: data.len() as u64,
                max_bytes: BLOCK_SIZE_BYTES_MAX,
            });
        }
        if !cid.key().matches(&data) {
            return Err(CarReadError::HashMismatch {
                cid,
                offset,
                block_index,
            });
        }
        self.block_index += 1;
        Ok(Some((cid, data)))
    }
}

impl<R: Read> Iterator for CarReader<R> {
    type Item = Result<(ContentId, Bytes), CarReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.read_section().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

enum HeaderProblem {
    Invalid {
        at: usize,
        reason: String,
    },
    Root {
        index: usize,
        cid_hex: String,
        source: CidParseError,
    },
}

fn invalid(at: usize, reason: impl Into<String>) -> HeaderProblem {
    HeaderProblem::Invalid {
        at,
        reason: reason.into(),
    }
}

/// A strict reader of the few dag-cbor items a CAR header uses.
struct Cbor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cbor<'a> {
    /// (major type, argument); definite lengths and minimal encodings only.
    fn head(&mut self) -> Result<(u8, u64), HeaderProblem> {
        let at = self.pos;
        let first = *self
            .bytes
            .get(at)
            .ok_or_else(|| invalid(at, "ends early"))?;
        let (major, info) = (first >> 5, first & 0x1f);
        let extra = match info {
            0..=23 => {
                self.pos += 1;
                return Ok((major, u64::from(info)));
            }
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return Err(invalid(at, "indefinite length or reserved encoding")),
        };
        let raw = self
            .bytes
            .get(at + 1..at + 1 + extra)
            .ok_or_else(|| invalid(at, "ends early"))?;
        let value = raw.iter().fold(0u64, |v, &b| v << 8 | u64::from(b));
        let minimal = match extra {
            1 => value >= 24,
            2 => value > 0xff,
            4 => value > 0xffff,
            _ => value > 0xffff_ffff,
        };
        if !minimal {
            return Err(invalid(at, "integer is not minimally encoded"));
        }
        self.pos = at + 1 + extra;
        Ok((major, value))
    }

    fn expect(&mut self, want_major: u8, what: &str) -> Result<u64, HeaderProblem> {
        let at = self.pos;
        let (major, value) = self.head()?;
        if major != want_major {
            return Err(invalid(at, format!("expected {what}")));
        }
        Ok(value)
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], HeaderProblem> {
        let at = self.pos;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| at.checked_add(len))
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| invalid(at, "string runs past the header"))?;
        self.pos = end;
        Ok(&self.bytes[at..end])
    }
}

fn parse_header(bytes: &[u8]) -> Result<Header, HeaderProblem> {
    let mut cbor = Cbor { bytes, pos: 0 };
    let entries = cbor.expect(CBOR_MAJOR_MAP, "a map")?;
    if !(1..=2).contains(&entries) {
        return Err(invalid(
            0,
            format!("map has {entries} entries; expected roots and version"),
        ));
    }
    let mut version = None;
    let mut roots = None;
    for _ in 0..entries {
        let key_at = cbor.pos;
        let key_len = cbor.expect(CBOR_MAJOR_TEXT, "a text key")?;
        match cbor.take(key_len)? {
            b"version" if version.is_none() => {
                version = Some(cbor.expect(CBOR_MAJOR_UNSIGNED, "an unsigned version")?);
            }
            b"roots" if roots.is_none() => {
                let count = cbor.expect(CBOR_MAJOR_ARRAY, "an array of roots")?;
                if count > CAR_ROOTS_COUNT_MAX as u64 {
                    return Err(invalid(
                        key_at,
                        format!("{count} roots; the limit is {CAR_ROOTS_COUNT_MAX}"),
                    ));
                }
                let mut list = Vec::with_capacity(count as usize);
                for index in 0..count as usize {
                    let at = cbor.pos;
                    if cbor.expect(CBOR_MAJOR_TAG, "a cid (tag 42)")? != CBOR_TAG_CID {
                        return Err(invalid(at, "root is not tagged 42 (cid)"));
                    }
                    let len = cbor.expect(CBOR_MAJOR_BYTES, "cid bytes")?;
                    let raw = cbor.take(len)?;
                    let Some((&0x00, cid_bytes)) = raw.split_first() else {
                        return Err(invalid(at, "cid bytes lack the 0x00 multibase prefix"));
                    };
                    if cid_byte_len(cid_bytes) != Some(cid_bytes.len()) {
                        return Err(invalid(at, format!("root {index} is not a binary cid")));
                    }
                    let cid =
                        ContentId::from_bytes(cid_bytes).map_err(|source| HeaderProblem::Root {
                            index,
                            cid_hex: hex::encode(cid_bytes),
                            source,
                        })?;
                    list.push(cid);
                }
                roots = Some(list);
            }
            _ => return Err(invalid(key_at, "unknown or repeated key")),
        }
    }
    if cbor.pos != bytes.len() {
        return Err(invalid(cbor.pos, "trailing bytes after the header map"));
    }
    let version = version.ok_or_else(|| invalid(0, "missing version"))?;
    Ok(Header { version, roots })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The CARv1 header @ipld/car writes for one CIDv1 dag-pb root (taken from
    // its sample-unixfs-v2.car fixture, whose inner header is a CARv1 header).
    #[test]
    fn header_matches_ipld_car() {
        let root: ContentId = "bafybeiakgrehdxxgy5kca72znt6jllrj2sqkehtqeojfuxlbeuqg3vfkwq"
            .parse()
            .unwrap();
        let expected = hex::decode(
            "3aa265726f6f747381d82a58250001701220 0a344871dee6c754207f596cfc95ae29d4a0a21e7023925a5d6125206dd4aab4 6776657273696f6e01"
                .replace(' ', ""),
        )
        .unwrap();
        assert_eq!(encode_header(&[root]), expected);
        let header = parse_header(&expected[1..]).ok().unwrap();
        assert_eq!((header.version, header.roots), (1, Some(vec![root])));
    }

    #[test]
    fn cbor_heads_are_minimal() {
        for (value, len) in [
            (0u64, 1usize),
            (23, 1),
            (24, 2),
            (255, 2),
            (256, 3),
            (65535, 3),
            (65536, 5),
            (1 << 32, 9),
        ] {
            let mut out = Vec::new();
            cbor_head(&mut out, CBOR_MAJOR_UNSIGNED, value);
            assert_eq!(out.len(), len, "{value}");
            let mut cbor = Cbor {
                bytes: &out,
                pos: 0,
            };
            assert_eq!(cbor.head().ok(), Some((0, value)));
        }
        // 24 encoded with a one-byte argument of 23: not minimal.
        assert!(
            Cbor {
                bytes: &[0x18, 0x17],
                pos: 0
            }
            .head()
            .is_err()
        );
        assert!(
            Cbor {
                bytes: &[0x9f],
                pos: 0
            }
            .head()
            .is_err()
        );
    }
}
