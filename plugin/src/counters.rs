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
//! injects CAS conflicts; `host.rs` implements it with proxy-wasm hostcalls.

pub mod create;

use pag0_policy::budget::{settle_counter, try_reserve};
use pag0_policy::{BudgetKey, BudgetView, Micros, Reservation};

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
}

// === impl Counters ===

impl<'s, S: SharedStore + ?Sized> Counters<'s, S> {
    pub fn new(store: &'s S) -> Self {
        Counters { store }
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
            let taken = self.update(&r.key, |used| {
                try_reserve(used, r.amount, r.limit).map_err(|_room| used)
            });
            let err = match taken {
                Ok(_) => continue,
                Err(UpdateError::Rejected(used)) => ReserveError::NoRoom { index, used },
                Err(UpdateError::Host(h)) => ReserveError::Host(h),
            };
            let done = reservations.get(..index).unwrap_or_default();
            // A rollback that hits a host error leaves that counter too high (fails closed:
            // the budget looks more spent than it is); nothing better can be done here.
            let _ = self.settle_all(done, Micros::ZERO);
            return Err(err);
        }
        Ok(())
    }

    /// Replaces each reservation by `actual` on its counter (`actual = 0` releases it).
    /// Call exactly once per successful [`reserve_all`](Self::reserve_all). Every counter is
    /// attempted even if one fails; the first host error is returned.
    pub fn settle_all(
        &self,
        reservations: &[Reservation],
        actual: Micros,
    ) -> Result<(), HostError> {
        let mut first_err = Ok(());
        for r in reservations {
            let settled = self.update(&r.key, |used| {
                Ok::<_, std::convert::Infallible>(settle_counter(used, r.amount, actual))
            });
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
        let key = shared_key(key);
        loop {
            let (value, cas) = self.store.get(&key).map_err(UpdateError::Host)?;
            if value.is_none() {
                create::create(self.store, &key, &encode(Micros::ZERO))
                    .map_err(UpdateError::Host)?;
                continue;
            }
            let next = f(decode(value.as_deref())).map_err(UpdateError::Rejected)?;
            match self.store.set(&key, &encode(next), cas) {
                Ok(()) => return Ok(next),
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Host(h)) => return Err(UpdateError::Host(h)),
            }
        }
    }
}

/// The policy reads counters through this view while deciding; reads are not atomic with the
/// later reservation, which is why [`Counters::reserve_all`] checks the limit again.
impl<S: SharedStore + ?Sized> BudgetView for Counters<'_, S> {
    fn used(&self, key: &BudgetKey) -> Micros {
        // A counter that cannot be read is treated as full: refuse rather than overspend.
        Counters::used(self, key).unwrap_or(Micros::MAX)
    }
}

enum UpdateError<E> {
    Rejected(E),
    Host(HostError),
}

pub fn shared_key(key: &BudgetKey) -> String {
    format!("{KEY_PREFIX}{}", key.storage_key())
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
