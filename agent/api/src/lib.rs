//! The agent's HTTP API.
//!
//! Routes (every error body is JSON `{"error": "..."}` naming the bad input):
//!
//! | route | what |
//! |---|---|
//! | `GET /health` | `{"status":"ok","version","io"}`; 503 `draining` during shutdown |
//! | `GET /metrics` | OpenMetrics text (Prometheus scrapes it); with a chain also `metanode_chain_*` and `metanode_bpci_*` |
//! | `GET /metrics/traffic` | XDP traffic-light counters and cage decisions (Prometheus text; 409 without a `traffic:` section) |
//! | `GET\|HEAD /ipfs/{cid}` | IPFS trustless gateway (raw blocks, CAR with dag-scope/entity-bytes) and UnixFS file bytes; single ranges, ETag/304 |
//! | `POST /api/v1/blobs[?pin=false]` | streaming upload; 201 new, 200 `existed`, 413 over the limit |
//! | `POST /api/v1/unixfs[?chunker=size-N&hash=sha2-256\|blake3&pin=false]` | UnixFS import (Kubo's CIDs); 201 `{"cid","size","blocks",…}` |
//! | `POST /api/v1/car[?pin=false&allow-partial=true]` | CARv1/v2 import, every block verified, incomplete DAGs refused |
//! | `GET /api/v1/blobs[?after=CID&limit=N]` | one page of the listing, ordered by cid string |
//! | `GET /api/v1/blobs/{cid}/stat` | size, pin, storage kind |
//! | `DELETE /api/v1/blobs/{cid}` | remove (durable tombstone); 404 if absent |
//! | `POST\|DELETE /api/v1/pins/{cid}` | pin / unpin |
//! | `GET /api/v1/store` | backend and fill level |
//! | `POST /api/v1/gc`, `POST /api/v1/verify` | admin operations |
//! | `GET /api/v1/system` | version, A/B slots, kernel, live sysctls (appliance only; else 409) |
//! | `POST /api/v1/system/update` | body = signed UKI: verified, installed into the inactive slot as a trial |
//! | `POST /api/v1/system/{reboot,poweroff}` | ask PID 1 to reboot / power off (202) |
//! | `POST /api/v1/config?mode=try&timeout_s=N` | body = node config YAML: applied as a trial, reverted unless committed |
//! | `POST /api/v1/config/commit`, `GET /api/v1/config/trial` | confirm / inspect the trial |
//! | `GET /api/v1/chain/status` | the chain node: height, head, validators, peers, mempool, counters (409 without a chain, as every chain route) |
//! | `GET /api/v1/chain/genesis[?format=bin]` | the genesis document (JSON, or its canonical bytes: their hash is the chain id) |
//! | `POST /api/v1/chain/txs` | body = canonical SignedTx bytes; 202 `{"tx_hash"}`, 400 undecodable, 413 too large, 422 refused, 429 + `Retry-After` mempool full |
//! | `POST /api/v1/chain/txs/batch` | body = canonical TxBatch bytes (version, count, SignedTx…; ≤ 4,096 txs, 4 MiB); 200 `{"accepted","refused","results":[{"tx_hash","status","error"?}]}` with each transaction's own status (202/413/422/429), 400 undecodable, 413 too large, 503 node stopped or busy |
//! | `GET /api/v1/chain/blocks/{height\|latest}[?format=bin]` | a finalized block (JSON summary, or the canonical FinalizedBlock) |
//! | `GET /api/v1/chain/receipts/{tx_hash}` | receipt + inclusion proof + header and certificate bytes: enough for an offline light client |
//! | `GET /api/v1/chain/accounts/{public_key}` | balance and next nonce as of the last finalized block |
//! | `GET /api/v1/chain/heads` | finalized heads as NDJSON, one per line (`{"lagged": n}` when the reader fell behind) |
//! | `GET /api/v1/cage/receipts` | the HTTP Cage's receipt signer and batches written (409 without a cage, as every cage route) |
//! | `GET /api/v1/cage/receipts/batches/{n}[?offset=K&limit=M \| ?format=bin]` | signed receipt batch n, verified (whole) before it is served: header, its store CID and a page of its receipts (at most 10,000, the default; `next_offset` names the next page), or the canonical SignedBatch, the blob's bytes |
//! | `GET /api/v1/cage/receipts/{receipt_hash}?batch=N[&format=bin]` | a receipt from a `Metanode-Receipt` header with its batch's signed header and Merkle path (or the canonical ReceiptProof): checkable with the node key alone |
//! | `POST /api/v1/docklock/runs` | JSON run request (`executable` path, `executable_cid` or `bundle`; inputs by CID): runs a DockLock cage; 200 exit, verdict, receipt and output CIDs, cgroup usage; 400 naming the field, 403 `executable_cid` on a node without `docklock.executables_by_cid`, 404 unknown input or executable CID, 409 without a `docklock:` section, 503 + `Retry-After` while another run is in progress |
//!
//! The admin operations (gc, verify, delete, pins) are open to whoever can
//! reach the listener for now; they move behind mTLS with the TLS work.
//!
//! Nothing here blocks the runtime: store calls run on the blocking pool
//! (`spawn_blocking`), uploads stream into a store writer through a bounded
//! channel, and downloads stream in verified windows of
//! [`API_READ_WINDOW_BYTES`](metanode_core::limits::API_READ_WINDOW_BYTES).

