// Drives Debian's Chromium through the console for envoy/tests/console_browser.rs, which
// starts the real processes, writes the input file and checks what this prints.
//
//   node console.mjs INPUT.json     (phase "approver" or "admin", see the Rust test)
//
// Prints one line `RESULT {json}` with what the pages showed; exits 1 on any step that
// could not be done (with the step and the error on stderr). Screenshots go to input.shots.
import { chromium } from 'playwright-core';
import { mkdtempSync, readFileSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const input = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const WAIT = { timeout: 20000 };
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];

let step = 'start';
const result = {};
const profile = mkdtempSync(join(tmpdir(), 'pag0-chromium-'));
mkdirSync(input.shots, { recursive: true });
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: input.chromium || '/usr/bin/chromium',
  headless: true,
  args: FLAGS,
  viewport: { width: 1366, height: 900 },
});
const page = ctx.pages()[0] || await ctx.newPage();
const consoleErrors = [];
page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
page.on('pageerror', (e) => consoleErrors.push(e.message));

async function shot(name) {
  await page.screenshot({ path: join(input.shots, `${name}.png`), fullPage: true });
}

async function signIn(token) {
  await page.locator('#sign-in').waitFor({ state: 'visible', ...WAIT });
  await page.locator('#token').fill(token);
  await page.locator('#token').press('Enter');
  await page.locator('#nav a').first().waitFor(WAIT);
}

async function gotoPage(id) {
  await page.locator(`#nav-${id}`).click();
  await page.locator(`#page[data-page="${id}"][data-ready="true"]`).waitFor(WAIT);
}

// fetch from inside the page: same origin, the session cookie (unless omitted).
function inPage(fn, arg) {
  return page.evaluate(fn, arg);
}

