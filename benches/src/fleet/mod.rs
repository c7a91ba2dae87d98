//! `pag0-fleet` (issue 21 part 2, "a fleet on one control plane"): N simulated Envoy
//! instances ([`sim`]: the managed filter's sync loop and batches of the real wire format,
//! without the proxies) against one sidecar on SQLite, or several sidecars on one PostgreSQL
//! schema. Per (store, N): syncs/s, usage records/s, sync latency, errors, what the sidecar
//! and this process cost in CPU, and the hot counter's leases: how many instances hold a
//! slice and the overspend bound (docs/sync-protocol.md "The overspend bound") as N grows.
//!
//! The sidecars are the release build started by the shared harness
//! ([`pag0_envoy::harness::Sidecar`]; SQLite through [`crate::load::procs::SidecarProc`]),
//! on ephemeral ports, killed on drop; a PostgreSQL run gets a fresh schema, dropped after it.

pub mod flags;
pub mod report;
pub mod sim;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pag0_envoy::harness::{repo_root, Sidecar, SidecarConfig};
use serde_json::Value;

use crate::load::procs::{cpu_times, CpuTimes, SidecarProc};
pub use flags::{Args, Store};

const SYNC_SECRET: &str = "fleet-sync-secret";
const ADMIN_TOKEN: &str = "fleet-admin-token";
/// The acme fixture's budgets are multiplied by this, so that 100,000 records/s of
/// `--amount` µ$ do not spend a project's day within a run: leases are then contended for
/// by the fleet, not refused because the budget is gone.
pub const BUDGET_SCALE: u64 = 1000;

// === the policy ===

/// The acme fixture (envoy/policies/acme.json) with every budget × [`BUDGET_SCALE`].
pub fn fleet_policy() -> Result<Value> {
    let path = repo_root().join("envoy/policies/acme.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc: Value = serde_json::from_str(&text)?;
    let scale = |v: &mut Value| {
        for field in ["monthlyBudget", "dailyBudget"] {
            if let Some(b) = v.get_mut(field) {
                if let Some(n) = b.as_str().and_then(|s| s.parse::<u64>().ok()) {
                    *b = Value::String((n * BUDGET_SCALE).to_string());
                }
            }
        }
    };
    if let Some(g) = doc.get_mut("globalPolicy") {
        scale(g);
    }
    if let Some(ps) = doc.get_mut("projects").and_then(Value::as_array_mut) {
        for p in ps {
            if let Some(pol) = p.get_mut("policy") {
                scale(pol);
            }
        }
    }
    Ok(doc)
}

/// What the runs charge: the counters the policy has now (with limits), the hot one (the
/// org's month, charged by every record) and per client its project's counters.
pub struct Counters {
    pub all: Vec<(String, u64)>,
    pub hot: String,
    pub clients: Vec<(String, String, Vec<String>)>,
}

/// The counters of `doc` at `now` (the acme fixture's timezone is UTC; another timezone is
/// refused rather than guessed).
pub fn counters(doc: &Value, now: chrono::DateTime<chrono::Utc>) -> Result<Counters> {
    let tz = doc.get("timezone").and_then(Value::as_str).unwrap_or("UTC");
    if tz != "UTC" {
        bail!("the fleet policy must be in UTC, not {tz}");
    }
    let month = now.format("%Y-%m").to_string();
    let day = now.format("%Y-%m-%d").to_string();
    let budget = |v: &Value, f: &str| {
        v.get(f)
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok())
    };
    let mut all = Vec::new();
    let global = doc.get("globalPolicy").cloned().unwrap_or(Value::Null);
    let hot = format!("org.monthly/{month}");
    let org_limit =
        budget(&global, "monthlyBudget").ok_or_else(|| anyhow!("no org monthly budget"))?;
    all.push((hot.clone(), org_limit));
    let mut org_counters = vec![hot.clone()];
    if let Some(l) = budget(&global, "dailyBudget") {
        all.push((format!("org.daily/{day}"), l));
        org_counters.push(format!("org.daily/{day}"));
    }
    let mut by_project: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in doc
        .get("projects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(pol)) = (p.get("id").and_then(Value::as_str), p.get("policy")) else {
            continue;
        };
        let mut mine = org_counters.clone();
        if let Some(l) = budget(pol, "monthlyBudget") {
            let c = format!("project.monthly/{id}/{month}");
            all.push((c.clone(), l));
            mine.push(c);
        }
        if let Some(l) = budget(pol, "dailyBudget") {
            let c = format!("project.daily/{id}/{day}");
            all.push((c.clone(), l));
            mine.push(c);
        }
        by_project.insert(id.to_owned(), mine);
    }
    let clients: Vec<(String, String, Vec<String>)> = doc
        .get("clients")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let id = c.get("id")?.as_str()?;
            let project = c.get("projectId")?.as_str()?;
            let mine = by_project.get(project)?.clone();
            Some((id.to_owned(), project.to_owned(), mine))
        })
        .collect();
    if clients.is_empty() {
        bail!("the fleet policy has no client of a project");
    }
    Ok(Counters { all, hot, clients })
}

