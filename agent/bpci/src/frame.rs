//! BPCI frames: the signed, replay-protected unit every node-to-node message
//! travels in. Pure: no sockets, no runtime.
//!
//! Wire form (canonical encoding, see `metanode_core::encoding`):
//!
//! ```text
//! header    205 bytes  version u8 | src_cluster 32 | dst_cluster 32 | src_node 32
//!                      | service 32 | nonce u64 LE | poh_tick 32 | payload_len u32 LE
//!                      | payload_digest 32
//! signature  64 bytes  Ed25519 by src_node over BLAKE3(0x11 || header)
//! payload    payload_len bytes
//! ```
//!
//! The payload's length prefix is the header's `payload_len`, so the header
//! (and with it the length) is covered by the signature, and the signature
//! comes before the payload: a receiver authenticates a frame, and refuses a
//! stale nonce, from its first 269 bytes, before it reads (or allocates for)
//! a payload of up to [`BPCI_FRAME_PAYLOAD_BYTES_MAX`].
//!
//! The seed spec asks for an "AEAD payload". Frames only ever travel inside a
//! QUIC connection, whose TLS 1.3 record layer already encrypts and
//! authenticates every byte with an AEAD (AES-GCM or ChaCha20-Poly1305) under
//! keys from the hybrid X25519MLKEM768 exchange; a second AEAD per frame would
//! cost a copy and a key schedule and add nothing on that link. What the
//! record layer cannot give is end-to-end origin authentication of a frame
//! (it proves the *connection* peer, not who wrote the bytes, and says
//! nothing once a frame is stored or relayed): that is the signature, which
//! binds the payload through `payload_digest = BLAKE3(payload)`.
//!
//! Replay rule: per (src_node, service), a frame is accepted only if its
//! nonce is strictly greater than the last accepted one, so replays *and*
//! reorders are refused. Nonces need not be contiguous.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use metanode_core::encoding::{Decode, DecodeError, Encode, Reader, Writer, decode_version};
use metanode_core::hash::{Hash32, blake3_256};
use metanode_core::keys::{PublicKey, Signature, SigningKey};
use metanode_core::limits::{
    BPCI_FRAME_PAYLOAD_BYTES_MAX, BPCI_PEERS_COUNT_MAX, BPCI_SERVICES_PER_PEER_COUNT_MAX,
};
use metanode_core::tags::DomainTag;

/// The frame version this build writes.
pub const FRAME_VERSION: u8 = 1;
/// Frame versions this build reads.
pub const FRAME_VERSIONS: &[u8] = &[FRAME_VERSION];
/// Encoded header length in bytes.
pub const FRAME_HEADER_LEN: usize = 1 + 32 + 32 + 32 + 32 + 8 + 32 + 4 + 32;
/// Header plus signature: what a receiver reads before the payload.
pub const FRAME_HEAD_LEN: usize = FRAME_HEADER_LEN + Signature::LEN;

/// Bits the wall-clock milliseconds are shifted by in
/// [`FrameSigner::nonce_base_from_clock`]: a run may send up to 2^20 frames
/// per millisecond of the time since its predecessor started before the two
/// nonce ranges could meet.
pub const NONCE_BASE_CLOCK_SHIFT: u32 = 20;

/// Which service a frame belongs to: BLAKE3-256 of the service name
/// (`"qbft"`, `"blocksync"`, `"mempool"`), so the wire carries a fixed-width
/// id and new services need no registry.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId(pub Hash32);

impl ServiceId {
    /// The id of the service called `name`.
    pub fn named(name: &str) -> Self {
        ServiceId(blake3_256(name.as_bytes()))
    }

    pub fn hash(&self) -> Hash32 {
        self.0
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceId({})", self.0)
    }
}

/// A node key as errors name it: the 32 key bytes, shown as hex. Errors
/// carry this rather than a [`PublicKey`] (which also holds the decompressed
/// point, 192 bytes) so `Result`s stay small.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub [u8; 32]);

impl From<PublicKey> for NodeId {
    fn from(key: PublicKey) -> Self {
        NodeId(key.to_bytes())
    }
}

impl From<&PublicKey> for NodeId {
    fn from(key: &PublicKey) -> Self {
        NodeId(key.to_bytes())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Hash32(self.0), f)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// The signed part of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub version: u8,
    /// Chain id of the sender's cluster.
    pub src_cluster: Hash32,
    /// Chain id of the cluster the frame is for; receivers refuse others.
    pub dst_cluster: Hash32,
    pub src_node: PublicKey,
    pub service: ServiceId,
    /// Strictly increasing per (src_node, service).
    pub nonce: u64,
    /// The sender's latest PoH tick, or zero when it has none.
    pub poh_tick: Hash32,
    pub payload_len: u32,
    /// `BLAKE3(payload)`: the signature covers the payload through it.
    pub payload_digest: Hash32,
}

impl FrameHeader {
    /// `BLAKE3(0x11 || header)`: what the signature is over.
    pub fn signing_hash(&self) -> Hash32 {
        let mut w = Writer::with_capacity(FRAME_HEADER_LEN);
        self.encode(&mut w);
        // Every field is fixed width, so encoding cannot break a bound.
        let bytes = w.finish().unwrap_or_default();
        assert_eq!(bytes.len(), FRAME_HEADER_LEN, "frame header is fixed width");
        metanode_core::hash::hash_tagged(DomainTag::BpciFrame, &[&bytes])
    }
}

