//! Exact instructions per request of the whole proxy process (`pag0-instructions`).
//!
//! CPU time per request needs a quiet machine to resolve a few µs; a virtual machine without
//! hardware counters and with noisy neighbours cannot. This counts instead: each proxy runs
//! under valgrind's callgrind (every thread of the Envoy process, user space: Envoy, V8 and the
//! wasm code it compiled), one keep-alive connection sends the load mix closed-loop for a
//! short and a long window, and the counts are read with `callgrind_control` around each
//! window. Instructions per request = (long − short) / (requests long − requests short), so
//! start-up, warm-up and the dump itself cancel out; what the timers run while idle is
//! measured apart and taken out in proportion to the windows' lengths. Two repetitions agree
//! to well under 1 %.
//!
//! Kernel work (sockets, syscalls) is not counted; it is the same for every variant. Nor is
//! the sidecar of the ext_authz variant, which is left out here (`pag0-load` covers it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pag0_envoy::harness::Launch;

use super::driver::{Driver, Pace};
use super::procs::{launch, start_envoy};
use super::{envoys, workload, Variant};

/// One proxy's count.
#[derive(Clone, Debug)]
pub struct Count {
    pub variant: Variant,
    /// Instructions per request, one per repetition.
    pub per_request: Vec<f64>,
    /// Instructions per second while idle (timers), subtracted from the windows.
    pub idle_per_s: f64,
    /// Requests in the windows, per repetition: (short, long).
    pub requests: Vec<(u64, u64)>,
}

impl Count {
    pub fn median(&self) -> f64 {
        let mut v = self.per_request.clone();
        super::median(&mut v)
    }
}

/// What to count.
pub struct Options {
    pub variants: Vec<Variant>,
    pub pag0_wasm: PathBuf,
    pub pag0_before_wasm: Option<PathBuf>,
    pub passthrough_wasm: PathBuf,
    pub hostcall_pattern: String,
    pub short: Duration,
    pub long: Duration,
    pub repetitions: usize,
    pub verbose: bool,
}

