/**
 * The client: one logical connection to a relay that survives reconnects.
 * @module
 */
import {
  AccessEndedError,
  ClosedError,
  ConnectionError,
  FastPubSubError,
  HandshakeError,
  RelayError,
  ValidationError,
  errNames,
  parseErr,
  relayError,
} from './errors.js';
import { decodeDeliver, encodePublish, type PublishMode } from './frames.js';
import { checkChannel, checkPattern, checkPayload, checkTenant } from './limits.js';
import { BoundedQueue, type QueueStats } from './queue.js';
import {
  hasWebTransport,
  openWebSocket,
  openWebTransport,
  WT_MAX_FRAME,
  type Transport,
  type WebSocketConstructor,
  type WebTransportOptions,
} from './transport.js';
import { nearestEdge } from './discovery.js';

/** A pattern suffix the relay reads as WebTransport delivery options (`wt::frame::split_options`). */
const WT_DELIVERY_OPTIONS = /:D(:[^:]*)?$|.:U:[^:]*:[^:]*$/;

const textDecoder = new TextDecoder();
const textEncoder = new TextEncoder();

/** One delivered message, once per matching subscription pattern. */
export class Message {
  constructor(
    /** Tenant of the message. */
    readonly tenant: string,
    /** The concrete channel it was published to. */
    readonly channel: string,
    /** The subscription pattern that matched (exactly as subscribed). */
    readonly pattern: string,
    /** The payload bytes (do not modify: shared between the patterns of one delivery). */
    readonly payload: Uint8Array,
  ) {}
  /** The payload decoded as UTF-8. */
  text(): string {
    return textDecoder.decode(this.payload);
  }
  /** The payload parsed as JSON. */
  json<T = unknown>(): T {
    return JSON.parse(this.text()) as T;
  }
}

/** Reconnect policy: full-jitter exponential backoff. */
export interface ReconnectOptions {
  /** First backoff ceiling in ms (default 250). */
  initialDelayMs?: number;
  /** Largest backoff ceiling in ms (default 10,000). */
  maxDelayMs?: number;
  /** Attempts before giving up (default: unlimited). */
  maxAttempts?: number;
}

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** `ws://HOST/ws` or `wss://HOST/ws`. Either this or `bootstrap`. */
  url?: string;
  /** URL of a bootstrap document (edge list); the nearest edge by `GET /ping` is used, again on every reconnect. */
  bootstrap?: string;
  /** The access ticket (`AT_…`), or a function that returns a fresh one (called on every connect; lets a client survive expiry). */
  token: string | (() => string | Promise<string>);
  /** `websocket` (default), `webtransport`, or `auto` (WebTransport when the runtime has it and `webTransportUrl` is set, else WebSocket). */
  transport?: 'websocket' | 'webtransport' | 'auto';
  /** WebTransport URL of the relay (`https://HOST:PORT/`), for `transport: 'webtransport' | 'auto'`. */
  webTransportUrl?: string;
  /** WebTransport options (self-signed certificate hashes in browsers). */
  webTransport?: WebTransportOptions;
  /** How long a handshake, subscribe, unsubscribe, publish confirmation or ping may take (default 10,000 ms). */
  requestTimeoutMs?: number;
  /** Reconnect policy, or `false` to end the client when the connection drops. */
  reconnect?: ReconnectOptions | false;
  /** Default queue bound of each subscription's iterator (default 1,024 messages; drop oldest). */
  queueSize?: number;
  /**
   * After a `RECONNECT` move, how long the old connection stays open (default 1,000 ms) to
   * deliver what was already on its way to it (duplicates of the new one's are dropped).
   */
  moveDrainMs?: number;
  /** A WebSocket constructor to use instead of the runtime's (or `ws` in Node). */
  WebSocket?: WebSocketConstructor;
}

/** Options of {@link Client.publish}. */
export interface PublishOptions {
  /** `broadcast` (default): every matching subscriber; `one-low-latency` / `one-random`: exactly one. */
  mode?: PublishMode;
  /** Skip the local checks (lets a test see the relay's own refusal). */
  unchecked?: boolean;
}

