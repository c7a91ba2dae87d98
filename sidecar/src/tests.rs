//! Router tests without a socket (`oneshot`): auth, validation, versioning, clients, sync
//! idempotency, the lease bound, operations routes and the OpenAPI document.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::{app, AppState, ManualClock, SqliteStore, Tokens};

const ALICE: &str = "alice-admin-token-0001";
const BOB: &str = "bob-admin-token-000002";
const SYNC: &str = "filter-sync-secret-0003";
const T0: i64 = 1_764_000_000_000;

struct Harness {
    app: Router,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_dir(dir.path()).unwrap();
    let mut tokens = Tokens::default();
    tokens.add_admin_spec(&format!("alice={ALICE}")).unwrap();
    tokens.add_admin_spec(&format!("bob={BOB}")).unwrap();
    tokens.add_sync_secret(SYNC).unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let state = AppState::new(Arc::new(store), tokens)
        .unwrap()
        .with_clock(clock.clone());
    Harness {
        app: app(state),
        clock,
        _dir: dir,
    }
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
}

impl Harness {
    async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
            text,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => Body::from(serde_json::to_vec(&v).unwrap()),
            None => Body::empty(),
        };
        self.send(
            b.header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .unwrap(),
        )
        .await
    }

    async fn put_policy(&self, token: &str, doc: &Value) -> Resp {
        self.call(Method::PUT, "/v1/policy", Some(token), Some(doc.clone()))
            .await
    }

    async fn sync(&self, body: Value) -> Resp {
        self.call(Method::POST, "/v1/sync", Some(SYNC), Some(body))
            .await
    }

    async fn analytics(&self, query: &str) -> Resp {
        self.call(
            Method::GET,
            &format!("/v1/analytics?{query}"),
            Some(ALICE),
            None,
        )
        .await
    }

    async fn spent(&self, counter: &str) -> String {
        let r = self
            .call(Method::GET, "/v1/budgets", Some(ALICE), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.body["counters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["counter"] == counter)
            .map_or("0".into(), |c| c["spent"].as_str().unwrap().to_string())
    }
}

fn policy() -> Value {
    json!({
        "orgId": "acme-corp",
        "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "100000000", "dailyBudget": "5000000" },
        "endpoints": [ { "host": "api.openai.com", "category": "llm", "pricing": { "perRequest": "2000" } } ],
        "projects": [ { "id": "sales-ai", "name": "Sales AI",
                        "policy": { "monthlyBudget": "15000000", "dailyBudget": "500000" } } ],
        "clients": []
    })
}

const ORG_DAY: &str = "org.daily/2026-11-24";
const ORG_MONTH: &str = "org.monthly/2026-11";
const PROJ_MONTH: &str = "project.monthly/sales-ai/2026-11";

// === auth ===

#[tokio::test]
async fn no_token_or_a_bad_one_is_401() {
    let h = harness();
    for (path, method) in [
        ("/v1/policy", Method::GET),
        ("/v1/budgets", Method::GET),
        ("/v1/sync", Method::POST),
    ] {
        let r = h.call(method.clone(), path, None, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(r.body["error"]["code"], "UNAUTHORIZED");
        assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
        let r = h
            .call(method, path, Some("not-a-token-at-all-xxxx"), None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = h
        .send(
            Request::get("/v1/policy")
                .header(header::AUTHORIZATION, format!("Basic {ALICE}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "only bearer tokens count"
    );
}

#[tokio::test]
async fn roles_are_kept_apart_with_403() {
    let h = harness();
    let r = h.call(Method::GET, "/v1/policy", Some(SYNC), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"]["code"], "FORBIDDEN");
    let r = h.put_policy(SYNC, &policy()).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "the filter cannot change the policy"
    );
    let r = h
        .call(
            Method::POST,
            "/v1/sync",
            Some(ALICE),
            Some(json!({ "instanceId": "x", "seq": 1 })),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "an admin cannot forge usage"
    );
}

// === policy ===

#[tokio::test]
async fn a_bad_policy_is_400_with_every_field_path() {
    let h = harness();
    let mut doc = policy();
    doc["projects"][0]["policy"]["dailyBudget"] = json!("12x");
    doc["globalPolicy"]["monthlyBudgett"] = json!("1");
    let r = h.put_policy(ALICE, &doc).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "INVALID_POLICY");
    let details: Vec<&str> = r.body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("projects[0].policy.dailyBudget: ")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("monthlyBudgett")),
        "unknown field named: {details:?}"
    );
    let r = h.call(Method::GET, "/v1/policy", Some(ALICE), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "nothing stored");

    let r = h
        .send(
            Request::put("/v1/policy")
                .header(header::AUTHORIZATION, format!("Bearer {ALICE}"))
                .body(Body::from("{nope"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["code"], "INVALID_POLICY");
}

#[tokio::test]
async fn every_change_is_a_version_with_who_and_when() {
    let h = harness();
    let r = h.put_policy(ALICE, &policy()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["author"], "alice");
    assert_eq!(r.body["createdAt"], "2025-11-24T16:00:00.000Z");

    let r = h.put_policy(BOB, &policy()).await;
    assert_eq!(
        (r.body["version"].as_i64(), r.body["unchanged"].as_bool()),
        (Some(1), Some(true)),
        "same document: no new version"
    );

    h.clock.advance_ms(60_000);
    let mut doc = policy();
    doc["globalPolicy"]["dailyBudget"] = json!("6000000");
    let r = h.put_policy(BOB, &doc).await;
    assert_eq!(
        (r.body["version"].as_i64(), r.body["author"].as_str()),
        (Some(2), Some("bob"))
    );

    let r = h.call(Method::GET, "/v1/policy", Some(ALICE), None).await;
    assert_eq!(r.body["globalPolicy"]["dailyBudget"], "6000000");
    assert_eq!(r.headers["x-pag0-policy-version"], "2");
    assert_eq!(r.headers[header::ETAG], "\"2\"");
    assert_eq!(r.headers["x-pag0-policy-author"], "bob");

    let r = h
        .call(Method::GET, "/v1/policy/versions", Some(ALICE), None)
        .await;
    assert_eq!(
        r.body["versions"],
        json!([
            { "version": 2, "author": "bob", "createdAt": "2025-11-24T16:01:00.000Z" },
            { "version": 1, "author": "alice", "createdAt": "2025-11-24T16:00:00.000Z" }
        ])
    );
    let r = h
        .call(Method::GET, "/v1/policy/versions/1", Some(ALICE), None)
        .await;
    assert_eq!(r.body["globalPolicy"]["dailyBudget"], "5000000");

    // A write guarded by a stale version is refused.
    let r = h
        .send(
            Request::put("/v1/policy")
                .header(header::AUTHORIZATION, format!("Bearer {ALICE}"))
                .header(header::IF_MATCH, "\"1\"")
                .body(Body::from(serde_json::to_vec(&policy()).unwrap()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["error"]["code"], "VERSION_CONFLICT");
}

// === projects and clients ===

#[tokio::test]
async fn projects_are_edited_one_at_a_time_and_revalidated() {
    let h = harness();
    let r = h
        .call(
            Method::POST,
            "/v1/projects",
            Some(ALICE),
            Some(json!({ "id": "x", "name": "X" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "no policy yet");
    h.put_policy(ALICE, &policy()).await;

    let p = json!({ "id": "support", "name": "Support", "policy": { "monthlyBudget": "1000000" } });
    let r = h
        .call(Method::POST, "/v1/projects", Some(BOB), Some(p.clone()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.headers["x-pag0-policy-version"], "2");
    let r = h
        .call(Method::POST, "/v1/projects", Some(BOB), Some(p))
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("ALREADY_EXISTS"))
    );

    // A project budget above the org's is refused; the stored policy is unchanged.
    let r = h
        .call(
            Method::PATCH,
            "/v1/projects/support",
            Some(BOB),
            Some(json!({ "policy": { "monthlyBudget": "999000000" } })),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "INVALID_POLICY");
    assert!(
        r.body["error"]["details"][0]
            .as_str()
            .unwrap()
            .starts_with("projects[1].policy.monthlyBudget"),
        "{}",
        r.text
    );
    let r = h
        .call(Method::GET, "/v1/policy/versions", Some(ALICE), None)
        .await;
    assert_eq!(r.body["versions"].as_array().unwrap().len(), 2);

    let r = h
        .call(
            Method::PATCH,
            "/v1/projects/support",
            Some(BOB),
            Some(json!({ "name": "Customer Support" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["name"], "Customer Support");
    assert_eq!(
        r.body["policy"]["monthlyBudget"], "1000000",
        "merge patch keeps the rest"
    );
    let r = h
        .call(
            Method::PATCH,
            "/v1/projects/support",
            Some(BOB),
            Some(json!({ "id": "other" })),
        )
        .await;
    assert_eq!(r.body["error"]["code"], "ID_IMMUTABLE");

    let r = h.call(Method::GET, "/v1/projects", Some(ALICE), None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    let r = h
        .call(Method::DELETE, "/v1/projects/support", Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .call(Method::GET, "/v1/projects/support", Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h
        .call(Method::DELETE, "/v1/projects/support", Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_client_key_is_returned_once_and_only_its_hash_is_stored() {
    let h = harness();
    h.put_policy(ALICE, &policy()).await;
    let r = h
        .call(
            Method::POST,
            "/v1/clients",
            Some(ALICE),
            Some(json!({ "id": "sales-agent", "projectId": "sales-ai",
            "tags": { "costCenter": "CC-1001" } })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let key = r.body["apiKey"].as_str().unwrap().to_string();
    assert!(key.starts_with("pag0_") && key.len() > 40);
    let hash = pag0_policy::validate::api_key_sha256_hex(&key);
    assert_eq!(r.body["client"]["apiKeySha256"], hash);

    // Nowhere else: not in GET of the client, not in the stored document.
    let r = h
        .call(Method::GET, "/v1/clients/sales-agent", Some(ALICE), None)
        .await;
    assert_eq!(r.body["apiKeySha256"], hash);
    assert!(!r.text.contains(&key));
    let r = h.call(Method::GET, "/v1/policy", Some(ALICE), None).await;
    assert!(!r.text.contains(&key));

    // The stored document identifies the client from the key (pag0-policy's own hashing).
    let compiled = pag0_policy::CompiledPolicy::compile(r.text.as_bytes()).unwrap();
    fn head(k: &str) -> pag0_policy::RequestHead<'_> {
        pag0_policy::RequestHead {
            api_key: Some(k),
            method: "POST",
            authority: "api.openai.com",
            path: "/v1/chat/completions",
            requires_approval: false,
        }
    }
    match compiled.check_head(
        &head(&key),
        chrono::DateTime::from_timestamp_millis(T0).unwrap(),
    ) {
        pag0_policy::HeadOutcome::Continue(_) => {}
        pag0_policy::HeadOutcome::Deny(d) => panic!("the new key is refused: {d:?}"),
    }
    match compiled.check_head(
        &head("pag0_wrong"),
        chrono::DateTime::from_timestamp_millis(T0).unwrap(),
    ) {
        pag0_policy::HeadOutcome::Deny(d) => {
            assert_eq!(d.code, pag0_policy::DenyCode::UnknownApiKey)
        }
        pag0_policy::HeadOutcome::Continue(_) => panic!("a wrong key passes"),
    }

    // Rotation: a new key, the old hash gone.
    let r = h
        .call(
            Method::POST,
            "/v1/clients/sales-agent/rotate-key",
            Some(ALICE),
            None,
        )
        .await;
    let key2 = r.body["apiKey"].as_str().unwrap();
    assert_ne!(key2, key);
    assert_eq!(
        r.body["client"]["apiKeySha256"],
        pag0_policy::validate::api_key_sha256_hex(key2)
    );
}

#[tokio::test]
async fn client_requests_that_cannot_stand_are_refused() {
    let h = harness();
    h.put_policy(ALICE, &policy()).await;
    let r = h
        .call(
            Method::POST,
            "/v1/clients",
            Some(ALICE),
            Some(json!({ "id": "c", "projectId": "sales-ai", "apiKeySha256": "00" })),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("KEY_GENERATED_BY_SIDECAR"))
    );
    let r = h
        .call(
            Method::POST,
            "/v1/clients",
            Some(ALICE),
            Some(json!({ "id": "c", "projectId": "nope" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "INVALID_POLICY");
    assert!(
        r.body["error"]["details"][0]
            .as_str()
            .unwrap()
            .starts_with("clients[0].projectId"),
        "{}",
        r.text
    );
    let r = h
        .call(
            Method::POST,
            "/v1/clients",
            Some(ALICE),
            Some(json!({ "id": "c", "projectId": "sales-ai" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = h
        .call(
            Method::PATCH,
            "/v1/clients/c",
            Some(ALICE),
            Some(json!({ "apiKeySha256": "ab" })),
        )
        .await;
    assert_eq!(r.body["error"]["code"], "KEY_IMMUTABLE");
    // The project still has a client: deleting it would leave a dangling reference.
    let r = h
        .call(Method::DELETE, "/v1/projects/sales-ai", Some(ALICE), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = h
        .call(
            Method::POST,
            "/v1/clients",
            Some(ALICE),
            Some(json!("not an object")),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = h
        .send(
            Request::post("/v1/clients")
                .header(header::AUTHORIZATION, format!("Bearer {ALICE}"))
                .body(Body::from("{"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.body["error"]["code"], "BAD_JSON");
}

// === sync ===

fn usage(amount: &str, counters: &[&str]) -> Value {
    json!({ "amount": amount, "counters": counters, "projectId": "sales-ai", "clientId": "sales-agent",
            "host": "api.openai.com", "at": T0 })
}

#[tokio::test]
async fn a_usage_batch_is_counted_once() {
    let h = harness();
    h.put_policy(ALICE, &policy()).await;
    let batch = json!({ "instanceId": "envoy-a", "seq": 1, "policyVersion": 1,
                        "usage": [usage("1000", &[ORG_MONTH, PROJ_MONTH]), usage("250", &[ORG_MONTH])] });
    let r = h.sync(batch.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.body["ack"].as_u64(), r.body["duplicate"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(h.spent(ORG_MONTH).await, "1250");
    assert_eq!(h.spent(PROJ_MONTH).await, "1000");

    let r = h.sync(batch).await;
    assert_eq!(
        (
            r.status,
            r.body["ack"].as_u64(),
            r.body["duplicate"].as_bool()
        ),
        (StatusCode::OK, Some(1), Some(true))
    );
    assert_eq!(
        h.spent(ORG_MONTH).await,
        "1250",
        "the retried batch is not counted again"
    );

    let r = h
        .sync(json!({ "instanceId": "envoy-a", "seq": 1, "usage": [usage("9", &[ORG_MONTH])] }))
        .await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("SEQ_REUSED"))
    );
    assert_eq!(h.spent(ORG_MONTH).await, "1250");

    let r = h.call(Method::GET, "/metrics", None, None).await;
    assert!(
        r.text
            .contains("pag0_sidecar_sync_batches_total{outcome=\"applied\"} 1"),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains("pag0_sidecar_sync_batches_total{outcome=\"duplicate\"} 1"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("pag0_sidecar_usage_micros_total 1250"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn two_instances_cannot_lease_more_than_the_room() {
    let h = harness();
    h.put_policy(ALICE, &policy()).await; // org daily budget: 5_000_000
                                          // Someone already spent 1_000_000 today.
    h.sync(json!({ "instanceId": "envoy-c", "seq": 1, "usage": [usage("1000000", &[ORG_DAY])] }))
        .await;

    let ask = |inst: &str, want: &str| json!({ "instanceId": inst, "seq": 1, "leases": [ { "counter": ORG_DAY, "want": want } ] });
    let a = h.sync(ask("envoy-a", "3000000")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let b = h.sync(ask("envoy-b", "3000000")).await;
    let ga: u64 = a.body["leases"][ORG_DAY]["granted"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let gb: u64 = b.body["leases"][ORG_DAY]["granted"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!((ga, gb), (3_000_000, 1_000_000));
    assert_eq!(b.body["leases"][ORG_DAY]["limit"], "5000000");
    assert_eq!(b.body["leases"][ORG_DAY]["spent"], "1000000");
    assert!(
        1_000_000 + ga + gb <= 5_000_000,
        "spent + slices never above the limit"
    );

    let r = h.call(Method::GET, "/v1/budgets", Some(ALICE), None).await;
    let c = r.body["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["counter"] == ORG_DAY)
        .unwrap()
        .clone();
    assert_eq!(
        (
            c["limit"].as_str(),
            c["spent"].as_str(),
            c["leased"].as_str(),
            c["unallocated"].as_str()
        ),
        (Some("5000000"), Some("1000000"), Some("4000000"), Some("0"))
    );
    assert_eq!(c["leases"].as_array().unwrap().len(), 2);

    // A lease with no budget behind it is not needed; the default want is 1/16 of the limit.
    let r = h
        .sync(json!({ "instanceId": "envoy-d", "seq": 1, "leases": [
        { "counter": "project.daily/nope/2026-11-24" }, { "counter": PROJ_MONTH } ] }))
        .await;
    assert_eq!(
        r.body["unlimited"],
        json!(["project.daily/nope/2026-11-24"])
    );
    assert_eq!(r.body["leases"][PROJ_MONTH]["granted"], "937500");

    // A's lease expires if A stops syncing; B can then have the room.
    h.clock.advance_ms(30_000);
    let b = h.sync(json!({ "instanceId": "envoy-b", "seq": 2, "leases": [ { "counter": ORG_DAY, "want": "4000000" } ] })).await;
    assert_eq!(b.body["leases"][ORG_DAY]["granted"], "4000000");
}

#[tokio::test]
async fn sync_carries_the_policy_only_when_newer() {
    let h = harness();
    let r = h.sync(json!({ "instanceId": "envoy-a", "seq": 1 })).await;
    assert_eq!(
        (r.body["policyVersion"].as_i64(), r.body.get("policy")),
        (Some(0), None)
    );
    h.put_policy(ALICE, &policy()).await;
    let r = h
        .sync(json!({ "instanceId": "envoy-a", "seq": 2, "policyVersion": 0 }))
        .await;
    assert_eq!(r.body["policyVersion"], 1);
    assert_eq!(r.body["policy"]["orgId"], "acme-corp");
    let r = h
        .sync(json!({ "instanceId": "envoy-a", "seq": 3, "policyVersion": 1 }))
        .await;
    assert_eq!(r.body["policyVersion"], 1);
    assert!(r.body.get("policy").is_none());
    assert_eq!(r.body["leaseTtlMs"], 30_000);
}

#[tokio::test]
async fn malformed_syncs_are_400_with_paths() {
    let h = harness();
    let r = h
        .sync(json!({ "instanceId": "bad id!", "seq": 0, "usage": [ { "amount": "5", "counters": ["nope"] } ],
                      "leases": [ { "counter": "org.daily" } ] }))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"]["code"], "BAD_SYNC");
    let details = r.body["error"]["details"].to_string();
    for needle in [
        "instanceId:",
        "seq:",
        "usage[0].counters[0]:",
        "leases[0].counter:",
    ] {
        assert!(details.contains(needle), "{needle} in {details}");
    }
    let r = h
        .sync(json!({ "instanceId": "a", "seq": 1, "usage": [ { "amount": "1.5" } ] }))
        .await;
    assert_eq!(r.body["error"]["code"], "BAD_JSON");
    // `savings` is money like `amount`: a decimal string or integer, storable, else refused.
    for bad in [json!("1.5"), json!("-3"), json!(2.5), json!("12x")] {
        let r = h.sync(json!({ "instanceId": "a", "seq": 1, "usage": [ { "amount": "0", "cacheHit": true, "savings": bad } ] })).await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("BAD_JSON")),
            "{bad}"
        );
    }
    let r = h.sync(json!({ "instanceId": "a", "seq": 1, "usage": [ { "amount": "0", "cacheHit": "yes" } ] })).await;
    assert_eq!(r.body["error"]["code"], "BAD_JSON", "cacheHit is a boolean");
    let r = h
        .sync(json!({ "instanceId": "a", "seq": 1, "usage": [ { "amount": "0", "cacheHit": true, "savings": "9223372036854775808" } ] }))
        .await;
    assert_eq!(r.body["error"]["code"], "BAD_SYNC");
    assert!(
        r.body["error"]["details"]
            .to_string()
            .contains("usage[0].savings: above"),
        "{}",
        r.text
    );
}

#[test]
fn a_hit_batch_keeps_its_pre_upgrade_digest_as_a_fallback() {
    use crate::routes::sync::{digest, legacy_digest, UsageIn};
    let plain = usage("1000", &[ORG_MONTH]);
    let mut hit = usage("0", &[]);
    let old_view: Vec<UsageIn> =
        serde_json::from_value(json!([plain.clone(), hit.clone()])).unwrap();
    hit["cacheHit"] = json!(true);
    hit["savings"] = json!("2000");
    let new_view: Vec<UsageIn> = serde_json::from_value(json!([plain.clone(), hit])).unwrap();
    // What an older sidecar (which ignored the two fields) stored for this batch.
    let stored_then = digest(&old_view).unwrap();
    assert_ne!(
        digest(&new_view).unwrap(),
        stored_then,
        "today's digest covers cacheHit and savings"
    );
    assert_eq!(legacy_digest(&new_view).unwrap(), Some(stored_then));
    let only_plain: Vec<UsageIn> = serde_json::from_value(json!([plain])).unwrap();
    assert_eq!(
        legacy_digest(&only_plain).unwrap(),
        None,
        "no cache fields: one digest, as before"
    );
}

// === analytics ===

fn analytics_policy() -> Value {
    let hash = |c: char| c.to_string().repeat(64);
    json!({
        "orgId": "acme-corp",
        // UTC+14: T0 (2025-11-24T16:00Z) is 06:00 on 2025-11-25 there.
        "timezone": "Pacific/Kiritimati",
        "globalPolicy": { "monthlyBudget": "100000000" },
        "endpoints": [ { "host": "api.openai.com", "category": "llm", "pricing": { "perRequest": "1000" } },
                       { "host": "api.deepl.com", "category": "translation", "pricing": { "perRequest": "250" } } ],
        "projects": [ { "id": "sales-ai", "name": "Sales AI", "tags": { "costCenter": "CC-SALES" } },
                      { "id": "support", "name": "Support" } ],
        "clients": [
            { "id": "sales-agent", "projectId": "sales-ai", "apiKeySha256": hash('a'), "tags": { "costCenter": "CC-1001" } },
            { "id": "sales-bot", "projectId": "sales-ai", "apiKeySha256": hash('b') },
            { "id": "support-bot", "projectId": "support", "apiKeySha256": hash('c') } ]
    })
}

fn record(amount: &str, project: &str, client: &str, host: &str, at: i64) -> Value {
    json!({ "amount": amount, "counters": if amount == "0" { json!([]) } else { json!([ORG_MONTH]) },
            "projectId": project, "clientId": client, "host": host, "at": at })
}

fn cache_hit(savings: &str, project: &str, client: &str, host: &str, at: i64) -> Value {
    let mut r = record("0", project, client, host, at);
    r["cacheHit"] = json!(true);
    r["savings"] = json!(savings);
    r
}

fn group<'a>(body: &'a Value, key: &str) -> &'a Value {
    body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key)
        .unwrap_or_else(|| panic!("no group {key}: {body}"))
}

/// (totalCost, totalRequests, cacheHits, savings, cacheHitRate) of one group or the total.
fn sums(g: &Value) -> (&str, u64, u64, &str, Option<f64>) {
    (
        g["totalCost"].as_str().unwrap(),
        g["totalRequests"].as_u64().unwrap(),
        g["cacheHits"].as_u64().unwrap(),
        g["savings"].as_str().unwrap(),
        g["cacheHitRate"].as_f64(),
    )
}

#[tokio::test]
async fn analytics_sum_cost_hits_and_savings_per_group() {
    let h = harness();
    let r = h.put_policy(ALICE, &analytics_policy()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let hour = 3_600_000;
    let batch = json!({ "instanceId": "envoy-a", "seq": 1, "usage": [
        record("1000", "sales-ai", "sales-agent", "api.openai.com", T0),
        cache_hit("1000", "sales-ai", "sales-agent", "api.openai.com", T0 + 1),
        cache_hit("250", "sales-ai", "sales-bot", "api.deepl.com", T0 + 2),
        record("300", "support", "support-bot", "api.openai.com", T0 + 3),
        // 2025-11-24 23:00 in Kiritimati: yesterday there, though the same UTC day as T0.
        record("5000", "sales-ai", "sales-agent", "api.openai.com", T0 - 7 * hour),
        // Last month.
        record("777", "sales-ai", "sales-agent", "api.openai.com", T0 - 30 * 24 * hour),
    ] });
    let r = h.sync(batch.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        h.sync(batch).await.body["duplicate"].as_bool().unwrap(),
        "a resent batch is not counted again"
    );

    let month = h.analytics("period=month&groupBy=project").await;
    assert_eq!(month.status, StatusCode::OK, "{}", month.text);
    let b = &month.body;
    assert_eq!(
        (
            b["period"].as_str(),
            b["periodKey"].as_str(),
            b["timezone"].as_str(),
            b["groupBy"].as_str()
        ),
        (
            Some("month"),
            Some("2025-11"),
            Some("Pacific/Kiritimati"),
            Some("project")
        )
    );
    assert_eq!(
        (b["from"].as_str(), b["to"].as_str()),
        (
            Some("2025-10-31T10:00:00.000Z"),
            Some("2025-11-30T10:00:00.000Z")
        )
    );
    assert_eq!(b["groups"][0]["key"], "sales-ai", "most expensive first");
    assert_eq!(
        sums(group(b, "sales-ai")),
        ("6000", 4, 2, "1250", Some(0.5))
    );
    assert_eq!(sums(group(b, "support")), ("300", 1, 0, "0", Some(0.0)));
    assert_eq!(sums(&b["total"]), ("6300", 5, 2, "1250", Some(0.4)));
    for absent in [
        "avgLatency",
        "budgetUtilization",
        "violations",
        "anomalies",
        "recommendations",
    ] {
        assert!(
            !month.text.contains(absent),
            "{absent} is not computed, so not reported"
        );
    }

    let day = h.analytics("period=day&groupBy=project").await;
    assert_eq!(
        (day.body["periodKey"].as_str(), day.body["from"].as_str()),
        (Some("2025-11-25"), Some("2025-11-24T10:00:00.000Z"))
    );
    assert_eq!(
        sums(group(&day.body, "sales-ai")),
        ("1000", 3, 2, "1250", Some(2.0 / 3.0))
    );

    let cc = h.analytics("period=month&groupBy=costCenter").await;
    assert_eq!(cc.status, StatusCode::OK, "{}", cc.text);
    assert_eq!(
        sums(group(&cc.body, "CC-1001")),
        ("6000", 3, 1, "1000", Some(1.0 / 3.0)),
        "the client's tag"
    );
    assert_eq!(
        sums(group(&cc.body, "CC-SALES")),
        ("0", 1, 1, "250", Some(1.0)),
        "untagged client: its project's tag"
    );
    assert_eq!(
        sums(group(&cc.body, "unassigned")),
        ("300", 1, 0, "0", Some(0.0)),
        "no tag anywhere"
    );
    assert_eq!(cc.body["groups"].as_array().unwrap().len(), 3);

    let ep = h.analytics("groupBy=endpoint").await;
    assert_eq!(ep.body["period"], "month", "month by default");
    assert_eq!(
        sums(group(&ep.body, "api.deepl.com")),
        ("0", 1, 1, "250", Some(1.0))
    );
    assert_eq!(sums(group(&ep.body, "api.openai.com")).0, "6300");

    // A day later (there) the day is empty: no groups, no rate.
    h.clock.advance_ms(24 * hour);
    let next = h.analytics("period=day").await;
    assert_eq!(
        (
            next.body["groupBy"].as_str(),
            next.body["groups"].as_array().map(Vec::len)
        ),
        (Some("project"), Some(0))
    );
    assert_eq!(sums(&next.body["total"]), ("0", 0, 0, "0", None));
}

#[tokio::test]
async fn analytics_is_for_admins_and_refuses_what_it_cannot_group_by() {
    let h = harness();
    let r = h
        .call(
            Method::GET,
            "/v1/analytics?period=month&groupBy=project",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = h
        .call(
            Method::GET,
            "/v1/analytics?period=month&groupBy=project",
            Some(SYNC),
            None,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "the filter's secret reads no analytics"
    );
    let r = h
        .call(Method::GET, "/v1/analytics", Some(ALICE), None)
        .await;
    assert_eq!(
        (r.status, r.body["total"]["totalRequests"].as_u64()),
        (StatusCode::OK, Some(0)),
        "no policy, no usage: zeros"
    );
    assert_eq!(r.body["timezone"], "UTC");
    for (q, needle) in [
        ("period=month&groupBy=team", "groupBy: \"team\""),
        ("period=month&groupBy=project,costCenter", "groupBy:"),
        ("period=year&groupBy=project", "period: \"year\""),
    ] {
        let r = h
            .call(
                Method::GET,
                &format!("/v1/analytics?{q}"),
                Some(ALICE),
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("BAD_QUERY")),
            "{q}"
        );
        let details = r.body["error"]["details"].as_array().unwrap();
        assert!(
            details
                .iter()
                .any(|d| d.as_str().unwrap().starts_with(needle)),
            "{q}: {}",
            r.text
        );
    }
}

// === operations ===

#[tokio::test]
async fn health_readiness_and_metrics() {
    let h = harness();
    let r = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let r = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (r.status, r.body["store"].as_str()),
        (StatusCode::OK, Some("sqlite"))
    );
    let r = h.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(
        r.text.contains(
            "pag0_sidecar_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"} 1"
        ),
        "{}",
        r.text
    );

    // From another host: refused (SPEC §7: loopback).
    let mut req = Request::get("/metrics").body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 7], 5000))));
    assert_eq!(h.send(req).await.status, StatusCode::FORBIDDEN);
    let mut req = Request::get("/healthz").body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 5000))));
    assert_eq!(h.send(req).await.status, StatusCode::OK);

    let r = h.call(Method::GET, "/v1/nope", None, None).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let h = harness();
    let r = h.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["openapi"], "3.1.0");
    let paths = r.body["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    let mut listed: Vec<(String, String)> = crate::openapi::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    documented.sort();
    listed.sort();
    assert_eq!(
        documented, listed,
        "ROUTES and the document name the same operations"
    );

    // And the router serves each of them (not the JSON fallback 404, not 405).
    for (method, path) in crate::openapi::ROUTES {
        let concrete = path.replace("{id}", "x").replace("{version}", "1");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = h.call(m, &concrete, Some(ALICE), None).await;
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !r.text.contains("no such route"),
            "{method} {path} is not routed"
        );
    }
    // Every documented admin operation declares its auth failures.
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            if !op["security"].as_array().unwrap().is_empty() {
                assert!(op["responses"].get("401").is_some(), "{method} {path}");
            }
        }
    }
}

// === failures ===

/// A store whose backend is down, with an error text that must not reach clients.
struct DownStore;

fn down() -> crate::store::StoreError {
    crate::store::StoreError::Backend(
        "connection to db-internal.corp:5432 refused (table budget_counters)".into(),
    )
}

#[async_trait::async_trait]
impl crate::Store for DownStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }
    async fn ping(&self) -> Result<(), crate::store::StoreError> {
        Err(down())
    }
    async fn latest_policy_version(&self) -> Result<i64, crate::store::StoreError> {
        Err(down())
    }
    async fn latest_policy(
        &self,
    ) -> Result<Option<crate::store::PolicyVersion>, crate::store::StoreError> {
        Err(down())
    }
    async fn policy_version(
        &self,
        _: i64,
    ) -> Result<Option<crate::store::PolicyVersion>, crate::store::StoreError> {
        Err(down())
    }
    async fn policy_history(
        &self,
        _: u32,
    ) -> Result<Vec<crate::store::PolicyMeta>, crate::store::StoreError> {
        Err(down())
    }
    async fn put_policy(
        &self,
        _: crate::store::NewPolicy,
    ) -> Result<crate::store::PolicyMeta, crate::store::StoreError> {
        Err(down())
    }
    async fn sync(
        &self,
        _: crate::store::SyncWrite,
    ) -> Result<crate::store::SyncOutcome, crate::store::StoreError> {
        Err(down())
    }
    async fn counters(
        &self,
        _: i64,
    ) -> Result<Vec<crate::store::CounterState>, crate::store::StoreError> {
        Err(down())
    }
    async fn usage_totals(
        &self,
        _: i64,
        _: i64,
    ) -> Result<Vec<crate::store::UsageTotals>, crate::store::StoreError> {
        Err(down())
    }
    async fn create_approval(
        &self,
        _: crate::store::Approval,
    ) -> Result<(), crate::store::StoreError> {
        Err(down())
    }
    async fn approval(
        &self,
        _: String,
    ) -> Result<Option<crate::store::Approval>, crate::store::StoreError> {
        Err(down())
    }
    async fn approvals(
        &self,
        _: Option<crate::store::ApprovalStatus>,
        _: u32,
    ) -> Result<Vec<crate::store::Approval>, crate::store::StoreError> {
        Err(down())
    }
    async fn decide_approval(
        &self,
        _: crate::store::ApprovalDecision,
    ) -> Result<Option<crate::store::Approval>, crate::store::StoreError> {
        Err(down())
    }
    async fn consume_approval(
        &self,
        _: crate::store::ConsumeAsk,
    ) -> Result<crate::store::ConsumeOutcome, crate::store::StoreError> {
        Err(down())
    }
    async fn pending_approvals(&self, _: i64) -> Result<u64, crate::store::StoreError> {
        Err(down())
    }
}

#[tokio::test]
async fn store_failures_are_503_without_internals() {
    let mut tokens = Tokens::default();
    tokens.add_admin_spec(&format!("alice={ALICE}")).unwrap();
    tokens.add_sync_secret(SYNC).unwrap();
    let h = Harness {
        app: app(AppState::new(Arc::new(DownStore), tokens).unwrap()),
        clock: Arc::new(ManualClock::new(T0)),
        _dir: tempfile::tempdir().unwrap(),
    };
    let r = h.put_policy(ALICE, &policy()).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("STORE_UNAVAILABLE"))
    );
    let r = h
        .sync(json!({ "instanceId": "a", "seq": 1, "usage": [usage("5", &[ORG_MONTH])] }))
        .await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not acknowledged: the filter keeps the batch"
    );
    for r in [
        r,
        h.call(Method::GET, "/v1/budgets", Some(ALICE), None).await,
    ] {
        assert!(
            !r.text.contains("db-internal") && !r.text.contains("budget_counters"),
            "{}",
            r.text
        );
    }
    let r = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"))
    );
    let r = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "alive, just not ready");
}
