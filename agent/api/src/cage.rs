//! `/api/v1/cage/receipts*`: the HTTP Cage's audit receipts, so a client
//! holding a response's `Metanode-Receipt: <hash>; batch=N` header can get
//! the receipt, the node-signed header of its batch and the Merkle path
//! between them, and check it with the node's public key alone
//! (`metanode cage verify-receipt`).
//!
//! Batches come from the receipt file through
//! [`metanode_cage::ReceiptReader`], which verifies a batch (signer,
//! signature, Merkle root) before it is served, so a batch changed on disk
//! is a 500 naming it, never served as good. The read, the proof, the CID
//! and the answer's encoding (all of it file I/O or hashing over up to
//! ~50 MB) run on the blocking pool, at most
//! [`API_CAGE_BATCH_READS_COUNT_MAX`](metanode_core::limits::API_CAGE_BATCH_READS_COUNT_MAX) at once. A node without
//! `traffic.cage` answers 409.
//!
//! Like the other routes for now, these are open to whoever reaches the
//! listener, and a batch names its clients' addresses and key ids: keep the
//! API on loopback or a trusted network until it moves behind mTLS.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use metanode_cage::{LookupError, ReceiptReader, StoredBatch};
use metanode_core::encoding::Encode;
use metanode_core::hash::Hash32;

use metanode_core::limits::API_CAGE_BATCH_PAGE_RECEIPTS_COUNT_MAX;

use crate::chain::{Format, binary, encoding_failed, no_params, parse_format, path_param};
use crate::error::{ApiError, quote};
use crate::gateway::parse_query;
use crate::{AppState, wire};

/// The cage's receipts, or 409 when this node runs no cage.
fn reader(st: &AppState) -> Result<ReceiptReader, ApiError> {
    st.cage_receipts.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "this node runs no HTTP Cage (its config has no traffic.cage), so it has no \
             audit receipts",
        )
    })
}

fn map(err: LookupError) -> ApiError {
    match &err {
        LookupError::BatchNotWritten { .. } | LookupError::ReceiptNotInBatch { .. } => {
            ApiError::not_found(err.to_string())
        }
        // Written once, deleted by the operator's retention setting: it
        // existed, so not 404.
        LookupError::BatchDeleted { .. } => ApiError::new(StatusCode::GONE, err.to_string()),
        LookupError::Read { .. } | LookupError::Truncated { .. } | LookupError::Invalid { .. } => {
            ApiError::internal(err.to_string())
        }
    }
}

/// Runs `work` over batch `batch_index` on the blocking pool, holding one of
/// the [`API_CAGE_BATCH_READS_COUNT_MAX`](metanode_core::limits::API_CAGE_BATCH_READS_COUNT_MAX) read slots.
async fn with_batch<T: Send + 'static>(
    st: &AppState,
    reader: ReceiptReader,
    batch_index: u64,
    work: impl FnOnce(StoredBatch) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _slot = st
        .cage_batch_reads
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::internal("the receipt batch reader is closed"))?;
    tokio::task::spawn_blocking(move || work(reader.batch(batch_index).map_err(map)?))
        .await
        .map_err(|e| ApiError::task_failed("reading a receipt batch", e))?
}

fn batch_number(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "batch {} is not a batch number: use the batch= of the Metanode-Receipt header \
             (0, 1, 2, …)",
            quote(text)
        ))
    })
}

