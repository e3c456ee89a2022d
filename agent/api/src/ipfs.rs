//! The IPFS data model over HTTP:
//!
//! - `POST /api/v1/unixfs[?chunker=size-N&hash=sha2-256|blake3&cid-version=0|1&raw-leaves=BOOL&pin=false]`:
//!   stream a file in; the root CID is what `ipfs add --cid-version 1` (the
//!   default) or, with `cid-version=0`, plain `ipfs add` with the same
//!   parameters prints. `raw-leaves` is Kubo's flag, accepted only when it
//!   agrees with the version (CIDv1 raw leaves, CIDv0 dag-pb leaves).
//! - `POST /api/v1/car[?pin=false&allow-partial=true]`: import a CARv1/v2.
//! - The gateway's CAR responses (`?format=car`) and UnixFS file bodies
//!   (a plain `GET /ipfs/{dag-pb cid}`), called from [`crate::gateway`].
//!
//! Blocks are read and assembled on the blocking pool and handed to the
//! response through a small bounded channel, so a slow client holds at most
//! a few blocks in memory and never a runtime thread.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream;
use metanode_core::cid::ContentId;
use metanode_store::Store;
use metanode_unixfs::car::{encode_header, encode_section_prefix};
use metanode_unixfs::importer::{ImportOptions, KuboAddFlags};
use metanode_unixfs::stored::{self, AddError, CarImportError, ReadAhead};
use metanode_unixfs::{CarBlocks, DagScope, EntityBytes, ReadError, SourceError, UnixFsFile};
use tokio::sync::mpsc;

use crate::blobs::{parse_bool, stream_into, unknown_param};
use crate::error::{self, ApiError};
use crate::gateway::parse_query;
use crate::{AppState, wire};

/// Body pieces queued between the blocking producer and the connection.
const BODY_PIECES_IN_FLIGHT_COUNT_MAX: usize = 8;

/// `POST /api/v1/unixfs`.
pub(crate) async fn unixfs_add(
    State(st): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut pin = true;
    let params = parse_query(query)?;
    let mut raw_leaves = None;
    // The last value of a repeated parameter wins, as for `pin`.
    let (mut chunker, mut hash, mut cid_version) = (None, None, None);
    for (key, value) in &params {
        match key.as_str() {
            "pin" => pin = parse_bool("pin", value)?,
            "raw-leaves" => raw_leaves = Some(parse_bool("raw-leaves", value)?),
            "chunker" => chunker = Some(value.as_str()),
            "hash" => hash = Some(value.as_str()),
            "cid-version" => cid_version = Some(value.as_str()),
            _ => {
                return Err(unknown_param(
                    key,
                    "chunker, hash, cid-version, raw-leaves, pin",
                ));
            }
        }
    }
    // Checked together, so `hash=blake3&cid-version=0` is refused in any order.
    let options = ImportOptions::from_kubo_flags(&KuboAddFlags {
        chunker,
        hash,
        cid_version,
        raw_leaves,
    })
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let summary = stream_into(
        &st,
        &headers,
        body,
        "importing a UnixFS file",
        move |store, read| {
            stored::add_file(store, read, options, pin, &mut |_| {}).map_err(add_error)
        },
    )
    .await?;
    let response = wire::UnixfsAddResponse {
        cid: summary.root.to_string(),
        size: summary.size_bytes,
        blocks: summary.blocks_count,
        chunk_size: options.chunk_size_bytes(),
        hash: options.hash().name().to_string(),
        cid_version: options.cid_version().number(),
        raw_leaves: options.raw_leaves(),
        pinned: pin,
    };
    Ok((StatusCode::CREATED, Json(response)).into_response())
}

fn add_error(err: AddError) -> ApiError {
    match err {
        AddError::Put(e) => error::from_put(e),
        AddError::Read { .. } => ApiError::bad_request(err.to_string()),
        AddError::Pin { .. } => ApiError::internal(err.to_string()),
    }
}

/// `POST /api/v1/car`.
pub(crate) async fn car_import(
    State(st): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut pin = true;
    let mut allow_partial = false;
    for (key, value) in parse_query(query)? {
        match key.as_str() {
            "pin" => pin = parse_bool("pin", &value)?,
            "allow-partial" => allow_partial = parse_bool("allow-partial", &value)?,
            _ => return Err(unknown_param(&key, "pin, allow-partial")),
        }
    }
    let report = stream_into(
        &st,
        &headers,
        body,
        "importing a CAR",
        move |store, read| {
            stored::import_car(store, read, pin, allow_partial).map_err(car_import_error)
        },
    )
    .await?;
    Ok((
        StatusCode::OK,
        Json(wire::CarImportResponse {
            roots: report.roots.iter().map(ToString::to_string).collect(),
            blocks: report.blocks_count,
            blocks_new: report.blocks_new_count,
            bytes: report.block_bytes,
            pinned: report.pinned,
        }),
    )
        .into_response())
}

fn car_import_error(err: CarImportError) -> ApiError {
    match err {
        CarImportError::Put(e) => error::from_put(e),
        CarImportError::Pin { .. } => ApiError::internal(err.to_string()),
        _ => ApiError::bad_request(err.to_string()),
    }
}

