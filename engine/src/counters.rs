//! Budget counters in proxy-wasm shared data: one key per [`BudgetKey::storage_key`], shared by
//! every worker VM of one Envoy (same `vm_id`), value = spent + reserved micro-USD as u64 LE.
//!
//! Every update is a compare-and-swap retried until it lands: a `CasMismatch` means another
//! worker's update landed first, so the loop makes progress overall and never drops an
//! increment. Reserving several counters is done one by one; when one lacks room the ones
//! already taken are released again (also by CAS), so no reservation leaks.
//!
//! Accuracy (the overshoot bound): admission is exact — `used + estimate <= limit` is checked
//! and written in one CAS, so concurrent requests cannot all pass a nearly-empty budget, and a
//! counter is created exactly once ([`create`]), so no first burst loses an increment. A budget
//! is exceeded only by actual costs above the estimates (money already spent upstream is
//! charged in full): at most the sum of those differences for the requests in flight.
//!
//! Shared data is behind [`SharedStore`] so this logic is tested natively with a fake that
//! injects CAS conflicts; `plugin/src/host.rs` implements it with proxy-wasm hostcalls.

pub mod cas;
pub mod create;
pub mod slices;

use std::cell::{Cell, RefCell};

use pag0_policy::budget::{settle_counter, try_reserve};
use pag0_policy::{BudgetKey, BudgetView, Micros, Reservation};

pub use cas::{cas_update, cas_update_from, Update};
pub use slices::Slices;

/// Prefix of every counter key, so other shared-data users (policy cache, sync state) never
/// collide with counters.
pub const KEY_PREFIX: &str = "pag0/b/";

/// The host's shared key-value store, as proxy-wasm defines it: values carry a CAS token;
/// a write with `Some(cas)` fails with `CasMismatch` if someone wrote since that read; a write
/// with `None` (or to a missing key) always succeeds.
pub trait SharedStore {
    /// The value and its CAS token; `(None, None)` when the key does not exist.
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError>;
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
    /// The host clock, only to tell a stale creation lock (see [`create`]).
    fn now_nanos(&self) -> u64;
}

/// A host status other than Ok/NotFound/CasMismatch (the raw proxy-wasm status code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetError {
    CasMismatch,
    Host(HostError),
}

/// Why a set of reservations was not taken. Nothing stays reserved in either case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReserveError {
    /// `reservations[index]` did not fit: its counter stood at `used`.
    NoRoom {
        index: usize,
        used: Micros,
    },
    Host(HostError),
}

/// The counters of one Envoy, over some [`SharedStore`].
pub struct Counters<'s, S: ?Sized> {
    store: &'s S,
    /// Counters read through [`BudgetView`] while deciding, with their CAS tokens: the first
    /// CAS attempt of the following update uses this read instead of reading again (if anyone
    /// wrote in between, the CAS fails and the loop reads afresh). Used at most once per entry.
    seen: RefCell<Vec<Seen>>,
    /// Standalone mode: this worker VM's slices ([`slices`]); `None` reserves every request on
    /// the shared counters (managed mode, where the counters are checked against leases).
    slices: Option<&'s Slices>,
}

struct Seen {
    key: BudgetKey,
    shared_key: String,
    value: Option<Vec<u8>>,
    cas: Option<u32>,
}

// === impl Counters ===

impl<'s, S: SharedStore + ?Sized> Counters<'s, S> {
    pub fn new(store: &'s S) -> Self {
        Counters {
            store,
            seen: RefCell::new(Vec::new()),
            slices: None,
        }
    }

    /// Reserves from (and settles into) this worker's [`Slices`] first when `slices` is given.
    /// Closed slices (the root context is done) count as none.
    pub fn with_slices(store: &'s S, slices: Option<&'s Slices>) -> Self {
        Counters {
            slices: slices.filter(|s| !s.is_closed()),
            ..Counters::new(store)
        }
    }

    /// Spent + reserved on one counter; 0 for a counter nobody has touched this period.
    pub fn used(&self, key: &BudgetKey) -> Result<Micros, HostError> {
        let (value, _) = self.store.get(&shared_key(key))?;
        Ok(decode(value.as_deref()))
    }

