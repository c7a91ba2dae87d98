//! The approval workflow over real sockets: the sidecar on 127.0.0.1:0, a Slack-style HTTP
//! receiver and the requester's callback (axum), and an SMTP server on loopback (a small sink
//! below). Approvers get the e-mail and the Slack message; the requester's callback gets the
//! decision; the CLI approves; twenty concurrent replays let exactly one through.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use pag0_policy::approval::{body_sha256_hex, request_binding};
use pag0_policy::RequestHead;
use pag0_sidecar::notify::{Notifier, SmtpConfig};
use pag0_sidecar::{app, AppState, SqliteStore, Tokens};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const ADMIN: &str = "alice-admin-token-0001";
const SYNC: &str = "filter-sync-secret-0003";
const LEAD: &str = "lead-approver-token-0004";
const KEY: &str = "pag0_sales_agent_key_0001";
const BODY: &[u8] = br#"{"model":"gpt-4o","max_tokens":4000}"#;
/// Bounded waits for deliveries (never a timing assertion: only "it arrived at all").
const WAIT: Duration = Duration::from_secs(20);

/// One message as the SMTP sink received it.
#[derive(Debug)]
struct Mail {
    from: String,
    to: Vec<String>,
    data: String,
}

/// A minimal SMTP server: enough of RFC 5321 for lettre (EHLO, MAIL, RCPT, DATA, RSET, QUIT).
async fn smtp_sink() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<Mail>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 sink ESMTP\r\n").await;
                let (mut from, mut to) = (String::new(), Vec::new());
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250 sink\r\n"
                    } else if upper.starts_with("MAIL FROM:") {
                        from = line[10..].trim().to_string();
                        b"250 OK\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        to.push(
                            line[8..]
                                .trim()
                                .trim_matches(|c| c == '<' || c == '>')
                                .to_string(),
                        );
                        b"250 OK\r\n"
                    } else if upper == "DATA" {
                        let _ = w.write_all(b"354 go ahead\r\n").await;
                        let mut data = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            data.push_str(&l);
                            data.push('\n');
                        }
                        let _ = tx.send(Mail {
                            from: std::mem::take(&mut from),
                            to: std::mem::take(&mut to),
                            data,
                        });
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 OK\r\n"
                    };
                    if w.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx, task)
}

/// Slack webhook and the requester's callback: every POST body, with its path.
async fn http_receiver() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<(String, Value)>,
    tokio::task::JoinHandle<()>,
) {
    type Tx = mpsc::UnboundedSender<(String, Value)>;
    async fn slack(State(tx): State<Tx>, Json(v): Json<Value>) -> &'static str {
        let _ = tx.send(("/slack".into(), v));
        "ok"
    }
    async fn callback(State(tx): State<Tx>, Json(v): Json<Value>) -> &'static str {
        let _ = tx.send(("/callback".into(), v));
        "ok"
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let router = Router::new()
        .route("/slack", post(slack))
        .route("/callback", post(callback))
        .with_state(tx);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, rx, task)
}

/// Aborts the servers of a test when it ends (also on failure).
struct Servers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Servers {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} arrived"))
        .unwrap()
}

