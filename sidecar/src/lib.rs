//! pag0-sidecar: the control service of Pag0's managed mode.
//!
//! - Admin API (docs/sidecar.md): the policy document, versioned with who/when; projects and clients
//!   one at a time (a client's API key is returned once, only its SHA-256 is stored).
//! - `POST /v1/sync` for the Envoy filter: usage batches in, exactly once; policy and budget
//!   leases out (docs/sync-protocol.md).
//! - `GET /v1/analytics`: cost, requests, cache hits and savings per project, cost centre or
//!   endpoint over the current day/month, from the usage ledger.
//! - The approval workflow (`/v1/approvals…`, docs/approvals.md) and its notifications.
//! - Anomaly detection over the ledger every `--anomaly-interval-ms` (crate::anomaly,
//!   docs/anomalies.md); `GET /v1/anomalies`.
//! - `GET /v1/reports`, `POST /v1/reports/send`: the EU AI Act compliance report (crate::report).
//! - `/metrics`, `/healthz`, `/readyz`, `/v1/openapi.json`.
//! - The Organization Console at `/console` (crate::console): session sign-in over the same
//!   `/v1` handlers.
//!
//! [`app`] builds the router over an [`AppState`]; the binary only parses flags, opens the
//! store and serves it.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::RwLock;

pub mod alerts;
pub mod anomaly;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod cli;
pub mod clock;
pub mod console;
pub mod document;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod openapi;
pub mod report;
mod routes;
pub mod store;

pub use auth::{Principal, Role, Tokens};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::AppError;
pub use store::{PgStore, SqliteStore, Store};

/// Tunables with defaults that suit one sync per second.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a lease stays valid without being renewed by a sync.
    pub lease_ttl_ms: i64,
    /// Serve `/metrics`, `/healthz`, `/readyz` to non-loopback peers too.
    pub public_ops: bool,
    /// Most usage records one sync may carry.
    pub max_batch: usize,
    /// Where people reach this sidecar (`--public-url`): notifications link to the console
    /// there, and an `https://` URL makes the session cookie `Secure`.
    pub public_url: Option<String>,
    /// `--audit-retention-days`: the retention when the policy names none.
    pub audit_retention_days: Option<u64>,
    /// `--bench-ext-authz`: serve `/v1/authz/*`, Envoy `ext_authz` over the decision core
    /// ([`authz`]). Only the load benchmark's comparison wants it; off, the route is not there
    /// (404), since its in-memory budgets are not the product's.
    pub ext_authz: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lease_ttl_ms: 30_000,
            public_ops: false,
            max_batch: 10_000,
            public_url: None,
            audit_retention_days: None,
            ext_authz: false,
        }
    }
}

/// The latest policy, parsed once per version.
#[derive(Debug)]
pub struct CurrentPolicy {
    pub meta: store::PolicyMeta,
    pub value: serde_json::Value,
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub tokens: Arc<Tokens>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<metrics::Metrics>,
    pub config: Arc<Config>,
    /// E-mail / Slack / webhook sender (approvals now, alerts later).
    pub notifier: notify::Notifier,
    /// Console sign-ins (in this process).
    pub sessions: console::Sessions,
    /// Woken when a request raised an alert, so the delivery worker runs now.
    pub alert_wake: alerts::Wake,
    policy: Arc<RwLock<Option<Arc<CurrentPolicy>>>>,
}

// === impl AppState ===

