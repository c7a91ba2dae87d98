//! `pag0-load`: the load benchmark against baseline Envoy (see `pag0_benches::load`).
//! `make bench` runs it with the defaults; `--help` lists the flags.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use pag0_benches::load::{self, flags, report, Options, Variant};

/// Pag0 vs baseline Envoy under load (writes load.md, load.json, load.svg).
///
/// Needs: Envoy (make setup), the filter (make wasm), the pass-through filter (cargo build -p
/// pag0-passthrough --profile wasm-release --target wasm32-wasip1) and the release sidecar
/// (cargo build --release -p pag0-sidecar) for ext-authz-sidecar and the propagation
/// measurement.
#[derive(Debug, Parser)]
#[command(name = "pag0-load")]
struct Args {
    /// Comma-separated: no-filter, passthrough-wasm, spec-minimum-probe, hostcalls-probe,
    /// pag0, ext-authz-sidecar (default: all), and pag0-before: the filter built from another
    /// commit (needs --pag0-before-wasm).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = flags::variant)]
    variants: Option<Vec<Variant>>,
    /// The .wasm of the pag0 variant (default: the workspace's wasm-release build, which a
    /// concurrent build may replace mid-run).
    #[arg(long, value_name = "PATH")]
    pag0_wasm: Option<PathBuf>,
    /// The .wasm of the pag0-before variant, e.g. the previous commit's build, so two filter
    /// builds are compared in one run.
    #[arg(long, value_name = "PATH")]
    pag0_before_wasm: Option<PathBuf>,
    /// Envoy worker counts (default: 1,2).
    #[arg(long, value_name = "LIST", value_delimiter = ',',
          value_parser = clap::value_parser!(u32).range(1..))]
    workers: Option<Vec<u32>>,
    /// Rounds, variants alternating within each (default: 3).
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Length of each run, seconds (default: 5).
    #[arg(long, value_name = "SECS", value_parser = flags::seconds)]
    duration: Option<Duration>,
    /// Fixed rates, % of the no-filter proxy's saturation rate (default: 50,80).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    rates: Option<Vec<f64>>,
    /// Closed-loop connections at saturation (default: 16).
    #[arg(long, value_name = "N")]
    sat_connections: Option<usize>,
    /// Open-loop connections at fixed rates (default: 64).
    #[arg(long, value_name = "N")]
    rate_connections: Option<usize>,
    /// Output directory (default: benches/results).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Host calls per request of hostcalls-probe (default: Pag0's pattern; key=N list:
    /// headers, map, remove, time, shared_get, shared_set, metric, resp_headers, resp_map,
    /// resp_remove, resp_set).
    #[arg(long, value_name = "PATTERN")]
    probe: Option<String>,
    /// Policy PUTs timed per worker count in managed mode, API PUT to enforced on every worker
    /// (default: 10; 0 skips it).
    #[arg(long, value_name = "N")]
    propagation: Option<usize>,
    /// The managed filter's syncIntervalMs there (default: 1000).
    #[arg(long, value_name = "N")]
    sync_interval_ms: Option<u64>,
    /// No per-run lines.
    #[arg(long)]
    quiet: bool,
}

/// The flags over [`Options::default`]: a flag left out keeps its default.
fn options(a: Args) -> Options {
    let d = Options::default();
    Options {
        variants: a.variants.unwrap_or(d.variants),
        workers: a.workers.unwrap_or(d.workers),
        rounds: a.rounds.unwrap_or(d.rounds),
        duration: a.duration.unwrap_or(d.duration),
        rate_fractions: a
            .rates
            .map(|r| r.into_iter().map(|p| p / 100.0).collect())
            .unwrap_or(d.rate_fractions),
        saturation_connections: a.sat_connections.unwrap_or(d.saturation_connections),
        rate_connections: a.rate_connections.unwrap_or(d.rate_connections),
        out_dir: Some(
            a.out
                .unwrap_or_else(|| pag0_envoy::harness::repo_root().join("benches/results")),
        ),
        verbose: !a.quiet,
        hostcall_pattern: a.probe.unwrap_or(d.hostcall_pattern),
        pag0_before_wasm: a.pag0_before_wasm,
        pag0_wasm: a.pag0_wasm,
        propagation_trials: a.propagation.unwrap_or(d.propagation_trials),
        sync_interval_ms: a.sync_interval_ms.unwrap_or(d.sync_interval_ms),
        sidecar_bin: d.sidecar_bin,
    }
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let opts = options(Args::parse());
    let result = (|| -> Result<()> {
        // Commit and date of what is measured: taken before the run, which takes minutes.
        let command = format!("make bench  # = pag0-load {}", raw.join(" "))
            .trim()
            .to_owned();
        let meta = report::meta(command);
        let report = load::run(&opts)?;
        print!("{}", report::markdown(&report, &meta));
        if let Some(dir) = &opts.out_dir {
            report::write(&report, &meta, dir)?;
            eprintln!("wrote {}/load.{{md,json,svg}}", dir.display());
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pag0-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_defaults_and_the_rest_stay() {
        let o = options(Args::parse_from([
            "pag0-load",
            "--variants",
            "pag0,no-filter",
            "--workers",
            "4",
            "--rates",
            "25,75",
            "--duration",
            "0.5",
            "--quiet",
        ]));
        assert_eq!(o.variants, vec![Variant::Pag0, Variant::Baseline]);
        assert_eq!(o.workers, vec![4]);
        assert_eq!(o.rate_fractions, vec![0.25, 0.75]);
        assert_eq!(o.duration, Duration::from_millis(500));
        assert!(!o.verbose);
        let d = Options::default();
        assert_eq!(o.rounds, d.rounds);
        assert_eq!(o.propagation_trials, d.propagation_trials);
        assert_eq!(o.hostcall_pattern, d.hostcall_pattern);
    }

    #[test]
    fn bad_values_are_refused_with_the_flag() {
        for bad in [
            &["pag0-load", "--variants", "pag1"][..],
            &["pag0-load", "--workers", "0"],
            &["pag0-load", "--duration", "soon"],
            &["pag0-load", "--rounds"],
            &["pag0-load", "--frobnicate"],
        ] {
            let err = Args::try_parse_from(bad).unwrap_err().to_string();
            assert!(err.contains(bad[1]), "{bad:?}: {err}");
        }
    }
}
