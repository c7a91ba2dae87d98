//! `pag0-demo` (`make demo`): the acme-corp story (seed UC2) through a real Envoy with 2
//! workers and the pag0 filter in standalone mode, against the mock upstream.
//!
//! Agents of several teams make allowed calls (OpenAI JSON and streaming, DeepL, Salesforce
//! with a cost header, Zendesk, a search API), then run into the guard: a blocked endpoint,
//! an endpoint outside the team's allow-list, a disallowed category, missing and unknown keys,
//! an agent outside its working hours, the per-request cap, a request that needs approval,
//! and the Sales team spending its daily budget. Prints a table and Envoy's pag0 counters.
//! Then the approval story in managed mode (`pag0_envoy::approval_demo`): a `pag0-sidecar`, a
//! second Envoy, a request held (`202`), approved by the team lead, replayed once. Run from a
//! terminal, it then leaves the sidecar's console running (URL and tokens printed) until
//! Ctrl-C.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{Timelike, Utc};
use pag0_envoy::policies::acme_policy;
use pag0_envoy::{Agent, Call, Envoy, EnvoyConfig, MockUpstream, Reply};
use serde_json::{json, Value};

struct Row {
    agent: String,
    team: String,
    request: String,
    status: String,
    result: String,
    estimate: String,
    /// The result matched the story's expectation.
    ok: bool,
}

/// What each step of the story must show, in order; the Sales budget drain follows
/// (`allow` until `BUDGET_EXCEEDED (project.daily)`).
const SCRIPT: [&str; 14] = [
    "allow",
    "allow",
    "allow",
    "allow",
    "allow",
    "allow",
    "ENDPOINT_NOT_ALLOWED",
    "ENDPOINT_BLOCKED",
    "CATEGORY_NOT_ALLOWED",
    "MISSING_API_KEY",
    "UNKNOWN_API_KEY",
    "OUTSIDE_WORKING_HOURS",
    "MAX_PER_REQUEST_EXCEEDED",
    "APPROVAL_REQUIRED",
];
const DRAIN_END: &str = "BUDGET_EXCEEDED (project.daily)";

struct Demo {
    envoy: Envoy,
    agent: Agent,
    rows: Vec<Row>,
}

