//! Working hours (`workingHours` at any policy level): requests are allowed only inside a
//! weekly window on the wall clock of an IANA timezone.
//!
//! - `start` and `end` are `"HH:MM"` (24-hour clock); `end` may also be `"24:00"`.
//!   The window is `start <= t < end`.
//! - `end` earlier than `start` is an overnight window crossing midnight (`22:00`–`06:00`);
//!   `days` names the day the window *starts* on, so a Friday window 22:00–06:00 covers
//!   Saturday 01:00 and not Friday 01:00.
//! - `days` (`mon` … `sun`, case-insensitive) omitted means every day.
//! - `start == end` is rejected (an empty or ambiguous window).
//! - DST: times are wall-clock times, so `09:00` is 09:00 local on both sides of a change; an
//!   hour skipped by a spring-forward change is simply never reached.

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use chrono_tz::Tz;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkingHours {
    tz: Tz,
    /// Minutes since local midnight.
    start: u16,
    /// Minutes since local midnight, 1..=1440.
    end: u16,
    /// Bit `n` set = window starts on weekday `n` (0 = Monday).
    days: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HoursError {
    #[error("{0:?} is not a time; use \"HH:MM\" (00:00 to 23:59, or 24:00 as an end)")]
    BadTime(String),
    #[error("{0:?} is not a day; use mon, tue, wed, thu, fri, sat or sun")]
    BadDay(String),
    #[error("start and end are equal ({0}); the window would be empty")]
    EmptyWindow(String),
    #[error("24:00 can only be an end time")]
    StartAtMidnightEnd,
}

const ALL_DAYS: u8 = 0b111_1111;

// === impl WorkingHours ===

impl WorkingHours {
    /// `days` = `None` means every day.
    pub fn new(tz: Tz, start: &str, end: &str, days: Option<&[&str]>) -> Result<Self, HoursError> {
        let start_m = parse_hhmm(start)?;
        if start_m == 24 * 60 {
            return Err(HoursError::StartAtMidnightEnd);
        }
        let end_m = parse_hhmm(end)?;
        if start_m == end_m {
            return Err(HoursError::EmptyWindow(start.to_string()));
        }
        let days = match days {
            None => ALL_DAYS,
            Some(list) => {
                let mut bits = 0u8;
                for d in list {
                    bits |= 1 << parse_day(d)?.num_days_from_monday();
                }
                bits
            }
        };
        Ok(WorkingHours {
            tz,
            start: start_m,
            end: end_m,
            days,
        })
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// Is `now` inside the window?
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.tz);
        let minute = u16::try_from(local.hour() * 60 + local.minute()).unwrap_or(0);
        let today = local.weekday();
        if self.start < self.end {
            self.on(today) && self.start <= minute && minute < self.end
        } else {
            // Overnight: the evening part belongs to today's window, the early-morning part
            // to yesterday's.
            (self.on(today) && minute >= self.start) || (self.on(today.pred()) && minute < self.end)
        }
    }

    fn on(&self, day: Weekday) -> bool {
        self.days & (1 << day.num_days_from_monday()) != 0
    }

    /// `09:00-18:00 America/New_York` for deny messages.
    pub fn describe(&self) -> String {
        format!(
            "{:02}:{:02}-{:02}:{:02} {}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60,
            self.tz.name()
        )
    }
}

/// `"HH:MM"` → minutes since midnight. `"24:00"` → 1440.
pub fn parse_hhmm(s: &str) -> Result<u16, HoursError> {
    let bad = || HoursError::BadTime(s.to_string());
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    match (h, m) {
        (24, 0) => Ok(24 * 60),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

pub fn parse_day(s: &str) -> Result<Weekday, HoursError> {
    match s.to_ascii_lowercase().as_str() {
        "mon" => Ok(Weekday::Mon),
        "tue" => Ok(Weekday::Tue),
        "wed" => Ok(Weekday::Wed),
        "thu" => Ok(Weekday::Thu),
        "fri" => Ok(Weekday::Fri),
        "sat" => Ok(Weekday::Sat),
        "sun" => Ok(Weekday::Sun),
        _ => Err(HoursError::BadDay(s.to_string())),
    }
}

#[cfg(test)]
mod tests;
