// The console's shell: sign-in, navigation and the page registry. Each page is a module
// exporting `render(root, ctx)`; adding a page is one entry in PAGES.
import { api, get, setCsrf, ApiError } from './lib/api.js';
import { h, clear } from './lib/dom.js';
import { MISSING } from './lib/engine.js';

const PAGES = [
  { id: 'overview', title: 'Overview', roles: ['admin'], load: () => import('./pages/overview.js') },
  { id: 'team', title: 'Teams', roles: ['admin'], load: () => import('./pages/team.js') },
  { id: 'approvals', title: 'Approvals', roles: ['admin', 'approver'], load: () => import('./pages/approvals.js') },
  { id: 'policy', title: 'Policy', roles: ['admin'], load: () => import('./pages/policy.js') },
  { id: 'whatif', title: 'What-if', roles: ['admin'], load: () => import('./pages/whatif.js') },
  { id: 'budgets', title: 'Budgets', roles: ['admin'], load: () => import('./pages/budgets.js') },
  { id: 'audit', title: 'Audit', roles: ['admin'], load: () => import('./pages/audit.js') },
  { id: 'reports', title: 'Reports', roles: ['admin'], load: () => import('./pages/reports.js') },
];

const $ = (id) => document.getElementById(id);
let session = null;
let leaving = [];

function banner(text) {
  const b = $('banner');
  b.hidden = !text;
  b.textContent = text || '';
}

function allowed() {
  return PAGES.filter((p) => session && p.roles.includes(session.role));
}

function showSignIn(message) {
  session = null;
  setCsrf(null);
  $('nav').hidden = true;
  $('who').hidden = true;
  clear($('page'));
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = message || '';
  $('token').focus();
}

function showShell() {
  $('sign-in').hidden = true;
  $('nav').hidden = false;
  $('who').hidden = false;
  $('who-name').textContent = `${session.name} (${session.role})`;
  const nav = clear($('nav'));
  for (const p of allowed()) nav.append(h('a', { href: `#/${p.id}`, id: `nav-${p.id}` }, p.title));
  banner(session.engine ? '' : MISSING);
}

async function route() {
  if (!session) return;
  for (const f of leaving) f();
  leaving = [];
  const [id, ...rest] = location.hash.replace(/^#\/?/, '').split('/');
  const pages = allowed();
  const page = pages.find((p) => p.id === id);
  if (!page) {
    location.replace(`#/${pages[0].id}`);
    return;
  }
  for (const a of $('nav').querySelectorAll('a')) {
    if (a.id === `nav-${page.id}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${page.title} · Pag0 console`;
  const root = clear($('page'));
  root.dataset.page = page.id;
  const ctx = {
    session,
    params: rest.map(decodeURIComponent),
    onLeave: (f) => leaving.push(f),
    every: (ms, f) => { const t = setInterval(f, ms); leaving.push(() => clearInterval(t)); },
  };
  try {
    const mod = await page.load();
    await mod.render(root, ctx);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) { showSignIn('Your session ended: sign in again.'); return; }
    root.append(h('p', { class: 'error', role: 'alert' }, `Could not load ${page.title}: ${e.message}`));
  }
  root.dataset.ready = 'true';
  const heading = root.querySelector('h1');
  if (heading) { heading.tabIndex = -1; heading.focus({ preventScroll: true }); }
}

async function start() {
  $('sign-in-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = $('token').value;
    try {
      const r = await api('POST', 'api/session', { body: { token } });
      $('token').value = '';
      signedIn(r.body);
    } catch (e) {
      $('sign-in-error').textContent = e.status === 401 ? 'Unknown token.' : e.message;
    }
  });
  $('sign-out').addEventListener('click', async () => {
    try { await api('DELETE', 'api/session'); } catch { /* already gone */ }
    showSignIn('Signed out.');
  });
  window.addEventListener('hashchange', route);
  try {
    signedIn(await get('api/session'));
  } catch {
    showSignIn('');
  }
}

function signedIn(s) {
  session = s;
  setCsrf(s.csrfToken);
  document.body.dataset.role = s.role;
  showShell();
  route();
}

start();
