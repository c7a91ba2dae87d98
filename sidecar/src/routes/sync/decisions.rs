//! The decision log's part of a sync batch (docs/audit.md "Decision events"): the filter's
//! `decisions` and `gaps` become audit rows, appended in the batch's own transaction, so they
//! are there exactly once — the batch's `(instanceId, seq)` is what makes a resend a no-op.
//!
//! Each element is read on its own, like a usage record: one malformed event never refuses
//! the batch (that would block every event behind it). It is kept instead as a
//! `decision.rejected` row with the reason and the raw text, so nothing disappears unseen.

use pag0_wire::{DecisionEvent, DecisionGap, BODY_SHA256_HEX_LEN};
use serde_json::{json, Map, Value};

use crate::audit::AuditEvent;

/// Most decision events one batch may carry (the filter sends ~500).
pub const MAX_DECISIONS: usize = 10_000;
/// Most gap records one batch may carry.
pub const MAX_GAPS: usize = 1_000;

/// Audit kind of one decided request.
pub const DECISION_KIND: &str = "decision";
/// Audit kind of events a filter dropped past its queue cap (`count` of them).
pub const GAP_KIND: &str = "decision.gap";
/// Audit kind of an element the sidecar could not read; details keep the reason and raw text.
pub const REJECTED_KIND: &str = "decision.rejected";

use pag0_wire::limits::{MAX_AUTHORITY, MAX_CODE, MAX_ID, MAX_METHOD, MAX_PATH};

/// Where an element came from: the batch and its index there.
struct Origin<'a> {
    instance_id: &'a str,
    seq: u64,
    field: &'static str,
    index: usize,
}

impl Origin<'_> {
    fn details(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("instanceId".into(), json!(self.instance_id));
        m.insert("seq".into(), json!(self.seq));
        m.insert("index".into(), json!(self.index));
        m
    }

    fn actor(&self) -> String {
        format!("instance:{}", self.instance_id)
    }

    fn rejected(&self, raw: &Value, reason: String, now_ms: i64) -> AuditEvent {
        let mut d = self.details();
        d.insert("field".into(), json!(self.field));
        d.insert("reason".into(), json!(reason));
        // As long as a quarantined usage record's text (`MAX_EXCEPTION_RECORD`).
        d.insert("record".into(), json!(super::cut(raw.to_string())));
        let mut e = AuditEvent::new(REJECTED_KIND, now_ms).actor(self.actor());
        e.details = Value::Object(d);
        e
    }
}

fn at_ms(at: u64) -> Result<i64, String> {
    i64::try_from(at).map_err(|_| format!("at: {at} is not a time in milliseconds"))
}

fn bounded(errs: &mut Vec<String>, name: &str, v: Option<&str>, max: usize) {
    if let Some(v) = v {
        if v.is_empty() || v.len() > max {
            errs.push(format!("{name}: 1-{max} bytes, got {}", v.len()));
        }
    }
}

fn micros_fit(errs: &mut Vec<String>, name: &str, v: Option<pag0_policy::Micros>) {
    if v.is_some_and(|m| i64::try_from(m.get()).is_err()) {
        errs.push(format!("{name}: above {}", i64::MAX));
    }
}

/// What is wrong with one event (empty: nothing).
fn problems(d: &DecisionEvent) -> Vec<String> {
    let mut errs = Vec::new();
    if let Err(e) = at_ms(d.at) {
        errs.push(e);
    }
    bounded(&mut errs, "method", Some(&d.method), MAX_METHOD);
    bounded(&mut errs, "authority", Some(&d.authority), MAX_AUTHORITY);
    bounded(&mut errs, "path", Some(&d.path), MAX_PATH);
    if d.path.contains('?') {
        errs.push("path: carries a query string".into());
    }
    bounded(&mut errs, "code", d.code.as_deref(), MAX_CODE);
    bounded(&mut errs, "scope", d.scope.as_deref(), MAX_CODE);
    bounded(&mut errs, "clientId", d.client_id.as_deref(), MAX_ID);
    bounded(&mut errs, "projectId", d.project_id.as_deref(), MAX_ID);
    bounded(&mut errs, "model", d.model.as_deref(), MAX_ID);
    bounded(&mut errs, "approvalId", d.approval_id.as_deref(), MAX_ID);
    micros_fit(&mut errs, "estimate", d.estimate);
    micros_fit(&mut errs, "cost", d.cost);
    micros_fit(&mut errs, "savings", d.savings);
    if i64::try_from(d.policy_version).is_err() {
        errs.push("policyVersion: too large".into());
    }
    for (name, v) in [
        ("firstByteMs", d.first_byte_ms),
        ("latencyMs", d.latency_ms),
    ] {
        if v.is_some_and(|v| i64::try_from(v).is_err()) {
            errs.push(format!("{name}: too large"));
        }
    }
    if let Some(h) = &d.body_sha256 {
        if h.len() != BODY_SHA256_HEX_LEN
            || !h
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            errs.push(format!(
                "bodySha256: {BODY_SHA256_HEX_LEN} lowercase hex digits"
            ));
        }
    }
    errs
}