// === the sidecars ===

/// The sidecar(s) of one run: one on SQLite, or several on one PostgreSQL schema.
pub enum Fleet {
    Sqlite(SidecarProc),
    Postgres(PgFleet),
}

/// Sidecars sharing one fresh schema; the schema is dropped after they are killed.
pub struct PgFleet {
    sidecars: Vec<Sidecar>,
    _dir: tempfile::TempDir,
    url: String,
    pub schema: String,
}

impl Fleet {
    pub fn start(store: Store, args: &Args, bin: &Path, policy: &Value) -> Result<Fleet> {
        match store {
            Store::Sqlite => {
                let proc = SidecarProc::start(policy, bin)?;
                if proc.sync_secret.is_empty() {
                    bail!("the bench sidecar has no sync secret");
                }
                Ok(Fleet::Sqlite(proc))
            }
            Store::Postgres => {
                let url = args.database_url.clone().ok_or_else(|| {
                    anyhow!("--stores postgres needs --database-url or DATABASE_URL")
                })?;
                let schema = format!(
                    "pag0_fleet_{}_{}",
                    std::process::id(),
                    chrono::Utc::now().timestamp_millis()
                );
                let dir = tempfile::Builder::new()
                    .prefix("pag0-fleet-pg-")
                    .tempdir()?;
                let mut fleet = PgFleet {
                    sidecars: Vec::new(),
                    _dir: dir,
                    url: url.clone(),
                    schema: schema.clone(),
                };
                for k in 0..args.pg_sidecars {
                    let config = SidecarConfig {
                        data_dir: fleet._dir.path().join(format!("sidecar-{k}")),
                        database_url: Some(url.clone()),
                        database_schema: Some(schema.clone()),
                        admin_token: ADMIN_TOKEN.to_owned(),
                        sync_secret: SYNC_SECRET.to_owned(),
                        lease_ttl_ms: 30_000,
                        port: 0,
                    };
                    fleet.sidecars.push(Sidecar::start_bin(bin, &config, &[])?);
                }
                // One store: the policy PUT to the first is every sidecar's.
                let first = fleet
                    .sidecars
                    .first()
                    .ok_or_else(|| anyhow!("no sidecar"))?;
                put_policy(&first.url("/v1/policy"), policy)?;
                Ok(Fleet::Postgres(fleet))
            }
        }
    }

    pub fn sync_urls(&self) -> Vec<String> {
        match self {
            Fleet::Sqlite(p) => vec![format!("http://127.0.0.1:{}/v1/sync", p.port)],
            Fleet::Postgres(f) => f.sidecars.iter().map(|s| s.url("/v1/sync")).collect(),
        }
    }

