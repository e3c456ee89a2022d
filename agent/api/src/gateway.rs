//! `GET|HEAD /ipfs/{cid}`: the IPFS trustless-gateway subset for raw blocks.
//!
//! - `?format=raw` or `Accept: application/vnd.ipld.raw` → the block bytes as
//!   `application/vnd.ipld.raw`, ETag `"{cid}.raw"`. `format` wins over
//!   `Accept`, as the gateway spec says.
//! - A plain request for a raw-codec cid → the same bytes as
//!   `application/octet-stream`, ETag `"{cid}"`. A plain request for a dag-pb
//!   cid is 501 until UnixFS rendering exists (ask for `format=raw`).
//! - An `Accept` naming only other IPLD response types (CAR, dag-json, …) is
//!   406: answering those with raw bytes would mislead a verifying client.
//! - One range → 206; several → 200 with the whole block (see `range`).
//!
//! Bytes are only ever sent after the store verified them against their
//! hash; see [`API_READ_WINDOW_BYTES`] for how a corrupt tail surfaces.

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use metanode_core::cid::{CODEC_DAG_PB, ContentId};
use metanode_core::limits::{
    API_HEADER_LIST_ITEMS_COUNT_MAX, API_READ_WINDOW_BYTES, API_READ_WINDOWS_IN_FLIGHT_COUNT_MAX,
};
use metanode_store::{GetError, Store};

use crate::AppState;
use crate::error::{self, ApiError};
use crate::range::{self, RangeDecision};

const MEDIA_RAW: &str = "application/vnd.ipld.raw";
/// One year minus change, as Kubo and the gateway spec use for immutable
/// `/ipfs/` responses.
const CACHE_CONTROL_IMMUTABLE: &str = "public, max-age=29030400, immutable";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Trustless response: `application/vnd.ipld.raw`.
    Raw,
    /// Path-gateway response of a raw block: `application/octet-stream`.
    Plain,
}

/// Pick the response format from `?format=` and `Accept`.
pub(crate) fn response_format(
    query: &[(String, String)],
    accept: Option<&HeaderValue>,
) -> Result<Format, ApiError> {
    if let Some((_, format)) = query.iter().find(|(k, _)| k == "format") {
        return match format.as_str() {
            "raw" => Ok(Format::Raw),
            other => Err(ApiError::bad_request(format!(
                "unsupported format {}; this gateway serves format=raw (or the plain bytes without a format)",
                error::quote(other)
            ))),
        };
    }
    let Some(accept) = accept else {
        return Ok(Format::Plain);
    };
    let accept = accept
        .to_str()
        .map_err(|_| ApiError::bad_request("the Accept header is not visible ASCII".to_string()))?;
    let mut ipld_only = true;
    let mut any = false;
    for item in accept
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .take(API_HEADER_LIST_ITEMS_COUNT_MAX)
    {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let refused = parts.any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>() == Ok(0.0)
            })
        });
        if refused {
            continue;
        }
        any = true;
        if media == MEDIA_RAW {
            return Ok(Format::Raw);
        }
        if !media.starts_with("application/vnd.ipld.") {
            ipld_only = false;
        }
    }
    if any && ipld_only {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "none of the accepted types {} is served; this gateway serves {MEDIA_RAW}",
                error::quote(accept)
            ),
        ));
    }
    Ok(Format::Plain)
}

pub(crate) fn parse_cid(
    path: Result<Path<String>, PathRejection>,
) -> Result<(ContentId, String), ApiError> {
    let Path(input) = path.map_err(|e| ApiError::bad_request(format!("bad cid in path: {e}")))?;
    let cid = input
        .parse::<ContentId>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((cid, input))
}

pub(crate) fn parse_query(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))
}

