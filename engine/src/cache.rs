//! The response cache (README.md#response-cache, §5 `x-pag0-cache`): complete 2xx responses kept in proxy-wasm
//! shared data, so a repeated identical call is answered by Envoy at no cost.
//!
//! **Layout: a fixed number of slots.** Envoy's shared data has no delete: a key once written
//! stays for the life of the process. So entries are not stored under their cache key (that
//! would grow without bound) but in one of `slots = maxBytes / maxEntryBytes` fixed keys
//! `pag0/c/<slot>`, the slot picked from the cache key's digest (a direct-mapped cache). Every
//! value is at most `maxEntryBytes`, so the cache never holds more than `maxBytes` however many
//! distinct responses pass. Eviction is replacement: a new entry overwrites whatever its slot
//! held (an expired entry, or a live one whose key maps to the same slot).
//!
//! **No CAS needed.** Each value is a whole, self-describing entry (its full key digest, expiry,
//! status, headers, body, cost) written in one `set`: two workers storing into one slot at once
//! leave one complete entry or the other, never a mix. A lookup serves an entry only if its
//! stored digest equals the request's digest and it has not expired by the host clock.
//!
//! **Key.** SHA-256 over (length-prefixed): the pool, method, `:authority` (lower-cased),
//! `:path` (path and query), the SHA-256 of the request body, and the values of
//! [`VARY_HEADERS`]. The pool is `shared` for projects with `sharedCache: true`, `p/<projectId>`
//! otherwise, so a project without `sharedCache` only ever finds its own entries.

use std::cell::RefCell;
use std::rc::Rc;

use crate::host::{MapType, MetricType};
use pag0_policy::Micros;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::FieldError;
use crate::counters::{HostError, SharedStore};
use crate::host::Host;
use crate::metrics::Increments;

pub mod savings;

/// Prefix of every cache slot key.
pub const KEY_PREFIX: &str = "pag0/c/";

pub const DEFAULT_MAX_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 256 * 1024;
/// TTL when a project enables the cache without `defaultTTL`.
pub const DEFAULT_TTL_SECS: u64 = 300;

/// Request headers that change the upstream's answer, so they are part of the key (values
/// compared exactly; a missing header differs from an empty one). Credentials are in: an
/// answer that depends on who asks (`GET /v1/files`) is never served to another credential.
/// `x-pag0-*` headers (and the pag0 API key) are stripped before the key is computed.
pub const VARY_HEADERS: [&str; 14] = [
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "content-type",
    "accept",
    "accept-encoding",
    "accept-language",
    "openai-organization",
    "openai-project",
    "openai-beta",
    "anthropic-version",
    "anthropic-beta",
    "x-model",
];

/// Response headers never stored: hop-by-hop, length (the local reply sets its own), pag0's
/// own (set again on a hit), and cookies (a response with `set-cookie` is not stored at all).
const SKIPPED_RESPONSE_HEADERS: [&str; 9] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "proxy-connection",
    "te",
    "trailer",
    "date",
];

/// `cache` in the plugin configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bound on the bytes of all entries together.
    pub max_bytes: usize,
    /// Bound on one stored entry (key, headers, body); larger responses are not stored.
    pub max_entry_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
        }
    }
}

impl CacheConfig {
    /// How many slots fit the bound (at least one).
    pub fn slots(&self) -> u64 {
        let n = self.max_bytes / self.max_entry_bytes.max(1);
        u64::try_from(n.max(1)).unwrap_or(u64::MAX)
    }

    fn slot_key(&self, key: &CacheKey) -> String {
        let mut first = [0u8; 8];
        first.copy_from_slice(key.0.get(..8).unwrap_or(&[0; 8]));
        let slot = u64::from_le_bytes(first) % self.slots();
        format!("{KEY_PREFIX}{slot}")
    }
}

/// Which entries a project may read and write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pool {
    Shared,
    Project(String),
}

impl Pool {
    pub fn name(&self) -> String {
        match self {
            Pool::Shared => "shared".to_string(),
            Pool::Project(p) => format!("p/{p}"),
        }
    }
}

/// A project's cache settings, from its policy `cache` block (`None` when disabled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectCache {
    pub pool: Pool,
    pub ttl_secs: u64,
}

