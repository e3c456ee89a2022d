//! The canonical binary encoding: the only byte form of anything hashed or
//! signed.
//!
//! Signatures and hashes are over bytes, so two nodes agree on a value only if
//! they agree on its bytes. JSON (key order, number forms, escapes) and most
//! serde formats (varints with several valid forms, maps in hash order) give
//! one value many encodings; this one gives exactly one, and the decoder
//! accepts exactly that one:
//!
//! - fields in declaration order, no names, no padding;
//! - integers little-endian and fixed width (`u8 u16 u32 u64 u128 i32 i64`;
//!   never `usize`, whose width depends on the machine);
//! - `bool` is one byte, 0 or 1 — any other value is an error;
//! - byte strings and UTF-8 strings: `u32` length, then the bytes; the length
//!   must be within [`ENCODING_BYTES_LEN_MAX`] (or a tighter per-field bound)
//!   and within the remaining input, checked before anything is allocated;
//! - `[u8; N]` and [`Hash32`]: the raw bytes, no prefix;
//! - `Vec<T>`: `u32` count, then the elements; bounded by
//!   [`ENCODING_VEC_COUNT_MAX`] (for `Vec<u8>`: identical to a byte string);
//! - `Option<T>`: tag byte 0 (none) or 1 (some, then the value);
//! - tuples: the elements in order;
//! - top-level messages start with a version byte checked by
//!   [`decode_version`];
//! - [`Decode::from_canonical_bytes`] rejects trailing bytes.
//!
//! Since every length is a fixed-width integer there are no "overlong"
//! length forms; the only non-canonical inputs are bad tags (bool, option,
//! enum), bad UTF-8, out-of-bound lengths and trailing bytes, and each is an
//! error. The property the tests check is therefore: for any input the
//! decoder accepts, re-encoding gives back the same bytes.
//!
//! Encoding never fails for fixed-size data, but a byte string or vector
//! over its bound would produce bytes the decoder rejects, so the [`Writer`]
//! records the first bound violation and [`Writer::finish`] reports it.
//!
//! ```
//! use metanode_core::encoding::{decode_version, Decode, DecodeError, Encode, Reader, Writer};
//! use metanode_core::hash::Hash32;
//!
//! #[derive(Debug, PartialEq)]
//! struct Vote { height: u64, block: Hash32, memo: String }
//!
//! impl Encode for Vote {
//!     fn encode(&self, w: &mut Writer) {
//!         w.put_u8(1); // version
//!         self.height.encode(w);
//!         self.block.encode(w);
//!         w.put_str_bounded(&self.memo, 256);
//!     }
//! }
//!
//! impl Decode for Vote {
//!     fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
//!         decode_version(r, &[1])?;
//!         Ok(Vote {
//!             height: u64::decode(r)?,
//!             block: Hash32::decode(r)?,
//!             memo: r.read_str_bounded(256)?.to_owned(),
//!         })
//!     }
//! }
//!
//! let vote = Vote { height: 7, block: Hash32::ZERO, memo: "ok".into() };
//! let bytes = vote.to_canonical_bytes().unwrap();
//! assert_eq!(Vote::from_canonical_bytes(&bytes).unwrap(), vote);
//! ```

use crate::hash::Hash32;
use crate::limits::{ENCODING_BYTES_LEN_MAX, ENCODING_VEC_COUNT_MAX};

/// How many bytes a generic `Vec<T>` decoder may reserve up front, whatever
/// the declared count: a count is only a claim until the elements decode.
const SEQ_PREALLOC_BYTES_MAX: usize = 64 * 1024;

/// Why a value could not be encoded. Only variable-length data can fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("byte string of length {len} at offset {offset} exceeds maximum {max}")]
    LengthExceedsMax { len: usize, offset: usize, max: u32 },
    #[error("sequence of {count} elements at offset {offset} exceeds maximum {max}")]
    CountExceedsMax {
        count: usize,
        offset: usize,
        max: u32,
    },
}

