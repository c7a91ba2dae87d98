//! Test doubles: an in-memory shared-data store with Envoy's CAS semantics and a fake HTTP host.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::host::{BufferType, LogLevel, MapType};
use chrono::{DateTime, Utc};

use crate::counters::{decode, HostError, SetError, SharedStore};
use crate::host::{Host, MetricType, RootHost};

/// Key → (value, cas), and the last CAS token handed out.
type Entries = (HashMap<String, (Vec<u8>, u32)>, u32);

/// An in-memory store with Envoy's semantics: CAS tokens start at 1 and grow on every write;
/// `set(.., None)` and any set on a missing key always succeed (no create-if-absent).
/// `steal` makes the next N conditional sets fail after a competing worker's write (it adds
/// `steal_amount` to the value), the situation a real second worker produces.
#[derive(Default)]
pub struct FakeStore {
    pub map: Mutex<Entries>,
    pub steal: AtomicUsize,
    pub steal_amount: u64,
    /// Only steal on this key (any key when `None`).
    pub steal_key: Option<&'static str>,
    pub stolen: AtomicUsize,
    /// Nanoseconds; every reading advances it by 1 µs.
    pub clock: AtomicU64,
}

impl SharedStore for FakeStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        let g = self.map.lock().unwrap();
        Ok(match g.0.get(key) {
            // Envoy hands an empty value back as a null pointer: the SDK reads it as missing.
            Some((v, cas)) if v.is_empty() => (None, Some(*cas)),
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        })
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        let mut g = self.map.lock().unwrap();
        let (map, next) = &mut *g;
        *next += 1;
        let token = *next;
        if let (Some(expected), Some((v, current))) = (cas, map.get_mut(key)) {
            if self.steal.load(Ordering::SeqCst) > 0 && self.steal_key.is_none_or(|k| k == key) {
                self.steal.fetch_sub(1, Ordering::SeqCst);
                self.stolen.fetch_add(1, Ordering::SeqCst);
                let n = decode(Some(v)).get() + self.steal_amount;
                *v = n.to_le_bytes().to_vec();
                *current = token;
                return Err(SetError::CasMismatch);
            }
            if expected != *current {
                return Err(SetError::CasMismatch);
            }
        }
        map.insert(key.to_string(), (value.to_vec(), token));
        Ok(())
    }

    fn now_nanos(&self) -> u64 {
        self.clock.fetch_add(1_000, Ordering::SeqCst)
    }
}

impl FakeStore {
    /// The counter value under a full shared-data key (0 when missing).
    pub fn value(&self, key: &str) -> u64 {
        let (v, _) = self.get(key).unwrap();
        decode(v.as_deref()).get()
    }
}

/// Status, headers and body of a local reply.
pub type LocalReply = (u32, Vec<(String, String)>, String);

/// One `dispatch_http_call`: cluster, headers, body.
pub type Call = (String, Vec<(String, String)>, Vec<u8>);

/// One HTTP stream as the filter sees it, plus what the filter did to it.
#[derive(Default)]
pub struct FakeHost {
    pub store: FakeStore,
    pub now: DateTime<Utc>,
    pub request_headers: RefCell<Vec<(String, String)>>,
    pub response_headers: RefCell<Vec<(String, String)>>,
    pub response_trailers: RefCell<Vec<(String, String)>>,
    /// Everything received so far (the host buffers while the filter pauses).
    pub request_body: RefCell<Vec<u8>>,
    /// The chunk of the current response body callback.
    pub response_chunk: RefCell<Vec<u8>>,
    pub local_reply: RefCell<Option<LocalReply>>,
    pub metrics: RefCell<HashMap<u32, i64>>,
    /// Every `increment_metric` call, in order: `(id, by)`.
    pub metric_calls: RefCell<Vec<(u32, i64)>>,
    pub logs: RefCell<Vec<String>>,
    /// Calls the filter dispatched (token = index + 1).
    pub calls: RefCell<Vec<Call>>,
    /// Make `dispatch_http_call` fail.
    pub dispatch_fails: Cell<bool>,
    /// The answer to the last call, as `on_http_call_response` reads it.
    pub call_response_headers: RefCell<Vec<(String, String)>>,
    pub call_response_body: RefCell<Vec<u8>>,
    /// What the root context's `on_configure` reads.
    pub plugin_configuration: RefCell<Vec<u8>>,
    /// Every `set_tick_period`, in order.
    pub tick_periods: RefCell<Vec<Duration>>,
    /// Every `define_metric`: the name (id = index + 1).
    pub defined: RefCell<Vec<String>>,
    /// How many times the filter resumed the request.
    pub resumed: Cell<usize>,
    /// How many times the filter copied a response body chunk out of the host.
    pub response_body_reads: Cell<usize>,
    /// Every `set_property`, in order: `(name, value)`.
    pub properties: RefCell<Vec<(String, Vec<u8>)>>,
}

