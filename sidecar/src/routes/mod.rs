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
use serde_json::Value;

use crate::error::AppError;

/// Where `v` holds a U+0000 (in a string or an object key): `""` for `v` itself, else a path
/// such as `.usage[3].projectId`. PostgreSQL's TEXT cannot store NUL (SQLite can), so such a
/// value is refused at the edge the same on both backends instead of failing a transaction.
pub(crate) fn nul_path(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => s.contains('\0').then(String::new),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_path(x).map(|p| format!("[{i}]{p}"))),
        Value::Object(o) => o.iter().find_map(|(k, x)| {
            if k.contains('\0') {
                Some(format!(".{}", k.escape_debug()))
            } else {
                nul_path(x).map(|p| format!(".{k}{p}"))
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// Refuses a path or query that percent-encodes U+0000 (`%00`): an id or filter with a NUL
/// names nothing, and PostgreSQL cannot take it as a parameter (it would fail as a 503).
pub(crate) async fn refuse_nul_in_uri(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let uri = req.uri();
    let holds_nul = |s: &str| s.contains("%00");
    if holds_nul(uri.path()) || uri.query().is_some_and(holds_nul) {
        return AppError::bad_request(
            "BAD_REQUEST",
            "the path or query holds U+0000 (%00), which names nothing here",
        )
        .into_response();
    }
    next.run(req).await
}

/// A JSON text can only carry U+0000 as the escape `\u0000`: look further only then.
fn may_hold_nul(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|w| w == b"\\u0000")
}

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
    let parsed: T = serde_json::from_slice(bytes)
        .map_err(|e| AppError::bad_request("BAD_JSON", format!("request body: {e}")))?;
    if may_hold_nul(bytes) {
        if let Some(path) = serde_json::from_slice::<Value>(bytes)
            .ok()
            .as_ref()
            .and_then(nul_path)
        {
            return Err(AppError::bad_request(
                "BAD_JSON",
                format!("request body{path}: a string holds U+0000 (NUL), which is never stored"),
            ));
        }
    }
    Ok(parsed)
}

/// [`parse_json`] without the NUL check, for `/v1/sync`: there a NUL is refused per element
/// (a usage record is quarantined, a decision event rejected), so one bad record never
/// refuses the batch that carries good ones.
pub(crate) fn parse_json_per_element<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(AppError::bad_request(
            "BAD_JSON",
            "request body: expected a JSON object",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| AppError::bad_request("BAD_JSON", format!("request body: {e}")))
}
