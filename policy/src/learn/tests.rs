use std::cell::RefCell;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::budget::{settle_counter, BudgetKey, BudgetView};
use crate::decide::{Decision, FinishOptions, HeadOutcome, RequestHead};
use crate::validate::CompiledPolicy;

// --- the learner alone ---

#[test]
fn one_report_above_raises_the_high_at_once() {
    let est = Micros::new(1000);
    let l = Learned::default().observe(est, Micros::new(120_000));
    assert_eq!(
        l,
        Learned {
            high_permille: 120_000,
            samples: 1
        }
    );
    // The demo's second export already reserves the $0.12 it will cost.
    assert_eq!(l.reserve(est, Micros::new(200_000)), Micros::new(120_000));
    // Capped by the bound, never below the estimate.
    assert_eq!(l.reserve(est, Micros::new(50_000)), Micros::new(50_000));
    assert_eq!(l.reserve(est, Micros::new(10)), est);
    // A cheaper first report: the high follows it down, the estimate stays the floor.
    let cheap = Learned::default().observe(est, Micros::new(10));
    assert_eq!(cheap.high_permille, 10);
    assert_eq!(cheap.reserve(est, Micros::new(200_000)), est);
}

#[test]
fn an_outlier_is_forgotten_after_the_documented_number_of_cheaper_reports() {
    let est = Micros::new(1000);
    // Steady at the estimate, one 100× outlier.
    let mut l = Learned::default().observe(est, est);
    l = l.observe(est, Micros::new(100_000));
    assert_eq!(l.high_permille, 100_000);
    let excess = |l: Learned| l.high_permille - PERMILLE;
    let start = excess(l);
    for n in 1..=FORGET_99_SAMPLES {
        l = l.observe(est, est);
        if n == 11 {
            assert!(excess(l) <= start / 2 + 16, "halved after 11: {l:?}");
        }
        if n == FORGET_90_SAMPLES {
            assert!(excess(l) < start / 10, "under 10 % after 36: {l:?}");
        }
    }
    assert!(excess(l) < start / 100, "under 1 % after 72: {l:?}");
    // Never below the reports: it converges to them from above.
    assert!(l.high_permille >= PERMILLE);
    assert_eq!(l.samples, 2 + FORGET_99_SAMPLES);
}

#[test]
fn free_estimates_teach_nothing_and_the_encoding_round_trips() {
    let l = Learned {
        high_permille: 7_000,
        samples: 3,
    };
    assert_eq!(l.observe(Micros::ZERO, Micros::new(5)), l);
    assert_eq!(Learned::decode(&l.encode()), Some(l));
    assert_eq!(Learned::decode(&l.encode()[..11]), None);
    assert_eq!(Learned::decode(&[0u8; 13]), None);
    assert_eq!(
        Learned::ratio_permille(Micros::new(3), Micros::new(1)),
        Some(334)
    );
    assert_eq!(
        Learned::ratio_permille(Micros::new(1), Micros::MAX),
        Some(u64::MAX)
    );
}

