// Team: one project's spend per day (its daily budget counters), this month's numbers, the
// org's top endpoints, the team's violations this month (denials by code from /v1/analytics,
// the latest of each code from the decision rows of /v1/audit, newest first), its anomalies
// (/v1/anomalies, with their explanations) and its clients.
import { get } from '../lib/api.js';
import { h, clear, put, table } from '../lib/dom.js';
import { usd, rate, utilisation } from '../lib/money.js';
import { bars } from '../lib/chart.js';
import { query } from '../lib/audit.js';

const when = (t) => (t ? t.replace('T', ' ').replace(/\.\d+Z$|Z$/, ' UTC') : '—');

function violationsTable(v, latest) {
  const rows = Object.entries(v.byCode || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  if (!rows.length) return h('p', { id: 'team-violations', dataset: { count: '0' } }, 'No request of this team was refused this month.');
  return table(['Code', h('th', { class: 'num', scope: 'col' }, 'Count'), 'Latest', 'Latest request'],
    rows.map(([code, n]) => {
      const e = latest[code];
      return h('tr', { dataset: { code, count: String(n) } },
        h('th', { scope: 'row' }, h('code', {}, code)),
        h('td', { class: 'num', dataset: { field: 'count' } }, String(n)),
        h('td', { dataset: { field: 'latest' } }, e ? h('time', { datetime: e.at }, when(e.at)) : '—'),
        h('td', {}, e ? `${e.clientId ?? '—'} → ${e.host ?? '—'}` : '—'));
    }),
    { id: 'team-violations', dataset: { count: String(v.count ?? 0) } });
}

function anomaliesTable(list) {
  if (!list.length) return h('p', { id: 'team-anomalies', class: 'muted', dataset: { count: '0' } }, 'Anomaly detection found nothing unusual for this team this month.');
  return table(['Window', 'Kind', 'Client', 'Explanation'],
    list.map((a) => h('tr', { dataset: { kind: a.kind } },
      h('td', {}, h('time', { datetime: a.windowFrom }, when(a.windowFrom))),
      h('td', {}, h('code', {}, a.kind)),
      h('td', {}, a.clientId ?? '—'),
      h('td', { dataset: { field: 'explanation' } }, a.explanation))),
    { id: 'team-anomalies', dataset: { count: String(list.length) } });
}

export async function render(root, ctx) {
  const [policy, month, endpoints, budgets] = await Promise.all([
    get('/v1/policy'),
    get('/v1/analytics?period=month&groupBy=project'),
    get('/v1/analytics?period=month&groupBy=endpoint'),
    get('/v1/budgets'),
  ]);
  const projects = policy.projects || [];
  const id = ctx.params[0] || projects[0]?.id;
  const project = projects.find((p) => p.id === id);
  const picker = h('select', { id: 'team-select', onchange: (e) => { location.hash = `#/team/${encodeURIComponent(e.target.value)}`; } },
    projects.map((p) => h('option', { value: p.id, selected: p.id === id }, `${p.name || p.id} (${p.id})`)));
  put(root, h('h1', {}, project ? `Team ${project.name || project.id}` : 'Teams'),
    h('div', { class: 'row' }, h('label', { for: 'team-select' }, 'Team'), picker));
  if (!project) { root.append(h('p', {}, 'No such team in the current policy.')); return; }

  const g = month.groups.find((x) => x.key === id) || { totalCost: '0', totalRequests: 0, cacheHits: 0, cacheHitRate: null, savings: '0' };
  const daily = budgets.counters
    .filter((c) => c.scope === 'project.daily' && c.projectId === id)
    .sort((a, b) => a.period.localeCompare(b.period))
    .slice(-31);
  const monthly = budgets.counters.find((c) => c.scope === 'project.monthly' && c.projectId === id && c.period === month.periodKey);
  const clients = (policy.clients || []).filter((c) => c.projectId === id);
  const allowed = project.policy?.allowedEndpoints;
  const violations = g.violations || { count: 0, byCode: {} };
  // The latest denial of each code in the period: one newest-first audit row per code.
  const codes = Object.keys(violations.byCode || {});
  const [latest, anomalies] = await Promise.all([
    Promise.all(codes.map((code) => get(query({ kind: 'decision', decision: 'deny', projectId: id, code, from: month.from, to: month.to, order: 'desc', limit: 1 }))
      .then((r) => [code, r.entries[0] || null]))).then((pairs) => Object.fromEntries(pairs)),
    get(`/v1/anomalies?project=${encodeURIComponent(id)}&since=${encodeURIComponent(month.from)}&limit=50`),
  ]);

  root.append(
    h('div', { class: 'grid' },
      h('div', { class: 'card stat', id: 'team-month' }, h('div', { class: 'label' }, `Spend ${month.periodKey}`), h('div', { class: 'value', dataset: { micros: g.totalCost } }, usd(g.totalCost)),
        h('div', { class: 'sub' }, utilisation(h, monthly?.spent ?? '0', monthly?.limit ?? project.policy?.monthlyBudget ?? null))),
      h('div', { class: 'card stat' }, h('div', { class: 'label' }, 'Requests'), h('div', { class: 'value' }, String(g.totalRequests)), h('div', { class: 'sub' }, `${g.cacheHits} cache hits (${rate(g.cacheHitRate)})`)),
      h('div', { class: 'card stat' }, h('div', { class: 'label' }, 'Saved by the cache'), h('div', { class: 'value' }, usd(g.savings)))),
    h('h2', {}, 'Spend per day'),
    h('div', { class: 'card' }, bars(daily.map((c) => ({ label: c.period.slice(5), micros: BigInt(c.spent), title: `${c.period}: ${usd(c.spent)}${c.limit ? ` of ${usd(c.limit)}` : ''}` })),
      { label: `Spend per day of ${id}`, format: (m) => usd(m.toString()) }),
    h('p', { class: 'muted' }, daily.length ? 'From the team\'s daily budget counters.' : 'The team has no daily budget counter yet (no daily budget, or no spend).')),
    h('div', { class: 'cols' },
      h('div', {},
        h('h2', {}, 'Top endpoints (all teams, this month)'),
        table(['Endpoint', h('th', { class: 'num', scope: 'col' }, 'Spend'), h('th', { class: 'num', scope: 'col' }, 'Requests'), 'On this team\'s list'],
          endpoints.groups.slice(0, 10).map((e) => h('tr', {}, h('td', {}, e.key), h('td', { class: 'num' }, usd(e.totalCost)), h('td', { class: 'num' }, String(e.totalRequests)),
            h('td', {}, allowed ? (allowed.some((a) => e.key === a || e.key.endsWith(`.${a}`) || a.startsWith(`${e.key}/`)) ? 'yes' : 'no') : 'no list'))))),
      h('div', {},
        h('h2', {}, `Violations ${month.periodKey}`),
        violationsTable(violations, latest),
        h('p', { class: 'muted' }, 'Requests the filter refused (decision rows of the audit log), by code; held requests are not violations.'))),
    h('h2', {}, 'Anomalies'),
    anomaliesTable(anomalies.anomalies || []),
    h('h2', {}, 'Clients'),
    table(['Client', 'Cost centre', 'Environment', 'Own restrictions'], clients.map((c) => h('tr', {},
      h('th', { scope: 'row' }, c.id),
      h('td', {}, c.tags?.costCenter ?? '—'),
      h('td', {}, c.tags?.environment ?? '—'),
      h('td', {}, c.additionalRestrictions ? Object.keys(c.additionalRestrictions).join(', ') : 'none')))));
}
