//! The response cache in the request flow (the store itself is `crate::cache`).
//!
//! - After an `Allow` decision (so allow-lists, hours, caps and budgets were all checked for
//!   this client), a cache-enabled project's request is looked up before anything is reserved.
//! - A hit answers locally with the stored status, headers and body, plus
//!   `x-pag0-cache: hit`, `x-pag0-decision: allow`, `x-pag0-project`,
//!   `x-pag0-estimated-cost: 0`. It reserves and charges nothing; the stored entry's actual
//!   cost (what the upstream charged for that answer) is counted as savings: globally, for the
//!   requesting project and for the client's cost centre (`crate::cache::savings`).
//! - A miss reserves as usual and collects the response (`crate::cache::Fill`), stored only
//!   when it ends normally.

use crate::host::LogLevel;
use pag0_policy::{Allow, Micros};

use super::{Filter, State};
use crate::cache::{self as store, Fill};
use crate::host::Host;
use crate::managed::{self, UsageRecord};
use crate::root::Shared;

pub(super) enum Lookup {
    /// Answered from the cache (the local reply is sent; the caller returns `Pause`), with
    /// what the hit saved.
    Hit(Micros),
    Miss(Fill),
}

impl<H: Host> Filter<H> {
    /// `None` when the cache does not apply (project without cache, a method other than
    /// GET/POST, a request body pag0 has not read, or a lookup error).
    pub(super) fn cache_lookup(
        &self,
        shared: &Shared,
        allow: &Allow,
        body: Option<&[u8]>,
    ) -> Option<Lookup> {
        let head = self
            .cache_head
            .as_ref()
            .filter(|h| *h.project_id == *allow.project_id)?;
        // The key needs the whole body: either pag0 read it to price the request, or there
        // is none.
        let key = head.key(body)?;
        let (no_store, no_cache) = (head.no_store, head.no_cache);
        let metrics = &shared.metrics.cache;
        if !(no_store || no_cache) {
            let now_ms = u64::try_from(self.host.now().timestamp_millis()).unwrap_or(0);
            match store::lookup(&self.host, &shared.cache, &key, now_ms) {
                Ok(Some(entry)) => {
                    self.serve_hit(shared, allow, &entry);
                    return Some(Lookup::Hit(Micros::new(entry.cost_micros)));
                }
                Ok(None) => {}
                Err(e) => {
                    // The cache is an optimisation: a host error means a miss, not a refusal.
                    self.host.log(
                        LogLevel::Warn,
                        &format!("pag0: shared data error {e:?} reading the cache"),
                    );
                }
            }
        }
        metrics.miss(&self.host);
        Some(Lookup::Miss(Fill {
            key,
            ttl_secs: head.project.ttl_secs,
            may_store: !no_store,
            streaming: allow.settlement.streaming,
            max_entry_bytes: shared.cache.max_entry_bytes,
            response: None,
        }))
    }

    fn serve_hit(&self, shared: &Shared, allow: &Allow, entry: &store::Entry) {
        let savings = Micros::new(entry.cost_micros);
        let mut headers: Vec<(&str, &str)> = entry
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        headers.extend([
            ("x-pag0-cache", "hit"),
            ("x-pag0-decision", "allow"),
            ("x-pag0-project", &*allow.project_id),
            ("x-pag0-estimated-cost", "0"),
        ]);
        self.host
            .send_local_reply(u32::from(entry.status), &headers, &entry.body);
        shared.metrics.allowed(&self.host, Micros::ZERO);
        shared
            .metrics
            .cache
            .hit(&self.host, &allow.project_id, &allow.client_id, savings);
        if shared.sidecar().is_some() {
            // Savings and the hit flow to the sidecar with the usage (amount 0, no counters).
            let host = self
                .cache_head
                .as_ref()
                .map(|h| h.authority.clone())
                .unwrap_or_default();
            let record = UsageRecord {
                amount: Micros::ZERO,
                counters: Vec::new(),
                project_id: Some(allow.project_id.to_string()),
                client_id: Some(allow.client_id.to_string()),
                host: Some(pag0_policy::matching::request_host(&host).to_string()),
                at: Some(self.host.now().timestamp_millis()),
                cache_hit: true,
                savings: Some(savings),
                suspect: None,
                learn: None,
            };
            let recorded = match shared.usage() {
                Some(u) => u.push(&self.host, record),
                None => managed::record(&self.host, record),
            };
            if let Err(e) = recorded {
                self.host.log(
                    LogLevel::Error,
                    &format!("pag0: shared data error {e:?} recording a cache hit"),
                );
            }
        }
    }

    /// The response ended normally: store it if it was collected (call before `settle`).
    pub(super) fn store_cached(&mut self) {
        let State::Reserved(r) = &mut self.state else {
            return;
        };
        let Some(fill) = r.cache.take() else {
            return;
        };
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let cost = r.meter.final_cost().unwrap_or(r.meter.estimate());
        let now_ms = u64::try_from(self.host.now().timestamp_millis()).unwrap_or(0);
        let Some(entry) = fill.into_entry(now_ms, cost) else {
            return;
        };
        match store::store(&self.host, &shared.cache, &entry) {
            Ok(Some(s)) => shared.metrics.cache.stored(&self.host, s),
            Ok(None) => {}
            Err(e) => self.host.log(
                LogLevel::Warn,
                &format!("pag0: shared data error {e:?} storing a cache entry"),
            ),
        }
    }
}

#[cfg(test)]
mod tests;
