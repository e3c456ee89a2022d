//! Content identifiers exactly as IPFS tools spell them.
//!
//! Our blobs are named `CIDv1(raw 0x55, multihash(BLAKE3 0x1e, 32 bytes))` in
//! lower-case base32 (`bafkr4i…`), so `ipfs cid format`, Helia and every
//! trustless-gateway client name the same bytes the same way. The store keys
//! blocks by *multihash* (as IPFS blockstores do), so the codec is carried
//! alongside but is not part of identity; sha2-256 is accepted too because
//! almost all IPFS content uses it.

use std::fmt;
use std::str::FromStr;

use cid::multibase::Base;

/// Multicodec `raw`: the block is the bytes themselves.
pub const CODEC_RAW: u64 = 0x55;
/// Multicodec `dag-pb`: a UnixFS/Protobuf node.
pub const CODEC_DAG_PB: u64 = 0x70;

/// The hash functions a block key may use. Both produce 32-byte digests, so a
/// key is always 33 bytes in memory and on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashKind {
    Blake3,
    Sha2_256,
}

impl HashKind {
    /// The multihash code of this hash function.
    pub const fn multihash_code(self) -> u64 {
        match self {
            HashKind::Blake3 => 0x1e,
            HashKind::Sha2_256 => 0x12,
        }
    }

    /// One byte used in on-disk records (stable: never renumber).
    pub const fn disk_byte(self) -> u8 {
        match self {
            HashKind::Blake3 => 1,
            HashKind::Sha2_256 => 2,
        }
    }

    pub const fn from_disk_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(HashKind::Blake3),
            2 => Some(HashKind::Sha2_256),
            _ => None,
        }
    }

    pub const fn from_multihash_code(code: u64) -> Option<Self> {
        match code {
            0x1e => Some(HashKind::Blake3),
            0x12 => Some(HashKind::Sha2_256),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            HashKind::Blake3 => "blake3",
            HashKind::Sha2_256 => "sha2-256",
        }
    }

    /// Hash `data` with this function.
    pub fn digest(self, data: &[u8]) -> [u8; 32] {
        match self {
            HashKind::Blake3 => *blake3::hash(data).as_bytes(),
            HashKind::Sha2_256 => {
                use sha2::Digest;
                sha2::Sha256::digest(data).into()
            }
        }
    }
}

/// What a block is keyed by: hash function + 32-byte digest (a multihash).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey {
    pub kind: HashKind,
    pub digest: [u8; 32],
}

impl BlockKey {
    pub const fn blake3(digest: [u8; 32]) -> Self {
        Self {
            kind: HashKind::Blake3,
            digest,
        }
    }

    /// Lower-case hex of the digest prefixed by the hash name; used for file
    /// names of large blobs so an operator can find them by eye.
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.kind.name(), hex::encode(self.digest))
    }

    /// True when `data` hashes to this key.
    pub fn matches(&self, data: &[u8]) -> bool {
        self.kind.digest(data) == self.digest
    }
}

impl fmt::Debug for BlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.name(), hex::encode(self.digest))
    }
}

/// Why a string or byte sequence is not a CID we can serve.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidParseError {
    #[error("malformed cid {input:?}: {reason}")]
    Malformed { input: String, reason: String },
    #[error(
        "cid {input:?} uses multihash code 0x{code:x}; supported: 0x1e (blake3), 0x12 (sha2-256)"
    )]
    UnsupportedHash { input: String, code: u64 },
    #[error("cid {input:?} has a {size}-byte digest; expected 32")]
    BadDigestSize { input: String, size: u8 },
    #[error("cid {input:?} uses codec 0x{codec:x}; supported: 0x55 (raw), 0x70 (dag-pb)")]
    UnsupportedCodec { input: String, codec: u64 },
}

/// A parsed, supported CID (v0 or v1; raw or dag-pb; BLAKE3 or sha2-256).
///
/// Kept small (no 64-byte multihash buffer) because ids travel inside every
/// error and index listing; the `cid` crate's type is rebuilt on demand.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentId {
    v0: bool,
    codec: u64,
    key: BlockKey,
}