pub(crate) async fn ipfs(
    State(st): State<AppState>,
    method: Method,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (cid, input) = parse_cid(path)?;
    let query = parse_query(query)?;
    let format = response_format(&query, headers.get(header::ACCEPT))?;
    if format == Format::Plain && cid.codec() == CODEC_DAG_PB {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "cid {cid} is a dag-pb (UnixFS) node and UnixFS rendering is not supported yet; request the block with ?format=raw"
            ),
        ));
    }
    // An index lookup in memory: no blocking-pool hop (it cost more than the
    // rest of a small GET together).
    let stat = st
        .store
        .stat(&cid)
        .map_err(error::from_get)?
        .ok_or_else(|| error::from_get(GetError::NotFound(cid)))?;
    let size = stat.size_bytes;

    let etag = match format {
        Format::Raw => format!("\"{cid}.raw\""),
        Format::Plain => format!("\"{cid}\""),
    };
    let mut common = HeaderMap::new();
    let value = |s: &str| HeaderValue::from_str(s).map_err(|e| ApiError::internal(e.to_string()));
    common.insert(header::ETAG, value(&etag)?);
    common.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL_IMMUTABLE),
    );
    common.insert(header::VARY, HeaderValue::from_static("Accept"));
    common.insert("x-ipfs-path", value(&format!("/ipfs/{input}"))?);
    common.insert("x-ipfs-roots", value(&cid.to_string())?);
    common.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );

    if let Some(inm) = headers.get(header::IF_NONE_MATCH)
        && inm.to_str().is_ok_and(|v| range::if_none_match(v, &etag))
    {
        return build(StatusCode::NOT_MODIFIED, common, Body::empty());
    }

    common.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let range_value = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| range::if_range_allows(v, &etag)));
    let decision = if if_range_ok {
        range::decide(range_value, size)
    } else {
        RangeDecision::Full
    };
    if decision == RangeDecision::Unsatisfiable {
        return Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            format!(
                "range {} is outside block {cid} of {size} bytes",
                error::quote(range_value.unwrap_or_default())
            ),
        )
        .with_header(header::CONTENT_RANGE, value(&format!("bytes */{size}"))?));
    }

    let content_type = match format {
        Format::Raw => MEDIA_RAW,
        Format::Plain => "application/octet-stream",
    };
    common.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if format == Format::Raw {
        // What Kubo sends for raw blocks: save, don't render.
        common.insert(
            header::CONTENT_DISPOSITION,
            value(&format!("attachment; filename=\"{cid}.bin\""))?,
        );
    }
    let (start, len) = decision.span(size);
    common.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let status = match decision {
        RangeDecision::Partial {
            start,
            end_inclusive,
        } => {
            common.insert(
                header::CONTENT_RANGE,
                value(&format!("bytes {start}-{end_inclusive}/{size}"))?,
            );
            StatusCode::PARTIAL_CONTENT
        }
        _ => StatusCode::OK,
    };
    if method == Method::HEAD || len == 0 {
        return build(status, common, Body::empty());
    }

    // Read and verify the first window before committing to a status, so a
    // corrupt small block is an error answer rather than a cut-off body.
    let first_len = len.min(API_READ_WINDOW_BYTES);
    // Hot packed blocks are served from the page cache without a thread
    // hop; cold or large reads go to the blocking pool inside the store.
    let first = tokio::time::timeout(
        st.opts.request_timeout(),
        st.store.read_range_async(&cid, start, first_len),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "reading a block did not finish within {} ms (api.request_timeout_ms)",
                st.opts.request_timeout_ms
            ),
        )
    })?
    .map_err(error::from_get)?;
    let first = Bytes::from(first);
    if first.len() as u64 != first_len {
        return Err(ApiError::internal(format!(
            "store returned {} bytes of block {cid} for a {first_len}-byte window at offset {start}",
            first.len()
        )));
    }
    if first_len == len {
        return build(status, common, Body::from(first));
    }
    let rest = windows(st.store.clone(), cid, start + first_len, len - first_len);
    let body = stream::once(async move { Ok::<Bytes, StreamError>(first) }).chain(rest);
    build(status, common, Body::from_stream(body))
}

/// Why a response was cut off mid-body. Sent nowhere but the log: by then the
/// status line is out, and aborting the connection is the only honest signal.
#[derive(Debug, thiserror::Error)]
#[error("reading block {cid} at offset {offset} failed: {reason}")]
struct StreamError {
    cid: String,
    offset: u64,
    reason: String,
}

/// The rest of a body as verified windows, a bounded number read ahead.
fn windows(
    store: Store,
    cid: ContentId,
    offset: u64,
    len: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, StreamError>> + Send + 'static {
    let end = offset + len;
    let spans = (0..len.div_ceil(API_READ_WINDOW_BYTES)).map(move |i| {
        let at = offset + i * API_READ_WINDOW_BYTES;
        (at, API_READ_WINDOW_BYTES.min(end - at))
    });
    stream::iter(spans)
        .map(move |(at, n)| {
            let store = store.clone();
            async move {
                let failed = |reason: String| StreamError {
                    cid: cid.to_string(),
                    offset: at,
                    reason,
                };
                let read = tokio::task::spawn_blocking(move || {
                    store.read_range(&cid, at, n).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| failed(format!("store task failed: {e}")))?
                .map_err(failed)?;
                if read.len() as u64 != n {
                    return Err(failed(format!(
                        "store returned {} bytes, expected {n}",
                        read.len()
                    )));
                }
                Ok(Bytes::from(read))
            }
        })
        .buffered(API_READ_WINDOWS_IN_FLIGHT_COUNT_MAX)
        .inspect_err(|e| tracing::error!(error = %e, "aborting a response mid-body"))
}

fn build(status: StatusCode, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}
