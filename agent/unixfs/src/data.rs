//! The UnixFS `Data` protobuf carried in a dag-pb node's Data field
//! (<https://specs.ipfs.tech/unixfs/>):
//!
//! ```text
//! message Data {
//!   enum DataType { Raw = 0; Directory = 1; File = 2; Metadata = 3; Symlink = 4; HAMTShard = 5; }
//!   required DataType Type = 1;   optional bytes Data = 2;      optional uint64 filesize = 3;
//!   repeated uint64 blocksizes = 4; optional uint64 hashType = 5; optional uint64 fanout = 6;
//!   optional uint32 mode = 7;      optional UnixTime mtime = 8;
//! }
//! message UnixTime { required int64 Seconds = 1; optional fixed32 FractionalNanoseconds = 2; }
//! ```
//!
//! Encoding follows `ipfs-unixfs` (protons): fields in number order,
//! `blocksizes` unpacked. Decoding is strict: unknown fields, wrong wire
//! types, duplicate singular fields, a missing or unknown Type, a `mode` that
//! does not fit 32 bits and non-minimal varints are refused. Packed
//! `blocksizes` are accepted, as every protobuf decoder must.

use metanode_core::dagpb::varint::{self, VarintError};

/// What a UnixFS node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Raw,
    Directory,
    File,
    Metadata,
    Symlink,
    HamtShard,
}

impl DataType {
    pub const fn code(self) -> u64 {
        match self {
            DataType::Raw => 0,
            DataType::Directory => 1,
            DataType::File => 2,
            DataType::Metadata => 3,
            DataType::Symlink => 4,
            DataType::HamtShard => 5,
        }
    }

    pub const fn from_code(code: u64) -> Option<Self> {
        match code {
            0 => Some(DataType::Raw),
            1 => Some(DataType::Directory),
            2 => Some(DataType::File),
            3 => Some(DataType::Metadata),
            4 => Some(DataType::Symlink),
            5 => Some(DataType::HamtShard),
            _ => None,
        }
    }

    /// The name the UnixFS spec uses.
    pub const fn name(self) -> &'static str {
        match self {
            DataType::Raw => "Raw",
            DataType::Directory => "Directory",
            DataType::File => "File",
            DataType::Metadata => "Metadata",
            DataType::Symlink => "Symlink",
            DataType::HamtShard => "HAMTShard",
        }
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnixTime {
    pub seconds: Option<i64>,
    pub fractional_nanoseconds: Option<u32>,
}

/// A decoded UnixFS `Data` message, borrowing `data` from the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixFsData<'a> {
    pub kind: DataType,
    pub data: Option<&'a [u8]>,
    pub filesize: Option<u64>,
    pub blocksizes: Vec<u64>,
    pub hash_type: Option<u64>,
    pub fanout: Option<u64>,
    pub mode: Option<u32>,
    pub mtime: Option<UnixTime>,
}

/// Why bytes are not a UnixFS `Data` message. Offsets are from the start of
/// the message (the dag-pb node's Data field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnixFsError {
    #[error("unixfs data: {source}")]
    Varint {
        #[source]
        source: VarintError,
    },
    #[error(
        "unixfs data: field at offset {offset} declares {len_bytes} bytes but only {available_bytes} remain"
    )]
    Truncated {
        offset: usize,
        len_bytes: u64,
        available_bytes: usize,
    },
    #[error("unixfs data: field {field} at offset {offset} has wire type {wire_type}")]
    WrongWireType {
        offset: usize,
        field: &'static str,
        wire_type: u8,
    },
    #[error("unixfs data: unknown field number {field_number} at offset {offset}")]
    UnknownField { offset: usize, field_number: u64 },
    #[error("unixfs data: duplicate field {field} at offset {offset}")]
    DuplicateField { offset: usize, field: &'static str },
    #[error("unixfs data: the required Type field is missing")]
    MissingType,
    #[error("unixfs data: unknown Type {value}")]
    UnknownType { value: u64 },
    #[error("unixfs data: mode {value} does not fit 32 bits")]
    ModeTooLarge { value: u64 },
    #[error("unixfs data: mtime FractionalNanoseconds {value} is not below one second")]
    NanosecondsOutOfRange { value: u32 },
}

impl From<VarintError> for UnixFsError {
    fn from(source: VarintError) -> Self {
        UnixFsError::Varint { source }
    }
}

