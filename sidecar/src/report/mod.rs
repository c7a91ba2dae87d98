//! The EU AI Act compliance report (issue 17, docs/reports.md).
//!
//! Three steps, each testable alone:
//! - [`gather`]: the store → [`ReportInputs`] (policy versions, ledger totals, approvals). The
//!   record-keeping sections that need the audit log are inputs too ([`ReportInputs::audit`]);
//!   a build without the audit log passes `Err(reason)` and every check over it FAILS with
//!   that reason — it never passes by default.
//! - [`build`]: inputs → the report as JSON (every figure computed here, nothing canned),
//!   with the explicit [`checks`] and `complianceStatus`.
//! - [`render`]: the JSON → CSV (one long table) or PDF (typst, embedded fonts).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::clock::rfc3339;
use crate::error::AppError;
use crate::store::{
    Approval, ApprovalBound, ApprovalStatus, PolicyMeta, ReportDecisionQuery, ReportDecisions,
    Store, UsageTotals,
};

pub mod render;
pub mod schedule;

#[cfg(test)]
pub(crate) mod tests;

/// The one template there is.
pub const TEMPLATE: &str = "EU_AI_ACT_COMPLIANCE";
/// Art. 19(1), 26(6): logs of high-risk systems kept at least six months.
pub const MIN_RETENTION_DAYS: u64 = 183;
/// What the checks over the audit log say in a build without one.
pub const NO_AUDIT: &str = "audit log not available in this build";
/// Most examples of requests above the approval threshold without one the report lists.
pub const MAX_UNAPPROVED_EXAMPLES: u32 = 5;
/// Most anomalies and alerts one report reads.
const MAX_RISK_ROWS: u32 = 10_000;
/// What the risk section says while violations, anomalies and alerts are not recorded.
pub const NO_RISK: &str = "violations, anomalies and alerts are not recorded in this build";
/// Most approvals one report reads.
const MAX_APPROVALS: u32 = 100_000;
/// Most policy versions one report reads.
const MAX_VERSIONS: u32 = 10_000;

/// What the audit log says about the period (issue 15): filled by a build that has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvidence {
    /// Rows the chain check re-hashed.
    pub rows_checked: u64,
    pub head_hash: String,
    /// The chain re-computes; `false` names the first broken row in `broken`.
    pub verified: bool,
    pub broken: Option<String>,
}

/// Anomalies with their explanations and alerts sent (issue 16); violations by code are in
/// [`DecisionEvidence`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RiskEvents {
    pub anomalies: Vec<String>,
    pub alerts_sent: u64,
}

/// The decision log of the period (issue 15's `decision`, `decision.gap`, `decision.rejected`
/// rows), read by [`Store::report_decisions`] with the approval bounds of the policy versions
/// the decisions cite.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecisionEvidence {
    pub log: ReportDecisions,
    /// Policy versions cited by allowed decisions whose bounds could not be computed (not
    /// stored, or not compiling), with the reason: their decisions are unchecked, which fails
    /// the Art. 14 check.
    pub unchecked_versions: Vec<String>,
}

/// One policy version with its document.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionDoc {
    pub meta: PolicyMeta,
    pub doc: Value,
}

/// Everything the report is computed from, gathered from the store in one place.
#[derive(Clone, Debug)]
pub struct ReportInputs {
    pub generated_at_ms: i64,
    pub from_ms: i64,
    pub to_ms: i64,
    /// `month`, `2026-11`, or `custom`.
    pub period_label: String,
    /// Oldest first: every version created before `to_ms`.
    pub versions: Vec<VersionDoc>,
    /// The ledger of the period per (project, client, host).
    pub usage: Vec<UsageTotals>,
    /// Approvals created in the period.
    pub approvals: Vec<Approval>,
    pub audit: Result<AuditEvidence, String>,
    pub risk: Result<RiskEvents, String>,
    pub decisions: DecisionEvidence,
}

