//! The filter's `configuration` JSON (README.md#configuration-reference), parsed once per `on_configure`.
//!
//! Parsing walks a `serde_json::Value` by hand instead of `#[derive(Deserialize)]` so that one
//! pass reports *every* problem as `path: reason` (serde stops at the first), which is what an
//! operator fixing an Envoy YAML wants to see in the log.

use std::fmt;

use pag0_policy::CompiledPolicy;
use serde_json::{Map, Value};

pub const DEFAULT_API_KEY_HEADER: &str = "x-pag0-api-key";
pub const DEFAULT_MAX_BODY_BYTES: usize = 1_048_576;

pub struct PluginConfig {
    /// The inline document (standalone mode).
    pub policy: PolicySlot,
    /// Managed mode: policy and budget leases come from the sidecar (see `managed.rs`).
    /// With `policy` too, the inline document is the bootstrap until the first sync.
    pub sidecar: Option<SidecarConfig>,
    /// Lower-cased: Envoy hands header names to the filter lower-cased.
    pub api_key_header: String,
    pub max_body_bytes: usize,
    /// `cache`: bounds of the response cache (`cache.rs`).
    pub cache: crate::cache::CacheConfig,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarConfig {
    pub cluster: String,
    pub authority: String,
    pub sync_interval_ms: u64,
    pub timeout_ms: u64,
    pub failure_mode: FailureMode,
    /// The bearer token of `POST /v1/sync` (the sidecar's `--sync-secret`).
    pub sync_secret: Option<String>,
    /// Most decision events waiting in shared data while the sidecar is unreachable; past it
    /// the oldest are dropped into a counted gap record (`managed/decisions.rs`).
    pub decision_queue_max: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureMode {
    /// Sidecar unreachable: refuse with `CONTROL_PLANE_UNAVAILABLE` (the default: a spend guard
    /// that opens when its control plane is down guards nothing).
    Closed,
    /// Sidecar unreachable: keep deciding on the last policy and local counters.
    Open,
}

/// One problem in the configuration, located by a JSON path (`policy.projects[2].id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The configuration is not valid; every error found, in document order.
    Invalid(Vec<FieldError>),
}

/// A compiled policy held by the configuration or by `root::Shared` (`None`: managed mode
/// before the first policy). It is dropped in one place, [`drop_policy`]: left to the compiler,
/// the cdylib (which drops `Shared` from its contexts) would get a copy of the policy's large
/// drop code of its own, and the .wasm ~13 kB more.
pub struct PolicySlot(Option<Box<CompiledPolicy>>);

impl PolicySlot {
    pub fn new(policy: Option<Box<CompiledPolicy>>) -> Self {
        PolicySlot(policy)
    }
}

impl std::ops::Deref for PolicySlot {
    type Target = Option<Box<CompiledPolicy>>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for PolicySlot {
    // Inlined, so the compiler sees the slot empty after it and drops nothing more.
    #[inline(always)]
    fn drop(&mut self) {
        drop_policy(self.0.take().map(|p| *p));
    }
}

/// Drops a policy: the one place the engine does (see [`PolicySlot`]).
#[inline(never)]
fn drop_policy(policy: Option<CompiledPolicy>) {
    drop(policy);
}

/// Parses and validates the plugin configuration, compiling the inline policy.
pub fn parse(bytes: &[u8]) -> Result<PluginConfig, ConfigError> {
    let root: Value = serde_json::from_slice(bytes).map_err(|e| {
        ConfigError::Invalid(vec![FieldError::new("", format!("not valid JSON: {e}"))])
    })?;
    let Some(obj) = root.as_object() else {
        return Err(ConfigError::Invalid(vec![FieldError::new(
            "",
            "must be a JSON object",
        )]));
    };

    let mut errors = Vec::new();
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "policy" | "sidecar" | "apiKeyHeader" | "maxBodyBytes" | "cache"
        ) {
            errors.push(FieldError::new(key, "unknown field"));
        }
    }

    let api_key_header = match obj.get("apiKeyHeader") {
        None => DEFAULT_API_KEY_HEADER.to_string(),
        Some(v) => header_name(v).unwrap_or_else(|reason| {
            errors.push(FieldError::new("apiKeyHeader", reason));
            String::new()
        }),
    };
    let max_body_bytes = match obj.get("maxBodyBytes") {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(v) => positive_usize(v).unwrap_or_else(|reason| {
            errors.push(FieldError::new("maxBodyBytes", reason));
            0
        }),
    };
    let cache = crate::cache::parse_config(obj.get("cache"), &mut errors);
    let sidecar = obj.get("sidecar").and_then(|v| sidecar(v, &mut errors));
    let policy = obj
        .get("policy")
        .and_then(|v| match CompiledPolicy::from_value(v) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.extend(
                    e.0.iter()
                        .map(|fe| FieldError::nested("policy", &fe.path, &fe.reason)),
                );
                None
            }
        });
    if !obj.contains_key("policy") && !obj.contains_key("sidecar") {
        errors.push(FieldError::new(
            "",
            "needs \"policy\" (standalone mode) or \"sidecar\" (managed mode)",
        ));
    }

    if !errors.is_empty() {
        drop_policy(policy);
        return Err(ConfigError::Invalid(errors));
    }
    Ok(PluginConfig {
        policy: PolicySlot::new(policy.map(Box::new)),
        sidecar,
        api_key_header,
        max_body_bytes,
        cache,
    })
}

