// The dashboard in a real browser: headless Chromium (Debian's `chromium`)
// driven by playwright-core. Run by tests/all/dashboard/browser.rs, which
// starts the dashboard and a worker and prepares the jobs; it passes:
//   DASHBOARD_URL  http://127.0.0.1:PORT
//   DASHBOARD_TOKEN  the token
//   DEAD_ID        a dead job whose retry succeeds (its class is deployed now)
//   XSS_ID         a job whose args hold <script>alert(1)</script>
//   BATCH_ID       a batch of two jobs whose description holds an <img onerror>
//   SCREENSHOTS    where to save screenshots
//   CHROMIUM       the browser (default /usr/bin/chromium)
// Exits non-zero on the first failed check; prints one line per check.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env('DASHBOARD_URL');
const token = env('DASHBOARD_TOKEN');
const deadId = env('DEAD_ID');
const xssId = env('XSS_ID');
const batchId = env('BATCH_ID');
const shots = env('SCREENSHOTS');
mkdirSync(shots, { recursive: true });

let passed = 0;
const check = (ok, what) => {
  if (!ok) throw new Error(`failed: ${what}`);
  passed += 1;
  console.log(`ok - ${what}`);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const failures = [];
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
try {
  // The dashboard's own confirm() before pausing is accepted and counted;
  // any other dialog (an injected alert) fails the test.
  const dialogs = [];
  const confirms = [];
  page.on('dialog', async (d) => {
    if (d.type() === 'confirm') {
      confirms.push(d.message());
      await d.accept();
    } else {
      dialogs.push(`${d.type()}: ${d.message()}`);
      await d.dismiss();
    }
  });
  const cspViolations = [];
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  page.on('pageerror', (e) => failures.push(`page error: ${e.message}`));

  // 1. The overview.
  const overview = await page.goto(`${base}/`);
  check(overview.status() === 200, 'the overview loads');
  await page.locator('table#queues').waitFor();
  check(await page.locator('table#queues a', { hasText: 'default' }).first().isVisible(),
    'the overview lists queue default');
  check((await page.locator('table#workers tbody tr').count()) >= 1, 'the overview lists the worker');
  check(/script-src 'self'/.test(overview.headers()['content-security-policy'] || ''),
    'pages carry the Content-Security-Policy');
  await page.screenshot({ path: join(shots, '1-overview.png'), fullPage: true });

  // 2. Log in with the token, landing on the dead set.
  await page.goto(`${base}/login?next=${encodeURIComponent('/queues/default/dead')}`);
  await page.fill('input[name=token]', token);
  await Promise.all([page.waitForURL(`${base}/queues/default/dead`), page.click('form.login button')]);
  check(await page.locator(`a[href^="/jobs/${deadId}"]`).isVisible(), 'the dead set lists the dead job');
  await page.screenshot({ path: join(shots, '2-dead-set.png'), fullPage: true });

  // 3. Open the dead job.
  await Promise.all([page.waitForURL(/\/jobs\//), page.click(`a[href^="/jobs/${deadId}"]`)]);
  check((await page.locator('#state').textContent()) === 'dead', 'the job page says dead');
  check((await page.locator('#error').textContent()).includes('module_missing'),
    'the job page shows the error');
  await page.screenshot({ path: join(shots, '3-dead-job.png'), fullPage: true });

  // 4. Retry it, and see it run.
  await Promise.all([page.waitForURL(/\/jobs\//), page.click('button:has-text("Retry now")')]);
  let state = '';
  for (let i = 0; i < 120 && state !== 'done'; i++) {
    state = await page.locator('#state').textContent();
    if (state !== 'done') {
      await page.waitForTimeout(250);
      await page.reload();
    }
  }
  check(state === 'done', `the retried job ran (state ${state})`);
  check((await page.locator('#result').textContent()).includes('Hello'), 'its result is shown');
  await page.screenshot({ path: join(shots, '4-retried-job.png'), fullPage: true });

  // 5. Hostile args render as text.
  await page.goto(`${base}/jobs/${xssId}`);
  const args = await page.locator('#args').textContent();
  check(args.includes('<script>alert(1)</script>'), 'hostile args are shown as text');
  check(await page.getByText('<script>alert(1)</script>').first().isVisible(),
    'the text is visible on the page');
  check((await page.evaluate(() => document.scripts.length)) === 1,
    'the only script element is the dashboard\'s own');
  check((await page.evaluate(() => window.__stokerXss)) === undefined,
    'no injected handler ran');
  check((await page.locator('#log').textContent()).includes('greeting <script>'),
    'its log (hostile too) is shown as text');
  await page.screenshot({ path: join(shots, '5-hostile-args.png'), fullPage: true });

  // 6. Classes: observed figures next to quotas.
  await page.goto(`${base}/classes`);
  check(await page.locator('table#observed td', { hasText: 'hello' }).first().isVisible(),
    'the classes page shows observed figures');
  await page.screenshot({ path: join(shots, '6-classes.png'), fullPage: true });

  // 7. Pause and resume the queue (the pause asks first, through app.js).
  await page.goto(`${base}/`);
  await Promise.all([page.waitForURL(`${base}/`), page.click('table#queues button:has-text("Pause")')]);
  check(await page.locator('table#queues .badge.paused').isVisible(), 'the queue shows paused');
  check(confirms.length === 1, 'the pause was confirmed first');
  await page.screenshot({ path: join(shots, '7-paused.png'), fullPage: true });
  await Promise.all([page.waitForURL(`${base}/`), page.click('table#queues button:has-text("Resume")')]);
  check((await page.locator('table#queues .badge.paused').count()) === 0, 'the queue is resumed');

  // 8. Batches: the list (from the nav), then the batch with its jobs.
  await Promise.all([page.waitForURL(`${base}/batches`), page.click('header nav a:has-text("Batches")')]);
  check(await page.locator(`table#batches a[href="/batches/${batchId}"]`).isVisible(),
    'the batches page lists the batch');
  check(await page.getByText('<img src=x onerror="window.__stokerXss=2"> weekly export').first().isVisible(),
    'its hostile description is shown as text');
  await page.screenshot({ path: join(shots, '8-batches.png'), fullPage: true });
  await Promise.all([page.waitForURL(/\/batches\/.+/), page.click(`a[href="/batches/${batchId}"]`)]);
  check((await page.locator('table#members tbody tr').count()) === 2, 'the batch page lists its 2 jobs');
  check((await page.evaluate(() => window.__stokerXss)) === undefined,
    'no handler from the description ran');
  await page.screenshot({ path: join(shots, '9-batch.png'), fullPage: true });

  check(dialogs.length === 0, `no dialog fired (${dialogs.join(', ')})`);
  check(cspViolations.length === 0, `no CSP violation (${cspViolations.join('; ')})`);
  check(failures.length === 0, `no page error (${failures.join('; ')})`);
} catch (e) {
  // Where it stopped, for the test's failure message.
  await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
  console.log(`failed at ${page.url()}:\n${await page.locator('body').innerText().catch(() => '')}`);
  throw e;
} finally {
  await browser.close();
}
console.log(`${passed} passed, 0 failed`);
