//! Explainable anomaly detection over the usage ledger (docs/anomalies.md): the pure detector
//! (`detect`) and the sidecar's periodic task that feeds it from the store and stores what it
//! finds.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::store::{Anomaly, Store, StoreError};

pub mod detect;

pub use detect::{detect, Input, Params, HOUR_MS};

/// What the periodic task looks at.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// How often detection runs.
    pub interval_ms: u64,
    /// History the baselines learn from.
    pub lookback_days: u32,
    /// Anomalies are reported for the completed hours of this last stretch (re-running over
    /// them stores nothing twice).
    pub report_hours: u32,
    pub params: Params,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            interval_ms: 300_000,
            lookback_days: 30,
            report_hours: 24,
            params: Params::default(),
        }
    }
}

/// One detection pass over the completed hours before `now_ms`; returns the anomalies that were
/// new (stored by this pass).
pub async fn run_once(
    store: &dyn Store,
    now_ms: i64,
    schedule: &Schedule,
) -> Result<Vec<Anomaly>, StoreError> {
    let to_ms = now_ms - now_ms.rem_euclid(HOUR_MS);
    let from_ms = to_ms - i64::from(schedule.lookback_days) * 24 * HOUR_MS;
    let report_from_ms = to_ms - i64::from(schedule.report_hours) * HOUR_MS;
    let rows = store.usage_hourly(from_ms, to_ms).await?;
    let found = detect(
        &Input {
            rows: &rows,
            from_ms,
            to_ms,
            report_from_ms,
            now_ms,
        },
        &schedule.params,
    );
    if found.is_empty() {
        return Ok(Vec::new());
    }
    store.put_anomalies(found).await
}

/// Runs `run_once` every `interval_ms` until the process ends; a failed pass is logged and
/// retried at the next tick (nothing is lost: the next pass covers the same hours).
pub fn spawn(store: Arc<dyn Store>, clock: Arc<dyn Clock>, schedule: Schedule) {
    if schedule.interval_ms == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(schedule.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match run_once(store.as_ref(), clock.now_ms(), &schedule).await {
                Ok(new) if new.is_empty() => tracing::debug!("anomaly detection: nothing new"),
                Ok(new) => {
                    for a in &new {
                        tracing::info!(kind = a.kind.as_str(), project = %a.project_id, "anomaly: {}", a.explanation);
                    }
                }
                Err(e) => tracing::warn!("anomaly detection failed: {e}"),
            }
        }
    });
}