impl ContentId {
    /// `CIDv1(raw, blake3(data))`: the id of a blob we store.
    pub fn raw_blake3_of(data: &[u8]) -> Self {
        Self::from_key(CODEC_RAW, BlockKey::blake3(*blake3::hash(data).as_bytes()))
    }

    /// A CIDv1 with the given codec over an existing key.
    pub fn from_key(codec: u64, key: BlockKey) -> Self {
        Self {
            v0: false,
            codec,
            key,
        }
    }

    /// A CIDv0 (`Qm…`, what plain `ipfs add` prints): always dag-pb and
    /// sha2-256, since a v0 id is a bare multihash with no room for a codec.
    /// `None` for a key of any other hash.
    pub fn from_key_v0(key: BlockKey) -> Option<Self> {
        (key.kind == HashKind::Sha2_256).then_some(Self {
            v0: true,
            codec: CODEC_DAG_PB,
            key,
        })
    }

    fn inner(&self) -> cid::Cid {
        let mh =
            cid::multihash::Multihash::<64>::wrap(self.key.kind.multihash_code(), &self.key.digest)
                .expect("a 32-byte digest always fits a 64-byte multihash");
        if self.v0 {
            cid::Cid::new_v0(mh).expect("v0 ids are only built from sha2-256 dag-pb")
        } else {
            cid::Cid::new_v1(self.codec, mh)
        }
    }

    pub fn key(&self) -> BlockKey {
        self.key
    }

    pub fn codec(&self) -> u64 {
        self.codec
    }

    /// 0 or 1.
    pub fn version(&self) -> u64 {
        if self.v0 { 0 } else { 1 }
    }

    /// The same content named as CIDv1 (a no-op for v1 ids).
    pub fn to_v1(&self) -> Self {
        Self { v0: false, ..*self }
    }

    /// Binary form (as stored in CAR files and dag-pb links).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.inner().to_bytes()
    }

    /// Parse the binary form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CidParseError> {
        let display = hex::encode(bytes);
        let inner = cid::Cid::try_from(bytes).map_err(|e| CidParseError::Malformed {
            input: display.clone(),
            reason: e.to_string(),
        })?;
        // The cid crate reads one CID off the front and ignores the rest.
        if inner.encoded_len() != bytes.len() {
            return Err(CidParseError::Malformed {
                reason: format!(
                    "{} bytes after the cid's {} bytes",
                    bytes.len() - inner.encoded_len(),
                    inner.encoded_len()
                ),
                input: display,
            });
        }
        Self::check(inner, display)
    }

    fn check(inner: cid::Cid, input: String) -> Result<Self, CidParseError> {
        let mh = inner.hash();
        let kind = HashKind::from_multihash_code(mh.code()).ok_or_else(|| {
            CidParseError::UnsupportedHash {
                input: input.clone(),
                code: mh.code(),
            }
        })?;
        let digest: [u8; 32] =
            mh.digest()
                .try_into()
                .map_err(|_| CidParseError::BadDigestSize {
                    input: input.clone(),
                    size: mh.size(),
                })?;
        if inner.codec() != CODEC_RAW && inner.codec() != CODEC_DAG_PB {
            return Err(CidParseError::UnsupportedCodec {
                input,
                codec: inner.codec(),
            });
        }
        Ok(Self {
            v0: inner.version() == cid::Version::V0,
            codec: inner.codec(),
            key: BlockKey { kind, digest },
        })
    }
}

