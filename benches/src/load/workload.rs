//! What the proxies are asked: the acme policy (10 teams, 50 clients, 40 endpoints, working
//! hours, daily and monthly budgets at org and team level) and a request mix that every
//! variant forwards, so all four do the same upstream work.
//!
//! Three changes to the fixture, all so the run measures the forwarding path rather than
//! refusals or local answers: budgets are raised so millions of requests fit (they are still
//! checked and reserved on every request), the working hours of the restricted clients span
//! the whole week (still evaluated, in America/New_York, on every request of those clients),
//! and the response cache is off (the mix repeats 50 GETs, which it would answer locally).

use pag0_policy::fixtures::{
    acme_api_key, acme_policy, per_request_host, CLIENTS, CLIENTS_PER_TEAM, PER_REQUEST_ENDPOINTS,
};
use serde_json::{json, Value};

/// The bench policy (see the module doc).
pub fn bench_policy() -> Value {
    let mut doc = acme_policy();
    if let Some(g) = doc.get_mut("globalPolicy").and_then(Value::as_object_mut) {
        g.insert("monthlyBudget".into(), json!("100000000000000"));
        g.insert("dailyBudget".into(), json!("10000000000000"));
    }
    for p in doc
        .get_mut("projects")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(pol) = p.get_mut("policy").and_then(Value::as_object_mut) {
            pol.insert("monthlyBudget".into(), json!("10000000000000"));
            pol.insert("dailyBudget".into(), json!("1000000000000"));
        }
        // The fixture caches every team's responses: the same 50 GETs would be answered from
        // the cache after the first round, never reaching the upstream.
        if let Some(p) = p.as_object_mut() {
            p.insert("cache".into(), json!({ "enabled": false }));
        }
    }
    for c in doc
        .get_mut("clients")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(h) = c
            .pointer_mut("/additionalRestrictions/workingHours")
            .and_then(Value::as_object_mut)
        {
            h.insert("start".into(), json!("00:00"));
            h.insert("end".into(), json!("24:00"));
            h.insert(
                "days".into(),
                json!(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
            );
        }
    }
    doc
}

/// One request per client (all 50): `GET` a per-request-priced endpoint its team may call,
/// never the one endpoint blocked for a restricted client. Raw HTTP/1.1 bytes.
pub fn requests() -> Vec<Vec<u8>> {
    (0..CLIENTS)
        .map(|i| {
            let team = i / CLIENTS_PER_TEAM;
            // Team t may call per_request_host((3t + k) % 30) for k in 0..6; k = 0 is
            // blocked for its restricted client, so use k in 1..=5.
            let host = per_request_host((team * 3 + 1 + i % 5) % PER_REQUEST_ENDPOINTS);
            format!(
                "GET /v1/items?client={i} HTTP/1.1\r\nhost: {host}\r\nx-pag0-api-key: {}\r\nuser-agent: pag0-load\r\n\r\n",
                acme_api_key(i)
            )
            .into_bytes()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use pag0_policy::budget::NothingSpent;
    use pag0_policy::{decide, CompiledPolicy, Decision, RequestHead};

    use super::*;

    /// Every request of the mix is allowed and priced, and none could be answered from the
    /// cache: all variants forward all of them to the upstream.
    #[test]
    fn every_request_is_allowed_and_forwarded() {
        let policy = CompiledPolicy::from_value(&bench_policy()).expect("the bench policy");
        assert!(
            policy
                .document()
                .projects
                .iter()
                .all(|p| !p.cache.as_ref().is_some_and(|c| c.enabled)),
            "no project caches"
        );
        let now: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-29T03:00:00Z")
            .expect("a timestamp")
            .with_timezone(&Utc);
        for (i, raw) in requests().iter().enumerate() {
            let text = String::from_utf8(raw.clone()).expect("ASCII");
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(str::to_owned)
                    .expect("header present")
            };
            let path = text.split(' ').nth(1).expect("a request line");
            let head = RequestHead {
                api_key: Some(&field("x-pag0-api-key: ")),
                method: "GET",
                authority: &field("host: "),
                path,
                requires_approval: false,
            };
            match decide(&policy, &head, None, &NothingSpent, now) {
                Decision::Allow(a) => assert!(a.estimate.get() > 0, "request {i} is priced"),
                other => panic!("request {i}: {other:?}"),
            }
        }
    }
}
