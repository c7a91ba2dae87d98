//! `GET /v1/analytics`: the usage ledger over the current calendar day or month (org timezone)
//! or any `from`/`to` range, summed per group for each `groupBy` dimension (project, costCenter,
//! endpoint, client, model), with budget utilisation from the counters, top endpoints,
//! rule-based recommendations, an optional time series (`interval`) and CSV (`format=csv`).
//! Violations (denials by code) and upstream latency (average and p95, cache hits apart) come
//! from the decision rows of the audit log (`Store::decision_stats`), grouped the same way.
//! Anomalies come from the stored findings of anomaly detection (`Store::anomalies_in`: the
//! windows overlapping the range), counted per group of the dimensions they name.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Offset, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::Admin;
use crate::clock::rfc3339;
use crate::document::limit_for;
use crate::error::AppError;
use crate::store::{
    Anomaly, AnomalyRange, DecisionBucket, DecisionStats, LatencyHistogram, UsageBucket,
    UsageTotals,
};
use crate::AppState;

mod recommend;

/// The group of records without the fact a dimension needs (or a cost centre nobody tagged).
pub const UNASSIGNED: &str = "unassigned";
/// Store buckets for a series, coarsest first: the store answers whole days and hours from its
/// rollups; 15 minutes divide every zone's hours and days today (India's, Nepal's), read raw;
/// seconds the local mean times of the 19th century.
const STORE_BUCKETS_MS: [i64; 5] = [86_400_000, 3_600_000, 15 * 60_000, 1000, 1];

/// The coarsest store bucket that no series bucket boundary cuts: every boundary inside the
/// range (each start after the first) a multiple of it.
pub fn store_bucket(starts: &[i64]) -> i64 {
    STORE_BUCKETS_MS
        .into_iter()
        .find(|b| starts.iter().skip(1).all(|s| s % b == 0))
        .unwrap_or(1)
}
/// At most this many series points per call.
const MAX_POINTS: usize = 5000;
/// Endpoints listed per group in `topEndpoints`.
const TOP_ENDPOINTS: usize = 3;
/// Approvals the recommendation rule reads (newest first).
const APPROVALS_READ: u32 = 1000;
/// Anomalies listed per group (and in the total) in `anomalies.latest`, newest first.
pub const LATEST_ANOMALIES: usize = 3;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalyticsQuery {
    #[serde(default)]
    period: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    group_by: Option<String>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    Project,
    CostCenter,
    Endpoint,
    Client,
    /// From the decision rows; the ledger records no model, so its sums are all `unassigned`.
    Model,
}

impl GroupBy {
    fn name(self) -> &'static str {
        match self {
            GroupBy::Project => "project",
            GroupBy::CostCenter => "costCenter",
            GroupBy::Endpoint => "endpoint",
            GroupBy::Client => "client",
            GroupBy::Model => "model",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interval {
    Hour,
    Day,
}

/// What a query asks for, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// `None`: an explicit `from`/`to` range.
    pub period: Option<Period>,
    pub range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub dims: Vec<GroupBy>,
    pub interval: Option<Interval>,
    pub csv: bool,
}

fn parse_time(field: &str, v: &str, errs: &mut Vec<String>) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(v) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(e) => {
            errs.push(format!("{field}: {v:?} is not an RFC 3339 time ({e})"));
            None
        }
    }
}

pub fn parse_query(q: &AnalyticsQuery) -> Result<Parsed, AppError> {
    let mut errs = Vec::new();
    let ranged = q.from.is_some() || q.to.is_some();
    let period = match (q.period.as_deref(), ranged) {
        (Some(_), true) => {
            errs.push("period: give either period or from/to, not both".into());
            None
        }
        (_, true) => None,
        (p, false) => match p.unwrap_or("month") {
            "month" => Some(Period::Month),
            "day" => Some(Period::Day),
            other => {
                errs.push(format!("period: {other:?} is not one of day, month"));
                None
            }
        },
    };
    let mut range = None;
    if ranged {
        match (q.from.as_deref(), q.to.as_deref()) {
            (Some(f), Some(t)) => {
                let f = parse_time("from", f, &mut errs);
                let t = parse_time("to", t, &mut errs);
                if let (Some(f), Some(t)) = (f, t) {
                    if f < t {
                        range = Some((f, t));
                    } else {
                        errs.push(format!(
                            "to: {} is not after from",
                            rfc3339(t.timestamp_millis())
                        ));
                    }
                }
            }
            (None, _) => errs.push("from: required with to".into()),
            (_, None) => errs.push("to: required with from".into()),
        }
    }
    let mut dims = Vec::new();
    for d in q.group_by.as_deref().unwrap_or("project").split(',') {
        let dim = match d.trim() {
            "project" => GroupBy::Project,
            "costCenter" => GroupBy::CostCenter,
            "endpoint" => GroupBy::Endpoint,
            "client" => GroupBy::Client,
            "model" => GroupBy::Model,
            other => {
                errs.push(format!(
                    "groupBy: {other:?} is not one of project, costCenter, endpoint, client, model"
                ));
                continue;
            }
        };
        if dims.contains(&dim) {
            errs.push(format!("groupBy: {:?} given twice", dim.name()));
        } else {
            dims.push(dim);
        }
    }
    let interval = match q.interval.as_deref() {
        None => None,
        Some("hour") => Some(Interval::Hour),
        Some("day") => Some(Interval::Day),
        Some(other) => {
            errs.push(format!("interval: {other:?} is not one of hour, day"));
            None
        }
    };
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            errs.push(format!("format: {other:?} is not one of json, csv"));
            false
        }
    };
    if errs.is_empty() {
        Ok(Parsed {
            period,
            range,
            dims,
            interval,
            csv,
        })
    } else {
        Err(AppError::BadRequest {
            code: "BAD_QUERY",
            message: "unsupported analytics query".into(),
            details: errs,
        })
    }
}

