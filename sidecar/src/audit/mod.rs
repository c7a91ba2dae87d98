//! The tamper-evident audit log (docs/audit.md): one append-only chain of entries — admin
//! actions, approvals, retention runs, and (phase 2) the filter's decision events.
//!
//! Each stored row has `prev_hash` (the previous row's `hash`, or 64 zeros for the first row)
//! and `hash = hex(SHA-256(prev_hash ‖ JCS(entry)))`, where `prev_hash` is taken as its 64 ASCII
//! hex characters and `JCS(entry)` is the RFC 8785 canonical JSON of [`AuditRow::entry_json`].
//! The entry includes its `seq`, so a row moved to another place in the chain breaks it too.
//! Rows are appended by the store, under a lock on the one-row `audit_head` table, in the same
//! transaction as the action they record.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::store::StoreError;

/// `prev_hash` of the first row ever appended.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Largest integer an entry may carry: JSON numbers are exact only up to 2^53 (RFC 8785 and
/// every JSON reader in between), so larger amounts are refused rather than rounded.
pub const MAX_EXACT: u64 = (1 << 53) - 1;

/// What one entry says; the store gives it its `seq`, `prev_hash` and `hash`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditEvent {
    /// When the action happened (ms since the epoch, the sidecar's clock).
    pub at_ms: i64,
    /// `policy.updated`, `project.created`, `approval.decided`, … (docs/audit.md lists them).
    pub kind: String,
    /// The token name, approver e-mail or `system` that did it.
    pub actor: Option<String>,
    pub project_id: Option<String>,
    pub client_id: Option<String>,
    pub host: Option<String>,
    pub model: Option<String>,
    /// `allow`, `deny`, `pending`, `approved`, `denied`, … (decision events and approvals).
    pub decision: Option<String>,
    /// A SPEC error code (decision events).
    pub code: Option<String>,
    /// Micro-USD.
    pub estimate: Option<u64>,
    /// Micro-USD.
    pub cost: Option<u64>,
    pub latency_ms: Option<i64>,
    pub policy_version: Option<i64>,
    pub approval_id: Option<String>,
    /// Anything else, as a JSON object (stored as its canonical text).
    pub details: Value,
}

impl AuditEvent {
    pub fn new(kind: &str, at_ms: i64) -> Self {
        AuditEvent {
            kind: kind.to_string(),
            at_ms,
            details: Value::Object(serde_json::Map::new()),
            ..AuditEvent::default()
        }
    }

    pub fn actor(mut self, who: impl Into<String>) -> Self {
        self.actor = Some(who.into());
        self
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Refuses what the chain cannot carry exactly.
    pub fn check(&self) -> Result<(), StoreError> {
        for v in [self.estimate, self.cost].into_iter().flatten() {
            if v > MAX_EXACT {
                return Err(StoreError::OutOfRange(v));
            }
        }
        if self.kind.is_empty() {
            return Err(StoreError::Backend("an audit entry needs a kind".into()));
        }
        Ok(())
    }
}

/// One stored row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRow {
    /// The hashed object: every column but `prev_hash` and `hash`, camelCase, nulls kept.
    pub fn entry_json(&self) -> Value {
        let e = &self.event;
        json!({
            "seq": self.seq,
            "atMs": e.at_ms,
            "kind": e.kind,
            "actor": e.actor,
            "projectId": e.project_id,
            "clientId": e.client_id,
            "host": e.host,
            "model": e.model,
            "decision": e.decision,
            "code": e.code,
            "estimate": e.estimate,
            "cost": e.cost,
            "latencyMs": e.latency_ms,
            "policyVersion": e.policy_version,
            "approvalId": e.approval_id,
            "details": e.details,
        })
    }

