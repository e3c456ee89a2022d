//! `/api/v1/chain*`: the chain node's status, genesis, blocks, receipts with
//! proofs, accounts, transaction submission and a stream of finalized heads.
//!
//! The work is behind [`ChainControl`] (implemented by the node runtime) so
//! this crate needs no sockets or disk of its own and tests drive it with a
//! fake; a node whose config has no `chain:` section has no control and
//! answers 409. Blocks and receipts come from the block store, a blocking
//! read, so they run on the blocking pool. What a client must verify is also
//! served in its canonical binary encoding (`?format=bin`, or the `*_bin`
//! fields of a receipt): hashes and signatures are over those bytes.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metanode_chain::mempool::MempoolError;
use metanode_chain::types::{Height, SignedTx, TxBatch};
use metanode_core::encoding::{Decode, Encode};
use metanode_core::hash::Hash32;
use metanode_core::keys::PublicKey;
use metanode_core::limits::{
    API_CHAIN_HEADS_DRAIN_CHECK_MS, CHAIN_TX_BATCH_SIZE_BYTES_MAX, CHAIN_TX_SIZE_BYTES_MAX,
};
use tokio::sync::broadcast;

use crate::chain_control::{ChainControl, ChainError};
use crate::error::{ApiError, quote};
use crate::gateway::parse_query;
use crate::metrics::ApiTxRefusal;
use crate::{AppState, wire};

const OCTET_STREAM: &str = "application/octet-stream";
const NDJSON: &str = "application/x-ndjson";

/// The chain, or 409 when this node runs none.
fn control(st: &AppState) -> Result<Arc<dyn ChainControl>, ApiError> {
    st.chain.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "this node runs no chain (its config has no `chain:` section), so it has no \
             blocks, transactions or accounts",
        )
    })
}

fn map(err: ChainError) -> ApiError {
    match &err {
        // Backpressure, not a bad transaction: the same bytes may succeed
        // later, so say when to retry.
        ChainError::Refused(MempoolError::Full { .. } | MempoolError::SenderFull { .. }) => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, err.to_string())
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        }
        ChainError::Refused(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, err.to_string()),
        ChainError::Unavailable(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
        }
        ChainError::Storage(_) => ApiError::internal(err.to_string()),
    }
}

/// Runs a block-store read on the blocking pool.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, ChainError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::task_failed(what, e))?
        .map_err(map)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Bin,
}

pub(crate) fn format_param(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Format, ApiError> {
    let mut format = Format::Json;
    for (key, value) in parse_query(query)? {
        match key.as_str() {
            "format" => format = parse_format(&value)?,
            other => return Err(crate::blobs::unknown_param(other, "format")),
        }
    }
    Ok(format)
}

/// The value of a `format=` query parameter.
pub(crate) fn parse_format(value: &str) -> Result<Format, ApiError> {
    match value {
        "json" => Ok(Format::Json),
        "bin" => Ok(Format::Bin),
        other => Err(ApiError::bad_request(format!(
            "format {} is not supported: use format=json (the default) or format=bin \
             (the canonical encoding)",
            quote(other)
        ))),
    }
}

pub(crate) fn no_params(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<(), ApiError> {
    match parse_query(query)?.first() {
        Some((key, _)) => Err(crate::blobs::unknown_param(key, "none")),
        None => Ok(()),
    }
}

pub(crate) fn path_param(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|e| ApiError::bad_request(format!("malformed path: {e}")))
}

pub(crate) fn binary(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, OCTET_STREAM)], bytes).into_response()
}

pub(crate) fn encoding_failed(what: &str, err: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("encoding the {what} failed: {err}"))
}

pub(crate) async fn status(
    State(st): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<wire::ChainStatusResponse>, ApiError> {
    let chain = control(&st)?;
    no_params(query)?;
    Ok(Json(wire::ChainStatusResponse::from(&chain.status())))
}

pub(crate) async fn genesis(
    State(st): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let chain = control(&st)?;
    let genesis = chain.genesis();
    match format_param(query)? {
        Format::Json => Ok(Json(wire::GenesisResponse::from(&genesis)).into_response()),
        Format::Bin => genesis
            .to_canonical_bytes()
            .map(binary)
            .map_err(|e| encoding_failed("genesis", e)),
    }
}

/// The body of a submit route: `application/octet-stream` (or no
/// content type) of at most `max` bytes, not empty. `noun` names what is
/// sent ("transaction") and `what` its canonical encoding ("SignedTx") in
/// errors.
async fn octet_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    noun: &str,
    what: &str,
) -> Result<Bytes, ApiError> {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if !essence.eq_ignore_ascii_case(OCTET_STREAM) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content-type {} is not accepted: send the canonical {what} bytes as {OCTET_STREAM}",
                    quote(content_type.to_str().unwrap_or("(not text)"))
                ),
            ));
        }
    }
    let too_large = |got: String| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{noun} body is {got}; a {noun} is at most {max} bytes"),
        )
    };
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > max as u64
    {
        return Err(too_large(format!("{length} bytes")));
    }
    let bytes = axum::body::to_bytes(body, max).await.map_err(|e| {
        let over_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over_limit {
            too_large(format!("more than {max} bytes"))
        } else {
            ApiError::bad_request(format!("reading the {noun} body failed: {e}"))
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(format!(
            "the body is empty: send the {noun}'s canonical {what} bytes"
        )));
    }
    Ok(bytes)
}

