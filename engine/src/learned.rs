//! Learned estimates in shared data (docs/estimates.md): one key per catalogue entry that
//! learns ([`pag0_policy::CompiledPolicy::learn_key`]), value [`Learned::encode`] (12 bytes),
//! shared by every worker VM of one Envoy.
//!
//! - The request path reads the key once (in [`read`]) and passes the figure to `finish`.
//! - Settling a request whose cost was a believed report ([`pag0_policy::settle::Charge`]'s
//!   `reported`) updates it by CAS, retried until it lands ([`observe`]); a report that leaves
//!   the state as it was (the high equals the report) writes nothing.
//! - Managed mode: the sidecar's fleet-wide figures, returned by each sync, are folded in by
//!   [`merge_fleet`] (`max` of both, per key), so the next decision on any worker follows the
//!   most expensive recent experience of this Envoy and of the fleet.
//!
//! A key is created exactly once through the counters' creation lock ([`create`]), like a
//! budget counter. A value of another length (not written by this layout) reads as nothing
//! learned and is overwritten by the next report.

use pag0_policy::{Learned, Micros};

use crate::counters::{cas_update, HostError, SharedStore, Update};

/// Prefix of every learned-estimate key (never a counter key, never a managed key).
pub const KEY_PREFIX: &str = "pag0/e/";

fn shared_key(key: &str) -> String {
    format!("{KEY_PREFIX}{key}")
}

/// This Envoy's figure for `key`; `None` when nothing is learned yet (or on a host error:
/// the catalogue's estimate then stands, as before learning existed).
pub fn read<S: SharedStore + ?Sized>(store: &S, key: &str) -> Option<Learned> {
    match store.get(&shared_key(key)) {
        Ok((Some(v), _)) => Learned::decode(&v).filter(|l| l.samples > 0),
        _ => None,
    }
}

/// Applies `f` to the figure of `key` by CAS until it lands. Writes nothing when `f` leaves
/// it unchanged.
fn update<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    f: impl Fn(Learned) -> Learned,
) -> Result<(), HostError> {
    let k = shared_key(key);
    cas_update(store, &k, |v, _| {
        let Some(v) = v else {
            return Update::Create(Learned::default().encode());
        };
        let before = Learned::decode(v).unwrap_or_default();
        let after = f(before);
        if after == before && v.len() == pag0_policy::learn::ENCODED_LEN {
            return Update::Keep(());
        }
        Update::Set(after.encode(), ())
    })
}

/// One settled, believed report of `actual` for a request estimated at `estimate`.
pub fn observe<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    estimate: Micros,
    actual: Micros,
) -> Result<(), HostError> {
    update(store, key, |l| l.observe(estimate, actual))
}

/// Managed mode: the fleet's figure for `key` from a sync answer, folded into this Envoy's.
pub fn merge_fleet<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    fleet: Learned,
) -> Result<(), HostError> {
    update(store, key, |l| l.max(fleet))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::{create, SetError};
    use crate::testing::FakeStore;

    #[test]
    fn learns_at_once_writes_only_changes_and_merges_the_fleet() {
        let store = FakeStore::default();
        assert_eq!(read(&store, "api.salesforce.com"), None);
        observe(
            &store,
            "api.salesforce.com",
            Micros::new(1000),
            Micros::new(120_000),
        )
        .unwrap();
        let l = read(&store, "api.salesforce.com").unwrap();
        assert_eq!((l.high_permille, l.samples), (120_000, 1));
        // The same report again: only the sample count changes.
        observe(
            &store,
            "api.salesforce.com",
            Micros::new(1000),
            Micros::new(120_000),
        )
        .unwrap();
        assert_eq!(read(&store, "api.salesforce.com").unwrap().samples, 2);
        // A fleet figure below ours changes nothing; above it raises ours.
        let writes = store.map.lock().unwrap().1;
        merge_fleet(
            &store,
            "api.salesforce.com",
            Learned {
                high_permille: 5_000,
                samples: 1,
            },
        )
        .unwrap();
        assert_eq!(
            store.map.lock().unwrap().1,
            writes,
            "an unchanged figure is not rewritten"
        );
        merge_fleet(
            &store,
            "api.salesforce.com",
            Learned {
                high_permille: 300_000,
                samples: 9,
            },
        )
        .unwrap();
        let l = read(&store, "api.salesforce.com").unwrap();
        assert_eq!((l.high_permille, l.samples), (300_000, 9));
        // Other entries are separate keys.
        assert_eq!(read(&store, "api.deepl.com"), None);
    }

    /// A store where another worker's report lands between each read and write, once.
    struct Racing {
        inner: FakeStore,
        races: std::cell::Cell<u32>,
    }

    impl SharedStore for Racing {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            if cas.is_some() && self.races.get() > 0 {
                self.races.set(self.races.get() - 1);
                observe(&self.inner, "k", Micros::new(100), Micros::new(900)).unwrap();
            }
            self.inner.set(key, value, cas)
        }
        fn now_nanos(&self) -> u64 {
            self.inner.now_nanos()
        }
    }

    #[test]
    fn a_conflicting_report_is_never_lost() {
        let store = Racing {
            inner: FakeStore::default(),
            races: std::cell::Cell::new(3),
        };
        create::prepare(&store).unwrap();
        for _ in 0..5 {
            observe(&store, "k", Micros::new(100), Micros::new(100)).unwrap();
        }
        // 5 of ours and 3 racing ones (each a 9× report): all 8 counted, the 9× is the high
        // (decayed by the cheaper reports that landed after it).
        let l = read(&store, "k").unwrap();
        assert_eq!(l.samples, 8);
        assert!(l.high_permille > 1000, "{l:?}");
    }
}