impl Encode for FrameHeader {
    fn encode(&self, w: &mut Writer) {
        w.put_u8(self.version);
        self.src_cluster.encode(w);
        self.dst_cluster.encode(w);
        self.src_node.encode(w);
        self.service.0.encode(w);
        self.nonce.encode(w);
        self.poh_tick.encode(w);
        self.payload_len.encode(w);
        self.payload_digest.encode(w);
    }
}

impl Decode for FrameHeader {
    const ENCODED_LEN_MIN: usize = FRAME_HEADER_LEN;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = decode_version(r, FRAME_VERSIONS)?;
        let src_cluster = Hash32::decode(r)?;
        let dst_cluster = Hash32::decode(r)?;
        let src_node = PublicKey::decode(r)?;
        let service = ServiceId(Hash32::decode(r)?);
        let nonce = u64::decode(r)?;
        let poh_tick = Hash32::decode(r)?;
        let len_offset = r.offset();
        let payload_len = u32::decode(r)?;
        if payload_len > BPCI_FRAME_PAYLOAD_BYTES_MAX {
            return Err(DecodeError::LengthExceedsMax {
                len: payload_len,
                offset: len_offset,
                max: BPCI_FRAME_PAYLOAD_BYTES_MAX,
            });
        }
        let payload_digest = Hash32::decode(r)?;
        Ok(FrameHeader {
            version,
            src_cluster,
            dst_cluster,
            src_node,
            service,
            nonce,
            poh_tick,
            payload_len,
            payload_digest,
        })
    }
}

/// A signed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: FrameHeader,
    /// Ed25519 by `header.src_node` over [`FrameHeader::signing_hash`].
    pub signature: Signature,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The first [`FRAME_HEAD_LEN`] bytes of the encoding: header and
    /// signature. Written separately from the payload so a large payload is
    /// never copied into a frame buffer.
    pub fn head_bytes(&self) -> [u8; FRAME_HEAD_LEN] {
        encode_head(&self.header, &self.signature)
    }
}

fn encode_head(header: &FrameHeader, signature: &Signature) -> [u8; FRAME_HEAD_LEN] {
    let mut w = Writer::with_capacity(FRAME_HEAD_LEN);
    header.encode(&mut w);
    signature.encode(&mut w);
    let bytes = w.finish().unwrap_or_default();
    let mut out = [0u8; FRAME_HEAD_LEN];
    assert_eq!(bytes.len(), FRAME_HEAD_LEN, "frame head is fixed width");
    out.copy_from_slice(&bytes);
    out
}

/// Decodes the fixed-size head of a frame (header and signature).
pub fn decode_head(bytes: &[u8; FRAME_HEAD_LEN]) -> Result<(FrameHeader, Signature), DecodeError> {
    let mut r = Reader::new(bytes);
    let header = FrameHeader::decode(&mut r)?;
    let signature = Signature::decode(&mut r)?;
    r.finish()?;
    Ok((header, signature))
}

impl Encode for Frame {
    fn encode(&self, w: &mut Writer) {
        self.header.encode(w);
        self.signature.encode(w);
        // The length was written in the header; a payload that disagrees
        // with it would not decode, so refuse to write one.
        assert_eq!(
            self.payload.len(),
            self.header.payload_len as usize,
            "frame payload length must match its header"
        );
        w.put_raw(&self.payload);
    }
}

impl Decode for Frame {
    const ENCODED_LEN_MIN: usize = FRAME_HEAD_LEN;

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let header = FrameHeader::decode(r)?;
        let signature = Signature::decode(r)?;
        let payload = r
            .read_raw(header.payload_len as usize, "frame payload")?
            .to_vec();
        Ok(Frame {
            header,
            signature,
            payload,
        })
    }
}

/// Why a frame was refused (by the signer, the verifier or the replay guard).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("malformed frame from node {from}: {source}")]
    Malformed {
        from: NodeId,
        #[source]
        source: DecodeError,
    },
    #[error(
        "frame payload of {len} bytes for service {service} exceeds maximum {max} (node {node}, nonce {nonce})"
    )]
    PayloadTooLarge {
        node: NodeId,
        service: ServiceId,
        nonce: u64,
        len: usize,
        max: u32,
    },
    #[error(
        "frame from unknown node {node} (service {service}, nonce {nonce}): key is not in the pinned peer set"
    )]
    UnknownNode {
        node: NodeId,
        service: ServiceId,
        nonce: u64,
    },
    #[error(
        "frame claims node {node} but arrived from authenticated peer {peer} (service {service}, nonce {nonce})"
    )]
    SourceMismatch {
        node: NodeId,
        peer: NodeId,
        service: ServiceId,
        nonce: u64,
    },
    #[error(
        "frame from node {node} (service {service}, nonce {nonce}) is for cluster {cluster}, not this one"
    )]
    WrongCluster {
        node: NodeId,
        service: ServiceId,
        nonce: u64,
        /// The frame's destination cluster (ours is [`FrameVerifier::cluster`]).
        cluster: Hash32,
    },
    #[error("bad signature on frame from node {node} (service {service}, nonce {nonce})")]
    BadSignature {
        node: NodeId,
        service: ServiceId,
        nonce: u64,
    },
    #[error("payload digest mismatch on frame from node {node} (service {service}, nonce {nonce})")]
    DigestMismatch {
        node: NodeId,
        service: ServiceId,
        nonce: u64,
    },
    #[error(
        "replayed or reordered frame from node {node} on service {service}: nonce {nonce} is not above last accepted {last}"
    )]
    Replayed {
        node: NodeId,
        service: ServiceId,
        nonce: u64,
        last: u64,
    },
    #[error(
        "node {node} uses more than {max} services; frame on service {service} (nonce {nonce}) refused"
    )]
    TooManyServices {
        node: NodeId,
        service: ServiceId,
        nonce: u64,
        max: usize,
    },
    #[error("{count} pinned peers exceed maximum {max}")]
    TooManyPeers { count: usize, max: usize },
    #[error("nonces of node {node} are exhausted (service {service}, last nonce {nonce})")]
    NonceExhausted {
        node: NodeId,
        service: ServiceId,
        nonce: u64,
    },
}

