//! Approvals end to end: a real Envoy (2 workers) running the filter in managed mode, a real
//! `pag0-sidecar` (SQLite in a tempdir) with approver tokens and SMTP, a Slack-style receiver
//! (axum on 127.0.0.1:0) and a small SMTP sink on loopback.
//!
//! - a request above `requireApprovalAbove` → `202` + `x-pag0-approval-id`, never reaching the
//!   upstream; the approvers' e-mail and the Slack message arrive (with the justification);
//! - an approver of another project and the requester itself get `403` from the API;
//! - approve → replay `200` (upstream reached once) → replay again `403 APPROVAL_USED`;
//! - a replay before the decision → `403 APPROVAL_PENDING`; deny → `403 APPROVAL_DENIED`;
//!   another body at replay → `403 APPROVAL_MISMATCH`; past `expiresAt` → `403 APPROVAL_EXPIRED`;
//! - twenty concurrent replays of one approval → exactly one `200`.
// Test crate: failing loudly is the point (clippy.toml only covers #[test] fns, not helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pag0_envoy::harness::{Sidecar, SidecarConfig};
use pag0_envoy::{Agent, Call, Envoy, EnvoyConfig, MockUpstream, Reply};
use serde_json::{json, Value};

const ADMIN: &str = "admin-token-0123456789abcdef";
const SECRET: &str = "sync-secret-0123456789abcdef";
const LEAD: &str = "lead@acme.com";
const LEAD_TOKEN: &str = "lead-approver-token-0123456789";
const OTHER: &str = "other-lead@acme.com";
const OTHER_TOKEN: &str = "other-approver-token-0123456789";
/// deepl's per-request price in the test catalogue (above every threshold below).
const DEEPL: u64 = 2000;
/// Bounded waits for things that happen asynchronously (never a timing assertion).
const WAIT: Duration = Duration::from_secs(30);

// === the sidecar, with approver tokens and SMTP ===

/// The harness's sidecar (SQLite in `dir`, 127.0.0.1:0) with two approvers and `smtp` as its
/// relay.
fn start_sidecar(dir: &Path, smtp: SocketAddr) -> Sidecar {
    let cfg = SidecarConfig {
        data_dir: dir.to_path_buf(),
        database_url: None,
        database_schema: None,
        admin_token: ADMIN.into(),
        sync_secret: SECRET.into(),
        lease_ttl_ms: 30_000,
        port: 0,
    };
    let args = [
        "--approver-token".to_string(),
        format!("{LEAD}={LEAD_TOKEN}"),
        "--approver-token".to_string(),
        format!("{OTHER}={OTHER_TOKEN}"),
        "--smtp-url".to_string(),
        format!("smtp://{smtp}"),
        "--smtp-from".to_string(),
        "pag0@acme.com".to_string(),
    ];
    Sidecar::start_with_args(&cfg, &args).unwrap()
}

// === the SMTP sink and the Slack receiver (shared with e2e_alerts.rs) ===

#[path = "common/sinks.rs"]
mod sinks;
use sinks::{slack_receiver, smtp_sink, Inbox};

// === the stack ===

