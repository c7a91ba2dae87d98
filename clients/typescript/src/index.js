// @pag0/client: the agent side of Pag0 (SPEC §5) as a fetch-like function, for Node >= 20.
// Plain ES module with hand-written types (index.d.ts): no build step, no dependencies.
//
// const pag0Fetch = createPag0Fetch({ proxyUrl: "http://envoy:10000", apiKey: "sk-..." });
// const r = await pag0Fetch("https://api.deepl.com/v2/translate", { method: "POST", body,
//   pag0: { justification: "Q3 deck", requestedBy: "sales-bot" } });
//
// Requests go to the Pag0 proxy with the original host as `Host` (the filter prices by host;
// global fetch cannot set `Host`, hence node:http/https). A `202` is waited for (polling
// `GET {proxy}/pag0/approvals/{id}` with the agent's own key, backoff, deadline) and replayed
// once with `x-pag0-approval-id`; every refusal (`x-pag0-decision: deny`) throws a typed
// Pag0Error; every other response comes back untouched as a standard `Response` (streamed).

import http from "node:http";
import https from "node:https";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";

// Equals the Cargo workspace version and package.json (checked by envoy/tests/clients.rs).
export const VERSION = "0.1.0";

export const APPROVALS_PATH = "/pag0/approvals/";
const POLL_TIMEOUT_MS = 10_000;

export class Pag0Error extends Error {
  constructor(message, { code, status, scope, projectId, approvalId, body } = {}) {
    super(message);
    this.name = new.target.name;
    this.code = code ?? new.target.code ?? "PAG0_ERROR";
    this.status = status ?? null;
    this.scope = scope ?? null;
    this.projectId = projectId ?? null;
    this.approvalId = approvalId ?? null;
    this.body = body ?? null;
  }
}

const kind = (code, base = Pag0Error) => {
  const C = class extends base {};
  C.code = code;
  return C;
};

export class AuthenticationFailed extends Pag0Error {}
export const MissingApiKey = named("MissingApiKey", kind("MISSING_API_KEY", AuthenticationFailed));
export const UnknownApiKey = named("UnknownApiKey", kind("UNKNOWN_API_KEY", AuthenticationFailed));
export const EndpointBlocked = named("EndpointBlocked", kind("ENDPOINT_BLOCKED"));
export const EndpointNotAllowed = named("EndpointNotAllowed", kind("ENDPOINT_NOT_ALLOWED"));
export const CategoryNotAllowed = named("CategoryNotAllowed", kind("CATEGORY_NOT_ALLOWED"));
export const OutsideWorkingHours = named("OutsideWorkingHours", kind("OUTSIDE_WORKING_HOURS"));
export const MaxPerRequestExceeded = named("MaxPerRequestExceeded", kind("MAX_PER_REQUEST_EXCEEDED"));
export const BudgetExceeded = named("BudgetExceeded", kind("BUDGET_EXCEEDED"));
export class ApprovalError extends Pag0Error {}
export const ApprovalDenied = named("ApprovalDenied", kind("APPROVAL_DENIED", ApprovalError));
export const ApprovalExpired = named("ApprovalExpired", kind("APPROVAL_EXPIRED", ApprovalError));
export const ApprovalMismatch = named("ApprovalMismatch", kind("APPROVAL_MISMATCH", ApprovalError));
export const ApprovalUsed = named("ApprovalUsed", kind("APPROVAL_USED", ApprovalError));
export const ApprovalPending = named("ApprovalPending", kind("APPROVAL_PENDING", ApprovalError));
export const ApprovalRequired = named("ApprovalRequired", kind("APPROVAL_REQUIRED", ApprovalError));
export const ApprovalTimeout = named("ApprovalTimeout", kind("APPROVAL_TIMEOUT", ApprovalError));
export const ApprovalLookupFailed = named("ApprovalLookupFailed", kind("APPROVAL_LOOKUP_FAILED", ApprovalError));
export const ControlPlaneUnavailable = named("ControlPlaneUnavailable", kind("CONTROL_PLANE_UNAVAILABLE"));
export const BodyTooLarge = named("BodyTooLarge", kind("BODY_TOO_LARGE"));
export const BadRequestBody = named("BadRequestBody", kind("BAD_REQUEST_BODY"));

function named(name, C) {
  Object.defineProperty(C, "name", { value: name });
  return C;
}

const BY_CODE = new Map(
  [
    MissingApiKey, UnknownApiKey, EndpointBlocked, EndpointNotAllowed, CategoryNotAllowed,
    OutsideWorkingHours, MaxPerRequestExceeded, BudgetExceeded, ApprovalDenied, ApprovalExpired,
    ApprovalMismatch, ApprovalUsed, ApprovalPending, ApprovalRequired, ControlPlaneUnavailable,
    BodyTooLarge, BadRequestBody,
  ].map((C) => [C.code, C]),
);

