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

/// The OpenAPI operations of this file (merged into crate::openapi's document).
pub(crate) fn openapi_paths() -> Value {
    let err = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    json!({
        "/v1/alerts": { "get": {
            "summary": "Alert history, newest first: budgetThreshold and highCostRequest alerts with their numbers and each channel's delivery status",
            "security": [{ "adminToken": [] }],
            "parameters": [ { "name": "limit", "in": "query", "required": false,
                              "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } } ],
            "responses": {
                "200": { "description": "alerts", "content": { "application/json": { "schema": {
                    "type": "object", "properties": { "alerts": { "type": "array",
                        "items": { "$ref": "#/components/schemas/Alert" } } } } } } },
                "400": err("BAD_QUERY"),
                "401": err("missing or unknown bearer token"),
                "403": err("token of another role") } } }
    })
}

pub(crate) fn openapi_schemas() -> Value {
    let micros =
        json!({ "type": ["string", "null"], "pattern": "^[0-9]+$", "description": "micro-USD" });
    json!({
        "Alert": { "type": "object", "properties": {
            "key": { "type": "string", "description": "unique across the fleet: kind/counter/thresholdPpm/limit, or kind/usage|approval/…" },
            "kind": { "enum": ["budgetThreshold", "highCostRequest"] },
            "counter": { "type": ["string", "null"], "description": "the budget counter (its key carries the period)" },
            "projectId": { "type": ["string", "null"] }, "clientId": { "type": ["string", "null"] },
            "threshold": { "type": ["string", "null"], "description": "80.0% or 100.0%" },
            "thresholdPpm": { "type": ["integer", "null"] },
            "spent": micros, "limit": micros,
            "amount": { "allOf": [micros], "description": "the single request's cost or the approval's estimate" },
            "subject": { "type": "string" },
            "createdAt": { "type": "string", "format": "date-time" },
            "state": { "enum": ["pending", "done"] },
            "deliveries": { "type": "array", "items": { "type": "object", "properties": {
                "channel": { "enum": ["email", "slack", "webhook"] },
                "status": { "enum": ["pending", "sent", "retrying", "failed"] },
                "attempts": { "type": "integer" }, "lastError": { "type": ["string", "null"] },
                "sentBy": { "type": ["string", "null"], "description": "the sidecar that delivered it" },
                "updatedAt": { "type": ["string", "null"], "format": "date-time" } } } } } }
    })
}
