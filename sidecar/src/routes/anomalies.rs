//! `GET /v1/anomalies?project=&since=&until=&limit=`: what anomaly detection stored
//! (docs/anomalies.md), newest window first. `since` (RFC 3339) keeps the windows ending after
//! it, `until` those starting before it (both: the windows overlapping `[since, until)`, what
//! `/v1/analytics` counts for that range); `limit` is 100 by default, at most 1000.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use chrono::DateTime;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Admin;
use crate::clock::rfc3339;
use crate::error::AppError;
use crate::store::{Anomaly, AnomalyQuery};
use crate::AppState;

pub const MAX_LIMIT: u32 = 1000;
const DEFAULT_LIMIT: u32 = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    limit: Option<String>,
}

fn parse(q: ListQuery) -> Result<AnomalyQuery, AppError> {
    let mut errs = Vec::new();
    let mut time = |field: &str, v: Option<&str>| match v {
        None => None,
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Some(t.timestamp_millis()),
            Err(e) => {
                errs.push(format!("{field}: {s:?} is not an RFC 3339 time ({e})"));
                None
            }
        },
    };
    let since_ms = time("since", q.since.as_deref());
    let until_ms = time("until", q.until.as_deref());
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                errs.push(format!("limit: {s:?} is not an integer in 1..={MAX_LIMIT}"));
                DEFAULT_LIMIT
            }
        },
    };
    if !errs.is_empty() {
        return Err(AppError::BadRequest {
            code: "BAD_QUERY",
            message: "unsupported anomalies query".into(),
            details: errs,
        });
    }
    Ok(AnomalyQuery {
        project_id: q.project.filter(|p| !p.is_empty()),
        since_ms,
        until_ms,
        limit,
    })
}

pub fn to_json(a: &Anomaly) -> Value {
    json!({
        "kind": a.kind.as_str(),
        "projectId": a.project_id,
        "clientId": a.client_id,
        "subject": a.subject,
        "score": a.score,
        "unit": a.unit.as_str(),
        "baseline": a.baseline.to_string(),
        "observed": a.observed.to_string(),
        "windowFrom": rfc3339(a.window_from_ms),
        "windowTo": rfc3339(a.window_to_ms),
        "explanation": a.explanation,
        "detectedAt": rfc3339(a.detected_at_ms),
    })
}

pub async fn list(
    _: Admin,
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(q) = query.map_err(|e| AppError::bad_request("BAD_QUERY", e.body_text()))?;
    let found = state.store.anomalies(parse(q)?).await?;
    Ok(Json(json!({
        "anomalies": found.iter().map(to_json).collect::<Vec<_>>(),
    })))
}

#[cfg(test)]
mod tests;
