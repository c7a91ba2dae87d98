// The policy draft being edited, shared by the Policy and What-if pages (kept in memory for
// this tab only; a reload starts from the current version again).
export const draft = { text: null, baseVersion: null };

export function pretty(doc) {
  return JSON.stringify(doc, null, 2);
}
