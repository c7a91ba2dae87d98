//! The root context: parses the configuration once per `on_configure` and hands every HTTP
//! context a shared, immutable view of it.

use std::rc::Rc;

use pag0_policy::CompiledPolicy;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};

use crate::config::{self, ConfigError};
use crate::counters;
use crate::filter::Filter;
use crate::host::{self, Hostcalls};
use crate::metrics::Metrics;

/// What every request of one plugin configuration reads. Rebuilt, never mutated, on reconfigure.
pub struct Shared {
    pub policy: Box<CompiledPolicy>,
    pub api_key_header: String,
    pub max_body_bytes: usize,
    pub metrics: Metrics,
}

#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
}

// === impl Root ===

impl Root {
    fn load(bytes: &[u8]) -> Result<Shared, ConfigError> {
        let s = config::parse(bytes)?.into_standalone()?;
        Ok(Shared {
            policy: s.policy,
            api_key_header: s.api_key_header,
            max_body_bytes: s.max_body_bytes,
            metrics: Metrics::define(),
        })
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        ) {
            Ok(Some(b)) => b,
            _ => Vec::new(),
        };
        match Root::load(&bytes) {
            Ok(shared) => {
                if let Err(e) = counters::create::prepare(&Hostcalls) {
                    host::log(
                        LogLevel::Error,
                        &format!("pag0: shared data unusable: {e:?}"),
                    );
                    return false;
                }
                self.shared = Some(Rc::new(shared));
                true
            }
            Err(e) => {
                // Returning false makes Envoy refuse the listener: never serve without policy.
                host::log(LogLevel::Error, &e.to_string());
                self.shared = None;
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Always Some: the SDK panics on None. Without configuration the filter fails closed.
        Some(Box::new(Filter::new(Hostcalls, self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
