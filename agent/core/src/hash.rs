//! BLAKE3-256 digests with one-byte domain separation.
//!
//! The wire rules say every structured hash is `BLAKE3(tag || data)` with the
//! tag taken from [`crate::tags`]. This module is the only place that builds
//! such inputs, so a caller cannot forget the prefix or put it in the wrong
//! place: [`hash_tagged`] and [`TaggedHasher`] take a [`DomainTag`], never a
//! raw byte. [`blake3_256`] (no tag) exists for the few places where the input
//! is opaque content rather than a structure of ours: blob content ids and
//! the RFC 9162 empty-tree root.

use std::fmt;
use std::str::FromStr;

use crate::encoding::{Encode, EncodeError, Writer};
use crate::tags::DomainTag;

/// A 32-byte BLAKE3 digest. Ordering is byte-wise, which is what sorted
/// on-disk indexes and canonical sets rely on.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    /// Digest length in bytes.
    pub const LEN: usize = 32;
    /// All-zero value, used as "no previous" (genesis parent, PoH chain start).
    pub const ZERO: Hash32 = Hash32([0; 32]);

    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Hash32(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub const fn to_bytes(self) -> [u8; 32] {
        self.0
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash32({})", self.to_hex())
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Why a string is not a hex-encoded [`Hash32`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseHashError {
    #[error("hash must be 64 hex digits, got {len} bytes")]
    Length { len: usize },
    #[error("invalid hex digit {found:?} at position {position} in hash")]
    InvalidDigit { found: char, position: usize },
}

impl FromStr for Hash32 {
    type Err = ParseHashError;

    /// Accepts upper- or lower-case hex; [`Display`](fmt::Display) always
    /// writes lower-case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 2 * Hash32::LEN {
            return Err(ParseHashError::Length { len: s.len() });
        }
        let mut out = [0u8; 32];
        // hex reports a bad byte, which for a multi-byte character is not
        // what the user typed; report the character at that position instead.
        hex::decode_to_slice(s, &mut out).map_err(|_| {
            let (position, found) = s
                .char_indices()
                .find(|(_, c)| !c.is_ascii_hexdigit())
                .unwrap_or((0, '?'));
            ParseHashError::InvalidDigit { found, position }
        })?;
        Ok(Hash32(out))
    }
}

impl AsRef<[u8]> for Hash32 {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<[u8; 32]> for Hash32 {
    fn from(bytes: [u8; 32]) -> Self {
        Hash32(bytes)
    }
}

impl From<Hash32> for [u8; 32] {
    fn from(h: Hash32) -> Self {
        h.0
    }
}

impl From<blake3::Hash> for Hash32 {
    fn from(h: blake3::Hash) -> Self {
        Hash32(*h.as_bytes())
    }
}

/// Plain BLAKE3-256 of `data`, with no domain tag. Use only for opaque content
/// (blob bytes named by a CID) and the RFC 9162 empty-tree root; anything with
/// structure goes through [`hash_tagged`].
pub fn blake3_256(data: &[u8]) -> Hash32 {
    blake3::hash(data).into()
}

/// `BLAKE3(tag || parts[0] || parts[1] || ...)`.
///
/// The parts are concatenated without separators, so callers must hash
/// fixed-width fields or canonically encoded values (see [`hash_encoded`]),
/// never two variable-length strings side by side.
pub fn hash_tagged(tag: DomainTag, parts: &[&[u8]]) -> Hash32 {
    let mut h = TaggedHasher::new(tag);
    for part in parts {
        h.update(part);
    }
    h.finalize()
}

/// `BLAKE3(tag || canonical encoding of value)`: the hash of a header, frame
/// or record. Fails only if the value breaks an encoding bound.
pub fn hash_encoded<T: Encode + ?Sized>(tag: DomainTag, value: &T) -> Result<Hash32, EncodeError> {
    let mut w = Writer::new();
    value.encode(&mut w);
    let bytes = w.finish()?;
    Ok(hash_tagged(tag, &[&bytes]))
}

/// Incremental form of [`hash_tagged`], for inputs that arrive in pieces.
/// The tag is written by the constructor, so it cannot be skipped.
#[derive(Debug, Clone)]
pub struct TaggedHasher {
    inner: blake3::Hasher,
    tag: DomainTag,
}

impl TaggedHasher {
    pub fn new(tag: DomainTag) -> Self {
        let mut inner = blake3::Hasher::new();
        inner.update(&[tag.byte()]);
        TaggedHasher { inner, tag }
    }

    pub fn tag(&self) -> DomainTag {
        self.tag
    }

    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.inner.update(data);
        self
    }

    /// The digest of everything written so far; the hasher stays usable.
    pub fn finalize(&self) -> Hash32 {
        self.inner.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash32 {
        s.parse().expect("test vector is valid hex")
    }

    // Golden vectors produced by tests/vectors/hash_vectors.py (PyPI `blake3`
    // 1.0.11, plain byte concatenation of tag and parts). The empty-input and
    // single-zero-byte values also match the official BLAKE3 test_vectors.json
    // (input_len 0 and 1).
    #[test]
    fn plain_blake3_matches_reference() {
        assert_eq!(
            blake3_256(b""),
            h("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262")
        );
        assert_eq!(
            blake3_256(b"abc"),
            h("6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85")
        );
    }

    #[test]
    fn tagged_hash_matches_reference() {
        assert_eq!(
            hash_tagged(DomainTag::MerkleLeaf, &[]),
            h("2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213")
        );
        assert_eq!(
            hash_tagged(DomainTag::BlockHeader, &[b"hello"]),
            h("b41d70c5c96504833c035ac3d28a5e033f68aa0f1de9cd2e7966db0b43291a1e")
        );
        assert_eq!(
            hash_tagged(DomainTag::PohTick, &[b"seed", &[0u8; 32]]),
            h("cd718376199f7b37750294c71878194b63893f778d0b1a1f1e76a442d73365c6")
        );
        // Longer than one 1024-byte BLAKE3 chunk, so the tree mode is exercised.
        let long: Vec<u8> = (0..1025u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            hash_tagged(DomainTag::DaShard, &[&long]),
            h("01912a2e368fa49124ba6647d0ba83a62219745d1559eaeb59678af506da7358")
        );
    }

    #[test]
    fn incremental_equals_one_shot_for_any_split() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let want = hash_tagged(DomainTag::BpciFrame, &[&data]);
        for split in [0, 1, 63, 64, 1023, 1024, 1025, 2999, 3000] {
            let mut hasher = TaggedHasher::new(DomainTag::BpciFrame);
            hasher.update(&data[..split]).update(&data[split..]);
            assert_eq!(hasher.finalize(), want, "split at {split}");
        }
    }

    #[test]
    fn tags_separate_domains() {
        let a = hash_tagged(DomainTag::MerkleLeaf, &[b"x"]);
        let b = hash_tagged(DomainTag::MerkleNode, &[b"x"]);
        assert_ne!(a, b);
        assert_ne!(a, blake3_256(b"x"));
    }

    #[test]
    fn hash_encoded_hashes_the_canonical_bytes() {
        let value: (u32, Vec<u8>) = (7, b"abc".to_vec());
        let bytes = crate::encoding::Encode::to_canonical_bytes(&value).expect("encodes");
        assert_eq!(
            hash_encoded(DomainTag::DocklockRecord, &value).expect("encodes"),
            hash_tagged(DomainTag::DocklockRecord, &[&bytes])
        );
    }

    #[test]
    fn hex_round_trip_and_formatting() {
        let hash = blake3_256(b"abc");
        let text = hash.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<Hash32>(), Ok(hash));
        assert_eq!(text.to_uppercase().parse::<Hash32>(), Ok(hash));
        assert_eq!(format!("{hash:?}"), format!("Hash32({text})"));
    }

    #[test]
    fn hex_parse_errors_name_the_problem() {
        assert_eq!(
            "abcd".parse::<Hash32>(),
            Err(ParseHashError::Length { len: 4 })
        );
        let mut bad = "0".repeat(64);
        bad.replace_range(5..6, "g");
        let err = bad.parse::<Hash32>().unwrap_err();
        assert_eq!(
            err,
            ParseHashError::InvalidDigit {
                found: 'g',
                position: 5
            }
        );
        assert_eq!(
            err.to_string(),
            "invalid hex digit 'g' at position 5 in hash"
        );
        // 62 ASCII digits plus one two-byte character: right byte length.
        let multibyte = format!("{}é", "0".repeat(62));
        assert_eq!(multibyte.len(), 64);
        assert!(matches!(
            multibyte.parse::<Hash32>(),
            Err(ParseHashError::InvalidDigit {
                found: 'é',
                position: 62
            })
        ));
    }

    #[test]
    fn ordering_is_bytewise() {
        let mut lo = [0u8; 32];
        let mut hi = [0u8; 32];
        lo[0] = 1;
        hi[31] = 0xff;
        hi[0] = 1;
        assert!(Hash32(lo) < Hash32(hi));
        assert!(Hash32::ZERO < Hash32(lo));
    }
}
