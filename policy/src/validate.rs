//! Validation and compilation of a policy document (SPEC §3) into [`CompiledPolicy`]: an
//! immutable form with everything a request needs precomputed (client lookup by key hash,
//! the catalogue ordered by specificity, each client's effective org → project → client rules).
//!
//! Validation walks the JSON by hand so that *every* problem is reported at once, each as
//! `path: reason` (`projects[2].policy.dailyBudget: "12x" is not a money amount`).

use std::fmt;
use std::sync::Arc;

use chrono_tz::Tz;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::doc::PolicyDocument;
use crate::hours::WorkingHours;
use crate::matching::EndpointPattern;
use crate::money::Micros;
use crate::period::parse_tz;
use crate::pricing::{EndpointPricing, TokenPricing};
use crate::settle::ModelPrice;

/// Default `approvalWorkflow.expiresAfter`: one day.
pub const DEFAULT_APPROVAL_EXPIRY_SECS: u64 = 86_400;

/// One problem in a policy document: `path: reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

/// Every problem found in a document (never empty when returned as an error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

/// A validated policy, compiled for cheap per-request lookups. Immutable; `Send + Sync`.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub(crate) doc: PolicyDocument,
    pub(crate) org_id: Arc<str>,
    pub(crate) tz: Tz,
    pub(crate) org_monthly: Option<Micros>,
    pub(crate) org_daily: Option<Micros>,
    /// Most specific host first: the first match is the catalogue entry of a request.
    pub(crate) endpoints: Vec<CompiledEndpoint>,
    pub(crate) projects: Vec<CompiledProject>,
    pub(crate) clients: Vec<CompiledClient>,
    /// SHA-256 of the API key → index into `clients`, sorted for binary search.
    pub(crate) keys: Vec<([u8; 32], usize)>,
    /// Identifies this compilation, so a [`crate::Pending`] is never finished against
    /// another policy (the indexes it holds would point elsewhere).
    pub(crate) fingerprint: u64,
}

#[derive(Debug)]
pub(crate) struct CompiledEndpoint {
    pub(crate) pattern: EndpointPattern,
    pub(crate) category: Arc<str>,
    pub(crate) pricing: EndpointPricing,
    pub(crate) cost_header: Option<Arc<str>>,
}

#[derive(Debug)]
pub(crate) struct CompiledProject {
    pub(crate) id: Arc<str>,
    pub(crate) monthly: Option<Micros>,
    pub(crate) daily: Option<Micros>,
    pub(crate) approval: Option<ApprovalRule>,
}

/// An enabled `approvalWorkflow`.
#[derive(Debug)]
pub(crate) struct ApprovalRule {
    pub(crate) approvers: Vec<String>,
    pub(crate) auto_approve_below: Option<Micros>,
    pub(crate) expires_after_secs: u64,
}

#[derive(Debug)]
pub(crate) struct CompiledClient {
    pub(crate) id: Arc<str>,
    pub(crate) project: usize,
    pub(crate) rules: Effective,
}

/// Who set a rule, for deny messages.
#[derive(Clone, Debug)]
pub(crate) enum Level {
    Org(Arc<str>),
    Project(Arc<str>),
    Client(Arc<str>),
}

/// A client's rules after org → project → client inheritance.
#[derive(Debug, Default)]
pub(crate) struct Effective {
    /// Every level that has an allow-list: the request must match one entry of each.
    pub(crate) allow_lists: Vec<(Level, Vec<EndpointPattern>)>,
    /// The union of all block-lists.
    pub(crate) blocked: Vec<(Level, EndpointPattern)>,
    /// The intersection of all `allowedCategories` (None: no level restricts categories).
    pub(crate) categories: Option<Vec<Arc<str>>>,
    /// The lowest `maxPerRequest` and who set it.
    pub(crate) max_per_request: Option<(Micros, Level)>,
    /// The lowest `requireApprovalAbove` (incl. the project's enabled approval workflow).
    pub(crate) require_approval_above: Option<Micros>,
    /// Every level's working hours: all must contain the request time.
    pub(crate) hours: Vec<(Level, WorkingHours)>,
}

