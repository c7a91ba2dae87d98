//! The load benchmark against baseline Envoy (`make bench`, binary `pag0-load`).
//!
//! One run, one machine: a fast upstream (an Envoy `direct_response` listener) and the same
//! proxy configuration with 1 and 2 workers in four variants — no filter, a pass-through wasm
//! filter (the floor of the proxy-wasm ABI), Pag0 on a realistic policy, and the same
//! decision made by an external call per request (`ext_authz` to the sidecar). Every proxy
//! is started once and stays up; runs alternate between them round by round so machine
//! drift hits all alike. Reported per proxy: requests/s at saturation, p50/p99 latency at
//! fixed open-loop rates (fractions of the no-filter proxy's saturation rate), and CPU time
//! per request of every process on the request path (from `/proc/<pid>/stat`) — the figure
//! that survives a noisy machine. Then, with every proxy idle, the policy propagation time
//! of managed mode: sidecar `PUT /v1/policy` → enforced on every worker (`propagation`).

pub mod driver;
pub mod envoys;
pub mod flags;
pub mod instructions;
pub mod procs;
pub mod propagation;
pub mod report;
pub mod workload;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use driver::{Driver, Pace, RunResult};
use pag0_envoy::Envoy;
use procs::{cpu_time, cpu_times, launch, rss_bytes, start_envoy, SidecarProc};

/// The proxy variants, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Variant {
    /// The proxy with only the router.
    Baseline,
    /// A proxy-wasm filter that does nothing: the floor every wasm filter pays.
    Passthrough,
    /// The pass-through filter making Pag0's per-request host calls (see [`HOSTCALL_PATTERN`])
    /// and nothing else: prices the host-call pattern apart from Pag0's own logic.
    HostCalls,
    /// The pass-through filter making only the host calls docs/policy.md#check-order-and-replies needs of any filter that
    /// honours the wire contract ([`SPEC_MINIMUM_PATTERN`]): the ABI's floor under the
    /// contract, whatever the filter's code.
    SpecMinimum,
    /// The Pag0 filter, standalone, on the bench policy.
    Pag0,
    /// Envoy's ext_authz filter calling the sidecar's `/v1/authz` per request.
    ExtAuthz,
    /// The Pag0 filter built from another commit (`--pag0-before-wasm`), same config: compares
    /// two builds of the filter in one run. Not in the default list.
    Pag0Before,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Variant::Baseline,
        Variant::Passthrough,
        Variant::SpecMinimum,
        Variant::HostCalls,
        Variant::Pag0,
        Variant::ExtAuthz,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Baseline => "no-filter",
            Variant::Passthrough => "passthrough-wasm",
            Variant::HostCalls => "hostcalls-probe",
            Variant::SpecMinimum => "spec-minimum-probe",
            Variant::Pag0 => "pag0",
            Variant::ExtAuthz => "ext-authz-sidecar",
            Variant::Pag0Before => "pag0-before",
        }
    }

    /// The probes and the empty filter all run `pag0_passthrough.wasm` (configured apart).
    pub fn runs_passthrough_wasm(self) -> bool {
        matches!(
            self,
            Variant::Passthrough | Variant::HostCalls | Variant::SpecMinimum
        )
    }

    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL
            .into_iter()
            .chain([Variant::Pag0Before])
            .find(|v| v.name() == s || format!("{v:?}").eq_ignore_ascii_case(s))
    }
}

