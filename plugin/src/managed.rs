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
//!   until acknowledged) and the unsent usage records.
//! - [`DOWN_KEY`]: 0 while the sidecar answers, else the ms time it stopped answering.
//! - `pag0/m/l/<counter>`: [`Lease`] (JSON) per counter; [`LEASED_KEY`]: the counters holding one.
//!
//! The per-counter "pending" (reservations in flight + settled, unacknowledged usage) is the
//! ordinary counter key of [`crate::counters`], so reservation and settlement are the same CAS
//! machinery as standalone mode; only the limit it is checked against differs (the lease).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use pag0_policy::budget::settle_counter;
use pag0_policy::period::{day_key, month_key};
use pag0_policy::{BudgetKey, BudgetView, CompiledPolicy, Micros, Reservation, Scope};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::FailureMode;
use crate::counters::{self, create, Counters, HostError, SetError, SharedStore};

pub const POLICY_KEY: &str = "pag0/m/policy";
pub const POLICY_VERSION_KEY: &str = "pag0/m/policy-v";
pub const INSTANCE_KEY: &str = "pag0/m/instance";
pub const OWNER_KEY: &str = "pag0/m/owner";
pub const BATCH_KEY: &str = "pag0/m/batch";
pub const DOWN_KEY: &str = "pag0/m/down";
pub const LEASED_KEY: &str = "pag0/m/leased";
/// Set (1) by a request that left a lease under its low-water mark: sync at the next tick.
pub const EARLY_KEY: &str = "pag0/m/early";
const LEASE_PREFIX: &str = "pag0/m/l/";
/// Per counter: the most room (pending + estimate) a request needed that its slice could not
/// give while the fleet had room. The next sync asks for at least this much, so one request
/// larger than the current slice is admitted on retry instead of waiting for slow doubling.
const NEED_PREFIX: &str = "pag0/m/need/";

/// Most records in one batch (the sidecar's limit).
pub const MAX_BATCH_RECORDS: usize = 10_000;
/// Ask for more room when what is left of a slice falls under `want / LOW_WATER_DIVISOR`.
pub const LOW_WATER_DIVISOR: u64 = 4;

/// One settled request, as the sidecar's `usage[]` wants it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    pub amount: String,
    pub counters: Vec<String>,
    pub project_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub host: String,
    pub at: u64,
    /// A response served from the cache (amount 0); the sidecar ignores fields it does not
    /// know (docs/sync-protocol.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache_hit: bool,
    /// Micro-USD the cache hit avoided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savings: Option<String>,
}

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

/// The room the sidecar handed this Envoy on one counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// `granted` of the last answer: net of every acknowledged record.
    pub granted: u64,
    /// Own clock: (time the sync carrying it was sent) + `leaseTtlMs`.
    pub valid_until_ms: u64,
    /// The last `want` asked for (the target to hold).
    pub want: u64,
    /// Fleet-wide committed spend and the limit, as of that answer (0 if not sent).
    #[serde(default)]
    pub spent: u64,
    #[serde(default)]
    pub limit: u64,
}

impl Lease {
    /// The fleet had room beyond this slice at the last answer: a request that does not fit
    /// the slice is waiting for a larger lease, not over budget.
    pub fn fleet_has_room(&self) -> bool {
        self.limit > 0 && self.spent.saturating_add(self.granted) < self.limit
    }
}

/// How a request may be admitted on one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// `pending + estimate ≤ allowance`.
    Lease(Micros),
    /// Sidecar down with `failureMode: open`: no limit here, recorded and reported later.
    Unbounded,
    /// No usable lease (`failureMode: closed`, or before the first leases arrive).
    Unavailable,
}

/// What one sync sends (the body) and what the answer needs to be applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub body: Vec<u8>,
    pub seq: Option<u64>,
    pub sent_at_ms: u64,
    pub wants: Vec<(String, u64)>,
}

