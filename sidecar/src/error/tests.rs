//! A store that is down: 503 everywhere it is needed, and nothing of its internals in the
//! answer.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::testing::{policy, tokens, usage, Harness, ALICE, ORG_MONTH};

/// A store whose backend is down, with an error text that must not reach clients.
pub(crate) struct DownStore;

fn down() -> crate::store::StoreError {
    crate::store::StoreError::Backend(
        "connection to db-internal.corp:5432 refused (table budget_counters)".into(),
    )
}

#[async_trait::async_trait]
impl crate::Store for DownStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }
    async fn ping(&self) -> Result<(), crate::store::StoreError> {
        Err(down())
    }
    async fn latest_policy_version(&self) -> Result<i64, crate::store::StoreError> {
        Err(down())
    }
    async fn latest_policy(
        &self,
    ) -> Result<Option<crate::store::PolicyVersion>, crate::store::StoreError> {
        Err(down())
    }
    async fn policy_version(
        &self,
        _: i64,
    ) -> Result<Option<crate::store::PolicyVersion>, crate::store::StoreError> {
        Err(down())
    }
    async fn policy_history(
        &self,
        _: u32,
    ) -> Result<Vec<crate::store::PolicyMeta>, crate::store::StoreError> {
        Err(down())
    }
    async fn put_policy(
        &self,
        _: crate::store::NewPolicy,
    ) -> Result<crate::store::PolicyMeta, crate::store::StoreError> {
        Err(down())
    }
    async fn sync(
        &self,
        _: crate::store::SyncWrite,
    ) -> Result<crate::store::SyncOutcome, crate::store::StoreError> {
        Err(down())
    }
    async fn counters(
        &self,
        _: i64,
    ) -> Result<Vec<crate::store::CounterState>, crate::store::StoreError> {
        Err(down())
    }
    async fn usage_exceptions(
        &self,
        _: u32,
    ) -> Result<Vec<crate::store::UsageException>, crate::store::StoreError> {
        Err(crate::store::StoreError::Backend("down".into()))
    }

    async fn usage_totals(
        &self,
        _: i64,
        _: i64,
    ) -> Result<Vec<crate::store::UsageTotals>, crate::store::StoreError> {
        Err(down())
    }
    async fn usage_buckets(
        &self,
        _: i64,
        _: i64,
        _: i64,
    ) -> Result<Vec<crate::store::UsageBucket>, crate::store::StoreError> {
        Err(down())
    }
    async fn create_approval(
        &self,
        _: crate::store::Approval,
    ) -> Result<(), crate::store::StoreError> {
        Err(down())
    }
    async fn approval(
        &self,
        _: String,
    ) -> Result<Option<crate::store::Approval>, crate::store::StoreError> {
        Err(down())
    }
    async fn approvals(
        &self,
        _: Option<crate::store::ApprovalStatus>,
        _: u32,
    ) -> Result<Vec<crate::store::Approval>, crate::store::StoreError> {
        Err(down())
    }
    async fn decide_approval(
        &self,
        _: crate::store::ApprovalDecision,
    ) -> Result<Option<crate::store::Approval>, crate::store::StoreError> {
        Err(down())
    }
    async fn consume_approval(
        &self,
        _: crate::store::ConsumeAsk,
    ) -> Result<crate::store::ConsumeOutcome, crate::store::StoreError> {
        Err(down())
    }
    async fn pending_approvals(&self, _: i64) -> Result<u64, crate::store::StoreError> {
        Err(down())
    }
    async fn audit_append(
        &self,
        _: Vec<crate::audit::AuditEvent>,
    ) -> Result<Vec<crate::audit::AuditRow>, crate::store::StoreError> {
        Err(down())
    }
    async fn audit_list(
        &self,
        _: crate::audit::AuditQuery,
    ) -> Result<Vec<crate::audit::AuditRow>, crate::store::StoreError> {
        Err(down())
    }
    async fn audit_head(&self) -> Result<crate::audit::AuditHead, crate::store::StoreError> {
        Err(down())
    }
    async fn audit_prune(
        &self,
        _: i64,
        _: crate::audit::AuditEvent,
    ) -> Result<Option<crate::audit::AuditRow>, crate::store::StoreError> {
        Err(down())
    }
    async fn audit_sweep_expired(
        &self,
        _: i64,
    ) -> Result<Vec<crate::audit::AuditRow>, crate::store::StoreError> {
        Err(down())
    }
    async fn exec_raw(&self, _: &str) -> Result<(), crate::store::StoreError> {
        Err(down())
    }
    async fn learn(
        &self,
        _: Vec<crate::store::Observation>,
        _: i64,
    ) -> Result<(), crate::store::StoreError> {
        Err(down())
    }
    async fn learned(&self) -> Result<Vec<crate::store::LearnedRow>, crate::store::StoreError> {
        Err(down())
    }
    async fn usage_hourly(
        &self,
        _: i64,
        _: i64,
    ) -> Result<Vec<crate::store::HourlyUsage>, crate::store::StoreError> {
        Err(down())
    }
    async fn put_anomalies(
        &self,
        _: Vec<crate::store::Anomaly>,
    ) -> Result<Vec<crate::store::Anomaly>, crate::store::StoreError> {
        Err(down())
    }
    async fn anomalies(
        &self,
        _: crate::store::AnomalyQuery,
    ) -> Result<Vec<crate::store::Anomaly>, crate::store::StoreError> {
        Err(down())
    }
    async fn report_decisions(
        &self,
        _: crate::store::ReportDecisionQuery,
    ) -> Result<crate::store::ReportDecisions, crate::store::StoreError> {
        Err(down())
    }

    async fn decision_stats(
        &self,
        _: i64,
        _: i64,
    ) -> Result<Vec<crate::store::DecisionStats>, crate::store::StoreError> {
        Err(down())
    }
    async fn decision_buckets(
        &self,
        _: i64,
        _: i64,
        _: i64,
    ) -> Result<Vec<crate::store::DecisionBucket>, crate::store::StoreError> {
        Err(down())
    }
    async fn anomalies_in(
        &self,
        _: i64,
        _: i64,
        _: u32,
    ) -> Result<crate::store::AnomalyRange, crate::store::StoreError> {
        Err(down())
    }
}

#[tokio::test]
async fn store_failures_are_503_without_internals() {
    let h = Harness::over(Arc::new(DownStore), tokens(), tempfile::tempdir().unwrap());
    let r = h.put_policy(ALICE, &policy()).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("STORE_UNAVAILABLE"))
    );
    let r = h
        .sync(json!({ "instanceId": "a", "seq": 1, "usage": [usage("5", &[ORG_MONTH])] }))
        .await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not acknowledged: the filter keeps the batch"
    );
    for r in [
        r,
        h.call(Method::GET, "/v1/budgets", Some(ALICE), None).await,
    ] {
        assert!(
            !r.text.contains("db-internal") && !r.text.contains("budget_counters"),
            "{}",
            r.text
        );
    }
    let r = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"))
    );
    let r = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "alive, just not ready");
}
