//! `/api/v1/…`: upload, stat, list, remove, pins, gc, verify.

use std::io::Write as _;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use metanode_core::limits::{
    API_LIST_PAGE_COUNT_DEFAULT, API_LIST_PAGE_COUNT_MAX, API_UPLOAD_CHANNEL_CHUNKS_COUNT_MAX,
    API_UPLOAD_REFUSED_DRAIN_BYTES_MAX, API_UPLOADS_STREAMING_COUNT_MAX,
};
use metanode_store::{GetError, PutError, PutOutcome, Store};
use tokio::sync::mpsc;

use crate::error::{self, ApiError};
use crate::gateway::{parse_cid, parse_query};
use crate::{AppState, wire};

/// Run a short store call on the blocking pool, bounded by the request
/// timeout so a wedged disk turns into a 503 instead of a hung client.
pub(crate) async fn blocking<T: Send + 'static>(
    st: &AppState,
    what: &'static str,
    f: impl FnOnce(&Store) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let store = st.store.clone();
    let task = tokio::task::spawn_blocking(move || f(&store));
    match tokio::time::timeout(st.opts.request_timeout(), task).await {
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{what} did not finish within {} ms (api.request_timeout_ms)",
                st.opts.request_timeout_ms
            ),
        )),
        Ok(Err(join)) => Err(ApiError::task_failed(what, join)),
        Ok(Ok(value)) => Ok(value),
    }
}

/// Run a long admin operation (gc, verify) on the blocking pool. No
/// timeout: it finishes even if the client goes away, and a timeout here
/// would only hide that it is still running.
async fn blocking_unbounded<T: Send + 'static>(
    st: &AppState,
    what: &'static str,
    f: impl FnOnce(&Store) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let store = st.store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|join| ApiError::task_failed(what, join))
}

pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(ApiError::bad_request(format!(
            "query parameter {key}={} must be true or false",
            error::quote(other)
        ))),
    }
}

pub(crate) fn unknown_param(key: &str, accepted: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unknown query parameter {}; accepted: {accepted}",
        error::quote(key)
    ))
}

fn too_large(got: u64, max: u64, exact: bool) -> ApiError {
    let got = if exact {
        format!("{got} bytes")
    } else {
        format!("more than {max} bytes")
    };
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("upload of {got} exceeds the limit of {max} bytes (api.upload_size_bytes_max)"),
    )
}

/// Why reading an upload body stopped early.
#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error("upload body stalled: no data for {0} ms (api.request_timeout_ms)")]
    Stalled(u64),
    #[error("reading the upload body failed: {0}")]
    Body(axum::Error),
    #[error("upload exceeds the size limit")]
    TooLarge,
}

impl BodyReader {
    /// Turn a body-side failure into the answer, first draining a bounded
    /// remainder of an oversize body (see
    /// [`API_UPLOAD_REFUSED_DRAIN_BYTES_MAX`]).
    async fn refuse(&mut self, err: UploadError) -> ApiError {
        if matches!(err, UploadError::TooLarge) {
            let mut discarded = 0u64;
            while discarded <= API_UPLOAD_REFUSED_DRAIN_BYTES_MAX {
                match tokio::time::timeout(self.idle, self.body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        discarded += frame.data_ref().map_or(0, |d| d.len() as u64);
                    }
                    _ => break,
                }
            }
        }
        err.into_api(self.received, self.max)
    }
}

impl UploadError {
    fn into_api(self, received: u64, max: u64) -> ApiError {
        match self {
            UploadError::Stalled(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, self.to_string()),
            UploadError::Body(_) => ApiError::bad_request(self.to_string()),
            UploadError::TooLarge => too_large(received, max, false),
        }
    }
}

/// Pulls data chunks off a request body, enforcing the size limit and the
/// per-chunk idle timeout.
struct BodyReader {
    body: Body,
    received: u64,
    max: u64,
    idle: Duration,
    idle_ms: u64,
}

impl BodyReader {
    async fn next(&mut self) -> Result<Option<Bytes>, UploadError> {
        loop {
            let frame = match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => return Err(UploadError::Stalled(self.idle_ms)),
                Ok(None) => return Ok(None),
                Ok(Some(frame)) => frame.map_err(UploadError::Body)?,
            };
            // Trailers carry nothing we store.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.received += data.len() as u64;
            if self.received > self.max {
                return Err(UploadError::TooLarge);
            }
            if !data.is_empty() {
                return Ok(Some(data));
            }
        }
    }
}

