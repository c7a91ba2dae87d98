//! Plugin counters (names listed in README "Metrics"; Envoy shows them as `wasmcustom.<name>`).
//!
//! Defined once per root context in `on_configure` (`define_metric` takes a lock in Envoy);
//! requests only increment. The cache's per-project and per-cost-centre series depend on the
//! policy: defined when a policy is loaded ([`Metrics::attribute`]).
//!
//! A counter increment is not a host call per request: it is added to this worker VM's
//! [`Increments`], and the root context adds those to Envoy's counters with one
//! `increment_metric` per touched counter on every tick and when the VM stops (an increment
//! costs Envoy ~1.1k instructions, measured with `make bench-instructions`; an allowed request
//! touches three or four counters). Envoy's stats are therefore up to one tick behind. The
//! one gauge (`pag0.cache.bytes`) is not batched.
//!
//! Money counters keep `reserved = settled + released` for every request whose actual cost is
//! at most its estimate: `released` is the part of a reservation given back without charge.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::host::{Host, LogLevel, RootHost, StatusName};
use pag0_policy::{CompiledPolicy, DenyCode, Micros};

/// Metric ids; `None` where the host refused to define one (then that count is skipped,
/// the request is not affected).
pub struct Metrics {
    /// Where the counts go until the tick (this worker VM's, shared with the root context).
    increments: Rc<Increments>,
    allowed: Option<u32>,
    denied: Vec<(DenyCode, Option<u32>)>,
    reserved: Option<u32>,
    settled: Option<u32>,
    released: Option<u32>,
    /// `pag0.cost.suspect_reports`: upstream cost reports charged at the bound.
    suspect: Option<u32>,
    /// `pag0.sync.refused_batches` / `pag0.sync.refused_records`: batches the sidecar
    /// refused as invalid (4xx), dropped rather than resent.
    pub refused_batches: Option<u32>,
    pub refused_records: Option<u32>,
    /// `pag0.decisions.dropped`: decision events dropped past `decisionQueueMax` (each in a
    /// gap record the audit log shows) or with a batch refused as invalid.
    decisions_dropped: Option<u32>,
    /// `pag0.sync.acked` / `pag0.sync.failed`: syncs answered 2xx / not (error, timeout, 4xx/5xx).
    sync_acked: Option<u32>,
    sync_failed: Option<u32>,
    /// `pag0.cache.*` (see `cache.rs`).
    pub cache: crate::cache::CacheMetrics,
    /// `pag0.approvals.*` and `pag0.requests.denied.APPROVAL_PENDING`.
    pub approvals: crate::approval::ApprovalMetrics,
}

// === impl Metrics ===

impl Metrics {
    /// Defines every counter with the host (`define_metric`); increments are added to
    /// `increments` until the root context's tick flushes them.
    pub fn define<R: RootHost + ?Sized>(host: &R, increments: Rc<Increments>) -> Self {
        Metrics::define_with(increments, |name| define(host, name))
    }

    /// Builds the table with `define(name) -> id`; tests pass their own.
    pub fn define_with(
        increments: Rc<Increments>,
        mut define: impl FnMut(&str) -> Option<u32>,
    ) -> Self {
        Metrics {
            allowed: define("pag0.requests.allowed"),
            // Every code has its counter from the start: a dashboard sees zeros, not missing
            // series.
            denied: DenyCode::ALL
                .iter()
                .map(|&c| (c, define(&format!("pag0.requests.denied.{}", c.as_str()))))
                .collect(),
            reserved: define("pag0.cost.reserved_micros"),
            settled: define("pag0.cost.settled_micros"),
            released: define("pag0.cost.released_micros"),
            suspect: define("pag0.cost.suspect_reports"),
            refused_batches: define("pag0.sync.refused_batches"),
            refused_records: define("pag0.sync.refused_records"),
            decisions_dropped: define("pag0.decisions.dropped"),
            sync_acked: define("pag0.sync.acked"),
            sync_failed: define("pag0.sync.failed"),
            cache: crate::cache::CacheMetrics::define_with(increments.clone(), &mut define),
            approvals: crate::approval::ApprovalMetrics::define_with(
                increments.clone(),
                &mut define,
            ),
            increments,
        }
    }

