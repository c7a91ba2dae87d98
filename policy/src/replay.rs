//! Re-deciding a recorded request under another policy: the console's what-if.
//!
//! A recorded decision (docs/audit.md) names the client by id — the API key is never stored — and
//! keeps the estimate, never the body. [`CompiledPolicy::redecide`] runs the filter's own
//! [`CompiledPolicy::check_head_with`] and [`CompiledPolicy::finish`] on those facts, so a
//! draft is judged by the code that would enforce it, not by a re-implementation:
//!
//! - the client is found by id in the draft; its key digest stands in for hashing the key
//!   (a client the draft removed is `UNKNOWN_API_KEY`, as its key would be);
//! - an endpoint priced per request is priced by the draft's catalogue; one priced per token
//!   keeps the recorded estimate (the body that priced it is gone);
//! - time, method, authority and path are the recorded ones, so lists, categories, working
//!   hours, caps, budgets and approval thresholds are all checked as the filter would.

use chrono::{DateTime, Utc};

use crate::budget::BudgetView;
use crate::decide::{Decision, Deny, DenyCode, FinishOptions, HeadOutcome, RequestHead};
use crate::money::Micros;
use crate::validate::CompiledPolicy;

/// What a decision record keeps of a request, enough to decide it again.
#[derive(Clone, Debug)]
pub struct RecordedRequest<'a> {
    pub client_id: &'a str,
    pub method: &'a str,
    pub authority: &'a str,
    /// As recorded (docs/audit.md keeps it without the query; matching ignores the query anyway).
    pub path: &'a str,
    pub at: DateTime<Utc>,
    /// The estimate the filter reserved for it.
    pub estimate: Micros,
    /// The agent sent `x-pag0-requires-approval: true`.
    pub requires_approval: bool,
    /// It was the replay of an approved request (`x-pag0-approval-id`).
    pub approved_replay: bool,
}

/// Stands in for the key in [`RequestHead::api_key`]; never hashed (the client's digest is
/// passed instead), only checked to be present.
const RECORDED_KEY: &str = "recorded-decision";

// === impl CompiledPolicy: replay ===

impl CompiledPolicy {
    /// The decision this policy takes for a recorded request, against `budgets` as they
    /// stand at the request's time.
    pub fn redecide(&self, r: &RecordedRequest<'_>, budgets: &dyn BudgetView) -> Decision {
        let Some(digest) = self.key_digest_of(r.client_id) else {
            return Decision::Deny(Deny::new(
                DenyCode::UnknownApiKey,
                format!(
                    "client {} is not in this policy, so its API key is unknown",
                    r.client_id
                ),
            ));
        };
        let head = RequestHead {
            api_key: Some(RECORDED_KEY),
            method: r.method,
            authority: r.authority,
            path: r.path,
            requires_approval: r.requires_approval,
        };
        match self.check_head_with(&head, r.at, |_| digest) {
            HeadOutcome::Deny(d) => Decision::Deny(d),
            HeadOutcome::Continue(mut pending) => {
                pending.known_estimate = Some(r.estimate);
                let opts = FinishOptions {
                    approved_replay: r.approved_replay,
                    ..FinishOptions::default()
                };
                self.finish(&pending, None, budgets, &opts)
            }
        }
    }

    /// The SHA-256 the policy holds for a client's API key.
    fn key_digest_of(&self, client_id: &str) -> Option<[u8; 32]> {
        self.keys
            .iter()
            .find(|(_, i)| self.clients.get(*i).is_some_and(|c| &*c.id == client_id))
            .map(|(digest, _)| *digest)
    }
}

#[cfg(test)]
mod tests;