/// The reason a frame was rejected, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    Malformed,
    PayloadTooLarge,
    UnknownNode,
    SourceMismatch,
    WrongCluster,
    BadSignature,
    DigestMismatch,
    Replayed,
    TooManyServices,
}

impl FrameError {
    /// The counter this error goes to; `None` for errors that are not about
    /// a received frame (configuration, nonce exhaustion on our side).
    pub fn reason(&self) -> Option<RejectReason> {
        Some(match self {
            FrameError::Malformed { .. } => RejectReason::Malformed,
            FrameError::PayloadTooLarge { .. } => RejectReason::PayloadTooLarge,
            FrameError::UnknownNode { .. } => RejectReason::UnknownNode,
            FrameError::SourceMismatch { .. } => RejectReason::SourceMismatch,
            FrameError::WrongCluster { .. } => RejectReason::WrongCluster,
            FrameError::BadSignature { .. } => RejectReason::BadSignature,
            FrameError::DigestMismatch { .. } => RejectReason::DigestMismatch,
            FrameError::Replayed { .. } => RejectReason::Replayed,
            FrameError::TooManyServices { .. } => RejectReason::TooManyServices,
            FrameError::TooManyPeers { .. } | FrameError::NonceExhausted { .. } => return None,
        })
    }
}

/// Rejected-frame counts by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejections {
    pub malformed: u64,
    pub payload_too_large: u64,
    pub unknown_node: u64,
    pub source_mismatch: u64,
    pub wrong_cluster: u64,
    pub bad_signature: u64,
    pub digest_mismatch: u64,
    pub replayed: u64,
    pub too_many_services: u64,
}

impl Rejections {
    pub fn total(&self) -> u64 {
        self.malformed
            + self.payload_too_large
            + self.unknown_node
            + self.source_mismatch
            + self.wrong_cluster
            + self.bad_signature
            + self.digest_mismatch
            + self.replayed
            + self.too_many_services
    }
}

#[derive(Debug, Default)]
struct RejectCounters([AtomicU64; 9]);

impl RejectCounters {
    fn index(reason: RejectReason) -> usize {
        match reason {
            RejectReason::Malformed => 0,
            RejectReason::PayloadTooLarge => 1,
            RejectReason::UnknownNode => 2,
            RejectReason::SourceMismatch => 3,
            RejectReason::WrongCluster => 4,
            RejectReason::BadSignature => 5,
            RejectReason::DigestMismatch => 6,
            RejectReason::Replayed => 7,
            RejectReason::TooManyServices => 8,
        }
    }

    fn add(&self, reason: RejectReason) {
        self.0[Self::index(reason)].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Rejections {
        let get = |r| self.0[Self::index(r)].load(Ordering::Relaxed);
        Rejections {
            malformed: get(RejectReason::Malformed),
            payload_too_large: get(RejectReason::PayloadTooLarge),
            unknown_node: get(RejectReason::UnknownNode),
            source_mismatch: get(RejectReason::SourceMismatch),
            wrong_cluster: get(RejectReason::WrongCluster),
            bad_signature: get(RejectReason::BadSignature),
            digest_mismatch: get(RejectReason::DigestMismatch),
            replayed: get(RejectReason::Replayed),
            too_many_services: get(RejectReason::TooManyServices),
        }
    }
}

/// Signs our outgoing frames and hands out their nonces.
///
/// One counter serves every service: a strictly increasing sequence is
/// strictly increasing on each of its subsequences, so this meets the
/// per-(node, service) rule with no per-service state to bound, and a
/// restart needs only one base.
///
/// Nonces must keep increasing across restarts of this node, or peers
/// (which remember the last nonce per (node, service) for as long as they
/// run) reject everything it sends as replays. [`FrameSigner::new`] takes
/// the first nonce from the caller; a node passes
/// [`FrameSigner::nonce_base_from_clock`] (wall-clock milliseconds shifted
/// left by [`NONCE_BASE_CLOCK_SHIFT`]), which is above every nonce of the
/// previous run as long as the clock did not step back across the restart
/// and that run sent fewer than 2^20 frames per millisecond it lived.
#[derive(Debug)]
pub struct FrameSigner {
    key: Arc<SigningKey>,
    public: PublicKey,
    cluster: Hash32,
    next_nonce: AtomicU64,
}

impl FrameSigner {
    /// A signer for frames from `cluster`, whose first nonce is `nonce_base`.
    pub fn new(key: Arc<SigningKey>, cluster: Hash32, nonce_base: u64) -> Self {
        let public = key.public_key();
        FrameSigner {
            key,
            public,
            cluster,
            next_nonce: AtomicU64::new(nonce_base),
        }
    }

