//! `POST /v1/sync` (docs/sync-protocol.md): the filter's one periodic call. Usage records and
//! decision events in, leases, the policy and the fleet's learned estimates out. The budget-room
//! call of a held request (docs/sync-protocol.md "Asking for room") is the same request with no
//! usage and `seq` 1.

use std::collections::BTreeMap;

use pag0_policy::Micros;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::usage::UsageRecord;
use crate::DecisionGap;

/// The request body. `U`, `D`, `G` are how the usage records, decision events and gap records
/// are held: the filter sends its own typed ones; the sidecar reads each element as a
/// [`Value`] first, so that one malformed element is quarantined rather than refusing the
/// batch (`SyncRequest<Value, Value, Value>`). Unknown fields are ignored: a newer filter may
/// send more than this sidecar knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    bound(
        serialize = "U: Serialize, D: Serialize, G: Serialize",
        deserialize = "U: Deserialize<'de>, D: Deserialize<'de>, G: Deserialize<'de>"
    )
)]
pub struct SyncRequest<U = UsageRecord, D = Value, G = DecisionGap> {
    /// This Envoy's id (1–128 of `A-Z a-z 0-9 - _ . :`).
    pub instance_id: String,
    /// Per instance, from 1; a retry resends the same `seq` with the same records.
    pub seq: u64,
    /// The policy version the filter runs; 0: none yet.
    #[serde(default)]
    pub policy_version: u64,
    #[serde(default)]
    pub usage: Vec<U>,
    /// Decision events (`crate::DecisionEvent`). Absent when there are none, so a batch
    /// without any digests as it did before the decision log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<D>,
    /// Events dropped past the filter's cap (`crate::DecisionGap`); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<G>,
    #[serde(default)]
    pub leases: Vec<LeaseAsk>,
    /// Counters this Envoy no longer needs a lease on.
    #[serde(default)]
    pub release: Vec<String>,
}

/// A lease the filter asks for (or renews).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseAsk {
    /// A counter key (`BudgetKey::storage_key`).
    pub counter: String,
    /// Total room to hold; `None`: the sidecar's default (1/16 of the limit).
    #[serde(default)]
    pub want: Option<Micros>,
}

/// The answer of a `2xx` sync. Every field the filter acts on is required: a missing one is
/// an error, never read as 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncResponse {
    /// The `seq` durably committed.
    pub ack: u64,
    /// That `seq` had been committed before (a retry).
    pub duplicate: bool,
    /// The sidecar's current policy version.
    pub policy_version: u64,
    /// The policy document, when the filter's `policyVersion` is not the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Value>,
    pub server_time_ms: i64,
    /// How long the leases hold, from when the filter sent the request.
    pub lease_ttl_ms: u64,
    /// Per counter key asked for.
    pub leases: BTreeMap<String, LeaseGrant>,
    /// Counters asked for that have no budget under the current policy: no lease needed.
    #[serde(default)]
    pub unlimited: Vec<String>,
    /// The fleet's learned estimates per catalogue entry (docs/estimates.md); absent when none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub learned: BTreeMap<String, LearnedFigure>,
}

/// A lease: this Envoy may hold `granted` of the counter's room until the TTL runs out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseGrant {
    pub granted: Micros,
    pub limit: Micros,
    /// The fleet's spend on the counter, acknowledged records only.
    pub spent: Micros,
    pub expires_at_ms: i64,
}

/// The fleet's learned figure for one catalogue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LearnedFigure {
    /// The decaying high of actual/estimate, per-mille; a decimal string on the wire.
    #[serde(with = "crate::decimal")]
    pub high_permille: u64,
    pub samples: u64,
}
