// Line diff (longest common subsequence) of two texts, for the policy editor.
// Returns [{op: ' ' | '+' | '-', line}]. Quadratic: policy documents are a few thousand lines.
export function diffLines(a, b) {
  const x = a.split('\n');
  const y = b.split('\n');
  const n = x.length, m = y.length;
  if (n * m > 25e6) return [{ op: '-', line: '(too large to diff)' }];
  const L = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
    }
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push({ op: ' ', line: x[i] }); i++; j++; }
    else if (L[i + 1][j] >= L[i][j + 1]) { out.push({ op: '-', line: x[i++] }); }
    else { out.push({ op: '+', line: y[j++] }); }
  }
  while (i < n) out.push({ op: '-', line: x[i++] });
  while (j < m) out.push({ op: '+', line: y[j++] });
  return out;
}

// Only the changed lines with `context` lines around them.
export function hunks(ops, context = 3) {
  const keep = new Array(ops.length).fill(false);
  ops.forEach((o, k) => {
    if (o.op !== ' ') for (let d = -context; d <= context; d++) if (ops[k + d]) keep[k + d] = true;
  });
  const out = [];
  let skipped = false;
  ops.forEach((o, k) => {
    if (keep[k]) { out.push(o); skipped = false; }
    else if (!skipped) { out.push({ op: '…', line: '' }); skipped = true; }
  });
  return out;
}