    pub fn sync_secret(&self) -> &str {
        match self {
            Fleet::Sqlite(p) => &p.sync_secret,
            Fleet::Postgres(_) => SYNC_SECRET,
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        match self {
            Fleet::Sqlite(p) => vec![p.pid()],
            Fleet::Postgres(f) => f.sidecars.iter().map(Sidecar::pid).collect(),
        }
    }

    pub fn sidecars(&self) -> usize {
        match self {
            Fleet::Sqlite(_) => 1,
            Fleet::Postgres(f) => f.sidecars.len(),
        }
    }
}

/// `PUT /v1/policy` (the PostgreSQL fleet's; the SQLite one is [`SidecarProc`]'s).
fn put_policy(url: &str, policy: &Value) -> Result<()> {
    let resp = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?
        .put(url)
        .bearer_auth(ADMIN_TOKEN)
        .json(policy)
        .send()?;
    if !resp.status().is_success() {
        bail!(
            "PUT /v1/policy: {} {}",
            resp.status(),
            resp.text().unwrap_or_default()
        );
    }
    Ok(())
}

impl Drop for PgFleet {
    fn drop(&mut self) {
        for s in &mut self.sidecars {
            s.kill();
        }
        let dropped = std::process::Command::new("psql")
            .arg(&self.url)
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .output();
        if !dropped.is_ok_and(|o| o.status.success()) {
            eprintln!(
                "pag0-fleet: could not drop schema {} (psql); drop it by hand",
                self.schema
            );
        }
    }
}

// === CPU and load ===

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

fn sum_cpu(pids: &[u32]) -> Duration {
    pids.iter()
        .filter_map(|p| cpu_times(*p).ok())
        .map(CpuTimes::total)
        .sum()
}

/// Every `postgres` process's CPU so far (the server is shared: other sessions count too).
fn postgres_cpu() -> Duration {
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .collect();
    sum_cpu(&pids)
}

// === one run ===

/// The figures of one (store, N).
#[derive(Clone, Debug)]
pub struct Row {
    pub store: Store,
    pub sidecars: usize,
    pub instances: u32,
    pub records: u32,
    pub interval_ms: u64,
    /// `--seconds`: syncs are started within it (the rates are over it).
    pub window: Duration,
    /// Wall time from the start to the last answer (the CPU shares are over it).
    pub wall: Duration,
    pub syncs_ok: u64,
    pub records_acked: u64,
    pub errors: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Answered syncs slower than the filter's default `timeoutMs` (200 ms).
    pub over_200ms: u64,
    pub hot: Hot,
    pub sidecar_cpu: Duration,
    pub client_cpu: Duration,
    /// All `postgres` processes (PostgreSQL runs only).
    pub postgres_cpu: Option<Duration>,
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
}

/// The hot counter at the end of a run, from each instance's last answer.
#[derive(Clone, Debug, Default)]
pub struct Hot {
    pub counter: String,
    pub limit: u64,
    /// The largest `spent` any answer showed (spend only grows).
    pub spent: u64,
    /// Σ granted over the instances' last answers: what the fleet holds.
    pub sum_granted: u64,
    /// Instances whose last answer held a slice (> 0).
    pub holders: u64,
    pub max_slice: u64,
    /// Σ of the wants the instances last asked with.
    pub sum_want: u64,
    /// Answers with a 0 lease / answers that raised one.
    pub starved: u64,
    pub topups: u64,
}

impl Row {
    pub fn syncs_per_s(&self) -> f64 {
        self.syncs_ok as f64 / self.window.as_secs_f64().max(1e-9)
    }
    pub fn target_syncs_per_s(&self) -> f64 {
        f64::from(self.instances) * 1000.0 / self.interval_ms as f64
    }
    pub fn records_per_s(&self) -> f64 {
        self.records_acked as f64 / self.window.as_secs_f64().max(1e-9)
    }
    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
    /// CPU as a share of one core over the run.
    pub fn cpu_pct(&self, cpu: Duration) -> f64 {
        100.0 * cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

/// `sorted[⌈q·len⌉ − 1]` in ms (0 for none).
pub fn quantile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us
        .get(rank - 1)
        .map_or(0.0, |v| f64::from(*v) / 1000.0)
}

/// Starts the fleet for `store`, runs `n` instances for `args.seconds`, stops the fleet.
pub fn run_one(store: Store, n: u32, args: &Args, bin: &Path, policy: &Value) -> Result<Row> {
    let counters = counters(policy, chrono::Utc::now())?;
    let fleet = Fleet::start(store, args, bin, policy)?;
    let pids = fleet.pids();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(args.timeout())
        .pool_idle_timeout(Duration::from_secs(90))
        .build()?;
    let ctx = Arc::new(sim::Ctx {
        http,
        sync_urls: fleet.sync_urls(),
        sync_secret: fleet.sync_secret().to_owned(),
        counters: counters.all.clone(),
        hot: counters.hot.clone(),
        clients: counters.clients.clone(),
        records: args.records as usize,
        amount: args.amount,
        interval: args.interval(),
    });
    let load_before = loadavg();
    let sidecar_cpu0 = sum_cpu(&pids);
    let client_cpu0 = sum_cpu(&[std::process::id()]);
    let pg_cpu0 = (store == Store::Postgres).then(postgres_cpu);
    let cpu_start = Instant::now();
    let start = cpu_start + Duration::from_millis(100);
    let deadline = start + args.duration();
    let results = runtime.block_on(async {
        let tasks: Vec<_> = (0..n as usize)
            .map(|i| tokio::spawn(sim::run(ctx.clone(), i, n as usize, start, deadline)))
            .collect();
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await);
        }
        out
    });
    let wall = cpu_start.elapsed();
    let sidecar_cpu = sum_cpu(&pids).saturating_sub(sidecar_cpu0);
    let client_cpu = sum_cpu(&[std::process::id()]).saturating_sub(client_cpu0);
    let postgres_cpu = pg_cpu0.map(|c0| postgres_cpu().saturating_sub(c0));
    let load_after = loadavg();
    runtime.shutdown_timeout(Duration::from_secs(1));
    let sidecars = fleet.sidecars();
    drop(fleet);

