//! Runs the contract suite against SQLite (always) and PostgreSQL (when DATABASE_URL is set;
//! each test in a fresh schema, dropped afterwards). Without DATABASE_URL the PostgreSQL tests
//! say so on stderr (not captured) and return; with CI=true or PAG0_REQUIRE_PG=1 they fail
//! instead, so a CI run cannot pass without having run them.

use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{PgStore, SqliteStore, Store, UsageRecord};

pub(crate) fn sqlite_store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (SqliteStore::open_dir(dir.path()).unwrap(), dir)
}

fn pg_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("PAG0_REQUIRE_PG").is_ok_and(|v| v == "1")
}

pub(crate) fn unique_schema() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "pag0_t{}_{}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A store in a fresh schema, or None (with a notice) when DATABASE_URL is unset.
pub(crate) async fn pg_store(test: &str) -> Option<PgStore> {
    let url = match std::env::var("DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            assert!(
                !pg_required(),
                "DATABASE_URL is unset but CI/PAG0_REQUIRE_PG demands the PostgreSQL suite"
            );
            let _ = writeln!(
                std::io::stderr(),
                "NOT RUN: postgres contract test {test} (DATABASE_URL unset)"
            );
            return None;
        }
    };
    Some(
        PgStore::connect(&url, Some(&unique_schema()))
            .await
            .unwrap(),
    )
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _dir) = super::sqlite_store();
                    crate::store::contract::$name(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(store) = super::pg_store(stringify!($name)).await else { return };
                    crate::store::contract::$name(&store).await;
                    store.drop_schema().await.unwrap();
                }
            )*
        }
    };
}

contract_tests!(
    policy_versions_record_who_and_when,
    a_batch_counts_once,
    a_failed_batch_leaves_no_trace,
    cache_hits_and_savings_are_stored_and_summed,
    savings_above_the_column_are_refused_whole,
    a_batch_committed_before_the_upgrade_stays_a_duplicate,
    grants_never_exceed_the_room,
    usage_above_the_slice_is_charged_in_full,
    expired_leases_return_their_room,
    concurrent_grants_share_the_room,
    concurrent_duplicates_count_once,
    ping_answers,
    learned_estimates_follow_reports_in_order,
    approvals_move_pending_approved_used,
    approvals_expire,
    concurrent_replays_let_exactly_one_through,
    concurrent_decisions_have_one_winner,
    budget_alerts_fire_once_per_crossing,
    a_high_cost_record_raises_one_alert,
    alert_claims_are_exclusive_and_retried,
    concurrent_claims_hand_each_alert_to_one,
    audit_appends_a_chain_and_pages,
    audit_refuses_an_inexact_amount_whole,
    audit_logs_policy_versions_and_approvals,
    audit_verify_names_an_edited_row,
    audit_verify_names_a_deleted_row,
    audit_verify_names_swapped_rows,
    audit_verify_names_a_cut_tail,
    audit_concurrent_appends_make_one_chain,
    audit_retention_keeps_the_chain_verifiable,
    // anomalies (issue 16)
    detection_over_the_ledger_finds_an_injected_spike,
    anomalies_in_a_range_are_counted_and_the_newest_kept,
    exceptions_are_kept_once_with_their_batch,
    decision_rows_ride_their_batch_once,
    audit_appends_many_rows_in_chunks,
    // the compliance report (issue 17)
    report_reads_sum_the_decision_log,
    decision_stats_group_and_bin_decision_rows,
    violation_alerts_fire_once_per_project_code_and_window,
    // analytics at scale (issue 16)
    rollups_answer_as_the_raw_rows_do,
);

