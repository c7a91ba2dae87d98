//! Alerts from the policy's `alerts` section (docs/alerts.md): `budgetThreshold`,
//! `highCostRequest` and `policyViolation`.
//!
//! - **Detection** is pure ([`detect`]): the store calls it inside the sync transaction with
//!   each counter's spend before and after the batch, and inserts what it returns into the
//!   `alerts` table under a unique key (`ON CONFLICT DO NOTHING`). The key names the counter
//!   (whose key carries its period), the threshold and the limit, so an alert is raised once
//!   per counter, period and threshold across the whole fleet, never per request.
//!   [`violations`] does the same for the batch's denials: one alert per project, code and
//!   hour ([`VIOLATION_WINDOW_MS`]), keyed by the three.
//! - **Delivery** ([`spawn_worker`]) happens after commit: a background task claims due alerts
//!   with a lease (two sidecars never both send one), sends each channel through the shared
//!   [`Notifier`](crate::notify::Notifier), records the outcome per channel and retries the
//!   failed channels with exponential backoff. A sync never waits for it.
//!
//! Other kinds (`anomalyDetection`) plug in by building a [`NewAlert`]
//! with their own key and handing it to [`Store::raise_alert`](crate::store::Store::raise_alert)
//! (or to the transaction that stores their event); delivery, history and metrics are shared.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pag0_policy::doc::{Alerts, PolicyDocument};
use serde_json::{json, Value};

use crate::document::{limit_for, parse_counter};
use crate::notify::{self, Notification, Target};
use crate::store::{DeliveryOutcome, DeliveryUpdate, UsageRecord};
use crate::AppState;

pub const BUDGET_THRESHOLD: &str = "budgetThreshold";
pub const HIGH_COST_REQUEST: &str = "highCostRequest";
pub const POLICY_VIOLATION: &str = "policyViolation";
/// Denials are grouped per project and code in windows of this length (UTC hours by the
/// decision's time): at most one `policyViolation` alert each.
pub const VIOLATION_WINDOW_MS: i64 = 3_600_000;
/// Denials quoted in a `policyViolation` alert.
pub const VIOLATION_EXAMPLES: usize = 3;

/// Parts per million: ratios as integers, so money is never multiplied by a float.
pub const PPM: u64 = 1_000_000;

/// What the current policy asks to be alerted on, resolved for one sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlertRules {
    /// `budgetThreshold` as parts per million of a budget (`0.8` → 800 000); `None`: off.
    pub threshold_ppm: Option<u64>,
    /// `highCostRequest` in micro-USD; `None` (or 0): off.
    pub high_cost: Option<u64>,
    /// `policyViolation`: alert on the batch's denials.
    pub policy_violation: bool,
    /// Budget limit per counter key touched by the sync (counters without a budget absent).
    pub limits: BTreeMap<String, u64>,
    /// Where alerts go (recorded with each alert, so a retry goes where the first try went).
    pub targets: Vec<AlertTarget>,
}

/// One channel of one alert as stored: `email` (comma-separated recipients), `slack` or
/// `webhook` (a URL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertTarget {
    pub channel: String,
    pub target: String,
}

/// An alert to insert (once: `key` is unique in the store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAlert {
    pub key: String,
    pub kind: String,
    pub counter: Option<String>,
    pub project_id: Option<String>,
    pub client_id: Option<String>,
    pub threshold_ppm: Option<u64>,
    pub spent: Option<u64>,
    pub limit: Option<u64>,
    /// The single request's (or approval estimate's) cost for `highCostRequest`.
    pub amount: Option<u64>,
    pub created_at_ms: i64,
    pub subject: String,
    pub text: String,
    pub payload: String,
    pub targets: Vec<AlertTarget>,
}

/// A counter's spend across one sync: `(key, before, after)`.
pub type Moved = (String, u64, u64);

// === rules from the policy ===

/// `budgetThreshold` → ppm, only for a ratio in `(0, 1]` (validation already refuses others).
pub fn ratio_ppm(ratio: f64) -> Option<u64> {
    if !(ratio > 0.0 && ratio <= 1.0) {
        return None;
    }
    // A ratio, not money: rounded to a whole ppm, in (0, 1e6] by the check above.
    let ppm = (ratio * 1_000_000.0).round() as u64;
    Some(ppm.clamp(1, PPM))
}