const NANOSECONDS_PER_SECOND: u32 = 1_000_000_000;

impl<'a> UnixFsData<'a> {
    /// A message of `kind` with every optional field absent.
    pub fn new(kind: DataType) -> Self {
        Self {
            kind,
            data: None,
            filesize: None,
            blocksizes: Vec::new(),
            hash_type: None,
            fanout: None,
            mode: None,
            mtime: None,
        }
    }

    /// Bytes of file content this node stands for: its own data plus its
    /// children's blocksizes. `None` on overflow (a hostile node).
    pub fn content_size_bytes(&self) -> Option<u64> {
        let own = self.data.map_or(0, |d| d.len() as u64);
        self.blocksizes
            .iter()
            .try_fold(own, |sum, &size| sum.checked_add(size))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.blocksizes.len() * 5);
        put_varint_field(&mut out, 1, self.kind.code());
        if let Some(data) = self.data {
            out.push(2 << 3 | 2);
            varint::write(&mut out, data.len() as u64);
            out.extend_from_slice(data);
        }
        if let Some(filesize) = self.filesize {
            put_varint_field(&mut out, 3, filesize);
        }
        for &size in &self.blocksizes {
            put_varint_field(&mut out, 4, size);
        }
        if let Some(hash_type) = self.hash_type {
            put_varint_field(&mut out, 5, hash_type);
        }
        if let Some(fanout) = self.fanout {
            put_varint_field(&mut out, 6, fanout);
        }
        if let Some(mode) = self.mode {
            put_varint_field(&mut out, 7, u64::from(mode));
        }
        if let Some(mtime) = self.mtime {
            let mut inner = Vec::with_capacity(16);
            if let Some(seconds) = mtime.seconds {
                // int64: negative values are their 64-bit two's complement.
                put_varint_field(&mut inner, 1, seconds as u64);
            }
            if let Some(nanos) = mtime.fractional_nanoseconds {
                inner.push(2 << 3 | 5);
                inner.extend_from_slice(&nanos.to_le_bytes());
            }
            out.push(8 << 3 | 2);
            varint::write(&mut out, inner.len() as u64);
            out.extend_from_slice(&inner);
        }
        out
    }

    pub fn decode(bytes: &'a [u8]) -> Result<Self, UnixFsError> {
        let mut kind = None;
        let mut message = UnixFsData::new(DataType::Raw);
        let mut seen = [false; 9];
        let mut pos = 0;
        while pos < bytes.len() {
            let key_offset = pos;
            let (key, next) = varint::read(bytes, pos)?;
            pos = next;
            let (field_number, wire_type) = (key >> 3, (key & 7) as u8);
            let Some(field) = field_name(field_number) else {
                return Err(UnixFsError::UnknownField {
                    offset: key_offset,
                    field_number,
                });
            };
            // blocksizes is the only repeated field.
            if field_number != 4 {
                let slot = &mut seen[field_number as usize];
                if *slot {
                    return Err(UnixFsError::DuplicateField {
                        offset: key_offset,
                        field,
                    });
                }
                *slot = true;
            }
            let wrong_wire = UnixFsError::WrongWireType {
                offset: key_offset,
                field,
                wire_type,
            };
            match (field_number, wire_type) {
                (1, 0) => {
                    let (value, next) = varint::read(bytes, pos)?;
                    pos = next;
                    kind =
                        Some(DataType::from_code(value).ok_or(UnixFsError::UnknownType { value })?);
                }
                (2, 2) => {
                    let (value, next) = read_len_delimited(bytes, pos)?;
                    message.data = Some(value);
                    pos = next;
                }
                (4, 2) => {
                    let (packed, next) = read_len_delimited(bytes, pos)?;
                    let base = next - packed.len();
                    let mut inner = 0;
                    while inner < packed.len() {
                        let (value, after) =
                            varint::read(packed, inner).map_err(|e| shift(e, base))?;
                        message.blocksizes.push(value);
                        inner = after;
                    }
                    pos = next;
                }
                (8, 2) => {
                    let (inner, next) = read_len_delimited(bytes, pos)?;
                    message.mtime = Some(decode_mtime(inner, next - inner.len())?);
                    pos = next;
                }
                (3..=7, 0) => {
                    let (value, next) = varint::read(bytes, pos)?;
                    pos = next;
                    match field_number {
                        3 => message.filesize = Some(value),
                        4 => message.blocksizes.push(value),
                        5 => message.hash_type = Some(value),
                        6 => message.fanout = Some(value),
                        _ => {
                            message.mode = Some(
                                u32::try_from(value)
                                    .map_err(|_| UnixFsError::ModeTooLarge { value })?,
                            )
                        }
                    }
                }
                _ => return Err(wrong_wire),
            }
        }
        message.kind = kind.ok_or(UnixFsError::MissingType)?;
        Ok(message)
    }
}