/// Two sidecars on one PostgreSQL append to one chain: contiguous seqs, no fork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_sidecars_append_one_chain() {
    let Some(a) = pg_store("postgres_two_sidecars_append_one_chain").await else {
        return;
    };
    let schema = a.schema_name().unwrap().to_string();
    let b = PgStore::connect(&std::env::var("DATABASE_URL").unwrap(), Some(&schema))
        .await
        .unwrap();
    let mut futs = Vec::new();
    for i in 0..16_i64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        futs.push(tokio::spawn(async move {
            store
                .audit_append(vec![crate::audit::AuditEvent::new("fleet", i)])
                .await
                .unwrap()
        }));
    }
    for f in futs {
        f.await.unwrap();
    }
    let rows = a
        .audit_list(crate::audit::AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=16).collect::<Vec<_>>()
    );
    let v = crate::audit::verify(&b).await.unwrap();
    assert_eq!(v["ok"], true, "{v}");
    a.drop_schema().await.unwrap();
}

/// Two sidecars on one PostgreSQL (two pools, same schema) grant from one room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_sidecars_grant_atomically() {
    let Some(a) = pg_store("postgres_two_sidecars_grant_atomically").await else {
        return;
    };
    let schema = a.schema_name().unwrap().to_string();
    let b = PgStore::connect(&std::env::var("DATABASE_URL").unwrap(), Some(&schema))
        .await
        .unwrap();
    let mk = |inst: &str| super::SyncWrite {
        exceptions: Vec::new(),
        audit: Vec::new(),
        instance_id: inst.into(),
        seq: 1,
        digest: String::new(),
        legacy_digest: None,
        usage: vec![],
        release: vec![],
        leases: vec![super::LeaseAsk {
            counter: "org.daily/2026-11-24".into(),
            limit: 500,
            want: 200,
        }],
        now_ms: 1,
        lease_ttl_ms: 1000,
    };
    let mut futs = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let w = mk(&format!("inst{i}"));
        futs.push(tokio::spawn(async move {
            store.sync(w).await.unwrap().leases[0].granted
        }));
    }
    let mut total = 0;
    for f in futs {
        total += f.await.unwrap();
    }
    assert_eq!(total, 500);
    a.drop_schema().await.unwrap();
}

mod migration {
    //! A database written by a sidecar from before cache savings were stored (its ledger has no
    //! `cache_hit`/`savings`) opens, gains the columns, keeps every acknowledged record and its
    //! exactly-once bookkeeping, and opens again without change.
    use crate::store::{PgStore, SqliteStore, Store, SyncWrite, UsageRecord};

    const T0: i64 = 1_764_000_000_000;
    const K: &str = "org.monthly/2026-11";