/// What the blocking writer thread is told.
pub(crate) enum WriterMsg {
    Data(Bytes),
    /// The body ended cleanly: make the blob durable.
    Finish,
}

/// Why the streaming writer did not produce a blob.
#[derive(Debug, thiserror::Error)]
enum WriterError {
    #[error("{0}")]
    Put(#[from] PutError),
    #[error("writing the upload into the store failed: {0}")]
    Write(std::io::Error),
    /// The body side gave up (client error, limit, timeout); the writer was
    /// dropped unfinished, which discards what it had.
    #[error("upload abandoned")]
    Abandoned,
}

fn write_blocking(
    store: &Store,
    pin: bool,
    mut rx: mpsc::Receiver<WriterMsg>,
) -> Result<PutOutcome, WriterError> {
    let mut writer = store.writer(pin)?;
    loop {
        match rx.blocking_recv() {
            Some(WriterMsg::Data(chunk)) => writer.write_all(&chunk).map_err(WriterError::Write)?,
            Some(WriterMsg::Finish) => return Ok(writer.finish()?),
            None => return Err(WriterError::Abandoned),
        }
    }
}

fn writer_error(err: WriterError) -> ApiError {
    match err {
        WriterError::Put(e) => error::from_put(e),
        WriterError::Write(e) => {
            // Writes surface as io::Error; a full disk is the one failure
            // the client can act on, so it keeps its own status.
            let status = if e.kind() == std::io::ErrorKind::StorageFull {
                StatusCode::INSUFFICIENT_STORAGE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            ApiError::new(status, WriterError::Write(e).to_string())
        }
        WriterError::Abandoned => ApiError::internal(err.to_string()),
    }
}

/// `POST /api/v1/blobs[?pin=false]`: 201 `{"cid","size","existed":false}`
/// for a new blob, 200 with `"existed": true` when it was already stored,
/// plus `Location: /ipfs/{cid}`. Uploading an existing unpinned blob with
/// `pin=true` pins it; `pin=false` never unpins (use `DELETE /api/v1/pins`).
pub(crate) async fn upload(
    State(st): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut pin = true;
    for (key, value) in parse_query(query)? {
        match key.as_str() {
            "pin" => pin = parse_bool("pin", &value)?,
            _ => return Err(unknown_param(&key, "pin")),
        }
    }
    let max = st.opts.upload_size_bytes_max;
    // Refused before reading a byte of it when over the limit.
    let declared = declared_length(&headers, max)?;
    let mut reader = BodyReader {
        body,
        received: 0,
        max,
        idle: st.opts.request_timeout(),
        idle_ms: st.opts.request_timeout_ms,
    };
    let collect_max = st.opts.upload_collect_size_bytes_max;

    // Small bodies: collect, then one store call (it joins a group commit).
    let mut prefix: Vec<Bytes> = Vec::new();
    if declared.is_none_or(|d| d <= collect_max) {
        loop {
            match reader.next().await {
                Err(e) => return Err(reader.refuse(e).await),
                Ok(Some(chunk)) => {
                    prefix.push(chunk);
                    if reader.received > collect_max {
                        break;
                    }
                }
                Ok(None) => {
                    let data = concat(prefix, reader.received);
                    let put = st.store.put_async(data, pin);
                    let outcome = tokio::time::timeout(st.opts.request_timeout(), put)
                        .await
                        .map_err(|_| {
                            // The put may still land; content addressing
                            // makes a retry harmless.
                            ApiError::new(
                                StatusCode::SERVICE_UNAVAILABLE,
                                format!(
                                    "the store did not acknowledge the upload within {} ms (api.request_timeout_ms); retrying is safe",
                                    st.opts.request_timeout_ms
                                ),
                            )
                        })?
                        .map_err(error::from_put)?;
                    return Ok(put_response(&outcome));
                }
            }
        }
    }

    // Large or unknown-length bodies: stream into a store writer on the
    // blocking pool; the bounded channel is the backpressure on the client.
    let _slot = upload_slot(&st).await?;
    let (tx, rx) = mpsc::channel::<WriterMsg>(API_UPLOAD_CHANNEL_CHUNKS_COUNT_MAX);
    let store = st.store.clone();
    let writer = tokio::task::spawn_blocking(move || write_blocking(&store, pin, rx));
    let failed = feed_writer(&tx, prefix, &mut reader).await;
    // Dropping the sender without Finish tells the writer to abandon.
    drop(tx);
    let written = writer
        .await
        .map_err(|join| ApiError::task_failed("storing an upload", join))?;
    if let Some(failed) = failed {
        return Err(failed);
    }
    let outcome = written.map_err(writer_error)?;
    Ok(put_response(&outcome))
}

/// The `Content-Length` a client declared, refused up front when over the
/// upload limit.
fn declared_length(headers: &HeaderMap, max: u64) -> Result<Option<u64>, ApiError> {
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request("the Content-Length header is not a number")
                })?,
        ),
    };
    if let Some(declared) = declared
        && declared > max
    {
        return Err(too_large(declared, max, true));
    }
    Ok(declared)
}

