//! `recommendations`: rules over the month-to-date ledger, the decision rows, the budget
//! counters and the approval queue. Each names its rule and carries the numbers it was computed
//! from; a rule that the data does not trigger says nothing. Pure: the route gathers the inputs.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::document::limit_for;
use crate::store::{Approval, ApprovalStatus, DecisionStats, LearnedRow, UsageTotals};

/// Below this much of the month elapsed a run rate says little: no budget rule fires.
pub const MIN_ELAPSED_MS: i64 = 86_400_000;
/// Lowering a budget wants a week of evidence.
pub const MIN_ELAPSED_LOWER_MS: i64 = 7 * 86_400_000;
/// A lowered budget keeps this much headroom over the projection.
pub const LOWER_HEADROOM_PERCENT: u64 = 25;
/// A project's cache hit rate is "well under" the org's below this fraction of it.
pub const CACHE_RATIO_PERCENT: u64 = 50;
/// Fewer requests than this say nothing about a project's hit rate.
pub const CACHE_MIN_REQUESTS: u64 = 20;
/// Approvals granted, none denied, at least this many: the threshold asks for nothing.
pub const APPROVALS_MIN_GRANTED: u64 = 5;
/// A client denied at least this many times this month with one code …
pub const DENIED_MIN: u64 = 20;
/// … making at least this share of all its decisions looks misconfigured, not unlucky.
pub const DENIED_SHARE_PERCENT: u64 = 50;

/// The catalogue price is "far from reality" when the settled costs average at least this
/// many per-mille of the estimates …
pub const CATALOGUE_HIGH_PERMILLE: u64 = 2000;
/// … or at most this many.
pub const CATALOGUE_LOW_PERMILLE: u64 = 500;
/// Fewer believed reports than this say nothing about a catalogue price.
pub const CATALOGUE_MIN_SAMPLES: u32 = 3;

/// Everything the rules read.
pub struct Inputs<'a> {
    pub doc: Option<&'a Value>,
    /// Month-to-date ledger totals per (project, client, host).
    pub month: &'a [UsageTotals],
    /// Month-to-date decision rows per (project, client, host, model, decision, code).
    pub month_decisions: &'a [DecisionStats],
    /// The current month's `[from, to)` and now, unix ms.
    pub month_from_ms: i64,
    pub month_to_ms: i64,
    pub now_ms: i64,
    /// Spent per counter key (as in `/v1/budgets`).
    pub spent: &'a BTreeMap<String, u64>,
    pub month_key: &'a str,
    /// Recent approvals (any status).
    pub approvals: &'a [Approval],
    /// The fleet's learned estimates of the current catalogue (docs/estimates.md).
    pub learned: &'a [LearnedRow],
}

fn ceil_div(a: u128, b: u128) -> u128 {
    a.div_ceil(b.max(1))
}

