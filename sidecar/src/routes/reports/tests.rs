use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tower::ServiceExt;

use crate::notify::{Notifier, SmtpConfig};
use crate::report::tests::{read_pdf, scripted};
use crate::testing::{code, tokens, Harness, ALICE, T0};
use crate::{app, AppState, ManualClock, SqliteStore};

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_dir(dir.path()).unwrap();
    scripted(&store).await;
    Harness::over(Arc::new(store), tokens(), dir)
}

/// Status, headers and the raw body (a PDF is not text).
async fn raw(app: &axum::Router, req: Request<Body>) -> (StatusCode, header::HeaderMap, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, bytes)
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {ALICE}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn reports_need_an_admin() {
    let h = harness().await;
    let r = h.call(Method::GET, "/v1/reports", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = h
        .call(Method::POST, "/v1/reports/send", None, Some(json!({})))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_three_formats_over_http_agree() {
    let h = harness().await;
    let r = h
        .call(
            Method::GET,
            "/v1/reports?template=EU_AI_ACT_COMPLIANCE&format=json&period=month",
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The clock is at T0 (2025-11-24): this month is November.
    assert_eq!(r.body["period"]["label"], "2025-11");
    assert_eq!(r.body["aiSystems"]["total"]["spend"], "8740568");
    assert_eq!(r.body["complianceStatus"], "NOT_COMPLIANT");

    let (status, headers, csv) = raw(&h.app, get("/v1/reports?format=csv")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"acme-corp-eu-ai-act-2025-11.csv\""
    );
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.contains("total,all,spend,8740568"), "{csv}");

    let (status, headers, pdf) = raw(&h.app, get("/v1/reports?format=pdf")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/pdf");
    let dir = tempfile::tempdir().unwrap();
    let (text, _) = read_pdf(&pdf, dir.path());
    assert!(
        text.contains("8.740568") && text.contains("NOT_COMPLIANT"),
        "{text}"
    );
}

#[tokio::test]
async fn periods_pick_the_ledger_rows() {
    let h = harness().await;
    let total = |r: &crate::testing::Resp| r.body["aiSystems"]["total"]["spend"].clone();
    // October holds one record of the script (9 USD), December one (7 USD).
    let r = h
        .call(Method::GET, "/v1/reports?period=2025-10", Some(ALICE), None)
        .await;
    assert_eq!(total(&r), "9000000", "{}", r.text);
    let r = h
        .call(
            Method::GET,
            "/v1/reports?from=2025-10-01&to=2025-12-02T00:00:00Z",
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(
        total(&r),
        (9_000_000u64 + 8_740_568 + 7_000_000).to_string()
    );
    assert_eq!(r.body["period"]["label"], "custom");
}

#[tokio::test]
async fn bad_queries_get_bad_query() {
    let h = harness().await;
    for q in [
        "format=docx",
        "template=SOX",
        "period=last-year",
        "from=2025-11-02&to=2025-11-01",
        "from=yesterday&to=2025-11-01",
        "from=2025-11-01",
        "period=month&from=2025-11-01&to=2025-11-02",
        "colour=red",
    ] {
        let r = h
            .call(Method::GET, &format!("/v1/reports?{q}"), Some(ALICE), None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.text);
        assert_eq!(code(&r), "BAD_QUERY", "{q}");
    }
}

// --- POST /v1/reports/send ---

/// One SMTP conversation on loopback; resolves to (RCPT TO lines, the DATA text).
async fn smtp_capture() -> (u16, tokio::task::JoinHandle<(Vec<String>, String)>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (sock, _) = l.accept().await.unwrap();
        let (rd, mut wr) = sock.into_split();
        let mut rd = BufReader::new(rd);
        wr.write_all(b"220 capture ESMTP\r\n").await.unwrap();
        let (mut rcpt, mut data) = (Vec::new(), String::new());
        let mut line = String::new();
        loop {
            line.clear();
            if rd.read_line(&mut line).await.unwrap() == 0 {
                break;
            }
            let cmd = line.to_ascii_uppercase();
            let reply: &[u8] = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                b"250 capture\r\n"
            } else if cmd.starts_with("RCPT") {
                rcpt.push(line.trim().to_string());
                b"250 ok\r\n"
            } else if cmd.starts_with("DATA") {
                wr.write_all(b"354 go ahead\r\n").await.unwrap();
                loop {
                    line.clear();
                    rd.read_line(&mut line).await.unwrap();
                    if line == ".\r\n" {
                        break;
                    }
                    data.push_str(&line);
                }
                b"250 queued\r\n"
            } else if cmd.starts_with("QUIT") {
                wr.write_all(b"221 bye\r\n").await.unwrap();
                break;
            } else {
                b"250 ok\r\n"
            };
            wr.write_all(reply).await.unwrap();
        }
        (rcpt, data)
    });
    (port, task)
}

/// The base64 body of the MIME part whose headers name `application/pdf`.
fn pdf_part(data: &str) -> Vec<u8> {
    use base64::Engine;
    let start = data
        .find("Content-Type: application/pdf")
        .expect("a PDF part");
    let part = &data[start..];
    let body_at = part.find("\r\n\r\n").unwrap() + 4;
    let body: String = part[body_at..]
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .unwrap()
}

async fn send_app(smtp_port: Option<u16>) -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_dir(dir.path()).unwrap();
    scripted(&store).await;
    let smtp = smtp_port
        .map(|p| SmtpConfig::parse(&format!("smtp://127.0.0.1:{p}"), "pag0@acme.com").unwrap());
    let state = AppState::new(Arc::new(store), tokens())
        .unwrap()
        .with_clock(Arc::new(ManualClock::new(T0)))
        .with_notifier(Notifier::new(smtp));
    (app(state), dir)
}