/// What an answer changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub acked: Option<u64>,
    pub new_policy_version: Option<u64>,
}

// === identity and election ===

/// A random u64: the host clock mixed with std's per-process random hash keys (on wasip1 they
/// come from WASI `random_get`).
pub fn random_u64(now_nanos: u64) -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(now_nanos);
    h.finish()
}

/// This Envoy's `instanceId`, created once (the first worker configured makes it).
pub fn instance_id<S: SharedStore + ?Sized>(store: &S) -> Result<String, HostError> {
    if let (Some(v), _) = store.get(INSTANCE_KEY)? {
        return Ok(String::from_utf8_lossy(&v).into_owned());
    }
    let fresh = format!("envoy-{:016x}", random_u64(store.now_nanos()));
    create::create(store, INSTANCE_KEY, fresh.as_bytes())?;
    let (v, _) = store.get(INSTANCE_KEY)?;
    Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or(fresh))
}

/// Takes or renews the sync ownership for `worker`; true if `worker` is the owner now.
pub fn try_own<S: SharedStore + ?Sized>(
    store: &S,
    worker: u64,
    now_ms: u64,
    stale_after_ms: u64,
) -> Result<bool, HostError> {
    loop {
        let (value, cas) = store.get(OWNER_KEY)?;
        let current = value.as_deref().and_then(two_u64);
        let free = match current {
            None => true,
            Some((owner, stamp)) => {
                owner == worker || now_ms.saturating_sub(stamp) > stale_after_ms
            }
        };
        if !free {
            return Ok(false);
        }
        let mut v = worker.to_le_bytes().to_vec();
        v.extend_from_slice(&now_ms.to_le_bytes());
        if value.is_none() {
            // Never an empty value: Envoy reads one back as missing. Owner 0 at time 0 is stale.
            create::create(store, OWNER_KEY, &[0u8; 16])?;
            continue;
        }
        match store.set(OWNER_KEY, &v, cas) {
            Ok(()) => return Ok(true),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host(h)) => return Err(h),
        }
    }
}

fn two_u64(b: &[u8]) -> Option<(u64, u64)> {
    let a = <[u8; 8]>::try_from(b.get(..8)?).ok()?;
    let c = <[u8; 8]>::try_from(b.get(8..16)?).ok()?;
    Some((u64::from_le_bytes(a), u64::from_le_bytes(c)))
}

// === policy ===

/// The version of the policy in shared data (0: none yet).
pub fn policy_version<S: SharedStore + ?Sized>(store: &S) -> Result<u64, HostError> {
    let (v, _) = store.get(POLICY_VERSION_KEY)?;
    Ok(v.as_deref().map(u64_of).unwrap_or(0))
}

