//! Where the simulated counters start: the spend before the replayed window.
//!
//! The sidecar's `GET /v1/budgets` gives each counter's spend now, which includes the window
//! itself. Taking out what the window's allowed requests were charged (their settled cost, or
//! the estimate where none was reported) on the counters they were charged to — org and
//! project, month and day, in the live policy's timezone — leaves the spend before the first
//! replayed request. A counter never goes below zero here (usage the log does not show, such
//! as a window that starts in an earlier period, cannot make it negative).

use std::collections::BTreeMap;

use pag0_policy::period::keys as period_keys;
use pag0_policy::{CompiledPolicy, Micros};
use serde_json::Value;

use crate::record::{parse_decisions, Parsed};

/// `budgets` is the body of `GET /v1/budgets` (`{"counters": [{"counter", "spent"}, …]}`).
pub fn opening_spend(
    current: &CompiledPolicy,
    budgets: &Value,
    decisions: &[Parsed],
) -> Result<BTreeMap<String, Micros>, Vec<String>> {
    let counters = budgets
        .get("counters")
        .and_then(Value::as_array)
        .ok_or_else(|| vec!["budgets: expected the body of GET /v1/budgets".to_string()])?;
    let mut spent = BTreeMap::new();
    let mut errors = Vec::new();
    for (i, c) in counters.iter().enumerate() {
        let key = c.get("counter").and_then(Value::as_str);
        let amount = c.get("spent").map(Micros::from_json);
        match (key, amount) {
            (Some(k), Some(Ok(m))) => {
                spent.insert(k.to_string(), m);
            }
            _ => errors.push(format!(
                "budgets.counters[{i}]: expected a counter name and a spent amount"
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for d in decisions {
        let charged = d.record.recorded_spend();
        if charged == Micros::ZERO {
            continue;
        }
        let project = d.record.project_id.as_deref().or_else(|| {
            d.record
                .client_id
                .as_deref()
                .and_then(|c| current.project_of_client(c))
        });
        let (month, day) = period_keys(d.at, current.timezone());
        let mut keys = vec![format!("org.monthly/{month}"), format!("org.daily/{day}")];
        if let Some(p) = project {
            keys.push(format!("project.monthly/{p}/{month}"));
            keys.push(format!("project.daily/{p}/{day}"));
        }
        for k in keys {
            if let Some(v) = spent.get_mut(&k) {
                *v = v.saturating_sub(charged);
            }
        }
    }
    Ok(spent)
}

/// [`opening_spend`] from JSON (the live policy document, the `/v1/budgets` body, the
/// recorded decisions as an array).
pub fn opening_spend_json(
    current: &str,
    budgets: &str,
    decisions: &str,
) -> Result<BTreeMap<String, Micros>, Vec<String>> {
    let policy = CompiledPolicy::compile(current.as_bytes()).map_err(|errs| {
        errs.0
            .iter()
            .map(|e| format!("current policy: {e}"))
            .collect::<Vec<_>>()
    })?;
    let budgets: Value =
        serde_json::from_str(budgets).map_err(|e| vec![format!("budgets: {e}")])?;
    let decisions: Value =
        serde_json::from_str(decisions).map_err(|e| vec![format!("decisions: {e}")])?;
    let (parsed, _unreadable) = parse_decisions(&decisions).map_err(|e| vec![e])?;
    opening_spend(&policy, &budgets, &parsed)
}

#[cfg(test)]
mod tests;
