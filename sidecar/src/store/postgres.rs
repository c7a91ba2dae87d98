//! PostgreSQL backend: for a fleet of sidecars sharing one database. A sync locks the counter
//! rows it touches (`SELECT … FOR UPDATE`, in key order, so concurrent syncs cannot deadlock)
//! before it reads what is spent and held; every lease change on a counter happens under that
//! lock, so grants from different sidecars never hand out the same room twice. The seen-batch
//! row is inserted first (`ON CONFLICT DO NOTHING`): a batch retried at two sidecars at once
//! waits on the unique index and is then recognised as a duplicate.

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use super::alert;
use super::anomaly::{self, Anomaly, AnomalyQuery, AnomalyRange, HourlyUsage};
use super::approval::{
    self, Approval, ApprovalDecision, ApprovalStatus, ConsumeAsk, ConsumeOutcome,
};
use super::audit;
use super::lease::{consume, Room};
use super::sqlite::attach_leases;
use super::{
    from_db, keys_to_lock, to_db, usage_per_counter, AuditEvent, AuditHead, AuditQuery, AuditRow,
    CounterState, LeaseGrant, LeaseState, NewPolicy, PolicyMeta, PolicyVersion, Store, StoreError,
    SyncOutcome, SyncWrite, UsageBucket, UsageException, UsageTotals, ADDED_COLUMNS, SCHEMA,
};
use super::{AlertRecord, ClaimedAlert, DeliveryUpdate};
use crate::alerts::{detect, violations, AlertRules, NewAlert};

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    schema: Option<String>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    // The Display of a server error is only "db error"; the detail is in the source.
    match e.as_db_error() {
        Some(db) => StoreError::Backend(format!("postgres {}: {}", db.code().code(), db.message())),
        None => StoreError::Backend(e.to_string()),
    }
}

/// A read-only REPEATABLE READ transaction: a read in several statements (analytics' rollup
/// pieces) sees one snapshot.
async fn read_snapshot(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    client
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(pg)
}