/// Why bytes are not the canonical encoding of the expected value. Offsets
/// are byte positions from the start of the input given to the [`Reader`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated input: {what} at offset {offset} needs {needed} bytes, {remaining} remain")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        remaining: usize,
    },
    #[error("trailing bytes: {count} after offset {offset}")]
    TrailingBytes { count: usize, offset: usize },
    #[error("length {len} at offset {offset} exceeds maximum {max}")]
    LengthExceedsMax { len: u32, offset: usize, max: u32 },
    #[error("length {len} at offset {offset} exceeds remaining {remaining} bytes")]
    LengthExceedsRemaining {
        len: u32,
        offset: usize,
        remaining: usize,
    },
    #[error("count {count} at offset {offset} exceeds maximum {max}")]
    CountExceedsMax { count: u32, offset: usize, max: u32 },
    #[error("count {count} at offset {offset} needs at least {needed} bytes, {remaining} remain")]
    CountExceedsRemaining {
        count: u32,
        offset: usize,
        needed: u64,
        remaining: usize,
    },
    #[error("invalid bool {value} at offset {offset}: must be 0 or 1")]
    InvalidBool { value: u8, offset: usize },
    #[error("invalid option tag {value} at offset {offset}: must be 0 or 1")]
    InvalidOptionTag { value: u8, offset: usize },
    #[error("invalid utf-8 in string at offset {offset}: bad byte at offset {bad_offset}")]
    InvalidUtf8 { offset: usize, bad_offset: usize },
    #[error("unknown version {found} at offset {offset} (supported: {supported:?})")]
    UnknownVersion {
        found: u8,
        supported: &'static [u8],
        offset: usize,
    },
    /// An enum discriminant outside the defined set.
    #[error("invalid {what} tag {value} at offset {offset}")]
    InvalidTag {
        what: &'static str,
        value: u64,
        offset: usize,
    },
    /// A well-formed field whose value breaks a type invariant (e.g. a public
    /// key that is not a curve point).
    #[error("invalid {what} at offset {offset}: {reason}")]
    Invalid {
        what: &'static str,
        offset: usize,
        reason: String,
    },
}

/// Appends canonical bytes. Records the first bound violation instead of
/// panicking, so `encode` stays infallible to write and callers see the
/// error from [`Writer::finish`].
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
    error: Option<EncodeError>,
}

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }

    pub fn with_capacity(capacity_bytes: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(capacity_bytes),
            error: None,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The encoded bytes, or the first bound violation met while encoding.
    pub fn finish(self) -> Result<Vec<u8>, EncodeError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.buf),
        }
    }

    fn fail(&mut self, e: EncodeError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    pub fn put_u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn put_u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn put_u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn put_u128(&mut self, v: u128) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn put_i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn put_i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn put_bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    /// Fixed-width bytes with no length prefix (`[u8; N]`, hashes, keys).
    /// The decoder must know the width from the type.
    pub fn put_raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// `u32` length + bytes, bounded by [`ENCODING_BYTES_LEN_MAX`].
    pub fn put_bytes(&mut self, bytes: &[u8]) {
        self.put_bytes_bounded(bytes, ENCODING_BYTES_LEN_MAX);
    }

    /// Like [`Writer::put_bytes`] with a tighter bound for this field; use
    /// the same bound in the decoder. Bounds above the global one are
    /// clamped to it.
    pub fn put_bytes_bounded(&mut self, bytes: &[u8], max: u32) {
        let max = max.min(ENCODING_BYTES_LEN_MAX);
        if bytes.len() > max as usize {
            let offset = self.buf.len();
            self.fail(EncodeError::LengthExceedsMax {
                len: bytes.len(),
                offset,
                max,
            });
            return;
        }
        self.put_u32(bytes.len() as u32);
        self.buf.extend_from_slice(bytes);
    }

    /// A UTF-8 string, encoded as its bytes with a length prefix.
    pub fn put_str(&mut self, s: &str) {
        self.put_bytes(s.as_bytes());
    }

    pub fn put_str_bounded(&mut self, s: &str, max: u32) {
        self.put_bytes_bounded(s.as_bytes(), max);
    }

    /// `u32` count + elements, bounded by the element type's count bound.
    pub fn put_seq<T: Encode>(&mut self, items: &[T]) {
        self.put_seq_bounded(items, <T as Encode>::SEQ_COUNT_MAX);
    }

    /// Like [`Writer::put_seq`] with a tighter count bound for this field.
    pub fn put_seq_bounded<T: Encode>(&mut self, items: &[T], max: u32) {
        let max = max.min(<T as Encode>::SEQ_COUNT_MAX);
        if items.len() > max as usize {
            let offset = self.buf.len();
            self.fail(EncodeError::CountExceedsMax {
                count: items.len(),
                offset,
                max,
            });
            return;
        }
        self.put_u32(items.len() as u32);
        T::encode_seq(items, self);
    }
}