/// The store → inputs for `[from_ms, to_ms)`.
pub async fn gather(
    store: &dyn Store,
    from_ms: i64,
    to_ms: i64,
    period_label: String,
    now_ms: i64,
) -> Result<ReportInputs, AppError> {
    let mut metas = store.policy_history(MAX_VERSIONS).await?;
    metas.retain(|m| m.created_at_ms < to_ms);
    metas.sort_by_key(|m| m.version);
    let mut versions = Vec::with_capacity(metas.len());
    for m in metas {
        let Some(v) = store.policy_version(m.version).await? else {
            continue;
        };
        let doc = serde_json::from_str(&v.document).map_err(|e| {
            AppError::Internal(format!("stored policy {} is not JSON: {e}", m.version))
        })?;
        versions.push(VersionDoc { meta: v.meta, doc });
    }
    let usage = store.usage_totals(from_ms, to_ms).await?;
    let mut approvals = store.approvals(None, MAX_APPROVALS).await?;
    approvals.retain(|a| a.created_at_ms >= from_ms && a.created_at_ms < to_ms);
    approvals.sort_by(|a, b| a.created_at_ms.cmp(&b.created_at_ms).then(a.id.cmp(&b.id)));
    let decisions = decision_evidence(store, from_ms, to_ms, &versions).await?;
    Ok(ReportInputs {
        generated_at_ms: now_ms,
        from_ms,
        to_ms,
        period_label,
        versions,
        usage,
        approvals,
        audit: audit_evidence(store).await,
        risk: risk_events(store, from_ms, to_ms).await,
        decisions,
    })
}

/// The approval bounds of one stored version, per client (`Err`: why there are none).
fn version_bounds(versions: &[VersionDoc], version: i64) -> Result<Vec<ApprovalBound>, String> {
    let v = versions
        .iter()
        .find(|v| v.meta.version == version)
        .ok_or_else(|| format!("policy version {version}: not in the store"))?;
    let compiled = pag0_policy::CompiledPolicy::from_value(&v.doc)
        .map_err(|e| format!("policy version {version}: does not compile: {e}"))?;
    Ok(compiled
        .approval_bounds()
        .into_iter()
        .map(|(client, above)| ApprovalBound {
            policy_version: version,
            client_id: client.to_owned(),
            above: above.get(),
        })
        .collect())
}

/// The period's decision log, with each allowed decision checked against the approval bound
/// of the policy version it cites (the one the filter decided under). Bounds are computed for
/// the versions in force during the period; should a decision cite another (a filter behind
/// by more than one version), the read is repeated with that version's bounds too.
async fn decision_evidence(
    store: &dyn Store,
    from_ms: i64,
    to_ms: i64,
    versions: &[VersionDoc],
) -> Result<DecisionEvidence, AppError> {
    let first = versions
        .iter()
        .rposition(|v| v.meta.created_at_ms <= from_ms)
        .unwrap_or(0);
    let mut covered: BTreeMap<i64, Result<Vec<ApprovalBound>, String>> = versions
        .iter()
        .skip(first)
        .map(|v| (v.meta.version, version_bounds(versions, v.meta.version)))
        .collect();
    let read = |covered: &BTreeMap<i64, Result<Vec<ApprovalBound>, String>>| ReportDecisionQuery {
        from_ms,
        to_ms,
        bounds: covered
            .values()
            .filter_map(|b| b.as_ref().ok())
            .flatten()
            .cloned()
            .collect(),
        examples: MAX_UNAPPROVED_EXAMPLES,
    };
    let mut log = store.report_decisions(read(&covered)).await?;
    let missing: Vec<i64> = log
        .cited_versions
        .iter()
        .copied()
        .filter(|v| !covered.contains_key(v))
        .collect();
    if !missing.is_empty() {
        for v in missing {
            covered.insert(v, version_bounds(versions, v));
        }
        log = store.report_decisions(read(&covered)).await?;
    }
    let unchecked_versions = log
        .cited_versions
        .iter()
        .filter_map(|v| covered.get(v).and_then(|b| b.as_ref().err()).cloned())
        .collect();
    Ok(DecisionEvidence {
        log,
        unchecked_versions,
    })
}

