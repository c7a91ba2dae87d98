// The audit log as the console reads it (/v1/audit, docs/audit.md): pages by cursor, and the
// filter's decision rows turned into the records the what-if engine replays (whatif/src/record.rs).
import { get } from './api.js';

export const PAGE_MAX = 1000;

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  return `/v1/audit?${q}`;
}

// The last `n` entries matching `filters`, oldest first: newest-first pages (`order=desc`,
// 1000 rows each) until `n` are read, then reversed; `pages` counts the requests.
export async function lastEntries(filters, n) {
  let newest = [];
  let cursor = null;
  let pages = 0;
  while (newest.length < n) {
    const r = await get(query({ ...filters, order: 'desc', limit: Math.min(PAGE_MAX, n - newest.length), cursor }));
    pages += 1;
    newest = newest.concat(r.entries);
    if (!r.nextCursor) break;
    cursor = r.nextCursor;
  }
  return { entries: newest.slice(0, n).reverse(), pages };
}

// Denial codes (pag0_policy::Code) that a draft policy cannot change: an approval id's state,
// the filter's control plane, a malformed request. Replaying them would report a change that
// is an artefact of the replay.
export const NOT_POLICY = new Set(['APPROVAL_USED', 'APPROVAL_EXPIRED', 'APPROVAL_DENIED', 'APPROVAL_MISMATCH',
  'APPROVAL_PENDING', 'CONTROL_PLANE_UNAVAILABLE', 'BODY_TOO_LARGE', 'BAD_REQUEST_BODY', 'REQUESTED_BY_INVALID',
  'AMBIGUOUS_PATH', 'INVALID_AUTHORITY']);

const str = (v) => (v === null || v === undefined ? undefined : String(v));

// One `kind: "decision"` row → a what-if record, or null for rows that are not a new decision
// under a policy: `replay` (the same held request sent again while its approval was pending)
// and `cache_hit` (answered from the filter's cache, nothing spent). A consumed approval is an
// `allow` with an approvalId: replayed as an approved replay. A held request (`pending`) is
// replayed as asking for approval, so it stays held unless the draft refuses it: the log does
// not say whether the threshold or the x-pag0-requires-approval header held it.
export function toRecorded(e) {
  const d = e.details || {};
  let outcome;
  switch (e.decision) {
    case 'allow': outcome = 'allow'; break;
    case 'deny':
      if (NOT_POLICY.has(e.code)) return null;
      outcome = 'deny';
      break;
    case 'pending': outcome = 'pending'; break;
    default: return null;
  }
  return {
    id: `audit #${e.seq}`,
    at: e.at,
    clientId: e.clientId ?? undefined,
    projectId: e.projectId ?? undefined,
    method: d.method,
    authority: e.host,
    path: d.path,
    estimate: str(e.estimate) ?? '0',
    outcome,
    code: e.code ?? undefined,
    scope: d.scope ?? undefined,
    actualCost: outcome === 'allow' ? str(e.cost) : undefined,
    requiresApproval: outcome === 'pending' ? (d.requiresApproval ?? true) : false,
    approvalReplay: outcome === 'allow' && !!e.approvalId,
  };
}

// The last `n` recorded decisions as what-if records, with how many rows were left out.
export async function recordedDecisions(n) {
  const { entries, pages } = await lastEntries({ kind: 'decision' }, n);
  const decisions = [];
  let notReplayed = 0;
  for (const e of entries) {
    const r = toRecorded(e);
    if (r) decisions.push(r); else notReplayed += 1;
  }
  return { decisions, rows: entries.length, notReplayed, pages };
}