/// The policy in shared data: its version and compiled document (`None`: none yet, or one
/// that does not compile — then the previous one stays in force and the error is returned).
pub fn load_policy<S: SharedStore + ?Sized>(
    store: &S,
) -> Result<Option<(u64, CompiledPolicy)>, String> {
    let (v, _) = store.get(POLICY_KEY).map_err(|e| format!("{e:?}"))?;
    let Some(v) = v else { return Ok(None) };
    let (Some(version), Some(doc)) = (v.get(..8), v.get(8..)) else {
        return Err("policy entry too short".to_string());
    };
    let value: Value = serde_json::from_slice(doc).map_err(|e| e.to_string())?;
    let compiled = CompiledPolicy::from_value(&value).map_err(|e| {
        e.0.iter()
            .map(|fe| format!("{}: {}", fe.path, fe.reason))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(Some((u64_of(version), compiled)))
}

fn store_policy<S: SharedStore + ?Sized>(
    store: &S,
    version: u64,
    doc: &Value,
) -> Result<(), HostError> {
    let mut v = version.to_le_bytes().to_vec();
    v.extend_from_slice(doc.to_string().as_bytes());
    // The document first, then the version workers poll: a worker that sees the new version
    // always finds the document that goes with it.
    set_blind(store, POLICY_KEY, &v)?;
    set_blind(store, POLICY_VERSION_KEY, &version.to_le_bytes())
}

fn set_blind<S: SharedStore + ?Sized>(store: &S, key: &str, v: &[u8]) -> Result<(), HostError> {
    match store.set(key, v, None) {
        Ok(()) | Err(SetError::CasMismatch) => Ok(()),
        Err(SetError::Host(h)) => Err(h),
    }
}

fn u64_of(b: &[u8]) -> u64 {
    <[u8; 8]>::try_from(b).map(u64::from_le_bytes).unwrap_or(0)
}

/// Every counter the policy can charge at `now`, with its limit.
pub fn policy_counters(
    policy: &CompiledPolicy,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<(BudgetKey, Micros)> {
    let doc = policy.document();
    let tz = policy.timezone();
    let (month, day) = (month_key(now, tz), day_key(now, tz));
    let mut out = Vec::new();
    let mut push = |scope: Scope, limit: Option<Micros>, period: &str| {
        if let Some(limit) = limit {
            out.push((
                BudgetKey {
                    scope,
                    period: period.to_string(),
                },
                limit,
            ));
        }
    };
    push(Scope::OrgMonthly, doc.global_policy.monthly_budget, &month);
    push(Scope::OrgDaily, doc.global_policy.daily_budget, &day);
    for p in &doc.projects {
        let id: std::sync::Arc<str> = p.id.as_str().into();
        push(
            Scope::ProjectMonthly(id.clone()),
            p.policy.monthly_budget,
            &month,
        );
        push(Scope::ProjectDaily(id), p.policy.daily_budget, &day);
    }
    out
}

// === leases and admission ===

pub fn lease_key(counter: &str) -> String {
    format!("{LEASE_PREFIX}{counter}")
}

pub fn lease<S: SharedStore + ?Sized>(
    store: &S,
    counter: &str,
) -> Result<Option<Lease>, HostError> {
    let (v, _) = store.get(&lease_key(counter))?;
    Ok(v.and_then(|v| serde_json::from_slice(&v).ok()))
}

/// The sidecar has not answered since this ms time (`None`: it answers).
pub fn down_since<S: SharedStore + ?Sized>(store: &S) -> Result<Option<u64>, HostError> {
    let (v, _) = store.get(DOWN_KEY)?;
    Ok(v.as_deref().map(u64_of).filter(|&t| t != 0))
}

/// Records the sidecar's health; true when this call changed it (log the transition once).
pub fn set_down<S: SharedStore + ?Sized>(
    store: &S,
    down: bool,
    now_ms: u64,
) -> Result<bool, HostError> {
    loop {
        let (v, cas) = store.get(DOWN_KEY)?;
        let was_down = v.as_deref().map(u64_of).unwrap_or(0) != 0;
        if was_down == down {
            return Ok(false);
        }
        let next = if down { now_ms.max(1) } else { 0 };
        if v.is_none() {
            create::create(store, DOWN_KEY, &0u64.to_le_bytes())?;
            continue;
        }
        match store.set(DOWN_KEY, &next.to_le_bytes(), cas) {
            Ok(()) => return Ok(true),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host(h)) => return Err(h),
        }
    }
}

/// How a request may use one counter right now.
pub fn admit(lease: Option<Lease>, now_ms: u64, down: bool, mode: FailureMode) -> Admit {
    match (lease.filter(|l| l.valid_until_ms > now_ms), down, mode) {
        (_, true, FailureMode::Open) => Admit::Unbounded,
        (Some(l), _, _) => Admit::Lease(Micros::new(l.granted)),
        (None, _, FailureMode::Open) => Admit::Unbounded,
        (None, _, FailureMode::Closed) => Admit::Unavailable,
    }
}

/// `used` as `decide()` must see it so that `used + estimate ≤ limit` is the lease test
/// `pending + estimate ≤ allowance`: `limit − (allowance − pending)`, saturating.
pub fn presented_used(limit: Micros, allowance: Micros, pending: Micros) -> Micros {
    limit.saturating_sub(allowance.saturating_sub(pending))
}

/// Records, for every counter of `reservations` whose slice is too small for it while the fleet
/// still had room, the room the request needed (`pending + amount`), keeping the largest.
/// Returns true if anything was recorded (the caller then asks for an early sync).
pub fn record_shortfall<S: SharedStore + ?Sized>(
    store: &S,
    view: &LeaseView,
    reservations: &[Reservation],
) -> Result<bool, HostError> {
    let mut recorded = false;
    for r in reservations {
        let Some(c) = view.find(&r.key) else { continue };
        let Admit::Lease(allowance) = c.admit else {
            continue;
        };
        let need = c.pending.get().saturating_add(r.amount.get());
        if need <= allowance.get() || !c.fleet_has_room {
            continue;
        }
        let key = format!("{NEED_PREFIX}{}", r.key.storage_key());
        loop {
            let (v, cas) = store.get(&key)?;
            let old = v.as_deref().map(u64_of).unwrap_or(0);
            if old >= need {
                break;
            }
            match store.set(&key, &need.to_le_bytes(), cas) {
                Ok(()) => break,
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Host(h)) => return Err(h),
            }
        }
        recorded = true;
    }
    Ok(recorded)
}

/// A request did not fit this Envoy's slice while the fleet had room: record what it needed and
/// ask for an early sync, so its retry finds a slice large enough. Best effort: a shared-data
/// error here only delays the larger lease until the ordinary doubling catches up.
pub fn ask_for_room<S: SharedStore + ?Sized>(
    store: &S,
    view: &LeaseView,
    reservations: &[Reservation],
) {
    if let Ok(true) = record_shortfall(store, view, reservations) {
        let _ = request_early(store);
    }
}

/// The recorded need of one counter, reset to 0 (a refused request that still needs the room
/// records it again when it is retried).
fn take_need<S: SharedStore + ?Sized>(store: &S, counter: &str) -> Result<u64, HostError> {
    let key = format!("{NEED_PREFIX}{counter}");
    let (v, _) = store.get(&key)?;
    let need = v.as_deref().map(u64_of).unwrap_or(0);
    if need > 0 {
        set_blind(store, &key, &0u64.to_le_bytes())?;
    }
    Ok(need)
}

/// Asks the sync owner to sync at its next tick (a lease is running low).
pub fn request_early<S: SharedStore + ?Sized>(store: &S) -> Result<(), HostError> {
    set_blind(store, EARLY_KEY, &1u64.to_le_bytes())
}

/// True (and resets it) if a request asked for an early sync.
pub fn take_early<S: SharedStore + ?Sized>(store: &S) -> Result<bool, HostError> {
    let (v, cas) = store.get(EARLY_KEY)?;
    if v.as_deref().map(u64_of).unwrap_or(0) == 0 {
        return Ok(false);
    }
    match store.set(EARLY_KEY, &0u64.to_le_bytes(), cas) {
        Ok(()) => Ok(true),
        Err(SetError::CasMismatch) => Ok(false),
        Err(SetError::Host(h)) => Err(h),
    }
}

/// One counter a request may charge, as admission sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterState {
    pub key: BudgetKey,
    pub limit: Micros,
    pub admit: Admit,
    pub pending: Micros,
    pub want: u64,
    /// See [`Lease::fleet_has_room`].
    pub fleet_has_room: bool,
}

