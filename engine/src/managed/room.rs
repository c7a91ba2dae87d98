//! Asking for room before the next regular sync: a request's shortfall (the slice is too small
//! while the fleet has room) and the early-sync flag the sync owner polls.

use pag0_policy::{Micros, Reservation};
use pag0_wire::{LeaseAsk, SyncRequest, SyncResponse};

use crate::counters::{cas_update, HostError, SetError, SharedStore, Update};

use super::{lease_key, set_blind, u64_of, Admit, Lease, LeaseView, EARLY_KEY, LEASED_KEY};

/// Per counter: the most room (pending + estimate) a request needed that its slice could not
/// give while the fleet had room. The next sync asks for at least this much, so one request
/// larger than the current slice is admitted on retry instead of waiting for slow doubling.
const NEED_PREFIX: &str = "pag0/m/need/";

/// Records, for every counter of `reservations` whose slice is too small for it while the fleet
/// still had room, the room the request needed (`pending + amount`), keeping the largest.
/// Returns true if anything was recorded (the caller then asks for an early sync).
pub fn record_shortfall(
    store: &dyn SharedStore,
    view: &LeaseView,
    reservations: &[Reservation],
) -> Result<bool, HostError> {
    let mut recorded = false;
    for r in reservations {
        let Some(c) = view.find(&r.key) else { continue };
        let Admit::Lease(allowance) = c.admit else {
            continue;
        };
        let need = c.pending.get().saturating_add(r.amount.get());
        if need <= allowance.get() || !c.fleet_has_room {
            continue;
        }
        let key = format!("{NEED_PREFIX}{}", r.key.storage_key());
        cas_update(store, &key, |v, _| {
            let old = v.map(u64_of).unwrap_or(0);
            if old >= need {
                return Update::Keep(());
            }
            // An absent key: set without a token, which lands unconditionally.
            Update::Set(need.to_le_bytes(), ())
        })?;
        recorded = true;
    }
    Ok(recorded)
}

/// A request did not fit this Envoy's slice while the fleet had room: record what it needed and
/// ask for an early sync, so its retry finds a slice large enough. Best effort: a shared-data
/// error here only delays the larger lease until the ordinary doubling catches up.
pub fn ask_for_room(store: &dyn SharedStore, view: &LeaseView, reservations: &[Reservation]) {
    if let Ok(true) = record_shortfall(store, view, reservations) {
        let _ = request_early(store);
    }
}

/// The recorded need of one counter, reset to 0 (a refused request that still needs the room
/// records it again when it is retried).
pub(super) fn take_need(store: &dyn SharedStore, counter: &str) -> Result<u64, HostError> {
    let key = format!("{NEED_PREFIX}{counter}");
    let (v, _) = store.get(&key)?;
    let need = v.as_deref().map(u64_of).unwrap_or(0);
    if need > 0 {
        set_blind(store, &key, &0u64.to_le_bytes())?;
    }
    Ok(need)
}

/// Asks the sync owner to sync at its next tick (a lease is running low).
pub fn request_early(store: &dyn SharedStore) -> Result<(), HostError> {
    set_blind(store, EARLY_KEY, &1u64.to_le_bytes())
}

/// True (and resets it) if a request asked for an early sync.
pub fn take_early(store: &dyn SharedStore) -> Result<bool, HostError> {
    let (v, cas) = store.get(EARLY_KEY)?;
    if v.as_deref().map(u64_of).unwrap_or(0) == 0 {
        return Ok(false);
    }
    match store.set(EARLY_KEY, &0u64.to_le_bytes(), cas) {
        Ok(()) => Ok(true),
        Err(SetError::CasMismatch) => Ok(false),
        Err(SetError::Host(h)) => Err(h),
    }
}

/// A slice is sized to the requests that use it: a request that finds its slice short asks for
/// room for this many requests of its size (capped at the limit), so the next few of its size
/// are admitted on the slice without another call.
pub const SIZING_REQUESTS: u64 = 4;

/// One on-request-path `POST /v1/sync` (docs/sync-protocol.md, "Room on the request path"):
/// no usage, only leases for the counters a held request is short on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomCall {
    pub body: Vec<u8>,
    pub sent_at_ms: u64,
    /// Per counter: the `want` asked for.
    pub wants: Vec<(String, u64)>,
    /// `(next_seq, seq in flight)` when it was sent: an answer is applied only if no usage
    /// batch was acknowledged or dropped meanwhile (its `granted` may not be net of it).
    batches_at: (u64, Option<u64>),
}