fn post(body: Value) -> Request<Body> {
    Request::post("/v1/reports/send")
        .header(header::AUTHORIZATION, format!("Bearer {ALICE}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn send_mails_the_pdf_as_an_attachment_over_smtp() {
    let (port, capture) = smtp_capture().await;
    let (app, d) = send_app(Some(port)).await;
    let (status, _, body) = raw(&app, post(json!({ "recipient": "auditor@acme.com" }))).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["to"], json!(["auditor@acme.com"]));
    assert_eq!(v["attachment"], "acme-corp-eu-ai-act-2025-11.pdf");
    let (rcpt, data) = capture.await.unwrap();
    assert_eq!(rcpt, vec!["RCPT TO:<auditor@acme.com>"]);
    assert!(
        data.contains("Subject: EU AI Act compliance report acme-corp 2025-11: NOT_COMPLIANT"),
        "{data}"
    );
    assert!(
        data.contains("filename=\"acme-corp-eu-ai-act-2025-11.pdf\""),
        "{data}"
    );
    let pdf = pdf_part(&data);
    assert_eq!(pdf.len() as u64, v["bytes"].as_u64().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (text, _) = read_pdf(&pdf, dir.path());
    assert!(
        text.contains("acme-corp") && text.contains("8.740568"),
        "{text}"
    );
    // The send is in the audit log, with the admin who asked.
    assert_eq!(
        sent_rows_in(d.path()).await,
        vec![("alice".into(), "api".into(), "2025-11".into())]
    );
}

#[tokio::test]
async fn send_defaults_to_the_alert_recipients() {
    let (port, capture) = smtp_capture().await;
    let (app, _d) = send_app(Some(port)).await;
    let (status, _, _) = raw(&app, post(json!({ "period": "2025-11" }))).await;
    assert_eq!(status, StatusCode::OK);
    let (rcpt, _) = capture.await.unwrap();
    assert_eq!(rcpt, vec!["RCPT TO:<cfo@acme.com>"]);
}

#[tokio::test]
async fn send_without_smtp_or_with_a_bad_recipient_says_why() {
    let (app, _d) = send_app(None).await;
    let (status, _, body) = raw(&app, post(json!({}))).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "SMTP_NOT_CONFIGURED");

    // Nothing listens on the discard port: the relay fails, the caller is told.
    let (app, d) = send_app(Some(9)).await;
    let (status, _, body) = raw(&app, post(json!({}))).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{v}");
    assert_eq!(v["error"]["code"], "DELIVERY_FAILED");
    assert!(sent_rows_in(d.path()).await.is_empty(), "nothing was sent");

    let (status, _, body) = raw(&app, post(json!({ "recipient": "not an address" }))).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "BAD_RECIPIENT");

    let (status, _, body) = raw(&app, post(json!({ "recipients": ["x@y.z"] }))).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "BAD_JSON");
}

