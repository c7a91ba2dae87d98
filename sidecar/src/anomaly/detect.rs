//! The detector: pure (no I/O, no clock), hourly ledger rows in, anomalies out
//! (docs/anomalies.md). Money is integer micro-USD in and out; floats appear only in the
//! statistics (log ratios and robust scores).
//!
//! Kinds:
//! - `spend_spike` / `request_spike`: one hour of a project's or a client's spend or request
//!   count against a seasonal baseline — the median of the same hour-of-week in the other weeks
//!   of the window when the series has ≥ 2 weeks of history, of the same hour-of-day on the
//!   other days otherwise. The log ratio observed/baseline of every active hour is scored with
//!   augurs' MAD detector (double median absolute deviation), so the threshold is in robust
//!   standard deviations of the series' own noise.
//! - `costly_request`: a client's largest request in an hour against its usual largest request
//!   per active hour (MAD over the log of those maxima).
//! - `new_endpoint`: a client's first request to an upstream host, after enough history.
//! - `off_hours_burst`: many requests in an hour of the day in which the client was (almost)
//!   never active.

use std::collections::{BTreeMap, BTreeSet};

use augurs_outlier::{MADDetector, OutlierDetector};
use chrono::{DateTime, Timelike, Utc};

use crate::store::{Anomaly, AnomalyKind, HourlyUsage, Unit};

pub const HOUR_MS: i64 = 3_600_000;
const DAY_HOURS: usize = 24;
const WEEK_HOURS: usize = 7 * 24;

/// The group of rows without a project or client.
pub const UNASSIGNED: &str = "unassigned";

/// Thresholds (docs/anomalies.md, "Tuning").
#[derive(Clone, Debug)]
pub struct Params {
    /// Robust z-score (MAD units) an hour must exceed.
    pub threshold: f64,
    /// Observed must be at least this multiple of the baseline (spikes).
    pub min_ratio: f64,
    /// … and exceed it by this much: micro-USD for spend.
    pub min_spend_delta: u64,
    /// … and this many requests for request counts.
    pub min_request_delta: u64,
    /// A costly request is at least this multiple of the client's usual largest per hour …
    pub costly_min_ratio: f64,
    /// … and at least this many micro-USD.
    pub costly_min_amount: u64,
    /// Days a client must have been seen before a new endpoint or odd hour counts.
    pub min_history_days: usize,
    /// An hour of the day is "unusual" for a client active in it on at most this share of days.
    pub off_hours_max_share: f64,
    /// Requests in one unusual hour that make a burst.
    pub burst_min_requests: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            threshold: 6.0,
            min_ratio: 3.0,
            min_spend_delta: 1_000_000,
            min_request_delta: 30,
            costly_min_ratio: 10.0,
            costly_min_amount: 1_000_000,
            min_history_days: 3,
            off_hours_max_share: 0.05,
            burst_min_requests: 20,
        }
    }
}

/// What to look at: `rows` cover `[from_ms, to_ms)` (hour-aligned); anomalies are reported for
/// windows starting at or after `report_from_ms`.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub rows: &'a [HourlyUsage],
    pub from_ms: i64,
    pub to_ms: i64,
    pub report_from_ms: i64,
    /// Stamped on each anomaly as `detected_at_ms`.
    pub now_ms: i64,
}

/// One series: dense per-hour values over the window.
#[derive(Default)]
struct Series {
    cost: Vec<u64>,
    requests: Vec<u64>,
    max_amount: Vec<u64>,
    /// Hour index of each host's first request, and its requests / cost in that hour.
    hosts: BTreeMap<String, (usize, u64, u64)>,
}

impl Series {
    fn new(n: usize) -> Self {
        Series {
            cost: vec![0; n],
            requests: vec![0; n],
            max_amount: vec![0; n],
            hosts: BTreeMap::new(),
        }
    }

    fn first_active(&self) -> Option<usize> {
        self.requests.iter().position(|&r| r > 0)
    }
}

