//! Managed mode: the filter's side of `POST /v1/sync` (docs/sync-protocol.md, "Filter side").
//!
//! Everything here is state in proxy-wasm shared data (one copy per Envoy, shared by every
//! worker VM), changed only by CAS loops over [`SharedStore`], so it is tested natively with the
//! fakes in `testing.rs`. The host side (timers, `dispatch_http_call`) is in `root.rs`.
//!
//! Keys (all under `pag0/m/`, never a counter key):
//! - [`POLICY_VERSION_KEY`] / [`POLICY_KEY`]: the sidecar's policy version (u64 LE) and
//!   `version LE ++ JSON document`. Workers compare the small version key on every tick.
//! - [`INSTANCE_KEY`]: this Envoy's `instanceId`, made once per process.
//! - [`OWNER_KEY`]: which worker syncs: `worker id LE ++ stamp ms LE`, taken by CAS when free,
//!   stale (no renewal for 3 sync intervals + timeout) or already ours.
//! - [`BATCH_KEY`]: [`Batches`] (JSON): the next seq, the batch in flight (resent byte-for-byte
//!   until acknowledged) and the unsent usage records. Each worker collects its records in a
//!   [`UsageBuffer`] and appends them here once per tick, not once per request.
//! - [`DOWN_KEY`]: 0 while the sidecar answers, else the ms time it stopped answering.
//! - `pag0/m/dq`, `pag0/m/dq-sent`, `pag0/m/dq-gap`: decision events waiting for a batch,
//!   the ones riding the batch in flight, and the gap of those dropped past the cap
//!   (`decisions.rs`).
//! - `pag0/m/l/<counter>`: [`Lease`] (JSON) per counter; [`LEASED_KEY`]: the counters holding one.
//!
//! The per-counter "pending" (reservations in flight + settled, unacknowledged usage) is the
//! ordinary counter key of [`crate::counters`], so reservation and settlement are the same CAS
//! machinery as standalone mode; only the limit it is checked against differs (the lease).
//!
//! Layout: `election` (who syncs), `policy` (the document in shared data), `batches`
//! (usage, stop-and-wait), `lease` (one counter's lease and the sidecar's health),
//! `admission` ([`LeaseView`]), `room` (shortfall and early sync), `sync` (the request
//! body and applying the answer).

mod admission;
mod batches;
pub mod decisions;
mod election;
mod lease;
mod policy;
mod room;
mod sync;

pub use admission::{CounterState, LeaseView};
pub use batches::{
    batches, record, Batch, Batches, Buffer, DecisionBuffer, LearnFacts, SuspectReport,
    UsageBuffer, UsageRecord, FLUSH_RECORDS,
};
pub use election::{instance_id, random_u64, try_own};
pub use lease::{admit, down_since, lease, lease_key, presented_used, set_down, Admit, Lease};
pub use policy::{load_policy, policy_counters, policy_version};
pub use room::{
    apply_room_answer, ask_for_room, prepare_room_call, record_shortfall, request_early,
    sized_want, take_early, RoomCall, SIZING_REQUESTS,
};
pub use sync::{apply_response, drop_refused, prepare_sync, refused_as_invalid, Applied, Outgoing};

use crate::counters::{HostError, SetError, SharedStore};

pub const POLICY_KEY: &str = "pag0/m/policy";
pub const POLICY_VERSION_KEY: &str = "pag0/m/policy-v";
pub const INSTANCE_KEY: &str = "pag0/m/instance";
pub const OWNER_KEY: &str = "pag0/m/owner";
pub const BATCH_KEY: &str = "pag0/m/batch";
pub const DOWN_KEY: &str = "pag0/m/down";
pub const LEASED_KEY: &str = "pag0/m/leased";
/// Set (1) by a request that left a lease under its low-water mark: sync at the next tick.
pub const EARLY_KEY: &str = "pag0/m/early";

/// Most records in one batch. A record is ~240 bytes of JSON and the sidecar commits a batch
/// in one transaction (one ledger row per record). Measured on SQLite (debug build, 2 loaded
/// cores, in-process): 1000 records commit in 124–158 ms, 10000 in 1.0–1.7 s — too close to or
/// past the shipped `timeoutMs: 200`. 500 records (~120 KB) stay well under it; a backlog
/// then syncs again at the next tick (see [`backlog`]) instead of waiting a whole interval.
/// The sidecar's own limit, `--max-batch`, is 10000. See docs/sync-protocol.md.
pub const MAX_BATCH_RECORDS: usize = 500;

/// Whether at least half a batch of usage waits behind the one just acknowledged.
pub fn backlog(store: &dyn SharedStore) -> bool {
    batches::batches(store).is_ok_and(|b| b.unsent.len() >= MAX_BATCH_RECORDS / 2)
}
/// Ask for more room when what is left of a slice falls under `want / LOW_WATER_DIVISOR`.
pub const LOW_WATER_DIVISOR: u64 = 4;

// === raw shared-data values ===

fn set_blind(store: &dyn SharedStore, key: &str, v: &[u8]) -> Result<(), HostError> {
    match store.set(key, v, None) {
        Ok(()) | Err(SetError::CasMismatch) => Ok(()),
        Err(SetError::Host(h)) => Err(h),
    }
}

fn u64_of(b: &[u8]) -> u64 {
    <[u8; 8]>::try_from(b).map(u64::from_le_bytes).unwrap_or(0)
}

// The tests see the module as one namespace (`use super::*`), as before the split.
#[cfg(test)]
use {
    crate::config::FailureMode,
    pag0_policy::{CompiledPolicy, Micros, Reservation},
    policy::store_policy,
};

#[cfg(test)]
mod tests;
