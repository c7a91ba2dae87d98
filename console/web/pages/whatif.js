// What-if: recorded decisions re-decided under the draft by the filter's own decision code
// (pag0-policy in wasm), with budget counters simulated from the spend before the window.
// Lists the requests whose outcome would change and the spend that would move.
import { api, get } from '../lib/api.js';
import { h, clear, put, table } from '../lib/dom.js';
import { engine } from '../lib/engine.js';
import { usd } from '../lib/money.js';
import { draft, pretty } from '../lib/draft.js';
import { recordedDecisions } from '../lib/audit.js';

// How many of the latest recorded decisions are replayed unless the page is told otherwise.
export const DEFAULT_LAST_N = 500;

function verdict(v) {
  const text = v.outcome === 'deny' ? `deny ${v.code}${v.scope ? ` (${v.scope})` : ''}` : v.outcome === 'pending' ? 'approval' : 'allow';
  return h('span', { class: `pill ${v.outcome === 'pending' ? 'approval' : v.outcome}` }, text);
}

function report(out, r, kindFilter) {
  const s = r.summary;
  const kinds = [...new Set(r.changes.map((c) => c.kind))];
  const filter = h('select', { id: 'kind', onchange: (e) => report(out, r, e.target.value) },
    h('option', { value: '' }, 'every change'), kinds.map((k) => h('option', { value: k, selected: k === kindFilter }, k)));
  const shown = r.changes.filter((c) => !kindFilter || c.kind === kindFilter);
  put(out, 
    h('div', { class: 'grid', id: 'summary' },
      h('div', { class: 'card stat' }, h('div', { class: 'label' }, 'Replayed'), h('div', { class: 'value', id: 'replayed' }, String(r.replayed)), h('div', { class: 'sub' }, `${r.skipped} skipped`)),
      h('div', { class: 'card stat' }, h('div', { class: 'label' }, 'allow → deny'), h('div', { class: 'value', id: 'allow-to-deny' }, String(s.allowToDeny)), h('div', { class: 'sub', id: 'spend-removed', dataset: { micros: s.spendRemoved } }, `${usd(s.spendRemoved)} of recorded spend would not happen`)),
      h('div', { class: 'card stat' }, h('div', { class: 'label' }, 'deny → allow'), h('div', { class: 'value', id: 'deny-to-allow' }, String(s.denyToAllow)), h('div', { class: 'sub', id: 'spend-added', dataset: { micros: s.spendAdded } }, `up to ${usd(s.spendAdded)} more would be spent`)),
      h('div', { class: 'card stat' }, h('div', { class: 'label' }, 'Spend of the window'), h('div', { class: 'value' }, usd(s.draftSpend)), h('div', { class: 'sub' }, `recorded ${usd(s.recordedSpend)}; ${s.otherChanges} other changes`))),
    r.errors.length ? h('ul', { class: 'errors' }, r.errors.map((e) => h('li', {}, e))) : null,
    h('div', { class: 'row' }, h('label', { for: 'kind' }, 'Show'), filter),
    shown.length === 0 ? h('p', { id: 'no-changes' }, 'No recorded request would be decided differently.')
      : table(['When', 'Client', 'Team', 'Request', 'Change', 'Recorded', 'Draft', h('th', { class: 'num', scope: 'col' }, 'Spend moved')],
        shown.map((c) => h('tr', { dataset: { index: c.index, id: c.id ?? '', kind: c.kind } },
          h('td', {}, c.at), h('td', {}, c.clientId), h('td', {}, c.projectId ?? '—'),
          h('td', {}, `${c.method} ${c.authority}${c.path}`), h('td', {}, c.kind),
          h('td', {}, verdict(c.recorded)), h('td', { title: c.draft.message ?? '' }, verdict(c.draft)),
          h('td', { class: 'num' }, c.recordedSpend !== c.draftSpend ? `${usd(c.recordedSpend)} → ${usd(c.draftSpend)}` : '—'))), { id: 'changes' }));
}

