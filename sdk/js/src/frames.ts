/**
 * The binary frames of LLPS v0.1 §3: publish v2 (client → relay) and deliver (relay → client).
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** Delivery modes of a publish (the v2 `mode` byte). */
export type PublishMode = 'broadcast' | 'one-low-latency' | 'one-random';

const MODE_BYTE: Record<PublishMode, number> = {
  broadcast: 0,
  'one-low-latency': 1,
  'one-random': 2,
};

/** `0x02 | mode | str16 tenant | str16 channel | payload`. Names must be validated first. */
export function encodePublish(mode: PublishMode, tenant: string, channel: string, payload: Uint8Array): Uint8Array {
  const m = MODE_BYTE[mode];
  if (m === undefined) throw new TypeError(`unknown publish mode ${JSON.stringify(mode)}: use broadcast, one-low-latency or one-random`);
  const t = encoder.encode(tenant);
  const c = encoder.encode(channel);
  const out = new Uint8Array(2 + 2 + t.length + 2 + c.length + payload.length);
  const dv = new DataView(out.buffer);
  out[0] = 0x02;
  out[1] = m;
  let pos = 2;
  dv.setUint16(pos, t.length);
  out.set(t, pos + 2);
  pos += 2 + t.length;
  dv.setUint16(pos, c.length);
  out.set(c, pos + 2);
  pos += 2 + c.length;
  out.set(payload, pos);
  return out;
}

/** A decoded deliver frame. */
export interface Deliver {
  tenant: string;
  channel: string;
  payload: Uint8Array;
  patterns: string[];
}

/** Thrown for a deliver frame that does not follow the contract. */
export class FrameError extends Error {
  constructor(why: string) {
    super(`bad deliver frame from the relay: ${why}`);
    this.name = 'FrameError';
  }
}

/**
 * `0x01 | str16 tenant | str16 channel | u32 len | payload | u16 count | count × str16 pattern`,
 * nothing after. The payload is a view into `frame` (no copy).
 */
export function decodeDeliver(frame: Uint8Array): Deliver {
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  let pos = 0;
  const need = (n: number, what: string) => {
    if (pos + n > frame.length) throw new FrameError(`truncated in ${what} (${frame.length} bytes)`);
  };
  const str16 = (what: string): string => {
    need(2, what);
    const n = dv.getUint16(pos);
    pos += 2;
    if (n === 0) throw new FrameError(`empty ${what}`);
    need(n, what);
    let s: string;
    try {
      s = decoder.decode(frame.subarray(pos, pos + n));
    } catch {
      throw new FrameError(`${what} is not UTF-8`);
    }
    pos += n;
    return s;
  };
  need(1, 'tag');
  if (frame[0] !== 0x01) throw new FrameError(`unknown tag 0x${frame[0]!.toString(16)}`);
  pos = 1;
  const tenant = str16('tenant');
  const channel = str16('channel');
  need(4, 'payload length');
  const len = dv.getUint32(pos);
  pos += 4;
  need(len, 'payload');
  const payload = frame.subarray(pos, pos + len);
  pos += len;
  need(2, 'pattern count');
  const count = dv.getUint16(pos);
  pos += 2;
  if (count === 0) throw new FrameError('no pattern');
  const patterns: string[] = [];
  for (let i = 0; i < count; i++) patterns.push(str16('pattern'));
  if (pos !== frame.length) throw new FrameError(`${frame.length - pos} trailing bytes`);
  return { tenant, channel, payload, patterns };
}
