// The Devices page's tailnet part in real headless Chromium; prints one JSON object on
// stdout (what the page showed, per device, before and after the switches).
//
//   node devices.mjs BASE_URL PASSWORD OUT_DIR MAC=MODE...
//
// Logs in with PASSWORD, opens Devices, reads every device card's tailnet name, address,
// state and switch; then, for each MAC=MODE, picks MODE ("node", "behind", "off") in that
// device's "In the tailnet" list and waits for the card's confirmation.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base0, password, outDir, ...switches] = process.argv.slice(2);
const base = base0.replace(/\/+$/, '');
const out = { page_errors: [], requests: [], before: {}, confirmations: {} };
const profile = mkdtempSync(join(tmpdir(), 'mb-chromium-'));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
});
ctx.setDefaultTimeout(20000);
const page = ctx.pages()[0] || await ctx.newPage();
page.on('pageerror', (e) => out.page_errors.push(String(e)));
page.on('request', (r) => {
  if (r.url().includes('/api/') && r.method() !== 'GET') {
    out.requests.push({ method: r.method(), path: new URL(r.url()).pathname, body: r.postData() });
  }
});
const macId = (mac) => mac.replace(/[^0-9a-zA-Z]/g, '').toLowerCase();
try {
  await page.goto(base + '/');
  await page.locator('#login-password').waitFor();
  await page.fill('#login-password', password);
  await page.click('#login-submit');
  await page.locator('#status-devices').waitFor();
  await page.goto(base + '/devices');
  await page.locator('article.device').first().waitFor();
  for (const card of await page.locator('article.device').all()) {
    const mac = await card.getAttribute('data-mac');
    const text = async (sel) => ((await card.locator(sel).count()) ? (await card.locator(sel).textContent()).trim() : null);
    const sel = card.locator('select[name="tailnet"]');
    out.before[mac] = {
      name: await text('.tailnet-name'),
      address: await text('.tailnet-address'),
      state: await text('.tailnet-state'),
      mode: (await sel.count()) ? await sel.inputValue() : null,
      tags_field: await card.locator('input[name="tags"]').count(),
    };
  }
  for (const sw of switches) {
    const [mac, mode] = sw.split('=');
    const card = page.locator(`article.device[data-mac="${mac}"]`);
    await card.locator(`#device-tailnet-${macId(mac)}`).selectOption(mode);
    const ok = card.locator('.form-ok');
    await page.waitForFunction((m) => {
      const c = document.querySelector(`article.device[data-mac="${m}"] .form-ok`);
      return c && c.textContent.trim() !== '';
    }, mac);
    out.confirmations[mac] = (await ok.textContent()).trim();
  }
  await page.screenshot({ path: join(outDir, 'devices-tailnet.png'), fullPage: true });
  out.ok = true;
} catch (e) {
  out.ok = false;
  out.error = String(e && e.stack || e);
  await page.screenshot({ path: join(outDir, 'devices-tailnet-failed.png'), fullPage: true }).catch(() => {});
}
await ctx.close();
rmSync(profile, { recursive: true, force: true });
console.log(JSON.stringify(out));
