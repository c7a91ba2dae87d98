//! Per-worker budget slices (standalone mode): a worker VM takes a little more room from a
//! shared counter than one request needs and admits its next requests from that local slice,
//! so most requests touch no shared counter with a write.
//!
//! The shared counter always counts every slice held (`used` = spent + reserved + held), so
//! admission stays exact: the sum of what all workers admit never passes the limit (the only
//! excess is, as without slices, actual costs above their estimates). What a slice changes is
//! *who* may use the last room: a worker refuses a request its own slice and the shared room
//! cannot cover while another worker still holds a slice. That is kept small:
//!
//! - a slice is granted only from plenty of room: at most [`SLICE_REQUESTS`] times the request
//!   and at most `1/`[`SLICE_SHARE`] of the room left after it, and none at all when that is
//!   less than one more request (near the limit every request is admitted exactly, by CAS on
//!   the shared counter, as without slices);
//! - a slice not used since the previous tick is given back to the shared counter
//!   ([`Slices::return_idle`], every [`TICK_MS`]); all of them when the VM stops.
//!
//! Money a request reserved and did not spend goes back into its worker's slice (no write)
//! while that worker holds a slice of the counter; otherwise (near the limit) straight back to
//! the counter, so a failed request frees the last room for every worker at once. A cost above
//! the reservation is taken from the slice first, then charged to the counter.
//! The slices are per worker VM (plain memory, one thread): nothing here is shared.

use std::cell::RefCell;

use rustc_hash::FxHashMap;

use pag0_policy::{BudgetKey, Micros};

use super::{cas_update, decode, encode, shared_key, HostError, SharedStore, Update};

/// How often idle slices are given back (the standalone root context's tick).
pub const TICK_MS: u64 = 1_000;
/// A slice covers at most this many more requests of the size that asked for it.
pub const SLICE_REQUESTS: u64 = 16;
/// A slice takes at most this fraction (1/n) of the room left after the request.
pub const SLICE_SHARE: u64 = 32;

/// The slices one worker VM holds, by counter. Looked up several times per request, so by the
/// policy's [`BudgetKey`] (no shared-data key string built per lookup) with a fast non-keyed
/// hash (the keys are pag0's own counters, never chosen by a client).
#[derive(Default)]
pub struct Slices {
    held: RefCell<FxHashMap<BudgetKey, Held>>,
    /// Set by [`close`](Slices::close) when the root context is done: requests still in
    /// flight then settle on the counters directly (nobody would give a refund back).
    closed: std::cell::Cell<bool>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Held {
    amount: u64,
    /// Used (taken from or added to) since the last tick: kept at the next tick.
    busy: bool,
}

/// The slice to take on top of a request that brings a counter to `next` (of `limit`).
pub fn grant(next: Micros, amount: Micros, limit: Micros) -> u64 {
    let room = limit.saturating_sub(next).get();
    let g = amount
        .get()
        .saturating_mul(SLICE_REQUESTS)
        .min(room / SLICE_SHARE);
    if g < amount.get().max(1) {
        0
    } else {
        g
    }
}

impl Slices {
    pub fn new() -> Self {
        Slices::default()
    }

