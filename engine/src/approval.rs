//! Approvals, the filter's side of docs/approvals.md: what the filter sends to the sidecar
//! (`POST /v1/approvals`, `POST /v1/approvals/{id}/consume`), how it reads the answers, and
//! the agent-facing `202` (docs/policy.md#check-order-and-replies). Pure functions and data; the request lifecycle that uses
//! them is `filter/approval.rs`.

use std::rc::Rc;

use pag0_policy::{BudgetKey, BudgetView, Micros};
use serde_json::json;

use crate::config::SidecarConfig;
use crate::host::Host;
use crate::metrics::Increments;

/// The agent's header naming the approval it replays.
pub const APPROVAL_ID_HEADER: &str = "x-pag0-approval-id";
pub const JUSTIFICATION_HEADER: &str = "x-pag0-justification";
pub const REQUESTED_BY_HEADER: &str = "x-pag0-requested-by";
/// docs/approvals.md adds this one: where the sidecar POSTs the decision.
pub const CALLBACK_URL_HEADER: &str = "x-pag0-callback-url";

/// The sidecar's code for "no decision yet" (not in docs/policy.md#check-order-and-replies's table): the filter answers the
/// replay `403` with this code.
/// The wire code of a replay before any decision (`pag0_wire::Refusal::Pending`).
pub const APPROVAL_PENDING: &str = "APPROVAL_PENDING";

/// Longest header value kept for the sidecar (it validates lengths itself; this bounds memory).
const MAX_TEXT: usize = 2000;

/// What the request headers said about approvals, read before `x-pag0-*` is stripped
/// (`filter/request.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Incoming {
    /// `x-pag0-approval-id`: this request is a replay.
    pub approval_id: Option<String>,
    pub justification: Option<String>,
    pub requested_by: Option<String>,
    pub callback_url: Option<String>,
    pub method: String,
    pub authority: String,
    /// With the query.
    pub path: String,
    /// SHA-256 of the upstream credential headers (`pag0_policy::approval::credential_sha256`):
    /// part of the binding, so a replay with another credential does not match.
    pub credential: Option<[u8; 32]>,
}

/// An approval header's value as kept for the sidecar: trimmed, at most [`MAX_TEXT`]
/// characters, `None` when empty.
pub fn header_text(mut v: String) -> Option<String> {
    let end = v.trim_end().len();
    v.truncate(end);
    let start = v.len() - v.trim_start().len();
    v.drain(..start);
    if let Some((cut, _)) = v.char_indices().nth(MAX_TEXT) {
        v.truncate(cut);
    }
    (!v.is_empty()).then_some(v)
}

impl Incoming {
    /// The binding of this request (docs/approvals.md, "The binding").
    pub fn binding(&self, client_id: &str, body: &[u8]) -> String {
        let head = pag0_policy::RequestHead {
            api_key: None,
            method: &self.method,
            authority: &self.authority,
            path: &self.path,
            requires_approval: false,
        };
        pag0_policy::approval::request_binding_with_credential(
            client_id,
            &head,
            body,
            self.credential.as_ref(),
        )
    }
}

/// An approval id the filter may put into a path: the sidecar's ids are `apr_<40 hex>`; anything
/// outside `[A-Za-z0-9_-]{1,100}` cannot name one (and must not reach the sidecar's router).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What `POST /v1/approvals` gets.
pub struct CreateRequest<'a> {
    pub incoming: &'a Incoming,
    pub project_id: &'a str,
    pub client_id: &'a str,
    pub body: &'a [u8],
    pub estimate: Micros,
    pub policy_version: u64,
}

