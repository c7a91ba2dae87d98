//! SQLite backend: one file (`<data-dir>/pag0.db`), WAL journal, `synchronous=FULL` so an
//! acknowledged batch survives a crash or power loss. rusqlite is blocking: every call runs on
//! tokio's blocking pool while holding the one connection (SQLite writes are serial anyway).
//! Several processes may open the same file: `BEGIN IMMEDIATE` takes the write lock up front,
//! which makes a sync (read counters, grant, write) atomic across them too.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::alert;
use super::anomaly::{self, Anomaly, AnomalyQuery, AnomalyRange, HourlyUsage};
use super::approval::{
    self, Approval, ApprovalDecision, ApprovalStatus, ConsumeAsk, ConsumeOutcome,
};
use super::audit;
use super::lease::{consume, Room};
use super::{
    from_db, keys_to_lock, to_db, usage_per_counter, AuditEvent, AuditHead, AuditQuery, AuditRow,
    CounterState, LeaseGrant, LeaseState, NewPolicy, PolicyMeta, PolicyVersion, Store, StoreError,
    SyncOutcome, SyncWrite, UsageBucket, UsageException, UsageTotals, ADDED_COLUMNS, SCHEMA,
};
use super::{AlertRecord, ClaimedAlert, DeliveryUpdate};
use crate::alerts::{detect, violations, AlertRules, NewAlert};

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