/// Reads canonical bytes from a borrowed buffer, tracking the offset for
/// error messages. Variable-length reads borrow from the input.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    input: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Reader { input, offset: 0 }
    }

    /// Position of the next byte to read, from the start of the input.
    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn remaining(&self) -> usize {
        self.input.len() - self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Fails if any input is left: a canonical value is the whole input.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes {
                count,
                offset: self.offset,
            }),
        }
    }

    /// The next `len` bytes; `what` names them in a truncation error.
    pub fn read_raw(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::Truncated {
                what,
                offset: self.offset,
                needed: len,
                remaining: self.remaining(),
            });
        }
        let out = &self.input[self.offset..self.offset + len];
        self.offset += len;
        Ok(out)
    }

    pub fn read_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.read_raw(N, "byte array")?);
        Ok(out)
    }

    fn read_le<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.read_raw(N, what)?);
        Ok(out)
    }

    pub fn read_u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.read_le::<1>("u8")?[0])
    }

    pub fn read_u16(&mut self) -> Result<u16, DecodeError> {
        self.read_le("u16").map(u16::from_le_bytes)
    }

    pub fn read_u32(&mut self) -> Result<u32, DecodeError> {
        self.read_le("u32").map(u32::from_le_bytes)
    }

    pub fn read_u64(&mut self) -> Result<u64, DecodeError> {
        self.read_le("u64").map(u64::from_le_bytes)
    }

    pub fn read_u128(&mut self) -> Result<u128, DecodeError> {
        self.read_le("u128").map(u128::from_le_bytes)
    }

    pub fn read_i32(&mut self) -> Result<i32, DecodeError> {
        self.read_le("i32").map(i32::from_le_bytes)
    }

    pub fn read_i64(&mut self) -> Result<i64, DecodeError> {
        self.read_le("i64").map(i64::from_le_bytes)
    }

    pub fn read_bool(&mut self) -> Result<bool, DecodeError> {
        let offset = self.offset;
        match self.read_le::<1>("bool")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::InvalidBool { value, offset }),
        }
    }

    /// A length prefix, checked against `max` and the remaining input
    /// before the caller touches (or allocates for) the body.
    fn read_len(&mut self, max: u32) -> Result<usize, DecodeError> {
        let offset = self.offset;
        let len = self.read_le::<4>("length").map(u32::from_le_bytes)?;
        if len > max {
            return Err(DecodeError::LengthExceedsMax { len, offset, max });
        }
        if len as usize > self.remaining() {
            return Err(DecodeError::LengthExceedsRemaining {
                len,
                offset,
                remaining: self.remaining(),
            });
        }
        Ok(len as usize)
    }

    /// A length-prefixed byte string, bounded by [`ENCODING_BYTES_LEN_MAX`].
    pub fn read_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        self.read_bytes_bounded(ENCODING_BYTES_LEN_MAX)
    }

    /// A length-prefixed byte string with a tighter bound for this field.
    pub fn read_bytes_bounded(&mut self, max: u32) -> Result<&'a [u8], DecodeError> {
        let len = self.read_len(max.min(ENCODING_BYTES_LEN_MAX))?;
        self.read_raw(len, "bytes")
    }

    /// A length-prefixed UTF-8 string, bounded by [`ENCODING_BYTES_LEN_MAX`].
    pub fn read_str(&mut self) -> Result<&'a str, DecodeError> {
        self.read_str_bounded(ENCODING_BYTES_LEN_MAX)
    }

    pub fn read_str_bounded(&mut self, max: u32) -> Result<&'a str, DecodeError> {
        let body_offset = self.offset + 4;
        let bytes = self.read_bytes_bounded(max)?;
        std::str::from_utf8(bytes).map_err(|e| DecodeError::InvalidUtf8 {
            offset: body_offset,
            bad_offset: body_offset + e.valid_up_to(),
        })
    }

    /// A counted sequence, bounded by the element type's count bound.
    pub fn read_seq<T: Decode>(&mut self) -> Result<Vec<T>, DecodeError> {
        self.read_seq_bounded(<T as Decode>::SEQ_COUNT_MAX)
    }

    /// A counted sequence with a tighter count bound for this field.
    pub fn read_seq_bounded<T: Decode>(&mut self, max: u32) -> Result<Vec<T>, DecodeError> {
        let max = max.min(<T as Decode>::SEQ_COUNT_MAX);
        let offset = self.offset;
        let count = self.read_le::<4>("count").map(u32::from_le_bytes)?;
        if count > max {
            return Err(DecodeError::CountExceedsMax { count, offset, max });
        }
        let needed = u64::from(count) * T::ENCODED_LEN_MIN as u64;
        if needed > self.remaining() as u64 {
            return Err(DecodeError::CountExceedsRemaining {
                count,
                offset,
                needed,
                remaining: self.remaining(),
            });
        }
        T::decode_seq(self, count as usize)
    }
}