    /// The row as the API and the export show it: the entry plus `prevHash` and `hash`.
    pub fn to_json(&self) -> Value {
        let mut v = self.entry_json();
        if let Some(obj) = v.as_object_mut() {
            obj.insert("prevHash".into(), Value::String(self.prev_hash.clone()));
            obj.insert("hash".into(), Value::String(self.hash.clone()));
        }
        v
    }

    /// Builds the row that follows `prev_hash` at `seq`, hash included.
    pub fn chain(seq: i64, event: AuditEvent, prev_hash: &str) -> Result<Self, StoreError> {
        event.check()?;
        let mut row = AuditRow {
            seq,
            event,
            prev_hash: prev_hash.to_string(),
            hash: String::new(),
        };
        row.hash = row.compute_hash()?;
        Ok(row)
    }

    /// `hex(SHA-256(prev_hash ‖ JCS(entry)))` from the row's own fields.
    pub fn compute_hash(&self) -> Result<String, StoreError> {
        let canonical = canonical(&self.entry_json())?;
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(&canonical);
        Ok(hex::encode(h.finalize()))
    }
}

/// RFC 8785 canonical bytes of a JSON value.
pub fn canonical(v: &Value) -> Result<Vec<u8>, StoreError> {
    serde_jcs::to_vec(v).map_err(|e| StoreError::Backend(format!("canonical JSON: {e}")))
}

/// The `details` column: canonical text of the object.
pub fn details_text(v: &Value) -> Result<String, StoreError> {
    String::from_utf8(canonical(v)?).map_err(|e| StoreError::Backend(e.to_string()))
}

/// Reads the `details` column back; a row whose text is not JSON keeps it as a string, so
/// verify reports that row instead of the read failing.
pub fn details_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// Where the chain stands: the last row, and what retention pruned before the first kept one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditHead {
    /// Seq of the last row (0: nothing ever appended).
    pub seq: i64,
    /// Its hash (GENESIS when nothing was appended).
    pub hash: String,
    /// Rows up to this seq were pruned (0: none).
    pub pruned_through_seq: i64,
    /// The hash of the last pruned row: the first kept row's `prev_hash`.
    pub pruned_through_hash: String,
    /// How many rows retention deleted, over all runs.
    pub pruned_count: i64,
}

impl AuditHead {
    pub fn to_json(&self) -> Value {
        json!({
            "seq": self.seq,
            "hash": self.hash,
            "checkpoint": {
                "prunedThroughSeq": self.pruned_through_seq,
                "prunedThroughHash": self.pruned_through_hash,
                "prunedCount": self.pruned_count,
            }
        })
    }
}

/// Filters of `GET /v1/audit`; rows come in `seq` order after `after_seq`.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub after_seq: i64,
    pub kind: Option<String>,
    pub project_id: Option<String>,
    pub client_id: Option<String>,
    pub decision: Option<String>,
    pub code: Option<String>,
    /// `at_ms >= from_ms`.
    pub from_ms: Option<i64>,
    /// `at_ms < to_ms`.
    pub to_ms: Option<i64>,
    pub limit: u32,
    /// Newest first (`seq` descending) instead of oldest first.
    pub descending: bool,
    /// `seq < before_seq` (the cursor of a newest-first page).
    pub before_seq: Option<i64>,
}

/// The first row where the chain breaks, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    pub seq: i64,
    pub reason: String,
}

/// Recomputes the chain row by row (fed in `seq` order, in pages).
#[derive(Clone, Debug)]
pub struct Verifier {
    expect_seq: i64,
    prev_hash: String,
    pub rows_checked: u64,
}

impl Verifier {
    /// Starts after the retention checkpoint (or at the genesis).
    pub fn new(head: &AuditHead) -> Self {
        let prev_hash = if head.pruned_through_seq > 0 {
            head.pruned_through_hash.clone()
        } else {
            GENESIS.to_string()
        };
        Verifier {
            expect_seq: head.pruned_through_seq + 1,
            prev_hash,
            rows_checked: 0,
        }
    }

