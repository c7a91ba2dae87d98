//! The agent-side helpers (clients/python, clients/typescript) against a real stack: Envoy
//! (managed mode, 2 workers) running the filter, a real `pag0-sidecar` (SQLite in a tempdir)
//! with an approver token, and the mock upstream. This test starts the stack, then runs
//! `pytest` (in `.venv-clients`, made by `make clients-setup`) and `node --test` against it,
//! passing addresses, tokens and keys in the environment, and asserts both exit with 0.
//!
//! Also: the shipped `envoy/managed.yaml` carries the agent approval route exactly as the
//! template renders it, and both packages carry the workspace version.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use pag0_envoy::harness::{repo_root, Sidecar, SidecarConfig};
use pag0_envoy::yaml::AGENT_ROUTES;
use pag0_envoy::{Agent, Call, Envoy, EnvoyConfig, MockUpstream};
use serde_json::{json, Value};

const ADMIN: &str = "admin-token-0123456789abcdef";
const SECRET: &str = "sync-secret-0123456789abcdef";
const LEAD: &str = "lead@acme.com";
const LEAD_TOKEN: &str = "lead-approver-token-0123456789";
const WAIT: Duration = Duration::from_secs(30);
const KEY_APPROVAL: &str = "sk-client-approval";
const KEY_BUDGET: &str = "sk-client-budget";
const KEY_OPEN: &str = "sk-client-open";

/// p1: approvals above 1500 µUSD (deepl costs 2000, salesforce 1000) by LEAD; p2: a budget of
/// 1 µUSD; p3: no approvals, room for chat completions.
fn policy() -> Value {
    json!({
        "orgId": "clients-org",
        "timezone": "UTC",
        "globalPolicy": {
            "monthlyBudget": "1000000000",
            "allowedCategories": ["translation", "llm", "data-analysis"],
            "blockedEndpoints": ["suspicious-api.com"]
        },
        "endpoints": endpoints(),
        "projects": [
            project("p1", 100_000_000, json!({ "approvalWorkflow": {
                "enabled": true, "approvers": [LEAD], "requireApprovalAbove": "1500" } })),
            project("p2", 1, json!({})),
            project("p3", 100_000_000, json!({})),
        ],
        "clients": [
            client("c1", "p1", KEY_APPROVAL),
            client("c2", "p2", KEY_BUDGET),
            client("c3", "p3", KEY_OPEN),
        ]
    })
}

struct Stack {
    envoy: Envoy,
    mock: MockUpstream,
    sidecar: Sidecar,
    _dir: tempfile::TempDir,
}

