// The console's one way to the sidecar: same-origin fetch with the session cookie; every
// state-changing call carries the session's CSRF token (x-pag0-csrf).
let csrf = null;

export function setCsrf(token) { csrf = token; }

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || String(status);
    this.details = e.details || [];
  }
}

export async function api(method, path, { body, headers = {} } = {}) {
  const h = { ...headers };
  if (method !== 'GET' && method !== 'HEAD') {
    if (csrf) h['x-pag0-csrf'] = csrf;
  }
  let payload;
  if (body !== undefined) {
    h['content-type'] = 'application/json';
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const resp = await fetch(path, { method, headers: h, body: payload, credentials: 'same-origin' });
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!resp.ok) throw new ApiError(resp.status, json);
  return { status: resp.status, headers: resp.headers, body: json };
}

export const get = (path) => api('GET', path).then((r) => r.body);
