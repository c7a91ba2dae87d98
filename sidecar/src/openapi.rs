//! The OpenAPI 3.1 document served at `/v1/openapi.json`, written by hand next to [`ROUTES`].
//! A test checks that both name the same (method, path) pairs and that the router answers
//! every one of them, so the document cannot silently drift from the code.

use serde_json::{json, Map, Value};

/// Every route the router serves: (method, OpenAPI path).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/policy"),
    ("put", "/v1/policy"),
    ("get", "/v1/policy/versions"),
    ("get", "/v1/policy/versions/{version}"),
    ("get", "/v1/projects"),
    ("post", "/v1/projects"),
    ("get", "/v1/projects/{id}"),
    ("patch", "/v1/projects/{id}"),
    ("delete", "/v1/projects/{id}"),
    ("get", "/v1/clients"),
    ("post", "/v1/clients"),
    ("get", "/v1/clients/{id}"),
    ("patch", "/v1/clients/{id}"),
    ("delete", "/v1/clients/{id}"),
    ("post", "/v1/clients/{id}/rotate-key"),
    ("post", "/v1/sync"),
    ("get", "/v1/budgets"),
    ("get", "/v1/openapi.json"),
    ("get", "/metrics"),
    ("get", "/healthz"),
    ("get", "/readyz"),
];

fn err(desc: &str) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok_json(desc: &str, schema: Value) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": schema } } })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn op(summary: &str, security: Option<&str>, params: &[&str], body: Option<Value>, responses: Value) -> Value {
    let mut o = Map::new();
    o.insert("summary".into(), json!(summary));
    if let Some(s) = security {
        o.insert("security".into(), json!([{ s: [] }]));
    } else {
        o.insert("security".into(), json!([]));
    }
    if !params.is_empty() {
        let ps: Vec<Value> = params
            .iter()
            .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        o.insert("parameters".into(), Value::Array(ps));
    }
    if let Some(b) = body {
        o.insert(
            "requestBody".into(),
            json!({ "required": true, "content": { "application/json": { "schema": b } } }),
        );
    }
    let mut r = responses.as_object().cloned().unwrap_or_default();
    if security.is_some() {
        r.insert("401".into(), err("missing or unknown bearer token"));
        r.insert("403".into(), err("token of another role"));
    }
    o.insert("responses".into(), Value::Object(r));
    Value::Object(o)
}

const ADMIN: Option<&str> = Some("adminToken");

fn item_ops(noun: &str, plural: &str, extra_created: Option<Value>) -> (Value, Value) {
    let created = extra_created.unwrap_or_else(|| json!({ "type": "object" }));
    let list = json!({
        "get": op(&format!("List {plural}"), ADMIN, &[], None, json!({
            "200": ok_json(&format!("the {plural} of the latest policy"), json!({ "type": "array", "items": { "type": "object" } })),
            "404": err("no policy yet") })),
        "post": op(&format!("Create a {noun}; the whole document is re-validated and versioned"), ADMIN, &[],
            Some(json!({ "type": "object" })), json!({
            "201": ok_json("created", created),
            "400": err("INVALID_POLICY with `path: reason` details, or BAD_JSON"),
            "404": err("no policy yet"),
            "409": err("ALREADY_EXISTS") })),
    });
    let one = json!({
        "get": op(&format!("One {noun}"), ADMIN, &["id"], None, json!({
            "200": ok_json(noun, json!({ "type": "object" })), "404": err("not found") })),
        "patch": op(&format!("Edit a {noun} with a JSON merge patch (RFC 7396)"), ADMIN, &["id"],
            Some(json!({ "type": "object" })), json!({
            "200": ok_json(&format!("the {noun} after the patch"), json!({ "type": "object" })),
            "400": err("INVALID_POLICY / ID_IMMUTABLE / KEY_IMMUTABLE"), "404": err("not found") })),
        "delete": op(&format!("Delete a {noun}"), ADMIN, &["id"], None, json!({
            "204": { "description": "deleted; header x-pag0-policy-version names the new version" },
            "400": err("INVALID_POLICY (e.g. clients still reference the project)"), "404": err("not found") })),
    });
    (list, one)
}