fn to_u64(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Month-end spend if the month goes on as it went: `spent × month / elapsed`.
pub fn project_run_rate(spent: u64, elapsed_ms: i64, month_ms: i64) -> u64 {
    let elapsed = u128::try_from(elapsed_ms.max(1)).unwrap_or(1);
    let month = u128::try_from(month_ms.max(1)).unwrap_or(1);
    to_u64(ceil_div(u128::from(spent) * month, elapsed))
}

/// Clients by month-to-date cost in `project` (all projects when `None`), most expensive
/// first, at most three, with their cost.
fn drivers(month: &[UsageTotals], project: Option<&str>) -> Vec<(String, u64)> {
    let mut by = BTreeMap::<String, u64>::new();
    for t in month
        .iter()
        .filter(|t| project.is_none() || t.project_id.as_deref() == project)
    {
        let c = by
            .entry(
                t.client_id
                    .clone()
                    .unwrap_or_else(|| super::UNASSIGNED.into()),
            )
            .or_default();
        *c = c.saturating_add(t.cost);
    }
    let mut v: Vec<(String, u64)> = by.into_iter().filter(|(_, c)| *c > 0).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(3);
    v
}

fn budget_rules(i: &Inputs<'_>, out: &mut Vec<Value>) {
    let Some(doc) = i.doc else { return };
    let elapsed = i.now_ms.saturating_sub(i.month_from_ms);
    let month_ms = i.month_to_ms.saturating_sub(i.month_from_ms);
    if elapsed < MIN_ELAPSED_MS || month_ms <= 0 {
        return;
    }
    let mut scopes: Vec<(String, Option<String>)> =
        vec![(format!("org.monthly/{}", i.month_key), None)];
    for p in doc
        .get("projects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(id) = p.get("id").and_then(Value::as_str) {
            scopes.push((
                format!("project.monthly/{id}/{}", i.month_key),
                Some(id.to_owned()),
            ));
        }
    }
    for (counter, project) in scopes {
        let Some(limit) = limit_for(doc, &counter).filter(|l| *l > 0) else {
            continue;
        };
        let spent = i.spent.get(&counter).copied().unwrap_or(0);
        let projected = project_run_rate(spent, elapsed, month_ms);
        let pct = to_u64(ceil_div(u128::from(projected) * 100, u128::from(limit)));
        let scope = project
            .as_deref()
            .map_or_else(|| "the organisation".to_owned(), |p| format!("project {p}"));
        let numbers = json!({
            "counter": counter,
            "spent": spent.to_string(),
            "limit": limit.to_string(),
            "projected": projected.to_string(),
            "projectedPercent": pct,
            "elapsedMs": elapsed,
            "monthMs": month_ms,
        });
        if projected >= limit {
            let raise = to_u64(ceil_div(
                u128::from(projected - limit) * 100,
                u128::from(limit),
            ));
            let drivers = drivers(i.month, project.as_deref());
            let names: Vec<String> = drivers
                .iter()
                .map(|(c, cost)| format!("{c} ({cost} µUSD)"))
                .collect();
            out.push(json!({
                "rule": "budget-run-rate-over",
                "projectId": project,
                "message": format!(
                    "{scope} is on course to spend {projected} µUSD this month, {pct}% of its {limit} µUSD budget: raise it by {raise}% or rein in {}",
                    if names.is_empty() { "its clients".to_owned() } else { names.join(", ") }),
                "raisePercent": raise,
                "suggestedLimit": projected.to_string(),
                "drivers": drivers.iter().map(|(c, cost)| json!({ "clientId": c, "cost": cost.to_string() })).collect::<Vec<_>>(),
                "numbers": numbers,
            }));
        } else if elapsed >= MIN_ELAPSED_LOWER_MS && u128::from(projected) * 2 <= u128::from(limit)
        {
            let suggested = to_u64(ceil_div(
                u128::from(projected) * u128::from(100 + LOWER_HEADROOM_PERCENT),
                100,
            ));
            out.push(json!({
                "rule": "budget-run-rate-under",
                "projectId": project,
                "message": format!(
                    "{scope} is on course to spend {projected} µUSD this month, {pct}% of its {limit} µUSD budget: lower it to {suggested} µUSD ({LOWER_HEADROOM_PERCENT}% over the projection)"),
                "suggestedLimit": suggested.to_string(),
                "numbers": numbers,
            }));
        }
    }
}

fn cache_rule(i: &Inputs<'_>, out: &mut Vec<Value>) {
    let (mut org_req, mut org_hits) = (0u128, 0u128);
    let mut per = BTreeMap::<&str, (u128, u128)>::new();
    for t in i.month {
        org_req += u128::from(t.requests);
        org_hits += u128::from(t.cache_hits);
        if let Some(p) = t.project_id.as_deref() {
            let e = per.entry(p).or_default();
            e.0 += u128::from(t.requests);
            e.1 += u128::from(t.cache_hits);
        }
    }
    if org_hits == 0 {
        return;
    }
    for (project, (req, hits)) in per {
        // hits/req < CACHE_RATIO% × org_hits/org_req, in integers.
        if req >= u128::from(CACHE_MIN_REQUESTS)
            && hits * org_req * 100 < u128::from(CACHE_RATIO_PERCENT) * org_hits * req
        {
            let rate = |h: u128, r: u128| to_u64(h * 100 / r.max(1));
            out.push(json!({
                "rule": "cache-hit-rate-low",
                "projectId": project,
                "message": format!(
                    "project {project} served {hits} of {req} requests from the cache ({}%) against the organisation's {org_hits} of {org_req} ({}%): enable or share its cache",
                    rate(hits, req), rate(org_hits, org_req)),
                "numbers": {
                    "requests": to_u64(req), "cacheHits": to_u64(hits),
                    "orgRequests": to_u64(org_req), "orgCacheHits": to_u64(org_hits),
                },
            }));
        }
    }
}

