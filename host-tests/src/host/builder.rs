//! [`HostBuilder`]: a [`Host`]'s options and its start-up (`on_vm_start`, `on_configure`).

use std::collections::HashMap;

use wasmtime::Module;

use super::{CallAnswer, Host, Responder, StartError, Worker};
use crate::plugin;
use crate::shared::{lock, SharedRef};
use crate::vm::{HttpCall, Vm, VmState};

pub struct HostBuilder {
    pub(super) module: Option<Module>,
    pub(super) plugin_configuration: Vec<u8>,
    pub(super) vm_configuration: Vec<u8>,
    pub(super) vms: usize,
    pub(super) vm_id: String,
    pub(super) root_id: String,
    pub(super) clusters: Vec<String>,
    pub(super) now_nanos: u64,
    pub(super) responder: Option<Responder>,
}

impl HostBuilder {
    /// Another module than the pag0 plugin (e.g. a small WAT guest testing the host itself).
    pub fn module(mut self, module: Module) -> Self {
        self.module = Some(module);
        self
    }

    /// Worker VMs, like Envoy's `--concurrency`. Default 1.
    pub fn vms(mut self, n: usize) -> Self {
        self.vms = n.max(1);
        self
    }

    pub fn vm_configuration(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.vm_configuration = bytes.into();
        self
    }

    /// A cluster `dispatch_http_call` may name (Envoy refuses unknown clusters).
    pub fn cluster(mut self, name: &str) -> Self {
        self.clusters.push(name.to_string());
        self
    }

    /// The wall clock at start, in seconds since the Unix epoch.
    pub fn unix_time(mut self, secs: u64) -> Self {
        self.now_nanos = secs.saturating_mul(1_000_000_000);
        self
    }

    /// Answers every `dispatch_http_call` (default: time out).
    pub fn responder(mut self, f: impl FnMut(&HttpCall) -> CallAnswer + Send + 'static) -> Self {
        self.responder = Some(Box::new(f));
        self
    }

    pub fn build(self) -> Result<Host, StartError> {
        let module = match self.module {
            Some(m) => m,
            None => plugin::module().clone(),
        };
        let shared: SharedRef = Default::default();
        lock(&shared).now_nanos = self.now_nanos;
        let mut vms = Vec::with_capacity(self.vms);
        for index in 0..self.vms {
            let mut state = VmState::new(index, &self.vm_id, shared.clone());
            state.vm_configuration = self.vm_configuration.clone();
            state.plugin_configuration = self.plugin_configuration.clone();
            state.clusters = self.clusters.clone();
            for (k, v) in [
                ("plugin_name", &self.root_id),
                ("plugin_root_id", &self.root_id),
                ("plugin_vm_id", &self.vm_id),
            ] {
                state
                    .properties
                    .insert(k.to_string(), v.as_bytes().to_vec());
            }
            let mut vm =
                Vm::instantiate(plugin::engine(), &module, state).map_err(StartError::Load)?;
            let root = vm.state().root_context;
            let log = |shared: &SharedRef| lock(shared).log.clone();
            vm.call_as::<(i32, i32), ()>(root, "proxy_on_context_create", (root as i32, 0))
                .map_err(StartError::Trap)?;
            let vm_config_len = self.vm_configuration.len() as i32;
            if vm
                .call_as::<(i32, i32), i32>(root, "proxy_on_vm_start", (root as i32, vm_config_len))
                .map_err(StartError::Trap)?
                == Some(0)
            {
                return Err(StartError::VmStartRefused {
                    vm: index,
                    log: log(&shared),
                });
            }
            let config_len = self.plugin_configuration.len() as i32;
            if vm
                .call_as::<(i32, i32), i32>(root, "proxy_on_configure", (root as i32, config_len))
                .map_err(StartError::Trap)?
                == Some(0)
            {
                return Err(StartError::ConfigureRefused {
                    vm: index,
                    log: log(&shared),
                });
            }
            vms.push(Worker {
                vm,
                next_context: root + 1,
                next_tick_nanos: None,
            });
        }
        let mut host = Host {
            vms,
            shared,
            flows: HashMap::new(),
            responder: self
                .responder
                .unwrap_or_else(|| Box::new(|_| CallAnswer::Timeout)),
        };
        host.schedule_ticks();
        host.dispatch();
        Ok(host)
    }
}
