//! The approval workflow (SPEC §5, §7; docs/approvals.md).
//!
//! - The filter (sync secret) creates an approval for a request the policy holds back
//!   (`POST /v1/approvals`), answers the agent `202` with the id, and later asks to use it for
//!   the replay (`POST /v1/approvals/{id}/consume`): exactly one replay of an approved,
//!   unexpired, matching approval gets `200`; anything else gets `403` with the SPEC code.
//! - Approvers (approver tokens bound to an e-mail) listed on the project in the CURRENT policy,
//!   never the requester, approve or deny (`POST /v1/approvals/{id}/approve|deny`).
//! - Admins and approvers list and read; the agent polls its own approval with its API key.
//! - Approvers are notified of a new request, the requester's callback of the decision
//!   (crate::notify), without ever blocking the API call.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pag0_policy::doc::{PolicyDocument, Project};
use pag0_policy::Micros;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{self, Filter, Principal, Role};
use crate::clock::rfc3339;
use crate::error::AppError;
use crate::notify::{targets, Notification, Target};
use crate::store::{
    Approval, ApprovalDecision, ApprovalStatus, ConsumeAsk, ConsumeOutcome, Refusal,
};
use crate::AppState;

/// `approvalWorkflow.expiresAfter` when the project does not set it: one day.
pub const DEFAULT_EXPIRES_AFTER_SECS: u64 = 86_400;
const MAX_TEXT: usize = 2_000;
const MAX_URL: usize = 2_048;
const MAX_LIST: u32 = 1_000;

