//! What the upstream's response says about the cost of one allowed request (docs/policy.md#settlement-after-the-response).
//!
//! The response is never paused or buffered by the host for this: the filter copies each body
//! chunk as it passes. SSE streams go through the policy's incremental scanner (constant
//! memory); other bodies are kept up to a cap for an OpenAI-style `usage` object. Whatever was
//! seen when the stream ends — or breaks — is priced by [`Settlement::final_cost`].

use pag0_policy::settle::{usage_from_json, Charge, Settlement, SseUsageScanner};
use pag0_policy::Micros;

pub struct ResponseMeter {
    settlement: Settlement,
    cap: usize,
    /// `:status` of the response; `None` until response headers arrived.
    status: Option<u32>,
    cost_header: Option<String>,
    body: Body,
}

enum Body {
    /// Response headers not seen yet.
    NotStarted,
    /// The request was not priced per token: a `usage` report could not change its cost
    /// (`Settlement::final_cost` prices usage only with a model price), so the body is never
    /// copied out of the host nor parsed.
    Ignored,
    Sse(Box<SseUsageScanner>),
    /// A body kept for `usage_from_json`; `None` once it grew past the cap (the estimate or
    /// the cost header then stand).
    Buffered(Option<Vec<u8>>),
}

// === impl ResponseMeter ===

impl ResponseMeter {
    /// `cap`: the most bytes of a non-streaming response kept to read `usage` from.
    pub fn new(settlement: Settlement, cap: usize) -> Self {
        ResponseMeter {
            settlement,
            cap,
            status: None,
            cost_header: None,
            body: Body::NotStarted,
        }
    }

    /// The response header named by the endpoint's `costHeader`, if it has one.
    pub fn cost_header_name(&self) -> Option<&str> {
        self.settlement.cost_header.as_deref()
    }

    /// Whether the response body (and so its `content-type`) can change the cost: only for a
    /// request priced per token, whose usage report is priced with the model's price.
    pub fn reads_body(&self) -> bool {
        self.settlement.model_price.is_some()
    }

    /// Response headers arrived: `content_type` picks how the body is read (`None` is fine
    /// when [`ResponseMeter::reads_body`] is false).
    pub fn on_headers(
        &mut self,
        status: Option<u32>,
        content_type: Option<&str>,
        cost_header: Option<String>,
    ) {
        self.status = status.or(Some(0));
        self.cost_header = cost_header;
        let sse = content_type.is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
        self.body = if !self.reads_body() {
            Body::Ignored
        } else if sse || self.settlement.streaming {
            Body::Sse(Box::new(SseUsageScanner::new()))
        } else {
            Body::Buffered(Some(Vec::new()))
        };
    }

    /// A cost header sent as a trailer (gRPC-style upstreams, HTTP/2) counts as well.
    pub fn on_cost_trailer(&mut self, value: String) {
        self.cost_header = Some(value);
    }

    /// Whether the next body chunk is worth copying out of the host (not before headers,
    /// not once a buffered body went past the cap).
    pub fn wants_body(&self) -> bool {
        matches!(self.body, Body::Sse(_) | Body::Buffered(Some(_)))
    }

    pub fn on_body(&mut self, chunk: &[u8]) {
        match &mut self.body {
            Body::NotStarted | Body::Ignored => {}
            Body::Sse(scanner) => scanner.feed(chunk),
            Body::Buffered(slot) => {
                let fits = slot
                    .as_ref()
                    .is_some_and(|b| b.len().saturating_add(chunk.len()) <= self.cap);
                match slot {
                    Some(buf) if fits => buf.extend_from_slice(chunk),
                    _ => *slot = None,
                }
            }
        }
    }

    /// The cost to charge, from what was seen; `None` when no response arrived at all
    /// (connection failure, client gone before the upstream answered): the reservation is
    /// released rather than charged.
    pub fn final_cost(&self) -> Option<Micros> {
        self.final_charge().map(|c| c.amount)
    }

    /// [`ResponseMeter::final_cost`] with the suspect report, if the upstream's report was not
    /// believed (docs/policy.md "Suspect reports").
    pub fn final_charge(&self) -> Option<Charge> {
        let status = self.status?;
        let usage = match &self.body {
            Body::NotStarted | Body::Ignored => None,
            Body::Sse(scanner) => scanner.usage(),
            Body::Buffered(Some(buf)) => usage_from_json(buf),
            Body::Buffered(None) => None,
        };
        Some(
            self.settlement
                .charge(status, self.cost_header.as_deref(), usage),
        )
    }

    pub fn estimate(&self) -> Micros {
        self.settlement.estimate
    }
}

#[cfg(test)]
mod tests;