pub(crate) async fn info(
    State(st): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<wire::CageReceiptsInfo>, ApiError> {
    let reader = reader(&st)?;
    no_params(query)?;
    Ok(Json(wire::CageReceiptsInfo {
        signer: reader.signer().to_string(),
        batches_count: reader.batches_count(),
        first_batch_index: reader.first_batch_index(),
    }))
}

/// A `?offset=` or `?limit=` value: a receipt count; `range` says which
/// counts the parameter takes.
fn receipt_count_param(key: &str, value: &str, range: &str) -> Result<u32, ApiError> {
    value.parse::<u32>().map_err(|_| {
        ApiError::bad_request(format!(
            "{key} {} is not a receipt count ({range})",
            quote(value)
        ))
    })
}

/// The page `?offset=K&limit=M` asks for, and the format.
fn batch_params(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<(Format, Option<u32>, Option<u32>), ApiError> {
    let (mut format, mut offset, mut limit) = (Format::Json, None, None);
    for (key, value) in parse_query(query)? {
        match key.as_str() {
            "format" => format = parse_format(&value)?,
            "offset" => {
                offset = Some(receipt_count_param(
                    "offset",
                    &value,
                    "0 up to the batch's count",
                )?)
            }
            "limit" => {
                let range = format!("1 to {API_CAGE_BATCH_PAGE_RECEIPTS_COUNT_MAX}");
                limit = Some(receipt_count_param("limit", &value, &range)?)
            }
            other => return Err(crate::blobs::unknown_param(other, "format, offset, limit")),
        }
    }
    if let Some(0) = limit {
        return Err(ApiError::bad_request(
            "limit 0 asks for no receipts: use 1 or more",
        ));
    }
    if let Some(l) = limit
        && l > API_CAGE_BATCH_PAGE_RECEIPTS_COUNT_MAX
    {
        return Err(ApiError::bad_request(format!(
            "limit {l} is more receipts than a page holds (at most \
             {API_CAGE_BATCH_PAGE_RECEIPTS_COUNT_MAX}): page with offset= and the answer's \
             next_offset"
        )));
    }
    if format == Format::Bin && (offset.is_some() || limit.is_some()) {
        return Err(ApiError::bad_request(
            "offset and limit page the JSON receipts; format=bin is the whole signed batch, \
             the bytes its signature covers",
        ));
    }
    Ok((format, offset, limit))
}

pub(crate) async fn batch(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let reader = reader(&st)?;
    let batch_index = batch_number(&path_param(path)?)?;
    let (format, offset, limit) = batch_params(query)?;
    let offset = offset.unwrap_or(0);
    let limit = limit.unwrap_or(API_CAGE_BATCH_PAGE_RECEIPTS_COUNT_MAX);
    with_batch(&st, reader, batch_index, move |stored| match format {
        Format::Json => {
            let count = stored.batch.header.receipts_count;
            if offset > count {
                return Err(ApiError::bad_request(format!(
                    "offset {offset} is past the end of batch {batch_index}, which holds \
                     {count} receipts"
                )));
            }
            Ok(Json(wire::CageBatchResponse::page(&stored, offset, limit)).into_response())
        }
        Format::Bin => Ok(binary(stored.signed_batch_bytes)),
    })
    .await
}

pub(crate) async fn receipt(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let reader = reader(&st)?;
    let text = path_param(path)?;
    let receipt_hash: Hash32 = text.parse().map_err(|e| {
        ApiError::bad_request(format!(
            "receipt hash {} is not 64 hex digits (the first part of a Metanode-Receipt \
             header): {e}",
            quote(&text)
        ))
    })?;
    let mut batch_index = None;
    let mut format = Format::Json;
    for (key, value) in parse_query(query)? {
        match key.as_str() {
            "batch" => batch_index = Some(batch_number(&value)?),
            "format" => format = parse_format(&value)?,
            other => return Err(crate::blobs::unknown_param(other, "batch, format")),
        }
    }
    let batch_index = batch_index.ok_or_else(|| {
        ApiError::bad_request(
            "batch is missing: add ?batch=N, the batch= of the Metanode-Receipt header",
        )
    })?;
    with_batch(&st, reader, batch_index, move |stored| {
        let proof = stored.prove(&receipt_hash).map_err(map)?;
        match format {
            Format::Json => {
                wire::CageReceiptProofResponse::new(&stored.cid(), &receipt_hash, &proof)
                    .map(|r| Json(r).into_response())
                    .map_err(|e| encoding_failed("receipt proof", e))
            }
            Format::Bin => proof
                .to_canonical_bytes()
                .map(binary)
                .map_err(|e| encoding_failed("receipt proof", e)),
        }
    })
    .await
}
