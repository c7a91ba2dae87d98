//! The binary's command line: serve (the default), `--validate FILE`, and admin subcommands
//! that call a running sidecar's API (`policy apply`, `projects list|create`,
//! `clients list|create`, `budgets`, `approvals …`, `anomalies`). Kept in the library so it is
//! tested like the rest.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::auth::{Role, Tokens};
use crate::logging::LogFormat;
use crate::store::{PgStore, SqliteStore, Store};
use crate::{app, AppState, Config};

#[derive(Debug, Parser)]
#[command(
    name = "pag0-sidecar",
    version,
    about = "Pag0 control service: policy API, usage sync, budget leases"
)]
pub struct Cli {
    /// Check a policy document (JSON) and exit: 0 valid, 1 invalid (errors as `path: reason`).
    #[arg(long, value_name = "FILE")]
    pub validate: Option<PathBuf>,

    #[command(flatten)]
    pub serve: ServeArgs,

    #[command(flatten)]
    pub remote: RemoteArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the bound address is printed).
    #[arg(long, env = "PAG0_LISTEN", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Directory of the SQLite store (`pag0.db`), used unless a database URL is given.
    #[arg(long, env = "PAG0_DATA_DIR", default_value = "pag0-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL URL (postgres://user@host:port/db): the store for a fleet of sidecars.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL schema to use (created if missing); default: the connection's search_path.
    #[arg(long, env = "PAG0_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
    /// An admin token, NAME=TOKEN (repeatable). NAME is recorded as the author of policy
    /// versions. Also PAG0_ADMIN_TOKENS=NAME=TOKEN,NAME=TOKEN (preferred: not visible in ps).
    #[arg(long = "admin-token", value_name = "NAME=TOKEN")]
    pub admin_tokens: Vec<String>,
    /// An approver token, EMAIL=TOKEN (repeatable): may list, read and decide approvals of the
    /// projects whose approvalWorkflow.approvers lists EMAIL. Also PAG0_APPROVER_TOKENS=E=T,E=T.
    #[arg(long = "approver-token", value_name = "EMAIL=TOKEN")]
    pub approver_tokens: Vec<String>,
    /// SMTP relay for e-mail notifications: smtp://host[:port] (plain SMTP, e.g. a local relay).
    #[arg(long, env = "PAG0_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// Sender address of e-mail notifications.
    #[arg(long, env = "PAG0_SMTP_FROM", default_value = "pag0@localhost")]
    pub smtp_from: String,
    /// The bearer secret the Envoy filter presents on POST /v1/sync.
    #[arg(long, env = "PAG0_SYNC_SECRET", hide_env_values = true)]
    pub sync_secret: Option<String>,
    /// Lease time-to-live: an instance that does not sync for this long loses its slices.
    #[arg(long, env = "PAG0_LEASE_TTL_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(i64).range(1..))]
    pub lease_ttl_ms: i64,
    /// How often the alert delivery worker looks for due alerts (a sync that raises one wakes
    /// it at once; this paces retries and alerts raised by other sidecars of a fleet).
    #[arg(long, env = "PAG0_ALERT_POLL_MS", default_value_t = 1_000)]
    pub alert_poll_ms: u64,
    /// Serve /metrics, /healthz, /readyz to non-loopback peers too.
    #[arg(long, env = "PAG0_PUBLIC_OPS")]
    pub public_ops: bool,
    /// Serve /v1/authz/* (Envoy ext_authz over the decision core, budgets in this process's
    /// memory): for the load benchmark's comparison only, never an enforcement path.
    #[arg(long, env = "PAG0_BENCH_EXT_AUTHZ")]
    pub bench_ext_authz: bool,
    /// Log lines on stderr: `human` (the default) or `json` (one object per line).
    #[arg(long, env = "PAG0_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// What to log, in RUST_LOG syntax: `info` (the default: start, stop, refused and failed
    /// requests), `debug` (every request), `warn`, `pag0_sidecar=debug,warn`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
    /// The URL people reach this sidecar at (https://pag0.example.com): approval
    /// notifications link to <URL>/console/#/approvals/<id>; https makes the console's
    /// session cookie Secure.
    #[arg(long, env = "PAG0_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Keep audit entries this many days (docs/audit.md); the policy's
    /// `globalPolicy.auditLog.retention` wins when set. Default: keep everything.
    #[arg(long, env = "PAG0_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u64>,
    /// How often the audit job runs (expired approvals, retention), in seconds.
    #[arg(long, env = "PAG0_AUDIT_JOB_SECS", default_value_t = 60)]
    pub audit_job_secs: u64,
    /// How often anomaly detection runs over the ledger (docs/anomalies.md); 0 turns it off.
    #[arg(long, env = "PAG0_ANOMALY_INTERVAL_MS", default_value_t = 300_000)]
    pub anomaly_interval_ms: u64,
    /// Days of ledger history the anomaly baselines learn from.
    #[arg(long, env = "PAG0_ANOMALY_LOOKBACK_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=366))]
    pub anomaly_lookback_days: u32,
    /// Mail the previous calendar month's EU AI Act compliance report (PDF) to the policy's
    /// `alerts.recipients` once the month has turned in the policy's timezone, once per month
    /// (docs/reports.md#the-monthly-schedule). Needs --smtp-url.
    #[arg(long, env = "PAG0_MONTHLY_REPORT")]
    pub monthly_report: bool,
    /// How often the monthly schedule checks whether a report is due (and retries a failed send).
    #[arg(long, env = "PAG0_MONTHLY_REPORT_CHECK_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub monthly_report_check_secs: u64,
}