fn main() -> Result<()> {
    pag0_envoy::harness::check_prerequisites()?;
    let mut policy = acme_policy()?;
    // The off-hours agent: its window is moved to start 2 h from now (every day, UTC), so
    // the scenario shows OUTSIDE_WORKING_HOURS whenever the demo runs.
    let start = (Utc::now().hour() + 2) % 24;
    let end = (start + 1) % 24;
    let window = json!({ "timezone": "UTC", "start": format!("{start:02}:00"), "end": format!("{end:02}:00") });
    let bot = policy
        .get_mut("clients")
        .and_then(Value::as_array_mut)
        .and_then(|cs| {
            cs.iter_mut()
                .find(|c| c.get("id").and_then(Value::as_str) == Some("support-bot-eu"))
        })
        .and_then(|c| c.get_mut("additionalRestrictions"))
        .and_then(Value::as_object_mut)
        .context("acme.json has no client support-bot-eu with additionalRestrictions")?;
    bot.insert("workingHours".into(), window);

    let mock = MockUpstream::start()?;
    println!("mock upstream on 127.0.0.1:{}", mock.port());
    let envoy = Envoy::start(&EnvoyConfig::standalone(policy.clone(), mock.port()))
        .context("starting Envoy")?;
    println!(
        "Envoy on 127.0.0.1:{} (admin 127.0.0.1:{}), 2 workers, policy envoy/policies/acme.json",
        envoy.port, envoy.admin_port
    );
    println!(
        "(support-bot-eu's working hours set to {start:02}:00–{end:02}:00 UTC for this run, so it is off hours now)\n"
    );
    let agent = Agent::new(envoy.port)?;
    let mut demo = Demo {
        envoy,
        agent,
        rows: Vec::new(),
    };

    let chat = |model: &str, max_tokens: u64, stream: bool, prompt: &str| {
        json!({ "model": model, "max_tokens": max_tokens, "stream": stream,
                "messages": [{ "role": "user", "content": prompt }] })
    };
    let openai = "/v1/chat/completions";

    // Allowed traffic.
    demo.run(
        "sales-crm-sync",
        "sk-demo-sales-sync",
        Call::post("api.openai.com", openai).json(&chat(
            "gpt-4",
            300,
            false,
            "Qualify lead ACME-42 for the enterprise deal",
        )),
        "OpenAI gpt-4 (JSON usage)",
    )?;
    demo.run(
        "marketing-agent",
        "sk-demo-marketing",
        Call::post("api.openai.com", openai).json(&chat(
            "gpt-4o-mini",
            200,
            true,
            "Three taglines for the spring campaign",
        )),
        "OpenAI gpt-4o-mini (SSE usage)",
    )?;
    demo.run(
        "marketing-agent",
        "sk-demo-marketing",
        Call::post("api.deepl.com", "/v2/translate").body("text=Spring sale&target_lang=DE"),
        "DeepL translate (flat)",
    )?;
    demo.run(
        "sales-crm-sync",
        "sk-demo-sales-sync",
        Call::get("api.salesforce.com", "/cost?cost=3500"),
        "Salesforce query (x-request-cost: 3500)",
    )?;
    demo.run(
        "support-agent",
        "sk-demo-support",
        Call::post("acme.zendesk.com", "/api/v2/tickets.json")
            .json(&json!({ "ticket": { "subject": "Refund" } })),
        "Zendesk ticket",
    )?;
    demo.run(
        "legal-agent",
        "sk-demo-legal",
        Call::get("api.tavily.com", "/search?q=EU+AI+Act+article+52"),
        "search API",
    )?;

    // The guard at work.
    demo.run(
        "support-agent",
        "sk-demo-support",
        Call::post("api.deepl.com", "/v2/translate").body("text=hi"),
        "DeepL, not on Support's allow-list",
    )?;
    demo.run(
        "rd-agent",
        "sk-demo-rd",
        Call::get("suspicious-api.com", "/v1/data"),
        "org block-list",
    )?;
    demo.run(
        "rd-agent",
        "sk-demo-rd",
        Call::post("api.replicate.com", "/v1/predictions").json(&json!({})),
        "image-generation category",
    )?;
    demo.run_raw(
        "(no key)",
        Call::post("api.openai.com", openai).json(&chat("gpt-4", 10, false, "hi")),
        "no x-pag0-api-key",
    )?;
    demo.run_raw(
        "(intruder)",
        Call::post("api.openai.com", openai)
            .key("sk-demo-intruder")
            .json(&chat("gpt-4", 10, false, "hi")),
        "unknown API key",
    )?;
    demo.run(
        "support-bot-eu",
        "sk-demo-support-eu",
        Call::post("api.openai.com", openai).json(&chat(
            "gpt-4o-mini",
            100,
            false,
            "Nightly ticket digest",
        )),
        "outside working hours",
    )?;
    demo.run(
        "rd-agent",
        "sk-demo-rd",
        Call::post("api.openai.com", openai).json(&chat(
            "gpt-4",
            4000,
            false,
            "Write the whole design doc",
        )),
        "gpt-4, max_tokens 4000 (> $0.20)",
    )?;
    demo.run(
        "product-agent",
        "sk-demo-product",
        Call::post("api.openai.com", openai)
            .header("x-pag0-justification", "Bulk lead qualification")
            .header("x-pag0-requested-by", "john.doe@acme.com")
            .json(&chat("gpt-4", 2000, false, "Qualify these 40 leads")),
        "gpt-4, max_tokens 2000 (> $0.10)",
    )?;

    // Sales spends its daily budget ($0.50 = $15/30) on expensive Salesforce queries listed at
    // $0.001 that report $0.12: the first export teaches the filter what an export costs
    // (docs/estimates.md), the next ones reserve $0.12, and the one that would cross the day
    // is refused — the day ends at $0.487490, not $0.607490.
    for i in 1..=10 {
        let reply = demo.run(
            "sales-crm-sync",
            "sk-demo-sales-sync",
            // A distinct query per export: Sales has the response cache on, and a repeated
            // identical query would be a free hit instead of a $0.12 charge.
            Call::get(
                "api.salesforce.com",
                &format!("/cost?cost=120000&export={i}"),
            ),
            &format!("Salesforce bulk export #{i} ($0.12)"),
        )?;
        if reply.status != 200 {
            break;
        }
    }

    demo.print_table();
    demo.print_totals(&mock)?;
    // Both stories run (and print) even if the first went wrong; either failing fails the demo.
    let standalone = demo.verdict();
    // In a terminal (`make demo`) the console stays up afterwards; piped or with
    // PAG0_DEMO_EXIT set (tests, CI) the demo exits when the story is told.
    let serve = std::io::stdin().is_terminal() && std::env::var_os("PAG0_DEMO_EXIT").is_none();
    let approvals = pag0_envoy::approval_demo::run(&mock, policy, serve);
    standalone.and(approvals)
}