fn field_name(field_number: u64) -> Option<&'static str> {
    Some(match field_number {
        1 => "Type",
        2 => "Data",
        3 => "filesize",
        4 => "blocksizes",
        5 => "hashType",
        6 => "fanout",
        7 => "mode",
        8 => "mtime",
        _ => return None,
    })
}

fn put_varint_field(out: &mut Vec<u8>, field_number: u8, value: u64) {
    out.push(field_number << 3);
    varint::write(out, value);
}

fn read_len_delimited(bytes: &[u8], pos: usize) -> Result<(&[u8], usize), UnixFsError> {
    let (len, start) = varint::read(bytes, pos)?;
    let available = bytes.len() - start;
    if len > available as u64 {
        return Err(UnixFsError::Truncated {
            offset: pos,
            len_bytes: len,
            available_bytes: available,
        });
    }
    let end = start + len as usize;
    Ok((&bytes[start..end], end))
}

fn shift(e: VarintError, base: usize) -> UnixFsError {
    let offset = base + e.offset();
    UnixFsError::Varint {
        source: match e {
            VarintError::Truncated { .. } => VarintError::Truncated { offset },
            VarintError::Overflow { .. } => VarintError::Overflow { offset },
            VarintError::NotMinimal { .. } => VarintError::NotMinimal { offset },
        },
    }
}

