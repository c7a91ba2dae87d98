use chrono::{DateTime, Utc};
use serde_json::json;

use super::*;
use pag0_policy::period::{day_key, month_key, parse_tz};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The bounds are exactly where the budget counters' period keys change: the key of `from` and
/// of `to − 1 ms` is the key of `now`, those of `from − 1 ms` and `to` are not.
#[test]
fn periods_end_where_the_budget_keys_change() {
    // Zones with DST at 02:00/03:00, at midnight (Santiago, Havana), half-hour offsets, the
    // date line.
    let zones = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "America/Santiago",
        "America/Havana",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "Pacific/Apia",
        "Pacific/Kiritimati",
    ];
    let start = at("2024-01-01T00:00:00Z").timestamp_millis();
    for name in zones {
        let tz = parse_tz(name).unwrap();
        // Every 7 h 13 min over two years: every DST change is crossed, at many hours of day.
        let mut t = start;
        while t < start + 2 * 366 * 86_400_000 {
            let now = DateTime::<Utc>::from_timestamp_millis(t).unwrap();
            for (period, key) in [
                (Period::Day, day_key as fn(DateTime<Utc>, _) -> String),
                (Period::Month, month_key),
            ] {
                let (from, to) = bounds(now, &tz, period).unwrap();
                let ms = chrono::Duration::milliseconds(1);
                let k = key(now, tz);
                assert!(
                    from <= now && now < to,
                    "{name} {now} {period:?}: {from}..{to}"
                );
                assert_eq!(key(from, tz), k, "{name} {now} {period:?} from {from}");
                assert_eq!(key(to - ms, tz), k, "{name} {now} {period:?} to {to}");
                assert_ne!(key(from - ms, tz), k, "{name} {now} {period:?} from {from}");
                assert_ne!(key(to, tz), k, "{name} {now} {period:?} to {to}");
            }
            t += (7 * 60 + 13) * 60_000;
        }
    }
}

/// A series reads the coarsest store bucket no point boundary cuts: days for UTC days, hours
/// for whole-hour zones and for hours, 15 minutes for India's and Nepal's, across DST too.
#[test]
fn series_read_the_coarsest_store_bucket_that_fits() {
    let from = at("2026-03-01T00:00:00Z").timestamp_millis();
    let to = at("2026-05-01T00:00:00Z").timestamp_millis();
    for (zone, day, hour) in [
        ("UTC", 86_400_000, 3_600_000),
        ("America/New_York", 3_600_000, 3_600_000),
        ("Europe/Berlin", 3_600_000, 3_600_000),
        ("Asia/Kolkata", 900_000, 900_000),
        ("Asia/Kathmandu", 900_000, 900_000),
        ("Australia/Lord_Howe", 900_000, 900_000),
    ] {
        let tz = parse_tz(zone).unwrap();
        for (interval, want) in [(Interval::Day, day), (Interval::Hour, hour)] {
            let starts = bucket_starts(&tz, interval, from, to).unwrap();
            let b = store_bucket(&starts);
            assert_eq!(b, want, "{zone} {interval:?}");
            assert!(starts.iter().skip(1).all(|s| s % b == 0));
        }
    }
    // One point: nothing to cut.
    assert_eq!(store_bucket(&[from + 1]), 86_400_000);
}

#[test]
fn a_berlin_month_and_a_skipped_midnight() {
    let berlin = parse_tz("Europe/Berlin").unwrap();
    let (from, to) = bounds(at("2026-03-29T12:00:00Z"), &berlin, Period::Month).unwrap();
    assert_eq!(
        (from, to),
        (at("2026-02-28T23:00:00Z"), at("2026-03-31T22:00:00Z"))
    );
    let (from, to) = bounds(at("2026-03-29T12:00:00Z"), &berlin, Period::Day).unwrap();
    assert_eq!(
        to - from,
        chrono::Duration::hours(23),
        "the DST day is 23 hours long"
    );
    // Santiago skipped 2024-09-08 00:00..01:00 local: that day starts at 01:00 (-03:00).
    let santiago = parse_tz("America/Santiago").unwrap();
    let (from, _) = bounds(at("2024-09-08T12:00:00Z"), &santiago, Period::Day).unwrap();
    assert_eq!(from, at("2024-09-08T04:00:00Z"));
}

fn totals(
    project: Option<&str>,
    client: Option<&str>,
    host: &str,
    requests: u64,
    cost: u64,
    hits: u64,
    savings: u64,
) -> UsageTotals {
    UsageTotals {
        project_id: project.map(Into::into),
        client_id: client.map(Into::into),
        host: Some(host.into()),
        requests,
        cost,
        cache_hits: hits,
        savings,
    }
}

