//! Which per-project and per-cost-centre series a policy gets, their names, and id reuse
//! across policies.

use pag0_policy::validate::api_key_sha256_hex;
use pag0_policy::CompiledPolicy;
use serde_json::{json, Value};

use super::*;
use crate::testing::FakeHost;

fn doc(projects: Value, clients: Value) -> PolicyDocument {
    CompiledPolicy::from_value(&json!({
        "orgId": "acme", "timezone": "UTC",
        "endpoints": [{ "host": "api.deepl.com", "category": "translation",
                        "pricing": { "perRequest": "2000" } }],
        "projects": projects,
        "clients": clients,
    }))
    .unwrap()
    .document()
    .clone()
}

fn client(id: &str, project: &str, tags: Value) -> Value {
    json!({ "id": id, "projectId": project, "apiKeySha256": api_key_sha256_hex(id), "tags": tags })
}

fn cached(id: &str, tags: Value) -> Value {
    json!({ "id": id, "cache": { "enabled": true }, "tags": tags })
}

/// A `define` that hands out ids in order and records every name it was asked for.
fn recorder(names: &mut Vec<String>) -> impl FnMut(&str) -> Option<u32> + '_ {
    move |n| {
        names.push(n.to_string());
        Some(u32::try_from(names.len()).unwrap() + 99)
    }
}

fn sample() -> PolicyDocument {
    doc(
        json!([
            cached("sales.ai", json!({ "costCenter": "CC 1000/EMEA" })),
            cached("ops", json!({})),
            { "id": "nocache", "tags": { "costCenter": "CC-9" } },
        ]),
        json!([
            client("s1", "sales.ai", json!({ "costCenter": "CC-1" })),
            client("s2", "sales.ai", json!({})),
            client("s3", "sales.ai", json!({ "costCenter": " " })),
            client("o1", "ops", json!({ "costCenter": "CC-1" })),
            client("o2", "ops", json!({})),
            client("n1", "nocache", json!({ "costCenter": "CC-8" })),
        ]),
    )
}

#[test]
fn names_are_single_sanitized_segments() {
    assert_eq!(segment("sales-ai_2").as_deref(), Some("sales-ai_2"));
    assert_eq!(segment("a.b c/d").as_deref(), Some("a_b_c_d"));
    assert_eq!(segment("Zürich").as_deref(), Some("Z_rich"));
    assert_eq!(segment("x{y}=1,2:3").as_deref(), Some("x_y__1_2_3"));
    assert_eq!(segment(""), None);
    assert_eq!(segment("  "), None);
    let long = "p".repeat(200);
    assert_eq!(segment(&long).unwrap().len(), MAX_SEGMENT_CHARS);
}

#[test]
fn one_series_per_cache_enabled_project_and_cost_centre() {
    let mut names = Vec::new();
    let a = Attribution::build(
        &sample(),
        &Attribution::default(),
        &mut recorder(&mut names),
    );
    let expected = [
        "pag0.cache.cost_center.CC-1.hits",
        "pag0.cache.cost_center.CC-1.savings_micros",
        "pag0.cache.cost_center.CC_1000_EMEA.hits",
        "pag0.cache.cost_center.CC_1000_EMEA.savings_micros",
        "pag0.cache.project.ops.hits",
        "pag0.cache.project.ops.savings_micros",
        "pag0.cache.project.sales_ai.hits",
        "pag0.cache.project.sales_ai.savings_micros",
    ];
    assert_eq!(a.names().collect::<Vec<_>>(), expected);
    // Each defined once, though CC-1 has clients in two projects and CC_1000_EMEA two clients.
    names.sort();
    assert_eq!(names, expected);

    // The client's tag first, else its project's; a blank tag counts as absent.
    let cc1 = a.client("s1").unwrap();
    assert_eq!(a.client("o1"), Some(cc1));
    let emea = a.client("s2").unwrap();
    assert_ne!(emea, cc1);
    assert_eq!(a.client("s3"), Some(emea));
    assert_eq!(a.client("o2"), None, "no cost centre anywhere: no series");
    assert_eq!(a.client("n1"), None, "its project has no cache");
    assert_eq!(a.project("nocache"), None);
    assert_ne!(a.project("ops"), a.project("sales.ai"));
    assert!(a.project("sales.ai").unwrap().hits.is_some());
}

#[test]
fn a_new_policy_defines_only_new_names_and_keeps_the_old_ids() {
    let mut first = Vec::new();
    let a = Attribution::build(
        &sample(),
        &Attribution::default(),
        &mut recorder(&mut first),
    );
    let next = doc(
        json!([cached("ops", json!({})), cached("new", json!({}))]),
        json!([
            client("o1", "ops", json!({ "costCenter": "CC-1" })),
            client("x1", "new", json!({ "costCenter": "CC-2" })),
        ]),
    );
    let mut second = Vec::new();
    let b = Attribution::build(&next, &a, &mut recorder(&mut second));
    assert_eq!(
        second,
        [
            "pag0.cache.project.new.hits",
            "pag0.cache.project.new.savings_micros",
            "pag0.cache.cost_center.CC-2.hits",
            "pag0.cache.cost_center.CC-2.savings_micros",
        ]
    );
    assert_eq!(b.project("ops"), a.project("ops"));
    assert_eq!(b.client("o1"), a.client("o1"));
    assert_eq!(b.project("sales.ai"), None, "gone from the policy");
    assert_eq!(
        b.names().count(),
        8,
        "only the new policy's series are kept"
    );
}

#[test]
fn a_refused_define_skips_that_series_only() {
    let a = Attribution::build(&sample(), &Attribution::default(), &mut |n: &str| {
        (!n.starts_with("pag0.cache.project.ops.")).then_some(7)
    });
    let host = FakeHost::default();
    let counts = Increments::default();
    a.hit(&counts, &&host, "ops", "o1", 500);
    counts.flush(&&host);
    assert_eq!(a.project("ops"), Some(Series::default()));
    assert_eq!(
        *host.metrics.borrow().get(&7).unwrap(),
        501,
        "the cost centre still counts"
    );
}

#[test]
fn a_hit_counts_in_its_project_and_cost_centre_only() {
    let mut names = Vec::new();
    let a = Attribution::build(
        &sample(),
        &Attribution::default(),
        &mut recorder(&mut names),
    );
    let host = FakeHost::default();
    let counts = Increments::default();
    a.hit(&counts, &&host, "sales.ai", "s2", 1500);
    a.hit(&counts, &&host, "sales.ai", "s2", 0);
    counts.flush(&&host);
    let value = |name: &str| {
        let id = u32::try_from(names.iter().position(|n| n == name).unwrap()).unwrap() + 100;
        host.metrics.borrow().get(&id).copied().unwrap_or(0)
    };
    assert_eq!(value("pag0.cache.project.sales_ai.hits"), 2);
    assert_eq!(value("pag0.cache.project.sales_ai.savings_micros"), 1500);
    assert_eq!(value("pag0.cache.cost_center.CC_1000_EMEA.hits"), 2);
    assert_eq!(
        value("pag0.cache.cost_center.CC_1000_EMEA.savings_micros"),
        1500
    );
    assert_eq!(value("pag0.cache.project.ops.hits"), 0);
    assert_eq!(value("pag0.cache.cost_center.CC-1.hits"), 0);
    // Unknown ids (a request of a policy since replaced) count nowhere.
    a.hit(&counts, &&host, "gone", "gone", 10);
    assert!(counts.is_empty());
    assert_eq!(
        host.metrics.borrow().values().sum::<i64>(),
        2 + 1500 + 2 + 1500
    );
}
