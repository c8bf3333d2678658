// The Tailnet card of the status page in real headless Chromium; prints one JSON
// object on stdout (what the page showed).
//
//   node tailnet.mjs BASE_URL MODE PASSWORD [SETUP_CODE] OUT_DIR
//
// MODE "login-url": first start (setup code), then the card's state and login link.
// MODE "logout": log in with PASSWORD, wait for "logged in", click "Log out of the
// tailnet" (the confirm dialog is accepted), wait for "logged out".
// MODE "join": log in with PASSWORD, wait for "logged out", submit a bad auth key
// (the field's error), then the key in $TAILNET_AUTH_KEY; wait for "logged in".
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base0, mode, password, setupCode, outDir] = process.argv.slice(2);
const base = base0.replace(/\/+$/, '');
const out = { page_errors: [], requests: [] };
const profile = mkdtempSync(join(tmpdir(), 'mb-chromium-'));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
});
ctx.setDefaultTimeout(20000);
const page = ctx.pages()[0] || await ctx.newPage();
page.on('pageerror', (e) => out.page_errors.push(String(e)));
page.on('dialog', (d) => { out.dialog = d.message(); d.accept(); });
page.on('request', (r) => {
  if (r.url().includes('/api/') && r.method() !== 'GET') out.requests.push({ method: r.method(), path: new URL(r.url()).pathname });
});
const card = page.locator('#status-tailnet');
const stateIs = async (text) => page.locator('#tailnet-state', { hasText: text }).waitFor();
try {
  await page.goto(base + '/');
  if (mode === 'login-url') {
    await page.locator('#setup-code').waitFor();
    await page.fill('#setup-code', setupCode);
    await page.fill('#password', password);
    await page.fill('#password-repeat', password);
    await page.click('#setup-submit');
    await card.waitFor();
    await stateIs('needs login');
    out.state = (await page.locator('#tailnet-state').textContent()).trim();
    out.login_href = await page.locator('#tailnet-login a').getAttribute('href');
    out.card = (await card.textContent()).trim();
  } else if (mode === 'join') {
    await page.locator('#login-password').waitFor();
    await page.fill('#login-password', password);
    await page.click('#login-submit');
    await card.waitFor();
    await stateIs('logged out');
    out.card_before = (await card.textContent()).trim();
    await page.fill('#tailnet-auth-key', 'two words');
    await page.click('#tailnet-join');
    const fieldError = page.locator('[data-field="auth_key"] .field-error');
    await page.waitForFunction(() => {
      const e = document.querySelector('[data-field="auth_key"] .field-error');
      return e && e.textContent.trim() !== '';
    });
    out.bad_key_error = (await fieldError.textContent()).trim();
    await page.fill('#tailnet-auth-key', process.env.TAILNET_AUTH_KEY || '');
    await page.click('#tailnet-join');
    await stateIs('logged in');
    out.card_after = (await card.textContent()).trim();
    out.join_form_after = await page.locator('#tailnet-join-form').count();
  } else {
    await page.locator('#login-password').waitFor();
    await page.fill('#login-password', password);
    await page.click('#login-submit');
    await card.waitFor();
    await stateIs('logged in');
    out.card_before = (await card.textContent()).trim();
    await page.click('#tailnet-logout');
    await stateIs('logged out');
    out.card_after = (await card.textContent()).trim();
    out.logout_button_after = await page.locator('#tailnet-logout').count();
  }
  await page.screenshot({ path: join(outDir, `tailnet-${mode}.png`), fullPage: true });
  out.ok = true;
} catch (e) {
  out.ok = false;
  out.error = String(e && e.stack || e);
  await page.screenshot({ path: join(outDir, `tailnet-${mode}-failed.png`), fullPage: true }).catch(() => {});
}
await ctx.close();
rmSync(profile, { recursive: true, force: true });
console.log(JSON.stringify(out));
