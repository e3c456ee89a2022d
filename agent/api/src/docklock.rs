//! `POST /api/v1/docklock/runs`: run an executable or an OCI bundle in a DockLock cage, with
//! declared inputs taken from the store by CID; the signed receipt and the outputs go back into
//! the store as blobs.
//!
//! The API crate checks the request (every refusal a 400 naming the field, an input or
//! executable CID that is not stored a 404, a program by CID on a node that does not allow it a
//! 403) and admits one run at a time; the run itself is behind [`DocklockControl`],
//! which the `metanode` binary implements by spawning its own launcher process (the agent is
//! multi-threaded and never forks itself for a cage). Tests drive the route with a fake. A node
//! without a `docklock:` config section answers 409.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use metanode_core::cid::ContentId;
use metanode_core::limits::{
    API_DOCKLOCK_BUSY_RETRY_AFTER_S, API_DOCKLOCK_INPUTS_COUNT_MAX,
    API_DOCKLOCK_REQUEST_SIZE_BYTES_MAX, API_DOCKLOCK_RUNS_CONCURRENT_COUNT_MAX,
    API_DOCKLOCK_SERVICE_NAME_LEN_BYTES_MAX,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::AppState;
use crate::error::{ApiError, quote};

/// Runs one cage; implemented by the agent binary. Called on a blocking thread, one run at a
/// time (the route admits no second run while one is in progress).
pub trait DocklockControl: Send + Sync + std::fmt::Debug {
    /// The largest `timeout_s` a request may ask for (the config's `run_timeout_s_max`), also
    /// the timeout of a request that names none.
    fn run_timeout_s_max(&self) -> u64;
    /// Whether a request may name its program by CID (the config's `executables_by_cid`).
    fn executables_by_cid(&self) -> bool;
    /// Run the cage, store the receipt and the outputs, and describe the outcome. A workload
    /// that exits non-zero or is killed is a successful run (its exit is in the answer).
    fn run(&self, request: CageRunRequest) -> Result<CageRunResponse, CageRunError>;
}

/// What a run executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CageWorkload {
    /// A plain executable (absolute host path) with its arguments and environment.
    Executable {
        path: PathBuf,
        args: Vec<String>,
        env: Vec<String>,
    },
    /// A program stored as a blob (raw or a UnixFS file), run like [`CageWorkload::Executable`];
    /// only on a node whose config allows `executables_by_cid`.
    ExecutableCid {
        cid: ContentId,
        args: Vec<String>,
        env: Vec<String>,
    },
    /// An OCI runtime-spec bundle directory (absolute host path).
    Bundle { dir: PathBuf },
}

/// A declared input: the store blob `cid`, copied read-only to `/in/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CageInput {
    pub name: String,
    pub cid: ContentId,
}

/// A checked run request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CageRunRequest {
    pub workload: CageWorkload,
    pub inputs: Vec<CageInput>,
    /// Seed of the cage's /dev/urandom.
    pub rng_seed: [u8; 32],
    /// Wall timeout; at most [`DocklockControl::run_timeout_s_max`].
    pub timeout_s: u64,
    /// Service name recorded in the receipt.
    pub service: String,
}

/// How the workload ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CageExitStatus {
    /// Exit code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// The cage could not be set up; the workload never ran (the receipt's reason).
    Failed(String),
}

/// One thing the cage refused or neutralised, as the receipt records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CageViolation {
    pub kind: String,
    pub detail: String,
}

/// A regular file the workload left in /out, stored as a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CageOutput {
    /// Relative to /out.
    pub path: String,
    pub cid: String,
    pub size_bytes: u64,
}

/// An input as the receipt's input root covers it (the declared inputs by CID, and the
/// rootfs digest under the name `/`); the list `metanode docklock verify --inputs` checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CageInputRecord {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    pub size_bytes: u64,
}

/// What the cage's cgroup measured, from the launcher's outcome (not part of the receipt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CageCgroupReport {
    /// Which cgroup version the cage's controllers used: `v1`, `v2`, `hybrid` (some on each) or
    /// `unused`.
    pub mode: String,
    pub memory_peak_bytes: u64,
    pub cpu_usage_us: u64,
    /// Times the kernel's OOM killer killed a process of the cage.
    pub oom_kills: u64,
    /// Forks refused because the cage reached its pids limit.
    pub pids_max_hits: u64,
}

