//! The messages the filter sends the sidecar and the sidecar reads, in one crate both compile,
//! so the two sides cannot drift apart. Money is [`Micros`] (a decimal string on the wire);
//! a field the reader requires is an error when missing, never a silent 0.
//!
//! Today this holds the decision log's records (docs/audit.md "Decision events"): one
//! [`DecisionEvent`] per request the filter decides, carried in the `/v1/sync` batch beside
//! the usage records (`decisions: [...]`), and a [`DecisionGap`] (`gaps: [...]`) for events a
//! filter had to drop past its cap while the sidecar was unreachable.

mod decision;

pub use decision::{fit, limits, DecisionEvent, DecisionGap, DecisionKind, BODY_SHA256_HEX_LEN};

#[cfg(test)]
mod tests;