/// Counts a submission body [`octet_body`] refused: too large, or empty
/// or unreadable (a wrong content type is not a transaction at all).
fn count_body_refusal(
    st: &AppState,
    error: &ApiError,
    oversized: ApiTxRefusal,
    undecodable: ApiTxRefusal,
) {
    if error.status == StatusCode::PAYLOAD_TOO_LARGE {
        st.metrics.count_tx_refusal(oversized);
    } else if error.status == StatusCode::BAD_REQUEST {
        st.metrics.count_tx_refusal(undecodable);
    }
}

pub(crate) async fn submit_tx(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<wire::TxSubmitResponse>), ApiError> {
    let chain = control(&st)?;
    let bytes = octet_body(
        &headers,
        body,
        CHAIN_TX_SIZE_BYTES_MAX as usize,
        "transaction",
        "SignedTx",
    )
    .await
    .inspect_err(|e| {
        count_body_refusal(&st, e, ApiTxRefusal::Oversized, ApiTxRefusal::Undecodable)
    })?;
    let tx = SignedTx::from_canonical_bytes(&bytes).map_err(|e| {
        st.metrics.count_tx_refusal(ApiTxRefusal::Undecodable);
        ApiError::bad_request(format!(
            "the body ({} bytes) is not a canonical SignedTx: {e}",
            bytes.len()
        ))
    })?;
    let hash = chain.submit(tx).await.map_err(map)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(wire::TxSubmitResponse {
            tx_hash: hash.to_hex(),
        }),
    ))
}

/// `POST /api/v1/chain/txs/batch`: many transactions in one request (one
/// canonical `TxBatch`), so a client sending thousands per second is not
/// paying an HTTP exchange per transaction. Each transaction is admitted or
/// refused on its own, exactly as by the single route; the answer lists
/// them in order with the status the single route would have given.
pub(crate) async fn submit_txs(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<wire::TxBatchSubmitResponse>, ApiError> {
    let chain = control(&st)?;
    let bytes = octet_body(
        &headers,
        body,
        CHAIN_TX_BATCH_SIZE_BYTES_MAX as usize,
        "batch",
        "TxBatch",
    )
    .await
    .inspect_err(|e| {
        count_body_refusal(
            &st,
            e,
            ApiTxRefusal::BatchOversized,
            ApiTxRefusal::BatchUndecodable,
        )
    })?;
    let batch = TxBatch::from_canonical_bytes(&bytes).map_err(|e| {
        st.metrics.count_tx_refusal(ApiTxRefusal::BatchUndecodable);
        ApiError::bad_request(format!(
            "the body ({} bytes) is not a canonical TxBatch: {e}",
            bytes.len()
        ))
    })?;
    let hashes: Vec<Hash32> = batch.txs.iter().map(SignedTx::hash).collect();
    let answers = chain.submit_batch(batch.txs).await.map_err(map)?;
    if answers.len() != hashes.len() {
        return Err(ApiError::internal(format!(
            "the chain answered {} of {} transactions",
            answers.len(),
            hashes.len()
        )));
    }
    let mut accepted = 0;
    let results: Vec<wire::TxBatchItemResult> = hashes
        .iter()
        .zip(answers)
        .map(|(hash, answer)| match answer {
            Ok(admitted) => {
                accepted += 1;
                wire::TxBatchItemResult {
                    tx_hash: admitted.to_hex(),
                    status: StatusCode::ACCEPTED.as_u16(),
                    error: None,
                }
            }
            Err(e) => {
                let e = map(e);
                wire::TxBatchItemResult {
                    tx_hash: hash.to_hex(),
                    status: e.status.as_u16(),
                    error: Some(e.message),
                }
            }
        })
        .collect();
    Ok(Json(wire::TxBatchSubmitResponse {
        accepted,
        refused: results.len() as u64 - accepted,
        results,
    }))
}

pub(crate) async fn block(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let chain = control(&st)?;
    let id = path_param(path)?;
    let format = format_param(query)?;
    let height: Height = if id == "latest" {
        let tip = chain.status().height;
        if tip == 0 {
            return Err(ApiError::not_found(
                "no block has been finalized yet (the chain is at genesis)",
            ));
        }
        tip
    } else {
        match id.parse::<u64>() {
            Ok(0) => {
                return Err(ApiError::bad_request(
                    "height 0 is the genesis document, not a block: blocks start at 1 \
                     (GET /api/v1/chain/genesis for genesis)",
                ));
            }
            Ok(h) => h,
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "block {} is not a height: use a number from 1, or latest",
                    quote(&id)
                )));
            }
        }
    };
    let reader = chain.clone();
    let Some(found) = blocking("reading a block", move || reader.block(height)).await? else {
        return Err(ApiError::not_found(format!(
            "no block at height {height}: the last finalized height is {}",
            chain.status().height
        )));
    };
    match format {
        Format::Json => Ok(Json(wire::BlockResponse::from(&found)).into_response()),
        Format::Bin => found
            .to_canonical_bytes()
            .map(binary)
            .map_err(|e| encoding_failed("block", e)),
    }
}