/// The answer of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CageRunResponse {
    pub exit: CageExitStatus,
    /// The receipt's verdict (`completed`, `violations`, …).
    pub verdict: String,
    pub violations: Vec<CageViolation>,
    /// Violations counted but not kept in the receipt (over its bound).
    pub violations_dropped_count: u64,
    /// The signed receipt (.dlr bytes), stored as a blob.
    pub receipt_cid: String,
    /// Stored outputs; empty when `outputs_refused` says why none were stored.
    pub outputs: Vec<CageOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs_refused: Option<String>,
    pub inputs: Vec<CageInputRecord>,
    /// Hex roots from the receipt.
    pub input_root: String,
    pub outputs_root: String,
    /// The request's `executable_cid`, echoed; the receipt covers the program through the
    /// rootfs digest (the input `/`), not by CID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable_cid: Option<String>,
    pub cgroup: CageCgroupReport,
    /// `rdtsc`/`rdtscp` instructions the cage answered from its virtual counter.
    pub tsc_reads_virtualized: u64,
}

/// Why a run did not happen (or its results could not be kept).
#[derive(Debug, thiserror::Error)]
pub enum CageRunError {
    /// The request names something the node refuses (a path outside the workloads directory,
    /// a spec the cage does not support).
    #[error("{field}: {reason}")]
    BadRequest { field: String, reason: String },
    /// A declared input is not in the store.
    #[error("input {name}: {cid} is not in the store")]
    InputNotFound { name: String, cid: ContentId },
    /// The program named by `executable_cid` is not in the store.
    #[error("executable_cid: {cid} is not in the store")]
    ExecutableNotFound { cid: ContentId },
    /// Another run is in progress.
    #[error("another cage run is in progress; retry in {API_DOCKLOCK_BUSY_RETRY_AFTER_S} s")]
    Busy,
    /// The launcher or the store failed.
    #[error("the cage run failed: {0}")]
    Failed(String),
}

/// The route's share of [`AppState`].
#[derive(Debug, Clone)]
pub(crate) struct DocklockState {
    pub(crate) control: Arc<dyn DocklockControl>,
    pub(crate) slots: Arc<Semaphore>,
}

impl DocklockState {
    pub(crate) fn new(control: Arc<dyn DocklockControl>) -> Self {
        Self {
            control,
            slots: Arc::new(Semaphore::new(API_DOCKLOCK_RUNS_CONCURRENT_COUNT_MAX)),
        }
    }
}

/// The request body as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    executable: Option<String>,
    executable_cid: Option<String>,
    args: Option<Vec<String>>,
    env: Option<Vec<String>>,
    bundle: Option<String>,
    #[serde(default)]
    inputs: Vec<InputBody>,
    rng_seed: Option<String>,
    timeout_s: Option<u64>,
    service: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputBody {
    name: String,
    cid: String,
}

fn field_error(field: impl Into<String>, reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("{}: {reason}", field.into()))
}

fn map(err: CageRunError) -> ApiError {
    match &err {
        CageRunError::BadRequest { .. } => ApiError::bad_request(err.to_string()),
        CageRunError::InputNotFound { .. } | CageRunError::ExecutableNotFound { .. } => {
            ApiError::not_found(err.to_string())
        }
        CageRunError::Busy => busy(),
        CageRunError::Failed(_) => ApiError::internal(err.to_string()),
    }
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        CageRunError::Busy.to_string(),
    )
    .with_header(
        header::RETRY_AFTER,
        HeaderValue::from(API_DOCKLOCK_BUSY_RETRY_AFTER_S),
    )
}

fn absolute_path(field: &str, text: &str) -> Result<PathBuf, ApiError> {
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(field_error(
            field,
            format!("{} is not an absolute path", quote(text)),
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(field_error(field, format!("{} contains `..`", quote(text))));
    }
    Ok(path.to_path_buf())
}

/// A single path component: what `/in/NAME` can hold.
fn input_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.contains('/') || name.contains('\0') {
        Some("must be a single path component (no `/` or NUL)")
    } else if name == "." || name == ".." {
        Some("may not be `.` or `..`")
    } else if name.len() > 255 {
        Some("is longer than 255 bytes")
    } else {
        None
    }
}

/// What this node allows a request to ask for.
#[derive(Debug, Clone, Copy)]
struct NodePolicy {
    timeout_s_max: u64,
    executables_by_cid: bool,
}

