// Audit: the tamper-evident log (/v1/audit, docs/audit.md) a page at a time, newest first
// (`order=desc`; oldest first on request), with its filters, and the chain verified by the
// sidecar (/v1/audit/verify).
import { get } from '../lib/api.js';
import { h, put, table } from '../lib/dom.js';
import { usd } from '../lib/money.js';
import { query } from '../lib/audit.js';

export const PAGE_SIZE = 50;

const KINDS = ['decision', 'decision.gap', 'decision.rejected', 'policy.updated', 'project.created', 'project.updated',
  'project.deleted', 'client.created', 'client.updated', 'client.deleted', 'client.key_rotated', 'approval.created',
  'approval.decided', 'approval.consumed', 'approval.expired', 'audit.retention'];
const DECISIONS = ['allow', 'deny', 'pending', 'replay', 'cache_hit', 'approved', 'denied', 'used', 'expired'];

// A datetime-local value (the browser's local time) as RFC 3339 UTC, or undefined.
function instant(v) {
  if (!v) return undefined;
  const t = new Date(v);
  return Number.isNaN(t.getTime()) ? undefined : t.toISOString();
}

function field(id, text, control) {
  return h('div', { class: 'field' }, h('label', { for: id }, text), control);
}

function rowOf(e) {
  return h('tr', { dataset: { seq: e.seq } },
    h('td', {}, h('time', { datetime: e.at }, e.at.replace('T', ' ').replace(/\.\d+Z$|Z$/, ' UTC'))),
    h('td', {}, h('code', {}, e.kind)),
    h('td', {}, e.decision ? h('span', { class: `pill ${e.decision}` }, e.decision) : '—'),
    h('td', {}, e.code ?? '—'),
    h('td', {}, e.projectId ?? '—'),
    h('td', {}, e.clientId ?? '—'),
    h('td', {}, e.host ?? '—'),
    h('td', { class: 'num', dataset: { field: 'cost', micros: e.cost ?? '' } }, e.cost === null || e.cost === undefined ? '—' : usd(String(e.cost))),
    h('td', { class: 'num' }, String(e.seq)));
}

