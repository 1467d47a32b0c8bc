// End-to-end test of the web client against the real `entente` binary in headless Chromium.
//
// Starts `entente serve` with a temporary data directory, opens two browser contexts (alice and
// bob) and drives the web client as a person would. Exit status 0 means every check passed; the
// last line printed is `N passed, N failed, N skipped`.
//
//   ENTENTE_BIN   path of the server binary (default: ../target/debug/entente relative to web/)
//   CHROMIUM      path of the browser (default: /usr/bin/chromium)
//   E2E_TIMEOUT   milliseconds each waiting check may take (default: 15000)

import { spawn } from 'node:child_process';
import { appendFileSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = path.join(WEB_DIR, 'test-results');
const ENTENTE_BIN = process.env.ENTENTE_BIN
  ? path.resolve(process.env.ENTENTE_BIN)
  : path.resolve(WEB_DIR, '../target/debug/entente');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = Number(process.env.E2E_TIMEOUT || 15000);
const DOMAIN = 'localhost';
const CSP = "default-src 'self'";

const ALICE = { user: 'alice', password: 'correct horse alice', address: `alice@${DOMAIN}` };
const CAROL = { user: 'carol', password: 'carol password 3', address: `carol@${DOMAIN}` };
const BOB = { user: 'bob', password: 'battery staple bob', address: `bob@${DOMAIN}` };
const DAVE = { user: 'dave', password: 'dave password 4', address: `dave@${DOMAIN}` };

// ---------- tiny runner ----------

const results = { passed: 0, failed: 0, skipped: 0 };
let broken = false;

async function step(name, fn) {
  if (broken) {
    results.skipped += 1;
    console.log(`skip - ${name}`);
    return;
  }
  try {
    await fn();
    results.passed += 1;
    console.log(`ok   - ${name}`);
  } catch (err) {
    results.failed += 1;
    broken = true;
    console.log(`FAIL - ${name}\n       ${String(err && err.stack ? err.stack : err).split('\n').join('\n       ')}`);
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

// Polls `probe` until it reports success; the failure names what was seen last.
async function eventually(description, probe, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const r = await probe();
      if (r.ok) return r;
      last = r.got;
    } catch (err) {
      last = `error: ${err.message.split('\n')[0]}`;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${description}; last seen: ${JSON.stringify(last)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Reads every match at one instant (no auto-wait), so a re-rendered element cannot stall a probe.
async function readAll(locator, attr) {
  return locator.evaluateAll(
    (els, name) => els.map((e) => (name === null ? e.textContent : e.getAttribute(name))),
    attr === undefined ? null : attr,
  );
}

async function expectOne(locator, attr, test, description) {
  await eventually(description, async () => {
    const values = await readAll(locator, attr);
    if (values.length !== 1) return { ok: false, got: `${values.length} matching elements` };
    return { ok: test(values[0]), got: values[0] };
  });
}

async function expectText(locator, expected, description) {
  await expectOne(locator, undefined, (v) => v === expected, `${description} to read ${JSON.stringify(expected)}`);
}

async function expectTextContains(locator, expected, description) {
  await expectOne(locator, undefined, (v) => v.includes(expected), `${description} to contain ${JSON.stringify(expected)}`);
}

async function expectAttr(locator, attr, expected, description) {
  await expectOne(locator, attr, (v) => v === expected, `${description}: ${attr}=${JSON.stringify(expected)}`);
}

async function expectCount(locator, expected, description) {
  await eventually(`${description}: ${expected} element(s)`, async () => {
    const got = await locator.count();
    return { ok: got === expected, got };
  });
}

// ---------- page helpers ----------

const q = (page, testid) => page.locator(`[data-testid="${testid}"]`);
const contact = (page, address) => page.locator(`[data-testid="contact-item"][data-address="${address}"]`);
const request = (page, address) => page.locator(`[data-testid="request-item"][data-address="${address}"]`);
const blockedItem = (page, address) => page.locator(`[data-testid="blocked-item"][data-address="${address}"]`);
const pane = (page, address) => page.locator(`[data-testid="chat-pane"][data-address="${address}"]`);
const tab = (page, address) => page.locator(`[data-testid="chat-tab"][data-address="${address}"]`);
const messages = (page, address) => pane(page, address).locator('[data-testid="chat-message"]');

async function fillLogin(page, who) {
  await q(page, 'login-user').fill(who.user);
  await q(page, 'login-password').fill(who.password);
}

async function expectSignedIn(page, who) {
  await q(page, 'app-view').waitFor({ state: 'visible' });
  await expectText(q(page, 'me-address'), who.address, 'own address in the top bar');
  await expectAttr(q(page, 'conn-state'), 'data-state', 'open', 'connection state');
}

async function addContact(page, name) {
  await q(page, 'add-contact-input').fill(name);
  await q(page, 'add-contact-submit').click();
}

async function sendChat(page, address, text) {
  const input = pane(page, address).locator('[data-testid="chat-input"]');
  await input.fill(text);
  await input.press('Enter');
}

// ---------- protocol v1, as the client sees it ----------

const ERROR_CODES = new Set([
  'not_authorized', 'bad_request', 'item_not_found', 'recipient_unavailable', 'remote_server_not_found',
  'remote_server_timeout', 'policy_violation', 'rate_limited', 'too_large', 'internal',
]);
const isStr = (v) => typeof v === 'string';
const optStr = (v) => v === undefined || typeof v === 'string';

// Returns what is wrong with one server-to-client frame, or null when it follows the spec.
function checkServerFrame(payload) {
  if (typeof payload !== 'string') return 'binary frame';
  let f;
  try {
    f = JSON.parse(payload);
  } catch (e) {
    return 'not JSON';
  }
  if (f === null || typeof f !== 'object' || Array.isArray(f)) return 'not a JSON object';
  switch (f.type) {
    case 'welcome':
      return isStr(f.address) ? null : 'address missing';
    case 'ack':
      return isStr(f.id) ? null : 'id missing';
    case 'error':
      if (!ERROR_CODES.has(f.code)) return `unknown error code ${JSON.stringify(f.code)}`;
      return optStr(f.id) && optStr(f.text) ? null : 'id/text not strings';
    case 'message':
      if (!isStr(f.from) || !isStr(f.body)) return 'from/body missing';
      if (!isStr(f.ts) || Number.isNaN(Date.parse(f.ts))) return 'ts missing or not a timestamp';
      if (typeof f.offline !== 'boolean') return 'offline not a boolean';
      return optStr(f.id) ? null : 'id not a string';
    case 'presence':
      if (!isStr(f.from)) return 'from missing';
      if (!['available', 'away', 'dnd', 'offline'].includes(f.show)) return `bad show ${JSON.stringify(f.show)}`;
      return optStr(f.status) ? null : 'status not a string';
    case 'subscription_request':
    case 'subscribed':
    case 'unsubscribed':
      return isStr(f.from) ? null : 'from missing';
    case 'typing':
      if (!isStr(f.from)) return 'from missing';
      return ['composing', 'paused', 'active'].includes(f.state) ? null : `bad state ${JSON.stringify(f.state)}`;
    case 'blocklist': // extension: the user's block list
      if (!Array.isArray(f.items)) return 'items not an array';
      return f.items.every(isStr) ? null : 'an item is not an address string';
    case 'roster':
      if (!Array.isArray(f.items)) return 'items not an array';
      for (const it of f.items) {
        if (!it || !isStr(it.address)) return 'item without address';
        if (!['none', 'to', 'from', 'both'].includes(it.subscription)) return `bad subscription ${JSON.stringify(it.subscription)}`;
        if (typeof it.pending !== 'boolean') return 'pending not a boolean';
      }
      return null;
    default:
      return `unknown frame type ${JSON.stringify(f.type)}`;
  }
}

// ---------- server ----------

function startServer(dataDir, http = '127.0.0.1:0') {
  const config = path.join(dataDir, 'entente.toml');
  writeFileSync(
    config,
    [
      '[hub]',
      `domain = "${DOMAIN}"`,
      'registration = "open"',
      '[storage]',
      `data_dir = ${JSON.stringify(path.join(dataDir, 'data'))}`,
      '[listen]',
      `http = "${http}"`,
      '[limits]',
      'connection_rate = 20.0',
      'connection_burst = 60',
      '',
    ].join('\n'),
  );
  const env = { ...process.env };
  delete env.ENTENTE_CONFIG;
  const child = spawn(ENTENTE_BIN, ['serve', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'], env });
  const log = createWriteStream(path.join(RESULTS, 'server.log'), { flags: 'a' });
  child.stderr.pipe(log);
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const listening = new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      log.write(`[stdout] ${line}\n`);
      const m = /^listening http (\S+)$/.exec(line);
      if (m) resolve(m[1]);
    });
    child.on('error', (err) => reject(new Error(`cannot start ${ENTENTE_BIN}: ${err.message}`)));
    exited.then(({ code, signal }) =>
      reject(new Error(`server exited (code ${code}, signal ${signal}) before listening; see test-results/server.log`)),
    );
    setTimeout(() => reject(new Error('no "listening http" line within 60 s')), 60000).unref();
  });
  return { child, listening, exited };
}

// ---------- the scenario ----------

async function main() {
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(path.join(RESULTS, 'server.log'), '');
  writeFileSync(path.join(RESULTS, 'frames.log'), '');
  const dataDir = mkdtempSync(path.join(tmpdir(), 'entente-e2e-'));
  let server = null;
  let browser = null;
  let base = null;
  const pages = {};
  const problems = []; // page errors and CSP violations, checked at the end
  const offSpec = []; // server frames that break protocol v1, checked at the end
  let alicePage;
  let bobPage;
  let aliceCtx;
  let bobCtx;

  async function newPage(ctx, label) {
    const page = await ctx.newPage();
    page.on('pageerror', (err) => problems.push(`${label}: uncaught ${err.message}`));
    page.on('console', (msg) => {
      if (msg.type() !== 'error') return;
      const url = msg.location().url || '';
      if (url.endsWith('/favicon.ico')) return;
      // The refused duplicate registration is part of the scenario; Chromium logs its 409.
      if (url.endsWith('/api/v1/register') && msg.text().includes('409')) return;
      problems.push(`${label}: console error ${msg.text()}`);
    });
    page.on('websocket', (ws) => {
      ws.on('framesent', (f) => {
        appendFileSync(path.join(RESULTS, 'frames.log'), `${label} > ${f.payload}\n`);
      });
      ws.on('framereceived', (f) => {
        appendFileSync(path.join(RESULTS, 'frames.log'), `${label} < ${f.payload}\n`);
        const bad = checkServerFrame(f.payload);
        if (bad) offSpec.push(`${label} received ${f.payload}: ${bad}`);
      });
    });
    pages[label] = page;
    await page.goto(base + '/');
    return page;
  }

  // Serves every response of the page with a strict CSP so that any inline script, inline
  // handler or foreign URL in the client shows up as a violation.
  async function enforceCsp(ctx) {
    await ctx.route(`${base}/**`, async (route) => {
      const response = await route.fetch();
      await route.fulfill({
        response,
        headers: { ...response.headers(), 'content-security-policy': CSP },
      });
    });
  }

  try {
    await step('server starts and prints its http listener', async () => {
      server = startServer(dataDir);
      const addr = await server.listening;
      base = `http://${addr}`;
      const health = await fetch(`${base}/healthz`);
      assert(health.status === 200, `/healthz answered ${health.status}`);
    });

    await step('server serves the three client files as they are in web/', async () => {
      for (const [url, file, type] of [
        ['/', 'index.html', 'text/html'],
        ['/app.js', 'app.js', 'javascript'],
        ['/style.css', 'style.css', 'text/css'],
      ]) {
        const res = await fetch(base + url);
        assert(res.status === 200, `${url} answered ${res.status}`);
        const ct = res.headers.get('content-type') || '';
        assert(ct.includes(type), `${url} has content-type ${JSON.stringify(ct)}`);
        const body = await res.text();
        const disk = readFileSync(path.join(WEB_DIR, file), 'utf8');
        assert(body === disk, `${url} differs from web/${file}: rebuild the server binary`);
      }
    });

    await step('chromium starts with two separate contexts under a strict CSP', async () => {
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        args: [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--disable-quic',
          '--no-first-run',
          '--disable-background-networking',
          '--disable-component-update',
          '--disable-sync',
          // The CSP header is added by request interception (below); Chromium then no longer
          // knows the document came from a loopback address, and its Local Network Access
          // checks would refuse the page's own WebSocket to 127.0.0.1.
          '--disable-features=LocalNetworkAccessChecks',
        ],
      });
      aliceCtx = await browser.newContext({ viewport: { width: 1100, height: 720 } });
      bobCtx = await browser.newContext({ viewport: { width: 1100, height: 720 } });
      for (const ctx of [aliceCtx, bobCtx]) {
        ctx.setDefaultTimeout(TIMEOUT);
        await enforceCsp(ctx);
      }
      alicePage = await newPage(aliceCtx, 'alice');
      bobPage = await newPage(bobCtx, 'bob');
      await q(alicePage, 'login-view').waitFor({ state: 'visible' });
      const csp = await (await fetch(base + '/')).headers.get('content-security-policy');
      if (csp) console.log(`       (server sends its own CSP: ${csp})`);
    });

    await step('alice creates an account in her browser and is signed in', async () => {
      await fillLogin(alicePage, ALICE);
      await q(alicePage, 'register-submit').click();
      await expectSignedIn(alicePage, ALICE);
    });

    await step('a second registration of the name alice is refused with a clear message', async () => {
      await fillLogin(bobPage, { user: 'alice', password: 'another password' });
      await q(bobPage, 'register-submit').click();
      await expectText(q(bobPage, 'login-message'), 'That name is already taken.', 'login message');
      assert(await q(bobPage, 'login-view').isVisible(), 'login view should stay visible');
    });

    await step('bob creates an account in his own browser', async () => {
      await fillLogin(bobPage, BOB);
      await q(bobPage, 'register-submit').click();
      await expectSignedIn(bobPage, BOB);
    });

    await step('alice adds bob; her list shows him awaiting approval', async () => {
      await addContact(alicePage, 'Bob');
      await contact(alicePage, BOB.address).waitFor();
      await expectText(
        contact(alicePage, BOB.address).locator('[data-testid="contact-note"]'),
        'Awaiting approval',
        "alice's note on bob",
      );
    });

    await step('bob sees the request from alice and approves it', async () => {
      await request(bobPage, ALICE.address).waitFor();
      await expectText(request(bobPage, ALICE.address).locator('[data-testid="request-from"]'), ALICE.address, 'request');
      await request(bobPage, ALICE.address).locator('[data-testid="request-approve"]').click();
      await expectCount(request(bobPage, ALICE.address), 0, 'requests from alice on bob’s page');
    });

    await step('alice now sees bob available', async () => {
      await expectAttr(contact(alicePage, BOB.address), 'data-show', 'available', "bob in alice's list");
      await expectText(contact(alicePage, BOB.address).locator('[data-testid="contact-show"]'), 'Available', 'bob shown as');
      await expectText(contact(alicePage, BOB.address).locator('[data-testid="contact-note"]'), '', "alice's note on bob");
    });

    await step('bob adds alice back and alice approves', async () => {
      await addContact(bobPage, 'alice');
      await request(alicePage, BOB.address).waitFor();
      await request(alicePage, BOB.address).locator('[data-testid="request-approve"]').click();
      await expectCount(request(alicePage, BOB.address), 0, 'requests from bob on alice’s page');
    });

    await step('both see each other available with a mutual subscription', async () => {
      await expectAttr(contact(bobPage, ALICE.address), 'data-show', 'available', "alice in bob's list");
      await expectAttr(contact(alicePage, BOB.address), 'data-show', 'available', "bob in alice's list");
      await expectAttr(contact(bobPage, ALICE.address), 'data-subscription', 'both', "bob's subscription to alice");
      await expectAttr(contact(alicePage, BOB.address), 'data-subscription', 'both', "alice's subscription to bob");
    });

    const hello = 'Hello Bob — grüße, 日本語, ✓ 🙂';
    await step('alice writes to bob with non-ASCII text; the server acknowledges and bob reads it', async () => {
      await contact(alicePage, BOB.address).locator('[data-testid="contact-open"]').click();
      await pane(alicePage, BOB.address).waitFor({ state: 'visible' });
      await sendChat(alicePage, BOB.address, hello);
      await expectAttr(messages(alicePage, BOB.address).last(), 'data-state', 'sent', "alice's message");
      await tab(bobPage, ALICE.address).waitFor();
      const got = messages(bobPage, ALICE.address).last();
      await expectText(got.locator('[data-testid="chat-message-body"]'), hello, 'message at bob');
      await expectAttr(got, 'data-direction', 'in', 'message at bob');
      await expectAttr(got, 'data-offline', 'false', 'message at bob');
    });

    const markup = '<b>&</b>';
    await step('bob answers with markup-like text that alice sees literally', async () => {
      await pane(bobPage, ALICE.address).waitFor({ state: 'visible' });
      await sendChat(bobPage, ALICE.address, markup);
      await expectAttr(messages(bobPage, ALICE.address).last(), 'data-state', 'sent', "bob's message");
      const got = messages(alicePage, BOB.address).last();
      await expectText(got.locator('[data-testid="chat-message-body"]'), markup, 'message at alice');
      await expectAttr(got, 'data-direction', 'in', 'message at alice');
      for (const page of [alicePage, bobPage]) {
        const bolds = await page.locator('[data-testid="chat-log"] b').count();
        assert(bolds === 0, `a <b> element was created from message text (${bolds})`);
      }
    });

    await step('bob sees "alice is typing…" while alice types, and it clears when she pauses', async () => {
      const indicator = pane(bobPage, ALICE.address).locator('[data-testid="typing-indicator"]');
      const input = pane(alicePage, BOB.address).locator('[data-testid="chat-input"]');
      await input.click();
      const typing = input.pressSequentially('I am typing a longer thought', { delay: 120 });
      await expectText(indicator, 'alice is typing…', "bob's typing indicator");
      await bobPage.screenshot({ path: path.join(RESULTS, 'bob-sees-typing.png') });
      await typing;
      await expectAttr(indicator, 'data-state', 'paused', "bob's typing indicator after alice stops");
      await expectText(indicator, '', "bob's typing indicator after alice stops");
    });

    await step('alice finishes the message; bob gets it and the indicator stays clear', async () => {
      const indicator = pane(bobPage, ALICE.address).locator('[data-testid="typing-indicator"]');
      const input = pane(alicePage, BOB.address).locator('[data-testid="chat-input"]');
      await input.pressSequentially(', done.', { delay: 30 });
      await expectText(indicator, 'alice is typing…', "bob's typing indicator");
      await input.press('Enter');
      await expectText(
        messages(bobPage, ALICE.address).last().locator('[data-testid="chat-message-body"]'),
        'I am typing a longer thought, done.',
        'message at bob',
      );
      await expectAttr(indicator, 'data-state', 'active', "bob's typing indicator after the message");
      await expectText(indicator, '', "bob's typing indicator after the message");
    });

    const awayText = 'at lunch 🍜 back at 2';
    await step('alice sets away with a status message and bob sees both', async () => {
      await q(alicePage, 'my-status').fill(awayText);
      await q(alicePage, 'my-show').selectOption('away');
      await q(alicePage, 'my-presence-set').click();
      const c = contact(bobPage, ALICE.address);
      await expectAttr(c, 'data-show', 'away', "alice in bob's list");
      await expectText(c.locator('[data-testid="contact-show"]'), 'Away', 'alice shown as');
      await expectText(c.locator('[data-testid="contact-status"]'), awayText, "alice's status at bob");
      await expectText(pane(bobPage, ALICE.address).locator('[data-testid="chat-presence"]'), `Away — ${awayText}`, 'chat header');
      await bobPage.screenshot({ path: path.join(RESULTS, 'bob-sees-away.png') });
    });

    await step('a message to a user that does not exist is marked failed with the error text', async () => {
      await q(alicePage, 'add-contact-input').fill('nobody-here');
      await q(alicePage, 'open-chat-submit').click();
      const nobody = `nobody-here@${DOMAIN}`;
      await pane(alicePage, nobody).waitFor({ state: 'visible' });
      await sendChat(alicePage, nobody, 'is anyone there?');
      const m = messages(alicePage, nobody).last();
      await expectAttr(m, 'data-state', 'failed', 'message to nobody');
      await expectAttr(m, 'data-error-code', 'item_not_found', 'message to nobody');
      await expectTextContains(m.locator('[data-testid="chat-message-error"]'), 'Not delivered: ', 'error shown');
      const text = await m.locator('[data-testid="chat-message-error"]').textContent();
      assert(text.length > 'Not delivered: '.length, `error text is empty: ${JSON.stringify(text)}`);
      await alicePage.screenshot({ path: path.join(RESULTS, 'alice-failed-message.png') });
      await pane(alicePage, nobody).locator('[data-testid="chat-close"]').click();
      await expectCount(tab(alicePage, nobody), 0, 'tabs for nobody');
    });

    await step('alice closes her page and bob sees her offline', async () => {
      await alicePage.close();
      const c = contact(bobPage, ALICE.address);
      await expectAttr(c, 'data-show', 'offline', "alice in bob's list");
      await expectText(c.locator('[data-testid="contact-status"]'), '', "alice's status at bob");
    });

    const whileAway = 'Sent while you were offline ✉ <i>really</i>';
    await step('bob writes to alice while she is offline; the server accepts it', async () => {
      await sendChat(bobPage, ALICE.address, whileAway);
      await expectAttr(messages(bobPage, ALICE.address).last(), 'data-state', 'sent', "bob's offline message");
    });

    await step('alice signing in with a wrong password gets a clear error', async () => {
      alicePage = await newPage(aliceCtx, 'alice-again');
      await fillLogin(alicePage, { user: ALICE.user, password: 'wrong password' });
      await q(alicePage, 'login-submit').click();
      await expectTextContains(q(alicePage, 'login-message'), 'Sign-in failed: not_authorized', 'login message');
      assert(await q(alicePage, 'login-view').isVisible(), 'login view should stay visible');
    });

    await step('alice signs in again and receives bob’s message marked offline', async () => {
      await fillLogin(alicePage, ALICE);
      await q(alicePage, 'login-submit').click();
      await expectSignedIn(alicePage, ALICE);
      await pane(alicePage, BOB.address).waitFor({ state: 'visible' });
      const m = messages(alicePage, BOB.address).last();
      await expectText(m.locator('[data-testid="chat-message-body"]'), whileAway, 'offline message body');
      await expectAttr(m, 'data-offline', 'true', 'offline message');
      await expectText(m.locator('[data-testid="chat-message-flag"]'), 'offline message', 'offline marker');
      await expectCount(messages(alicePage, BOB.address), 1, 'messages delivered once');
    });

    await step('after signing in again both see each other available', async () => {
      await expectAttr(contact(alicePage, BOB.address), 'data-show', 'available', "bob in alice's list");
      await expectAttr(contact(bobPage, ALICE.address), 'data-show', 'available', "alice in bob's list");
    });

    await step('screenshots of both browsers', async () => {
      await bobPage.screenshot({ path: path.join(RESULTS, 'bob.png') });
      await alicePage.screenshot({ path: path.join(RESULTS, 'alice.png') });
    });

    await step('when the server stops, the page says so and offers to reconnect', async () => {
      server.child.kill('SIGTERM');
      const { code, signal } = await server.exited;
      assert(code === 0, `server exited with code ${code} signal ${signal} on SIGTERM`);
      await expectAttr(q(bobPage, 'conn-state'), 'data-state', 'closed', "bob's connection state");
      await q(bobPage, 'reconnect').waitFor({ state: 'visible' });
      await expectAttr(q(alicePage, 'conn-state'), 'data-state', 'closed', "alice's connection state");
      await q(alicePage, 'reconnect').waitFor({ state: 'visible' });
      await bobPage.screenshot({ path: path.join(RESULTS, 'bob-disconnected.png') });
    });

    await step('after a restart on the same port, Reconnect signs both back in with the chat history kept', async () => {
      const before = await messages(bobPage, ALICE.address).count();
      assert(before >= 4, `bob's chat with alice holds ${before} messages before the restart`);
      server = startServer(dataDir, new URL(base).host);
      const addr = await server.listening;
      assert(`http://${addr}` === base, `restarted server listens on ${addr}, not ${base}`);
      await q(bobPage, 'reconnect').click();
      await q(alicePage, 'reconnect').click();
      await expectSignedIn(bobPage, BOB);
      await expectSignedIn(alicePage, ALICE);
      await expectCount(messages(bobPage, ALICE.address), before, "messages in bob's chat with alice");
      await expectCount(bobPage.locator('[data-testid="reconnect"]:visible'), 0, 'visible reconnect buttons');
      await sendChat(bobPage, ALICE.address, 'still there?');
      await expectAttr(messages(bobPage, ALICE.address).last(), 'data-state', 'sent', "bob's message after the restart");
      await expectText(
        messages(alicePage, BOB.address).last().locator('[data-testid="chat-message-body"]'),
        'still there?',
        'message at alice after the restart',
      );
    });

    // ---- block lists (extension frames block / unblock / blocklist) ----

    const blockedBody = 'can you hear me? (sent while blocked)';
    let aliceFromBobBefore = 0;

    await step('alice blocks bob; her contact list, chat and Blocked section show it', async () => {
      const c = contact(alicePage, BOB.address);
      await expectCount(q(alicePage, 'blocked-panel').locator(':scope:visible'), 0, "alice's visible Blocked section");
      await expectAttr(c, 'data-blocked', 'false', "bob in alice's list");
      const button = c.locator('[data-testid="contact-block"]');
      await expectText(button, 'Block', "bob's block button");
      await expectAttr(button, 'aria-label', `Block ${BOB.address}`, "bob's block button");
      await button.click();
      await expectAttr(c, 'data-blocked', 'true', "bob in alice's list");
      await expectText(c.locator('[data-testid="contact-note"]'), 'Blocked', "alice's note on bob");
      await expectAttr(c, 'data-show', 'unknown', "bob's presence in alice's list");
      await expectText(button, 'Unblock', "bob's block button");
      await expectAttr(button, 'aria-label', `Unblock ${BOB.address}`, "bob's block button");
      await q(alicePage, 'blocked-panel').waitFor({ state: 'visible' });
      await expectText(blockedItem(alicePage, BOB.address).locator('[data-testid="blocked-address"]'), BOB.address, 'blocked entry');
      await expectCount(q(alicePage, 'blocked-item'), 1, "alice's blocked entries");
      const p = pane(alicePage, BOB.address);
      await expectText(p.locator('[data-testid="chat-presence"]'), 'Blocked', "alice's chat header for bob");
      await expectText(p.locator('[data-testid="chat-block"]'), 'Unblock', "alice's chat header button");
      await expectTextContains(p.locator('[data-testid="chat-blocked"]'), `You blocked ${BOB.address}`, "alice's chat note");
      assert(await p.locator('[data-testid="chat-blocked"]').isVisible(), 'the blocked note in the chat is not visible');
      await alicePage.screenshot({ path: path.join(RESULTS, 'alice-blocked-bob.png') });
    });

    await step('bob sees alice offline', async () => {
      const c = contact(bobPage, ALICE.address);
      await expectAttr(c, 'data-show', 'offline', "alice in bob's list");
      await expectText(c.locator('[data-testid="contact-show"]'), 'Offline', 'alice shown as');
      await expectText(pane(bobPage, ALICE.address).locator('[data-testid="chat-presence"]'), 'Offline', "bob's chat header");
      await expectAttr(c, 'data-blocked', 'false', "alice in bob's list (bob blocked nobody)");
    });

    await step('a second session of alice learns the block list after signing in', async () => {
      const second = await newPage(aliceCtx, 'alice-second');
      await fillLogin(second, ALICE);
      await q(second, 'login-submit').click();
      await expectSignedIn(second, ALICE);
      await expectAttr(contact(second, BOB.address), 'data-blocked', 'true', "bob in alice's second session");
      await expectText(contact(second, BOB.address).locator('[data-testid="contact-note"]'), 'Blocked', 'note in the second session');
      await blockedItem(second, BOB.address).waitFor({ state: 'visible' });
      await second.close();
    });

    await step('bob’s message to alice fails in his chat with the server’s error', async () => {
      aliceFromBobBefore = await messages(alicePage, BOB.address).count();
      await sendChat(bobPage, ALICE.address, blockedBody);
      const m = messages(bobPage, ALICE.address).last();
      await expectText(m.locator('[data-testid="chat-message-body"]'), blockedBody, "bob's last message");
      await expectAttr(m, 'data-state', 'failed', "bob's message to alice");
      await expectAttr(m, 'data-error-code', 'recipient_unavailable', "bob's message to alice");
      await expectTextContains(m.locator('[data-testid="chat-message-error"]'), 'Not delivered: ', 'error shown to bob');
      await expectCount(messages(alicePage, BOB.address), aliceFromBobBefore, "messages in alice's chat with bob");
      await bobPage.screenshot({ path: path.join(RESULTS, 'bob-blocked-message.png') });
    });

    await step('alice’s own message to bob while he is blocked shows the server’s refusal', async () => {
      await sendChat(alicePage, BOB.address, 'this should not go out');
      const m = messages(alicePage, BOB.address).last();
      await expectAttr(m, 'data-state', 'failed', "alice's message to blocked bob");
      await expectAttr(m, 'data-error-code', 'policy_violation', "alice's message to blocked bob");
      await expectTextContains(m.locator('[data-testid="chat-message-error"]'), 'blocked', 'error shown to alice');
      aliceFromBobBefore += 1; // her own failed message is in the same chat
    });

    await step('alice unblocks bob from the Blocked section; both see each other available again', async () => {
      const entry = blockedItem(alicePage, BOB.address).locator('[data-testid="blocked-unblock"]');
      await expectAttr(entry, 'aria-label', `Unblock ${BOB.address}`, 'unblock button');
      await entry.click();
      await expectCount(q(alicePage, 'blocked-item'), 0, "alice's blocked entries");
      await q(alicePage, 'blocked-panel').waitFor({ state: 'hidden' });
      const c = contact(alicePage, BOB.address);
      await expectAttr(c, 'data-blocked', 'false', "bob in alice's list");
      await expectText(c.locator('[data-testid="contact-note"]'), '', "alice's note on bob");
      await expectText(c.locator('[data-testid="contact-block"]'), 'Block', "bob's block button");
      await expectAttr(contact(bobPage, ALICE.address), 'data-show', 'available', "alice in bob's list");
      await expectAttr(c, 'data-show', 'available', "bob in alice's list");
      const p = pane(alicePage, BOB.address);
      await expectText(p.locator('[data-testid="chat-presence"]'), 'Available', "alice's chat header for bob");
      await p.locator('[data-testid="chat-blocked"]').waitFor({ state: 'hidden' });
    });

    await step('after the unblock bob’s message reaches alice, and the one sent while blocked never does', async () => {
      await sendChat(bobPage, ALICE.address, 'friends again');
      await expectAttr(messages(bobPage, ALICE.address).last(), 'data-state', 'sent', "bob's message after the unblock");
      await expectText(
        messages(alicePage, BOB.address).last().locator('[data-testid="chat-message-body"]'),
        'friends again',
        'message at alice after the unblock',
      );
      // Messages arrive in order, so one refused earlier cannot still be on its way.
      await expectCount(messages(alicePage, BOB.address), aliceFromBobBefore + 1, "messages in alice's chat with bob");
      const bodies = await readAll(messages(alicePage, BOB.address).locator('[data-testid="chat-message-body"]'));
      assert(!bodies.includes(blockedBody), `the message sent while blocked reached alice: ${JSON.stringify(bodies)}`);
    });

    await step('bob removes alice; neither sees the other’s presence any more', async () => {
      await contact(bobPage, ALICE.address).locator('[data-testid="contact-remove"]').click();
      await expectCount(contact(bobPage, ALICE.address), 0, "alice in bob's list");
      await eventually("bob's presence to be hidden from alice", async () => {
        const shows = await readAll(contact(alicePage, BOB.address), 'data-show');
        return { ok: shows.length === 0 || (shows.length === 1 && shows[0] === 'unknown'), got: shows };
      });
      await bobPage.screenshot({ path: path.join(RESULTS, 'bob-final.png') });
    });

    await step('adding a user that does not exist shows the server’s error', async () => {
      await addContact(alicePage, 'ghost-user');
      await q(alicePage, 'error-banner').waitFor({ state: 'visible' });
      await expectTextContains(q(alicePage, 'error-banner-text'), 'item_not_found', "alice's error banner");
      await q(alicePage, 'error-banner-close').click();
      await q(alicePage, 'error-banner').waitFor({ state: 'hidden' });
    });

    await step('carol asks bob, bob denies, and carol sees the request declined', async () => {
      const carolCtx = await browser.newContext({ viewport: { width: 1100, height: 720 } });
      carolCtx.setDefaultTimeout(TIMEOUT);
      await enforceCsp(carolCtx);
      const carolPage = await newPage(carolCtx, 'carol');
      await fillLogin(carolPage, CAROL);
      await q(carolPage, 'register-submit').click();
      await expectSignedIn(carolPage, CAROL);
      await addContact(carolPage, 'bob');
      await request(bobPage, CAROL.address).locator('[data-testid="request-deny"]').click();
      await expectCount(request(bobPage, CAROL.address), 0, 'requests from carol on bob’s page');
      await expectCount(q(bobPage, 'requests-panel').locator(':scope:visible'), 0, "bob's visible requests panel");
      await expectText(q(carolPage, 'notice-text'), 'bob declined your contact request.', "carol's notice");
      await eventually("bob's presence to stay hidden from carol", async () => {
        const shows = await readAll(contact(carolPage, BOB.address), 'data-show');
        return { ok: shows.length === 0 || (shows.length === 1 && shows[0] === 'unknown'), got: shows };
      });
      await carolPage.screenshot({ path: path.join(RESULTS, 'carol.png') });
      await carolCtx.close();
    });

    await step('dave asks bob; bob blocks him from the request, dave sees it declined and cannot write', async () => {
      const daveCtx = await browser.newContext({ viewport: { width: 1100, height: 720 } });
      daveCtx.setDefaultTimeout(TIMEOUT);
      await enforceCsp(daveCtx);
      const davePage = await newPage(daveCtx, 'dave');
      await fillLogin(davePage, DAVE);
      await q(davePage, 'register-submit').click();
      await expectSignedIn(davePage, DAVE);
      await addContact(davePage, 'bob');
      const r = request(bobPage, DAVE.address);
      await r.waitFor();
      const block = r.locator('[data-testid="request-block"]');
      await expectAttr(block, 'aria-label', `Deny and block ${DAVE.address}`, 'request block button');
      await block.click();
      await expectCount(r, 0, 'requests from dave on bob’s page');
      await blockedItem(bobPage, DAVE.address).waitFor({ state: 'visible' });
      await expectCount(contact(bobPage, DAVE.address), 0, "dave in bob's contacts");
      await expectText(q(davePage, 'notice-text'), 'bob declined your contact request.', "dave's notice");
      await q(davePage, 'add-contact-input').fill('bob');
      await q(davePage, 'open-chat-submit').click();
      await pane(davePage, BOB.address).waitFor({ state: 'visible' });
      await sendChat(davePage, BOB.address, 'please?');
      const m = messages(davePage, BOB.address).last();
      await expectAttr(m, 'data-state', 'failed', "dave's message to bob");
      await expectAttr(m, 'data-error-code', 'recipient_unavailable', "dave's message to bob");
      await expectCount(tab(bobPage, DAVE.address), 0, "bob's chat tabs for dave");
      await bobPage.screenshot({ path: path.join(RESULTS, 'bob-blocked-dave.png') });
      await daveCtx.close();
    });

    await step('bob unblocks dave, who was never a contact; the Blocked section disappears', async () => {
      await blockedItem(bobPage, DAVE.address).locator('[data-testid="blocked-unblock"]').click();
      await expectCount(q(bobPage, 'blocked-item'), 0, "bob's blocked entries");
      await q(bobPage, 'blocked-panel').waitFor({ state: 'hidden' });
    });

    await step('no script errors and no CSP violations in either browser', async () => {
      assert(problems.length === 0, problems.join('\n'));
    });

    await step('every frame the server sent follows hub client protocol v1 (with the blocklist extension)', async () => {
      assert(offSpec.length === 0, offSpec.join('\n'));
    });
  } finally {
    if (broken) {
      for (const [label, page] of Object.entries(pages)) {
        if (!page.isClosed()) {
          await page.screenshot({ path: path.join(RESULTS, `failure-${label}.png`) }).catch(() => {});
        }
      }
    }
    if (browser) await browser.close().catch(() => {});
    if (server && server.child.exitCode === null && server.child.signalCode === null) {
      server.child.kill('SIGTERM');
      await Promise.race([server.exited, new Promise((r) => setTimeout(r, 10000))]);
      if (server.child.exitCode === null) server.child.kill('SIGKILL');
    }
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main()
  .catch((err) => {
    results.failed += 1;
    console.log(`FAIL - harness: ${err && err.stack ? err.stack : err}`);
  })
  .finally(() => {
    console.log(`${results.passed} passed, ${results.failed} failed, ${results.skipped} skipped`);
    process.exit(results.failed === 0 && results.passed > 0 ? 0 : 1);
  });
