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

/// JSON body with our error shape (axum's own rejection is plain text). Every body of this
/// API is a JSON object: an array is refused before serde sees it (serde would otherwise fill
/// a struct from `[…]` by position, and `[null, null]` would pass as a report request).
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(AppError::bad_request(
            "BAD_JSON",
            "request body: expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| AppError::bad_request("BAD_JSON", format!("request body: {e}")))
}
