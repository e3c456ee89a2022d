//! `GET|HEAD /ipfs/{cid}`: the IPFS trustless gateway, plus path-gateway
//! reads of UnixFS files.
//!
//! - `?format=raw` or `Accept: application/vnd.ipld.raw` → the block bytes as
//!   `application/vnd.ipld.raw`, ETag `"{cid}.raw"`. `format` wins over
//!   `Accept`, as the gateway spec says.
//! - `?format=car` or `Accept: application/vnd.ipld.car` → a CARv1 of the DAG
//!   (`dag-scope=block|entity|all`, `entity-bytes=from:to`), blocks in DFS
//!   pre-order without duplicates, `Content-Type: application/vnd.ipld.car;
//!   version=1; order=dfs; dups=n`, ETag `"{cid}.car.{scope}[.{range}]"`.
//! - A plain request for a raw-codec cid → the block as
//!   `application/octet-stream`, ETag `"{cid}"`; for a dag-pb UnixFS file →
//!   the file's bytes (verified block by block), same headers. Directories
//!   are 501 (ask for `format=car`).
//! - An `Accept` naming only other IPLD response types (dag-json, …) is
//!   406: answering those with other bytes would mislead a verifying client.
//! - One range → 206; several → 200 with the whole body (see `range`).
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

use metanode_unixfs::{DagScope, EntityBytes, parse_dag_scope};

use crate::error::{self, ApiError};
use crate::range::{self, RangeDecision};
use crate::{AppState, ipfs};

const MEDIA_RAW: &str = "application/vnd.ipld.raw";
const MEDIA_CAR: &str = "application/vnd.ipld.car";
/// What our CAR responses are (the gateway spec's response signalling).
const CONTENT_TYPE_CAR: &str = "application/vnd.ipld.car; version=1; order=dfs; dups=n";
/// One year minus change, as Kubo and the gateway spec use for immutable
/// `/ipfs/` responses.
const CACHE_CONTROL_IMMUTABLE: &str = "public, max-age=29030400, immutable";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// Trustless response: `application/vnd.ipld.raw`.
    Raw,
    /// Trustless response: `application/vnd.ipld.car`.
    Car,
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
            "car" => Ok(Format::Car),
            other => Err(ApiError::bad_request(format!(
                "unsupported format {}; this gateway serves format=raw, format=car, or the plain bytes without a format",
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
        let params: Vec<(String, String)> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| {
                (
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_matches('"').to_ascii_lowercase(),
                )
            })
            .collect();
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if param("q").is_some_and(|q| q.parse::<f32>() == Ok(0.0)) {
            continue;
        }
        any = true;
        if media == MEDIA_RAW {
            return Ok(Format::Raw);
        }
        // We write CARv1 in DFS order; a client that insists on another
        // version or order gets a 406 below rather than bytes it cannot use.
        if media == MEDIA_CAR
            && param("version").is_none_or(|v| v == "1")
            && param("order").is_none_or(|v| v == "dfs" || v == "unk")
        {
            return Ok(Format::Car);
        }
        if !media.starts_with("application/vnd.ipld.") {
            ipld_only = false;
        }
    }
    if any && ipld_only {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "none of the accepted types {} is served; this gateway serves {MEDIA_RAW} and {MEDIA_CAR}; version=1",
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
    let car = match format {
        Format::Car => Some(car_params(&query)?),
        _ => None,
    };
    // An index lookup in memory: no blocking-pool hop (it cost more than the
    // rest of a small GET together).
    let stat = st
        .store
        .stat(&cid)
        .map_err(error::from_get)?
        .ok_or_else(|| error::from_get(GetError::NotFound(cid)))?;
    // A dag-pb root read as a file: its size comes from the DAG.
    let file = if format == Format::Plain && cid.codec() == CODEC_DAG_PB {
        Some(ipfs::open_file(st.store.clone(), cid).await?)
    } else {
        None
    };
    let size = file.as_ref().map_or(stat.size_bytes, |f| f.size_bytes());

    let etag = match (format, &car) {
        (Format::Raw, _) => format!("\"{cid}.raw\""),
        (Format::Car, Some(p)) => p.etag(&cid),
        _ => format!("\"{cid}\""),
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

    if let Some(params) = car {
        // A CAR is a stream of unknown length: no ranges, no Content-Length.
        common.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(CONTENT_TYPE_CAR),
        );
        common.insert(
            header::CONTENT_DISPOSITION,
            value(&format!("attachment; filename=\"{cid}.car\""))?,
        );
        if method == Method::HEAD {
            return build(StatusCode::OK, common, Body::empty());
        }
        let body = ipfs::car_body(st.store.clone(), cid, params.scope, params.entity_bytes).await?;
        return build(StatusCode::OK, common, body);
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
                "range {} is outside {cid} of {size} bytes",
                error::quote(range_value.unwrap_or_default())
            ),
        )
        .with_header(header::CONTENT_RANGE, value(&format!("bytes */{size}"))?));
    }

    let content_type = match format {
        Format::Raw => MEDIA_RAW,
        Format::Plain | Format::Car => "application/octet-stream",
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
    if let Some(file) = file {
        let body = ipfs::file_body(file, start, len).await?;
        return build(status, common, body);
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

/// `dag-scope` and `entity-bytes` of a CAR request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CarParams {
    scope: DagScope,
    entity_bytes: Option<EntityBytes>,
}

impl CarParams {
    /// Strong: DFS order without duplicates makes the bytes deterministic.
    /// The scope and range are part of it, as the spec requires.
    fn etag(&self, cid: &ContentId) -> String {
        match self.entity_bytes {
            None => format!("\"{cid}.car.{}\"", self.scope),
            Some(EntityBytes { from, to }) => {
                let to = to.map_or_else(|| "*".to_string(), |t| t.to_string());
                format!("\"{cid}.car.{}.{from}:{to}\"", self.scope)
            }
        }
    }
}

fn car_params(query: &[(String, String)]) -> Result<CarParams, ApiError> {
    let mut scope = None;
    let mut entity_bytes = None;
    for (key, value) in query {
        match key.as_str() {
            "dag-scope" => {
                scope =
                    Some(parse_dag_scope(value).map_err(|e| ApiError::bad_request(e.to_string()))?);
            }
            "entity-bytes" => {
                entity_bytes = Some(
                    EntityBytes::parse(value).map_err(|e| ApiError::bad_request(e.to_string()))?,
                );
            }
            // Parameters of the response type that we already honour (or
            // answer explicitly in Content-Type).
            "format" | "car-version" | "car-order" | "car-dups" | "filename" | "download" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {} for a CAR request; accepted: format, dag-scope, entity-bytes",
                    error::quote(other)
                )));
            }
        }
    }
    if let Some(v) = query
        .iter()
        .find(|(k, _)| k == "car-version")
        .map(|(_, v)| v)
        && v != "1"
    {
        return Err(ApiError::bad_request(format!(
            "car-version={} is not served; this gateway writes CARv1",
            error::quote(v)
        )));
    }
    // entity-bytes implies dag-scope=entity; with another explicit scope
    // it does not apply (the spec defines it for entity only).
    let scope = scope.unwrap_or(if entity_bytes.is_some() {
        DagScope::Entity
    } else {
        DagScope::All
    });
    if scope != DagScope::Entity {
        entity_bytes = None;
    }
    Ok(CarParams {
        scope,
        entity_bytes,
    })
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
