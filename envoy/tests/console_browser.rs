//! The Organization Console in a real browser: Debian's Chromium driven by playwright-core
//! (`console/tests/console.mjs`) against a real `pag0-sidecar` (SQLite, approver tokens,
//! `--public-url`), a real Envoy (2 workers, managed mode) and the mock upstream.
//!
//! - the approval link of the Slack notification opens that approval; the approver signs in,
//!   sees only its project's queue, gets 403 on admin routes, approves with a comment, and the
//!   agent's replay then passes through Envoy once;
//! - requests without the session cookie get 401; the admin signs in and the Overview's team
//!   spend equals `/v1/analytics`; a bad edit shows `projects[1].policy.dailyBudget: …`
//!   inline (the same lines `PUT /v1/policy` answers) and cannot be applied; a good one is
//!   diffed and applied with If-Match;
//! - the What-if page loads the last N (default 500, settable) decisions of the audit log —
//!   recorded from the real traffic above through Envoy — and under a draft that blocks
//!   api.salesforce.com lists exactly the recorded Salesforce calls (the audit rows, as many
//!   as the test sent) as allow → deny, with their settled spend; given pasted decisions it
//!   does the same, and the wasm engine answers exactly what the native `pag0_whatif` does;
//! - the Reports page downloads this month's EU AI Act report (same-origin fetch with the
//!   session cookie): the JSON's `complianceStatus` is the API's, the CSV starts with the API's
//!   header, the PDF is a PDF;
//! - the Team page shows sales-ai's violations this month — code, count (= `/v1/analytics`'s
//!   `violations.byCode`, = the audit log's denials, two of them `ENDPOINT_BLOCKED` sent for
//!   it) and the latest of each code (= the newest such audit row) — and, for a team whose
//!   synced history ends in a $6 hour, the anomalies of `/v1/anomalies` with their explanations;
//! - the Audit page shows the API's rows newest first (`order=desc`) — the first page, a
//!   kind/decision/project filter, a time filter that matches nothing, the next page by cursor
//!   — and Verify shows the API's `ok`, `rowsChecked` and head.
//!
//! Screenshots of every page: `target/console-shots/`.
// Test crate: failing loudly is the point (clippy.toml only covers #[test] fns, not helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, endpoints};
use pag0_envoy::harness::{repo_root, Sidecar, SidecarConfig};
use pag0_envoy::{Agent, Call, Envoy, EnvoyConfig, MockUpstream, Reply};
use serde_json::{json, Value};

const ADMIN: &str = "console-admin-token-0123456789";
const SECRET: &str = "console-sync-secret-0123456789";
const LEAD: &str = "sales-lead@acme.com";
const LEAD_TOKEN: &str = "console-sales-lead-token-0123456789";
const OTHER: &str = "marketing-lead@acme.com";
const OTHER_TOKEN: &str = "console-marketing-lead-token-01234";
const SALES_KEY: &str = "sk-console-sales";
const MKT_KEY: &str = "sk-console-marketing";
const WAIT: Duration = Duration::from_secs(30);

fn policy(slack: SocketAddr) -> Value {
    json!({
        "orgId": "acme-corp",
        "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "1000000000", "dailyBudget": "500000000" },
        "alerts": { "channels": ["slack"], "slackWebhookUrl": format!("http://{slack}/slack") },
        "endpoints": endpoints(),
        "projects": [
            { "id": "sales-ai", "name": "Sales AI",
              "policy": { "monthlyBudget": "100000000", "dailyBudget": "50000000",
                          "approvalWorkflow": { "enabled": true, "approvers": [LEAD], "requireApprovalAbove": "1500" } } },
            { "id": "marketing", "name": "Marketing",
              "policy": { "monthlyBudget": "100000000", "dailyBudget": "40000000",
                          "approvalWorkflow": { "enabled": true, "approvers": [OTHER], "requireApprovalAbove": "5000" } } },
            { "id": "research", "name": "Research", "policy": { "monthlyBudget": "900000000" } }
        ],
        "clients": [ client("sales-agent", "sales-ai", SALES_KEY), client("marketing-agent", "marketing", MKT_KEY),
                     client("research-agent", "research", "sk-console-research") ]
    })
}