proptest! {
    /// The learned reservation never falls below the catalogue's estimate and never exceeds
    /// the cap (the request's bound), whatever was reported before.
    #[test]
    fn the_reservation_stays_between_the_catalogue_and_the_cap(
        reports in proptest::collection::vec((0u64..=u64::MAX, 0u64..=u64::MAX), 0..40),
        estimate in 0u64..=u64::MAX,
        bound in 0u64..=u64::MAX,
    ) {
        let mut l = Learned::default();
        for (e, a) in reports {
            l = l.observe(Micros::new(e), Micros::new(a));
            let r = l.reserve(Micros::new(estimate), Micros::new(bound));
            prop_assert!(r >= Micros::new(estimate));
            prop_assert!(r <= Micros::new(bound).max(Micros::new(estimate)));
        }
    }

    /// The same through the decision: `Allow::reserved` is between the estimate and the
    /// settlement's bound, for any learned figure, and the counters reserve exactly it.
    #[test]
    fn finish_reserves_between_the_estimate_and_the_bound(
        high in 0u64..=u64::MAX,
        price in 1u64..=1_000_000,
        cap in proptest::option::of(1u64..=10_000_000),
    ) {
        let p = policy(price, cap, 1_000_000_000);
        let learned = Learned { high_permille: high, samples: 1 };
        if let Decision::Allow(a) = finish(&p, Some(learned), &Spent::default()) {
            prop_assert!(a.reserved >= a.estimate);
            prop_assert!(a.reserved <= a.settlement.bound);
            prop_assert!(a.reservations.iter().all(|r| r.amount == a.reserved));
        }
    }

    /// A fixed cost (a one-point distribution), any number of requests in flight: once one
    /// report is learned, no budget day is overshot at all (without learning, every request in
    /// the last batch overshoots by `cost − estimate`).
    #[test]
    fn a_fixed_cost_stops_overshooting_after_one_report(
        cost in 1_000u64..=200_000,
        in_flight in 1usize..=4,
    ) {
        let days = simulate(Sim {
            price: 1000,
            cap: Some(200_000),
            limit: 500_000,
            in_flight,
            days: 6,
            learn: true,
            costs: &mut || cost,
        });
        for (i, d) in days.iter().enumerate().skip(1) {
            prop_assert_eq!(d.overshoot, 0, "day {} of {:?}", i, days);
        }
    }

    /// Costs drawn from a fixed distribution (uniform over up to 6 prices), requests one after
    /// another: every budget day ends at most one request's worth over its limit, and by no
    /// more than what that request cost beyond what the learner had reserved for it.
    #[test]
    fn a_distribution_overshoots_a_day_by_at_most_one_request(
        support in proptest::collection::vec(1u64..=200_000, 1..=6),
        seed in any::<u64>(),
    ) {
        let mut rng = SplitMix(seed);
        let pick = support.clone();
        let max = *support.iter().max().unwrap();
        let days = simulate(Sim {
            price: 1000,
            cap: Some(200_000),
            limit: 500_000,
            in_flight: 1,
            days: 20,
            learn: true,
            costs: &mut || pick[(rng.next() % pick.len() as u64) as usize],
        });
        for d in &days {
            prop_assert!(d.overshoot <= max, "{d:?}");
            prop_assert!(d.overshoot <= d.last_excess, "{d:?}");
        }
    }
}

/// Several requests in flight, costs from a fixed distribution: with learning, a day overshoots
/// on average by less than one request's worth, and by far less than without learning. Fixed
/// seeds, so the figures are exact and repeatable.
#[test]
fn with_requests_in_flight_learning_brings_the_overshoot_under_one_request() {
    let support = [30_000u64, 60_000, 120_000];
    for seed in [1u64, 2, 3, 4, 5] {
        let run = |learn: bool| {
            let mut rng = SplitMix(seed);
            let days = simulate(Sim {
                price: 1000,
                cap: Some(200_000),
                limit: 500_000,
                in_flight: 4,
                days: 100,
                learn,
                costs: &mut || support[(rng.next() % 3) as usize],
            });
            // Mean over days 2.. (day 1 is the warm-up), in micro-USD.
            let rest = days.get(1..).unwrap_or_default();
            rest.iter().map(|d| d.overshoot).sum::<u64>() / rest.len() as u64
        };
        let (with, without) = (run(true), run(false));
        eprintln!("seed {seed}: mean overshoot per day {with} with learning, {without} without");
        assert!(with < 120_000, "seed {seed}: {with} with learning");
        assert!(
            with * 2 < without,
            "seed {seed}: {with} with learning, {without} without"
        );
    }
}

// --- a budget day driven through `CompiledPolicy::finish` ---

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-24T15:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap()
}

const KEY: &str = "sk-learn";

fn policy(price: u64, cap: Option<u64>, daily: u64) -> CompiledPolicy {
    let mut rules = json!({ "dailyBudget": daily.to_string() });
    if let Some(c) = cap {
        rules["maxPerRequest"] = json!(c.to_string());
    }
    CompiledPolicy::from_value(&json!({
        "orgId": "o",
        "endpoints": [{ "host": "crm.example.com", "category": "crm",
                        "pricing": { "perRequest": price.to_string() },
                        "costHeader": "x-request-cost" }],
        "projects": [{ "id": "p", "policy": rules }],
        "clients": [{ "id": "c", "projectId": "p",
                      "apiKeySha256": crate::validate::api_key_sha256(KEY)
                          .iter().map(|b| format!("{b:02x}")).collect::<String>() }],
    }))
    .unwrap()
}

