//! The host itself, on tiny WAT guests: what Envoy would refuse, and how guest failures surface.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pag0_host_tests::{plugin, Host, Request, Response, StartError};
use wasmtime::Module;

fn module(wat: &str) -> Module {
    match Module::new(plugin::engine(), wat) {
        Ok(m) => m,
        Err(e) => panic!("{e:#}"),
    }
}

/// A guest that logs "about to fail" then runs `body` in on_request_headers.
fn guest(extra_import: &str, body: &str) -> String {
    format!(
        r#"(module
          (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
          {extra_import}
          (memory (export "memory") 1)
          (data (i32.const 16) "about to fail")
          (global $heap (mut i32) (i32.const 1024))
          (func (export "proxy_abi_version_0_2_1"))
          (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
            (local $p i32)
            (local.set $p (global.get $heap))
            (global.set $heap (i32.add (global.get $heap) (local.get $n)))
            (local.get $p))
          (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
          (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
            (drop (call $log (i32.const 2) (i32.const 16) (i32.const 13)))
            {body}
            (i32.const 0)))"#
    )
}

fn start(wat: &str) -> Result<Host, StartError> {
    Host::builder("{}").module(module(wat)).build()
}

#[test]
fn a_missing_host_function_is_named() {
    let wat = guest(
        r#"(import "env" "proxy_get_configuration" (func (param i32 i32) (result i32)))"#,
        "",
    );
    match start(&wat) {
        Err(StartError::Load(e)) => assert!(
            format!("{e:#}").contains("env.proxy_get_configuration"),
            "{e:#}"
        ),
        Err(e) => panic!("unexpected: {e}"),
        Ok(_) => panic!("a module importing an unknown function started"),
    }
}

#[test]
fn a_module_without_the_abi_marker_is_refused() {
    let wat = r#"(module (memory (export "memory") 1))"#;
    assert!(matches!(start(wat), Err(StartError::Load(_))));
}

#[test]
fn a_trap_fails_the_test_with_the_guest_log() {
    let mut host = match start(&guest("", "unreachable")) {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    };
    let r = catch_unwind(AssertUnwindSafe(|| {
        host.run(&Request::get("a", "/"), &Response::ok())
    }));
    let msg = match r {
        Err(p) => p.downcast_ref::<String>().cloned().unwrap_or_default(),
        Ok(_) => panic!("a trapping guest passed"),
    };
    assert!(msg.contains("proxy_on_request_headers"), "{msg}");
    assert!(
        msg.contains("about to fail"),
        "the guest's log is in the failure: {msg}"
    );
}

#[test]
fn a_guest_that_never_returns_runs_out_of_fuel() {
    let mut host = match start(&guest("", "(loop $l (br $l))")) {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    };
    let r = catch_unwind(AssertUnwindSafe(|| {
        host.run(&Request::get("a", "/"), &Response::ok())
    }));
    assert!(r.is_err(), "an endless guest loop must fail the test");
}

#[test]
fn the_plugin_imports_only_what_envoy_provides() {
    // Host::new fails, naming the import, if the real plugin needs anything Envoy lacks.
    let module = plugin::module();
    let imports: Vec<String> = module
        .imports()
        .map(|i| format!("{}.{}", i.module(), i.name()))
        .collect();
    assert!(
        imports
            .iter()
            .all(|i| i.starts_with("env.proxy_") || i.starts_with("wasi_snapshot_preview1.")),
        "{imports:?}"
    );
    let _ = Host::new(&pag0_host_tests::fixture::config(4096));
}

#[test]
fn a_paused_header_callback_gets_no_body_callbacks() {
    // proxy-wasm-cpp-host turns Pause from a header callback into StopAllIterationAndWatermark.
    let wat = r#"(module
      (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 16) "body seen")
      (func (export "proxy_abi_version_0_2_1"))
      (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 4096))
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 1))
      (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
        (drop (call $log (i32.const 2) (i32.const 16) (i32.const 9)))
        (i32.const 0)))"#;
    let mut host = match start(wat) {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    };
    let id = host.open(0);
    assert_eq!(
        host.request_headers(id, Request::get("a", "/").headers, false),
        Some(pag0_host_tests::Action::Pause)
    );
    assert_eq!(host.request_body(id, b"hello", true), None);
    assert!(
        !host.log_text().contains("body seen"),
        "{}",
        host.log_text()
    );
    assert!(host.flow(id).upstream.headers.is_none());
}
