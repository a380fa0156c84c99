/**
 * Server-side helpers (Node): ticket REST calls with the master token, and edge discovery.
 * Never import this into a browser bundle with a master token in it.
 * @module
 */
export { getToken, refreshToken, revokeToken, tokenId, rfc3339, RestError } from './tokens.js';
export type { RestOptions, TokenRights, TenantGrant } from './tokens.js';
export { discoverEdges, nearestEdge, rankEdges, pingEdge, parseBootstrap } from './discovery.js';
export type { Edge, PingedEdge, DiscoveryOptions } from './discovery.js';
