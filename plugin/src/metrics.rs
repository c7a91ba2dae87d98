//! Plugin counters (names listed in README "Metrics"; Envoy shows them as `wasmcustom.<name>`).
//!
//! Defined once per root context in `on_configure` (`define_metric` takes a lock in Envoy);
//! requests only increment. The cache's per-project and per-cost-centre series depend on the
//! policy: defined when a policy is loaded ([`Metrics::attribute`]).
//!
//! Money counters keep `reserved = settled + released` for every request whose actual cost is
//! at most its estimate: `released` is the part of a reservation given back without charge.

use pag0_policy::{CompiledPolicy, DenyCode, Micros};
use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

use crate::host::{self, Host};

/// Every SPEC §5 code, so each has its counter from the start (a dashboard sees zeros,
/// not missing series).
pub const DENY_CODES: [DenyCode; 16] = [
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
];

/// Metric ids; `None` where the host refused to define one (then that count is skipped,
/// the request is not affected).
pub struct Metrics {
    allowed: Option<u32>,
    denied: Vec<(DenyCode, Option<u32>)>,
    reserved: Option<u32>,
    settled: Option<u32>,
    released: Option<u32>,
    /// `pag0.cache.*` (see `cache.rs`).
    pub cache: crate::cache::CacheMetrics,
    /// `pag0.approvals.*` and `pag0.requests.denied.APPROVAL_PENDING`.
    pub approvals: crate::approval::ApprovalMetrics,
}

// === impl Metrics ===

impl Metrics {
    /// Defines every counter with the host (`define_metric`).
    pub fn define() -> Self {
        Metrics::define_with(define)
    }

    /// Builds the table with `define(name) -> id`; tests pass their own.
    pub fn define_with(mut define: impl FnMut(&str) -> Option<u32>) -> Self {
        Metrics {
            allowed: define("pag0.requests.allowed"),
            denied: DENY_CODES
                .iter()
                .map(|&c| (c, define(&format!("pag0.requests.denied.{}", c.as_str()))))
                .collect(),
            reserved: define("pag0.cost.reserved_micros"),
            settled: define("pag0.cost.settled_micros"),
            released: define("pag0.cost.released_micros"),
            cache: crate::cache::CacheMetrics::define_with(&mut define),
            approvals: crate::approval::ApprovalMetrics::define_with(&mut define),
        }
    }

    /// Metrics that count nothing: for a root context whose configuration failed.
    pub fn none() -> Self {
        Metrics {
            allowed: None,
            denied: Vec::new(),
            reserved: None,
            settled: None,
            released: None,
            cache: crate::cache::CacheMetrics::none(),
            approvals: crate::approval::ApprovalMetrics::none(),
        }
    }

    /// Defines the cache's per-project and per-cost-centre series of `policy` with the host
    /// (see `cache/savings.rs`). Call once per loaded policy (`on_configure`, a sidecar policy
    /// adopted), never per request.
    pub fn attribute(&self, policy: &CompiledPolicy) {
        self.attribute_with(policy, define);
    }

    /// [`Metrics::attribute`] with `define(name) -> id`; tests pass their own.
    pub fn attribute_with(
        &self,
        policy: &CompiledPolicy,
        mut define: impl FnMut(&str) -> Option<u32>,
    ) {
        self.cache.attribute(policy, &mut define);
    }

    pub fn allowed(&self, host: &dyn Host, reserved: Micros) {
        increment(host, self.allowed, 1);
        increment(host, self.reserved, micros(reserved));
    }

    pub fn denied(&self, host: &dyn Host, code: DenyCode) {
        let id = self
            .denied
            .iter()
            .find(|(c, _)| *c == code)
            .and_then(|(_, id)| *id);
        increment(host, id, 1);
    }

    pub fn settled(&self, host: &dyn Host, reserved: Micros, actual: Micros) {
        increment(host, self.settled, micros(actual));
        increment(host, self.released, micros(reserved.saturating_sub(actual)));
    }
}

fn define(name: &str) -> Option<u32> {
    match hostcalls::define_metric(crate::cache::metric_type(name), name) {
        Ok(id) => Some(id),
        Err(s) => {
            host::log(
                LogLevel::Warn,
                &format!("pag0: cannot define metric {name}: {s:?}"),
            );
            None
        }
    }
}

fn increment(host: &dyn Host, id: Option<u32>, by: i64) {
    if let (Some(id), true) = (id, by != 0) {
        host.increment_metric(id, by);
    }
}

fn micros(m: Micros) -> i64 {
    i64::try_from(m.get()).unwrap_or(i64::MAX)
}
