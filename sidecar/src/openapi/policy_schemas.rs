//! The policy document (docs/policy.md) as JSON Schema, field for field what
//! `pag0_policy::validate` accepts: every object refuses unknown fields
//! (`additionalProperties: false`), the fields the validator requires are `required`, and no
//! field is nullable (the validator refuses `null` everywhere). Constraints the validator
//! checks beyond these (budgets within the org's, known timezones, HH:MM hours, …) are not
//! repeated here: a document can match this schema and still be refused with 400
//! INVALID_POLICY, never the other way round.
//!
//! Also the request bodies of `/v1/projects` and `/v1/clients` built from the same parts.

use serde_json::{json, Value};

use crate::document::Collection;

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn strings() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}

fn id() -> Value {
    json!({ "type": "string", "minLength": 1 })
}

fn tags() -> Value {
    json!({ "type": "object", "additionalProperties": { "type": "string" },
            "description": "free-form string labels; tags.costCenter groups analytics" })
}

/// The rule fields every level has (docs/policy.md "Inheritance is intersection").
fn rule_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("allowedEndpoints", strings()),
        ("blockedEndpoints", strings()),
        ("allowedCategories", strings()),
        ("maxPerRequest", r("MicrosIn")),
        ("requireApprovalAbove", r("MicrosIn")),
        ("workingHours", r("WorkingHours")),
    ]
}

fn object(required: &[&str], fields: Vec<(&'static str, Value)>) -> Value {
    let props: serde_json::Map<String, Value> = fields
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut o = json!({ "type": "object", "additionalProperties": false, "properties": props });
    if let (false, Some(m)) = (required.is_empty(), o.as_object_mut()) {
        m.insert("required".into(), json!(required));
    }
    o
}

fn described(mut v: Value, d: &str) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.insert("description".into(), json!(d));
    }
    v
}

fn with(
    mut base: Vec<(&'static str, Value)>,
    more: Vec<(&'static str, Value)>,
) -> Vec<(&'static str, Value)> {
    base.extend(more);
    base
}

/// The fields of a project (also the body of `POST /v1/projects`).
fn project_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("id", id()),
        ("name", json!({ "type": "string" })),
        ("policy", r("ProjectPolicy")),
        ("cache", r("Cache")),
        ("tags", tags()),
    ]
}

fn client_fields(with_key: bool) -> Vec<(&'static str, Value)> {
    let mut f = vec![
        ("id", id()),
        ("projectId", id()),
        ("name", json!({ "type": "string" })),
        ("additionalRestrictions", r("Restrictions")),
        ("tags", tags()),
    ];
    if with_key {
        f.push((
            "apiKeySha256",
            json!({ "type": "string", "description": "lower-case hex SHA-256 of the client's API key; set by the sidecar" }),
        ));
    }
    f
}

/// A JSON merge patch (RFC 7396) of an item: only the item's own top-level fields; `null`
/// removes a field. The patched item is validated whole (400 INVALID_POLICY), so nested values
/// are not constrained here.
fn patch(c: Collection) -> Value {
    let props: serde_json::Map<String, Value> = c
        .patch_fields()
        .iter()
        .map(|k| {
            let v = match *k {
                "id" => json!({ "type": "string", "description": "may only repeat the id in the path (else 400 ID_IMMUTABLE)" }),
                "projectId" => json!({ "type": "string", "description": "required: cannot be removed" }),
                "name" => json!({ "type": ["string", "null"] }),
                _ => json!({ "type": ["object", "null"] }),
            };
            (k.to_string(), v)
        })
        .collect();
    json!({ "type": "object", "additionalProperties": false, "properties": props,
            "description": "JSON merge patch (RFC 7396) of the item's top-level fields; null removes one; the result is validated whole" })
}

