//! `/v1/approvals…`: the HTTP side of the approval workflow (crate::approvals).
//!
//! - Filter (sync secret): `POST /v1/approvals` creates, `POST /v1/approvals/{id}/consume` asks
//!   to use an approval for the replay (`200` once, else `403` with the code the filter answers
//!   the agent with).
//! - Approvers: `POST /v1/approvals/{id}/approve|deny`.
//! - Admins, approvers and the filter list and read; an agent reads its own approval by id with
//!   its API key (`x-pag0-api-key`).

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pag0_policy::doc::PolicyDocument;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::approvals::{
    self, document, may_decide, may_read, refresh_pending, view, Consume, CreateApproval, Reader,
    MAX_LIST, MAX_TEXT,
};
use crate::auth::{self, Filter, Principal, Role};
use crate::clock::rfc3339;
use crate::error::AppError;
use crate::store::{
    Approval, ApprovalDecision, ApprovalStatus, ConsumeAsk, ConsumeOutcome, Refusal,
};
use crate::AppState;

/// Written by a person: an unknown field (a misspelt `comment`) is refused, not dropped.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecisionBody {
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// An empty body is the default (a decision without a comment).
fn parse<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    super::parse_json(bytes)
}

// --- filter: create and consume ---

pub async fn create(
    _: Filter,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, AppError> {
    let req: CreateApproval = super::parse_json(&body)?;
    let (doc, _) = document(&state).await?;
    let now = state.clock.now_ms();
    let a = approvals::new_approval(req, &doc, now)?;
    state.store.create_approval(a.clone()).await?;
    state
        .metrics
        .approvals
        .with_label_values(&["created"])
        .inc();
    refresh_pending(&state).await;
    approvals::notify_requested(&state, &doc, &a, now);
    crate::alerts::on_approval(&state, &doc, &a).await;
    Ok((StatusCode::CREATED, Json(view(&a, now))).into_response())
}

/// A refused replay: 403 with the docs/approvals.md code the filter answers the agent with.
fn refused(r: Refusal, a: Option<&Approval>) -> Response {
    use pag0_wire::Refusal as Code;
    let (code, message) = match r {
        Refusal::Unknown => (Code::Mismatch, "no approval with this id".to_string()),
        Refusal::Mismatch(why) => (
            Code::Mismatch,
            format!("this approval is for another request: {why}"),
        ),
        Refusal::Used => (
            Code::Used,
            "this approval was already used by a replay".into(),
        ),
        Refusal::Denied => (Code::Denied, "an approver denied this request".into()),
        Refusal::Expired => (
            Code::Expired,
            "this approval expired; send the request again to ask anew".into(),
        ),
        Refusal::Pending => (
            Code::Pending,
            "no approver has decided yet; poll GET /v1/approvals/{id}".into(),
        ),
    };
    let body = pag0_wire::RefusalBody {
        error: pag0_wire::RefusalError {
            code,
            message,
            details: Vec::new(),
            project_id: a.map(|a| a.project_id.clone()),
        },
    };
    (StatusCode::FORBIDDEN, Json(body)).into_response()
}

pub async fn consume(
    _: Filter,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    let req: Consume = super::parse_json(&body)?;
    let now = state.clock.now_ms();
    let out = state
        .store
        .consume_approval(ConsumeAsk {
            id,
            binding: req.binding,
            estimated_cost: req.estimated_cost.get(),
            policy_version: i64::try_from(req.policy_version)
                .map_err(|_| AppError::bad_request("BAD_JSON", "policyVersion: below 2^63"))?,
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

    approvals::notify_decided(&state, &doc, &a, approve, now);

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

fn reader(
    headers: &HeaderMap,
    state: &AppState,
    doc: Option<&PolicyDocument>,
) -> Result<Reader, AppError> {
    if headers.contains_key(axum::http::header::AUTHORIZATION)
        || crate::console::session::cookie(headers).is_some()
    {
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
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(AppError::bad_request(
            "BAD_QUERY",
            format!("limit {limit}: between 1 and {MAX_LIST}"),
        ));
    }
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