impl ProjectCache {
    pub fn of(policy: &pag0_policy::CompiledPolicy, project_id: &str) -> Option<ProjectCache> {
        let project = policy
            .document()
            .projects
            .iter()
            .find(|p| p.id == project_id)?;
        let c = project.cache.as_ref().filter(|c| c.enabled)?;
        Some(ProjectCache {
            pool: if c.shared_cache {
                Pool::Shared
            } else {
                Pool::Project(project_id.to_string())
            },
            ttl_secs: c.default_ttl.unwrap_or(DEFAULT_TTL_SECS),
        })
    }
}

/// SHA-256 digest identifying one cacheable request in one pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheKey(pub [u8; 32]);

/// What identifies a request for the cache.
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub body: &'a [u8],
    /// `(name, value)` for each of [`VARY_HEADERS`] (value `None` when absent).
    pub vary: Vec<(&'static str, Option<String>)>,
}

impl CacheKey {
    pub fn new(pool: &Pool, req: &RequestParts<'_>) -> CacheKey {
        let mut h = Sha256::new();
        let mut field = |b: &[u8]| {
            h.update(u64::try_from(b.len()).unwrap_or(u64::MAX).to_le_bytes());
            h.update(b);
        };
        field(pool.name().as_bytes());
        field(req.method.as_bytes());
        field(req.authority.to_ascii_lowercase().as_bytes());
        field(req.path.as_bytes());
        field(&Sha256::digest(req.body));
        for (name, value) in &req.vary {
            field(name.as_bytes());
            match value {
                None => field(b"\x00absent"),
                Some(v) => field(format!("={v}").as_bytes()),
            }
        }
        CacheKey(h.finalize().into())
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The request as the cache sees it, read in the request-headers callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub project_id: String,
    pub project: ProjectCache,
    pub method: String,
    pub authority: String,
    pub path: String,
    /// No `content-length` (or 0) and no `transfer-encoding`: the headers were the whole
    /// request.
    pub no_body: bool,
    /// `cache-control: no-store`: neither served from nor stored into the cache.
    pub no_store: bool,
    /// `cache-control: no-cache` (or `pragma: no-cache`): not served from the cache; the fresh
    /// answer is stored.
    pub no_cache: bool,
    pub vary: Vec<(&'static str, Option<String>)>,
}

impl RequestHead {
    /// `None` unless the project has the cache on and the method is GET or POST.
    /// `line`: method, authority, path (read before `x-pag0-*` headers were stripped).
    pub fn capture(
        host: &dyn Host,
        policy: &pag0_policy::CompiledPolicy,
        project_id: &str,
        line: [&str; 3],
    ) -> Option<RequestHead> {
        let [method, authority, path] = line;
        if method != "GET" && method != "POST" {
            return None;
        }
        let project = ProjectCache::of(policy, project_id)?;
        let header = |n: &str| host.header(MapType::HttpRequestHeaders, n);
        let cc = header("cache-control");
        let no_body = header("transfer-encoding").is_none()
            && header("content-length").is_none_or(|l| l.trim() == "0");
        Some(RequestHead {
            project_id: project_id.to_string(),
            project,
            method: method.to_string(),
            authority: authority.to_string(),
            path: path.to_string(),
            no_body,
            no_store: directive(cc.as_deref(), "no-store"),
            no_cache: directive(cc.as_deref(), "no-cache")
                || header("pragma").is_some_and(|p| p.trim().eq_ignore_ascii_case("no-cache")),
            vary: VARY_HEADERS.iter().map(|&n| (n, header(n))).collect(),
        })
    }

    /// The key, given the request body (`None`: pag0 did not read it).
    pub fn key(&self, body: Option<&[u8]>) -> Option<CacheKey> {
        let body = match body {
            Some(b) => b,
            None if self.no_body => &[],
            None => return None,
        };
        Some(CacheKey::new(
            &self.project.pool,
            &RequestParts {
                method: &self.method,
                authority: &self.authority,
                path: &self.path,
                body,
                vary: self.vary.clone(),
            },
        ))
    }
}

/// One stored response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: CacheKey,
    /// Unix milliseconds by the host clock; served only while `now < expires_at_ms`.
    pub expires_at_ms: u64,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// What the upstream charged for this answer (micro-USD): a hit saves this much.
    pub cost_micros: u64,
}

const MAGIC: &[u8; 4] = b"P0C1";

impl Entry {
    /// `MAGIC, key[32], expires u64, cost u64, status u16, n u16, (name_len u16, name,
    /// value_len u32, value)*n, body` — little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.key.0);
        out.extend_from_slice(&self.expires_at_ms.to_le_bytes());
        out.extend_from_slice(&self.cost_micros.to_le_bytes());
        out.extend_from_slice(&self.status.to_le_bytes());
        let n = u16::try_from(self.headers.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        for (name, value) in self.headers.iter().take(usize::from(n)) {
            let nl = u16::try_from(name.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&nl.to_le_bytes());
            out.extend_from_slice(name.as_bytes().get(..usize::from(nl)).unwrap_or_default());
            let vl = u32::try_from(value.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&vl.to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(&self.body);
        out
    }

    pub fn encoded_len(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| 6usize.saturating_add(n.len()).saturating_add(v.len()))
            .sum();
        (4 + 32 + 8 + 8 + 2 + 2usize)
            .saturating_add(headers)
            .saturating_add(self.body.len())
    }

    /// `None` for anything that is not a well-formed entry.
    pub fn decode(b: &[u8]) -> Option<Entry> {
        let mut r = Reader(b);
        if r.take(4)? != MAGIC {
            return None;
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(r.take(32)?);
        let expires_at_ms = r.u64()?;
        let cost_micros = r.u64()?;
        let status = r.u16()?;
        let n = r.u16()?;
        let mut headers = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let nl = r.u16()?;
            let name = std::str::from_utf8(r.take(usize::from(nl))?).ok()?;
            let vl = usize::try_from(r.u32()?).ok()?;
            let value = std::str::from_utf8(r.take(vl)?).ok()?;
            headers.push((name.to_string(), value.to_string()));
        }
        Some(Entry {
            key: CacheKey(key),
            expires_at_ms,
            status,
            headers,
            body: r.0.to_vec(),
            cost_micros,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<u16> {
        let mut a = [0u8; 2];
        a.copy_from_slice(self.take(2)?);
        Some(u16::from_le_bytes(a))
    }
    fn u32(&mut self) -> Option<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Some(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Option<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Some(u64::from_le_bytes(a))
    }
}

/// The live entry for `key`, if its slot holds one: same digest, not expired at `now_ms`.
pub fn lookup<S: SharedStore + ?Sized>(
    store: &S,
    cfg: &CacheConfig,
    key: &CacheKey,
    now_ms: u64,
) -> Result<Option<Entry>, HostError> {
    let (value, _) = store.get(&cfg.slot_key(key))?;
    let Some(value) = value else {
        return Ok(None);
    };
    // Cheap rejection before decoding the whole value: magic and digest come first.
    if value.get(..4) != Some(MAGIC.as_slice()) || value.get(4..36) != Some(key.0.as_slice()) {
        return Ok(None);
    }
    Ok(Entry::decode(&value).filter(|e| now_ms < e.expires_at_ms))
}

/// What a store did to the bytes held in shared data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Bytes the slot held before (0 when empty).
    pub replaced_bytes: usize,
    pub stored_bytes: usize,
}

/// Writes `entry` into its slot (replacing whatever was there). `Ok(None)` when the entry is
/// over `maxEntryBytes` and was not stored.
pub fn store<S: SharedStore + ?Sized>(
    store: &S,
    cfg: &CacheConfig,
    entry: &Entry,
) -> Result<Option<Stored>, HostError> {
    if entry.encoded_len() > cfg.max_entry_bytes {
        return Ok(None);
    }
    let bytes = entry.encode();
    let slot = cfg.slot_key(&entry.key);
    let (old, _) = store.get(&slot)?;
    match store.set(&slot, &bytes, None) {
        Ok(()) => Ok(Some(Stored {
            replaced_bytes: old.map_or(0, |o| o.len()),
            stored_bytes: bytes.len(),
        })),
        Err(crate::counters::SetError::Host(h)) => Err(h),
        // Unconditional sets never conflict; treat one like a lost race (nothing stored).
        Err(crate::counters::SetError::CasMismatch) => Ok(None),
    }
}

/// Whether a `cache-control` value forbids using a stored answer (`no-store`, `no-cache`) —
/// on a request: skip the lookup; `no-store` on a request also skips storing.
pub fn directive(cache_control: Option<&str>, name: &str) -> bool {
    cache_control.is_some_and(|v| {
        v.split(',').any(|d| {
            let d = d.trim();
            let d = d.split('=').next().unwrap_or("").trim();
            d.eq_ignore_ascii_case(name)
        })
    })
}

/// `max-age` / `s-maxage` seconds from a response `cache-control` (the smaller one wins).
pub fn max_age(cache_control: Option<&str>) -> Option<u64> {
    let v = cache_control?;
    v.split(',')
        .filter_map(|d| {
            let (k, val) = d.trim().split_once('=')?;
            let k = k.trim();
            if k.eq_ignore_ascii_case("max-age") || k.eq_ignore_ascii_case("s-maxage") {
                val.trim().trim_matches('"').parse::<u64>().ok()
            } else {
                None
            }
        })
        .min()
}

/// Whether a response header is kept in a stored entry.
pub fn keeps_response_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !(lower.starts_with(':')
        || lower.starts_with("x-pag0-")
        || SKIPPED_RESPONSE_HEADERS.contains(&lower.as_str()))
}

/// A response the filter is collecting for the cache (a miss of a cache-enabled project).
#[derive(Debug)]
pub struct Fill {
    pub key: CacheKey,
    pub ttl_secs: u64,
    /// The request allows storing its answer (no `cache-control: no-store`).
    pub may_store: bool,
    /// The request asked for a stream (`stream: true`): never stored.
    pub streaming: bool,
    pub max_entry_bytes: usize,
    /// `None` until response headers said the response may be stored, and again once it is
    /// known not to be (not 2xx, SSE, `no-store`, over the size cap).
    pub response: Option<Collected>,
}

#[derive(Debug, Default)]
pub struct Collected {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub ttl_secs: u64,
}

impl Fill {
    /// Response headers arrived: keep collecting only what may be stored. Also marks the
    /// response `x-pag0-cache: miss`.
    pub fn on_response_headers(
        &mut self,
        host: &dyn Host,
        status: Option<u32>,
        content_type: Option<&str>,
    ) {
        host.set_header(MapType::HttpResponseHeaders, "x-pag0-cache", "miss");
        self.response = None;
        let Some(status) = status.filter(|s| (200..300).contains(s)) else {
            return;
        };
        let sse = content_type.is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
        let cc = host.header(MapType::HttpResponseHeaders, "cache-control");
        let refused = ["no-store", "no-cache", "private"]
            .iter()
            .any(|d| directive(cc.as_deref(), d));
        let vary_all = host
            .header(MapType::HttpResponseHeaders, "vary")
            .is_some_and(|v| v.split(',').any(|x| x.trim() == "*"));
        let cookie = host
            .header(MapType::HttpResponseHeaders, "set-cookie")
            .is_some();
        if !self.may_store || self.streaming || sse || refused || vary_all || cookie {
            return;
        }
        let ttl_secs = match max_age(cc.as_deref()) {
            Some(a) => a.min(self.ttl_secs),
            None => self.ttl_secs,
        };
        if ttl_secs == 0 {
            return;
        }
        let mut names = host.header_names(MapType::HttpResponseHeaders);
        names.retain(|n| keeps_response_header(n));
        names.iter_mut().for_each(|n| n.make_ascii_lowercase());
        names.sort();
        // A repeated header is read once (the host hands back its first value).
        names.dedup();
        let headers = names
            .into_iter()
            .filter_map(|n| {
                let v = host.header(MapType::HttpResponseHeaders, &n)?;
                Some((n.to_ascii_lowercase(), v))
            })
            .collect();
        self.response = Some(Collected {
            status: u16::try_from(status).unwrap_or(200),
            headers,
            body: Vec::new(),
            ttl_secs,
        });
    }

    pub fn wants_body(&self) -> bool {
        self.response.is_some()
    }

    /// A body chunk; past `maxEntryBytes` the response is dropped (not stored).
    pub fn on_body(&mut self, chunk: &[u8]) {
        let over = self
            .response
            .as_ref()
            .is_some_and(|r| r.body.len().saturating_add(chunk.len()) > self.max_entry_bytes);
        if over {
            self.response = None;
        } else if let Some(r) = &mut self.response {
            r.body.extend_from_slice(chunk);
        }
    }

    /// The entry to store once the response ended normally (never after trailers/reset).
    pub fn into_entry(self, now_ms: u64, cost: Micros) -> Option<Entry> {
        let r = self.response?;
        Some(Entry {
            key: self.key,
            expires_at_ms: now_ms.saturating_add(r.ttl_secs.saturating_mul(1000)),
            status: r.status,
            headers: r.headers,
            body: r.body,
            cost_micros: cost.get(),
        })
    }
}

/// Parses `cache: {maxBytes, maxEntryBytes}` of the plugin configuration.
pub fn parse_config(v: Option<&Value>, errors: &mut Vec<FieldError>) -> CacheConfig {
    let mut cfg = CacheConfig::default();
    let Some(v) = v else { return cfg };
    let Some(obj) = v.as_object() else {
        errors.push(FieldError::new("cache", "must be an object"));
        return cfg;
    };
    for (key, value) in obj {
        let slot = match key.as_str() {
            "maxBytes" => &mut cfg.max_bytes,
            "maxEntryBytes" => &mut cfg.max_entry_bytes,
            _ => {
                errors.push(FieldError::new(format!("cache.{key}"), "unknown field"));
                continue;
            }
        };
        match value.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n > 0 => *slot = n,
            _ => errors.push(FieldError::new(
                format!("cache.{key}"),
                "must be a positive whole number of bytes",
            )),
        }
    }
    if cfg.max_entry_bytes > cfg.max_bytes {
        errors.push(FieldError::new(
            "cache.maxEntryBytes",
            format!("must be at most cache.maxBytes ({})", cfg.max_bytes),
        ));
    }
    cfg
}

/// Metric ids of the cache (`None` where the host refused to define one).
pub struct CacheMetrics {
    /// Where the counters' increments wait for the tick (`metrics.rs`).
    increments: Rc<Increments>,
    hits: Option<u32>,
    misses: Option<u32>,
    savings: Option<u32>,
    bytes: Option<u32>,
    /// Hits and savings per project and cost centre of the policy in force (`savings.rs`).
    /// Replaced by [`CacheMetrics::attribute`] when a policy is loaded; a request only reads it.
    attribution: RefCell<savings::Attribution>,
}

/// The gauge of bytes held in the slots.
pub const BYTES_METRIC: &str = "pag0.cache.bytes";

/// Counter, except the one gauge.
pub fn metric_type(name: &str) -> MetricType {
    if name == BYTES_METRIC {
        MetricType::Gauge
    } else {
        MetricType::Counter
    }
}

impl CacheMetrics {
    pub fn define_with(
        increments: Rc<Increments>,
        define: &mut impl FnMut(&str) -> Option<u32>,
    ) -> Self {
        CacheMetrics {
            increments,
            hits: define("pag0.cache.hits"),
            misses: define("pag0.cache.misses"),
            savings: define("pag0.cache.savings_micros"),
            bytes: define(BYTES_METRIC),
            attribution: RefCell::default(),
        }
    }

