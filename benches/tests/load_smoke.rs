//! Keeps the load harness from rotting: one short round on the no-filter proxy (needs only
//! Envoy, `make setup`), asserting it produced rows with traffic; and two timed policy PUTs
//! on a managed Pag0 (needs the filter, `make wasm`, and the debug sidecar, which
//! `cargo test --workspace` builds). No timing asserts.

use std::time::Duration;

use pag0_benches::load::{self, report, Options, Variant};

#[test]
fn one_second_of_load_on_the_plain_proxy_produces_a_row() {
    let opts = Options {
        variants: vec![Variant::Baseline],
        workers: vec![1],
        rounds: 1,
        duration: Duration::from_secs(1),
        rate_fractions: vec![0.5],
        saturation_connections: 4,
        rate_connections: 8,
        out_dir: None,
        verbose: false,
        propagation_trials: 0,
        ..Options::default()
    };
    let rep = load::run(&opts).unwrap();
    let rows = report::rows(&rep);
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert!(row.saturation_rps > 0.0, "{row:?}");
    assert!(row.rates[0].achieved_rps > 0.0, "{row:?}");
    assert!(row.ok_share > 0.99, "the upstream answers 200: {row:?}");
    // A second of saturation is many 10 ms ticks of the proxy's own user time.
    assert!(row.saturation_user_us > 0.0, "{row:?}");
    assert!(row.saturation_system_us >= 0.0, "{row:?}");
    assert!(
        row.saturation_user_us + row.saturation_system_us <= row.saturation_cpu_us * 1.5,
        "the split is of the proxy's own CPU: {row:?}"
    );
    let md = report::markdown(&rep, &report::meta("test".into()));
    assert!(md.contains("| no-filter | 1 |"), "{md}");
    assert!(md.contains("## User space and kernel"), "{md}");
    assert!(report::svg(&rep, &report::meta("test".into())).starts_with("<svg"));
}

#[test]
fn policy_puts_are_timed_until_every_worker_enforces_them() {
    let opts = Options {
        variants: vec![Variant::Baseline],
        workers: vec![2],
        rounds: 1,
        duration: Duration::from_millis(500),
        rate_fractions: vec![0.5],
        saturation_connections: 2,
        rate_connections: 2,
        out_dir: None,
        verbose: false,
        propagation_trials: 2,
        sync_interval_ms: 300,
        sidecar_bin: Some(pag0_envoy::harness::sidecar_binary()),
        ..Options::default()
    };
    let rep = load::run(&opts).unwrap();
    let t = &rep.propagation;
    assert_eq!(t.len(), 2, "{t:?}");
    // The first PUT blocks the endpoint, the second lifts the block: both were seen, in order.
    assert!(t[0].blocking && !t[1].blocking, "{t:?}");
    for trial in t {
        assert_eq!(trial.workers, 2);
        assert!(trial.every_worker >= trial.first, "{trial:?}");
        assert!(trial.probes >= load::propagation::STREAK, "{trial:?}");
    }
    let meta = report::meta("test".into());
    let md = report::markdown(&rep, &meta);
    assert!(md.contains("## Policy propagation"), "{md}");
    assert!(md.contains("| 2 | 2 |"), "{md}");
    let json = report::json(&rep, &meta);
    assert_eq!(
        json["propagation"].as_array().map(Vec::len),
        Some(2),
        "{json}"
    );
}
