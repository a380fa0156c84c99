/**
 * Errors. Every error of this package is a {@link FastPubSubError} with a machine-readable
 * `code`; the class says whose fault it is:
 * - {@link ValidationError}: refused locally before anything was sent (fix the call);
 * - {@link RelayError}: the relay answered `ERR:` to this call (the `code` is the relay's);
 * - {@link HandshakeError}: the relay refused the connection (bad, expired or revoked ticket…);
 * - {@link AccessEndedError}: the relay ended a live connection's access (ticket revoked or expired);
 * - {@link ConnectionError}: the connection was lost or never came up, or timed out;
 * - {@link ClosedError}: the client was closed by the application.
 * @module
 */

/** Codes the relay (LLPS v0.1 and this relay's decisions) and this SDK use. Others may appear. */
export type ErrorCode =
  | 'permission_denied'
  | 'invalid_pattern'
  | 'invalid_channel'
  | 'invalid_tenant'
  | 'payload_too_large'
  | 'too_many_subscriptions'
  | 'relay_full'
  | 'rate_limited'
  | 'frame_too_large'
  | 'bad_frame'
  | 'pattern_too_complex'
  | 'access_ended'
  | 'slow_consumer'
  | 'handshake_refused'
  | 'connection_lost'
  | 'timeout'
  | 'closed'
  | (string & {});

/** Base class of every error this package throws. */
export class FastPubSubError extends Error {
  /** Machine-readable reason, e.g. `permission_denied`. */
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FastPubSubError';
    this.code = code;
  }
}

/** The call was refused locally: nothing was sent. */
export class ValidationError extends FastPubSubError {
  constructor(code: ErrorCode, message: string) {
    super(code, message);
    this.name = 'ValidationError';
  }
}

/** The relay refused the command or publish with an `ERR:` line. */
export class RelayError extends FastPubSubError {
  /** The full text after `ERR:` as the relay sent it. */
  readonly raw: string;
  /** `SUB`, `UNSUB` or `PUB` when the relay named the command, else undefined. */
  readonly command: 'SUB' | 'UNSUB' | 'PUB' | undefined;
  /** Tenant the refusal names, if any. */
  readonly tenant: string | undefined;
  /** Pattern (SUB/UNSUB) or channel (PUB) the refusal names, if any. */
  readonly target: string | undefined;
  /** The relay's explanation, if any. */
  readonly detail: string | undefined;
  constructor(raw: string, parsed: ParsedErr) {
    super(parsed.code, `relay refused: ${raw}`);
    this.name = 'RelayError';
    this.raw = raw;
    this.command = parsed.command;
    this.tenant = parsed.tenant;
    this.target = parsed.target;
    this.detail = parsed.detail;
  }
}

/** The relay refused the WebSocket handshake (401 bad/expired/revoked ticket, 403 not allowed, 503 full). */
export class HandshakeError extends FastPubSubError {
  /** HTTP status, when the runtime exposes it (Node does, browsers do not). */
  readonly status: number | undefined;
  /** The relay's reason, when the runtime exposes it. */
  readonly reason: string | undefined;
  constructor(url: string, status: number | undefined, reason: string | undefined) {
    super(
      'handshake_refused',
      status === undefined
        ? `the relay at ${url} refused the connection (this runtime does not say why; check the ticket)`
        : `the relay at ${url} refused the connection: HTTP ${status}${reason ? `: ${reason}` : ''}`,
    );
    this.name = 'HandshakeError';
    this.status = status;
    this.reason = reason;
  }
}

/** The relay ended this connection's access: its ticket was revoked or expired. Get a new ticket. */
export class AccessEndedError extends FastPubSubError {
  constructor(why: string) {
    super('access_ended', `the relay ended this connection's access: ${why}; get a new ticket`);
    this.name = 'AccessEndedError';
  }
}

/** The connection was lost, could not be opened, or an answer did not come in time. */
export class ConnectionError extends FastPubSubError {
  constructor(code: 'connection_lost' | 'timeout', message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'ConnectionError';
  }
}

/** The client was closed by the application. */
export class ClosedError extends FastPubSubError {
  constructor(message = 'the client is closed') {
    super('closed', message);
    this.name = 'ClosedError';
  }
}

/** An `ERR:` line split into its parts: `code[:CMD:tenant:target[:detail]]`. */
export interface ParsedErr {
  code: string;
  command: 'SUB' | 'UNSUB' | 'PUB' | undefined;
  tenant: string | undefined;
  /** Everything after the tenant (the pattern/channel, possibly followed by `:detail`). */
  rest: string | undefined;
  target: string | undefined;
  detail: string | undefined;
}

/**
 * Splits the text after `ERR:`. A pattern or channel may itself contain `:`, so `target`
 * and `detail` are a best guess; callers that know what they sent match with {@link errNames}.
 */
export function parseErr(text: string): ParsedErr {
  const parts = text.split(':');
  const code = parts[0] ?? '';
  const cmd = parts[1];
  if ((cmd === 'SUB' || cmd === 'UNSUB' || cmd === 'PUB') && parts.length >= 4) {
    const rest = parts.slice(3).join(':');
    return {
      code,
      command: cmd,
      tenant: parts[2],
      rest,
      target: parts[3],
      detail: parts.length > 4 ? parts.slice(4).join(':') : undefined,
    };
  }
  const detail = parts.length > 1 ? parts.slice(1).join(':') : undefined;
  return { code, command: undefined, tenant: undefined, rest: undefined, target: undefined, detail };
}

/**
 * True when `err` names exactly this command, tenant and pattern/channel; returns the
 * detail text after it (or '' when there is none), else undefined.
 */
export function errNames(err: ParsedErr, command: string, tenant: string, target: string): string | undefined {
  if (err.command !== command || err.tenant !== tenant || err.rest === undefined) return undefined;
  if (err.rest === target) return '';
  if (err.rest.startsWith(target + ':')) return err.rest.slice(target.length + 1);
  return undefined;
}

/** Builds the typed error for an `ERR:` line once the caller knows what it refers to. */
export function relayError(raw: string, parsed: ParsedErr, target?: string, detail?: string): RelayError {
  return new RelayError(raw, {
    ...parsed,
    target: target ?? parsed.target,
    detail: target === undefined ? parsed.detail : detail || undefined,
  });
}