/// The org's and one project's counters, read once per request: the [`BudgetView`] that
/// `decide()` sees in managed mode, and the limits reservations are taken against.
pub struct LeaseView {
    pub counters: Vec<CounterState>,
    pub down: bool,
    pub mode: FailureMode,
}

impl LeaseView {
    pub fn read<S: SharedStore + ?Sized>(
        store: &S,
        policy: &CompiledPolicy,
        project_id: &str,
        now: chrono::DateTime<chrono::Utc>,
        now_ms: u64,
        mode: FailureMode,
    ) -> Result<Self, HostError> {
        let down = down_since(store)?.is_some();
        let mut counters = Vec::new();
        for (key, limit) in policy_counters(policy, now) {
            if key.scope.project_id().is_some_and(|p| p != project_id) {
                continue;
            }
            let l = lease(store, &key.storage_key())?;
            let pending = Counters::new(store).used(&key)?;
            counters.push(CounterState {
                admit: admit(l, now_ms, down, mode),
                want: l.map(|l| l.want).unwrap_or(0),
                fleet_has_room: l.is_some_and(|l| l.fleet_has_room()),
                key,
                limit,
                pending,
            });
        }
        Ok(LeaseView {
            counters,
            down,
            mode,
        })
    }

    fn find(&self, key: &BudgetKey) -> Option<&CounterState> {
        self.counters.iter().find(|c| &c.key == key)
    }

