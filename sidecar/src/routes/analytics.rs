//! `GET /v1/analytics?period=day|month&groupBy=project|costCenter|endpoint`: the usage ledger
//! of the current calendar day or month (org timezone), summed per group. What the ledger can
//! answer: cost, requests, cache hits and savings. SPEC §7 lists more (avgLatency,
//! budgetUtilization, violations, anomalies, recommendations); nothing records them yet, so
//! they are left out rather than made up.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Admin;
use crate::clock::rfc3339;
use crate::error::AppError;
use crate::store::UsageTotals;
use crate::AppState;

/// The group of records without the fact a dimension needs (or a cost centre nobody tagged).
pub const UNASSIGNED: &str = "unassigned";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalyticsQuery {
    #[serde(default)]
    period: Option<String>,
    #[serde(default)]
    group_by: Option<String>,
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
}

impl GroupBy {
    fn name(self) -> &'static str {
        match self {
            GroupBy::Project => "project",
            GroupBy::CostCenter => "costCenter",
            GroupBy::Endpoint => "endpoint",
        }
    }
}

fn parse_query(q: &AnalyticsQuery) -> Result<(Period, GroupBy), AppError> {
    let mut errs = Vec::new();
    let period = match q.period.as_deref().unwrap_or("month") {
        "month" => Some(Period::Month),
        "day" => Some(Period::Day),
        other => {
            errs.push(format!("period: {other:?} is not one of day, month"));
            None
        }
    };
    let group_by = match q.group_by.as_deref().unwrap_or("project") {
        "project" => Some(GroupBy::Project),
        "costCenter" => Some(GroupBy::CostCenter),
        "endpoint" => Some(GroupBy::Endpoint),
        other => {
            errs.push(format!(
                "groupBy: {other:?} is not one of project, costCenter, endpoint (one per call)"
            ));
            None
        }
    };
    match (period, group_by) {
        (Some(p), Some(g)) if errs.is_empty() => Ok((p, g)),
        _ => Err(AppError::BadRequest {
            code: "BAD_QUERY",
            message: "unsupported analytics query".into(),
            details: errs,
        }),
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

/// Sums per group key (sorted by key) and the total.
pub fn group(
    totals: &[UsageTotals],
    by: GroupBy,
    doc: Option<&Value>,
) -> Result<(BTreeMap<String, Sums>, Sums), AppError> {
    let mut groups = BTreeMap::<String, Sums>::new();
    let mut all = Sums::default();
    for t in totals {
        let key = match by {
            GroupBy::Project => t.project_id.as_deref().unwrap_or(UNASSIGNED),
            GroupBy::Endpoint => t.host.as_deref().unwrap_or(UNASSIGNED),
            GroupBy::CostCenter => {
                cost_center(doc, t.project_id.as_deref(), t.client_id.as_deref())
            }
        };
        groups.entry(key.to_owned()).or_default().add(t)?;
        all.add(t)?;
    }
    Ok((groups, all))
}

pub async fn get(
    _: Admin,
    State(state): State<AppState>,
    query: Result<Query<AnalyticsQuery>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(q) = query.map_err(|e| AppError::bad_request("BAD_QUERY", e.body_text()))?;
    let (period, by) = parse_query(&q)?;
    let policy = state.current_policy().await?;
    let doc = policy.as_ref().map(|p| &p.value);
    // Validated on PUT, so it parses; no policy (or no field) is UTC, as in the filter.
    let tz_name = doc
        .and_then(|d| d.get("timezone"))
        .and_then(Value::as_str)
        .unwrap_or("UTC");
    let tz = pag0_policy::period::parse_tz(tz_name)
        .ok_or_else(|| AppError::Internal(format!("stored policy has timezone {tz_name:?}")))?;
    let now = DateTime::<Utc>::from_timestamp_millis(state.clock.now_ms())
        .ok_or_else(|| AppError::Internal("clock out of range".into()))?;
    let (from, to) =
        bounds(now, &tz, period).ok_or_else(|| AppError::Internal("period out of range".into()))?;
    let key = match period {
        Period::Day => pag0_policy::period::day_key(now, tz),
        Period::Month => pag0_policy::period::month_key(now, tz),
    };
    let totals = state
        .store
        .usage_totals(from.timestamp_millis(), to.timestamp_millis())
        .await?;
    let (groups, all) = group(&totals, by, doc)?;
    let mut groups: Vec<(String, Sums)> = groups.into_iter().collect();
    // Most expensive first; the key breaks ties (stable output).
    groups.sort_by(|a, b| b.1.cost.cmp(&a.1.cost).then_with(|| a.0.cmp(&b.0)));
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(k, s)| {
            let mut v = s.to_json();
            if let Some(o) = v.as_object_mut() {
                o.insert("key".into(), Value::String(k));
            }
            v
        })
        .collect();
    Ok(Json(json!({
        "period": match period { Period::Day => "day", Period::Month => "month" },
        "periodKey": key,
        "timezone": tz_name,
        "from": rfc3339(from.timestamp_millis()),
        "to": rfc3339(to.timestamp_millis()),
        "groupBy": by.name(),
        "policyVersion": policy.as_ref().map_or(0, |p| p.meta.version),
        "groups": groups,
        "total": all.to_json(),
    })))
}

#[cfg(test)]
mod tests;
