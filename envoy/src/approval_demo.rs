//! The approval part of `make demo` (managed mode): a `pag0-sidecar` holds the acme policy and
//! the approvals, a second Envoy runs the filter against it, a small Slack-style receiver shows
//! the approvers' message. The product agent's expensive request is held (`202`), the product
//! team lead approves it, the agent replays it (`200`), and a second replay is refused
//! (`403 APPROVAL_USED`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::harness::{Sidecar, SidecarConfig};
use crate::{Agent, Call, Envoy, EnvoyConfig, MockUpstream, Reply};

const ADMIN: &str = "demo-admin-token-0123456789";
const SECRET: &str = "demo-sync-secret-0123456789";
const LEAD: &str = "product-lead@acme.com";
const LEAD_TOKEN: &str = "demo-product-lead-token-0123456789";

/// Runs the story; `Err` when a step did not go as scripted. With `serve_console`, the
/// sidecar, its console and the managed Envoy then stay up until the process is stopped.
pub fn run(mock: &MockUpstream, mut policy: Value, serve_console: bool) -> Result<()> {
    println!("\n== Approvals (managed mode: Envoy + pag0-sidecar) ==\n");
    let slack = SlackReceiver::start()?;
    // Notifications: Slack only (the demo has no SMTP relay), to the receiver below.
    let alerts = policy
        .get_mut("alerts")
        .and_then(Value::as_object_mut)
        .context("acme.json has no alerts")?;
    alerts.insert("channels".into(), json!(["slack"]));
    alerts.insert(
        "slackWebhookUrl".into(),
        json!(format!("http://{}/slack", slack.addr)),
    );

    // Managed mode leases each Envoy 1/16 of a budget at first, and this build refuses a single
    // request larger than its slice (503, see plugin/README.md "Limits"): product-ai's daily
    // budget is raised from $0.73 to $5 here so the $0.13 request fits the first slice.
    let product = policy
        .get_mut("projects")
        .and_then(Value::as_array_mut)
        .and_then(|ps| {
            ps.iter_mut()
                .find(|p| p.get("id").and_then(Value::as_str) == Some("product-ai"))
        })
        .and_then(|p| p.get_mut("policy"))
        .and_then(Value::as_object_mut)
        .context("acme.json has no project product-ai")?;
    product.insert("dailyBudget".into(), json!("5000000"));
    println!(
        "(product-ai's daily budget raised to $5 for this part: the first lease slice is 1/16)"
    );

    let dir = tempfile::tempdir()?;
    // The approver's token, given to this sidecar only (the harness passes no approvers from
    // the environment).
    let sidecar = Sidecar::start_with_args(
        &SidecarConfig {
            data_dir: dir.path().to_path_buf(),
            database_url: None,
            database_schema: None,
            admin_token: ADMIN.into(),
            sync_secret: SECRET.into(),
            lease_ttl_ms: 30_000,
            port: 0,
        },
        &[
            "--approver-token".to_string(),
            format!("{LEAD}={LEAD_TOKEN}"),
        ],
    )?;
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let r = http
        .put(sidecar.url("/v1/policy"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(policy.to_string())
        .send()?;
    if !r.status().is_success() {
        bail!("PUT /v1/policy: {} {}", r.status(), r.text()?);
    }
    println!(
        "pag0-sidecar on 127.0.0.1:{} (SQLite), acme policy PUT; approver token for {LEAD}",
        sidecar.port
    );
    let mut cfg = EnvoyConfig::new(
        json!({ "sidecar": { "cluster": "pag0_sidecar", "authority": "pag0-sidecar",
                             "syncIntervalMs": 500, "timeoutMs": 1000,
                             "failureMode": "closed", "syncSecret": SECRET } }),
        mock.port(),
    );
    cfg.sidecar_port = Some(sidecar.port);
    let envoy = Envoy::start(&cfg).context("starting the managed Envoy")?;
    let agent = Agent::new(envoy.port)?;
    println!(
        "managed Envoy on 127.0.0.1:{}, policy and budget leases from the sidecar",
        envoy.port
    );
    // The first syncs bring the policy and the leases: wait until a cheap call passes.
    let t0 = Instant::now();
    loop {
        let r = agent.send(
            &Call::post("api.deepl.com", "/v2/translate")
                .key("sk-demo-marketing")
                .body("text=warm-up&target_lang=DE"),
        )?;
        if r.status == 200 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!(
                "the managed Envoy never admitted a request: {} {}\n{}",
                r.status,
                r.body,
                sidecar.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let request = || {
        Call::post("api.openai.com", "/v1/chat/completions")
            .key("sk-demo-product")
            .header("x-pag0-justification", "Bulk lead qualification")
            .header("x-pag0-requested-by", "john.doe@acme.com")
            .json(
                &json!({ "model": "gpt-4", "max_tokens": 2000, "stream": false,
                           "messages": [{ "role": "user", "content": "Qualify these 40 leads" }] }),
            )
    };
    let mut failures = Vec::new();
    let mut expect = |step: &str, ok: bool, shown: String| {
        println!("  {} {step}: {shown}", if ok { "✓" } else { "✗" });
        if !ok {
            failures.push(step.to_owned());
        }
    };

    // 1. Held.
    let r = agent.send(&request())?;
    let id = r
        .header("x-pag0-approval-id")
        .unwrap_or_default()
        .to_owned();
    expect(
        "product-agent asks for gpt-4, max_tokens 2000",
        r.status == 202 && !id.is_empty(),
        format!("{} {} {}", r.status, r.decision(), r.body),
    );
    // 2. The approvers were told (Slack).
    let msg = slack.wait_for(&id, Duration::from_secs(10));
    expect(
        "Slack message to the approvers",
        msg.as_deref().is_some_and(|m| m.contains(&id)),
        msg.map(|m| m.lines().next().unwrap_or_default().to_owned())
            .unwrap_or_else(|| "none arrived".into()),
    );
    // 3. Replayed too early.
    let r = agent.send(&request().header("x-pag0-approval-id", &id))?;
    expect(
        "replay before a decision",
        r.status == 403 && r.code() == "APPROVAL_PENDING",
        summary(&r),
    );
    // 4. The team lead approves (what `pag0-sidecar approvals approve ID` does).
    let a = http
        .post(sidecar.url(&format!("/v1/approvals/{id}/approve")))
        .bearer_auth(LEAD_TOKEN)
        .header("content-type", "application/json")
        .body(json!({ "comment": "ok for the Q4 pipeline" }).to_string())
        .send()?;
    let status = a.status().as_u16();
    let body: Value = a.json().unwrap_or(Value::Null);
    expect(
        &format!("{LEAD} approves {id}"),
        status == 200 && body.get("status") == Some(&json!("approved")),
        format!(
            "{status} status {}",
            body.get("status").unwrap_or(&Value::Null)
        ),
    );
    // 5. The replay passes once.
    let r = agent.send(&request().header("x-pag0-approval-id", &id))?;
    expect(
        "replay with x-pag0-approval-id",
        r.status == 200 && r.decision() == "allow",
        summary(&r),
    );
    // 6. Never twice.
    let r = agent.send(&request().header("x-pag0-approval-id", &id))?;
    expect(
        "the same replay again",
        r.status == 403 && r.code() == "APPROVAL_USED",
        summary(&r),
    );

    // The filter adds its counts to Envoy's stats on its tick (≤ 1 s later): wait for them.
    let printed = [
        "pag0.approvals.requested",
        "pag0.approvals.replayed",
        "pag0.requests.denied.APPROVAL_PENDING",
        "pag0.requests.denied.APPROVAL_USED",
    ];
    for name in printed {
        envoy.wait_counter(name, Duration::from_secs(3), |v| v >= 1);
    }
    let c = envoy.pag0_counters();
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    println!(
        "\n  pag0.approvals.requested {}  pag0.approvals.replayed {}  denied APPROVAL_PENDING {}  APPROVAL_USED {}",
        get("pag0.approvals.requested"),
        get("pag0.approvals.replayed"),
        get("pag0.requests.denied.APPROVAL_PENDING"),
        get("pag0.requests.denied.APPROVAL_USED"),
    );
    if !failures.is_empty() {
        bail!(
            "the approval story did not go as scripted: {failures:?}\n--- sidecar log ---\n{}",
            sidecar.log()
        );
    }
    println!("\nThe approval went as scripted: held, approved by the team lead, replayed once.");
    print_audit(&http, &sidecar)?;
    write_report(&http, &sidecar)?;
    if serve_console {
        println!(
            "\n== The Organization Console ==\n\n  {}\n  admin token:    {ADMIN}\n  approver token: {LEAD_TOKEN} ({LEAD})\n  \
             agents reach the managed Envoy on 127.0.0.1:{} (e.g. x-pag0-api-key: sk-demo-marketing)\n\n\
             Running until Ctrl-C.",
            sidecar.url("/console/"),
            envoy.port
        );
        loop {
            std::thread::park();
        }
    }
    Ok(())
}

/// How many of the audit log's decision events the demo prints.
const LAST_DECISIONS: usize = 8;

/// The decision log (issue 15): once the filter's events of the story reached the sidecar (the
/// last, `APPROVAL_USED`, rides a sync within a second), the last few decisions as the audit
/// log holds them, and the hash chain verified. An unverifiable chain fails the demo.
fn print_audit(http: &reqwest::blocking::Client, sidecar: &Sidecar) -> Result<()> {
    fn f<'a>(v: &'a Value, name: &str) -> &'a Value {
        v.get(name).unwrap_or(&Value::Null)
    }
    let page = |cursor: Option<&str>| -> Result<Value> {
        let mut req = http
            .get(sidecar.url("/v1/audit"))
            .bearer_auth(ADMIN)
            .query(&[("kind", "decision"), ("limit", "1000")]);
        if let Some(c) = cursor {
            req = req.query(&[("cursor", c)]);
        }
        Ok(req.send()?.error_for_status()?.json()?)
    };
    let all = || -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let v = page(cursor.as_deref())?;
            out.extend(f(&v, "entries").as_array().cloned().unwrap_or_default());
            match f(&v, "nextCursor").as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(out),
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = all()?;
        if rows.iter().any(|r| f(r, "code") == "APPROVAL_USED") {
            break rows;
        }
        if Instant::now() > deadline {
            bail!(
                "the story's decisions never reached the audit log ({} rows)\n--- sidecar log ---\n{}",
                rows.len(),
                sidecar.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!(
        "\n== The decision log (GET /v1/audit?kind=decision: {} rows, the last {LAST_DECISIONS}) ==\n",
        rows.len()
    );
    println!(
        "  {:<24} {:<9} {:<25} {:<12} {:<15} {:<15} {:>9} {:>9}",
        "at", "decision", "code", "project", "client", "host", "estimate", "cost"
    );
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let money = |v: &Value| v.as_u64().map_or("-".to_string(), |m| m.to_string());
    for r in rows.iter().skip(rows.len().saturating_sub(LAST_DECISIONS)) {
        println!(
            "  {:<24} {:<9} {:<25} {:<12} {:<15} {:<15} {:>9} {:>9}",
            text(f(r, "at")),
            text(f(r, "decision")),
            text(f(r, "code")),
            text(f(r, "projectId")),
            text(f(r, "clientId")),
            text(f(r, "host")),
            money(f(r, "estimate")),
            money(f(r, "cost")),
        );
    }
    let v: Value = http
        .get(sidecar.url("/v1/audit/verify"))
        .bearer_auth(ADMIN)
        .send()?
        .error_for_status()?
        .json()?;
    if f(&v, "ok") != &json!(true) {
        bail!("the audit chain does not verify: {v}");
    }
    println!(
        "\n  audit chain verified: ok, {} rows checked, head {}",
        f(&v, "rowsChecked"),
        f(f(&v, "head"), "hash")
            .as_str()
            .or(f(&v, "head").as_str())
            .unwrap_or("?")
    );
    Ok(())
}

/// The EU AI Act report of this month (issue 17) as a PDF: once the sidecar has the usage the
/// filter syncs (every 500 ms), `GET /v1/reports?format=pdf` to target/demo/acme-eu-ai-act.pdf.
fn write_report(http: &reqwest::blocking::Client, sidecar: &Sidecar) -> Result<()> {
    let get = |format: &str| {
        http.get(sidecar.url(&format!(
            "/v1/reports?template=EU_AI_ACT_COMPLIANCE&period=month&format={format}"
        )))
        .bearer_auth(ADMIN)
        .send()
        .and_then(reqwest::blocking::Response::error_for_status)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let report: Value = loop {
        let r: Value = get("json")?.json()?;
        let spent = r.pointer("/aiSystems/total/spend").and_then(Value::as_str);
        if spent != Some("0") || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let dir = crate::harness::repo_root().join("target/demo");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("acme-eu-ai-act.pdf");
    std::fs::write(&path, get("pdf")?.bytes()?)?;
    let path = path.canonicalize().unwrap_or(path);
    println!(
        "\n== EU AI Act compliance report ==\n\n  {}\n  spend this month {} USD, status {} (failing: {})",
        path.display(),
        report.pointer("/aiSystems/total/spendUsd").and_then(Value::as_str).unwrap_or("?"),
        report.get("complianceStatus").and_then(Value::as_str).unwrap_or("?"),
        report.get("failingChecks").unwrap_or(&Value::Null)
    );
    Ok(())
}

fn summary(r: &Reply) -> String {
    if r.decision() == "allow" {
        format!(
            "{} allow, project {}, estimate {}",
            r.status,
            r.header("x-pag0-project").unwrap_or("-"),
            r.header("x-pag0-estimated-cost").unwrap_or("-")
        )
    } else {
        format!("{} {}", r.status, r.code())
    }
}

/// An HTTP listener on 127.0.0.1:0 keeping the `text` of every JSON POST (Slack webhook shape).
struct SlackReceiver {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

impl SlackReceiver {
    fn start() -> Result<Self> {
        use axum::extract::State;
        use axum::routing::post;
        use axum::{Json, Router};
        type Got = Arc<Mutex<Vec<String>>>;
        async fn hook(State(got): State<Got>, Json(v): Json<Value>) -> &'static str {
            let text = v
                .get("text")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            if let Ok(mut g) = got.lock() {
                g.push(text);
            }
            "ok"
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let got: Got = Arc::default();
        let router = Router::new()
            .route("/slack", post(hook))
            .with_state(got.clone());
        rt.spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(SlackReceiver { addr, got, _rt: rt })
    }

    /// The first message containing `needle` (other alerts may arrive before it).
    fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        let t0 = Instant::now();
        loop {
            let first = self
                .got
                .lock()
                .ok()
                .and_then(|g| g.iter().find(|m| m.contains(needle)).cloned());
            if first.is_some() || t0.elapsed() > timeout {
                return first;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
