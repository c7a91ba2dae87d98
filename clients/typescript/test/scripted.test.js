// createPag0Fetch against a scripted local HTTP server: the exact requests it sends, no stack.
import assert from "node:assert/strict";
import http from "node:http";
import { test } from "node:test";

import * as pag0 from "../src/index.js";

const FAST = { timeoutMs: 10_000, initialDelayMs: 10, maxDelayMs: 20 };
const PENDING = [202, { "x-pag0-decision": "pending", "x-pag0-approval-id": "apr_1" },
  { approvalId: "apr_1", status: "pending", projectId: "p1", estimatedCost: "2000", expiresAt: "2026-12-03T00:00:00Z" }];

/** A server answering from `answers` in order; resolves to { url, seen, close }. */
async function scripted(answers) {
  const seen = [];
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    seen.push({ method: req.method, path: req.url, headers: req.headers, body: Buffer.concat(chunks).toString() });
    const [status, headers, body] = answers.shift() ?? [500, {}, { error: "script exhausted" }];
    res.writeHead(status, { "content-type": "application/json", ...headers });
    res.end(JSON.stringify(body));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  return { url: `http://127.0.0.1:${port}`, seen, close: () => new Promise((r) => server.close(r)) };
}

test("wait then replay: same bytes, approval id, Host of the real URL, polls with the agent's key", async () => {
  const s = await scripted([
    PENDING,
    [503, {}, { error: "sidecar restarting" }],
    [200, {}, { status: "pending" }],
    [200, {}, { status: "approved" }],
    [200, { "x-pag0-decision": "allow" }, { ok: true }],
  ]);
  try {
    const pendings = [];
    const f = pag0.createPag0Fetch({ proxyUrl: s.url, apiKey: "sk-1", justification: "why", requestedBy: "bot",
      wait: FAST, onPending: (p) => pendings.push(p) });
    const r = await f("https://api.deepl.com:8443/v2/translate?x=1", { method: "POST", body: "exact bytes" });
    assert.equal(r.status, 200);
    assert.deepEqual(await r.json(), { ok: true });
    assert.deepEqual(s.seen.map((x) => x.method), ["POST", "GET", "GET", "GET", "POST"]);
    const [first, replay] = [s.seen[0], s.seen.at(-1)];
    assert.equal(first.path, "/v2/translate?x=1");
    assert.equal(first.headers.host, "api.deepl.com:8443");
    assert.equal(first.headers["x-pag0-api-key"], "sk-1");
    assert.equal(first.headers["x-pag0-justification"], "why");
    assert.equal(first.headers["x-pag0-requested-by"], "bot");
    assert.equal(first.headers["x-pag0-approval-id"], undefined);
    assert.equal(replay.path, first.path);
    assert.equal(replay.body, "exact bytes");
    assert.equal(first.body, "exact bytes");
    assert.equal(replay.headers["x-pag0-approval-id"], "apr_1");
    for (const poll of s.seen.slice(1, 4)) {
      assert.equal(poll.path, "/pag0/approvals/apr_1");
      assert.equal(poll.headers["x-pag0-api-key"], "sk-1");
    }
    assert.equal(pendings[0].estimatedCostMicros, 2000n);
  } finally {
    await s.close();
  }
});

test("a refused replay throws its code; final statuses throw without replaying", async () => {
  const s = await scripted([
    PENDING,
    [200, {}, { status: "approved" }],
    [402, { "x-pag0-decision": "deny", "x-pag0-code": "BUDGET_EXCEEDED" },
      { error: { code: "BUDGET_EXCEEDED", message: "org monthly budget", scope: "org.monthly", projectId: "p1" } }],
    PENDING,
    [200, {}, { status: "expired" }],
    PENDING,
    [404, {}, { error: { code: "NOT_FOUND" } }],
  ]);
  try {
    const f = pag0.createPag0Fetch({ proxyUrl: s.url, apiKey: "k", wait: FAST });
    const budget = await f("http://api.deepl.com/x", { method: "POST", body: "x" }).then(() => null, (e) => e);
    assert.ok(budget instanceof pag0.BudgetExceeded, String(budget));
    assert.equal(budget.scope, "org.monthly");
    assert.equal(budget.status, 402);
    const n = s.seen.length;
    const expired = await f("http://api.deepl.com/x", { method: "POST", body: "x" }).then(() => null, (e) => e);
    assert.ok(expired instanceof pag0.ApprovalExpired, String(expired));
    assert.equal(s.seen.length, n + 2, "no replay after a final status");
    const lookup = await f("http://api.deepl.com/x", { method: "POST", body: "x" }).then(() => null, (e) => e);
    assert.ok(lookup instanceof pag0.ApprovalLookupFailed, String(lookup));
    assert.equal(lookup.status, 404);
  } finally {
    await s.close();
  }
});

test("an upstream error is returned as a Response, not thrown", async () => {
  const s = await scripted([[500, { "x-pag0-decision": "allow" }, { upstream: "broke" }]]);
  try {
    const f = pag0.createPag0Fetch({ proxyUrl: s.url, apiKey: "k" });
    const r = await f("http://api.deepl.com/x");
    assert.equal(r.status, 500);
    assert.deepEqual(await r.json(), { upstream: "broke" });
  } finally {
    await s.close();
  }
});
