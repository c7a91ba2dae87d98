//! Keeps the load harness from rotting: one short round on the no-filter proxy (needs only
//! Envoy, `make setup`), asserting it produced rows with traffic. No timing asserts.

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
        ..Options::default()
    };
    let rep = load::run(&opts).unwrap();
    let rows = report::rows(&rep);
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert!(row.saturation_rps > 0.0, "{row:?}");
    assert!(row.rates[0].achieved_rps > 0.0, "{row:?}");
    assert!(row.ok_share > 0.99, "the upstream answers 200: {row:?}");
    let md = report::markdown(&rep, &report::meta("test".into()));
    assert!(md.contains("| no-filter | 1 |"), "{md}");
    assert!(report::svg(&rep, &report::meta("test".into())).starts_with("<svg"));
}