/// Check the body against the protocol and this node's bounds (not yet against the store).
fn check(body: RunBody, policy: NodePolicy) -> Result<CageRunRequest, ApiError> {
    let timeout_s_max = policy.timeout_s_max;
    let workload = match (body.executable, body.executable_cid, body.bundle) {
        (Some(exe), None, None) => CageWorkload::Executable {
            path: absolute_path("executable", &exe)?,
            args: body.args.unwrap_or_default(),
            env: body.env.unwrap_or_default(),
        },
        (None, Some(text), None) => {
            if !policy.executables_by_cid {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "executable_cid: this node does not run executables by CID \
                     (docklock.executables_by_cid is false)",
                ));
            }
            let cid = text.parse::<ContentId>().map_err(|e| {
                field_error(
                    "executable_cid",
                    format!("{} is not a CID: {e}", quote(&text)),
                )
            })?;
            CageWorkload::ExecutableCid {
                cid,
                args: body.args.unwrap_or_default(),
                env: body.env.unwrap_or_default(),
            }
        }
        (None, None, Some(dir)) => {
            if body.args.is_some() {
                return Err(field_error(
                    "args",
                    "a bundle's process comes from its config.json; args are for `executable`",
                ));
            }
            if body.env.is_some() {
                return Err(field_error(
                    "env",
                    "a bundle's process comes from its config.json; env is for `executable`",
                ));
            }
            if !body.inputs.is_empty() {
                return Err(field_error(
                    "inputs",
                    "a bundle takes no declared inputs; they are for `executable`",
                ));
            }
            CageWorkload::Bundle {
                dir: absolute_path("bundle", &dir)?,
            }
        }
        (None, None, None) => {
            return Err(field_error(
                "executable",
                "missing: give `executable` (an absolute path), `executable_cid` (a stored \
                 program) or `bundle` (a directory)",
            ));
        }
        _ => {
            return Err(field_error(
                "executable",
                "give only one of `executable`, `executable_cid` and `bundle`",
            ));
        }
    };
    if body.inputs.len() > API_DOCKLOCK_INPUTS_COUNT_MAX {
        return Err(field_error(
            "inputs",
            format!(
                "{} inputs; at most {API_DOCKLOCK_INPUTS_COUNT_MAX}",
                body.inputs.len()
            ),
        ));
    }
    let mut inputs: Vec<CageInput> = Vec::with_capacity(body.inputs.len());
    for (i, input) in body.inputs.into_iter().enumerate() {
        if let Some(problem) = input_name_problem(&input.name) {
            return Err(field_error(
                format!("inputs.{i}.name"),
                format!("{} {problem}", quote(&input.name)),
            ));
        }
        if inputs.iter().any(|other| other.name == input.name) {
            return Err(field_error(
                format!("inputs.{i}.name"),
                format!("{} is declared twice", quote(&input.name)),
            ));
        }
        let cid = input.cid.parse::<ContentId>().map_err(|e| {
            field_error(
                format!("inputs.{i}.cid"),
                format!("{} is not a CID: {e}", quote(&input.cid)),
            )
        })?;
        inputs.push(CageInput {
            name: input.name,
            cid,
        });
    }
    let rng_seed = match body.rng_seed {
        None => [0; 32],
        Some(text) => hex_seed(&text).ok_or_else(|| {
            field_error("rng_seed", format!("{} is not 64 hex digits", quote(&text)))
        })?,
    };
    let timeout_s = match body.timeout_s {
        None => timeout_s_max,
        Some(0) => return Err(field_error("timeout_s", "must be at least 1")),
        Some(t) if t > timeout_s_max => {
            return Err(field_error(
                "timeout_s",
                format!("{t} exceeds this node's docklock.run_timeout_s_max ({timeout_s_max})"),
            ));
        }
        Some(t) => t,
    };
    let service = body.service.unwrap_or_else(|| "docklock".to_string());
    if service.is_empty() || service.len() > API_DOCKLOCK_SERVICE_NAME_LEN_BYTES_MAX {
        return Err(field_error(
            "service",
            format!(
                "{} is {} bytes; a service name has 1 to {API_DOCKLOCK_SERVICE_NAME_LEN_BYTES_MAX}",
                quote(&service),
                service.len()
            ),
        ));
    }
    Ok(CageRunRequest {
        workload,
        inputs,
        rng_seed,
        timeout_s,
        service,
    })
}

fn hex_seed(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut seed = [0u8; 32];
    for (byte, pair) in seed.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(seed)
}