#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// Base URL of a running sidecar (admin subcommands).
    #[arg(
        long,
        env = "PAG0_URL",
        default_value = "http://127.0.0.1:8787",
        global = true
    )]
    pub url: String,
    /// Admin token for the admin subcommands.
    #[arg(long, env = "PAG0_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (what happens without a subcommand).
    Serve,
    /// The policy document.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Projects of the stored policy.
    #[command(subcommand)]
    Projects(ItemCmd),
    /// Clients of the stored policy (create prints the API key once).
    #[command(subcommand)]
    Clients(ItemCmd),
    /// Budget counters: limit, spent, leased, unallocated.
    Budgets,
    /// The approval queue; approve/deny need an approver token (--token).
    #[command(subcommand)]
    Approvals(ApprovalCmd),
    /// Spend, requests, cache hits, savings and budget use per group; recommendations.
    Analytics(AnalyticsArgs),
    /// The EU AI Act compliance report (GET /v1/reports), written to -o or stdout.
    Report(ReportArgs),
    /// Anomalies found over the ledger, newest first.
    Anomalies {
        /// Only this project's.
        #[arg(long)]
        project: Option<String>,
        /// Only windows ending after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many (1..=1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The tamper-evident audit log (docs/audit.md).
    #[command(subcommand)]
    Audit(AuditCmd),
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Entries in seq order (one page; --cursor for the next).
    List {
        #[command(flatten)]
        filter: AuditFilter,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Recompute the chain: exit 0 when intact, 1 with the first bad row.
    Verify,
    /// The chain's head (to anchor externally) and the retention checkpoint.
    Head,
    /// Every matching entry, all pages, as JSON lines or CSV.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        filter: AuditFilter,
    },
}

#[derive(Debug, Args)]
pub struct AuditFilter {
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long)]
    pub client: Option<String>,
    /// RFC 3339 or unix ms (inclusive).
    #[arg(long)]
    pub since: Option<String>,
    /// RFC 3339 or unix ms (exclusive).
    #[arg(long)]
    pub until: Option<String>,
    /// `asc` (oldest first, the default) or `desc` (newest first).
    #[arg(long, value_parser = ["asc", "desc"])]
    pub order: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// json, csv or pdf.
    #[arg(long, default_value = "pdf")]
    pub format: String,
    /// Where to write it (default: stdout).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// `month` (the current one) or YYYY-MM; or give --from and --to.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub period: Option<String>,
    /// RFC 3339 or YYYY-MM-DD, with --to.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// Exclusive end, RFC 3339 or YYYY-MM-DD, with --from.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
}

