//! Envoy `ext_authz` (HTTP service) over the same decision core: the design peers use (one
//! network call per request), kept so the load benchmark can price it against the in-proxy
//! filter. Not the product's enforcement path.
//!
//! Envoy sends the request's headers to `/v1/authz<original path>` (`path_prefix: /v1/authz`)
//! with the filter's sync secret as bearer token; 200 lets the request through, anything else
//! is returned to the agent as the deny reply (docs/policy.md#check-order-and-replies body and headers).
//!
//! Budgets are in-memory counters in this process: the estimate is reserved and never settled
//! (ext_authz does not see the response). The compiled policy is the sidecar's current
//! document, re-checked at most once per [`POLICY_REFRESH`] — the same staleness a filter has
//! with a one-second sync interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use chrono::{DateTime, Utc};
use pag0_policy::budget::try_reserve;
use pag0_policy::{
    BudgetKey, BudgetView, CompiledPolicy, Decision, Deny, DenyCode, FinishOptions, HeadOutcome,
    Micros, RequestHead,
};

use crate::auth::Filter;
use crate::{AppError, AppState};

/// The route prefix Envoy's `http_service.path_prefix` must name.
pub const PREFIX: &str = "/v1/authz";

/// How long a compiled policy is used before the store is asked for a newer version.
pub const POLICY_REFRESH: Duration = Duration::from_secs(1);

/// `/v1/authz` and `/v1/authz/{*path}`, for any method.
pub fn router() -> Router<AppState> {
    let authz = Arc::new(Authz::default());
    let handler = move |_filter: Filter,
                        State(state): State<AppState>,
                        method: Method,
                        uri: Uri,
                        headers: HeaderMap| {
        let authz = Arc::clone(&authz);
        async move { authz.check(&state, &method, &uri, &headers).await }
    };
    Router::new()
        .route(PREFIX, any(handler.clone()))
        .route(&format!("{PREFIX}/{{*path}}"), any(handler))
}

#[derive(Default)]
struct Authz {
    policy: Mutex<Option<Cached>>,
    counters: Mutex<HashMap<BudgetKey, Micros>>,
}

struct Cached {
    checked: Instant,
    version: i64,
    policy: Arc<CompiledPolicy>,
}

struct Counters<'a>(&'a HashMap<BudgetKey, Micros>);

impl BudgetView for Counters<'_> {
    fn used(&self, key: &BudgetKey) -> Micros {
        self.0.get(key).copied().unwrap_or(Micros::ZERO)
    }
}

fn poisoned<T>(_: T) -> AppError {
    AppError::Internal("authz lock poisoned".into())
}

// === impl Authz ===

impl Authz {
    async fn check(
        &self,
        state: &AppState,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Response, AppError> {
        let policy = self.policy(state).await?;
        let now = DateTime::<Utc>::from_timestamp_millis(state.clock.now_ms()).unwrap_or_default();
        let path = uri.path().strip_prefix(PREFIX).unwrap_or("/");
        let path = match (path.is_empty(), uri.query()) {
            (true, None) => "/".to_owned(),
            (true, Some(q)) => format!("/?{q}"),
            (false, None) => path.to_owned(),
            (false, Some(q)) => format!("{path}?{q}"),
        };
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let head = RequestHead {
            api_key: header("x-pag0-api-key"),
            method: method.as_str(),
            authority: header("host").unwrap_or(""),
            path: &path,
            requires_approval: header("x-pag0-requires-approval")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        };
        let pending = match policy.check_head(&head, now) {
            HeadOutcome::Deny(d) => return Ok(deny(&d)),
            HeadOutcome::Continue(p) => p,
        };
        let mut counters = self.counters.lock().map_err(poisoned)?;
        // The body is not forwarded to the check: token-priced endpoints use the defaults.
        let decision = policy.finish(
            &pending,
            None,
            &Counters(&counters),
            &FinishOptions::default(),
        );
        let allow = match decision {
            Decision::Allow(a) => a,
            Decision::Deny(d) => return Ok(deny(&d)),
            Decision::NeedsApproval(n) => return Ok(deny(&n.into_standalone_deny())),
        };
        // Admission under the lock: every counter has room, or none is touched.
        let mut next = Vec::with_capacity(allow.reservations.len());
        for r in &allow.reservations {
            let used = counters.get(&r.key).copied().unwrap_or(Micros::ZERO);
            match try_reserve(used, r.amount, r.limit) {
                Ok(n) => next.push((r.key.clone(), n)),
                Err(room) => {
                    let d = Deny {
                        code: DenyCode::BudgetExceeded,
                        message: format!(
                            "{} budget: {} limit, {} room, {} requested",
                            r.key.scope.label(),
                            r.limit,
                            room,
                            r.amount
                        ),
                        scope: Some(r.key.scope.kind()),
                        project_id: Some(allow.project_id.clone()),
                        client_id: Some(allow.client_id.clone()),
                    };
                    return Ok(deny(&d));
                }
            }
        }
        counters.extend(next);
        drop(counters);
        let mut resp = StatusCode::OK.into_response();
        let h = resp.headers_mut();
        h.insert("x-pag0-decision", HeaderValue::from_static("allow"));
        if let Ok(v) = HeaderValue::from_str(&allow.project_id) {
            h.insert("x-pag0-project", v);
        }
        if let Ok(v) = HeaderValue::from_str(&allow.estimate.to_string()) {
            h.insert("x-pag0-estimated-cost", v);
        }
        Ok(resp)
    }

    /// The compiled current policy; the store is asked again after [`POLICY_REFRESH`].
    async fn policy(&self, state: &AppState) -> Result<Arc<CompiledPolicy>, AppError> {
        let stale_version = {
            let slot = self.policy.lock().map_err(poisoned)?;
            match slot.as_ref() {
                Some(c) if c.checked.elapsed() < POLICY_REFRESH => {
                    return Ok(Arc::clone(&c.policy))
                }
                Some(c) => Some(c.version),
                None => None,
            }
        };
        let current = state.current_policy().await?.ok_or_else(|| {
            AppError::NotFound("no policy stored yet: PUT /v1/policy first".into())
        })?;
        let mut slot = self.policy.lock().map_err(poisoned)?;
        if stale_version == Some(current.meta.version) {
            if let Some(c) = slot.as_mut() {
                c.checked = Instant::now();
                return Ok(Arc::clone(&c.policy));
            }
        }
        let compiled = CompiledPolicy::from_value(&current.value)
            .map_err(|e| AppError::Internal(format!("stored policy does not compile: {e:?}")))?;
        let compiled = Arc::new(compiled);
        *slot = Some(Cached {
            checked: Instant::now(),
            version: current.meta.version,
            policy: Arc::clone(&compiled),
        });
        Ok(compiled)
    }
}

fn deny(d: &Deny) -> Response {
    let status = u16::try_from(d.code.status())
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::FORBIDDEN);
    let mut resp = (status, d.to_json()).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-pag0-decision", HeaderValue::from_static("deny"));
    h.insert("x-pag0-code", HeaderValue::from_static(d.code.as_str()));
    resp
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use crate::{app, AppState, Config, ManualClock, SqliteStore, Tokens};