/// The targets of `alerts` as stored with an alert.
pub fn alert_targets(alerts: Option<&Alerts>) -> Vec<AlertTarget> {
    let people = alerts.map(|a| a.recipients.clone()).unwrap_or_default();
    notify::targets(alerts, &people)
        .into_iter()
        .map(|t| match t {
            Target::Email { to } => AlertTarget {
                channel: "email".into(),
                target: to.join(","),
            },
            Target::Slack { webhook_url } => AlertTarget {
                channel: "slack".into(),
                target: webhook_url,
            },
            Target::Webhook { url } => AlertTarget {
                channel: "webhook".into(),
                target: url,
            },
        })
        .collect()
}

/// A stored target back as the notifier's.
pub fn to_target(t: &AlertTarget) -> Option<Target> {
    match t.channel.as_str() {
        "email" => Some(Target::Email {
            to: t.target.split(',').map(str::to_owned).collect(),
        }),
        "slack" => Some(Target::Slack {
            webhook_url: t.target.clone(),
        }),
        "webhook" => Some(Target::Webhook {
            url: t.target.clone(),
        }),
        _ => None,
    }
}

/// The rules for a sync under the policy `doc` (JSON), for the counters it touches.
pub fn rules_for(doc: Option<&Value>, counters: impl IntoIterator<Item = String>) -> AlertRules {
    let Some(doc) = doc else {
        return AlertRules::default();
    };
    let Some(alerts) = doc
        .get("alerts")
        .and_then(|a| serde_json::from_value::<Alerts>(a.clone()).ok())
    else {
        return AlertRules::default();
    };
    let triggers = alerts.triggers.clone().unwrap_or_default();
    let threshold_ppm = triggers.budget_threshold.and_then(ratio_ppm);
    let high_cost = triggers
        .high_cost_request
        .map(pag0_policy::Micros::get)
        .filter(|&m| m > 0);
    let limits = if threshold_ppm.is_some() {
        counters
            .into_iter()
            .filter_map(|c| limit_for(doc, &c).map(|l| (c, l)))
            .collect()
    } else {
        BTreeMap::new()
    };
    AlertRules {
        threshold_ppm,
        high_cost,
        policy_violation: triggers.policy_violation,
        limits,
        targets: alert_targets(Some(&alerts)),
    }
}

// === detection (pure) ===

/// The spend at which `ppm` of `limit` is reached (rounded up: 80 % of 1001 is 800.8 → 801).
pub fn mark(limit: u64, ppm: u64) -> u64 {
    let m = (u128::from(limit) * u128::from(ppm)).div_ceil(u128::from(PPM));
    u64::try_from(m).unwrap_or(u64::MAX)
}

/// `before < mark ≤ after`: this sync is the one that reached the mark.
pub fn crossed(before: u64, after: u64, mark: u64) -> bool {
    before < mark && mark <= after
}

