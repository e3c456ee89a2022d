//! Audit receipts: one per request, batched into signed Merkle roots, written
//! append-only with an fsync per batch.
//!
//! Canonical encoding (version 1; integers little-endian, strings `u32`
//! length + UTF-8, hashes raw):
//!
//! ```text
//! Receipt     = version:u8(=1) time_unix_ms:u64 ClientIp key_id:Option<str(<=256)>
//!               request_hash[32] decision:u16 detail:str(<=256) status:u16
//!               upstream_status:Option<u16> response_hash[32]
//!               policy_version:u64 policy_digest[32]
//! ClientIp    = 4 octets[4] | 6 octets[16]
//! BatchHeader = version:u8(=1) signer[32] batch_index:u64 first_receipt_seq:u64
//!               receipts_count:u32 receipts_root[32] prev_batch_hash[32] sealed_unix_ms:u64
//! SignedBatch = BatchHeader receipts:u32 count Receipt* signature[64]
//! File        = "MNCAGER1" (len:u32 SignedBatch)*
//! ```
//!
//! Hashes, all under `DomainTag::CageReceipt` (0x1c) with a kind byte so the
//! three never collide:
//! - request hash  `H(0x1c ‖ 1 ‖ str method ‖ str authority ‖ str path?query ‖ Option body_blake3)`;
//! - receipt hash  `H(0x1c ‖ 2 ‖ canonical Receipt)`;
//! - batch hash    `H(0x1c ‖ 3 ‖ canonical BatchHeader)`, signed by the node key.
//!
//! `receipts_root` is the RFC 9162 Merkle root (metanode_core::merkle) whose
//! leaves are the receipt hashes, so a receipt hash from a
//! `Metanode-Receipt` response header can be proven into a signed batch.
//! `prev_batch_hash` chains the batches: deleting, reordering or replacing a
//! batch breaks verification, not only editing one.
//!
//! Batching: each worker thread fills its own lane's batch, so recording a
//! receipt touches no memory another core writes. A batch is sealed when it
//! holds `batch_count_max` receipts, when a later-numbered batch fills (so
//! a quiet lane never holds the others back), or after `flush_interval_ms`,
//! and is on disk (write + fsync) before the next batch is written.
//! Responses do not wait for their batch, so a crash loses at most the
//! receipts of the batches not yet synced; a torn last frame is
//! cut off when the file is reopened. Inside the agent every sealed batch is
//! also put into the node's content store, pinned ([`ReplicatedSink`]): a
//! batch is one canonical byte string, so its CID names it.

use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_utils::CachePadded;
use metanode_core::cid::ContentId;
use metanode_core::encoding::{
    Decode, DecodeError, Encode, EncodeError, Reader, Writer, decode_version,
};
use metanode_core::hash::{Hash32, blake3_256, hash_tagged};
use metanode_core::keys::{PublicKey, Signature, SigningKey};
use metanode_core::merkle::{leaf_hash, root_of};
use metanode_core::tags::DomainTag;
use parking_lot::Mutex;

use crate::config::ReceiptsConfig;
use crate::limits::{
    KEY_ID_LEN_BYTES_MAX, RECEIPT_BATCH_COUNT_RANGE, RECEIPT_CHANNEL_BATCHES_COUNT_MAX,
    RECEIPT_DETAIL_LEN_BYTES_MAX, RECEIPT_EARLY_WAIT_FLUSH_INTERVALS, RECEIPT_EARLY_WAIT_MS_MIN,
    RECEIPT_FRAME_BYTES_MAX, RECEIPT_LANES_COUNT_MAX, RECEIPT_REPLICA_BACKLOG_BYTES_MAX,
    RECEIPT_REPLICA_CLOSE_WAIT_MS, RECEIPT_REPLICA_RETRY_MS,
};
use crate::metrics::Metrics;
pub use crate::receipt_file::{
    BatchLocation, BatchOffsets, FileSink, OpenSinkError, RECEIPT_FILE_MAGIC, SegmentPolicy,
    VerifyReceiptsError, VerifyReport, read_receipts, read_signed_batches, verify_receipts,
};

pub const RECEIPT_ENCODING_VERSION: u8 = 1;
const VERSIONS: &[u8] = &[RECEIPT_ENCODING_VERSION];

const KIND_REQUEST: u8 = 1;
const KIND_RECEIPT: u8 = 2;
const KIND_BATCH: u8 = 3;

const IP_V4: u8 = 4;
const IP_V6: u8 = 6;

/// What the cage decided about one request. The number is what receipts
/// store; never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Decision {
    /// Forwarded; the receipt's status is the upstream's.
    Forwarded = 1,
    /// BISO red light for the client address: 403.
    RedLight = 10,
    /// BISO yellow light and its bucket is empty: 429.
    YellowOverBudget = 11,
    /// Per-IP limit: 429.
    IpRateLimited = 12,
    /// Per-key limit: 429.
    KeyRateLimited = 13,
    /// No route for the path: 404.
    NoRoute = 20,
    /// No signature on a route that requires one: 401.
    UnsignedRejected = 30,
    /// Signature verification failed; `detail` is the httpsig error code,
    /// status 400 (malformed) or 401.
    SignatureRejected = 31,
    /// A signed request with a body whose signature does not cover a
    /// `Content-Digest`: 401.
    DigestNotCovered = 32,
    /// `Content-Digest` malformed or not matching the body: 400/401.
    DigestMismatch = 33,
    /// Body over `limits.body_size_bytes_max`: 413.
    BodyTooLarge = 40,
    /// Body not complete within `timeouts.body_read_timeout_ms`: 408.
    BodyReadTimeout = 41,
    /// The client broke the body (bad chunking, reset): 400.
    BodyReadFailed = 42,
    /// Request head not complete within `timeouts.header_read_timeout_ms`:
    /// the connection was closed (408 in the receipt, nothing sent).
    HeaderReadTimeout = 43,
    /// The request head was malformed or too large (answered 400/431, the
    /// connection closed).
    MalformedRequest = 44,
    /// Upstream unreachable or broke the response: 502.
    UpstreamFailed = 50,
    /// Upstream did not answer within `timeouts.upstream_timeout_ms`: 504.
    UpstreamTimeout = 51,
    /// Upstream response over `limits.response_body_size_bytes_max`: 502.
    UpstreamResponseTooLarge = 52,
    /// The receipt writer failed earlier; the cage fails closed: 503.
    ReceiptsUnavailable = 60,
}

impl Decision {
    pub const ALL: [Decision; 19] = [
        Decision::Forwarded,
        Decision::RedLight,
        Decision::YellowOverBudget,
        Decision::IpRateLimited,
        Decision::KeyRateLimited,
        Decision::NoRoute,
        Decision::UnsignedRejected,
        Decision::SignatureRejected,
        Decision::DigestNotCovered,
        Decision::DigestMismatch,
        Decision::BodyTooLarge,
        Decision::BodyReadTimeout,
        Decision::BodyReadFailed,
        Decision::HeaderReadTimeout,
        Decision::MalformedRequest,
        Decision::UpstreamFailed,
        Decision::UpstreamTimeout,
        Decision::UpstreamResponseTooLarge,
        Decision::ReceiptsUnavailable,
    ];

    pub const fn code(self) -> u16 {
        self as u16
    }

    pub fn from_code(code: u16) -> Option<Decision> {
        Decision::ALL.into_iter().find(|d| d.code() == code)
    }

    /// Stable snake_case name for logs and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Decision::Forwarded => "forwarded",
            Decision::RedLight => "red_light",
            Decision::YellowOverBudget => "yellow_over_budget",
            Decision::IpRateLimited => "ip_rate_limited",
            Decision::KeyRateLimited => "key_rate_limited",
            Decision::NoRoute => "no_route",
            Decision::UnsignedRejected => "unsigned_rejected",
            Decision::SignatureRejected => "signature_rejected",
            Decision::DigestNotCovered => "digest_not_covered",
            Decision::DigestMismatch => "digest_mismatch",
            Decision::BodyTooLarge => "body_too_large",
            Decision::BodyReadTimeout => "body_read_timeout",
            Decision::BodyReadFailed => "body_read_failed",
            Decision::HeaderReadTimeout => "header_read_timeout",
            Decision::MalformedRequest => "malformed_request",
            Decision::UpstreamFailed => "upstream_failed",
            Decision::UpstreamTimeout => "upstream_timeout",
            Decision::UpstreamResponseTooLarge => "upstream_response_too_large",
            Decision::ReceiptsUnavailable => "receipts_unavailable",
        }
    }

    /// Position in [`Decision::ALL`] (for per-decision counters).
    pub fn index(self) -> usize {
        Decision::ALL
            .iter()
            .position(|d| *d == self)
            .unwrap_or_default()
    }
}

/// `H(0x1c ‖ 1 ‖ method ‖ authority ‖ path?query ‖ body digest)`, each
/// string length-prefixed; `body_blake3` is None when the body was never
/// read (the request was refused before).
pub fn request_hash(
    method: &str,
    authority: &str,
    path_and_query: &str,
    body_blake3: Option<&Hash32>,
) -> Hash32 {
    let mut input = Vec::new();
    RequestHashInput::start(&mut input, method, authority, path_and_query);
    RequestHashInput::finish(&mut input, body_blake3)
}

/// [`request_hash`] in two steps over a caller-owned buffer: the head's
/// fields are copied in when it is parsed (its bytes are then free to go),
/// the body digest appended when it is known, and the whole input hashed in
/// one call. One contiguous BLAKE3 call over a reused buffer costs less than
/// an incremental hasher (a ~2 KiB state moved along with the request).
#[derive(Debug)]
pub struct RequestHashInput;

impl RequestHashInput {
    /// Clears `input` and writes the head part of the hash input.
    pub fn start(input: &mut Vec<u8>, method: &str, authority: &str, path_and_query: &str) {
        input.clear();
        input.extend_from_slice(&[DomainTag::CageReceipt.byte(), KIND_REQUEST]);
        for s in [method, authority, path_and_query] {
            // u32 length prefix as in the canonical encoding; a request head
            // is far below 4 GiB (REQUEST_HEAD_BUF_BYTES_MAX bounds it).
            input.extend_from_slice(&(s.len() as u32).to_le_bytes());
            input.extend_from_slice(s.as_bytes());
        }
    }

