//! Every host effect the filter uses, as small functions over `proxy_wasm::hostcalls`.
//!
//! The SDK's trait helpers (`self.get_http_request_header(..)`, …) `unwrap` host results and
//! `String::from_utf8(..)` header values: one non-UTF-8 header byte from an agent would panic
//! and trap the whole worker VM. These wrappers read bytes, convert lossily, and turn every
//! host error into a value the caller handles.

use chrono::{DateTime, Utc};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, Status};

use crate::counters::{HostError, SetError, SharedStore};

pub fn log(level: LogLevel, msg: &str) {
    // Nothing sensible to do if logging itself fails.
    let _ = hostcalls::log(level, msg);
}

/// The host's wall clock (the policy gets time passed in, never reads it).
pub fn now() -> DateTime<Utc> {
    match hostcalls::get_current_time() {
        Ok(t) => DateTime::<Utc>::from(t),
        // The host always has a clock; if it ever failed, the epoch makes every
        // period/working-hours check deterministic rather than trapping.
        Err(_) => DateTime::<Utc>::UNIX_EPOCH,
    }
}

pub fn header(map: MapType, name: &str) -> Option<String> {
    match hostcalls::get_map_value_bytes(map, name) {
        Ok(Some(v)) => Some(String::from_utf8_lossy(&v).into_owned()),
        _ => None,
    }
}

/// Header names only (values are not needed to decide what to strip).
pub fn header_names(map: MapType) -> Vec<String> {
    hostcalls::get_map_bytes(map)
        .map(|pairs| pairs.into_iter().map(|(k, _)| k).collect())
        .unwrap_or_default()
}

pub fn remove_header(map: MapType, name: &str) {
    if let Err(s) = hostcalls::remove_map_value(map, name) {
        log(LogLevel::Warn, &format!("pag0: could not remove header {name}: {s:?}"));
    }
}

pub fn set_header(map: MapType, name: &str, value: &str) {
    if let Err(s) = hostcalls::set_map_value_bytes(map, name, Some(value.as_bytes())) {
        log(LogLevel::Warn, &format!("pag0: could not set header {name}: {s:?}"));
    }
}

/// `size` bytes of a body buffer from the start; empty if the host has none.
pub fn body(buffer: BufferType, size: usize) -> Vec<u8> {
    match hostcalls::get_buffer(buffer, 0, size) {
        Ok(Some(b)) => b,
        _ => Vec::new(),
    }
}

pub fn send_local_reply(status: u32, headers: &[(&str, &str)], body: &[u8]) {
    if let Err(s) = hostcalls::send_http_response(status, headers.to_vec(), Some(body)) {
        log(LogLevel::Error, &format!("pag0: could not send local reply {status}: {s:?}"));
    }
}

/// Proxy-wasm shared data (per `vm_id`, shared by all worker VMs of one Envoy).
pub struct HostStore;

impl SharedStore for HostStore {
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
        let since_epoch = now().signed_duration_since(DateTime::<Utc>::UNIX_EPOCH);
        since_epoch.num_nanoseconds().and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
    }
}

fn status_error(s: Status) -> HostError {
    HostError(s as u32)
}