function parseJson(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

/** A refusal of the filter: `x-pag0-decision: deny` (an upstream error is not one). */
export function isRefusal(status, headers) {
  return status >= 400 && (headers.get("x-pag0-decision") ?? "").toLowerCase() === "deny";
}

/** The typed error for a refusal; an unknown code still gives a Pag0Error carrying it. */
export function errorFrom(status, headers, bodyText) {
  const body = parseJson(bodyText);
  const err = body && typeof body.error === "object" && body.error !== null ? body.error : {};
  const code = String(err.code || headers.get("x-pag0-code") || "PAG0_ERROR");
  const message = String(err.message || `refused by pag0 (${status} ${code})`);
  const C = BY_CODE.get(code) ?? Pag0Error;
  return new C(message, {
    code,
    status,
    scope: err.scope,
    projectId: err.projectId ?? headers.get("x-pag0-project") ?? undefined,
    approvalId: err.approvalId ?? headers.get("x-pag0-approval-id") ?? undefined,
    body,
  });
}

const DEFAULT_WAIT = Object.freeze({ timeoutMs: 900_000, initialDelayMs: 500, maxDelayMs: 10_000, multiplier: 2 });

function checkWait(w) {
  const wait = { ...DEFAULT_WAIT, ...w };
  if (!(wait.timeoutMs >= 0) || !(wait.initialDelayMs > 0) || !(wait.maxDelayMs > 0) || !(wait.multiplier >= 1)) {
    throw new TypeError("wait: timeoutMs >= 0, initialDelayMs > 0, maxDelayMs > 0, multiplier >= 1");
  }
  return wait;
}

function headerValue(name, value) {
  const v = String(value);
  if (/[\r\n\0]/.test(v)) throw new TypeError(`${name}: line breaks and NUL are not allowed in a header`);
  return v;
}

/** Body bytes and a default content-type, for any BodyInit fetch accepts. */
async function bodyBytes(body) {
  if (body === undefined || body === null) return { bytes: null, type: null };
  if (typeof body === "string") return { bytes: Buffer.from(body, "utf8"), type: "text/plain;charset=UTF-8" };
  if (body instanceof Uint8Array) return { bytes: Buffer.from(body.buffer, body.byteOffset, body.byteLength), type: null };
  const r = new Request("http://body.invalid/", { method: "POST", body, duplex: "half" });
  return { bytes: Buffer.from(await r.arrayBuffer()), type: r.headers.get("content-type") };
}

/** One HTTP exchange with node:http(s): the connection goes to `via`, `Host` names `target`. */
function exchange(via, target, method, headers, bytes, signal) {
  return new Promise((resolve, reject) => {
    const lib = via.protocol === "https:" ? https : http;
    const h = { ...headers, host: target.host };
    if (bytes) h["content-length"] = String(bytes.length);
    const req = lib.request(
      {
        protocol: via.protocol,
        hostname: via.hostname.replace(/^\[|\]$/g, ""),
        port: via.port || (via.protocol === "https:" ? 443 : 80),
        method,
        path: `${target.pathname}${target.search}`,
        headers: h,
        signal,
      },
      resolve,
    );
    req.on("error", reject);
    req.end(bytes ?? undefined);
  });
}

function toHeaders(res) {
  const h = new Headers();
  const raw = res.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) h.append(raw[i], raw[i + 1]);
  return h;
}

async function readText(res) {
  const chunks = [];
  for await (const c of res) chunks.push(c);
  return Buffer.concat(chunks).toString("utf8");
}

function toResponse(res, method) {
  const headers = toHeaders(res);
  const status = res.statusCode ?? 502;
  const empty = method === "HEAD" || status === 204 || status === 205 || status === 304;
  if (empty) res.resume();
  return new Response(empty ? null : Readable.toWeb(res), { status, statusText: res.statusMessage, headers });
}

function withTimeout(signal, ms) {
  const t = AbortSignal.timeout(ms);
  return signal && typeof AbortSignal.any === "function" ? AbortSignal.any([signal, t]) : t;
}

/**
 * A fetch-like function that speaks Pag0 (see the file header and index.d.ts).
 * @param {import("./index.d.ts").Pag0Options} options
 */
