//! Lease arithmetic, shared by every backend (they differ only in how they lock).
//!
//! Invariant kept per counter, under the counter's row lock:
//!
//! ```text
//!     spent + Σ granted(unexpired leases)  ≤  limit        (after every grant)
//! ```
//!
//! A grant only hands out room that is neither spent nor held by another instance. Usage
//! moves money from an instance's lease into `spent` (so the sum does not grow), except when a
//! request's actual cost exceeded what the instance still held: that excess is charged in full
//! (the money is already spent upstream) and is the only way the sum can pass the limit while
//! filters honour their leases. See docs/sync-protocol.md for the fleet-wide bound.

/// The room a counter can still hand out to `instance`, and what it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Room {
    pub limit: u64,
    pub spent: u64,
    /// Unexpired grants held by other instances.
    pub others: u64,
    /// The instance's own unexpired grant before this sync.
    pub mine: u64,
}

impl Room {
    /// Room nobody holds: `limit - spent - others - mine`, never negative.
    pub fn free(&self) -> u64 {
        self.limit
            .saturating_sub(self.spent)
            .saturating_sub(self.others)
            .saturating_sub(self.mine)
    }

    /// The instance's new total grant when it wants to hold `want`: it keeps what it has
    /// (never clawed back; it may be admitting against it right now) and tops up towards
    /// `want` from the free room. Asking for less than it holds keeps the current grant:
    /// giving room back is explicit (`release`) or by expiry.
    pub fn grant(&self, want: u64) -> u64 {
        let top_up = want.saturating_sub(self.mine).min(self.free());
        self.mine.saturating_add(top_up)
    }
}

/// Default slice when the filter does not say how much it wants: 1/16 of the limit, at least
/// 1 micro-USD. Small enough that 16 idle instances cannot strand the whole budget for longer
/// than a lease TTL, large enough that a busy one syncs for room rarely.
pub fn default_want(limit: u64) -> u64 {
    limit.div_ceil(16).max(1).min(limit)
}

/// Applies usage to a grant: the instance spent `amount` of it. Saturates at zero (an actual
/// cost above the estimate is charged to `spent` in full, the grant simply runs dry).
pub fn consume(granted: u64, amount: u64) -> u64 {
    granted.saturating_sub(amount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grant_tops_up_from_free_room_only() {
        let r = Room {
            limit: 100,
            spent: 30,
            others: 50,
            mine: 5,
        };
        assert_eq!(r.free(), 15);
        assert_eq!(r.grant(10), 10, "already above want: keep, no top-up");
        assert_eq!(r.grant(12), 12);
        assert_eq!(r.grant(1000), 20, "capped by free room");
        assert_eq!(r.grant(0), 5, "asking for nothing keeps the grant");
    }

    #[test]
    fn default_want_is_a_sixteenth_and_never_zero() {
        assert_eq!(default_want(1_600), 100);
        assert_eq!(default_want(1), 1);
        assert_eq!(default_want(17), 2);
        assert_eq!(default_want(0), 0);
    }

    proptest! {
        #[test]
        fn grant_never_breaks_the_invariant(
            limit in 0u64..1_000_000, spent in 0u64..1_000_000, others in 0u64..1_000_000,
            mine in 0u64..1_000_000, want in 0u64..2_000_000,
        ) {
            let r = Room { limit, spent, others, mine };
            let g = r.grant(want);
            prop_assert!(g >= mine, "a grant never shrinks");
            if spent + others + mine <= limit {
                prop_assert!(spent + others + g <= limit);
            } else {
                prop_assert_eq!(g, mine, "no room: nothing new");
            }
        }

        #[test]
        fn repeating_a_grant_is_idempotent(
            limit in 0u64..1_000_000, spent in 0u64..1_000_000, others in 0u64..1_000_000,
            mine in 0u64..1_000_000, want in 0u64..2_000_000,
        ) {
            let first = Room { limit, spent, others, mine }.grant(want);
            let again = Room { limit, spent, others, mine: first }.grant(want);
            prop_assert_eq!(first, again);
        }
    }
}
