//! HTTP handlers, one file per resource.

pub mod alerts;
pub mod analytics;
pub mod anomalies;
pub mod approvals;
pub mod audit;
pub mod budgets;
pub mod items;
pub mod ops;
pub mod policy;
pub mod reports;
pub mod sync;

use serde::de::DeserializeOwned;

use crate::error::AppError;

/// JSON body with our error shape (axum's own rejection is plain text).
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes)
        .map_err(|e| AppError::bad_request("BAD_JSON", format!("request body: {e}")))
}