/// The JSON body of `POST /v1/approvals` ([`pag0_wire::CreateApproval`]).
pub fn create_body(r: &CreateRequest<'_>) -> Vec<u8> {
    let body = pag0_wire::CreateApproval {
        project_id: r.project_id.to_string(),
        client_id: r.client_id.to_string(),
        method: r.incoming.method.to_ascii_uppercase(),
        authority: r.incoming.authority.clone(),
        path: r.incoming.path.clone(),
        body_sha256: pag0_policy::approval::body_sha256_hex(r.body),
        binding: r.incoming.binding(r.client_id, r.body),
        estimated_cost: r.estimate,
        policy_version: r.policy_version,
        justification: r.incoming.justification.clone(),
        requested_by: r.incoming.requested_by.clone(),
        callback_url: r.incoming.callback_url.clone(),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The JSON body of `POST /v1/approvals/{id}/consume` ([`pag0_wire::ConsumeApproval`]).
pub fn consume_body(binding: &str, estimate: Micros, policy_version: u64) -> Vec<u8> {
    let body = pag0_wire::ConsumeApproval {
        binding: binding.to_string(),
        estimated_cost: estimate,
        policy_version,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// `:path` of the consume call (`id` checked with [`valid_id`]).
pub fn consume_path(id: &str) -> String {
    format!("/v1/approvals/{id}/consume")
}

/// Pseudo-headers and the sync-secret bearer of a call to the sidecar.
pub fn call_headers<'a>(
    cfg: &'a SidecarConfig,
    path: &'a str,
    auth: &'a str,
) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        (":method", "POST"),
        (":path", path),
        (":authority", cfg.authority.as_str()),
        ("content-type", "application/json"),
    ];
    if !auth.is_empty() {
        h.push(("authorization", auth));
    }
    h
}

/// `Bearer <sync secret>`, or empty without one.
pub fn bearer(cfg: &SidecarConfig) -> String {
    cfg.sync_secret
        .as_ref()
        .map(|t| format!("Bearer {t}"))
        .unwrap_or_default()
}

/// The sidecar created the approval: the id and the agent's `202` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    pub approval_id: String,
    /// docs/policy.md#check-order-and-replies: `{"approvalId","status","projectId","estimatedCost","expiresAt"}`.
    pub body: String,
}

/// Reads the answer of `POST /v1/approvals`; `Err` is why the sidecar counts as unreachable.
pub fn read_created(status: Option<u32>, body: &[u8]) -> Result<Created, String> {
    let status = status.ok_or_else(|| "no answer within timeoutMs".to_string())?;
    if status != 201 && status != 200 {
        return Err(format!("status {status}: {}", excerpt(body)));
    }
    let answer: pag0_wire::Created =
        serde_json::from_slice(body).map_err(|e| format!("answer not understood: {e}"))?;
    if !valid_id(&answer.approval_id) {
        return Err("answer has no usable approvalId".to_string());
    }
    Ok(Created {
        body: serde_json::to_string(&answer).unwrap_or_default(),
        approval_id: answer.approval_id,
    })
}

/// The answer of `POST /v1/approvals/{id}/consume`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Consumed {
    /// `200`: this replay may pass.
    Granted,
    /// `403` with an `APPROVAL_*` code the agent gets as the reason.
    Refused(Refusal),
    /// Anything else (no answer, 5xx, a wrong token): the sidecar counts as unreachable.
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The sidecar's code ([`pag0_wire::Refusal`]); [`pag0_wire::Refusal::deny_code`] is the
    /// policy's, `None` for `APPROVAL_PENDING` (the request is still held).
    pub code: pag0_wire::Refusal,
    pub message: String,
}

pub fn read_consumed(status: Option<u32>, body: &[u8]) -> Consumed {
    let Some(status) = status else {
        return Consumed::Failed("no answer within timeoutMs".into());
    };
    if status == 200 {
        return Consumed::Granted;
    }
    if status == 403 {
        return match serde_json::from_slice::<pag0_wire::RefusalBody>(body) {
            Ok(r) => Consumed::Refused(Refusal {
                code: r.error.code,
                message: r.error.message,
            }),
            Err(_) => Consumed::Failed(format!("status 403: {}", excerpt(body))),
        };
    }
    Consumed::Failed(format!("status {status}: {}", excerpt(body)))
}

fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body.get(..300).unwrap_or(body)).into_owned()
}

/// Sends the agent `202 Accepted` for a created approval.
pub fn send_pending(host: &dyn Host, created: &Created) {
    host.send_local_reply(
        202,
        &[
            ("content-type", "application/json"),
            ("x-pag0-decision", "pending"),
            (APPROVAL_ID_HEADER, created.approval_id.as_str()),
        ],
        created.body.as_bytes(),
    );
}

/// `403 APPROVAL_PENDING`: the replay came before any decision.
pub fn send_still_pending(host: &dyn Host, project_id: &str, message: &str) {
    let body = json!({ "error": {
        "code": APPROVAL_PENDING, "message": message, "projectId": project_id } })
    .to_string();
    host.send_local_reply(
        403,
        &[
            ("content-type", "application/json"),
            ("x-pag0-decision", "deny"),
            ("x-pag0-code", APPROVAL_PENDING),
        ],
        body.as_bytes(),
    );
}

/// A budget view with nothing spent: used at the headers to learn whether a request whose price
/// does not depend on its body would need approval (then its body is buffered for the binding).
pub struct NothingSpent;

