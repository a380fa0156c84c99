/**
 * Transports carry LLPS text and binary frames. The client sees only {@link Transport};
 * WebSocket works everywhere, WebTransport (LLPS over QUIC, `llps-wt-v0.1`) where the
 * runtime has `WebTransport` and the relay offers it.
 * @module
 */
import { ConnectionError, HandshakeError } from './errors.js';

/** What a transport reports to the client. */
export interface TransportEvents {
  onText(text: string): void;
  onBinary(frame: Uint8Array): void;
  /** Called once when the connection ends, for whatever reason. */
  onClose(code: number, reason: string): void;
}

/** One open connection to a relay. */
export interface Transport {
  readonly kind: 'websocket' | 'webtransport';
  readonly url: string;
  sendText(text: string): void;
  sendBinary(frame: Uint8Array): void;
  /** Bytes accepted but not yet handed to the network (backpressure signal). */
  readonly bufferedAmount: number;
  close(code?: number, reason?: string): void;
}

/** A WHATWG-style WebSocket constructor (browsers, Node ≥ 22, or the `ws` package). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

const isNode = !!(globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node;

let wsModule: Promise<WebSocketConstructor | undefined> | undefined;

/** In Node, prefers the `ws` package (it reports why a handshake was refused); else the global WebSocket. */
async function findWebSocket(): Promise<WebSocketConstructor> {
  if (isNode) {
    wsModule ??= (async () => {
      const name = 'ws'; // not a static import: browsers and bundlers must not see it
      try {
        const m = (await import(/* webpackIgnore: true */ /* @vite-ignore */ name)) as { default?: unknown; WebSocket?: unknown };
        return (m.WebSocket ?? m.default) as WebSocketConstructor;
      } catch {
        return undefined;
      }
    })();
    const ctor = await wsModule;
    if (ctor) return ctor;
  }
  const g = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (g) return g;
  throw new ConnectionError(
    'connection_lost',
    'no WebSocket in this runtime: on Node 20, install the `ws` package (npm install ws), or pass { WebSocket } to connect()',
  );
}

