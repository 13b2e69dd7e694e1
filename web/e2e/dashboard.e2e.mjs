// End-to-end test of the dashboard against a running `aegis serve` and a real Chromium.
//
//   AEGIS_URL=http://127.0.0.1:8080 AEGIS_ANALYST_USER=… AEGIS_ANALYST_PASSWORD=… \
//   AEGIS_VIEWER_USER=… AEGIS_VIEWER_PASSWORD=… ARTIFACT_DIR=/tmp/shots npm run e2e
//
// The store must hold at least one run with findings. Prints each step; exits 0 when every check
// passed, 1 at the first failed check (with a screenshot named failure.png), 2 on bad inputs.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const requiredEnv = ['AEGIS_URL', 'AEGIS_ANALYST_USER', 'AEGIS_ANALYST_PASSWORD', 'AEGIS_VIEWER_USER', 'AEGIS_VIEWER_PASSWORD'];
const missing = requiredEnv.filter((name) => !process.env[name]);
if (missing.length) {
  console.error(`e2e: set ${missing.join(', ')} (see the top of web/e2e/dashboard.e2e.mjs)`);
  process.exit(2);
}
const baseUrl = process.env.AEGIS_URL.replace(/\/+$/, '');
const analyst = { name: process.env.AEGIS_ANALYST_USER, password: process.env.AEGIS_ANALYST_PASSWORD };
const viewer = { name: process.env.AEGIS_VIEWER_USER, password: process.env.AEGIS_VIEWER_PASSWORD };
const artifactDir = process.env.ARTIFACT_DIR || 'e2e-artifacts';
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const timeoutMs = Number(process.env.E2E_TIMEOUT_MS || 15000);

