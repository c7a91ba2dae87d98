//! `GET /v1/budgets`: every counter with its limit under the current policy, what is spent
//! and what is held in leases by filter instances.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::auth::Admin;
use crate::clock::rfc3339;
use crate::document::{limit_for, parse_counter};
use crate::error::AppError;
use crate::AppState;

pub async fn list(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let now = state.clock.now_ms();
    let policy = state.current_policy().await?;
    let counters = state.store.counters(now).await?;
    let out: Vec<Value> = counters
        .iter()
        .map(|c| {
            let name = parse_counter(&c.counter);
            let limit = policy.as_ref().and_then(|p| limit_for(&p.value, &c.counter));
            let leased: u64 = c.leases.iter().map(|l| l.granted).fold(0, u64::saturating_add);
            json!({
                "counter": c.counter,
                "scope": name.as_ref().map(|n| n.scope),
                "projectId": name.as_ref().and_then(|n| n.project_id),
                "period": name.as_ref().map(|n| n.period),
                "limit": limit.map(|l| l.to_string()),
                "spent": c.spent.to_string(),
                "leased": leased.to_string(),
                // Room neither spent nor held by an instance; null when the budget is unset.
                "unallocated": limit.map(|l| l.saturating_sub(c.spent).saturating_sub(leased).to_string()),
                "updatedAt": rfc3339(c.updated_at_ms),
                "leases": c.leases.iter().map(|l| json!({
                    "instanceId": l.instance_id,
                    "granted": l.granted.to_string(),
                    "expiresAt": rfc3339(l.expires_at_ms),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "policyVersion": policy.as_ref().map_or(0, |p| p.meta.version),
        "counters": out,
    })))
}
