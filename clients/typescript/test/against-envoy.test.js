// @pag0/client against real Envoy + pag0-sidecar + mock upstream, started by
// `cargo test -p pag0-envoy --test clients` (envoy/tests/clients.rs), which passes addresses
// and keys in the environment. Run outside it, the tests fail with that hint.
import assert from "node:assert/strict";
import { test } from "node:test";

import * as pag0 from "../src/index.js";

const VARS = ["PAG0_PROXY_URL", "PAG0_SIDECAR_URL", "PAG0_MOCK_URL", "PAG0_ADMIN_TOKEN", "PAG0_APPROVER_TOKEN",
  "PAG0_KEY_APPROVAL", "PAG0_KEY_BUDGET", "PAG0_KEY_OPEN"];
const missing = VARS.filter((v) => !process.env[v]);
const env = Object.fromEntries(VARS.map((v) => [v, process.env[v] ?? ""]));
const TRANSLATE = "https://api.deepl.com/v2/translate";
const FAST = { timeoutMs: 30_000, initialDelayMs: 100, maxDelayMs: 500 };

function stack() {
  assert.deepEqual(missing, [], "run these tests through `cargo test -p pag0-envoy --test clients`");
  return env;
}

async function approval(id) {
  const r = await fetch(`${env.PAG0_SIDECAR_URL}/v1/approvals/${id}`, {
    headers: { authorization: `Bearer ${env.PAG0_ADMIN_TOKEN}` },
  });
  assert.equal(r.status, 200);
  return r.json();
}

