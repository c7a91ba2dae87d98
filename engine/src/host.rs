//! Every host effect the filter uses, behind small traits ([`Host`] for an HTTP context,
//! [`RootHost`] for the root context), so the request lifecycle in `filter.rs` and the root's
//! configure/tick/sync in `root.rs` are tested natively with a fake host (`testing.rs`). The
//! real one, `Hostcalls` in the cdylib (`plugin/src/host.rs`), converts these types to
//! proxy-wasm's.
//!
//! The types below are the engine's own, with just the variants the filter uses: the engine
//! has no proxy-wasm dependency.
//!
//! `Hostcalls` reads header values as bytes and converts them lossily, and host errors become
//! values the caller handles (see `plugin/src/host.rs` for why not the SDK's helpers).

use std::fmt;
use std::time::Duration;

use crate::counters::{HostError, SharedStore};
use chrono::{DateTime, Utc};

/// A header map of the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapType {
    HttpRequestHeaders,
    HttpResponseHeaders,
    HttpResponseTrailers,
    HttpCallResponseHeaders,
}

/// A byte buffer of the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferType {
    HttpRequestBody,
    HttpResponseBody,
    HttpCallResponseBody,
    PluginConfiguration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// The kind of a metric defined with the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
}

/// What an HTTP callback tells the host: go on, or hold the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// What the HTTP filter needs from its host, besides shared data ([`SharedStore`]).
pub trait Host: SharedStore {
    fn header(&self, map: MapType, name: &str) -> Option<String>;
    fn header_names(&self, map: MapType) -> Vec<String>;
    /// The names for which `keep` is true (a copy of the map's view keeps only those).
    fn header_names_where(&self, map: MapType, keep: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut names = self.header_names(map);
        names.retain(|n| keep(n));
        names
    }
    /// Every `(name, value)` of a header map, in order (one host call on Envoy).
    fn headers(&self, map: MapType) -> Vec<(String, String)> {
        self.header_names(map)
            .into_iter()
            .map(|n| {
                let v = self.header(map, &n).unwrap_or_default();
                (n, v)
            })
            .collect()
    }
    fn remove_header(&self, map: MapType, name: &str);
    /// Replaces (or adds) a header.
    fn set_header(&self, map: MapType, name: &str, value: &str);
    /// The first `size` bytes of a body buffer; empty if there is none.
    fn body(&self, buffer: BufferType, size: usize) -> Vec<u8>;
    fn send_local_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]);
    /// The host's wall clock (the policy gets time passed in, never reads it).
    fn now(&self) -> DateTime<Utc>;
    fn log(&self, level: LogLevel, msg: &str);
    fn increment_metric(&self, id: u32, by: i64);
    /// Sends an HTTP call to `cluster`; the answer (or its failure: zero headers) comes to this
    /// context's `on_http_call_response` with the returned token.
    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError>;
    /// Lets a request held by `Action::Pause` continue to the upstream.
    fn resume_http_request(&self);
    /// Sets this stream's property `name`: Envoy keeps it as filter state `wasm.<name>`,
    /// which an access log reads with `%FILTER_STATE(wasm.<name>:PLAIN)%`.
    fn set_property(&self, name: &str, value: &[u8]);
}

/// What the root context needs from its host besides an HTTP context's calls (it logs, reads
/// the clock and shared data, dispatches calls, counts and reads a call's answer through
/// [`Host`]; the plugin configuration is [`BufferType::PluginConfiguration`]).
pub trait RootHost: Host {
    /// Makes the host call the root's `on_tick` every `period`.
    fn set_tick_period(&self, period: Duration) -> Result<(), HostError>;
    /// Defines a metric; its id is what [`Host::increment_metric`] takes.
    fn define_metric(&self, kind: MetricType, name: &str) -> Result<u32, HostError>;
}

/// A host error as proxy-wasm names its status (`BadArgument`, …), for the log lines that
/// named the status before the engine had its own types.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StatusName(pub HostError);

impl fmt::Debug for StatusName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 .0 {
            0 => "Ok",
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            7 => "Empty",
            8 => "CasMismatch",
            10 => "InternalFailure",
            n => return write!(f, "Status({n})"),
        };
        f.write_str(name)
    }
}
