//! Shared foundation of the Metanode agent: everything here is pure (no
//! threads, no sockets) so every service can depend on it without pulling in
//! a runtime.

pub mod cid;
pub mod config;
pub mod dagpb;
pub mod encoding;
pub mod hash;
pub mod keys;
pub mod limits;
pub mod merkle;
pub mod tags;
