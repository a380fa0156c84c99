// The README's quick start, run as written against a fresh relay with its first-run dev
// ticket, from the packed package installed in a fresh project as the README says; and a
// TypeScript consumer type-checked against the packed .d.ts files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Relay } from './relay.js';

const PKG = resolve(fileURLToPath(import.meta.url), '../..');

function run(cmd, args, opts = {}) {
  return new Promise((res, rej) =>
    execFile(cmd, args, { timeout: 120_000, ...opts }, (e, stdout, stderr) => (e ? rej(new Error(`${cmd} ${args.join(' ')}: ${e.message}\n${stdout}${stderr}`)) : res(stdout))),
  );
}

test('README quick start works as written, from the packed package in a fresh project; the .d.ts files type-check a consumer', async (t) => {
  const relay = await Relay.start({ port: 0 });
  t.after(() => relay.stop());
  const dir = mkdtempSync(join(tmpdir(), 'fps-consumer-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // `npm test` built dist/ already; the registry is only asked for `ws` if npm's cache lacks it.
  const tgz = (await run('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', dir], { cwd: PKG })).trim().split('\n').pop();
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  const ws = JSON.parse(readFileSync(join(PKG, 'node_modules/ws/package.json'), 'utf8')).version;
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', join(dir, tgz), `ws@${ws}`], { cwd: dir });

  const code = /```js\n([\s\S]*?)```/.exec(readFileSync(join(PKG, 'README.md'), 'utf8'))[1];
  assert.ok(code.split('\n').length <= 14, 'a short quick start');
  writeFileSync(join(dir, 'quickstart.mjs'), code.replace('ws://127.0.0.1:8080/ws', relay.url)); // the README's URL is the default port
  const out = await run('node', ['quickstart.mjs'], { cwd: dir, env: { ...process.env, TICKET: relay.devTicket }, timeout: 20_000 });
  assert.equal(out.trim(), 'public.hello public.# hi there');

  for (const f of ['consumer.ts', 'tsconfig.json']) copyFileSync(join(PKG, 'test/consumer', f), join(dir, f));
  await run(join(PKG, 'node_modules/.bin/tsc'), ['-p', dir]);
});
