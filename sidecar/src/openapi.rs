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

/// `o` with `params` appended to its parameters.
fn with_params(mut o: Value, params: Value) -> Value {
    if let (Some(map), Some(extra)) = (o.as_object_mut(), params.as_array()) {
        let list = map.entry("parameters").or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            list.extend(extra.iter().cloned());
        }
    }
    o
}

/// `?limit=`: 1 to 1000, default 100 (every list route).
fn limit_param() -> Value {
    json!({ "name": "limit", "in": "query", "required": false, "description": "1 to 1000 (else 400 BAD_QUERY)",
            "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } })
}

/// The five operations of `/v1/projects` or `/v1/clients`: (list + create, one item).
/// `item` is the stored item's schema, `new` the create body's, `created` the 201 body's.
fn item_ops(noun: &str, plural: &str, item: &str, new: &str, created: Value) -> (Value, Value) {
    let schema = reference(item);
    let conflict = "VERSION_CONFLICT: other writers won five times in a row; retry";
    let list = json!({
        "get": op(&format!("List {plural}"), ADMIN, &[], None, json!({
            "200": ok_json(&format!("the {plural} of the latest policy"), json!({ "type": "array", "items": schema })),
            "404": err("no policy yet") })),
        "post": op(&format!("Create a {noun}; the whole document is re-validated and versioned (x-pag0-policy-version)"), ADMIN, &[],
            Some(reference(new)), json!({
            "201": ok_json("created", created),
            "400": err("INVALID_POLICY with `path: reason` details (a missing id, an unknown field, …), BAD_JSON or KEY_GENERATED_BY_SIDECAR"),
            "404": err("no policy yet"),
            "409": err(&format!("ALREADY_EXISTS, or {conflict}")) })),
    });
    let patch = format!("{}Patch", capitalised(noun));
    let one = json!({
        "get": op(&format!("One {noun}"), ADMIN, &["id"], None, json!({
            "200": ok_json(noun, schema.clone()), "404": err("no policy yet, or no such id") })),
        "patch": op(&format!("Edit a {noun} with a JSON merge patch (RFC 7396) of its top-level fields"), ADMIN, &["id"],
            Some(reference(&patch)), json!({
            "200": ok_json(&format!("the {noun} after the patch"), schema.clone()),
            "400": err("INVALID_POLICY (the patched document, or an unknown field) / ID_IMMUTABLE / KEY_IMMUTABLE / BAD_JSON"),
            "404": err("no policy yet, or no such id"), "409": err(conflict) })),
        "delete": op(&format!("Delete a {noun}"), ADMIN, &["id"], None, json!({
            "204": { "description": "deleted; header x-pag0-policy-version names the new version" },
            "400": err("INVALID_POLICY: the document without it does not validate (e.g. clients still reference the project)"),
            "404": err("no policy yet, or no such id"), "409": err(conflict) })),
    });
    (list, one)
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
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
        "APPROVAL_DENIED / APPROVAL_EXPIRED / APPROVAL_MISMATCH (also: no such id) / APPROVAL_USED / APPROVAL_PENDING \
         (error also carries projectId); FORBIDDEN for a token of another role",
    );
    let q = |name: &str, schema: Value| json!({ "name": name, "in": "query", "required": false, "schema": schema });
    let decision_body = |o: Value| -> Value {
        // An empty body is a decision without a comment.
        let mut o = o;
        if let Some(rb) = o.pointer_mut("/requestBody/required") {
            *rb = json!(false);
        }
        o
    };
    let decide = |verb: &str, done: &str| {
        decision_body(op(
            &format!("{verb} (an approver listed on the project, never the requester)"),
            Some("approverToken"),
            &["id"],
            Some(reference("Decision")),
            json!({
        "200": ok_json(done, reference("Approval")),
        "400": err("BAD_JSON: not the Decision object, an unknown field, a comment over 2000 characters"),
        "403": err("FORBIDDEN: not an approver token, or an approver not listed on the project, or the requester"),
        "404": err("no such approval, or no policy yet"),
        "409": err("ALREADY_DECIDED / APPROVAL_EXPIRED") }),
        ))
    };
    json!({
        "/v1/approvals": {
            "get": with_params(op_any("The queue, newest first (approvers see their projects' only; the filter's sync secret reads all)",
                &["adminToken", "approverToken", "syncSecret"], &[], None, json!({
                "200": ok_json("newest first", json!({ "type": "object", "required": ["approvals"], "properties": { "approvals": { "type": "array", "items": approval } } })),
                "400": err("BAD_QUERY: an unknown status, a limit out of 1..1000, an unknown parameter") })),
                json!([q("status", json!({ "enum": ["pending", "approved", "denied", "used", "expired"] })),
                       q("projectId", json!({ "type": "string" })), limit_param()])),
            "post": op("Filter: create an approval for a held request (answers the agent 202 with its fields)", Some("syncSecret"), &[],
                Some(reference("CreateApproval")), json!({
                "201": ok_json("created, status pending", reference("Approval")),
                "400": err("BAD_APPROVAL with `path: reason` details, or BAD_JSON"),
                "404": err("no policy yet") }))
        },
        "/v1/approvals/{id}": { "get": op_any("One approval (an agent may read its own with x-pag0-api-key instead of a bearer token)",
            &["adminToken", "approverToken", "syncSecret", "apiKey"], &["id"], None, json!({
            "200": ok_json("the approval", reference("Approval")), "404": err("not found, or not yours") })) },
        "/v1/approvals/{id}/approve": { "post": decide("Approve", "approved") },
        "/v1/approvals/{id}/deny": { "post": decide("Deny", "denied") },
        "/v1/approvals/{id}/consume": { "post": op("Filter: use the approval for this replay (exactly once)", Some("syncSecret"), &["id"],
            Some(reference("Consume")), json!({
            "200": ok_json("this replay may pass; the approval is now used", reference("Approval")),
            "400": err("BAD_JSON"),
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
            q("cursor", "nextCursor of the previous page (of the same order)"), limit_param(),
            json!({ "name": "order", "in": "query", "required": false, "description": "asc: oldest first (the default); desc: newest first",
                "schema": { "type": "string", "enum": ["asc", "desc"], "default": "asc" } })]));
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
        "CreateApproval": { "type": "object", "additionalProperties": true,
            "description": "sent by the filter: unknown fields are ignored (a newer filter may send more than this sidecar knows)",
            "required": ["projectId", "clientId", "method", "authority", "path", "bodySha256", "binding", "estimatedCost", "policyVersion", "requestedBy"],
            "properties": {
            "projectId": { "type": "string" }, "clientId": { "type": "string" }, "method": { "type": "string", "minLength": 1, "maxLength": 16 },
            "authority": { "type": "string", "minLength": 1, "maxLength": 255 }, "path": { "type": "string", "pattern": "^/", "maxLength": 8192, "description": "with the query string" },
            "bodySha256": hex, "binding": { "type": "string", "pattern": "^[0-9a-f]{64}$", "description": "pag0_policy::approval::request_binding" },
            "estimatedCost": reference("MicrosIn"), "policyVersion": { "type": "integer", "minimum": 1, "maximum": 9_223_372_036_854_775_807_i64 },
            "justification": { "type": ["string", "null"], "maxLength": 2000 },
            "requestedBy": { "type": "string", "description": "one e-mail address (the agent's x-pag0-requested-by)" },
            "callbackUrl": { "type": ["string", "null"], "maxLength": 2048, "description": "the agent's x-pag0-callback-url, http:// or https://" } } },
        "Consume": { "type": "object", "additionalProperties": true, "required": ["binding", "estimatedCost", "policyVersion"],
            "description": "sent by the filter: unknown fields are ignored",
            "properties": { "binding": { "type": "string" }, "estimatedCost": reference("MicrosIn"), "policyVersion": { "type": "integer", "minimum": 0, "maximum": 9_223_372_036_854_775_807_i64 } } },
        "Decision": { "type": "object", "additionalProperties": false,
            "properties": { "comment": { "type": ["string", "null"], "maxLength": 2000 } } }
    })
}

/// What every operation of a kind can answer, added where its own list does not say it:
/// 401/403 on authenticated operations, 400 on operations with path or query parameters (a
/// `%00` in one), 413 on operations with a body (over 8 MiB; axum's plain-text refusal), 500 (a bug) and 503 (the store does not answer) on `/v1` routes.
fn common_responses(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, ops) in paths.iter_mut() {
        let Some(ops) = ops.as_object_mut() else {
            continue;
        };
        for op in ops.values_mut() {
            let secured = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty());
            let body = op.get("requestBody").is_some();
            let params = op.get("parameters").is_some();
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            let mut add = |status: &str, v: Value| {
                responses.entry(status).or_insert(v);
            };
            if secured {
                add("401", err("UNAUTHORIZED: missing or unknown credentials"));
                add("403", err("FORBIDDEN: a credential of another role"));
            }
            if params {
                add(
                    "400",
                    err("BAD_REQUEST: a path or query value holds U+0000 (%00)"),
                );
            }
            if body {
                add(
                    "413",
                    json!({ "description": "the body is over 8 MiB",
                    "content": { "text/plain": { "schema": { "type": "string" } } } }),
                );
            }
            if path.starts_with("/v1/") && path != "/v1/openapi.json" {
                add(
                    "500",
                    err("INTERNAL: a fault of this sidecar (its cause is logged, never answered)"),
                );
                add(
                    "503",
                    err("STORE_UNAVAILABLE: the store did not answer; retry"),
                );
            }
        }
    }
}

