use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pag0_policy::budget::Scope;
use pag0_policy::{BudgetKey, BudgetView, Reservation};

use super::super::{shared_key, Counters, ReserveError, SetError};
use super::*;
use crate::testing::FakeStore;

use super::super::tests::{key, res};

fn org(amount: u64, limit: u64) -> Reservation {
    res(Scope::OrgMonthly, amount, limit)
}

fn value(store: &FakeStore) -> u64 {
    store.value(&shared_key(&key(Scope::OrgMonthly)))
}

fn writes(store: &FakeStore) -> u32 {
    store.map.lock().unwrap().1
}

fn k() -> BudgetKey {
    key(Scope::OrgMonthly)
}

#[test]
fn grant_is_bounded_by_requests_and_by_a_share_of_the_room_and_none_near_the_limit() {
    // Plenty of room: SLICE_REQUESTS more requests.
    assert_eq!(
        grant(Micros::new(100), Micros::new(100), Micros::new(1_000_000)),
        100 * SLICE_REQUESTS
    );
    // Less room: 1/SLICE_SHARE of what is left after the request.
    assert_eq!(
        grant(
            Micros::new(100),
            Micros::new(100),
            Micros::new(100 + 32 * 300)
        ),
        300
    );
    // Under one more request's worth of share: no slice, exact admission.
    assert_eq!(
        grant(
            Micros::new(100),
            Micros::new(100),
            Micros::new(100 + 32 * 99)
        ),
        0
    );
    assert_eq!(grant(Micros::new(0), Micros::ZERO, Micros::new(1_000)), 0);
}

#[test]
fn a_slice_serves_the_next_requests_without_a_shared_write() {
    let store = FakeStore::default();
    let slices = Slices::new();
    let c = Counters::with_slices(&store, Some(&slices));
    c.reserve_all(&[org(100, 1_000_000)]).unwrap();
    // The request plus a slice of 16 more.
    assert_eq!(value(&store), 100 + 1_600);
    assert_eq!(slices.held(&k()), 1_600);
    let before = writes(&store);
    for _ in 0..16 {
        c.reserve_all(&[org(100, 1_000_000)]).unwrap();
    }
    assert_eq!(
        writes(&store),
        before,
        "16 requests from the slice: no write"
    );
    assert_eq!(slices.held(&k()), 0);
    // The 18th takes a new slice: one write.
    c.reserve_all(&[org(100, 1_000_000)]).unwrap();
    assert_eq!(writes(&store), before + 1);
    assert_eq!(value(&store), 18 * 100 + 1_600);
}

#[test]
fn near_the_limit_every_request_is_admitted_exactly_and_none_past_it() {
    let store = FakeStore::default();
    let slices = Slices::new();
    let c = Counters::with_slices(&store, Some(&slices));
    let mut admitted = 0;
    for _ in 0..15 {
        if c.reserve_all(&[org(7, 70)]).is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10);
    assert_eq!(value(&store), 70);
    assert_eq!(slices.total(), 0, "no slice out of a room of ten requests");
}

#[test]
fn own_slice_counts_as_room_and_the_refusal_shows_what_others_hold_and_spent() {
    let store = FakeStore::default();
    let (mine, theirs) = (Slices::new(), Slices::new());
    let a = Counters::with_slices(&store, Some(&mine));
    let b = Counters::with_slices(&store, Some(&theirs));
    // Limit 10_000: the first request takes 100 and a slice of min(16 × 100, 9_900 / 32) = 309.
    a.reserve_all(&[org(100, 10_000)]).unwrap();
    assert_eq!(mine.held(&k()), 309);
    assert_eq!(value(&store), 409);
    // The view shows this worker its own slice as room, the other worker the whole counter.
    assert_eq!(
        BudgetView::used(&a, &key(Scope::OrgMonthly)),
        Micros::new(100)
    );
    assert_eq!(
        BudgetView::used(&b, &key(Scope::OrgMonthly)),
        Micros::new(409)
    );
    // Fill the counter to the limit from the other worker.
    let rest = 10_000 - 409;
    b.reserve_all(&[org(rest, 10_000)]).unwrap();
    assert_eq!(value(&store), 10_000);
    // This worker can still spend its own slice...
    a.reserve_all(&[org(300, 10_000)]).unwrap();
    assert_eq!(mine.held(&k()), 9);
    // ...and the next one is refused with what is spent or held elsewhere (10_000 − 9).
    let err = a.reserve_all(&[org(10, 10_000)]).unwrap_err();
    assert_eq!(
        err,
        ReserveError::NoRoom {
            index: 0,
            used: Micros::new(9_991)
        }
    );
    assert_eq!(mine.held(&k()), 9, "a refusal keeps the slice");
}

