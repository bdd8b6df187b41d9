//! Errors of the service: every one becomes an HTTP status with a JSON body
//! `{"error": code, "message": what happened and what to do}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use henn_nn::{ExecError, NnError};

/// An error answered to a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (empty body, corrupt or truncated object).
    #[error("{0}")]
    BadRequest(String),
    /// A secret key was uploaded.
    #[error("{0}")]
    SecretKey(String),
    /// The object is well formed but does not fit (another model or parameters, a missing
    /// rotation key, a ciphertext at the wrong level).
    #[error("{0}")]
    Unprocessable(String),
    /// No such model.
    #[error("{0}")]
    UnknownModel(String),
    /// No such route.
    #[error("{0}")]
    NoRoute(String),
    /// No such session (never created, expired or deleted).
    #[error("{0}")]
    UnknownSession(String),
    /// The session was evicted to stay within the key-store budget.
    #[error("{0}")]
    Evicted(String),
    /// The body exceeds the route's limit.
    #[error("{0}")]
    TooLarge(String),
    /// The work queue is full: retry later.
    #[error("{0}")]
    Busy(String),
    /// Something broke on the server (a bug or the key store failing).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::SecretKey(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnknownModel(_) | ApiError::UnknownSession(_) | ApiError::NoRoute(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Evicted(_) => StatusCode::GONE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::SecretKey(_) => "secret_key_uploaded",
            ApiError::Unprocessable(_) => "does_not_fit",
            ApiError::UnknownModel(_) => "unknown_model",
            ApiError::UnknownSession(_) => "unknown_session",
            ApiError::NoRoute(_) => "no_route",
            ApiError::Evicted(_) => "session_evicted",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Busy(_) => "busy",
            ApiError::Internal(_) => "internal",
        }
    }
}

/// Seconds a client should wait after a 503.
pub const RETRY_AFTER_S: u64 = 1;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({"error": self.code(), "message": self.to_string()});
        let mut r = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
        }
        r
    }
}

impl From<NnError> for ApiError {
    fn from(e: NnError) -> Self {
        let msg = e.to_string();
        match &e {
            NnError::SecretKeyUploaded => ApiError::SecretKey(msg),
            NnError::Wire(_) | NnError::Ckks { .. } => ApiError::BadRequest(msg),
            NnError::PlanMismatch { .. } => ApiError::Unprocessable(msg),
            NnError::Exec {
                source:
                    ExecError::MissingRotation { .. }
                    | ExecError::Input(_)
                    | ExecError::CiphertextCount { .. }
                    | ExecError::LevelMismatch { .. }
                    | ExecError::ScaleMismatch { .. }
                    | ExecError::SlotOverflow { .. },
                ..
            } => ApiError::Unprocessable(msg),
            _ => ApiError::Internal(msg),
        }
    }
}