pub fn document() -> Value {
    let mut doc = base_document();
    if let (Some(schemas), Some(extra)) = (
        doc.pointer_mut("/components/schemas")
            .and_then(Value::as_object_mut),
        policy_schemas::schemas().as_object(),
    ) {
        schemas.extend(extra.clone());
    }
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
    common_responses(&mut doc);
    doc
}

fn base_document() -> Value {
    let (projects, project) = item_ops(
        "project",
        "projects",
        "Project",
        "Project",
        reference("Project"),
    );
    let client_created = json!({
        "type": "object", "required": ["client", "apiKey"],
        "properties": { "client": reference("Client"),
                        "apiKey": { "type": "string", "description": "shown once; only its SHA-256 is stored" } } });
    let (clients, client) = item_ops(
        "client",
        "clients",
        "Client",
        "NewClient",
        client_created.clone(),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "pag0 sidecar",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Control service of Pag0's managed mode. Money is integer micro-USD: decimal strings in answers; \
                            requests may also write a non-negative integer (MicrosIn). \
                            Errors are {\"error\": {\"code\", \"message\", \"details\"}}. \
                            Unknown fields: refused in every body an operator writes (the policy, projects, clients, decisions, \
                            report mail, console sign-in: additionalProperties false) and among the query parameters of every operation that lists some (400 BAD_QUERY); \
                            ignored in the bodies the Envoy filter sends (sync, approvals create/consume), so a newer filter \
                            still talks to an older sidecar."
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
                "SyncRequest": { "type": "object", "required": ["instanceId", "seq"], "additionalProperties": true,
                    "description": "Unknown fields are ignored (unlike in the policy document): a newer filter may send more than this sidecar knows. \
                                    Each usage record, decision and gap is read on its own: a malformed one is kept aside (quarantined usage in \
                                    /v1/usage/exceptions, a decision.rejected audit row) and never refuses the batch, so their items are not constrained here.",
                    "properties": {
                    "instanceId": { "type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$" },
                    "seq": { "type": "integer", "minimum": 1, "maximum": 9_223_372_036_854_775_807_i64, "description": "per instance; a retry resends the same seq and usage" },
                    "policyVersion": { "type": "integer", "minimum": 0, "maximum": 9_223_372_036_854_775_807_i64, "description": "version the filter runs, 0 = none" },
                    "usage": { "type": "array", "maxItems": 10000, "description": "usage records: {amount (MicrosIn), counters (at most 8 BudgetKey::storage_key), projectId, clientId, host, \
                        at (unix ms), cacheHit, savings (MicrosIn), suspect {raw, reason}, learn {key, estimate} (docs/estimates.md)}; a malformed record is quarantined", "items": {} },
                    "decisions": { "type": "array", "maxItems": 10000, "description": "decision events (pag0-wire DecisionEvent, docs/audit.md); a malformed one is kept as a decision.rejected audit row", "items": {} },
                    "gaps": { "type": "array", "maxItems": 1000, "description": "events the filter dropped past its cap: {from, to, count}; a malformed one is kept as a rejected audit row", "items": {} },
                    "leases": { "type": "array", "maxItems": 64, "items": { "type": "object", "required": ["counter"], "properties": {
                        "counter": { "type": "string", "description": "a counter key (else 400 BAD_SYNC)" },
                        "want": { "oneOf": [reference("MicrosIn"), { "type": "null" }], "description": "total room to hold; default 1/16 of the limit" } } } },
                    "release": { "type": "array", "maxItems": 64, "items": { "type": "string" } } } },
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
                "AnalyticsAnomalies": analytics_anomalies_schema(),
                "AnalyticsPoint": analytics_point_schema(),
                "Analytics": analytics_schema()
            }
        },
        "paths": {
            "/v1/policy": {
                "get": op("The latest policy document (ETag and x-pag0-policy-version name its version)", ADMIN, &[], None, json!({
                    "200": ok_json("the document", reference("PolicyDocument")), "404": err("no policy yet") })),
                "put": with_params(op("Replace the whole document: validated, stored as a new version (If-Match: \"N\" to guard)", ADMIN, &[],
                    Some(reference("PolicyDocument")), json!({
                    "200": ok_json("the new version (or, for the document already stored, the same with unchanged: true)", reference("PolicyMeta")),
                    "400": err("INVALID_POLICY with every `path: reason` (an empty body, a missing orgId, an unknown field, …), or BAD_IF_MATCH"),
                    "409": err("VERSION_CONFLICT (If-Match no longer the latest)") })),
                    json!([{ "name": "If-Match", "in": "header", "required": false,
                             "description": "write only if this version is still the latest: \"3\" or 3 (else 409); anything else is 400 BAD_IF_MATCH",
                             "schema": { "type": "string", "pattern": "^\\s*(W/)?(\"[0-9]{1,18}\"|[0-9]{1,18})\\s*$" } }]))
            },
            "/v1/policy/versions": { "get": op("Version history, newest first (at most 1000)", ADMIN, &[], None, json!({
                "200": ok_json("versions", json!({ "type": "object", "required": ["versions"], "properties": { "versions": { "type": "array", "items": reference("PolicyMeta") } } })) })) },
            "/v1/policy/versions/{version}": { "get": with_params(op("One past version of the document", ADMIN, &[], None, json!({
                "200": ok_json("the document", reference("PolicyDocument")),
                "400": err("BAD_VERSION: not an integer"),
                "404": err("no such version") })),
                json!([{ "name": "version", "in": "path", "required": true, "schema": { "type": "integer", "minimum": -9_223_372_036_854_775_807_i64, "maximum": 9_223_372_036_854_775_807_i64 } }])) },
            "/v1/projects": projects,
            "/v1/projects/{id}": project,
            "/v1/clients": clients,
            "/v1/clients/{id}": client,
            "/v1/clients/{id}/rotate-key": { "post": op("A new API key for a client (returned once)", ADMIN, &["id"], None, json!({
                "200": ok_json("the client and its new key", client_created),
                "404": err("no policy yet, or no such client"),
                "409": err("VERSION_CONFLICT: other writers won five times in a row; retry") })) },
            "/v1/sync": { "post": op("Filter sync: usage batch in (exactly once per instanceId+seq), policy and budget leases out",
                Some("syncSecret"), &[], Some(reference("SyncRequest")), json!({
                "200": ok_json("acknowledged: the batch is durably committed", reference("SyncResponse")),
                "400": err("BAD_SYNC with details, BAD_JSON, or AMOUNT_OUT_OF_RANGE"), "409": err("SEQ_REUSED: same seq, different usage") })) },
            "/v1/usage/exceptions": { "get": with_params(op("Usage records kept aside: quarantined (malformed, applied to no counter) and suspect (charged at the bound), newest first", ADMIN, &[], None, json!({
                "200": ok_json("exceptions", exceptions_schema()),
                "400": err("BAD_QUERY: a limit out of 1..1000 or an unknown parameter") })),
                json!([limit_param()])) },
            "/v1/budgets": { "get": op("Budget counters: limit, spent, leased, unallocated, leases per instance", ADMIN, &[], None, json!({
                "200": ok_json("counters", budgets_schema()) })) },
            "/v1/analytics": analytics_path(),
            "/v1/anomalies": { "get": {
                "summary": "Anomalies found by the periodic detection (docs/anomalies.md), newest window first: kind, project, client, \
                            score, baseline, observed, window and a one-line explanation.",
                "security": [{ "adminToken": [] }],
                "parameters": [
                    { "name": "project", "in": "query", "required": false, "schema": { "type": "string" } },
                    { "name": "since", "in": "query", "required": false, "schema": { "type": "string", "format": "date-time" },
                      "description": "only windows ending after this time" },
                    { "name": "until", "in": "query", "required": false, "schema": { "type": "string", "format": "date-time" },
                      "description": "only windows starting before this time (with since: the windows overlapping [since, until), what /v1/analytics counts for that range)" },
                    { "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } } ],
                "responses": {
                    "200": ok_json("the anomalies", anomalies_schema()),
                    "400": err("BAD_QUERY: bad since, until or limit, or an unknown parameter (details name it)"),
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
                "200": { "description": "the metrics", "content": { "text/plain": { "schema": { "type": "string" } } } },
                "403": err("not loopback") })) },
            "/healthz": { "get": op("Liveness", None, &[], None, json!({ "200": ok_json("ok", json!({ "type": "object", "required": ["status"], "properties": { "status": { "const": "ok" } } })), "403": err("not loopback") })) },
            "/readyz": { "get": op("Readiness: the store answers", None, &[], None, json!({
                "200": ok_json("ready", json!({ "type": "object", "required": ["status", "store"], "properties": { "status": { "const": "ready" }, "store": { "type": "string" } } })),
                "403": err("not loopback"),
                "503": ok_json("store unreachable", json!({ "type": "object", "required": ["status", "store"], "properties": { "status": { "const": "unavailable" }, "store": { "type": "string" } } })) })) }
        }
    })
}

