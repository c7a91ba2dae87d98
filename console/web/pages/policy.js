// Policy: edit the document with every `path: reason` error shown as you type (the wasm
// build of the sidecar's own validator), a diff against the current version, apply with
// If-Match (a concurrent edit is a conflict, not a lost update), and the version history.
import { api, get } from '../lib/api.js';
import { h, clear, put, table } from '../lib/dom.js';
import { validate } from '../lib/engine.js';
import { diffLines, hunks } from '../lib/diff.js';
import { draft, pretty } from '../lib/draft.js';

export async function render(root, ctx) {
  const cur = await api('GET', '/v1/policy');
  const version = Number(cur.headers.get('x-pag0-policy-version'));
  const currentText = pretty(cur.body);
  if (draft.text === null || draft.baseVersion !== version) {
    draft.text = currentText;
    draft.baseVersion = version;
  }
  const editor = h('textarea', { id: 'editor', rows: 28, spellcheck: 'false', 'aria-describedby': 'validation', 'aria-label': 'Policy document (JSON)' });
  editor.value = draft.text;
  const status = h('div', { id: 'validation', role: 'status', 'aria-live': 'polite' });
  const apply = h('button', { type: 'button', id: 'apply', disabled: true }, `Apply as version ${version + 1}`);
  const reset = h('button', { type: 'button', id: 'reset', class: 'secondary' }, 'Discard changes');
  const result = h('p', { id: 'apply-result', role: 'status' });
  const diff = h('div', { class: 'diff', id: 'diff', 'aria-label': 'Changes against the current version' });
  let errors = [];
  let seq = 0;

  const showDiff = () => {
    clear(diff);
    const ops = hunks(diffLines(currentText, editor.value));
    const changed = ops.some((o) => o.op === '+' || o.op === '-');
    if (!changed) { diff.append(h('span', { class: 'ctx' }, 'No changes against the current version.')); return false; }
    for (const o of ops) {
      const cls = o.op === '+' ? 'add' : o.op === '-' ? 'del' : 'ctx';
      diff.append(h('div', { class: cls }, o.op === '…' ? '…' : `${o.op} ${o.line}`));
    }
    return true;
  };

  const check = async () => {
    const mine = ++seq;
    draft.text = editor.value;
    const changed = showDiff();
    try {
      errors = await validate(editor.value);
    } catch (e) {
      errors = null;
      put(status, h('p', { class: 'error' }, e.message));
      apply.disabled = true;
      return;
    }
    if (mine !== seq) return;
    editor.setAttribute('aria-invalid', errors.length ? 'true' : 'false');
    put(status, errors.length
      ? h('ul', { class: 'errors', id: 'errors' }, errors.map((e) => h('li', {}, e)))
      : h('p', { class: 'ok-note' }, changed ? 'The draft validates.' : 'The current version.'));
    apply.disabled = errors.length > 0 || !changed;
  };
  let timer = null;
  editor.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(check, 120); });
  reset.addEventListener('click', () => { editor.value = currentText; check(); });
  apply.addEventListener('click', async () => {
    apply.disabled = true;
    try {
      const r = await api('PUT', '/v1/policy', { body: editor.value, headers: { 'if-match': `"${version}"` } });
      // Said only on the re-rendered page, so "Applied" is never shown beside the old history.
      const said = `Applied as version ${r.body.version} by ${r.body.author}.`;
      draft.text = null;
      await render(root, ctx);
      const fresh = root.querySelector('#apply-result');
      fresh.className = 'ok-note';
      fresh.textContent = said;
    } catch (e) {
      result.className = 'error';
      result.textContent = e.code === 'VERSION_CONFLICT'
        ? `Someone applied another version meanwhile: ${e.message}`
        : `${e.code}: ${e.message}${e.details.length ? ` (${e.details.join('; ')})` : ''}`;
      apply.disabled = false;
    }
  });

  const { versions } = await get('/v1/policy/versions');
  const history = table(['Version', 'Author', 'Created', ''], versions.map((v) => h('tr', { dataset: { version: v.version } },
    h('td', {}, String(v.version)), h('td', {}, v.author), h('td', {}, new Date(v.createdAt).toLocaleString()),
    h('td', {}, v.version === version ? h('span', { class: 'muted' }, 'current')
      : h('button', { type: 'button', class: 'secondary', onclick: async () => {
        const old = await get(`/v1/policy/versions/${v.version}`);
        editor.value = pretty(old);
        check();
        editor.focus();
      } }, `Load v${v.version} into the editor`)))), { id: 'history' });

  put(root, h('h1', {}, 'Policy'),
    h('p', { class: 'muted' }, `Version ${version} by ${cur.headers.get('x-pag0-policy-author')}, ${new Date(cur.headers.get('x-pag0-policy-created-at')).toLocaleString()}. Errors are checked as you type by the same validator the sidecar runs; a document with errors cannot be applied.`),
    h('div', { class: 'cols' },
      h('div', {}, editor, status, h('div', { class: 'row' }, apply, reset, h('a', { href: '#/whatif' }, 'Try the draft on recorded traffic →')), result),
      h('div', {}, h('h2', {}, 'Diff against the current version'), diff, h('h2', {}, 'History'), history)));
  await check();
}