impl AppState {
    pub fn new(store: Arc<dyn Store>, tokens: Tokens) -> Result<Self, prometheus::Error> {
        let metrics = Arc::new(metrics::Metrics::new()?);
        Ok(AppState {
            store,
            tokens: Arc::new(tokens),
            clock: Arc::new(SystemClock),
            notifier: notify::Notifier::new(None).with_counter(metrics.notifications.clone()),
            metrics,
            config: Arc::new(Config::default()),
            sessions: console::Sessions::default(),
            alert_wake: alerts::Wake::default(),
            policy: Arc::new(RwLock::new(None)),
        })
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Notifications go through `notifier` (counted in this state's metrics).
    pub fn with_notifier(mut self, notifier: notify::Notifier) -> Self {
        self.notifier = notifier.with_counter(self.metrics.notifications.clone());
        self
    }

    pub fn with_config(mut self, config: Config) -> Self {
        self.config = Arc::new(config);
        self
    }

    /// The latest policy: one cheap `MAX(version)` query, the document is re-read only when
    /// another writer (this sidecar or another one on the same database) added a version.
    pub async fn current_policy(&self) -> Result<Option<Arc<CurrentPolicy>>, AppError> {
        let latest = self.store.latest_policy_version().await?;
        if latest == 0 {
            return Ok(None);
        }
        if let Some(p) = self
            .policy
            .read()
            .await
            .as_ref()
            .filter(|p| p.meta.version == latest)
        {
            return Ok(Some(Arc::clone(p)));
        }
        let Some(stored) = self.store.latest_policy().await? else {
            return Ok(None);
        };
        let value = serde_json::from_str(&stored.document).map_err(|e| {
            AppError::Internal(format!(
                "stored policy {} is not JSON: {e}",
                stored.meta.version
            ))
        })?;
        let current = Arc::new(CurrentPolicy {
            meta: stored.meta,
            value,
        });
        self.metrics.policy_version.set(current.meta.version);
        let mut slot = self.policy.write().await;
        if slot
            .as_ref()
            .is_none_or(|p| p.meta.version < current.meta.version)
        {
            *slot = Some(Arc::clone(&current));
        }
        Ok(Some(current))
    }
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    use routes::{
        alerts, analytics, anomalies, approvals, audit, budgets, items, ops, policy, reports, sync,
    };

    let ops_routes = Router::new()
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::loopback_only,
        ));

    Router::new()
        .route(
            "/v1/policy",
            get(policy::get_policy).put(policy::put_policy),
        )
        .route("/v1/policy/versions", get(policy::list_versions))
        .route("/v1/policy/versions/{version}", get(policy::get_version))
        .route(
            "/v1/projects",
            get(items::list_projects).post(items::create_project),
        )
        .route(
            "/v1/projects/{id}",
            get(items::get_project)
                .patch(items::patch_project)
                .delete(items::delete_project),
        )
        .route(
            "/v1/clients",
            get(items::list_clients).post(items::create_client),
        )
        .route(
            "/v1/clients/{id}",
            get(items::get_client)
                .patch(items::patch_client)
                .delete(items::delete_client),
        )
        .route(
            "/v1/clients/{id}/rotate-key",
            post(items::rotate_client_key),
        )
        .route("/v1/sync", post(sync::sync))
        .route("/v1/usage/exceptions", get(sync::exceptions))
        .route("/v1/budgets", get(budgets::list))
        .route("/v1/analytics", get(analytics::get))
        .route("/v1/anomalies", get(anomalies::list))
        .route("/v1/alerts", get(alerts::list))
        .route(
            "/v1/approvals",
            get(approvals::list).post(approvals::create),
        )
        .route("/v1/approvals/{id}", get(approvals::get_one))
        .route("/v1/approvals/{id}/approve", post(approvals::approve))
        .route("/v1/approvals/{id}/deny", post(approvals::deny))
        .route("/v1/approvals/{id}/consume", post(approvals::consume))
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/head", get(audit::head))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/reports", get(reports::get))
        .route("/v1/reports/send", post(reports::send))
        .route("/v1/openapi.json", get(ops::openapi))
        .merge(ops_routes)
        .merge(if state.config.ext_authz {
            authz::router()
        } else {
            Router::new()
        })
        .merge(console::router())
        .route_layer(axum::middleware::from_fn(routes::refuse_nul_in_uri))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            console::session::csrf_guard,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::track,
        ))
        .fallback(ops::not_found)
        .layer(DefaultBodyLimit::max(8 * 1024 * 1024))
        .with_state(state)
}

#[cfg(test)]
mod testing;
