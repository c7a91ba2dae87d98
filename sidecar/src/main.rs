//! `pag0-sidecar`: see `pag0_sidecar::cli` (flags, subcommands) and docs/sidecar.md.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    pag0_sidecar::cli::run(pag0_sidecar::cli::Cli::parse()).await
}
