//! Rollups: the usage ledger and the decision rows of the audit log pre-summed per hour and per
//! day (UTC), so that analytics over a month reads some thousand rows per group instead of every
//! request (docs/performance.md "Analytics over a large ledger").
//!
//! - **Written with the rows they sum**, in the same transaction: the ledger's in `sync`, the
//!   decision rows' in the audit append (after the chain head is locked, so sidecars sharing a
//!   PostgreSQL merge one bucket's latency bins one at a time).
//! - **Read exactly**: a range `[from, to)` is cut into whole days, whole hours at the edges
//!   and raw rows for what is left ([`plan`]); each piece covers its own instants, so every row
//!   is counted once. The sums are the raw rows' sums, the latency histograms the same bins
//!   (`decision_stats`), so an answer does not depend on which pieces served it.
//! - **Built once from the raw rows** when a database without them is opened (the marker
//!   [`BUILT`] in `rollup_state`), and rebuilt for the time span of the decision rows a
//!   retention run deletes.
//!
//! A row's time is the ledger's `COALESCE(at_ms, committed_at_ms)` or the audit row's `at_ms`;
//! times outside [`ROLLED`] (hundreds of thousands of years from 1970) are read raw, never
//! rolled. Groups are keyed by `gkey`, the group's columns as JSON text, because SQL unique
//! constraints do not treat two NULLs as one group.

use std::collections::BTreeMap;

use super::decision_stats::{latency_floor, DecisionBucket, DecisionStats, LatencyBin};
use super::{StoreError, UsageBucket, UsageRecord, UsageTotals, LEDGER_TIME};
use crate::audit::AuditEvent;

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;
/// Coarsest first.
const LEVELS: [i64; 2] = [DAY_MS, HOUR_MS];
/// Rows whose time is in this range are rolled up (~270 000 years either side of 1970; whole
/// days at both ends).
pub const ROLLED: (i64, i64) = (-100_000_000 * DAY_MS, 100_000_000 * DAY_MS);
/// Present in `rollup_state` once the rollups hold every raw row.
pub(crate) const BUILT: &str = "rollups.v1";
/// The audit rows that are decisions (the other kinds are not analytics).
pub(crate) const DECISION_KIND: &str = "decision";

pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS rollup_state (name TEXT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS usage_rollup (
        level_ms BIGINT NOT NULL,
        bucket_ms BIGINT NOT NULL,
        gkey TEXT NOT NULL,
        project_id TEXT,
        client_id TEXT,
        host TEXT,
        requests BIGINT NOT NULL,
        cost BIGINT NOT NULL,
        cache_hits BIGINT NOT NULL,
        savings BIGINT NOT NULL,
        PRIMARY KEY (level_ms, bucket_ms, gkey))",
    // `bins`: the latency histogram as JSON `[[floor_ms, count, max_ms], …]`, merged in Rust.
    "CREATE TABLE IF NOT EXISTS decision_rollup (
        level_ms BIGINT NOT NULL,
        bucket_ms BIGINT NOT NULL,
        gkey TEXT NOT NULL,
        project_id TEXT,
        client_id TEXT,
        host TEXT,
        model TEXT,
        decision TEXT,
        code TEXT,
        count BIGINT NOT NULL,
        lat_count BIGINT NOT NULL,
        lat_sum BIGINT NOT NULL,
        bins TEXT NOT NULL,
        PRIMARY KEY (level_ms, bucket_ms, gkey))",
];

/// The start of the `step` bucket holding `t` (floor, also for times before 1970).
pub fn floor_to(t: i64, step: i64) -> i64 {
    t.saturating_sub(t.rem_euclid(step))
}

fn ceil_to(t: i64, step: i64) -> i64 {
    let f = floor_to(t, step);
    if f == t {
        t
    } else {
        f.saturating_add(step)
    }
}

fn rolled(t: i64) -> bool {
    (ROLLED.0..ROLLED.1).contains(&t)
}

/// [`floor_to`] in SQL, the same text on both backends (`%` keeps the dividend's sign on both).
pub(crate) fn floor_sql(t: &str, step: &str) -> String {
    format!("(CASE WHEN {t} >= 0 THEN ({t} / {step}) * {step} ELSE {t} - ((({t}) % {step}) + {step}) % {step} END)")
}

/// One part of a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// The raw rows with a time in `[from, to)`.
    Raw { from: i64, to: i64 },
    /// The `level` buckets starting in `[from, to)` (both multiples of `level`).
    Rolled { level: i64, from: i64, to: i64 },
}

/// `[from, to)` as disjoint pieces covering it: whole days, then whole hours, then raw rows.
/// With `bucket` (a series), only levels dividing it, so no rolled bucket straddles two.
pub fn plan(from: i64, to: i64, bucket: Option<i64>) -> Vec<Piece> {
    let levels: Vec<i64> = LEVELS
        .iter()
        .copied()
        .filter(|l| bucket.is_none_or(|b| b % l == 0))
        .collect();
    let mut out = Vec::new();
    if from >= to {
        return out;
    }
    let (a, b) = (from.max(ROLLED.0), to.min(ROLLED.1));
    if a >= b {
        out.push(Piece::Raw { from, to });
        return out;
    }
    if from < a {
        out.push(Piece::Raw { from, to: a });
    }
    split(a, b, &levels, &mut out);
    if b < to {
        out.push(Piece::Raw { from: b, to });
    }
    out
}

fn split(from: i64, to: i64, levels: &[i64], out: &mut Vec<Piece>) {
    if from >= to {
        return;
    }
    let Some((&level, finer)) = levels.split_first() else {
        out.push(Piece::Raw { from, to });
        return;
    };
    let (a, b) = (ceil_to(from, level), floor_to(to, level));
    if a < b {
        split(from, a, finer, out);
        out.push(Piece::Rolled {
            level,
            from: a,
            to: b,
        });
        split(b, to, finer, out);
    } else {
        split(from, to, finer, out);
    }
}