mod blobs;
mod cage;
mod chain;
mod chain_control;
mod docklock;
mod error;
mod gateway;
mod ipfs;
mod metrics;
pub mod range;
mod server;
mod system;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metanode_core::limits::API_UPLOADS_STREAMING_COUNT_MAX;
use metanode_store::Store;
use tokio::sync::Semaphore;

pub use chain_control::{
    AccountInfo, BoxFuture, BpciMetrics, ChainControl, ChainError, ChainMetrics, ChainStatus,
    HeadEvent, LabeledCount, ReceiptWithProof,
};
pub use docklock::{
    CageCgroupReport, CageExitStatus, CageInput, CageInputRecord, CageOutput, CageRunError,
    CageRunRequest, CageRunResponse, CageViolation, CageWorkload, DocklockControl,
};
pub use error::ApiError;
pub use metrics::Metrics;
pub use server::{ServeError, ServeReport, serve};
pub use system::{SystemControl, SystemError};

/// Knobs of the API server (from the `api:` config section, plus the store's
/// inline threshold).
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Largest upload body; larger ones get 413.
    pub upload_size_bytes_max: u64,
    /// Uploads up to this size are collected in memory and stored in one
    /// call; larger (or unknown-length) ones stream into a store writer.
    /// Set it to the store's inline threshold.
    pub upload_collect_size_bytes_max: u64,
    /// Bounds the wait for a request head, for each next chunk of an upload
    /// body, and for a metadata store call. Not a cap on a whole transfer: a
    /// 1 GiB upload may take longer, as long as it keeps moving.
    pub request_timeout_ms: u64,
    /// Connections served at once; further ones wait in the listen backlog.
    pub connections_max: usize,
    /// Reported by `/health` and `metanode_build_info`.
    pub version: String,
}

impl ApiOptions {
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Shared by every handler; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) store: Store,
    pub(crate) opts: Arc<ApiOptions>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) draining: Arc<AtomicBool>,
    /// Slots for uploads that stream into a store writer thread.
    pub(crate) upload_slots: Arc<Semaphore>,
    /// The appliance's controls; `None` when not started by PID 1.
    pub(crate) system: Option<Arc<dyn SystemControl>>,
    /// The chain node; `None` when this node runs no chain.
    pub(crate) chain: Option<Arc<dyn ChainControl>>,
    /// Renders the traffic lights' and cage's counters (Prometheus text
    /// format) for `/metrics/traffic`; `None` when the node runs neither.
    pub(crate) traffic_metrics: Option<TrafficMetrics>,
    /// The HTTP Cage's audit receipts; `None` when the node runs no cage.
    pub(crate) cage_receipts: Option<metanode_cage::ReceiptReader>,
    /// Slots for cage receipt-batch reads (each holds a batch in memory).
    pub(crate) cage_batch_reads: Arc<Semaphore>,
    /// Cage runs (`/api/v1/docklock/runs`); `None` without a `docklock:` section.
    pub(crate) docklock: Option<docklock::DocklockState>,
}

/// Where `/metrics/traffic` comes from (the agent's traffic lights + cage).
pub trait TrafficMetricsSource: Send + Sync + std::fmt::Debug {
    /// Appends Prometheus text-format metrics to `out`. May read kernel
    /// maps: called on a blocking thread.
    fn render(&self, out: &mut String);
}

pub type TrafficMetrics = Arc<dyn TrafficMetricsSource>;

impl AppState {
    pub fn new(store: Store, opts: ApiOptions) -> Self {
        let metrics = Arc::new(Metrics::new(&store, &opts.version));
        Self {
            store,
            opts: Arc::new(opts),
            metrics,
            draining: Arc::new(AtomicBool::new(false)),
            upload_slots: Arc::new(Semaphore::new(API_UPLOADS_STREAMING_COUNT_MAX)),
            system: None,
            chain: None,
            traffic_metrics: None,
            cage_receipts: None,
            cage_batch_reads: Arc::new(Semaphore::new(
                metanode_core::limits::API_CAGE_BATCH_READS_COUNT_MAX,
            )),
            docklock: None,
        }
    }

