//! Durable state behind one trait: policy versions, the usage ledger, exactly-once batch
//! bookkeeping, budget counters and leases. Two backends implement it — SQLite (one file, the
//! default) and PostgreSQL (a fleet of sidecars sharing one database) — and one contract-test
//! suite (`contract.rs`) runs against both.
//!
//! Money is integer micro-USD. The database columns are signed 64-bit (`BIGINT`); amounts above
//! `i64::MAX` micro-USD (~9.2 trillion USD) are refused at the edge rather than wrapped.

use async_trait::async_trait;

pub mod alert;
pub mod anomaly;
pub mod approval;
pub mod audit;
pub mod decision_stats;
pub mod learned;
pub mod lease;
pub mod postgres;
pub mod report_reads;
pub mod rollup;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod contract;
#[cfg(test)]
pub(crate) mod tests;

pub use crate::audit::{AuditEvent, AuditHead, AuditQuery, AuditRow};
pub use alert::{
    AlertRecord, ClaimedAlert, DeliveryOutcome, DeliveryState, DeliveryUpdate, PendingDelivery,
};
pub use anomaly::{
    Anomaly, AnomalyCount, AnomalyKind, AnomalyQuery, AnomalyRange, HourlyUsage, Unit,
};
pub use approval::{
    Approval, ApprovalDecision, ApprovalStatus, ConsumeAsk, ConsumeOutcome, Refusal,
};
pub use decision_stats::{DecisionBucket, DecisionStats, LatencyBin, LatencyHistogram};
pub use learned::{LearnedRow, Observation};
pub use postgres::PgStore;
pub use report_reads::{
    ApprovalBound, ModelTotals, ReportDecisionQuery, ReportDecisions, UnapprovedDecision,
};
pub use sqlite::SqliteStore;

/// One stored policy version (the whole validated document).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyVersion {
    pub meta: PolicyMeta,
    /// The document as compact JSON text.
    pub document: String,
}

/// Who changed the policy, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyMeta {
    /// 1, 2, 3, … in commit order; 0 means "no policy yet" on the wire.
    pub version: i64,
    /// Name of the token that made the change (`--admin-token NAME=…`).
    pub author: String,
    pub created_at_ms: i64,
}

/// A policy version to append.
#[derive(Clone, Debug)]
pub struct NewPolicy {
    pub document: String,
    pub author: String,
    pub at_ms: i64,
    /// Optimistic concurrency: append only if the latest version is exactly this
    /// (0 = no policy yet). `None` appends after whatever is latest.
    pub expected_version: Option<i64>,
    /// Audit entries written in the same transaction (their `policy_version`, when unset,
    /// becomes the new version).
    pub audit: Vec<AuditEvent>,
}

impl NewPolicy {
    /// The audit entries, numbered with the version they created.
    pub(crate) fn audit_for(&self, version: i64) -> Vec<AuditEvent> {
        self.audit
            .iter()
            .cloned()
            .map(|mut e| {
                e.policy_version.get_or_insert(version);
                e
            })
            .collect()
    }
}

/// One usage record: the settled cost of one request, charged to every counter it reserved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    pub amount: u64,
    /// `BudgetKey::storage_key()` of each counter the request was admitted against.
    pub counters: Vec<String>,
    pub project_id: Option<String>,
    pub client_id: Option<String>,
    pub host: Option<String>,
    /// When the request settled, by the filter's clock; analytics periods read it.
    pub at_ms: Option<i64>,
    /// Served from the filter's cache (amount 0, no counters).
    pub cache_hit: bool,
    /// Micro-USD the cache hit avoided (0 for other records).
    pub savings: u64,
}

/// A lease request: "let me hold `want` micro-USD of room on `counter`".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseAsk {
    pub counter: String,
    /// The counter's limit under the current policy (the store does not read policies).
    pub limit: u64,
    /// The total room the instance wants to hold (not an increment): asking again for the
    /// same amount is idempotent, which makes a retried sync safe.
    pub want: u64,
}

/// One `POST /v1/sync` as the store sees it. Applied in ONE transaction.
/// A usage record the sidecar did not take as an ordinary one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageException {
    pub instance_id: String,
    pub seq: i64,
    /// The record's position in its batch.
    pub idx: i64,
    /// `quarantined` (malformed: stored, not applied) or `suspect` (applied at its bound; the
    /// upstream's report was not believed).
    pub kind: String,
    /// The record as the filter sent it (JSON, at most [`MAX_EXCEPTION_RECORD`] bytes).
    pub record: String,
    pub reason: String,
    pub committed_at_ms: i64,
}

