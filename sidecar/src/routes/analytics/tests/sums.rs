//! A scripted month of usage through `/v1/sync`, on SQLite and PostgreSQL: every dimension of
//! `/v1/analytics` (period, range, series, CSV) equals sums the test computes from the records
//! themselves, and budget utilisation equals `/v1/budgets`. Scripted decision events ride the
//! same batches: violations and latencies per group equal what the test computes from the
//! `/v1/audit` decision rows, for every dimension.

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
            // The ledger records no model.
            "model" => "unassigned",
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

const DIMS: [&str; 5] = ["project", "costCenter", "endpoint", "client", "model"];

const MODELS: [Option<&str>; 3] = [Some("gpt-4o"), Some("gpt-4o-mini"), None];
const CODES: [&str; 3] = [
    "BUDGET_EXCEEDED",
    "ENDPOINT_BLOCKED",
    "OUTSIDE_WORKING_HOURS",
];

/// 400 decision events over the same 30 days, deterministic: allows with upstream latencies
/// (some without), cache hits with their own, denials by three codes, held requests, and
/// refusals of an unknown key (no client, no project).
fn decision_script() -> Vec<Value> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..400)
        .map(|_| {
            let (project, client, _) = WHO[(next() % 5) as usize];
            let host = HOSTS[(next() % 3) as usize];
            let at = T0 - (next() % (30 * DAY as u64)) as i64;
            let mut d = json!({ "at": at, "method": "POST", "authority": host,
                                "path": "/v1/chat/completions", "policyVersion": 1,
                                "clientId": client });
            if let Some(p) = project {
                d["projectId"] = json!(p);
            }
            if let Some(m) = MODELS[(next() % 3) as usize] {
                d["model"] = json!(m);
            }
            match next() % 10 {
                0..=3 => {
                    d["decision"] = json!("allow");
                    if next() % 8 != 0 {
                        // Spread over the exact (< 100 ms) and binned ranges.
                        d["latencyMs"] = json!(next() % 3000);
                    }
                }
                4 | 5 => {
                    d["decision"] = json!("cache_hit");
                    d["latencyMs"] = json!(next() % 30);
                }
                6 | 7 => {
                    d["decision"] = json!("deny");
                    d["code"] = json!(CODES[(next() % 3) as usize]);
                }
                8 => {
                    d["decision"] = json!("deny");
                    d["code"] = json!("UNKNOWN_API_KEY");
                    d.as_object_mut().unwrap().remove("clientId");
                    d.as_object_mut().unwrap().remove("projectId");
                }
                _ => {
                    d["decision"] = json!("pending");
                    d["code"] = json!("APPROVAL_PENDING");
                }
            }
            d
        })
        .collect()
}

