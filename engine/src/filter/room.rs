//! Room on the request path (managed mode, docs/sync-protocol.md "Room on the request path"):
//! a request that fits the fleet's room but not this Envoy's slice is held while one
//! `POST /v1/sync` asks the sidecar for a slice sized to it, then decided again against the
//! new lease. A request that cannot fit a counter's whole limit is refused `402` at once.

use std::time::Duration;

use crate::host::{Action, BufferType, LogLevel, MapType};
use pag0_policy::budget::NothingSpent;
use pag0_policy::{Decision, DenyCode, FinishOptions, Pending, Reservation};

use super::{control_plane_unavailable, Filter, State};
use crate::config::SidecarConfig;
use crate::host::Host;
use crate::managed::{self, LeaseView};
use crate::root::Shared;

// === impl Filter ===

impl<H: Host> Filter<H> {
    /// The leases refused the request although the fleet may have room (this Envoy's slice is
    /// short, or it holds no lease yet). Decided as if nothing were spent: a request that does
    /// not fit even then is over a whole limit, `402 BUDGET_EXCEEDED` with its scope. Else,
    /// once per request, hold it while the sidecar is asked for room; `503
    /// CONTROL_PLANE_UNAVAILABLE` if that cannot be asked (sidecar down, asked already).
    pub(super) fn short_of_room(
        &mut self,
        shared: &Shared,
        view: &LeaseView,
        pending: &Pending,
        body: Option<&[u8]>,
        opts: &FinishOptions,
    ) -> Action {
        let unavailable = control_plane_unavailable(&pending.project_id);
        let Some(policy) = shared.policy.as_deref() else {
            return self.deny(&unavailable);
        };
        let reservations = match policy.finish(pending, body, &NothingSpent, opts) {
            Decision::Deny(d) if d.code == DenyCode::BudgetExceeded => return self.deny(&d),
            Decision::Allow(a) => a.reservations,
            // Within budget it would wait for approval: the room is asked for all the same
            // (the approval is created against the new lease), on every counter it charges.
            Decision::NeedsApproval(a) => view
                .counters
                .iter()
                .map(|c| Reservation {
                    key: c.key.clone(),
                    amount: a.estimate,
                    limit: c.limit,
                })
                .collect(),
            Decision::Deny(_) => return self.deny(&unavailable),
        };
        let ask = match shared.sidecar() {
            Some(cfg) if !self.room_asked && !view.down => Some(cfg),
            _ => None,
        };
        if let Some(cfg) = ask {
            let now_ms = self.now_ms();
            match managed::prepare_room_call(
                &self.host,
                view,
                &reservations,
                shared.policy_version,
                now_ms,
            ) {
                Ok(Some(call)) => match self.dispatch_room(cfg, &call.body) {
                    Ok(token) => {
                        self.room_asked = true;
                        self.state = State::AwaitingRoom(Box::new(super::RoomWait {
                            token,
                            pending: pending.clone(),
                            body: body.map(<[u8]>::to_vec),
                            call,
                        }));
                        return Action::Pause;
                    }
                    Err(why) => self.host.log(
                        LogLevel::Warn,
                        &format!("pag0: could not ask the sidecar for budget room: {why}"),
                    ),
                },
                Ok(None) => {}
                Err(e) => self.host.log(
                    LogLevel::Error,
                    &format!("pag0: shared data error {e:?} asking for budget room"),
                ),
            }
        }
        // The retry finds a larger slice (or a first lease): the next sync, early, asks for
        // this request's room.
        managed::ask_for_room(&self.host, view, &reservations);
        if !view.down {
            let _ = managed::request_early(&self.host);
        }
        self.deny(&unavailable)
    }

    fn dispatch_room(&self, cfg: &SidecarConfig, body: &[u8]) -> Result<u32, String> {
        let auth = crate::approval::bearer(cfg);
        let headers = crate::approval::call_headers(cfg, "/v1/sync", &auth);
        self.host
            .dispatch_http_call(
                &cfg.cluster,
                &headers,
                body,
                // The request waits for this call: the sync loop's own bound.
                Duration::from_millis(cfg.timeout_ms),
            )
            .map_err(|e| format!("dispatch failed: {e:?}"))
    }

    /// The answer to a held request's room call (zero headers: failure or timeout): the
    /// leases it carries are taken, then the request is decided again, once. False if
    /// `token_id` is not this request's room call.
    pub(super) fn on_room_answer(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
    ) -> bool {
        if !matches!(&self.state, State::AwaitingRoom(w) if w.token == token_id) {
            return false;
        }
        let State::AwaitingRoom(wait) = std::mem::replace(&mut self.state, State::Start) else {
            return false;
        };
        let status = if num_headers == 0 {
            None
        } else {
            self.host
                .header(MapType::HttpCallResponseHeaders, ":status")
                .and_then(|s| s.trim().parse::<u32>().ok())
        };
        match status {
            Some(s) if (200..300).contains(&s) => {
                let answer = self.host.body(BufferType::HttpCallResponseBody, body_size);
                match managed::apply_room_answer(&self.host, &wait.call, &answer) {
                    Ok(true) => {}
                    Ok(false) => self.host.log(
                        LogLevel::Debug,
                        "pag0: budget room answer not taken (a usage batch was acknowledged meanwhile)",
                    ),
                    Err(e) => self.host.log(
                        LogLevel::Warn,
                        &format!("pag0: budget room answer not applied: {e}"),
                    ),
                }
            }
            Some(s) => self.host.log(
                LogLevel::Warn,
                &format!("pag0: the sidecar answered {s} to a budget room call"),
            ),
            None => self.host.log(
                LogLevel::Warn,
                "pag0: no answer to a budget room call within timeoutMs",
            ),
        }
        let Some(shared) = self.shared.clone() else {
            let deny = control_plane_unavailable(&wait.pending.project_id);
            self.deny(&deny);
            return true;
        };
        if self.finish(&shared, &wait.pending, wait.body.as_deref()) == Action::Continue {
            self.host.resume_http_request();
        }
        true
    }
}