#[test]
fn cost_centres_come_from_the_client_then_its_project() {
    let doc = json!({
        "projects": [ { "id": "sales-ai", "tags": { "costCenter": "CC-SALES" } }, { "id": "ops" } ],
        "clients": [
            { "id": "tagged", "projectId": "sales-ai", "tags": { "costCenter": "CC-1001" } },
            { "id": "untagged", "projectId": "sales-ai" },
            { "id": "ops-bot", "projectId": "ops", "tags": { "department": "Ops" } } ]
    });
    let d = Some(&doc);
    assert_eq!(cost_center(d, Some("sales-ai"), Some("tagged")), "CC-1001");
    assert_eq!(
        cost_center(d, Some("sales-ai"), Some("untagged")),
        "CC-SALES"
    );
    assert_eq!(
        cost_center(d, None, Some("untagged")),
        "CC-SALES",
        "the client's project in the policy"
    );
    assert_eq!(
        cost_center(d, Some("sales-ai"), Some("deleted-client")),
        "CC-SALES"
    );
    assert_eq!(cost_center(d, Some("ops"), Some("ops-bot")), UNASSIGNED);
    assert_eq!(cost_center(d, None, None), UNASSIGNED);
    assert_eq!(
        cost_center(None, Some("sales-ai"), Some("tagged")),
        UNASSIGNED,
        "no policy"
    );

    let rows = [
        totals(
            Some("sales-ai"),
            Some("tagged"),
            "api.openai.com",
            4,
            8000,
            1,
            2000,
        ),
        totals(
            Some("sales-ai"),
            Some("untagged"),
            "api.deepl.com",
            2,
            0,
            2,
            500,
        ),
        totals(Some("ops"), Some("ops-bot"), "api.openai.com", 1, 100, 0, 0),
        totals(None, None, "api.deepl.com", 1, 7, 0, 0),
    ];
    let (by_cc, all) = group(&rows, GroupBy::CostCenter, d).unwrap();
    assert_eq!(
        by_cc.keys().collect::<Vec<_>>(),
        ["CC-1001", "CC-SALES", UNASSIGNED]
    );
    assert_eq!(
        by_cc[UNASSIGNED],
        Sums {
            requests: 2,
            cost: 107,
            cache_hits: 0,
            savings: 0
        }
    );
    assert_eq!(
        all,
        Sums {
            requests: 8,
            cost: 8107,
            cache_hits: 3,
            savings: 2500
        }
    );
    let (by_project, _) = group(&rows, GroupBy::Project, d).unwrap();
    assert_eq!(
        by_project["sales-ai"],
        Sums {
            requests: 6,
            cost: 8000,
            cache_hits: 3,
            savings: 2500
        }
    );
    assert_eq!(by_project[UNASSIGNED].requests, 1);
    let (by_host, _) = group(&rows, GroupBy::Endpoint, d).unwrap();
    assert_eq!(
        by_host["api.deepl.com"],
        Sums {
            requests: 3,
            cost: 7,
            cache_hits: 2,
            savings: 500
        }
    );
}

#[test]
fn rates_and_money_in_json() {
    let s = Sums {
        requests: 4,
        cost: 12_000_000_000_000_000_000,
        cache_hits: 1,
        savings: 3,
    };
    let v = s.to_json();
    assert_eq!(
        v["totalCost"], "12000000000000000000",
        "money as a decimal string, beyond 2^63"
    );
    assert_eq!(
        (v["cacheHitRate"].as_f64(), v["savings"].as_str()),
        (Some(0.25), Some("3"))
    );
    assert!(
        Sums::default().to_json()["cacheHitRate"].is_null(),
        "no requests: no rate"
    );
    let mut a = Sums {
        cost: u64::MAX,
        ..Sums::default()
    };
    assert!(
        a.add(&totals(None, None, "h", 1, 1, 0, 0)).is_err(),
        "overflow is an error, not a wrap"
    );
}

// === over the router ===

mod router {
    use axum::http::{Method, StatusCode};
    use serde_json::{json, Value};

    use crate::testing::{harness, ALICE, ORG_MONTH, SYNC, T0};

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
        // No decision events were synced: no denials, and no latency rather than a made-up 0.
        for g in [group(b, "sales-ai"), &b["total"]] {
            assert_eq!(g["violations"], json!({ "count": 0, "byCode": {} }), "{g}");
            assert_eq!(
                (&g["avgLatency"], &g["p95Latency"], &g["latencySamples"]),
                (&Value::Null, &Value::Null, &json!(0)),
                "{g}"
            );
            assert_eq!(
                g["cacheHitLatency"],
                json!({ "avg": null, "p95": null, "samples": 0 })
            );
        }
        // No anomaly was stored: every group and the total count none (tests/anomalies.rs
        // stores some).
        for g in [group(b, "sales-ai"), group(b, "support"), &b["total"]] {
            assert_eq!(
                g["anomalies"],
                json!({ "count": 0, "byKind": {}, "latest": [] }),
                "{g}"
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
            (
                "period=month&groupBy=project,project",
                "groupBy: \"project\" given twice",
            ),
            (
                "period=day&from=2025-11-01T00:00:00Z&to=2025-11-02T00:00:00Z",
                "period: give either",
            ),
            ("from=2025-11-01T00:00:00Z", "to: required"),
            (
                "from=yesterday&to=2025-11-02T00:00:00Z",
                "from: \"yesterday\"",
            ),
            (
                "from=2025-11-02T00:00:00Z&to=2025-11-01T00:00:00Z",
                "to: 2025-11-01",
            ),
            ("interval=week", "interval: \"week\""),
            ("format=xml", "format: \"xml\""),
            (
                "from=2020-01-01T00:00:00Z&to=2025-01-01T00:00:00Z&interval=hour",
                "interval: more than",
            ),
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
}

mod anomalies;
mod sums;
