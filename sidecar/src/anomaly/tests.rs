//! The detector against synthetic ledgers: 30 days of hourly traffic with daily and weekly
//! seasonality and noise (seeded), with and without injected anomalies.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Poisson};

use super::*;

const DAYS: usize = 30;
/// Detection is scored from day 7 on (the first week only teaches the baseline).
const WARMUP_DAYS: usize = 7;
/// Monday 2026-11-02 00:00 UTC.
const T0: i64 = 1_793_577_600_000;
const NEW_HOST: &str = "api.new-llm.example";

struct Client {
    name: String,
    /// Peak requests per hour.
    rate: f64,
    start_hour: usize,
    end_hour: usize,
    /// Per-request cost: median micro-USD.
    cost_median: f64,
    hosts: [&'static str; 2],
}

/// One (project, client, host, hour) cell being built: requests and their amounts.
type Cells = BTreeMap<(String, String, String, i64), Vec<u64>>;

fn clients(rng: &mut StdRng, project: &str) -> Vec<Client> {
    let hosts = [
        ["api.openai.com", "api.deepl.com"],
        ["api.anthropic.com", "api.openai.com"],
        ["api.mistral.ai", "api.deepl.com"],
    ];
    (0..3)
        .map(|c| Client {
            name: format!("{project}-agent-{c}"),
            rate: rng.random_range(10.0..40.0),
            start_hour: rng.random_range(7..10),
            end_hour: rng.random_range(17..21),
            cost_median: rng.random_range(5_000.0..50_000.0),
            hosts: hosts[c],
        })
        .collect()
}

/// Expected requests of a client in hour `h` (of the whole history).
fn expected(c: &Client, h: usize) -> f64 {
    let hod = h % 24;
    let dow = (h / 24) % 7; // T0 is a Monday: 5, 6 are the weekend
    let weekly = if dow >= 5 { 0.3 } else { 1.0 };
    if hod < c.start_hour || hod >= c.end_hour {
        return 0.0;
    }
    // A bump over the working day: low at its edges, peak mid-day.
    let span = (c.end_hour - c.start_hour) as f64;
    let x = (hod - c.start_hour) as f64 + 0.5;
    let daily = 0.4 + 0.6 * (std::f64::consts::PI * x / span).sin();
    c.rate * weekly * daily
}

fn push_requests(rng: &mut StdRng, cells: &mut Cells, project: &str, c: &Client, h: usize, n: u64) {
    let cost = LogNormal::new(c.cost_median.ln(), 0.6).unwrap();
    for _ in 0..n {
        let host = if rng.random_bool(0.8) {
            c.hosts[0]
        } else {
            c.hosts[1]
        };
        let amount = cost.sample(rng).round() as u64;
        cells
            .entry((project.into(), c.name.clone(), host.into(), hour(h)))
            .or_default()
            .push(amount);
    }
}

fn hour(h: usize) -> i64 {
    T0 + h as i64 * HOUR_MS
}

#[derive(Debug, Clone)]
struct Injected {
    what: &'static str,
    project: String,
    client: String,
    hour: usize,
}

impl Injected {
    fn matches(&self, a: &Anomaly) -> bool {
        let kinds: &[AnomalyKind] = match self.what {
            "10x hour" => &[AnomalyKind::SpendSpike, AnomalyKind::RequestSpike],
            "$5 request" => &[AnomalyKind::CostlyRequest],
            "new endpoint" => &[AnomalyKind::NewEndpoint],
            _ => &[AnomalyKind::OffHoursBurst],
        };
        let client_ok = match self.what {
            // A 10× hour of one client is a spike of the client, and usually of the project.
            "10x hour" => a.client_id.as_deref().is_none_or(|c| c == self.client),
            _ => a.client_id.as_deref() == Some(self.client.as_str()),
        };
        kinds.contains(&a.kind)
            && a.project_id == self.project
            && client_ok
            && a.window_from_ms == hour(self.hour)
            && (self.what != "new endpoint" || a.subject.as_deref() == Some(NEW_HOST))
    }
}

/// A working-day hour of day `day` (a weekday at 11:00–14:00).
fn weekday_hour(rng: &mut StdRng, day: usize) -> usize {
    let mut d = day;
    while d % 7 >= 5 {
        d += 1;
    }
    d * 24 + rng.random_range(11..14)
}

/// 30 days of `projects` projects, three clients each; with `inject`, each project gets the
/// four anomalies (on different days of the scored weeks).
fn history(seed: u64, projects: usize, inject: bool) -> (Vec<HourlyUsage>, Vec<Injected>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cells = Cells::new();
    let mut injected = Vec::new();
    for p in 0..projects {
        let project = format!("team-{p}");
        let cs = clients(&mut rng, &project);
        for c in &cs {
            for h in 0..DAYS * 24 {
                let mean = expected(c, h);
                let mut n = if mean > 0.0 {
                    // Hour-to-hour noise on the rate, then Poisson counts.
                    let wobble = LogNormal::new(0.0, 0.15).unwrap().sample(&mut rng);
                    Poisson::new(mean * wobble).unwrap().sample(&mut rng) as u64
                } else {
                    0
                };
                // Now and then a stray request or two at night (a cron job, a late user).
                if mean == 0.0 && rng.random_bool(0.01) {
                    n = rng.random_range(1..3);
                }
                push_requests(&mut rng, &mut cells, &project, c, h, n);
            }
        }
        if !inject {
            continue;
        }
        // 10× hour: client 0's requests in one busy hour, ten times over.
        let day = rng.random_range(9..13);
        let h = weekday_hour(&mut rng, day);
        let extra = (9.0 * expected(&cs[0], h)).round() as u64;
        push_requests(&mut rng, &mut cells, &project, &cs[0], h, extra);
        injected.push(Injected {
            what: "10x hour",
            project: project.clone(),
            client: cs[0].name.clone(),
            hour: h,
        });
        // One $5 request by client 1 in a busy hour.
        let day = rng.random_range(14..18);
        let h = weekday_hour(&mut rng, day);
        cells
            .entry((
                project.clone(),
                cs[1].name.clone(),
                cs[1].hosts[0].into(),
                hour(h),
            ))
            .or_default()
            .push(5_000_000);
        injected.push(Injected {
            what: "$5 request",
            project: project.clone(),
            client: cs[1].name.clone(),
            hour: h,
        });
        // Client 2 calls a host it never used: three requests.
        let day = rng.random_range(19..23);
        let h = weekday_hour(&mut rng, day);
        cells
            .entry((
                project.clone(),
                cs[2].name.clone(),
                NEW_HOST.into(),
                hour(h),
            ))
            .or_default()
            .extend([30_000, 40_000, 25_000]);
        injected.push(Injected {
            what: "new endpoint",
            project: project.clone(),
            client: cs[2].name.clone(),
            hour: h,
        });
        // A 3 a.m. burst of client 0: 60 requests.
        let h = rng.random_range(23..29) * 24 + 3;
        push_requests(&mut rng, &mut cells, &project, &cs[0], h, 60);
        injected.push(Injected {
            what: "3am burst",
            project: project.clone(),
            client: cs[0].name.clone(),
            hour: h,
        });
    }
    let rows = cells
        .into_iter()
        .map(|((project, client, host, hour_ms), amounts)| HourlyUsage {
            project_id: Some(project),
            client_id: Some(client),
            host: Some(host),
            hour_ms,
            requests: amounts.len() as u64,
            cost: amounts.iter().sum(),
            max_amount: amounts.iter().copied().max().unwrap_or(0),
        })
        .collect();
    (rows, injected)
}

fn run(rows: &[HourlyUsage]) -> Vec<Anomaly> {
    detect(
        &Input {
            rows,
            from_ms: T0,
            to_ms: hour(DAYS * 24),
            report_from_ms: hour(WARMUP_DAYS * 24),
            now_ms: hour(DAYS * 24),
        },
        &Params::default(),
    )
}

const SEEDS: [u64; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
const PROJECTS: usize = 3;
#[allow(clippy::cast_precision_loss)]
const WEEKS: f64 = (DAYS - WARMUP_DAYS) as f64 / 7.0;

#[test]
fn every_injected_anomaly_is_found() {
    let mut found = 0;
    let mut total = 0;
    let mut extra = 0;
    for seed in SEEDS {
        let (rows, injected) = history(seed, PROJECTS, true);
        let anomalies = run(&rows);
        for inj in &injected {
            total += 1;
            let hit = anomalies
                .iter()
                .filter(|a| inj.matches(a))
                .max_by(|a, b| a.score.total_cmp(&b.score));
            match hit {
                Some(a) => {
                    found += 1;
                    println!(
                        "seed {seed} {:<12} found (score {:.1}): {}",
                        inj.what, a.score, a.explanation
                    );
                }
                None => println!("seed {seed} {:<12} MISSED: {inj:?}", inj.what),
            }
        }
        extra += anomalies
            .iter()
            .filter(|a| !injected.iter().any(|i| i.matches(a)))
            .filter(|a| {
                // The $5 request also lifts its hour's spend: a true finding, not a false one.
                !injected
                    .iter()
                    .any(|i| a.project_id == i.project && a.window_from_ms == hour(i.hour))
            })
            .inspect(|a| println!("seed {seed} other: {}", a.explanation))
            .count();
    }
    println!(
        "injected: found {found} of {total} ({} seeds × {PROJECTS} projects × 4); other findings {extra} ({:.2} per project-week)",
        SEEDS.len(),
        extra as f64 / (SEEDS.len() * PROJECTS) as f64 / WEEKS
    );
    assert_eq!(found, total, "every injected anomaly is found");
    assert!(total == SEEDS.len() * PROJECTS * 4);
}

#[test]
fn a_clean_history_raises_at_most_one_false_positive_per_project_week() {
    let mut worst = 0.0f64;
    let mut all = 0usize;
    for seed in SEEDS {
        let (rows, injected) = history(seed, PROJECTS, false);
        assert!(injected.is_empty());
        assert!(rows.len() > 1_000, "a busy history: {} rows", rows.len());
        let anomalies = run(&rows);
        for a in &anomalies {
            println!("seed {seed} false positive: {}", a.explanation);
        }
        for p in 0..PROJECTS {
            let name = format!("team-{p}");
            let n = anomalies.iter().filter(|a| a.project_id == name).count();
            worst = worst.max(n as f64 / WEEKS);
        }
        all += anomalies.len();
    }
    let rate = all as f64 / (SEEDS.len() * PROJECTS) as f64 / WEEKS;
    println!(
        "clean: {all} false positives over {} project-weeks ({rate:.2} per project-week; worst project {worst:.2})",
        (SEEDS.len() * PROJECTS) as f64 * WEEKS
    );
    assert!(
        worst <= 1.0,
        "worst project: {worst:.2} false positives per week"
    );
}

fn row(client: &str, host: &str, h: usize, requests: u64, cost: u64, max: u64) -> HourlyUsage {
    HourlyUsage {
        project_id: Some("sales-ai".into()),
        client_id: Some(client.into()),
        host: Some(host.into()),
        hour_ms: hour(h),
        requests,
        cost,
        max_amount: max,
    }
}

#[test]
fn an_explanation_carries_the_numbers() {
    // Two weeks and a day of a flat $0.34/h at 03:00 on Tuesdays… and every hour, then $4.10.
    let mut rows: Vec<HourlyUsage> = (0..15 * 24)
        .map(|h| {
            row(
                "sales-agent",
                "api.openai.com",
                h,
                10,
                340_000 + (h as u64 % 3) * 1_000,
                40_000,
            )
        })
        .collect();
    let spike = 14 * 24 + 24 + 3; // Tuesday of the third week, 03:00
    rows.push(row(
        "sales-agent",
        "api.openai.com",
        spike,
        10,
        4_100_000,
        500_000,
    ));
    let found = detect(
        &Input {
            rows: &rows,
            from_ms: T0,
            to_ms: hour(16 * 24),
            report_from_ms: hour(15 * 24),
            now_ms: hour(16 * 24),
        },
        &Params::default(),
    );
    let project = found
        .iter()
        .find(|a| a.kind == AnomalyKind::SpendSpike && a.client_id.is_none())
        .expect("the project's spend spike");
    assert_eq!(project.observed, 4_100_000);
    assert!(
        (340_000..=342_000).contains(&project.baseline),
        "{project:?}"
    );
    assert_eq!(project.window_from_ms, hour(spike));
    assert_eq!(project.window_to_ms, hour(spike) + HOUR_MS);
    assert!(
        project
            .explanation
            .starts_with("sales-ai spent $4.10 in Tue 2026-11-17 03:00–04:00 UTC"),
        "{}",
        project.explanation
    );
    assert!(
        project
            .explanation
            .contains("× its usual $0.34 for Tuesday 03:00"),
        "{}",
        project.explanation
    );
    assert!(project.score > Params::default().threshold);
    // Nothing before report_from is reported.
    assert!(found.iter().all(|a| a.window_from_ms >= hour(15 * 24)));
}

#[test]
fn money_is_printed_from_integers() {
    assert_eq!(usd(4_100_000), "$4.10");
    assert_eq!(usd(4_105_000), "$4.11");
    assert_eq!(usd(339_999), "$0.34");
    assert_eq!(usd(4_200), "$0.0042");
    assert_eq!(usd(0), "$0.0000");
    assert_eq!(usd(9_999), "$0.0100");
    assert_eq!(usd(u64::MAX), "$18446744073709.55");
    assert_eq!(median(vec![3, 1, 2]), Some(2));
    assert_eq!(median(vec![u64::MAX, u64::MAX]), Some(u64::MAX));
    assert_eq!(median(vec![]), None);
}

#[test]
fn empty_and_out_of_range_input_finds_nothing() {
    let rows = vec![row("a", "h", 0, 5, 5, 1)];
    let none = |from_ms, to_ms| {
        detect(
            &Input {
                rows: &rows,
                from_ms,
                to_ms,
                report_from_ms: from_ms,
                now_ms: to_ms,
            },
            &Params::default(),
        )
    };
    assert!(none(T0, T0).is_empty());
    assert!(none(T0, T0 - HOUR_MS).is_empty());
    assert!(none(T0 + HOUR_MS, T0 + 48 * HOUR_MS).is_empty());
}

#[test]
fn under_two_weeks_the_baseline_is_the_hour_of_day() {
    // Ten days of a daily shape ($0.20 at night, $2 in the day), then a $9 afternoon hour.
    let mut rows: Vec<HourlyUsage> = (0..10 * 24)
        .map(|h| {
            let day = (8..18).contains(&(h % 24));
            let cost = if day { 2_000_000 } else { 200_000 } + (h as u64 % 5) * 10_000;
            row("sales-agent", "api.openai.com", h, 20, cost, 150_000)
        })
        .collect();
    let spike = 9 * 24 + 15;
    if let Some(r) = rows.iter_mut().find(|r| r.hour_ms == hour(spike)) {
        r.cost = 9_000_000;
    }
    let found = detect(
        &Input {
            rows: &rows,
            from_ms: T0,
            to_ms: hour(10 * 24),
            report_from_ms: hour(7 * 24),
            now_ms: hour(10 * 24),
        },
        &Params::default(),
    );
    let spikes: Vec<&Anomaly> = found
        .iter()
        .filter(|a| a.kind == AnomalyKind::SpendSpike)
        .collect();
    // The project and its one client, that hour only: the daily shape itself is not a spike.
    assert_eq!(spikes.len(), 2, "{found:#?}");
    for a in spikes {
        assert_eq!(a.window_from_ms, hour(spike));
        assert!((2_000_000..=2_040_000).contains(&a.baseline), "{a:?}");
        assert!(a.explanation.ends_with("for 15:00"), "{}", a.explanation);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Any rows — outside the window, huge amounts, no project — and any history length: no
    /// panic, and every anomaly lies in the reported window with its window one hour long.
    #[test]
    fn arbitrary_rows_never_panic(
        rows in proptest::collection::vec(
            (-48i64..24 * 20, 0u64..200, proptest::num::u64::ANY, 0usize..3, 0usize..4),
            0..300,
        ),
        days in 1i64..20,
        min_history_days in 0usize..3,
    ) {
        let rows: Vec<HourlyUsage> = rows
            .into_iter()
            .map(|(h, requests, cost, c, host)| HourlyUsage {
                project_id: (c > 0).then(|| "p".to_string()),
                client_id: Some(format!("c{c}")),
                host: Some(format!("h{host}")),
                hour_ms: T0 + h * HOUR_MS,
                requests,
                cost,
                max_amount: cost / 2,
            })
            .collect();
        let to_ms = T0 + days * 24 * HOUR_MS;
        let report_from_ms = to_ms - 24 * HOUR_MS;
        let found = detect(
            &Input { rows: &rows, from_ms: T0, to_ms, report_from_ms, now_ms: to_ms },
            &Params { min_history_days, ..Params::default() },
        );
        for a in found {
            proptest::prop_assert!(a.window_from_ms >= report_from_ms.max(T0) && a.window_to_ms <= to_ms, "{a:?}");
            proptest::prop_assert_eq!(a.window_to_ms - a.window_from_ms, HOUR_MS);
            proptest::prop_assert!(a.score.is_finite());
        }
    }
}
