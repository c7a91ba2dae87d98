//! The response cache's lookup path, natively (no host): computing the key of a chat request
//! and reading its slot from an in-memory store with proxy-wasm's shared-data semantics.
//! `host-tests/benches/guest.rs` measures a whole hit through the wasm guest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, Criterion};
use pag0_engine::cache::{
    lookup, store, CacheConfig, CacheKey, Entry, Pool, RequestParts, VARY_HEADERS,
};
use pag0_engine::counters::{HostError, SetError, SharedStore};

#[derive(Default)]
struct Mem(RefCell<HashMap<String, Vec<u8>>>);

impl SharedStore for Mem {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
        Ok((self.0.borrow().get(key).cloned(), Some(1)))
    }
    fn set(&self, key: &str, value: &[u8], _cas: Option<u32>) -> Result<(), SetError> {
        self.0.borrow_mut().insert(key.to_string(), value.to_vec());
        Ok(())
    }
    fn now_nanos(&self) -> u64 {
        0
    }
}

fn parts(body: &[u8]) -> RequestParts<'_> {
    RequestParts {
        method: "POST",
        authority: "api.openai.com",
        path: "/v1/chat/completions",
        body,
        vary: VARY_HEADERS
            .iter()
            .map(|&n| {
                (
                    n,
                    (n == "content-type").then(|| "application/json".to_string()),
                )
            })
            .collect(),
    }
}

fn bench(c: &mut Criterion) {
    let body = format!(
        r#"{{"model":"gpt-4","max_tokens":256,"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(1000)
    );
    let pool = Pool::Shared;
    c.bench_function("cache key (1 KiB chat body)", |b| {
        b.iter(|| CacheKey::new(&pool, &parts(body.as_bytes())))
    });

    let cfg = CacheConfig::default();
    let mem = Mem::default();
    let key = CacheKey::new(&pool, &parts(body.as_bytes()));
    let entry = Entry {
        key,
        expires_at_ms: u64::MAX,
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: vec![b'y'; 4096],
        cost_micros: 6000,
    };
    store(&mem, &cfg, &entry).unwrap();
    assert!(lookup(&mem, &cfg, &key, 0).unwrap().is_some());
    c.bench_function("cache lookup hit (4 KiB entry)", |b| {
        b.iter(|| lookup(&mem, &cfg, &key, 0).unwrap())
    });
    c.bench_function("cache key + lookup hit (1 KiB body, 4 KiB entry)", |b| {
        b.iter(|| {
            let k = CacheKey::new(&pool, &parts(body.as_bytes()));
            lookup(&mem, &cfg, &k, 0).unwrap()
        })
    });
    let empty = CacheKey::new(&Pool::Project("other".into()), &parts(b"{}"));
    c.bench_function("cache lookup miss", |b| {
        b.iter(|| lookup(&mem, &cfg, &empty, 0).unwrap())
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
