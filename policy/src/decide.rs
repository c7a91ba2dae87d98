//! The decision for one request. Contract types first; the evaluation follows.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::budget::{BudgetKey, BudgetView, Reservation, Scope, ScopeKind};
use crate::learn::Learned;
use crate::matching::{RequestTarget, TargetError};
use crate::money::Micros;
use crate::period::keys as period_keys;
use crate::pricing::parse_request_body;
use crate::settle::Settlement;
use crate::validate::{api_key_sha256, CompiledEndpoint, CompiledPolicy};

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

/// docs/policy.md#check-order-and-replies deny codes.
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
    /// A request that needs approval without a `x-pag0-requested-by` that names one e-mail
    /// address: the approver could not be told apart from the requester.
    RequestedByInvalid,
    /// Pag0 extension (issue 20): the path cannot be normalised to one spelling.
    AmbiguousPath,
    /// Pag0 extension (issue 20): `:authority` is not one host name.
    InvalidAuthority,
}

/// A refusal: becomes a local reply with `x-pag0-decision: deny`, `x-pag0-code`, JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deny {
    pub code: DenyCode,
    pub message: String,
    /// The budget without room (`org.monthly`, `project.daily`, …); `None` where no scope
    /// applies.
    pub scope: Option<ScopeKind>,
    pub project_id: Option<Arc<str>>,
    /// The client the API key named, when the refusal came after it was identified (what
    /// the decision log records; not part of the reply body).
    pub client_id: Option<Arc<str>>,
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
    /// [`CompiledPolicy`] fingerprint: a `Pending` is only valid with the policy that made it.
    pub(crate) policy: u64,
    pub project_id: Arc<str>,
    pub client_id: Arc<str>,
    /// Set only by [`CompiledPolicy::redecide`]: the estimate recorded for a token-priced
    /// request whose body is gone (the body is never stored). `None` on the filter's path.
    pub(crate) known_estimate: Option<Micros>,
}

// === impl Pending ===

impl Pending {
    /// True iff the matched endpoint is priced per token: the host must buffer the request
    /// body (up to `maxBodyBytes`) and pass it to [`CompiledPolicy::finish`].
    pub fn needs_body(&self) -> bool {
        self.needs_body
    }
}

#[derive(Clone, Debug)]
pub enum HeadOutcome {
    Deny(Deny),
    Continue(Pending),
}

#[derive(Clone, Debug, Default)]
pub struct FinishOptions {
    /// The request is the replay of an approval the sidecar has validated: skip the
    /// approval requirement (everything else is checked again).
    pub approved_replay: bool,
    /// The learned figure of the request's catalogue entry ([`CompiledPolicy::learn_key`]),
    /// as the host holds it: the budgets reserve [`Learned::reserve`] instead of the estimate
    /// when it is higher (docs/estimates.md). `None`: the estimate is reserved.
    pub learned: Option<Learned>,
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
    /// What each budget counter reserves: the estimate, or the learned figure when it is
    /// higher (capped by the settlement's bound). Per-request caps and approval thresholds
    /// are checked against `estimate`, budgets against this.
    pub reserved: Micros,
    /// The key the host learns this request's settled cost under (`None`: not learned).
    pub learn_key: Option<Arc<str>>,
    /// The `model` a token-priced request's body names (what the decision log records;
    /// pricing uses the catalogue's entry or its fallback). `None` for other endpoints.
    pub model: Option<String>,
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
    /// Every code, in [`DenyCode::index`] order (a test checks the two agree, and the
    /// exhaustive match in `index` makes a new variant a compile error until it is placed).
    pub const ALL: [DenyCode; 19] = [
        DenyCode::MissingApiKey,
        DenyCode::UnknownApiKey,
        DenyCode::EndpointBlocked,
        DenyCode::EndpointNotAllowed,
        DenyCode::CategoryNotAllowed,
        DenyCode::OutsideWorkingHours,
        DenyCode::MaxPerRequestExceeded,
        DenyCode::BudgetExceeded,
        DenyCode::ApprovalDenied,
        DenyCode::ApprovalExpired,
        DenyCode::ApprovalMismatch,
        DenyCode::ApprovalUsed,
        DenyCode::ApprovalRequired,
        DenyCode::ControlPlaneUnavailable,
        DenyCode::BodyTooLarge,
        DenyCode::BadRequestBody,
        DenyCode::RequestedByInvalid,
        DenyCode::AmbiguousPath,
        DenyCode::InvalidAuthority,
    ];