/// `POST /api/v1/docklock/runs`.
pub(crate) async fn run(
    State(st): State<AppState>,
    body: Body,
) -> Result<Json<CageRunResponse>, ApiError> {
    let docklock = st.docklock.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "this node runs no DockLock cages through its API (its config has no `docklock:` \
             section naming the workloads directory)",
        )
    })?;
    let bytes = axum::body::to_bytes(body, API_DOCKLOCK_REQUEST_SIZE_BYTES_MAX)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the run request is larger than {API_DOCKLOCK_REQUEST_SIZE_BYTES_MAX} bytes or was cut off: {e}"
                ),
            )
        })?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let body: RunBody = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if matches!(path.as_str(), "" | "." | "?") {
            ApiError::bad_request(format!("the run request is not valid JSON: {inner}"))
        } else {
            field_error(path, inner)
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("the run request has trailing data: {e}")))?;
    let policy = NodePolicy {
        timeout_s_max: docklock.control.run_timeout_s_max(),
        executables_by_cid: docklock.control.executables_by_cid(),
    };
    let request = check(body, policy)?;
    // Index lookups (memory only): a missing program or input fails fast, before a slot is
    // taken.
    if let CageWorkload::ExecutableCid { cid, .. } = &request.workload
        && !st.store.contains(cid)
    {
        return Err(map(CageRunError::ExecutableNotFound { cid: *cid }));
    }
    if let Some(missing) = request.inputs.iter().find(|i| !st.store.contains(&i.cid)) {
        return Err(map(CageRunError::InputNotFound {
            name: missing.name.clone(),
            cid: missing.cid,
        }));
    }
    let permit = docklock
        .slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| busy())?;
    let control = docklock.control.clone();
    let response = tokio::task::spawn_blocking(move || {
        let result = control.run(request);
        drop(permit);
        result
    })
    .await
    .map_err(|e| ApiError::task_failed("cage run", e))?
    .map_err(map)?;
    Ok(Json(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> RunBody {
        serde_json::from_str(json).unwrap()
    }

    const POLICY: NodePolicy = NodePolicy {
        timeout_s_max: 60,
        executables_by_cid: true,
    };

    #[test]
    fn requests_are_checked_field_by_field() {
        let ok = check(
            body(r#"{"executable":"/w/tool","args":["-x"],"env":["A=1"],"timeout_s":5}"#),
            POLICY,
        )
        .unwrap();
        assert_eq!(
            ok,
            CageRunRequest {
                workload: CageWorkload::Executable {
                    path: "/w/tool".into(),
                    args: vec!["-x".into()],
                    env: vec!["A=1".into()],
                },
                inputs: Vec::new(),
                rng_seed: [0; 32],
                timeout_s: 5,
                service: "docklock".into(),
            }
        );
        assert_eq!(
            check(body(r#"{"bundle":"/w/b"}"#), POLICY)
                .unwrap()
                .timeout_s,
            60
        );
        let refusal = |json: &str| check(body(json), POLICY).unwrap_err().message;
        assert!(refusal(r#"{"executable":"w/tool"}"#).starts_with("executable: "));
        assert!(refusal(r#"{"executable":"/w/../etc/x"}"#).contains("`..`"));
        assert!(refusal(r#"{"bundle":"/b","args":[]}"#).starts_with("args: "));
        assert!(
            refusal(r#"{"bundle":"/b","inputs":[{"name":"a","cid":"x"}]}"#).starts_with("inputs: ")
        );
        assert!(
            refusal(r#"{"executable":"/t","inputs":[{"name":"a/b","cid":"x"}]}"#)
                .starts_with("inputs.0.name: ")
        );
        assert!(refusal(r#"{"executable":"/t","timeout_s":61}"#).starts_with("timeout_s: 61 "));
        assert!(refusal(r#"{"executable":"/t","service":""}"#).starts_with("service: "));
        assert_eq!(
            hex_seed(&"0f".repeat(32)),
            Some([0x0f; 32]),
            "64 hex digits are a seed"
        );
        assert_eq!(hex_seed(&"0g".repeat(32)), None);
        assert_eq!(hex_seed("é"), None);
    }

    #[test]
    fn a_program_by_cid_is_checked_and_needs_the_node_to_allow_it() {
        let cid = ContentId::from_key(
            metanode_core::cid::CODEC_RAW,
            metanode_core::cid::BlockKey::blake3([7; 32]),
        );
        let json = format!(r#"{{"executable_cid":"{cid}","args":["-x"],"env":["A=1"]}}"#);
        assert_eq!(
            check(body(&json), POLICY).unwrap().workload,
            CageWorkload::ExecutableCid {
                cid,
                args: vec!["-x".into()],
                env: vec!["A=1".into()],
            }
        );
        let forbidden = check(
            body(&json),
            NodePolicy {
                executables_by_cid: false,
                ..POLICY
            },
        )
        .unwrap_err();
        assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
        assert!(forbidden.message.starts_with("executable_cid: "));
        let refusal = |json: &str| check(body(json), POLICY).unwrap_err().message;
        assert!(refusal(r#"{"executable_cid":"nope"}"#).starts_with("executable_cid: \"nope\""));
        assert!(
            refusal(&format!(
                r#"{{"executable":"/t","executable_cid":"{cid}"}}"#
            ))
            .contains("only one of")
        );
        assert!(
            refusal(&format!(r#"{{"bundle":"/b","executable_cid":"{cid}"}}"#))
                .contains("only one of")
        );
    }
}