/// Anomalies whose window overlaps the period (their one-line explanations, oldest first) and
/// alerts raised in it that reached at least one channel.
async fn risk_events(store: &dyn Store, from_ms: i64, to_ms: i64) -> Result<RiskEvents, String> {
    let mut found = store
        .anomalies(crate::store::AnomalyQuery {
            project_id: None,
            since_ms: Some(from_ms),
            until_ms: Some(to_ms),
            limit: MAX_RISK_ROWS,
        })
        .await
        .map_err(|e| format!("anomalies could not be read: {e}"))?;
    found.retain(|a| a.window_from_ms < to_ms && a.window_to_ms > from_ms);
    found.sort_by_key(|a| a.window_from_ms);
    let alerts = store
        .alerts(MAX_RISK_ROWS)
        .await
        .map_err(|e| format!("alerts could not be read: {e}"))?;
    let sent = alerts
        .iter()
        .filter(|a| a.created_at_ms >= from_ms && a.created_at_ms < to_ms)
        .filter(|a| a.deliveries.iter().any(|d| d.status == "sent"))
        .count();
    Ok(RiskEvents {
        anomalies: found.into_iter().map(|a| a.explanation).collect(),
        alerts_sent: u64::try_from(sent).unwrap_or(u64::MAX),
    })
}

/// The audit chain re-verified now (admin actions, approvals, decision events; docs/audit.md).
async fn audit_evidence(store: &dyn Store) -> Result<AuditEvidence, String> {
    let v = crate::audit::verify(store)
        .await
        .map_err(|e| format!("the audit log could not be read: {e}"))?;
    let broken = v
        .pointer("/firstBadRow")
        .and_then(Value::as_i64)
        .map(|seq| {
            format!(
                "row {seq}: {}",
                v.pointer("/reason")
                    .and_then(Value::as_str)
                    .unwrap_or("hash mismatch")
            )
        });
    Ok(AuditEvidence {
        rows_checked: v
            .pointer("/rowsChecked")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        head_hash: v
            .pointer("/head/hash")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        verified: v.pointer("/ok").and_then(Value::as_bool) == Some(true),
        broken,
    })
}

// === money ===

/// A policy money field: a decimal string or an integer (docs/policy.md).
fn money(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// Micro-USD as exact dollars: `12345678` → `12.345678`.
pub fn usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

fn add(a: u64, b: u64) -> Result<u64, AppError> {
    a.checked_add(b)
        .ok_or_else(|| AppError::Internal("report sum above u64".into()))
}

// === the policy in force ===

/// The version in force at `at_ms`: the newest created at or before it.
fn in_force(versions: &[VersionDoc], at_ms: i64) -> Option<&VersionDoc> {
    versions
        .iter()
        .rev()
        .find(|v| v.meta.created_at_ms <= at_ms)
}

fn items<'a>(doc: &'a Value, list: &str) -> &'a [Value] {
    doc.get(list)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn id_of(v: &Value) -> &str {
    v.get("id").and_then(Value::as_str).unwrap_or("")
}

/// What changed from `prev` to `next`, in words: top-level fields, and projects, clients and
/// endpoints added, removed or changed by id/host.
fn changes(prev: Option<&Value>, next: &Value) -> Vec<String> {
    let Some(prev) = prev else {
        return vec!["first version".into()];
    };
    let mut out = Vec::new();
    for (list, key) in [("projects", "id"), ("clients", "id"), ("endpoints", "host")] {
        let by_key = |doc: &Value| -> BTreeMap<String, Value> {
            items(doc, list)
                .iter()
                .map(|v| {
                    let k = v.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
                    (k, v.clone())
                })
                .collect()
        };
        let (a, b) = (by_key(prev), by_key(next));
        for (k, v) in &b {
            match a.get(k) {
                None => out.push(format!("{list}: added {k}")),
                Some(old) if old != v => out.push(format!("{list}: changed {k}")),
                Some(_) => {}
            }
        }
        for k in a.keys().filter(|k| !b.contains_key(*k)) {
            out.push(format!("{list}: removed {k}"));
        }
    }
    let fields = |doc: &Value| -> BTreeMap<String, Value> {
        doc.as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "projects" | "clients" | "endpoints"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (a, b) = (fields(prev), fields(next));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        if a.get(k) != b.get(k) {
            out.push(format!("{k} changed"));
        }
    }
    if out.is_empty() {
        out.push("no change".into());
    }
    out
}