/// Reads a version byte and fails with [`DecodeError::UnknownVersion`]
/// unless it is one of `supported`. Returns the version so the caller can
/// branch on it.
pub fn decode_version(r: &mut Reader<'_>, supported: &'static [u8]) -> Result<u8, DecodeError> {
    let offset = r.offset();
    let found = r.read_u8()?;
    if supported.contains(&found) {
        Ok(found)
    } else {
        Err(DecodeError::UnknownVersion {
            found,
            supported,
            offset,
        })
    }
}

/// A value with a canonical byte form.
pub trait Encode {
    /// Appends the canonical bytes of `self`.
    fn encode(&self, w: &mut Writer);

    /// The canonical bytes of `self`, or the bound it breaks.
    fn to_canonical_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.finish()
    }

    /// Count bound of `Vec<Self>`; `u8` overrides it so `Vec<u8>` is bounded
    /// like a byte string. Keep equal to [`Decode::SEQ_COUNT_MAX`].
    #[doc(hidden)]
    const SEQ_COUNT_MAX: u32 = ENCODING_VEC_COUNT_MAX;

    /// Element bodies of a sequence (the count is already written); `u8`
    /// overrides it with one copy.
    #[doc(hidden)]
    fn encode_seq(items: &[Self], w: &mut Writer)
    where
        Self: Sized,
    {
        for item in items {
            item.encode(w);
        }
    }
}

/// A value that can be read back from its canonical bytes, rejecting every
/// other byte string.
pub trait Decode: Sized {
    /// The fewest bytes any value of this type encodes to. `Vec<T>` decoding
    /// uses it to reject a count the remaining input cannot possibly hold.
    /// Zero is always safe (only weaker).
    const ENCODED_LEN_MIN: usize = 0;

    /// Reads one value, leaving the reader just after it.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Decodes a value that must span all of `bytes`.
    fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let value = Self::decode(&mut r)?;
        r.finish()?;
        Ok(value)
    }

    #[doc(hidden)]
    const SEQ_COUNT_MAX: u32 = ENCODING_VEC_COUNT_MAX;

    /// Element bodies of a sequence whose count was checked against the
    /// bound and the remaining input.
    #[doc(hidden)]
    fn decode_seq(r: &mut Reader<'_>, count: usize) -> Result<Vec<Self>, DecodeError> {
        let prealloc = count.min(SEQ_PREALLOC_BYTES_MAX / std::mem::size_of::<Self>().max(1));
        let mut out = Vec::with_capacity(prealloc);
        for _ in 0..count {
            out.push(Self::decode(r)?);
        }
        Ok(out)
    }
}

macro_rules! int_codec {
    ($($t:ty => $put:ident, $read:ident;)+) => {$(
        impl Encode for $t {
            fn encode(&self, w: &mut Writer) {
                w.$put(*self);
            }
        }
        impl Decode for $t {
            const ENCODED_LEN_MIN: usize = std::mem::size_of::<$t>();
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                r.$read()
            }
        }
    )+};
}

int_codec! {
    u16 => put_u16, read_u16;
    u32 => put_u32, read_u32;
    u64 => put_u64, read_u64;
    u128 => put_u128, read_u128;
    i32 => put_i32, read_i32;
    i64 => put_i64, read_i64;
}

impl Encode for u8 {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(*self);
    }

    const SEQ_COUNT_MAX: u32 = ENCODING_BYTES_LEN_MAX;

    fn encode_seq(items: &[Self], w: &mut Writer) {
        w.put_raw(items);
    }
}

