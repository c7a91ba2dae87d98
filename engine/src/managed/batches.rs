//! Usage batches, stop-and-wait: the unsent records and the one batch in flight, resent
//! byte-for-byte until the sidecar acknowledges its seq.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::counters::{cas_update, HostError, SharedStore, Update};

use super::BATCH_KEY;

/// One settled request, as `/v1/sync`'s `usage[]` carries it: the wire contract's type, so
/// what the batch state holds is what the sidecar reads (a state written by an older filter,
/// with `projectId`/`host`/`at` always set, parses the same).
pub use pag0_wire::{LearnFacts, SuspectReport, UsageRecord};

/// The batch state (value of [`BATCH_KEY`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batches {
    /// The seq the next batch gets (≥ 1).
    pub next_seq: u64,
    /// Sent (maybe) and not yet acknowledged: resent unchanged until it is.
    pub inflight: Option<Batch>,
    pub unsent: Vec<UsageRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub seq: u64,
    pub usage: Vec<UsageRecord>,
}

fn read_batches(store: &dyn SharedStore) -> Result<(Option<Batches>, Option<u32>), HostError> {
    let (v, cas) = store.get(BATCH_KEY)?;
    Ok((v.as_deref().map(parse_batches), cas))
}

/// The batch state as stored (a value that does not parse: a fresh state).
fn parse_batches(v: &[u8]) -> Batches {
    serde_json::from_slice(v).unwrap_or(Batches {
        next_seq: 1,
        ..Batches::default()
    })
}

/// CAS read-modify-write of the batch state; `f` returns what to hand back.
pub(super) fn update_batches<T>(
    store: &dyn SharedStore,
    mut f: impl FnMut(&mut Batches) -> T,
) -> Result<T, HostError> {
    cas_update(store, BATCH_KEY, |v, _| {
        let Some(mut b) = v.map(parse_batches) else {
            let init = Batches {
                next_seq: 1,
                ..Batches::default()
            };
            return Update::Create(serde_json::to_vec(&init).unwrap_or_default());
        };
        let out = f(&mut b);
        Update::Set(serde_json::to_vec(&b).unwrap_or_default(), out)
    })
}

/// Appends one settled request to the unsent usage.
pub fn record(store: &dyn SharedStore, r: UsageRecord) -> Result<(), HostError> {
    update_batches(store, |b| b.unsent.push(r.clone()))
}

pub fn batches(store: &dyn SharedStore) -> Result<Batches, HostError> {
    Ok(read_batches(store)?.0.unwrap_or_default())
}

/// At most this many records (or decision events) wait in a worker's [`Buffer`] before
/// they are appended without waiting for the tick (bounds its memory at high request rates).
pub const FLUSH_RECORDS: usize = 256;

/// Usage records settled on this worker VM and not yet in the shared batch state.
///
/// The batch state is one JSON value in shared data: appending one record reads, parses and
/// rewrites every unsent record of the whole Envoy, which per request grows with the request
/// rate times the sync interval. A worker therefore appends what it collected once per tick
/// (a quarter of `syncIntervalMs`, before the sync that would send it), when
/// [`FLUSH_RECORDS`] are waiting, and when its VM stops. A record whose append fails stays
/// here, in order, for the next attempt: nothing is dropped. Once [`Buffer::close`]d
/// (the root context's `on_done`), a request still finishing appends its record directly:
/// no tick would come to flush it.
pub type UsageBuffer = Buffer<UsageRecord>;

/// Decision events (serialised, one line each) collected on this worker VM, appended to the
/// shared queue (`decisions.rs`) the same way as usage records.
pub type DecisionBuffer = Buffer<String>;

/// What a worker VM collected for shared data and has not appended yet (see [`UsageBuffer`]).
pub struct Buffer<T> {
    records: RefCell<Vec<T>>,
    closed: std::cell::Cell<bool>,
}

impl<T> Default for Buffer<T> {
    fn default() -> Self {
        Buffer {
            records: RefCell::new(Vec::new()),
            closed: std::cell::Cell::new(false),
        }
    }
}

impl<T: Clone> Buffer<T> {
    pub fn new() -> Self {
        Buffer::default()
    }

    /// Keeps `r` for the next flush; flushes now if [`FLUSH_RECORDS`] are waiting. `append`
    /// writes records to shared data and says how many it had to drop.
    fn push_with(
        &self,
        r: T,
        append: impl Fn(&[T]) -> Result<u64, HostError>,
    ) -> Result<u64, HostError> {
        if self.closed.get() {
            return append(std::slice::from_ref(&r));
        }
        let full = match self.records.try_borrow_mut() {
            Ok(mut v) => {
                v.push(r);
                v.len() >= FLUSH_RECORDS
            }
            // Not reachable on one thread; append directly rather than lose the record.
            Err(_) => return append(std::slice::from_ref(&r)),
        };
        if full {
            self.flush_with(append)
        } else {
            Ok(0)
        }
    }

    /// Appends every waiting record in one shared-data write; on error they stay, in order.
    fn flush_with(
        &self,
        append: impl Fn(&[T]) -> Result<u64, HostError>,
    ) -> Result<u64, HostError> {
        let waiting = match self.records.try_borrow_mut() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => return Ok(0),
        };
        if waiting.is_empty() {
            return Ok(0);
        }
        match append(&waiting) {
            Ok(n) => Ok(n),
            Err(e) => {
                if let Ok(mut v) = self.records.try_borrow_mut() {
                    let newer = std::mem::replace(&mut *v, waiting);
                    v.extend(newer);
                }
                Err(e)
            }
        }
    }

    /// Records waiting for the next flush.
    pub fn len(&self) -> usize {
        self.records.try_borrow().map_or(0, |v| v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn append_usage(store: &dyn SharedStore, rs: &[UsageRecord]) -> Result<u64, HostError> {
    update_batches(store, |b| b.unsent.extend(rs.iter().cloned())).map(|()| 0)
}

impl Buffer<UsageRecord> {
    /// Keeps `r` for the next flush; flushes now if [`FLUSH_RECORDS`] are waiting.
    pub fn push(&self, store: &dyn SharedStore, r: UsageRecord) -> Result<(), HostError> {
        self.push_with(r, |rs| append_usage(store, rs)).map(|_| ())
    }

    /// Appends every waiting record to the unsent usage, in one shared-data write.
    pub fn flush(&self, store: &dyn SharedStore) -> Result<(), HostError> {
        self.flush_with(|rs| append_usage(store, rs)).map(|_| ())
    }

    /// Flushes, and from now on [`Buffer::push`] appends each record at once.
    pub fn close(&self, store: &dyn SharedStore) -> Result<(), HostError> {
        self.closed.set(true);
        self.flush(store)
    }
}

impl Buffer<String> {
    /// Keeps one serialised decision event; returns how many the queue dropped past `cap`.
    pub fn push(
        &self,
        store: &dyn SharedStore,
        line: String,
        cap: usize,
    ) -> Result<u64, HostError> {
        self.push_with(line, |ls| super::decisions::append(store, ls, cap))
    }

    /// Appends every waiting event to the queue; returns how many it dropped past `cap`.
    pub fn flush(&self, store: &dyn SharedStore, cap: usize) -> Result<u64, HostError> {
        self.flush_with(|ls| super::decisions::append(store, ls, cap))
    }

    /// Flushes, and from now on [`Buffer::push`] appends each event at once.
    pub fn close(&self, store: &dyn SharedStore, cap: usize) -> Result<u64, HostError> {
        self.closed.set(true);
        self.flush(store, cap)
    }
}