// === impl Demo ===

impl Demo {
    fn run(&mut self, agent: &str, key: &str, call: Call, what: &str) -> Result<Reply> {
        self.run_raw(agent, call.key(key), what)
    }

    fn run_raw(&mut self, agent: &str, call: Call, what: &str) -> Result<Reply> {
        let request = format!(
            "{} {}{} — {what}",
            call.method,
            call.host,
            short_path(&call.path)
        );
        let reply = self.agent.send(&call)?;
        let err = reply.json();
        let team = reply
            .header("x-pag0-project")
            .map(str::to_owned)
            .or_else(|| {
                err.pointer("/error/projectId")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "-".to_owned());
        let result = if reply.decision() == "allow" {
            "allow".to_owned()
        } else {
            match err.pointer("/error/scope").and_then(Value::as_str) {
                Some(scope) => format!("{} ({scope})", reply.code()),
                None => reply.code().to_owned(),
            }
        };
        let estimate = reply
            .header("x-pag0-estimated-cost")
            .and_then(|v| v.parse::<u64>().ok())
            .map(usd)
            .unwrap_or_else(|| "-".to_owned());
        let ok = match SCRIPT.get(self.rows.len()) {
            Some(want) => result == *want,
            None => result == "allow" || result == DRAIN_END,
        };
        self.rows.push(Row {
            agent: agent.to_owned(),
            team,
            request,
            status: reply.status.to_string(),
            result,
            estimate,
            ok,
        });
        if reply.decision() == "allow" {
            self.wait_settled();
        }
        Ok(reply)
    }

    /// Settlement happens when the response stream ends; wait (bounded) until every
    /// reservation is closed so the next decision sees the settled spend. The filter adds its
    /// counts to Envoy's stats on its tick (≤ 1 s later), so also until every request so far
    /// is counted (allowed or denied): only then do the money counters include them.
    fn wait_settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let c = self.envoy.pag0_counters();
            let get = |k: &str| c.get(k).copied().unwrap_or(0);
            let counted: u64 = c
                .iter()
                .filter(|(k, _)| {
                    *k == "pag0.requests.allowed" || k.starts_with("pag0.requests.denied.")
                })
                .map(|(_, v)| *v)
                .sum();
            if counted >= self.rows.len() as u64
                && get("pag0.cost.settled_micros") + get("pag0.cost.released_micros")
                    >= get("pag0.cost.reserved_micros")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Err (exit code 1) when the run did not tell the story: a step with an unexpected
    /// result, or the Sales team never running out of its daily budget.
    fn verdict(&self) -> Result<()> {
        let wrong: Vec<usize> = self
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.ok)
            .map(|(i, _)| i + 1)
            .collect();
        let drained = self.rows.last().is_some_and(|r| r.result == DRAIN_END)
            && self
                .rows
                .iter()
                .skip(SCRIPT.len())
                .filter(|r| r.result == "allow")
                .count()
                >= 2;
        if !wrong.is_empty() || !drained {
            let log = self.envoy.log();
            let tail: Vec<&str> = log.lines().filter(|l| !l.contains("[main]")).collect();
            let tail = tail
                .iter()
                .skip(tail.len().saturating_sub(20))
                .copied()
                .collect::<Vec<_>>()
                .join("\n");
            anyhow::bail!(
                "the scenario did not go as scripted: unexpected results in rows {wrong:?}{}\n\
                 --- last lines of the Envoy log ---\n{tail}",
                if drained {
                    ""
                } else {
                    "; the Sales team did not run out of its daily budget"
                },
            );
        }
        println!("\nEvery step went as scripted.");
        Ok(())
    }

