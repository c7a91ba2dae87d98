// Overview: org spend against its budgets, every team's month and day utilisation, cache
// hit rate and savings. From /v1/analytics (spend, hits, savings) and /v1/budgets (counters
// against limits); refreshed every 5 s.
import { get } from '../lib/api.js';
import { h, clear, put, table } from '../lib/dom.js';
import { usd, rate, utilisation } from '../lib/money.js';

const REFRESH_MS = 5000;

function counter(budgets, scope, projectId, period) {
  return budgets.counters.find((c) => c.scope === scope && (c.projectId || null) === projectId && c.period === period);
}

function stat(label, value, sub, attrs = {}) {
  return h('div', { class: 'card stat', ...attrs }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), sub && h('div', { class: 'sub' }, sub));
}

async function load() {
  const [month, day, budgets, policy] = await Promise.all([
    get('/v1/analytics?period=month&groupBy=project'),
    get('/v1/analytics?period=day&groupBy=project'),
    get('/v1/budgets'),
    get('/v1/policy').catch(() => null),
  ]);
  return { month, day, budgets, policy };
}

function view(root, { month, day, budgets, policy }) {
  const orgMonth = counter(budgets, 'org.monthly', null, month.periodKey);
  const orgDay = counter(budgets, 'org.daily', null, day.periodKey);
  const g = policy?.globalPolicy || {};
  const monthLimit = orgMonth?.limit ?? g.monthlyBudget ?? null;
  const dayLimit = orgDay?.limit ?? g.dailyBudget ?? null;
  const byKey = (a) => Object.fromEntries(a.groups.map((x) => [x.key, x]));
  const m = byKey(month);
  const d = byKey(day);
  const teams = new Map();
  for (const p of policy?.projects || []) teams.set(p.id, p.name || p.id);
  for (const k of Object.keys(m)) if (!teams.has(k)) teams.set(k, k);

  const rows = [...teams].map(([id, name]) => {
    const pm = counter(budgets, 'project.monthly', id, month.periodKey);
    const pd = counter(budgets, 'project.daily', id, day.periodKey);
    const proj = (policy?.projects || []).find((p) => p.id === id);
    const mLimit = pm?.limit ?? proj?.policy?.monthlyBudget ?? null;
    const dLimit = pd?.limit ?? proj?.policy?.dailyBudget ?? null;
    const mg = m[id] || { totalCost: '0', totalRequests: 0, cacheHitRate: null, savings: '0' };
    const dg = d[id] || { totalCost: '0' };
    const cell = (field, micros, cls = 'num') => h('td', { class: cls, dataset: { field, micros } }, usd(micros));
    return h('tr', { dataset: { team: id } },
      h('th', { scope: 'row' }, h('a', { href: `#/team/${encodeURIComponent(id)}` }, name), h('div', { class: 'muted' }, id)),
      cell('month-spend', mg.totalCost),
      h('td', { dataset: { field: 'month-utilisation' } }, utilisation(h, pm?.spent ?? '0', mLimit), h('div', { class: 'muted' }, `of ${usd(mLimit)}`)),
      cell('day-spend', dg.totalCost),
      h('td', { dataset: { field: 'day-utilisation' } }, utilisation(h, pd?.spent ?? '0', dLimit), h('div', { class: 'muted' }, `of ${usd(dLimit)}`)),
      h('td', { class: 'num', dataset: { field: 'requests' } }, String(mg.totalRequests)),
      h('td', { class: 'num', dataset: { field: 'cache-hit-rate' } }, rate(mg.cacheHitRate)),
      cell('savings', mg.savings));
  });

  put(root, 
    h('h1', {}, 'Overview'),
    h('p', { class: 'muted' }, `${policy?.orgId ?? 'org'} · month ${month.periodKey}, day ${day.periodKey} (${month.timezone}) · policy v${month.policyVersion ?? '—'} · `,
      h('span', { id: 'updated' }, `updated ${new Date().toLocaleTimeString()}`)),
    h('div', { class: 'grid' },
      stat('Org spend this month', usd(month.total.totalCost), monthLimit ? h('span', {}, utilisation(h, orgMonth?.spent ?? '0', monthLimit), ` of ${usd(monthLimit)}`) : 'no monthly budget', { id: 'org-month', dataset: { micros: month.total.totalCost } }),
      stat('Org spend today', usd(day.total.totalCost), dayLimit ? h('span', {}, utilisation(h, orgDay?.spent ?? '0', dayLimit), ` of ${usd(dayLimit)}`) : 'no daily budget', { id: 'org-day', dataset: { micros: day.total.totalCost } }),
      stat('Cache hit rate (month)', rate(month.total.cacheHitRate), `${month.total.cacheHits} hits of ${month.total.totalRequests} requests`, { id: 'org-cache' }),
      stat('Saved by the cache (month)', usd(month.total.savings), 'cost the hits avoided', { id: 'org-savings', dataset: { micros: month.total.savings } })),
    h('h2', {}, 'Teams'),
    table(['Team', h('th', { class: 'num', scope: 'col' }, 'Month spend'), 'Month budget', h('th', { class: 'num', scope: 'col' }, 'Today'), 'Day budget',
      h('th', { class: 'num', scope: 'col' }, 'Requests'), h('th', { class: 'num', scope: 'col' }, 'Cache hit rate'), h('th', { class: 'num', scope: 'col' }, 'Savings')], rows, { id: 'teams' }),
    h('p', { class: 'muted' }, 'Spend from /v1/analytics (the usage ledger); utilisation from the budget counters (/v1/budgets). Refreshes every 5 seconds.'));
}

export async function render(root, ctx) {
  view(root, await load());
  ctx.every(REFRESH_MS, async () => {
    try { view(root, await load()); root.dataset.refreshed = String(Date.now()); } catch { /* next tick */ }
  });
}
