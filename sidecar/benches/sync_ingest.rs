//! Decision-log ingest at fleet scale (issue 15 item 5): N simulated filter instances, each
//! its own `instanceId` with increasing `seq`, push `/v1/sync` batches of decision events
//! (built as `pag0_wire::DecisionEvent`) plus a few usage records to an in-process sidecar
//! over real HTTP (a TCP listener on 127.0.0.1, reqwest clients). Every event becomes an
//! audit-log row appended to the hash chain inside the batch's transaction. Not a timed test:
//! it prints events/s and p50/p99 sync latency per backend and instance count
//! (docs/performance.md), and checks afterwards that every event is in the chain once and
//! `GET /v1/audit/verify` passes.
//!
//! Knobs: `PAG0_BENCH_INSTANCES` (default `1,4,16`), `PAG0_BENCH_BATCHES` (batches per run,
//! split evenly over the instances; default 48), `PAG0_BENCH_EVENTS` (decision events per
//! batch, default 500), `PAG0_BENCH_USAGE` (usage records per batch, default 5).
//!
//! `cargo bench -p pag0-sidecar --bench sync_ingest`
//! `DATABASE_URL=postgres://… cargo bench -p pag0-sidecar --bench sync_ingest`

// A benchmark binary: a failed setup should stop it loudly.
#![allow(clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use pag0_policy::Micros;
use pag0_wire::{DecisionEvent, DecisionKind};
use serde_json::{json, Value};

use pag0_sidecar::store::{PgStore, SqliteStore, Store};
use pag0_sidecar::{app, AppState, Tokens};

const ADMIN: &str = "bench-admin-token-00001";
const SYNC: &str = "bench-sync-secret-00002";
const CODES: [&str; 3] = ["BUDGET_EXCEEDED", "RATE_LIMITED", "ENDPOINT_NOT_ALLOWED"];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

