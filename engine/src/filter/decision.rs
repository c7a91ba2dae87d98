//! This request's decision event (docs/audit.md "Decision events"): begun at the request
//! headers, filled in as the request goes, and written exactly once when the stream ends.
//!
//! - Managed mode: `on_log` hands the serialised event to this worker's
//!   [`crate::managed::DecisionBuffer`], which the tick appends to the shared queue the sync
//!   sends (`managed/decisions.rs`).
//! - Standalone mode: the event is this stream's property `pag0_decision` as soon as it is
//!   final (a refusal, a hold, a cache hit, a settled response), so Envoy's access log reads
//!   it as `%FILTER_STATE(wasm.pag0_decision:PLAIN)%` (envoy/standalone.yaml). Envoy writes the
//!   access log before the filter's `on_log`: a stream reset before its response ended is
//!   settled there, too late for the line, which then shows `-`.

use pag0_policy::{Deny, Micros};
use pag0_wire::{fit, limits, DecisionEvent, DecisionKind};

use crate::approval::Incoming;

/// The property (filter state `wasm.pag0_decision`) standalone mode writes.
pub const PROPERTY: &str = "pag0_decision";
/// The code a held request and its early replays carry (not a refusal: `202`).
const APPROVAL_PENDING: &str = "APPROVAL_PENDING";

pub(super) struct Note {
    event: DecisionEvent,
    /// Set once a decision is made: a stream gone before that (reset while its body was
    /// read) decided nothing and logs nothing.
    decided: bool,
    /// Host time (ms) the request went upstream; the latencies count from it.
    forwarded_ms: Option<u64>,
}

fn text(s: &str, max: usize) -> String {
    fit(s, max).to_string()
}

impl Note {
    /// At the request headers: the request line (path without its query) and the policy.
    pub(super) fn begin(at_ms: u64, line: &Incoming, policy_version: u64) -> Note {
        let path = line.path.split('?').next().unwrap_or_default();
        let authority = pag0_policy::matching::request_host(&line.authority);
        Note {
            event: DecisionEvent {
                at: at_ms,
                decision: DecisionKind::Deny,
                code: None,
                scope: None,
                client_id: None,
                project_id: None,
                method: text(&line.method, limits::MAX_METHOD),
                authority: text(authority, limits::MAX_AUTHORITY),
                path: text(path, limits::MAX_PATH),
                model: None,
                estimate: None,
                cost: None,
                savings: None,
                upstream_status: None,
                first_byte_ms: None,
                latency_ms: None,
                policy_version,
                approval_id: line
                    .approval_id
                    .as_deref()
                    .map(|id| text(id, limits::MAX_ID)),
                body_sha256: None,
                requires_approval: false,
            },
            decided: false,
            forwarded_ms: None,
        }
    }

    /// The agent asked for an approval whatever the estimate.
    pub(super) fn requires_approval(&mut self) {
        self.event.requires_approval = true;
    }

    /// The API key named a client.
    pub(super) fn client(&mut self, project_id: &str, client_id: &str) {
        self.event.project_id = Some(text(project_id, limits::MAX_ID));
        self.event.client_id = Some(text(client_id, limits::MAX_ID));
    }

    /// The body pricing (or the approval binding) read; never the body itself.
    pub(super) fn body(&mut self, body: &[u8]) {
        if !body.is_empty() {
            self.event.body_sha256 = Some(pag0_policy::approval::body_sha256_hex(body));
        }
    }

    pub(super) fn deny(&mut self, d: &Deny) {
        self.decided = true;
        self.event.decision = DecisionKind::Deny;
        self.event.code = Some(d.code.as_str().to_string());
        self.event.scope = d.scope.map(|s| s.label().to_string());
        if let Some(p) = &d.project_id {
            self.event.project_id = Some(text(p, limits::MAX_ID));
        }
        if let Some(c) = &d.client_id {
            self.event.client_id = Some(text(c, limits::MAX_ID));
        }
        // A refused request cost nothing; what it would have reserved is kept if known.
        self.event.cost = None;
        self.forwarded_ms = None;
    }

    /// What the request would cost (set before the hold, the cache lookup or the forward).
    pub(super) fn estimate(&mut self, estimate: Micros, model: Option<&str>) {
        self.event.estimate = Some(estimate);
        self.event.model = model.map(|m| text(m, limits::MAX_ID));
    }

    /// Forwarded upstream at `now_ms` (within policy, or a replay whose approval was consumed).
    pub(super) fn forwarded(&mut self, now_ms: u64) {
        self.decided = true;
        self.event.decision = DecisionKind::Allow;
        self.event.code = None;
        self.event.scope = None;
        self.forwarded_ms = Some(now_ms);
    }

    /// Held for an approval the sidecar created.
    pub(super) fn pending(&mut self, approval_id: &str) {
        self.decided = true;
        self.event.decision = DecisionKind::Pending;
        self.event.code = Some(APPROVAL_PENDING.to_string());
        self.event.approval_id = Some(text(approval_id, limits::MAX_ID));
    }

    /// A replay of an approval still pending (answered `202` again, nothing forwarded).
    pub(super) fn replay_pending(&mut self) {
        self.decided = true;
        self.event.decision = DecisionKind::Replay;
        self.event.code = Some(APPROVAL_PENDING.to_string());
        self.forwarded_ms = None;
    }

    pub(super) fn cache_hit(&mut self, savings: Micros) {
        self.decided = true;
        self.event.decision = DecisionKind::CacheHit;
        self.event.estimate = Some(Micros::ZERO);
        self.event.cost = Some(Micros::ZERO);
        self.event.savings = Some(savings);
    }

    /// The upstream's response headers arrived at `now_ms`.
    pub(super) fn first_byte(&mut self, status: Option<u32>, now_ms: u64) {
        self.event.upstream_status = status.and_then(|s| u16::try_from(s).ok());
        if let Some(f) = self.forwarded_ms {
            self.event.first_byte_ms = Some(now_ms.saturating_sub(f));
        }
    }

    /// Settled at `now_ms`: what the upstream's reply cost.
    pub(super) fn settled(&mut self, actual: Micros, now_ms: u64) {
        self.event.cost = Some(actual);
        if let Some(f) = self.forwarded_ms {
            self.event.latency_ms = Some(now_ms.saturating_sub(f));
        }
    }

    /// The event as one JSON line, or `None` if nothing was decided.
    pub(super) fn line(&self) -> Option<String> {
        if !self.decided {
            return None;
        }
        serde_json::to_string(&self.event).ok()
    }
}
