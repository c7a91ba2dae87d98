//! `/v1/projects[/{id}]` and `/v1/clients[/{id}]`: edit one piece of the stored document, then
//! validate the WHOLE document again (a project's budget above the org's, a client of a missing
//! project, … are refused with the same `path: reason` details as `PUT /v1/policy`), and store
//! it as a new version. Concurrent edits do not lose each other: each write names the version
//! it edited and is redone on the latest one if another writer came first.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use rand::RngCore;
use serde_json::{json, Value};

use super::parse_json;
use super::policy::VERSION_HEADER;
use crate::audit::{policy_change_summary, AuditEvent};
use crate::auth::{Admin, Principal};
use crate::document::{find, items, items_mut, merge_patch, validate_value, Collection};
use crate::error::AppError;
use crate::store::{NewPolicy, PolicyMeta, StoreError};
use crate::AppState;

const API_KEY_HASH: &str = "apiKeySha256";

fn no_policy() -> AppError {
    AppError::NotFound("no policy yet: PUT /v1/policy first".into())
}

fn not_found(c: Collection, id: &str) -> AppError {
    AppError::NotFound(format!("no {} with id {id:?}", c.noun()))
}

/// The audit entry of an edit of item `id` (`project.created`, `client.key_rotated`, …).
fn audit_event(c: Collection, verb: &str, id: &str) -> AuditEvent {
    let mut e = AuditEvent::new(&format!("{}.{verb}", c.noun()), 0);
    match c {
        Collection::Projects => e.project_id = Some(id.to_string()),
        Collection::Clients => e.client_id = Some(id.to_string()),
    }
    e
}