    /// This code's position in [`DenyCode::ALL`].
    pub const fn index(self) -> usize {
        match self {
            DenyCode::MissingApiKey => 0,
            DenyCode::UnknownApiKey => 1,
            DenyCode::EndpointBlocked => 2,
            DenyCode::EndpointNotAllowed => 3,
            DenyCode::CategoryNotAllowed => 4,
            DenyCode::OutsideWorkingHours => 5,
            DenyCode::MaxPerRequestExceeded => 6,
            DenyCode::BudgetExceeded => 7,
            DenyCode::ApprovalDenied => 8,
            DenyCode::ApprovalExpired => 9,
            DenyCode::ApprovalMismatch => 10,
            DenyCode::ApprovalUsed => 11,
            DenyCode::ApprovalRequired => 12,
            DenyCode::ControlPlaneUnavailable => 13,
            DenyCode::BodyTooLarge => 14,
            DenyCode::BadRequestBody => 15,
            DenyCode::RequestedByInvalid => 16,
            DenyCode::AmbiguousPath => 17,
            DenyCode::InvalidAuthority => 18,
        }
    }

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
            DenyCode::RequestedByInvalid => "REQUESTED_BY_INVALID",
            DenyCode::AmbiguousPath => "AMBIGUOUS_PATH",
            DenyCode::InvalidAuthority => "INVALID_AUTHORITY",
        }
    }

    /// HTTP status of the local reply (docs/policy.md#check-order-and-replies).
    pub fn status(self) -> u32 {
        match self {
            DenyCode::MissingApiKey | DenyCode::UnknownApiKey => 401,
            DenyCode::BudgetExceeded => 402,
            DenyCode::ControlPlaneUnavailable => 503,
            DenyCode::BodyTooLarge => 413,
            DenyCode::BadRequestBody
            | DenyCode::RequestedByInvalid
            | DenyCode::AmbiguousPath
            | DenyCode::InvalidAuthority => 400,
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
        Deny {
            code,
            message: message.into(),
            scope: None,
            project_id: None,
            client_id: None,
        }
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
            err.insert("scope".into(), s.label().into());
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
            client_id: Some(self.client_id),
        }
    }
}

// === impl CompiledPolicy: evaluation ===

impl CompiledPolicy {
    /// Request headers: identity, block/allow lists, categories, working hours (in this order).
    pub fn check_head(&self, head: &RequestHead<'_>, now: DateTime<Utc>) -> HeadOutcome {
        self.check_head_with(head, now, api_key_sha256)
    }

