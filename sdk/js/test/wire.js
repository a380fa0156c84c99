// Builds relay → client deliver frames for the tests (LLPS v0.1 §3), by hand.
const enc = new TextEncoder();
const s16 = (s) => {
  const b = enc.encode(s);
  return [b.length >> 8, b.length & 255, ...b];
};

/** `0x01 | str16 tenant | str16 channel | u32 len | payload | u16 count | patterns`, then `extra` bytes. */
export function deliverFrame(tenant, channel, payload, patterns, extra = []) {
  const p = typeof payload === 'string' ? [...enc.encode(payload)] : [...payload];
  const n = p.length;
  return Uint8Array.from([1, ...s16(tenant), ...s16(channel), n >>> 24, (n >> 16) & 255, (n >> 8) & 255, n & 255, ...p, patterns.length >> 8, patterns.length & 255, ...patterns.flatMap(s16), ...extra]);
}

/** Calls `fn` with each complete line of a text stream. */
export function onLines(stream, fn) {
  let buf = '';
  stream.setEncoding('utf8').on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      fn(l);
    }
  });
}