fn gkey<T: serde::Serialize>(cols: &T) -> Result<String, StoreError> {
    serde_json::to_string(cols).map_err(|e| StoreError::Backend(format!("rollup key: {e}")))
}

fn overflow(what: &str) -> StoreError {
    StoreError::Backend(format!("rollup: {what} above the column"))
}

/// One rollup row of the ledger: a group's sums in one bucket of one level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    pub level: i64,
    pub bucket: i64,
    pub gkey: String,
    pub totals: UsageTotals,
}

/// The columns' limit. Writes saturate at it rather than fail: a sync is never refused because
/// a rollup sum would overflow (the ledger rows themselves are within range). A read that meets
/// a saturated sum fails as a raw `SUM` over those rows does.
const CAP: u64 = i64::MAX as u64;

fn sat(a: u64, b: u64) -> u64 {
    a.saturating_add(b).min(CAP)
}

fn add_totals_saturating(into: &mut UsageTotals, t: &UsageTotals) {
    into.requests = sat(into.requests, t.requests);
    into.cost = sat(into.cost, t.cost);
    into.cache_hits = sat(into.cache_hits, t.cache_hits);
    into.savings = sat(into.savings, t.savings);
}

/// As [`add_stats`], saturating (the write path).
fn add_stats_saturating(into: &mut DecisionStats, b: &DecisionStats) {
    into.count = sat(into.count, b.count);
    let (h, o) = (&mut into.latency, &b.latency);
    h.count = sat(h.count, o.count);
    h.sum_ms = sat(h.sum_ms, o.sum_ms);
    for bin in o.bins.values() {
        let slot = h.bins.entry(bin.floor_ms).or_insert(LatencyBin {
            floor_ms: bin.floor_ms,
            count: 0,
            max_ms: bin.max_ms,
        });
        slot.count = sat(slot.count, bin.count);
        slot.max_ms = slot.max_ms.max(bin.max_ms);
    }
}

/// A rolled sum at [`CAP`] may have been cut: refused as an overflowing raw `SUM` would be.
fn unsaturated(v: u64, what: &str) -> Result<u64, StoreError> {
    if v >= CAP {
        Err(StoreError::Backend(format!(
            "rollup: the {what} sum reached the column's limit"
        )))
    } else {
        Ok(v)
    }
}

fn check_totals(t: &UsageTotals) -> Result<(), StoreError> {
    unsaturated(t.requests, "requests")?;
    unsaturated(t.cost, "cost")?;
    unsaturated(t.cache_hits, "cache hits")?;
    unsaturated(t.savings, "savings")?;
    Ok(())
}

/// Rolled rows checked for saturation; raw rows as they are.
fn checked(piece: Piece, rows: Vec<UsageBucket>) -> Result<Vec<UsageBucket>, StoreError> {
    if matches!(piece, Piece::Rolled { .. }) {
        for r in &rows {
            check_totals(&r.totals)?;
        }
    }
    Ok(rows)
}

fn check_stats(s: DecisionStats) -> Result<DecisionStats, StoreError> {
    unsaturated(s.count, "decision count")?;
    unsaturated(s.latency.count, "latency count")?;
    unsaturated(s.latency.sum_ms, "latency")?;
    for b in s.latency.bins.values() {
        unsaturated(b.count, "latency bin")?;
    }
    Ok(s)
}

fn add_totals(into: &mut UsageTotals, t: &UsageTotals) -> Result<(), StoreError> {
    into.requests = into
        .requests
        .checked_add(t.requests)
        .ok_or_else(|| overflow("requests"))?;
    into.cost = into
        .cost
        .checked_add(t.cost)
        .ok_or_else(|| overflow("cost"))?;
    into.cache_hits = into
        .cache_hits
        .checked_add(t.cache_hits)
        .ok_or_else(|| overflow("cache hits"))?;
    into.savings = into
        .savings
        .checked_add(t.savings)
        .ok_or_else(|| overflow("savings"))?;
    Ok(())
}

/// What a batch adds to the ledger's rollups, one row per (level, bucket, group), in key order
/// (the order rows are locked in).
pub fn usage_deltas(usage: &[UsageRecord], now_ms: i64) -> Result<Vec<UsageRow>, StoreError> {
    let mut out = BTreeMap::<(i64, i64, String), UsageRow>::new();
    for r in usage {
        let t = r.at_ms.unwrap_or(now_ms);
        if !rolled(t) {
            continue;
        }
        let one = UsageTotals {
            project_id: r.project_id.clone(),
            client_id: r.client_id.clone(),
            host: r.host.clone(),
            requests: 1,
            cost: r.amount,
            cache_hits: u64::from(r.cache_hit),
            savings: r.savings,
        };
        let key = gkey(&(&r.project_id, &r.client_id, &r.host))?;
        for level in LEVELS {
            let bucket = floor_to(t, level);
            let row = out
                .entry((level, bucket, key.clone()))
                .or_insert_with(|| UsageRow {
                    level,
                    bucket,
                    gkey: key.clone(),
                    totals: UsageTotals {
                        requests: 0,
                        cost: 0,
                        cache_hits: 0,
                        savings: 0,
                        ..one.clone()
                    },
                });
            add_totals_saturating(&mut row.totals, &one);
        }
    }
    Ok(out.into_values().collect())
}

/// Sums rows of the same (bucket, group), from any pieces.
pub fn merge_usage(rows: Vec<UsageBucket>) -> Result<Vec<UsageBucket>, StoreError> {
    let mut out =
        BTreeMap::<(i64, Option<String>, Option<String>, Option<String>), UsageBucket>::new();
    for r in rows {
        let k = (
            r.start_ms,
            r.totals.project_id.clone(),
            r.totals.client_id.clone(),
            r.totals.host.clone(),
        );
        match out.entry(k) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(r);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                add_totals(&mut e.get_mut().totals, &r.totals)?;
            }
        }
    }
    Ok(out.into_values().collect())
}

