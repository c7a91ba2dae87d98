use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::*;
use crate::store::{SqliteStore, Store, SyncWrite};
use crate::{ManualClock, Tokens};

const DAY: &str = "project.daily/team/2026-11-24";

fn rules(ppm: u64, limit: u64) -> AlertRules {
    AlertRules {
        threshold_ppm: Some(ppm),
        high_cost: None,
        limits: [(DAY.to_string(), limit)].into_iter().collect(),
        policy_violation: false,
        targets: vec![],
    }
}

fn moved(before: u64, after: u64) -> Vec<Moved> {
    vec![(DAY.to_string(), before, after)]
}

fn thresholds(alerts: &[NewAlert]) -> Vec<Option<u64>> {
    alerts.iter().map(|a| a.threshold_ppm).collect()
}

#[test]
fn marks_round_up_and_never_use_floats_on_money() {
    assert_eq!(mark(1000, 800_000), 800);
    assert_eq!(mark(1001, 800_000), 801, "800.8 → 801");
    assert_eq!(mark(u64::MAX, PPM), u64::MAX);
    assert_eq!(ratio_ppm(0.8), Some(800_000));
    assert_eq!(ratio_ppm(1.0), Some(PPM));
    assert_eq!(ratio_ppm(0.0), None);
    assert_eq!(ratio_ppm(1.5), None);
    assert_eq!(ratio_ppm(f64::NAN), None);
    assert_eq!(percent(812, 1000), "81.2%");
    assert_eq!(percent(3, 0), "∞");
}

#[test]
fn a_crossing_raises_exactly_once_and_below_never() {
    let r = rules(800_000, 1000);
    assert!(
        detect(&r, &moved(0, 799), &[], "i", 1, 0).is_empty(),
        "below"
    );
    assert!(
        detect(&r, &moved(800, 900), &[], "i", 1, 0).is_empty(),
        "already past"
    );
    assert_eq!(
        thresholds(&detect(&r, &moved(799, 800), &[], "i", 1, 0)),
        vec![Some(800_000)]
    );
    assert_eq!(
        thresholds(&detect(&r, &moved(900, 1000), &[], "i", 1, 0)),
        vec![Some(PPM)]
    );
    assert!(
        detect(&r, &moved(1000, 5000), &[], "i", 1, 0).is_empty(),
        "past 100 %"
    );
    // One batch over both marks: two alerts, the 100 % one separate.
    let both = detect(&r, &moved(0, 1200), &[], "i", 1, 0);
    assert_eq!(thresholds(&both), vec![Some(800_000), Some(PPM)]);
    assert_ne!(both[0].key, both[1].key);
    // A threshold of 100 % is one alert, not two.
    assert_eq!(
        detect(&rules(PPM, 1000), &moved(0, 1200), &[], "i", 1, 0).len(),
        1
    );
}

#[test]
fn keys_name_counter_period_threshold_and_limit() {
    let r = rules(800_000, 1000);
    let a = &detect(&r, &moved(0, 800), &[], "i", 1, 0)[0];
    assert_eq!(a.key, format!("budgetThreshold/{DAY}/800000/1000"));
    // Another day is another counter key: the alert re-arms.
    let next = "project.daily/team/2026-11-25";
    let mut r2 = r.clone();
    r2.limits = [(next.to_string(), 1000)].into_iter().collect();
    let b = &detect(&r2, &[(next.to_string(), 0, 800)], &[], "i", 1, 0)[0];
    assert_ne!(a.key, b.key);
    // Counters without a budget, or a zero budget, never alert.
    assert!(detect(&rules(800_000, 0), &moved(0, 10), &[], "i", 1, 0).is_empty());
    assert!(detect(
        &r,
        &[("org.daily/2026-11-24".into(), 0, 5000)],
        &[],
        "i",
        1,
        0
    )
    .is_empty());
}

#[test]
fn messages_carry_the_numbers() {
    let a = &detect(
        &rules(800_000, 2_000_000),
        &moved(0, 1_650_000),
        &[],
        "i",
        1,
        0,
    )[0];
    assert_eq!(a.project_id.as_deref(), Some("team"));
    for needle in [
        "project team",
        "2026-11-24",
        DAY,
        "Spent: $1.650000 (1650000 micro-USD)",
        "Limit: $2.000000 (2000000 micro-USD)",
        "Ratio: 82.5%",
        "Threshold: 80.0%",
    ] {
        assert!(a.text.contains(needle), "{needle:?} not in {}", a.text);
    }
    assert!(
        a.subject.contains("80.0%") && a.subject.contains("day"),
        "{}",
        a.subject
    );
    let p: serde_json::Value = serde_json::from_str(&a.payload).unwrap();
    assert_eq!(p["spent"], "1650000");
    assert_eq!(p["limit"], "2000000");
    assert_eq!(p["period"], "2026-11-24");
}

