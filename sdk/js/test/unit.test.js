// Pure functions, no relay: frame codecs, validation, ERR parsing, the WebTransport framing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodePublish, decodeDeliver, FrameError } from '../dist/frames.js';
import { parseErr, errNames } from '../dist/errors.js';
import { checkPattern, checkChannel, matches } from '../dist/index.js';
import { encodeWtFrame, WtFrameDecoder } from '../dist/transport.js';
import { BoundedQueue } from '../dist/queue.js';
import { parseBootstrap } from '../dist/discovery.js';
import { deliverFrame } from './wire.js';

const deliver = deliverFrame;

test('publish v2 frame layout', () => {
  const f = encodePublish('one-random', 't1', 'a.b', Uint8Array.from([9, 8]));
  assert.deepEqual([...f], [2, 2, 0, 2, 116, 49, 0, 3, 97, 46, 98, 9, 8]);
  assert.throws(() => encodePublish('sometimes', 't', 'c', new Uint8Array()), /unknown publish mode/);
});

test('deliver frame decode and every malformation refused', () => {
  const d = decodeDeliver(deliver('t', 'a.b', [1, 2, 3], ['a.*', 'a.#']));
  assert.deepEqual({ ...d, payload: [...d.payload] }, { tenant: 't', channel: 'a.b', payload: [1, 2, 3], patterns: ['a.*', 'a.#'] });
  const good = deliver('t', 'a.b', [1, 2, 3], ['a.#']);
  for (let cut = 0; cut < good.length; cut++) assert.throws(() => decodeDeliver(good.subarray(0, cut)), FrameError, `cut at ${cut}`);
  assert.throws(() => decodeDeliver(deliver('t', 'a', [], ['a'], [0])), /trailing/);
  assert.throws(() => decodeDeliver(deliver('t', 'a', [], [])), /no pattern/);
  const badTag = good.slice(); badTag[0] = 2;
  assert.throws(() => decodeDeliver(badTag), /tag/);
});

test('pattern and channel validation matches the relay rules', () => {
  for (const ok of ['a', 'a.b', '*', '#', 'a.*.c', 'a.#', '*.#']) assert.doesNotThrow(() => checkPattern(ok), ok);
  for (const bad of ['', 'a..b', '.a', 'a.', 'a.#.b', 'a*', '#a', 'a b', 'x'.repeat(256)]) assert.throws(() => checkPattern(bad), { code: 'invalid_pattern' }, bad);
  assert.throws(() => checkChannel('a.*'), { code: 'invalid_channel' });
  assert.ok(matches('public.#', 'public') && matches('public.*', 'public.x') && !matches('public.*', 'public.x.y'));
});

test('ERR lines are split and matched to what was sent, even with ":" in names', () => {
  const p = parseErr('invalid_pattern:SUB:t1:a:b.#.c:segment 2 is ...');
  assert.equal(p.code, 'invalid_pattern');
  assert.equal(errNames(p, 'SUB', 't1', 'a:b.#.c'), 'segment 2 is ...');
  assert.equal(errNames(p, 'SUB', 't1', 'a'), 'b.#.c:segment 2 is ...'); // ambiguous only if both were sent
  assert.equal(errNames(p, 'PUB', 't1', 'a:b.#.c'), undefined);
  assert.deepEqual(parseErr('slow_consumer:queue full for 5 s'), { code: 'slow_consumer', command: undefined, tenant: undefined, rest: undefined, target: undefined, detail: 'queue full for 5 s' });
});

test('WebTransport control-stream frames survive any chunking; bad kind and oversize refused', () => {
  const frames = [encodeWtFrame(1, new TextEncoder().encode('OK:SUB:t:a.#')), encodeWtFrame(0, Uint8Array.from({ length: 70 }, (_, i) => i))];
  const all = new Uint8Array([...frames[0], ...frames[1]]);
  for (let step = 1; step <= all.length; step += 7) {
    const d = new WtFrameDecoder();
    const got = [];
    for (let i = 0; i < all.length; i += step) got.push(...d.push(all.subarray(i, i + step)));
    assert.equal(got.length, 2);
    assert.equal(new TextDecoder().decode(got[0].payload), 'OK:SUB:t:a.#');
    assert.equal(got[1].kind, 0);
    assert.equal(got[1].payload.length, 70);
  }
  assert.throws(() => new WtFrameDecoder().push(Uint8Array.from([7, 0, 0, 0, 0])), /unknown frame kind/);
  assert.throws(() => new WtFrameDecoder().push(Uint8Array.from([0, 0, 1, 0, 1])), /over 65536/);
  assert.throws(() => encodeWtFrame(0, new Uint8Array(65_537)), RangeError);
});

test('bounded queue: drop oldest, counters, end with error', async () => {
  const q = new BoundedQueue(2);
  q.push(1); q.push(2); q.push(3);
  assert.equal(q.dropped, 1);
  assert.deepEqual([(await q.next()).value, (await q.next()).value], [2, 3]);
  const pending = q.next();
  q.end(new Error('gone'));
  await assert.rejects(pending, /gone/);
  assert.deepEqual(await q.next(), { value: undefined, done: true });
});

test('bootstrap parsing: strings and objects, malformed entries skipped, scheme from the URL', () => {
  const e = parseBootstrap({ edges: ['fra.example:443', { host: 'tyo.example', lat: 35.6, lon: 139.7 }, { host: 'bad host' }, 7] });
  assert.deepEqual(e.map((x) => x.wsUrl), ['wss://fra.example:443/ws', 'wss://tyo.example/ws']);
  assert.equal(e[1].lat, 35.6);
  assert.equal(parseBootstrap({ edges: ['h:1'] }, false)[0].restUrl, 'http://h:1');
  assert.throws(() => parseBootstrap({ edges: [] }), /no usable edge/);
});

test('ticket id: up to the first _ after AT_, the secret is opaque (may contain _)', async () => {
  const { tokenId } = await import('../dist/server.js');
  assert.equal(tokenId('AT_01ab_c0ffee'), '01ab');
  assert.equal(tokenId('AT_01ab_se_cr_et'), '01ab');
  for (const bad of ['AT_01ab', 'AT__x', 'AT_01ab_', 'XT_1_2']) assert.throws(() => tokenId(bad), TypeError, bad);
});

test('REST and discovery failures are typed: unreachable → connection_lost, no answer → timeout', async () => {
  const { getToken, discoverEdges } = await import('../dist/server.js');
  const { createServer } = await import('node:net');
  const dead = createServer();
  await new Promise((r) => dead.listen(0, '127.0.0.1', r));
  const deadPort = dead.address().port;
  await new Promise((r) => dead.close(r));
  const silent = createServer(() => {}); // accepts, never answers
  await new Promise((r) => silent.listen(0, '127.0.0.1', r));
  try {
    const rights = { tenant_grants: [], expires_at: 60 };
    await assert.rejects(getToken({ apiBase: `http://127.0.0.1:${deadPort}`, masterToken: 'm' }, rights), { name: 'ConnectionError', code: 'connection_lost' });
    await assert.rejects(getToken({ apiBase: `http://127.0.0.1:${silent.address().port}`, masterToken: 'm', timeoutMs: 200 }, rights), { name: 'ConnectionError', code: 'timeout' });
    await assert.rejects(discoverEdges(`http://127.0.0.1:${deadPort}/edges.json`), { name: 'ConnectionError', code: 'connection_lost' });
  } finally {
    silent.close();
  }
});