async function decide(id, action) {
  const r = await fetch(`${env.PAG0_SIDECAR_URL}/v1/approvals/${id}/${action}`, {
    method: "POST",
    headers: { authorization: `Bearer ${env.PAG0_APPROVER_TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify({ comment: "node --test" }),
  });
  return r.status;
}

async function arrived(path) {
  const r = await fetch(`${env.PAG0_MOCK_URL}/__stats`);
  return (await r.json()).arrived[path] ?? 0;
}

/** An approver who decides concurrently once the client waits: sees it pending, then acts. */
function approver(action) {
  const a = { seen: [], done: null, pendingSeen: false, status: null };
  a.onPending = (p) => {
    a.seen.push(p);
    a.done = (async () => {
      a.pendingSeen = (await approval(p.approvalId)).status === "pending";
      a.status = await decide(p.approvalId, action);
    })();
  };
  return a;
}

const translate = (text) => ({
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ text: [text], target_lang: "DE" }),
});

test("an allowed call passes untouched", async () => {
  const s = stack();
  const f = pag0.createPag0Fetch({ proxyUrl: s.PAG0_PROXY_URL, apiKey: s.PAG0_KEY_APPROVAL, requestedBy: "ts-agent@acme.com" });
  const r = await f("https://api.salesforce.com/echo?q=1", { method: "POST", body: "{}" });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("x-pag0-decision"), "allow");
  assert.equal(r.headers.get("x-pag0-project"), "p1");
  const echo = await r.json();
  assert.equal(echo.method, "POST");
  assert.equal(echo.path, "/echo?q=1");
  assert.deepEqual(echo.headers.host, ["api.salesforce.com"]);
  assert.deepEqual(Object.keys(echo.headers).filter((h) => h.startsWith("x-pag0-")), []);
  const teapot = await f("https://api.salesforce.com/status/418");
  assert.equal(teapot.status, 418, "an upstream error is returned, not thrown");
});

test("a streamed answer is streamed untouched", async () => {
  const s = stack();
  const f = pag0.createPag0Fetch({ proxyUrl: s.PAG0_PROXY_URL, apiKey: s.PAG0_KEY_OPEN });
  const r = await f("https://api.openai.com/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "gpt-4", max_tokens: 5, stream: true, messages: [{ role: "user", content: "hi" }] }),
  });
  assert.equal(r.status, 200);
  assert.match(r.headers.get("content-type"), /^text\/event-stream/);
  let chunks = 0;
  let text = "";
  const decoder = new TextDecoder();
  for await (const c of r.body) {
    chunks += 1;
    text += decoder.decode(c, { stream: true });
  }
  const events = text.split("\n").filter((l) => l.startsWith("data: "));
  assert.equal(events.length, 6, text);
  assert.equal(events.at(-1), "data: [DONE]");
  assert.ok(chunks >= 2, `a stream arrives in pieces, got ${chunks} chunk(s)`);
});

test("a held call is approved while the client waits, and the replay's answer comes back", async () => {
  const s = stack();
  const a = approver("approve");
  const before = await arrived("/v2/translate");
  const f = pag0.createPag0Fetch({ proxyUrl: s.PAG0_PROXY_URL, apiKey: s.PAG0_KEY_APPROVAL, requestedBy: "ts-agent@acme.com", wait: FAST,
    onPending: a.onPending });
  const r = await f(TRANSLATE, { ...translate("approve me (ts)"),
    pag0: { justification: "Q3 deck for ACME", requestedBy: "ts-sales-bot@acme.com" } });
  await a.done;
  assert.ok(a.pendingSeen);
  assert.equal(a.status, 200);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("x-pag0-decision"), "allow");
  const out = await r.json();
  assert.match(out.translations[0].text, /^\[de\] .*approve me \(ts\)/);
  assert.equal(a.seen.length, 1);
  assert.match(a.seen[0].approvalId, /^apr_/);
  assert.equal(a.seen[0].estimatedCostMicros, 2000n);
  const stored = await approval(a.seen[0].approvalId);
  assert.equal(stored.status, "used");
  assert.equal(stored.justification, "Q3 deck for ACME");
  assert.equal(stored.requestedBy, "ts-sales-bot@acme.com");
  assert.equal(await arrived("/v2/translate"), before + 1, "only the replay reached the upstream");
});

test("a denial throws the typed error", async () => {
  const s = stack();
  const a = approver("deny");
  const before = await arrived("/v2/translate");
  const f = pag0.createPag0Fetch({ proxyUrl: s.PAG0_PROXY_URL, apiKey: s.PAG0_KEY_APPROVAL, requestedBy: "ts-agent@acme.com", wait: FAST,
    onPending: a.onPending });
  const err = await f(TRANSLATE, translate("deny me (ts)")).then(() => null, (e) => e);
  await a.done;
  assert.ok(err instanceof pag0.ApprovalDenied, String(err));
  assert.ok(err instanceof pag0.Pag0Error);
  assert.equal(err.code, "APPROVAL_DENIED");
  assert.equal(err.approvalId, a.seen[0].approvalId);
  assert.equal(err.projectId, "p1");
  assert.equal(await arrived("/v2/translate"), before);
});

test("a budget refusal carries its scope", async () => {
  const s = stack();
  const f = pag0.createPag0Fetch({ proxyUrl: s.PAG0_PROXY_URL, apiKey: s.PAG0_KEY_BUDGET });
  const err = await f(TRANSLATE, translate("too expensive")).then(() => null, (e) => e);
  assert.ok(err instanceof pag0.BudgetExceeded, String(err));
  assert.equal(err.status, 402);
  assert.equal(err.code, "BUDGET_EXCEEDED");
  assert.equal(err.scope, "project.monthly");
  assert.equal(err.projectId, "p2");
  assert.match(err.message, /budget/);
});

test("other refusals are typed too", async () => {
  const s = stack();
  const f = pag0.createPag0Fetch({ proxyUrl: s.PAG0_PROXY_URL, apiKey: s.PAG0_KEY_OPEN });
  const blocked = await f("https://suspicious-api.com/data").then(() => null, (e) => e);
  assert.ok(blocked instanceof pag0.EndpointBlocked, String(blocked));
  assert.equal(blocked.status, 403);
  const nobody = pag0.createPag0Fetch({ proxyUrl: s.PAG0_PROXY_URL, apiKey: "sk-nobody" });
  const unknown = await nobody("https://api.salesforce.com/echo").then(() => null, (e) => e);
  assert.ok(unknown instanceof pag0.UnknownApiKey && unknown instanceof pag0.AuthenticationFailed, String(unknown));
  assert.equal(unknown.status, 401);
});

test("the deadline expires cleanly when nobody decides", async () => {
  const s = stack();
  const seen = [];
  const before = await arrived("/v2/translate");
  const f = pag0.createPag0Fetch({ proxyUrl: s.PAG0_PROXY_URL, apiKey: s.PAG0_KEY_APPROVAL, requestedBy: "ts-agent@acme.com",
    wait: { timeoutMs: 1500, initialDelayMs: 100, maxDelayMs: 400 }, onPending: (p) => seen.push(p) });
  const t0 = performance.now();
  const err = await f(TRANSLATE, translate("nobody decides (ts)")).then(() => null, (e) => e);
  const took = performance.now() - t0;
  assert.ok(err instanceof pag0.ApprovalTimeout, String(err));
  assert.equal(err.code, "APPROVAL_TIMEOUT");
  assert.equal(err.status, null);
  assert.equal(err.approvalId, seen[0].approvalId);
  assert.ok(took >= 1500 && took < 15_000, `took ${took} ms`);
  assert.equal((await approval(seen[0].approvalId)).status, "pending");
  assert.equal(await arrived("/v2/translate"), before);
});

test("bad settings are refused up front", () => {
  assert.throws(() => pag0.createPag0Fetch({ apiKey: "" }), TypeError);
  assert.throws(() => pag0.createPag0Fetch({ apiKey: "k", proxyUrl: "ftp://x" }), TypeError);
  assert.throws(() => pag0.createPag0Fetch({ apiKey: "k", wait: { initialDelayMs: 0 } }), TypeError);
  const e = pag0.errorFrom(403, new Headers({ "x-pag0-code": "NEW_CODE" }), "not json");
  assert.equal(e.constructor, pag0.Pag0Error);
  assert.equal(e.code, "NEW_CODE");
});