    /// A budget refusal is really "no control plane": `failureMode: closed` and the sidecar
    /// is down, or a counter of this request has no usable lease.
    pub fn control_plane_unavailable(&self) -> bool {
        self.mode == FailureMode::Closed
            && (self.down || self.counters.iter().any(|c| c.admit == Admit::Unavailable))
    }

    /// A budget refusal on this scope (`org.monthly`, `project.daily`, …; unique among the
    /// org's and one project's counters) or counter only means "this Envoy's slice is spent"
    /// while the fleet still had room: answer 503 `CONTROL_PLANE_UNAVAILABLE` (retry), not 402.
    pub fn slice_spent(&self, scope: Option<&str>, key: Option<&BudgetKey>) -> bool {
        self.counters.iter().any(|c| {
            let hit =
                key.is_some_and(|k| &c.key == k) || scope.is_some_and(|s| s == c.key.scope.label());
            hit && matches!(c.admit, Admit::Lease(_)) && c.fleet_has_room
        })
    }

    /// The reservations with each limit replaced by what admission checks against: the lease's
    /// allowance, or no limit (`Unbounded`). `None` if a counter has no usable lease.
    pub fn admission(&self, rs: &[Reservation]) -> Option<Vec<Reservation>> {
        rs.iter()
            .map(|r| {
                let limit = match self.find(&r.key).map(|c| c.admit) {
                    Some(Admit::Lease(a)) => a,
                    Some(Admit::Unbounded) => Micros::MAX,
                    Some(Admit::Unavailable) | None => return None,
                };
                Some(Reservation {
                    key: r.key.clone(),
                    amount: r.amount,
                    limit,
                })
            })
            .collect()
    }

    /// True if taking `estimate` leaves some lease under its low-water mark.
    pub fn runs_low(&self, estimate: Micros) -> bool {
        self.counters.iter().any(|c| match c.admit {
            Admit::Lease(a) => {
                let left = a
                    .get()
                    .saturating_sub(c.pending.get().saturating_add(estimate.get()));
                c.want > 0 && left < c.want / LOW_WATER_DIVISOR
            }
            _ => false,
        })
    }
}

impl BudgetView for LeaseView {
    fn used(&self, key: &BudgetKey) -> Micros {
        match self.find(key) {
            Some(c) => match c.admit {
                Admit::Lease(a) => presented_used(c.limit, a, c.pending),
                Admit::Unbounded => Micros::ZERO,
                Admit::Unavailable => Micros::MAX,
            },
            None => Micros::MAX,
        }
    }
}

// === usage batches ===