/// An upload body as a blocking `Read` (for importers that run on the
/// blocking pool). A body that fails or is abandoned reads as an error, so
/// the consumer never mistakes a cut-off upload for a complete one.
pub(crate) struct UploadRead {
    rx: mpsc::Receiver<WriterMsg>,
    current: Bytes,
    ended: bool,
}

impl std::io::Read for UploadRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(WriterMsg::Data(chunk)) => self.current = chunk,
                Some(WriterMsg::Finish) => self.ended = true,
                None => {
                    return Err(std::io::Error::other("upload abandoned before its end"));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Stream a request body into `consume`, which runs on the blocking pool
/// and reads it through [`UploadRead`]. Enforces the upload size limit,
/// the idle timeout and the streaming-upload slots like `POST /blobs`.
/// A body-side failure wins over whatever the consumer then reports.
pub(crate) async fn stream_into<T: Send + 'static>(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
    what: &'static str,
    consume: impl FnOnce(&Store, &mut UploadRead) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let max = st.opts.upload_size_bytes_max;
    declared_length(headers, max)?;
    let mut reader = BodyReader {
        body,
        received: 0,
        max,
        idle: st.opts.request_timeout(),
        idle_ms: st.opts.request_timeout_ms,
    };
    let _slot = upload_slot(st).await?;
    let (tx, rx) = mpsc::channel::<WriterMsg>(API_UPLOAD_CHANNEL_CHUNKS_COUNT_MAX);
    let store = st.store.clone();
    let task = tokio::task::spawn_blocking(move || {
        let mut read = UploadRead {
            rx,
            current: Bytes::new(),
            ended: false,
        };
        consume(&store, &mut read)
    });
    let failed = feed_writer(&tx, Vec::new(), &mut reader).await;
    drop(tx);
    let result = task
        .await
        .map_err(|join| ApiError::task_failed(what, join))?;
    if let Some(failed) = failed {
        return Err(failed);
    }
    result
}

async fn upload_slot(st: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    match tokio::time::timeout(
        st.opts.request_timeout(),
        st.upload_slots.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(slot)) => Ok(slot),
        Ok(Err(_)) | Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{API_UPLOADS_STREAMING_COUNT_MAX} large uploads are already in progress; retry later"
            ),
        )),
    }
}

/// Send the collected prefix and then the rest of the body to the writer,
/// ending with `Finish`. Returns the body-side error, if any; a writer that
/// went away reports its own error through its join handle.
async fn feed_writer(
    tx: &mpsc::Sender<WriterMsg>,
    prefix: Vec<Bytes>,
    reader: &mut BodyReader,
) -> Option<ApiError> {
    for chunk in prefix {
        if tx.send(WriterMsg::Data(chunk)).await.is_err() {
            return None;
        }
    }
    loop {
        match reader.next().await {
            Err(e) => return Some(reader.refuse(e).await),
            Ok(Some(chunk)) => {
                if tx.send(WriterMsg::Data(chunk)).await.is_err() {
                    return None;
                }
            }
            Ok(None) => {
                // An error here means the writer already failed; its join
                // result carries why.
                let _ = tx.send(WriterMsg::Finish).await;
                return None;
            }
        }
    }
}

fn concat(chunks: Vec<Bytes>, total: u64) -> Bytes {
    if chunks.len() == 1 {
        return chunks.into_iter().next().unwrap_or_default();
    }
    let mut buf = BytesMut::with_capacity(total as usize);
    for chunk in chunks {
        buf.extend_from_slice(&chunk);
    }
    buf.freeze()
}

