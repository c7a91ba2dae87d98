//! For tests: a small org and a recorder that runs the live policy the way the filter does
//! (decide, reserve, settle the actual cost) and writes the decision records it would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use pag0_policy::validate::api_key_sha256_hex;
use pag0_policy::{decide, BudgetKey, BudgetView, CompiledPolicy, Decision, Micros, RequestHead};
use serde_json::{json, Value};

pub const SALES_KEY: &str = "sk-test-sales-0001";
pub const MKT_KEY: &str = "sk-test-marketing-0001";

/// acme: sales-ai (OpenAI + Salesforce, daily 10000) and marketing (OpenAI + DeepL).
pub fn policy() -> Value {
    json!({
        "orgId": "acme-corp",
        "timezone": "UTC",
        "globalPolicy": { "monthlyBudget": "100000000", "dailyBudget": "1000000",
                          "blockedEndpoints": ["suspicious-api.com"] },
        "endpoints": [
            { "host": "api.openai.com", "category": "llm",
              "pricing": { "models": { "gpt-4": { "inputPer1k": "30000", "outputPer1k": "60000" } },
                           "defaultModel": "gpt-4" } },
            { "host": "api.deepl.com", "category": "translation", "pricing": { "perRequest": "2000" } },
            { "host": "api.salesforce.com", "category": "data-analysis",
              "pricing": { "perRequest": "1000" }, "costHeader": "x-request-cost" }
        ],
        "projects": [
            { "id": "sales-ai", "name": "Sales AI",
              "policy": { "monthlyBudget": "50000000", "dailyBudget": "10000",
                          "allowedEndpoints": ["api.openai.com", "api.salesforce.com"] } },
            { "id": "marketing", "name": "Marketing",
              "policy": { "monthlyBudget": "50000000",
                          "allowedEndpoints": ["api.openai.com", "api.deepl.com"] } }
        ],
        "clients": [
            { "id": "sales-agent", "projectId": "sales-ai", "apiKeySha256": api_key_sha256_hex(SALES_KEY) },
            { "id": "marketing-agent", "projectId": "marketing", "apiKeySha256": api_key_sha256_hex(MKT_KEY) }
        ]
    })
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// One agent call: who, where, when, the body (token-priced hosts) and what the upstream
/// reports it cost.
pub struct Call {
    pub key: &'static str,
    pub client: &'static str,
    pub host: &'static str,
    pub path: &'static str,
    pub at: &'static str,
    pub body: Option<&'static str>,
    pub actual: u64,
}

#[derive(Default)]
pub struct Counters(pub HashMap<String, Micros>);

impl BudgetView for Counters {
    fn used(&self, key: &BudgetKey) -> Micros {
        self.0
            .get(&key.storage_key())
            .copied()
            .unwrap_or(Micros::ZERO)
    }
}

/// Runs `calls` through `live` like the filter (starting from `counters`), returning the
/// decision records (docs/audit.md facts) in the what-if's input shape.
pub fn record(live: &Value, calls: &[Call], counters: &mut Counters) -> Vec<Value> {
    let p = CompiledPolicy::from_value(live).unwrap();
    let mut out = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        let head = RequestHead {
            api_key: Some(c.key),
            method: "POST",
            authority: c.host,
            path: c.path,
            requires_approval: false,
        };
        let d = decide(&p, &head, c.body.map(str::as_bytes), counters, at(c.at));
        let mut rec = json!({
            "id": format!("evt-{i}"), "at": c.at, "clientId": c.client,
            "method": "POST", "authority": c.host, "path": c.path,
        });
        match d {
            Decision::Allow(a) => {
                for r in &a.reservations {
                    let slot = counters.0.entry(r.key.storage_key()).or_default();
                    *slot = slot.checked_add(Micros::new(c.actual)).unwrap();
                }
                rec["outcome"] = json!("allow");
                rec["estimate"] = json!(a.estimate.to_string());
                rec["actualCost"] = json!(c.actual.to_string());
                rec["projectId"] = json!(&*a.project_id);
            }
            Decision::Deny(x) => {
                rec["outcome"] = json!("deny");
                rec["code"] = json!(x.code.as_str());
                rec["scope"] = json!(x.scope.map(|s| s.label()));
                rec["projectId"] = json!(x.project_id.as_deref());
                // The filter records its estimate with a refusal too; a budget refusal's
                // message names it ("… N requested").
                let requested = x
                    .message
                    .rsplit(", ")
                    .next()
                    .and_then(|s| s.strip_suffix(" requested"))
                    .unwrap_or("0")
                    .to_string();
                rec["estimate"] = json!(requested);
            }
            Decision::NeedsApproval(n) => {
                rec["outcome"] = json!("pending");
                rec["estimate"] = json!(n.estimate.to_string());
                rec["projectId"] = json!(&*n.project_id);
            }
        }
        out.push(rec);
    }
    out
}

/// A chat body for api.openai.com (gpt-4, 100 output tokens).
pub const CHAT: &str =
    r#"{"model":"gpt-4","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