    /// Takes every reservation, or none: on the first counter without room (or a host error)
    /// the counters already taken are released and the error says which one failed.
    pub fn reserve_all(&self, reservations: &[Reservation]) -> Result<(), ReserveError> {
        for (index, r) in reservations.iter().enumerate() {
            let taken = match self.slices {
                Some(slices) => self.reserve_sliced(slices, r),
                None => self
                    .update(&r.key, |used| {
                        try_reserve(used, r.amount, r.limit).map_err(|_room| used)
                    })
                    .map(|_| ()),
            };
            let err = match taken {
                Ok(()) => continue,
                Err(UpdateError::Rejected(used)) => ReserveError::NoRoom { index, used },
                Err(UpdateError::Host(h)) => ReserveError::Host(h),
            };
            let done = reservations.get(..index).unwrap_or_default();
            // A rollback is a settlement at 0: into this worker's slice where it holds one,
            // else on the counter. A rollback that hits a host error leaves that counter too
            // high (fails closed: the budget looks more spent than it is).
            let _ = self.settle_all(done, Micros::ZERO);
            return Err(err);
        }
        Ok(())
    }

    /// One reservation in standalone mode: from this worker's slice if it covers it, else the
    /// rest (what the slice lacks) plus a new slice from the shared counter, in one CAS. The
    /// limit is checked exactly as without slices: the slice this worker holds is already
    /// counted in `used`, so the request fits iff `used − held + amount ≤ limit`.
    fn reserve_sliced(&self, slices: &Slices, r: &Reservation) -> Result<(), UpdateError<Micros>> {
        let key = &r.key;
        if slices.take(key, r.amount.get()) {
            return Ok(());
        }
        let own = slices.held(key);
        let need = Micros::new(r.amount.get().saturating_sub(own));
        let granted = Cell::new(0u64);
        self.update(&r.key, |used| match try_reserve(used, need, r.limit) {
            Ok(next) => {
                let g = slices::grant(next, r.amount, r.limit);
                granted.set(g);
                Ok(Micros::new(next.get().saturating_add(g)))
            }
            // Shown as spent: what the others hold, not this worker's own slice.
            Err(_room) => Err(used.saturating_sub(Micros::new(own))),
        })?;
        slices.set(key, granted.get());
        Ok(())
    }

    /// Replaces each reservation by `actual` on its counter (`actual = 0` releases it).
    /// Call exactly once per successful [`reserve_all`](Self::reserve_all). Every counter is
    /// attempted even if one fails; the first host error is returned.
    ///
    /// When `actual` equals a reservation's amount the counter already holds the right value
    /// (`used − amount + actual = used`) and is not touched: no read, no CAS write. This is
    /// every request to a per-request-priced endpoint without a cost report. (The one case it
    /// differs from rewriting is a counter below the request's own reservation, which no
    /// writer of this layout produces.)
    pub fn settle_all(
        &self,
        reservations: &[Reservation],
        actual: Micros,
    ) -> Result<(), HostError> {
        let mut first_err = Ok(());
        for r in reservations.iter().filter(|r| r.amount != actual) {
            let settled = match self.slices {
                None => self.update(&r.key, |used| {
                    Ok::<_, std::convert::Infallible>(settle_counter(used, r.amount, actual))
                }),
                Some(slices) => {
                    let key = &r.key;
                    let (reserved, actual) = if actual < r.amount {
                        // Reserved and not spent: back into this worker's slice while it holds
                        // one (the counter has plenty of room); near the limit, where no slice
                        // is granted, back to the counter at once for every worker.
                        if slices.held(key) > 0 {
                            slices.put(key, r.amount.get() - actual.get());
                            continue;
                        }
                        (r.amount, actual)
                    } else {
                        // Spent more than reserved: from the slice first, the rest charged.
                        let extra = actual.get() - r.amount.get();
                        let rest = extra - slices.take_up_to(key, extra);
                        if rest == 0 {
                            continue;
                        }
                        (Micros::ZERO, Micros::new(rest))
                    };
                    self.update(&r.key, |used| {
                        Ok::<_, std::convert::Infallible>(settle_counter(used, reserved, actual))
                    })
                }
            };
            if let (Err(UpdateError::Host(h)), Ok(())) = (settled, &first_err) {
                first_err = Err(h);
            }
        }
        first_err
    }

