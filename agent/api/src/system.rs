//! `/api/v1/system*` and `/api/v1/config*`: what the appliance exposes about
//! itself (version, A/B slots, kernel, live sysctls), updates, power, and
//! config try/commit. The work is behind [`SystemControl`] so the API does
//! not depend on the appliance crates and tests drive it with a fake; a node
//! not started by the appliance's PID 1 has no control and answers 409.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use metanode_core::limits::{
    API_CONFIG_SIZE_BYTES_MAX, API_UPDATE_IMAGE_SIZE_BYTES_MAX, CONFIG_TRY_TIMEOUT_S_DEFAULT,
    CONFIG_TRY_TIMEOUT_S_MAX, CONFIG_TRY_TIMEOUT_S_MIN,
};

use crate::error::ApiError;
use crate::gateway::parse_query;
use crate::{AppState, wire};

/// Why a system operation failed, already phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// The request was wrong (bad image, bad config, nothing to commit).
    #[error("{0}")]
    Invalid(String),
    /// The request is right but the node's state forbids it now (an update
    /// is still in trial, a config trial is already pending).
    #[error("{0}")]
    Conflict(String),
    /// Something on the node failed (disk, ESP, signalling PID 1).
    #[error("{0}")]
    Failed(String),
}

/// What the appliance can do; implemented by the `metanode` binary over the
/// slots and init crates.
pub trait SystemControl: Send + Sync + std::fmt::Debug {
    fn info(&self) -> Result<wire::SystemInfo, SystemError>;
    /// Verify and install a signed UKI into the inactive slot as a trial.
    /// `image` is a file the API wrote; the callee may move or delete it.
    fn apply_update(&self, image: &std::path::Path) -> Result<wire::UpdateReport, SystemError>;
    /// Where the API may write an uploaded update before `apply_update`.
    fn upload_dir(&self) -> std::path::PathBuf;
    fn power(&self, action: wire::PowerAction) -> Result<(), SystemError>;
    fn config_try(&self, yaml: &[u8], timeout_s: u64)
    -> Result<wire::ConfigTryReport, SystemError>;
    fn config_commit(&self) -> Result<wire::ConfigTryReport, SystemError>;
    fn config_status(&self) -> Result<wire::ConfigTryReport, SystemError>;
}

fn control(st: &AppState) -> Result<Arc<dyn SystemControl>, ApiError> {
    st.system.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "this node is not running as the appliance (it was not started by metanode as PID 1), \
             so it has no slots, power control or config trials",
        )
    })
}

fn map(err: SystemError) -> ApiError {
    let status = match &err {
        SystemError::Invalid(_) => StatusCode::BAD_REQUEST,
        SystemError::Conflict(_) => StatusCode::CONFLICT,
        SystemError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, err.to_string())
}

async fn run<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, SystemError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::task_failed(what, e))?
        .map_err(map)
}

async fn body_bytes(body: Body, limit: u64, what: &str) -> Result<axum::body::Bytes, ApiError> {
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, limit_usize).await.map_err(|e| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what} body is larger than {limit} bytes or was cut off: {e}"),
        )
    })
}

pub(crate) async fn info(State(st): State<AppState>) -> Result<Json<wire::SystemInfo>, ApiError> {
    let ctl = control(&st)?;
    Ok(Json(run("system info", move || ctl.info()).await?))
}

pub(crate) async fn update(
    State(st): State<AppState>,
    body: Body,
) -> Result<Json<wire::UpdateReport>, ApiError> {
    let ctl = control(&st)?;
    let bytes = body_bytes(body, API_UPDATE_IMAGE_SIZE_BYTES_MAX, "update image").await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "update image body is empty: send the signed metanode.efi",
        ));
    }
    let report = run("update", move || {
        let dir = ctl.upload_dir();
        let path = dir.join(format!("update-{}.efi", std::process::id()));
        std::fs::write(&path, &bytes).map_err(|e| {
            SystemError::Failed(format!(
                "writing the update to {} failed: {e}",
                path.display()
            ))
        })?;
        let result = ctl.apply_update(&path);
        let _ = std::fs::remove_file(&path);
        result
    })
    .await?;
    Ok(Json(report))
}

pub(crate) async fn power(
    State(st): State<AppState>,
    axum::extract::Path(action): axum::extract::Path<String>,
) -> Result<(StatusCode, Json<wire::PowerResponse>), ApiError> {
    let ctl = control(&st)?;
    let action = match action.as_str() {
        "reboot" => wire::PowerAction::Reboot,
        "poweroff" => wire::PowerAction::Poweroff,
        other => {
            return Err(ApiError::not_found(format!(
                "unknown power action {}: use reboot or poweroff",
                crate::error::quote(other)
            )));
        }
    };
    run("power", move || ctl.power(action)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(wire::PowerResponse {
            action,
            status: "requested".to_owned(),
        }),
    ))
}

pub(crate) async fn config_try(
    State(st): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Body,
) -> Result<(StatusCode, Json<wire::ConfigTryReport>), ApiError> {
    let ctl = control(&st)?;
    let mut timeout_s = CONFIG_TRY_TIMEOUT_S_DEFAULT;
    let mut mode_try = false;
    for (key, value) in parse_query(query)? {
        match key.as_str() {
            "mode" if value == "try" => mode_try = true,
            "mode" => {
                return Err(ApiError::bad_request(format!(
                    "mode {} is not supported: use mode=try (then POST /api/v1/config/commit)",
                    crate::error::quote(&value)
                )));
            }
            "timeout_s" => {
                timeout_s = value
                    .parse::<u64>()
                    .ok()
                    .filter(|t| (CONFIG_TRY_TIMEOUT_S_MIN..=CONFIG_TRY_TIMEOUT_S_MAX).contains(t))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "timeout_s {} is not a number of seconds in \
                             {CONFIG_TRY_TIMEOUT_S_MIN}..={CONFIG_TRY_TIMEOUT_S_MAX}",
                            crate::error::quote(&value)
                        ))
                    })?;
            }
            other => return Err(crate::blobs::unknown_param(other, "mode, timeout_s")),
        }
    }
    if !mode_try {
        return Err(ApiError::bad_request(
            "say mode=try: a new config always starts as a trial that reverts unless committed",
        ));
    }
    let yaml = body_bytes(body, API_CONFIG_SIZE_BYTES_MAX, "config").await?;
    let report = run("config try", move || ctl.config_try(&yaml, timeout_s)).await?;
    Ok((StatusCode::ACCEPTED, Json(report)))
}

pub(crate) async fn config_commit(
    State(st): State<AppState>,
) -> Result<Json<wire::ConfigTryReport>, ApiError> {
    let ctl = control(&st)?;
    Ok(Json(
        run("config commit", move || ctl.config_commit()).await?,
    ))
}

pub(crate) async fn config_status(
    State(st): State<AppState>,
) -> Result<Json<wire::ConfigTryReport>, ApiError> {
    let ctl = control(&st)?;
    Ok(Json(
        run("config status", move || ctl.config_status()).await?,
    ))
}