fn approvers(doc: &Value, project_id: &str) -> Vec<String> {
    items(doc, "projects")
        .iter()
        .find(|p| id_of(p) == project_id)
        .and_then(|p| p.pointer("/policy/approvalWorkflow/approvers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

// === statistics ===

/// Nearest-rank percentile of sorted `xs` (`p` in 1..=100).
fn percentile(sorted: &[i64], p: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

fn decision_times(list: &[&Approval]) -> Value {
    let mut ms: Vec<i64> = list
        .iter()
        .filter_map(|a| a.decided_at_ms.map(|d| d.saturating_sub(a.created_at_ms)))
        .collect();
    ms.sort_unstable();
    json!({
        "decided": ms.len(),
        "medianSeconds": percentile(&ms, 50).map(|m| m / 1000),
        "p95Seconds": percentile(&ms, 95).map(|m| m / 1000),
    })
}

// === the report ===

/// One explicit check: what it verifies, for which article, and why it passed or failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub article: &'static str,
    pub pass: bool,
    pub evidence: String,
}

impl Check {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "article": self.article,
            "result": if self.pass { "pass" } else { "fail" },
            "evidence": self.evidence,
        })
    }
}

fn audit_check(
    inputs: &ReportInputs,
    name: &'static str,
    article: &'static str,
    f: impl Fn(&AuditEvidence) -> (bool, String),
) -> Check {
    let (pass, evidence) = match &inputs.audit {
        Ok(a) => f(a),
        Err(reason) => (false, reason.clone()),
    };
    Check {
        name,
        article,
        pass,
        evidence,
    }
}