    /// [`CompiledPolicy::check_head`] with the caller's `sha256(key)` of the (trimmed,
    /// non-empty) API key: a host that remembers the digests of keys it has seen passes its
    /// cache here. The digest must be [`api_key_sha256`] of the key it is given.
    pub fn check_head_with(
        &self,
        head: &RequestHead<'_>,
        now: DateTime<Utc>,
        sha256: impl FnOnce(&str) -> [u8; 32],
    ) -> HeadOutcome {
        let key = match head.api_key.map(str::trim) {
            Some(k) if !k.is_empty() => k,
            _ => {
                return HeadOutcome::Deny(Deny::new(
                    DenyCode::MissingApiKey,
                    "no API key: send the client's key in the API key header (x-pag0-api-key unless configured otherwise)",
                ))
            }
        };
        let hash = sha256(key);
        let Some(client_idx) = self
            .keys
            .binary_search_by(|(k, _)| k.cmp(&hash))
            .ok()
            .and_then(|i| self.keys.get(i))
            .map(|(_, c)| *c)
        else {
            return HeadOutcome::Deny(Deny::new(
                DenyCode::UnknownApiKey,
                format!("the API key is not registered with org {}", self.org_id),
            ));
        };
        let Some(client) = self.clients.get(client_idx) else {
            return HeadOutcome::Deny(Deny::new(
                DenyCode::UnknownApiKey,
                "the API key names no client",
            ));
        };
        let project_id = self
            .projects
            .get(client.project)
            .map(|p| p.id.clone())
            .unwrap_or_else(|| Arc::from(""));
        let deny = |code: DenyCode, message: String| {
            HeadOutcome::Deny(Deny {
                code,
                message,
                scope: None,
                project_id: Some(project_id.clone()),
                client_id: Some(client.id.clone()),
            })
        };
        let rules = &client.rules;
        let target = match RequestTarget::parse(head.authority, head.path) {
            Ok(t) => t,
            Err(TargetError::Authority(e)) => {
                return deny(
                    DenyCode::InvalidAuthority,
                    format!(
                        "the request authority {:?} is refused before any rule is matched: {e}",
                        Clipped(head.authority)
                    ),
                )
            }
            Err(TargetError::Path(e)) => {
                return deny(
                    DenyCode::AmbiguousPath,
                    format!(
                    "the request path {:?} is refused before any rule is matched: it contains {e}",
                    Clipped(head.path)
                ),
                )
            }
        };
        let host = target.host;

        if let Some((level, pat)) = rules
            .blocked
            .iter()
            .find(|(_, p)| p.matches_target(&target, true))
        {
            return deny(
                DenyCode::EndpointBlocked,
                format!("{} is blocked by {level} (rule {pat})", Shown(&target)),
            );
        }
        for (level, list) in &rules.allow_lists {
            if !list.iter().any(|p| p.matches_target(&target, false)) {
                return deny(
                    DenyCode::EndpointNotAllowed,
                    format!(
                        "{} is not on the allowed endpoints of {level}",
                        Shown(&target)
                    ),
                );
            }
        }
        let endpoint = self.endpoint_of(&target);
        let ep: Option<&CompiledEndpoint> = endpoint.and_then(|i| self.endpoints.get(i));
        if let Some(cats) = &rules.categories {
            match ep {
                None => {
                    return deny(
                        DenyCode::CategoryNotAllowed,
                        format!(
                            "{host} is not in the endpoint catalogue, so it has no category; allowed categories: {}",
                            join_list(cats)
                        ),
                    )
                }
                Some(e) if !cats.iter().any(|c| **c == *e.category) => {
                    return deny(
                        DenyCode::CategoryNotAllowed,
                        format!(
                            "category {} of {host} is not allowed; allowed categories: {}",
                            e.category,
                            join_list(cats)
                        ),
                    )
                }
                Some(_) => {}
            }
        }
        for (level, hours) in &rules.hours {
            if !hours.contains(now) {
                return deny(
                    DenyCode::OutsideWorkingHours,
                    format!(
                        "outside the working hours of {level} ({})",
                        hours.describe()
                    ),
                );
            }
        }
        HeadOutcome::Continue(Pending {
            client: client_idx,
            endpoint,
            needs_body: ep.is_some_and(|e| e.pricing.needs_body()),
            requires_approval: head.requires_approval,
            now,
            policy: self.fingerprint,
            project_id,
            client_id: client.id.clone(),
            known_estimate: None,
        })
    }

