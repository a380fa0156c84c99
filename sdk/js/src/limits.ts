/**
 * Contract limits (LLPS v0.1 §3–§5) and local validation, so a bad call fails before
 * anything is sent, with the same code the relay would use.
 * @module
 */
import { ValidationError } from './errors.js';

/** Largest payload in bytes (64 KiB). */
export const MAX_PAYLOAD = 65_536;
/** Largest tenant in bytes. */
export const MAX_TENANT = 255;
/** Largest channel or pattern in bytes. */
export const MAX_NAME = 255;

const encoder = new TextEncoder();

/** UTF-8 length of a string. */
export function byteLength(s: string): number {
  return encoder.encode(s).length;
}

// Unicode control characters and whitespace (the relay's `char::is_control`/`is_whitespace`).
const FORBIDDEN = /[\p{Cc}\p{White_Space}]/u;

/** Throws {@link ValidationError} `invalid_tenant` unless `tenant` is 1–255 bytes without `:`, whitespace or control characters. */
export function checkTenant(tenant: string): void {
  if (typeof tenant !== 'string' || tenant.length === 0) {
    throw new ValidationError('invalid_tenant', 'tenant is empty: give the tenant id from your ticket');
  }
  const n = byteLength(tenant);
  if (n > MAX_TENANT) throw new ValidationError('invalid_tenant', `tenant is ${n} bytes long, the maximum is ${MAX_TENANT}`);
  if (tenant.includes(':')) throw new ValidationError('invalid_tenant', `tenant ${JSON.stringify(tenant)} contains ':'`);
  if (FORBIDDEN.test(tenant)) {
    throw new ValidationError('invalid_tenant', `tenant ${JSON.stringify(tenant)} contains whitespace or a control character`);
  }
}

function checkName(name: string, wildcards: boolean): string | undefined {
  if (typeof name !== 'string' || name.length === 0) return 'name is empty';
  const n = byteLength(name);
  if (n > MAX_NAME) return `name is ${n} bytes long, the maximum is ${MAX_NAME}`;
  const segs = name.split('.');
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i]!;
    const segment = i + 1;
    if (seg.length === 0) return `segment ${segment} is empty (no leading, trailing or doubled '.')`;
    if (FORBIDDEN.test(seg)) return `segment ${segment} contains whitespace or a control character`;
    if (!seg.includes('*') && !seg.includes('#')) continue;
    if (!wildcards) return `segment ${segment} contains '*' or '#': a channel is concrete, wildcards belong in patterns`;
    if (seg === '*') continue;
    if (seg === '#') {
      if (i === segs.length - 1) continue;
      return `segment ${segment} is '#' but is not the last segment: '#' is only allowed at the end`;
    }
    return `segment ${segment} mixes '*' or '#' with other characters: a wildcard must be a whole segment`;
  }
  return undefined;
}

/** Throws {@link ValidationError} `invalid_pattern` unless `pattern` is a valid pattern (`*` one segment, final `#` zero or more). */
export function checkPattern(pattern: string): void {
  const why = checkName(pattern, true);
  if (why) throw new ValidationError('invalid_pattern', `invalid pattern ${JSON.stringify(pattern)}: ${why}`);
}

/** Throws {@link ValidationError} `invalid_channel` unless `channel` is a valid concrete channel. */
export function checkChannel(channel: string): void {
  const why = checkName(channel, false);
  if (why) throw new ValidationError('invalid_channel', `invalid channel ${JSON.stringify(channel)}: ${why}`);
}

/** Throws {@link ValidationError} `payload_too_large` when the payload is over {@link MAX_PAYLOAD}. */
export function checkPayload(payload: Uint8Array): void {
  if (payload.length > MAX_PAYLOAD) {
    throw new ValidationError(
      'payload_too_large',
      `the payload is ${payload.length} bytes (at most ${MAX_PAYLOAD}): split it or send a reference`,
    );
  }
}

/** True when `pattern` matches `channel` (both valid): `*` one segment, final `#` zero or more. */
export function matches(pattern: string, channel: string): boolean {
  const p = pattern.split('.');
  const c = channel.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '#' && i === p.length - 1) return true;
    if (i >= c.length) return false;
    if (p[i] !== '*' && p[i] !== c[i]) return false;
  }
  return p.length === c.length;
}
