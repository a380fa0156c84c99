"""FastPubSub client for asyncio (LLPS v0.1 over WebSocket).

>>> async with connect("ws://127.0.0.1:8080/ws", token) as client:
...     sub = await client.subscribe("dev", "public.#")
...     await client.publish("dev", "public.hello", "hi there")
...     async for msg in sub:
...         print(msg.channel, msg.text())
"""

from .client import Client, ClientStats, Message, QueueStats, Reconnect, Subscription, connect
from .discovery import Edge, discover_edges, nearest_edge, parse_bootstrap, ping_edge, rank_edges
from .errors import (
    AccessEndedError,
    ClosedError,
    ConnectionLostError,
    FastPubSubError,
    HandshakeError,
    RelayError,
    RequestTimeoutError,
    ValidationError,
)
from .frames import PublishMode
from .limits import MAX_NAME, MAX_PAYLOAD, MAX_TENANT, check_channel, check_pattern, check_payload, check_tenant, matches
from .tokens import RestError, TokenApi, grant, rfc3339, token_id

__version__ = "0.1.0"

__all__ = [
    "AccessEndedError", "Client", "ClientStats", "ClosedError", "ConnectionLostError", "Edge",
    "FastPubSubError", "HandshakeError", "MAX_NAME", "MAX_PAYLOAD", "MAX_TENANT", "Message",
    "PublishMode", "QueueStats", "Reconnect", "RelayError", "RequestTimeoutError", "RestError",
    "Subscription", "TokenApi", "ValidationError", "check_channel", "check_pattern", "check_payload",
    "check_tenant", "connect", "discover_edges", "grant", "matches", "nearest_edge", "parse_bootstrap",
    "ping_edge", "rank_edges", "rfc3339", "token_id",
]
