//! How long `GET /v1/analytics` takes for a month over a big usage ledger, on SQLite and (with
//! DATABASE_URL) PostgreSQL. Not a timed test: it prints figures (docs/performance.md).
//!
//! `PAG0_BENCH_ROWS` ledger rows (default 100 000) are generated inside the database, spread
//! over the whole previous calendar month (UTC) across 20 projects, 400 clients (each calling
//! `PAG0_BENCH_HOSTS_PER_CLIENT` of 10 hosts, default 2) and a quarter of them cache hits, and
//! `PAG0_BENCH_DECISIONS` (default: as many) decision rows in the audit log (`kind =
//! 'decision'`, the same spread, 4 models, 40 % allowed with a latency of 0–5 s, 20 % cache
//! hits, 30 % denied by 3 codes, the rest held; written straight into the table, so the chain
//! is not valid — the read does not check it), and `PAG0_BENCH_ANOMALIES` (default 1000)
//! stored anomalies over the same month (5 kinds, a third project-wide, the rest per client).
//! The rows go in raw, so the store is then opened again without its rollup marker and builds
//! the rollups as it would on upgrading an older database (the time is printed). Then the
//! route is called for that month (`from`/`to`) through the router (auth, policy read,
//! counters, approvals, store reads, grouping, JSON) `PAG0_BENCH_RUNS` times (default 5) per
//! query.
//!
//! `cargo bench -p pag0-sidecar --bench analytics_ledger`
//! `PAG0_BENCH_ROWS=10000000 DATABASE_URL=postgres://… cargo bench -p pag0-sidecar --bench analytics_ledger`

// A benchmark binary: a failed setup should stop it loudly.
#![allow(clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use chrono::{Datelike, TimeZone, Utc};
use http_body_util::BodyExt;
use tower::ServiceExt;

use pag0_sidecar::store::{PgStore, SqliteStore, Store};
use pag0_sidecar::{app, AppState, Tokens};

const TOKEN: &str = "bench-admin-token-00001";
const QUERIES: [&str; 4] = [
    "groupBy=project",
    "groupBy=project,costCenter,endpoint,client",
    "groupBy=project,endpoint&interval=day",
    "groupBy=model,client",
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The previous calendar month in UTC, unix ms.
fn last_month() -> (i64, i64) {
    let now = Utc::now();
    let start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .expect("month start");
    let prev = start - chrono::Duration::days(1);
    let from = Utc
        .with_ymd_and_hms(prev.year(), prev.month(), 1, 0, 0, 0)
        .single()
        .expect("previous month start");
    (from.timestamp_millis(), start.timestamp_millis())
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::<Utc>::from_timestamp_millis(ms)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Each client's host: one of `per_client` of the ten, picked by the row.
fn host_sql(per_client: u64) -> String {
    format!("'api-' || (((i % 400) * 3 + (i / 400) % {per_client}) % 10) || '.example.com'")
}

/// The generated rows, as one INSERT … SELECT over `series` (a column `i` from 0 to n − 1).
fn insert_sql(series: &str, from: i64, to: i64, n: u64, hosts: &str) -> String {
    let span = (to - from - 1).max(1);
    format!(
        "INSERT INTO usage_ledger (instance_id, seq, idx, amount, counters, project_id, client_id,
             host, at_ms, committed_at_ms, cache_hit, savings)
         SELECT 'bench', i / 1000, i % 1000,
             CASE WHEN i % 4 = 0 THEN 0 ELSE (i * 7919) % 50000 END, '[]',
             'project-' || (i % 20), 'client-' || (i % 400), {hosts},
             {from} + (i * {span}) / {n}, {from} + (i * {span}) / {n},
             i % 4 = 0, CASE WHEN i % 4 = 0 THEN (i * 31) % 9000 ELSE 0 END
         FROM {series}"
    )
}

/// `n` rows in `anomalies`, over the same span (unique keys: each window starts at its own ms).
fn anomalies_sql(series: &str, from: i64, to: i64, n: u64) -> String {
    let span = (to - from - 1).max(1);
    format!(
        "INSERT INTO anomalies (kind, project_id, client_id, subject, window_from_ms, window_to_ms,
             score, baseline, observed, unit, explanation, detected_at_ms)
         SELECT CASE i % 5 WHEN 0 THEN 'spend_spike' WHEN 1 THEN 'request_spike'
                  WHEN 2 THEN 'costly_request' WHEN 3 THEN 'new_endpoint' ELSE 'off_hours_burst' END,
             'project-' || (i % 20), CASE WHEN i % 3 = 0 THEN '' ELSE 'client-' || (i % 400) END,
             CASE WHEN i % 5 = 3 THEN 'api-' || (i % 10) || '.example.com' ELSE '' END,
             {from} + (i * {span}) / {n}, {from} + (i * {span}) / {n} + 3600000,
             7.5, 100, 1000, 'requests', 'bench anomaly ' || i, {from} + (i * {span}) / {n} + 3600000
         FROM {series}"
    )
}