fn approvals_rule(i: &Inputs<'_>, out: &mut Vec<Value>) {
    // (granted, denied, highest granted estimate) per project.
    let mut per = BTreeMap::<&str, (u64, u64, u64)>::new();
    for a in i.approvals {
        let e = per.entry(a.project_id.as_str()).or_default();
        match a.status {
            ApprovalStatus::Approved | ApprovalStatus::Used => {
                e.0 += 1;
                e.2 = e.2.max(a.estimated_cost);
            }
            ApprovalStatus::Denied => e.1 += 1,
            ApprovalStatus::Pending => {}
        }
    }
    for (project, (granted, denied, max)) in per {
        if granted >= APPROVALS_MIN_GRANTED && denied == 0 {
            out.push(json!({
                "rule": "approvals-always-granted",
                "projectId": project,
                "message": format!(
                    "project {project}: all {granted} decided approvals were granted, the largest estimate {max} µUSD: raise requireApprovalAbove to at least {max} µUSD"),
                "suggestedRequireApprovalAbove": max.to_string(),
                "numbers": { "granted": granted, "denied": denied, "maxGrantedEstimate": max.to_string() },
            }));
        }
    }
}

/// What to look at for a client refused over and over with `code` (mostly on `host`).
fn denial_hint(code: &str, host: &str) -> String {
    match code {
        "ENDPOINT_BLOCKED" | "ENDPOINT_NOT_ALLOWED" | "CATEGORY_NOT_ALLOWED" => format!(
            "it keeps calling {host}, which its policy refuses: point the agent elsewhere or change the endpoint rules"
        ),
        "OUTSIDE_WORKING_HOURS" => {
            "it runs outside its working hours: reschedule it or widen workingHours".into()
        }
        "BUDGET_EXCEEDED" => {
            "it keeps calling after its budget ran out: make it stop on 402 or raise the budget".into()
        }
        "MAX_PER_REQUEST_EXCEEDED" => {
            "its requests are priced above maxPerRequest: lower its max_tokens or raise maxPerRequest".into()
        }
        "APPROVAL_REQUIRED" | "APPROVAL_DENIED" | "APPROVAL_EXPIRED" | "APPROVAL_MISMATCH"
        | "APPROVAL_USED" => {
            "it keeps sending requests that need an approval it does not have: check how it waits for approvals".into()
        }
        _ => format!("its requests to {host} are refused as {code}: check the agent's configuration"),
    }
}