/// `GET /v1/budgets`'s answer.
fn budgets_schema() -> Value {
    json!({ "type": "object", "required": ["policyVersion", "counters"], "properties": {
                    "policyVersion": { "type": "integer" },
                    "counters": { "type": "array", "items": { "type": "object", "properties": {
                        "counter": { "type": "string" }, "scope": { "type": ["string", "null"] }, "projectId": { "type": ["string", "null"] },
                        "period": { "type": ["string", "null"] },
                        "limit": { "oneOf": [reference("Micros"), { "type": "null" }], "description": "null: no such budget in the current policy" },
                        "spent": reference("Micros"), "leased": reference("Micros"),
                        "unallocated": { "oneOf": [reference("Micros"), { "type": "null" }] },
                        "updatedAt": { "type": "string", "format": "date-time" },
                        "leases": { "type": "array", "items": { "type": "object", "properties": {
                            "instanceId": { "type": "string" }, "granted": reference("Micros"),
                            "expiresAt": { "type": "string", "format": "date-time" } } } } } } } } })
}

/// `GET /v1/usage/exceptions`'s answer.
fn exceptions_schema() -> Value {
    json!({ "type": "object", "required": ["exceptions"], "properties": { "exceptions": { "type": "array", "items": {
                    "type": "object", "properties": {
                        "kind": { "enum": ["quarantined", "suspect"] }, "instanceId": { "type": "string" }, "seq": { "type": "integer" },
                        "index": { "type": "integer" }, "reason": { "type": "string" }, "record": { "description": "the record as sent (a string when it was not JSON)" },
                        "committedAt": { "type": "string", "format": "date-time" } } } } } })
}

