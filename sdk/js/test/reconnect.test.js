// Reconnect, RECONNECT (make-before-break on SIGTERM), tickets refresh/revoke, discovery:
// each test starts its own relay processes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { connect, AccessEndedError, HandshakeError } from '../dist/index.js';
import { getToken, refreshToken, revokeToken, nearestEdge } from '../dist/server.js';
import { Relay, meshCerts, until, within } from './relay.js';

/** Resolves with the first event of `type` on client `c`. */
function once(c, type, ms = 15_000) {
  return within(new Promise((res) => { const off = c.on(type, (ev) => (off(), res(ev))); }), ms, `client event ${type}`);
}

test('reconnect after a relay restart: subscriptions restored', async (t) => {
  const relay = await Relay.start();
  t.after(() => relay.stop());
  const s = await connect({ url: relay.url, token: relay.devTicket, reconnect: { initialDelayMs: 50, maxDelayMs: 300 } });
  t.after(() => s.close());
  const sub = await s.subscribe('dev', 'public.#');
  const reconnecting = once(s, 'reconnecting');
  const reconnected = once(s, 'reconnected', 30_000);
  await relay.kill(); // hard stop: no RECONNECT, the socket just closes
  const ev = await reconnecting;
  assert.match(ev.reason, /closed/);
  await relay.restart();
  await reconnected;
  assert.equal(s.stats.reconnects, 1);
  const p = await connect({ url: relay.url, token: relay.devTicket });
  t.after(() => p.close());
  await p.publish('dev', 'public.after', 'back');
  const m = await within(sub.next(), 5000, 'message after restart');
  assert.equal(m.text(), 'back');
  assert.equal(m.pattern, 'public.#');
});

test('RECONNECT on SIGTERM: make-before-break to the new relay, old one left before its grace', async (t) => {
  const old = await Relay.start();
  t.after(() => old.stop());
  const s = await connect({ url: old.url, token: old.devTicket, reconnect: { initialDelayMs: 50, maxDelayMs: 200 } });
  t.after(() => s.close());
  const sub = await s.subscribe('dev', 'public.#');
  const errors = [];
  s.on('error', (e) => errors.push(e));
  const reconnecting = once(s, 'reconnecting');
  const reconnected = once(s, 'reconnected', 30_000);
  const t0 = Date.now();
  const exited = old.terminate();
  const ev = await reconnecting;
  assert.match(ev.reason, /RECONNECT/);
  // The draining relay closed its listener: start the replacement on the same port.
  await old.waitOutput((l) => l.includes('sending RECONNECT'));
  const fresh = await Relay.start({ port: old.port, stateDir: old.stateDir });
  t.after(() => fresh.stop());
  await reconnected;
  const { code } = await within(exited, 10_000, 'old relay exit');
  assert.equal(code, 0);
  assert.ok(Date.now() - t0 < 4500, `the client left the old relay before its 5 s grace (${Date.now() - t0} ms)`);
  assert.ok(!old.proc.lines.some((l) => l.includes('grace over')), 'no client had to be closed by the grace timer');
  const p = await connect({ url: fresh.url, token: fresh.devTicket });
  t.after(() => p.close());
  await p.publish('dev', 'public.moved', 'on the new relay');
  assert.equal((await within(sub.next(), 5000, 'message')).text(), 'on the new relay');
  assert.equal(s.closed, false);
  assert.deepEqual(errors, []);
});

test('RECONNECT while a publisher keeps publishing: two meshed relays, every message once per pattern', async (t) => {
  const mesh = meshCerts(['a', 'b']);
  t.after(() => mesh.remove());
  const a = await Relay.start({ args: mesh.args('a') });
  t.after(() => a.stop());
  const b = await Relay.start({
    args: [...mesh.args('b'), '--peer', `a@${await a.meshAddr()}`, '--ticket-public-key', `${a.stateDir}/ticket-public.key`],
    devTicket: a.devTicket,
  });
  t.after(() => b.stop());
  // The edge list the client discovers: a, then only b once a drains.
  let edges = [`127.0.0.1:${a.port}`];
  const srv = createServer((req, res) => res.end(JSON.stringify({ version: 1, edges })));
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => srv.close());
  const s = await connect({ bootstrap: `http://127.0.0.1:${srv.address().port}/`, token: a.devTicket, reconnect: { initialDelayMs: 50, maxDelayMs: 200 } });
  t.after(() => s.close());
  assert.equal(s.url, a.url);
  const got = { 'public.seq.#': [], 'public.seq.*': [] };
  for (const pattern of Object.keys(got)) await s.subscribe('dev', pattern, (m) => got[pattern].push(Number(m.text())));
  let probes = 0;
  await s.subscribe('dev', 'public.probe', () => probes++);
  const p = await connect({ url: b.url, token: a.devTicket });
  t.after(() => p.close());
  // Until b routes to a (mesh link up, a's interest known), probes do not arrive.
  await until(async () => (await p.publish('dev', 'public.probe', 'x'), probes > 0), 30_000, 'a message from b through the mesh');

  let sent = 0;
  let stop = false;
  const publisher = (async () => {
    // Bursts of 10 (one PING barrier each): many messages in flight at any moment.
    while (!stop && sent < 20_000) await Promise.all(Array.from({ length: 10 }, () => p.publish('dev', 'public.seq.n', String(sent++))));
  })();
  const count = () => got['public.seq.#'].length;
  await until(() => count() >= 20, 10_000, 'messages before the move');
  const reconnected = once(s, 'reconnected', 30_000);
  edges = [`127.0.0.1:${b.port}`];
  const exited = a.terminate();
  assert.equal((await reconnected).url, b.url);
  await within(exited, 10_000, 'a exits once the client has left it');
  const after = count();
  await until(() => count() >= after + 20, 10_000, 'messages after the move');
  stop = true;
  await publisher;
  await until(() => count() >= sent, 10_000, `all ${sent} messages`);
  // A marker after the last message on the same connection: anything late would be before it.
  const before = probes;
  await p.publish('dev', 'public.probe', 'end');
  await until(() => probes > before, 10_000, 'the end marker');
  const want = Array.from({ length: sent }, (_, i) => i);
  for (const [pattern, seqs] of Object.entries(got)) {
    assert.deepEqual([...seqs].sort((x, y) => x - y), want, `${pattern}: each of the ${sent} messages exactly once`);
  }
  assert.ok(s.stats.duplicatesDropped > 0, `the two connections overlapped (duplicates were dropped); ${sent} sent`);
});