/// Lower-case hex SHA-256 of an API key, as stored in `clients[].apiKeySha256`.
pub fn api_key_sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

pub(crate) fn api_key_sha256(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

// === impl CompiledPolicy ===

impl CompiledPolicy {
    /// Parses and validates a JSON document. A document that is not JSON at all gives one
    /// error at `$` with the line and column.
    pub fn compile(bytes: &[u8]) -> Result<CompiledPolicy, ValidationErrors> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            ValidationErrors(vec![FieldError {
                path: "$".into(),
                reason: format!("not valid JSON: {e}"),
            }])
        })?;
        CompiledPolicy::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Result<CompiledPolicy, ValidationErrors> {
        let mut w = Walker::default();
        let raw = w.document(v);
        let raw = match raw {
            Some(raw) if w.errors.is_empty() => raw,
            _ => return Err(ValidationErrors(w.errors)),
        };
        // The walk above is the schema; the typed model must agree with it. If it does not,
        // report where (a bug, but never a panic).
        let doc: PolicyDocument = serde_path_to_error::deserialize(v).map_err(|e| {
            ValidationErrors(vec![FieldError {
                path: e.path().to_string(),
                reason: e.inner().to_string(),
            }])
        })?;
        let fingerprint = fingerprint(v);
        Ok(raw.compile(doc, fingerprint))
    }

    /// Validates and compiles a typed document (e.g. one the sidecar built or edited).
    pub fn from_document(doc: &PolicyDocument) -> Result<CompiledPolicy, ValidationErrors> {
        let v = serde_json::to_value(doc).map_err(|e| {
            ValidationErrors(vec![FieldError {
                path: "$".into(),
                reason: e.to_string(),
            }])
        })?;
        CompiledPolicy::from_value(&v)
    }

    pub fn document(&self) -> &PolicyDocument {
        &self.doc
    }

    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    /// The org's timezone (budget periods).
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// Ids of the configured clients' projects, by client id (for hosts that show them).
    pub fn project_of_client(&self, client_id: &str) -> Option<&str> {
        let c = self.clients.iter().find(|c| &*c.id == client_id)?;
        self.projects.get(c.project).map(|p| &*p.id)
    }
}

fn fingerprint(v: &Value) -> u64 {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let d = Sha256::digest(&bytes);
    let mut first = [0u8; 8];
    for (dst, src) in first.iter_mut().zip(d.iter()) {
        *dst = *src;
    }
    u64::from_le_bytes(first)
}

// === impl FieldError ===

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

impl std::error::Error for FieldError {}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

// === impl Level ===

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Org(id) => write!(f, "org {id}"),
            Level::Project(id) => write!(f, "project {id}"),
            Level::Client(id) => write!(f, "client {id}"),
        }
    }
}

// === The walk: schema + every error ===

#[derive(Default)]
struct Walker {
    errors: Vec<FieldError>,
}

/// Rule fields of one level, as read.
#[derive(Default)]
struct RawRules {
    monthly: Option<Micros>,
    daily: Option<Micros>,
    allowed: Option<Vec<EndpointPattern>>,
    blocked: Vec<EndpointPattern>,
    categories: Option<Vec<String>>,
    max_per_request: Option<Micros>,
    require_approval_above: Option<Micros>,
    hours: Option<WorkingHours>,
}

struct RawEndpoint {
    pattern: EndpointPattern,
    category: String,
    pricing: EndpointPricing,
    cost_header: Option<String>,
}

struct RawProject {
    id: String,
    rules: RawRules,
    approval: Option<(ApprovalRule, Option<Micros>)>,
}

struct RawClient {
    id: String,
    project: Option<usize>,
    key: [u8; 32],
    rules: RawRules,
}

