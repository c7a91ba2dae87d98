//! `GET /v1/alerts`: the alert history (newest first) with each channel's delivery state.
//! Alerts are raised by the sync and approval paths and delivered by crate::alerts.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::alerts::{percent, PPM};
use crate::auth::Admin;
use crate::clock::rfc3339;
use crate::error::AppError;
use crate::store::AlertRecord;
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1..=1000, default 100.
    pub limit: Option<u32>,
}

pub(crate) fn view(a: &AlertRecord) -> Value {
    json!({
        "key": a.key,
        "kind": a.kind,
        "counter": a.counter,
        "projectId": a.project_id,
        "clientId": a.client_id,
        "threshold": a.threshold_ppm.map(|p| percent(p, PPM)),
        "thresholdPpm": a.threshold_ppm,
        "spent": a.spent.map(|v| v.to_string()),
        "limit": a.limit.map(|v| v.to_string()),
        "amount": a.amount.map(|v| v.to_string()),
        "subject": a.subject,
        "createdAt": rfc3339(a.created_at_ms),
        "state": a.state,
        "deliveries": a.deliveries.iter().map(|d| json!({
            "channel": d.channel,
            "status": d.status,
            "attempts": d.attempts,
            "lastError": d.last_error,
            "sentBy": d.sent_by,
            "updatedAt": d.updated_at_ms.map(rfc3339),
        })).collect::<Vec<_>>(),
    })
}

pub async fn list(
    _: Admin,
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(q) = q.map_err(|e| AppError::bad_request("BAD_QUERY", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::bad_request(
            "BAD_QUERY",
            "limit: 1 to 1000".to_string(),
        ));
    }
    let alerts = state.store.alerts(limit).await?;
    Ok(Json(json!({
        "alerts": alerts.iter().map(view).collect::<Vec<_>>(),
    })))
}

#[cfg(test)]
mod tests;