fn record(amount: u64) -> UsageRecord {
    UsageRecord {
        amount,
        counters: vec![DAY.into()],
        project_id: Some("team".into()),
        client_id: Some("bot".into()),
        host: Some("api.openai.com".into()),
        at_ms: None,
        cache_hit: false,
        savings: 0,
    }
}

#[test]
fn high_cost_is_per_record_at_or_above_the_amount() {
    let r = AlertRules {
        high_cost: Some(5_000_000),
        ..Default::default()
    };
    let out = detect(
        &r,
        &[],
        &[record(4_999_999), record(5_000_000), record(9_000_000)],
        "i",
        7,
        0,
    );
    let keys: Vec<_> = out.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["highCostRequest/usage/i/7/1", "highCostRequest/usage/i/7/2"]
    );
    assert!(out[0].text.contains("$5.000000") && out[0].text.contains("api.openai.com"));
}

#[test]
fn rules_come_from_the_policy_alerts_section() {
    let doc = json!({
        "projects": [ { "id": "team", "policy": { "dailyBudget": "1000" } } ],
        "alerts": { "channels": ["slack", "email"], "recipients": ["a@x.io", "b@x.io"],
                    "slackWebhookUrl": "http://h/s",
                    "triggers": { "budgetThreshold": 0.75, "highCostRequest": "500" } }
    });
    let r = rules_for(
        Some(&doc),
        [DAY.to_string(), "org.daily/2026-11-24".to_string()],
    );
    assert_eq!(r.threshold_ppm, Some(750_000));
    assert_eq!(r.high_cost, Some(500));
    assert_eq!(r.limits.get(DAY), Some(&1000));
    assert_eq!(r.limits.len(), 1, "the org has no daily budget");
    let channels: Vec<_> = r
        .targets
        .iter()
        .map(|t| (t.channel.as_str(), t.target.as_str()))
        .collect();
    assert_eq!(
        channels,
        vec![("email", "a@x.io,b@x.io"), ("slack", "http://h/s")]
    );
    assert_eq!(
        to_target(&r.targets[0]),
        Some(Target::Email {
            to: vec!["a@x.io".into(), "b@x.io".into()]
        })
    );
    // No alerts section, or no triggers: nothing.
    assert_eq!(
        rules_for(Some(&json!({})), [DAY.to_string()]),
        AlertRules::default()
    );
    assert_eq!(rules_for(None, [DAY.to_string()]), AlertRules::default());
    let quiet = json!({ "alerts": { "channels": ["slack"] } });
    let r = rules_for(Some(&quiet), [DAY.to_string()]);
    assert_eq!((r.threshold_ppm, r.high_cost), (None, None));
}

#[test]
fn backoff_doubles_and_caps() {
    assert_eq!(backoff_ms(1), 1_000);
    assert_eq!(backoff_ms(2), 2_000);
    assert_eq!(backoff_ms(4), 8_000);
    assert_eq!(backoff_ms(30), 300_000);
}