pub(crate) async fn receipt(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<wire::ReceiptResponse>, ApiError> {
    let chain = control(&st)?;
    let text = path_param(path)?;
    no_params(query)?;
    let tx_hash: Hash32 = text.parse().map_err(|e| {
        ApiError::bad_request(format!(
            "transaction hash {} is not 64 hex digits: {e}",
            quote(&text)
        ))
    })?;
    let Some(found) = blocking("reading a receipt", move || chain.receipt(&tx_hash)).await? else {
        return Err(ApiError::not_found(format!(
            "transaction {tx_hash} has no receipt: it is unknown to this node or not final yet"
        )));
    };
    wire::ReceiptResponse::new(&found)
        .map(Json)
        .map_err(|e| encoding_failed("receipt", e))
}

pub(crate) async fn account(
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<wire::AccountResponse>, ApiError> {
    let chain = control(&st)?;
    let text = path_param(path)?;
    no_params(query)?;
    let key: PublicKey = text.parse().map_err(|e| {
        ApiError::bad_request(format!(
            "account {} is not an Ed25519 public key (64 hex digits): {e}",
            quote(&text)
        ))
    })?;
    let info = chain.account(&key);
    Ok(Json(wire::AccountResponse {
        public_key: key.to_string(),
        balance: info.balance,
        next_nonce: info.next_nonce,
    }))
}

pub(crate) async fn heads(
    State(st): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let chain = control(&st)?;
    no_params(query)?;
    let stream = futures_util::stream::unfold(
        (chain.heads(), st.draining.clone()),
        |(mut rx, draining)| async move {
            let line = next_head_line(&mut rx, &draining).await?;
            Some((Ok::<_, Infallible>(line), (rx, draining)))
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, NDJSON),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The next NDJSON line of a head stream: a head, or `{"lagged": n}` when
/// the subscriber fell behind the channel. `None` ends the stream: the
/// chain stopped, or the server is draining (an idle subscriber must not
/// hold up a shutdown; it is checked every few hundred ms). A client that
/// went away is noticed when the next line cannot be written.
async fn next_head_line(
    rx: &mut broadcast::Receiver<crate::HeadEvent>,
    draining: &AtomicBool,
) -> Option<Bytes> {
    let check = Duration::from_millis(API_CHAIN_HEADS_DRAIN_CHECK_MS);
    loop {
        if draining.load(Ordering::Relaxed) {
            return None;
        }
        // `recv` is cancel-safe: a timeout loses no event.
        let encoded = match tokio::time::timeout(check, rx.recv()).await {
            Err(_) => continue,
            Ok(Ok(event)) => serde_json::to_vec(&wire::HeadEventInfo::from(&event)),
            Ok(Err(broadcast::error::RecvError::Lagged(skipped))) => {
                serde_json::to_vec(&wire::HeadsLagged { lagged: skipped })
            }
            Ok(Err(broadcast::error::RecvError::Closed)) => return None,
        };
        let mut line = match encoded {
            Ok(line) => line,
            Err(err) => {
                tracing::error!(error = %err, "encoding a head event failed; ending the stream");
                return None;
            }
        };
        line.push(b'\n');
        return Some(Bytes::from(line));
    }
}
