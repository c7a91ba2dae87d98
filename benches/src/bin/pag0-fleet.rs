//! `pag0-fleet`: N simulated Envoy instances syncing with one control plane (issue 21 part 2;
//! see `pag0_benches::fleet`). `--help` lists the flags.

use std::process::ExitCode;

use clap::Parser;
use pag0_benches::fleet::{self, report, Args};

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = Args::parse();
    let meta = report::meta(format!("pag0-fleet {}", raw.join(" ")).trim().to_owned());
    match fleet::run(&args) {
        Ok(rows) => {
            print!("{}", report::markdown(&rows, &meta));
            let dir = args
                .out
                .clone()
                .unwrap_or_else(|| pag0_envoy::harness::repo_root().join("benches/results"));
            match report::write(&rows, &meta, &dir, &args.name) {
                Ok(()) => {
                    eprintln!("wrote {}/{}.{{md,json}}", dir.display(), args.name);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pag0-fleet: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("pag0-fleet: {e:#}");
            ExitCode::FAILURE
        }
    }
}
