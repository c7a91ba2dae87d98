//! Anomalies as the store sees them (docs/anomalies.md): the hourly ledger series the detector
//! reads, and the `anomalies` table it writes. The table's primary key is
//! `(kind, project_id, client_id, subject, window_from_ms)`, so running detection again over the
//! same hours inserts nothing new (`ON CONFLICT DO NOTHING`): the first finding stays.

use super::StoreError;

/// The ledger of one (project, client, host) in one hour.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HourlyUsage {
    pub project_id: Option<String>,
    pub client_id: Option<String>,
    pub host: Option<String>,
    /// Start of the hour (UTC), ms.
    pub hour_ms: i64,
    pub requests: u64,
    /// Sum of `amount`, micro-USD.
    pub cost: u64,
    /// The largest single `amount` in the hour, micro-USD.
    pub max_amount: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnomalyKind {
    SpendSpike,
    RequestSpike,
    CostlyRequest,
    NewEndpoint,
    OffHoursBurst,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 5] = [
        AnomalyKind::SpendSpike,
        AnomalyKind::RequestSpike,
        AnomalyKind::CostlyRequest,
        AnomalyKind::NewEndpoint,
        AnomalyKind::OffHoursBurst,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::SpendSpike => "spend_spike",
            AnomalyKind::RequestSpike => "request_spike",
            AnomalyKind::CostlyRequest => "costly_request",
            AnomalyKind::NewEndpoint => "new_endpoint",
            AnomalyKind::OffHoursBurst => "off_hours_burst",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What `baseline` and `observed` count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Integer micro-USD.
    UsdMicros,
    Requests,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::UsdMicros => "usd_micros",
            Unit::Requests => "requests",
        }
    }

    fn from_db(s: &str) -> Self {
        if s == "usd_micros" {
            Unit::UsdMicros
        } else {
            Unit::Requests
        }
    }
}

/// One finding, with the numbers that explain it.
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub project_id: String,
    /// `None`: the project as a whole.
    pub client_id: Option<String>,
    /// What else identifies it: the host of a `new_endpoint`.
    pub subject: Option<String>,
    /// How unusual (robust z-score for spikes and costly requests; see docs/anomalies.md).
    pub score: f64,
    pub baseline: u64,
    pub observed: u64,
    pub unit: Unit,
    pub window_from_ms: i64,
    pub window_to_ms: i64,
    pub explanation: String,
    pub detected_at_ms: i64,
}

/// `GET /v1/anomalies` filters.
#[derive(Clone, Debug, Default)]
pub struct AnomalyQuery {
    pub project_id: Option<String>,
    /// Windows ending after this instant.
    pub since_ms: Option<i64>,
    /// Windows starting before this instant.
    pub until_ms: Option<i64>,
    pub limit: u32,
}

/// How many anomalies of one kind one (project, client, subject) has in a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnomalyCount {
    pub project_id: String,
    pub client_id: Option<String>,
    pub subject: Option<String>,
    pub kind: AnomalyKind,
    pub count: u64,
}

/// The anomalies whose window overlaps a range, as `/v1/analytics` reads them: counts per
/// (project, client, subject, kind), and the newest few of each (project, client, subject) —
/// enough for the newest few of any group built from those (a project, a cost centre, a client,
/// an endpoint, the total).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnomalyRange {
    /// In no particular order.
    pub counts: Vec<AnomalyCount>,
    /// Newest window first (then kind, project, client, subject, as `GET /v1/anomalies`).
    pub latest: Vec<Anomaly>,
}

pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS anomalies (
        kind TEXT NOT NULL,
        project_id TEXT NOT NULL,
        client_id TEXT NOT NULL DEFAULT '',
        subject TEXT NOT NULL DEFAULT '',
        window_from_ms BIGINT NOT NULL,
        window_to_ms BIGINT NOT NULL,
        score DOUBLE PRECISION NOT NULL,
        baseline BIGINT NOT NULL,
        observed BIGINT NOT NULL,
        unit TEXT NOT NULL,
        explanation TEXT NOT NULL,
        detected_at_ms BIGINT NOT NULL,
        PRIMARY KEY (kind, project_id, client_id, subject, window_from_ms))",
    "CREATE INDEX IF NOT EXISTS anomalies_by_window ON anomalies (window_to_ms)",
];

