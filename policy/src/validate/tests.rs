use serde_json::{json, Value};

use super::*;
use crate::fixtures::acme_policy;

/// The docs/policy.md example, completed (a real key hash).
pub(crate) fn spec_example() -> Value {
    json!({
      "orgId": "acme-corp",
      "timezone": "UTC",
      "globalPolicy": {
        "monthlyBudget": "100000000",
        "dailyBudget": "5000000",
        "maxPerRequest": "1000000",
        "requireApprovalAbove": "500000",
        "allowedCategories": ["translation", "llm", "search", "data-analysis"],
        "blockedEndpoints": ["suspicious-api.com", "untrusted-provider.xyz"],
        "complianceMode": "EU_AI_ACT",
        "auditLog": { "enabled": true, "retention": 90 }
      },
      "alerts": {
        "channels": ["email", "slack"],
        "recipients": ["cfo@acme.com"],
        "slackWebhookUrl": "http://127.0.0.1:1/hook",
        "triggers": { "budgetThreshold": 0.8, "anomalyDetection": true,
                      "policyViolation": true, "highCostRequest": "1000000" }
      },
      "endpoints": [
        { "host": "api.openai.com", "category": "llm",
          "pricing": { "models": { "gpt-4": { "inputPer1k": "30000", "outputPer1k": "60000" } },
                       "defaultModel": "gpt-4" } },
        { "host": "api.deepl.com", "category": "translation", "pricing": { "perRequest": "2000" } },
        { "host": "api.salesforce.com", "category": "data-analysis",
          "pricing": { "perRequest": 1000 }, "costHeader": "X-Request-Cost" }
      ],
      "projects": [
        { "id": "sales-ai", "name": "Sales AI",
          "policy": {
            "monthlyBudget": "15000000", "dailyBudget": "500000", "maxPerRequest": "200000",
            "allowedEndpoints": ["api.openai.com", "api.salesforce.com"],
            "approvalWorkflow": { "enabled": true, "approvers": ["sales-lead@acme.com"],
                                  "autoApproveBelow": "100000", "requireApprovalAbove": "100000",
                                  "expiresAfter": 86400 }
          },
          "cache": { "enabled": true, "sharedCache": true, "defaultTTL": 1800 } }
      ],
      "clients": [
        { "id": "sales-agent", "projectId": "sales-ai",
          "apiKeySha256": api_key_sha256_hex("sk-sales"),
          "additionalRestrictions": {
            "allowedEndpoints": ["api.openai.com", "api.salesforce.com"],
            "workingHours": { "timezone": "America/New_York", "start": "09:00", "end": "18:00",
                              "days": ["mon","tue","wed","thu","fri"] } },
          "tags": { "department": "Sales", "costCenter": "CC-1001", "environment": "production" } }
      ]
    })
}

fn errors(v: &Value) -> Vec<String> {
    match CompiledPolicy::from_value(v) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn has(errs: &[String], prefix: &str) -> bool {
    errs.iter().any(|e| e.starts_with(prefix))
}

fn set(v: &mut Value, pointer: &str, new: Value) {
    *v.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer}")) = new;
}

fn insert(v: &mut Value, pointer: &str, key: &str, new: Value) {
    v.pointer_mut(pointer)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .insert(key.into(), new);
}

#[test]
fn spec_example_and_acme_fixture_compile() {
    let p = CompiledPolicy::from_value(&spec_example()).unwrap();
    assert_eq!(p.org_id(), "acme-corp");
    assert_eq!(p.document().projects.len(), 1);
    assert_eq!(p.project_of_client("sales-agent"), Some("sales-ai"));
    let acme = CompiledPolicy::from_value(&acme_policy()).unwrap();
    assert_eq!(acme.clients.len(), 50);
    assert_eq!(acme.endpoints.len(), 40);
    assert_eq!(acme.projects.len(), 10);
    let bytes = serde_json::to_vec(&acme_policy()).unwrap();
    assert!(CompiledPolicy::compile(&bytes).is_ok());
}

#[test]
fn typed_document_round_trips() {
    let p = CompiledPolicy::from_value(&spec_example()).unwrap();
    let out = serde_json::to_value(p.document()).unwrap();
    // Money serializes as strings; the result compiles again to the same document.
    assert_eq!(
        out.pointer("/endpoints/2/pricing/perRequest"),
        Some(&json!("1000"))
    );
    assert_eq!(
        out.pointer("/projects/0/cache/defaultTTL"),
        Some(&json!(1800))
    );
    let again = CompiledPolicy::from_value(&out).unwrap();
    assert_eq!(again.document(), p.document());
}