fn name(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| UNASSIGNED.to_string())
}

/// Runs every kind over the input; sorted by window, then kind, project, client.
pub fn detect(input: &Input<'_>, params: &Params) -> Vec<Anomaly> {
    let n = usize::try_from(input.to_ms.saturating_sub(input.from_ms) / HOUR_MS).unwrap_or(0);
    if n == 0 {
        return Vec::new();
    }
    // (project, None) is the project's total; (project, Some(client)) one client.
    let mut series: BTreeMap<(String, Option<String>), Series> = BTreeMap::new();
    for row in input.rows {
        let Some(i) = hour_index(input.from_ms, row.hour_ms, n) else {
            continue;
        };
        let project = name(&row.project_id);
        for client in [None, Some(name(&row.client_id))] {
            let is_client = client.is_some();
            let s = series
                .entry((project.clone(), client))
                .or_insert_with(|| Series::new(n));
            add(&mut s.cost, i, row.cost);
            add(&mut s.requests, i, row.requests);
            if let Some(m) = s.max_amount.get_mut(i) {
                *m = (*m).max(row.max_amount);
            }
            if is_client {
                let host = name(&row.host);
                let e = s.hosts.entry(host).or_insert((i, 0, 0));
                if i < e.0 {
                    *e = (i, 0, 0);
                }
                if i == e.0 {
                    e.1 = e.1.saturating_add(row.requests);
                    e.2 = e.2.saturating_add(row.cost);
                }
            }
        }
    }

    let ctx = Ctx {
        input,
        params,
        report_from: usize::try_from(
            input.report_from_ms.saturating_sub(input.from_ms).max(0) / HOUR_MS,
        )
        .unwrap_or(0),
    };
    let mut out = Vec::new();
    for ((project, client), s) in &series {
        let who = Who {
            project,
            client: client.as_deref(),
        };
        ctx.spikes(&who, s, Unit::UsdMicros, &s.cost, &mut out);
        ctx.spikes(&who, s, Unit::Requests, &s.requests, &mut out);
        if client.is_some() {
            ctx.costly(&who, s, &mut out);
            ctx.new_endpoints(&who, s, &mut out);
            ctx.off_hours(&who, s, &mut out);
        }
    }
    out.sort_by(|a, b| {
        (a.window_from_ms, a.kind, &a.project_id, &a.client_id).cmp(&(
            b.window_from_ms,
            b.kind,
            &b.project_id,
            &b.client_id,
        ))
    });
    out
}

fn hour_index(from_ms: i64, hour_ms: i64, n: usize) -> Option<usize> {
    if hour_ms < from_ms {
        return None;
    }
    usize::try_from(hour_ms.checked_sub(from_ms)? / HOUR_MS)
        .ok()
        .filter(|&i| i < n)
}

fn add(v: &mut [u64], i: usize, x: u64) {
    if let Some(slot) = v.get_mut(i) {
        *slot = slot.saturating_add(x);
    }
}

/// The median of integers, as an integer (the lower middle and upper middle averaged).
fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let mid = v.len() / 2;
    let hi = *v.get(mid)?;
    if v.len() % 2 == 1 {
        Some(hi)
    } else {
        let lo = *v.get(mid - 1)?;
        Some(lo / 2 + hi / 2 + (lo % 2 + hi % 2) / 2)
    }
}

/// Robust scores of `values` with augurs' MAD detector; `None` when the spread is zero or the
/// series too short to estimate it.
fn mad_scores(values: &[f64]) -> Option<Vec<f64>> {
    if values.len() < 8 {
        return None;
    }
    let detector = MADDetector::with_threshold(f64::MAX);
    let pre = detector.preprocess(&[values]).ok()?;
    let out = detector.detect(&pre).ok()?;
    out.series_results.into_iter().next().map(|s| s.scores)
}

