// Reports: the EU AI Act compliance report of this month (/v1/reports, docs/reports.md) as JSON,
// CSV or PDF. Each download is a same-origin fetch with the session cookie, saved through an
// object URL (a plain link could not be refused with a readable error, and the filename is
// the sidecar's Content-Disposition).
import { get, ApiError } from '../lib/api.js';
import { h, put } from '../lib/dom.js';

export const TEMPLATE = 'EU_AI_ACT_COMPLIANCE';
const FORMATS = [
  { id: 'json', label: 'JSON', type: 'application/json' },
  { id: 'csv', label: 'CSV', type: 'text/csv' },
  { id: 'pdf', label: 'PDF', type: 'application/pdf' },
];

export function reportUrl(format, period = 'month') {
  return `/v1/reports?template=${TEMPLATE}&format=${format}&period=${encodeURIComponent(period)}`;
}

function fileName(resp, fallback) {
  const m = /filename="([^"]+)"/.exec(resp.headers.get('content-disposition') || '');
  return m ? m[1] : fallback;
}

async function download(format, period, status) {
  const resp = await fetch(reportUrl(format.id, period), { credentials: 'same-origin' });
  if (!resp.ok) {
    let body = null;
    try { body = await resp.json(); } catch { /* not JSON */ }
    throw new ApiError(resp.status, body);
  }
  const blob = await resp.blob();
  const name = fileName(resp, `pag0-eu-ai-act-${period}.${format.id}`);
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  // Revoked after the browser has taken the download.
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  status.textContent = `Downloaded ${name} (${blob.size} bytes).`;
}

export async function render(root) {
  const period = h('input', { type: 'text', id: 'period', value: 'month', pattern: 'month|\\d{4}-\\d{2}', 'aria-describedby': 'period-help', autocomplete: 'off' });
  const status = h('p', { id: 'download-status', role: 'status' });
  const summary = h('div', { id: 'report-summary', class: 'card', 'aria-live': 'polite' });
  const buttons = FORMATS.map((f) => {
    const b = h('button', { type: 'button', id: `download-${f.id}`, dataset: { format: f.id } }, `Download ${f.label}`);
    b.addEventListener('click', async () => {
      b.disabled = true;
      status.textContent = `Preparing the ${f.label}…`;
      try { await download(f, period.value.trim() || 'month', status); } catch (e) {
        status.textContent = `Could not download the ${f.label}: ${e.details?.length ? e.details.join('; ') : e.message}`;
      } finally { b.disabled = false; }
    });
    return b;
  });

  async function preview() {
    try {
      const r = await get(reportUrl('json', period.value.trim() || 'month'));
      const failing = (r.checks || []).filter((c) => c.result !== 'pass');
      put(summary, h('dl', { class: 'kv' },
        h('dt', {}, 'Organisation'), h('dd', {}, r.orgId || '—'),
        h('dt', {}, 'Period'), h('dd', {}, `${r.period?.label ?? ''} (${r.period?.from ?? ''} – ${r.period?.to ?? ''})`),
        h('dt', {}, 'Status'), h('dd', { id: 'compliance-status', dataset: { status: r.complianceStatus } },
          h('span', { class: `pill ${r.complianceStatus === 'COMPLIANT' ? 'allow' : 'deny'}` }, r.complianceStatus)),
        h('dt', {}, 'Checks'), h('dd', { id: 'checks' }, `${(r.checks || []).length} checks${failing.length ? `, failing: ${failing.map((c) => c.name).join(', ')}` : ', all pass'}`),
        h('dt', {}, 'Generated'), h('dd', {}, r.generatedAt || '—')));
    } catch (e) {
      put(summary, h('p', { class: 'error', role: 'alert' }, e.details?.length ? e.details.join('; ') : e.message));
    }
  }
  period.addEventListener('change', preview);

  put(root, h('h1', {}, 'Reports'),
    h('h2', {}, 'EU AI Act compliance'),
    h('p', { class: 'muted' }, 'The record-keeping and oversight evidence of one calendar month (organisation timezone): spend, decisions and denials, approvals, policy changes and the audit chain. See docs/reports.md for every check.'),
    h('div', { class: 'row' },
      h('label', { for: 'period' }, 'Period'), period,
      h('span', { id: 'period-help', class: 'muted' }, '“month” (this month) or YYYY-MM')),
    summary,
    h('div', { class: 'row', role: 'group', 'aria-label': 'Download the report' }, buttons),
    status);
  await preview();
}
