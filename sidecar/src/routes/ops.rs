//! Operations: `/metrics`, `/healthz`, `/readyz`, `/v1/openapi.json`, request accounting and
//! the JSON 404.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::error::{AppError, Logged};
use crate::AppState;

/// docs/sidecar.md: "anyone on loopback". Peers elsewhere get 403 unless `--public-ops`.
/// (Requests without a peer address — in-process tests — count as local.)
pub async fn loopback_only(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match peer {
        Some(addr) if !addr.ip().is_loopback() && !state.config.public_ops => {
            AppError::Forbidden("operations endpoints answer loopback only (see --public-ops)")
                .into_response()
        }
        _ => next.run(req).await,
    }
}

/// Counts requests by matched route (never by raw path: ids would explode the label set) and
/// logs one line per request: failures (5xx, with their cause) as errors, refusals (4xx, with
/// their code) as info, the rest as debug.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    state
        .metrics
        .http_requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let logged = resp.extensions().get::<Logged>();
    let code = logged.map(|l| l.code);
    let cause = logged.and_then(|l| l.internal.as_deref());
    let status = status.as_u16();
    if status >= 500 {
        tracing::error!(
            method,
            route,
            status,
            code,
            cause,
            latency_ms,
            "request failed"
        );
    } else if status >= 400 {
        tracing::info!(method, route, status, code, latency_ms, "request refused");
    } else {
        tracing::debug!(method, route, status, latency_ms, "request");
    }
    resp
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, AppError> {
    // Refresh the gauge from the store so it is right on every sidecar of a fleet.
    if let Ok(v) = state.store.latest_policy_version().await {
        state.metrics.policy_version.set(v);
    }
    crate::approvals::refresh_pending(&state).await;
    let text = state
        .metrics
        .render()
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => {
            Json(json!({ "status": "ready", "store": state.store.backend() })).into_response()
        }
        Err(e) => {
            tracing::warn!(store = state.store.backend(), error = %e, "readyz: store not reachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "store": state.store.backend() })),
            )
                .into_response()
        }
    }
}

pub async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

pub async fn not_found() -> AppError {
    AppError::NotFound("no such route; see /v1/openapi.json".into())
}

#[cfg(test)]
mod tests;
