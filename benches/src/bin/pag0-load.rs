//! `pag0-load`: the load benchmark against baseline Envoy (see `pag0_benches::load`).
//! `make bench` runs it with the defaults; `--help` lists the flags.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use pag0_benches::load::{self, report, Options, Variant};

const HELP: &str =
    "pag0-load: Pag0 vs baseline Envoy under load (writes load.md, load.json, load.svg)

  --variants LIST     comma-separated: no-filter,passthrough-wasm,spec-minimum-probe,
                      hostcalls-probe,pag0,ext-authz-sidecar (default: all), and
                      pag0-before: the filter
                      built from another commit (needs --pag0-before-wasm)
  --pag0-wasm PATH    the .wasm of the pag0 variant (default: the workspace's wasm-release
                      build, which a concurrent build may replace mid-run)
  --pag0-before-wasm PATH  the .wasm of the pag0-before variant, e.g. the previous commit's
                      build, so two filter builds are compared in one run
  --workers LIST      Envoy worker counts (default: 1,2)
  --rounds N          rounds, variants alternating within each (default: 3)
  --duration SECS     length of each run (default: 5)
  --rates LIST        fixed rates, % of the no-filter proxy's saturation rate (default: 50,80)
  --sat-connections N closed-loop connections at saturation (default: 16)
  --rate-connections N open-loop connections at fixed rates (default: 64)
  --out DIR           output directory (default: benches/results)
  --probe PATTERN     host calls per request of hostcalls-probe (default: Pag0's pattern,
                      key=N list: headers,map,remove,time,shared_get,shared_set,metric,
                      resp_headers,resp_map,resp_remove,resp_set)
  --propagation N     policy PUTs timed per worker count in managed mode, API PUT to
                      enforced on every worker (default: 10; 0 skips it)
  --sync-interval-ms N  the managed filter's syncIntervalMs there (default: 1000)
  --quiet             no per-run lines

Needs: Envoy (make setup), the filter (make wasm), the pass-through filter
(cargo build -p pag0-passthrough --profile wasm-release --target wasm32-wasip1) and
the release sidecar (cargo build --release -p pag0-sidecar) for ext-authz-sidecar and the
propagation measurement.";

fn list<T>(v: &str, f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>> {
    v.split(',')
        .map(|s| f(s.trim()).ok_or_else(|| anyhow!("bad list item {s:?}")))
        .collect()
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        out_dir: Some(pag0_envoy::harness::repo_root().join("benches/results")),
        ..Options::default()
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--variants" => o.variants = list(&value()?, Variant::parse)?,
            "--workers" => o.workers = list(&value()?, |s| s.parse().ok().filter(|w| *w > 0))?,
            "--rounds" => o.rounds = value()?.parse()?,
            "--duration" => o.duration = Duration::from_secs_f64(value()?.parse()?),
            "--rates" => {
                o.rate_fractions = list(&value()?, |s| s.parse::<f64>().ok().map(|p| p / 100.0))?
            }
            "--sat-connections" => o.saturation_connections = value()?.parse()?,
            "--rate-connections" => o.rate_connections = value()?.parse()?,
            "--out" => o.out_dir = Some(PathBuf::from(value()?)),
            "--quiet" => o.verbose = false,
            "--propagation" => o.propagation_trials = value()?.parse()?,
            "--sync-interval-ms" => o.sync_interval_ms = value()?.parse()?,
            "--probe" => o.hostcall_pattern = value()?,
            "--pag0-wasm" => o.pag0_wasm = Some(PathBuf::from(value()?)),
            "--pag0-before-wasm" => o.pag0_before_wasm = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => bail!("unknown flag {other:?}\n\n{HELP}"),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse(&args).and_then(|opts| {
        // Commit and date of what is measured: taken before the run, which takes minutes.
        let command = format!("make bench  # = pag0-load {}", args.join(" "))
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
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pag0-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
