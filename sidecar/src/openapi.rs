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
    ("get", "/v1/usage/exceptions"),
    ("get", "/v1/analytics"),
    ("get", "/v1/anomalies"),
    ("get", "/v1/alerts"),
    ("get", "/v1/approvals"),
    ("post", "/v1/approvals"),
    ("get", "/v1/approvals/{id}"),
    ("post", "/v1/approvals/{id}/approve"),
    ("post", "/v1/approvals/{id}/deny"),
    ("post", "/v1/approvals/{id}/consume"),
    ("get", "/v1/audit"),
    ("get", "/v1/audit/head"),
    ("get", "/v1/audit/verify"),
    ("get", "/v1/reports"),
    ("post", "/v1/reports/send"),
    ("get", "/v1/openapi.json"),
    ("get", "/metrics"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/console"),
    ("get", "/console/api/session"),
    ("post", "/console/api/session"),
    ("delete", "/console/api/session"),
];

fn err(desc: &str) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
}

fn ok_json(desc: &str, schema: Value) -> Value {
    json!({ "description": desc, "content": { "application/json": { "schema": schema } } })
}

/// `GET /v1/anomalies`'s answer.
fn anomalies_schema() -> Value {
    json!({ "type": "object", "required": ["anomalies"], "properties": {
                        "anomalies": { "type": "array", "items": { "type": "object",
                            "required": ["kind", "projectId", "clientId", "subject", "score", "unit", "baseline", "observed", "windowFrom", "windowTo", "explanation", "detectedAt"],
                            "properties": {
                                "kind": { "enum": ["spend_spike", "request_spike", "costly_request", "new_endpoint", "off_hours_burst"] },
                                "projectId": { "type": "string" },
                                "clientId": { "type": ["string", "null"], "description": "null: the project as a whole" },
                                "subject": { "type": ["string", "null"], "description": "the host of a new_endpoint" },
                                "score": { "type": "number" },
                                "unit": { "enum": ["usd_micros", "requests"] },
                                "baseline": { "type": "string", "description": "integer, in unit" },
                                "observed": { "type": "string", "description": "integer, in unit" },
                                "windowFrom": { "type": "string", "format": "date-time" },
                                "windowTo": { "type": "string", "format": "date-time" },
                                "explanation": { "type": "string" },
                                "detectedAt": { "type": "string", "format": "date-time" } } } } } })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn op(
    summary: &str,
    security: Option<&str>,
    params: &[&str],
    body: Option<Value>,
    responses: Value,
) -> Value {
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

/// `op` with several accepted credentials.
fn op_any(
    summary: &str,
    security: &[&str],
    params: &[&str],
    body: Option<Value>,
    responses: Value,
) -> Value {
    let mut o = op(summary, security.first().copied(), params, body, responses);
    if let Some(map) = o.as_object_mut() {
        map.insert(
            "security".into(),
            Value::Array(security.iter().map(|s| json!({ *s: [] })).collect()),
        );
    }
    o
}

fn approval_paths() -> Value {
    let approval = reference("Approval");
    let consume_refused = err(
        "APPROVAL_DENIED / APPROVAL_EXPIRED / APPROVAL_MISMATCH / APPROVAL_USED / APPROVAL_PENDING \
         (error also carries projectId); FORBIDDEN for a token of another role",
    );
    json!({
        "/v1/approvals": {
            "get": op_any("The queue: ?status=pending|approved|denied|used|expired&projectId=&limit= (approvers see their projects)",
                &["adminToken", "approverToken"], &[], None, json!({
                "200": ok_json("newest first", json!({ "type": "object", "properties": { "approvals": { "type": "array", "items": approval } } })),
                "400": err("BAD_QUERY") })),
            "post": op("Filter: create an approval for a held request (answers the agent 202 with its fields)", Some("syncSecret"), &[],
                Some(reference("CreateApproval")), json!({
                "201": ok_json("created, status pending", reference("Approval")),
                "400": err("BAD_APPROVAL with `path: reason` details, or BAD_JSON"),
                "404": err("no policy yet") }))
        },
        "/v1/approvals/{id}": { "get": op_any("One approval (an agent may read its own with x-pag0-api-key instead of a bearer token)",
            &["adminToken", "approverToken", "syncSecret", "apiKey"], &["id"], None, json!({
            "200": ok_json("the approval", reference("Approval")), "404": err("not found, or not yours") })) },
        "/v1/approvals/{id}/approve": { "post": op("Approve (approver listed on the project, never the requester)", Some("approverToken"), &["id"],
            Some(reference("Decision")), json!({
            "200": ok_json("approved", reference("Approval")), "404": err("not found"),
            "409": err("ALREADY_DECIDED / APPROVAL_EXPIRED") })) },
        "/v1/approvals/{id}/deny": { "post": op("Deny (approver listed on the project, never the requester)", Some("approverToken"), &["id"],
            Some(reference("Decision")), json!({
            "200": ok_json("denied", reference("Approval")), "404": err("not found"),
            "409": err("ALREADY_DECIDED / APPROVAL_EXPIRED") })) },
        "/v1/approvals/{id}/consume": { "post": op("Filter: use the approval for this replay (exactly once)", Some("syncSecret"), &["id"],
            Some(reference("Consume")), json!({
            "200": ok_json("this replay may pass; the approval is now used", reference("Approval")),
            "403": consume_refused })) }
    })
}

fn audit_paths() -> Value {
    let q = |name: &str, desc: &str| json!({ "name": name, "in": "query", "required": false, "description": desc, "schema": { "type": "string" } });
    let mut list = op(
        "The audit log in seq order, filtered, a page at a time (docs/audit.md)",
        ADMIN,
        &[],
        None,
        json!({
        "200": ok_json("a page; nextCursor is null on the last one", json!({ "type": "object", "required": ["entries", "nextCursor"], "properties": {
            "entries": { "type": "array", "items": reference("AuditEntry") },
            "nextCursor": { "type": ["string", "null"], "description": "pass as ?cursor= for the next page" } } })),
        "400": err("BAD_QUERY with `name: reason` details") }),
    );
    if let Some(o) = list.as_object_mut() {
        o.insert("parameters".into(), json!([
            q("kind", "policy.updated, project.created, client.key_rotated, approval.decided, audit.retention, …"),
            q("projectId", "exact"), q("clientId", "exact"), q("decision", "exact"), q("code", "exact"),
            q("from", "inclusive; RFC 3339 or unix ms (alias: since)"), q("since", "alias of from"),
            q("to", "exclusive; RFC 3339 or unix ms (alias: until)"), q("until", "alias of to"),
            q("cursor", "nextCursor of the previous page"), q("limit", "1 to 1000, default 100")]));
    }
    json!({
        "/v1/audit": { "get": list },
        "/v1/audit/head": { "get": op("The chain's head (seq and hash of the last entry) and the retention checkpoint, for external anchoring",
            ADMIN, &[], None, json!({ "200": ok_json("the head", reference("AuditHead")) })) },
        "/v1/audit/verify": { "get": op("Recompute the whole chain from the checkpoint: ok, or the first bad row and why",
            ADMIN, &[], None, json!({ "200": ok_json("the result (200 also when the chain is broken)", json!({
                "type": "object", "required": ["ok", "rowsChecked", "head", "firstBadRow"], "properties": {
                "ok": { "type": "boolean" }, "rowsChecked": { "type": "integer" }, "head": reference("AuditHead"),
                "firstBadRow": { "type": ["integer", "null"], "description": "seq of the first row that is missing, moved or edited" },
                "reason": { "type": ["string", "null"] } } })) })) }
    })
}

fn audit_schemas() -> Value {
    let hex = json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" });
    let s = json!({ "type": ["string", "null"] });
    let i = json!({ "type": ["integer", "null"] });
    json!({
        "AuditEntry": { "type": "object", "description": "hash = SHA-256(prevHash ‖ JCS(the entry without prevHash, hash and at)); money here is an integer (micro-USD, < 2^53) because it is hashed as such",
            "required": ["seq", "atMs", "kind", "details", "prevHash", "hash"], "properties": {
            "seq": { "type": "integer" }, "atMs": { "type": "integer" }, "at": { "type": "string", "format": "date-time", "description": "atMs for people; not hashed" },
            "kind": { "type": "string" }, "actor": s, "projectId": s, "clientId": s, "host": s, "model": s,
            "decision": s, "code": s, "estimate": i, "cost": i, "latencyMs": i, "policyVersion": i, "approvalId": s,
            "details": { "type": "object" }, "prevHash": hex, "hash": hex } },
        "AuditHead": { "type": "object", "properties": {
            "seq": { "type": "integer" }, "hash": hex,
            "checkpoint": { "type": "object", "properties": {
                "prunedThroughSeq": { "type": "integer" }, "prunedThroughHash": hex, "prunedCount": { "type": "integer" } } } } }
    })
}

fn approval_schemas() -> Value {
    let hex = json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" });
    json!({
        "Approval": { "type": "object", "required": ["approvalId", "status", "projectId", "estimatedCost", "expiresAt"], "properties": {
            "approvalId": { "type": "string" },
            "status": { "enum": ["pending", "approved", "denied", "used", "expired"] },
            "projectId": { "type": "string" }, "estimatedCost": reference("Micros"),
            "expiresAt": { "type": "string", "format": "date-time" },
            "clientId": { "type": "string" }, "method": { "type": "string" }, "authority": { "type": "string" },
            "path": { "type": "string" }, "bodySha256": hex, "policyVersion": { "type": "integer" },
            "justification": { "type": ["string", "null"] }, "requestedBy": { "type": ["string", "null"] },
            "callbackUrl": { "type": ["string", "null"] }, "createdAt": { "type": "string", "format": "date-time" },
            "decision": { "type": ["object", "null"], "properties": { "approved": { "type": "boolean" }, "by": { "type": "string" },
                "comment": { "type": ["string", "null"] }, "at": { "type": "string", "format": "date-time" } } },
            "usedAt": { "type": ["string", "null"], "format": "date-time" } } },
        "CreateApproval": { "type": "object",
            "required": ["projectId", "clientId", "method", "authority", "path", "bodySha256", "binding", "estimatedCost", "policyVersion", "requestedBy"],
            "properties": {
            "projectId": { "type": "string" }, "clientId": { "type": "string" }, "method": { "type": "string" },
            "authority": { "type": "string" }, "path": { "type": "string", "description": "with the query string" },
            "bodySha256": hex, "binding": { "type": "string", "pattern": "^[0-9a-f]{64}$", "description": "pag0_policy::approval::request_binding" },
            "estimatedCost": reference("Micros"), "policyVersion": { "type": "integer", "minimum": 1 },
            "justification": { "type": "string" }, "requestedBy": { "type": "string" },
            "callbackUrl": { "type": "string", "description": "the agent's x-pag0-callback-url" } } },
        "Consume": { "type": "object", "required": ["binding", "estimatedCost", "policyVersion"], "properties": {
            "binding": hex, "estimatedCost": reference("Micros"), "policyVersion": { "type": "integer" } } },
        "Decision": { "type": "object", "properties": { "comment": { "type": "string", "maxLength": 2000 } } }
    })
}

pub fn document() -> Value {
    let mut doc = base_document();
    if let (Some(paths), Some(extra)) = (
        doc.get_mut("paths").and_then(Value::as_object_mut),
        approval_paths().as_object(),
    ) {
        paths.extend(extra.clone());
    }
    if let (Some(paths), Some(extra)) = (
        doc.get_mut("paths").and_then(Value::as_object_mut),
        audit_paths().as_object(),
    ) {
        paths.extend(extra.clone());
    }
    if let (Some(schemas), Some(extra)) = (
        doc.pointer_mut("/components/schemas")
            .and_then(Value::as_object_mut),
        audit_schemas().as_object(),
    ) {
        schemas.extend(extra.clone());
    }
    if let (Some(paths), Some(extra)) = (
        doc.get_mut("paths").and_then(Value::as_object_mut),
        crate::console::openapi_paths().as_object(),
    ) {
        paths.extend(extra.clone());
    }
    if let (Some(schemas), Some(extra)) = (
        doc.pointer_mut("/components/schemas")
            .and_then(Value::as_object_mut),
        approval_schemas().as_object(),
    ) {
        schemas.extend(extra.clone());
    }
    // Alerts (routes/alerts.rs).
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        if let Some(extra) = crate::routes::alerts::openapi_paths().as_object() {
            paths.extend(extra.clone());
        }
    }
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        if let Some(extra) = crate::routes::alerts::openapi_schemas().as_object() {
            schemas.extend(extra.clone());
        }
    }
    doc
}

