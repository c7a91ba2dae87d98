//! The approval workflow (docs/approvals.md): what a filter's approval request must satisfy,
//! who may decide or read an approval, the JSON an approval is shown as, and the notification of
//! each step. The HTTP handlers over it are `crate::routes::approvals`.
//!
//! - The filter (sync secret) creates an approval for a request the policy holds back, answers
//!   the agent `202` with the id, and later asks to use it for the replay: exactly one replay of
//!   an approved, unexpired, matching approval is let through; anything else is refused with the
//!   code of docs/approvals.md.
//! - Approvers (approver tokens bound to an e-mail) listed on the project in the CURRENT policy,
//!   never the requester, approve or deny.
//! - Admins and approvers list and read; the agent polls its own approval with its API key.
//! - Approvers are notified of a new request, the requester's callback of the decision
//!   (crate::notify), without ever blocking the API call.

use pag0_policy::approval::normalise_email;
use pag0_policy::doc::{PolicyDocument, Project};
use rand::RngCore;
use serde_json::{json, Value};

use crate::clock::rfc3339;
use crate::error::AppError;
use crate::notify::{targets, Notification, Target};
use crate::store::{Approval, ApprovalStatus};
use crate::AppState;

/// `approvalWorkflow.expiresAfter` when the project does not set it: one day.
pub const DEFAULT_EXPIRES_AFTER_SECS: u64 = 86_400;
pub(crate) const MAX_TEXT: usize = 2_000;
const MAX_URL: usize = 2_048;
pub(crate) const MAX_LIST: u32 = 1_000;

// --- what the filter sends ---

/// `POST /v1/approvals` and `POST /v1/approvals/{id}/consume`: the types the filter sends
/// (`pag0_wire::approval`).
pub use pag0_wire::{ConsumeApproval as Consume, CreateApproval};

// --- the JSON an approval is shown as ---

/// The fields of the agent's 202 body (docs/approvals.md) (`approvalId, status, projectId, estimatedCost, expiresAt`)
/// first, then the rest.
pub fn view(a: &Approval, now_ms: i64) -> Value {
    let decision = a.decided_at_ms.map(|at| {
        json!({
            "approved": matches!(a.status, ApprovalStatus::Approved | ApprovalStatus::Used),
            "by": a.decided_by,
            "comment": a.decision_comment,
            "at": rfc3339(at),
        })
    });
    json!({
        "approvalId": a.id,
        "status": a.effective_status(now_ms),
        "projectId": a.project_id,
        "estimatedCost": a.estimated_cost.to_string(),
        "expiresAt": rfc3339(a.expires_at_ms),
        "clientId": a.client_id,
        "method": a.method,
        "authority": a.authority,
        "path": a.path,
        "bodySha256": a.body_sha256,
        "policyVersion": a.policy_version,
        "justification": a.justification,
        "requestedBy": a.requested_by,
        "callbackUrl": a.callback_url,
        "createdAt": rfc3339(a.created_at_ms),
        "decision": decision,
        "usedAt": a.used_at_ms.map(rfc3339),
    })
}

/// An approval id: 160 random bits.
fn new_id() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    format!("apr_{}", hex::encode(bytes))
}

