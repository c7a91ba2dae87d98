//! The sidecar's policy in shared data: written by the sync owner, polled by every worker.

use pag0_policy::period::{day_key, month_key};
use pag0_policy::{BudgetKey, CompiledPolicy, Micros, Scope};
use serde_json::Value;

use crate::counters::{HostError, SharedStore};

use super::{set_blind, u64_of, POLICY_KEY, POLICY_VERSION_KEY};

/// The version of the policy in shared data (0: none yet).
pub fn policy_version(store: &dyn SharedStore) -> Result<u64, HostError> {
    let (v, _) = store.get(POLICY_VERSION_KEY)?;
    Ok(v.as_deref().map(u64_of).unwrap_or(0))
}

/// The policy in shared data: its version and compiled document (`None`: none yet, or one
/// that does not compile — then the previous one stays in force and the error is returned).
pub fn load_policy(store: &dyn SharedStore) -> Result<Option<(u64, CompiledPolicy)>, String> {
    let (v, _) = store.get(POLICY_KEY).map_err(|e| format!("{e:?}"))?;
    let Some(v) = v else { return Ok(None) };
    let (Some(version), Some(doc)) = (v.get(..8), v.get(8..)) else {
        return Err("policy entry too short".to_string());
    };
    let value: Value = serde_json::from_slice(doc).map_err(|e| e.to_string())?;
    let compiled = CompiledPolicy::from_value(&value).map_err(|e| {
        e.0.iter()
            .map(|fe| format!("{}: {}", fe.path, fe.reason))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(Some((u64_of(version), compiled)))
}

pub(super) fn store_policy(
    store: &dyn SharedStore,
    version: u64,
    doc: &Value,
) -> Result<(), HostError> {
    let mut v = version.to_le_bytes().to_vec();
    v.extend_from_slice(doc.to_string().as_bytes());
    // The document first, then the version workers poll: a worker that sees the new version
    // always finds the document that goes with it.
    set_blind(store, POLICY_KEY, &v)?;
    set_blind(store, POLICY_VERSION_KEY, &version.to_le_bytes())
}

/// Every counter the policy can charge at `now`, with its limit.
pub fn policy_counters(
    policy: &CompiledPolicy,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<(BudgetKey, Micros)> {
    let doc = policy.document();
    let tz = policy.timezone();
    let (month, day) = (month_key(now, tz), day_key(now, tz));
    let mut out = Vec::new();
    let mut push = |scope: Scope, limit: Option<Micros>, period: &str| {
        if let Some(limit) = limit {
            out.push((
                BudgetKey {
                    scope,
                    period: period.to_string(),
                },
                limit,
            ));
        }
    };
    push(Scope::OrgMonthly, doc.global_policy.monthly_budget, &month);
    push(Scope::OrgDaily, doc.global_policy.daily_budget, &day);
    for p in &doc.projects {
        let id: std::sync::Arc<str> = p.id.as_str().into();
        push(
            Scope::ProjectMonthly(id.clone()),
            p.policy.monthly_budget,
            &month,
        );
        push(Scope::ProjectDaily(id), p.policy.daily_budget, &day);
    }
    out
}
