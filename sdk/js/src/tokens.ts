/**
 * Token REST calls (LLPS v0.1 §1) with the MASTER token. Server side only: never ship the
 * master token to a browser; give browsers the `AT_…` tickets these calls return.
 * @module
 */
import { ConnectionError, FastPubSubError } from './errors.js';

/** One tenant grant of a ticket. */
export interface TenantGrant {
  tenant_ids: string[];
  allow_channels_pub: string[];
  allow_channels_sub: string[];
}

/** What a ticket allows. */
export interface TokenRights {
  tenant_grants: TenantGrant[];
  /** When it expires: a Date, RFC 3339 text, or seconds from now. At most 24 h ahead. */
  expires_at: Date | string | number;
  allow_ip_masks?: string[];
  allow_regions?: string[];
  allowed_ws_origin?: string[];
  allow_protocols?: ('websocket' | 'webtransport')[];
  ingress_kb_per_sec?: number;
  egress_kb_per_sec?: number;
}

/** Where and how to call the REST API. */
export interface RestOptions {
  /** REST base of an issuing relay, e.g. `https://relay.example.net` or `http://127.0.0.1:8080`. */
  apiBase: string;
  /** The master token (from the relay's state directory / first-run banner). */
  masterToken: string;
  /** Per request (default 10,000 ms). */
  timeoutMs?: number;
  fetch?: typeof fetch;
}

/** A non-2xx answer of the REST API: `status` and the relay's `body` say why. */
export class RestError extends FastPubSubError {
  constructor(
    readonly status: number,
    readonly body: string,
    what: string,
  ) {
    super(status === 401 ? 'unauthorized' : `http_${status}`, `${what} failed: HTTP ${status}: ${body.trim() || '(no body)'}`);
    this.name = 'RestError';
  }
}

/** RFC 3339 `…Z` without fractional seconds. */
export function rfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function expiresAt(v: Date | string | number): string {
  if (typeof v === 'number') return rfc3339(new Date(Date.now() + v * 1000));
  if (v instanceof Date) return rfc3339(v);
  return v;
}

async function call(opts: RestOptions, method: string, path: string, body: unknown, what: string): Promise<any> {
  const f = opts.fetch ?? fetch;
  const ac = new AbortController();
  const ms = opts.timeoutMs ?? 10_000;
  const t = setTimeout(() => ac.abort(), ms);
  const url = `${opts.apiBase.replace(/\/+$/, '')}${path}`;
  try {
    let res: Response;
    let text: string;
    try {
      res = await f(url, {
        method,
        headers: { authorization: `Bearer ${opts.masterToken}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: ac.signal,
      });
      text = await res.text();
    } catch (e) {
      if (ac.signal.aborted) throw new ConnectionError('timeout', `${what}: no answer from ${url} within ${ms} ms`);
      throw new ConnectionError('connection_lost', `${what}: ${url}: ${(e as Error).message}`, { cause: e });
    }
    if (!res.ok) throw new RestError(res.status, text, what);
    try {
      return JSON.parse(text);
    } catch {
      throw new RestError(res.status, text, `${what} (answer is not JSON)`);
    }
  } finally {
    clearTimeout(t);
  }
}

/** `POST /v1/get-token`: issues a ticket; resolves with the `AT_…` string. */
export async function getToken(opts: RestOptions, rights: TokenRights, meta: { createdBy?: string; description?: string } = {}): Promise<string> {
  const right: Record<string, unknown> = { ...rights, expires_at: expiresAt(rights.expires_at) };
  const body: Record<string, unknown> = { right, created_by: meta.createdBy ?? 'fastpubsub-js' };
  if (meta.description !== undefined) body.description = meta.description;
  const r = await call(opts, 'POST', '/v1/get-token', body, 'get-token');
  if (typeof r?.token !== 'string') throw new RestError(200, JSON.stringify(r), 'get-token (no token in the answer)');
  return r.token;
}

/** The id part of `AT_<id>_<secret>` (the id ends at the first `_` after `AT_`; the secret is opaque). */
export function tokenId(token: string): string {
  const m = /^AT_([^_]+)_./s.exec(token);
  if (!m) throw new TypeError('not an access ticket: expected AT_<id>_<secret>');
  return m[1]!;
}

/** `PUT /v1/refresh-token`: the same ticket string stays valid until `expiresAt`; resolves with the new expiry. */
export async function refreshToken(opts: RestOptions, token: string, expires: Date | string | number): Promise<Date> {
  const r = await call(opts, 'PUT', '/v1/refresh-token', { token_id: tokenId(token), expires_at: expiresAt(expires) }, 'refresh-token');
  return new Date(r?.new_expires_at);
}

/** `DELETE /v1/revoke-token`: final; live connections on it are closed within about a second. */
export async function revokeToken(opts: RestOptions, token: string): Promise<void> {
  await call(opts, 'DELETE', '/v1/revoke-token', { token }, 'revoke-token');
}
