//! Admission in managed mode: a request's counters read once ([`LeaseView`]), checked against
//! the leases instead of the limits.

use pag0_policy::{BudgetKey, BudgetView, CompiledPolicy, Micros, Reservation, ScopeKind};

use crate::config::FailureMode;
use crate::counters::{Counters, HostError, SharedStore};

use super::{admit, down_since, lease, policy_counters, presented_used, Admit, LOW_WATER_DIVISOR};

/// One counter a request may charge, as admission sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterState {
    pub key: BudgetKey,
    pub limit: Micros,
    pub admit: Admit,
    pub pending: Micros,
    pub want: u64,
    /// See [`Lease::fleet_has_room`](super::Lease::fleet_has_room).
    pub fleet_has_room: bool,
}

/// The org's and one project's counters, read once per request: the [`BudgetView`] that
/// `decide()` sees in managed mode, and the limits reservations are taken against.
pub struct LeaseView {
    pub counters: Vec<CounterState>,
    pub down: bool,
    pub mode: FailureMode,
}

// === impl LeaseView ===

impl LeaseView {
    pub fn read<S: SharedStore>(
        store: &S,
        policy: &CompiledPolicy,
        project_id: &str,
        now: chrono::DateTime<chrono::Utc>,
        now_ms: u64,
        mode: FailureMode,
    ) -> Result<Self, HostError> {
        let down = down_since(store)?.is_some();
        let mut counters = Vec::new();
        for (key, limit) in policy_counters(policy, now) {
            if key.scope.project_id().is_some_and(|p| p != project_id) {
                continue;
            }
            let l = lease(store, &key.storage_key())?;
            let pending = Counters::new(store).used(&key)?;
            counters.push(CounterState {
                admit: admit(l, now_ms, down, mode),
                want: l.map(|l| l.want).unwrap_or(0),
                fleet_has_room: l.is_some_and(|l| l.fleet_has_room()),
                key,
                limit,
                pending,
            });
        }
        Ok(LeaseView {
            counters,
            down,
            mode,
        })
    }

    pub(super) fn find(&self, key: &BudgetKey) -> Option<&CounterState> {
        self.counters.iter().find(|c| &c.key == key)
    }

    /// A budget refusal is really "no control plane": `failureMode: closed` and the sidecar
    /// is down, or a counter of this request has no usable lease.
    pub fn control_plane_unavailable(&self) -> bool {
        self.mode == FailureMode::Closed
            && (self.down || self.counters.iter().any(|c| c.admit == Admit::Unavailable))
    }

    /// A budget refusal on this scope (`org.monthly`, `project.daily`, …; unique among the
    /// org's and one project's counters) or counter only means "this Envoy's slice is spent"
    /// while the fleet still had room: answer 503 `CONTROL_PLANE_UNAVAILABLE` (retry), not 402.
    pub fn slice_spent(&self, scope: Option<ScopeKind>, key: Option<&BudgetKey>) -> bool {
        self.counters.iter().any(|c| {
            let hit =
                key.is_some_and(|k| &c.key == k) || scope.is_some_and(|s| s == c.key.scope.kind());
            hit && matches!(c.admit, Admit::Lease(_)) && c.fleet_has_room
        })
    }

    /// A budget refusal, by the policy on `scope` or at reservation on counter `key`, that is
    /// not answered but sent to ask the sidecar for room (`filter/room.rs`): no control plane
    /// ([`control_plane_unavailable`](Self::control_plane_unavailable)), or only this Envoy's
    /// slice is spent ([`slice_spent`](Self::slice_spent)).
    pub fn asks_for_room(&self, scope: Option<ScopeKind>, key: Option<&BudgetKey>) -> bool {
        self.control_plane_unavailable() || self.slice_spent(scope, key)
    }

    /// The reservations with each limit replaced by what admission checks against: the lease's
    /// allowance, or no limit (`Unbounded`). `None` if a counter has no usable lease.
    pub fn admission(&self, rs: &[Reservation]) -> Option<Vec<Reservation>> {
        rs.iter()
            .map(|r| {
                let limit = match self.find(&r.key).map(|c| c.admit) {
                    Some(Admit::Lease(a)) => a,
                    Some(Admit::Unbounded) => Micros::MAX,
                    Some(Admit::Unavailable) | None => return None,
                };
                Some(Reservation {
                    key: r.key.clone(),
                    amount: r.amount,
                    limit,
                })
            })
            .collect()
    }

    /// True if taking `estimate` leaves some lease under its low-water mark.
    pub fn runs_low(&self, estimate: Micros) -> bool {
        self.counters.iter().any(|c| match c.admit {
            Admit::Lease(a) => {
                let left = a
                    .get()
                    .saturating_sub(c.pending.get().saturating_add(estimate.get()));
                c.want > 0 && left < c.want / LOW_WATER_DIVISOR
            }
            _ => false,
        })
    }
}

impl BudgetView for LeaseView {
    fn used(&self, key: &BudgetKey) -> Micros {
        match self.find(key) {
            Some(c) => match c.admit {
                Admit::Lease(a) => presented_used(c.limit, a, c.pending),
                Admit::Unbounded => Micros::ZERO,
                Admit::Unavailable => Micros::MAX,
            },
            None => Micros::MAX,
        }
    }
}