#[test]
fn acme_document_round_trips_through_the_typed_model() {
    let p = CompiledPolicy::from_value(&acme_policy()).unwrap();
    let out = serde_json::to_value(p.document()).unwrap();
    let again = CompiledPolicy::from_value(&out).unwrap();
    assert_eq!(again.document(), p.document());
    assert_eq!(out["clients"][0]["tags"]["costCenter"], "CC-1000");
    assert_eq!(out["alerts"]["triggers"]["budgetThreshold"], 0.8);
    let from_doc = CompiledPolicy::from_document(p.document()).unwrap();
    assert_eq!(from_doc.fingerprint, again.fingerprint);
    // A typed document with a semantic error is still rejected with a path.
    let mut bad = p.document().clone();
    bad.clients[3].project_id = "nope".into();
    let errs = CompiledPolicy::from_document(&bad).unwrap_err();
    assert_eq!(
        errs.to_string(),
        "clients[3].projectId: no project with id \"nope\""
    );
}

#[test]
fn not_json_and_not_an_object() {
    let e = CompiledPolicy::compile(b"{ nope").unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert!(e.to_string().starts_with("$: not valid JSON"));
    assert_eq!(
        errors(&json!([1])),
        vec!["$: expected an object, found an array"]
    );
    assert_eq!(errors(&json!({})), vec!["orgId: is required"]);
}

#[test]
fn every_error_at_once_with_exact_paths() {
    let mut v = spec_example();
    let projects = json!([
        { "id": "a", "policy": { "monthlyBudget": "1" } },
        { "id": "b" },
        { "id": "c", "policy": { "dailyBudget": "12x", "bogus": 1 } }
    ]);
    set(&mut v, "/projects", projects);
    set(&mut v, "/clients/0/projectId", json!("a"));
    insert(&mut v, "/globalPolicy", "colour", json!("red"));
    set(&mut v, "/timezone", json!("Mars/Olympus"));
    set(&mut v, "/endpoints/1/pricing/perRequest", json!(-3));
    let errs = errors(&v);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    assert!(has(&errs, "projects[2].policy.bogus: unknown field"));
    assert!(has(
        &errs,
        "timezone: \"Mars/Olympus\" is not an IANA timezone"
    ));
    assert!(has(&errs, "globalPolicy.colour: unknown field"));
    assert!(has(
        &errs,
        "endpoints[1].pricing.perRequest: \"-3\" is not a money amount"
    ));
    assert!(has(
        &errs,
        "projects[2].policy.dailyBudget: \"12x\" is not a money amount"
    ));
    // Display: one per line.
    let shown = CompiledPolicy::from_value(&v).unwrap_err().to_string();
    assert_eq!(shown.lines().count(), 5);
}

