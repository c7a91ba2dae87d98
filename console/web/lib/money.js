// Money is integer micro-USD as decimal strings (SPEC §2): BigInt here, never floats.
const MICROS = 1000000n;

export function big(micros) {
  if (micros === null || micros === undefined || micros === '') return null;
  return BigInt(micros);
}

// "$12.34", or every digit that is not zero: "$0.001234".
export function usd(micros) {
  const m = big(micros);
  if (m === null) return '—';
  const neg = m < 0n;
  const a = neg ? -m : m;
  const whole = a / MICROS;
  let frac = (a % MICROS).toString().padStart(6, '0').replace(/0+$/, '');
  if (frac.length < 2) frac = frac.padEnd(2, '0');
  const grouped = whole.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return `${neg ? '-' : ''}$${grouped}.${frac}`;
}

// spent / limit as a percentage with one decimal ("83.4 %"), from integers.
export function percent(spent, limit) {
  const s = big(spent);
  const l = big(limit);
  if (s === null || l === null || l === 0n) return null;
  const tenths = (s * 1000n) / l;
  const text = tenths === 0n && s > 0n ? '< 0.1 %' : `${tenths / 10n}.${tenths % 10n} %`;
  return { tenths: Number(tenths), text };
}

// A utilisation bar plus its text; colour by threshold.
export function utilisation(h, spent, limit) {
  const p = percent(spent, limit);
  if (!p) return h('span', { class: 'muted' }, 'no budget');
  const cls = p.tenths >= 1000 ? 'bar bad' : p.tenths >= 800 ? 'bar warn' : 'bar';
  const width = Math.min(100, p.tenths / 10);
  // The width through the CSSOM: the console's CSP allows no inline style attributes.
  const fill = h('span', {});
  fill.style.width = `${width}%`;
  return h('span', { class: 'util' },
    h('span', { class: cls, role: 'img', 'aria-label': `${p.text} used` }, fill),
    p.text);
}

// A cache hit rate (a plain ratio, not money).
export function rate(r) {
  return r === null || r === undefined ? '—' : `${(r * 100).toFixed(1)} %`;
}
