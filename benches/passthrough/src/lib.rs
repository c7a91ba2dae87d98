//! The pass-through filter: what any proxy-wasm filter costs before it does any work.
//! Envoy creates a VM context per worker and an HTTP context per request and calls the
//! request/response callbacks; each returns `Continue` without a host call.
//!
//! With a configuration such as `headers=5,shared_get=12,shared_set=8` it becomes a *probe*:
//! it makes that many host calls of each kind per request and nothing else, so the load
//! benchmark can price a filter's host-call pattern apart from its own logic. Keys (see
//! [`Probe`]): request `headers` (single header reads), `map` (whole header map reads),
//! `remove`, `time`, `shared_get`, `shared_set` (4 keys, written with the CAS of a read),
//! `metric` (counter increments); on the response `resp_headers`, `resp_map`, `resp_remove`,
//! `resp_set` (replace), `resp_add` (append; the same three names as `resp_set`).
//!
//! Build: `cargo build -p pag0-passthrough --profile wasm-release --target wasm32-wasip1`.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(PassthroughRoot { probe: Rc::new(Probe::default()) })
    });
}}

/// Host calls per request (all zero: the plain pass-through).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    pub headers: u32,
    pub map: u32,
    pub remove: u32,
    pub time: u32,
    pub shared_get: u32,
    pub shared_set: u32,
    pub metric: u32,
    pub resp_headers: u32,
    pub resp_map: u32,
    pub resp_remove: u32,
    pub resp_set: u32,
    pub resp_add: u32,
    metric_id: Option<u32>,
}

impl Probe {
    /// `key=N,key=N`; unknown keys and bad numbers are errors (empty or `{}` is the plain filter).
    pub fn parse(s: &str) -> Result<Probe, String> {
        let mut p = Probe::default();
        for item in s
            .trim()
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(str::trim)
        {
            if item.is_empty() {
                continue;
            }
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: want key=N"))?;
            let n: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("{item:?}: not a count"))?;
            let slot = match k.trim() {
                "headers" => &mut p.headers,
                "map" => &mut p.map,
                "remove" => &mut p.remove,
                "time" => &mut p.time,
                "shared_get" => &mut p.shared_get,
                "shared_set" => &mut p.shared_set,
                "metric" => &mut p.metric,
                "resp_headers" => &mut p.resp_headers,
                "resp_map" => &mut p.resp_map,
                "resp_remove" => &mut p.resp_remove,
                "resp_set" => &mut p.resp_set,
                "resp_add" => &mut p.resp_add,
                other => return Err(format!("unknown probe key {other:?}")),
            };
            *slot = n;
        }
        Ok(p)
    }

    fn on_request(&self) {
        const NAMES: [&str; 5] = [":method", ":authority", ":path", "x-pag0-api-key", "x-none"];
        for name in NAMES.iter().cycle().take(self.headers as usize) {
            let _ = hostcalls::get_map_value(MapType::HttpRequestHeaders, name);
        }
        for _ in 0..self.map {
            let _ = hostcalls::get_map(MapType::HttpRequestHeaders);
        }
        for _ in 0..self.remove {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-pag0-api-key", None);
        }
        for _ in 0..self.time {
            let _ = hostcalls::get_current_time();
        }
        self.shared(self.shared_get / 2, self.shared_set / 2);
        for _ in 0..self.metric / 2 {
            if let Some(id) = self.metric_id {
                let _ = hostcalls::increment_metric(id, 1);
            }
        }
    }

    fn on_response(&self) {
        for _ in 0..self.resp_headers {
            let _ = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status");
        }
        for _ in 0..self.resp_map {
            let _ = hostcalls::get_map(MapType::HttpResponseHeaders);
        }
        for name in ["x-pag0-code", "x-pag0-cache", "x-pag0-approval-id"]
            .iter()
            .cycle()
            .take(self.resp_remove as usize)
        {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, None);
        }
        for name in ["x-probe-a", "x-probe-b", "x-probe-c"]
            .iter()
            .cycle()
            .take(self.resp_set as usize)
        {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some("team-3"));
        }
        for name in ["x-probe-a", "x-probe-b", "x-probe-c"]
            .iter()
            .cycle()
            .take(self.resp_add as usize)
        {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, "team-3");
        }
        self.shared(
            self.shared_get - self.shared_get / 2,
            self.shared_set - self.shared_set / 2,
        );
        for _ in 0..self.metric - self.metric / 2 {
            if let Some(id) = self.metric_id {
                let _ = hostcalls::increment_metric(id, 1);
            }
        }
    }

    /// `gets` reads over 4 keys; the first `sets` of them are followed by a CAS write.
    fn shared(&self, gets: u32, sets: u32) {
        const KEYS: [&str; 4] = [
            "probe/b/org.monthly/2026-11",
            "probe/b/org.daily/2026-11-24",
            "probe/b/project.monthly/team-3/2026-11",
            "probe/b/project.daily/team-3/2026-11-24",
        ];
        for (i, key) in (0..gets).zip(KEYS.iter().cycle()) {
            let Ok((value, cas)) = hostcalls::get_shared_data(key) else {
                continue;
            };
            if i < sets {
                let n = value
                    .as_deref()
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map_or(0, u64::from_le_bytes);
                let _ = hostcalls::set_shared_data(key, Some(&(n + 1).to_le_bytes()), cas);
            }
        }
    }
}

struct PassthroughRoot {
    probe: Rc<Probe>,
}

impl Context for PassthroughRoot {}

impl RootContext for PassthroughRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        let config =
            hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, size)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
        match Probe::parse(&config) {
            Ok(mut p) => {
                if p.metric > 0 {
                    p.metric_id =
                        hostcalls::define_metric(MetricType::Counter, "probe.requests").ok();
                }
                self.probe = Rc::new(p);
                true
            }
            Err(e) => {
                let _ = hostcalls::log(LogLevel::Error, &format!("pag0-passthrough: {e}"));
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if *self.probe == Probe::default() {
            Some(Box::new(Passthrough))
        } else {
            Some(Box::new(ProbeFilter(Rc::clone(&self.probe))))
        }
    }
}

struct Passthrough;

impl Context for Passthrough {}

impl HttpContext for Passthrough {}

struct ProbeFilter(Rc<Probe>);

impl Context for ProbeFilter {}

impl HttpContext for ProbeFilter {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.0.on_request();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.0.on_response();
        Action::Continue
    }
}