/// A decision group's columns (project, client, host, model, decision, code).
type DecisionKey = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn decision_key(s: &DecisionStats) -> DecisionKey {
    (
        s.project_id.clone(),
        s.client_id.clone(),
        s.host.clone(),
        s.model.clone(),
        s.decision.clone(),
        s.code.clone(),
    )
}

/// Adds `b` into `into` (same group): counts and the histogram (checked).
fn add_stats(into: &mut DecisionStats, b: &DecisionStats) -> Result<(), StoreError> {
    into.count = into
        .count
        .checked_add(b.count)
        .ok_or_else(|| overflow("decision count"))?;
    into.latency.merge(&b.latency)
}

/// Merges buckets of the same (start, group), from any pieces; sorted by (start, group).
pub fn merge_decisions(rows: Vec<DecisionBucket>) -> Result<Vec<DecisionBucket>, StoreError> {
    let mut out = BTreeMap::<(i64, DecisionKey), DecisionBucket>::new();
    for r in rows {
        match out.entry((r.start_ms, decision_key(&r.stats))) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(r);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                add_stats(&mut e.get_mut().stats, &r.stats)?;
            }
        }
    }
    Ok(out.into_values().collect())
}

/// One rollup row of the decision rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionRow {
    pub level: i64,
    pub bucket: i64,
    pub gkey: String,
    pub stats: DecisionStats,
}

/// What appended audit rows add to the decision rollups, one row per (level, bucket, group),
/// in key order.
pub fn decision_deltas<'a>(
    events: impl Iterator<Item = &'a AuditEvent>,
) -> Result<Vec<DecisionRow>, StoreError> {
    let mut out = BTreeMap::<(i64, i64, String), DecisionRow>::new();
    for e in events {
        if e.kind != DECISION_KIND || !rolled(e.at_ms) {
            continue;
        }
        let mut one = DecisionStats {
            project_id: e.project_id.clone(),
            client_id: e.client_id.clone(),
            host: e.host.clone(),
            model: e.model.clone(),
            decision: e.decision.clone(),
            code: e.code.clone(),
            count: 1,
            ..DecisionStats::default()
        };
        if let Some(ms) = e.latency_ms {
            let floor_ms = latency_floor(ms);
            one.latency.count = 1;
            one.latency.sum_ms = u64::try_from(ms).unwrap_or(0);
            one.latency.bins.insert(
                floor_ms,
                LatencyBin {
                    floor_ms,
                    count: 1,
                    max_ms: ms,
                },
            );
        }
        let key = gkey(&decision_key(&one))?;
        for level in LEVELS {
            let bucket = floor_to(e.at_ms, level);
            match out.entry((level, bucket, key.clone())) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(DecisionRow {
                        level,
                        bucket,
                        gkey: key.clone(),
                        stats: one.clone(),
                    });
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    add_stats_saturating(&mut o.get_mut().stats, &one);
                }
            }
        }
    }
    Ok(out.into_values().collect())
}

/// Buckets of one level (from a raw read grouped by that level) as rollup rows.
fn decision_rows(level: i64, buckets: Vec<DecisionBucket>) -> Result<Vec<DecisionRow>, StoreError> {
    buckets
        .into_iter()
        .map(|b| {
            Ok(DecisionRow {
                level,
                bucket: b.start_ms,
                gkey: gkey(&decision_key(&b.stats))?,
                stats: b.stats,
            })
        })
        .collect()
}

fn usage_rows(level: i64, buckets: Vec<UsageBucket>) -> Result<Vec<UsageRow>, StoreError> {
    buckets
        .into_iter()
        .map(|b| {
            Ok(UsageRow {
                level,
                bucket: b.start_ms,
                gkey: gkey(&(&b.totals.project_id, &b.totals.client_id, &b.totals.host))?,
                totals: b.totals,
            })
        })
        .collect()
}

/// A histogram's bins as stored: `[[floor_ms, count, max_ms], …]`.
pub fn bins_text(s: &DecisionStats) -> Result<String, StoreError> {
    let bins: Vec<(i64, u64, i64)> = s
        .latency
        .bins
        .values()
        .map(|b| (b.floor_ms, b.count, b.max_ms))
        .collect();
    serde_json::to_string(&bins).map_err(|e| StoreError::Backend(format!("rollup bins: {e}")))
}

/// Reads a stored histogram back into `s` (count and sum from their columns).
fn parse_bins(
    s: &mut DecisionStats,
    lat_count: i64,
    lat_sum: i64,
    bins: &str,
) -> Result<(), StoreError> {
    let parsed: Vec<(i64, u64, i64)> = serde_json::from_str(bins)
        .map_err(|e| StoreError::Backend(format!("rollup bins {bins:?}: {e}")))?;
    s.latency.count = super::from_db(lat_count);
    s.latency.sum_ms = super::from_db(lat_sum);
    for (floor_ms, count, max_ms) in parsed {
        s.latency.bins.insert(
            floor_ms,
            LatencyBin {
                floor_ms,
                count,
                max_ms,
            },
        );
    }
    Ok(())
}

/// The raw ledger summed per group, in buckets of `bucket` when given. `$1` from, `$2` to,
/// `$3` the bucket.
fn usage_raw_sql(bucket: bool, cast: &str) -> String {
    let b = if bucket {
        floor_sql(LEDGER_TIME, "$3")
    } else {
        "CAST(0 AS BIGINT)".into()
    };
    format!(
        "SELECT {b} AS b, project_id, client_id, host, COUNT(*), COALESCE(SUM(amount), 0){cast},
           COUNT(*) FILTER (WHERE cache_hit), COALESCE(SUM(savings), 0){cast}
         FROM usage_ledger WHERE {LEDGER_TIME} >= $1 AND {LEDGER_TIME} < $2
         GROUP BY b, project_id, client_id, host"
    )
}