fn callgrind_control(args: &[&str]) -> Result<()> {
    let out = Command::new("callgrind_control")
        .args(args)
        .output()
        .context("callgrind_control (apt-get install valgrind)")?;
    if !out.status.success() {
        bail!(
            "callgrind_control {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Zeroes the counters of `pid`, runs `f`, dumps, and returns (instructions, what `f` gave).
fn counted<T>(pid: u32, out: &Path, f: impl FnOnce() -> T) -> Result<(u64, T)> {
    let pid_s = pid.to_string();
    callgrind_control(&["-z", &pid_s])?;
    let t = f();
    let before = dumps(out)?;
    callgrind_control(&["-d", &pid_s])?;
    // The dump is written by the process itself, soon after the request.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let new: Vec<PathBuf> = dumps(out)?
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        if let Some(total) = new.iter().find_map(|p| totals(p)) {
            for p in &new {
                let _ = std::fs::remove_file(p);
            }
            return Ok((total, t));
        }
        if Instant::now() > deadline {
            bail!("no callgrind dump appeared for {pid}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Dump files of the run whose `--callgrind-out-file` is `out` (`out.N`).
fn dumps(out: &Path) -> Result<Vec<PathBuf>> {
    let dir = out.parent().ok_or_else(|| anyhow!("no parent"))?;
    let stem = out
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .map(|f| f.to_string_lossy())
                .is_some_and(|f| f.starts_with(&format!("{stem}.")))
        })
        .collect())
}

/// The `totals:` (or `summary:`) line of a complete dump.
fn totals(p: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(p).ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Counts every variant in turn (one Envoy under callgrind at a time).
pub fn run(o: &Options) -> Result<Vec<Count>> {
    let say = |s: String| {
        if o.verbose {
            eprintln!("{s}");
        }
    };
    let policy = workload::bench_policy();
    let plugin_config = serde_json::json!({ "policy": policy });
    let requests = Arc::new(workload::requests());
    let upstream = start_envoy("upstream", &envoys::upstream_yaml(), &launch("upstream", 1))?;
    let driver = Driver::new()?;
    let mut out = Vec::new();
    for &variant in &o.variants {
        let wasm = match variant {
            v if v.runs_passthrough_wasm() => o.passthrough_wasm.clone(),
            Variant::Pag0Before => o
                .pag0_before_wasm
                .clone()
                .ok_or_else(|| anyhow!("pag0-before needs --pag0-before-wasm"))?,
            Variant::ExtAuthz => bail!("ext-authz-sidecar is not counted here (see pag0-load)"),
            _ => o.pag0_wasm.clone(),
        };
        let wasm = wasm.display().to_string();
        let params = envoys::ProxyParams {
            upstream_port: upstream.port,
            wasm: &wasm,
            plugin_config: &plugin_config,
            hostcall_pattern: &o.hostcall_pattern,
            sidecar: None,
        };
        let dir = tempfile::Builder::new()
            .prefix("pag0-instructions-")
            .tempdir()?;
        let cg_out = dir.path().join("callgrind.out");
        let wrapper = vec![
            "valgrind".to_owned(),
            "--tool=callgrind".to_owned(),
            // V8 writes and rewrites the code it runs.
            "--smc-check=all-non-file".to_owned(),
            format!("--callgrind-out-file={}", cg_out.display()),
        ];
        say(format!(
            "{}: starting Envoy under callgrind (about a minute)",
            variant.name()
        ));
        let name = format!("{}-callgrind", variant.name());
        let envoy = start_envoy(
            &name,
            &envoys::proxy_yaml(variant, &params),
            &Launch {
                wrapper,
                ready_timeout: Duration::from_secs(600),
                ..launch(&name, 1)
            },
        )?;
        let pid = envoy.pid();
        let addr = ([127, 0, 0, 1], envoy.port).into();
        let window = |d: Duration| -> Result<(u64, u64, Duration)> {
            let conns = driver.connect(addr, 1)?;
            let (n, r) = counted(pid, &cg_out, || {
                driver.run(conns, Arc::clone(&requests), Pace::Closed, d)
            })?;
            if r.ok == 0 || r.ok != r.completed {
                bail!(
                    "{}: answers {:?} ({} errors); expected 2xx only\n{}",
                    variant.name(),
                    r.statuses,
                    r.errors,
                    envoy.log_tail(30)
                );
            }
            Ok((n, r.completed, r.elapsed))
        };
        // Warm-up: the JIT tiers, connection pools, the filter's caches and budget slices.
        window(o.short)?;
        let (idle, ()) = counted(pid, &cg_out, || std::thread::sleep(Duration::from_secs(2)))?;
        let idle_per_s = idle as f64 / 2.0;
        let mut per_request = Vec::new();
        let mut reqs = Vec::new();
        for rep in 0..o.repetitions {
            let (i1, n1, e1) = window(o.short)?;
            let (i2, n2, e2) = window(o.long)?;
            if n2 <= n1 {
                bail!("the long window answered no more requests than the short one");
            }
            let idle_extra = idle_per_s * (e2.as_secs_f64() - e1.as_secs_f64());
            let per = (i2 as f64 - i1 as f64 - idle_extra) / (n2 - n1) as f64;
            say(format!(
                "{} rep {rep}: {per:.0} instructions per request ({n1} and {n2} requests; idle {idle_per_s:.0}/s)",
                variant.name()
            ));
            per_request.push(per);
            reqs.push((n1, n2));
        }
        out.push(Count {
            variant,
            per_request,
            idle_per_s,
            requests: reqs,
        });
    }
    Ok(out)
}

/// The table: instructions per request, and over the pass-through floor.
pub fn markdown(counts: &[Count], command: &str, commit: &str) -> String {
    use std::fmt::Write as _;
    let floor = counts
        .iter()
        .find(|c| c.variant == Variant::Passthrough)
        .map(Count::median);
    let mut s = String::new();
    let _ = writeln!(s, "# Instructions per request: the whole Envoy process\n");
    let _ = writeln!(s, "- command: `{command}`\n- commit: `{commit}`");
    let _ = writeln!(s, "- callgrind, 1 worker, one keep-alive connection, the load mix; user space of every Envoy thread (kernel not counted)\n");
    let _ = writeln!(
        s,
        "| proxy | instructions/request | over the pass-through floor | repetitions |\n|---|---:|---:|---|"
    );
    for c in counts {
        let over = floor.map_or_else(
            || "-".to_owned(),
            |f| format!("{:+.1}k", (c.median() - f) / 1000.0),
        );
        let reps: Vec<String> = c
            .per_request
            .iter()
            .map(|p| format!("{:.1}k", p / 1000.0))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {:.1}k | {over} | {} |",
            c.variant.name(),
            c.median() / 1000.0,
            reps.join(", ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_gives_its_total_and_an_incomplete_one_none() {
        let dir = tempfile::tempdir().expect("a tempdir");
        let full = dir.path().join("callgrind.out.1");
        std::fs::write(
            &full,
            "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 35035490\n\nfn=main\n1 2\ntotals: 35035490\n",
        )
        .expect("written");
        assert_eq!(totals(&full), Some(35_035_490));
        let partial = dir.path().join("callgrind.out.2");
        std::fs::write(&partial, "version: 1\nevents: Ir\n").expect("written");
        assert_eq!(totals(&partial), None);
        // Only `<out>.N` files of this run count as its dumps.
        std::fs::write(dir.path().join("other.out.1"), "totals: 1\n").expect("written");
        let mut found = dumps(&dir.path().join("callgrind.out")).expect("listed");
        found.sort();
        assert_eq!(found, vec![full, partial]);
    }

    #[test]
    fn the_table_is_relative_to_the_floor() {
        let count = |variant, per: &[f64]| Count {
            variant,
            per_request: per.to_vec(),
            idle_per_s: 0.0,
            requests: Vec::new(),
        };
        let md = markdown(
            &[
                count(Variant::Passthrough, &[180_000.0, 180_400.0]),
                count(Variant::Pag0, &[260_700.0]),
            ],
            "pag0-instructions",
            "abc",
        );
        assert!(md.contains("| passthrough-wasm | 180.4k | +0.0k |"), "{md}");
        assert!(md.contains("| pag0 | 260.7k | +80.3k | 260.7k |"), "{md}");
    }
}
