// The built package over WebTransport in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core, QUIC on): a page fetches the relay's certificate hash from
// GET /v1/wt-cert-hash, connects with `transport: 'webtransport'` and
// `serverCertificateHashes`, and talks to a WebSocket client of the same relay both ways.
// Node has no WebTransport, so the browser is where this transport runs end to end.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { Relay } from './relay.js';

const PKG = resolve(fileURLToPath(import.meta.url), '../..');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

let relay, server, browser, profile, page, wtUrl;

before(async () => {
  relay = await Relay.start({ args: ['--wt-listen', '127.0.0.1:0'] });
  const line = await relay.waitOutput((l) => l.includes('webtransport on https://'), 30_000, 'webtransport line');
  wtUrl = line.match(/https:\/\/[^\s]+/)[0];
  // The page's origin (http://127.0.0.1 is a secure context, as WebTransport needs) serves dist/.
  server = createServer(async (req, res) => {
    const path = resolve(PKG, '.' + new URL(req.url, 'http://x').pathname);
    if (!path.startsWith(PKG + '/dist/')) {
      res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>wt</title>');
      return;
    }
    try {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(await readFile(path));
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium`);
  profile = mkdtempSync(join(tmpdir(), 'fps-chromium-wt-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 60_000,
  });
  page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
});

after(async () => {
  await browser?.close();
  server?.close();
  await relay?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/** Runs `fn` in the page with the package, the relay's addresses and a ticket. */
function inPage(fn, extra = {}, r = relay, url = wtUrl) {
  const args = { api: r.apiBase, wsUrl: r.url, wtUrl: url, token: r.devTicket, ...extra };
  return page.evaluate(
    async ({ src, args }) => {
      const sdk = await import('/dist/index.js');
      const h = await (await fetch(`${args.api}/v1/wt-cert-hash`)).json();
      const webTransport = { serverCertificateHashes: [{ algorithm: 'sha-256', value: new Uint8Array(h.value) }] };
      const wt = (o = {}) => sdk.connect({ transport: 'webtransport', webTransportUrl: args.wtUrl, webTransport, token: args.token, requestTimeoutMs: 20_000, ...o });
      return (0, eval)(`(${src})`)(sdk, wt, args);
    },
    { src: fn.toString(), args },
  );
}

test('WebTransport in Chromium: both ways with a WebSocket client, one message per pattern, errors, ping', async () => {
  const r = await inPage(async (sdk, wt, args) => {
    const c = await wt();
    const ws = await sdk.connect({ url: args.wsUrl, token: args.token });
    const out = { transport: c.transport, wsTransport: ws.transport };
    // WebSocket -> WebTransport, two patterns matching one channel: one message each.
    const all = await c.subscribe('dev', 'public.wt.#');
    const one = await c.subscribe('dev', 'public.wt.*');
    const bytes = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
    await ws.publish('dev', 'public.wt.a', bytes);
    const got = [await all.next(), await one.next()];
    out.toWt = got.map((m) => [m.pattern, m.channel, m.payload.length === 1000 && m.payload.every((b, i) => b === i % 251)]);
    // WebTransport -> WebSocket.
    const back = await ws.subscribe('dev', 'public.back.#');
    await c.publish('dev', 'public.back.x', 'hello from webtransport');
    out.toWs = (await back.next()).text();
    // The largest publish that fits one WebTransport frame arrives intact; one byte more is
    // refused locally (the relay would end the session).
    const big = new Uint8Array(65_536 - 6 - 'dev'.length - 'public.wt.big'.length).fill(7);
    const bigSub = await ws.subscribe('dev', 'public.wt.big');
    await c.publish('dev', 'public.wt.big', big);
    const m = await bigSub.next();
    out.big = [m.payload.length, m.payload.every((b) => b === 7)];
    try {
      await c.publish('dev', 'public.wt.big', new Uint8Array(big.length + 1));
    } catch (e) {
      out.tooBig = [e instanceof sdk.ValidationError, e.code];
    }
    try {
      await c.subscribe('dev', 'private.#');
    } catch (e) {
      out.refused = [e instanceof sdk.RelayError, e.code, e.target];
    }
    try {
      await c.subscribe('dev', 'public.x:U:1:0');
    } catch (e) {
      out.lineOption = [e instanceof sdk.ValidationError, e.code];
    }
    out.rtt = await c.ping();
    out.stillWt = c.transport;
    await c.close();
    await ws.close();
    return out;
  });
  assert.equal(r.transport, 'webtransport');
  assert.equal(r.wsTransport, 'websocket');
  assert.deepEqual(r.toWt, [
    ['public.wt.#', 'public.wt.a', true],
    ['public.wt.*', 'public.wt.a', true],
  ]);
  assert.equal(r.toWs, 'hello from webtransport');
  assert.deepEqual(r.big, [65_514, true]);
  assert.deepEqual(r.tooBig, [true, 'payload_too_large']);
  assert.deepEqual(r.refused, [true, 'permission_denied', 'private.#']);
  assert.deepEqual(r.lineOption, [true, 'invalid_pattern'], 'lines are not read by this client: refused locally');
  assert.ok(r.rtt >= 0);
  assert.equal(r.stillWt, 'webtransport', 'the session survived the refused commands');
});

test('WebTransport in Chromium: a bogus ticket is a HandshakeError; auto falls back to WebSocket', async () => {
  const r = await inPage(async (sdk, wt, args) => {
    const out = {};
    try {
      await wt({ token: 'AT_bogus', reconnect: false });
    } catch (e) {
      out.bogus = [e instanceof sdk.HandshakeError, e.code];
    }
    // `auto` with a WebTransport URL nobody listens on: WebSocket.
    const c = await sdk.connect({ transport: 'auto', url: args.wsUrl, webTransportUrl: 'https://127.0.0.1:9/', token: args.token, requestTimeoutMs: 5_000 });
    out.auto = c.transport;
    await c.close();
    // `auto` with the relay's WebTransport: WebTransport.
    const d = await wt({ transport: 'auto', url: args.wsUrl });
    out.autoWt = d.transport;
    await d.close();
    return out;
  });
  assert.deepEqual(r.bogus, [true, 'handshake_refused']);
  assert.equal(r.auto, 'websocket');
  assert.equal(r.autoWt, 'webtransport');
});

/** A UDP port that was free a moment ago (the relay binds it next). */
async function freeUdpPort() {
  const sock = createSocket('udp4');
  await new Promise((r) => sock.bind(0, '127.0.0.1', r));
  const { port } = sock.address();
  await new Promise((r) => sock.close(r));
  return port;
}

test('WebTransport in Chromium: after a relay restart the client reconnects over WebTransport with its subscriptions', async () => {
  // A certificate from files and a fixed UDP port, so the restarted relay has the same
  // address and hash (a generated certificate would be new, and the browser pins the hash).
  const dir = mkdtempSync(join(tmpdir(), 'fps-wt-cert-'));
  const [cert, key] = [join(dir, 'wt.pem'), join(dir, 'wt.key')];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '10',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  const port = await freeUdpPort();
  const r = await Relay.start({ args: ['--wt-listen', `127.0.0.1:${port}`, '--wt-cert', cert, '--wt-key', key] });
  const url = `https://127.0.0.1:${port}/`;
  try {
    await r.waitOutput((l) => l.includes('webtransport on https://'), 30_000, 'webtransport line');
    const first = await inPage(
      async (sdk, wt) => {
        const c = await wt({ reconnect: { initialDelayMs: 100, maxDelayMs: 1_000 } });
        window.reconnected = new Promise((res) => c.on('reconnected', res));
        window.client = c;
        window.sub = await c.subscribe('dev', 'public.re.#');
        return c.transport;
      },
      {},
      r,
      url,
    );
    assert.equal(first, 'webtransport');
    await r.terminate(); // RECONNECT, then the relay exits
    await r.restart();
    await r.waitOutput((l) => l.includes('webtransport on https://'), 30_000, 'webtransport line after restart');
    const after = await inPage(
      async (sdk, wt, args) => {
        const how = await Promise.race([window.reconnected, new Promise((_, rej) => setTimeout(() => rej(new Error('no reconnect within 30 s')), 30_000))]);
        const ws = await sdk.connect({ url: args.wsUrl, token: args.token });
        await ws.publish('dev', 'public.re.x', 'after the restart');
        const m = await window.sub.next();
        await ws.close();
        const out = { how, text: m.text(), transport: window.client.transport, reconnects: window.client.stats.reconnects };
        await window.client.close();
        return out;
      },
      {},
      r,
      url,
    );
    assert.equal(after.how.transport, 'webtransport');
    assert.equal(after.transport, 'webtransport');
    assert.equal(after.text, 'after the restart');
    assert.ok(after.reconnects >= 1, `reconnects ${after.reconnects}`);
  } finally {
    await r.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
