//! The per-request HTTP context: decide on the request, reserve, settle on the response.
//!
//! Life of one request:
//! headers → strip `x-pag0-*` → `check_head` → (hold and buffer the body if pricing needs it)
//! → `finish` → reserve every counter → forward → meter the response as it passes →
//! settle exactly once, at the end of the response or in `on_log` if it never ended.
//! "Exactly once" is structural: the reservation lives in `State::Reserved` and settling
//! moves it out.

use std::rc::Rc;
use std::sync::Arc;

use crate::counters::{Counters, ReserveError};
use crate::host::{Action, BufferType, Host, LogLevel, MapType};
use crate::managed::{self, LeaseView, UsageRecord};
use crate::meter::ResponseMeter;
use crate::reply;
use crate::root::Shared;
use decision::Note;
use pag0_policy::{
    Decision, Deny, DenyCode, FinishOptions, HeadOutcome, Micros, Pending, RequestHead, Reservation,
};
use request::RequestHeaders;
use snapshot::Snapshot;

/// Every request header with this prefix is the agent talking to pag0, never to the upstream.
const PAG0_HEADER_PREFIX: &str = "x-pag0-";

pub struct Filter<H> {
    host: H,
    /// `None` when the plugin configuration failed: every request is refused (fail closed).
    shared: Option<Rc<Shared>>,
    state: State,
    /// What the response cache keys on, read once in the request-headers callback (the
    /// lookup runs later, possibly from the body callback): `None` when the cache does not apply.
    cache_head: Option<crate::cache::RequestHead>,
    /// The approval headers and request line, read before `x-pag0-*` is stripped.
    approval: crate::approval::Incoming,
    /// This request's decision event (`filter/decision.rs`), from the request headers on.
    note: Option<Box<Note>>,
    /// Managed mode: this request has asked the sidecar for budget room once (`filter/room.rs`).
    room_asked: bool,
}

enum State {
    /// Nothing decided yet.
    Start,
    /// Headers passed; the body is being buffered to price the request.
    AwaitingBody { pending: Pending, buffered: usize },
    /// Counters hold this request's estimate until it is settled.
    Reserved(Box<Reserved>),
    /// Managed mode: held while the sidecar creates an approval (`filter/approval.rs`).
    AwaitingApproval { token: u32, project_id: Arc<str> },
    /// Managed mode: a replay, reserved and held while the sidecar consumes its approval.
    AwaitingConsume { token: u32, reserved: Box<Reserved> },
    /// Managed mode: held while the sidecar is asked for budget room (`filter/room.rs`).
    AwaitingRoom(Box<RoomWait>),
    /// Refused, or settled: nothing left to do.
    Done,
}

/// A request held for a budget room call: what deciding it again needs.
struct RoomWait {
    token: u32,
    pending: Pending,
    body: Option<Vec<u8>>,
    call: managed::RoomCall,
}

struct Reserved {
    project_id: Arc<str>,
    client_id: Arc<str>,
    /// Managed mode: the `:authority`, reported with the usage record.
    host: Option<String>,
    /// The catalogue's estimate (what the settlement falls back to, and what learning
    /// compares the report with).
    estimate: Micros,
    /// What each counter holds for this request: the estimate or the learned figure.
    reserved: Micros,
    /// Where a believed report is learned (`crate::learned`); `None`: not learned.
    learn_key: Option<Arc<str>>,
    reservations: Vec<Reservation>,
    meter: ResponseMeter,
    /// A cache miss of a cache-enabled project: the response, collected for storing.
    cache: Option<crate::cache::Fill>,
}

// === impl Filter ===

impl<H: Host> Filter<H> {
    pub fn new(host: H, shared: Option<Rc<Shared>>) -> Self {
        Filter {
            host,
            shared,
            state: State::Start,
            cache_head: None,
            approval: Default::default(),
            note: None,
            room_asked: false,
        }
    }

