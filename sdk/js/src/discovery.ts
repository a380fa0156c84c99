/**
 * Edge discovery (LLPS v0.1 §1, "Bootstrap document"): fetch the edge list, `GET /ping`
 * every candidate in parallel, pick the fastest answer.
 * @module
 */
import { ConnectionError } from './errors.js';

/** One edge from a bootstrap document. */
export interface Edge {
  /** `host[:port]` as listed. */
  host: string;
  /** REST base, e.g. `https://fra-01.example.net`. */
  restUrl: string;
  /** WebSocket URL, e.g. `wss://fra-01.example.net/ws`. */
  wsUrl: string;
  /** WebTransport URL, e.g. `https://fra-01.example.net/wt`. */
  wtUrl: string;
  lat?: number;
  lon?: number;
  priority?: number;
}

/** An edge with its measured `/ping` time. */
export interface PingedEdge extends Edge {
  rttMs: number;
}

/** Options of the discovery calls. */
export interface DiscoveryOptions {
  /** Per request (default 5,000 ms). */
  timeoutMs?: number;
  /** `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
}

function withTimeout(ms: number): { signal: AbortSignal; done: () => void } {
  const ac = new AbortController();
  const t = setTimeout(() => ac.abort(), ms);
  return { signal: ac.signal, done: () => clearTimeout(t) };
}

/**
 * Parses a bootstrap document: `{ "version": 1, "edges": ["host", { "host": "h:443", "lat": …, "lon": …, "priority": … }] }`.
 * `secure` picks https/wss (default) or http/ws (labs).
 */
export function parseBootstrap(doc: unknown, secure = true): Edge[] {
  const edges = (doc as { edges?: unknown })?.edges;
  if (!Array.isArray(edges)) throw new TypeError('bootstrap document has no "edges" array');
  const http = secure ? 'https' : 'http';
  const ws = secure ? 'wss' : 'ws';
  const out: Edge[] = [];
  for (const e of edges) {
    const o = typeof e === 'string' ? { host: e } : (e as { host?: unknown; lat?: unknown; lon?: unknown; priority?: unknown });
    if (!o || typeof o.host !== 'string' || !/^[A-Za-z0-9.\-:[\]]+$/.test(o.host)) continue; // skip malformed entries
    const edge: Edge = { host: o.host, restUrl: `${http}://${o.host}`, wsUrl: `${ws}://${o.host}/ws`, wtUrl: `https://${o.host}/wt` };
    if (typeof o.lat === 'number') edge.lat = o.lat;
    if (typeof o.lon === 'number') edge.lon = o.lon;
    if (typeof o.priority === 'number') edge.priority = o.priority;
    out.push(edge);
  }
  if (out.length === 0) throw new TypeError('bootstrap document lists no usable edge');
  return out;
}

/** Fetches and parses a bootstrap document; an `http://` URL yields http/ws edges (labs), `https://` yields https/wss. */
export async function discoverEdges(bootstrapUrl: string, options: DiscoveryOptions = {}): Promise<Edge[]> {
  const f = options.fetch ?? fetch;
  const t = withTimeout(options.timeoutMs ?? 5000);
  let doc: unknown;
  try {
    const res = await f(bootstrapUrl, { signal: t.signal });
    if (!res.ok) throw new ConnectionError('connection_lost', `bootstrap ${bootstrapUrl}: HTTP ${res.status}`);
    doc = await res.json();
  } catch (e) {
    // fetch reports an unreachable host as a TypeError: that is a connection problem too.
    if (e instanceof ConnectionError) throw e;
    throw new ConnectionError('connection_lost', `bootstrap ${bootstrapUrl}: ${(e as Error).message}`, { cause: e });
  } finally {
    t.done();
  }
  return parseBootstrap(doc, !bootstrapUrl.startsWith('http://'));
}

/** `GET /ping` on one edge; resolves with the time to a `pong` answer in ms. */
export async function pingEdge(restUrl: string, options: DiscoveryOptions = {}): Promise<number> {
  const f = options.fetch ?? fetch;
  const t = withTimeout(options.timeoutMs ?? 5000);
  const t0 = performance.now();
  try {
    const res = await f(`${restUrl}/ping`, { signal: t.signal, cache: 'no-store' });
    const body = (await res.text()).trim();
    if (!res.ok || body !== 'pong') throw new ConnectionError('connection_lost', `${restUrl}/ping answered ${res.status} ${JSON.stringify(body.slice(0, 64))}`);
    return performance.now() - t0;
  } catch (e) {
    if (e instanceof ConnectionError) throw e;
    throw new ConnectionError('connection_lost', `${restUrl}/ping: ${(e as Error).message}`, { cause: e });
  } finally {
    t.done();
  }
}

/** Pings every edge in parallel; returns those that answered, fastest first. */
export async function rankEdges(edges: Edge[], options: DiscoveryOptions = {}): Promise<PingedEdge[]> {
  const results = await Promise.allSettled(edges.map((e) => pingEdge(e.restUrl, options)));
  const ok: PingedEdge[] = [];
  results.forEach((r, i) => {
    if (r.status === 'fulfilled') ok.push({ ...edges[i]!, rttMs: r.value });
  });
  return ok.sort((a, b) => a.rttMs - b.rttMs);
}

/** Discovery in one call: the fastest edge of a bootstrap document (or of a list of edges). */
export async function nearestEdge(bootstrap: string | Edge[], options: DiscoveryOptions = {}): Promise<PingedEdge> {
  const edges = typeof bootstrap === 'string' ? await discoverEdges(bootstrap, options) : bootstrap;
  const ranked = await rankEdges(edges, options);
  if (ranked.length === 0) {
    throw new ConnectionError('connection_lost', `no edge answered /ping (tried ${edges.map((e) => e.host).join(', ')})`);
  }
  return ranked[0]!;
}
