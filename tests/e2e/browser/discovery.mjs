// Opens the Discovery page in headless Chromium, logged in, and reports whether
// names from the wire stayed text: dialogs opened (an injected alert), script or
// img elements inside the services table, and what the table says.
//
//   node discovery.mjs BASE_URL PASSWORD
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, password] = process.argv.slice(2);
const dir = mkdtempSync(join(tmpdir(), 'mb-disc-'));
const ctx = await chromium.launchPersistentContext(dir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
});
const out = { dialogs: 0, page_errors: [] };
try {
  const page = await ctx.newPage();
  page.on('dialog', async (d) => { out.dialogs += 1; await d.dismiss(); });
  page.on('pageerror', (e) => out.page_errors.push(String(e)));
  const r = await ctx.request.post(base + '/api/login', { data: { password } });
  out.login = r.status();
  await page.goto(base + '/discovery');
  await page.locator('#services table, #services .empty, #services p').first().waitFor({ timeout: 15000 });
  await page.waitForTimeout(1500);
  out.scripts = await page.locator('#services script').count();
  out.imgs = await page.locator('#services img').count();
  out.text = await page.locator('#services').innerText();
  out.cast_notes = await page.locator('#services .cast-note').count();
} finally {
  await ctx.close();
  rmSync(dir, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
