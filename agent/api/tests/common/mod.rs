//! What every router-level test file shares: the API options of a test node, and sending a
//! request through a router in memory.

#![allow(dead_code)] // each test binary uses its own part of this module

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use metanode_api::{ApiOptions, wire};
use tower::ServiceExt as _;

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

/// What a router answered.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .expect("ascii header")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not json ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Every error body is `{"error": "..."}`; return the message.
    pub fn error(&self) -> String {
        let body: wire::ErrorBody = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not an error body ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        });
        body.error
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("infallible router");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("collect body")
        .to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}