fn usd(micros: u64) -> String {
    format!("${}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// `spent / limit` as a percentage with one decimal, from integers.
pub fn percent(spent: u64, limit: u64) -> String {
    if limit == 0 {
        return "∞".into();
    }
    let tenths = u128::from(spent) * 1000 / u128::from(limit);
    format!("{}.{}%", tenths / 10, tenths % 10)
}

fn period_label(scope: &str) -> &'static str {
    if scope.ends_with("daily") {
        "day"
    } else {
        "month"
    }
}

/// Every alert one applied batch raises: for each counter that moved, the threshold mark and
/// the 100 % mark it reached in this batch (one alert each, however many requests it took),
/// and each record whose actual cost reaches `highCostRequest`.
pub fn detect(
    rules: &AlertRules,
    moved: &[Moved],
    usage: &[UsageRecord],
    instance_id: &str,
    seq: i64,
    now_ms: i64,
) -> Vec<NewAlert> {
    let mut out = Vec::new();
    if let Some(ppm) = rules.threshold_ppm {
        for (counter, before, after) in moved {
            let Some(&limit) = rules.limits.get(counter) else {
                continue;
            };
            if limit == 0 {
                continue;
            }
            let mut marks = vec![ppm];
            if ppm < PPM {
                marks.push(PPM);
            }
            for p in marks {
                if crossed(*before, *after, mark(limit, p)) {
                    out.push(budget_alert(
                        counter,
                        limit,
                        *after,
                        p,
                        now_ms,
                        &rules.targets,
                    ));
                }
            }
        }
    }
    if let Some(min) = rules.high_cost {
        for (idx, rec) in usage.iter().enumerate() {
            if rec.amount >= min {
                out.push(high_cost_alert(
                    format!("{HIGH_COST_REQUEST}/usage/{instance_id}/{seq}/{idx}"),
                    rec.project_id.as_deref(),
                    rec.client_id.as_deref(),
                    rec.amount,
                    min,
                    &format!(
                        "a request to {} cost {}",
                        rec.host.as_deref().unwrap_or("?"),
                        usd(rec.amount)
                    ),
                    now_ms,
                    &rules.targets,
                ));
            }
        }
    }
    out
}

/// The `policyViolation` alerts of a batch's decision rows: its denials grouped per project,
/// code and window, each group one alert keyed `policyViolation/<project>/<code>/<window
/// start>` with the group's count in this batch and its first [`VIOLATION_EXAMPLES`]
/// denials. A later batch with denials of the same group raises nothing (the key exists).
/// `CONTROL_PLANE_UNAVAILABLE` is left out: it is pag0's own availability (a filter without
/// a policy or a lease yet), not an agent breaking a rule; the sync metrics show it.
pub fn violations(
    rules: &AlertRules,
    audit: &[crate::audit::AuditEvent],
    now_ms: i64,
) -> Vec<NewAlert> {
    if !rules.policy_violation {
        return Vec::new();
    }
    type Group<'a> = (u64, Vec<&'a crate::audit::AuditEvent>);
    let mut groups = BTreeMap::<(Option<&str>, &str, i64), Group<'_>>::new();
    for e in audit.iter().filter(|e| {
        e.kind == crate::routes::sync::decisions::DECISION_KIND
            && e.decision.as_deref() == Some("deny")
            && e.code.as_deref() != Some("CONTROL_PLANE_UNAVAILABLE")
    }) {
        let window = e.at_ms.div_euclid(VIOLATION_WINDOW_MS) * VIOLATION_WINDOW_MS;
        // As analytics counts a denial without a code.
        let code = e
            .code
            .as_deref()
            .unwrap_or(crate::routes::analytics::UNASSIGNED);
        let g = groups
            .entry((e.project_id.as_deref(), code, window))
            .or_default();
        g.0 = g.0.saturating_add(1);
        if g.1.len() < VIOLATION_EXAMPLES {
            g.1.push(e);
        }
    }
    groups
        .into_iter()
        .map(|((project, code, window), (count, examples))| {
            violation_alert(
                project,
                code,
                window,
                count,
                &examples,
                now_ms,
                &rules.targets,
            )
        })
        .collect()
}