    /// Appends the body digest to what [`RequestHashInput::start`] wrote
    /// and hashes it all.
    pub fn finish(input: &mut Vec<u8>, body_blake3: Option<&Hash32>) -> Hash32 {
        match body_blake3 {
            None => input.push(0),
            Some(d) => {
                input.push(1);
                input.extend_from_slice(d.as_bytes());
            }
        }
        blake3_256(input)
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
pub fn truncate_utf8(s: &str, max: u32) -> &str {
    let max = max as usize;
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The audit record of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub time_unix_ms: u64,
    pub client_ip: IpAddr,
    /// The verified key; None for unsigned or refused-before-verification.
    pub key_id: Option<String>,
    /// [`request_hash`].
    pub request_hash: Hash32,
    pub decision: Decision,
    /// Machine-readable detail: the httpsig error code, the BISO reason.
    pub detail: String,
    /// Status sent to the client (408 for a closed slowloris connection).
    pub status: u16,
    /// Status the upstream answered, when it was asked.
    pub upstream_status: Option<u16>,
    /// BLAKE3 of the response body sent to the client.
    pub response_hash: Hash32,
    pub policy_version: u64,
    pub policy_digest: [u8; 32],
}

impl Receipt {
    /// The fields as a borrowed view (what the encoder takes).
    pub fn as_view(&self) -> ReceiptView<'_> {
        ReceiptView {
            time_unix_ms: self.time_unix_ms,
            client_ip: self.client_ip,
            key_id: self.key_id.as_deref(),
            request_hash: self.request_hash,
            decision: self.decision,
            detail: &self.detail,
            status: self.status,
            upstream_status: self.upstream_status,
            response_hash: self.response_hash,
            policy_version: self.policy_version,
            policy_digest: self.policy_digest,
        }
    }

    /// `H(0x1c ‖ 2 ‖ canonical receipt)`.
    pub fn hash(&self) -> Result<Hash32, EncodeError> {
        let mut buf = Vec::with_capacity(RECEIPT_HASH_INPUT_BYTES_TYPICAL);
        self.as_view().hash_into(&mut buf)
    }
}

/// A receipt as borrowed fields: what the proxy fills per request without
/// allocating its strings. Encodes to the same bytes as [`Receipt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiptView<'a> {
    pub time_unix_ms: u64,
    pub client_ip: IpAddr,
    pub key_id: Option<&'a str>,
    pub request_hash: Hash32,
    pub decision: Decision,
    pub detail: &'a str,
    pub status: u16,
    pub upstream_status: Option<u16>,
    pub response_hash: Hash32,
    pub policy_version: u64,
    pub policy_digest: [u8; 32],
}

/// Room for a typical receipt's hash input (prefix, fixed fields, short
/// strings); longer ones grow the buffer once.
const RECEIPT_HASH_INPUT_BYTES_TYPICAL: usize = 256;

/// Where the receipt encoder writes: the canonical [`Writer`] (decoding
/// tests, `Encode`) or a plain reused byte vector (the request path).
trait ReceiptOut {
    fn put_u8(&mut self, v: u8);
    fn put_raw(&mut self, bytes: &[u8]);
    /// Callers check `s.len() <= max` first ([`ReceiptView::check_bounds`]).
    fn put_str_bounded(&mut self, s: &str, max: u32);
}

impl ReceiptOut for Writer {
    fn put_u8(&mut self, v: u8) {
        Writer::put_u8(self, v);
    }
    fn put_raw(&mut self, bytes: &[u8]) {
        Writer::put_raw(self, bytes);
    }
    fn put_str_bounded(&mut self, s: &str, max: u32) {
        Writer::put_str_bounded(self, s, max);
    }
}

impl ReceiptOut for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_raw(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn put_str_bounded(&mut self, s: &str, _max: u32) {
        self.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.extend_from_slice(s.as_bytes());
    }
}

impl ReceiptView<'_> {
    /// The one definition of the canonical receipt encoding.
    fn encode_to(&self, w: &mut impl ReceiptOut) {
        w.put_u8(RECEIPT_ENCODING_VERSION);
        w.put_raw(&self.time_unix_ms.to_le_bytes());
        match self.client_ip {
            IpAddr::V4(v4) => {
                w.put_u8(IP_V4);
                w.put_raw(&v4.octets());
            }
            IpAddr::V6(v6) => {
                w.put_u8(IP_V6);
                w.put_raw(&v6.octets());
            }
        }
        match self.key_id {
            None => w.put_u8(0),
            Some(k) => {
                w.put_u8(1);
                w.put_str_bounded(k, KEY_ID_LEN_BYTES_MAX);
            }
        }
        w.put_raw(self.request_hash.as_bytes());
        w.put_raw(&self.decision.code().to_le_bytes());
        w.put_str_bounded(self.detail, RECEIPT_DETAIL_LEN_BYTES_MAX);
        w.put_raw(&self.status.to_le_bytes());
        match self.upstream_status {
            None => w.put_u8(0),
            Some(s) => {
                w.put_u8(1);
                w.put_raw(&s.to_le_bytes());
            }
        }
        w.put_raw(self.response_hash.as_bytes());
        w.put_raw(&self.policy_version.to_le_bytes());
        w.put_raw(&self.policy_digest);
    }

    /// The string bounds the canonical encoding enforces (offsets as the
    /// [`Writer`] would report them).
    fn check_bounds(&self) -> Result<(), EncodeError> {
        // version, time, ip family + octets, option tag
        let ip_len = if self.client_ip.is_ipv4() { 4 } else { 16 };
        let key_at = 1 + 8 + 1 + ip_len + 1;
        if let Some(k) = self.key_id
            && k.len() > KEY_ID_LEN_BYTES_MAX as usize
        {
            return Err(EncodeError::LengthExceedsMax {
                len: k.len(),
                offset: key_at,
                max: KEY_ID_LEN_BYTES_MAX,
            });
        }
        if self.detail.len() > RECEIPT_DETAIL_LEN_BYTES_MAX as usize {
            let key_len = self.key_id.map_or(0, |k| 4 + k.len());
            return Err(EncodeError::LengthExceedsMax {
                len: self.detail.len(),
                offset: key_at + key_len + 32 + 2,
                max: RECEIPT_DETAIL_LEN_BYTES_MAX,
            });
        }
        Ok(())
    }

    /// Clears `buf`, writes `0x1c ‖ 2 ‖ canonical receipt` into it and
    /// returns the receipt hash; the canonical bytes are then `buf[2..]`
    /// (see [`RECEIPT_HASH_PREFIX_BYTES`]). Encoded once, hashed in one
    /// contiguous call, and the same bytes go into the batch.
    pub fn hash_into(&self, buf: &mut Vec<u8>) -> Result<Hash32, EncodeError> {
        self.check_bounds()?;
        buf.clear();
        buf.extend_from_slice(&[DomainTag::CageReceipt.byte(), KIND_RECEIPT]);
        self.encode_to(buf);
        Ok(blake3_256(buf))
    }
}

/// Bytes [`ReceiptView::hash_into`] puts before the canonical receipt.
pub const RECEIPT_HASH_PREFIX_BYTES: usize = 2;

impl Encode for Receipt {
    fn encode(&self, w: &mut Writer) {
        self.as_view().encode_to(w);
    }
}

impl Decode for Receipt {
    const ENCODED_LEN_MIN: usize = 1 + 8 + 5 + 1 + 32 + 2 + 4 + 2 + 1 + 32 + 8 + 32;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, VERSIONS)?;
        let time_unix_ms = r.read_u64()?;
        let offset = r.offset();
        let client_ip = match r.read_u8()? {
            IP_V4 => IpAddr::from(r.read_array::<4>()?),
            IP_V6 => IpAddr::from(r.read_array::<16>()?),
            value => {
                return Err(DecodeError::InvalidTag {
                    what: "client ip family",
                    value: u64::from(value),
                    offset,
                });
            }
        };
        let offset = r.offset();
        let key_id = match r.read_u8()? {
            0 => None,
            1 => Some(r.read_str_bounded(KEY_ID_LEN_BYTES_MAX)?.to_owned()),
            value => return Err(DecodeError::InvalidOptionTag { value, offset }),
        };
        let request_hash = Hash32::decode(r)?;
        let offset = r.offset();
        let code = r.read_u16()?;
        let decision = Decision::from_code(code).ok_or(DecodeError::InvalidTag {
            what: "decision",
            value: u64::from(code),
            offset,
        })?;
        Ok(Receipt {
            time_unix_ms,
            client_ip,
            key_id,
            request_hash,
            decision,
            detail: r.read_str_bounded(RECEIPT_DETAIL_LEN_BYTES_MAX)?.to_owned(),
            status: r.read_u16()?,
            upstream_status: Option::<u16>::decode(r)?,
            response_hash: Hash32::decode(r)?,
            policy_version: r.read_u64()?,
            policy_digest: r.read_array()?,
        })
    }
}

/// What a batch signature covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub signer: [u8; 32],
    /// 0, 1, 2, … in file order.
    pub batch_index: u64,
    /// Sequence number of the first receipt (receipts are numbered from 0
    /// across the whole file).
    pub first_receipt_seq: u64,
    pub receipts_count: u32,
    /// Merkle root over the receipt hashes.
    pub receipts_root: Hash32,
    /// Hash of the previous batch header; zero for batch 0.
    pub prev_batch_hash: Hash32,
    pub sealed_unix_ms: u64,
}

impl BatchHeader {
    /// `H(0x1c ‖ 3 ‖ canonical header)`: what the node key signs.
    pub fn hash(&self) -> Hash32 {
        let mut w = Writer::with_capacity(160);
        self.encode(&mut w);
        // Fixed-size fields only: finishing cannot fail; fall back to the
        // raw buffer contract anyway rather than panic.
        let bytes = w.finish().unwrap_or_default();
        hash_tagged(DomainTag::CageReceipt, &[&[KIND_BATCH], &bytes])
    }
}

impl Encode for BatchHeader {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(RECEIPT_ENCODING_VERSION);
        w.put_raw(&self.signer);
        w.put_u64(self.batch_index);
        w.put_u64(self.first_receipt_seq);
        w.put_u32(self.receipts_count);
        self.receipts_root.encode(w);
        self.prev_batch_hash.encode(w);
        w.put_u64(self.sealed_unix_ms);
    }
}

impl Decode for BatchHeader {
    const ENCODED_LEN_MIN: usize = 1 + 32 + 8 + 8 + 4 + 32 + 32 + 8;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        decode_version(r, VERSIONS)?;
        Ok(BatchHeader {
            signer: r.read_array()?,
            batch_index: r.read_u64()?,
            first_receipt_seq: r.read_u64()?,
            receipts_count: r.read_u32()?,
            receipts_root: Hash32::decode(r)?,
            prev_batch_hash: Hash32::decode(r)?,
            sealed_unix_ms: r.read_u64()?,
        })
    }
}

/// A sealed batch as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedBatch {
    pub header: BatchHeader,
    pub receipts: Vec<Receipt>,
    pub signature: [u8; 64],
}

impl Encode for SignedBatch {
    fn encode(&self, w: &mut Writer) {
        self.header.encode(w);
        w.put_seq_bounded(&self.receipts, *RECEIPT_BATCH_COUNT_RANGE.end());
        w.put_raw(&self.signature);
    }
}

impl Decode for SignedBatch {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SignedBatch {
            header: BatchHeader::decode(r)?,
            receipts: r.read_seq_bounded(*RECEIPT_BATCH_COUNT_RANGE.end())?,
            signature: r.read_array()?,
        })
    }
}

/// Merkle root over receipt hashes (leaves are `H(0x00 ‖ receipt hash)`):
/// the RFC 9162 root of `metanode_core::merkle`, whose leaf and node hashes
/// are single BLAKE3 calls over stack buffers (the batch seal's main work).
pub fn receipts_root(receipt_hashes: &[Hash32]) -> Hash32 {
    let leaves: Vec<Hash32> = receipt_hashes
        .iter()
        .map(|h| leaf_hash(h.as_bytes()))
        .collect();
    root_of(&leaves)
}

/// Where a batch chain continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainTip {
    pub next_batch_index: u64,
    pub next_receipt_seq: u64,
    pub prev_batch_hash: Hash32,
}

impl ChainTip {
    pub const GENESIS: ChainTip = ChainTip {
        next_batch_index: 0,
        next_receipt_seq: 0,
        prev_batch_hash: Hash32::ZERO,
    };
}

impl SignedBatch {
    /// Signs `receipts` (with their precomputed hashes) as the batch after `tip`.
    pub fn seal(
        tip: &ChainTip,
        receipts: Vec<Receipt>,
        receipt_hashes: &[Hash32],
        key: &SigningKey,
        sealed_unix_ms: u64,
    ) -> SignedBatch {
        assert_eq!(receipts.len(), receipt_hashes.len(), "one hash per receipt");
        let (header, signature) = sign_header(tip, receipt_hashes, key, sealed_unix_ms);
        SignedBatch {
            header,
            receipts,
            signature,
        }
    }

