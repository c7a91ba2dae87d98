use chrono::TimeZone;
use proptest::prelude::*;

use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn tz(name: &str) -> Tz {
    parse_tz(name).unwrap()
}

#[test]
fn keys_in_utc() {
    let now = at("2026-11-24T23:59:59Z");
    assert_eq!(day_key(now, Tz::UTC), "2026-11-24");
    assert_eq!(month_key(now, Tz::UTC), "2026-11");
    assert_eq!(day_key(at("2026-11-25T00:00:00Z"), Tz::UTC), "2026-11-25");
}

#[test]
fn month_end_in_the_org_timezone() {
    // 2026-12-01 03:00 UTC is still November 30 in New York (UTC-5).
    let now = at("2026-12-01T03:00:00Z");
    assert_eq!(day_key(now, tz("America/New_York")), "2026-11-30");
    assert_eq!(month_key(now, tz("America/New_York")), "2026-11");
    assert_eq!(month_key(now, Tz::UTC), "2026-12");
    // 2026-12-31 15:00 UTC is already 2027 in Tokyo (UTC+9).
    let now = at("2026-12-31T15:00:00Z");
    assert_eq!(day_key(now, tz("Asia/Tokyo")), "2027-01-01");
    assert_eq!(month_key(now, tz("Asia/Tokyo")), "2027-01");
    assert_eq!(month_key(now, Tz::UTC), "2026-12");
    // Leap day.
    assert_eq!(
        day_key(at("2028-02-29T12:00:00Z"), tz("Europe/Berlin")),
        "2028-02-29"
    );
    assert_eq!(
        month_key(at("2028-02-29T23:30:00Z"), tz("Europe/Berlin")),
        "2028-03"
    );
}

#[test]
fn dst_days_are_still_one_day() {
    let ny = tz("America/New_York");
    // Spring forward 2026-03-08 (02:00 EST → 03:00 EDT): midnight local is 05:00 UTC before,
    // and the next midnight is 04:00 UTC (a 23-hour day).
    assert_eq!(day_key(at("2026-03-08T04:59:59Z"), ny), "2026-03-07");
    assert_eq!(day_key(at("2026-03-08T05:00:00Z"), ny), "2026-03-08");
    assert_eq!(day_key(at("2026-03-09T03:59:59Z"), ny), "2026-03-08");
    assert_eq!(day_key(at("2026-03-09T04:00:00Z"), ny), "2026-03-09");
    // Fall back 2026-11-01: a 25-hour day.
    assert_eq!(day_key(at("2026-11-01T03:59:59Z"), ny), "2026-10-31");
    assert_eq!(month_key(at("2026-11-01T03:59:59Z"), ny), "2026-10");
    assert_eq!(day_key(at("2026-11-01T04:00:00Z"), ny), "2026-11-01");
    assert_eq!(day_key(at("2026-11-02T04:59:59Z"), ny), "2026-11-01");
    assert_eq!(day_key(at("2026-11-02T05:00:00Z"), ny), "2026-11-02");

    let berlin = tz("Europe/Berlin");
    // 2026-03-29: CET → CEST. Local midnight after is 22:00 UTC.
    assert_eq!(day_key(at("2026-03-28T22:59:59Z"), berlin), "2026-03-28");
    assert_eq!(day_key(at("2026-03-28T23:00:00Z"), berlin), "2026-03-29");
    assert_eq!(day_key(at("2026-03-29T21:59:59Z"), berlin), "2026-03-29");
    assert_eq!(day_key(at("2026-03-29T22:00:00Z"), berlin), "2026-03-30");
    // Month boundary right at a DST change (2026-10-31 → 11-01 in Berlin is after the change
    // on 10-25).
    assert_eq!(month_key(at("2026-10-31T22:59:59Z"), berlin), "2026-10");
    assert_eq!(month_key(at("2026-10-31T23:00:00Z"), berlin), "2026-11");
}

#[test]
fn unknown_timezone_is_none() {
    assert!(parse_tz("Mars/Olympus").is_none());
    assert!(parse_tz("UTC").is_some());
}

const ZONES: &[&str] = &[
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Tokyo",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
];

proptest! {
    #[test]
    fn day_key_is_within_month_key(secs in 0i64..4_102_444_800, zi in 0usize..6) {
        let now = Utc.timestamp_opt(secs, 0).unwrap();
        let z = tz(ZONES[zi]);
        let d = day_key(now, z);
        let m = month_key(now, z);
        prop_assert!(d.starts_with(&m));
        prop_assert_eq!(keys(now, z), (m.clone(), d.clone()));
        prop_assert_eq!(d.len(), 10);
        prop_assert_eq!(m.len(), 7);
    }

    #[test]
    fn keys_are_monotone_in_time(secs in 0i64..4_102_444_800, delta in 0i64..10_000_000, zi in 0usize..6) {
        let z = tz(ZONES[zi]);
        let a = Utc.timestamp_opt(secs, 0).unwrap();
        let b = Utc.timestamp_opt(secs + delta, 0).unwrap();
        prop_assert!(day_key(a, z) <= day_key(b, z));
        prop_assert!(month_key(a, z) <= month_key(b, z));
    }
}

#[test]
fn digits_match_format_for_every_width() {
    for n in [
        0, 1, 9, 10, 99, 100, 999, 1000, 2026, 9999, 10000, 262_143, -1, -42, -2026,
    ] {
        for width in [2, 4] {
            let mut s = String::new();
            push_digits(&mut s, n, width);
            assert_eq!(s, format!("{n:0width$}"), "{n} width {width}");
        }
    }
}

proptest! {
    #[test]
    fn keys_match_format(secs in -62_000_000_000i64..250_000_000_000i64) {
        let now = DateTime::from_timestamp(secs, 0).unwrap();
        for zone in [Tz::UTC, tz("America/New_York"), tz("Asia/Tokyo")] {
            let d = now.with_timezone(&zone).date_naive();
            let (m, day) = keys(now, zone);
            prop_assert_eq!(m, format!("{:04}-{:02}", d.year(), d.month()));
            prop_assert_eq!(day, format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()));
        }
    }
}