/// The want for one counter a request of `amount` is short on: room for it on top of what is
/// pending, and for [`SIZING_REQUESTS`] requests of its size, never less than the current
/// target or the default slice, at most the limit.
pub fn sized_want(limit: u64, pending: u64, amount: u64, current_want: u64) -> u64 {
    pending
        .saturating_add(amount)
        .max(amount.saturating_mul(SIZING_REQUESTS))
        .max(current_want)
        .max((limit / 16).max(1))
        .min(limit)
}

/// The call that would give a request its room: a lease ask for every counter of
/// `reservations` whose slice is too small for it (or that has no usable lease). `None` if no
/// counter is short (nothing a sync could change).
pub fn prepare_room_call(
    store: &dyn SharedStore,
    view: &LeaseView,
    reservations: &[Reservation],
    policy_version: u64,
    now_ms: u64,
) -> Result<Option<RoomCall>, HostError> {
    let mut wants = Vec::new();
    for r in reservations {
        let Some(c) = view.find(&r.key) else { continue };
        let need = c.pending.get().saturating_add(r.amount.get());
        let short = match c.admit {
            Admit::Lease(a) => need > a.get(),
            Admit::Unavailable => true,
            Admit::Unbounded => false,
        };
        if short {
            let want = sized_want(c.limit.get(), c.pending.get(), r.amount.get(), c.want);
            wants.push((r.key.storage_key(), want));
        }
    }
    if wants.is_empty() {
        return Ok(None);
    }
    let instance = super::instance_id(store)?;
    let b = super::batches(store)?;
    let body: SyncRequest = SyncRequest {
        instance_id: instance,
        seq: 1,
        policy_version,
        usage: Vec::new(),
        decisions: Vec::new(),
        gaps: Vec::new(),
        leases: wants
            .iter()
            .map(|(c, w)| LeaseAsk {
                counter: c.clone(),
                want: Some(Micros::new(*w)),
            })
            .collect(),
        release: Vec::new(),
    };
    Ok(Some(RoomCall {
        body: serde_json::to_vec(&body).unwrap_or_default(),
        sent_at_ms: now_ms,
        wants,
        batches_at: (b.next_seq, b.inflight.map(|f| f.seq)),
    }))
}

/// Applies the answer to a [`RoomCall`]: its leases only (no ack, no policy: the sync loop
/// owns those). Returns false, changing nothing, if a usage batch was acknowledged or dropped
/// while the call was out: the answer's `granted` may then not be net of that batch, whose
/// amounts have already left `pending`, and taking it could admit more than the fleet gave.
pub fn apply_room_answer(
    store: &dyn SharedStore,
    call: &RoomCall,
    body: &[u8],
) -> Result<bool, String> {
    let host = |e: HostError| format!("shared data error {e:?}");
    let v: SyncResponse =
        serde_json::from_slice(body).map_err(|e| format!("answer not understood: {e}"))?;
    let b = super::batches(store).map_err(host)?;
    if (b.next_seq, b.inflight.map(|f| f.seq)) != call.batches_at {
        return Ok(false);
    }
    let mut taken = Vec::new();
    for (counter, want) in &call.wants {
        let Some(l) = v.leases.get(counter) else {
            continue;
        };
        let lease = Lease {
            granted: l.granted.get(),
            valid_until_ms: call.sent_at_ms.saturating_add(v.lease_ttl_ms),
            want: *want,
            spent: l.spent.get(),
            limit: l.limit.get(),
        };
        let bytes = serde_json::to_vec(&lease).unwrap_or_default();
        set_blind(store, &lease_key(counter), &bytes).map_err(host)?;
        taken.push(counter.clone());
    }
    if !taken.is_empty() {
        let mut leased: Vec<String> = match store.get(LEASED_KEY).map_err(host)?.0 {
            Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
            None => Vec::new(),
        };
        for c in taken {
            if !leased.contains(&c) {
                leased.push(c);
            }
        }
        let bytes = serde_json::to_vec(&leased).unwrap_or_default();
        set_blind(store, LEASED_KEY, &bytes).map_err(host)?;
    }
    Ok(true)
}