fn decision_row(o: &Origin<'_>, d: DecisionEvent) -> Result<AuditEvent, String> {
    let errs = problems(&d);
    if !errs.is_empty() {
        return Err(errs.join("; "));
    }
    let to_i64 = |v: u64| i64::try_from(v).map_err(|e| e.to_string());
    let mut details = o.details();
    details.insert("method".into(), json!(d.method));
    details.insert("path".into(), json!(d.path));
    let opt = [
        ("scope", d.scope.map(Value::from)),
        ("savings", d.savings.map(|m| json!(m.get().to_string()))),
        ("upstreamStatus", d.upstream_status.map(Value::from)),
        ("firstByteMs", d.first_byte_ms.map(Value::from)),
        ("bodySha256", d.body_sha256.map(Value::from)),
        (
            "requiresApproval",
            d.requires_approval.then_some(Value::Bool(true)),
        ),
    ];
    for (k, v) in opt {
        if let Some(v) = v {
            details.insert(k.into(), v);
        }
    }
    let mut e = AuditEvent::new(DECISION_KIND, at_ms(d.at)?).actor(o.actor());
    e.project_id = d.project_id;
    e.client_id = d.client_id;
    e.host = Some(d.authority);
    e.model = d.model;
    e.decision = Some(d.decision.as_str().to_string());
    e.code = d.code;
    e.estimate = d.estimate.map(pag0_policy::Micros::get);
    e.cost = d.cost.map(pag0_policy::Micros::get);
    e.latency_ms = d.latency_ms.map(to_i64).transpose()?;
    e.policy_version = Some(to_i64(d.policy_version)?);
    e.approval_id = d.approval_id;
    e.details = Value::Object(details);
    Ok(e)
}

fn gap_row(o: &Origin<'_>, g: DecisionGap) -> Result<AuditEvent, String> {
    if g.count == 0 {
        return Err("count: at least 1".into());
    }
    if g.from > g.to {
        return Err(format!("from {} is after to {}", g.from, g.to));
    }
    if i64::try_from(g.count).is_err() {
        return Err("count: too large".into());
    }
    let mut details = o.details();
    details.insert("from".into(), json!(g.from));
    details.insert("to".into(), json!(g.to));
    details.insert("count".into(), json!(g.count));
    // `to` is checked too: the row's time is `from`, the span is in the details.
    at_ms(g.to)?;
    let mut e = AuditEvent::new(GAP_KIND, at_ms(g.from)?).actor(o.actor());
    e.details = Value::Object(details);
    Ok(e)
}

/// The audit rows of a batch's `decisions` and `gaps`, in batch order (gaps first: they are
/// older than every event the batch carries). `now_ms` stamps rejected elements only.
pub fn audit_rows(
    instance_id: &str,
    seq: u64,
    decisions: &[Value],
    gaps: &[Value],
    now_ms: i64,
) -> Vec<AuditEvent> {
    let rows = |field: &'static str,
                raws: &[Value],
                read: fn(&Origin<'_>, &Value) -> Result<AuditEvent, String>| {
        raws.iter()
            .enumerate()
            .map(|(index, raw)| {
                let o = Origin { instance_id, seq, field, index };
                let read = |o: &Origin<'_>, raw: &Value| match super::super::nul_path(raw) {
                    Some(path) => Err(format!("{path}: a string holds U+0000 (NUL)")),
                    None => read(o, raw),
                };
                read(&o, raw).unwrap_or_else(|why| {
                    tracing::warn!(instance = %instance_id, seq, field, index, "decision log element rejected: {why}");
                    o.rejected(raw, format!("{field}[{index}]: {why}"), now_ms)
                })
            })
            .collect::<Vec<_>>()
    };
    let mut out = rows("gaps", gaps, |o, raw| {
        serde_json::from_value::<DecisionGap>(raw.clone())
            .map_err(|e| e.to_string())
            .and_then(|g| gap_row(o, g))
    });
    out.extend(rows("decisions", decisions, |o, raw| {
        serde_json::from_value::<DecisionEvent>(raw.clone())
            .map_err(|e| e.to_string())
            .and_then(|d| decision_row(o, d))
    }));
    out
}
