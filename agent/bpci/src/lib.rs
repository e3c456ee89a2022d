//! BPCI: the node-to-node transport of the chain.
//!
//! - [`frame`]: signed, replay-protected frames (pure).
//! - [`tls`]: TLS 1.3 with hybrid X25519MLKEM768 and pinned Ed25519 node keys.
//! - [`quic`]: the QUIC endpoint that carries frames between pinned peers.

pub mod frame;
pub mod quic;
pub mod tls;

pub use frame::{
    FRAME_HEAD_LEN, FRAME_HEADER_LEN, FRAME_VERSION, Frame, FrameError, FrameHeader, FrameSigner,
    FrameVerifier, NodeId, RejectReason, Rejections, ReplayGuard, ServiceId, VerifiedHeader,
};
pub use quic::{Endpoint, Inbound, Metrics, PathStats, SendError, TransportConfig, TransportError};
pub use tls::{KeyExchange, TlsConfigError};