    /// Metrics that count nothing: for a root context whose configuration failed.
    pub fn none() -> Self {
        Metrics {
            increments: Rc::default(),
            allowed: None,
            denied: Vec::new(),
            reserved: None,
            settled: None,
            released: None,
            suspect: None,
            refused_batches: None,
            refused_records: None,
            decisions_dropped: None,
            sync_acked: None,
            sync_failed: None,
            cache: crate::cache::CacheMetrics::none(),
            approvals: crate::approval::ApprovalMetrics::none(),
        }
    }

    /// The counts not yet added to the host's counters (the root context flushes the same
    /// table; tests flush it as the tick would).
    pub fn increments(&self) -> &Increments {
        &self.increments
    }

    /// Defines the cache's per-project and per-cost-centre series of `policy` with the host
    /// (see `cache/savings.rs`). Call once per loaded policy (`on_configure`, a sidecar policy
    /// adopted), never per request.
    pub fn attribute<R: RootHost + ?Sized>(&self, host: &R, policy: &CompiledPolicy) {
        self.attribute_with(policy, |name| define(host, name));
    }

    /// [`Metrics::attribute`] with `define(name) -> id`; tests pass their own.
    pub fn attribute_with(
        &self,
        policy: &CompiledPolicy,
        mut define: impl FnMut(&str) -> Option<u32>,
    ) {
        self.cache.attribute(policy, &mut define);
    }

    pub fn allowed(&self, host: &dyn Host, reserved: Micros) {
        self.increments.add(host, self.allowed, 1);
        self.increments.add(host, self.reserved, micros(reserved));
    }

    pub fn denied(&self, host: &dyn Host, code: DenyCode) {
        // `denied` is built from `DenyCode::ALL`, so a code's index is its entry.
        let id = self.denied.get(code.index()).and_then(|(_, id)| *id);
        self.increments.add(host, id, 1);
    }

    /// One upstream cost report was not believed (charged the request's bound).
    pub fn suspect(&self, host: &dyn Host) {
        self.increments.add(host, self.suspect, 1);
    }

    /// The sidecar refused a usage batch of `records` as invalid; it was dropped.
    pub fn refused_batch(&self, host: &dyn Host, records: usize) {
        self.increments.add(host, self.refused_batches, 1);
        let n = i64::try_from(records).unwrap_or(i64::MAX);
        self.increments.add(host, self.refused_records, n);
    }

    /// `n` decision events were dropped (past the queue's cap, or with a refused batch).
    pub fn decisions_dropped(&self, host: &dyn Host, n: u64) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.increments.add(host, self.decisions_dropped, n);
    }

    /// One sync got a 2xx answer (`ok`) or did not.
    pub fn synced(&self, host: &dyn Host, ok: bool) {
        let id = if ok {
            self.sync_acked
        } else {
            self.sync_failed
        };
        self.increments.add(host, id, 1);
    }

    pub fn settled(&self, host: &dyn Host, reserved: Micros, actual: Micros) {
        self.increments.add(host, self.settled, micros(actual));
        let released = micros(reserved.saturating_sub(actual));
        self.increments.add(host, self.released, released);
    }
}

/// This worker VM's counter increments not yet added to Envoy's counters.
///
/// One per root context, kept across reconfigurations (like the budget slices): a request
/// still in flight under an older configuration counts into the table the tick flushes.
/// Only counters: a gauge is set or moved at once ([`crate::cache::CacheMetrics::stored`]).
#[derive(Debug, Default)]
pub struct Increments {
    /// `(metric id, delta)` of the counters touched since the last flush, in the order first
    /// touched: a handful per tick (an allowed request touches 3–4), so a linear scan (fewer
    /// guest instructions than a binary search at that size). A flush empties it and keeps its
    /// capacity: once it has held a tick's worth of counters, counting allocates nothing.
    deltas: RefCell<Vec<(u32, i64)>>,
    /// Set by [`close`](Increments::close) when the root context is done: requests still in
    /// flight then count on the host directly (no tick would flush them).
    closed: Cell<bool>,
}

// === impl Increments ===