impl FromStr for ContentId {
    type Err = CidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The cid crate strips a leading "/ipfs/"; we do not want paths to
        // parse as ids, so reject anything that is not a bare id first.
        if s.is_empty() || s.len() > 512 || !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(CidParseError::Malformed {
                input: s.chars().take(128).collect(),
                reason: "expected a bare base32 (b…) or base58 (Qm…) cid".into(),
            });
        }
        let inner = cid::Cid::try_from(s).map_err(|e| CidParseError::Malformed {
            input: s.to_string(),
            reason: e.to_string(),
        })?;
        Self::check(inner, s.to_string())
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner();
        if self.v0 {
            return write!(f, "{inner}");
        }
        match inner.to_string_of_base(Base::Base32Lower) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "{inner}"),
        }
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Golden: `ipfs cid format`-equivalent computed with the Python `blake3`
    // package + multiformats rules: base32lower(0x01 0x55 0x1e 0x20 || blake3("hello world")).
    #[test]
    fn raw_blake3_matches_ipfs_spelling() {
        let id = ContentId::raw_blake3_of(b"hello world");
        let s = id.to_string();
        assert!(s.starts_with("bafkr4i"), "{s}");
        let mut bytes = vec![0x01, 0x55, 0x1e, 0x20];
        bytes.extend_from_slice(blake3::hash(b"hello world").as_bytes());
        assert_eq!(id.to_bytes(), bytes);
        let parsed: ContentId = s.parse().unwrap();
        assert_eq!(parsed, id);
        assert_eq!(parsed.key().kind, HashKind::Blake3);
    }

    #[test]
    fn binary_cids_with_trailing_bytes_are_refused() {
        let id = ContentId::raw_blake3_of(b"x");
        let mut bytes = id.to_bytes();
        assert_eq!(ContentId::from_bytes(&bytes).unwrap(), id);
        bytes.push(0);
        let err = ContentId::from_bytes(&bytes).unwrap_err();
        assert!(err.to_string().contains("1 bytes after"), "{err}");
    }

    #[test]
    fn parses_cid_v0_and_sha256() {
        // The well-known CIDv0 of the empty UnixFS directory.
        let v0: ContentId = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
            .parse()
            .unwrap();
        assert_eq!(v0.version(), 0);
        assert_eq!(v0.codec(), CODEC_DAG_PB);
        assert_eq!(v0.key().kind, HashKind::Sha2_256);
        assert_eq!(
            v0.to_string(),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
        );
    }

    // Building a v0 id from a key gives what parsing its text gives: the
    // empty UnixFS directory's dag-pb block `0a 02 08 01`.
    #[test]
    fn v0_from_key_prints_and_encodes_as_ipfs_does() {
        let key = BlockKey {
            kind: HashKind::Sha2_256,
            digest: HashKind::Sha2_256.digest(&[0x0a, 0x02, 0x08, 0x01]),
        };
        let v0 = ContentId::from_key_v0(key).unwrap();
        assert_eq!(
            v0.to_string(),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
        );
        assert_eq!((v0.version(), v0.codec()), (0, CODEC_DAG_PB));
        let mut bytes = vec![0x12, 0x20];
        bytes.extend_from_slice(&key.digest);
        assert_eq!(v0.to_bytes(), bytes);
        assert_eq!(ContentId::from_bytes(&bytes).unwrap(), v0);
        assert_eq!(v0.to_v1(), ContentId::from_key(CODEC_DAG_PB, key));
        assert_eq!(
            ContentId::from_key_v0(BlockKey::blake3(key.digest)),
            None,
            "CIDv0 cannot name a BLAKE3 key"
        );
    }

    #[test]
    fn rejects_malformed_and_unsupported() {
        for bad in ["", "hello", "/ipfs/bafy", "bafkr4i!!", "b"] {
            assert!(bad.parse::<ContentId>().is_err(), "{bad}");
        }
        // identity multihash (0x00) is parseable as a CID but not supported.
        let mh = cid::multihash::Multihash::<64>::wrap(0x00, b"abc").unwrap();
        let s = cid::Cid::new_v1(CODEC_RAW, mh).to_string();
        assert!(matches!(
            s.parse::<ContentId>(),
            Err(CidParseError::UnsupportedHash { code: 0, .. })
        ));
        // dag-cbor codec is not served.
        let mh = cid::multihash::Multihash::<64>::wrap(0x1e, &[7u8; 32]).unwrap();
        let s = cid::Cid::new_v1(0x71, mh).to_string();
        assert!(matches!(
            s.parse::<ContentId>(),
            Err(CidParseError::UnsupportedCodec { codec: 0x71, .. })
        ));
    }

    #[test]
    fn binary_round_trip() {
        let id = ContentId::raw_blake3_of(b"x");
        assert_eq!(ContentId::from_bytes(&id.to_bytes()).unwrap(), id);
        assert!(ContentId::from_bytes(&[0x01, 0x55]).is_err());
    }

    #[test]
    fn sha256_digest_is_real() {
        // FIPS 180-2 test vector "abc".
        assert_eq!(
            hex::encode(HashKind::Sha2_256.digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