    pub fn feed(&mut self, row: &AuditRow) -> Result<(), Broken> {
        let at = self.expect_seq;
        if row.seq > at {
            return Err(Broken {
                seq: at,
                reason: format!("row {at} is missing (the next row is {})", row.seq),
            });
        }
        if row.seq < at {
            return Err(Broken {
                seq: row.seq,
                reason: format!("row {} is out of order (expected {at})", row.seq),
            });
        }
        if row.prev_hash != self.prev_hash {
            return Err(Broken {
                seq: at,
                reason: "prev_hash is not the previous row's hash".into(),
            });
        }
        let recomputed = row.compute_hash().map_err(|e| Broken {
            seq: at,
            reason: e.to_string(),
        })?;
        if recomputed != row.hash {
            return Err(Broken {
                seq: at,
                reason: "the row's content does not match its hash (edited)".into(),
            });
        }
        self.expect_seq = at + 1;
        self.prev_hash = row.hash.clone();
        self.rows_checked += 1;
        Ok(())
    }

    /// After the last row: the chain must end at the head (rows cut off the end are caught).
    pub fn finish(&self, head: &AuditHead) -> Result<(), Broken> {
        let last = self.expect_seq - 1;
        if last != head.seq {
            return Err(Broken {
                seq: last + 1,
                reason: format!(
                    "the chain ends at row {last} but the head is row {}",
                    head.seq
                ),
            });
        }
        if head.seq > 0 && self.prev_hash != head.hash {
            return Err(Broken {
                seq: head.seq,
                reason: "the last row's hash is not the head's".into(),
            });
        }
        Ok(())
    }
}

/// The result of a verify, as `GET /v1/audit/verify` answers it.
pub fn verify_json(head: &AuditHead, v: &Verifier, broken: Option<&Broken>) -> Value {
    json!({
        "ok": broken.is_none(),
        "rowsChecked": v.rows_checked,
        "head": head.to_json(),
        "firstBadRow": broken.map(|b| b.seq),
        "reason": broken.map(|b| b.reason.clone()),
    })
}

/// Verifies the whole stored chain, a page at a time.
pub async fn verify(store: &dyn crate::store::Store) -> Result<Value, StoreError> {
    let head = store.audit_head().await?;
    let mut v = Verifier::new(&head);
    let mut after = head.pruned_through_seq;
    loop {
        let page = store
            .audit_list(AuditQuery {
                after_seq: after,
                limit: 1000,
                ..AuditQuery::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for row in &page {
            if let Err(b) = v.feed(row) {
                return Ok(verify_json(&head, &v, Some(&b)));
            }
        }
    }
    let broken = v.finish(&head).err();
    Ok(verify_json(&head, &v, broken.as_ref()))
}

/// A short summary of what changed between two policy documents: the top-level keys that
/// differ, and the ids of projects and clients added, removed or edited.
pub fn policy_change_summary(before: Option<&Value>, after: &Value) -> Value {
    let empty = Value::Object(serde_json::Map::new());
    let before = before.unwrap_or(&empty);
    let mut changed = Vec::new();
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut all: Vec<String> = keys(before).into_iter().chain(keys(after)).collect();
    all.sort();
    all.dedup();
    for k in &all {
        if before.get(k) != after.get(k) {
            changed.push(Value::String(k.clone()));
        }
    }
    let mut out = serde_json::Map::new();
    out.insert("changedKeys".into(), Value::Array(changed));
    for coll in ["projects", "clients"] {
        let ids = |v: &Value| -> Vec<(String, Value)> {
            v.get(coll)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    i.get("id")
                        .and_then(Value::as_str)
                        .map(|id| (id.to_string(), i.clone()))
                })
                .collect()
        };
        let (b, a) = (ids(before), ids(after));
        let find = |l: &[(String, Value)], id: &str| l.iter().find(|(i, _)| i == id).cloned();
        let added: Vec<Value> = a
            .iter()
            .filter(|(id, _)| find(&b, id).is_none())
            .map(|(id, _)| Value::String(id.clone()))
            .collect();
        let removed: Vec<Value> = b
            .iter()
            .filter(|(id, _)| find(&a, id).is_none())
            .map(|(id, _)| Value::String(id.clone()))
            .collect();
        let edited: Vec<Value> = a
            .iter()
            .filter(|(id, v)| find(&b, id).is_some_and(|(_, old)| &old != v))
            .map(|(id, _)| Value::String(id.clone()))
            .collect();
        if !(added.is_empty() && removed.is_empty() && edited.is_empty()) {
            out.insert(
                coll.into(),
                json!({ "added": added, "removed": removed, "edited": edited }),
            );
        }
    }
    Value::Object(out)
}