    /// The key under which the host keeps the learned figure of this request's catalogue
    /// entry (its host), to pass in [`FinishOptions::learned`]; `None` when the entry learns
    /// nothing (`learn: false`, no cost report possible, free) or the request is uncatalogued.
    pub fn learn_key(&self, pending: &Pending) -> Option<&Arc<str>> {
        if pending.policy != self.fingerprint {
            return None;
        }
        pending
            .endpoint
            .and_then(|i| self.endpoints.get(i))
            .and_then(|e| e.learn_key.as_ref())
    }

    /// The rest of the decision: estimate, per-request cap, budgets, approval. `body` is the
    /// whole request body when [`Pending::needs_body`] (otherwise it is not read).
    pub fn finish(
        &self,
        pending: &Pending,
        body: Option<&[u8]>,
        budgets: &dyn BudgetView,
        opts: &FinishOptions,
    ) -> Decision {
        let project_id = pending.project_id.clone();
        let deny = |code: DenyCode, message: String, scope: Option<ScopeKind>| {
            Decision::Deny(Deny {
                code,
                message,
                scope,
                project_id: Some(project_id.clone()),
                client_id: Some(pending.client_id.clone()),
            })
        };
        let (Some(client), true) = (
            self.clients.get(pending.client),
            pending.policy == self.fingerprint,
        ) else {
            return deny(
                DenyCode::ControlPlaneUnavailable,
                "the policy changed while the request was in flight; retry".to_string(),
                None,
            );
        };
        let Some(project) = self.projects.get(client.project) else {
            return deny(
                DenyCode::UnknownApiKey,
                "the client's project is missing".to_string(),
                None,
            );
        };
        let ep = pending.endpoint.and_then(|i| self.endpoints.get(i));

        // Estimate.
        let mut streaming = false;
        let mut model = None;
        let recorded = pending
            .known_estimate
            .filter(|_| ep.is_some_and(|e| e.pricing.needs_body()));
        let (estimate, model_price) = match (ep, recorded) {
            (_, Some(known)) => (known, None),
            (None, None) => (Micros::ZERO, None),
            (Some(e), None) => {
                let facts = if e.pricing.needs_body() {
                    match parse_request_body(body.unwrap_or_default()) {
                        Ok(f) => Some(f),
                        Err(err) => {
                            return deny(
                                DenyCode::BadRequestBody,
                                format!("{} is priced per token and needs a JSON body to price the request: {err}", e.pattern),
                                None,
                            )
                        }
                    }
                } else {
                    None
                };
                streaming = facts.as_ref().is_some_and(|f| f.stream);
                let estimated = e.pricing.estimate(facts.as_ref());
                model = facts.and_then(|f| f.model);
                match estimated {
                    Ok(est) => (est.cost, est.model_price),
                    Err(_) => {
                        return deny(
                            DenyCode::BadRequestBody,
                            "the requested token limit makes the cost estimate overflow"
                                .to_string(),
                            None,
                        )
                    }
                }
            }
        };

        // Per-request cap.
        if let Some((cap, level)) = &client.rules.max_per_request {
            if estimate > *cap {
                return deny(
                    DenyCode::MaxPerRequestExceeded,
                    format!(
                        "estimated cost {estimate} is above the max per request of {level} ({cap})"
                    ),
                    None,
                );
            }
        }

        // What the budgets reserve: the estimate, or the learned figure when it is higher,
        // never above what this request can be charged (its suspect bound).
        let limits = [
            self.org_monthly,
            self.org_daily,
            project.monthly,
            project.daily,
        ];
        let bound = Settlement::bound_for(
            estimate,
            client.rules.max_per_request.as_ref().map(|(cap, _)| *cap),
            limits.into_iter().flatten(),
        );
        let learn_key = ep.and_then(|e| e.learn_key.clone());
        let reserve = match (&learn_key, opts.learned) {
            (Some(_), Some(l)) => l.reserve(estimate, bound),
            _ => estimate,
        };

        // Budgets: every configured counter must have room.
        let mut reservations = Vec::new();
        let mut failures: Vec<(String, ScopeKind)> = Vec::new();
        let any_budget = self.org_monthly.is_some()
            || self.org_daily.is_some()
            || project.monthly.is_some()
            || project.daily.is_some();
        if any_budget {
            let (month, day) = period_keys(pending.now, self.tz);
            let counters = [
                (Scope::OrgMonthly, self.org_monthly, &month),
                (Scope::OrgDaily, self.org_daily, &day),
                (
                    Scope::ProjectMonthly(project.id.clone()),
                    project.monthly,
                    &month,
                ),
                (Scope::ProjectDaily(project.id.clone()), project.daily, &day),
            ];
            for (scope, limit, period) in counters {
                let Some(limit) = limit else { continue };
                let key = BudgetKey {
                    scope,
                    period: period.clone(),
                };
                match budgets.check(&key, reserve, limit) {
                    Ok(()) => reservations.push(Reservation {
                        key,
                        amount: reserve,
                        limit,
                    }),
                    Err(used) => {
                        let who = match key.scope.project_id() {
                            Some(p) => format!("project {p}"),
                            None => format!("org {}", self.org_id),
                        };
                        let span =
                            if matches!(key.scope, Scope::OrgMonthly | Scope::ProjectMonthly(_)) {
                                "monthly"
                            } else {
                                "daily"
                            };
                        failures.push((
                            format!("{who} {span} budget: {limit} limit, {used} spent, {reserve} requested"),
                            key.scope.kind(),
                        ));
                    }
                }
            }
        }
        if let Some((_, scope)) = failures.first() {
            let message = failures
                .iter()
                .map(|(m, _)| m.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            return deny(DenyCode::BudgetExceeded, message, Some(*scope));
        }

        // Approval.
        if !opts.approved_replay {
            let over_threshold = client
                .rules
                .require_approval_above
                .is_some_and(|t| estimate > t)
                && project
                    .approval
                    .as_ref()
                    .and_then(|a| a.auto_approve_below)
                    .is_none_or(|below| estimate >= below);
            let reason = if pending.requires_approval {
                Some(ApprovalReason::Requested)
            } else if over_threshold {
                Some(ApprovalReason::Threshold)
            } else {
                None
            };
            if let Some(reason) = reason {
                return Decision::NeedsApproval(ApprovalNeeded {
                    project_id: pending.project_id.clone(),
                    client_id: client.id.clone(),
                    estimate,
                    reason,
                    expires_after_secs: project
                        .approval
                        .as_ref()
                        .map_or(crate::validate::DEFAULT_APPROVAL_EXPIRY_SECS, |a| {
                            a.expires_after_secs
                        }),
                    approvers: project
                        .approval
                        .as_ref()
                        .map(|a| a.approvers.clone())
                        .unwrap_or_default(),
                });
            }
        }

        Decision::Allow(Allow {
            project_id: pending.project_id.clone(),
            client_id: client.id.clone(),
            estimate,
            reserved: reserve,
            learn_key,
            model,
            reservations,
            settlement: Settlement {
                estimate,
                cost_header: ep.and_then(|e| e.cost_header.clone()),
                model_price,
                streaming,
                bound,
            },
        })
    }
}

/// `host/path` for messages (query dropped).
struct Shown<'a, 'b>(&'a RequestTarget<'b>);

impl std::fmt::Display for Shown<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.0.host, self.0.path())
    }
}

/// At most the first 200 bytes of an agent-supplied value, for messages.
struct Clipped<'a>(&'a str);

impl std::fmt::Debug for Clipped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut end = self.0.len().min(200);
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        match self.0.get(..end) {
            Some(s) if end < self.0.len() => write!(f, "{:?}…", s),
            _ => write!(f, "{:?}", self.0),
        }
    }
}

fn join_list(items: &[Arc<str>]) -> String {
    if items.is_empty() {
        return "(none)".to_string();
    }
    items.iter().map(|s| &**s).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
