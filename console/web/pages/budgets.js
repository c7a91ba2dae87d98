// Budgets: every counter with its limit, spent, leased and unallocated room, and the leases
// each filter instance holds (/v1/budgets).
import { get } from '../lib/api.js';
import { h, clear, put, table } from '../lib/dom.js';
import { usd, utilisation } from '../lib/money.js';

function view(root, b) {
  const rows = b.counters.map((c) => h('tr', { dataset: { counter: c.counter } },
    h('th', { scope: 'row' }, h('code', {}, c.counter)),
    h('td', { class: 'num' }, usd(c.limit)),
    h('td', { class: 'num', dataset: { field: 'spent', micros: c.spent } }, usd(c.spent)),
    h('td', { class: 'num' }, usd(c.leased)),
    h('td', { class: 'num' }, usd(c.unallocated)),
    h('td', {}, c.limit ? utilisation(h, c.spent, c.limit) : h('span', { class: 'muted' }, 'not limited now')),
    h('td', {}, c.leases.length === 0 ? h('span', { class: 'muted' }, 'none')
      : h('ul', {}, c.leases.map((l) => h('li', {}, `${l.instanceId}: ${usd(l.granted)} until ${new Date(l.expiresAt).toLocaleTimeString()}`))))));
  put(root, 
    h('h1', {}, 'Budgets'),
    h('p', { class: 'muted' }, `Counters under policy v${b.policyVersion}. Spent is committed usage; leased is room held by Envoy instances (each spends its slice without asking); unallocated is what is left to lease.`),
    b.counters.length === 0 ? h('p', {}, 'No counter has been charged yet.')
      : table(['Counter', h('th', { class: 'num', scope: 'col' }, 'Limit'), h('th', { class: 'num', scope: 'col' }, 'Spent'), h('th', { class: 'num', scope: 'col' }, 'Leased'),
        h('th', { class: 'num', scope: 'col' }, 'Unallocated'), 'Used', 'Leases'], rows, { id: 'counters' }));
}

export async function render(root, ctx) {
  view(root, await get('/v1/budgets'));
  ctx.every(5000, async () => { try { view(root, await get('/v1/budgets')); } catch { /* next tick */ } });
}
