//! HTTP callouts: the guest's `dispatch_http_call`s, answered by the responder or the test.

use super::{CallAnswer, Host, StreamId};
use crate::shared::lock;
use crate::vm::{CallReply, HttpCall};

impl Host {
    /// Calls the guest made that nobody answered yet.
    pub fn pending_calls(&self) -> Vec<HttpCall> {
        self.vms
            .iter()
            .flat_map(|w| w.vm.state().calls.clone())
            .collect()
    }

    /// Answer pending `dispatch_http_call`s with the responder and tell queue owners about new
    /// items, until nothing is left to do (what Envoy's event loop does between steps).
    pub fn dispatch(&mut self) {
        for _ in 0..1000 {
            let mut did = false;
            for i in 0..self.vms.len() {
                let calls = std::mem::take(&mut self.vms[i].vm.state_mut().calls);
                for call in calls {
                    match (self.responder)(&call) {
                        CallAnswer::Hold => self.vms[i].vm.state_mut().calls.push(call),
                        answer => {
                            did = true;
                            self.deliver(i, call, answer);
                        }
                    }
                }
            }
            let ready = lock(&self.shared).ready_queues.pop_front();
            if let Some(q) = ready {
                did = true;
                let owner = lock(&self.shared)
                    .queue_mut(q)
                    .map(|q| (q.owner_vm, q.owner_ctx));
                if let Some((vm, ctx)) = owner {
                    if vm < self.vms.len() {
                        self.expect(vm, "proxy_on_queue_ready", |v| {
                            v.call_as::<(i32, i32), ()>(
                                ctx,
                                "proxy_on_queue_ready",
                                (ctx as i32, q as i32),
                            )
                        });
                    }
                }
            }
            if !did {
                return;
            }
        }
        panic!(
            "dispatch did not settle after 1000 rounds: the guest keeps making calls\n{}",
            self.log_text()
        );
    }

    /// Answer one held call (by token) now.
    pub fn answer_call(&mut self, vm: usize, token: u32, answer: CallAnswer) {
        let calls = &mut self.vms[vm].vm.state_mut().calls;
        let Some(i) = calls.iter().position(|c| c.token == token) else {
            panic!("no pending call {token} on VM {vm}");
        };
        let call = calls.remove(i);
        self.deliver(vm, call, answer);
        self.dispatch();
    }

    fn deliver(&mut self, vm: usize, call: HttpCall, answer: CallAnswer) {
        let reply = match answer {
            CallAnswer::Response {
                headers,
                body,
                trailers,
            } => CallReply {
                headers,
                body,
                trailers,
            },
            _ => CallReply::default(),
        };
        let args = (
            call.context as i32,
            call.token as i32,
            reply.headers.len() as i32,
            reply.body.len() as i32,
            reply.trailers.len() as i32,
        );
        self.vms[vm].vm.state_mut().call_reply = Some(reply);
        self.expect(vm, "proxy_on_http_call_response", |v| {
            v.call_as::<(i32, i32, i32, i32, i32), ()>(
                call.context,
                "proxy_on_http_call_response",
                args,
            )
        });
        self.vms[vm].vm.state_mut().call_reply = None;
        let id = StreamId {
            vm,
            context: call.context,
        };
        if self.flows.contains_key(&id) {
            self.after(id);
        }
    }
}
