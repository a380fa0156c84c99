// The RECONNECT move against a scripted relay (a `ws` server in this process), so the test
// decides which connection delivers what, and in which order, during the overlap: the
// duplicate dropping must lose nothing and let no duplicate through in any order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocketServer } from 'ws';
import { connect } from '../dist/index.js';
import { within } from './relay.js';
import { deliverFrame } from './wire.js';

const deliver = deliverFrame;

/** A scripted LLPS relay: every accepted connection is handed to the test, which answers by hand. */
async function scriptedRelay() {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (ps) => (ps.has('llps.v1') ? 'llps.v1' : false) });
  await new Promise((r) => wss.once('listening', r));
  const conns = [];
  const waiting = [];
  wss.on('connection', (ws) => {
    const c = { ws, texts: [], waiters: [], closed: new Promise((r) => ws.once('close', r)) };
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const t = data.toString();
      if (t === 'PING') return ws.send('PONG');
      c.texts.push(t);
      for (const w of c.waiters.splice(0)) w();
    });
    c.text = (pred, what) =>
      within(
        new Promise((res) => {
          const check = () => (c.texts.some(pred) ? res() : c.waiters.push(check));
          check();
        }),
        10_000,
        what,
      );
    conns.push(c);
    for (const w of waiting.splice(0)) w();
  });
  const nth = (i) =>
    within(
      new Promise((res) => {
        const check = () => (conns[i] ? res(conns[i]) : waiting.push(check));
        check();
      }),
      10_000,
      `connection ${i + 1}`,
    );
  return { url: `ws://127.0.0.1:${wss.address().port}/ws`, nth, close: () => {
      for (const ws of wss.clients) ws.terminate();
      return new Promise((r) => wss.close(r));
    },
  };
}

test('RECONNECT overlap: per-pattern duplicates dropped in either order, repeats kept, late deliveries on the old connection kept', async (t) => {
  const relay = await scriptedRelay();
  t.after(() => relay.close());
  const c = await connect({ url: relay.url, token: 'AT_1_2', reconnect: { initialDelayMs: 1, maxDelayMs: 1 } });
  t.after(() => c.close());
  const a = [];
  const b = [];
  const subA = c.subscribe('t', 'x.#', (m) => a.push(m.text()));
  const subB = c.subscribe('t', 'x.*', (m) => b.push(m.text()));
  const old = await relay.nth(0);
  await old.text((s) => s === 'SUB:t:x.*', 'both SUBs');
  old.ws.send('OK:SUB:t:x.#');
  old.ws.send('OK:SUB:t:x.*');
  await Promise.all([subA, subB]);
  const both = ['x.#', 'x.*'];

  old.ws.send('RECONNECT');
  const fresh = await relay.nth(1);
  await fresh.text((s) => s === 'SUB:t:x.*', 'both SUBs on the new connection');
  fresh.ws.send('OK:SUB:t:x.#'); // x.* not confirmed yet: the new one delivers for x.# only
  const seen = (n) => within((async () => { while (a.length + b.length < n) await new Promise((r) => setTimeout(r, 5)); })(), 10_000, `${n} deliveries`);
  // m1 reaches the new connection first (one pattern), then the old one (both).
  fresh.ws.send(deliver('t', 'x.1', 'm1', ['x.#']));
  await seen(1);
  old.ws.send(deliver('t', 'x.1', 'm1', both));
  // m2 twice on the old connection only (published twice before the new one subscribed): both kept.
  old.ws.send(deliver('t', 'x.2', 'm2', both));
  old.ws.send(deliver('t', 'x.2', 'm2', both));
  await seen(6);
  // m3 on the old one first, then the new one.
  old.ws.send(deliver('t', 'x.3', 'm3', both));
  fresh.ws.send(deliver('t', 'x.3', 'm3', ['x.#']));
  const moved = new Promise((r) => c.on('reconnected', r));
  fresh.ws.send('OK:SUB:t:x.*');
  await within(moved, 10_000, 'reconnected');
  // After the switch the old connection still drains what was in flight to it.
  fresh.ws.send(deliver('t', 'x.4', 'm4', both));
  old.ws.send(deliver('t', 'x.4', 'm4', both));
  old.ws.send(deliver('t', 'x.5', 'm5', both));
  fresh.ws.send(deliver('t', 'x.6', 'm6', both));
  await seen(14);
  await within(old.closed, 10_000, 'the client closes the old connection after its drain');
  fresh.ws.send(deliver('t', 'x.7', 'm7', both));
  await seen(16);
  const want = ['m1', 'm2', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7'];
  assert.deepEqual([...a].sort(), want);
  assert.deepEqual([...b].sort(), want);
  assert.equal(c.stats.duplicatesDropped, 4, 'm1 (x.#), m3 (x.#), m4 (both patterns)');
  assert.equal(c.closed, false);
});