    /// The tables as that sidecar created them (the rest of today's schema is created on open).
    const OLD_SCHEMA: &[&str] = &[
        "CREATE TABLE seen_batches (instance_id TEXT NOT NULL, seq BIGINT NOT NULL, digest TEXT NOT NULL,
            committed_at_ms BIGINT NOT NULL, PRIMARY KEY (instance_id, seq))",
        "CREATE TABLE usage_ledger (instance_id TEXT NOT NULL, seq BIGINT NOT NULL, idx BIGINT NOT NULL,
            amount BIGINT NOT NULL, counters TEXT NOT NULL, project_id TEXT, client_id TEXT, host TEXT,
            at_ms BIGINT, committed_at_ms BIGINT NOT NULL, PRIMARY KEY (instance_id, seq, idx))",
        "CREATE TABLE budget_counters (counter_key TEXT PRIMARY KEY, spent BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL)",
        // One acknowledged batch of one 500 micro-USD request.
        "INSERT INTO seen_batches VALUES ('envoy-old', 1, 'old-digest', 1764000000000)",
        "INSERT INTO usage_ledger VALUES ('envoy-old', 1, 0, 500, 'org.monthly/2026-11', 'sales-ai',
            'sales-agent', 'api.openai.com', 1764000000000, 1764000000000)",
        "INSERT INTO budget_counters VALUES ('org.monthly/2026-11', 500, 1764000000000)",
    ];

    fn write(instance: &str, digest: &str, usage: Vec<UsageRecord>) -> SyncWrite {
        SyncWrite {
            exceptions: Vec::new(),
            audit: Vec::new(),
            instance_id: instance.into(),
            seq: 1,
            digest: digest.into(),
            legacy_digest: None,
            usage,
            release: vec![],
            leases: vec![],
            now_ms: T0 + 10,
            lease_ttl_ms: 30_000,
        }
    }

    fn old_record() -> UsageRecord {
        UsageRecord {
            amount: 500,
            counters: vec![K.into()],
            project_id: Some("sales-ai".into()),
            client_id: Some("sales-agent".into()),
            host: Some("api.openai.com".into()),
            at_ms: Some(T0),
            cache_hit: false,
            savings: 0,
        }
    }

    /// The totals of `T0`'s millisecond (raw rows) and of its UTC day (the day's rollup,
    /// built on the first open): the same.
    async fn totals_at_t0(store: &dyn Store) -> Vec<crate::store::UsageTotals> {
        let day = crate::store::rollup::DAY_MS;
        let raw = store.usage_totals(T0, T0 + 1).await.unwrap();
        let from = T0 - T0.rem_euclid(day);
        let rolled = store.usage_totals(from, from + day).await.unwrap();
        assert_eq!(raw, rolled, "the day's rollup differs from the rows");
        raw
    }

    /// What must hold right after the first open of the old database.
    async fn upgraded(store: &dyn Store) {
        let totals = totals_at_t0(store).await;
        assert_eq!(totals.len(), 1, "{totals:?}");
        let t = &totals[0];
        assert_eq!(
            (
                t.project_id.as_deref(),
                t.requests,
                t.cost,
                t.cache_hits,
                t.savings
            ),
            (Some("sales-ai"), 1, 500, 0, 0),
            "the old row: a charged request, not a hit"
        );
        // The old batch retried: still a duplicate, not recounted.
        assert!(
            store
                .sync(write("envoy-old", "old-digest", vec![old_record()]))
                .await
                .unwrap()
                .duplicate
        );
        let hit = UsageRecord {
            amount: 0,
            counters: vec![],
            cache_hit: true,
            savings: 2000,
            ..old_record()
        };
        assert!(
            !store
                .sync(write("envoy-new", "new", vec![hit]))
                .await
                .unwrap()
                .duplicate
        );
        let spent = store
            .counters(T0)
            .await
            .unwrap()
            .iter()
            .find(|c| c.counter == K)
            .map(|c| c.spent);
        assert_eq!(spent, Some(500));
    }

    /// And after every later open.
    async fn reopened(store: &dyn Store) {
        let totals = totals_at_t0(store).await;
        assert_eq!(totals.len(), 1, "{totals:?}");
        assert_eq!(
            (
                totals[0].requests,
                totals[0].cost,
                totals[0].cache_hits,
                totals[0].savings
            ),
            (2, 500, 1, 2000)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_old_sqlite_database_gains_the_cache_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pag0.db");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            for stmt in OLD_SCHEMA {
                conn.execute(stmt, []).unwrap();
            }
        }
        let store = SqliteStore::open(&path).unwrap();
        upgraded(&store).await;
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        reopened(&store).await;
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut st = conn.prepare("PRAGMA table_info(usage_ledger)").unwrap();
        let columns: Vec<String> = st
            .query_map([], |r| r.get(1))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            columns
                .iter()
                .filter(|c| *c == "cache_hit" || *c == "savings")
                .count(),
            2,
            "{columns:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_old_postgres_schema_gains_the_cache_columns() {
        let Some(fresh) = super::pg_store("an_old_postgres_schema_gains_the_cache_columns").await
        else {
            return;
        };
        let url = std::env::var("DATABASE_URL").unwrap();
        let schema = fresh.schema_name().unwrap().to_string();
        // Start again from the old tables, in this test's own schema.
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "DROP SCHEMA {schema} CASCADE; CREATE SCHEMA {schema}; SET search_path = {schema}"
            ))
            .await
            .unwrap();
        for stmt in OLD_SCHEMA {
            client.batch_execute(stmt).await.unwrap();
        }
        drop(client);
        let _ = driver.await;
        drop(fresh);
        let store = PgStore::connect(&url, Some(&schema)).await.unwrap();
        upgraded(&store).await;
        let again = PgStore::connect(&url, Some(&schema)).await.unwrap();
        reopened(&again).await;
        again.drop_schema().await.unwrap();
    }
}

