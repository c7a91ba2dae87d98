//! The estimate of one request before it is forwarded (docs/policy.md#the-estimate-before-forwarding).
//!
//! - `perRequest` endpoints cost their fixed price; the body is not read.
//! - Token-priced endpoints (`pricing.models`) read the JSON body:
//!   - model: `model` from the body; absent → `defaultModel`; a model that is not in the
//!     catalogue (or no `defaultModel`) is priced as the most expensive one of the endpoint
//!     (the highest `inputPer1k` and the highest `outputPer1k` found), so an unknown model can
//!     never make a request look cheaper than it is;
//!   - input tokens: `ceil(body bytes / 4)` (about four bytes per token for English text and
//!     JSON; the body includes the prompt and a little framing, so this leans high);
//!   - output tokens per choice: the largest of `max_tokens`, `max_completion_tokens` and
//!     `max_output_tokens` (Responses API) that is sent; none sent → the endpoint's
//!     `defaultMaxTokens` (default 1024) — such a request is priced, not refused;
//!   - choices: the larger of `n` and `best_of` (default 1; `0` counts as 1): every choice
//!     (and every `best_of` candidate) is billed for its output, so the output allowance is
//!     multiplied by it — the estimate stays an upper bound of what the request can cost;
//!   - cost = `ceil(inputPer1k × in / 1000) + ceil(outputPer1k × out × choices / 1000)`,
//!     checked: a product that overflows is refused as `BAD_REQUEST_BODY`.
//! - A host that is not in `endpoints` costs 0 (it is still subject to allow/block lists).

use serde::Deserialize;

use crate::money::{Micros, MoneyError};
use crate::settle::{ModelPrice, Usage};

/// Default output-token allowance when the request names none.
pub const DEFAULT_MAX_TOKENS: u64 = 1024;

/// What pricing needs from a request body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BodyFacts {
    pub model: Option<String>,
    /// Output tokens per choice: the largest of `max_tokens`, `max_completion_tokens`,
    /// `max_output_tokens` that the body sends.
    pub max_tokens: Option<u64>,
    /// Choices the upstream generates and bills: the larger of `n` and `best_of`; `None`
    /// when the body sends neither (one choice).
    pub choices: Option<u64>,
    pub stream: bool,
    pub body_len: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is not a JSON object")]
    NotAnObject,
    #[error("request body is not valid JSON for pricing: {0}")]
    Json(#[from] serde_json::Error),
}

/// A catalogue entry's price list, compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointPricing {
    /// No `pricing`: costs 0.
    Free,
    PerRequest(Micros),
    Tokens(TokenPricing),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPricing {
    /// Sorted by name for lookup.
    pub models: Vec<(String, ModelPrice)>,
    pub default_model: Option<String>,
    pub default_max_tokens: u64,
    /// The highest input and the highest output price among `models`.
    pub most_expensive: ModelPrice,
}

#[derive(Deserialize)]
struct RawBody {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    best_of: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
}

/// Reads `model`, `max_tokens`/`max_completion_tokens`/`max_output_tokens`, `n`/`best_of`
/// and `stream` from a JSON body. A field of the wrong type (`"n": -1`, `"n": "128"`,
/// `"max_tokens": 1.5`) is an error, never a silent default.
/// An empty (or all-whitespace) body gives empty facts: no model, no token limit.
pub fn parse_request_body(body: &[u8]) -> Result<BodyFacts, BodyError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => {
            return Ok(BodyFacts {
                body_len: body.len(),
                ..BodyFacts::default()
            })
        }
        Some(b'{') => {}
        Some(_) => return Err(BodyError::NotAnObject),
    }
    let raw: RawBody = serde_json::from_slice(body)?;
    let max_tokens = [
        raw.max_tokens,
        raw.max_completion_tokens,
        raw.max_output_tokens,
    ]
    .into_iter()
    .flatten()
    .max();
    let choices = [raw.n, raw.best_of].into_iter().flatten().max();
    Ok(BodyFacts {
        model: raw.model,
        max_tokens,
        choices,
        stream: raw.stream.unwrap_or(false),
        body_len: body.len(),
    })
}