fn binding() -> String {
    let head = RequestHead {
        api_key: Some(KEY),
        method: "POST",
        authority: "api.openai.com",
        path: "/v1/chat/completions",
        requires_approval: false,
    };
    request_binding("sales-agent", &head, BODY)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_are_told_the_requester_gets_the_decision_and_one_replay_passes() {
    let (smtp_addr, mut mails, smtp_task) = smtp_sink().await;
    let (hook_addr, mut posts, hook_task) = http_receiver().await;

    let dir = tempfile::tempdir().unwrap();
    let mut tokens = Tokens::default();
    tokens.add_admin_spec(&format!("alice={ADMIN}")).unwrap();
    tokens.add_sync_secret(SYNC).unwrap();
    tokens
        .add_approver_spec(&format!("lead@acme.com={LEAD}"))
        .unwrap();
    let smtp = SmtpConfig::parse(&format!("smtp://{smtp_addr}"), "pag0@acme.com").unwrap();
    let state = AppState::new(Arc::new(SqliteStore::open_dir(dir.path()).unwrap()), tokens)
        .unwrap()
        .with_notifier(Notifier::new(Some(smtp)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sidecar = listener.local_addr().unwrap();
    let sidecar_task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    let _servers = Servers(vec![smtp_task, hook_task, sidecar_task]);
    let base = format!("http://{sidecar}");
    let http = reqwest::Client::new();

    let policy = json!({
        "orgId": "acme-corp",
        "alerts": { "channels": ["email", "slack"], "recipients": ["cfo@acme.com"],
                    "slackWebhookUrl": format!("http://{hook_addr}/slack") },
        "endpoints": [ { "host": "api.openai.com", "category": "llm", "pricing": { "perRequest": "2000" } } ],
        "projects": [ { "id": "sales-ai", "policy": { "approvalWorkflow": { "enabled": true,
            "approvers": ["lead@acme.com"], "requireApprovalAbove": "100000" } } } ],
        "clients": [ { "id": "sales-agent", "projectId": "sales-ai",
                       "apiKeySha256": pag0_policy::validate::api_key_sha256_hex(KEY) } ]
    });
    let r = http
        .put(format!("{base}/v1/policy"))
        .bearer_auth(ADMIN)
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    // The filter asks for an approval.
    let created: Value = http
        .post(format!("{base}/v1/approvals"))
        .bearer_auth(SYNC)
        .json(&json!({
            "projectId": "sales-ai", "clientId": "sales-agent", "method": "POST",
            "authority": "api.openai.com", "path": "/v1/chat/completions",
            "bodySha256": body_sha256_hex(BODY), "binding": binding(),
            "estimatedCost": "600000", "policyVersion": 1,
            "justification": "Q4 pipeline summary", "requestedBy": "agent@acme.com",
            "callbackUrl": format!("http://{hook_addr}/callback")
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["approvalId"].as_str().unwrap().to_string();

    // Approvers: an e-mail through the real SMTP server, and the Slack message.
    let mail = next(&mut mails, "e-mail").await;
    assert_eq!(mail.to, vec!["lead@acme.com".to_string()], "{mail:?}");
    assert!(mail.from.contains("pag0@acme.com"), "{mail:?}");
    assert!(
        mail.data
            .contains("Subject: [pag0] approval requested: sales-ai $0.600000"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains(&id),
        "the mail names the approval: {}",
        mail.data
    );
    let (path, slack) = next(&mut posts, "Slack post").await;
    assert_eq!(path, "/slack");
    let text = slack["text"].as_str().unwrap();
    assert!(
        text.contains("approval requested")
            && text.contains(&id)
            && text.contains("Q4 pipeline summary"),
        "{text}"
    );

    // The approver approves with the CLI.
    let cli = pag0_sidecar::cli::Cli::try_parse_from([
        "pag0-sidecar",
        "--url",
        base.as_str(),
        "--token",
        LEAD,
        "approvals",
        "approve",
        id.as_str(),
        "--comment",
        "fine",
    ])
    .unwrap();
    let code = pag0_sidecar::cli::run(cli).await;
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::SUCCESS)
    );

    // The requester's callback gets the decision (and Slack hears of it too).
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(next(&mut posts, "decision post").await);
    }
    let callback = &got
        .iter()
        .find(|(p, _)| p == "/callback")
        .expect("callback posted")
        .1;
    assert_eq!(callback["event"], "approval.approved");
    assert_eq!(callback["approval"]["approvalId"], id.as_str());
    assert_eq!(callback["approval"]["decision"]["comment"], "fine");
    assert!(got
        .iter()
        .any(|(p, v)| p == "/slack" && v["text"].as_str().unwrap().contains("approved")));

    // Twenty concurrent replays: exactly one passes, the rest are APPROVAL_USED.
    let replays: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (http.clone(), format!("{base}/v1/approvals/{id}/consume"));
            tokio::spawn(async move {
                let r = http
                    .post(url)
                    .bearer_auth(SYNC)
                    .json(&json!({ "binding": binding(), "estimatedCost": "600000", "policyVersion": 1 }))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let v: Value = r.json().await.unwrap();
                (status, v["error"]["code"].as_str().unwrap_or("").to_string())
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for r in replays {
        outcomes.push(r.await.unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|(s, c)| *s == 403 && c == "APPROVAL_USED")
            .count(),
        19,
        "{outcomes:?}"
    );

    // A delivery is counted after the receiver answered: poll until the counters show it.
    let wanted = [
        "pag0_notifications_total{channel=\"email\",outcome=\"sent\"} 1",
        "pag0_notifications_total{channel=\"slack\",outcome=\"sent\"} 2",
        "pag0_notifications_total{channel=\"webhook\",outcome=\"sent\"} 1",
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if wanted.iter().all(|w| metrics.contains(w)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{wanted:?} not all in {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