    /// The tip after this batch.
    pub fn next_tip(&self) -> ChainTip {
        self.header.next_tip()
    }

    /// The same batch with its receipts encoded (what a sink stores).
    pub fn to_encoded(&self) -> Result<EncodedBatch, EncodeError> {
        let mut receipt_bytes = Vec::new();
        let mut scratch = Vec::new();
        for r in &self.receipts {
            r.as_view().hash_into(&mut scratch)?;
            receipt_bytes
                .extend_from_slice(scratch.get(RECEIPT_HASH_PREFIX_BYTES..).unwrap_or_default());
        }
        Ok(EncodedBatch {
            header: self.header.clone(),
            receipt_bytes,
            signature: self.signature,
        })
    }

    /// Checks the batch against the key and its place in the chain.
    pub fn verify(&self, key: &PublicKey, tip: &ChainTip) -> Result<(), BatchError> {
        self.verify_hashes(key, tip).map(drop)
    }

    /// [`SignedBatch::verify`], returning the receipt hashes it computed
    /// (the Merkle leaves), so a caller that needs them hashes once.
    pub fn verify_hashes(
        &self,
        key: &PublicKey,
        tip: &ChainTip,
    ) -> Result<Vec<Hash32>, BatchError> {
        let h = &self.header;
        if h.signer != key.to_bytes() {
            return Err(BatchError::UnexpectedSigner {
                found: hex::encode(h.signer),
            });
        }
        if h.batch_index != tip.next_batch_index {
            return Err(BatchError::OutOfOrder {
                expected: tip.next_batch_index,
                found: h.batch_index,
            });
        }
        if h.prev_batch_hash != tip.prev_batch_hash {
            return Err(BatchError::BrokenChain);
        }
        if h.first_receipt_seq != tip.next_receipt_seq {
            return Err(BatchError::SequenceGap {
                expected: tip.next_receipt_seq,
                found: h.first_receipt_seq,
            });
        }
        if h.receipts_count as usize != self.receipts.len() {
            return Err(BatchError::CountMismatch {
                header: h.receipts_count,
                stored: self.receipts.len(),
            });
        }
        let mut hashes = Vec::with_capacity(self.receipts.len());
        for (i, r) in self.receipts.iter().enumerate() {
            hashes.push(
                r.hash()
                    .map_err(|source| BatchError::Encode { index: i, source })?,
            );
        }
        if receipts_root(&hashes) != h.receipts_root {
            return Err(BatchError::RootMismatch);
        }
        key.verify(h.hash().as_bytes(), &Signature(self.signature))
            .map_err(|_| BatchError::BadSignature)?;
        Ok(hashes)
    }
}

/// The header of the batch after `tip` over `receipt_hashes`, and the node
/// key's signature of its hash.
fn sign_header(
    tip: &ChainTip,
    receipt_hashes: &[Hash32],
    key: &SigningKey,
    sealed_unix_ms: u64,
) -> (BatchHeader, [u8; 64]) {
    let header = BatchHeader {
        signer: key.public_key().to_bytes(),
        batch_index: tip.next_batch_index,
        first_receipt_seq: tip.next_receipt_seq,
        receipts_count: receipt_hashes.len() as u32,
        receipts_root: receipts_root(receipt_hashes),
        prev_batch_hash: tip.prev_batch_hash,
        sealed_unix_ms,
    };
    let signature = key.sign(header.hash().as_bytes()).to_bytes();
    (header, signature)
}

impl BatchHeader {
    /// The tip after the batch this header seals.
    pub fn next_tip(&self) -> ChainTip {
        ChainTip {
            next_batch_index: self.batch_index + 1,
            next_receipt_seq: self.first_receipt_seq + u64::from(self.receipts_count),
            prev_batch_hash: self.hash(),
        }
    }
}

/// A sealed batch whose receipts are already in canonical form, back to
/// back: the cage encodes each receipt once (to hash it) and stores those
/// bytes, instead of keeping the receipt and encoding it again. Its frame
/// body is byte for byte the [`SignedBatch`] encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedBatch {
    pub header: BatchHeader,
    /// `header.receipts_count` canonical receipts, concatenated.
    pub receipt_bytes: Vec<u8>,
    pub signature: [u8; 64],
}

impl EncodedBatch {
    /// Signs the batch after `tip` holding `receipt_bytes` (the canonical
    /// receipts whose hashes are `receipt_hashes`, in order).
    pub fn seal(
        tip: &ChainTip,
        receipt_bytes: Vec<u8>,
        receipt_hashes: &[Hash32],
        key: &SigningKey,
        sealed_unix_ms: u64,
    ) -> EncodedBatch {
        let (header, signature) = sign_header(tip, receipt_hashes, key, sealed_unix_ms);
        EncodedBatch {
            header,
            receipt_bytes,
            signature,
        }
    }

    /// Appends `len:u32 ‖ SignedBatch` (one file frame) to `out`.
    pub fn write_frame(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.write_parts(out, true)
    }

    /// The canonical `SignedBatch` bytes alone (a frame without its length),
    /// in a vector of exactly that size.
    pub fn signed_batch_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.write_parts(&mut out, false)?;
        Ok(out)
    }

    fn write_parts(&self, out: &mut Vec<u8>, with_len: bool) -> Result<(), EncodeError> {
        let mut w = Writer::with_capacity(BatchHeader::ENCODED_LEN_MIN + 4);
        self.header.encode(&mut w);
        w.put_u32(self.header.receipts_count);
        let head = w.finish()?;
        let body_len = head.len() + self.receipt_bytes.len() + self.signature.len();
        if body_len > RECEIPT_FRAME_BYTES_MAX as usize {
            return Err(EncodeError::LengthExceedsMax {
                len: body_len,
                offset: 0,
                max: RECEIPT_FRAME_BYTES_MAX,
            });
        }
        if with_len {
            out.reserve_exact(4 + body_len);
            out.extend_from_slice(&(body_len as u32).to_le_bytes());
        } else {
            out.reserve_exact(body_len);
        }
        out.extend_from_slice(&head);
        out.extend_from_slice(&self.receipt_bytes);
        out.extend_from_slice(&self.signature);
        Ok(())
    }
}

/// Why one batch does not verify.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("signed by {found}, not by the expected node key")]
    UnexpectedSigner { found: String },
    #[error("batch index {found} where {expected} was expected")]
    OutOfOrder { expected: u64, found: u64 },
    #[error("previous batch hash does not match the batch before it")]
    BrokenChain,
    #[error("first receipt sequence {found} where {expected} was expected")]
    SequenceGap { expected: u64, found: u64 },
    #[error("header counts {header} receipts but {stored} are stored")]
    CountMismatch { header: u32, stored: usize },
    #[error("receipt {index} breaks an encoding bound: {source}")]
    Encode { index: usize, source: EncodeError },
    #[error("receipts do not hash to the signed Merkle root")]
    RootMismatch,
    #[error("signature does not verify")]
    BadSignature,
}

/// One frame of a receipt file, as stored: its `SignedBatch` bytes (the
/// frame without its length). Read without growing a buffer past the bytes
/// really there, so a torn frame claiming a huge length allocates nothing.
pub(crate) enum RawFrame {
    Body(Vec<u8>),
    End,
    Torn,
}

pub(crate) fn read_raw_frame(
    reader: &mut impl Read,
    path: &Path,
    offset: u64,
) -> Result<RawFrame, VerifyReceiptsError> {
    let io_err = |source| VerifyReceiptsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut len_bytes = [0u8; 4];
    let got = read_full(reader, &mut len_bytes).map_err(io_err)?;
    if got == 0 {
        return Ok(RawFrame::End);
    }
    if got < 4 {
        return Ok(RawFrame::Torn);
    }
    let len = u32::from_le_bytes(len_bytes);
    if len > RECEIPT_FRAME_BYTES_MAX {
        return Err(VerifyReceiptsError::FrameTooLarge {
            path: path.to_path_buf(),
            offset,
            len,
            max: RECEIPT_FRAME_BYTES_MAX,
        });
    }
    let mut body = Vec::new();
    let got = reader
        .take(u64::from(len))
        .read_to_end(&mut body)
        .map_err(io_err)?;
    if got < len as usize {
        return Ok(RawFrame::Torn);
    }
    Ok(RawFrame::Body(body))
}

/// A frame's body (its `SignedBatch` bytes) decoded; the error names the
/// file and the frame's offset.
pub(crate) fn decode_frame(
    body: &[u8],
    path: &Path,
    offset: u64,
) -> Result<SignedBatch, VerifyReceiptsError> {
    SignedBatch::from_canonical_bytes(body).map_err(|source| VerifyReceiptsError::Decode {
        path: path.to_path_buf(),
        offset,
        source,
    })
}

pub(crate) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(buf.get_mut(filled..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Why a batch could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("batch {batch_index} does not fit the canonical encoding: {source}")]
    Encode {
        batch_index: u64,
        source: EncodeError,
    },
    #[error("cannot {action} receipt file {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// Durable storage for sealed batches.
pub trait ReceiptSink: Send + 'static {
    /// Where the stored chain ends (the next batch continues it).
    fn tip(&self) -> ChainTip;
    /// Stores `batch` durably before returning.
    fn append(&mut self, batch: &EncodedBatch) -> Result<(), SinkError>;
}

/// A second home for sealed batches: the agent stores each one in its
/// content store, so the audit trail is content-addressed like every other
/// blob of the node (and travels with it) besides sitting in the receipt
/// file.
pub trait BatchReplica: Send + 'static {
    /// Stores one signed batch: its canonical `SignedBatch` bytes (a file
    /// frame without the length), pinned. Returns where it went, for the
    /// log.
    fn put(&mut self, signed_batch: &[u8]) -> Result<String, BatchReplicaError>;
    /// Lets the store reclaim the batch whose bytes have CID `cid` (raw,
    /// BLAKE3), once it is past the retention window. A batch that is not
    /// there, or not pinned, is not an error.
    fn unpin(&mut self, cid: &ContentId) -> Result<(), BatchReplicaError>;
}

/// Why a replica could not store a batch.
pub type BatchReplicaError = Box<dyn std::error::Error + Send + Sync>;

/// A batch the replica has not taken yet.
struct ReplicaBacklogItem {
    batch_index: u64,
    signed_batch: Vec<u8>,
}

/// The newest batches the replica keeps pinned; older ones are unpinned as
/// newer ones arrive (`receipts.store_pinned_batches_max`, 0 = all).
struct Retention {
    pinned_max: u64,
    /// (batch index, CID), oldest first; at most `pinned_max`.
    pinned: std::collections::VecDeque<(u64, ContentId)>,
}

impl Retention {
    /// Batch `batch_index` (bytes `signed_batch`) was stored pinned; unpins
    /// what falls out of the window. Without a window nothing is tracked, so
    /// no batch is hashed for its CID.
    fn stored(
        &mut self,
        batch_index: u64,
        signed_batch: &[u8],
        replica: &mut dyn BatchReplica,
        metrics: &Metrics,
    ) {
        if self.pinned_max == 0 {
            return;
        }
        let cid = ContentId::raw_blake3_of(signed_batch);
        self.pinned.push_back((batch_index, cid));
        while self.pinned.len() as u64 > self.pinned_max {
            let Some((old_index, old_cid)) = self.pinned.pop_front() else {
                break;
            };
            unpin_once(replica, old_index, &old_cid, metrics);
        }
    }
}