/// Longest record text kept with an exception.
pub const MAX_EXCEPTION_RECORD: usize = 4096;

#[derive(Clone, Debug)]
pub struct SyncWrite {
    pub instance_id: String,
    pub seq: i64,
    /// SHA-256 of the batch's usage, to refuse a reused `(instance, seq)` with other content.
    pub digest: String,
    /// The digest as a sidecar that ignored `cacheHit`/`savings` computed it (set only when a
    /// record carries them): a batch such a sidecar committed, retried after the upgrade, is a
    /// duplicate, not `SeqReused`.
    pub legacy_digest: Option<String>,
    pub usage: Vec<UsageRecord>,
    /// Records kept aside (docs/sync-protocol.md "Quarantine"): quarantined ones are not in
    /// `usage` and touch no counter; suspect ones are in `usage` too (charged their bound).
    /// Written with the batch, exactly once, like the ledger.
    pub exceptions: Vec<UsageException>,
    /// Audit rows the batch carries (decision events, their gaps, ones refused as malformed):
    /// appended to the chain in the batch's transaction, exactly once like the ledger.
    pub audit: Vec<crate::audit::AuditEvent>,
    pub release: Vec<String>,
    pub leases: Vec<LeaseAsk>,
    pub now_ms: i64,
    pub lease_ttl_ms: i64,
}

/// What the instance holds on one counter after a sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    pub counter: String,
    /// Room the instance may still admit against, net of every acknowledged usage record.
    pub granted: u64,
    pub expires_at_ms: i64,
    /// Newly handed out by this sync (`granted` minus what was held before it).
    pub added: u64,
    /// The counter's committed spend across the fleet after this sync.
    pub spent: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncOutcome {
    /// The batch had been committed before; its usage was not counted again.
    pub duplicate: bool,
    pub leases: Vec<LeaseGrant>,
    /// Kinds of the alerts this sync raised (inserted for the first time), for metrics.
    pub alerts_raised: Vec<String>,
}

/// One budget counter with the leases currently outstanding on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterState {
    pub counter: String,
    pub spent: u64,
    pub leases: Vec<LeaseState>,
    pub updated_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseState {
    pub instance_id: String,
    pub granted: u64,
    pub expires_at_ms: i64,
}

/// Ledger totals of one (project, client, host) over a time range, for `/v1/analytics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub project_id: Option<String>,
    pub client_id: Option<String>,
    pub host: Option<String>,
    /// Ledger rows: charged requests plus cache hits.
    pub requests: u64,
    /// Sum of `amount`.
    pub cost: u64,
    pub cache_hits: u64,
    pub savings: u64,
}

/// Ledger totals of one (project, client, host) in one time bucket `[start_ms, start_ms + bucket)`,
/// for the analytics series.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageBucket {
    pub start_ms: i64,
    pub totals: UsageTotals,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("policy version conflict: expected {expected}, latest is {latest}")]
    VersionConflict { expected: i64, latest: i64 },
    #[error("batch ({instance_id}, {seq}) was already committed with different content")]
    SeqReused { instance_id: String, seq: i64 },
    #[error("amount {0} is out of range")]
    OutOfRange(u64),
    #[error("store backend: {0}")]
    Backend(String),
}

