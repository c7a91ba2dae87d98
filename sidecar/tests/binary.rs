//! The real binary on a real socket: startup, SIGTERM, `kill -9` + restart on the same data
//! dir, `--validate`, and the admin CLI. Every child is killed on Drop; ports are ephemeral.

// A test harness: failing loudly is its job.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_pag0-sidecar");
const ADMIN: &str = "ops-admin-token-000001";
const SYNC: &str = "filter-sync-secret-0002";

struct Sidecar {
    child: Child,
    base: String,
}

fn command() -> Command {
    let mut cmd = Command::new(BIN);
    // The tests choose the store explicitly; never pick up the caller's environment.
    for var in [
        "DATABASE_URL",
        "PAG0_ADMIN_TOKENS",
        "PAG0_SYNC_SECRET",
        "PAG0_TOKEN",
        "PAG0_URL",
        "PAG0_DATABASE_SCHEMA",
        "PAG0_LOG_FORMAT",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

impl Sidecar {
    fn start(store_args: &[&str]) -> Sidecar {
        Self::start_with(store_args, &[])
    }

    fn start_with(store_args: &[&str], env: &[(&str, &str)]) -> Sidecar {
        let mut child = command()
            .envs(env.iter().copied())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-token",
                &format!("ops={ADMIN}"),
                "--sync-secret",
                SYNC,
            ])
            .args(store_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pag0-sidecar");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("sidecar did not start: {line:?} {err}");
        };
        Sidecar {
            base: format!("http://{addr}"),
            child,
        }
    }

    fn sqlite(dir: &Path) -> Sidecar {
        Sidecar::start(&["--data-dir", dir.to_str().unwrap()])
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits for the process to end by itself (generous deadline: the assertion is about the
    /// exit status, not about speed).
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "sidecar did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, the exit, and everything the process wrote to stderr.
    fn stop(&mut self) -> String {
        self.signal("-TERM");
        assert_eq!(self.wait_exit().code(), Some(0));
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        err
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn policy() -> Value {
    json!({
        "orgId": "acme-corp",
        "globalPolicy": { "monthlyBudget": "100000000", "dailyBudget": "5000000" },
        "endpoints": [ { "host": "api.openai.com", "category": "llm", "pricing": { "perRequest": "2000" } } ],
        "projects": [ { "id": "sales-ai", "name": "Sales AI", "policy": { "monthlyBudget": "15000000" } } ]
    })
}

async fn send(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&b).unwrap());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn spent_of(budgets: &Value, counter: &str) -> Option<String> {
    budgets["counters"]
        .as_array()?
        .iter()
        .find(|c| c["counter"] == counter)
        .map(|c| c["spent"].as_str().unwrap().to_string())
}

const ORG_MONTH: &str = "org.monthly/2026-11";

fn batch(seq: u64) -> Value {
    json!({ "instanceId": "envoy-1", "seq": seq, "usage": [
        { "amount": "4200", "counters": [ORG_MONTH, "project.monthly/sales-ai/2026-11"], "projectId": "sales-ai" } ] })
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Sidecar::sqlite(dir.path());
    let r = reqwest::get(s.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    s.signal("-TERM");
    let status = s.wait_exit();
    assert_eq!(status.code(), Some(0), "graceful exit after SIGTERM");
    let mut err = String::new();
    s.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("shut down"), "{err}");
}

/// A refused request and an answered one, then SIGTERM: what the log says about them.
async fn log_of(extra: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--data-dir", dir.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut s = Sidecar::start_with(&args, env);
    let (st, _) = send(
        reqwest::Method::GET,
        &s.url("/v1/policy"),
        "not-a-token-xxxxxxxx",
        None,
    )
    .await;
    assert_eq!(st, 401);
    assert_eq!(reqwest::get(s.url("/healthz")).await.unwrap().status(), 200);
    s.stop()
}

#[tokio::test]
async fn logs_are_human_lines_by_default_and_json_on_a_flag() {
    let human = log_of(&[], &[]).await;
    assert!(
        human
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_err()),
        "{human}"
    );
    let refused = human
        .lines()
        .find(|l| l.contains("request refused"))
        .unwrap_or_else(|| panic!("no line for the 401: {human}"));
    assert!(
        refused.contains(" INFO ")
            && refused.contains("route=\"/v1/policy\"")
            && refused.contains("status=401")
            && refused.contains("code=\"UNAUTHORIZED\""),
        "{refused}"
    );
    assert!(
        !human.contains("route=\"/healthz\""),
        "an answered request is a debug line: {human}"
    );

    let json = log_of(&["--log-format", "json", "--log-level", "debug"], &[]).await;
    let events: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let field = |e: &Value, k: &str| e["fields"][k].clone();
    let refused = events
        .iter()
        .find(|e| field(e, "message") == "request refused")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(
        (
            refused["level"].as_str(),
            field(refused, "route"),
            field(refused, "status"),
            field(refused, "code")
        ),
        (
            Some("INFO"),
            json!("/v1/policy"),
            json!(401),
            json!("UNAUTHORIZED")
        )
    );
    assert!(
        events.iter().any(|e| e["level"] == "DEBUG"
            && field(e, "route") == "/healthz"
            && field(e, "status") == 200),
        "--log-level debug shows every request: {json}"
    );
    assert!(events.iter().any(|e| field(e, "message") == "shut down"));

    // The same from the environment; `warn` keeps every info line out.
    let quiet = log_of(&[], &[("PAG0_LOG_FORMAT", "json"), ("RUST_LOG", "warn")]).await;
    assert!(
        !quiet.contains("request refused") && !quiet.contains("\"INFO\""),
        "{quiet}"
    );
    let env_json = log_of(&[], &[("PAG0_LOG_FORMAT", "json")]).await;
    assert!(
        env_json.lines().count() >= 3
            && env_json
                .lines()
                .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{env_json}"
    );
}

#[tokio::test]
async fn acknowledged_batches_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::sqlite(dir.path());
    let (st, _) = send(
        reqwest::Method::PUT,
        &s.url("/v1/policy"),
        ADMIN,
        Some(policy()),
    )
    .await;
    assert_eq!(st, 200);
    let (st, ack) = send(
        reqwest::Method::POST,
        &s.url("/v1/sync"),
        SYNC,
        Some(batch(1)),
    )
    .await;
    assert_eq!(
        (st, ack["ack"].as_u64(), ack["duplicate"].as_bool()),
        (200, Some(1), Some(false)),
        "{ack}"
    );

    s.signal("-KILL");
    drop(s);

    let s = Sidecar::sqlite(dir.path());
    let (_, budgets) = send(reqwest::Method::GET, &s.url("/v1/budgets"), ADMIN, None).await;
    assert_eq!(
        spent_of(&budgets, ORG_MONTH).as_deref(),
        Some("4200"),
        "{budgets}"
    );
    // The filter never got the ack (say) and resends: recognised, not counted again.
    let (_, again) = send(
        reqwest::Method::POST,
        &s.url("/v1/sync"),
        SYNC,
        Some(batch(1)),
    )
    .await;
    assert_eq!(again["duplicate"], true);
    let (_, budgets) = send(reqwest::Method::GET, &s.url("/v1/budgets"), ADMIN, None).await;
    assert_eq!(spent_of(&budgets, ORG_MONTH).as_deref(), Some("4200"));
    let (st, doc) = send(reqwest::Method::GET, &s.url("/v1/policy"), ADMIN, None).await;
    assert_eq!((st, doc["orgId"].as_str()), (200, Some("acme-corp")));
}

#[test]
fn validate_flag_checks_a_file_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(&good, serde_json::to_vec(&policy()).unwrap()).unwrap();
    let out = command().arg("--validate").arg(&good).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid policy for acme-corp"));

    let mut bad = policy();
    bad["projects"][0]["policy"]["dailyBudget"] = json!("12x");
    bad["surprise"] = json!(true);
    let badf = dir.path().join("bad.json");
    std::fs::write(&badf, serde_json::to_vec(&bad).unwrap()).unwrap();
    let out = command().arg("--validate").arg(&badf).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("projects[0].policy.dailyBudget: "), "{err}");
    assert!(err.contains("surprise"), "{err}");
}