fn denied_rule(i: &Inputs<'_>, out: &mut Vec<Value>) {
    /// Per (project, client): every decision, and denials per code with their hosts.
    #[derive(Default)]
    struct Client<'a> {
        decisions: u64,
        codes: BTreeMap<&'a str, (u64, BTreeMap<&'a str, u64>)>,
    }
    let mut per = BTreeMap::<(Option<&str>, &str), Client<'_>>::new();
    for s in i.month_decisions {
        // A request without a client (no or an unknown key) is nobody's misconfiguration here.
        let Some(client) = s.client_id.as_deref() else {
            continue;
        };
        let c = per.entry((s.project_id.as_deref(), client)).or_default();
        c.decisions = c.decisions.saturating_add(s.count);
        if s.decision.as_deref() == Some("deny") {
            let code = s.code.as_deref().unwrap_or(super::UNASSIGNED);
            let e = c.codes.entry(code).or_default();
            e.0 = e.0.saturating_add(s.count);
            let h =
                e.1.entry(s.host.as_deref().unwrap_or(super::UNASSIGNED))
                    .or_default();
            *h = h.saturating_add(s.count);
        }
    }
    for ((project, client), c) in per {
        // The code refused most often (the first by name on a tie).
        let Some((code, (denials, hosts))) = c
            .codes
            .iter()
            .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then_with(|| b.0.cmp(a.0)))
        else {
            continue;
        };
        if *denials < DENIED_MIN
            || u128::from(*denials) * 100
                < u128::from(DENIED_SHARE_PERCENT) * u128::from(c.decisions)
        {
            continue;
        }
        let (host, on_host) = hosts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map_or((super::UNASSIGNED, 0), |(h, n)| (*h, *n));
        let share = to_u64(u128::from(*denials) * 100 / u128::from(c.decisions.max(1)));
        let of = project.map_or_else(String::new, |p| format!(" of project {p}"));
        out.push(json!({
            "rule": "client-denied-repeatedly",
            "projectId": project,
            "clientId": client,
            "code": code,
            "message": format!(
                "client {client}{of} was refused {denials} times this month with {code} ({share}% of its {} requests, {on_host} of them on {host}): {}",
                c.decisions, denial_hint(code, host)),
            "numbers": {
                "denials": denials, "decisions": c.decisions, "sharePercent": share,
                "topHost": host, "topHostDenials": on_host,
            },
        }));
    }
}

/// Every rule the data triggers, in rule order.
pub fn recommend(i: &Inputs<'_>) -> Vec<Value> {
    let mut out = Vec::new();
    budget_rules(i, &mut out);
    cache_rule(i, &mut out);
    approvals_rule(i, &mut out);
    denied_rule(i, &mut out);
    catalogue_rule(i, &mut out);
    out
}

/// The per-request price of `host` in the catalogue, if it is priced per request.
fn catalogue_price(doc: Option<&Value>, host: &str) -> Option<u64> {
    doc?.get("endpoints")?
        .as_array()?
        .iter()
        .find(|e| e.get("host").and_then(Value::as_str) == Some(host))?
        .pointer("/pricing/perRequest")
        .and_then(|v| pag0_policy::Micros::from_json(v).ok())
        .map(pag0_policy::Micros::get)
}

/// A catalogue entry whose settled costs average ≥ 2× or ≤ 0.5× its estimates: fix the
/// catalogue (the learned estimate already protects the budgets, but the estimate the agents
/// see, the approval thresholds and `maxPerRequest` read the catalogue).
fn catalogue_rule(i: &Inputs<'_>, out: &mut Vec<Value>) {
    for r in i.learned {
        let Some(ratio) = r.ratio_permille() else {
            continue;
        };
        let far = ratio >= CATALOGUE_HIGH_PERMILLE || ratio <= CATALOGUE_LOW_PERMILLE;
        if !far || r.learned.samples < CATALOGUE_MIN_SAMPLES {
            continue;
        }
        let mean = r.actual_sum / u64::from(r.learned.samples.max(1));
        let host = pag0_policy::learn::key_host(&r.key);
        let price = catalogue_price(i.doc, host);
        let fix = match price {
            Some(p) => {
                format!("set its perRequest from {p} to about {mean} µUSD (the mean settled cost)")
            }
            None => "adjust its model prices".to_string(),
        };
        out.push(json!({
            "rule": "catalogue-price-off",
            "endpoint": host,
            "message": format!(
                "{host} settles at {}.{:03}× its catalogue estimate over {} reports: {fix}",
                ratio / 1000, ratio % 1000, r.learned.samples),
            "suggestedPerRequest": price.map(|_| mean.to_string()),
            "numbers": {
                "samples": r.learned.samples,
                "estimateSum": r.estimate_sum.to_string(),
                "actualSum": r.actual_sum.to_string(),
                "ratioPermille": ratio.to_string(),
                "learnedPermille": r.learned.high_permille.to_string(),
            },
        }));
    }
}

#[cfg(test)]
mod tests;
