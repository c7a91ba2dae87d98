//! A scripted month of usage through `/v1/sync`, on SQLite and PostgreSQL: every dimension of
//! `/v1/analytics` (period, range, series, CSV) equals sums the test computes from the records
//! themselves, and budget utilisation equals `/v1/budgets`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::store::tests::{pg_store, sqlite_store};
use crate::store::Store;
use crate::testing::{tokens, Harness, ALICE, T0};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// T0 is 2025-11-24T16:00Z; the policy is in UTC.
const MONTH_FROM: i64 = 1_761_955_200_000; // 2025-11-01T00:00Z
const DAY_FROM: i64 = 1_763_942_400_000; // 2025-11-24T00:00Z

/// One scripted record.
#[derive(Clone, Debug)]
struct Rec {
    project: Option<&'static str>,
    client: &'static str,
    host: &'static str,
    amount: u64,
    hit: bool,
    savings: u64,
    at: i64,
}

/// (project, client, cost centre as the policy below says, by hand).
const WHO: [(Option<&str>, &str, &str); 5] = [
    (Some("sales-ai"), "sales-agent", "CC-1001"),
    (Some("sales-ai"), "sales-bot", "CC-SALES"),
    (Some("support"), "support-bot", "unassigned"),
    // A client the policy does not know, of a tagged project.
    (Some("sales-ai"), "ghost", "CC-SALES"),
    (None, "orphan", "unassigned"),
];
const HOSTS: [&str; 3] = ["api.openai.com", "api.deepl.com", "api.salesforce.com"];

fn policy() -> Value {
    let hash = |c: char| c.to_string().repeat(64);
    json!({
        "orgId": "acme-corp",
        "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "100000000", "dailyBudget": "5000000" },
        "endpoints": [ { "host": "api.openai.com", "category": "llm", "pricing": { "perRequest": "1000" } } ],
        "projects": [
            { "id": "sales-ai", "name": "Sales AI", "tags": { "costCenter": "CC-SALES" },
              "policy": { "monthlyBudget": "2000000", "dailyBudget": "400000" } },
            { "id": "support", "name": "Support", "policy": { "monthlyBudget": "50000000" } } ],
        "clients": [
            { "id": "sales-agent", "projectId": "sales-ai", "apiKeySha256": hash('a'), "tags": { "costCenter": "CC-1001" } },
            { "id": "sales-bot", "projectId": "sales-ai", "apiKeySha256": hash('b') },
            { "id": "support-bot", "projectId": "support", "apiKeySha256": hash('c') } ]
    })
}

/// 300 records over the 30 days before T0 (so some last month), deterministic.
fn script() -> Vec<Rec> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..300)
        .map(|_| {
            let (project, client, _) = WHO[(next() % 5) as usize];
            let host = HOSTS[(next() % 3) as usize];
            let hit = next() % 4 == 0;
            let at = T0 - (next() % (30 * DAY as u64)) as i64;
            Rec {
                project,
                client,
                host,
                amount: if hit { 0 } else { 1 + next() % 50_000 },
                hit,
                savings: if hit { 1 + next() % 9000 } else { 0 },
                at,
            }
        })
        .collect()
}

fn counters(r: &Rec) -> Vec<String> {
    if r.hit || r.at < MONTH_FROM {
        return vec![];
    }
    let mut c = vec!["org.monthly/2025-11".to_owned()];
    if let Some(p) = r.project {
        c.push(format!("project.monthly/{p}/2025-11"));
    }
    if r.at >= DAY_FROM {
        c.push("org.daily/2025-11-24".into());
        if let Some(p) = r.project {
            c.push(format!("project.daily/{p}/2025-11-24"));
        }
    }
    c
}

fn to_json(r: &Rec) -> Value {
    let mut v = json!({ "amount": r.amount.to_string(), "counters": counters(r), "clientId": r.client,
                        "host": r.host, "at": r.at });
    if let Some(p) = r.project {
        v["projectId"] = json!(p);
    }
    if r.hit {
        v["cacheHit"] = json!(true);
        v["savings"] = json!(r.savings.to_string());
    }
    v
}

/// (totalCost, totalRequests, cacheHits, savings) as the API writes them.
type Sums = (String, u64, u64, String);

fn add(m: &mut BTreeMap<String, (u64, u64, u64, u64)>, k: &str, r: &Rec) {
    let e = m.entry(k.to_owned()).or_default();
    e.0 += r.amount;
    e.1 += 1;
    e.2 += u64::from(r.hit);
    e.3 += r.savings;
}

fn stringify(m: BTreeMap<String, (u64, u64, u64, u64)>) -> BTreeMap<String, Sums> {
    m.into_iter()
        .map(|(k, (c, n, h, s))| (k, (c.to_string(), n, h, s.to_string())))
        .collect()
}

