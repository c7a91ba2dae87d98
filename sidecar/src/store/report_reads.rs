//! What the compliance report reads from the decision log (issue 17, docs/reports.md): the
//! `decision`, `decision.gap` and `decision.rejected` rows of `audit_log` in `[from_ms, to_ms)`
//! (by `at_ms`), summed in SQL, read in one snapshot.
//!
//! The store does not read policies: the caller passes the approval bound of each (policy
//! version, client) it knows ([`ApprovalBound`], computed from the compiled policy), and the
//! store counts the allowed decisions without an approval id whose estimate is above their
//! bound. The bounds travel as ONE JSON text parameter (SQLite `json_each`, PostgreSQL
//! `jsonb_to_recordset`), so their number is not limited by the parameter count.

use std::collections::BTreeMap;

use serde_json::json;

use super::StoreError;

/// The approval bound of one client under one policy version: a request with an estimate
/// strictly above `above` micro-USD needs an approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalBound {
    pub policy_version: i64,
    pub client_id: String,
    pub above: u64,
}

/// What [`super::Store::report_decisions`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportDecisionQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub bounds: Vec<ApprovalBound>,
    /// Most examples of unapproved requests above their bound returned (oldest first).
    pub examples: u32,
}

/// Requests and spend of one model over the period's decision rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelTotals {
    /// Decision rows (every kind: allowed, denied, pending, replayed, cache hits).
    pub requests: u64,
    /// Sum of `cost`, micro-USD.
    pub cost: u64,
}

/// One allowed request above its approval bound with no approval id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnapprovedDecision {
    pub seq: i64,
    pub at_ms: i64,
    pub project_id: Option<String>,
    pub client_id: Option<String>,
    pub host: Option<String>,
    pub model: Option<String>,
    pub estimate: u64,
    /// The bound it was above.
    pub above: u64,
    pub policy_version: i64,
}

/// The decision log of one period, as the report needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportDecisions {
    /// `decision` rows by `decision` (allow, deny, pending, replay, cache_hit).
    pub by_decision: BTreeMap<String, u64>,
    /// `decision` rows with `decision = deny`, by `code` (`""` for a denial without one).
    pub denials_by_code: BTreeMap<String, u64>,
    /// `decision.gap` rows, and the sum of their `details.count` (events dropped).
    pub gap_rows: u64,
    pub gap_events: u64,
    /// `decision.rejected` rows.
    pub rejected: u64,
    /// Decision rows by `model` (`None`: the row names no model).
    pub by_model: BTreeMap<Option<String>, ModelTotals>,
    /// The policy versions cited by allowed decisions without an approval id that carry an
    /// estimate, ascending: the caller checks it passed a bound set for each.
    pub cited_versions: Vec<i64>,
    /// Allowed decisions without an approval id whose estimate is above their bound.
    pub unapproved_above_bound: u64,
    pub unapproved_examples: Vec<UnapprovedDecision>,
}

const RANGE: &str = "at_ms >= $1 AND at_ms < $2";

fn by_decision_sql() -> String {
    format!(
        "SELECT decision, code, COUNT(*) FROM audit_log
         WHERE kind = 'decision' AND {RANGE} GROUP BY decision, code"
    )
}

/// `count_expr`: the backend's way to read `details.count` as an integer.
fn side_rows_sql(count_expr: &str, cast: &str) -> String {
    format!(
        "SELECT kind, COUNT(*), COALESCE(SUM({count_expr}), 0){cast} FROM audit_log
         WHERE kind IN ('decision.gap', 'decision.rejected') AND {RANGE} GROUP BY kind"
    )
}

fn by_model_sql(cast: &str) -> String {
    format!(
        "SELECT model, COUNT(*), COALESCE(SUM(cost), 0){cast} FROM audit_log
         WHERE kind = 'decision' AND {RANGE} GROUP BY model"
    )
}

/// The candidates for "above the bound without approval": allowed, no approval id, estimated.
const UNAPPROVED: &str = "l.kind = 'decision' AND l.decision = 'allow' AND l.approval_id IS NULL \
    AND l.estimate IS NOT NULL AND l.at_ms >= $1 AND l.at_ms < $2";

fn cited_sql() -> String {
    format!(
        "SELECT DISTINCT l.policy_version FROM audit_log l
         WHERE {UNAPPROVED} AND l.policy_version IS NOT NULL ORDER BY l.policy_version"
    )
}