#[test]
fn unknown_fields_everywhere_have_paths() {
    let mut v = spec_example();
    insert(&mut v, "", "extra", json!(1));
    insert(&mut v, "/alerts/triggers", "x", json!(1));
    insert(
        &mut v,
        "/endpoints/0/pricing/models/gpt-4",
        "cachedPer1k",
        json!("1"),
    );
    insert(
        &mut v,
        "/projects/0/policy/approvalWorkflow",
        "quorum",
        json!(2),
    );
    insert(&mut v, "/projects/0/cache", "ttl", json!(2));
    insert(
        &mut v,
        "/clients/0/additionalRestrictions",
        "monthlyBudget",
        json!("5"),
    );
    insert(
        &mut v,
        "/clients/0/additionalRestrictions/workingHours",
        "tz",
        json!("UTC"),
    );
    insert(&mut v, "/globalPolicy/auditLog", "sink", json!("s3"));
    let errs = errors(&v);
    for p in [
        "extra: unknown field",
        "alerts.triggers.x: unknown field",
        "endpoints[0].pricing.models.gpt-4.cachedPer1k: unknown field",
        "projects[0].policy.approvalWorkflow.quorum: unknown field",
        "projects[0].cache.ttl: unknown field",
        "clients[0].additionalRestrictions.monthlyBudget: unknown field",
        "clients[0].additionalRestrictions.workingHours.tz: unknown field",
        "globalPolicy.auditLog.sink: unknown field",
    ] {
        assert!(has(&errs, p), "missing {p:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), 8, "{errs:#?}");
}

#[test]
fn project_budgets_above_the_org() {
    let mut v = spec_example();
    set(
        &mut v,
        "/projects/0/policy/monthlyBudget",
        json!("100000001"),
    );
    set(&mut v, "/projects/0/policy/dailyBudget", json!(5_000_001));
    let errs = errors(&v);
    assert_eq!(
        errs,
        vec![
            "projects[0].policy.monthlyBudget: 100000001 is above the org's monthlyBudget (100000000)",
            "projects[0].policy.dailyBudget: 5000001 is above the org's dailyBudget (5000000)",
        ]
    );
    // Equal is fine.
    let mut v = spec_example();
    set(
        &mut v,
        "/projects/0/policy/monthlyBudget",
        json!("100000000"),
    );
    assert!(errors(&v).is_empty());
}

#[test]
fn clients_of_missing_projects_and_duplicates() {
    let mut v = spec_example();
    let c = v.pointer("/clients/0").unwrap().clone();
    let mut c2 = c.clone();
    c2["projectId"] = json!("ghost");
    let mut c3 = c.clone();
    c3["id"] = json!("other");
    let mut c4 = c.clone();
    c4["id"] = json!("fourth");
    c4["apiKeySha256"] = json!("abc");
    let mut c5 = c.clone();
    c5["id"] = json!("fifth");
    c5.as_object_mut().unwrap().remove("projectId");
    set(&mut v, "/clients", json!([c, c2, c3, c4, c5]));
    let p = v.pointer("/projects/0").unwrap().clone();
    set(&mut v, "/projects", json!([p.clone(), p]));
    let e = v.pointer("/endpoints/1").unwrap().clone();
    v.pointer_mut("/endpoints")
        .unwrap()
        .as_array_mut()
        .unwrap()
        .push(e);
    let errs = errors(&v);
    for want in [
        "clients[1].projectId: no project with id \"ghost\"",
        "clients[1].id: duplicate of clients[0].id (\"sales-agent\")",
        "clients[1].apiKeySha256: duplicate of clients[0].apiKeySha256",
        "clients[2].apiKeySha256: duplicate of clients[0].apiKeySha256",
        "clients[3].apiKeySha256: is not a SHA-256 in hex",
        "clients[4].projectId: is required",
        "projects[1].id: duplicate of projects[0].id (\"sales-ai\")",
        "endpoints[3].host: duplicate of endpoints[1].host (\"api.deepl.com\")",
    ] {
        assert!(has(&errs, want), "missing {want:?} in {errs:#?}");
    }
    assert!(has(
        &errs,
        "clients[4].apiKeySha256: duplicate of clients[0].apiKeySha256"
    ));
    assert_eq!(errs.len(), 9, "{errs:#?}");
}

#[test]
fn pricing_errors() {
    let mut v = spec_example();
    set(&mut v, "/endpoints/0/pricing/defaultModel", json!("gpt-5"));
    set(
        &mut v,
        "/endpoints/1/pricing",
        json!({ "perRequest": "1", "models": { "m": { "inputPer1k": "1", "outputPer1k": "1" } } }),
    );
    set(&mut v, "/endpoints/2/pricing", json!({}));
    v.pointer_mut("/endpoints").unwrap().as_array_mut().unwrap().extend([
        json!({ "host": "a.example.com", "category": "llm", "pricing": { "models": {} } }),
        json!({ "host": "b.example.com", "category": "llm", "pricing": { "models": { "m": { "inputPer1k": "1" } }, "defaultMaxTokens": 0 } }),
        json!({ "host": "https://c.example.com", "category": "llm" }),
        json!({ "host": "d.example.com/v1", "category": "" }),
        json!({ "host": "e.example.com", "category": "x", "costHeader": "bad header" }),
        json!({ "host": "f.example.com", "category": "x", "pricing": { "perRequest": "1", "defaultModel": "m" } }),
    ]);
    let errs = errors(&v);
    for want in [
        "endpoints[0].pricing.defaultModel: \"gpt-5\" is not one of the models",
        "endpoints[1].pricing: use either perRequest or models, not both",
        "endpoints[2].pricing: needs perRequest or models",
        "endpoints[3].pricing.models: must name at least one model",
        "endpoints[4].pricing.defaultMaxTokens: must be greater than 0",
        "endpoints[4].pricing.models.m.outputPer1k: is required",
        "endpoints[5].host: \"https://c.example.com\": write the host without a scheme",
        "endpoints[6].host: \"d.example.com/v1\": a catalogue entry is a host without a path",
        "endpoints[6].category: must not be empty",
        "endpoints[7].costHeader: \"bad header\" is not an HTTP header name",
        "endpoints[8].pricing.defaultModel: only applies to pricing by models",
    ] {
        assert!(has(&errs, want), "missing {want:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), 11, "{errs:#?}");
}

#[test]
fn hours_alerts_and_rule_errors() {
    let mut v = spec_example();
    set(
        &mut v,
        "/clients/0/additionalRestrictions/workingHours",
        json!({ "timezone": "Nowhere/City", "start": "9:00", "end": "25:00", "days": ["mon", "funday"] }),
    );
    set(&mut v, "/alerts/triggers/budgetThreshold", json!(1.5));
    set(&mut v, "/alerts/channels", json!(["email", "pager"]));
    set(&mut v, "/alerts/slackWebhookUrl", json!("ftp://x"));
    set(
        &mut v,
        "/globalPolicy/blockedEndpoints",
        json!(["ok.com", "*.bad.com", 7]),
    );
    set(&mut v, "/globalPolicy/complianceMode", json!("eu ai act"));
    set(&mut v, "/globalPolicy/auditLog/enabled", json!("yes"));
    set(
        &mut v,
        "/projects/0/policy/approvalWorkflow/approvers",
        json!([]),
    );
    insert(
        &mut v,
        "/projects/0/policy",
        "workingHours",
        json!({ "start": "10:00", "end": "10:00" }),
    );
    set(&mut v, "/projects/0/cache/defaultTTL", json!(-1));
    let errs = errors(&v);
    for want in [
        "clients[0].additionalRestrictions.workingHours.timezone: \"Nowhere/City\" is not an IANA timezone",
        "clients[0].additionalRestrictions.workingHours.start: \"9:00\" is not a time",
        "clients[0].additionalRestrictions.workingHours.end: \"25:00\" is not a time",
        "clients[0].additionalRestrictions.workingHours.days[1]: \"funday\" is not a day",
        "alerts.triggers.budgetThreshold: 1.5 is not a fraction between 0 and 1",
        "alerts.channels[1]: \"pager\" is not a channel",
        "alerts.slackWebhookUrl: \"ftp://x\" is not an http:// or https:// URL",
        "globalPolicy.blockedEndpoints[1]: \"*.bad.com\": a host already covers its subdomains",
        "globalPolicy.blockedEndpoints[2]: expected a string, found a number",
        "globalPolicy.complianceMode: \"eu ai act\" is not a compliance mode name",
        "globalPolicy.auditLog.enabled: expected true or false, found a string",
        "projects[0].policy.approvalWorkflow.approvers: an enabled approval workflow needs at least one approver",
        "projects[0].policy.workingHours.end: start and end are equal",
        "projects[0].cache.defaultTTL: -1 is not a whole number",
    ] {
        assert!(has(&errs, want), "missing {want:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), 14, "{errs:#?}");
}

#[test]
fn wrong_types_have_paths() {
    let mut v = spec_example();
    set(&mut v, "/projects", json!({}));
    set(&mut v, "/clients/0/tags/department", json!(3));
    set(&mut v, "/orgId", json!(""));
    let errs = errors(&v);
    assert!(
        has(&errs, "projects: expected an array, found an object"),
        "{errs:#?}"
    );
    assert!(
        has(
            &errs,
            "clients[0].tags.department: expected a string, found a number"
        ),
        "{errs:#?}"
    );
    assert!(has(&errs, "orgId: must not be empty"), "{errs:#?}");
}

#[test]
fn uppercase_key_hash_is_accepted() {
    let mut v = spec_example();
    set(
        &mut v,
        "/clients/0/apiKeySha256",
        json!(api_key_sha256_hex("sk-sales").to_uppercase()),
    );
    let p = CompiledPolicy::from_value(&v).unwrap();
    assert_eq!(p.keys.len(), 1);
}

#[test]
fn effective_rules_intersect_and_take_the_lowest() {
    let mut v = spec_example();
    insert(
        &mut v,
        "/projects/0/policy",
        "allowedCategories",
        json!(["llm", "search", "data-analysis"]),
    );
    insert(
        &mut v,
        "/clients/0/additionalRestrictions",
        "allowedCategories",
        json!(["llm", "translation"]),
    );
    insert(
        &mut v,
        "/clients/0/additionalRestrictions",
        "maxPerRequest",
        json!("150000"),
    );
    insert(
        &mut v,
        "/clients/0/additionalRestrictions",
        "blockedEndpoints",
        json!(["api.salesforce.com/v1/admin"]),
    );
    let p = CompiledPolicy::from_value(&v).unwrap();
    let c = &p.clients[0];
    let cats: Vec<&str> = c
        .rules
        .categories
        .as_ref()
        .unwrap()
        .iter()
        .map(|s| &**s)
        .collect();
    assert_eq!(cats, vec!["llm"]);
    assert_eq!(c.rules.allow_lists.len(), 2);
    assert_eq!(c.rules.blocked.len(), 3);
    let (mpr, level) = c.rules.max_per_request.as_ref().unwrap();
    assert_eq!(*mpr, Micros::new(150_000));
    assert_eq!(level.to_string(), "client sales-agent");
    // global 500000, workflow 100000 → 100000
    assert_eq!(c.rules.require_approval_above, Some(Micros::new(100_000)));
    assert_eq!(c.rules.hours.len(), 1);
}

#[test]
fn compiled_policy_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledPolicy>();
}

#[test]
fn api_key_hash_is_lower_hex_sha256() {
    assert_eq!(
        api_key_sha256_hex("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

mod endpoint_index {
    use proptest::prelude::*;
    use serde_json::json;

    use super::spec_example;
    use crate::matching::RequestTarget;
    use crate::CompiledPolicy;

    /// A catalogue of nested domains: a request may be covered by several entries.
    fn nested() -> CompiledPolicy {
        let mut doc = spec_example();
        let ep = |host: &str, cat: &str| json!({ "host": host, "category": cat, "pricing": { "perRequest": "10" } });
        doc["endpoints"] = json!([
            ep("example.com", "search"),
            ep("api.example.com", "llm"),
            ep("b.api.example.com", "translation"),
            ep("other.org", "translation"),
            ep("com", "data-analysis"),
            ep("api.openai.com", "llm"),
            ep("api.deepl.com", "translation"),
            ep("api.salesforce.com", "data-analysis"),
        ]);
        CompiledPolicy::from_value(&doc).expect("the nested catalogue compiles")
    }

    fn authority() -> impl Strategy<Value = String> {
        let sub =
            prop::sample::select(vec!["", "a.", "api.", "x.api.", "b.api.", "API.", "Api.b."]);
        let base = prop::sample::select(vec![
            "example.com",
            "api.example.com",
            "other.org",
            "example.co",
            "com",
            "le.com",
            "EXAMPLE.com",
            "api.openai.com",
            "openai.com",
            "",
        ]);
        let tail = prop::sample::select(vec!["", ":443", ".", ".:8080"]);
        (sub, base, tail).prop_map(|(s, b, t)| format!("{s}{b}{t}"))
    }

    fn path() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "/",
            "",
            "/v1",
            "/v1/",
            "/v1/chat/completions",
            "/v2/chat",
            "/a",
            "/a/b?q=1",
            "/x",
            "/x/y",
            "/%2e%2e/v1",
            "/v1/../x",
            "//v1//chat",
        ])
    }

    #[test]
    fn nested_hosts_pick_the_most_specific_entry() {
        let p = nested();
        let cat = |authority: &str, path: &str| {
            p.endpoint_of(&RequestTarget::parse(authority, path).unwrap())
                .and_then(|i| p.endpoints.get(i))
                .map(|e| e.category.to_string())
        };
        assert_eq!(cat("api.example.com", "/v1").as_deref(), Some("llm"));
        assert_eq!(
            cat("x.b.api.example.com", "/").as_deref(),
            Some("translation")
        );
        assert_eq!(cat("www.example.com:443", "/a").as_deref(), Some("search"));
        assert_eq!(cat("API.Example.com", "/").as_deref(), Some("llm"));
        assert_eq!(cat("anything.com.", "/").as_deref(), Some("data-analysis"));
        assert_eq!(cat("nowhere.net", "/"), None);
        assert_eq!(cat("xapi.example.com", "/").as_deref(), Some("search"));
    }

    proptest! {
        #[test]
        fn the_index_answers_like_a_scan_of_the_catalogue(a in authority(), path in path()) {
            for p in [nested(), CompiledPolicy::from_value(&crate::fixtures::acme_policy()).unwrap()] {
                let Ok(t) = RequestTarget::parse(&a, path) else { continue };
                prop_assert_eq!(p.endpoint_of(&t), p.endpoint_by_scan(&t), "{} {}", a, path);
            }
        }
    }
}