#[tokio::test]
async fn the_cli_writes_the_report_to_a_file() {
    use clap::Parser;
    let (app, _d) = send_app(None).await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(l, app).await });
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("report.pdf");
    let run = |args: Vec<String>| async move {
        let cli = crate::cli::Cli::try_parse_from(args).unwrap();
        format!("{:?}", crate::cli::run(cli).await)
    };
    let args = |extra: &[&str]| -> Vec<String> {
        ["pag0-sidecar", "--url", &base, "--token", ALICE, "report"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let ok = format!("{:?}", std::process::ExitCode::SUCCESS);
    let code = run(args(&["--format", "pdf", "-o", file.to_str().unwrap()])).await;
    assert_eq!(code, ok);
    let (text, info) = read_pdf(&std::fs::read(&file).unwrap(), out.path());
    assert!(
        text.contains("acme-corp") && text.contains("8.740568"),
        "{text}"
    );
    assert!(info.contains("(A4)"));
    // An error answer is a failure exit, and nothing is written.
    let bad = out.path().join("bad.pdf");
    let code = run(args(&["--format", "docx", "-o", bad.to_str().unwrap()])).await;
    assert_ne!(code, ok);
    assert!(!bad.exists());
    server.abort();
}

/// End to end: decision events posted to `/v1/sync` are in the report served over HTTP —
/// violations by code and the gap (failing its check) in the JSON and the CSV.
#[tokio::test]
async fn decisions_synced_over_http_are_in_the_report() {
    let h = harness().await;
    let deny = |at: i64, code: &str| {
        json!({ "at": at, "decision": "deny", "code": code, "method": "POST",
                "authority": "api.openai.com", "path": "/v1/chat/completions",
                "policyVersion": 2, "projectId": "sales-ai", "clientId": "sales-ai-agent" })
    };
    let batch = json!({ "instanceId": "envoy-h", "seq": 1, "policyVersion": 2, "usage": [],
        "decisions": [deny(T0, "BUDGET_EXCEEDED"), deny(T0 + 1, "BUDGET_EXCEEDED"),
                      deny(T0 + 2, "WORKING_HOURS")],
        "gaps": [{ "from": T0 + 3, "to": T0 + 4, "count": 7 }] });
    let r = h.sync(batch).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = h
        .call(Method::GET, "/v1/reports?format=json", Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body["riskEvents"]["violations"],
        json!({ "BUDGET_EXCEEDED": 2, "WORKING_HOURS": 1 })
    );
    assert_eq!(r.body["recordKeeping"]["eventsDropped"], 7);
    let gap = r.body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "no-unlogged-gap")
        .unwrap()
        .clone();
    assert_eq!(gap["result"], "fail", "{gap}");
    let (_, _, csv) = raw(&h.app, get("/v1/reports?format=csv")).await;
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.contains("violation,BUDGET_EXCEEDED,count,2"), "{csv}");
    assert!(csv.contains("violation,WORKING_HOURS,count,1"), "{csv}");
    assert!(csv.contains("recordKeeping,gaps,eventsDropped,7"), "{csv}");
}

// --- the monthly schedule (crate::report::schedule) ---

