//! Asking for room before the next regular sync: a request's shortfall (the slice is too small
//! while the fleet has room) and the early-sync flag the sync owner polls.

use pag0_policy::Reservation;

use crate::counters::{HostError, SetError, SharedStore};

use super::{set_blind, u64_of, Admit, LeaseView, EARLY_KEY};

/// Per counter: the most room (pending + estimate) a request needed that its slice could not
/// give while the fleet had room. The next sync asks for at least this much, so one request
/// larger than the current slice is admitted on retry instead of waiting for slow doubling.
const NEED_PREFIX: &str = "pag0/m/need/";

/// Records, for every counter of `reservations` whose slice is too small for it while the fleet
/// still had room, the room the request needed (`pending + amount`), keeping the largest.
/// Returns true if anything was recorded (the caller then asks for an early sync).
pub fn record_shortfall<S: SharedStore + ?Sized>(
    store: &S,
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
        loop {
            let (v, cas) = store.get(&key)?;
            let old = v.as_deref().map(u64_of).unwrap_or(0);
            if old >= need {
                break;
            }
            match store.set(&key, &need.to_le_bytes(), cas) {
                Ok(()) => break,
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Host(h)) => return Err(h),
            }
        }
        recorded = true;
    }
    Ok(recorded)
}

/// A request did not fit this Envoy's slice while the fleet had room: record what it needed and
/// ask for an early sync, so its retry finds a slice large enough. Best effort: a shared-data
/// error here only delays the larger lease until the ordinary doubling catches up.
pub fn ask_for_room<S: SharedStore + ?Sized>(
    store: &S,
    view: &LeaseView,
    reservations: &[Reservation],
) {
    if let Ok(true) = record_shortfall(store, view, reservations) {
        let _ = request_early(store);
    }
}

/// The recorded need of one counter, reset to 0 (a refused request that still needs the room
/// records it again when it is retried).
pub(super) fn take_need<S: SharedStore + ?Sized>(
    store: &S,
    counter: &str,
) -> Result<u64, HostError> {
    let key = format!("{NEED_PREFIX}{counter}");
    let (v, _) = store.get(&key)?;
    let need = v.as_deref().map(u64_of).unwrap_or(0);
    if need > 0 {
        set_blind(store, &key, &0u64.to_le_bytes())?;
    }
    Ok(need)
}

/// Asks the sync owner to sync at its next tick (a lease is running low).
pub fn request_early<S: SharedStore + ?Sized>(store: &S) -> Result<(), HostError> {
    set_blind(store, EARLY_KEY, &1u64.to_le_bytes())
}

/// True (and resets it) if a request asked for an early sync.
pub fn take_early<S: SharedStore + ?Sized>(store: &S) -> Result<bool, HostError> {
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