#[test]
fn a_refused_second_counter_puts_the_first_back_into_the_slice() {
    let store = FakeStore::default();
    let slices = Slices::new();
    let c = Counters::with_slices(&store, Some(&slices));
    let project = Scope::ProjectMonthly("p".into());
    let all = |a| [org(a, 1_000_000), res(project.clone(), a, 50)];
    let err = c.reserve_all(&all(60)).unwrap_err();
    assert!(matches!(err, ReserveError::NoRoom { index: 1, .. }));
    // The org counter still counts the 60 (+ its slice) but all of it is this worker's room.
    let org_key = k();
    assert_eq!(value(&store), 60 + 960);
    assert_eq!(slices.held(&org_key), 60 + 960);
    assert_eq!(BudgetView::used(&c, &key(Scope::OrgMonthly)), Micros::ZERO);
    // Given back at the tick after next (idle), the counter is exactly what was spent: 0.
    slices.return_idle(&store).unwrap();
    slices.return_idle(&store).unwrap();
    assert_eq!(value(&store), 0);
    assert_eq!(slices.total(), 0);
}

#[test]
fn settling_refunds_into_the_slice_and_charges_overruns_from_it_first() {
    let store = FakeStore::default();
    let slices = Slices::new();
    let c = Counters::with_slices(&store, Some(&slices));
    let r = [org(100, 1_000_000)];
    c.reserve_all(&r).unwrap();
    let before = writes(&store);
    // Spent 40 of 100: 60 back into the slice, no write.
    c.settle_all(&r, Micros::new(40)).unwrap();
    assert_eq!(slices.held(&k()), 1_660);
    assert_eq!(writes(&store), before);
    // Spent 300 on a 100 reservation: 200 more from the slice, no write.
    c.reserve_all(&r).unwrap();
    c.settle_all(&r, Micros::new(300)).unwrap();
    assert_eq!(slices.held(&k()), 1_660 - 100 - 200);
    assert_eq!(writes(&store), before);
    // An overrun the slice cannot cover: the rest is charged to the counter, limit or not.
    c.reserve_all(&r).unwrap();
    c.settle_all(&r, Micros::new(100 + 5_000)).unwrap();
    assert_eq!(slices.held(&k()), 0);
    // Once all is given back, the counter is what was spent: 40 + 300 + 5_100.
    slices.return_all(&store).unwrap();
    assert_eq!(value(&store), 40 + 300 + 5_100);
}

#[test]
fn idle_slices_go_back_at_the_second_tick_and_busy_ones_stay() {
    let store = FakeStore::default();
    let slices = Slices::new();
    let c = Counters::with_slices(&store, Some(&slices));
    c.reserve_all(&[org(100, 1_000_000)]).unwrap();
    slices.return_idle(&store).unwrap();
    assert_eq!(slices.held(&k()), 1_600, "used since the last tick: kept");
    c.reserve_all(&[org(100, 1_000_000)]).unwrap();
    slices.return_idle(&store).unwrap();
    assert_eq!(slices.held(&k()), 1_500, "used again: kept");
    slices.return_idle(&store).unwrap();
    assert_eq!(slices.held(&k()), 0, "idle for a whole tick: given back");
    assert_eq!(value(&store), 200);
}

#[test]
fn a_host_error_giving_back_keeps_the_slice_for_the_next_tick() {
    struct Broken;
    impl SharedStore for Broken {
        fn get(&self, _: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostError> {
            Err(HostError(9))
        }
        fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), SetError> {
            Err(SetError::Host(HostError(9)))
        }
        fn now_nanos(&self) -> u64 {
            0
        }
    }
    let slices = Slices::new();
    slices.put(&k(), 500);
    assert_eq!(slices.return_all(&Broken), Err(HostError(9)));
    assert_eq!(slices.held(&k()), 500);
    let store = FakeStore::default();
    store
        .set(&shared_key(&k()), &encode(Micros::new(800)), None)
        .unwrap();
    slices.return_all(&store).unwrap();
    assert_eq!(value(&store), 300);
}

/// Two worker VMs with their own slices over one shared store, 40 requests each, every one
/// settled at an actual cost of 0..=10 on a reservation of 10: what they spend never passes the
/// limit, and once every slice is given back the counter is exactly what was spent.
#[test]
fn workers_with_slices_never_spend_past_the_limit_and_leave_the_counter_exact() {
    for limit in [300u64, 100_000] {
        let store = Arc::new(FakeStore::default());
        store
            .set(&shared_key(&k()), &encode(Micros::ZERO), None)
            .unwrap();
        let admitted = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..2u64)
            .map(|w| {
                let (store, admitted) = (store.clone(), admitted.clone());
                std::thread::spawn(move || {
                    let slices = Slices::new();
                    let c = Counters::with_slices(&*store, Some(&slices));
                    let mut spent = 0;
                    for i in 0..40u64 {
                        let r = [org(10, limit)];
                        if c.reserve_all(&r).is_ok() {
                            admitted.fetch_add(1, Ordering::SeqCst);
                            let actual = (i + w) % 11;
                            c.settle_all(&r, Micros::new(actual)).unwrap();
                            spent += actual;
                        }
                        std::thread::yield_now();
                    }
                    slices.return_all(&*store).unwrap();
                    spent
                })
            })
            .collect();
        let spent: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert!(spent <= limit, "spent {spent} of {limit}");
        assert_eq!(
            value(&store),
            spent,
            "limit {limit}: the counter is what was spent"
        );
        if limit == 100_000 {
            assert_eq!(
                admitted.load(Ordering::SeqCst),
                80,
                "plenty of room: all admitted"
            );
        }
    }
}