/// The host calls the Pag0 filter makes for one allowed request to a per-request-priced
/// endpoint (read from engine/src/filter.rs, counters.rs, counters/slices.rs, metrics.rs):
/// request — 1 header-map read (every value the filter needs, and the `x-pag0-*` names to
/// strip) + 1 removal (the API key header), 1 clock read, no counter read and no CAS write
/// (the worker's budget slices cover the request; one read and one write per counter every 17
/// requests take a new slice, left out here); response — 1 single header read (`:status`; the
/// body and its `content-type` are read only for a request priced per token), 3 removals and
/// 3 writes of `x-pag0-*` headers, no settle (the actual cost equals the reservation). Counter
/// increments are summed per worker VM and added to Envoy once per tick (commit c8fbd27),
/// not per request.
/// Until c8fbd27 it was `map=1,remove=1,time=1,metric=3,resp_headers=1,resp_remove=3,resp_set=3`;
/// until commit de49fb7 the response also read `content-type` and copied each body chunk
/// (`resp_headers=2`, the body copy not modelled by the probe).
/// Before the slices (commit 7b0f0df) it was `map=1,remove=1,time=1,shared_get=4,shared_set=4,metric=3,resp_map=1,resp_set=3`;
/// before commit 6c115f4 it was 39 calls:
/// `headers=5,map=1,remove=1,time=1,shared_get=12,shared_set=8,metric=4,resp_headers=2,resp_map=1,resp_set=3`.
pub const HOSTCALL_PATTERN: &str = "map=1,remove=1,time=1,resp_headers=1,resp_remove=3,resp_set=3";

/// The host calls docs/policy.md need of any filter for an allowed request, whatever its code:
/// read the request header map (the API key, and every agent `x-pag0-*` name to strip: no
/// single read can list them), remove the key header, read the clock (working hours, budget
/// periods), read `:status` (an upstream error costs 0), and set the three allow headers
/// (`x-pag0-decision`, `x-pag0-project`, `x-pag0-estimated-cost`). Pag0's own extra: the
/// removal of three `x-pag0-*` names an upstream might send.
pub const SPEC_MINIMUM_PATTERN: &str = "map=1,remove=1,time=1,resp_headers=1,resp_set=3";

/// Flags of `pag0-load` (see `--help`).
#[derive(Clone, Debug)]
pub struct Options {
    pub variants: Vec<Variant>,
    pub workers: Vec<u32>,
    pub rounds: usize,
    pub duration: Duration,
    /// Fixed rates as fractions of the no-filter proxy's saturation rate (same worker count).
    pub rate_fractions: Vec<f64>,
    pub saturation_connections: usize,
    pub rate_connections: usize,
    /// Where `load.md`, `load.json` and `load.svg` go; `None` writes nothing.
    pub out_dir: Option<PathBuf>,
    /// Print each run as it ends.
    pub verbose: bool,
    /// The host calls the `hostcalls-probe` variant makes per request.
    pub hostcall_pattern: String,
    /// The filter build of the `pag0-before` variant.
    pub pag0_before_wasm: Option<PathBuf>,
    /// The filter build of the `pag0` variant (default: the workspace's wasm-release build).
    pub pag0_wasm: Option<PathBuf>,
    /// Policy PUTs timed per worker count (0: no propagation measurement).
    pub propagation_trials: usize,
    /// The managed filter's `syncIntervalMs` in the propagation measurement.
    pub sync_interval_ms: u64,
    /// The sidecar executable (default: the release build,
    /// [`pag0_envoy::harness::sidecar_binary_of`]).
    pub sidecar_bin: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            variants: Variant::ALL.to_vec(),
            workers: vec![1, 2],
            rounds: 3,
            duration: Duration::from_secs(5),
            rate_fractions: vec![0.5, 0.8],
            saturation_connections: 16,
            rate_connections: 64,
            out_dir: None,
            verbose: true,
            hostcall_pattern: HOSTCALL_PATTERN.to_owned(),
            pag0_before_wasm: None,
            pag0_wasm: None,
            propagation_trials: 10,
            sync_interval_ms: 1000,
            sidecar_bin: None,
        }
    }
}

/// One measured run.
#[derive(Clone, Debug)]
pub struct Run {
    pub variant: Variant,
    pub workers: u32,
    pub round: usize,
    /// `None` at saturation, else the target rate (req/s).
    pub rate: Option<f64>,
    pub fraction: Option<f64>,
    pub result: RunResult,
    /// CPU time of the proxy during the run.
    pub proxy_cpu: Duration,
    /// The part of `proxy_cpu` in user space (the rest is the kernel's).
    pub proxy_user_cpu: Duration,
    /// CPU time of the sidecar during the run (ext_authz only).
    pub sidecar_cpu: Duration,
}