// === impl SqliteStore ===

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/pag0.db`.
    pub fn open_dir(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Backend(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        Self::open(&data_dir.join("pag0.db"))
    }

    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend)?;
        for stmt in SCHEMA.iter().chain(alert::SCHEMA) {
            conn.execute(stmt, []).map_err(backend)?;
        }
        add_columns(&conn)?;
        for stmt in super::anomaly::SCHEMA
            .iter()
            .chain(super::decision_stats::SCHEMA)
            .chain(super::learned::SCHEMA)
            .chain(super::rollup::SCHEMA)
        {
            conn.execute(stmt, []).map_err(backend)?;
        }
        let mut conn = conn;
        super::rollup::sqlite::ensure_built(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| backend("sqlite connection lock poisoned"))?;
            f(&mut guard)
        })
        .await
        .map_err(backend)?
    }
}

/// `ADDED_COLUMNS` that an older database lacks. Another process opening the same file may add
/// one between the check and the `ALTER`: its "duplicate column" error means done, not failed.
fn add_columns(conn: &Connection) -> Result<(), StoreError> {
    for (table, column, definition) in ADDED_COLUMNS {
        let mut st = conn
            .prepare(&format!("PRAGMA table_info({table})"))
            .map_err(backend)?;
        let present = st
            .query_map([], |r| r.get::<_, String>(1))
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?
            .iter()
            .any(|c| c == column);
        if present {
            continue;
        }
        match conn.execute(
            &format!("ALTER TABLE {table} ADD COLUMN {column} {definition}"),
            [],
        ) {
            Ok(_) => {}
            Err(e) if e.to_string().contains("duplicate column name") => {}
            Err(e) => return Err(backend(e)),
        }
    }
    Ok(())
}

fn read_policy(
    conn: &Connection,
    version: Option<i64>,
) -> Result<Option<PolicyVersion>, StoreError> {
    let row = |r: &rusqlite::Row<'_>| {
        Ok(PolicyVersion {
            meta: PolicyMeta {
                version: r.get(0)?,
                author: r.get(2)?,
                created_at_ms: r.get(3)?,
            },
            document: r.get(1)?,
        })
    };
    let found = match version {
        Some(v) => conn
            .query_row(
                "SELECT version, document, author, created_at_ms FROM policy_versions WHERE version = ?1",
                [v],
                row,
            )
            .optional(),
        None => conn
            .query_row(
                "SELECT version, document, author, created_at_ms FROM policy_versions
                 ORDER BY version DESC LIMIT 1",
                [],
                row,
            )
            .optional(),
    };
    found.map_err(backend)
}

fn sync_tx(
    conn: &mut Connection,
    w: &SyncWrite,
    rules: &AlertRules,
) -> Result<SyncOutcome, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;

    // 1. Exactly once: a batch is applied only the first time its (instance, seq) is seen.
    let mut duplicate = false;
    if !w.usage.is_empty() || !w.exceptions.is_empty() || !w.audit.is_empty() {
        let seen: Option<String> = tx
            .query_row(
                "SELECT digest FROM seen_batches WHERE instance_id = ?1 AND seq = ?2",
                params![w.instance_id, w.seq],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        match seen {
            Some(d) if d == w.digest || w.legacy_digest.as_ref() == Some(&d) => duplicate = true,
            Some(_) => {
                return Err(StoreError::SeqReused {
                    instance_id: w.instance_id.clone(),
                    seq: w.seq,
                })
            }
            None => {
                tx.execute(
                    "INSERT INTO seen_batches (instance_id, seq, digest, committed_at_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![w.instance_id, w.seq, w.digest, w.now_ms],
                )
                .map_err(backend)?;
            }
        }
    }

    for key in keys_to_lock(w) {
        tx.execute(
            "INSERT INTO budget_counters (counter_key, spent, updated_at_ms) VALUES (?1, 0, ?2)
             ON CONFLICT (counter_key) DO NOTHING",
            params![key, w.now_ms],
        )
        .map_err(backend)?;
    }

    // 2. The ledger and the counters, in the same transaction as the seen-batch row.
    let mut alerts_raised = Vec::new();
    if !duplicate {
        for e in &w.exceptions {
            tx.execute(
                "INSERT INTO usage_exceptions (instance_id, seq, idx, kind, record, reason, committed_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                params![
                    e.instance_id,
                    e.seq,
                    e.idx,
                    e.kind,
                    e.record,
                    e.reason,
                    e.committed_at_ms
                ],
            )
            .map_err(backend)?;
        }
        let mut moved = Vec::new();
        for (idx, rec) in w.usage.iter().enumerate() {
            tx.execute(
                "INSERT INTO usage_ledger (instance_id, seq, idx, amount, counters, project_id,
                   client_id, host, at_ms, committed_at_ms, cache_hit, savings)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    w.instance_id,
                    w.seq,
                    i64::try_from(idx).map_err(backend)?,
                    to_db(rec.amount)?,
                    rec.counters.join(" "),
                    rec.project_id,
                    rec.client_id,
                    rec.host,
                    rec.at_ms,
                    w.now_ms,
                    rec.cache_hit,
                    to_db(rec.savings)?
                ],
            )
            .map_err(backend)?;
        }
        for (key, amount) in usage_per_counter(&w.usage)? {
            let spent: i64 = tx
                .query_row(
                    "SELECT spent FROM budget_counters WHERE counter_key = ?1",
                    [&key],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            let next = from_db(spent)
                .checked_add(amount)
                .ok_or(StoreError::OutOfRange(amount))?;
            tx.execute(
                "UPDATE budget_counters SET spent = ?2, updated_at_ms = ?3 WHERE counter_key = ?1",
                params![key, to_db(next)?, w.now_ms],
            )
            .map_err(backend)?;
            moved.push((key.clone(), from_db(spent), next));
            let held: Option<i64> = tx
                .query_row(
                    "SELECT granted FROM leases WHERE instance_id = ?1 AND counter_key = ?2",
                    params![w.instance_id, key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            if let Some(held) = held {
                tx.execute(
                    "UPDATE leases SET granted = ?3 WHERE instance_id = ?1 AND counter_key = ?2",
                    params![w.instance_id, key, to_db(consume(from_db(held), amount))?],
                )
                .map_err(backend)?;
            }
        }
        // Alerts this batch raised, once per key (crate::alerts).
        let found = detect(rules, &moved, &w.usage, &w.instance_id, w.seq, w.now_ms)
            .into_iter()
            .chain(violations(rules, &w.audit, w.now_ms));
        for a in found {
            if alert::sqlite::insert(&tx, &a)? {
                alerts_raised.push(a.kind);
            }
        }
    }

    // 3. Slices handed back.
    for key in &w.release {
        tx.execute(
            "DELETE FROM leases WHERE instance_id = ?1 AND counter_key = ?2",
            params![w.instance_id, key],
        )
        .map_err(backend)?;
    }

    // 4. Grants, counter by counter in key order.
    let mut asks: Vec<_> = w.leases.iter().collect();
    asks.sort_by(|a, b| a.counter.cmp(&b.counter));
    let mut grants = Vec::with_capacity(asks.len());
    for ask in asks {
        tx.execute(
            "DELETE FROM leases WHERE counter_key = ?1 AND expires_at_ms <= ?2",
            params![ask.counter, w.now_ms],
        )
        .map_err(backend)?;
        let spent: i64 = tx
            .query_row(
                "SELECT spent FROM budget_counters WHERE counter_key = ?1",
                [&ask.counter],
                |r| r.get(0),
            )
            .map_err(backend)?;
        let others: i64 = tx
            .query_row(
                "SELECT CAST(COALESCE(SUM(granted), 0) AS INTEGER) FROM leases
                 WHERE counter_key = ?1 AND instance_id <> ?2",
                params![ask.counter, w.instance_id],
                |r| r.get(0),
            )
            .map_err(backend)?;
        let mine: i64 = tx
            .query_row(
                "SELECT granted FROM leases WHERE counter_key = ?1 AND instance_id = ?2",
                params![ask.counter, w.instance_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?
            .unwrap_or(0);
        let room = Room {
            limit: ask.limit,
            spent: from_db(spent),
            others: from_db(others),
            mine: from_db(mine),
        };
        let granted = room.grant(ask.want);
        let expires_at_ms = w.now_ms.saturating_add(w.lease_ttl_ms);
        tx.execute(
            "INSERT INTO leases (instance_id, counter_key, granted, expires_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (instance_id, counter_key)
             DO UPDATE SET granted = excluded.granted, expires_at_ms = excluded.expires_at_ms",
            params![w.instance_id, ask.counter, to_db(granted)?, expires_at_ms],
        )
        .map_err(backend)?;
        grants.push(LeaseGrant {
            counter: ask.counter.clone(),
            granted,
            expires_at_ms,
            added: granted.saturating_sub(room.mine),
            spent: room.spent,
        });
    }

    // The ledger's rollups, summed from the batch.
    if !duplicate {
        super::rollup::sqlite::upsert_usage(
            &tx,
            &super::rollup::usage_deltas(&w.usage, w.now_ms)?,
        )?;
    }

    // 3. The batch's audit rows (decision events), last: the chain head's lock is held for
    // as short a time as the transaction allows.
    if !duplicate && !w.audit.is_empty() {
        audit::sqlite::append(&tx, w.audit.clone())?;
    }

    tx.commit().map_err(backend)?;
    Ok(SyncOutcome {
        duplicate,
        leases: grants,
        alerts_raised,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(backend))
            .await
    }

    async fn latest_policy_version(&self) -> Result<i64, StoreError> {
        self.run(|c| {
            c.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM policy_versions",
                [],
                |r| r.get(0),
            )
            .map_err(backend)
        })
        .await
    }

    async fn latest_policy(&self) -> Result<Option<PolicyVersion>, StoreError> {
        self.run(|c| read_policy(c, None)).await
    }

    async fn policy_version(&self, version: i64) -> Result<Option<PolicyVersion>, StoreError> {
        self.run(move |c| read_policy(c, Some(version))).await
    }

    async fn policy_history(&self, limit: u32) -> Result<Vec<PolicyMeta>, StoreError> {
        self.run(move |c| {
            let mut st = c
                .prepare(
                    "SELECT version, author, created_at_ms FROM policy_versions
                     ORDER BY version DESC LIMIT ?1",
                )
                .map_err(backend)?;
            let rows = st
                .query_map([limit], |r| {
                    Ok(PolicyMeta {
                        version: r.get(0)?,
                        author: r.get(1)?,
                        created_at_ms: r.get(2)?,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn put_policy(&self, new: NewPolicy) -> Result<PolicyMeta, StoreError> {
        self.run(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let latest: i64 = tx
                .query_row("SELECT COALESCE(MAX(version), 0) FROM policy_versions", [], |r| r.get(0))
                .map_err(backend)?;
            if let Some(expected) = new.expected_version {
                if expected != latest {
                    return Err(StoreError::VersionConflict { expected, latest });
                }
            }
            let version = latest + 1;
            tx.execute(
                "INSERT INTO policy_versions (version, document, author, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![version, new.document, new.author, new.at_ms],
            )
            .map_err(backend)?;
            audit::sqlite::append(&tx, new.audit_for(version))?;
            tx.commit().map_err(backend)?;
            Ok(PolicyMeta { version, author: new.author, created_at_ms: new.at_ms })
        })
        .await
    }

    async fn sync(&self, write: SyncWrite) -> Result<SyncOutcome, StoreError> {
        self.run(move |c| sync_tx(c, &write, &AlertRules::default()))
            .await
    }

    async fn sync_alerting(
        &self,
        write: SyncWrite,
        rules: AlertRules,
    ) -> Result<SyncOutcome, StoreError> {
        self.run(move |c| sync_tx(c, &write, &rules)).await
    }

    async fn raise_alert(&self, a: NewAlert) -> Result<bool, StoreError> {
        self.run(move |c| alert::sqlite::raise(c, &a)).await
    }

    async fn claim_alerts(
        &self,
        claimer: String,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedAlert>, StoreError> {
        self.run(move |c| alert::sqlite::claim(c, &claimer, now_ms, lease_ms, limit))
            .await
    }

    async fn record_delivery(&self, update: DeliveryUpdate) -> Result<(), StoreError> {
        self.run(move |c| alert::sqlite::record(c, &update)).await
    }

    async fn alerts(&self, limit: u32) -> Result<Vec<AlertRecord>, StoreError> {
        self.run(move |c| alert::sqlite::list(c, limit)).await
    }

    async fn counters(&self, now_ms: i64) -> Result<Vec<CounterState>, StoreError> {
        self.run(move |c| {
            let mut st = c
                .prepare("SELECT counter_key, spent, updated_at_ms FROM budget_counters ORDER BY counter_key")
                .map_err(backend)?;
            let mut counters = st
                .query_map([], |r| {
                    Ok(CounterState {
                        counter: r.get(0)?,
                        spent: from_db(r.get(1)?),
                        leases: Vec::new(),
                        updated_at_ms: r.get(2)?,
                    })
                })
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            let mut st = c
                .prepare(
                    "SELECT counter_key, instance_id, granted, expires_at_ms FROM leases
                     WHERE expires_at_ms > ?1 ORDER BY counter_key, instance_id",
                )
                .map_err(backend)?;
            let leases = st
                .query_map([now_ms], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        LeaseState {
                            instance_id: r.get(1)?,
                            granted: from_db(r.get(2)?),
                            expires_at_ms: r.get(3)?,
                        },
                    ))
                })
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            attach_leases(&mut counters, leases);
            Ok(counters)
        })
        .await
    }

    async fn usage_exceptions(&self, limit: u32) -> Result<Vec<UsageException>, StoreError> {
        self.run(move |conn| {
            let mut st = conn
                .prepare(
                    "SELECT instance_id, seq, idx, kind, record, reason, committed_at_ms
                     FROM usage_exceptions ORDER BY committed_at_ms DESC, instance_id, seq DESC, idx
                     LIMIT ?1",
                )
                .map_err(backend)?;
            let rows = st
                .query_map([i64::from(limit)], |r| {
                    Ok(UsageException {
                        instance_id: r.get(0)?,
                        seq: r.get(1)?,
                        idx: r.get(2)?,
                        kind: r.get(3)?,
                        record: r.get(4)?,
                        reason: r.get(5)?,
                        committed_at_ms: r.get(6)?,
                    })
                })
                .map_err(backend)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(backend)?;
            Ok(rows)
        })
        .await
    }

    async fn usage_totals(&self, from_ms: i64, to_ms: i64) -> Result<Vec<UsageTotals>, StoreError> {
        self.run(move |c| {
            Ok(
                super::rollup::sqlite::usage_snapshot(c, from_ms, to_ms, None)?
                    .into_iter()
                    .map(|b| b.totals)
                    .collect(),
            )
        })
        .await
    }

    async fn usage_buckets(
        &self,
        from_ms: i64,
        to_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<UsageBucket>, StoreError> {
        let bucket_ms = bucket_ms.max(1);
        self.run(move |c| super::rollup::sqlite::usage_snapshot(c, from_ms, to_ms, Some(bucket_ms)))
            .await
    }

    async fn create_approval(&self, approval: Approval) -> Result<(), StoreError> {
        self.run(move |c| {
            let tx = immediate(c)?;
            approval::sqlite::create(&tx, &approval)?;
            audit::sqlite::append(&tx, vec![audit::approval_created(&approval)])?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn approval(&self, id: String) -> Result<Option<Approval>, StoreError> {
        self.run(move |c| approval::sqlite::get(c, &id)).await
    }

    async fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError> {
        self.run(move |c| approval::sqlite::list(c, status, limit))
            .await
    }

    async fn decide_approval(
        &self,
        decision: ApprovalDecision,
    ) -> Result<Option<Approval>, StoreError> {
        self.run(move |c| {
            let tx = immediate(c)?;
            let decided = approval::sqlite::decide(&tx, &decision)?;
            if let Some(a) = &decided {
                audit::sqlite::append(&tx, vec![audit::approval_decided(a)])?;
            }
            tx.commit().map_err(backend)?;
            Ok(decided)
        })
        .await
    }

    async fn consume_approval(&self, ask: ConsumeAsk) -> Result<ConsumeOutcome, StoreError> {
        // One connection under a mutex: the UPDATE and the read that explains a refusal are
        // never interleaved with another replay.
        self.run(move |c| {
            let tx = immediate(c)?;
            let out = approval::sqlite::consume(&tx, &ask)?;
            if let ConsumeOutcome::Consumed(a) = &out {
                audit::sqlite::append(&tx, vec![audit::approval_consumed(a)])?;
            }
            tx.commit().map_err(backend)?;
            Ok(out)
        })
        .await
    }

    async fn pending_approvals(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.run(move |c| approval::sqlite::pending(c, now_ms))
            .await
    }

    async fn audit_append(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditRow>, StoreError> {
        self.run(move |c| {
            let tx = immediate(c)?;
            let rows = audit::sqlite::append(&tx, events)?;
            tx.commit().map_err(backend)?;
            Ok(rows)
        })
        .await
    }

    async fn audit_list(&self, q: AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        self.run(move |c| audit::sqlite::list(c, &q)).await
    }

    async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        self.run(|c| audit::sqlite::head(c)).await
    }

    async fn audit_prune(
        &self,
        before_ms: i64,
        entry: AuditEvent,
    ) -> Result<Option<AuditRow>, StoreError> {
        self.run(move |c| {
            let tx = immediate(c)?;
            let row = audit::sqlite::prune(&tx, before_ms, entry)?;
            tx.commit().map_err(backend)?;
            Ok(row)
        })
        .await
    }

    async fn audit_sweep_expired(&self, now_ms: i64) -> Result<Vec<AuditRow>, StoreError> {
        self.run(move |c| {
            let tx = immediate(c)?;
            let rows = audit::sqlite::sweep_expired(&tx, now_ms)?;
            tx.commit().map_err(backend)?;
            Ok(rows)
        })
        .await
    }

    #[cfg(test)]
    async fn exec_raw(&self, sql: &str) -> Result<(), StoreError> {
        let sql = sql.to_string();
        self.run(move |c| c.execute_batch(&sql).map_err(backend))
            .await
    }

    async fn learn(&self, obs: Vec<super::Observation>, now_ms: i64) -> Result<(), StoreError> {
        self.run(move |c| super::learned::sqlite::learn(c, &obs, now_ms))
            .await
    }

    async fn learned(&self) -> Result<Vec<super::LearnedRow>, StoreError> {
        self.run(move |c| super::learned::sqlite::list(c)).await
    }

    async fn usage_hourly(&self, from_ms: i64, to_ms: i64) -> Result<Vec<HourlyUsage>, StoreError> {
        self.run(move |c| anomaly::sqlite::hourly(c, from_ms, to_ms))
            .await
    }

    async fn put_anomalies(&self, found: Vec<Anomaly>) -> Result<Vec<Anomaly>, StoreError> {
        self.run(move |c| anomaly::sqlite::put(c, &found)).await
    }

    async fn anomalies(&self, query: AnomalyQuery) -> Result<Vec<Anomaly>, StoreError> {
        self.run(move |c| anomaly::sqlite::list(c, &query)).await
    }

    async fn anomalies_in(
        &self,
        from_ms: i64,
        to_ms: i64,
        latest: u32,
    ) -> Result<AnomalyRange, StoreError> {
        self.run(move |c| anomaly::sqlite::range(c, from_ms, to_ms, latest))
            .await
    }

    async fn report_decisions(
        &self,
        query: super::ReportDecisionQuery,
    ) -> Result<super::ReportDecisions, StoreError> {
        self.run(move |c| super::report_reads::sqlite::read(c, &query))
            .await
    }

    async fn decision_stats(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<super::DecisionStats>, StoreError> {
        self.run(move |c| {
            Ok(
                super::rollup::sqlite::decisions_snapshot(c, from_ms, to_ms, None)?
                    .into_iter()
                    .map(|b| b.stats)
                    .collect(),
            )
        })
        .await
    }

    async fn decision_buckets(
        &self,
        from_ms: i64,
        to_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<super::DecisionBucket>, StoreError> {
        let bucket_ms = bucket_ms.max(1);
        self.run(move |c| {
            super::rollup::sqlite::decisions_snapshot(c, from_ms, to_ms, Some(bucket_ms))
        })
        .await
    }
}

/// A write transaction that takes SQLite's write lock up front (the audit head's lock).
fn immediate(c: &mut Connection) -> Result<rusqlite::Transaction<'_>, StoreError> {
    c.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)
}

/// Puts each lease under its counter (both backends return them in their own collation order,
/// so match by key, not by position).
pub(crate) fn attach_leases(counters: &mut [CounterState], leases: Vec<(String, LeaseState)>) {
    let index: std::collections::HashMap<String, usize> = counters
        .iter()
        .enumerate()
        .map(|(i, c)| (c.counter.clone(), i))
        .collect();
    for (key, lease) in leases {
        if let Some(c) = index.get(&key).and_then(|&i| counters.get_mut(i)) {
            c.leases.push(lease);
        }
    }
}