class CheckFailed extends Error {}
function check(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

let stepNumber = 0;
function step(text) {
  stepNumber += 1;
  console.log(`[${stepNumber}] ${text}`);
}

async function screenshot(page, name) {
  const path = join(artifactDir, `${name}.png`);
  await page.screenshot({ path, fullPage: false });
  console.log(`    screenshot ${path}`);
}

// Calls the API from inside the page, so the browser's session cookie (HttpOnly) is used.
async function apiFromPage(page, method, path, body) {
  return page.evaluate(async ({ method, path, body }) => {
    const headers = { Accept: 'application/json' };
    if (method !== 'GET') {
      const me = await fetch('/api/v1/me', { credentials: 'same-origin' });
      if (me.ok) headers['X-CSRF-Token'] = (await me.json()).csrf_token;
      headers['Content-Type'] = 'application/json';
    }
    const response = await fetch(`/api/v1${path}`, {
      method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = null; }
    return { status: response.status, json, text: text.slice(0, 500) };
  }, { method, path, body });
}

async function apiOk(page, path) {
  const answer = await apiFromPage(page, 'GET', path);
  check(answer.status === 200, `GET /api/v1${path} answered ${answer.status}: ${answer.text}`);
  return answer.json;
}

// Waits until `probe()` returns a truthy value, or fails with `message`.
async function waitFor(probe, message) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await probe();
    if (last) return last;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new CheckFailed(message);
}

async function visible(page, testid, what) {
  try {
    await page.getByTestId(testid).first().waitFor({ state: 'visible', timeout: timeoutMs });
  } catch {
    throw new CheckFailed(`${what}: [data-testid="${testid}"] did not appear within ${timeoutMs} ms`);
  }
}

async function login(page, user) {
  await page.goto(`${baseUrl}/#/`);
  await visible(page, 'login-username', 'the login page');
  await page.getByTestId('login-username').fill(user.name);
  await page.getByTestId('login-password').fill(user.password);
  await page.getByTestId('login-submit').click();
  await page.locator('[data-testid="current-user"], [data-testid="login-error"]').first()
    .waitFor({ state: 'visible', timeout: timeoutMs })
    .catch(() => { throw new CheckFailed(`logging in as ${user.name}: neither the dashboard nor an error appeared`); });
  const refusal = page.getByTestId('login-error');
  if (await refusal.count()) throw new CheckFailed(`logging in as ${user.name} was refused: ${await refusal.textContent()}`);
  const shownName = await page.getByTestId('current-user').textContent();
  check(shownName === user.name, `the header shows the user "${shownName}", expected "${user.name}"`);
}

async function logout(page) {
  await page.getByTestId('logout').click();
  await visible(page, 'login-username', 'the login page after logging out');
}

const hashOf = (page) => new URL(page.url()).hash;

// The findings table's rows as {id, severity, status, runId}.
async function tableRows(page) {
  return page.getByTestId('finding-row').evaluateAll((rows) => rows.map((row) => ({
    id: row.dataset.findingId, severity: row.dataset.severity, status: row.dataset.status, runId: row.dataset.runId,
  })));
}

// Waits until the page shows the result of `apiQuery`: the same total and the same first page.
async function waitForFindingsMatching(page, apiQuery, what) {
  const expected = await apiOk(page, `/findings${apiQuery}`);
  await waitFor(async () => {
    const total = await page.getByTestId('findings-total').textContent({ timeout: 1000 }).catch(() => null);
    if (total === null || Number(total) !== expected.total) return false;
    const rows = await tableRows(page);
    return rows.length === Math.min(expected.items.length, 50);
  }, `${what}: the page never showed total ${expected.total} with ${expected.items.length} rows as GET /api/v1/findings${apiQuery} does`);
  const rows = await tableRows(page);
  const expectedIds = expected.items.slice(0, 50).map((item) => String(item.id));
  check(JSON.stringify(rows.map((row) => row.id)) === JSON.stringify(expectedIds),
    `${what}: the table lists findings ${rows.map((row) => row.id).join(',')} but the API lists ${expectedIds.join(',')}`);
  return { expected, rows };
}

async function run(page) {
  step('wrong password shows an error');
  await page.goto(`${baseUrl}/#/`);
  await visible(page, 'login-username', 'the login page');
  await screenshot(page, 'login');
  await page.getByTestId('login-username').fill(analyst.name);
  await page.getByTestId('login-password').fill(`${analyst.password}-wrong`);
  await page.getByTestId('login-submit').click();
  await visible(page, 'login-error', 'a wrong password');
  check((await page.getByTestId('current-user').count()) === 0, 'a wrong password logged the user in');

  step(`log in as analyst ${analyst.name}`);
  await login(page, analyst);
  const role = await page.getByTestId('current-role').textContent();
  check(role === 'analyst', `the header shows the role "${role}" for ${analyst.name}, expected "analyst"`);
  await visible(page, 'summary-totals', 'the overview');
  await screenshot(page, 'overview');

  step('runs list');
  await page.getByTestId('nav-runs').click();
  await visible(page, 'run-row', 'the runs list (the store needs at least one run)');
  const runsTotal = Number(await page.getByTestId('runs-total').textContent());
  const apiRuns = await apiOk(page, '/runs?limit=50&offset=0');
  check(runsTotal === apiRuns.total, `the runs page says ${runsTotal} runs, GET /api/v1/runs says ${apiRuns.total}`);
  await screenshot(page, 'runs');

  step('run detail with its findings');
  // The run with the most findings, so its findings table has rows to check.
  const countOf = (counts) => Object.values(counts || {}).reduce((sum, value) => sum + (Number(value) || 0), 0);
  const chosenRun = [...apiRuns.items].sort((a, b) => countOf(b.counts) - countOf(a.counts))[0];
  const runId = String(chosenRun.id);
  await page.locator(`[data-testid="run-row"][data-run-id="${runId}"] a`).first().click();
  await visible(page, 'run-detail', `run ${runId}`);
  check(hashOf(page).startsWith(`#/runs/${encodeURIComponent(runId)}`), `clicking run ${runId} opened ${hashOf(page)}`);
  const { rows: runRows } = await waitForFindingsMatching(page, `?run=${encodeURIComponent(runId)}&limit=50`, `run ${runId}`);
  check(runRows.every((row) => row.runId === runId), `run ${runId}'s table shows findings of other runs`);
  await screenshot(page, 'run-detail');

  step('findings filtered by severity and text');
  await page.getByTestId('nav-findings').click();
  await visible(page, 'findings-filters', 'the findings page');
  // Filter on the most severe level that has findings and on a word of one of them.
  let severity = null;
  let sample = null;
  for (const candidate of ['critical', 'high', 'medium', 'low', 'info']) {
    const answer = await apiOk(page, `/findings?severity=${candidate}&limit=1`);
    if (answer.total > 0) { severity = candidate; [sample] = answer.items; break; }
  }
  check(severity, 'the store has no current findings; seed it with findings first');
  const text = String(sample.rule_id).slice(0, 24);
  await page.getByTestId(`filter-severity-${severity}`).check();
  await waitFor(async () => hashOf(page).includes(`severity=${severity}`), `ticking ${severity} did not put severity=${severity} in the URL`);
  await page.getByTestId('filter-q').fill(text);
  await page.getByTestId('filter-q').press('Enter');
  await waitFor(async () => new URLSearchParams(hashOf(page).split('?')[1] || '').get('q') === text,
    `searching for "${text}" did not put q= in the URL (${hashOf(page)})`);
  const filterQuery = `?severity=${severity}&q=${encodeURIComponent(text)}&limit=50`;
  const { expected: filtered, rows: filteredRows } = await waitForFindingsMatching(page, filterQuery, `severity ${severity} + "${text}"`);
  check(filtered.total > 0, `no finding matched severity ${severity} and "${text}", though finding ${sample.id} should`);
  check(filteredRows.every((row) => row.severity === severity),
    `the table shows severities ${[...new Set(filteredRows.map((row) => row.severity))].join(',')} when filtered to ${severity}`);
  const needle = text.toLowerCase();
  check(filtered.items.every((item) => [item.rule_id, item.title, item.evidence, item.location?.file]
    .some((field) => String(field || '').toLowerCase().includes(needle))), `the API returned a finding that does not contain "${text}"`);
  await page.reload();
  await waitForFindingsMatching(page, filterQuery, 'the same filtered URL after a reload');
  await screenshot(page, 'findings-filtered');

  step('finding detail');
  const target = filteredRows.find((row) => row.status !== 'accepted-risk') || filteredRows[0];
  await page.locator(`[data-testid="finding-row"][data-finding-id="${target.id}"] a`).first().click();
  await visible(page, 'finding-detail', `finding ${target.id}`);
  check(hashOf(page) === `#/findings/${encodeURIComponent(target.id)}`, `clicking finding ${target.id} opened ${hashOf(page)}`);
  for (const testid of ['finding-evidence', 'finding-remediation', 'finding-status', 'status-form']) {
    check(await page.getByTestId(testid).count() === 1, `finding ${target.id}'s page has no [data-testid="${testid}"]`);
  }
  await screenshot(page, 'finding-detail');

  step(`set finding ${target.id} to accepted-risk`);
  const comment = `e2e: risk accepted by the dashboard test at ${new Date().toISOString()}`;
  await page.getByTestId('status-select').selectOption('accepted-risk');
  await page.getByTestId('status-comment').fill(comment);
  await page.getByTestId('status-save').click();
  await visible(page, 'status-saved', `saving finding ${target.id}'s status`);
  const shownStatus = await page.getByTestId('finding-status').textContent();
  check(shownStatus === 'accepted-risk', `after saving, the page shows status "${shownStatus}"`);
  const shownComments = await page.getByTestId('history-comment').allTextContents();
  check(shownComments.at(-1) === comment, `after saving, the last history comment on the page is "${shownComments.at(-1)}"`);
  const stored = await apiOk(page, `/findings/${encodeURIComponent(target.id)}`);
  check(stored.status === 'accepted-risk', `GET /api/v1/findings/${target.id} says status "${stored.status}", expected accepted-risk`);
  const lastChange = stored.history?.at(-1);
  check(lastChange?.comment === comment, `the last history comment of finding ${target.id} is "${lastChange?.comment}", expected "${comment}"`);
  check(lastChange?.to === 'accepted-risk' && lastChange?.user === analyst.name,
    `the last history entry of finding ${target.id} is ${JSON.stringify(lastChange)}`);
  await page.getByTestId('status-and-history').scrollIntoViewIfNeeded();
  await screenshot(page, 'finding-updated');

  step('ATLAS coverage');
  await page.getByTestId('nav-atlas').click();
  await visible(page, 'atlas-matrix', 'the ATLAS matrix');
  await screenshot(page, 'atlas');
  const linked = page.locator('a[data-testid="atlas-technique"]').first();
  if (await linked.count()) {
    const technique = await linked.getAttribute('data-technique-id');
    await linked.click();
    await waitFor(async () => hashOf(page).includes(`atlas=${encodeURIComponent(technique)}`),
      `clicking technique ${technique} did not open findings filtered by atlas=${technique}`);
    await waitForFindingsMatching(page, `?atlas=${encodeURIComponent(technique)}&limit=50`, `technique ${technique}`);
  }

  step('charts');
  await page.getByTestId('nav-charts').click();
  await page.locator('[data-testid="chart-robustness"], [data-testid="empty"]').first()
    .waitFor({ state: 'visible', timeout: timeoutMs })
    .catch(() => { throw new CheckFailed('the charts page shows neither a chart nor an empty state'); });
  await page.waitForLoadState('networkidle');
  await screenshot(page, 'charts');
  await logout(page);

  step(`log in as viewer ${viewer.name}`);
  await login(page, viewer);
  check(await page.getByTestId('nav-admin').count() === 0, 'a viewer sees the Admin link');
  await page.goto(`${baseUrl}/#/findings/${encodeURIComponent(target.id)}`);
  await visible(page, 'finding-detail', `finding ${target.id} as a viewer`);
  check(await page.getByTestId('status-form').count() === 0, 'a viewer sees the status form');
  await screenshot(page, 'viewer-finding');
  const refused = await apiFromPage(page, 'POST', `/findings/${encodeURIComponent(target.id)}/status`,
    { status: 'fixed', comment: 'a viewer must not be able to do this' });
  check(refused.status === 403, `a viewer's POST /api/v1/findings/${target.id}/status answered ${refused.status}, expected 403: ${refused.text}`);
  const unchanged = await apiOk(page, `/findings/${encodeURIComponent(target.id)}`);
  check(unchanged.status === 'accepted-risk', `after the refused POST finding ${target.id} has status "${unchanged.status}"`);
  await logout(page);
}

async function main() {
  await mkdir(artifactDir, { recursive: true });
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(timeoutMs);
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  let exitCode = 0;
  try {
    await run(page);
    check(pageErrors.length === 0, `the page threw: ${pageErrors.join(' | ')}`);
    console.log(`PASS: all ${stepNumber} steps of the dashboard e2e test passed`);
  } catch (error) {
    exitCode = 1;
    const reason = error instanceof CheckFailed ? error.message : `unexpected error: ${error.stack || error}`;
    console.error(`FAIL at step ${stepNumber}: ${reason}`);
    if (pageErrors.length) console.error(`page errors: ${pageErrors.join(' | ')}`);
    await page.screenshot({ path: join(artifactDir, 'failure.png') }).catch(() => {});
  } finally {
    await browser.close();
  }
  process.exit(exitCode);
}

await main();
