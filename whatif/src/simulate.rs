//! The replay: recorded decisions, in time order, re-decided under a draft.
//!
//! Budgets are simulated: every counter starts at its spend before the window
//! (`openingSpend`, see [`crate::window`]) and is charged as the draft would let the window
//! run — an allowed request that was allowed before adds its recorded cost (the settled one
//! where known), one the draft newly allows adds the draft's estimate (an upper bound: it
//! never ran, so no cost was reported), a refused or held request adds nothing. So blocking
//! one team's calls frees budget that can let later refused calls of others through, and a
//! looser draft can run a budget out earlier than the recorded traffic did.
//!
//! What the replay cannot know, and how it is handled:
//! - a token-priced request keeps its recorded estimate (the body is never stored);
//! - a counter the live policy never had (a budget the draft adds) starts at 0: nothing
//!   counted that spend before the window;
//! - a request held for approval under the draft is not charged; the recorded replay of an
//!   approved request is decided again as a replay (the approval requirement is skipped);
//! - a record without a client (no key, unknown key) is left as it was and counted as skipped.

use std::collections::BTreeMap;
use std::collections::HashMap;

use pag0_policy::{BudgetKey, BudgetView, CompiledPolicy, Decision, Micros, RecordedRequest};
use serde::Serialize;
use serde_json::Value;

use crate::record::{parse_decisions, Outcome, Parsed};

/// An outcome as the page shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub outcome: Outcome,
    pub code: Option<String>,
    pub scope: Option<String>,
    /// The draft's reason (for the draft's side only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One request whose outcome the draft would change.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Position in the input.
    pub index: usize,
    pub id: Option<String>,
    pub at: String,
    pub client_id: Option<String>,
    pub project_id: Option<String>,
    pub method: String,
    pub authority: String,
    pub path: String,
    /// e.g. `allow → deny`.
    pub kind: String,
    pub recorded: Verdict,
    pub draft: Verdict,
    /// What the request cost as recorded, and what it would cost under the draft.
    pub recorded_spend: Micros,
    pub draft_spend: Micros,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub allow_to_deny: usize,
    pub deny_to_allow: usize,
    /// Every other change (to or from an approval, or another refusal code).
    pub other_changes: usize,
    /// Spend of the replayed requests as recorded, and as the draft would let them run.
    pub recorded_spend: Micros,
    pub draft_spend: Micros,
    /// Recorded spend of requests the draft would not let through.
    pub spend_removed: Micros,
    /// Draft spend of requests that did not go through as recorded.
    pub spend_added: Micros,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Records re-decided.
    pub replayed: usize,
    /// Records left as they were (no client), or unreadable (see `errors`).
    pub skipped: usize,
    /// One line per unreadable record (`decisions[3].at: …`).
    pub errors: Vec<String>,
    /// In time order.
    pub changes: Vec<Change>,
    pub summary: Summary,
}

/// Counters of the simulation, by `BudgetKey::storage_key()`.
struct Simulated(HashMap<String, Micros>);

impl BudgetView for Simulated {
    fn used(&self, key: &BudgetKey) -> Micros {
        self.0
            .get(&key.storage_key())
            .copied()
            .unwrap_or(Micros::ZERO)
    }
}

fn add(a: Micros, b: Micros) -> Micros {
    a.checked_add(b).unwrap_or(Micros::MAX)
}

fn label(o: Outcome) -> &'static str {
    match o {
        Outcome::Allow => "allow",
        Outcome::Deny => "deny",
        Outcome::Pending => "approval",
    }
}