/// `components.schemas` entries.
pub(super) fn schemas() -> Value {
    json!({
        "MicrosIn": { "description": "micro-USD as a request may write it: a decimal string (no sign, no point) or a non-negative integer",
            "anyOf": [ { "type": "string", "pattern": "^\\s*[0-9]+\\s*$" }, { "type": "integer", "minimum": 0 } ] },
        "WorkingHours": object(&["start", "end"], vec![
            ("timezone", json!({ "type": "string", "description": "IANA name; default the org's" })),
            ("start", json!({ "type": "string", "description": "HH:MM" })),
            ("end", json!({ "type": "string", "description": "HH:MM" })),
            ("days", json!({ "type": "array", "items": { "type": "string" }, "description": "mon..sun; omitted: every day" })),
        ]),
        "GlobalPolicy": object(&[], with(vec![
            ("monthlyBudget", r("MicrosIn")),
            ("dailyBudget", r("MicrosIn")),
            ("complianceMode", json!({ "type": "string", "description": "upper-case letters, digits and _, e.g. EU_AI_ACT" })),
            ("auditLog", object(&[], vec![
                ("enabled", json!({ "type": "boolean" })),
                ("retention", json!({ "type": "integer", "minimum": 1, "description": "days" })),
            ])),
        ], rule_fields())),
        "Alerts": object(&[], vec![
            ("channels", json!({ "type": "array", "items": { "enum": ["email", "slack", "webhook"] } })),
            ("recipients", strings()),
            ("slackWebhookUrl", json!({ "type": "string", "description": "http:// or https://" })),
            ("webhookUrl", json!({ "type": "string", "description": "http:// or https://" })),
            ("triggers", object(&[], vec![
                ("budgetThreshold", json!({ "type": "number", "minimum": 0, "maximum": 1, "description": "a fraction of a budget (0.8 = 80 %)" })),
                ("anomalyDetection", json!({ "type": "boolean" })),
                ("policyViolation", json!({ "type": "boolean" })),
                ("highCostRequest", r("MicrosIn")),
            ])),
        ]),
        "ModelPricing": object(&["inputPer1k", "outputPer1k"], vec![
            ("inputPer1k", r("MicrosIn")), ("outputPer1k", r("MicrosIn")),
        ]),
        "Pricing": object(&[], vec![
            ("perRequest", r("MicrosIn")),
            ("models", json!({ "type": "object", "minProperties": 1, "additionalProperties": r("ModelPricing") })),
            ("defaultModel", json!({ "type": "string" })),
            ("defaultMaxTokens", json!({ "type": "integer", "minimum": 1 })),
        ]),
        "Endpoint": object(&["host", "category"], vec![
            ("host", id()),
            ("category", id()),
            ("pricing", r("Pricing")),
            ("costHeader", json!({ "type": "string", "description": "response header carrying the actual cost in micro-USD" })),
        ]),
        "ApprovalWorkflow": object(&[], vec![
            ("enabled", json!({ "type": "boolean" })),
            ("approvers", strings()),
            ("autoApproveBelow", r("MicrosIn")),
            ("requireApprovalAbove", r("MicrosIn")),
            ("expiresAfter", json!({ "type": "integer", "minimum": 1, "description": "seconds, default 86400" })),
        ]),
        "Cache": object(&[], vec![
            ("enabled", json!({ "type": "boolean" })),
            ("sharedCache", json!({ "type": "boolean" })),
            ("defaultTTL", json!({ "type": "integer", "minimum": 1, "description": "seconds" })),
        ]),
        "ProjectPolicy": object(&[], with(vec![
            ("monthlyBudget", r("MicrosIn")),
            ("dailyBudget", r("MicrosIn")),
            ("approvalWorkflow", r("ApprovalWorkflow")),
        ], rule_fields())),
        "Restrictions": object(&[], rule_fields()),
        "Project": object(&["id"], project_fields()),
        "Client": object(&["id", "projectId", "apiKeySha256"], client_fields(true)),
        "NewClient": described(object(&["id", "projectId"], client_fields(false)),
            "a client without its key: the sidecar generates the API key (400 KEY_GENERATED_BY_SIDECAR for apiKey or apiKeySha256)"),
        "PolicyDocument": described(object(&["orgId"], vec![
            ("orgId", id()),
            ("timezone", json!({ "type": "string", "default": "UTC", "description": "IANA name: calendar day/month boundaries of budgets" })),
            ("globalPolicy", r("GlobalPolicy")),
            ("alerts", r("Alerts")),
            ("endpoints", json!({ "type": "array", "items": r("Endpoint") })),
            ("projects", json!({ "type": "array", "items": r("Project") })),
            ("clients", json!({ "type": "array", "items": r("Client") })),
        ]), "The policy document (docs/policy.md). Unknown fields are errors; the whole document is validated (400 INVALID_POLICY with every `path: reason`)"),
        "ProjectPatch": patch(Collection::Projects),
        "ClientPatch": patch(Collection::Clients),
    })
}
