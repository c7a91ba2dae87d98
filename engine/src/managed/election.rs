//! Which worker syncs: this Envoy's `instanceId` and the owner key, taken by CAS (see
//! [`OWNER_KEY`](super::OWNER_KEY)).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use crate::counters::{cas_update, create, HostError, SharedStore, Update};

use super::{INSTANCE_KEY, OWNER_KEY};

/// A random u64: the host clock mixed with std's per-process random hash keys (on wasip1 they
/// come from WASI `random_get`).
pub fn random_u64(now_nanos: u64) -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(now_nanos);
    h.finish()
}

/// This Envoy's `instanceId`, created once (the first worker configured makes it).
pub fn instance_id(store: &dyn SharedStore) -> Result<String, HostError> {
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
pub fn try_own(
    store: &dyn SharedStore,
    worker: u64,
    now_ms: u64,
    stale_after_ms: u64,
) -> Result<bool, HostError> {
    cas_update(store, OWNER_KEY, |value, _| {
        let current = value.and_then(two_u64);
        let free = match current {
            None => true,
            Some((owner, stamp)) => {
                owner == worker || now_ms.saturating_sub(stamp) > stale_after_ms
            }
        };
        if !free {
            return Update::Keep(false);
        }
        let mut v = worker.to_le_bytes().to_vec();
        v.extend_from_slice(&now_ms.to_le_bytes());
        if value.is_none() {
            // Never an empty value: Envoy reads one back as missing. Owner 0 at time 0 is stale.
            return Update::Create(vec![0u8; 16]);
        }
        Update::Set(v, true)
    })
}

fn two_u64(b: &[u8]) -> Option<(u64, u64)> {
    let a = <[u8; 8]>::try_from(b.get(..8)?).ok()?;
    let c = <[u8; 8]>::try_from(b.get(8..16)?).ok()?;
    Some((u64::from_le_bytes(a), u64::from_le_bytes(c)))
}
