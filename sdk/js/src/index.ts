/**
 * FastPubSub client for browsers and Node (LLPS v0.1).
 *
 * ```ts
 * import { connect } from 'fastpubsub';
 * const client = await connect({ url: 'ws://127.0.0.1:8080/ws', token: 'AT_…' });
 * const sub = await client.subscribe('dev', 'public.#');
 * await client.publish('dev', 'public.hello', 'hi there');
 * for await (const msg of sub) console.log(msg.channel, msg.text());
 * ```
 * @module
 */
export { connect, Client, Message, Subscription } from './client.js';
export type { ConnectOptions, PublishOptions, SubscribeOptions, ReconnectOptions, ClientEvents, ClientStats } from './client.js';
export {
  FastPubSubError,
  ValidationError,
  RelayError,
  HandshakeError,
  AccessEndedError,
  ConnectionError,
  ClosedError,
} from './errors.js';
export type { ErrorCode } from './errors.js';
export { MAX_PAYLOAD, MAX_TENANT, MAX_NAME, checkTenant, checkChannel, checkPattern, checkPayload, matches } from './limits.js';
export type { PublishMode } from './frames.js';
export type { QueueStats } from './queue.js';
export type { Transport, WebSocketConstructor, WebTransportOptions } from './transport.js';
export { hasWebTransport } from './transport.js';
export { discoverEdges, nearestEdge, rankEdges, pingEdge, parseBootstrap } from './discovery.js';
export type { Edge, PingedEdge, DiscoveryOptions } from './discovery.js';