// === periods ===

/// The first instant of local `date` in `tz`. A local midnight skipped by a DST jump (some
/// zones change at 00:00) starts the day at the first local minute that exists.
fn start_of<Z: TimeZone>(tz: &Z, date: NaiveDate) -> Option<DateTime<Utc>> {
    let midnight = date.and_hms_opt(0, 0, 0)?;
    (0..=24 * 60).find_map(|m| {
        tz.from_local_datetime(&(midnight + Duration::minutes(m)))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// `[from, to)` of the calendar day or month containing `now` in `tz`.
pub fn bounds<Z: TimeZone>(
    now: DateTime<Utc>,
    tz: &Z,
    period: Period,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let today = now.with_timezone(tz).date_naive();
    let (first, next) = match period {
        Period::Day => (today, today.succ_opt()?),
        Period::Month => {
            let first = today.with_day(1)?;
            let next = if first.month() == 12 {
                NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)?
            } else {
                NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)?
            };
            (first, next)
        }
    };
    Some((start_of(tz, first)?, start_of(tz, next)?))
}

// === groups ===

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    pub requests: u64,
    pub cost: u64,
    pub cache_hits: u64,
    pub savings: u64,
}

impl Sums {
    fn add(&mut self, t: &UsageTotals) -> Result<(), AppError> {
        let overflow = || AppError::Internal("analytics sum above u64".into());
        self.requests = self.requests.checked_add(t.requests).ok_or_else(overflow)?;
        self.cost = self.cost.checked_add(t.cost).ok_or_else(overflow)?;
        self.cache_hits = self
            .cache_hits
            .checked_add(t.cache_hits)
            .ok_or_else(overflow)?;
        self.savings = self.savings.checked_add(t.savings).ok_or_else(overflow)?;
        Ok(())
    }

    fn to_json(self) -> Value {
        // A rate is not money: a float is fine. No requests, no rate.
        #[allow(clippy::cast_precision_loss)]
        let rate = (self.requests > 0).then(|| self.cache_hits as f64 / self.requests as f64);
        json!({
            "totalCost": self.cost.to_string(),
            "totalRequests": self.requests,
            "cacheHits": self.cache_hits,
            "cacheHitRate": rate,
            "savings": self.savings.to_string(),
        })
    }
}

fn find_by_id<'a>(doc: Option<&'a Value>, list: &str, id: &str) -> Option<&'a Value> {
    doc?.get(list)?
        .as_array()?
        .iter()
        .find(|v| v.get("id").and_then(Value::as_str) == Some(id))
}

fn cost_center_tag(item: Option<&Value>) -> Option<&str> {
    item?.get("tags")?.get("costCenter")?.as_str()
}

/// The client's `tags.costCenter` in `doc`, else its project's (the record's project, or the
/// client's in `doc`), else [`UNASSIGNED`].
pub fn cost_center<'a>(
    doc: Option<&'a Value>,
    project_id: Option<&str>,
    client_id: Option<&str>,
) -> &'a str {
    let client = client_id.and_then(|id| find_by_id(doc, "clients", id));
    let project_id = project_id.or_else(|| client?.get("projectId")?.as_str());
    cost_center_tag(client)
        .or_else(|| cost_center_tag(project_id.and_then(|id| find_by_id(doc, "projects", id))))
        .unwrap_or(UNASSIGNED)
}