/** Options of {@link Client.subscribe}. */
export interface SubscribeOptions {
  /** Callback form: called for each message instead of queueing it for the iterator. */
  onMessage?: (msg: Message) => void;
  /** Queue bound for the iterator (default: the client's `queueSize`). Full: the oldest is dropped and counted. */
  queueSize?: number;
}

/** Events of {@link Client.on}. */
export interface ClientEvents {
  /** The connection dropped or the relay asked to move; the client is reconnecting. */
  reconnecting: { reason: string; attempt: number; delayMs: number };
  /** A new connection is up and every subscription is active again. */
  reconnected: { url: string; transport: 'websocket' | 'webtransport' };
  /** An error not tied to a call (e.g. `ERR:slow_consumer`, a callback that threw, a bad frame). */
  error: FastPubSubError | Error;
  /** The client ended: `error` is set unless the application closed it. */
  close: { error?: FastPubSubError };
}

/** Counters of the client. */
export interface ClientStats {
  /** Deliver frames received. */
  delivered: number;
  /** Deliveries (message × pattern) dropped as duplicates while two connections overlapped during a move. */
  duplicatesDropped: number;
  /** Deliveries for a pattern no local subscription holds any more (late after unsubscribe). */
  unroutable: number;
  /** Connections opened after the first. */
  reconnects: number;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const key = (tenant: string, pattern: string) => `${tenant}\u0000${pattern}`;

interface Waiter {
  tenant: string;
  target: string;
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface PendingPublish extends Waiter {}

interface PingEntry {
  t0: number;
  waiters: Deferred<number>[];
  publishes: PendingPublish[];
}

/** Per-connection state: what was sent on it and awaits an answer. */
class Conn {
  transport!: Transport;
  open = true;
  subWaiters: Waiter[] = [];
  unsubWaiters: Waiter[] = [];
  pings: PingEntry[] = [];
  barrier: PingEntry | undefined;
  accessEnded: string | undefined;
  ended = deferred<void>();
}

/**
 * A `RECONNECT` move in progress: `old` and `next` both deliver. Each side keeps the
 * deliveries (message × pattern) it passed on that the other has not sent yet; a delivery
 * the other side already passed on is a duplicate. Per pattern, because the new connection
 * may deliver for some patterns before it has every `OK:SUB`.
 */
interface Overlap {
  old: Conn;
  next: Conn;
  pending: Map<Conn, Map<string, number>>;
}

/** Bound of each side's pending deliveries: the overlap is short; past it, duplicates may pass. */
const OVERLAP_BOUND = 65_536;

interface SubEntry {
  tenant: string;
  pattern: string;
  locals: Set<Subscription>;
  ready: Deferred<void>;
  confirmed: boolean;
}

/**
 * One subscription: an async iterator of {@link Message} (or a callback). Its queue is
 * bounded; when full, the oldest message is dropped and counted in {@link stats}.
 */
export class Subscription implements AsyncIterable<Message> {
  readonly #client: Client;
  readonly #queue: BoundedQueue<Message> | undefined;
  readonly #onMessage: ((m: Message) => void) | undefined;
  #received = 0;

  /** @internal */
  constructor(
    client: Client,
    /** Tenant. */
    readonly tenant: string,
    /** Pattern, exactly as subscribed. */
    readonly pattern: string,
    queueSize: number,
    onMessage?: (m: Message) => void,
  ) {
    this.#client = client;
    this.#onMessage = onMessage;
    this.#queue = onMessage ? undefined : new BoundedQueue<Message>(queueSize);
  }

  /** @internal */
  push(m: Message, onError: (e: unknown) => void): void {
    this.#received++;
    if (this.#onMessage) {
      try {
        this.#onMessage(m);
      } catch (e) {
        onError(e);
      }
    } else {
      this.#queue!.push(m);
    }
  }

  /** @internal Ends the iterator (with an error if the subscription was lost). */
  end(error?: unknown): void {
    this.#queue?.end(error);
  }

  /** Received, dropped (queue full, oldest first), queued now, and the queue bound. */
  get stats(): QueueStats {
    return {
      received: this.#received,
      dropped: this.#queue?.dropped ?? 0,
      queued: this.#queue?.length ?? 0,
      capacity: this.#queue?.capacity ?? 0,
    };
  }