/// Read the latest document, apply `edit`, validate, write as the next version with its audit
/// entry (`event`: actor, time and a summary of the change filled in here; never key
/// material, only which fields changed); redo on a version conflict.
async fn edit<T>(
    state: &AppState,
    who: &Principal,
    event: AuditEvent,
    edit: impl Fn(&mut Value) -> Result<T, AppError>,
) -> Result<(T, PolicyMeta), AppError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let current = state.store.latest_policy().await?.ok_or_else(no_policy)?;
        let mut doc: Value = serde_json::from_str(&current.document)
            .map_err(|e| AppError::Internal(format!("stored policy is not JSON: {e}")))?;
        let before = doc.clone();
        let out = edit(&mut doc)?;
        let valid = validate_value(&doc)?;
        let at_ms = state.clock.now_ms();
        let mut event = event.clone().actor(who.name.clone());
        event.at_ms = at_ms;
        if event.project_id.is_none() {
            // A client's project, as the document says after (or, deleted, before) the edit.
            event.project_id = event.client_id.as_deref().and_then(|id| {
                find(&doc, Collection::Clients, id)
                    .or_else(|| find(&before, Collection::Clients, id))
                    .and_then(|c| {
                        c.get("projectId")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
            });
        }
        event.details = json!({ "changed": policy_change_summary(Some(&before), &doc) });
        let put = state
            .store
            .put_policy(NewPolicy {
                document: valid.text,
                author: who.name.clone(),
                at_ms,
                expected_version: Some(current.meta.version),
                audit: vec![event],
            })
            .await;
        match put {
            Ok(meta) => {
                state.metrics.policy_updates.inc();
                state.metrics.policy_version.set(meta.version);
                return Ok((out, meta));
            }
            Err(StoreError::VersionConflict { .. }) if attempts < 5 => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn id_of(item: &Value, c: Collection) -> Result<String, AppError> {
    if !item.is_object() {
        return Err(AppError::bad_request(
            "BAD_JSON",
            format!("a {} is a JSON object", c.noun()),
        ));
    }
    match item.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        _ => Err(AppError::InvalidPolicy(vec![format!(
            "{}.id: required, a non-empty string",
            c.noun()
        )])),
    }
}

fn position(list: &[Value], id: &str) -> Option<usize> {
    list.iter()
        .position(|v| v.get("id").and_then(Value::as_str) == Some(id))
}

async fn list(state: AppState, c: Collection) -> Result<Json<Value>, AppError> {
    let doc = state.current_policy().await?.ok_or_else(no_policy)?;
    Ok(Json(Value::Array(items(&doc.value, c))))
}

async fn get_one(state: AppState, c: Collection, id: String) -> Result<Json<Value>, AppError> {
    let doc = state.current_policy().await?.ok_or_else(no_policy)?;
    find(&doc.value, c, &id)
        .map(Json)
        .ok_or_else(|| not_found(c, &id))
}

async fn create(
    state: AppState,
    who: Principal,
    c: Collection,
    item: Value,
) -> Result<(Value, PolicyMeta), AppError> {
    let id = id_of(&item, c)?;
    edit(&state, &who, audit_event(c, "created", &id), |doc| {
        let list = items_mut(doc, c)?;
        if position(list, &id).is_some() {
            return Err(AppError::Conflict {
                code: "ALREADY_EXISTS",
                message: format!("a {} with id {id:?} exists; PATCH it instead", c.noun()),
            });
        }
        list.push(item.clone());
        Ok(item.clone())
    })
    .await
}

async fn patch(
    state: AppState,
    who: Principal,
    c: Collection,
    id: String,
    patch: Value,
) -> Result<(Value, PolicyMeta), AppError> {
    if !patch.is_object() {
        return Err(AppError::bad_request(
            "BAD_JSON",
            "a PATCH body is a JSON merge patch (an object)",
        ));
    }
    let unknown: Vec<String> = patch
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .filter(|k| !c.patch_fields().contains(&k.as_str()))
        // A client's key gets its own answer below (KEY_IMMUTABLE).
        .filter(|k| !(matches!(c, Collection::Clients) && k.as_str() == API_KEY_HASH))
        .map(|k| {
            format!(
                "{}.{k}: unknown field; expected one of: {}",
                c.noun(),
                c.patch_fields().join(", ")
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(AppError::InvalidPolicy(unknown));
    }
    if patch
        .get("id")
        .is_some_and(|v| v.as_str() != Some(id.as_str()))
    {
        return Err(AppError::bad_request(
            "ID_IMMUTABLE",
            format!("a {}'s id cannot change", c.noun()),
        ));
    }
    if matches!(c, Collection::Clients) && patch.get(API_KEY_HASH).is_some() {
        return Err(AppError::bad_request(
            "KEY_IMMUTABLE",
            "apiKeySha256 is set by the sidecar: POST /v1/clients/{id}/rotate-key for a new key",
        ));
    }
    edit(&state, &who, audit_event(c, "updated", &id), |doc| {
        let list = items_mut(doc, c)?;
        let item = position(list, &id)
            .and_then(|i| list.get_mut(i))
            .ok_or_else(|| not_found(c, &id))?;
        merge_patch(item, &patch);
        Ok(item.clone())
    })
    .await
}

async fn delete(
    state: AppState,
    who: Principal,
    c: Collection,
    id: String,
) -> Result<PolicyMeta, AppError> {
    let ((), meta) = edit(&state, &who, audit_event(c, "deleted", &id), |doc| {
        let list = items_mut(doc, c)?;
        let i = position(list, &id).ok_or_else(|| not_found(c, &id))?;
        list.remove(i);
        Ok(())
    })
    .await?;
    Ok(meta)
}

fn written(status: StatusCode, meta: &PolicyMeta, body: Value) -> impl IntoResponse {
    (
        status,
        [(VERSION_HEADER, HeaderValue::from(meta.version))],
        Json(body),
    )
}

/// A new API key: 256 random bits. Shown once; the document keeps only its SHA-256.
fn new_api_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("pag0_{}", hex::encode(bytes))
}

// --- projects ---

pub async fn list_projects(_: Admin, State(s): State<AppState>) -> Result<Json<Value>, AppError> {
    list(s, Collection::Projects).await
}

pub async fn get_project(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    get_one(s, Collection::Projects, id).await
}

pub async fn create_project(
    Admin(who): Admin,
    State(s): State<AppState>,
    body: Bytes,
) -> Result<impl IntoResponse, AppError> {
    let (item, meta) = create(s, who, Collection::Projects, parse_json(&body)?).await?;
    Ok(written(StatusCode::CREATED, &meta, item))
}

pub async fn patch_project(
    Admin(who): Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, AppError> {
    let (item, meta) = patch(s, who, Collection::Projects, id, parse_json(&body)?).await?;
    Ok(written(StatusCode::OK, &meta, item))
}

pub async fn delete_project(
    Admin(who): Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let meta = delete(s, who, Collection::Projects, id).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(VERSION_HEADER, HeaderValue::from(meta.version))],
    ))
}

// --- clients ---

pub async fn list_clients(_: Admin, State(s): State<AppState>) -> Result<Json<Value>, AppError> {
    list(s, Collection::Clients).await
}

pub async fn get_client(
    _: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    get_one(s, Collection::Clients, id).await
}

pub async fn create_client(
    Admin(who): Admin,
    State(s): State<AppState>,
    body: Bytes,
) -> Result<impl IntoResponse, AppError> {
    let mut item: Value = parse_json(&body)?;
    if item.get(API_KEY_HASH).is_some() || item.get("apiKey").is_some() {
        return Err(AppError::bad_request(
            "KEY_GENERATED_BY_SIDECAR",
            "leave out apiKey/apiKeySha256: the sidecar generates the key and returns it once",
        ));
    }
    let key = new_api_key();
    if let Some(obj) = item.as_object_mut() {
        obj.insert(
            API_KEY_HASH.into(),
            Value::String(pag0_policy::validate::api_key_sha256_hex(&key)),
        );
    }
    let (client, meta) = create(s, who, Collection::Clients, item).await?;
    Ok(written(
        StatusCode::CREATED,
        &meta,
        json!({ "client": client, "apiKey": key }),
    ))
}

pub async fn patch_client(
    Admin(who): Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, AppError> {
    let (item, meta) = patch(s, who, Collection::Clients, id, parse_json(&body)?).await?;
    Ok(written(StatusCode::OK, &meta, item))
}

pub async fn delete_client(
    Admin(who): Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let meta = delete(s, who, Collection::Clients, id).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(VERSION_HEADER, HeaderValue::from(meta.version))],
    ))
}

/// A new key for an existing client; the old one stops working at the next policy sync.
pub async fn rotate_client_key(
    Admin(who): Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let key = new_api_key();
    let hash = pag0_policy::validate::api_key_sha256_hex(&key);
    let event = audit_event(Collection::Clients, "key_rotated", &id);
    let (client, meta) = edit(&s, &who, event, |doc| {
        let list = items_mut(doc, Collection::Clients)?;
        let item = position(list, &id)
            .and_then(|i| list.get_mut(i))
            .and_then(Value::as_object_mut)
            .ok_or_else(|| not_found(Collection::Clients, &id))?;
        item.insert(API_KEY_HASH.into(), Value::String(hash.clone()));
        Ok(Value::Object(item.clone()))
    })
    .await?;
    Ok(written(
        StatusCode::OK,
        &meta,
        json!({ "client": client, "apiKey": key }),
    ))
}

#[cfg(test)]
mod tests;
