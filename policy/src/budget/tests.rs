use proptest::prelude::*;

use super::*;

#[test]
fn try_reserve_edges() {
    let m = Micros::new;
    assert_eq!(try_reserve(m(0), m(10), m(10)), Ok(m(10)));
    assert_eq!(try_reserve(m(1), m(10), m(10)), Err(m(9)));
    assert_eq!(try_reserve(m(20), m(0), m(10)), Err(m(0)));
    assert_eq!(try_reserve(m(5), m(0), m(10)), Ok(m(5)));
    assert_eq!(try_reserve(Micros::MAX, m(1), Micros::MAX), Err(m(0)));
}

#[test]
fn settle_counter_edges() {
    let m = Micros::new;
    assert_eq!(settle_counter(m(100), m(40), m(10)), m(70));
    assert_eq!(settle_counter(m(100), m(40), m(60)), m(120));
    // A counter reset under a reservation never goes negative.
    assert_eq!(settle_counter(m(0), m(40), m(0)), m(0));
    assert_eq!(settle_counter(Micros::MAX, m(0), m(1)), Micros::MAX);
}

#[test]
fn storage_keys_and_labels() {
    let k = BudgetKey {
        scope: Scope::ProjectDaily("sales-ai".into()),
        period: "2026-11-24".into(),
    };
    assert_eq!(k.storage_key(), "project.daily/sales-ai/2026-11-24");
    let k = BudgetKey {
        scope: Scope::OrgMonthly,
        period: "2026-11".into(),
    };
    assert_eq!(k.storage_key(), "org.monthly/2026-11");
    assert_eq!(Scope::OrgDaily.label(), "org.daily");
    assert_eq!(Scope::ProjectMonthly("p".into()).label(), "project.monthly");
    assert_eq!(Scope::OrgDaily.project_id(), None);
}

#[derive(Debug, Clone)]
enum Op {
    Reserve(u64),
    /// Settle the oldest open reservation with this actual cost.
    Settle(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..5_000).prop_map(Op::Reserve),
        (0u64..5_000).prop_map(Op::Settle)
    ]
}

proptest! {
    #[test]
    fn reserve_never_exceeds_limit(used in any::<u64>(), amount in any::<u64>(), limit in any::<u64>()) {
        let (u, a, l) = (Micros::new(used), Micros::new(amount), Micros::new(limit));
        match try_reserve(u, a, l) {
            Ok(next) => {
                prop_assert!(next <= l);
                prop_assert_eq!(u128::from(next.get()), u128::from(used) + u128::from(amount));
            }
            Err(room) => {
                prop_assert_eq!(room, l.saturating_sub(u));
                prop_assert!(u128::from(used) + u128::from(amount) > u128::from(limit));
            }
        }
    }

    /// A sequence of reservations and settlements within one period: the counter never exceeds
    /// the limit through reservations, remaining room is never negative, and the settled total
    /// only grows.
    #[test]
    fn reserve_settle_sequences(limit in 0u64..50_000, ops in prop::collection::vec(op(), 0..60)) {
        let limit = Micros::new(limit);
        let mut used = Micros::ZERO;
        let mut open: std::collections::VecDeque<Micros> = Default::default();
        let mut settled_total = Micros::ZERO;
        for o in ops {
            match o {
                Op::Reserve(a) => {
                    let before = used;
                    match try_reserve(used, Micros::new(a), limit) {
                        Ok(next) => { used = next; open.push_back(Micros::new(a)); prop_assert!(used <= limit); }
                        Err(room) => { prop_assert_eq!(used, before); prop_assert_eq!(room, limit.saturating_sub(used)); }
                    }
                }
                Op::Settle(actual) => {
                    let Some(reserved) = open.pop_front() else { continue };
                    let before_total = settled_total;
                    used = settle_counter(used, reserved, Micros::new(actual));
                    settled_total = settled_total.checked_add(Micros::new(actual)).unwrap();
                    prop_assert!(settled_total >= before_total);
                }
            }
            let open_sum = open.iter().fold(Micros::ZERO, |s, r| s.checked_add(*r).unwrap());
            // The counter is exactly what was charged plus what is still reserved.
            prop_assert_eq!(used, settled_total.checked_add(open_sum).unwrap());
            // Remaining room is never negative (saturates at zero).
            prop_assert!(limit.saturating_sub(used) <= limit);
        }
    }
}