// --- what the filter sends ---

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateApproval {
    pub project_id: String,
    pub client_id: String,
    pub method: String,
    pub authority: String,
    /// With the query string, as sent.
    pub path: String,
    /// `pag0_policy::approval::body_sha256_hex(body)`.
    pub body_sha256: String,
    /// `pag0_policy::approval::request_binding(client_id, head, body)`.
    pub binding: String,
    pub estimated_cost: Micros,
    pub policy_version: i64,
    #[serde(default)]
    pub justification: Option<String>,
    #[serde(default)]
    pub requested_by: Option<String>,
    /// The agent's `x-pag0-callback-url`: the decision is POSTed there.
    #[serde(default)]
    pub callback_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Consume {
    pub binding: String,
    pub estimated_cost: Micros,
    pub policy_version: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionBody {
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

// --- the JSON an approval is shown as ---

/// The SPEC §5 202 body fields (`approvalId, status, projectId, estimatedCost, expiresAt`)
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

fn same_email(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

async fn document(state: &AppState) -> Result<(PolicyDocument, i64), AppError> {
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

fn may_decide(doc: &PolicyDocument, a: &Approval, email: &str) -> Result<(), AppError> {
    if !approvers(doc, &a.project_id)
        .iter()
        .any(|x| same_email(x, email))
    {
        return Err(AppError::Forbidden(
            "only an approver listed on the approval's project may decide it",
        ));
    }
    if a.requested_by
        .as_deref()
        .is_some_and(|r| same_email(r, email))
    {
        return Err(AppError::Forbidden(
            "the requester may not decide their own request",
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

fn parse<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    crate::routes::parse_json(bytes)
}

// --- filter: create and consume ---

pub async fn create(
    _: Filter,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, AppError> {
    let req: CreateApproval = crate::routes::parse_json(&body)?;
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
    check(req.policy_version >= 1, "policyVersion: ≥ 1");
    check(
        req.justification
            .as_ref()
            .is_none_or(|s| s.chars().count() <= MAX_TEXT),
        "justification: at most 2000 characters",
    );
    check(
        req.requested_by
            .as_ref()
            .is_none_or(|s| s.chars().count() <= 256),
        "requestedBy: at most 256 characters",
    );
    check(
        req.callback_url.as_ref().is_none_or(|u| {
            u.len() <= MAX_URL && (u.starts_with("http://") || u.starts_with("https://"))
        }),
        "callbackUrl: an http:// or https:// URL of at most 2048 characters",
    );
    let (doc, _) = document(&state).await?;
    let Some(proj) = project(&doc, &req.project_id) else {
        errs.push(format!(
            "projectId: no project {:?} in the current policy",
            req.project_id
        ));
        return Err(AppError::BadRequest {
            code: "BAD_APPROVAL",
            message: "the approval request does not validate".into(),
            details: errs,
        });
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
        return Err(AppError::BadRequest {
            code: "BAD_APPROVAL",
            message: "the approval request does not validate".into(),
            details: errs,
        });
    }
    let workflow = proj.policy.approval_workflow.as_ref();
    let expires_after_ms = workflow
        .and_then(|w| w.expires_after)
        .unwrap_or(DEFAULT_EXPIRES_AFTER_SECS)
        .saturating_mul(1_000);
    let now = state.clock.now_ms();
    let a = Approval {
        id: new_id(),
        project_id: req.project_id,
        client_id: req.client_id,
        method: req.method.to_ascii_uppercase(),
        authority: req.authority,
        path: req.path,
        body_sha256: req.body_sha256,
        binding: req.binding,
        estimated_cost: req.estimated_cost.get(),
        policy_version: req.policy_version,
        status: ApprovalStatus::Pending,
        justification: req.justification.filter(|s| !s.is_empty()),
        requested_by: req.requested_by.filter(|s| !s.is_empty()),
        callback_url: req.callback_url.filter(|s| !s.is_empty()),
        created_at_ms: now,
        expires_at_ms: now.saturating_add(i64::try_from(expires_after_ms).unwrap_or(i64::MAX)),
        decided_by: None,
        decision_comment: None,
        decided_at_ms: None,
        used_at_ms: None,
    };
    state.store.create_approval(a.clone()).await?;
    state
        .metrics
        .approvals
        .with_label_values(&["created"])
        .inc();
    refresh_pending(&state).await;

    let people = approvers(&doc, &a.project_id);
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
             Deny:    pag0-sidecar approvals deny {} [--comment …]\n",
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
            a.id
        ),
        payload: json!({ "event": "approval.requested", "approval": view(&a, now) }),
    };
    // Detached: the answer does not wait for (or fail with) the delivery.
    drop(
        state
            .notifier
            .dispatch(targets(doc.alerts.as_ref(), &people), n),
    );

    Ok((StatusCode::CREATED, Json(view(&a, now))).into_response())
}

/// A refused replay: 403 with the SPEC §5 code the filter answers the agent with.
fn refused(r: Refusal, a: Option<&Approval>) -> Response {
    let (code, message) = match r {
        Refusal::Unknown => ("APPROVAL_MISMATCH", "no approval with this id".to_string()),
        Refusal::Mismatch(why) => (
            "APPROVAL_MISMATCH",
            format!("this approval is for another request: {why}"),
        ),
        Refusal::Used => (
            "APPROVAL_USED",
            "this approval was already used by a replay".into(),
        ),
        Refusal::Denied => ("APPROVAL_DENIED", "an approver denied this request".into()),
        Refusal::Expired => (
            "APPROVAL_EXPIRED",
            "this approval expired; send the request again to ask anew".into(),
        ),
        Refusal::Pending => (
            "APPROVAL_PENDING",
            "no approver has decided yet; poll GET /v1/approvals/{id}".into(),
        ),
    };
    let body = json!({ "error": {
        "code": code,
        "message": message,
        "details": [],
        "projectId": a.map(|a| a.project_id.clone()),
    } });
    (StatusCode::FORBIDDEN, Json(body)).into_response()
}

pub async fn consume(
    _: Filter,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    let req: Consume = crate::routes::parse_json(&body)?;
    let now = state.clock.now_ms();
    let out = state
        .store
        .consume_approval(ConsumeAsk {
            id,
            binding: req.binding,
            estimated_cost: req.estimated_cost.get(),
            policy_version: req.policy_version,
            now_ms: now,
        })
        .await?;
    match out {
        ConsumeOutcome::Consumed(a) => {
            state
                .metrics
                .approvals
                .with_label_values(&["consumed"])
                .inc();
            Ok((StatusCode::OK, Json(view(&a, now))).into_response())
        }
        ConsumeOutcome::Refused(r, a) => {
            state
                .metrics
                .approvals
                .with_label_values(&["refused"])
                .inc();
            Ok(refused(r, a.as_ref()))
        }
    }
}

// --- approvers: decide ---

fn approver(headers: &HeaderMap, state: &AppState) -> Result<String, AppError> {
    let p = auth::principal_from(headers, state)?;
    match p.role {
        Role::Approver { email } => Ok(email),
        Role::Admin => Err(AppError::Forbidden(
            "deciding needs an approver token (--approver-token EMAIL=TOKEN)",
        )),
        Role::Filter => Err(AppError::Forbidden(
            "the filter's sync secret may not decide approvals",
        )),
    }
}

async fn decide(
    state: AppState,
    headers: HeaderMap,
    id: String,
    body: Bytes,
    approve: bool,
) -> Result<Response, AppError> {
    let email = approver(&headers, &state)?;
    let req: DecisionBody = parse(&body)?;
    if req
        .comment
        .as_ref()
        .is_some_and(|c| c.chars().count() > MAX_TEXT)
    {
        return Err(AppError::bad_request(
            "BAD_JSON",
            "comment: at most 2000 characters",
        ));
    }
    let not_found = || AppError::NotFound(format!("no approval {id:?}"));
    let a = state
        .store
        .approval(id.clone())
        .await?
        .ok_or_else(not_found)?;
    let (doc, _) = document(&state).await?;
    may_decide(&doc, &a, &email)?;
    let now = state.clock.now_ms();
    let decided = state
        .store
        .decide_approval(ApprovalDecision {
            id: id.clone(),
            approve,
            by: email,
            comment: req.comment.filter(|c| !c.is_empty()),
            at_ms: now,
        })
        .await?;
    let Some(a) = decided else {
        let a = state
            .store
            .approval(id.clone())
            .await?
            .ok_or_else(not_found)?;
        return Err(match a.status {
            ApprovalStatus::Pending | ApprovalStatus::Approved if a.is_expired(now) => {
                AppError::Conflict {
                    code: "APPROVAL_EXPIRED",
                    message: format!("approval {id} expired at {}", rfc3339(a.expires_at_ms)),
                }
            }
            s => AppError::Conflict {
                code: "ALREADY_DECIDED",
                message: format!("approval {id} is {} already", s.as_str()),
            },
        });
    };
    state
        .metrics
        .approvals
        .with_label_values(&[if approve { "approved" } else { "denied" }])
        .inc();
    let secs = (now.saturating_sub(a.created_at_ms)).max(0) as f64 / 1000.0;
    state.metrics.approval_decision_seconds.observe(secs);
    refresh_pending(&state).await;

    let verdict = if approve { "approved" } else { "denied" };
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
        payload: json!({ "event": format!("approval.{verdict}"), "approval": view(&a, now) }),
    };
    // Slack/webhook of the policy's alerts (no e-mail: the approvers know), and the requester.
    let mut to = targets(doc.alerts.as_ref(), &[]);
    if let Some(url) = &a.callback_url {
        to.push(Target::Webhook { url: url.clone() });
    }
    drop(state.notifier.dispatch(to, n));

    Ok((StatusCode::OK, Json(view(&a, now))).into_response())
}

pub async fn approve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    decide(state, headers, id, body, true).await
}

pub async fn deny(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    decide(state, headers, id, body, false).await
}

// --- readers ---

/// Who may read: an admin reads all; an approver the approvals of projects listing them; the
/// filter all; an agent (no bearer, `x-pag0-api-key`) only its own client's.
enum Reader {
    All,
    ApproverOf(String),
    Client(String),
}

fn reader(
    headers: &HeaderMap,
    state: &AppState,
    doc: Option<&PolicyDocument>,
) -> Result<Reader, AppError> {
    if headers.contains_key(axum::http::header::AUTHORIZATION) {
        let Principal { role, .. } = auth::principal_from(headers, state)?;
        return Ok(match role {
            Role::Admin | Role::Filter => Reader::All,
            Role::Approver { email } => Reader::ApproverOf(email),
        });
    }
    let key = headers
        .get("x-pag0-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .ok_or(AppError::Unauthorized)?;
    let hash = pag0_policy::validate::api_key_sha256_hex(key);
    doc.and_then(|d| {
        d.clients
            .iter()
            .find(|c| c.api_key_sha256.eq_ignore_ascii_case(&hash))
    })
    .map(|c| Reader::Client(c.id.clone()))
    .ok_or(AppError::Unauthorized)
}

fn may_read(r: &Reader, doc: Option<&PolicyDocument>, a: &Approval) -> bool {
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

pub async fn get_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let doc = document(&state).await.ok().map(|(d, _)| d);
    let who = reader(&headers, &state, doc.as_ref())?;
    let not_found = || AppError::NotFound(format!("no approval {id:?}"));
    let a = state
        .store
        .approval(id.clone())
        .await?
        .ok_or_else(not_found)?;
    if !may_read(&who, doc.as_ref(), &a) {
        // Not 403: an id that is not yours is indistinguishable from one that does not exist.
        return Err(not_found());
    }
    Ok(Json(view(&a, state.clock.now_ms())).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(q) = query.map_err(|e| AppError::bad_request("BAD_QUERY", e.body_text()))?;
    let doc = document(&state).await.ok().map(|(d, _)| d);
    let who = reader(&headers, &state, doc.as_ref())?;
    if matches!(who, Reader::Client(_)) {
        return Err(AppError::Forbidden(
            "agents read their own approval by id only",
        ));
    }
    let stored = match q.status.as_deref() {
        None | Some("expired") => None,
        Some("pending") => Some(ApprovalStatus::Pending),
        Some("approved") => Some(ApprovalStatus::Approved),
        Some("denied") => Some(ApprovalStatus::Denied),
        Some("used") => Some(ApprovalStatus::Used),
        Some(other) => {
            return Err(AppError::bad_request(
                "BAD_QUERY",
                format!("status {other:?}: one of pending, approved, denied, used, expired"),
            ))
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_LIST);
    let now = state.clock.now_ms();
    let rows = state.store.approvals(stored, limit).await?;
    let items: Vec<Value> = rows
        .iter()
        .filter(|a| {
            q.status
                .as_deref()
                .is_none_or(|s| a.effective_status(now) == s)
        })
        .filter(|a| q.project_id.as_deref().is_none_or(|p| a.project_id == p))
        .filter(|a| may_read(&who, doc.as_ref(), a))
        .map(|a| view(a, now))
        .collect();
    refresh_pending(&state).await;
    Ok(Json(json!({ "approvals": items })).into_response())
}

#[cfg(test)]
mod tests;
