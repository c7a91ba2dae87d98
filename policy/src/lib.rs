//! Pag0's pure decision core.
//!
//! No proxy-wasm, no I/O, no clock reads: every input (request facts, budget counters, the
//! current time) is passed in, every output is a plain value. Builds native and `wasm32-wasip1`.
//!
//! Flow for one request (the plugin drives it, tests and benches call [`decide`]):
//! 1. [`CompiledPolicy::compile`] once per configuration (never per request).
//! 2. [`CompiledPolicy::check_head`] on request headers: identity, allow/block lists,
//!    categories, working hours. Denies early, before any body is buffered.
//! 3. [`CompiledPolicy::finish`] with the body (if [`Pending::needs_body`]) and a
//!    [`BudgetView`]: estimate, per-request cap, budgets, approval.
//! 4. The host reserves [`Allow::reservations`] atomically (see [`budget::try_reserve`]),
//!    forwards, then settles with [`Settlement::final_cost`].

pub mod approval;
pub mod budget;
pub mod decide;
pub mod doc;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod hours;
pub mod learn;
pub mod matching;
pub mod money;
pub mod path;
pub mod period;
pub mod pricing;
pub mod replay;
pub mod settle;
pub mod validate;

#[cfg(test)]
mod robustness_tests;

pub use budget::{BudgetKey, BudgetView, Reservation, Scope, ScopeKind};
pub use decide::{
    decide, Allow, ApprovalNeeded, ApprovalReason, Decision, Deny, DenyCode, FinishOptions,
    HeadOutcome, Pending, RequestHead,
};
pub use learn::Learned;
pub use money::{Micros, MoneyError};
pub use replay::RecordedRequest;
pub use settle::{Settlement, SseUsageScanner, Usage};
pub use validate::{CompiledPolicy, FieldError, ValidationErrors};