/// The rollup of one level summed per group. `$1` from, `$2` to (bucket starts), `$3` the
/// level, `$4` the series bucket when given.
fn usage_rolled_sql(bucket: bool, cast: &str) -> String {
    let b = if bucket {
        floor_sql("bucket_ms", "$4")
    } else {
        "CAST(0 AS BIGINT)".into()
    };
    format!(
        "SELECT {b} AS b, project_id, client_id, host, SUM(requests){cast}, SUM(cost){cast},
           SUM(cache_hits){cast}, SUM(savings){cast}
         FROM usage_rollup WHERE level_ms = $3 AND bucket_ms >= $1 AND bucket_ms < $2
         GROUP BY b, project_id, client_id, host"
    )
}

/// The rollup rows of one level, unsummed (histograms merge in Rust). Parameters as
/// [`usage_rolled_sql`].
fn decision_rolled_sql(bucket: bool) -> String {
    let b = if bucket {
        floor_sql("bucket_ms", "$4")
    } else {
        "CAST(0 AS BIGINT)".into()
    };
    format!(
        "SELECT {b}, project_id, client_id, host, model, decision, code, count, lat_count, lat_sum,
           bins FROM decision_rollup WHERE level_ms = $3 AND bucket_ms >= $1 AND bucket_ms < $2"
    )
}

/// Adds, saturating at [`CAP`] (both sides are ≥ 0, so `CAP - excluded` cannot overflow).
const USAGE_UPSERT_SET: &str = "ON CONFLICT (level_ms, bucket_ms, gkey) DO UPDATE SET
    requests = CASE WHEN usage_rollup.requests > 9223372036854775807 - excluded.requests
      THEN 9223372036854775807 ELSE usage_rollup.requests + excluded.requests END,
    cost = CASE WHEN usage_rollup.cost > 9223372036854775807 - excluded.cost
      THEN 9223372036854775807 ELSE usage_rollup.cost + excluded.cost END,
    cache_hits = CASE WHEN usage_rollup.cache_hits > 9223372036854775807 - excluded.cache_hits
      THEN 9223372036854775807 ELSE usage_rollup.cache_hits + excluded.cache_hits END,
    savings = CASE WHEN usage_rollup.savings > 9223372036854775807 - excluded.savings
      THEN 9223372036854775807 ELSE usage_rollup.savings + excluded.savings END";

const DECISION_UPSERT_SET: &str = "ON CONFLICT (level_ms, bucket_ms, gkey) DO UPDATE SET
    count = excluded.count, lat_count = excluded.lat_count, lat_sum = excluded.lat_sum,
    bins = excluded.bins";

fn to_db(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| overflow(what))
}

fn decision_stats_of(
    key: DecisionKey,
    count: i64,
    lat_count: i64,
    lat_sum: i64,
    bins: &str,
) -> Result<DecisionStats, StoreError> {
    let mut s = DecisionStats {
        project_id: key.0,
        client_id: key.1,
        host: key.2,
        model: key.3,
        decision: key.4,
        code: key.5,
        count: super::from_db(count),
        ..DecisionStats::default()
    };
    parse_bins(&mut s, lat_count, lat_sum, bins)?;
    Ok(s)
}

/// The levels whose buckets intersect `[from, to)`: `(level, first bucket, end)` to rebuild.
fn spans(from: i64, to: i64) -> Vec<(i64, i64, i64)> {
    LEVELS
        .iter()
        .map(|&l| (l, floor_to(from, l), ceil_to(to, l)))
        .collect()
}

pub(crate) mod sqlite {
    use rusqlite::{params, Connection, OptionalExtension};

    use super::*;
    use crate::store::decision_stats::bucketed_sql;
    use crate::store::decision_stats::sqlite::rows as sqlite_rows;

    fn backend(e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend(e.to_string())
    }

    fn sql(s: &str) -> String {
        s.replace('$', "?")
    }