/// Independent sums per key of `dim` over records in `[from, to)`.
fn expected(recs: &[Rec], dim: &str, from: i64, to: i64) -> BTreeMap<String, Sums> {
    let mut m = BTreeMap::new();
    for r in recs.iter().filter(|r| from <= r.at && r.at < to) {
        let cc = WHO
            .iter()
            .find(|w| w.1 == r.client)
            .map_or("unassigned", |w| w.2);
        let key = match dim {
            "project" => r.project.unwrap_or("unassigned"),
            "client" => r.client,
            "endpoint" => r.host,
            "costCenter" => cc,
            "total" => "",
            _ => panic!("no dimension {dim}"),
        };
        add(&mut m, key, r);
    }
    stringify(m)
}

fn sums(g: &Value) -> Sums {
    (
        g["totalCost"].as_str().unwrap().to_owned(),
        g["totalRequests"].as_u64().unwrap(),
        g["cacheHits"].as_u64().unwrap(),
        g["savings"].as_str().unwrap().to_owned(),
    )
}

fn section<'a>(body: &'a Value, dim: &str) -> &'a Value {
    body["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["groupBy"] == dim)
        .unwrap_or_else(|| panic!("no section {dim}"))
}

fn got(body: &Value, dim: &str) -> BTreeMap<String, Sums> {
    section(body, dim)["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["key"].as_str().unwrap().to_owned(), sums(g)))
        .collect()
}

const DIMS: [&str; 4] = ["project", "costCenter", "endpoint", "client"];

async fn check(store: Arc<dyn Store>, dir: tempfile::TempDir) {
    let h = Harness::over(store, tokens(), dir);
    let r = h.put_policy(ALICE, &policy()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let recs = script();
    for (seq, chunk) in recs.chunks(40).enumerate() {
        let usage: Vec<Value> = chunk.iter().map(to_json).collect();
        let r = h
            .sync(json!({ "instanceId": "envoy-a", "seq": seq + 1, "usage": usage }))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let all = DIMS.join(",");
    let month = h.analytics(&format!("period=month&groupBy={all}")).await;
    assert_eq!(month.status, StatusCode::OK, "{}", month.text);
    let b = &month.body;
    assert_eq!(b["dimensions"], json!(DIMS));
    let to = MONTH_FROM + 30 * DAY;
    for dim in DIMS {
        let want = expected(&recs, dim, MONTH_FROM, to);
        assert!(want.len() >= 3, "the script spreads over {dim}: {want:?}");
        assert_eq!(got(b, dim), want, "month by {dim}");
    }
    assert_eq!(
        got(b, "project"),
        {
            let g: BTreeMap<String, Sums> = b["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| (g["key"].as_str().unwrap().to_owned(), sums(g)))
                .collect();
            g
        },
        "`groups` is the first dimension's, as before"
    );
    assert_eq!(b["groupBy"], "project");
    assert_eq!(
        sums(&b["total"]),
        expected(&recs, "total", MONTH_FROM, to)[""]
    );
    let last_month = recs.iter().filter(|r| r.at < MONTH_FROM).count();
    assert!(last_month > 0 && b["total"]["totalRequests"].as_u64().unwrap() < 300);

    // Top endpoints of a group: its hosts by cost, from the records.
    let sales = section(b, "project")["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == "sales-ai")
        .unwrap();
    let mut hosts: Vec<(u64, &str)> = HOSTS
        .iter()
        .map(|hst| {
            let c = recs
                .iter()
                .filter(|r| r.at >= MONTH_FROM && r.project == Some("sales-ai") && r.host == *hst)
                .map(|r| r.amount)
                .sum();
            (c, *hst)
        })
        .collect();
    hosts.sort_by(|a, b| b.cmp(a));
    let top: Vec<(&str, String)> = sales["topEndpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["endpoint"].as_str().unwrap(),
                e["totalCost"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        top,
        hosts
            .iter()
            .map(|(c, hst)| (*hst, c.to_string()))
            .collect::<Vec<_>>()
    );

    // Utilisation is /v1/budgets' spent against its limit.
    let budgets = h.call(Method::GET, "/v1/budgets", Some(ALICE), None).await;
    let counter = |key: &str| {
        budgets.body["counters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["counter"] == key)
            .unwrap_or_else(|| panic!("no counter {key}: {}", budgets.text))
            .clone()
    };
    let mut checked = 0;
    for (u, key) in [
        (
            &b["total"]["budgetUtilization"]["month"],
            "org.monthly/2025-11".to_owned(),
        ),
        (
            &b["total"]["budgetUtilization"]["day"],
            "org.daily/2025-11-24".to_owned(),
        ),
        (
            &sales["budgetUtilization"]["month"],
            "project.monthly/sales-ai/2025-11".to_owned(),
        ),
        (
            &sales["budgetUtilization"]["day"],
            "project.daily/sales-ai/2025-11-24".to_owned(),
        ),
    ] {
        let c = counter(&key);
        assert_eq!(
            (&u["counter"], &u["spent"], &u["limit"]),
            (&json!(key), &c["spent"], &c["limit"]),
            "{key}"
        );
        let spent: f64 = c["spent"].as_str().unwrap().parse().unwrap();
        let limit: f64 = c["limit"].as_str().unwrap().parse().unwrap();
        assert!(spent > 0.0, "{key}");
        assert!(
            (u["ratio"].as_f64().unwrap() - spent / limit).abs() < 1e-12,
            "{key}"
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
    let org = counter("org.monthly/2025-11");
    assert_eq!(
        (&b["totalBudget"], &org["limit"]),
        (&json!("100000000"), &json!("100000000"))
    );
    assert_eq!(
        b["utilizationRate"],
        b["total"]["budgetUtilization"]["month"]["ratio"]
    );
    // Only projects have budgets.
    assert!(section(b, "client")["groups"][0]
        .get("budgetUtilization")
        .is_none());

    // A range: the last three days to the hour.
    let (from, to) = (T0 - 3 * DAY, T0 - HOUR);
    let q = format!(
        "from={}&to={}&groupBy=client,endpoint",
        crate::clock::rfc3339(from),
        crate::clock::rfc3339(to)
    );
    let range = h.analytics(&q).await;
    assert_eq!(range.status, StatusCode::OK, "{}", range.text);
    assert_eq!(range.body["period"], "range");
    for dim in ["client", "endpoint"] {
        assert_eq!(
            got(&range.body, dim),
            expected(&recs, dim, from, to),
            "range by {dim}"
        );
    }

    let day = h.analytics("period=day&groupBy=costCenter").await;
    assert_eq!(
        got(&day.body, "costCenter"),
        expected(&recs, "costCenter", DAY_FROM, DAY_FROM + DAY)
    );

    // A daily series of the month: every point is that UTC day's sums.
    let series = h
        .analytics("period=month&groupBy=project&interval=day")
        .await;
    assert_eq!(series.status, StatusCode::OK, "{}", series.text);
    assert_eq!(series.body["buckets"].as_array().unwrap().len(), 30);
    for s in section(&series.body, "project")["series"]
        .as_array()
        .unwrap()
    {
        let key = s["key"].as_str().unwrap();
        for p in s["points"].as_array().unwrap() {
            let start = chrono::DateTime::parse_from_rfc3339(p["start"].as_str().unwrap())
                .unwrap()
                .timestamp_millis();
            let want = expected(&recs, "project", start, start + DAY);
            assert_eq!(Some(&sums(p)), want.get(key), "{key} on {}", p["start"]);
        }
    }
    let points: u64 = series.body["totalSeries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["totalRequests"].as_u64().unwrap())
        .sum();
    assert_eq!(points, b["total"]["totalRequests"].as_u64().unwrap());
    // Hourly: the point of the hour before T0 is that hour's sums.
    let hourly = h
        .analytics("period=day&groupBy=endpoint&interval=hour")
        .await;
    assert_eq!(hourly.body["buckets"].as_array().unwrap().len(), 24);
    for p in hourly.body["totalSeries"].as_array().unwrap() {
        let start = chrono::DateTime::parse_from_rfc3339(p["start"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        assert_eq!(sums(p), expected(&recs, "total", start, start + HOUR)[""]);
    }

    // CSV: one row per group and the total, the same numbers.
    let csv = h
        .call(
            Method::GET,
            &format!("/v1/analytics?period=month&groupBy={all}&format=csv"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let mut rd = csv::Reader::from_reader(csv.text.as_bytes());
    assert_eq!(
        rd.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "dimension",
            "key",
            "start",
            "totalCost",
            "totalRequests",
            "cacheHits",
            "cacheHitRate",
            "savings"
        ]
    );
    let mut by: BTreeMap<(String, String), Sums> = BTreeMap::new();
    for row in rd.records() {
        let row = row.unwrap();
        by.insert(
            (row[0].to_owned(), row[1].to_owned()),
            (
                row[3].to_owned(),
                row[4].parse().unwrap(),
                row[5].parse().unwrap(),
                row[7].to_owned(),
            ),
        );
    }
    for dim in DIMS {
        for (k, v) in expected(&recs, dim, MONTH_FROM, to) {
            assert_eq!(
                by.remove(&(dim.to_owned(), k.clone())),
                Some(v),
                "csv {dim} {k}"
            );
        }
    }
    assert_eq!(
        by.remove(&("total".to_owned(), String::new())),
        Some(expected(&recs, "total", MONTH_FROM, to)[""].clone())
    );
    assert!(by.is_empty(), "no other rows: {by:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_equal_independent_sums_on_sqlite() {
    let (store, dir) = sqlite_store();
    check(Arc::new(store), dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_equal_independent_sums_on_postgres() {
    let Some(store) = pg_store("analytics_equal_independent_sums_on_postgres").await else {
        return;
    };
    let store = Arc::new(store);
    check(store.clone(), tempfile::tempdir().unwrap()).await;
    store.drop_schema().await.unwrap();
}