pub fn document() -> Value {
    let (projects, project) = item_ops("project", "projects", None);
    let client_created = json!({
        "type": "object", "required": ["client", "apiKey"],
        "properties": { "client": { "type": "object" },
                        "apiKey": { "type": "string", "description": "shown once; only its SHA-256 is stored" } } });
    let (clients, client) = item_ops("client", "clients", Some(client_created.clone()));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "pag0 sidecar",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Control service of Pag0's managed mode. Money is integer micro-USD, as decimal strings. \
                            Errors are {\"error\": {\"code\", \"message\", \"details\"}}."
        },
        "components": {
            "securitySchemes": {
                "adminToken": { "type": "http", "scheme": "bearer", "description": "--admin-token NAME=TOKEN" },
                "syncSecret": { "type": "http", "scheme": "bearer", "description": "--sync-secret, held by the Envoy filter" }
            },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": {
                    "type": "object", "required": ["code", "message", "details"],
                    "properties": { "code": { "type": "string" }, "message": { "type": "string" },
                                    "details": { "type": "array", "items": { "type": "string" },
                                                 "description": "`path: reason` for each problem" } } } } },
                "Micros": { "type": "string", "pattern": "^[0-9]+$", "description": "micro-USD" },
                "PolicyMeta": { "type": "object", "properties": {
                    "version": { "type": "integer" }, "author": { "type": "string" },
                    "createdAt": { "type": "string", "format": "date-time" },
                    "unchanged": { "type": "boolean", "description": "PUT of the document already stored: no new version" } } },
                "PolicyDocument": { "type": "object", "description": "SPEC §3; unknown fields are errors" },
                "SyncRequest": { "type": "object", "required": ["instanceId", "seq"], "properties": {
                    "instanceId": { "type": "string", "maxLength": 128 },
                    "seq": { "type": "integer", "minimum": 1, "description": "per instance; a retry resends the same seq and usage" },
                    "policyVersion": { "type": "integer", "description": "version the filter runs, 0 = none" },
                    "usage": { "type": "array", "items": { "type": "object", "required": ["amount"], "properties": {
                        "amount": reference("Micros"),
                        "counters": { "type": "array", "items": { "type": "string" }, "description": "BudgetKey::storage_key of each counter charged" },
                        "projectId": { "type": "string" }, "clientId": { "type": "string" }, "host": { "type": "string" },
                        "at": { "type": "integer", "description": "unix ms" } } } },
                    "leases": { "type": "array", "items": { "type": "object", "required": ["counter"], "properties": {
                        "counter": { "type": "string" }, "want": reference("Micros") } } },
                    "release": { "type": "array", "items": { "type": "string" } } } },
                "SyncResponse": { "type": "object", "properties": {
                    "ack": { "type": "integer" }, "duplicate": { "type": "boolean" },
                    "policyVersion": { "type": "integer" },
                    "policy": reference("PolicyDocument"),
                    "serverTimeMs": { "type": "integer" }, "leaseTtlMs": { "type": "integer" },
                    "leases": { "type": "object", "additionalProperties": { "type": "object", "properties": {
                        "granted": reference("Micros"), "limit": reference("Micros"), "spent": reference("Micros"),
                        "expiresAtMs": { "type": "integer" } } } },
                    "unlimited": { "type": "array", "items": { "type": "string" } } } }
            }
        },
        "paths": {
            "/v1/policy": {
                "get": op("The latest policy document (ETag and x-pag0-policy-version name its version)", ADMIN, &[], None, json!({
                    "200": ok_json("the document", reference("PolicyDocument")), "404": err("no policy yet") })),
                "put": op("Replace the whole document: validated, stored as a new version (If-Match: \"N\" to guard)", ADMIN, &[],
                    Some(reference("PolicyDocument")), json!({
                    "200": ok_json("the new version", reference("PolicyMeta")),
                    "400": err("INVALID_POLICY with every `path: reason`"),
                    "409": err("VERSION_CONFLICT (If-Match no longer the latest)") }))
            },
            "/v1/policy/versions": { "get": op("Version history, newest first", ADMIN, &[], None, json!({
                "200": ok_json("versions", json!({ "type": "object", "properties": { "versions": { "type": "array", "items": reference("PolicyMeta") } } })) })) },
            "/v1/policy/versions/{version}": { "get": op("One past version of the document", ADMIN, &["version"], None, json!({
                "200": ok_json("the document", reference("PolicyDocument")), "404": err("no such version") })) },
            "/v1/projects": projects,
            "/v1/projects/{id}": project,
            "/v1/clients": clients,
            "/v1/clients/{id}": client,
            "/v1/clients/{id}/rotate-key": { "post": op("A new API key for a client (returned once)", ADMIN, &["id"], None, json!({
                "200": ok_json("the client and its new key", client_created), "404": err("not found") })) },
            "/v1/sync": { "post": op("Filter sync: usage batch in (exactly once per instanceId+seq), policy and budget leases out",
                Some("syncSecret"), &[], Some(reference("SyncRequest")), json!({
                "200": ok_json("acknowledged: the batch is durably committed", reference("SyncResponse")),
                "400": err("BAD_SYNC with details"), "409": err("SEQ_REUSED: same seq, different usage"),
                "503": err("store unavailable: retry the same batch") })) },
            "/v1/budgets": { "get": op("Budget counters: limit, spent, leased, unallocated, leases per instance", ADMIN, &[], None, json!({
                "200": ok_json("counters", json!({ "type": "object" })) })) },
            "/v1/openapi.json": { "get": op("This document", None, &[], None, json!({ "200": ok_json("OpenAPI 3.1", json!({ "type": "object" })) })) },
            "/metrics": { "get": op("Prometheus text exposition (loopback only unless --public-ops)", None, &[], None, json!({
                "200": { "description": "text/plain; version=0.0.4" }, "403": err("not loopback") })) },
            "/healthz": { "get": op("Liveness", None, &[], None, json!({ "200": ok_json("ok", json!({ "type": "object" })) })) },
            "/readyz": { "get": op("Readiness: the store answers", None, &[], None, json!({
                "200": ok_json("ready", json!({ "type": "object" })), "503": ok_json("store unreachable", json!({ "type": "object" })) })) }
        }
    })
}