/// `ceil(body_len / 4)`.
pub fn estimate_input_tokens(body_len: usize) -> u64 {
    u64::try_from(body_len).unwrap_or(u64::MAX).div_ceil(4)
}

/// `ceil(inputPer1k × input / 1000) + ceil(outputPer1k × output / 1000)`.
pub fn token_cost(
    price: ModelPrice,
    input_tokens: u64,
    output_tokens: u64,
) -> Result<Micros, MoneyError> {
    let i = price.input_per_1k.mul_div_ceil(input_tokens, 1000)?;
    let o = price.output_per_1k.mul_div_ceil(output_tokens, 1000)?;
    i.checked_add(o)
}

/// Cost of reported usage.
pub fn usage_cost(price: ModelPrice, usage: Usage) -> Result<Micros, MoneyError> {
    token_cost(price, usage.prompt_tokens, usage.completion_tokens)
}

/// The estimate and, for token pricing, the price it used (for settlement).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    pub cost: Micros,
    pub model_price: Option<ModelPrice>,
}

// === impl EndpointPricing ===

impl EndpointPricing {
    pub fn needs_body(&self) -> bool {
        matches!(self, EndpointPricing::Tokens(_))
    }

    /// `facts` is only read for token pricing; `None` there means an empty body.
    pub fn estimate(&self, facts: Option<&BodyFacts>) -> Result<Estimate, MoneyError> {
        match self {
            EndpointPricing::Free => Ok(Estimate {
                cost: Micros::ZERO,
                model_price: None,
            }),
            EndpointPricing::PerRequest(p) => Ok(Estimate {
                cost: *p,
                model_price: None,
            }),
            EndpointPricing::Tokens(t) => t.estimate(facts),
        }
    }
}

// === impl TokenPricing ===

impl TokenPricing {
    pub fn new(
        mut models: Vec<(String, ModelPrice)>,
        default_model: Option<String>,
        default_max_tokens: Option<u64>,
    ) -> Self {
        models.sort_by(|a, b| a.0.cmp(&b.0));
        let most_expensive = ModelPrice {
            input_per_1k: models
                .iter()
                .map(|m| m.1.input_per_1k)
                .max()
                .unwrap_or(Micros::ZERO),
            output_per_1k: models
                .iter()
                .map(|m| m.1.output_per_1k)
                .max()
                .unwrap_or(Micros::ZERO),
        };
        TokenPricing {
            models,
            default_model,
            default_max_tokens: default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            most_expensive,
        }
    }

    /// The price of `model` (or of `defaultModel` if `None`); the most expensive price for a
    /// model the catalogue does not know.
    pub fn price_of(&self, model: Option<&str>) -> ModelPrice {
        let name = model.or(self.default_model.as_deref());
        name.and_then(|n| {
            self.models
                .binary_search_by(|m| m.0.as_str().cmp(n))
                .ok()
                .and_then(|i| self.models.get(i))
                .map(|m| m.1)
        })
        .unwrap_or(self.most_expensive)
    }

    pub fn estimate(&self, facts: Option<&BodyFacts>) -> Result<Estimate, MoneyError> {
        let empty = BodyFacts::default();
        let facts = facts.unwrap_or(&empty);
        let price = self.price_of(facts.model.as_deref());
        let input = estimate_input_tokens(facts.body_len);
        let per_choice = facts.max_tokens.unwrap_or(self.default_max_tokens);
        let choices = facts.choices.unwrap_or(1).max(1);
        let output = per_choice
            .checked_mul(choices)
            .ok_or(MoneyError::Overflow)?;
        Ok(Estimate {
            cost: token_cost(price, input, output)?,
            model_price: Some(price),
        })
    }
}

#[cfg(test)]
mod tests;
