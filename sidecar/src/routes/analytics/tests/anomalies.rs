//! Anomalies in `/v1/analytics`, on SQLite and PostgreSQL: ten days of steady usage synced
//! through `/v1/sync` and one 50× hour, detection run over the store (`anomaly::run_once`), a
//! few findings stored by hand (a new endpoint, a costly request, one last month); then per
//! group of every dimension and in total the analytics' `anomalies` equal what
//! `GET /v1/anomalies?since=from&until=to` lists for the same period, in JSON and CSV, and a
//! period without them shows 0.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::anomaly::{run_once, Schedule};
use crate::store::tests::{pg_store, sqlite_store};
use crate::store::{Anomaly, AnomalyKind, Store, Unit};
use crate::testing::{tokens, Harness, ALICE, T0};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const DIMS: [&str; 5] = ["project", "costCenter", "endpoint", "client", "model"];

fn policy() -> Value {
    let hash = |c: char| c.to_string().repeat(64);
    json!({
        "orgId": "acme-corp",
        "timezone": "UTC",
        "endpoints": [ { "host": "api.openai.com", "category": "llm", "pricing": { "perRequest": "1000" } } ],
        "projects": [
            { "id": "sales-ai", "name": "Sales AI", "tags": { "costCenter": "CC-SALES" } },
            { "id": "support", "name": "Support" } ],
        "clients": [
            { "id": "sales-agent", "projectId": "sales-ai", "apiKeySha256": hash('a'), "tags": { "costCenter": "CC-1001" } },
            { "id": "sales-bot", "projectId": "sales-ai", "apiKeySha256": hash('b') },
            { "id": "support-bot", "projectId": "support", "apiKeySha256": hash('c') } ]
    })
}

/// The cost centre of an anomaly, by hand from the policy above: the client's tag, else its
/// project's.
fn cost_center(project: &str, client: Option<&str>) -> &'static str {
    match (project, client) {
        (_, Some("sales-agent")) => "CC-1001",
        ("sales-ai", _) => "CC-SALES",
        _ => "unassigned",
    }
}

fn found(
    kind: AnomalyKind,
    project: &str,
    client: Option<&str>,
    subject: Option<&str>,
    at: i64,
) -> Anomaly {
    Anomaly {
        kind,
        project_id: project.into(),
        client_id: client.map(str::to_string),
        subject: subject.map(str::to_string),
        score: 12.0,
        baseline: 1,
        observed: 9,
        unit: Unit::Requests,
        window_from_ms: at,
        window_to_ms: at + HOUR,
        explanation: format!("{kind:?} of {project} at {at}"),
        detected_at_ms: T0,
    }
}

/// (count, byKind, the (kind, window start) of the newest three).
type Got = (u64, BTreeMap<String, u64>, Vec<(String, String)>);

/// Per key of `dim` (`total`: ""), (count, byKind, the kinds and windows of the newest three)
/// from `/v1/anomalies` rows alone.
fn expected(listed: &[Value], dim: &str) -> BTreeMap<String, Got> {
    let mut m = BTreeMap::<String, Got>::new();
    for a in listed {
        let project = a["projectId"].as_str().unwrap();
        let client = a["clientId"].as_str();
        let kind = a["kind"].as_str().unwrap();
        let key = match dim {
            "project" => Some(project),
            "costCenter" => Some(cost_center(project, client)),
            "client" => client,
            "endpoint" if kind == "new_endpoint" => a["subject"].as_str(),
            "endpoint" | "model" => None,
            "total" => Some(""),
            _ => panic!("no dimension {dim}"),
        };
        let Some(key) = key else { continue };
        let g = m.entry(key.to_owned()).or_default();
        g.0 += 1;
        *g.1.entry(kind.to_owned()).or_default() += 1;
        // The list is newest first: its first three of a group are the group's newest.
        if g.2.len() < 3 {
            g.2.push((
                kind.to_owned(),
                a["windowFrom"].as_str().unwrap().to_owned(),
            ));
        }
    }
    m
}

