//! One settled request, as the filter reports it in `/v1/sync`'s `usage[]`.
//!
//! The sidecar digests a batch's records in this serialised form (a retried batch must be the
//! same records), so the field order and what is skipped are part of the contract: the
//! optional fields below the line are absent when unset, so a record without them digests as
//! it did before they existed. `tests.rs` pins a digest.

use pag0_policy::Micros;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A usage record. `L` is how `learn` is held: the filter sends [`LearnFacts`]; the sidecar
/// reads it as a [`Value`] and checks it apart from the money (a malformed `learn` is not
/// learned from; the record is applied all the same).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(serialize = "L: Serialize", deserialize = "L: Deserialize<'de>")
)]
pub struct UsageRecord<L = LearnFacts> {
    /// What the request cost (settled), micro-USD. Required: never read as 0.
    pub amount: Micros,
    /// The counter keys it is charged to (`BudgetKey::storage_key`).
    #[serde(default)]
    pub counters: Vec<String>,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// The request's `:authority`.
    #[serde(default)]
    pub host: Option<String>,
    /// Unix milliseconds, by the filter's clock.
    #[serde(default)]
    pub at: Option<i64>,
    // ---- absent when unset ----
    /// Served from the filter's cache (`amount` 0, no counters).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache_hit: bool,
    /// Micro-USD a cache hit avoided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savings: Option<Micros>,
    /// The upstream's cost report was not believed: `amount` is the request's bound
    /// (docs/policy.md "Suspect reports").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspect: Option<SuspectReport>,
    /// A believed cost report of a catalogue entry that learns (docs/estimates.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learn: Option<L>,
}

/// What the sidecar learns a settled cost with: the catalogue entry's key and the catalogue's
/// estimate of the request. Both or neither.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnFacts {
    /// The catalogue entry (`pag0_policy::CompiledPolicy::learn_key`: its host).
    pub key: String,
    /// The catalogue's estimate of the request.
    pub estimate: Micros,
}

/// A cost report charged at the bound instead of as reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspectReport {
    /// The report as received (at most 256 bytes).
    #[serde(default)]
    pub raw: String,
    /// `above_bound` or `unparsable`.
    #[serde(default)]
    pub reason: String,
}

/// The sidecar's view of a record: `learn` kept as sent.
pub type UsageIn = UsageRecord<Value>;