    fn deny(&mut self, deny: &Deny) -> Action {
        if let Some(s) = &self.shared {
            s.metrics.denied(&self.host, deny.code);
        }
        if let Some(n) = &mut self.note {
            n.deny(deny);
        }
        self.publish();
        reply::send_deny(&self.host, deny);
        self.state = State::Done;
        Action::Pause
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.host.now().timestamp_millis()).unwrap_or(0)
    }

    /// Standalone mode, once the decision is final: the event becomes this stream's filter
    /// state for the access log (`filter/decision.rs`).
    fn publish(&self) {
        if self.shared.as_ref().is_some_and(|s| s.sidecar().is_none()) {
            if let Some(line) = self.note.as_ref().and_then(|n| n.line()) {
                self.host.set_property(decision::PROPERTY, line.as_bytes());
            }
        }
    }

    /// The stream is over. Managed mode: the event goes to this worker's buffer for the
    /// sidecar, exactly once (the note is taken).
    fn log_decision(&mut self) {
        let Some(note) = self.note.take() else {
            return;
        };
        let Some(shared) = &self.shared else { return };
        let Some((cfg, buffer)) = shared.decision_log() else {
            return;
        };
        let Some(line) = note.line() else { return };
        match buffer.push(&self.host, line, cfg.decision_queue_max) {
            Ok(0) => {}
            Ok(dropped) => shared.metrics.decisions_dropped(&self.host, dropped),
            Err(e) => self.host.log(
                LogLevel::Error,
                &format!("pag0: shared data error {e:?} queueing decision events"),
            ),
        }
    }

    /// Completes the decision (body known) and reserves; `Continue` forwards the request.
    fn finish(&mut self, shared: &Shared, pending: &Pending, body: Option<&[u8]>) -> Action {
        let Some(policy) = shared.policy.as_deref() else {
            return self.deny(&no_policy_yet());
        };
        if let (Some(n), Some(b)) = (&mut self.note, body) {
            n.body(b);
        }
        let counters = Counters::with_slices(&self.host, shared.slices().map(|s| &**s));
        let view = match shared.sidecar() {
            None => None,
            Some(cfg) => {
                let now = self.host.now();
                let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
                match LeaseView::read(
                    &self.host,
                    policy,
                    &pending.project_id,
                    now,
                    now_ms,
                    cfg.failure_mode,
                ) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        self.host.log(
                            LogLevel::Error,
                            &format!("pag0: shared data error {e:?} reading leases"),
                        );
                        return self.deny(&reply::counters_unavailable(&pending.project_id));
                    }
                }
            }
        };
        // Managed mode: a replay skips the approval requirement here; the sidecar decides it.
        let replay_id = shared.sidecar().and(self.approval.approval_id.clone());
        // The learned figure of the request's catalogue entry (crate::learned): one read.
        let learned = policy
            .learn_key(pending)
            .and_then(|k| crate::learned::read(&self.host, k));
        let opts = FinishOptions {
            approved_replay: replay_id.is_some(),
            learned,
        };
        let decision = match &view {
            None => policy.finish(pending, body, &counters, &opts),
            Some(v) => policy.finish(pending, body, v, &opts),
        };
        let allow = match decision {
            Decision::Allow(a) => a,
            Decision::Deny(d) => {
                if d.code == DenyCode::BudgetExceeded {
                    if let Some(v) = view.as_ref().filter(|v| v.asks_for_room(d.scope, None)) {
                        return self.short_of_room(shared, v, pending, body, &opts);
                    }
                }
                return self.deny(&d);
            }
            Decision::NeedsApproval(a) => {
                if let Some(n) = &mut self.note {
                    n.estimate(a.estimate, None);
                }
                return match shared.sidecar() {
                    Some(cfg) => self.ask_approval(shared, cfg, &a, body.unwrap_or_default()),
                    None => self.deny(&a.into_standalone_deny()),
                };
            }
        };
        if let Some(n) = &mut self.note {
            n.estimate(allow.estimate, allow.model.as_deref());
        }
        // The response cache (filter/cache.rs): after the decision, before any reservation.
        // Not for an approval replay: it must be consumed at the sidecar (used once, never
        // answered from the cache), and its response is not stored either.
        let lookup = match replay_id {
            Some(_) => None,
            None => self.cache_lookup(shared, &allow, body),
        };
        let cache = match lookup {
            Some(cache::Lookup::Hit(savings)) => {
                if let Some(n) = &mut self.note {
                    n.cache_hit(savings);
                }
                self.publish();
                self.state = State::Done;
                return Action::Pause;
            }
            Some(cache::Lookup::Miss(fill)) => Some(fill),
            None => None,
        };
        // Managed mode: the same reservations, checked against the leases' allowances.
        let limited = match &view {
            None => None,
            Some(v) => match v.admission(&allow.reservations) {
                Some(l) => Some(l),
                None => return self.deny(&control_plane_unavailable(&allow.project_id)),
            },
        };
        let to_take = limited.as_deref().unwrap_or(&allow.reservations);
        match counters.reserve_all(to_take) {
            Ok(()) => {}
            Err(ReserveError::NoRoom { index, used }) => {
                if let Some(v) = &view {
                    let key = allow.reservations.get(index).map(|r| &r.key);
                    if v.asks_for_room(None, key) {
                        return self.short_of_room(shared, v, pending, body, &opts);
                    }
                }
                let deny = match (allow.reservations.get(index), to_take.get(index)) {
                    (Some(r), Some(taken)) => {
                        let shown = if view.is_some() {
                            managed::presented_used(r.limit, taken.limit, used)
                        } else {
                            used
                        };
                        reply::budget_exceeded(&allow.project_id, r, shown)
                    }
                    _ => reply::counters_unavailable(&allow.project_id),
                };
                return self.deny(&deny);
            }
            Err(ReserveError::Host(e)) => {
                self.host.log(
                    LogLevel::Error,
                    &format!("pag0: shared data error {e:?} while reserving"),
                );
                return self.deny(&reply::counters_unavailable(&allow.project_id));
            }
        }
        if let Some(v) = &view {
            if v.runs_low(allow.reserved) {
                let _ = managed::request_early(&self.host);
            }
        }
        let host = shared
            .sidecar()
            // Read at the headers: Envoy refuses request-header reads once they went on.
            .map(|_| self.approval.authority.clone());
        let reserved = Box::new(Reserved {
            project_id: allow.project_id,
            client_id: allow.client_id,
            host,
            estimate: allow.estimate,
            reserved: allow.reserved,
            learn_key: allow.learn_key,
            reservations: allow.reservations,
            meter: ResponseMeter::new(allow.settlement, shared.max_body_bytes),
            cache,
        });
        if let (Some(id), Some(cfg)) = (replay_id, shared.sidecar()) {
            return self.consume_approval(shared, cfg, &id, reserved, body.unwrap_or_default());
        }
        shared.metrics.allowed(&self.host, reserved.reserved);
        let now_ms = self.now_ms();
        if let Some(n) = &mut self.note {
            n.forwarded(now_ms);
        }
        self.state = State::Reserved(reserved);
        Action::Continue
    }

    /// Settles the reservation if it is still open: charges what the response reported,
    /// or releases it if no response arrived. Runs at most once per request.
    fn settle(&mut self) {
        self.release_held();
        if !matches!(self.state, State::Reserved(_)) {
            return;
        }
        let State::Reserved(r) = std::mem::replace(&mut self.state, State::Done) else {
            return;
        };
        let charge = r.meter.final_charge();
        let actual = charge.as_ref().map_or(Micros::ZERO, |c| c.amount);
        let charge_reported = charge.as_ref().is_some_and(|c| c.reported);
        let now_ms = self.now_ms();
        if let Some(n) = &mut self.note {
            n.settled(actual, now_ms);
        }
        self.publish();
        let suspect = charge.and_then(|c| c.suspect);
        if let Some(s) = &suspect {
            self.host.log(
                LogLevel::Warn,
                &format!(
                    "pag0: suspect cost report for project {} ({}: {:?}); charged the bound {actual}",
                    r.project_id,
                    s.reason.as_str(),
                    s.raw
                ),
            );
            if let Some(sh) = &self.shared {
                sh.metrics.suspect(&self.host);
            }
        }
        let slices = self.shared.as_ref().and_then(|s| s.slices().cloned());
        let counters = Counters::with_slices(&self.host, slices.as_deref());
        if let Err(e) = counters.settle_all(&r.reservations, actual) {
            self.host.log(
                LogLevel::Error,
                &format!("pag0: shared data error {e:?} while settling"),
            );
        }
        let reported = charge_reported && suspect.is_none();
        if let (Some(key), true) = (&r.learn_key, reported) {
            if let Err(e) = crate::learned::observe(&self.host, key, r.estimate, actual) {
                self.host.log(
                    LogLevel::Warn,
                    &format!("pag0: shared data error {e:?} learning the cost of {key}"),
                );
            }
        }
        if let Some(host) = &r.host {
            if actual > Micros::ZERO || suspect.is_some() {
                let record =
                    UsageRecord {
                        amount: actual,
                        counters: r.reservations.iter().map(|x| x.key.storage_key()).collect(),
                        project_id: Some(r.project_id.to_string()),
                        client_id: Some(r.client_id.to_string()),
                        host: Some(pag0_policy::matching::request_host(host).to_string()),
                        at: Some(i64::try_from(now_ms).unwrap_or(i64::MAX)),
                        cache_hit: false,
                        savings: None,
                        suspect: suspect.map(|s| managed::SuspectReport {
                            raw: s.raw,
                            reason: s.reason.as_str().to_string(),
                        }),
                        learn: r.learn_key.as_ref().filter(|_| reported).map(|k| {
                            managed::LearnFacts {
                                key: k.to_string(),
                                estimate: r.estimate,
                            }
                        }),
                    };
                let usage = self.shared.as_ref().and_then(|s| s.usage().cloned());
                let recorded = match &usage {
                    Some(u) => u.push(&self.host, record),
                    None => managed::record(&self.host, record),
                };
                if let Err(e) = recorded {
                    self.host.log(
                        LogLevel::Error,
                        &format!("pag0: shared data error {e:?} recording usage"),
                    );
                }
            }
        }
        if let Some(s) = &self.shared {
            s.metrics.settled(&self.host, r.reserved, actual);
        }
    }

    fn body_too_large(&mut self, shared: &Shared, pending: &Pending) -> Action {
        let mut deny = Deny::new(
            DenyCode::BodyTooLarge,
            format!(
                "request body is over {} bytes (maxBodyBytes); pag0 needs the whole body to price \
                 this request",
                shared.max_body_bytes
            ),
        );
        deny.project_id = Some(pending.project_id.clone());
        self.deny(&deny)
    }
}

