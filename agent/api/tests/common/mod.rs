//! What every router-level test file shares: the API options of a test node.

use metanode_api::ApiOptions;

/// Largest upload the test routers accept (413 above it).
pub const UPLOAD_MAX_BYTES: u64 = 4 * 1024 * 1024;
/// Uploads up to this size are collected in memory; set it as the store's inline threshold
/// where a test needs blobs on both sides of it.
pub const INLINE_BYTES: u64 = 4096;
/// `/health` and `metanode_build_info` report this.
pub const VERSION: &str = "test";

pub fn api_options() -> ApiOptions {
    ApiOptions {
        upload_size_bytes_max: UPLOAD_MAX_BYTES,
        upload_collect_size_bytes_max: INLINE_BYTES,
        request_timeout_ms: 10_000,
        connections_max: 16,
        version: VERSION.to_string(),
    }
}