fn cli(base: &str, token: &str, args: &[&str]) -> std::process::Output {
    command()
        .args(["--url", base, "--token", token])
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn admin_cli_applies_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::sqlite(&dir.path().join("data"));
    let base = s.base.clone();
    let file = dir.path().join("policy.json");
    std::fs::write(&file, serde_json::to_vec(&policy()).unwrap()).unwrap();
    let client = dir.path().join("client.json");
    std::fs::write(
        &client,
        br#"{"id": "sales-agent", "projectId": "sales-ai"}"#,
    )
    .unwrap();
    let f = file.to_str().unwrap().to_string();
    let c = client.to_str().unwrap().to_string();

    let outs = tokio::task::spawn_blocking(move || {
        (
            cli(&base, ADMIN, &["policy", "apply", &f]),
            cli(&base, ADMIN, &["clients", "create", &c]),
            cli(&base, ADMIN, &["projects", "list"]),
            cli(&base, ADMIN, &["budgets"]),
            cli(&base, "wrong-token-000000000000", &["projects", "list"]),
        )
    })
    .await
    .unwrap();
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        outs.0.status.success(),
        "{}",
        String::from_utf8_lossy(&outs.0.stderr)
    );
    assert!(
        text(&outs.0).contains("policy version 1 (author ops)"),
        "{}",
        text(&outs.0)
    );
    assert!(
        outs.1.status.success(),
        "{}",
        String::from_utf8_lossy(&outs.1.stderr)
    );
    let created: Value = serde_json::from_str(&text(&outs.1)).unwrap();
    let key = created["apiKey"].as_str().unwrap();
    assert_eq!(
        created["client"]["apiKeySha256"],
        pag0_policy::validate::api_key_sha256_hex(key)
    );
    assert!(text(&outs.2).contains("sales-ai"));
    assert!(text(&outs.3).contains("COUNTER"));
    assert_eq!(outs.4.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&outs.4.stderr).contains("401"));
}

