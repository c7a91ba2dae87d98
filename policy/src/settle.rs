//! Settlement: the actual cost of a request, from what the upstream reports (docs/policy.md#settlement-after-the-response).

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
    /// The most this request is charged whatever the upstream reports: a report above it is
    /// *suspect* (see [`Settlement::bound_for`]).
    pub bound: Micros,
}

/// How much more than its estimate a request may plausibly cost before a report is suspect.
pub const SUSPECT_FACTOR: u64 = 10;

/// Reports at or above 2^63 micro-USD are always suspect (and never stored raw in a counter).
pub const SUSPECT_ABSOLUTE: Micros = Micros::new(1 << 63);

/// What settling one request charges, and why a report was not believed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub amount: Micros,
    pub suspect: Option<Suspect>,
    /// `amount` is a believed report (a cost header, or usage priced per token): what the
    /// learned estimates learn from ([`crate::learn`]). False when the estimate stood, for an
    /// error without a report, and for a suspect report.
    pub reported: bool,
}

/// A cost report that was not charged as reported: what it said, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspect {
    /// The report as received: the cost header's value (at most [`MAX_RAW_REPORT_BYTES`]),
    /// or `prompt_tokens=…,completion_tokens=…` for a usage report.
    pub raw: String,
    pub reason: SuspectReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuspectReason {
    /// The cost header is not a whole number of micro-USD (the next rule applies).
    Unparsable,
    /// The report is above what the request could plausibly cost (the bound is charged).
    AboveBound,
}

/// The longest raw report kept with a suspect record (longer values are cut, on a char boundary).
pub const MAX_RAW_REPORT_BYTES: usize = 256;

/// Longest SSE event (all its `data:` lines) the scanner keeps; longer events are skipped.
/// A usage event is a few hundred bytes; content events can be long, but never carry usage
/// in practice, so skipping them bounds memory per stream.
pub const MAX_SSE_EVENT_BYTES: usize = 64 * 1024;

/// Longest single line kept while looking for its end.
const MAX_SSE_LINE_BYTES: usize = MAX_SSE_EVENT_BYTES + 16;

// === impl Settlement ===

impl SuspectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuspectReason::Unparsable => "unparsable",
            SuspectReason::AboveBound => "above_bound",
        }
    }
}

impl Settlement {
    /// The most a request is charged, whatever the upstream reports:
    /// `max(SUSPECT_FACTOR × estimate, cap)` where `cap` is the lowest `maxPerRequest` that
    /// applies — the operator's own "no single request costs more" — and, when both are 0 (a
    /// free endpoint that reports a cost), the lowest budget limit; never above the lowest
    /// budget `limit` the request reserved against (one report cannot charge more than one
    /// whole budget) and always below 2^63. Saturating: no input overflows.
    pub fn bound_for(
        estimate: Micros,
        cap: Option<Micros>,
        limits: impl IntoIterator<Item = Micros>,
    ) -> Micros {
        let lowest_limit = limits.into_iter().min();
        let plausible = Micros::new(estimate.get().saturating_mul(SUSPECT_FACTOR))
            .max(cap.unwrap_or(Micros::ZERO));
        let plausible = if plausible == Micros::ZERO {
            lowest_limit.unwrap_or(Micros::MAX)
        } else {
            plausible
        };
        let bounded = match lowest_limit {
            Some(l) => plausible.min(l),
            None => plausible,
        };
        let top = Micros::new(SUSPECT_ABSOLUTE.get() - 1);
        bounded.min(top).max(estimate.min(top))
    }

    /// A cost header's value: a whole number of micro-USD (`"1500"`). Anything else is ignored.
    pub fn cost_header_value(v: &str) -> Option<Micros> {
        Micros::parse(v.trim()).ok()
    }

    /// The amount of [`Settlement::charge`].
    pub fn final_cost(
        &self,
        status: u32,
        cost_header: Option<&str>,
        usage: Option<Usage>,
    ) -> Micros {
        self.charge(status, cost_header, usage).amount
    }

    /// The charge for the request (docs/policy.md#settlement-after-the-response), in this order:
    /// 1. the endpoint's cost header, if it has one and the value parses;
    /// 2. reported usage priced with the request's model price (ceil per 1k tokens);
    /// 3. an upstream error status (>= 400) without a report costs 0;
    /// 4. otherwise the estimate stands.
    ///
    /// A report above [`Settlement::bound`] (a number at or above 2^63, one that overflows,
    /// usage that cannot be priced without overflow) is charged the bound and returned as
    /// [`Suspect`] with the raw report. A cost header that does not parse is suspect too, and
    /// the next rule decides the amount.
    pub fn charge(&self, status: u32, cost_header: Option<&str>, usage: Option<Usage>) -> Charge {
        let mut suspect = None;
        if let (Some(_), Some(raw)) = (&self.cost_header, cost_header) {
            match Micros::parse(raw.trim()) {
                Ok(c) if c <= self.bound => return Charge::plain(c),
                Ok(_) | Err(crate::money::MoneyError::Overflow) => {
                    return self.suspect(raw, SuspectReason::AboveBound)
                }
                Err(_) => suspect = Some(Suspect::new(raw, SuspectReason::Unparsable)),
            }
        }
        let mut reported = false;
        let amount = if let (Some(price), Some(u)) = (self.model_price, usage) {
            match crate::pricing::usage_cost(price, u) {
                Ok(c) if c <= self.bound => {
                    reported = true;
                    c
                }
                _ => {
                    let raw = format!(
                        "prompt_tokens={},completion_tokens={}",
                        u.prompt_tokens, u.completion_tokens
                    );
                    return self.suspect(&raw, SuspectReason::AboveBound);
                }
            }
        } else if status >= 400 {
            Micros::ZERO
        } else {
            self.estimate
        };
        Charge {
            amount,
            reported: reported && suspect.is_none(),
            suspect,
        }
    }