#[allow(clippy::cast_precision_loss)] // statistics only: counts and micro-USD far below 2^53
fn f(x: u64) -> f64 {
    x as f64
}

struct Who<'a> {
    project: &'a str,
    client: Option<&'a str>,
}

impl Who<'_> {
    fn label(&self) -> String {
        match self.client {
            Some(c) => format!("{c} ({})", self.project),
            None => self.project.to_string(),
        }
    }
}

struct Ctx<'a> {
    input: &'a Input<'a>,
    params: &'a Params,
    report_from: usize,
}

impl Ctx<'_> {
    fn hour_start(&self, i: usize) -> i64 {
        let i = i64::try_from(i).unwrap_or(i64::MAX / HOUR_MS);
        self.input.from_ms.saturating_add(i.saturating_mul(HOUR_MS))
    }

    #[allow(clippy::too_many_arguments)]
    fn anomaly(
        &self,
        kind: AnomalyKind,
        who: &Who<'_>,
        subject: Option<String>,
        unit: Unit,
        i: usize,
        (score, baseline, observed): (f64, u64, u64),
        explanation: String,
    ) -> Anomaly {
        let from = self.hour_start(i);
        Anomaly {
            kind,
            project_id: who.project.to_string(),
            client_id: who.client.map(str::to_string),
            subject,
            score: if score.is_finite() { score } else { 0.0 },
            baseline,
            observed,
            unit,
            window_from_ms: from,
            window_to_ms: from.saturating_add(HOUR_MS),
            explanation,
            detected_at_ms: self.input.now_ms,
        }
    }

    /// Seasonal baseline of hour `i`: the median of the same hour-of-week in the other weeks
    /// (≥ 2 weeks of history) or of the same hour-of-day on the other days.
    fn baselines(&self, s: &Series, values: &[u64]) -> (Vec<u64>, bool) {
        let n = values.len();
        let start = s.first_active().unwrap_or(0);
        let weekly = n.saturating_sub(start) >= 2 * WEEK_HOURS;
        let period = if weekly { WEEK_HOURS } else { DAY_HOURS };
        let base = (0..n)
            .map(|i| {
                let others: Vec<u64> = (i % period..n)
                    .step_by(period)
                    .filter(|&j| j != i && j >= start)
                    .filter_map(|j| values.get(j).copied())
                    .collect();
                median(others).unwrap_or(0)
            })
            .collect();
        (base, weekly)
    }

    fn spikes(
        &self,
        who: &Who<'_>,
        s: &Series,
        unit: Unit,
        values: &[u64],
        out: &mut Vec<Anomaly>,
    ) {
        let p = self.params;
        let min_delta = match unit {
            Unit::UsdMicros => p.min_spend_delta,
            Unit::Requests => p.min_request_delta,
        };
        let (base, weekly) = self.baselines(s, values);
        // Log ratio with a pseudo-count of half the minimum delta: quiet hours stay near 0.
        let c = f(min_delta.max(2)) / 2.0;
        let active: Vec<usize> = (0..values.len())
            .filter(|&i| {
                values.get(i).copied().unwrap_or(0) > 0 || base.get(i).copied().unwrap_or(0) > 0
            })
            .collect();
        let resid: Vec<f64> = active
            .iter()
            .map(|&i| {
                let o = f(values.get(i).copied().unwrap_or(0));
                let b = f(base.get(i).copied().unwrap_or(0));
                ((o + c) / (b + c)).ln()
            })
            .collect();
        let scores = mad_scores(&resid);
        for (k, &i) in active.iter().enumerate() {
            if i < self.report_from {
                continue;
            }
            let o = values.get(i).copied().unwrap_or(0);
            let b = base.get(i).copied().unwrap_or(0);
            let score = match &scores {
                Some(sc) => sc.get(k).copied().unwrap_or(f64::NAN),
                // No spread to measure: only a very large jump counts.
                None => resid.get(k).copied().unwrap_or(0.0) / 0.25,
            };
            let big = f(o) >= p.min_ratio * f(b) && o.saturating_sub(b) >= min_delta;
            if !(score > p.threshold && big) {
                continue;
            }
            let from = self.hour_start(i);
            let slot = slot_name(from, weekly);
            let (kind, what) = match unit {
                Unit::UsdMicros => (
                    AnomalyKind::SpendSpike,
                    format!(
                        "{} spent {} in {}, {} its usual {} for {slot}",
                        who.label(),
                        usd(o),
                        hour_range(from),
                        times(o, b),
                        usd(b)
                    ),
                ),
                Unit::Requests => (
                    AnomalyKind::RequestSpike,
                    format!(
                        "{} sent {o} requests in {}, {} its usual {b} for {slot}",
                        who.label(),
                        hour_range(from),
                        times(o, b)
                    ),
                ),
            };
            out.push(self.anomaly(kind, who, None, unit, i, (score, b, o), what));
        }
    }

    fn costly(&self, who: &Who<'_>, s: &Series, out: &mut Vec<Anomaly>) {
        let p = self.params;
        let active: Vec<usize> = (0..s.max_amount.len())
            .filter(|&i| s.max_amount.get(i).copied().unwrap_or(0) > 0)
            .collect();
        let maxima: Vec<u64> = active
            .iter()
            .filter_map(|&i| s.max_amount.get(i).copied())
            .collect();
        let Some(usual) = median(maxima.clone()) else {
            return;
        };
        let logs: Vec<f64> = maxima.iter().map(|&m| f(m).ln()).collect();
        let scores = mad_scores(&logs);
        for (k, &i) in active.iter().enumerate() {
            if i < self.report_from {
                continue;
            }
            let m = maxima.get(k).copied().unwrap_or(0);
            let score = scores
                .as_ref()
                .and_then(|sc| sc.get(k).copied())
                .unwrap_or(f64::INFINITY);
            if !(score > p.threshold
                && f(m) >= p.costly_min_ratio * f(usual)
                && m >= p.costly_min_amount)
            {
                continue;
            }
            let from = self.hour_start(i);
            let what = format!(
                "{} made one request costing {} in {}, {} its usual largest request of {} per active hour",
                who.label(),
                usd(m),
                hour_range(from),
                times(m, usual),
                usd(usual)
            );
            out.push(self.anomaly(
                AnomalyKind::CostlyRequest,
                who,
                None,
                Unit::UsdMicros,
                i,
                (score, usual, m),
                what,
            ));
        }
    }

    fn new_endpoints(&self, who: &Who<'_>, s: &Series, out: &mut Vec<Anomaly>) {
        let Some(start) = s.first_active() else {
            return;
        };
        let min_hours = self.params.min_history_days.saturating_mul(DAY_HOURS);
        for (host, &(i, requests, cost)) in &s.hosts {
            if i < self.report_from || i < start.saturating_add(min_hours) {
                continue;
            }
            let known: Vec<&str> = s
                .hosts
                .iter()
                .filter(|(_, &(j, _, _))| j < i)
                .map(|(h, _)| h.as_str())
                .collect();
            let days = (i - start) / DAY_HOURS;
            let from = self.hour_start(i);
            let what = format!(
                "{} called {host} for the first time in {} ({requests} requests, {}), after {days} days on {}",
                who.label(),
                hour_range(from),
                usd(cost),
                if known.is_empty() { "no other host".to_string() } else { known.join(", ") }
            );
            out.push(self.anomaly(
                AnomalyKind::NewEndpoint,
                who,
                Some(host.clone()),
                Unit::Requests,
                i,
                (f(u64::try_from(days).unwrap_or(0)), 0, requests),
                what,
            ));
        }
    }

    fn off_hours(&self, who: &Who<'_>, s: &Series, out: &mut Vec<Anomaly>) {
        let p = self.params;
        let Some(start) = s.first_active() else {
            return;
        };
        let n = s.requests.len();
        // Active days per hour of day, from the client's first day on.
        let first_day = start / DAY_HOURS;
        let days = n.div_ceil(DAY_HOURS).saturating_sub(first_day);
        if days < p.min_history_days.saturating_add(1) {
            return;
        }
        let mut active = [0usize; DAY_HOURS];
        for (i, &r) in s.requests.iter().enumerate().skip(first_day * DAY_HOURS) {
            if r > 0 {
                if let Some(a) = active.get_mut(i % DAY_HOURS) {
                    *a += 1;
                }
            }
        }
        // ≥ 1: `days` ≥ 2 unless min_history_days is 0.
        let other_days = days.saturating_sub(1).max(1);
        let usual = usual_hours(&active, days);
        let typical = median(s.requests.iter().copied().filter(|&r| r > 0).collect()).unwrap_or(0);
        for (i, &r) in s.requests.iter().enumerate() {
            if i < self.report_from
                || r < p.burst_min_requests
                || i < start.saturating_add(p.min_history_days * DAY_HOURS)
            {
                continue;
            }
            // This hour's own day does not count towards "usual".
            let seen = active
                .get(i % DAY_HOURS)
                .copied()
                .unwrap_or(0)
                .saturating_sub(1);
            #[allow(clippy::cast_precision_loss)]
            let share = seen as f64 / other_days as f64;
            if share > p.off_hours_max_share {
                continue;
            }
            let from = self.hour_start(i);
            let what = format!(
                "{} sent {r} requests in {}, an hour of the day it was active in on {seen} of {other_days} other days (usually active {usual}; typically {typical} requests per active hour)",
                who.label(),
                hour_range(from),
            );
            out.push(self.anomaly(
                AnomalyKind::OffHoursBurst,
                who,
                None,
                Unit::Requests,
                i,
                (f(r) / f(typical.max(1)), typical, r),
                what,
            ));
        }
    }
}