    fn print_table(&self) {
        let w_agent = self
            .rows
            .iter()
            .map(|r| r.agent.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let w_team = self
            .rows
            .iter()
            .map(|r| r.team.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let w_req = self
            .rows
            .iter()
            .map(|r| r.request.chars().count())
            .max()
            .unwrap_or(7)
            .max(7);
        let w_res = self
            .rows
            .iter()
            .map(|r| r.result.len())
            .max()
            .unwrap_or(6)
            .max(6);
        println!(
            "{:>2}  {:<w_agent$}  {:<w_team$}  {:<w_req$}  {:>6}  {:<w_res$}  {:>10}  ok",
            "#", "agent", "team", "request", "status", "result", "estimate"
        );
        println!(
            "{}",
            "-".repeat(2 + 2 + w_agent + 2 + w_team + 2 + w_req + 2 + 6 + 2 + w_res + 2 + 10 + 4)
        );
        for (i, r) in self.rows.iter().enumerate() {
            println!(
                "{:>2}  {:<w_agent$}  {:<w_team$}  {:<w_req$}  {:>6}  {:<w_res$}  {:>10}  {}",
                i + 1,
                r.agent,
                r.team,
                r.request,
                r.status,
                r.result,
                r.estimate,
                if r.ok { "✓" } else { "✗ unexpected" }
            );
        }
    }

    fn print_totals(&self, mock: &MockUpstream) -> Result<()> {
        self.wait_settled();
        let c = self.envoy.pag0_counters();
        let get = |k: &str| c.get(k).copied().unwrap_or(0);
        println!("\nTotals from Envoy's stats (wasmcustom.pag0.*):");
        println!(
            "  requests allowed            {}",
            get("pag0.requests.allowed")
        );
        let mut denied: Vec<(&String, &u64)> = c
            .iter()
            .filter(|(k, v)| k.starts_with("pag0.requests.denied.") && **v > 0)
            .collect();
        denied.sort();
        let total_denied: u64 = denied.iter().map(|(_, v)| **v).sum();
        println!("  requests denied             {total_denied}");
        for (k, v) in denied {
            println!(
                "    {:<26}{v}",
                k.trim_start_matches("pag0.requests.denied.")
            );
        }
        println!(
            "  reserved (learned estimates) {}",
            usd(get("pag0.cost.reserved_micros"))
        );
        println!(
            "  settled (charged)           {}",
            usd(get("pag0.cost.settled_micros"))
        );
        println!(
            "  released (not charged)      {}",
            usd(get("pag0.cost.released_micros"))
        );
        println!("  upstream requests served    {}", mock.served_total());
        Ok(())
    }
}

/// Micro-USD as dollars, exactly (no floats).
fn usd(micros: u64) -> String {
    format!("${}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

fn short_path(path: &str) -> String {
    let p = path.split('?').next().unwrap_or(path);
    if p.chars().count() > 24 {
        format!("{}…", p.chars().take(23).collect::<String>())
    } else {
        p.to_owned()
    }
}
