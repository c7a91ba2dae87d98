//! What the walk read, before inheritance: the input of `inherit`.

use chrono_tz::Tz;

use super::ApprovalRule;
use crate::hours::WorkingHours;
use crate::matching::EndpointPattern;
use crate::money::Micros;
use crate::pricing::EndpointPricing;

/// Rule fields of one level, as read.
#[derive(Default)]
pub(super) struct RawRules {
    pub(super) monthly: Option<Micros>,
    pub(super) daily: Option<Micros>,
    pub(super) allowed: Option<Vec<EndpointPattern>>,
    pub(super) blocked: Vec<EndpointPattern>,
    pub(super) categories: Option<Vec<String>>,
    pub(super) max_per_request: Option<Micros>,
    pub(super) require_approval_above: Option<Micros>,
    pub(super) hours: Option<WorkingHours>,
}

pub(super) struct RawEndpoint {
    pub(super) pattern: EndpointPattern,
    pub(super) category: String,
    pub(super) pricing: EndpointPricing,
    pub(super) cost_header: Option<String>,
    pub(super) learn: bool,
}

pub(super) struct RawProject {
    pub(super) id: String,
    pub(super) rules: RawRules,
    pub(super) approval: Option<(ApprovalRule, Option<Micros>)>,
}

pub(super) struct RawClient {
    pub(super) id: String,
    pub(super) project: Option<usize>,
    pub(super) key: [u8; 32],
    pub(super) rules: RawRules,
}

pub(super) struct RawDocument {
    pub(super) org_id: String,
    pub(super) tz: Tz,
    pub(super) global: RawRules,
    pub(super) endpoints: Vec<RawEndpoint>,
    pub(super) projects: Vec<RawProject>,
    pub(super) clients: Vec<RawClient>,
}
