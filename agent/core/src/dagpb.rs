//! The dag-pb codec (multicodec 0x70), exactly as the IPLD spec describes it
//! (<https://ipld.io/specs/codecs/dag-pb/spec/>) and as `@ipld/dag-pb`
//! implements it.
//!
//! ```text
//! message PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }
//! message PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }
//! ```
//!
//! The encoder writes the canonical form: every link (field 2) first, each
//! with Hash, Name, Tsize in that order, then Data (field 1). The decoder is
//! as strict as `@ipld/dag-pb` (and a little stricter on varints):
//! - link fields must appear in field-number order; node Data may come before
//!   or after the links (old go-ipfs wrote Data first) but never between them;
//! - no duplicate fields, no unknown fields, no wrong wire types;
//! - every link has a Hash that is the binary form of a CID;
//! - varints must be minimally encoded and fit 64 bits.
//!
//! Every error names the byte offset where decoding stopped.
//!
//! Link hashes are kept verbatim (any CID, any codec or hash function) so a
//! block decodes and re-encodes byte-identically; [`PbLink::cid`] converts to
//! a [`ContentId`] only when the caller needs to fetch the target.

use crate::cid::{CidParseError, ContentId};

/// Bounds of the IPFS data model, in one place.
pub mod limits {
    /// Largest block IPFS clients accept (Kubo, Helia and every
    /// trustless-gateway client refuse bigger ones), so the largest dag-pb
    /// block we decode and the largest CAR block we read or write.
    pub const BLOCK_SIZE_BYTES_MAX: u64 = 2 * 1024 * 1024;

    /// Longest unsigned varint in a protobuf (ten 7-bit groups cover 64 bits).
    pub const PROTOBUF_VARINT_LEN_MAX: usize = 10;

    /// Longest unsigned varint in a multiformats value (CID version, codec,
    /// multihash code and length): the multiformats spec caps them at 9 bytes
    /// (63 bits).
    pub const MULTIFORMATS_VARINT_LEN_MAX: usize = 9;

    // Offsets into a block are usize; the bound must fit on 32-bit targets.
    const _: () = assert!(BLOCK_SIZE_BYTES_MAX <= u32::MAX as u64);
    const _: () = assert!(MULTIFORMATS_VARINT_LEN_MAX < PROTOBUF_VARINT_LEN_MAX);
}

use limits::{BLOCK_SIZE_BYTES_MAX, MULTIFORMATS_VARINT_LEN_MAX};

/// Unsigned LEB128 varints as protobuf, multiformats and CAR use them.
pub mod varint {
    use super::limits::PROTOBUF_VARINT_LEN_MAX;

    /// Why a varint could not be read.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    pub enum VarintError {
        #[error("varint at offset {offset} runs past the end of the input")]
        Truncated { offset: usize },
        #[error("varint at offset {offset} does not fit in 64 bits")]
        Overflow { offset: usize },
        #[error("varint at offset {offset} is not minimally encoded")]
        NotMinimal { offset: usize },
    }

    impl VarintError {
        /// Offset of the first byte of the varint.
        pub fn offset(&self) -> usize {
            match *self {
                VarintError::Truncated { offset }
                | VarintError::Overflow { offset }
                | VarintError::NotMinimal { offset } => offset,
            }
        }
    }

    /// Read a varint starting at `offset`; returns the value and the offset
    /// just past it. Non-minimal encodings (a trailing 0x00 group) are
    /// refused so every value has exactly one encoding.
    pub fn read(bytes: &[u8], offset: usize) -> Result<(u64, usize), VarintError> {
        let mut value: u64 = 0;
        let mut pos = offset;
        for index in 0..PROTOBUF_VARINT_LEN_MAX {
            let Some(&byte) = bytes.get(pos) else {
                return Err(VarintError::Truncated { offset });
            };
            pos += 1;
            let group = u64::from(byte & 0x7f);
            // The tenth byte carries bit 63 only.
            if index == PROTOBUF_VARINT_LEN_MAX - 1 && byte > 1 {
                return Err(VarintError::Overflow { offset });
            }
            value |= group << (7 * index);
            if byte & 0x80 == 0 {
                if byte == 0 && index > 0 {
                    return Err(VarintError::NotMinimal { offset });
                }
                return Ok((value, pos));
            }
        }
        Err(VarintError::Overflow { offset })
    }

    /// Number of bytes `value` takes as a varint.
    pub const fn len(value: u64) -> usize {
        let bits = 64 - (value | 1).leading_zeros() as usize;
        bits.div_ceil(7)
    }

    /// Append `value` as a varint.
    pub fn write(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    /// `value` as a varint in a fixed buffer: (buffer, used length).
    pub fn encode(mut value: u64) -> ([u8; PROTOBUF_VARINT_LEN_MAX], usize) {
        let mut buf = [0u8; PROTOBUF_VARINT_LEN_MAX];
        let mut len = 0;
        while value >= 0x80 {
            buf[len] = (value as u8 & 0x7f) | 0x80;
            value >>= 7;
            len += 1;
        }
        buf[len] = value as u8;
        (buf, len + 1)
    }
}

/// A dag-pb node. `links` are in block order (the encoder does not sort;
/// callers building directories sort by name first, as the spec requires).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbNode {
    pub links: Vec<PbLink>,
    pub data: Option<Vec<u8>>,
}