/// Managed mode before the first policy from the sidecar.
fn no_policy_yet() -> Deny {
    Deny::new(
        DenyCode::ControlPlaneUnavailable,
        "no policy from the pag0 sidecar yet (managed mode)",
    )
}

fn control_plane_unavailable(project_id: &Arc<str>) -> Deny {
    let mut d = Deny::new(
        DenyCode::ControlPlaneUnavailable,
        "this Envoy holds no budget lease with room for the request (the pag0 sidecar is \
         unreachable, or has not granted a larger slice yet); retry",
    );
    d.project_id = Some(project_id.clone());
    d
}

/// The `x-pag0-*` response headers pag0 gives a meaning to and does not set on an allowed,
/// uncached response (those three, `reply::allow_headers`, are replaced): an upstream's value
/// for any of them is removed, so no upstream can forge a pag0 decision.
const RESPONSE_HEADERS_REMOVED: [&str; 3] = [
    "x-pag0-code",
    "x-pag0-cache",
    crate::approval::APPROVAL_ID_HEADER,
];

/// Reads `:status`, `content-type` (if the meter or `read_content_type` wants it) and the
/// endpoint's cost header (if any) into the meter.
fn meter_response<H: Host + ?Sized>(
    host: &H,
    meter: &mut ResponseMeter,
    read_content_type: bool,
) -> (Option<u32>, Option<String>) {
    let map = MapType::HttpResponseHeaders;
    let status = host
        .header(map, ":status")
        .and_then(|s| s.trim().parse::<u32>().ok());
    // Only a body that can change the cost is read, and only then does its type matter (the
    // cache, which stores the type, reads it from its own copy of the map).
    let content_type = if meter.reads_body() || read_content_type {
        host.header(map, "content-type")
    } else {
        None
    };
    let cost = meter.cost_header_name().and_then(|n| host.header(map, n));
    meter.on_headers(status, content_type.as_deref(), cost);
    (status, content_type)
}