fn base_document() -> Value {
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
                "syncSecret": { "type": "http", "scheme": "bearer", "description": "--sync-secret, held by the Envoy filter" },
                "approverToken": { "type": "http", "scheme": "bearer", "description": "--approver-token EMAIL=TOKEN" },
                "apiKey": { "type": "apiKey", "in": "header", "name": "x-pag0-api-key", "description": "a client's API key (its own approvals)" },
                "sessionCookie": { "type": "apiKey", "in": "cookie", "name": "pag0_session",
                    "description": "a console session (POST /console/api/session); stands for the admin or approver token it was signed in with on every route that token may call; state-changing requests also send x-pag0-csrf" }
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
                        "at": { "type": "integer", "description": "unix ms; the time analytics count the record at" },
                        "cacheHit": { "type": "boolean", "default": false, "description": "served from the filter's cache (amount 0, no counters)" },
                        "savings": { "allOf": [reference("Micros")], "description": "micro-USD the cache hit avoided; stored, reported by /v1/analytics" },
                        "learn": learn_in_schema() } } },
                    "decisions": { "type": "array", "maxItems": 10000, "description": "decision events (pag0-wire DecisionEvent, docs/audit.md); each read on its own, a malformed one is kept as a decision.rejected audit row", "items": { "type": "object" } },
                    "gaps": { "type": "array", "maxItems": 1000, "description": "events the filter dropped past its cap: {from, to, count}", "items": { "type": "object", "required": ["from", "to", "count"], "properties": {
                        "from": { "type": "integer" }, "to": { "type": "integer" }, "count": { "type": "integer", "minimum": 1 } } } },
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
                    "unlimited": { "type": "array", "items": { "type": "string" } },
                    "learned": learned_out_schema() } },
                "UsageSums": { "type": "object", "required": ["totalCost", "totalRequests", "cacheHits", "cacheHitRate", "savings"], "properties": {
                    "totalCost": { "allOf": [reference("Micros")], "description": "sum of the settled costs" },
                    "totalRequests": { "type": "integer", "description": "usage records: requests with a cost above 0 plus cache hits (the filter reports no zero-cost misses)" },
                    "cacheHits": { "type": "integer" },
                    "cacheHitRate": { "type": ["number", "null"], "description": "cacheHits / totalRequests; null without requests" },
                    "savings": { "allOf": [reference("Micros")], "description": "what the cache hits avoided" } } },
                "Utilization": analytics_utilization_schema(),
                "AnalyticsGroup": analytics_group_schema(),
                "Analytics": analytics_schema()
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
            "/v1/usage/exceptions": { "get": op("Usage records kept aside: quarantined (malformed, applied to no counter) and suspect (charged at the bound), newest first; ?limit=1-1000 (default 100)", ADMIN, &[], None, json!({
                "200": ok_json("exceptions", json!({ "type": "object" })), "400": err("BAD_QUERY") })) },
            "/v1/budgets": { "get": op("Budget counters: limit, spent, leased, unallocated, leases per instance", ADMIN, &[], None, json!({
                "200": ok_json("counters", json!({ "type": "object" })) })) },
            "/v1/analytics": analytics_path(),
            "/v1/anomalies": { "get": {
                "summary": "Anomalies found by the periodic detection (docs/anomalies.md), newest window first: kind, project, client, \
                            score, baseline, observed, window and a one-line explanation.",
                "security": [{ "adminToken": [] }],
                "parameters": [
                    { "name": "project", "in": "query", "required": false, "schema": { "type": "string" } },
                    { "name": "since", "in": "query", "required": false, "schema": { "type": "string", "format": "date-time" },
                      "description": "only windows ending after this time" },
                    { "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } } ],
                "responses": {
                    "200": ok_json("the anomalies", anomalies_schema()),
                    "400": err("BAD_QUERY: bad since or limit, or an unknown parameter (details name it)"),
                    "401": err("missing or unknown bearer token"),
                    "403": err("token of another role") } } },
            "/v1/reports": { "get": {
                "summary": "The EU AI Act compliance report (docs/reports.md): policy versions in force, AI systems and spend per team \
                            against budget and per model, human oversight (incl. requests above the approval threshold that passed \
                            without one), record-keeping (decisions logged by kind, gap and rejected records), risk events \
                            (violations by code from the decision log), and complianceStatus from listed checks.",
                "security": [{ "adminToken": [] }],
                "parameters": [
                    { "name": "template", "in": "query", "required": false, "schema": { "enum": ["EU_AI_ACT_COMPLIANCE"], "default": "EU_AI_ACT_COMPLIANCE" } },
                    { "name": "format", "in": "query", "required": false, "schema": { "enum": ["json", "csv", "pdf"], "default": "json" } },
                    { "name": "period", "in": "query", "required": false, "schema": { "type": "string", "default": "month" },
                      "description": "month (the current calendar month, org timezone) or YYYY-MM; not with from/to" },
                    { "name": "from", "in": "query", "required": false, "schema": { "type": "string" }, "description": "RFC 3339 or YYYY-MM-DD (UTC), with to" },
                    { "name": "to", "in": "query", "required": false, "schema": { "type": "string" }, "description": "exclusive end, RFC 3339 or YYYY-MM-DD (UTC)" } ],
                "responses": {
                    "200": { "description": "the report",
                             "content": { "application/json": { "schema": { "type": "object" } },
                                          "text/csv": { "schema": { "type": "string" } },
                                          "application/pdf": { "schema": { "type": "string", "format": "binary" } } } },
                    "400": err("BAD_QUERY: unknown template, format or parameter, bad period"),
                    "401": err("missing or unknown bearer token"),
                    "403": err("token of another role") } } },
            "/v1/reports/send": { "post": {
                "summary": "Mail the report's PDF as an attachment to recipient, else the policy's alerts.recipients, over --smtp-url",
                "security": [{ "adminToken": [] }],
                "requestBody": { "required": false, "content": { "application/json": { "schema": {
                    "type": "object", "additionalProperties": false,
                    "properties": { "recipient": { "type": "string" }, "template": { "type": "string" },
                                    "period": { "type": "string" }, "from": { "type": "string" }, "to": { "type": "string" } } } } } },
                "responses": {
                    "200": ok_json("sent", json!({ "type": "object", "properties": {
                        "sent": { "type": "boolean" }, "to": { "type": "array", "items": { "type": "string" } },
                        "attachment": { "type": "string" }, "bytes": { "type": "integer" }, "complianceStatus": { "type": "string" } } })),
                    "400": err("BAD_JSON, BAD_QUERY, NO_RECIPIENT or BAD_RECIPIENT"),
                    "401": err("missing or unknown bearer token"),
                    "403": err("token of another role"),
                    "502": err("DELIVERY_FAILED: the SMTP relay refused or failed"),
                    "503": err("SMTP_NOT_CONFIGURED: no --smtp-url") } } },
            "/v1/openapi.json": { "get": op("This document", None, &[], None, json!({ "200": ok_json("OpenAPI 3.1", json!({ "type": "object" })) })) },
            "/metrics": { "get": op("Prometheus text exposition (loopback only unless --public-ops)", None, &[], None, json!({
                "200": { "description": "text/plain; version=0.0.4" }, "403": err("not loopback") })) },
            "/healthz": { "get": op("Liveness", None, &[], None, json!({ "200": ok_json("ok", json!({ "type": "object" })) })) },
            "/readyz": { "get": op("Readiness: the store answers", None, &[], None, json!({
                "200": ok_json("ready", json!({ "type": "object" })), "503": ok_json("store unreachable", json!({ "type": "object" })) })) }
        }
    })
}

