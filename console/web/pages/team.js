// Team: one project's spend per day (its daily budget counters), this month's numbers, the
// org's top endpoints and the team's clients. Violations and anomalies per team come with the
// richer /v1/analytics (issue 16); until then the page says so rather than show zeros.
import { get } from '../lib/api.js';
import { h, clear, put, table } from '../lib/dom.js';
import { usd, rate, utilisation } from '../lib/money.js';
import { bars } from '../lib/chart.js';

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
        h('h2', {}, 'Violations and anomalies'),
        h('p', { class: 'muted', id: 'team-violations' }, 'Not recorded by this sidecar yet: they come with the decision log and the richer analytics (issues 15 and 16).'))),
    h('h2', {}, 'Clients'),
    table(['Client', 'Cost centre', 'Environment', 'Own restrictions'], clients.map((c) => h('tr', {},
      h('th', { scope: 'row' }, c.id),
      h('td', {}, c.tags?.costCenter ?? '—'),
      h('td', {}, c.tags?.environment ?? '—'),
      h('td', {}, c.additionalRestrictions ? Object.keys(c.additionalRestrictions).join(', ') : 'none')))));
}