impl Increments {
    /// Counts `by` on counter `id` (nothing for an undefined counter or 0).
    pub fn add(&self, host: &dyn Host, id: Option<u32>, by: i64) {
        let Some(id) = id.filter(|_| by != 0) else {
            return;
        };
        if self.closed.get() {
            host.increment_metric(id, by);
            return;
        }
        let Ok(mut deltas) = self.deltas.try_borrow_mut() else {
            // Not reachable on one thread; count it now rather than lose it.
            host.increment_metric(id, by);
            return;
        };
        match deltas.iter_mut().find(|(i, _)| *i == id) {
            Some((_, d)) => *d = d.saturating_add(by),
            None => deltas.push((id, by)),
        }
    }

    /// Adds every waiting delta to the host's counters, one `increment_metric` per counter,
    /// and forgets them (the root context's tick).
    pub fn flush(&self, host: &dyn Host) {
        // Not borrowed elsewhere on one thread; if it were, the next tick flushes.
        let Ok(mut deltas) = self.deltas.try_borrow_mut() else {
            return;
        };
        for (id, by) in deltas.drain(..) {
            host.increment_metric(id, by);
        }
    }

    /// Flushes, and from now on counts on the host directly (the root context is done).
    pub fn close(&self, host: &dyn Host) {
        self.closed.set(true);
        self.flush(host);
    }

    /// Counters with a delta waiting for the next flush.
    pub fn len(&self) -> usize {
        self.deltas.try_borrow().map_or(0, |d| d.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn define<R: RootHost + ?Sized>(host: &R, name: &str) -> Option<u32> {
    match host.define_metric(crate::cache::metric_type(name), name) {
        Ok(id) => Some(id),
        Err(e) => {
            host.log(
                LogLevel::Warn,
                &format!("pag0: cannot define metric {name}: {:?}", StatusName(e)),
            );
            None
        }
    }
}

fn micros(m: Micros) -> i64 {
    i64::try_from(m.get()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

    #[test]
    fn increments_wait_for_the_flush_which_sends_each_counter_once_with_its_sum() {
        let host = FakeHost::default();
        let counts = Increments::default();
        for _ in 0..3 {
            counts.add(&&host, Some(9), 1);
            counts.add(&&host, Some(4), 250);
        }
        counts.add(&&host, Some(7), 0);
        counts.add(&&host, None, 5);
        assert!(host.metric_calls.borrow().is_empty(), "nothing per add");
        assert_eq!(counts.len(), 2, "0 and undefined counters are not kept");

        counts.flush(&&host);
        assert_eq!(*host.metric_calls.borrow(), [(9, 3), (4, 750)]);
        counts.flush(&&host);
        assert_eq!(host.metric_calls.borrow().len(), 2, "nothing sent twice");

        counts.add(&&host, Some(9), 1);
        counts.flush(&&host);
        assert_eq!(*host.metric_calls.borrow(), [(9, 3), (4, 750), (9, 1)]);
        assert!(counts.is_empty());
    }

    #[test]
    fn close_flushes_and_later_counts_go_straight_to_the_host() {
        let host = FakeHost::default();
        let counts = Increments::default();
        counts.add(&&host, Some(1), 2);
        counts.close(&&host);
        assert_eq!(*host.metric_calls.borrow(), [(1, 2)]);
        // A request still in flight when the root context is done: no tick would flush it.
        counts.add(&&host, Some(1), 3);
        assert_eq!(*host.metric_calls.borrow(), [(1, 2), (1, 3)]);
        counts.flush(&&host);
        assert_eq!(host.metric_calls.borrow().len(), 2);
    }

    #[test]
    fn a_flush_keeps_the_table_s_room_so_counting_allocates_nothing_afterwards() {
        let host = FakeHost::default();
        let counts = Increments::default();
        for id in 0..8 {
            counts.add(&&host, Some(id), 1);
        }
        let room = counts.deltas.borrow().capacity();
        counts.flush(&&host);
        for id in (0..8).rev() {
            counts.add(&&host, Some(id), 1);
        }
        assert_eq!(counts.deltas.borrow().capacity(), room);
        assert_eq!(counts.len(), 8);
    }
}
