// The labhours dashboard in a real browser (Debian's chromium, driven by
// playwright-core), against the real collector binary and a seeded
// scenario (collector/src/dashboard/scenario.rs). Checks what a person
// would check, and saves a screenshot of every page.
//
// Run with tests/browser/run.sh (builds, installs, runs), or by hand:
//   LABHOURS_COLLECTOR_BIN=.../labhours-collector \
//   LABHOURS_SCENARIO_BIN=.../examples/dashboard_scenario \
//   node --test --test-concurrency=1 tests/browser/dashboard.test.mjs

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, copyFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const collectorBin = process.env.LABHOURS_COLLECTOR_BIN;
const scenarioBin = process.env.LABHOURS_SCENARIO_BIN;
const artifacts = process.env.ARTIFACTS || join(here, 'artifacts');
const ADMIN = 'lh_dashboard-admin-test-token';
const EVALUATOR = 'lh_dashboard-evaluator-test-token';
const NMR = 'nmr-600';
const LAUNCH_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

let work, collector, browser, base, day;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

async function waitForHealth(url, ms = 30000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer within ${ms} ms`);
}

async function shot(page, name) {
  mkdirSync(artifacts, { recursive: true });
  const file = join(artifacts, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

async function login(context, token) {
  const page = await context.newPage();
  await page.goto(`${base}/login`);
  await page.fill('#token', token);
  await Promise.all([page.waitForURL(`${base}/`), page.click('button[type=submit]')]);
  return page;
}

before(async () => {
  assert.ok(collectorBin && scenarioBin, 'set LABHOURS_COLLECTOR_BIN and LABHOURS_SCENARIO_BIN');
  work = mkdtempSync(join(tmpdir(), 'labhours-browser-'));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  day = execFileSync(scenarioBin, ['--dir', work, '--listen', `127.0.0.1:${port}`], { encoding: 'utf8' }).trim();
  collector = spawn(collectorBin, ['run', '--config', join(work, 'collector.toml')], { stdio: 'ignore' });
  await waitForHealth(`${base}/api/v1/healthz`);
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: LAUNCH_ARGS });
});

after(async () => {
  await browser?.close();
  collector?.kill('SIGTERM');
  if (work) rmSync(work, { recursive: true, force: true });
});

test('a visitor without a session is sent to the login page, and a token logs in', async () => {
  const context = await browser.newContext({ locale: 'en-GB' });
  const page = await context.newPage();
  await page.goto(`${base}/report`);
  assert.match(page.url(), /\/login\?next=/);
  await shot(page, 'login');
  await page.fill('#token', ADMIN);
  await Promise.all([page.waitForURL(`${base}/report`), page.click('button[type=submit]')]);
  assert.match(await page.textContent('h1'), /Evaluation report/);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'lh_session');
  assert.ok(session?.httpOnly, 'the session cookie is HttpOnly');
  assert.equal(session.sameSite, 'Strict');
  await context.close();
});

test('the fleet shows every instrument with its state, and fits a phone', async () => {
  const context = await browser.newContext({ locale: 'en-GB', viewport: { width: 1280, height: 800 } });
  const page = await login(context, ADMIN);
  assert.equal(await page.locator('#fleet-table tbody tr[data-instrument]').count(), 2);
  assert.match(await page.textContent(`tr[data-instrument="${NMR}"]`), /NMR 600 MHz/);
  const file = await shot(page, 'fleet');
  if (process.env.UPDATE_DOCS_IMG) copyFileSync(file, join(repo, 'docs', 'img', 'dashboard-fleet.png'));
  await page.setViewportSize({ width: 390, height: 844 });
  await page.reload();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page is ${overflow} px wider than a phone`);
  await shot(page, 'fleet-phone');
  await context.close();
});

test('the no-show booking has no running band under it, and the thresholds are drawn', async () => {
  const context = await browser.newContext({ locale: 'en-GB', viewport: { width: 1280, height: 900 } });
  const page = await login(context, ADMIN);
  await page.goto(`${base}/instruments/${NMR}?day=${day}`);
  const noShow = page.locator('rect.booking[data-booking="b-noshow"]');
  assert.equal(await noShow.getAttribute('data-outcome'), 'no_show');
  const overlap = await page.evaluate(() => {
    const b = document.querySelector('rect.booking[data-booking="b-noshow"]').getBoundingClientRect();
    return [...document.querySelectorAll('rect.band[data-state="running"]')]
      .map((r) => r.getBoundingClientRect())
      .filter((r) => r.right > b.left + 0.5 && r.left < b.right - 0.5).length;
  });
  assert.equal(overlap, 0, 'a running band lies under the no-show booking');
  const running = await page.locator('rect.band[data-state="running"]').count();
  assert.ok(running >= 1, 'the day has running bands at all');
  assert.equal(await page.locator('line.threshold[data-threshold="running_above_w"]').count(), 1);
  const title = await page.locator('rect.booking[data-booking="b-overrun"] title').textContent();
  assert.match(title, /Overrun/);
  const file = await shot(page, 'instrument');
  if (process.env.UPDATE_DOCS_IMG) copyFileSync(file, join(repo, 'docs', 'img', 'dashboard-instrument.png'));
  await page.goto(`${base}/instruments/${NMR}?day=${day}&span=week`);
  await shot(page, 'instrument-week');
  await context.close();
});