mod model {
    //! Random interleavings of honest filters against the SQLite store: after every step
    //! `spent + Σ unexpired grants ≤ limit`, `spent` only grows, and a resent batch never
    //! counts twice.
    use proptest::prelude::*;

    use crate::store::{LeaseAsk, SqliteStore, Store, SyncWrite, UsageRecord};

    const K: &str = "org.daily/2026-11-24";
    const LIMIT: u64 = 1_000;
    const TTL: i64 = 100;

    #[derive(Clone, Debug)]
    enum Op {
        Ask { inst: usize, want: u64 },
        Use { inst: usize, fraction: u64 },
        Resend { inst: usize },
        Release { inst: usize },
        Tick { ms: i64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3usize, 0..700u64).prop_map(|(inst, want)| Op::Ask { inst, want }),
            (0..3usize, 0..=100u64).prop_map(|(inst, fraction)| Op::Use { inst, fraction }),
            (0..3usize).prop_map(|inst| Op::Resend { inst }),
            (0..3usize).prop_map(|inst| Op::Release { inst }),
            (1..80i64).prop_map(|ms| Op::Tick { ms }),
        ]
    }

    #[derive(Default, Clone)]
    struct Filter {
        seq: i64,
        granted: u64,
        /// By the filter's rule: the time it sent the sync + TTL.
        expires: i64,
        last: Option<SyncWrite>,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn honest_filters_never_overspend(ops in proptest::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let store = SqliteStore::open(std::path::Path::new(":memory:")).unwrap();
                let mut now = 0i64;
                let mut filters = vec![Filter::default(); 3];
                let mut last_spent = 0u64;
                for op in ops {
                    let base = |f: &mut Filter, inst: usize, now: i64| {
                        f.seq += 1;
                        SyncWrite {
                            exceptions: Vec::new(),
                            audit: Vec::new(),
                            instance_id: format!("i{inst}"), seq: f.seq, digest: String::new(), legacy_digest: None, usage: vec![],
                            release: vec![], leases: vec![], now_ms: now, lease_ttl_ms: TTL,
                        }
                    };
                    let (inst, write) = match op {
                        Op::Tick { ms } => { now += ms; continue; }
                        Op::Ask { inst, want } => {
                            let f = &mut filters[inst];
                            let mut w = base(f, inst, now);
                            w.leases = vec![LeaseAsk { counter: K.into(), limit: LIMIT, want }];
                            (inst, w)
                        }
                        Op::Use { inst, fraction } => {
                            let f = &mut filters[inst];
                            // Honest: only what its unexpired slice allows.
                            let room = if now < f.expires { f.granted } else { 0 };
                            let amount = room * fraction / 100;
                            let mut w = base(f, inst, now);
                            w.digest = format!("{amount}");
                            w.usage = vec![UsageRecord { amount, counters: vec![K.into()], project_id: None,
                                                         client_id: None, host: None, at_ms: None,
                                                         cache_hit: false, savings: 0 }];
                            w.leases = vec![LeaseAsk { counter: K.into(), limit: LIMIT, want: 0 }];
                            (inst, w)
                        }
                        Op::Resend { inst } => match filters[inst].last.clone() {
                            Some(mut w) => { w.now_ms = now; (inst, w) }
                            None => continue,
                        },
                        Op::Release { inst } => {
                            let f = &mut filters[inst];
                            let mut w = base(f, inst, now);
                            w.release = vec![K.into()];
                            f.granted = 0;
                            (inst, w)
                        }
                    };
                    let out = store.sync(write.clone()).await.unwrap();
                    let f = &mut filters[inst];
                    if let Some(g) = out.leases.iter().find(|g| g.counter == K) {
                        f.granted = g.granted;
                        f.expires = now + TTL;
                    }
                    if !write.usage.is_empty() {
                        f.last = Some(write);
                    }
                    let counters = store.counters(now).await.unwrap();
                    let (spent, held) = counters.iter().find(|c| c.counter == K)
                        .map_or((0, 0), |c| (c.spent, c.leases.iter().map(|l| l.granted).sum::<u64>()));
                    prop_assert!(spent + held <= LIMIT, "spent {spent} + held {held} > {LIMIT}");
                    prop_assert!(spent >= last_spent, "spent went down");
                    last_spent = spent;
                }
                Ok(())
            })?;
        }
    }
}

