//! The lenient walk: a [`Walker`] reads the JSON by hand and records *every* problem as
//! `path: reason` instead of stopping at the first. These are its primitive readers; the
//! document's parts are read in `sections` and `catalogue`.

use chrono_tz::Tz;
use serde_json::{Map, Value};

use super::raw::RawRules;
use super::FieldError;
use crate::hours::WorkingHours;
use crate::matching::EndpointPattern;
use crate::money::Micros;
use crate::period::parse_tz;

// === The walk: schema + every error ===

#[derive(Default)]
pub(super) struct Walker {
    pub(super) errors: Vec<FieldError>,
}

pub(super) const RULE_FIELDS: &[&str] = &[
    "allowedEndpoints",
    "blockedEndpoints",
    "allowedCategories",
    "maxPerRequest",
    "requireApprovalAbove",
    "workingHours",
];

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Walker {
    pub(super) fn err(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            reason: reason.into(),
        });
    }

    /// `v` must be an object; every key not in `known` is reported.
    pub(super) fn object<'v>(
        &mut self,
        path: &str,
        v: &'v Value,
        known: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Some(m) = v.as_object() else {
            let p = if path.is_empty() { "$" } else { path };
            self.err(p, format!("expected an object, found {}", type_name(v)));
            return None;
        };
        for k in m.keys() {
            if !known.contains(&k.as_str()) {
                self.err(
                    join(path, k),
                    format!("unknown field; expected one of: {}", known.join(", ")),
                );
            }
        }
        Some(m)
    }

    pub(super) fn field<'v>(
        &mut self,
        m: &'v Map<String, Value>,
        path: &str,
        key: &str,
        required: bool,
    ) -> Option<&'v Value> {
        match m.get(key) {
            Some(v) => Some(v),
            None => {
                if required {
                    self.err(join(path, key), "is required");
                }
                None
            }
        }
    }

    pub(super) fn string<'v>(
        &mut self,
        m: &'v Map<String, Value>,
        path: &str,
        key: &str,
        required: bool,
    ) -> Option<&'v str> {
        let v = self.field(m, path, key, required)?;
        match v {
            Value::String(s) if !s.trim().is_empty() => Some(s),
            Value::String(_) => {
                self.err(join(path, key), "must not be empty");
                None
            }
            other => {
                self.err(
                    join(path, key),
                    format!("expected a string, found {}", type_name(other)),
                );
                None
            }
        }
    }

    pub(super) fn boolean(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Option<bool> {
        let v = self.field(m, path, key, false)?;
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.err(
                    join(path, key),
                    format!("expected true or false, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// A whole number; `positive` rejects 0.
    pub(super) fn count(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
        key: &str,
        positive: bool,
    ) -> Option<u64> {
        let v = self.field(m, path, key, false)?;
        match v.as_u64() {
            Some(0) if positive => {
                self.err(join(path, key), "must be greater than 0");
                None
            }
            Some(n) => Some(n),
            None => {
                self.err(join(path, key), format!("{v} is not a whole number"));
                None
            }
        }
    }

    pub(super) fn money(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Option<Micros> {
        let v = self.field(m, path, key, false)?;
        match Micros::from_json(v) {
            Ok(x) => Some(x),
            Err(e) => {
                self.err(join(path, key), e.to_string());
                None
            }
        }
    }

    /// An array of non-empty strings; `None` if any element is not one (each reported).
    pub(super) fn strings<'v>(
        &mut self,
        m: &'v Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Option<Vec<&'v str>> {
        let (items, ok) = self.strings_lenient(m, path, key)?;
        ok.then(|| items.into_iter().map(|(_, s)| s).collect())
    }

    /// The valid string elements with their indexes, and whether all elements were valid.
    pub(super) fn strings_lenient<'v>(
        &mut self,
        m: &'v Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Option<(Vec<(usize, &'v str)>, bool)> {
        let v = self.field(m, path, key, false)?;
        let p = join(path, key);
        let Some(items) = v.as_array() else {
            self.err(
                p,
                format!("expected an array of strings, found {}", type_name(v)),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) if !s.trim().is_empty() => out.push((i, s)),
                Some(_) => {
                    self.err(format!("{p}[{i}]"), "must not be empty");
                    ok = false;
                }
                None => {
                    self.err(
                        format!("{p}[{i}]"),
                        format!("expected a string, found {}", type_name(item)),
                    );
                    ok = false;
                }
            }
        }
        Some((out, ok))
    }

    pub(super) fn tags(&mut self, m: &Map<String, Value>, path: &str) {
        let Some(v) = self.field(m, path, "tags", false) else {
            return;
        };
        let p = join(path, "tags");
        let Some(obj) = v.as_object() else {
            self.err(
                p,
                format!("expected an object of strings, found {}", type_name(v)),
            );
            return;
        };
        for (k, val) in obj {
            if !val.is_string() {
                self.err(
                    join(&p, k),
                    format!("expected a string, found {}", type_name(val)),
                );
            }
        }
    }

    pub(super) fn patterns(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Option<Vec<EndpointPattern>> {
        let (list, ok) = self.strings_lenient(m, path, key)?;
        let p = join(path, key);
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list {
            match EndpointPattern::parse(s) {
                Ok(pat) => out.push(pat),
                Err(e) => self.err(format!("{p}[{i}]"), e.to_string()),
            }
        }
        ok.then_some(out)
    }

    pub(super) fn timezone(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Option<Tz> {
        let name = self.string(m, path, key, false)?;
        match parse_tz(name) {
            Some(tz) => Some(tz),
            None => {
                self.err(
                    join(path, key),
                    format!("{name:?} is not an IANA timezone (e.g. \"Europe/Berlin\", \"UTC\")"),
                );
                None
            }
        }
    }

    pub(super) fn working_hours(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
        org_tz: Tz,
    ) -> Option<WorkingHours> {
        let v = self.field(m, path, "workingHours", false)?;
        let p = join(path, "workingHours");
        let wh = self.object(&p, v, &["timezone", "start", "end", "days"])?;
        let tz_given = wh.contains_key("timezone");
        let tz = self.timezone(wh, &p, "timezone");
        let start = self.string(wh, &p, "start", true);
        let end = self.string(wh, &p, "end", true);
        let days = self.strings(wh, &p, "days");
        let mut ok = true;
        let mut start_m = None;
        if let Some(s) = start {
            match crate::hours::parse_hhmm(s) {
                Ok(1440) => {
                    self.err(
                        join(&p, "start"),
                        crate::hours::HoursError::StartAtMidnightEnd.to_string(),
                    );
                    ok = false;
                }
                Ok(x) => start_m = Some(x),
                Err(e) => {
                    self.err(join(&p, "start"), e.to_string());
                    ok = false;
                }
            }
        }
        if let Some(e) = end {
            match crate::hours::parse_hhmm(e) {
                Ok(x) if Some(x) == start_m => {
                    self.err(
                        join(&p, "end"),
                        crate::hours::HoursError::EmptyWindow(e.to_string()).to_string(),
                    );
                    ok = false;
                }
                Ok(_) => {}
                Err(err) => {
                    self.err(join(&p, "end"), err.to_string());
                    ok = false;
                }
            }
        }
        if let Some(days) = &days {
            if days.is_empty() {
                self.err(
                    join(&p, "days"),
                    "must name at least one day (omit it for every day)",
                );
                ok = false;
            }
            for (i, d) in days.iter().enumerate() {
                if let Err(e) = crate::hours::parse_day(d) {
                    self.err(format!("{p}.days[{i}]"), e.to_string());
                    ok = false;
                }
            }
        }
        if !ok || (tz_given && tz.is_none()) {
            return None;
        }
        let (start, end) = (start?, end?);
        WorkingHours::new(tz.unwrap_or(org_tz), start, end, days.as_deref()).ok()
    }

    /// The rule fields of one level. `budgets`: org and project levels also take budgets.
    pub(super) fn rules(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
        budgets: bool,
        org_tz: Tz,
    ) -> RawRules {
        let categories = self.strings(m, path, "allowedCategories");
        RawRules {
            monthly: if budgets {
                self.money(m, path, "monthlyBudget")
            } else {
                None
            },
            daily: if budgets {
                self.money(m, path, "dailyBudget")
            } else {
                None
            },
            allowed: self.patterns(m, path, "allowedEndpoints"),
            blocked: self
                .patterns(m, path, "blockedEndpoints")
                .unwrap_or_default(),
            categories: categories.map(|c| c.into_iter().map(str::to_string).collect()),
            max_per_request: self.money(m, path, "maxPerRequest"),
            require_approval_above: self.money(m, path, "requireApprovalAbove"),
            hours: self.working_hours(m, path, org_tz),
        }
    }

    pub(super) fn array<T>(
        &mut self,
        m: &Map<String, Value>,
        key: &str,
        mut each: impl FnMut(&mut Walker, &str, &Value) -> Option<T>,
    ) -> Vec<Option<T>> {
        let Some(v) = m.get(key) else {
            return Vec::new();
        };
        let Some(items) = v.as_array() else {
            self.err(key, format!("expected an array, found {}", type_name(v)));
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| each(self, &format!("{key}[{i}]"), item))
            .collect()
    }
}