/// `GET /v1/analytics` (docs/sidecar.md): the current day or month, or a from/to range.
#[derive(Debug, Args)]
pub struct AnalyticsArgs {
    /// day or month (the current one, org timezone); default month.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub period: Option<String>,
    /// Range start, RFC 3339 (with --to).
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// Range end (exclusive), RFC 3339 (with --from).
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// Comma list of project, costCenter, endpoint, client, model.
    #[arg(long, default_value = "project")]
    pub group_by: String,
    /// Add a time series: hour or day.
    #[arg(long)]
    pub interval: Option<String>,
    /// table (default), json or csv.
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalCmd {
    /// List approvals (default: pending).
    List {
        #[arg(long, default_value = "pending")]
        status: String,
    },
    /// One approval.
    Get { id: String },
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    Deny {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Validate locally, then PUT the file as the new policy version.
    Apply { file: PathBuf },
    /// Print the latest policy document.
    Get,
    /// Print the version history.
    Versions,
}

#[derive(Debug, Subcommand)]
pub enum ItemCmd {
    List,
    /// Create from a JSON file holding one object.
    Create {
        file: PathBuf,
    },
}

/// Runs the parsed command line; the binary's `main` is only this.
pub async fn run(cli: Cli) -> ExitCode {
    if let Some(file) = &cli.validate {
        return validate_file(file);
    }
    let result = match cli.command {
        None | Some(Command::Serve) => {
            if let Err(e) = crate::logging::init(cli.serve.log_format, &cli.serve.log_level) {
                eprintln!("pag0-sidecar: {e}");
                return ExitCode::FAILURE;
            }
            // A failed start is a log event like the rest (JSON when the logs are).
            return match serve(cli.serve).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(msg) => {
                    tracing::error!("{msg}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Policy(PolicyCmd::Apply { file })) => apply(&cli.remote, &file).await,
        Some(Command::Policy(PolicyCmd::Get)) => {
            remote(&cli.remote, reqwest::Method::GET, "/v1/policy", None).await
        }
        Some(Command::Policy(PolicyCmd::Versions)) => {
            remote(
                &cli.remote,
                reqwest::Method::GET,
                "/v1/policy/versions",
                None,
            )
            .await
        }
        Some(Command::Projects(cmd)) => item(&cli.remote, "/v1/projects", cmd).await,
        Some(Command::Clients(cmd)) => item(&cli.remote, "/v1/clients", cmd).await,
        Some(Command::Budgets) => budgets(&cli.remote).await,
        Some(Command::Approvals(cmd)) => approvals(&cli.remote, cmd).await,
        Some(Command::Audit(cmd)) => audit(&cli.remote, cmd).await,
        Some(Command::Anomalies {
            project,
            since,
            limit,
            json,
        }) => anomalies(&cli.remote, project, since, limit, json).await,
        Some(Command::Report(args)) => report(&cli.remote, args).await,
        Some(Command::Analytics(args)) => analytics(&cli.remote, &args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("pag0-sidecar: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn validate_file(file: &PathBuf) -> ExitCode {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("pag0-sidecar: cannot read {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    match pag0_policy::CompiledPolicy::compile(&bytes) {
        Ok(p) => {
            let d = p.document();
            println!(
                "{}: valid policy for {} ({} projects, {} clients, {} endpoints)",
                file.display(),
                d.org_id,
                d.projects.len(),
                d.clients.len(),
                d.endpoints.len()
            );
            ExitCode::SUCCESS
        }
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("{}: {e}", file.display());
            }
            eprintln!(
                "{}: {} error(s), policy rejected",
                file.display(),
                errs.0.len()
            );
            ExitCode::FAILURE
        }
    }
}

pub fn tokens_from(args: &ServeArgs) -> Result<Tokens, String> {
    let mut tokens = Tokens::default();
    let from_env = std::env::var("PAG0_ADMIN_TOKENS").unwrap_or_default();
    let specs = args
        .admin_tokens
        .iter()
        .map(String::as_str)
        .chain(from_env.split(',').map(str::trim).filter(|s| !s.is_empty()));
    for spec in specs {
        tokens.add_admin_spec(spec).map_err(|e| e.to_string())?;
    }
    let from_env = std::env::var("PAG0_APPROVER_TOKENS").unwrap_or_default();
    let specs = args
        .approver_tokens
        .iter()
        .map(String::as_str)
        .chain(from_env.split(',').map(str::trim).filter(|s| !s.is_empty()));
    for spec in specs {
        tokens.add_approver_spec(spec).map_err(|e| e.to_string())?;
    }
    if let Some(secret) = &args.sync_secret {
        tokens
            .add_sync_secret(secret)
            .map_err(|e| format!("sync secret: {e}"))?;
    }
    Ok(tokens)
}

/// `--public-url`: an absolute http(s) URL, kept without a trailing `/`.
fn public_url(url: Option<&str>) -> Result<Option<String>, String> {
    let Some(u) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or_else(|| {
            format!("--public-url {u:?}: expected http://HOST[:PORT][/PATH] or https://…")
        })?;
    if rest.is_empty() || rest.starts_with('/') || u.contains(['?', '#', ' ']) {
        return Err(format!(
            "--public-url {u:?}: expected http(s)://HOST[:PORT][/PATH], no query"
        ));
    }
    Ok(Some(u.trim_end_matches('/').to_string()))
}

async fn open_store(args: &ServeArgs) -> Result<Arc<dyn Store>, String> {
    match &args.database_url {
        Some(url) => PgStore::connect(url, args.database_schema.as_deref())
            .await
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|e| format!("postgres: {e}")),
        None => {
            let dir = args.data_dir.clone();
            tokio::task::spawn_blocking(move || SqliteStore::open_dir(&dir))
                .await
                .map_err(|e| e.to_string())?
                .map(|s| Arc::new(s) as Arc<dyn Store>)
                .map_err(|e| format!("sqlite: {e}"))
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    if args.monthly_report && args.smtp_url.is_none() {
        return Err("--monthly-report mails the report: give --smtp-url too".into());
    }
    let tokens = tokens_from(&args)?;
    if !tokens.has_role(|r| *r == Role::Admin) {
        tracing::warn!("no admin token (--admin-token NAME=TOKEN): the admin API answers 401");
    }
    if !tokens.has_role(|r| *r == Role::Filter) {
        tracing::warn!("no sync secret (--sync-secret): filters cannot sync");
    }
    let store = open_store(&args).await?;
    let state = AppState::new(Arc::clone(&store), tokens)
        .map_err(|e| e.to_string())?
        .with_config(Config {
            lease_ttl_ms: args.lease_ttl_ms,
            public_ops: args.public_ops,
            public_url: public_url(args.public_url.as_deref())?,
            audit_retention_days: args.audit_retention_days,
            ext_authz: args.bench_ext_authz,
            ..Config::default()
        });
    let smtp = match &args.smtp_url {
        Some(url) => Some(
            crate::notify::SmtpConfig::parse(url, &args.smtp_from).map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let state = state.with_notifier(crate::notify::Notifier::new(smtp));
    crate::anomaly::spawn(
        Arc::clone(&store),
        Arc::clone(&state.clock),
        crate::anomaly::Schedule {
            interval_ms: args.anomaly_interval_ms,
            lookback_days: args.anomaly_lookback_days,
            ..crate::anomaly::Schedule::default()
        },
    );
    // Alert delivery after commit (crate::alerts): claims with a lease, so a fleet sends once.
    let claimer = format!("{}-{}", std::process::id(), rand::random::<u32>());
    crate::alerts::spawn_worker(
        state.clone(),
        claimer,
        std::time::Duration::from_millis(args.alert_poll_ms),
    );
    tokio::spawn(crate::audit::run_job(
        state.clone(),
        args.audit_retention_days,
        std::time::Duration::from_secs(args.audit_job_secs.max(1)),
    ));
    if args.monthly_report {
        crate::report::schedule::spawn(
            state.clone(),
            std::time::Duration::from_secs(args.monthly_report_check_secs),
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Tests and scripts wait for this line (stdout is not a log: it is never JSON).
    println!("listening on {addr}");
    tracing::info!(store = store.backend(), %addr, "listening");
    if crate::console::assets::engine_embedded() {
        tracing::info!("console at http://{addr}/console/");
    } else {
        tracing::warn!(
            "console at http://{addr}/console/; {}",
            crate::console::assets::ENGINE_MISSING
        );
    }
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!("shut down");
    Ok(())
}

/// SIGTERM or Ctrl-C: stop accepting, finish in-flight requests (a sync in progress commits
/// and answers), exit 0.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

// --- admin subcommands (HTTP clients of a running sidecar) ---

async fn send(
    r: &RemoteArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(reqwest::StatusCode, Value), String> {
    let token = r
        .token
        .as_deref()
        .ok_or("a token is needed: --token or PAG0_TOKEN")?;
    let url = format!("{}{path}", r.url.trim_end_matches('/'));
    let mut req = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, value))
}

fn explain(status: reqwest::StatusCode, v: &Value) -> String {
    let e = v.get("error");
    let mut msg = format!(
        "{status}: {} {}",
        e.and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            .unwrap_or(""),
        e.and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("")
    );
    for d in e
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        msg.push_str(&format!("\n  {}", d.as_str().unwrap_or_default()));
    }
    msg
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

async fn remote(
    r: &RemoteArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(), String> {
    let (status, v) = send(r, method, path, body).await?;
    if !status.is_success() {
        return Err(explain(status, &v));
    }
    print_json(&v);
    Ok(())
}

async fn apply(r: &RemoteArgs, file: &PathBuf) -> Result<(), String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    if let Err(errs) = pag0_policy::CompiledPolicy::compile(&bytes) {
        return Err(format!(
            "{} does not validate:\n  {}",
            file.display(),
            errs.to_string().replace('\n', "\n  ")
        ));
    }
    let (status, v) = send(r, reqwest::Method::PUT, "/v1/policy", Some(bytes)).await?;
    if !status.is_success() {
        return Err(explain(status, &v));
    }
    println!(
        "applied {} as policy version {} (author {})",
        file.display(),
        v.get("version").and_then(Value::as_i64).unwrap_or(0),
        v.get("author").and_then(Value::as_str).unwrap_or("?")
    );
    for w in v
        .get("warnings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        eprintln!("pag0-sidecar: warning: {w}");
    }
    Ok(())
}

async fn item(r: &RemoteArgs, path: &str, cmd: ItemCmd) -> Result<(), String> {
    match cmd {
        ItemCmd::List => remote(r, reqwest::Method::GET, path, None).await,
        ItemCmd::Create { file } => {
            let bytes =
                std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let (status, v) = send(r, reqwest::Method::POST, path, Some(bytes)).await?;
            if !status.is_success() {
                return Err(explain(status, &v));
            }
            print_json(&v);
            if v.get("apiKey").is_some() {
                eprintln!("pag0-sidecar: store the apiKey now: it is not shown again (only its SHA-256 is kept)");
            }
            Ok(())
        }
    }
}

async fn budgets(r: &RemoteArgs) -> Result<(), String> {
    let (status, v) = send(r, reqwest::Method::GET, "/v1/budgets", None).await?;
    if !status.is_success() {
        return Err(explain(status, &v));
    }
    println!(
        "{:<44} {:>14} {:>14} {:>14} {:>14}",
        "COUNTER", "LIMIT", "SPENT", "LEASED", "UNALLOCATED"
    );
    for c in v
        .get("counters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
        println!(
            "{:<44} {:>14} {:>14} {:>14} {:>14}",
            s("counter"),
            s("limit"),
            s("spent"),
            s("leased"),
            s("unallocated")
        );
    }
    Ok(())
}

async fn analytics(r: &RemoteArgs, a: &AnalyticsArgs) -> Result<(), String> {
    let format = match a.format.as_str() {
        "table" | "json" => "json",
        "csv" => "csv",
        other => {
            return Err(format!(
                "--format: {other:?} is not one of table, json, csv"
            ))
        }
    };
    let mut url = reqwest::Url::parse("http://pag0/v1/analytics").map_err(|e| e.to_string())?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in [
            ("period", &a.period),
            ("from", &a.from),
            ("to", &a.to),
            ("interval", &a.interval),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        q.append_pair("groupBy", &a.group_by);
        q.append_pair("format", format);
    }
    let path = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let (status, v) = send(r, reqwest::Method::GET, &path, None).await?;
    if !status.is_success() {
        return Err(explain(status, &v));
    }
    match (a.format.as_str(), &v) {
        ("csv", Value::String(text)) => print!("{text}"),
        ("json", _) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        _ => print_analytics(&v),
    }
    Ok(())
}

fn print_analytics(v: &Value) {
    let s = |g: &Value, k: &str| match g.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(Value::Number(n)) if k == "cacheHitRate" => {
            format!("{:.1}%", n.as_f64().unwrap_or_default() * 100.0)
        }
        Some(x) => x.to_string(),
    };
    let month_use = |g: &Value| {
        g.get("budgetUtilization")
            .and_then(|u| u.get("month"))
            .and_then(|m| m.get("ratio"))
            .and_then(Value::as_f64)
            .map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
    };
    println!(
        "{} {} .. {} ({})",
        s(v, "period"),
        s(v, "from"),
        s(v, "to"),
        s(v, "timezone")
    );
    let denied = |g: &Value| {
        g.get("violations")
            .and_then(|x| x.get("count"))
            .map_or_else(|| "-".into(), Value::to_string)
    };
    let anomalies = |g: &Value| {
        g.get("anomalies")
            .and_then(|x| x.get("count"))
            .map_or_else(|| "-".into(), Value::to_string)
    };
    let ms = |g: &Value, k: &str| match g.get(k).and_then(Value::as_f64) {
        Some(x) => format!("{x:.0}"),
        None => "-".into(),
    };
    let row = |key: &str, g: &Value| {
        println!(
            "{:<32} {:>14} {:>10} {:>10} {:>9} {:>14} {:>10} {:>8} {:>8} {:>8} {:>9}",
            key,
            s(g, "totalCost"),
            s(g, "totalRequests"),
            s(g, "cacheHits"),
            s(g, "cacheHitRate"),
            s(g, "savings"),
            month_use(g),
            denied(g),
            ms(g, "avgLatency"),
            ms(g, "p95Latency"),
            anomalies(g)
        );
    };
    for sec in v
        .get("sections")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!();
        println!(
            "{:<32} {:>14} {:>10} {:>10} {:>9} {:>14} {:>10} {:>8} {:>8} {:>8} {:>9}",
            s(sec, "groupBy").to_uppercase(),
            "COST",
            "REQUESTS",
            "HITS",
            "HIT RATE",
            "SAVINGS",
            "MONTH USE",
            "DENIED",
            "AVG MS",
            "P95 MS",
            "ANOMALIES"
        );
        for g in sec
            .get("groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            row(&s(g, "key"), g);
        }
    }
    if let Some(t) = v.get("total") {
        println!();
        row("TOTAL", t);
    }
    let recs: Vec<&Value> = v
        .get("recommendations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if !recs.is_empty() {
        println!();
        for r in recs {
            println!("[{}] {}", s(r, "rule"), s(r, "message"));
        }
    }
}

async fn approvals(r: &RemoteArgs, cmd: ApprovalCmd) -> Result<(), String> {
    let (method, path, body) = match cmd {
        ApprovalCmd::List { status } => {
            let (status, v) = send(
                r,
                reqwest::Method::GET,
                &format!("/v1/approvals?status={status}"),
                None,
            )
            .await?;
            if !status.is_success() {
                return Err(explain(status, &v));
            }
            println!(
                "{:<44} {:<9} {:<16} {:>12} {:<24} REQUEST",
                "ID", "STATUS", "PROJECT", "ESTIMATE", "EXPIRES"
            );
            for a in v
                .get("approvals")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
                println!(
                    "{:<44} {:<9} {:<16} {:>12} {:<24} {} {}{} (by {})",
                    s("approvalId"),
                    s("status"),
                    s("projectId"),
                    s("estimatedCost"),
                    s("expiresAt"),
                    s("method"),
                    s("authority"),
                    s("path"),
                    s("requestedBy")
                );
            }
            return Ok(());
        }
        ApprovalCmd::Get { id } => (reqwest::Method::GET, format!("/v1/approvals/{id}"), None),
        ApprovalCmd::Approve { id, comment } => (
            reqwest::Method::POST,
            format!("/v1/approvals/{id}/approve"),
            Some(comment),
        ),
        ApprovalCmd::Deny { id, comment } => (
            reqwest::Method::POST,
            format!("/v1/approvals/{id}/deny"),
            Some(comment),
        ),
    };
    let body =
        body.map(|c| serde_json::to_vec(&serde_json::json!({ "comment": c })).unwrap_or_default());
    remote(r, method, &path, body).await
}

// --- audit ---

impl AuditFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        [
            ("kind", &self.kind),
            ("projectId", &self.project),
            ("clientId", &self.client),
            ("since", &self.since),
            ("until", &self.until),
            ("order", &self.order),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

fn audit_path(params: &[(&str, String)]) -> Result<String, String> {
    let mut url = reqwest::Url::parse("http://x/v1/audit").map_err(|e| e.to_string())?;
    url.query_pairs_mut()
        .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
    Ok(match url.query() {
        Some(q) if !q.is_empty() => format!("/v1/audit?{q}"),
        _ => "/v1/audit".into(),
    })
}

/// The CSV columns of an export: the hashed fields in order, `details` as its canonical JSON.
pub const CSV_COLUMNS: &[&str] = &[
    "seq",
    "atMs",
    "at",
    "kind",
    "actor",
    "projectId",
    "clientId",
    "host",
    "model",
    "decision",
    "code",
    "estimate",
    "cost",
    "latencyMs",
    "policyVersion",
    "approvalId",
    "details",
    "prevHash",
    "hash",
];

fn csv_cell(v: &Value) -> Result<String, String> {
    Ok(match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Object(_) | Value::Array(_) => crate::audit::canonical(v)
            .map_err(|e| e.to_string())
            .and_then(|b| String::from_utf8(b).map_err(|e| e.to_string()))?,
        other => other.to_string(),
    })
}

enum Sink {
    Jsonl(Box<dyn std::io::Write>),
    Csv(Box<csv::Writer<Box<dyn std::io::Write>>>),
}

impl Sink {
    fn write(&mut self, e: &Value) -> Result<(), String> {
        match self {
            Sink::Jsonl(out) => {
                let line = serde_json::to_string(e).map_err(|e| e.to_string())?;
                writeln!(out, "{line}").map_err(|e| e.to_string())
            }
            Sink::Csv(w) => {
                let cells = CSV_COLUMNS
                    .iter()
                    .map(|c| csv_cell(e.get(*c).unwrap_or(&Value::Null)))
                    .collect::<Result<Vec<_>, _>>()?;
                w.write_record(&cells).map_err(|e| e.to_string())
            }
        }
    }

    fn flush(&mut self) -> Result<(), String> {
        match self {
            Sink::Jsonl(out) => out.flush(),
            Sink::Csv(w) => w.flush(),
        }
        .map_err(|e| e.to_string())
    }
}

async fn audit(r: &RemoteArgs, cmd: AuditCmd) -> Result<(), String> {
    match cmd {
        AuditCmd::List {
            filter,
            limit,
            cursor,
        } => {
            let mut q = filter.query();
            q.push(("limit", limit.to_string()));
            if let Some(c) = cursor {
                q.push(("cursor", c));
            }
            remote(r, reqwest::Method::GET, &audit_path(&q)?, None).await
        }
        AuditCmd::Head => remote(r, reqwest::Method::GET, "/v1/audit/head", None).await,
        AuditCmd::Verify => {
            let (status, v) = send(r, reqwest::Method::GET, "/v1/audit/verify", None).await?;
            if !status.is_success() {
                return Err(explain(status, &v));
            }
            print_json(&v);
            if v.get("ok") == Some(&Value::Bool(true)) {
                Ok(())
            } else {
                Err(format!(
                    "the audit chain is broken at row {}: {}",
                    v.get("firstBadRow").unwrap_or(&Value::Null),
                    v.get("reason").and_then(Value::as_str).unwrap_or("?")
                ))
            }
        }
        AuditCmd::Export {
            format,
            output,
            filter,
        } => {
            let out: Box<dyn std::io::Write> = match &output {
                Some(p) => Box::new(
                    std::fs::File::create(p)
                        .map_err(|e| format!("cannot write {}: {e}", p.display()))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut sink = match format {
                ExportFormat::Jsonl => Sink::Jsonl(out),
                ExportFormat::Csv => {
                    let mut w = csv::Writer::from_writer(out);
                    w.write_record(CSV_COLUMNS).map_err(|e| e.to_string())?;
                    Sink::Csv(Box::new(w))
                }
            };
            let mut cursor: Option<String> = None;
            let mut n = 0u64;
            loop {
                let mut q = filter.query();
                q.push(("limit", "1000".into()));
                if let Some(c) = &cursor {
                    q.push(("cursor", c.clone()));
                }
                let (status, page) = send(r, reqwest::Method::GET, &audit_path(&q)?, None).await?;
                if !status.is_success() {
                    return Err(explain(status, &page));
                }
                for e in page
                    .get("entries")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    n += 1;
                    sink.write(e)?;
                }
                match page.get("nextCursor").and_then(Value::as_str) {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            sink.flush()?;
            if output.is_some() {
                eprintln!("pag0-sidecar: exported {n} audit entries");
            }
            Ok(())
        }
    }
}

/// The `since`/`project` query string, percent-encoded.
pub fn anomalies_path(project: Option<&str>, since: Option<&str>, limit: u32) -> String {
    let mut q = vec![format!("limit={limit}")];
    if let Some(p) = project {
        q.push(format!("project={}", encode(p)));
    }
    if let Some(s) = since {
        q.push(format!("since={}", encode(s)));
    }
    format!("/v1/anomalies?{}", q.join("&"))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn anomalies(
    r: &RemoteArgs,
    project: Option<String>,
    since: Option<String>,
    limit: u32,
    json: bool,
) -> Result<(), String> {
    let path = anomalies_path(project.as_deref(), since.as_deref(), limit);
    let (status, v) = send(r, reqwest::Method::GET, &path, None).await?;
    if !status.is_success() {
        return Err(explain(status, &v));
    }
    if json {
        print_json(&v);
        return Ok(());
    }
    println!(
        "{:<21} {:<16} {:<16} {:<20} {:>7}  EXPLANATION",
        "WINDOW", "KIND", "PROJECT", "CLIENT", "SCORE"
    );
    for a in v
        .get("anomalies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
        println!(
            "{:<21} {:<16} {:<16} {:<20} {:>7.1}  {}",
            s("windowFrom"),
            s("kind"),
            s("projectId"),
            s("clientId"),
            a.get("score").and_then(Value::as_f64).unwrap_or(0.0),
            s("explanation")
        );
    }
    Ok(())
}

/// `report`: the report's bytes from a running sidecar, to a file or stdout.
async fn report(r: &RemoteArgs, args: ReportArgs) -> Result<(), String> {
    let token = r
        .token
        .as_deref()
        .ok_or("a token is needed: --token or PAG0_TOKEN")?;
    let mut query = vec![
        ("template", crate::report::TEMPLATE.to_string()),
        ("format", args.format),
    ];
    for (k, v) in [
        ("period", args.period),
        ("from", args.from),
        ("to", args.to),
    ] {
        if let Some(v) = v {
            query.push((k, v));
        }
    }
    let url = format!("{}/v1/reports", r.url.trim_end_matches('/'));
    let resp = reqwest::Client::new()
        .get(&url)
        .query(&query)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        return Err(explain(status, &v));
    }
    match args.output {
        Some(path) => {
            std::fs::write(&path, &bytes)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
            Ok(())
        }
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&bytes)
                .map_err(|e| format!("stdout: {e}"))
        }
    }
}
