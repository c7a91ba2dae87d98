//! The pass-through filter: what any proxy-wasm filter costs before it does any work.
//! Envoy creates a VM context per worker and an HTTP context per request and calls the
//! request/response callbacks; each returns `Continue` without a host call.
//! Build: `cargo build -p pag0-passthrough --profile wasm-release --target wasm32-wasip1`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(PassthroughRoot) });
}}

struct PassthroughRoot;

impl Context for PassthroughRoot {}

impl RootContext for PassthroughRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Passthrough))
    }
}

struct Passthrough;

impl Context for Passthrough {}

impl HttpContext for Passthrough {}