/** Opens an LLPS WebSocket: subprotocols `llps.v1` and `at.<token>` (the only way a browser can send a ticket). */
export async function openWebSocket(
  url: string,
  token: string,
  events: TransportEvents,
  timeoutMs: number,
  ctor?: WebSocketConstructor,
): Promise<Transport> {
  const WS = ctor ?? (await findWebSocket());
  return new Promise<Transport>((resolve, reject) => {
    let ws: WebSocket;
    try {
      ws = new WS(url, ['llps.v1', `at.${token}`]);
    } catch (e) {
      reject(new ConnectionError('connection_lost', `cannot open ${url}: ${(e as Error).message}`, { cause: e }));
      return;
    }
    ws.binaryType = 'arraybuffer';
    let opened = false;
    let settled = false;
    const fail = (e: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      try {
        ws.close();
      } catch {
        /* already closing */
      }
      reject(e);
    };
    const timer = setTimeout(
      () => fail(new ConnectionError('timeout', `no WebSocket handshake with ${url} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    // The `ws` package tells us the status and body of a refused handshake.
    const nodeWs = ws as unknown as { on?: (ev: string, fn: (...a: any[]) => void) => void };
    if (typeof nodeWs.on === 'function') {
      nodeWs.on('unexpected-response', (_req: unknown, res: any) => {
        let body = '';
        res.setEncoding?.('utf8');
        res.on('data', (d: string) => {
          if (body.length < 1024) body += d;
        });
        const done = () => fail(new HandshakeError(url, res.statusCode, body.trim() || res.statusMessage));
        res.on('end', done);
        res.on('error', done);
        res.on('close', done);
      });
    }
    ws.onopen = () => {
      if (settled) return;
      if (ws.protocol !== 'llps.v1') {
        fail(new ConnectionError('connection_lost', `${url} did not accept the llps.v1 subprotocol (got ${JSON.stringify(ws.protocol)}): is this a FastPubSub relay?`));
        return;
      }
      opened = true;
      settled = true;
      clearTimeout(timer);
      resolve({
        kind: 'websocket',
        url,
        sendText: (t) => ws.send(t),
        sendBinary: (b) => ws.send(b),
        get bufferedAmount() {
          return ws.bufferedAmount;
        },
        close: (code = 1000, reason = '') => {
          try {
            ws.close(code, reason);
          } catch {
            /* already closed */
          }
        },
      });
    };
    ws.onmessage = (ev: MessageEvent) => {
      if (typeof ev.data === 'string') events.onText(ev.data);
      else if (ev.data instanceof ArrayBuffer) events.onBinary(new Uint8Array(ev.data));
      else if (ArrayBuffer.isView(ev.data)) {
        const v = ev.data as ArrayBufferView;
        events.onBinary(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
      }
    };
    ws.onerror = () => {
      // Browsers give no detail; a close event follows. Before open: the handshake failed.
      if (!opened && !isNode) fail(new HandshakeError(url, undefined, undefined));
    };
    ws.onclose = (ev: CloseEvent) => {
      if (!opened) {
        fail(new ConnectionError('connection_lost', `cannot connect to ${url} (close ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`));
        return;
      }
      events.onClose(ev.code, ev.reason);
    };
  });
}

// ---------------------------------------------------------------------------------------
// WebTransport (llps-wt-v0.1): one bidirectional control stream carrying
// `kind u8 | len u32 BE | payload`, kind 0 = binary, 1 = text, len ≤ 65,536.

/** Largest WebTransport frame payload (the cap is on the whole publish/deliver frame). */
export const WT_MAX_FRAME = 65_536;

/** Encodes one control-stream frame. */
export function encodeWtFrame(kind: 0 | 1, payload: Uint8Array): Uint8Array {
  if (payload.length > WT_MAX_FRAME) throw new RangeError(`WebTransport frame of ${payload.length} bytes is over ${WT_MAX_FRAME}`);
  const out = new Uint8Array(5 + payload.length);
  out[0] = kind;
  new DataView(out.buffer).setUint32(1, payload.length);
  out.set(payload, 5);
  return out;
}

/** Incremental decoder of control-stream frames (stream chunks may split or join frames). */
export class WtFrameDecoder {
  #buf = new Uint8Array(0);
  /** Feeds bytes; returns the complete frames. Throws on an unknown kind or an oversize length. */
  push(chunk: Uint8Array): { kind: 0 | 1; payload: Uint8Array }[] {
    const buf = new Uint8Array(this.#buf.length + chunk.length);
    buf.set(this.#buf);
    buf.set(chunk, this.#buf.length);
    const out: { kind: 0 | 1; payload: Uint8Array }[] = [];
    let pos = 0;
    while (buf.length - pos >= 5) {
      const kind = buf[pos]!;
      if (kind !== 0 && kind !== 1) throw new Error(`WebTransport: unknown frame kind ${kind}`);
      const len = new DataView(buf.buffer, buf.byteOffset + pos + 1, 4).getUint32(0);
      if (len > WT_MAX_FRAME) throw new Error(`WebTransport: frame of ${len} bytes is over ${WT_MAX_FRAME}`);
      if (buf.length - pos - 5 < len) break;
      out.push({ kind, payload: buf.slice(pos + 5, pos + 5 + len) });
      pos += 5 + len;
    }
    this.#buf = buf.slice(pos);
    return out;
  }
}

/** True when this runtime has the WebTransport API (Chromium, Firefox; not Node 20). */
export function hasWebTransport(): boolean {
  return typeof (globalThis as { WebTransport?: unknown }).WebTransport === 'function';
}

/** Options for WebTransport (browsers only accept self-signed certificates by hash). */
export interface WebTransportOptions {
  serverCertificateHashes?: { algorithm: 'sha-256'; value: BufferSource }[];
}

/**
 * Opens LLPS over WebTransport: the ticket rides as `?at=` (browsers cannot set headers),
 * then one bidirectional control stream.
 */
export async function openWebTransport(
  url: string,
  token: string,
  events: TransportEvents,
  timeoutMs: number,
  options: WebTransportOptions = {},
): Promise<Transport> {
  const WT = (globalThis as { WebTransport?: new (url: string, o?: unknown) => any }).WebTransport;
  if (!WT) throw new ConnectionError('connection_lost', 'this runtime has no WebTransport');
  const u = new URL(url);
  u.searchParams.set('at', token);
  const wt = new WT(u.toString(), options.serverCertificateHashes ? { serverCertificateHashes: options.serverCertificateHashes } : {});
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new ConnectionError('timeout', `no WebTransport session with ${url} within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([wt.ready, timeout]);
  } catch (e) {
    clearTimeout(timer);
    try {
      wt.close();
    } catch {
      /* not open */
    }
    if (e instanceof ConnectionError) throw e;
    throw new HandshakeError(url, undefined, (e as Error)?.message);
  }
  clearTimeout(timer);
  const stream = await wt.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  const reader = stream.readable.getReader();
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  let closed = false;
  let buffered = 0;
  const end = (code: number, reason: string) => {
    if (closed) return;
    closed = true;
    events.onClose(code, reason);
  };
  const write = (kind: 0 | 1, payload: Uint8Array) => {
    const f = encodeWtFrame(kind, payload);
    buffered += f.length;
    writer.write(f).then(
      () => (buffered -= f.length),
      () => end(1006, 'WebTransport write failed'),
    );
  };
  (async () => {
    const d = new WtFrameDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const f of d.push(value as Uint8Array)) {
          if (f.kind === 1) events.onText(dec.decode(f.payload));
          else events.onBinary(f.payload);
        }
      }
      end(1000, 'control stream finished');
    } catch (e) {
      end(1006, (e as Error)?.message ?? 'WebTransport read failed');
    }
  })();
  wt.closed.then(
    (i: { closeCode?: number; reason?: string }) => end(i?.closeCode ?? 1000, i?.reason ?? ''),
    (e: Error) => end(1006, e?.message ?? 'WebTransport session failed'),
  );
  return {
    kind: 'webtransport',
    url,
    sendText: (t) => write(1, enc.encode(t)),
    sendBinary: (b) => write(0, b),
    get bufferedAmount() {
      return buffered;
    },
    close: (code = 0, reason = '') => {
      try {
        wt.close({ closeCode: code, reason });
      } catch {
        /* already closed */
      }
    },
  };
}
