//! One `POST /v1/sync` as shared state sees it: the request body built from the batch and the
//! leases, and the answer applied to them.

use pag0_policy::budget::settle_counter;
use pag0_policy::{BudgetKey, Micros};
use serde_json::{json, Value};

use crate::counters::{self, Counters, HostError, SharedStore, Update};

use super::batches::update_batches;
use super::decisions::{self, Attached};
use super::policy::store_policy;
use super::room::take_need;
use super::{
    lease, lease_key, set_blind, Batch, Lease, LEASED_KEY, LOW_WATER_DIVISOR, MAX_BATCH_RECORDS,
};

/// What one sync sends (the body) and what the answer needs to be applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub body: Vec<u8>,
    pub seq: Option<u64>,
    pub sent_at_ms: u64,
    pub wants: Vec<(String, u64)>,
}

/// What an answer changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub acked: Option<u64>,
    pub new_policy_version: Option<u64>,
}

/// The next sync: the batch in flight if there is one (the same seq, records and decision
/// events), else the unsent usage and waiting decision events become the new in-flight batch
/// with the next seq. `counters` are the
/// counters the current policy charges now (`None` before the first policy).
pub fn prepare_sync(
    store: &dyn SharedStore,
    instance_id: &str,
    policy_version: u64,
    counters: &[(BudgetKey, Micros)],
    now_ms: u64,
) -> Result<Outgoing, HostError> {
    let events_waiting = decisions::waiting(store)?;
    let (batch, created) = update_batches(store, |b| {
        let mut created = false;
        if b.inflight.is_none() && (!b.unsent.is_empty() || events_waiting) {
            let n = b.unsent.len().min(MAX_BATCH_RECORDS);
            let usage: Vec<_> = b.unsent.drain(..n).collect();
            b.inflight = Some(Batch {
                seq: b.next_seq.max(1),
                usage,
            });
            b.next_seq = b.next_seq.max(1) + 1;
            created = true;
        }
        (b.inflight.clone(), created)
    })?;
    let attached = match &batch {
        Some(b) => decisions::attach(store, b.seq, created)?,
        None => Attached::default(),
    };

    let mut wants = Vec::new();
    let mut leases = Vec::new();
    for (key, limit) in counters {
        let name = key.storage_key();
        let current = lease(store, &name)?;
        let pending = Counters::new(store).used(key)?;
        let default_want = (limit.get() / 16).max(1);
        let want = match current {
            None => default_want,
            Some(l) => {
                let left = l.granted.saturating_sub(pending.get());
                let base = l.want.max(default_want);
                if left < base / LOW_WATER_DIVISOR {
                    base.saturating_mul(2)
                } else {
                    base
                }
            }
        };
        // Room already reserved or settled but unacknowledged must stay covered, and so must
        // a request that was refused for want of a large enough slice.
        let need = take_need(store, &name)?;
        let want = want.max(pending.get()).max(need).min(limit.get());
        leases.push(json!({"counter": name, "want": want.to_string()}));
        wants.push((name, want));
    }
    let leased: Vec<String> = match store.get(LEASED_KEY)?.0 {
        Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
        None => Vec::new(),
    };
    let release: Vec<&String> = leased
        .iter()
        .filter(|c| !wants.iter().any(|(w, _)| w == *c))
        .take(64)
        .collect();

    let seq = batch.as_ref().map(|b| b.seq);
    let mut body = json!({
        "instanceId": instance_id,
        "seq": seq.unwrap_or(1),
        "policyVersion": policy_version,
        "usage": batch.map(|b| b.usage).unwrap_or_default(),
        "leases": leases,
        "release": release,
    });
    // Only when there are any: a batch without them keeps the digest older sidecars know.
    if !attached.is_empty() {
        if let Some(o) = body.as_object_mut() {
            // Each line is an event this filter serialised; one that does not parse (it
            // cannot) is sent as its text, which the sidecar keeps as `decision.rejected`.
            let events: Vec<Value> = attached
                .decisions
                .iter()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.clone())))
                .collect();
            o.insert("decisions".into(), Value::Array(events));
            o.insert("gaps".into(), json!(attached.gaps));
        }
    }
    Ok(Outgoing {
        body: serde_json::to_vec(&body).unwrap_or_default(),
        seq,
        sent_at_ms: now_ms,
        wants,
    })
}

