//! The SHA-256 digests of the API keys this worker VM has seen, so a known agent's key is
//! hashed once per VM rather than once per request.
//!
//! SHA-256 of the key was the largest single step of a decision (~4k instructions natively,
//! more in the VM, whose build of `sha2` has no SIMD). The cache is looked up by a 128-bit
//! fingerprint of the key — SipHash-1-3 under a random key drawn when the VM starts — and holds
//! only that fingerprint and the digest (which the policy already holds): the raw key is never
//! kept, as everywhere else in Pag0. For another key to be taken for a cached one it would need
//! the same fingerprint under a secret it never sees: about one chance in 2^118 per request
//! with a full cache.
//!
//! A digest is the same whatever the policy, so nothing is invalidated when the policy changes:
//! the policy still looks the digest up in its own client table. At [`CAPACITY`] entries the
//! cache is emptied and refilled, so a flood of made-up keys costs memory only up to the bound.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use pag0_policy::validate::api_key_sha256;
use rustc_hash::FxHashMap;

/// Entries kept before the cache starts over (48 bytes each, plus the table).
pub const CAPACITY: usize = 1024;

pub struct KeyDigests {
    /// Drawn from WASI `random_get` when the VM starts (`RandomState`).
    secret: RandomState,
    digests: RefCell<FxHashMap<u128, [u8; 32]>>,
}

impl Default for KeyDigests {
    fn default() -> Self {
        KeyDigests::new()
    }
}

impl KeyDigests {
    pub fn new() -> Self {
        KeyDigests {
            secret: RandomState::new(),
            digests: RefCell::new(FxHashMap::default()),
        }
    }

    /// `sha256(key)`, from the cache when this key was seen before.
    pub fn digest(&self, key: &str) -> [u8; 32] {
        let fp = self.fingerprint(key);
        let Ok(mut digests) = self.digests.try_borrow_mut() else {
            // Not reachable on one thread; hash without the cache rather than fail.
            return api_key_sha256(key);
        };
        if let Some(d) = digests.get(&fp) {
            return *d;
        }
        let d = api_key_sha256(key);
        if digests.len() >= CAPACITY {
            digests.clear();
        }
        digests.insert(fp, d);
        d
    }

    /// Keys whose digest is cached.
    pub fn len(&self) -> usize {
        self.digests.try_borrow().map_or(0, |d| d.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Two SipHash-1-3 outputs of the key under the VM's secret, domain-separated.
    fn fingerprint(&self, key: &str) -> u128 {
        let half = |domain: u8| {
            let mut h = self.secret.build_hasher();
            h.write_u8(domain);
            h.write(key.as_bytes());
            h.finish()
        };
        (u128::from(half(0)) << 64) | u128::from(half(1))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_key_is_hashed_once_then_served_from_the_cache() {
        let c = KeyDigests::new();
        assert!(c.is_empty());
        assert_eq!(c.digest("k1"), api_key_sha256("k1"));
        assert_eq!(c.len(), 1);
        assert_eq!(c.digest("k1"), api_key_sha256("k1"));
        assert_eq!(c.len(), 1, "the second lookup found the first entry");
        assert_eq!(c.digest("k2"), api_key_sha256("k2"));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn a_flood_of_keys_is_bounded_and_every_answer_stays_right() {
        let c = KeyDigests::new();
        for i in 0..(3 * CAPACITY + 7) {
            let k = format!("made-up-{i}");
            assert_eq!(c.digest(&k), api_key_sha256(&k), "{k}");
            assert!(c.len() <= CAPACITY);
        }
        assert_eq!(c.digest("k1"), api_key_sha256("k1"));
    }

    #[test]
    fn two_vms_draw_different_secrets() {
        let (a, b) = (KeyDigests::new(), KeyDigests::new());
        assert_ne!(a.fingerprint("k1"), b.fingerprint("k1"));
    }

    proptest! {
        #[test]
        fn the_cache_answers_what_sha256_answers(keys in proptest::collection::vec("[ -~]{0,48}", 1..40)) {
            let c = KeyDigests::new();
            // Twice over, so the second pass is answered from the cache.
            for k in keys.iter().chain(keys.iter()) {
                prop_assert_eq!(c.digest(k), api_key_sha256(k));
            }
        }
    }
}