test('ticket refresh keeps a connection past its first expiry; revoke closes it and reconnect is refused', async (t) => {
  const relay = await Relay.start();
  t.after(() => relay.stop());
  const rest = { apiBase: relay.apiBase, masterToken: relay.masterToken };
  const grant = { tenant_ids: ['dev'], allow_channels_pub: ['public.#'], allow_channels_sub: ['public.#'] };
  const expiresMs = Date.now() + 3000;
  const token = await getToken(rest, { tenant_grants: [grant], expires_at: new Date(Math.ceil(expiresMs / 1000) * 1000) });
  assert.match(token, /^AT_[0-9a-f]+_[0-9a-f]+$/);
  const c = await connect({ url: relay.url, token, reconnect: { initialDelayMs: 50, maxDelayMs: 200 } });
  t.after(() => c.close());
  const sub = await c.subscribe('dev', 'public.#');
  const newExpiry = await refreshToken(rest, token, 3600);
  assert.ok(newExpiry.getTime() > Date.now() + 3500 * 1000);
  // Past the first expiry and the relay's once-a-second check: still connected.
  await until(() => Date.now() > expiresMs + 2000, 10_000, 'the first expiry to pass');
  assert.equal(c.closed, false);
  await c.publish('dev', 'public.alive', 'still here');
  assert.equal((await within(sub.next(), 5000, 'message')).text(), 'still here');

  const closed = once(c, 'close', 10_000);
  await revokeToken(rest, token);
  const { error } = await closed;
  assert.ok(error instanceof AccessEndedError, `got ${error}`);
  assert.equal(error.code, 'access_ended');
  await assert.rejects(sub.next(), (e) => e instanceof AccessEndedError);
  await assert.rejects(c.publish('dev', 'public.x', 'x'), (e) => e instanceof AccessEndedError);
  // A new connection with the revoked ticket is refused with the relay's reason.
  await assert.rejects(connect({ url: relay.url, token }), (e) => {
    assert.ok(e instanceof HandshakeError);
    assert.equal(e.status, 401);
    assert.match(e.reason, /revoked/);
    return true;
  });
  // Refresh of a revoked ticket is refused (409) with a typed REST error.
  await assert.rejects(refreshToken(rest, token, 3600), (e) => e.status === 409);
});

test('edge discovery: bootstrap document, nearest edge by /ping, connect({ bootstrap })', async (t) => {
  const relay = await Relay.start();
  t.after(() => relay.stop());
  // A dead candidate (a port nobody listens on) next to the live relay.
  const dead = createServer();
  await new Promise((r) => dead.listen(0, '127.0.0.1', r));
  const deadPort = dead.address().port;
  await new Promise((r) => dead.close(r));
  const doc = { version: 1, updated_at: 1780663294, edges: [`127.0.0.1:${deadPort}`, { host: `127.0.0.1:${relay.port}`, priority: 100 }, 42] };
  const srv = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(doc));
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => srv.close());
  const bootstrap = `http://127.0.0.1:${srv.address().port}/edges.json`;
  const edge = await nearestEdge(bootstrap, { timeoutMs: 3000 });
  assert.equal(edge.wsUrl, relay.url);
  assert.ok(edge.rttMs >= 0);
  const c = await connect({ bootstrap, token: relay.devTicket });
  t.after(() => c.close());
  assert.equal(c.url, relay.url);
  assert.ok((await c.ping()) >= 0);
});
