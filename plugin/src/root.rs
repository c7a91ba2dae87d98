//! The proxy-wasm contexts: thin wrappers delegating every callback to the engine's `Root`
//! (configure, tick, sync) and `Filter` (the request lifecycle), with [`Hostcalls`] as host.

use pag0_engine::filter::Filter;
use pag0_engine::host;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::host::Hostcalls;

/// The root context of one plugin configuration in one worker VM.
#[derive(Default)]
pub struct Root(pag0_engine::root::Root<Hostcalls>);

/// One HTTP stream.
pub struct Http(Filter<Hostcalls>);

fn action(a: host::Action) -> Action {
    match a {
        host::Action::Continue => Action::Continue,
        host::Action::Pause => Action::Pause,
    }
}

// === impl Root ===

impl Context for Root {
    fn on_done(&mut self) -> bool {
        self.0.on_done()
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        self.0
            .on_http_call_response(token_id, num_headers, body_size, num_trailers);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        self.0.on_configure(plugin_configuration_size)
    }

    fn on_tick(&mut self) {
        self.0.on_tick();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always Some: the SDK panics on None. Without configuration the filter fails closed.
        Some(Box::new(Http(Filter::new(Hostcalls, self.0.shared()))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

// === impl Http ===

impl Context for Http {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        self.0
            .on_http_call_response(token_id, num_headers, body_size, num_trailers);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        action(self.0.on_http_request_headers(num_headers, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.0.on_http_request_body(body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, num_trailers: usize) -> Action {
        action(self.0.on_http_request_trailers(num_trailers))
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        action(self.0.on_http_response_headers(num_headers, end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.0.on_http_response_body(body_size, end_of_stream))
    }

    fn on_http_response_trailers(&mut self, num_trailers: usize) -> Action {
        action(self.0.on_http_response_trailers(num_trailers))
    }

    fn on_log(&mut self) {
        self.0.on_log();
    }
}