export function createPag0Fetch(options) {
  const { apiKey, proxyUrl, onPending } = options ?? {};
  if (!apiKey) throw new TypeError("apiKey is required (the client's x-pag0-api-key)");
  headerValue("apiKey", apiKey);
  let proxy = null;
  if (proxyUrl !== undefined && proxyUrl !== null) {
    proxy = new URL(proxyUrl);
    if (proxy.protocol !== "http:" && proxy.protocol !== "https:") {
      throw new TypeError(`proxyUrl ${proxyUrl}: want http(s)://host[:port]`);
    }
  }
  const base = {
    justification: options.justification,
    requestedBy: options.requestedBy,
    requiresApproval: Boolean(options.requiresApproval),
    wait: checkWait(options.wait),
  };

  async function waitForDecision(via, pending, wait, signal) {
    const deadline = performance.now() + wait.timeoutMs;
    let delay = wait.initialDelayMs;
    const url = new URL(APPROVALS_PATH + encodeURIComponent(pending.approvalId), via);
    const info = { projectId: pending.projectId, approvalId: pending.approvalId, body: pending.body };
    for (;;) {
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new ApprovalTimeout(`no decision on approval ${pending.approvalId} within ${wait.timeoutMs} ms`, info);
      }
      await sleep(Math.min(delay, left), undefined, signal ? { signal } : undefined);
      delay = Math.min(delay * wait.multiplier, wait.maxDelayMs);
      let res;
      let text;
      try {
        res = await exchange(via, url, "GET", { "x-pag0-api-key": apiKey, accept: "application/json" }, null,
          withTimeout(signal, POLL_TIMEOUT_MS));
        text = await readText(res);
      } catch (e) {
        if (signal?.aborted) throw e;
        continue; // a network error: ask again until the deadline
      }
      const status = res.statusCode ?? 0;
      if (status >= 500 || status === 429) continue;
      if (status !== 200) {
        throw new ApprovalLookupFailed(`GET ${APPROVALS_PATH}${pending.approvalId}: HTTP ${status}`, { ...info, status });
      }
      const st = parseJson(text)?.status;
      if (st === "approved") return;
      const C = { denied: ApprovalDenied, expired: ApprovalExpired, used: ApprovalUsed }[st];
      if (C) throw new C(`approval ${pending.approvalId} is ${st}`, info);
    }
  }

  return async function pag0Fetch(input, init = {}) {
    const { pag0, ...rest } = init ?? {};
    const req = input instanceof Request ? input : null;
    const target = new URL(req ? req.url : String(input));
    const method = String(rest.method ?? req?.method ?? "GET").toUpperCase();
    const o = {
      justification: pag0?.justification ?? base.justification,
      requestedBy: pag0?.requestedBy ?? base.requestedBy,
      requiresApproval: pag0?.requiresApproval ?? base.requiresApproval,
      wait: pag0?.wait ? checkWait(pag0.wait) : base.wait,
    };
    const headers = {};
    for (const [k, v] of new Headers(rest.headers ?? req?.headers ?? undefined)) headers[k] = v;
    delete headers["content-length"];
    delete headers["transfer-encoding"];
    delete headers.host;
    const { bytes, type } = await bodyBytes(rest.body !== undefined ? rest.body : req?.body ?? null);
    if (type && !headers["content-type"]) headers["content-type"] = type;
    headers["x-pag0-api-key"] = apiKey;
    if (o.justification) headers["x-pag0-justification"] = headerValue("justification", o.justification);
    if (o.requestedBy) headers["x-pag0-requested-by"] = headerValue("requestedBy", o.requestedBy);
    if (o.requiresApproval) headers["x-pag0-requires-approval"] = "true";
    const signal = rest.signal ?? req?.signal ?? undefined;
    const via = proxy ?? target;

    let res = await exchange(via, target, method, headers, bytes, signal);
    let h = toHeaders(res);
    if (res.statusCode === 202 && (h.get("x-pag0-decision") ?? "").toLowerCase() === "pending" && h.get("x-pag0-approval-id")) {
      const body = parseJson(await readText(res));
      const cost = body?.estimatedCost;
      const pending = {
        approvalId: h.get("x-pag0-approval-id"),
        projectId: body?.projectId ?? h.get("x-pag0-project") ?? null,
        estimatedCostMicros: typeof cost === "string" && /^\d+$/.test(cost) ? BigInt(cost) : null,
        expiresAt: body?.expiresAt ?? null,
        body,
      };
      if (onPending) onPending(pending);
      await waitForDecision(via, pending, o.wait, signal);
      headers["x-pag0-approval-id"] = pending.approvalId;
      res = await exchange(via, target, method, headers, bytes, signal);
      h = toHeaders(res);
    }
    if (isRefusal(res.statusCode ?? 0, h)) {
      throw errorFrom(res.statusCode, h, await readText(res));
    }
    return toResponse(res, method);
  };
}