    /// `milliseconds since the Unix epoch << 20` at `now` (0 before 1970).
    pub fn nonce_base_from_clock(now: SystemTime) -> u64 {
        let ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        ms.checked_shl(NONCE_BASE_CLOCK_SHIFT)
            .filter(|v| v >> NONCE_BASE_CLOCK_SHIFT == ms)
            .unwrap_or(u64::MAX)
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    pub fn cluster(&self) -> Hash32 {
        self.cluster
    }

    /// The nonce the next frame will carry.
    pub fn next_nonce(&self) -> u64 {
        self.next_nonce.load(Ordering::Relaxed)
    }

    fn take_nonce(&self, service: ServiceId) -> Result<u64, FrameError> {
        self.next_nonce
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .map_err(|n| FrameError::NonceExhausted {
                node: self.public.into(),
                service,
                nonce: n,
            })
    }

    /// Signs `payload` for `service` in cluster `dst_cluster` with the next
    /// nonce. Frames signed one after the other by one caller carry
    /// increasing nonces; that is the order they must be sent in.
    pub fn sign(
        &self,
        dst_cluster: Hash32,
        service: ServiceId,
        poh_tick: Hash32,
        payload: Vec<u8>,
    ) -> Result<Frame, FrameError> {
        let payload_len = u32::try_from(payload.len())
            .ok()
            .filter(|len| *len <= BPCI_FRAME_PAYLOAD_BYTES_MAX)
            .ok_or(FrameError::PayloadTooLarge {
                node: self.public.into(),
                service,
                nonce: self.next_nonce(),
                len: payload.len(),
                max: BPCI_FRAME_PAYLOAD_BYTES_MAX,
            })?;
        // Hash before taking the nonce: the nonce is then taken and used
        // without a long gap, which keeps per-caller order tight.
        let payload_digest = blake3_256(&payload);
        let nonce = self.take_nonce(service)?;
        let header = FrameHeader {
            version: FRAME_VERSION,
            src_cluster: self.cluster,
            dst_cluster,
            src_node: self.public,
            service,
            nonce,
            poh_tick,
            payload_len,
            payload_digest,
        };
        let signature = self.key.sign(header.signing_hash().as_bytes());
        Ok(Frame {
            header,
            signature,
            payload,
        })
    }
}

/// The last accepted nonce per (node, service), bounded by
/// [`BPCI_PEERS_COUNT_MAX`] nodes × [`BPCI_SERVICES_PER_PEER_COUNT_MAX`]
/// services.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    last: HashMap<PublicKey, HashMap<ServiceId, u64>>,
}

impl ReplayGuard {
    pub fn new() -> Self {
        ReplayGuard::default()
    }

    /// The highest nonce accepted from `node` on `service`, if any.
    pub fn last_accepted(&self, node: &PublicKey, service: ServiceId) -> Option<u64> {
        self.last.get(node)?.get(&service).copied()
    }

    /// Whether a frame with `nonce` would be accepted now; changes nothing.
    pub fn check(
        &self,
        node: &PublicKey,
        service: ServiceId,
        nonce: u64,
    ) -> Result<(), FrameError> {
        match self.last.get(node) {
            Some(services) => match services.get(&service) {
                Some(&last) if nonce <= last => Err(FrameError::Replayed {
                    node: node.into(),
                    service,
                    nonce,
                    last,
                }),
                Some(_) => Ok(()),
                None if services.len() >= BPCI_SERVICES_PER_PEER_COUNT_MAX => {
                    Err(FrameError::TooManyServices {
                        node: node.into(),
                        service,
                        nonce,
                        max: BPCI_SERVICES_PER_PEER_COUNT_MAX,
                    })
                }
                None => Ok(()),
            },
            None if self.last.len() >= BPCI_PEERS_COUNT_MAX => Err(FrameError::UnknownNode {
                node: node.into(),
                service,
                nonce,
            }),
            None => Ok(()),
        }
    }

    /// Accepts `nonce` from `node` on `service` if it is above the last one
    /// accepted there, and remembers it.
    pub fn accept(
        &mut self,
        node: &PublicKey,
        service: ServiceId,
        nonce: u64,
    ) -> Result<(), FrameError> {
        self.check(node, service, nonce)?;
        self.last.entry(*node).or_default().insert(service, nonce);
        Ok(())
    }
}

/// A header whose sender, cluster, signature and nonce freshness were
/// checked by [`FrameVerifier::verify_head`]; only
/// [`FrameVerifier::accept_payload`] turns it into an accepted frame.
#[derive(Debug, Clone)]
pub struct VerifiedHeader {
    header: FrameHeader,
    signature: Signature,
}

impl VerifiedHeader {
    pub fn header(&self) -> &FrameHeader {
        &self.header
    }
}

/// Decides which received frames are accepted: the sender must be the
/// authenticated peer and pinned, the frame must be for our cluster, signed
/// by its sender, carry the payload its digest names, and have a nonce above
/// the last accepted one for (sender, service). Every rejection is counted.
#[derive(Debug)]
pub struct FrameVerifier {
    cluster: Hash32,
    pinned: HashSet<PublicKey>,
    guard: Mutex<ReplayGuard>,
    rejected: RejectCounters,
}

impl FrameVerifier {
    /// A verifier for frames sent to `cluster` by the `pinned` nodes.
    pub fn new(
        cluster: Hash32,
        pinned: impl IntoIterator<Item = PublicKey>,
    ) -> Result<Self, FrameError> {
        let pinned: HashSet<PublicKey> = pinned.into_iter().collect();
        if pinned.len() > BPCI_PEERS_COUNT_MAX {
            return Err(FrameError::TooManyPeers {
                count: pinned.len(),
                max: BPCI_PEERS_COUNT_MAX,
            });
        }
        Ok(FrameVerifier {
            cluster,
            pinned,
            guard: Mutex::new(ReplayGuard::new()),
            rejected: RejectCounters::default(),
        })
    }

