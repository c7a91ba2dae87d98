//! The messages the filter sends the sidecar and the sidecar reads, in one crate both compile,
//! so the two sides cannot drift apart. Money is [`Micros`] (a decimal string on the wire);
//! a field the reader requires is an error when missing, never a silent 0.
//!
//! - [`sync`]: `POST /v1/sync` (docs/sync-protocol.md), its request ([`SyncRequest`], with
//!   [`LeaseAsk`]s) and answer ([`SyncResponse`], [`LeaseGrant`], [`LearnedFigure`]); the
//!   budget-room call of a held request is the same request.
//! - [`usage`]: the usage records a sync carries ([`UsageRecord`]).
//! - [`decision`]: the decision log's records (docs/audit.md "Decision events"): one
//!   [`DecisionEvent`] per request the filter decides, carried beside the usage records
//!   (`decisions: [...]`), and a [`DecisionGap`] (`gaps: [...]`) for events a filter had to
//!   drop past its cap while the sidecar was unreachable.
//! - [`approval`]: the approval calls ([`CreateApproval`], [`ConsumeApproval`]), the created
//!   approval's fields the agent's `202` carries ([`Created`]) and the refusal of a replay
//!   ([`Refusal`], `APPROVAL_PENDING` among them).

pub mod approval;
mod decimal;
pub mod decision;
pub mod sync;
pub mod usage;

pub use approval::{ConsumeApproval, CreateApproval, Created, Refusal, RefusalBody, RefusalError};
pub use decision::{fit, limits, DecisionEvent, DecisionGap, DecisionKind, BODY_SHA256_HEX_LEN};
pub use sync::{LearnedFigure, LeaseAsk, LeaseGrant, SyncRequest, SyncResponse};
pub use usage::{LearnFacts, SuspectReport, UsageIn, UsageRecord};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod contract_tests;
