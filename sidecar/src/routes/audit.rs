//! `GET /v1/audit` (filters, cursor pagination in seq order, oldest or newest first), `GET /v1/audit/head` (for
//! external anchoring) and `GET /v1/audit/verify` (recomputes the chain). Admin tokens only.
//! Entries are shown exactly as hashed (integers for money, `atMs` in ms) plus `at` (RFC 3339)
//! for people, so a verifier can recompute every hash from this output (docs/audit.md).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::audit::{self, AuditQuery};
use crate::auth::Admin;
use crate::clock::rfc3339;
use crate::error::AppError;
use crate::AppState;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    kind: Option<String>,
    project_id: Option<String>,
    client_id: Option<String>,
    decision: Option<String>,
    code: Option<String>,
    /// From (inclusive): RFC 3339 or ms since the epoch. `since` is the same.
    from: Option<String>,
    since: Option<String>,
    /// Until (exclusive): RFC 3339 or ms. `until` is the same.
    to: Option<String>,
    until: Option<String>,
    /// `nextCursor` of the previous page (of the same `order`).
    cursor: Option<String>,
    /// `asc` (oldest first, the default) or `desc` (newest first).
    order: Option<String>,
    limit: Option<String>,
}

fn time(name: &str, v: &str, errs: &mut Vec<String>) -> Option<i64> {
    if let Ok(ms) = v.parse::<i64>() {
        return Some(ms);
    }
    match chrono::DateTime::parse_from_rfc3339(v) {
        Ok(t) => Some(t.timestamp_millis()),
        Err(_) => {
            errs.push(format!(
                "{name}: {v:?} is neither RFC 3339 (2026-12-01T00:00:00Z) nor ms since the epoch"
            ));
            None
        }
    }
}

/// The store query of a `GET /v1/audit`, or every problem with it.
pub fn parse(q: ListQuery) -> Result<AuditQuery, AppError> {
    let mut errs = Vec::new();
    let from = match (&q.from, &q.since) {
        (Some(_), Some(_)) => {
            errs.push("from/since: give one of them".into());
            None
        }
        (Some(v), None) => time("from", v, &mut errs),
        (None, Some(v)) => time("since", v, &mut errs),
        (None, None) => None,
    };
    let to = match (&q.to, &q.until) {
        (Some(_), Some(_)) => {
            errs.push("to/until: give one of them".into());
            None
        }
        (Some(v), None) => time("to", v, &mut errs),
        (None, Some(v)) => time("until", v, &mut errs),
        (None, None) => None,
    };
    let descending = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(o) => {
            errs.push(format!("order: {o:?} is not asc or desc"));
            false
        }
    };
    let cursor = match q.cursor.as_deref() {
        None => 0,
        Some(c) => c
            .parse::<i64>()
            .ok()
            .filter(|s| *s >= 0)
            .unwrap_or_else(|| {
                errs.push(format!("cursor: {c:?} is not a cursor from nextCursor"));
                0
            }),
    };
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .unwrap_or_else(|| {
                errs.push(format!(
                    "limit: {l:?} is not a number from 1 to {MAX_LIMIT}"
                ));
                0
            }),
    };
    if !errs.is_empty() {
        return Err(AppError::BadRequest {
            code: "BAD_QUERY",
            message: "unsupported audit query".into(),
            details: errs,
        });
    }
    // Oldest first, a page starts after the cursor; newest first, before it.
    let (after_seq, before_seq) = match (descending, q.cursor.is_some()) {
        (true, true) => (0, Some(cursor)),
        (true, false) => (0, None),
        (false, _) => (cursor, None),
    };
    Ok(AuditQuery {
        after_seq,
        before_seq,
        descending,
        kind: q.kind,
        project_id: q.project_id,
        client_id: q.client_id,
        decision: q.decision,
        code: q.code,
        from_ms: from,
        to_ms: to,
        limit,
    })
}

pub async fn list(
    _: Admin,
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(q) = query.map_err(|e| AppError::bad_request("BAD_QUERY", e.body_text()))?;
    let q = parse(q)?;
    let limit = q.limit;
    let rows = state.store.audit_list(q).await?;
    // A full page may have more after it; a short one is the end (for now).
    let next = rows
        .last()
        .filter(|_| rows.len() == usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|r| r.seq.to_string());
    let entries: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = r.to_json();
            if let Some(o) = v.as_object_mut() {
                o.insert("at".into(), Value::String(rfc3339(r.event.at_ms)));
            }
            v
        })
        .collect();
    Ok(Json(json!({ "entries": entries, "nextCursor": next })))
}

pub async fn head(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    Ok(Json(state.store.audit_head().await?.to_json()))
}

pub async fn verify(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    Ok(Json(audit::verify(state.store.as_ref()).await?))
}

#[cfg(test)]
mod tests;
