//! HTTP Cage: reverse proxy verifying RFC 9421 signed requests (ed25519, RFC 9530 content-digest), replay cache, rate limits, timeouts, signed audit receipts.
//!
//! Request path, in order (each refusal gets its status and a receipt):
//! BISO light of the client address (red → 403, yellow → its token bucket,
//! 429) → per-IP limit (429) → route by longest path prefix (404) →
//! signature (RFC 9421 via `metanode-httpsig`; 400/401) or the route's
//! unsigned policy (401) → per-key limit (429) → body with size limit (413)
//! and read timeout (408) → `Content-Digest` check (400/401) → upstream over
//! pooled keep-alive HTTP/1.1 (502/504) → response with optional
//! `Metanode-Receipt` header. Slowloris: a request head not complete within
//! the header timeout closes the connection (receipt status 408); idle
//! keep-alive connections close after the idle timeout.
//!
//! Signatures: each connection task runs every check but the Ed25519 one
//! itself ([`metanode_httpsig::prepare_request`]); its worker's
//! [`verifier::Verifier`] verifies what has queued up as one batch (strict
//! decision per signature through per-key fixed-base tables), and the task
//! then records the nonce, so only verified requests enter the replay cache.
//!
//! Entry points: [`serve`] (all in one), or [`Server::bind`] then
//! [`Server::run`] to learn the bound address and metrics first.

pub mod audit;
mod client;
pub mod config;
pub mod h1;
pub mod lights;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod receipt;
pub mod receipt_file;
mod spares;
pub mod verifier;

pub use audit::{LookupError, ReceiptProof, ReceiptProofError, ReceiptReader, StoredBatch};
pub use config::{CageConfig, ConfigError, UnsignedPolicy};
pub use lights::{PolicyHandle, allow_all_policy};
pub use metrics::{Metrics, MetricsSnapshot, render_prometheus};
pub use proxy::{KEY_ID_HEADER, RECEIPT_HEADER, ServeError, ServeReport, Server, serve};
pub use receipt::{
    BatchReplica, BatchReplicaError, Decision, EncodedBatch, Receipt, ReceiptSink, ReceiptView,
    ReplicatedSink, SignedBatch,
};
pub use receipt_file::{
    BatchLocation, BatchOffsets, FileSink, SegmentPolicy, VerifyReport, read_receipts,
    read_signed_batches, verify_receipts, verify_receipts_with_progress,
};
