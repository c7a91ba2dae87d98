// Hand-written SVG charts (no library): bars of integer micro-USD per label.
const NS = 'http://www.w3.org/2000/svg';

function s(tag, attrs, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// points: [{label, micros (BigInt), title}]; format: BigInt -> string.
export function bars(points, { label, format }) {
  const W = 720, H = 220, left = 70, bottom = 28, top = 12;
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label });
  const max = points.reduce((m, p) => (p.micros > m ? p.micros : m), 0n);
  const scale = max === 0n ? 1n : max;
  const plotH = H - bottom - top;
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    svg.append(s('line', { x1: left, x2: W - 8, y1: y, y2: y, stroke: '#e3e6ec' }));
    svg.append(s('text', { x: left - 6, y: y + 4, 'text-anchor': 'end' }, format((scale * BigInt(i)) / 4n)));
  }
  const n = Math.max(points.length, 1);
  const slot = (W - left - 8) / n;
  points.forEach((p, i) => {
    const hpx = Number((p.micros * 10000n) / scale) / 10000 * plotH;
    const width = Math.min(slot * 0.7, 48);
    const x = left + i * slot + (slot - width) / 2;
    const rect = s('rect', { x, y: top + plotH - hpx, width, height: Math.max(hpx, 0.5), fill: '#2d5bd7' });
    rect.append(s('title', {}, p.title || `${p.label}: ${format(p.micros)}`));
    svg.append(rect);
    if (n <= 16 || i % Math.ceil(n / 16) === 0) {
      svg.append(s('text', { x: x + width / 2, y: H - 10, 'text-anchor': 'middle' }, p.label));
    }
  });
  if (points.length === 0) svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'no spend recorded yet'));
  return svg;
}