fn analytics_utilization_schema() -> Value {
    json!({ "type": "object", "description": "one budget counter now, as /v1/budgets reports it",
                    "properties": {
                        "counter": { "type": "string" },
                        "spent": reference("Micros"),
                        "limit": { "oneOf": [reference("Micros"), { "type": "null" }], "description": "null: no such budget" },
                        "ratio": { "type": ["number", "null"], "description": "spent / limit" } } })
}

fn analytics_group_schema() -> Value {
    json!({ "allOf": [reference("UsageSums"), { "type": "object", "required": ["key"], "properties": {
                    "key": { "type": "string",
                      "description": "project id, cost centre, host, client id or model; `unassigned` when the record or the policy has none (every ledger sum is `unassigned` by model: the ledger records no model)" },
                    "violations": { "type": "object", "description": "denials in the decision log (decision deny)",
                        "properties": { "count": { "type": "integer" },
                          "byCode": { "type": "object", "additionalProperties": { "type": "integer" }, "description": "per SPEC code" } } },
                    "avgLatency": { "type": ["number", "null"], "description": "ms, mean upstream latency of forwarded requests (decision allow) that report one; cache hits are apart (cacheHitLatency); null without any" },
                    "p95Latency": { "type": ["integer", "null"], "description": "ms, nearest-rank 95th percentile of the same latencies, from a histogram of two significant digits: an observed latency, at or above the exact value and less than 10 % over it" },
                    "latencySamples": { "type": "integer", "description": "forwarded requests with a latency" },
                    "cacheHitLatency": { "type": "object", "description": "the same for cache hits (decision cache_hit)",
                        "properties": { "avg": { "type": ["number", "null"] }, "p95": { "type": ["integer", "null"] }, "samples": { "type": "integer" } } },
                    "topEndpoints": { "type": "array", "description": "at most 3, most expensive first",
                        "items": { "type": "object", "properties": { "endpoint": { "type": "string" },
                          "totalCost": reference("Micros"), "totalRequests": { "type": "integer" } } } },
                    "budgetUtilization": { "type": "object", "description": "project groups only: the current month's and day's counters",
                        "properties": { "month": reference("Utilization"), "day": reference("Utilization") } } } }] })
}