async function unassigned(page) {
  await page.goto(`${base}/report?year=${day.slice(0, 4)}`);
  const row = page.locator('#report tr', { has: page.locator(`td:text-is("${NMR}")`) });
  return (await row.locator('td[data-col="13"]').textContent()).trim();
}

test('the overrun is in the exceptions, and assigning unbooked use changes the report', async () => {
  const context = await browser.newContext({ locale: 'en-GB', viewport: { width: 1280, height: 900 } });
  const page = await login(context, ADMIN);
  const before = await unassigned(page);
  assert.notEqual(before, '0.00');
  await shot(page, 'report');
  await page.goto(`${base}/exceptions?from=${day}&to=${day}`);
  assert.ok(await page.locator('tr[data-kind="overrun"]').count() >= 1, 'the overrun is listed');
  assert.ok(await page.locator('tr[data-kind="no_show"]').count() >= 1, 'the no-show is listed');
  await shot(page, 'exceptions');
  const item = page.locator(`tr[data-kind="unbooked"][data-instrument="${NMR}"]`).first();
  await item.locator('summary', { hasText: 'Assign' }).click();
  const form = item.locator('form.assign-form');
  await form.locator('input[name=user]').fill('zhao');
  await form.locator('select[name=usage_type]').selectOption('external');
  await form.locator('input[name=reason]').fill('booked on paper (browser check)');
  await Promise.all([page.waitForURL(/\/exceptions/), form.locator('button[type=submit]').click()]);
  const after = await unassigned(page);
  assert.notEqual(after, before, 'the report did not change');
  assert.equal(after, '0.00');
  const audit = await page.request.get(`${base}/api/v1/corrections?from=${day}&to=2100-01-01`, {
    headers: { Authorization: `Bearer ${ADMIN}` },
  });
  assert.match(await audit.text(), /booked on paper \(browser check\)/);
  await context.close();
});

test('the language switch turns the labels into Chinese and sticks', async () => {
  const context = await browser.newContext({ locale: 'en-GB' });
  const page = await login(context, ADMIN);
  assert.equal(await page.textContent('h1'), 'Fleet');
  await Promise.all([page.waitForURL(`${base}/`), page.click('#lang-switch')]);
  assert.equal(await page.textContent('h1'), '仪器总览');
  assert.equal(await page.getAttribute('html', 'lang'), 'zh-CN');
  await page.goto(`${base}/report?year=${day.slice(0, 4)}`);
  assert.match(await page.textContent('#report thead'), /有效工作机时/);
  await shot(page, 'report-zh');
  await context.close();
});

test('a POST without the same-origin proof is refused with 403', async () => {
  const context = await browser.newContext();
  const page = await login(context, ADMIN);
  const form = {
    instrument_id: NMR, start: `${day}T01:00:00Z`, end: `${day}T02:00:00Z`, note: 'csrf check', back: '/exceptions',
  };
  const bare = await page.request.post(`${base}/exceptions/review`, { form, maxRedirects: 0 });
  assert.equal(bare.status(), 403);
  const forged = await page.request.post(`${base}/exceptions/review`, {
    form, maxRedirects: 0, headers: { Origin: 'http://evil.example' },
  });
  assert.equal(forged.status(), 403);
  const proper = await page.request.post(`${base}/exceptions/review`, {
    form, maxRedirects: 0, headers: { Origin: base },
  });
  assert.equal(proper.status(), 303, 'the same request from this origin passes');
  await context.close();
});

test('an evaluator sees no action buttons and may not act', async () => {
  const context = await browser.newContext({ locale: 'en-GB', viewport: { width: 1280, height: 900 } });
  const page = await login(context, EVALUATOR);
  await page.goto(`${base}/exceptions?from=${day}&to=${day}&show=all`);
  assert.ok(await page.locator('tr[data-kind]').count() >= 1);
  assert.equal(await page.locator('form.assign-form, form.review-form, details.action').count(), 0);
  await shot(page, 'exceptions-evaluator');
  await page.goto(`${base}/bookings`);
  assert.equal(await page.locator('#upload').count(), 0);
  const refused = await page.request.post(`${base}/exceptions/review`, {
    form: { instrument_id: NMR, start: `${day}T01:00:00Z`, end: `${day}T02:00:00Z`, note: 'x' },
    maxRedirects: 0, headers: { Origin: base },
  });
  assert.equal(refused.status(), 403);
  await context.close();
});

test('agents and bookings: a preview lists the bad row by its line', async () => {
  const context = await browser.newContext({ locale: 'en-GB', viewport: { width: 1280, height: 900 } });
  const page = await login(context, ADMIN);
  await page.goto(`${base}/agents`);
  assert.ok(await page.locator(`tr[data-agent="agent-${NMR}"]`).count() === 1);
  await shot(page, 'agents');
  await page.goto(`${base}/bookings`);
  const csv = 'booking_id,instrument_id,user,group,usage_type,start,end,status\n'
    + `bb-1,${NMR},li,chem,research,${day} 19:00,${day} 20:00,confirmed\n`
    + `bb-2,${NMR},li,chem,gardening,${day} 20:00,${day} 21:00,confirmed\n`;
  await page.setInputFiles('#file', { name: 'upload.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) });
  await Promise.all([page.waitForLoadState('load'), page.click('#upload button[value=preview]')]);
  await page.waitForSelector('#bad-rows');
  assert.equal((await page.locator('#bad-rows tbody td.num').first().textContent()).trim(), '3');
  await shot(page, 'bookings-preview');
  await context.close();
});
