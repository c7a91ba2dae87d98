//! One counter's lease (the room the sidecar handed this Envoy), the sidecar's health, and
//! what the two allow a request.

use pag0_policy::Micros;
use serde::{Deserialize, Serialize};

use crate::config::FailureMode;
use crate::counters::{cas_update, HostError, SharedStore, Update};

use super::{u64_of, DOWN_KEY};

const LEASE_PREFIX: &str = "pag0/m/l/";

/// The room the sidecar handed this Envoy on one counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// `granted` of the last answer: net of every acknowledged record.
    pub granted: u64,
    /// Own clock: (time the sync carrying it was sent) + `leaseTtlMs`.
    pub valid_until_ms: u64,
    /// The last `want` asked for (the target to hold).
    pub want: u64,
    /// Fleet-wide committed spend and the limit, as of that answer (0 if not sent).
    #[serde(default)]
    pub spent: u64,
    #[serde(default)]
    pub limit: u64,
}

// === impl Lease ===

impl Lease {
    /// The fleet had room beyond this slice at the last answer: a request that does not fit
    /// the slice is waiting for a larger lease, not over budget.
    pub fn fleet_has_room(&self) -> bool {
        self.limit > 0 && self.spent.saturating_add(self.granted) < self.limit
    }
}

/// How a request may be admitted on one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// `pending + estimate ≤ allowance`.
    Lease(Micros),
    /// Sidecar down with `failureMode: open`: no limit here, recorded and reported later.
    Unbounded,
    /// No usable lease (`failureMode: closed`, or before the first leases arrive).
    Unavailable,
}

pub fn lease_key(counter: &str) -> String {
    format!("{LEASE_PREFIX}{counter}")
}

pub fn lease(store: &dyn SharedStore, counter: &str) -> Result<Option<Lease>, HostError> {
    let (v, _) = store.get(&lease_key(counter))?;
    Ok(v.and_then(|v| serde_json::from_slice(&v).ok()))
}

/// The sidecar has not answered since this ms time (`None`: it answers).
pub fn down_since(store: &dyn SharedStore) -> Result<Option<u64>, HostError> {
    let (v, _) = store.get(DOWN_KEY)?;
    Ok(v.as_deref().map(u64_of).filter(|&t| t != 0))
}

/// Records the sidecar's health; true when this call changed it (log the transition once).
pub fn set_down(store: &dyn SharedStore, down: bool, now_ms: u64) -> Result<bool, HostError> {
    cas_update(store, DOWN_KEY, |v, _| {
        let was_down = v.map(u64_of).unwrap_or(0) != 0;
        if was_down == down {
            return Update::Keep(false);
        }
        let next = if down { now_ms.max(1) } else { 0 };
        if v.is_none() {
            return Update::Create(0u64.to_le_bytes());
        }
        Update::Set(next.to_le_bytes(), true)
    })
}

/// How a request may use one counter right now.
pub fn admit(lease: Option<Lease>, now_ms: u64, down: bool, mode: FailureMode) -> Admit {
    match (lease.filter(|l| l.valid_until_ms > now_ms), down, mode) {
        (_, true, FailureMode::Open) => Admit::Unbounded,
        (Some(l), _, _) => Admit::Lease(Micros::new(l.granted)),
        (None, _, FailureMode::Open) => Admit::Unbounded,
        (None, _, FailureMode::Closed) => Admit::Unavailable,
    }
}

/// `used` as `decide()` must see it so that `used + estimate ≤ limit` is the lease test
/// `pending + estimate ≤ allowance`: `limit − (allowance − pending)`, saturating.
pub fn presented_used(limit: Micros, allowance: Micros, pending: Micros) -> Micros {
    limit.saturating_sub(allowance.saturating_sub(pending))
}
