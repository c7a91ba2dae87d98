//! A small policy written from docs/policy.md for the black-box tests, the fuzz target and the bench.
//! Every client exists to reach one docs/policy.md#check-order-and-replies code without ambiguity about check order.

use serde_json::{json, Value};
use sha2::Digest;

pub fn key_sha256(key: &str) -> String {
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// API keys of the clients in [`policy`].
pub const SALES_KEY: &str = "sales-key";
pub const NIGHT_KEY: &str = "night-key";
pub const OPS_KEY: &str = "ops-key";
pub const RACE_KEY: &str = "race-key";
pub const DAILY_KEY: &str = "daily-key";

/// Prices in [`policy`], micro-USD.
pub const DEEPL_PRICE: i64 = 2000;
pub const SALESFORCE_PRICE: i64 = 1000;

pub fn policy() -> Value {
    json!({
        "orgId": "acme-corp",
        "timezone": "UTC",
        "globalPolicy": {
            "monthlyBudget": "100000000",
            "dailyBudget": "5000000",
            "maxPerRequest": "1000000",
            "requireApprovalAbove": "500000",
            "allowedCategories": ["translation", "llm", "search", "data-analysis"],
            "blockedEndpoints": ["suspicious-api.com"]
        },
        "endpoints": [
            { "host": "api.openai.com", "category": "llm",
              "pricing": { "models": { "gpt-4": { "inputPer1k": "30000", "outputPer1k": "60000" },
                                       "gpt-4o-mini": { "inputPer1k": "150", "outputPer1k": "600" } },
                           "defaultModel": "gpt-4o-mini" } },
            { "host": "api.deepl.com", "category": "translation", "pricing": { "perRequest": "2000" } },
            { "host": "api.salesforce.com", "category": "data-analysis",
              "pricing": { "perRequest": "1000" }, "costHeader": "x-request-cost" },
            { "host": "api.search.example", "category": "search", "pricing": { "perRequest": "1000" } },
            { "host": "api.images.example", "category": "images", "pricing": { "perRequest": "1000" } },
            { "host": "suspicious-api.com", "category": "translation", "pricing": { "perRequest": "1000" } },
            { "host": "api.pricey.example", "category": "translation", "pricing": { "perRequest": "300000" } },
            { "host": "api.approval.example", "category": "translation", "pricing": { "perRequest": "600000" } }
        ],
        "projects": [
            { "id": "sales-ai", "name": "Sales AI",
              "policy": { "monthlyBudget": "15000000", "dailyBudget": "500000", "maxPerRequest": "200000",
                          "allowedEndpoints": ["api.openai.com", "api.salesforce.com", "api.deepl.com", "api.pricey.example"] } },
            { "id": "ops", "name": "Ops", "policy": { "monthlyBudget": "50000000" } },
            { "id": "race", "name": "Race", "policy": { "monthlyBudget": "2000" } },
            { "id": "daily", "name": "Daily", "policy": { "monthlyBudget": "100000", "dailyBudget": "2000" } }
        ],
        "clients": [
            { "id": "sales-agent", "projectId": "sales-ai", "apiKeySha256": key_sha256(SALES_KEY) },
            { "id": "night-agent", "projectId": "sales-ai", "apiKeySha256": key_sha256(NIGHT_KEY),
              "additionalRestrictions": {
                  "workingHours": { "timezone": "America/New_York", "start": "09:00", "end": "18:00",
                                    "days": ["mon", "tue", "wed", "thu", "fri"] } } },
            { "id": "ops-agent", "projectId": "ops", "apiKeySha256": key_sha256(OPS_KEY) },
            { "id": "race-agent", "projectId": "race", "apiKeySha256": key_sha256(RACE_KEY) },
            { "id": "daily-agent", "projectId": "daily", "apiKeySha256": key_sha256(DAILY_KEY) }
        ]
    })
}

/// The plugin configuration (README.md#configuration-reference) for [`policy`] in standalone mode.
pub fn config(max_body_bytes: u64) -> String {
    json!({ "policy": policy(), "maxBodyBytes": max_body_bytes }).to_string()
}
