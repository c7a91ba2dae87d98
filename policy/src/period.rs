//! Calendar periods for budget counters, in the org's timezone (docs/policy.md `timezone`).
//!
//! A "month" is the calendar month and a "day" the calendar day as seen on a wall clock in
//! that timezone — not 30 days from the epoch, not 24 hours from the first request. Converting
//! an instant (UTC) to local time is always unambiguous, so DST transitions need no special
//! case: a 23-hour or 25-hour local day is still one day key.

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;

/// `YYYY-MM-DD` of `now` in `tz`.
pub fn day_key(now: DateTime<Utc>, tz: Tz) -> String {
    keys(now, tz).1
}

/// `YYYY-MM` of `now` in `tz`.
pub fn month_key(now: DateTime<Utc>, tz: Tz) -> String {
    keys(now, tz).0
}

/// `(month_key, day_key)` with one timezone conversion.
///
/// Runs on every request: the digits are written directly rather than through `format!`
/// (whose machinery cost more than the rest of this function).
pub fn keys(now: DateTime<Utc>, tz: Tz) -> (String, String) {
    let d = now.with_timezone(&tz).date_naive();
    let mut month = String::with_capacity(10);
    push_digits(&mut month, d.year(), 4);
    month.push('-');
    push_digits(&mut month, i32::try_from(d.month()).unwrap_or(0), 2);
    let mut day = String::with_capacity(10);
    day.push_str(&month);
    day.push('-');
    push_digits(&mut day, i32::try_from(d.day()).unwrap_or(0), 2);
    (month, day)
}

/// `n` in decimal, zero-padded to `width` digits, like `{:0width$}` (a negative year, which
/// chrono allows and no clock here produces, keeps its sign as `format!` would).
fn push_digits(out: &mut String, n: i32, width: usize) {
    if n < 0 {
        out.push('-');
    }
    let v = n.unsigned_abs();
    let mut digits = 1;
    let mut top = 1u32;
    while let Some(next) = top.checked_mul(10).filter(|&t| t <= v) {
        top = next;
        digits += 1;
    }
    for _ in (digits + usize::from(n < 0))..width {
        out.push('0');
    }
    while top > 0 {
        out.push(char::from_digit((v / top) % 10, 10).unwrap_or('0'));
        top /= 10;
    }
}

/// Parses an IANA timezone name (`Europe/Berlin`, `UTC`).
pub fn parse_tz(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

#[cfg(test)]
mod tests;
