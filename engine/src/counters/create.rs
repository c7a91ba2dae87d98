//! Creating a counter exactly once.
//!
//! Envoy's shared data has no create-if-absent: a set on a missing key succeeds whatever the
//! cas, so two workers that both saw a counter missing would both create it, and the later
//! create could wipe an increment the other one already made (a fresh Envoy taking its first
//! burst of requests, or any counter at the start of a day or month, is exactly that case).
//!
//! So creations are serialised by one lock key that exists before traffic
//! ([`prepare`], called from `on_configure`) and is only ever taken by CAS. Under the lock a
//! counter is created only if still missing; counters are never deleted, so each is created
//! once and every later change is a CAS on it. The lock is held for two host calls; a holder
//! that vanished (a trapped VM) is overtaken after [`STALE_AFTER_NANOS`].

use super::{HostError, SetError, SharedStore};

/// Value: the holder's stamp (host nanoseconds, never 0) as u64 LE, or 0 when free.
/// Under [`KEY_PREFIX`](super::KEY_PREFIX), but no storage key starts with `.` (they start with the scope).
pub const LOCK_KEY: &str = "pag0/b/.create-lock";

pub const STALE_AFTER_NANOS: u64 = 1_000_000_000;

const FREE: [u8; 8] = 0u64.to_le_bytes();

/// Makes sure the lock key exists. Runs in `on_configure`, before the VM serves requests
/// (the main-thread VM is configured before any worker), so this blind create races with
/// nobody holding the lock.
pub fn prepare<S: SharedStore + ?Sized>(store: &S) -> Result<(), HostError> {
    if store.get(LOCK_KEY)?.0.is_none() {
        set(store, LOCK_KEY, &FREE, None)?;
    }
    Ok(())
}

/// Creates `key` with `initial` unless it exists. Returns once the key exists.
pub fn create<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    initial: &[u8],
) -> Result<(), HostError> {
    loop {
        if store.get(key)?.0.is_some() {
            return Ok(());
        }
        let (lock, cas) = store.get(LOCK_KEY)?;
        let now = store.now_nanos().max(1);
        let holder = lock.as_deref().map_or(0, stamp);
        if holder != 0 && now.saturating_sub(holder) < STALE_AFTER_NANOS {
            continue; // someone is creating (maybe this very key): look again
        }
        match store.set(LOCK_KEY, &now.to_le_bytes(), cas) {
            Ok(()) => {}
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Host(h)) => return Err(h),
        }
        let created = match store.get(key) {
            Ok((Some(_), _)) => Ok(()),
            Ok((None, _)) => set(store, key, initial, None),
            Err(h) => Err(h),
        };
        release(store, now)?;
        return created;
    }
}

/// Frees the lock if it is still ours (by CAS, so a holder that overtook a stale lock keeps
/// it; a mismatch while the stamp is still ours is re-read and retried).
fn release<S: SharedStore + ?Sized>(store: &S, ours: u64) -> Result<(), HostError> {
    super::cas_update(store, LOCK_KEY, |lock, _| {
        if lock.map_or(0, stamp) != ours {
            return super::Update::Keep(());
        }
        super::Update::Set(FREE, ())
    })
}

fn set<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    value: &[u8],
    cas: Option<u32>,
) -> Result<(), HostError> {
    match store.set(key, value, cas) {
        // A conditional-free set cannot mismatch; if a host says so, the key exists: fine.
        Ok(()) | Err(SetError::CasMismatch) => Ok(()),
        Err(SetError::Host(h)) => Err(h),
    }
}

fn stamp(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_le_bytes)
}
