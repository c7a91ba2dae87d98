//! Budget alerts end to end: a real Envoy (2 workers) in managed mode against sidecar A, and a
//! second sidecar B on the same store (PostgreSQL schema when DATABASE_URL is set, else one
//! SQLite file that both processes open), both with SMTP and their alert delivery workers
//! running; a Slack-style receiver and an SMTP sink on loopback.
//!
//! The team's daily budget is 20 deepl calls. Envoy's calls go through A (14, then 4 more);
//! another filter of the fleet reports 2 calls through sidecar B in between, so the 80 %
//! crossing (16 calls) is raised by B's sync and the 100 % one (20) by A's. Each produces
//! exactly one Slack message and one e-mail, whichever sidecar's worker delivers it; none
//! below the threshold, none after (B's batch retried, a call past the limit).
// Test crate: failing loudly is the point (clippy.toml only covers #[test] fns, not helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
#[path = "common/sinks.rs"]
mod sinks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pag0_envoy::harness::{Sidecar, SidecarConfig};
use pag0_envoy::{Agent, Call, Envoy, EnvoyConfig, MockUpstream, Reply};
use serde_json::{json, Value};
use sinks::{slack_receiver, smtp_sink, Inbox};

const ADMIN: &str = "admin-token-0123456789abcdef";
const SECRET: &str = "sync-secret-0123456789abcdef";
/// deepl's per-request price in the test catalogue.
const DEEPL: u64 = 2000;
/// The team's daily budget: 20 calls (a lease slice of 1/16 holds one call).
const DAILY: u64 = 20 * DEEPL;
/// Bounded waits for asynchronous effects (never a timing assertion).
const WAIT: Duration = Duration::from_secs(30);

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn policy(slack: std::net::SocketAddr) -> Value {
    json!({
        "orgId": "test-org",
        "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "1000000000",
                          "allowedCategories": ["translation", "data-analysis"] },
        "alerts": { "channels": ["email", "slack"], "recipients": ["cfo@acme.com"],
                    "slackWebhookUrl": format!("http://{slack}/slack"),
                    "triggers": { "budgetThreshold": 0.8 } },
        "endpoints": endpoints(),
        "projects": [
            project("team", 1_000_000_000, json!({ "dailyBudget": DAILY.to_string() })),
            project("warm", 1_000_000_000, json!({})),
        ],
        "clients": [ client("c1", "team", "sk-team"), client("cw", "warm", "sk-warm") ]
    })
}

fn deepl(key: &str) -> Call {
    Call::post("api.deepl.com", "/v2/translate")
        .key(key)
        .json(&json!({ "text": ["hallo"], "target_lang": "EN" }))
}