/// The key of `t` in dimension `by`.
pub fn key_of<'a>(t: &'a UsageTotals, by: GroupBy, doc: Option<&'a Value>) -> &'a str {
    match by {
        GroupBy::Project => t.project_id.as_deref().unwrap_or(UNASSIGNED),
        GroupBy::Endpoint => t.host.as_deref().unwrap_or(UNASSIGNED),
        GroupBy::Client => t.client_id.as_deref().unwrap_or(UNASSIGNED),
        GroupBy::CostCenter => cost_center(doc, t.project_id.as_deref(), t.client_id.as_deref()),
        // The ledger does not record the model.
        GroupBy::Model => UNASSIGNED,
    }
}

/// The key of decision rows `s` in dimension `by` (the same rules as [`key_of`]).
pub fn decision_key<'a>(s: &'a DecisionStats, by: GroupBy, doc: Option<&'a Value>) -> &'a str {
    match by {
        GroupBy::Project => s.project_id.as_deref().unwrap_or(UNASSIGNED),
        GroupBy::Endpoint => s.host.as_deref().unwrap_or(UNASSIGNED),
        GroupBy::Client => s.client_id.as_deref().unwrap_or(UNASSIGNED),
        GroupBy::CostCenter => cost_center(doc, s.project_id.as_deref(), s.client_id.as_deref()),
        GroupBy::Model => s.model.as_deref().unwrap_or(UNASSIGNED),
    }
}

/// What the decision rows of a group say: denials by code, and the latencies of forwarded
/// requests (`allow`) and of cache hits, apart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    /// Denials per SPEC code (a denial without a code: [`UNASSIGNED`]).
    pub violations: BTreeMap<String, u64>,
    pub denials: u64,
    pub forwarded: LatencyHistogram,
    pub cache_hits: LatencyHistogram,
}

impl Decisions {
    pub fn add(&mut self, s: &DecisionStats) -> Result<(), AppError> {
        let overflow = || AppError::Internal("analytics sum above u64".into());
        match s.decision.as_deref() {
            Some("deny") => {
                let code = s.code.clone().unwrap_or_else(|| UNASSIGNED.into());
                let n = self.violations.entry(code).or_default();
                *n = n.checked_add(s.count).ok_or_else(overflow)?;
                self.denials = self.denials.checked_add(s.count).ok_or_else(overflow)?;
            }
            Some("allow") => self.forwarded.merge(&s.latency)?,
            Some("cache_hit") => self.cache_hits.merge(&s.latency)?,
            _ => {}
        }
        Ok(())
    }

    /// Adds `violations`, `avgLatency`, `p95Latency`, `latencySamples` and `cacheHitLatency`.
    fn insert_into(&self, o: &mut Map<String, Value>) {
        o.insert(
            "violations".into(),
            json!({ "count": self.denials, "byCode": self.violations }),
        );
        let (avg, p95, n) = latency_json(&self.forwarded);
        o.insert("avgLatency".into(), avg);
        o.insert("p95Latency".into(), p95);
        o.insert("latencySamples".into(), n);
        let (avg, p95, n) = latency_json(&self.cache_hits);
        o.insert(
            "cacheHitLatency".into(),
            json!({ "avg": avg, "p95": p95, "samples": n }),
        );
    }
}

/// (average ms, p95 ms, samples); null average and p95 without samples.
fn latency_json(h: &LatencyHistogram) -> (Value, Value, Value) {
    // Milliseconds, not money: a float average is fine.
    #[allow(clippy::cast_precision_loss)]
    let avg = (h.count > 0).then(|| h.sum_ms as f64 / h.count as f64);
    (json!(avg), json!(h.quantile(95, 100)), json!(h.count))
}

/// Decision facts per group key of `by`, and the total.
pub fn decision_groups(
    stats: &[DecisionStats],
    by: GroupBy,
    doc: Option<&Value>,
) -> Result<(BTreeMap<String, Decisions>, Decisions), AppError> {
    let mut groups = BTreeMap::<String, Decisions>::new();
    let mut all = Decisions::default();
    for s in stats {
        groups
            .entry(decision_key(s, by, doc).to_owned())
            .or_default()
            .add(s)?;
        all.add(s)?;
    }
    Ok((groups, all))
}

/// The anomalies of a group: how many, per kind, and the newest few.
#[derive(Clone, Debug, Default)]
pub struct Anomalies<'a> {
    pub count: u64,
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Newest first, at most [`LATEST_ANOMALIES`].
    pub latest: Vec<&'a Anomaly>,
}

