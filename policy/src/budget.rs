//! Budget counters: one counter per (scope, calendar period). A counter holds what is spent
//! plus what is reserved by requests still in flight, so admission is a single comparison.

use std::sync::Arc;

use crate::money::Micros;

/// Which budget a counter belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    OrgMonthly,
    OrgDaily,
    ProjectMonthly(Arc<str>),
    ProjectDaily(Arc<str>),
}

/// The level and period of a budget, without the project: what a refusal's `scope` names
/// (`org.monthly`, `project.daily`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    OrgMonthly,
    OrgDaily,
    ProjectMonthly,
    ProjectDaily,
}

impl ScopeKind {
    /// The wire spelling: `org.monthly`, `org.daily`, `project.monthly`, `project.daily`.
    pub fn label(self) -> &'static str {
        match self {
            ScopeKind::OrgMonthly => "org.monthly",
            ScopeKind::OrgDaily => "org.daily",
            ScopeKind::ProjectMonthly => "project.monthly",
            ScopeKind::ProjectDaily => "project.daily",
        }
    }
}

/// One counter: a scope in one calendar period of the org's timezone
/// (`period` is `YYYY-MM` for monthly scopes, `YYYY-MM-DD` for daily ones).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BudgetKey {
    pub scope: Scope,
    pub period: String,
}

/// What a request must add to one counter before it is forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub key: BudgetKey,
    pub amount: Micros,
    pub limit: Micros,
}

/// Read access to the counters (spent + reserved) as the host currently sees them.
pub trait BudgetView {
    fn used(&self, key: &BudgetKey) -> Micros;

    /// Whether `amount` fits under `limit` on this counter; `Err(used)` (what the refusal
    /// shows as spent) when it does not. The default reads [`used`](Self::used); a view that
    /// knows the request fits without reading (a worker's own slice of the counter covers
    /// it) may answer `Ok` directly.
    fn check(&self, key: &BudgetKey, amount: Micros, limit: Micros) -> Result<(), Micros> {
        let used = self.used(key);
        try_reserve(used, amount, limit)
            .map(|_| ())
            .map_err(|_room| used)
    }
}

/// A view where nothing is spent: for tests and for policies without budgets.
pub struct NothingSpent;

impl BudgetView for NothingSpent {
    fn used(&self, _key: &BudgetKey) -> Micros {
        Micros::ZERO
    }
}

// === impl Scope ===

impl Scope {
    /// The name used in `BUDGET_EXCEEDED` replies (`scope` field): `org.monthly`, `project.daily`, …
    pub fn label(&self) -> &'static str {
        self.kind().label()
    }

    /// The level and period, without the project.
    pub fn kind(&self) -> ScopeKind {
        match self {
            Scope::OrgMonthly => ScopeKind::OrgMonthly,
            Scope::OrgDaily => ScopeKind::OrgDaily,
            Scope::ProjectMonthly(_) => ScopeKind::ProjectMonthly,
            Scope::ProjectDaily(_) => ScopeKind::ProjectDaily,
        }
    }

    pub fn project_id(&self) -> Option<&str> {
        match self {
            Scope::ProjectMonthly(p) | Scope::ProjectDaily(p) => Some(p),
            Scope::OrgMonthly | Scope::OrgDaily => None,
        }
    }
}

// === impl BudgetKey ===

impl BudgetKey {
    /// A stable string naming this counter, used as the shared-data key in the filter and
    /// as the counter id at the sidecar: `org.monthly/2026-11`, `project.daily/sales-ai/2026-11-24`.
    pub fn storage_key(&self) -> String {
        match self.scope.project_id() {
            Some(p) => format!("{}/{}/{}", self.scope.label(), p, self.period),
            None => format!("{}/{}", self.scope.label(), self.period),
        }
    }
}

/// Admission against one counter: `Ok(new_used)` if `amount` fits under `limit`,
/// else `Err(room)` with the room that was left.
pub fn try_reserve(used: Micros, amount: Micros, limit: Micros) -> Result<Micros, Micros> {
    match used.checked_add(amount) {
        Ok(next) if next <= limit => Ok(next),
        _ => Err(limit.saturating_sub(used)),
    }
}

/// Replaces a reservation by the actual cost on a counter. Never goes below zero (a counter
/// that rolled over or was reset cannot be driven negative); an actual cost above the
/// reservation is charged in full (money already spent upstream is real).
pub fn settle_counter(used: Micros, reserved: Micros, actual: Micros) -> Micros {
    let released = used.saturating_sub(reserved);
    released.checked_add(actual).unwrap_or(Micros::MAX)
}

#[cfg(test)]
mod tests;