/// Every `decision` row of `/v1/audit` in `[from, to)`, all pages.
async fn audit_decisions(h: &Harness, from: i64, to: i64) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = h
            .call(
                Method::GET,
                &format!("/v1/audit?kind=decision&from={from}&to={to}&limit=50{cursor}"),
                Some(ALICE),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        out.extend(r.body["entries"].as_array().unwrap().iter().cloned());
        match r.body["nextCursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

/// The key of an audit row in `dim`, by the same rules the docs give (cost centres by hand).
fn audit_key(row: &Value, dim: &str) -> String {
    let f = |k: &str| row[k].as_str().unwrap_or("unassigned").to_owned();
    match dim {
        "project" => f("projectId"),
        "client" => f("clientId"),
        "endpoint" => f("host"),
        "model" => f("model"),
        "costCenter" => WHO
            .iter()
            .find(|w| Some(w.1) == row["clientId"].as_str())
            .map_or("unassigned", |w| w.2)
            .to_owned(),
        "total" => String::new(),
        _ => panic!("no dimension {dim}"),
    }
}

/// A latency cut to two significant decimal digits, by its digits.
fn two_digits(ms: i64) -> i64 {
    let s = ms.to_string();
    if s.len() <= 2 {
        return ms;
    }
    format!("{}{}", &s[..2], "0".repeat(s.len() - 2))
        .parse()
        .unwrap()
}

/// (average, p95, samples) as documented: p95 is the largest latency sharing its two leading
/// digits with the exact nearest-rank 95th percentile.
fn latency(mut v: Vec<i64>) -> Value {
    if v.is_empty() {
        return json!({ "avg": null, "p95": null, "samples": 0 });
    }
    v.sort_unstable();
    let n = v.len();
    let exact = v[(n * 95).div_ceil(100) - 1];
    let p95 = v
        .iter()
        .copied()
        .filter(|l| two_digits(*l) == two_digits(exact))
        .max();
    let sum: i64 = v.iter().sum();
    json!({ "avg": sum as f64 / n as f64, "p95": p95, "samples": n })
}

/// Per key of `dim`: violations and latencies, from the audit rows alone.
fn expected_decisions(rows: &[Value], dim: &str) -> BTreeMap<String, Value> {
    #[derive(Default)]
    struct Acc {
        denials: u64,
        codes: BTreeMap<String, u64>,
        fwd: Vec<i64>,
        hits: Vec<i64>,
    }
    let mut m = BTreeMap::<String, Acc>::new();
    for r in rows {
        let a = m.entry(audit_key(r, dim)).or_default();
        let lat = r["latencyMs"].as_i64();
        match r["decision"].as_str().unwrap() {
            "deny" => {
                a.denials += 1;
                *a.codes
                    .entry(r["code"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
            "allow" => a.fwd.extend(lat),
            "cache_hit" => a.hits.extend(lat),
            _ => {}
        }
    }
    m.into_iter()
        .map(|(k, a)| {
            let f = latency(a.fwd);
            (
                k,
                json!({ "violations": { "count": a.denials, "byCode": a.codes },
                        "avgLatency": f["avg"], "p95Latency": f["p95"], "latencySamples": f["samples"],
                        "cacheHitLatency": latency(a.hits) }),
            )
        })
        .collect()
}

/// The decision fields of each group of `dim`.
fn got_decisions(body: &Value, dim: &str) -> BTreeMap<String, Value> {
    section(body, dim)["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["key"].as_str().unwrap().to_owned(), decision_fields(g)))
        .collect()
}

fn decision_fields(g: &Value) -> Value {
    let keys = [
        "violations",
        "avgLatency",
        "p95Latency",
        "latencySamples",
        "cacheHitLatency",
    ];
    Value::Object(
        keys.iter()
            .map(|k| ((*k).to_owned(), g[*k].clone()))
            .collect(),
    )
}

/// `ledger` with a zero group for every key only the decision rows have.
fn with_keys(
    mut ledger: BTreeMap<String, Sums>,
    decisions: &BTreeMap<String, Value>,
) -> BTreeMap<String, Sums> {
    for k in decisions.keys() {
        ledger
            .entry(k.clone())
            .or_insert_with(|| ("0".into(), 0, 0, "0".into()));
    }
    ledger
}

/// A group without decision rows: no violations, no latency.
fn no_decisions() -> Value {
    json!({ "violations": { "count": 0, "byCode": {} }, "avgLatency": null, "p95Latency": null,
            "latencySamples": 0, "cacheHitLatency": { "avg": null, "p95": null, "samples": 0 } })
}

/// Analytics' decision fields per group equal the audit rows' (groups only the ledger has
/// report none).
fn check_decisions(body: &Value, rows: &[Value], dim: &str, what: &str) {
    let mut want = expected_decisions(rows, dim);
    let got = got_decisions(body, dim);
    for k in got.keys() {
        want.entry(k.clone()).or_insert_with(no_decisions);
    }
    assert_eq!(got, want, "{what} decisions by {dim}");
}

async fn check(store: Arc<dyn Store>, dir: tempfile::TempDir) {
    let h = Harness::over(store, tokens(), dir);
    let r = h.put_policy(ALICE, &policy()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let recs = script();
    let scripted = decision_script();
    let mut events = scripted.chunks(54);
    for (seq, chunk) in recs.chunks(40).enumerate() {
        let usage: Vec<Value> = chunk.iter().map(to_json).collect();
        let decisions = events.next().unwrap_or_default();
        let r = h
            .sync(
                json!({ "instanceId": "envoy-a", "seq": seq + 1, "usage": usage,
                          "decisions": decisions }),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    assert!(events.next().is_none(), "every scripted decision was sent");
    let all = DIMS.join(",");
    let month = h.analytics(&format!("period=month&groupBy={all}")).await;
    assert_eq!(month.status, StatusCode::OK, "{}", month.text);
    let b = &month.body;
    assert_eq!(b["dimensions"], json!(DIMS));
    let to = MONTH_FROM + 30 * DAY;
    let month_rows = audit_decisions(&h, MONTH_FROM, to).await;
    let in_month = scripted
        .iter()
        .filter(|d| (MONTH_FROM..to).contains(&d["at"].as_i64().unwrap()))
        .count();
    assert_eq!(
        month_rows.len(),
        in_month,
        "each decision in the month is one audit row"
    );
    for dim in DIMS {
        let decisions = expected_decisions(&month_rows, dim);
        assert!(
            decisions.len() >= 3,
            "the decisions spread over {dim}: {decisions:?}"
        );
        let want = with_keys(expected(&recs, dim, MONTH_FROM, to), &decisions);
        if dim != "model" {
            assert!(want.len() >= 3, "the script spreads over {dim}: {want:?}");
        }
        assert_eq!(got(b, dim), want, "month by {dim}");
        check_decisions(b, &month_rows, dim, "month");
    }
    assert_eq!(
        decision_fields(&b["total"]),
        expected_decisions(&month_rows, "total")[""],
        "month total decisions"
    );
    // The script reaches what the checks are about: denials by several codes, latencies both
    // exact and binned, cache hits apart.
    let total = &b["total"];
    assert!(
        total["violations"]["byCode"].as_object().unwrap().len() >= 4,
        "{total}"
    );
    assert!(total["p95Latency"].as_i64().unwrap() >= 100, "{total}");
    assert!(
        total["cacheHitLatency"]["p95"].as_i64().unwrap() < 30,
        "{total}"
    );
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
    let range_rows = audit_decisions(&h, from, to).await;
    for dim in ["client", "endpoint"] {
        assert_eq!(
            got(&range.body, dim),
            with_keys(
                expected(&recs, dim, from, to),
                &expected_decisions(&range_rows, dim)
            ),
            "range by {dim}"
        );
        check_decisions(&range.body, &range_rows, dim, "range");
    }

    let day = h.analytics("period=day&groupBy=costCenter").await;
    let day_rows = audit_decisions(&h, DAY_FROM, DAY_FROM + DAY).await;
    assert_eq!(
        got(&day.body, "costCenter"),
        with_keys(
            expected(&recs, "costCenter", DAY_FROM, DAY_FROM + DAY),
            &expected_decisions(&day_rows, "costCenter")
        )
    );
    check_decisions(&day.body, &day_rows, "costCenter", "day");

    // A daily series of the month: every point is that UTC day's sums, and its violations and
    // latencies are those of that day's decision rows (from `/v1/audit`).
    let rows_in = |rows: &[Value], from: i64, to: i64| -> Vec<Value> {
        rows.iter()
            .filter(|r| (from..to).contains(&r["atMs"].as_i64().unwrap()))
            .cloned()
            .collect()
    };
    let start_of = |p: &Value| {
        chrono::DateTime::parse_from_rfc3339(p["start"].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let zero: Sums = ("0".into(), 0, 0, "0".into());
    let series = h
        .analytics("period=month&groupBy=project&interval=day")
        .await;
    assert_eq!(series.status, StatusCode::OK, "{}", series.text);
    assert_eq!(series.body["buckets"].as_array().unwrap().len(), 30);
    let groups: BTreeMap<String, Value> = section(&series.body, "project")["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["key"].as_str().unwrap().to_owned(), g.clone()))
        .collect();
    let mut with_latency = 0;
    let project_series = section(&series.body, "project")["series"]
        .as_array()
        .unwrap();
    // Every group with denials has a series (a point exists where usage or decisions do).
    assert_eq!(
        project_series
            .iter()
            .map(|s| s["key"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        groups.keys().cloned().collect::<Vec<_>>()
    );
    for s in project_series {
        let key = s["key"].as_str().unwrap();
        let mut denials = 0;
        for p in s["points"].as_array().unwrap() {
            let start = start_of(p);
            let want = expected(&recs, "project", start, start + DAY);
            assert_eq!(
                &sums(p),
                want.get(key).unwrap_or(&zero),
                "{key} on {}",
                p["start"]
            );
            let rows = rows_in(&month_rows, start, start + DAY);
            let want = expected_decisions(&rows, "project")
                .remove(key)
                .unwrap_or_else(no_decisions);
            assert_eq!(
                decision_fields(p),
                want,
                "{key} decisions on {}",
                p["start"]
            );
            denials += p["violations"]["count"].as_u64().unwrap();
            with_latency += u64::from(!p["p95Latency"].is_null());
        }
        assert_eq!(
            denials,
            groups[key]["violations"]["count"].as_u64().unwrap(),
            "{key}: the series' violations are the section's"
        );
    }
    assert!(
        with_latency >= 10,
        "the points carry latencies: {with_latency}"
    );
    let total_series = series.body["totalSeries"].as_array().unwrap();
    let points: u64 = total_series
        .iter()
        .map(|p| p["totalRequests"].as_u64().unwrap())
        .sum();
    assert_eq!(points, b["total"]["totalRequests"].as_u64().unwrap());
    let denials: u64 = total_series
        .iter()
        .map(|p| p["violations"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(denials, b["total"]["violations"]["count"].as_u64().unwrap());
    assert!(denials > 0);
    // Hourly: each point is its hour's sums and its hour's decision rows.
    let hourly = h
        .analytics("period=day&groupBy=endpoint&interval=hour")
        .await;
    assert_eq!(hourly.body["buckets"].as_array().unwrap().len(), 24);
    for p in hourly.body["totalSeries"].as_array().unwrap() {
        let start = start_of(p);
        assert_eq!(
            &sums(p),
            expected(&recs, "total", start, start + HOUR)
                .get("")
                .unwrap_or(&zero)
        );
        let rows = rows_in(&day_rows, start, start + HOUR);
        let want = expected_decisions(&rows, "total")
            .remove("")
            .unwrap_or_else(no_decisions);
        assert_eq!(decision_fields(p), want, "decisions of hour {}", p["start"]);
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
            "savings",
            "violations",
            "avgLatency",
            "p95Latency",
            "anomalies"
        ]
    );
    let mut by: BTreeMap<(String, String), Sums> = BTreeMap::new();
    // (violations, avgLatency, p95Latency) as the CSV writes them.
    let mut facts: BTreeMap<(String, String), (String, String, String)> = BTreeMap::new();
    let csv_of = |want: &Value| {
        let text = |v: &Value| {
            if v.is_null() {
                String::new()
            } else {
                v.to_string()
            }
        };
        (
            want["violations"]["count"].to_string(),
            text(&want["avgLatency"]),
            text(&want["p95Latency"]),
        )
    };
    for row in rd.records() {
        let row = row.unwrap();
        facts.insert(
            (row[0].to_owned(), row[1].to_owned()),
            (row[8].to_owned(), row[9].to_owned(), row[10].to_owned()),
        );
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
        let decisions = expected_decisions(&month_rows, dim);
        for (k, v) in with_keys(expected(&recs, dim, MONTH_FROM, to), &decisions) {
            assert_eq!(
                by.remove(&(dim.to_owned(), k.clone())),
                Some(v),
                "csv {dim} {k}"
            );
            let want = decisions.get(&k).cloned().unwrap_or_else(no_decisions);
            assert_eq!(
                facts.get(&(dim.to_owned(), k.clone())),
                Some(&csv_of(&want)),
                "csv decisions {dim} {k}"
            );
        }
    }
    assert_eq!(
        by.remove(&("total".to_owned(), String::new())),
        Some(expected(&recs, "total", MONTH_FROM, to)[""].clone())
    );
    assert_eq!(
        facts.get(&("total".to_owned(), String::new())),
        Some(&csv_of(&expected_decisions(&month_rows, "total")[""]))
    );
    assert!(
        facts.values().filter(|f| !f.1.is_empty()).count() > 10,
        "latencies reach the CSV: {facts:?}"
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