/// A dag-pb link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    /// Binary CID of the target, kept verbatim.
    pub hash: Vec<u8>,
    /// Raw bytes of the name (UTF-8 by convention, not checked).
    pub name: Option<Vec<u8>>,
    /// Cumulative size of the target DAG, as the writer reported it.
    pub tsize: Option<u64>,
}

impl PbLink {
    /// The target as a CID we can fetch (raw or dag-pb; sha2-256 or BLAKE3).
    pub fn cid(&self) -> Result<ContentId, CidParseError> {
        parse_link_cid(&self.hash)
    }
}

/// A decoded node borrowing from the block; what [`decode_ref`] returns so
/// readers can slice `Data` out of the block without copying it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbNodeRef<'a> {
    pub links: Vec<PbLinkRef<'a>>,
    pub data: Option<&'a [u8]>,
}

/// A link borrowing from the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PbLinkRef<'a> {
    pub hash: &'a [u8],
    pub name: Option<&'a [u8]>,
    pub tsize: Option<u64>,
    /// Offset of this link's Hash bytes in the block (for error messages).
    pub hash_offset: usize,
}

impl PbLinkRef<'_> {
    /// The target as a CID we can fetch.
    pub fn cid(&self) -> Result<ContentId, CidParseError> {
        parse_link_cid(self.hash)
    }

    pub fn to_owned_link(&self) -> PbLink {
        PbLink {
            hash: self.hash.to_vec(),
            name: self.name.map(<[u8]>::to_vec),
            tsize: self.tsize,
        }
    }
}

impl PbNodeRef<'_> {
    pub fn to_owned_node(&self) -> PbNode {
        PbNode {
            links: self.links.iter().map(PbLinkRef::to_owned_link).collect(),
            data: self.data.map(<[u8]>::to_vec),
        }
    }
}

/// Which protobuf message a decoding error is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PbMessage {
    PbNode,
    PbLink,
}

impl std::fmt::Display for PbMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PbMessage::PbNode => "PBNode",
            PbMessage::PbLink => "PBLink",
        })
    }
}

/// Why bytes are not a valid dag-pb block. Offsets are from the start of the
/// block.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DagPbError {
    #[error("dag-pb block is {size_bytes} bytes; the limit is {max_bytes}")]
    BlockTooLarge { size_bytes: u64, max_bytes: u64 },
    #[error("dag-pb: {source}")]
    Varint {
        #[source]
        source: varint::VarintError,
    },
    #[error(
        "dag-pb: {message} field at offset {offset} declares {len_bytes} bytes but only {available_bytes} remain"
    )]
    Truncated {
        message: PbMessage,
        offset: usize,
        len_bytes: u64,
        available_bytes: usize,
    },
    #[error(
        "dag-pb: {message} field {field_number} at offset {offset} has wire type {wire_type}, expected {expected}"
    )]
    WrongWireType {
        message: PbMessage,
        offset: usize,
        field_number: u64,
        wire_type: u8,
        expected: u8,
    },
    #[error("dag-pb: {message} has unknown field number {field_number} at offset {offset}")]
    UnknownField {
        message: PbMessage,
        offset: usize,
        field_number: u64,
    },
    #[error("dag-pb: {message} has a duplicate {field} field at offset {offset}")]
    DuplicateField {
        message: PbMessage,
        offset: usize,
        field: &'static str,
    },
    #[error(
        "dag-pb: PBLink field {found} at offset {offset} comes after {after}; fields must be in order Hash, Name, Tsize"
    )]
    LinkFieldOrder {
        offset: usize,
        found: &'static str,
        after: &'static str,
    },
    #[error(
        "dag-pb: Links at offset {offset} follow Data that follows Links (interleaved sections)"
    )]
    InterleavedLinks { offset: usize },
    #[error("dag-pb: link at offset {offset} has no Hash")]
    MissingHash { offset: usize },
    #[error("dag-pb: link Hash at offset {offset} is not a binary CID: {hash_hex}")]
    InvalidLinkHash { offset: usize, hash_hex: String },
    #[error(
        "dag-pb: link {index} (Hash at offset {offset}) names cid {hash_hex} that we cannot fetch: {source}"
    )]
    UnsupportedLinkCid {
        index: usize,
        offset: usize,
        hash_hex: String,
        #[source]
        source: CidParseError,
    },
}

impl From<varint::VarintError> for DagPbError {
    fn from(source: varint::VarintError) -> Self {
        DagPbError::Varint { source }
    }
}

/// Encode a node in the canonical form (links first, then data).
pub fn encode(node: &PbNode) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(node));
    for link in &node.links {
        out.push(0x12);
        varint::write(&mut out, link_len(link) as u64);
        out.push(0x0a);
        varint::write(&mut out, link.hash.len() as u64);
        out.extend_from_slice(&link.hash);
        if let Some(name) = &link.name {
            out.push(0x12);
            varint::write(&mut out, name.len() as u64);
            out.extend_from_slice(name);
        }
        if let Some(tsize) = link.tsize {
            out.push(0x18);
            varint::write(&mut out, tsize);
        }
    }
    if let Some(data) = &node.data {
        out.push(0x0a);
        varint::write(&mut out, data.len() as u64);
        out.extend_from_slice(data);
    }
    out
}

fn field_len(payload_len: usize) -> usize {
    1 + varint::len(payload_len as u64) + payload_len
}

