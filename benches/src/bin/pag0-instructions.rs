//! `pag0-instructions`: exact instructions per request of the whole Envoy process, per proxy
//! variant, under callgrind (see `pag0_benches::load::instructions`). For machines where CPU
//! time is too noisy to compare filter builds: `make bench-instructions`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use pag0_benches::load::{instructions, report, Variant, HOSTCALL_PATTERN};

const HELP: &str = "pag0-instructions: instructions per request of Envoy under callgrind

  --variants LIST          no-filter,passthrough-wasm,spec-minimum-probe,hostcalls-probe,
                           pag0,pag0-before (default: the first five)
  --pag0-wasm PATH         the pag0 variant's .wasm (default: the wasm-release build)
  --pag0-before-wasm PATH  the pag0-before variant's .wasm
  --probe PATTERN          host calls of hostcalls-probe (default: Pag0's pattern)
  --short SECS, --long SECS  the two windows (default: 1 and 4)
  --repetitions N          (default: 2)
  --out FILE               also write the markdown table there

Needs valgrind (apt-get install valgrind), Envoy (make setup), the filter (make wasm) and the
pass-through filter (cargo build -p pag0-passthrough --profile wasm-release --target wasm32-wasip1).
One Envoy at a time runs under callgrind; each takes about a minute to start.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pag0-instructions: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let default_wasm = pag0_envoy::harness::wasm_path();
    let mut o = instructions::Options {
        variants: vec![
            Variant::Baseline,
            Variant::Passthrough,
            Variant::SpecMinimum,
            Variant::HostCalls,
            Variant::Pag0,
        ],
        passthrough_wasm: default_wasm.with_file_name("pag0_passthrough.wasm"),
        pag0_wasm: default_wasm,
        pag0_before_wasm: None,
        hostcall_pattern: HOSTCALL_PATTERN.to_owned(),
        short: Duration::from_secs(1),
        long: Duration::from_secs(4),
        repetitions: 2,
        verbose: true,
    };
    let mut out_file = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--variants" => {
                o.variants = value()?
                    .split(',')
                    .map(|s| Variant::parse(s.trim()).ok_or_else(|| anyhow!("bad variant {s:?}")))
                    .collect::<Result<_>>()?
            }
            "--pag0-wasm" => o.pag0_wasm = PathBuf::from(value()?),
            "--pag0-before-wasm" => o.pag0_before_wasm = Some(PathBuf::from(value()?)),
            "--probe" => o.hostcall_pattern = value()?,
            "--short" => o.short = Duration::from_secs_f64(value()?.parse()?),
            "--long" => o.long = Duration::from_secs_f64(value()?.parse()?),
            "--repetitions" => o.repetitions = value()?.parse()?,
            "--out" => out_file = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(());
            }
            other => bail!("unknown flag {other:?}\n\n{HELP}"),
        }
    }
    if o.long <= o.short || o.repetitions == 0 {
        bail!("need --long > --short and at least one repetition");
    }
    let command = format!("pag0-instructions {}", args.join(" "))
        .trim()
        .to_owned();
    let meta = report::meta(command.clone());
    let counts = instructions::run(&o)?;
    let md = instructions::markdown(&counts, &command, &meta.commit);
    print!("{md}");
    if let Some(f) = out_file {
        std::fs::write(&f, &md)?;
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}
