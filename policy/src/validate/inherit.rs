//! Compilation: org → project → client inheritance into each client's [`Effective`] rules.

use std::sync::Arc;

use super::raw::RawDocument;
use super::{
    ApprovalRule, CompiledClient, CompiledEndpoint, CompiledPolicy, CompiledProject, Effective,
    Level,
};
use crate::doc::PolicyDocument;
use crate::money::Micros;

// === compile: effective rules ===

fn min_opt(a: Option<Micros>, b: Option<Micros>) -> Option<Micros> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

impl RawDocument {
    pub(super) fn compile(self, doc: PolicyDocument, fingerprint: u64) -> CompiledPolicy {
        let org_id: Arc<str> = Arc::from(self.org_id.as_str());
        let mut endpoints: Vec<CompiledEndpoint> = self
            .endpoints
            .into_iter()
            .map(|e| {
                // Learning applies where a report can differ from the estimate (a cost header,
                // or usage priced per token) and the estimate is not 0 (docs/estimates.md).
                let reported = e.cost_header.is_some()
                    || matches!(e.pricing, crate::pricing::EndpointPricing::Tokens(_));
                let priced = !matches!(
                    e.pricing,
                    crate::pricing::EndpointPricing::Free
                        | crate::pricing::EndpointPricing::PerRequest(crate::money::Micros::ZERO)
                );
                let learn_key = (e.learn && reported && priced)
                    .then(|| Arc::from(crate::learn::key(&e.pattern.to_string(), &e.pricing)));
                CompiledEndpoint {
                    pattern: e.pattern,
                    category: Arc::from(e.category.as_str()),
                    pricing: e.pricing,
                    cost_header: e.cost_header.map(|h| Arc::from(h.as_str())),
                    learn_key,
                }
            })
            .collect();
        // Most specific first, document order among equals. Cached: each key computed once,
        // and the sort moves (key, index) pairs rather than endpoints (a 10,000-endpoint
        // policy compiles faster, and the .wasm holds a sort of pairs, not of endpoints).
        endpoints.sort_by_cached_key(|e| std::cmp::Reverse(e.pattern.specificity()));
        let mut by_host: std::collections::BTreeMap<Box<str>, Vec<usize>> = Default::default();
        for (i, e) in endpoints.iter().enumerate() {
            by_host.entry(e.pattern.host().into()).or_default().push(i);
        }
        let endpoint_hosts: Vec<(Box<str>, Vec<usize>)> = by_host.into_iter().collect();

        let projects: Vec<CompiledProject> = self
            .projects
            .iter()
            .map(|p| CompiledProject {
                id: Arc::from(p.id.as_str()),
                monthly: p.rules.monthly,
                daily: p.rules.daily,
                approval: p.approval.as_ref().map(|(a, _)| ApprovalRule {
                    approvers: a.approvers.clone(),
                    auto_approve_below: a.auto_approve_below,
                    expires_after_secs: a.expires_after_secs,
                }),
            })
            .collect();

        let mut clients = Vec::with_capacity(self.clients.len());
        let mut keys = Vec::with_capacity(self.clients.len());
        for c in self.clients {
            let Some(pi) = c.project else { continue };
            let (Some(raw_p), Some(p)) = (self.projects.get(pi), projects.get(pi)) else {
                continue;
            };
            let client_id: Arc<str> = Arc::from(c.id.as_str());
            let levels = [
                (Level::Org(org_id.clone()), &self.global, None),
                (
                    Level::Project(p.id.clone()),
                    &raw_p.rules,
                    raw_p.approval.as_ref().map(|(_, above)| *above),
                ),
                (Level::Client(client_id.clone()), &c.rules, None),
            ];
            let mut eff = Effective::default();
            for (level, rules, workflow_above) in levels {
                if let Some(list) = &rules.allowed {
                    eff.allow_lists.push((level.clone(), list.clone()));
                }
                for b in &rules.blocked {
                    eff.blocked.push((level.clone(), b.clone()));
                }
                if let Some(cats) = &rules.categories {
                    eff.categories = Some(match eff.categories.take() {
                        None => cats.iter().map(|s| Arc::from(s.as_str())).collect(),
                        Some(prev) => prev
                            .into_iter()
                            .filter(|p| cats.iter().any(|c| c == &**p))
                            .collect(),
                    });
                }
                if let Some(m) = rules.max_per_request {
                    if eff.max_per_request.as_ref().is_none_or(|(cur, _)| m < *cur) {
                        eff.max_per_request = Some((m, level.clone()));
                    }
                }
                eff.require_approval_above =
                    min_opt(eff.require_approval_above, rules.require_approval_above);
                eff.require_approval_above =
                    min_opt(eff.require_approval_above, workflow_above.flatten());
                if let Some(h) = &rules.hours {
                    eff.hours.push((level, h.clone()));
                }
            }
            keys.push((c.key, clients.len()));
            clients.push(CompiledClient {
                id: client_id,
                project: pi,
                rules: eff,
            });
        }
        keys.sort_by(by_key_hash);

        CompiledPolicy {
            doc,
            org_id,
            tz: self.tz,
            org_monthly: self.global.monthly,
            org_daily: self.global.daily,
            endpoints,
            endpoint_hosts,
            projects,
            clients,
            keys,
            fingerprint,
        }
    }
}

/// The order of the clients' key index. Not inlined: the sort's many inlined comparisons of
/// 32-byte hashes were ~25 kB of the .wasm; one call each costs nothing at compile time.
#[inline(never)]
fn by_key_hash(a: &([u8; 32], usize), b: &([u8; 32], usize)) -> std::cmp::Ordering {
    a.0.cmp(&b.0)
}
