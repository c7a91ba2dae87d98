//! Alerts in the store (crate::alerts, docs/alerts.md): one row per alert under a unique key
//! (so a fleet raises each once), one row per channel with its delivery status, and a claim
//! lease so exactly one sidecar delivers it.

use crate::alerts::{AlertTarget, NewAlert};

/// Tables of this module, created after `SCHEMA` by both backends.
pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS alerts (
        alert_key TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        counter_key TEXT,
        project_id TEXT,
        client_id TEXT,
        threshold_ppm BIGINT,
        spent BIGINT,
        limit_micros BIGINT,
        amount BIGINT,
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        state TEXT NOT NULL,
        next_attempt_ms BIGINT NOT NULL,
        claimed_by TEXT,
        claim_until_ms BIGINT NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS alerts_due ON alerts (state, next_attempt_ms)",
    "CREATE INDEX IF NOT EXISTS alerts_by_time ON alerts (created_at_ms)",
    "CREATE TABLE IF NOT EXISTS alert_deliveries (
        alert_key TEXT NOT NULL,
        channel TEXT NOT NULL,
        target TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        last_error TEXT,
        sent_by TEXT,
        updated_at_ms BIGINT,
        PRIMARY KEY (alert_key, channel))",
];

/// An alert this sidecar now holds the claim on, with the channels still to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedAlert {
    pub key: String,
    pub kind: String,
    pub subject: String,
    pub text: String,
    pub payload: String,
    pub pending: Vec<PendingDelivery>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingDelivery {
    pub target: AlertTarget,
    /// Tries so far.
    pub attempts: u32,
}

/// One channel's result of one try: `sent`, `retrying` or `failed` (given up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryOutcome {
    pub channel: String,
    pub status: String,
    pub attempts: u32,
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryUpdate {
    pub key: String,
    pub claimer: String,
    pub now_ms: i64,
    /// `Some`: a channel is retrying, the alert is due again then; `None`: done.
    pub next_attempt_ms: Option<i64>,
    pub outcomes: Vec<DeliveryOutcome>,
}

/// An alert with its deliveries, for `GET /v1/alerts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertRecord {
    pub key: String,
    pub kind: String,
    pub counter: Option<String>,
    pub project_id: Option<String>,
    pub client_id: Option<String>,
    pub threshold_ppm: Option<u64>,
    pub spent: Option<u64>,
    pub limit: Option<u64>,
    pub amount: Option<u64>,
    pub subject: String,
    pub created_at_ms: i64,
    /// `pending` (a channel still to send) or `done`.
    pub state: String,
    pub deliveries: Vec<DeliveryState>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryState {
    pub channel: String,
    /// `pending`, `sent`, `retrying` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The sidecar (claimer id) that sent it.
    pub sent_by: Option<String>,
    pub updated_at_ms: Option<i64>,
}

fn opt_db(v: Option<u64>) -> Result<Option<i64>, super::StoreError> {
    v.map(super::to_db).transpose()
}

fn opt_from(v: Option<i64>) -> Option<u64> {
    v.map(super::from_db)
}

fn attempts_from(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn attach(records: &mut [AlertRecord], rows: Vec<(String, DeliveryState)>) {
    let index: std::collections::HashMap<String, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.key.clone(), i))
        .collect();
    for (key, d) in rows {
        if let Some(r) = index.get(&key).and_then(|&i| records.get_mut(i)) {
            r.deliveries.push(d);
        }
    }
}

const ALERT_COLUMNS: &str = "alert_key, kind, counter_key, project_id, client_id, threshold_ppm,
    spent, limit_micros, amount, subject, created_at_ms, state";

pub(crate) mod sqlite {
    use rusqlite::{params, Connection, TransactionBehavior};

    use super::*;
    use crate::store::StoreError;

    fn backend(e: impl std::fmt::Display) -> StoreError {
        StoreError::Backend(e.to_string())
    }

