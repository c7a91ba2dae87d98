//! A wasmtime host for proxy-wasm ABI 0.2.1 that runs the real pag0 filter the way Envoy does,
//! for black-box tests, fuzzing and benches.
//!
//! ```no_run
//! use pag0_host_tests::{Host, Request, Response};
//! let mut host = Host::new(r#"{"policy": {"orgId": "acme"}}"#);
//! let ex = host.run(&Request::get("api.deepl.com", "/v2/translate").api_key("k"), &Response::json(200, "{}"));
//! assert_eq!(ex.status(), Some(200));
//! ```
//!
//! - [`Host`]: N worker VMs of one module, one shared-data store with Envoy's CAS semantics,
//!   queues, metrics, a settable clock with `on_tick`, scripted `dispatch_http_call` answers.
//! - Streams run in one go ([`Host::run`]) or step by step ([`Host::open`],
//!   [`Host::request_headers`], ...), so tests choose the interleaving of two requests.
//! - A guest trap fails the test with the guest's log; a missing import fails start-up naming it.

pub mod abi;
pub mod fixture;
mod host;
mod http;
pub mod plugin;
mod shared;
mod vm;

pub use abi::{Action, Headers, LogLevel, Status};
pub use host::{CallAnswer, Flow, Host, HostBuilder, StartError, Step, StreamId};
pub use http::{Downstream, Exchange, Request, Response, Upstream};
pub use shared::{LogLine, Metric, MetricKind, Shared};
pub use vm::{GuestTrap, HttpCall, LocalReply, FUEL_PER_CALLBACK};
