//! Learned estimates: what an endpoint's requests really cost, relative to the catalogue.
//!
//! The catalogue price of an endpoint settled from a cost header or from usage can be far from
//! what the upstream charges (the seed's Salesforce export lists $0.001 and reports $0.12).
//! Admission reserves the estimate, so a budget is overshot by the difference on every request
//! in flight when the budget runs out. This module keeps, per catalogue entry, a compact
//! summary of settled costs and turns it into a higher reservation:
//!
//! - the state is [`Learned`]: a **decaying high** of the ratio `actual / estimate` in
//!   per-mille (integer, no floats) and the number of reports seen;
//! - a report **above** the high raises it at once: one sample is enough;
//! - a report **below** the high lowers it by `1/2^DECAY_SHIFT` (1/16) of the gap, so the
//!   high forgets an outlier geometrically: the gap halves every 11 cheaper reports, is under
//!   10 % after 36 and under 1 % after 72 ([`FORGET_90_SAMPLES`], [`FORGET_99_SAMPLES`]);
//! - the reservation is `max(estimate, ceil(estimate × high / 1000))`, capped by the
//!   request's suspect bound ([`crate::Settlement::bound_for`]: the most the request can be
//!   charged whatever the upstream reports), see [`Learned::reserve`].
//!
//! Learning in proportion to the estimate (not in micro-USD) lets token-priced endpoints learn
//! too: their estimate differs per request (`max_tokens`, body size), the ratio does not. A free
//! endpoint (estimate 0) cannot learn: give it a price.
//!
//! This is pure: the host keeps the state (Envoy shared data, the sidecar's store) and passes
//! the figure it holds to [`crate::CompiledPolicy::finish`] in
//! [`crate::FinishOptions::learned`]; [`Learned::observe`] computes the next state from a
//! settled report.

use crate::money::Micros;

/// Per-mille: a ratio of 1000 is "the report equals the estimate".
pub const PERMILLE: u64 = 1000;

/// A report below the high lowers it by `gap >> DECAY_SHIFT` (1/16 of the gap).
pub const DECAY_SHIFT: u32 = 4;

/// Cheaper reports after which less than 10 % of an outlier's excess is left:
/// `(15/16)^36 < 0.1`.
pub const FORGET_90_SAMPLES: u32 = 36;

/// Cheaper reports after which less than 1 % is left: `(15/16)^72 < 0.01`.
pub const FORGET_99_SAMPLES: u32 = 72;

/// Bytes of [`Learned::encode`].
pub const ENCODED_LEN: usize = 12;

/// The key a catalogue entry learns under: `host@pricing` where `pricing` is 8 hex digits of
/// an FNV-1a hash of the entry's compiled prices. A price change (the catalogue fixed after a
/// `catalogue-price-off` recommendation) starts a fresh figure instead of scaling the new price
/// by a ratio learned against the old one. [`key_host`] gives the host back.
pub fn key(host: &str, pricing: &crate::pricing::EndpointPricing) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in format!("{pricing:?}").bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{host}@{h:08x}")
}

/// The host of a [`key`] (the whole key when it has no `@`).
pub fn key_host(key: &str) -> &str {
    key.split_once('@').map_or(key, |(h, _)| h)
}

/// The learned figure of one catalogue entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Learned {
    /// Decaying high of `actual / estimate`, per-mille (1000 = as estimated).
    pub high_permille: u64,
    /// Reports seen (saturating).
    pub samples: u32,
}

// === impl Learned ===

impl Learned {
    /// `ceil(actual × 1000 / estimate)`; `None` for a free (0) estimate. Saturating.
    pub fn ratio_permille(estimate: Micros, actual: Micros) -> Option<u64> {
        let e = u128::from(estimate.get());
        if e == 0 {
            return None;
        }
        let r = (u128::from(actual.get()) * u128::from(PERMILLE)).div_ceil(e);
        Some(u64::try_from(r).unwrap_or(u64::MAX))
    }

    /// The state after one settled report of `actual` for a request estimated at `estimate`.
    /// A free estimate teaches nothing (the state is returned unchanged).
    pub fn observe(self, estimate: Micros, actual: Micros) -> Learned {
        let Some(r) = Self::ratio_permille(estimate, actual) else {
            return self;
        };
        let high = if self.samples == 0 || r >= self.high_permille {
            r
        } else {
            self.high_permille - ((self.high_permille - r) >> DECAY_SHIFT)
        };
        Learned {
            high_permille: high,
            samples: self.samples.saturating_add(1),
        }
    }

    /// The higher of two figures (this Envoy's and the fleet's): the reservation follows the
    /// most expensive recent experience anywhere.
    pub fn max(self, other: Learned) -> Learned {
        Learned {
            high_permille: self.high_permille.max(other.high_permille),
            samples: self.samples.max(other.samples),
        }
    }

    /// What a request estimated at `estimate` reserves: `ceil(estimate × high / 1000)`, never
    /// below `estimate` (the catalogue's figure is a floor) and never above
    /// `max(estimate, bound)` (`bound`: the request's suspect bound — a report above it is
    /// charged the bound, so reserving more could only refuse requests for nothing).
    pub fn reserve(self, estimate: Micros, bound: Micros) -> Micros {
        let scaled = (u128::from(estimate.get()) * u128::from(self.high_permille))
            .div_ceil(u128::from(PERMILLE));
        let scaled = Micros::new(u64::try_from(scaled).unwrap_or(u64::MAX));
        scaled.min(bound).max(estimate)
    }

    /// 12 bytes: `high_permille` u64 LE ++ `samples` u32 LE.
    pub fn encode(self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        let (h, s) = out.split_at_mut(8);
        h.copy_from_slice(&self.high_permille.to_le_bytes());
        s.copy_from_slice(&self.samples.to_le_bytes());
        out
    }

    /// The inverse of [`Learned::encode`]; `None` for any other length.
    pub fn decode(b: &[u8]) -> Option<Learned> {
        let h = <[u8; 8]>::try_from(b.get(..8)?).ok()?;
        let s = <[u8; 4]>::try_from(b.get(8..)?).ok()?;
        Some(Learned {
            high_permille: u64::from_le_bytes(h),
            samples: u32::from_le_bytes(s),
        })
    }
}

#[cfg(test)]
mod tests;