    const ADMIN: &str = "authz-admin-token-0001";
    const SYNC: &str = "authz-sync-secret-0002";

    fn policy() -> Value {
        json!({
            "orgId": "acme-corp",
            "timezone": "UTC",
            "globalPolicy": { "monthlyBudget": "1000" },
            "endpoints": [ { "host": "api.deepl.com", "category": "translation", "pricing": { "perRequest": "400" } } ],
            "projects": [ { "id": "ops", "name": "Ops", "policy": { "monthlyBudget": "1000" } } ],
            "clients": [ { "id": "bot", "projectId": "ops",
                           "apiKeySha256": pag0_policy::validate::api_key_sha256_hex("key-1") } ]
        })
    }

    async fn check(
        app: &axum::Router,
        token: Option<&str>,
        key: Option<&str>,
    ) -> (StatusCode, Option<String>) {
        let mut b =
            Request::get("/v1/authz/v2/translate?x=1").header(header::HOST, "api.deepl.com");
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(k) = key {
            b = b.header("x-pag0-api-key", k);
        }
        let resp = app
            .clone()
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let code = resp
            .headers()
            .get("x-pag0-code")
            .map(|v| v.to_str().unwrap().to_owned());
        (resp.status(), code)
    }

    /// The app over a fresh store, `/v1/authz/*` served or not (`--bench-ext-authz`).
    fn app_with(dir: &std::path::Path, ext_authz: bool) -> axum::Router {
        let mut tokens = Tokens::default();
        tokens.add_admin_spec(&format!("admin={ADMIN}")).unwrap();
        tokens.add_sync_secret(SYNC).unwrap();
        let state = AppState::new(Arc::new(SqliteStore::open_dir(dir).unwrap()), tokens)
            .unwrap()
            .with_clock(Arc::new(ManualClock::new(1_764_000_000_000)))
            .with_config(Config {
                ext_authz,
                ..Config::default()
            });
        app(state)
    }

    async fn put_policy(app: &axum::Router) {
        let put = Request::put("/v1/policy")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(policy().to_string()))
            .unwrap();
        assert!(app
            .clone()
            .oneshot(put)
            .await
            .unwrap()
            .status()
            .is_success());
    }

    #[tokio::test]
    async fn the_route_is_absent_unless_the_benchmark_asks_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with(dir.path(), false);
        put_policy(&app).await;
        // Even with the filter's secret and a known key: the route is not there.
        assert_eq!(
            check(&app, Some(SYNC), Some("key-1")).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(check(&app, None, None).await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn decides_like_the_filter_and_reserves_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with(dir.path(), true);
        put_policy(&app).await;

        // Only the filter's secret may ask.
        assert_eq!(
            check(&app, None, Some("key-1")).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            check(&app, Some(ADMIN), Some("key-1")).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            check(&app, Some(SYNC), Some("nope")).await,
            (StatusCode::UNAUTHORIZED, Some("UNKNOWN_API_KEY".into()))
        );
        // 1000 budget, 400 per request: two pass, the third is refused.
        assert_eq!(
            check(&app, Some(SYNC), Some("key-1")).await,
            (StatusCode::OK, None)
        );
        assert_eq!(
            check(&app, Some(SYNC), Some("key-1")).await,
            (StatusCode::OK, None)
        );
        assert_eq!(
            check(&app, Some(SYNC), Some("key-1")).await,
            (StatusCode::PAYMENT_REQUIRED, Some("BUDGET_EXCEEDED".into()))
        );
    }
}
