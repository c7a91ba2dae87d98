//! The approval branches of the request lifecycle (managed mode, docs/approvals.md):
//!
//! - `NeedsApproval` → hold the request, `POST /v1/approvals`, answer the agent `202` with
//!   `x-pag0-approval-id` (or `503 CONTROL_PLANE_UNAVAILABLE` if the sidecar does not create it,
//!   whatever `failureMode`: an unapproved request is never forwarded).
//! - A replay (`x-pag0-approval-id`) → decided with `approved_replay: true` (budgets, lists and
//!   hours checked again), reserved, held while `POST /v1/approvals/{id}/consume` runs; `200`
//!   forwards it, a `403 APPROVAL_*` refuses it with that code and releases the reservation,
//!   anything else is `503` (never forwarded).

use std::sync::Arc;
use std::time::Duration;

use crate::host::{Action, BufferType, LogLevel, MapType};
use pag0_policy::{ApprovalNeeded, Decision, Deny, DenyCode, FinishOptions, Micros, Pending};

use super::{Filter, Reserved, State};
use crate::approval::{self, Consumed, CreateRequest};
use crate::config::SidecarConfig;
use crate::counters::Counters;
use crate::host::Host;
use crate::root::Shared;

/// Approval calls wait at least this long (the sidecar writes to its store before answering;
/// `timeoutMs` is tuned for the sync loop).
const MIN_CALL_TIMEOUT_MS: u64 = 2000;

impl<H: Host> Filter<H> {
    /// At the headers of a request with a body whose price does not need it: the approval
    /// binding does (SHA-256 of the body) if this is a replay or would need approval.
    pub(super) fn binding_needs_body(&self, shared: &Shared, pending: &Pending) -> bool {
        if shared.sidecar().is_none() {
            return false;
        }
        if self.approval.approval_id.is_some() {
            return true;
        }
        let Some(policy) = shared.policy.as_deref() else {
            return false;
        };
        matches!(
            policy.finish(
                pending,
                None,
                &approval::NothingSpent,
                &FinishOptions::default()
            ),
            Decision::NeedsApproval(_)
        )
    }

    /// `NeedsApproval` in managed mode: ask the sidecar to create the approval, hold the request.
    pub(super) fn ask_approval(
        &mut self,
        shared: &Shared,
        cfg: &SidecarConfig,
        needed: &ApprovalNeeded,
        body: &[u8],
    ) -> Action {
        // "Never the requester" needs a requester: one parseable address (docs/approvals.md).
        let Some(requester) = self
            .approval
            .requested_by
            .as_deref()
            .and_then(pag0_policy::approval::normalise_email)
        else {
            let mut deny = Deny::new(
                DenyCode::RequestedByInvalid,
                match &self.approval.requested_by {
                    None => "this request needs approval: send x-pag0-requested-by with the \
                             requester's e-mail address"
                        .to_string(),
                    Some(v) => format!(
                        "this request needs approval: x-pag0-requested-by {:?} is not one e-mail \
                         address",
                        v.chars().take(80).collect::<String>()
                    ),
                },
            );
            deny.project_id = Some(needed.project_id.clone());
            return self.deny(&deny);
        };
        self.approval.requested_by = Some(requester);
        let payload = approval::create_body(&CreateRequest {
            incoming: &self.approval,
            project_id: &needed.project_id,
            client_id: &needed.client_id,
            body,
            estimate: needed.estimate,
            policy_version: shared.policy_version,
        });
        match self.call(cfg, "/v1/approvals", &payload) {
            Ok(token) => {
                self.state = State::AwaitingApproval {
                    token,
                    project_id: needed.project_id.clone(),
                };
                Action::Pause
            }
            Err(why) => self.deny(&sidecar_failed(
                &needed.project_id,
                "create the approval",
                &why,
            )),
        }
    }

    /// A replay that passed every other check and is reserved: ask the sidecar to consume the
    /// approval, hold the request.
    pub(super) fn consume_approval(
        &mut self,
        shared: &Shared,
        cfg: &SidecarConfig,
        id: &str,
        reserved: Box<Reserved>,
        body: &[u8],
    ) -> Action {
        if !approval::valid_id(id) {
            self.release(&reserved);
            let mut deny = Deny::new(
                DenyCode::ApprovalMismatch,
                "x-pag0-approval-id does not name an approval",
            );
            deny.project_id = Some(reserved.project_id.clone());
            return self.deny(&deny);
        }
        let binding = self.approval.binding(&reserved.client_id, body);
        let payload = approval::consume_body(&binding, reserved.estimate, shared.policy_version);
        match self.call(cfg, &approval::consume_path(id), &payload) {
            Ok(token) => {
                self.state = State::AwaitingConsume { token, reserved };
                Action::Pause
            }
            Err(why) => {
                self.release(&reserved);
                self.deny(&sidecar_failed(
                    &reserved.project_id,
                    "consume the approval",
                    &why,
                ))
            }
        }
    }