fn analytics_utilization_schema() -> Value {
    json!({ "type": "object", "description": "one budget counter now, as /v1/budgets reports it",
                    "properties": {
                        "counter": { "type": "string" },
                        "spent": reference("Micros"),
                        "limit": { "oneOf": [reference("Micros"), { "type": "null" }], "description": "null: no such budget" },
                        "ratio": { "type": ["number", "null"], "description": "spent / limit" } } })
}

/// A group's (or the total's) anomalies in `/v1/analytics`.
fn analytics_anomalies_schema() -> Value {
    json!({ "type": "object", "required": ["count", "byKind", "latest"],
            "description": "stored anomalies whose window overlaps the range (GET /v1/anomalies?since=from&until=to lists the same);                             by project, cost centre (the client's, else the project's) and in total all of them; by client only those                             naming a client, by endpoint only new_endpoint (its host), by model none",
            "properties": {
                "count": { "type": "integer" },
                "byKind": { "type": "object", "additionalProperties": { "type": "integer" },
                    "description": "spend_spike, request_spike, costly_request, new_endpoint, off_hours_burst (kinds present only)" },
                "latest": { "type": "array", "description": "at most 3, newest window first", "items": { "type": "object",
                    "required": ["kind", "projectId", "clientId", "subject", "score", "unit", "observed", "baseline", "window", "explanation", "at"],
                    "properties": {
                        "kind": { "enum": ["spend_spike", "request_spike", "costly_request", "new_endpoint", "off_hours_burst"] },
                        "projectId": { "type": "string" },
                        "clientId": { "type": ["string", "null"] },
                        "subject": { "type": ["string", "null"] },
                        "score": { "type": "number" },
                        "unit": { "enum": ["usd_micros", "requests"] },
                        "observed": { "type": "string", "description": "integer, in unit" },
                        "baseline": { "type": "string", "description": "integer, in unit" },
                        "window": { "type": "object", "properties": {
                            "from": { "type": "string", "format": "date-time" }, "to": { "type": "string", "format": "date-time" } } },
                        "explanation": { "type": "string" },
                        "at": { "type": "string", "format": "date-time", "description": "when detection found it" } } } } } })
}