/// `bounds`: the backend's table expression of `$3` with columns `v`, `c`, `a`.
fn unapproved_count_sql(bounds: &str) -> String {
    format!(
        "WITH b AS ({bounds}) SELECT COUNT(*) FROM audit_log l
         JOIN b ON l.policy_version = b.v AND l.client_id = b.c
         WHERE {UNAPPROVED} AND l.estimate > b.a"
    )
}

fn unapproved_examples_sql(bounds: &str) -> String {
    format!(
        "WITH b AS ({bounds}) SELECT l.seq, l.at_ms, l.project_id, l.client_id, l.host, l.model,
           l.estimate, b.a, l.policy_version FROM audit_log l
         JOIN b ON l.policy_version = b.v AND l.client_id = b.c
         WHERE {UNAPPROVED} AND l.estimate > b.a ORDER BY l.at_ms, l.seq LIMIT $4"
    )
}

/// The bounds as the one JSON parameter (`[{v, c, a}]`).
fn bounds_json(bounds: &[ApprovalBound]) -> Result<String, StoreError> {
    let rows = bounds
        .iter()
        .map(|b| {
            Ok(json!({ "v": b.policy_version, "c": b.client_id, "a": super::to_db(b.above)? }))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(serde_json::Value::Array(rows).to_string())
}

fn add(a: u64, b: u64) -> Result<u64, StoreError> {
    a.checked_add(b)
        .ok_or_else(|| StoreError::Backend("decision count above u64".into()))
}

/// Folds one `(decision, code, count)` row in.
fn fold_decision(
    out: &mut ReportDecisions,
    decision: Option<String>,
    code: Option<String>,
    n: i64,
) -> Result<(), StoreError> {
    let n = super::from_db(n);
    let decision = decision.unwrap_or_default();
    if decision == "deny" {
        let slot = out
            .denials_by_code
            .entry(code.unwrap_or_default())
            .or_default();
        *slot = add(*slot, n)?;
    }
    let slot = out.by_decision.entry(decision).or_default();
    *slot = add(*slot, n)?;
    Ok(())
}

fn fold_side(out: &mut ReportDecisions, kind: &str, rows: i64, events: i64) {
    if kind == "decision.gap" {
        out.gap_rows = super::from_db(rows);
        out.gap_events = super::from_db(events);
    } else {
        out.rejected = super::from_db(rows);
    }
}

pub(crate) mod sqlite {
    use rusqlite::{params, Connection};

    use super::*;
    use crate::store::from_db;

    fn backend(e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend(e.to_string())
    }

    /// `$n` → `?n` (and nothing else: JSON paths like `'$.count'` keep their `$`).
    fn q(sql: &str) -> String {
        (1..=4).fold(sql.to_string(), |s, n| {
            s.replace(&format!("${n}"), &format!("?{n}"))
        })
    }

    const BOUNDS: &str = "SELECT json_extract(value, '$.v') AS v, json_extract(value, '$.c') AS c,
        json_extract(value, '$.a') AS a FROM json_each(?3)";

    pub(crate) fn read(
        c: &mut Connection,
        query: &ReportDecisionQuery,
    ) -> Result<ReportDecisions, StoreError> {
        // One read transaction: every figure from the same snapshot.
        let tx = c.transaction().map_err(backend)?;
        let (from, to) = (query.from_ms, query.to_ms);
        let mut out = ReportDecisions::default();
        {
            let mut st = tx.prepare(&q(&by_decision_sql())).map_err(backend)?;
            let rows = st
                .query_map(params![from, to], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?))
                })
                .map_err(backend)?;
            for row in rows {
                let (d, code, n) = row.map_err(backend)?;
                fold_decision(&mut out, d, code, n)?;
            }
            let mut st = tx
                .prepare(&q(&side_rows_sql(
                    "CASE WHEN kind = 'decision.gap' THEN json_extract(details, '$.count') ELSE 0 END",
                    "",
                )))
                .map_err(backend)?;
            let rows = st
                .query_map(params![from, to], |r| {
                    Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(backend)?;
            for row in rows {
                let (kind, n, events) = row.map_err(backend)?;
                fold_side(&mut out, &kind, n, events);
            }
            let mut st = tx.prepare(&q(&by_model_sql(""))).map_err(backend)?;
            let rows = st
                .query_map(params![from, to], |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                })
                .map_err(backend)?;
            for row in rows {
                let (model, n, cost) = row.map_err(backend)?;
                out.by_model.insert(
                    model,
                    ModelTotals {
                        requests: from_db(n),
                        cost: from_db(cost),
                    },
                );
            }
            let mut st = tx.prepare(&q(&cited_sql())).map_err(backend)?;
            out.cited_versions = st
                .query_map(params![from, to], |r| r.get(0))
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)?;
            let bounds = bounds_json(&query.bounds)?;
            let count_sql = q(&unapproved_count_sql(BOUNDS));
            let n: i64 = tx
                .query_row(&count_sql, params![from, to, bounds], |r| r.get(0))
                .map_err(backend)?;
            out.unapproved_above_bound = from_db(n);
            let ex_sql = q(&unapproved_examples_sql(BOUNDS));
            let mut st = tx.prepare(&ex_sql).map_err(backend)?;
            out.unapproved_examples = st
                .query_map(params![from, to, bounds, i64::from(query.examples)], |r| {
                    Ok(UnapprovedDecision {
                        seq: r.get(0)?,
                        at_ms: r.get(1)?,
                        project_id: r.get(2)?,
                        client_id: r.get(3)?,
                        host: r.get(4)?,
                        model: r.get(5)?,
                        estimate: from_db(r.get(6)?),
                        above: from_db(r.get(7)?),
                        policy_version: r.get(8)?,
                    })
                })
                .map_err(backend)?
                .collect::<Result<_, _>>()
                .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(out)
    }
}