#[tokio::test]
async fn analytics_cli_prints_groups_json_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let s = Sidecar::sqlite(dir.path());
    let (st, _) = send(
        reqwest::Method::PUT,
        &s.url("/v1/policy"),
        ADMIN,
        Some(policy()),
    )
    .await;
    assert_eq!(st, 200);
    // No `at`: counted at commit time, in the current month.
    let (st, _) = send(
        reqwest::Method::POST,
        &s.url("/v1/sync"),
        SYNC,
        Some(batch(1)),
    )
    .await;
    assert_eq!(st, 200);
    let base = s.base.clone();
    let outs = tokio::task::spawn_blocking(move || {
        (
            cli(&base, ADMIN, &["analytics", "--group-by", "project,client"]),
            cli(
                &base,
                ADMIN,
                &["analytics", "--period", "day", "--format", "json"],
            ),
            cli(&base, ADMIN, &["analytics", "--format", "csv"]),
            cli(&base, ADMIN, &["analytics", "--group-by", "team"]),
        )
    })
    .await
    .unwrap();
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        outs.0.status.success(),
        "{}",
        String::from_utf8_lossy(&outs.0.stderr)
    );
    let table = text(&outs.0);
    let sales = table
        .lines()
        .find(|l| l.starts_with("sales-ai"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(sales.contains("4200"), "{table}");
    assert!(
        table.contains("PROJECT") && table.contains("CLIENT") && table.contains("TOTAL"),
        "{table}"
    );
    let json: Value = serde_json::from_str(&text(&outs.1)).unwrap();
    assert_eq!(
        (json["period"].as_str(), json["total"]["totalCost"].as_str()),
        (Some("day"), Some("4200"))
    );
    let csv = text(&outs.2);
    assert!(csv.starts_with("dimension,key,start,totalCost"), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("project,sales-ai,,4200,1,")),
        "{csv}"
    );
    assert_eq!(outs.3.status.code(), Some(1));
    let err = String::from_utf8_lossy(&outs.3.stderr);
    assert!(
        err.contains("BAD_QUERY") && err.contains("groupBy: \"team\""),
        "{err}"
    );
}