/// One realistic event: 60 % allowed (with upstream status, latencies, a body digest), 15 %
/// cache hits, 20 % denied by one of three codes, the rest held for approval.
fn event(instance: usize, n: u64, at: u64) -> DecisionEvent {
    let kind = match n % 20 {
        0..=11 => DecisionKind::Allow,
        12..=14 => DecisionKind::CacheHit,
        15..=18 => DecisionKind::Deny,
        _ => DecisionKind::Pending,
    };
    let allowed = kind == DecisionKind::Allow;
    let denied = kind == DecisionKind::Deny;
    let idx = usize::try_from(n % 3).expect("small");
    DecisionEvent {
        at,
        decision: kind,
        code: match kind {
            DecisionKind::Deny => Some(CODES[idx].to_owned()),
            DecisionKind::Pending => Some("APPROVAL_PENDING".to_owned()),
            _ => None,
        },
        scope: denied.then(|| "project.daily".to_owned()),
        client_id: Some(format!("client-{}", (n * 7 + instance as u64) % 200)),
        project_id: Some(format!("project-{}", n % 20)),
        method: "POST".to_owned(),
        authority: format!("api-{}.example.com", n % 5),
        path: "/v1/chat/completions".to_owned(),
        model: Some(format!("gpt-model-{}", n % 4)),
        estimate: Some(Micros::new(1_000 + (n * 7919) % 50_000)),
        cost: (allowed || kind == DecisionKind::CacheHit)
            .then(|| Micros::new(if allowed { (n * 31) % 40_000 } else { 0 })),
        savings: (kind == DecisionKind::CacheHit).then(|| Micros::new(900 + n % 100)),
        upstream_status: allowed.then_some(200),
        first_byte_ms: allowed.then_some(100 + n % 400),
        latency_ms: allowed.then_some(400 + (n * 13) % 3_000),
        policy_version: 1,
        approval_id: None,
        body_sha256: (!denied).then(|| format!("{:064x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15))),
        requires_approval: false,
    }
}

/// The body of one batch, serialised before the clock starts.
fn batch(instance: usize, seq: u64, events: u64, usage: u64) -> Vec<u8> {
    let at = now_ms();
    let decisions: Vec<Value> = (0..events)
        .map(|i| {
            serde_json::to_value(event(instance, seq * events + i, at + i)).expect("event json")
        })
        .collect();
    let usage: Vec<Value> = (0..usage)
        .map(|i| {
            json!({ "amount": ((seq * 131 + i * 17) % 40_000).to_string(),
                    "counters": ["org.monthly/2026-12",
                                 format!("project.daily/project-{}/2026-12-03", i % 20)],
                    "projectId": format!("project-{}", i % 20),
                    "clientId": format!("client-{}", i % 200),
                    "host": "api-0.example.com", "at": at })
        })
        .collect();
    serde_json::to_vec(&json!({
        "instanceId": format!("bench-{instance}"),
        "seq": seq,
        "policyVersion": 0,
        "usage": usage,
        "decisions": decisions,
    }))
    .expect("batch json")
}

struct Run {
    events: u64,
    wall: Duration,
    latencies: Vec<Duration>,
}

/// Serves `store` on 127.0.0.1 and pushes `batches` batches from `instances` tasks.
async fn run(
    store: Arc<dyn Store>,
    instances: usize,
    batches: u64,
    events: u64,
    usage: u64,
) -> Run {
    let mut tokens = Tokens::default();
    tokens
        .add_admin_spec(&format!("bench={ADMIN}"))
        .expect("admin token");
    tokens.add_sync_secret(SYNC).expect("sync secret");
    let router = app(AppState::new(store, tokens).expect("state"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let url = format!("http://{addr}/v1/sync");

    let per = batches.div_ceil(instances as u64).max(1);
    let bodies: Vec<Vec<Vec<u8>>> = (0..instances)
        .map(|i| (1..=per).map(|s| batch(i, s, events, usage)).collect())
        .collect();
    let start = Instant::now();
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|bodies| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut lat = Vec::with_capacity(bodies.len());
                for body in bodies {
                    let t = Instant::now();
                    let resp = client
                        .post(&url)
                        .bearer_auth(SYNC)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("sync request");
                    let status = resp.status();
                    let text = resp.text().await.expect("sync body");
                    lat.push(t.elapsed());
                    assert!(status.is_success(), "sync {status}: {text}");
                    let v: Value = serde_json::from_str(&text).expect("sync json");
                    assert_eq!(v["duplicate"], json!(false), "{text}");
                }
                lat
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("instance task"));
    }
    let wall = start.elapsed();

    // Every event is in the chain exactly once, and the chain verifies.
    let total = per * instances as u64 * events;
    let verify: Value = reqwest::Client::new()
        .get(format!("http://{addr}/v1/audit/verify"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("verify")
        .json()
        .await
        .expect("verify json");
    assert_eq!(verify["ok"], json!(true), "{verify}");
    assert_eq!(verify["rowsChecked"], json!(total), "{verify}");
    server.abort();
    latencies.sort();
    Run {
        events: total,
        wall,
        latencies,
    }
}

fn report(label: &str, instances: usize, r: &Run) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: f64| {
        let i = ((r.latencies.len() as f64 * p).ceil() as usize).clamp(1, r.latencies.len()) - 1;
        ms(r.latencies[i])
    };
    println!(
        "{label:<10} instances={instances:<3} batches={:<4} events={:<7} {:>9.0} events/s  p50={:>8.1} ms  p99={:>8.1} ms  max={:>8.1} ms  wall={:.1} s",
        r.latencies.len(),
        r.events,
        r.events as f64 / r.wall.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        ms(r.latencies[r.latencies.len() - 1]),
        r.wall.as_secs_f64(),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let instances: Vec<usize> = std::env::var("PAG0_BENCH_INSTANCES")
        .unwrap_or_else(|_| "1,4,16".into())
        .split(',')
        .map(|s| s.trim().parse().expect("PAG0_BENCH_INSTANCES: numbers"))
        .collect();
    let batches = env_u64("PAG0_BENCH_BATCHES", 48).max(1);
    let events = env_u64("PAG0_BENCH_EVENTS", 500);
    let usage = env_u64("PAG0_BENCH_USAGE", 5);

    for &n in &instances {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open_dir(dir.path()).expect("sqlite store");
        let r = run(Arc::new(store), n, batches, events, usage).await;
        report("sqlite", n, &r);
    }

    let Ok(url) = std::env::var("DATABASE_URL") else {
        println!("postgres   not run (DATABASE_URL unset)");
        return;
    };
    for &n in &instances {
        let schema = format!("pag0_bench_ingest_{}_{n}", std::process::id());
        let store = Arc::new(
            PgStore::connect(&url, Some(&schema))
                .await
                .expect("pg store"),
        );
        let r = run(store.clone(), n, batches, events, usage).await;
        report("postgres", n, &r);
        store.drop_schema().await.expect("drop schema");
    }
}