/// An SMTP server on loopback for many conversations: the first `refuse_first` connections
/// are greeted with `421` (the relay is down); every message accepted afterwards arrives on
/// the channel as (RCPT TO lines, the DATA text) before its `250` is answered.
async fn smtp_server(
    refuse_first: usize,
) -> (
    u16,
    tokio::sync::mpsc::UnboundedReceiver<(Vec<String>, String)>,
    tokio::task::JoinHandle<()>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut n = 0;
        loop {
            let (sock, _) = l.accept().await.unwrap();
            n += 1;
            let (rd, mut wr) = sock.into_split();
            if n <= refuse_first {
                let _ = wr.write_all(b"421 capture down\r\n").await;
                continue;
            }
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut rd = BufReader::new(rd);
                wr.write_all(b"220 capture ESMTP\r\n").await.unwrap();
                let (mut rcpt, mut line) = (Vec::new(), String::new());
                loop {
                    line.clear();
                    if rd.read_line(&mut line).await.unwrap_or(0) == 0 {
                        break;
                    }
                    let cmd = line.to_ascii_uppercase();
                    let reply: &[u8] = if cmd.starts_with("RCPT") {
                        rcpt.push(line.trim().to_string());
                        b"250 ok\r\n"
                    } else if cmd.starts_with("DATA") {
                        wr.write_all(b"354 go ahead\r\n").await.unwrap();
                        let mut data = String::new();
                        loop {
                            line.clear();
                            rd.read_line(&mut line).await.unwrap();
                            if line == ".\r\n" {
                                break;
                            }
                            data.push_str(&line);
                        }
                        tx.send((std::mem::take(&mut rcpt), data)).unwrap();
                        b"250 queued\r\n"
                    } else if cmd.starts_with("QUIT") {
                        wr.write_all(b"221 bye\r\n").await.unwrap();
                        break;
                    } else {
                        b"250 capture\r\n"
                    };
                    wr.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, rx, task)
}

/// A state over the store in `dir` (opened again: a restart), the clock at `now`.
fn schedule_state(dir: &std::path::Path, smtp_port: u16, now: i64) -> (AppState, Arc<ManualClock>) {
    let store = SqliteStore::open_dir(dir).unwrap();
    let smtp =
        SmtpConfig::parse(&format!("smtp://127.0.0.1:{smtp_port}"), "pag0@acme.com").unwrap();
    let clock = Arc::new(ManualClock::new(now));
    let state = AppState::new(Arc::new(store), tokens())
        .unwrap()
        .with_clock(clock.clone())
        .with_notifier(Notifier::new(Some(smtp)));
    (state, clock)
}

/// The `report.sent` rows: (actor, trigger, period).
async fn sent_rows(state: &AppState) -> Vec<(String, String, String)> {
    let q = crate::audit::AuditQuery {
        kind: Some(super::SENT_KIND.into()),
        limit: 100,
        ..Default::default()
    };
    let rows = state.store.audit_list(q).await.unwrap();
    rows.iter()
        .map(|r| {
            let d = &r.event.details;
            (
                r.event.actor.clone().unwrap_or_default(),
                d["trigger"].as_str().unwrap_or("").to_string(),
                d["period"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn sent_rows_in(dir: &std::path::Path) -> Vec<(String, String, String)> {
    let state = AppState::new(Arc::new(SqliteStore::open_dir(dir).unwrap()), tokens()).unwrap();
    sent_rows(&state).await
}

fn sent_label(t: &crate::report::schedule::Tick) -> &str {
    match t {
        crate::report::schedule::Tick::Sent(s) => &s.label,
        other => panic!("expected a send, got {other:?}"),
    }
}

/// 2025-12-01T00:00:00Z.
const DEC_1: i64 = 1_764_547_200_000;

#[tokio::test]
async fn the_schedule_mails_each_finished_month_once_across_restarts() {
    use crate::report::schedule::{run_once, Tick};
    let (port, mut mails, _server) = smtp_server(0).await;
    let dir = tempfile::tempdir().unwrap();
    scripted(&SqliteStore::open_dir(dir.path()).unwrap()).await;

    // 2025-11-24: the month that last ended is October (one 9 USD record of the script).
    let (state, clock) = schedule_state(dir.path(), port, T0);
    let t = run_once(&state).await.unwrap();
    assert_eq!(sent_label(&t), "2025-10");
    let (rcpt, data) = mails.try_recv().unwrap();
    assert_eq!(rcpt, vec!["RCPT TO:<cfo@acme.com>"]);
    assert!(
        data.contains("filename=\"acme-corp-eu-ai-act-2025-10.pdf\""),
        "{data}"
    );
    let pdf_dir = tempfile::tempdir().unwrap();
    let (text, _) = read_pdf(&pdf_part(&data), pdf_dir.path());
    assert!(
        text.contains("2025-10") && text.contains("9.000000"),
        "{text}"
    );
    assert!(
        !text.contains("8.740568"),
        "November's figures are not October's: {text}"
    );

    // Later ticks of the same month send nothing.
    clock.advance_ms(6 * 24 * 3_600_000);
    assert!(
        matches!(run_once(&state).await.unwrap(), Tick::AlreadySent { label } if label == "2025-10")
    );
    assert!(mails.try_recv().is_err());

    // The month turns (UTC, the policy's timezone): November, with its own figures, once.
    let (state, clock) = schedule_state(dir.path(), port, DEC_1 - 1);
    assert!(matches!(
        run_once(&state).await.unwrap(),
        Tick::AlreadySent { .. }
    ));
    clock.advance_ms(1);
    let t = run_once(&state).await.unwrap();
    assert_eq!(sent_label(&t), "2025-11");
    let (_, data) = mails.try_recv().unwrap();
    assert!(
        data.contains("Subject: EU AI Act compliance report acme-corp 2025-11: NOT_COMPLIANT"),
        "{data}"
    );
    let (text, _) = read_pdf(&pdf_part(&data), pdf_dir.path());
    assert!(text.contains("8.740568"), "{text}");
    assert!(matches!(
        run_once(&state).await.unwrap(),
        Tick::AlreadySent { .. }
    ));

    // A restart (a new state over the same database) does not send it again.
    let (state, _) = schedule_state(dir.path(), port, DEC_1 + 3_600_000);
    assert!(
        matches!(run_once(&state).await.unwrap(), Tick::AlreadySent { label } if label == "2025-11")
    );
    assert!(mails.try_recv().is_err(), "a second mail was sent");
    assert_eq!(
        sent_rows(&state).await,
        vec![
            ("schedule".into(), "schedule".into(), "2025-10".into()),
            ("schedule".into(), "schedule".into(), "2025-11".into()),
        ]
    );
}

#[tokio::test]
async fn the_schedule_retries_a_failed_delivery_on_a_later_tick_without_duplicating() {
    use crate::report::schedule::{run_once, Tick};
    let (port, mut mails, _server) = smtp_server(2).await;
    let dir = tempfile::tempdir().unwrap();
    scripted(&SqliteStore::open_dir(dir.path()).unwrap()).await;
    let (state, clock) = schedule_state(dir.path(), port, DEC_1 + 60_000);
    for _ in 0..2 {
        let t = run_once(&state).await.unwrap();
        assert!(
            matches!(&t, Tick::Failed { label, error } if label == "2025-11" && error.contains("421")),
            "{t:?}"
        );
        assert!(
            sent_rows(&state).await.is_empty(),
            "a failed send is not recorded"
        );
        clock.advance_ms(300_000);
    }
    let t = run_once(&state).await.unwrap();
    assert_eq!(sent_label(&t), "2025-11");
    let (_, data) = mails.try_recv().unwrap();
    assert!(data.contains("acme-corp-eu-ai-act-2025-11.pdf"), "{data}");
    for _ in 0..2 {
        clock.advance_ms(300_000);
        assert!(matches!(
            run_once(&state).await.unwrap(),
            Tick::AlreadySent { .. }
        ));
    }
    assert!(mails.try_recv().is_err(), "a second mail was sent");
    assert_eq!(sent_rows(&state).await.len(), 1);
}
