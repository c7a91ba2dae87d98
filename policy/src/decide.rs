//! The decision for one request. Contract types first; the evaluation follows.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::budget::{BudgetView, Reservation};
use crate::money::Micros;
use crate::settle::Settlement;
use crate::validate::CompiledPolicy;

/// What the filter knows from the request headers. `path` includes the query string.
#[derive(Clone, Debug, Default)]
pub struct RequestHead<'a> {
    /// The raw API key from `x-pag0-api-key` (hashed here, never stored).
    pub api_key: Option<&'a str>,
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    /// `x-pag0-requires-approval: true` was sent.
    pub requires_approval: bool,
}

/// SPEC §5 deny codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyCode {
    MissingApiKey,
    UnknownApiKey,
    EndpointBlocked,
    EndpointNotAllowed,
    CategoryNotAllowed,
    OutsideWorkingHours,
    MaxPerRequestExceeded,
    BudgetExceeded,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalMismatch,
    ApprovalUsed,
    ApprovalRequired,
    ControlPlaneUnavailable,
    BodyTooLarge,
    BadRequestBody,
}

/// A refusal: becomes a local reply with `x-pag0-decision: deny`, `x-pag0-code`, JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deny {
    pub code: DenyCode,
    pub message: String,
    /// e.g. `org.monthly`, `project.daily` for budgets; `None` where no scope applies.
    pub scope: Option<&'static str>,
    pub project_id: Option<Arc<str>>,
}

/// Headers passed; what `finish` needs to complete the decision. Owns no borrowed data,
/// so the host can keep it in its per-request context while the body arrives.
#[derive(Clone, Debug)]
pub struct Pending {
    pub(crate) client: usize,
    pub(crate) endpoint: Option<usize>,
    pub(crate) needs_body: bool,
    pub(crate) requires_approval: bool,
    pub(crate) now: DateTime<Utc>,
    pub project_id: Arc<str>,
    pub client_id: Arc<str>,
}

// === impl Pending ===

impl Pending {
    /// True iff the matched endpoint is priced per token: the host must buffer the request
    /// body (up to `maxBodyBytes`) and pass it to [`CompiledPolicy::finish`].
    pub fn needs_body(&self) -> bool {
        self.needs_body
    }
}

pub enum HeadOutcome {
    Deny(Deny),
    Continue(Pending),
}

#[derive(Clone, Debug, Default)]
pub struct FinishOptions {
    /// The request is the replay of an approval the sidecar has validated: skip the
    /// approval requirement (everything else is checked again).
    pub approved_replay: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow(Allow),
    Deny(Deny),
    NeedsApproval(ApprovalNeeded),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allow {
    pub project_id: Arc<str>,
    pub client_id: Arc<str>,
    pub estimate: Micros,
    /// One per budget counter that applies (org/project × month/day), each with its limit.
    pub reservations: Vec<Reservation>,
    /// How to turn the upstream's reply into the actual cost.
    pub settlement: Settlement,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalReason {
    /// The estimate is above the lowest `requireApprovalAbove`.
    Threshold,
    /// The agent sent `x-pag0-requires-approval: true`.
    Requested,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalNeeded {
    pub project_id: Arc<str>,
    pub client_id: Arc<str>,
    pub estimate: Micros,
    pub reason: ApprovalReason,
    /// Seconds until an approval expires (`approvalWorkflow.expiresAfter`, default 86400).
    pub expires_after_secs: u64,
    pub approvers: Vec<String>,
}

/// Head check and finish in one call: for tests, benches and hosts that have the body already.
pub fn decide(
    policy: &CompiledPolicy,
    head: &RequestHead<'_>,
    body: Option<&[u8]>,
    budgets: &dyn BudgetView,
    now: DateTime<Utc>,
) -> Decision {
    match policy.check_head(head, now) {
        HeadOutcome::Deny(d) => Decision::Deny(d),
        HeadOutcome::Continue(p) => policy.finish(&p, body, budgets, &FinishOptions::default()),
    }
}

// === impl DenyCode ===

impl DenyCode {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyCode::MissingApiKey => "MISSING_API_KEY",
            DenyCode::UnknownApiKey => "UNKNOWN_API_KEY",
            DenyCode::EndpointBlocked => "ENDPOINT_BLOCKED",
            DenyCode::EndpointNotAllowed => "ENDPOINT_NOT_ALLOWED",
            DenyCode::CategoryNotAllowed => "CATEGORY_NOT_ALLOWED",
            DenyCode::OutsideWorkingHours => "OUTSIDE_WORKING_HOURS",
            DenyCode::MaxPerRequestExceeded => "MAX_PER_REQUEST_EXCEEDED",
            DenyCode::BudgetExceeded => "BUDGET_EXCEEDED",
            DenyCode::ApprovalDenied => "APPROVAL_DENIED",
            DenyCode::ApprovalExpired => "APPROVAL_EXPIRED",
            DenyCode::ApprovalMismatch => "APPROVAL_MISMATCH",
            DenyCode::ApprovalUsed => "APPROVAL_USED",
            DenyCode::ApprovalRequired => "APPROVAL_REQUIRED",
            DenyCode::ControlPlaneUnavailable => "CONTROL_PLANE_UNAVAILABLE",
            DenyCode::BodyTooLarge => "BODY_TOO_LARGE",
            DenyCode::BadRequestBody => "BAD_REQUEST_BODY",
        }
    }

    /// HTTP status of the local reply (SPEC §5).
    pub fn status(self) -> u32 {
        match self {
            DenyCode::MissingApiKey | DenyCode::UnknownApiKey => 401,
            DenyCode::BudgetExceeded => 402,
            DenyCode::ControlPlaneUnavailable => 503,
            DenyCode::BodyTooLarge => 413,
            DenyCode::BadRequestBody => 400,
            DenyCode::EndpointBlocked
            | DenyCode::EndpointNotAllowed
            | DenyCode::CategoryNotAllowed
            | DenyCode::OutsideWorkingHours
            | DenyCode::MaxPerRequestExceeded
            | DenyCode::ApprovalDenied
            | DenyCode::ApprovalExpired
            | DenyCode::ApprovalMismatch
            | DenyCode::ApprovalUsed
            | DenyCode::ApprovalRequired => 403,
        }
    }
}

// === impl Deny ===

impl Deny {
    pub fn new(code: DenyCode, message: impl Into<String>) -> Self {
        Deny { code, message: message.into(), scope: None, project_id: None }
    }

    /// The local reply body: `{"error":{"code","message","projectId"?,"scope"?}}`.
    pub fn to_json(&self) -> String {
        let mut err = serde_json::Map::new();
        err.insert("code".into(), self.code.as_str().into());
        err.insert("message".into(), self.message.clone().into());
        if let Some(p) = &self.project_id {
            err.insert("projectId".into(), p.to_string().into());
        }
        if let Some(s) = self.scope {
            err.insert("scope".into(), s.into());
        }
        serde_json::json!({ "error": err }).to_string()
    }
}

// === impl ApprovalNeeded ===

impl ApprovalNeeded {
    /// Standalone mode has no approval store: the request is refused with `APPROVAL_REQUIRED`.
    pub fn into_standalone_deny(self) -> Deny {
        Deny {
            code: DenyCode::ApprovalRequired,
            message: format!(
                "project {} requires approval for this request (estimated cost {} micro-USD); \
                 approvals need managed mode (a pag0 sidecar)",
                self.project_id, self.estimate
            ),
            scope: None,
            project_id: Some(self.project_id),
        }
    }
}