    /// Inserts unless the key exists (inside the caller's transaction); true if inserted.
    pub(crate) fn insert(c: &Connection, a: &NewAlert) -> Result<bool, StoreError> {
        let state = if a.targets.is_empty() {
            "done"
        } else {
            "pending"
        };
        let n = c
            .execute(
                "INSERT INTO alerts (alert_key, kind, counter_key, project_id, client_id,
                   threshold_ppm, spent, limit_micros, amount, subject, body, payload,
                   created_at_ms, state, next_attempt_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?13)
                 ON CONFLICT (alert_key) DO NOTHING",
                params![
                    a.key,
                    a.kind,
                    a.counter,
                    a.project_id,
                    a.client_id,
                    opt_db(a.threshold_ppm)?,
                    opt_db(a.spent)?,
                    opt_db(a.limit)?,
                    opt_db(a.amount)?,
                    a.subject,
                    a.text,
                    a.payload,
                    a.created_at_ms,
                    state
                ],
            )
            .map_err(backend)?;
        if n == 0 {
            return Ok(false);
        }
        for t in &a.targets {
            c.execute(
                "INSERT INTO alert_deliveries (alert_key, channel, target, status)
                 VALUES (?1, ?2, ?3, 'pending') ON CONFLICT (alert_key, channel) DO NOTHING",
                params![a.key, t.channel, t.target],
            )
            .map_err(backend)?;
        }
        Ok(true)
    }

    pub(crate) fn raise(c: &mut Connection, a: &NewAlert) -> Result<bool, StoreError> {
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let inserted = insert(&tx, a)?;
        tx.commit().map_err(backend)?;
        Ok(inserted)
    }

    pub(crate) fn claim(
        c: &mut Connection,
        claimer: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedAlert>, StoreError> {
        // BEGIN IMMEDIATE: the write lock is taken before the read, so two processes on one
        // file cannot both see an alert unclaimed.
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let mut claimed = {
            let mut st = tx
                .prepare(
                    "SELECT alert_key, kind, subject, body, payload FROM alerts
                     WHERE state = 'pending' AND next_attempt_ms <= ?1 AND claim_until_ms <= ?1
                     ORDER BY created_at_ms, alert_key LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = st
                .query_map(params![now_ms, limit], |r| {
                    Ok(ClaimedAlert {
                        key: r.get(0)?,
                        kind: r.get(1)?,
                        subject: r.get(2)?,
                        text: r.get(3)?,
                        payload: r.get(4)?,
                        pending: Vec::new(),
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)?
        };
        for a in &mut claimed {
            tx.execute(
                "UPDATE alerts SET claimed_by = ?2, claim_until_ms = ?3 WHERE alert_key = ?1",
                params![a.key, claimer, now_ms.saturating_add(lease_ms)],
            )
            .map_err(backend)?;
            let mut st = tx
                .prepare(
                    "SELECT channel, target, attempts FROM alert_deliveries
                     WHERE alert_key = ?1 AND status IN ('pending', 'retrying') ORDER BY channel",
                )
                .map_err(backend)?;
            a.pending = st
                .query_map([&a.key], |r| {
                    Ok(PendingDelivery {
                        target: AlertTarget {
                            channel: r.get(0)?,
                            target: r.get(1)?,
                        },
                        attempts: attempts_from(r.get(2)?),
                    })
                })
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(claimed)
    }

    pub(crate) fn record(c: &mut Connection, u: &DeliveryUpdate) -> Result<(), StoreError> {
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        for o in &u.outcomes {
            let sent_by = (o.status == "sent").then_some(u.claimer.as_str());
            tx.execute(
                "UPDATE alert_deliveries SET status = ?3, attempts = ?4, last_error = ?5,
                   sent_by = COALESCE(?6, sent_by), updated_at_ms = ?7
                 WHERE alert_key = ?1 AND channel = ?2",
                params![
                    u.key,
                    o.channel,
                    o.status,
                    i64::from(o.attempts),
                    o.error,
                    sent_by,
                    u.now_ms
                ],
            )
            .map_err(backend)?;
        }
        let (state, next) = match u.next_attempt_ms {
            Some(t) => ("pending", t),
            None => ("done", u.now_ms),
        };
        tx.execute(
            "UPDATE alerts SET state = ?2, next_attempt_ms = ?3, claimed_by = NULL,
               claim_until_ms = 0 WHERE alert_key = ?1",
            params![u.key, state, next],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)
    }

    pub(crate) fn list(c: &Connection, limit: u32) -> Result<Vec<AlertRecord>, StoreError> {
        let mut st = c
            .prepare(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts ORDER BY created_at_ms DESC, alert_key LIMIT ?1"
            ))
            .map_err(backend)?;
        let mut records = st
            .query_map([limit], |r| {
                Ok(AlertRecord {
                    key: r.get(0)?,
                    kind: r.get(1)?,
                    counter: r.get(2)?,
                    project_id: r.get(3)?,
                    client_id: r.get(4)?,
                    threshold_ppm: opt_from(r.get(5)?),
                    spent: opt_from(r.get(6)?),
                    limit: opt_from(r.get(7)?),
                    amount: opt_from(r.get(8)?),
                    subject: r.get(9)?,
                    created_at_ms: r.get(10)?,
                    state: r.get(11)?,
                    deliveries: Vec::new(),
                })
            })
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        let oldest = records.iter().map(|r| r.created_at_ms).min();
        if let Some(oldest) = oldest {
            let mut st = c
                .prepare(
                    "SELECT d.alert_key, d.channel, d.status, d.attempts, d.last_error, d.sent_by,
                       d.updated_at_ms
                     FROM alert_deliveries d JOIN alerts a ON a.alert_key = d.alert_key
                     WHERE a.created_at_ms >= ?1 ORDER BY d.alert_key, d.channel",
                )
                .map_err(backend)?;
            let rows = st
                .query_map([oldest], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        DeliveryState {
                            channel: r.get(1)?,
                            status: r.get(2)?,
                            attempts: attempts_from(r.get(3)?),
                            last_error: r.get(4)?,
                            sent_by: r.get(5)?,
                            updated_at_ms: r.get(6)?,
                        },
                    ))
                })
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            attach(&mut records, rows);
        }
        Ok(records)
    }
}

pub(crate) mod postgres {
    use tokio_postgres::Transaction;

    use super::*;
    use crate::store::StoreError;

    fn pg(e: tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            Some(db) => {
                StoreError::Backend(format!("postgres {}: {}", db.code().code(), db.message()))
            }
            None => StoreError::Backend(e.to_string()),
        }
    }

    /// Inserts unless the key exists (inside the caller's transaction); true if inserted.
    /// Two sidecars inserting one key at once: the second waits on the unique index and then
    /// inserts nothing.
    pub(crate) async fn insert(tx: &Transaction<'_>, a: &NewAlert) -> Result<bool, StoreError> {
        let state = if a.targets.is_empty() {
            "done"
        } else {
            "pending"
        };
        let (ppm, spent, limit, amount) = (
            opt_db(a.threshold_ppm)?,
            opt_db(a.spent)?,
            opt_db(a.limit)?,
            opt_db(a.amount)?,
        );
        let n = tx
            .execute(
                "INSERT INTO alerts (alert_key, kind, counter_key, project_id, client_id,
                   threshold_ppm, spent, limit_micros, amount, subject, body, payload,
                   created_at_ms, state, next_attempt_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $13)
                 ON CONFLICT (alert_key) DO NOTHING",
                &[
                    &a.key,
                    &a.kind,
                    &a.counter,
                    &a.project_id,
                    &a.client_id,
                    &ppm,
                    &spent,
                    &limit,
                    &amount,
                    &a.subject,
                    &a.text,
                    &a.payload,
                    &a.created_at_ms,
                    &state,
                ],
            )
            .await
            .map_err(pg)?;
        if n == 0 {
            return Ok(false);
        }
        for t in &a.targets {
            tx.execute(
                "INSERT INTO alert_deliveries (alert_key, channel, target, status)
                 VALUES ($1, $2, $3, 'pending') ON CONFLICT (alert_key, channel) DO NOTHING",
                &[&a.key, &t.channel, &t.target],
            )
            .await
            .map_err(pg)?;
        }
        Ok(true)
    }

    pub(crate) async fn claim(
        tx: &Transaction<'_>,
        claimer: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedAlert>, StoreError> {
        // SKIP LOCKED: a sidecar claiming at the same moment takes other rows, never these;
        // the re-checked WHERE keeps a row claimed a moment ago (lease in the future) out.
        let rows = tx
            .query(
                "UPDATE alerts SET claimed_by = $1, claim_until_ms = $2
                 WHERE alert_key IN (
                   SELECT alert_key FROM alerts
                   WHERE state = 'pending' AND next_attempt_ms <= $3 AND claim_until_ms <= $3
                   ORDER BY created_at_ms, alert_key LIMIT $4
                   FOR UPDATE SKIP LOCKED)
                 RETURNING alert_key, kind, subject, body, payload, created_at_ms",
                &[
                    &claimer,
                    &now_ms.saturating_add(lease_ms),
                    &now_ms,
                    &i64::from(limit),
                ],
            )
            .await
            .map_err(pg)?;
        let mut rows: Vec<_> = rows
            .iter()
            .map(|r| (r.get::<_, i64>(5), r.get::<_, String>(0), r))
            .collect();
        rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut claimed = Vec::with_capacity(rows.len());
        for (_, key, r) in rows {
            let pending = tx
                .query(
                    "SELECT channel, target, attempts FROM alert_deliveries
                     WHERE alert_key = $1 AND status IN ('pending', 'retrying') ORDER BY channel",
                    &[&key],
                )
                .await
                .map_err(pg)?
                .iter()
                .map(|d| PendingDelivery {
                    target: AlertTarget {
                        channel: d.get(0),
                        target: d.get(1),
                    },
                    attempts: attempts_from(d.get(2)),
                })
                .collect();
            claimed.push(ClaimedAlert {
                kind: r.get(1),
                subject: r.get(2),
                text: r.get(3),
                payload: r.get(4),
                key,
                pending,
            });
        }
        Ok(claimed)
    }

    pub(crate) async fn record(tx: &Transaction<'_>, u: &DeliveryUpdate) -> Result<(), StoreError> {
        for o in &u.outcomes {
            let sent_by = (o.status == "sent").then_some(u.claimer.as_str());
            tx.execute(
                "UPDATE alert_deliveries SET status = $3, attempts = $4, last_error = $5,
                   sent_by = COALESCE($6, sent_by), updated_at_ms = $7
                 WHERE alert_key = $1 AND channel = $2",
                &[
                    &u.key,
                    &o.channel,
                    &o.status,
                    &i64::from(o.attempts),
                    &o.error,
                    &sent_by,
                    &u.now_ms,
                ],
            )
            .await
            .map_err(pg)?;
        }
        let (state, next) = match u.next_attempt_ms {
            Some(t) => ("pending", t),
            None => ("done", u.now_ms),
        };
        tx.execute(
            "UPDATE alerts SET state = $2, next_attempt_ms = $3, claimed_by = NULL,
               claim_until_ms = 0 WHERE alert_key = $1",
            &[&u.key, &state, &next],
        )
        .await
        .map_err(pg)?;
        Ok(())
    }

    pub(crate) async fn list(
        tx: &Transaction<'_>,
        limit: u32,
    ) -> Result<Vec<AlertRecord>, StoreError> {
        let rows = tx
            .query(
                &format!(
                    "SELECT {ALERT_COLUMNS} FROM alerts
                     ORDER BY created_at_ms DESC, alert_key LIMIT $1"
                ),
                &[&i64::from(limit)],
            )
            .await
            .map_err(pg)?;
        let mut records: Vec<AlertRecord> = rows
            .iter()
            .map(|r| AlertRecord {
                key: r.get(0),
                kind: r.get(1),
                counter: r.get(2),
                project_id: r.get(3),
                client_id: r.get(4),
                threshold_ppm: opt_from(r.get(5)),
                spent: opt_from(r.get(6)),
                limit: opt_from(r.get(7)),
                amount: opt_from(r.get(8)),
                subject: r.get(9),
                created_at_ms: r.get(10),
                state: r.get(11),
                deliveries: Vec::new(),
            })
            .collect();
        let keys: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
        let rows = tx
            .query(
                "SELECT alert_key, channel, status, attempts, last_error, sent_by, updated_at_ms
                 FROM alert_deliveries WHERE alert_key = ANY($1) ORDER BY alert_key, channel",
                &[&keys],
            )
            .await
            .map_err(pg)?;
        let rows = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    DeliveryState {
                        channel: r.get(1),
                        status: r.get(2),
                        attempts: attempts_from(r.get(3)),
                        last_error: r.get(4),
                        sent_by: r.get(5),
                        updated_at_ms: r.get(6),
                    },
                )
            })
            .collect();
        attach(&mut records, rows);
        Ok(records)
    }
}