impl Anomalies<'_> {
    fn to_json(&self) -> Value {
        let latest: Vec<Value> = self
            .latest
            .iter()
            .map(|a| {
                json!({
                    "kind": a.kind.as_str(),
                    "projectId": a.project_id,
                    "clientId": a.client_id,
                    "subject": a.subject,
                    "score": a.score,
                    "unit": a.unit.as_str(),
                    "observed": a.observed.to_string(),
                    "baseline": a.baseline.to_string(),
                    "window": { "from": rfc3339(a.window_from_ms), "to": rfc3339(a.window_to_ms) },
                    "explanation": a.explanation,
                    "at": rfc3339(a.detected_at_ms),
                })
            })
            .collect();
        json!({ "count": self.count, "byKind": self.by_kind, "latest": latest })
    }
}

/// The group of an anomaly of (project, client, subject) in dimension `by`; `None`: the
/// anomaly names nothing of that dimension (a project-wide one has no client; only
/// `new_endpoint` names an endpoint; none names a model) and is left out of its groups.
pub fn anomaly_key<'a>(
    project_id: &'a str,
    client_id: Option<&'a str>,
    subject: Option<&'a str>,
    kind: crate::store::AnomalyKind,
    by: GroupBy,
    doc: Option<&'a Value>,
) -> Option<&'a str> {
    match by {
        GroupBy::Project => Some(project_id),
        GroupBy::CostCenter => Some(cost_center(doc, Some(project_id), client_id)),
        GroupBy::Client => client_id,
        GroupBy::Endpoint => subject.filter(|_| kind == crate::store::AnomalyKind::NewEndpoint),
        GroupBy::Model => None,
    }
}

/// Anomalies per group key of `by` (`None`: the total, every anomaly under the key "").
pub fn anomaly_groups<'a>(
    range: &'a AnomalyRange,
    by: Option<GroupBy>,
    doc: Option<&'a Value>,
) -> Result<BTreeMap<String, Anomalies<'a>>, AppError> {
    let overflow = || AppError::Internal("anomaly count above u64".into());
    let key = |p: &'a str, c: Option<&'a str>, s: Option<&'a str>, k| match by {
        None => Some(""),
        Some(d) => anomaly_key(p, c, s, k, d, doc),
    };
    let mut out = BTreeMap::<String, Anomalies<'a>>::new();
    for c in &range.counts {
        let Some(k) = key(
            &c.project_id,
            c.client_id.as_deref(),
            c.subject.as_deref(),
            c.kind,
        ) else {
            continue;
        };
        let g = out.entry(k.to_owned()).or_default();
        g.count = g.count.checked_add(c.count).ok_or_else(overflow)?;
        let n = g.by_kind.entry(c.kind.as_str()).or_default();
        *n = n.checked_add(c.count).ok_or_else(overflow)?;
    }
    // `latest` is newest first over all groups, and holds the newest few of every (project,
    // client, subject): so the first few of a group met here are its newest.
    for a in &range.latest {
        let Some(k) = key(
            &a.project_id,
            a.client_id.as_deref(),
            a.subject.as_deref(),
            a.kind,
        ) else {
            continue;
        };
        if let Some(g) = out.get_mut(k) {
            if g.latest.len() < LATEST_ANOMALIES {
                g.latest.push(a);
            }
        }
    }
    Ok(out)
}

/// Sums per group key (sorted by key) and the total.
pub fn group(
    totals: &[UsageTotals],
    by: GroupBy,
    doc: Option<&Value>,
) -> Result<(BTreeMap<String, Sums>, Sums), AppError> {
    let mut groups = BTreeMap::<String, Sums>::new();
    let mut all = Sums::default();
    for t in totals {
        groups
            .entry(key_of(t, by, doc).to_owned())
            .or_default()
            .add(t)?;
        all.add(t)?;
    }
    Ok((groups, all))
}

/// The most expensive endpoints among `rows` (then most requested, then by name).
fn top_endpoints<'a>(rows: impl Iterator<Item = &'a UsageTotals>) -> Result<Value, AppError> {
    let mut by = BTreeMap::<&str, Sums>::new();
    for t in rows {
        by.entry(t.host.as_deref().unwrap_or(UNASSIGNED))
            .or_default()
            .add(t)?;
    }
    let mut v: Vec<(&str, Sums)> = by.into_iter().collect();
    v.sort_by(|a, b| {
        b.1.cost
            .cmp(&a.1.cost)
            .then_with(|| b.1.requests.cmp(&a.1.requests))
            .then_with(|| a.0.cmp(b.0))
    });
    Ok(Value::Array(
        v.into_iter()
            .take(TOP_ENDPOINTS)
            .map(|(h, s)| {
                json!({ "endpoint": h, "totalCost": s.cost.to_string(), "totalRequests": s.requests })
            })
            .collect(),
    ))
}