/// One unpin, a panic counted as a failure. A failure is logged and
/// counted, not retried: the next start's resync unpins again.
fn unpin_once(
    replica: &mut dyn BatchReplica,
    batch_index: u64,
    cid: &ContentId,
    metrics: &Metrics,
) {
    let unpinned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| replica.unpin(cid)));
    match unpinned {
        Ok(Ok(())) => metrics.receipt_batch_unpinned(),
        Ok(Err(e)) => {
            tracing::warn!(batch_index, %cid, error = %e, "cannot unpin an old receipt batch in the content store");
            metrics.receipt_replica_failed();
        }
        Err(_) => {
            tracing::warn!(batch_index, %cid, "the content store panicked unpinning an old receipt batch");
            metrics.receipt_replica_failed();
        }
    }
}

/// The replica thread's queue.
struct ReplicaState {
    backlog: std::collections::VecDeque<ReplicaBacklogItem>,
    backlog_bytes: usize,
    /// [`RECEIPT_REPLICA_BACKLOG_BYTES_MAX`]; a field so tests can shrink it.
    backlog_bytes_max: usize,
    closing: bool,
    /// The thread has finished (drained, or given up at close).
    done: bool,
}

struct ReplicaQueue {
    state: Mutex<ReplicaState>,
    wake: parking_lot::Condvar,
    metrics: Arc<Metrics>,
}

impl ReplicaQueue {
    /// Queues a batch; past the byte bound the oldest waiting ones are
    /// dropped (they are in the receipt file), keeping the newest.
    fn push(&self, item: ReplicaBacklogItem) {
        let mut st = self.state.lock();
        st.backlog_bytes += item.signed_batch.len();
        st.backlog.push_back(item);
        while st.backlog_bytes > st.backlog_bytes_max && st.backlog.len() > 1 {
            if let Some(dropped) = st.backlog.pop_front() {
                st.backlog_bytes -= dropped.signed_batch.len();
                tracing::error!(
                    batch_index = dropped.batch_index,
                    "the content store is behind or failing; receipt batch kept only in the receipt file"
                );
                self.metrics.receipt_batch_replica_dropped();
            }
        }
        self.wake.notify_one();
    }
}

/// A [`ReceiptSink`] that hands every batch its inner sink has stored to a
/// [`BatchReplica`] as well, on a thread of its own.
///
/// The inner sink (the receipt file) is the record: a batch is acknowledged
/// when it is there, and only its failure stops the cage. The replica never
/// slows the file: batches queue for its thread, bounded by
/// [`RECEIPT_REPLICA_BACKLOG_BYTES_MAX`] (the oldest are dropped past it,
/// counted and logged, since they are in the file anyway). A failing put is
/// counted and retried, in order, when the next batch arrives and at least
/// every [`RECEIPT_REPLICA_RETRY_MS`]; a panicking one counts as failed.
/// Before the first new batch, the thread puts every batch the file already
/// held (`resync_from`), so batches a crash or an earlier failure kept out
/// of the store get there at the next start (the store deduplicates by
/// content).
pub struct ReplicatedSink<S> {
    inner: S,
    queue: Arc<ReplicaQueue>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for ReplicatedSink<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.queue.state.lock();
        f.debug_struct("ReplicatedSink")
            .field("inner", &self.inner)
            .field("backlog", &st.backlog.len())
            .field("backlog_bytes", &st.backlog_bytes)
            .finish()
    }
}

impl<S: ReceiptSink> ReplicatedSink<S> {
    /// Starts the replica thread. `resync_from`: the receipt file, whose
    /// batches are put first (the file was verified when `inner` opened it).
    /// `pinned_max`: the newest batches kept pinned (0 = all).
    pub fn new(
        inner: S,
        mut replica: Box<dyn BatchReplica>,
        metrics: Arc<Metrics>,
        resync_from: Option<PathBuf>,
        pinned_max: u64,
    ) -> Result<Self, io::Error> {
        // Batches in the file now: resync stores only the window's newest.
        let file_batches = inner.tip().next_batch_index;
        let queue = Arc::new(ReplicaQueue {
            state: Mutex::new(ReplicaState {
                backlog: std::collections::VecDeque::new(),
                backlog_bytes: 0,
                backlog_bytes_max: RECEIPT_REPLICA_BACKLOG_BYTES_MAX,
                closing: false,
                done: false,
            }),
            wake: parking_lot::Condvar::new(),
            metrics,
        });
        let thread_queue = queue.clone();
        std::thread::Builder::new()
            .name("cage-receipt-store".into())
            .spawn(move || {
                // Set even if this thread unwinds, so closing never waits
                // for a thread that is gone.
                let _done = ReplicaDone(&thread_queue);
                let mut retention = Retention {
                    pinned_max,
                    pinned: std::collections::VecDeque::new(),
                };
                if let Some(path) = resync_from {
                    resync(
                        &path,
                        file_batches,
                        &mut *replica,
                        &thread_queue,
                        &mut retention,
                    );
                }
                replicate(&thread_queue, &mut *replica, &mut retention);
            })?;
        Ok(ReplicatedSink { inner, queue })
    }

    /// Batches waiting for the replica.
    pub fn backlog_count(&self) -> usize {
        self.queue.state.lock().backlog.len()
    }
}

/// Marks the replica thread finished when it returns or unwinds.
struct ReplicaDone<'a>(&'a ReplicaQueue);

impl Drop for ReplicaDone<'_> {
    fn drop(&mut self) {
        self.0.state.lock().done = true;
        self.0.wake.notify_all();
    }
}

/// One put, a panic counted as a failure.
fn put_once(replica: &mut dyn BatchReplica, signed_batch: &[u8]) -> Result<String, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| replica.put(signed_batch))) {
        Ok(Ok(id)) => Ok(id),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the content store panicked".into()),
    }
}

/// Puts every batch of the receipt log that was there at open (the first
/// `file_batches`, in the segments still on disk; a segment deleted
/// meanwhile is skipped); stops at the first failure or when closing (the
/// next start tries again). New batches queue meanwhile; any the queue's
/// bound drops are in the log, so the next start puts them too, unless
/// `receipts.segments_kept_max` deleted their segment first.
///
/// With a retention window, batches older than the file's newest
/// `pinned_max` (of `file_batches` in the file at open) are not stored
/// again but unpinned, so a GC that reclaimed them is not undone and a
/// window made smaller since the last run takes effect.
fn resync(
    path: &Path,
    file_batches: u64,
    replica: &mut dyn BatchReplica,
    queue: &ReplicaQueue,
    retention: &mut Retention,
) {
    let keep_from = match retention.pinned_max {
        0 => 0,
        max => file_batches.saturating_sub(max),
    };
    let metrics = &queue.metrics;
    let frames = match read_signed_batches(path) {
        Ok(frames) => frames,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the receipt file to re-store its batches");
            return;
        }
    };
    let mut stored = 0u64;
    for frame in frames {
        if queue.state.lock().closing {
            return;
        }
        let (index, signed_batch) = match frame {
            Ok(frame) => frame,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "stopped re-storing receipt batches");
                return;
            }
        };
        // Batches appended since the open reach the store through the
        // queue; putting them here too would track them twice.
        if index >= file_batches {
            break;
        }
        if index < keep_from {
            let cid = ContentId::raw_blake3_of(&signed_batch);
            unpin_once(replica, index, &cid, metrics);
            continue;
        }
        match put_once(replica, &signed_batch) {
            Ok(_) => retention.stored(index, &signed_batch, replica, metrics),
            Err(e) => {
                tracing::warn!(batch_index = index, error = %e, "cannot re-store a receipt batch in the content store; the next start tries again");
                metrics.receipt_replica_failed();
                return;
            }
        }
        stored += 1;
    }
    if stored > 0 {
        tracing::info!(
            batches = stored,
            "receipt file's batches are in the content store"
        );
    }
}

/// The replica thread: puts queued batches in order until closing.
fn replicate(queue: &ReplicaQueue, replica: &mut dyn BatchReplica, retention: &mut Retention) {
    loop {
        let item = {
            let mut st = queue.state.lock();
            while st.backlog.is_empty() && !st.closing {
                queue.wake.wait(&mut st);
            }
            match st.backlog.pop_front() {
                Some(item) => item,
                None => return,
            }
        };
        match put_once(replica, &item.signed_batch) {
            Ok(id) => {
                tracing::debug!(batch_index = item.batch_index, id, "receipt batch stored");
                queue.metrics.receipt_batch_replicated();
                queue.state.lock().backlog_bytes -= item.signed_batch.len();
                retention.stored(
                    item.batch_index,
                    &item.signed_batch,
                    replica,
                    &queue.metrics,
                );
            }
            Err(e) => {
                queue.metrics.receipt_replica_failed();
                let mut st = queue.state.lock();
                if st.closing {
                    // Closing with the store still failing: what waits
                    // stays in the file only.
                    let dropped = 1 + st.backlog.len() as u64;
                    tracing::error!(error = %e, dropped, "content store failing at close; receipt batches kept only in the receipt file");
                    for _ in 0..dropped {
                        queue.metrics.receipt_batch_replica_dropped();
                    }
                    st.backlog.clear();
                    st.backlog_bytes = 0;
                    return;
                }
                tracing::warn!(
                    batch_index = item.batch_index,
                    error = %e,
                    waiting = st.backlog.len() + 1,
                    "cannot store a receipt batch in the content store; retrying"
                );
                st.backlog.push_front(item);
                // Until the next batch arrives or the retry interval ends.
                let retry = Duration::from_millis(RECEIPT_REPLICA_RETRY_MS);
                let _ = queue.wake.wait_for(&mut st, retry);
            }
        }
    }
}

impl<S> Drop for ReplicatedSink<S> {
    /// Lets the replica thread finish what is queued, waiting at most
    /// [`RECEIPT_REPLICA_CLOSE_WAIT_MS`] (a hung store must not hang the
    /// cage's shutdown; the file has every batch).
    fn drop(&mut self) {
        let mut st = self.queue.state.lock();
        st.closing = true;
        self.queue.wake.notify_all();
        let deadline =
            std::time::Instant::now() + Duration::from_millis(RECEIPT_REPLICA_CLOSE_WAIT_MS);
        while !st.done {
            if self.queue.wake.wait_until(&mut st, deadline).timed_out() {
                tracing::warn!(
                    waiting = st.backlog.len(),
                    "the content store did not take the last receipt batches in time; they are in the receipt file"
                );
                return;
            }
        }
    }
}

impl<S: ReceiptSink> ReceiptSink for ReplicatedSink<S> {
    fn tip(&self) -> ChainTip {
        self.inner.tip()
    }

    fn append(&mut self, batch: &EncodedBatch) -> Result<(), SinkError> {
        self.inner.append(batch)?;
        let signed_batch = batch
            .signed_batch_bytes()
            .map_err(|source| SinkError::Encode {
                batch_index: batch.header.batch_index,
                source,
            })?;
        self.queue.push(ReplicaBacklogItem {
            batch_index: batch.header.batch_index,
            signed_batch,
        });
        Ok(())
    }
}

/// What a response header can promise about its receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiptTicket {
    pub receipt_hash: Hash32,
    pub batch_index: u64,
}

impl ReceiptTicket {
    /// `Metanode-Receipt` header value: `<receipt hash hex>; batch=<n>`.
    pub fn header_value(&self) -> String {
        format!("{}; batch={}", self.receipt_hash.to_hex(), self.batch_index)
    }
}

