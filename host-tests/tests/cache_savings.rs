//! Issue 6 through the real .wasm: a cache hit's avoided cost counts for the requesting project
//! (`pag0.cache.project.<id>.*`) and cost centre (`pag0.cache.cost_center.<tag>.*`), under the
//! metric names Envoy would show, and a policy from the sidecar brings its own series.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pag0_host_tests::fixture::key_sha256;
use pag0_host_tests::{CallAnswer, Host, Request, Response};
use serde_json::{json, Value};

/// Price of one deepl call, so the savings of one hit.
const PRICE: i64 = 2000;

fn project(id: &str, cache: bool, tags: Value) -> Value {
    json!({ "id": id, "cache": { "enabled": cache, "defaultTTL": 60 }, "tags": tags })
}

fn client(key: &str, project: &str, tags: Value) -> Value {
    json!({ "id": key, "projectId": project, "apiKeySha256": key_sha256(key), "tags": tags })
}

/// No budgets: managed mode needs no leases to admit.
fn policy(projects: Vec<Value>, clients: Vec<Value>) -> Value {
    json!({
        "orgId": "acme", "timezone": "UTC",
        "endpoints": [{ "host": "api.deepl.com", "category": "translation",
                        "pricing": { "perRequest": PRICE.to_string() } }],
        "projects": projects,
        "clients": clients,
    })
}

fn first_policy() -> Value {
    policy(
        vec![
            project("sales.ai", true, json!({ "costCenter": "CC-1000" })),
            project("ops", true, json!({})),
            project("nocache", false, json!({ "costCenter": "CC-9" })),
        ],
        vec![
            client("s1", "sales.ai", json!({ "costCenter": "CC 42/x" })),
            client("s2", "sales.ai", json!({})),
            client("o1", "ops", json!({})),
            client("n1", "nocache", json!({ "costCenter": "CC-9" })),
        ],
    )
}

fn deepl(key: &str, q: &str) -> Request {
    Request::get("api.deepl.com", &format!("/v2/translate?q={q}")).api_key(key)
}