/// Removes every `x-pag0-*` header: from a request refused for want of a configuration, and
/// from a response collected for the cache (whose headers are copied anyway), so nothing
/// `x-pag0-*` is stored. (An allowed request's are found by `RequestHeaders::take`.)
fn strip_pag0_headers(host: &dyn Host, map: MapType) {
    let is_pag0 = |name: &str| {
        name.get(..PAG0_HEADER_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PAG0_HEADER_PREFIX))
    };
    for name in host.header_names_where(map, &is_pag0) {
        host.remove_header(map, &name);
    }
}

/// The HTTP context's callbacks, as the host calls them (the cdylib's `HttpContext` delegates
/// here, mapping [`Action`] to proxy-wasm's).
impl<H: Host> Filter<H> {
    /// A call this request dispatched (an approval, budget room) was answered or failed.
    pub fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if self.on_room_answer(token_id, num_headers, body_size) {
            return;
        }
        self.on_approval_answer(token_id, num_headers, body_size);
    }

    pub fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            strip_pag0_headers(&self.host, MapType::HttpRequestHeaders);
            return self.deny(&Deny::new(
                DenyCode::ControlPlaneUnavailable,
                "the pag0 filter has no valid configuration (see Envoy's log)",
            ));
        };
        // One copy of the request headers serves every read below and the strip.
        let req = Snapshot::read(&self.host, MapType::HttpRequestHeaders);
        let RequestHeaders {
            api_key,
            requires_approval,
            approval,
            strip,
        } = RequestHeaders::take(&req, &shared.api_key_header);
        // The request line is kept in `self.approval` (an approval binds to it).
        self.approval = approval;
        // Already gone from `req`: removed from the host's map only.
        for name in &strip {
            self.host.remove_header(MapType::HttpRequestHeaders, name);
        }

        let line = &self.approval;
        let now = self.host.now();
        let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        let mut note = Box::new(Note::begin(now_ms, line, shared.policy_version));
        if requires_approval {
            note.requires_approval();
        }
        self.note = Some(note);
        let head = RequestHead {
            api_key: api_key.as_deref(),
            method: &line.method,
            authority: &line.authority,
            path: &line.path,
            requires_approval,
        };
        let Some(policy) = shared.policy.as_deref() else {
            return self.deny(&no_policy_yet());
        };
        let outcome = policy.check_head_with(&head, now, |k| shared.keys.digest(k));
        if let HeadOutcome::Continue(p) = &outcome {
            if let Some(n) = &mut self.note {
                n.client(&p.project_id, &p.client_id);
            }
            self.cache_head = crate::cache::RequestHead::capture(
                &req,
                policy,
                &p.project_id,
                [&line.method, &line.authority, &line.path],
            );
        }
        if matches!(&outcome, HeadOutcome::Continue(p) if p.needs_body()) {
            // Priced per token: settling reads `usage` from the response, which a compressed
            // body would hide (leaving the estimate standing), so ask the upstream for identity.
            // Done here because the headers may leave for the upstream before the body is read.
            self.host
                .remove_header(MapType::HttpRequestHeaders, "accept-encoding");
        }
        match outcome {
            HeadOutcome::Deny(d) => self.deny(&d),
            HeadOutcome::Continue(pending)
                if !end_of_stream
                    && (pending.needs_body() || self.binding_needs_body(&shared, &pending)) =>
            {
                // Not `Pause`: Envoy turns a paused header callback into "stop everything"
                // (StopAllIterationAndWatermark) and never calls the body callback. The body is
                // held by returning `Pause` from `on_http_request_body` instead, so the headers
                // travel on to the next filter now — see plugin/README.md on adding Envoy's
                // buffer filter after pag0 so a refused request never reaches the upstream.
                self.state = State::AwaitingBody {
                    pending,
                    buffered: 0,
                };
                Action::Continue
            }
            HeadOutcome::Continue(pending) => self.finish(&shared, &pending, None),
        }
    }

    pub fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let State::AwaitingBody { pending, buffered } = &mut self.state else {
            return Action::Continue;
        };
        // While paused, the host buffers and `body_size` is everything received so far.
        *buffered = body_size;
        if body_size > shared.max_body_bytes {
            let pending = pending.clone();
            return self.body_too_large(&shared, &pending);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let pending = pending.clone();
        let body = self.host.body(BufferType::HttpRequestBody, body_size);
        self.finish(&shared, &pending, Some(&body))
    }

    pub fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // A request with trailers never reports end_of_stream on a body chunk.
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let State::AwaitingBody { pending, buffered } = &self.state else {
            return Action::Continue;
        };
        let (pending, size) = (pending.clone(), *buffered);
        let body = self.host.body(BufferType::HttpRequestBody, size);
        self.finish(&shared, &pending, Some(&body))
    }

    pub fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if let Some(project_id) = self.held_project() {
            // The upstream answered while pag0 held the request for the sidecar (possible only
            // without a buffer filter after pag0): it must not reach the agent unapproved.
            self.release_held();
            let mut deny = Deny::new(
                DenyCode::ControlPlaneUnavailable,
                "the upstream answered while pag0 was still asking the sidecar (an approval, or \
                 budget room)",
            );
            deny.project_id = Some(project_id);
            return self.deny(&deny);
        }
        if let State::AwaitingBody { pending, .. } = &self.state {
            // The upstream answered before the request body (needed for the price) was
            // complete: nothing is reserved, so this response must not reach the agent
            // unpriced. Only possible without a buffer filter after pag0 (see README).
            let mut deny = Deny::new(
                DenyCode::BadRequestBody,
                "the upstream answered before pag0 had read the request body it needs to price \
                 the request",
            );
            deny.project_id = Some(pending.project_id.clone());
            return self.deny(&deny);
        }
        if !matches!(self.state, State::Reserved(_)) {
            return Action::Continue;
        }
        let now_ms = self.now_ms();
        let State::Reserved(r) = &mut self.state else {
            return Action::Continue;
        };
        let map = MapType::HttpResponseHeaders;
        let status = match &mut r.cache {
            // A response that may be stored: its headers are copied anyway, and the one copy
            // serves the reads below and a strip of every `x-pag0-*`.
            Some(fill) => {
                let resp = Snapshot::read(&self.host, map);
                let (status, content_type) = meter_response(&resp, &mut r.meter, true);
                strip_pag0_headers(&resp, map);
                for (name, value) in reply::allow_headers(&r.project_id, r.estimate) {
                    resp.set_header(map, name, &value);
                }
                fill.on_response_headers(&resp, status, content_type.as_deref());
                status
            }
            // Otherwise no copy of the map (the most expensive host call on this path): two
            // or three single reads, and pag0's own headers replaced or removed by name.
            None => {
                let (status, _) = meter_response(&self.host, &mut r.meter, false);
                for name in RESPONSE_HEADERS_REMOVED {
                    self.host.remove_header(map, name);
                }
                for (name, value) in reply::allow_headers(&r.project_id, r.estimate) {
                    self.host.set_header(map, name, &value);
                }
                status
            }
        };
        if let Some(n) = &mut self.note {
            n.first_byte(status, now_ms);
        }
        if end_of_stream {
            self.store_cached();
            self.settle();
        }
        Action::Continue
    }

    pub fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // Copy the chunk and let it through: the agent's stream is never held back.
        if let State::Reserved(r) = &mut self.state {
            if body_size > 0 && r.meter.wants_body() {
                r.meter
                    .on_body(&self.host.body(BufferType::HttpResponseBody, body_size));
            }
            if let Some(fill) = r.cache.as_mut().filter(|f| body_size > 0 && f.wants_body()) {
                fill.on_body(&self.host.body(BufferType::HttpResponseBody, body_size));
            }
        }
        if end_of_stream {
            self.store_cached();
            self.settle();
        }
        Action::Continue
    }

    pub fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if let State::Reserved(r) = &mut self.state {
            let cost = r
                .meter
                .cost_header_name()
                .and_then(|n| self.host.header(MapType::HttpResponseTrailers, n));
            if let Some(v) = cost {
                r.meter.on_cost_trailer(v);
            }
        }
        self.settle();
        Action::Continue
    }

    pub fn on_log(&mut self) {
        // The stream is over, whatever happened (reset, timeout, client gone): nothing may
        // stay reserved.
        self.settle();
        self.log_decision();
    }
}

mod approval;

#[cfg(test)]
mod approval_tests;

mod cache;
mod decision;

mod request;
mod room;
mod snapshot;

#[cfg(test)]
mod tests;