fn usd(micros: u64) -> String {
    format!("${}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// Whether two spellings name the same address (`pag0_policy::approval::normalise_email`:
/// case, a display name, a trailing dot do not matter). What does not parse is compared as
/// trimmed text, case-insensitively.
fn same_email(a: &str, b: &str) -> bool {
    match (normalise_email(a), normalise_email(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.trim().eq_ignore_ascii_case(b.trim()),
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(crate) async fn document(state: &AppState) -> Result<(PolicyDocument, i64), AppError> {
    let current = state
        .current_policy()
        .await?
        .ok_or_else(|| AppError::NotFound("no policy yet: PUT /v1/policy first".into()))?;
    let doc = serde_json::from_value(current.value.clone())
        .map_err(|e| AppError::Internal(format!("stored policy does not parse: {e}")))?;
    Ok((doc, current.meta.version))
}

fn project<'a>(doc: &'a PolicyDocument, id: &str) -> Option<&'a Project> {
    doc.projects.iter().find(|p| p.id == id)
}

/// The approvers listed on a project in the current policy.
fn approvers(doc: &PolicyDocument, project_id: &str) -> Vec<String> {
    project(doc, project_id)
        .and_then(|p| p.policy.approval_workflow.as_ref())
        .map(|w| w.approvers.clone())
        .unwrap_or_default()
}

pub(crate) fn may_decide(doc: &PolicyDocument, a: &Approval, email: &str) -> Result<(), AppError> {
    if !approvers(doc, &a.project_id)
        .iter()
        .any(|x| same_email(x, email))
    {
        return Err(AppError::Forbidden(
            "only an approver listed on the approval's project may decide it",
        ));
    }
    match a.requested_by.as_deref() {
        Some(r) if same_email(r, email) => {
            return Err(AppError::Forbidden(
                "the requester may not decide their own request",
            ))
        }
        Some(_) => {}
        // Stored before a requester was required: nobody can show they are not the requester.
        None => {
            return Err(AppError::Forbidden(
                "the approval names no requester, so no approver can be told apart from it",
            ))
        }
    }
    let owner = doc
        .clients
        .iter()
        .find(|c| c.id == a.client_id)
        .and_then(|c| c.tags.get("owner"));
    if owner.is_some_and(|o| same_email(o, email)) {
        return Err(AppError::Forbidden(
            "the owner of the requesting client (tags.owner) may not decide its requests",
        ));
    }
    Ok(())
}

/// Keeps `pag0_approvals_pending` right (also on a fleet: it is read from the store).
pub async fn refresh_pending(state: &AppState) {
    if let Ok(n) = state.store.pending_approvals(state.clock.now_ms()).await {
        state
            .metrics
            .approvals_pending
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

// --- a new request ---

fn bad_approval(details: Vec<String>) -> AppError {
    AppError::BadRequest {
        code: "BAD_APPROVAL",
        message: "the approval request does not validate".into(),
        details,
    }
}

/// Checks a filter's request against the current policy (every failing field named) and builds
/// the pending approval it asks for.
pub(crate) fn new_approval(
    req: CreateApproval,
    doc: &PolicyDocument,
    now_ms: i64,
) -> Result<Approval, AppError> {
    let mut errs = Vec::new();
    let mut check = |ok: bool, msg: &str| {
        if !ok {
            errs.push(msg.to_string());
        }
    };
    check(
        !req.method.is_empty() && req.method.len() <= 16,
        "method: 1-16 characters",
    );
    check(
        !req.authority.is_empty() && req.authority.len() <= 255,
        "authority: 1-255 characters",
    );
    check(
        req.path.starts_with('/') && req.path.len() <= 8_192,
        "path: starts with /, at most 8192 characters",
    );
    check(
        is_hex64(&req.body_sha256),
        "bodySha256: 64 lower-case hex digits",
    );
    check(
        is_hex64(&req.binding),
        "binding: 64 lower-case hex digits (pag0_policy::approval::request_binding)",
    );
    check(
        i64::try_from(req.estimated_cost.get()).is_ok(),
        "estimatedCost: above the largest storable amount",
    );
    check(
        req.policy_version >= 1 && i64::try_from(req.policy_version).is_ok(),
        "policyVersion: ≥ 1 and below 2^63",
    );
    check(
        req.justification
            .as_ref()
            .is_none_or(|s| s.chars().count() <= MAX_TEXT),
        "justification: at most 2000 characters",
    );
    let requested_by = req.requested_by.as_deref().and_then(normalise_email);
    check(
        requested_by.is_some(),
        "requestedBy: required, one e-mail address (the agent's x-pag0-requested-by)",
    );
    check(
        req.callback_url.as_ref().is_none_or(|u| {
            u.len() <= MAX_URL && (u.starts_with("http://") || u.starts_with("https://"))
        }),
        "callbackUrl: an http:// or https:// URL of at most 2048 characters",
    );
    let Some(proj) = project(doc, &req.project_id) else {
        errs.push(format!(
            "projectId: no project {:?} in the current policy",
            req.project_id
        ));
        return Err(bad_approval(errs));
    };
    if !doc
        .clients
        .iter()
        .any(|c| c.id == req.client_id && c.project_id == req.project_id)
    {
        errs.push(format!(
            "clientId: no client {:?} of project {:?} in the current policy",
            req.client_id, req.project_id
        ));
    }
    if !errs.is_empty() {
        return Err(bad_approval(errs));
    }
    let workflow = proj.policy.approval_workflow.as_ref();
    let expires_after_ms = workflow
        .and_then(|w| w.expires_after)
        .unwrap_or(DEFAULT_EXPIRES_AFTER_SECS)
        .saturating_mul(1_000);
    Ok(Approval {
        id: new_id(),
        project_id: req.project_id,
        client_id: req.client_id,
        method: req.method.to_ascii_uppercase(),
        authority: req.authority,
        path: req.path,
        body_sha256: req.body_sha256,
        binding: req.binding,
        estimated_cost: req.estimated_cost.get(),
        policy_version: i64::try_from(req.policy_version).unwrap_or(i64::MAX),
        status: ApprovalStatus::Pending,
        justification: req.justification.filter(|s| !s.is_empty()),
        requested_by,
        callback_url: req.callback_url.filter(|s| !s.is_empty()),
        created_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(i64::try_from(expires_after_ms).unwrap_or(i64::MAX)),
        decided_by: None,
        decision_comment: None,
        decided_at_ms: None,
        used_at_ms: None,
    })
}

// --- notifications ---

/// Tells the project's approvers (and the policy's alert channels) about a new request.
/// Detached: the answer does not wait for (or fail with) the delivery.
pub(crate) fn notify_requested(state: &AppState, doc: &PolicyDocument, a: &Approval, now_ms: i64) {
    let people = approvers(doc, &a.project_id);
    let link = crate::console::approval_link(state.config.public_url.as_deref(), &a.id);
    let n = Notification {
        subject: format!(
            "[pag0] approval requested: {} {} on {}",
            a.project_id,
            usd(a.estimated_cost),
            a.authority
        ),
        text: format!(
            "Client {} of project {} asks to spend an estimated {} ({} micro-USD) on\n  {} {}{}\n\
             Requested by: {}\nJustification: {}\nApproval id: {}\nExpires: {}\n\n\
             Approve: pag0-sidecar approvals approve {} [--comment …]\n\
             Deny:    pag0-sidecar approvals deny {} [--comment …]\n{}",
            a.client_id,
            a.project_id,
            usd(a.estimated_cost),
            a.estimated_cost,
            a.method,
            a.authority,
            a.path,
            a.requested_by.as_deref().unwrap_or("-"),
            a.justification.as_deref().unwrap_or("-"),
            a.id,
            rfc3339(a.expires_at_ms),
            a.id,
            a.id,
            link.as_deref()
                .map(|l| format!("Open in the console: {l}\n"))
                .unwrap_or_default()
        ),
        payload: json!({ "event": "approval.requested", "approval": view(a, now_ms),
                         "consoleUrl": link }),
    };
    drop(
        state
            .notifier
            .dispatch(targets(doc.alerts.as_ref(), &people), n),
    );
}

/// Tells the policy's Slack/webhook channels (no e-mail: the approvers know) and the
/// requester's callback about a decision. Detached, like [`notify_requested`].
pub(crate) fn notify_decided(
    state: &AppState,
    doc: &PolicyDocument,
    a: &Approval,
    approved: bool,
    now_ms: i64,
) {
    let verdict = if approved { "approved" } else { "denied" };
    let n = Notification {
        subject: format!(
            "[pag0] approval {verdict}: {} {} on {}",
            a.project_id,
            usd(a.estimated_cost),
            a.authority
        ),
        text: format!(
            "{} {verdict} approval {} ({} {}{}, {}).{}\n",
            a.decided_by.as_deref().unwrap_or("?"),
            a.id,
            a.method,
            a.authority,
            a.path,
            usd(a.estimated_cost),
            a.decision_comment
                .as_deref()
                .map(|c| format!("\nComment: {c}"))
                .unwrap_or_default()
        ),
        payload: json!({ "event": format!("approval.{verdict}"), "approval": view(a, now_ms) }),
    };
    let mut to = targets(doc.alerts.as_ref(), &[]);
    if let Some(url) = &a.callback_url {
        to.push(Target::Webhook { url: url.clone() });
    }
    drop(state.notifier.dispatch(to, n));
}

// --- readers ---

/// Who may read: an admin reads all; an approver the approvals of projects listing them; the
/// filter all; an agent (no bearer, `x-pag0-api-key`) only its own client's.
pub(crate) enum Reader {
    All,
    ApproverOf(String),
    Client(String),
}

pub(crate) fn may_read(r: &Reader, doc: Option<&PolicyDocument>, a: &Approval) -> bool {
    match r {
        Reader::All => true,
        Reader::ApproverOf(email) => doc.is_some_and(|d| {
            approvers(d, &a.project_id)
                .iter()
                .any(|x| same_email(x, email))
        }),
        Reader::Client(id) => *id == a.client_id,
    }
}