    pub(crate) fn upsert_usage(c: &Connection, rows: &[UsageRow]) -> Result<(), StoreError> {
        let mut st = c
            .prepare_cached(&format!(
                "INSERT INTO usage_rollup (level_ms, bucket_ms, gkey, project_id, client_id, host,
                   requests, cost, cache_hits, savings) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 {USAGE_UPSERT_SET}"
            ))
            .map_err(backend)?;
        for r in rows {
            let t = &r.totals;
            st.execute(params![
                r.level,
                r.bucket,
                r.gkey,
                t.project_id,
                t.client_id,
                t.host,
                to_db(t.requests, "requests")?,
                to_db(t.cost, "cost")?,
                to_db(t.cache_hits, "cache hits")?,
                to_db(t.savings, "savings")?
            ])
            .map_err(backend)?;
        }
        Ok(())
    }

    /// Merges `rows` into the stored ones (the caller holds the write lock).
    pub(crate) fn add_decisions(c: &Connection, rows: Vec<DecisionRow>) -> Result<(), StoreError> {
        let mut get = c
            .prepare_cached(
                "SELECT count, lat_count, lat_sum, bins FROM decision_rollup
                 WHERE level_ms = ?1 AND bucket_ms = ?2 AND gkey = ?3",
            )
            .map_err(backend)?;
        let mut merged = Vec::with_capacity(rows.len());
        for mut r in rows {
            let old: Option<(i64, i64, i64, String)> = get
                .query_row(params![r.level, r.bucket, r.gkey], |x| {
                    Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?))
                })
                .optional()
                .map_err(backend)?;
            if let Some((count, lat_count, lat_sum, bins)) = old {
                let old =
                    decision_stats_of(decision_key(&r.stats), count, lat_count, lat_sum, &bins)?;
                add_stats_saturating(&mut r.stats, &old);
            }
            merged.push(r);
        }
        put_decisions(c, &merged)
    }

    fn put_decisions(c: &Connection, rows: &[DecisionRow]) -> Result<(), StoreError> {
        let mut st = c
            .prepare_cached(&format!(
                "INSERT INTO decision_rollup (level_ms, bucket_ms, gkey, project_id, client_id, host,
                   model, decision, code, count, lat_count, lat_sum, bins)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) {DECISION_UPSERT_SET}"
            ))
            .map_err(backend)?;
        for r in rows {
            let s = &r.stats;
            st.execute(params![
                r.level,
                r.bucket,
                r.gkey,
                s.project_id,
                s.client_id,
                s.host,
                s.model,
                s.decision,
                s.code,
                to_db(s.count, "decision count")?,
                to_db(s.latency.count, "latency count")?,
                to_db(s.latency.sum_ms, "latency sum")?,
                bins_text(s)?
            ])
            .map_err(backend)?;
        }
        Ok(())
    }

    fn usage_piece(
        c: &Connection,
        piece: Piece,
        bucket: Option<i64>,
    ) -> Result<Vec<UsageBucket>, StoreError> {
        let (text, args): (String, Vec<i64>) = match piece {
            Piece::Raw { from, to } => (
                usage_raw_sql(bucket.is_some(), ""),
                [from, to].into_iter().chain(bucket).collect(),
            ),
            Piece::Rolled { level, from, to } => (
                usage_rolled_sql(bucket.is_some(), ""),
                [from, to, level].into_iter().chain(bucket).collect(),
            ),
        };
        let mut st = c.prepare_cached(&sql(&text)).map_err(backend)?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(UsageBucket {
                    start_ms: r.get(0)?,
                    totals: UsageTotals {
                        project_id: r.get(1)?,
                        client_id: r.get(2)?,
                        host: r.get(3)?,
                        requests: crate::store::from_db(r.get(4)?),
                        cost: crate::store::from_db(r.get(5)?),
                        cache_hits: crate::store::from_db(r.get(6)?),
                        savings: crate::store::from_db(r.get(7)?),
                    },
                })
            })
            .map_err(backend)?;
        // SQLite's SUM fails with "integer overflow" rather than wrapping.
        let rows = rows.collect::<Result<Vec<_>, _>>().map_err(backend)?;
        checked(piece, rows)
    }

    /// The ledger over `[from, to)` per group (and bucket), from the rollups and the raw rows.
    pub(crate) fn usage(
        c: &Connection,
        from: i64,
        to: i64,
        bucket: Option<i64>,
    ) -> Result<Vec<UsageBucket>, StoreError> {
        let mut all = Vec::new();
        for p in plan(from, to, bucket) {
            all.extend(usage_piece(c, p, bucket)?);
        }
        merge_usage(all)
    }

    fn decision_piece(
        c: &Connection,
        piece: Piece,
        bucket: Option<i64>,
    ) -> Result<Vec<DecisionBucket>, StoreError> {
        match piece {
            Piece::Raw { from, to } => {
                let b = match bucket {
                    Some(_) => floor_sql("at_ms", "$3"),
                    None => "CAST(0 AS BIGINT)".into(),
                };
                let args: Vec<i64> = [from, to].into_iter().chain(bucket).collect();
                sqlite_rows(c, &bucketed_sql("", &b), &args)
            }
            Piece::Rolled { level, from, to } => {
                let args: Vec<i64> = [from, to, level].into_iter().chain(bucket).collect();
                let mut st = c
                    .prepare_cached(&sql(&decision_rolled_sql(bucket.is_some())))
                    .map_err(backend)?;
                let raw = st
                    .query_map(rusqlite::params_from_iter(args), |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            (
                                r.get(1)?,
                                r.get(2)?,
                                r.get(3)?,
                                r.get(4)?,
                                r.get(5)?,
                                r.get(6)?,
                            ),
                            r.get::<_, i64>(7)?,
                            r.get::<_, i64>(8)?,
                            r.get::<_, i64>(9)?,
                            r.get::<_, String>(10)?,
                        ))
                    })
                    .map_err(backend)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(backend)?;
                raw.into_iter()
                    .map(|(start_ms, key, count, lc, ls, bins)| {
                        Ok(DecisionBucket {
                            start_ms,
                            stats: check_stats(decision_stats_of(key, count, lc, ls, &bins)?)?,
                        })
                    })
                    .collect()
            }
        }
    }

    /// The decision rows over `[from, to)` per group (and bucket).
    pub(crate) fn decisions(
        c: &Connection,
        from: i64,
        to: i64,
        bucket: Option<i64>,
    ) -> Result<Vec<DecisionBucket>, StoreError> {
        let mut all = Vec::new();
        for p in plan(from, to, bucket) {
            all.extend(decision_piece(c, p, bucket)?);
        }
        merge_decisions(all)
    }

    /// [`usage`] in one read transaction: its pieces see one snapshot (WAL).
    pub(crate) fn usage_snapshot(
        c: &mut Connection,
        from: i64,
        to: i64,
        bucket: Option<i64>,
    ) -> Result<Vec<UsageBucket>, StoreError> {
        let tx = c.transaction().map_err(backend)?;
        let out = usage(&tx, from, to, bucket)?;
        tx.commit().map_err(backend)?;
        Ok(out)
    }

    /// [`decisions`] in one read transaction.
    pub(crate) fn decisions_snapshot(
        c: &mut Connection,
        from: i64,
        to: i64,
        bucket: Option<i64>,
    ) -> Result<Vec<DecisionBucket>, StoreError> {
        let tx = c.transaction().map_err(backend)?;
        let out = decisions(&tx, from, to, bucket)?;
        tx.commit().map_err(backend)?;
        Ok(out)
    }

    /// Recomputes the decision rollups of every bucket meeting `[from, to)` from the raw rows.
    pub(crate) fn rebuild_decisions(c: &Connection, from: i64, to: i64) -> Result<(), StoreError> {
        for (level, a, b) in spans(from.max(ROLLED.0), to.min(ROLLED.1)) {
            c.execute(
                "DELETE FROM decision_rollup WHERE level_ms = ?1 AND bucket_ms >= ?2 AND bucket_ms < ?3",
                params![level, a, b],
            )
            .map_err(backend)?;
            let raw = sqlite_rows(
                c,
                &bucketed_sql("", &floor_sql("at_ms", "$3")),
                &[a, b, level],
            )?;
            put_decisions(c, &decision_rows(level, raw)?)?;
        }
        Ok(())
    }

    fn rebuild_usage(c: &Connection, from: i64, to: i64) -> Result<(), StoreError> {
        for (level, a, b) in spans(from, to) {
            c.execute(
                "DELETE FROM usage_rollup WHERE level_ms = ?1 AND bucket_ms >= ?2 AND bucket_ms < ?3",
                params![level, a, b],
            )
            .map_err(backend)?;
            let raw = usage_piece(c, Piece::Raw { from: a, to: b }, Some(level))?;
            upsert_usage(c, &usage_rows(level, raw)?)?;
        }
        Ok(())
    }

    /// Builds the rollups from the raw rows unless [`BUILT`] says they hold them (a database
    /// from before rollups); one IMMEDIATE transaction, so two processes opening the file
    /// build once.
    pub(crate) fn ensure_built(c: &mut Connection) -> Result<(), StoreError> {
        let tx = c
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(backend)?;
        let built: Option<String> = tx
            .query_row(
                "SELECT name FROM rollup_state WHERE name = ?1",
                [BUILT],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        if built.is_none() {
            rebuild_usage(&tx, ROLLED.0, ROLLED.1)?;
            rebuild_decisions(&tx, ROLLED.0, ROLLED.1)?;
            tx.execute("INSERT INTO rollup_state (name) VALUES (?1)", [BUILT])
                .map_err(backend)?;
        }
        tx.commit().map_err(backend)
    }
}