/// Slack-style receiver: the `text` of every POST.
fn slack_receiver(got: Arc<Mutex<Vec<String>>>) -> (SocketAddr, tokio::runtime::Runtime) {
    use axum::extract::State;
    use axum::routing::post;
    use axum::{Json, Router};
    async fn slack(
        State(got): State<Arc<Mutex<Vec<String>>>>,
        Json(v): Json<Value>,
    ) -> &'static str {
        got.lock()
            .unwrap()
            .push(v["text"].as_str().unwrap_or_default().to_string());
        "ok"
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/slack", post(slack)).with_state(got);
    rt.spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, rt)
}

/// The sidecar on a port known before it starts (its `--public-url` names it). A port taken
/// by someone else between the probe and the bind is retried with another.
fn start_sidecar(dir: &std::path::Path) -> Sidecar {
    let mut last = String::new();
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = SidecarConfig {
            data_dir: dir.to_path_buf(),
            database_url: None,
            database_schema: None,
            admin_token: ADMIN.into(),
            sync_secret: SECRET.into(),
            lease_ttl_ms: 30_000,
            port,
        };
        let args: Vec<String> = [
            "--approver-token",
            &format!("{LEAD}={LEAD_TOKEN}"),
            "--approver-token",
            &format!("{OTHER}={OTHER_TOKEN}"),
            "--public-url",
            &format!("http://127.0.0.1:{port}"),
            // Detection every half second, so the research team's spike below is found.
            "--anomaly-interval-ms",
            "500",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match Sidecar::start_with_args(&cfg, &args) {
            Ok(s) => return s,
            Err(e) => last = format!("{e:#}"),
        }
    }
    panic!("the sidecar did not start: {last}");
}

/// Everything the pages need is there, or the one command that provides it.
fn prerequisites() -> (PathBuf, PathBuf) {
    pag0_envoy::harness::check_prerequisites().unwrap_or_else(|e| panic!("{e}"));
    let root = repo_root();
    let engine = root.join("console/web/pkg/pag0_whatif_bg.wasm");
    assert!(
        engine.exists(),
        "{} is missing: run `make console` (then the sidecar is rebuilt with it)",
        engine.display()
    );
    let tests = root.join("console/tests");
    assert!(
        tests.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `make browser`"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is missing: run `make browser` (apt-get install -y chromium)"
    );
    (tests.join("console.mjs"), root.join("target/console-shots"))
}

