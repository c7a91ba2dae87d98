//! `pag0-instructions`: exact instructions per request of the whole Envoy process, per proxy
//! variant, under callgrind (see `pag0_benches::load::instructions`). For machines where CPU
//! time is too noisy to compare filter builds: `make bench-instructions`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use pag0_benches::load::{flags, instructions, report, Variant, HOSTCALL_PATTERN};

/// Instructions per request of Envoy under callgrind.
///
/// Needs valgrind (apt-get install valgrind), Envoy (make setup), the filter (make wasm) and
/// the pass-through filter (cargo build -p pag0-passthrough --profile wasm-release --target
/// wasm32-wasip1). One Envoy at a time runs under callgrind; each takes about a minute to
/// start.
#[derive(Debug, Parser)]
#[command(name = "pag0-instructions")]
struct Args {
    /// no-filter, passthrough-wasm, spec-minimum-probe, hostcalls-probe, pag0, pag0-before
    /// (default: the first five).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = flags::variant)]
    variants: Option<Vec<Variant>>,
    /// The pag0 variant's .wasm (default: the wasm-release build).
    #[arg(long, value_name = "PATH")]
    pag0_wasm: Option<PathBuf>,
    /// The pag0-before variant's .wasm.
    #[arg(long, value_name = "PATH")]
    pag0_before_wasm: Option<PathBuf>,
    /// Host calls of hostcalls-probe (default: Pag0's pattern).
    #[arg(long, value_name = "PATTERN", default_value = HOSTCALL_PATTERN)]
    probe: String,
    /// The short window, seconds.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = flags::seconds)]
    short: Duration,
    /// The long window, seconds.
    #[arg(long, value_name = "SECS", default_value = "4", value_parser = flags::seconds)]
    long: Duration,
    /// Repetitions of each window.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..))]
    repetitions: u32,
    /// Also write the markdown table there.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn options(a: Args) -> Result<(instructions::Options, Option<PathBuf>)> {
    if a.long <= a.short {
        bail!("need --long > --short");
    }
    let default_wasm = pag0_envoy::harness::wasm_path();
    let o = instructions::Options {
        variants: a.variants.unwrap_or_else(|| {
            vec![
                Variant::Baseline,
                Variant::Passthrough,
                Variant::SpecMinimum,
                Variant::HostCalls,
                Variant::Pag0,
            ]
        }),
        passthrough_wasm: default_wasm.with_file_name("pag0_passthrough.wasm"),
        pag0_wasm: a.pag0_wasm.unwrap_or(default_wasm),
        pag0_before_wasm: a.pag0_before_wasm,
        hostcall_pattern: a.probe,
        short: a.short,
        long: a.long,
        repetitions: a.repetitions as usize,
        verbose: true,
    };
    Ok((o, a.out))
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    match options(Args::parse()).and_then(|(o, out)| run(&o, out, &raw)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pag0-instructions: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(o: &instructions::Options, out_file: Option<PathBuf>, raw: &[String]) -> Result<()> {
    let command = format!("pag0-instructions {}", raw.join(" "))
        .trim()
        .to_owned();
    let meta = report::meta(command.clone());
    let counts = instructions::run(o)?;
    let md = instructions::markdown(&counts, &command, &meta.commit);
    print!("{md}");
    if let Some(f) = out_file {
        std::fs::write(&f, &md)?;
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_flags_and_refusals() {
        let (o, out) = options(Args::parse_from(["pag0-instructions"])).unwrap();
        assert_eq!(o.variants.len(), 5);
        assert_eq!(
            (o.short, o.long, o.repetitions),
            (Duration::from_secs(1), Duration::from_secs(4), 2)
        );
        assert_eq!(o.hostcall_pattern, HOSTCALL_PATTERN);
        assert!(out.is_none());

        let (o, out) = options(Args::parse_from([
            "pag0-instructions",
            "--variants",
            "pag0,pag0-before",
            "--short",
            "0.5",
            "--long",
            "2",
            "--repetitions",
            "3",
            "--out",
            "x.md",
        ]))
        .unwrap();
        assert_eq!(o.variants, vec![Variant::Pag0, Variant::Pag0Before]);
        assert_eq!(
            (o.short, o.long, o.repetitions),
            (Duration::from_millis(500), Duration::from_secs(2), 3)
        );
        assert_eq!(out, Some(PathBuf::from("x.md")));

        assert!(options(Args::parse_from([
            "pag0-instructions",
            "--short",
            "4",
            "--long",
            "4"
        ]))
        .is_err());
        assert!(Args::try_parse_from(["pag0-instructions", "--repetitions", "0"]).is_err());
        assert!(Args::try_parse_from(["pag0-instructions", "--variants", "nope"]).is_err());
    }
}
