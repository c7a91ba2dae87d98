//! Arbitrary headers, bodies and upstream responses through the host into the real .wasm.
//! A trap in the guest panics the host (with the guest's log), which libFuzzer reports.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use pag0_host_tests::{fixture, Host, Request, Response};

const HOSTS: &[&str] = &[
    "api.openai.com",
    "api.deepl.com",
    "api.salesforce.com",
    "api.search.example",
    "suspicious-api.com",
    "x.example",
];
const KEYS: &[&str] = &[
    fixture::SALES_KEY,
    fixture::NIGHT_KEY,
    fixture::OPS_KEY,
    fixture::RACE_KEY,
    fixture::DAILY_KEY,
    "bogus",
];

#[derive(Arbitrary, Debug)]
struct Input {
    host: u8,
    key: u8,
    post: bool,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<Vec<u8>>,
    status: u16,
    response_headers: Vec<(String, Vec<u8>)>,
    response_body: Vec<Vec<u8>>,
    response_trailers: bool,
    reset: u8,
    advance_secs: u16,
}

/// What Envoy's codec would let through: lower-case token names, values without NUL/CR/LF.
fn clean_name(n: &str) -> Option<String> {
    let n: String = n
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect::<String>()
        .to_ascii_lowercase();
    (!n.is_empty()).then_some(n)
}

fn clean_value(v: &[u8]) -> String {
    v.iter()
        .filter(|b| !matches!(b, 0 | b'\r' | b'\n') && b.is_ascii())
        .map(|b| *b as char)
        .collect()
}

thread_local! {
    static HOST: RefCell<Option<(Host, u32)>> = const { RefCell::new(None) };
}

fuzz_target!(
    init: {
        // Compile the module before the first input: that takes seconds and would otherwise
        // count against libFuzzer's per-input timeout.
        let _ = pag0_host_tests::plugin::module();
    },
    |input: Input| {
    HOST.with(|cell| {
        let mut slot = cell.borrow_mut();
        // A fresh host now and then, so budgets spent by earlier inputs do not hide paths.
        if slot.as_ref().map_or(true, |(_, n)| *n >= 2000) {
            let host = match Host::builder(fixture::config(2048)).vms(2).build() {
                Ok(h) => h,
                Err(e) => panic!("{e}"),
            };
            *slot = Some((host, 0));
        }
        let Some((host, n)) = slot.as_mut() else { return };
        *n += 1;
        let authority = HOSTS[usize::from(input.host) % HOSTS.len()];
        let path = format!("/{}", clean_value(input.path.as_bytes()).replace(' ', ""));
        let mut req = Request::new(if input.post { "POST" } else { "GET" }, authority, &path);
        if input.key as usize % (KEYS.len() + 1) < KEYS.len() {
            req = req.api_key(KEYS[usize::from(input.key) % KEYS.len()]);
        }
        for (k, v) in input.headers.iter().take(16) {
            if let Some(k) = clean_name(k) {
                req = req.header(&k, &clean_value(v));
            }
        }
        req = req.chunks(input.body.into_iter().take(8).collect());
        let mut resp = match input.reset % 8 {
            0 => Response::reset(),
            _ => Response::status(100 + input.status % 500),
        };
        for (k, v) in input.response_headers.iter().take(8) {
            if let Some(k) = clean_name(k) {
                resp = resp.header(&k, &clean_value(v));
            }
        }
        resp = resp.chunks(input.response_body.into_iter().take(8).collect());
        if input.reset % 8 == 1 {
            resp = resp.reset_after_headers();
        }
        if input.response_trailers {
            resp = resp.trailer("grpc-status", "0");
        }
        host.advance(std::time::Duration::from_secs(u64::from(input.advance_secs % 4000)));
        let vm = usize::from(input.key & 1);
        let _ = host.run_on(vm, &req, &resp);
    });
    }
);
