//! `POST /v1/sync`: the filter's one call. Usage in (exactly once per `(instanceId, seq)`),
//! policy and budget leases out. The protocol, and the overspend bound it gives, are in
//! docs/sync-protocol.md; the arithmetic is in `store::lease`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use pag0_policy::Micros;
use pag0_wire::{LearnedFigure, LeaseGrant, SyncResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{nul_path, parse_json_per_element};
use crate::auth::Filter;
use crate::document::{limit_for, parse_counter};
use crate::error::AppError;
use crate::store::lease::default_want;
use crate::store::{
    LeaseAsk, Observation, StoreError, SyncWrite, UsageException, UsageRecord, MAX_EXCEPTION_RECORD,
};
use crate::AppState;

/// The request as this sidecar reads it (`pag0_wire::SyncRequest`, the type the filter
/// sends): each usage record, decision event and gap is kept as a [`Value`] and read on its own
/// ([`classify`], [`decisions::audit_rows`]), so a malformed one is quarantined and never
/// refuses the batch. Unknown fields are ignored: a newer filter may send more than this
/// sidecar knows.
pub type SyncRequest = pag0_wire::SyncRequest<Value, Value, Value>;

/// A usage record as this sidecar reads it (`pag0_wire::UsageRecord`, `learn` kept as sent and
/// read apart from the money by [`learn_facts`]). Its serialised form is what a batch's digest
/// is computed over (`pag0_wire::usage`).
pub use pag0_wire::UsageIn;

/// A usage record's `learn`, strictly: `key` a non-empty string of at most 255 bytes,
/// `estimate` money (a decimal string or an integer). Anything else (a missing field
/// included) is `Err` with the reason; it is never read as 0.
pub(crate) fn learn_facts(v: &Value) -> Result<(String, u64), String> {
    let key = match v.get("key") {
        Some(Value::String(k)) if !k.is_empty() && k.len() <= 255 => k.clone(),
        Some(_) => return Err("learn.key: not a catalogue host".into()),
        None => return Err("learn.key: missing".into()),
    };
    let estimate = match v.get("estimate") {
        Some(e) => Micros::from_json(e).map_err(|e| format!("learn.estimate: {e}"))?,
        None => return Err("learn.estimate: missing".into()),
    };
    Ok((key, estimate.get()))
}

/// A record as sidecars that ignored `cacheHit`/`savings` saw it (and digested it).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LegacyUsage<'a> {
    amount: Micros,
    counters: &'a [String],
    project_id: &'a Option<String>,
    client_id: &'a Option<String>,
    host: &'a Option<String>,
    at: Option<i64>,
}

const MAX_ID: usize = 128;
const DB_MAX: u64 = i64::MAX as u64;
const MAX_COUNTERS: usize = 64;

fn bad(details: Vec<String>) -> AppError {
    AppError::BadRequest {
        code: "BAD_SYNC",
        message: "the sync request is malformed".into(),
        details,
    }
}