    pub fn cluster(&self) -> Hash32 {
        self.cluster
    }

    pub fn is_pinned(&self, node: &PublicKey) -> bool {
        self.pinned.contains(node)
    }

    /// Counts of frames rejected so far, by reason.
    pub fn rejections(&self) -> Rejections {
        self.rejected.snapshot()
    }

    /// The highest nonce accepted from `node` on `service`, if any.
    pub fn last_accepted(&self, node: &PublicKey, service: ServiceId) -> Option<u64> {
        self.lock_guard().last_accepted(node, service)
    }

    fn lock_guard(&self) -> std::sync::MutexGuard<'_, ReplayGuard> {
        // The guard's map is updated by single inserts; a panic elsewhere
        // while holding the lock cannot leave it half-written.
        self.guard.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count<T>(&self, r: Result<T, FrameError>) -> Result<T, FrameError> {
        if let Err(e) = &r
            && let Some(reason) = e.reason()
        {
            self.rejected.add(reason);
        }
        r
    }

    /// Counts a rejection decided outside the verifier (e.g. a frame cut
    /// short by the end of its stream).
    pub fn record_rejection(&self, error: &FrameError) {
        if let Some(reason) = error.reason() {
            self.rejected.add(reason);
        }
    }

    /// Decodes and checks the head of a frame that arrived from the
    /// authenticated peer `from`, before its payload is read.
    pub fn verify_head(
        &self,
        from: &PublicKey,
        head: &[u8; FRAME_HEAD_LEN],
    ) -> Result<VerifiedHeader, FrameError> {
        let decoded = decode_head(head).map_err(|source| FrameError::Malformed {
            from: from.into(),
            source,
        });
        let (header, signature) = self.count(decoded)?;
        self.verify_header(from, header, signature)
    }

    /// Checks a decoded header and its signature (see [`Self::verify_head`]).
    pub fn verify_header(
        &self,
        from: &PublicKey,
        header: FrameHeader,
        signature: Signature,
    ) -> Result<VerifiedHeader, FrameError> {
        self.count(self.check_header(from, &header, &signature))?;
        Ok(VerifiedHeader { header, signature })
    }

    fn check_header(
        &self,
        from: &PublicKey,
        h: &FrameHeader,
        signature: &Signature,
    ) -> Result<(), FrameError> {
        let (node, service, nonce) = (h.src_node, h.service, h.nonce);
        if node != *from {
            return Err(FrameError::SourceMismatch {
                node: node.into(),
                peer: from.into(),
                service,
                nonce,
            });
        }
        if !self.pinned.contains(&node) {
            return Err(FrameError::UnknownNode {
                node: node.into(),
                service,
                nonce,
            });
        }
        if h.payload_len > BPCI_FRAME_PAYLOAD_BYTES_MAX {
            return Err(FrameError::PayloadTooLarge {
                node: node.into(),
                service,
                nonce,
                len: h.payload_len as usize,
                max: BPCI_FRAME_PAYLOAD_BYTES_MAX,
            });
        }
        if h.dst_cluster != self.cluster {
            return Err(FrameError::WrongCluster {
                node: node.into(),
                service,
                nonce,
                cluster: h.dst_cluster,
            });
        }
        node.verify(h.signing_hash().as_bytes(), signature)
            .map_err(|_| FrameError::BadSignature {
                node: node.into(),
                service,
                nonce,
            })?;
        // Refuse a stale nonce before the caller reads a payload for it;
        // the nonce is only recorded once the payload checks out.
        self.lock_guard().check(&node, service, nonce)
    }

    /// Checks `payload` against a verified header and, if it matches and the
    /// nonce is still fresh, records the nonce and returns the frame.
    pub fn accept_payload(
        &self,
        verified: VerifiedHeader,
        payload: Vec<u8>,
    ) -> Result<Frame, FrameError> {
        let VerifiedHeader { header, signature } = verified;
        let (node, service, nonce) = (header.src_node, header.service, header.nonce);
        let result = if payload.len() != header.payload_len as usize
            || blake3_256(&payload) != header.payload_digest
        {
            Err(FrameError::DigestMismatch {
                node: node.into(),
                service,
                nonce,
            })
        } else {
            self.lock_guard().accept(&node, service, nonce)
        };
        self.count(result)?;
        Ok(Frame {
            header,
            signature,
            payload,
        })
    }

    /// All checks on a whole frame received from the authenticated peer
    /// `from`; on success its nonce is recorded.
    pub fn accept(&self, from: &PublicKey, frame: Frame) -> Result<Frame, FrameError> {
        let Frame {
            header,
            signature,
            payload,
        } = frame;
        let verified = self.verify_header(from, header, signature)?;
        self.accept_payload(verified, payload)
    }