/// A Slack-style receiver that answers 500 to the first `fail` posts, then 200.
async fn flaky_slack(
    fail: usize,
) -> (String, Arc<Mutex<Vec<serde_json::Value>>>, Arc<AtomicUsize>) {
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::{Json, Router};
    type S = (Arc<Mutex<Vec<serde_json::Value>>>, Arc<AtomicUsize>, usize);
    async fn hook(
        State((got, tries, fail)): State<S>,
        Json(v): Json<serde_json::Value>,
    ) -> StatusCode {
        if tries.fetch_add(1, Ordering::SeqCst) < fail {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        got.lock().unwrap().push(v);
        StatusCode::OK
    }
    let got = Arc::new(Mutex::new(Vec::new()));
    let tries = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slack", listener.local_addr().unwrap());
    let app =
        Router::new()
            .route("/slack", post(hook))
            .with_state((got.clone(), tries.clone(), fail));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got, tries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_retries_with_backoff_and_records_each_channel() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_dir(dir.path()).unwrap());
    let clock = Arc::new(ManualClock::new(1_000_000));
    // No SMTP relay: e-mail fails every time, until it is given up.
    let state = AppState::new(store.clone(), Tokens::default())
        .unwrap()
        .with_clock(clock.clone());
    let (url, got, tries) = flaky_slack(1).await;
    let mut r = rules(800_000, 1000);
    r.targets = vec![
        AlertTarget {
            channel: "slack".into(),
            target: url,
        },
        AlertTarget {
            channel: "email".into(),
            target: "cfo@acme.com".into(),
        },
    ];
    let out = store
        .sync_alerting(
            SyncWrite {
                exceptions: Vec::new(),
                audit: Vec::new(),
                instance_id: "i".into(),
                seq: 1,
                digest: "d".into(),
                legacy_digest: None,
                usage: vec![record(850)],
                release: vec![],
                leases: vec![],
                now_ms: 1_000_000,
                lease_ttl_ms: 1000,
            },
            r,
        )
        .await
        .unwrap();
    assert_eq!(out.alerts_raised.len(), 1);

    // Try 1: Slack answers 500, e-mail has no relay. Both retry in 1 s.
    assert_eq!(run_once(&state, "w").await.unwrap(), 1);
    let a = &store.alerts(10).await.unwrap()[0];
    assert!(
        a.deliveries
            .iter()
            .all(|d| d.status == "retrying" && d.attempts == 1),
        "{a:?}"
    );
    assert!(a.deliveries.iter().all(|d| d.last_error.is_some()));
    assert_eq!(run_once(&state, "w").await.unwrap(), 0, "not due yet");

    // Try 2: Slack delivered (once), e-mail still failing.
    clock.advance_ms(1_000);
    assert_eq!(run_once(&state, "w").await.unwrap(), 1);
    assert_eq!(got.lock().unwrap().len(), 1);
    let text = got.lock().unwrap()[0]["text"].as_str().unwrap().to_string();
    assert!(
        text.contains("Spent: $0.000850") && text.contains("Ratio: 85.0%"),
        "{text}"
    );

    // The rest of e-mail's tries, each after its backoff; Slack is never sent again.
    let mut rounds = 0;
    loop {
        let a = &store.alerts(10).await.unwrap()[0];
        if a.state == "done" {
            break;
        }
        clock.advance_ms(backoff_ms(MAX_ATTEMPTS));
        run_once(&state, "w").await.unwrap();
        rounds += 1;
        assert!(rounds < 20, "never gave up: {a:?}");
    }
    let a = &store.alerts(10).await.unwrap()[0];
    let email = a.deliveries.iter().find(|d| d.channel == "email").unwrap();
    let slack = a.deliveries.iter().find(|d| d.channel == "slack").unwrap();
    assert_eq!(
        (email.status.as_str(), email.attempts),
        ("failed", MAX_ATTEMPTS)
    );
    assert_eq!(
        (
            slack.status.as_str(),
            slack.attempts,
            slack.sent_by.as_deref()
        ),
        ("sent", 2, Some("w"))
    );
    assert_eq!(
        tries.load(Ordering::SeqCst),
        2,
        "Slack: one failure, one success"
    );
    let m = &state.metrics;
    assert_eq!(
        m.alerts_delivered
            .with_label_values(&["budgetThreshold", "slack"])
            .get(),
        1
    );
    assert_eq!(
        m.alerts_failed
            .with_label_values(&["budgetThreshold", "slack"])
            .get(),
        1
    );
    assert_eq!(
        m.alerts_failed
            .with_label_values(&["budgetThreshold", "email"])
            .get(),
        u64::from(MAX_ATTEMPTS)
    );
}

fn denial(at_ms: i64, project: Option<&str>, client: &str, code: &str) -> crate::audit::AuditEvent {
    let mut e = crate::audit::AuditEvent::new("decision", at_ms);
    e.project_id = project.map(Into::into);
    e.client_id = Some(client.into());
    e.host = Some("api.blocked.example".into());
    e.decision = Some("deny".into());
    e.code = Some(code.into());
    e.details = json!({ "method": "POST", "path": "/v1/x" });
    e
}