/// Two sidecars on one PostgreSQL (two pools, same schema): eight filters' batches cross 80 %
/// and 100 % of one counter concurrently through both, and each crossing is stored once;
/// both sidecars then claim at once, and each alert goes to exactly one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_sidecars_raise_and_claim_each_alert_once() {
    let Some(a) = pg_store("postgres_two_sidecars_raise_and_claim_each_alert_once").await else {
        return;
    };
    let schema = a.schema_name().unwrap().to_string();
    let b = PgStore::connect(&std::env::var("DATABASE_URL").unwrap(), Some(&schema))
        .await
        .unwrap();
    let counter = "project.daily/team/2026-11-24";
    let rules = crate::alerts::AlertRules {
        threshold_ppm: Some(800_000),
        high_cost: None,
        policy_violation: false,
        limits: [(counter.to_string(), 1000)].into_iter().collect(),
        targets: vec![crate::alerts::AlertTarget {
            channel: "slack".into(),
            target: "http://127.0.0.1:9/slack".into(),
        }],
    };
    let mut futs = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let rules = rules.clone();
        futs.push(tokio::spawn(async move {
            let mut raised = 0;
            for seq in 1..=5 {
                let usage = vec![UsageRecord {
                    amount: 30,
                    counters: vec![counter.into()],
                    project_id: Some("team".into()),
                    client_id: Some(format!("c{i}")),
                    host: None,
                    at_ms: Some(1),
                    cache_hit: false,
                    savings: 0,
                }];
                let w = super::SyncWrite {
                    exceptions: Vec::new(),
                    audit: Vec::new(),
                    instance_id: format!("inst{i}"),
                    seq,
                    digest: format!("{seq}"),
                    legacy_digest: None,
                    usage,
                    release: vec![],
                    leases: vec![],
                    now_ms: 1,
                    lease_ttl_ms: 1000,
                };
                raised += store
                    .sync_alerting(w, rules.clone())
                    .await
                    .unwrap()
                    .alerts_raised
                    .len();
            }
            raised
        }));
    }
    let mut raised = 0;
    for f in futs {
        raised += f.await.unwrap();
    }
    // 8 × 5 × 30 = 1200: past both marks, two alerts in all.
    assert_eq!(raised, 2, "each crossing raised once across both sidecars");
    assert_eq!(a.alerts(10).await.unwrap().len(), 2);
    assert_eq!(b.alerts(10).await.unwrap().len(), 2);

    let (ca, cb) = tokio::join!(
        a.claim_alerts("sidecar-a".into(), 2, 60_000, 10),
        b.claim_alerts("sidecar-b".into(), 2, 60_000, 10)
    );
    let mut keys: Vec<String> = ca
        .unwrap()
        .into_iter()
        .chain(cb.unwrap())
        .map(|c| c.key)
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    keys.dedup();
    assert_eq!(keys.len(), 2, "one alert claimed by both sidecars");
    a.drop_schema().await.unwrap();
}

