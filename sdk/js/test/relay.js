// Starts real `fastpubsub-relay run` processes for the tests, on 127.0.0.1, each with its
// own state directory (first run: signing key, master token, dev ticket from the banner).
// Every process started here is killed when its test ends and, as a last resort, on exit.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { onLines } from './wire.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const WAIT_MS = 30_000;
const live = new Set();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

let built;
/** The relay binary: $FASTPUBSUB_RELAY_BIN, else target/debug (built with cargo when missing). */
export function relayBin() {
  if (process.env.FASTPUBSUB_RELAY_BIN) return process.env.FASTPUBSUB_RELAY_BIN;
  const bin = join(ROOT, 'target/debug/fastpubsub-relay');
  if (!built && !existsSync(bin)) {
    execFileSync('cargo', ['build', '--locked', '-p', 'fastpubsub-relay', '--bin', 'fastpubsub-relay'], { cwd: ROOT, stdio: 'inherit' });
  }
  built = true;
  return bin;
}

/** Resolves when `pred(line)` holds for a stdout line of `proc`; rejects after `ms`. */
function waitLine(proc, pred, ms, what) {
  return new Promise((res, rej) => {
    const seen = proc.lines;
    const hit = seen.find(pred);
    if (hit !== undefined) return res(hit);
    const t = setTimeout(() => {
      proc.off('line', on);
      rej(new Error(`relay: no ${what} within ${ms} ms; output:\n${seen.join('\n')}`));
    }, ms);
    const on = (l) => {
      if (pred(l)) {
        clearTimeout(t);
        proc.off('line', on);
        res(l);
      }
    };
    proc.on('line', on);
  });
}

export class Relay {
  /** Starts a relay; `port` 0 picks a free one; reuse `stateDir` to keep its keys across restarts. */
  static async start({ port = 0, stateDir, args = [], devTicket } = {}) {
    const r = new Relay();
    r.stateDir = stateDir ?? mkdtempSync(join(tmpdir(), 'fps-js-'));
    r.ownsState = !stateDir;
    r.extra = args;
    r.devTicket = devTicket;
    await r.#spawn(port);
    return r;
  }

  async #spawn(port) {
    const p = spawn(
      relayBin(),
      ['run', '--listen', `127.0.0.1:${port}`, '--admin-listen', 'off', '--state-dir', this.stateDir, '--shutdown-grace-ms', '5000', ...this.extra],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    live.add(p);
    p.lines = [];
    const onLine = (l) => {
      p.lines.push(l);
      p.emit('line', l);
    };
    onLines(p.stdout, onLine);
    onLines(p.stderr, onLine);
    p.exited = new Promise((res) => p.on('exit', (code, sig) => (live.delete(p), res({ code, sig }))));
    this.proc = p;
    const line = await waitLine(p, (l) => l.includes('listening on ws://'), WAIT_MS, 'listening line');
    const addr = line.split('ws://')[1].split('/')[0];
    this.port = Number(addr.split(':')[1]);
    this.url = `ws://${addr}/ws`;
    this.apiBase = `http://${addr}`;
    // First run prints the master token and a dev ticket; later runs reuse the files.
    const master = join(this.stateDir, 'master.token');
    if (existsSync(master)) this.masterToken = readFileSync(master, 'utf8').trim();
    if (this.ownsState && !this.devTicket) {
      this.devTicket = (await waitLine(p, (l) => l.trim().startsWith('AT_'), WAIT_MS, 'dev ticket')).trim();
    } else if (!this.devTicket) {
      this.devTicket = this.ticket({ ttl: '24h' });
    }
  }

  /** The mesh (QUIC) address this relay printed, `host:port`, when it runs with `--mesh-listen`. */
  async meshAddr() {
    const line = await waitLine(this.proc, (l) => /mesh \S+ on quic:\/\//.test(l), WAIT_MS, 'mesh line');
    return line.split('quic://')[1].split(/\s/)[0];
  }

  /** Mints a ticket offline: `fastpubsub-relay ticket` with this relay's signing key. */
  ticket({ tenant = 'dev', pub = ['public.#'], sub = ['public.#'], ttl = '1h' } = {}) {
    const args = ['ticket', '--signing-key', join(this.stateDir, 'ticket-signing.key'), '--tenant', tenant, '--ttl', ttl];
    for (const p of pub) args.push('--pub', p);
    for (const s of sub) args.push('--sub', s);
    const out = execFileSync(relayBin(), args).toString();
    const t = out.split(/\s+/).find((w) => w.startsWith('AT_'));
    if (!t) throw new Error(`ticket: no AT_ in ${out}`);
    return t;
  }

  /** SIGTERM: the relay sends RECONNECT to every client, then exits. */
  terminate() {
    this.proc.kill('SIGTERM');
    return this.proc.exited;
  }

  /** Hard stop (no RECONNECT). */
  async kill() {
    this.proc.kill('SIGKILL');
    await this.proc.exited;
  }

  /** Starts the relay again on the same port with the same keys. */
  async restart() {
    await this.#spawn(this.port);
  }

  /** Waits for a line of output (e.g. the shutdown log). */
  waitOutput(pred, ms = WAIT_MS, what = 'line') {
    return waitLine(this.proc, pred, ms, what);
  }

  async stop() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) await this.kill();
    if (this.ownsState) rmSync(this.stateDir, { recursive: true, force: true });
  }
}

/**
 * A mesh CA and relay certificates for `names` in a temporary directory; `args(name)` gives
 * the `run` flags that put a relay with that name in the mesh on 127.0.0.1.
 */
export function meshCerts(names) {
  const dir = mkdtempSync(join(tmpdir(), 'fps-js-mesh-'));
  execFileSync(relayBin(), ['mesh-ca', '--dir', join(dir, 'ca')]);
  for (const n of names) execFileSync(relayBin(), ['mesh-cert', '--name', n, '--ca-dir', join(dir, 'ca'), '--out', dir]);
  return {
    args: (n) => ['--mesh-listen', '127.0.0.1:0', '--name', n, '--mesh-cert', join(dir, `${n}.pem`), '--mesh-key', join(dir, `${n}.key`), '--mesh-ca', join(dir, 'ca/ca.pem')],
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Resolves with the value of `fn()` once it is truthy; polls every 20 ms; rejects after `ms`. */
export async function until(fn, ms = 10_000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Rejects if `p` does not settle within `ms`. */
export function within(p, ms, what = 'operation') {
  let t;
  return Promise.race([p, new Promise((_, rej) => (t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms)))]).finally(() =>
    clearTimeout(t),
  );
}