impl Run {
    /// CPU µs per request, every process on the request path (proxy + sidecar).
    pub fn cpu_us_per_request(&self) -> f64 {
        (self.proxy_cpu + self.sidecar_cpu).as_secs_f64() * 1e6
            / (self.result.completed.max(1) as f64)
    }

    pub fn proxy_cpu_us_per_request(&self) -> f64 {
        self.proxy_cpu.as_secs_f64() * 1e6 / (self.result.completed.max(1) as f64)
    }

    /// The proxy's user-space CPU µs per request.
    pub fn proxy_user_us_per_request(&self) -> f64 {
        self.proxy_user_cpu.as_secs_f64() * 1e6 / (self.result.completed.max(1) as f64)
    }
}

/// Memory of one proxy after its runs.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    pub rss: u64,
    /// Envoy's `server.memory_allocated` (bytes held by its allocator).
    pub allocated: u64,
    /// `wasm.envoy.wasm.runtime.v8.active` and friends.
    pub wasm_stats: BTreeMap<String, u64>,
}

/// Everything one `pag0-load` run measured.
#[derive(Clone, Debug)]
pub struct Report {
    pub options: Options,
    pub runs: Vec<Run>,
    pub memory: BTreeMap<(Variant, u32), Memory>,
    pub wasm_sizes: BTreeMap<String, u64>,
    pub sidecar_rss: Option<u64>,
    /// Policy propagation trials (managed mode), every worker count.
    pub propagation: Vec<propagation::Trial>,
}

struct Proxy {
    variant: Variant,
    workers: u32,
    envoy: Envoy,
    addr: SocketAddr,
}