/// The store reads behind anomalies and the series' decision facts, alone over the month,
/// `runs` times each: `anomalies_in` (what the anomalies add), and `decision_buckets` (what a
/// series adds over `decision_stats`).
async fn time_reads(label: &str, store: &dyn Store, from: i64, to: i64, runs: u32) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for what in [
        "anomalies_in",
        "usage_totals",
        "decision_stats",
        "decision_buckets(day)",
    ] {
        let mut times = Vec::new();
        let mut counted = 0;
        for _ in 0..runs {
            let t = Instant::now();
            counted = match what {
                "anomalies_in" => {
                    let r = store.anomalies_in(from, to, 3).await.expect("anomalies_in");
                    r.counts.iter().map(|c| c.count).sum::<u64>()
                }
                "usage_totals" => store
                    .usage_totals(from, to)
                    .await
                    .expect("usage_totals")
                    .len() as u64,
                "decision_stats" => store
                    .decision_stats(from, to)
                    .await
                    .expect("decision_stats")
                    .len() as u64,
                _ => store
                    .decision_buckets(from, to, 86_400_000)
                    .await
                    .expect("decision_buckets")
                    .len() as u64,
            };
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "{label:<10} {what:<16} returned={counted:<8} min={:>8.2} ms  median={:>8.2} ms",
            ms(times[0]),
            ms(times[times.len() / 2]),
        );
    }
}

/// `n` decision rows in `audit_log`, as `insert_sql` does for the ledger (seqs 1..=n).
fn decisions_sql(series: &str, from: i64, to: i64, n: u64, hosts: &str) -> String {
    let span = (to - from - 1).max(1);
    format!(
        "INSERT INTO audit_log (seq, at_ms, kind, actor, project_id, client_id, host, model,
             decision, code, estimate, cost, latency_ms, policy_version, approval_id, details,
             prev_hash, hash)
         SELECT i + 1, {from} + (i * {span}) / {n}, 'decision', 'instance:bench',
             'project-' || (i % 20), 'client-' || (i % 400), {hosts},
             'model-' || (i % 4),
             CASE WHEN i % 10 < 4 THEN 'allow' WHEN i % 10 < 6 THEN 'cache_hit'
                  WHEN i % 10 < 9 THEN 'deny' ELSE 'pending' END,
             CASE WHEN i % 10 BETWEEN 6 AND 8 THEN 'CODE_' || (i % 3) ELSE NULL END,
             1000, 900,
             CASE WHEN i % 10 < 4 THEN (i * 7919) % 5000 WHEN i % 10 < 6 THEN i % 30 ELSE NULL END,
             1, NULL, '{{}}', '', ''
         FROM {series}"
    )
}