fn link_len(link: &PbLink) -> usize {
    field_len(link.hash.len())
        + link.name.as_ref().map_or(0, |name| field_len(name.len()))
        + link.tsize.map_or(0, |tsize| 1 + varint::len(tsize))
}

/// Exact size of [`encode`]'s output.
pub fn encoded_len(node: &PbNode) -> usize {
    node.links
        .iter()
        .map(|link| field_len(link_len(link)))
        .sum::<usize>()
        + node.data.as_ref().map_or(0, |data| field_len(data.len()))
}

/// Decode a block into an owned node.
pub fn decode(bytes: &[u8]) -> Result<PbNode, DagPbError> {
    decode_ref(bytes).map(|node| node.to_owned_node())
}

/// Decode a block without copying Data, names or hashes.
pub fn decode_ref(bytes: &[u8]) -> Result<PbNodeRef<'_>, DagPbError> {
    if bytes.len() as u64 > BLOCK_SIZE_BYTES_MAX {
        return Err(DagPbError::BlockTooLarge {
            size_bytes: bytes.len() as u64,
            max_bytes: BLOCK_SIZE_BYTES_MAX,
        });
    }
    let mut node = PbNodeRef::default();
    // Mirrors @ipld/dag-pb: Data may precede the links (ancient go-ipfs
    // blocks), but Links, Data, Links is refused.
    let mut data_after_links = false;
    let mut pos = 0;
    while pos < bytes.len() {
        let key_offset = pos;
        let (key, next) = varint::read(bytes, pos)?;
        pos = next;
        let (field_number, wire_type) = (key >> 3, (key & 7) as u8);
        if wire_type != 2 {
            return Err(DagPbError::WrongWireType {
                message: PbMessage::PbNode,
                offset: key_offset,
                field_number,
                wire_type,
                expected: 2,
            });
        }
        match field_number {
            1 => {
                if node.data.is_some() {
                    return Err(DagPbError::DuplicateField {
                        message: PbMessage::PbNode,
                        offset: key_offset,
                        field: "Data",
                    });
                }
                let (data, next) = read_len_delimited(bytes, pos, PbMessage::PbNode)?;
                node.data = Some(data);
                pos = next;
                data_after_links = !node.links.is_empty();
            }
            2 => {
                if data_after_links {
                    return Err(DagPbError::InterleavedLinks { offset: key_offset });
                }
                let (payload, next) = read_len_delimited(bytes, pos, PbMessage::PbNode)?;
                let payload_start = next - payload.len();
                node.links
                    .push(decode_link(payload, payload_start, key_offset)?);
                pos = next;
            }
            _ => {
                return Err(DagPbError::UnknownField {
                    message: PbMessage::PbNode,
                    offset: key_offset,
                    field_number,
                });
            }
        }
    }
    Ok(node)
}

/// Read a length-delimited payload at `pos` (which points at its length).
fn read_len_delimited(
    bytes: &[u8],
    pos: usize,
    message: PbMessage,
) -> Result<(&[u8], usize), DagPbError> {
    let (len, start) = varint::read(bytes, pos)?;
    let available = bytes.len() - start;
    if len > available as u64 {
        return Err(DagPbError::Truncated {
            message,
            offset: pos,
            len_bytes: len,
            available_bytes: available,
        });
    }
    let end = start + len as usize;
    Ok((&bytes[start..end], end))
}

/// `base` is the offset of `bytes` within the block; `link_offset` is where
/// the link's field key is (named when the Hash is missing).
fn decode_link(bytes: &[u8], base: usize, link_offset: usize) -> Result<PbLinkRef<'_>, DagPbError> {
    let mut hash: Option<(&[u8], usize)> = None;
    let mut name = None;
    let mut tsize = None;
    let mut pos = 0;
    while pos < bytes.len() {
        let key_offset = base + pos;
        let (key, next) = varint::read(bytes, pos).map_err(|e| shift(e, base))?;
        pos = next;
        let (field_number, wire_type) = (key >> 3, (key & 7) as u8);
        let wrong_wire = |expected: u8| DagPbError::WrongWireType {
            message: PbMessage::PbLink,
            offset: key_offset,
            field_number,
            wire_type,
            expected,
        };
        let duplicate = |field: &'static str| DagPbError::DuplicateField {
            message: PbMessage::PbLink,
            offset: key_offset,
            field,
        };
        let order = |found: &'static str, after: &'static str| DagPbError::LinkFieldOrder {
            offset: key_offset,
            found,
            after,
        };
        match field_number {
            1 => {
                if hash.is_some() {
                    return Err(duplicate("Hash"));
                }
                if wire_type != 2 {
                    return Err(wrong_wire(2));
                }
                if name.is_some() {
                    return Err(order("Hash", "Name"));
                }
                if tsize.is_some() {
                    return Err(order("Hash", "Tsize"));
                }
                let (value, next) = read_len_delimited(bytes, pos, PbMessage::PbLink)
                    .map_err(|e| shift_pb(e, base))?;
                hash = Some((value, base + next - value.len()));
                pos = next;
            }
            2 => {
                if name.is_some() {
                    return Err(duplicate("Name"));
                }
                if wire_type != 2 {
                    return Err(wrong_wire(2));
                }
                if tsize.is_some() {
                    return Err(order("Name", "Tsize"));
                }
                let (value, next) = read_len_delimited(bytes, pos, PbMessage::PbLink)
                    .map_err(|e| shift_pb(e, base))?;
                name = Some(value);
                pos = next;
            }
            3 => {
                if tsize.is_some() {
                    return Err(duplicate("Tsize"));
                }
                if wire_type != 0 {
                    return Err(wrong_wire(0));
                }
                let (value, next) = varint::read(bytes, pos).map_err(|e| shift(e, base))?;
                tsize = Some(value);
                pos = next;
            }
            _ => {
                return Err(DagPbError::UnknownField {
                    message: PbMessage::PbLink,
                    offset: key_offset,
                    field_number,
                });
            }
        }
    }
    let Some((hash, hash_offset)) = hash else {
        return Err(DagPbError::MissingHash {
            offset: link_offset,
        });
    };
    if cid_byte_len(hash) != Some(hash.len()) {
        return Err(DagPbError::InvalidLinkHash {
            offset: hash_offset,
            hash_hex: hex::encode(hash),
        });
    }
    Ok(PbLinkRef {
        hash,
        name,
        tsize,
        hash_offset,
    })
}