/// Why a receipt could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("receipt does not fit the canonical encoding: {0}")]
    Encode(#[from] EncodeError),
    #[error("the receipt writer has stopped")]
    WriterStopped,
}

struct PendingBatch {
    batch_index: u64,
    /// Canonical receipts, back to back.
    receipt_bytes: Vec<u8>,
    hashes: Vec<Hash32>,
}

/// Batch buffers the writer has emptied, handed back to the lanes so a
/// batch does not grow fresh vectors (and copy them as they double) every
/// time. Bounded: a few spare sets per lane are plenty.
#[derive(Debug)]
struct Spares {
    sets: Mutex<Vec<(Vec<u8>, Vec<Hash32>)>>,
    sets_count_max: usize,
}

impl Spares {
    fn take(&self) -> (Vec<u8>, Vec<Hash32>) {
        self.sets.lock().pop().unwrap_or_default()
    }

    fn give(&self, mut bytes: Vec<u8>, mut hashes: Vec<Hash32>) {
        bytes.clear();
        hashes.clear();
        let mut sets = self.sets.lock();
        if sets.len() < self.sets_count_max {
            sets.push((bytes, hashes));
        }
    }
}

/// A sealed batch and the sender that hands it to the writer.
type Sealed = (PendingBatch, BatchSender);

/// To the writer thread. Unbounded and never blocking, so sealing and
/// handing over a batch has no await in between: a request or timer
/// cancelled there cannot lose a batch whose index a response already
/// named. The bound is [`Backpressure`], waited on before anything is
/// taken.
type BatchSender = crossbeam_channel::Sender<PendingBatch>;

/// One lane's open batch. Each worker thread records into its own lane
/// (see [`bind_receipt_lane`]), so a request takes a lock no other core
/// touches and appends to memory no other core writes: no cache line moves
/// between cores per request, only per batch.
#[derive(Default)]
struct Lane {
    /// The index reserved for the open batch; `None` while it is empty.
    batch_index: Option<u64>,
    receipt_bytes: Vec<u8>,
    hashes: Vec<Hash32>,
    /// `None` once the log is closed: the lane then refuses receipts.
    tx: Option<BatchSender>,
}

impl Lane {
    /// Takes the open batch (if any) with a sender to hand it to the
    /// writer; the send happens after the lane's lock is released.
    fn take(&mut self, spares: &Spares) -> Option<Sealed> {
        let batch_index = self.batch_index?;
        // close() takes the open batch before it drops the sender, and
        // record() refuses once it is gone: an open batch has a sender.
        let tx = self
            .tx
            .clone()
            .expect("an open receipt batch always has a sender to the writer");
        let (bytes, hashes) = spares.take();
        let batch = PendingBatch {
            batch_index,
            receipt_bytes: std::mem::replace(&mut self.receipt_bytes, bytes),
            hashes: std::mem::replace(&mut self.hashes, hashes),
        };
        self.batch_index = None;
        Some((batch, tx))
    }
}

/// The lanes and the batch numbering they share.
///
/// Numbering: a lane reserves its batch's index when the batch gets its
/// first receipt (one atomic add per batch), so a response can name its
/// batch at once. The writer stores batches in index order and holds early
/// ones back; so that a quiet lane never holds the others' batches (in
/// memory, undurable) until its timer, a lane that seals a full batch also
/// seals every other lane's open batch with a lower index. Reservation
/// happens under the lane's lock and indices only grow, so after that sweep
/// no lower index is still open anywhere.
struct Assembler {
    /// Each on its own cache lines, so two workers' lanes never share one
    /// (the point of lanes).
    lanes: Box<[CachePadded<Mutex<Lane>>]>,
    next_batch_index: AtomicU64,
    spares: Arc<Spares>,
    backpressure: Arc<Backpressure>,
}

/// Sealed batches the writer has not finished, and a wake-up for requests
/// waiting for that count to drop: a slow disk slows requests instead of
/// growing memory or losing receipts. A request waits *before* it records
/// (holding nothing), so dropping the wait loses nothing. Several requests
/// may pass the check at once, so the count can exceed the bound by the
/// batches they seal (a full one plus the sweep's, per lane).
#[derive(Debug, Default)]
struct Backpressure {
    unwritten: AtomicUsize,
    room: tokio::sync::Notify,
}

impl Backpressure {
    async fn wait_for_room(&self, healthy: &AtomicBool) -> Result<(), RecordError> {
        loop {
            if !healthy.load(Ordering::Relaxed) {
                return Err(RecordError::WriterStopped);
            }
            if self.unwritten.load(Ordering::Acquire) < RECEIPT_CHANNEL_BATCHES_COUNT_MAX {
                return Ok(());
            }
            let notified = self.room.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the re-check, so a write finishing in
            // between still wakes us.
            notified.as_mut().enable();
            // Both conditions again: a writer failing between the first
            // check and enable() notified before we listened.
            if !healthy.load(Ordering::Relaxed) {
                return Err(RecordError::WriterStopped);
            }
            if self.unwritten.load(Ordering::Acquire) < RECEIPT_CHANNEL_BATCHES_COUNT_MAX {
                return Ok(());
            }
            notified.await;
        }
    }

    fn sent(&self) {
        self.unwritten.fetch_add(1, Ordering::AcqRel);
    }

    fn written(&self) {
        self.unwritten.fetch_sub(1, Ordering::AcqRel);
        self.room.notify_waiters();
    }
}

impl Assembler {
    /// Every lane's open batch, lowest index first.
    fn take_all(&self) -> Vec<Sealed> {
        self.take_where(|_| true)
    }

    /// The open batches whose index passes `pick`, lowest index first.
    fn take_where(&self, pick: impl Fn(u64) -> bool) -> Vec<Sealed> {
        let mut sealed = Vec::new();
        for lane in &self.lanes {
            let mut lane = lane.lock();
            if lane.batch_index.is_some_and(&pick)
                && let Some(s) = lane.take(&self.spares)
            {
                sealed.push(s);
            }
        }
        sealed.sort_unstable_by_key(|(batch, _)| batch.batch_index);
        sealed
    }

    /// Hands sealed batches to the writer, in the order given, without
    /// waiting. Fails only if the writer thread is gone (it then marked the
    /// log unhealthy); those batches are lost with it.
    fn send(&self, sealed: Vec<Sealed>) -> Result<(), RecordError> {
        let mut result = Ok(());
        for (batch, tx) in sealed {
            self.backpressure.sent();
            if tx.send(batch).is_err() {
                self.backpressure.written();
                result = Err(RecordError::WriterStopped);
            }
        }
        result
    }
}

thread_local! {
    /// The receipt lane of this thread: set by [`bind_receipt_lane`], else
    /// taken from [`NEXT_UNBOUND_LANE`] on the thread's first receipt.
    static RECEIPT_LANE: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

static NEXT_UNBOUND_LANE: AtomicUsize = AtomicUsize::new(0);

/// Makes this thread record into lane `lane` (modulo the log's lane count).
/// The cage's worker `i` binds lane `i`, so workers never share one; a
/// thread that never binds gets the next lane in turn.
pub fn bind_receipt_lane(lane: usize) {
    RECEIPT_LANE.with(|l| l.set(Some(lane)));
}

fn this_thread_lane(lanes_count: usize) -> usize {
    let lane = RECEIPT_LANE.with(|l| match l.get() {
        Some(lane) => lane,
        None => {
            let lane = NEXT_UNBOUND_LANE.fetch_add(1, Ordering::Relaxed);
            l.set(Some(lane));
            lane
        }
    });
    lane % lanes_count
}

/// The running receipt pipeline: requests record into per-worker lanes, a
/// timer seals partial batches, one writer thread signs and appends.
pub struct ReceiptLog {
    assembler: Arc<Assembler>,
    batch_count_max: usize,
    healthy: Arc<AtomicBool>,
    timer: tokio::task::JoinHandle<()>,
    writer: parking_lot::Mutex<Option<std::thread::JoinHandle<WriterReport>>>,
}

impl std::fmt::Debug for ReceiptLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptLog")
            .field("lanes", &self.assembler.lanes.len())
            .field(
                "next_batch_index",
                &self.assembler.next_batch_index.load(Ordering::Relaxed),
            )
            .field("batch_count_max", &self.batch_count_max)
            .finish()
    }
}

/// What the writer did before it stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterReport {
    pub batches_written: u64,
    pub receipts_written: u64,
    pub tip: ChainTip,
    /// The first write error; after it nothing more was written.
    pub error: Option<String>,
}

thread_local! {
    /// Encoding buffer of [`ReceiptLog::record`], one per thread (workers
    /// record from their own threads), so a receipt costs no allocation.
    static RECEIPT_SCRATCH: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(Vec::with_capacity(RECEIPT_HASH_INPUT_BYTES_TYPICAL));
}