/// The sidecar's durable state. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Cheap round trip: used by `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The latest version number, 0 if no policy was ever stored.
    async fn latest_policy_version(&self) -> Result<i64, StoreError>;

    async fn latest_policy(&self) -> Result<Option<PolicyVersion>, StoreError>;

    async fn policy_version(&self, version: i64) -> Result<Option<PolicyVersion>, StoreError>;

    /// Newest first, at most `limit`.
    async fn policy_history(&self, limit: u32) -> Result<Vec<PolicyMeta>, StoreError>;

    async fn put_policy(&self, new: NewPolicy) -> Result<PolicyMeta, StoreError>;

    /// Commits a usage batch (unless already seen), releases and grants leases; all in one
    /// transaction, durable before it returns.
    async fn sync(&self, write: SyncWrite) -> Result<SyncOutcome, StoreError>;

    /// Every counter, with its unexpired leases, sorted by counter key.
    async fn counters(&self, now_ms: i64) -> Result<Vec<CounterState>, StoreError>;

    /// The usage ledger summed per (project, client, host) over the records whose time
    /// (`at_ms`, else `committed_at_ms`) is in `[from_ms, to_ms)`; in no particular order.
    async fn usage_totals(&self, from_ms: i64, to_ms: i64) -> Result<Vec<UsageTotals>, StoreError>;

    /// The newest `limit` quarantined and suspect records, newest first.
    async fn usage_exceptions(&self, limit: u32) -> Result<Vec<UsageException>, StoreError>;
    /// As `usage_totals`, split into buckets of `bucket_ms` aligned on multiples of it since the
    /// epoch (so 15 minutes align with every zone's hours and days). `bucket_ms > 0`.
    async fn usage_buckets(
        &self,
        from_ms: i64,
        to_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<UsageBucket>, StoreError>;

    // --- approvals (approval.rs, docs/approvals.md) ---

    async fn create_approval(&self, approval: Approval) -> Result<(), StoreError>;

    async fn approval(&self, id: String) -> Result<Option<Approval>, StoreError>;

    /// Newest first, at most `limit`; `status` filters on the stored status.
    async fn approvals(
        &self,
        status: Option<ApprovalStatus>,
        limit: u32,
    ) -> Result<Vec<Approval>, StoreError>;

    /// `pending → approved|denied` iff still pending and unexpired at `at_ms`; the updated
    /// row, or `None` when the approval is missing, decided or expired.
    async fn decide_approval(
        &self,
        decision: ApprovalDecision,
    ) -> Result<Option<Approval>, StoreError>;

    /// `approved → used` iff unexpired and the replay matches; exactly one of concurrent
    /// replays wins.
    async fn consume_approval(&self, ask: ConsumeAsk) -> Result<ConsumeOutcome, StoreError>;

    /// Approvals pending and unexpired at `now_ms`.
    async fn pending_approvals(&self, now_ms: i64) -> Result<u64, StoreError>;

    // --- anomalies (anomaly.rs, docs/anomalies.md) ---

    /// The ledger per (project, client, host, hour) over `[from_ms, to_ms)`, by `LEDGER_TIME`.
    async fn usage_hourly(&self, from_ms: i64, to_ms: i64) -> Result<Vec<HourlyUsage>, StoreError>;

    /// Stores the anomalies not stored yet (by kind, project, client, subject, window start) and
    /// returns those: each anomaly is new to exactly one caller, also among sidecars sharing a
    /// PostgreSQL (what an alert sends once).
    async fn put_anomalies(&self, found: Vec<Anomaly>) -> Result<Vec<Anomaly>, StoreError>;

    /// Newest window first, at most `query.limit`.
    async fn anomalies(&self, query: AnomalyQuery) -> Result<Vec<Anomaly>, StoreError>;

    /// The anomalies whose window overlaps `[from_ms, to_ms)` (what `GET /v1/anomalies` lists
    /// with `since=from&until=to`): counts per (project, client, subject, kind) and the newest
    /// `latest` of each (project, client, subject).
    async fn anomalies_in(
        &self,
        from_ms: i64,
        to_ms: i64,
        latest: u32,
    ) -> Result<AnomalyRange, StoreError>;

    // --- decision rows (decision_stats.rs) ---

    /// The audit log's `decision` rows with `at_ms` in `[from_ms, to_ms)`, per (project, client,
    /// host, model, decision, code): count and latency histogram; in no particular order.
    async fn decision_stats(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<DecisionStats>, StoreError>;

    /// As `decision_stats`, split into buckets of `bucket_ms` aligned on multiples of it since
    /// the epoch (as `usage_buckets`). `bucket_ms > 0`.
    async fn decision_buckets(
        &self,
        from_ms: i64,
        to_ms: i64,
        bucket_ms: i64,
    ) -> Result<Vec<DecisionBucket>, StoreError>;

    // --- alerts (alert.rs, crate::alerts, docs/alerts.md) ---
    // Both backends implement all of these; the defaults serve test doubles only (a store
    // without an `alerts` table raises nothing and has nothing to deliver).

    /// [`Store::sync`], and in the same transaction the alerts `rules` detect in the applied
    /// usage (`crate::alerts::detect`), each inserted once per key across the fleet.
    async fn sync_alerting(
        &self,
        write: SyncWrite,
        rules: crate::alerts::AlertRules,
    ) -> Result<SyncOutcome, StoreError> {
        let _ = rules;
        self.sync(write).await
    }

    /// Inserts an alert unless its key exists; `true` when this call inserted it.
    async fn raise_alert(&self, alert: crate::alerts::NewAlert) -> Result<bool, StoreError> {
        Err(StoreError::Backend(format!(
            "no alert store for {}",
            alert.key
        )))
    }

    /// Claims up to `limit` due, unclaimed alerts for `lease_ms` (no other claimer gets them
    /// meanwhile), with their channels still to send.
    async fn claim_alerts(
        &self,
        claimer: String,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedAlert>, StoreError> {
        let _ = (claimer, now_ms, lease_ms, limit);
        Ok(Vec::new())
    }

    /// Stores one delivery round's outcome and releases the claim.
    async fn record_delivery(&self, update: DeliveryUpdate) -> Result<(), StoreError> {
        Err(StoreError::Backend(format!(
            "no alert store for {}",
            update.key
        )))
    }

    /// Newest first, at most `limit`, with per-channel delivery state.
    async fn alerts(&self, limit: u32) -> Result<Vec<AlertRecord>, StoreError> {
        let _ = limit;
        Err(StoreError::Backend("no alert store".into()))
    }
    // --- the audit log (audit.rs, docs/audit.md). `put_policy`, `create_approval`,
    // `decide_approval` and `consume_approval` append their entries themselves, in their
    // own transaction. ---

    /// Appends entries (one transaction, contiguous seqs).
    async fn audit_append(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditRow>, StoreError>;

    /// Rows after `q.after_seq` matching the filters, in seq order, at most `q.limit`.
    async fn audit_list(&self, q: AuditQuery) -> Result<Vec<AuditRow>, StoreError>;

    async fn audit_head(&self) -> Result<AuditHead, StoreError>;

    /// Deletes the rows older than `before_ms` (the oldest prefix of the chain), keeps the
    /// checkpoint, appends `entry` (details filled in); `None` when nothing was old enough.
    async fn audit_prune(
        &self,
        before_ms: i64,
        entry: AuditEvent,
    ) -> Result<Option<AuditRow>, StoreError>;

    /// Writes `approval.expired` once for each approval expired at `now_ms`.
    async fn audit_sweep_expired(&self, now_ms: i64) -> Result<Vec<AuditRow>, StoreError>;

    // --- the compliance report's reads of the decision log (report_reads.rs, docs/reports.md) ---

    /// The `decision`, `decision.gap` and `decision.rejected` rows in `[from_ms, to_ms)`, summed
    /// (one snapshot), with the allowed decisions above their approval bound and no approval.
    async fn report_decisions(
        &self,
        query: ReportDecisionQuery,
    ) -> Result<ReportDecisions, StoreError>;

    /// Raw SQL, for the tamper tests.
    #[cfg(test)]
    async fn exec_raw(&self, sql: &str) -> Result<(), StoreError>;

    /// Folds believed cost reports into the fleet's learned estimates, in order, in one
    /// transaction (docs/estimates.md). Not part of the batch's transaction: learning is an
    /// estimate, a report lost to a crash in between is not money.
    async fn learn(&self, obs: Vec<Observation>, now_ms: i64) -> Result<(), StoreError>;

    /// Every learned estimate, by key (at most [`learned::MAX_ROWS`]).
    async fn learned(&self) -> Result<Vec<LearnedRow>, StoreError>;
}

pub(crate) fn to_db(amount: u64) -> Result<i64, StoreError> {
    i64::try_from(amount).map_err(|_| StoreError::OutOfRange(amount))
}

pub(crate) fn from_db(amount: i64) -> u64 {
    // Columns only ever receive values from `to_db` and saturating arithmetic on them.
    u64::try_from(amount).unwrap_or(0)
}

/// Every counter key a sync touches, sorted: rows are locked in this order so two concurrent
/// syncs (on one or several sidecars) never wait on each other in a cycle.
pub(crate) fn keys_to_lock(write: &SyncWrite) -> Vec<String> {
    let mut keys: Vec<String> = write
        .usage
        .iter()
        .flat_map(|u| u.counters.iter().cloned())
        .chain(write.leases.iter().map(|l| l.counter.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Usage per counter, summed (checked: a sum that overflows is refused, not wrapped).
pub(crate) fn usage_per_counter(
    usage: &[UsageRecord],
) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
    let mut sums = std::collections::BTreeMap::<String, u64>::new();
    for rec in usage {
        for key in &rec.counters {
            let slot = sums.entry(key.clone()).or_insert(0);
            *slot = slot
                .checked_add(rec.amount)
                .ok_or(StoreError::OutOfRange(rec.amount))?;
        }
    }
    Ok(sums)
}

/// Schema shared by both backends (BIGINT is INTEGER affinity in SQLite).
pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS policy_versions (
        version BIGINT PRIMARY KEY,
        document TEXT NOT NULL,
        author TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS seen_batches (
        instance_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        digest TEXT NOT NULL,
        committed_at_ms BIGINT NOT NULL,
        PRIMARY KEY (instance_id, seq))",
    "CREATE TABLE IF NOT EXISTS usage_ledger (
        instance_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        idx BIGINT NOT NULL,
        amount BIGINT NOT NULL,
        counters TEXT NOT NULL,
        project_id TEXT,
        client_id TEXT,
        host TEXT,
        at_ms BIGINT,
        committed_at_ms BIGINT NOT NULL,
        cache_hit BOOLEAN NOT NULL DEFAULT FALSE,
        savings BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (instance_id, seq, idx))",
    // Analytics read one period: `LEDGER_TIME` in a range.
    "CREATE INDEX IF NOT EXISTS usage_ledger_by_time ON usage_ledger ((COALESCE(at_ms, committed_at_ms)))",
    // Quarantined and suspect usage records (docs/sync-protocol.md "Quarantine").
    "CREATE TABLE IF NOT EXISTS usage_exceptions (
        instance_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        idx BIGINT NOT NULL,
        kind TEXT NOT NULL,
        record TEXT NOT NULL,
        reason TEXT NOT NULL,
        committed_at_ms BIGINT NOT NULL,
        PRIMARY KEY (instance_id, seq, idx))",
    "CREATE TABLE IF NOT EXISTS budget_counters (
        counter_key TEXT PRIMARY KEY,
        spent BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS leases (
        instance_id TEXT NOT NULL,
        counter_key TEXT NOT NULL,
        granted BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        PRIMARY KEY (instance_id, counter_key))",
    "CREATE INDEX IF NOT EXISTS leases_by_counter ON leases (counter_key, expires_at_ms)",
    // Approvals (approval.rs).
    "CREATE TABLE IF NOT EXISTS approvals (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        method TEXT NOT NULL,
        authority TEXT NOT NULL,
        path TEXT NOT NULL,
        body_sha256 TEXT NOT NULL,
        binding TEXT NOT NULL,
        estimated_cost BIGINT NOT NULL,
        policy_version BIGINT NOT NULL,
        status TEXT NOT NULL,
        justification TEXT,
        requested_by TEXT,
        callback_url TEXT,
        created_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        decided_by TEXT,
        decision_comment TEXT,
        decided_at_ms BIGINT,
        used_at_ms BIGINT)",
    "CREATE INDEX IF NOT EXISTS approvals_by_status ON approvals (status, created_at_ms)",
    // The audit log (audit.rs): append-only, seq contiguous from the retention checkpoint.
    "CREATE TABLE IF NOT EXISTS audit_log (
        seq BIGINT PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT,
        project_id TEXT,
        client_id TEXT,
        host TEXT,
        model TEXT,
        decision TEXT,
        code TEXT,
        estimate BIGINT,
        cost BIGINT,
        latency_ms BIGINT,
        policy_version BIGINT,
        approval_id TEXT,
        details TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS audit_log_by_time ON audit_log (at_ms)",
    "CREATE INDEX IF NOT EXISTS audit_log_by_approval ON audit_log (approval_id, kind)",
    // One row: the chain's head (locked by every append) and the retention checkpoint.
    "CREATE TABLE IF NOT EXISTS audit_head (
        id BIGINT PRIMARY KEY,
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL,
        pruned_through_seq BIGINT NOT NULL,
        pruned_through_hash TEXT NOT NULL,
        pruned_count BIGINT NOT NULL)",
    "INSERT INTO audit_head (id, seq, hash, pruned_through_seq, pruned_through_hash, pruned_count)
     VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0,
             '0000000000000000000000000000000000000000000000000000000000000000', 0)
     ON CONFLICT (id) DO NOTHING",
];

/// Columns added after a table's first release: `(table, column, definition)`. Run after
/// `SCHEMA` on every start; a column already there is left alone (both backends check first,
/// SQLite having no `ADD COLUMN IF NOT EXISTS`). Rows written before the column existed get
/// its default, which must describe them truthfully.
pub(crate) const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    // Cache savings (issue 6): older sidecars stored no cache hits' flags (they ignored the
    // fields), so their rows are "not a hit, no savings".
    (
        "usage_ledger",
        "cache_hit",
        "BOOLEAN NOT NULL DEFAULT FALSE",
    ),
    ("usage_ledger", "savings", "BIGINT NOT NULL DEFAULT 0"),
];

/// The time a ledger row counts at in analytics: the filter's settle time when it sent one
/// (budget periods are the filter's too), else the commit time. Written exactly as the index.
pub(crate) const LEDGER_TIME: &str = "COALESCE(at_ms, committed_at_ms)";
