//! `GET /v1/reports?template=EU_AI_ACT_COMPLIANCE&format=json|csv|pdf&period=month|YYYY-MM`
//! or `&from=…&to=…`, and `POST /v1/reports/send` (the PDF by e-mail). Admin only. The
//! report itself is crate::report; this file reads the query, picks the period and answers.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::audit::AuditEvent;
use crate::auth::Admin;
use crate::error::AppError;
use crate::notify::{Notification, NotifyError};
use crate::report;
use crate::report::schedule::Sent;
use crate::routes::analytics::{bounds, Period};
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
    /// `month` (the current calendar month, org timezone) or `YYYY-MM`.
    #[serde(default)]
    pub period: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD` (UTC midnight); with `to`, instead of `period`.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Pdf,
}

fn bad(message: impl Into<String>) -> AppError {
    AppError::bad_request("BAD_QUERY", message)
}

pub fn parse_format(f: Option<&str>) -> Result<Format, AppError> {
    match f.unwrap_or("json") {
        "json" => Ok(Format::Json),
        "csv" => Ok(Format::Csv),
        "pdf" => Ok(Format::Pdf),
        other => Err(bad(format!(
            "format: {other:?} is not one of json, csv, pdf"
        ))),
    }
}

fn parse_instant(field: &str, s: &str) -> Result<i64, AppError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| bad(format!("{field}: {s:?} is neither RFC 3339 nor YYYY-MM-DD")))
}

/// `[from, to)` and its label, from the query, the clock and the org's timezone.
fn period(q: &ReportQuery, now_ms: i64, tz_name: &str) -> Result<(i64, i64, String), AppError> {
    match (&q.from, &q.to, &q.period) {
        (Some(from), Some(to), None) => {
            let (f, t) = (parse_instant("from", from)?, parse_instant("to", to)?);
            if f >= t {
                return Err(bad("from must be before to"));
            }
            Ok((f, t, "custom".into()))
        }
        (None, None, p) => {
            let tz = pag0_policy::period::parse_tz(tz_name).ok_or_else(|| {
                AppError::Internal(format!("stored policy has timezone {tz_name:?}"))
            })?;
            let p = p.as_deref().unwrap_or("month");
            // A time inside the month asked for; its calendar month in the org's timezone.
            let inside = if p == "month" {
                DateTime::<Utc>::from_timestamp_millis(now_ms)
            } else {
                NaiveDate::parse_from_str(&format!("{p}-15"), "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(12, 0, 0))
                    .map(|t| t.and_utc())
            }
            .ok_or_else(|| bad(format!("period: {p:?} is neither month nor YYYY-MM")))?;
            let (from, to) = bounds(inside, &tz, Period::Month)
                .ok_or_else(|| AppError::Internal("period out of range".into()))?;
            let label = pag0_policy::period::month_key(inside, tz);
            Ok((from.timestamp_millis(), to.timestamp_millis(), label))
        }
        _ => Err(bad("give period, or both from and to (not both kinds)")),
    }
}

/// The report's JSON for a query: template and period checked, inputs gathered, built.
pub async fn report_json(state: &AppState, q: &ReportQuery) -> Result<Value, AppError> {
    let template = q.template.as_deref().unwrap_or(report::TEMPLATE);
    if template != report::TEMPLATE {
        return Err(bad(format!(
            "template: {template:?} is not one of {}",
            report::TEMPLATE
        )));
    }
    let now = state.clock.now_ms();
    let policy = state.current_policy().await?;
    let tz = policy
        .as_ref()
        .and_then(|p| p.value.get("timezone"))
        .and_then(Value::as_str)
        .unwrap_or("UTC")
        .to_owned();
    let (from, to, label) = period(q, now, &tz)?;
    let inputs = report::gather(state.store.as_ref(), from, to, label, now).await?;
    report::build(&inputs)
}

/// The PDF, laid out on a blocking thread (typst is CPU-bound).
pub async fn report_pdf(report: Value) -> Result<Vec<u8>, AppError> {
    tokio::task::spawn_blocking(move || report::render::pdf(&report))
        .await
        .map_err(|e| AppError::Internal(format!("report task: {e}")))?
        .map_err(AppError::Internal)
}

// serde_json's `Value[&str]` yields `Null` for a missing key: it cannot panic.
#[allow(clippy::indexing_slicing)]
fn file_name(report: &Value, ext: &str) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "{}-eu-ai-act-{}.{ext}",
        safe(report["orgId"].as_str().unwrap_or("org")),
        safe(report["period"]["label"].as_str().unwrap_or("period"))
    )
}

pub async fn get(
    _: Admin,
    State(state): State<AppState>,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(q) = query.map_err(|e| bad(e.body_text()))?;
    let format = parse_format(q.format.as_deref())?;
    let report = report_json(&state, &q).await?;
    let (ctype, ext, bytes) = match format {
        Format::Json => return Ok(Json(report).into_response()),
        Format::Csv => (
            "text/csv; charset=utf-8",
            "csv",
            report::render::csv(&report).map_err(AppError::Internal)?,
        ),
        Format::Pdf => ("application/pdf", "pdf", report_pdf(report.clone()).await?),
    };
    let disposition = format!("attachment; filename=\"{}\"", file_name(&report, ext));
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SendBody {
    /// Who gets it; default: the policy's `alerts.recipients`.
    #[serde(default)]
    pub recipient: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub period: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

fn refuse(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message, "details": [] } })),
    )
        .into_response()
}

/// Kind of the audit row a delivered report writes (`POST /v1/reports/send` and the monthly
/// schedule, crate::report::schedule, which reads them back so it sends a month once).
pub const SENT_KIND: &str = "report.sent";

/// Builds the report for `q`, mails its PDF to `to` and, once the relay accepted it, appends a
/// `report.sent` audit row (`actor`; `trigger` is `api` or `schedule`). The outer error is the
/// report's, the inner one the delivery's (nothing is recorded then).
// serde_json's `Value[&str]` yields `Null` for a missing key: it cannot panic.
#[allow(clippy::indexing_slicing)]
pub async fn mail_report(
    state: &AppState,
    q: &ReportQuery,
    to: Vec<String>,
    actor: &str,
    trigger: &str,
) -> Result<Result<Sent, NotifyError>, AppError> {
    let report = report_json(state, q).await?;
    let name = file_name(&report, "pdf");
    let status = report["complianceStatus"].as_str().unwrap_or("").to_owned();
    let label = report["period"]["label"].as_str().unwrap_or("").to_owned();
    let note = Notification {
        subject: format!(
            "EU AI Act compliance report {} {label}: {status}",
            report["orgId"].as_str().unwrap_or(""),
        ),
        text: format!(
            "The compliance report for {} to {} is attached ({name}).\nStatus: {status}.\nFailing checks: {}\n",
            report["period"]["from"].as_str().unwrap_or(""),
            report["period"]["to"].as_str().unwrap_or(""),
            report["failingChecks"]
        ),
        payload: Value::Null,
    };
    let pdf = report_pdf(report.clone()).await?;
    let bytes = pdf.len();
    if let Err(e) = state
        .notifier
        .email_with_attachment(&to, &note, &name, "application/pdf", pdf)
        .await
    {
        return Ok(Err(e));
    }
    let sent = Sent {
        to,
        attachment: name,
        bytes,
        status,
        label,
    };
    let row = AuditEvent::new(SENT_KIND, state.clock.now_ms())
        .actor(actor)
        .details(json!({
            "trigger": trigger,
            "period": sent.label,
            "from": report["period"]["from"],
            "to": report["period"]["to"],
            "recipients": sent.to,
            "attachment": sent.attachment,
            "bytes": sent.bytes,
            "complianceStatus": sent.status,
        }));
    state.store.audit_append(vec![row]).await?;
    Ok(Ok(sent))
}

/// The policy's `alerts.recipients` (none when there is no policy or no such list).
pub async fn alert_recipients(state: &AppState) -> Result<Vec<String>, AppError> {
    Ok(state
        .current_policy()
        .await?
        .and_then(|p| p.value.pointer("/alerts/recipients").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default())
}

pub async fn send(
    Admin(who): Admin,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, AppError> {
    let b: SendBody = if body.is_empty() {
        SendBody::default()
    } else {
        super::parse_json(&body)?
    };
    let q = ReportQuery {
        template: b.template,
        format: Some("pdf".into()),
        period: b.period,
        from: b.from,
        to: b.to,
    };
    let to: Vec<String> = match b.recipient {
        Some(r) => vec![r],
        None => alert_recipients(&state).await?,
    };
    if to.is_empty() {
        // The period and template are still checked first: a bad query says so.
        report_json(&state, &q).await?;
        return Err(AppError::bad_request(
            "NO_RECIPIENT",
            "no recipient given and the policy has no alerts.recipients",
        ));
    }
    match mail_report(&state, &q, to, &who.name, "api").await? {
        Ok(s) => Ok(Json(json!({
            "sent": true,
            "to": s.to,
            "attachment": s.attachment,
            "bytes": s.bytes,
            "complianceStatus": s.status,
        }))
        .into_response()),
        Err(NotifyError::NoSmtp) => Ok(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "SMTP_NOT_CONFIGURED",
            "this sidecar has no SMTP relay: start it with --smtp-url smtp://host:port".into(),
        )),
        Err(e @ NotifyError::Email(_)) if e.to_string().contains("recipient") => Ok(refuse(
            StatusCode::BAD_REQUEST,
            "BAD_RECIPIENT",
            e.to_string(),
        )),
        Err(e) => Ok(refuse(
            StatusCode::BAD_GATEWAY,
            "DELIVERY_FAILED",
            format!("the SMTP relay refused or failed: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests;
