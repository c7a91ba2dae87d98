//! `pag0-fleet`'s flags (clap), parsed in the library so that the parsing is unit-tested
//! without a sidecar.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// The sidecar's store for one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Store {
    /// One sidecar on a fresh SQLite file.
    Sqlite,
    /// `--pg-sidecars` sidecars on one fresh schema of one PostgreSQL database.
    Postgres,
}

impl Store {
    pub fn label(self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Postgres => "postgres",
        }
    }
}

/// A store by its name: `sqlite` or `postgres` (`pg`).
pub fn store(s: &str) -> Result<Store, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "sqlite" => Ok(Store::Sqlite),
        "postgres" | "postgresql" | "pg" => Ok(Store::Postgres),
        other => Err(format!("unknown store {other:?} (sqlite, postgres)")),
    }
}

/// N simulated Envoy instances syncing with one control plane (issue 21 part 2): the sync
/// loop and the real wire format (`pag0_wire::SyncRequest`) without the proxies.
///
/// Needs the release sidecar (`cargo build --release -p pag0-sidecar`); `postgres` needs
/// `--database-url` (or `DATABASE_URL`). Writes `<out>/<name>.md` and `<out>/<name>.json`.
#[derive(Clone, Debug, Parser)]
#[command(name = "pag0-fleet")]
pub struct Args {
    /// Fleet sizes to run, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "10,100",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub instances: Vec<u32>,
    /// Usage records per batch (per sync of each instance); the sidecar takes at most 10000.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub records: u32,
    /// Each instance syncs this often (stop and wait: a slow answer delays the next sync).
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub interval_ms: u64,
    /// How long each (store, N) runs.
    #[arg(long, value_name = "S", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
    /// Stores to run, comma-separated: sqlite, postgres.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "sqlite,postgres",
          value_parser = store)]
    pub stores: Vec<Store>,
    /// Sidecars sharing the PostgreSQL schema (instance i syncs with sidecar i mod this).
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub pg_sidecars: u32,
    /// PostgreSQL for the `postgres` store; each run gets a fresh schema, dropped after it.
    #[arg(long, value_name = "URL", env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Micro-USD per usage record.
    #[arg(long, value_name = "MICROS", default_value_t = 10)]
    pub amount: u64,
    /// The simulated filter's timeout per sync (the real filter's `timeoutMs` is 200 by
    /// default; a sync that takes longer is reported in the `> 200 ms` column either way).
    #[arg(long, value_name = "MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// The sidecar executable (default: `$PAG0_SIDECAR`, else target/release/pag0-sidecar).
    #[arg(long, value_name = "PATH")]
    pub sidecar: Option<PathBuf>,
    /// Directory of the report files (default: benches/results).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// File stem of the report files.
    #[arg(long, value_name = "STEM", default_value = "fleet")]
    pub name: String,
}

impl Args {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("pag0-fleet").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_the_issues_goal() {
        let a = parse(&["--database-url", "postgres://x@127.0.0.1/db"]).unwrap();
        assert_eq!(a.instances, [10, 100]);
        assert_eq!(a.records, 1000);
        assert_eq!(a.interval(), Duration::from_secs(1));
        assert_eq!(a.duration(), Duration::from_secs(30));
        assert_eq!(a.stores, [Store::Sqlite, Store::Postgres]);
        assert_eq!(a.pg_sidecars, 2);
        assert_eq!(a.amount, 10);
        assert_eq!(a.out, None);
        assert_eq!(a.name, "fleet");
    }

    #[test]
    fn lists_parse() {
        let a = parse(&[
            "--instances",
            "10,100,1000",
            "--stores",
            "postgres, sqlite",
            "--records",
            "100",
            "--interval-ms",
            "250",
            "--seconds",
            "5",
            "--out",
            "/tmp/x",
        ])
        .unwrap();
        assert_eq!(a.instances, [10, 100, 1000]);
        assert_eq!(a.stores, [Store::Postgres, Store::Sqlite]);
        assert_eq!(a.records, 100);
        assert_eq!(a.interval(), Duration::from_millis(250));
        assert_eq!(a.seconds, 5);
        assert_eq!(a.out, Some(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn a_refusal_names_the_flag() {
        for (args, flag) in [
            (&["--instances", "10,0"][..], "--instances"),
            (&["--instances", "ten"][..], "--instances"),
            (&["--stores", "sqlite,mysql"][..], "--stores"),
            (&["--records", "10001"][..], "--records"),
            (&["--interval-ms", "0"][..], "--interval-ms"),
            (&["--seconds", "0"][..], "--seconds"),
        ] {
            let e = parse(args).expect_err(&format!("{args:?} accepted"));
            let text = e.to_string();
            assert!(text.contains(flag), "{args:?}: {text}");
        }
        assert!(store("mysql").unwrap_err().contains("mysql"));
    }
}