    /// Decodes a whole encoded frame and accepts it (see [`Self::accept`]).
    pub fn accept_bytes(&self, from: &PublicKey, bytes: &[u8]) -> Result<Frame, FrameError> {
        let decoded = Frame::from_canonical_bytes(bytes).map_err(|source| FrameError::Malformed {
            from: from.into(),
            source,
        });
        let frame = self.count(decoded)?;
        self.accept(from, frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metanode_core::hash::hash_encoded;

    fn key(seed: u8) -> Arc<SigningKey> {
        Arc::new(SigningKey::from_seed(&[seed; 32]))
    }

    fn cluster() -> Hash32 {
        blake3_256(b"test-chain")
    }

    fn qbft() -> ServiceId {
        ServiceId::named("qbft")
    }

    struct Setup {
        signer: FrameSigner,
        verifier: FrameVerifier,
        from: PublicKey,
    }

    fn setup(base: u64) -> Setup {
        let k = key(1);
        let from = k.public_key();
        Setup {
            signer: FrameSigner::new(k, cluster(), base),
            verifier: FrameVerifier::new(cluster(), [from, key(2).public_key()]).unwrap(),
            from,
        }
    }

    #[test]
    fn header_layout_is_fixed_and_round_trips() {
        let s = setup(7);
        let frame = s
            .signer
            .sign(cluster(), qbft(), Hash32([9; 32]), b"hello".to_vec())
            .unwrap();
        let bytes = frame.to_canonical_bytes().unwrap();
        assert_eq!(bytes.len(), FRAME_HEAD_LEN + 5);
        assert_eq!(FRAME_HEAD_LEN, 269);
        assert_eq!(bytes[0], FRAME_VERSION);
        // Fields in declaration order, little-endian nonce and length.
        assert_eq!(&bytes[1..33], cluster().as_bytes());
        assert_eq!(&bytes[65..97], s.from.as_bytes());
        assert_eq!(&bytes[97..129], blake3_256(b"qbft").as_bytes());
        assert_eq!(&bytes[129..137], &7u64.to_le_bytes());
        assert_eq!(&bytes[137..169], &[9; 32]);
        assert_eq!(&bytes[169..173], &5u32.to_le_bytes());
        assert_eq!(&bytes[173..205], blake3_256(b"hello").as_bytes());
        assert_eq!(&bytes[FRAME_HEAD_LEN..], b"hello");
        assert_eq!(&bytes[..FRAME_HEAD_LEN], &frame.head_bytes());
        let back = Frame::from_canonical_bytes(&bytes).unwrap();
        assert_eq!(back, frame);
        assert_eq!(back.to_canonical_bytes().unwrap(), bytes);
    }

    #[test]
    fn signature_is_over_tagged_header_hash() {
        let s = setup(1);
        let frame = s
            .signer
            .sign(cluster(), qbft(), Hash32::ZERO, vec![1, 2, 3])
            .unwrap();
        let header_bytes = frame.header.to_canonical_bytes().unwrap();
        let mut prefixed = vec![0x11];
        prefixed.extend_from_slice(&header_bytes);
        let expected = blake3_256(&prefixed);
        assert_eq!(frame.header.signing_hash(), expected);
        assert_eq!(
            hash_encoded(DomainTag::BpciFrame, &frame.header).unwrap(),
            expected
        );
        s.from
            .verify(expected.as_bytes(), &frame.signature)
            .unwrap();
    }

    #[test]
    fn decoding_rejects_trailing_bytes_unknown_version_and_oversize() {
        let s = setup(1);
        let frame = s
            .signer
            .sign(cluster(), qbft(), Hash32::ZERO, vec![5; 10])
            .unwrap();
        let bytes = frame.to_canonical_bytes().unwrap();

        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            Frame::from_canonical_bytes(&trailing),
            Err(DecodeError::TrailingBytes { count: 1, .. })
        ));

        let mut short = bytes.clone();
        short.pop();
        assert!(matches!(
            Frame::from_canonical_bytes(&short),
            Err(DecodeError::Truncated { .. })
        ));

        let mut version = bytes.clone();
        version[0] = 2;
        assert!(matches!(
            Frame::from_canonical_bytes(&version),
            Err(DecodeError::UnknownVersion { found: 2, .. })
        ));

        let mut oversize = bytes.clone();
        oversize[169..173].copy_from_slice(&(BPCI_FRAME_PAYLOAD_BYTES_MAX + 1).to_le_bytes());
        assert_eq!(
            Frame::from_canonical_bytes(&oversize),
            Err(DecodeError::LengthExceedsMax {
                len: BPCI_FRAME_PAYLOAD_BYTES_MAX + 1,
                offset: 169,
                max: BPCI_FRAME_PAYLOAD_BYTES_MAX,
            })
        );
        let err = s.verifier.accept_bytes(&s.from, &oversize).unwrap_err();
        assert!(matches!(err, FrameError::Malformed { .. }), "{err}");
        assert_eq!(s.verifier.rejections().malformed, 1);
    }