impl Decode for u8 {
    const ENCODED_LEN_MIN: usize = 1;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.read_u8()
    }

    const SEQ_COUNT_MAX: u32 = ENCODING_BYTES_LEN_MAX;

    fn decode_seq(r: &mut Reader<'_>, count: usize) -> Result<Vec<Self>, DecodeError> {
        Ok(r.read_raw(count, "bytes")?.to_vec())
    }
}

impl Encode for bool {
    fn encode(&self, w: &mut Writer) {
        w.put_bool(*self);
    }
}

impl Decode for bool {
    const ENCODED_LEN_MIN: usize = 1;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.read_bool()
    }
}

impl<const N: usize> Encode for [u8; N] {
    fn encode(&self, w: &mut Writer) {
        w.put_raw(self);
    }
}

impl<const N: usize> Decode for [u8; N] {
    const ENCODED_LEN_MIN: usize = N;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.read_array()
    }
}

impl Encode for Hash32 {
    fn encode(&self, w: &mut Writer) {
        w.put_raw(self.as_bytes());
    }
}

impl Decode for Hash32 {
    const ENCODED_LEN_MIN: usize = Hash32::LEN;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut out = [0u8; Hash32::LEN];
        out.copy_from_slice(r.read_raw(Hash32::LEN, "hash")?);
        Ok(Hash32(out))
    }
}

impl Encode for str {
    fn encode(&self, w: &mut Writer) {
        w.put_str(self);
    }
}

impl Encode for String {
    fn encode(&self, w: &mut Writer) {
        w.put_str(self);
    }
}

impl Decode for String {
    const ENCODED_LEN_MIN: usize = 4;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.read_str().map(str::to_owned)
    }
}

impl<T: Encode> Encode for [T] {
    fn encode(&self, w: &mut Writer) {
        w.put_seq(self);
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode(&self, w: &mut Writer) {
        w.put_seq(self);
    }
}

impl<T: Decode> Decode for Vec<T> {
    const ENCODED_LEN_MIN: usize = 4;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.read_seq()
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode(&self, w: &mut Writer) {
        match self {
            None => w.put_u8(0),
            Some(v) => {
                w.put_u8(1);
                v.encode(w);
            }
        }
    }
}

impl<T: Decode> Decode for Option<T> {
    const ENCODED_LEN_MIN: usize = 1;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let offset = r.offset();
        match r.read_u8()? {
            0 => Ok(None),
            1 => T::decode(r).map(Some),
            value => Err(DecodeError::InvalidOptionTag { value, offset }),
        }
    }
}

impl<T: Encode + ?Sized> Encode for &T {
    fn encode(&self, w: &mut Writer) {
        (**self).encode(w);
    }
}

macro_rules! tuple_codec {
    ($($name:ident),+) => {
        impl<$($name: Encode),+> Encode for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode(&self, w: &mut Writer) {
                let ($($name,)+) = self;
                $($name.encode(w);)+
            }
        }
        impl<$($name: Decode),+> Decode for ($($name,)+) {
            const ENCODED_LEN_MIN: usize = 0 $(+ $name::ENCODED_LEN_MIN)+;
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(($($name::decode(r)?,)+))
            }
        }
    };
}