  /** Waits for the next message; `undefined` once the subscription ended. */
  async next(): Promise<Message | undefined> {
    if (!this.#queue) throw new TypeError('this subscription uses a callback; it has no iterator');
    const r = await this.#queue.next();
    return r.done ? undefined : r.value;
  }

  /** Stops this subscription (sends `UNSUB` when no other local subscription uses the pattern). */
  unsubscribe(): Promise<void> {
    return this.#client._drop(this);
  }

  [Symbol.asyncIterator](): AsyncIterator<Message> {
    if (!this.#queue) throw new TypeError('this subscription uses a callback; it has no iterator');
    const q = this.#queue;
    return {
      next: () => q.next(),
      return: async () => {
        await this.unsubscribe();
        return { value: undefined, done: true };
      },
    };
  }
}

type Listener<K extends keyof ClientEvents> = (ev: ClientEvents[K]) => void;

/** Opens a client. Rejects with {@link HandshakeError} or {@link ConnectionError} if the first connection fails. */
export async function connect(options: ConnectOptions): Promise<Client> {
  const c = new Client(options);
  await c._start();
  return c;
}

/** A FastPubSub client. Create it with {@link connect}. */
export class Client {
  readonly #opts: ConnectOptions;
  readonly #timeout: number;
  #conn: Conn | undefined;
  #overlap: Overlap | undefined;
  #subs = new Map<string, SubEntry>();
  #listeners: { [K in keyof ClientEvents]?: Set<Listener<K>> } = {};
  #closedError: FastPubSubError | undefined;
  #recovering: Promise<void> | undefined;
  #openWaiters: Deferred<Conn>[] = [];
  #url: string | undefined;
  readonly stats: ClientStats = { delivered: 0, duplicatesDropped: 0, unroutable: 0, reconnects: 0 };

  /** @internal use {@link connect} */
  constructor(options: ConnectOptions) {
    if (!options || (!options.url && !options.bootstrap && !options.webTransportUrl)) {
      throw new TypeError('connect() needs { url } (ws://HOST/ws) or { bootstrap }');
    }
    if (!options.token) throw new TypeError('connect() needs { token } (an AT_… access ticket)');
    this.#opts = options;
    this.#timeout = options.requestTimeoutMs ?? 10_000;
  }

  /** @internal */
  async _start(): Promise<void> {
    const conn = await this.#open();
    this.#conn = conn;
  }

  /** URL of the current connection. */
  get url(): string | undefined {
    return this.#conn?.transport.url;
  }

  /** `websocket` or `webtransport` while connected, else undefined. */
  get transport(): 'websocket' | 'webtransport' | undefined {
    return this.#conn?.transport.kind;
  }

  /** True once the client ended (closed, or a fatal error). */
  get closed(): boolean {
    return this.#closedError !== undefined;
  }

  /** Adds an event listener; returns a function that removes it. */
  on<K extends keyof ClientEvents>(type: K, fn: Listener<K>): () => void {
    const set = (this.#listeners[type] ??= new Set() as never) as Set<Listener<K>>;
    set.add(fn);
    return () => set.delete(fn);
  }

  #emit<K extends keyof ClientEvents>(type: K, ev: ClientEvents[K]): void {
    for (const fn of (this.#listeners[type] as Set<Listener<K>> | undefined) ?? []) {
      try {
        fn(ev);
      } catch (e) {
        if (type !== 'error') this.#emit('error', e as Error);
      }
    }
  }

  /**
   * Subscribes to `pattern` in `tenant`; resolves once the relay confirmed (`OK:SUB`).
   * Rejects with {@link ValidationError} (bad names, nothing sent) or {@link RelayError}
   * (e.g. `permission_denied`). Iterate the result with `for await`, or pass `onMessage`.
   */
  async subscribe(
    tenant: string,
    pattern: string,
    optionsOrCallback?: SubscribeOptions | ((msg: Message) => void),
  ): Promise<Subscription> {
    checkTenant(tenant);
    checkPattern(pattern);
    if ((this.#opts.transport ?? 'websocket') !== 'websocket' && WT_DELIVERY_OPTIONS.test(pattern)) {
      // Over WebTransport the relay reads this suffix as lines/datagrams, which this client
      // does not read yet: the deliveries would pile up unread and end as a slow consumer.
      throw new ValidationError(
        'invalid_pattern',
        `pattern ${JSON.stringify(pattern)} ends like WebTransport delivery options (:U:<line>:<kbps> or :D[:<kbps>]); this client receives on the control stream only: drop the suffix`,
      );
    }
    this.#throwIfClosed();
    const opts: SubscribeOptions = typeof optionsOrCallback === 'function' ? { onMessage: optionsOrCallback } : optionsOrCallback ?? {};
    const sub = new Subscription(this, tenant, pattern, opts.queueSize ?? this.#opts.queueSize ?? 1024, opts.onMessage);
    const k = key(tenant, pattern);
    let entry = this.#subs.get(k);
    if (!entry) {
      entry = { tenant, pattern, locals: new Set(), ready: deferred<void>(), confirmed: false };
      entry.ready.promise.catch(() => {}); // observed through the callers below
      this.#subs.set(k, entry);
      if (this.#conn) this.#sendSub(this.#conn, entry);
    }
    entry.locals.add(sub);
    if (entry.confirmed) return sub;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        entry.ready.promise,
        new Promise<never>((_, rej) => {
          timer = setTimeout(
            () => rej(new ConnectionError('timeout', `no answer to SUB:${tenant}:${pattern} within ${this.#timeout} ms`)),
            this.#timeout,
          );
        }),
      ]);
    } catch (e) {
      entry.locals.delete(sub);
      if (entry.locals.size === 0 && this.#subs.get(k) === entry) {
        this.#subs.delete(k);
        if (this.#conn && !(e instanceof RelayError)) this.#conn.transport.sendText(`UNSUB:${tenant}:${pattern}`);
      }
      throw e;
    } finally {
      clearTimeout(timer);
    }
    return sub;
  }

  /** Stops every local subscription to `pattern` in `tenant` and sends `UNSUB`; resolves on `OK:UNSUB`. */
  async unsubscribe(tenant: string, pattern: string): Promise<void> {
    checkTenant(tenant);
    checkPattern(pattern);
    const entry = this.#subs.get(key(tenant, pattern));
    if (!entry) return;
    for (const s of [...entry.locals]) entry.locals.delete(s), s.end();
    await this.#unsubWire(entry);
  }

  /** @internal */
  async _drop(sub: Subscription): Promise<void> {
    const entry = this.#subs.get(key(sub.tenant, sub.pattern));
    sub.end();
    if (!entry || !entry.locals.delete(sub) || entry.locals.size > 0) return;
    await this.#unsubWire(entry);
  }

  async #unsubWire(entry: SubEntry): Promise<void> {
    const k = key(entry.tenant, entry.pattern);
    if (this.#subs.get(k) === entry) this.#subs.delete(k);
    entry.ready.reject(new ClosedError('unsubscribed before the relay confirmed'));
    const conn = this.#conn;
    if (!conn || this.closed) return; // nothing on the wire: a new connection will not resubscribe it
    const done = deferred<void>();
    conn.unsubWaiters.push({ tenant: entry.tenant, target: entry.pattern, resolve: () => done.resolve(), reject: done.reject });
    conn.transport.sendText(`UNSUB:${entry.tenant}:${entry.pattern}`);
    await this.#withTimeout(done.promise, `UNSUB:${entry.tenant}:${entry.pattern}`);
  }

  /**
   * Publishes `payload` (bytes, or a string sent as UTF-8) to `channel`. Resolves once the
   * relay has processed it (a `PING` barrier, shared by a burst of publishes); rejects with
   * {@link ValidationError} (refused locally: bad names, payload over 65,536 bytes) or
   * {@link RelayError} (e.g. `permission_denied`, `rate_limited`). Delivery itself is
   * fire-and-forget: with no subscriber the message goes nowhere.
   */
  async publish(tenant: string, channel: string, payload: Uint8Array | string, options: PublishOptions = {}): Promise<void> {
    const bytes = typeof payload === 'string' ? textEncoder.encode(payload) : payload;
    if (!(bytes instanceof Uint8Array)) throw new TypeError('payload must be a Uint8Array or a string');
    if (!options.unchecked) {
      checkTenant(tenant);
      checkChannel(channel);
      checkPayload(bytes);
    }
    const frame = encodePublish(options.mode ?? 'broadcast', tenant, channel, bytes);
    const conn = await this.#whenOpen();
    if (conn.transport.kind === 'webtransport' && frame.length > WT_MAX_FRAME) {
      // Over WebTransport the cap is on the whole frame; the relay would end the session.
      throw new ValidationError(
        'payload_too_large',
        `over WebTransport the publish frame is at most ${WT_MAX_FRAME} bytes with its names: this one is ${frame.length}; shorten the payload by ${frame.length - WT_MAX_FRAME} bytes`,
      );
    }
    const done = deferred<void>();
    const entry = this.#barrier(conn);
    entry.publishes.push({ tenant, target: channel, resolve: () => done.resolve(), reject: done.reject });
    conn.transport.sendBinary(frame);
    await done.promise;
  }

  /** Sends `PING`; resolves with the round-trip time in milliseconds. */
  async ping(): Promise<number> {
    const conn = await this.#whenOpen();
    const d = deferred<number>();
    conn.pings.push({ t0: now(), waiters: [d], publishes: [] });
    conn.transport.sendText('PING');
    return this.#withTimeout(d.promise, 'PING');
  }

  /**
   * Closes the client: every subscription iterator ends, pending calls reject with
   * {@link ClosedError}. The promise resolves once the connection is closed (at most ~2 s).
   */
  close(): Promise<void> {
    const conns = [this.#conn, this.#overlap?.old].filter((c): c is Conn => !!c);
    this.#end(undefined);
    let t: ReturnType<typeof setTimeout> | undefined;
    const cap = new Promise<void>((r) => (t = setTimeout(r, 2000)));
    return Promise.race([Promise.all(conns.map((c) => c.ended.promise)).then(() => {}), cap]).finally(() => clearTimeout(t));
  }

  // ---- internals ------------------------------------------------------------------

  #throwIfClosed(): void {
    if (this.#closedError) throw this.#closedError;
  }

  #barrier(conn: Conn): PingEntry {
    if (conn.barrier) return conn.barrier;
    const entry: PingEntry = { t0: 0, waiters: [], publishes: [] };
    conn.barrier = entry;
    // One PING after the current burst of publishes confirms all of them.
    queueMicrotask(() => {
      if (conn.barrier !== entry) return;
      conn.barrier = undefined;
      if (!conn.open) return this.#failEntry(entry);
      entry.t0 = now();
      conn.pings.push(entry);
      conn.transport.sendText('PING');
      const timer = setTimeout(() => {
        const i = conn.pings.indexOf(entry);
        if (i < 0) return;
        const err = new ConnectionError('timeout', `the relay did not confirm within ${this.#timeout} ms`);
        for (const p of entry.publishes) p.reject(err);
        entry.publishes = [];
      }, this.#timeout);
      (timer as { unref?: () => void }).unref?.();
    });
    return entry;
  }

  #failEntry(entry: PingEntry): void {
    const err = new ConnectionError('connection_lost', 'the connection was lost before the relay confirmed; the publish may or may not have been delivered');
    for (const p of entry.publishes) p.reject(err);
    for (const w of entry.waiters) w.reject(err);
  }

  async #withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        p,
        new Promise<never>((_, rej) => {
          timer = setTimeout(() => rej(new ConnectionError('timeout', `no answer to ${what} within ${this.#timeout} ms`)), this.#timeout);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  async #whenOpen(): Promise<Conn> {
    this.#throwIfClosed();
    if (this.#conn) return this.#conn;
    const d = deferred<Conn>();
    this.#openWaiters.push(d);
    return this.#withTimeout(d.promise, 'the reconnect');
  }

  async #token(): Promise<string> {
    const t = this.#opts.token;
    return typeof t === 'function' ? await t() : t;
  }

  async #target(): Promise<string> {
    if (this.#opts.bootstrap) {
      try {
        const edge = await nearestEdge(this.#opts.bootstrap, { timeoutMs: this.#timeout });
        this.#url = edge.wsUrl;
      } catch (e) {
        if (!this.#url) throw e; // first connect: say why; later: keep the last good edge
      }
      return this.#url!;
    }
    return this.#opts.url ?? '';
  }

  /** Opens one connection and wires its events; does not subscribe. */
  async #open(): Promise<Conn> {
    const conn = new Conn();
    const events = {
      onText: (t: string) => this.#onText(conn, t),
      onBinary: (f: Uint8Array) => this.#onBinary(conn, f),
      onClose: (code: number, reason: string) => this.#onClose(conn, code, reason),
    };
    const token = await this.#token();
    const mode = this.#opts.transport ?? 'websocket';
    const wtUrl = this.#opts.webTransportUrl;
    if (mode === 'webtransport' || (mode === 'auto' && wtUrl && hasWebTransport())) {
      try {
        conn.transport = await openWebTransport(wtUrl ?? '', token, events, this.#timeout, this.#opts.webTransport);
        return conn;
      } catch (e) {
        if (mode === 'webtransport' || !this.#opts.url) throw e; // auto: fall back to WebSocket
      }
    }
    conn.transport = await openWebSocket(await this.#target(), token, events, this.#timeout, this.#opts.WebSocket);
    return conn;
  }

  #sendSub(conn: Conn, entry: SubEntry): Promise<void> {
    const d = deferred<void>();
    conn.subWaiters.push({
      tenant: entry.tenant,
      target: entry.pattern,
      resolve: () => {
        entry.confirmed = true;
        entry.ready.resolve();
        d.resolve();
      },
      reject: (e) => {
        if (e instanceof RelayError) {
          // The relay refused: this subscription is over (its iterators end with the error).
          const k = key(entry.tenant, entry.pattern);
          if (this.#subs.get(k) === entry) this.#subs.delete(k);
          for (const s of entry.locals) s.end(e);
          entry.ready.reject(e);
          if (entry.confirmed) this.#emit('error', e as RelayError);
        }
        d.reject(e);
      },
    });
    conn.transport.sendText(`SUB:${entry.tenant}:${entry.pattern}`);
    d.promise.catch(() => {}); // callers that care await it; the entry carries the outcome
    return d.promise;
  }

  #onText(conn: Conn, text: string): void {
    if (text === 'PONG') {
      const entry = conn.pings.shift();
      if (!entry) return;
      const rtt = now() - entry.t0;
      for (const w of entry.waiters) w.resolve(rtt);
      for (const p of entry.publishes) p.resolve();
      return;
    }
    if (text === 'RECONNECT') {
      if (conn === this.#conn) void this.#recover(conn, 'the relay asked to move (RECONNECT)');
      return;
    }
    if (text.startsWith('OK:SUB:') || text.startsWith('OK:UNSUB:')) {
      const sub = text.startsWith('OK:SUB:');
      const rest = text.slice(sub ? 7 : 9);
      const i = rest.indexOf(':');
      const tenant = rest.slice(0, i);
      const pattern = rest.slice(i + 1);
      const list = sub ? conn.subWaiters : conn.unsubWaiters;
      const j = list.findIndex((w) => w.tenant === tenant && w.target === pattern);
      if (j >= 0) list.splice(j, 1)[0]!.resolve();
      return;
    }
    if (text.startsWith('ERR:')) {
      this.#onErr(conn, text.slice(4));
      return;
    }
    // Unknown text: a newer relay; ignore.
  }

  #onErr(conn: Conn, raw: string): void {
    const p = parseErr(raw);
    if (p.code === 'access_ended') {
      conn.accessEnded = p.detail ?? 'ticket revoked or expired';
      return; // the close that follows ends the client
    }
    const match = (list: Waiter[], cmd: string): boolean => {
      for (let i = 0; i < list.length; i++) {
        const w = list[i]!;
        const detail = errNames(p, cmd, w.tenant, w.target);
        if (detail === undefined) continue;
        list.splice(i, 1);
        w.reject(relayError(raw, p, w.target, detail));
        return true;
      }
      return false;
    };
    if (p.command === 'SUB' && match(conn.subWaiters, 'SUB')) return;
    if (p.command === 'UNSUB' && match(conn.unsubWaiters, 'UNSUB')) return;
    if (p.command === 'PUB') {
      // Oldest pending publish to that channel: the relay answers in order.
      for (const entry of [...conn.pings, ...(conn.barrier ? [conn.barrier] : [])]) {
        if (match(entry.publishes, 'PUB')) return;
      }
    }
    this.#emit('error', new RelayError(raw, p));
  }

  #onBinary(conn: Conn, frame: Uint8Array): void {
    let d;
    try {
      d = decodeDeliver(frame);
    } catch (e) {
      this.#emit('error', e as Error);
      return;
    }
    const ov = this.#overlap;
    const fp = ov && (conn === ov.old || conn === ov.next) ? fingerprint(d) : undefined;
    let first = true;
    for (const pattern of d.patterns) {
      if (fp !== undefined && !this.#firstCopy(ov!, conn, `${fp}\u0000${pattern}`)) {
        this.stats.duplicatesDropped++;
        continue;
      }
      if (first) (this.stats.delivered++, (first = false));
      const entry = this.#subs.get(key(d.tenant, pattern));
      if (!entry || entry.locals.size === 0) {
        this.stats.unroutable++;
        continue;
      }
      const m = new Message(d.tenant, d.channel, pattern, d.payload);
      for (const s of entry.locals) s.push(m, (e) => this.#emit('error', e as Error));
    }
  }

  /** While two connections overlap: true to deliver `k` from `conn`, false for a duplicate of the other's. */
  #firstCopy(ov: Overlap, conn: Conn, k: string): boolean {
    const theirs = ov.pending.get(conn === ov.old ? ov.next : ov.old);
    const n = theirs?.get(k) ?? 0;
    if (n > 0) {
      if (n === 1) theirs!.delete(k);
      else theirs!.set(k, n - 1);
      return false;
    }
    let mine = ov.pending.get(conn);
    if (!mine) ov.pending.set(conn, (mine = new Map()));
    if (mine.size < OVERLAP_BOUND) mine.set(k, (mine.get(k) ?? 0) + 1);
    return true;
  }

  #onClose(conn: Conn, code: number, reason: string): void {
    conn.open = false;
    conn.ended.resolve();
    const lost = new ConnectionError(
      'connection_lost',
      `the connection was lost (close ${code}${reason ? `: ${reason}` : ''}) before the relay answered; a publish may or may not have been delivered`,
    );
    for (const w of [...conn.subWaiters, ...conn.unsubWaiters]) w.reject(lost);
    for (const e of conn.pings) this.#failEntry(e);
    if (conn.barrier) this.#failEntry(conn.barrier);
    conn.subWaiters = conn.unsubWaiters = conn.pings = [];
    conn.barrier = undefined;
    const ov = this.#overlap;
    if (ov && (conn === ov.old || conn === ov.next)) this.#overlap = undefined;
    if (conn !== this.#conn || this.closed) return;
    this.#conn = undefined;
    if (conn.accessEnded !== undefined) {
      this.#end(new AccessEndedError(conn.accessEnded));
      return;
    }
    if (this.#opts.reconnect === false) {
      this.#end(lost);
      return;
    }
    void this.#recover(undefined, `the connection closed (${code}${reason ? `: ${reason}` : ''})`);
  }

  /**
   * Gets a new connection with every subscription active again. With `old` still open
   * (RECONNECT) this is make-before-break: `old` keeps delivering until the new one has
   * all `OK:SUB`, duplicates of the overlap are dropped, then `old` is closed.
   */
  #recover(old: Conn | undefined, reason: string): Promise<void> {
    if (this.#recovering) return this.#recovering;
    const r = (async () => {
      const o = this.#opts.reconnect || {};
      const initial = o.initialDelayMs ?? 250;
      const max = o.maxDelayMs ?? 10_000;
      const attempts = o.maxAttempts ?? Infinity;
      for (let attempt = 1; !this.closed; attempt++) {
        if (attempt > attempts) {
          this.#end(new ConnectionError('connection_lost', `could not reconnect after ${attempts} attempts (${reason})`));
          return;
        }
        const ceiling = Math.min(max, initial * 2 ** (attempt - 1));
        const delayMs = Math.round(Math.random() * ceiling);
        this.#emit('reconnecting', { reason, attempt, delayMs });
        await sleep(delayMs);
        if (this.closed) return;
        let conn: Conn;
        try {
          conn = await this.#open();
        } catch (e) {
          if (e instanceof HandshakeError && (e.status === 401 || e.status === 403) && typeof this.#opts.token !== 'function') {
            // The ticket is refused for good (revoked, expired, not allowed): retrying cannot help.
            this.#end(e);
            return;
          }
          reason = (e as Error).message;
          continue;
        }
        if (this.closed) {
          conn.transport.close(1000, 'client closed');
          return;
        }
        this.#overlap = old && old.open ? { old, next: conn, pending: new Map() } : undefined;
        const entries = [...this.#subs.values()];
        const results = await Promise.allSettled(entries.map((e) => this.#withTimeout(this.#sendSub(conn, e), `SUB:${e.tenant}:${e.pattern}`)));
        if (!conn.open) continue; // lost while resubscribing: try again
        const lost = results.find((r) => r.status === 'rejected' && !(r.reason instanceof RelayError));
        if (lost) {
          conn.transport.close(1000, 'resubscribe failed');
          reason = (lost as PromiseRejectedResult).reason?.message ?? 'resubscribe failed';
          continue;
        }
        this.#conn = conn;
        this.stats.reconnects++;
        // Subscribed while we were resubscribing: send those too; unsubscribed meanwhile: drop.
        for (const e of this.#subs.values()) if (!entries.includes(e)) void this.#sendSub(conn, e).catch(() => {});
        for (const e of entries) if (this.#subs.get(key(e.tenant, e.pattern)) !== e) conn.transport.sendText(`UNSUB:${e.tenant}:${e.pattern}`);
        if (this.#overlap?.old === old && old?.open) {
          // Keep the old connection a moment for what is already on its way to it.
          const t = setTimeout(() => old.transport.close(1000, 'moved to a new connection'), this.#opts.moveDrainMs ?? 1000);
          (t as { unref?: () => void }).unref?.();
        }
        for (const w of this.#openWaiters.splice(0)) w.resolve(conn);
        this.#emit('reconnected', { url: conn.transport.url, transport: conn.transport.kind });
        return;
      }
    })();
    this.#recovering = r.finally(() => (this.#recovering = undefined));
    return this.#recovering;
  }

  #end(error: FastPubSubError | undefined): void {
    if (this.#closedError) return;
    this.#closedError = error ?? new ClosedError();
    const err = this.#closedError;
    for (const entry of this.#subs.values()) {
      for (const s of entry.locals) s.end(error);
      entry.ready.reject(err);
    }
    this.#subs.clear();
    for (const w of this.#openWaiters.splice(0)) w.reject(err);
    for (const c of [this.#conn, this.#overlap?.old]) {
      if (!c) continue;
      for (const w of [...c.subWaiters, ...c.unsubWaiters]) w.reject(err);
      for (const e of [...c.pings, ...(c.barrier ? [c.barrier] : [])]) {
        for (const p of e.publishes) p.reject(err);
        for (const w of e.waiters) w.reject(err);
      }
      c.pings = [];
      c.barrier = undefined;
      c.transport.close(1000, 'client closed');
    }
    this.#conn = this.#overlap = undefined;
    this.#emit('close', error ? { error } : {});
  }
}

function now(): number {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Identifies a message (tenant, channel, payload) by two 32-bit hashes of its payload. */
function fingerprint(d: { tenant: string; channel: string; payload: Uint8Array }): string {
  let h1 = 0x811c9dc5; // FNV-1a
  let h2 = 0x9747b28c; // a multiply-xorshift mix, independent of h1
  const p = d.payload;
  for (let i = 0; i < p.length; i++) {
    h1 = Math.imul(h1 ^ p[i]!, 0x01000193);
    h2 = Math.imul(h2 ^ p[i]!, 0x5bd1e995);
    h2 ^= h2 >>> 15;
  }
  return `${d.tenant}\u0000${d.channel}\u0000${p.length}:${h1 >>> 0}:${h2 >>> 0}`;
}