    /// Gives every slice back and stops taking new ones (the root context is done).
    pub fn close<S: SharedStore + ?Sized>(&self, store: &S) -> Result<(), HostError> {
        self.closed.set(true);
        self.return_all(store)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// What this worker holds of one counter.
    pub fn held(&self, key: &BudgetKey) -> u64 {
        self.held
            .try_borrow()
            .ok()
            .and_then(|h| h.get(key).map(|x| x.amount))
            .unwrap_or(0)
    }

    /// Takes `amount` from the slice if it covers it.
    pub fn take(&self, key: &BudgetKey, amount: u64) -> bool {
        let Ok(mut held) = self.held.try_borrow_mut() else {
            return false;
        };
        match held.get_mut(key) {
            Some(h) if h.amount >= amount => {
                h.amount -= amount;
                h.busy = true;
                true
            }
            _ => false,
        }
    }

    /// Takes what the slice has, up to `amount`; returns what was taken.
    pub fn take_up_to(&self, key: &BudgetKey, amount: u64) -> u64 {
        let Ok(mut held) = self.held.try_borrow_mut() else {
            return 0;
        };
        match held.get_mut(key) {
            Some(h) => {
                let t = h.amount.min(amount);
                h.amount -= t;
                h.busy = true;
                t
            }
            None => 0,
        }
    }

    /// Adds room the shared counter already counts (a refund, a rolled-back reservation).
    pub fn put(&self, key: &BudgetKey, amount: u64) {
        if amount == 0 {
            return;
        }
        if let Ok(mut held) = self.held.try_borrow_mut() {
            let h = held.entry(key.clone()).or_default();
            h.amount = h.amount.saturating_add(amount);
            h.busy = true;
        }
    }

    /// Replaces the slice (after a reservation that used it up and took `amount` more).
    pub fn set(&self, key: &BudgetKey, amount: u64) {
        if let Ok(mut held) = self.held.try_borrow_mut() {
            match held.get_mut(key) {
                Some(h) => {
                    h.amount = amount;
                    h.busy = true;
                }
                None if amount > 0 => {
                    held.insert(key.clone(), Held { amount, busy: true });
                }
                None => {}
            }
        }
    }

    /// Gives back every slice not used since the previous call (the tick), and forgets empty
    /// ones. A slice that cannot be given back (host error) is kept and tried again.
    pub fn return_idle<S: SharedStore + ?Sized>(&self, store: &S) -> Result<(), HostError> {
        self.give_back(store, false)
    }

    /// Gives back every slice (the VM stops, or the configuration changes).
    pub fn return_all<S: SharedStore + ?Sized>(&self, store: &S) -> Result<(), HostError> {
        self.give_back(store, true)
    }

    fn give_back<S: SharedStore + ?Sized>(&self, store: &S, all: bool) -> Result<(), HostError> {
        let due: Vec<(BudgetKey, u64)> = {
            let Ok(mut held) = self.held.try_borrow_mut() else {
                return Ok(());
            };
            held.retain(|_, h| h.amount > 0 || h.busy);
            held.iter_mut()
                .filter_map(|(k, h)| {
                    let idle = all || !h.busy;
                    h.busy = false;
                    (idle && h.amount > 0).then(|| (k.clone(), h.amount))
                })
                .collect()
        };
        let mut first_err = Ok(());
        for (key, amount) in due {
            match subtract(store, &shared_key(&key), amount) {
                Ok(()) => {
                    if let Ok(mut held) = self.held.try_borrow_mut() {
                        if let Some(h) = held.get_mut(&key) {
                            // Only what was given back: a request may have added in between
                            // (it cannot here, one thread, but keep the arithmetic honest).
                            h.amount = h.amount.saturating_sub(amount);
                            if h.amount == 0 && !h.busy {
                                held.remove(&key);
                            }
                        }
                    }
                }
                Err(e) => {
                    if first_err.is_ok() {
                        first_err = Err(e);
                    }
                }
            }
        }
        first_err
    }

    /// Total held over every counter (for tests and logs).
    pub fn total(&self) -> u64 {
        self.held
            .try_borrow()
            .map(|h| h.values().map(|x| x.amount).sum())
            .unwrap_or(0)
    }
}

/// `used −= amount` on a shared counter, by CAS (never below 0; a missing counter is left
/// alone: nothing to give back to).
fn subtract<S: SharedStore + ?Sized>(store: &S, key: &str, amount: u64) -> Result<(), HostError> {
    cas_update(store, key, |value, _| {
        // A missing counter has nothing to give back to; a value of another layout reads as
        // full and stays so (see `decode`).
        if value.is_none_or(|v| v.len() != 8) {
            return Update::Keep(());
        }
        let next = decode(value).saturating_sub(Micros::new(amount));
        Update::Set(encode(next), ())
    })
}

#[cfg(test)]
mod tests;