fn ok() -> Response {
    Response::json(200, r#"{"translations":[]}"#)
}

/// One call; whether the cache answered it.
fn hit(host: &mut Host, key: &str, q: &str) -> bool {
    let ex = host.run(&deepl(key, q), &ok());
    assert_eq!(ex.status(), Some(200), "{ex:?}\n{}", ex.log_text());
    ex.header("x-pag0-cache") == Some("hit")
}

/// `(hits, savings_micros)` of a series, once every VM's tick has added what it counted.
fn series(host: &mut Host, kind: &str, id: &str) -> (i64, i64) {
    host.tick_all();
    let p = format!("pag0.cache.{kind}.{id}");
    (
        host.metric(&format!("{p}.hits")),
        host.metric(&format!("{p}.savings_micros")),
    )
}

/// The per-project and per-cost-centre metric names the guest defined.
fn series_names(host: &Host) -> Vec<String> {
    host.metrics()
        .into_keys()
        .filter(|n| {
            n.starts_with("pag0.cache.project.") || n.starts_with("pag0.cache.cost_center.")
        })
        .collect()
}

fn names(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids
        .iter()
        .flat_map(|id| ["hits", "savings_micros"].map(|m| format!("pag0.cache.{id}.{m}")))
        .collect();
    v.sort();
    v
}

#[test]
fn standalone_hits_count_for_the_requesting_project_and_cost_centre() {
    let cfg = json!({ "policy": first_policy(), "maxBodyBytes": 4096 }).to_string();
    let mut host = Host::builder(cfg)
        .vms(2)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    // Defined at on_configure: one series per cache-enabled project and cost centre, each id
    // one stats segment; nothing for `nocache` or its CC-9.
    assert_eq!(
        series_names(&host),
        names(&[
            "cost_center.CC-1000",
            "cost_center.CC_42_x",
            "project.ops",
            "project.sales_ai",
        ])
    );

    assert!(!hit(&mut host, "s1", "a"));
    assert_eq!(
        series(&mut host, "project", "sales_ai"),
        (0, 0),
        "a miss saves nothing"
    );
    assert!(hit(&mut host, "s1", "a"));
    assert_eq!(series(&mut host, "project", "sales_ai"), (1, PRICE));
    assert_eq!(series(&mut host, "cost_center", "CC_42_x"), (1, PRICE));
    assert_eq!(series(&mut host, "cost_center", "CC-1000"), (0, 0));
    assert_eq!(series(&mut host, "project", "ops"), (0, 0));

    // s2 has no tag: its project's cost centre.
    assert!(hit(&mut host, "s2", "a"));
    assert_eq!(series(&mut host, "project", "sales_ai"), (2, 2 * PRICE));
    assert_eq!(series(&mut host, "cost_center", "CC-1000"), (1, PRICE));
    assert_eq!(series(&mut host, "cost_center", "CC_42_x"), (1, PRICE));

    // ops keeps its own pool; its hit counts for ops and no cost centre.
    assert!(!hit(&mut host, "o1", "a"));
    assert!(hit(&mut host, "o1", "a"));
    assert_eq!(series(&mut host, "project", "ops"), (1, PRICE));
    assert_eq!(series(&mut host, "project", "sales_ai"), (2, 2 * PRICE));
    assert_eq!(host.metric("pag0.cache.hits"), 3);
    assert_eq!(host.metric("pag0.cache.savings_micros"), 3 * PRICE);
    assert_eq!(
        series_names(&host).len(),
        8,
        "no series appeared per request"
    );
}

/// The sidecar's answer to every `POST /v1/sync`: the current `(version, policy)`.
fn sidecar(
    current: Arc<Mutex<(u64, Value)>>,
) -> impl FnMut(&pag0_host_tests::HttpCall) -> CallAnswer {
    move |call| {
        let req: Value = serde_json::from_slice(&call.body).unwrap_or(Value::Null);
        let (version, policy) = current
            .lock()
            .map(|c| c.clone())
            .unwrap_or((0, Value::Null));
        let mut answer = json!({ "ack": req["seq"], "duplicate": false, "policyVersion": version,
                                 "serverTimeMs": 0, "leaseTtlMs": 30000, "leases": {}, "unlimited": [] });
        if req["policyVersion"].as_u64() != Some(version) {
            answer["policy"] = policy;
        }
        CallAnswer::json(200, &answer.to_string())
    }
}

#[test]
fn managed_mode_defines_the_series_of_each_policy_the_sidecar_sends() {
    let cfg = json!({
        "sidecar": { "cluster": "pag0_sidecar", "authority": "pag0-sidecar", "syncIntervalMs": 1000,
                     "timeoutMs": 200, "failureMode": "closed" },
        "maxBodyBytes": 4096
    });
    let current = Arc::new(Mutex::new((1, first_policy())));
    let mut host = Host::builder(cfg.to_string())
        .vms(2)
        .cluster("pag0_sidecar")
        .responder(sidecar(current.clone()))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(series_names(&host), Vec::<String>::new(), "no policy yet");
    host.advance(Duration::from_secs(3));
    assert_eq!(
        series_names(&host),
        names(&[
            "cost_center.CC-1000",
            "cost_center.CC_42_x",
            "project.ops",
            "project.sales_ai",
        ]),
        "{}",
        host.log_text()
    );
    assert!(!hit(&mut host, "s2", "m"));
    assert!(hit(&mut host, "s2", "m"));
    assert_eq!(series(&mut host, "project", "sales_ai"), (1, PRICE));
    assert_eq!(series(&mut host, "cost_center", "CC-1000"), (1, PRICE));

    // Version 2: ops leaves, a new project with a new cost centre arrives; s2 moves to it.
    let second = policy(
        vec![
            project("sales.ai", true, json!({ "costCenter": "CC-1000" })),
            project("new", true, json!({ "costCenter": "CC-2" })),
        ],
        vec![
            client("s1", "sales.ai", json!({})),
            client("s2", "new", json!({})),
        ],
    );
    if let Ok(mut c) = current.lock() {
        *c = (2, second);
    }
    host.advance(Duration::from_secs(3));
    let all = series_names(&host);
    for n in names(&["project.new", "cost_center.CC-2"]) {
        assert!(all.contains(&n), "{n} defined for the new policy: {all:?}");
    }
    assert!(!hit(&mut host, "s2", "m"), "project new has its own pool");
    assert!(hit(&mut host, "s2", "m"), "{}", host.log_text());
    assert_eq!(series(&mut host, "project", "new"), (1, PRICE));
    assert_eq!(series(&mut host, "cost_center", "CC-2"), (1, PRICE));
    assert_eq!(
        series(&mut host, "project", "sales_ai"),
        (1, PRICE),
        "s2 is not in sales.ai now"
    );
    assert_eq!(series(&mut host, "cost_center", "CC-1000"), (1, PRICE));
    // s1 lost its own tag: its hits now count for its project's cost centre.
    assert!(!hit(&mut host, "s1", "n"));
    assert!(hit(&mut host, "s1", "n"));
    assert_eq!(series(&mut host, "cost_center", "CC-1000"), (2, 2 * PRICE));
    assert_eq!(series(&mut host, "cost_center", "CC_42_x"), (0, 0));
}