/// The hourly series query, `?1`/`$1` = from, `?2`/`$2` = to (integer division: times ≥ 0).
fn hourly_sql(sum_cast: &str) -> String {
    let t = super::LEDGER_TIME;
    format!(
        "SELECT project_id, client_id, host, ({t} / 3600000) * 3600000 AS hour_ms, COUNT(*),
           COALESCE(SUM(amount), 0){sum_cast}, COALESCE(MAX(amount), 0)
         FROM usage_ledger WHERE {t} >= $1 AND {t} < $2
         GROUP BY project_id, client_id, host, hour_ms"
    )
}

fn list_sql(q: &AnomalyQuery) -> (String, Vec<String>) {
    // Parameters: $1 limit, then project and since as present (as text, cast where needed).
    let mut wheres = Vec::new();
    let mut n = 1;
    if q.project_id.is_some() {
        n += 1;
        wheres.push(format!("project_id = ${n}"));
    }
    if q.since_ms.is_some() {
        n += 1;
        wheres.push(format!("window_to_ms > ${n}"));
    }
    if q.until_ms.is_some() {
        n += 1;
        wheres.push(format!("window_from_ms < ${n}"));
    }
    let w = if wheres.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", wheres.join(" AND "))
    };
    (
        format!(
            "SELECT kind, project_id, client_id, subject, window_from_ms, window_to_ms, score,
               baseline, observed, unit, explanation, detected_at_ms
             FROM anomalies {w}
             ORDER BY window_from_ms DESC, kind, project_id, client_id, subject LIMIT $1"
        ),
        wheres,
    )
}

/// Windows overlapping `[$1, $2)`.
const IN_RANGE: &str = "window_to_ms > $1 AND window_from_ms < $2";

fn counts_sql() -> String {
    format!(
        "SELECT project_id, client_id, subject, kind, COUNT(*) FROM anomalies WHERE {IN_RANGE}
         GROUP BY project_id, client_id, subject, kind"
    )
}

/// `$3`: how many of each (project, client, subject).
fn latest_sql() -> String {
    format!(
        "SELECT kind, project_id, client_id, subject, window_from_ms, window_to_ms, score,
           baseline, observed, unit, explanation, detected_at_ms
         FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY project_id, client_id, subject
                 ORDER BY window_from_ms DESC, kind) AS rn
               FROM anomalies WHERE {IN_RANGE}) AS ranked
         WHERE rn <= $3
         ORDER BY window_from_ms DESC, kind, project_id, client_id, subject"
    )
}

fn to_count(
    project_id: String,
    client_id: String,
    subject: String,
    kind: &str,
    count: i64,
) -> Result<AnomalyCount, StoreError> {
    let kind = AnomalyKind::parse(kind).ok_or_else(|| {
        StoreError::Backend(format!("unknown anomaly kind {kind:?} in the store"))
    })?;
    let opt = |s: String| if s.is_empty() { None } else { Some(s) };
    Ok(AnomalyCount {
        project_id,
        client_id: opt(client_id),
        subject: opt(subject),
        kind,
        count: super::from_db(count),
    })
}