fn learn_in_schema() -> Value {
    json!({ "type": "object", "required": ["key", "estimate"],
            "description": "a believed cost report of a catalogue entry that learns (docs/estimates.md); a malformed one is not learned from, the record is applied",
            "properties": {
                "key": { "type": "string", "maxLength": 255, "description": "the catalogue entry (its host)" },
                "estimate": reference("Micros") } })
}

fn learned_out_schema() -> Value {
    json!({ "type": "object", "description": "the fleet's learned estimates per catalogue entry (docs/estimates.md); absent when none",
            "additionalProperties": { "type": "object", "required": ["highPermille", "samples"], "properties": {
                "highPermille": { "type": "string", "pattern": "^[0-9]+$", "description": "decaying high of actual/estimate, per-mille" },
                "samples": { "type": "integer" } } } })
}

fn estimates_schema() -> Value {
    json!({ "type": "array", "description": "per catalogue entry that learns, fleet-wide since the store began (docs/estimates.md)",
            "items": { "type": "object", "properties": {
                "endpoint": { "type": "string", "description": "the catalogue entry's host" },
                "key": { "type": "string", "description": "host@pricing: the learn key (a price change starts a new one)" },
                "samples": { "type": "integer" },
                "estimateSum": reference("Micros"), "actualSum": reference("Micros"),
                "ratioPermille": { "type": ["string", "null"], "description": "Σ actual × 1000 / Σ estimate" },
                "learnedPermille": { "type": "string", "description": "the current decaying high, per-mille" },
                "updatedAt": { "type": "string", "format": "date-time" } } } })
}