/// "08:00–19:00 UTC": the hours active on at least half the days (first to last), or "never".
fn usual_hours(active: &[usize; DAY_HOURS], days: usize) -> String {
    let busy: BTreeSet<usize> = (0..DAY_HOURS)
        .filter(|&h| active.get(h).copied().unwrap_or(0) * 2 >= days)
        .collect();
    match (busy.first(), busy.last()) {
        (Some(a), Some(b)) => format!("{a:02}:00–{:02}:00 UTC", b + 1),
        _ => "at no regular hour".to_string(),
    }
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// "Tue 2026-11-03 03:00–04:00 UTC".
fn hour_range(from_ms: i64) -> String {
    let t = at(from_ms);
    let end = at(from_ms.saturating_add(HOUR_MS));
    format!(
        "{} {:02}:00–{:02}:00 UTC",
        t.format("%a %Y-%m-%d"),
        t.hour(),
        end.hour()
    )
}

/// "Tuesday 03:00" (hour-of-week) or "03:00" (hour-of-day).
fn slot_name(from_ms: i64, weekly: bool) -> String {
    let t = at(from_ms);
    if weekly {
        t.format("%A %H:00").to_string()
    } else {
        format!("{:02}:00", t.hour())
    }
}

/// "12.1×" or "well above" when the baseline is 0.
fn times(observed: u64, baseline: u64) -> String {
    if baseline == 0 {
        "far above".to_string()
    } else {
        format!("{:.1}×", f(observed) / f(baseline))
    }
}

/// Micro-USD as dollars: "$4.10" (cents, rounded), "$0.0042" under a cent.
pub fn usd(micros: u64) -> String {
    if micros < 10_000 {
        let hundredths = micros / 100 + u64::from(micros % 100 >= 50);
        format!("${}.{:04}", hundredths / 10_000, hundredths % 10_000)
    } else {
        let cents = micros / 10_000 + u64::from(micros % 10_000 >= 5_000);
        format!("${}.{:02}", cents / 100, cents % 100)
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