fn violation_alert(
    project: Option<&str>,
    code: &str,
    window: i64,
    count: u64,
    examples: &[&crate::audit::AuditEvent],
    now_ms: i64,
    targets: &[AlertTarget],
) -> NewAlert {
    let what = project.map_or_else(
        || "requests without a project".to_owned(),
        |p| format!("project {p}"),
    );
    let (from, to) = (
        crate::clock::rfc3339(window),
        crate::clock::rfc3339(window.saturating_add(VIOLATION_WINDOW_MS)),
    );
    let detail = |e: &crate::audit::AuditEvent, k: &str| {
        e.details
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let lines: Vec<String> = examples
        .iter()
        .map(|e| {
            format!(
                "- {} client {} {} {}{}",
                crate::clock::rfc3339(e.at_ms),
                e.client_id.as_deref().unwrap_or("-"),
                detail(e, "method"),
                e.host.as_deref().unwrap_or("?"),
                detail(e, "path"),
            )
        })
        .collect();
    let subject = format!("[pag0] policy violations: {what}, {code} ×{count}");
    let text = format!(
        "{count} request(s) of {what} were refused with {code} between {from} and {to}.\n\
         Examples ({} of {count}):\n{}\n",
        lines.len(),
        lines.join("\n"),
    );
    let payload = json!({
        "event": "alert", "kind": POLICY_VIOLATION, "project": project, "code": code,
        "count": count, "windowFrom": from, "windowTo": to,
        "examples": examples.iter().map(|e| json!({
            "at": crate::clock::rfc3339(e.at_ms), "clientId": e.client_id, "host": e.host,
            "method": detail(e, "method"), "path": detail(e, "path"),
        })).collect::<Vec<_>>(),
    });
    NewAlert {
        key: format!(
            "{POLICY_VIOLATION}/{}/{code}/{window}",
            project.unwrap_or("-")
        ),
        kind: POLICY_VIOLATION.into(),
        counter: None,
        project_id: project.map(str::to_owned),
        client_id: None,
        threshold_ppm: None,
        spent: None,
        limit: None,
        amount: None,
        created_at_ms: now_ms,
        subject,
        text,
        payload: payload.to_string(),
        targets: targets.to_vec(),
    }
}

fn budget_alert(
    counter: &str,
    limit: u64,
    spent: u64,
    ppm: u64,
    now_ms: i64,
    targets: &[AlertTarget],
) -> NewAlert {
    let name = parse_counter(counter);
    let project = name.as_ref().and_then(|n| n.project_id).map(str::to_owned);
    let scope = name.as_ref().map_or("", |n| n.scope);
    let period = name.as_ref().map_or("", |n| n.period);
    let what = match &project {
        Some(p) => format!("project {p}"),
        None => "the organisation".into(),
    };
    let level = percent(ppm, PPM);
    let subject = format!(
        "[pag0] budget {level} reached: {what}, {} {period}",
        period_label(scope)
    );
    let text = format!(
        "The {} budget of {what} for {period} has reached {level}.\n\
         Counter: {counter}\nSpent: {} ({spent} micro-USD)\nLimit: {} ({limit} micro-USD)\n\
         Ratio: {}\nThreshold: {level}\n",
        period_label(scope),
        usd(spent),
        usd(limit),
        percent(spent, limit),
    );
    let payload = json!({
        "event": "alert", "kind": BUDGET_THRESHOLD, "counter": counter, "project": project,
        "period": period, "scope": scope, "spent": spent.to_string(), "limit": limit.to_string(),
        "ratio": percent(spent, limit), "thresholdPpm": ppm,
    });
    NewAlert {
        key: format!("{BUDGET_THRESHOLD}/{counter}/{ppm}/{limit}"),
        kind: BUDGET_THRESHOLD.into(),
        counter: Some(counter.to_owned()),
        project_id: project,
        client_id: None,
        threshold_ppm: Some(ppm),
        spent: Some(spent),
        limit: Some(limit),
        amount: None,
        created_at_ms: now_ms,
        subject,
        text,
        payload: payload.to_string(),
        targets: targets.to_vec(),
    }
}

#[allow(clippy::too_many_arguments)]
fn high_cost_alert(
    key: String,
    project: Option<&str>,
    client: Option<&str>,
    amount: u64,
    min: u64,
    what: &str,
    now_ms: i64,
    targets: &[AlertTarget],
) -> NewAlert {
    let subject = format!(
        "[pag0] high-cost request: {} {}",
        project.unwrap_or("-"),
        usd(amount)
    );
    let text = format!(
        "Project {}, client {}: {what} ({amount} micro-USD), at or above the \
         highCostRequest alert of {} ({min} micro-USD).\n",
        project.unwrap_or("-"),
        client.unwrap_or("-"),
        usd(min),
    );
    let payload = json!({
        "event": "alert", "kind": HIGH_COST_REQUEST, "project": project, "client": client,
        "amount": amount.to_string(), "highCostRequest": min.to_string(), "what": what,
    });
    NewAlert {
        key,
        kind: HIGH_COST_REQUEST.into(),
        counter: None,
        project_id: project.map(str::to_owned),
        client_id: client.map(str::to_owned),
        threshold_ppm: None,
        spent: None,
        limit: Some(min),
        amount: Some(amount),
        created_at_ms: now_ms,
        subject,
        text,
        payload: payload.to_string(),
        targets: targets.to_vec(),
    }
}

/// A held approval whose estimate reaches `highCostRequest` (one alert per approval).
pub fn for_approval(doc: &PolicyDocument, a: &crate::store::Approval) -> Option<NewAlert> {
    let alerts = doc.alerts.as_ref()?;
    let min = alerts
        .triggers
        .as_ref()?
        .high_cost_request
        .map(pag0_policy::Micros::get)
        .filter(|&m| m > 0)?;
    (a.estimated_cost >= min).then(|| {
        high_cost_alert(
            format!("{HIGH_COST_REQUEST}/approval/{}", a.id),
            Some(&a.project_id),
            Some(&a.client_id),
            a.estimated_cost,
            min,
            &format!(
                "approval {} holds a request to {} estimated at {}",
                a.id,
                a.authority,
                usd(a.estimated_cost)
            ),
            a.created_at_ms,
            &alert_targets(Some(alerts)),
        )
    })
}

// === delivery ===

/// Tries per channel before it is marked `failed` for good.
pub const MAX_ATTEMPTS: u32 = 8;
/// How long a claim keeps other sidecars off an alert (longer than its deliveries' timeouts).
pub const CLAIM_MS: i64 = 60_000;
/// Most alerts one worker round handles before it sleeps again.
const ROUND: usize = 16;

/// Backoff before try `attempts + 1`: 1 s, 2 s, 4 s … capped at 5 min.
pub fn backoff_ms(attempts: u32) -> i64 {
    let shift = attempts.saturating_sub(1).min(20);
    (1_000i64 << shift).min(300_000)
}

/// Claims due alerts, sends them, records the outcome; every `poll`, or sooner when a sync
/// raised one (`state.alert_wake`). Runs until the runtime stops.
pub fn spawn_worker(
    state: AppState,
    claimer: String,
    poll: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = run_once(&state, &claimer).await {
                tracing::warn!(error = %e, "alert delivery round failed");
            }
            let _ = tokio::time::timeout(poll, state.alert_wake.notified()).await;
        }
    })
}

