// Drives the box's web page in real headless Chromium (Debian's /usr/bin/chromium)
// the way a person would, and prints what it saw as one JSON object on stdout.
//
//   node web.mjs BASE_URL SETUP_CODE OUT_DIR [OPTIONS_JSON]
//
// OPTIONS_JSON: {"password": "...", "peer_name": "phone", "peer_endpoint": "198.51.100.1:51820",
//                "device_hostname": "printer", "device_name": "Office printer",
//                "bad_dhcp_range": "10.77.1.200-10.77.1.100"}
// Screenshots go to OUT_DIR (desktop 1280x800 and phone 390x844); the peer's QR code
// element is saved as OUT_DIR/peer-qr.png and its config text as OUT_DIR/peer-conf.txt.
// A failed step is recorded in `errors` (and the run goes on where it can); the
// exit code is 0 when the JSON was printed, so the test decides what matters.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base0, setupCode, outDir, optsJson] = process.argv.slice(2);
if (!base0 || !setupCode || !outDir) {
  console.error('usage: node web.mjs BASE_URL SETUP_CODE OUT_DIR [OPTIONS_JSON]');
  process.exit(2);
}
const base = base0.replace(/\/+$/, '');
const opts = {
  password: 'correct horse battery',
  peer_name: 'phone',
  peer_endpoint: null,
  device_hostname: 'printer',
  device_name: 'Office printer', // the example in web/API.md
  bad_dhcp_range: '10.77.1.200-10.77.1.100',
  ...(optsJson ? JSON.parse(optsJson) : {}),
};
mkdirSync(outDir, { recursive: true });

const out = { steps: {}, errors: [], page_errors: [], console_errors: [], screenshots: [], requests: [] };
const PAGES = { status: '/', devices: '/devices', peers: '/peers', settings: '/settings', discovery: '/discovery', system: '/system' };

async function step(name, fn) {
  const t0 = Date.now();
  try {
    out.steps[name] = { ok: true, ...(await fn()) };
  } catch (e) {
    // What the page said (its inline errors) and how it looked, for the test's message.
    const shown = await page.locator('.field-error, .form-error, #banner').allTextContents().catch(() => []);
    await page.screenshot({ path: join(outDir, `failed-${name}.png`), fullPage: true }).catch(() => {});
    out.steps[name] = { ok: false, error: String(e && e.stack || e), page_errors_shown: shown.map((t) => t.trim()).filter(Boolean), url: page.url() };
    out.errors.push(`${name}: ${e && e.message || e}`);
  }
  out.steps[name].ms = Date.now() - t0;
}

async function shot(page, name) {
  const path = join(outDir, `${name}.png`);
  await page.evaluate(() => window.scrollTo(0, 0)); // the sticky header belongs at the top
  await page.waitForTimeout(150); // let transitions settle
  await page.screenshot({ path, fullPage: true });
  out.screenshots.push(path);
  return path;
}

const path = (page) => new URL(page.url()).pathname;

const profile = mkdtempSync(join(tmpdir(), 'mb-chromium-'));
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 800 },
  acceptDownloads: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
});
ctx.setDefaultTimeout(15000);
const page = ctx.pages()[0] || await ctx.newPage();
page.on('pageerror', (e) => out.page_errors.push(String(e)));
page.on('console', (m) => { if (m.type() === 'error') out.console_errors.push(m.text()); });
page.on('dialog', (d) => d.accept());
page.on('request', (r) => {
  if (r.url().includes('/api/') && r.method() !== 'GET') {
    out.requests.push({ method: r.method(), path: new URL(r.url()).pathname, csrf: r.headers()['x-csrf-token'] || null, body: r.postData() });
  }
});

