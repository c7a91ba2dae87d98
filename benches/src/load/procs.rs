//! What `/proc` says about the child processes of one benchmark run, and how the run starts
//! them with the shared harness ([`pag0_envoy::harness`]: ephemeral ports, readiness on
//! conditions, every child killed and reaped on `Drop`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use pag0_envoy::harness::{Envoy, Launch, Sidecar, SidecarConfig};
use serde_json::Value;

fn http() -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?)
}

// === CPU and memory from /proc ===

/// CPU time of a whole process (every thread, live or exited), split as the kernel accounts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// In user space (Envoy, V8, the wasm code): what `pag0-instructions` counts.
    pub user: Duration,
    /// In the kernel on the process's behalf (sockets, epoll, syscalls).
    pub system: Duration,
}

impl CpuTimes {
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    /// What was spent between `earlier` and `self`.
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// User and system CPU time of a whole process, from `/proc/<pid>/stat` fields 14 and 15.
pub fn cpu_times(pid: u32) -> Result<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_times(&stat, clock_ticks_per_sec()).ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))
}

/// User + system CPU time of a whole process.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    Ok(cpu_times(pid)?.total())
}

fn parse_cpu_times(stat: &str, ticks_per_sec: u64) -> Option<CpuTimes> {
    // The command name (field 2) may contain spaces and parentheses; the fields after the
    // last `)` are plain, starting at field 3 (state): utime is field 14 → index 11.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Option<Duration> {
        let t: u64 = fields.get(i)?.parse().ok()?;
        Some(Duration::from_nanos(
            t.checked_mul(1_000_000_000)? / ticks_per_sec.max(1),
        ))
    };
    Some(CpuTimes {
        user: tick(11)?,
        system: tick(12)?,
    })
}

/// `getconf CLK_TCK` (100 on every Linux we know; asked once).
pub fn clock_ticks_per_sec() -> u64 {
    static TCK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(100)
    })
}

/// Resident set size in bytes (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))?;
    Ok(kb * 1024)
}

// === Envoy ===

/// How a benchmark runs Envoy: `workers` workers, `warning` logs, 90 s to get ready.
pub fn launch(name: &str, workers: u32) -> Launch {
    Launch {
        log_level: "warning".to_owned(),
        ready_timeout: Duration::from_secs(90),
        dir_prefix: format!("pag0-load-{name}-"),
        ..Launch::new(workers)
    }
}

/// Starts Envoy on `yaml` as `launch` says ([`launch`]); a failure names the proxy and
/// carries the log's tail.
pub fn start_envoy(name: &str, yaml: &str, launch: &Launch) -> Result<Envoy> {
    Envoy::spawn(yaml, launch).map_err(|f| anyhow!("{name}: {f}"))
}

// === impl SidecarProc ===

/// The sidecar with a fresh SQLite store and `policy` stored as version 1.
pub struct SidecarProc {
    sidecar: Sidecar,
    _dir: tempfile::TempDir,
    pub port: u16,
    pub sync_secret: String,
    admin_token: String,
}

impl SidecarProc {
    /// `bin`: the sidecar executable (the release build, `sidecar_binary_of("release")`, for a
    /// benchmark).
    pub fn start(policy: &Value, bin: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pag0-load-sidecar-")
            .tempdir()?;
        let config = SidecarConfig {
            data_dir: dir.path().to_path_buf(),
            database_url: None,
            database_schema: None,
            admin_token: "bench-admin-token".to_owned(),
            sync_secret: "bench-sync-secret".to_owned(),
            lease_ttl_ms: 30_000,
            port: 0,
        };
        // The ext_authz variant calls /v1/authz/*, off by default.
        let sidecar = Sidecar::start_bin(bin, &config, &["--bench-ext-authz".to_owned()])?;
        let proc = SidecarProc {
            port: sidecar.port,
            sidecar,
            _dir: dir,
            sync_secret: config.sync_secret,
            admin_token: config.admin_token,
        };
        proc.put_policy(policy)?;
        Ok(proc)
    }

    /// `PUT /v1/policy` (a new version); returns once the sidecar has stored it.
    pub fn put_policy(&self, policy: &Value) -> Result<()> {
        let resp = http()?
            .put(self.sidecar.url("/v1/policy"))
            .bearer_auth(&self.admin_token)
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

    pub fn pid(&self) -> u32 {
        self.sidecar.pid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_split_user_and_system_after_a_command_name_with_spaces() {
        // pid (comm) state ppid … utime(14) stime(15) …
        let stat = "4242 (envoy (wrk) 1) S 1 4242 4242 0 -1 4194560 10 0 0 0 250 130 0 0 20 0 3";
        let t = parse_cpu_times(stat, 100).unwrap();
        assert_eq!(t.user, Duration::from_millis(2500));
        assert_eq!(t.system, Duration::from_millis(1300));
        assert_eq!(t.total(), Duration::from_millis(3800));
        let earlier = CpuTimes {
            user: Duration::from_millis(500),
            system: Duration::from_millis(2000),
        };
        let d = t.since(earlier);
        assert_eq!(d.user, Duration::from_millis(2000));
        assert_eq!(d.system, Duration::ZERO, "never negative");
    }

    #[test]
    fn a_truncated_stat_is_an_error_not_a_zero() {
        assert_eq!(parse_cpu_times("4242 (envoy) S 1 2 3", 100), None);
        assert_eq!(parse_cpu_times("no parenthesis", 100), None);
    }
}
