//! `GET/PUT /v1/policy` and its version history.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::audit::{policy_change_summary, AuditEvent};
use crate::auth::Admin;
use crate::clock::rfc3339;
use crate::document::validate;
use crate::error::AppError;
use crate::store::{NewPolicy, PolicyMeta, PolicyVersion};
use crate::AppState;

pub(crate) const VERSION_HEADER: HeaderName = HeaderName::from_static("x-pag0-policy-version");

pub(crate) fn meta_json(m: &PolicyMeta) -> Value {
    json!({ "version": m.version, "author": m.author, "createdAt": rfc3339(m.created_at_ms) })
}

/// Header carrying [`warnings`] on `GET /v1/policy` (whose body is the document itself).
pub(crate) const WARNING_HEADER: HeaderName = HeaderName::from_static("x-pag0-warning");

/// What an accepted policy should still be told: an audit retention under EU AI Act's six
/// months with `complianceMode: EU_AI_ACT` (docs/audit.md "Retention").
pub(crate) fn warnings(doc: &Value, flag_days: Option<u64>) -> Vec<String> {
    let days = crate::audit::retention_days(Some(doc), flag_days);
    crate::audit::retention_warning(Some(doc), days)
        .into_iter()
        .collect()
}

fn document_response(p: &PolicyVersion, flag_days: Option<u64>) -> Result<Response, AppError> {
    let doc: Value = serde_json::from_str(&p.document).map_err(|e| {
        AppError::Internal(format!("stored policy {} is not JSON: {e}", p.meta.version))
    })?;
    let warned = warnings(&doc, flag_days);
    let mut resp = Json(doc).into_response();
    let h = resp.headers_mut();
    for w in &warned {
        if let Ok(v) = HeaderValue::from_str(w) {
            h.append(WARNING_HEADER, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", p.meta.version)) {
        h.insert(header::ETAG, v);
    }
    h.insert(VERSION_HEADER, HeaderValue::from(p.meta.version));
    if let Ok(v) = HeaderValue::from_str(&p.meta.author) {
        h.insert(HeaderName::from_static("x-pag0-policy-author"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&rfc3339(p.meta.created_at_ms)) {
        h.insert(HeaderName::from_static("x-pag0-policy-created-at"), v);
    }
    Ok(resp)
}

fn no_policy() -> AppError {
    AppError::NotFound("no policy yet: PUT /v1/policy first".into())
}

pub async fn get_policy(_: Admin, State(state): State<AppState>) -> Result<Response, AppError> {
    let p = state.store.latest_policy().await?.ok_or_else(no_policy)?;
    document_response(&p, state.config.audit_retention_days)
}

/// `If-Match: "3"` (or `3`): write only if version 3 is still the latest.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, AppError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    // Exactly `N`, `"N"` or `W/"N"` (what the document's pattern says), 1 to 18 digits.
    v.to_str()
        .ok()
        .map(str::trim)
        .map(|s| s.strip_prefix("W/").unwrap_or(s))
        .map(|s| {
            s.strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .unwrap_or(s)
        })
        .filter(|s| (1..=18).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            AppError::bad_request(
                "BAD_IF_MATCH",
                "If-Match must be a policy version, e.g. \"3\"",
            )
        })
}

pub async fn put_policy(
    Admin(who): Admin,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, AppError> {
    let expected_version = if_match(&headers)?;
    let doc = validate(&body)?;
    // Re-applying the same document (a CI loop running `policy apply`) is not a change.
    let latest = state.store.latest_policy().await?;
    if let Some(latest) = &latest {
        if latest.document == doc.text && expected_version.is_none_or(|v| v == latest.meta.version)
        {
            let mut body = meta_json(&latest.meta);
            let same: Value = serde_json::from_str(&doc.text).unwrap_or(Value::Null);
            let warned = warnings(&same, state.config.audit_retention_days);
            if let Some(obj) = body.as_object_mut() {
                obj.insert("unchanged".into(), Value::Bool(true));
                if !warned.is_empty() {
                    obj.insert("warnings".into(), json!(warned));
                }
            }
            return Ok((
                StatusCode::OK,
                [(VERSION_HEADER, HeaderValue::from(latest.meta.version))],
                Json(body),
            ));
        }
    }
    // The audit entry says what changed against the latest version (a write racing another
    // one fails on If-Match, or is summarised against the version it read).
    let before = latest.and_then(|p| serde_json::from_str::<Value>(&p.document).ok());
    let after: Value = serde_json::from_str(&doc.text).unwrap_or(Value::Null);
    let at_ms = state.clock.now_ms();
    let event = AuditEvent::new("policy.updated", at_ms)
        .actor(who.name.clone())
        .details(json!({ "changed": policy_change_summary(before.as_ref(), &after) }));
    let meta = state
        .store
        .put_policy(NewPolicy {
            document: doc.text,
            author: who.name,
            at_ms,
            expected_version,
            audit: vec![event],
        })
        .await?;
    state.metrics.policy_updates.inc();
    state.metrics.policy_version.set(meta.version);
    let mut body = meta_json(&meta);
    let warned = warnings(&after, state.config.audit_retention_days);
    if !warned.is_empty() {
        if let Some(obj) = body.as_object_mut() {
            obj.insert("warnings".into(), json!(warned));
        }
    }
    Ok((
        StatusCode::OK,
        [(VERSION_HEADER, HeaderValue::from(meta.version))],
        Json(body),
    ))
}

pub async fn list_versions(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Value>, AppError> {
    let versions = state.store.policy_history(1000).await?;
    Ok(Json(
        json!({ "versions": versions.iter().map(meta_json).collect::<Vec<_>>() }),
    ))
}

pub async fn get_version(
    _: Admin,
    State(state): State<AppState>,
    Path(version): Path<String>,
) -> Result<Response, AppError> {
    let v: i64 = version.parse().map_err(|_| {
        AppError::bad_request(
            "BAD_VERSION",
            format!("{version:?} is not a version number"),
        )
    })?;
    let p = state
        .store
        .policy_version(v)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no policy version {v}")))?;
    document_response(&p, state.config.audit_retention_days)
}

#[cfg(test)]
mod tests;
