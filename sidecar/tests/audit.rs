//! The audit log over a real socket: a policy PUT, a client's key rotation and an approval's
//! life show up in `/v1/audit` with their actors; `audit export` (the CLI) writes JSON lines
//! and CSV; the Python verifier printed in docs/audit.md accepts the export and names the row
//! of a tampered copy; `audit verify` exits 0.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use clap::Parser;
use pag0_policy::approval::{body_sha256_hex, request_binding};
use pag0_policy::RequestHead;
use pag0_sidecar::{app, AppState, SqliteStore, Tokens};
use serde_json::{json, Value};
use tokio::net::TcpListener;

const ADMIN: &str = "alice-admin-token-0001";
const SYNC: &str = "filter-sync-secret-0003";
const LEAD: &str = "lead-approver-token-0004";
const KEY: &str = "pag0_sales_agent_key_0001";
const BODY: &[u8] = br#"{"model":"gpt-4o","max_tokens":4000}"#;

struct Server(tokio::task::JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn sidecar(dir: &Path) -> (String, Server) {
    let mut tokens = Tokens::default();
    tokens.add_admin_spec(&format!("alice={ADMIN}")).unwrap();
    tokens.add_sync_secret(SYNC).unwrap();
    tokens
        .add_approver_spec(&format!("lead@acme.com={LEAD}"))
        .unwrap();
    let state = AppState::new(Arc::new(SqliteStore::open_dir(dir).unwrap()), tokens).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    (format!("http://{addr}"), Server(task))
}

async fn cli(args: &[&str]) -> std::process::ExitCode {
    let mut all = vec!["pag0-sidecar"];
    all.extend_from_slice(args);
    pag0_sidecar::cli::run(pag0_sidecar::cli::Cli::try_parse_from(all).unwrap()).await
}

fn success(code: std::process::ExitCode) -> bool {
    format!("{code:?}") == format!("{:?}", std::process::ExitCode::SUCCESS)
}

/// The verifier block of docs/audit.md, run by `python3` on `file`: (exit ok, its output).
fn python_verify(dir: &Path, file: &Path) -> (bool, String) {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/audit.md")).unwrap();
    let block = doc
        .split("<!-- verifier:start -->")
        .nth(1)
        .and_then(|s| s.split("<!-- verifier:end -->").next())
        .expect("docs/audit.md has the verifier block");
    let code = block
        .trim()
        .strip_prefix("```python")
        .and_then(|s| s.strip_suffix("```"))
        .expect("a python fence");
    let script = dir.join("verify.py");
    std::fs::write(&script, code).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(file)
        .output()
        .expect("python3 runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_and_approvals_are_audited_exported_and_verified_independently() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _server) = sidecar(dir.path()).await;
    let http = reqwest::Client::new();

    let policy = json!({
        "orgId": "acme-corp",
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
    let r = http
        .post(format!("{base}/v1/clients/sales-agent/rotate-key"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let new_key = r.json::<Value>().await.unwrap()["apiKey"]
        .as_str()
        .unwrap()
        .to_string();

    // The filter holds a request; the approver approves it.
    let head = RequestHead {
        api_key: Some(KEY),
        method: "POST",
        authority: "api.openai.com",
        path: "/v1/chat/completions",
        requires_approval: false,
    };
    let created: Value = http
        .post(format!("{base}/v1/approvals"))
        .bearer_auth(SYNC)
        .json(&json!({
            "projectId": "sales-ai", "clientId": "sales-agent", "method": "POST",
            "authority": "api.openai.com", "path": "/v1/chat/completions",
            "bodySha256": body_sha256_hex(BODY), "binding": request_binding("sales-agent", &head, BODY),
            "estimatedCost": "600000", "policyVersion": 2,
            "justification": "Q4 pipeline — summary ✓\n\"quoted\"", "requestedBy": "agent@acme.com"
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["approvalId"].as_str().unwrap().to_string();
    let r = http
        .post(format!("{base}/v1/approvals/{id}/approve"))
        .bearer_auth(LEAD)
        .json(&json!({ "comment": "fine" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    let log: Value = http
        .get(format!("{base}/v1/audit"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = log["entries"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("policy.updated", "alice"),
            ("client.key_rotated", "alice"),
            ("approval.created", "agent@acme.com"),
            ("approval.decided", "lead@acme.com"),
        ]
    );
    assert_eq!(entries[1]["policyVersion"], 2);
    assert_eq!(
        (
            &entries[3]["approvalId"],
            &entries[3]["decision"],
            &entries[3]["details"]["comment"]
        ),
        (&json!(id), &json!("approved"), &json!("fine"))
    );
    assert_eq!(entries[2]["estimate"], 600_000);
    let text = log.to_string();
    assert!(
        !text.contains(&new_key) && !text.contains(KEY),
        "no key in the log"
    );

    // Export with the CLI, both formats.
    let jsonl = dir.path().join("audit.jsonl");
    let csv = dir.path().join("audit.csv");
    for (format, file) in [("jsonl", &jsonl), ("csv", &csv)] {
        let out = file.to_str().unwrap();
        let code = cli(&[
            "--url", &base, "--token", ADMIN, "audit", "export", "--format", format, "-o", out,
        ])
        .await;
        assert!(success(code), "export {format}");
    }
    let lines: Vec<Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(&lines, entries, "the export is the API's entries");
    // Newest first: the same entries, reversed.
    let newest = dir.path().join("newest.jsonl");
    let code = cli(&[
        "--url",
        &base,
        "--token",
        ADMIN,
        "audit",
        "export",
        "--order",
        "desc",
        "-o",
        newest.to_str().unwrap(),
    ])
    .await;
    assert!(success(code), "export --order desc");
    let reversed: Vec<Value> = std::fs::read_to_string(&newest)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut want = entries.clone();
    want.reverse();
    assert_eq!(reversed, want);
    let mut rows = csv::Reader::from_path(&csv).unwrap();
    let headers = rows.headers().unwrap().clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        pag0_sidecar::cli::CSV_COLUMNS.to_vec()
    );
    let records: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 4);
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    assert_eq!(&records[3][col("kind")], "approval.decided");
    assert_eq!(
        &records[3][col("hash")],
        entries[3]["hash"].as_str().unwrap()
    );
    assert_eq!(&records[2][col("estimate")], "600000");
    let details: Value = serde_json::from_str(&records[2][col("details")]).unwrap();
    assert_eq!(
        details["justification"],
        "Q4 pipeline — summary ✓\n\"quoted\""
    );

    // The documented verifier agrees with the sidecar …
    let (ok, out) = python_verify(dir.path(), &jsonl);
    assert!(ok, "{out}");
    assert!(out.contains("ok: 4 entries"), "{out}");
    assert!(out.contains(entries[3]["hash"].as_str().unwrap()), "{out}");
    // … and names the row of a tampered copy.
    let tampered = dir.path().join("tampered.jsonl");
    let mut copy = lines.clone();
    copy[2]["estimate"] = json!(1);
    std::fs::write(
        &tampered,
        copy.iter()
            .map(|v| v.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let (ok, out) = python_verify(dir.path(), &tampered);
    assert!(!ok && out.contains("BROKEN at seq 3"), "{out}");

    let code = cli(&["--url", &base, "--token", ADMIN, "audit", "verify"]).await;
    assert!(success(code));
    // Not with a filter's token.
    let code = cli(&["--url", &base, "--token", SYNC, "audit", "verify"]).await;
    assert!(!success(code));
}
