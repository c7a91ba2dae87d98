//! The compiled policy: what a request is checked against, built once per document.

use std::fmt;
use std::sync::Arc;

use chrono_tz::Tz;

use crate::doc::PolicyDocument;
use crate::hours::WorkingHours;
use crate::matching::{EndpointPattern, RequestTarget};
use crate::money::Micros;
use crate::pricing::EndpointPricing;

/// A validated policy, compiled for cheap per-request lookups. Immutable; `Send + Sync`.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub(crate) doc: PolicyDocument,
    pub(crate) org_id: Arc<str>,
    pub(crate) tz: Tz,
    pub(crate) org_monthly: Option<Micros>,
    pub(crate) org_daily: Option<Micros>,
    /// Most specific host first: the first match is the catalogue entry of a request.
    pub(crate) endpoints: Vec<CompiledEndpoint>,
    /// Each catalogue host (lower-case) → the indexes into `endpoints` with that host, in
    /// order; sorted by host for binary search ([`CompiledPolicy::endpoint_of`]).
    pub(crate) endpoint_hosts: Vec<(Box<str>, Vec<usize>)>,
    pub(crate) projects: Vec<CompiledProject>,
    pub(crate) clients: Vec<CompiledClient>,
    /// SHA-256 of the API key → index into `clients`, sorted for binary search.
    pub(crate) keys: Vec<([u8; 32], usize)>,
    /// Identifies this compilation, so a [`crate::Pending`] is never finished against
    /// another policy (the indexes it holds would point elsewhere).
    pub(crate) fingerprint: u64,
}

#[derive(Debug)]
pub(crate) struct CompiledEndpoint {
    pub(crate) pattern: EndpointPattern,
    pub(crate) category: Arc<str>,
    pub(crate) pricing: EndpointPricing,
    pub(crate) cost_header: Option<Arc<str>>,
    /// The key of this entry's learned estimate (its host); `None` where nothing is learned:
    /// `learn: false`, no cost header and not priced per token, or a free endpoint.
    pub(crate) learn_key: Option<Arc<str>>,
}

#[derive(Debug)]
pub(crate) struct CompiledProject {
    pub(crate) id: Arc<str>,
    pub(crate) monthly: Option<Micros>,
    pub(crate) daily: Option<Micros>,
    pub(crate) approval: Option<ApprovalRule>,
}

/// An enabled `approvalWorkflow`.
#[derive(Debug)]
pub(crate) struct ApprovalRule {
    pub(crate) approvers: Vec<String>,
    pub(crate) auto_approve_below: Option<Micros>,
    pub(crate) expires_after_secs: u64,
}

#[derive(Debug)]
pub(crate) struct CompiledClient {
    pub(crate) id: Arc<str>,
    pub(crate) project: usize,
    pub(crate) rules: Effective,
}

/// Who set a rule, for deny messages.
#[derive(Clone, Debug)]
pub(crate) enum Level {
    Org(Arc<str>),
    Project(Arc<str>),
    Client(Arc<str>),
}

/// A client's rules after org → project → client inheritance.
#[derive(Debug, Default)]
pub(crate) struct Effective {
    /// Every level that has an allow-list: the request must match one entry of each.
    pub(crate) allow_lists: Vec<(Level, Vec<EndpointPattern>)>,
    /// The union of all block-lists.
    pub(crate) blocked: Vec<(Level, EndpointPattern)>,
    /// The intersection of all `allowedCategories` (None: no level restricts categories).
    pub(crate) categories: Option<Vec<Arc<str>>>,
    /// The lowest `maxPerRequest` and who set it.
    pub(crate) max_per_request: Option<(Micros, Level)>,
    /// The lowest `requireApprovalAbove` (incl. the project's enabled approval workflow).
    pub(crate) require_approval_above: Option<Micros>,
    /// Every level's working hours: all must contain the request time.
    pub(crate) hours: Vec<(Level, WorkingHours)>,
}

// === impl CompiledPolicy ===

impl CompiledPolicy {
    pub fn document(&self) -> &PolicyDocument {
        &self.doc
    }

    /// Every catalogue entry's learn key ([`crate::learn::key`]), for entries that learn.
    pub fn learn_keys(&self) -> impl Iterator<Item = &str> {
        self.endpoints.iter().filter_map(|e| e.learn_key.as_deref())
    }

    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    /// The org's timezone (budget periods).
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The catalogue entry of a request: the first endpoint (most specific first) whose pattern
    /// covers it. A rule covers its host and every subdomain, so only the entries filed under
    /// the request's host or one of its parent domains can match: a few binary searches
    /// instead of matching the whole catalogue. Same answer as [`Self::endpoint_by_scan`].
    pub(crate) fn endpoint_of(&self, target: &RequestTarget<'_>) -> Option<usize> {
        if target.host.bytes().any(|b| b.is_ascii_uppercase()) {
            // The index holds lower-case hosts; rules compare case-insensitively.
            return self.endpoint_by_scan(target);
        }
        let covers = |i: usize| {
            self.endpoints
                .get(i)
                .is_some_and(|e| e.pattern.matches_target(target, false))
        };
        let mut best: Option<usize> = None;
        let mut domain = target.host;
        loop {
            let filed = self
                .endpoint_hosts
                .binary_search_by(|(h, _)| (**h).cmp(domain))
                .ok()
                .and_then(|i| self.endpoint_hosts.get(i));
            if let Some((_, list)) = filed {
                if let Some(&i) = list
                    .iter()
                    .take_while(|&&i| best.is_none_or(|b| i < b))
                    .find(|&&i| covers(i))
                {
                    best = Some(i);
                }
            }
            match domain.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => domain = parent,
                _ => return best,
            }
        }
    }

    /// [`Self::endpoint_of`] by matching every catalogue entry in order.
    pub(crate) fn endpoint_by_scan(&self, target: &RequestTarget<'_>) -> Option<usize> {
        self.endpoints
            .iter()
            .position(|e| e.pattern.matches_target(target, false))
    }

    /// Ids of the configured clients' projects, by client id (for hosts that show them).
    pub fn project_of_client(&self, client_id: &str) -> Option<&str> {
        let c = self.clients.iter().find(|c| &*c.id == client_id)?;
        self.projects.get(c.project).map(|p| &*p.id)
    }

    /// Every configured client's approval bound: a request of that client whose estimate is
    /// strictly above it needs an approval, as [`crate::decide`] applies it — the lowest
    /// `requireApprovalAbove` (org, project, client, the project's enabled workflow), raised to
    /// just under the workflow's `autoApproveBelow` (below that it is approved automatically).
    /// Clients that never need one are left out. For audits (the compliance report).
    pub fn approval_bounds(&self) -> Vec<(&str, Micros)> {
        self.clients
            .iter()
            .filter_map(|c| {
                let above = c.rules.require_approval_above?;
                let below = self
                    .projects
                    .get(c.project)
                    .and_then(|p| p.approval.as_ref())
                    .and_then(|a| a.auto_approve_below)
                    .map_or(0, |b| b.get().saturating_sub(1));
                Some((&*c.id, Micros::new(above.get().max(below))))
            })
            .collect()
    }
}

// === impl Level ===

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Org(id) => write!(f, "org {id}"),
            Level::Project(id) => write!(f, "project {id}"),
            Level::Client(id) => write!(f, "client {id}"),
        }
    }
}