/// Spent against limit of one counter, as `/v1/budgets` reports it: `limit` null and no ratio
/// when the budget is unset.
pub fn utilization(doc: Option<&Value>, spent: &BTreeMap<String, u64>, counter: &str) -> Value {
    let limit = doc.and_then(|d| limit_for(d, counter));
    let used = spent.get(counter).copied().unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let ratio = limit.filter(|l| *l > 0).map(|l| used as f64 / l as f64);
    json!({
        "counter": counter,
        "spent": used.to_string(),
        "limit": limit.map(|l| l.to_string()),
        "ratio": ratio,
    })
}

/// The current month's and day's counter keys.
pub struct Keys {
    pub month: String,
    pub day: String,
}

fn budget_utilization(
    doc: Option<&Value>,
    spent: &BTreeMap<String, u64>,
    keys: &Keys,
    project: Option<&str>,
) -> Value {
    let (m, d) = match project {
        None => (
            format!("org.monthly/{}", keys.month),
            format!("org.daily/{}", keys.day),
        ),
        Some(p) => (
            format!("project.monthly/{p}/{}", keys.month),
            format!("project.daily/{p}/{}", keys.day),
        ),
    };
    json!({ "month": utilization(doc, spent, &m), "day": utilization(doc, spent, &d) })
}

/// One dimension's section: groups most expensive first, each with its sums, top endpoints,
/// decision facts, anomalies and (projects) budget utilisation. A group only the decision rows
/// or the anomalies know (a client denied every time) is there with zero sums.
#[allow(clippy::too_many_arguments)]
pub fn section(
    totals: &[UsageTotals],
    decisions: &[DecisionStats],
    anomalies: &AnomalyRange,
    by: GroupBy,
    doc: Option<&Value>,
    spent: &BTreeMap<String, u64>,
    keys: &Keys,
) -> Result<Vec<Value>, AppError> {
    let (mut groups, _) = group(totals, by, doc)?;
    let (mut facts, _) = decision_groups(decisions, by, doc)?;
    let mut found = anomaly_groups(anomalies, Some(by), doc)?;
    for k in facts.keys().chain(found.keys()) {
        groups.entry(k.clone()).or_default();
    }
    // The rows of each group, in one pass (no scan of all rows per group).
    let mut rows = BTreeMap::<&str, Vec<&UsageTotals>>::new();
    for t in totals {
        rows.entry(key_of(t, by, doc)).or_default().push(t);
    }
    let mut groups: Vec<(String, Sums)> = groups.into_iter().collect();
    // Most expensive first; the key breaks ties (stable output).
    groups.sort_by(|a, b| b.1.cost.cmp(&a.1.cost).then_with(|| a.0.cmp(&b.0)));
    let mut out = Vec::with_capacity(groups.len());
    for (k, s) in groups {
        let mut v = s.to_json();
        let top = top_endpoints(rows.get(k.as_str()).into_iter().flatten().copied())?;
        if let Some(o) = v.as_object_mut() {
            o.insert("topEndpoints".into(), top);
            facts.remove(&k).unwrap_or_default().insert_into(o);
            o.insert(
                "anomalies".into(),
                found.remove(&k).unwrap_or_default().to_json(),
            );
            if by == GroupBy::Project && k != UNASSIGNED {
                o.insert(
                    "budgetUtilization".into(),
                    budget_utilization(doc, spent, keys, Some(&k)),
                );
            }
            o.insert("key".into(), Value::String(k));
        }
        out.push(v);
    }
    Ok(out)
}

// === series ===

/// The start of the `interval` bucket (in `tz`) holding instant `t_ms`.
fn bucket_start<Z: TimeZone>(tz: &Z, interval: Interval, t_ms: i64) -> Option<i64> {
    let t = DateTime::<Utc>::from_timestamp_millis(t_ms)?;
    match interval {
        Interval::Hour => {
            let off = i64::from(t.with_timezone(tz).offset().fix().local_minus_utc()) * 1000;
            Some(t_ms - (t_ms + off).rem_euclid(3_600_000))
        }
        Interval::Day => {
            start_of(tz, t.with_timezone(tz).date_naive()).map(|d| d.timestamp_millis())
        }
    }
}