/// Denials group per project, code and UTC hour: one alert each, with the group's count and
/// its first three denials; other decisions, other kinds and a policy without the trigger
/// raise nothing.
#[test]
fn violations_are_one_alert_per_project_code_and_window() {
    const H: i64 = VIOLATION_WINDOW_MS;
    let t = 1_764_000_000_000 / H * H; // an hour start
    let mut audit = vec![
        denial(t + 1, Some("team"), "a", "ENDPOINT_BLOCKED"),
        denial(t + 2, Some("team"), "b", "ENDPOINT_BLOCKED"),
        denial(t + 3, Some("team"), "a", "ENDPOINT_BLOCKED"),
        denial(t + 4, Some("team"), "c", "ENDPOINT_BLOCKED"),
        denial(t + 5, Some("team"), "a", "BUDGET_EXCEEDED"),
        denial(t + H, Some("team"), "a", "ENDPOINT_BLOCKED"), // the next hour
        denial(t + 6, Some("other"), "z", "ENDPOINT_BLOCKED"),
        denial(t + 7, None, "-", "UNKNOWN_API_KEY"),
        // pag0's own availability, not a violation: no alert.
        denial(t + 7, None, "-", "CONTROL_PLANE_UNAVAILABLE"),
        denial(t + 7, Some("team"), "a", "CONTROL_PLANE_UNAVAILABLE"),
    ];
    let mut allow = denial(t + 8, Some("team"), "a", "ENDPOINT_BLOCKED");
    allow.decision = Some("allow".into());
    audit.push(allow);
    let mut gap = denial(t + 9, Some("team"), "a", "ENDPOINT_BLOCKED");
    gap.kind = "decision.rejected".into();
    audit.push(gap);

    let off = AlertRules::default();
    assert!(
        violations(&off, &audit, 0).is_empty(),
        "the trigger is off by default"
    );
    let on = AlertRules {
        policy_violation: true,
        targets: vec![],
        ..Default::default()
    };
    let out = violations(&on, &audit, 42);
    let keys: Vec<_> = out.iter().map(|a| a.key.clone()).collect();
    assert_eq!(
        keys,
        vec![
            format!("policyViolation/-/UNKNOWN_API_KEY/{t}"),
            format!("policyViolation/other/ENDPOINT_BLOCKED/{t}"),
            format!("policyViolation/team/BUDGET_EXCEEDED/{t}"),
            format!("policyViolation/team/ENDPOINT_BLOCKED/{t}"),
            format!("policyViolation/team/ENDPOINT_BLOCKED/{}", t + H),
        ]
    );
    let blocked = &out[3];
    assert_eq!(
        (
            blocked.kind.as_str(),
            blocked.project_id.as_deref(),
            blocked.created_at_ms
        ),
        ("policyViolation", Some("team"), 42)
    );
    let p: Value = serde_json::from_str(&blocked.payload).unwrap();
    assert_eq!(p["count"], 4);
    assert_eq!(p["code"], "ENDPOINT_BLOCKED");
    let examples: Vec<_> = p["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["clientId"].clone())
        .collect();
    assert_eq!(
        examples,
        [json!("a"), json!("b"), json!("a")],
        "the first three, in order"
    );
    assert_eq!(p["examples"][0]["path"], "/v1/x");
    assert_eq!(p["windowTo"], crate::clock::rfc3339(t + H));
    assert!(
        blocked.subject.contains("project team") && blocked.subject.contains("ENDPOINT_BLOCKED ×4"),
        "{}",
        blocked.subject
    );
    assert!(
        blocked.text.contains("Examples (3 of 4)")
            && blocked.text.contains("POST api.blocked.example/v1/x"),
        "{}",
        blocked.text
    );
    assert!(
        blocked.text.lines().filter(|l| l.starts_with("- ")).count() == 3,
        "{}",
        blocked.text
    );
    assert_eq!(
        out[2].text.lines().filter(|l| l.starts_with("- ")).count(),
        1
    );
}

#[test]
fn the_violation_trigger_comes_from_the_policy() {
    let doc = json!({ "alerts": { "channels": ["slack"], "slackWebhookUrl": "http://h/s",
                                  "triggers": { "policyViolation": true } } });
    assert!(rules_for(Some(&doc), []).policy_violation);
    let doc = json!({ "alerts": { "channels": ["slack"], "slackWebhookUrl": "http://h/s",
                                  "triggers": { "budgetThreshold": 0.8 } } });
    assert!(!rules_for(Some(&doc), []).policy_violation);
}
