//! One decided request, as the audit log records it.

use pag0_policy::Micros;
use serde::{Deserialize, Serialize};

/// The longest text fields the sidecar accepts, in bytes; a filter cuts longer ones with
/// [`fit`] (a longer one is kept by the sidecar as `decision.rejected`).
pub mod limits {
    /// `clientId`, `projectId`, `model`, `approvalId`.
    pub const MAX_ID: usize = 128;
    /// `code`, `scope`.
    pub const MAX_CODE: usize = 64;
    pub const MAX_AUTHORITY: usize = 255;
    pub const MAX_PATH: usize = 2048;
    pub const MAX_METHOD: usize = 16;
}

/// `s` cut to at most `max` bytes at a character boundary; `"-"` for an empty `s` (the
/// sidecar wants every text field non-empty).
pub fn fit(s: &str, max: usize) -> &str {
    if s.is_empty() {
        return "-";
    }
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("-")
}

/// Length of [`DecisionEvent::body_sha256`]: SHA-256 in lowercase hex.
pub const BODY_SHA256_HEX_LEN: usize = 64;

/// What the filter did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Forwarded upstream (within policy, or with a consumed approval).
    Allow,
    /// Refused with a SPEC code (`code`, and `scope` for budgets).
    Deny,
    /// Held for a human approval (`code` = `APPROVAL_PENDING`, `approvalId` set).
    Pending,
    /// An identical request replayed while its approval was pending (the same `approvalId`).
    Replay,
    /// Answered from the filter's response cache (no upstream call, cost 0).
    CacheHit,
}

impl DecisionKind {
    pub const ALL: [DecisionKind; 5] = [
        DecisionKind::Allow,
        DecisionKind::Deny,
        DecisionKind::Pending,
        DecisionKind::Replay,
        DecisionKind::CacheHit,
    ];

    /// The wire and audit-log spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Allow => "allow",
            DecisionKind::Deny => "deny",
            DecisionKind::Pending => "pending",
            DecisionKind::Replay => "replay",
            DecisionKind::CacheHit => "cache_hit",
        }
    }

    pub fn parse(s: &str) -> Option<DecisionKind> {
        DecisionKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One request the filter decided. Never the body: only its SHA-256.
///
/// Required on the wire: `at`, `decision`, `method`, `authority`, `path`, `policyVersion`.
/// Everything else is absent when it does not apply (a denial has no upstream status; a
/// request without a key has no client).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionEvent {
    /// Unix milliseconds by the filter's clock, when the decision was made.
    pub at: u64,
    pub decision: DecisionKind,
    /// The SPEC code of a denial or a hold (`BUDGET_EXCEEDED`, `APPROVAL_PENDING`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Where a denial applies, e.g. `org.monthly`, `project.daily`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    pub method: String,
    /// The normalised authority (host, port stripped) the policy matched.
    pub authority: String,
    /// The normalised path, never the query string.
    pub path: String,
    /// The model named in the request body, where the endpoint prices by model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The catalogue's estimate of the request (what `maxPerRequest` and approvals read). The
    /// budgets may have reserved a higher learned figure (docs/estimates.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Micros>,
    /// What was settled from the upstream's reply (0 for a cache hit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Micros>,
    /// Micro-USD a cache hit avoided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savings: Option<Micros>,
    /// The upstream's HTTP status (allowed requests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// Milliseconds from forwarding to the upstream's response headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_ms: Option<u64>,
    /// Milliseconds from forwarding to the end of the upstream's response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// The policy version that decided (0 = none yet, managed mode before the first sync).
    pub policy_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// SHA-256 of the request body, lowercase hex; absent when there was no body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_sha256: Option<String>,
    /// The agent asked for an approval (`x-pag0-requires-approval: true`), whatever the
    /// estimate: a what-if replays the request with it. Absent (false) otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_approval: bool,
}

/// Decision events a filter dropped, oldest first, because more were waiting than its cap
/// allows while the sidecar could not be reached. Usage records are never dropped; these are
/// counted so the audit log shows exactly what is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionGap {
    /// `at` of the first dropped event (unix ms).
    pub from: u64,
    /// `at` of the last dropped event (unix ms).
    pub to: u64,
    /// How many were dropped (≥ 1).
    pub count: u64,
}

impl DecisionGap {
    /// A gap of one dropped event.
    pub fn one(at: u64) -> DecisionGap {
        DecisionGap {
            from: at,
            to: at,
            count: 1,
        }
    }

    /// Widens this gap by one more dropped event.
    pub fn widen(&mut self, at: u64) {
        self.from = self.from.min(at);
        self.to = self.to.max(at);
        self.count = self.count.saturating_add(1);
    }
}
