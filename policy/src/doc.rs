//! The policy document (docs/policy.md) as typed data: what the sidecar stores and serves and what
//! [`crate::CompiledPolicy`] is compiled from.
//!
//! Deserializing this type alone stops at the first error; use
//! [`crate::CompiledPolicy::compile`] to get every error of a document at once.
//! Money fields accept a decimal string or an integer and serialize as strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::money::Micros;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDocument {
    pub org_id: String,
    /// IANA name; calendar day/month boundaries of budgets. Default `UTC`.
    #[serde(default = "utc")]
    pub timezone: String,
    #[serde(default)]
    pub global_policy: GlobalPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<Alerts>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub projects: Vec<Project>,
    #[serde(default)]
    pub clients: Vec<Client>,
}

fn utc() -> String {
    "UTC".to_string()
}

/// A client's `additionalRestrictions`: the rule fields every level has (no budgets).
/// (`globalPolicy` and project `policy` repeat these fields: serde cannot combine
/// `flatten` with `deny_unknown_fields`.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Restrictions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_endpoints: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_endpoints: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_categories: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_request: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval_above: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_hours: Option<WorkingHoursDoc>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_budget: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_budget: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_endpoints: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_endpoints: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_categories: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_request: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval_above: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_hours: Option<WorkingHoursDoc>,
    /// e.g. `EU_AI_ACT` (upper-case letters, digits, `_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_log: Option<AuditLog>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditLog {
    #[serde(default)]
    pub enabled: bool,
    /// Days to keep entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Alerts {
    /// `email`, `slack`, `webhook`.
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub recipients: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_webhook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<AlertTriggers>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertTriggers {
    /// Fraction of a budget (0..=1) at which an alert fires. Not money: a ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_threshold: Option<f64>,
    #[serde(default)]
    pub anomaly_detection: bool,
    #[serde(default)]
    pub policy_violation: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_cost_request: Option<Micros>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// A host (`api.openai.com`); covers its subdomains unless a more specific entry exists.
    pub host: String,
    pub category: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
    /// Response header carrying the actual cost in micro-USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_header: Option<String>,
    /// `false` pins the catalogue's estimate: no learned figure is reserved for this entry
    /// (docs/estimates.md). Absent = learn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learn: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pricing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_request: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<BTreeMap<String, ModelPricing>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    /// Output tokens assumed when a request names no `max_tokens` (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_max_tokens: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelPricing {
    pub input_per1k: Micros,
    pub output_per1k: Micros,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Project {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub policy: ProjectPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_budget: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_budget: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_endpoints: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_endpoints: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_categories: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_request: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval_above: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_hours: Option<WorkingHoursDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_workflow: Option<ApprovalWorkflow>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalWorkflow {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub approvers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_approve_below: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval_above: Option<Micros>,
    /// Seconds an approval stays usable (default 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_after: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cache {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub shared_cache: bool,
    /// Seconds.
    #[serde(
        default,
        rename = "defaultTTL",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_ttl: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Client {
    pub id: String,
    pub project_id: String,
    /// Lower-case hex SHA-256 of the API key; the key itself is never stored.
    pub api_key_sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_restrictions: Option<Restrictions>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkingHoursDoc {
    /// IANA name; default: the org's timezone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub start: String,
    pub end: String,
    /// `mon`..`sun`; omitted = every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<String>>,
}