tuple_codec!(A, B);
tuple_codec!(A, B, C);
tuple_codec!(A, B, C, D);

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Exercises every supported field kind, behind a version byte, the way
    /// a real message type would be written.
    #[derive(Debug, Clone, PartialEq)]
    struct Sample {
        a: u8,
        b: u16,
        c: u32,
        d: u64,
        e: i64,
        f: bool,
        g: u128,
        h: i32,
        name: String,
        data: Vec<u8>,
        hashes: Vec<Hash32>,
        opt: Option<u64>,
        nested: Vec<(u32, Option<String>)>,
        arr: [u8; 5],
        flags: Vec<bool>,
    }

    const SAMPLE_VERSIONS: &[u8] = &[1];

    impl Encode for Sample {
        fn encode(&self, w: &mut Writer) {
            w.put_u8(1);
            self.a.encode(w);
            self.b.encode(w);
            self.c.encode(w);
            self.d.encode(w);
            self.e.encode(w);
            self.f.encode(w);
            self.g.encode(w);
            self.h.encode(w);
            self.name.encode(w);
            self.data.encode(w);
            self.hashes.encode(w);
            self.opt.encode(w);
            self.nested.encode(w);
            self.arr.encode(w);
            self.flags.encode(w);
        }
    }

    impl Decode for Sample {
        fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
            decode_version(r, SAMPLE_VERSIONS)?;
            Ok(Sample {
                a: Decode::decode(r)?,
                b: Decode::decode(r)?,
                c: Decode::decode(r)?,
                d: Decode::decode(r)?,
                e: Decode::decode(r)?,
                f: Decode::decode(r)?,
                g: Decode::decode(r)?,
                h: Decode::decode(r)?,
                name: Decode::decode(r)?,
                data: Decode::decode(r)?,
                hashes: Decode::decode(r)?,
                opt: Decode::decode(r)?,
                nested: Decode::decode(r)?,
                arr: Decode::decode(r)?,
                flags: Decode::decode(r)?,
            })
        }
    }

    fn random_string(rng: &mut StdRng) -> String {
        let len = rng.random_range(0..12);
        (0..len).map(|_| rng.random::<char>()).collect()
    }

    fn random_sample(rng: &mut StdRng) -> Sample {
        Sample {
            a: rng.random(),
            b: rng.random(),
            c: rng.random(),
            d: rng.random(),
            e: rng.random(),
            f: rng.random(),
            g: rng.random(),
            h: rng.random(),
            name: random_string(rng),
            data: (0..rng.random_range(0..40)).map(|_| rng.random()).collect(),
            hashes: (0..rng.random_range(0..3))
                .map(|_| Hash32(rng.random()))
                .collect(),
            opt: if rng.random() {
                Some(rng.random())
            } else {
                None
            },
            nested: (0..rng.random_range(0..4))
                .map(|_| {
                    let s = if rng.random() {
                        Some(random_string(rng))
                    } else {
                        None
                    };
                    (rng.random(), s)
                })
                .collect(),
            arr: rng.random(),
            flags: (0..rng.random_range(0..5)).map(|_| rng.random()).collect(),
        }
    }

    #[test]
    fn randomized_round_trip_is_byte_identical() {
        let mut rng = StdRng::seed_from_u64(0x6d65_7461_6e6f_6465);
        for _ in 0..2000 {
            let sample = random_sample(&mut rng);
            let bytes = sample.to_canonical_bytes().expect("within bounds");
            let back = Sample::from_canonical_bytes(&bytes).expect("decodes");
            assert_eq!(back, sample);
            assert_eq!(back.to_canonical_bytes().expect("within bounds"), bytes);
        }
    }

    #[test]
    fn any_accepted_input_re_encodes_to_itself() {
        // Mutating valid encodings explores inputs near the accepted set;
        // whatever the decoder accepts must be the canonical form.
        let mut rng = StdRng::seed_from_u64(42);
        let mut accepted = 0;
        for _ in 0..3000 {
            let mut bytes = random_sample(&mut rng)
                .to_canonical_bytes()
                .expect("within bounds");
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
            if let Ok(v) = Sample::from_canonical_bytes(&bytes) {
                accepted += 1;
                assert_eq!(v.to_canonical_bytes().expect("within bounds"), bytes);
            }
        }
        // Most single-byte changes hit integers and stay valid, so the
        // property was actually exercised, not vacuously true.
        assert!(accepted > 1000, "only {accepted} mutants accepted");
    }

    #[test]
    fn random_garbage_is_rejected_without_panicking() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let len = rng.random_range(0..200);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if let Some(first) = bytes.first_mut() {
                *first = 1; // get past the version check most of the time
            }
            if let Ok(v) = Sample::from_canonical_bytes(&bytes) {
                assert_eq!(v.to_canonical_bytes().expect("within bounds"), bytes);
            }
        }
    }

    #[test]
    fn truncation_at_every_cut_point_is_rejected() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..50 {
            let bytes = random_sample(&mut rng)
                .to_canonical_bytes()
                .expect("within bounds");
            for cut in 0..bytes.len() {
                let err = Sample::from_canonical_bytes(&bytes[..cut])
                    .expect_err("a strict prefix never decodes");
                assert!(
                    matches!(
                        err,
                        DecodeError::Truncated { .. }
                            | DecodeError::LengthExceedsRemaining { .. }
                            | DecodeError::CountExceedsRemaining { .. }
                    ),
                    "cut {cut}: unexpected {err}"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_rejected_with_offset() {
        let bytes = 0x0102_0304u32.to_canonical_bytes().expect("fixed size");
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[9, 9, 9]);
        let err = u32::from_canonical_bytes(&longer).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TrailingBytes {
                count: 3,
                offset: 4
            }
        );
        assert_eq!(err.to_string(), "trailing bytes: 3 after offset 4");
    }

    #[test]
    fn integers_are_little_endian_fixed_width() {
        assert_eq!(0x0102_0304u32.to_canonical_bytes().unwrap(), [4, 3, 2, 1]);
        assert_eq!(1u64.to_canonical_bytes().unwrap(), [1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            (-2i64).to_canonical_bytes().unwrap(),
            [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(0xabcdu16.to_canonical_bytes().unwrap(), [0xcd, 0xab]);
        assert_eq!(u128::MAX.to_canonical_bytes().unwrap(), [0xff; 16]);
    }

    #[test]
    fn composite_layout_is_as_documented() {
        let value = (
            true,
            Some(String::from("hé")),
            vec![7u16, 8],
            Option::<u8>::None,
        );
        let bytes = value.to_canonical_bytes().unwrap();
        assert_eq!(
            bytes,
            [
                1, // bool
                1, 3, 0, 0, 0, b'h', 0xc3, 0xa9, // Some, len 3, "hé"
                2, 0, 0, 0, 7, 0, 8, 0, // count 2, two u16
                0, // None
            ]
        );
        // Vec<u8> and a byte string share one wire form.
        let mut w = Writer::new();
        w.put_bytes(b"ab");
        assert_eq!(
            w.finish().unwrap(),
            b"ab".to_vec().to_canonical_bytes().unwrap()
        );
    }

    #[test]
    fn bad_bool_is_rejected() {
        assert_eq!(bool::from_canonical_bytes(&[0]), Ok(false));
        assert_eq!(bool::from_canonical_bytes(&[1]), Ok(true));
        let err = <(u8, bool)>::from_canonical_bytes(&[5, 2]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::InvalidBool {
                value: 2,
                offset: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "invalid bool 2 at offset 1: must be 0 or 1"
        );
        for v in 2..=u8::MAX {
            assert!(bool::from_canonical_bytes(&[v]).is_err());
        }
    }

    #[test]
    fn bad_option_tag_is_rejected() {
        let err = Option::<u8>::from_canonical_bytes(&[2, 0]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::InvalidOptionTag {
                value: 2,
                offset: 0
            }
        );
    }

    #[test]
    fn bad_utf8_is_rejected() {
        // len 3: 'a', then a lone continuation byte.
        let bytes = [3, 0, 0, 0, b'a', 0x80, b'b'];
        let err = String::from_canonical_bytes(&bytes).unwrap_err();
        assert_eq!(
            err,
            DecodeError::InvalidUtf8 {
                offset: 4,
                bad_offset: 5
            }
        );
        assert_eq!(
            err.to_string(),
            "invalid utf-8 in string at offset 4: bad byte at offset 5"
        );
        // The same bytes are a fine Vec<u8>.
        assert_eq!(
            Vec::<u8>::from_canonical_bytes(&bytes),
            Ok(vec![b'a', 0x80, b'b'])
        );
    }

    #[test]
    fn length_beyond_remaining_is_rejected_before_allocating() {
        let mut bytes = vec![0u8; 8];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 12]);
        let mut r = Reader::new(&bytes);
        r.read_u64().unwrap();
        // Per-field bounds are clamped to the global one, which u32::MAX
        // breaks, so the bound check fires before the remaining-input check.
        let err = r.read_bytes_bounded(u32::MAX).unwrap_err();
        assert_eq!(
            err,
            DecodeError::LengthExceedsMax {
                len: u32::MAX,
                offset: 8,
                max: ENCODING_BYTES_LEN_MAX
            }
        );
        let mut bytes = vec![0u8; 8];
        bytes.extend_from_slice(&1000u32.to_le_bytes());
        bytes.extend_from_slice(&[0; 12]);
        let mut r = Reader::new(&bytes);
        r.read_u64().unwrap();
        let err = r.read_bytes().unwrap_err();
        assert_eq!(
            err.to_string(),
            "length 1000 at offset 8 exceeds remaining 12 bytes"
        );
    }

    #[test]
    fn oversized_length_is_rejected() {
        let len = ENCODING_BYTES_LEN_MAX + 1;
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"short");
        let err = Vec::<u8>::from_canonical_bytes(&bytes).unwrap_err();
        assert_eq!(
            err,
            DecodeError::CountExceedsMax {
                count: len,
                offset: 0,
                max: ENCODING_BYTES_LEN_MAX
            }
        );
        let err = String::from_canonical_bytes(&bytes).unwrap_err();
        assert_eq!(
            err,
            DecodeError::LengthExceedsMax {
                len,
                offset: 0,
                max: ENCODING_BYTES_LEN_MAX
            }
        );
        // Per-field bounds are enforced on both sides.
        let mut r = Reader::new(&[5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(
            r.read_str_bounded(4),
            Err(DecodeError::LengthExceedsMax {
                len: 5,
                offset: 0,
                max: 4
            })
        );
        let mut w = Writer::new();
        w.put_u8(0);
        w.put_str_bounded("hello", 4);
        assert_eq!(
            w.finish(),
            Err(EncodeError::LengthExceedsMax {
                len: 5,
                offset: 1,
                max: 4
            })
        );
    }

    #[test]
    fn oversized_count_is_rejected() {
        let count = ENCODING_VEC_COUNT_MAX + 1;
        let bytes = count.to_le_bytes();
        assert_eq!(
            Vec::<u64>::from_canonical_bytes(&bytes),
            Err(DecodeError::CountExceedsMax {
                count,
                offset: 0,
                max: ENCODING_VEC_COUNT_MAX
            })
        );
        // A count within bounds that the input cannot hold fails up front.
        let mut bytes = 1000u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        assert_eq!(
            Vec::<Hash32>::from_canonical_bytes(&bytes),
            Err(DecodeError::CountExceedsRemaining {
                count: 1000,
                offset: 0,
                needed: 32_000,
                remaining: 16
            })
        );
        let mut w = Writer::new();
        w.put_seq_bounded(&[1u32, 2, 3], 2);
        assert_eq!(
            w.finish(),
            Err(EncodeError::CountExceedsMax {
                count: 3,
                offset: 0,
                max: 2
            })
        );
        let mut r = Reader::new(&[3, 0, 0, 0, 1, 2, 3]);
        assert_eq!(
            r.read_seq_bounded::<u8>(2),
            Err(DecodeError::CountExceedsMax {
                count: 3,
                offset: 0,
                max: 2
            })
        );
    }

    #[test]
    fn writer_keeps_the_first_error() {
        let mut w = Writer::new();
        w.put_bytes_bounded(b"abc", 1);
        w.put_bytes_bounded(b"abcdef", 2);
        assert_eq!(
            w.finish(),
            Err(EncodeError::LengthExceedsMax {
                len: 3,
                offset: 0,
                max: 1
            })
        );
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut bytes = random_sample(&mut StdRng::seed_from_u64(1))
            .to_canonical_bytes()
            .unwrap();
        bytes[0] = 2;
        let err = Sample::from_canonical_bytes(&bytes).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownVersion {
                found: 2,
                supported: SAMPLE_VERSIONS,
                offset: 0
            }
        );
        assert_eq!(
            err.to_string(),
            "unknown version 2 at offset 0 (supported: [1])"
        );
        let mut r = Reader::new(&[3]);
        assert_eq!(decode_version(&mut r, &[1, 3]), Ok(3));
    }

    #[test]
    fn truncation_error_names_the_field_kind() {
        let err = <(u32, u64)>::from_canonical_bytes(&[1, 0, 0, 0, 9, 9, 9]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "truncated input: u64 at offset 4 needs 8 bytes, 3 remain"
        );
    }

    #[test]
    fn empty_collections_round_trip() {
        let value: (Vec<u64>, String, Vec<u8>) = (vec![], String::new(), vec![]);
        let bytes = value.to_canonical_bytes().unwrap();
        assert_eq!(bytes, [0u8; 12]);
        assert_eq!(
            <(Vec<u64>, String, Vec<u8>)>::from_canonical_bytes(&bytes),
            Ok(value)
        );
    }
}
