// The what-if engine: pag0-policy compiled to wasm (crate whatif/, built by `make console`).
let loading = null;

export const MISSING = 'The what-if engine is not in this build: run `make console`, then rebuild and restart the sidecar.';

export function engine() {
  if (!loading) {
    loading = import('../pkg/pag0_whatif.js')
      .then(async (m) => { await m.default(); return m; })
      .catch((e) => { loading = null; throw new Error(`${MISSING} (${e.message})`); });
  }
  return loading;
}

export async function validate(text) {
  const m = await engine();
  return JSON.parse(m.validate(text));
}