/// Every bucket start in `[from, to)`, or an error past [`MAX_POINTS`].
pub fn bucket_starts<Z: TimeZone>(
    tz: &Z,
    interval: Interval,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<i64>, AppError> {
    let step = match interval {
        Interval::Hour => 3_600_000,
        Interval::Day => 86_400_000,
    };
    let mut out = Vec::new();
    let mut cur = bucket_start(tz, interval, from_ms).unwrap_or(from_ms);
    while cur < to_ms {
        if out.len() >= MAX_POINTS {
            return Err(AppError::BadRequest {
                code: "BAD_QUERY",
                message: "unsupported analytics query".into(),
                details: vec![format!(
                    "interval: more than {MAX_POINTS} points; use a wider interval or a shorter range"
                )],
            });
        }
        out.push(cur.max(from_ms));
        // The next bucket starts within two steps (DST days are 23 to 25 hours).
        let next = (1..=2)
            .filter_map(|n| bucket_start(tz, interval, cur + n * step))
            .find(|n| *n > cur);
        match next {
            Some(n) => cur = n,
            None => break,
        }
    }
    Ok(out)
}

/// One series point: the ledger's sums and the decision rows' facts of a bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Point {
    pub sums: Sums,
    pub decisions: Decisions,
}

fn point(start: i64, p: &Point) -> Value {
    let mut v = p.sums.to_json();
    if let Some(o) = v.as_object_mut() {
        o.insert("start".into(), Value::String(rfc3339(start)));
        p.decisions.insert_into(o);
    }
    v
}

/// Per group of `by` (and `None`: the total), sums and decision facts per bucket start;
/// buckets with neither usage nor decision rows are absent.
#[allow(clippy::too_many_arguments)]
pub fn series<Z: TimeZone>(
    buckets: &[UsageBucket],
    decisions: &[DecisionBucket],
    by: Option<GroupBy>,
    doc: Option<&Value>,
    tz: &Z,
    interval: Interval,
    from_ms: i64,
) -> Result<BTreeMap<String, BTreeMap<i64, Point>>, AppError> {
    let start_of = |ms: i64| {
        bucket_start(tz, interval, ms)
            .map(|s| s.max(from_ms))
            .ok_or_else(|| AppError::Internal("bucket out of range".into()))
    };
    let mut out = BTreeMap::<String, BTreeMap<i64, Point>>::new();
    for b in buckets {
        let key = by.map_or("", |d| key_of(&b.totals, d, doc));
        out.entry(key.to_owned())
            .or_default()
            .entry(start_of(b.start_ms)?)
            .or_default()
            .sums
            .add(&b.totals)?;
    }
    for b in decisions {
        let key = by.map_or("", |d| decision_key(&b.stats, d, doc));
        out.entry(key.to_owned())
            .or_default()
            .entry(start_of(b.start_ms)?)
            .or_default()
            .decisions
            .add(&b.stats)?;
    }
    Ok(out)
}

fn series_json(s: &BTreeMap<i64, Point>) -> Value {
    Value::Array(s.iter().map(|(t, v)| point(*t, v)).collect())
}

/// `v.k`, null when absent.
fn field<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.get(k).unwrap_or(&Value::Null)
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    field(v, k).as_str().unwrap_or_default()
}

// === csv ===

fn csv_of(body: &Value) -> Result<String, AppError> {
    let err = |e: csv::Error| AppError::Internal(format!("csv: {e}"));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "dimension",
        "key",
        "start",
        "totalCost",
        "totalRequests",
        "cacheHits",
        "cacheHitRate",
        "savings",
        "violations",
        "avgLatency",
        "p95Latency",
        "anomalies",
    ])
    .map_err(err)?;
    let mut row = |dim: &str, key: &str, start: &str, g: &Value| -> Result<(), csv::Error> {
        let num = |f: &str| match field(g, f) {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            v => v.to_string(),
        };
        let count = |f: &str| match field(field(g, f), "count") {
            Value::Null => String::new(),
            v => v.to_string(),
        };
        // Series points carry no anomalies: empty there.
        let (violations, anomalies) = (count("violations"), count("anomalies"));
        w.write_record([
            dim,
            key,
            start,
            &num("totalCost"),
            &num("totalRequests"),
            &num("cacheHits"),
            &num("cacheHitRate"),
            &num("savings"),
            &violations,
            &num("avgLatency"),
            &num("p95Latency"),
            &anomalies,
        ])
    };
    let list = |v: &Value, k: &str| field(v, k).as_array().cloned().unwrap_or_default();
    for sec in list(body, "sections") {
        let dim = text(&sec, "groupBy");
        for g in list(&sec, "groups") {
            row(dim, text(&g, "key"), "", &g).map_err(err)?;
        }
        for s in list(&sec, "series") {
            for p in list(&s, "points") {
                row(dim, text(&s, "key"), text(&p, "start"), &p).map_err(err)?;
            }
        }
    }
    row("total", "", "", field(body, "total")).map_err(err)?;
    for p in list(body, "totalSeries") {
        row("total", "", text(&p, "start"), &p).map_err(err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| AppError::Internal(format!("csv: {e}")))?;
    String::from_utf8(bytes).map_err(|e| AppError::Internal(format!("csv: {e}")))
}

