//! State that Envoy keeps per process rather than per worker VM: shared data with CAS, shared
//! queues, metrics, the clock and the log. Every VM of one [`crate::Host`] holds the same `Arc`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::abi::{LogLevel, Status};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub vm: usize,
    pub level: LogLevel,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone)]
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    /// Counters and gauges: the value. Histograms: the sum of recorded values.
    pub value: i64,
    /// Histograms: every recorded value, in order.
    pub samples: Vec<u64>,
}

#[derive(Debug, Default)]
pub struct Queue {
    pub name: String,
    pub vm_id: String,
    /// The VM whose root context registered the queue and gets `on_queue_ready`.
    pub owner_vm: usize,
    pub owner_ctx: u32,
    pub items: VecDeque<Vec<u8>>,
}

#[derive(Debug, Default)]
pub struct Shared {
    /// `(vm_id, key) -> (value, cas)`. Envoy keys shared data by vm_id.
    pub data: HashMap<(String, String), (Vec<u8>, u32)>,
    next_cas: u32,
    pub queues: Vec<Queue>,
    /// Queue ids whose owner still has to be told (`on_queue_ready`), in enqueue order.
    pub ready_queues: VecDeque<u32>,
    pub metrics: Vec<Metric>,
    pub now_nanos: u64,
    pub log: Vec<LogLine>,
}

pub type SharedRef = Arc<Mutex<Shared>>;

pub(crate) fn lock(shared: &SharedRef) -> MutexGuard<'_, Shared> {
    // A poisoned lock only means another test thread panicked while holding it; the data is
    // still what that thread left, which is what a failing test wants to look at.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

// === impl Shared ===

impl Shared {
    pub fn get_data(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        self.data
            .get(&(vm_id.to_string(), key.to_string()))
            .cloned()
    }

    /// Envoy's semantics: `cas == 0` writes unconditionally; otherwise the write succeeds only
    /// if the key is absent or still carries that cas. Every write gets a fresh cas.
    pub fn set_data(&mut self, vm_id: &str, key: &str, value: Vec<u8>, cas: u32) -> Status {
        let k = (vm_id.to_string(), key.to_string());
        if let Some((_, current)) = self.data.get(&k) {
            if cas != 0 && cas != *current {
                return Status::CasMismatch;
            }
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        let fresh = self.next_cas;
        self.data.insert(k, (value, fresh));
        Status::Ok
    }

    pub fn register_queue(&mut self, vm_id: &str, name: &str, vm: usize, ctx: u32) -> u32 {
        if let Some(i) = self
            .queues
            .iter()
            .position(|q| q.vm_id == vm_id && q.name == name)
        {
            // Envoy re-binds the queue to the latest registrant.
            self.queues[i].owner_vm = vm;
            self.queues[i].owner_ctx = ctx;
            return i as u32 + 1;
        }
        self.queues.push(Queue {
            name: name.to_string(),
            vm_id: vm_id.to_string(),
            owner_vm: vm,
            owner_ctx: ctx,
            items: VecDeque::new(),
        });
        self.queues.len() as u32
    }

    pub fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.queues
            .iter()
            .position(|q| q.vm_id == vm_id && q.name == name)
            .map(|i| i as u32 + 1)
    }

    pub fn queue_mut(&mut self, id: u32) -> Option<&mut Queue> {
        let i = (id as usize).checked_sub(1)?;
        self.queues.get_mut(i)
    }

    pub fn define_metric(&mut self, kind: MetricKind, name: &str) -> u32 {
        if let Some(i) = self.metrics.iter().position(|m| m.name == name) {
            return i as u32 + 1;
        }
        self.metrics.push(Metric {
            name: name.to_string(),
            kind,
            value: 0,
            samples: Vec::new(),
        });
        self.metrics.len() as u32
    }

    pub fn metric_mut(&mut self, id: u32) -> Option<&mut Metric> {
        let i = (id as usize).checked_sub(1)?;
        self.metrics.get_mut(i)
    }

    pub fn metrics_snapshot(&self) -> BTreeMap<String, i64> {
        self.metrics
            .iter()
            .map(|m| (m.name.clone(), m.value))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_rejects_a_stale_writer() {
        let mut s = Shared::default();
        assert_eq!(s.set_data("vm", "k", b"1".to_vec(), 0), Status::Ok);
        let (_, cas) = s.get_data("vm", "k").unwrap();
        assert_eq!(s.set_data("vm", "k", b"2".to_vec(), cas), Status::Ok);
        assert_eq!(
            s.set_data("vm", "k", b"3".to_vec(), cas),
            Status::CasMismatch
        );
        assert_eq!(s.get_data("vm", "k").unwrap().0, b"2");
        assert_eq!(s.get_data("other", "k"), None);
    }
}
