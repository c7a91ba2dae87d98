//! The service's diagnostics: `tracing` events to stderr, one line each, as text for a person
//! (the default) or as JSON for a log pipeline (`--log-format json`). Stdout carries only the
//! `listening on ADDR` line that scripts and tests wait for, and the admin subcommands' output.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `2026-12-01T10:00:00.000000Z  INFO pag0_sidecar::cli: listening addr=…`
    #[default]
    Human,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`).
    Json,
}

/// `filter` takes `RUST_LOG` syntax (`info`, `pag0_sidecar=debug,warn`).
#[derive(Debug, thiserror::Error)]
#[error("log level {filter:?}: {source}")]
pub struct BadFilter {
    filter: String,
    source: tracing_subscriber::filter::ParseError,
}

/// Installs the process-wide subscriber. A second call (tests running `cli::run` twice in one
/// process) keeps the first one.
pub fn init(format: LogFormat, filter: &str) -> Result<(), BadFilter> {
    let env_filter = EnvFilter::builder()
        .parse(filter)
        .map_err(|source| BadFilter {
            filter: filter.to_string(),
            source,
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let _already_set = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}