// === the route ===

pub async fn get(
    _: Admin,
    State(state): State<AppState>,
    query: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(q) = query.map_err(|e| AppError::bad_request("BAD_QUERY", e.body_text()))?;
    let parsed = parse_query(&q)?;
    let body = report(&state, &parsed).await?;
    if parsed.csv {
        let text = csv_of(&body)?;
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], text).into_response());
    }
    Ok(Json(body).into_response())
}

/// The analytics answer for `parsed`, as JSON (the CLI and the CSV read the same).
/// `estimates`: per catalogue entry that learns (of the current policy, at its current prices),
/// what the fleet's believed reports settled at against the catalogue's estimates, since the
/// store began (docs/estimates.md). Money and
/// ratios are decimal strings (ratios in per-mille: `"120000"` = 120×).
pub fn estimates_json(rows: &[crate::store::LearnedRow]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "endpoint": pag0_policy::learn::key_host(&r.key),
                    "key": r.key,
                    "samples": r.learned.samples,
                    "estimateSum": r.estimate_sum.to_string(),
                    "actualSum": r.actual_sum.to_string(),
                    "ratioPermille": r.ratio_permille().map(|v| v.to_string()),
                    "learnedPermille": r.learned.high_permille.to_string(),
                    "updatedAt": rfc3339(r.updated_at_ms),
                })
            })
            .collect(),
    )
}