fn read_batches<S: SharedStore + ?Sized>(
    store: &S,
) -> Result<(Option<Batches>, Option<u32>), HostError> {
    let (v, cas) = store.get(BATCH_KEY)?;
    Ok((
        v.map(|v| {
            serde_json::from_slice(&v).unwrap_or(Batches {
                next_seq: 1,
                ..Batches::default()
            })
        }),
        cas,
    ))
}

/// CAS read-modify-write of the batch state; `f` returns what to hand back.
fn update_batches<S: SharedStore + ?Sized, T>(
    store: &S,
    mut f: impl FnMut(&mut Batches) -> T,
) -> Result<T, HostError> {
    loop {
        let (b, cas) = read_batches(store)?;
        let Some(mut b) = b else {
            let init = Batches {
                next_seq: 1,
                ..Batches::default()
            };
            let bytes = serde_json::to_vec(&init).unwrap_or_default();
            create::create(store, BATCH_KEY, &bytes)?;
            continue;
        };
        let out = f(&mut b);
        let bytes = serde_json::to_vec(&b).unwrap_or_default();
        match store.set(BATCH_KEY, &bytes, cas) {
            Ok(()) => return Ok(out),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host(h)) => return Err(h),
        }
    }
}

/// Appends one settled request to the unsent usage.
pub fn record<S: SharedStore + ?Sized>(store: &S, r: UsageRecord) -> Result<(), HostError> {
    update_batches(store, |b| b.unsent.push(r.clone()))
}

pub fn batches<S: SharedStore + ?Sized>(store: &S) -> Result<Batches, HostError> {
    Ok(read_batches(store)?.0.unwrap_or_default())
}

/// The next sync: the batch in flight if there is one (the same seq and records), else the
/// unsent usage becomes the new in-flight batch with the next seq. `counters` are the
/// counters the current policy charges now (`None` before the first policy).
pub fn prepare_sync<S: SharedStore + ?Sized>(
    store: &S,
    instance_id: &str,
    policy_version: u64,
    counters: &[(BudgetKey, Micros)],
    now_ms: u64,
) -> Result<Outgoing, HostError> {
    let batch = update_batches(store, |b| {
        if b.inflight.is_none() && !b.unsent.is_empty() {
            let n = b.unsent.len().min(MAX_BATCH_RECORDS);
            let usage: Vec<_> = b.unsent.drain(..n).collect();
            b.inflight = Some(Batch {
                seq: b.next_seq.max(1),
                usage,
            });
            b.next_seq = b.next_seq.max(1) + 1;
        }
        b.inflight.clone()
    })?;

    let mut wants = Vec::new();
    let mut leases = Vec::new();
    for (key, limit) in counters {
        let name = key.storage_key();
        let current = lease(store, &name)?;
        let pending = Counters::new(store).used(key)?;
        let default_want = (limit.get() / 16).max(1);
        let want = match current {
            None => default_want,
            Some(l) => {
                let left = l.granted.saturating_sub(pending.get());
                let base = l.want.max(default_want);
                if left < base / LOW_WATER_DIVISOR {
                    base.saturating_mul(2)
                } else {
                    base
                }
            }
        };
        // Room already reserved or settled but unacknowledged must stay covered, and so must
        // a request that was refused for want of a large enough slice.
        let need = take_need(store, &name)?;
        let want = want.max(pending.get()).max(need).min(limit.get());
        leases.push(json!({"counter": name, "want": want.to_string()}));
        wants.push((name, want));
    }
    let leased: Vec<String> = match store.get(LEASED_KEY)?.0 {
        Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
        None => Vec::new(),
    };
    let release: Vec<&String> = leased
        .iter()
        .filter(|c| !wants.iter().any(|(w, _)| w == *c))
        .take(64)
        .collect();

    let seq = batch.as_ref().map(|b| b.seq);
    let body = json!({
        "instanceId": instance_id,
        "seq": seq.unwrap_or(1),
        "policyVersion": policy_version,
        "usage": batch.map(|b| b.usage).unwrap_or_default(),
        "leases": leases,
        "release": release,
    });
    Ok(Outgoing {
        body: serde_json::to_vec(&body).unwrap_or_default(),
        seq,
        sent_at_ms: now_ms,
        wants,
    })
}