fn shift(e: varint::VarintError, base: usize) -> DagPbError {
    let offset = base + e.offset();
    DagPbError::Varint {
        source: match e {
            varint::VarintError::Truncated { .. } => varint::VarintError::Truncated { offset },
            varint::VarintError::Overflow { .. } => varint::VarintError::Overflow { offset },
            varint::VarintError::NotMinimal { .. } => varint::VarintError::NotMinimal { offset },
        },
    }
}

fn shift_pb(e: DagPbError, base: usize) -> DagPbError {
    match e {
        DagPbError::Varint { source } => shift(source, base),
        DagPbError::Truncated {
            message,
            offset,
            len_bytes,
            available_bytes,
        } => DagPbError::Truncated {
            message,
            offset: base + offset,
            len_bytes,
            available_bytes,
        },
        other => other,
    }
}

/// The CIDs a dag-pb block links to, in block order: what a garbage
/// collector or a DAG walk needs, without copying names or data.
///
/// A structurally valid link whose CID we cannot fetch (another codec such as
/// dag-cbor, or another hash such as identity) is
/// [`DagPbError::UnsupportedLinkCid`], naming the CID bytes in hex.
pub fn links(bytes: &[u8]) -> Result<Vec<ContentId>, DagPbError> {
    let node = decode_ref(bytes)?;
    node.links
        .iter()
        .enumerate()
        .map(|(index, link)| {
            link.cid().map_err(|source| DagPbError::UnsupportedLinkCid {
                index,
                offset: link.hash_offset,
                hash_hex: hex::encode(link.hash),
                source,
            })
        })
        .collect()
}

/// Parse link bytes into a [`ContentId`], refusing trailing bytes (the `cid`
/// crate reads a prefix and ignores what follows).
fn parse_link_cid(bytes: &[u8]) -> Result<ContentId, CidParseError> {
    if cid_byte_len(bytes) != Some(bytes.len()) {
        return Err(CidParseError::Malformed {
            input: hex::encode(bytes),
            reason: "not exactly one binary cid (v0, or v1 with minimal varints)".into(),
        });
    }
    ContentId::from_bytes(bytes)
}