#[derive(Default)]
struct Spent(RefCell<HashMap<String, Micros>>);

impl BudgetView for Spent {
    fn used(&self, key: &BudgetKey) -> Micros {
        self.0
            .borrow()
            .get(&key.storage_key())
            .copied()
            .unwrap_or(Micros::ZERO)
    }
}

fn finish(p: &CompiledPolicy, learned: Option<Learned>, spent: &Spent) -> Decision {
    let head = RequestHead {
        api_key: Some(KEY),
        method: "GET",
        authority: "crm.example.com",
        path: "/export",
        requires_approval: false,
    };
    let HeadOutcome::Continue(pending) = p.check_head(&head, now()) else {
        panic!("head refused");
    };
    let key = p.learn_key(&pending).unwrap();
    assert_eq!(key_host(key), "crm.example.com");
    assert_eq!(p.learn_keys().collect::<Vec<_>>(), [&**key]);
    let opts = FinishOptions {
        learned,
        ..FinishOptions::default()
    };
    p.finish(&pending, None, spent, &opts)
}

struct Sim<'a> {
    price: u64,
    cap: Option<u64>,
    limit: u64,
    in_flight: usize,
    days: usize,
    learn: bool,
    costs: &'a mut dyn FnMut() -> u64,
}

#[derive(Debug)]
struct Day {
    /// Settled spend above the limit at the end of the day.
    overshoot: u64,
    /// Of the request(s) in the batch that crossed: Σ (charged − reserved), at least 0 each.
    last_excess: u64,
}

/// Budget days: each day, batches of `in_flight` requests are admitted (reserved one after
/// the other against the same counter), then settled at a cost drawn from `costs` (charged as
/// a cost header, so a report above the bound is charged the bound) and learned, until the
/// budget refuses one. The learned figure carries over from day to day.
fn simulate(sim: Sim<'_>) -> Vec<Day> {
    let p = policy(sim.price, sim.cap, sim.limit);
    let mut learned = Learned::default();
    let mut out = Vec::new();
    for _ in 0..sim.days {
        let spent = Spent::default();
        let mut last_excess = 0;
        'day: loop {
            let mut batch = Vec::new();
            for _ in 0..sim.in_flight {
                match finish(&p, sim.learn.then_some(learned), &spent) {
                    Decision::Allow(a) => {
                        for r in &a.reservations {
                            let mut m = spent.0.borrow_mut();
                            let e = m.entry(r.key.storage_key()).or_insert(Micros::ZERO);
                            *e = e.checked_add(r.amount).unwrap();
                        }
                        batch.push(a);
                    }
                    _ => break,
                }
            }
            let refused = batch.len() < sim.in_flight;
            let mut excess = 0;
            for a in &batch {
                let raw = (sim.costs)().to_string();
                let charge = a.settlement.charge(200, Some(&raw), None);
                for r in &a.reservations {
                    let mut m = spent.0.borrow_mut();
                    let e = m.entry(r.key.storage_key()).or_insert(Micros::ZERO);
                    *e = settle_counter(*e, r.amount, charge.amount);
                }
                excess += charge.amount.get().saturating_sub(a.reserved.get());
                if charge.reported {
                    learned = learned.observe(a.estimate, charge.amount);
                }
            }
            if !batch.is_empty() {
                last_excess = excess;
            }
            if refused {
                break 'day;
            }
        }
        let total = spent.0.borrow().values().copied().max().unwrap_or_default();
        out.push(Day {
            overshoot: total.get().saturating_sub(sim.limit),
            last_excess,
        });
    }
    out
}