    /// Enables `POST /api/v1/docklock/runs`.
    pub fn with_docklock(mut self, control: Arc<dyn DocklockControl>) -> Self {
        self.docklock = Some(docklock::DocklockState::new(control));
        self
    }

    /// Enables `/metrics/traffic` (XDP counters, cage decisions).
    pub fn with_traffic_metrics(mut self, render: TrafficMetrics) -> Self {
        self.traffic_metrics = Some(render);
        self
    }

    /// Enables the `/api/v1/cage/receipts*` routes.
    pub fn with_cage_receipts(mut self, reader: metanode_cage::ReceiptReader) -> Self {
        self.cage_receipts = Some(reader);
        self
    }

    /// Enables the `/api/v1/system*` and `/api/v1/config*` routes.
    pub fn with_system(mut self, control: Arc<dyn SystemControl>) -> Self {
        self.system = Some(control);
        self
    }

    /// Enables the `/api/v1/chain*` routes.
    pub fn with_chain(mut self, chain: Arc<dyn ChainControl>) -> Self {
        self.metrics.set_chain(chain.clone());
        self.chain = Some(chain);
        self
    }

    /// Make `/health` answer 503 so load balancers stop sending work.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// The full route table with metrics middleware; serve it with [`serve`] or
/// drive it directly with `tower::ServiceExt::oneshot` in tests.
pub fn router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/metrics/traffic", get(traffic_metrics_text))
        .route("/ipfs/{cid}", get(gateway::ipfs).head(gateway::ipfs))
        .route("/api/v1/blobs", post(blobs::upload).get(blobs::list))
        .route("/api/v1/unixfs", post(ipfs::unixfs_add))
        .route("/api/v1/car", post(ipfs::car_import))
        .route("/api/v1/blobs/{cid}", axum::routing::delete(blobs::remove))
        .route("/api/v1/blobs/{cid}/stat", get(blobs::stat))
        .route("/api/v1/pins/{cid}", post(blobs::pin).delete(blobs::unpin))
        .route("/api/v1/store", get(blobs::store_info))
        .route("/api/v1/gc", post(blobs::gc))
        .route("/api/v1/verify", post(blobs::verify))
        .route("/api/v1/system", get(system::info))
        .route("/api/v1/system/update", post(system::update))
        .route("/api/v1/system/{action}", post(system::power))
        .route("/api/v1/config", post(system::config_try))
        .route("/api/v1/config/commit", post(system::config_commit))
        .route("/api/v1/config/trial", get(system::config_status))
        .route("/api/v1/chain/status", get(chain::status))
        .route("/api/v1/chain/genesis", get(chain::genesis))
        .route("/api/v1/chain/txs", post(chain::submit_tx))
        .route("/api/v1/chain/txs/batch", post(chain::submit_txs))
        .route("/api/v1/chain/blocks/{height}", get(chain::block))
        .route("/api/v1/chain/receipts/{tx_hash}", get(chain::receipt))
        .route("/api/v1/chain/accounts/{public_key}", get(chain::account))
        .route("/api/v1/chain/heads", get(chain::heads))
        .route("/api/v1/cage/receipts", get(cage::info))
        .route("/api/v1/cage/receipts/batches/{batch}", get(cage::batch))
        .route("/api/v1/cage/receipts/{receipt_hash}", get(cage::receipt))
        .route("/api/v1/docklock/runs", post(docklock::run))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        // Upload size is enforced while streaming (blobs::upload); axum's
        // default 2 MB extractor limit would only get in the way.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .with_state(state)
}

async fn health(State(st): State<AppState>) -> Response {
    let draining = st.draining.load(Ordering::Relaxed);
    let body = wire::Health {
        status: if draining { "draining" } else { "ok" }.to_string(),
        version: st.opts.version.clone(),
        io: st.store.io_name().to_string(),
    };
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(st): State<AppState>) -> Result<Response, ApiError> {
    let text = st
        .metrics
        .encode()
        .map_err(|e| ApiError::internal(format!("encoding metrics failed: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// The traffic counters come from the kernel (XDP per-CPU maps) and the
/// cage at scrape time, in the Prometheus text format; a separate path
/// because OpenMetrics' `/metrics` document must end with `# EOF`.
async fn traffic_metrics_text(State(st): State<AppState>) -> Result<Response, ApiError> {
    let render = st.traffic_metrics.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "this node runs no traffic lights or cage (no traffic: section in its config)"
                .to_string(),
        )
    })?;
    let text = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        render.render(&mut text);
        text
    })
    .await
    .map_err(|e| ApiError::internal(format!("rendering traffic metrics failed: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route for {method} {}",
        error::quote(uri.path())
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {method} is not allowed on {}",
            error::quote(uri.path())
        ),
    )
}