impl ReceiptLog {
    /// Starts the writer thread and the flush timer (needs a tokio runtime).
    /// `lanes_count` is the number of threads that record at once (the
    /// cage's workers); see [`bind_receipt_lane`].
    pub fn start(
        sink: Box<dyn ReceiptSink>,
        key: SigningKey,
        config: &ReceiptsConfig,
        metrics: Arc<Metrics>,
        lanes_count: usize,
    ) -> Result<ReceiptLog, io::Error> {
        let lanes_count = lanes_count.clamp(1, RECEIPT_LANES_COUNT_MAX);
        let tip = sink.tip();
        let (tx, rx) = crossbeam_channel::unbounded();
        let healthy = Arc::new(AtomicBool::new(true));
        let spares = Arc::new(Spares {
            sets: Mutex::new(Vec::new()),
            // A batch's buffers come back when it is written; one spare set
            // per lane plus two covers the lanes refilling while the writer
            // works. Waiting batches beyond that allocate; more spares would
            // only hold memory.
            sets_count_max: lanes_count + 2,
        });
        let backpressure = Arc::new(Backpressure::default());
        let writer = {
            let shared = WriterShared {
                early_wait_max: (config.flush_interval() * RECEIPT_EARLY_WAIT_FLUSH_INTERVALS)
                    .max(Duration::from_millis(RECEIPT_EARLY_WAIT_MS_MIN)),
                healthy: healthy.clone(),
                metrics,
                spares: spares.clone(),
                backpressure: backpressure.clone(),
            };
            std::thread::Builder::new()
                .name("cage-receipts".into())
                .spawn(move || write_batches(sink, key, rx, shared))?
        };
        let batch_count_max = config.batch_count_max as usize;
        let assembler = Arc::new(Assembler {
            lanes: (0..lanes_count)
                .map(|_| {
                    CachePadded::new(Mutex::new(Lane {
                        tx: Some(tx.clone()),
                        ..Lane::default()
                    }))
                })
                .collect(),
            next_batch_index: AtomicU64::new(tip.next_batch_index),
            spares,
            backpressure,
        });
        drop(tx);
        let timer = {
            let assembler = assembler.clone();
            let interval = config.flush_interval();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    // No await between taking and handing over: an abort
                    // (close) lands only on the tick.
                    if assembler.send(assembler.take_all()).is_err() {
                        return;
                    }
                }
            })
        };
        Ok(ReceiptLog {
            assembler,
            batch_count_max,
            healthy,
            timer,
            writer: parking_lot::Mutex::new(Some(writer)),
        })
    }

    /// False once the writer failed: the proxy then refuses requests.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Adds a receipt to this thread's lane; returns its hash and batch.
    /// The receipt is encoded once, into a per-thread buffer, hashed from
    /// there and its bytes appended to the batch (what the writer stores).
    pub async fn record(&self, receipt: ReceiptView<'_>) -> Result<ReceiptTicket, RecordError> {
        let assembler = &*self.assembler;
        // Before anything is recorded: cancelling this wait loses nothing.
        assembler.backpressure.wait_for_room(&self.healthy).await?;
        let lane = &assembler.lanes[this_thread_lane(assembler.lanes.len())];
        let (ticket, own) = RECEIPT_SCRATCH.with_borrow_mut(|scratch| {
            let receipt_hash = receipt.hash_into(scratch)?;
            let encoded = scratch.get(RECEIPT_HASH_PREFIX_BYTES..).unwrap_or_default();
            let mut lane = lane.lock();
            if lane.tx.is_none() {
                return Err(RecordError::WriterStopped);
            }
            let batch_index = match lane.batch_index {
                Some(index) => index,
                None => {
                    let index = assembler.next_batch_index.fetch_add(1, Ordering::Relaxed);
                    lane.batch_index = Some(index);
                    index
                }
            };
            if lane.hashes.capacity() == 0 {
                // First batch of this lane (later ones reuse the writer's
                // spares): size it once instead of doubling up to the
                // batch size.
                lane.hashes.reserve_exact(self.batch_count_max);
                lane.receipt_bytes
                    .reserve_exact(self.batch_count_max * (encoded.len() + 16));
            }
            lane.receipt_bytes.extend_from_slice(encoded);
            lane.hashes.push(receipt_hash);
            // Sealed under the same lock that filled it: a thread sharing
            // the lane can never push it past the batch size.
            let own = if lane.hashes.len() >= self.batch_count_max {
                lane.take(&assembler.spares)
            } else {
                None
            };
            let ticket = ReceiptTicket {
                receipt_hash,
                batch_index,
            };
            Ok((ticket, own))
        })?;
        if let Some(own) = own {
            // Every open batch numbered before this one (see [`Assembler`]),
            // so the writer need not hold this one back for them.
            let mut sealed = assembler.take_where(|index| index < ticket.batch_index);
            sealed.push(own);
            assembler.send(sealed)?;
        }
        Ok(ticket)
    }

    /// Seals every open batch now (they are written shortly after).
    pub async fn flush(&self) -> Result<(), RecordError> {
        self.assembler.send(self.assembler.take_all())
    }

    /// Seals the last batches, stops the writer and waits until everything
    /// is on disk. Later [`ReceiptLog::record`] calls fail with
    /// [`RecordError::WriterStopped`]; a second close reports an error.
    pub async fn close(&self) -> WriterReport {
        self.timer.abort();
        let mut sealed = Vec::new();
        for lane in &self.assembler.lanes {
            let mut lane = lane.lock();
            if let Some(s) = lane.take(&self.assembler.spares) {
                sealed.push(s);
            }
            lane.tx = None;
        }
        sealed.sort_unstable_by_key(|(batch, _)| batch.batch_index);
        let _ = self.assembler.send(sealed);
        let writer = self.writer.lock().take();
        let joined = tokio::task::spawn_blocking(move || writer.map(|w| w.join()))
            .await
            .ok()
            .flatten();
        match joined {
            Some(Ok(report)) => report,
            _ => WriterReport {
                batches_written: 0,
                receipts_written: 0,
                tip: ChainTip::GENESIS,
                error: Some("the receipt writer was already closed or panicked".into()),
            },
        }
    }
}

impl Drop for ReceiptLog {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

/// What the writer thread shares with the log.
struct WriterShared {
    /// How long a batch may be held back for a missing lower index before
    /// the writer gives up on it (see [`RECEIPT_EARLY_WAIT_FLUSH_INTERVALS`]).
    early_wait_max: Duration,
    healthy: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    spares: Arc<Spares>,
    backpressure: Arc<Backpressure>,
}

impl WriterShared {
    /// The one way the writer stops the cage: requests are refused from now
    /// on, the failure is counted, and requests waiting for room wake to see
    /// it.
    fn fail_closed(&self) {
        self.healthy.store(false, Ordering::Relaxed);
        self.metrics.receipt_write_failed();
        self.backpressure.room.notify_waiters();
    }
}

/// Marks the log unhealthy if the writer thread unwinds (a panic in a sink
/// or the replica), so the proxy refuses requests instead of answering with
/// receipts nobody will write.
struct UnhealthyOnUnwind<'a>(&'a WriterShared);

impl Drop for UnhealthyOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("the receipt writer panicked; the cage now refuses requests");
            self.0.fail_closed();
        }
    }
}

fn write_batches(
    mut sink: Box<dyn ReceiptSink>,
    key: SigningKey,
    rx: crossbeam_channel::Receiver<PendingBatch>,
    shared: WriterShared,
) -> WriterReport {
    let _guard = UnhealthyOnUnwind(&shared);
    let mut report = WriterReport {
        batches_written: 0,
        receipts_written: 0,
        tip: sink.tip(),
        error: None,
    };
    // Lanes number their batches when they open them and seal them when
    // full or on the timer, so batches may arrive out of order; hold early
    // ones back (see `Assembler` for why few ever wait).
    let mut early: std::collections::BTreeMap<u64, PendingBatch> =
        std::collections::BTreeMap::new();
    // The missing index the writer has been holding batches back for, and
    // since when.
    let mut held: Option<(u64, std::time::Instant)> = None;
    loop {
        let arrived = match held {
            None => rx.recv().ok(),
            Some((_, since)) => {
                match rx.recv_timeout(shared.early_wait_max.saturating_sub(since.elapsed())) {
                    Ok(batch) => Some(batch),
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => None,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        // Cannot happen while every reserved index is sealed
                        // (see `Assembler`); if it does, fail closed rather
                        // than hold receipts, and requests, forever.
                        let missing = sink.tip().next_batch_index;
                        tracing::error!(
                            missing,
                            waiting = early.len(),
                            "receipt batch never arrived; the cage now refuses requests"
                        );
                        shared.fail_closed();
                        report.error = Some(format!(
                            "receipt batch {missing} never arrived within {:?} while {} later batches waited",
                            shared.early_wait_max,
                            early.len()
                        ));
                        for _ in std::mem::take(&mut early) {
                            shared.backpressure.written();
                        }
                        held = None;
                        continue;
                    }
                }
            }
        };
        let Some(arrived) = arrived else { break };
        if report.error.is_some() {
            // Keep draining (and counting) so waiting requests see the
            // failure instead of waiting for room.
            shared.backpressure.written();
            continue;
        }
        early.insert(arrived.batch_index, arrived);
        while let Some(pending) = early.remove(&sink.tip().next_batch_index) {
            write_one(&mut *sink, &key, pending, &shared, &mut report);
            shared.backpressure.written();
        }
        let missing = sink.tip().next_batch_index;
        held = match held {
            _ if early.is_empty() => None,
            Some((index, since)) if index == missing => Some((index, since)),
            _ => Some((missing, std::time::Instant::now())),
        };
    }
    // Release anything still counted (nobody waits on a closed log, but
    // the count stays true).
    for _ in 0..early.len() {
        shared.backpressure.written();
    }
    if !early.is_empty() && report.error.is_none() {
        report.error = Some(format!(
            "{} sealed receipt batches never followed batch {}",
            early.len(),
            sink.tip().next_batch_index
        ));
    }
    report
}