pub async fn report(state: &AppState, parsed: &Parsed) -> Result<Value, AppError> {
    let policy = state.current_policy().await?;
    let doc = policy.as_ref().map(|p| &p.value);
    // Validated on PUT, so it parses; no policy (or no field) is UTC, as in the filter.
    let tz_name = doc
        .and_then(|d| d.get("timezone"))
        .and_then(Value::as_str)
        .unwrap_or("UTC");
    let tz = pag0_policy::period::parse_tz(tz_name)
        .ok_or_else(|| AppError::Internal(format!("stored policy has timezone {tz_name:?}")))?;
    let now_ms = state.clock.now_ms();
    let now = DateTime::<Utc>::from_timestamp_millis(now_ms)
        .ok_or_else(|| AppError::Internal("clock out of range".into()))?;
    let out_of_range = || AppError::Internal("period out of range".into());
    let (from, to) = match (parsed.period, parsed.range) {
        (Some(p), _) => bounds(now, &tz, p).ok_or_else(out_of_range)?,
        (None, Some(r)) => r,
        (None, None) => bounds(now, &tz, Period::Month).ok_or_else(out_of_range)?,
    };
    let (from_ms, to_ms) = (from.timestamp_millis(), to.timestamp_millis());
    let keys = Keys {
        month: pag0_policy::period::month_key(now, tz),
        day: pag0_policy::period::day_key(now, tz),
    };
    let (month_from, month_to) = bounds(now, &tz, Period::Month).ok_or_else(out_of_range)?;
    let (month_from_ms, month_to_ms) = (month_from.timestamp_millis(), month_to.timestamp_millis());

    // Refused before any query when too long.
    let starts = match parsed.interval {
        Some(i) => Some(bucket_starts(&tz, i, from_ms, to_ms)?),
        None => None,
    };
    let totals = state.store.usage_totals(from_ms, to_ms).await?;
    let decisions = state.store.decision_stats(from_ms, to_ms).await?;
    let (month, month_decisions) = if parsed.period == Some(Period::Month) {
        (totals.clone(), decisions.clone())
    } else {
        (
            state.store.usage_totals(month_from_ms, month_to_ms).await?,
            state
                .store
                .decision_stats(month_from_ms, month_to_ms)
                .await?,
        )
    };
    let spent: BTreeMap<String, u64> = state
        .store
        .counters(now_ms)
        .await?
        .into_iter()
        .map(|c| (c.counter, c.spent))
        .collect();
    let approvals = state.store.approvals(None, APPROVALS_READ).await?;
    // Only the current catalogue's entries (a price change starts a fresh key).
    let current: std::collections::BTreeSet<String> = doc
        .and_then(|d| pag0_policy::CompiledPolicy::from_value(d).ok())
        .map(|p| p.learn_keys().map(String::from).collect())
        .unwrap_or_default();
    let learned: Vec<crate::store::LearnedRow> = state
        .store
        .learned()
        .await?
        .into_iter()
        .filter(|r| current.contains(&r.key))
        .collect();
    let latest = u32::try_from(LATEST_ANOMALIES).unwrap_or(u32::MAX);
    let anomalies = state.store.anomalies_in(from_ms, to_ms, latest).await?;

    let buckets = match &starts {
        Some(starts) => Some((
            state
                .store
                .usage_buckets(from_ms, to_ms, store_bucket(starts))
                .await?,
            state
                .store
                .decision_buckets(from_ms, to_ms, store_bucket(starts))
                .await?,
        )),
        None => None,
    };
    let mut sections = Vec::with_capacity(parsed.dims.len());
    for &dim in &parsed.dims {
        let mut sec = Map::new();
        sec.insert("groupBy".into(), json!(dim.name()));
        sec.insert(
            "groups".into(),
            Value::Array(section(
                &totals, &decisions, &anomalies, dim, doc, &spent, &keys,
            )?),
        );
        if let (Some(interval), Some((b, d))) = (parsed.interval, &buckets) {
            let s = series(b, d, Some(dim), doc, &tz, interval, from_ms)?;
            let s = s
                .iter()
                .map(|(k, pts)| json!({ "key": k, "points": series_json(pts) }))
                .collect();
            sec.insert("series".into(), Value::Array(s));
        }
        sections.push(Value::Object(sec));
    }
    let (_, all) = group(&totals, GroupBy::Project, doc)?;
    let (_, all_decisions) = decision_groups(&decisions, GroupBy::Project, doc)?;
    let mut total = all.to_json();
    if let Some(o) = total.as_object_mut() {
        o.insert("topEndpoints".into(), top_endpoints(totals.iter())?);
        all_decisions.insert_into(o);
        let all_anomalies = anomaly_groups(&anomalies, None, doc)?;
        o.insert(
            "anomalies".into(),
            all_anomalies.get("").cloned().unwrap_or_default().to_json(),
        );
        o.insert(
            "budgetUtilization".into(),
            budget_utilization(doc, &spent, &keys, None),
        );
    }
    let org_month = utilization(doc, &spent, &format!("org.monthly/{}", keys.month));
    let recommendations = recommend::recommend(&recommend::Inputs {
        doc,
        month: &month,
        month_decisions: &month_decisions,
        month_from_ms,
        month_to_ms,
        now_ms,
        spent: &spent,
        month_key: &keys.month,
        approvals: &approvals,
        learned: &learned,
    });
    let first = sections.first().cloned().unwrap_or(Value::Null);
    let mut body = Map::new();
    let period = match parsed.period {
        Some(Period::Day) => "day",
        Some(Period::Month) => "month",
        None => "range",
    };
    body.insert("period".into(), json!(period));
    if let Some(p) = parsed.period {
        let key = match p {
            Period::Day => &keys.day,
            Period::Month => &keys.month,
        };
        body.insert("periodKey".into(), json!(key));
    }
    body.insert("timezone".into(), json!(tz_name));
    body.insert("from".into(), json!(rfc3339(from_ms)));
    body.insert("to".into(), json!(rfc3339(to_ms)));
    // The first dimension, as before multi-dimension sections (the console reads these).
    body.insert("groupBy".into(), field(&first, "groupBy").clone());
    body.insert("groups".into(), field(&first, "groups").clone());
    body.insert(
        "dimensions".into(),
        json!(parsed.dims.iter().map(|d| d.name()).collect::<Vec<_>>()),
    );
    body.insert("sections".into(), Value::Array(sections));
    body.insert(
        "policyVersion".into(),
        json!(policy.as_ref().map_or(0, |p| p.meta.version)),
    );
    body.insert("total".into(), total);
    body.insert("totalBudget".into(), field(&org_month, "limit").clone());
    body.insert("utilizationRate".into(), field(&org_month, "ratio").clone());
    body.insert("recommendations".into(), Value::Array(recommendations));
    body.insert("estimates".into(), estimates_json(&learned));
    if let (Some(interval), Some((b, d))) = (parsed.interval, &buckets) {
        let name = match interval {
            Interval::Hour => "hour",
            Interval::Day => "day",
        };
        body.insert("interval".into(), json!(name));
        let starts: Vec<Value> = starts
            .unwrap_or_default()
            .into_iter()
            .map(|t| Value::String(rfc3339(t)))
            .collect();
        body.insert("buckets".into(), Value::Array(starts));
        let s = series(b, d, None, doc, &tz, interval, from_ms)?;
        body.insert(
            "totalSeries".into(),
            s.get("").map_or(Value::Array(vec![]), series_json),
        );
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests;