fn check(req: &SyncRequest, max_batch: usize) -> Result<(), AppError> {
    let mut errs = Vec::new();
    if req.instance_id.is_empty()
        || req.instance_id.len() > MAX_ID
        || !req
            .instance_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        errs.push(format!(
            "instanceId: 1-{MAX_ID} characters of A-Z a-z 0-9 - _ . :"
        ));
    }
    if req.seq == 0 || i64::try_from(req.seq).is_err() {
        errs.push("seq: a positive integer below 2^63".into());
    }
    // Policy versions are stored as SQL BIGINT: one past 2^63 - 1 names no version.
    if i64::try_from(req.policy_version).is_err() {
        errs.push("policyVersion: an integer below 2^63".into());
    }
    // Counter names reach store queries as parameters; PostgreSQL's TEXT cannot take U+0000.
    for (i, l) in req.leases.iter().enumerate() {
        if l.counter.contains('\0') {
            errs.push(format!("leases[{i}].counter: holds U+0000 (NUL)"));
        }
    }
    for (i, c) in req.release.iter().enumerate() {
        if c.contains('\0') {
            errs.push(format!("release[{i}]: holds U+0000 (NUL)"));
        }
    }
    if req.usage.len() > max_batch {
        errs.push(format!(
            "usage: at most {max_batch} records per batch, got {}",
            req.usage.len()
        ));
    }
    if req.decisions.len() > decisions::MAX_DECISIONS {
        errs.push(format!(
            "decisions: at most {} events per batch, got {}",
            decisions::MAX_DECISIONS,
            req.decisions.len()
        ));
    }
    if req.gaps.len() > decisions::MAX_GAPS {
        errs.push(format!(
            "gaps: at most {} records per batch, got {}",
            decisions::MAX_GAPS,
            req.gaps.len()
        ));
    }
    if req.leases.len() > MAX_COUNTERS || req.release.len() > MAX_COUNTERS {
        errs.push(format!(
            "leases, release: at most {MAX_COUNTERS} counters each"
        ));
    }
    for (i, l) in req.leases.iter().enumerate() {
        if parse_counter(&l.counter).is_none() {
            errs.push(format!(
                "leases[{i}].counter: {:?} is not a counter key",
                l.counter
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(bad(errs))
    }
}

/// What is wrong with one record (empty: nothing).
fn record_problems(u: &UsageIn) -> Vec<String> {
    let mut errs = Vec::new();
    if u.counters.len() > 8 {
        errs.push("counters: at most 8".to_string());
    }
    for (j, c) in u.counters.iter().enumerate() {
        if parse_counter(c).is_none() {
            errs.push(format!("counters[{j}]: {c:?} is not a counter key"));
        }
    }
    if i64::try_from(u.amount.get()).is_err() {
        errs.push(format!("amount: above {}", i64::MAX));
    }
    if u.savings.is_some_and(|s| i64::try_from(s.get()).is_err()) {
        errs.push(format!("savings: above {}", i64::MAX));
    }
    errs
}

/// A batch's records sorted out: the ones to apply (with their index in the batch) and the
/// quarantined ones (index, reason). One bad record never refuses the batch.
pub(crate) struct Classified {
    pub good: Vec<(usize, UsageIn)>,
    pub quarantined: Vec<(usize, String)>,
}

pub(crate) fn classify(raw: &[Value]) -> Classified {
    let mut out = Classified {
        good: Vec::new(),
        quarantined: Vec::new(),
    };
    for (i, v) in raw.iter().enumerate() {
        if let Some(path) = nul_path(v) {
            out.quarantined
                .push((i, format!("usage[{i}]{path}: a string holds U+0000 (NUL)")));
            continue;
        }
        match serde_json::from_value::<UsageIn>(v.clone()) {
            Err(e) => out.quarantined.push((i, format!("usage[{i}]: {e}"))),
            Ok(u) => {
                let errs = record_problems(&u);
                if errs.is_empty() {
                    out.good.push((i, u));
                } else {
                    let errs: Vec<String> =
                        errs.iter().map(|e| format!("usage[{i}].{e}")).collect();
                    out.quarantined.push((i, errs.join("; ")));
                }
            }
        }
    }
    out
}

fn cut(s: String) -> String {
    if s.len() <= MAX_EXCEPTION_RECORD {
        return s;
    }
    let mut end = MAX_EXCEPTION_RECORD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_string()
}

/// Digest of the usage content: a retried batch must be byte-for-byte the same records.
pub(crate) fn digest<T: Serialize + ?Sized>(usage: &T) -> Result<String, AppError> {
    let bytes = serde_json::to_vec(usage).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

/// The digest without `cacheHit`/`savings`, when a record has them (otherwise it equals
/// [`digest`]): what a sidecar from before their storage recorded for the same batch.
pub(crate) fn legacy_digest(usage: &[UsageIn]) -> Result<Option<String>, AppError> {
    if usage.iter().all(|u| !u.cache_hit && u.savings.is_none()) {
        return Ok(None);
    }
    let legacy: Vec<LegacyUsage<'_>> = usage
        .iter()
        .map(|u| LegacyUsage {
            amount: u.amount,
            counters: &u.counters,
            project_id: &u.project_id,
            client_id: &u.client_id,
            host: &u.host,
            at: u.at,
        })
        .collect();
    digest(&legacy).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionsQuery {
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `GET /v1/usage/exceptions?limit=` (admin): quarantined and suspect usage records, newest
/// first; `limit` 1–1000 (default 100).
pub async fn exceptions(
    _: crate::auth::Admin,
    State(state): State<AppState>,
    query: Result<axum::extract::Query<ExceptionsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let axum::extract::Query(q) =
        query.map_err(|e| AppError::bad_request("BAD_QUERY", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::bad_request(
            "BAD_QUERY",
            format!("limit {limit}: between 1 and 1000"),
        ));
    }
    let rows = state.store.usage_exceptions(limit).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|e| {
            serde_json::json!({
                "kind": e.kind, "instanceId": e.instance_id, "seq": e.seq, "index": e.idx,
                "reason": e.reason,
                "record": serde_json::from_str::<Value>(&e.record).unwrap_or(Value::String(e.record.clone())),
                "committedAt": crate::clock::rfc3339(e.committed_at_ms),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "exceptions": items })))
}

pub async fn sync(
    _: Filter,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<SyncResponse>, AppError> {
    let req: SyncRequest = parse_json_per_element(&body)?;
    if let Err(e) = check(&req, state.config.max_batch) {
        state
            .metrics
            .sync_batches
            .with_label_values(&["rejected"])
            .inc();
        return Err(e);
    }
    let seq = i64::try_from(req.seq).map_err(|_| bad(vec!["seq: too large".into()]))?;
    let policy = state.current_policy().await?;

    let mut leases = Vec::new();
    let mut unlimited = Vec::new();
    let mut limits = BTreeMap::new();
    for ask in &req.leases {
        match policy
            .as_ref()
            .and_then(|p| limit_for(&p.value, &ask.counter))
        {
            Some(limit) => {
                // The store keeps BIGINT micro-USD: a budget above ~9.2e12 USD is as good as
                // unlimited, clamp rather than refuse every sync.
                let limit = limit.min(DB_MAX);
                limits.insert(ask.counter.clone(), limit);
                leases.push(LeaseAsk {
                    counter: ask.counter.clone(),
                    limit,
                    want: ask.want.map_or_else(|| default_want(limit), Micros::get),
                });
            }
            None => unlimited.push(ask.counter.clone()),
        }
    }
    leases.sort_by(|a, b| a.counter.cmp(&b.counter));
    leases.dedup_by(|a, b| a.counter == b.counter);

    let classified = classify(&req.usage);
    let good: Vec<UsageIn> = classified.good.iter().map(|(_, u)| u.clone()).collect();
    let usage: Vec<UsageRecord> = good
        .iter()
        .map(|u| UsageRecord {
            amount: u.amount.get(),
            counters: u.counters.clone(),
            project_id: u.project_id.clone(),
            client_id: u.client_id.clone(),
            host: u.host.clone(),
            at_ms: u.at,
            cache_hit: u.cache_hit,
            savings: u.savings.map_or(0, Micros::get),
        })
        .collect();
    let now = state.clock.now_ms();
    let rules = crate::alerts::rules_for(
        policy.as_ref().map(|p| &p.value),
        usage.iter().flat_map(|u| u.counters.iter().cloned()),
    );
    let seq_i64 = seq;
    let raw_of = |i: usize| cut(req.usage.get(i).map(Value::to_string).unwrap_or_default());
    let mut exceptions: Vec<UsageException> = Vec::new();
    for (i, why) in &classified.quarantined {
        tracing::warn!(instance = %req.instance_id, seq, "usage record quarantined: {why}");
        exceptions.push(UsageException {
            instance_id: req.instance_id.clone(),
            seq: seq_i64,
            idx: i64::try_from(*i).unwrap_or(i64::MAX),
            kind: "quarantined".into(),
            record: raw_of(*i),
            reason: why.clone(),
            committed_at_ms: now,
        });
    }
    for (i, u) in &classified.good {
        if let Some(s) = &u.suspect {
            exceptions.push(UsageException {
                instance_id: req.instance_id.clone(),
                seq: seq_i64,
                idx: i64::try_from(*i).unwrap_or(i64::MAX),
                kind: "suspect".into(),
                record: raw_of(*i),
                reason: cut(format!("{}: {}", s.reason, s.raw)),
                committed_at_ms: now,
            });
        }
    }
    exceptions.sort_by_key(|e| e.idx);
    // A batch of good records digests as it always did; one with a quarantined record digests
    // its raw records (a resend is byte-for-byte the same, so the same digest).
    let (mut batch_digest, mut batch_legacy) = if classified.quarantined.is_empty() {
        (digest(&good)?, legacy_digest(&good)?)
    } else {
        (digest(&req.usage)?, None)
    };
    // A batch with decision events digests them too (as sent: a resend is byte-for-byte the
    // same); one without digests as before, so older batches keep their digest.
    if !req.decisions.is_empty() || !req.gaps.is_empty() {
        batch_digest = digest(&(&batch_digest, &req.decisions, &req.gaps))?;
        batch_legacy = None;
    }
    let audit = decisions::audit_rows(&req.instance_id, req.seq, &req.decisions, &req.gaps, now);
    let outcome = state
        .store
        .sync_alerting(
            SyncWrite {
                exceptions,
                audit,
                instance_id: req.instance_id.clone(),
                seq,
                digest: batch_digest,
                legacy_digest: batch_legacy,
                usage,
                release: req.release.clone(),
                leases,
                now_ms: now,
                lease_ttl_ms: state.config.lease_ttl_ms,
            },
            rules,
        )
        .await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e @ StoreError::SeqReused { .. }) => {
            state
                .metrics
                .sync_batches
                .with_label_values(&["rejected"])
                .inc();
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };

    // The fleet learns from the believed reports of a batch applied now (not a duplicate).
    if !outcome.duplicate {
        let obs: Vec<Observation> = good
            .iter()
            .filter(|u| u.suspect.is_none())
            .filter_map(|u| {
                let facts = learn_facts(u.learn.as_ref()?);
                match facts {
                    Ok((key, estimate)) => Some(Observation {
                        key,
                        estimate,
                        actual: u.amount.get(),
                    }),
                    Err(why) => {
                        tracing::warn!(instance = %req.instance_id, seq, "not learned: {why}");
                        None
                    }
                }
            })
            .collect();
        if !obs.is_empty() {
            if let Err(e) = state.store.learn(obs, now).await {
                tracing::warn!("learned estimates not updated: {e}");
            }
        }
    }
    let learned = match state.store.learned().await {
        Ok(rows) => rows
            .into_iter()
            .filter(|r| r.learned.samples > 0)
            .map(|r| {
                (
                    r.key,
                    LearnedFigure {
                        high_permille: r.learned.high_permille,
                        samples: u64::from(r.learned.samples),
                    },
                )
            })
            .collect(),
        Err(e) => {
            tracing::warn!("learned estimates not read: {e}");
            BTreeMap::new()
        }
    };

    crate::alerts::raised(&state, &outcome.alerts_raised);
    let m = &state.metrics;
    let carried = !req.usage.is_empty() || !req.decisions.is_empty() || !req.gaps.is_empty();
    let label = match (!carried, outcome.duplicate) {
        (true, _) => "empty",
        (false, true) => "duplicate",
        (false, false) => "applied",
    };
    m.sync_batches.with_label_values(&[label]).inc();
    if !outcome.duplicate {
        m.usage_records.inc_by(good.len() as u64);
        m.usage_micros.inc_by(
            good.iter()
                .map(|u| u.amount.get())
                .fold(0, u64::saturating_add),
        );
    }
    m.lease_granted_micros.inc_by(
        outcome
            .leases
            .iter()
            .map(|g| g.added)
            .fold(0, u64::saturating_add),
    );

    let leases = outcome
        .leases
        .iter()
        .map(|g| {
            let limit = limits.get(&g.counter).copied().unwrap_or(0);
            (
                g.counter.clone(),
                LeaseGrant {
                    granted: Micros::new(g.granted),
                    limit: Micros::new(limit),
                    spent: Micros::new(g.spent),
                    expires_at_ms: g.expires_at_ms,
                },
            )
        })
        .collect();
    let (policy_version, policy_doc) = match &policy {
        // Any difference, not only newer: a store restored from backup restarts numbering.
        Some(p) if u64::try_from(p.meta.version).ok() != Some(req.policy_version) => {
            (p.meta.version, Some(p.value.clone()))
        }
        Some(p) => (p.meta.version, None),
        None => (0, None),
    };
    Ok(Json(SyncResponse {
        ack: req.seq,
        duplicate: outcome.duplicate,
        // Versions and the TTL are never negative (the store numbers from 1, the flag is checked).
        policy_version: u64::try_from(policy_version).unwrap_or(0),
        policy: policy_doc,
        server_time_ms: now,
        lease_ttl_ms: u64::try_from(state.config.lease_ttl_ms).unwrap_or(0),
        leases,
        unlimited,
        learned,
    }))
}

pub(crate) mod decisions;

#[cfg(test)]
mod tests;
