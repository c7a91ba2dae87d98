use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn ny() -> Tz {
    "America/New_York".parse().unwrap()
}

const WEEKDAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri"];

#[test]
fn office_hours_in_new_york() {
    let wh = WorkingHours::new(ny(), "09:00", "18:00", Some(WEEKDAYS)).unwrap();
    // Tue 2026-11-24: EST (UTC-5).
    assert!(!wh.contains(at("2026-11-24T13:59:59Z"))); // 08:59:59
    assert!(wh.contains(at("2026-11-24T14:00:00Z"))); // 09:00
    assert!(wh.contains(at("2026-11-24T22:59:59Z"))); // 17:59:59
    assert!(!wh.contains(at("2026-11-24T23:00:00Z"))); // 18:00, end is exclusive
                                                       // Saturday 2026-11-28 10:00 local.
    assert!(!wh.contains(at("2026-11-28T15:00:00Z")));
    assert_eq!(wh.describe(), "09:00-18:00 America/New_York");
}

#[test]
fn wall_clock_follows_dst() {
    let wh = WorkingHours::new(ny(), "09:00", "18:00", None).unwrap();
    // Before spring forward (EST, UTC-5): 09:00 local = 14:00 UTC.
    assert!(wh.contains(at("2026-03-06T14:00:00Z")));
    assert!(!wh.contains(at("2026-03-06T13:30:00Z")));
    // After (EDT, UTC-4): 09:00 local = 13:00 UTC.
    assert!(wh.contains(at("2026-03-09T13:00:00Z")));
    assert!(!wh.contains(at("2026-03-09T12:59:00Z")));
    // After fall back (EST again).
    assert!(!wh.contains(at("2026-11-02T13:30:00Z")));
    assert!(wh.contains(at("2026-11-02T14:00:00Z")));
}

#[test]
fn window_inside_the_skipped_hour_is_never_open_that_night() {
    // 02:00-03:00 does not exist on 2026-03-08 in New York.
    let wh = WorkingHours::new(ny(), "02:00", "03:00", None).unwrap();
    assert!(!wh.contains(at("2026-03-08T06:30:00Z"))); // 01:30 EST -> no; 03:30 EDT after
    assert!(!wh.contains(at("2026-03-08T07:30:00Z"))); // 03:30 EDT
    assert!(wh.contains(at("2026-03-09T06:30:00Z"))); // 02:30 EDT next day
}

#[test]
fn overnight_window_belongs_to_its_start_day() {
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    let wh = WorkingHours::new(berlin, "22:00", "06:00", Some(&["fri"])).unwrap();
    // Fri 2026-11-27 23:00 CET = 22:00 UTC.
    assert!(wh.contains(at("2026-11-27T22:00:00Z")));
    // Sat 01:00 CET: the Friday window continues.
    assert!(wh.contains(at("2026-11-28T00:00:00Z")));
    // Sat 06:00 CET: closed.
    assert!(!wh.contains(at("2026-11-28T05:00:00Z")));
    // Fri 01:00 CET: that belongs to a Thursday window, which is not configured.
    assert!(!wh.contains(at("2026-11-27T00:00:00Z")));
    // Sat 23:00 CET: no Saturday window.
    assert!(!wh.contains(at("2026-11-28T22:00:00Z")));
    // Fri 21:59 CET closed.
    assert!(!wh.contains(at("2026-11-27T20:59:00Z")));
}

#[test]
fn overnight_across_a_dst_change() {
    // Berlin falls back 2026-10-25 03:00 CEST → 02:00 CET. Window Sat 22:00 → Sun 06:00.
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    let wh = WorkingHours::new(berlin, "22:00", "06:00", Some(&["sat"])).unwrap();
    assert!(wh.contains(at("2026-10-24T20:00:00Z"))); // Sat 22:00 CEST
    assert!(wh.contains(at("2026-10-25T04:59:00Z"))); // Sun 05:59 CET
    assert!(!wh.contains(at("2026-10-25T05:00:00Z"))); // Sun 06:00 CET
}

#[test]
fn full_day_and_24_00_end() {
    let wh = WorkingHours::new(Tz::UTC, "00:00", "24:00", Some(&["Sun"])).unwrap();
    assert!(wh.contains(at("2026-11-29T00:00:00Z")));
    assert!(wh.contains(at("2026-11-29T23:59:59Z")));
    assert!(!wh.contains(at("2026-11-30T00:00:00Z")));
}

#[test]
fn bad_inputs() {
    assert!(matches!(parse_hhmm("9:00"), Err(HoursError::BadTime(_))));
    assert!(matches!(parse_hhmm("24:01"), Err(HoursError::BadTime(_))));
    assert!(matches!(parse_hhmm("12:60"), Err(HoursError::BadTime(_))));
    assert!(matches!(parse_hhmm("ab:cd"), Err(HoursError::BadTime(_))));
    assert_eq!(parse_hhmm("23:59"), Ok(1439));
    assert_eq!(parse_hhmm("24:00"), Ok(1440));
    assert!(matches!(parse_day("monday"), Err(HoursError::BadDay(_))));
    assert_eq!(parse_day("MON"), Ok(Weekday::Mon));
    assert!(matches!(
        WorkingHours::new(Tz::UTC, "09:00", "09:00", None),
        Err(HoursError::EmptyWindow(_))
    ));
    assert_eq!(
        WorkingHours::new(Tz::UTC, "24:00", "09:00", None),
        Err(HoursError::StartAtMidnightEnd)
    );
    assert!(matches!(
        WorkingHours::new(Tz::UTC, "09:00", "10:00", Some(&["xyz"])),
        Err(HoursError::BadDay(_))
    ));
}