/// One series point of `/v1/analytics`.
fn analytics_point_schema() -> Value {
    json!({ "allOf": [reference("UsageSums"), { "type": "object", "properties": {
                "start": { "type": "string", "format": "date-time" },
                "violations": { "type": "object", "description": "denials of the bucket's decision rows",
                    "properties": { "count": { "type": "integer" },
                      "byCode": { "type": "object", "additionalProperties": { "type": "integer" } } } },
                "avgLatency": { "type": ["number", "null"], "description": "ms, forwarded requests of the bucket, as in a group" },
                "p95Latency": { "type": ["integer", "null"] },
                "latencySamples": { "type": "integer" },
                "cacheHitLatency": { "type": "object" } } }] })
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
                    "anomalies": reference("AnalyticsAnomalies"),
                    "budgetUtilization": { "type": "object", "description": "project groups only: the current month's and day's counters",
                        "properties": { "month": reference("Utilization"), "day": reference("Utilization") } } } }] })
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
                        "series": { "type": "array", "description": "with interval: per group key, the points with usage or decision rows",
                            "items": { "type": "object", "properties": { "key": { "type": "string" },
                              "points": { "type": "array", "items": reference("AnalyticsPoint") } } } } } } },
                    "groupBy": { "enum": ["project", "costCenter", "endpoint", "client", "model"], "description": "the first dimension (as before sections)" },
                    "groups": { "type": "array", "description": "the first dimension's groups", "items": reference("AnalyticsGroup") },
                    "policyVersion": { "type": "integer", "description": "the policy cost centres and limits were read from" },
                    "total": { "allOf": [reference("UsageSums"), { "type": "object", "properties": {
                        "topEndpoints": { "type": "array" },
                        "violations": { "type": "object", "description": "as in a group, over every decision row" },
                        "avgLatency": { "type": ["number", "null"] }, "p95Latency": { "type": ["integer", "null"] },
                        "latencySamples": { "type": "integer" }, "cacheHitLatency": { "type": "object" },
                        "anomalies": reference("AnalyticsAnomalies"),
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
                    "totalSeries": { "type": "array", "description": "with interval: the total per bucket with usage or decision rows",
                        "items": reference("AnalyticsPoint") } } })
}

fn analytics_path() -> Value {
    json!({ "get": {
                "summary": "Cost, requests, cache hits, savings, top endpoints and budget utilisation per group of each dimension and in total, \
                            over the current day or month (org timezone) or a from/to range; violations (denials by code) and upstream latency \
                            (avgLatency, p95Latency; cache hits apart) from the decision log; stored anomalies (count, byKind, latest); recommendations; \
                            a series with interval (ledger sums, violations and latency per bucket); CSV with format=csv.",
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
                      "description": "csv: dimension,key,start,totalCost,totalRequests,cacheHits,cacheHitRate,savings,violations,avgLatency,p95Latency,anomalies (anomalies empty on series rows)" } ],
                "responses": {
                    "200": { "description": "the sums (CSV with format=csv)", "content": {
                        "application/json": { "schema": reference("Analytics") },
                        "text/csv": { "schema": { "type": "string" } } } },
                    "400": err("BAD_QUERY: unknown period, groupBy, interval or format, a bad range, too many points (details name each)"),
                    "401": err("missing or unknown bearer token"),
                    "403": err("token of another role") } } })
}

mod policy_schemas;

#[cfg(test)]
mod conformance_tests;
#[cfg(test)]
mod tests;