impl Stack {
    fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let sidecar = Sidecar::start_with_args(
            &SidecarConfig {
                data_dir: dir.path().to_path_buf(),
                database_url: None,
                database_schema: None,
                admin_token: ADMIN.into(),
                sync_secret: SECRET.into(),
                lease_ttl_ms: 30_000,
                port: 0,
            },
            &["--approver-token".into(), format!("{LEAD}={LEAD_TOKEN}")],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let r = http
            .put(sidecar.url("/v1/policy"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(policy().to_string())
            .send()
            .unwrap();
        let status = r.status();
        assert!(
            status.is_success(),
            "PUT /v1/policy: {status} {}",
            r.text().unwrap_or_default()
        );
        let mock = MockUpstream::start().unwrap();
        let mut cfg = EnvoyConfig::new(
            json!({ "sidecar": { "cluster": "pag0_sidecar", "authority": "pag0-sidecar",
                                 "syncIntervalMs": 500, "timeoutMs": 1000,
                                 "failureMode": "closed", "syncSecret": SECRET } }),
            mock.port(),
        );
        cfg.sidecar_port = Some(sidecar.port);
        let envoy = Envoy::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
        let s = Stack {
            envoy,
            mock,
            sidecar,
            _dir: dir,
        };
        // Policy and leases arrive with the first syncs: wait until a cheap request passes
        // for every client that should pass.
        let agent = Agent::new(s.envoy.port).unwrap();
        for key in [KEY_APPROVAL, KEY_OPEN] {
            let t0 = Instant::now();
            loop {
                let r = agent
                    .send(&Call::post("api.salesforce.com", "/echo").key(key))
                    .unwrap();
                if r.status == 200 {
                    break;
                }
                assert!(
                    t0.elapsed() < WAIT,
                    "never allowed: {} {}\n{}\n{}",
                    r.status,
                    r.body,
                    s.envoy.log(),
                    s.sidecar.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        s
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PAG0_PROXY_URL", self.envoy.url()),
            ("PAG0_SIDECAR_URL", self.sidecar.url("")),
            (
                "PAG0_MOCK_URL",
                format!("http://127.0.0.1:{}", self.mock.port()),
            ),
            ("PAG0_ADMIN_TOKEN", ADMIN.into()),
            ("PAG0_APPROVER_TOKEN", LEAD_TOKEN.into()),
            ("PAG0_KEY_APPROVAL", KEY_APPROVAL.into()),
            ("PAG0_KEY_BUDGET", KEY_BUDGET.into()),
            ("PAG0_KEY_OPEN", KEY_OPEN.into()),
        ]
    }

    /// Runs a test command against the stack: `Ok(output)` on exit 0, else `Err(report)`.
    fn run(&self, label: &str, mut cmd: Command) -> Result<String, String> {
        cmd.current_dir(repo_root())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(self.env())
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("ALL_PROXY")
            .env("NO_PROXY", "*");
        let t0 = Instant::now();
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("{label}: cannot run {cmd:?}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "--- {label} ({:.1} s) ---\n{text}",
            t0.elapsed().as_secs_f64()
        );
        if out.status.success() {
            Ok(text)
        } else {
            let tail = |s: String| -> String {
                let lines: Vec<&str> = s.lines().collect();
                lines[lines.len().saturating_sub(25)..].join("\n")
            };
            Err(format!(
                "{label} failed ({}):\n{text}\n--- Envoy log tail ---\n{}\n--- sidecar log tail ---\n{}",
                out.status,
                tail(self.envoy.log()),
                tail(self.sidecar.log())
            ))
        }
    }
}

fn clients_python() -> PathBuf {
    repo_root().join(".venv-clients/bin/python")
}

#[test]
fn python_and_typescript_helpers_against_envoy_sidecar_and_mock() {
    let py = clients_python();
    assert!(
        py.exists(),
        "{} is missing — run `make clients-setup` (the pinned test venv of clients/python)",
        py.display()
    );
    let s = Stack::start();
    let mut pytest = Command::new(&py);
    pytest.args([
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "clients/python/tests",
    ]);
    let mut node = Command::new("node");
    node.args(["--test", "clients/typescript/test/"]);
    let results = [s.run("pytest", pytest), s.run("node --test", node)];
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{}",
        failures
            .iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    // Both runners ran tests and reported no failures (an empty run would also exit 0).
    let py_out = results[0].as_ref().unwrap();
    assert!(
        py_out.contains(" passed") && !py_out.contains(" failed"),
        "{py_out}"
    );
    let node_out = results[1].as_ref().unwrap();
    assert!(
        node_out.contains("# fail 0") && !node_out.contains("# pass 0\n"),
        "{node_out}"
    );
}

#[test]
fn shipped_managed_yaml_has_the_agent_route() {
    let shipped = std::fs::read_to_string(repo_root().join("envoy/managed.yaml")).unwrap();
    assert!(
        shipped.contains(AGENT_ROUTES),
        "envoy/managed.yaml lacks the agent route block of envoy/src/yaml.rs (AGENT_ROUTES):\n{AGENT_ROUTES}"
    );
    // Before the catch-all route, or it is never matched.
    let at = shipped.find(AGENT_ROUTES).unwrap();
    let catch_all = shipped.find(r#"- match: { prefix: "/" }"#).unwrap();
    assert!(
        at < catch_all,
        "the agent route must come before the catch-all route"
    );
}

/// `version = "x"` of the first matching line of a TOML/Python file.
fn quoted_after(path: &Path, prefix: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|rest| rest.trim().trim_start_matches('=').trim().split('"').nth(1))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{}: no {prefix:?} line", path.display()))
}

#[test]
fn package_versions_equal_the_workspace_version() {
    let want = env!("CARGO_PKG_VERSION");
    let root = repo_root();
    let py = quoted_after(&root.join("clients/python/pyproject.toml"), "version");
    let py_mod = quoted_after(
        &root.join("clients/python/src/pag0/__init__.py"),
        "__version__",
    );
    let pkg: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("clients/typescript/package.json")).unwrap(),
    )
    .unwrap();
    let ts_src = std::fs::read_to_string(root.join("clients/typescript/src/index.js")).unwrap();
    let ts_const = ts_src
        .lines()
        .find_map(|l| l.strip_prefix("export const VERSION = \""))
        .and_then(|r| r.split('"').next())
        .unwrap_or("<none>");
    assert_eq!(py, want, "clients/python/pyproject.toml version");
    assert_eq!(py_mod, want, "pag0.__version__");
    assert_eq!(
        pkg["version"], want,
        "clients/typescript/package.json version"
    );
    assert_eq!(ts_const, want, "clients/typescript VERSION");
}