    #[test]
    fn signer_refuses_oversize_payload() {
        let s = setup(1);
        let len = BPCI_FRAME_PAYLOAD_BYTES_MAX as usize + 1;
        let err = s
            .signer
            .sign(cluster(), qbft(), Hash32::ZERO, vec![0; len])
            .unwrap_err();
        assert!(matches!(err, FrameError::PayloadTooLarge { len: l, .. } if l == len));
        assert!(
            err.to_string().contains("exceeds maximum 34603008"),
            "{err}"
        );
        // No nonce was used up.
        assert_eq!(s.signer.next_nonce(), 1);
        // The largest payload is accepted.
        let frame = s
            .signer
            .sign(cluster(), qbft(), Hash32::ZERO, vec![0; len - 1])
            .unwrap();
        assert_eq!(frame.header.payload_len, BPCI_FRAME_PAYLOAD_BYTES_MAX);
    }

    #[test]
    fn accepts_increasing_nonces_and_rejects_replay_and_reorder() {
        let s = setup(100);
        let f1 = s
            .signer
            .sign(cluster(), qbft(), Hash32::ZERO, b"a".to_vec())
            .unwrap();
        let f2 = s
            .signer
            .sign(cluster(), qbft(), Hash32::ZERO, b"b".to_vec())
            .unwrap();
        let f3 = s
            .signer
            .sign(cluster(), qbft(), Hash32::ZERO, b"c".to_vec())
            .unwrap();
        assert_eq!(
            (f1.header.nonce, f2.header.nonce, f3.header.nonce),
            (100, 101, 102)
        );

        let got = s.verifier.accept(&s.from, f1.clone()).unwrap();
        assert_eq!(got.payload, b"a");
        // Replay of the same frame.
        let err = s.verifier.accept(&s.from, f1.clone()).unwrap_err();
        assert_eq!(
            err,
            FrameError::Replayed {
                node: s.from.into(),
                service: qbft(),
                nonce: 100,
                last: 100
            }
        );
        assert!(
            err.to_string()
                .contains("nonce 100 is not above last accepted 100")
        );
        assert!(err.to_string().contains(&s.from.to_string()));
        // f3 overtakes f2: f3 accepted, then f2 is a reorder and refused.
        s.verifier.accept(&s.from, f3).unwrap();
        let err = s.verifier.accept(&s.from, f2).unwrap_err();
        assert!(matches!(
            err,
            FrameError::Replayed {
                nonce: 101,
                last: 102,
                ..
            }
        ));
        assert_eq!(s.verifier.last_accepted(&s.from, qbft()), Some(102));
        assert_eq!(s.verifier.rejections().replayed, 2);
        assert_eq!(s.verifier.rejections().total(), 2);

        // Another service has its own sequence: a lower nonce is fine there.
        let mempool = ServiceId::named("mempool");
        let other = FrameSigner::new(key(1), cluster(), 50);
        let f = other
            .sign(cluster(), mempool, Hash32::ZERO, vec![])
            .unwrap();
        s.verifier.accept(&s.from, f).unwrap();
        assert_eq!(s.verifier.last_accepted(&s.from, mempool), Some(50));
    }

    #[test]
    fn restarted_sender_with_higher_base_is_accepted_lower_is_not() {
        let s = setup(1_000);
        for _ in 0..3 {
            let f = s
                .signer
                .sign(cluster(), qbft(), Hash32::ZERO, vec![])
                .unwrap();
            s.verifier.accept(&s.from, f).unwrap();
        }
        let restarted = FrameSigner::new(key(1), cluster(), 2_000);
        let f = restarted
            .sign(cluster(), qbft(), Hash32::ZERO, vec![])
            .unwrap();
        s.verifier.accept(&s.from, f).unwrap();
        let stale = FrameSigner::new(key(1), cluster(), 1_500);
        let f = stale.sign(cluster(), qbft(), Hash32::ZERO, vec![]).unwrap();
        assert!(matches!(
            s.verifier.accept(&s.from, f),
            Err(FrameError::Replayed {
                nonce: 1_500,
                last: 2_000,
                ..
            })
        ));
    }

