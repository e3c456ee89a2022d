//! One error response type for every handler: a status, a message naming the
//! failing input, and a JSON body `{"error": "..."}`.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use metanode_core::limits::API_ERROR_INPUT_ECHO_CHARS_MAX;
use metanode_store::{DeleteError, GcError, GetError, PinError, PutError, VerifyError};

use crate::wire::ErrorBody;

/// An HTTP error answer. Built by the mapping functions below so the same
/// store failure always gets the same status everywhere.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A blocking store task panicked or was cancelled: the store's own
    /// invariant checks fire as panics, so this is a server fault.
    pub fn task_failed(what: &str, err: tokio::task::JoinError) -> Self {
        tracing::error!(operation = what, error = %err, "store task failed");
        Self::internal(format!("{what} failed inside the server: {err}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), error = %self.message, "request failed");
        } else {
            tracing::debug!(status = self.status.as_u16(), error = %self.message, "request rejected");
        }
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// Quote client input for an error message, cut to a bounded length.
pub fn quote(input: &str) -> String {
    let mut cut: String = input.chars().take(API_ERROR_INPUT_ECHO_CHARS_MAX).collect();
    if cut.len() < input.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

pub fn from_get(err: GetError) -> ApiError {
    let status = match &err {
        GetError::NotFound(_) => StatusCode::NOT_FOUND,
        // 500, not 502: the bad bytes are ours (local disk), not an
        // upstream's. The store never hands them out, so neither do we.
        GetError::Corrupt { .. } => {
            tracing::error!(error = %err, "refusing to serve a damaged block");
            StatusCode::INTERNAL_SERVER_ERROR
        }
        // Ranges are checked against the size before reading; this is a
        // race with a concurrent delete-and-reupload, still the client's
        // range that does not fit.
        GetError::BadRange { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        GetError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, err.to_string())
}

pub fn from_put(err: PutError) -> ApiError {
    let status = match &err {
        PutError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        PutError::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
        PutError::ReadOnly(_)
        | PutError::Poisoned(_)
        | PutError::OpenedReadOnly
        | PutError::Closed => StatusCode::SERVICE_UNAVAILABLE,
        PutError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        // Only client-supplied blocks (a CAR) reach the store unverified.
        PutError::BlockHashMismatch { .. } => StatusCode::BAD_REQUEST,
        PutError::BlockTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
    };
    ApiError::new(status, err.to_string())
}

pub fn from_delete(err: DeleteError) -> ApiError {
    let status = match &err {
        DeleteError::Pinned(_) => StatusCode::CONFLICT,
        DeleteError::OpenedReadOnly => StatusCode::SERVICE_UNAVAILABLE,
        DeleteError::Write { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, err.to_string())
}

pub fn from_pin(err: PinError) -> ApiError {
    let status = match &err {
        PinError::NotFound(_) => StatusCode::NOT_FOUND,
        PinError::OpenedReadOnly => StatusCode::SERVICE_UNAVAILABLE,
        PinError::Write { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, err.to_string())
}

pub fn from_gc(err: GcError) -> ApiError {
    let status = match &err {
        GcError::AlreadyRunning => StatusCode::CONFLICT,
        GcError::OpenedReadOnly => StatusCode::SERVICE_UNAVAILABLE,
        GcError::Write(_) | GcError::Read { .. } | GcError::UnreadableDagNode { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    ApiError::new(status, err.to_string())
}

pub fn from_verify(err: VerifyError) -> ApiError {
    ApiError::internal(err.to_string())
}