fn decode_mtime(bytes: &[u8], base: usize) -> Result<UnixTime, UnixFsError> {
    let mut mtime = UnixTime::default();
    let mut pos = 0;
    while pos < bytes.len() {
        let key_offset = base + pos;
        let (key, next) = varint::read(bytes, pos).map_err(|e| shift(e, base))?;
        pos = next;
        let (field_number, wire_type) = (key >> 3, (key & 7) as u8);
        match (field_number, wire_type) {
            (1, 0) => {
                if mtime.seconds.is_some() {
                    return Err(UnixFsError::DuplicateField {
                        offset: key_offset,
                        field: "mtime.Seconds",
                    });
                }
                let (value, next) = varint::read(bytes, pos).map_err(|e| shift(e, base))?;
                mtime.seconds = Some(value as i64);
                pos = next;
            }
            (2, 5) => {
                if mtime.fractional_nanoseconds.is_some() {
                    return Err(UnixFsError::DuplicateField {
                        offset: key_offset,
                        field: "mtime.FractionalNanoseconds",
                    });
                }
                let Some(raw) = bytes.get(pos..pos + 4) else {
                    return Err(UnixFsError::Truncated {
                        offset: base + pos,
                        len_bytes: 4,
                        available_bytes: bytes.len() - pos,
                    });
                };
                let mut word = [0u8; 4];
                word.copy_from_slice(raw);
                let value = u32::from_le_bytes(word);
                if value >= NANOSECONDS_PER_SECOND {
                    return Err(UnixFsError::NanosecondsOutOfRange { value });
                }
                mtime.fractional_nanoseconds = Some(value);
                pos += 4;
            }
            (1, _) | (2, _) => {
                return Err(UnixFsError::WrongWireType {
                    offset: key_offset,
                    field: if field_number == 1 {
                        "mtime.Seconds"
                    } else {
                        "mtime.FractionalNanoseconds"
                    },
                    wire_type,
                });
            }
            _ => {
                return Err(UnixFsError::UnknownField {
                    offset: key_offset,
                    field_number,
                });
            }
        }
    }
    Ok(mtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).expect("test hex")
    }

    // The Data of the go-ipfs file root in @ipld/dag-pb's tests: a File of
    // 6 * 45613056 + 32530635 bytes.
    #[test]
    fn go_ipfs_file_root_data() {
        let bytes = unhex(
            "080218cbc1819201208080e015208080e015208080e015208080e015208080e015208080e01520cbc1c10f",
        );
        let data = UnixFsData::decode(&bytes).unwrap();
        assert_eq!(data.kind, DataType::File);
        assert_eq!(data.filesize, Some(6 * 45613056 + 32530635));
        assert_eq!(
            data.blocksizes,
            [
                45613056, 45613056, 45613056, 45613056, 45613056, 45613056, 32530635
            ]
        );
        assert_eq!(data.content_size_bytes(), data.filesize);
        assert_eq!(data.encode(), bytes);
    }

    // What ipfs-unixfs marshals for `new UnixFS({type: 'directory'})` and
    // for a file parent with two 262144-byte blocks.
    #[test]
    fn encodes_like_ipfs_unixfs() {
        assert_eq!(
            hex::encode(UnixFsData::new(DataType::Directory).encode()),
            "0801"
        );
        let mut file = UnixFsData::new(DataType::File);
        file.filesize = Some(524288);
        file.blocksizes = vec![262144, 262144];
        assert_eq!(hex::encode(file.encode()), "0802188080202080801020808010");
    }

    #[test]
    fn every_field_round_trips() {
        let payload = [1u8, 2, 3];
        let message = UnixFsData {
            kind: DataType::HamtShard,
            data: Some(&payload),
            filesize: Some(u64::MAX),
            blocksizes: vec![0, 1, 1 << 40],
            hash_type: Some(0x22),
            fanout: Some(256),
            mode: Some(0o755),
            mtime: Some(UnixTime {
                seconds: Some(-5),
                fractional_nanoseconds: Some(999_999_999),
            }),
        };
        let bytes = message.encode();
        assert_eq!(UnixFsData::decode(&bytes).unwrap(), message);
    }

    #[test]
    fn packed_blocksizes_are_accepted() {
        // Type File, blocksizes packed [1, 300].
        let bytes = unhex("0802220301ac02");
        let data = UnixFsData::decode(&bytes).unwrap();
        assert_eq!(data.blocksizes, [1, 300]);
    }

    #[test]
    fn strictness() {
        let cases: Vec<(&str, UnixFsError)> = vec![
            ("", UnixFsError::MissingType),
            ("1801", UnixFsError::MissingType),
            ("0806", UnixFsError::UnknownType { value: 6 }),
            (
                "08020802",
                UnixFsError::DuplicateField {
                    offset: 2,
                    field: "Type",
                },
            ),
            (
                "0802180118 02",
                UnixFsError::DuplicateField {
                    offset: 4,
                    field: "filesize",
                },
            ),
            (
                "08024801",
                UnixFsError::UnknownField {
                    offset: 2,
                    field_number: 9,
                },
            ),
            (
                "080219",
                UnixFsError::WrongWireType {
                    offset: 2,
                    field: "filesize",
                    wire_type: 1,
                },
            ),
            (
                "0a00",
                UnixFsError::WrongWireType {
                    offset: 0,
                    field: "Type",
                    wire_type: 2,
                },
            ),
            (
                "080212050102",
                UnixFsError::Truncated {
                    offset: 3,
                    len_bytes: 5,
                    available_bytes: 2,
                },
            ),
            (
                "0802388080808010",
                UnixFsError::ModeTooLarge { value: 1 << 32 },
            ),
            (
                "0802428000",
                UnixFsError::Varint {
                    source: VarintError::NotMinimal { offset: 3 },
                },
            ),
            (
                "0802420415 0000ca",
                UnixFsError::Truncated {
                    offset: 5,
                    len_bytes: 4,
                    available_bytes: 3,
                },
            ),
            (
                "080242051500ca9a3b",
                UnixFsError::NanosecondsOutOfRange {
                    value: 1_000_000_000,
                },
            ),
            (
                "08024204080108 01",
                UnixFsError::DuplicateField {
                    offset: 6,
                    field: "mtime.Seconds",
                },
            ),
        ];
        for (hex_bytes, want) in cases {
            let bytes = unhex(&hex_bytes.replace(' ', ""));
            assert_eq!(UnixFsData::decode(&bytes).unwrap_err(), want, "{hex_bytes}");
        }
    }

    #[test]
    fn content_size_overflow_is_none() {
        let mut file = UnixFsData::new(DataType::File);
        file.blocksizes = vec![u64::MAX, 1];
        assert_eq!(file.content_size_bytes(), None);
    }
}