fn write_one(
    sink: &mut dyn ReceiptSink,
    key: &SigningKey,
    pending: PendingBatch,
    shared: &WriterShared,
    report: &mut WriterReport,
) {
    let tip = sink.tip();
    assert_eq!(
        pending.batch_index, tip.next_batch_index,
        "batches reach the writer in index order"
    );
    let count = pending.hashes.len() as u64;
    let batch = EncodedBatch::seal(
        &tip,
        pending.receipt_bytes,
        &pending.hashes,
        key,
        now_unix_ms(),
    );
    match sink.append(&batch) {
        Ok(()) => {
            report.batches_written += 1;
            report.receipts_written += count;
            report.tip = sink.tip();
            shared.metrics.receipt_batch_written(count);
        }
        Err(e) => {
            tracing::error!(error = %e, "receipt writer failed; the cage now refuses requests");
            shared.fail_closed();
            report.error = Some(e.to_string());
        }
    }
    shared.spares.give(batch.receipt_bytes, pending.hashes);
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// A receipt log's config for tests: where (unused by the log itself,
    /// which gets its sink), batch size and timer.
    fn log_config(path: PathBuf, batch_count_max: u32, flush_interval_ms: u64) -> ReceiptsConfig {
        ReceiptsConfig {
            path,
            batch_count_max,
            flush_interval_ms,
            response_header: false,
            store_pinned_batches_max: 0,
            segment_bytes_max: 0,
            segments_kept_max: 0,
            archive_dir: None,
        }
    }

    pub(crate) fn sample(i: u64) -> Receipt {
        Receipt {
            time_unix_ms: 1_700_000_000_000 + i,
            client_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8)),
            key_id: (i.is_multiple_of(2)).then(|| format!("key-{i}")),
            request_hash: request_hash("GET", "example.com", "/x?y=1", None),
            decision: if i.is_multiple_of(3) {
                Decision::Forwarded
            } else {
                Decision::SignatureRejected
            },
            detail: "bad_signature".into(),
            status: 200,
            upstream_status: (i.is_multiple_of(3)).then_some(200),
            response_hash: Hash32::ZERO,
            policy_version: 7,
            policy_digest: [9; 32],
        }
    }

    #[test]
    fn receipt_round_trips_and_hash_depends_on_every_field() {
        let r = sample(0);
        let bytes = r.to_canonical_bytes().unwrap();
        assert_eq!(Receipt::from_canonical_bytes(&bytes).unwrap(), r);
        let mut v6 = sample(0);
        v6.client_ip = "2001:db8::1".parse().unwrap();
        let bytes = v6.to_canonical_bytes().unwrap();
        assert_eq!(Receipt::from_canonical_bytes(&bytes).unwrap(), v6);
        let mut other = sample(0);
        other.status = 201;
        assert_ne!(other.hash().unwrap(), r.hash().unwrap());
        // Bad decision code is refused.
        let mut bytes = r.to_canonical_bytes().unwrap();
        let at = 1 + 8 + 5 + 1 + 4 + 5 + 32;
        bytes[at] = 0xee;
        assert!(Receipt::from_canonical_bytes(&bytes).is_err());
    }

    #[test]
    fn one_encoder_two_sinks_agree() {
        for i in 0..6 {
            let mut r = sample(i);
            if i == 4 {
                r.client_ip = "2001:db8::7".parse().unwrap();
            }
            let canonical = r.to_canonical_bytes().unwrap();
            let mut buf = Vec::new();
            let hash = r.as_view().hash_into(&mut buf).unwrap();
            assert_eq!(&buf[RECEIPT_HASH_PREFIX_BYTES..], &canonical[..]);
            assert_eq!(
                hash,
                hash_tagged(DomainTag::CageReceipt, &[&[KIND_RECEIPT], &canonical])
            );
            assert_eq!(r.hash().unwrap(), hash);
        }
        // Over-long strings fail like the canonical writer, at the same offset.
        let mut long = sample(0);
        long.detail = "d".repeat(RECEIPT_DETAIL_LEN_BYTES_MAX as usize + 1);
        let writer_err = long.to_canonical_bytes().unwrap_err();
        let view_err = long.as_view().hash_into(&mut Vec::new()).unwrap_err();
        assert_eq!(view_err.to_string(), writer_err.to_string());
        let mut long = sample(1);
        long.key_id = Some("k".repeat(KEY_ID_LEN_BYTES_MAX as usize + 1));
        let writer_err = long.to_canonical_bytes().unwrap_err();
        let view_err = long.as_view().hash_into(&mut Vec::new()).unwrap_err();
        assert_eq!(view_err.to_string(), writer_err.to_string());
    }

    #[test]
    fn encoded_batch_frame_is_the_signed_batch_encoding() {
        let key = SigningKey::from_seed(&[4; 32]);
        let receipts: Vec<Receipt> = (0..5).map(sample).collect();
        let hashes: Vec<Hash32> = receipts.iter().map(|r| r.hash().unwrap()).collect();
        let signed = SignedBatch::seal(&ChainTip::GENESIS, receipts, &hashes, &key, 9);
        let mut bytes = Vec::new();
        let mut scratch = Vec::new();
        for r in &signed.receipts {
            r.as_view().hash_into(&mut scratch).unwrap();
            bytes.extend_from_slice(&scratch[RECEIPT_HASH_PREFIX_BYTES..]);
        }
        let encoded = EncodedBatch::seal(&ChainTip::GENESIS, bytes, &hashes, &key, 9);
        assert_eq!(encoded, signed.to_encoded().unwrap());
        let mut frame = Vec::new();
        encoded.write_frame(&mut frame).unwrap();
        let body = signed.to_canonical_bytes().unwrap();
        assert_eq!(&frame[..4], &(body.len() as u32).to_le_bytes());
        assert_eq!(&frame[4..], &body[..]);
        assert_eq!(encoded.header.next_tip(), signed.next_tip());
    }

    #[test]
    fn receipts_root_is_the_core_merkle_root() {
        use metanode_core::merkle::leaf_hash;
        for n in [0usize, 1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 100, 4096, 4097] {
            let hashes: Vec<Hash32> = (0..n as u64)
                .map(|i| blake3_256(&i.to_le_bytes()))
                .collect();
            let leaves: Vec<Hash32> = hashes.iter().map(|h| leaf_hash(h.as_bytes())).collect();
            assert_eq!(receipts_root(&hashes), root_of(&leaves), "{n} receipts");
        }
    }

    #[test]
    fn request_hash_separates_fields() {
        let a = request_hash("GET", "ab", "/c", None);
        let b = request_hash("GET", "a", "b/c", None);
        assert_ne!(a, b);
        let d = Hash32([1; 32]);
        assert_ne!(a, request_hash("GET", "ab", "/c", Some(&d)));
    }

    #[test]
    fn decisions_are_unique_and_decode() {
        for (i, d) in Decision::ALL.iter().enumerate() {
            assert_eq!(Decision::from_code(d.code()), Some(*d));
            assert_eq!(d.index(), i);
        }
        assert_eq!(Decision::from_code(999), None);
    }

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate_utf8("héllo", 2), "h");
        assert_eq!(truncate_utf8("abc", 10), "abc");
    }

    fn write_file(dir: &Path, key: &SigningKey, batches: usize) -> PathBuf {
        let path = dir.join("receipts.log");
        let mut sink = FileSink::open(&path, &key.public_key()).unwrap();
        for b in 0..batches {
            let receipts: Vec<Receipt> = (0..3).map(|i| sample(b as u64 * 3 + i)).collect();
            let hashes: Vec<Hash32> = receipts.iter().map(|r| r.hash().unwrap()).collect();
            let batch = SignedBatch::seal(&sink.tip(), receipts, &hashes, key, 1);
            sink.append(&batch.to_encoded().unwrap()).unwrap();
        }
        path
    }

    #[test]
    fn file_sink_verifies_and_continues() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_seed(&[1; 32]);
        let path = write_file(dir.path(), &key, 2);
        let report = verify_receipts(&path, &key.public_key()).unwrap();
        assert_eq!(report.batches_count, 2);
        assert_eq!(report.receipts_count, 6);
        // Reopen continues the chain.
        let mut sink = FileSink::open(&path, &key.public_key()).unwrap();
        assert_eq!(sink.tip(), report.tip);
        let receipts = vec![sample(100)];
        let hashes = vec![receipts[0].hash().unwrap()];
        let batch = SignedBatch::seal(&sink.tip(), receipts, &hashes, &key, 2);
        sink.append(&batch.to_encoded().unwrap()).unwrap();
        let report = verify_receipts(&path, &key.public_key()).unwrap();
        assert_eq!((report.batches_count, report.receipts_count), (3, 7));
        let all = read_receipts(&path, &key.public_key()).unwrap();
        assert_eq!(all.len(), 7);
        assert_eq!(all[6], sample(100));
    }

    #[test]
    fn tampering_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_seed(&[1; 32]);
        let path = write_file(dir.path(), &key, 2);
        let good = std::fs::read(&path).unwrap();
        // Flip a byte inside the first batch's first receipt (its status).
        let mut bad = good.clone();
        let at = 8 + 4 + BatchHeader::ENCODED_LEN_MIN + 4 + 20;
        bad[at] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let err = verify_receipts(&path, &key.public_key()).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyReceiptsError::Batch { batch_index: 0, .. }
                    | VerifyReceiptsError::Decode { .. }
            ),
            "{err}"
        );
        // An existing bad file is never appended to.
        assert!(matches!(
            FileSink::open(&path, &key.public_key()),
            Err(OpenSinkError::Existing(_))
        ));
        // Another key's file does not verify.
        std::fs::write(&path, &good).unwrap();
        let other = SigningKey::from_seed(&[2; 32]);
        let err = verify_receipts(&path, &other.public_key()).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyReceiptsError::Batch {
                    source: BatchError::UnexpectedSigner { .. },
                    ..
                }
            ),
            "{err}"
        );
        // Truncation is reported by verify and cut off by open.
        std::fs::write(&path, &good[..good.len() - 10]).unwrap();
        let err = verify_receipts(&path, &key.public_key()).unwrap_err();
        assert!(
            matches!(err, VerifyReceiptsError::Truncated { .. }),
            "{err}"
        );
        let sink = FileSink::open(&path, &key.public_key()).unwrap();
        assert_eq!(sink.tip().next_batch_index, 1);
        let report = verify_receipts(&path, &key.public_key()).unwrap();
        assert_eq!(report.batches_count, 1);
    }

    #[test]
    fn dropping_a_middle_batch_breaks_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_seed(&[1; 32]);
        let path = write_file(dir.path(), &key, 3);
        let bytes = std::fs::read(&path).unwrap();
        let frame_len =
            |at: usize| 4 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let first = frame_len(8);
        let second = frame_len(8 + first);
        let mut cut = bytes[..8 + first].to_vec();
        cut.extend_from_slice(&bytes[8 + first + second..]);
        std::fs::write(&path, &cut).unwrap();
        let err = verify_receipts(&path, &key.public_key()).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyReceiptsError::Batch {
                    batch_index: 1,
                    source: BatchError::OutOfOrder { .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn receipt_log_batches_by_count_and_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_seed(&[3; 32]);
        let path = dir.path().join("r.log");
        // The timer is long enough that only the count and close seal here.
        let config = log_config(path.clone(), 4, 60_000);
        let sink = FileSink::open(&path, &key.public_key()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let log = ReceiptLog::start(
            Box::new(sink),
            SigningKey::from_seed(&[3; 32]),
            &config,
            metrics.clone(),
            1,
        )
        .unwrap();
        let mut tickets = Vec::new();
        for i in 0..10 {
            tickets.push(log.record(sample(i).as_view()).await.unwrap());
        }
        assert_eq!(tickets[0].batch_index, 0);
        assert_eq!(tickets[3].batch_index, 0);
        assert_eq!(tickets[4].batch_index, 1);
        assert_eq!(tickets[9].batch_index, 2);
        assert_eq!(tickets[5].receipt_hash, sample(5).hash().unwrap());
        assert!(tickets[5].header_value().ends_with("; batch=1"));
        let report = log.close().await;
        assert_eq!(report.error, None);
        assert_eq!((report.batches_written, report.receipts_written), (3, 10));
        assert!(matches!(
            log.record(sample(11).as_view()).await,
            Err(RecordError::WriterStopped)
        ));
        let verified = verify_receipts(&path, &key.public_key()).unwrap();
        assert_eq!((verified.batches_count, verified.receipts_count), (3, 10));
        let all = read_receipts(&path, &key.public_key()).unwrap();
        assert_eq!(all, (0..10).map(sample).collect::<Vec<_>>());
        assert_eq!(metrics.snapshot().receipts_written, 10);
    }

    /// A sink that also notes how many receipts each appended batch held,
    /// so a test can tell which batch a receipt landed in.
    struct CountingSink {
        inner: FileSink,
        counts: Arc<Mutex<Vec<(u64, u32)>>>,
    }

    impl ReceiptSink for CountingSink {
        fn tip(&self) -> ChainTip {
            self.inner.tip()
        }

        fn append(&mut self, batch: &EncodedBatch) -> Result<(), SinkError> {
            self.inner.append(batch)?;
            self.counts
                .lock()
                .push((batch.header.batch_index, batch.header.receipts_count));
            Ok(())
        }
    }

    /// Four threads record, each into its own lane: two quiet ones first,
    /// then two busy ones at once. Every receipt lands in the batch its
    /// ticket names, batches are chained in index order with no gap, and a
    /// full batch also seals the quiet lanes' older batches (the timer is an
    /// hour away here).
    #[test]
    fn lanes_number_batches_and_keep_every_receipt_in_its_named_batch() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_seed(&[4; 32]);
        let path = dir.path().join("r.log");
        let config = log_config(path.clone(), 8, 3_600_000);
        let counts = Arc::new(Mutex::new(Vec::new()));
        let sink = CountingSink {
            inner: FileSink::open(&path, &key.public_key()).unwrap(),
            counts: counts.clone(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let log = Arc::new(
            runtime
                .block_on(async {
                    ReceiptLog::start(
                        Box::new(sink),
                        SigningKey::from_seed(&[4; 32]),
                        &config,
                        Arc::new(Metrics::new()),
                        4,
                    )
                })
                .unwrap(),
        );
        // Quiet lanes 2 and 3 record 3 receipts first, opening batches 0
        // and 1; then busy lanes 0 and 1 record 200 each (25 full batches).
        let record_in = |lane: usize, count: u64| {
            let log = log.clone();
            std::thread::spawn(move || {
                bind_receipt_lane(lane);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                (0..count)
                    .map(|i| {
                        let receipt = sample(lane as u64 * 1_000 + i);
                        let ticket = rt.block_on(log.record(receipt.as_view())).unwrap();
                        (receipt, ticket)
                    })
                    .collect::<Vec<_>>()
            })
        };
        let mut recorded: Vec<(Receipt, ReceiptTicket)> = Vec::new();
        recorded.extend(record_in(2, 3).join().unwrap());
        recorded.extend(record_in(3, 3).join().unwrap());
        let quiet: Vec<u64> = recorded.iter().map(|(_, t)| t.batch_index).collect();
        assert_eq!(quiet, [0, 0, 0, 1, 1, 1]);
        for t in [record_in(0, 200), record_in(1, 200)] {
            recorded.extend(t.join().unwrap());
        }
        // The quiet lanes' partial batches were sealed without the timer (an
        // hour away), by the sweep of a later full batch, and written (if the sweep is removed,
        // this waits out the deadline and fails).
        for lane in &log.assembler.lanes[2..] {
            assert_eq!(lane.lock().batch_index, None);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !counts.lock().iter().any(|(index, _)| *index == 1) {
            assert!(
                std::time::Instant::now() < deadline,
                "batch 1 was never written: {:?}",
                counts.lock()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let report = runtime.block_on(log.close());
        assert_eq!(report.error, None);
        assert_eq!(report.receipts_written, 406);

        let counts = counts.lock().clone();
        let indices: Vec<u64> = counts.iter().map(|(i, _)| *i).collect();
        assert_eq!(indices, (0..counts.len() as u64).collect::<Vec<_>>());
        assert!(counts.iter().all(|(_, n)| (1..=8).contains(n)));
        let all = read_receipts(&path, &key.public_key()).unwrap();
        assert_eq!(all.len(), 406);
        let mut batch_of = std::collections::HashMap::new();
        let mut at = 0usize;
        for (index, n) in &counts {
            for r in &all[at..at + *n as usize] {
                batch_of.insert(r.hash().unwrap(), *index);
            }
            at += *n as usize;
        }
        for (receipt, ticket) in &recorded {
            assert_eq!(ticket.receipt_hash, receipt.hash().unwrap());
            assert_eq!(
                batch_of.get(&ticket.receipt_hash),
                Some(&ticket.batch_index)
            );
        }
    }

    /// A replica that keeps what it is given (and which of it is pinned),
    /// fails while told to, and panics while told to.
    #[derive(Clone, Default)]
    struct FakeReplica {
        stored: Arc<Mutex<Vec<Vec<u8>>>>,
        pinned: Arc<Mutex<std::collections::BTreeSet<String>>>,
        unpins: Arc<AtomicUsize>,
        failing: Arc<AtomicBool>,
        panicking: Arc<AtomicBool>,
    }

    impl BatchReplica for FakeReplica {
        fn put(&mut self, signed_batch: &[u8]) -> Result<String, BatchReplicaError> {
            assert!(!self.panicking.load(Ordering::Relaxed), "store bug");
            if self.failing.load(Ordering::Relaxed) {
                return Err("store is full".into());
            }
            let cid = ContentId::raw_blake3_of(signed_batch).to_string();
            self.stored.lock().push(signed_batch.to_vec());
            self.pinned.lock().insert(cid.clone());
            Ok(cid)
        }

        fn unpin(&mut self, cid: &ContentId) -> Result<(), BatchReplicaError> {
            self.unpins.fetch_add(1, Ordering::Relaxed);
            self.pinned.lock().remove(&cid.to_string());
            Ok(())
        }
    }

    /// A replicated sink over the receipt file at `path` with a fresh
    /// [`FakeReplica`], resyncing from the file, keeping `pinned_max`.
    fn replicated(
        path: &Path,
        key: &SigningKey,
        pinned_max: u64,
    ) -> (ReplicatedSink<FileSink>, FakeReplica, Arc<Metrics>) {
        let replica = FakeReplica::default();
        let metrics = Arc::new(Metrics::new());
        let sink = ReplicatedSink::new(
            FileSink::open(path, &key.public_key()).unwrap(),
            Box::new(replica.clone()),
            metrics.clone(),
            Some(path.to_path_buf()),
            pinned_max,
        )
        .unwrap();
        (sink, replica, metrics)
    }

    /// Batch `b` of three sample receipts, sealed after `sink`'s tip.
    fn seal_after(sink: &dyn ReceiptSink, key: &SigningKey, b: u64) -> EncodedBatch {
        let receipts: Vec<Receipt> = (0..3).map(|i| sample(b * 3 + i)).collect();
        let hashes: Vec<Hash32> = receipts.iter().map(|r| r.hash().unwrap()).collect();
        SignedBatch::seal(&sink.tip(), receipts, &hashes, key, 1)
            .to_encoded()
            .unwrap()
    }

    /// With a window of 2, only the file's newest 2 batches are stored at
    /// start and the older ones unpinned (not stored again); as batches
    /// arrive the window slides: the pinned set is always the newest two.
    #[test]
    fn a_retention_window_keeps_the_newest_batches_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_seed(&[6; 32]);
        let path = write_file(dir.path(), &key, 5);
        let (mut sink, replica, metrics) = replicated(&path, &key, 2);
        let newest_two = || {
            let batches = file_batches(&path);
            batches[batches.len() - 2..]
                .iter()
                .map(|b| ContentId::raw_blake3_of(b).to_string())
                .collect::<std::collections::BTreeSet<_>>()
        };
        wait_until("resync", || replica.unpins.load(Ordering::Relaxed) == 3);
        wait_until("resync puts", || replica.stored.lock().len() == 2);
        assert_eq!(*replica.stored.lock(), file_batches(&path)[3..].to_vec());
        assert_eq!(*replica.pinned.lock(), newest_two());
        for b in 5..8u64 {
            let batch = seal_after(&sink, &key, b);
            sink.append(&batch).unwrap();
        }
        wait_until("three more stored", || replica.stored.lock().len() == 5);
        wait_until("three more unpinned", || {
            replica.unpins.load(Ordering::Relaxed) == 6
        });
        assert_eq!(*replica.pinned.lock(), newest_two());
        assert_eq!(metrics.snapshot().receipt_batches_unpinned, 6);
        drop(sink);
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// The signed batches (frames without their length) of a receipt file,
    /// parsed here rather than by `read_signed_batches`, which resync uses:
    /// the test's oracle stays independent of the code it checks.
    fn file_batches(path: &Path) -> Vec<Vec<u8>> {
        let bytes = std::fs::read(path).unwrap();
        let mut at = 8;
        let mut out = Vec::new();
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            out.push(bytes[at + 4..at + 4 + len].to_vec());
            at += 4 + len;
        }
        out
    }

    /// Batches already in the file are put first (resync); every batch the
    /// file gets, the replica gets too, byte for byte and in order; while the
    /// replica fails or panics, batches wait and are retried in order; an
    /// over-full queue drops its oldest, counted; the file never misses a
    /// batch.
    #[test]
    fn replicated_sink_copies_every_batch_and_retries_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_seed(&[6; 32]);
        let seal = |sink: &dyn ReceiptSink, b: u64| seal_after(sink, &key, b);
        // Batch 0 reached the file before the store was there.
        let path = write_file(dir.path(), &key, 1);
        let (mut sink, replica, metrics) = replicated(&path, &key, 0);
        let stored_count = || replica.stored.lock().len();
        let same_as_file = || *replica.stored.lock() == file_batches(&path);
        wait_until("resync of batch 0", || stored_count() == 1);
        for b in 1..3 {
            let batch = seal(&sink, b);
            sink.append(&batch).unwrap();
        }
        wait_until("batches 1-2 stored", || stored_count() == 3);
        assert!(same_as_file(), "the replica got other bytes than the file");

        // Failing, then panicking: batches 3 and 4 wait, then arrive in
        // order once the store works and a new batch wakes the thread.
        replica.failing.store(true, Ordering::Relaxed);
        let batch = seal(&sink, 3);
        sink.append(&batch).unwrap();
        wait_until("a failed put counted", || {
            metrics.snapshot().receipt_replica_errors >= 1
        });
        replica.panicking.store(true, Ordering::Relaxed);
        let batch = seal(&sink, 4);
        sink.append(&batch).unwrap();
        wait_until("a panicking put counted", || {
            metrics.snapshot().receipt_replica_errors >= 2
        });
        replica.panicking.store(false, Ordering::Relaxed);
        replica.failing.store(false, Ordering::Relaxed);
        let batch = seal(&sink, 5);
        sink.append(&batch).unwrap();
        wait_until("batches 3-5 stored", || stored_count() == 6);
        assert!(same_as_file(), "retries broke the order");
        for blob in replica.stored.lock().iter() {
            let batch = SignedBatch::from_canonical_bytes(blob).unwrap();
            assert_eq!(batch.receipts.len(), 3);
        }

        // Failing with room for about two batches: the oldest waiting ones
        // are dropped (counted; they stay in the file), the rest arrive in
        // order, and every batch is either stored or counted as dropped.
        let one_batch_bytes = file_batches(&path)[0].len();
        sink.queue.state.lock().backlog_bytes_max = 2 * one_batch_bytes + one_batch_bytes / 2;
        replica.failing.store(true, Ordering::Relaxed);
        for b in 6..11 {
            let batch = seal(&sink, b);
            sink.append(&batch).unwrap();
        }
        replica.failing.store(false, Ordering::Relaxed);
        let batch = seal(&sink, 11);
        sink.append(&batch).unwrap();
        drop(sink);
        let in_file = file_batches(&path);
        assert_eq!(in_file.len(), 12);
        let stored = replica.stored.lock().clone();
        let m = metrics.snapshot();
        assert!(m.receipt_batches_replica_dropped >= 2, "{m:?}");
        assert_eq!(
            stored.len() as u64 + m.receipt_batches_replica_dropped,
            12,
            "every batch is stored or counted as dropped"
        );
        // Stored batches are an in-order subsequence of the file's, ending
        // with the last one.
        let mut at = 0;
        for blob in &stored {
            at += in_file[at..]
                .iter()
                .position(|b| b == blob)
                .expect("a stored blob out of order or not in the file")
                + 1;
        }
        assert_eq!(stored.last(), in_file.last());
        assert!(verify_receipts(&path, &key.public_key()).is_ok());
    }

    /// A panic in the writer thread marks the log unhealthy: the proxy
    /// refuses requests instead of answering with receipts nobody writes.
    #[tokio::test]
    async fn a_panicking_sink_makes_the_log_unhealthy() {
        struct PanickingSink;
        impl ReceiptSink for PanickingSink {
            fn tip(&self) -> ChainTip {
                ChainTip::GENESIS
            }
            fn append(&mut self, _batch: &EncodedBatch) -> Result<(), SinkError> {
                panic!("disk driver bug");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let config = log_config(dir.path().join("unused.log"), 1, 3_600_000);
        let log = ReceiptLog::start(
            Box::new(PanickingSink),
            SigningKey::from_seed(&[8; 32]),
            &config,
            Arc::new(Metrics::new()),
            1,
        )
        .unwrap();
        assert!(log.is_healthy());
        // A batch of one: sealed and handed to the writer, which panics.
        log.record(sample(0).as_view()).await.unwrap();
        wait_until("the log turns unhealthy", || !log.is_healthy());
        assert!(matches!(
            log.record(sample(1).as_view()).await,
            Err(RecordError::WriterStopped)
        ));
    }

    /// A reserved index whose batch never comes (a hole) must not hold the
    /// later batches, and the requests waiting for room, forever: the
    /// writer fails closed after its wait.
    #[tokio::test]
    async fn a_batch_that_never_arrives_fails_the_log_closed() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_seed(&[9; 32]);
        let path = dir.path().join("r.log");
        let log = ReceiptLog::start(
            Box::new(FileSink::open(&path, &key.public_key()).unwrap()),
            SigningKey::from_seed(&[9; 32]),
            &log_config(path.clone(), 1, 1),
            Arc::new(Metrics::new()),
            1,
        )
        .unwrap();
        // Batch 0 is reserved and lost; batch 1 is sealed and waits for it.
        log.assembler
            .next_batch_index
            .fetch_add(1, Ordering::Relaxed);
        let ticket = log.record(sample(0).as_view()).await.unwrap();
        assert_eq!(ticket.batch_index, 1);
        wait_until("the log fails closed", || !log.is_healthy());
        assert!(matches!(
            log.record(sample(1).as_view()).await,
            Err(RecordError::WriterStopped)
        ));
        let report = log.close().await;
        let error = report.error.unwrap_or_default();
        assert!(error.contains("receipt batch 0 never arrived"), "{error}");
        assert_eq!(report.batches_written, 0);
    }
}
