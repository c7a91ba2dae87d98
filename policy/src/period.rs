//! Calendar periods for budget counters, in the org's timezone (SPEC §3 `timezone`).
//!
//! A "month" is the calendar month and a "day" the calendar day as seen on a wall clock in
//! that timezone — not 30 days from the epoch, not 24 hours from the first request. Converting
//! an instant (UTC) to local time is always unambiguous, so DST transitions need no special
//! case: a 23-hour or 25-hour local day is still one day key.

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;

/// `YYYY-MM-DD` of `now` in `tz`.
pub fn day_key(now: DateTime<Utc>, tz: Tz) -> String {
    let d = now.with_timezone(&tz).date_naive();
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// `YYYY-MM` of `now` in `tz`.
pub fn month_key(now: DateTime<Utc>, tz: Tz) -> String {
    let d = now.with_timezone(&tz).date_naive();
    format!("{:04}-{:02}", d.year(), d.month())
}

/// `(month_key, day_key)` with one timezone conversion.
pub fn keys(now: DateTime<Utc>, tz: Tz) -> (String, String) {
    let d = now.with_timezone(&tz).date_naive();
    (
        format!("{:04}-{:02}", d.year(), d.month()),
        format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()),
    )
}

/// Parses an IANA timezone name (`Europe/Berlin`, `UTC`).
pub fn parse_tz(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

#[cfg(test)]
mod tests;