/// Applies a 2xx answer to `sent`: takes the leases (allowance first, then the acknowledged
/// amounts leave `pending`, so admission is never looser than the truth in between), clears
/// the acknowledged batch, and stores a new policy.
pub fn apply_response<S: SharedStore + ?Sized>(
    store: &S,
    sent: &Outgoing,
    body: &[u8],
) -> Result<Applied, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("answer not JSON: {e}"))?;
    let ttl = v.get("leaseTtlMs").and_then(Value::as_u64).unwrap_or(0);
    let ack = v.get("ack").and_then(Value::as_u64);
    let host = |e: HostError| format!("shared data error {e:?}");

    // Leases.
    let empty = serde_json::Map::new();
    let leases = v.get("leases").and_then(Value::as_object).unwrap_or(&empty);
    let mut leased = Vec::new();
    for (counter, l) in leases {
        let Some(granted) = l.get("granted").and_then(money) else {
            continue;
        };
        let want = sent
            .wants
            .iter()
            .find(|(c, _)| c == counter)
            .map(|(_, w)| *w)
            .unwrap_or(0);
        let lease = Lease {
            granted,
            valid_until_ms: sent.sent_at_ms.saturating_add(ttl),
            want,
            spent: l.get("spent").and_then(money).unwrap_or(0),
            limit: l.get("limit").and_then(money).unwrap_or(0),
        };
        let bytes = serde_json::to_vec(&lease).unwrap_or_default();
        set_blind(store, &lease_key(counter), &bytes).map_err(host)?;
        leased.push(counter.clone());
    }
    let bytes = serde_json::to_vec(&leased).unwrap_or_default();
    set_blind(store, LEASED_KEY, &bytes).map_err(host)?;

    // The acknowledged batch leaves `pending` (it is inside `granted` now). Only the worker
    // whose CAS clears it does this, so a batch is never subtracted twice.
    let mut applied = Applied::default();
    if let (Some(seq), Some(ack)) = (sent.seq, ack) {
        if seq == ack {
            let cleared = update_batches(store, |b| match &b.inflight {
                Some(f) if f.seq == seq => b.inflight.take(),
                _ => None,
            })
            .map_err(host)?;
            if let Some(batch) = cleared {
                let counters = Counters::new(store);
                for r in &batch.usage {
                    let amount = Micros::parse(&r.amount).unwrap_or(Micros::ZERO);
                    for c in &r.counters {
                        subtract_pending(&counters, store, c, amount).map_err(host)?;
                    }
                }
                applied.acked = Some(seq);
            }
        }
    }

    // Policy.
    if let (Some(doc), Some(version)) = (
        v.get("policy").filter(|p| p.is_object()),
        v.get("policyVersion").and_then(Value::as_u64),
    ) {
        store_policy(store, version, doc).map_err(host)?;
        applied.new_policy_version = Some(version);
    }
    Ok(applied)
}

fn subtract_pending<S: SharedStore + ?Sized>(
    _counters: &Counters<'_, S>,
    store: &S,
    counter: &str,
    amount: Micros,
) -> Result<(), HostError> {
    let key = format!("{}{counter}", counters::KEY_PREFIX);
    loop {
        let (v, cas) = store.get(&key)?;
        if v.is_none() {
            return Ok(());
        }
        let next = settle_counter(counters::decode(v.as_deref()), amount, Micros::ZERO);
        match store.set(&key, &counters::encode(next), cas) {
            Ok(()) => return Ok(()),
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host(h)) => return Err(h),
        }
    }
}

fn money(v: &Value) -> Option<u64> {
    Micros::from_json(v).ok().map(Micros::get)
}

#[cfg(test)]
mod tests;
