//! Settlement: the actual cost of a request, from what the upstream reports (SPEC §4.2).

use std::sync::Arc;

use crate::money::Micros;

/// Token counts as reported by an OpenAI-style `usage` object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Per-1k-token prices of the model the request was priced with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelPrice {
    pub input_per_1k: Micros,
    pub output_per_1k: Micros,
}

/// How to settle one allowed request: carried from `decide` to the response callbacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    pub estimate: Micros,
    /// The endpoint's `costHeader` (lower-cased), if the catalogue names one.
    pub cost_header: Option<Arc<str>>,
    /// Set when the request was priced per token: usage reports are priced with it.
    pub model_price: Option<ModelPrice>,
    /// The request asked for `stream: true` (SSE expected).
    pub streaming: bool,
}