/// Applies a 2xx answer to `sent`: takes the leases (allowance first, then the acknowledged
/// amounts leave `pending`, so admission is never looser than the truth in between), clears
/// the acknowledged batch, and stores a new policy.
pub fn apply_response(
    store: &dyn SharedStore,
    sent: &Outgoing,
    body: &[u8],
) -> Result<Applied, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("answer not JSON: {e}"))?;
    let ttl = v.get("leaseTtlMs").and_then(Value::as_u64).unwrap_or(0);
    let ack = v.get("ack").and_then(Value::as_u64);
    let host = |e: HostError| format!("shared data error {e:?}");

    // Leases.
    let empty = serde_json::Map::new();
    let leases = v.get("leases").and_then(Value::as_object).unwrap_or(&empty);
    let mut leased = Vec::new();
    for (counter, l) in leases {
        let Some(granted) = l.get("granted").and_then(money) else {
            continue;
        };
        let want = sent
            .wants
            .iter()
            .find(|(c, _)| c == counter)
            .map(|(_, w)| *w)
            .unwrap_or(0);
        let lease = Lease {
            granted,
            valid_until_ms: sent.sent_at_ms.saturating_add(ttl),
            want,
            spent: l.get("spent").and_then(money).unwrap_or(0),
            limit: l.get("limit").and_then(money).unwrap_or(0),
        };
        let bytes = serde_json::to_vec(&lease).unwrap_or_default();
        set_blind(store, &lease_key(counter), &bytes).map_err(host)?;
        leased.push(counter.clone());
    }
    let bytes = serde_json::to_vec(&leased).unwrap_or_default();
    set_blind(store, LEASED_KEY, &bytes).map_err(host)?;

    // The acknowledged batch leaves `pending` (it is inside `granted` now). Only the worker
    // whose CAS clears it does this, so a batch is never subtracted twice.
    let mut applied = Applied::default();
    if let (Some(seq), Some(ack)) = (sent.seq, ack) {
        if seq == ack {
            let cleared = update_batches(store, |b| match &b.inflight {
                Some(f) if f.seq == seq => b.inflight.take(),
                _ => None,
            })
            .map_err(host)?;
            if let Some(batch) = cleared {
                let counters = Counters::new(store);
                for r in &batch.usage {
                    let amount = Micros::parse(&r.amount).unwrap_or(Micros::ZERO);
                    for c in &r.counters {
                        subtract_pending(&counters, store, c, amount).map_err(host)?;
                    }
                }
                applied.acked = Some(seq);
            }
            // Whoever saw the ack: the events that rode this seq are in the audit log.
            decisions::acknowledged(store, seq).map_err(host)?;
        }
    }

    // The fleet's learned estimates (docs/estimates.md), folded into this Envoy's.
    if let Some(learned) = v.get("learned").and_then(Value::as_object) {
        for (key, l) in learned.iter().take(MAX_LEARNED) {
            if let Some(fleet) = fleet_learned(l) {
                crate::learned::merge_fleet(store, key, fleet).map_err(host)?;
            }
        }
    }

    // Policy.
    if let (Some(doc), Some(version)) = (
        v.get("policy").filter(|p| p.is_object()),
        v.get("policyVersion").and_then(Value::as_u64),
    ) {
        store_policy(store, version, doc).map_err(host)?;
        applied.new_policy_version = Some(version);
    }
    Ok(applied)
}

/// The sidecar refused the batch `sent` carried as invalid (a 4xx other than 408/429):
/// resending the same bytes can only be refused again and would hold every later record
/// back, so the batch is dropped and the next sync sends the next one. Returns how many
/// records and decision events were dropped (`None` if that batch is no longer in flight). Their amounts stay in
/// this Envoy's `pending` counters until the period ends: the fleet never saw them, this
/// Envoy keeps counting them (the conservative side). The decision events it carried become
/// a gap record for the next batch: the audit log shows them as missing.
pub fn drop_refused(
    store: &dyn SharedStore,
    sent: &Outgoing,
) -> Result<Option<(usize, u64)>, HostError> {
    let Some(seq) = sent.seq else {
        return Ok(None);
    };
    let events = decisions::refused(store, seq)?;
    let records = update_batches(store, |b| match &b.inflight {
        Some(f) if f.seq == seq => b.inflight.take().map(|f| f.usage.len()),
        _ => None,
    })?;
    Ok(records.map(|n| (n, events)))
}

/// Whether an HTTP status from the sidecar means "this request is invalid, do not resend":
/// 4xx except 408 (timeout) and 429 (back-pressure), which are worth retrying.
pub fn refused_as_invalid(status: &str) -> bool {
    status.len() == 3 && status.starts_with('4') && status != "408" && status != "429"
}

fn subtract_pending(
    _counters: &Counters<'_, dyn SharedStore + '_>,
    store: &dyn SharedStore,
    counter: &str,
    amount: Micros,
) -> Result<(), HostError> {
    let key = format!("{}{counter}", counters::KEY_PREFIX);
    counters::cas_update(store, &key, |v, _| {
        if v.is_none() {
            return Update::Keep(());
        }
        let next = settle_counter(counters::decode(v), amount, Micros::ZERO);
        Update::Set(counters::encode(next), ())
    })
}

/// Most learned figures one answer is read for (a catalogue has far fewer entries).
pub const MAX_LEARNED: usize = 1024;

/// `{"highPermille": "120000", "samples": 5}`; `None` for anything else (that key is skipped).
fn fleet_learned(v: &Value) -> Option<pag0_policy::Learned> {
    let high = v.get("highPermille").and_then(money)?;
    let samples = v.get("samples").and_then(Value::as_u64)?;
    Some(pag0_policy::Learned {
        high_permille: high,
        samples: u32::try_from(samples).unwrap_or(u32::MAX),
    })
    .filter(|l| l.samples > 0)
}

fn money(v: &Value) -> Option<u64> {
    Micros::from_json(v).ok().map(Micros::get)
}
