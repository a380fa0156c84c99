// The README's quick start, run as written against a fresh relay with its first-run dev ticket.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Relay } from './relay.js';

const PKG = resolve(fileURLToPath(import.meta.url), '../..');

test('README quick start works as written', async (t) => {
  const relay = await Relay.start({ port: 0 });
  t.after(() => relay.stop());
  const code = /```js\n([\s\S]*?)```/.exec(readFileSync(join(PKG, 'README.md'), 'utf8'))[1];
  assert.ok(code.split('\n').length <= 14, 'a short quick start');
  // The README's URL is the default port; point it at this relay.
  const file = join(PKG, `quickstart-${process.pid}.mjs`); // inside the package: `import 'fastpubsub'` resolves to itself
  writeFileSync(file, code.replace('ws://127.0.0.1:8080/ws', relay.url));
  t.after(() => rmSync(file, { force: true }));
  const out = await new Promise((res, rej) =>
    execFile('node', [file], { env: { ...process.env, TICKET: relay.devTicket }, timeout: 20_000 }, (e, stdout, stderr) =>
      e ? rej(new Error(`${e.message}\n${stderr}`)) : res(stdout),
    ),
  );
  assert.equal(out.trim(), 'public.hello public.# hi there');
});