struct Stack {
    envoy: Envoy,
    _mock: MockUpstream,
    a: Sidecar,
    b: Sidecar,
    agent: Agent,
    inbox: Arc<Inbox>,
    store: &'static str,
    _slack_rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Stack {
    fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Arc::new(Inbox::default());
        let smtp = smtp_sink(inbox.clone());
        let (slack, slack_rt) = slack_receiver(inbox.clone());
        let (database_url, database_schema, store) = match std::env::var("DATABASE_URL") {
            Ok(url) => {
                let schema = format!(
                    "pag0_alerts_{}_{}",
                    std::process::id(),
                    chrono::Utc::now().timestamp_millis()
                );
                (Some(url), Some(schema), "postgres")
            }
            Err(_) => {
                assert!(
                    std::env::var("CI").map_or(true, |v| v != "true")
                        && std::env::var("PAG0_REQUIRE_PG").map_or(true, |v| v != "1"),
                    "DATABASE_URL unset but CI/PAG0_REQUIRE_PG demands the PostgreSQL tests"
                );
                (None, None, "one sqlite file")
            }
        };
        let cfg = SidecarConfig {
            data_dir: dir.path().to_path_buf(),
            database_url,
            database_schema,
            admin_token: ADMIN.into(),
            sync_secret: SECRET.into(),
            lease_ttl_ms: 30_000,
            port: 0,
        };
        let args: Vec<String> = [
            "--smtp-url",
            &format!("smtp://{smtp}"),
            "--smtp-from",
            "pag0@acme.com",
            "--alert-poll-ms",
            "200",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let a = Sidecar::start_with_args(&cfg, &args).unwrap();
        let b = Sidecar::start_with_args(&cfg, &args).unwrap();
        let r = http()
            .put(a.url("/v1/policy"))
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
        let mut ecfg = EnvoyConfig::new(
            json!({ "sidecar": { "cluster": "pag0_sidecar", "authority": "pag0-sidecar",
                                 "syncIntervalMs": 300, "timeoutMs": 1000,
                                 "failureMode": "closed", "syncSecret": SECRET } }),
            mock.port(),
        );
        ecfg.sidecar_port = Some(a.port);
        let envoy = Envoy::start(&ecfg).unwrap_or_else(|e| panic!("{e}"));
        let agent = Agent::new(envoy.port).unwrap();
        let s = Stack {
            envoy,
            _mock: mock,
            a,
            b,
            agent,
            inbox,
            store,
            _slack_rt: slack_rt,
            _dir: dir,
        };
        // Policy and leases arrive with the first syncs: a call of the other project passes.
        let t0 = Instant::now();
        while s.send(&deepl("sk-warm")).status != 200 {
            assert!(
                t0.elapsed() < WAIT,
                "never allowed:\n{}\n{}",
                s.envoy.log(),
                s.a.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        every_worker_has_the_policy(&s.agent, &s.envoy);
        s
    }

    fn send(&self, call: &Call) -> Reply {
        self.agent
            .send(call)
            .unwrap_or_else(|e| panic!("request failed: {e:#}\n{}", self.envoy.log()))
    }

    /// One team call admitted: `503` (a slice top-up is on its way) is retried.
    fn team_call(&self) {
        let t0 = Instant::now();
        loop {
            let r = self.send(&deepl("sk-team"));
            if r.status == 200 {
                return;
            }
            assert!(
                r.status == 503 && t0.elapsed() < WAIT,
                "team call refused: {} {}\n{}",
                r.status,
                r.body,
                self.envoy.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn get(&self, sc: &Sidecar, path: &str) -> Value {
        http()
            .get(sc.url(path))
            .bearer_auth(ADMIN)
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn counter() -> String {
        format!(
            "project.daily/team/{}",
            chrono::Utc::now().format("%Y-%m-%d")
        )
    }

    /// Waits until the team's daily counter at the sidecars reaches `want`.
    fn wait_spent(&self, want: u64) {
        let t0 = Instant::now();
        loop {
            let got = find_spent(&self.get(&self.b, "/v1/budgets"), &Self::counter()).unwrap_or(0);
            if got >= want {
                assert_eq!(got, want, "spent past the mark this step aims at");
                return;
            }
            assert!(
                t0.elapsed() < WAIT,
                "spent {got}, want {want}\n{}",
                self.a.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn alerts(&self, sc: &Sidecar) -> Vec<Value> {
        self.get(sc, "/v1/alerts")["alerts"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits until the inbox holds `n` Slack posts and `n` e-mails.
    fn wait_inbox(&self, n: usize) {
        let t0 = Instant::now();
        while self.inbox.slack.lock().unwrap().len() < n
            || self.inbox.mails.lock().unwrap().len() < n
        {
            assert!(
                t0.elapsed() < WAIT,
                "inbox: {} slack, {} mails, want {n} each\nalerts: {:?}\n{}\n{}",
                self.inbox.slack.lock().unwrap().len(),
                self.inbox.mails.lock().unwrap().len(),
                self.alerts(&self.a),
                self.a.log(),
                self.b.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every alert is delivered on every channel (nothing left for a worker).
    fn wait_all_done(&self) -> Vec<Value> {
        let t0 = Instant::now();
        loop {
            let alerts = self.alerts(&self.b);
            if alerts.iter().all(|a| a["state"] == "done") {
                return alerts;
            }
            assert!(t0.elapsed() < WAIT, "alerts not delivered: {alerts:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A batch of another filter of the fleet: `calls` deepl calls for the team.
fn other_filter_batch(seq: u64, calls: u64) -> Value {
    let at = chrono::Utc::now().timestamp_millis();
    let usage: Vec<Value> = (0..calls)
        .map(|_| {
            json!({ "amount": DEEPL.to_string(), "counters": [Stack::counter()],
                    "projectId": "team", "clientId": "c1", "host": "api.deepl.com", "at": at })
        })
        .collect();
    json!({ "instanceId": "fleet-b", "seq": seq, "usage": usage })
}

/// That filter's batch, sent through sidecar B.
fn other_filter_reports(s: &Stack, batch: &Value) {
    let r = http()
        .post(s.b.url("/v1/sync"))
        .bearer_auth(SECRET)
        .header("content-type", "application/json")
        .body(batch.to_string())
        .send()
        .unwrap();
    let status = r.status();
    assert!(
        status.is_success(),
        "sync at B: {status} {}",
        r.text().unwrap_or_default()
    );
}

#[test]
fn crossing_80_then_100_percent_sends_one_slack_message_and_one_email_each() {
    let s = Stack::start();
    println!("two sidecars on {}", s.store);

    // 14 calls through Envoy and A: 70 %, below the threshold.
    for _ in 0..14 {
        s.team_call();
    }
    s.wait_spent(14 * DEEPL);
    assert!(s.alerts(&s.a).is_empty(), "{:?}", s.alerts(&s.a));
    assert!(s.inbox.slack.lock().unwrap().is_empty() && s.inbox.mails.lock().unwrap().is_empty());

    // The other filter's 2 calls through B: 16 of 20, 80 % — raised by B's sync. One alert,
    // one Slack message and one e-mail.
    let batch = other_filter_batch(1, 2);
    other_filter_reports(&s, &batch);
    s.wait_spent(16 * DEEPL);
    s.wait_inbox(1);
    // Calls 17–20 through Envoy and A: 100 %, the second alert, raised by A's sync.
    for _ in 0..4 {
        s.team_call();
    }
    s.wait_spent(DAILY);
    s.wait_inbox(2);
    // B's batch retried (a duplicate) and one more call reported past the limit (the other
    // filter holds no lease, so nothing stops it): no further alert from either sidecar.
    other_filter_reports(&s, &batch);
    other_filter_reports(&s, &other_filter_batch(2, 1));
    s.wait_spent(DAILY + DEEPL);

    let alerts = s.wait_all_done();
    assert_eq!(alerts, s.alerts(&s.a), "both sidecars show one history");
    let mut seen: Vec<(String, String)> = alerts
        .iter()
        .map(|a| {
            (
                a["threshold"].as_str().unwrap().into(),
                a["spent"].as_str().unwrap().into(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("100.0%".to_string(), DAILY.to_string()),
            ("80.0%".to_string(), (16 * DEEPL).to_string())
        ]
    );
    for a in &alerts {
        let d = a["deliveries"].as_array().unwrap();
        assert_eq!(d.len(), 2, "{a}");
        assert!(
            d.iter()
                .all(|d| d["status"] == "sent" && d["attempts"] == 1),
            "{a}"
        );
    }
    let senders: Vec<&str> = alerts
        .iter()
        .flat_map(|a| a["deliveries"].as_array().unwrap().iter())
        .map(|d| d["sentBy"].as_str().unwrap())
        .collect();
    println!("alerts delivered by {senders:?}");

    // Exactly one message per crossing and channel, carrying the numbers.
    let slack = s.inbox.slack.lock().unwrap().clone();
    let mails = s.inbox.mails.lock().unwrap().clone();
    assert_eq!((slack.len(), mails.len()), (2, 2), "{slack:?}\n{mails:?}");
    let counter = Stack::counter();
    for (level, spent) in [("80.0%", "$0.032000"), ("100.0%", "$0.040000")] {
        let texts: Vec<&str> = slack.iter().filter_map(|v| v["text"].as_str()).collect();
        let hits = texts
            .iter()
            .filter(|t| t.contains(&format!("Threshold: {level}")))
            .collect::<Vec<_>>();
        assert_eq!(hits.len(), 1, "{level}: {texts:?}");
        for needle in [
            counter.as_str(),
            "project team",
            &format!("Spent: {spent}"),
            "Limit: $0.040000 (40000 micro-USD)",
        ] {
            assert!(hits[0].contains(needle), "{needle:?} not in {}", hits[0]);
        }
        let mail_hits = mails
            .iter()
            .filter(|(to, data)| {
                to == &vec!["cfo@acme.com".to_string()]
                    && data.contains(&format!("Threshold: {level}"))
            })
            .count();
        assert_eq!(mail_hits, 1, "{level}: {mails:?}");
    }

    // The metrics of both sidecars together: 2 raised, 4 delivered, none failed.
    let metrics = |sc: &Sidecar| {
        http()
            .get(sc.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let sum = |name: &str| -> u64 {
        [metrics(&s.a), metrics(&s.b)]
            .iter()
            .flat_map(|m| {
                m.lines()
                    .filter(|l| l.starts_with(name))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()))
            .sum()
    };
    assert_eq!(sum("pag0_alerts_raised_total{kind=\"budgetThreshold\"}"), 2);
    assert_eq!(sum("pag0_alerts_delivered_total{"), 4);
    assert_eq!(sum("pag0_alerts_failed_total{"), 0);
}