try {
  await step('first_boot_redirects', async () => {
    const landed = {};
    for (const p of [...Object.values(PAGES), '/login', '/setup']) {
      await page.goto(base + p);
      await page.locator('#setup-code').waitFor();
      landed[p] = path(page);
    }
    await shot(page, 'setup');
    return { landed };
  });

  await step('setup_wrong_code', async () => {
    await page.fill('#setup-code', 'WRONG-CODE');
    await page.fill('#password', opts.password);
    await page.fill('#password-repeat', opts.password);
    await page.click('#setup-submit');
    const err = page.locator('[data-field="setup_code"] .field-error');
    await err.filter({ hasText: /\S/ }).waitFor();
    return { error: (await err.textContent()).trim(), path: path(page) };
  });

  await step('setup', async () => {
    await page.fill('#setup-code', setupCode);
    await page.fill('#password', opts.password);
    await page.fill('#password-repeat', opts.password);
    await page.click('#setup-submit');
    await page.locator('#status-peers').waitFor();
    return { path: path(page), nav_visible: await page.locator('#nav').isVisible() };
  });

  await step('logout_login', async () => {
    await page.click('#logout');
    await page.locator('#login-password').waitFor();
    const afterLogout = path(page);
    await page.goto(base + '/settings');
    await page.locator('#login-password').waitFor();
    const protectedPath = path(page);
    await shot(page, 'login');
    await page.fill('#login-password', 'not the password');
    await page.click('#login-submit');
    const err = page.locator('[data-field="password"] .field-error');
    await err.filter({ hasText: /\S/ }).waitFor();
    const wrong = (await err.textContent()).trim();
    await page.fill('#login-password', opts.password);
    await page.click('#login-submit');
    await page.locator('#nav').waitFor();
    await page.waitForFunction(() => !['/login', '/setup'].includes(location.pathname));
    return { after_logout: afterLogout, protected_path: protectedPath, wrong_password_error: wrong, after_login: path(page) };
  });

  await step('status_device', async () => {
    await page.goto(base + '/');
    const row = page.locator('#status-devices tr', { hasText: opts.device_hostname });
    await row.first().waitFor({ timeout: 30000 });
    // Let a few polls through so the traffic graph has samples.
    await page.waitForTimeout(7000);
    const text = (await row.first().innerText()).replace(/\s+/g, ' ');
    const peers = (await page.locator('#status-peers').innerText()).replace(/\s+/g, ' ');
    const sparks = await page.locator('#status-peers svg.spark').count();
    const polylines = await page.locator('#status-peers svg.spark polyline').count();
    const health = await page.locator('#status-health li').count();
    await shot(page, 'status');
    return { device_row: text, peers_text: peers, sparklines: sparks, polylines, health_items: health };
  });

  await step('devices', async () => {
    await page.click('nav a[href="/devices"]');
    const card = page.locator('article.device', { hasText: opts.device_hostname }).first();
    await card.waitFor();
    await shot(page, 'devices');
    await card.locator('input[name="name"]').fill(opts.device_name);
    await card.locator('button[type="submit"]').click();
    await card.locator('.form-ok', { hasText: /\S/ }).waitFor();
    await card.locator('input[name="pin"]').check();
    await card.locator('.form-ok', { hasText: /reserved/ }).waitFor();
    await page.reload();
    const again = page.locator('article.device', { hasText: opts.device_name }).first();
    await again.waitFor();
    const pinned = await again.locator('input[name="pin"]').isChecked();
    return { renamed: true, pinned_after_reload: pinned };
  });

  await step('add_peer', async () => {
    await page.click('nav a[href="/peers"]');
    await page.locator('#peer-name').waitFor();
    const prefilled = await page.inputValue('#peer-endpoint');
    await page.fill('#peer-name', opts.peer_name);
    if (opts.peer_endpoint) await page.fill('#peer-endpoint', opts.peer_endpoint);
    await page.click('#peer-add');
    await page.locator('#peer-qr svg').waitFor();
    const conf = await page.locator('#peer-conf').textContent();
    writeFileSync(join(outDir, 'peer-conf.txt'), conf);
    const qr = page.locator('#peer-qr');
    await qr.scrollIntoViewIfNeeded();
    await qr.screenshot({ path: join(outDir, 'peer-qr.png') });
    const link = page.locator('#peer-download');
    const filename = await link.getAttribute('download');
    const href = await link.getAttribute('href');
    // Download it as a person would (a click; the page's CSP forbids fetching blob: URLs).
    const [dl] = await Promise.all([page.waitForEvent('download'), link.click()]);
    const confPath = join(outDir, 'peer-download.conf');
    await dl.saveAs(confPath);
    const downloaded = readFileSync(confPath, 'utf8');
    const warning = await page.locator('#peer-result .warn').innerText();
    const listed = await page.locator(`#peer-list [data-peer="${opts.peer_name}"]`).count();
    await shot(page, 'peers');
    // Adding the same name again is refused next to the name field.
    await page.fill('#peer-name', opts.peer_name);
    await page.click('#peer-add');
    const err = page.locator('[data-field="name"] .field-error');
    await err.filter({ hasText: /\S/ }).waitFor();
    return { prefilled_endpoint: prefilled, conf, filename, href_is_blob: href.startsWith('blob:'),
      download_matches: downloaded === conf, download_name: dl.suggestedFilename(), warning, listed, duplicate_error: (await err.textContent()).trim() };
  });

  await step('settings_invalid_range', async () => {
    await page.click('nav a[href="/settings"]');
    await page.locator('#dhcp-range').waitFor();
    await shot(page, 'settings');
    const before = await page.inputValue('#dhcp-range');
    const n = out.requests.length;
    await page.fill('#dhcp-range', opts.bad_dhcp_range);
    await page.click('#settings-save');
    const err = page.locator('[data-field="dhcp.range"] .field-error');
    await err.filter({ hasText: /\S/ }).waitFor();
    const sent = out.requests.slice(n).filter((r) => r.path === '/api/settings');
    await shot(page, 'settings-error');
    return { before, error: (await err.textContent()).trim(), sent_bodies: sent.map((r) => r.body),
      invalid_class: await page.locator('[data-field="dhcp.range"].invalid').count() };
  });

  await step('settings_save', async () => {
    const n = out.requests.length;
    await page.fill('#dhcp-range', out.steps.settings_invalid_range.before); // back to the valid range
    await page.fill('#dhcp-lease-time', opts.lease_time || '2h');
    await page.click('#settings-save');
    const ok = page.locator('#settings-form .form-ok');
    await ok.filter({ hasText: /\S/ }).waitFor();
    const sent = out.requests.slice(n).filter((r) => r.path === '/api/settings');
    const errors = (await page.locator('#settings-form .field-error').allTextContents()).filter((t) => t.trim());
    return { message: (await ok.textContent()).trim(), sent_bodies: sent.map((r) => r.body),
      restart_button: await page.locator('#restart-now').count(), field_errors: errors };
  });

  await step('discovery', async () => {
    await page.click('nav a[href="/discovery"]');
    await page.locator('#services').waitFor();
    const wg = await page.locator('#wg-line').textContent().catch(() => null);
    await shot(page, 'discovery');
    return { wg_line: wg };
  });

  await step('system', async () => {
    await page.click('nav a[href="/system"]');
    await page.locator('#system-info').waitFor();
    await page.waitForFunction(() => document.querySelector('#logs') && document.querySelector('#logs').textContent.length > 0, null, { timeout: 10000 }).catch(() => {});
    const info = (await page.locator('#system-info').innerText()).replace(/\s+/g, ' ');
    const logLines = (await page.locator('#logs').textContent()).split('\n').filter(Boolean).length;
    await page.fill('#log-filter', 'INFO');
    const filtered = (await page.locator('#logs').textContent()).split('\n').filter(Boolean);
    await page.fill('#log-filter', '');
    await shot(page, 'system');
    // Backup download.
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#backup-download')]);
    const backupPath = join(outDir, 'backup.toml');
    await dl.saveAs(backupPath);
    // An API token, shown once.
    await page.fill('#token-name', 'ci');
    await page.click('#token-create');
    await page.locator('#token-value').waitFor();
    const token = await page.locator('#token-value').textContent();
    const listed = await page.locator('#token-list li[data-token="ci"]').count();
    return { info, log_lines: logLines, filtered_all_match: filtered.every((l) => l.toLowerCase().includes('info')),
      backup_file: backupPath, backup_name: dl.suggestedFilename(), token_prefix: (token || '').slice(0, 4), token_listed: listed };
  });

  await step('phone_screenshots', async () => {
    const phone = await ctx.newPage();
    phone.on('pageerror', (e) => out.page_errors.push('phone: ' + String(e)));
    await phone.setViewportSize({ width: 390, height: 844 });
    const widths = {};
    for (const [name, p] of Object.entries(PAGES)) {
      await phone.goto(base + p);
      await phone.locator('main .page-head').waitFor();
      await phone.waitForTimeout(300);
      widths[name] = await phone.evaluate(() => document.documentElement.scrollWidth);
      await shot(phone, `${name}-phone`);
    }
    await phone.close();
    return { scroll_widths: widths };
  });

  // Changes that are not undone by a reload, then a restart of the daemon.
  await step('peer_toggle_remove', async () => {
    await page.goto(base + '/peers');
    await page.fill('#peer-name', 'tablet');
    if (opts.peer_endpoint) await page.fill('#peer-endpoint', opts.peer_endpoint);
    await page.click('#peer-add');
    await page.locator('#peer-qr svg').waitFor();
    await page.locator('#peer-enabled-tablet').uncheck();
    await page.locator('#peer-list [data-peer="tablet"].disabled').waitFor();
    await page.reload();
    const disabledAfterReload = !(await page.locator('#peer-enabled-tablet').isChecked());
    await page.click('#peer-remove-tablet');
    await page.locator('#peer-list [data-peer="tablet"]').waitFor({ state: 'detached' });
    await page.reload();
    await page.locator('#peer-list').waitFor();
    return { disabled_after_reload: disabledAfterReload, gone_after_reload: (await page.locator('#peer-list [data-peer="tablet"]').count()) === 0 };
  });

  await step('password_change', async () => {
    const next = opts.password + ' 2';
    await page.goto(base + '/system');
    await page.fill('#pw-current', 'not the password');
    await page.fill('#pw-new', next);
    await page.fill('#pw-repeat', next);
    await page.click('#pw-submit');
    const err = page.locator('#password-form [data-field="current"] .field-error');
    await err.filter({ hasText: /\S/ }).waitFor();
    const wrong = (await err.textContent()).trim();
    const stillThere = path(page);
    await page.fill('#pw-current', opts.password);
    await page.fill('#pw-new', next);
    await page.fill('#pw-repeat', next);
    await page.click('#pw-submit');
    await page.locator('#password-form .form-ok').filter({ hasText: /\S/ }).waitFor();
    opts.password = next;
    await page.reload();
    await page.locator('#system-info').waitFor();
    return { wrong_current_error: wrong, path_after_wrong: stillThere, logged_in_after: path(page) === '/system' };
  });

  await step('restore_and_restart', async () => {
    await page.goto(base + '/system');
    await page.setInputFiles('#restore-file', join(outDir, 'backup.toml'));
    await page.click('#restore-submit');
    // Either the box restarts by itself (the page waits for it) or the page offers "Restart now".
    const next = page.locator('#banner.good, #restart-now, #restore-form .field-error:not(:empty), #restore-form .form-error:not(:empty)');
    await next.first().waitFor({ timeout: 100000 });
    const restoreError = (await page.locator('#restore-form .field-error, #restore-form .form-error').allTextContents().catch(() => [])).join(' ').trim();
    const button = await page.locator('#restart-now').count();
    if (button) {
      await page.click('#restart-now');
      await page.locator('#banner.good').waitFor({ timeout: 100000 });
    }
    const banner = (await page.locator('#banner').textContent()).trim();
    let relogin = false;
    if (await page.locator('#login-password').count()) {
      relogin = true;
      await page.fill('#login-password', opts.password);
      await page.click('#login-submit');
      await page.locator('#nav').waitFor();
    }
    await page.goto(base + '/');
    await page.locator('#status-peers').waitFor();
    return { restore_error: restoreError, banner, restart_button: button, had_to_log_in_again: relogin,
      peers_after: (await page.locator('#status-peers').innerText()).replace(/\s+/g, ' ') };
  });
} finally {
  await ctx.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(out, null, 1));