/// Length of the binary CID at the start of `bytes` (any version-1 codec and
/// multihash, or a CIDv0), or `None` if `bytes` does not start with one.
/// Varints must be minimal and at most 9 bytes, as multiformats requires.
pub fn cid_byte_len(bytes: &[u8]) -> Option<usize> {
    // CIDv0 is a bare sha2-256 multihash: 0x12 0x20 + 32 bytes.
    if bytes.len() >= 2 && bytes[0] == 0x12 && bytes[1] == 0x20 {
        return (bytes.len() >= 34).then_some(34);
    }
    let multiformat = |pos: usize| -> Option<(u64, usize)> {
        let (value, next) = varint::read(bytes, pos).ok()?;
        (next - pos <= MULTIFORMATS_VARINT_LEN_MAX).then_some((value, next))
    };
    let (version, pos) = multiformat(0)?;
    if version != 1 {
        return None;
    }
    let (_codec, pos) = multiformat(pos)?;
    let (_hash_code, pos) = multiformat(pos)?;
    let (digest_len, pos) = multiformat(pos)?;
    let end = (pos as u64).checked_add(digest_len)?;
    (end <= bytes.len() as u64).then_some(end as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::{CODEC_DAG_PB, CODEC_RAW, HashKind};

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).expect("test hex")
    }

    /// raw + identity multihash of 00 01 02 03 04 (bafkqabiaaebagba), the
    /// link target in the @ipld/dag-pb compatibility tests.
    const ACID: &str = "015500050001020304";

    fn link(hash: &str, name: Option<&str>, tsize: Option<u64>) -> PbLink {
        PbLink {
            hash: unhex(hash),
            name: name.map(|n| n.as_bytes().to_vec()),
            tsize,
        }
    }

    // The round-trip table of @ipld/dag-pb test/test-compat.spec.js (mirrored
    // in go-merkledag's compat_test.go): node -> exact bytes -> same node.
    #[test]
    fn js_dag_pb_compat_vectors_round_trip() {
        let cases: Vec<(PbNode, &str)> = vec![
            (PbNode::default(), ""),
            (
                PbNode {
                    links: vec![],
                    data: Some(vec![]),
                },
                "0a00",
            ),
            (
                PbNode {
                    links: vec![],
                    data: Some(vec![0, 1, 2, 3, 4]),
                },
                "0a050001020304",
            ),
            (
                PbNode {
                    links: vec![link(ACID, None, None)],
                    data: None,
                },
                "120b0a09015500050001020304",
            ),
            (
                PbNode {
                    links: vec![link(ACID, Some(""), None)],
                    data: None,
                },
                "120d0a090155000500010203041200",
            ),
            (
                PbNode {
                    links: vec![link(ACID, Some("some name"), None)],
                    data: None,
                },
                "12160a090155000500010203041209736f6d65206e616d65",
            ),
            (
                PbNode {
                    links: vec![link(ACID, None, Some(0))],
                    data: None,
                },
                "120d0a090155000500010203041800",
            ),
            (
                PbNode {
                    links: vec![link(ACID, None, Some(9007199254740991))],
                    data: None,
                },
                "12140a0901550005000102030418ffffffffffffff0f",
            ),
            (
                PbNode {
                    links: vec![link(ACID, None, Some(9007199254740992))],
                    data: None,
                },
                "12140a09015500050001020304188080808080808010",
            ),
        ];
        for (node, expected_hex) in cases {
            let bytes = encode(&node);
            assert_eq!(hex::encode(&bytes), expected_hex, "{node:?}");
            assert_eq!(encoded_len(&node), bytes.len());
            assert_eq!(decode(&bytes).unwrap(), node, "{expected_hex}");
        }
    }

    // Links without a Hash encode (the js "bypass" cases) but never decode.
    #[test]
    fn links_without_hash_or_with_bad_hash_are_refused() {
        for (hex_block, want_missing) in [
            ("1200", true),
            ("12000a050001020304", true),
            ("12021200", true),
            ("120b1209736f6d65206e616d65", true),
            ("12021800", true),
            ("120318f207", true),
            ("12020a00", false),
            // 0xf0 0x01 ... does not decode as a CID (fail to create link with bad CID hash)
            ("12070a05f001020304", false),
        ] {
            let err = decode(&unhex(hex_block)).unwrap_err();
            if want_missing {
                assert!(
                    matches!(err, DagPbError::MissingHash { offset: 0 }),
                    "{hex_block}: {err}"
                );
            } else {
                assert!(
                    matches!(err, DagPbError::InvalidLinkHash { offset: 4, .. }),
                    "{hex_block}: {err}"
                );
            }
        }
    }

    // test-pb.spec.js: every wrong wire type, unknown field, duplicate and
    // out-of-order field is refused with an error naming the offset.
    #[test]
    fn js_dag_pb_protobuf_strictness() {
        let base = unhex("0a050001020304");
        for wire in 0..8u8 {
            if wire == 2 {
                continue;
            }
            let mut block = base.clone();
            block[0] = (1 << 3) | wire;
            let err = decode(&block).unwrap_err();
            assert!(
                matches!(err, DagPbError::WrongWireType { message: PbMessage::PbNode, offset: 0, wire_type, .. } if wire_type == wire),
                "{err}"
            );
        }
        for field in [0u64, 3, 4, 7, 15, 16, 31, 1000, u64::MAX >> 3] {
            // Replace the one-byte key with a (possibly longer) varint key.
            let mut block = Vec::new();
            varint::write(&mut block, (field << 3) | 2);
            block.extend_from_slice(&base[1..]);
            let err = decode(&block).unwrap_err();
            assert!(
                matches!(err, DagPbError::UnknownField { message: PbMessage::PbNode, offset: 0, field_number } if field_number == field),
                "{err}"
            );
        }
        assert!(matches!(
            decode(&unhex("0a0500010203040a050001020304")).unwrap_err(),
            DagPbError::DuplicateField {
                message: PbMessage::PbNode,
                offset: 7,
                field: "Data"
            }
        ));

        let hash_link = unhex("120b0a09015500050001020304");
        for wire in 0..8u8 {
            if wire == 2 {
                continue;
            }
            let mut block = hash_link.clone();
            block[2] = (1 << 3) | wire;
            assert!(matches!(
                decode(&block).unwrap_err(),
                DagPbError::WrongWireType {
                    message: PbMessage::PbLink,
                    offset: 2,
                    field_number: 1,
                    ..
                }
            ));
        }
        let name_link = unhex("12160a090155000500010203041209736f6d65206e616d65");
        for wire in 0..8u8 {
            if wire == 2 {
                continue;
            }
            let mut block = name_link.clone();
            block[13] = (2 << 3) | wire;
            assert!(matches!(
                decode(&block).unwrap_err(),
                DagPbError::WrongWireType {
                    message: PbMessage::PbLink,
                    offset: 13,
                    field_number: 2,
                    ..
                }
            ));
        }
        let tsize_link = unhex("120e0a0901550005000102030418f207");
        for wire in 1..8u8 {
            let mut block = tsize_link.clone();
            block[13] = (3 << 3) | wire;
            assert!(matches!(
                decode(&block).unwrap_err(),
                DagPbError::WrongWireType {
                    message: PbMessage::PbLink,
                    offset: 13,
                    field_number: 3,
                    expected: 0,
                    ..
                }
            ));
        }
        for field in [0u8, 4, 5, 15] {
            let mut block = hash_link.clone();
            block[2] = (field << 3) | 2;
            assert!(matches!(
                decode(&block).unwrap_err(),
                DagPbError::UnknownField {
                    message: PbMessage::PbLink,
                    offset: 2,
                    ..
                }
            ));
        }
        let cases: [(&str, DagPbError); 6] = [
            (
                "120d12000a09015500050001020304",
                DagPbError::LinkFieldOrder {
                    offset: 4,
                    found: "Hash",
                    after: "Name",
                },
            ),
            (
                "120e18f2070a09015500050001020304",
                DagPbError::LinkFieldOrder {
                    offset: 5,
                    found: "Hash",
                    after: "Tsize",
                },
            ),
            (
                "120518f2071200",
                DagPbError::LinkFieldOrder {
                    offset: 5,
                    found: "Name",
                    after: "Tsize",
                },
            ),
            (
                "12160a090155000500010203040a09015500050001020304",
                DagPbError::DuplicateField {
                    message: PbMessage::PbLink,
                    offset: 13,
                    field: "Hash",
                },
            ),
            (
                "12210a090155000500010203041209736f6d65206e616d651209736f6d65206e616d65",
                DagPbError::DuplicateField {
                    message: PbMessage::PbLink,
                    offset: 24,
                    field: "Name",
                },
            ),
            (
                "12110a0901550005000102030418f20718f207",
                DagPbError::DuplicateField {
                    message: PbMessage::PbLink,
                    offset: 16,
                    field: "Tsize",
                },
            ),
        ];
        for (hex_block, want) in cases {
            assert_eq!(decode(&unhex(hex_block)).unwrap_err(), want, "{hex_block}");
        }
    }

    // test-basics.spec.js: Data before Links decodes (and re-encodes in the
    // canonical order); Links, Data, Links is refused.
    #[test]
    fn data_before_links_accepted_interleaving_refused() {
        let out_of_order = unhex(
            "0a040802180612240a221220cf92fdefcdc34cac009c8b05eb662be0618db9de55ecd42785e9ec6712f8df6512240a221220cf92fdefcdc34cac009c8b05eb662be0618db9de55ecd42785e9ec6712f8df65",
        );
        let node = decode(&out_of_order).unwrap();
        assert_eq!(node.links.len(), 2);
        assert_eq!(node.data.as_deref(), Some(&[0x08, 0x02, 0x18, 0x06][..]));
        let canonical = encode(&node);
        assert_ne!(canonical, out_of_order);
        assert_eq!(canonical.len(), out_of_order.len());
        assert_eq!(decode(&canonical).unwrap(), node);

        let interleaved = unhex(
            "12240a221220cf92fdefcdc34cac009c8b05eb662be0618db9de55ecd42785e9ec6712f8df650a040802180612240a221220cf92fdefcdc34cac009c8b05eb662be0618db9de55ecd42785e9ec6712f8df65",
        );
        assert_eq!(
            decode(&interleaved).unwrap_err(),
            DagPbError::InterleavedLinks { offset: 44 }
        );
    }

    // A real go-ipfs file root (7 CIDv0 links, unnamed) from test-basics.spec.js,
    // whose CIDv0 is known; checks hashing, v0 parsing and links().
    #[test]
    fn go_ipfs_block_with_unnamed_links() {
        let block = unhex(
            "122b0a2212203f29086b59b9e046b362b4b19c9371e834a9f5a80597af83be6d8b7d1a5ad33b120018aed4e015122b0a221220ae1a5afd7c770507dddf17f92bba7a326974af8ae5277c198cf13206373f7263120018aed4e015122b0a22122022ab2ebf9c3523077bd6a171d516ea0e1be1beb132d853778bcc62cd208e77f1120018aed4e015122b0a22122040a77fe7bc69bbef2491f7633b7c462d0bce968868f88e2cbcaae9d0996997e8120018aed4e015122b0a2212206ae1979b14dd43966b0241ebe80ac2a04ad48959078dc5affa12860648356ef6120018aed4e015122b0a221220a957d1f89eb9a861593bfcd19e0637b5c957699417e2b7f23c88653a240836c4120018aed4e015122b0a221220345f9c2137a2cd76d7b876af4bfecd01f80b7dd125f375cb0d56f8a2f96de2c31200189bfec10f0a2b080218cbc1819201208080e015208080e015208080e015208080e015208080e015208080e01520cbc1c10f",
        );
        let v0: ContentId = "QmQqy2SiEkKgr2cw5UbQ93TtLKEMsD8TdcWggR8q9JabjX"
            .parse()
            .unwrap();
        assert!(v0.key().matches(&block));
        let node = decode(&block).unwrap();
        assert_eq!(encode(&node), block);
        let expected = [
            ("QmSbCgdsX12C4KDw3PDmpBN9iCzS87a5DjgSCoW9esqzXk", 45623854),
            ("Qma4GxWNhywSvWFzPKtEswPGqeZ9mLs2Kt76JuBq9g3fi2", 45623854),
            ("QmQfyxyys7a1e3mpz9XsntSsTGc8VgpjPj5BF1a1CGdGNc", 45623854),
            ("QmSh2wTTZT4N8fuSeCFw7wterzdqbE93j1XDhfN3vQHzDV", 45623854),
            ("QmVXsSVjwxMsCwKRCUxEkGb4f4B98gXVy3ih3v4otvcURK", 45623854),
            ("QmZjhH97MEYwQXzCqSQbdjGDhXWuwW4RyikR24pNqytWLj", 45623854),
            ("QmRs6U5YirCqC7taTynz3x2GNaHJZ3jDvMVAzaiXppwmNJ", 32538395),
        ];
        assert_eq!(node.links.len(), expected.len());
        for (link, (cid, tsize)) in node.links.iter().zip(expected) {
            assert_eq!(link.cid().unwrap().to_string(), cid);
            assert_eq!(link.name.as_deref(), Some(&b""[..]));
            assert_eq!(link.tsize, Some(tsize));
        }
        let ids = links(&block).unwrap();
        assert_eq!(ids.len(), 7);
        assert_eq!(
            ids[6].to_string(),
            "QmRs6U5YirCqC7taTynz3x2GNaHJZ3jDvMVAzaiXppwmNJ"
        );
        assert_eq!(ids[0].codec(), CODEC_DAG_PB);
        assert_eq!(ids[0].version(), 0);
    }

    #[test]
    fn go_ipfs_block_with_named_links() {
        let block = unhex(
            "12390a221220b4397c02da5513563d33eef894bf68f2ccdf1bdfc14a976956ab3d1c72f735a0120e617564696f5f6f6e6c792e6d346118cda88f0b12310a221220025c13fcd1a885df444f64a4a82a26aea867b1148c68cb671e83589f971149321208636861742e74787418e40712340a2212205d44a305b9b328ab80451d0daa72a12a7bf2763c5f8bbe327597a31ee40d1e48120c706c61796261636b2e6d3375187412360a2212202539ed6e85f2a6f9097db9d76cffd49bf3042eb2e3e8e9af4a3ce842d49dea22120a7a6f6f6d5f302e6d70341897fb8592010a020801",
        );
        let node = decode(&block).unwrap();
        assert_eq!(encode(&node), block);
        let names: Vec<&[u8]> = node
            .links
            .iter()
            .map(|l| l.name.as_deref().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                &b"audio_only.m4a"[..],
                b"chat.txt",
                b"playback.m3u",
                b"zoom_0.mp4"
            ]
        );
        assert_eq!(node.links[0].tsize, Some(23319629));
        assert_eq!(
            node.links[0].cid().unwrap().to_string(),
            "QmaUAwAQJNtvUdJB42qNbTTgDpzPYD1qdsKNtctM5i7DGB"
        );
        assert_eq!(node.data.as_deref(), Some(&[0x08, 0x01][..]));
    }

    // Spec "Zero-length blocks": the empty block is a valid node.
    #[test]
    fn zero_length_block_is_valid() {
        assert_eq!(decode(&[]).unwrap(), PbNode::default());
        let v1: ContentId = "bafybeihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
            .parse()
            .unwrap();
        let v0: ContentId = "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n"
            .parse()
            .unwrap();
        assert!(v1.key().matches(&[]) && v0.key().matches(&[]));
        assert_eq!(v1.key(), v0.key());
    }

    #[test]
    fn unsupported_link_cids_are_named_in_hex() {
        // identity-hash link: valid dag-pb, but not a block we can fetch.
        let block = unhex("120b0a09015500050001020304");
        assert!(decode(&block).is_ok());
        match links(&block).unwrap_err() {
            DagPbError::UnsupportedLinkCid {
                index: 0,
                offset: 4,
                hash_hex,
                source: CidParseError::UnsupportedHash { code: 0, .. },
            } => assert_eq!(hash_hex, ACID),
            other => panic!("unexpected {other}"),
        }
        // dag-cbor link.
        let cbor = {
            let mut b = vec![0x01, 0x71, 0x12, 0x20];
            b.extend_from_slice(&[9u8; 32]);
            b
        };
        let node = PbNode {
            links: vec![PbLink {
                hash: cbor.clone(),
                name: None,
                tsize: None,
            }],
            data: None,
        };
        let err = links(&encode(&node)).unwrap_err();
        assert!(err.to_string().contains(&hex::encode(&cbor)), "{err}");
        assert!(matches!(
            err,
            DagPbError::UnsupportedLinkCid {
                source: CidParseError::UnsupportedCodec { codec: 0x71, .. },
                ..
            }
        ));
    }

    #[test]
    fn link_cid_with_trailing_bytes_is_refused() {
        let id = ContentId::from_key(
            CODEC_RAW,
            crate::cid::BlockKey {
                kind: HashKind::Sha2_256,
                digest: HashKind::Sha2_256.digest(b"x"),
            },
        );
        let mut hash = id.to_bytes();
        assert_eq!(
            PbLink {
                hash: hash.clone(),
                name: None,
                tsize: None
            }
            .cid()
            .unwrap(),
            id
        );
        hash.push(0);
        assert!(
            PbLink {
                hash: hash.clone(),
                name: None,
                tsize: None
            }
            .cid()
            .is_err()
        );
        let node = PbNode {
            links: vec![PbLink {
                hash,
                name: None,
                tsize: None,
            }],
            data: None,
        };
        assert!(matches!(
            decode(&encode(&node)).unwrap_err(),
            DagPbError::InvalidLinkHash { .. }
        ));
    }

    #[test]
    fn varints_are_canonical_and_bounded() {
        // Non-minimal length of Data (0x85 0x00 == 5).
        assert_eq!(
            decode(&unhex("0a85000001020304")).unwrap_err(),
            DagPbError::Varint {
                source: varint::VarintError::NotMinimal { offset: 1 }
            }
        );
        // Tsize with an 11-byte varint / bit 64 set.
        assert_eq!(
            decode(&unhex("12160a0901550005000102030418ffffffffffffffffff7f")).unwrap_err(),
            DagPbError::Varint {
                source: varint::VarintError::Overflow { offset: 14 }
            }
        );
        assert_eq!(
            decode(&unhex("12160a0901550005000102030418ffffffffffffffffff02")).unwrap_err(),
            DagPbError::Varint {
                source: varint::VarintError::Overflow { offset: 14 }
            }
        );
        // u64::MAX as Tsize is fine.
        let node = PbNode {
            links: vec![link(ACID, None, Some(u64::MAX))],
            data: None,
        };
        assert_eq!(decode(&encode(&node)).unwrap(), node);
        // Truncated inside a link names the absolute offset.
        assert_eq!(
            decode(&unhex("120b0a0a015500050001020304")).unwrap_err(),
            DagPbError::Truncated {
                message: PbMessage::PbLink,
                offset: 3,
                len_bytes: 10,
                available_bytes: 9
            }
        );
        assert_eq!(
            decode(&unhex("0a05000102")).unwrap_err(),
            DagPbError::Truncated {
                message: PbMessage::PbNode,
                offset: 1,
                len_bytes: 5,
                available_bytes: 3
            }
        );
        assert_eq!(
            decode(&unhex("0a")).unwrap_err(),
            DagPbError::Varint {
                source: varint::VarintError::Truncated { offset: 1 }
            }
        );
        for value in [
            0,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u64::from(u32::MAX),
            u64::MAX >> 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            varint::write(&mut out, value);
            assert_eq!(out.len(), varint::len(value));
            let (buf, len) = varint::encode(value);
            assert_eq!(&buf[..len], &out[..]);
            assert_eq!(varint::read(&out, 0).unwrap(), (value, out.len()));
        }
    }

    #[test]
    fn oversized_block_is_refused() {
        let big = vec![0u8; BLOCK_SIZE_BYTES_MAX as usize + 1];
        assert!(matches!(
            decode(&big).unwrap_err(),
            DagPbError::BlockTooLarge { .. }
        ));
    }

    #[test]
    fn cid_byte_len_matches_real_cids() {
        let v1 = ContentId::raw_blake3_of(b"abc");
        let mut bytes = v1.to_bytes();
        assert_eq!(cid_byte_len(&bytes), Some(36));
        bytes.extend_from_slice(b"trailing");
        assert_eq!(cid_byte_len(&bytes), Some(36));
        let v0: ContentId = "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n"
            .parse()
            .unwrap();
        assert_eq!(cid_byte_len(&v0.to_bytes()), Some(34));
        assert_eq!(cid_byte_len(&v0.to_bytes()[..33]), None);
        assert_eq!(cid_byte_len(&unhex(ACID)), Some(9));
        assert_eq!(cid_byte_len(&unhex("0255000100")), None); // version 2
        assert_eq!(cid_byte_len(&unhex("01d5000100")), None); // codec varint 0xd5 0x00 is not minimal
        assert_eq!(cid_byte_len(&[]), None);
    }
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Random bytes and random mutations of valid blocks never panic, and
    /// whatever decodes re-encodes to the same bytes (the decoder accepts
    /// only canonical input, except Data placed before the links).
    #[test]
    fn garbage_never_panics_and_accepted_input_is_canonical() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let seeds: Vec<Vec<u8>> = vec![
            unhex("12160a090155000500010203041209736f6d65206e616d65"),
            unhex("12140a0901550005000102030418ffffffffffffff0f0a050001020304"),
            encode(&PbNode {
                links: vec![
                    PbLink {
                        hash: ContentId::raw_blake3_of(b"a").to_bytes(),
                        name: Some(b"a".to_vec()),
                        tsize: Some(1),
                    },
                    PbLink {
                        hash: ContentId::raw_blake3_of(b"b").to_bytes(),
                        name: None,
                        tsize: Some(300),
                    },
                ],
                data: Some(vec![8, 2, 24, 2]),
            }),
        ];
        let mut accepted = 0;
        for round in 0..20_000u32 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = (rng.next() % 64) as usize;
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                let mut b = seeds[(rng.next() % seeds.len() as u64) as usize].clone();
                for _ in 0..=(rng.next() % 3) {
                    let i = (rng.next() % b.len() as u64) as usize;
                    match rng.next() % 3 {
                        0 => b[i] = rng.next() as u8,
                        1 => b.truncate(i),
                        _ => b.insert(i, rng.next() as u8),
                    }
                    if b.is_empty() {
                        break;
                    }
                }
                b
            };
            let _ = links(&bytes);
            if let Ok(node) = decode(&bytes) {
                accepted += 1;
                let again = encode(&node);
                let data_first = bytes.first() == Some(&0x0a) && !node.links.is_empty();
                if !data_first {
                    assert_eq!(again, bytes, "non-canonical input accepted");
                }
                assert_eq!(decode(&again).unwrap(), node);
            }
        }
        assert!(
            accepted > 100,
            "mutations should sometimes stay valid: {accepted}"
        );
    }
}