/// One round: claim, deliver, record. The number of alerts handled.
pub async fn run_once(state: &AppState, claimer: &str) -> Result<usize, crate::store::StoreError> {
    let mut n = 0;
    // One alert per claim: its lease (CLAIM_MS) outlasts its own deliveries (≤ 3 channels ×
    // the notifier's 10 s timeout), never a queue of others behind it.
    while n < ROUND {
        let now = state.clock.now_ms();
        let Some(alert) = state
            .store
            .claim_alerts(claimer.to_owned(), now, CLAIM_MS, 1)
            .await?
            .pop()
        else {
            break;
        };
        n += 1;
        let note = Notification {
            subject: alert.subject.clone(),
            text: alert.text.clone(),
            payload: serde_json::from_str(&alert.payload).unwrap_or(Value::Null),
        };
        let mut outcomes = Vec::new();
        let mut retry = false;
        for d in &alert.pending {
            let attempts = d.attempts.saturating_add(1);
            let result = match to_target(&d.target) {
                Some(t) => state
                    .notifier
                    .deliver(&t, &note)
                    .await
                    .map_err(|e| e.to_string()),
                None => Err(format!("unknown channel {:?}", d.target.channel)),
            };
            let m = &state.metrics;
            let status = match &result {
                Ok(()) => {
                    m.alerts_delivered
                        .with_label_values(&[&alert.kind, &d.target.channel])
                        .inc();
                    "sent"
                }
                Err(e) => {
                    m.alerts_failed
                        .with_label_values(&[&alert.kind, &d.target.channel])
                        .inc();
                    tracing::warn!(key = %alert.key, channel = %d.target.channel, attempts,
                        error = %e, "alert delivery failed");
                    if attempts >= MAX_ATTEMPTS {
                        "failed"
                    } else {
                        retry = true;
                        "retrying"
                    }
                }
            };
            outcomes.push(DeliveryOutcome {
                channel: d.target.channel.clone(),
                status: status.into(),
                attempts,
                error: result.err(),
            });
        }
        let max_attempts = outcomes.iter().map(|o| o.attempts).max().unwrap_or(1);
        let done_at = state.clock.now_ms();
        state
            .store
            .record_delivery(DeliveryUpdate {
                key: alert.key.clone(),
                claimer: claimer.to_owned(),
                now_ms: done_at,
                next_attempt_ms: retry.then(|| done_at.saturating_add(backoff_ms(max_attempts))),
                outcomes,
            })
            .await?;
    }
    Ok(n)
}

/// Counts what a store call raised and wakes the worker.
pub fn raised(state: &AppState, kinds: &[String]) {
    for k in kinds {
        state.metrics.alerts_raised.with_label_values(&[k]).inc();
    }
    if !kinds.is_empty() {
        state.alert_wake.notify_one();
    }
}

/// Raises an approval's `highCostRequest` alert, if it has one (errors logged: the approval
/// is already stored and answered).
pub async fn on_approval(state: &AppState, doc: &PolicyDocument, a: &crate::store::Approval) {
    let Some(alert) = for_approval(doc, a) else {
        return;
    };
    let kind = alert.kind.clone();
    match state.store.raise_alert(alert).await {
        Ok(true) => raised(state, &[kind]),
        Ok(false) => {}
        Err(e) => tracing::warn!(approval = %a.id, error = %e, "cannot raise alert"),
    }
}

/// Shared so handlers and the worker see one wake-up signal.
pub type Wake = Arc<tokio::sync::Notify>;

#[cfg(test)]
mod tests;
