//! The binary's command line: serve (the default), `--validate FILE`, and admin subcommands
//! that call a running sidecar's API (`policy apply`, `projects list|create`,
//! `clients list|create`, `budgets`). Kept in the library so it is tested like the rest.

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
    #[arg(long, env = "PAG0_LEASE_TTL_MS", default_value_t = 30_000)]
    pub lease_ttl_ms: i64,
    /// Serve /metrics, /healthz, /readyz to non-loopback peers too.
    #[arg(long, env = "PAG0_PUBLIC_OPS")]
    pub public_ops: bool,
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
    /// Comma list of project, costCenter, endpoint, client.
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
            ..Config::default()
        });
    let smtp = match &args.smtp_url {
        Some(url) => Some(
            crate::notify::SmtpConfig::parse(url, &args.smtp_from).map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let state = state.with_notifier(crate::notify::Notifier::new(smtp));
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
    let row = |key: &str, g: &Value| {
        println!(
            "{:<32} {:>14} {:>10} {:>10} {:>9} {:>14} {:>10}",
            key,
            s(g, "totalCost"),
            s(g, "totalRequests"),
            s(g, "cacheHits"),
            s(g, "cacheHitRate"),
            s(g, "savings"),
            month_use(g)
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
            "{:<32} {:>14} {:>10} {:>10} {:>9} {:>14} {:>10}",
            s(sec, "groupBy").to_uppercase(),
            "COST",
            "REQUESTS",
            "HITS",
            "HIT RATE",
            "SAVINGS",
            "MONTH USE"
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