impl BudgetView for NothingSpent {
    fn used(&self, _key: &BudgetKey) -> Micros {
        Micros::ZERO
    }
}

/// `pag0.approvals.requested` (approvals created at the sidecar), `pag0.approvals.replayed`
/// (replays the sidecar let through), `pag0.requests.denied.APPROVAL_PENDING`.
pub struct ApprovalMetrics {
    /// Where the increments wait for the tick (`metrics.rs`).
    increments: Rc<Increments>,
    requested: Option<u32>,
    replayed: Option<u32>,
    pending: Option<u32>,
}

impl ApprovalMetrics {
    pub fn define_with(
        increments: Rc<Increments>,
        mut define: impl FnMut(&str) -> Option<u32>,
    ) -> Self {
        ApprovalMetrics {
            increments,
            requested: define("pag0.approvals.requested"),
            replayed: define("pag0.approvals.replayed"),
            pending: define("pag0.requests.denied.APPROVAL_PENDING"),
        }
    }

    pub fn none() -> Self {
        ApprovalMetrics {
            increments: Rc::default(),
            requested: None,
            replayed: None,
            pending: None,
        }
    }

    pub fn requested(&self, host: &dyn Host) {
        self.increments.add(host, self.requested, 1);
    }

    pub fn replayed(&self, host: &dyn Host) {
        self.increments.add(host, self.replayed, 1);
    }

    pub fn still_pending(&self, host: &dyn Host) {
        self.increments.add(host, self.pending, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pag0_policy::DenyCode;

    #[test]
    fn header_text_is_trimmed_cut_to_max_text_characters_and_none_when_empty() {
        assert_eq!(header_text(" \t a b \t".into()).as_deref(), Some("a b"));
        assert_eq!(header_text("   ".into()), None);
        assert_eq!(header_text(String::new()), None);
        let long = format!("  {}  ", "é".repeat(MAX_TEXT + 5));
        assert_eq!(header_text(long), Some("é".repeat(MAX_TEXT)));
    }

    #[test]
    fn ids_that_could_bend_a_path_are_not_valid() {
        assert!(valid_id("apr_0123456789abcdef0123456789abcdef01234567"));
        for bad in ["", "a/b", "../x", "a?b", "a b", "a%2f", &"x".repeat(101)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn created_answer_keeps_the_five_spec_fields() {
        let body = br#"{"approvalId":"apr_ab","status":"pending","projectId":"p","estimatedCost":"600000","expiresAt":"2026-11-25T12:00:00.000Z","clientId":"c","binding":"x"}"#;
        let c = read_created(Some(201), body).unwrap();
        assert_eq!(c.approval_id, "apr_ab");
        let v: serde_json::Value = serde_json::from_str(&c.body).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 5);
        assert_eq!(v["estimatedCost"], "600000");
        assert_eq!(v["expiresAt"], "2026-11-25T12:00:00.000Z");
        assert!(read_created(None, b"").is_err());
        assert!(read_created(Some(400), b"{}").is_err());
        assert!(read_created(Some(201), br#"{"approvalId":"a/b"}"#).is_err());
    }

    #[test]
    fn consume_answers() {
        assert_eq!(read_consumed(Some(200), b"{}"), Consumed::Granted);
        let r = |code: &str| {
            read_consumed(
                Some(403),
                format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#).as_bytes(),
            )
        };
        for (code, want) in [
            ("APPROVAL_DENIED", Some(DenyCode::ApprovalDenied)),
            ("APPROVAL_EXPIRED", Some(DenyCode::ApprovalExpired)),
            ("APPROVAL_MISMATCH", Some(DenyCode::ApprovalMismatch)),
            ("APPROVAL_USED", Some(DenyCode::ApprovalUsed)),
            ("APPROVAL_PENDING", None),
        ] {
            let Consumed::Refused(got) = r(code) else {
                panic!("{code}: not a refusal");
            };
            assert_eq!(got.code.as_str(), code);
            assert_eq!(got.code.deny_code(), want, "{code}");
            assert_eq!(got.message, "m");
        }
        assert_eq!(APPROVAL_PENDING, pag0_wire::Refusal::Pending.as_str());
        // A wrong token is not a refusal of the approval.
        assert!(matches!(r("FORBIDDEN"), Consumed::Failed(_)));
        assert!(matches!(read_consumed(None, b""), Consumed::Failed(_)));
        assert!(matches!(read_consumed(Some(503), b""), Consumed::Failed(_)));
    }
}