/// Runs one phase of the browser script; its `RESULT` line.
fn browser(script: &PathBuf, dir: &std::path::Path, phase: &str, input: Value) -> Value {
    let path = dir.join(format!("browser-{phase}.json"));
    std::fs::write(&path, input.to_string()).unwrap();
    let t0 = Instant::now();
    let out = Command::new("node")
        .arg(script)
        .arg(&path)
        .current_dir(script.parent().unwrap())
        .output()
        .expect("run node (Node 20 or later)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser phase {phase} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!("browser phase {phase}: {:.1} s", t0.elapsed().as_secs_f64());
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line:\n{stdout}\n{stderr}"));
    let v: Value = serde_json::from_str(line).unwrap();
    let errors: Vec<&str> = v["consoleErrors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        // The browser logs every refused fetch (the 401 before sign-in, the 403s probed).
        .filter(|e| !e.starts_with("Failed to load resource"))
        .collect();
    assert!(
        errors.is_empty(),
        "page errors in phase {phase}: {errors:?}"
    );
    v
}

struct Api {
    http: reqwest::blocking::Client,
    base: String,
}

impl Api {
    fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().unwrap()
    }
}

/// Every `/v1/audit` entry matching `filters`, following `nextCursor`.
fn audit_all(api: &Api, filters: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let c = cursor
            .as_ref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let page = api.get(&format!("/v1/audit?{filters}&limit=1000{c}"));
        out.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

fn send(agent: &Agent, call: &Call) -> Reply {
    agent.send(call).unwrap()
}

/// Recorded decisions for the What-if page (a day in the past, so no live counter is
/// involved and the page's opening spend is empty, as in the native run below).
fn recorded() -> Value {
    let d = |id: &str, at: &str, client: &str, host: &str, estimate: &str, outcome: &str| {
        json!({ "id": id, "at": at, "clientId": client, "method": "GET", "authority": host,
                "path": "/cost", "estimate": estimate, "outcome": outcome, "actualCost": estimate })
    };
    json!([
        d("rec-1", "2026-11-24T09:00:00Z", "sales-agent", "api.salesforce.com", "1000", "allow"),
        d("rec-2", "2026-11-24T09:01:00Z", "marketing-agent", "api.deepl.com", "2000", "allow"),
        d("rec-3", "2026-11-24T09:02:00Z", "sales-agent", "api.salesforce.com", "1000", "allow"),
        d("rec-4", "2026-11-24T09:03:00Z", "sales-agent", "api.openai.com", "1200", "allow"),
        d("rec-5", "2026-11-24T09:04:00Z", "marketing-agent", "api.salesforce.com", "1000", "allow"),
        { "id": "rec-6", "at": "2026-11-24T09:05:00Z", "clientId": "sales-agent", "method": "GET",
          "authority": "api.replicate.com", "path": "/v1/run", "estimate": "5000", "outcome": "deny",
          "code": "ENDPOINT_BLOCKED" }
    ])
}

#[test]
fn the_console_in_a_real_browser() {
    let (script, shots) = prerequisites();
    let _ = std::fs::remove_dir_all(&shots);
    let dir = tempfile::tempdir().unwrap();
    let slack_got = Arc::new(Mutex::new(Vec::new()));
    let (slack, _slack_rt) = slack_receiver(slack_got.clone());
    let sidecar = start_sidecar(dir.path());
    let api = Api {
        http: reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        base: sidecar.url(""),
    };
    let mut live = policy(slack);
    // api.replicate.com blocked org-wide, so rec-6 above is a refusal under the live policy.
    live["globalPolicy"]["blockedEndpoints"] = json!(["api.replicate.com"]);
    let r = api
        .http
        .put(sidecar.url("/v1/policy"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(live.to_string())
        .send()
        .unwrap();
    assert!(
        r.status().is_success(),
        "PUT /v1/policy: {}",
        r.text().unwrap()
    );

    // The research team's history, synced as another filter would: ten days of $0.50 an hour,
    // the last completed hour $6 — the periodic detection finds that spike (docs/anomalies.md).
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let hour = 3_600_000;
    let last_hour = now_ms - now_ms.rem_euclid(hour) - hour;
    let history: Vec<Value> = (0..240)
        .map(|h| {
            json!({ "amount": if h == 239 { "6000000" } else { "500000" }, "counters": [],
                    "projectId": "research", "clientId": "research-agent", "host": "api.openai.com",
                    "at": last_hour - (239 - h) * hour + 60_000 })
        })
        .collect();
    let r = api
        .http
        .post(sidecar.url("/v1/sync"))
        .bearer_auth(SECRET)
        .json(&json!({ "instanceId": "history-1", "seq": 1, "usage": history }))
        .send()
        .unwrap();
    assert!(
        r.status().is_success(),
        "history sync: {}",
        r.text().unwrap()
    );

    let mock = MockUpstream::start().unwrap();
    let mut cfg = EnvoyConfig::new(
        json!({ "sidecar": { "cluster": "pag0_sidecar", "authority": "pag0-sidecar",
                             "syncIntervalMs": 500, "timeoutMs": 1000,
                             "failureMode": "closed", "syncSecret": SECRET } }),
        mock.port(),
    );
    cfg.sidecar_port = Some(sidecar.port);
    let envoy = Envoy::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let agent = Agent::new(envoy.port).unwrap();

    // Traffic: the first syncs bring policy and leases; then two teams spend.
    let t0 = Instant::now();
    while send(
        &agent,
        &Call::get("api.salesforce.com", "/echo").key(SALES_KEY),
    )
    .status
        != 200
    {
        assert!(t0.elapsed() < WAIT, "never admitted:\n{}", sidecar.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut allowed = 1;
    // Allowed Salesforce calls: the warm-up and the three below (the What-if's allow → deny).
    let salesforce_sent = 4;
    for i in 0..3 {
        let r = send(
            &agent,
            &Call::get("api.salesforce.com", &format!("/cost?cost=3500&q={i}")).key(SALES_KEY),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        allowed += 1;
    }
    for _ in 0..2 {
        let r = send(
            &agent,
            &Call::post("api.deepl.com", "/v2/translate")
                .key(MKT_KEY)
                .body("text=hello&target_lang=DE"),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        allowed += 1;
    }
    // Refused: api.replicate.com is blocked org-wide (the Team page's violations).
    let blocked_sent = 2;
    for _ in 0..blocked_sent {
        let r = send(
            &agent,
            &Call::get("api.replicate.com", "/v1/run").key(SALES_KEY),
        );
        assert_eq!(
            (r.status, r.code()),
            (403, "ENDPOINT_BLOCKED"),
            "{}",
            r.body
        );
    }
    // Held: sales-ai's threshold is 1500, DeepL costs 2000.
    let held = || {
        Call::post("api.deepl.com", "/v2/translate")
            .key(SALES_KEY)
            .header("x-pag0-requested-by", "agent@acme.com")
            .header("x-pag0-justification", "Q4 pipeline summary")
            .body("text=quarterly pipeline&target_lang=FR")
    };
    let r = send(&agent, &held());
    assert_eq!(r.status, 202, "{}", r.body);
    let approval = r.header("x-pag0-approval-id").unwrap().to_string();
    // And one of marketing's, which the sales lead must not see.
    let r = send(
        &agent,
        &Call::post("api.deepl.com", "/v2/translate")
            .key(MKT_KEY)
            .header("x-pag0-requires-approval", "true")
            .header("x-pag0-requested-by", "mkt-agent@acme.com")
            .body("text=campaign&target_lang=IT"),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let other_approval = r.header("x-pag0-approval-id").unwrap().to_string();

    // The notification carries the console link.
    let t0 = Instant::now();
    let link = loop {
        let found = slack_got.lock().unwrap().iter().find_map(|t| {
            t.contains(&approval)
                .then(|| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("Open in the console: "))
                        .map(str::to_string)
                })
                .flatten()
        });
        if let Some(l) = found {
            break l;
        }
        assert!(
            t0.elapsed() < WAIT,
            "no Slack message with a console link: {:?}",
            slack_got.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        link,
        sidecar.url(&format!("/console/#/approvals/{approval}"))
    );

    // --- the approver, from the link ---
    let a = browser(
        &script,
        dir.path(),
        "approver",
        json!({ "phase": "approver", "base": sidecar.url(""), "approvalLink": link,
                "approverToken": LEAD_TOKEN, "comment": "ok for Q4", "shots": shots }),
    );
    assert_eq!(a["landedOn"], format!("#/approvals/{approval}"));
    assert_eq!(a["shownId"], approval);
    assert_eq!(a["role"], "approver");
    assert_eq!(
        (&a["budgetsStatus"], &a["putStatus"], &a["putNoCsrfStatus"]),
        (&json!(403), &json!(403), &json!(403)),
        "an approver session on admin routes"
    );
    assert_eq!(
        a["queue"],
        json!([approval]),
        "only its own project's approvals"
    );
    assert!(!a["queueAll"]
        .as_array()
        .unwrap()
        .contains(&json!(other_approval)));
    assert_eq!(a["nav"], json!(["Approvals"]));
    assert_eq!(a["statusAfter"], "approved");
    assert!(a["decisionText"].as_str().unwrap().contains("ok for Q4"));
    let stored = api.get(&format!("/v1/approvals/{approval}"));
    assert_eq!(stored["decision"]["by"], LEAD);
    assert_eq!(stored["decision"]["comment"], "ok for Q4");

    // The agent's replay passes through Envoy, once.
    let served = mock.served_on("/v2/translate");
    let r = send(&agent, &held().header("x-pag0-approval-id", &approval));
    assert_eq!((r.status, r.decision()), (200, "allow"), "{}", r.body);
    allowed += 1;
    assert_eq!(mock.served_on("/v2/translate"), served + 1);
    let r = send(&agent, &held().header("x-pag0-approval-id", &approval));
    assert_eq!((r.status, r.code()), (403, "APPROVAL_USED"));
    assert_eq!(
        api.get(&format!("/v1/approvals/{approval}"))["status"],
        "used"
    );

    // Every allowed request has reached the ledger before the admin looks.
    let t0 = Instant::now();
    while api.get("/v1/analytics?period=month&groupBy=project")["total"]["totalRequests"]
        .as_u64()
        .unwrap()
        < allowed
    {
        assert!(t0.elapsed() < WAIT, "usage never reached the sidecar");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Every decision has reached the audit log too (the same sync batches carry them).
    let t0 = Instant::now();
    let decisions = loop {
        let rows = audit_all(&api, "kind=decision");
        let allows = rows.iter().filter(|e| e["decision"] == "allow").count();
        let code = |c: &str| rows.iter().filter(|e| e["code"] == c).count();
        // The last request sent (the used approval's second replay) is in too.
        if allows >= usize::try_from(allowed).unwrap()
            && code("APPROVAL_USED") == 1
            && code("ENDPOINT_BLOCKED") == blocked_sent
        {
            break rows;
        }
        assert!(
            t0.elapsed() < WAIT,
            "decisions never reached the audit log: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let salesforce: Vec<&Value> = decisions
        .iter()
        .filter(|e| e["host"] == "api.salesforce.com" && e["decision"] == "allow")
        .collect();
    assert_eq!(salesforce.len(), salesforce_sent, "{decisions:?}");
    let salesforce_ids: Vec<String> = salesforce
        .iter()
        .map(|e| format!("audit #{}", e["seq"]))
        .collect();
    let salesforce_cost: u64 = salesforce.iter().map(|e| e["cost"].as_u64().unwrap()).sum();

    // The research spike has been detected before the admin looks.
    let t0 = Instant::now();
    let research_anomalies = loop {
        let found = api.get("/v1/anomalies?project=research&limit=1000")["anomalies"].clone();
        if found
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "spend_spike")
        {
            break found;
        }
        assert!(t0.elapsed() < WAIT, "no research anomaly: {found}");
        std::thread::sleep(Duration::from_millis(100));
    };

    // --- the admin ---
    let mut bad = live.clone();
    bad["projects"][1]["policy"]["dailyBudget"] = json!("12x");
    let refused = api
        .http
        .put(sidecar.url("/v1/policy"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(serde_json::to_string_pretty(&bad).unwrap())
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let details = refused.json::<Value>().unwrap()["error"]["details"].clone();
    let mut good = live.clone();
    good["projects"][1]["policy"]["monthlyBudget"] = json!("120000000");
    let mut draft = live.clone();
    draft["globalPolicy"]["blockedEndpoints"]
        .as_array_mut()
        .unwrap()
        .push(json!("api.salesforce.com"));
    let draft_text = serde_json::to_string_pretty(&draft).unwrap();
    let b = browser(
        &script,
        dir.path(),
        "admin",
        json!({ "phase": "admin", "base": sidecar.url(""), "adminToken": ADMIN, "shots": shots,
                "badPolicy": serde_json::to_string_pretty(&bad).unwrap(),
                "badPath": "projects[1].policy.dailyBudget: ",
                "goodPolicy": serde_json::to_string_pretty(&good).unwrap(),
                "whatifDraft": draft_text, "whatifDecisions": recorded(),
                "anomalyTeam": "research", "anomalyTeamName": "Team Research" }),
    );
    assert_eq!(
        b["noCookie"],
        json!({ "budgets": 401, "analytics": 401, "session": 401, "approvals": 401 })
    );
    assert_eq!(b["omitCookie"], 401);
    assert_eq!(b["landedOn"], "#/overview");

    // The Overview shows /v1/analytics' numbers, team by team.
    let month = api.get("/v1/analytics?period=month&groupBy=project");
    let day = api.get("/v1/analytics?period=day&groupBy=project");
    let of = |a: &Value, team: &str, field: &str| {
        a["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["key"] == team)
            .map_or(json!("0"), |g| g[field].clone())
    };
    let rows = b["overview"].as_array().unwrap();
    // Both teams, plus any group analytics reports beside them (denials before a client was
    // known group as `unassigned` now that the decision rows feed analytics).
    let mut teams: Vec<&str> = rows.iter().map(|r| r["team"].as_str().unwrap()).collect();
    let mut want_teams: Vec<&str> = month["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap())
        .chain(["sales-ai", "marketing", "research"])
        .collect();
    teams.sort_unstable();
    want_teams.sort_unstable();
    want_teams.dedup();
    assert_eq!(teams, want_teams, "{rows:?}");
    for row in rows {
        let team = row["team"].as_str().unwrap();
        assert_eq!(row["monthSpend"], of(&month, team, "totalCost"), "{team}");
        assert_eq!(row["daySpend"], of(&day, team, "totalCost"), "{team}");
        assert_eq!(row["savings"], of(&month, team, "savings"), "{team}");
        assert_eq!(
            row["requests"],
            of(&month, team, "totalRequests").to_string(),
            "{team}"
        );
    }
    assert_eq!(b["orgMonth"], month["total"]["totalCost"]);
    // 1000 (warm-up) + 3 × 3500 reported by Salesforce + the approved 2000 replay.
    assert_eq!(of(&month, "sales-ai", "totalCost"), "13500");
    assert_eq!(of(&month, "marketing", "totalCost"), "4000");
    let sales_row = rows.iter().find(|r| r["team"] == "sales-ai").unwrap();
    assert_eq!(sales_row["shownMonthSpend"], "$0.0135");

    // Team: sales-ai's violations this month are the API's, code by code — the counts of
    // /v1/analytics and the time of the newest denial of each code in the audit log (read
    // oldest first here, so the page's newest-first query is checked against another path).
    let sales = month["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == "sales-ai")
        .unwrap();
    let by_code = sales["violations"]["byCode"].as_object().unwrap();
    assert_eq!(
        by_code.get("ENDPOINT_BLOCKED"),
        Some(&json!(blocked_sent)),
        "{sales}"
    );
    let denials = audit_all(&api, "kind=decision&decision=deny&projectId=sales-ai");
    let team = &b["team"];
    assert_eq!(team["heading"], "Team Sales AI");
    assert_eq!(
        team["violationsCount"],
        sales["violations"]["count"].to_string()
    );
    let mut shown: Vec<(String, String, Option<String>)> = team["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["code"].as_str().unwrap().to_string(),
                v["count"].as_str().unwrap().to_string(),
                v["latest"].as_str().map(str::to_string),
            )
        })
        .collect();
    shown.sort();
    let want: Vec<(String, String, Option<String>)> = by_code
        .iter()
        .map(|(code, n)| {
            let rows: Vec<&Value> = denials.iter().filter(|e| e["code"] == *code).collect();
            assert_eq!(json!(rows.len()), *n, "{code}: analytics and the audit log");
            (
                code.clone(),
                n.to_string(),
                rows.last().unwrap()["at"].as_str().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(shown, want, "{team}");
    assert_eq!(
        team["anomaliesCount"],
        api.get("/v1/anomalies?project=sales-ai&limit=1000")["anomalies"]
            .as_array()
            .unwrap()
            .len()
            .to_string()
    );
    // Research: no violation, and its anomalies with their explanations, as the API has them.
    let other = &b["otherTeam"];
    assert_eq!(other["heading"], "Team Research");
    assert_eq!(other["violationsCount"], "0");
    let want: Vec<Value> = research_anomalies
        .as_array()
        .unwrap()
        .iter()
        .map(|a| json!({ "kind": a["kind"], "explanation": a["explanation"] }))
        .collect();
    assert_eq!(other["anomalies"], json!(want));
    assert!(other["anomalies"].as_array().unwrap().iter().any(
        |a| a["kind"] == "spend_spike" && a["explanation"].as_str().unwrap().contains("$6.00")
    ));

    // Budgets: the page's counters are the API's.
    let counters = api.get("/v1/budgets")["counters"].clone();
    let want: Vec<Value> = counters
        .as_array()
        .unwrap()
        .iter()
        .map(|c| json!({ "counter": c["counter"], "spent": c["spent"] }))
        .collect();
    assert_eq!(b["counters"], json!(want));
    assert!(
        b["adminQueue"].as_array().unwrap().len() >= 2,
        "the admin sees every approval"
    );

    // The bad edit: the same `path: reason` lines as PUT /v1/policy, and no apply.
    assert_eq!(b["inlineErrors"], details);
    assert!(details.as_array().unwrap().iter().any(|d| d
        .as_str()
        .unwrap()
        .starts_with("projects[1].policy.dailyBudget: ")));
    assert_eq!(b["applyDisabledWhenBad"], true);
    assert_eq!(b["editorInvalid"], "true");
    // The good edit was diffed and applied with If-Match; the bad one never reached the store.
    assert!(b["diff"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l.as_str().unwrap().contains("120000000")));
    assert_eq!(b["applied"], "Applied as version 2 by admin.");
    assert_eq!(b["history"], json!([2, 1]));
    assert_eq!(
        api.get("/v1/policy")["projects"][1]["policy"]["monthlyBudget"],
        "120000000"
    );

    // What-if over the audit log: the last 500 decisions by default (N settable), and
    // exactly the recorded Salesforce calls go allow → deny, with their settled spend.
    assert_eq!(b["whatifDefaultN"], "500");
    assert_eq!(b["whatifRowsOfThree"], 3);
    assert_eq!(b["whatifLoadedRows"], decisions.len());
    assert!(b["whatifLoadedCount"].as_u64().unwrap() >= allowed);
    let audit_a2d: Vec<&Value> = b["whatifAudit"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "allow → deny")
        .collect();
    let ids: Vec<&str> = audit_a2d
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, salesforce_ids, "{}", b["whatifAudit"]);
    // And nothing else changes: the held requests stay held, the approved replay and the DeepL
    // calls stay allowed, and refusals no policy decides (the control plane not reached yet,
    // the used approval) are not replayed.
    assert_eq!(
        b["whatifAudit"]["rows"].as_array().unwrap().len(),
        salesforce_sent,
        "{}",
        b["whatifAudit"]
    );
    assert!(audit_a2d.iter().all(|r| r["request"]
        .as_str()
        .unwrap()
        .contains("api.salesforce.com")));
    assert_eq!(b["whatifAudit"]["allowToDeny"], salesforce_sent.to_string());
    assert_eq!(
        b["whatifAudit"]["spendRemoved"],
        salesforce_cost.to_string()
    );
    // 1000 (warm-up /echo) + 3 × 3500.
    assert_eq!(salesforce_cost, 11_500);

    // What-if over pasted decisions: exactly the Salesforce calls go allow → deny.
    let a2d: Vec<&str> = b["whatifRows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "allow → deny")
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(a2d, ["rec-1", "rec-3", "rec-5"]);
    assert_eq!(b["whatifAllowToDeny"], "3");
    assert!(b["whatifSource"]
        .as_str()
        .unwrap()
        .contains("decision rows of the audit log"));
    // The wasm build answers what the native crate answers.
    let input = json!({ "decisions": recorded(), "openingSpend": {} }).to_string();
    let native = pag0_whatif::replay(&draft_text, &input);
    assert_eq!(
        serde_json::from_str::<Value>(b["wasm"]["replay"].as_str().unwrap()).unwrap(),
        serde_json::from_str::<Value>(&native).unwrap()
    );
    let native_errors =
        pag0_whatif::validation_errors(&serde_json::to_string_pretty(&bad).unwrap());
    assert_eq!(
        serde_json::from_str::<Value>(b["wasm"]["validate"].as_str().unwrap()).unwrap(),
        json!(native_errors)
    );
    assert_eq!(json!(native_errors), details);
    assert_eq!(b["afterSignOut"], 401);

    // Reports: this month's EU AI Act report downloaded in the page (same-origin fetch with
    // the session cookie) is the API's: the JSON's status, the CSV's header, a real PDF.
    let report = api.get("/v1/reports?template=EU_AI_ACT_COMPLIANCE&format=json&period=month");
    assert!(report["complianceStatus"].is_string(), "{report}");
    assert_eq!(b["reportJsonStatus"], report["complianceStatus"]);
    assert_eq!(b["reportShownStatus"], report["complianceStatus"]);
    let downloads = &b["reportDownloads"];
    let json_text = downloads["json"]["text"].as_str().unwrap();
    let downloaded: Value = serde_json::from_str(json_text).unwrap();
    assert_eq!(downloaded["period"], report["period"]);
    assert_eq!(downloaded["orgId"], "acme-corp");
    assert!(downloads["json"]["name"]
        .as_str()
        .unwrap()
        .ends_with(".json"));
    let csv = api
        .http
        .get(sidecar.url("/v1/reports?template=EU_AI_ACT_COMPLIANCE&format=csv&period=month"))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        downloads["csv"]["text"].as_str().unwrap().lines().next(),
        csv.lines().next()
    );
    assert!(downloads["csv"]["name"].as_str().unwrap().ends_with(".csv"));
    assert_eq!(downloads["pdf"]["head"], "%PDF-");
    assert!(downloads["pdf"]["size"].as_u64().unwrap() > 1000);
    assert!(downloads["pdf"]["name"].as_str().unwrap().ends_with(".pdf"));

    // Audit: the table shows the API's rows (first page, a filter, the next page by cursor),
    // and Verify shows the API's answer.
    let seqs = |v: &Value| -> Vec<u64> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    };
    // Newest first (`order=desc`), the page's default.
    let first = seqs(&api.get("/v1/audit?limit=50&order=desc"));
    assert!(first.windows(2).all(|w| w[0] > w[1]), "{first:?}");
    assert_eq!(
        first[0],
        api.get("/v1/audit/head")["seq"].as_u64().unwrap(),
        "the newest row first"
    );
    assert_eq!(b["auditFirstPage"], json!(first));
    let filtered =
        api.get("/v1/audit?kind=decision&decision=allow&projectId=sales-ai&limit=50&order=desc");
    let want: Vec<Value> = filtered["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            json!({ "seq": e["seq"], "kind": "decision", "decision": "allow", "project": "sales-ai",
                    "host": e["host"], "cost": e["cost"].as_u64().map_or(String::new(), |c| c.to_string()) })
        })
        .collect();
    // The sales-ai allows: the 4 Salesforce calls and the approved DeepL replay.
    assert_eq!(want.len(), salesforce_sent + 1, "{filtered}");
    assert_eq!(b["auditFiltered"], json!(want));
    let five = api.get("/v1/audit?limit=5&order=desc");
    assert_eq!(b["auditFirstOfFive"], json!(seqs(&five)));
    assert_eq!(b["auditFutureRows"], 0);
    assert!(b["auditFutureText"]
        .as_str()
        .unwrap()
        .contains("No entry matches"));
    assert_eq!(b["auditHasNext"], true);
    let cursor = five["nextCursor"].as_str().unwrap();
    assert_eq!(
        b["auditSecondPage"],
        json!(seqs(&api.get(&format!(
            "/v1/audit?limit=5&order=desc&cursor={cursor}"
        ))))
    );
    let verify = api.get("/v1/audit/verify");
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(b["auditVerify"]["ok"], "true");
    assert_eq!(b["auditVerify"]["shown"], "ok");
    assert_eq!(b["auditVerify"]["rowsChecked"], verify["rowsChecked"]);
    assert!(verify["rowsChecked"].as_u64().unwrap() > 5);
    assert_eq!(b["auditVerify"]["head"], verify["head"]["hash"]);
    assert_eq!(b["auditVerify"]["firstBadRow"], "—");

    for name in [
        "sign-in",
        "approval",
        "approval-approved",
        "approvals-approver",
        "overview",
        "team",
        "team-anomalies",
        "budgets",
        "approvals",
        "policy-error",
        "policy-diff",
        "policy-applied",
        "whatif",
        "whatif-audit",
        "reports",
        "audit",
        "audit-filtered",
        "audit-verify",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}"
        );
    }
    drop(envoy);
}