struct Stack {
    envoy: Envoy,
    mock: MockUpstream,
    sidecar: Sidecar,
    agent: Agent,
    inbox: Arc<Inbox>,
    http: reqwest::blocking::Client,
    _slack_rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn approval_workflow(approver: &str, extra: Value) -> Value {
    let mut w = json!({ "enabled": true, "approvers": [approver], "requireApprovalAbove": "1500" });
    for (k, v) in extra.as_object().unwrap() {
        w[k] = v.clone();
    }
    json!({ "approvalWorkflow": w })
}

/// With the response cache on: a replay must never be answered from it.
fn cached(mut project: Value) -> Value {
    project["cache"] = json!({ "enabled": true, "sharedCache": true, "defaultTTL": 600 });
    project
}

/// p1 (approver LEAD, response cache on), p2 (approver OTHER), p3 (LEAD, approvals expire
/// after 1 s).
fn policy(slack: SocketAddr) -> Value {
    json!({
        "orgId": "test-org",
        "timezone": "UTC",
        "globalPolicy": {
            "monthlyBudget": "1000000000",
            "allowedCategories": ["translation", "llm", "search", "data-analysis"]
        },
        "alerts": { "channels": ["email", "slack"], "recipients": ["cfo@acme.com"],
                    "slackWebhookUrl": format!("http://{slack}/slack") },
        "endpoints": endpoints(),
        "projects": [
            cached(project("p1", 100_000_000, approval_workflow(LEAD, json!({})))),
            project("p2", 100_000_000, approval_workflow(OTHER, json!({}))),
            project("p3", 100_000_000, approval_workflow(LEAD, json!({ "expiresAfter": 1 }))),
        ],
        "clients": [
            client("c1", "p1", "sk-test-1"),
            client("c2", "p2", "sk-test-2"),
            client("c3", "p3", "sk-test-3"),
        ]
    })
}

impl Stack {
    fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Arc::new(Inbox::default());
        let smtp = smtp_sink(inbox.clone());
        let (slack, slack_rt) = slack_receiver(inbox.clone());
        let sidecar = start_sidecar(dir.path(), smtp);
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let r = http
            .put(sidecar.url("/v1/policy"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(policy(slack).to_string())
            .send()
            .unwrap();
        let status = r.status();
        assert!(
            status.is_success(),
            "PUT /v1/policy: {status} {}",
            r.text().unwrap_or_default()
        );
        let mock = MockUpstream::start().unwrap();
        let mut cfg = EnvoyConfig::new(
            // timeoutMs: twenty replays consume at once, and a debug sidecar on a loaded
            // 2-core machine took over a second to answer the last of them (a 503 retry, by
            // design); what the tests check is the exactly-once consumption, not latency.
            json!({ "sidecar": { "cluster": "pag0_sidecar", "authority": "pag0-sidecar",
                                 "syncIntervalMs": 500, "timeoutMs": 5000,
                                 "failureMode": "closed", "syncSecret": SECRET } }),
            mock.port(),
        );
        cfg.sidecar_port = Some(sidecar.port);
        let envoy = Envoy::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
        let agent = Agent::new(envoy.port).unwrap();
        let s = Stack {
            envoy,
            mock,
            sidecar,
            agent,
            inbox,
            http,
            _slack_rt: slack_rt,
            _dir: dir,
        };
        // Policy and leases arrive with the first syncs: a cheap request (no approval) passes.
        let t0 = Instant::now();
        loop {
            let r = s.send(&Call::post("api.salesforce.com", "/echo").key("sk-test-1"));
            if r.status == 200 {
                break;
            }
            assert!(
                t0.elapsed() < WAIT,
                "never allowed under the sidecar's policy: {} {}\n{}\n{}",
                r.status,
                r.body,
                s.envoy.log(),
                s.sidecar.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        every_worker_has_the_policy(&s.agent, &s.envoy);
        s
    }

    fn send(&self, call: &Call) -> Reply {
        self.agent.send(call).unwrap_or_else(|e| {
            panic!(
                "request failed: {e:#}\n{}\n{}",
                self.envoy.log(),
                self.sidecar.log()
            )
        })
    }

    /// POST /v1/approvals/{id}/{approve|deny} with an approver token: (status, body).
    fn decide(&self, id: &str, action: &str, token: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.sidecar.url(&format!("/v1/approvals/{id}/{action}")))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(json!({ "comment": "e2e" }).to_string())
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    fn approval(&self, id: &str) -> Value {
        self.http
            .get(self.sidecar.url(&format!("/v1/approvals/{id}")))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// Sends a request that needs approval; asserts the `202` and returns the approval id.
    fn ask(&self, call: &Call) -> String {
        let r = self.send(call);
        assert_eq!(
            r.status,
            202,
            "expected 202: {} {}\n{}\n{}",
            r.status,
            r.body,
            self.envoy.log(),
            self.sidecar.log()
        );
        assert_eq!(r.decision(), "pending");
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{:?}",
            r.headers
        );
        let body = r.json();
        let id = r.header("x-pag0-approval-id").unwrap().to_string();
        assert_eq!(body["approvalId"], id.as_str());
        assert_eq!(body["status"], "pending");
        assert!(body["expiresAt"].as_str().is_some(), "{body}");
        assert_eq!(body.as_object().unwrap().len(), 5, "{body}");
        id
    }
}

fn translate(key: &str, text: &str) -> Call {
    Call::post("api.deepl.com", "/v2/translate?formality=more")
        .key(key)
        .json(&json!({ "text": [text], "target_lang": "EN" }))
}

/// An agent's request that may need approval names its requester.
fn asked(call: Call) -> Call {
    call.header("x-pag0-requested-by", "agent@acme.com")
}

fn replay(call: Call, id: &str) -> Call {
    call.header("x-pag0-approval-id", id)
}

/// Waits until `cond` holds on the inbox (deliveries are asynchronous).
fn wait_inbox(inbox: &Inbox, cond: impl Fn(&Inbox) -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < WAIT {
        if cond(inbox) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond(inbox)
}

#[test]
fn held_approved_replayed_once_and_every_refusal() {
    let s = Stack::start();
    let served0 = s.mock.served_on("/v2/translate");

    // 1. Held: 202, nothing reaches the upstream.
    let ask = translate("sk-test-1", "hallo").header("x-pag0-justification", "Q4 pipeline summary");
    let ask = ask.header("x-pag0-requested-by", "agent-7@acme.com");
    let id = s.ask(&ask);
    assert_eq!(s.mock.served_on("/v2/translate"), served0);
    let stored = s.approval(&id);
    assert_eq!(stored["projectId"], "p1");
    assert_eq!(stored["clientId"], "c1");
    assert_eq!(stored["method"], "POST");
    assert_eq!(stored["authority"], "api.deepl.com");
    assert_eq!(stored["path"], "/v2/translate?formality=more");
    assert_eq!(stored["estimatedCost"], DEEPL.to_string());
    assert_eq!(stored["justification"], "Q4 pipeline summary");
    assert_eq!(stored["requestedBy"], "agent-7@acme.com");
    assert!(stored["policyVersion"].as_u64().unwrap() >= 1);
    assert_eq!(
        s.envoy
            .wait_counter("pag0.approvals.requested", WAIT, |v| v >= 1),
        1
    );

    // 2. The approvers were told: e-mail to the lead, Slack message, both naming the request.
    assert!(
        wait_inbox(&s.inbox, |i| i.mails.lock().unwrap().iter().any(
            |(to, data)| to.iter().any(|t| t == LEAD) && data.contains(&id)
        )),
        "no e-mail to {LEAD} naming {id}: {:?}\n{}",
        s.inbox.mails.lock().unwrap(),
        s.sidecar.log()
    );
    assert!(
        wait_inbox(&s.inbox, |i| i.slack.lock().unwrap().iter().any(|v| {
            let t = v.to_string();
            t.contains(&id) && t.contains("Q4 pipeline summary")
        })),
        "no Slack message naming {id}: {:?}",
        s.inbox.slack.lock().unwrap()
    );

    // 3. Before any decision, a replay is 403 APPROVAL_PENDING (and does not use it).
    let r = s.send(&replay(translate("sk-test-1", "hallo"), &id));
    assert_eq!(
        (r.status, r.code()),
        (403, "APPROVAL_PENDING"),
        "{}",
        r.body
    );

    // 4. Who may not decide: an approver of another project, the requester itself.
    let (st, body) = s.decide(&id, "approve", OTHER_TOKEN);
    assert_eq!(st, 403, "another project's approver: {body}");
    let self_ask = translate("sk-test-1", "self").header("x-pag0-requested-by", LEAD);
    let self_id = s.ask(&self_ask);
    let (st, body) = s.decide(&self_id, "approve", LEAD_TOKEN);
    assert_eq!(st, 403, "the requester approving its own request: {body}");

    // 5. Approved by the lead → the replay passes once, the upstream is reached once.
    let (st, body) = s.decide(&id, "approve", LEAD_TOKEN);
    assert_eq!(st, 200, "{body}");
    let r = s.send(&replay(translate("sk-test-1", "hallo"), &id));
    assert_eq!(r.status, 200, "{}\n{}", r.body, s.envoy.log());
    assert_eq!(r.decision(), "allow");
    assert_eq!(r.header("x-pag0-project"), Some("p1"));
    assert_eq!(s.mock.served_on("/v2/translate"), served0 + 1);
    assert_eq!(s.approval(&id)["status"], "used");
    let r = s.send(&replay(translate("sk-test-1", "hallo"), &id));
    assert_eq!((r.status, r.code()), (403, "APPROVAL_USED"), "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "APPROVAL_USED");
    assert_eq!(s.mock.served_on("/v2/translate"), served0 + 1);

    // 6. Another body at replay → APPROVAL_MISMATCH; the real request still passes afterwards.
    let id2 = s.ask(&asked(translate("sk-test-1", "zwei")));
    assert_eq!(s.decide(&id2, "approve", LEAD_TOKEN).0, 200);
    let r = s.send(&replay(translate("sk-test-1", "zwei!"), &id2));
    assert_eq!(
        (r.status, r.code()),
        (403, "APPROVAL_MISMATCH"),
        "{}",
        r.body
    );
    let r = s.send(&replay(translate("sk-test-1", "zwei"), &id2));
    assert_eq!(r.status, 200, "{}", r.body);

    // 7. Denied → APPROVAL_DENIED.
    let id3 = s.ask(&asked(translate("sk-test-1", "drei")));
    assert_eq!(s.decide(&id3, "deny", LEAD_TOKEN).0, 200);
    let r = s.send(&replay(translate("sk-test-1", "drei"), &id3));
    assert_eq!((r.status, r.code()), (403, "APPROVAL_DENIED"), "{}", r.body);

    // 8. Expired (p3: expiresAfter 1 s) → APPROVAL_EXPIRED, and too late to approve.
    let id4 = s.ask(&asked(translate("sk-test-3", "vier")));
    let t0 = Instant::now();
    let mut r = s.send(&replay(translate("sk-test-3", "vier"), &id4));
    while r.code() == "APPROVAL_PENDING" && t0.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(250));
        r = s.send(&replay(translate("sk-test-3", "vier"), &id4));
    }
    assert_eq!(
        (r.status, r.code()),
        (403, "APPROVAL_EXPIRED"),
        "{}",
        r.body
    );
    assert_eq!(s.decide(&id4, "approve", LEAD_TOKEN).0, 409);

    // Every refusal reached no upstream; counters name each code.
    assert_eq!(s.mock.served_on("/v2/translate"), served0 + 2);
    // Counters reach Envoy's stats on the filter's tick: wait (bounded) for each value.
    for (name, want) in [
        ("pag0.approvals.requested", 5),
        ("pag0.approvals.replayed", 2),
        ("pag0.requests.denied.APPROVAL_USED", 1),
        ("pag0.requests.denied.APPROVAL_MISMATCH", 1),
        ("pag0.requests.denied.APPROVAL_DENIED", 1),
        ("pag0.requests.denied.APPROVAL_EXPIRED", 1),
    ] {
        let v = s.envoy.wait_counter(name, WAIT, |v| v >= want);
        assert_eq!(v, want, "{name}: {:?}", s.envoy.pag0_counters());
    }
    assert!(
        s.envoy
            .wait_counter("pag0.requests.denied.APPROVAL_PENDING", WAIT, |v| v >= 1)
            >= 1
    );
}

#[test]
fn twenty_concurrent_replays_of_one_approval_let_exactly_one_through() {
    let s = Stack::start();
    let served0 = s.mock.served_on("/v2/translate");
    let id = s.ask(&asked(translate("sk-test-1", "parallel")));
    assert_eq!(s.decide(&id, "approve", LEAD_TOKEN).0, 200);
    let barrier = Arc::new(std::sync::Barrier::new(20));
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let agent = s.agent.clone();
            let barrier = barrier.clone();
            let call =
                replay(translate("sk-test-1", "parallel"), &id).header("connection", "close");
            std::thread::spawn(move || {
                barrier.wait();
                agent.send(&call).map(|r| (r.status, r.code().to_string()))
            })
        })
        .collect();
    let results: Vec<(u16, String)> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    let ok = results.iter().filter(|(st, _)| *st == 200).count();
    let used = results
        .iter()
        .filter(|(st, code)| *st == 403 && code == "APPROVAL_USED")
        .count();
    assert_eq!(ok, 1, "{results:?}\n{}", s.envoy.log());
    assert_eq!(used, 19, "{results:?}");
    assert_eq!(s.mock.served_on("/v2/translate"), served0 + 1);
}