    fn suspect(&self, raw: &str, reason: SuspectReason) -> Charge {
        Charge {
            amount: self.bound,
            suspect: Some(Suspect::new(raw, reason)),
            reported: false,
        }
    }
}

// === impl Charge ===

impl Charge {
    /// A believed report of `amount`.
    pub fn plain(amount: Micros) -> Self {
        Charge {
            amount,
            suspect: None,
            reported: true,
        }
    }
}

// === impl Suspect ===

impl Suspect {
    pub fn new(raw: &str, reason: SuspectReason) -> Self {
        let mut end = raw.len().min(MAX_RAW_REPORT_BYTES);
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        Suspect {
            raw: raw.get(..end).unwrap_or_default().to_string(),
            reason,
        }
    }
}

/// Reads an OpenAI-style `usage` object (`prompt_tokens`/`completion_tokens`, or
/// `input_tokens`/`output_tokens`) from a JSON response body. `None` if there is none.
pub fn usage_from_json(body: &[u8]) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct Outer {
        #[serde(default)]
        usage: Option<serde_json::Value>,
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let outer: Outer = serde_json::from_slice(body).ok()?;
    usage_from_value(outer.usage.as_ref()?)
}

fn usage_from_value(v: &serde_json::Value) -> Option<Usage> {
    let obj = v.as_object()?;
    let field = |a: &str, b: &str| {
        obj.get(a)
            .or_else(|| obj.get(b))
            .and_then(serde_json::Value::as_u64)
    };
    let prompt = field("prompt_tokens", "input_tokens");
    let completion = field("completion_tokens", "output_tokens");
    if prompt.is_none() && completion.is_none() {
        return None;
    }
    Some(Usage {
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: completion.unwrap_or(0),
    })
}

/// Finds the usage report in a `text/event-stream` response fed in arbitrary chunks.
///
/// Follows the SSE framing: lines end in `\n`, `\r\n` or `\r`; `data:` lines of one event are
/// joined with `\n`; a blank line ends the event. The usage of the last event that carried one
/// wins; `[DONE]` and events without usage are ignored. Memory is bounded by
/// [`MAX_SSE_EVENT_BYTES`]: an over-long event is skipped.
#[derive(Clone, Debug, Default)]
pub struct SseUsageScanner {
    /// The current, unfinished line.
    line: Vec<u8>,
    line_overflow: bool,
    /// `data` of the current event so far.
    event: Vec<u8>,
    event_has_data: bool,
    event_overflow: bool,
    /// The previous chunk ended in `\r`: a leading `\n` belongs to that line ending.
    after_cr: bool,
    usage: Option<Usage>,
}

// === impl SseUsageScanner ===

impl SseUsageScanner {
    pub fn new() -> Self {
        SseUsageScanner::default()
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        if rest.is_empty() {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(r) = rest.strip_prefix(b"\n") {
                rest = r;
            }
        }
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    let (part, tail) = rest.split_at(i);
                    self.push_line_bytes(part);
                    self.end_line();
                    let (eol, after) = tail.split_at(1);
                    rest = after;
                    if eol == b"\r" {
                        match rest.strip_prefix(b"\n") {
                            Some(r) => rest = r,
                            None if rest.is_empty() => self.after_cr = true,
                            None => {}
                        }
                    }
                }
                None => {
                    self.push_line_bytes(rest);
                    rest = &[];
                }
            }
        }
    }

    /// The usage of the last event that carried one. An event still open at the end of the
    /// stream (no closing blank line) counts too.
    pub fn usage(&self) -> Option<Usage> {
        let mut pending = self.clone();
        pending.end_line();
        pending.end_event();
        pending.usage
    }

    /// Bytes held for the unfinished line and event (bounded by [`MAX_SSE_EVENT_BYTES`]).
    pub fn buffered(&self) -> (usize, usize) {
        (self.line.len(), self.event.len())
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) {
        if self.line_overflow {
            return;
        }
        if self.line.len() + bytes.len() > MAX_SSE_LINE_BYTES {
            self.line_overflow = true;
            self.line.clear();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    fn end_line(&mut self) {
        let overflow = std::mem::take(&mut self.line_overflow);
        let line = std::mem::take(&mut self.line);
        if overflow {
            // We cannot tell what the line was: if it was data, the event is incomplete.
            self.event_overflow = true;
            return;
        }
        if line.is_empty() {
            self.end_event();
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return, // comment
            Some(i) => {
                let (n, v) = line.split_at(i);
                let v = v.get(1..).unwrap_or_default();
                (n, v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line.as_slice(), &[][..]),
        };
        if name != b"data" || self.event_overflow {
            return;
        }
        if self.event_has_data {
            self.event.push(b'\n');
        }
        self.event_has_data = true;
        if self.event.len() + value.len() > MAX_SSE_EVENT_BYTES {
            self.event_overflow = true;
            self.event.clear();
            return;
        }
        self.event.extend_from_slice(value);
        self.line = line;
        self.line.clear();
    }

    fn end_event(&mut self) {
        let data = std::mem::take(&mut self.event);
        let overflow = std::mem::take(&mut self.event_overflow);
        let had_data = std::mem::take(&mut self.event_has_data);
        if overflow || !had_data || data.trim_ascii() == b"[DONE]" {
            return;
        }
        // Cheap pre-filter: most events are content deltas without a usage object.
        if !contains(&data, b"\"usage\"") {
            return;
        }
        if let Some(u) = usage_from_json(&data) {
            self.usage = Some(u);
        }
        self.event = data;
        self.event.clear();
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests;