fn sidecar(v: &Value, errors: &mut Vec<FieldError>) -> Option<SidecarConfig> {
    let Some(obj) = v.as_object() else {
        errors.push(FieldError::new("sidecar", "must be an object"));
        return None;
    };
    let before = errors.len();
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "cluster"
                | "authority"
                | "syncIntervalMs"
                | "timeoutMs"
                | "failureMode"
                | "syncSecret"
                | "decisionQueueMax"
        ) {
            errors.push(FieldError::new(format!("sidecar.{key}"), "unknown field"));
        }
    }
    let cluster = match obj.get("cluster") {
        None => {
            errors.push(FieldError::new(
                "sidecar.cluster",
                "required (the Envoy cluster of the pag0 sidecar)",
            ));
            String::new()
        }
        Some(v) => non_empty_string(v).unwrap_or_else(|r| {
            errors.push(FieldError::new("sidecar.cluster", r));
            String::new()
        }),
    };
    let authority = opt_field(obj, "authority", errors, non_empty_string)
        .unwrap_or_else(|| "pag0-sidecar".to_string());
    let sync_interval_ms = opt_field(obj, "syncIntervalMs", errors, positive_u64).unwrap_or(1000);
    let timeout_ms = opt_field(obj, "timeoutMs", errors, positive_u64).unwrap_or(200);
    let failure_mode = opt_field(obj, "failureMode", errors, |v| match v.as_str() {
        Some("closed") => Ok(FailureMode::Closed),
        Some("open") => Ok(FailureMode::Open),
        _ => Err("must be \"closed\" or \"open\"".to_string()),
    })
    .unwrap_or(FailureMode::Closed);
    let sync_secret = opt_field(obj, "syncSecret", errors, non_empty_string);
    let decision_queue_max = opt_field(obj, "decisionQueueMax", errors, |v| match v.as_u64() {
        Some(n @ 1..=MAX_DECISION_QUEUE) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => Err(format!(
            "must be an integer from 1 to {MAX_DECISION_QUEUE} (decision events kept while \
                 the sidecar is unreachable)"
        )),
    })
    .unwrap_or(crate::managed::decisions::DEFAULT_QUEUE_MAX);

    (errors.len() == before).then_some(SidecarConfig {
        cluster,
        authority,
        sync_interval_ms,
        timeout_ms,
        failure_mode,
        sync_secret,
        decision_queue_max,
    })
}

/// `decisionQueueMax` at most: ~400 MB of shared data at ~400 bytes an event.
const MAX_DECISION_QUEUE: u64 = 1_000_000;

/// An optional field of `sidecar`; a present but bad value records an error.
fn opt_field<T>(
    obj: &Map<String, Value>,
    key: &str,
    errors: &mut Vec<FieldError>,
    parse: impl Fn(&Value) -> Result<T, String>,
) -> Option<T> {
    let v = obj.get(key)?;
    parse(v)
        .map_err(|r| errors.push(FieldError::new(format!("sidecar.{key}"), r)))
        .ok()
}

fn non_empty_string(v: &Value) -> Result<String, String> {
    match v.as_str() {
        Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
        _ => Err("must be a non-empty string".to_string()),
    }
}

fn positive_u64(v: &Value) -> Result<u64, String> {
    match v.as_u64() {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!("{v} is not a positive integer")),
    }
}

fn positive_usize(v: &Value) -> Result<usize, String> {
    positive_u64(v).and_then(|n| usize::try_from(n).map_err(|_| format!("{n} is too large")))
}

/// An HTTP header name (RFC 9110 token), stored lower-cased to compare with Envoy's names.
fn header_name(v: &Value) -> Result<String, String> {
    let s = v
        .as_str()
        .ok_or_else(|| "must be a string (a header name)".to_string())?;
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if s.is_empty() || !s.bytes().all(is_tchar) {
        return Err(format!("{s:?} is not a valid header name"));
    }
    Ok(s.to_ascii_lowercase())
}

// === impl FieldError ===

impl FieldError {
    pub(crate) fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// An error of the policy document, re-rooted under the config's `policy` field.
    fn nested(prefix: &str, path: &str, reason: &str) -> Self {
        // The policy names its root `$` (`$`, `$.projects[0]`) or leaves it implicit.
        let rest = path.strip_prefix('$').unwrap_or(path);
        let rest = rest.strip_prefix('.').unwrap_or(rest);
        let path = if rest.is_empty() {
            prefix.to_string()
        } else if rest.starts_with('[') {
            format!("{prefix}{rest}")
        } else {
            format!("{prefix}.{rest}")
        };
        FieldError {
            path,
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "(configuration): {}", self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

// === impl ConfigError ===

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid(errors) => {
                write!(f, "invalid pag0 configuration ({} error(s)):", errors.len())?;
                for e in errors {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