/// A tiny deterministic PRNG (splitmix64) for drawing from a distribution in tests.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE5_E9B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[test]
fn learn_false_pins_the_estimate_and_the_validator_names_the_field() {
    let doc = |learn: serde_json::Value| {
        json!({
            "orgId": "o",
            "endpoints": [{ "host": "crm.example.com", "category": "crm",
                            "pricing": { "perRequest": "1000" },
                            "costHeader": "x-request-cost", "learn": learn }],
            "projects": [{ "id": "p", "policy": { "dailyBudget": "500000" } }],
            "clients": [{ "id": "c", "projectId": "p",
                          "apiKeySha256": crate::validate::api_key_sha256(KEY)
                              .iter().map(|b| format!("{b:02x}")).collect::<String>() }],
        })
    };
    let pinned = CompiledPolicy::from_value(&doc(json!(false))).unwrap();
    let head = RequestHead {
        api_key: Some(KEY),
        method: "GET",
        authority: "crm.example.com",
        path: "/export",
        requires_approval: false,
    };
    let HeadOutcome::Continue(pending) = pinned.check_head(&head, now()) else {
        panic!("head refused");
    };
    assert_eq!(pinned.learn_key(&pending), None);
    let opts = FinishOptions {
        learned: Some(Learned {
            high_permille: 120_000,
            samples: 5,
        }),
        ..FinishOptions::default()
    };
    let Decision::Allow(a) = pinned.finish(&pending, None, &Spent::default(), &opts) else {
        panic!("refused");
    };
    assert_eq!(
        (a.estimate, a.reserved),
        (Micros::new(1000), Micros::new(1000))
    );
    assert_eq!(a.learn_key, None);

    let errs = CompiledPolicy::from_value(&doc(json!("no"))).unwrap_err();
    let shown: Vec<String> = errs
        .0
        .iter()
        .map(|e| format!("{}: {}", e.path, e.reason))
        .collect();
    assert_eq!(
        shown,
        ["endpoints[0].learn: expected true or false, found a string"]
    );
}

#[test]
fn a_budget_refusal_names_what_the_learned_figure_asked_for() {
    let p = policy(1000, Some(200_000), 500_000);
    let spent = Spent::default();
    spent.0.borrow_mut().insert(
        format!("project.daily/p/{}", "2026-11-24"),
        Micros::new(400_000),
    );
    let learned = Learned::default().observe(Micros::new(1000), Micros::new(120_000));
    let Decision::Deny(d) = finish(&p, Some(learned), &spent) else {
        panic!("admitted");
    };
    assert_eq!(
        d.scope.map(crate::budget::ScopeKind::label),
        Some("project.daily")
    );
    assert!(
        d.message.ends_with("400000 spent, 120000 requested"),
        "{}",
        d.message
    );
    // Without the learned figure the $0.001 estimate fits.
    assert!(matches!(finish(&p, None, &spent), Decision::Allow(_)));
}

#[test]
fn a_price_change_starts_a_fresh_figure() {
    use crate::pricing::EndpointPricing;
    let k = |p: u64| {
        key(
            "api.salesforce.com",
            &EndpointPricing::PerRequest(Micros::new(p)),
        )
    };
    assert_eq!(k(1000), k(1000));
    assert_ne!(k(1000), k(120_000), "the fixed catalogue learns afresh");
    assert!(k(1000).starts_with("api.salesforce.com@"));
    assert_eq!(k(1000).len(), "api.salesforce.com@".len() + 8);
    assert_eq!(key_host(&k(1000)), "api.salesforce.com");
    assert_eq!(key_host("plain"), "plain");
    // Through the policy: the compiled key is the same function of host and prices.
    let a = policy(1000, None, 1_000_000);
    let b = policy(120_000, None, 1_000_000);
    let ka: Vec<String> = a.learn_keys().map(String::from).collect();
    let kb: Vec<String> = b.learn_keys().map(String::from).collect();
    assert_eq!(
        ka,
        [key(
            "crm.example.com",
            &EndpointPricing::PerRequest(Micros::new(1000))
        )]
    );
    assert_ne!(ka, kb);
}

#[test]
fn the_documented_key_is_the_key() {
    // docs/estimates.md and docs/sync-protocol.md show the seed's Salesforce key.
    let k = key(
        "api.salesforce.com",
        &crate::pricing::EndpointPricing::PerRequest(Micros::new(1000)),
    );
    assert_eq!(k, "api.salesforce.com@28774551");
}