/// The pooled connection as a `tokio_postgres::Client` (a `GenericClient`).
fn pgc(o: &deadpool_postgres::Object) -> &tokio_postgres::Client {
    o
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

fn valid_schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

// === impl PgStore ===

impl PgStore {
    /// Connects, and creates the tables if needed. `schema` (lowercase letters, digits, `_`)
    /// isolates one deployment — or one test run — inside a shared database.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(pg)?;
        if let Some(s) = schema {
            if !valid_schema_name(s) {
                return Err(StoreError::Backend(format!(
                    "invalid schema name {s:?}: use lowercase letters, digits and _"
                )));
            }
            // Created over a plain connection first: the pool's connections select it below.
            let (client, conn) = config.connect(NoTls).await.map_err(pg)?;
            let driver = tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
                .await
                .map_err(pg)?;
            drop(client);
            let _ = driver.await;
            config.options(format!("-c search_path={s}"));
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .build()
            .map_err(backend)?;
        let store = PgStore {
            pool,
            schema: schema.map(str::to_owned),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = client.transaction().await.map_err(pg)?;
        // Sidecars starting together must not race on CREATE TABLE IF NOT EXISTS.
        tx.execute("SELECT pg_advisory_xact_lock(7463291)", &[])
            .await
            .map_err(pg)?;
        for stmt in SCHEMA.iter().chain(alert::SCHEMA) {
            tx.batch_execute(stmt).await.map_err(pg)?;
        }
        // Under the same lock; `IF NOT EXISTS` makes a second start a no-op.
        for stmt in anomaly::SCHEMA
            .iter()
            .chain(super::decision_stats::SCHEMA)
            .chain(super::learned::SCHEMA)
            .chain(super::rollup::SCHEMA)
        {
            tx.batch_execute(stmt).await.map_err(pg)?;
        }
        for (table, column, definition) in ADDED_COLUMNS {
            tx.batch_execute(&format!(
                "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {definition}"
            ))
            .await
            .map_err(pg)?;
        }
        // After the columns: a database from before rollups is summed once, here.
        super::rollup::postgres::ensure_built(&*tx).await?;
        tx.commit().await.map_err(pg)
    }

    pub fn schema_name(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Drops this store's schema (tests clean up after themselves with it).
    pub async fn drop_schema(&self) -> Result<(), StoreError> {
        if let Some(s) = &self.schema {
            let client = self.pool.get().await.map_err(backend)?;
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
                .await
                .map_err(pg)?;
        }
        Ok(())
    }
}

async fn read_policy(
    client: &tokio_postgres::Client,
    version: Option<i64>,
) -> Result<Option<PolicyVersion>, StoreError> {
    let row = match version {
        Some(v) => client
            .query_opt(
                "SELECT version, document, author, created_at_ms FROM policy_versions WHERE version = $1",
                &[&v],
            )
            .await,
        None => client
            .query_opt(
                "SELECT version, document, author, created_at_ms FROM policy_versions
                 ORDER BY version DESC LIMIT 1",
                &[],
            )
            .await,
    }
    .map_err(pg)?;
    Ok(row.map(|r| PolicyVersion {
        meta: PolicyMeta {
            version: r.get(0),
            author: r.get(2),
            created_at_ms: r.get(3),
        },
        document: r.get(1),
    }))
}

enum TxError {
    Retry(tokio_postgres::Error),
    Fail(StoreError),
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        if retryable(&e) {
            TxError::Retry(e)
        } else {
            TxError::Fail(pg(e))
        }
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Fail(e)
    }
}

async fn sync_tx(
    client: &mut deadpool_postgres::Object,
    w: &SyncWrite,
    rules: &AlertRules,
) -> Result<SyncOutcome, TxError> {
    let tx = client.transaction().await?;

    // 1. Exactly once.
    let mut duplicate = false;
    if !w.usage.is_empty() || !w.exceptions.is_empty() || !w.audit.is_empty() {
        let inserted = tx
            .execute(
                "INSERT INTO seen_batches (instance_id, seq, digest, committed_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (instance_id, seq) DO NOTHING",
                &[&w.instance_id, &w.seq, &w.digest, &w.now_ms],
            )
            .await?;
        if inserted == 0 {
            let row = tx
                .query_one(
                    "SELECT digest FROM seen_batches WHERE instance_id = $1 AND seq = $2",
                    &[&w.instance_id, &w.seq],
                )
                .await?;
            let digest: String = row.get(0);
            if digest != w.digest && w.legacy_digest.as_ref() != Some(&digest) {
                return Err(TxError::Fail(StoreError::SeqReused {
                    instance_id: w.instance_id.clone(),
                    seq: w.seq,
                }));
            }
            duplicate = true;
        }
    }

    // Lock every counter this sync touches, in key order (byte order, decided here, not by the
    // database's collation).
    for key in keys_to_lock(w) {
        tx.execute(
            "INSERT INTO budget_counters (counter_key, spent, updated_at_ms) VALUES ($1, 0, $2)
             ON CONFLICT (counter_key) DO NOTHING",
            &[&key, &w.now_ms],
        )
        .await?;
        tx.query_one(
            "SELECT spent FROM budget_counters WHERE counter_key = $1 FOR UPDATE",
            &[&key],
        )
        .await?;
    }

    // 2. Ledger and counters.
    let mut alerts_raised = Vec::new();
    if !duplicate {
        for e in &w.exceptions {
            tx.execute(
                "INSERT INTO usage_exceptions (instance_id, seq, idx, kind, record, reason, committed_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    &e.instance_id,
                    &e.seq,
                    &e.idx,
                    &e.kind,
                    &e.record,
                    &e.reason,
                    &e.committed_at_ms,
                ],
            )
            .await?;
        }
        let mut moved = Vec::new();
        for (idx, rec) in w.usage.iter().enumerate() {
            let idx = i64::try_from(idx).map_err(backend)?;
            let amount = to_db(rec.amount)?;
            let counters = rec.counters.join(" ");
            let savings = to_db(rec.savings)?;
            tx.execute(
                "INSERT INTO usage_ledger (instance_id, seq, idx, amount, counters, project_id,
                   client_id, host, at_ms, committed_at_ms, cache_hit, savings)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                &[
                    &w.instance_id,
                    &w.seq,
                    &idx,
                    &amount,
                    &counters,
                    &rec.project_id,
                    &rec.client_id,
                    &rec.host,
                    &rec.at_ms,
                    &w.now_ms,
                    &rec.cache_hit,
                    &savings,
                ],
            )
            .await?;
        }
        for (key, amount) in usage_per_counter(&w.usage)? {
            let row = tx
                .query_one(
                    "SELECT spent FROM budget_counters WHERE counter_key = $1",
                    &[&key],
                )
                .await?;
            let next = from_db(row.get(0))
                .checked_add(amount)
                .ok_or(StoreError::OutOfRange(amount))?;
            tx.execute(
                "UPDATE budget_counters SET spent = $2, updated_at_ms = $3 WHERE counter_key = $1",
                &[&key, &to_db(next)?, &w.now_ms],
            )
            .await?;
            moved.push((key.clone(), from_db(row.get(0)), next));
            let held = tx
                .query_opt(
                    "SELECT granted FROM leases WHERE instance_id = $1 AND counter_key = $2",
                    &[&w.instance_id, &key],
                )
                .await?;
            if let Some(held) = held {
                let left = to_db(consume(from_db(held.get(0)), amount))?;
                tx.execute(
                    "UPDATE leases SET granted = $3 WHERE instance_id = $1 AND counter_key = $2",
                    &[&w.instance_id, &key, &left],
                )
                .await?;
            }
        }
        // Alerts this batch raised, once per key across the fleet (crate::alerts).
        let found = detect(rules, &moved, &w.usage, &w.instance_id, w.seq, w.now_ms)
            .into_iter()
            .chain(violations(rules, &w.audit, w.now_ms));
        for a in found {
            if alert::postgres::insert(&tx, &a).await? {
                alerts_raised.push(a.kind);
            }
        }
    }

    // 3. Slices handed back (only ever shrinks what is held: safe without the counter lock).
    for key in &w.release {
        tx.execute(
            "DELETE FROM leases WHERE instance_id = $1 AND counter_key = $2",
            &[&w.instance_id, key],
        )
        .await?;
    }

    // 4. Grants, under the counter locks taken above.
    let mut asks: Vec<_> = w.leases.iter().collect();
    asks.sort_by(|a, b| a.counter.cmp(&b.counter));
    let mut grants = Vec::with_capacity(asks.len());
    for ask in asks {
        tx.execute(
            "DELETE FROM leases WHERE counter_key = $1 AND expires_at_ms <= $2",
            &[&ask.counter, &w.now_ms],
        )
        .await?;
        let spent: i64 = tx
            .query_one(
                "SELECT spent FROM budget_counters WHERE counter_key = $1",
                &[&ask.counter],
            )
            .await?
            .get(0);
        let others: i64 = tx
            .query_one(
                "SELECT COALESCE(SUM(granted), 0)::BIGINT FROM leases
                 WHERE counter_key = $1 AND instance_id <> $2",
                &[&ask.counter, &w.instance_id],
            )
            .await?
            .get(0);
        let mine: i64 = tx
            .query_opt(
                "SELECT granted FROM leases WHERE counter_key = $1 AND instance_id = $2",
                &[&ask.counter, &w.instance_id],
            )
            .await?
            .map_or(0, |r| r.get(0));
        let room = Room {
            limit: ask.limit,
            spent: from_db(spent),
            others: from_db(others),
            mine: from_db(mine),
        };
        let granted = room.grant(ask.want);
        let expires_at_ms = w.now_ms.saturating_add(w.lease_ttl_ms);
        tx.execute(
            "INSERT INTO leases (instance_id, counter_key, granted, expires_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (instance_id, counter_key)
             DO UPDATE SET granted = excluded.granted, expires_at_ms = excluded.expires_at_ms",
            &[&w.instance_id, &ask.counter, &to_db(granted)?, &expires_at_ms],
        )
        .await?;
        grants.push(LeaseGrant {
            counter: ask.counter.clone(),
            granted,
            expires_at_ms,
            added: granted.saturating_sub(room.mine),
            spent: room.spent,
        });
    }

    // The ledger's rollups, summed from the batch (in key order: after the counters and
    // leases, before the audit head, like every sync).
    if !duplicate {
        let rows = super::rollup::postgres::usage_arrays(super::rollup::usage_deltas(
            &w.usage, w.now_ms,
        )?)?;
        super::rollup::postgres::upsert_usage(&*tx, &rows).await?;
    }

    // 3. The batch's audit rows (decision events), last: the chain head's row lock is held
    // for as short a time as the transaction allows.
    if !duplicate && !w.audit.is_empty() {
        audit::postgres::append(&*tx, w.audit.clone()).await?;
    }

    tx.commit().await?;
    Ok(SyncOutcome {
        duplicate,
        leases: grants,
        alerts_raised,
    })
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        client.execute("SELECT 1", &[]).await.map_err(pg)?;
        Ok(())
    }

    async fn latest_policy_version(&self) -> Result<i64, StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        let row = client
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM policy_versions",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(row.get(0))
    }

    async fn latest_policy(&self) -> Result<Option<PolicyVersion>, StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        read_policy(&client, None).await
    }

    async fn policy_version(&self, version: i64) -> Result<Option<PolicyVersion>, StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        read_policy(&client, Some(version)).await
    }

    async fn policy_history(&self, limit: u32) -> Result<Vec<PolicyMeta>, StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        let rows = client
            .query(
                "SELECT version, author, created_at_ms FROM policy_versions ORDER BY version DESC LIMIT $1",
                &[&i64::from(limit)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| PolicyMeta {
                version: r.get(0),
                author: r.get(1),
                created_at_ms: r.get(2),
            })
            .collect())
    }

    async fn put_policy(&self, new: NewPolicy) -> Result<PolicyMeta, StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        // Two sidecars appending at once compute the same next version: the primary key
        // refuses the second, which retries (or reports the conflict if it expected a version).
        for _ in 0..5 {
            let tx = client.transaction().await.map_err(pg)?;
            let latest: i64 = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0)::BIGINT FROM policy_versions",
                    &[],
                )
                .await
                .map_err(pg)?
                .get(0);
            if let Some(expected) = new.expected_version {
                if expected != latest {
                    return Err(StoreError::VersionConflict { expected, latest });
                }
            }
            let version = latest + 1;
            let inserted = tx
                .execute(
                    "INSERT INTO policy_versions (version, document, author, created_at_ms)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (version) DO NOTHING",
                    &[&version, &new.document, &new.author, &new.at_ms],
                )
                .await
                .map_err(pg)?;
            if inserted == 1 {
                audit::postgres::append(&*tx, new.audit_for(version)).await?;
                tx.commit().await.map_err(pg)?;
                return Ok(PolicyMeta {
                    version,
                    author: new.author,
                    created_at_ms: new.at_ms,
                });
            }
            drop(tx);
            if let Some(expected) = new.expected_version {
                return Err(StoreError::VersionConflict {
                    expected,
                    latest: version,
                });
            }
        }
        Err(StoreError::Backend(
            "policy version kept conflicting".into(),
        ))
    }

    async fn sync(&self, write: SyncWrite) -> Result<SyncOutcome, StoreError> {
        self.sync_alerting(write, AlertRules::default()).await
    }

    async fn sync_alerting(
        &self,
        write: SyncWrite,
        rules: AlertRules,
    ) -> Result<SyncOutcome, StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        let mut last = None;
        for _ in 0..5 {
            match sync_tx(&mut client, &write, &rules).await {
                Ok(out) => return Ok(out),
                Err(TxError::Fail(e)) => return Err(e),
                Err(TxError::Retry(e)) => last = Some(e),
            }
        }
        Err(last.map_or_else(|| backend("sync kept conflicting"), pg))
    }

    async fn counters(&self, now_ms: i64) -> Result<Vec<CounterState>, StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        let rows = client
            .query(
                "SELECT counter_key, spent, updated_at_ms FROM budget_counters ORDER BY counter_key COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(pg)?;
        let mut counters: Vec<CounterState> = rows
            .iter()
            .map(|r| CounterState {
                counter: r.get(0),
                spent: from_db(r.get(1)),
                leases: Vec::new(),
                updated_at_ms: r.get(2),
            })
            .collect();
        let rows = client
            .query(
                "SELECT counter_key, instance_id, granted, expires_at_ms FROM leases
                 WHERE expires_at_ms > $1 ORDER BY counter_key COLLATE \"C\", instance_id COLLATE \"C\"",
                &[&now_ms],
            )
            .await
            .map_err(pg)?;
        let leases = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    LeaseState {
                        instance_id: r.get(1),
                        granted: from_db(r.get(2)),
                        expires_at_ms: r.get(3),
                    },
                )
            })
            .collect();
        attach_leases(&mut counters, leases);
        Ok(counters)
    }

    async fn usage_totals(&self, from_ms: i64, to_ms: i64) -> Result<Vec<UsageTotals>, StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = read_snapshot(&mut client).await?;
        let out = super::rollup::postgres::usage(&*tx, from_ms, to_ms, None).await?;
        tx.commit().await.map_err(pg)?;
        Ok(out.into_iter().map(|b| b.totals).collect())
    }

    async fn usage_exceptions(&self, limit: u32) -> Result<Vec<UsageException>, StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        let rows = client
            .query(
                "SELECT instance_id, seq, idx, kind, record, reason, committed_at_ms
                 FROM usage_exceptions ORDER BY committed_at_ms DESC, instance_id, seq DESC, idx
                 LIMIT $1",
                &[&i64::from(limit)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| UsageException {
                instance_id: r.get(0),
                seq: r.get(1),
                idx: r.get(2),
                kind: r.get(3),
                record: r.get(4),
                reason: r.get(5),
                committed_at_ms: r.get(6),
            })
            .collect())
    }

    async fn usage_buckets(
        &self,
        from_ms: i64,
        to_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<UsageBucket>, StoreError> {
        let bucket_ms = bucket_ms.max(1);
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = read_snapshot(&mut client).await?;
        let out = super::rollup::postgres::usage(&*tx, from_ms, to_ms, Some(bucket_ms)).await?;
        tx.commit().await.map_err(pg)?;
        Ok(out)
    }

    async fn create_approval(&self, approval: Approval) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = client.transaction().await.map_err(pg)?;
        approval::postgres::create(&*tx, &approval).await?;
        audit::postgres::append(&*tx, vec![audit::approval_created(&approval)]).await?;
        tx.commit().await.map_err(pg)
    }

    async fn approval(&self, id: String) -> Result<Option<Approval>, StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        approval::postgres::get(pgc(&client), &id).await
    }

    async fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        approval::postgres::list(pgc(&client), status, limit).await
    }

    async fn decide_approval(
        &self,
        decision: ApprovalDecision,
    ) -> Result<Option<Approval>, StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = client.transaction().await.map_err(pg)?;
        let decided = approval::postgres::decide(&*tx, &decision).await?;
        if let Some(a) = &decided {
            audit::postgres::append(&*tx, vec![audit::approval_decided(a)]).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(decided)
    }

    async fn consume_approval(&self, ask: ConsumeAsk) -> Result<ConsumeOutcome, StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = client.transaction().await.map_err(pg)?;
        let out = approval::postgres::consume(&*tx, &ask).await?;
        if let ConsumeOutcome::Consumed(a) = &out {
            audit::postgres::append(&*tx, vec![audit::approval_consumed(a)]).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(out)
    }

    async fn pending_approvals(&self, now_ms: i64) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        approval::postgres::pending(pgc(&client), now_ms).await
    }

    async fn audit_append(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditRow>, StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = client.transaction().await.map_err(pg)?;
        let rows = audit::postgres::append(&*tx, events).await?;
        tx.commit().await.map_err(pg)?;
        Ok(rows)
    }

    async fn audit_list(&self, q: AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        audit::postgres::list(pgc(&client), &q).await
    }

    async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        audit::postgres::head(pgc(&client)).await
    }

    async fn audit_prune(
        &self,
        before_ms: i64,
        entry: AuditEvent,
    ) -> Result<Option<AuditRow>, StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = client.transaction().await.map_err(pg)?;
        let row = audit::postgres::prune(&*tx, before_ms, entry).await?;
        tx.commit().await.map_err(pg)?;
        Ok(row)
    }

    async fn audit_sweep_expired(&self, now_ms: i64) -> Result<Vec<AuditRow>, StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = client.transaction().await.map_err(pg)?;
        let rows = audit::postgres::sweep_expired(&*tx, now_ms).await?;
        tx.commit().await.map_err(pg)?;
        Ok(rows)
    }

    #[cfg(test)]
    async fn exec_raw(&self, sql: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        client.batch_execute(sql).await.map_err(pg)
    }

    async fn learn(&self, obs: Vec<super::Observation>, now_ms: i64) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        super::learned::postgres::learn(&mut client, &obs, now_ms).await
    }

    async fn learned(&self) -> Result<Vec<super::LearnedRow>, StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        super::learned::postgres::list(&client).await
    }

    async fn usage_hourly(&self, from_ms: i64, to_ms: i64) -> Result<Vec<HourlyUsage>, StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        anomaly::postgres::hourly(&client, from_ms, to_ms).await
    }

    async fn put_anomalies(&self, found: Vec<Anomaly>) -> Result<Vec<Anomaly>, StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        anomaly::postgres::put(&mut client, &found).await
    }

    async fn anomalies(&self, query: AnomalyQuery) -> Result<Vec<Anomaly>, StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        anomaly::postgres::list(&client, &query).await
    }

    async fn anomalies_in(
        &self,
        from_ms: i64,
        to_ms: i64,
        latest: u32,
    ) -> Result<AnomalyRange, StoreError> {
        let client = self.pool.get().await.map_err(backend)?;
        anomaly::postgres::range(&client, from_ms, to_ms, latest).await
    }

    async fn report_decisions(
        &self,
        query: super::ReportDecisionQuery,
    ) -> Result<super::ReportDecisions, StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        super::report_reads::postgres::read(&mut client, &query).await
    }

    async fn decision_stats(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<super::DecisionStats>, StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = read_snapshot(&mut client).await?;
        let out = super::rollup::postgres::decisions(&*tx, from_ms, to_ms, None).await?;
        tx.commit().await.map_err(pg)?;
        Ok(out.into_iter().map(|b| b.stats).collect())
    }

    async fn decision_buckets(
        &self,
        from_ms: i64,
        to_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<super::DecisionBucket>, StoreError> {
        let bucket_ms = bucket_ms.max(1);
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = read_snapshot(&mut client).await?;
        let out = super::rollup::postgres::decisions(&*tx, from_ms, to_ms, Some(bucket_ms)).await?;
        tx.commit().await.map_err(pg)?;
        Ok(out)
    }

    async fn raise_alert(&self, a: NewAlert) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = client.transaction().await.map_err(pg)?;
        let inserted = alert::postgres::insert(&tx, &a).await?;
        tx.commit().await.map_err(pg)?;
        Ok(inserted)
    }

    async fn claim_alerts(
        &self,
        claimer: String,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedAlert>, StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = client.transaction().await.map_err(pg)?;
        let claimed = alert::postgres::claim(&tx, &claimer, now_ms, lease_ms, limit).await?;
        tx.commit().await.map_err(pg)?;
        Ok(claimed)
    }

    async fn record_delivery(&self, update: DeliveryUpdate) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = client.transaction().await.map_err(pg)?;
        alert::postgres::record(&tx, &update).await?;
        tx.commit().await.map_err(pg)
    }

    async fn alerts(&self, limit: u32) -> Result<Vec<AlertRecord>, StoreError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = client.transaction().await.map_err(pg)?;
        let list = alert::postgres::list(&tx, limit).await?;
        tx.commit().await.map_err(pg)?;
        Ok(list)
    }
}
