//! Prometheus metrics, one registry per `AppState` (no globals: tests run in parallel).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub sync_batches: IntCounterVec,
    pub usage_records: IntCounter,
    pub usage_micros: IntCounter,
    pub lease_granted_micros: IntCounter,
    pub policy_version: IntGauge,
    pub policy_updates: IntCounter,
    /// Approvals pending and unexpired (read from the store: right on every sidecar of a fleet).
    pub approvals_pending: IntGauge,
    /// Approval events: created, approved, denied, consumed, refused (a replay turned away).
    pub approvals: IntCounterVec,
    /// Seconds from an approval's creation to its decision.
    pub approval_decision_seconds: Histogram,
    /// Notifications by channel (email, slack, webhook) and outcome (sent, failed).
    pub notifications: IntCounterVec,
    /// Alerts raised (inserted once per fleet) by kind.
    pub alerts_raised: IntCounterVec,
    /// Alert deliveries that succeeded, by kind and channel.
    pub alerts_delivered: IntCounterVec,
    /// Alert delivery tries that failed, by kind and channel (each retry counts).
    pub alerts_failed: IntCounterVec,
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "pag0_sidecar_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        let sync_batches = IntCounterVec::new(
            Opts::new(
                "pag0_sidecar_sync_batches_total",
                "POST /v1/sync calls by outcome (applied, duplicate, empty, rejected)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(sync_batches.clone()))?;
        let policy_version = IntGauge::new(
            "pag0_sidecar_policy_version",
            "Latest policy version served",
        )?;
        registry.register(Box::new(policy_version.clone()))?;
        let approvals_pending = IntGauge::new(
            "pag0_approvals_pending",
            "Approvals waiting for a decision (unexpired)",
        )?;
        registry.register(Box::new(approvals_pending.clone()))?;
        let approvals = IntCounterVec::new(
            Opts::new(
                "pag0_approvals_total",
                "Approval events (created, approved, denied, consumed, refused)",
            ),
            &["event"],
        )?;
        registry.register(Box::new(approvals.clone()))?;
        let approval_decision_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "pag0_approvals_time_to_decision_seconds",
                "Seconds from approval request to decision",
            )
            .buckets(vec![
                10.0,
                60.0,
                300.0,
                900.0,
                3600.0,
                4.0 * 3600.0,
                12.0 * 3600.0,
                86400.0,
            ]),
        )?;
        registry.register(Box::new(approval_decision_seconds.clone()))?;
        let notifications = IntCounterVec::new(
            Opts::new(
                "pag0_notifications_total",
                "Notifications by channel and outcome (sent, failed)",
            ),
            &["channel", "outcome"],
        )?;
        registry.register(Box::new(notifications.clone()))?;
        Ok(Metrics {
            alerts_raised: counter_vec(
                &registry,
                "pag0_alerts_raised_total",
                "Alerts raised, once per fleet, by kind",
                &["kind"],
            )?,
            alerts_delivered: counter_vec(
                &registry,
                "pag0_alerts_delivered_total",
                "Alert deliveries sent, by kind and channel",
                &["kind", "channel"],
            )?,
            alerts_failed: counter_vec(
                &registry,
                "pag0_alerts_failed_total",
                "Alert delivery tries that failed, by kind and channel",
                &["kind", "channel"],
            )?,
            approvals_pending,
            approvals,
            approval_decision_seconds,
            notifications,
            http_requests,
            sync_batches,
            usage_records: counter(
                &registry,
                "pag0_sidecar_usage_records_total",
                "Usage records committed",
            )?,
            usage_micros: counter(
                &registry,
                "pag0_sidecar_usage_micros_total",
                "Settled cost committed, micro-USD (each record once, whatever its counters)",
            )?,
            lease_granted_micros: counter(
                &registry,
                "pag0_sidecar_lease_granted_micros_total",
                "Room newly handed out in lease top-ups, micro-USD",
            )?,
            policy_version,
            policy_updates: counter(
                &registry,
                "pag0_sidecar_policy_updates_total",
                "Policy versions written",
            )?,
            registry,
        })
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}
