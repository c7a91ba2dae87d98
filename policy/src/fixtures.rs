//! The "acme" example policy used by tests and benches: 10 teams (projects), 50 clients
//! (5 per team), 40 endpoints (10 token-priced LLM hosts, 30 per-request hosts).
//!
//! Enabled by the `fixtures` feature (and in this crate's tests).

use serde_json::{json, Value};

use crate::validate::api_key_sha256_hex;

pub const TEAMS: usize = 10;
pub const CLIENTS_PER_TEAM: usize = 5;
pub const CLIENTS: usize = TEAMS * CLIENTS_PER_TEAM;
pub const LLM_ENDPOINTS: usize = 10;
pub const PER_REQUEST_ENDPOINTS: usize = 30;

/// The API key of client `i` (0..50) in [`acme_policy`]. Client `i` is `agent-<i>` of
/// project `team-<i / 5>`.
pub fn acme_api_key(i: usize) -> String {
    format!("pag0-acme-key-{i:03}")
}

/// Host of LLM endpoint `i` (0..10); `llm_host(0)` is `api.openai.com`.
pub fn llm_host(i: usize) -> String {
    if i == 0 {
        "api.openai.com".to_string()
    } else {
        format!("api.llm{i}.example.com")
    }
}

/// Host of per-request endpoint `i` (0..30); `per_request_host(0)` is `api.deepl.com`.
pub fn per_request_host(i: usize) -> String {
    if i == 0 {
        "api.deepl.com".to_string()
    } else {
        format!("api.svc{i}.example.net")
    }
}

/// The acme policy document as JSON.
pub fn acme_policy() -> Value {
    let mut endpoints = Vec::new();
    for i in 0..LLM_ENDPOINTS {
        endpoints.push(json!({
            "host": llm_host(i),
            "category": "llm",
            "pricing": {
                "models": {
                    "gpt-4": { "inputPer1k": "30000", "outputPer1k": "60000" },
                    "gpt-4o-mini": { "inputPer1k": "150", "outputPer1k": "600" },
                    "gpt-3.5-turbo": { "inputPer1k": "500", "outputPer1k": "1500" }
                },
                "defaultModel": "gpt-4o-mini"
            }
        }));
    }
    for i in 0..PER_REQUEST_ENDPOINTS {
        let mut e = json!({
            "host": per_request_host(i),
            "category": match i % 3 { 0 => "translation", 1 => "search", _ => "data-analysis" },
            "pricing": { "perRequest": format!("{}", 1000 + 100 * i) }
        });
        if i % 10 == 5 {
            if let Some(obj) = e.as_object_mut() {
                obj.insert("costHeader".into(), json!("x-request-cost"));
            }
        }
        endpoints.push(e);
    }
    let mut projects = Vec::new();
    for t in 0..TEAMS {
        let mut allowed = vec![llm_host(0), llm_host(t % LLM_ENDPOINTS)];
        for k in 0..6 {
            allowed.push(per_request_host((t * 3 + k) % PER_REQUEST_ENDPOINTS));
        }
        allowed.dedup();
        projects.push(json!({
            "id": format!("team-{t}"),
            "name": format!("Team {t}"),
            "policy": {
                "monthlyBudget": "15000000",
                "dailyBudget": "2000000",
                "maxPerRequest": "500000",
                "allowedEndpoints": allowed,
                "approvalWorkflow": {
                    "enabled": true,
                    "approvers": [format!("lead-{t}@acme.example")],
                    "autoApproveBelow": "100000",
                    "requireApprovalAbove": "300000",
                    "expiresAfter": 86400
                }
            },
            "cache": { "enabled": true, "sharedCache": true, "defaultTTL": 1800 }
        }));
    }
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let t = i / CLIENTS_PER_TEAM;
        let mut c = json!({
            "id": format!("agent-{i}"),
            "projectId": format!("team-{t}"),
            "apiKeySha256": api_key_sha256_hex(&acme_api_key(i)),
            "tags": { "department": format!("Dept {t}"), "costCenter": format!("CC-{:04}", 1000 + t),
                      "environment": "production" }
        });
        if i % CLIENTS_PER_TEAM == 4 {
            if let Some(obj) = c.as_object_mut() {
                obj.insert(
                    "additionalRestrictions".into(),
                    json!({
                        "blockedEndpoints": [per_request_host((t * 3) % PER_REQUEST_ENDPOINTS)],
                        "workingHours": { "timezone": "America/New_York", "start": "09:00",
                                          "end": "18:00", "days": ["mon","tue","wed","thu","fri"] }
                    }),
                );
            }
        }
        clients.push(c);
    }
    json!({
        "orgId": "acme-corp",
        "timezone": "UTC",
        "globalPolicy": {
            "monthlyBudget": "200000000",
            "dailyBudget": "20000000",
            "maxPerRequest": "1000000",
            "requireApprovalAbove": "500000",
            "allowedCategories": ["translation", "llm", "search", "data-analysis"],
            "blockedEndpoints": ["suspicious-api.com", "untrusted-provider.xyz"],
            "complianceMode": "EU_AI_ACT",
            "auditLog": { "enabled": true, "retention": 90 }
        },
        "alerts": {
            "channels": ["email", "slack"],
            "recipients": ["cfo@acme.example"],
            "slackWebhookUrl": "http://127.0.0.1:9/slack",
            "triggers": { "budgetThreshold": 0.8, "anomalyDetection": true,
                          "policyViolation": true, "highCostRequest": "1000000" }
        },
        "endpoints": endpoints,
        "projects": projects,
        "clients": clients
    })
}
