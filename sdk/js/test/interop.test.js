// Interop: this JS SDK ↔ the Python SDK ↔ the official Rust SDK (crates.io fastpubsub-sdk
// 0.3.4, interop/rust-sdk), all through one real relay. The peers speak one line protocol
// (interop/rust-sdk/src/main.rs), so adding a peer or a transport is one more `Peer`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '../dist/index.js';
import { Relay, ROOT, within } from './relay.js';
import { onLines } from './wire.js';

const RUST_DIR = join(ROOT, 'interop/rust-sdk');
const RUST_BIN = process.env.FPS_INTEROP_RUST_BIN ?? join(RUST_DIR, 'target/debug/fps-interop-rust-sdk');
const PYTHON = process.env.PYTHON ?? 'python3';

class Peer {
  constructor(name, cmd, args) {
    this.name = name;
    this.lines = [];
    this.waiters = [];
    this.proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.stderr = '';
    this.proc.stderr.setEncoding('utf8').on('data', (d) => (this.stderr += d));
    onLines(this.proc.stdout, (l) => {
      this.lines.push(l);
      for (const w of [...this.waiters]) if (w.pred(l)) (this.waiters.splice(this.waiters.indexOf(w), 1), w.res(l));
    });
    this.exited = new Promise((r) => this.proc.on('exit', r));
  }
  /** Resolves with the first line (already seen or coming) that satisfies `pred`. */
  wait(pred, what, ms = 20_000) {
    const hit = this.lines.find(pred);
    if (hit) return Promise.resolve(hit);
    return within(new Promise((res) => this.waiters.push({ pred, res })), ms, `${this.name}: ${what}; lines: ${this.lines.join(' | ')} ${this.stderr}`);
  }
  send(line) {
    this.proc.stdin.write(line + '\n');
  }
  async stop() {
    this.send('quit');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 3000);
    await this.exited;
    clearTimeout(t);
  }
}

let relay;
const peers = [];
const clients = [];

before(async () => {
  relay = await Relay.start();
  if (!existsSync(RUST_BIN)) {
    execFileSync('cargo', ['build', '--locked', '--manifest-path', join(RUST_DIR, 'Cargo.toml')], { stdio: 'inherit' });
  }
});
after(async () => {
  for (const c of clients) await c.close();
  for (const p of peers) await p.stop().catch(() => {});
  await relay?.stop();
});

function startPeers() {
  const args = ['--url', relay.url, '--token', relay.devTicket];
  const rust = new Peer('rust-sdk', RUST_BIN, args);
  const py = new Peer('python', PYTHON, [join(ROOT, 'sdk/python/tests/interop_peer.py'), ...args]);
  peers.push(rust, py);
  return { rust, py };
}

const hex = (s) => Buffer.from(s).toString('hex');

test('JS publisher reaches the Python and the Rust SDK subscribers, and back', async () => {
  const { rust, py } = startPeers();
  await Promise.all([rust.wait((l) => l === 'ready', 'ready'), py.wait((l) => l === 'ready', 'ready')]);
  for (const p of [rust, py]) {
    p.send('sub dev public.interop.#');
    await p.wait((l) => l === 'ok-sub dev public.interop.#', 'ok-sub');
  }
  const js = await connect({ url: relay.url, token: relay.devTicket });
  clients.push(js);
  const sub = await js.subscribe('dev', 'public.back.*');

  // JS → Python and Rust: text, binary with every byte value, and 64 KiB.
  const bin = Uint8Array.from({ length: 256 }, (_, i) => i);
  const big = Uint8Array.from({ length: 65_536 }, (_, i) => (i * 7) & 0xff);
  await js.publish('dev', 'public.interop.text', 'héllo from js');
  await js.publish('dev', 'public.interop.bin', bin);
  await js.publish('dev', 'public.interop.big', big);
  for (const p of [rust, py]) {
    await p.wait((l) => l === `msg dev public.interop.text public.interop.# ${hex('héllo from js')}`, 'text message');
    await p.wait((l) => l === `msg dev public.interop.bin public.interop.# ${Buffer.from(bin).toString('hex')}`, 'binary message');
    await p.wait((l) => l === `msg dev public.interop.big public.interop.# ${Buffer.from(big).toString('hex')}`, '64 KiB message');
  }

  // Back: Python → JS, Rust → JS.
  py.send(`pub dev public.back.py ${hex('from python')}`);
  rust.send(`pub dev public.back.rust ${hex('from rust')}`);
  const got = new Map();
  for (let i = 0; i < 2; i++) {
    const m = await within(sub.next(), 10_000, 'message from a peer');
    got.set(m.channel, m.text());
    assert.equal(m.pattern, 'public.back.*');
  }
  assert.deepEqual(Object.fromEntries(got), { 'public.back.py': 'from python', 'public.back.rust': 'from rust' });

  // Rust → Python and Python → Rust too (both subscribed to public.interop.#).
  rust.send(`pub dev public.interop.r2p ${hex('rust to python')}`);
  await py.wait((l) => l === `msg dev public.interop.r2p public.interop.# ${hex('rust to python')}`, 'rust → python');
  py.send(`pub dev public.interop.p2r ${hex('python to rust')}`);
  await rust.wait((l) => l === `msg dev public.interop.p2r public.interop.# ${hex('python to rust')}`, 'python → rust');
  assert.ok(!rust.lines.some((l) => l.startsWith('err ')), `rust peer errors: ${rust.lines.filter((l) => l.startsWith('err'))}`);
  assert.ok(!py.lines.some((l) => l.startsWith('err ')), `python peer errors: ${py.lines.filter((l) => l.startsWith('err'))}`);
});
