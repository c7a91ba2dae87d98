//! Runs `N` allowed per-request-priced exchanges through the real `.wasm` and exits: a fixed
//! workload for instruction counting, which stays exact on a noisy or virtualised machine
//! where wall time and `/proc` CPU time do not.
//!
//! ```sh
//! PAG0_WASM=/tmp/a.wasm valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!   target/release/examples/guest_loop 200     # and again with 1200: the difference / 1000
//! ```
//! `host-tests/profile/guest-instructions.sh` does both runs for one or more `.wasm` files.

use pag0_host_tests::{fixture, Host, Request, Response};

fn main() -> Result<(), String> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse().map_err(|e| format!("N: {e}"))?,
        None => 1000,
    };
    let mut policy = fixture::policy();
    let big = "100000000000000";
    policy["globalPolicy"]["monthlyBudget"] = big.into();
    policy["globalPolicy"]["dailyBudget"] = big.into();
    policy["projects"][1]["policy"]["monthlyBudget"] = big.into();
    // `PAG0_GUEST_LOOP_ANY=<configuration>`: a module that is not Pag0 (benches/passthrough:
    // empty for the pass-through floor, `map=1,...` for the host-call probe); any answer will do.
    let other = std::env::var("PAG0_GUEST_LOOP_ANY").ok();
    let cfg = match &other {
        Some(c) => c.clone(),
        None => serde_json::json!({ "policy": policy, "maxBodyBytes": 1_048_576 }).to_string(),
    };
    let mut h = Host::builder(cfg).build().map_err(|e| e.to_string())?;
    let allowed = Request::get("api.deepl.com", "/v2/translate")
        .api_key(fixture::OPS_KEY)
        .header("user-agent", "pag0-load")
        .header("x-forwarded-proto", "http")
        .header("x-request-id", "9b3c1a44-0e1f-4c55-9a51-0c1d2b3e4f50");
    let ok = Response::json(200, r#"{"translations":[]}"#);
    let check = other.is_none();
    for i in 0..n {
        let got = h.run(&allowed, &ok);
        if check && got.header("x-pag0-decision") != Some("allow") {
            return Err(format!("exchange {i} not allowed: {:?}", got.status()));
        }
    }
    Ok(())
}