/// A read failure inside a DAG, as the status a gateway answers with
/// before any byte of the body is sent.
pub(crate) fn read_error(root: &ContentId, err: ReadError) -> ApiError {
    match &err {
        ReadError::Source(SourceError::NotFound(c)) if c == root => {
            ApiError::not_found(format!("{root} is not in the store"))
        }
        // A child we do not have: this gateway is not recursive, so the
        // DAG cannot be served from here.
        ReadError::Source(SourceError::NotFound(c)) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("block {c} of {root} is not in this store (the DAG is incomplete here)"),
        ),
        ReadError::Source(SourceError::Other { .. }) => {
            tracing::error!(%root, error = %err, "refusing to serve a damaged DAG");
            ApiError::internal(err.to_string())
        }
        ReadError::NotAFile { .. } => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "{err}; this gateway renders UnixFS files only (fetch directories with ?format=car)"
            ),
        ),
        ReadError::RangeInvalid { .. } => {
            ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, err.to_string())
        }
        // Stored, verified blocks that do not form a UnixFS file: nothing
        // is broken here, but nothing can be rendered either.
        _ => ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "{root} is not a valid UnixFS DAG: {err}; its blocks can still be fetched with ?format=raw or ?format=car"
            ),
        ),
    }
}

/// Why a body stopped after the status line was sent. Only logged: aborting
/// the connection is the only honest signal left.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BodyError(String);

type Piece = Result<Bytes, BodyError>;

/// Run `produce` on the blocking pool and return the first piece it sends
/// (so the caller can still answer with an error status) plus the body.
async fn blocking_body(
    produce: impl FnOnce(&mpsc::Sender<Result<Bytes, ApiError>>) + Send + 'static,
) -> Result<Body, ApiError> {
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, ApiError>>(BODY_PIECES_IN_FLIGHT_COUNT_MAX);
    tokio::task::spawn_blocking(move || produce(&tx));
    let first = match rx.recv().await {
        None => return Ok(Body::empty()),
        Some(first) => first?,
    };
    let rest = stream::unfold(rx, |mut rx| async move {
        let item: Piece = match rx.recv().await? {
            Ok(bytes) => Ok(bytes),
            Err(e) => {
                tracing::error!(error = %e.message, "aborting a response mid-body");
                Err(BodyError(e.message))
            }
        };
        Some((item, rx))
    });
    let first = stream::once(async move { Ok::<Bytes, BodyError>(first) });
    Ok(Body::from_stream(futures_util::StreamExt::chain(
        first, rest,
    )))
}

/// The CAR body for `root` (DFS pre-order, no duplicates). The first piece
/// holds the header and the root block, so a missing or damaged root is an
/// error status rather than a cut-off body.
pub(crate) async fn car_body(
    store: Store,
    root: ContentId,
    scope: DagScope,
    entity_bytes: Option<EntityBytes>,
) -> Result<Body, ApiError> {
    blocking_body(move |tx| {
        // Blocks are read and verified on two cores (this blocking thread
        // and the read-ahead's), which roughly doubles a large export.
        let mut blocks = CarBlocks::new(ReadAhead::new(store), root, scope, entity_bytes);
        let mut first = encode_header(&[root]);
        match blocks.next() {
            Some(Ok((cid, data))) => {
                first.extend_from_slice(&encode_section_prefix(&cid, data.len()));
                first.extend_from_slice(&data);
            }
            Some(Err(e)) => {
                let _ = tx.blocking_send(Err(read_error(&root, e)));
                return;
            }
            None => {}
        }
        if tx.blocking_send(Ok(Bytes::from(first))).is_err() {
            return;
        }
        for item in blocks {
            let sent = match item {
                Ok((cid, data)) => {
                    tx.blocking_send(Ok(Bytes::from(encode_section_prefix(&cid, data.len()))))
                        .is_ok()
                        && tx.blocking_send(Ok(data)).is_ok()
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(ApiError::internal(format!(
                        "car of {root} cut off: {e}"
                    ))));
                    false
                }
            };
            if !sent {
                return;
            }
        }
    })
    .await
}

/// Open a UnixFS file root and learn its size (on the blocking pool).
pub(crate) async fn open_file(
    store: Store,
    root: ContentId,
) -> Result<UnixFsFile<Store>, ApiError> {
    tokio::task::spawn_blocking(move || {
        UnixFsFile::open(store, root).map_err(|e| read_error(&root, e))
    })
    .await
    .map_err(|join| ApiError::task_failed("opening a UnixFS file", join))?
}

/// The bytes `start..start+len` of an opened file (`len > 0`).
pub(crate) async fn file_body(
    file: UnixFsFile<Store>,
    start: u64,
    len: u64,
) -> Result<Body, ApiError> {
    let root = *file.root();
    blocking_body(move |tx| {
        let range = match file.range(start, Some(start + len - 1)) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(read_error(&root, e)));
                return;
            }
        };
        for piece in range {
            let msg = piece.map_err(|e| read_error(&root, e));
            let failed = msg.is_err();
            if tx.blocking_send(msg).is_err() || failed {
                return;
            }
        }
    })
    .await
}
