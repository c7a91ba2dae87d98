//! One error type for every handler: a status, a stable code and a message the caller can act
//! on. Store and internal failures are answered with a generic 500/503, never with their text
//! (it can name tables, hosts or file paths); the text goes to the log only, through the
//! request's log line (crate::routes::ops::track).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("missing or unknown bearer token")]
    Unauthorized,
    #[error("this token may not call this route ({0})")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        details: Vec<String>,
    },
    #[error("the policy document does not validate")]
    InvalidPolicy(Vec<String>),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("store unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            AppError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            AppError::InvalidPolicy(_) => (StatusCode::BAD_REQUEST, "INVALID_POLICY"),
            AppError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            AppError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "STORE_UNAVAILABLE"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::VersionConflict { expected, latest } => AppError::Conflict {
                code: "VERSION_CONFLICT",
                message: format!(
                    "the policy changed meanwhile: you edited version {expected}, latest is {latest}; \
                     GET it again and retry"
                ),
            },
            StoreError::SeqReused { instance_id, seq } => AppError::Conflict {
                code: "SEQ_REUSED",
                message: format!(
                    "batch ({instance_id}, {seq}) was already committed with different usage; \
                     a retry must resend the same batch, new usage needs a new seq"
                ),
            },
            StoreError::OutOfRange(v) => AppError::bad_request(
                "AMOUNT_OUT_OF_RANGE",
                format!("amount {v} is above the largest storable amount ({})", i64::MAX),
            ),
            StoreError::Backend(msg) => AppError::Unavailable(msg),
        }
    }
}

/// What the request's log line says about an error answer. A response extension, so it never
/// reaches the wire.
#[derive(Clone, Debug)]
pub struct Logged {
    pub code: &'static str,
    /// The cause of a 500/503, which the answer does not carry.
    pub internal: Option<String>,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let mut internal = None;
        let (message, details) = match &self {
            AppError::Unavailable(cause) | AppError::Internal(cause) => {
                internal = Some(cause.clone());
                (self.to_string(), Vec::new())
            }
            AppError::BadRequest { details, .. } => (self.to_string(), details.clone()),
            AppError::InvalidPolicy(details) => (self.to_string(), details.clone()),
            _ => (self.to_string(), Vec::new()),
        };
        let body = json!({ "error": { "code": code, "message": message, "details": details } });
        let mut resp = (status, axum::Json(body)).into_response();
        resp.extensions_mut().insert(Logged { code, internal });
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
pub(crate) mod tests;
