//! The filter's two approval calls (docs/approvals.md): `POST /v1/approvals` for a request the
//! policy holds back, `POST /v1/approvals/{id}/consume` for its replay, and the refusal the
//! sidecar answers a replay with.

use pag0_policy::{DenyCode, Micros};
use serde::{Deserialize, Serialize};

/// `POST /v1/approvals`. Unknown fields are ignored: a newer filter may send more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateApproval {
    pub project_id: String,
    pub client_id: String,
    /// Upper case.
    pub method: String,
    pub authority: String,
    /// With the query string, as sent.
    pub path: String,
    /// `pag0_policy::approval::body_sha256_hex(body)`.
    pub body_sha256: String,
    /// `pag0_policy::approval::request_binding(client_id, head, body)`.
    pub binding: String,
    pub estimated_cost: Micros,
    pub policy_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The agent's `x-pag0-callback-url`: the decision is POSTed there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

/// `POST /v1/approvals/{id}/consume`: the replay's binding and estimate, checked against the
/// approval's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumeApproval {
    pub binding: String,
    pub estimated_cost: Micros,
    pub policy_version: u64,
}

/// The fields of the sidecar's answer to a create that the agent's `202` body carries
/// (docs/policy.md#check-order-and-replies), in this order. The answer has more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    pub approval_id: String,
    pub status: String,
    pub project_id: String,
    pub estimated_cost: Micros,
    /// RFC 3339.
    pub expires_at: String,
}

/// Why a replay may not pass (`403` of the consume call).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Refusal {
    /// No approver has decided yet.
    #[serde(rename = "APPROVAL_PENDING")]
    Pending,
    #[serde(rename = "APPROVAL_DENIED")]
    Denied,
    #[serde(rename = "APPROVAL_EXPIRED")]
    Expired,
    /// Another request than the approved one, or no approval with that id.
    #[serde(rename = "APPROVAL_MISMATCH")]
    Mismatch,
    #[serde(rename = "APPROVAL_USED")]
    Used,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::Pending,
        Refusal::Denied,
        Refusal::Expired,
        Refusal::Mismatch,
        Refusal::Used,
    ];

    /// The wire code (`error.code`, the agent's `x-pag0-code`).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Pending => "APPROVAL_PENDING",
            Refusal::Denied => "APPROVAL_DENIED",
            Refusal::Expired => "APPROVAL_EXPIRED",
            Refusal::Mismatch => "APPROVAL_MISMATCH",
            Refusal::Used => "APPROVAL_USED",
        }
    }

    /// The policy's code for it; `None` for [`Refusal::Pending`], which is not a decision of
    /// the policy (the request is still held, docs/approvals.md).
    pub fn deny_code(self) -> Option<DenyCode> {
        match self {
            Refusal::Pending => None,
            Refusal::Denied => Some(DenyCode::ApprovalDenied),
            Refusal::Expired => Some(DenyCode::ApprovalExpired),
            Refusal::Mismatch => Some(DenyCode::ApprovalMismatch),
            Refusal::Used => Some(DenyCode::ApprovalUsed),
        }
    }
}

/// The body of the consume call's `403`: `{"error": {"code", "message", "details", "projectId"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalBody {
    pub error: RefusalError,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusalError {
    pub code: Refusal,
    pub message: String,
    #[serde(default)]
    pub details: Vec<String>,
    #[serde(default)]
    pub project_id: Option<String>,
}