export async function render(root) {
  const kind = h('select', { id: 'f-kind' }, h('option', { value: '' }, 'any'), KINDS.map((k) => h('option', { value: k }, k)));
  const decision = h('select', { id: 'f-decision' }, h('option', { value: '' }, 'any'), DECISIONS.map((k) => h('option', { value: k }, k)));
  const project = h('input', { type: 'text', id: 'f-project', autocomplete: 'off' });
  const code = h('input', { type: 'text', id: 'f-code', autocomplete: 'off', placeholder: 'ENDPOINT_BLOCKED' });
  const from = h('input', { type: 'datetime-local', id: 'f-from', step: 1 });
  const to = h('input', { type: 'datetime-local', id: 'f-to', step: 1 });
  const size = h('input', { type: 'number', id: 'f-limit', min: 1, max: 1000, step: 1, value: PAGE_SIZE });
  const order = h('select', { id: 'f-order' }, h('option', { value: 'desc' }, 'newest first'), h('option', { value: 'asc' }, 'oldest first'));
  const form = h('form', { id: 'filters', class: 'filters' },
    field('f-kind', 'Kind', kind), field('f-decision', 'Decision', decision), field('f-project', 'Project', project),
    field('f-code', 'Code', code), field('f-from', 'From (local time)', from), field('f-to', 'To (local time, exclusive)', to),
    field('f-limit', 'Rows a page', size), field('f-order', 'Order', order),
    h('div', { class: 'field' }, h('button', { type: 'submit', id: 'apply-filters' }, 'Show')));
  const list = h('div', { id: 'entries', 'aria-live': 'polite' });
  const verifyBtn = h('button', { type: 'button', id: 'verify', class: 'secondary' }, 'Verify chain');
  const verifyOut = h('div', { id: 'verify-result', 'aria-live': 'polite' });

  // Pages walked so far: cursors[i] is the cursor that opened page i (null for the first).
  let cursors = [null];
  let filters = { order: 'desc' };
  let limit = PAGE_SIZE;
  let loads = 0;

  async function show(pageIndex) {
    const r = await get(query({ ...filters, limit, cursor: cursors[pageIndex] }));
    if (r.nextCursor) cursors[pageIndex + 1] = r.nextCursor;
    const prev = h('button', { type: 'button', id: 'prev-page', class: 'secondary', disabled: pageIndex === 0 }, 'Previous page');
    const next = h('button', { type: 'button', id: 'next-page', class: 'secondary', disabled: !r.nextCursor }, 'Next page');
    prev.addEventListener('click', () => show(pageIndex - 1).catch(failed));
    next.addEventListener('click', () => show(pageIndex + 1).catch(failed));
    const first = r.entries[0]?.seq, last = r.entries[r.entries.length - 1]?.seq;
    put(list,
      r.entries.length === 0 ? h('p', { id: 'no-entries' }, 'No entry matches.')
        : table(['Time', 'Kind', 'Decision', 'Code', 'Project', 'Client', 'Host', h('th', { class: 'num', scope: 'col' }, 'Cost'), h('th', { class: 'num', scope: 'col' }, 'Seq')],
          r.entries.map(rowOf), { id: 'audit-table', dataset: { page: String(pageIndex), order: filters.order } }),
      h('div', { class: 'row' }, prev, next,
        h('span', { class: 'muted', id: 'page-info' }, r.entries.length ? `Page ${pageIndex + 1}: seq ${first}–${last}` : `Page ${pageIndex + 1}`)));
    loads += 1;
    list.dataset.loads = String(loads);
  }

  function failed(e) {
    put(list, h('p', { class: 'error', role: 'alert' }, e.details?.length ? e.details.join('; ') : e.message));
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    filters = { kind: kind.value, decision: decision.value, projectId: project.value.trim(), code: code.value.trim(), from: instant(from.value), to: instant(to.value), order: order.value };
    const n = Number.parseInt(size.value, 10);
    limit = Number.isInteger(n) && n >= 1 && n <= 1000 ? n : PAGE_SIZE;
    size.value = String(limit);
    cursors = [null];
    show(0).catch(failed);
  });

  verifyBtn.addEventListener('click', async () => {
    verifyBtn.disabled = true;
    put(verifyOut, h('p', { class: 'muted' }, 'Recomputing every hash…'));
    try {
      const v = await get('/v1/audit/verify');
      const headHash = v.head && typeof v.head === 'object' ? v.head.hash : v.head;
      put(verifyOut, h('dl', { class: 'kv', id: 'verify-kv', dataset: { ok: String(v.ok) } },
        h('dt', {}, 'Chain'), h('dd', { id: 'verify-ok' }, h('span', { class: `pill ${v.ok ? 'allow' : 'deny'}` }, v.ok ? 'ok' : 'broken')),
        h('dt', {}, 'Rows checked'), h('dd', { id: 'verify-rows' }, String(v.rowsChecked)),
        h('dt', {}, 'Head'), h('dd', { id: 'verify-head' }, h('code', {}, headHash ?? '—')),
        h('dt', {}, 'First bad row'), h('dd', { id: 'verify-bad' }, v.firstBadRow === null || v.firstBadRow === undefined ? '—' : String(v.firstBadRow)),
        v.reason ? [h('dt', {}, 'Reason'), h('dd', { id: 'verify-reason' }, v.reason)] : null));
    } catch (e) {
      put(verifyOut, h('p', { class: 'error', role: 'alert' }, e.message));
    } finally {
      verifyBtn.disabled = false;
    }
  });

  put(root, h('h1', {}, 'Audit'),
    h('p', { class: 'muted' }, 'Every policy version, project and client change, approval and filter decision, in one append-only hash chain, newest first. Verify recomputes the chain in the sidecar; compare its head with a hash you anchored elsewhere.'),
    form,
    h('div', { class: 'row' }, verifyBtn), verifyOut,
    list);
  await show(0);
}
