// Approvals: the queue (approvers see their own projects' approvals: the API scopes them),
// one approval at #/approvals/<id> (the link in the Slack and e-mail notifications) with
// approve / deny and a comment.
import { api, get } from '../lib/api.js';
import { h, clear, put, table } from '../lib/dom.js';
import { usd } from '../lib/money.js';

const STATUSES = ['pending', 'approved', 'denied', 'used', 'expired', 'all'];

async function list(root, ctx, status) {
  const q = status === 'all' ? '' : `?status=${status}`;
  const { approvals } = await get(`/v1/approvals${q}`);
  const picker = h('select', { id: 'status', onchange: (e) => list(root, ctx, e.target.value) },
    STATUSES.map((s) => h('option', { value: s, selected: s === status }, s)));
  const rows = approvals.map((a) => h('tr', { dataset: { approval: a.approvalId } },
    h('td', {}, h('a', { href: `#/approvals/${a.approvalId}` }, a.approvalId.slice(0, 14) + '…')),
    h('td', {}, h('span', { class: `pill ${a.status}` }, a.status)),
    h('td', {}, a.projectId), h('td', {}, a.clientId),
    h('td', { class: 'num' }, usd(a.estimatedCost)),
    h('td', {}, `${a.method} ${a.authority}${a.path}`),
    h('td', {}, a.requestedBy || '—'),
    h('td', {}, new Date(a.expiresAt).toLocaleString())));
  put(root, h('h1', {}, 'Approvals'),
    h('div', { class: 'row' }, h('label', { for: 'status' }, 'Status'), picker),
    ctx.session.role === 'admin' ? h('p', { class: 'muted' }, 'Admins see every approval; deciding needs an approver listed on the project.') : null,
    approvals.length === 0 ? h('p', { id: 'empty', dataset: { status } }, `No ${status === 'all' ? '' : status + ' '}approvals.`)
      : table(['Id', 'Status', 'Team', 'Client', h('th', { class: 'num', scope: 'col' }, 'Estimate'), 'Request', 'Requested by', 'Expires'], rows, { id: 'queue', dataset: { status } }));
}

async function one(root, ctx, id) {
  const a = await get(`/v1/approvals/${encodeURIComponent(id)}`);
  const kv = (k, v) => [h('dt', {}, k), h('dd', {}, v ?? '—')];
  const comment = h('textarea', { id: 'comment', rows: 3, maxlength: 2000 });
  const out = h('p', { id: 'decision-result', role: 'status' });
  const decide = (verb) => async () => {
    try {
      const r = await api('POST', `/v1/approvals/${encodeURIComponent(id)}/${verb}`, { body: comment.value ? { comment: comment.value } : {} });
      out.textContent = `${r.body.status === 'approved' ? 'Approved' : 'Denied'}: the agent may ${r.body.status === 'approved' ? 'replay the request once' : 'not replay it'}.`;
      await one(root, ctx, id);
      root.querySelector('#decision-result').textContent = out.textContent;
    } catch (e) {
      out.textContent = `${e.code}: ${e.message}`;
      out.className = 'error';
    }
  };
  const canDecide = ctx.session.role === 'approver' && a.status === 'pending';
  put(root, h('h1', {}, 'Approval'),
    h('p', {}, h('a', { href: '#/approvals' }, '← the queue')),
    h('div', { class: 'card' }, h('dl', { class: 'kv', id: 'approval' },
      kv('Id', a.approvalId), kv('Status', h('span', { class: `pill ${a.status}`, id: 'approval-status' }, a.status)),
      kv('Team', a.projectId), kv('Client', a.clientId), kv('Estimated cost', usd(a.estimatedCost)),
      kv('Request', `${a.method} ${a.authority}${a.path}`), kv('Requested by', a.requestedBy), kv('Justification', a.justification),
      kv('Created', new Date(a.createdAt).toLocaleString()), kv('Expires', new Date(a.expiresAt).toLocaleString()),
      kv('Policy version', String(a.policyVersion)),
      a.decision ? kv('Decision', `${a.decision.approved ? 'approved' : 'denied'} by ${a.decision.by}${a.decision.comment ? ` — “${a.decision.comment}”` : ''}`) : [])),
    canDecide ? h('div', { class: 'card' },
      h('label', { for: 'comment' }, 'Comment (optional, sent to the requester)'), comment,
      h('div', { class: 'row' },
        h('button', { type: 'button', id: 'approve', onclick: decide('approve') }, 'Approve'),
        h('button', { type: 'button', id: 'deny', class: 'danger', onclick: decide('deny') }, 'Deny'))) : null,
    out);
}

export async function render(root, ctx) {
  if (ctx.params[0]) await one(root, ctx, ctx.params[0]);
  else await list(root, ctx, 'pending');
}