fn analytics_schema() -> Value {
    json!({ "type": "object", "properties": {
                    "period": { "enum": ["day", "month", "range"] },
                    "periodKey": { "type": "string", "description": "2026-11 or 2026-11-24, as in the budget counters (not for a range)" },
                    "timezone": { "type": "string", "description": "the org's (policy `timezone`), UTC without a policy" },
                    "from": { "type": "string", "format": "date-time" },
                    "to": { "type": "string", "format": "date-time", "description": "exclusive" },
                    "dimensions": { "type": "array", "items": { "enum": ["project", "costCenter", "endpoint", "client", "model"] } },
                    "sections": { "type": "array", "description": "one per dimension, in groupBy order", "items": { "type": "object", "properties": {
                        "groupBy": { "type": "string" },
                        "groups": { "type": "array", "description": "most expensive first", "items": reference("AnalyticsGroup") },
                        "series": { "type": "array", "description": "with interval: per group key, the points with usage",
                            "items": { "type": "object", "properties": { "key": { "type": "string" },
                              "points": { "type": "array", "items": { "allOf": [reference("UsageSums"), { "type": "object",
                                "properties": { "start": { "type": "string", "format": "date-time" } } }] } } } } } } } },
                    "groupBy": { "enum": ["project", "costCenter", "endpoint", "client", "model"], "description": "the first dimension (as before sections)" },
                    "groups": { "type": "array", "description": "the first dimension's groups", "items": reference("AnalyticsGroup") },
                    "policyVersion": { "type": "integer", "description": "the policy cost centres and limits were read from" },
                    "total": { "allOf": [reference("UsageSums"), { "type": "object", "properties": {
                        "topEndpoints": { "type": "array" },
                        "violations": { "type": "object", "description": "as in a group, over every decision row" },
                        "avgLatency": { "type": ["number", "null"] }, "p95Latency": { "type": ["integer", "null"] },
                        "latencySamples": { "type": "integer" }, "cacheHitLatency": { "type": "object" },
                        "budgetUtilization": { "type": "object", "description": "the org's month and day counters",
                            "properties": { "month": reference("Utilization"), "day": reference("Utilization") } } } }] },
                    "totalBudget": { "oneOf": [reference("Micros"), { "type": "null" }], "description": "the org's monthly budget" },
                    "utilizationRate": { "type": ["number", "null"], "description": "org month spent / totalBudget" },
                    "recommendations": { "type": "array", "items": { "type": "object", "required": ["rule", "message", "numbers"], "properties": {
                        "rule": { "enum": ["budget-run-rate-over", "budget-run-rate-under", "cache-hit-rate-low", "approvals-always-granted", "client-denied-repeatedly", "catalogue-price-off"] },
                        "projectId": { "type": ["string", "null"], "description": "null: the organisation" },
                        "message": { "type": "string" },
                        "numbers": { "type": "object", "description": "what the rule computed from" } } } },
                    "estimates": estimates_schema(),
                    "interval": { "enum": ["hour", "day"] },
                    "buckets": { "type": "array", "description": "with interval: every bucket start of the range", "items": { "type": "string", "format": "date-time" } },
                    "totalSeries": { "type": "array", "description": "with interval: the total per bucket with usage" } } })
}