async fn time_queries(
    label: &str,
    store: Arc<dyn Store>,
    rows: u64,
    runs: u32,
    (from, to): (i64, i64),
) {
    let mut tokens = Tokens::default();
    tokens
        .add_admin_spec(&format!("bench={TOKEN}"))
        .expect("token");
    let router = app(AppState::new(store, tokens).expect("state"));
    for q in QUERIES {
        let mut times = Vec::new();
        let mut requests = 0;
        for _ in 0..runs {
            let req = Request::get(format!(
                "/v1/analytics?from={}&to={}&{q}",
                rfc3339(from),
                rfc3339(to)
            ))
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("request");
            let t = Instant::now();
            let resp = router.clone().oneshot(req).await.expect("response");
            let status = resp.status();
            let bytes = resp.into_body().collect().await.expect("body").to_bytes();
            times.push(t.elapsed());
            assert_eq!(
                status,
                StatusCode::OK,
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            requests = v["total"]["totalRequests"].as_u64().unwrap_or(0);
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{label:<10} rows={rows:<10} counted={requests:<10} min={:>8.1} ms  median={:>8.1} ms  max={:>8.1} ms  {q}",
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1]),
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows = env_u64("PAG0_BENCH_ROWS", 100_000).max(1);
    let decisions = env_u64("PAG0_BENCH_DECISIONS", rows);
    let anomalies = env_u64("PAG0_BENCH_ANOMALIES", 1000);
    // 0 decisions: an empty series (the SQL never divides by it).
    let dn = decisions.max(1);
    let runs = u32::try_from(env_u64("PAG0_BENCH_RUNS", 5).max(1)).unwrap_or(5);
    let (from, to) = last_month();
    let hosts = host_sql(env_u64("PAG0_BENCH_HOSTS_PER_CLIENT", 2).clamp(1, 10));

    // SQLite: the store creates the schema; the rows go in with the bundled SQLite directly.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open_dir(dir.path()).expect("sqlite store");
    let t = Instant::now();
    {
        let c = rusqlite::Connection::open(dir.path().join("pag0.db")).expect("sqlite");
        let series = |n: u64| {
            format!(
            "(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < {n}) SELECT i FROM s WHERE i < {n})"
        )
        };
        c.execute_batch(&format!(
            "BEGIN; {}; {}; {}; COMMIT; ANALYZE;",
            insert_sql(&series(rows), from, to, rows, &hosts),
            decisions_sql(&series(decisions), from, to, dn, &hosts),
            anomalies_sql(&series(anomalies), from, to, anomalies.max(1))
        ))
        .expect("fill sqlite");
        c.execute("DELETE FROM rollup_state", []).expect("unmark");
    }
    println!(
        "sqlite     filled {rows} ledger + {decisions} decision rows + {anomalies} anomalies in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    drop(store);
    let t = Instant::now();
    let store = SqliteStore::open_dir(dir.path()).expect("sqlite store");
    println!(
        "sqlite     rollups built on open in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    time_reads("sqlite", &store, from, to, runs).await;
    time_queries("sqlite", Arc::new(store), rows, runs, (from, to)).await;

    // PostgreSQL, in a fresh schema dropped afterwards.
    let Ok(url) = std::env::var("DATABASE_URL") else {
        println!("postgres   not run (DATABASE_URL unset)");
        return;
    };
    let schema = format!("pag0_bench_{}", std::process::id());
    let store = PgStore::connect(&url, Some(&schema))
        .await
        .expect("pg store");
    let t = Instant::now();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("pg");
    tokio::spawn(conn);
    let series =
        |n: u64| format!("(SELECT g::BIGINT AS i FROM generate_series(0, {n}::BIGINT - 1) g) s");
    // Separate statements: VACUUM (the visibility map an index-only scan needs) cannot run
    // in the implicit transaction of a multi-statement batch.
    for sql in [
        format!("SET search_path = {schema}"),
        insert_sql(&series(rows), from, to, rows, &hosts),
        decisions_sql(&series(decisions), from, to, dn, &hosts),
        anomalies_sql(&series(anomalies), from, to, anomalies.max(1)),
        "VACUUM ANALYZE usage_ledger".to_owned(),
        "VACUUM ANALYZE audit_log".to_owned(),
        "VACUUM ANALYZE anomalies".to_owned(),
        "DELETE FROM rollup_state".to_owned(),
    ] {
        client.batch_execute(&sql).await.expect("fill postgres");
    }
    println!(
        "postgres   filled {rows} ledger + {decisions} decision rows + {anomalies} anomalies in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    drop(store);
    let t = Instant::now();
    let store = PgStore::connect(&url, Some(&schema))
        .await
        .expect("pg store");
    println!(
        "postgres   rollups built on open in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for sql in [
        format!("SET search_path = {schema}"),
        "VACUUM ANALYZE usage_rollup".to_owned(),
        "VACUUM ANALYZE decision_rollup".to_owned(),
    ] {
        client.batch_execute(&sql).await.expect("analyze rollups");
    }
    let store = Arc::new(store);
    time_reads("postgres", store.as_ref(), from, to, runs).await;
    time_queries("postgres", store.clone(), rows, runs, (from, to)).await;
    store.drop_schema().await.expect("drop schema");
}