// --- the periodic job: expired approvals and retention ---

pub const DAY_MS: i64 = 86_400_000;

/// EU AI Act Art. 19(1) / 26(6): at least six months of logs for high-risk systems.
pub const EU_AI_ACT_MIN_DAYS: u64 = 183;

/// The retention in force: the policy's `globalPolicy.auditLog.retention` (days), else the
/// `--audit-retention-days` flag; `None` keeps everything.
pub fn retention_days(policy: Option<&Value>, flag: Option<u64>) -> Option<u64> {
    policy
        .and_then(|p| p.pointer("/globalPolicy/auditLog/retention"))
        .and_then(Value::as_u64)
        .or(flag)
}

/// Why a retention is too short for the policy's compliance mode, if it is.
pub fn retention_warning(policy: Option<&Value>, days: Option<u64>) -> Option<String> {
    let mode = policy
        .and_then(|p| p.pointer("/globalPolicy/complianceMode"))
        .and_then(Value::as_str)?;
    match days {
        Some(d) if mode == "EU_AI_ACT" && d < EU_AI_ACT_MIN_DAYS => Some(format!(
            "audit retention of {d} days is under {EU_AI_ACT_MIN_DAYS} (six months): EU AI Act \
             Art. 19(1) and 26(6) ask at least six months of logs for high-risk systems"
        )),
        _ => None,
    }
}

/// One run: `approval.expired` entries, then retention (which never touches the usage ledger).
/// Returns the retention entry when rows were pruned.
pub async fn run_once(
    store: &dyn crate::store::Store,
    now_ms: i64,
    retention_days: Option<u64>,
) -> Result<Option<AuditRow>, StoreError> {
    store.audit_sweep_expired(now_ms).await?;
    let Some(days) = retention_days else {
        return Ok(None);
    };
    let keep_ms = i64::try_from(days)
        .ok()
        .and_then(|d| d.checked_mul(DAY_MS))
        .unwrap_or(i64::MAX);
    let entry = AuditEvent::new(crate::store::audit::RETENTION_KIND, now_ms)
        .actor("system")
        .details(json!({ "retentionDays": days }));
    store
        .audit_prune(now_ms.saturating_sub(keep_ms), entry)
        .await
}

/// Runs [`run_once`] every `every`, for as long as the sidecar runs; failures are logged
/// and retried at the next tick.
pub async fn run_job(state: crate::AppState, flag_days: Option<u64>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    let mut warned_version = -1;
    loop {
        tick.tick().await;
        let policy = match state.current_policy().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("audit job: {e}");
                continue;
            }
        };
        let doc = policy.as_ref().map(|p| &p.value);
        let days = retention_days(doc, flag_days);
        let version = policy.as_ref().map_or(0, |p| p.meta.version);
        if version != warned_version {
            if let Some(w) = retention_warning(doc, days) {
                tracing::warn!("{w}");
            }
            warned_version = version;
        }
        match run_once(state.store.as_ref(), state.clock.now_ms(), days).await {
            Ok(Some(r)) => {
                tracing::info!(seq = r.seq, details = %r.event.details, "audit retention run")
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("audit job: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