fn analytics_path() -> Value {
    json!({ "get": {
                "summary": "Cost, requests, cache hits, savings, top endpoints and budget utilisation per group of each dimension and in total, \
                            over the current day or month (org timezone) or a from/to range; violations (denials by code) and upstream latency \
                            (avgLatency, p95Latency; cache hits apart) from the decision log; recommendations; a series with interval; CSV with format=csv.",
                "security": [{ "adminToken": [] }],
                "parameters": [
                    { "name": "period", "in": "query", "required": false, "schema": { "enum": ["day", "month"], "default": "month" },
                      "description": "not with from/to" },
                    { "name": "from", "in": "query", "required": false, "schema": { "type": "string", "format": "date-time" },
                      "description": "RFC 3339, with to" },
                    { "name": "to", "in": "query", "required": false, "schema": { "type": "string", "format": "date-time" },
                      "description": "RFC 3339, exclusive, after from" },
                    { "name": "groupBy", "in": "query", "required": false, "schema": { "type": "string", "default": "project" },
                      "description": "comma list of project, costCenter, endpoint, client, model (one section each); costCenter: the client's \
                                      tags.costCenter in the current policy, else its project's; model: the decision events' model" },
                    { "name": "interval", "in": "query", "required": false, "schema": { "enum": ["hour", "day"] },
                      "description": "add a series (org timezone buckets), at most 5000 points" },
                    { "name": "format", "in": "query", "required": false, "schema": { "enum": ["json", "csv"], "default": "json" },
                      "description": "csv: dimension,key,start,totalCost,totalRequests,cacheHits,cacheHitRate,savings,violations,avgLatency,p95Latency (the last three empty on series rows)" } ],
                "responses": {
                    "200": ok_json("the sums", reference("Analytics")),
                    "400": err("BAD_QUERY: unknown period, groupBy, interval or format, a bad range, too many points (details name each)"),
                    "401": err("missing or unknown bearer token"),
                    "403": err("token of another role") } } })
}

#[cfg(test)]
mod tests;