async function approverPhase() {
  step = 'open the notification link';
  await page.goto(input.approvalLink);
  await shot('sign-in');
  step = 'sign in as the approver';
  await signIn(input.approverToken);
  await page.locator('#approval').waitFor(WAIT);
  result.landedOn = await page.evaluate(() => location.hash);
  result.shownId = await page.locator('#approval dd').first().textContent();
  await shot('approval');

  step = 'approver API checks';
  Object.assign(result, await inPage(async () => {
    const s = await (await fetch('api/session')).json();
    const budgets = await fetch('/v1/budgets');
    const put = await fetch('/v1/policy', { method: 'PUT', headers: { 'x-pag0-csrf': s.csrfToken, 'content-type': 'application/json' }, body: '{}' });
    const noCsrf = await fetch('/v1/policy', { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{}' });
    const queue = await (await fetch('/v1/approvals?status=pending')).json();
    return { role: s.role, budgetsStatus: budgets.status, putStatus: put.status, putNoCsrfStatus: noCsrf.status,
      queue: queue.approvals.map((a) => a.approvalId) };
  }));

  step = 'approve with a comment (keyboard)';
  await page.locator('#comment').fill(input.comment);
  await page.locator('#approve').focus();
  await page.keyboard.press('Enter');
  await page.locator('#approval-status', { hasText: 'approved' }).waitFor(WAIT);
  result.statusAfter = await page.locator('#approval-status').textContent();
  result.decisionText = await page.locator('#approval').textContent();
  await shot('approval-approved');

  step = 'the approver\'s queue';
  await gotoPage('approvals');
  await page.locator('#status').selectOption('all');
  // The list re-renders on change: wait for the 'all' table, not the 'pending' one it replaces.
  await page.locator('#queue[data-status="all"]').waitFor(WAIT);
  result.queueAll = await page.locator('#queue tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.approval));
  result.nav = await page.locator('#nav a').allTextContents();
  await shot('approvals-approver');
}

async function adminPhase() {
  step = 'requests without the session cookie';
  const plain = async (path) => (await fetch(input.base + path)).status;
  result.noCookie = { budgets: await plain('/v1/budgets'), analytics: await plain('/v1/analytics'), session: await plain('/console/api/session'), approvals: await plain('/v1/approvals') };

  step = 'sign in as the admin';
  await page.goto(`${input.base}/console/`);
  await signIn(input.adminToken);
  await page.locator('#teams tr[data-team]').first().waitFor(WAIT);
  result.landedOn = await page.evaluate(() => location.hash);
  result.omitCookie = await inPage(async () => (await fetch('/v1/budgets', { credentials: 'omit' })).status);
  result.overview = await page.locator('#teams tr[data-team]').evaluateAll((rows) => rows.map((r) => ({
    team: r.dataset.team,
    monthSpend: r.querySelector('[data-field="month-spend"]').dataset.micros,
    daySpend: r.querySelector('[data-field="day-spend"]').dataset.micros,
    savings: r.querySelector('[data-field="savings"]').dataset.micros,
    requests: r.querySelector('[data-field="requests"]').textContent,
    shownMonthSpend: r.querySelector('[data-field="month-spend"]').textContent,
  })));
  result.orgMonth = await page.locator('#org-month').getAttribute('data-micros');
  await shot('overview');

  step = 'team page';
  await gotoPage('team');
  await page.locator('#team-month').waitFor(WAIT);
  await page.locator('#team-violations').waitFor(WAIT);
  const teamFacts = async () => ({
    heading: await page.locator('#page h1').textContent(),
    violationsCount: await page.locator('#team-violations').getAttribute('data-count'),
    violations: await page.locator('#team-violations tbody tr').evaluateAll((rows) => rows.map((r) => ({
      code: r.dataset.code,
      count: r.querySelector('[data-field="count"]').textContent,
      latest: r.querySelector('[data-field="latest"] time')?.getAttribute('datetime') ?? null,
    }))),
    anomaliesCount: await page.locator('#team-anomalies').getAttribute('data-count'),
    anomalies: await page.locator('#team-anomalies tbody tr').evaluateAll((rows) => rows.map((r) => ({
      kind: r.dataset.kind, explanation: r.querySelector('[data-field="explanation"]').textContent,
    }))),
  });
  result.team = await teamFacts();
  await shot('team');
  step = 'team page: another team, by its picker';
  await page.locator('#team-select').selectOption(input.anomalyTeam);
  await page.locator('#page h1', { hasText: input.anomalyTeamName }).waitFor(WAIT);
  await page.locator('#team-anomalies').waitFor(WAIT);
  result.otherTeam = await teamFacts();
  await shot('team-anomalies');

  step = 'budgets page';
  await gotoPage('budgets');
  await page.locator('#counters').waitFor(WAIT);
  result.counters = await page.locator('#counters tbody tr').evaluateAll((rows) => rows.map((r) => ({ counter: r.dataset.counter, spent: r.querySelector('[data-field="spent"]').dataset.micros })));
  await shot('budgets');

  step = 'approvals page';
  await gotoPage('approvals');
  await page.locator('#status').selectOption('all');
  // The list re-renders on change: wait for the 'all' table, not the 'pending' one it replaces.
  await page.locator('#queue[data-status="all"]').waitFor(WAIT);
  result.adminQueue = await page.locator('#queue tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.approval));
  await shot('approvals');

  step = 'policy page: a bad edit';
  await gotoPage('policy');
  await page.locator('#validation .ok-note').waitFor(WAIT);
  await page.locator('#editor').fill(input.badPolicy);
  await page.locator('#errors li', { hasText: input.badPath }).waitFor(WAIT);
  result.inlineErrors = await page.locator('#errors li').allTextContents();
  result.applyDisabledWhenBad = await page.locator('#apply').isDisabled();
  result.editorInvalid = await page.locator('#editor').getAttribute('aria-invalid');
  await shot('policy-error');

  step = 'policy page: a good edit, diff, apply';
  await page.locator('#editor').fill(input.goodPolicy);
  await page.locator('#validation .ok-note', { hasText: 'validates' }).waitFor(WAIT);
  result.diff = await page.locator('#diff .add, #diff .del').allTextContents();
  await shot('policy-diff');
  await page.locator('#apply').click();
  await page.locator('#apply-result', { hasText: 'Applied as version' }).waitFor(WAIT);
  result.applied = await page.locator('#apply-result').textContent();
  result.history = await page.locator('#history tbody tr').evaluateAll((rows) => rows.map((r) => Number(r.dataset.version)));
  await shot('policy-applied');

  step = 'what-if page: the last N decisions of the audit log';
  await gotoPage('whatif');
  await page.locator('#source[data-state="audit"]').waitFor(WAIT);
  result.whatifSource = await page.locator('#source').textContent();
  result.whatifDefaultN = await page.locator('#last-n').inputValue();
  result.whatifLoadedRows = Number(await page.locator('#source').getAttribute('data-rows'));
  // A smaller N, by keyboard: the field, then Enter on the load button.
  await page.locator('#last-n').fill('3');
  await page.locator('#load').focus();
  await page.keyboard.press('Enter');
  await page.locator('#source[data-state="audit"][data-rows="3"]').waitFor(WAIT);
  result.whatifRowsOfThree = Number(await page.locator('#source').getAttribute('data-rows'));
  await page.locator('#last-n').fill('500');
  await page.locator('#load').click();
  await page.locator(`#source[data-state="audit"][data-rows="${result.whatifLoadedRows}"]`).waitFor(WAIT);
  result.whatifLoadedCount = Number(await page.locator('#source').getAttribute('data-count'));
  await page.locator('#draft').fill(input.whatifDraft);
  await page.locator('#run').click();
  await page.locator('#result[data-runs="1"] #summary').waitFor(WAIT);
  result.whatifAudit = {
    rows: await page.locator('#changes tbody tr').evaluateAll((rows) => rows.map((r) => ({ id: r.dataset.id, kind: r.dataset.kind, request: r.children[3].textContent }))),
    allowToDeny: await page.locator('#allow-to-deny').textContent(),
    spendRemoved: await page.locator('#spend-removed').getAttribute('data-micros'),
    replayed: await page.locator('#replayed').textContent(),
  };
  await shot('whatif-audit');

  step = 'what-if page: pasted decisions';
  await page.locator('#decisions').fill(JSON.stringify(input.whatifDecisions));
  await page.locator('#run').click();
  await page.locator('#result[data-runs="2"] #summary').waitFor(WAIT);
  result.whatifRows = await page.locator('#changes tbody tr').evaluateAll((rows) => rows.map((r) => ({ id: r.dataset.id, kind: r.dataset.kind })));
  result.whatifAllowToDeny = await page.locator('#allow-to-deny').textContent();
  await shot('whatif');

  step = 'the wasm engine, called directly';
  result.wasm = await inPage(async ({ draft, input: replayInput, bad }) => {
    const m = await import('/console/pkg/pag0_whatif.js');
    await m.default();
    return { replay: m.replay(draft, replayInput), validate: m.validate(bad) };
  }, { draft: input.whatifDraft, input: JSON.stringify({ decisions: input.whatifDecisions, openingSpend: {} }), bad: input.badPolicy });

  step = 'reports page: this month\'s EU AI Act report as JSON, CSV and PDF';
  await gotoPage('reports');
  await page.locator('#compliance-status').waitFor(WAIT);
  result.reportShownStatus = await page.locator('#compliance-status').getAttribute('data-status');
  result.reportDownloads = {};
  for (const format of ['json', 'csv', 'pdf']) {
    const [download] = await Promise.all([page.waitForEvent('download', WAIT), page.locator(`#download-${format}`).click()]);
    const bytes = readFileSync(await download.path());
    result.reportDownloads[format] = {
      name: download.suggestedFilename(),
      size: bytes.length,
      head: bytes.subarray(0, 5).toString('latin1'),
      text: format === 'pdf' ? null : bytes.toString('utf8'),
    };
  }
  result.reportJsonStatus = JSON.parse(result.reportDownloads.json.text).complianceStatus;
  await page.locator('#download-status', { hasText: 'Downloaded' }).waitFor(WAIT);
  await shot('reports');

  step = 'audit page: browse, filter, next page, verify';
  await gotoPage('audit');
  await page.locator('#audit-table').waitFor(WAIT);
  result.auditFirstPage = await page.locator('#audit-table tbody tr').evaluateAll((rows) => rows.map((r) => Number(r.dataset.seq)));
  await shot('audit');
  await page.locator('#f-kind').selectOption('decision');
  await page.locator('#f-decision').selectOption('allow');
  await page.locator('#f-project').fill('sales-ai');
  await page.locator('#f-project').press('Enter');
  await page.locator('#entries[data-loads="2"]').waitFor(WAIT);
  result.auditFiltered = await page.locator('#audit-table tbody tr').evaluateAll((rows) => rows.map((r) => ({
    seq: Number(r.dataset.seq), kind: r.children[1].textContent, decision: r.children[2].textContent,
    project: r.children[4].textContent, host: r.children[6].textContent, cost: r.querySelector('[data-field="cost"]').dataset.micros })));
  await shot('audit-filtered');
  // A time filter: from a time after every row, nothing matches.
  await page.locator('#f-from').fill('2099-01-01T00:00:00');
  await page.locator('#apply-filters').click();
  await page.locator('#entries[data-loads="3"] #no-entries').waitFor(WAIT);
  result.auditFutureRows = await page.locator('#audit-table tbody tr').count();
  result.auditFutureText = await page.locator('#no-entries').textContent();
  await page.locator('#f-from').fill('');
  // Back to every row, 5 a page, then the next page by cursor.
  await page.locator('#f-kind').selectOption('');
  await page.locator('#f-decision').selectOption('');
  await page.locator('#f-project').fill('');
  await page.locator('#f-limit').fill('5');
  await page.locator('#apply-filters').click();
  await page.locator('#entries[data-loads="4"]').waitFor(WAIT);
  result.auditFirstOfFive = await page.locator('#audit-table tbody tr').evaluateAll((rows) => rows.map((r) => Number(r.dataset.seq)));
  result.auditHasNext = await page.locator('#next-page').isEnabled();
  if (result.auditHasNext) {
    await page.locator('#next-page').click();
    await page.locator('#entries[data-loads="5"] #audit-table[data-page="1"]').waitFor(WAIT);
    result.auditSecondPage = await page.locator('#audit-table tbody tr').evaluateAll((rows) => rows.map((r) => Number(r.dataset.seq)));
  }
  await page.locator('#verify').focus();
  await page.keyboard.press('Enter');
  await page.locator('#verify-kv').waitFor(WAIT);
  result.auditVerify = {
    ok: await page.locator('#verify-kv').getAttribute('data-ok'),
    shown: await page.locator('#verify-ok').textContent(),
    rowsChecked: Number(await page.locator('#verify-rows').textContent()),
    head: await page.locator('#verify-head').textContent(),
    firstBadRow: await page.locator('#verify-bad').textContent(),
  };
  await shot('audit-verify');

  step = 'sign out';
  await page.locator('#sign-out').click();
  await page.locator('#sign-in').waitFor({ state: 'visible', ...WAIT });
  result.afterSignOut = await inPage(async () => (await fetch('/v1/budgets')).status);
}

const started = Date.now();
try {
  if (input.phase === 'approver') await approverPhase();
  else await adminPhase();
  result.consoleErrors = consoleErrors;
  result.ms = Date.now() - started;
  console.log(`RESULT ${JSON.stringify(result)}`);
} catch (e) {
  console.error(`step "${step}" failed: ${e.stack || e}`);
  try { await shot(`failed-${input.phase}`); } catch { /* the browser is gone */ }
  console.error(`page errors: ${JSON.stringify(consoleErrors)}`);
  process.exitCode = 1;
} finally {
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
}
