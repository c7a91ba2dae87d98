//! The proxy-wasm host (Envoy): [`Hostcalls`] implements the engine's host traits
//! (`pag0_engine::host`) with `proxy_wasm::hostcalls`, converting the engine's types to
//! proxy-wasm's.
//!
//! [`Hostcalls`] calls `proxy_wasm::hostcalls` directly. The SDK's trait helpers
//! (`self.get_http_request_header(..)`, …) `unwrap` host results and `String::from_utf8(..)`
//! header values: one non-UTF-8 header byte from an agent would panic and trap the whole
//! worker VM. Here values are read as bytes and converted lossily, and host errors become
//! values the caller handles where the SDK returns them. (The SDK's header-map calls still
//! trap on a status other than `Ok`/`NotFound`; Envoy answers those with `BadArgument` only
//! for a map that does not exist in the current callback, and the filter reads and writes each
//! map only in its own callback: request headers in `on_http_request_headers`, response
//! headers in `on_http_response_headers`, a call's answer in `on_http_call_response`.)

use std::time::Duration;

use chrono::{DateTime, Utc};
use pag0_engine::counters::{HostError, SetError, SharedStore};
use pag0_engine::host::{BufferType, Host, LogLevel, MapType, MetricType, RootHost};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

/// The proxy-wasm host (Envoy).
#[derive(Clone, Copy, Debug, Default)]
pub struct Hostcalls;

fn log(level: LogLevel, msg: &str) {
    // Nothing sensible to do if logging itself fails.
    let _ = hostcalls::log(log_level(level), msg);
}

/// A header value as text: the host's buffer itself when it is UTF-8 (no copy), else with
/// every invalid byte replaced by U+FFFD.
fn utf8_lossy(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

// === impl Hostcalls ===

impl Host for Hostcalls {
    fn header(&self, map: MapType, name: &str) -> Option<String> {
        match hostcalls::get_map_value_bytes(map_type(map), name) {
            Ok(Some(v)) => Some(utf8_lossy(v)),
            _ => None,
        }
    }

    fn header_names(&self, map: MapType) -> Vec<String> {
        hostcalls::get_map_bytes(map_type(map))
            .map(|pairs| pairs.into_iter().map(|(k, _)| k).collect())
            .unwrap_or_default()
    }

    fn headers(&self, map: MapType) -> Vec<(String, String)> {
        hostcalls::get_map_bytes(map_type(map))
            .map(|pairs| pairs.into_iter().map(|(k, v)| (k, utf8_lossy(v))).collect())
            .unwrap_or_default()
    }

    fn remove_header(&self, map: MapType, name: &str) {
        if let Err(s) = hostcalls::remove_map_value(map_type(map), name) {
            log(
                LogLevel::Warn,
                &format!("pag0: could not remove header {name}: {s:?}"),
            );
        }
    }

    fn set_header(&self, map: MapType, name: &str, value: &str) {
        if let Err(s) = hostcalls::set_map_value_bytes(map_type(map), name, Some(value.as_bytes()))
        {
            log(
                LogLevel::Warn,
                &format!("pag0: could not set header {name}: {s:?}"),
            );
        }
    }

    fn body(&self, buffer: BufferType, size: usize) -> Vec<u8> {
        match hostcalls::get_buffer(buffer_type(buffer), 0, size) {
            Ok(Some(b)) => b,
            _ => Vec::new(),
        }
    }

    fn send_local_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        if let Err(s) = hostcalls::send_http_response(status, headers.to_vec(), Some(body)) {
            log(
                LogLevel::Error,
                &format!("pag0: could not send local reply {status}: {s:?}"),
            );
        }
    }

    fn now(&self) -> DateTime<Utc> {
        match hostcalls::get_current_time() {
            Ok(t) => DateTime::<Utc>::from(t),
            // The host always has a clock; if it ever failed, the epoch keeps every
            // period/working-hours check deterministic rather than trapping.
            Err(_) => DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    fn log(&self, level: LogLevel, msg: &str) {
        log(level, msg);
    }

    fn increment_metric(&self, id: u32, by: i64) {
        let _ = hostcalls::increment_metric(id, by);
    }

    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        hostcalls::dispatch_http_call(cluster, headers.to_vec(), Some(body), vec![], timeout)
            .map_err(status_error)
    }

    fn resume_http_request(&self) {
        if let Err(s) = hostcalls::resume_http_request() {
            log(
                LogLevel::Error,
                &format!("pag0: could not resume the request: {s:?}"),
            );
        }
    }

    fn set_property(&self, name: &str, value: &[u8]) {
        if let Err(s) = hostcalls::set_property(vec![name], Some(value)) {
            log(
                LogLevel::Warn,
                &format!("pag0: could not set property {name}: {s:?}"),
            );
        }
    }
}

/// Proxy-wasm shared data (per `vm_id`, shared by all worker VMs of one Envoy).
impl SharedStore for Hostcalls {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        hostcalls::get_shared_data(key).map_err(status_error)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(s) => Err(SetError::Host(status_error(s))),
        }
    }

    fn now_nanos(&self) -> u64 {
        let since_epoch = Host::now(self).signed_duration_since(DateTime::<Utc>::UNIX_EPOCH);
        since_epoch
            .num_nanoseconds()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0)
    }
}

fn status_error(s: Status) -> HostError {
    HostError(s as u32)
}

impl RootHost for Hostcalls {
    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        hostcalls::set_tick_period(period).map_err(status_error)
    }

    fn define_metric(&self, kind: MetricType, name: &str) -> Result<u32, HostError> {
        let kind = match kind {
            MetricType::Counter => proxy_wasm::types::MetricType::Counter,
            MetricType::Gauge => proxy_wasm::types::MetricType::Gauge,
        };
        hostcalls::define_metric(kind, name).map_err(status_error)
    }
}

fn map_type(map: MapType) -> proxy_wasm::types::MapType {
    match map {
        MapType::HttpRequestHeaders => proxy_wasm::types::MapType::HttpRequestHeaders,
        MapType::HttpResponseHeaders => proxy_wasm::types::MapType::HttpResponseHeaders,
        MapType::HttpResponseTrailers => proxy_wasm::types::MapType::HttpResponseTrailers,
        MapType::HttpCallResponseHeaders => proxy_wasm::types::MapType::HttpCallResponseHeaders,
    }
}

fn buffer_type(buffer: BufferType) -> proxy_wasm::types::BufferType {
    match buffer {
        BufferType::HttpRequestBody => proxy_wasm::types::BufferType::HttpRequestBody,
        BufferType::HttpResponseBody => proxy_wasm::types::BufferType::HttpResponseBody,
        BufferType::HttpCallResponseBody => proxy_wasm::types::BufferType::HttpCallResponseBody,
        BufferType::PluginConfiguration => proxy_wasm::types::BufferType::PluginConfiguration,
    }
}

fn log_level(level: LogLevel) -> proxy_wasm::types::LogLevel {
    match level {
        LogLevel::Debug => proxy_wasm::types::LogLevel::Debug,
        LogLevel::Info => proxy_wasm::types::LogLevel::Info,
        LogLevel::Warn => proxy_wasm::types::LogLevel::Warn,
        LogLevel::Error => proxy_wasm::types::LogLevel::Error,
    }
}