struct RawDocument {
    org_id: String,
    tz: Tz,
    global: RawRules,
    endpoints: Vec<RawEndpoint>,
    projects: Vec<RawProject>,
    clients: Vec<RawClient>,
}

const RULE_FIELDS: &[&str] = &[
    "allowedEndpoints",
    "blockedEndpoints",
    "allowedCategories",
    "maxPerRequest",
    "requireApprovalAbove",
    "workingHours",
];

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
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
    fn err(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            reason: reason.into(),
        });
    }

    /// `v` must be an object; every key not in `known` is reported.
    fn object<'v>(
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

    fn field<'v>(
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

    fn string<'v>(
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

    fn boolean(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Option<bool> {
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
    fn count(
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

    fn money(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Option<Micros> {
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
    fn strings<'v>(
        &mut self,
        m: &'v Map<String, Value>,
        path: &str,
        key: &str,
    ) -> Option<Vec<&'v str>> {
        let (items, ok) = self.strings_lenient(m, path, key)?;
        ok.then(|| items.into_iter().map(|(_, s)| s).collect())
    }

    /// The valid string elements with their indexes, and whether all elements were valid.
    fn strings_lenient<'v>(
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

    fn tags(&mut self, m: &Map<String, Value>, path: &str) {
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

    fn patterns(
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

    fn timezone(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Option<Tz> {
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

    fn working_hours(
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
    fn rules(&mut self, m: &Map<String, Value>, path: &str, budgets: bool, org_tz: Tz) -> RawRules {
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

    fn document(&mut self, v: &Value) -> Option<RawDocument> {
        let m = self.object(
            "",
            v,
            &[
                "orgId",
                "timezone",
                "globalPolicy",
                "alerts",
                "endpoints",
                "projects",
                "clients",
            ],
        )?;
        let org_id = self
            .string(m, "", "orgId", true)
            .unwrap_or_default()
            .to_string();
        let tz = self.timezone(m, "", "timezone").unwrap_or(Tz::UTC);

        let global = match m.get("globalPolicy") {
            Some(g) => self.global_policy(g, tz),
            None => RawRules::default(),
        };
        if let Some(a) = m.get("alerts") {
            self.alerts(a);
        }
        let endpoints = self.array(m, "endpoints", |w, p, v| w.endpoint(p, v));
        let projects = self.array(m, "projects", |w, p, v| w.project(p, v, tz));
        let mut clients = self.array(m, "clients", |w, p, v| w.client(p, v, tz));

        self.check_duplicates(&endpoints, "endpoints", "host", |e| {
            e.as_ref().map(|e| e.pattern.to_string())
        });
        self.check_duplicates(&projects, "projects", "id", |p| {
            p.as_ref().map(|p| p.id.clone())
        });
        self.check_duplicates(&clients, "clients", "id", |c| {
            c.as_ref().map(|c| c.0.id.clone())
        });
        self.check_duplicates(&clients, "clients", "apiKeySha256", |c| {
            c.as_ref().map(|c| hex::encode(c.0.key))
        });

        // Project budgets within the org's.
        for (i, p) in projects.iter().enumerate() {
            let Some(p) = p else { continue };
            for (key, mine, org) in [
                ("monthlyBudget", p.rules.monthly, global.monthly),
                ("dailyBudget", p.rules.daily, global.daily),
            ] {
                if let (Some(mine), Some(org)) = (mine, org) {
                    if mine > org {
                        self.err(
                            format!("projects[{i}].policy.{key}"),
                            format!("{mine} is above the org's {key} ({org})"),
                        );
                    }
                }
            }
        }
        // Clients name an existing project.
        for (i, c) in clients.iter_mut().enumerate() {
            let Some((c, project_id)) = c else { continue };
            let Some(pid) = project_id else { continue };
            let found = projects
                .iter()
                .position(|p| p.as_ref().is_some_and(|p| &p.id == pid));
            match found {
                Some(idx) => c.project = Some(idx),
                None => self.err(
                    format!("clients[{i}].projectId"),
                    format!("no project with id {pid:?}"),
                ),
            }
        }

        if !self.errors.is_empty() {
            return None;
        }
        Some(RawDocument {
            org_id,
            tz,
            global,
            endpoints: endpoints.into_iter().flatten().collect(),
            projects: projects.into_iter().flatten().collect(),
            clients: clients.into_iter().flatten().map(|(c, _)| c).collect(),
        })
    }

    fn array<T>(
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

    fn check_duplicates<T>(
        &mut self,
        items: &[Option<T>],
        list: &str,
        field: &str,
        key: impl Fn(&Option<T>) -> Option<String>,
    ) {
        let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
        for (i, item) in items.iter().enumerate() {
            let Some(k) = key(item) else { continue };
            match seen.get(&k) {
                Some(first) => {
                    self.err(
                        format!("{list}[{i}].{field}"),
                        format!("duplicate of {list}[{first}].{field} ({k:?})"),
                    );
                }
                None => {
                    seen.insert(k, i);
                }
            }
        }
    }

    fn global_policy(&mut self, v: &Value, tz: Tz) -> RawRules {
        let path = "globalPolicy";
        let mut known = vec!["monthlyBudget", "dailyBudget", "complianceMode", "auditLog"];
        known.extend_from_slice(RULE_FIELDS);
        let Some(m) = self.object(path, v, &known) else {
            return RawRules::default();
        };
        let rules = self.rules(m, path, true, tz);
        if let Some(mode) = self.string(m, path, "complianceMode", false) {
            if !mode
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            {
                self.err(
                    join(path, "complianceMode"),
                    format!("{mode:?} is not a compliance mode name (upper-case letters, digits and _, e.g. \"EU_AI_ACT\")"),
                );
            }
        }
        if let Some(a) = m.get("auditLog") {
            let p = join(path, "auditLog");
            if let Some(am) = self.object(&p, a, &["enabled", "retention"]) {
                self.boolean(am, &p, "enabled");
                self.count(am, &p, "retention", true);
            }
        }
        rules
    }

    fn alerts(&mut self, v: &Value) {
        let path = "alerts";
        let Some(m) = self.object(
            path,
            v,
            &[
                "channels",
                "recipients",
                "slackWebhookUrl",
                "webhookUrl",
                "triggers",
            ],
        ) else {
            return;
        };
        if let Some(channels) = self.strings(m, path, "channels") {
            for (i, c) in channels.iter().enumerate() {
                if !matches!(*c, "email" | "slack" | "webhook") {
                    self.err(
                        format!("alerts.channels[{i}]"),
                        format!("{c:?} is not a channel; use email, slack or webhook"),
                    );
                }
            }
        }
        self.strings(m, path, "recipients");
        for key in ["slackWebhookUrl", "webhookUrl"] {
            if let Some(url) = self.string(m, path, key, false) {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    self.err(
                        join(path, key),
                        format!("{url:?} is not an http:// or https:// URL"),
                    );
                }
            }
        }
        if let Some(t) = m.get("triggers") {
            let p = "alerts.triggers";
            if let Some(tm) = self.object(
                p,
                t,
                &[
                    "budgetThreshold",
                    "anomalyDetection",
                    "policyViolation",
                    "highCostRequest",
                ],
            ) {
                if let Some(b) = tm.get("budgetThreshold") {
                    match b.as_f64() {
                        Some(x) if (0.0..=1.0).contains(&x) => {}
                        _ => self.err(
                            join(p, "budgetThreshold"),
                            format!("{b} is not a fraction between 0 and 1 (0.8 = alert at 80% of a budget)"),
                        ),
                    }
                }
                self.boolean(tm, p, "anomalyDetection");
                self.boolean(tm, p, "policyViolation");
                self.money(tm, p, "highCostRequest");
            }
        }
    }

    fn endpoint(&mut self, path: &str, v: &Value) -> Option<RawEndpoint> {
        let m = self.object(path, v, &["host", "category", "pricing", "costHeader"])?;
        let host = self.string(m, path, "host", true);
        let pattern = host.and_then(|h| match EndpointPattern::parse(h) {
            Ok(p) if p.has_path() => {
                self.err(
                    join(path, "host"),
                    format!("{h:?}: a catalogue entry is a host without a path"),
                );
                None
            }
            Ok(p) => Some(p),
            Err(e) => {
                self.err(join(path, "host"), e.to_string());
                None
            }
        });
        let category = self.string(m, path, "category", true);
        let pricing = match m.get("pricing") {
            Some(p) => self.pricing(&join(path, "pricing"), p),
            None => Some(EndpointPricing::Free),
        };
        let cost_header = self.string(m, path, "costHeader", false).and_then(|h| {
            if h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                Some(h.to_ascii_lowercase())
            } else {
                self.err(
                    join(path, "costHeader"),
                    format!("{h:?} is not an HTTP header name"),
                );
                None
            }
        });
        Some(RawEndpoint {
            pattern: pattern?,
            category: category?.to_string(),
            pricing: pricing?,
            cost_header,
        })
    }

    fn pricing(&mut self, path: &str, v: &Value) -> Option<EndpointPricing> {
        let m = self.object(
            path,
            v,
            &["perRequest", "models", "defaultModel", "defaultMaxTokens"],
        )?;
        let per_request = self.money(m, path, "perRequest");
        let default_model = self.string(m, path, "defaultModel", false);
        let default_max_tokens = self.count(m, path, "defaultMaxTokens", true);
        let models = m
            .get("models")
            .map(|mv| self.models(&join(path, "models"), mv));
        match (m.contains_key("perRequest"), models) {
            (true, Some(_)) => {
                self.err(path, "use either perRequest or models, not both");
                None
            }
            (true, None) => {
                for key in ["defaultModel", "defaultMaxTokens"] {
                    if m.contains_key(key) {
                        self.err(join(path, key), "only applies to pricing by models");
                    }
                }
                per_request.map(EndpointPricing::PerRequest)
            }
            (false, Some(models)) => {
                let models = models?;
                if let Some(d) = default_model {
                    if !models.iter().any(|(name, _)| name == d) {
                        self.err(
                            join(path, "defaultModel"),
                            format!("{d:?} is not one of the models"),
                        );
                    }
                }
                Some(EndpointPricing::Tokens(TokenPricing::new(
                    models,
                    default_model.map(str::to_string),
                    default_max_tokens,
                )))
            }
            (false, None) => {
                self.err(
                    path,
                    "needs perRequest or models (omit pricing for a free endpoint)",
                );
                None
            }
        }
    }

    fn models(&mut self, path: &str, v: &Value) -> Option<Vec<(String, ModelPrice)>> {
        let Some(m) = v.as_object() else {
            self.err(
                path,
                format!(
                    "expected an object of model name → prices, found {}",
                    type_name(v)
                ),
            );
            return None;
        };
        if m.is_empty() {
            self.err(path, "must name at least one model");
            return None;
        }
        let mut out = Vec::with_capacity(m.len());
        let mut ok = true;
        for (name, pv) in m {
            let p = join(path, name);
            let Some(pm) = self.object(&p, pv, &["inputPer1k", "outputPer1k"]) else {
                ok = false;
                continue;
            };
            for key in ["inputPer1k", "outputPer1k"] {
                if !pm.contains_key(key) {
                    self.err(join(&p, key), "is required");
                }
            }
            match (
                self.money(pm, &p, "inputPer1k"),
                self.money(pm, &p, "outputPer1k"),
            ) {
                (Some(i), Some(o)) => out.push((
                    name.clone(),
                    ModelPrice {
                        input_per_1k: i,
                        output_per_1k: o,
                    },
                )),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn project(&mut self, path: &str, v: &Value, tz: Tz) -> Option<RawProject> {
        let m = self.object(path, v, &["id", "name", "policy", "cache", "tags"])?;
        let id = self.string(m, path, "id", true);
        self.string(m, path, "name", false);
        self.tags(m, path);
        if let Some(c) = m.get("cache") {
            let p = join(path, "cache");
            if let Some(cm) = self.object(&p, c, &["enabled", "sharedCache", "defaultTTL"]) {
                self.boolean(cm, &p, "enabled");
                self.boolean(cm, &p, "sharedCache");
                self.count(cm, &p, "defaultTTL", true);
            }
        }
        let (rules, approval) = match m.get("policy") {
            Some(pv) => {
                let p = join(path, "policy");
                let mut known = vec!["monthlyBudget", "dailyBudget", "approvalWorkflow"];
                known.extend_from_slice(RULE_FIELDS);
                match self.object(&p, pv, &known) {
                    Some(pm) => {
                        let rules = self.rules(pm, &p, true, tz);
                        let approval = pm
                            .get("approvalWorkflow")
                            .and_then(|a| self.approval(&join(&p, "approvalWorkflow"), a));
                        (rules, approval)
                    }
                    None => (RawRules::default(), None),
                }
            }
            None => (RawRules::default(), None),
        };
        Some(RawProject {
            id: id?.to_string(),
            rules,
            approval,
        })
    }

    /// `Some` only for an enabled workflow: (rule, its requireApprovalAbove).
    fn approval(&mut self, path: &str, v: &Value) -> Option<(ApprovalRule, Option<Micros>)> {
        let m = self.object(
            path,
            v,
            &[
                "enabled",
                "approvers",
                "autoApproveBelow",
                "requireApprovalAbove",
                "expiresAfter",
            ],
        )?;
        let enabled = self.boolean(m, path, "enabled").unwrap_or(false);
        let approvers = self.strings(m, path, "approvers").unwrap_or_default();
        let auto = self.money(m, path, "autoApproveBelow");
        let above = self.money(m, path, "requireApprovalAbove");
        let expires = self.count(m, path, "expiresAfter", true);
        if enabled && approvers.is_empty() {
            self.err(
                join(path, "approvers"),
                "an enabled approval workflow needs at least one approver",
            );
        }
        enabled.then(|| {
            (
                ApprovalRule {
                    approvers: approvers.into_iter().map(str::to_string).collect(),
                    auto_approve_below: auto,
                    expires_after_secs: expires.unwrap_or(DEFAULT_APPROVAL_EXPIRY_SECS),
                },
                above,
            )
        })
    }

    /// The client and the project id it names (resolved after all projects are read).
    fn client(&mut self, path: &str, v: &Value, tz: Tz) -> Option<(RawClient, Option<String>)> {
        let m = self.object(
            path,
            v,
            &[
                "id",
                "projectId",
                "apiKeySha256",
                "name",
                "additionalRestrictions",
                "tags",
            ],
        )?;
        let id = self.string(m, path, "id", true);
        let project_id = self.string(m, path, "projectId", true).map(str::to_string);
        let key = self.string(m, path, "apiKeySha256", true).and_then(|h| {
            let mut out = [0u8; 32];
            match hex::decode_to_slice(h, &mut out) {
                Ok(()) if h.len() == 64 => Some(out),
                _ => {
                    self.err(
                        join(path, "apiKeySha256"),
                        "is not a SHA-256 in hex (64 characters 0-9a-f): hash the API key, never store it",
                    );
                    None
                }
            }
        });
        self.string(m, path, "name", false);
        self.tags(m, path);
        let rules = match m.get("additionalRestrictions") {
            Some(rv) => {
                let p = join(path, "additionalRestrictions");
                match self.object(&p, rv, RULE_FIELDS) {
                    Some(rm) => self.rules(rm, &p, false, tz),
                    None => RawRules::default(),
                }
            }
            None => RawRules::default(),
        };
        Some((
            RawClient {
                id: id?.to_string(),
                project: None,
                key: key?,
                rules,
            },
            project_id,
        ))
    }
}

// === compile: effective rules ===

fn min_opt(a: Option<Micros>, b: Option<Micros>) -> Option<Micros> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

impl RawDocument {
    fn compile(self, doc: PolicyDocument, fingerprint: u64) -> CompiledPolicy {
        let org_id: Arc<str> = Arc::from(self.org_id.as_str());
        let mut endpoints: Vec<CompiledEndpoint> = self
            .endpoints
            .into_iter()
            .map(|e| CompiledEndpoint {
                pattern: e.pattern,
                category: Arc::from(e.category.as_str()),
                pricing: e.pricing,
                cost_header: e.cost_header.map(|h| Arc::from(h.as_str())),
            })
            .collect();
        endpoints.sort_by_key(|e| std::cmp::Reverse(e.pattern.specificity()));

        let projects: Vec<CompiledProject> = self
            .projects
            .iter()
            .map(|p| CompiledProject {
                id: Arc::from(p.id.as_str()),
                monthly: p.rules.monthly,
                daily: p.rules.daily,
                approval: p.approval.as_ref().map(|(a, _)| ApprovalRule {
                    approvers: a.approvers.clone(),
                    auto_approve_below: a.auto_approve_below,
                    expires_after_secs: a.expires_after_secs,
                }),
            })
            .collect();

        let mut clients = Vec::with_capacity(self.clients.len());
        let mut keys = Vec::with_capacity(self.clients.len());
        for c in self.clients {
            let Some(pi) = c.project else { continue };
            let (Some(raw_p), Some(p)) = (self.projects.get(pi), projects.get(pi)) else {
                continue;
            };
            let client_id: Arc<str> = Arc::from(c.id.as_str());
            let levels = [
                (Level::Org(org_id.clone()), &self.global, None),
                (
                    Level::Project(p.id.clone()),
                    &raw_p.rules,
                    raw_p.approval.as_ref().map(|(_, above)| *above),
                ),
                (Level::Client(client_id.clone()), &c.rules, None),
            ];
            let mut eff = Effective::default();
            for (level, rules, workflow_above) in levels {
                if let Some(list) = &rules.allowed {
                    eff.allow_lists.push((level.clone(), list.clone()));
                }
                for b in &rules.blocked {
                    eff.blocked.push((level.clone(), b.clone()));
                }
                if let Some(cats) = &rules.categories {
                    eff.categories = Some(match eff.categories.take() {
                        None => cats.iter().map(|s| Arc::from(s.as_str())).collect(),
                        Some(prev) => prev
                            .into_iter()
                            .filter(|p| cats.iter().any(|c| c == &**p))
                            .collect(),
                    });
                }
                if let Some(m) = rules.max_per_request {
                    if eff.max_per_request.as_ref().is_none_or(|(cur, _)| m < *cur) {
                        eff.max_per_request = Some((m, level.clone()));
                    }
                }
                eff.require_approval_above =
                    min_opt(eff.require_approval_above, rules.require_approval_above);
                eff.require_approval_above =
                    min_opt(eff.require_approval_above, workflow_above.flatten());
                if let Some(h) = &rules.hours {
                    eff.hours.push((level, h.clone()));
                }
            }
            keys.push((c.key, clients.len()));
            clients.push(CompiledClient {
                id: client_id,
                project: pi,
                rules: eff,
            });
        }
        keys.sort_by_key(|k| k.0);

        CompiledPolicy {
            doc,
            org_id,
            tz: self.tz,
            org_monthly: self.global.monthly,
            org_daily: self.global.daily,
            endpoints,
            projects,
            clients,
            keys,
            fingerprint,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