export async function render(root, ctx) {
  const cur = await api('GET', '/v1/policy');
  const currentText = pretty(cur.body);
  const draftBox = h('textarea', { id: 'draft', rows: 14, spellcheck: 'false' });
  draftBox.value = draft.text ?? currentText;
  draftBox.addEventListener('input', () => { draft.text = draftBox.value; });
  const decisionsBox = h('textarea', { id: 'decisions', rows: 8, spellcheck: 'false', placeholder: '[{"at": "…", "clientId": "…", "method": "GET", "authority": "…", "path": "/…", "estimate": "1000", "outcome": "allow", "actualCost": "900"}, …]' });
  const source = h('p', { id: 'source', class: 'muted' }, 'Looking for recorded decisions…');
  const file = h('input', { type: 'file', id: 'decisions-file', accept: 'application/json,.json' });
  file.addEventListener('change', async () => { if (file.files[0]) decisionsBox.value = await file.files[0].text(); });
  const lastN = h('input', { type: 'number', id: 'last-n', min: 1, max: 100000, step: 1, value: DEFAULT_LAST_N, 'aria-describedby': 'source' });
  const load = h('button', { type: 'button', id: 'load', class: 'secondary' }, 'Load from the audit log');
  const run = h('button', { type: 'button', id: 'run' }, 'Replay under the draft');

  async function loadRecorded() {
    const n = Number.parseInt(lastN.value, 10);
    if (!Number.isInteger(n) || n < 1) {
      source.textContent = 'How many decisions: a whole number from 1.';
      lastN.setAttribute('aria-invalid', 'true');
      return;
    }
    lastN.removeAttribute('aria-invalid');
    source.dataset.state = 'loading';
    source.textContent = `Loading the last ${n} decisions from the audit log…`;
    try {
      const got = await recordedDecisions(n);
      decisionsBox.value = JSON.stringify(got.decisions, null, 1);
      source.dataset.count = String(got.decisions.length);
      source.textContent = `The last ${got.rows} decision rows of the audit log (asked for ${n}): ${got.decisions.length} to replay`
        + (got.notReplayed ? `, ${got.notReplayed} not replayed (cache hits, re-sent held requests, and refusals no policy decides: an approval's state, the control plane out of reach, a malformed request).` : '.');
      source.dataset.rows = String(got.rows);
      source.dataset.state = 'audit';
    } catch (e) {
      source.dataset.state = 'none';
      source.textContent = e.status === 404
        ? 'This sidecar has no decision log yet (GET /v1/audit): paste recorded decisions or load a file.'
        : `Could not read the audit log (${e.message}): paste recorded decisions or load a file.`;
    }
  }
  load.addEventListener('click', loadRecorded);
  const out = h('div', { id: 'result', 'aria-live': 'polite', dataset: { runs: '0' } });

  run.addEventListener('click', async () => {
    put(out, h('p', { class: 'muted' }, 'Replaying…'));
    try {
      const m = await engine();
      const decisions = decisionsBox.value.trim() || '[]';
      const budgets = await get('/v1/budgets');
      const opening = JSON.parse(m.opening_spend(currentText, JSON.stringify(budgets), decisions));
      if (!opening.ok) throw new Error(opening.errors.join('; '));
      const answer = JSON.parse(m.replay(draftBox.value, JSON.stringify({ decisions: JSON.parse(decisions), openingSpend: opening.openingSpend })));
      if (!answer.ok) {
        put(out, h('ul', { class: 'errors', id: 'replay-errors' }, answer.errors.map((e) => h('li', {}, e))));
        return;
      }
      report(out, answer.report, '');
    } catch (e) {
      put(out, h('p', { class: 'error', role: 'alert' }, e.message));
    } finally {
      out.dataset.runs = String(Number(out.dataset.runs) + 1);
    }
  });

  put(root, h('h1', {}, 'What-if'),
    h('p', { class: 'muted' }, 'Recorded requests are decided again under the draft by the filter\'s own decision code, in time order. Budgets start from their spend before the window (the current counters less the window\'s own spend) and are charged as the draft would let the window run. A request priced per token keeps its recorded estimate (bodies are never stored).'),
    h('div', { class: 'cols' },
      h('div', {}, h('label', { for: 'draft' }, 'Draft policy (from the Policy page)'), draftBox),
      h('div', {},
        h('div', { class: 'row' }, h('label', { for: 'last-n' }, 'Latest recorded decisions to replay'), lastN, load),
        source,
        h('label', { for: 'decisions' }, 'Recorded decisions (JSON array; loaded from the audit log, or pasted)'), decisionsBox,
        h('label', { for: 'decisions-file' }, 'or load a file'), file)),
    h('div', { class: 'row' }, run),
    out);

  await loadRecorded();
}