    /// Read-modify-write by CAS, retried until it lands or `f` rejects the current value.
    fn update<E>(
        &self,
        key: &BudgetKey,
        f: impl Fn(Micros) -> Result<Micros, E>,
    ) -> Result<Micros, UpdateError<E>> {
        let (key, seen) = match self.take_seen(key) {
            Some(s) => (s.shared_key, Some((s.value, s.cas))),
            None => (shared_key(key), None),
        };
        // Only the first attempt can use the earlier read.
        let mut from_seen = seen.is_some();
        let out = cas_update_from(self.store, &key, seen, |value, _| {
            let seen_read = std::mem::replace(&mut from_seen, false);
            if value.is_none() {
                return Update::Create(encode(Micros::ZERO));
            }
            match f(decode(value)) {
                Ok(n) => Update::Set(encode(n), Ok(n)),
                // Refuse only on a fresh read, exactly as without the earlier read.
                Err(_) if seen_read => Update::Retry,
                Err(e) => Update::Keep(Err(e)),
            }
        })
        .map_err(UpdateError::Host)?;
        out.map_err(UpdateError::Rejected)
    }

    fn take_seen(&self, key: &BudgetKey) -> Option<Seen> {
        let mut seen = self.seen.try_borrow_mut().ok()?;
        let i = seen.iter().position(|s| s.key == *key)?;
        Some(seen.swap_remove(i))
    }
}

/// The policy reads counters through this view while deciding; reads are not atomic with the
/// later reservation, which is why [`Counters::reserve_all`] checks the limit again.
impl<S: SharedStore + ?Sized> BudgetView for Counters<'_, S> {
    fn used(&self, key: &BudgetKey) -> Micros {
        let shared_key = shared_key(key);
        match self.store.get(&shared_key) {
            Ok((value, cas)) => {
                // This worker's own slice is room it may use: it counts as not spent here.
                let own = self.slices.map_or(0, |s| s.held(key));
                let used = decode(value.as_deref()).saturating_sub(Micros::new(own));
                if let Ok(mut seen) = self.seen.try_borrow_mut() {
                    seen.retain(|s| s.key != *key);
                    seen.push(Seen {
                        key: key.clone(),
                        shared_key,
                        value,
                        cas,
                    });
                }
                used
            }
            // A counter that cannot be read is treated as full: refuse rather than overspend.
            Err(_) => Micros::MAX,
        }
    }

    /// With this worker's slice of the counter covering the request, it fits without reading
    /// the counter: [`reserve_all`](Counters::reserve_all) takes it from the slice, and the
    /// slice is room the counter already counts (so even after other requests' overruns
    /// passed the limit, what is spent stays within the counter's value: the overshoot bound
    /// is unchanged). Otherwise the counter is read, as always.
    fn check(&self, key: &BudgetKey, amount: Micros, limit: Micros) -> Result<(), Micros> {
        if let Some(slices) = self.slices {
            if slices.held(key) >= amount.get() {
                return Ok(());
            }
        }
        let used = BudgetView::used(self, key);
        try_reserve(used, amount, limit)
            .map(|_| ())
            .map_err(|_room| used)
    }
}

enum UpdateError<E> {
    Rejected(E),
    Host(HostError),
}

/// `pag0/b/` + [`BudgetKey::storage_key`], built in one allocation (this runs for every
/// counter of every request).
pub fn shared_key(key: &BudgetKey) -> String {
    let label = key.scope.label();
    let project = key.scope.project_id();
    let mut s = String::with_capacity(
        KEY_PREFIX.len() + label.len() + project.map_or(0, |p| p.len() + 1) + 1 + key.period.len(),
    );
    s.push_str(KEY_PREFIX);
    s.push_str(label);
    if let Some(p) = project {
        s.push('/');
        s.push_str(p);
    }
    s.push('/');
    s.push_str(&key.period);
    s
}

pub fn encode(m: Micros) -> [u8; 8] {
    m.get().to_le_bytes()
}

/// A missing value is 0. A value of the wrong length was not written by this layout
/// (a future or older filter version); counting it as 0 would let spending restart, so it
/// reads as full — the operator sees BUDGET_EXCEEDED instead of silent overspend.
pub fn decode(value: Option<&[u8]>) -> Micros {
    match value {
        None => Micros::ZERO,
        Some(bytes) => match <[u8; 8]>::try_from(bytes) {
            Ok(b) => Micros::new(u64::from_le_bytes(b)),
            Err(_) => Micros::MAX,
        },
    }
}

#[cfg(test)]
mod tests;
