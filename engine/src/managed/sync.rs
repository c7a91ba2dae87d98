//! One `POST /v1/sync` as shared state sees it: the request body built from the batch and the
//! leases, and the answer applied to them.

use pag0_policy::budget::settle_counter;
use pag0_policy::{BudgetKey, Micros};
use pag0_wire::{LeaseAsk, SyncRequest, SyncResponse};
use serde_json::Value;

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
        leases.push(LeaseAsk {
            counter: name.clone(),
            want: Some(Micros::new(want)),
        });
        wants.push((name, want));
    }
    let leased: Vec<String> = match store.get(LEASED_KEY)?.0 {
        Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
        None => Vec::new(),
    };
    let release: Vec<String> = leased
        .into_iter()
        .filter(|c| !wants.iter().any(|(w, _)| w == c))
        .take(64)
        .collect();

    let seq = batch.as_ref().map(|b| b.seq);
    // Each decision line is an event this filter serialised; one that does not parse (it
    // cannot) is sent as its text, which the sidecar keeps as `decision.rejected`. None
    // (and no gaps): the fields are absent, and the batch digests as older sidecars know it.
    let decisions: Vec<Value> = attached
        .decisions
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.clone())))
        .collect();
    let body: SyncRequest = SyncRequest {
        instance_id: instance_id.to_string(),
        seq: seq.unwrap_or(1),
        policy_version,
        usage: batch.map(|b| b.usage).unwrap_or_default(),
        decisions,
        gaps: attached.gaps,
        leases,
        release,
    };
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
    // Every field acted on is required (pag0_wire::SyncResponse): an answer without one is
    // refused whole, nothing of it applied, never read as 0.
    let v: SyncResponse =
        serde_json::from_slice(body).map_err(|e| format!("answer not understood: {e}"))?;
    let host = |e: HostError| format!("shared data error {e:?}");

    // Leases.
    let mut leased = Vec::new();
    for (counter, l) in &v.leases {
        let want = sent
            .wants
            .iter()
            .find(|(c, _)| c == counter)
            .map(|(_, w)| *w)
            .unwrap_or(0);
        let lease = Lease {
            granted: l.granted.get(),
            valid_until_ms: sent.sent_at_ms.saturating_add(v.lease_ttl_ms),
            want,
            spent: l.spent.get(),
            limit: l.limit.get(),
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
    if let Some(seq) = sent.seq {
        if seq == v.ack {
            let cleared = update_batches(store, |b| match &b.inflight {
                Some(f) if f.seq == seq => b.inflight.take(),
                _ => None,
            })
            .map_err(host)?;
            if let Some(batch) = cleared {
                let counters = Counters::new(store);
                for r in &batch.usage {
                    for c in &r.counters {
                        subtract_pending(&counters, store, c, r.amount).map_err(host)?;
                    }
                }
                applied.acked = Some(seq);
            }
            // Whoever saw the ack: the events that rode this seq are in the audit log.
            decisions::acknowledged(store, seq).map_err(host)?;
        }
    }

    // The fleet's learned estimates (docs/estimates.md), folded into this Envoy's.
    for (key, l) in v.learned.iter().take(MAX_LEARNED) {
        if l.samples == 0 {
            continue;
        }
        let fleet = pag0_policy::Learned {
            high_permille: l.high_permille,
            samples: u32::try_from(l.samples).unwrap_or(u32::MAX),
        };
        crate::learned::merge_fleet(store, key, fleet).map_err(host)?;
    }

    // Policy.
    if let Some(doc) = v.policy.as_ref().filter(|p| p.is_object()) {
        store_policy(store, v.policy_version, doc).map_err(host)?;
        applied.new_policy_version = Some(v.policy_version);
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