/// Replays `decisions` (any order; sorted by time, ties in input order) under `draft`.
pub fn run(
    draft: &CompiledPolicy,
    mut decisions: Vec<Parsed>,
    opening: &BTreeMap<String, Micros>,
) -> Report {
    decisions.sort_by_key(|d| (d.at, d.index));
    let mut counters = Simulated(opening.iter().map(|(k, v)| (k.clone(), *v)).collect());
    let mut report = Report {
        replayed: 0,
        skipped: 0,
        errors: Vec::new(),
        changes: Vec::new(),
        summary: Summary::default(),
    };
    for d in decisions {
        let r = &d.record;
        let Some(client_id) = r.client_id.as_deref() else {
            report.skipped += 1;
            continue;
        };
        report.replayed += 1;
        let recorded_spend = r.recorded_spend();
        let decision = draft.redecide(
            &RecordedRequest {
                client_id,
                method: &r.method,
                authority: &r.authority,
                path: &r.path,
                at: d.at,
                estimate: r.estimate,
                requires_approval: r.requires_approval,
                approved_replay: r.approval_replay,
            },
            &counters,
        );
        let (verdict, draft_spend) = match &decision {
            Decision::Allow(a) => {
                let cost = if r.outcome == Outcome::Allow {
                    recorded_spend
                } else {
                    a.estimate
                };
                for res in &a.reservations {
                    let slot = counters.0.entry(res.key.storage_key()).or_default();
                    *slot = add(*slot, cost);
                }
                let v = Verdict {
                    outcome: Outcome::Allow,
                    code: None,
                    scope: None,
                    message: None,
                };
                (v, cost)
            }
            Decision::Deny(x) => {
                let v = Verdict {
                    outcome: Outcome::Deny,
                    code: Some(x.code.as_str().to_string()),
                    scope: x.scope.map(|s| s.label().to_string()),
                    message: Some(x.message.clone()),
                };
                (v, Micros::ZERO)
            }
            Decision::NeedsApproval(n) => {
                let v = Verdict {
                    outcome: Outcome::Pending,
                    code: None,
                    scope: None,
                    message: Some(format!(
                        "needs approval: estimated cost {} micro-USD",
                        n.estimate
                    )),
                };
                (v, Micros::ZERO)
            }
        };
        let s = &mut report.summary;
        s.recorded_spend = add(s.recorded_spend, recorded_spend);
        s.draft_spend = add(s.draft_spend, draft_spend);
        let same =
            verdict.outcome == r.outcome && (r.outcome != Outcome::Deny || verdict.code == r.code);
        if same {
            continue;
        }
        if r.outcome == Outcome::Allow && verdict.outcome != Outcome::Allow {
            s.spend_removed = add(s.spend_removed, recorded_spend);
        }
        if r.outcome != Outcome::Allow && verdict.outcome == Outcome::Allow {
            s.spend_added = add(s.spend_added, draft_spend);
        }
        match (r.outcome, verdict.outcome) {
            (Outcome::Allow, Outcome::Deny) => s.allow_to_deny += 1,
            (Outcome::Deny, Outcome::Allow) => s.deny_to_allow += 1,
            _ => s.other_changes += 1,
        }
        report.changes.push(Change {
            index: d.index,
            id: r.id.clone(),
            at: r.at.clone(),
            client_id: r.client_id.clone(),
            project_id: r
                .project_id
                .clone()
                .or_else(|| draft.project_of_client(client_id).map(str::to_string)),
            method: r.method.clone(),
            authority: r.authority.clone(),
            path: r.path.clone(),
            kind: format!("{} → {}", label(r.outcome), label(verdict.outcome)),
            recorded: Verdict {
                outcome: r.outcome,
                code: r.code.clone(),
                scope: r.scope.clone(),
                message: None,
            },
            draft: verdict,
            recorded_spend,
            draft_spend,
        });
    }
    report
}

/// [`run`] from JSON: the draft document and `{"decisions": [...], "openingSpend": {...}}`.
/// `Err` lists the draft's `path: reason` errors, or what is wrong with the input's shape.
pub fn run_json(draft: &str, input: &str) -> Result<Report, Vec<String>> {
    let policy = CompiledPolicy::compile(draft.as_bytes()).map_err(|errs| {
        errs.0
            .iter()
            .map(|e| format!("draft: {e}"))
            .collect::<Vec<_>>()
    })?;
    let input: Value =
        serde_json::from_str(input).map_err(|e| vec![format!("replay input: {e}")])?;
    let (decisions, errors) =
        parse_decisions(input.get("decisions").unwrap_or(&Value::Null)).map_err(|e| vec![e])?;
    let opening = match input.get("openingSpend") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(v) => serde_json::from_value::<BTreeMap<String, Micros>>(v.clone())
            .map_err(|e| vec![format!("openingSpend: {e}")])?,
    };
    let mut report = run(&policy, decisions, &opening);
    report.skipped += errors.len();
    report.errors = errors;
    Ok(report)
}

#[cfg(test)]
mod tests;