    pub fn none() -> Self {
        CacheMetrics {
            increments: Rc::default(),
            hits: None,
            misses: None,
            savings: None,
            bytes: None,
            attribution: RefCell::default(),
        }
    }

    /// Defines the per-project and per-cost-centre series of `policy` (those not defined for
    /// the previous policy) and makes them the ones hits count in. Call when a policy is
    /// loaded, never per request.
    pub fn attribute(
        &self,
        policy: &pag0_policy::CompiledPolicy,
        define: &mut impl FnMut(&str) -> Option<u32>,
    ) {
        let next = match self.attribution.try_borrow() {
            Ok(previous) => savings::Attribution::build(policy.document(), &previous, define),
            Err(_) => return,
        };
        if let Ok(mut a) = self.attribution.try_borrow_mut() {
            *a = next;
        }
    }

    /// A hit of `client_id` (of `project_id`) that avoided `savings`: counted globally and in
    /// the project's and the client's cost centre's series.
    pub fn hit(&self, host: &dyn Host, project_id: &str, client_id: &str, savings: Micros) {
        let savings = i64::try_from(savings.get()).unwrap_or(i64::MAX);
        self.increments.add(host, self.hits, 1);
        self.increments.add(host, self.savings, savings);
        if let Ok(a) = self.attribution.try_borrow() {
            a.hit(&self.increments, host, project_id, client_id, savings);
        }
    }

    /// The series hits count in now (tests, diagnostics).
    pub fn attribution(&self) -> Option<std::cell::Ref<'_, savings::Attribution>> {
        self.attribution.try_borrow().ok()
    }

    pub fn miss(&self, host: &dyn Host) {
        self.increments.add(host, self.misses, 1);
    }

    /// Moves the gauge of bytes held at once: unlike the counters it is not batched (it says
    /// what the slots hold now).
    pub fn stored(&self, host: &dyn Host, s: Stored) {
        let delta = i64::try_from(s.stored_bytes)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(s.replaced_bytes).unwrap_or(i64::MAX));
        if let (Some(id), true) = (self.bytes, delta != 0) {
            host.increment_metric(id, delta);
        }
    }
}

#[cfg(test)]
mod tests;
