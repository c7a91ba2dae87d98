//! The Organization Console (docs/console.md): a web UI served by the sidecar at `/console`.
//!
//! - [`assets`]: the page, its ES modules and the what-if engine (wasm), embedded in the
//!   binary; nothing is fetched from elsewhere at run time.
//! - [`session`]: sign-in with an admin or approver token, exchanged for a session cookie;
//!   CSRF protection of state-changing session requests.
//! - The pages call the same `/v1` routes as the CLI, with the session instead of a bearer
//!   token: one authorisation path (an approver's session sees its own projects' approvals
//!   and gets `403` on admin routes, as its token would).
//!
//! Routes: `GET /console` (→ `/console/`), `GET /console/` and `GET /console/{file}`;
//! `GET /console/api/session` (who is signed in, and the CSRF token), `POST` (sign in with
//! `{"token"}`), `DELETE` (sign out). docs/console.md describes the pages.

pub mod assets;
pub mod session;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Role;
use crate::clock::rfc3339;
use crate::error::AppError;
use crate::AppState;

pub use session::Sessions;

/// `/console…` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(assets::root_redirect))
        .route("/console/", get(assets::index))
        .route(
            "/console/api/session",
            get(current).post(sign_in).delete(sign_out),
        )
        .route("/console/{*path}", get(assets::asset))
}

/// The link a notification carries to one approval in the console, when the sidecar knows
/// the URL people reach it at (`--public-url`).
pub fn approval_link(public_url: Option<&str>, approval_id: &str) -> Option<String> {
    public_url.map(|u| {
        format!(
            "{}/console/#/approvals/{approval_id}",
            u.trim_end_matches('/')
        )
    })
}

fn secure(state: &AppState) -> bool {
    state
        .config
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
}

fn session_json(s: &session::Session) -> Value {
    let (role, email) = match &s.principal.role {
        Role::Admin => ("admin", None),
        Role::Approver { email } => ("approver", Some(email.clone())),
        Role::Filter => ("filter", None),
    };
    json!({
        "name": s.principal.name,
        "role": role,
        "email": email,
        "csrfToken": s.csrf,
        "expiresAt": rfc3339(s.expires_ms()),
        "engine": assets::engine_embedded(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    token: String,
}

/// `POST /console/api/session {"token": "…"}`: an admin or approver token → a session.
/// Only JSON is accepted, so a cross-site form cannot sign a browser in to another account.
async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json_body {
        return Err(AppError::bad_request(
            "BAD_JSON",
            "sign in with content-type: application/json and {\"token\": \"…\"}",
        ));
    }
    let req: SignIn = crate::routes::parse_json(&body)?;
    let principal = state
        .tokens
        .lookup(req.token.trim())
        .cloned()
        .ok_or(AppError::Unauthorized)?;
    if principal.role == Role::Filter {
        return Err(AppError::Forbidden(
            "the filter's sync secret cannot sign in to the console",
        ));
    }
    let issued = state.sessions.create(principal, state.clock.now_ms());
    let mut resp = Json(session_json(&issued.session)).into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&issued.id, secure(&state))) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `GET /console/api/session`: who the cookie signs in, and the CSRF token the page sends
/// with every state-changing call. Same-origin only: no CORS header is ever sent, so another
/// site's script cannot read it.
async fn current(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    let s = state
        .sessions
        .touch(&headers, state.clock.now_ms())
        .ok_or(AppError::Unauthorized)?;
    let mut resp = Json(session_json(&s)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `DELETE /console/api/session` (CSRF-checked like every state-changing session call).
async fn sign_out(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    if !state.sessions.remove(&headers) {
        return Err(AppError::Unauthorized);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(secure(&state))) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// The session routes for `/v1/openapi.json`.
pub fn openapi_paths() -> Value {
    let session = json!({ "type": "object", "properties": {
        "name": { "type": "string" }, "role": { "enum": ["admin", "approver"] },
        "email": { "type": ["string", "null"] },
        "csrfToken": { "type": "string", "description": "send as x-pag0-csrf on every state-changing session request" },
        "expiresAt": { "type": "string", "format": "date-time" },
        "engine": { "type": "boolean", "description": "this build carries the what-if engine" } } });
    let err = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    json!({
        "/console": { "get": { "summary": "The organisation console (HTML; redirects to /console/)", "security": [],
            "responses": { "308": { "description": "to /console/" } } } },
        "/console/api/session": {
            "get": { "summary": "The console session of this cookie, with its CSRF token", "security": [{ "sessionCookie": [] }],
                "responses": { "200": { "description": "signed in", "content": { "application/json": { "schema": session } } },
                               "401": err("no live session"), "403": err("not used") } },
            "post": { "summary": "Sign in to the console with an admin or approver token (sets the HttpOnly, SameSite=Strict session cookie)",
                "security": [],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["token"],
                    "additionalProperties": false, "properties": { "token": { "type": "string" } } } } } },
                "responses": { "200": { "description": "signed in; Set-Cookie pag0_session", "content": { "application/json": { "schema": session } } },
                               "400": err("BAD_JSON"), "401": err("unknown token"), "403": err("the sync secret cannot sign in") } },
            "delete": { "summary": "Sign out (needs x-pag0-csrf)", "security": [{ "sessionCookie": [] }],
                "responses": { "204": { "description": "signed out; the cookie is cleared" },
                               "401": err("no live session"), "403": err("missing or wrong x-pag0-csrf") } }
        }
    })
}

#[cfg(test)]
mod tests;