/// A reported number above the column (only from sums near 2^63 µ$) is stored as the largest
/// one rather than refusing the whole batch of findings.
fn clamp(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

#[allow(clippy::too_many_arguments)]
fn row_to_anomaly(
    kind: String,
    project_id: String,
    client_id: String,
    subject: String,
    window: (i64, i64),
    score: f64,
    baseline: i64,
    observed: i64,
    unit: String,
    explanation: String,
    detected_at_ms: i64,
) -> Result<Anomaly, StoreError> {
    let kind = AnomalyKind::parse(&kind).ok_or_else(|| {
        StoreError::Backend(format!("unknown anomaly kind {kind:?} in the store"))
    })?;
    let opt = |s: String| if s.is_empty() { None } else { Some(s) };
    Ok(Anomaly {
        kind,
        project_id,
        client_id: opt(client_id),
        subject: opt(subject),
        score,
        baseline: super::from_db(baseline),
        observed: super::from_db(observed),
        unit: Unit::from_db(&unit),
        window_from_ms: window.0,
        window_to_ms: window.1,
        explanation,
        detected_at_ms,
    })
}

pub(crate) mod sqlite {
    use rusqlite::{params, Connection, ToSql};

    use super::clamp;
    use super::{
        counts_sql, hourly_sql, latest_sql, list_sql, row_to_anomaly, to_count, Anomaly,
        AnomalyQuery, AnomalyRange, HourlyUsage,
    };
    use crate::store::{from_db, StoreError};

    fn backend(e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend(e.to_string())
    }

    pub(crate) fn range(
        c: &Connection,
        from_ms: i64,
        to_ms: i64,
        latest: u32,
    ) -> Result<AnomalyRange, StoreError> {
        let mut st = c
            .prepare(&counts_sql().replace('$', "?"))
            .map_err(backend)?;
        let counts = st
            .query_map([from_ms, to_ms], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?
            .into_iter()
            .map(|(p, cl, s, k, n)| to_count(p, cl, s, &k, n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut st = c
            .prepare(&latest_sql().replace('$', "?"))
            .map_err(backend)?;
        let rows = st
            .query_map([from_ms, to_ms, i64::from(latest)], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    (r.get(4)?, r.get(5)?),
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                ))
            })
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        let latest = rows
            .into_iter()
            .map(|(k, p, cl, s, w, sc, b, o, u, e, d)| {
                row_to_anomaly(k, p, cl, s, w, sc, b, o, u, e, d)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AnomalyRange { counts, latest })
    }

    pub(crate) fn hourly(
        c: &Connection,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<HourlyUsage>, StoreError> {
        let mut st = c
            .prepare(&hourly_sql("").replace('$', "?"))
            .map_err(backend)?;
        let rows = st
            .query_map([from_ms, to_ms], |r| {
                Ok(HourlyUsage {
                    project_id: r.get(0)?,
                    client_id: r.get(1)?,
                    host: r.get(2)?,
                    hour_ms: r.get(3)?,
                    requests: from_db(r.get(4)?),
                    cost: from_db(r.get(5)?),
                    max_amount: from_db(r.get(6)?),
                })
            })
            .map_err(backend)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(backend)
    }

    pub(crate) fn put(c: &mut Connection, found: &[Anomaly]) -> Result<Vec<Anomaly>, StoreError> {
        let tx = c.transaction().map_err(backend)?;
        let mut new = Vec::new();
        for a in found {
            let inserted = tx
                .execute(
                    "INSERT INTO anomalies (kind, project_id, client_id, subject, window_from_ms,
                       window_to_ms, score, baseline, observed, unit, explanation, detected_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT DO NOTHING",
                    params![
                        a.kind.as_str(),
                        a.project_id,
                        a.client_id.as_deref().unwrap_or(""),
                        a.subject.as_deref().unwrap_or(""),
                        a.window_from_ms,
                        a.window_to_ms,
                        a.score,
                        clamp(a.baseline),
                        clamp(a.observed),
                        a.unit.as_str(),
                        a.explanation,
                        a.detected_at_ms
                    ],
                )
                .map_err(backend)?;
            if inserted > 0 {
                new.push(a.clone());
            }
        }
        tx.commit().map_err(backend)?;
        Ok(new)
    }

    pub(crate) fn list(c: &Connection, q: &AnomalyQuery) -> Result<Vec<Anomaly>, StoreError> {
        let (sql, _) = list_sql(q);
        let mut st = c.prepare(&sql.replace('$', "?")).map_err(backend)?;
        let limit = i64::from(q.limit);
        let mut args: Vec<&dyn ToSql> = vec![&limit];
        if let Some(p) = &q.project_id {
            args.push(p);
        }
        if let Some(s) = &q.since_ms {
            args.push(s);
        }
        if let Some(u) = &q.until_ms {
            args.push(u);
        }
        let rows = st
            .query_map(args.as_slice(), |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    (r.get(4)?, r.get(5)?),
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                ))
            })
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        rows.into_iter()
            .map(|(k, p, cl, s, w, sc, b, o, u, e, d)| {
                row_to_anomaly(k, p, cl, s, w, sc, b, o, u, e, d)
            })
            .collect()
    }
}

