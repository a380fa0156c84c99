// A TypeScript consumer of the packed package: `tsc --noEmit` on it checks the shipped .d.ts
// files (strict, NodeNext resolution through package.json "exports"). Never run.
import { connect, RelayError, ValidationError, HandshakeError, MAX_PAYLOAD, type Message, type PublishMode, type ClientStats } from 'fastpubsub';
import { getToken, refreshToken, revokeToken, nearestEdge, RestError, type TokenRights } from 'fastpubsub/server';

declare const ticket: string;

export async function main(): Promise<void> {
  const c = await connect({ url: 'ws://127.0.0.1:8080/ws', token: () => ticket, moveDrainMs: 500, reconnect: { initialDelayMs: 100 } });
  const sub = await c.subscribe('dev', 'public.#', { queueSize: 16 });
  for await (const m of sub) {
    const bytes: Uint8Array = m.payload;
    const text: string = m.text();
    const n: number = m.json<{ n: number }>().n;
    const where: [string, string, string] = [m.tenant, m.channel, m.pattern];
    void bytes, text, n, where;
    break;
  }
  const next: Message | undefined = await sub.next();
  void next;
  const cb = await c.subscribe('dev', 'public.x', (m: Message) => void m.channel);
  await cb.unsubscribe();
  await c.unsubscribe('dev', 'public.#');
  const mode: PublishMode = 'one-random';
  await c.publish('dev', 'public.a', new Uint8Array(MAX_PAYLOAD), { mode });
  await c.publish('dev', 'public.a', 'text', { mode: 'one-low-latency' });
  // @ts-expect-error: not a delivery mode
  await c.publish('dev', 'public.a', 'text', { mode: 'sometimes' });
  const rtt: number = await c.ping();
  void rtt;
  try {
    await c.subscribe('dev', 'private.#');
  } catch (e) {
    if (e instanceof RelayError) {
      const why: string = e.code;
      const target: string | undefined = e.target;
      void why, target;
    } else if (e instanceof ValidationError || e instanceof HandshakeError) {
      void e.message;
    }
  }
  const off = c.on('reconnecting', (ev) => void (ev.delayMs satisfies number));
  off();
  c.on('close', (ev) => void ev.error?.code);
  const stats: ClientStats = c.stats;
  const dropped: number = sub.stats.dropped;
  void stats, dropped;
  await c.close();

  const rest = { apiBase: 'http://127.0.0.1:8080', masterToken: 'm' };
  const rights: TokenRights = {
    tenant_grants: [{ tenant_ids: ['dev'], allow_channels_pub: ['public.#'], allow_channels_sub: ['public.#'] }],
    expires_at: 3600,
  };
  const t: string = await getToken(rest, rights);
  const until: Date = await refreshToken(rest, t, new Date());
  await revokeToken(rest, t).catch((e: unknown) => e instanceof RestError && e.status);
  const edge = await nearestEdge('https://example.net/edges.json');
  const url: string = edge.wsUrl;
  void until, url;
}