/// The binary against PostgreSQL (fresh schema), when DATABASE_URL is set.
#[tokio::test]
async fn the_binary_serves_from_postgres() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true")
                && std::env::var("PAG0_REQUIRE_PG").map_or(true, |v| v != "1"),
            "DATABASE_URL unset but CI/PAG0_REQUIRE_PG demands the PostgreSQL tests"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "NOT RUN: the_binary_serves_from_postgres (DATABASE_URL unset)"
        );
        return;
    };
    let schema = format!("pag0_bin{}", std::process::id());
    let s = Sidecar::start(&["--database-url", &url, "--database-schema", &schema]);
    let (st, _) = send(
        reqwest::Method::PUT,
        &s.url("/v1/policy"),
        ADMIN,
        Some(policy()),
    )
    .await;
    assert_eq!(st, 200);
    let (_, ack) = send(
        reqwest::Method::POST,
        &s.url("/v1/sync"),
        SYNC,
        Some(batch(1)),
    )
    .await;
    assert_eq!(ack["duplicate"], false, "{ack}");
    let r = reqwest::get(s.url("/readyz"))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(r["store"], "postgres");
    s.signal("-KILL");
    drop(s);
    let s = Sidecar::start(&["--database-url", &url, "--database-schema", &schema]);
    let (_, budgets) = send(reqwest::Method::GET, &s.url("/v1/budgets"), ADMIN, None).await;
    assert_eq!(spent_of(&budgets, ORG_MONTH).as_deref(), Some("4200"));
    drop(s);
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// Two sidecar processes on one store hand out one budget's room once, not twice.
async fn two_sidecars_share_one_room(a: &Sidecar, b: &Sidecar) {
    let (st, _) = send(
        reqwest::Method::PUT,
        &a.url("/v1/policy"),
        ADMIN,
        Some(policy()),
    )
    .await;
    assert_eq!(st, 200);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let url = if i % 2 == 0 {
            a.url("/v1/sync")
        } else {
            b.url("/v1/sync")
        };
        tasks.push(tokio::spawn(async move {
            let body = json!({ "instanceId": format!("envoy-{i}"), "seq": 1,
                               "leases": [ { "counter": "org.daily/2026-11-24", "want": "1200000" } ] });
            let (st, r) = send(reqwest::Method::POST, &url, SYNC, Some(body)).await;
            assert_eq!(st, 200, "{r}");
            r["leases"]["org.daily/2026-11-24"]["granted"].as_str().unwrap().parse::<u64>().unwrap()
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(
        total, 5_000_000,
        "the org's daily budget, handed out exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecar_processes_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = Sidecar::sqlite(dir.path());
    let b = Sidecar::sqlite(dir.path());
    two_sidecars_share_one_room(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecar_processes_on_one_postgres() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        use std::io::Write;
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "DATABASE_URL unset on CI"
        );
        let _ = writeln!(
            std::io::stderr(),
            "NOT RUN: two_sidecar_processes_on_one_postgres (DATABASE_URL unset)"
        );
        return;
    };
    let schema = format!("pag0_fleet{}", std::process::id());
    let a = Sidecar::start(&["--database-url", &url, "--database-schema", &schema]);
    let b = Sidecar::start(&["--database-url", &url, "--database-schema", &schema]);
    two_sidecars_share_one_room(&a, &b).await;
    drop((a, b));
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// `--monthly-report` mails reports: without a relay the sidecar refuses to start, saying so.
#[test]
fn monthly_report_without_smtp_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = command()
        .args(["--listen", "127.0.0.1:0", "--monthly-report"])
        .env_remove("PAG0_SMTP_URL")
        .env_remove("PAG0_MONTHLY_REPORT")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--monthly-report") && err.contains("--smtp-url"),
        "{err}"
    );
}