pub(crate) mod postgres {
    use tokio_postgres::types::ToSql;

    use super::clamp;
    use super::{
        counts_sql, hourly_sql, latest_sql, list_sql, row_to_anomaly, to_count, Anomaly,
        AnomalyQuery, AnomalyRange, HourlyUsage,
    };
    use crate::store::{from_db, StoreError};

    fn pg(e: tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            Some(db) => {
                StoreError::Backend(format!("postgres {}: {}", db.code().code(), db.message()))
            }
            None => StoreError::Backend(e.to_string()),
        }
    }

    pub(crate) async fn hourly(
        c: &tokio_postgres::Client,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<HourlyUsage>, StoreError> {
        // SUM(BIGINT) is NUMERIC: the cast back fails rather than wraps.
        let rows = c
            .query(&hourly_sql("::BIGINT"), &[&from_ms, &to_ms])
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| HourlyUsage {
                project_id: r.get(0),
                client_id: r.get(1),
                host: r.get(2),
                hour_ms: r.get(3),
                requests: from_db(r.get(4)),
                cost: from_db(r.get(5)),
                max_amount: from_db(r.get(6)),
            })
            .collect())
    }

    pub(crate) async fn put(
        c: &mut deadpool_postgres::Object,
        found: &[Anomaly],
    ) -> Result<Vec<Anomaly>, StoreError> {
        let tx = c.transaction().await.map_err(pg)?;
        let mut new = Vec::new();
        for a in found {
            let inserted = tx
                .execute(
                    "INSERT INTO anomalies (kind, project_id, client_id, subject, window_from_ms,
                       window_to_ms, score, baseline, observed, unit, explanation, detected_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT DO NOTHING",
                    &[
                        &a.kind.as_str(),
                        &a.project_id,
                        &a.client_id.as_deref().unwrap_or(""),
                        &a.subject.as_deref().unwrap_or(""),
                        &a.window_from_ms,
                        &a.window_to_ms,
                        &a.score,
                        &clamp(a.baseline),
                        &clamp(a.observed),
                        &a.unit.as_str(),
                        &a.explanation,
                        &a.detected_at_ms,
                    ],
                )
                .await
                .map_err(pg)?;
            if inserted > 0 {
                new.push(a.clone());
            }
        }
        tx.commit().await.map_err(pg)?;
        Ok(new)
    }

    pub(crate) async fn list(
        c: &tokio_postgres::Client,
        q: &AnomalyQuery,
    ) -> Result<Vec<Anomaly>, StoreError> {
        let (sql, _) = list_sql(q);
        let limit = i64::from(q.limit);
        let mut args: Vec<&(dyn ToSql + Sync)> = vec![&limit];
        if let Some(p) = &q.project_id {
            args.push(p);
        }
        if let Some(s) = &q.since_ms {
            args.push(s);
        }
        if let Some(u) = &q.until_ms {
            args.push(u);
        }
        let rows = c.query(&sql, &args).await.map_err(pg)?;
        rows.iter()
            .map(|r| {
                row_to_anomaly(
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    (r.get(4), r.get(5)),
                    r.get(6),
                    r.get(7),
                    r.get(8),
                    r.get(9),
                    r.get(10),
                    r.get(11),
                )
            })
            .collect()
    }

    pub(crate) async fn range(
        c: &tokio_postgres::Client,
        from_ms: i64,
        to_ms: i64,
        latest: u32,
    ) -> Result<AnomalyRange, StoreError> {
        let counts = c
            .query(&counts_sql(), &[&from_ms, &to_ms])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| to_count(r.get(0), r.get(1), r.get(2), r.get::<_, &str>(3), r.get(4)))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = c
            .query(&latest_sql(), &[&from_ms, &to_ms, &i64::from(latest)])
            .await
            .map_err(pg)?;
        let latest = rows
            .iter()
            .map(|r| {
                row_to_anomaly(
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get(3),
                    (r.get(4), r.get(5)),
                    r.get(6),
                    r.get(7),
                    r.get(8),
                    r.get(9),
                    r.get(10),
                    r.get(11),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AnomalyRange { counts, latest })
    }
}