impl FakeHost {
    fn map(&self, map: MapType) -> &RefCell<Vec<(String, String)>> {
        match map {
            MapType::HttpRequestHeaders => &self.request_headers,
            MapType::HttpResponseHeaders => &self.response_headers,
            MapType::HttpResponseTrailers => &self.response_trailers,
            MapType::HttpCallResponseHeaders => &self.call_response_headers,
        }
    }
}

impl Host for &FakeHost {
    fn header(&self, map: MapType, name: &str) -> Option<String> {
        let m = self.map(map).borrow();
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
    fn header_names(&self, map: MapType) -> Vec<String> {
        self.map(map)
            .borrow()
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    }
    fn remove_header(&self, map: MapType, name: &str) {
        self.map(map)
            .borrow_mut()
            .retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
    fn set_header(&self, map: MapType, name: &str, value: &str) {
        self.remove_header(map, name);
        self.map(map)
            .borrow_mut()
            .push((name.to_string(), value.to_string()));
    }
    fn body(&self, buffer: BufferType, size: usize) -> Vec<u8> {
        let b = match buffer {
            BufferType::HttpRequestBody => self.request_body.borrow(),
            BufferType::HttpResponseBody => {
                self.response_body_reads
                    .set(self.response_body_reads.get() + 1);
                self.response_chunk.borrow()
            }
            BufferType::HttpCallResponseBody => self.call_response_body.borrow(),
            BufferType::PluginConfiguration => self.plugin_configuration.borrow(),
        };
        b[..size.min(b.len())].to_vec()
    }
    fn send_local_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let prev = self.local_reply.replace(Some((
            status,
            headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )));
        assert!(prev.is_none(), "two local replies on one stream");
    }
    fn now(&self) -> DateTime<Utc> {
        self.now
    }
    fn log(&self, _level: LogLevel, msg: &str) {
        self.logs.borrow_mut().push(msg.to_string());
    }
    fn increment_metric(&self, id: u32, by: i64) {
        self.metric_calls.borrow_mut().push((id, by));
        *self.metrics.borrow_mut().entry(id).or_default() += by;
    }
    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        _timeout: Duration,
    ) -> Result<u32, HostError> {
        if self.dispatch_fails.get() {
            return Err(HostError(6));
        }
        let mut calls = self.calls.borrow_mut();
        calls.push((
            cluster.to_string(),
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body.to_vec(),
        ));
        Ok(u32::try_from(calls.len()).unwrap())
    }
    fn resume_http_request(&self) {
        self.resumed.set(self.resumed.get() + 1);
    }
    fn set_property(&self, name: &str, value: &[u8]) {
        self.properties
            .borrow_mut()
            .push((name.to_string(), value.to_vec()));
    }
}

impl RootHost for &FakeHost {
    fn set_tick_period(&self, period: Duration) -> Result<(), HostError> {
        self.tick_periods.borrow_mut().push(period);
        Ok(())
    }
    fn define_metric(&self, _kind: MetricType, name: &str) -> Result<u32, HostError> {
        let mut defined = self.defined.borrow_mut();
        defined.push(name.to_string());
        Ok(u32::try_from(defined.len()).unwrap())
    }
}

impl SharedStore for &FakeHost {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        self.store.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        self.store.set(key, value, cas)
    }
    fn now_nanos(&self) -> u64 {
        self.store.now_nanos()
    }
}

/// A complete `/v1/sync` answer (`pag0_wire::SyncResponse`) with `fields` over it: what a test
/// does not state is the protocol's neutral value (`ack` 0 acknowledges no batch, no leases,
/// a lease's `spent`/`limit` 0), so each test shows only what it is about.
pub fn sync_answer(fields: &serde_json::Value) -> Vec<u8> {
    sync_answer_value(fields).to_string().into_bytes()
}

/// [`sync_answer`] as a JSON value.
pub fn sync_answer_value(fields: &serde_json::Value) -> serde_json::Value {
    let mut answer = serde_json::json!({
        "ack": 0, "duplicate": false, "policyVersion": 0, "serverTimeMs": 0,
        "leaseTtlMs": 1000, "leases": {},
    });
    if let (Some(a), Some(f)) = (answer.as_object_mut(), fields.as_object()) {
        for (k, v) in f {
            a.insert(k.clone(), v.clone());
        }
    }
    if let Some(leases) = answer.get_mut("leases").and_then(|l| l.as_object_mut()) {
        for lease in leases.values_mut().filter_map(|l| l.as_object_mut()) {
            for (k, v) in [("spent", "0"), ("limit", "0")] {
                lease.entry(k).or_insert_with(|| v.into());
            }
            lease.entry("expiresAtMs").or_insert_with(|| 0.into());
        }
    }
    answer
}
