//! One header map read from the host once, served to everything that reads it during one
//! callback: a single `get_map` host call instead of one `get_map_value` per header (the
//! request path reads a dozen: API key, approval headers, request line) plus another whole
//! map copy to find the `x-pag0-*` headers to strip.
//!
//! [`Snapshot`] is a [`Host`] that answers `header`/`header_names` for its map from the copy
//! and passes everything else through. Writes and removals go to the host and are mirrored in
//! the copy, so a read after a write sees what the host would answer.

use std::cell::RefCell;
use std::time::Duration;

use crate::host::{BufferType, LogLevel, MapType};
use chrono::{DateTime, Utc};

use crate::counters::{HostError, SetError, SharedStore};
use crate::host::Host;

pub struct Snapshot<'h, H> {
    host: &'h H,
    map: MapType,
    /// `(name, value)` in the host's order; names compared case-insensitively (Envoy keeps
    /// them lower-case and lower-cases the name of a lookup).
    headers: RefCell<Vec<(String, String)>>,
}

impl<'h, H: Host> Snapshot<'h, H> {
    pub fn read(host: &'h H, map: MapType) -> Self {
        Snapshot {
            host,
            map,
            headers: RefCell::new(host.headers(map)),
        }
    }

    /// One pass over the copy, in the host's order: `f` may move a pair's name and value out
    /// and says whether the pair stays in the copy. The host's map is left as it is.
    pub fn retain_mut(&self, f: impl FnMut(&mut (String, String)) -> bool) {
        self.headers.borrow_mut().retain_mut(f);
    }
}

impl<H: Host> SharedStore for Snapshot<'_, H> {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        self.host.get(key)
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        self.host.set(key, value, cas)
    }
    fn now_nanos(&self) -> u64 {
        self.host.now_nanos()
    }
}

impl<H: Host> Host for Snapshot<'_, H> {
    fn header(&self, map: MapType, name: &str) -> Option<String> {
        if map != self.map {
            return self.host.header(map, name);
        }
        // Like Envoy: the first of several values with this name.
        self.headers
            .borrow()
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
    fn headers(&self, map: MapType) -> Vec<(String, String)> {
        if map != self.map {
            return self.host.headers(map);
        }
        self.headers.borrow().clone()
    }
    fn header_names(&self, map: MapType) -> Vec<String> {
        if map != self.map {
            return self.host.header_names(map);
        }
        self.headers
            .borrow()
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    }
    fn header_names_where(&self, map: MapType, keep: &dyn Fn(&str) -> bool) -> Vec<String> {
        if map != self.map {
            return self.host.header_names_where(map, keep);
        }
        self.headers
            .borrow()
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, _)| k.clone())
            .collect()
    }
    fn remove_header(&self, map: MapType, name: &str) {
        self.host.remove_header(map, name);
        if map == self.map {
            self.headers
                .borrow_mut()
                .retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        }
    }
    fn set_header(&self, map: MapType, name: &str, value: &str) {
        self.host.set_header(map, name, value);
        if map == self.map {
            let mut h = self.headers.borrow_mut();
            h.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            h.push((name.to_ascii_lowercase(), value.to_string()));
        }
    }
    fn body(&self, buffer: BufferType, size: usize) -> Vec<u8> {
        self.host.body(buffer, size)
    }
    fn send_local_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        self.host.send_local_reply(status, headers, body)
    }
    fn now(&self) -> DateTime<Utc> {
        self.host.now()
    }
    fn log(&self, level: LogLevel, msg: &str) {
        self.host.log(level, msg)
    }
    fn increment_metric(&self, id: u32, by: i64) {
        self.host.increment_metric(id, by)
    }
    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        self.host
            .dispatch_http_call(cluster, headers, body, timeout)
    }
    fn resume_http_request(&self) {
        self.host.resume_http_request()
    }
    fn set_property(&self, name: &str, value: &[u8]) {
        self.host.set_property(name, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

    #[test]
    fn reads_come_from_one_copy_and_writes_reach_the_host_and_the_copy() {
        let host = FakeHost::default();
        *host.request_headers.borrow_mut() = vec![
            (":path".into(), "/a".into()),
            ("x-pag0-api-key".into(), "k1".into()),
            ("x-dup".into(), "first".into()),
            ("x-dup".into(), "second".into()),
        ];
        let h = &host;
        let s = Snapshot::read(&h, MapType::HttpRequestHeaders);
        // Changed behind the snapshot's back: the snapshot keeps what it read.
        host.request_headers
            .borrow_mut()
            .push(("late".into(), "x".into()));
        assert_eq!(s.header(MapType::HttpRequestHeaders, "late"), None);
        assert_eq!(
            s.header(MapType::HttpRequestHeaders, "X-Pag0-Api-Key")
                .as_deref(),
            Some("k1")
        );
        assert_eq!(
            s.header(MapType::HttpRequestHeaders, "x-dup").as_deref(),
            Some("first")
        );
        s.remove_header(MapType::HttpRequestHeaders, "x-pag0-api-key");
        assert_eq!(
            s.header(MapType::HttpRequestHeaders, "x-pag0-api-key"),
            None
        );
        assert_eq!(
            h.header(MapType::HttpRequestHeaders, "x-pag0-api-key"),
            None
        );
        s.set_header(MapType::HttpRequestHeaders, ":path", "/b");
        assert_eq!(
            s.header(MapType::HttpRequestHeaders, ":path").as_deref(),
            Some("/b")
        );
        assert_eq!(
            h.header(MapType::HttpRequestHeaders, ":path").as_deref(),
            Some("/b")
        );
        // Other maps go straight to the host.
        *host.response_headers.borrow_mut() = vec![(":status".into(), "200".into())];
        assert_eq!(
            s.header(MapType::HttpResponseHeaders, ":status").as_deref(),
            Some("200")
        );
    }
}
