"""The RECONNECT move against a scripted relay (a `websockets` server in this process), so the
test decides which connection delivers what, and in which order, during the overlap: the
duplicate dropping must lose nothing and let no duplicate through in any order."""

from __future__ import annotations

import asyncio
import struct
from typing import List

from conftest import run, until
from websockets.asyncio.server import ServerConnection, serve

from fastpubsub import Reconnect, connect


def deliver(tenant: str, channel: str, text: str, patterns: List[str]) -> bytes:
    def s16(s: str) -> bytes:
        b = s.encode()
        return struct.pack(">H", len(b)) + b

    p = text.encode()
    return (b"\x01" + s16(tenant) + s16(channel) + struct.pack(">I", len(p)) + p
            + struct.pack(">H", len(patterns)) + b"".join(s16(x) for x in patterns))


class Scripted:
    """Every accepted connection is handed to the test, which answers by hand (PING → PONG)."""

    def __init__(self) -> None:
        self.conns: List[ServerConnection] = []
        self.texts: List[List[str]] = []
        self.closed: List[asyncio.Event] = []

    async def handler(self, ws: ServerConnection) -> None:
        i = len(self.conns)
        self.conns.append(ws)
        self.texts.append([])
        self.closed.append(asyncio.Event())
        try:
            async for m in ws:
                if m == "PING":
                    await ws.send("PONG")
                elif isinstance(m, str):
                    self.texts[i].append(m)
        except Exception:
            pass
        finally:
            self.closed[i].set()


def test_reconnect_overlap_dedup_per_pattern_in_any_order():
    async def body():
        relay = Scripted()
        async with serve(relay.handler, "127.0.0.1", 0, subprotocols=["llps.v1"]) as server:  # type: ignore[list-item]
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}/ws", "AT_1_2", reconnect=Reconnect(0.001, 0.001)) as c:
                a: List[str] = []
                b: List[str] = []
                sub_a = asyncio.ensure_future(c.subscribe("t", "x.#", on_message=lambda m: a.append(m.text())))
                sub_b = asyncio.ensure_future(c.subscribe("t", "x.*", on_message=lambda m: b.append(m.text())))
                await until(lambda: "SUB:t:x.*" in relay.texts[0], 10, "both SUBs")
                old = relay.conns[0]
                await old.send("OK:SUB:t:x.#")
                await old.send("OK:SUB:t:x.*")
                await asyncio.wait_for(asyncio.gather(sub_a, sub_b), 10)
                both = ["x.#", "x.*"]
                moved = asyncio.get_running_loop().create_future()
                c.on("reconnected", lambda url: moved.done() or moved.set_result(url))

                async def seen(n: int) -> None:
                    await until(lambda: len(a) + len(b) >= n, 10, f"{n} deliveries")

                await old.send("RECONNECT")
                await until(lambda: len(relay.texts) > 1 and "SUB:t:x.*" in relay.texts[1], 10, "SUBs on the new connection")
                new = relay.conns[1]
                await new.send("OK:SUB:t:x.#")  # x.* not confirmed yet: the new one delivers for x.# only
                # m1 reaches the new connection first (one pattern), then the old one (both).
                await new.send(deliver("t", "x.1", "m1", ["x.#"]))
                await seen(1)
                await old.send(deliver("t", "x.1", "m1", both))
                # m2 twice on the old connection only (published twice before the new one subscribed).
                await old.send(deliver("t", "x.2", "m2", both))
                await old.send(deliver("t", "x.2", "m2", both))
                await seen(6)
                # m3 on the old one first, then the new one.
                await old.send(deliver("t", "x.3", "m3", both))
                await new.send(deliver("t", "x.3", "m3", ["x.#"]))
                await new.send("OK:SUB:t:x.*")
                await asyncio.wait_for(moved, 10)
                # After the switch the old connection still drains what was in flight to it.
                await new.send(deliver("t", "x.4", "m4", both))
                await old.send(deliver("t", "x.4", "m4", both))
                await old.send(deliver("t", "x.5", "m5", both))
                await new.send(deliver("t", "x.6", "m6", both))
                await seen(14)
                await asyncio.wait_for(relay.closed[0].wait(), 10)  # the client closed it after its drain
                await new.send(deliver("t", "x.7", "m7", both))
                await seen(16)
                want = ["m1", "m2", "m2", "m3", "m4", "m5", "m6", "m7"]
                assert sorted(a) == want and sorted(b) == want, (a, b)
                assert c.stats.duplicates_dropped == 4  # m1 (x.#), m3 (x.#), m4 (both patterns)
                assert not c.closed

    run(body())