    fn call(&self, cfg: &SidecarConfig, path: &str, body: &[u8]) -> Result<u32, String> {
        let auth = approval::bearer(cfg);
        let headers = approval::call_headers(cfg, path, &auth);
        self.host
            .dispatch_http_call(
                &cfg.cluster,
                &headers,
                body,
                Duration::from_millis(cfg.timeout_ms.max(MIN_CALL_TIMEOUT_MS)),
            )
            .map_err(|e| format!("dispatch failed: {e:?}"))
    }

    /// The sidecar answered one of this request's calls (zero headers: failure or timeout).
    pub(super) fn on_approval_answer(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        let status = if num_headers == 0 {
            None
        } else {
            self.host
                .header(MapType::HttpCallResponseHeaders, ":status")
                .and_then(|s| s.trim().parse::<u32>().ok())
        };
        let body = if body_size > 0 {
            self.host.body(BufferType::HttpCallResponseBody, body_size)
        } else {
            Vec::new()
        };
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingApproval { token, project_id } if token == token_id => {
                match approval::read_created(status, &body) {
                    Ok(created) => {
                        if let Some(s) = &self.shared {
                            s.metrics.approvals.requested(&self.host);
                        }
                        if let Some(n) = &mut self.note {
                            n.pending(&created.approval_id);
                        }
                        approval::send_pending(&self.host, &created);
                    }
                    Err(why) => {
                        self.deny(&sidecar_failed(&project_id, "create the approval", &why));
                    }
                }
            }
            State::AwaitingConsume { token, reserved } if token == token_id => {
                match approval::read_consumed(status, &body) {
                    Consumed::Granted => {
                        if let Some(s) = &self.shared {
                            s.metrics.allowed(&self.host, reserved.estimate);
                            s.metrics.approvals.replayed(&self.host);
                        }
                        let now_ms = self.now_ms();
                        if let Some(n) = &mut self.note {
                            n.forwarded(now_ms);
                        }
                        self.state = State::Reserved(reserved);
                        self.host.resume_http_request();
                    }
                    Consumed::Refused(r) => {
                        self.release(&reserved);
                        match r.code.deny_code() {
                            Some(code) => {
                                let mut deny = Deny::new(code, r.message);
                                deny.project_id = Some(reserved.project_id.clone());
                                self.deny(&deny);
                            }
                            None => {
                                if let Some(s) = &self.shared {
                                    s.metrics.approvals.still_pending(&self.host);
                                }
                                if let Some(n) = &mut self.note {
                                    n.replay_pending();
                                }
                                approval::send_still_pending(
                                    &self.host,
                                    &reserved.project_id,
                                    &r.message,
                                );
                            }
                        }
                    }
                    Consumed::Failed(why) => {
                        self.release(&reserved);
                        self.deny(&sidecar_failed(
                            &reserved.project_id,
                            "consume the approval",
                            &why,
                        ));
                    }
                }
            }
            other => self.state = other,
        }
    }

    /// The project of a request held for the sidecar.
    pub(super) fn held_project(&self) -> Option<Arc<str>> {
        match &self.state {
            State::AwaitingApproval { project_id, .. } => Some(project_id.clone()),
            State::AwaitingConsume { reserved, .. } => Some(reserved.project_id.clone()),
            State::AwaitingRoom(w) => Some(w.pending.project_id.clone()),
            _ => None,
        }
    }

    /// Gives back the reservation of a replay still waiting for the sidecar (stream gone).
    pub(super) fn release_held(&mut self) {
        if !matches!(self.state, State::AwaitingConsume { .. }) {
            return;
        }
        if let State::AwaitingConsume { reserved, .. } =
            std::mem::replace(&mut self.state, State::Done)
        {
            self.release(&reserved);
        }
    }

    /// Releases a reservation that was never forwarded (no metrics: it was never allowed).
    fn release(&self, r: &Reserved) {
        if let Err(e) = Counters::new(&self.host).settle_all(&r.reservations, Micros::ZERO) {
            self.host.log(
                LogLevel::Error,
                &format!("pag0: shared data error {e:?} releasing a replay's reservation"),
            );
        }
    }
}

/// The sidecar did not do its part: `503 CONTROL_PLANE_UNAVAILABLE` in both failure modes.
fn sidecar_failed(project_id: &Arc<str>, what: &str, why: &str) -> Deny {
    let mut d = Deny::new(
        DenyCode::ControlPlaneUnavailable,
        format!("the pag0 sidecar could not {what} ({why}); the request was not forwarded, retry"),
    );
    d.project_id = Some(project_id.clone());
    d
}