fn put_response(outcome: &PutOutcome) -> Response {
    let status = if outcome.existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = wire::PutResponse {
        cid: outcome.cid.to_string(),
        size: outcome.size_bytes,
        existed: outcome.existed,
    };
    let mut response = (status, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/ipfs/{}", outcome.cid)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// `GET /api/v1/blobs/{cid}/stat`.
pub(crate) async fn stat(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<wire::BlobInfo>, ApiError> {
    let (cid, _) = parse_cid(path)?;
    // In-memory index lookup: answered on the runtime thread.
    let stat = st
        .store
        .stat(&cid)
        .map_err(error::from_get)?
        .ok_or_else(|| error::from_get(GetError::NotFound(cid)))?;
    Ok(Json(wire::BlobInfo::new(&cid, &stat)))
}

/// `GET /api/v1/blobs?after=CID&limit=N`.
pub(crate) async fn list(
    State(st): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<wire::ListResponse>, ApiError> {
    let mut after: Option<String> = None;
    let mut limit = API_LIST_PAGE_COUNT_DEFAULT;
    for (key, value) in parse_query(query)? {
        match key.as_str() {
            "after" => after = Some(value),
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=API_LIST_PAGE_COUNT_MAX).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "query parameter limit={} must be a number from 1 to {API_LIST_PAGE_COUNT_MAX}",
                            error::quote(&value)
                        ))
                    })?;
            }
            _ => return Err(unknown_param(&key, "after, limit")),
        }
    }
    let page = blocking(&st, "listing blobs", move |s| {
        let mut all: Vec<wire::BlobInfo> = s
            .list()
            .iter()
            .map(|(cid, stat)| wire::BlobInfo::new(cid, stat))
            .filter(|b| after.as_ref().is_none_or(|a| b.cid.as_str() > a.as_str()))
            .collect();
        all.sort_unstable_by(|a, b| a.cid.cmp(&b.cid));
        let more = all.len() > limit;
        all.truncate(limit);
        let next = if more {
            all.last().map(|b| b.cid.clone())
        } else {
            None
        };
        wire::ListResponse { blobs: all, next }
    })
    .await?;
    Ok(Json(page))
}

/// `DELETE /api/v1/blobs/{cid}`: 200 when removed, 404 when it was absent.
pub(crate) async fn remove(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<wire::RemoveResponse>, ApiError> {
    let (cid, _) = parse_cid(path)?;
    let existed = blocking(&st, "removing a block", move |s| {
        s.remove(&cid).map_err(error::from_delete)
    })
    .await??;
    if !existed {
        return Err(error::from_get(GetError::NotFound(cid)));
    }
    Ok(Json(wire::RemoveResponse {
        cid: cid.to_string(),
        removed: true,
    }))
}

async fn set_pinned(
    st: AppState,
    path: Result<Path<String>, PathRejection>,
    pinned: bool,
) -> Result<Json<wire::PinResponse>, ApiError> {
    let (cid, _) = parse_cid(path)?;
    blocking(&st, "changing a pin", move |s| {
        s.set_pinned(&cid, pinned).map_err(error::from_pin)
    })
    .await??;
    Ok(Json(wire::PinResponse {
        cid: cid.to_string(),
        pinned,
    }))
}

/// `POST /api/v1/pins/{cid}`.
pub(crate) async fn pin(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<wire::PinResponse>, ApiError> {
    set_pinned(st, path, true).await
}

/// `DELETE /api/v1/pins/{cid}`.
pub(crate) async fn unpin(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<wire::PinResponse>, ApiError> {
    set_pinned(st, path, false).await
}

/// `GET /api/v1/store`.
pub(crate) async fn store_info(State(st): State<AppState>) -> Json<wire::StoreInfo> {
    let stats = st.store.stats();
    Json(wire::StoreInfo {
        io: st.store.io_name().to_string(),
        io_reason: st.store.io_reason().to_string(),
        blobs_count: stats.blobs_count,
        bytes_logical: stats.bytes_logical,
        segments_count: stats.segments_count,
        segment_bytes: stats.segment_bytes,
    })
}

/// `POST /api/v1/gc` (admin).
pub(crate) async fn gc(State(st): State<AppState>) -> Result<Json<wire::GcResponse>, ApiError> {
    let report = blocking_unbounded(&st, "gc", |s| s.gc(&|_| {}))
        .await?
        .map_err(error::from_gc)?;
    Ok(Json(report.into()))
}

/// `POST /api/v1/verify` (admin).
pub(crate) async fn verify(
    State(st): State<AppState>,
) -> Result<Json<wire::VerifyResponse>, ApiError> {
    let report = blocking_unbounded(&st, "verify", |s| s.verify(&|_| {}))
        .await?
        .map_err(error::from_verify)?;
    Ok(Json(report.into()))
}