/// Near the limit no worker holds a slice: a released reservation (an upstream error) and a
/// refused request's rollback go back to the counter at once, for every worker.
#[test]
fn without_a_slice_a_release_frees_the_counter_for_the_other_worker_at_once() {
    let store = FakeStore::default();
    let (a, b) = (Slices::new(), Slices::new());
    let ca = Counters::with_slices(&store, Some(&a));
    let cb = Counters::with_slices(&store, Some(&b));
    let r = [org(2_000, 2_000)];
    ca.reserve_all(&r).unwrap();
    assert!(
        cb.reserve_all(&r).is_err(),
        "the one request's room is taken"
    );
    ca.settle_all(&r, Micros::ZERO).unwrap();
    assert_eq!(value(&store), 0);
    assert_eq!(a.total(), 0);
    cb.reserve_all(&r).unwrap();
    // A rollback near the limit: the org counter fits, the project counter does not.
    let project = Scope::ProjectMonthly("p".into());
    let both = [org(10, 2_100), res(project, 10, 5)];
    assert!(matches!(
        ca.reserve_all(&both),
        Err(ReserveError::NoRoom { index: 1, .. })
    ));
    assert_eq!(
        value(&store),
        2_000,
        "the org reservation rolled back on the counter"
    );
    assert_eq!(a.total(), 0);
}

/// The budget check while deciding: a slice that covers the request answers without the
/// counter (even one pushed past its limit by another request's overrun: the slice is room the
/// counter already counts); a slice too small falls back to reading it, exactly.
#[test]
fn the_budget_check_answers_from_a_covering_slice_and_reads_otherwise() {
    let store = FakeStore::default();
    let slices = Slices::new();
    let c = Counters::with_slices(&store, Some(&slices));
    c.reserve_all(&[org(100, 10_000)]).unwrap();
    assert_eq!(slices.held(&k()), 309);
    // Another worker's overrun takes the counter past the limit.
    store
        .set(&shared_key(&k()), &encode(Micros::new(12_000)), None)
        .unwrap();
    let key = key(Scope::OrgMonthly);
    assert_eq!(
        BudgetView::check(&c, &key, Micros::new(300), Micros::new(10_000)),
        Ok(())
    );
    // 400 is more than the slice: the counter is read (12_000 − own 309 shown as spent).
    assert_eq!(
        BudgetView::check(&c, &key, Micros::new(400), Micros::new(10_000)),
        Err(Micros::new(12_000 - 309))
    );
    // Without slices the check is the plain read.
    let plain = Counters::new(&store);
    assert_eq!(
        BudgetView::check(&plain, &key, Micros::new(1), Micros::new(10_000)),
        Err(Micros::new(12_000))
    );
    // And what the check let through is admitted from the slice, with no write.
    let before = writes(&store);
    c.reserve_all(&[org(300, 10_000)]).unwrap();
    assert_eq!(writes(&store), before);
    assert_eq!(value(&store), 12_000, "the counter already counted it");
}

/// After the root context is done its slices are given back and closed: a request still in
/// flight settles on the counter (its refund would otherwise sit in slices nobody returns).
#[test]
fn closed_slices_give_everything_back_and_later_settlements_go_to_the_counter() {
    let store = FakeStore::default();
    let slices = Slices::new();
    let r = [org(100, 1_000_000)];
    Counters::with_slices(&store, Some(&slices))
        .reserve_all(&r)
        .unwrap();
    assert_eq!(value(&store), 1_700);
    slices.close(&store).unwrap();
    assert_eq!(
        value(&store),
        100,
        "the slice went back; the open reservation stays"
    );
    Counters::with_slices(&store, Some(&slices))
        .settle_all(&r, Micros::new(30))
        .unwrap();
    assert_eq!(value(&store), 30, "settled on the counter");
    assert_eq!(slices.total(), 0);
    // And a new reservation through closed slices takes no slice.
    Counters::with_slices(&store, Some(&slices))
        .reserve_all(&r)
        .unwrap();
    assert_eq!(value(&store), 130);
}