pub(crate) mod postgres {
    use tokio_postgres::IsolationLevel;

    use super::*;
    use crate::store::from_db;

    fn pg(e: tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            Some(db) => {
                StoreError::Backend(format!("postgres {}: {}", db.code().code(), db.message()))
            }
            None => StoreError::Backend(e.to_string()),
        }
    }

    const BOUNDS: &str =
        "SELECT v, c, a FROM jsonb_to_recordset($3::TEXT::jsonb) AS x(v BIGINT, c TEXT, a BIGINT)";

    pub(crate) async fn read(
        c: &mut deadpool_postgres::Object,
        query: &ReportDecisionQuery,
    ) -> Result<ReportDecisions, StoreError> {
        // One snapshot for every figure.
        let tx = c
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let (from, to) = (&query.from_ms, &query.to_ms);
        let mut out = ReportDecisions::default();
        for r in tx
            .query(&by_decision_sql(), &[from, to])
            .await
            .map_err(pg)?
        {
            fold_decision(&mut out, r.get(0), r.get(1), r.get(2))?;
        }
        // SUM(BIGINT) is NUMERIC: the cast back fails rather than wraps.
        let side = side_rows_sql(
            "CASE WHEN kind = 'decision.gap' THEN (details::jsonb ->> 'count')::BIGINT ELSE 0 END",
            "::BIGINT",
        );
        for r in tx.query(&side, &[from, to]).await.map_err(pg)? {
            let kind: String = r.get(0);
            fold_side(&mut out, &kind, r.get(1), r.get(2));
        }
        for r in tx
            .query(&by_model_sql("::BIGINT"), &[from, to])
            .await
            .map_err(pg)?
        {
            out.by_model.insert(
                r.get(0),
                ModelTotals {
                    requests: from_db(r.get(1)),
                    cost: from_db(r.get(2)),
                },
            );
        }
        out.cited_versions = tx
            .query(&cited_sql(), &[from, to])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let bounds = bounds_json(&query.bounds)?;
        let n: i64 = tx
            .query_one(&unapproved_count_sql(BOUNDS), &[from, to, &bounds])
            .await
            .map_err(pg)?
            .get(0);
        out.unapproved_above_bound = from_db(n);
        let limit = i64::from(query.examples);
        out.unapproved_examples = tx
            .query(
                &unapproved_examples_sql(BOUNDS),
                &[from, to, &bounds, &limit],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| UnapprovedDecision {
                seq: r.get(0),
                at_ms: r.get(1),
                project_id: r.get(2),
                client_id: r.get(3),
                host: r.get(4),
                model: r.get(5),
                estimate: from_db(r.get(6)),
                above: from_db(r.get(7)),
                policy_version: r.get(8),
            })
            .collect();
        tx.commit().await.map_err(pg)?;
        Ok(out)
    }
}
