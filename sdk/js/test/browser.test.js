// The built package in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core; no browser is downloaded): the chat example in two pages talks through
// a real relay, and a page reports a refused subscribe as a typed RelayError.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { Relay } from './relay.js';

const PKG = resolve(fileURLToPath(import.meta.url), '../..');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const TYPES = { '.html': 'text/html', '.js': 'text/javascript' };

let relay, server, browser, profile, base;

before(async () => {
  relay = await Relay.start();
  server = createServer(async (req, res) => {
    const path = resolve(PKG, '.' + new URL(req.url, 'http://x').pathname);
    if (!path.startsWith(PKG + '/dist/') && !path.startsWith(PKG + '/examples/') && !path.startsWith(PKG + '/test/')) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(path);
      res.writeHead(200, { 'content-type': TYPES[extname(path)] ?? 'application/octet-stream' }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${server.address().port}`;
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  profile = mkdtempSync(join(tmpdir(), 'fps-chromium-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 60_000,
  });
});

after(async () => {
  await browser?.close();
  server?.close();
  await relay?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

test('chat example: two pages talk through the relay', async () => {
  const q = (name) => `${base}/examples/chat.html?url=${encodeURIComponent(relay.url)}&token=${relay.devTicket}&name=${name}&room=t1`;
  const alice = await browser.newPage();
  const bob = await browser.newPage();
  const errors = [];
  for (const p of [alice, bob]) p.on('pageerror', (e) => errors.push(e.message));
  await alice.goto(q('alice'));
  await bob.goto(q('bob'));
  await alice.waitForFunction(() => window.chatReady === true, null, { timeout: 20_000 });
  await bob.waitForFunction(() => window.chatReady === true, null, { timeout: 20_000 });
  await alice.fill('#text', 'hello bob');
  await alice.press('#text', 'Enter');
  await bob.waitForFunction(() => document.getElementById('log').textContent.includes('alice: hello bob'), null, { timeout: 10_000 });
  await alice.waitForFunction(() => document.getElementById('log').textContent.includes('alice: hello bob'), null, { timeout: 10_000 });
  assert.deepEqual(errors, []);
});

test('in the browser: binary round trip, typed RelayError, ping', async () => {
  const page = await browser.newPage();
  await page.goto(`${base}/examples/chat.html?url=${encodeURIComponent(relay.url)}&token=${relay.devTicket}&name=probe`);
  await page.waitForFunction(() => window.chatReady === true, null, { timeout: 20_000 });
  const result = await page.evaluate(
    async ({ url, token }) => {
      const { connect, RelayError } = await import('../dist/index.js');
      const c = await connect({ url, token });
      const sub = await c.subscribe('dev', 'public.bin.#');
      const bytes = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
      await c.publish('dev', 'public.bin.x', bytes);
      const m = await sub.next();
      let refused;
      try {
        await c.subscribe('dev', 'private.#');
      } catch (e) {
        refused = { relayError: e instanceof RelayError, code: e.code, target: e.target };
      }
      const rtt = await c.ping();
      await c.close();
      return { same: m.payload.length === 1000 && m.payload.every((b, i) => b === i % 251), pattern: m.pattern, refused, rtt };
    },
    { url: relay.url, token: relay.devTicket },
  );
  assert.equal(result.same, true);
  assert.equal(result.pattern, 'public.bin.#');
  assert.deepEqual(result.refused, { relayError: true, code: 'permission_denied', target: 'private.#' });
  assert.ok(result.rtt >= 0);
});