fn got_of(a: &Value) -> Got {
    let by_kind = a["byKind"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    let latest = a["latest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["kind"].as_str().unwrap().to_owned(),
                x["window"]["from"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (a["count"].as_u64().unwrap(), by_kind, latest)
}

/// The groups of `dim` that have anomalies (the others must show a zero count).
fn got(body: &Value, dim: &str) -> BTreeMap<String, Got> {
    let sec = body["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["groupBy"] == dim)
        .unwrap();
    let mut out = BTreeMap::new();
    for g in sec["groups"].as_array().unwrap() {
        let a = got_of(&g["anomalies"]);
        if a.0 == 0 {
            assert_eq!(
                a,
                Got::default(),
                "{dim} {}: a zero count is empty",
                g["key"]
            );
        } else {
            out.insert(g["key"].as_str().unwrap().to_owned(), a);
        }
    }
    out
}

async fn listed(h: &Harness, query: &str) -> Vec<Value> {
    let r = h
        .call(
            Method::GET,
            &format!("/v1/anomalies?{query}&limit=1000"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body["anomalies"].as_array().unwrap().clone()
}

async fn check(store: Arc<dyn Store>, dir: tempfile::TempDir) {
    let h = Harness::over(store.clone(), tokens(), dir);
    let r = h.put_policy(ALICE, &policy()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Ten days before T0, every hour: sales-bot and support-bot send 4 requests of $0.01; in
    // the last hour sales-bot sends 200.
    let mut usage = Vec::new();
    for hour in 0..240 {
        let at = T0 - 240 * HOUR + hour * HOUR;
        let n = if hour == 239 { 200 } else { 4 };
        for i in 0..n {
            for (project, client) in [("sales-ai", "sales-bot"), ("support", "support-bot")] {
                if client == "support-bot" && i >= 4 {
                    continue;
                }
                usage.push(json!({ "amount": "10000", "counters": [], "projectId": project,
                                   "clientId": client, "host": "api.openai.com", "at": at + i * 10_000 }));
            }
        }
    }
    for (seq, chunk) in usage.chunks(500).enumerate() {
        let r = h
            .sync(json!({ "instanceId": "envoy-a", "seq": seq + 1, "usage": chunk }))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let detected = run_once(store.as_ref(), T0 + 60_000, &Schedule::default())
        .await
        .unwrap();
    assert!(
        detected
            .iter()
            .any(|a| a.kind == AnomalyKind::RequestSpike && a.window_from_ms == T0 - HOUR),
        "the 50× hour is found: {detected:?}"
    );
    let by_hand = vec![
        found(
            AnomalyKind::NewEndpoint,
            "sales-ai",
            Some("sales-agent"),
            Some("api.deepl.com"),
            T0 - 2 * HOUR,
        ),
        found(
            AnomalyKind::CostlyRequest,
            "support",
            Some("support-bot"),
            None,
            T0 - 3 * HOUR,
        ),
        found(
            AnomalyKind::SpendSpike,
            "support",
            None,
            None,
            T0 - 5 * HOUR,
        ),
        // 2025-10-25: last month.
        found(
            AnomalyKind::SpendSpike,
            "sales-ai",
            None,
            None,
            T0 - 30 * DAY,
        ),
    ];
    assert_eq!(store.put_anomalies(by_hand).await.unwrap().len(), 4);

    let all = DIMS.join(",");
    let month = h.analytics(&format!("period=month&groupBy={all}")).await;
    assert_eq!(month.status, StatusCode::OK, "{}", month.text);
    let b = &month.body;
    let (from, to) = (b["from"].as_str().unwrap(), b["to"].as_str().unwrap());
    let period = format!("since={from}&until={to}");
    let rows = listed(&h, &period).await;
    assert!(rows.len() >= 4, "{rows:?}");
    assert_eq!(
        listed(&h, "since=2025-10-01T00:00:00Z").await.len(),
        rows.len() + 1,
        "last month's is not in this month's"
    );
    for dim in DIMS {
        let want = expected(&rows, dim);
        assert_eq!(got(b, dim), want, "month by {dim}");
        if dim != "model" {
            assert!(!want.is_empty(), "{dim} has anomalies");
        }
    }
    assert_eq!(
        got_of(&b["total"]["anomalies"]),
        expected(&rows, "total")[""].clone(),
        "total"
    );
    assert_eq!(
        b["total"]["anomalies"]["count"].as_u64().unwrap(),
        rows.len() as u64
    );
    // Per project, as `/v1/anomalies?project=` counts it.
    for p in ["sales-ai", "support"] {
        let n = listed(&h, &format!("project={p}&{period}")).await.len() as u64;
        assert!(n > 0);
        assert_eq!(got(b, "project")[p].0, n, "{p}");
    }
    // The newest carries its numbers.
    let newest = &b["total"]["anomalies"]["latest"][0];
    let first = &rows[0];
    for (k, f) in [
        ("kind", "kind"),
        ("score", "score"),
        ("observed", "observed"),
        ("baseline", "baseline"),
        ("explanation", "explanation"),
        ("at", "detectedAt"),
    ] {
        assert_eq!(newest[k], first[f], "{k}");
    }
    assert_eq!(
        newest["window"],
        json!({ "from": first["windowFrom"], "to": first["windowTo"] })
    );

    // CSV: the count per group and in total.
    let csv = h
        .call(
            Method::GET,
            &format!("/v1/analytics?period=month&groupBy={all}&format=csv"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    let mut rd = csv::Reader::from_reader(csv.text.as_bytes());
    let col = rd
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "anomalies")
        .unwrap();
    let mut seen = 0;
    for row in rd.records() {
        let row = row.unwrap();
        let dim = &row[0];
        let want = expected(&rows, dim).get(&row[1]).map_or(0, |g| g.0);
        assert_eq!(
            row[col].parse::<u64>().unwrap(),
            want,
            "csv {dim} {}",
            &row[1]
        );
        seen += u64::from(want > 0);
    }
    assert!(seen >= 8, "csv rows with anomalies: {seen}");

    // Last month's range: the old one only; a range after them all: none.
    let old = h
        .analytics("from=2025-10-25T00:00:00Z&to=2025-10-26T00:00:00Z&groupBy=project")
        .await;
    assert_eq!(old.status, StatusCode::OK, "{}", old.text);
    assert_eq!(
        listed(&h, "since=2025-10-25T00:00:00Z&until=2025-10-26T00:00:00Z")
            .await
            .len(),
        1
    );
    assert_eq!(old.body["total"]["anomalies"]["count"], 1);
    assert_eq!(got(&old.body, "project")["sales-ai"].0, 1);
    let after = h
        .analytics("from=2025-11-24T16:00:00Z&to=2025-11-25T00:00:00Z&groupBy=project,client")
        .await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text);
    assert_eq!(
        after.body["total"]["anomalies"],
        json!({ "count": 0, "byKind": {}, "latest": [] })
    );
    for dim in ["project", "client"] {
        assert!(got(&after.body, dim).is_empty(), "{dim}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_anomalies_equal_the_listed_ones_on_sqlite() {
    let (store, dir) = sqlite_store();
    check(Arc::new(store), dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_anomalies_equal_the_listed_ones_on_postgres() {
    let Some(store) = pg_store("analytics_anomalies_equal_the_listed_ones").await else {
        return;
    };
    let store = Arc::new(store);
    check(store.clone(), tempfile::tempdir().unwrap()).await;
    store.drop_schema().await.unwrap();
}