/// Starts everything, runs every round, stops everything.
pub fn run(opts: &Options) -> Result<Report> {
    if opts.variants.is_empty() || opts.workers.is_empty() || opts.rounds == 0 {
        bail!("nothing to run: need at least one variant, one worker count and one round");
    }
    let say = |s: String| {
        if opts.verbose {
            eprintln!("{s}");
        }
    };
    let policy = workload::bench_policy();
    let plugin_config = serde_json::json!({ "policy": policy });
    let requests = Arc::new(workload::requests());

    let upstream = start_envoy("upstream", &envoys::upstream_yaml(), &launch("upstream", 1))?;
    let sidecar = if opts.variants.contains(&Variant::ExtAuthz) || opts.propagation_trials > 0 {
        let bin = opts
            .sidecar_bin
            .clone()
            .unwrap_or_else(|| pag0_envoy::harness::sidecar_binary_of("release"));
        Some(SidecarProc::start(&policy, &bin)?)
    } else {
        None
    };
    let default_wasm = pag0_envoy::harness::wasm_path();
    let passthrough_wasm = default_wasm.with_file_name("pag0_passthrough.wasm");
    let plugin_wasm = opts.pag0_wasm.clone().unwrap_or(default_wasm);
    let before_wasm = match (
        &opts.pag0_before_wasm,
        opts.variants.contains(&Variant::Pag0Before),
    ) {
        (Some(p), _) => p.clone(),
        (None, true) => bail!("the pag0-before variant needs --pag0-before-wasm PATH"),
        (None, false) => PathBuf::new(),
    };
    let mut wasm_sizes = BTreeMap::new();
    for (v, path) in [
        (Variant::Pag0, &plugin_wasm),
        (Variant::Pag0Before, &before_wasm),
        (Variant::Passthrough, &passthrough_wasm),
    ] {
        let wanted = if v == Variant::Passthrough {
            opts.variants.iter().any(|x| x.runs_passthrough_wasm())
        } else {
            opts.variants.contains(&v)
        };
        if wanted {
            let meta = std::fs::metadata(path).map_err(|e| {
                anyhow!("{}: {e} — build it with `make wasm` / `cargo build -p pag0-passthrough --profile wasm-release --target wasm32-wasip1`", path.display())
            })?;
            wasm_sizes.insert(
                path.file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                meta.len(),
            );
        }
    }

    let mut proxies = Vec::new();
    for &workers in &opts.workers {
        for &variant in &opts.variants {
            let wasm = match variant {
                v if v.runs_passthrough_wasm() => passthrough_wasm.display().to_string(),
                Variant::Pag0Before => before_wasm.display().to_string(),
                _ => plugin_wasm.display().to_string(),
            };
            let params = envoys::ProxyParams {
                upstream_port: upstream.port,
                wasm: &wasm,
                plugin_config: &plugin_config,
                hostcall_pattern: &opts.hostcall_pattern,
                sidecar: sidecar.as_ref().map(|s| (s.port, s.sync_secret.as_str())),
            };
            let name = format!("{}-{workers}w", variant.name());
            say(format!("starting {name}"));
            let envoy = start_envoy(
                &name,
                &envoys::proxy_yaml(variant, &params),
                &launch(&name, workers),
            )?;
            let addr: SocketAddr = ([127, 0, 0, 1], envoy.port).into();
            proxies.push(Proxy {
                variant,
                workers,
                envoy,
                addr,
            });
        }
    }

    let driver = Driver::new()?;
    // Warm up every proxy (wasm JIT tiers, connection pools) and check it answers 2xx: a
    // benchmark of 401s would measure the wrong thing.
    for p in &proxies {
        let conns = driver.connect(p.addr, 4)?;
        let r = driver.run(
            conns,
            Arc::clone(&requests),
            Pace::Closed,
            Duration::from_millis(1000),
        );
        if r.ok == 0 || r.ok * 100 < r.completed * 99 {
            bail!(
                "{}-{}w answers {:?} ({} errors) in warm-up; expected 2xx\n{}",
                p.variant.name(),
                p.workers,
                r.statuses,
                r.errors,
                p.envoy.log_tail(30)
            );
        }
    }

    let sidecar_pid = sidecar.as_ref().map(SidecarProc::pid);
    // The proxy's CPU split user/system; the sidecar's in total.
    let measure =
        |p: &Proxy, pace: Pace, conns: usize| -> Result<(RunResult, procs::CpuTimes, Duration)> {
            let c = driver.connect(p.addr, conns)?;
            let pid = p.envoy.pid();
            let side = || -> Result<Duration> {
                match sidecar_pid {
                    Some(pid) if p.variant == Variant::ExtAuthz => cpu_time(pid),
                    _ => Ok(Duration::ZERO),
                }
            };
            let (p0, s0) = (cpu_times(pid)?, side()?);
            let r = driver.run(c, Arc::clone(&requests), pace, opts.duration);
            let (p1, s1) = (cpu_times(pid)?, side()?);
            Ok((r, p1.since(p0), s1.saturating_sub(s0)))
        };

    let mut runs = Vec::new();
    // Saturation first: the fixed rates are fractions of the no-filter proxy's capacity.
    for round in 0..opts.rounds {
        for k in 0..proxies.len() {
            // Rotate the order each round so no variant always runs first or last.
            let Some(p) = proxies.get((k + round) % proxies.len()) else {
                continue;
            };
            let (result, proxy, sidecar_cpu) =
                measure(p, Pace::Closed, opts.saturation_connections)?;
            let run = Run {
                variant: p.variant,
                workers: p.workers,
                round,
                rate: None,
                fraction: None,
                result,
                proxy_cpu: proxy.total(),
                proxy_user_cpu: proxy.user,
                sidecar_cpu,
            };
            say(format!(
                "round {round} saturation {:>18} {}w: {:>8.0} req/s, {:>6.1} µs CPU/req, statuses {:?}",
                p.variant.name(),
                p.workers,
                run.result.rps(),
                run.cpu_us_per_request(),
                run.result.statuses
            ));
            runs.push(run);
        }
    }
    let capacity = |workers: u32| -> f64 {
        let reference = if opts.variants.contains(&Variant::Baseline) {
            Variant::Baseline
        } else {
            opts.variants.first().copied().unwrap_or(Variant::Baseline)
        };
        let mut v: Vec<f64> = runs
            .iter()
            .filter(|r| r.rate.is_none() && r.workers == workers && r.variant == reference)
            .map(|r| r.result.rps())
            .collect();
        median(&mut v)
    };
    let capacities: BTreeMap<u32, f64> = opts.workers.iter().map(|&w| (w, capacity(w))).collect();
    for round in 0..opts.rounds {
        for &fraction in &opts.rate_fractions {
            for k in 0..proxies.len() {
                let Some(p) = proxies.get((k + round) % proxies.len()) else {
                    continue;
                };
                let rate =
                    (capacities.get(&p.workers).copied().unwrap_or(1000.0) * fraction).max(1.0);
                let (result, proxy, sidecar_cpu) =
                    measure(p, Pace::Open { rate }, opts.rate_connections)?;
                let mut lat = result.latencies_us.clone();
                lat.sort_unstable();
                say(format!(
                    "round {round} {:>3.0}% ({rate:>6.0}/s) {:>18} {}w: {:>8.0} req/s, p50 {:>6} µs, p99 {:>7} µs, {:>6.1} µs CPU/req",
                    fraction * 100.0,
                    p.variant.name(),
                    p.workers,
                    result.rps(),
                    driver::quantile(&lat, 0.5),
                    driver::quantile(&lat, 0.99),
                    (proxy.total() + sidecar_cpu).as_secs_f64() * 1e6 / result.completed.max(1) as f64,
                ));
                runs.push(Run {
                    variant: p.variant,
                    workers: p.workers,
                    round,
                    rate: Some(rate),
                    fraction: Some(fraction),
                    result,
                    proxy_cpu: proxy.total(),
                    proxy_user_cpu: proxy.user,
                    sidecar_cpu,
                });
            }
        }
    }

    let mut memory = BTreeMap::new();
    for p in &proxies {
        let stats = p.envoy.stats().unwrap_or_default();
        memory.insert(
            (p.variant, p.workers),
            Memory {
                rss: rss_bytes(p.envoy.pid()).unwrap_or(0),
                allocated: stats.get("server.memory_allocated").copied().unwrap_or(0),
                wasm_stats: stats
                    .into_iter()
                    .filter(|(k, _)| k.starts_with("wasm."))
                    .collect(),
            },
        );
    }
    let sidecar_rss = sidecar.as_ref().and_then(|s| rss_bytes(s.pid()).ok());

    let mut trials = Vec::new();
    if let (Some(sc), true) = (&sidecar, opts.propagation_trials > 0) {
        let first = requests
            .first()
            .ok_or_else(|| anyhow!("no request in the mix"))?;
        let (probe, host) = propagation::probe_request(first)?;
        let wasm = plugin_wasm.display().to_string();
        let setup = propagation::Setup {
            sidecar: sc,
            upstream_port: upstream.port,
            wasm: &wasm,
            policy: &policy,
            sync_interval_ms: opts.sync_interval_ms,
            trials: opts.propagation_trials,
        };
        for &workers in &opts.workers {
            say(format!(
                "propagation: {} policy PUTs, managed Pag0 with {workers} worker(s), syncIntervalMs {}",
                opts.propagation_trials, opts.sync_interval_ms
            ));
            for t in propagation::measure(&setup, workers, &probe, &host)? {
                say(format!(
                    "propagation {workers}w trial {}: PUT {:.1} ms, first {:.0} ms, every worker {:.0} ms ({} probes)",
                    t.trial,
                    t.put.as_secs_f64() * 1e3,
                    t.first.as_secs_f64() * 1e3,
                    t.every_worker.as_secs_f64() * 1e3,
                    t.probes
                ));
                trials.push(t);
            }
        }
    }
    Ok(Report {
        options: opts.clone(),
        runs,
        memory,
        wasm_sizes,
        sidecar_rss,
        propagation: trials,
    })
}

/// Median (upper middle for even counts); 0 for none.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
