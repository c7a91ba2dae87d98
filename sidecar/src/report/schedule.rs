//! The optional monthly schedule (`--monthly-report`, docs/reports.md#the-monthly-schedule):
//! once the calendar month has turned in the org's timezone, the previous month's PDF goes to
//! the policy's `alerts.recipients`, once. The record of a send is its `report.sent` audit row
//! (`trigger: "schedule"`, `period: "YYYY-MM"`), read back on every tick, so a restart does not
//! send again; a failed delivery writes nothing and the next tick tries again.

use std::time::Duration;

use chrono::DateTime;
use serde_json::Value;

use crate::audit::AuditQuery;
use crate::error::AppError;
use crate::routes::analytics::{bounds, Period};
use crate::routes::reports::{self, ReportQuery, SENT_KIND};
use crate::AppState;

/// The actor of the audit rows the schedule writes.
pub const ACTOR: &str = "schedule";

/// A report mailed, as its audit row records it.
#[derive(Clone, Debug)]
pub struct Sent {
    pub to: Vec<String>,
    pub attachment: String,
    pub bytes: usize,
    /// `complianceStatus`.
    pub status: String,
    /// The period's label (`2025-11`, or `custom`).
    pub label: String,
}

/// What one tick did.
#[derive(Debug)]
pub enum Tick {
    /// No policy stored yet: nothing to report on.
    NoPolicy,
    /// The previous month (`label`) was already sent by the schedule.
    AlreadySent { label: String },
    /// The policy lists no `alerts.recipients`; tried again next tick.
    NoRecipients { label: String },
    /// Mailed now.
    Sent(Sent),
    /// The relay refused or was unreachable (or no relay is configured); tried again next tick.
    Failed { label: String, error: String },
}

/// The previous calendar month in the org's timezone: its label (`YYYY-MM`) and the start of
/// the current month (ms), after which its send is recorded.
fn previous_month(now_ms: i64, tz_name: &str) -> Result<(String, i64), AppError> {
    let tz = pag0_policy::period::parse_tz(tz_name)
        .ok_or_else(|| AppError::Internal(format!("stored policy has timezone {tz_name:?}")))?;
    let now = DateTime::from_timestamp_millis(now_ms)
        .ok_or_else(|| AppError::Internal("clock out of range".into()))?;
    let (this_month, _) = bounds(now, &tz, Period::Month)
        .ok_or_else(|| AppError::Internal("month out of range".into()))?;
    let start = this_month.timestamp_millis();
    let last = DateTime::from_timestamp_millis(start - 1)
        .ok_or_else(|| AppError::Internal("month out of range".into()))?;
    Ok((pag0_policy::period::month_key(last, tz), start))
}

/// Whether the schedule already recorded a send of `label` (rows since `since_ms`).
async fn already_sent(state: &AppState, label: &str, since_ms: i64) -> Result<bool, AppError> {
    let mut after_seq = 0;
    loop {
        let rows = state
            .store
            .audit_list(AuditQuery {
                after_seq,
                kind: Some(SENT_KIND.into()),
                from_ms: Some(since_ms),
                limit: 500,
                ..AuditQuery::default()
            })
            .await?;
        let full = rows.len() == 500;
        if rows.iter().any(|r| {
            r.event.details.get("trigger").and_then(Value::as_str) == Some("schedule")
                && r.event.details.get("period").and_then(Value::as_str) == Some(label)
        }) {
            return Ok(true);
        }
        match rows.last() {
            Some(r) if full => after_seq = r.seq,
            _ => return Ok(false),
        }
    }
}

/// One tick: sends the previous month's report unless the schedule already did.
pub async fn run_once(state: &AppState) -> Result<Tick, AppError> {
    let Some(policy) = state.current_policy().await? else {
        return Ok(Tick::NoPolicy);
    };
    let tz = policy
        .value
        .get("timezone")
        .and_then(Value::as_str)
        .unwrap_or("UTC")
        .to_owned();
    let (label, since_ms) = previous_month(state.clock.now_ms(), &tz)?;
    if already_sent(state, &label, since_ms).await? {
        return Ok(Tick::AlreadySent { label });
    }
    let to = reports::alert_recipients(state).await?;
    if to.is_empty() {
        return Ok(Tick::NoRecipients { label });
    }
    let q = ReportQuery {
        format: Some("pdf".into()),
        period: Some(label.clone()),
        ..ReportQuery::default()
    };
    Ok(
        match reports::mail_report(state, &q, to, ACTOR, "schedule").await? {
            Ok(sent) => Tick::Sent(sent),
            Err(e) => Tick::Failed {
                label,
                error: e.to_string(),
            },
        },
    )
}

/// Runs [`run_once`] every `every` until the process ends.
pub fn spawn(state: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_warning = String::new();
        loop {
            tick.tick().await;
            let warning = match run_once(&state).await {
                Ok(Tick::Sent(s)) => {
                    tracing::info!(period = %s.label, to = ?s.to, bytes = s.bytes,
                        status = %s.status, "monthly compliance report sent");
                    String::new()
                }
                Ok(Tick::Failed { label, error }) => {
                    format!("monthly compliance report {label} not sent, retried next tick: {error}")
                }
                Ok(Tick::NoRecipients { label }) => format!(
                    "monthly compliance report {label} not sent: the policy has no alerts.recipients"
                ),
                Ok(Tick::NoPolicy | Tick::AlreadySent { .. }) => String::new(),
                Err(e) => format!("monthly compliance report: {e}"),
            };
            // The same failure every tick is logged once, not every few minutes.
            if !warning.is_empty() && warning != last_warning {
                tracing::warn!("{warning}");
            }
            last_warning = warning;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::previous_month;

    /// 2025-12-01T00:00:00Z.
    const DEC_1: i64 = 1_764_547_200_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn the_previous_month_turns_in_the_orgs_timezone() {
        let label = |now, tz| previous_month(now, tz).unwrap().0;
        assert_eq!(label(DEC_1 - 1, "UTC"), "2025-10");
        assert_eq!(label(DEC_1, "UTC"), "2025-11");
        // Auckland is UTC+13 in November (daylight time): its December starts 13 h earlier.
        assert_eq!(label(DEC_1 - 13 * HOUR - 1, "Pacific/Auckland"), "2025-10");
        assert_eq!(label(DEC_1 - 13 * HOUR, "Pacific/Auckland"), "2025-11");
        assert_eq!(
            previous_month(DEC_1 - 13 * HOUR, "Pacific/Auckland")
                .unwrap()
                .1,
            DEC_1 - 13 * HOUR
        );
        // New York is UTC-5: still November there at midnight UTC.
        assert_eq!(label(DEC_1 + 4 * HOUR, "America/New_York"), "2025-10");
        assert_eq!(label(DEC_1 + 5 * HOUR, "America/New_York"), "2025-11");
        // January's previous month is December of the year before.
        assert_eq!(label(1_767_225_600_000, "UTC"), "2025-12");
        assert!(previous_month(DEC_1, "Mars/Olympus").is_err());
    }
}
