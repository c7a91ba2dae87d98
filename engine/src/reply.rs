//! Local replies and the headers of allowed responses (docs/policy.md#check-order-and-replies).

use std::borrow::Cow;
use std::sync::Arc;

use pag0_policy::{BudgetKey, Deny, DenyCode, Micros, Reservation};

use crate::host::Host;

/// Sends the refusal as a local reply. The caller returns `Action::Pause` afterwards.
pub fn send_deny(host: &dyn Host, deny: &Deny) {
    let body = deny.to_json();
    host.send_local_reply(
        deny.code.status(),
        &[
            ("content-type", "application/json"),
            ("x-pag0-decision", "deny"),
            ("x-pag0-code", deny.code.as_str()),
        ],
        body.as_bytes(),
    );
}

/// `BUDGET_EXCEEDED` for a counter that lacked room at reservation time (after the policy's
/// read-only check passed: another request took the room in between). Same wording as the
/// policy's own budget refusal.
pub fn budget_exceeded(project_id: &Arc<str>, r: &Reservation, used: Micros) -> Deny {
    Deny {
        code: DenyCode::BudgetExceeded,
        message: format!(
            "{}: {} limit, {} spent, {} requested",
            budget_name(&r.key),
            r.limit,
            used,
            r.amount
        ),
        scope: Some(r.key.scope.kind()),
        project_id: Some(project_id.clone()),
        client_id: None,
    }
}

/// `org monthly budget`, `project sales-ai daily budget`.
fn budget_name(key: &BudgetKey) -> String {
    let label = key.scope.label();
    let (level, period) = label.split_once('.').unwrap_or((label, ""));
    match key.scope.project_id() {
        Some(p) => format!("{level} {p} {period} budget"),
        None => format!("{level} {period} budget"),
    }
}

/// A refusal when the counters themselves cannot be used (host error): fail closed.
pub fn counters_unavailable(project_id: &Arc<str>) -> Deny {
    Deny {
        code: DenyCode::BudgetExceeded,
        message: "budget counters are unavailable in this Envoy; refusing rather than \
                  spending unaccounted"
            .to_string(),
        scope: None,
        project_id: Some(project_id.clone()),
        client_id: None,
    }
}

/// Headers added to an allowed response (on every allowed request: only the amount is
/// formatted, the rest is borrowed).
pub fn allow_headers(project_id: &str, estimate: Micros) -> [(&'static str, Cow<'_, str>); 3] {
    [
        ("x-pag0-decision", Cow::Borrowed("allow")),
        ("x-pag0-project", Cow::Borrowed(project_id)),
        ("x-pag0-estimated-cost", Cow::Owned(estimate.to_string())),
    ]
}

#[cfg(test)]
mod tests {
    use pag0_policy::budget::{Scope, ScopeKind};

    use super::*;

    #[test]
    fn budget_refusal_names_the_counter_like_the_spec_example() {
        let r = Reservation {
            key: BudgetKey {
                scope: Scope::ProjectMonthly("sales-ai".into()),
                period: "2026-11".into(),
            },
            amount: Micros::new(120_000),
            limit: Micros::new(15_000_000),
        };
        let d = budget_exceeded(&"sales-ai".into(), &r, Micros::new(14_990_000));
        assert_eq!(d.code.status(), 402);
        assert_eq!(d.scope.map(ScopeKind::label), Some("project.monthly"));
        assert_eq!(
            d.message,
            "project sales-ai monthly budget: 15000000 limit, 14990000 spent, 120000 requested"
        );
        let org = Reservation {
            key: BudgetKey {
                scope: Scope::OrgDaily,
                period: "2026-11-24".into(),
            },
            ..r
        };
        assert!(budget_exceeded(&"p".into(), &org, Micros::ZERO)
            .message
            .starts_with("org daily budget: "));
    }
}