/// Two sidecars' delivery workers (two pools, one schema) drain 12 alerts at the same time:
/// the Slack receiver gets each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_delivery_workers_send_each_alert_once() {
    use std::sync::{Arc, Mutex};

    use axum::routing::post;
    use axum::{extract::State, Json, Router};

    let Some(a) = pg_store("postgres_two_delivery_workers_send_each_alert_once").await else {
        return;
    };
    let schema = a.schema_name().unwrap().to_string();
    let b = PgStore::connect(&std::env::var("DATABASE_URL").unwrap(), Some(&schema))
        .await
        .unwrap();

    type Got = Arc<Mutex<Vec<serde_json::Value>>>;
    async fn hook(State(got): State<Got>, Json(v): Json<serde_json::Value>) -> &'static str {
        got.lock().unwrap().push(v);
        "ok"
    }
    let got: Got = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slack", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/slack", post(hook))
        .with_state(got.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let rules = crate::alerts::AlertRules {
        high_cost: Some(1),
        targets: vec![crate::alerts::AlertTarget {
            channel: "slack".into(),
            target: url,
        }],
        ..Default::default()
    };
    let usage: Vec<UsageRecord> = (0..12)
        .map(|i| UsageRecord {
            amount: 10 + i,
            counters: vec![],
            project_id: Some("team".into()),
            client_id: None,
            host: Some(format!("h{i}")),
            at_ms: None,
            cache_hit: false,
            savings: 0,
        })
        .collect();
    let w = super::SyncWrite {
        exceptions: Vec::new(),
        audit: Vec::new(),
        instance_id: "i".into(),
        seq: 1,
        digest: "d".into(),
        legacy_digest: None,
        usage,
        release: vec![],
        leases: vec![],
        now_ms: 1,
        lease_ttl_ms: 1000,
    };
    assert_eq!(
        a.sync_alerting(w, rules).await.unwrap().alerts_raised.len(),
        12
    );

    let state = |s: PgStore| {
        crate::AppState::new(Arc::new(s), crate::Tokens::default())
            .unwrap()
            .with_clock(Arc::new(crate::ManualClock::new(1_000)))
    };
    let (sa, sb) = (state(a.clone()), state(b));
    let drain = |st: crate::AppState, me: &'static str| async move {
        let mut handled = 0;
        loop {
            let n = crate::alerts::run_once(&st, me).await.unwrap();
            if n == 0 {
                return handled;
            }
            handled += n;
        }
    };
    let (ha, hb) = tokio::join!(
        tokio::spawn(drain(sa, "sidecar-a")),
        tokio::spawn(drain(sb, "sidecar-b"))
    );
    let (ha, hb) = (ha.unwrap(), hb.unwrap());
    assert_eq!(ha + hb, 12, "handled {ha} + {hb}");
    let texts: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .map(|v| v["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts.len(), 12, "{texts:#?}");
    let mut hosts: Vec<&str> = texts
        .iter()
        .map(|t| {
            t.split("a request to ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), 12, "a message was sent twice: {texts:#?}");
    let list = a.alerts(100).await.unwrap();
    assert!(list
        .iter()
        .all(|x| x.state == "done" && x.deliveries[0].status == "sent"));
    println!("two workers: sidecar-a sent {ha}, sidecar-b sent {hb}");
    a.drop_schema().await.unwrap();
}

/// Two sidecars on one PostgreSQL storing the same findings at once: each anomaly is new to
/// exactly one of them (what lets an alert go out once per fleet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_sidecars_store_each_anomaly_once() {
    use super::{Anomaly, AnomalyKind, Unit};
    let Some(a) = pg_store("postgres_two_sidecars_store_each_anomaly_once").await else {
        return;
    };
    let schema = a.schema_name().unwrap().to_string();
    let b = PgStore::connect(&std::env::var("DATABASE_URL").unwrap(), Some(&schema))
        .await
        .unwrap();
    let found: Vec<Anomaly> = (0..50)
        .map(|h| Anomaly {
            kind: AnomalyKind::SpendSpike,
            project_id: "sales-ai".into(),
            client_id: None,
            subject: None,
            score: 7.0,
            baseline: 1,
            observed: 10,
            unit: Unit::UsdMicros,
            window_from_ms: h * 3_600_000,
            window_to_ms: (h + 1) * 3_600_000,
            explanation: format!("hour {h}"),
            detected_at_ms: 0,
        })
        .collect();
    let mut futs = Vec::new();
    for i in 0..6 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let found = found.clone();
        futs.push(tokio::spawn(async move {
            store.put_anomalies(found).await.unwrap()
        }));
    }
    let mut new = Vec::new();
    for f in futs {
        new.extend(f.await.unwrap());
    }
    new.sort_by_key(|x| x.window_from_ms);
    assert_eq!(new, found);
    a.drop_schema().await.unwrap();
}
