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