/// Every check the status is computed from, in a fixed order.
pub fn checks(inputs: &ReportInputs) -> Vec<Check> {
    let latest = inputs.versions.last().map(|v| &v.doc);
    let audit_log = latest.and_then(|d| d.pointer("/globalPolicy/auditLog"));
    let enabled = audit_log
        .and_then(|a| a.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let retention = audit_log
        .and_then(|a| a.get("retention"))
        .and_then(Value::as_u64);
    let mut out = vec![Check {
        name: "audit-log-enabled",
        article: "Art. 12",
        pass: enabled,
        evidence: if enabled {
            "globalPolicy.auditLog.enabled is true".into()
        } else {
            "globalPolicy.auditLog.enabled is not true in the policy in force".into()
        },
    }];
    out.push(Check {
        name: "retention-at-least-six-months",
        article: "Art. 19(1), Art. 26(6)",
        pass: retention.is_some_and(|d| d >= MIN_RETENTION_DAYS),
        evidence: match retention {
            Some(d) if d >= MIN_RETENTION_DAYS => {
                format!("globalPolicy.auditLog.retention is {d} days (minimum {MIN_RETENTION_DAYS})")
            }
            Some(d) => format!(
                "globalPolicy.auditLog.retention is {d} days, below the {MIN_RETENTION_DAYS}-day (six-month) minimum"
            ),
            None => "globalPolicy.auditLog.retention is not set".into(),
        },
    });
    // Every decision by an approver listed on the project in the policy in force when it was made.
    let mut decided = 0u64;
    let mut offenders = Vec::new();
    for a in &inputs.approvals {
        let (Some(by), Some(at)) = (a.decided_by.as_deref(), a.decided_at_ms) else {
            continue;
        };
        decided += 1;
        let listed = in_force(&inputs.versions, at)
            .map(|v| approvers(&v.doc, &a.project_id))
            .unwrap_or_default();
        if !listed.iter().any(|x| x.eq_ignore_ascii_case(by)) {
            offenders.push(format!("{} decided by {by}", a.id));
        }
    }
    out.push(Check {
        name: "approvals-decided-by-listed-approvers",
        article: "Art. 14",
        pass: offenders.is_empty(),
        evidence: if offenders.is_empty() {
            format!("{decided} decisions, each by an approver listed on its project")
        } else {
            format!(
                "{} of {decided} decisions by someone not listed: {}",
                offenders.len(),
                offenders.join("; ")
            )
        },
    });
    let d = &inputs.decisions;
    let logged = d
        .log
        .by_decision
        .values()
        .fold(0u64, |a, n| a.saturating_add(*n));
    let ledger = inputs
        .usage
        .iter()
        .fold(0u64, |a, u| a.saturating_add(u.requests));
    // Requests in the ledger and not one decision logged: the log is missing, not clean.
    let unlogged = (logged == 0 && ledger > 0).then(|| {
        format!("no decision was logged in the period, but the ledger has {ledger} requests")
    });
    out.push(audit_check(
        inputs,
        "no-request-above-threshold-without-approval",
        "Art. 14",
        |_| {
            if let Some(why) = &unlogged {
                return (false, why.clone());
            }
            let n = d.log.unapproved_above_bound;
            let mut evidence = format!(
                "{n} of {logged} decisions logged were allowed above their approval threshold without an approval"
            );
            if !d.log.unapproved_examples.is_empty() {
                let ex: Vec<String> = d
                    .log
                    .unapproved_examples
                    .iter()
                    .map(|e| {
                        format!(
                            "audit row {} at {}: {} {} estimate {} above {}",
                            e.seq,
                            rfc3339(e.at_ms),
                            e.client_id.as_deref().unwrap_or("-"),
                            e.host.as_deref().unwrap_or("-"),
                            usd(e.estimate),
                            usd(e.above)
                        )
                    })
                    .collect();
                evidence.push_str(&format!(" ({})", ex.join("; ")));
            }
            if !d.unchecked_versions.is_empty() {
                evidence.push_str(&format!(
                    "; decisions under these versions could not be checked: {}",
                    d.unchecked_versions.join("; ")
                ));
            }
            (n == 0 && d.unchecked_versions.is_empty(), evidence)
        },
    ));
    out.push(audit_check(
        inputs,
        "audit-chain-verifies",
        "Art. 12",
        |a| {
            if a.verified {
                (
                    true,
                    format!("{} rows re-hashed, head {}", a.rows_checked, a.head_hash),
                )
            } else {
                (
                    false,
                    format!(
                        "chain broken after {} rows: {}",
                        a.rows_checked,
                        a.broken.as_deref().unwrap_or("hash mismatch")
                    ),
                )
            }
        },
    ));
    // A gap record is the filter saying it dropped that many decision events unlogged.
    out.push(audit_check(inputs, "no-unlogged-gap", "Art. 12", |_| {
        if let Some(why) = &unlogged {
            return (false, why.clone());
        }
        if d.log.gap_rows > 0 {
            return (
                false,
                format!(
                    "{} gap record(s) in the period: {} decision events dropped, not logged",
                    d.log.gap_rows, d.log.gap_events
                ),
            );
        }
        (
            true,
            format!("no gap record in the period; {logged} decisions logged"),
        )
    }));
    out
}

#[derive(Default)]
struct Line {
    requests: u64,
    spend: u64,
    cache_hits: u64,
}

impl Line {
    fn add(&mut self, t: &UsageTotals) -> Result<(), AppError> {
        self.requests = add(self.requests, t.requests)?;
        self.spend = add(self.spend, t.cost)?;
        self.cache_hits = add(self.cache_hits, t.cache_hits)?;
        Ok(())
    }
}

const UNASSIGNED: &str = "unassigned";

/// The report as JSON (camelCase; money as micro-USD strings plus exact `…Usd` strings).
pub fn build(inputs: &ReportInputs) -> Result<Value, AppError> {
    let latest = inputs.versions.last().map(|v| &v.doc);
    let empty = Value::Null;
    let doc = latest.unwrap_or(&empty);

    // Policy versions in force during the period: the one at `from` and every later one.
    let first = inputs
        .versions
        .iter()
        .rposition(|v| v.meta.created_at_ms <= inputs.from_ms)
        .unwrap_or(0);
    let versions: Vec<Value> = inputs
        .versions
        .iter()
        .enumerate()
        .skip(first)
        .map(|(i, v)| {
            let prev = i.checked_sub(1).and_then(|p| inputs.versions.get(p));
            json!({
                "version": v.meta.version,
                "author": v.meta.author,
                "createdAt": rfc3339(v.meta.created_at_ms),
                "changes": changes(prev.map(|p| &p.doc), &v.doc),
            })
        })
        .collect();

    // AI systems used: per team (project) and endpoint.
    let mut teams: BTreeMap<String, (Line, BTreeMap<String, Line>)> = BTreeMap::new();
    let mut total = Line::default();
    for t in &inputs.usage {
        let team = t.project_id.as_deref().unwrap_or(UNASSIGNED).to_owned();
        let host = t.host.as_deref().unwrap_or(UNASSIGNED).to_owned();
        let slot = teams.entry(team).or_default();
        slot.0.add(t)?;
        slot.1.entry(host).or_default().add(t)?;
        total.add(t)?;
    }
    // Teams with a budget but no spend are listed too.
    for p in items(doc, "projects") {
        teams.entry(id_of(p).to_owned()).or_default();
    }
    let endpoint = |host: &str| {
        items(doc, "endpoints")
            .iter()
            .find(|e| e.get("host").and_then(Value::as_str) == Some(host))
    };
    let team_rows: Vec<Value> = teams
        .iter()
        .map(|(id, (line, hosts))| {
            let project = items(doc, "projects").iter().find(|p| id_of(p) == id);
            let budget = money(project.and_then(|p| p.pointer("/policy/monthlyBudget")));
            let name = project
                .and_then(|p| p.get("name"))
                .and_then(Value::as_str)
                .unwrap_or(id);
            json!({
                "id": id,
                "name": name,
                "requests": line.requests,
                "cacheHits": line.cache_hits,
                "spend": line.spend.to_string(),
                "spendUsd": usd(line.spend),
                "monthlyBudget": budget.map(|b| b.to_string()),
                "monthlyBudgetUsd": budget.map(usd),
                // Per mille of the budget, for the chart (capped at 1000 = the whole bar).
                "budgetUsePermille": budget.filter(|b| *b > 0).map(|b| {
                    u64::try_from(u128::from(line.spend) * 1000 / u128::from(b)).unwrap_or(u64::MAX)
                }),
                "endpoints": hosts.iter().map(|(host, l)| {
                    let e = endpoint(host);
                    let models: Vec<&str> = e
                        .and_then(|e| e.pointer("/pricing/models"))
                        .and_then(Value::as_object)
                        .map(|m| m.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    json!({
                        "host": host,
                        "category": e.and_then(|e| e.get("category")).and_then(Value::as_str),
                        "models": models,
                        "requests": l.requests,
                        "spend": l.spend.to_string(),
                        "spendUsd": usd(l.spend),
                    })
                }).collect::<Vec<_>>(),
            })
        })
        .collect();

    // Human oversight.
    let now = inputs.generated_at_ms;
    // Never decided: still pending, or expired undecided.
    let undecided = |expired: bool| {
        inputs
            .approvals
            .iter()
            .filter(|a| a.status == ApprovalStatus::Pending && a.is_expired(now) == expired)
            .count()
    };
    let denied = inputs
        .approvals
        .iter()
        .filter(|a| a.status == ApprovalStatus::Denied)
        .count();
    let approved_ever = inputs
        .approvals
        .iter()
        .filter(|a| matches!(a.status, ApprovalStatus::Approved | ApprovalStatus::Used))
        .count();
    let all: Vec<&Approval> = inputs.approvals.iter().collect();
    let mut by_approver: BTreeMap<String, Vec<&Approval>> = BTreeMap::new();
    for a in &inputs.approvals {
        if let Some(by) = &a.decided_by {
            by_approver.entry(by.to_lowercase()).or_default().push(a);
        }
    }
    let approver_rows: Vec<Value> = by_approver
        .iter()
        .map(|(who, list)| {
            let mut v = decision_times(list);
            if let Some(o) = v.as_object_mut() {
                o.insert("approver".into(), json!(who));
                o.insert(
                    "approved".into(),
                    json!(list
                        .iter()
                        .filter(|a| a.status != ApprovalStatus::Denied)
                        .count()),
                );
                o.insert(
                    "denied".into(),
                    json!(list
                        .iter()
                        .filter(|a| a.status == ApprovalStatus::Denied)
                        .count()),
                );
            }
            v
        })
        .collect();
    let mut oversight = json!({
        "requested": inputs.approvals.len(),
        "approved": approved_ever,
        "denied": denied,
        "expired": undecided(true),
        "pending": undecided(false),
        "used": inputs.approvals.iter().filter(|a| a.status == ApprovalStatus::Used).count(),
        "timeToDecision": decision_times(&all),
        "byApprover": approver_rows,
    });

    let retention = doc
        .pointer("/globalPolicy/auditLog/retention")
        .and_then(Value::as_u64);
    let mut record_keeping = match &inputs.audit {
        Ok(a) => json!({
            "available": true,
            "chain": { "rowsChecked": a.rows_checked, "headHash": a.head_hash,
                       "result": if a.verified { "verified" } else { "broken" },
                       "broken": a.broken },
            "retentionDays": retention,
            "minimumRetentionDays": MIN_RETENTION_DAYS,
        }),
        Err(reason) => json!({
            "available": false,
            "reason": reason,
            "chain": { "result": "unavailable" },
            "retentionDays": retention,
            "minimumRetentionDays": MIN_RETENTION_DAYS,
        }),
    };
    let log = &inputs.decisions.log;
    if let Some(o) = record_keeping.as_object_mut() {
        o.insert(
            "decisionsLogged".into(),
            json!(log
                .by_decision
                .values()
                .fold(0u64, |a, n| a.saturating_add(*n))),
        );
        o.insert("decisionsByKind".into(), json!(log.by_decision));
        o.insert("gapsRecorded".into(), json!(log.gap_rows));
        o.insert("eventsDropped".into(), json!(log.gap_events));
        o.insert("rejectedRecords".into(), json!(log.rejected));
    }
    // Violations: the period's denials by code (a denial without a code is `uncoded`).
    let violations: BTreeMap<&str, u64> = log
        .denials_by_code
        .iter()
        .map(|(c, n)| (if c.is_empty() { "uncoded" } else { c.as_str() }, *n))
        .collect();
    let violations_total = violations.values().fold(0u64, |a, n| a.saturating_add(*n));
    let risk = match &inputs.risk {
        Ok(r) => json!({
            "available": true,
            "violations": violations,
            "violationsTotal": violations_total,
            "anomalies": r.anomalies,
            "alertsSent": r.alerts_sent,
        }),
        Err(reason) => json!({ "available": false, "reason": reason,
                               "violations": violations, "violationsTotal": violations_total }),
    };
    if let Some(o) = oversight.as_object_mut() {
        o.insert(
            "aboveThresholdWithoutApproval".into(),
            json!({
                "count": log.unapproved_above_bound,
                "examples": log.unapproved_examples.iter().map(|e| json!({
                    "auditSeq": e.seq,
                    "at": rfc3339(e.at_ms),
                    "projectId": e.project_id,
                    "clientId": e.client_id,
                    "host": e.host,
                    "model": e.model,
                    "estimate": e.estimate.to_string(),
                    "estimateUsd": usd(e.estimate),
                    "threshold": e.above.to_string(),
                    "thresholdUsd": usd(e.above),
                    "policyVersion": e.policy_version,
                })).collect::<Vec<_>>(),
                "uncheckedVersions": inputs.decisions.unchecked_versions,
            }),
        );
    }
    // Per model, from the decision rows (the ledger has no model).
    let models: Vec<Value> = log
        .by_model
        .iter()
        .map(|(m, t)| {
            json!({
                "model": m.as_deref().unwrap_or(UNASSIGNED),
                "requests": t.requests,
                "spend": t.cost.to_string(),
                "spendUsd": usd(t.cost),
            })
        })
        .collect();

    let checks = checks(inputs);
    let compliant = checks.iter().all(|c| c.pass);
    let failing: Vec<&str> = checks.iter().filter(|c| !c.pass).map(|c| c.name).collect();
    Ok(json!({
        "template": TEMPLATE,
        "orgId": doc.get("orgId").and_then(Value::as_str).unwrap_or(""),
        "complianceMode": doc.pointer("/globalPolicy/complianceMode").and_then(Value::as_str),
        "timezone": doc.get("timezone").and_then(Value::as_str).unwrap_or("UTC"),
        "period": {
            "label": inputs.period_label,
            "from": rfc3339(inputs.from_ms),
            "to": rfc3339(inputs.to_ms),
        },
        "generatedAt": rfc3339(inputs.generated_at_ms),
        "policyVersions": versions,
        "aiSystems": {
            "teams": team_rows,
            "total": {
                "requests": total.requests,
                "cacheHits": total.cache_hits,
                "spend": total.spend.to_string(),
                "spendUsd": usd(total.spend),
            },
            "orgMonthlyBudget": money(doc.pointer("/globalPolicy/monthlyBudget")).map(|b| b.to_string()),
            "models": models,
        },
        "humanOversight": oversight,
        "recordKeeping": record_keeping,
        "riskEvents": risk,
        "checks": checks.iter().map(Check::to_json).collect::<Vec<_>>(),
        "failingChecks": failing,
        "complianceStatus": if compliant { "COMPLIANT" } else { "NOT_COMPLIANT" },
    }))
}