pub(crate) mod postgres {
    use tokio_postgres::types::ToSql;
    use tokio_postgres::GenericClient;

    use super::*;
    use crate::store::decision_stats::bucketed_sql;
    use crate::store::decision_stats::postgres::rows as postgres_rows;

    fn pg(e: tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            Some(db) => {
                StoreError::Backend(format!("postgres {}: {}", db.code().code(), db.message()))
            }
            None => StoreError::Backend(e.to_string()),
        }
    }

    /// Column arrays of usage rows, for one `unnest` upsert.
    pub(crate) struct UsageArrays {
        level: Vec<i64>,
        bucket: Vec<i64>,
        gkey: Vec<String>,
        project: Vec<Option<String>>,
        client: Vec<Option<String>>,
        host: Vec<Option<String>>,
        requests: Vec<i64>,
        cost: Vec<i64>,
        hits: Vec<i64>,
        savings: Vec<i64>,
    }

    pub(crate) fn usage_arrays(rows: Vec<UsageRow>) -> Result<UsageArrays, StoreError> {
        let mut a = UsageArrays {
            level: Vec::new(),
            bucket: Vec::new(),
            gkey: Vec::new(),
            project: Vec::new(),
            client: Vec::new(),
            host: Vec::new(),
            requests: Vec::new(),
            cost: Vec::new(),
            hits: Vec::new(),
            savings: Vec::new(),
        };
        for r in rows {
            let t = r.totals;
            a.level.push(r.level);
            a.bucket.push(r.bucket);
            a.gkey.push(r.gkey);
            a.project.push(t.project_id);
            a.client.push(t.client_id);
            a.host.push(t.host);
            a.requests.push(to_db(t.requests, "requests")?);
            a.cost.push(to_db(t.cost, "cost")?);
            a.hits.push(to_db(t.cache_hits, "cache hits")?);
            a.savings.push(to_db(t.savings, "savings")?);
        }
        Ok(a)
    }

    /// One statement for the whole batch. Rows are in key order, so two sidecars upserting the
    /// same buckets lock them in one order.
    pub(crate) async fn upsert_usage(
        c: &impl GenericClient,
        a: &UsageArrays,
    ) -> Result<(), tokio_postgres::Error> {
        if a.level.is_empty() {
            return Ok(());
        }
        c.execute(
            &format!(
                "INSERT INTO usage_rollup (level_ms, bucket_ms, gkey, project_id, client_id, host,
                   requests, cost, cache_hits, savings)
                 SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                   $6::TEXT[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[])
                 ORDER BY 1, 2, 3 {USAGE_UPSERT_SET}"
            ),
            &[
                &a.level,
                &a.bucket,
                &a.gkey,
                &a.project,
                &a.client,
                &a.host,
                &a.requests,
                &a.cost,
                &a.hits,
                &a.savings,
            ],
        )
        .await?;
        Ok(())
    }

    /// Merges `rows` into the stored ones; the caller holds the audit head's lock, which
    /// serialises every writer of decision rows.
    pub(crate) async fn add_decisions(
        c: &impl GenericClient,
        rows: Vec<DecisionRow>,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let level: Vec<i64> = rows.iter().map(|r| r.level).collect();
        let bucket: Vec<i64> = rows.iter().map(|r| r.bucket).collect();
        let key: Vec<&str> = rows.iter().map(|r| r.gkey.as_str()).collect();
        let old = c
            .query(
                "SELECT r.level_ms, r.bucket_ms, r.gkey, r.count, r.lat_count, r.lat_sum, r.bins
                 FROM decision_rollup r
                 JOIN unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[]) AS k(l, b, g)
                   ON r.level_ms = k.l AND r.bucket_ms = k.b AND r.gkey = k.g",
                &[&level, &bucket, &key],
            )
            .await
            .map_err(pg)?;
        let mut stored = BTreeMap::<(i64, i64, String), (i64, i64, i64, String)>::new();
        for r in &old {
            stored.insert(
                (r.get(0), r.get(1), r.get(2)),
                (r.get(3), r.get(4), r.get(5), r.get(6)),
            );
        }
        let mut merged = Vec::with_capacity(rows.len());
        for mut r in rows {
            if let Some((count, lc, ls, bins)) = stored.get(&(r.level, r.bucket, r.gkey.clone())) {
                let old = decision_stats_of(decision_key(&r.stats), *count, *lc, *ls, bins)?;
                add_stats_saturating(&mut r.stats, &old);
            }
            merged.push(r);
        }
        put_decisions(c, &merged).await
    }

    /// Column arrays of decision rollup rows, for one `unnest` upsert.
    #[derive(Default)]
    struct DecisionArrays<'a> {
        level: Vec<i64>,
        bucket: Vec<i64>,
        gkey: Vec<&'a str>,
        project: Vec<Option<&'a str>>,
        client: Vec<Option<&'a str>>,
        host: Vec<Option<&'a str>>,
        model: Vec<Option<&'a str>>,
        decision: Vec<Option<&'a str>>,
        code: Vec<Option<&'a str>>,
        count: Vec<i64>,
        lat_count: Vec<i64>,
        lat_sum: Vec<i64>,
        bins: Vec<String>,
    }

    async fn put_decisions(c: &impl GenericClient, rows: &[DecisionRow]) -> Result<(), StoreError> {
        // Chunks keep one statement's arrays moderate on a full rebuild.
        for chunk in rows.chunks(10_000) {
            let mut a = DecisionArrays::default();
            for r in chunk {
                let s = &r.stats;
                a.level.push(r.level);
                a.bucket.push(r.bucket);
                a.gkey.push(&r.gkey);
                a.project.push(s.project_id.as_deref());
                a.client.push(s.client_id.as_deref());
                a.host.push(s.host.as_deref());
                a.model.push(s.model.as_deref());
                a.decision.push(s.decision.as_deref());
                a.code.push(s.code.as_deref());
                a.count.push(to_db(s.count, "decision count")?);
                a.lat_count.push(to_db(s.latency.count, "latency count")?);
                a.lat_sum.push(to_db(s.latency.sum_ms, "latency sum")?);
                a.bins.push(bins_text(s)?);
            }
            let args: [&(dyn ToSql + Sync); 13] = [
                &a.level,
                &a.bucket,
                &a.gkey,
                &a.project,
                &a.client,
                &a.host,
                &a.model,
                &a.decision,
                &a.code,
                &a.count,
                &a.lat_count,
                &a.lat_sum,
                &a.bins,
            ];
            c.execute(
                &format!(
                    "INSERT INTO decision_rollup (level_ms, bucket_ms, gkey, project_id, client_id,
                       host, model, decision, code, count, lat_count, lat_sum, bins)
                     SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[],
                       $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::BIGINT[],
                       $11::BIGINT[], $12::BIGINT[], $13::TEXT[])
                     ORDER BY 1, 2, 3 {DECISION_UPSERT_SET}"
                ),
                &args,
            )
            .await
            .map_err(pg)?;
        }
        Ok(())
    }

    async fn usage_piece(
        c: &impl GenericClient,
        piece: Piece,
        bucket: Option<i64>,
    ) -> Result<Vec<UsageBucket>, StoreError> {
        let (text, args): (String, Vec<i64>) = match piece {
            Piece::Raw { from, to } => (
                usage_raw_sql(bucket.is_some(), "::BIGINT"),
                [from, to].into_iter().chain(bucket).collect(),
            ),
            Piece::Rolled { level, from, to } => (
                usage_rolled_sql(bucket.is_some(), "::BIGINT"),
                [from, to, level].into_iter().chain(bucket).collect(),
            ),
        };
        let text = text.replace("$3", "$3::BIGINT").replace("$4", "$4::BIGINT");
        let refs: Vec<&(dyn ToSql + Sync)> =
            args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        let rows = c.query(&text, &refs).await.map_err(pg)?;
        let rows = rows
            .iter()
            .map(|r| UsageBucket {
                start_ms: r.get(0),
                totals: UsageTotals {
                    project_id: r.get(1),
                    client_id: r.get(2),
                    host: r.get(3),
                    requests: crate::store::from_db(r.get(4)),
                    cost: crate::store::from_db(r.get(5)),
                    cache_hits: crate::store::from_db(r.get(6)),
                    savings: crate::store::from_db(r.get(7)),
                },
            })
            .collect();
        checked(piece, rows)
    }

    pub(crate) async fn usage(
        c: &impl GenericClient,
        from: i64,
        to: i64,
        bucket: Option<i64>,
    ) -> Result<Vec<UsageBucket>, StoreError> {
        let mut all = Vec::new();
        for p in plan(from, to, bucket) {
            all.extend(usage_piece(c, p, bucket).await?);
        }
        merge_usage(all)
    }

    async fn decision_piece(
        c: &impl GenericClient,
        piece: Piece,
        bucket: Option<i64>,
    ) -> Result<Vec<DecisionBucket>, StoreError> {
        match piece {
            Piece::Raw { from, to } => {
                let b = match bucket {
                    Some(_) => floor_sql("at_ms", "$3::BIGINT"),
                    None => "CAST(0 AS BIGINT)".into(),
                };
                let args: Vec<i64> = [from, to].into_iter().chain(bucket).collect();
                postgres_rows(c, &bucketed_sql("::BIGINT", &b), &args).await
            }
            Piece::Rolled { level, from, to } => {
                let args: Vec<i64> = [from, to, level].into_iter().chain(bucket).collect();
                let refs: Vec<&(dyn ToSql + Sync)> =
                    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
                let text = decision_rolled_sql(bucket.is_some())
                    .replace("$3", "$3::BIGINT")
                    .replace("$4", "$4::BIGINT");
                let rows = c.query(&text, &refs).await.map_err(pg)?;
                rows.iter()
                    .map(|r| {
                        let bins: String = r.get(10);
                        Ok(DecisionBucket {
                            start_ms: r.get(0),
                            stats: check_stats(decision_stats_of(
                                (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)),
                                r.get(7),
                                r.get(8),
                                r.get(9),
                                &bins,
                            )?)?,
                        })
                    })
                    .collect()
            }
        }
    }

    pub(crate) async fn decisions(
        c: &impl GenericClient,
        from: i64,
        to: i64,
        bucket: Option<i64>,
    ) -> Result<Vec<DecisionBucket>, StoreError> {
        let mut all = Vec::new();
        for p in plan(from, to, bucket) {
            all.extend(decision_piece(c, p, bucket).await?);
        }
        merge_decisions(all)
    }

    pub(crate) async fn rebuild_decisions(
        c: &impl GenericClient,
        from: i64,
        to: i64,
    ) -> Result<(), StoreError> {
        for (level, a, b) in spans(from.max(ROLLED.0), to.min(ROLLED.1)) {
            c.execute(
                "DELETE FROM decision_rollup WHERE level_ms = $1 AND bucket_ms >= $2 AND bucket_ms < $3",
                &[&level, &a, &b],
            )
            .await
            .map_err(pg)?;
            let raw = postgres_rows(
                c,
                &bucketed_sql("::BIGINT", &floor_sql("at_ms", "$3::BIGINT")),
                &[a, b, level],
            )
            .await?;
            put_decisions(c, &decision_rows(level, raw)?).await?;
        }
        Ok(())
    }

    async fn rebuild_usage(c: &impl GenericClient, from: i64, to: i64) -> Result<(), StoreError> {
        for (level, a, b) in spans(from, to) {
            c.execute(
                "DELETE FROM usage_rollup WHERE level_ms = $1 AND bucket_ms >= $2 AND bucket_ms < $3",
                &[&level, &a, &b],
            )
            .await
            .map_err(pg)?;
            let raw = usage_piece(c, Piece::Raw { from: a, to: b }, Some(level)).await?;
            for chunk in usage_rows(level, raw)?.chunks(10_000) {
                upsert_usage(c, &usage_arrays(chunk.to_vec())?)
                    .await
                    .map_err(pg)?;
            }
        }
        Ok(())
    }

    /// As SQLite's, in the caller's migration transaction (under its advisory lock).
    pub(crate) async fn ensure_built(c: &impl GenericClient) -> Result<(), StoreError> {
        let built = c
            .query_opt("SELECT name FROM rollup_state WHERE name = $1", &[&BUILT])
            .await
            .map_err(pg)?;
        if built.is_none() {
            rebuild_usage(c, ROLLED.0, ROLLED.1).await?;
            rebuild_decisions(c, ROLLED.0, ROLLED.1).await?;
            c.execute("INSERT INTO rollup_state (name) VALUES ($1)", &[&BUILT])
                .await
                .map_err(pg)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instant of `[from, to)` in exactly one piece, rolled pieces whole buckets.
    #[test]
    fn a_plan_covers_its_range_once() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = 1_764_547_200_000_i64; // 2025-12-01T00:00Z
        for _ in 0..2000 {
            let a = base + i64::try_from(next() % (5 * DAY_MS as u64)).unwrap() - DAY_MS;
            let len = i64::try_from(next() % (3 * DAY_MS as u64)).unwrap();
            let (from, to) = match next() % 4 {
                0 => (floor_to(a, HOUR_MS), floor_to(a + len, DAY_MS)),
                1 => (a, a + len),
                2 => (floor_to(a, DAY_MS), floor_to(a + len, DAY_MS)),
                _ => (a, a + (len % HOUR_MS)),
            };
            for bucket in [None, Some(HOUR_MS), Some(DAY_MS), Some(15 * 60_000)] {
                let p = plan(from, to, bucket);
                let mut at = from;
                for piece in &p {
                    let (f, t) = match *piece {
                        Piece::Raw { from, to } => (from, to),
                        Piece::Rolled { level, from, to } => {
                            assert_eq!(from % level, 0);
                            assert_eq!(to % level, 0);
                            if let Some(b) = bucket {
                                assert_eq!(b % level, 0, "{piece:?} straddles {b}");
                            }
                            (from, to)
                        }
                    };
                    assert_eq!(f, at, "{from}..{to}: {p:?}");
                    assert!(f < t, "{p:?}");
                    at = t;
                }
                assert_eq!(at, to.max(from), "{from}..{to}: {p:?}");
                let raw: i64 = p
                    .iter()
                    .map(|x| match *x {
                        Piece::Raw { from, to } => to - from,
                        Piece::Rolled { .. } => 0,
                    })
                    .sum();
                if bucket.is_none() {
                    // Raw only at the sub-hour edges.
                    assert!(raw < 2 * HOUR_MS, "{raw} ms raw in {p:?}");
                }
            }
        }
    }

    #[test]
    fn floors_are_floors_before_1970_too() {
        assert_eq!(floor_to(0, HOUR_MS), 0);
        assert_eq!(floor_to(-1, HOUR_MS), -HOUR_MS);
        assert_eq!(floor_to(HOUR_MS - 1, HOUR_MS), 0);
        assert_eq!(floor_to(i64::MIN, HOUR_MS), i64::MIN);
        assert_eq!(ceil_to(1, HOUR_MS), HOUR_MS);
        assert_eq!(ceil_to(-1, HOUR_MS), 0);
        let far = plan(i64::MIN, i64::MAX, None);
        assert_eq!(
            far.first(),
            Some(&Piece::Raw {
                from: i64::MIN,
                to: ROLLED.0
            })
        );
        assert_eq!(
            far.last(),
            Some(&Piece::Raw {
                from: ROLLED.1,
                to: i64::MAX
            })
        );
    }
}