    let mut latencies = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut syncs_ok, mut records_acked) = (0, 0);
    let mut hot = Hot {
        counter: counters.hot.clone(),
        ..Hot::default()
    };
    for r in results {
        let r = r.map_err(|e| anyhow!("an instance task failed: {e}"))?;
        latencies.extend_from_slice(&r.latencies_us);
        syncs_ok += r.syncs_ok;
        records_acked += r.records_acked;
        for (k, v) in r.errors {
            *errors.entry(k).or_default() += v;
        }
        hot.limit = hot.limit.max(r.hot_limit);
        hot.spent = hot.spent.max(r.hot_spent);
        hot.sum_granted += r.hot_granted;
        hot.holders += u64::from(r.hot_granted > 0);
        hot.max_slice = hot.max_slice.max(r.hot_granted);
        hot.sum_want += r.hot_want;
        hot.starved += r.hot_starved;
        hot.topups += r.hot_topups;
    }
    latencies.sort_unstable();
    Ok(Row {
        store,
        sidecars,
        instances: n,
        records: args.records,
        interval_ms: args.interval_ms,
        window: args.duration(),
        wall,
        syncs_ok,
        records_acked,
        errors,
        p50_ms: quantile_ms(&latencies, 0.50),
        p99_ms: quantile_ms(&latencies, 0.99),
        max_ms: latencies.last().map_or(0.0, |v| f64::from(*v) / 1000.0),
        over_200ms: latencies.iter().filter(|v| **v > 200_000).count() as u64,
        hot,
        sidecar_cpu,
        client_cpu,
        postgres_cpu,
        load_before,
        load_after,
    })
}

/// Every (store, N) of `args`, in order; a failed run is reported and the rest still run.
pub fn run(args: &Args) -> Result<Vec<Row>> {
    let bin: PathBuf = args
        .sidecar
        .clone()
        .unwrap_or_else(|| pag0_envoy::harness::sidecar_binary_of("release"));
    let policy = fleet_policy()?;
    let mut rows = Vec::new();
    for store in &args.stores {
        for n in &args.instances {
            eprintln!(
                "pag0-fleet: {} × {n} instances, {} records every {} ms for {} s …",
                store.label(),
                args.records,
                args.interval_ms,
                args.seconds
            );
            match run_one(*store, *n, args, &bin, &policy) {
                Ok(row) => {
                    eprintln!("{}", report::table(std::slice::from_ref(&row)));
                    rows.push(row);
                }
                Err(e) => eprintln!("pag0-fleet: {} × {n}: {e:#}", store.label()),
            }
        }
    }
    if rows.is_empty() {
        bail!("no run finished");
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_fleet_policy_has_one_hot_counter_every_client_charges() {
        let doc = fleet_policy().unwrap();
        let now = chrono::Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        let c = counters(&doc, now).unwrap();
        assert_eq!(c.hot, "org.monthly/2026-12");
        assert_eq!(
            c.all.first(),
            Some(&("org.monthly/2026-12".to_owned(), 100_000_000 * BUDGET_SCALE))
        );
        assert!(c
            .all
            .iter()
            .any(|(k, _)| k == "project.daily/sales-ai/2026-12-07"));
        assert!(!c.clients.is_empty());
        for (_, _, counters) in &c.clients {
            assert_eq!(counters.first(), Some(&c.hot));
        }
    }

    #[test]
    fn quantiles_of_a_sorted_sample() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(quantile_ms(&v, 0.5), 50.0);
        assert_eq!(quantile_ms(&v, 0.99), 99.0);
        assert_eq!(quantile_ms(&[], 0.99), 0.0);
    }
}