    #[test]
    fn nonce_base_from_clock_grows_with_time() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_000);
        let base = FrameSigner::nonce_base_from_clock(t);
        assert_eq!(base, 1_700_000_000_000u64 << 20);
        let later = FrameSigner::nonce_base_from_clock(t + std::time::Duration::from_millis(1));
        assert_eq!(later - base, 1 << 20);
        assert_eq!(FrameSigner::nonce_base_from_clock(UNIX_EPOCH), 0);
    }

    #[test]
    fn nonce_exhaustion_is_an_error_not_a_wrap() {
        let signer = FrameSigner::new(key(1), cluster(), u64::MAX - 1);
        let f = signer
            .sign(cluster(), qbft(), Hash32::ZERO, vec![])
            .unwrap();
        assert_eq!(f.header.nonce, u64::MAX - 1);
        let err = signer
            .sign(cluster(), qbft(), Hash32::ZERO, vec![])
            .unwrap_err();
        assert!(matches!(err, FrameError::NonceExhausted { nonce, .. } if nonce == u64::MAX));
    }

    #[test]
    fn rejects_bad_signature() {
        let s = setup(1);
        let mut f = s
            .signer
            .sign(cluster(), qbft(), Hash32::ZERO, b"x".to_vec())
            .unwrap();
        f.signature.0[10] ^= 1;
        let err = s.verifier.accept(&s.from, f.clone()).unwrap_err();
        assert!(
            matches!(err, FrameError::BadSignature { nonce: 1, .. }),
            "{err}"
        );
        // A header field changed after signing also breaks the signature.
        let mut g = s
            .signer
            .sign(cluster(), qbft(), Hash32::ZERO, b"x".to_vec())
            .unwrap();
        g.header.poh_tick = Hash32([1; 32]);
        assert!(matches!(
            s.verifier.accept(&s.from, g),
            Err(FrameError::BadSignature { .. })
        ));
        assert_eq!(s.verifier.rejections().bad_signature, 2);
        // A rejected frame does not advance the replay guard.
        assert_eq!(s.verifier.last_accepted(&s.from, qbft()), None);
    }

    #[test]
    fn rejects_wrong_cluster() {
        let s = setup(1);
        let other = blake3_256(b"other-chain");
        let f = s.signer.sign(other, qbft(), Hash32::ZERO, vec![]).unwrap();
        let err = s.verifier.accept(&s.from, f).unwrap_err();
        assert_eq!(
            err,
            FrameError::WrongCluster {
                node: s.from.into(),
                service: qbft(),
                nonce: 1,
                cluster: other,
            }
        );
        assert_eq!(s.verifier.rejections().wrong_cluster, 1);
    }

    #[test]
    fn rejects_tampered_payload() {
        let s = setup(1);
        let mut f = s
            .signer
            .sign(cluster(), qbft(), Hash32::ZERO, b"pay 1".to_vec())
            .unwrap();
        f.payload = b"pay 9".to_vec();
        let err = s.verifier.accept(&s.from, f).unwrap_err();
        assert!(matches!(err, FrameError::DigestMismatch { nonce: 1, .. }));
        assert!(err.to_string().contains("payload digest mismatch"));
        assert_eq!(s.verifier.rejections().digest_mismatch, 1);
        assert_eq!(s.verifier.last_accepted(&s.from, qbft()), None);
        // The genuine frame with the same nonce is still accepted afterwards.
        let signer = FrameSigner::new(key(1), cluster(), 1);
        let f = signer
            .sign(cluster(), qbft(), Hash32::ZERO, b"pay 1".to_vec())
            .unwrap();
        s.verifier.accept(&s.from, f).unwrap();
    }

    #[test]
    fn rejects_unknown_node_and_source_mismatch() {
        let s = setup(1);
        let stranger = FrameSigner::new(key(9), cluster(), 1);
        let f = stranger
            .sign(cluster(), qbft(), Hash32::ZERO, vec![])
            .unwrap();
        let err = s
            .verifier
            .accept(&stranger.public_key(), f.clone())
            .unwrap_err();
        assert!(matches!(err, FrameError::UnknownNode { .. }));
        assert!(err.to_string().contains(&stranger.public_key().to_string()));
        // A pinned peer relaying someone else's frame as its own connection.
        let peer2 = key(2).public_key();
        let mine = s
            .signer
            .sign(cluster(), qbft(), Hash32::ZERO, vec![])
            .unwrap();
        let err = s.verifier.accept(&peer2, mine).unwrap_err();
        assert!(matches!(err, FrameError::SourceMismatch { peer, .. } if peer == peer2.into()));
        let r = s.verifier.rejections();
        assert_eq!((r.unknown_node, r.source_mismatch, r.total()), (1, 1, 2));
    }

    #[test]
    fn head_is_checked_before_payload() {
        let s = setup(5);
        let f = s
            .signer
            .sign(cluster(), qbft(), Hash32::ZERO, b"body".to_vec())
            .unwrap();
        let verified = s.verifier.verify_head(&s.from, &f.head_bytes()).unwrap();
        assert_eq!(verified.header().payload_len, 4);
        let accepted = s
            .verifier
            .accept_payload(verified, b"body".to_vec())
            .unwrap();
        assert_eq!(accepted, f);
        // Now the same head is stale before any payload is read.
        assert!(matches!(
            s.verifier.verify_head(&s.from, &f.head_bytes()),
            Err(FrameError::Replayed {
                nonce: 5,
                last: 5,
                ..
            })
        ));
    }

    #[test]
    fn replay_guard_bounds_services_per_node() {
        let mut guard = ReplayGuard::new();
        let node = key(1).public_key();
        for i in 0..BPCI_SERVICES_PER_PEER_COUNT_MAX {
            guard
                .accept(&node, ServiceId::named(&format!("s{i}")), 1)
                .unwrap();
        }
        let extra = ServiceId::named("one-too-many");
        assert!(matches!(
            guard.accept(&node, extra, 1),
            Err(FrameError::TooManyServices {
                max: BPCI_SERVICES_PER_PEER_COUNT_MAX,
                ..
            })
        ));
        // Known services keep working.
        guard.accept(&node, ServiceId::named("s0"), 2).unwrap();
        assert_eq!(guard.last_accepted(&node, ServiceId::named("s0")), Some(2));
    }

    #[test]
    fn too_many_pinned_peers_is_refused() {
        let many = (0..=BPCI_PEERS_COUNT_MAX as u32).map(|i| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            SigningKey::from_seed(&seed).public_key()
        });
        assert!(matches!(
            FrameVerifier::new(cluster(), many),
            Err(FrameError::TooManyPeers { count, .. }) if count == BPCI_PEERS_COUNT_MAX + 1
        ));
    }

    #[test]
    fn service_id_is_blake3_of_name() {
        assert_eq!(ServiceId::named("qbft").hash(), blake3_256(b"qbft"));
        assert_ne!(ServiceId::named("qbft"), ServiceId::named("mempool"));
    }
}
